"""Validated TOML configuration: a file, or a config shipped in the package
(``nmp_peer/conf/*.toml``, see ``nmp_peer.shipped``); a bad value is named in one line."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nmp_peer import SAMPLE_RATE
from nmp_peer.conceal import concealer_names
from nmp_peer.receiver.gate import REPIN_AFTER_S
from nmp_peer.receiver.latency import LatencyPolicy
from nmp_peer.receiver.playout import PlayoutConfig
from nmp_peer.shipped import conf_dir, resolve_config, shipped_names  # noqa: F401  (re-exported)

CONF_DIR = conf_dir()
"""``nmp_peer/conf``: default, lan, wan (``--config NAME``) and scenarios.toml."""


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AudioSection(_Section):
    channels: Literal[1, 2] = 1
    codec: Literal["pcm16", "opus"] = "pcm16"


class OpusSection(_Section):
    bitrate: int = Field(128_000, ge=6_000, le=510_000)
    frame_ms: float = 10.0
    complexity: int = Field(8, ge=0, le=10)
    fec: bool = False

    @field_validator("frame_ms")
    @classmethod
    def _opus_frame(cls, value: float) -> float:
        from nmp_peer.proto.opus import FRAME_MS

        if value not in FRAME_MS:
            raise ValueError(f"Opus frames are {', '.join(f'{f:g}' for f in FRAME_MS)} ms, not {value:g}")
        return value


class BufferSection(_Section):
    mode: Literal["fixed", "adaptive"] = "adaptive"
    depth_packets: int = Field(2, ge=1, le=64)
    min_depth_packets: int = Field(1, ge=1, le=64)
    max_depth_packets: int = Field(32, ge=1, le=256)
    margin_ms: float = Field(1.5, ge=0, le=100)
    window_s: float = Field(8.0, ge=1, le=300)
    quantile: float = Field(0.02, gt=0, lt=0.5)
    max_drift_ppm: float = Field(2000.0, ge=0, le=20000)

    @model_validator(mode="after")
    def _ordered(self) -> BufferSection:
        if not self.min_depth_packets <= self.max_depth_packets:
            raise ValueError("min_depth_packets must not exceed max_depth_packets")
        return self


class ConcealSection(_Section):
    method: str = "lpc"
    fade_after_ms: float | None = Field(None, ge=0, le=10_000)
    """A burst's concealment starts fading to silence after this long; unset: the
    concealer's own measured policy (``Concealer.fade_after_ms``)."""
    fade_ms: float | None = Field(None, gt=0, le=10_000)
    """Length of that fade; unset: the concealer's own."""
    chain_bursts: bool = True

    @field_validator("method")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in concealer_names():
            raise ValueError(f"unknown concealer {value!r}; choose one of {', '.join(concealer_names())}")
        return value


class NetworkSection(_Section):
    listen: str = "0.0.0.0:50000"
    peer: str | None = None
    """``nmp-peer jam``'s --listen and --peer when the command line gives none."""

    @field_validator("listen", "peer")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        from nmp_peer.live.transport import Endpoint

        if value is not None:
            Endpoint.parse(value)  # EndpointError is a ValueError: reported as network.<key>
        return value


class SecuritySection(_Section):
    key_file: str | None = None
    """Pre-shared key file (at least 16 bytes, raw or hex); relative paths are from the config file."""
    encrypt: bool = True
    """With a key: encrypt the audio (ChaCha20-Poly1305); false only authenticates it."""
    pin: Literal["peer", "host"] = "peer"
    """Without a key: follow the stream from the peer's exact HOST:PORT (``peer``), or from
    any port of its host (``host``: a peer behind a NAT that changes its source port)."""
    repin_after_s: float = Field(REPIN_AFTER_S, gt=0.0, le=60.0)
    """Without a key: follow another stream (a restarted peer) only after the followed one
    ended or was silent this long."""


