"""Named network scenarios (``nmp_peer/conf/scenarios.toml``, shipped in the package) and the clips played through them.

A scenario says what the network between the two peers does: the relay's options
(loss model, delay and jitter, reordering, duplication, a rate limit, an outage) and
the events the runner causes (a peer restart). ``Scenario.relay_args`` turns it into
``nmp-peer impair`` options, ``netem_args`` into a ``tc qdisc ... netem`` line for
kernels that have netem. Unknown keys and bad values are refused with the file, the
scenario and the reason in one line, like the peer configs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nmp_peer import BLOCK_FRAMES, PACKET_MS, SAMPLE_RATE
from nmp_peer.config import CONF_DIR, first_error, read_toml
from nmp_peer.synth.signals import synthetic_music

SCENARIOS_FILE = CONF_DIR / "scenarios.toml"
STREAM_KBPS = 8.0 * (2 * BLOCK_FRAMES + 24 + 28) * SAMPLE_RATE / BLOCK_FRAMES / 1000.0
"""PCM16 mono on the wire with the 24-byte header and IPv4/UDP headers: 741 kbit/s."""


class ScenarioError(ValueError):
    """A scenario file or name that cannot be used; the message says which and why."""


class Scenario(BaseModel):
    """One hostile network; every field defaults to a clean link."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str = ""
    loss: float = Field(0.0, ge=0.0, le=1.0)
    loss_model: Literal["bernoulli", "gilbert", "trace"] = "bernoulli"
    burst: float = Field(2.0, ge=1.0)
    """Mean burst length in packets (gilbert)."""
    trace_loss: float | None = Field(None, gt=0.0, lt=0.5)
    """loss_model "trace": long-run loss rate of the challenge-like trace the runner writes."""
    trace_seed: int = 0
    delay_ms: float = Field(0.0, ge=0.0, le=2000.0)
    jitter_ms: float = Field(0.0, ge=0.0, le=1000.0)
    jitter_dist: Literal["normal", "pareto"] = "normal"
    reorder: float = Field(0.0, ge=0.0, le=1.0)
    duplicate: float = Field(0.0, ge=0.0, le=1.0)
    rate_kbps: float | None = Field(None, gt=0.0)
    outage: tuple[float, float] | None = None
    """(start, seconds) after the relay's first routed packet: everything is dropped both ways."""
    restart_at_s: float | None = Field(None, gt=0.0)
    """Kill peer A (SIGKILL) this long after it started sending, then start it again: a new stream id."""
    restart_down_s: float = Field(0.5, ge=0.0, le=10.0)
    both_ways: bool = True
    seed: int = 1
    config: str | None = None
    """The peers' config (a path, or a shipped name: default, lan, wan); None: the built-in defaults."""

    @field_validator("outage")
    @classmethod
    def _outage(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not all(0.0 <= v < math.inf for v in value):
            raise ValueError("outage is [start_s, seconds], both finite and non-negative")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.loss_model == "trace" and self.trace_loss is None:
            raise ValueError("loss_model 'trace' needs trace_loss (the trace's loss rate)")
        if self.trace_loss is not None and self.loss_model != "trace":
            raise ValueError("trace_loss needs loss_model = 'trace'")
        if self.reorder + self.duplicate > 1.0:
            raise ValueError("reorder + duplicate must not exceed 1")
        if self.loss_model == "gilbert" and self.loss > 0 and self.loss > self.burst / (self.burst + 1.0):
            raise ValueError(f"loss {self.loss} is impossible with mean burst {self.burst}")
        return self

    # ------------------------------------------------------------------ what it asks of the network
    @property
    def impaired(self) -> bool:
        return bool(
            self.loss
            or self.loss_model == "trace"
            or self.delay_ms
            or self.jitter_ms
            or self.reorder
            or self.duplicate
            or self.rate_kbps
            or self.outage
        )

    def trace_packets(self, seconds: float) -> np.ndarray:
        """The challenge-like loss trace for a run of ``seconds`` (it outlasts the run; after it, no loss)."""
        from nmp_peer.netsim.loss import challenge_like_trace

        assert self.trace_loss is not None
        n = int(math.ceil(seconds * 1000.0 / PACKET_MS))
        return challenge_like_trace(n, seed=self.trace_seed, loss_rate=self.trace_loss)

    def relay_args(self, trace_path: str | None = None) -> list[str]:
        """Options of ``nmp-peer impair`` (without --listen, --forward, --log, --summary)."""
        args = [
            "--loss",
            f"{self.loss:g}",
            "--loss-model",
            self.loss_model,
            "--burst",
            f"{self.burst:g}",
            "--delay-ms",
            f"{self.delay_ms:g}",
            "--jitter-ms",
            f"{self.jitter_ms:g}",
            "--jitter-dist",
            self.jitter_dist,
            "--reorder",
            f"{self.reorder:g}",
            "--duplicate",
            f"{self.duplicate:g}",
            "--seed",
            str(self.seed),
            "--both-ways" if self.both_ways else "--one-way",
        ]
        if self.loss_model == "trace":
            if trace_path is None:
                raise ScenarioError(f"scenario {self.name}: the relay needs the trace file's path")
            args += ["--trace", trace_path]
        if self.rate_kbps is not None:
            args += ["--rate-kbps", f"{self.rate_kbps:g}"]
        if self.outage is not None:
            args += ["--outage", f"{self.outage[0]:g}:{self.outage[1]:g}"]
        return args

    def netem_args(self) -> str | None:
        """``tc qdisc add dev eth0 root netem ARGS`` for one peer's egress; None if netem cannot express it.

        Loss: ``random`` (Bernoulli) or ``gemodel p r 100 0`` (the lab's Gilbert model: every
        packet in the bad state is lost, mean burst ``1 / r``). Jitter: netem's tables are
        two-sided around ``delay`` (the relay's are one-sided), so the delay keeps ``delay_ms``
        and the spread is the same scale. Traces and outages have no netem form: such
        scenarios go through the relay whatever the backend.
        """
        if self.loss_model == "trace" or self.outage is not None:
            return None
        parts: list[str] = []
        if self.delay_ms or self.jitter_ms or self.reorder:
            parts += ["delay", f"{self.delay_ms:g}ms"]
            if self.jitter_ms:
                parts += [
                    f"{self.jitter_ms:g}ms",
                    "distribution",
                    "normal" if self.jitter_dist == "normal" else "pareto",
                ]
        if self.loss > 0:
            if self.loss_model == "bernoulli":
                parts += ["loss", "random", f"{100 * self.loss:g}%"]
            else:
                r = 1.0 / self.burst
                p = self.loss * r / (1.0 - self.loss)
                parts += ["loss", "gemodel", f"{100 * p:.4g}%", f"{100 * r:.4g}%", "100%", "0%"]
        if self.duplicate:
            parts += ["duplicate", f"{100 * self.duplicate:g}%"]
        if self.reorder:
            parts += ["reorder", f"{100 * self.reorder:g}%"]
        if self.rate_kbps:
            parts += ["rate", f"{self.rate_kbps:g}kbit"]
        return " ".join(parts) if parts else "delay 0ms"


class ScenarioFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, object] = Field(default_factory=dict)
    scenario: list[dict[str, object]]


