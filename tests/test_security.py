"""Authentication, replay protection and the receive gate."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import JamProcess, music_like

from nmp_peer.proto.codec import Pcm16Codec
from nmp_peer.proto.packetizer import Packetizer
from nmp_peer.proto.security import KeyFileError, RateLimiter, ReplayWindow, load_key
from nmp_peer.proto.session import HandshakeError, Session
from nmp_peer.proto.wire import Packet
from nmp_peer.receiver.gate import ReceiveGate
from nmp_peer.receiver.stats import Stats

KEY = bytes(range(32))
A = ("198.18.0.1", 5000)
B = ("198.18.0.2", 5000)


def packets(n: int, first_seq: int = 0):
    return packets_of(Packetizer(Pcm16Codec(), 1, first_seq=first_seq), n)


def packets_of(p: Packetizer, n: int):
    audio = music_like(n * 512 / 44100 + 0.1)
    return [p.packetize(audio[k * 512 : (k + 1) * 512]) for k in range(n)]


def handshake(sender: Session, receiver: Session, stream_id: int, now: float = 0.0) -> None:
    """One HELLO and its WELCOME, delivered."""
    hello = sender.outbound.poll(now, stream_id)
    welcome = receiver.on_control(receiver.decode(hello[0]), now)
    assert welcome is not None
    sender.on_control(sender.decode(welcome), now)
    assert sender.outbound.established


def test_sealed_packets_open_and_any_change_breaks_the_tag() -> None:
    a, b = Session(KEY), Session(KEY)
    p = Packetizer(Pcm16Codec(), 1)
    handshake(a, b, p.stream_id)
    plain = p.packetize(music_like(0.1)[:512])
    wire = a.outbound.seal(plain).serialize()
    assert plain.payload not in wire  # encrypted by default
    opened, what = b.inbound.open(Packet.parse(wire))
    assert what == "new session" and opened is not None and opened.payload == plain.payload
    for pos in (6, 12, 20, 30, len(wire) - 20, len(wire) - 1):  # header, payload and tag bytes
        forged = bytearray(wire)
        forged[pos] ^= 0x01
        try:
            assert b.inbound.open(Packet.parse(bytes(forged)))[0] is None
        except ValueError:
            pass  # the header no longer parses: also rejected
    assert b.inbound.open(replace(Packet.parse(wire), tag=b""))[0] is None


def test_authenticate_only_sends_the_payload_in_clear_and_still_rejects_changes() -> None:
    a, b = Session(KEY, encrypt=False), Session(KEY)
    p = Packetizer(Pcm16Codec(), 1)
    handshake(a, b, p.stream_id)
    plain = p.packetize(music_like(0.1)[:512])
    wire = a.outbound.seal(plain).serialize()
    assert plain.payload in wire
    assert b.inbound.open(Packet.parse(wire))[0] is not None
    forged = bytearray(wire)
    forged[40] ^= 0x01
    assert b.inbound.open(Packet.parse(bytes(forged)))[0] is None


def test_no_packet_of_an_old_session_or_the_other_direction_opens() -> None:
    a, b = Session(KEY), Session(KEY)
    pa, pb = Packetizer(Pcm16Codec(), 1), Packetizer(Pcm16Codec(), 1)
    handshake(a, b, pa.stream_id)
    handshake(b, a, pb.stream_id)
    a_to_b = [a.outbound.seal(x).serialize() for x in packets_of(pa, 5)]
    b_to_a = [b.outbound.seal(x).serialize() for x in packets_of(pb, 5)]
    assert all(b.inbound.open(Packet.parse(d))[0] is not None for d in a_to_b)
    # Reflection: B's own packets sent back to B, and A's to A.
    assert all(b.inbound.open(Packet.parse(d)) == (None, "unauthenticated") for d in b_to_a)
    assert all(a.inbound.open(Packet.parse(d)) == (None, "unauthenticated") for d in a_to_b)
    # A restarts (a new instance, the same key): session 1's packets never open again.
    a2 = Session(KEY)
    pa2 = Packetizer(Pcm16Codec(), 1)
    handshake(a2, b, pa2.stream_id)
    assert b.inbound.open(Packet.parse(a2.outbound.seal(packets_of(pa2, 1)[0]).serialize()))[1] == "new session"
    assert all(b.inbound.open(Packet.parse(d))[0] is None for d in a_to_b)


def test_handshake_retries_the_same_hello_and_ignores_replays() -> None:
    a, b = Session(KEY), Session(KEY)
    p = Packetizer(Pcm16Codec(), 1)
    first = a.outbound.poll(0.0, p.stream_id)
    assert a.outbound.poll(0.1, p.stream_id) == []  # not yet due
    again = a.outbound.poll(0.3, p.stream_id)
    assert first == again and len(first) == 1
    welcome = b.on_control(b.decode(first[0]), 0.3)
    assert welcome is not None
    assert b.on_control(b.decode(first[0]), 0.31) == welcome  # our answer was lost: the same again
    assert a.on_control(a.decode(welcome), 0.32) is None and a.outbound.established
    # A replayed WELCOME names a nonce A no longer waits for; a HELLO nobody completes opens nothing.
    key_before = a.outbound.cipher
    a.on_control(a.decode(welcome), 0.4)
    assert a.outbound.cipher is key_before
    with pytest.raises(HandshakeError):
        Session(bytes(32)).decode(first[0])


def test_the_sender_rekeys_and_the_stream_goes_on_without_a_resync() -> None:
    a, b = Session(KEY, rekey_after=50), Session(KEY)
    p = Packetizer(Pcm16Codec(), 1, first_seq=2**32 - 20)  # and through the sequence wrap
    handshake(a, b, p.stream_id)
    first_key = a.outbound.cipher
    opened = 0
    for k, packet in enumerate(packets_of(p, 120)):
        for hello in a.outbound.poll(0.01 * k, p.stream_id):
            a.on_control(a.decode(b.on_control(b.decode(hello), 0.01 * k) or b""), 0.01 * k)
        what = b.inbound.open(Packet.parse(a.outbound.seal(packet).serialize()))[1]
        opened += what in ("ok", "new session")
    assert opened == 120 and a.outbound.handshakes == 3 and a.outbound.cipher is not first_key


def test_a_restarted_peer_makes_the_other_open_a_new_session_for_its_own_stream() -> None:
    a, b = Session(KEY), Session(KEY)
    pa, pb = Packetizer(Pcm16Codec(), 1), Packetizer(Pcm16Codec(), 1)
    handshake(a, b, pa.stream_id)
    handshake(b, a, pb.stream_id)
    assert b.outbound.poll(1.0, pb.stream_id) == []  # established: nothing to send
    a2 = Session(KEY)  # A restarted: its first HELLO tells B to open a new session for B's stream
    hello = a2.outbound.poll(2.0, pa.stream_id)[0]
    b.on_control(b.decode(hello), 2.0)
    renewed = b.outbound.poll(2.0, pb.stream_id)
    assert len(renewed) == 1
    a2.on_control(a2.decode(renewed[0]), 2.0)  # A2 answers; B completes with the answer
    b.on_control(b.decode(a2.inbound.on_hello(b.decode(renewed[0])) or b""), 2.0)  # type: ignore[arg-type]
    sealed = b.outbound.seal(packets_of(pb, 1)[0])
    assert sealed is not None and a2.inbound.open(Packet.parse(sealed.serialize()))[1] == "new session"


def test_replay_window_accepts_each_sequence_once_also_across_wraparound() -> None:
    w = ReplayWindow(size=64)
    seqs = [2**32 - 3, 2**32 - 1, 2**32 - 2, 0, 1]
    assert all(w.check(7, s % 2**32) for s in seqs)
    assert not any(w.check(7, s % 2**32) for s in seqs)
    assert w.check(7, 100)
    assert not w.check(7, 100 - 64)  # older than the window
    assert w.check(8, 100)  # another stream has its own window


def test_rate_limiter_is_per_source() -> None:
    rl = RateLimiter(rate=100, burst=10)
    allowed = sum(rl.allow(A, now=0.0) for _ in range(50))
    assert allowed == 10
    assert rl.allow(B, now=0.0)
    assert sum(rl.allow(A, now=1.0) for _ in range(200)) == 10  # refilled to the burst size


def test_gate_without_key_pins_the_exact_peer_and_counts_everything_else() -> None:
    stats = Stats()
    gate = ReceiveGate(stats, peer=A)
    ps = [p.serialize() for p in packets(3)]
    assert gate.admit(ps[0], B, 0.0) is None and stats.packets_foreign == 1  # not the configured host
    assert gate.admit(ps[0], (A[0], 6000), 0.0) is None and stats.packets_foreign == 2  # another port
    assert gate.admit(ps[0], A, 0.0) is not None and gate.new_stream and stats.pinned == "198.18.0.1:5000"
    assert gate.admit(b"junk", A, 0.0) is None and stats.packets_malformed == 1
    assert gate.admit(b"x" * 5000, A, 0.0) is None and stats.packets_oversized == 1
    assert gate.admit(ps[2], A, 0.0) is not None and not gate.new_stream


def test_gate_without_key_follows_a_new_stream_only_after_the_old_one_fell_silent_or_ended() -> None:
    stats = Stats()
    gate = ReceiveGate(stats, peer=A, repin_after_s=0.5)
    real, other = packets(20), packets(20)
    assert gate.admit(real[0].serialize(), A, 0.0) is not None
    # A forged stream under the peer's own address while the peer plays: foreign.
    assert all(gate.admit(other[k].serialize(), A, 0.01 * k) is None for k in range(10))
    assert stats.packets_foreign == 10
    assert gate.admit(real[1].serialize(), A, 0.2) is not None
    assert gate.admit(other[10].serialize(), A, 0.69) is None  # 0.49 s of silence: not yet
    assert gate.admit(other[11].serialize(), A, 0.71) is not None and gate.new_stream  # a restarted peer
    assert stats.repins == 1
    # An ended stream gives way at once.
    p = Packetizer(Pcm16Codec(), 1)
    ended = ReceiveGate(Stats(), peer=A)
    assert ended.admit(p.packetize(music_like(0.1)[:512]).serialize(), A, 0.0) is not None
    assert ended.admit(p.end_packets()[0].serialize(), A, 0.01) is not None
    assert ended.admit(packets(1)[0].serialize(), A, 0.02) is not None and ended.new_stream


def test_gate_host_pin_accepts_any_port_of_the_peer_host() -> None:
    gate = ReceiveGate(Stats(), peer=A, pin="host")
    assert gate.admit(packets(1)[0].serialize(), (A[0], 40000), 0.0) is not None
    assert gate.admit(packets(1)[0].serialize(), B, 1.0) is None


def test_gate_with_key_rejects_forged_and_replayed_packets_and_allows_roaming() -> None:
    stats = Stats()
    a, b = Session(KEY), Session(KEY)
    p = Packetizer(Pcm16Codec(), 1)
    gate = ReceiveGate(stats, peer=A, session=b)
    hello = a.outbound.poll(0.0, p.stream_id)[0]
    assert gate.admit(hello, A, 0.0) is None and len(gate.outbox) == 1
    a.on_control(a.decode(gate.outbox.pop()), 0.0)
    sealed = [a.outbound.seal(x).serialize() for x in packets_of(p, 4)]
    assert gate.admit(sealed[0], A, 0.0) is not None and gate.new_stream and stats.sessions == 1
    assert gate.admit(sealed[0], A, 0.0) is None and stats.packets_replayed == 1
    assert gate.admit(packets(1)[0].serialize(), A, 0.0) is None and stats.packets_unauthenticated == 1
    other = Session(b"k" * 32)
    assert gate.admit(other.outbound.poll(0.0, 1)[0], A, 0.0) is None and stats.packets_unauthenticated == 2
    assert gate.admit(sealed[1], B, 0.0) is not None and stats.pinned == "198.18.0.2:5000"  # roaming


def test_junk_under_the_peers_own_address_never_uses_up_its_allowance() -> None:
    for keyed in (False, True):
        stats = Stats()
        a, b = Session(KEY), Session(KEY)
        p = Packetizer(Pcm16Codec(), 1)
        gate = ReceiveGate(stats, peer=A, session=b if keyed else None, rate_limiter=RateLimiter(rate=200, burst=8))
        if keyed:
            gate.admit(a.outbound.poll(0.0, p.stream_id)[0], A, 0.0)
            a.on_control(a.decode(gate.outbox.pop()), 0.0)
        forged = packets(3000)
        real = packets_of(p, 100)
        admitted = 0
        for k, packet in enumerate(real):  # 30 forged datagrams per real one: 2600 a second
            t = k / 86.0
            real_data = a.outbound.seal(packet).serialize() if keyed else packet.serialize()
            admitted += gate.admit(real_data, A, t) is not None
            for j in range(30):  # another stream, or broken, under the peer's own address and port
                data = forged[30 * k + j].serialize()
                assert gate.admit(data if j % 2 else data[:-3], A, t) is None
        assert admitted == 100, (keyed, stats)


@pytest.mark.slow
def test_foreign_flood_at_fifty_times_the_stream_rate_does_not_disturb_playout() -> None:
    from nmp_peer.conceal.simple import RepeatConcealer
    from nmp_peer.receiver.latency import LatencyPolicy
    from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine

    stats = Stats()
    engine = PlayoutEngine(
        RepeatConcealer(), PlayoutConfig(latency=LatencyPolicy(mode="fixed", depth_packets=2)), stats=stats
    )
    gate = ReceiveGate(stats, peer=A)
    real = packets(300)
    attacker = packets(300 * 50)  # a valid-looking stream from another host
    outs = []
    for k, pkt in enumerate(real):
        now = k * 512.0
        t = k / 86.13
        for j in range(50):
            for admitted in [gate.admit(attacker[k * 50 + j].serialize(), ("203.0.113.9", 4000 + j % 7), now=t)]:
                assert admitted is None
        admitted = gate.admit(pkt.serialize(), A, now=t)
        assert admitted is not None
        engine.push(admitted, now)
        outs.append(engine.next_block(now))
    assert stats.packets_concealed == 0
    assert stats.packets_foreign + stats.packets_rate_limited == 300 * 50


def test_key_files_hex_or_raw_and_clear_errors(tmp_path: Path) -> None:
    hexfile = tmp_path / "k.hex"
    hexfile.write_text(KEY.hex() + "\n")
    assert load_key(hexfile) == KEY
    raw = tmp_path / "k.bin"
    raw.write_bytes(os.urandom(32))
    assert len(load_key(raw)) == 32
    short = tmp_path / "short"
    short.write_text("abcd")
    with pytest.raises(KeyFileError, match="at least 16"):
        load_key(short)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_key(tmp_path / "missing")


@pytest.mark.slow
def test_jam_with_a_key_hears_only_the_peer_with_the_same_key(tmp_path: Path) -> None:
    import socket

    def port() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    good, bad = tmp_path / "good.key", tmp_path / "bad.key"
    good.write_text(os.urandom(32).hex())
    bad.write_text(os.urandom(32).hex())
    clip = tmp_path / "a.wav"
    from nmp_peer.audio_io import write_audio

    write_audio(clip, music_like(1.0))
    pa, pb = port(), port()
    common = ["--input", str(clip), "--duration", "120"]  # a safety net: the test stops them
    a = JamProcess(["--listen", f"127.0.0.1:{pa}", "--peer", f"127.0.0.1:{pb}", "--key-file", str(good), *common])
    b = JamProcess(["--listen", f"127.0.0.1:{pb}", "--peer", f"127.0.0.1:{pa}", "--key-file", str(bad), *common])
    try:
        # Both up (a status line each), then 1.5 s together: each sends a HELLO every
        # 0.25 s under a key the other does not have, so no session opens and no audio goes out.
        for peer in (a, b):
            peer.wait_for("the peer's first status line", lambda peer=peer: peer.status_lines() > 0, timeout_s=60)
        both_up = time.monotonic()
        for peer in (a, b):
            peer.wait_for("1.5 s of both peers running", lambda: time.monotonic() - both_up >= 1.5, timeout_s=10)
        (ca, sa, ea), (cb, sb, eb) = a.stop(), b.stop()
    finally:
        a.kill()
        b.kill()
    assert ca == 0 and cb == 0, (ea, eb)
    for summary in (sa, sb):
        assert summary["packets_received"] == 0 and summary["packets_sent"] == 0, summary
        assert summary["handshakes"] == 0 and summary["packets_unsent"] > 50, summary
        assert summary["packets_unauthenticated"] >= 3 and summary["handshake_messages"] == 0, summary


@pytest.mark.slow
def test_missing_key_file_is_one_line() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "nmp_peer.cli",
            "jam",
            "--peer",
            "127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
            "--key-file",
            "/no/such.key",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "/no/such.key" in r.stderr
