"""The process's memory before real time (``nmp_peer.live.memory``), each check in a fresh
interpreter: both settings are process-wide and the first call decides them."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from nmp_peer.live.memory import hold_freed_memory

# Three 1-MB buffers made and freed together, as a concealment's temporaries are, 100 times;
# the minor page faults of those 100 rounds, after 3 rounds to settle.
ROUNDS = """
import resource, sys
import numpy as np
if sys.argv[1] == "hold":
    from nmp_peer.live.memory import hold_freed_memory
    assert hold_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    a = [np.ones(1 << 18, np.float32) for _ in range(3)]; del a
before = faults()
for _ in range(100):
    a = [np.ones(1 << 18, np.float32) for _ in range(3)]; del a
print(faults() - before)
"""
PAGES_PER_ROUND = 3 * (1 << 20) // 4096


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, timeout=120, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the C library is not glibc: there is no mallopt to set")
def test_freed_buffers_stay_mapped_once_held() -> None:
    system, held = _faults("system"), _faults("hold")
    # The premise: by default the buffers go back to the kernel and come back as fresh pages
    # (about all of them, every round). If a C library stops doing that, this says so.
    assert system >= 100 * PAGES_PER_ROUND // 2, f"the default already keeps freed memory: {system} faults"
    assert held <= 100, f"held: {held} faults in 100 rounds (default: {system})"


def test_holding_is_decided_once_and_says_whether_it_held() -> None:
    held = hold_freed_memory()
    assert held is hold_freed_memory()
    assert held == (platform.libc_ver()[0] == "glibc")
