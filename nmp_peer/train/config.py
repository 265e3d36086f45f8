"""Training configuration: one TOML file per run, validated like the peer's (``nmp_peer.config``).

Sections ``[model]``, ``[data]``, ``[optim]``, ``[loss]`` and ``[train]`` map onto the
pydantic models below; a missing key takes the default written here, an unknown key or a
value out of range is a ``ConfigError`` in one line, ``file: key.path: reason`` (the
peer's ``ConfigError``: there is one). ``base = "other.toml"`` (relative to the file)
starts from another config and changes only what the file sets, so an ablation is a few
lines; each file of the chain is checked on its own, so the error names the file that
holds the bad key.

The shipped configs (package data, found by name): ``nmp_peer/conf/train/`` holds the
reference (``bin2bin_v2``), the shipped model's recipe (``bin2bin_v2_cpu``, then
``bin2bin_v2_cpu_packet``) and the pipeline test (``tiny``); ``conf/train/experiments/``
the finished experiments that docs/model-card.md reports. A plain name is looked up in
both (names are unique across them), so ``--config bin2bin_v2_cpu_noadv`` finds the
experiment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nmp_peer.config import ConfigError, first_error, read_toml
from nmp_peer.shipped import conf_dir
from nmp_peer.train.data import DataSettings

__all__ = ["CONF_DIR", "EXPERIMENTS_DIR", "ConfigError", "TrainConfig", "config_from_dict", "load_config"]

CONF_DIR = conf_dir() / "train"
EXPERIMENTS_DIR = CONF_DIR / "experiments"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Beta = Annotated[float, Field(ge=0, lt=1)]


class ModelConfig(_Section):
    features: int = Field(16, ge=1)
    norm: Literal["batch", "group", "none"] = "batch"
    residual: bool = True
    disc_features: int = Field(16, ge=1)


class OptimConfig(_Section):
    lr: float = Field(2e-4, gt=0)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    final_lr_fraction: float = Field(0.5, gt=0, le=1)
    batch_size: int = Field(16, ge=1)
    steps: int = Field(20_000, ge=1)
    """The cosine decay's horizon and the step training stops at (``--steps`` sets it)."""


class LossConfig(_Section):
    spectral_weight: float = Field(10.0, ge=0)
    adversarial_weight: float = Field(1.0, ge=0)
    generator_steps_per_discriminator_step: int = Field(10, ge=1)
    adversarial_start_step: int = Field(0, ge=0)
    log_eps: float = Field(1e-4, gt=0)
    discriminator_frames: Literal[128, 256] = 128
    """The critic's window; either holds the 79 gap frames."""
    loss_frames: Literal["gap", "packet"] = "gap"
    """Frames the spectral losses compare: ``"gap"``, the 79 that reach the 1024 predicted
    samples; ``"packet"``, the 67 that reach what the engine plays of them, the first
    packet and the 64-sample recovery fade (a burst's next packet is predicted afresh)."""
    domain: Literal["output", "resynthesis"] = "output"
    """Where the spectral losses (and the critic) look: ``"output"``, the generator's output
    magnitude (the report); ``"resynthesis"``, the STFT of the audio the runtime plays,
    the output magnitude with the LP phase inverted, crossfaded from LP and analysed
    again. With 32x overlap a refined magnitude is not a consistent STFT, so inversion
    changes it (in a one-off check the output magnitude was closer to the truth than
    the LPC's, its resynthesis farther). Fine-tuning the shipped model this way did not
    improve its validation LSD (``conf/train/experiments/bin2bin_v2_cpu_resynth.toml``)."""


class RunConfig(_Section):
    seed: int = Field(0, ge=0)
    threads: int = Field(1, ge=1)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    valid_every: int = Field(200, ge=1)
    checkpoint_every: int = Field(50, ge=1)
    log_every: int = Field(10, ge=1)
    bn_recalibration_batches: int = Field(16, ge=1)
    cache_jobs: int = Field(0, ge=0)
    """Processes that LP-fill the cache; 0: one per core."""


class _Sections(_Section):
    """A file's own keys: checked field by field, before the chain is merged."""

    name: str = "bin2bin_v2"
    model: ModelConfig = ModelConfig()
    data: DataSettings = DataSettings()
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()
    train: RunConfig = RunConfig()


class TrainConfig(_Sections):
    """A whole training config: the merged chain, with the checks across sections."""

    @model_validator(mode="after")
    def _batch_norm_needs_a_batch(self) -> TrainConfig:
        if self.optim.batch_size < 2 and self.model.norm == "batch":
            raise ValueError('optim.batch_size: must be >= 2 with model.norm = "batch"')
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def with_steps(self, steps: int) -> TrainConfig:
        """This config with ``optim.steps = steps`` (the ``--steps`` flag), validated."""
        return _validate({**self.model_dump(), "optim": {**self.optim.model_dump(), "steps": steps}}, "--steps")


def _validate(data: dict[str, Any], where: object, model: type[_Sections] = TrainConfig) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {first_error(exc).removeprefix('(top level): ')}") from None


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file's keys over those of its ``base`` chain; each file checked on its own."""
    if path in seen:
        raise ConfigError(f"{path}: base: the chain of bases loops")
    raw = read_toml(path, ConfigError, "training config")
    base = raw.pop("base", None)
    _validate(raw, path, _Sections)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: must be a file name, relative to this file")
    merged = _read((path.parent / base).resolve(), (*seen, path))
    for key, value in raw.items():
        merged[key] = {**merged[key], **value} if isinstance(merged.get(key), dict) else value
    return merged


def shipped_configs() -> dict[str, Path]:
    """Every shipped training config by name: ``conf/train/*.toml``, then ``experiments/``."""
    found: dict[str, Path] = {}
    for folder in (CONF_DIR, EXPERIMENTS_DIR):
        for p in sorted(folder.glob("*.toml")):
            found.setdefault(p.stem, p)
    return found


def resolve(path_or_name: str | Path) -> Path:
    """The file the user named if it exists, else the shipped config of that name."""
    p = Path(path_or_name)
    if p.is_file():
        return p
    shipped = shipped_configs()
    if str(path_or_name) in shipped:
        return shipped[str(path_or_name)]
    names = ", ".join(p.stem for p in sorted(CONF_DIR.glob("*.toml")))
    experiments = ", ".join(p.stem for p in sorted(EXPERIMENTS_DIR.glob("*.toml")))
    raise ConfigError(
        f"training config {path_or_name} not found: neither a file nor a shipped name "
        f"({names}; experiments: {experiments})"
    )


def load_config(path_or_name: str | Path, *, steps: int | None = None) -> TrainConfig:
    """Read a config file, or a shipped one by name (``bin2bin_v2``, ``tiny``, an experiment's);
    ``steps`` overrides ``optim.steps``."""
    path = resolve(path_or_name).resolve()
    merged = _read(path)
    merged.setdefault("name", path.stem)
    config: TrainConfig = _validate(merged, path)
    return config if steps is None else config.with_steps(steps)


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Rebuild a config stored in a checkpoint (``TrainConfig.to_dict``)."""
    return _validate({"name": "checkpoint", **d}, "checkpoint config")
