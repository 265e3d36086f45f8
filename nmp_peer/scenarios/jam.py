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
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmp_peer.scenarios.backends.base import Backend, JamError, Party, PeerFiles
from nmp_peer.scenarios.backends.docker import DockerBackend
from nmp_peer.scenarios.spec import Scenario

STATUS_RX = re.compile(r"\brx (\d+) ")


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
    key_file: Path | None = None
    """Both peers run keyed (a handshake per session, AEAD on every packet) with this key."""


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
    key = backend.path(plan.key_file) if plan.key_file is not None else None
    files = {
        "a": PeerFiles(backend.path(plan.clip_a), backend.path(out / "a_hears.wav"), key),
        "b": PeerFiles(backend.path(plan.clip_b), backend.path(out / "b_hears.wav"), key),
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


__all__ = ["JamPlan", "run_jam"]
