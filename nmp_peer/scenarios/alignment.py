"""Where in the sent clip each block of the played audio came from.

``track_alignment`` finds, for every 512-sample output block, where in the sent clip
it came from (normalized cross-correlation, searched near the previous block's lag,
the whole clip when the track is lost). Runs of blocks that match are *clean*; the
rest are concealment, fades or silence. Clean audio must only move forward in the
clip: a packet played twice or out of order shows up as a step back (a restarted
sender, a new stream, starts a new *segment* instead). Pure functions of arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import correlate

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE

CLEAN_NCC = 0.95
"""A block that correlates this well with the clip at its lag is clean audio."""
TRACK_NCC = 0.9
"""A block that correlates this well is trusted to move the lag track."""
SILENCE_RMS = 10 ** (-60 / 20)
SEARCH_SAMPLES = 640
"""Widest lag search around the previous lag (it widens by 1.5 samples per block since)."""
ANCHOR_SAMPLES = 8 * BLOCK_FRAMES
"""Output looked for in the whole clip when the track is lost."""
CONTINUATION_NCC = 0.6
"""An anchor window that still matches the last trusted lag this well keeps it: concealed
packets lower the match of the stream's own continuation, never to a look-alike's."""
ORDER_TOLERANCE = 8
"""Samples a clean block may fall short of one block further into the clip (drift correction)."""
EXACT_NCC = 0.9995
"""A run of blocks at a new lag counts as clean audio only if its median correlation is at
least this: received packets are bit-exact (1.0), or interpolated by the drift reader
(about 38 dB: 0.9999); a long burst's held prediction that happens to resemble the clip
somewhere else reached 0.990-0.998 (the outage scenario, 400 ms holds)."""
MAX_SHIFT_BLOCKS = 8
"""Whole blocks the playout may have inserted or dropped between two runs of one lag track."""


@dataclass
class Track:
    """Per output block: lag (output index minus clip index; NaN if unknown) and match quality."""

    lag: np.ndarray
    ncc: np.ndarray
    rms: np.ndarray
    segment: np.ndarray
    """Segment of each block in a run of clean blocks (-1 elsewhere): a new one where the clip starts over."""
    order_violations: list[tuple[int, int]] = field(default_factory=list)
    """(block, step in samples) where a run of clean blocks starts before the previous run ended in the clip."""

    @property
    def clean(self) -> np.ndarray:
        """Blocks in runs of clean audio (see ``_runs``)."""
        return self.segment >= 0

    @property
    def segments(self) -> int:
        return int(self.segment.max() + 1) if (self.segment >= 0).any() else 0

    def source(self) -> np.ndarray:
        """Clip position of each block's first sample (NaN where unknown)."""
        return np.arange(len(self.lag)) * BLOCK_FRAMES - self.lag


def _ncc_window(x: np.ndarray, ref: np.ndarray, start: int, stop: int) -> tuple[float, float]:
    """Best start in ``ref[start..stop]`` for ``x`` (sub-sample, parabolic) and its normalized correlation."""
    n = len(x)
    lo, hi = max(0, start), min(len(ref) - n, stop)
    ex = float(np.dot(x, x))
    if hi < lo or ex <= 0.0:
        return -1.0, 0.0
    seg = ref[lo : hi + n]
    if (hi - lo) * n > 2_000_000:
        corr = correlate(seg, x, mode="valid", method="fft")
    else:
        corr = np.correlate(seg, x, mode="valid")
    c2 = np.concatenate(([0.0], np.cumsum(seg * seg)))
    energy = c2[n:] - c2[:-n]
    ncc = corr / np.sqrt(np.maximum(energy * ex, 1e-30))
    # Where ``ref`` is silent (its leading silence, the padding) the energy is rounding
    # noise, and so is the FFT's correlation: their ratio is no match, however large.
    ncc[energy < 1e-6 * ex] = 0.0
    i = int(np.argmax(ncc))
    frac = 0.0
    if 0 < i < len(ncc) - 1:
        a, b, c = ncc[i - 1], ncc[i], ncc[i + 1]
        den = a - 2 * b + c
        frac = float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) if den < 0 else 0.0
    return lo + i + frac, float(ncc[i])


def _continues(window: np.ndarray, refp: np.ndarray, s: int, prev: float, pad: int, w: int) -> bool:
    """Whether the audio from output sample ``s`` on still matches the clip at the last
    trusted lag (or a block either way), if less well than a clean block: concealed
    packets in it. A jump elsewhere in the clip is then a look-alike (a note that comes
    back), not the stream moving. ``w``: the drift the lag may have made since (samples)."""
    for base in (prev, prev + BLOCK_FRAMES, prev - BLOCK_FRAMES):
        centre = int(round(s - base)) + pad
        if _ncc_window(window, refp, centre - w, centre + w)[1] >= CONTINUATION_NCC:
            return True
    return False


def _runs(lag: np.ndarray, ncc: np.ndarray, min_blocks: int = 3) -> list[tuple[int, int]]:
    """(first, last) of each run of at least ``min_blocks`` consecutive clean blocks at one lag.

    A concealed block can look like a copy of the packet before it (a repeat, a
    prediction of a held note); alone it is no evidence. Three blocks in a row at one
    lag are the clip itself.
    """
    clean = (ncc >= CLEAN_NCC) & np.isfinite(lag)
    runs: list[tuple[int, int]] = []
    start = None
    for j in range(len(lag) + 1):
        same = j < len(lag) and clean[j] and start is not None and abs(lag[j] - lag[j - 1]) <= 2.0
        if same:
            continue
        if start is not None and j - start >= min_blocks:
            runs.append((start, j - 1))
        start = j if j < len(lag) and clean[j] else None
    return runs


