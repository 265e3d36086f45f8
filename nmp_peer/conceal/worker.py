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

A band receives N - 1 streams: their workers share one :class:`ConcealThread` (one
concealer, one model session, one thread for all of them), which runs the work of
several streams stage by stage and, with a model that takes a batch, in one call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

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
    order: int = 0
    """When it was requested (the thread runs older requests first)."""
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


class ConcealThread:
    """One background thread that computes the concealments of several streams (a band's N-1).

    Each stream's playout engine holds a :class:`ThreadedWorker` (a *lane*: its latest
    request and its chained guess); this thread serves every lane. When several lanes
    have work at once, it runs them together, one *round* at a time:

    * requests before guesses: a round holds the lanes' real requests, or, when there
      are none, their chained guesses;
    * stage by stage: every job's first (cheap) stage is done before any job's second,
      so each stream has at least its LPC prediction early, and the deadline of one
      stream is not spent on another's GAN stage first;
    * batched where the concealer can (``stages_batch`` and ``max_batch > 1``: a GAN
      whose model has a dynamic batch axis): one call for all the jobs of a round,
      in chunks of ``max_batch``; otherwise the jobs' stages in turn (a batch-1 model).

    A job cancelled meanwhile (its packet came after all) is skipped at its next stage.
    """

    def __init__(self, name: str = "nmp-conceal") -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._lanes: list[ThreadedWorker] = []
        self._closed = False
        self._order = 0
        self.rounds = 0
        """Rounds run (each one or more jobs)."""
        self.shared_rounds = 0
        """Rounds that held jobs of more than one stream."""
        self.batched_calls = 0
        """``stages_batch`` calls that concealed more than one job at once."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def lane(self, concealer: Concealer, chain: bool = True) -> ThreadedWorker:
        """A worker for one more stream, served by this thread."""
        return ThreadedWorker(concealer, chain, thread=self)

    def _add(self, lane: ThreadedWorker) -> None:
        with self._lock:
            self._lanes.append(lane)

    def _remove(self, lane: ThreadedWorker) -> None:
        with self._lock:
            if lane in self._lanes:
                self._lanes.remove(lane)

    def _ticket(self) -> int:
        """Called with the lock held: the order requests were made in."""
        self._order += 1
        return self._order

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=2.0)

    def _round(self) -> list[tuple[ThreadedWorker, _Job]]:
        """The jobs to run now (lock held): every lane's request, else every lane's guess; oldest first."""
        requests: list[tuple[ThreadedWorker, _Job]] = []
        guesses: list[tuple[ThreadedWorker, _Job]] = []
        for lane in self._lanes:
            job = lane._next()
            if job is not None:
                (requests if job is lane._job else guesses).append((lane, job))
        jobs = requests or guesses
        jobs.sort(key=lambda item: item[1].order)
        return jobs

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not (jobs := self._round()):
                    self._wake.wait()
                if self._closed:
                    return
                for _, job in jobs:
                    job.started = True
                self.rounds += 1
                self.shared_rounds += len({id(lane) for lane, _ in jobs}) > 1
            groups: dict[int, list[tuple[ThreadedWorker, _Job]]] = {}
            for lane, job in jobs:
                groups.setdefault(id(lane.concealer), []).append((lane, job))
            for group in groups.values():
                self._conceal(group)

    def _conceal(self, group: list[tuple[ThreadedWorker, _Job]]) -> None:
        concealer = group[0][0].concealer
        max_batch = int(getattr(concealer, "max_batch", 1))
        stages_batch = getattr(concealer, "stages_batch", None)
        if len(group) > 1 and max_batch > 1 and stages_batch is not None:
            for start in range(0, len(group), max_batch):
                chunk = group[start : start + max_batch]
                self.batched_calls += len(chunk) > 1
                runs = [stages_batch([job.history for _, job in chunk], [job.burst_index for _, job in chunk])]
                self._stage_by_stage([(lane, job) for lane, job in chunk], runs, batched=True)
            return
        runs = [concealer.stages(job.history, job.burst_index) for _, job in group]
        self._stage_by_stage(group, runs, batched=False)

    def _stage_by_stage(
        self, group: list[tuple[ThreadedWorker, _Job]], runs: list[Iterator[Any]], *, batched: bool
    ) -> None:
        """Advance the jobs' stage iterators in turn, stage k of all before stage k + 1 of any.

        ``batched``: one iterator yields the list of all the jobs' results per stage."""
        live = list(range(len(runs)))
        try:
            while live:
                for i in list(live):
                    jobs = group if batched else [group[i]]
                    with self._lock:
                        if all(job.cancelled for _, job in jobs):
                            live.remove(i)
                            continue
                    try:
                        result = next(runs[i])
                    except StopIteration:
                        live.remove(i)
                        with self._lock:
                            for lane, job in jobs:
                                lane._finished(job)
                        continue
                    except Exception as exc:  # a broken concealer: counted; the engine falls back
                        live.remove(i)
                        with self._lock:
                            for lane, _ in jobs:
                                lane.errors += 1
                                lane.last_error = f"{type(exc).__name__}: {exc}"
                        continue
                    with self._lock:
                        results = result if batched else [result]
                        for (_, job), r in zip(jobs, results, strict=True):
                            if not job.cancelled:
                                job.result = r
        finally:
            for _, job in group:
                job.done.set()


class ThreadedWorker:
    """One stream's concealments, computed on a background thread; ``take`` never blocks.

    Only the latest request matters: a new one cancels the previous (its packet came
    after all, or the engine moved on). With ``chain`` (the default), a finished
    concealment is followed by a guess at the next slot's (module docstring);
    ``chained`` counts the requests that found their guess.

    ``thread``: the :class:`ConcealThread` that computes them, shared with other streams'
    workers (a band); without one, the worker has a thread of its own (a duo).

    A concealer that raises does not stop the thread, and is not hidden either: ``errors``
    counts the exceptions and ``last_error`` holds the latest one as text (type and
    message). The job ends incomplete, with the last stage that did finish, if any (an
    LPC stage before the GAN stage failed, say), so the engine uses that or falls back
    as it does when a concealment is late.
    """

    def __init__(self, concealer: Concealer, chain: bool = True, *, thread: ConcealThread | None = None) -> None:
        self.concealer = concealer
        self.chain = chain
        self.chained = 0
        self.errors = 0
        self.last_error: str | None = None
        self._own = thread is None
        self.thread = ConcealThread() if thread is None else thread
        self._lock = self.thread._lock
        self._wake = self.thread._wake
        self._job: _Job | None = None
        self._guess: _Job | None = None
        self.thread._add(self)

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
            self._job.order = self.thread._ticket()
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
        self.cancel()
        self.thread._remove(self)
        if self._own:
            self.thread.close()

    def _next(self) -> _Job | None:
        """The job to run; called with the lock held, on the worker thread."""
        if self.chain and self._guess is None and self._job is not None and self._job.complete:
            self._guess = self._job.chained()  # an adopted guess that was already done
            if self._guess is not None:
                self._guess.order = self.thread._ticket()
        for job in (self._job, self._guess):
            if job is not None and not job.started and not job.cancelled:
                return job
        return None

    def _finished(self, job: _Job) -> None:
        """All of ``job``'s stages ran (lock held)."""
        job.complete = not job.cancelled
        if job.complete and self.chain and self._job is job and self._guess is None:
            self._guess = job.chained()
            if self._guess is not None:
                self._guess.order = self.thread._ticket()
