"""A band of N peers through impairment relays on loopback, each link its own network.

```
      anna ◄──► relay(anna, ben) ◄──► ben          one relay per pair of peers (N (N - 1) / 2),
        ▲  ◄──► relay(anna, chloe) ◄──► chloe ▲    each direction of it one *link* with its own
        └────── relay(ben, chloe) ─────────────┘    impairment (seeded), its own ground-truth log
```

Each peer is an ``nmp-peer band`` process, the relays run in this one (real UDP
sockets on 127.0.0.1, real files in and out): every peer sends its file (a test tone
of its own by default) to the others, each waits until it hears all of them, and the
run ends when every listener has played every stream to its end (its status line
says so); then each gets SIGTERM and prints its JSON summary. Then, per listener and per remote:
its counters, latency and round trip, held against the relay's log of that link:

* ``lost`` equals the relay's drops after the first packet it delivered (before it, the
  receiver never knew the stream); ``received`` its deliveries from there on, and
  ``duplicate`` its duplicates: the streams ended (end-of-stream notices), so every slot
  up to the end was played;
* a clean link (nothing dropped, delayed or duplicated) loses nothing, and conceals
  only the slots its receiver counted late or dry (a busy machine's scheduling);
* where the receiver counted late packets (or a stall paused or resynced the stream),
  a slot may be booked late instead of lost or back: ``lost`` is then the relay's drops
  to within the late count.

``run_band`` returns the report (``report.json`` in the output folder, with each
listener's mix and each link's relay log).
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.audio_io import read_audio, write_audio
from nmp_peer.live.transport import Endpoint
from nmp_peer.netsim.impair import Impairment
from nmp_peer.netsim.relay import Relay
from nmp_peer.netsim.relaylog import LOST_ACTIONS, read_log
from nmp_peer.proto.wire import seq_delta
from nmp_peer.scenarios.backends.netns import BandTopology, band_topology

NAMES = ("anna", "ben", "chloe", "dan", "eve", "finn", "gus", "hana")
TONES_HZ = (220.0, 277.2, 349.2, 440.0, 523.3, 659.3, 784.0, 987.8)
"""Each peer's test tone: far enough apart to tell them apart in a mix by correlation."""
TONE_AMPLITUDE = 0.2


def tone(freq_hz: float, seconds: float, amplitude: float = TONE_AMPLITUDE) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = amplitude * np.sin(2 * np.pi * freq_hz * t)
    return (np.round(x * 32767) / 32767).astype(np.float32)[:, None]


LEVEL_WINDOW_S = 0.5


