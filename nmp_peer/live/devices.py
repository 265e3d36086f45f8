"""The sound-card edge of a jam: PortAudio streams that end the jam loudly when they stop.

PortAudio tells of a stream's end in two ways, and neither alone covers what fails under
JACK: an exception in a callback (or its ``CallbackAbort``) aborts the stream and calls
its ``finished_callback``; a dead audio server only clears the stream's ``active`` flag
(PortAudio's JACK shutdown handler calls no callback). So every stream has a finished
callback and is also polled (``DeviceStreams.failure``). After the server died
``Pa_CloseStream`` never returns, so the streams are closed on a daemon thread and
abandoned after ``CLOSE_TIMEOUT_S`` (``FAILED_CLOSE_TIMEOUT_S`` once one failed);
PortAudio's exit handler (``Pa_Terminate``, which would hang, or abort the process, on
an abandoned stream) is then not run.

``sounddevice`` is imported only when a stream opens: PortAudio scans the devices then.
"""

from __future__ import annotations

import atexit
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.errors import EnvironmentFailure
from nmp_peer.receiver.stats import Stats

CLOSE_TIMEOUT_S = 2.0
"""How long closing the streams may take before they are abandoned (it takes ~50 ms under JACK)."""
FAILED_CLOSE_TIMEOUT_S = 0.5
"""The same after a stream stopped unasked: with its server dead, a close never returns."""
POLL_S = 0.1
"""How often the jam checks that its streams still run."""

Kind = Literal["input", "output", "duplex"]


class DeviceError(ValueError):
    """A sound device that cannot be opened (a user mistake: unknown name, no server running)."""


class DeviceFailure(EnvironmentFailure):
    """A sound device stream stopped during the jam: its audio server died, or a callback failed."""


def list_devices() -> str:
    """The sound devices PortAudio sees, one a line; a DeviceError that says why when there are none."""
    try:
        import sounddevice as sd
    except (OSError, ImportError) as exc:  # the PortAudio library is missing
        raise DeviceError(f"cannot list sound devices: PortAudio is not installed ({exc})") from None
    devices = sd.query_devices()
    if len(devices):
        return str(devices)
    apis = [str(api["name"]) for api in sd.query_hostapis()]
    # PortAudio lists JACK only while it could connect to a server (it never starts one).
    jack = "" if any("JACK" in api for api in apis) else "; no JACK server is running"
    seen = f"PortAudio's {', '.join(apis)} found none" if apis else "PortAudio has no host API"
    raise DeviceError(f"no sound devices: {seen}{jack}")


def device_spec(spec: str) -> int | str:
    """``--input``/``--output`` as PortAudio takes it: an index or a name."""
    return int(spec) if spec.isdigit() else spec


@dataclass
class _Opened:
    kind: Kind
    label: str
    """How the error line names it: ``output device 0 (system)``."""
    stream: Any


