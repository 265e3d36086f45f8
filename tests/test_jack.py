"""Sound devices through a real audio server: JACK with its dummy driver (issue 16).

The server is private to each test (``jack_server`` in conftest); where JACK cannot run
the tests are skipped with the reason.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import JamProcess, music_like
from jack_server import JackServer

from nmp_peer.audio_io import write_audio

pytestmark = pytest.mark.slow  # a server and a client process each

HERE = Path(__file__).parent


def test_devices_lists_the_jack_server(jack_server: JackServer) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "nmp_peer.cli", "devices"],
        capture_output=True,
        text=True,
        timeout=120,
        env=jack_server.env,
    )
    assert r.returncode == 0, r.stderr
    assert "JACK Audio Connection Kit" in r.stdout


def test_a_portaudio_stream_on_jack_passes_a_clip_bit_exact(jack_server: JackServer, tmp_path: Path) -> None:
    """A JACK client plays a clip into a sounddevice duplex stream that echoes it, and records
    the echo: the PortAudio path on a real server moves audio unchanged, at a fixed lag."""
    clip = music_like(2.0)[:, 0]
    np.save(tmp_path / "clip.npy", clip)
    r = subprocess.run(
        [sys.executable, str(HERE / "jack_echo.py"), str(tmp_path / "clip.npy")],
        capture_output=True,
        text=True,
        timeout=120,
        env=jack_server.env,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert "JACK Audio Connection Kit" in result["hostapis"] and result["devices"], result
    assert result["finished"] and result["rate"] == 44100 and result["period"] == 512, result
    assert result["compared"] == len(clip), result
    xruns = result["jack_xruns"] + result["portaudio_status_flags"]
    # Every xrun either side counted may cost a period or two of the echo; nothing else may.
    assert result["exact_samples"] >= len(clip) - xruns * 2 * result["period"], result


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def device_jam(jack_server: JackServer, tmp_path: Path) -> tuple[JamProcess, JamProcess]:
    """B on the JACK server's devices (``--input 0 --output 0``, quiet: its stderr is only what
    goes wrong), A with files; both on 127.0.0.1. Returns once A hears B (B's streams run)."""
    pa, pb = free_port(), free_port()
    write_audio(tmp_path / "a.wav", music_like(60.0))
    b = JamProcess(
        ["--listen", f"127.0.0.1:{pb}", "--peer", f"127.0.0.1:{pa}", "--input", "0", "--output", "0", "--quiet"],
        env=jack_server.env,
    )
    a = JamProcess(
        ["--listen", f"127.0.0.1:{pa}", "--peer", f"127.0.0.1:{pb}"]
        + ["--input", str(tmp_path / "a.wav"), "--output", str(tmp_path / "a_heard.wav")]
    )
    try:
        a.wait_for("A hears B", lambda: a.received() > 100, timeout_s=120)
    except BaseException:
        a.kill()
        b.kill()
        raise
    return a, b


def test_killing_the_jack_server_ends_a_device_jam_with_one_line_and_exit_74(
    jack_server: JackServer, tmp_path: Path
) -> None:
    """The audio server dies mid-jam (SIGKILL): B ends at once, says so in one line, exit code 74."""
    assert jack_server.process is not None
    a, b = device_jam(jack_server, tmp_path)
    try:
        jack_server.process.kill()
        killed = time.monotonic()
        code = b.process.wait(timeout=10)  # measured: 0.6 s (a 0.5-s close timeout); a busy CI machine gets 10
        took = time.monotonic() - killed
        code, summary, err = b.stop(sig=None)
    finally:
        a.kill()
        b.kill()
    print(f"B exited {took:.2f} s after the JACK server was killed")
    assert code == 74, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nmp-peer: error: sound device failed: the ") and "device '0'" in lines[0], err
    assert "stopped" in lines[0] and "audio server" in lines[0], err
    assert summary["device_failure"] and summary["device_failure"] in lines[0], summary
    assert summary["blocks_played"] > 0 and summary["device_callback_errors"] == 0, summary


def test_a_second_ctrl_c_exits_at_once_while_a_frozen_server_holds_the_close(
    jack_server: JackServer, tmp_path: Path
) -> None:
    """A frozen audio server (SIGSTOP) makes closing B's streams hang: the first Ctrl-C starts
    the shutdown (which would abandon the streams after 2 s), the second ends B at once (130)."""
    assert jack_server.process is not None
    a, b = device_jam(jack_server, tmp_path)
    try:
        jack_server.process.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # the server's clients see it stall
        b.process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        b.process.send_signal(signal.SIGINT)
        code = b.process.wait(timeout=10)
    finally:
        jack_server.process.send_signal(signal.SIGCONT)
        a.kill()
        b.kill()
    assert code == 130


# ---------------------------------------------------------------- jams with a JACK client at B's ports
#
# A JACK client (``tests/jack_tap.py``) plays a clip into B's input port and records B's
# output port in the same cycles. The tap stands in for the sound card: what it plays
# reaches B as the card's capture would (JACK reports that the capture port's data is
# ``capture_latency`` frames old), and what it records it gets one period after B wrote it,
# where the card would play it ``playback_latency`` frames after (as JACK reports). So the
# latency a musician would hear through a card with those latencies is the tap's lag plus
# ``capture_latency + playback_latency - period``. The lag is taken in host time between
# the cycles (a busy machine makes the dummy driver lose cycles; a card's clock does not).


@pytest.fixture
def jack_at(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A private JACK server at ``request.param`` = (rate, period)."""
    from jack_server import start_jack

    rate, period = request.param
    yield from start_jack(tmp_path, rate=rate, period=period)


def start_tap(server: JackServer, tmp_path: Path, clip: np.ndarray, after_s: float) -> subprocess.Popen[str]:
    np.save(tmp_path / "tap_clip.npy", clip)
    return subprocess.Popen(
        [sys.executable, str(HERE / "jack_tap.py"), str(tmp_path / "tap_clip.npy"), str(tmp_path / "tap.npz")]
        + ["--seconds-after", str(after_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server.env,
    )


def tap_playing(tap: subprocess.Popen[str]) -> None:
    assert tap.stdout is not None
    line = tap.stdout.readline()
    if line.strip() != '{"playing": true}':  # it ended (or closed its output) first: say why
        try:
            _, err = tap.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            tap.kill()
            _, err = tap.communicate()
        raise AssertionError(f"the tap did not start playing (exit {tap.returncode}): {line!r} {err[-2000:]}")


def tap_result(tap: subprocess.Popen[str], tmp_path: Path) -> tuple[dict, np.ndarray]:
    out, err = tap.communicate(timeout=120)
    assert tap.returncode == 0, err
    info = json.loads(out.strip().splitlines()[-1])
    assert info["finished"] and info["input_port"] and info["output_port"], info
    return info, np.load(tmp_path / "tap.npz")["recorded"]


def lag_s(cycle_s: np.ndarray, period: int, rate: int, played: int, recorded_at: int) -> float:
    """Seconds from the tap playing clip sample ``played`` to recording it at ``recorded_at``."""
    return float(
        cycle_s[recorded_at // period]
        + (recorded_at % period) / rate
        - cycle_s[played // period]
        - (played % period) / rate
    )


def lag_of(recorded: np.ndarray, clip: np.ndarray) -> int:
    """Where ``clip`` starts in ``recorded`` (the cross-correlation's peak)."""
    from scipy.signal import correlate

    c = correlate(recorded, clip, mode="full", method="fft")
    return int(np.argmax(c)) - (len(clip) - 1)


def exact_blocks(recorded: np.ndarray, clip: np.ndarray, lag: int, search: int = 16 * 512) -> int:
    """How many of the clip's 512-sample blocks are in the recording bit-exact, each within
    ``search`` samples of ``lag`` (a glitch may move the lag by a block or a few)."""
    exact = 0
    for k in range(len(clip) // 512):
        block = clip[k * 512 : (k + 1) * 512]
        lo = max(0, lag + k * 512 - search)
        window = recorded[lo : lag + (k + 1) * 512 + search]
        j = int(np.argmax(np.abs(block)))
        if len(window) < 512 or block[j] == 0:
            continue
        candidates = np.flatnonzero(window[j : len(window) - 511 + j] == block[j])
        exact += any(np.array_equal(window[i : i + 512], block) for i in candidates)
    return exact


def matched_windows(recorded: np.ndarray, clip: np.ndarray, lag: int, n: int = 4096, search: int = 1024) -> float:
    """The share of the clip's ``n``-sample windows that are in the recording within ``search``
    samples of ``lag``: a normalised cross-correlation of at least 0.9 (noise or silence: ~0)."""
    from scipy.signal import correlate

    found = total = 0
    for k in range(len(clip) // n):
        w = clip[k * n : (k + 1) * n].astype(np.float64)
        lo = lag + k * n - search
        if lo < 0 or np.dot(w, w) == 0:
            continue
        region = recorded[lo : lo + n + 2 * search].astype(np.float64)
        if len(region) < n + 2 * search:
            continue
        c = correlate(region, w, mode="valid")
        energy = np.convolve(region**2, np.ones(n), mode="valid")
        best = float(np.max(c / np.sqrt(np.maximum(energy * np.dot(w, w), 1e-20))))
        total += 1
        found += best >= 0.9
    return found / max(total, 1)


def events(summary: dict) -> int:
    """What the peer counted that may change what it plays: each may cost a few blocks of exactness."""
    keys = ("device_output_underflows", "device_input_overflows", "packets_concealed", "blocks_inserted")
    keys += ("blocks_dropped", "packets_skipped", "device_clock_jumps", "capture_queue_drops")
    return sum(int(summary[k]) for k in keys) + int(summary["blocks_resampled"])


def stop_all(*jams: JamProcess) -> list[dict]:
    summaries = []
    for jam in jams:
        code, summary, err = jam.stop()
        assert code == 0, err
        summaries.append(summary)
    return summaries


STEADY_UNDERFLOWS = 10
"""Output underflows a steady run may have: a few as the stream opens (1-5 seen alone)."""


def check_reported_latency(reported_ms: float, measured_ms: float, summary: dict) -> None:
    """The latency a peer reports is the measured one, to within one block, while the device
    ran steadily. After the clock jumped or the output underflowed again and again (a
    stalled server: JACK xruns on a loaded machine) the report has been seen high, up to
    tens of ms over a single block, never low: a known gap of issue 16 (README, "Jam with
    sound cards"; 63.6 against 32.1 ms with 32 underflows and no jump, at period 128 while
    two test suites ran). Then it must at least not under-report."""
    block_ms = 1000.0 * 512 / 44100
    clock_jumps = summary["device_clock_jumps"]
    if clock_jumps == 0 and summary["device_output_underflows"] <= STEADY_UNDERFLOWS:
        assert abs(reported_ms - measured_ms) <= block_ms, (reported_ms, measured_ms)
    else:
        assert reported_ms >= measured_ms - block_ms, (reported_ms, measured_ms, clock_jumps)


LOOPS = [("lan", 128), ("default", 512), ("default", 1024)]
"""The loops' configs and periods. ``default`` at 128 is left out: on a busy 2-core machine
(30-100 JACK xruns in 5 s) its reported latency ran up to 43 ms over the measured one in 1
of 3 runs (``benchmarks/jack_device_jam.py --loop --period 128``): not yet understood."""


@pytest.mark.parametrize(
    ("config", "jack_at"),
    [(c, (44100, p)) for c, p in LOOPS],
    ids=[f"{c}-period{p}" for c, p in LOOPS],
    indirect=["jack_at"],
)
def test_a_device_peer_reports_the_latency_measured_through_its_own_loop(
    config: str, jack_at: JackServer, tmp_path: Path
) -> None:
    """B sends to itself (``--peer`` its own address): the tap's clip goes JACK → B's capture →
    UDP → B's jitter buffer → B's output → JACK. The recording is the clip, bit-exact (but
    where B or JACK counted a glitch), and B's ``latency_ms`` (capture device + measured
    depth + output device) is the measured delay, to within one block."""
    port = free_port()
    b = JamProcess(
        ["--listen", f"127.0.0.1:{port}", "--peer", f"127.0.0.1:{port}", "--input", "0", "--output", "0"]
        + ["--config", config],
        env=jack_at.env,
    )
    try:
        clip = music_like(4.0)[:, 0]
        tap = start_tap(jack_at, tmp_path, clip, after_s=1.0)
        info, recorded = tap_result(tap, tmp_path)
        (summary,) = stop_all(b)
    finally:
        b.kill()
    period, rate = info["period"], info["rate"]
    assert (summary["device_period"], summary["device_rate"]) == (period, rate) == (jack_at.period, 44100)
    lag = lag_of(recorded, clip)
    exact, blocks = exact_blocks(recorded, clip, lag), len(clip) // 512
    glitches = events(summary) + info["jack_xruns"]
    keys = ("latency_ms", "buffer_latency_ms", "target_latency_ms", "device_clock_jumps", "device_clock_outliers")
    keys += ("packets_skipped", "packets_late", "blocks_inserted", "blocks_dropped", "device_output_underflows")
    print(f"period {period}: lag {lag}, exact blocks {exact}/{blocks}, glitches {glitches}")
    print({k: summary[k] for k in keys})
    # Each glitch counted (a JACK xrun, an underflow, a concealment...) may cost a few blocks.
    assert exact >= blocks - glitches * 2 * -(-max(period, 512) // 512), (exact, glitches)
    # The latency over the last second: a glitch earlier may have moved it.
    tail, start = clip[-rate:], max(0, lag + len(clip) - 2 * rate)
    lag_tail = lag_of(recorded[start:], tail) + start - (len(clip) - rate)
    cycles = np.load(tmp_path / "tap.npz")["cycle_s"]
    seconds = lag_s(cycles, period, rate, len(clip) - rate, len(clip) - rate + lag_tail)
    measured_ms = 1000.0 * (seconds + (info["capture_latency"] + info["playback_latency"] - period) / rate)
    print(f"measured {measured_ms:.2f} ms (last second), reported {summary['latency_ms']} ms")
    check_reported_latency(summary["latency_ms"], measured_ms, summary)
    assert summary["target_latency_ms"] > 0 and summary["buffer_latency_ms"] > 0


TWO_PEER_JAMS = [("default", 512), ("lan", 512), ("wan", 512), ("default", 128), ("default", 1024)]


def two_peer_jam(
    server: JackServer, tmp_path: Path, config: str, relay: list[str] | None = None
) -> tuple[dict, dict, dict, np.ndarray, np.ndarray, np.ndarray, dict | None]:
    """B on the JACK server's devices, A with files (its clip starts once it hears B), both
    with ``--config config``; optionally through ``nmp-peer impair`` (``relay``: its options).
    The tap plays B's clip into B's input and records B's output. Returns A's and B's
    summaries, the tap's info, the recording, A's clip, what A heard, and the relay's summary."""
    pa, pb, pr = free_port(), free_port(), free_port()
    # The tap's clip starts with 4 s of silence: A starts (and listens) after the tap plays.
    a_clip = music_like(3.0, seed=1)
    b_clip = np.concatenate([np.zeros(4 * 44100, np.float32), music_like(3.0, seed=2)[:, 0]])
    write_audio(tmp_path / "a.wav", a_clip)
    to_b, to_a = (f"127.0.0.1:{pr}", f"127.0.0.1:{pr}") if relay is not None else (f"127.0.0.1:{pb}", f"127.0.0.1:{pa}")
    relay_proc = None
    if relay is not None:
        relay_proc = subprocess.Popen(
            [sys.executable, "-m", "nmp_peer.cli", "impair", "--listen", f"127.0.0.1:{pr}"]
            + ["--forward", f"127.0.0.1:{pb}", *relay],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    b = JamProcess(
        ["--listen", f"127.0.0.1:{pb}", "--peer", to_a, "--input", "0", "--output", "0", "--config", config],
        env=server.env,
    )
    a: JamProcess | None = None
    try:
        b.wait_for("B up", lambda: b.status_lines() > 0, timeout_s=120)
        tap = start_tap(server, tmp_path, b_clip, after_s=3.0)
        tap_playing(tap)
        a = JamProcess(
            ["--listen", f"127.0.0.1:{pa}", "--peer", to_b, "--input", str(tmp_path / "a.wav")]
            + ["--output", str(tmp_path / "a_heard.wav"), "--config", config]
        )
        info, recorded = tap_result(tap, tmp_path)
        a_summary, b_summary = stop_all(a, b)
        relay_summary = None
        if relay_proc is not None:
            relay_proc.send_signal(signal.SIGTERM)
            out, err = relay_proc.communicate(timeout=30)
            assert relay_proc.returncode == 0, err
            relay_summary = json.loads(out)
    finally:
        for jam in (a, b):
            if jam is not None:
                jam.kill()
        if relay_proc is not None and relay_proc.poll() is None:
            relay_proc.kill()
    from nmp_peer.audio_io import read_audio

    heard, _ = read_audio(tmp_path / "a_heard.wav")
    return a_summary, b_summary, info, recorded, a_clip[:, 0], heard[:, 0], relay_summary


@pytest.mark.parametrize(
    ("config", "jack_at"),
    [(c, (44100, p)) for c, p in TWO_PEER_JAMS],
    ids=[f"{c}-period{p}" for c, p in TWO_PEER_JAMS],
    indirect=["jack_at"],
)
def test_two_peers_one_on_jack_hear_each_other_bit_exact_on_a_clean_link(
    config: str, jack_at: JackServer, tmp_path: Path
) -> None:
    """A (files) ↔ B (JACK devices) on 127.0.0.1: what B plays into JACK is A's clip and what A
    writes is the tap's clip, both bit-exact after alignment but where a glitch was counted;
    nothing is lost; with ``lan`` nothing arrives late."""
    a, b, info, recorded, a_clip, heard, _ = two_peer_jam(jack_at, tmp_path, config)
    period = info["period"]
    per_glitch = 2 * -(-max(period, 512) // 512)
    b_clip = np.load(tmp_path / "tap_clip.npy")[4 * 44100 :]
    results = {}
    for name, played, clip, glitches in (
        ("B plays A", recorded, a_clip, events(b) + info["jack_xruns"]),
        (
            "A hears B",
            heard,
            b_clip,
            events(a) + b["device_input_overflows"] + b["capture_queue_drops"] + info["jack_xruns"],
        ),
    ):
        lag = lag_of(played, clip)
        exact, blocks = exact_blocks(played, clip, lag), len(clip) // 512
        results[name] = (exact, blocks, glitches)
        print(f"{config} period {period}: {name}: exact blocks {exact}/{blocks}, glitches {glitches}")
    keys = ("latency_ms", "buffer_latency_ms", "target_latency_ms", "packets_late", "packets_lost", "blocks_inserted")
    print("A", {k: a[k] for k in keys}, "B", {k: b[k] for k in keys}, "xruns", info["jack_xruns"])
    for name, (exact, blocks, glitches) in results.items():
        assert exact >= blocks - glitches * per_glitch, (name, exact, blocks, glitches)
    assert a["packets_lost"] == b["packets_lost"] == 0, (a, b)
    if config == "lan" and not (events(b) + events(a) + info["jack_xruns"]):
        assert a["packets_late"] == b["packets_late"] == 0, (a, b)


@pytest.mark.parametrize("jack_at", [(44100, 512)], ids=["period512"], indirect=True)
def test_with_one_percent_loss_through_the_relay_the_device_peer_counts_the_relays_drops(
    jack_at: JackServer, tmp_path: Path
) -> None:
    """A ↔ ``nmp-peer impair`` (1 % loss both ways) ↔ B on JACK: B's ``packets_lost`` is the
    relay's A→B drops of audio after the first packet it delivered (B listens first; A's
    stream ends with end notices, so nothing is in doubt); A, stopped while B still sends,
    counts B→A's drops but for those in the last few blocks before it stopped."""
    from nmp_peer.netsim.relaylog import audio_lost, read_log

    log = tmp_path / "relay.jsonl"
    a, b, info, recorded, a_clip, heard, relay = two_peer_jam(
        jack_at, tmp_path, "default", relay=["--loss", "0.01", "--seed", "5", "--log", str(log)]
    )
    assert relay is not None
    records = read_log(log)

    # audio only: the relay's decisions fall on PINGs too (seq -1), which nobody counts lost
    a2b, b2a = audio_lost(records, "a2b"), audio_lost(records, "b2a")
    print(f"relay drops a2b {a2b} b2a {b2a}; B lost {b['packets_lost']}, A lost {a['packets_lost']}")
    assert a2b >= 1 and b2a >= 1, (a2b, b2a)  # ~4 s at 86 packets/s each way, 1 %: a few each
    # What B counted besides, to tell why if they differ. (B "lost 3 or 4 of the relay's 5"
    # under load, until 2026-12-04: a dropped PING had been counted as a dropped packet.)
    seen = ("packets_late", "packets_skipped", "resyncs", "pauses", "lost_while_paused", "device_clock_jumps", "repins")
    assert b["packets_lost"] == a2b, (b["packets_lost"], a2b, {k: b.get(k) for k in seen})
    assert b2a - 2 <= a["packets_lost"] <= b2a, (a["packets_lost"], b2a)
    assert b["packets_concealed"] >= b["packets_lost"] - b["lost_while_paused"]
    # What B played is A's clip, bit-exact but for the concealed blocks (and counted glitches).
    lag = lag_of(recorded, a_clip)
    exact, blocks = exact_blocks(recorded, a_clip, lag), len(a_clip) // 512
    assert exact >= blocks - 2 * (events(b) + info["jack_xruns"]), (exact, blocks)


@pytest.mark.parametrize("jack_at", [(48000, 512)], ids=["48kHz"], indirect=True)
def test_a_48_khz_server_works_resampled_at_the_device_edge(jack_at: JackServer, tmp_path: Path) -> None:
    """A 48 kHz JACK server (most interfaces run at 48 kHz): B resamples at the device edge, both
    ways; looped onto itself the tap's clip comes back (resampled twice: not bit-exact, about
    30 dB SNR, far above noise), with the latency B reports to within one block."""
    port = free_port()
    b = JamProcess(
        ["--listen", f"127.0.0.1:{port}", "--peer", f"127.0.0.1:{port}", "--input", "0", "--output", "0"],
        env=jack_at.env,
    )
    try:
        clip = music_like(3.0)[:, 0]  # played as 48 kHz audio
        tap = start_tap(jack_at, tmp_path, clip, after_s=1.0)
        info, recorded = tap_result(tap, tmp_path)
        (summary,) = stop_all(b)
    finally:
        b.kill()
    rate, period = info["rate"], info["period"]
    assert rate == 48000 and summary["device_rate"] == 48000 and summary["device_period"] == period
    lag = lag_of(recorded, clip)
    seg = recorded[lag : lag + len(clip)].astype(np.float64)
    ref = clip[: len(seg)].astype(np.float64)
    snr = 10 * np.log10(np.sum(ref**2) / max(np.sum((seg - ref) ** 2), 1e-20))
    matched = matched_windows(recorded, clip, lag)
    # The latency over the last second, as in the loops: a glitch earlier (an inserted block,
    # then a shrink by reading fast) may have moved it since the start.
    tail, start = clip[-rate:], max(0, lag + len(clip) - 2 * rate)
    lag_tail = lag_of(recorded[start:], tail) + start - (len(clip) - rate)
    cycles = np.load(tmp_path / "tap.npz")["cycle_s"]
    seconds = lag_s(cycles, period, rate, len(clip) - rate, len(clip) - rate + lag_tail)
    measured_ms = 1000.0 * (seconds + (info["capture_latency"] + info["playback_latency"] - period) / rate)
    glitches = events(summary) + info["jack_xruns"]
    print(
        f"48 kHz: SNR {snr:.1f} dB, windows matched {matched:.2f}, glitches {glitches}, measured {measured_ms:.2f} ms"
    )
    keys = ("latency_ms", "device_output_underflows", "device_input_overflows", "packets_concealed", "blocks_inserted")
    keys += ("blocks_dropped", "packets_skipped", "device_clock_jumps", "blocks_resampled", "packets_late")
    print({k: summary[k] for k in keys}, "xruns", info["jack_xruns"])
    if not glitches:
        # 29.4-32.8 dB in 4 glitch-free runs (2026-12-03): the error grows with frequency
        # (in one run -46 dB of the signal below 500 Hz, -15 dB at 5-10 kHz), a sub-sample
        # offset that varies over the clip in the two resamplings; a known gap (README). Until the peer's
        # start stopped stalling the streams, every run had glitches and skipped this check.
        assert snr > 25.0, snr
    # The clip, not noise, whatever the glitches: a rate correction (blocks_resampled) moves
    # the alignment by up to a block over the clip, which an SNR at one lag reads as noise.
    assert matched >= 0.8, matched
    check_reported_latency(summary["latency_ms"], measured_ms, summary)


@pytest.mark.parametrize("jack_at", [(44100, 512)], ids=["period512"], indirect=True)
def test_a_band_on_jack_reads_every_remote_at_the_devices_clock(jack_at: JackServer, tmp_path: Path) -> None:
    """A band (``nmp-peer band``) is the same peer on sound cards: B has two remotes, itself
    (``me``, its own address: the tap's clip goes JACK → B's capture → UDP → B → its stereo
    mix → JACK) and A (a jam with a file, muted in B's mix), one duplex stream for a mono
    input and a stereo output. The mix's left channel is the clip, bit-exact but where a
    glitch was counted; each remote's ``latency_ms`` counts the device latencies (B's own,
    at the summary's top level), the loop's is the measured delay within one block; A's
    stream arrives whole."""
    pb, pa = free_port(), free_port()
    write_audio(tmp_path / "a.wav", music_like(30.0, seed=3))
    b = JamProcess(
        ["--listen", f"127.0.0.1:{pb}", "--peer", f"me=127.0.0.1:{pb}", "--peer", f"a=127.0.0.1:{pa}"]
        + ["--mute", "a", "--input", "0", "--output", "0"],
        env=jack_at.env,
        command="band",
    )
    a: JamProcess | None = None
    try:
        b.wait_for("B up", lambda: b.status_lines() > 0, timeout_s=120)
        a = JamProcess(
            ["--listen", f"127.0.0.1:{pa}", "--peer", f"127.0.0.1:{pb}", "--input", str(tmp_path / "a.wav")]
            + ["--output", str(tmp_path / "a_heard.wav"), "--quiet"]
        )
        clip = music_like(4.0)[:, 0]
        tap = start_tap(jack_at, tmp_path, clip, after_s=1.0)
        info, recorded = tap_result(tap, tmp_path)
        a_summary, summary = stop_all(a, b)
    finally:
        for jam in (a, b):
            if jam is not None:
                jam.kill()
    period, rate = info["period"], info["rate"]
    # One of the stereo mix's two ports: a centred stream plays at its full level in both.
    assert str(info["output_port"]).endswith(("out_0", "out_1")), info
    assert (summary["device_period"], summary["device_rate"], summary["remotes"]) == (period, rate, 2), summary
    me, from_a = (next(p for p in summary["peers"] if p["name"] == n) for n in ("me", "a"))
    for remote in (me, from_a):
        device = remote["device_input_latency_ms"] + remote["device_output_latency_ms"]
        assert device == summary["device_input_latency_ms"] + summary["device_output_latency_ms"] > 0, remote
        assert abs(remote["latency_ms"] - (remote["buffer_latency_ms"] + device)) <= 0.02, remote
    assert from_a["packets_received"] > 100 and from_a["packets_lost"] == 0 and from_a["mute"], from_a
    assert a_summary["packets_received"] > 100, a_summary
    lag = lag_of(recorded, clip)
    exact, blocks = exact_blocks(recorded, clip, lag), len(clip) // 512
    glitches = events(summary) + info["jack_xruns"]  # the counters summed over both remotes, the devices' own
    print(f"band: lag {lag}, exact blocks {exact}/{blocks}, glitches {glitches}, me {me['latency_ms']} ms")
    assert exact >= blocks - glitches * 2, (exact, glitches)
    tail, start = clip[-rate:], max(0, lag + len(clip) - 2 * rate)
    lag_tail = lag_of(recorded[start:], tail) + start - (len(clip) - rate)
    cycles = np.load(tmp_path / "tap.npz")["cycle_s"]
    seconds = lag_s(cycles, period, rate, len(clip) - rate, len(clip) - rate + lag_tail)
    measured_ms = 1000.0 * (seconds + (info["capture_latency"] + info["playback_latency"] - period) / rate)
    print(f"measured {measured_ms:.2f} ms (last second), reported {me['latency_ms']} ms")
    check_reported_latency(me["latency_ms"], measured_ms, summary)
