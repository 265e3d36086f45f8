"""What batching a band's GAN concealments saves: K streams refined in one onnxruntime call
against K calls of the shipped batch-1 model, same weights.

    python benchmarks/gan_batch.py [--streams 1 2 3 7] [--repeats 30]

The dynamic-batch copy of the shipped generator is made here (the ``onnx`` package, in the
train extra): its batch axis renamed, nothing else changed. Per K: the wall time of the
refinement stage (``GanConcealer.stages_batch``'s second stage, front end included) over
``--repeats`` runs, as the median and the minimum in ms, and the sequential time of K
``stages`` calls of the batch-1 model. Prints JSON. Single-threaded onnxruntime, as the peer runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def dynamic_copy(src: Path, dst: Path) -> Path:
    import onnx

    model = onnx.load(str(src))
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) and dims[0].dim_value == 1:
            dims[0].dim_param = "batch"
    onnx.save(model, str(dst))
    return dst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 3, 7])
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    from nmp_peer.conceal.gan import GanConcealer, default_model_path
    from nmp_peer.synth.signals import synthetic_music

    with tempfile.TemporaryDirectory() as tmp:
        batched = GanConcealer(dynamic_copy(default_model_path(), Path(tmp) / "dynamic.onnx"))
    fixed = GanConcealer()
    batched.warm_up()
    fixed.warm_up()
    out = []
    for k in args.streams:
        hists = [synthetic_music(0.2, seed=s)[-3584:].astype(np.float32) for s in range(k)]
        seq, bat = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for h in hists:
                list(fixed.stages(h, 0))
            seq.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            list(batched.stages_batch(hists, [0] * k))
            bat.append(time.perf_counter() - t0)
        out.append(
            {
                "streams": k,
                "sequential_ms": {"median": round(1e3 * float(np.median(seq)), 2), "min": round(1e3 * min(seq), 2)},
                "batched_ms": {"median": round(1e3 * float(np.median(bat)), 2), "min": round(1e3 * min(bat), 2)},
            }
        )
    print(json.dumps({"runs": out, "loadavg_1min": round(os.getloadavg()[0], 2), "repeats": args.repeats}, indent=2))


if __name__ == "__main__":
    main()
