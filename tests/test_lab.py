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
from nmp_peer.conceal.lpc import LpcConcealer
from nmp_peer.conceal.simple import ZerosConcealer
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
    # 2 clips of 2 s; each concealed in 3 settings: 4 s of clips, 12 s per method
    assert "(4 s of audio)" in report
    assert "12 s of audio per method" in r.stderr
    assert "## By burst length" in report and "### trace burst" in report  # its bursts: 6 and 3 packets
    assert by[("c0.wav", "trace burst", "zeros")]["lost_packets_burst_4-6"] == "6"
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


@pytest.mark.slow
def test_lab_refuses_very_long_bursts_without_the_challenge_model(tmp_path: Path) -> None:
    write_audio(tmp_path / "c.wav", music_like(1.0))
    cmd = [sys.executable, "-m", "nmp_peer.cli", "lab", "--clips", str(tmp_path), "--out", str(tmp_path / "o")]
    r = subprocess.run([*cmd, "--very-long-bursts", "0.02"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--very-long-bursts" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [*cmd, "--loss-model", "challenge", "--very-long-bursts", "0.99"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "very_long_prob" in r.stderr and "Traceback" not in r.stderr


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

    def same(r: dict) -> dict:  # NaN (a burst length the pattern lacks) never equals itself
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items() if k not in timing}

    assert [same(r) for r in plain] == [same(r) for r in keyed]
    assert plain[0]["lost_packets"] > 5


# --- by burst length ------------------------------------------------------------------


def _mask(*runs: tuple[int, int]) -> np.ndarray:
    """Alternating (received, lost) run lengths."""
    return np.concatenate([np.r_[np.zeros(a, bool), np.ones(b, bool)] for a, b in runs])


def test_burst_groups_on_a_hand_made_mask() -> None:
    from nmp_peer.lab.metrics import burst_groups

    lost = _mask((2, 1), (1, 3), (1, 2), (1, 5), (1, 16), (1, 17), (1, 50), (3, 0))
    groups = burst_groups(lost)
    assert list(groups) == ["1", "2-3", "4-6", "7-16", "17-50"]  # no burst over 50: no such group
    starts = {"1": [2], "2-3": [4, 8], "4-6": [11], "7-16": [17], "17-50": [34, 52]}
    for label, first in starts.items():
        expected = np.zeros(lost.size, bool)
        for f in first:
            run_end = f + np.argmin(lost[f:]) if not lost[f:].all() else lost.size
            expected[f:run_end] = True
        assert np.array_equal(groups[label], expected), label
    assert sum(int(g.sum()) for g in groups.values()) == int(lost.sum())  # every lost packet in one group
    assert list(burst_groups(_mask((1, 51), (1, 0)))) == ["1", "2-3", "4-6", "7-16", "17-50", ">50"]


def test_lab_rows_carry_metrics_by_burst_length(tmp_path: Path) -> None:
    from nmp_peer.lab.run import Job, run_job

    clip = tmp_path / "c.wav"
    write_audio(clip, music_like(3.0, seed=2))
    lost = _mask((20, 1), (20, 3), (20, 30), (60, 0))  # 155 packets, 1.8 s
    trace = tmp_path / "t.txt"
    trace.write_text("".join("1\n" if v else "0\n" for v in lost))
    setting = Setting("trace", trace=str(trace))
    job = Job(str(clip), "c", setting, ("zeros", "lpc"), ("snr", "lsd"), 0, None)
    zeros, lpc = run_job(job)
    assert [zeros[f"lost_packets_burst_{g}"] for g in ("1", "2-3", "4-6", "7-16", "17-50")] == [1, 3, 0, 0, 30]
    assert ">50" not in {k.rsplit("_", 1)[1] for k in zeros if "_burst_" in k}
    assert zeros["snr_burst_1"] == pytest.approx(0.0, abs=1e-6) and math.isnan(zeros["lsd_burst_4-6"])
    # with no fade given, each concealer's own long-burst policy
    assert (lpc["fade_after_ms"], lpc["fade_ms"]) == (LpcConcealer.fade_after_ms, LpcConcealer.fade_ms)
    assert (zeros["fade_after_ms"], zeros["fade_ms"]) == (ZerosConcealer.fade_after_ms, ZerosConcealer.fade_ms)
    # LPC predicts one packet well (~8 dB here); a short fade (after 50 ms, over 25)
    # silences most of a 30-packet burst (~33 dB)
    short = run_job(Job(str(clip), "c", setting, ("lpc",), ("snr", "lsd"), 0, None, None, 50.0, 25.0))[0]
    assert short["fade_after_ms"] == 50.0 and short["fade_ms"] == 25.0
    assert short["lsd_burst_17-50"] > short["lsd_burst_1"] + 10.0
    # a longer fade reaches the playout: the prediction goes on, and the level with it (~11 dB)
    held = run_job(Job(str(clip), "c", setting, ("lpc",), ("snr", "lsd"), 0, None, None, 1000.0, 100.0))[0]
    assert held["fade_after_ms"] == 1000.0 and held["fade_ms"] == 100.0
    assert held["lsd_burst_17-50"] < short["lsd_burst_17-50"] - 10.0
    assert held["lsd_burst_1"] == pytest.approx(short["lsd_burst_1"])  # a one-packet burst never fades


def test_report_has_the_burst_length_table() -> None:
    from nmp_peer.lab.report import burst_section

    rows = []
    for i in range(3):
        for method, lsd in (("repeat", 20.0), ("lpc", 18.0 - 0.5 * i)):  # lpc − repeat: -2, -2.5, -3
            row = {"clip": f"c{i}.wav", "category": "x", "setting": "challenge-like 10%", "method": method}
            for label, n, value in (("1", 5, lsd - 8 + i), ("2-3", 4, lsd - 6 + i), ("17-50", 20, lsd + 10 + i)):
                row |= {f"lost_packets_burst_{label}": n, f"lsd_burst_{label}": value, f"snr_burst_{label}": 1.0}
            row |= {"lost_packets_burst_4-6": 0, "lsd_burst_4-6": math.nan, "snr_burst_4-6": math.nan}
            rows.append(row)
    text = "\n".join(burst_section(rows, ["snr", "lsd", "visqol"]))
    assert "## By burst length" in text and "### challenge-like 10%" in text
    assert "1: 15 (17%), 2-3: 12 (14%), 17-50: 60 (69%)" in text  # packets of the first method, all clips
    assert "| 4-6 |" not in text  # no such burst: no row
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[1].startswith("| 1 | repeat | 3 |") and "| 13.000 ± 2.484 |" in table[1]  # 12, 13, 14: sd 1, t(2)
    plain = [line.split(" | ")[0] for line in table if " | repeat | " in line]
    assert plain == ["| 1", "| 2-3", "| 17-50"]  # burst order, not text order
    paired = [line for line in table if "lpc − repeat" in line]
    # mean -2.5, sd 0.5, t(0.975, 2) = 4.303: half-width 1.242
    assert len(paired) == 3 and all(line.endswith("| +0.000 ± 0.000 | -2.500 ± 1.242 |") for line in paired)
    assert burst_section(rows, ["visqol"]) == []  # no per-packet metric: no section


def test_settings_without_very_long_bursts_keep_their_seeds_and_patterns() -> None:
    from nmp_peer.lab.run import _seed
    from nmp_peer.netsim.loss import burst_lengths, challenge_like_trace

    # the values before very long bursts existed
    assert _seed(0, "c0.wav", Setting("gilbert", 0.1, 2.0)) == 1192985388
    assert _seed(3, "x.wav", Setting("challenge", 0.1)) == 77218668
    plain = Setting("challenge", 0.1)
    assert np.array_equal(loss_mask(plain, 3000, 5), challenge_like_trace(3000, seed=5, loss_rate=0.1))
    longer = Setting("challenge", 0.1, very_long=0.05)
    assert longer.label == "challenge-like 10% + 5.0% of bursts 17-50" and plain.label == "challenge-like 10%"
    bursts = burst_lengths(loss_mask(longer, 50_000, 5))
    assert ((bursts >= 17) & (bursts <= 50)).mean() == pytest.approx(0.05, abs=0.02)
