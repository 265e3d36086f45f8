"""The lab end to end on tiny clips, and its statistics."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import music_like

from nmp_peer.audio_io import write_audio
from nmp_peer.lab.report import mean_ci
from nmp_peer.lab.run import Setting, category_of, loss_mask


def test_mean_ci_matches_the_t_interval() -> None:
    mean, half, n = mean_ci([1.0, 2.0, 3.0, 4.0, float("nan")])
    assert n == 4 and mean == 2.5
    # sd = 1.2910, t(0.975, 3) = 3.1824 → half = 3.1824 * 1.2910 / 2
    assert half == pytest.approx(3.182446 * 1.290994 / 2, rel=1e-5)
    assert math.isnan(mean_ci([5.0])[1])


def test_loss_masks_are_seeded_and_shared_by_methods(tmp_path: Path) -> None:
    s = Setting("gilbert", 0.1, 2.0)
    a, b = loss_mask(s, 5000, 7), loss_mask(s, 5000, 7)
    assert np.array_equal(a, b) and 0.07 < a.mean() < 0.13
    assert not np.array_equal(a, loss_mask(s, 5000, 8))
    trace = tmp_path / "t.txt"
    trace.write_text("0\n1\n1\n")
    assert loss_mask(Setting("trace", trace=str(trace)), 5, 0).tolist() == [False, True, True, False, False]


def test_category_from_folder_or_name(tmp_path: Path) -> None:
    assert category_of(tmp_path / "drums" / "x.wav", tmp_path) == "drums"
    assert category_of(tmp_path / "piano_003.wav", tmp_path) == "piano"


@pytest.mark.slow
def test_lab_command_writes_report_tables_and_plots(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    for i, cat in enumerate(("piano", "bass")):
        write_audio(clips / cat / f"c{i}.wav", music_like(2.0, seed=i))
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "burst.txt").write_text("0\n" * 20 + "1\n" * 6 + "0\n" * 30 + "1\n" * 3)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "nmp_peer.cli",
        "lab",
        "--clips",
        str(clips),
        "--out",
        str(out),
        "--methods",
        "zeros,repeat",
        "--loss-model",
        "gilbert,trace",
        "--loss",
        "0.1,0.2",
        "--traces",
        str(traces),
        "--metrics",
        "snr,lsd,mrstft",
        "--jobs",
        "2",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 2 * 3 * 2  # clips × settings × methods
    assert len(json.loads((out / "metrics.json").read_text())) == len(rows)
    by = {(r["clip"], r["setting"], r["method"]): r for r in rows}
    for clip in ("c0.wav", "c1.wav"):
        for setting in ("gilbert 10% burst 2", "gilbert 20% burst 2", "trace burst"):
            z, rep = by[(clip, setting, "zeros")], by[(clip, setting, "repeat")]
            assert z["lost_packets"] == rep["lost_packets"] != "0"  # the same pattern for both methods
            assert float(z["snr"]) == pytest.approx(0.0, abs=1e-6)  # zeros on lost packets: 0 dB by definition
            assert float(rep["lsd"]) < float(z["lsd"])
    report = (out / "report.md").read_text()
    assert "±" in report and "By category" in report and "PLCMOS" in report
    for png in ("snr_per_method.png", "lsd_vs_loss.png", "burst_spectrograms.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_lab_rejects_unknown_methods_in_one_line(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nmp_peer.cli",
            "lab",
            "--clips",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--methods",
            "zeros,magic",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "magic" in r.stderr and "Traceback" not in r.stderr


def test_reserved_packages_are_refused() -> None:
    from nmp_peer.lab.clips import extract_packages, is_reserved

    assert is_reserved("wesnoth-1.16-music") and is_reserved("asc-music") and is_reserved("fretsonfire-songs-muldjord")
    assert not is_reserved("extremetuxracer-data")
    with pytest.raises(ValueError, match="reserved"):
        extract_packages(["frozen-bubble-data", "warzone2100-music"], Path("/nonexistent"))


def test_slicing_tracks_into_clips_skips_short_and_quiet_material(tmp_path: Path) -> None:
    from nmp_peer.lab.clips import slice_tracks

    loud = tmp_path / "loud.flac"
    write_audio(loud, music_like(30.0))
    short = tmp_path / "short.wav"
    write_audio(short, music_like(5.0))
    quiet = tmp_path / "quiet.wav"
    write_audio(quiet, music_like(30.0) * 0.001)
    written = slice_tracks([loud, short, quiet], tmp_path / "out", clip_seconds=4.0, clips_per_track=3, prefix="pkg_")
    assert [p.name for p in written] == ["pkg_loud_0.wav", "pkg_loud_1.wav", "pkg_loud_2.wav"]
    from nmp_peer.audio_io import read_audio

    clip, rate = read_audio(written[0])
    assert rate == 44100 and len(clip) == 4 * 44100


def test_paired_table_by_category_counts_clips_not_clip_settings() -> None:
    from nmp_peer.lab.report import paired_table

    rows = []
    # clip a: gan - lpc = -1 and -3 over two settings (mean -2); clip b: -4 and -4 (mean -4)
    for clip, diffs in (("a.wav", (-1.0, -3.0)), ("b.wav", (-4.0, -4.0))):
        for setting, d in zip(("s1", "s2"), diffs, strict=False):
            rows.append({"clip": clip, "category": "drums", "setting": setting, "method": "lpc", "lsd": 10.0})
            rows.append({"clip": clip, "category": "drums", "setting": setting, "method": "gan", "lsd": 10.0 + d})
    table = paired_table(rows, "lpc", ["lsd"], by="category")
    line = next(row for row in table.splitlines() if row.startswith("| drums"))
    mean, half, n = mean_ci([-2.0, -4.0])
    assert f"| {n} | {mean:+.3f} ± {half:.3f} |" in line and n == 2
    by_setting = paired_table(rows, "lpc", ["lsd"])
    assert "| s1 | gan − lpc | 2 | -2.500 ± " in by_setting


@pytest.mark.parametrize("jitter_ms", [0.0, 4.0])
def test_a_keyed_lab_job_gives_the_same_rows(tmp_path: Path, jitter_ms: float) -> None:
    """Sealed by a keyed sender and opened by the receiver's gate, as a keyed jam: the same metrics."""
    from dataclasses import replace

    from nmp_peer.lab.run import Job, run_job

    clip = tmp_path / "c.wav"
    write_audio(clip, music_like(2.0))
    setting = Setting("gilbert", 0.1, 3.0, jitter_ms=jitter_ms)
    job = Job(str(clip), "music", setting, ("repeat", "lpc"), ("snr", "lsd"), 1, None)
    plain, keyed = run_job(job), run_job(replace(job, key=bytes(range(32))))
    timing = ("conceal_ms_per_packet", "realtime_factor")
    assert [{k: v for k, v in r.items() if k not in timing} for r in plain] == [
        {k: v for k, v in r.items() if k not in timing} for r in keyed
    ]
    assert plain[0]["lost_packets"] > 5
