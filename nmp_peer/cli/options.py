"""The options more than one command takes, defined once, and the checks behind them.

The checks are Typer callbacks (``callback=positive``, ``callback=between(0, 1)``): they
run while the command line is parsed, before anything starts, and raise a ``UserError``
that names the option, so a bad value reads like every other user mistake (one line,
exit code 2). They are used instead of Typer's own ``min=``/``max=``, which let ±inf
through and report NaN as "should be greater than or equal to 0" in the parser's
four-line usage message.

The impairment options (``--loss`` ... ``--duplicate``) are those of ``loopback`` and
``impair``; ``make_impairment`` builds one direction from them and checks what a single
option cannot (``--loss`` against ``--burst``, ``--trace`` against ``--loss-model``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from nmp_peer.errors import UserError
from nmp_peer.netsim.impair import Impairment
from nmp_peer.netsim.loss import LOSS_KINDS, make_loss_model


def _option(param: typer.CallbackParam) -> str:
    return max(param.opts, key=len) if param.opts else str(param.name)


def positive(param: typer.CallbackParam, value: float | None) -> float | None:
    """Typer callback for a duration or a rate: a finite number above zero; ``None`` (not given) passes."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UserError(f"{_option(param)} must be positive and finite, got {value:g}")
    return value


def at_least(low: float) -> Callable[[typer.CallbackParam, float | None], float | None]:
    """Typer callback: a finite number >= ``low``."""

    def check(param: typer.CallbackParam, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value >= low):
            raise UserError(f"{_option(param)} must be a finite number >= {low:g}, got {value:g}")
        return value

    return check


def between(low: float, high: float) -> Callable[[typer.CallbackParam, float | None], float | None]:
    """Typer callback: a number in [``low``, ``high``] (NaN is not)."""

    def check(param: typer.CallbackParam, value: float | None) -> float | None:
        if value is not None and not low <= value <= high:
            raise UserError(f"{_option(param)} must be in [{low:g}, {high:g}], got {value:g}")
        return value

    return check


# -- config and concealer (jam, loopback, conceal, demo) -------------------------------------------

ConfigOpt = Annotated[
    str | None, typer.Option("--config", help="TOML config: a path, or a shipped name (default, lan, wan).")
]
ConcealerOpt = Annotated[
    str | None,
    typer.Option("--concealer", help="zeros | repeat | lpc | gan | opus-plc | opus-fec (default: the config's)."),
]


def build_config(
    config: str | None, concealer: str | None, channels: int | None = None, codec: str | None = None
) -> Any:
    """The config ``--config`` names, with ``--concealer``, the input's channels and ``--codec`` applied."""
    from nmp_peer.config import Config, ConfigError, load_config

    cfg = load_config(config)
    data = cfg.model_dump()
    if codec is not None:
        data["audio"]["codec"] = codec
    if concealer is not None:
        data["conceal"]["method"] = concealer
    if channels is not None:
        data["audio"]["channels"] = channels
    try:
        return Config.model_validate(data)
    except Exception as exc:  # pydantic's ValidationError, reworded as the config loader does
        from pydantic import ValidationError

        from nmp_peer.config import first_error

        if isinstance(exc, ValidationError):
            raise ConfigError(first_error(exc)) from None
        raise


def build_encoder(cfg: Any) -> tuple[Any, int]:
    """The sender's codec from the config, and the delay it adds (samples)."""
    from nmp_peer.proto.opus import OpusUnavailable

    try:
        encoder = cfg.encoder()
    except OpusUnavailable as exc:
        raise UserError(str(exc)) from None
    if cfg.audio.codec == "opus":
        from nmp_peer.proto.opus import codec_delay_samples

        return encoder, codec_delay_samples(encoder.settings, cfg.audio.channels)
    return encoder, 0


# -- sound devices (jam, band) ----------------------------------------------------------------------

DevicePeriodOpt = Annotated[
    int | None, typer.Option(help="Sound-device frames per callback (default: the config's; 0: the device's own).")
]
DeviceRateOpt = Annotated[
    int | None, typer.Option(help="Sound-device sample rate (default: the config's; 0: the device's default).")
]
DeviceLatencyOpt = Annotated[
    str | None, typer.Option(help="Sound-device latency: low | high | milliseconds (default: the config's).")
]


def with_devices(cfg: Any, period: int | None, rate: int | None, latency: str | None) -> Any:
    """The config with ``--device-period``/``--device-rate``/``--device-latency`` applied
    (checked as the config's ``[device]`` is: a bad value is one line, exit code 2)."""
    if period is None and rate is None and latency is None:
        return cfg
    from nmp_peer.config import Config, ConfigError, first_error

    data = cfg.model_dump()
    for name, value in (("period", period), ("rate", rate), ("latency", latency)):
        if value is not None:
            data["device"][name] = value
    try:
        return Config.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError
        from pydantic import ValidationError

        raise ConfigError(first_error(exc) if isinstance(exc, ValidationError) else str(exc)) from None


