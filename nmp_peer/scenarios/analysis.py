"""What the audience heard, next to what the network did: counters, alignment, quality.

Pure functions of arrays and dicts (no processes, no clocks):

- ``receiver_truth`` reads the relay's per-packet log and says what a receiver's
  counters must be: bounds on lost, received and duplicate packets, the packets the
  relay delayed (candidates for late), stream restarts and the slots a silent sender
  leaves; ``check_counters`` holds a jam's summary against it.
- ``track_alignment`` finds, for every 512-sample output block, where in the sent clip
  it came from (normalized cross-correlation, searched near the previous block's lag,
  the whole clip when the track is lost). Runs of blocks that match are *clean*; the
  rest are concealment, fades or silence. Clean audio must only move forward in the
  clip: a packet played twice or out of order shows up as a step back (a restarted
  sender, a new stream, starts a new *segment* instead).
- ``quality`` maps the output back onto the clip segment by segment, marks the packets
  the relay dropped (matched to the audio by their sequence numbers) and computes the
  lab's metrics on them (``nmp_peer.lab.metrics``: SNR and LSD on lost packets,
  MR-STFT, optionally ViSQOL), the clicks (``find_clicks``) and how many blocks clean
  audio took to come back after an outage or a restart.
- ``find_clicks`` finds sample steps far steeper than every step of the audio around
  them (and than the clip's own step at that place): a discontinuity, not music.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.ndimage import maximum_filter1d
from scipy.signal import correlate

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.netsim.relay import LOST_ACTIONS
from nmp_peer.proto.wire import seq_delta

PACKET_MS = 1000.0 * BLOCK_FRAMES / SAMPLE_RATE
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
EXACT_SNR_DB = 60.0
"""A clip block played at least this close to the clip was received, not concealed."""
RESYNC_AFTER = 3
"""Packets of a new stream a receiver needs before it follows it (``JitterBuffer.resync_after``)."""
CLICK_RATIO = 3.0
"""A sample step this many times steeper than every step within a block either side of it is a click.

