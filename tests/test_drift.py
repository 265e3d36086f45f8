"""Clock drift between two sound cards, simulated on the virtual clock, and the way back to copies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import music_like

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.conceal.simple import RepeatConcealer
from nmp_peer.config import load_config
from nmp_peer.proto.codec import Pcm16Codec
from nmp_peer.proto.packetizer import Packetizer
from nmp_peer.receiver.drift import LOOKAHEAD, read_block
from nmp_peer.receiver.latency import MIN_RATE_SHARE, LatencyController, LatencyPolicy
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
    # The bounded depth says the reader kept the sender's rate on average (to ~10 ppm); it
    # did so in corrections that end on a whole sample, so most blocks are still copies
    # (a correction at least 1000 ppm against 150 ppm of drift: about 15 % of the time).
    assert s.blocks_resampled < 0.25 * ticks


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


def play_clean(
    config: PlayoutConfig, audio: np.ndarray, *, skew_ppm: float = 0.0, skew_s: float = 0.0, phase: float = 100.0
) -> tuple[PlayoutEngine, np.ndarray]:
    """A lossless, jitter-free stream on the virtual clock; the sender's clock runs ``skew_ppm``
    fast for its first ``skew_s`` seconds, then at the receiver's rate."""
    engine = PlayoutEngine(RepeatConcealer(), config)
    packetizer = Packetizer(Pcm16Codec(), audio.shape[1])
    n = len(audio) // BLOCK_FRAMES
    skewed = int(skew_s * SAMPLE_RATE / BLOCK_FRAMES)
    outs, k, sent_at = [], 0, 0.0
    for j in range(n):
        now = j * BLOCK_FRAMES + phase
        while k < n and sent_at <= now:
            engine.push(packetizer.packetize(audio[k * BLOCK_FRAMES : (k + 1) * BLOCK_FRAMES]), sent_at)
            sent_at += BLOCK_FRAMES / (1 + skew_ppm * 1e-6) if k < skewed else BLOCK_FRAMES
            k += 1
        outs.append(engine.next_block(now))
    return engine, np.concatenate(outs)


def assert_copies_from(out: np.ndarray, audio: np.ndarray, first_block: int) -> None:
    """Every output block from ``first_block`` on, up to the clip's end, is the clip's, at one lag."""
    tail = out[first_block * BLOCK_FRAMES :, 0]
    src = audio[:, 0]
    head = tail[:BLOCK_FRAMES]
    starts = np.flatnonzero((src[:-BLOCK_FRAMES] == head[0]) & (src[1 : 1 - BLOCK_FRAMES] == head[1]))
    lags = [int(c) for c in starts if np.array_equal(src[c : c + BLOCK_FRAMES], head)]
    assert lags, f"output block {first_block} is no copy of the clip"
    best = first_block
    for lag in lags:  # a block may recur in the clip: the lag that holds longest
        n = min(len(tail), len(src) - lag) // BLOCK_FRAMES * BLOCK_FRAMES
        assert n >= len(tail) - 4 * BLOCK_FRAMES  # all but the last blocks (the clip's end) compared
        differs = np.flatnonzero(tail[:n] != src[lag : lag + n])
        if not len(differs):
            return
        best = max(best, first_block + int(differs[0]) // BLOCK_FRAMES)
    raise AssertionError(f"output block {best} is no copy (blocks from {first_block} on should be)")


@pytest.mark.parametrize(("name", "skew_ppm"), [("default", 200.0), ("lan", -200.0), ("wan", 200.0)])
def test_a_stream_whose_drift_stops_is_bit_exact_again_within_the_window_and_a_correction(
    name: str, skew_ppm: float
) -> None:
    """200 ppm of drift for 40 s (the buffer corrected by reading off rate), then none: once the
    window holds only undrifted arrivals, at most one more correction runs and ends on a whole
    sample; from then on every block is an exact copy of the sender's."""
    config = load_config(name).playout()
    policy = config.latency
    settle_s = policy.window_s + policy.correction_time_s
    audio = music_like(40.0 + settle_s + 8.0)
    engine, out = play_clean(config, audio, skew_ppm=skew_ppm, skew_s=40.0)
    s = engine.stats
    assert s.blocks_resampled > 0  # the drift was corrected
    assert s.packets_concealed == s.blocks_inserted == s.blocks_dropped == 0
    assert_copies_from(out, audio, int((40.0 + settle_s) * SAMPLE_RATE / BLOCK_FRAMES))


def test_a_shrink_ends_on_a_whole_sample_in_bounded_time() -> None:
    """An adaptive buffer started deeper than its band must shrink; reading at least half the
    fastest rate, it is back to copies within the window plus the excess at that rate."""
    policy = LatencyPolicy(depth_packets=3)
    config = PlayoutConfig(latency=policy)
    audio = music_like(30.0)
    engine, out = play_clean(config, audio)
    s = engine.stats
    one_block = BLOCK_FRAMES + LOOKAHEAD
    aim = 1.25 * BLOCK_FRAMES - policy.deadband_samples / 2
    excess = LatencyController(policy).start_latency_samples() - (one_block + policy.margin_samples) - aim
    window_blocks = policy.window_s * SAMPLE_RATE / BLOCK_FRAMES
    shrink_blocks = excess / (MIN_RATE_SHARE * policy.max_rate_ppm * 1e-6 * BLOCK_FRAMES)
    assert s.blocks_resampled > 0 and s.blocks_dropped == s.packets_concealed == 0
    assert_copies_from(out, audio, math.ceil(window_blocks + shrink_blocks) + 2)
