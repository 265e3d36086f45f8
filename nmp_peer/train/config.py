"""Training configuration: one TOML file per experiment (shipped: ``nmp_peer/conf/train/*.toml``).

Sections ``[model]``, ``[data]``, ``[optim]``, ``[loss]`` and ``[train]`` map onto the
dataclasses below; a missing key takes the default written here, an unknown one is an
error naming the file and key. ``base = "other.toml"`` (relative to the file) starts
from another experiment and changes only what the file sets, so an ablation is a few
lines.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nmp_peer.shipped import conf_dir, resolve_config
from nmp_peer.train.data import DataSettings

CONF_DIR = conf_dir() / "train"


class ConfigError(ValueError):
    """A training config that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class ModelConfig:
    features: int = 16
    norm: str = "batch"
    residual: bool = True
    disc_features: int = 16


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    final_lr_fraction: float = 0.5
    batch_size: int = 16
    steps: int = 20_000


@dataclass(frozen=True)
class LossConfig:
    spectral_weight: float = 10.0
    adversarial_weight: float = 1.0
    generator_steps_per_discriminator_step: int = 10
    adversarial_start_step: int = 0
    log_eps: float = 1e-4
    discriminator_frames: int = 128
    loss_frames: str = "gap"
    """Frames the spectral losses compare: ``"gap"``, the 79 that reach the 1024 predicted
    samples; ``"packet"``, the 67 that reach what the engine plays of them, the first
    packet and the 64-sample recovery fade (a burst's next packet is predicted afresh)."""
    domain: str = "output"
    """Where the spectral losses (and the critic) look: ``"output"``, the generator's output
    magnitude (the report); ``"resynthesis"``, the STFT of the audio the runtime plays,
    the output magnitude with the LP phase inverted, crossfaded from LP and analysed
    again. With 32x overlap a refined magnitude is not a consistent STFT, so inversion
    changes it (in a one-off check the output magnitude was closer to the truth than
    the LPC's, its resynthesis farther). Fine-tuning the shipped model this way did not
    improve its validation LSD (``conf/train/bin2bin_v2_cpu_resynth.toml``)."""


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    threads: int = 1
    ema_decay: float = 0.999
    valid_every: int = 200
    checkpoint_every: int = 50
    log_every: int = 10
    bn_recalibration_batches: int = 16
    cache_jobs: int = 0


@dataclass(frozen=True)
class TrainConfig:
    name: str = "bin2bin_v2"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataSettings = field(default_factory=DataSettings)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SECTIONS = {
    "model": ModelConfig,
    "data": DataSettings,
    "optim": OptimConfig,
    "loss": LossConfig,
    "train": RunConfig,
}


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, dict[str, Any]]:
    if path in seen:
        raise ConfigError(f"{path}: base chain loops")
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None
    merged: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    if "base" in raw:
        merged = _read((path.parent / raw.pop("base")).resolve(), seen + (path,))
    for key, value in raw.items():
        if key == "name":
            merged.setdefault("", {})["name"] = value
            continue
        if key not in _SECTIONS or not isinstance(value, dict):
            raise ConfigError(f"{path}: unknown key {key!r}; expected base, name or one of {', '.join(_SECTIONS)}")
        allowed = {f.name for f in fields(_SECTIONS[key])}
        for sub in value:
            if sub not in allowed:
                raise ConfigError(f"{path}: unknown key {key}.{sub}; expected one of {', '.join(sorted(allowed))}")
        merged[key] = {**merged.get(key, {}), **value}
    return merged


def load_config(path_or_name: str | Path) -> TrainConfig:
    """Read a config file, or a shipped name in ``nmp_peer/conf/train`` (``bin2bin_v2``, ``tiny``)."""
    path = resolve_config(path_or_name, ConfigError, "training config", subdir="train")
    merged = _read(path.resolve())
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        values = dict(merged.get(name, {}))
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        try:
            sections[name] = cls(**values)
        except TypeError as e:
            raise ConfigError(f"{path}: [{name}] {e}") from None
    config = TrainConfig(name=merged.get("", {}).get("name", path.stem), **sections)
    _check(config, path)
    return config


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Rebuild a config stored in a checkpoint."""
    sections = {}
    for name, cls in _SECTIONS.items():
        values = dict(d[name])
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        sections[name] = cls(**values)
    return TrainConfig(name=d.get("name", "checkpoint"), **sections)


def _check(c: TrainConfig, path: Path) -> None:
    problems = []
    if c.model.norm not in ("batch", "group", "none"):
        problems.append("model.norm must be batch, group or none")
    if c.model.features < 1 or c.model.disc_features < 1:
        problems.append("model widths must be >= 1")
    if c.optim.batch_size < 2 and c.model.norm == "batch":
        problems.append("optim.batch_size must be >= 2 with BatchNorm")
    if not 0 < c.optim.final_lr_fraction <= 1:
        problems.append("optim.final_lr_fraction must be in (0, 1]")
    if c.loss.generator_steps_per_discriminator_step < 1:
        problems.append("loss.generator_steps_per_discriminator_step must be >= 1")
    if c.loss.discriminator_frames not in (128, 256):
        problems.append("loss.discriminator_frames must be 128 or 256 (it must hold the 79 gap frames)")
    if c.loss.loss_frames not in ("gap", "packet"):
        problems.append("loss.loss_frames must be gap or packet")
    if c.loss.domain not in ("output", "resynthesis"):
        problems.append("loss.domain must be output or resynthesis")
    if not 0 <= c.train.ema_decay < 1:
        problems.append("train.ema_decay must be in [0, 1)")
    if not 0 <= c.data.burst_fraction <= 1:
        problems.append("data.burst_fraction must be in [0, 1]")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
