"""``nmp-peer lab`` (concealers against loss patterns on a folder of clips) and ``nmp-peer clips``
(an evaluation set for it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from nmp_peer.cli.options import at_least, positive
from nmp_peer.errors import UserError


def lab(
    clips: Annotated[Path, typer.Option(help="Folder of WAV/FLAC/OGG clips (sub-folders name categories).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for report.md, metrics.csv/json and plots.")],
    methods: Annotated[str, typer.Option(help="Comma-separated concealers.")] = "zeros,repeat,lpc",
    loss_model: Annotated[
        str, typer.Option(help="bernoulli | gilbert | challenge | trace (comma-separated for several).")
    ] = "gilbert",
    loss: Annotated[str, typer.Option(help="Loss rate(s), comma-separated, e.g. 0.05,0.1,0.2.")] = "0.1",
    burst: Annotated[float, typer.Option(help="Mean burst length in packets (gilbert).", callback=at_least(1.0))] = 2.0,
    traces: Annotated[Path | None, typer.Option(help="Folder of trace files (for --loss-model trace).")] = None,
    very_long_bursts: Annotated[
        float,
        typer.Option(
            help="challenge: the share of bursts that last 17-50 packets (0.2-0.6 s), e.g. 0.02; "
            "0 keeps the challenge-like patterns as they were.",
            callback=at_least(0.0),
        ),
    ] = 0.0,
    fade_after_ms: Annotated[
        float | None,
        typer.Option(
            help="Concealment of a burst starts fading to silence after this long ([conceal] fade_after_ms; "
            "default: the playout's, 50).",
            callback=at_least(0.0),
        ),
    ] = None,
    fade_ms: Annotated[
        float | None,
        typer.Option(help="Length of that fade ([conceal] fade_ms; default: the playout's, 25).", callback=positive),
    ] = None,
    jitter_ms: Annotated[
        float,
        typer.Option(help="Network mode: send through the jitter buffer with this jitter.", callback=at_least(0.0)),
    ] = 0.0,
    metrics: Annotated[
        str, typer.Option(help="Comma-separated: snr,lsd,mrstft,visqol,plcmos.")
    ] = "snr,lsd,mrstft,visqol,plcmos",
    max_seconds: Annotated[
        float | None, typer.Option(help="Use at most this much of each clip.", callback=positive)
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the loss patterns.")] = 0,
    jobs: Annotated[int, typer.Option(help="Worker processes.", min=1)] = max(1, os.cpu_count() or 1),
    cluster: Annotated[
        str | None,
        typer.Option(
            help="Run the jobs on a Dask cluster instead of --jobs processes: a scheduler's HOST:PORT "
            "(tcp://HOST:PORT), or local:N to start N worker processes here. Needs the lab extra."
        ),
    ] = None,
    cluster_timeout: Annotated[
        float,
        typer.Option(help="Seconds to reach the --cluster scheduler and its first worker.", callback=positive),
    ] = 5.0,
    key_file: Annotated[
        Path | None,
        typer.Option(help="Seal and open every packet under sessions of this pre-shared key, as a keyed jam."),
    ] = None,
) -> None:
    """Measure concealers against loss patterns on a folder of clips: report, tables, plots."""
    import contextlib
    import time

    from rich.progress import Progress

    from nmp_peer.conceal import concealer_names
    from nmp_peer.lab import report
    from nmp_peer.lab.run import ALL_METRICS, Setting, find_clips, plan, run_jobs
    from nmp_peer.netsim.loss import challenge_like_trace, make_loss_model, read_trace

    if cluster is not None:
        from nmp_peer.lab.cluster import check_address

        cluster = check_address(cluster)
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
                print(
                    f"note: trace {f.name} has {n} packets ({n * 512 / 44_100:.1f} s): a longer clip receives every "
                    "packet after it, a shorter one uses its start",
                    file=sys.stderr,
                )
            settings += [Setting("trace", trace=str(f)) for f in files]
        elif model in ("challenge", "bernoulli", "gilbert"):
            for r in rates:  # the models' own checks, once here, instead of in every worker process
                try:
                    if model == "challenge":  # bursts of 1-6 packets, some of 7-16, as in the challenge's traces
                        challenge_like_trace(1, loss_rate=r or 0.10, very_long_prob=very_long_bursts)
                    else:
                        make_loss_model(model, r, burst)
                except ValueError as exc:  # these constructors raise ValueError only for their arguments
                    raise UserError(f"--loss {r:g} --loss-model {model}: {exc}") from None
            if model == "challenge":
                settings += [Setting("challenge", r, very_long=very_long_bursts) for r in rates]
            else:
                settings += [Setting(model, r, burst, jitter_ms=jitter_ms) for r in rates]
        else:
            raise UserError(f"unknown loss model {model!r}; choose bernoulli, gilbert, challenge or trace")
    if very_long_bursts and not any(s.model == "challenge" for s in settings):
        raise UserError("--very-long-bursts applies to --loss-model challenge only")
    if not clips.is_dir():
        raise UserError(f"clips folder {clips} does not exist")
    try:
        clip_files = find_clips(clips)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    from nmp_peer.proto.security import load_key

    key = load_key(key_file) if key_file is not None else None
    job_list = plan(
        clip_files, clips, settings, method_list, metric_list, seed, max_seconds, key, fade_after_ms, fade_ms
    )
    start = time.perf_counter()  # a cluster's start (local:N) or connection is part of the wall time
    with contextlib.ExitStack() as stack:
        pool = None
        if cluster is not None:
            from nmp_peer.lab.cluster import DaskCluster

            pool = stack.enter_context(DaskCluster(cluster, cluster_timeout))
            jobs = pool.workers
        title = f"{len(clip_files)} clips × {len(settings)} settings × {len(method_list)} methods"
        if pool is not None:
            title += f" on {jobs} Dask worker(s)"
        if sys.stderr.isatty():
            with Progress(transient=True) as progress:
                task = progress.add_task(title, total=len(job_list))
                rows = run_jobs(job_list, jobs, lambda n: progress.advance(task, n), pool)
        else:  # a log file: one line per job instead of a bar
            done = [0]

            def log(n: int) -> None:
                done[0] += n
                print(f"lab: {done[0]}/{len(job_list)} jobs ({title})", file=sys.stderr, flush=True)

            rows = run_jobs(job_list, jobs, log, pool)
    wall = time.perf_counter() - start
    command = "nmp-peer " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["lab"] else "nmp-peer lab"
    path, plots, meta = report.write_lab_report(
        rows,
        out,
        metrics=metric_list,
        methods=method_list,
        settings=settings,
        example_clip=job_list[0].clip,
        playout=job_list[0].playout(),
        max_seconds=max_seconds,
        command=command,
        clips=len(clip_files),
        clips_dir=str(clips),
        seed=seed,
        wall_s=wall,
        jobs=jobs,
    )
    print(
        f"wrote {path}, metrics.csv, metrics.json and {len(plots)} plots; "
        f"{meta['audio_s'] * len(settings):.0f} s of audio per method in {wall:.1f} s",
        file=sys.stderr,
    )


def clips(
    out: Annotated[Path, typer.Option("--out", help="Folder for the clips (one sub-folder per category or package).")],
    source: Annotated[
        str,
        typer.Option(
            help="synth: FluidSynth renderings by category; debian: recorded music from Debian game-data packages."
        ),
    ] = "synth",
    n: Annotated[int, typer.Option(help="synth: number of clips (cycling through the categories).", min=1)] = 24,
    seconds: Annotated[float, typer.Option(help="Length of each clip.", callback=positive)] = 8.0,
    packages: Annotated[
        str | None, typer.Option(help="debian: comma-separated packages (default: a vetted set).")
    ] = None,
    jobs: Annotated[int, typer.Option(help="Worker processes (synth).")] = max(1, os.cpu_count() or 1),
    kinds: Annotated[
        str | None,
        typer.Option(help="synth: comma-separated categories to cycle through, e.g. drums,bass (default: all eight)."),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            help="synth: which evaluation set; each seed gives different clips, "
            "none shared with training or validation."
        ),
    ] = 0,
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
