"""Shared fixtures: short music-like clips, exactly representable in PCM16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nmp_peer import SAMPLE_RATE
from nmp_peer.audio_io import write_audio
from nmp_peer.codec import float_to_pcm16, pcm16_to_float


def music_like(seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Harmonic notes with vibrato, a bass line and noise bursts, rounded to PCM16 values."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    note = 220 * 2 ** (rng.integers(0, 12, size=int(seconds * 4) + 1) / 12)
    f = note[(t * 4).astype(int)]
    phase = 2 * np.pi * np.cumsum(f * (1 + 0.003 * np.sin(2 * np.pi * 5 * t))) / SAMPLE_RATE
    x = sum(0.15 / k * np.sin(k * phase) for k in range(1, 6))
    x += 0.2 * np.sin(2 * np.pi * 55 * t) + 0.02 * rng.standard_normal(n) * (np.sin(2 * np.pi * 2 * t) > 0.9)
    out = np.repeat(x[:, None], channels, axis=1)
    if channels == 2:
        out[:, 1] *= 0.7
    return pcm16_to_float(float_to_pcm16(out))


@pytest.fixture
def music() -> np.ndarray:
    return music_like(3.0)


@pytest.fixture
def music_wav(tmp_path: Path) -> Path:
    path = tmp_path / "in.wav"
    write_audio(path, music_like(3.0))
    return path