def track_alignment(out: np.ndarray, ref: np.ndarray, *, new_segments: bool = False) -> Track:
    """Where each output block of ``out`` came from in ``ref`` (mono float arrays).

    After an anchor, a block is looked for only where the playout engine can put it:
    at the last trusted lag, or one block later or earlier (an inserted or dropped
    block), give or take the drift correction (at most 0.2 %: a sample per block).
    Where that fails for two blocks with sound, the block and the seven after it are
    looked for in the whole clip (a restart, an outage with drift, several inserts):
    repeated notes make single blocks ambiguous, 93 ms of music are not.

    Clean audio is runs of three or more matching blocks at one lag; a run at a new lag
    (not the last run's, give or take drift and a few inserted or dropped blocks) must
    also match exactly (``EXACT_NCC``), or it is a concealment that resembles the clip
    elsewhere (a held prediction of a repeated note). A run that starts
    in the clip before the previous run ended is an order violation (a packet played
    twice, or out of order), unless ``new_segments`` and it starts more than a second
    back: then the clip started over (a restarted sender) and a new segment begins.
    """
    out = np.asarray(out, np.float64).reshape(-1)
    ref = np.asarray(ref, np.float64).reshape(-1)
    pad = 2 * BLOCK_FRAMES
    refp = np.concatenate([np.zeros(pad), ref, np.zeros(pad)])
    n_blocks = len(out) // BLOCK_FRAMES
    lag = np.full(n_blocks, np.nan)
    ncc = np.zeros(n_blocks)
    rms = np.zeros(n_blocks)
    prev: float | None = None
    prev_block = 0
    exact: tuple[float, int] | None = None
    """The lag and block of the last block that matched exactly (received audio)."""
    misses = 0
    for j in range(n_blocks):
        s = j * BLOCK_FRAMES
        x = out[s : s + BLOCK_FRAMES]
        rms[j] = math.sqrt(float(np.mean(x * x)))
        if rms[j] < SILENCE_RMS:
            continue
        found = (-1.0, 0.0)
        if prev is not None:
            w = int(min(SEARCH_SAMPLES, 4 + 1.5 * (j - prev_block)))
            tracks = [(prev, w)]
            if exact is not None and abs(exact[0] - prev) > 2.0:
                # The stream resumes where it was: the last exact lag beside a look-alike's
                tracks.append((exact[0], int(min(SEARCH_SAMPLES, 4 + 1.5 * (j - exact[1])))))
            for lag_guess, width in tracks:
                for base in (lag_guess, lag_guess + BLOCK_FRAMES, lag_guess - BLOCK_FRAMES):
                    centre = int(round(s - base)) + pad
                    cand = _ncc_window(x, refp, centre - width, centre + width)
                    if cand[1] > found[1]:
                        found = cand
        window = out[s : s + ANCHOR_SAMPLES]
        searching = prev is None or (misses >= 1 and misses % 2 == 1)
        if found[1] < TRACK_NCC and searching and len(window) == ANCHOR_SAMPLES:
            pos, score = _ncc_window(window, refp, 0, len(refp))
            if score >= TRACK_NCC and prev is not None and _continues(window, refp, s, prev, pad, w):
                score = 0.0  # the stream's own continuation explains this audio: no jump
            if score >= TRACK_NCC:
                centre = int(round(pos))
                local = _ncc_window(x, refp, centre - 4, centre + 4)
                if local[1] > found[1]:
                    found = local
        pos, score = found
        ncc[j] = score
        if pos >= 0 and score >= TRACK_NCC:
            lag[j] = s - (pos - pad)
            prev, prev_block = lag[j], j
            misses = 0
            if score >= EXACT_NCC:
                exact = (float(lag[j]), j)
        else:
            misses += 1
    runs = _runs(lag, ncc)
    segment = np.full(n_blocks, -1)
    violations: list[tuple[int, int]] = []
    seg, last_end = 0, None
    last: tuple[float, int] | None = None  # the last run taken: its lag and last block
    for first, last_block in runs:
        if (
            last is not None
            and not _continues_run(lag[first], first, *last)
            and not _exact(ncc[first : last_block + 1])
        ):
            continue  # a look-alike: a concealment (a held prediction) that matches the clip elsewhere
        last = (float(lag[last_block]), int(last_block))
        src = first * BLOCK_FRAMES - lag[first]
        if last_end is not None:
            step = src - last_end  # where this run starts in the clip, from where the last one ended
            if step < -SAMPLE_RATE and new_segments:
                seg += 1
            elif step < -ORDER_TOLERANCE:
                violations.append((int(first), int(round(step))))
        segment[first : last_block + 1] = seg
        last_end = (last_block + 1) * BLOCK_FRAMES - lag[last_block]
    return Track(lag, ncc, rms, segment, violations)


def _continues_run(lag: float, block: int, last_lag: float, last_block: int) -> bool:
    """Whether a run at ``lag`` from ``block`` on is the playout going on from the last run:
    the same lag give or take the drift correction (at most a sample a block since), and
    a few whole blocks inserted or dropped."""
    tolerance = 2.0 + (block - last_block)
    step = lag - last_lag
    return any(abs(step - k * BLOCK_FRAMES) <= tolerance for k in range(-MAX_SHIFT_BLOCKS, MAX_SHIFT_BLOCKS + 1))


def _exact(ncc: np.ndarray) -> bool:
    """Received audio: packets arrive bit for bit (through the drift reader's interpolation at
    worst, some 38 dB), where a concealment that resembles the clip elsewhere does not."""
    return float(np.median(ncc)) >= EXACT_NCC
