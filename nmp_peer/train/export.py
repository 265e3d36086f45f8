"""Export a trained generator to ONNX for the runtime (``nmp_peer.conceal.gan``).

    python -m nmp_peer.train.export --checkpoint RUN/best.pt [--out nmp_peer/conceal/models/bin2bin_v2.onnx]

The graph is the generator in its export form (``Generator.set_form("export")``: the same
function, its decoder written as sub-pixel depthwise convolutions, which onnxruntime runs
~3x faster than grouped transposed convolutions), in eval mode, so onnxruntime folds each
BatchNorm into its convolution; and it computes only the 79 output frames that reach the
predicted samples (``Generator.set_output_from(177)``: 28.5 of 71.8 M mult-adds), reading
input frames from 65 on only (metadata ``input_from_frame``, which the runtime's front end
uses to skip the others). Input
``magnitude`` is ``(batch, 1, 256, 256)``, output ``refined`` ``(batch, 1, 256, 79)``
(frames 177..255), float32; the batch is symbolic (``batch``), so the runtime refines the
channels of a stereo stream in one call. The STFT
settings and the training facts go into the model's metadata, and the runtime refuses a
model whose STFT settings differ from its own. After writing, the ONNX model is run in
onnxruntime (graph optimisation ALL, the runtime's settings) against the PyTorch model
on random and music-like inputs, item by item and as one batch; a max abs difference of
1e-4 or more is an error.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmp_peer.conceal.gan import (
    CHUNK_SAMPLES,
    FEATURE_CEILING,
    GAP_FRAME,
    HOP,
    N_FFT,
    SpectralFrontEnd,
    default_model_path,
)
from nmp_peer.train.config import config_from_dict
from nmp_peer.train.model import Generator, UpBlock, count_macs, count_parameters

OPSET = 17
PARITY_TOLERANCE = 1e-4


def load_generator(checkpoint: Path) -> tuple[Generator, dict[str, Any]]:
    """The generator of a ``best.pt`` (or the EMA generator of a ``last.pt``), in eval mode,
    as designed (separable form, all output frames)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    config = config_from_dict(state["config"])
    model = Generator(config.model.features, config.model.norm, config.model.residual)
    model.load_state_dict(state["generator"] if "ema" not in state else state["ema"])
    model.set_form("separable")
    return model.eval(), state


def fold_batchnorm(model: Generator) -> Generator:
    """Fold every eval-mode BatchNorm into the 1x1 convolution before it (in place): the
    same function, fewer graph nodes. onnxruntime folds Conv + BatchNorm itself, but not
    across the decoder's pixel shuffle, which the sub-pixel form puts between them."""
    for module in model.modules():
        conv, norm = getattr(module, "pointwise", None), getattr(module, "norm", None)
        if not isinstance(conv, torch.nn.Conv2d) or not isinstance(norm, torch.nn.BatchNorm2d):
            continue
        assert norm.running_var is not None and norm.running_mean is not None  # eval-mode statistics
        with torch.no_grad():
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
            folded = torch.nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=True)
            folded.weight.copy_(conv.weight * scale[:, None, None, None])
            assert folded.bias is not None
            folded.bias.copy_((bias - norm.running_mean) * scale + norm.bias)
        module.pointwise = folded
        module.norm = torch.nn.Identity()
    return model


def phase_major_depth_to_space(graph: Any) -> int:
    """Rewrite each sub-pixel interleave, ``stack(phases, dim=2) -> Reshape -> DepthToSpace
    (CRD)`` as torch exports ``pixel_shuffle``, into ``Concat(phases, axis=1) ->
    DepthToSpace (DCR)``: the same values (the phase-major channel order is DCR's), two
    nodes instead of seven, and the DCR kernel is the faster one in onnxruntime (~5 % of the
    network, measured). Unused constants are dropped. Returns the number rewritten."""
    from onnx import helper

    producer = {out: node for node in graph.node for out in node.output}
    replaced: dict[int, list[Any]] = {}
    dropped: set[int] = set()
    for node in graph.node:
        if node.op_type != "DepthToSpace":
            continue
        reshape = producer.get(node.input[0])
        concat = producer.get(reshape.input[0]) if reshape is not None and reshape.op_type == "Reshape" else None
        if concat is None or concat.op_type != "Concat":
            continue
        lifts = [producer.get(name) for name in concat.input]
        if not all(u is not None and u.op_type == "Unsqueeze" for u in lifts):
            continue
        joined = concat.output[0] + "_phase_major"
        replaced[id(node)] = [
            helper.make_node("Concat", [u.input[0] for u in lifts if u is not None], [joined], axis=1),
            helper.make_node("DepthToSpace", [joined], list(node.output), blocksize=2, mode="DCR"),
        ]
        dropped |= {id(reshape), id(concat), *(id(u) for u in lifts)}
    nodes = []
    for node in graph.node:
        if id(node) in replaced:
            nodes += replaced[id(node)]
        elif id(node) not in dropped:
            nodes.append(node)
    used = {name for node in nodes for name in node.input} | {o.name for o in graph.output}
    nodes = [n for n in nodes if n.op_type != "Constant" or any(o in used for o in n.output)]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(replaced)


