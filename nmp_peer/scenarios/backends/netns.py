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
``netns_unavailable()`` says why not when they are missing. ``run_netns_jam`` plays a
jam across them; ``run_loopback_jam`` runs the same three processes on 127.0.0.1 for
machines without namespaces; ``loss_accounting`` sets the peers' counters next to the
relay's log.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        r = _run(["ip", "link", "add", veth, "netns", probe, "type", "veth", "peer", "name", veth + "q", "netns", probe],
                 check=False)
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
        r = _run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", veth, "root", "tbf",
                  "rate", "1mbit", "burst", "4kb", "latency", "50ms"], check=False)
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
        self.exec(self.ns_relay, "tc", "qdisc", "add", "dev", self.veth_rb, "root", "tbf",
                  "rate", f"{rate_kbps:g}kbit", "burst", str(burst_bytes), "latency", f"{latency_ms:g}ms")

    def qdisc_stats(self) -> dict[str, int]:
        """Packets sent and dropped by the root qdisc of the relay's link toward B."""
        out = self.exec(self.ns_relay, "tc", "-s", "qdisc", "show", "dev", self.veth_rb).stdout
        m = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)", out)
        if m is None:
            raise NetnsError(f"cannot read qdisc counters of {self.veth_rb}: {out.strip()!r}")
        return {"bytes": int(m.group(1)), "packets": int(m.group(2)), "dropped": int(m.group(3)),
                "overlimits": int(m.group(4))}


def _stop(p: subprocess.Popen[str]) -> None:
    if p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


@contextmanager
def netns_topology(tag: str | None = None) -> Iterator[Topology]:
    """Create the A / relay / B namespaces and their links; remove them all on exit."""
    reason = netns_unavailable()
    if reason:
        raise NetnsError(reason)
    # The pid and a random part: other processes (in other pid namespaces too) may run this at once.
    suffix = f"{os.getpid() % 100000}{secrets.token_hex(2)}{tag or ''}"
    names = [f"{NAME_PREFIX}{suffix}-{role}" for role in ("a", "r", "b")]
    veths = [f"n{suffix}{role}"[:15] for role in ("a", "ra", "rb", "b")]
    if len(set(veths)) != 4:
        raise NetnsError(f"tag {tag!r} is too long for unique interface names")
    topo = Topology(*names, *veths)  # type: ignore[arg-type]
    created: list[str] = []
    try:
        for ns in names:
            _run(["ip", "netns", "add", ns])
            created.append(ns)
            # No IPv6 (no router solicitations through the rate limit), no forwarding in R.
            topo.exec(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                      check=False)
            topo.exec(ns, "ip", "link", "set", "lo", "up")
        topo.exec(topo.ns_relay, "sysctl", "-qw", "net.ipv4.ip_forward=0", check=False)
        links = (
            (topo.ns_a, topo.veth_a, A_ADDR, topo.ns_relay, topo.veth_ra, RELAY_A_ADDR),
            (topo.ns_b, topo.veth_b, B_ADDR, topo.ns_relay, topo.veth_rb, RELAY_B_ADDR),
        )
        for ns1, dev1, addr1, ns2, dev2, addr2 in links:
            _run(["ip", "link", "add", dev1, "netns", ns1, "type", "veth", "peer", "name", dev2, "netns", ns2])
            for ns, dev, addr in ((ns1, dev1, addr1), (ns2, dev2, addr2)):
                topo.exec(ns, "ip", "addr", "add", f"{check_address(addr)}/{PREFIX_LEN}", "dev", dev)
                topo.exec(ns, "ip", "link", "set", dev, "up")
        yield topo
    finally:
        for p in topo.processes:
            _stop(p)
        for ns in created:  # deleting a namespace deletes the veth ends inside it
            _run(["ip", "netns", "del", ns], check=False)


