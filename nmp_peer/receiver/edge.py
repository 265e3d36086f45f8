"""The sound-card edge, sans IO: device periods of any length to 512-sample blocks and back,
and the device's clock.

A sound card hands over (and asks for) periods of its own length, 64 to 1024 frames or
more; the stream runs in 512-sample blocks. :class:`InputReblocker` collects a device's
periods into blocks (a block leaves as soon as its last frame is in: less than one block
of added latency); :class:`OutputReblocker` keeps the frames of the last block it was
given that the device has not asked for yet and asks for a new block only when it has
fewer than a period (again less than one block held). Either way a device period that
is a divisor or a multiple of 512 adds nothing at all.

:class:`DeviceClock` is the device as the clock: a frame counter whose host time is
locked, by a second-order delay-locked loop (as JACK's and PortAudio's own), to the
times the device reports for its buffers (``outputBufferDacTime``/``inputBufferAdcTime``
mapped to the host clock), not to when a callback happened to run: callbacks may come
in pairs or late, the device's buffer times step evenly (and where a host API's buffer
times move with a late callback, as PortAudio's JACK one does, the loop follows the
earliest observations, not their mean). A single observation far off
the prediction (a callback run late on a busy machine) is set aside; two in a row that
agree are a jump (an xrun, a stalled server): the loop re-locks there and says so, so the
playout can start clean again.

Nothing here reads a clock: every time is passed in (seconds, host clock).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from nmp_peer import BLOCK_FRAMES


class InputReblocker:
    """Device periods in, whole ``block``-frame blocks out, in order, nothing lost or added."""

    def __init__(self, channels: int, block: int = BLOCK_FRAMES) -> None:
        self.block = block
        self._buf = np.zeros((block, channels), np.float32)
        self._fill = 0
        self.frames_in = 0
        """Frames taken so far."""

    @property
    def pending(self) -> int:
        """Frames held for the next block (fewer than one block)."""
        return self._fill

    def push(self, frames: np.ndarray) -> list[np.ndarray]:
        """Take one period (any length); return the blocks it completed (copies)."""
        out: list[np.ndarray] = []
        i, n = 0, len(frames)
        self.frames_in += n
        while i < n:
            take = min(self.block - self._fill, n - i)
            self._buf[self._fill : self._fill + take] = frames[i : i + take]
            self._fill += take
            i += take
            if self._fill == self.block:
                out.append(self._buf.copy())
                self._fill = 0
        return out


class OutputReblocker:
    """Blocks in, device periods out: ``pull(frames, produce)`` fills one period, asking
    ``produce(lead)`` for more audio only when what it holds runs short; ``lead`` is how many
    frames of this period come before the new audio's first frame (the time until the device
    plays it, counted from the period's start, is ``lead`` frames)."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self._held = np.zeros((0, channels), np.float32)
        self.produced = 0
        """Times ``produce`` was called."""

    @property
    def held(self) -> int:
        """Frames held over from earlier audio (fewer than one period's worth plus one block)."""
        return len(self._held)

    def pull(self, frames: int, produce: Callable[[int], np.ndarray]) -> np.ndarray:
        parts = [self._held]
        have = len(self._held)
        while have < frames:
            chunk = produce(have)
            self.produced += 1
            parts.append(chunk)
            have += len(chunk)
        data = np.concatenate(parts) if len(parts) > 1 else self._held
        self._held = data[frames:]
        return data[:frames]


EARLY_GAIN = 64.0
"""How much more an observation earlier than predicted corrects the loop than a later one:
with callbacks late by up to J, the loop locks about J/9 after the earliest instead of J/2."""

JUMP_MIN_S = 0.02
"""A device time more than this (or three quarters of a period, if longer) from the loop's
prediction is an outlier: a callback run late, or a jump (a stalled server). Callbacks run
a few milliseconds late in bursts on a busy machine; a stalled server's jump is persistent."""

JUMP_AGREE = 3
"""Outliers in a row that agree on where the device now is, to be a jump."""


