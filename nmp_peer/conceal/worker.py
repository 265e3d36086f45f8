"""Where concealment is computed: inline (offline, lab, fast loopback) or in a worker thread (live).

The playout engine asks for a concealment as soon as the history it needs is known
(``request``): one block before the deadline, or two when the packet before the gap was
already buffered (``PlayoutConfig.decode_ahead_blocks``), and collects it at the deadline
(``take``).
The threaded worker runs the concealer's stages in the background and keeps the best
finished one; at the deadline, whatever is ready is used and nothing waits, and ``take``
says whether that was the last stage (``Taken.complete``). The inline
worker computes at ``take``, deterministically and never late: the right choice when
no real clock is running.

Bursts are chained: once a concealment is complete, the threaded worker goes on to
conceal the slot after it as if that packet were lost too, from the history the engine
will have then (this history, less its first packet, plus the concealed packet). The
engine's request for that slot, made only when the first concealment is played, adopts
that job if its history is exactly the one assumed (the packet is not attenuated by the
burst fade, say), finished or under way; otherwise the guess is dropped. The second
packet of a burst thus gets a whole block more time, at the cost of one concealment
that goes unused whenever the packet arrives.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from nmp_peer import BLOCK_FRAMES
from nmp_peer.conceal.base import Concealer, final_stage


@dataclass
class _Job:
    slot: int
    history: np.ndarray
    burst_index: int
    result: np.ndarray | None = None
    complete: bool = False
    cancelled: bool = False
    started: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def chained(self) -> _Job | None:
        """The next slot's job, assuming its packet is lost too; ``None`` without a result
        long enough to hold this packet."""
        if self.result is None or len(self.result) < BLOCK_FRAMES or self.result.shape[1:] != self.history.shape[1:]:
            return None
        history = np.concatenate([self.history[BLOCK_FRAMES:], self.result[:BLOCK_FRAMES]]).astype(
            self.history.dtype, copy=False
        )
        return _Job(self.slot + 1, history, self.burst_index + 1)

    def matches(self, slot: int, history: np.ndarray, burst_index: int) -> bool:
        return (
            self.slot == slot
            and self.burst_index == burst_index
            and self.history.shape == history.shape
            and np.array_equal(self.history, history)
        )


@dataclass(frozen=True)
class Taken:
    """What a worker hands over at the deadline: the best finished stage (``None``: none
    finished) and whether it is the concealer's last one."""

    result: np.ndarray | None
    complete: bool


class InlineWorker:
    """Computes a requested concealment when it is taken: no deadline can be missed."""

    def __init__(self, concealer: Concealer) -> None:
        self.concealer = concealer
        self._job: _Job | None = None

    def request(self, slot: int, history: np.ndarray, burst_index: int) -> None:
        self._job = _Job(slot, history, burst_index)

    def take(self, slot: int) -> Taken:
        job, self._job = self._job, None
        if job is None or job.slot != slot:
            return Taken(None, False)
        return Taken(final_stage(self.concealer.stages(job.history, job.burst_index)), True)

    def cancel(self) -> None:
        self._job = None

    def close(self) -> None:
        self._job = None


class ThreadedWorker:
    """Runs concealments on one background thread; ``take`` never blocks.

    Only the latest request matters: a new one cancels the previous (its packet came
    after all, or the engine moved on). With ``chain`` (the default), a finished
    concealment is followed by a guess at the next slot's (module docstring);
    ``chained`` counts the requests that found their guess.

    A concealer that raises does not stop the thread, and is not hidden either: ``errors``
    counts the exceptions and ``last_error`` holds the latest one as text (type and
    message). The job ends incomplete, with the last stage that did finish, if any (an
    LPC stage before the GAN stage failed, say), so the engine uses that or falls back
    as it does when a concealment is late.
    """

    def __init__(self, concealer: Concealer, chain: bool = True) -> None:
        self.concealer = concealer
        self.chain = chain
        self.chained = 0
        self.errors = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._job: _Job | None = None
        self._guess: _Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="nmp-conceal", daemon=True)
        self._thread.start()

    def request(self, slot: int, history: np.ndarray, burst_index: int) -> None:
        with self._wake:
            if self._job is not None:
                self._job.cancelled = True
            guess, self._guess = self._guess, None
            if guess is not None and guess.matches(slot, history, burst_index):
                self._job = guess  # if it is complete, the worker thread guesses on (``_next``)
                self.chained += 1
            else:
                if guess is not None:
                    guess.cancelled = True
                self._job = _Job(slot, history, burst_index)
            self._wake.notify()

    def take(self, slot: int) -> Taken:
        with self._lock:
            job, self._job = self._job, None
            if job is None:
                return Taken(None, False)
            if not job.complete:
                job.cancelled = True  # too late to be useful; a complete one may still be chained
            return Taken(job.result, job.complete) if job.slot == slot else Taken(None, False)

    def cancel(self) -> None:
        with self._lock:
            for job in (self._job, self._guess):
                if job is not None:
                    job.cancelled = True
            self._job = self._guess = None

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=2.0)

    def _next(self) -> _Job | None:
        """The job to run; called with the lock held, on the worker thread."""
        if self.chain and self._guess is None and self._job is not None and self._job.complete:
            self._guess = self._job.chained()  # an adopted guess that was already done
        for job in (self._job, self._guess):
            if job is not None and not job.started and not job.cancelled:
                return job
        return None

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and self._next() is None:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._next()
                assert job is not None
                job.started = True
            try:
                for result in self.concealer.stages(job.history, job.burst_index):
                    with self._lock:
                        if job.cancelled:
                            break
                        job.result = result
                else:
                    with self._lock:
                        job.complete = not job.cancelled
                        if job.complete and self.chain and self._job is job and self._guess is None:
                            self._guess = job.chained()
            except Exception as exc:  # a broken concealer must not kill the worker: counted; the engine falls back
                with self._lock:
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                job.done.set()
