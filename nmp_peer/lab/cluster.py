"""The lab's jobs on a Dask distributed cluster: ``nmp-peer lab ... --cluster ADDRESS``.

Each job (one clip under one loss setting, ``lab.run.run_job``, the function ``--jobs``
runs in local processes) is one task; the results come back in job order, so the rows,
tables and report are those of ``--jobs``. ``local:N`` starts a ``LocalCluster`` of N
single-threaded worker processes on this machine; any other address is a running
scheduler (``dask scheduler``) whose workers can import this same ``nmp_peer`` and read
the clips at the paths this machine gives (a shared or identical file system), each
best run single-threaded (``dask worker ADDRESS --nthreads 1``): the jobs are CPU-bound
Python.

This is the only module that imports ``distributed`` (the ``[lab]`` extra; an
import-linter contract in ``pyproject.toml`` checks that), and only when a cluster is
asked for.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from nmp_peer.errors import UserError

T = TypeVar("T")
R = TypeVar("R")

CONNECT_TIMEOUT_S = 5.0
"""How long to try to reach a scheduler, and to wait for its first worker."""
_LOCAL = re.compile(r"local:(\d+)")


class ClusterError(UserError):
    """A cluster that cannot be used: unreachable, without workers, or a malformed address."""


def check_address(address: str) -> str:
    """The address as ``distributed`` takes it (``tcp://`` added to a bare ``HOST:PORT``);
    ``local:N`` as given. A malformed one is a ``ClusterError``."""
    address = address.strip()
    local = _LOCAL.fullmatch(address)
    if local:
        if int(local.group(1)) < 1:
            raise ClusterError(f"--cluster {address}: a local cluster needs at least one worker (local:N, N >= 1)")
        return address
    if address.startswith("local:"):
        raise ClusterError(f"--cluster {address!r}: a local cluster is local:N, N worker processes")
    if "://" not in address:
        address = "tcp://" + address
    if not re.fullmatch(r"(tcp|tls)://[^\s/:]+:\d{1,5}", address):
        raise ClusterError(
            f"--cluster {address!r}: expected a scheduler's HOST:PORT (tcp://HOST:PORT, tls://HOST:PORT) or local:N"
        )
    return address


class DaskCluster:
    """A client of a Dask scheduler (or of a local cluster it starts), for ``map``.

    Use it as a context manager: it connects on entry and closes what it opened on exit.
    """

    def __init__(self, address: str, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.address = check_address(address)
        self.connect_timeout_s = connect_timeout_s
        self._client: Any = None
        self._local: Any = None

    def __enter__(self) -> DaskCluster:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ClusterError("--cluster needs dask.distributed: pip install 'nmp-peer[lab]'") from None
        local = _LOCAL.fullmatch(self.address)
        try:
            if local:
                self._local = LocalCluster(
                    n_workers=int(local.group(1)),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
                self._client = Client(self._local)
            else:
                self._client = Client(self.address, timeout=self.connect_timeout_s)
        except OSError as exc:
            self.__exit__(None, None, None)
            raise ClusterError(
                f"cannot reach the Dask scheduler at {self.address} "
                f"(waited {self.connect_timeout_s:g} s): {exc.strerror or exc}"
            ) from None
        try:
            self._client.wait_for_workers(1, timeout=self.connect_timeout_s)
        except TimeoutError:
            self.__exit__(None, None, None)
            raise ClusterError(
                f"the Dask scheduler at {self.address} has no worker (waited {self.connect_timeout_s:g} s); "
                f"start some with: dask worker {self.address} --nthreads 1"
            ) from None
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._local is not None:
            self._local.close()
            self._local = None

    @property
    def workers(self) -> int:
        """Worker processes now connected."""
        return len(self._client.scheduler_info(n_workers=-1)["workers"])

    def map(self, fn: Callable[[T], R], items: Sequence[T], progress: Callable[[int], None] | None = None) -> list[R]:
        """``[fn(x) for x in items]``, each call a task on the cluster, in the order of ``items``;
        ``progress(1)`` as each one is done. A task's exception is raised here."""
        from distributed import as_completed

        futures = self._client.map(fn, items, pure=False)
        for _ in as_completed(futures):
            if progress:
                progress(1)
        return [f.result() for f in futures]
