"""The decoded stream in sample positions, and the crossfade shape the engine uses."""

from __future__ import annotations

import numpy as np


class StreamFifo:
    """The stream in sample positions: appended at the end, read anywhere in the retained past."""

    def __init__(self, channels: int, retain: int = 16384, capacity: int = 1 << 17) -> None:
        self._buf = np.zeros((capacity, channels), np.float32)
        self._retain = retain
        self.origin = -retain
        """Absolute position of ``_buf[0]``."""
        self.end = 0
        """Absolute position one past the last appended sample."""

    def append(self, block: np.ndarray) -> None:
        n = len(block)
        offset = self.end - self.origin
        if offset + n > len(self._buf):
            keep = self._retain
            self._buf[:keep] = self._buf[offset - keep : offset]
            self.origin = self.end - keep
            offset = keep
        self._buf[offset : offset + n] = block
        self.end += n

    def view(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start..stop`` (absolute); the part before the retained past is zeros."""
        if start < self.origin:
            head = np.zeros((self.origin - start, self._buf.shape[1]), np.float32)
            return np.concatenate([head, self.view(self.origin, stop)])
        return self._buf[start - self.origin : stop - self.origin]

    def tail(self, samples: int) -> np.ndarray:
        return self.view(self.end - samples, self.end).copy()


def raised_cosine(n: int) -> np.ndarray:
    """A rising raised-cosine fade of ``n`` samples (a column: samples × 1)."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)[:, None]
