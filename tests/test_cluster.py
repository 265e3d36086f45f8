"""``nmp-peer lab --cluster``: the lab's jobs on a real Dask cluster (a scheduler and two
workers, each its own process on 127.0.0.1), the same report as ``--jobs 2``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from conftest import music_like

from nmp_peer.audio_io import write_audio

pytest.importorskip("distributed")  # the lab extra

pytestmark = pytest.mark.slow  # a scheduler, two workers and three lab processes
CLI = [sys.executable, "-m", "nmp_peer.cli"]
TIMING_KEYS = ("conceal_ms_per_packet", "realtime_factor")
"""The rows' timings: how fast a worker was, not what it computed."""


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _start_scheduler(tmp_path: Path, procs: list[subprocess.Popen[bytes]], log: IO[bytes]) -> str:
    """``dask scheduler`` on a free port of 127.0.0.1 (added to ``procs``); its address."""
    info = tmp_path / "scheduler.json"
    procs.append(
        subprocess.Popen(
            [*[sys.executable, "-m", "dask"], "scheduler", "--host", "127.0.0.1", "--port", "0"]
            + ["--no-dashboard", "--scheduler-file", str(info)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    )
    deadline = time.monotonic() + 120
    while not info.exists() or not info.read_text().strip():
        assert procs[0].poll() is None and time.monotonic() < deadline, "the scheduler did not start"
        time.sleep(0.1)
    time.sleep(0.2)  # the file is written in one go, but let it be closed
    return str(json.loads(info.read_text())["address"])


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[str]:
    """A scheduler and two single-threaded ``dask worker`` processes, all connected; yields
    the scheduler's address."""
    from distributed import Client

    procs: list[subprocess.Popen[bytes]] = []
    with (tmp_path / "dask.log").open("wb") as log:
        try:
            address = _start_scheduler(tmp_path, procs, log)
            for _ in range(2):
                procs.append(
                    subprocess.Popen(
                        [*[sys.executable, "-m", "dask"], "worker", address, "--nthreads", "1", "--no-nanny"]
                        + ["--host", "127.0.0.1", "--no-dashboard"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                    )
                )
            with Client(address, timeout=60) as client:
                client.wait_for_workers(2, timeout=180)
            yield address
        finally:
            _stop(procs[::-1])


def _lab(clips: Path, out: Path, *extra: str) -> tuple[list[dict[str, object]], list[str]]:
    cmd = [*CLI, "lab", "--clips", str(clips), "--out", str(out), "--methods", "zeros,repeat,lpc"]
    cmd += ["--loss", "0.1,0.2", "--metrics", "snr,lsd,mrstft", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = json.loads((out / "metrics.json").read_text())
    for row in rows:
        for key in TIMING_KEYS:
            row.pop(key)
    return rows, _without_timings((out / "report.md").read_text())


def _without_timings(report: str) -> list[str]:
    """The report's lines but its command, its wall time and the concealment-time column."""
    lines, drop = [], None
    for line in report.splitlines():
        if line.startswith(("Command:", "Wall time")):
            continue
        if line.startswith("|"):
            cells = line.split("|")
            if drop is None:
                drop = next((i for i, c in enumerate(cells) if "ms/packet" in c), -1)
            if drop >= 0:
                del cells[drop]
            line = "|".join(cells)
        else:
            drop = None
        lines.append(line)
    return lines


def test_a_lab_on_a_dask_cluster_reports_what_two_local_processes_report(scheduler: str, tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    for i, cat in enumerate(("piano", "bass")):
        write_audio(clips / cat / f"c{i}.wav", music_like(2.0, seed=i))
    local_rows, local_report = _lab(clips, tmp_path / "jobs", "--jobs", "2")
    cluster_rows, cluster_report = _lab(clips, tmp_path / "cluster", "--cluster", scheduler)
    assert len(local_rows) == 2 * 2 * 3  # clips × settings × methods
    assert cluster_rows == local_rows  # every metric to the last bit, in the same order
    assert cluster_report == local_report
    meta = json.loads((tmp_path / "cluster" / "meta.json").read_text())
    assert meta["jobs"] == 2  # the workers it found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "address, fragment",
    [
        (f"127.0.0.1:{_free_port()}", "cannot reach the Dask scheduler at tcp://127.0.0.1:"),
        ("local:0", "at least one worker"),
        ("localhost", "expected a scheduler's HOST:PORT"),
        ("local:two", "local:N, N worker processes"),
    ],
)
def test_a_scheduler_that_cannot_be_reached_is_one_line_and_exit_2(address: str, fragment: str, tmp_path: Path) -> None:
    write_audio(tmp_path / "clips" / "c.wav", music_like(1.0))
    cmd = [*CLI, "lab", "--clips", str(tmp_path / "clips"), "--out", str(tmp_path / "out"), "--methods", "zeros"]
    r = subprocess.run(
        [*cmd, "--metrics", "snr", "--cluster", address, "--cluster-timeout", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and fragment in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


def test_a_scheduler_without_workers_is_one_line_and_exit_2(tmp_path: Path) -> None:
    write_audio(tmp_path / "clips" / "c.wav", music_like(1.0))
    procs: list[subprocess.Popen[bytes]] = []
    with (tmp_path / "dask.log").open("wb") as log:
        try:
            address = _start_scheduler(tmp_path, procs, log)
            cmd = [*CLI, "lab", "--clips", str(tmp_path / "clips"), "--out", str(tmp_path / "out")]
            cmd += ["--methods", "zeros", "--metrics", "snr", "--cluster", address, "--cluster-timeout", "1"]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        finally:
            _stop(procs)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "has no worker" in lines[0], r.stderr
