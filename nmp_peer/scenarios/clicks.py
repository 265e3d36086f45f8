"""Clicks: sample steps far steeper than every step of the audio around them.

``find_clicks`` finds sample steps far steeper than every step of the audio around
them (and than the clip's own step at that place): a discontinuity, not music.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d

from nmp_peer import BLOCK_FRAMES
from nmp_peer.scenarios.alignment import Track

CLICK_RATIO = 3.0
"""A sample step this many times steeper than every step within a block either side of it is a click.

Music, concealment and crossfades change their steepest step gradually: on the
synthetic clip through every concealer with a smooth seam (repeat, LPC) and every
scenario, the steepest step of the played audio is at most 1.7 times the steepest one
within a block of it; a seam that drops to silence (the zeros concealer) gives 7 to 15.
The playout engine's fade after a long burst steps down at the block seams inside it (a
known bug, tests/test_clicks.py): 2 to 6 there, depending on where in the waveform.
"""
CLICK_FLOOR = 10 ** (-60 / 20)
"""Steps smaller than this (-60 dBFS) are no click, however quiet the audio around them."""
CLICK_GUARD = 2
"""Samples either side of a step left out of its neighbourhood (a discontinuity is one step)."""
CLICK_WINDOW = BLOCK_FRAMES - 16
"""Samples either side of a step in its neighbourhood: short of the next packet's seam, so that
one seam's click does not hide the next one's (a fade that steps at every seam)."""


@dataclass
class Clicks:
    """Sample steps of the played audio that are clicks, and the margin of the steepest step."""

    positions: np.ndarray
    """Sample index ``n`` of each click: the step from ``n - 1`` to ``n``."""
    ratios: np.ndarray
    """Each click's step over its reference (see ``find_clicks``)."""
    max_ratio: float
    """The largest step-over-reference ratio of any step above the floor (0.0 if none)."""


def _neighbourhood_max(steps: np.ndarray, window: int, guard: int) -> np.ndarray:
    """Per index, the largest of ``steps`` within ``window`` either side, ``guard`` either side left out."""
    width = window - guard
    trailing = maximum_filter1d(steps, size=width, origin=(width - 1) // 2, mode="constant", cval=0.0)
    leading = maximum_filter1d(steps, size=width, origin=-(width // 2), mode="constant", cval=0.0)
    out = np.zeros_like(steps)
    k = guard + 1
    if len(steps) > k:
        out[k:] = trailing[:-k]  # steps[n - window .. n - guard - 1]
        out[:-k] = np.maximum(out[:-k], leading[k:])  # steps[n + guard + 1 .. n + window]
    return out


def find_clicks(
    out: np.ndarray,
    ref: np.ndarray | None = None,
    track: Track | None = None,
    *,
    ratio: float = CLICK_RATIO,
    floor: float = CLICK_FLOOR,
    window: int = CLICK_WINDOW,
    guard: int = CLICK_GUARD,
) -> Clicks:
    """Steps of ``out`` more than ``ratio`` times steeper than the audio around them.

    Each sample step ``|out[n] - out[n-1]|`` is held against the largest step within
    ``window`` samples either side (``guard`` samples either side left out: a
    discontinuity is one step, the music's own steep passages last longer; the seams of
    the packets before and after are left out too) and, where
    ``track`` knows which clip sample the block plays (``ref`` given), the clip's own
    steps at that place: what the clip itself does, played back, is no click. A step is
    a click when it exceeds ``ratio`` times that reference and ``floor``. The reference
    comes from the signal itself, so the margin holds for loud and quiet passages,
    tones and noise alike; the block grid is not assumed (the drift correction moves the
    seams of the packets against the output's blocks).
    """
    x = np.asarray(out, np.float64).reshape(-1)
    steps = np.zeros(len(x))
    if len(x) > 1:
        steps[1:] = np.abs(np.diff(x))
    local = _neighbourhood_max(steps, window, guard)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(steps > floor, steps / np.maximum(local, 1e-12), 0.0)
    if ref is not None and track is not None:
        clip = np.asarray(ref, np.float64).reshape(-1)
        clip_steps = np.zeros(len(clip))
        if len(clip) > 1:
            clip_steps[1:] = np.abs(np.diff(clip))
        for n in np.flatnonzero(r > ratio):
            lags = [
                track.lag[j]
                for j in (n // BLOCK_FRAMES, (n - 1) // BLOCK_FRAMES)
                if 0 <= j < len(track.lag) and np.isfinite(track.lag[j])
            ]
            own = 0.0
            for lag in lags:
                c = int(round(n - lag))
                lo, hi = max(0, c - guard), min(len(clip), c + guard + 1)
                if hi > lo:
                    own = max(own, float(clip_steps[lo:hi].max()))
            if own > 0.0:
                r[n] = steps[n] / max(local[n], own)
    positions = np.flatnonzero(r > ratio)
    return Clicks(positions, r[positions], float(r.max()) if len(r) else 0.0)
