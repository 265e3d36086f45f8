"""Offline concealment (`nmp-peer conceal`) through the live playout engine: causal, exact where received."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import music_like

from nmp_peer import BLOCK_FRAMES
from nmp_peer.audio_io import read_audio, write_audio
from nmp_peer.lab.simulate import conceal_trace
from nmp_peer.netsim.loss import write_trace

METHODS = ["zeros", "repeat", "lpc"]


def trace_for(n_packets: int) -> np.ndarray:
    lost = np.zeros(n_packets, bool)
    lost[[5, 20, 21, 22, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 70, 90]] = True
    return lost


@pytest.mark.parametrize("method", METHODS)
def test_causal_changing_the_future_changes_nothing_before(method: str) -> None:
    audio = music_like(1.2)
    lost = trace_for(len(audio) // BLOCK_FRAMES + 1)
    base = conceal_trace(audio, lost, method)
    for n in (20, 45, 69):
        changed = audio.copy()
        end = (n + 1) * BLOCK_FRAMES
        changed[end:] = np.random.default_rng(n).uniform(-0.9, 0.9, changed[end:].shape).astype(np.float32)
        out = conceal_trace(changed, lost, method)
        assert np.array_equal(out[:end], base[:end]), f"packet {n}"


@pytest.mark.parametrize("method", METHODS)
def test_lost_samples_are_never_read_and_received_ones_pass_unchanged(method: str) -> None:
    audio = music_like(1.2, channels=2)
    lost = trace_for(len(audio) // BLOCK_FRAMES + 1)
    mask = np.repeat(lost, BLOCK_FRAMES)[: len(audio)]
    garbage = audio.copy()
    garbage[mask] = 0.77
    a, b = conceal_trace(audio, lost, method), conceal_trace(garbage, lost, method)
    assert np.array_equal(a, b)
    assert a.shape == audio.shape
    # Received packets play unchanged, except the recovery crossfade after each gap.
    after_gap = np.zeros(len(audio), bool)
    for k in np.flatnonzero(lost):
        after_gap[(k + 1) * BLOCK_FRAMES : (k + 1) * BLOCK_FRAMES + 128] = True
    keep = ~mask & ~after_gap
    assert np.array_equal(a[keep], audio[keep])
    assert np.isfinite(a).all() and np.abs(a).max() <= 1.0


@pytest.mark.slow
def test_conceal_command_keeps_length_and_rate_and_reports_bad_traces(tmp_path: Path) -> None:
    audio = music_like(1.0)
    wav = tmp_path / "in.wav"
    write_audio(wav, audio)
    trace = tmp_path / "t.txt"
    write_trace(trace, trace_for(100)[:30])
    out = tmp_path / "out.wav"
    cmd = [
        sys.executable,
        "-m",
        "nmp_peer.cli",
        "conceal",
        str(wav),
        "--trace",
        str(trace),
        "--method",
        "repeat",
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)  # 30 packets of 87: refused, not padded
    assert r.returncode == 2 and "has 30 packets" in r.stderr and "--trace-fit pad" in r.stderr and not out.exists()
    cmd += ["--trace-fit", "pad"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "the packets after the trace's end are received" in r.stderr, r.stderr
    played, rate = read_audio(out)
    assert rate == 44100 and played.shape == audio.shape
    trace.write_text("0\n1\nx\n")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "t.txt:3" in r.stderr and "Traceback" not in r.stderr