class DeviceStreams:
    """The jam's sound-device streams, each started at once, watched, and closed without hanging.

    ``wake`` is called (from PortAudio's thread) when a stream ended unasked, so the jam
    need not wait for its next poll; it must be thread-safe.
    """

    def __init__(self, stats: Stats, wake: Callable[[], None] | None = None) -> None:
        self.stats = stats
        self.wake = wake
        self._streams: list[_Opened] = []
        self._lock = threading.Lock()
        self._failure: str | None = None
        self._closing = False
        self.close_s: float | None = None
        """How long the last ``close`` took (seconds), abandoned streams included."""

    @property
    def opened(self) -> bool:
        return bool(self._streams)

    def open(
        self,
        kind: Kind,
        spec: str,
        channels: int | tuple[int, int],
        callback: Callable[..., None],
        *,
        samplerate: float = SAMPLE_RATE,
        blocksize: int = BLOCK_FRAMES,
        latency: str | float = "low",
    ) -> Any:
        """Open and start a float32 stream (``duplex``: one stream for input and output of the
        same device, ``channels`` then (in, out) or one for both); DeviceError if PortAudio
        refuses. Returns the stream."""
        import sounddevice as sd

        cls = {"input": sd.InputStream, "output": sd.OutputStream, "duplex": sd.Stream}[kind]
        label = f"{kind} device {spec!r}"
        try:
            stream = cls(
                samplerate=samplerate,
                blocksize=blocksize,
                channels=channels,
                dtype="float32",
                device=device_spec(spec),
                callback=self.guard(kind, label, callback, sd.CallbackAbort),
                finished_callback=lambda: self._finished(label),
                latency=latency,
            )
        except (sd.PortAudioError, ValueError) as exc:
            raise DeviceError(f"cannot open {label}: {exc}") from None
        try:
            dev = stream.device[0] if isinstance(stream.device, tuple) else stream.device
            name = sd.query_devices(dev)["name"]
            label = f"{kind} device {spec!r} ({name})" if name != spec else label
        except (sd.PortAudioError, ValueError, TypeError, KeyError, IndexError):
            pass
        opened = _Opened(kind, label, stream)
        self._streams.append(opened)  # closed by close() even if it does not start
        try:
            stream.start()
        except sd.PortAudioError as exc:
            raise DeviceError(f"cannot start {label}: {exc}") from None
        return stream

    def guard(
        self, kind: Kind, label: str, callback: Callable[..., None], abort: type[BaseException]
    ) -> Callable[..., None]:
        """``callback``, with an exception counted (``device_callback_errors``) and turned into a
        failure of the jam; ``abort`` (sounddevice's ``CallbackAbort``) then stops the stream
        without PortAudio's "Exception ignored from cffi callback"."""

        def guarded(*args: Any) -> None:
            try:
                callback(*args)
            except Exception as exc:
                self.stats.device_callback_errors += 1
                self._fail(f"the {label} callback raised {type(exc).__name__}: {exc}")
                raise abort from None

        return guarded

    def _finished(self, label: str) -> None:
        if not self._closing:
            self._fail(f"the {label} stopped")

    def _fail(self, message: str) -> None:
        with self._lock:
            if self._failure is not None:
                return
            self._failure = message
        if self.wake is not None:
            try:
                self.wake()
            except RuntimeError:  # the event loop is already closed
                pass

    def failure(self) -> str | None:
        """Why the jam must end, once a stream stopped unasked (None while all run)."""
        if self._failure is None and not self._closing:
            for s in self._streams:
                if not s.stream.active:
                    self._fail(f"the {s.label} stopped: its stream is no longer active (did the audio server stop?)")
                    break
        return self._failure

    def close(self, timeout_s: float | None = None) -> int:
        """Close every stream, one after another on a daemon thread (two closes at once deadlock
        PortAudio's JACK host API), all within ``timeout_s``; returns how many were abandoned
        (counted in ``device_close_timeouts``)."""
        if timeout_s is None:
            timeout_s = CLOSE_TIMEOUT_S if self._failure is None else FAILED_CLOSE_TIMEOUT_S
        self._closing = True
        streams = [s.stream for s in self._streams]
        self._streams.clear()
        if not streams:
            return 0
        closed: list[Any] = []

        def close_all() -> None:
            for stream in streams:
                try:
                    stream.close()
                except Exception:  # a stream whose server is gone may refuse to close: it is let go
                    pass
                closed.append(stream)

        start = time.monotonic()
        closer = threading.Thread(target=close_all, name="close-devices", daemon=True)
        closer.start()
        closer.join(timeout_s)
        self.close_s = time.monotonic() - start
        abandoned = len(streams) - len(closed)
        if abandoned:
            self.stats.device_close_timeouts += abandoned
            sd = sys.modules.get("sounddevice")
            handler = getattr(sd, "_exit_handler", None)
            if handler is not None:  # Pa_Terminate would wait for the abandoned stream, or abort
                atexit.unregister(handler)
        return abandoned


@dataclass(frozen=True)
class DeviceSettings:
    """How the sound devices are opened (config ``[device]``, ``jam --device-*``)."""

    period: int = 0
    """Frames per callback; 0: the device's own (under JACK its period). Any, 64-1024 and more,
    is re-blocked to the stream's 512-sample packets."""
    rate: int = 0
    """The device's sample rate; 0: its default (under JACK the server's). Other than 44100,
    resampled at the device edge (soxr)."""
    latency: str | float = "low"
    """PortAudio's suggested latency: ``low``, ``high`` or seconds."""


RESAMPLE_QUALITY = "LQ"
"""soxr's quality at the device edge: its low-latency one (16-bit precision; 3.4 ms of delay
from 48 kHz, 0.5 ms to it; ``HQ`` would add 16.5 ms and 17.4 ms)."""

_LATENCY_EMA = 1.0 / 64.0