Music, concealment and crossfades change their steepest step gradually: on the
synthetic clip through every concealer with a smooth seam (repeat, LPC) and every
scenario, the steepest step of the played audio is at most 1.7 times the steepest one
within a block of it; a seam that drops to silence (the zeros concealer) gives 7 to 15.
The playout engine's fade after a long burst steps down at the block seams inside it (a
known bug, tests/test_clicks.py): 2 to 6 there, depending on where in the waveform.
"""
CLICK_FLOOR = 10 ** (-60 / 20)
"""Steps smaller than this (-60 dBFS) are no click, however quiet the audio around them."""
CLICK_GUARD = 2
"""Samples either side of a step left out of its neighbourhood (a discontinuity is one step)."""
CLICK_WINDOW = BLOCK_FRAMES - 16
"""Samples either side of a step in its neighbourhood: short of the next packet's seam, so that
one seam's click does not hide the next one's (a fade that steps at every seam)."""


# ---------------------------------------------------------------------- counters vs relay log
def receiver_truth(
    records: list[dict[str, Any]], direction: str, lag_packets: int, resync_after: int = RESYNC_AFTER
) -> dict[str, Any]:
    """What a receiver of ``direction`` must have counted, from the relay's log.

    For a receiver that listened before the first packet reached the relay and stopped
    while its sender still sent (the timeline of ``nmp_peer.scenarios.jam``), over one
    stream or several. It starts at the first packet the relay
    delivered; a later stream (a restarted sender) is followed from its
    ``resync_after``-th delivered packet, the ones before count as foreign. It played
    every slot of an earlier stream up to that stream's last packet, then let slots pass
    until the new stream took over: about the sender's silence, less what was buffered
    (``gap_slots``); a sender's silence is a pause, not a loss, so these slots are not
    counted lost (the receiver concealed the first of them, until the fade). The last stream
    was played up to ``U``, the last packet
    that reached the relay before the receiver's own last one, and at least to ``U -
    lag_packets``. Each ``*_low``/``*_high`` pair bounds a counter of the summary.
    """
    other = "b2a" if direction == "a2b" else "a2b"
    mine = [r for r in records if r["dir"] == direction and r["index"] >= 0 and r["seq"] >= 0 and not r.get("end")]
    heard = [r["t_ms"] for r in records if r["dir"] == other]
    end_ms = (max(heard) if heard else math.inf) + PACKET_MS
    out: dict[str, Any] = {
        "lost_low": 0,
        "lost_high": 0,
        "received_low": 0,
        "received_high": 0,
        "duplicate_low": 0,
        "duplicate_high": 0,
        "delayed_high": 0,
        "foreign": 0,
        "gap_slots_low": 0,
        "gap_slots_high": 0,
        "relay_lost": sum(r["action"] in LOST_ACTIONS for r in mine),
        "streams": [],
        "lag_packets": lag_packets,
    }
    first = next((r for r in mine if r["action"] not in LOST_ACTIONS), None)
    if first is None:
        return out
    order: list[int] = []
    for r in mine:
        if r["stream_id"] not in order:
            order.append(r["stream_id"])
    order = order[order.index(first["stream_id"]) :]
    prev_last: dict[str, Any] | None = None
    for k, sid in enumerate(order):
        same = [r for r in mine if r["stream_id"] == sid]
        delivered = [r for r in same if r["action"] not in LOST_ACTIONS]
        if k == 0:
            start = first
        elif len(delivered) >= resync_after:
            start = delivered[resync_after - 1]
            out["foreign"] += resync_after - 1
        else:  # never followed: every datagram of it was foreign
            out["foreign"] += len(delivered)
            continue
        pos = {id(r): seq_delta(r["seq"], start["seq"]) for r in same}
        is_last = k == len(order) - 1
        if is_last:
            upper = max((pos[id(r)] for r in same if r["t_ms"] <= end_ms), default=0)
            lower = upper - lag_packets
        else:
            upper = lower = max(pos.values())
        lost = [pos[id(r)] for r in same if r["action"] in LOST_ACTIONS and pos[id(r)] > 0]
        got = [pos[id(r)] for r in delivered if pos[id(r)] >= 0]
        dups = [pos[id(r)] for r in same if r["action"] == "duplicate" and pos[id(r)] >= 0]
        delayed = [pos[id(r)] for r in delivered if pos[id(r)] >= 0 and max(r["delays_ms"], default=0.0) > 0.0]
        stream = {
            "stream_id": sid,
            "first_seq": same[0]["seq"],
            "start_seq": start["seq"],
            "packets": len(same),
            "relay_lost": sum(r["action"] in LOST_ACTIONS for r in same),
            "played_upto": upper,
            "first_t_ms": same[0]["t_ms"],
            "last_t_ms": same[-1]["t_ms"],
            "lost_positions": sorted(p for p in lost if p <= upper),
        }
        out["streams"].append(stream)
        for key, values in (("lost", lost), ("received", got), ("duplicate", dups)):
            out[f"{key}_low"] += sum(p <= lower for p in values)
            out[f"{key}_high"] += sum(p <= upper for p in values)
        out["delayed_high"] += sum(p <= upper for p in delayed)
        if prev_last is not None:
            gap = (start["t_ms"] - prev_last["t_ms"]) / PACKET_MS
            out["gap_slots_low"] += max(0, math.floor(gap) - lag_packets - 1)
            out["gap_slots_high"] += math.ceil(gap) + 1
        prev_last = same[-1]
    return out


ARRIVAL_COUNTERS = (
    "packets_received",
    "packets_duplicate",
    "packets_foreign",
    "packets_malformed",
    "packets_replayed",
    "packets_rate_limited",
    "packets_oversized",
    "packets_unauthenticated",
    "end_notices",
)
"""A jam's counters that together count every datagram that reached it (those it lacks count 0)."""


def lag_packets(summary: dict[str, Any]) -> int:
    """How many packets short of its last one a receiver may have stopped playing."""
    return math.ceil(max(summary.get("buffer_depth_packets", 0.0), summary.get("target_depth_packets", 0.0))) + 2


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "ok": bool(ok), "detail": detail}


