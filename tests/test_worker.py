"""The threaded concealment worker: bursts chained onto the previous concealment, guesses
adopted only when the engine's history is exactly the one assumed."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import music_like
from test_playout import play

from nmp_peer import BLOCK_FRAMES
from nmp_peer.conceal.base import Concealer
from nmp_peer.conceal.lpc import LpcConcealer
from nmp_peer.conceal.worker import ThreadedWorker
from nmp_peer.receiver.latency import LatencyPolicy
from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine


class RecordingConcealer(Concealer):
    """LPC, recording each call's slot-relevant inputs and signalling when one ends."""

    name = "recording"

    def __init__(self) -> None:
        self.lpc = LpcConcealer()
        self.context_samples = self.lpc.context_samples
        self.calls: list[tuple[np.ndarray, int]] = []
        self.finished = threading.Semaphore(0)

    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        self.calls.append((history.copy(), burst_index))
        out = self.lpc.conceal(history, burst_index)
        self.finished.release()
        return out


def _history(seed: int = 0) -> np.ndarray:
    return np.ascontiguousarray(music_like(0.2, seed=seed)[-3584:]).astype(np.float32)


@pytest.fixture
def slot_10_concealed():
    """A worker that concealed slot 10 (and, unasked, guessed at slot 11), that result taken."""
    concealer = RecordingConcealer()
    worker = ThreadedWorker(concealer)
    history = _history()
    worker.request(10, history, 0)
    assert concealer.finished.acquire(timeout=10)  # slot 10
    assert concealer.finished.acquire(timeout=10)  # the guess at slot 11
    first = worker.take(10)
    assert first.complete and first.result is not None
    yield concealer, worker, history, first.result
    worker.close()


def test_the_next_slot_is_concealed_ahead_and_adopted_when_its_history_matches(slot_10_concealed):
    concealer, worker, history, first = slot_10_concealed
    expected_history = np.concatenate([history[BLOCK_FRAMES:], first[:BLOCK_FRAMES]])
    np.testing.assert_array_equal(concealer.calls[1][0], expected_history)
    assert concealer.calls[1][1] == 1
    worker.request(11, expected_history, 1)  # what the engine asks once slot 10 is played
    second = worker.take(11)
    assert worker.chained == 1 and second.complete
    np.testing.assert_array_equal(second.result, LpcConcealer().conceal(expected_history, 1))
    # slot 11 was not computed again (a guess at slot 12 may be under way by now)
    assert [burst for _, burst in concealer.calls][:3] in ([0, 1], [0, 1, 2])


def test_a_guess_on_another_history_is_dropped_and_the_request_computed_afresh(slot_10_concealed):
    concealer, worker, history, first = slot_10_concealed
    faded = np.concatenate([history[BLOCK_FRAMES:], 0.5 * first[:BLOCK_FRAMES]])
    worker.request(11, faded, 1)  # the burst fade changed the packet: not the guess
    assert concealer.finished.acquire(timeout=10)
    assert worker.chained == 0
    np.testing.assert_array_equal(worker.take(11).result, LpcConcealer().conceal(faded, 1))
    worker.request(12, history, 0)  # another slot: not the guess either
    assert concealer.finished.acquire(timeout=10)
    assert worker.chained == 0


@pytest.mark.slow
def test_chained_bursts_play_exactly_what_fresh_requests_would():
    """Through the engine, paced so that every concealment is in time: a threaded engine
    with chaining plays the same samples as the inline one (which computes each slot
    from the history it has), and it did chain the burst's later packets."""
    audio = music_like(1.5, seed=3)
    lost = {20, 21, 22, 50, 51, 80}
    config = PlayoutConfig(latency=LatencyPolicy(mode="fixed", depth_packets=2))
    inline = PlayoutEngine(LpcConcealer(), config)
    expected, _ = play(inline, audio, lost)
    threaded = PlayoutEngine(LpcConcealer(), config, threaded=True)
    got, _ = play(threaded, audio, lost, realtime_pause=0.03)
    threaded.close()
    assert threaded.stats.concealer_misses == 0 and threaded.stats.concealer_partial == 0
    assert threaded.stats.concealer_chained == 3  # 21, 22 and 51
    np.testing.assert_array_equal(got, expected)


class StartTimes(RecordingConcealer):
    """Records when each concealment started (``time.monotonic``) and its history's first sample."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[tuple[float, float]] = []

    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        self.started.append((float(history[0, 0]), time.monotonic()))
        return super().conceal(history, burst_index)


def _timed_once(worker: ThreadedWorker, concealer: StartTimes) -> None:
    """One concealment run and taken, so the worker has a time to go by."""
    assert worker.grace_s() == 0.0  # nothing timed yet: no wait
    worker.request(0, _history(9), 0)
    assert concealer.finished.acquire(timeout=10)
    assert worker.take(0).complete


def test_a_live_worker_spares_a_gaps_first_packet_that_comes_during_its_grace() -> None:
    """With ``grace``, a gap's first packet is held back while the block still leaves twice the
    time concealments took; a request that is superseded (its packet came) in that time is
    never computed. ``block_s`` of 5 s makes the wait far longer than any preemption here."""
    concealer = StartTimes()
    worker = ThreadedWorker(concealer, chain=False, grace=True, block_s=5.0)
    try:
        _timed_once(worker, concealer)
        assert 4.0 < worker.grace_s() < 5.0
        worker.request(1, _history(1), 0)  # held back
        worker.request(2, _history(2), 1)  # the engine moved on: slot 1's packet came; a burst's next: no wait
        assert concealer.finished.acquire(timeout=10)
        assert worker.take(2).complete
        assert [first for first, _ in concealer.started] == [_history(9)[0, 0], _history(2)[0, 0]]
        assert worker.held_back == 1 and worker.spared == 1
    finally:
        worker.close()


def test_a_held_back_request_starts_at_its_time_and_is_ready_before_its_deadline() -> None:
    """A request whose packet does not come starts once its grace is over, not before, and
    in time: the rest of the block is twice what concealments took, and more."""
    concealer = StartTimes()
    worker = ThreadedWorker(concealer, chain=False, grace=True, block_s=0.5)
    try:
        _timed_once(worker, concealer)
        wait = worker.grace_s()
        asked = time.monotonic()
        worker.request(1, _history(1), 0)
        assert concealer.finished.acquire(timeout=10)
        started = concealer.started[-1][1]
        assert started >= asked + wait * 0.999
        taken = worker.take(1)
        assert taken.complete and worker.held_back == 1 and worker.spared == 0
    finally:
        worker.close()


def test_without_grace_a_request_starts_at_once() -> None:
    concealer = StartTimes()
    worker = ThreadedWorker(concealer, chain=False)
    try:
        _timed_once(worker, concealer)
        assert worker.grace_s() == 0.0
        worker.request(1, _history(1), 0)
        assert concealer.finished.acquire(timeout=10) and worker.held_back == 0
    finally:
        worker.close()
