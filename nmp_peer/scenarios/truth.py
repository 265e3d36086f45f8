"""The relay's per-packet log as ground truth for a receiver's counters.

``receiver_truth`` reads the relay's per-packet log and says what a receiver's
counters must be: bounds on lost, received and duplicate packets, the packets the
relay delayed (candidates for late), stream restarts and the slots a silent sender
leaves; ``check_counters`` holds a jam's summary against it. Pure functions of dicts
(no processes, no clocks).
"""

from __future__ import annotations

import math
from typing import Any

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.netsim.relaylog import LOST_ACTIONS
from nmp_peer.proto.wire import seq_delta

PACKET_MS = 1000.0 * BLOCK_FRAMES / SAMPLE_RATE


def receiver_truth(
    records: list[dict[str, Any]], direction: str, lag_packets: int, repin_after_ms: float | None = 500.0
) -> dict[str, Any]:
    """What a receiver of ``direction`` must have counted, from the relay's log.

    For a receiver that listened before the first packet reached the relay and stopped
    while its sender still sent (the timeline of ``nmp_peer.scenarios.jam``), over one
    stream or several. It starts at the first packet the relay
    delivered; a later stream (a restarted sender) is followed from its first delivered
    packet when keyed (``repin_after_ms`` None: a new session), else from its first
    delivered ``repin_after_ms`` after the old stream's last (the receive gate's re-pin);
    the ones before count as foreign. It played
    every slot of an earlier stream up to that stream's last packet, then let slots pass
    until the new stream took over: about the sender's silence, less what was buffered
    (``gap_slots``); a sender's silence is a pause, not a loss, so these slots are not
    counted lost (the receiver concealed the first of them, until the fade). The last stream
    was played up to ``U``, the last packet
    that reached the relay before the receiver's own last one, and at least to ``U -
    lag_packets``. Each ``*_low``/``*_high`` pair bounds a counter of the summary.
    """
    other = "b2a" if direction == "a2b" else "a2b"
    mine = [r for r in records if r["dir"] == direction and r["index"] >= 0 and r["seq"] >= 0 and not r.get("end")]
    heard = [r["t_ms"] for r in records if r["dir"] == other]
    end_ms = (max(heard) if heard else math.inf) + PACKET_MS
    out: dict[str, Any] = {
        "lost_low": 0,
        "lost_high": 0,
        "received_low": 0,
        "received_high": 0,
        "duplicate_low": 0,
        "duplicate_high": 0,
        "delayed_high": 0,
        "foreign": 0,
        "gap_slots_low": 0,
        "gap_slots_high": 0,
        "relay_lost": sum(r["action"] in LOST_ACTIONS for r in mine),
        "streams": [],
        "lag_packets": lag_packets,
    }
    first = next((r for r in mine if r["action"] not in LOST_ACTIONS), None)
    if first is None:
        return out
    order: list[int] = []
    for r in mine:
        if r["stream_id"] not in order:
            order.append(r["stream_id"])
    order = order[order.index(first["stream_id"]) :]
    prev_last: dict[str, Any] | None = None
    for k, sid in enumerate(order):
        same = [r for r in mine if r["stream_id"] == sid]
        delivered = [r for r in same if r["action"] not in LOST_ACTIONS]
        if k == 0:
            start = first
        else:
            assert prev_last is not None
            quiet_from = prev_last["t_ms"] + (repin_after_ms or 0.0)
            after = [r for r in delivered if repin_after_ms is None or r["t_ms"] >= quiet_from]
            if not after:  # never followed: every datagram of it was foreign
                out["foreign"] += len(delivered)
                continue
            start = after[0]
            out["foreign"] += len(delivered) - len(after)
        pos = {id(r): seq_delta(r["seq"], start["seq"]) for r in same}
        is_last = k == len(order) - 1
        if is_last:
            upper = max((pos[id(r)] for r in same if r["t_ms"] <= end_ms), default=0)
            lower = upper - lag_packets
        else:
            upper = lower = max(pos.values())
        lost = [pos[id(r)] for r in same if r["action"] in LOST_ACTIONS and pos[id(r)] > 0]
        got = [pos[id(r)] for r in delivered if pos[id(r)] >= 0]
        dups = [pos[id(r)] for r in same if r["action"] == "duplicate" and pos[id(r)] >= 0]
        delayed = [pos[id(r)] for r in delivered if pos[id(r)] >= 0 and max(r["delays_ms"], default=0.0) > 0.0]
        stream = {
            "stream_id": sid,
            "first_seq": same[0]["seq"],
            "start_seq": start["seq"],
            "packets": len(same),
            "relay_lost": sum(r["action"] in LOST_ACTIONS for r in same),
            "played_upto": upper,
            "first_t_ms": same[0]["t_ms"],
            "last_t_ms": same[-1]["t_ms"],
            "lost_positions": sorted(p for p in lost if p <= upper),
        }
        out["streams"].append(stream)
        for key, values in (("lost", lost), ("received", got), ("duplicate", dups)):
            out[f"{key}_low"] += sum(p <= lower for p in values)
            out[f"{key}_high"] += sum(p <= upper for p in values)
        out["delayed_high"] += sum(p <= upper for p in delayed)
        if prev_last is not None:
            gap = (start["t_ms"] - prev_last["t_ms"]) / PACKET_MS
            out["gap_slots_low"] += max(0, math.floor(gap) - lag_packets - 1)
            out["gap_slots_high"] += math.ceil(gap) + 1
        prev_last = same[-1]
    return out


