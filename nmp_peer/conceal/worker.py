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
concealer, one model session, and two threads for all of them: one for first stages,
one for any), which runs the work of several streams stage by stage, the most urgent
first, and, with a model that takes a batch, in one call.
"""

from __future__ import annotations

import os
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


BACKGROUND_NICE = 5
"""How much nicer than the audio path (the event loop: playout, receive, send) the
concealment threads run: where the CPU is short, the output clock's tick goes first and
a late concealment plays its fallback (counted) instead of the tick running late."""


def _lower_priority(nice: int) -> None:
    """Make the calling thread ``nice`` steps nicer (Linux: per thread; elsewhere nothing).
    Lowering one's own priority needs no privilege."""
    if not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:  # not allowed here: run as is
        pass


@dataclass
class _Work:
    """Jobs advanced together by one stage iterator: one job's ``stages``, or a batch's
    ``stages_batch`` (which yields the list of its jobs' results per stage)."""

    jobs: list[tuple[ThreadedWorker, _Job]]
    run: Iterator[Any]
    batched: bool
    stage_count: int
    stages_done: int = 0
    busy: bool = False
    """A thread is running its next stage (a generator runs on one thread at a time)."""

    def priority(self) -> tuple[bool, int, int]:
        """Lower runs first (lock held): requests before guesses, fewer stages done before
        more, older before newer."""
        return self.guess(), self.stages_done, min(job.order for _, job in self.jobs)

    def guess(self) -> bool:
        """No job of it is a lane's current request (lock held)."""
        return all(job is not lane._job for lane, job in self.jobs)

    def runs_on(self, fast: bool) -> bool:
        """The fast thread runs first stages only; the other runs everything but a guess's
        first stage, so that it is never held up on work the fast thread can do."""
        return not self.stages_done if fast else bool(self.stages_done) or not self.guess()

    def cancelled(self) -> bool:
        return all(job.cancelled for _, job in self.jobs)


