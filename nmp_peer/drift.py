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


def read_block(
    source: np.ndarray, start: float, ratio: float, frames: int
) -> np.ndarray:
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