@dataclass
class RelayOptions:
    """Options of ``nmp-peer impair`` for the relay between the namespaces."""

    loss: float = 0.0
    loss_model: str = "bernoulli"
    burst: float = 2.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    jitter_dist: str = "normal"
    reorder: float = 0.0
    duplicate: float = 0.0
    rate_kbps: float | None = None
    outage: tuple[float, float] | None = None
    seed: int = 0
    both_ways: bool = True

    def args(self) -> list[str]:
        out = ["--loss", f"{self.loss:g}", "--loss-model", self.loss_model, "--burst", f"{self.burst:g}",
               "--delay-ms", f"{self.delay_ms:g}", "--jitter-ms", f"{self.jitter_ms:g}", "--jitter-dist", self.jitter_dist,
               "--reorder", f"{self.reorder:g}", "--duplicate", f"{self.duplicate:g}", "--seed", str(self.seed),
               "--both-ways" if self.both_ways else "--one-way"]
        if self.rate_kbps is not None:
            out += ["--rate-kbps", f"{self.rate_kbps:g}"]
        if self.outage is not None:
            out += ["--outage", f"{self.outage[0]:g}:{self.outage[1]:g}"]
        return out


def _summary(name: str, p: subprocess.Popen[str], out: str, err: str) -> dict[str, Any]:
    if p.returncode != 0:
        raise NetnsError(f"{name} exited with {p.returncode}: {err.strip()[-2000:]}")
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        raise NetnsError(f"{name} printed no JSON summary: {out[-500:]!r} {err.strip()[-1000:]}") from None


@dataclass(frozen=True)
class _Layout:
    """Where each party of a relayed jam listens and whom it talks to."""

    relay_listen: str
    relay_forward: str
    a_listen: str
    a_relay_host: str
    """The relay's address as A reaches it (the port is the relay's)."""
    b_listen: str
    b_relay_host: str


Spawn = Callable[..., "subprocess.Popen[str]"]
_STATUS_RX = re.compile(r"\brx (\d+) ")
"""``packets_received`` in a jam's live status line."""


def _jam_through_relay(
    spawn_relay: Spawn,
    spawn_a: Spawn,
    spawn_b: Spawn,
    layout: _Layout,
    clip_a: Path,
    clip_b: Path,
    out: Path,
    concealer: str,
    relay: RelayOptions,
    duration_s: float,
    config: str | None,
    startup_s: float,
    a_extra_s: float,
    timeout_s: float,
) -> dict[str, Any]:
    for hostport in (layout.relay_forward, f"{layout.a_relay_host}:0", f"{layout.b_relay_host}:0"):
        check_address(hostport.rpartition(":")[0])
    python = [sys.executable, "-m"]
    pipes: dict[str, Any] = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    jam_common = ["--concealer", concealer] + (["--config", config] if config else [])
    relay_log, relay_summary = out / "relay.jsonl", out / "relay.json"
    a_hears, b_hears = out / "a_hears.wav", out / "b_hears.wav"
    deadline = time.monotonic() + timeout_s

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    relay_p = spawn_relay([
        *python, "nmp_peer.cli_net", "impair", "--listen", layout.relay_listen, "--forward", layout.relay_forward,
        *relay.args(), "--log", str(relay_log), "--summary", str(relay_summary),
    ], **pipes)
    line = relay_p.stderr.readline()
    m = re.search(r"relaying \S+:(\d+) ", line)
    if m is None:
        relay_p.wait(5)
        raise NetnsError(f"relay did not start: {line}{relay_p.stderr.read().strip()[-1000:]}")
    relay_port = int(m.group(1))
    # Both peers run until they are stopped (SIGTERM, after which each prints its summary);
    # --duration is only a safety net. The timeline waits for what it needs, so a busy
    # machine that takes seconds to start a process changes when things happen, not what.
    safety = ["--duration", f"{timeout_s + 10.0:g}"]
    b = spawn_b([
        *python, "nmp_peer.cli", "jam", "--listen", layout.b_listen, "--peer", f"{layout.b_relay_host}:{relay_port}",
        "--input", str(clip_b), "--output", str(b_hears), *safety, *jam_common,
    ], **pipes)
    b_lines: list[str] = []
    b_reader = threading.Thread(target=lambda: b_lines.extend(iter(b.stderr.readline, "")), daemon=True)
    b_reader.start()

    def wait_for(what: str, condition: Callable[[], bool], limit_s: float) -> None:
        until = min(deadline, time.monotonic() + limit_s)
        while not condition():
            if b.poll() is not None or time.monotonic() > until:
                raise NetnsError(f"{what}: not within {limit_s:g} s; peer B said: {''.join(b_lines)[-1000:]}")
            time.sleep(0.05)

    def b_received() -> int:
        counts = [int(m.group(1)) for line in list(b_lines) if (m := _STATUS_RX.search(line))]
        return counts[-1] if counts else 0

    a = None
    try:
        # B's live status line: it is up and sending to the relay.
        wait_for("peer B did not start", lambda: any("depth" in line for line in list(b_lines)), startup_s)
        a = spawn_a([
            *python, "nmp_peer.cli", "jam", "--listen", layout.a_listen, "--peer", f"{layout.a_relay_host}:{relay_port}",
            "--input", str(clip_a), "--output", str(a_hears), *safety, "--quiet", *jam_common,
        ], **pipes)
        wait_for("peer A not heard by B", lambda: b_received() > 0 or a.poll() is not None, startup_s)
        time.sleep(duration_s)
        b.send_signal(signal.SIGTERM)
        b.wait(timeout=left())
        b_reader.join(left())
        b_out, b_err = b.stdout.read(), "".join(b_lines)
        time.sleep(a_extra_s)
        a.send_signal(signal.SIGTERM)
        a_out, a_err = a.communicate(timeout=left())
        relay_p.send_signal(signal.SIGTERM)
        _, r_err = relay_p.communicate(timeout=min(10.0, left()))
    except subprocess.TimeoutExpired:
        raise NetnsError(f"the relayed jam did not finish within {timeout_s:g} s") from None
    summaries = {"a": _summary("peer A", a, a_out, a_err), "b": _summary("peer B", b, b_out, b_err)}
    if relay_p.returncode != 0:
        raise NetnsError(f"relay exited with {relay_p.returncode}: {r_err.strip()[-2000:]}")
    return {
        **summaries,
        "relay": json.loads(relay_summary.read_text()),
        "relay_log": str(relay_log),
        "a_hears": str(a_hears),
        "b_hears": str(b_hears),
    }


