"""The two baseline concealers: silence, and repetition of the last packet."""

from __future__ import annotations

import numpy as np

from nmp_peer import BLOCK_FRAMES
from nmp_peer.conceal.base import HOLD_FADE_MS, HOLD_MS, Concealer


class ZerosConcealer(Concealer):
    """Silence: the challenge's zero-filled anchor."""

    name = "zeros"
    context_samples = BLOCK_FRAMES

    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        return np.zeros((self.predict_samples, history.shape[1]), np.float32)


class RepeatConcealer(Concealer):
    """Repeats the last packet, with each seam smoothed by a short decaying offset.

    The repetition starts at ``history[-512]``, which naturally followed ``history[-513]``;
    at the seam it follows ``history[-1]`` instead. Adding the difference of the two
    predecessors and letting it decay over ``seam_fade_samples`` keeps the waveform and
    its slope continuous: no click at the seam, and a signal that repeats exactly every
    packet is continued exactly. The amplitude fade over a long burst is the playout
    engine's job, common to all concealers.
    """

    name = "repeat"
    context_samples = 2 * BLOCK_FRAMES
    fade_after_ms = HOLD_MS
    fade_ms = HOLD_FADE_MS

    def __init__(self, seam_fade_samples: int = 32) -> None:
        self.seam_fade_samples = seam_fade_samples
        ramp = (np.arange(seam_fade_samples, dtype=np.float32) + 1) / seam_fade_samples
        self._decay = (0.5 + 0.5 * np.cos(np.pi * ramp))[:, None].astype(np.float32)

    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        block = history[-BLOCK_FRAMES:]
        reps = -(-self.predict_samples // BLOCK_FRAMES)
        out = np.tile(block, (reps, 1))[: self.predict_samples].copy()
        offset = history[-1] - history[-BLOCK_FRAMES - 1]
        fade = self.seam_fade_samples
        for start in range(0, self.predict_samples, BLOCK_FRAMES):
            seg = out[start : start + fade]
            seg += offset * self._decay[: len(seg)]
        return out


class OpusPlcConcealer(RepeatConcealer):
    """Opus's own packet-loss concealment (a baseline): on a PCM stream, repetition."""

    name = "opus-plc"
    codec_native = True
    fade_after_ms = Concealer.fade_after_ms  # the baselines keep the short fade (not measured)
    fade_ms = Concealer.fade_ms


class OpusFecConcealer(RepeatConcealer):
    """Opus in-band FEC from the next packet when it is already here, else Opus PLC."""

    name = "opus-fec"
    codec_native = True
    fade_after_ms = Concealer.fade_after_ms
    fade_ms = Concealer.fade_ms
