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

A live peer's worker waits before it starts on a gap's first packet (``grace``): a
request is made whenever the next packet is not in at the tick before its slot, and on
a clean link one peer of two finds it so at nearly every tick, its partner's packets
landing just after its own ticks: without the wait it conceals every packet it then
receives. It waits as long as the stream's recent concealments (their whole time, from
start to last stage, queueing included) leave, twice over, before the deadline, a
block after the request; a request whose packet comes meanwhile costs nothing. A slow
concealer (the GAN, several milliseconds) leaves no wait, and nor does the second
packet of a burst (nothing arrives between them) or a chained guess.

A band receives N - 1 streams: their workers share one :class:`ConcealThread` (one
concealer, one model session, and two threads for all of them: one for first stages,
one for any), which runs the work of several streams stage by stage, the most urgent
first, and, with a model that takes a batch, in one call.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nmp_peer import BLOCK_FRAMES, PACKET_S
from nmp_peer.conceal.base import Concealer, final_stage


@dataclass(eq=False)  # compared by identity: it holds arrays
class _Job:
    slot: int
    history: np.ndarray
    burst_index: int
    result: np.ndarray | None = None
    complete: bool = False
    cancelled: bool = False
    started: bool = False
    not_before: float = 0.0
    """``time.monotonic()`` before which no thread starts it (the worker's grace)."""
    started_at: float = 0.0
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

    def waiting(self) -> bool:
        """Not started, not cancelled (lock held)."""
        return not self.started and not self.cancelled

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

    def withdraw(self, slot: int) -> None:
        """Slot ``slot``'s packet came: its request is void."""
        if self._job is not None and self._job.slot == slot:
            self._job = None

    def close(self) -> None:
        self._job = None


GRACE_MARGIN_S = 0.002
"""Kept free before a gap's deadline beyond twice the stream's recent concealment time."""
GRACE_DECAY = 0.95
"""Per finished concealment, how much of the longest recent time is still assumed."""

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


@dataclass(eq=False)  # compared by identity: its jobs hold arrays
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

    def lane(self, concealer: Concealer, chain: bool = True, grace: bool = False) -> ThreadedWorker:
        """A worker for one more stream, served by these threads."""
        return ThreadedWorker(concealer, chain, thread=self, grace=grace)

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
                job.started_at = time.monotonic()
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

    def _until_due(self) -> float | None:
        """Seconds until the first job held back by its lane's grace may start (lock held)."""
        held = [lane._job.not_before for lane in self._lanes if lane._job is not None and lane._job.waiting()]
        return None if not held else max(0.0, min(held) - time.monotonic())

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
                    self._wake.wait(self._until_due())
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

    ``grace`` (a live peer's): a gap's first packet is started on only once the time the
    stream's recent concealments took fits twice, plus ``GRACE_MARGIN_S``, in the block
    before its deadline (module docstring); ``grace_s`` is that wait now, ``held_back``
    counts the requests that waited, ``spared`` those whose packet came meanwhile.

    A concealer that raises does not stop the thread, and is not hidden either: ``errors``
    counts the exceptions and ``last_error`` holds the latest one as text (type and
    message). The job ends incomplete, with the last stage that did finish, if any (an
    LPC stage before the GAN stage failed, say), so the engine uses that or falls back
    as it does when a concealment is late.
    """

    def __init__(
        self,
        concealer: Concealer,
        chain: bool = True,
        *,
        thread: ConcealThread | None = None,
        grace: bool = False,
        block_s: float = PACKET_S,
    ) -> None:
        self.concealer = concealer
        self.chain = chain
        self.grace = grace
        self.block_s = block_s
        """From a request to its deadline (the engine asks a block ahead)."""
        self.held_back = 0
        self.spared = 0
        self._job_s: float | None = None
        """The longest recent concealment's time, decaying (``GRACE_DECAY``); None: none yet."""
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
                self._spare(self._job)
                self._job.cancelled = True
            guess, self._guess = self._guess, None
            if guess is not None and guess.matches(slot, history, burst_index):
                self._job = guess  # if it is complete, the worker thread guesses on (``_pending``)
                self.chained += 1
            else:
                if guess is not None:
                    guess.cancelled = True
                self._job = _Job(slot, history, burst_index)
                wait = self.grace_s() if burst_index == 0 else 0.0
                if wait > 0.0:
                    self._job.not_before = time.monotonic() + wait
                    self.held_back += 1
            self._job.order = self.thread._ticket()
            self._wake.notify_all()

    def grace_s(self) -> float:
        """How long a gap's first packet waits now (0 without ``grace``, or before any
        concealment was timed)."""
        if not self.grace or self._job_s is None:
            return 0.0
        return max(0.0, self.block_s - GRACE_MARGIN_S - 2.0 * self._job_s)

    def take(self, slot: int) -> Taken:
        with self._lock:
            job, self._job = self._job, None
            if job is None:
                return Taken(None, False)
            if not job.complete:
                job.cancelled = True  # too late to be useful; a complete one may still be chained
            return Taken(job.result, job.complete) if job.slot == slot else Taken(None, False)

    def _spare(self, job: _Job) -> None:
        """``job`` is dropped before it ran (lock held): count it if the grace held it back."""
        if job.not_before and job.waiting():
            self.spared += 1

    def withdraw(self, slot: int) -> None:
        """Slot ``slot``'s packet came after all: drop its request (spared if it had not started)
        and the guess chained on it (which assumed the packet lost)."""
        with self._lock:
            if self._job is None or self._job.slot != slot:
                return
        self.cancel()

    def cancel(self) -> None:
        with self._lock:
            for job in (self._job, self._guess):
                if job is not None:
                    self._spare(job)
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
        now = time.monotonic()
        return [job for job in (self._job, self._guess) if job is not None and job.waiting() and job.not_before <= now]

    def _finished(self, job: _Job) -> None:
        """All of ``job``'s stages ran (lock held)."""
        job.complete = not job.cancelled
        if job.complete:
            took = time.monotonic() - job.started_at
            self._job_s = took if self._job_s is None else max(took, GRACE_DECAY * self._job_s)
        if job.complete and self.chain and self._job is job and self._guess is None:
            self._guess = job.chained()
            if self._guess is not None:
                self._guess.order = self.thread._ticket()
