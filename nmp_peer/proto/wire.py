"""The packet format: a 24-byte big-endian header, the payload, an optional tag.

```
 0      2    3     4      5     6          10         14              22      24
 | "NM" | ver | type | chans | flags | stream_id | seq (u32) | timestamp (u64) | len |
```

``timestamp`` counts samples at 44.1 kHz from a random origin; ``seq`` wraps at 2**32;
``stream_id`` is random per run so a restarted peer is recognised. When ``flags`` has
``FLAG_TAG`` set, ``TAG_BYTES`` of authentication tag follow the payload (an AEAD tag
under the session's key, :mod:`nmp_peer.proto.session`); ``FLAG_ENC`` says the payload
is encrypted. Parsing is a pure function of bytes and raises only :class:`WireError`.

Types from ``0x10`` on are handshake messages, not audio (:class:`ControlType`; their
payload is :mod:`nmp_peer.proto.session`'s); :func:`control_type` tells them apart
before parsing.

Types from ``0x20`` on are round-trip probes (:class:`ProbeType`, :class:`Probe`): a
PING carries the sender's clock, the PONG echoes it, and the sender reads the round
trip off its own clock (as Jamulus's ping). With a key they carry an HMAC tag under a
key derived from the pre-shared key (like the handshake's); :func:`probe_type` tells
them apart before parsing.

``FLAG_END`` marks an end-of-stream notice instead of audio: its payload is the u32
sequence number of the first packet the sender will never send, so the receiver can
tell the end of a stream from a loss. The sender repeats it (each copy with a sequence
number of its own, so a replay window sees no copy twice); every copy names the same end.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, fields
from enum import IntEnum

MAGIC = b"NM"
VERSION = 2
"""2: AEAD tags under per-session keys and the handshake (1 signed with the pre-shared key itself)."""
HEADER = struct.Struct(">2sBBBBIIQH")
HEADER_BYTES = HEADER.size
FLAG_TAG = 0x01
FLAG_END = 0x02
FLAG_ENC = 0x04
_END = struct.Struct(">I")
TAG_BYTES = 16
MAX_CHANNELS = 2
MAX_PAYLOAD_BYTES = 4096
SEQ_MODULUS = 1 << 32


class PayloadType(IntEnum):
    PCM16 = 0
    OPUS = 1


class ControlType(IntEnum):
    HELLO = 0x10
    """A sender opens a session: its nonce and ephemeral public key."""
    WELCOME = 0x11
    """The receiver's answer: both nonces and its ephemeral public key."""


class WireError(ValueError):
    """A datagram that is not a well-formed nmp-peer packet."""


