"""A jam through JACK devices: how fast the peer exits when the server dies, how deep it starts,
and the latency budget measured end to end.

    python benchmarks/jack_device_jam.py [--runs 5] [--seconds 6] [--end kill|stop] > jack.json
    python benchmarks/jack_device_jam.py --baseline [--runs 3] [--period 128] [--clip-seconds 60] > idle.json
    python benchmarks/jack_device_jam.py --loop [--runs 3] [--period 512] [--rate 44100] [--config lan]
        [--concealer gan] [--loss 0.02] [--clip-seconds 60] > loop.json

``--loop``: per run a private ``jackd -d dummy`` at ``--rate``/``--period``, one peer on its
devices sending to itself (``--peer`` its own address), and a JACK client
(``tests/jack_tap.py``) that plays a 5-s clip into the peer's input port and records its
output port in the same cycles. The delay between the two (cross-correlation) plus the
latencies JACK reports for the sound card's capture and playback ports (less the one
period the client's recording already counts) is the end-to-end latency through a card
with those latencies; next to it the peer's own ``latency_ms`` and its parts (capture
device, measured buffer depth, output device), the policy's target, and how many of the
clip's blocks came back bit-exact. ``--loss``: the peer's stream to itself goes through
``nmp-peer impair`` (Bernoulli loss), so ``--concealer`` has packets to conceal. JACK's
xruns are counted by the tap, and apart those while the clip plays.

``--baseline``: per run the same private server at ``--rate``/``--period`` for
``--clip-seconds`` with no client at all, and the xruns its log names (the dummy driver's
own cycles that ended late): what the machine costs before any peer runs.

Per run: a private ``jackd -d dummy`` (44.1 kHz, period 512), peer A with a WAV file
started first (it sends from its start), then peer B on the server's devices (``--input 0
--output 0``); ``--seconds`` after B started, ``--end kill`` SIGKILLs the server and
times B's exit (exit code, one-line stderr), ``--end stop`` SIGTERMs B instead. From B's
JSON summary: ``packets_skipped`` (packets that piled up before its first read) and
``latency_ms``. A peer that has not exited 10 s later is killed and reported ``hung``.
Needs ``jackd`` (Debian's jackd2); run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from nmp_peer.audio_io import write_audio

EXIT_WAIT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jam(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nmp_peer.cli", "jam", "--quiet", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def start_jackd(
    name: str,
    env: dict[str, str],
    realtime: bool = True,
    rate: int = 44100,
    period: int = 512,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    rt = ["-R", "-P", "70"] if realtime else ["-r"]
    server = subprocess.Popen(
        ["jackd", "-n", name, *rt, "-d", "dummy", "-r", str(rate), "-p", str(period)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if log is None else log.open("wb"),
        env=env,
        start_new_session=True,
    )
    ready = subprocess.run(["jack_wait", "-w", "-s", name, "-t", "30"], env=env, capture_output=True, timeout=40)
    if ready.returncode != 0 and realtime:  # no real-time scheduling permitted here
        server.kill()
        server.wait()
        return start_jackd(name, env, realtime=False, rate=rate, period=period, log=log)
    if ready.returncode != 0:
        raise SystemExit(f"jackd -n {name} -d dummy did not start")
    return server


def one_run(folder: Path, clip: Path, seconds: float, end: str) -> dict[str, Any]:
    name = f"nmp-bench-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}
    server = start_jackd(name, env)
    pa, pb = free_port(), free_port()
    a = jam(
        ["--listen", f"127.0.0.1:{pa}", "--peer", f"127.0.0.1:{pb}", "--input", str(clip)]
        + ["--output", str(folder / "heard.wav")],
        env,
    )
    time.sleep(2.0)  # A runs (and sends) before B starts
    b = jam(["--listen", f"127.0.0.1:{pb}", "--peer", f"127.0.0.1:{pa}", "--input", "0", "--output", "0"], env)
    time.sleep(seconds)
    t0 = time.monotonic()
    if end == "kill":
        server.kill()
    else:
        b.send_signal(signal.SIGTERM)
    try:
        out, err = b.communicate(timeout=EXIT_WAIT_S)
        exit_s: float | None = time.monotonic() - t0
        code: int | str = b.returncode
    except subprocess.TimeoutExpired:
        b.kill()
        out, err = b.communicate()
        exit_s, code = None, "hung"
    a.kill()
    a.wait()
    if server.poll() is None:
        server.terminate()
    server.wait()
    if end == "kill":  # a killed server's slot in JACK's registry of 8 is freed by one of its name
        again = start_jackd(name, env, realtime=False)
        again.terminate()
        again.wait()
    try:
        summary = json.loads(out)
    except json.JSONDecodeError:
        summary = {}
    keys = ("packets_skipped", "latency_ms", "blocks_played", "device_failure", "device_close_s")
    return {
        "exit_code": code,
        "exit_s": None if exit_s is None else round(exit_s, 3),
        "stderr_lines": err.strip().splitlines(),
        **{k: summary.get(k) for k in keys},
    }


TAP = Path(__file__).resolve().parent.parent / "tests" / "jack_tap.py"


def lag_s(cycle_s: np.ndarray, period: int, rate: int, played: int, recorded_at: int) -> float:
    """Seconds from the tap playing clip sample ``played`` to recording it at ``recorded_at``."""
    return float(
        cycle_s[recorded_at // period]
        + (recorded_at % period) / rate
        - cycle_s[played // period]
        - (played % period) / rate
    )


def xrun_sources(log: str) -> dict[str, int]:
    """Who jackd says was late, from its log: a client that had not finished its cycle
    (``JackEngine::XRun: client = NAME``), or the dummy driver's own cycle that started
    late (``driver``: the host's timers, whatever the clients do)."""
    late: dict[str, int] = {}
    for line in log.splitlines():
        m = re.search(r"XRun: client = (.+?) was not finished", line)
        name = m.group(1) if m else ("driver" if "Driver::Process XRun" in line else None)
        if name is not None:
            late[name] = late.get(name, 0) + 1
    return late


def lag_of(recorded: np.ndarray, clip: np.ndarray) -> int:
    from scipy.signal import correlate

    return int(np.argmax(correlate(recorded, clip, mode="full", method="fft"))) - (len(clip) - 1)


def exact_blocks(recorded: np.ndarray, clip: np.ndarray, lag: int, search: int = 16 * 512) -> int:
    """The clip's 512-sample blocks found bit-exact in the recording within ``search`` of ``lag``."""
    exact = 0
    for k in range(len(clip) // 512):
        block = clip[k * 512 : (k + 1) * 512]
        window = recorded[max(0, lag + k * 512 - search) : lag + (k + 1) * 512 + search]
        j = int(np.argmax(np.abs(block)))
        if len(window) < 512 or block[j] == 0:
            continue
        candidates = np.flatnonzero(window[j : len(window) - 511 + j] == block[j])
        exact += any(np.array_equal(window[i : i + 512], block) for i in candidates)
    return exact


def loop_run(
    folder: Path, rate: int, period: int, config: str, concealer: str = "lpc", loss: float = 0.0, clip_s: float = 5.0
) -> dict[str, Any]:
    name = f"nmp-bench-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}
    server = start_jackd(name, env, rate=rate, period=period, log=folder / "jackd.log")
    addr = f"127.0.0.1:{free_port()}"
    target, relays = addr, []
    if loss > 0:
        # The peer's stream to itself through the impairment relay, and a clean one after it
        # (a relay that forwarded to its own side A would take the peer for its side B).
        target, clean = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        for listen, forward, p in ((target, clean, loss), (clean, addr, 0.0)):
            relays.append(
                subprocess.Popen(
                    [sys.executable, "-m", "nmp_peer.cli", "impair", "--listen", listen, "--forward", forward]
                    + ["--loss", str(p), "--seed", "1"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                )
            )
    if relays:  # the stream comes back from the clean relay's port: follow the host's any port
        from nmp_peer.shipped import resolve_config

        text = resolve_config(config, SystemExit).read_text(encoding="utf-8")
        if re.search(r"^pin\s*=", text, re.M):
            text = re.sub(r"^pin\s*=\s*\"\w+\"", 'pin = "host"', text, flags=re.M)
        else:
            text += '\n[security]\npin = "host"\n'
        (folder / "loop.toml").write_text(text, encoding="utf-8")
    config_file = str(folder / "loop.toml") if relays else config
    args = ["--listen", addr, "--peer", target, "--input", "0", "--output", "0", "--config", config_file]
    peer = jam([*args, "--concealer", concealer], env)
    t = np.arange(int(clip_s * rate)) / rate
    rng = np.random.default_rng(0)
    notes = 0.25 * np.sin(2 * np.pi * 220 * t * (1 + (t.astype(int) % 4) / 4)) + 0.02 * rng.standard_normal(len(t))
    clip = (np.round(notes * 32768) / 32768).astype(np.float32)
    np.save(folder / "clip.npy", clip)
    tap = subprocess.run(
        [sys.executable, str(TAP), str(folder / "clip.npy"), str(folder / "rec.npz")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120 + clip_s,
    )
    peer.send_signal(signal.SIGTERM)
    out, _ = peer.communicate(timeout=EXIT_WAIT_S)
    for relay in relays:
        relay.terminate()
        relay.wait()
    server.terminate()
    server.wait()
    info = json.loads(tap.stdout.strip().splitlines()[-1])
    late = xrun_sources((folder / "jackd.log").read_text(errors="replace"))
    summary = json.loads(out)
    saved = np.load(folder / "rec.npz")
    recorded, cycles = saved["recorded"], saved["cycle_s"]
    lag = lag_of(recorded, clip)
    # The last second's lag, in host time (a busy machine makes the dummy driver lose cycles).
    tail, start = clip[-rate:], max(0, lag + len(clip) - 2 * rate)
    lag_tail = lag_of(recorded[start:], tail) + start - (len(clip) - rate)
    seconds = lag_s(cycles, info["period"], rate, len(clip) - rate, len(clip) - rate + lag_tail)
    card = (info["capture_latency"] + info["playback_latency"] - info["period"]) / rate
    keys = ("latency_ms", "device_input_latency_ms", "buffer_latency_ms", "device_output_latency_ms")
    keys += ("target_latency_ms", "packets_late", "blocks_inserted", "device_output_underflows", "device_clock_jumps")
    keys += ("packets_lost", "packets_concealed", "concealer_partial", "concealer_misses", "concealer_chained")
    xruns = info["xrun_s"]
    return {
        "rate": rate,
        "period": period,
        "config": config,
        "concealer": concealer,
        "loss": loss,
        "clip_s": clip_s,
        "tap_lag_ms": round(1000 * seconds, 2),
        "measured_ms": round(1000 * (seconds + card), 2),
        **{k: summary.get(k) for k in keys},
        "jack_xruns": info["jack_xruns"],
        # Connecting the tap's ports reorders JACK's graph, which costs xruns before the clip
        # plays (whichever client runs Python); the jam's own are those while it plays.
        "jack_xruns_while_playing": sum(t >= 0 for t in xruns),
        "xrun_s": xruns,
        "jackd_xruns": late,
        "go_at": info.get("go_at"),
        "exact_blocks": exact_blocks(recorded, clip, lag),
        "blocks": len(clip) // 512,
    }


def baseline_run(folder: Path, rate: int, period: int, seconds: float) -> dict[str, Any]:
    """The server alone for ``seconds``: the xruns its log names."""
    name = f"nmp-idle-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}
    log = folder / "jackd-idle.log"
    server = start_jackd(name, env, rate=rate, period=period, log=log)
    try:
        time.sleep(seconds)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    late = xrun_sources(log.read_text(errors="replace"))
    return {"rate": rate, "period": period, "seconds": seconds, "jackd_xruns": late}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--end", choices=("kill", "stop"), default="kill")
    parser.add_argument("--loop", action="store_true", help="Measure the latency budget through a JACK client.")
    parser.add_argument("--period", type=int, default=512)
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--config", default="default")
    parser.add_argument("--concealer", default="lpc", help="--loop: the peer's concealer.")
    parser.add_argument("--loss", type=float, default=0.0, help="--loop: loss through nmp-peer impair (0..1).")
    parser.add_argument("--clip-seconds", type=float, default=5.0, help="--loop: the clip's length.")
    parser.add_argument("--baseline", action="store_true", help="The server alone, no client: its own xruns.")
    args = parser.parse_args()
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            idle = [baseline_run(Path(tmp), args.rate, args.period, args.clip_seconds) for _ in range(args.runs)]
        print(json.dumps({"baseline": True, "runs": idle}, indent=1))
        return
    if args.loop:
        with tempfile.TemporaryDirectory() as tmp:
            loops = [
                loop_run(Path(tmp), args.rate, args.period, args.config, args.concealer, args.loss, args.clip_seconds)
                for _ in range(args.runs)
            ]
        print(json.dumps({"loop": True, "runs": loops}, indent=1))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = np.arange(int(44100 * (args.seconds + 10))) / 44100
        write_audio(folder / "a.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None])
        runs = [one_run(folder, folder / "a.wav", args.seconds, args.end) for _ in range(args.runs)]
    print(json.dumps({"end": args.end, "seconds": args.seconds, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