def check_counters(result: dict[str, Any], records: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Peer B's counters against the relay's ground truth (A → B), and the parties' own books."""
    b, a = result["b"], result["a"]
    checks = []
    checks.append(
        _check(
            "clean exit",
            all(c == 0 for c in result.get("exit_codes", {}).values()),
            f"exit codes {result.get('exit_codes')} after SIGTERM, JSON summaries printed",
        )
    )
    if records is None:  # netem: counters only
        dropped = ((result.get("netem") or {}).get("qdisc") or {}).get("a") or {}
        limit = dropped.get("dropped")
        checks.append(
            _check(
                "lost ≤ netem drops",
                limit is None or b["packets_lost"] <= limit + b["packets_late"],
                f"B lost {b['packets_lost']}, netem dropped {limit} on A's egress",
            )
        )
        return {"truth": None, "checks": checks, "ok": all(c["ok"] for c in checks)}
    truth = receiver_truth(records, "a2b", lag_packets(b))
    lost = b["packets_lost"]
    checks.append(
        _check(
            "lost = relay drops",
            truth["lost_low"] <= lost <= truth["lost_high"],
            f"B lost {lost}, relay implies {truth['lost_low']}..{truth['lost_high']}"
            + (
                f" (and {truth['gap_slots_low']}..{truth['gap_slots_high']} slots of sender silence, not lost)"
                if truth["gap_slots_high"]
                else ""
            ),
        )
    )
    checks.append(
        _check(
            "received = relay deliveries",
            truth["received_low"] <= b["packets_received"] <= truth["received_high"],
            f"B received {b['packets_received']}, relay delivered {truth['received_low']}..{truth['received_high']}",
        )
    )
    checks.append(
        _check(
            "duplicates = relay duplicates",
            truth["duplicate_low"] <= b["packets_duplicate"] <= truth["duplicate_high"],
            f"B duplicates {b['packets_duplicate']}, relay {truth['duplicate_low']}..{truth['duplicate_high']}",
        )
    )
    # A loaded machine can make a packet late that the relay did not delay: the relay, the
    # sender and the receiver share its cores; allow a couple, and 2 % of what arrived.
    late_slack = 2 + int(0.02 * b["packets_received"])
    checks.append(
        _check(
            "late ≤ relay-delayed",
            b["packets_late"] <= truth["delayed_high"] + late_slack,
            f"B late {b['packets_late']}, relay delayed {truth['delayed_high']} (+{late_slack} for scheduling)",
        )
    )
    checks.append(
        _check(
            "foreign = new-stream lead-in",
            b["packets_foreign"] == truth["foreign"],
            f"B foreign {b['packets_foreign']}, expected {truth['foreign']} ({len(truth['streams'])} stream(s))",
        )
    )
    in_pause = b.get("lost_while_paused", 0)
    checks.append(
        _check(
            "concealed = lost + late-covered",
            b["packets_concealed"] >= lost - in_pause,
            f"B concealed {b['packets_concealed']} ≥ lost {lost} - {in_pause} lost while paused",
        )
    )
    relay = result["relay"]
    if not result.get("a_restarted"):
        audio_in = relay["a2b"]["received"] - relay["a2b"].get("end_notices", 0)
        checks.append(
            _check(
                "relay saw all A sent",
                audio_in == a["packets_sent"],
                f"A sent {a['packets_sent']}, relay took in {audio_in} (and "
                f"{relay['a2b'].get('end_notices', 0)} end-of-stream notices)",
            )
        )
        arrived = sum(a.get(k, 0) for k in ARRIVAL_COUNTERS)
        checks.append(
            _check(
                "A got all the relay sent",
                arrived == relay["b2a"]["copies_sent"],
                f"A counted {arrived} arrivals, relay sent {relay['b2a']['copies_sent']}",
            )
        )
    return {"truth": truth, "checks": checks, "ok": all(c["ok"] for c in checks)}


# ---------------------------------------------------------------------- alignment
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

    Clean audio is runs of three or more matching blocks at one lag; a run that starts
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
            for base in (prev, prev + BLOCK_FRAMES, prev - BLOCK_FRAMES):
                centre = int(round(s - base)) + pad
                cand = _ncc_window(x, refp, centre - w, centre + w)
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
        else:
            misses += 1
    runs = _runs(lag, ncc)
    segment = np.full(n_blocks, -1)
    violations: list[tuple[int, int]] = []
    seg, last_end = 0, None
    for first, last in runs:
        src = first * BLOCK_FRAMES - lag[first]
        if last_end is not None:
            step = src - last_end  # where this run starts in the clip, from where the last one ended
            if step < -SAMPLE_RATE and new_segments:
                seg += 1
            elif step < -ORDER_TOLERANCE:
                violations.append((int(first), int(round(step))))
        segment[first : last + 1] = seg
        last_end = (last + 1) * BLOCK_FRAMES - lag[last]
    return Track(lag, ncc, rms, segment, violations)


# ---------------------------------------------------------------------- clicks
@dataclass
class Clicks:
    """Sample steps of the played audio that are clicks, and the margin of the steepest step."""

    positions: np.ndarray
    """Sample index ``n`` of each click: the step from ``n - 1`` to ``n``."""
    ratios: np.ndarray
    """Each click's step over its reference (see ``find_clicks``)."""
    max_ratio: float
    """The largest step-over-reference ratio of any step above the floor (0.0 if none)."""


def _neighbourhood_max(steps: np.ndarray, window: int, guard: int) -> np.ndarray:
    """Per index, the largest of ``steps`` within ``window`` either side, ``guard`` either side left out."""
    width = window - guard
    trailing = maximum_filter1d(steps, size=width, origin=(width - 1) // 2, mode="constant", cval=0.0)
    leading = maximum_filter1d(steps, size=width, origin=-(width // 2), mode="constant", cval=0.0)
    out = np.zeros_like(steps)
    k = guard + 1
    if len(steps) > k:
        out[k:] = trailing[:-k]  # steps[n - window .. n - guard - 1]
        out[:-k] = np.maximum(out[:-k], leading[k:])  # steps[n + guard + 1 .. n + window]
    return out


def find_clicks(
    out: np.ndarray,
    ref: np.ndarray | None = None,
    track: Track | None = None,
    *,
    ratio: float = CLICK_RATIO,
    floor: float = CLICK_FLOOR,
    window: int = CLICK_WINDOW,
    guard: int = CLICK_GUARD,
) -> Clicks:
    """Steps of ``out`` more than ``ratio`` times steeper than the audio around them.

    Each sample step ``|out[n] - out[n-1]|`` is held against the largest step within
    ``window`` samples either side (``guard`` samples either side left out: a
    discontinuity is one step, the music's own steep passages last longer; the seams of
    the packets before and after are left out too) and, where
    ``track`` knows which clip sample the block plays (``ref`` given), the clip's own
    steps at that place: what the clip itself does, played back, is no click. A step is
    a click when it exceeds ``ratio`` times that reference and ``floor``. The reference
    comes from the signal itself, so the margin holds for loud and quiet passages,
    tones and noise alike; the block grid is not assumed (the drift correction moves the
    seams of the packets against the output's blocks).
    """
    x = np.asarray(out, np.float64).reshape(-1)
    steps = np.zeros(len(x))
    if len(x) > 1:
        steps[1:] = np.abs(np.diff(x))
    local = _neighbourhood_max(steps, window, guard)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(steps > floor, steps / np.maximum(local, 1e-12), 0.0)
    if ref is not None and track is not None:
        clip = np.asarray(ref, np.float64).reshape(-1)
        clip_steps = np.zeros(len(clip))
        if len(clip) > 1:
            clip_steps[1:] = np.abs(np.diff(clip))
        for n in np.flatnonzero(r > ratio):
            lags = [
                track.lag[j]
                for j in (n // BLOCK_FRAMES, (n - 1) // BLOCK_FRAMES)
                if 0 <= j < len(track.lag) and np.isfinite(track.lag[j])
            ]
            own = 0.0
            for lag in lags:
                c = int(round(n - lag))
                lo, hi = max(0, c - guard), min(len(clip), c + guard + 1)
                if hi > lo:
                    own = max(own, float(clip_steps[lo:hi].max()))
            if own > 0.0:
                r[n] = steps[n] / max(local[n], own)
    positions = np.flatnonzero(r > ratio)
    return Clicks(positions, r[positions], float(r.max()) if len(r) else 0.0)


# ---------------------------------------------------------------------- quality
def _segment_to_clip(out: np.ndarray, track: Track, seg: int, n_ref: int) -> tuple[np.ndarray, np.ndarray]:
    """The output of one segment laid onto clip positions; (samples, covered mask)."""
    blocks = np.flatnonzero(track.segment == seg)
    test = np.zeros(n_ref)
    covered = np.zeros(n_ref, bool)
    if blocks.size == 0:
        return test, covered
    end = blocks[-1] + 1
    nxt = np.flatnonzero(track.segment > seg)
    stop_block = int(nxt[0]) if nxt.size else len(track.lag)
    current = track.lag[blocks[0]]
    for j in range(int(blocks[0]), stop_block):
        if track.segment[j] == seg:
            current = track.lag[j]
        elif j >= end and track.rms[j] < SILENCE_RMS:
            break
        s = j * BLOCK_FRAMES
        c = int(round(s - current))
        lo, hi = max(0, c), min(n_ref, c + BLOCK_FRAMES)
        if hi > lo:
            test[lo:hi] = out[s + (lo - c) : s + (hi - c)]
            covered[lo:hi] = True
    return test, covered


def _match_offset(audio_bad: np.ndarray, lost_positions: list[int], n_positions: int) -> tuple[int | None, float]:
    """Offset ``o`` with clip block ``i`` = stream position ``i + o`` that best explains the concealed blocks."""
    if not lost_positions or not audio_bad.any():
        return None, math.nan
    d = np.zeros(max(n_positions, max(lost_positions)) + 1)
    d[lost_positions] = 1.0
    c = audio_bad.astype(float)
    scores = np.round(correlate(d, c, mode="full", method="direct" if len(d) * len(c) < 4e6 else "fft"), 6)
    offsets = np.arange(-(len(c) - 1), len(d))
    # Ties: a lost packet's successor is crossfaded, so offset + 1 can score the same; the
    # packet before a loss never is, so the smallest of the best offsets is the right one.
    best = int(np.flatnonzero(scores == scores.max())[0])
    return int(offsets[best]), float(scores[best])


def _block_snr(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    n = len(ref) // BLOCK_FRAMES
    r = ref[: n * BLOCK_FRAMES].reshape(n, BLOCK_FRAMES)
    t = test[: n * BLOCK_FRAMES].reshape(n, BLOCK_FRAMES)
    err = np.sum((r - t) ** 2, axis=1)
    sig = np.sum(r * r, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10 * np.log10(np.where(err > 0, sig / np.maximum(err, 1e-30), np.inf))


def quality(
    out: np.ndarray,
    ref: np.ndarray,
    truth: dict[str, Any] | None,
    *,
    restarted: bool = False,
    outage_packets: int = 0,
    inserted_blocks: int = 0,
    visqol: bool = False,
) -> dict[str, Any]:
    """Metrics of the audio one peer played against the clip the other sent.

    ``truth`` is ``receiver_truth`` for that direction (its streams' lost positions mark
    the lost packets); None (netem) leaves the SNR and LSD on lost packets out. A run of
    clean audio may start up to one block before the previous one ended where the
    receiver inserted a block (``inserted_blocks``, its ``blocks_inserted``): the
    inserted concealment predicted the next packet so well that it counted as clean.
    Any other step back is an order violation.
    """
    from nmp_peer.lab import metrics

    out = np.asarray(out, np.float64).reshape(-1)
    ref = np.asarray(ref, np.float64).reshape(-1)
    track = track_alignment(out, ref, new_segments=restarted)
    clean = track.clean
    sounding = track.rms >= SILENCE_RMS
    res: dict[str, Any] = {
        "blocks": len(track.lag),
        "clean_blocks": int(clean.sum()),
        "sounding_blocks": int(sounding.sum()),
        "segments": track.segments,
        "order_violation_steps": track.order_violations[:10],
    }
    steps = [step for _, step in track.order_violations]
    one_back = sum(step >= -(BLOCK_FRAMES + ORDER_TOLERANCE) for step in steps)
    res["order_violations"] = len(steps) - one_back + max(0, one_back - inserted_blocks)
    res["overlaps_at_inserts"] = min(one_back, inserted_blocks)
    clicks = find_clicks(out, ref, track)
    res["click_ratio"] = clicks.max_ratio
    res["clicks"] = len(clicks.positions)
    first = zip(clicks.positions[:10], clicks.ratios[:10], strict=True)
    res["click_positions"] = [[int(n), round(float(r), 2)] for n, r in first]
    refs, tests, masks, bads = [], [], [], []
    agreement = {"relay_lost_in_view": 0, "matched": 0, "audio_concealed": 0}
    streams = (truth or {}).get("streams", [])
    for seg in range(track.segments):
        test, covered = _segment_to_clip(out, track, seg, len(ref))
        idx = np.flatnonzero(covered)
        if idx.size < BLOCK_FRAMES:
            continue
        c0 = int(idx[0]) // BLOCK_FRAMES * BLOCK_FRAMES + (BLOCK_FRAMES if idx[0] % BLOCK_FRAMES else 0)
        c1 = (int(idx[-1]) + 1) // BLOCK_FRAMES * BLOCK_FRAMES
        if c1 - c0 < BLOCK_FRAMES:
            continue
        r, t = ref[c0:c1], test[c0:c1]
        snr_blocks = _block_snr(r, t)
        # Packets arrive bit for bit; any difference is concealment or a crossfade. Where
        # the reader resampled (drift correction) nothing is exact: then a poor match.
        bad = snr_blocks < EXACT_SNR_DB
        if bad.mean() > 0.5:
            bad = snr_blocks < 10.0
        n = len(bad)
        lost = np.zeros(n, bool)
        if seg < len(streams) and streams[seg]["lost_positions"]:
            positions = streams[seg]["lost_positions"]
            offset, _ = _match_offset(bad, positions, streams[seg]["played_upto"] + 1)
            if offset is not None:
                k = np.array(positions) - offset
                k = k[(k >= 0) & (k < n)]
                lost[k] = True
                agreement["relay_lost_in_view"] += int(lost.sum())
                agreement["matched"] += int((lost & bad).sum())
        agreement["audio_concealed"] += int(bad.sum())
        refs.append(r)
        tests.append(t)
        masks.append(lost)
        bads.append(bad)
    res["agreement"] = agreement
    if refs:
        r, t, lost = np.concatenate(refs), np.concatenate(tests), np.concatenate(masks)
        res["seconds_compared"] = round(len(r) / SAMPLE_RATE, 3)
        err = float(np.sum((r - t) ** 2))
        res["snr_db"] = float(10 * np.log10(np.sum(r * r) / err)) if err > 0 else math.inf
        res["lost_packets"] = int(lost.sum())
        res["lost_snr_db"] = metrics.lost_packet_snr_db(r, t, lost) if lost.any() else math.nan
        res["lost_lsd_db"] = metrics.lost_packet_lsd_db(r, t, lost) if lost.any() else math.nan
        res["mrstft"] = metrics.mrstft_distance(r, t)
        if visqol:
            try:
                res["visqol"] = metrics.visqol_audio(r, t)
            except metrics.MetricUnavailable as exc:
                res["visqol"] = math.nan
                res["visqol_error"] = str(exc)
    res.update(
        recovery(
            track, restarted=restarted, outage_packets=outage_packets, sender_silence_packets=_sender_silence(truth)
        )
    )
    return res


def _sender_silence(truth: dict[str, Any] | None) -> float:
    """Packets a restarted sender never sent: between its old stream's last and its new stream's first."""
    streams = (truth or {}).get("streams", [])
    if len(streams) < 2:
        return 0.0
    return max(0.0, (streams[1]["first_t_ms"] - streams[0]["last_t_ms"]) / PACKET_MS - 1.0)


def recovery(track: Track, *, restarted: bool, outage_packets: int, sender_silence_packets: float) -> dict[str, Any]:
    """Blocks until clean audio came back after an outage or a restart, beyond the packets that never came.

    Outage: the longest run of blocks that are not clean between two clean ones, less
    the packets the outage dropped. Restart: the blocks between the last clean block of
    the old stream and the first of the new one, less the packets the sender never sent
    while it was down (its new stream then needs a few packets before it is followed,
    and the buffer its start depth). Also the correlation of the blocks after the event.
    """
    clean = track.clean
    out: dict[str, Any] = {}
    idx = np.flatnonzero(clean)
    if idx.size < 2:
        return out
    if restarted and track.segments >= 2:
        last_old = int(np.flatnonzero(track.segment == 0)[-1])
        first_new = int(np.flatnonzero(track.segment == 1)[0])
        gap = first_new - last_old - 1
        out["restart_gap_blocks"] = gap
        out["restart_recovery_blocks"] = round(gap - sender_silence_packets, 1)
        out["after_restart_ncc"] = [round(float(v), 3) for v in track.ncc[first_new : first_new + 10]]
    elif outage_packets:
        gaps = np.diff(idx) - 1
        k = int(np.argmax(gaps))
        out["outage_gap_blocks"] = int(gaps[k])
        out["outage_recovery_blocks"] = int(gaps[k]) - outage_packets
        resume = int(idx[k + 1])
        out["after_outage_ncc"] = [round(float(v), 3) for v in track.ncc[resume - 2 : resume + 8]]
    return out