@dataclass(frozen=True, slots=True)
class Packet:
    payload_type: PayloadType
    channels: int
    stream_id: int
    seq: int
    timestamp: int
    payload: bytes
    tag: bytes = b""
    end: bool = False
    """An end-of-stream notice (``FLAG_END``): no audio; see :attr:`end_seq`."""
    encrypted: bool = False
    """``FLAG_ENC``: the payload is ciphertext until the session opens it."""

    @classmethod
    def end_of_stream(
        cls, payload_type: PayloadType, channels: int, stream_id: int, seq: int, timestamp: int, end_seq: int
    ) -> Packet:
        """The notice that packets from ``end_seq`` on will never be sent; ``seq`` is this copy's own."""
        return cls(
            payload_type, channels, stream_id, seq % SEQ_MODULUS, timestamp, _END.pack(end_seq % SEQ_MODULUS), end=True
        )

    @property
    def end_seq(self) -> int:
        """The first sequence number never sent (end-of-stream notices only)."""
        return int(_END.unpack(self.payload)[0])

    def header_bytes(self) -> bytes:
        """The header as sent; the authentication tag covers it and the payload."""
        flags = (FLAG_TAG if self.tag else 0) | (FLAG_END if self.end else 0) | (FLAG_ENC if self.encrypted else 0)
        return HEADER.pack(
            MAGIC,
            VERSION,
            int(self.payload_type),
            self.channels,
            flags,
            self.stream_id,
            self.seq % SEQ_MODULUS,
            self.timestamp % (1 << 64),
            len(self.payload),
        )

    def serialize(self) -> bytes:
        if self.tag and len(self.tag) != TAG_BYTES:
            raise WireError(f"tag must be {TAG_BYTES} bytes, got {len(self.tag)}")
        if not 1 <= self.channels <= MAX_CHANNELS:
            raise WireError(f"channels must be 1..{MAX_CHANNELS}, got {self.channels}")
        if len(self.payload) > MAX_PAYLOAD_BYTES:
            raise WireError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
        return self.header_bytes() + self.payload + self.tag

    @classmethod
    def parse(cls, data: bytes) -> Packet:
        if len(data) < HEADER_BYTES:
            raise WireError(f"datagram of {len(data)} bytes is shorter than the {HEADER_BYTES}-byte header")
        magic, version, ptype, channels, flags, stream_id, seq, timestamp, length = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise WireError(f"bad magic {magic!r}")
        if version != VERSION:
            raise WireError(f"unsupported version {version}")
        payload_type = _PAYLOAD_TYPES.get(ptype)
        if payload_type is None:
            if ptype in _CONTROL_TYPES:
                raise WireError(f"a handshake message (type {ptype:#04x}), not audio")
            if ptype in _PROBE_TYPES:
                raise WireError(f"a round-trip probe (type {ptype:#04x}), not audio")
            raise WireError(f"unknown payload type {ptype}")
        if not 1 <= channels <= MAX_CHANNELS:
            raise WireError(f"bad channel count {channels}")
        if flags & ~(FLAG_TAG | FLAG_END | FLAG_ENC):
            raise WireError(f"unknown flags {flags:#04x}")
        encrypted = bool(flags & FLAG_ENC)
        if encrypted and not flags & FLAG_TAG:
            raise WireError("an encrypted payload without its tag")
        tag_len = TAG_BYTES if flags & FLAG_TAG else 0
        if length > MAX_PAYLOAD_BYTES or len(data) != HEADER_BYTES + length + tag_len:
            raise WireError(f"payload length {length} does not match datagram of {len(data)} bytes")
        end = bool(flags & FLAG_END)
        if end and length != _END.size:
            raise WireError(f"end-of-stream notice with a {length}-byte payload (expected {_END.size})")
        if not end and not encrypted and payload_type is PayloadType.PCM16 and (length == 0 or length % (2 * channels)):
            raise WireError(f"PCM16 payload of {length} bytes is not whole frames of {channels} channel(s)")
        stop = HEADER_BYTES + length
        payload, tag = bytes(data[HEADER_BYTES:stop]), bytes(data[stop:])
        return make_packet(payload_type, channels, stream_id, seq, timestamp, payload, tag, end, encrypted)


_CONTROL_TYPES = frozenset(int(t) for t in ControlType)
_PAYLOAD_TYPES = {int(t): t for t in PayloadType}
_PACKET_FIELDS = ("payload_type", "channels", "stream_id", "seq", "timestamp", "payload", "tag", "end", "encrypted")
if tuple(f.name for f in fields(Packet)) != _PACKET_FIELDS:  # pragma: no cover - a field added above
    raise ImportError("make_packet must set every field of Packet")
_new_packet = object.__new__
(
    _set_payload_type,
    _set_channels,
    _set_stream_id,
    _set_seq,
    _set_timestamp,
    _set_payload,
    _set_tag,
    _set_end,
    _set_encrypted,
) = (getattr(Packet, name).__set__ for name in _PACKET_FIELDS)


def make_packet(
    payload_type: PayloadType,
    channels: int,
    stream_id: int,
    seq: int,
    timestamp: int,
    payload: bytes,
    tag: bytes,
    end: bool,
    encrypted: bool,
) -> Packet:
    """``Packet(...)`` with every field given, for the receive path: the same frozen object,
    made through its slots (a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``, a third of a parse's time). The caller has checked the values."""
    p = _new_packet(Packet)
    _set_payload_type(p, payload_type)
    _set_channels(p, channels)
    _set_stream_id(p, stream_id)
    _set_seq(p, seq)
    _set_timestamp(p, timestamp)
    _set_payload(p, payload)
    _set_tag(p, tag)
    _set_end(p, end)
    _set_encrypted(p, encrypted)
    return p


