"""How deep the buffer should be, and how to get there without clicks.

For every arriving packet the engine measures its *slack*: how many samples ahead of
the playout read position it arrived. A packet with slack below one block plus the
reader's lookahead misses its deadline. The controller keeps a window of recent slack
values (stored relative to the receiver clock, so later adjustments apply to them too)
and acts on a percentile of it:

- ``adaptive`` (after WebRTC NetEq and JackTrip's Regulator): keep the low percentile
  (default 2 %) of slack between one block + lookahead + a margin (the least that
  plays every packet but that fraction in time) and one block more than that. Too
  little slack grows the buffer at once by inserting one concealed block; more than
  the band holds shrinks it slowly by reading the stream up to 0.2 % fast, or by
  dropping a block with a crossfade when it is far too deep. The band is what keeps a
  clean stream exact: any start depth within one block of the least depth is kept as
  it is, so the shipped configs start inside it and a clean stream never shrinks.
- ``fixed``: keep the early packets' slack (high percentile) at ``depth`` blocks; only
  the reading rate moves, which absorbs clock drift.

Both modes correct clock drift the same way: when the error leaves its band (one block
above the target: for a fixed depth, the phase between arrivals and output ticks may
add up to a block) by more than a dead band, the reading ratio
moves off 1 until the error is back inside by half the dead band, then returns to
exactly 1 (the engine lands that last block on a whole sample, so reading is a copy
again). The deviation is proportional to the error but never below half the fastest
rate, so a correction ends in bounded time instead of creeping up on its aim in an
exponential tail of interpolated blocks. An undrifted, unjittered stream therefore
never leaves bit-exact pass-through, and one whose drift stops is back to it within
the window and a few seconds (``tests/test_drift.py``).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from typing import Literal

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.receiver.drift import LOOKAHEAD

Mode = Literal["fixed", "adaptive"]

MIN_RATE_SHARE = 0.5
"""The slowest a correction reads, as a share of ``max_rate_ppm``."""


@dataclass(frozen=True)
class LatencyPolicy:
    mode: Mode = "adaptive"
    depth_packets: int = 2
    """Fixed mode: the depth kept. Adaptive mode: the depth to start with."""
    min_depth_packets: int = 1
    max_depth_packets: int = 32
    margin_samples: int = 64
    """Adaptive mode: slack kept beyond one block and the reader's lookahead."""
    window_s: float = 8.0
    quantile: float = 0.02
    max_rate_ppm: float = 2000.0
    correction_time_s: float = 4.0
    """Time constant with which the reading ratio removes an error."""
    deadband_samples: int = 96


@dataclass(frozen=True)
class Action:
    ratio: float = 1.0
    insert: bool = False
    drop: bool = False


class LatencyController:
    def __init__(self, policy: LatencyPolicy) -> None:
        self.policy = policy
        self._window = max(16, int(policy.window_s * SAMPLE_RATE / BLOCK_FRAMES))
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []
        """The window's values in order, so a percentile is one index (no sort per tick)."""
        self._bias = 0.0
        self._count = 0
        self._correcting = False
        self._aim = 0.0
        self._shrinking = False
        self._cooldown = 0
        self.error_samples = 0.0
        self.target_samples = float(self.start_latency_samples())
        self.median_slack_samples: float | None = None
        """The measured depth: the window's median slack at the last decision (None before any arrival)."""

    def start_latency_samples(self) -> int:
        return self.policy.depth_packets * BLOCK_FRAMES + LOOKAHEAD

    def reset(self) -> None:
        self._recent.clear()
        self._sorted.clear()
        self._count = 0
        self._correcting = False
        self._cooldown = 0

    def observe(self, reference: float) -> None:
        """Record one arrival: its slack is ``reference + offset`` for the offset at decision time."""
        value = reference - self._bias
        self._recent.append(value)
        bisect.insort(self._sorted, value)
        if len(self._recent) > self._window:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._count += 1

    def shift(self, samples: float) -> None:
        """Move stored values when the engine inserts or drops audio."""
        self._bias += samples

    def decide(self, offset: float) -> Action:
        if self._count == 0:
            return Action()
        p = self.policy
        ordered = self._sorted
        k_low = int(p.quantile * (len(ordered) - 1))
        k_high = len(ordered) - 1 - k_low
        low = ordered[k_low] + self._bias + offset
        high = ordered[k_high] + self._bias + offset
        self.median_slack_samples = ordered[len(ordered) // 2] + self._bias + offset
        one_block = BLOCK_FRAMES + LOOKAHEAD
        if p.mode == "fixed":
            target = float(p.depth_packets * BLOCK_FRAMES + LOOKAHEAD)
            error = high - target
        else:
            error = low - (one_block + p.margin_samples)
            latency_after = high - error
            min_latency = p.min_depth_packets * BLOCK_FRAMES + LOOKAHEAD
            max_latency = p.max_depth_packets * BLOCK_FRAMES + LOOKAHEAD
            if latency_after < min_latency:
                error = high - min_latency
            elif latency_after > max_latency:
                error = high - max_latency
            target = high - error
        self.error_samples = float(error)
        self.target_samples = float(target)
        if self._cooldown > 0:
            self._cooldown -= 1
        elif p.mode == "adaptive" and error < -BLOCK_FRAMES / 4:
            self._cooldown = 2
            return Action(insert=True)
        elif p.mode == "adaptive" and error > 3 * BLOCK_FRAMES and self._count >= self._window:
            self._cooldown = 2
            return Action(drop=True)
        if error > 0 and self._count < self._window:
            return Action()  # shrink only on a full window of evidence
        # The band the error may wander in without any correction: the block that the
        # phase between arrivals and output ticks can add, and a quarter block more for
        # scheduling noise (a start depth one block above the least stays inside it).
        band_high = 1.25 * BLOCK_FRAMES
        half = p.deadband_samples / 2
        # Adaptive packets are late below -margin: a drift that drains the buffer must be
        # met before that (each correction ends at its aim, then the drift pulls again).
        band_low = -min(p.deadband_samples, p.margin_samples / 2) if p.mode == "adaptive" else -p.deadband_samples
        if not self._correcting:
            if error > band_high + p.deadband_samples:  # too deep: read fast, back into the band
                self._correcting, self._aim = True, band_high - half
            elif error < band_low:  # too shallow: read slow
                self._correcting, self._aim = True, half
            self._shrinking = error > self._aim
        elif (error <= self._aim + 4) if self._shrinking else (error >= self._aim - 4):
            self._correcting = False
        if not self._correcting:
            return Action()
        max_dev = p.max_rate_ppm * 1e-6
        dev = (error - self._aim) / (p.correction_time_s * SAMPLE_RATE)
        # No slower than half the fastest rate: a purely proportional correction
        # spends most of its time in an exponential tail of tiny ratios, every block of
        # it interpolated; with the floor it reaches its aim, and copies again, in bounded time.
        floor = MIN_RATE_SHARE * max_dev
        dev = min(max_dev, max(floor, dev)) if self._shrinking else max(-max_dev, min(-floor, dev))
        return Action(ratio=1.0 + dev)
