"""``nmp-peer loopback`` (two peers on 127.0.0.1 with impairments between them), ``nmp-peer conceal``
(a loss trace concealed on a virtual clock) and ``nmp-peer demo`` (a synthesized clip through a loopback jam)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from nmp_peer.cli.options import (
    BurstOpt,
    ConcealerOpt,
    ConfigOpt,
    DelayOpt,
    DuplicateOpt,
    JitterDistOpt,
    JitterOpt,
    LossModelOpt,
    LossOpt,
    ReorderOpt,
    SeedOpt,
    TraceOpt,
    at_least,
    between,
    build_config,
    build_encoder,
    make_impairment,
    positive,
)
from nmp_peer.errors import UserError
from nmp_peer.jsonio import write_json


def loopback(
    input: Annotated[Path, typer.Option("--input", help="WAV/FLAC file to send.")],
    output: Annotated[Path, typer.Option("--output", help="WAV file of what the receiver played.")],
    loss: LossOpt = 0.0,
    loss_model: LossModelOpt = "bernoulli",
    burst: BurstOpt = 2.0,
    trace: TraceOpt = None,
    delay_ms: DelayOpt = 0.0,
    jitter_ms: JitterOpt = 0.0,
    jitter_dist: JitterDistOpt = "normal",
    reorder: ReorderOpt = 0.0,
    duplicate: DuplicateOpt = 0.0,
    seed: SeedOpt = 0,
    config: ConfigOpt = None,
    concealer: ConcealerOpt = None,
    stats: Annotated[Path | None, typer.Option(help="Write the JSON stats here (default: print them).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of buffer depth and loss events here.")] = None,
    realtime: Annotated[
        bool,
        typer.Option(
            "--realtime/--fast", help="Real time (default), or a shared virtual clock, faster than real time."
        ),
    ] = True,
    codec: Annotated[str | None, typer.Option(help="pcm16 | opus (default: the config's).")] = None,
    key_file: Annotated[
        Path | None, typer.Option(help="Keyed: a handshake over the sockets, every packet sealed and opened.")
    ] = None,
) -> None:
    """Two peers over real UDP on 127.0.0.1 with impairments injected between them."""
    from nmp_peer.audio_io import read_audio, write_audio
    from nmp_peer.netsim.loopback import run_loopback
    from nmp_peer.proto.security import load_key

    audio, file_rate = read_audio(input)
    cfg = build_config(config, concealer, channels=min(audio.shape[1], 2), codec=codec)
    if cfg.conceal.method == "opus-fec":  # both ends are ours here: the sender must send FEC
        cfg.opus.fec = True
    audio = audio[:, : cfg.audio.channels]
    encoder, codec_delay = build_encoder(cfg)
    impairment = make_impairment(  # a bad value: UserError or TraceError, naming the option
        loss=loss,
        loss_model=loss_model,
        burst=burst,
        trace=trace,
        delay_ms=delay_ms,
        jitter_ms=jitter_ms,
        jitter_dist=jitter_dist,
        reorder=reorder,
        duplicate=duplicate,
        seed=seed,
    )
    result = asyncio.run(
        run_loopback(
            audio,
            impairment,
            concealer=cfg.conceal.method,
            playout=cfg.playout(),
            realtime=realtime,
            codec=encoder,
            codec_delay=codec_delay,
            key=load_key(key_file) if key_file is not None else None,
        )
    )
    write_audio(output, result.output, file_rate=file_rate)
    result.stats["input"] = str(input)
    result.stats["output"] = str(output)
    result.stats["concealer"] = cfg.conceal.method
    result.stats["mode"] = "realtime" if realtime else "fast"
    result.stats["codec"] = cfg.audio.codec
    write_json(stats, result.stats)
    if plot is not None:
        from nmp_peer.plots import plot_timeline

        plot_timeline(result.timeline, plot, f"{input.name}: {cfg.conceal.method}, loss {loss:g} ({loss_model})")


def conceal(
    input: Annotated[Path, typer.Argument(help="WAV/FLAC file (its lost packets' samples are never read).")],
    trace: Annotated[Path, typer.Option(help="Loss trace: one 0/1 per 512-sample packet, 1 = lost.")],
    out: Annotated[Path, typer.Option("--out", help="Concealed WAV: same length and rate as the input.")],
    method: Annotated[str, typer.Option(help="zeros | repeat | lpc | gan | opus-plc | opus-fec")] = "lpc",
    config: ConfigOpt = None,
    trace_fit: Annotated[
        str,
        typer.Option(
            help="When the trace's length is not the audio's packet count: exact (refuse, the default), "
            "pad (a shorter trace: the packets after its end are received) or cut (a longer trace: its end is unused).",
        ),
    ] = "exact",
) -> None:
    """Conceal the packets a trace marks lost, with the live peer's playout engine on a virtual clock."""
    from nmp_peer.audio_io import read_audio, write_audio
    from nmp_peer.lab.simulate import conceal_trace
    from nmp_peer.netsim.loss import read_trace

    if trace_fit not in ("exact", "pad", "cut"):
        raise UserError(f"unknown --trace-fit {trace_fit!r}; choose exact, pad or cut")
    lost = read_trace(trace)
    audio, file_rate = read_audio(input)
    cfg = build_config(config, method, channels=min(audio.shape[1], 2))
    if file_rate != 44_100:
        print(f"note: {input} is {file_rate} Hz; packets are 512 samples at 44.1 kHz after resampling", file=sys.stderr)
    lost = fit_trace(lost, len(audio), trace, input, trace_fit)
    played = conceal_trace(audio[:, : cfg.audio.channels], lost, cfg.conceal.method, cfg.playout_fixed())
    write_audio(out, played, file_rate=file_rate)


