"""A private JACK server with the dummy driver: a real audio server and clock, no hardware.

Each server runs under its own name (``JACK_DEFAULT_SERVER``), so tests neither meet a
musician's server nor each other's. Where JACK cannot run (no ``jackd``, no
``JACK-Client``, a server that does not come up) the tests that need it are skipped,
saying why.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

READY_TIMEOUT_S = 30.0
"""How long a server may take to accept clients (seconds on a busy 2-core machine)."""


@dataclass(frozen=True)
class JackServer:
    name: str
    rate: int
    period: int
    process: subprocess.Popen[bytes] | None = field(default=None, compare=False, repr=False)
    """The ``jackd`` process (tests kill or freeze it: an audio server that dies or hangs)."""

    @property
    def env(self) -> dict[str, str]:
        """The environment of a process that should use this server (PortAudio, JACK clients)."""
        return {**os.environ, "JACK_DEFAULT_SERVER": self.name, "JACK_NO_START_SERVER": "1"}


def jackd_command(name: str, rate: int, period: int, realtime: bool) -> list[str]:
    rt = ["-R", "-P", "70"] if realtime else ["-r"]
    return ["jackd", "-n", name, *rt, "-d", "dummy", "-r", str(rate), "-p", str(period)]


def start_jack(tmp_path: Path, rate: int = 44100, period: int = 512) -> Iterator[JackServer]:
    """Start ``jackd -d dummy`` on a private name, yield it once it takes clients, stop it."""
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (Debian: apt-get install jackd2)")
    if shutil.which("jack_wait") is None:
        pytest.skip("jack_wait is not installed (it comes with jackd2)")
    pytest.importorskip("jack", reason="the JACK-Client package is not installed (pip install JACK-Client)")
    name = f"nmp-test-{os.getpid()}-{time.monotonic_ns()}"
    server = JackServer(name, rate, period)
    log = tmp_path / f"jackd-{name}.log"
    last_error = ""
    # Real-time scheduling first (as a musician runs it); without it where it is not permitted.
    for realtime in (True, False):
        with log.open("w") as out:
            proc = subprocess.Popen(
                jackd_command(name, rate, period, realtime),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=server.env,
                start_new_session=True,
            )
        try:
            ready = subprocess.run(
                ["jack_wait", "-w", "-s", name, "-t", str(int(READY_TIMEOUT_S))],
                env=server.env,
                capture_output=True,
                text=True,
                timeout=READY_TIMEOUT_S + 10,
            )
        except subprocess.TimeoutExpired:
            ready = None
        if proc.poll() is None and ready is not None and ready.returncode == 0:
            break
        _stop(proc)
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        last_error = " / ".join(tail) or f"jackd exited with {proc.returncode}"
    else:
        pytest.skip(f"a JACK server with the dummy driver did not start: {last_error}")
    try:
        yield replace(server, process=proc)
    finally:
        _stop(proc)
        if proc.returncode is not None and proc.returncode < 0 and proc.returncode != -signal.SIGTERM:
            reclaim(server)


def reclaim(server: JackServer) -> None:
    """Free the registry slot of a server that was killed (a test's SIGKILL).

    A JACK server registers its name in a shared-memory table of 8 slots and frees it when
    it exits cleanly; a killed one's slot is reclaimed only by the next server of the same
    name. Without this, 8 kills later no JACK server starts on the machine ("Too many
    servers already active") and every JACK test skips. So start one under that name and
    stop it cleanly."""
    proc = subprocess.Popen(
        jackd_command(server.name, server.rate, server.period, realtime=False),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=server.env,
        start_new_session=True,
    )
    try:
        subprocess.run(
            ["jack_wait", "-w", "-s", server.name, "-t", str(int(READY_TIMEOUT_S))],
            env=server.env,
            capture_output=True,
            timeout=READY_TIMEOUT_S + 10,
        )
    except subprocess.TimeoutExpired:
        pass
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)  # a test may have frozen it
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
