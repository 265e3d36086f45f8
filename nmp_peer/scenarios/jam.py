"""One jam through a scenario's network: relay, peer B, peer A, on one of three backends.

```
 peer A ──► relay (nmp-peer impair) ──► peer B        loopback: three processes on 127.0.0.1
        ◄──                         ◄──               netns:    three network namespaces
                                                      docker:   three containers (docker/compose.yaml)
```

The same timeline on every backend, driven from here:

1. the relay starts (its first stderr line says where it listens);
2. peer B starts and sends to the relay (its live status line says it is up);
3. peer A starts; when B's status line shows packets from A, A is *heard*: both files
   play from then on (each peer sends silence until it hears the other);
4. for a restart scenario, A is killed with SIGKILL ``restart_at_s`` after that,
   started again ``restart_down_s`` later (a new process: a new stream id) and must be
   heard again;
5. ``seconds`` after A was heard (and at least ``after_restart_s`` after it was heard
   again) B gets SIGTERM, then A, then the relay: every party must exit 0 and print
   its JSON summary. B stops while A still sends, so every slot B played had its packet
   offered to the relay (what ``truth.receiver_truth`` assumes).

Nothing is sent anywhere but 127.0.0.0/8 and addresses in 198.18.0.0/15 that the
backend's own namespaces or container network hold.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from nmp_peer.scenarios.backends.netns import (
    A_ADDR,
    B_ADDR,
    PEER_PORT,
    RELAY_A_ADDR,
    RELAY_B_ADDR,
    RELAY_PORT,
    check_address,
)
from nmp_peer.scenarios.spec import Scenario

BACKENDS = ("loopback", "netns", "docker")
STATUS_RX = re.compile(r"\brx (\d+) ")


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
    if quiet:
        args.append("--quiet")
    return args


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackBackend(Backend):
    """Three processes on 127.0.0.1, ports apart: no root, no namespaces."""

    name = "loopback"

    def __init__(self, out: Path, safety_s: float) -> None:
        self.out = out
        self.safety_s = safety_s
        self.ports = {"a": free_udp_port(), "b": free_udp_port()}
        self.relay_port = free_udp_port()
        self.parties: list[LocalParty] = []

    def _spawn(self, name: str, argv: list[str]) -> LocalParty:
        party = LocalParty(name, argv, self.out)
        self.parties.append(party)
        return party

    def start_relay(self, relay_args: list[str]) -> Party:
        forward = f"127.0.0.1:{self.ports['b']}"
        return self._spawn(
            "relay",
            [
                *_python_cli("nmp_peer.cli"),
                "impair",
                "--listen",
                f"127.0.0.1:{self.relay_port}",
                "--forward",
                forward,
                *relay_args,
            ],
        )

    def start_peer(self, role: str, run: int, concealer: str, config: str | None, files: PeerFiles) -> Party:
        args = _jam_args(
            f"127.0.0.1:{self.ports[role]}",
            f"127.0.0.1:{self.relay_port}",
            concealer,
            config,
            files,
            role == "a",
            self.safety_s,
        )
        return self._spawn(f"{role}{run if run > 1 else ''}", [*_python_cli("nmp_peer.cli"), *args])

    def close(self) -> None:
        for party in self.parties:
            party.close()


class NetnsBackend(Backend):
    """Namespaces A, R (relay), B from ``nmp_peer.scenarios.backends.netns.netns_topology``; needs root."""

    name = "netns"

    def __init__(self, out: Path, safety_s: float) -> None:
        from nmp_peer.scenarios.backends.netns import netns_topology

        self.out = out
        self.safety_s = safety_s
        self._stack = ExitStack()
        self.topo = self._stack.enter_context(netns_topology())
        self.parties: list[LocalParty] = []

    def _spawn(self, name: str, ns: str, argv: list[str]) -> LocalParty:
        party = LocalParty(name, ["ip", "netns", "exec", ns, *argv], self.out)
        self.parties.append(party)
        self.topo.processes.append(party.process)
        return party

    def start_relay(self, relay_args: list[str]) -> Party:
        return self._spawn(
            "relay",
            self.topo.ns_relay,
            [
                *_python_cli("nmp_peer.cli"),
                "impair",
                "--listen",
                f"0.0.0.0:{RELAY_PORT}",
                "--forward",
                f"{check_address(B_ADDR)}:{PEER_PORT}",
                *relay_args,
            ],
        )

    def start_peer(self, role: str, run: int, concealer: str, config: str | None, files: PeerFiles) -> Party:
        ns, listen, relay = (
            (self.topo.ns_a, A_ADDR, RELAY_A_ADDR) if role == "a" else (self.topo.ns_b, B_ADDR, RELAY_B_ADDR)
        )
        args = _jam_args(
            f"{listen}:{PEER_PORT}",
            f"{check_address(relay)}:{RELAY_PORT}",
            concealer,
            config,
            files,
            role == "a",
            self.safety_s,
        )
        return self._spawn(f"{role}{run if run > 1 else ''}", ns, [*_python_cli("nmp_peer.cli"), *args])

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "namespaces": list(self.topo.namespaces)}

    def close(self) -> None:
        for party in self.parties:
            party.close()
        self._stack.close()


def _run_to_string(
    args: list[str], timeout: float = 60.0, check: bool = True, env: dict[str, str] | None = None
) -> str:
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise JamError(f"{' '.join(args[:6])} ... failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-1500:]}")
    return r.stdout


class ContainerParty(Party):
    """A compose service's container, stopped and signalled through the docker CLI."""

    def __init__(self, name: str, container: str) -> None:
        self.name = name
        self.container = container

    def poll(self) -> int | None:
        out = _run_to_string(["docker", "inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", self.container])
        running, code = out.split()
        return None if running == "true" else int(code)

    def signal(self, sig: int) -> None:
        if self.poll() is None:
            _run_to_string(["docker", "kill", "-s", signal.Signals(sig).name, self.container], check=False)

    def wait(self, timeout_s: float) -> int:
        return int(_run_to_string(["docker", "wait", self.container], timeout=timeout_s).strip() or "-1")

    def _logs(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "logs", self.container], capture_output=True, text=True, timeout=60)

    def stdout(self) -> str:
        return self._logs().stdout

    def stderr(self) -> str:
        return self._logs().stderr