# -- the live web monitor (jam, and every command that runs a live session) -----------------------

MonitorOpt = Annotated[
    str | None,
    typer.Option(
        "--monitor",
        help="Serve a live web monitor on HOST:PORT (e.g. 127.0.0.1:8080; port 0: any free one). "
        "An address other than a loopback one needs --monitor-key-file.",
    ),
]
MonitorKeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--monitor-key-file",
        help="A token file (16+ characters, e.g. openssl rand -hex 16) that every monitor request must carry: "
        "open the page as http://HOST:PORT/?key=TOKEN.",
    ),
]


def monitor_config(monitor: str | None, key_file: Path | None) -> Any:
    """The monitor's ``MonitorConfig`` (None without ``--monitor``); a non-loopback address without a key is refused."""
    if monitor is None:
        if key_file is not None:
            raise UserError("--monitor-key-file needs --monitor HOST:PORT")
        return None
    from nmp_peer.live.monitor import MonitorConfig

    return MonitorConfig.parse(monitor, key_file)


# -- impairments (loopback, impair) ------------------------------------------------------------------

LossOpt = Annotated[float, typer.Option(help="Packet loss rate, 0..1.", callback=between(0.0, 1.0))]
LossModelOpt = Annotated[str, typer.Option(help="bernoulli | gilbert | trace")]
BurstOpt = Annotated[float, typer.Option(help="Mean burst length in packets (gilbert).", callback=at_least(1.0))]
TraceOpt = Annotated[Path | None, typer.Option(help="Loss trace file (one 0/1 per packet).")]
DelayOpt = Annotated[float, typer.Option(help="Fixed one-way delay.", callback=at_least(0.0))]
JitterOpt = Annotated[float, typer.Option(help="Jitter scale (added delay, never negative).", callback=at_least(0.0))]
JitterDistOpt = Annotated[str, typer.Option(help="normal | pareto")]
ReorderOpt = Annotated[
    float, typer.Option(help="Probability that a packet is held back behind its successor.", callback=between(0.0, 1.0))
]
DuplicateOpt = Annotated[
    float, typer.Option(help="Probability that a packet arrives twice.", callback=between(0.0, 1.0))
]
SeedOpt = Annotated[int, typer.Option(help="Seed of the impairments.")]
"""``loopback``'s ``--seed``; ``impair`` has its own, whose help says which direction it seeds."""


def make_impairment(
    *,
    loss: float,
    loss_model: str,
    burst: float,
    trace: Path | None,
    delay_ms: float,
    jitter_ms: float,
    jitter_dist: str,
    reorder: float,
    duplicate: float,
    seed: int,
) -> Impairment:
    """One direction's impairment, built like ``nmp-peer loopback`` builds it (same seed, same decisions).

    Every value comes from the command line, so a bad one is a ``UserError`` naming the
    option (a bad trace file: ``TraceError``); NaN and ±inf are refused like any other
    value out of range. (The callbacks above refuse most of them while parsing; this
    checks them again for callers that pass values directly, such as ``demo``.)
    """
    if loss_model not in LOSS_KINDS or loss_model == "none":
        raise UserError(f"unknown --loss-model {loss_model!r}; choose bernoulli, gilbert or trace")
    if not 0.0 <= loss <= 1.0:
        raise UserError(f"--loss must be in [0, 1], got {loss:g}")
    if not 1.0 <= burst < float("inf"):
        raise UserError(f"--burst must be a finite number of packets >= 1, got {burst:g}")
    for name, value in (("--delay-ms", delay_ms), ("--jitter-ms", jitter_ms)):
        if not 0.0 <= value < float("inf"):
            raise UserError(f"{name} must be a finite number >= 0, got {value:g}")
    if jitter_dist not in ("normal", "pareto"):
        raise UserError(f"unknown --jitter-dist {jitter_dist!r}; choose normal or pareto")
    for name, value in (("--reorder", reorder), ("--duplicate", duplicate)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{name} must be in [0, 1], got {value:g}")
    if reorder + duplicate > 1.0:
        raise UserError(f"--reorder + --duplicate must not exceed 1, got {reorder:g} + {duplicate:g}")
    if loss_model == "trace" and trace is None:
        raise UserError("--loss-model trace needs --trace FILE")
    if trace is not None and loss_model != "trace":
        raise UserError("--trace FILE needs --loss-model trace")
    kind = loss_model if loss > 0 or loss_model == "trace" else "none"
    if kind == "gilbert" and not loss <= burst / (1.0 + burst):
        limit = burst / (1.0 + burst)
        raise UserError(
            f"--loss {loss:g} is impossible with --burst {burst:g}: every burst needs a received packet "
            f"after it, so the loss is at most burst / (1 + burst) = {limit:.4g}"
        )
    model = make_loss_model(kind, loss, burst, trace, seed)  # a missing or malformed trace: TraceError
    return Impairment(model, delay_ms, jitter_ms, jitter_dist, reorder, duplicate, seed=seed)  # type: ignore[arg-type]
