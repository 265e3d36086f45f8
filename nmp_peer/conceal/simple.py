"""The two baseline concealers: silence, and repetition of the last packet."""

from __future__ import annotations

import numpy as np

from nmp_peer import BLOCK_FRAMES
from nmp_peer.conceal.base import Concealer


class ZerosConcealer(Concealer):
    """Silence: the challenge's zero-filled anchor."""

    name = "zeros"
    context_samples = BLOCK_FRAMES

    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        return np.zeros((self.predict_samples, history.shape[1]), np.float32)


class RepeatConcealer(Concealer):
    """Repeats the last packet; each seam is smoothed by a short fade from the held last sample.

    The amplitude fade over a long burst is the playout engine's job, common to all
    concealers, so this class only has to keep the seams click-free.
    """

    name = "repeat"
    context_samples = BLOCK_FRAMES

    def __init__(self, seam_fade_samples: int = 32) -> None:
        self.seam_fade_samples = seam_fade_samples
        ramp = np.arange(seam_fade_samples, dtype=np.float32) / seam_fade_samples
        self._fade_in = (0.5 - 0.5 * np.cos(np.pi * ramp))[:, None].astype(np.float32)

    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        block = history[-BLOCK_FRAMES:]
        reps = -(-self.predict_samples // BLOCK_FRAMES)
        out = np.tile(block, (reps, 1))[: self.predict_samples].copy()
        fade = self.seam_fade_samples
        held = history[-1]
        for start in range(0, self.predict_samples, BLOCK_FRAMES):
            seg = out[start : start + fade]
            seg[:] = held + (seg - held) * self._fade_in[: len(seg)]
            held = out[min(start + BLOCK_FRAMES, self.predict_samples) - 1].copy()
        return out
