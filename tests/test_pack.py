"""The pack that carries a training set to a lent GPU machine: Ogg/Opus there and back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
from conftest import music_like

from nmp_peer.audio_io import read_audio, write_audio
from nmp_peer.train.pack import decode, encode


def _set(root: Path) -> Path:
    for split, seeds in (("train", (0, 1)), ("valid", (2,))):
        (root / split).mkdir(parents=True)
        for seed in seeds:
            write_audio(root / split / f"clip{seed}.wav", music_like(2.0, seed=seed))
    return root


def test_pack_round_trip_keeps_layout_rate_and_waveform(tmp_path: Path):
    data = _set(tmp_path / "data")
    summary = encode(data, tmp_path / "pack", seconds=1.5, level=0.5, seed=3)
    assert summary["clips"] == 3 and summary["seconds"] == pytest.approx(4.5)
    assert json.loads((tmp_path / "pack" / "pack.json").read_text())["clips"] == 3
    assert sorted(p.name for p in (tmp_path / "pack" / "train").iterdir()) == ["clip0.ogg", "clip1.ogg"]
    assert decode(tmp_path / "pack", tmp_path / "back", jobs=2) == 3
    assert sorted(p.name for p in (tmp_path / "back" / "valid").iterdir()) == ["clip2.wav"]
    back, rate = read_audio(tmp_path / "back" / "valid" / "clip2.wav", channels=1)
    assert rate == 44_100
    assert abs(len(back) - int(1.5 * 44_100)) < 64
    # the excerpt is found in the original, sample-aligned, within Opus's coding error
    original = read_audio(data / "valid" / "clip2.wav", channels=1)[0][:, 0]
    x = back[:, 0]
    n = len(x) - 64
    best = int(np.argmax(scipy.signal.correlate(original, x[:n], mode="valid", method="fft")))
    error = np.sum((original[best : best + n] - x[:n]) ** 2)
    snr = 10 * np.log10(np.sum(original[best : best + n] ** 2) / error)
    assert snr > 12.0


def test_pack_refuses_a_folder_without_clips(tmp_path: Path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    with pytest.raises(SystemExit, match="holds no WAV clips"):
        encode(tmp_path / "data", tmp_path / "pack", seconds=1.0, level=0.5)
    with pytest.raises(SystemExit, match="holds no .ogg or .flac clips"):
        decode(tmp_path / "nothing", tmp_path / "back")


def test_flac_pack_is_exact(tmp_path: Path):
    data = _set(tmp_path / "data")
    summary = encode(data, tmp_path / "pack", seconds=1.0, level=0.5, seed=0, codec="flac")
    assert summary["codec"] == "flac" and summary["clips"] == 3
    decode(tmp_path / "pack", tmp_path / "back", jobs=1)
    original = read_audio(data / "train" / "clip0.wav", channels=1)[0][:, 0]
    back = read_audio(tmp_path / "back" / "train" / "clip0.wav", channels=1)[0][:, 0]
    assert len(back) == 44_100
    start = int(np.argmax(scipy.signal.correlate(original, back, mode="valid", method="fft")))
    np.testing.assert_array_equal(original[start : start + len(back)], back)
