from __future__ import annotations

from nmp_peer.proto.wire import Packet, PayloadType
from nmp_peer.receiver.jitter import Arrival, JitterBuffer


def pkt(seq: int, stream: int = 1) -> Packet:
    return Packet(PayloadType.PCM16, 1, stream, seq % 2**32, seq * 512, b"\0\0" * 512)


def played(jb: JitterBuffer, n: int) -> list[int | None]:
    out = []
    for _ in range(n):
        _, p = jb.pop()
        out.append(None if p is None else p.seq)
    return out


def test_orders_packets_and_reports_gaps() -> None:
    jb = JitterBuffer()
    fates = [jb.push(pkt(s)) for s in (10, 12, 11, 14)]
    assert fates == [Arrival.ACCEPTED, Arrival.ACCEPTED, Arrival.REORDERED, Arrival.ACCEPTED]
    assert played(jb, 5) == [10, 11, 12, None, 14]


def test_duplicates_and_late_packets() -> None:
    jb = JitterBuffer()
    jb.push(pkt(0))
    jb.push(pkt(2))
    assert jb.push(pkt(2)) is Arrival.DUPLICATE
    assert played(jb, 2) == [0, None]
    assert jb.push(pkt(1)) is Arrival.LATE  # its slot was concealed already
    assert jb.push(pkt(1)) is Arrival.DUPLICATE
    assert jb.push(pkt(0)) is Arrival.DUPLICATE  # played in time, arrives again
    assert played(jb, 1) == [2]


def test_reordering_before_playout_starts_is_not_lost() -> None:
    jb = JitterBuffer()
    jb.push(pkt(5))
    assert jb.push(pkt(4)) is Arrival.REORDERED
    assert played(jb, 2) == [4, 5]


def test_sequence_wraparound_is_seamless() -> None:
    jb = JitterBuffer()
    start = 2**32 - 3
    for s in range(start, start + 6):
        jb.push(pkt(s))
    assert played(jb, 6) == [(start + i) % 2**32 for i in range(6)]


def test_a_stray_packet_does_not_resync_but_a_new_stream_does() -> None:
    jb = JitterBuffer(resync_after=3)
    for s in range(3):
        jb.push(pkt(s))
    assert jb.push(pkt(1000, stream=2)) is Arrival.OUT_OF_WINDOW
    assert jb.push(pkt(3)) is Arrival.ACCEPTED
    assert jb.push(pkt(500_000)) is Arrival.OUT_OF_WINDOW
    fates = [jb.push(pkt(s, stream=9)) for s in (77, 78, 79)]
    assert fates == [Arrival.OUT_OF_WINDOW, Arrival.OUT_OF_WINDOW, Arrival.RESYNC]
    assert jb.stream_id == 9
    assert played(jb, 1) == [79]
