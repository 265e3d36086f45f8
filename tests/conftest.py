"""Shared fixtures: short music-like clips, exactly representable in PCM16."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jack_server import JackServer, start_jack

from nmp_peer.audio_io import write_audio
from nmp_peer.synth.signals import synthetic_music


def music_like(seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Harmonic notes with vibrato, a bass line and noise bursts, rounded to PCM16 values."""
    return synthetic_music(seconds, seed=seed, channels=channels)


def copied_blocks(
    out: np.ndarray, src: np.ndarray, first_guess: int, block: int = 512, *, last_copy: list[int] | None = None
) -> int:
    """How many output blocks are exact copies of clip blocks, each from after the one before.

    A receiver copies packets, so a played block is a block of the clip; an inserted
    block, a dropped one or a drift correction moves where the next one comes from, and
    blocks read while resampling match nowhere exactly. Asserts that no block is a copy of
    the clip up to six blocks before the previous copy (played twice, or out of order).
    """
    out, src = out.reshape(len(out), -1)[:, 0], src.reshape(len(src), -1)[:, 0]
    last, last_j, matched = None, 0, 0
    for j in range(len(out) // block):
        x = out[j * block : (j + 1) * block]
        if not x.any():
            continue
        if last is None:  # until the first match: around where the latency puts it
            lo, hi = j * block - first_guess - 8 * block, j * block - first_guess + 8 * block
        else:  # then: after the last one, as many blocks on as were played since, and a few more
            lo, hi = last + 1, last + (j - last_j + 5) * block
        lo, hi = max(0, lo), min(len(src) - block, hi)
        if hi < lo:
            continue
        starts = lo + np.flatnonzero((src[lo : hi + 1] == x[0]) & (src[lo + 1 : hi + 2] == x[1]))
        found = [int(c) for c in starts if np.array_equal(x, src[c : c + block])]
        if found:
            last, last_j, matched = found[0], j, matched + 1
        elif last is not None:  # a copy of a block played before is a block played twice
            back = max(0, last - 6 * block)
            starts = back + np.flatnonzero((src[back : last + 1] == x[0]) & (src[back + 1 : last + 2] == x[1]))
            again = [int(c) for c in starts if np.array_equal(x, src[c : c + block])]
            assert not again, f"output block {j} repeats clip samples {again[0]}.. after {last}"
    if last_copy is not None and last is not None:
        last_copy.append(last)  # where in the clip the last copy started
    return matched


@pytest.fixture
def music() -> np.ndarray:
    return music_like(3.0)


@pytest.fixture
def music_wav(tmp_path: Path) -> Path:
    path = tmp_path / "in.wav"
    write_audio(path, music_like(3.0))
    return path


class JamProcess:
    """An ``nmp-peer jam`` (or ``command``: ``band``) subprocess whose live status lines
    (stderr) are read as they come.

    Tests wait for what they need to see (``wait_for``) instead of sleeping a fixed time,
    and stop the peer with SIGTERM (``stop``): it exits 0 and prints its JSON summary.
    """

    RX = re.compile(r"\brx (\d+) ")

    def __init__(self, args: list[str], env: dict[str, str] | None = None, command: str = "jam") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nmp_peer.cli", command, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._out: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stderr, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stdout, self._out), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._changed:
                into.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def received(self) -> int:
        """``packets_received`` of the last status line (0 before the first)."""
        with self._changed:
            counts = [int(m.group(1)) for line in self.lines if (m := self.RX.search(line))]
        return counts[-1] if counts else 0

    def status_lines(self) -> int:
        with self._changed:
            return sum(bool(self.RX.search(line)) for line in self.lines)

    def wait_for(self, what: str, condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
        """Until ``condition()`` holds; fails saying ``what`` if the peer exits or ``timeout_s`` passes first."""
        deadline = time.monotonic() + timeout_s
        with self._changed:  # an RLock: condition() may read the lines
            while not condition():
                left = deadline - time.monotonic()
                if self.process.poll() is not None or left <= 0:
                    raise AssertionError(
                        f"{what}: not within {timeout_s:g} s (exit code {self.process.poll()}); "
                        f"stderr: {''.join(self.lines)[-1500:]}"
                    )
                self._changed.wait(min(left, 0.5))

    def stop(self, timeout_s: float = 30.0, sig: int | None = signal.SIGTERM) -> tuple[int, dict[str, Any], str]:
        """``sig`` (unless it ended; None: send nothing, wait for it to end), then its exit code,
        JSON summary and stderr."""
        if sig is not None and self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        for t in self._readers:
            t.join(timeout_s)
        err, out = "".join(self.lines), "".join(self._out)
        try:
            summary = json.loads(out)
        except json.JSONDecodeError:
            summary = {}
        return code, summary, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def jack_server(tmp_path: Path) -> Iterator[JackServer]:
    """A private ``jackd -d dummy`` (44.1 kHz, period 512); skips, saying why, where JACK cannot start."""
    yield from start_jack(tmp_path)