def _prepare(clip_a: Any, clip_b: Any, out_dir: Any) -> tuple[Path, Path, Path]:
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return Path(clip_a).resolve(), Path(clip_b).resolve(), out


def run_netns_jam(
    clip_a: str | os.PathLike[str],
    clip_b: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    concealer: str = "repeat",
    relay: RelayOptions | None = None,
    duration_s: float = 4.0,
    *,
    tbf_kbps: float | None = None,
    config: str | None = None,
    startup_s: float = 30.0,
    a_extra_s: float = 1.0,
    timeout_s: float = 90.0,
) -> dict[str, Any]:
    """Jam between namespaces A and B through the relay in R; return what everyone reported.

    The relay starts first, then B; once B is up (its live status line), A. Once B has
    heard A, the two play together for ``duration_s``; then B is stopped (SIGTERM), A
    ``a_extra_s`` later, then the relay: B stops while A is still sending, and A outlives
    B. ``startup_s`` bounds how long each peer may take to come up and be heard (a busy
    machine can take several seconds to start a process); it does not change the
    timeline. With a ``clip_a`` longer than ``duration_s + a_extra_s``, every slot B
    played had its packet offered to the relay, which is what
    ``relay.receiver_loss_bounds`` and ``loss_accounting`` assume.

    Returns the JSON summaries ``a``, ``b`` and ``relay``, the ``relay_log`` path, the
    WAVs ``a_hears`` and ``b_hears``, ``tbf`` (the qdisc counters of the relay's link
    toward B, when ``tbf_kbps`` is given) and the ``namespaces`` used (all deleted
    again on return).
    """
    clip_a, clip_b, out = _prepare(clip_a, clip_b, out_dir)
    layout = _Layout(
        relay_listen=f"0.0.0.0:{RELAY_PORT}", relay_forward=f"{B_ADDR}:{PEER_PORT}",
        a_listen=f"{A_ADDR}:{PEER_PORT}", a_relay_host=RELAY_A_ADDR,
        b_listen=f"{B_ADDR}:{PEER_PORT}", b_relay_host=RELAY_B_ADDR,
    )
    with netns_topology() as topo:
        if tbf_kbps is not None:
            topo.add_tbf(tbf_kbps)
        result = _jam_through_relay(
            lambda args, **kw: topo.spawn(topo.ns_relay, args, **kw),
            lambda args, **kw: topo.spawn(topo.ns_a, args, **kw),
            lambda args, **kw: topo.spawn(topo.ns_b, args, **kw),
            layout, clip_a, clip_b, out, concealer, relay or RelayOptions(), duration_s, config,
            startup_s, a_extra_s, timeout_s,
        )
        result["tbf"] = topo.qdisc_stats() if tbf_kbps is not None else None
        result["namespaces"] = list(topo.namespaces)
    return result


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_loopback_jam(
    clip_a: str | os.PathLike[str],
    clip_b: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    concealer: str = "repeat",
    relay: RelayOptions | None = None,
    duration_s: float = 4.0,
    *,
    config: str | None = None,
    startup_s: float = 30.0,
    a_extra_s: float = 1.0,
    timeout_s: float = 90.0,
) -> dict[str, Any]:
    """``run_netns_jam`` on 127.0.0.1 (no namespaces, no root): the same three processes, ports apart."""
    clip_a, clip_b, out = _prepare(clip_a, clip_b, out_dir)
    port_a, port_b = free_udp_port(), free_udp_port()
    layout = _Layout(
        relay_listen="127.0.0.1:0", relay_forward=f"127.0.0.1:{port_b}",
        a_listen=f"127.0.0.1:{port_a}", a_relay_host="127.0.0.1",
        b_listen=f"127.0.0.1:{port_b}", b_relay_host="127.0.0.1",
    )
    processes: list[subprocess.Popen[str]] = []

    def spawn(args: list[str], **kw: Any) -> subprocess.Popen[str]:
        p = subprocess.Popen(args, text=True, **kw)
        processes.append(p)
        return p

    try:
        return _jam_through_relay(spawn, spawn, spawn, layout, clip_a, clip_b, out, concealer,
                                  relay or RelayOptions(), duration_s, config, startup_s, a_extra_s, timeout_s)
    finally:
        for p in processes:
            _stop(p)


