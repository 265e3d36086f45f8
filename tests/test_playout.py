"""The playout engine's contract: never wait, conceal causally, fade long bursts, recover smoothly."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import music_like

from nmp_peer import BLOCK_FRAMES
from nmp_peer.conceal.base import Concealer
from nmp_peer.conceal.simple import RepeatConcealer
from nmp_peer.config import load_config
from nmp_peer.proto.codec import Pcm16Codec
from nmp_peer.proto.packetizer import Packetizer
from nmp_peer.receiver.latency import LatencyPolicy
from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine


class SleepyConcealer(Concealer):
    """Predicts a constant 0.25 after sleeping far past any deadline."""

    name = "sleepy"

    def __init__(self, sleep_s: float) -> None:
        self.sleep_s = sleep_s

    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        time.sleep(self.sleep_s)
        return np.full((self.predict_samples, history.shape[1]), 0.25, np.float32)


def play(engine: PlayoutEngine, audio: np.ndarray, lost: set[int], realtime_pause: float = 0.0):
    packetizer = Packetizer(Pcm16Codec(), audio.shape[1])
    outs, durations = [], []
    for k in range(len(audio) // BLOCK_FRAMES):
        now = float(k * BLOCK_FRAMES)
        packet = packetizer.packetize(audio[k * BLOCK_FRAMES : (k + 1) * BLOCK_FRAMES])
        if k not in lost:
            engine.push(packet, now)
        t = time.perf_counter()
        outs.append(engine.next_block(now))
        durations.append(time.perf_counter() - t)
        if realtime_pause:
            time.sleep(realtime_pause)
    return np.concatenate(outs), durations


def fixed(depth: int = 2, **kw) -> PlayoutConfig:
    return PlayoutConfig(latency=LatencyPolicy(mode="fixed", depth_packets=depth), **kw)


def test_a_concealer_past_its_deadline_gives_a_fallback_block_and_a_counted_miss() -> None:
    audio = music_like(1.0)
    engine = PlayoutEngine(SleepyConcealer(0.5), fixed(), threaded=True)
    lost = {30, 31, 60}
    out, durations = play(engine, audio, lost, realtime_pause=0.002)
    engine.close()
    assert engine.stats.concealer_misses == len(lost)
    assert engine.stats.packets_concealed == len(lost)
    # The callback path did not wait for the 0.5 s concealer (generous bound for busy machines).
    assert max(durations) < 0.1
    # The fallback (repetition) played, not the sleepy constant.
    lat = engine.first_slot[1]
    block = out[lat + 30 * BLOCK_FRAMES : lat + 31 * BLOCK_FRAMES]
    assert not np.allclose(block, 0.25)


def test_a_concealer_in_time_is_used() -> None:
    audio = music_like(1.0)
    engine = PlayoutEngine(SleepyConcealer(0.0), fixed(), threaded=True)
    out, _ = play(engine, audio, {30}, realtime_pause=0.01)
    engine.close()
    assert engine.stats.concealer_misses == 0
    lat = engine.first_slot[1]
    assert np.allclose(out[lat + 30 * BLOCK_FRAMES : lat + 31 * BLOCK_FRAMES], 0.25)


def test_long_bursts_fade_to_silence_and_recover_with_a_crossfade() -> None:
    audio = music_like(2.0)
    engine = PlayoutEngine(RepeatConcealer(), fixed(fade_after_ms=50.0, fade_ms=25.0))
    lost = set(range(40, 60))  # 232 ms
    out, _ = play(engine, audio, lost)
    lat = engine.first_slot[1]
    seg = out[lat:]

    def rms(k: int) -> float:
        return float(np.sqrt(np.mean(seg[k * BLOCK_FRAMES : (k + 1) * BLOCK_FRAMES] ** 2)))

    assert rms(41) > 0.05  # early in the burst: concealed, audible
    assert all(rms(k) == 0.0 for k in range(48, 60))  # after 50 + 25 ms: silence
    # Recovery: the first received packet fades in from silence, then plays unchanged.
    first = seg[60 * BLOCK_FRAMES : 61 * BLOCK_FRAMES]
    assert abs(first[0, 0]) < abs(audio[60 * BLOCK_FRAMES, 0]) + 1e-6
    assert np.array_equal(first[128:], audio[60 * BLOCK_FRAMES + 128 : 61 * BLOCK_FRAMES])


def test_engine_concealment_is_causal() -> None:
    """Changing audio after packet n leaves everything played up to the end of packet n unchanged."""
    audio = music_like(2.0)
    lost = {20, 21, 22, 40, 55, 56}
    base, _ = play(PlayoutEngine(RepeatConcealer(), fixed()), audio, lost)
    for n in (21, 39, 54):
        changed = audio.copy()
        changed[(n + 1) * BLOCK_FRAMES :] = np.random.default_rng(n).uniform(
            -1, 1, changed[(n + 1) * BLOCK_FRAMES :].shape
        )
        out, _ = play(PlayoutEngine(RepeatConcealer(), fixed()), changed, lost)
        engine_lat = 2 * BLOCK_FRAMES + 8
        end = engine_lat + (n + 1) * BLOCK_FRAMES
        assert np.array_equal(out[:end], base[:end])
        assert not np.array_equal(out[end:], base[end:])


def play_piled(
    config: PlayoutConfig, audio: np.ndarray, phase: float, *, piled: int = 0, shift: int = 0
) -> tuple[PlayoutEngine, np.ndarray]:
    """A clean stream, packet ``k`` arriving at block ``k + shift``, except that the first
    ``piled`` packets come late, all at once with the next one (they waited in the socket
    while the output device opened); the output clock ticks from time ``phase``."""
    engine = PlayoutEngine(RepeatConcealer(), config)
    packetizer = Packetizer(Pcm16Codec(), 1)
    n = len(audio) // BLOCK_FRAMES
    outs, k = [], 0
    for j in range(n + shift):
        now = j * BLOCK_FRAMES + phase
        while k < n and max(k + shift, piled) * BLOCK_FRAMES <= now:
            packet = packetizer.packetize(audio[k * BLOCK_FRAMES : (k + 1) * BLOCK_FRAMES])
            engine.push(packet, max(k + shift, piled) * BLOCK_FRAMES)
            k += 1
        outs.append(engine.next_block(now))
    return engine, np.concatenate(outs)


@pytest.mark.parametrize("phase", [0.0, 300.0])
@pytest.mark.parametrize("name", ["default", "lan", "wan"])
def test_packets_piled_up_before_the_first_read_are_skipped_and_the_start_is_exact(name: str, phase: float) -> None:
    """A clean stream starts at its start depth whatever piled up before the first read: the
    oldest packets are skipped (counted), the newest plays with the latency of a clean start,
    and every block after is a copy: no shrinking, no interpolated block, ever."""
    config = load_config(name).playout()
    audio = music_like(config.latency.window_s + 5.0)  # past the window: where a too deep start shrinks
    piled = 5
    engine, out = play_piled(config, audio, phase, piled=piled)
    # The same start without the pile: the first packet arrives when the piled ones did.
    clean, _ = play_piled(config, audio, phase, shift=piled)
    s = engine.stats
    assert engine.first_slot is not None and clean.first_slot is not None
    at = engine.first_slot[1]
    assert at == clean.first_slot[1]  # as long after its arrival as a clean start's first packet
    played, newest = out[at:], piled * BLOCK_FRAMES  # the newest of the piled packets plays first
    n = (len(played) - 2 * BLOCK_FRAMES) // BLOCK_FRAMES * BLOCK_FRAMES  # up to the clip's end
    assert np.array_equal(played[:n], audio[newest : newest + n])
    assert s.packets_skipped == piled
    assert s.blocks_resampled == s.blocks_dropped == s.blocks_inserted == s.packets_concealed == 0


class CountingConcealer(RepeatConcealer):
    """Repetition that counts its calls (from the worker's threads)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        self.calls += 1
        return super().conceal(history, burst_index)


def test_a_packet_that_comes_after_its_request_withdraws_it_before_it_is_computed() -> None:
    """Each packet lands just after the tick before its slot (as a partner's packets do when
    their phase is so): the engine asks for the slot's concealment at every tick, a live
    worker holds the request back (``grace``; a 5-s block makes the wait seconds long), and
    the packet's arrival withdraws it at once: spared, never computed. Without the withdraw
    the request would be dropped only at the next tick's request."""
    from nmp_peer.conceal.worker import ThreadedWorker

    audio = music_like(1.0)
    concealer = CountingConcealer()
    worker = ThreadedWorker(concealer, chain=False, grace=True, block_s=5.0)
    engine = PlayoutEngine(concealer, fixed(depth=1), worker=worker)
    packetizer = Packetizer(Pcm16Codec(), audio.shape[1])
    packets = [packetizer.packetize(audio[k * BLOCK_FRAMES : (k + 1) * BLOCK_FRAMES]) for k in range(30)]
    withdrawn = held_ticks = 0
    try:
        engine.push(packets[0], 0.0)
        for k in range(1, 30):
            now = float(k * BLOCK_FRAMES)
            held = worker.held_back
            engine.next_block(now)  # a request now drops the last one too: spared counts it
            spared = worker.spared
            if k == 1:  # the first request runs at once (nothing timed yet): let it finish
                deadline = time.monotonic() + 10.0
                while worker.grace_s() == 0.0 and time.monotonic() < deadline:
                    time.sleep(0.01)
            engine.push(packets[k], now + 1.0)  # just after the tick
            if worker.held_back > held:
                held_ticks += 1
                withdrawn += worker.spared == spared + 1  # at once, not at the next request
    finally:
        engine.close()
    assert engine.stats.packets_concealed == 0
    assert held_ticks >= 20, held_ticks
    assert withdrawn == held_ticks and concealer.calls <= 1, (withdrawn, held_ticks, concealer.calls)
    assert engine.stats.concealer_spared == worker.spared
