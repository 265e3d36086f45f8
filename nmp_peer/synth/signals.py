"""A music-like test signal that needs nothing installed (no FluidSynth, no soundfont)."""

from __future__ import annotations

import numpy as np

from nmp_peer import SAMPLE_RATE
from nmp_peer.proto.codec import float_to_pcm16, pcm16_to_float


def synthetic_music(seconds: float, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Harmonic notes with vibrato, a bass line and noise bursts, exact in PCM16.

    Its notes change every quarter second, so every block of it aligns with the sent
    clip at one lag only. A second channel is the first at 0.7 of the level.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    note = 220 * 2 ** (rng.integers(0, 12, size=int(seconds * 4) + 1) / 12)
    f = note[(t * 4).astype(int)]
    phase = 2 * np.pi * np.cumsum(f * (1 + 0.003 * np.sin(2 * np.pi * 5 * t))) / SAMPLE_RATE
    x = sum(0.15 / k * np.sin(k * phase) for k in range(1, 6))
    x = x + 0.2 * np.sin(2 * np.pi * 55 * t) + 0.02 * rng.standard_normal(n) * (np.sin(2 * np.pi * 2 * t) > 0.9)
    out = np.repeat(np.asarray(x)[:, None], channels, axis=1)
    if channels == 2:
        out[:, 1] *= 0.7
    return pcm16_to_float(float_to_pcm16(out))
