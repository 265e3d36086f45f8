"""Who may inject audio into a live performance: authentication, replay window, source gate.

With a pre-shared key every packet carries a truncated HMAC-SHA256 tag over its header
and payload; a replay window on (stream id, sequence) rejects copies, and an
authenticated peer may move to another address (roaming). Without a key the receiver
pins the first address that sends it valid packets from the configured peer host, and
counts everything from elsewhere as foreign. In both cases each source address is rate
limited and oversized datagrams are dropped before parsing. The peer never answers any
datagram: it only ever sends its own stream to its configured peer, so it cannot be
used for reflection or amplification.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

from nmp_peer import PACKET_RATE
from nmp_peer.proto.wire import HEADER_BYTES, MAX_PAYLOAD_BYTES, SEQ_MODULUS, TAG_BYTES, Packet, seq_delta

MIN_KEY_BYTES = 16
MAX_DATAGRAM_BYTES = HEADER_BYTES + MAX_PAYLOAD_BYTES + TAG_BYTES


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names it."""


def load_key(path: str | Path) -> bytes:
    """A key file holds at least 16 random bytes, raw or as hex text (e.g. ``openssl rand -hex 32``)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {p}: {exc.strerror}") from None
    text = raw.strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = raw
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(
            f"key file {p} holds {len(key)} bytes; at least {MIN_KEY_BYTES} are needed "
            f"(try: openssl rand -hex 32 > {p.name})"
        )
    return key


class Authenticator:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _tag(self, tagged: Packet) -> bytes:
        """The tag of a packet whose header says a tag follows (as sent)."""
        return hmac.digest(self._key, tagged.header_bytes() + tagged.payload, hashlib.sha256)[:TAG_BYTES]

    def sign(self, packet: Packet) -> Packet:
        placeholder = replace(packet, tag=b"\0" * TAG_BYTES)
        return replace(packet, tag=self._tag(placeholder))

    def verify(self, packet: Packet) -> bool:
        return len(packet.tag) == TAG_BYTES and hmac.compare_digest(packet.tag, self._tag(packet))


class ReplayWindow:
    """Accepts each (stream id, sequence number) once, within a sliding window per stream."""

    def __init__(self, size: int = 4096, streams: int = 4) -> None:
        self.size = size
        self._streams: OrderedDict[int, tuple[int, int]] = OrderedDict()
        """stream id → (highest sequence number seen, bitmask of the ``size`` below it)."""
        self._max_streams = streams

    def check(self, stream_id: int, seq: int) -> bool:
        """True (and remember it) if the pair is new; False for a replay or far too old."""
        state = self._streams.get(stream_id)
        if state is None:
            self._streams[stream_id] = (seq, 1)
            if len(self._streams) > self._max_streams:
                self._streams.popitem(last=False)
            return True
        self._streams.move_to_end(stream_id)
        highest, mask = state
        d = seq_delta(seq, highest)
        if d > 0:
            mask = ((mask << d) | 1) & ((1 << self.size) - 1) if d < self.size else 1
            self._streams[stream_id] = (seq % SEQ_MODULUS, mask)
            return True
        if -d >= self.size or mask >> -d & 1:
            return False
        self._streams[stream_id] = (highest, mask | 1 << -d)
        return True


class RateLimiter:
    """A token bucket per source address; a flood from one source cannot starve the rest."""

    def __init__(self, rate: float = 4 * PACKET_RATE, burst: float = 64, sources: int = 1024) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: OrderedDict[tuple[str, int], tuple[float, float]] = OrderedDict()
        self._max_sources = sources

    def allow(self, addr: tuple[str, int], now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(addr, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        self._buckets[addr] = (tokens - 1.0 if ok else tokens, now)
        if len(self._buckets) > self._max_sources:
            self._buckets.popitem(last=False)
        return ok