def fit_trace(lost: np.ndarray, frames: int, trace: Path, audio: Path, fit: str) -> np.ndarray:
    """``lost`` with one entry per packet of ``frames`` samples of audio, or a ``UserError``
    naming both lengths.

    A partial last packet may have an entry or not (without one it is received). ``fit``
    says what another mismatch may do: ``exact`` allows none, ``pad`` lets a shorter trace
    end early (the rest is received), ``cut`` lets a longer trace be cut; either is noted
    on stderr.
    """
    from nmp_peer import BLOCK_FRAMES

    full, packets = frames // BLOCK_FRAMES, -(-frames // BLOCK_FRAMES)
    if full <= len(lost) <= packets:
        return lost
    partial = " (the last one partial)" if packets > full else ""
    what = f"trace {trace} has {len(lost)} packets, {audio} has {packets}{partial} of 512 samples at 44.1 kHz"
    if len(lost) < full and fit == "pad":
        print(f"note: {what}: the packets after the trace's end are received (--trace-fit pad)", file=sys.stderr)
        return lost
    if len(lost) > packets and fit == "cut":
        print(
            f"note: {what}: the trace's last {len(lost) - packets} entries are unused (--trace-fit cut)",
            file=sys.stderr,
        )
        return lost[:packets]
    hint = "pad" if len(lost) < full else "cut"
    raise UserError(f"{what}; give a trace of {packets} packets, or --trace-fit {hint}")


def demo(
    out: Annotated[Path, typer.Option(help="Folder for the clip, the received audio, stats and plot.")] = Path(
        "out/demo"
    ),
    seconds: Annotated[float, typer.Option(help="Length of the synthesized clip.", callback=positive)] = 10.0,
    loss: Annotated[
        float, typer.Option(help="Packet loss rate (Gilbert-Elliott bursts).", callback=between(0.0, 1.0))
    ] = 0.05,
    burst: Annotated[float, typer.Option(help="Mean burst length in packets.", callback=at_least(1.0))] = 3.0,
    concealer: ConcealerOpt = None,
    realtime: Annotated[
        bool, typer.Option("--realtime/--fast", help="Run on the wall clock (default) or faster.")
    ] = True,
) -> None:
    """Synthesize a clip, play it through a real-time loopback jam with bursty loss, save everything."""
    from nmp_peer.synth.clips import make_demo_clip
    from nmp_peer.synth.render import SynthUnavailableError

    out.mkdir(parents=True, exist_ok=True)
    clip = out / "input.wav"
    try:
        make_demo_clip(clip, seconds=seconds, seed=0)
    except SynthUnavailableError as exc:
        raise UserError(f"cannot synthesize the demo clip: {exc} (run `make setup` to install fluidsynth)") from None
    print(
        f"synthesized {clip} ({seconds:g} s); playing it through a loopback jam with {loss:.0%} bursty loss ...",
        file=sys.stderr,
    )
    loopback(
        input=clip,
        output=out / "output.wav",
        loss=loss,
        loss_model="gilbert",
        burst=burst,
        trace=None,
        delay_ms=0.0,
        jitter_ms=1.0,
        jitter_dist="normal",
        reorder=0.0,
        duplicate=0.0,
        seed=1,
        config=None,
        concealer=concealer,
        stats=out / "stats.json",
        plot=out / "buffer.png",
        realtime=realtime,
    )
    print(f"wrote {out}/input.wav, output.wav (what the receiver played), stats.json and buffer.png", file=sys.stderr)