def control_type(data: bytes) -> ControlType | None:
    """The handshake type of a datagram with this version's header, or None (audio, or not ours)."""
    if len(data) < HEADER_BYTES or data[:2] != MAGIC or data[2] != VERSION or data[3] not in _CONTROL_TYPES:
        return None
    return ControlType(data[3])


def seq_delta(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two wrapping 32-bit sequence numbers."""
    d = (a - b) % SEQ_MODULUS
    return d - SEQ_MODULUS if d >= SEQ_MODULUS // 2 else d


# ---------------------------------------------------------------------- round-trip probes
class ProbeType(IntEnum):
    PING = 0x20
    """Asks for an echo: ``seq`` numbers the ping, ``timestamp`` is the sender's clock (µs)."""
    PONG = 0x21
    """The echo: the PING's stream id, number and clock, as they came."""


class ProbeAuthError(WireError):
    """A probe whose tag does not verify (or that lacks the tag a keyed peer needs)."""


@dataclass(frozen=True, slots=True)
class Probe:
    """A PING or a PONG: a header and nothing else, and a tag with a key.

    ``stream_id`` is the pinging peer's stream (its PONG names it back); ``seq`` the
    ping's own number (u32); ``time_us`` the pinger's clock when it sent the ping (u64,
    microseconds from any origin): the PONG hands it back, so the round trip is the
    pinger's clock then minus this, without clocks in common."""

    kind: ProbeType
    stream_id: int
    seq: int
    time_us: int

    def encode(self, mac_key: bytes | None = None) -> bytes:
        """The datagram; with ``mac_key`` (keyed peers) followed by its HMAC-SHA256 tag (16 bytes)."""
        flags = FLAG_TAG if mac_key is not None else 0
        header = HEADER.pack(
            MAGIC,
            VERSION,
            int(self.kind),
            1,
            flags,
            self.stream_id % SEQ_MODULUS,
            self.seq % SEQ_MODULUS,
            self.time_us % (1 << 64),
            0,
        )
        if mac_key is None:
            return header
        return header + hmac.digest(mac_key, header, hashlib.sha256)[:TAG_BYTES]

    def answer(self) -> Probe:
        """The PONG to this PING."""
        return Probe(ProbeType.PONG, self.stream_id, self.seq, self.time_us)

    @classmethod
    def decode(cls, data: bytes, mac_key: bytes | None = None) -> Probe:
        """Raises :class:`WireError` for a malformed probe, :class:`ProbeAuthError` for a tag
        that does not verify under ``mac_key`` (or one missing, or one present without a key)."""
        if len(data) < HEADER_BYTES:
            raise WireError("probe shorter than the header")
        magic, version, kind, channels, flags, stream_id, seq, time_us, length = HEADER.unpack_from(data)
        if magic != MAGIC or version != VERSION or kind not in _PROBE_TYPES:
            raise WireError("not a probe of this version")
        if channels != 1 or length != 0 or flags & ~FLAG_TAG:
            raise WireError("malformed probe header")
        tagged = bool(flags & FLAG_TAG)
        if len(data) != HEADER_BYTES + (TAG_BYTES if tagged else 0):
            raise WireError(f"probe of {len(data)} bytes is malformed")
        if tagged != (mac_key is not None):
            raise ProbeAuthError("a keyed probe to a keyless peer" if tagged else "an unauthenticated probe")
        if mac_key is not None:
            expected = hmac.digest(mac_key, data[:HEADER_BYTES], hashlib.sha256)[:TAG_BYTES]
            if not hmac.compare_digest(data[HEADER_BYTES:], expected):
                raise ProbeAuthError("probe tag does not verify")
        return cls(ProbeType(kind), stream_id, seq, time_us)


PROBE_BYTES = HEADER_BYTES
"""A probe without a key (with one: ``PROBE_BYTES + TAG_BYTES``)."""
_PROBE_TYPES = frozenset(int(t) for t in ProbeType)


def probe_type(data: bytes) -> ProbeType | None:
    """The probe type of a datagram with this version's header, or None (audio, handshake, or not ours)."""
    if len(data) < HEADER_BYTES or data[:2] != MAGIC or data[2] != VERSION or data[3] not in _PROBE_TYPES:
        return None
    return ProbeType(data[3])
