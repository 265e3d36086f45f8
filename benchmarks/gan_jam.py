"""A real jam that conceals: how many refinements come too late (``concealer_partial``).

    python benchmarks/gan_jam.py [--runs 3] [--channels 2] [--loss 0.05] [--seconds 20]
        [--concealer gan] [--config default] [--busy] > gan_jam.json

Per run: ``nmp-peer impair`` with Bernoulli ``--loss`` both ways, peer B (the listener:
``--concealer``, output to a file) and peer A sending a ``--channels`` harmonic test signal
from a file, two real ``nmp-peer jam`` processes on 127.0.0.1. ``--busy``: a process spins
on the CPU for the whole run (on a 2-core machine, the other core is taken, as by a
training job or a browser). From B's JSON summary: lost, concealed, ``concealer_partial``
(a refinement that missed its block: the LPC stage played), ``concealer_misses`` (not even
the first stage in time), late output ticks, B's CPU (% of one core, from the kernel's
accounting of the child), and the relay's A→B audio losses (its log), which B's loss must equal.
Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jack_device_jam import free_port

from nmp_peer import SAMPLE_RATE
from nmp_peer.audio_io import write_audio
from nmp_peer.bench import MACHINE, _test_signal, busy_core
from nmp_peer.netsim.relaylog import audio_lost, read_log


def cli(*args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "nmp_peer.cli", *args], stdin=subprocess.DEVNULL, text=True, **kw)


def one_run(tmp: Path, opts: argparse.Namespace, run: int) -> dict[str, Any]:
    clip = tmp / "a.wav"
    pa, pb, pr = free_port(), free_port(), free_port()
    relay = cli(
        "impair", "--listen", f"127.0.0.1:{pr}", "--forward", f"127.0.0.1:{pb}", "--loss", str(opts.loss),
        "--seed", str(run), "--summary", str(tmp / "relay.json"), "--log", str(tmp / "relay.jsonl"),
        stdout=subprocess.DEVNULL, stderr=(tmp / "relay.err").open("w"),
    )  # fmt: skip
    common = ["--config", opts.config, "--quiet"]
    b = cli(
        "jam", "--listen", f"127.0.0.1:{pb}", "--peer", f"127.0.0.1:{pr}", "--output", str(tmp / "b.wav"),
        "--concealer", opts.concealer, "--duration", str(opts.seconds + 3), "--stats", str(tmp / "b.json"), *common,
        stdout=subprocess.DEVNULL, stderr=(tmp / "b.err").open("w"),
    )  # fmt: skip
    time.sleep(1.0)
    a = cli(
        "jam", "--listen", f"127.0.0.1:{pa}", "--peer", f"127.0.0.1:{pr}", "--input", str(clip),
        "--duration", str(opts.seconds + 1), *common,
        stdout=subprocess.DEVNULL, stderr=(tmp / "a.err").open("w"),
    )  # fmt: skip
    try:
        _, status, usage = os.wait4(b.pid, 0)
        b.returncode = os.waitstatus_to_exitcode(status)
        a.wait(timeout=30)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    relay.send_signal(signal.SIGTERM)
    relay.wait(timeout=30)
    if b.returncode != 0:
        raise RuntimeError(f"peer B exited {b.returncode}: {(tmp / 'b.err').read_text()}")
    s = json.loads((tmp / "b.json").read_text())
    concealed = s["packets_concealed"]
    keys = ("packets_received", "packets_lost", "packets_late", "packets_concealed", "concealer_partial")
    out: dict[str, Any] = {k: s[k] for k in keys}
    out.update({k: s[k] for k in ("concealer_misses", "concealer_spared", "output_ticks_late", "output_late_max_ms")})
    out["partial_share"] = round(s["concealer_partial"] / concealed, 4) if concealed else 0.0
    out["relay_a2b_audio_lost"] = audio_lost(read_log(tmp / "relay.jsonl"), "a2b")
    out["b_cpu_percent_of_one_core"] = round(100 * (usage.ru_utime + usage.ru_stime) / (opts.seconds + 3), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--channels", type=int, default=2, choices=(1, 2))
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concealer", default="gan")
    parser.add_argument("--config", default="default")
    parser.add_argument("--busy", action="store_true", help="A process spins on the CPU during every run.")
    opts = parser.parse_args()
    runs = []
    load: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        x = _test_signal(int((opts.seconds + 2) * SAMPLE_RATE), opts.channels)
        if opts.channels == 2:  # two different channels, not one signal twice
            x[:, 1] = 0.7 * x[::-1, 1]
        write_audio(tmp / "a.wav", x)
        for run in range(opts.runs):
            if opts.busy:
                with busy_core() as load:
                    runs.append(one_run(tmp, opts, run))
            else:
                runs.append(one_run(tmp, opts, run))
            print(f"run {run + 1}/{opts.runs}: {runs[-1]}", file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "concealer": opts.concealer,
                "channels": opts.channels,
                "loss": opts.loss,
                "seconds": opts.seconds,
                "config": opts.config,
                "busy": load,
                "machine": MACHINE,
                "loadavg_1min_after": round(os.getloadavg()[0], 2),
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