ARRIVAL_COUNTERS = (
    "packets_received", "packets_duplicate", "packets_foreign", "packets_malformed", "packets_replayed",
    "packets_rate_limited", "packets_oversized", "packets_unauthenticated", "end_notices",
)
"""A jam's counters that together count every datagram that reached it (those it lacks count 0)."""


def loss_accounting(result: dict[str, Any]) -> dict[str, Any]:
    """What the peers counted next to what the relay logged, for a ``run_*_jam`` result.

    ``b_lost`` must lie in [``relay_lost_low``, ``relay_lost_high``] (the relay's A→B
    drops that B could have counted, see ``relay.receiver_loss_bounds``), plus what a
    rate limit behind the relay dropped; A, which outlives B, must have received every
    datagram the relay sent it: ``a_arrived == relay_b2a_sent``; and the relay must have
    seen every packet A sent: ``relay_a2b_received == a_sent`` (audio: A's end-of-stream
    notices are not counted as sent).
    """
    from nmp_peer.netsim.relay import read_log, receiver_loss_bounds

    a, b, relay = result["a"], result["b"], result["relay"]
    lag = math.ceil(max(b["buffer_depth_packets"], b["target_depth_packets"])) + 2
    low, high = receiver_loss_bounds(read_log(result["relay_log"]), "a2b", lag)
    return {
        "b_lost": b["packets_lost"],
        "b_late": b["packets_late"],
        "relay_lost_low": low,
        "relay_lost_high": high,
        "lag_packets": lag,
        "a_sent": a["packets_sent"],
        "relay_a2b_received": relay["a2b"]["received"] - relay["a2b"].get("end_notices", 0),
        "a_arrived": sum(a.get(key, 0) for key in ARRIVAL_COUNTERS),
        "relay_b2a_sent": relay["b2a"]["copies_sent"],
        "a_received": a["packets_received"],
        "b_received": b["packets_received"],
    }
