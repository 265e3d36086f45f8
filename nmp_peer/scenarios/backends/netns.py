"""A two-peer jam across Linux network namespaces, for machines without a container engine.

```
 ns A                    ns R (relay, no IP forwarding)                 ns B
 198.18.1.1 ── veth ── 198.18.1.2  [nmp-peer impair]  198.18.2.1 ── veth ── 198.18.2.2
 jam :50000            listens on :50100 (all addresses)              jam :50000
```

Peer A sends to the relay's 198.18.1.2, peer B to its 198.18.2.1; the relay forwards
A → B and B → A. R does not route between its two links, so no packet crosses without
the relay. Addresses come only from 198.18.0.0/15, the range reserved for network
benchmarks (RFC 2544), so nothing here can reach or impersonate a real network; every
address a peer or the relay is told to send to is checked against that range and
127.0.0.0/8. An optional ``tc tbf`` rate limit sits on R's link toward B.

``netns_topology()`` creates the namespaces and veth pairs under names made from the
process id and a random part, and always deletes them, after killing what it started
in them, when the ``with`` block ends, normally or not. Needs root and ``ip netns``;
``netns_unavailable()`` says why not when they are missing. ``NetnsBackend`` runs the jam
of ``nmp_peer.scenarios.jam`` across them, the one jam harness of every backend.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmp_peer.scenarios.backends.base import Backend, LocalParty, Party, PeerFiles, _jam_args, _python_cli

ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("198.18.0.0/15"))

A_ADDR, RELAY_A_ADDR = "198.18.1.1", "198.18.1.2"
RELAY_B_ADDR, B_ADDR = "198.18.2.1", "198.18.2.2"
PREFIX_LEN = 24
PEER_PORT = 50000
RELAY_PORT = 50100
NAME_PREFIX = "nmp"


class NetnsError(RuntimeError):
    """A namespace, link or process inside one that could not be set up or did not finish."""


def check_address(host: str) -> str:
    """``host`` if it lies in 127.0.0.0/8 or 198.18.0.0/15; anything else is refused."""
    addr = ipaddress.ip_address(host)
    if not any(addr in net for net in ALLOWED_NETWORKS):
        raise ValueError(f"{host} is outside 127.0.0.0/8 and 198.18.0.0/15; the namespace lab sends nowhere else")
    return host


def _run(args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise NetnsError(f"{' '.join(args)} failed: {(r.stderr or r.stdout).strip()}")
    return r


def netns_unavailable() -> str | None:
    """``None`` when namespaces and veth pairs can be made here, else the precise reason."""
    if sys.platform != "linux":
        return f"network namespaces need Linux, this is {sys.platform}"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return f"creating network namespaces needs root (running as uid {os.geteuid()})"
    token = f"{os.getpid()}{secrets.token_hex(2)}"
    probe, veth = f"{NAME_PREFIX}probe{token}", f"n{token}p"
    try:
        r = _run(["ip", "netns", "add", probe], check=False)
        if r.returncode != 0:
            return f"`ip netns add` fails here: {r.stderr.strip()}"
        r = _run(
            ["ip", "link", "add", veth, "netns", probe, "type", "veth", "peer", "name", veth + "q", "netns", probe],
            check=False,
        )
        if r.returncode != 0:
            return f"cannot create a veth pair: {r.stderr.strip()}"
        r = _run(["ip", "netns", "exec", probe, "ip", "link", "set", veth, "up"], check=False)
        if r.returncode != 0:
            return f"`ip netns exec` fails here: {r.stderr.strip()}"
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns` does not work here: {exc}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)


def tbf_unavailable() -> str | None:
    """``None`` when ``tc qdisc ... tbf`` works on a veth inside a namespace, else why not."""
    if shutil.which("tc") is None:
        return "the `tc` command (iproute2) is not installed"
    reason = netns_unavailable()
    if reason:
        return reason
    token = f"{os.getpid()}{secrets.token_hex(2)}"
    probe, veth = f"{NAME_PREFIX}tbf{token}", f"n{token}t"
    try:
        _run(["ip", "netns", "add", probe])
        _run(["ip", "link", "add", veth, "netns", probe, "type", "veth", "peer", "name", veth + "q", "netns", probe])
        r = _run(
            [
                "ip",
                "netns",
                "exec",
                probe,
                "tc",
                "qdisc",
                "add",
                "dev",
                veth,
                "root",
                "tbf",
                "rate",
                "1mbit",
                "burst",
                "4kb",
                "latency",
                "50ms",
            ],
            check=False,
        )
        return None if r.returncode == 0 else f"`tc qdisc add ... tbf` fails here: {r.stderr.strip()}"
    except NetnsError as exc:
        return str(exc)
    finally:
        _run(["ip", "netns", "del", probe], check=False)


def list_namespaces() -> list[str]:
    r = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


@dataclass
class Topology:
    """Three namespaces (A, relay, B) joined by two veth pairs; see the module docstring."""

    ns_a: str
    ns_relay: str
    ns_b: str
    veth_a: str
    """In A, toward the relay."""
    veth_ra: str
    """In the relay namespace, toward A."""
    veth_rb: str
    """In the relay namespace, toward B (where ``add_tbf`` puts its rate limit)."""
    veth_b: str
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return self.ns_a, self.ns_relay, self.ns_b

    def exec(self, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "netns", "exec", ns, *args], check=check)

    def spawn(self, ns: str, args: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``args`` inside ``ns``; it is killed at the latest when the topology is removed."""
        p = subprocess.Popen(["ip", "netns", "exec", ns, *args], text=True, **kwargs)
        self.processes.append(p)
        return p

    def add_tbf(self, rate_kbps: float, burst_bytes: int = 4096, latency_ms: float = 50.0) -> None:
        """Rate-limit the relay's link toward B with a token bucket filter."""
        self.exec(
            self.ns_relay,
            "tc",
            "qdisc",
            "add",
            "dev",
            self.veth_rb,
            "root",
            "tbf",
            "rate",
            f"{rate_kbps:g}kbit",
            "burst",
            str(burst_bytes),
            "latency",
            f"{latency_ms:g}ms",
        )

    def qdisc_stats(self) -> dict[str, int]:
        """Packets sent and dropped by the root qdisc of the relay's link toward B."""
        out = self.exec(self.ns_relay, "tc", "-s", "qdisc", "show", "dev", self.veth_rb).stdout
        m = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)", out)
        if m is None:
            raise NetnsError(f"cannot read qdisc counters of {self.veth_rb}: {out.strip()!r}")
        return {
            "bytes": int(m.group(1)),
            "packets": int(m.group(2)),
            "dropped": int(m.group(3)),
            "overlimits": int(m.group(4)),
        }


