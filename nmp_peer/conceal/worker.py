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
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from nmp_peer.conceal.base import Concealer


@dataclass
class _Job:
    slot: int
    history: np.ndarray
    burst_index: int
    result: np.ndarray | None = None
    complete: bool = False
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)


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
        result = None
        for result in self.concealer.stages(job.history, job.burst_index):
            pass
        return Taken(result, result is not None)

    def cancel(self) -> None:
        self._job = None

    def close(self) -> None:
        self._job = None


class ThreadedWorker:
    """Runs concealments on one background thread; ``take`` never blocks.

    Only the latest request matters: a new one cancels the previous (its packet came
    after all, or the engine moved on).
    """

    def __init__(self, concealer: Concealer) -> None:
        self.concealer = concealer
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._job: _Job | None = None
        self._started: _Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="nmp-conceal", daemon=True)
        self._thread.start()

    def request(self, slot: int, history: np.ndarray, burst_index: int) -> None:
        with self._wake:
            if self._job is not None:
                self._job.cancelled = True
            self._job = _Job(slot, history, burst_index)
            self._wake.notify()

    def take(self, slot: int) -> Taken:
        with self._lock:
            job, self._job = self._job, None
            if job is None:
                return Taken(None, False)
            job.cancelled = True
            return Taken(job.result, job.complete) if job.slot == slot else Taken(None, False)

    def cancel(self) -> None:
        with self._lock:
            if self._job is not None:
                self._job.cancelled = True
            self._job = None

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (self._job is None or self._job is self._started):
                    self._wake.wait()
                if self._closed:
                    return
                job = self._started = self._job
            try:
                for result in self.concealer.stages(job.history, job.burst_index):
                    with self._lock:
                        if job.cancelled:
                            break
                        job.result = result
                else:
                    with self._lock:
                        job.complete = not job.cancelled
            except Exception:  # a broken concealer must not kill the worker: the engine falls back
                pass
            finally:
                job.done.set()
