"""Attacks on a live session between two real ``nmp-peer jam`` processes on loopback.

Each test is one row of the sessions issue's table: an attacker on the same host that can
capture and replay (an on-path tap the peers send through), forge source ports (raw
sockets, as root) or race the real peer. Ground truth: the listener B's counters (every
packet A sent received, none lost) and B's recording (no block of the attacker's audio,
and no block of A's played twice). The peers' clips are noise, so every block is unique.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import JamProcess

from nmp_peer.audio_io import read_audio, write_audio
from nmp_peer.proto.codec import Pcm16Codec
from nmp_peer.proto.packetizer import Packetizer
from nmp_peer.proto.wire import Packet, WireError

pytestmark = pytest.mark.slow
BLOCK = 512
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="forging a source port needs a raw socket: run the tests as root")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def noise(seconds: float, seed: int) -> np.ndarray:
    """At PCM16 values as a WAV file reads back (k / 32768)."""
    x = np.random.default_rng(seed).standard_normal((int(seconds * 44100), 1)) * 3277
    return (np.clip(np.round(x), -32768, 32767) / 32768).astype(np.float32)


def occurrences(out: np.ndarray, src: np.ndarray) -> np.ndarray:
    """How often each block of ``src`` is played exactly in ``out`` (any offset)."""
    o, s = out.reshape(len(out), -1)[:, 0], src.reshape(len(src), -1)[:, 0]
    n = len(s) // BLOCK
    counts = np.zeros(n, int)
    starts = s[: n * BLOCK : BLOCK]
    candidates = np.flatnonzero(np.isin(o[: len(o) - BLOCK + 1], starts[starts != 0]))
    first = {float(v): k for k, v in enumerate(starts)}
    for c in candidates:
        k = first.get(float(o[c]))
        if k is not None and np.array_equal(o[c : c + BLOCK], s[k * BLOCK : (k + 1) * BLOCK]):
            counts[k] += 1
    return counts


def attacker_packets(seconds: float, seed: int = 99, first_seq: int | None = None) -> tuple[list[bytes], np.ndarray]:
    audio = noise(seconds, seed)
    p = Packetizer(Pcm16Codec(), 1, first_seq=first_seq)
    return [p.packetize(audio[k * BLOCK : (k + 1) * BLOCK]).serialize() for k in range(len(audio) // BLOCK)], audio


class Forger:
    """Sends UDP datagrams from any source port of 127.0.0.1 (a raw socket: root only)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)

    def send(self, data: bytes, src_port: int, dst: tuple[str, int]) -> None:
        header = struct.pack("!HHHH", src_port, dst[1], 8 + len(data), 0)  # checksum 0: none (IPv4)
        self.sock.sendto(header + data, (dst[0], 0))

    def close(self) -> None:
        self.sock.close()