class DeviceSection(_Section):
    period: int = Field(0, ge=0, le=8192)
    """Frames per sound-device callback; 0: the device's own (JACK: its period)."""
    rate: int = Field(0, ge=0, le=384_000)
    """The sound device's sample rate; 0: its default (JACK: the server's)."""
    latency: str | float = "low"
    """PortAudio's suggested device latency: "low", "high" or milliseconds."""

    @field_validator("period")
    @classmethod
    def _period(cls, value: int) -> int:
        if value and not 16 <= value <= 8192:
            raise ValueError(f"a device period is 0 (the device's own) or 16..8192 frames, not {value}")
        return value

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: int) -> int:
        if value and not 8000 <= value <= 384_000:
            raise ValueError(f"a device rate is 0 (the device's default) or 8000..384000 Hz, not {value}")
        return value

    @field_validator("latency")
    @classmethod
    def _latency(cls, value: str | float) -> str | float:
        if isinstance(value, str) and value not in ("low", "high"):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f'device latency is "low", "high" or milliseconds, not {value!r}') from None
        if not isinstance(value, str) and not 0 < value <= 2000:
            raise ValueError(f"device latency is 0..2000 ms, not {value:g}")
        return value

    def settings(self) -> Any:
        """As the jam opens its devices (``live.devices.DeviceSettings``)."""
        from nmp_peer.live.devices import DeviceSettings

        latency = self.latency if isinstance(self.latency, str) else self.latency / 1000.0
        return DeviceSettings(period=self.period, rate=self.rate, latency=latency)


class LiveSection(_Section):
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"
    """The event loop ``nmp-peer jam`` runs on; uvloop needs the ``[uvloop]`` extra."""


class Config(_Section):
    audio: AudioSection = AudioSection()
    buffer: BufferSection = BufferSection()
    conceal: ConcealSection = ConcealSection()
    network: NetworkSection = NetworkSection()
    security: SecuritySection = SecuritySection()
    opus: OpusSection = OpusSection()
    device: DeviceSection = DeviceSection()
    live: LiveSection = LiveSection()

    def encoder(self, channels: int | None = None) -> Any:
        """The sender's codec: PCM16, or an Opus encoder stream with the [opus] settings."""
        from nmp_peer.proto.codec import Pcm16Codec

        ch = channels or self.audio.channels
        if self.audio.codec == "pcm16":
            return Pcm16Codec()
        from nmp_peer.proto.opus import OpusEncoderStream, OpusSettings

        o = self.opus
        return OpusEncoderStream(ch, OpusSettings(o.bitrate, o.frame_ms, o.complexity, o.fec))

    def playout(self) -> PlayoutConfig:
        b = self.buffer
        policy = LatencyPolicy(
            mode=b.mode,
            depth_packets=b.depth_packets,
            min_depth_packets=b.min_depth_packets,
            max_depth_packets=b.max_depth_packets,
            margin_samples=round(b.margin_ms * SAMPLE_RATE / 1000.0),
            window_s=b.window_s,
            quantile=b.quantile,
            max_rate_ppm=b.max_drift_ppm,
        )
        return PlayoutConfig(
            channels=self.audio.channels,
            latency=policy,
            fade_after_ms=self.conceal.fade_after_ms,
            fade_ms=self.conceal.fade_ms,
            chain_bursts=self.conceal.chain_bursts,
            # the Opus baseline "opus-fec" is Opus's decoder with its in-band FEC
            codec_fec=self.opus.fec or self.conceal.method == "opus-fec",
        )

    def playout_fixed(self, depth_packets: int = 1) -> PlayoutConfig:
        """The playout settings with a fixed buffer: offline tools, where nothing arrives late."""
        base = self.playout()
        latency = replace(base.latency, mode="fixed", depth_packets=depth_packets)
        return replace(base, latency=latency)


def first_error(exc: ValidationError) -> str:
    """The first validation error as ``key.path: reason``."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{where}: {msg}"


def read_toml(path: Path, error: type[Exception], what: str) -> dict[str, Any]:
    """Parse a TOML file; any failure becomes ``error`` with a one-line message naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read {what} {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def load_config(path: str | Path | None = None) -> Config:
    """Load ``path`` (a file, or a shipped name such as ``lan``: ``shipped_names()``); None gives the defaults."""
    if path is None:
        return Config()
    p = resolve_config(path, ConfigError)
    data = read_toml(p, ConfigError, "config file")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{p}: {first_error(exc)}") from None
    key_file = cfg.security.key_file
    if key_file is not None and not Path(key_file).is_absolute():
        cfg.security.key_file = str(p.parent / key_file)
    return cfg
