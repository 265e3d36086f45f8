"""The local mix of a band: N - 1 played streams summed into one output block.

Sans-IO: each output tick hands the mixer one block per stream (the streams' playout
engines, read at the same output clock) and gets the mix. Per stream a gain (dB), a
mute and a pan; the output has one or two channels.

Pan is a balance law (as a stereo channel strip's balance): at the centre a stream
plays at its full level in both channels, and panning turns down only the other side,
to silence at ±1. So a centred stream at 0 dB passes into the mix unchanged, bit for
bit: a duo's jam (one stream, mono out) is an exact copy of what arrived. Mono streams
go to both sides; a stereo stream's left and right stay left and right (into a mono
output they are averaged).

The sum is clipped to [-1, 1] and the clipped samples are counted (``clipped_samples``):
four loud players summed can exceed full scale, and a clip is heard.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from nmp_peer import BLOCK_FRAMES


class MixError(ValueError):
    """A mix setting out of range (a user's)."""


@dataclass
class Strip:
    """One stream's place in the mix."""

    name: str
    gain_db: float = 0.0
    pan: float = 0.0
    """-1 (left) .. 0 (centre) .. +1 (right)."""
    mute: bool = False

    def __post_init__(self) -> None:
        if not math.isfinite(self.gain_db) or not -120.0 <= self.gain_db <= 24.0:
            raise MixError(f"{self.name}: gain_db must be in [-120, 24], got {self.gain_db:g}")
        if not -1.0 <= self.pan <= 1.0:
            raise MixError(f"{self.name}: pan must be in [-1, 1], got {self.pan:g}")

    def weights(self, out_channels: int) -> np.ndarray:
        """The factor per output channel (float32)."""
        if self.mute:
            return np.zeros(out_channels, np.float32)
        g = 10.0 ** (self.gain_db / 20.0) if self.gain_db else 1.0
        if out_channels == 1:
            return np.array([g], np.float32)
        return np.array([g * min(1.0, 1.0 - self.pan), g * min(1.0, 1.0 + self.pan)], np.float32)


class Mixer:
    """Sums one block per strip into ``out_channels`` (1 or 2); settings may change while it runs."""

    def __init__(self, strips: list[Strip], out_channels: int = 2) -> None:
        if out_channels not in (1, 2):
            raise MixError(f"the mix has 1 or 2 channels, not {out_channels}")
        self.strips = strips
        self.out_channels = out_channels
        self.clipped_samples = 0
        self._lock = threading.Lock()
        self._weights = [s.weights(out_channels) for s in strips]

    def set(
        self, index: int, *, gain_db: float | None = None, pan: float | None = None, mute: bool | None = None
    ) -> None:
        """Change one strip's settings (from any thread; the next block uses them)."""
        s = self.strips[index]
        strip = Strip(
            s.name,
            s.gain_db if gain_db is None else gain_db,
            s.pan if pan is None else pan,
            s.mute if mute is None else mute,
        )
        with self._lock:
            self.strips[index] = strip
            self._weights[index] = strip.weights(self.out_channels)

    def unit(self, index: int) -> bool:
        """Strip ``index`` passes its stream unchanged (0 dB, centred, not muted)."""
        return bool(np.all(self._weights[index] == 1.0))

    def mix(self, blocks: list[np.ndarray]) -> np.ndarray:
        """The mix of one block per strip (each ``(frames, 1 or 2)`` float32)."""
        if len(blocks) != len(self.strips):
            raise ValueError(f"{len(blocks)} blocks for {len(self.strips)} strips")
        frames = blocks[0].shape[0] if blocks else BLOCK_FRAMES
        out = np.zeros((frames, self.out_channels), np.float32)
        with self._lock:
            weights = list(self._weights)
        for block, w in zip(blocks, weights, strict=True):
            if not w.any():
                continue
            if block.shape[1] == 2 and self.out_channels == 1:
                block = block.mean(axis=1, keepdims=True, dtype=np.float32)
            if np.all(w == 1.0):
                out += block  # a unit weight: an exact copy (0 + x == x)
            else:
                out += block * w
        over = np.abs(out) > 1.0
        if over.any():
            self.clipped_samples += int(over.sum())
            np.clip(out, -1.0, 1.0, out=out)
        return out
