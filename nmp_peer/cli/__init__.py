"""The ``nmp-peer`` command. User mistakes end in one line on stderr and exit code 2."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from nmp_peer.errors import UserError, at_least, between, positive
from nmp_peer.jsonio import write_json

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="nmp-peer: networked music performance with causal packet-loss concealment.",
)


def _user_errors() -> tuple[type[BaseException], ...]:
    """The mistakes a user can fix, each printed as one line with exit code 2; the list is
    explicit, so that a bug (any other exception, a bare ``ValueError`` included) ends in a
    traceback and a non-zero exit code instead of passing for a user mistake."""
    from nmp_peer.audio_io import AudioFileError
    from nmp_peer.conceal import UnknownConcealerError
    from nmp_peer.conceal.gan import ModelNotFoundError
    from nmp_peer.config import ConfigError
    from nmp_peer.jsonio import OutputFileError
    from nmp_peer.netsim.loss import TraceError
    from nmp_peer.live.peer import DeviceError
    from nmp_peer.scenarios.spec import ScenarioError
    from nmp_peer.proto.security import KeyFileError
    from nmp_peer.synth.render import SynthUnavailableError
    from nmp_peer.live.transport import EndpointError

    return (
        UserError, ConfigError, AudioFileError, EndpointError, DeviceError, TraceError, SynthUnavailableError,
        KeyFileError, ModelNotFoundError, UnknownConcealerError, ScenarioError, OutputFileError,
    )


ConfigOpt = Annotated[Optional[str], typer.Option("--config", help="TOML config: a path, or a shipped name (default, lan, wan).")]
ConcealerOpt = Annotated[Optional[str], typer.Option("--concealer", help="zeros | repeat | lpc | gan | opus-plc | opus-fec (default: the config's).")]


def _encoder(cfg: Any) -> tuple[Any, int]:
    """The sender's codec from the config, and the delay it adds (samples)."""
    from nmp_peer.proto.opus import OpusUnavailable

    try:
        encoder = cfg.encoder()
    except OpusUnavailable as exc:
        raise UserError(str(exc)) from None
    if cfg.audio.codec == "opus":
        from nmp_peer.proto.opus import codec_delay_samples

        return encoder, codec_delay_samples(encoder.settings, cfg.audio.channels)
    return encoder, 0


def _config(config: str | None, concealer: str | None, channels: int | None = None, codec: str | None = None) -> Any:
    from nmp_peer.config import Config, ConfigError, load_config

    cfg = load_config(config)
    data = cfg.model_dump()
    if codec is not None:
        data["audio"]["codec"] = codec
    if concealer is not None:
        data["conceal"]["method"] = concealer
    if channels is not None:
        data["audio"]["channels"] = channels
    try:
        return Config.model_validate(data)
    except Exception as exc:  # pydantic's ValidationError, reworded as the config loader does
        from pydantic import ValidationError

        from nmp_peer.config import first_error

        if isinstance(exc, ValidationError):
            raise ConfigError(first_error(exc)) from None
        raise


@app.command()
def jam(
    listen: Annotated[Optional[str], typer.Option(help="Local HOST:PORT to listen on (default: the config's network.listen, 0.0.0.0:50000).")] = None,
    peer: Annotated[Optional[str], typer.Option(help="The other musician's HOST:PORT (default: the config's network.peer).")] = None,
    input: Annotated[Optional[str], typer.Option("--input", help="Sound device (name or index) or a WAV/FLAC file to send.")] = None,
    output: Annotated[Optional[str], typer.Option("--output", help="Sound device (name or index) or a WAV file to write.")] = None,
    config: ConfigOpt = None,
    concealer: ConcealerOpt = None,
    duration: Annotated[Optional[float], typer.Option(help="Stop after this many seconds (default: until Ctrl-C).", callback=positive)] = None,
    stats: Annotated[Optional[Path], typer.Option(help="Write the JSON summary here too.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No live status line.")] = False,
    key_file: Annotated[Optional[Path], typer.Option(help="Pre-shared key file: sign and authenticate every packet.")] = None,
    codec: Annotated[Optional[str], typer.Option(help="What this peer sends: pcm16 | opus (default: the config's). It plays either.")] = None,
) -> None:
    """One end of a two-host session: send your audio, play the peer's. Ctrl-C stops with a summary."""
    from rich.console import Console

    from nmp_peer.live.peer import JamOptions, Peer
    from nmp_peer.proto.security import load_key
    from nmp_peer.live.transport import Endpoint

    cfg = _config(config, concealer, codec=codec)
    listen = listen or cfg.network.listen
    peer = peer or cfg.network.peer
    if not peer:
        raise UserError("jam needs the other peer's address: --peer HOST:PORT, or peer = \"HOST:PORT\" in the config's [network]")
    encoder, _ = _encoder(cfg)
    key_path = key_file or cfg.security.key_file
    key = load_key(key_path) if key_path else None
    console = Console(stderr=True)
    options = JamOptions(
        listen=Endpoint.parse(listen),
        peer=Endpoint.parse(peer),
        input=input,
        output=output,
        concealer=cfg.conceal.method,
        playout=cfg.playout(),
        duration_s=duration,
        status=None if quiet else (lambda line: console.print(line, highlight=False)),
        key=key,
        codec=encoder,
    )
    summary = asyncio.run(Peer(options).run())
    write_json(None, summary)
    if stats is not None:
        write_json(stats, summary)


