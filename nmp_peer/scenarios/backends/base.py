"""What a jam's backend is: the parties (processes or containers) and where they run.

``Party`` is one process of the jam (``LocalParty``: a subprocess on this machine),
``Backend`` starts the relay and the two peers somewhere (``loopback``, ``netns``,
``docker`` modules); ``nmp_peer.scenarios.jam`` drives them through the timeline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO


class JamError(RuntimeError):
    """A party that did not start, did not finish or printed no summary; the message says which."""


# ---------------------------------------------------------------------- parties
class Party(ABC):
    """One process of the jam: a local process or a container."""

    name: str

    @abstractmethod
    def poll(self) -> int | None:
        """Exit code, or None while it runs."""

    @abstractmethod
    def signal(self, sig: int) -> None: ...

    @abstractmethod
    def wait(self, timeout_s: float) -> int: ...

    @abstractmethod
    def stdout(self) -> str: ...

    @abstractmethod
    def stderr(self) -> str: ...

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not end."""
        if self.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.wait(10.0)
            raise JamError(f"{self.name} did not stop within {timeout_s:g} s of SIGTERM") from None

    def summary(self) -> dict[str, Any]:
        """The JSON object the party printed on stdout when it ended."""
        text = self.stdout()
        start = text.rfind("\n{")
        start = start + 1 if start >= 0 else text.find("{")
        try:
            return json.loads(text[start:])
        except (json.JSONDecodeError, ValueError):
            raise JamError(f"{self.name} printed no JSON summary: {text[-300:]!r} {self.stderr()[-800:]}") from None


class LocalParty(Party):
    """A subprocess whose stdout and stderr go to files in the run's folder."""

    def __init__(self, name: str, argv: list[str], out: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self._out_path = out / f"{name}.stdout"
        self._err_path = out / f"{name}.stderr"
        self._files: list[TextIO] = [open(self._out_path, "w"), open(self._err_path, "w")]
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._files[0],
            stderr=self._files[1],
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def poll(self) -> int | None:
        return self.process.poll()

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        code = self.process.wait(timeout_s)
        for f in self._files:
            f.flush()
        return code

    def stdout(self) -> str:
        return self._out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self._err_path.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for f in self._files:
            f.close()


# ---------------------------------------------------------------------- backends
@dataclass(frozen=True)
class PeerFiles:
    """Paths as the parties see them (inside a container: under /out)."""

    clip: str
    hears: str
    key: str | None = None
    """The pre-shared key file, when the jam is keyed."""


class Backend(ABC):
    """Where the three parties run; a context manager that removes everything it made."""

    name: str
    out: Path

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None: ...

    def path(self, host_path: Path) -> str:
        """``host_path`` (inside the run folder) as the parties see it."""
        return str(host_path)

    @abstractmethod
    def start_relay(self, relay_args: list[str]) -> Party: ...

    @abstractmethod
    def start_peer(self, role: str, run: int, concealer: str, config: str | None, files: PeerFiles) -> Party:
        """Start peer ``a`` or ``b``; ``run`` counts restarts of the same peer (1, 2, ...)."""

    def restart_peer(
        self, party: Party, role: str, run: int, concealer: str, config: str | None, files: PeerFiles
    ) -> Party:
        return self.start_peer(role, run, concealer, config, files)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}


def _python_cli(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def _jam_args(
    listen: str, peer: str, concealer: str, config: str | None, files: PeerFiles, quiet: bool, safety_s: float
) -> list[str]:
    args = [
        "jam",
        "--listen",
        listen,
        "--peer",
        peer,
        "--input",
        files.clip,
        "--output",
        files.hears,
        "--concealer",
        concealer,
        "--duration",
        f"{safety_s:g}",
    ]
    if config:
        args += ["--config", config]
    if files.key:
        args += ["--key-file", files.key]
    if quiet:
        args.append("--quiet")
    return args


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
