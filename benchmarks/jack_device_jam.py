"""A jam through JACK devices, ended by killing the audio server: how fast the peer exits, how deep it starts.

    python benchmarks/jack_device_jam.py [--runs 5] [--seconds 6] [--end kill|stop] > jack.json

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


def start_jackd(name: str, env: dict[str, str], realtime: bool = True) -> subprocess.Popen[bytes]:
    rt = ["-R", "-P", "70"] if realtime else ["-r"]
    server = subprocess.Popen(
        ["jackd", "-n", name, *rt, "-d", "dummy", "-r", "44100", "-p", "512"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    ready = subprocess.run(["jack_wait", "-w", "-s", name, "-t", "30"], env=env, capture_output=True, timeout=40)
    if ready.returncode != 0 and realtime:  # no real-time scheduling permitted here
        server.kill()
        server.wait()
        return start_jackd(name, env, realtime=False)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--end", choices=("kill", "stop"), default="kill")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = np.arange(int(44100 * (args.seconds + 10))) / 44100
        write_audio(folder / "a.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None])
        runs = [one_run(folder, folder / "a.wav", args.seconds, args.end) for _ in range(args.runs)]
    print(json.dumps({"end": args.end, "seconds": args.seconds, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