def tone_level(x: np.ndarray, freq_hz: float) -> float:
    """The amplitude of ``freq_hz`` in ``x`` (mono or the channels' mean) while it plays: the
    90th percentile over half-second windows of the part of ``x`` that is not silent, each
    window's amplitude by a Hann-weighted correlation with a complex exponential.

    By windows, because the peers start and end at different moments: a tone heard for
    most of the mix keeps its level, however long the others play without it; Hann, so
    that the other peers' tones (57 Hz or more away) leak nothing measurable into it."""
    mono = x.mean(axis=1) if x.ndim == 2 else x
    live = np.flatnonzero(np.abs(mono) > 1e-4)
    n = round(LEVEL_WINDOW_S * SAMPLE_RATE)
    if len(live) < n:
        return 0.0
    seg = mono[live[0] : live[-1] + 1].astype(np.float64)
    w = np.hanning(n)
    kernel = w * np.exp(-2j * np.pi * freq_hz * np.arange(n) / SAMPLE_RATE)
    levels = [2.0 * abs(np.dot(seg[i : i + n], kernel)) / w.sum() for i in range(0, len(seg) - n + 1, n // 2)]
    return float(np.percentile(levels, 90))


@dataclass
class BandPlan:
    outdir: Path
    names: list[str]
    inputs: dict[str, Path] = field(default_factory=dict)
    """Each peer's input file; a peer without one sends its test tone (``TONES_HZ``)."""
    links: dict[tuple[str, str], Impairment | None] = field(default_factory=dict)
    """(sender, receiver): the impairment of that direction; absent: clean."""
    seconds: float = 10.0
    concealer: str = "lpc"
    config: str | None = "wan"
    key: bytes | None = None
    codec: str = "pcm16"
    """What every peer sends: pcm16 or opus (the config's [opus] settings)."""
    timeout_s: float = 120.0
    network: str = "loopback"
    """Where the band plays: ``loopback`` (127.0.0.1) or ``netns`` (a namespace per peer)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def link_truth(records: list[dict[str, Any]], direction: str) -> dict[str, Any]:
    """What the receiver of one relay direction must have counted (a stream that ended): from the
    datagrams the relay routed (not those it dropped before it knew side A, ``no-peer``)."""
    mine = [r for r in records if r["dir"] == direction and r["index"] >= 0 and r["seq"] >= 0 and not r.get("end")]
    first = next((r for r in mine if r["action"] not in LOST_ACTIONS), None)
    out = {"relay_packets": len(mine), "relay_lost": sum(r["action"] in LOST_ACTIONS for r in mine)}
    if first is None:
        return out | {"lost": 0, "received": 0, "duplicate": 0, "delayed": 0}
    same = [r for r in mine if r["stream_id"] == first["stream_id"]]
    pos = [seq_delta(r["seq"], first["seq"]) for r in same]
    lost = sum(r["action"] in LOST_ACTIONS and p > 0 for r, p in zip(same, pos, strict=True))
    got = sum(r["action"] not in LOST_ACTIONS and p >= 0 for r, p in zip(same, pos, strict=True))
    dups = sum(r["action"] == "duplicate" and p >= 0 for r, p in zip(same, pos, strict=True))
    delayed = sum(max(r["delays_ms"], default=0.0) > 0.0 for r in same if r["action"] not in LOST_ACTIONS)
    return out | {
        "lost": lost,
        "received": got,
        "duplicate": dups,
        "delayed": delayed,
        "streams": len({r["stream_id"] for r in mine}),
        "mean_datagram_bytes": round(float(np.mean([r["bytes"] for r in same])), 1),
        "kbit_s": stream_kbit_s(float(np.mean([r["bytes"] for r in same]))),
    }


IP_UDP_BYTES = 28
"""An IPv4 and a UDP header around every datagram."""


def stream_kbit_s(datagram_bytes: float) -> float:
    """One stream's rate on the wire: a datagram of this size (plus IPv4 and UDP) per 512-sample packet."""
    return round((datagram_bytes + IP_UDP_BYTES) * 8 * SAMPLE_RATE / BLOCK_FRAMES / 1000.0, 1)


PEER_PORT = 50000
RELAY_PORT_BASE = 50100
"""Across namespaces: every peer listens on its own address's ``PEER_PORT``; pair ``k``'s
relay on ``RELAY_PORT_BASE + k`` of every address of the relay namespace."""


@dataclass
class _RelaySpec:
    """One pair's relay: it forwards to ``a`` (which starts first); ``b`` is its side A."""

    a: str
    b: str
    listen: Endpoint
    forward: Endpoint
    b_to_a: Impairment | None
    a_to_b: Impairment | None
    log: Path


class _LoopbackNet:
    """Every peer and relay on 127.0.0.1; the relays run in this process."""

    name = "loopback"

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.ports = {n: _free_port() for n in names}
        self._relays: dict[tuple[str, str], Relay] = {}

    def listen(self, name: str) -> Endpoint:
        return Endpoint("127.0.0.1", self.ports[name])

    def relay_spec(self, k: int, a: str, b: str) -> tuple[Endpoint, Endpoint]:
        return Endpoint("127.0.0.1", 0), self.listen(a)

    async def start_relays(self, specs: list[_RelaySpec]) -> dict[tuple[str, str], Endpoint]:
        """Start the relays; where each listener sends to reach each remote."""
        via: dict[tuple[str, str], Endpoint] = {}
        for spec in specs:
            relay = Relay(spec.listen, spec.forward, spec.b_to_a, spec.a_to_b, log=spec.log)
            await relay.start()
            self._relays[(spec.a, spec.b)] = relay
            host, port = relay.address
            via[(spec.a, spec.b)] = via[(spec.b, spec.a)] = Endpoint(host, port)
        return via

    def peer_prefix(self, name: str) -> list[str]:
        return []

    async def stop_relays(self) -> dict[tuple[str, str], dict[str, Any]]:
        out = {}
        for key, relay in self._relays.items():
            relay.close()
            out[key] = relay.summary()
        return out

    def describe(self) -> dict[str, Any]:
        return {"network": self.name}


class _NamespaceNet:
    """Each peer in a network namespace of its own, every relay in one more (``band_topology``),
    run there by one ``python -m nmp_peer.scenarios.band_relays`` process."""

    name = "netns"

    def __init__(self, names: list[str], topo: BandTopology, out: Path) -> None:
        self.names = names
        self.topo = topo
        self.out = out
        self._process: subprocess.Popen[str] | None = None
        self._keys: list[tuple[str, str]] = []

    def listen(self, name: str) -> Endpoint:
        return Endpoint(self.topo.peer_address(self.names.index(name)), PEER_PORT)

    def relay_spec(self, k: int, a: str, b: str) -> tuple[Endpoint, Endpoint]:
        return Endpoint("0.0.0.0", RELAY_PORT_BASE + k), self.listen(a)

    async def start_relays(self, specs: list[_RelaySpec]) -> dict[tuple[str, str], Endpoint]:
        spec_path = self.out / "relays.pickle"
        spec_path.write_bytes(pickle.dumps(specs))
        self._keys = [(spec.a, spec.b) for spec in specs]
        self._process = subprocess.Popen(
            ["ip", "netns", "exec", self.topo.ns_relay, sys.executable, "-m", "nmp_peer.scenarios.band_relays"]
            + [str(spec_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=(self.out / "relays.stderr").open("w"),
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.topo.processes.append(self._process)
        assert self._process.stdout is not None
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, self._process.stdout.readline)
        if line.strip() != "ready":
            raise RuntimeError(f"the relays did not start: {(self.out / 'relays.stderr').read_text().strip()}")
        via: dict[tuple[str, str], Endpoint] = {}
        for spec in specs:  # each peer sends to the relay namespace's address on its own link
            port = spec.listen.port
            via[(spec.a, spec.b)] = Endpoint(self.topo.relay_address(self.names.index(spec.a)), port)
            via[(spec.b, spec.a)] = Endpoint(self.topo.relay_address(self.names.index(spec.b)), port)
        return via

    def peer_prefix(self, name: str) -> list[str]:
        return ["ip", "netns", "exec", self.topo.ns_peers[self.names.index(name)]]

    async def stop_relays(self) -> dict[tuple[str, str], dict[str, Any]]:
        if self._process is None:
            return {}
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._process.wait, 30)
        summaries = json.loads((self.out / "relays.json").read_text(encoding="utf-8"))
        return {key: summary for key, summary in zip(self._keys, summaries, strict=True)}

    def describe(self) -> dict[str, Any]:
        return {"network": self.name, "namespaces": self.topo.namespaces}


async def run_band(plan: BandPlan) -> dict[str, Any]:
    """The band on ``plan.network``: loopback, or network namespaces (root and ``ip netns``)."""
    if plan.network == "netns":
        with band_topology(len(plan.names)) as topo:
            return await _run_band(plan, _NamespaceNet(plan.names, topo, plan.outdir))
    if plan.network != "loopback":
        raise ValueError(f"a band runs on loopback or netns, not {plan.network!r}")
    return await _run_band(plan, _LoopbackNet(plan.names))


async def _run_band(plan: BandPlan, net: _LoopbackNet | _NamespaceNet) -> dict[str, Any]:
    out = plan.outdir
    out.mkdir(parents=True, exist_ok=True)
    names = plan.names
    inputs: dict[str, Path] = {}
    for i, n in enumerate(names):
        if n in plan.inputs:
            inputs[n] = plan.inputs[n]
        else:
            inputs[n] = out / f"{n}-in.wav"
            write_audio(inputs[n], tone(TONES_HZ[i], plan.seconds))
    # The relay forwards to the peer that starts first (a): the other (b) is side A,
    # learned from its first datagram, so nothing is forwarded to a port not yet bound.
    specs = []
    for k, (a, b) in enumerate(combinations(names, 2)):
        listen, forward = net.relay_spec(k, a, b)
        specs.append(
            _RelaySpec(
                a, b, listen, forward, plan.links.get((b, a)), plan.links.get((a, b)), out / f"relay-{a}-{b}.jsonl"
            )
        )
    # (listener, remote): where the listener sends to (and hears) the remote: the pair's relay.
    via = await net.start_relays(specs)
    key_path: Path | None = None
    if plan.key is not None:
        key_path = out / "band.key"
        key_path.write_bytes(plan.key.hex().encode() + b"\n")
    peers: dict[str, BandProcess] = {}
    started = time.monotonic()
    try:
        for n in names:
            listen = net.listen(n)
            args = ["--listen", f"{listen.host}:{listen.port}", "--input", str(inputs[n])]
            args += ["--output", str(out / f"{n}-hears.wav")]
            for m in names:
                if m != n:
                    host, port = via[(n, m)].host, via[(n, m)].port
                    args += ["--peer", f"{m}={host}:{port}", "--pan", f"{m}={_pan(names.index(m), len(names))}"]
            args += ["--concealer", plan.concealer, "--codec", plan.codec, "--stats", str(out / f"{n}.json")]
            args += ["--duration", str(plan.timeout_s + 30)]
            if plan.config is not None:
                args += ["--config", plan.config]
            if key_path is not None:
                args += ["--key-file", str(key_path)]
            peers[n] = BandProcess(args, out / f"{n}.stderr", prefix=net.peer_prefix(n))
            # The next one starts once this one listens (its first status line comes after it bound
            # its socket): a relay never forwards to a port not yet bound.
            while (
                not peers[n].lines and peers[n].process.poll() is None and time.monotonic() - started < plan.timeout_s
            ):
                await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + plan.timeout_s
        timed_out = False
        # Until every listener has played every stream to its end (the status line says "ended").
        while not all(p.ended(len(names) - 1) for p in peers.values()):
            if loop.time() > deadline or any(p.process.poll() is not None for p in peers.values()):
                timed_out = True
                break
            await asyncio.sleep(0.1)
    finally:
        summaries: dict[str, dict[str, Any]] = {}
        codes: dict[str, int] = {}
        loop = asyncio.get_running_loop()
        for n, p in peers.items():
            codes[n], summaries[n] = await loop.run_in_executor(None, p.stop)
        relay_summaries = await net.stop_relays()
    report = _report(
        plan,
        names,
        summaries,
        relay_summaries,
        {k: read_log(out / f"relay-{k[0]}-{k[1]}.jsonl") for k in relay_summaries},
    )
    report.update(net.describe())
    report["timed_out"] = timed_out
    report["exit_codes"] = codes
    report["ok"] = report["ok"] and all(c == 0 for c in codes.values())
    report["wall_s"] = round(time.monotonic() - started, 2)
    report["ok"] = report["ok"] and not timed_out
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


class BandProcess:
    """One ``nmp-peer band`` subprocess; its status lines (stderr) are read as they come."""

    def __init__(self, args: list[str], stderr_path: Path, prefix: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "nmp_peer.cli", "band", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.stderr_path = stderr_path
        self.lines: list[str] = []
        self._out: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stderr, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stdout, self._out), daemon=True),
        ]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def ended(self, remotes: int) -> bool:
        """The last status line says every remote's stream was played to its end."""
        return bool(self.lines) and self.lines[-1].count(" ended") == remotes

    def stop(self) -> tuple[int, dict[str, Any]]:
        """SIGTERM (unless it ended), then its exit code and JSON summary ({} if none)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        for t in self._readers:
            t.join(5)
        self.stderr_path.write_text("".join(self.lines), encoding="utf-8")
        try:
            return code, json.loads("".join(self._out))
        except json.JSONDecodeError:
            return code, {}


def describe(imp: Impairment | None) -> str:
    """``loss 2 % (bernoulli), jitter 1 ms``: an impairment in a table cell."""
    if imp is None:
        return "clean"
    parts = []
    p = getattr(imp.loss, "p", None)
    if p is not None:
        parts.append(f"loss {100 * p:g} % ({type(imp.loss).__name__.removesuffix('Loss').lower()})")
    elif imp.loss is not None:
        parts.append(repr(imp.loss))
    for name, unit in (("delay_ms", "delay"), ("jitter_ms", "jitter")):
        if getattr(imp, name, 0.0):
            parts.append(f"{unit} {getattr(imp, name):g} ms")
    for name in ("reorder", "duplicate"):
        if getattr(imp, name, 0.0):
            parts.append(f"{name} {100 * getattr(imp, name):g} %")
    return ", ".join(parts) or "no impairment"


def _pan(index: int, n: int) -> float:
    return 0.0 if n <= 2 else round(-0.8 + 1.6 * index / (n - 1), 2)


def _report(
    plan: BandPlan,
    names: list[str],
    summaries: dict[str, dict[str, Any]],
    relays: dict[tuple[str, str], dict[str, Any]],
    logs: dict[tuple[str, str], list[dict[str, Any]]],
) -> dict[str, Any]:
    listeners = []
    all_ok = True
    for n in names:
        heard, _ = read_audio(plan.outdir / f"{n}-hears.wav", channels=2)
        rows = []
        for remote in summaries[n]["peers"]:
            m = remote["name"]
            pair = (n, m) if (n, m) in relays else (m, n)
            direction = "b2a" if pair == (m, n) else "a2b"  # m sends to n (side A is a pair's second)
            truth = link_truth(logs[pair], direction)
            impaired = plan.links.get((m, n)) is not None
            # A receiver the machine made late (late packets, a stall that paused or resynced the
            # stream) may book a slot as late instead of lost or the other way round: then each
            # late packet may move the lost count by one.
            late = remote["packets_late"]
            hiccups = late + remote.get("resyncs", 0) + remote.get("pauses", 0)
            lost_ok = (
                remote["packets_lost"] == truth["lost"]
                if hiccups == 0
                else abs(remote["packets_lost"] - truth["lost"]) <= late + remote.get("resyncs", 0)
            )
            checks = {
                "lost = relay drops" if hiccups == 0 else "lost = relay drops, ± late": lost_ok,
                "received = relay deliveries": remote["packets_received"] == truth["received"],
                "duplicates = relay duplicates": remote["packets_duplicate"] == truth["duplicate"],
                "stream ended": remote["stream_ends"] >= 1,
            }
            if not impaired:
                checks["clean link: nothing lost"] = remote["packets_lost"] == 0
                checks["clean link: concealed only where late or dry"] = remote[
                    "packets_concealed"
                ] <= late + remote.get("underruns", 0)
            ok = all(checks.values())
            all_ok &= ok
            row = {
                "from": m,
                "impairment": describe(plan.links[(m, n)]) if impaired else None,
                "level": round(tone_level(heard, TONES_HZ[names.index(m)]), 4) if m not in plan.inputs else None,
                "truth": truth,
                "checks": checks,
                "ok": ok,
            }
            for k in (
                "packets_received",
                "underruns",
                "resyncs",
                "packets_lost",
                "packets_late",
                "packets_duplicate",
                "packets_concealed",
                "concealer_partial",
                "concealer_misses",
                "latency_ms",
                "rtt_ms",
                "rtt_avg_ms",
                "one_way_ms",
                "jitter_ms",
            ):
                row[k] = remote.get(k)
            rows.append(row)
        own = round(tone_level(heard, TONES_HZ[names.index(n)]), 4) if n not in plan.inputs else None
        received_kbit_s = round(sum(r["truth"].get("kbit_s", 0.0) for r in rows), 1)
        listeners.append(
            {
                "listener": n,
                "own_tone_level": own,
                "download_kbit_s": received_kbit_s,
                "remotes": rows,
                "summary": summaries[n],
            }
        )
    for listener in listeners:  # what each peer sends: its stream, once to each of the others
        n = listener["listener"]
        listener["upload_kbit_s"] = round(
            sum(r["truth"].get("kbit_s", 0.0) for o in listeners for r in o["remotes"] if r["from"] == n), 1
        )
    return {
        "names": names,
        "seconds": plan.seconds,
        "concealer": plan.concealer,
        "codec": plan.codec,
        "listeners": listeners,
        "relays": {f"{a}-{b}": s for (a, b), s in relays.items()},
        "ok": all_ok,
    }


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """A table per listener: each remote's link, counters, latency and round trip, and the checks."""
    lines = [
        f"# A band of {len(report['names'])} on {report.get('network', 'loopback')} ({report['seconds']:g} s tones, "
        f"{report['concealer']}, {report.get('codec', 'pcm16')})",
        "",
        f"Counters agree with the relays' logs: **{report['ok']}** (wall {report.get('wall_s')} s).",
        "",
    ]
    for listener in report["listeners"]:
        lines += [
            f"## {listener['listener']} hears",
            "",
            f"Own tone in the mix: {listener['own_tone_level']} (it does not hear itself). "
            f"Sends {listener['upload_kbit_s']} kbit/s, receives {listener['download_kbit_s']} kbit/s "
            "(audio datagrams with their IPv4 and UDP headers, from the relays' logs). "
            f"Output ticks a packet or more late: {listener['summary'].get('output_ticks_late')} "
            f"(latest {listener['summary'].get('output_late_max_ms')} ms after its time).",
            "",
            "| from | impairment | tone | received | lost (relay) | late | concealed | partial | latency ms "
            "| rtt ms | one-way ms | ok |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in listener["remotes"]:
            lines.append(
                f"| {r['from']} | {r['impairment'] or 'clean'} | {r['level']} | {r['packets_received']} "
                f"| {r['packets_lost']} ({r['truth']['lost']}) | {r['packets_late']} | {r['packets_concealed']} "
                f"| {r['concealer_partial']} | {r['latency_ms']} | {r['rtt_avg_ms']} | {r['one_way_ms']} | {r['ok']} |"
            )
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