@app.command()
def loopback(
    input: Annotated[Path, typer.Option("--input", help="WAV/FLAC file to send.")],
    output: Annotated[Path, typer.Option("--output", help="WAV file of what the receiver played.")],
    loss: Annotated[float, typer.Option(help="Packet loss rate, 0..1.")] = 0.0,
    loss_model: Annotated[str, typer.Option(help="bernoulli | gilbert | trace")] = "bernoulli",
    burst: Annotated[float, typer.Option(help="Mean burst length in packets (gilbert).")] = 2.0,
    trace: Annotated[Optional[Path], typer.Option(help="Loss trace file (one 0/1 per packet).")] = None,
    delay_ms: Annotated[float, typer.Option(help="Fixed network delay.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Network jitter scale.")] = 0.0,
    jitter_dist: Annotated[str, typer.Option(help="normal | pareto")] = "normal",
    reorder: Annotated[float, typer.Option(help="Probability that a packet is held back behind its successor.")] = 0.0,
    duplicate: Annotated[float, typer.Option(help="Probability that a packet arrives twice.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the impairments.")] = 0,
    config: ConfigOpt = None,
    concealer: ConcealerOpt = None,
    stats: Annotated[Optional[Path], typer.Option(help="Write the JSON stats here (default: print them).")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG of buffer depth and loss events here.")] = None,
    realtime: Annotated[bool, typer.Option("--realtime/--fast", help="Real time (default), or a shared virtual clock, faster than real time.")] = True,
    codec: Annotated[Optional[str], typer.Option(help="pcm16 | opus (default: the config's).")] = None,
) -> None:
    """Two peers over real UDP on 127.0.0.1 with impairments injected between them."""
    from nmp_peer.audio_io import read_audio, write_audio
    from nmp_peer.cli.net import make_impairment
    from nmp_peer.netsim.loopback import run_loopback

    audio, file_rate = read_audio(input)
    cfg = _config(config, concealer, channels=min(audio.shape[1], 2), codec=codec)
    if cfg.conceal.method == "opus-fec":  # both ends are ours here: the sender must send FEC
        cfg.opus.fec = True
    audio = audio[:, : cfg.audio.channels]
    encoder, codec_delay = _encoder(cfg)
    impairment = make_impairment(  # a bad value: UserError or TraceError, naming the option
        loss=loss, loss_model=loss_model, burst=burst, trace=trace, delay_ms=delay_ms,
        jitter_ms=jitter_ms, jitter_dist=jitter_dist, reorder=reorder, duplicate=duplicate, seed=seed,
    )
    result = asyncio.run(
        run_loopback(audio, impairment, concealer=cfg.conceal.method, playout=cfg.playout(), realtime=realtime,
                     codec=encoder, codec_delay=codec_delay)
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


@app.command()
def conceal(
    input: Annotated[Path, typer.Argument(help="WAV/FLAC file (its lost packets' samples are never read).")],
    trace: Annotated[Path, typer.Option(help="Loss trace: one 0/1 per 512-sample packet, 1 = lost.")],
    out: Annotated[Path, typer.Option("--out", help="Concealed WAV: same length and rate as the input.")],
    method: Annotated[str, typer.Option(help="zeros | repeat | lpc | gan | opus-plc | opus-fec")] = "lpc",
    config: ConfigOpt = None,
    trace_fit: Annotated[str, typer.Option(
        help="When the trace's length is not the audio's packet count: exact (refuse, the default), "
        "pad (a shorter trace: the packets after its end are received) or cut (a longer trace: its end is unused).",
    )] = "exact",
) -> None:
    """Conceal the packets a trace marks lost, with the live peer's playout engine on a virtual clock."""
    from nmp_peer.audio_io import read_audio, write_audio
    from nmp_peer.netsim.loss import read_trace
    from nmp_peer.lab.simulate import conceal_trace

    if trace_fit not in ("exact", "pad", "cut"):
        raise UserError(f"unknown --trace-fit {trace_fit!r}; choose exact, pad or cut")
    lost = read_trace(trace)
    audio, file_rate = read_audio(input)
    cfg = _config(config, method, channels=min(audio.shape[1], 2))
    if file_rate != 44_100:
        print(f"note: {input} is {file_rate} Hz; packets are 512 samples at 44.1 kHz after resampling", file=sys.stderr)
    lost = _fit_trace(lost, len(audio), trace, input, trace_fit)
    played = conceal_trace(audio[:, : cfg.audio.channels], lost, cfg.conceal.method, cfg.playout_fixed())
    write_audio(out, played, file_rate=file_rate)


def _fit_trace(lost: np.ndarray, frames: int, trace: Path, audio: Path, fit: str) -> np.ndarray:
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
        print(f"note: {what}: the trace's last {len(lost) - packets} entries are unused (--trace-fit cut)", file=sys.stderr)
        return lost[:packets]
    hint = "pad" if len(lost) < full else "cut"
    raise UserError(f"{what}; give a trace of {packets} packets, or --trace-fit {hint}")


@app.command()
def lab(
    clips: Annotated[Path, typer.Option(help="Folder of WAV/FLAC/OGG clips (sub-folders name categories).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for report.md, metrics.csv/json and plots.")],
    methods: Annotated[str, typer.Option(help="Comma-separated concealers.")] = "zeros,repeat,lpc",
    loss_model: Annotated[str, typer.Option(help="bernoulli | gilbert | challenge | trace (comma-separated for several).")] = "gilbert",
    loss: Annotated[str, typer.Option(help="Loss rate(s), comma-separated, e.g. 0.05,0.1,0.2.")] = "0.1",
    burst: Annotated[float, typer.Option(help="Mean burst length in packets (gilbert).", callback=at_least(1.0))] = 2.0,
    traces: Annotated[Optional[Path], typer.Option(help="Folder of trace files (for --loss-model trace).")] = None,
    jitter_ms: Annotated[float, typer.Option(help="Network mode: send through the jitter buffer with this jitter.", callback=at_least(0.0))] = 0.0,
    metrics: Annotated[str, typer.Option(help="Comma-separated: snr,lsd,mrstft,visqol,plcmos.")] = "snr,lsd,mrstft,visqol,plcmos",
    max_seconds: Annotated[Optional[float], typer.Option(help="Use at most this much of each clip.", callback=positive)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the loss patterns.")] = 0,
    jobs: Annotated[int, typer.Option(help="Worker processes.", min=1)] = max(1, os.cpu_count() or 1),
) -> None:
    """Measure concealers against loss patterns on a folder of clips: report, tables, plots."""
    import time

    from rich.progress import Progress

    from nmp_peer.conceal import concealer_names
    from nmp_peer.lab import report
    from nmp_peer.netsim.loss import challenge_like_trace, make_loss_model, read_trace
    from nmp_peer.lab.run import ALL_METRICS, Setting, find_clips, load_clip, loss_mask, plan, run_jobs

    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    for m in method_list:
        if m not in concealer_names():
            raise UserError(f"unknown concealer {m!r}; choose from {', '.join(concealer_names())}")
    metric_list = [m.strip() for m in metrics.split(",") if m.strip()]
    for m in metric_list:
        if m not in ALL_METRICS:
            raise UserError(f"unknown metric {m!r}; choose from {', '.join(ALL_METRICS)}")
    try:
        rates = [float(x) for x in loss.split(",")]
    except ValueError:
        raise UserError(f"--loss must be numbers separated by commas, got {loss!r}") from None
    for r in rates:
        if not 0.0 <= r <= 1.0:
            raise UserError(f"--loss rates must be in [0, 1], got {r:g}")
    settings: list[Setting] = []
    for model in (m.strip() for m in loss_model.split(",")):
        if model == "trace":
            if traces is None:
                raise UserError("--loss-model trace needs --traces DIR")
            files = sorted(p for p in traces.glob("*.txt"))
            if not files:
                raise UserError(f"no *.txt trace files in {traces}")
            for f in files:  # read here once, so that a malformed trace stops the run before it starts
                n = len(read_trace(f))
                print(f"note: trace {f.name} has {n} packets ({n * 512 / 44_100:.1f} s): a longer clip receives every "
                      "packet after it, a shorter one uses its start", file=sys.stderr)
            settings += [Setting("trace", trace=str(f)) for f in files]
        elif model in ("challenge", "bernoulli", "gilbert"):
            for r in rates:  # the models' own checks, once here, instead of in every worker process
                try:
                    if model == "challenge":  # bursts of 1-6 packets, some of 7-16, as in the challenge's traces
                        challenge_like_trace(1, loss_rate=r or 0.10)
                    else:
                        make_loss_model(model, r, burst)
                except ValueError as exc:  # these constructors raise ValueError only for their arguments
                    raise UserError(f"--loss {r:g} --loss-model {model}: {exc}") from None
            if model == "challenge":
                settings += [Setting("challenge", r) for r in rates]
            else:
                settings += [Setting(model, r, burst, jitter_ms=jitter_ms) for r in rates]
        else:
            raise UserError(f"unknown loss model {model!r}; choose bernoulli, gilbert, challenge or trace")
    if not clips.is_dir():
        raise UserError(f"clips folder {clips} does not exist")
    try:
        clip_files = find_clips(clips)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    job_list = plan(clip_files, clips, settings, method_list, metric_list, seed, max_seconds)
    start = time.perf_counter()
    title = f"{len(clip_files)} clips × {len(settings)} settings × {len(method_list)} methods"
    if sys.stderr.isatty():
        with Progress(transient=True) as progress:
            task = progress.add_task(title, total=len(job_list))
            rows = run_jobs(job_list, jobs, lambda n: progress.advance(task, n))
    else:  # a log file: one line per job instead of a bar
        done = [0]

        def log(n: int) -> None:
            done[0] += n
            print(f"lab: {done[0]}/{len(job_list)} jobs ({title})", file=sys.stderr, flush=True)

        rows = run_jobs(job_list, jobs, log)
    wall = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    report.write_rows(rows, out)
    plots = []
    for m in metric_list:
        name = f"{m}_per_method.png"
        report.plot_metric_per_method(rows, m, out / name)
        plots.append(name)
        if report.plot_metric_vs_loss(rows, m, out / f"{m}_vs_loss.png"):
            plots.append(f"{m}_vs_loss.png")
    first = job_list[0]
    ref = load_clip(first.clip, max_seconds)
    ref = ref[: len(ref) // 512 * 512]
    lost = loss_mask(settings[0], len(ref) // 512, 0) if settings[0].jitter_ms == 0 else np.zeros(len(ref) // 512, bool)
    if lost.any():
        from nmp_peer.lab.simulate import conceal_trace

        outputs = {m: conceal_trace(ref, lost, m)[:, 0] for m in method_list}
        report.plot_burst_spectrograms(ref[:, 0], lost, outputs, out / "burst_spectrograms.png")
        plots.append("burst_spectrograms.png")
    audio_s = sum(r["seconds"] for r in rows if r["method"] == method_list[0])
    meta = {
        "command": "nmp-peer " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["lab"] else "nmp-peer lab",
        "clips": len(clip_files), "clips_dir": str(clips), "audio_s": audio_s, "methods": method_list,
        "seed": seed, "wall_s": wall, "jobs": jobs,
        "sim_realtime": float(np.mean([r["realtime_factor"] for r in rows])),
    }
    path = report.write_report(rows, out, metric_list, meta, plots)
    print(f"wrote {path}, metrics.csv, metrics.json and {len(plots)} plots; "
          f"{audio_s * len(settings):.0f} s of audio per method in {wall:.1f} s", file=sys.stderr)


@app.command()
def clips(
    out: Annotated[Path, typer.Option("--out", help="Folder for the clips (one sub-folder per category or package).")],
    source: Annotated[str, typer.Option(help="synth: FluidSynth renderings by category; debian: recorded music from Debian game-data packages.")] = "synth",
    n: Annotated[int, typer.Option(help="synth: number of clips (cycling through the categories).", min=1)] = 24,
    seconds: Annotated[float, typer.Option(help="Length of each clip.", callback=positive)] = 8.0,
    packages: Annotated[Optional[str], typer.Option(help="debian: comma-separated packages (default: a vetted set).")] = None,
    jobs: Annotated[int, typer.Option(help="Worker processes (synth).")] = max(1, os.cpu_count() or 1),
    kinds: Annotated[Optional[str], typer.Option(help="synth: comma-separated categories to cycle through, e.g. drums,bass (default: all eight).")] = None,
    seed: Annotated[int, typer.Option(help="synth: which evaluation set; each seed gives different clips, none shared with training or validation.")] = 0,
) -> None:
    """Build an evaluation set for the lab, with no download beyond Debian's mirror."""
    if source == "synth":
        from nmp_peer.synth.clips import KINDS
        from nmp_peer.synth.dataset import build_set

        chosen_kinds = tuple(k.strip() for k in kinds.split(",") if k.strip()) if kinds else None
        for k in chosen_kinds or ():
            if k not in KINDS:
                raise UserError(f"unknown clip kind {k!r} in --kinds; choose from {', '.join(KINDS)}")
        manifest = build_set(out, "eval", n_clips=n, clip_seconds=seconds, jobs=jobs, kinds=chosen_kinds, seed=seed)
        print(f"wrote {n} clips and {manifest}", file=sys.stderr)
    elif source == "debian":
        from nmp_peer.lab.clips import DEBIAN_MUSIC, debian_music

        chosen = tuple(p.strip() for p in packages.split(",")) if packages else DEBIAN_MUSIC
        try:
            written = debian_music(out, chosen, seconds)
        except (ValueError, RuntimeError) as exc:
            raise UserError(str(exc)) from None
        print(f"wrote {len(written)} clips from {', '.join(chosen)} to {out}", file=sys.stderr)
    else:
        raise UserError(f"unknown source {source!r}; choose synth or debian")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the clip, the received audio, stats and plot.")] = Path("out/demo"),
    seconds: Annotated[float, typer.Option(help="Length of the synthesized clip.", callback=positive)] = 10.0,
    loss: Annotated[float, typer.Option(help="Packet loss rate (Gilbert-Elliott bursts).", callback=between(0.0, 1.0))] = 0.05,
    burst: Annotated[float, typer.Option(help="Mean burst length in packets.", callback=at_least(1.0))] = 3.0,
    concealer: ConcealerOpt = None,
    realtime: Annotated[bool, typer.Option("--realtime/--fast", help="Run on the wall clock (default) or faster.")] = True,
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
    print(f"synthesized {clip} ({seconds:g} s); playing it through a loopback jam with {loss:.0%} bursty loss ...", file=sys.stderr)
    loopback(
        input=clip, output=out / "output.wav", loss=loss, loss_model="gilbert", burst=burst, trace=None,
        delay_ms=0.0, jitter_ms=1.0, jitter_dist="normal", reorder=0.0, duplicate=0.0, seed=1, config=None,
        concealer=concealer, stats=out / "stats.json", plot=out / "buffer.png", realtime=realtime,
    )
    print(f"wrote {out}/input.wav, output.wav (what the receiver played), stats.json and buffer.png", file=sys.stderr)


@app.command("model-info")
def model_info() -> None:
    """The shipped LPC+GAN generator: parameters, mult-adds, training, and the paper's figures."""
    from nmp_peer.conceal.gan import default_model_path

    import onnxruntime as ort

    path = default_model_path()
    if not path.exists():
        raise UserError(f"no model at {path}")
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    info = {
        "model": str(path),
        "parameters": int(meta.get("parameters", 0)),
        "mult_adds": int(meta.get("macs", 0)),
        "mult_adds_as_run": int(meta.get("macs_exported", 0)),
        "encoder_width": int(meta.get("features", 0)),
        "training_steps": int(meta.get("step", 0)),
        "paper": {"parameters": 1_152_449, "mult_adds": 1.10e9, "encoder_width": 64},
        "why_smaller": "the authors' own configs use width 16 (~81 k parameters); width 64 reproduces "
        "the paper's Table I (1,151,953 parameters). Width 16 fits the 11.6 ms budget on one core of a small machine, "
        "and only the 79 STFT frames that reach the predicted samples are computed.",
    }
    write_json(None, info)


@app.command()
def devices() -> None:
    """List the sound devices PortAudio sees."""
    from nmp_peer.live.peer import list_devices

    print(list_devices())


@app.command()
def bench(
    path: Annotated[Optional[str], typer.Option(help="receive: parse + jitter buffer + playout per packet; jam: CPU of a real-time loopback jam; flood: the garbage flood rate at which a real peer's stream first loses a packet (about 45 s).")] = None,
    method: Annotated[Optional[str], typer.Option(help="A concealer: time per concealed packet.")] = None,
    codec: Annotated[Optional[str], typer.Option(help="pcm16 | opus: encode + decode time per packet, bitrate.")] = None,
    bitrate: Annotated[int, typer.Option(help="Opus bitrate for --codec opus.")] = 128_000,
    quality_clips: Annotated[Optional[Path], typer.Option(help="With --codec opus: ViSQOL and SNR of clean transmission at several bitrates on these clips.")] = None,
    packets: Annotated[int, typer.Option(help="Packets (receive path).")] = 20_000,
    calls: Annotated[int, typer.Option(help="Concealments timed (method).")] = 300,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (the only format).")] = True,
) -> None:
    """Benchmarks on one thread; prints one JSON object."""
    from nmp_peer.bench import bench_codec, bench_jam, bench_method, bench_receive

    if sum(x is not None for x in (path, method, codec)) != 1:
        raise UserError("give exactly one of --path receive, --method NAME or --codec NAME")
    if codec is not None:
        if codec not in ("pcm16", "opus"):
            raise UserError(f"unknown codec {codec!r}; choose pcm16 or opus")
        if quality_clips is not None:
            from nmp_peer.bench import opus_quality
            from nmp_peer.lab.run import find_clips

            files = [str(p) for p in find_clips(quality_clips)][:8]
            print(json.dumps(opus_quality(files, [32_000, 64_000, 96_000, 128_000, 192_000])))
            return
        result = bench_codec(codec, bitrate=bitrate)
    elif path is not None:
        if path not in ("receive", "jam", "flood"):
            raise UserError(f"unknown benchmark path {path!r}; choose receive, jam or flood")
        if path == "flood":
            from nmp_peer.bench import bench_flood

            result = bench_flood()
        else:
            result = bench_receive(packets) if path == "receive" else bench_jam()
    else:
        from nmp_peer.conceal import concealer_names

        if method not in concealer_names():
            raise UserError(f"unknown concealer {method!r}; choose one of {', '.join(concealer_names())}")
        result = bench_method(str(method), calls)
    print(json.dumps(result))


from nmp_peer.cli.net import register as _register_net  # noqa: E402

_register_net(app)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["bench"]:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
    try:
        app(args, standalone_mode=False)
    except _user_errors() as exc:
        print(f"nmp-peer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        shown, aborts = _parser_exceptions()
        if isinstance(exc, aborts):
            return 130
        if isinstance(exc, shown):  # a usage error: unknown option, bad value, missing argument
            show = getattr(exc, "show", None)
            if callable(show):
                show()
            else:
                print(f"nmp-peer: error: {exc}", file=sys.stderr)
            return int(getattr(exc, "exit_code", 2))
        raise
    return 0


def _parser_exceptions() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """The command-line parser's usage errors and aborts: Click's where Typer still uses
    Click, Typer's own where it carries a copy of Click (Typer 0.2x no longer needs Click)."""
    shown: list[type[BaseException]] = []
    aborts: list[type[BaseException]] = [typer.Abort]
    typer_exception = getattr(typer, "TyperException", None)
    if isinstance(typer_exception, type):
        shown.append(typer_exception)
    try:
        import click
    except ImportError:
        pass
    else:
        shown.append(click.ClickException)
        aborts.append(click.exceptions.Abort)
    return tuple(shown), tuple(aborts)


if __name__ == "__main__":
    sys.exit(main())