class DockerBackend(Backend):
    """The services of ``docker/compose.yaml`` in a compose project of their own.

    The run folder is mounted at /out; the network gets a free /24 inside
    198.18.0.0/15. ``netem`` (a ``tc netem`` argument string) selects the compose
    file's netem profile: the peers impair their own egress and talk directly.
    """

    name = "docker"

    def __init__(self, out: Path, safety_s: float, *, image: str, netem: str | None = None) -> None:
        from nmp_peer.scenarios.backends.docker import compose_command, pick_subnet

        self.out = out
        self.safety_s = safety_s
        self.image = image
        self.netem = netem
        self.project = f"nmpscen{os.getpid() % 100000}{random.randrange(16**4):04x}"
        self.net = pick_subnet()
        uid, gid = os.getuid(), os.getgid()
        if uid == 0:  # the image's own unprivileged user; the folder is opened to it
            uid = gid = 10001
            os.chmod(out, 0o777)
        self.env = {
            **os.environ,
            "NMP_IMAGE": image,
            "NMP_OUT": str(out),
            "NMP_NET": self.net,
            "NMP_UID": str(uid),
            "NMP_GID": str(gid),
            "NMP_RELAY_SECONDS": f"{safety_s:g}",
            "NMP_SECONDS": f"{safety_s:g}",
            "NMP_SECONDS_A": f"{safety_s:g}",
        }
        self.compose = compose_command(self.project)
        self.started = False

    def path(self, host_path: Path) -> str:
        return "/out/" + str(Path(host_path).resolve().relative_to(self.out.resolve()))

    def _up(self, service: str, env: dict[str, str]) -> ContainerParty:
        self.started = True
        _run_to_string(
            [
                *self.compose,
                *(["--profile", "netem"] if self.netem else []),
                "up",
                "-d",
                "--no-deps",
                "--no-build",
                service,
            ],
            env={**self.env, **env},
            timeout=120,
        )
        cid = _run_to_string([*self.compose, "ps", "-q", service], env=self.env).strip()
        if not cid:
            raise JamError(f"compose service {service} did not start")
        return ContainerParty(service, cid)

    def start_relay(self, relay_args: list[str]) -> Party:
        return self._up("impair", {"NMP_RELAY_ARGS": " ".join(relay_args)})

    def start_peer(self, role: str, run: int, concealer: str, config: str | None, files: PeerFiles) -> Party:
        env = {"NMP_CONCEALER": concealer, "NMP_JAM_ARGS": f"--config {config}" if config else ""}
        if self.netem:
            env["NMP_NETEM"] = self.netem
        return self._up(f"peer-{role}" + ("-netem" if self.netem else ""), env)

    def restart_peer(
        self, party: Party, role: str, run: int, concealer: str, config: str | None, files: PeerFiles
    ) -> Party:
        assert isinstance(party, ContainerParty)
        _run_to_string(["docker", "start", party.container])
        return party

    def netem_counters(self, party: Party) -> dict[str, int] | None:
        """What netem did on a peer's egress (``tc -s qdisc``), read before it stops."""
        assert isinstance(party, ContainerParty)
        out = _run_to_string(
            ["docker", "exec", "-u", "0", party.container, "tc", "-s", "qdisc", "show", "dev", "eth0"], check=False
        )
        m = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+)", out)
        return None if m is None else {"bytes": int(m.group(1)), "packets": int(m.group(2)), "dropped": int(m.group(3))}

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "project": self.project,
            "subnet": f"{self.net}.0/24",
            "image": self.image,
            "netem": self.netem,
        }

    def close(self) -> None:
        if self.started:
            _run_to_string(
                [*self.compose, "--profile", "netem", "down", "--volumes", "--remove-orphans", "--timeout", "5"],
                env=self.env,
                check=False,
                timeout=120,
            )


