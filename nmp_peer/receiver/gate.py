"""Which datagrams may reach the jitter buffer: size, parse, authentication, rate, pin.

Sans-IO: the receive loop hands each datagram, its source and the time (seconds) here;
every reason one is dropped has its own counter in :class:`~nmp_peer.receiver.stats.Stats`,
and the handshake answers to send wait in :attr:`ReceiveGate.outbox`.

The checks, in order, cheapest and surest first:

1. **size**: an oversized datagram is dropped unparsed;
2. **parse**: the wire format (audio) or a handshake message;
3. **tag** (with a key): audio must open under the current session, or a pending one
   (the stream then changes: a restart goes only through the handshake); handshake
   messages must carry the PSK's tag;
4. **rate** per source, for what is not authenticated audio: handshake messages with a
   key; without one, anything but the pinned stream. Junk sent under the real peer's
   address therefore never uses up the real peer's allowance;
5. **pin** (without a key): the stream followed is the first from the configured peer
   address and port (``pin = "peer"``) or host (``pin = "host"``, for a peer behind a
   NAT); another stream or source takes over only after the pinned one ended or was
   silent for ``repin_after_s``.

Round-trip probes (``wire.Probe``) pass the same checks as handshake messages (parse,
tag with a key, rate per source; without a key, only from the configured peer): a PING
is answered through the outbox, a PONG goes to :attr:`ReceiveGate.round_trip`.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from nmp_peer.proto.security import MAX_DATAGRAM_BYTES, RateLimiter
from nmp_peer.proto.session import HandshakeError, Session
from nmp_peer.proto.wire import Packet, Probe, ProbeAuthError, ProbeType, WireError, control_type, probe_type
from nmp_peer.receiver.roundtrip import RoundTrip
from nmp_peer.receiver.stats import Stats

PinMode = Literal["peer", "host", "any"]
REPIN_AFTER_S = 0.5
"""A keyless receiver follows a new stream or source once the pinned one was silent this long."""
HANDSHAKE_RATE = 20.0
"""Handshake messages per second and source (a burst of 8) before they are dropped unread."""


class ReceiveGate:
    """Decides, per datagram, whether it may reach the jitter buffer; counts why not."""

    def __init__(
        self,
        stats: Stats,
        *,
        peer: tuple[str, int] | None = None,
        session: Session | None = None,
        pin: PinMode = "peer",
        repin_after_s: float = REPIN_AFTER_S,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.stats = stats
        self.session = session
        self.rate_limiter = rate_limiter or RateLimiter()
        self._handshake_limiter = RateLimiter(rate=HANDSHAKE_RATE, burst=8)
        self._peer = (_normalise_ip(peer[0]), peer[1]) if peer is not None else None
        self.pin: PinMode = pin if peer is not None else "any"
        self.repin_after_s = repin_after_s
        self.pinned: tuple[str, int] | None = None
        """The source of the stream followed (the last authenticated one, with a key)."""
        self.pinned_stream: int | None = None
        self._heard_at = 0.0
        self._pinned_ended = False
        self.outbox: list[bytes] = []
        """Handshake answers for the configured peer (the gate never answers anyone else)."""
        self.new_stream = False
        """Set when the last admitted packet is the first of a stream the gate now follows."""
        self.round_trip = RoundTrip(stats)
        """Our PINGs to this peer and the round trips its PONGs measure."""
        self._probe_key = session.probe_key if session is not None else None

    def admit(self, data: bytes, addr: tuple[str, int], now: float) -> Packet | None:
        s = self.stats
        self.new_stream = False
        if len(data) > MAX_DATAGRAM_BYTES:
            s.packets_oversized += 1
            return None
        if control_type(data) is not None:
            self._control(data, addr, now)
            return None
        if probe_type(data) is not None:
            self._probe(data, addr, now)
            return None
        try:
            packet = Packet.parse(data)
        except WireError:
            s.packets_malformed += 1
            return None
        if self.session is not None:
            return self._open(packet, data, addr)
        return self._pin(packet, addr, now)

    def _control(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        s = self.stats
        if self.session is None:
            s.packets_unauthenticated += 1  # a keyed peer: this one has no key
            s.handshakes_unkeyed += 1
            return
        try:
            message = self.session.decode(data)
        except WireError:
            s.packets_malformed += 1
            return
        except HandshakeError:
            s.packets_unauthenticated += 1
            return
        if not self._handshake_limiter.allow(addr, now):
            s.packets_rate_limited += 1
            return
        s.handshake_messages += 1
        reply = self.session.on_control(message, now)
        if reply is not None:
            self.outbox.append(reply)

    def ping(self, now: float, stream_id: int) -> bytes | None:
        """The PING due now for the configured peer, if any (``stream_id``: ours)."""
        probe = self.round_trip.due(now, stream_id)
        return None if probe is None else probe.encode(self._probe_key)

    def _probe(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        s = self.stats
        try:
            probe = Probe.decode(data, self._probe_key)
        except ProbeAuthError:
            s.packets_unauthenticated += 1
            return
        except WireError:
            s.packets_malformed += 1
            return
        if self.session is None and not self._eligible(addr):
            s.packets_foreign += 1
            return
        if not self._handshake_limiter.allow(addr, now):
            s.packets_rate_limited += 1
            return
        if probe.kind is ProbeType.PING:
            s.pings_answered += 1
            self.outbox.append(probe.answer().encode(self._probe_key))
        else:
            self.round_trip.on_pong(probe, now)

    def _open(self, packet: Packet, data: bytes, addr: tuple[str, int]) -> Packet | None:
        assert self.session is not None
        opened, what = self.session.inbound.open(packet, data)
        if opened is None:
            if what == "replayed":
                self.stats.packets_replayed += 1
            else:
                self.stats.packets_unauthenticated += 1
            return None
        if what == "new session":
            self.stats.sessions += 1
            if opened.stream_id != self.pinned_stream:
                self.new_stream = True
                self.pinned_stream = opened.stream_id
        if addr != self.pinned:  # an authenticated peer may roam
            self._set_pinned(addr)
        return opened

    def _pin(self, packet: Packet, addr: tuple[str, int], now: float) -> Packet | None:
        s = self.stats
        if addr == self.pinned and packet.stream_id == self.pinned_stream:
            self._heard_at = now
            self._pinned_ended |= packet.end
            return packet
        if not self.rate_limiter.allow(addr, now):
            s.packets_rate_limited += 1
            return None
        if not self._eligible(addr) or (
            self.pinned is not None and not self._pinned_ended and now - self._heard_at < self.repin_after_s
        ):
            s.packets_foreign += 1
            return None
        if self.pinned is not None:
            s.repins += 1
        self._set_pinned(addr)
        self.pinned_stream = packet.stream_id
        self._heard_at, self._pinned_ended = now, packet.end
        self.new_stream = True
        return packet

    def _eligible(self, addr: tuple[str, int]) -> bool:
        if self.pin == "any" or self._peer is None:
            return True
        ip = _normalise_ip(addr[0])
        return ip == self._peer[0] and (self.pin == "host" or addr[1] == self._peer[1])

    def _set_pinned(self, addr: tuple[str, int]) -> None:
        self.pinned = addr
        self.stats.pinned = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def _normalise_ip(host: str) -> str:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ip)


class KeyedPath:
    """One direction of a keyed session, sender and receiver in one process (the lab, the loopback).

    The same objects as a live jam: the sender's :class:`Session` seals each packet, the
    receiver's gate opens it; :meth:`handshake` runs the HELLO and WELCOME through
    whatever carries them (in memory, or over real sockets).
    """

    SOURCE = ("127.0.0.1", 9)
    """The address the receiver's gate sees the sender at."""

    def __init__(self, key: bytes, stats: Stats, *, encrypt: bool = True) -> None:
        self.sender = Session(key, encrypt=encrypt)
        self.receiver = Session(key)
        self.gate = ReceiveGate(stats, peer=self.SOURCE, session=self.receiver)

    def hello(self, stream_id: int) -> bytes:
        return self.sender.outbound.poll(0.0, stream_id)[0]

    def answer(self, hello: bytes) -> bytes:
        """The receiver's WELCOME to the sender's HELLO."""
        self.gate.admit(hello, self.SOURCE, 0.0)
        if len(self.gate.outbox) != 1:
            raise RuntimeError("the receiver did not answer the handshake")  # a bug: same key both ends
        return self.gate.outbox.pop()

    def complete(self, welcome: bytes) -> None:
        self.sender.on_control(self.sender.decode(welcome), 0.0)
        if not self.sender.outbound.established:
            raise RuntimeError("the handshake did not complete")

    def handshake(self, stream_id: int) -> None:
        """In memory."""
        self.complete(self.answer(self.hello(stream_id)))

    def seal(self, packet: Packet) -> bytes:
        sealed = self.sender.outbound.seal(packet)
        if sealed is None:
            raise RuntimeError(f"no session for stream {packet.stream_id}")
        return sealed.serialize()

    def open(self, data: bytes, now_s: float) -> tuple[Packet | None, bool]:
        """(the packet the receiver's gate admits, or None; whether it starts a stream to follow)."""
        packet = self.gate.admit(data, self.SOURCE, now_s)
        return packet, self.gate.new_stream
