"""The process's memory, made ready for real time before the first block.

Two costs that no profile of the audio path shows, because the path itself does not
cause them, and that a live peer pays in its worst blocks:

- ``freeze_heap``: the garbage collector's full collections scan every object alive
  (numpy, scipy, onnxruntime), a stall every thread in the process waits out.
- ``hold_freed_memory``: glibc hands large freed blocks (from 128 kB up) back to the
  kernel, as mappings of their own or by trimming the heap, and a concealment makes and
  frees such buffers every call (a stereo GAN call: about 3 MB of frames and spectra).
  Handed back, they are faulted in again, zero-filled, on the next call: measured in a
  bare script, ~800 minor page faults a stereo call and 0.6 ms of its p50. glibc raises
  its threshold after the first large free, and in a jam or the benchmark some earlier
  free has raised it far enough (0.3 faults a call there, ``minor_faults_per_call`` in
  ``nmp-peer bench --method gan``), but only by the luck of what the process freed
  before. Holding freed memory makes it a setting instead; the process keeps at most
  ``TRIM_THRESHOLD_BYTES`` of freed memory resident in exchange.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

MMAP_THRESHOLD_BYTES = 32 << 20
"""Blocks up to this size come from the heap (glibc's own ceiling for its sliding threshold)."""
TRIM_THRESHOLD_BYTES = 128 << 20
"""Free memory at the top of the heap is handed back only beyond this much."""
_M_TRIM_THRESHOLD = -1  # malloc.h
_M_MMAP_THRESHOLD = -3

_held: bool | None = None


def hold_freed_memory() -> bool:
    """Keep freed memory mapped (glibc's ``mallopt``): True where it is held, False where the
    C library is not glibc (musl, macOS) and nothing changed. Process-wide, once; call it
    before real time starts (later allocations benefit, whichever thread makes them)."""
    global _held
    if _held is None:
        _held = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc
                return False
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            _held = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
                mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
            )
    return _held


def freeze_heap() -> None:
    """Call before real time starts: collect once, then move every object alive now out of
    the collector's reach (``gc.freeze``). A full collection otherwise scans the whole heap
    of numpy, scipy and onnxruntime objects, a stall of tens of milliseconds that every
    ticker, socket reader and sound-card callback in the process waits out; afterwards it
    scans only what the session itself allocates. The first collection is such a stall
    (60-150 ms on a 2-core VM): make it before any sound-card stream starts; a second one
    then scans only what was made since. Freed memory is held from then on
    (``hold_freed_memory``)."""
    hold_freed_memory()
    gc.collect()
    gc.freeze()
