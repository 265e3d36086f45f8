"""Judge a trained model as the peer runs it: held-out clips through the playout engine.

    python -m nmp_peer.train.evaluate --clips DIR [--model FILE.onnx] [--loss 0.1 --burst 2]
    python -m nmp_peer.train.evaluate --bench [--model FILE.onnx]

Each clip gets one seeded Gilbert-Elliott loss pattern (the lab's ``loss_mask``), and
``gan``, ``lpc`` and ``repeat`` conceal that same pattern through the live playout
engine (``nmp_peer.lab.simulate.conceal_trace``); the lab's metrics score the lost
packets (LSD and SNR), per clip, then averaged over clips. ``--bench`` times the whole
concealment of one lost packet (LPC, STFT, onnxruntime, inverse STFT, as the engine calls
``stages``) on one thread: wall-clock and this thread's CPU time, p50 and p99.

Numpy and onnxruntime only: this runs where the peer runs, without PyTorch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from nmp_peer.conceal.base import Concealer
from nmp_peer.conceal.gan import GanConcealer
from nmp_peer.conceal.lpc import LpcConcealer
from nmp_peer.conceal.simple import RepeatConcealer
from nmp_peer.lab import metrics
from nmp_peer.lab.run import Setting, category_of, find_clips, load_clip, loss_mask
from nmp_peer.lab.simulate import conceal_trace


def evaluate(
    clips_dir: Path,
    model: Path | None,
    loss: float,
    burst: float,
    seed: int = 0,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    concealers: dict[str, Concealer] = {
        "gan": GanConcealer(model),
        "lpc": LpcConcealer(),
        "repeat": RepeatConcealer(),
    }
    setting = Setting("gilbert", loss, burst)
    rows = []
    for index, path in enumerate(find_clips(clips_dir)):
        audio = load_clip(str(path), max_seconds)
        lost = loss_mask(setting, -(-len(audio) // 512), seed * 100_003 + index)
        if not lost.any():
            continue
        row: dict[str, Any] = {
            "clip": path.name,
            "category": category_of(path, clips_dir),
            "lost": int(lost.sum()),
        }
        for name, concealer in concealers.items():
            played = conceal_trace(audio, lost, concealer)
            row[f"{name}_lsd_db"] = metrics.lost_packet_lsd_db(audio, played, lost)
            row[f"{name}_snr_db"] = metrics.lost_packet_snr_db(audio, played, lost)
        rows.append(row)
    summary: dict[str, Any] = {
        "clips": len(rows),
        "setting": setting.label,
        "lost_packets": sum(r["lost"] for r in rows),
    }
    for name in concealers:
        for metric in ("lsd_db", "snr_db"):
            values = np.array([r[f"{name}_{metric}"] for r in rows], float)
            values = values[np.isfinite(values)]
            mean = float(values.mean())
            half = float(1.96 * values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
            summary[f"{name}_{metric}"] = [round(mean, 2), round(half, 2)]
    wins = [r["gan_lsd_db"] < r["lpc_lsd_db"] for r in rows]
    summary["gan_better_lsd_than_lpc_clips"] = f"{sum(wins)}/{len(rows)}"
    categories = sorted({r["category"] for r in rows})
    summary["by_category_lsd_db"] = {
        c: {n: round(float(np.mean([r[f"{n}_lsd_db"] for r in rows if r["category"] == c])), 2) for n in concealers}
        for c in categories
    }
    return {"summary": summary, "rows": rows}


def bench(model: Path | None, calls: int = 500) -> dict[str, Any]:
    """Time per lost packet of the whole GAN concealment, one thread, as the engine calls
    it: ``nmp-peer bench --method gan`` for any model file."""
    from nmp_peer.bench import bench_concealer

    return {"model": str(model or "shipped"), **bench_concealer(GanConcealer(model, threads=1), calls)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Held-out evaluation (gan vs lpc vs repeat) and timing of the GAN concealer."
    )
    parser.add_argument("--clips", type=Path, help="folder of held-out clips")
    parser.add_argument("--model", type=Path, default=None, help="ONNX generator (default: the shipped one)")
    parser.add_argument("--loss", type=float, default=0.10)
    parser.add_argument("--burst", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=None)
    parser.add_argument("--bench", action="store_true", help="time per lost packet instead")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None, help="also write the full result here")
    args = parser.parse_args(argv)
    if args.bench:
        result: dict[str, Any] = bench(args.model, args.calls)
        print(json.dumps(result))
    else:
        if args.clips is None:
            parser.error("--clips is required unless --bench")
        result = evaluate(args.clips, args.model, args.loss, args.burst, args.seed, args.max_seconds)
        print(json.dumps(result["summary"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
