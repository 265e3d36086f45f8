from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmp_peer.proto.wire import HEADER_BYTES, TAG_BYTES, Packet, PayloadType, WireError, seq_delta


def sample_packet(**kw) -> Packet:
    fields = dict(
        payload_type=PayloadType.PCM16,
        channels=1,
        stream_id=0xDEADBEEF,
        seq=7,
        timestamp=2**40 + 3,
        payload=bytes(range(256)) * 4,
    )
    fields.update(kw)
    return Packet(**fields)


def test_roundtrip_with_and_without_tag() -> None:
    for packet in (sample_packet(), sample_packet(tag=b"t" * TAG_BYTES, channels=2)):
        data = packet.serialize()
        assert len(data) == HEADER_BYTES + len(packet.payload) + len(packet.tag)
        assert Packet.parse(data) == packet


def test_sequence_wraps_on_the_wire() -> None:
    data = sample_packet(seq=2**32 + 5).serialize()
    assert Packet.parse(data).seq == 5
    assert seq_delta(3, 2**32 - 2) == 5
    assert seq_delta(2**32 - 2, 3) == -5


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d[:10], "shorter"),
        (lambda d: b"XX" + d[2:], "magic"),
        (lambda d: d[:2] + b"\x09" + d[3:], "version"),
        (lambda d: d[:3] + b"\x07" + d[4:], "payload type"),
        (lambda d: d[:4] + b"\x03" + d[5:], "channel"),
        (lambda d: d[:5] + b"\x80" + d[6:], "flags"),
        (lambda d: d + b"x", "length"),
        (lambda d: d[:-1], "length"),
        (lambda d: d[:22] + struct.pack(">H", 1) + d[24:25], "whole frames"),
    ],
)
def test_malformed_datagrams_raise_wire_error(mutate, message) -> None:
    with pytest.raises(WireError, match=message):
        Packet.parse(mutate(sample_packet().serialize()))


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=2200))
def test_random_bytes_raise_only_wire_error(data: bytes) -> None:
    try:
        Packet.parse(data)
    except WireError:
        pass


@pytest.mark.slow
@settings(max_examples=3000, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1100), st.integers(0, 255)), max_size=8), st.integers(0, 1100))
def test_mutated_packets_raise_only_wire_error(flips, cut) -> None:
    data = bytearray(sample_packet().serialize())
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    datagram = bytes(data[:cut]) if cut < len(data) else bytes(data)
    try:
        parsed = Packet.parse(datagram)
    except WireError:
        return
    assert parsed.serialize() == datagram


def test_a_parsed_packet_is_the_frozen_dataclass_its_fields_make():
    """Parsing builds packets through their slots (``make_packet``): equal, hashing alike and
    as frozen as ``Packet(...)``, every field set."""
    import dataclasses

    from nmp_peer.proto.wire import make_packet

    made = Packet(PayloadType.PCM16, 2, 7, 9, 11, b"\x01\x02\x03\x04", b"", False, False)
    parsed = Packet.parse(made.serialize())
    assert parsed == made and hash(parsed) == hash(made) and type(parsed) is Packet
    assert dataclasses.astuple(parsed) == dataclasses.astuple(made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.seq = 10  # type: ignore[misc]
    fast = make_packet(PayloadType.OPUS, 1, 3, 4, 5, b"x", b"t" * 16, True, True)
    assert fast == Packet(PayloadType.OPUS, 1, 3, 4, 5, b"x", b"t" * 16, True, True)
