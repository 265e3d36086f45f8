"""Bad input and bugs, as issue 12 found them: a user mistake ends in one line and exit code 2,
a bug in a traceback and another non-zero code, a broken concealer is counted, not hidden.

Real files in tmp_path; the CLI through ``nmp_peer.cli.main`` (its return value is the exit
code ``nmp-peer`` exits with) or as a subprocess where the traceback and the exit code of
an uncaught exception are what is tested.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import music_like

from nmp_peer.audio_io import AudioFileError, read_audio, write_audio
from nmp_peer.cli import _user_errors, main
from nmp_peer.conceal import UnknownConcealerError, make_concealer
from nmp_peer.conceal.base import Concealer
from nmp_peer.conceal.gan import ModelNotFoundError
from nmp_peer.conceal.worker import ThreadedWorker
from nmp_peer.live.transport import Endpoint, EndpointError
from nmp_peer.netsim.loss import TraceError, read_trace, write_trace


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The only non-blank line on stderr, which must be the CLI's one-line error."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("nmp-peer: error: "), lines
    return lines[0]


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    """1 s of music: 44100 samples, 86 full packets and a partial one (87 in all)."""
    path = tmp_path / "in.wav"
    write_audio(path, music_like(1.0))
    return path


# --- bugs are not user mistakes ---------------------------------------------------------

BROKEN_CONCEALER_RUN = textwrap.dedent(
    """
    import sys
    import nmp_peer.conceal as conceal
    from nmp_peer.conceal.base import Concealer

    class Broken(Concealer):
        name = "broken"
        def conceal(self, history, burst_index):
            raise ValueError("internal invariant broken: history is upside down")

    conceal.FACTORIES["broken"] = Broken
    from nmp_peer.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_a_bug_in_a_concealer_ends_in_a_traceback_not_in_a_user_error(wav: Path, tmp_path: Path) -> None:
    """A concealer registered like the shipped ones raises a bare ValueError in ``nmp-peer
    conceal``: that is a bug, so it must not come out as ``nmp-peer: error:`` with exit 2."""
    trace = tmp_path / "t.txt"
    write_trace(trace, [i % 10 == 5 for i in range(87)])
    out = tmp_path / "out.wav"
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            BROKEN_CONCEALER_RUN,
            "conceal",
            str(wav),
            "--trace",
            str(trace),
            "--out",
            str(out),
            "--method",
            "broken",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode not in (0, 2), (r.returncode, r.stderr)
    assert "Traceback (most recent call last)" in r.stderr
    assert "ValueError: internal invariant broken" in r.stderr
    assert "nmp-peer: error:" not in r.stderr
    assert not out.exists()


def test_the_user_error_list_is_explicit_and_holds_the_new_classes() -> None:
    errors = _user_errors()
    assert ValueError not in errors and Exception not in errors
    assert ModelNotFoundError in errors and UnknownConcealerError in errors
    with pytest.raises(UnknownConcealerError, match="choose one of"):
        make_concealer("magic")


# --- a concealer that raises in the live worker ------------------------------------------


class FlakyConcealer(Concealer):
    """Raises while ``failing`` is set, else a constant prediction; signals every call's end."""

    name = "flaky"

    def __init__(self) -> None:
        self.failing = True
        self.calls = threading.Semaphore(0)

    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        try:
            if self.failing:
                raise RuntimeError(f"flaky concealer failed at burst {burst_index}")
            return np.full((self.predict_samples, history.shape[1]), 0.25, np.float32)
        finally:
            self.calls.release()


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_the_worker_counts_a_concealer_exception_and_keeps_serving() -> None:
    concealer = FlakyConcealer()
    worker = ThreadedWorker(concealer, chain=False)
    try:
        history = np.zeros((concealer.context_samples, 1), np.float32)
        worker.request(10, history, 0)
        assert concealer.calls.acquire(timeout=10)
        assert wait_for(lambda: worker.errors == 1)
        assert worker.last_error == "RuntimeError: flaky concealer failed at burst 0"
        taken = worker.take(10)
        assert taken.result is None and not taken.complete  # the engine falls back, as for a miss
        worker.request(11, history, 1)
        assert concealer.calls.acquire(timeout=10)
        assert wait_for(lambda: worker.errors == 2)
        assert worker.last_error.endswith("at burst 1")
        concealer.failing = False  # the thread survived both: the next request is served
        worker.request(12, history, 0)
        assert concealer.calls.acquire(timeout=10)
        assert wait_for(lambda: worker._job is not None and worker._job.complete)
        taken = worker.take(12)
        assert taken.complete and np.all(taken.result == 0.25)
        assert worker.errors == 2
    finally:
        worker.close()


