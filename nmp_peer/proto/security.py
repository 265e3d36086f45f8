"""The pre-shared key file, the replay window and the per-source rate limit.

The handshake and the per-session keys are :mod:`nmp_peer.proto.session`'s; the order of
the checks is the receive gate's (:mod:`nmp_peer.receiver.gate`). A peer sends only to
its configured peer (its stream, and its handshake answers), so it cannot be used to
reflect or amplify traffic towards anyone else.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

from nmp_peer import PACKET_RATE
from nmp_peer.proto.wire import HEADER_BYTES, MAX_PAYLOAD_BYTES, SEQ_MODULUS, TAG_BYTES, seq_delta

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


class ReplayWindow:
    """Accepts each (stream id, sequence number) once, within a sliding window per stream."""

    def __init__(self, size: int = 4096, streams: int = 4) -> None:
        self.size = size
        self._all = (1 << size) - 1
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
            mask = ((mask << d) | 1) & self._all if d < self.size else 1
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