# ---------------------------------------------------------------------- the timeline
@dataclass(frozen=True)
class JamPlan:
    scenario: Scenario
    concealer: str
    seconds: float
    """How long the two play together (from A heard to B stopped)."""
    out: Path
    clip_a: Path
    clip_b: Path
    after_restart_s: float = 2.0
    start_timeout_s: float = 30.0
    a_extra_s: float = 0.5
    """A stops this long after B: the relay's last delayed copies for A reach it."""


def _wait_for(what: str, party: Party, check: Any, timeout_s: float, poll_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if party.poll() is not None:
            raise JamError(
                f"{party.name} exited with {party.poll()} while waiting for {what}: {party.stderr()[-1500:]}"
            )
        if time.monotonic() > deadline:
            raise JamError(f"{what}: nothing within {timeout_s:g} s; {party.name} said: {party.stderr()[-800:]}")
        time.sleep(poll_s)


def _b_received(b: Party) -> int:
    found = STATUS_RX.findall(b.stderr())
    return int(found[-1]) if found else -1


def run_jam(backend: Backend, plan: JamPlan) -> dict[str, Any]:
    """Play one jam on ``backend`` (already entered) as the module docstring says; return what everyone reported."""
    sc = plan.scenario
    out = plan.out
    relay_log, relay_summary = out / "relay.jsonl", out / "relay.json"
    trace_path = None
    if sc.loss_model == "trace":
        from nmp_peer.netsim.loss import write_trace

        trace_path = out / "trace.txt"
        write_trace(trace_path, sc.trace_packets(4 * plan.seconds + 120.0))
    files = {
        "a": PeerFiles(backend.path(plan.clip_a), backend.path(out / "a_hears.wav")),
        "b": PeerFiles(backend.path(plan.clip_b), backend.path(out / "b_hears.wav")),
    }
    events: dict[str, Any] = {}
    t0 = time.monotonic()
    netem = getattr(backend, "netem", None)
    relay = None
    if not netem:
        relay_args = [
            *sc.relay_args(backend.path(trace_path) if trace_path else None),
            "--log",
            backend.path(relay_log),
            "--summary",
            backend.path(relay_summary),
        ]
        relay = backend.start_relay(relay_args)
    # B starts at once (its first packets may meet a relay that is not up yet: harmless);
    # A only once both are up, so that B hears A's first packet the relay delivers.
    b = backend.start_peer("b", 1, plan.concealer, sc.config, files["b"])
    if relay is not None:
        _wait_for("the relay's first line", relay, lambda: "relaying" in relay.stderr(), plan.start_timeout_s)
    _wait_for("peer B's status line", b, lambda: "depth" in b.stderr(), plan.start_timeout_s)
    a = backend.start_peer("a", 1, plan.concealer, sc.config, files["a"])
    _wait_for("peer A heard by B", a, lambda: _b_received(b) > 0, plan.start_timeout_s)
    t_heard = time.monotonic()
    events["a_heard_s"] = round(t_heard - t0, 3)
    stop_b_at = t_heard + plan.seconds
    a_runs = [a]
    if sc.restart_at_s is not None:
        time.sleep(max(0.0, t_heard + sc.restart_at_s - time.monotonic()))
        a.signal(signal.SIGKILL)
        a.wait(10.0)
        t_kill = time.monotonic()
        time.sleep(sc.restart_down_s)
        rx_before = _b_received(b)
        a = backend.restart_peer(a, "a", 2, plan.concealer, sc.config, files["a"])
        if a is not a_runs[0]:
            a_runs.append(a)
        _wait_for("restarted peer A heard by B", a, lambda: _b_received(b) > rx_before + 5, plan.start_timeout_s)
        t_again = time.monotonic()
        events.update(
            killed_s=round(t_kill - t0, 3),
            restarted_s=round(t_kill - t0 + sc.restart_down_s, 3),
            a_heard_again_s=round(t_again - t0, 3),
        )
        stop_b_at = max(stop_b_at, t_again + plan.after_restart_s)
    time.sleep(max(0.0, stop_b_at - time.monotonic()))
    for party in (b, a, *([relay] if relay else [])):
        if party.poll() is not None:
            raise JamError(f"{party.name} ended early with {party.poll()}: {party.stderr()[-1500:]}")
    netem_counters = {}
    if netem:
        assert isinstance(backend, DockerBackend)
        netem_counters = {"a": backend.netem_counters(a), "b": backend.netem_counters(b)}
    codes = {"b": b.stop()}
    time.sleep(plan.a_extra_s)
    codes["a"] = a.stop()
    if relay is not None:
        codes["relay"] = relay.stop()
    events["stopped_s"] = round(time.monotonic() - t0, 3)
    for name, code in codes.items():
        if code != 0:
            stopped = {"a": a, "b": b, "relay": relay}[name]
            assert stopped is not None
            raise JamError(f"{stopped.name} exited with {code} after SIGTERM: {stopped.stderr()[-1500:]}")
    result: dict[str, Any] = {
        **backend.describe(),
        "scenario": sc.name,
        "concealer": plan.concealer,
        "exit_codes": codes,
        "events": events,
        "a": a.summary(),
        "b": b.summary(),
        "a_restarted": sc.restart_at_s is not None,
        "a_hears": str(out / "a_hears.wav"),
        "b_hears": str(out / "b_hears.wav"),
        "clip_a": str(plan.clip_a),
        "clip_b": str(plan.clip_b),
        "wall_s": round(time.monotonic() - t0, 2),
    }
    if relay is not None:
        result["relay"] = json.loads(relay_summary.read_text())
        result["relay_log"] = str(relay_log)
    if netem:
        result["netem"] = {"args": netem, "qdisc": netem_counters}
    if trace_path is not None:
        result["trace"] = str(trace_path)
    return result


@contextmanager
def open_backend(
    name: str, out: Path, safety_s: float, *, image: str = "nmp-peer:latest", netem: str | None = None
) -> Iterator[Backend]:
    """The backend ``name`` for one run folder; everything it made is removed on exit."""
    if name == "loopback":
        backend: Backend = LoopbackBackend(out, safety_s)
    elif name == "netns":
        backend = NetnsBackend(out, safety_s)
    elif name == "docker":
        backend = DockerBackend(out, safety_s, image=image, netem=netem)
    else:
        raise ValueError(f"unknown backend {name!r}; choose {', '.join(BACKENDS)}")
    with backend:
        yield backend


def backend_unavailable(name: str, image: str = "nmp-peer:latest") -> str | None:
    """None when ``name`` can run here, else the precise reason."""
    if name == "loopback":
        return None
    if name == "netns":
        from nmp_peer.scenarios.backends.netns import netns_unavailable

        return netns_unavailable()
    if name == "docker":
        from nmp_peer.scenarios.backends.docker import docker_unavailable

        return docker_unavailable(image)
    return f"unknown backend {name!r}; choose {', '.join(BACKENDS)}"


__all__ = ["BACKENDS", "Backend", "JamError", "JamPlan", "Party", "backend_unavailable", "open_backend", "run_jam"]
