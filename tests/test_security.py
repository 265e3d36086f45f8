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
from nmp_peer.proto.security import Authenticator, KeyFileError, RateLimiter, ReplayWindow, load_key
from nmp_peer.proto.wire import Packet
from nmp_peer.receiver.gate import ReceiveGate
from nmp_peer.receiver.stats import Stats

KEY = bytes(range(32))
A = ("198.18.0.1", 5000)
B = ("198.18.0.2", 5000)


def packets(n: int, first_seq: int = 0):
    p = Packetizer(Pcm16Codec(), 1, first_seq=first_seq)
    audio = music_like(n * 512 / 44100 + 0.1)
    return [p.packetize(audio[k * 512 : (k + 1) * 512]) for k in range(n)]


def test_signed_packets_verify_and_any_change_breaks_the_tag() -> None:
    auth = Authenticator(KEY)
    pkt = auth.sign(packets(1)[0])
    wire = pkt.serialize()
    assert auth.verify(Packet.parse(wire))
    assert not Authenticator(bytes(32)).verify(Packet.parse(wire))
    for pos in (6, 12, 20, 30, len(wire) - 20, len(wire) - 1):  # header, payload and tag bytes
        forged = bytearray(wire)
        forged[pos] ^= 0x01
        try:
            assert not auth.verify(Packet.parse(bytes(forged)))
        except ValueError:
            pass  # the header no longer parses: also rejected
    assert not auth.verify(replace(pkt, tag=b""))


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


def test_gate_without_key_pins_the_peer_and_counts_everything_else() -> None:
    stats = Stats()
    gate = ReceiveGate(stats, peer_host=A[0])
    ps = [p.serialize() for p in packets(3)]
    assert gate.admit(ps[0], B) is None and stats.packets_foreign == 1  # not the configured host
    assert gate.admit(ps[0], A) is not None
    assert gate.admit(ps[1], (A[0], 6000)) is None  # same host, other port: not the pinned source
    assert gate.admit(b"junk", A) is None and stats.packets_malformed == 1
    assert gate.admit(b"x" * 5000, A) is None and stats.packets_oversized == 1
    assert gate.admit(ps[2], A) is not None


def test_gate_with_key_rejects_forged_and_replayed_packets_and_allows_roaming() -> None:
    stats = Stats()
    auth = Authenticator(KEY)
    gate = ReceiveGate(stats, peer_host=A[0], authenticator=auth)
    signed = [auth.sign(p).serialize() for p in packets(4)]
    assert gate.admit(signed[0], A) is not None
    assert gate.admit(signed[0], A) is None and stats.packets_replayed == 1
    assert gate.admit(packets(1)[0].serialize(), A) is None and stats.packets_unauthenticated == 1
    assert gate.admit(Authenticator(b"k" * 32).sign(packets(1)[0]).serialize(), A) is None
    assert stats.packets_unauthenticated == 2
    assert gate.admit(signed[1], B) is not None  # authenticated from a new address: roaming


@pytest.mark.slow
def test_foreign_flood_at_fifty_times_the_stream_rate_does_not_disturb_playout() -> None:
    from nmp_peer.conceal.simple import RepeatConcealer
    from nmp_peer.receiver.latency import LatencyPolicy
    from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine

    stats = Stats()
    engine = PlayoutEngine(
        RepeatConcealer(), PlayoutConfig(latency=LatencyPolicy(mode="fixed", depth_packets=2)), stats=stats
    )
    gate = ReceiveGate(stats, peer_host=A[0])
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
        # Both up (a status line each: they send from their start), then 1.5 s together:
        # each sends 86 packets a second, all signed with a key the other does not have.
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
    assert sa["packets_received"] == 0 and sa["packets_unauthenticated"] > 50, sa
    assert sb["packets_received"] == 0 and sb["packets_unauthenticated"] > 50, sb


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
