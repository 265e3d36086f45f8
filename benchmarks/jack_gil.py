"""What the interpreter lock does to a Python JACK callback: cycles missed by a passthrough client.

    python benchmarks/jack_gil.py [--period 128] [--seconds 60] > gil.json

Per mode a private ``jackd -d dummy`` at ``--period`` and one JACK-Client passthrough
client (its output wired to its input) for ``--seconds``; the xruns the client is told of:
- ``alone``: nothing else in the process;
- ``busy``: a second thread runs pure Python all the while (it holds the lock until the
  switch interval makes it yield: Python's 5 ms, longer than a 128-frame period's 2.9 ms);
- ``busy_switch``: the same with ``sys.setswitchinterval(--switch-ms)``.
Needs ``jackd`` (Debian's jackd2) and the JACK-Client package; run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLIENT = """
import json, sys, threading, time
import jack
seconds, busy, switch_s = float(sys.argv[1]), sys.argv[2] == "1", float(sys.argv[3])
sys.setswitchinterval(switch_s)
client = jack.Client("gil-probe", no_start_server=True)
inp, out = client.inports.register("in"), client.outports.register("out")
xruns = [0]

@client.set_process_callback
def process(frames):
    out.get_buffer()[:] = inp.get_buffer()

@client.set_xrun_callback
def xrun(delay):
    xruns[0] += 1

client.activate()
client.connect(out, inp)
t0 = time.monotonic()
if busy:
    def spin():
        while time.monotonic() - t0 < seconds:
            sum(range(1000))
    threading.Thread(target=spin, daemon=True).start()
time.sleep(seconds)
client.deactivate()
print(json.dumps({"xruns": xruns[0]}))
"""


def one_mode(folder: Path, period: int, seconds: float, busy: bool, switch_s: float) -> dict[str, Any]:
    from jack_device_jam import start_jackd, xrun_sources

    name = f"nmp-gil-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}
    log = folder / "jackd.log"
    server = start_jackd(name, env, period=period, log=log)
    try:
        r = subprocess.run(
            [sys.executable, "-c", CLIENT, str(seconds), "1" if busy else "0", str(switch_s)],
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    if r.returncode != 0:
        raise SystemExit(f"the probe client failed: {r.stderr[-1000:]}")
    late = xrun_sources(log.read_text(errors="replace"))
    return {"busy": busy, "switch_ms": 1000 * switch_s, "client_xruns": json.loads(r.stdout)["xruns"], "jackd": late}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--period", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--switch-ms", type=float, default=0.5)
    opts = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    modes = {"alone": (False, 0.005), "busy": (True, 0.005), "busy_switch": (True, opts.switch_ms / 1000)}
    out: dict[str, Any] = {"period": opts.period, "seconds": opts.seconds}
    with tempfile.TemporaryDirectory() as d:
        for label, (busy, switch_s) in modes.items():
            out[label] = one_mode(Path(d), opts.period, opts.seconds, busy, switch_s)
            print(f"{label}: {out[label]}", file=sys.stderr, flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
