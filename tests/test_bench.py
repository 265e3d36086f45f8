"""``nmp-peer bench``: what it reports and how, never how fast (speed is for the bench itself)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from nmp_peer.bench import StageTimes, bench_concealer, bench_receive, bench_vs, median_ci
from nmp_peer.conceal import make_concealer
from nmp_peer.conceal.gan import default_model_path
from nmp_peer.synth.signals import synthetic_music

CLI = [sys.executable, "-m", "nmp_peer.cli"]
GAN_STAGES = ["lpc_fit", "lpc_predict", "analysis_stft", "network", "synthesis"]


def test_median_interval_takes_the_order_statistics_of_the_binomial() -> None:
    lo, hi, coverage = median_ci([float(x) for x in range(10, 0, -1)])
    # n = 10: [x_(2), x_(9)] covers the median with 1 - 2 * 11 / 1024; [x_(3), x_(8)] only 89 %
    assert (lo, hi) == (2.0, 9.0) and coverage == pytest.approx(1 - 22 / 1024)
    lo, hi, coverage = median_ci([1.0, 3.0, 2.0])
    assert (lo, hi) == (1.0, 3.0) and coverage == pytest.approx(0.75)  # too few for 95 %: the extremes


@pytest.mark.parametrize("channels", [1, 2])
def test_the_stage_hook_changes_no_sample(channels: int) -> None:
    history = synthetic_music(1.0, seed=3, channels=channels)[-3584:]
    gan = make_concealer("gan")
    plain = [s.copy() for s in gan.stages(history, 0)]
    stages = StageTimes()
    gan.set_stage_hook(stages)
    stages.start()
    hooked = list(gan.stages(history, 0))
    stages.end()
    gan.set_stage_hook(None)
    assert len(plain) == len(hooked) and all(np.array_equal(a, b) for a, b in zip(plain, hooked, strict=True))
    assert list(stages.calls[0]) == GAN_STAGES  # each channel's LPC summed into one entry


def test_stages_are_parts_of_the_time_per_packet() -> None:
    result = bench_concealer(make_concealer("gan"), calls=4)
    assert list(result["stages"]) == GAN_STAGES
    # each stage is an interval inside its call's: their shares of the CPU time add up to at most all of it
    assert 0 < sum(s["share_of_cpu"] for s in result["stages"].values()) <= 1.0 + 5e-3
    for key in ("p50_ms", "p99_ms", "cpu_p50_ms", "cpu_p99_ms", "n", "machine"):
        assert key in result
    assert "stages" not in bench_concealer(make_concealer("repeat"), calls=4)  # it reports none


def test_vs_interleaves_two_variants_and_gives_a_ratio_per_run() -> None:
    result = bench_vs([("lpc", make_concealer("lpc")), ("repeat", make_concealer("repeat"))], runs=4, calls=8)
    assert result["vs"] == ["lpc", "repeat"] and result["calls_per_run"] == 2
    assert result["a"]["n"] == result["b"]["n"] == 8 and list(result["a"]["stages"]) == ["lpc_fit", "lpc_predict"]
    for key in ("ratio_b_over_a", "cpu_ratio_b_over_a"):
        ratio = result[key]
        assert len(ratio["per_run"]) == 4 and all(r > 0 for r in ratio["per_run"])
        assert ratio["ci"][0] <= ratio["median"] <= ratio["ci"][1]


def test_stereo_times_both_channels_in_each_call() -> None:
    result = bench_concealer(make_concealer("gan"), calls=3, channels=2)
    assert result["channels"] == 2 and result["n"] == 3 and list(result["stages"]) == GAN_STAGES


@pytest.mark.slow
def test_vs_the_reference_pipeline_in_stereo_on_the_command_line() -> None:
    """``reference`` is the GAN pipeline before issue 17 (``gan_reference``), a variant of its own."""
    r = subprocess.run(
        [*CLI, "bench", "--method", "gan", "--vs", "reference,gan", "--channels", "2", "--runs", "2", "--calls", "4"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["channels"] == 2 and d["a"]["method"] == "gan-reference" and d["b"]["method"] == "gan"
    assert list(d["a"]["stages"]) == list(d["b"]["stages"]) == GAN_STAGES
    assert len(d["cpu_ratio_b_over_a"]["per_run"]) == 2


@pytest.mark.slow
def test_bench_busy_and_vs_on_the_command_line() -> None:
    """The spinner ends with the bench (else its inherited stderr would hold the pipe open),
    and --vs runs the same concealer on two model files."""
    model = str(default_model_path())
    r = subprocess.run(
        [*CLI, "bench", "--method", "gan", "--vs", f"{model},{model}", "--runs", "2", "--calls", "4", "--busy"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["a"]["method"] == d["b"]["method"] == "gan" and list(d["b"]["stages"]) == GAN_STAGES
    assert d["busy"]["spinners"] == 1 and d["busy"]["spinner_cpu_share"] > 0
    assert len(d["ratio_b_over_a"]["per_run"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--vs", "lpc"], "two variants"),
        (["--vs", "lpc,nope.onnx"], "no concealer"),
        (["--method", "lpc", "--vs", "lpc,x.onnx"], "runs no model file"),
        (["--method", "gan", "--vs", "lpc,missing.onnx"], "not found"),
        (["--path", "receive", "--vs", "lpc,gan"], "--vs compares two concealers"),
        (["--path", "receive", "--channels", "2"], "--channels goes with"),
        (["--method", "lpc", "--vs", "reference,lpc"], "reference"),
        (["--path", "jam", "--paced"], "--paced and --keyed go with --path receive"),
    ],
)
def test_bench_mistakes_are_one_line(args: list[str], fragment: str) -> None:
    r = subprocess.run([*CLI, "bench", *args], capture_output=True, text=True, timeout=60)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and fragment in lines[0], r.stderr


def test_the_paced_receive_bench_sleeps_between_packets_and_says_so() -> None:
    """``--paced``: every packet still goes through (the bench raises if one is dropped) and the
    JSON names the pace; the sleeps are outside the timed calls (no timing asserted)."""
    start = time.monotonic()
    d = bench_receive(200, pace_s=0.005)
    assert time.monotonic() - start >= 200 * 0.005
    assert d["paced_ms"] == 5.0 and d["n"] == 180 and d["p99_us"] >= d["p50_us"] > 0
    assert bench_receive(200)["paced_ms"] == 0.0
