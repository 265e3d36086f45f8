"""The container side: is there a Docker engine, a compose, the image, netem?

``docker/compose.yaml`` holds the services; ``mk/docker.mk`` builds the image
(``make docker-image``). Each check returns None when all is well, else the reason.
``DockerBackend`` runs the jam of ``nmp_peer.scenarios.jam`` in those services.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from nmp_peer.scenarios.backends.base import Backend, JamError, Party, PeerFiles
from nmp_peer.scenarios.backends.netns import check_address

COMPOSE_FILE = Path(__file__).resolve().parents[3] / "docker" / "compose.yaml"
DEFAULT_IMAGE = "nmp-peer:latest"
SUBNET_SPACE = ipaddress.IPv4Network("198.18.0.0/15")
RESERVED_THIRD_OCTETS = range(0, 8)
"""198.18.0-7.x stay free for the namespace lab (198.18.1.0/24 and 198.18.2.0/24)."""


def _quiet(args: list[str], timeout: float = 20.0) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def engine_answers() -> bool:
    r = _quiet(["docker", "info", "--format", "{{.ServerVersion}}"])
    return r is not None and r.returncode == 0 and bool(r.stdout.strip())


def start_dockerd(log: str = "/tmp/dockerd.log", timeout_s: float = 30.0) -> str | None:
    """Start ``dockerd`` in the background when no engine answers; None once one does, else why not."""
    if engine_answers():
        return None
    if shutil.which("dockerd") is None:
        return "no Docker engine answers and `dockerd` is not installed (apt-get install docker.io)"
    if os.geteuid() != 0:
        return f"no Docker engine answers and starting dockerd needs root (running as uid {os.geteuid()})"
    with open(log, "ab") as f:
        subprocess.Popen(["dockerd"], stdout=f, stderr=f, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if engine_answers():
            return None
        time.sleep(0.5)
    return f"dockerd did not answer within {timeout_s:g} s (see {log})"


def compose_command(project: str) -> list[str]:
    """``docker-compose`` (v1) or ``docker compose`` (v2), for ``project`` and docker/compose.yaml."""
    if shutil.which("docker-compose"):
        base = ["docker-compose"]
    else:
        base = ["docker", "compose"]
    return [*base, "--project-name", project, "--file", str(COMPOSE_FILE)]


def compose_unavailable() -> str | None:
    if shutil.which("docker-compose"):
        return None
    r = _quiet(["docker", "compose", "version"])
    if r is not None and r.returncode == 0:
        return None
    return "neither `docker-compose` nor `docker compose` is installed (apt-get install docker-compose)"


def image_exists(image: str = DEFAULT_IMAGE) -> bool:
    r = _quiet(["docker", "image", "inspect", image])
    return r is not None and r.returncode == 0


def docker_unavailable(image: str = DEFAULT_IMAGE, *, start: bool = False) -> str | None:
    """None when the docker backend can run ``image`` here (starting dockerd if ``start``), else why not."""
    if shutil.which("docker") is None:
        return "the `docker` command is not installed (apt-get install docker.io)"
    reason = start_dockerd() if start else (None if engine_answers() else "no Docker engine answers (start dockerd)")
    if reason:
        return reason
    reason = compose_unavailable()
    if reason:
        return reason
    if not image_exists(image):
        return f"image {image} not found: build it with `make docker-image`"
    return None


def used_subnets() -> list[ipaddress.IPv4Network]:
    r = _quiet(["docker", "network", "ls", "-q"])
    if r is None or r.returncode != 0 or not r.stdout.split():
        return []
    r = _quiet(["docker", "network", "inspect", *r.stdout.split()])
    nets: list[ipaddress.IPv4Network] = []
    for net in json.loads(r.stdout) if r is not None and r.returncode == 0 else []:
        for cfg in (net.get("IPAM") or {}).get("Config") or []:
            try:
                nets.append(ipaddress.ip_network(cfg.get("Subnet", ""), strict=False))  # type: ignore[arg-type]
            except ValueError:
                pass
    return nets


def pick_subnet() -> str:
    """A free /24 inside 198.18.0.0/15 as its first three octets ("198.18.57"), at random."""
    used = used_subnets()
    candidates = [
        f"198.{hi}.{lo}" for hi in (18, 19) for lo in range(256) if not (hi == 18 and lo in RESERVED_THIRD_OCTETS)
    ]
    random.shuffle(candidates)
    for prefix in candidates:
        net = ipaddress.IPv4Network(f"{prefix}.0/24")
        if net.subnet_of(SUBNET_SPACE) and not any(net.overlaps(u) for u in used):
            check_address(f"{prefix}.2")
            return prefix
    raise RuntimeError("no free /24 left in 198.18.0.0/15 for a container network")


def netem_unavailable() -> str | None:
    """None when this kernel has netem (``tc qdisc add dev lo root netem`` in a throwaway namespace)."""
    if shutil.which("tc") is None or shutil.which("ip") is None:
        return "`tc` or `ip` (iproute2) is not installed"
    if os.geteuid() != 0:
        return "probing netem needs root (a throwaway network namespace)"
    ns = f"nmpnetem{os.getpid() % 100000}{secrets.token_hex(2)}"
    r = _quiet(["ip", "netns", "add", ns])
    if r is None or r.returncode != 0:
        return f"cannot create a network namespace to probe netem: {r.stderr.strip() if r else 'ip failed'}"
    try:
        r = _quiet(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])
        if r is None:
            return "tc did not answer"
        return None if r.returncode == 0 else f"this kernel has no netem: {r.stderr.strip()}"
    finally:
        _quiet(["ip", "netns", "del", ns])


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
        extra = (["--config", config] if config else []) + (["--key-file", files.key] if files.key else [])
        env = {"NMP_CONCEALER": concealer, "NMP_JAM_ARGS": " ".join(extra)}
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
