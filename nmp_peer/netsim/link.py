"""One direction of the impairment relay, sans-IO and clock-free (time is passed in).

Per routed datagram: an outage window, then the rate limit (``TokenBucket``), then the
direction's ``Impairment``; ``DirectionLink.decide`` returns the ground-truth ``Record``
(``nmp_peer.netsim.relaylog``) that says when each copy leaves. ``nmp_peer.netsim.relay``
owns the socket and the timers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from nmp_peer.netsim.impair import Impairment
from nmp_peer.netsim.relaylog import Record, packet_ids
from nmp_peer.proto.wire import control_type, probe_type

RATE_QUEUE_MS = 50.0
"""Default rate-limit queue: this much of the link rate is buffered before tail drop."""

UDP_IP_OVERHEAD_BYTES = 28
"""IPv4 (20) + UDP (8) headers, counted by the rate limit like a real link."""


class TokenBucket:
    """A rate-limited link with a bounded FIFO queue, in the manner of ``tc tbf``.

    Tokens (bits) accrue at ``rate_kbps`` up to ``burst_bytes``; a packet leaves when the
    bucket holds its size, in arrival order. ``admit`` returns how long the packet
    waits in the queue, or ``None`` when that wait would exceed ``queue_ms``: the queue
    is full and the packet is dropped without consuming tokens.
    """

    def __init__(self, rate_kbps: float, queue_ms: float = RATE_QUEUE_MS, burst_bytes: int | None = None) -> None:
        if not rate_kbps > 0:
            raise ValueError(f"rate_kbps must be positive, got {rate_kbps}")
        if queue_ms < 0:
            raise ValueError(f"queue_ms must be non-negative, got {queue_ms}")
        self.rate_bps = float(rate_kbps) * 1000.0
        self.queue_s = float(queue_ms) / 1000.0
        self.burst_bits = 8.0 * (burst_bytes if burst_bytes is not None else 1500)
        if self.burst_bits <= 0:
            raise ValueError(f"burst_bytes must be positive, got {burst_bytes}")
        self._last_s: float | None = None
        """Departure time of the last admitted packet."""
        self._tokens = self.burst_bits
        """Tokens left right after that departure."""

    def admit(self, now_s: float, size_bytes: int) -> float | None:
        bits = 8.0 * size_bytes
        bucket = max(self.burst_bits, bits)  # a packet larger than the burst still passes, alone
        if self._last_s is None:
            start, tokens = now_s, bucket
        else:
            start = max(now_s, self._last_s)
            tokens = min(bucket, self._tokens + self.rate_bps * (start - self._last_s))
        depart = start if tokens >= bits else start + (bits - tokens) / self.rate_bps
        wait = depart - now_s
        if wait > self.queue_s:
            return None
        self._last_s = depart
        self._tokens = max(0.0, tokens + self.rate_bps * (depart - start) - bits)
        return wait


@dataclass
class DirectionCounters:
    received: int = 0
    """Datagrams routed into this direction."""
    bytes_received: int = 0
    not_nmp: int = 0
    """Routed datagrams that are not nmp-peer packets (relayed like the others)."""
    end_notices: int = 0
    """Routed end-of-stream notices (nmp-peer packets without audio, relayed like the others)."""
    handshakes: int = 0
    """Routed handshake messages of keyed peers (not audio; of ``not_nmp``, relayed like the others)."""
    probes: int = 0
    """Routed round-trip probes (PING, PONG; not audio; of ``not_nmp``, relayed like the others)."""
    delivered: int = 0
    duplicated: int = 0
    reordered: int = 0
    dropped: int = 0
    """Lost by the impairment's loss model."""
    rate_dropped: int = 0
    outage_dropped: int = 0
    copies_sent: int = 0
    """Datagrams handed to the socket (a duplicate counts twice)."""

    @property
    def lost(self) -> int:
        return self.dropped + self.rate_dropped + self.outage_dropped

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "lost": self.lost}


@dataclass
class DirectionLink:
    """One direction of the relay: outage, rate limit and impairment, sans-IO."""

    name: str
    impairment: Impairment | None = None
    bucket: TokenBucket | None = None
    outage: tuple[float, float] | None = None
    """(start, seconds) relative to the relay's first routed datagram."""
    counters: DirectionCounters = field(default_factory=DirectionCounters)
    _index: int = 0

    def decide(self, data: bytes, now_s: float, since_first_s: float) -> Record:
        """Decide one datagram that arrived at ``now_s``; ``delays_ms`` says when each copy leaves."""
        c = self.counters
        index = self._index
        self._index += 1
        decision = self.impairment.next_decision() if self.impairment is not None else None
        seq, stream_id, end = packet_ids(data)
        c.received += 1
        c.bytes_received += len(data)
        c.not_nmp += seq < 0
        c.handshakes += control_type(data) is not None
        c.probes += probe_type(data) is not None
        c.end_notices += end
        t_ms = round(1000.0 * now_s, 3)

        def record(action: str, delays_s: tuple[float, ...] = ()) -> Record:
            delays = tuple(round(1000.0 * d, 3) for d in delays_s)
            return Record(t_ms, self.name, index, seq, stream_id, end, len(data), action, delays)

        if self.outage is not None and self.outage[0] <= since_first_s < self.outage[0] + self.outage[1]:
            c.outage_dropped += 1
            return record("outage")
        queued_s = 0.0
        if self.bucket is not None:
            wait = self.bucket.admit(now_s, len(data) + UDP_IP_OVERHEAD_BYTES)
            if wait is None:
                c.rate_dropped += 1
                return record("rate-drop")
            queued_s = wait
        if decision is None:
            c.delivered += 1
            return record("deliver", (queued_s,))
        if decision.action == "drop":
            c.dropped += 1
            return record("drop")
        if decision.action == "duplicate":
            c.duplicated += 1
        elif decision.action == "reorder":
            c.reordered += 1
        else:
            c.delivered += 1
        return record(decision.action, tuple(queued_s + d for d in decision.delays_s))
