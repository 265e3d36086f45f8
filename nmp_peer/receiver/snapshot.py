"""What a live monitor shows: one JSON-able snapshot of a peer's streams, and level meters.

Sans-IO: the builders take :class:`Stats` objects, meters and the time (seconds since the
session started) and return plain dicts; whoever runs the session (``live.peer``) builds
one per tick and publishes it by replacing a reference (``live.monitor.SnapshotBoard``).
A snapshot::

    {"version": 1, "seq": 17, "time": 1.7,
     "self": {"name", "input_level_dbfs", "input_peak_dbfs", "packets_sent"},
     "peers": [{"name", "address", "pinned", "received", "lost", "late", "concealed",
                "concealer_partial", "concealer_misses", "underruns", "stream_ends",
                "depth_packets", "depth_ms", "target_packets", "target_ms",
                "jitter_ms", "latency_ms", "rtt_ms", "level_dbfs", "peak_dbfs"}, ...]}

``seq`` is stamped by the board. The counters are the stats' own (``lost`` is
``packets_lost`` ...); floats are rounded as :meth:`Stats.to_dict` rounds them, so a
snapshot taken after a stream ended equals that stream's JSON summary. ``rtt_ms`` and the
levels are ``None`` until measured (a level is ``None`` for digital silence).

Reading a snapshot's inputs takes no lock: the counters and the meters' two floats are
each written by one thread (the receive loop, or the output callback) and read whole.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nmp_peer import BLOCK_FRAMES, PACKET_MS, PACKET_S
from nmp_peer.receiver.stats import Stats

SNAPSHOT_VERSION = 1
SILENCE_DBFS = -120.0
"""Levels below this are reported as ``None`` (silence)."""
RELEASE_S = 0.3
"""A meter falls by 1/e of its power (4.3 dB) in this long: instant attack, a PPM's slow release."""


class LevelMeter:
    """RMS and peak level of the blocks a stream plays (or a peer captures), with meter ballistics.

    ``update`` takes each block (any shape, float samples, full scale 1.0): the meter jumps
    to a louder block at once and, over quieter ones, falls by 10 log10(e) = 4.3 dB per
    ``release_s`` (the power by ``exp(-block / release)`` a block; RMS and peak alike).
    One thread calls ``update``; any other reads ``rms_dbfs``/``peak_dbfs`` without a lock
    (each reads one float the writer replaces whole). Cost: two numpy reductions per block.
    """

    def __init__(self, release_s: float = RELEASE_S, block_s: float = PACKET_S) -> None:
        self._decay = math.exp(-block_s / release_s)
        self._amplitude_decay = math.sqrt(self._decay)
        self.mean_square = 0.0
        self.peak = 0.0
        self.blocks = 0

    def update(self, block: np.ndarray) -> None:
        x = block.reshape(-1)
        if not x.size:
            return
        mean_square = float(np.dot(x, x)) / x.size
        peak = max(float(x.max()), -float(x.min()))
        self.mean_square = max(mean_square, self.mean_square * self._decay)
        self.peak = max(peak, self.peak * self._amplitude_decay)
        self.blocks += 1

    @property
    def rms_dbfs(self) -> float | None:
        return dbfs(math.sqrt(self.mean_square))

    @property
    def peak_dbfs(self) -> float | None:
        return dbfs(self.peak)


def dbfs(amplitude: float) -> float | None:
    """``20 log10(amplitude)`` rounded to 0.1 dB; ``None`` below ``SILENCE_DBFS``."""
    if not amplitude > 10.0 ** (SILENCE_DBFS / 20.0):
        return None
    return round(20.0 * math.log10(amplitude), 1)


def peer_snapshot(
    name: str, address: str, stats: Stats, level: LevelMeter | None = None, rtt_ms: float | None = None
) -> dict[str, Any]:
    """One remote peer's stream as the monitor shows it: its receiver's stats, the level of
    what is played from it, and the round-trip time to it (``None`` until measured)."""
    depth, target = stats.buffer_depth_packets, stats.target_depth_packets
    return {
        "name": name,
        "address": address,
        "pinned": stats.pinned,
        "received": stats.packets_received,
        "lost": stats.packets_lost,
        "late": stats.packets_late,
        "concealed": stats.packets_concealed,
        "concealer_partial": stats.concealer_partial,
        "concealer_misses": stats.concealer_misses,
        "underruns": stats.underruns,
        "stream_ends": stats.stream_ends,
        "depth_packets": round(depth, 3),
        "depth_ms": round(depth * PACKET_MS, 2),
        "target_packets": round(target, 3),
        "target_ms": round(target * PACKET_MS, 2),
        "jitter_ms": round(stats.jitter_ms, 3),
        "latency_ms": round(stats.latency_ms, 2),
        "rtt_ms": None if rtt_ms is None else round(rtt_ms, 2),
        "level_dbfs": None if level is None else level.rms_dbfs,
        "peak_dbfs": None if level is None else level.peak_dbfs,
    }


def self_snapshot(name: str, stats: Stats, level: LevelMeter | None = None) -> dict[str, Any]:
    """This peer: the level of what it captures (and sends), and how many packets it sent."""
    return {
        "name": name,
        "input_level_dbfs": None if level is None else level.rms_dbfs,
        "input_peak_dbfs": None if level is None else level.peak_dbfs,
        "packets_sent": stats.packets_sent,
    }


def make_snapshot(time_s: float, me: dict[str, Any], peers: list[dict[str, Any]]) -> dict[str, Any]:
    """The snapshot of one tick; ``time_s``: seconds since the session started."""
    return {
        "version": SNAPSHOT_VERSION,
        "seq": 0,
        "time": round(time_s, 3),
        "block_ms": round(PACKET_MS, 2),
        "block_frames": BLOCK_FRAMES,
        "self": me,
        "peers": peers,
    }
