"""Reading the sender's stream at the receiver's clock: a fractional-rate reader.

Two sound cards never run at exactly the same rate (up to ±200 ppm apart). The playout
engine reads the incoming stream with a ratio ``r`` close to 1 that the latency
controller sets; at ``r == 1`` on an integer position the reader copies samples, so an
undrifted stream passes bit-exact. Otherwise it interpolates with a 16-tap
Kaiser-windowed sinc (one phase table, built once), which needs ``LOOKAHEAD`` samples
beyond the read position: that is the only delay the reader adds.
"""

from __future__ import annotations

import math

import numpy as np

TAPS = 16
LOOKAHEAD = TAPS // 2
PHASES = 1024
_KAISER_BETA = 8.0


def _phase_table() -> np.ndarray:
    offsets = np.arange(-LOOKAHEAD + 1, LOOKAHEAD + 1)  # taps at idx-7 .. idx+8
    frac = np.arange(PHASES + 1) / PHASES
    t = frac[:, None] - offsets[None, :]
    window = np.i0(_KAISER_BETA * np.sqrt(np.clip(1 - (t / LOOKAHEAD) ** 2, 0, 1))) / np.i0(_KAISER_BETA)
    table = np.sinc(t) * window
    table /= table.sum(axis=1, keepdims=True)
    return table.astype(np.float32)


_TABLE = _phase_table()
_OFFSETS = np.arange(-LOOKAHEAD + 1, LOOKAHEAD + 1)


def read_block(source: np.ndarray, start: float, ratio: float, frames: int) -> np.ndarray:
    """Read ``frames`` output samples from ``source`` (samples × channels) at ``start``, stepping ``ratio``.

    ``start`` is relative to ``source[0]``; ``source`` must hold ``LOOKAHEAD - 1`` samples
    before ``floor(start)`` and ``LOOKAHEAD`` after the last position read.
    """
    if ratio == 1.0 and start == math.floor(start):
        i = int(start)
        return source[i : i + frames].copy()
    pos = start + ratio * np.arange(frames)
    idx = pos.astype(np.int64)
    taps = _TABLE[((pos - idx) * PHASES + 0.5).astype(np.int64)]  # frames × TAPS
    gather = idx[:, None] + _OFFSETS
    out = np.empty((frames, source.shape[1]), np.float32)
    for c in range(source.shape[1]):
        np.einsum("ft,ft->f", taps, source[:, c].take(gather), out=out[:, c])
    return out


class StreamResampler:
    """Streaming sample-rate conversion with the same windowed-sinc reader, 8 samples of delay.

    Used around the Opus codec (44.1 kHz ↔ 48 kHz), where soxr's streaming modes either
    add hundreds of samples of latency or fall back to cubic interpolation.
    """

    def __init__(self, in_rate: int, out_rate: int, channels: int) -> None:
        self.step = in_rate / out_rate
        self._buf = np.zeros((LOOKAHEAD, channels), np.float32)
        self._pos = float(LOOKAHEAD)

    def process(self, x: np.ndarray) -> np.ndarray:
        """Take input samples (frames × channels); return every output sample now computable."""
        self._buf = np.concatenate([self._buf, x.astype(np.float32, copy=False)])
        last = len(self._buf) - LOOKAHEAD - 1  # the highest index a read may floor to
        if last < self._pos:
            return np.zeros((0, self._buf.shape[1]), np.float32)
        n = int((last - self._pos) / self.step) + 1
        out = read_block(self._buf, self._pos, self.step, n)
        self._pos += n * self.step
        keep_from = int(math.floor(self._pos)) - LOOKAHEAD
        if keep_from > 0:
            self._buf = self._buf[keep_from:]
            self._pos -= keep_from
        return out
