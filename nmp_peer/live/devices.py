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
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.errors import EnvironmentFailure
from nmp_peer.receiver.stats import Stats

CLOSE_TIMEOUT_S = 2.0
"""How long closing the streams may take before they are abandoned (it takes ~50 ms under JACK)."""
FAILED_CLOSE_TIMEOUT_S = 0.5
"""The same after a stream stopped unasked: with its server dead, a close never returns."""
POLL_S = 0.1
"""How often the jam checks that its streams still run."""

Kind = Literal["input", "output"]


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

    def open(self, kind: Kind, spec: str, channels: int, callback: Callable[..., None]) -> None:
        """Open and start a 512-frame float32 stream at 44.1 kHz; DeviceError if PortAudio refuses."""
        import sounddevice as sd

        cls = sd.InputStream if kind == "input" else sd.OutputStream
        label = f"{kind} device {spec!r}"
        try:
            stream = cls(
                samplerate=SAMPLE_RATE,
                blocksize=BLOCK_FRAMES,
                channels=channels,
                dtype="float32",
                device=device_spec(spec),
                callback=self.guard(kind, label, callback, sd.CallbackAbort),
                finished_callback=lambda: self._finished(label),
                latency="low",
            )
        except (sd.PortAudioError, ValueError) as exc:
            raise DeviceError(f"cannot open {label}: {exc}") from None
        try:
            name = sd.query_devices(stream.device)["name"]
            label = f"{kind} device {spec!r} ({name})" if name != spec else label
        except (sd.PortAudioError, ValueError, TypeError, KeyError):
            pass
        opened = _Opened(kind, label, stream)
        self._streams.append(opened)  # closed by close() even if it does not start
        try:
            stream.start()
        except sd.PortAudioError as exc:
            raise DeviceError(f"cannot start {label}: {exc}") from None

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