def test_an_engine_whose_concealer_raises_plays_fallback_blocks_and_counts_them() -> None:
    from test_playout import play

    from nmp_peer.receiver.latency import LatencyPolicy
    from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine

    audio = music_like(1.0)
    engine = PlayoutEngine(
        FlakyConcealer(), PlayoutConfig(latency=LatencyPolicy(mode="fixed", depth_packets=2)), threaded=True
    )
    lost = {20, 40, 60}
    out, _ = play(engine, audio, lost, realtime_pause=0.02)  # the concealer fails in microseconds
    engine.close()
    assert np.isfinite(out).all()
    assert engine.stats.concealer_misses == len(lost)
    assert engine.worker.errors >= 1 and "flaky concealer failed" in engine.worker.last_error


# --- nmp-peer conceal: traces -------------------------------------------------------------


def test_a_missing_trace_is_one_line(wav: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing.txt"
    assert main(["conceal", str(wav), "--trace", str(missing), "--out", str(tmp_path / "o.wav")]) == 2
    line = one_error_line(capsys)
    assert str(missing) in line and "no such file" in line


def test_a_folder_given_as_trace_is_one_line(wav: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "traces"
    folder.mkdir()
    assert main(["conceal", str(wav), "--trace", str(folder), "--out", str(tmp_path / "o.wav")]) == 2
    assert "is a directory" in one_error_line(capsys)
    with pytest.raises(TraceError):
        read_trace(folder)


@pytest.mark.parametrize("n", [30, 200])
def test_a_trace_of_another_length_is_refused_naming_both_lengths(n: int, wav: Path, tmp_path: Path, capsys) -> None:
    trace = tmp_path / "t.txt"
    write_trace(trace, [i % 7 == 3 for i in range(n)])
    out = tmp_path / "o.wav"
    assert main(["conceal", str(wav), "--trace", str(trace), "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert f"has {n} packets" in line and "has 87" in line
    assert ("--trace-fit pad" if n < 87 else "--trace-fit cut") in line
    assert not out.exists()


@pytest.mark.parametrize("n", [86, 87])
def test_a_trace_with_or_without_the_partial_last_packet_fits(n: int, wav: Path, tmp_path: Path, capsys) -> None:
    trace = tmp_path / "t.txt"
    write_trace(trace, [i % 7 == 3 for i in range(n)])
    assert (
        main(["conceal", str(wav), "--trace", str(trace), "--out", str(tmp_path / "o.wav"), "--method", "repeat"]) == 0
    )
    assert capsys.readouterr().err == ""


def test_trace_fit_pad_and_cut_say_what_they_did_and_match_the_exact_trace(wav: Path, tmp_path: Path, capsys) -> None:
    pattern = [i % 9 == 4 for i in range(87)]
    exact, short, long = tmp_path / "exact.txt", tmp_path / "short.txt", tmp_path / "long.txt"
    write_trace(exact, pattern[:40] + [False] * 47)
    write_trace(short, pattern[:40])
    write_trace(long, pattern[:40] + [False] * 47 + [True] * 13)
    outs = {}
    for name, trace, fit in (("exact", exact, "exact"), ("pad", short, "pad"), ("cut", long, "cut")):
        outs[name] = tmp_path / f"{name}.wav"
        code = main(
            [
                "conceal",
                str(wav),
                "--trace",
                str(trace),
                "--out",
                str(outs[name]),
                "--method",
                "repeat",
                "--trace-fit",
                fit,
            ]
        )
        assert code == 0
        err = capsys.readouterr().err
        if name == "exact":
            assert err == ""
        else:
            assert err.startswith("note: ") and f"--trace-fit {name}" in err and len(err.splitlines()) == 1
    expected = read_audio(outs["exact"])[0]
    assert np.array_equal(read_audio(outs["pad"])[0], expected)
    assert np.array_equal(read_audio(outs["cut"])[0], expected)


def test_lab_reads_its_traces_before_the_run_and_says_how_long_they_are(tmp_path: Path, capsys) -> None:
    clips, traces = tmp_path / "clips", tmp_path / "traces"
    clips.mkdir()
    traces.mkdir()
    write_audio(clips / "a.wav", music_like(1.0))
    (traces / "bad.txt").write_text("0\n1\n2\n")
    assert (
        main(
            [
                "lab",
                "--clips",
                str(clips),
                "--out",
                str(tmp_path / "o"),
                "--loss-model",
                "trace",
                "--traces",
                str(traces),
                "--jobs",
                "1",
                "--metrics",
                "snr",
            ]
        )
        == 2
    )
    assert "bad.txt:3" in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


# --- durations, seconds and rates --------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "0"])
def test_jam_refuses_a_duration_that_is_not_a_positive_number(value: str, capsys) -> None:
    code = main(["jam", "--peer", "127.0.0.1:9", "--listen", "127.0.0.1:0", "--quiet", "--duration", value])
    assert code == 2
    line = one_error_line(capsys)
    assert "--duration must be positive and finite" in line and line.endswith(f"got {value}")


@pytest.mark.parametrize(
    "args, option",
    [
        (["impair", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--duration", "nan"], "--duration"),
        (["impair", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--duration", "-1"], "--duration"),
        (["impair", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--rate-kbps", "inf"], "--rate-kbps"),
        (["impair", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--loss", "nan"], "--loss"),
        (["impair", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--delay-ms", "inf"], "--delay-ms"),
        (["impair", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--burst", "nan"], "--burst"),
        (["demo", "--seconds", "-1", "--out", "{tmp}/demo"], "--seconds"),
        (["demo", "--seconds", "nan", "--out", "{tmp}/demo"], "--seconds"),
        (["clips", "--out", "{tmp}/clips", "--seconds", "-1"], "--seconds"),
        (["clips", "--out", "{tmp}/clips", "--seconds", "inf"], "--seconds"),
        (["scenarios", "clip", "{tmp}/c.wav", "--seconds", "nan"], "--seconds"),
        (["scenarios", "run", "--out", "{tmp}/s", "--seconds", "inf"], "--seconds"),
        (["lab", "--clips", "{tmp}", "--out", "{tmp}/lab", "--max-seconds", "-1"], "--max-seconds"),
        (["lab", "--clips", "{tmp}", "--out", "{tmp}/lab", "--jitter-ms", "nan"], "--jitter-ms"),
    ],
)
def test_bad_seconds_and_rates_are_refused_before_anything_starts(
    args: list[str], option: str, tmp_path: Path, capsys
) -> None:
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    assert one_error_line(capsys).startswith(f"nmp-peer: error: {option} must be ")
    assert not any(p.name in ("demo", "clips", "s", "lab", "c.wav") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--loss", "nan"], "--loss must be in [0, 1], got nan"),
        (["--loss", "1.5"], "--loss must be in [0, 1], got 1.5"),
        (["--loss", "-0.1"], "--loss must be in [0, 1]"),
        (["--delay-ms", "nan"], "--delay-ms must be a finite number >= 0"),
        (["--jitter-ms", "inf"], "--jitter-ms must be a finite number >= 0"),
        (["--reorder", "nan"], "--reorder must be in [0, 1]"),
        (["--loss", "0.9", "--loss-model", "gilbert"], "impossible with --burst 2"),
        (["--loss-model", "trace", "--trace", "{tmp}/missing.txt"], "cannot read trace"),
    ],
)
def test_loopback_impairments_out_of_range_are_one_line(
    extra: list[str], fragment: str, wav: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "o.wav"
    args = ["loopback", "--input", str(wav), "--output", str(out), "--fast", *extra]
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    assert fragment in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("loss, fragment", [("nan", "in [0, 1], got nan"), ("0.9", "impossible with mean_burst")])
def test_lab_loss_rates_are_checked_before_the_run(loss: str, fragment: str, wav: Path, tmp_path: Path, capsys) -> None:
    assert main(["lab", "--clips", str(wav.parent), "--out", str(tmp_path / "lab"), "--loss", loss, "--jobs", "1"]) == 2
    assert fragment in one_error_line(capsys)


def test_outputs_that_cannot_be_written_are_one_line(wav: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = [
        "impair",
        "--listen",
        "127.0.0.1:0",
        "--forward",
        "127.0.0.1:9",
        "--log",
        str(blocker / "log.jsonl"),
        "--duration",
        "0.1",
    ]
    assert main(args) == 2
    assert "cannot write relay log" in one_error_line(capsys)
    args = ["impair", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--outage", "5:x"]
    assert main(args) == 2
    assert "--outage '5:x'" in one_error_line(capsys)
    assert main(["scenarios", "run", "--out", str(tmp_path / "s"), "--only", "no-such-scenario"]) == 2
    assert "unknown scenario no-such-scenario" in one_error_line(capsys)


# --- float WAV files ----------------------------------------------------------------------


def float_wav(path: Path, samples: np.ndarray) -> Path:
    sf.write(str(path), samples.astype(np.float32), 44100, subtype="FLOAT")
    return path


def test_a_float_wav_with_nan_or_inf_is_refused_naming_the_count(tmp_path: Path) -> None:
    audio = music_like(1.0)[:, 0].copy()
    audio[1000:1010] = np.nan
    audio[2000] = np.inf
    audio[3000] = -np.inf
    path = float_wav(tmp_path / "bad.wav", audio)
    with pytest.raises(
        AudioFileError, match=r"bad\.wav has 12 samples that are NaN or infinite \(the first at frame 1000\)"
    ):
        read_audio(path)
    trace = tmp_path / "t.txt"
    write_trace(trace, [False] * 87)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nmp_peer.cli",
            "conceal",
            str(path),
            "--trace",
            str(trace),
            "--out",
            str(tmp_path / "o.wav"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nmp-peer: error: ") and "12 samples" in lines[0], r.stderr
    assert "Warning" not in r.stderr


def test_float_samples_beyond_full_scale_are_clipped_and_noted(tmp_path: Path, capsys) -> None:
    audio = music_like(1.0)[:, 0].copy()
    audio[500:505] = 1.5
    audio[600] = -2.0
    path = float_wav(tmp_path / "hot.wav", audio)
    data, _ = read_audio(path)
    assert np.abs(data).max() == 1.0
    assert data[500, 0] == 1.0 and data[600, 0] == -1.0
    assert np.array_equal(data[:400, 0], audio[:400].astype(np.float32))
    err = capsys.readouterr().err
    assert "hot.wav: 6 samples beyond ±1.0 (peak 2" in err and "clipped" in err


# --- addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, hint", [("::1:5000", "[::1]:5000"), ("::5000", "[::1]:50000"), ("fe80::1:80", "[fe80::1]:80")]
)
def test_ipv6_without_brackets_is_refused_with_the_bracketed_hint(text: str, hint: str) -> None:
    with pytest.raises(EndpointError, match="IPv6 addresses go in brackets") as info:
        Endpoint.parse(text)
    assert hint in str(info.value)


@pytest.mark.parametrize(
    "text, host, port",
    [
        ("[::1]:5000", "::1", 5000),
        ("127.0.0.1:0", "127.0.0.1", 0),
        (":7", "0.0.0.0", 7),
        ("localhost:80", "localhost", 80),
    ],
)
def test_good_endpoints_still_parse(text: str, host: str, port: int) -> None:
    assert Endpoint.parse(text) == Endpoint(host, port)


def test_bracketed_non_ipv6_is_refused() -> None:
    with pytest.raises(EndpointError, match="only an IPv6 address"):
        Endpoint.parse("[127.0.0.1]:5000")


def test_jam_with_an_unbracketed_ipv6_listen_address_is_one_line(capsys) -> None:
    assert main(["jam", "--peer", "127.0.0.1:9", "--listen", "::1:5000", "--quiet", "--duration", "1"]) == 2
    assert "[::1]:5000" in one_error_line(capsys)
