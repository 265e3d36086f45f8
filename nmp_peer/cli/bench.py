"""``nmp-peer bench`` (one-thread benchmarks) and ``nmp-peer model-info`` (the shipped generator)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from nmp_peer import PACKET_S
from nmp_peer.errors import UserError
from nmp_peer.jsonio import write_json


def bench(
    path: Annotated[
        str | None,
        typer.Option(
            help="receive: parse + jitter buffer + playout per packet; jam: CPU of a real-time loopback jam; "
            "flood: the garbage flood rate at which a real peer's stream first loses a packet (about 45 s); "
            "monitor: CPU of the web monitor on the jam's event loop (7 streams, 2 pages)."
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(help="A concealer: time per concealed packet, and per stage where it reports stages (gan, lpc)."),
    ] = None,
    codec: Annotated[str | None, typer.Option(help="pcm16 | opus: encode + decode time per packet, bitrate.")] = None,
    bitrate: Annotated[int, typer.Option(help="Opus bitrate for --codec opus.")] = 128_000,
    quality_clips: Annotated[
        Path | None,
        typer.Option(
            help="With --codec opus: ViSQOL and SNR of clean transmission at several bitrates on these clips."
        ),
    ] = None,
    packets: Annotated[int, typer.Option(help="Packets (receive path).", min=100)] = 20_000,
    keyed: Annotated[
        bool, typer.Option("--keyed", help="Receive path: packets sealed under a session's key, as with a key file.")
    ] = False,
    paced: Annotated[
        bool,
        typer.Option(
            "--paced",
            help="Receive path: a packet every 11.6 ms, as live (the thread sleeps in between: its caches go "
            "cold as a jam's do; 23 s per 2,000 --packets).",
        ),
    ] = False,
    calls: Annotated[int, typer.Option(help="Concealments timed (method; per variant with --vs).", min=1)] = 300,
    channels: Annotated[
        int, typer.Option(help="Channels per concealment (--method, --vs): 2 times a stereo stream's.", min=1, max=2)
    ] = 1,
    vs: Annotated[
        str | None,
        typer.Option(
            help="A,B: two concealers timed run by run, interleaved, and the ratio B/A per run. Each is a "
            "concealer's name, reference (the gan pipeline before issue 17) or a model file for --method "
            "(e.g. --method gan --vs old.onnx,new.onnx)."
        ),
    ] = None,
    runs: Annotated[int, typer.Option(help="With --vs: runs (the --calls split over them).", min=2)] = 10,
    busy: Annotated[
        bool, typer.Option("--busy", help="Keep another core busy (a spinning process) while measuring.")
    ] = False,
    event_loop: Annotated[
        str, typer.Option(help="With --path jam: the event loop, asyncio | uvloop (the [uvloop] extra).")
    ] = "asyncio",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (the only format).")] = True,
) -> None:
    """Benchmarks on one thread; prints one JSON object. Times are wall-clock percentiles with
    their ``cpu_`` twins (this thread's CPU time), on the machine named in ``machine``."""
    import contextlib

    from nmp_peer.bench import busy_core

    if vs is not None:
        if path is not None or codec is not None:
            raise UserError("--vs compares two concealers: give it with --method NAME or alone")
    elif sum(x is not None for x in (path, method, codec)) != 1:
        raise UserError("give exactly one of --path receive, --method NAME or --codec NAME")
    if channels != 1 and method is None and vs is None:
        raise UserError("--channels goes with --method NAME or --vs A,B")
    if event_loop != "asyncio" and path != "jam":
        raise UserError("--event-loop goes with --path jam")
    if (paced or keyed) and path != "receive":
        raise UserError("--paced and --keyed go with --path receive")
    run = _bench_run(
        path, method, codec, bitrate, quality_clips, packets, calls, vs, runs, keyed, channels, event_loop, paced
    )
    from nmp_peer.live.memory import hold_freed_memory

    hold_freed_memory()  # as a live peer does: what is measured is what a jam pays
    with busy_core() if busy else contextlib.nullcontext(None) as load:
        result = run()
    if load is not None and isinstance(result, dict):
        result["busy"] = load
    print(json.dumps(result))


def _bench_run(
    path: str | None,
    method: str | None,
    codec: str | None,
    bitrate: int,
    quality_clips: Path | None,
    packets: int,
    calls: int,
    vs: str | None,
    runs: int,
    keyed: bool = False,
    channels: int = 1,
    event_loop: str = "asyncio",
    paced: bool = False,
) -> Callable[[], Any]:
    """The benchmark the options ask for, checked and built, ready to run."""
    from nmp_peer import bench

    if vs is not None:
        specs = [s.strip() for s in vs.split(",")]
        if len(specs) != 2 or not all(specs):
            raise UserError(f"--vs takes two variants, A,B; got {vs!r}")
        if method is not None:
            _check_method(method)
        variants = [(s, bench.concealer_variant(s, method)) for s in specs]
        return lambda: bench.bench_vs(variants, runs, calls, channels)
    if codec is not None:
        if codec not in ("pcm16", "opus"):
            raise UserError(f"unknown codec {codec!r}; choose pcm16 or opus")
        if quality_clips is not None:
            from nmp_peer.lab.run import find_clips

            files = [str(p) for p in find_clips(quality_clips)][:8]
            return lambda: bench.opus_quality(files, [32_000, 64_000, 96_000, 128_000, 192_000])
        return lambda: bench.bench_codec(codec, bitrate=bitrate)
    if path is not None:
        runners: dict[str, Callable[[], Any]] = {
            "receive": lambda: bench.bench_receive(packets, keyed=keyed, pace_s=PACKET_S if paced else 0.0),
            "jam": lambda: bench.bench_jam(event_loop=event_loop),
            "flood": bench.bench_flood,
            "monitor": bench.bench_monitor,
        }
        if path not in runners:
            raise UserError(f"unknown benchmark path {path!r}; choose {', '.join(runners)}")
        if path == "jam":
            from nmp_peer.live.eventloop import loop_factory

            loop_factory(event_loop)  # an unknown or missing loop: one line now, not after the warm-up
        return runners[path]
    _check_method(str(method))
    return lambda: bench.bench_method(str(method), calls, channels)


def _check_method(method: str) -> None:
    from nmp_peer.conceal import concealer_names

    if method not in concealer_names():
        raise UserError(f"unknown concealer {method!r}; choose one of {', '.join(concealer_names())}")


# The paper's figures for its generator, the only ones here not read from the model: Aironi et al.,
# "Restoring Music Integrity via Predictive Modeling and Spectral Inpainting" (bin2bin-v2, IEEE-IS² 2025),
# Table I, column "Depthwise-Separable" (parameters, mult-adds), and the encoder's channels from the text
# below it, section II.A (/work/shared/docs/bin2bin-v2-paper.txt). How the shipped model's size compares,
# and why: docs/model-card.md, "Size against the paper".
PAPER_TABLE_I = {
    "source": "bin2bin-v2 paper (Aironi et al., IEEE-IS2 2025): Table I, depthwise-separable generator; "
    "encoder channels: section II.A",
    "parameters": 1_152_449,
    "mult_adds": 1.10e9,
    "encoder_channels": [16, 32, 64, 64, 64],
}


def model_info() -> None:
    """The shipped LPC+GAN generator: parameters, mult-adds, training, and the paper's figures."""
    import onnxruntime as ort

    from nmp_peer.conceal.gan import default_model_path

    path = default_model_path()
    if not path.exists():
        raise UserError(f"no model at {path}")
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    info = {  # everything but "paper" from the metadata nmp_peer.train.export writes
        "model": str(path),
        "parameters": int(meta.get("parameters", 0)),
        "mult_adds": int(meta.get("macs", 0)),
        "mult_adds_as_run": int(meta.get("macs_exported", 0)),
        "encoder_width": int(meta.get("features", 0)),
        "norm": meta.get("norm"),
        "training_config": meta.get("config_name"),
        "training_steps": int(meta.get("step", 0)),
        "training_seconds": float(meta.get("train_seconds", 0.0)),
        "validation": json.loads(meta["validation"]) if meta.get("validation") else None,
        "paper": PAPER_TABLE_I,
        "model_card": "docs/model-card.md",
    }
    write_json(None, info)
