"""Shared fixtures: short music-like clips, exactly representable in PCM16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nmp_peer.audio_io import write_audio
from nmp_peer.synth.signals import synthetic_music


def music_like(seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Harmonic notes with vibrato, a bass line and noise bursts, rounded to PCM16 values."""
    return synthetic_music(seconds, seed=seed, channels=channels)


@pytest.fixture
def music() -> np.ndarray:
    return music_like(3.0)


@pytest.fixture
def music_wav(tmp_path: Path) -> Path:
    path = tmp_path / "in.wav"
    write_audio(path, music_like(3.0))
    return path
