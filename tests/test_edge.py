"""The sound-card edge without a device: re-blocking any period to 512 and back, and the device clock."""

from __future__ import annotations

import numpy as np
import pytest

from nmp_peer import BLOCK_FRAMES
from nmp_peer.receiver.edge import DeviceClock, InputReblocker, OutputReblocker

PERIODS = [64, 100, 128, 256, 441, 480, 512, 1000, 1024]


def ramp(n: int, channels: int = 1) -> np.ndarray:
    return (np.arange(n * channels, dtype=np.float32) / 1e6).reshape(n, channels)


@pytest.mark.parametrize("period", PERIODS)
def test_input_periods_become_the_same_samples_in_512_blocks_each_as_soon_as_its_last_frame_is_in(period: int) -> None:
    source = ramp(40 * 1024, 2)
    rb = InputReblocker(2)
    blocks: list[np.ndarray] = []
    for start in range(0, len(source), period):
        before = len(blocks)
        blocks += rb.push(source[start : start + period])
        # Every block that could be completed has been, and less than a block is held.
        assert len(blocks) == (start + len(source[start : start + period])) // BLOCK_FRAMES
        assert rb.pending < BLOCK_FRAMES
        assert len(blocks) - before <= -(-period // BLOCK_FRAMES)
    out = np.concatenate(blocks)
    assert all(b.shape == (BLOCK_FRAMES, 2) for b in blocks)
    assert np.array_equal(out, source[: len(out)]) and len(source) - len(out) < BLOCK_FRAMES


@pytest.mark.parametrize("period", PERIODS)
def test_output_periods_play_the_blocks_unchanged_holding_less_than_a_block_beyond_the_period(period: int) -> None:
    source = ramp(60 * BLOCK_FRAMES)
    rb = OutputReblocker(1)
    given = 0
    leads: list[int] = []

    def produce(lead: int) -> np.ndarray:
        nonlocal given
        leads.append(lead)
        block = source[given * BLOCK_FRAMES : (given + 1) * BLOCK_FRAMES]
        given += 1
        return block

    played = []
    while (given + 2) * BLOCK_FRAMES < len(source):
        before = rb.produced
        played.append(rb.pull(period, produce))
        assert played[-1].shape == (period, 1)
        assert rb.held < BLOCK_FRAMES  # at most one block of added latency
        assert rb.produced - before <= -(-period // BLOCK_FRAMES)
    out = np.concatenate(played)
    assert np.array_equal(out, source[: len(out)])
    # A new block is asked for only when the period would run short, ``lead`` frames into it.
    assert all(0 <= lead < period for lead in leads)
    if BLOCK_FRAMES % period == 0 or period % BLOCK_FRAMES == 0:
        assert set(leads) == set(range(0, period, BLOCK_FRAMES))  # whole blocks: nothing held between


def test_output_reblocker_takes_chunks_of_any_length_from_a_resampler() -> None:
    rng = np.random.default_rng(1)
    source = ramp(30_000)
    pos = 0

    def produce(_lead: int) -> np.ndarray:
        nonlocal pos
        n = int(rng.integers(0, 700))  # a resampler's output: sometimes nothing at all
        chunk = source[pos : pos + n]
        pos += n
        return chunk

    rb = OutputReblocker(1)
    out = np.concatenate([rb.pull(480, produce) for _ in range(50)])
    assert np.array_equal(out, source[: len(out)])


def period_times(n: int, period: int, rate: float, drift_ppm: float = 0.0, t0: float = 100.0) -> np.ndarray:
    return t0 + np.arange(n) * period * (1 + drift_ppm * 1e-6) / rate


def test_the_clock_follows_the_device_not_the_callbacks_jitter() -> None:
    """Callbacks observed up to 3 ms late on a device 80 ppm slow: the locked time stays within
    1.5 ms of the device's true time, on average half the callbacks' mean lateness or less."""
    rate, period = 44100.0, 256
    true = period_times(3000, period, rate, drift_ppm=80.0)
    rng = np.random.default_rng(0)
    observed = true + rng.uniform(0.0, 0.003, len(true))
    clock = DeviceClock(rate)
    errors = []
    for k, obs in enumerate(observed):
        clock.tick(period, float(obs))
        if k > 1000:  # settled (a few seconds: the loop's 0.5-Hz bandwidth)
            errors.append(clock.time_of(clock.frames) - true[k])
    # Callbacks are late, never early: the clock follows the earliest (their mean is +1.5 ms).
    assert abs(np.mean(errors)) < 0.00075 and max(abs(e) for e in errors) < 0.0015, (np.mean(errors), max(errors))
    # It follows the drift: 80 ppm over the 17 s is 1.4 ms, more than the error allowed.
    assert (true[-1] - true[0]) * 80e-6 > 0.0012
    assert clock.jumps == 0 and clock.outliers == 0


def test_pairs_of_callbacks_give_evenly_spaced_block_times() -> None:
    """JACK at 1024 with a 512-frame callback: callbacks in pairs, buffer times 11.6 ms apart."""
    rate = 44100.0
    clock = DeviceClock(rate)
    dac = period_times(400, 512, rate)
    for t in dac:
        clock.tick(512, float(t))
    steps = np.diff([clock.time_of(clock.frames + k * 512) for k in range(3)])
    assert np.allclose(steps, 512 / rate, atol=1e-6)


def test_late_callbacks_are_set_aside_and_a_jump_relocks() -> None:
    rate, period = 48000.0, 128
    clock = DeviceClock(rate)
    times = list(period_times(500, period, rate))
    for t in times:
        clock.tick(period, t)
    t_next = times[-1] + period / rate
    # Two callbacks 25 ms late (a busy machine), then on time again: not a jump.
    for _ in range(2):
        assert not clock.tick(period, t_next + 0.025)
        t_next += period / rate
    assert clock.outliers == 2 and clock.jumps == 0
    assert not clock.tick(period, t_next)
    assert abs(clock.time_of(clock.frames) - t_next) < 1e-4
    # The server stalled 40 ms: three periods in a row agree, the clock re-locks there.
    t_next += period / rate + 0.040
    for _ in range(2):
        assert not clock.tick(period, t_next)
        t_next += period / rate
    assert clock.tick(period, t_next) and clock.jumps == 1
    assert clock.time_of(clock.frames) == pytest.approx(t_next, abs=1e-9)


@pytest.mark.parametrize("name", ["default", "lan", "wan"])
def test_after_a_device_stall_the_piled_up_packets_are_skipped_and_the_depth_is_kept(name: str) -> None:
    """The output clock stops for 6 blocks (an xrun, a stalled server) while packets arrive:
    the 6 packets that piled up are skipped (counted), and the stream plays on with the
    latency it had, every block after the seam a copy."""
    from conftest import music_like

    from nmp_peer.conceal.simple import RepeatConcealer
    from nmp_peer.config import load_config
    from nmp_peer.proto.codec import Pcm16Codec
    from nmp_peer.proto.packetizer import Packetizer
    from nmp_peer.receiver.playout import PlayoutEngine

    audio = music_like(6.0)
    n, stall_at, stall = len(audio) // BLOCK_FRAMES, 200, 6
    results = {}
    for skip in (False, True):
        engine = PlayoutEngine(RepeatConcealer(), load_config(name).playout())
        packetizer = Packetizer(Pcm16Codec(), 1)
        outs: list[tuple[int, np.ndarray]] = []
        for j in range(n):
            now = j * BLOCK_FRAMES + 100.0
            engine.push(packetizer.packetize(audio[j * BLOCK_FRAMES : (j + 1) * BLOCK_FRAMES]), now - 100.0)
            if stall_at <= j < stall_at + stall:
                continue  # no callback: the device stalled
            if j == stall_at + stall and skip:
                engine.skip_stall(now)
            outs.append((j, engine.next_block(now)))
        results[skip] = (engine.stats, outs)

    def lag(outs: list[tuple[int, np.ndarray]], j: int) -> int:
        block = dict(outs)[j]
        for d in range(0, 40 * BLOCK_FRAMES):
            start = j * BLOCK_FRAMES - d
            if start >= 0 and np.array_equal(block, audio[start : start + BLOCK_FRAMES]):
                return d
        raise AssertionError(f"block {j} is a copy of no stretch of the clip")

    stats, outs = results[True]
    before = lag(outs, stall_at - 1)
    assert stats.packets_skipped == stall
    # The seam is crossfaded in (one block, 128 samples); every block after is a copy.
    assert all(lag(outs, j) == before for j in range(stall_at + stall + 2, n - 4))
    assert stats.packets_concealed == stats.blocks_inserted == stats.blocks_dropped == stats.blocks_resampled == 0
    # Without the skip the stall's 6 blocks stay in the latency (or are shed by reading fast).
    plain, plain_outs = results[False]
    assert plain.packets_skipped == 0
    assert lag(plain_outs, stall_at + stall + 2) == before + stall * BLOCK_FRAMES


@pytest.mark.parametrize("period", [64, 128, 512, 1024])
def test_the_clock_locks_near_the_earliest_callbacks_at_any_period(period: int) -> None:
    rate = 44100.0
    true = period_times(int(30 * rate / period), period, rate, drift_ppm=-50.0)
    rng = np.random.default_rng(period)
    late = rng.exponential(0.002, len(true)).clip(0, 0.004)  # a busy machine: mostly a little late
    clock = DeviceClock(rate)
    errors = []
    for k, obs in enumerate(true + late):
        clock.tick(period, float(obs))
        if k > len(true) // 2:
            errors.append(clock.time_of(clock.frames) - true[k])
    mean = float(np.mean(errors))
    # A plain loop would sit at the mean lateness; this one well below it (at 1024 frames
    # the fewest callbacks a second, so the fewest early ones: 0.47 of it, 0.17 at 64).
    assert abs(mean) < 0.65 * np.mean(late) and max(abs(e) for e in errors) < 0.003, (mean, max(errors), min(errors))