def load_scenarios(path: str | Path | None = None) -> list[Scenario]:
    """All scenarios of ``path`` (default: the shipped ``nmp_peer/conf/scenarios.toml``), in file order.

    ``[defaults]`` gives values every scenario starts from (e.g. ``seed``, ``config``).
    """
    p = Path(path) if path is not None else SCENARIOS_FILE
    data = read_toml(p, ScenarioError, "scenario file")
    try:
        parsed = ScenarioFile.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{p}: {first_error(exc)}") from None
    out: list[Scenario] = []
    for i, raw in enumerate(parsed.scenario):
        label = raw.get("name", f"#{i + 1}")
        try:
            out.append(Scenario.model_validate({**parsed.defaults, **raw}))
        except ValidationError as exc:
            raise ScenarioError(f"{p}: scenario {label}: {first_error(exc)}") from None
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ScenarioError(f"{p}: scenario names must be unique; repeated: {', '.join(dup)}")
    return out


def select(scenarios: list[Scenario], only: str | list[str] | None) -> list[Scenario]:
    """The scenarios named in ``only`` (comma-separated or a list), in the order given; all when None."""
    if only is None:
        return list(scenarios)
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only) if n.strip()]
    by_name = {s.name: s for s in scenarios}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ScenarioError(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(by_name)}")
    return [by_name[n] for n in names]


# ---------------------------------------------------------------------- clips
def write_clip(path: str | Path, seconds: float, seed: int, kind: str = "auto") -> str:
    """Write a mono PCM16 clip; returns what it is: ``demo`` (FluidSynth piano, bass, drums) or ``synthetic``.

    ``kind`` ``auto`` takes the demo clip when FluidSynth and a SoundFont are installed.
    """
    from nmp_peer.audio_io import write_audio

    if kind not in ("auto", "demo", "synthetic"):
        raise ScenarioError(f"unknown clip kind {kind!r}; choose auto, demo or synthetic")
    if kind in ("auto", "demo"):
        try:
            from nmp_peer.synth.clips import make_demo_clip
            from nmp_peer.synth.render import SynthUnavailableError
        except ImportError as exc:  # mido (the lab's extra) is missing
            if kind == "demo":
                raise ScenarioError(f"the demo clip needs the lab's packages: {exc}") from None
        else:
            try:
                make_demo_clip(path, seconds=seconds, seed=seed)
                return "demo"
            except SynthUnavailableError:
                if kind == "demo":
                    raise
    write_audio(path, synthetic_music(seconds, seed))
    return "synthetic"