class Tap:
    """An on-path attacker: the peers send through it; it forwards, records and injects."""

    def __init__(self, b: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()
        self.b = b
        self.a: tuple[str, int] | None = None
        self.a2b: list[bytes] = []
        self.b2a: list[bytes] = []
        self.forwarding = True
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data, src = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if src == self.b:
                self.b2a.append(data)
                if self.forwarding and self.a is not None:
                    self.sock.sendto(data, self.a)
            else:
                self.a = src
                self.a2b.append(data)
                if self.forwarding:
                    self.sock.sendto(data, self.b)

    def inject(self, data: bytes) -> None:
        """To B, from the address B knows as its peer's."""
        self.sock.sendto(data, self.b)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.sock.close()


def audio_of(datagrams: list[bytes]) -> list[bytes]:
    """The audio packets (not handshake messages, not end notices) among recorded datagrams."""
    out = []
    for d in datagrams:
        try:
            if not Packet.parse(d).end:
                out.append(d)
        except WireError:
            pass
    return out


class Jam:
    """B listens (records its output); A plays a noise clip to B and ends; both with inputs."""

    def __init__(self, tmp: Path, *, key: Path | None, a_seconds: float = 6.0, through_tap: bool = False) -> None:
        self.tmp = tmp
        self.pa, self.pb = free_port(), free_port()
        self.a_clip, self.b_clip = noise(a_seconds, 1), noise(60.0, 2)
        write_audio(tmp / "a.wav", self.a_clip)
        write_audio(tmp / "b.wav", self.b_clip)
        self.key = ["--key-file", str(key)] if key is not None else []
        self.tap = Tap(("127.0.0.1", self.pb)) if through_tap else None
        self.peer_of_b = self.tap.address if self.tap else ("127.0.0.1", self.pa)
        self.a: JamProcess | None = None
        self.b: JamProcess | None = None
        self.runs = 0

    def start_b(self, name: str = "b_out.wav") -> JamProcess:
        peer = f"{self.peer_of_b[0]}:{self.peer_of_b[1]}"
        args = ["--listen", f"127.0.0.1:{self.pb}", "--peer", peer, "--input", str(self.tmp / "b.wav")]
        self.b = JamProcess([*args, "--output", str(self.tmp / name), "--duration", "120", *self.key])
        return self.b

    def start_a(self, clip: str = "a.wav") -> JamProcess:
        """A, once B listens (a status line: its socket is bound), so every packet A sends reaches B."""
        b = self.b
        assert b is not None
        b.wait_for("B listening", lambda: b.status_lines() > 0)
        target = self.tap.address if self.tap else ("127.0.0.1", self.pb)
        args = ["--listen", f"127.0.0.1:{self.pa}", "--peer", f"{target[0]}:{target[1]}"]
        self.a = JamProcess([*args, "--input", str(self.tmp / clip), "--duration", "120", *self.key])
        return self.a

    def wait_a_ended(self, timeout_s: float = 90.0) -> None:
        """Until B has received as many packets as A's clip has blocks."""
        assert self.a is not None and self.b is not None
        n = len(self.a_clip) // BLOCK
        b = self.b
        try:
            b.wait_for("B received A's clip", lambda: b.received() >= n, timeout_s)
        except AssertionError as exc:
            (_, sa, _), (_, sb, _) = self.a.stop(), b.stop()
            raise AssertionError(f"{str(exc)[:300]}\nA: {sa}\nB: {sb}") from None

    def stop(self) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
        assert self.a is not None and self.b is not None
        time.sleep(0.5)  # A's end notices and the last blocks through B's buffer
        ca, sa, ea = self.a.stop()
        cb, sb, eb = self.b.stop()
        assert ca == 0 and cb == 0, (ea[-800:], eb[-800:])
        out, _ = read_audio(self.tmp / "b_out.wav", channels=1)
        return sa, sb, out

    def kill(self) -> None:
        for p in (self.a, self.b):
            if p is not None:
                p.kill()
        if self.tap is not None:
            self.tap.close()


def assert_intact(jam: Jam, sa: dict[str, Any], sb: dict[str, Any], out: np.ndarray) -> None:
    """Every packet A sent received once and played; no block of A's played twice."""
    assert sb["packets_received"] == sa["packets_sent"] and sb["packets_lost"] == 0, (sa, sb)
    counts = occurrences(out, jam.a_clip)
    assert counts.max() <= 1, f"blocks of A's clip played twice: {np.flatnonzero(counts > 1)[:10]}"
    assert counts.sum() > 0  # the recording is A's (a resampled block matches nowhere, so not all)


def key_file(tmp: Path) -> Path:
    k = tmp / "jam.key"
    k.write_text(os.urandom(32).hex())
    return k


def test_pin_race_without_a_key_the_attacker_who_comes_first_is_not_followed(tmp_path: Path) -> None:
    jam = Jam(tmp_path, key=None)
    packets, attack_audio = attacker_packets(30.0)
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def flood() -> None:  # a valid-looking stream at the stream's own rate, from another port
        for k, data in enumerate(packets):
            if stop.wait(0.0116 if k else 0.0):
                return
            attacker.sendto(data, ("127.0.0.1", jam.pb))

    try:
        b = jam.start_b()
        sender = threading.Thread(target=flood, daemon=True)
        b.wait_for("B up", lambda: b.status_lines() > 0)
        sender.start()
        t = time.monotonic()
        b.wait_for("the attacker's stream at B for 0.5 s", lambda: time.monotonic() - t >= 0.5)
        jam.start_a()
        jam.wait_a_ended()
        stop.set()
        sa, sb, out = jam.stop()
    finally:
        stop.set()
        attacker.close()
        jam.kill()
    assert sb["packets_foreign"] + sb["packets_rate_limited"] >= 100, sb
    assert occurrences(out, attack_audio).sum() == 0
    assert_intact(jam, sa, sb, out)


@needs_root
def test_forged_source_port_without_a_key_a_new_stream_id_is_not_followed(tmp_path: Path) -> None:
    jam = Jam(tmp_path, key=None)
    forger = Forger()
    bursts: list[list[bytes]] = []
    audio = []
    for seed in range(12):  # a 3-packet burst of a new stream each time
        ps, a = attacker_packets(3 * BLOCK / 44100 + 0.001, seed=100 + seed)
        bursts.append(ps[:3])
        audio.append(a)
    try:
        b = jam.start_b()
        a = jam.start_a()
        b.wait_for("A's stream at B", lambda: b.received() > 50)
        for burst in bursts:  # under A's own address and port, every 0.3 s while A plays
            for data in burst:
                forger.send(data, jam.pa, ("127.0.0.1", jam.pb))
            time.sleep(0.3)
        assert a.process.poll() is None
        jam.wait_a_ended()
        sa, sb, out = jam.stop()
    finally:
        forger.close()
        jam.kill()
    assert sb["packets_foreign"] == 3 * len(bursts) and sb["repins"] == 0, sb
    assert sum(occurrences(out, x).sum() for x in audio) == 0
    assert_intact(jam, sa, sb, out)


def test_cross_session_replay_with_a_key_never_opens(tmp_path: Path) -> None:
    jam = Jam(tmp_path, key=key_file(tmp_path), a_seconds=4.0, through_tap=True)
    assert jam.tap is not None
    try:
        b = jam.start_b()
        first = jam.start_a()
        jam.wait_a_ended()
        first.stop()
        session1 = audio_of(jam.tap.a2b)
        assert len(session1) > 300
        rx_before = b.received()
        # Session 2: A again (a new process, the same key); session 1 replayed into it,
        # a burst of 3 first, then all of it at the stream's rate.
        write_audio(tmp_path / "a2.wav", noise(4.0, 3))
        jam.start_a("a2.wav")
        b.wait_for("session 2 heard", lambda: b.received() > rx_before + 20)
        for k, data in enumerate(session1):
            jam.tap.inject(data)
            if k >= 3:
                time.sleep(0.004)
        jam.a_clip = noise(4.0, 3)
        b.wait_for("session 2 received", lambda: b.received() >= rx_before + len(jam.a_clip) // BLOCK)
        sa, sb, out = jam.stop()
    finally:
        jam.kill()
    assert sb["packets_unauthenticated"] >= len(session1), sb
    assert occurrences(out, noise(4.0, 1)).sum() > 0  # session 1 was played, once
    assert occurrences(out, noise(4.0, 1)).max() <= 1
    assert sb["sessions"] == 2 and sb["packets_lost"] == 0, sb
    counts = occurrences(out, jam.a_clip)
    assert counts.max() <= 1 and counts.sum() > 0


def test_reflection_with_a_key_b_never_plays_its_own_packets(tmp_path: Path) -> None:
    jam = Jam(tmp_path, key=key_file(tmp_path), a_seconds=6.0, through_tap=True)
    assert jam.tap is not None
    try:
        b = jam.start_b()
        jam.start_a()
        b.wait_for("3.5 s of A's stream at B", lambda: b.received() > 300)
        own = audio_of(jam.tap.b2a)[:250]
        for data in own:  # B's own signed packets, back to B from its peer's address
            jam.tap.inject(data)
            time.sleep(0.002)
        jam.wait_a_ended()
        sa, sb, out = jam.stop()
    finally:
        jam.kill()
    assert sb["packets_unauthenticated"] >= len(own) >= 200, sb
    assert occurrences(out, jam.b_clip).sum() == 0
    assert_intact(jam, sa, sb, out)


def test_replay_window_cannot_be_evicted_with_a_key(tmp_path: Path) -> None:
    jam = Jam(tmp_path, key=key_file(tmp_path), a_seconds=10.0, through_tap=True)
    assert jam.tap is not None
    try:
        b = jam.start_b()
        jam.start_a()
        b.wait_for("7 s of A at B", lambda: b.received() > 7.5 * 86)
        old = audio_of(jam.tap.a2b)[:250]  # this session's own packets, 7 s old
        for sid in range(4):  # one packet each of 4 other stream ids (forged: no key for them)
            pkt = Packet.parse(old[sid])
            jam.tap.inject(Packet(pkt.payload_type, 1, 0x1000 + sid, pkt.seq, pkt.timestamp, pkt.payload).serialize())
        for data in old:
            jam.tap.inject(data)
            time.sleep(0.002)
        jam.wait_a_ended()
        sa, sb, out = jam.stop()
    finally:
        jam.kill()
    assert sb["packets_replayed"] >= len(old) and sb["packets_unauthenticated"] >= 4, sb
    assert_intact(jam, sa, sb, out)


@needs_root
@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "key"])
def test_forged_junk_from_the_peers_own_address_does_not_starve_it(tmp_path: Path, keyed: bool) -> None:
    jam = Jam(tmp_path, key=key_file(tmp_path) if keyed else None, a_seconds=6.0)
    forger = Forger()
    junk, _ = attacker_packets(4.0, seed=7)
    rng = np.random.default_rng(0)
    sent = 0
    try:
        b = jam.start_b()
        jam.start_a()
        b.wait_for("A's stream at B", lambda: b.received() > 50)
        t0 = time.monotonic()
        for k, data in enumerate(junk):  # 1000 a second for about 3.4 s: another stream, or garbage
            if k % 2:
                data = rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()
            forger.send(data, jam.pa, ("127.0.0.1", jam.pb))
            sent += 1
            lag = t0 + k / 1000.0 - time.monotonic()
            if lag > 0:
                time.sleep(lag)
        jam.wait_a_ended()
        sa, sb, out = jam.stop()
    finally:
        forger.close()
        jam.kill()
    dropped = sb["packets_foreign"] + sb["packets_malformed"] + sb["packets_unauthenticated"]
    assert dropped + sb["packets_rate_limited"] == sent, sb
    assert_intact(jam, sa, sb, out)


