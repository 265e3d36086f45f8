"""Audio files and sound cards at the edges of the pipeline.

Files are read and written as 16-bit integers and converted with the codec's exact
scale, so PCM16 audio passes through the peer bit for bit. Other rates are resampled
to 44.1 kHz with soxr on the way in.
"""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from nmp_peer import SAMPLE_RATE
from nmp_peer.proto.codec import float_to_pcm16, pcm16_to_float


class AudioFileError(ValueError):
    """An audio file that cannot be read or written; the message names it."""


def read_audio(path: str | Path, *, channels: int | None = None, rate: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Read a file as float32 (frames × channels) at ``rate``; returns it and the file's own rate.

    A float file (WAV/FLAC subtype FLOAT or DOUBLE) holding NaN or ±inf is refused with an
    ``AudioFileError`` naming the file, how many samples are bad and where the first one
    is: there is no right value to put in their place, and a silent substitute would
    change the audio a measurement is made on. Float samples beyond ±1.0 (headroom that
    a 16-bit stream cannot carry) are clipped to ±1.0, and a note on stderr says how many
    and how loud the peak was; integer files are always within range.
    """
    path = Path(path)
    try:
        info = sf.info(str(path))
        if info.subtype in ("PCM_16", "PCM_U8", "PCM_S8"):
            raw, file_rate = sf.read(str(path), dtype="int16", always_2d=True)
            data = pcm16_to_float(raw)
        else:
            data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise AudioFileError(f"cannot read audio file {path}: {reason}") from None
    if len(data) == 0:
        raise AudioFileError(f"audio file {path} is empty")
    data = _checked_float(data, path)
    if channels is not None and data.shape[1] != channels:
        data = data.mean(axis=1, keepdims=True) if channels == 1 else np.repeat(data[:, :1], channels, axis=1)
    if file_rate != rate:
        import soxr

        data = soxr.resample(data, file_rate, rate, quality="VHQ").astype(np.float32)
    return np.ascontiguousarray(data, dtype=np.float32), int(file_rate)


def _checked_float(data: np.ndarray, path: Path) -> np.ndarray:
    """``data`` within [-1, 1]: NaN/inf refused, samples beyond ±1.0 clipped and noted (``read_audio``)."""
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        frame = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise AudioFileError(
            f"audio file {path} has {bad} samples that are NaN or infinite (the first at frame {frame}); "
            "replace them, e.g. with silence, and try again"
        )
    over = np.abs(data) > 1.0
    if over.any():
        peak = float(np.abs(data).max())
        print(
            f"note: {path}: {int(np.count_nonzero(over))} samples beyond ±1.0 (peak {peak:.3g}, "
            f"{20 * np.log10(peak):+.1f} dBFS) are clipped to ±1.0",
            file=sys.stderr,
        )
        data = np.clip(data, -1.0, 1.0)
    return data


def write_audio(path: str | Path, data: np.ndarray, *, rate: int = SAMPLE_RATE, file_rate: int | None = None) -> None:
    """Write float32 audio as 16-bit PCM (WAV or FLAC by extension), resampling to ``file_rate``."""
    path = Path(path)
    if file_rate is not None and file_rate != rate:
        import soxr

        data = soxr.resample(data, rate, file_rate, quality="VHQ")
        rate = file_rate
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), float_to_pcm16(np.asarray(data)), rate, subtype="PCM_16")
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as exc:
        raise AudioFileError(f"cannot write audio file {path}: {exc}") from None


class WavWriter:
    """Writes blocks from a background thread, so the audio path never waits on the disk."""

    def __init__(self, path: str | Path, channels: int, rate: int = SAMPLE_RATE) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = sf.SoundFile(str(self.path), "w", rate, channels, subtype="PCM_16")
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioFileError(f"cannot write audio file {self.path}: {exc}") from None
        self._queue: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="nmp-wav-writer", daemon=True)
        self._thread.start()

    def write(self, block: np.ndarray) -> None:
        self._queue.put(block)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._file.close()

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            self._file.write(float_to_pcm16(block))
