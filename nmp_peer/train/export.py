"""Export a trained generator to ONNX for the runtime (``nmp_peer.conceal.gan``).

    python -m nmp_peer.train.export --checkpoint RUN/best.pt [--out nmp_peer/conceal/models/bin2bin_v2.onnx]

The graph is the generator in its export form (``Generator.set_form("export")``: the same
function, its decoder written as sub-pixel depthwise convolutions, which onnxruntime runs
~3x faster than grouped transposed convolutions, their phases interleaved by two one-axis
transposes: ``two_step_depth_to_space``), in eval mode, so onnxruntime folds each
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


def two_step_depth_to_space(model: Any) -> int:
    """Rewrite each DCR ``DepthToSpace`` (blocksize 2) as two interleaves, the width's then
    the height's: ``Reshape -> Transpose -> Reshape -> Transpose -> Reshape``. The same
    values (a permutation of them, nothing computed), and onnxruntime's transposes that move
    one axis are 2.5x faster than its DepthToSpace (a 6-D transpose): the four were 18 %
    of the network. Needs the graph's shapes (``onnx.shape_inference``); the batch stays as
    it is (``0`` in each Reshape). Returns the number rewritten."""
    from onnx import helper, numpy_helper, shape_inference

    inferred = shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    }
    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {out: node for node in graph.node for out in node.output}
    moved: set[int] = set()  # Relus now applied to the phases, before the interleave
    nodes = []
    count = 0
    for node in graph.node:
        if id(node) in moved:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        shape = shapes.get(node.input[0]) if node.op_type == "DepthToSpace" else None
        if shape is None or attrs.get("blocksize") != 2 or attrs.get("mode", b"DCR") != b"DCR" or None in shape[1:]:
            nodes.append(node)
            continue
        c4, h, w = (int(d or 0) for d in shape[1:])  # all known (checked above)
        c = c4 // 4
        name = node.output[0] + "_2step"
        source, output = node.input[0], list(node.output)
        after = consumers.get(node.output[0], [])
        concat = producer.get(source)
        if (
            len(after) == 1
            and after[0].op_type == "Relu"
            and concat is not None
            and concat.op_type == "Concat"
            and len(consumers.get(source, [])) == 1
        ):
            # A Relu after the interleave is the same as one on each phase before it, where
            # onnxruntime fuses it into the phase's convolution.
            relus = [helper.make_node("Relu", [x], [f"{x}_relu"]) for x in concat.input]
            nodes = [n for n in nodes if n is not concat]
            nodes += [*relus, helper.make_node("Concat", [r.output[0] for r in relus], [source], axis=1)]
            output = list(after[0].output)
            moved.add(id(after[0]))
        targets = {"s6": [0, 2, 2, c, h, w], "s5": [0, 2, c, h, 2 * w], "s4": [0, c, 2 * h, 2 * w]}
        for key, value in targets.items():
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), f"{name}_{key}"))
        nodes += [
            helper.make_node("Reshape", [source, f"{name}_s6"], [f"{name}_a"]),  # (B, i, j, C, H, W)
            helper.make_node("Transpose", [f"{name}_a"], [f"{name}_b"], perm=[0, 1, 3, 4, 5, 2]),  # (B, i, C, H, W, j)
            helper.make_node("Reshape", [f"{name}_b", f"{name}_s5"], [f"{name}_c"]),  # (B, i, C, H, 2W)
            helper.make_node("Transpose", [f"{name}_c"], [f"{name}_d"], perm=[0, 2, 3, 1, 4]),  # (B, C, H, i, 2W)
            helper.make_node("Reshape", [f"{name}_d", f"{name}_s4"], output),  # (B, C, 2H, 2W)
        ]
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


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
    two_step_depth_to_space(proto)
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
