"""Round-trip time to one peer: PINGs out on a schedule, PONGs matched to them.

Sans-IO and clock-free: the caller passes the time (seconds, any monotonic origin) and
sends the probes it is handed; :class:`~nmp_peer.receiver.gate.ReceiveGate` hands the
PONGs that pass it back here. Only a PONG that answers a PING still outstanding, with
the very clock reading that PING carried, gives a round trip; any other is counted
(``pongs_unmatched``) and ignored, so a replayed or forged one cannot fake a delay.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

from nmp_peer.proto.wire import SEQ_MODULUS, Probe, ProbeType
from nmp_peer.receiver.stats import Stats

PING_INTERVAL_S = 0.5
"""A PING every half second (as Jamulus pings its server)."""
OUTSTANDING = 8
"""PINGs remembered; a PONG slower than this many intervals (4 s) gives no round trip."""


class RoundTrip:
    def __init__(self, stats: Stats, interval_s: float = PING_INTERVAL_S) -> None:
        self.stats = stats
        self.interval_s = interval_s
        self._seq = secrets.randbits(32)
        self._next_at: float | None = None
        self._outstanding: OrderedDict[int, int] = OrderedDict()

    def due(self, now_s: float, stream_id: int) -> Probe | None:
        """The PING to send now, if one is due."""
        if self._next_at is not None and now_s < self._next_at:
            return None
        self._next_at = now_s + self.interval_s
        seq, self._seq = self._seq, (self._seq + 1) % SEQ_MODULUS
        time_us = int(now_s * 1e6) % (1 << 64)
        self._outstanding[seq] = time_us
        if len(self._outstanding) > OUTSTANDING:
            self._outstanding.popitem(last=False)
        self.stats.pings_sent += 1
        return Probe(ProbeType.PING, stream_id, seq, time_us)

    def on_pong(self, pong: Probe, now_s: float) -> float | None:
        """The round trip (ms) this PONG measures, or None when it answers no PING outstanding."""
        s = self.stats
        sent = self._outstanding.get(pong.seq)
        if pong.kind is not ProbeType.PONG or sent is None or sent != pong.time_us:
            s.pongs_unmatched += 1
            return None
        del self._outstanding[pong.seq]
        rtt = max(0.0, (now_s * 1e6 - sent) / 1000.0)
        s.pongs_received += 1
        s.rtt_ms = rtt
        s.rtt_min_ms = rtt if s.rtt_min_ms is None else min(s.rtt_min_ms, rtt)
        s.rtt_avg_ms = rtt if s.rtt_avg_ms is None else s.rtt_avg_ms + (rtt - s.rtt_avg_ms) / 8.0
        return rtt