class ConcealThread:
    """The background threads that compute the concealments of several streams (a band's N-1).

    Each stream's playout engine holds a :class:`ThreadedWorker` (a *lane*: its latest
    request and its chained guess); these threads serve every lane: a *fast* one that
    runs only first stages (the LPC prediction: a millisecond), and one that runs any
    stage but a guess's first, so a slow stage (the GAN refinement) never holds up another
    stream's LPC prediction; onnxruntime releases the GIL while the network runs. Between any two
    stages a thread picks its next piece of work afresh, so a request waits at most for
    the stage under way:

    * requests before guesses: a chained guess runs only while no real request waits,
      and a request that arrives meanwhile goes first at the guess's next stage;
    * stage by stage: every job's first (cheap) stage before any job's second, so each
      stream has at least its LPC prediction early, and the deadline of one stream is
      not spent on another's GAN stage first; among equals, the oldest request first;
    * batched where the concealer can (``stages_batch`` and ``max_batch > 1``: a GAN
      whose model has a dynamic batch axis): requests that arrive together are run as
      one batch (in chunks of ``max_batch``), one call per stage; otherwise each job's
      stages in turn (a batch-1 model).

    A job cancelled meanwhile (its packet came after all, or its deadline passed) is
    dropped at its next stage, so a late refinement never delays another stream's work.
    """

    def __init__(self, name: str = "nmp-conceal") -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._lanes: list[ThreadedWorker] = []
        self._closed = False
        self._order = 0
        self._work_list: list[_Work] = []
        self.rounds = 0
        """Times the thread took up new jobs (one or more at once)."""
        self.shared_rounds = 0
        """Of those, the times the new jobs came from more than one stream."""
        self.batched_calls = 0
        """``stages_batch`` runs that concealed more than one job at once."""
        self._threads = [
            threading.Thread(
                target=self._run, args=(first_only,), name=f"{name}{'-fast' if first_only else ''}", daemon=True
            )
            for first_only in (False, True)
        ]
        for thread in self._threads:
            thread.start()

    def lane(self, concealer: Concealer, chain: bool = True) -> ThreadedWorker:
        """A worker for one more stream, served by these threads."""
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
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=2.0)

    def _take_up(self, work: list[_Work]) -> None:
        """Every lane's jobs not yet started become work (lock held)."""
        requests: list[tuple[ThreadedWorker, _Job]] = []
        guesses: list[tuple[ThreadedWorker, _Job]] = []
        for lane in self._lanes:
            for job in lane._pending():
                job.started = True
                (requests if job is lane._job else guesses).append((lane, job))
        if not (requests or guesses):
            return
        self.rounds += 1
        self.shared_rounds += len({id(lane) for lane, _ in requests + guesses}) > 1
        for jobs in (requests, guesses):
            groups: dict[int, list[tuple[ThreadedWorker, _Job]]] = {}
            for lane, job in sorted(jobs, key=lambda item: item[1].order):
                groups.setdefault(id(lane.concealer), []).append((lane, job))
            for group in groups.values():
                work.extend(self._work(group))

    def _work(self, group: list[tuple[ThreadedWorker, _Job]]) -> list[_Work]:
        concealer = group[0][0].concealer
        count = int(getattr(concealer, "stage_count", 1))
        max_batch = int(getattr(concealer, "max_batch", 1))
        stages_batch = getattr(concealer, "stages_batch", None)
        if len(group) > 1 and max_batch > 1 and stages_batch is not None:
            out = []
            for start in range(0, len(group), max_batch):
                chunk = group[start : start + max_batch]
                self.batched_calls += len(chunk) > 1
                run = stages_batch([job.history for _, job in chunk], [job.burst_index for _, job in chunk])
                out.append(_Work(chunk, run, True, count))
            return out
        return [
            _Work([(lane, job)], concealer.stages(job.history, job.burst_index), False, count) for lane, job in group
        ]

    def _run(self, first_only: bool) -> None:
        """One thread's loop: the most urgent work not under way (``first_only``: first stages only)."""
        _lower_priority(BACKGROUND_NICE)
        work = self._work_list
        while True:
            with self._wake:
                while True:
                    if self._closed:
                        for item in work:
                            for _, job in item.jobs:
                                job.done.set()
                        return
                    self._take_up(work)
                    for item in [w for w in work if w.cancelled() and not w.busy]:
                        work.remove(item)
                        for _, job in item.jobs:
                            job.done.set()
                    ready = [w for w in work if not w.busy and w.runs_on(first_only)]
                    if ready:
                        break
                    self._wake.wait()
                item = min(ready, key=_Work.priority)
                item.busy = True
            try:
                self._advance(item, work)
            finally:
                with self._wake:
                    item.busy = False
                    self._wake.notify_all()  # its next stage may be the other thread's

    def _advance(self, item: _Work, work: list[_Work]) -> None:
        """Run ``item``'s next stage; once its last stage is in, collect its end at once."""
        while True:
            try:
                result = next(item.run)
            except StopIteration:
                with self._lock:
                    if item in work:
                        work.remove(item)
                    for lane, job in item.jobs:
                        lane._finished(job)
                        job.done.set()
                return
            except Exception as exc:  # a broken concealer: counted; the engine falls back
                with self._lock:
                    if item in work:
                        work.remove(item)
                    for lane, job in item.jobs:
                        lane.errors += 1
                        lane.last_error = f"{type(exc).__name__}: {exc}"
                        job.done.set()
                return
            with self._lock:
                results = result if item.batched else [result]
                for (_, job), r in zip(item.jobs, results, strict=True):
                    if not job.cancelled:
                        job.result = r
                item.stages_done += 1
                if item.stages_done < item.stage_count or item.cancelled():
                    return


class ThreadedWorker:
    """One stream's concealments, computed on a background thread; ``take`` never blocks.

    Only the latest request matters: a new one cancels the previous (its packet came
    after all, or the engine moved on). With ``chain`` (the default), a finished
    concealment is followed by a guess at the next slot's (module docstring);
    ``chained`` counts the requests that found their guess.

    ``thread``: the :class:`ConcealThread` that computes them, shared with other streams'
    workers (a band); without one, the worker has a ``ConcealThread`` of its own (a duo).

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
                self._job = guess  # if it is complete, the worker thread guesses on (``_pending``)
                self.chained += 1
            else:
                if guess is not None:
                    guess.cancelled = True
                self._job = _Job(slot, history, burst_index)
            self._job.order = self.thread._ticket()
            self._wake.notify_all()

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

    def _pending(self) -> list[_Job]:
        """The jobs not yet started (lock held, on the worker thread): the request, the guess."""
        if self.chain and self._guess is None and self._job is not None and self._job.complete:
            self._guess = self._job.chained()  # an adopted guess that was already done
            if self._guess is not None:
                self._guess.order = self.thread._ticket()
        return [job for job in (self._job, self._guess) if job is not None and not job.started and not job.cancelled]

    def _finished(self, job: _Job) -> None:
        """All of ``job``'s stages ran (lock held)."""
        job.complete = not job.cancelled
        if job.complete and self.chain and self._job is job and self._guess is None:
            self._guess = job.chained()
            if self._guess is not None:
                self._guess.order = self.thread._ticket()
