"""The nmp-peer command as a user runs it: real processes, real files, real sockets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import JamProcess, music_like

from nmp_peer.audio_io import read_audio, write_audio

CLI = [sys.executable, "-m", "nmp_peer.cli"]
pytestmark = pytest.mark.slow  # every test starts nmp-peer processes (about a second each, more on a busy machine)


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_loopback_command_writes_aligned_output_stats_and_plot(music_wav: Path, tmp_path: Path) -> None:
    out, stats, plot = tmp_path / "out.wav", tmp_path / "s.json", tmp_path / "p.png"
    r = run(
        "loopback",
        "--input",
        str(music_wav),
        "--output",
        str(out),
        "--stats",
        str(stats),
        "--plot",
        str(plot),
        "--config",
        "lan",
        "--fast",
    )
    assert r.returncode == 0, r.stderr
    s = json.loads(stats.read_text())
    for key in (
        "packets_sent",
        "packets_received",
        "packets_lost",
        "packets_late",
        "packets_duplicate",
        "packets_concealed",
        "underruns",
        "latency_samples",
    ):
        assert key in s
    original, _ = read_audio(music_wav)
    played, _ = read_audio(out)
    lat = s["latency_samples"]
    assert len(played) == len(original) + lat
    assert np.array_equal(played[lat:], original)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loopback_with_loss_counts_match_the_injector(music_wav: Path, tmp_path: Path) -> None:
    r = run(
        "loopback",
        "--input",
        str(music_wav),
        "--output",
        str(tmp_path / "o.wav"),
        "--loss",
        "0.1",
        "--loss-model",
        "gilbert",
        "--burst",
        "2",
        "--seed",
        "5",
        "--fast",
        "--concealer",
        "repeat",
    )
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["injected_drop"] > 0
    assert s["packets_lost"] == s["packets_concealed"] == s["injected_drop"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["loopback", "--input", "/no/such.wav", "--output", "/tmp/x.wav"], "/no/such.wav"),
        (["loopback", "--input", "{wav}", "--output", "/tmp/x.wav", "--config", "{bad}"], "depth_packets"),
        (["loopback", "--input", "{wav}", "--output", "/tmp/x.wav", "--config", "/no/conf.toml"], "not found"),
        (["loopback", "--input", "{wav}", "--output", "/tmp/x.wav", "--concealer", "magic"], "unknown concealer"),
        (
            [
                "loopback",
                "--input",
                "{wav}",
                "--output",
                "/tmp/x.wav",
                "--loss",
                "0.1",
                "--loss-model",
                "trace",
                "--trace",
                "{trace}",
            ],
            "trace.txt:2:",
        ),
        (["loopback", "--input", "{notaudio}", "--output", "/tmp/x.wav"], "cannot read audio file"),
        (["jam", "--peer", "nowhere", "--listen", "127.0.0.1:0"], "HOST:PORT"),
        (["bench", "--method", "magic"], "unknown concealer"),
    ],
)
def test_user_mistakes_get_one_line_and_no_traceback(args, fragment, music_wav: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[buffer]\ndepth_packets = 0\n")
    trace = tmp_path / "trace.txt"
    trace.write_text("0\n2\n")
    notaudio = tmp_path / "notes.wav"
    notaudio.write_text("not audio")
    fill = dict(wav=str(music_wav), bad=str(bad), trace=str(trace), notaudio=str(notaudio))
    r = run(*[a.format(**fill) for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], r.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["lab", "--bogus"], "--bogus"),
        (["clips", "--out", "/tmp/x", "surplus"], "surplus"),
        (["bench", "--calls", "many"], "--calls"),
        (["loopback", "--output", "/tmp/x.wav"], "--input"),
        (["no-such-command"], "no-such-command"),
    ],
)
def test_command_line_usage_errors_say_what_is_wrong_without_a_traceback(args, fragment) -> None:
    r = run(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert any(line.startswith("Error:") and fragment in line for line in r.stderr.splitlines()), r.stderr


def test_two_jam_processes_play_each_others_audio(tmp_path: Path) -> None:
    """Each peer sends silence until it hears the other, then its whole clip, the last
    partial packet padded; then nothing. The test waits for that (both peers' received
    counts stop growing past a clip's worth), not for a fixed time: a busy machine may
    start one process seconds after the other."""
    a_in, b_in = tmp_path / "a.wav", tmp_path / "b.wav"
    a_audio, b_audio = music_like(3.0, seed=1), music_like(3.0, seed=2)
    write_audio(a_in, a_audio)
    write_audio(b_in, b_audio)
    clip_packets = -(-len(a_audio) // 512)
    pa, pb = free_port(), free_port()
    common = ["--duration", "120", "--config", "wan"]  # a safety net: the test stops them
    peers = [
        JamProcess(
            [
                "--listen",
                f"127.0.0.1:{pa}",
                "--peer",
                f"127.0.0.1:{pb}",
                "--input",
                str(a_in),
                "--output",
                str(tmp_path / "a_hears.wav"),
                *common,
            ]
        ),
        JamProcess(
            [
                "--listen",
                f"127.0.0.1:{pb}",
                "--peer",
                f"127.0.0.1:{pa}",
                "--input",
                str(b_in),
                "--output",
                str(tmp_path / "b_hears.wav"),
                *common,
            ]
        ),
    ]
    try:
        for peer in peers:
            # The other's clip has arrived and it sends no more: 1.5 s (3 status lines) without a new packet.
            seen: list[tuple[float, int]] = []

            def done(peer: JamProcess = peer, seen: list[tuple[float, int]] = seen) -> bool:
                rx = peer.received()
                if not seen or seen[-1][1] != rx:
                    seen.append((time.monotonic(), rx))
                return rx >= clip_packets and time.monotonic() - seen[-1][0] >= 1.5

            peer.wait_for("the other peer's whole clip", done, timeout_s=90)
        results = [peer.stop() for peer in peers]
    finally:
        for peer in peers:
            peer.kill()
    for code, _, err in results:
        assert code == 0, err
    summaries = [summary for _, summary, _ in results]
    for s in summaries:
        assert s["packets_sent"] >= clip_packets  # silence first (none if the other was heard first), then the clip
        assert s["packets_received"] >= clip_packets
        assert s["packets_malformed"] == 0
        # Nothing is lost on loopback: the other's end (its file's, or its stop's) is no loss,
        # and neither are the slots after it (they used to be, every tick until the end).
        assert s["packets_lost"] == 0, s
    from nmp_peer.scenarios.alignment import track_alignment

    for heard_file, sent, summary in (
        (tmp_path / "a_hears.wav", b_audio, summaries[0]),
        (tmp_path / "b_hears.wav", a_audio, summaries[1]),
    ):
        heard, _ = read_audio(heard_file)
        # Where each played block came from in the sender's clip (the start depends on process
        # start-up; a busy machine can make packets late, and the buffer then grows by a block):
        # the whole clip, once, in order, except the blocks the receiver says it concealed.
        track = track_alignment(heard[:, 0], sent[:, 0])
        blocks = len(sent) // 512
        touched = summary["packets_concealed"] + summary["blocks_inserted"] + summary["blocks_dropped"]
        assert track.segments == 1 and track.order_violations == [], track.order_violations
        assert track.clean.sum() >= blocks - 3 * touched - 2, (track.clean.sum(), blocks, summary)
        source = track.source()[track.clean]
        assert source.min() < 512 and source.max() > len(sent) - 2 * 512  # from its start to its end


def test_devices_lists_or_explains() -> None:
    """A list of devices, or one line that says why there is none and exit code 2 (a JACK
    server name nobody runs, so only the machine's own cards can be listed)."""
    env = {**os.environ, "JACK_DEFAULT_SERVER": f"nmp-none-{os.getpid()}"}
    r = subprocess.run([*CLI, "devices"], capture_output=True, text=True, timeout=120, env=env)
    assert "Traceback" not in r.stderr
    if r.returncode == 0:
        assert r.stdout.strip()
    else:
        assert r.returncode == 2, r.stderr
        errors = [line for line in r.stderr.splitlines() if line.startswith("nmp-peer: error:")]
        assert len(errors) == 1, r.stderr
        assert "no sound devices" in errors[0] or "PortAudio is not installed" in errors[0]
        assert "PortAudio is not installed" in errors[0] or "no JACK server is running" in errors[0]


def test_bench_receive_prints_json() -> None:
    r = run("bench", "--path", "receive", "--packets", "3000")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["path"] == "receive" and d["p99_us"] >= d["p50_us"] > 0


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_jam_stops_cleanly_on_a_signal_with_a_summary(sig: str, tmp_path: Path) -> None:
    import signal

    port, peer = free_port(), free_port()
    p = subprocess.Popen(
        [
            *CLI,
            "jam",
            "--listen",
            f"127.0.0.1:{port}",
            "--peer",
            f"127.0.0.1:{peer}",
            "--output",
            str(tmp_path / "o.wav"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first_status = p.stderr.readline()  # the live status line: the peer is running
    assert "depth" in first_status
    p.send_signal(getattr(signal, sig))
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert "Traceback" not in err
    assert "packets_received" in json.loads(out)
