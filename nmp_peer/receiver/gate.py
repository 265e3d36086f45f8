"""Which datagrams may reach the jitter buffer: size, rate, parse, authentication, pin.

Sans-IO: the receive loop hands each datagram and its source here; every reason one is
dropped has its own counter in :class:`~nmp_peer.receiver.stats.Stats`.
"""

from __future__ import annotations

import ipaddress

from nmp_peer.proto.security import MAX_DATAGRAM_BYTES, Authenticator, RateLimiter, ReplayWindow
from nmp_peer.proto.wire import Packet, WireError
from nmp_peer.receiver.stats import Stats


class ReceiveGate:
    """Decides, per datagram, whether it may reach the jitter buffer; counts why not."""

    def __init__(
        self,
        stats: Stats,
        *,
        peer_host: str | None = None,
        authenticator: Authenticator | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.stats = stats
        self.authenticator = authenticator
        self.rate_limiter = rate_limiter or RateLimiter()
        self.replay = ReplayWindow()
        self._peer_ip = _normalise_ip(peer_host) if peer_host else None
        self.pinned: tuple[str, int] | None = None

    def admit(self, data: bytes, addr: tuple[str, int], now: float | None = None) -> Packet | None:
        s = self.stats
        if len(data) > MAX_DATAGRAM_BYTES:
            s.packets_oversized += 1
            return None
        if not self.rate_limiter.allow(addr, now):
            s.packets_rate_limited += 1
            return None
        try:
            packet = Packet.parse(data)
        except WireError:
            s.packets_malformed += 1
            return None
        if self.authenticator is not None:
            if not self.authenticator.verify(packet):
                s.packets_unauthenticated += 1
                return None
            if not self.replay.check(packet.stream_id, packet.seq):
                s.packets_replayed += 1
                return None
            return packet
        if self.pinned is None:
            if self._peer_ip is not None and _normalise_ip(addr[0]) != self._peer_ip:
                s.packets_foreign += 1
                return None
            self.pinned = addr
        elif addr != self.pinned:
            s.packets_foreign += 1
            return None
        return packet


def _normalise_ip(host: str) -> str:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)
