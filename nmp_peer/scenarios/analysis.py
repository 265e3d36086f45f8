"""What the audience heard, next to what the network did: quality.

Pure functions of arrays and dicts (no processes, no clocks). ``quality`` maps the
output back onto the clip segment by segment (``alignment.track_alignment``), marks
the packets the relay dropped (``truth.receiver_truth``, matched to the audio by their
sequence numbers) and computes the lab's metrics on them (``nmp_peer.lab.metrics``:
SNR and LSD on lost packets, MR-STFT, optionally ViSQOL), the clicks
(``clicks.find_clicks``) and how many blocks clean audio took to come back after an
outage or a restart.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.signal import correlate

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.scenarios.alignment import ORDER_TOLERANCE, SILENCE_RMS, Track, track_alignment
from nmp_peer.scenarios.clicks import find_clicks
from nmp_peer.scenarios.truth import PACKET_MS

EXACT_SNR_DB = 60.0
"""A clip block played at least this close to the clip was received, not concealed."""


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