ARRIVAL_COUNTERS = (
    "packets_received",
    "packets_duplicate",
    "packets_foreign",
    "packets_malformed",
    "packets_replayed",
    "packets_rate_limited",
    "packets_oversized",
    "packets_unauthenticated",
    "end_notices",
    "handshake_messages",
    "pings_answered",
    "pongs_received",
    "pongs_unmatched",
)
"""A jam's counters that together count every datagram that reached it (those it lacks count 0)."""


def lag_packets(summary: dict[str, Any]) -> int:
    """How many packets short of its last one a receiver may have stopped playing."""
    return math.ceil(max(summary.get("buffer_depth_packets", 0.0), summary.get("target_depth_packets", 0.0))) + 2


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "ok": bool(ok), "detail": detail}


def check_counters(result: dict[str, Any], records: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Peer B's counters against the relay's ground truth (A → B), and the parties' own books."""
    b, a = result["b"], result["a"]
    checks = []
    checks.append(
        _check(
            "clean exit",
            all(c == 0 for c in result.get("exit_codes", {}).values()),
            f"exit codes {result.get('exit_codes')} after SIGTERM, JSON summaries printed",
        )
    )
    if records is None:  # netem: counters only
        dropped = ((result.get("netem") or {}).get("qdisc") or {}).get("a") or {}
        limit = dropped.get("dropped")
        checks.append(
            _check(
                "lost ≤ netem drops",
                limit is None or b["packets_lost"] <= limit + b["packets_late"],
                f"B lost {b['packets_lost']}, netem dropped {limit} on A's egress",
            )
        )
        return {"truth": None, "checks": checks, "ok": all(c["ok"] for c in checks)}
    keyed = b.get("handshakes") is not None
    truth = receiver_truth(records, "a2b", lag_packets(b), None if keyed else 1000.0 * b.get("repin_after_s", 0.5))
    lost = b["packets_lost"]
    checks.append(
        _check(
            "lost = relay drops",
            truth["lost_low"] <= lost <= truth["lost_high"],
            f"B lost {lost}, relay implies {truth['lost_low']}..{truth['lost_high']}"
            + (
                f" (and {truth['gap_slots_low']}..{truth['gap_slots_high']} slots of sender silence, not lost)"
                if truth["gap_slots_high"]
                else ""
            ),
        )
    )
    checks.append(
        _check(
            "received = relay deliveries",
            truth["received_low"] <= b["packets_received"] <= truth["received_high"],
            f"B received {b['packets_received']}, relay delivered {truth['received_low']}..{truth['received_high']}",
        )
    )
    # Keyed, the replay window stops a network's duplicate before the jitter buffer: a copy
    # is a copy, whoever made it (counted replayed).
    dups = b["packets_duplicate"] + (b.get("packets_replayed", 0) if keyed else 0)
    checks.append(
        _check(
            "duplicates = relay duplicates",
            truth["duplicate_low"] <= dups <= truth["duplicate_high"],
            f"B duplicates {dups}{' (replayed, keyed)' if keyed else ''}, "
            f"relay {truth['duplicate_low']}..{truth['duplicate_high']}",
        )
    )
    # A loaded machine can make a packet late that the relay did not delay: the relay, the
    # sender and the receiver share its cores; allow a couple, and 2 % of what arrived.
    late_slack = 2 + int(0.02 * b["packets_received"])
    checks.append(
        _check(
            "late ≤ relay-delayed",
            b["packets_late"] <= truth["delayed_high"] + late_slack,
            f"B late {b['packets_late']}, relay delayed {truth['delayed_high']} (+{late_slack} for scheduling)",
        )
    )
    checks.append(
        _check(
            "foreign = new-stream lead-in",
            b["packets_foreign"] == truth["foreign"],
            f"B foreign {b['packets_foreign']}, expected {truth['foreign']} ({len(truth['streams'])} stream(s))",
        )
    )
    in_pause = b.get("lost_while_paused", 0)
    checks.append(
        _check(
            "concealed = lost + late-covered",
            b["packets_concealed"] >= lost - in_pause,
            f"B concealed {b['packets_concealed']} ≥ lost {lost} - {in_pause} lost while paused",
        )
    )
    relay = result["relay"]
    if not result.get("a_restarted"):
        a2b = relay["a2b"]
        audio_in = a2b["received"] - a2b.get("end_notices", 0) - a2b.get("handshakes", 0) - a2b.get("probes", 0)
        checks.append(
            _check(
                "relay saw all A sent",
                audio_in == a["packets_sent"],
                f"A sent {a['packets_sent']}, relay took in {audio_in} (and {a2b.get('end_notices', 0)} "
                f"end-of-stream notices, {a2b.get('handshakes', 0)} handshake messages, "
                f"{a2b.get('probes', 0)} round-trip probes)",
            )
        )
        arrived = sum(a.get(k, 0) for k in ARRIVAL_COUNTERS)
        checks.append(
            _check(
                "A got all the relay sent",
                arrived == relay["b2a"]["copies_sent"],
                f"A counted {arrived} arrivals, relay sent {relay['b2a']['copies_sent']}",
            )
        )
    return {"truth": truth, "checks": checks, "ok": all(c["ok"] for c in checks)}