def test_a_keyed_jam_survives_a_restart_of_either_peer(tmp_path: Path) -> None:
    jam = Jam(tmp_path, key=key_file(tmp_path), a_seconds=60.0)
    try:
        b = jam.start_b("b1.wav")
        a1 = jam.start_a()
        b.wait_for("A at B", lambda: b.received() > 100)
        a1.kill()  # A dies (no end notice) and comes back at once: a new instance, a new handshake
        a2 = jam.start_a()
        a2.wait_for("A2 hears B", lambda: a2.received() > 50)
        b.wait_for("B hears A2", lambda: b.received() > 200)
        b.kill()  # now B dies and comes back
        b2 = jam.start_b("b_out.wav")
        b2.wait_for("B2 hears A2", lambda: b2.received() > 100)
        a2.wait_for("A2 hears B2", lambda: a2.received() > 150)
        ca, sa, ea = a2.stop()
        cb, sb, eb = b2.stop()
    finally:
        jam.kill()
    assert ca == 0 and cb == 0, (ea[-800:], eb[-800:])
    # A2 opened its own session at once (B was up), and a second one for B2, which told it
    # B had restarted; blocks A2 captured before its first session: one round trip's worth.
    assert sa["handshakes"] == 2 and sa["packets_unsent"] <= 43, sa
    # B2 heard A2 within 0.5 s of starting: A2's packets under the old session that B2 could
    # not open are at most 43 (86 a second); B2's own first session opened as fast.
    assert sb["packets_unauthenticated"] <= 43 and sb["sessions"] == 1, sb
    assert sb["handshakes"] == 1 and sb["packets_unsent"] <= 43, sb
    assert sb["packets_lost"] == 0 and sa["packets_lost"] == 0, (sa, sb)


def test_a_keyed_jam_survives_a_ten_second_outage(tmp_path: Path) -> None:
    jam = Jam(tmp_path, key=key_file(tmp_path), a_seconds=60.0, through_tap=True)
    assert jam.tap is not None
    try:
        b = jam.start_b()
        a = jam.start_a()
        b.wait_for("A at B", lambda: b.received() > 100)
        jam.tap.forwarding = False
        time.sleep(10.0)
        rx = b.received()
        jam.tap.forwarding = True
        b.wait_for("A at B after the outage", lambda: b.received() > rx + 100, timeout_s=30)
        a.wait_for("B at A after the outage", lambda: a.received() > 100, timeout_s=30)
        ca, sa, ea = a.stop()
        cb, sb, eb = b.stop()
    finally:
        jam.kill()
    assert ca == 0 and cb == 0, (ea[-800:], eb[-800:])
    assert sa["handshakes"] == 1 and sb["sessions"] == 1, (sa, sb)  # the session outlived the outage
    assert sb["packets_unauthenticated"] == 0, sb