class _Resampler:
    """soxr's streaming resampler between the device's rate and 44.1 kHz (None: the same rate)."""

    def __init__(self, rate_in: float, rate_out: float, channels: int) -> None:
        import soxr

        self._stream = soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality=RESAMPLE_QUALITY)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = self._stream.resample_chunk(np.ascontiguousarray(frames, np.float32))
        return np.asarray(out, np.float32).reshape(-1, frames.shape[1])

    def delay(self) -> float:
        """Frames (at the output rate) between a frame in and the same frame out."""
        return float(self._stream.delay())


def _times(time_info: Any) -> tuple[float, float, float]:
    """(currentTime, inputBufferAdcTime, outputBufferDacTime) of a callback (zeros where PortAudio gives none)."""
    if time_info is None:
        return 0.0, 0.0, 0.0
    return (
        float(getattr(time_info, "currentTime", 0.0)),
        float(getattr(time_info, "inputBufferAdcTime", 0.0)),
        float(getattr(time_info, "outputBufferDacTime", 0.0)),
    )


class DeviceEdge:
    """The jam's sound-card side between PortAudio and the stream: periods re-blocked to
    512-sample blocks (``receiver.edge``), the device's rate resampled to 44.1 kHz and back,
    and the output device as the playout's clock.

    The playout engine's ``now`` for a block is not when a callback ran: it is the host time
    at which the device plays the block's first frame (its DAC time, through a
    :class:`~nmp_peer.receiver.edge.DeviceClock` locked to the callbacks' ``outputBufferDacTime``)
    less the output latency and, where a period holds more than a block, the lead of the
    period's last block: the latest moment the block could have been computed, steady from
    block to block. The host clock (``host_to_now``: host seconds to the engine's clock in
    samples) only timestamps arrivals. The latencies this adds are measured into the stats:
    ``device_input_latency_ms`` (ADC of a block's first sample until the block is handed on)
    and ``device_output_latency_ms`` (a block's deadline until its first frame's DAC time).

    ``channels`` is the stream's (the input's), ``out_channels`` the output's (a band may mix
    mono streams to stereo; None: the same). ``latency_stats`` are further counters (a band's
    remotes) that get the two measured device latencies too, so that each remote's
    ``latency_ms`` counts the sound cards as a duo's does.
    """

    def __init__(
        self,
        streams: DeviceStreams,
        settings: DeviceSettings,
        channels: int,
        host_to_now: Callable[[float], float],
        host_clock: Callable[[], float] = time.monotonic,
        *,
        out_channels: int | None = None,
        latency_stats: Sequence[Stats] = (),
    ) -> None:
        self.streams = streams
        self.stats = streams.stats
        self.settings = settings
        self.channels = channels
        self.out_channels = out_channels or channels
        self.latency_stats = tuple(latency_stats)
        self.host_to_now = host_to_now
        self.host_clock = host_clock
        self.rate = 0.0
        self.clock: Any = None
        self._in_rs: _Resampler | None = None
        self._out_rs: _Resampler | None = None
        self._reblock_in: Any = None
        self._reblock_out: Any = None
        self._out_latency: float | None = None
        self._extra_frames = 0
        self._in_latency: float | None = None

    def open(
        self,
        input_spec: str | None,
        output_spec: str | None,
        next_block: Callable[[float], np.ndarray] | None,
        skip_stall: Callable[[float], int] | None,
        deliver: Callable[[np.ndarray], None] | None,
    ) -> None:
        """Open the streams: one duplex stream when input and output name the same device.
        ``deliver`` gets each captured 512-sample block (from PortAudio's thread);
        ``next_block(now)`` gives the output's next 512-sample block at the engine's clock
        ``now`` (a playout engine's ``next_block``, a band's mix), ``skip_stall(now)`` is
        called once the output device jumped ahead (``PlayoutEngine.skip_stall``)."""
        from nmp_peer.receiver.edge import DeviceClock, InputReblocker, OutputReblocker

        s, ch, out_ch = self.settings, self.channels, self.out_channels
        if output_spec is None:
            next_block = None
        self.rate = float(s.rate or self._default_rate(output_spec or input_spec))
        resample = self.rate != SAMPLE_RATE
        self.stats.device_rate = int(self.rate)
        if input_spec is not None and deliver is not None:
            self._reblock_in = InputReblocker(ch)
            self._in_rs = _Resampler(self.rate, SAMPLE_RATE, ch) if resample else None
        if next_block is not None:
            self._reblock_out = OutputReblocker(out_ch)
            self._out_rs = _Resampler(SAMPLE_RATE, self.rate, out_ch) if resample else None
            self.clock = DeviceClock(self.rate)
        kw: dict[str, Any] = {"samplerate": self.rate, "blocksize": s.period, "latency": s.latency}
        capture = self._capture(deliver) if deliver is not None else None
        play = self._play(next_block, skip_stall) if next_block is not None else None
        if capture is not None and play is not None and input_spec == output_spec:

            def duplex(indata: np.ndarray, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
                capture(indata, frames, time_info, status)
                play(outdata, frames, time_info, status)

            assert output_spec is not None
            self.streams.open("duplex", output_spec, ch if ch == out_ch else (ch, out_ch), duplex, **kw)
            return
        if capture is not None and input_spec is not None:
            self.streams.open("input", input_spec, ch, capture, **kw)
        if play is not None and output_spec is not None:
            self.streams.open("output", output_spec, out_ch, play, **kw)

    def _default_rate(self, spec: str | None) -> float:
        import sounddevice as sd

        try:
            return float(sd.query_devices(device_spec(spec) if spec else None)["default_samplerate"])
        except (sd.PortAudioError, ValueError, TypeError, KeyError):
            return float(SAMPLE_RATE)

    def _period(self, frames: int) -> None:
        if self.stats.device_period != frames:
            self.stats.device_period = frames
            # A period longer than a block computes its blocks together, at its start: the
            # last one's deadline is this much before its DAC time (one block: 0).
            self._extra_frames = frames - math.gcd(frames, BLOCK_FRAMES) if self._out_rs is None else frames - 1

    def _capture(self, deliver: Callable[[np.ndarray], None]) -> Callable[..., None]:
        stats, reblock, rs, mirrors = self.stats, self._reblock_in, self._in_rs, self.latency_stats

        def capture(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            if status is not None and status.input_overflow:
                stats.device_input_overflows += 1
            self._period(frames)
            data = rs(indata) if rs is not None else indata
            blocks = reblock.push(data)
            if not blocks:
                return
            current, adc, _ = _times(time_info)
            # The period's last frame was captured at adc + frames/rate; block k's first
            # sample that many 44.1-kHz samples before it.
            since_last = (current - adc - frames / self.rate) if adc else 0.0
            delay = rs.delay() if rs is not None else 0.0
            for k, block in enumerate(blocks):
                back = reblock.pending + (len(blocks) - k) * BLOCK_FRAMES + delay
                latency = since_last + back / SAMPLE_RATE
                last = latency if self._in_latency is None else self._in_latency
                self._in_latency = last = last + _LATENCY_EMA * (latency - last)
                deliver(block)
            stats.device_input_latency_ms = 1000.0 * last
            for other in mirrors:
                other.device_input_latency_ms = stats.device_input_latency_ms

        return capture

    def _play(
        self, next_block: Callable[[float], np.ndarray], skip_stall: Callable[[float], int] | None
    ) -> Callable[..., None]:
        stats, reblock, rs, clock = self.stats, self._reblock_out, self._out_rs, self.clock
        mirrors = self.latency_stats

        def play(outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            host = self.host_clock()
            if status is not None and status.output_underflow:
                stats.device_output_underflows += 1
            self._period(frames)
            current, _, dac = _times(time_info)
            if self._out_latency is None:
                self._out_latency = max(0.0, dac - current) if dac else 0.0
            observed = (dac + host - current) if dac else host + self._out_latency
            jumped = clock.tick(frames, observed)
            stats.device_clock_outliers = clock.outliers
            lead_s = self._out_latency + self._extra_frames / self.rate
            stats.device_output_latency_ms = 1000.0 * lead_s
            for other in mirrors:
                other.device_output_latency_ms = stats.device_output_latency_ms
            stalled = jumped and clock.jumps > stats.device_clock_jumps

            def produce(lead: int) -> np.ndarray:
                nonlocal stalled
                delay = rs.delay() if rs is not None else 0.0
                deadline = self.host_to_now(clock.time_of(clock.frames + lead + delay) - lead_s)
                if stalled:  # the device jumped ahead: the reader fell behind the arrivals
                    stats.device_clock_jumps = clock.jumps
                    if skip_stall is not None:
                        skip_stall(deadline)
                    stalled = False
                block = next_block(deadline)
                return rs(block) if rs is not None else block

            outdata[:] = reblock.pull(frames, produce)

        return play