def _stop(p: subprocess.Popen[str]) -> None:
    if p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def _add_namespace(ns: str, created: list[str]) -> None:
    """A namespace with loopback up, no IPv6 (no router solicitations through a rate limit)."""
    _run(["ip", "netns", "add", ns])
    created.append(ns)
    ns_exec = ["ip", "netns", "exec", ns]
    _run([*ns_exec, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"], False)
    _run([*ns_exec, "ip", "link", "set", "lo", "up"])


def _add_link(ns1: str, dev1: str, addr1: str, ns2: str, dev2: str, addr2: str) -> None:
    """A veth pair between two namespaces, each end with its address (checked) and up."""
    _run(["ip", "link", "add", dev1, "netns", ns1, "type", "veth", "peer", "name", dev2, "netns", ns2])
    for ns, dev, addr in ((ns1, dev1, addr1), (ns2, dev2, addr2)):
        _run(["ip", "netns", "exec", ns, "ip", "addr", "add", f"{check_address(addr)}/{PREFIX_LEN}", "dev", dev])
        _run(["ip", "netns", "exec", ns, "ip", "link", "set", dev, "up"])


def _suffix(tag: str | None) -> str:
    # The pid and a random part: other processes (in other pid namespaces too) may run this at once.
    return f"{os.getpid() % 100000}{secrets.token_hex(2)}{tag or ''}"


@contextmanager
def netns_topology(tag: str | None = None) -> Iterator[Topology]:
    """Create the A / relay / B namespaces and their links; remove them all on exit."""
    reason = netns_unavailable()
    if reason:
        raise NetnsError(reason)
    suffix = _suffix(tag)
    names = [f"{NAME_PREFIX}{suffix}-{role}" for role in ("a", "r", "b")]
    veths = [f"n{suffix}{role}"[:15] for role in ("a", "ra", "rb", "b")]
    if len(set(veths)) != 4:
        raise NetnsError(f"tag {tag!r} is too long for unique interface names")
    topo = Topology(*names, *veths)  # type: ignore[arg-type]
    created: list[str] = []
    try:
        for ns in names:
            _add_namespace(ns, created)
        topo.exec(topo.ns_relay, "sysctl", "-qw", "net.ipv4.ip_forward=0", check=False)
        _add_link(topo.ns_a, topo.veth_a, A_ADDR, topo.ns_relay, topo.veth_ra, RELAY_A_ADDR)
        _add_link(topo.ns_b, topo.veth_b, B_ADDR, topo.ns_relay, topo.veth_rb, RELAY_B_ADDR)
        yield topo
    finally:
        for p in topo.processes:
            _stop(p)
        for ns in created:  # deleting a namespace deletes the veth ends inside it
            _run(["ip", "netns", "del", ns], check=False)


BAND_SUBNET_BASE = 20
"""A band's peer ``i`` has the link 198.18.(20 + i).0/24 to the relay namespace: the relay's
end is .1, the peer's .2."""


@dataclass
class BandTopology:
    """A band across namespaces: one per peer, each with one veth link to a relay namespace.

    ```
     ns peer 0  198.18.20.2 ── veth ── 198.18.20.1 ┐
     ns peer 1  198.18.21.2 ── veth ── 198.18.21.1 ├ ns R: every pair's relay (no IP forwarding)
     ...                                           ┘
    ```
    No packet crosses from one peer to another except through a relay in R."""

    ns_relay: str
    ns_peers: list[str]
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    @staticmethod
    def peer_address(i: int) -> str:
        return check_address(f"198.18.{BAND_SUBNET_BASE + i}.2")

    @staticmethod
    def relay_address(i: int) -> str:
        """The relay namespace's address on peer ``i``'s link: where peer ``i`` sends."""
        return check_address(f"198.18.{BAND_SUBNET_BASE + i}.1")

    @property
    def namespaces(self) -> list[str]:
        return [self.ns_relay, *self.ns_peers]


@contextmanager
def band_topology(peers: int) -> Iterator[BandTopology]:
    """Create a relay namespace and ``peers`` peer namespaces linked to it; remove them all on exit
    (after stopping what was started in them: ``BandTopology.processes``)."""
    reason = netns_unavailable()
    if reason:
        raise NetnsError(reason)
    if not 2 <= peers <= 8:
        raise ValueError(f"a band has 2..8 peers, not {peers}")
    suffix = _suffix(None)
    topo = BandTopology(f"{NAME_PREFIX}{suffix}-r", [f"{NAME_PREFIX}{suffix}-p{i}" for i in range(peers)])
    created: list[str] = []
    try:
        for ns in topo.namespaces:
            _add_namespace(ns, created)
        _run(["ip", "netns", "exec", topo.ns_relay, "sysctl", "-qw", "net.ipv4.ip_forward=0"], check=False)
        for i, ns in enumerate(topo.ns_peers):
            _add_link(
                ns, f"n{suffix}p{i}", topo.peer_address(i), topo.ns_relay, f"n{suffix}r{i}", topo.relay_address(i)
            )
        yield topo
    finally:
        for p in topo.processes:
            _stop(p)
        for ns in created:
            _run(["ip", "netns", "del", ns], check=False)


class NetnsBackend(Backend):
    """Namespaces A, R (relay), B from ``nmp_peer.scenarios.backends.netns.netns_topology``; needs root."""

    name = "netns"

    def __init__(self, out: Path, safety_s: float) -> None:
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