class DeviceClock:
    """Host time of a device's frames: a frame counter locked to the device's buffer times.

    ``tick(frames, observed)`` once per callback, ``observed`` being the host time (seconds)
    the device gives for the period's first frame (its DAC time for an output, ADC time
    for an input). The loop's bandwidth ``bandwidth_hz`` filters the jitter of that mapping
    and follows the device's true rate against the host clock (a real card drifts by tens
    of ppm). ``time_of(frame)`` is the locked host time of any frame of the count.
    """

    def __init__(self, rate: float, bandwidth_hz: float = 0.5) -> None:
        self.rate = float(rate)
        self.bandwidth_hz = bandwidth_hz
        self.frames = 0
        """Frames counted before the current period (the current one's first frame index)."""
        self._t = 0.0
        """Locked host time of frame ``frames``."""
        self._per_frame = 1.0 / self.rate
        self._next: float | None = None
        """Predicted host time of the next period's first frame."""
        self._period_frames = 0
        self.jumps = 0
        """Times the device time jumped and the loop re-locked (not counting the first lock)."""
        self.error_s = 0.0
        """The last observation's distance from the prediction."""
        self.outliers = 0
        """Observations set aside as outliers (a callback run late, the first of a jump)."""
        self._candidate: float | None = None
        self._agree = 0

    @property
    def locked(self) -> bool:
        return self._next is not None

    @property
    def rate_ratio(self) -> float:
        """Device frames per nominal frame time of the host (1 + its drift against the host clock)."""
        return 1.0 / (self._per_frame * self.rate)

    def tick(self, frames: int, observed: float) -> bool:
        """One period of ``frames`` frames whose first frame the device times at ``observed``.
        Returns True when the loop (re)locked on this period: the first, or after a jump."""
        if self._next is not None:
            self.frames += self._period_frames
        self._period_frames = frames
        if self._next is None or frames <= 0:
            return self._lock(frames, observed)
        e = observed - self._next
        self.error_s = e
        limit = max(JUMP_MIN_S, 0.75 * frames / self.rate)
        if abs(e) > limit:
            # A late callback is not the device's time: coast on the prediction. JUMP_AGREE in
            # a row that agree on where the device now is are a jump: re-lock there.
            if self._candidate is not None and abs(e - self._candidate) < limit / 2:
                self._agree += 1
            else:
                self._candidate, self._agree = e, 1
            if self._agree >= JUMP_AGREE:
                self.jumps += 1
                return self._lock(frames, observed)
            self.outliers += 1
            self._t = self._next
            self._next = self._t + frames * self._per_frame
            return False
        self._candidate, self._agree = None, 0
        omega = 2.0 * math.pi * self.bandwidth_hz * frames * self._per_frame
        b, c = math.sqrt(2.0) * omega, omega * omega
        if e < 0:
            # A callback is only ever late, never early (and PortAudio's buffer times move with
            # it): follow the earliest ones, the device's own schedule, not their mean.
            # The same factor for the phase and the rate: with two, each would settle elsewhere
            # and the rate would run off. At most the factor that keeps the phase gain at 0.7.
            gain = min(EARLY_GAIN, 0.7 / b)
            b, c = gain * b, gain * c
        self._t = self._next + b * e
        period = frames * self._per_frame + c * e
        # The device's rate is within 1 % of its nominal one, whatever the jitter said.
        period = min(max(period, 0.99 * frames / self.rate), 1.01 * frames / self.rate)
        self._per_frame = period / frames
        self._next = self._t + period
        return False

    def _lock(self, frames: int, observed: float) -> bool:
        self._t = observed
        self._next = observed + frames * self._per_frame
        self._candidate, self._agree = None, 0
        self.error_s = 0.0
        return True

    def time_of(self, frame: float) -> float:
        """Host time (seconds) of frame ``frame`` of the count (the current period's first is ``frames``)."""
        return self._t + (frame - self.frames) * self._per_frame
