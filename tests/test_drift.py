"""Clock drift between two sound cards, simulated on the virtual clock."""

from __future__ import annotations

import numpy as np
import pytest

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.conceal.simple import RepeatConcealer
from nmp_peer.proto.codec import Pcm16Codec
from nmp_peer.proto.packetizer import Packetizer
from nmp_peer.receiver.drift import read_block
from nmp_peer.receiver.latency import LatencyPolicy
from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine

FREQ = 4 * SAMPLE_RATE / BLOCK_FRAMES  # four whole periods per packet: every packet is the same
AMP = 0.5


def run_skewed(skew_ppm: float, minutes: float, mode: str = "adaptive"):
    engine = PlayoutEngine(RepeatConcealer(), PlayoutConfig(latency=LatencyPolicy(mode=mode, depth_packets=2)))
    block = (AMP * np.sin(2 * np.pi * FREQ * np.arange(BLOCK_FRAMES) / SAMPLE_RATE)).astype(np.float32)[:, None]
    packetizer = Packetizer(Pcm16Codec(), 1)
    send_period = BLOCK_FRAMES / (1 + skew_ppm * 1e-6)  # in receiver samples
    ticks = int(minutes * 60 * SAMPLE_RATE / BLOCK_FRAMES)
    k = 0
    depths, max_step = [], 0.0
    prev = None
    concealed_after_start = 0
    for j in range(ticks):
        now = j * BLOCK_FRAMES
        while k * send_period <= now:
            engine.push(packetizer.packetize(block), k * send_period)
            k += 1
        before = engine.stats.packets_concealed
        out = engine.next_block(float(now))
        if j > 100:
            concealed_after_start += engine.stats.packets_concealed - before
            depths.append(engine.stats.buffer_depth_packets)
            seam = np.diff(np.concatenate([prev, out[:, 0]])) if prev is not None else np.diff(out[:, 0])
            max_step = max(max_step, float(np.abs(seam).max()))
        prev = out[-1:, 0]
    return engine, np.array(depths), max_step, concealed_after_start, ticks


@pytest.mark.slow
@pytest.mark.parametrize("skew_ppm", [150.0, -150.0])
def test_thirty_minutes_of_skew_keep_the_buffer_bounded_and_click_free(skew_ppm: float) -> None:
    engine, depths, max_step, concealed, ticks = run_skewed(skew_ppm, 30.0)
    s = engine.stats
    # Without correction the buffer would drift by 150 ppm * 30 min = 270 ms = 23 packets.
    assert depths.max() - depths.min() < 2.0
    assert concealed <= 2 and s.underruns <= 2
    assert s.blocks_inserted + s.blocks_dropped <= 2
    # The output is the receiver's clock: one block per tick, whatever the sender's rate.
    assert engine.samples_out == ticks * BLOCK_FRAMES
    # A pure tone stays smooth: no sample step beyond the tone's own slope (+5 %).
    slope = 2 * np.pi * FREQ / SAMPLE_RATE * AMP
    assert max_step < slope * 1.05
    # The reader's ratio settled near the true skew.
    assert abs(s.ratio_ppm) < 3 * abs(skew_ppm)


def test_no_skew_never_leaves_pass_through() -> None:
    engine, depths, max_step, concealed, _ = run_skewed(0.0, 2.0)
    assert engine.stats.ratio_ppm == 0.0 and concealed == 0
    assert depths.max() - depths.min() < 1.01


def test_reader_copies_at_ratio_one_and_interpolates_accurately_otherwise() -> None:
    rng = np.random.default_rng(0)
    src = rng.standard_normal((4096, 2)).astype(np.float32)
    assert np.array_equal(read_block(src, 100.0, 1.0, 512), src[100:612])
    t = np.arange(4096)
    tone = np.sin(2 * np.pi * 0.05 * t).astype(np.float32)[:, None]
    got = read_block(tone, 100.37, 1.0015, 512)[:, 0]
    want = np.sin(2 * np.pi * 0.05 * (100.37 + 1.0015 * np.arange(512)))
    assert np.max(np.abs(got - want)) < 2e-3