BATCH_DIM = "batch"


def symbolic_batch(graph: Any) -> None:
    """Make the batch (first) dimension of the graph's inputs and outputs symbolic (``batch``).
    Every node of the generator works item by item (convolutions, slices and concatenations
    on the channel or time axes, DepthToSpace; no Reshape), so a batch of B gives each item
    what a call of batch 1 gives it; ``parity`` checks that too."""
    for value in [*graph.input, *graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = BATCH_DIM


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity_inputs(seed: int = 0) -> np.ndarray:
    """Random features, and features of a music-like chunk (harmonics, noise, silence)."""
    rng = np.random.default_rng(seed)
    t = np.arange(CHUNK_SAMPLES) / 44_100
    tone = sum(0.2 / k * np.sin(2 * np.pi * 220 * k * t) for k in range(1, 8))
    tone = tone + 0.02 * rng.standard_normal(CHUNK_SAMPLES)
    chunks = np.stack([tone, np.zeros(CHUNK_SAMPLES), rng.uniform(-1, 1, CHUNK_SAMPLES)]).astype(np.float32)
    music = SpectralFrontEnd().analyze(chunks)[0]
    noise = rng.uniform(0.0, 1.0, (2, 256, 256)).astype(np.float32) ** 3
    return np.concatenate([music, noise])[:, None]


def parity(model: torch.nn.Module, path: Path) -> float:
    """Max abs difference between the PyTorch generator as designed (separable, all frames,
    then the gap frames taken) and the ONNX model in onnxruntime, on ``parity_inputs``."""
    x = parity_inputs()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()[..., GAP_FRAME:]
    session = _session(path)
    name = session.get_inputs()[0].name
    got = np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    batched = session.run(None, {name: x})[0]
    return float(max(np.max(np.abs(got - expected)), np.max(np.abs(batched - expected))))


def export(checkpoint: Path, out: Path, check: bool = True) -> dict[str, Any]:
    import onnx

    model, state = load_generator(checkpoint)
    config = state["config"]
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 1, 256, 256)
    graph = fold_batchnorm(copy.deepcopy(model))
    graph.set_form("export")
    graph.set_output_from(GAP_FRAME)
    for block in graph.up:
        assert isinstance(block, UpBlock)
        block.freeze_phase_kernels()
    tmp = out.with_name(out.name + ".tmp")
    with warnings.catch_warnings():
        # The torch.export-based exporter needs onnxscript, which the train extra does not
        # pull in; the TorchScript one handles this static graph exactly (parity below).
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            graph,
            (dummy,),
            str(tmp),
            dynamo=False,
            external_data=False,
            opset_version=OPSET,
            input_names=["magnitude"],
            output_names=["refined"],
            dynamic_axes={"magnitude": {0: BATCH_DIM}, "refined": {0: BATCH_DIM}},
            do_constant_folding=True,
        )
    proto = onnx.load(str(tmp))
    phase_major_depth_to_space(proto.graph)
    symbolic_batch(proto.graph)
    info = {
        "parameters": count_parameters(model),
        "macs": count_macs(model),
        "macs_exported": count_macs(graph),
        "features": config["model"]["features"],
        "norm": config["model"]["norm"],
        "step": int(state.get("step", 0)),
    }
    metadata = {
        "n_fft": N_FFT,
        "hop": HOP,
        "chunk_samples": CHUNK_SAMPLES,
        "output_from_frame": GAP_FRAME,
        "input_from_frame": graph.input_from(),
        "feature": f"sqrt(|S| / peak) / {FEATURE_CEILING:.6f}",
        "config_name": config.get("name", ""),
        "train_seconds": round(float(state.get("train_seconds", state.get("seconds", 0.0))), 1),
        "validation": json.dumps(state.get("metrics", {})),
        **info,
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    proto.producer_name = "nmp_peer.train.export"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    tmp.replace(out)
    info["bytes"] = out.stat().st_size
    if check:
        diff = parity(model, out)
        info["parity_max_abs_diff"] = diff
        if not diff < PARITY_TOLERANCE:
            raise RuntimeError(f"ONNX parity check failed: max abs diff {diff:.3g} >= {PARITY_TOLERANCE}")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a bin2bin-v2 generator checkpoint to ONNX.")
    parser.add_argument("--checkpoint", required=True, type=Path, help="best.pt (or last.pt: its EMA weights)")
    parser.add_argument("--out", type=Path, default=None, help=f"default {default_model_path()}")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out or default_model_path()
    info = export(args.checkpoint, out)
    print(
        f"wrote {out} ({info['bytes'] / 1e6:.2f} MB): {info['parameters']:,} parameters, "
        f"{info['macs'] / 1e6:.1f} M mult-adds for all frames ({info['macs_exported'] / 1e6:.1f} M for the "
        f"79 the runtime uses), opset {OPSET}, step {info['step']}, "
        f"parity max abs diff {info['parity_max_abs_diff']:.2e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
