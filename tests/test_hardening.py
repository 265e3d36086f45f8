"""The receiver against hostile and broken input, long runs and timeline jumps."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.conceal.simple import RepeatConcealer
from nmp_peer.netsim.impair import Impairment
from nmp_peer.netsim.loss import GilbertElliottLoss
from nmp_peer.proto.codec import Pcm16Codec
from nmp_peer.proto.packetizer import Packetizer
from nmp_peer.proto.security import RateLimiter
from nmp_peer.proto.session import Session
from nmp_peer.proto.wire import Packet
from nmp_peer.receiver.gate import ReceiveGate
from nmp_peer.receiver.latency import LatencyPolicy
from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine
from nmp_peer.receiver.stats import Stats

PEER = ("198.18.0.1", 5000)
TONE_HZ = 4 * SAMPLE_RATE / BLOCK_FRAMES  # whole periods per packet: every packet identical, seams smooth


def tone_block(amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * TONE_HZ * np.arange(BLOCK_FRAMES) / SAMPLE_RATE)).astype(np.float32)[:, None]


def engine(depth: int = 3, mode: str = "fixed", stats: Stats | None = None) -> PlayoutEngine:
    return PlayoutEngine(
        RepeatConcealer(), PlayoutConfig(latency=LatencyPolicy(mode=mode, depth_packets=depth)), stats=stats
    )


def fuzz_datagrams(rng: np.random.Generator, template: bytes, n: int) -> list[bytes]:
    """Random bytes, truncated and oversized packets, flipped bytes, and header fields set at
    random (payload type, stream id, sequence jumps, timestamps going backwards): everything
    the network can throw. Built in bulk with numpy so a million take seconds."""
    t = np.frombuffer(template, np.uint8)
    rows = np.tile(t, (n, 1))
    kinds = rng.integers(0, 8, n)
    lengths = rng.integers(0, len(t), n)
    flip = kinds == 3
    cols = rng.integers(0, len(t), (n, 4))
    rows[np.repeat(np.flatnonzero(flip), 4), cols[flip].ravel()] = rng.integers(
        0, 256, 4 * int(flip.sum()), dtype=np.uint8
    )
    for kind, (start, stop) in {4: (3, 4), 5: (6, 10), 6: (10, 14), 7: (14, 22)}.items():
        sel = np.flatnonzero(kinds == kind)
        rows[sel, start:stop] = rng.integers(0, 256, (len(sel), stop - start), dtype=np.uint8)
    noise = rng.integers(0, 256, (n, 64), dtype=np.uint8)
    out: list[bytes] = []
    for i in range(n):
        kind = kinds[i]
        if kind == 0:
            out.append(rng.bytes(int(lengths[i])))
        elif kind == 1:
            out.append(rows[i, : lengths[i]].tobytes())
        elif kind == 2:
            out.append(rows[i].tobytes() + noise[i, : 1 + lengths[i] % 64].tobytes())
        else:
            out.append(rows[i].tobytes())
    return out


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.slow
def test_a_million_hostile_datagrams_change_nothing_for_the_real_stream() -> None:
    rng = np.random.default_rng(0)
    stats = Stats()
    peer, ours = Session(bytes(range(32))), Session(bytes(range(32)))
    gate = ReceiveGate(stats, peer=PEER, session=ours, rate_limiter=RateLimiter(rate=1e12, burst=1e12))
    eng = engine(stats=stats)
    sender = Packetizer(Pcm16Codec(), 1)
    gate.admit(peer.outbound.poll(0.0, sender.stream_id)[0], PEER, 0.0)
    peer.on_control(peer.decode(gate.outbox.pop()), 0.0)
    block = tone_block()
    seal = peer.outbound.seal
    template = seal(sender.packetize(block)).serialize()  # type: ignore[union-attr]
    first = gate.admit(template, PEER, 0.0)  # the real stream's first packet: later copies are replays
    assert first is not None
    eng.push(first, 0.0)
    total, per_tick = 1_000_000, 2_000
    outs = []
    baseline = 0
    for tick in range(total // per_tick):
        now = float(tick * BLOCK_FRAMES)
        for data in fuzz_datagrams(rng, template, per_tick):
            packet = gate.admit(data, PEER, tick / 86.0)  # spoofing the peer's own address
            if packet is not None:
                eng.push(packet, now)
        real = gate.admit(seal(sender.packetize(block)).serialize(), PEER, tick / 86.0)  # type: ignore[union-attr]
        assert real is not None
        eng.push(real, now)
        outs.append(eng.next_block(now))
        if tick == 100:
            baseline = rss_bytes()
    grown = rss_bytes() - baseline
    assert grown < 16_000_000, f"memory grew by {grown} bytes"
    # Every hostile datagram was rejected; the few that equal the real template are replays.
    rejected = (
        stats.packets_malformed + stats.packets_unauthenticated + stats.packets_oversized + stats.packets_replayed
    )
    assert rejected == total
    assert stats.packets_concealed == 0 and stats.packets_received == total // per_tick + 1
    out = np.concatenate(outs)[eng.first_slot[1] :]
    out = out[: len(out) // BLOCK_FRAMES * BLOCK_FRAMES]
    assert np.allclose(out, np.tile(block, (len(out) // BLOCK_FRAMES, 1)), atol=1e-4)


def test_unauthenticated_structural_fuzz_reaches_the_jitter_buffer_without_harm() -> None:
    """Without a key, valid-looking packets with any header values go straight to the buffer."""
    rng = np.random.default_rng(1)
    eng = engine()
    template = Packetizer(Pcm16Codec(), 1).packetize(tone_block()).serialize()
    for tick, data in enumerate(fuzz_datagrams(rng, template, 100_000)):
        eng.push_datagram(data, float(tick // 50 * BLOCK_FRAMES))
        if tick % 50 == 0:
            out = eng.next_block(float(tick // 50 * BLOCK_FRAMES))
            assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
    assert len(eng.jitter) <= eng.jitter.window


def play_stream(eng: PlayoutEngine, schedule: list[tuple[int, Packet | None]]) -> np.ndarray:
    """schedule: per tick, the packet that arrives (or None)."""
    outs = []
    for tick, packet in schedule:
        now = float(tick * BLOCK_FRAMES)
        if packet is not None:
            eng.push(packet, now)
        outs.append(eng.next_block(now))
    return np.concatenate(outs)[:, 0]


def max_step(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x)).max())


@pytest.mark.parametrize("jump", ["restart", "pause", "wraparound"])
def test_sequence_jumps_resynchronise_quickly_without_a_click(jump: str) -> None:
    block = tone_block()
    a = Packetizer(Pcm16Codec(), 1, first_seq=2**32 - 150 if jump == "wraparound" else 1000)
    b = Packetizer(Pcm16Codec(), 1, first_seq=77) if jump == "restart" else a
    eng = engine(depth=2)
    schedule: list[tuple[int, Packet | None]] = []
    tick = 0
    for _ in range(300):
        schedule.append((tick, a.packetize(block)))
        tick += 1
    if jump == "pause":  # the sender stops for 10 s and resumes with the next sequence number
        for _ in range(int(10 * SAMPLE_RATE / BLOCK_FRAMES)):
            schedule.append((tick, None))
            tick += 1
    for _ in range(300):
        schedule.append((tick, b.packetize(block)))
        tick += 1
    out = play_stream(eng, schedule)
    s = eng.stats
    resume = 300 + (861 if jump == "pause" else 0)
    after = out[(resume + 10) * BLOCK_FRAMES :]
    # Clean audio resumes within a few packets and stays (no stuck concealment).
    tail = after[-50 * BLOCK_FRAMES :]
    assert np.isfinite(tail).all() and np.sqrt(np.mean(tail**2)) > 0.3
    concealed_after_resume = s.packets_concealed - (861 if jump == "pause" else 0)
    assert concealed_after_resume <= 8
    # No click: no sample step beyond the tone's own steepest slope, plus what a 128-sample
    # fade-in from silence adds (pi / 256 of the amplitude) after a pause.
    slope = 2 * np.pi * TONE_HZ / SAMPLE_RATE * 0.5
    assert max_step(out[eng.first_slot[1] :]) <= slope + 0.5 * np.pi / 256 + 1e-3
    if jump == "wraparound":
        assert s.resyncs == 0 and s.packets_concealed == 0
    else:
        assert s.resyncs == 1


@pytest.mark.slow
def test_one_simulated_hour_with_drift_jitter_bursts_and_duplicates() -> None:
    stats = Stats()
    eng = PlayoutEngine(RepeatConcealer(), PlayoutConfig(), stats=stats)  # adaptive, the default
    block = tone_block(0.8)
    packet_bytes = Packetizer(Pcm16Codec(), 1)
    impair = Impairment(GilbertElliottLoss(0.03, 2.0, seed=3), jitter_ms=4.0, duplicate=0.01, reorder=0.005, seed=4)
    skew = 120e-6  # the sender's card runs 120 ppm fast
    ticks = int(3600 * SAMPLE_RATE / BLOCK_FRAMES)
    period = BLOCK_FRAMES / (1 + skew)
    sent = int(ticks * (1 + skew)) - 50
    arrivals = sorted((k * period + d * SAMPLE_RATE, k) for k in range(sent) for d in impair.decide())
    packets = [packet_bytes.packetize(block) for _ in range(sent)]
    chunk = np.empty((1000 * BLOCK_FRAMES, 1), np.float32)
    peak, depth_max, i = 0.0, 0.0, 0
    first = None
    for tick in range(ticks + 1000):
        if first is not None and eng.jitter.next_seq - first >= sent:
            break  # the last packet's slot has been played
        now = float(tick * BLOCK_FRAMES)
        while i < len(arrivals) and arrivals[i][0] <= now:
            eng.push(packets[arrivals[i][1]], arrivals[i][0])
            i += 1
            if first is None:
                first = eng.jitter.next_seq - arrivals[i - 1][1]
        j = tick % 1000
        chunk[j * BLOCK_FRAMES : (j + 1) * BLOCK_FRAMES] = eng.next_block(now)
        if j == 999:
            assert np.isfinite(chunk).all()
            peak = max(peak, float(np.abs(chunk).max()))
        if tick > 2000:
            depth_max = max(depth_max, stats.buffer_depth_packets)
        if tick == ticks // 2:
            half = (len(eng.jitter), len(eng.jitter._seen), len(eng.controller._sorted))
    assert peak <= 0.81
    assert depth_max < 12
    end = (len(eng.jitter), len(eng.jitter._seen), len(eng.controller._sorted))
    assert all(e <= h * 1.5 + 16 for h, e in zip(half, end, strict=False))
    # Every packet sent is accounted for: received (in time or late) or lost.
    assert stats.packets_received + stats.packets_lost == sent
    assert stats.resyncs == 0
    assert stats.packets_duplicate > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, fragment",
    [
        (
            [
                "jam",
                "--peer",
                "127.0.0.1:9",
                "--listen",
                "127.0.0.1:0",
                "--output",
                "no-such-device-xyz",
                "--duration",
                "2",
            ],
            "no-such-device-xyz",
        ),
        (["jam", "--peer", "127.0.0.1:9", "--listen", "127.0.0.1:0", "--input", "/no/file.wav"], "/no/file.wav"),
        (["jam", "--peer", "127.0.0.1:9", "--listen", "127.0.0.1:0", "--config", "/no/cfg.toml"], "/no/cfg.toml"),
        (["jam", "--peer", "127.0.0.1:9", "--listen", "127.0.0.1:99999"], "HOST:PORT"),
    ],
)
def test_bad_setup_gets_one_line_and_a_non_zero_exit(args, fragment) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "nmp_peer.cli", *args, "--quiet"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in r.stderr
