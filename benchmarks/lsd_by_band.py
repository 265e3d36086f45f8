"""Where the lost-packet LSD comes from: its squared error and bias by frequency band.

    python benchmarks/lsd_by_band.py --clips DIR [--methods gan,lpc] [--every 2] > bands.json

Conceals each clip (every ``--every``-th of the folder) under the lab's Gilbert 10 %,
mean burst 2 setting, seeds as ``nmp-peer lab``, and splits the per-bin level errors of
``nmp_peer.lab.metrics.lost_packet_db_errors`` into bands. Per method and band:
``mean_sq_db``, the band's share of the mean squared error over all bins (the shares
add up to the squared LSD before its per-packet square root), and ``bias_db``, the
mean level error (concealment minus original). And the total mean squared error split
three ways: ``global_bias_sq_db``, the square of each bin's mean error over all lost
packets (what one fixed spectral correction would remove); ``envelope_sq_db``, each
packet's error smoothed over third-octave bands (its spectral envelope: the part a
magnitude refinement can reach, given the knowledge); ``fine_sq_db``, the rest, the fine
structure within the bands, which only a prediction of the waveform reduces.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.conceal import make_concealer
from nmp_peer.lab.metrics import LSD_FFT_SIZE, lost_packet_db_errors
from nmp_peer.lab.run import Setting, _seed, find_clips, load_clip, loss_mask
from nmp_peer.lab.simulate import conceal_trace

EDGES_HZ = (0, 1000, 4000, 8000, 16000, SAMPLE_RATE // 2 + 1)
THIRD_OCTAVES_HZ = (0.0, *(100.0 * 2.0 ** (k / 3) for k in range(25) if 100.0 * 2.0 ** (k / 3) < SAMPLE_RATE / 2))


def envelope(errors: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Each packet's errors replaced by their mean over the bins of each band."""
    out = np.empty_like(errors)
    for k in np.unique(band):
        sel = band == k
        out[:, sel] = errors[:, sel].mean(axis=1, keepdims=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", required=True, type=Path)
    parser.add_argument("--methods", default="gan,lpc")
    parser.add_argument("--every", type=int, default=1, help="use every n-th clip")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    setting = Setting("gilbert", 0.1, 2.0)
    freqs = np.fft.rfftfreq(LSD_FFT_SIZE, 1 / SAMPLE_RATE)
    band = np.digitize(freqs, EDGES_HZ) - 1
    third = np.digitize(freqs, THIRD_OCTAVES_HZ) - 1
    n_bands = len(EDGES_HZ) - 1
    errors: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    concealers = {m: make_concealer(m) for m in methods}
    clips = find_clips(args.clips)[:: args.every]
    for clip in clips:
        ref = load_clip(str(clip), None)
        n = len(ref) // BLOCK_FRAMES
        ref = ref[: n * BLOCK_FRAMES]
        lost = loss_mask(setting, n, _seed(0, clip.name, setting))
        for method, concealer in concealers.items():
            out = conceal_trace(ref, lost, concealer)
            errors[method].append(lost_packet_db_errors(ref[:, 0], out[:, 0], lost))
    result = {"clips": len(clips), "setting": setting.label, "bands_hz": list(EDGES_HZ), "methods": {}}
    for method, parts in errors.items():
        d = np.concatenate(parts)
        share = [float(np.sum(d[:, band == k] ** 2) / d.size) for k in range(n_bands)]
        bias = [float(np.mean(d[:, band == k])) for k in range(n_bands)]
        env = envelope(d, third)
        result["methods"][method] = {
            "packets": len(d),
            "mean_sq_db": [round(v, 2) for v in share],
            "total_mean_sq_db": round(sum(share), 2),
            "global_bias_sq_db": round(float(np.mean(np.mean(d, axis=0) ** 2)), 2),
            "envelope_sq_db": round(float(np.mean(env**2)), 2),
            "fine_sq_db": round(float(np.mean((d - env) ** 2)), 2),
            "bias_db": [round(v, 2) for v in bias],
            "lsd_db": round(float(np.mean(np.sqrt(np.mean(d**2, axis=1)))), 3),
        }
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
