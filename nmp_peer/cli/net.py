"""``nmp-peer impair`` (the UDP impairment relay, see ``nmp_peer.netsim.relay``) and ``nmp-peer scenarios``
(named hostile networks between two peers, see ``nmp_peer.scenarios``).

A bad value raises ``UserError`` (or a module's own user-error class, such as
``TraceError``) with a one-line message, which the main CLI prints as
``nmp-peer: error: <msg>`` with exit code 2; a value the parser can check (a NaN, a
negative duration) is refused while the command line is parsed, before the command starts.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from nmp_peer.cli.options import (
    BurstOpt,
    DelayOpt,
    DuplicateOpt,
    JitterDistOpt,
    JitterOpt,
    LossModelOpt,
    LossOpt,
    ReorderOpt,
    TraceOpt,
    between,
    make_impairment,
    positive,
)
from nmp_peer.errors import UserError
from nmp_peer.jsonio import write_json

B2A_SEED_SALT = 0x6261
"""The B→A direction's seed is derived from ``--seed`` and this, so its draws differ from A→B's."""


def parse_outage(text: str | None) -> tuple[float, float] | None:
    """``START:SECONDS`` (seconds after the first packet) → (start, seconds)."""
    if text is None:
        return None
    start, sep, length = text.partition(":")
    try:
        if not sep:
            raise ValueError
        outage = (float(start), float(length))
    except ValueError:
        raise UserError(f"--outage {text!r} is not START:SECONDS (e.g. 5:0.5)") from None
    if not all(0.0 <= v < float("inf") for v in outage):
        raise UserError(f"--outage {text!r}: start and length must be finite and non-negative")
    return outage


def b2a_seed(seed: int) -> int:
    """The B→A seed: a different stream for every ``seed``, never another seed's A→B stream's twin."""
    import numpy as np

    return int(np.random.SeedSequence([seed, B2A_SEED_SALT]).generate_state(1)[0])


def impair(
    listen: Annotated[str, typer.Option(help="HOST:PORT side A sends to (port 0: any free port).")],
    forward: Annotated[str, typer.Option(help="HOST:PORT of side B; its replies go back to side A.")],
    loss: LossOpt = 0.0,
    loss_model: LossModelOpt = "bernoulli",
    burst: BurstOpt = 2.0,
    trace: TraceOpt = None,
    delay_ms: DelayOpt = 0.0,
    jitter_ms: JitterOpt = 0.0,
    jitter_dist: JitterDistOpt = "normal",
    reorder: ReorderOpt = 0.0,
    duplicate: DuplicateOpt = 0.0,
    rate_kbps: Annotated[
        float | None, typer.Option(help="Rate limit per direction (token bucket, 50 ms queue).", callback=positive)
    ] = None,
    outage: Annotated[
        str | None, typer.Option(help="START:SECONDS after the first packet: drop everything then.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the A→B impairment (B→A gets a derived one).")] = 0,
    both_ways: Annotated[
        bool, typer.Option("--both-ways/--one-way", help="Impair B→A too (default), or only A→B.")
    ] = True,
    log: Annotated[
        Path | None, typer.Option(help="Per-packet ground truth: JSON lines, or CSV for a .csv name.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).", callback=positive)
    ] = None,
    summary: Annotated[Path | None, typer.Option(help="Write the JSON counters here (default: print them).")] = None,
) -> None:
    """A UDP relay that drops, delays, reorders, duplicates and rate-limits packets between two peers.

    Side A sends to --listen; the relay forwards to --forward (side B) and relays B's replies back.
    """
    from nmp_peer.live.transport import Endpoint
    from nmp_peer.netsim.relay import Relay

    spec = dict(
        loss=loss,
        loss_model=loss_model,
        burst=burst,
        trace=trace,
        delay_ms=delay_ms,
        jitter_ms=jitter_ms,
        jitter_dist=jitter_dist,
        reorder=reorder,
        duplicate=duplicate,
    )
    a2b = make_impairment(**spec, seed=seed)  # type: ignore[arg-type]
    b2a = make_impairment(**spec, seed=b2a_seed(seed)) if both_ways else None  # type: ignore[arg-type]
    relay = Relay(Endpoint.parse(listen), Endpoint.parse(forward), a2b, b2a, rate_kbps, parse_outage(outage), log)

    async def main() -> dict[str, Any]:
        await relay.start()
        host, port = relay.address
        print(f"nmp-peer impair: relaying {host}:{port} <-> {relay.forward}", file=sys.stderr, flush=True)
        return await relay.run(duration)

    write_json(summary, asyncio.run(main()))


scenarios_app = typer.Typer(
    no_args_is_help=True,
    help="Named hostile networks between two peers (the shipped scenarios.toml): run them, report what B heard.",
)
FileOpt = Annotated[
    Path | None, typer.Option("--file", help="Scenario file (default: the shipped nmp_peer/conf/scenarios.toml).")
]


@scenarios_app.command("list")
def scenarios_list(file: FileOpt = None) -> None:
    """The scenarios: name, what the network does."""
    from nmp_peer.scenarios import load_scenarios

    scenarios = load_scenarios(file)
    width = max(len(s.name) for s in scenarios)
    for s in scenarios:
        print(f"{s.name:<{width}}  {s.description}")


@scenarios_app.command("run")
def scenarios_run(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for report.md, plots, results.json and one folder per jam.")
    ],
    backend: Annotated[str, typer.Option(help="loopback (127.0.0.1) | netns (root) | docker (compose)")] = "loopback",
    concealers: Annotated[str, typer.Option(help="Comma-separated concealers.")] = "zeros,repeat,lpc",
    only: Annotated[str | None, typer.Option(help="Comma-separated scenario names (default: all).")] = None,
    seconds: Annotated[
        float, typer.Option(help="How long A and B play together in each jam (1..600).", callback=between(1.0, 600.0))
    ] = 6.0,
    file: FileOpt = None,
    clip: Annotated[str, typer.Option(help="auto (FluidSynth demo clip if installed) | demo | synthetic")] = "auto",
    visqol: Annotated[
        bool, typer.Option("--visqol/--no-visqol", help="Also ViSQOL (slow: ~1.3 s per second of audio).")
    ] = False,
    image: Annotated[str, typer.Option(help="docker: the nmp-peer image (make docker-image).")] = "nmp-peer:latest",
    netem: Annotated[str, typer.Option(help="docker: off (relay) | on | auto (kernel netem where it can).")] = "off",
    key_file: Annotated[
        Path | None, typer.Option(help="Keyed jams: both peers use this pre-shared key file (handshake, AEAD).")
    ] = None,
) -> None:
    """Play every scenario × concealer through the backend; write report.md, plots and results.json.

    Exit code 1 when a jam failed or a peer's counters disagree with the relay's log.
    """
    from nmp_peer.scenarios import load_scenarios, select
    from nmp_peer.scenarios.runner import run_scenarios

    chosen = select(load_scenarios(file), only)
    names = [c.strip() for c in concealers.split(",") if c.strip()]
    print(
        f"{len(chosen)} scenarios × {len(names)} concealers on {backend}, {seconds:g} s each -> {out}", file=sys.stderr
    )
    entries = run_scenarios(
        chosen,
        out,
        backend=backend,
        concealers=names,
        seconds=seconds,
        clip=clip,
        visqol=visqol,
        image=image,
        netem=netem,
        key_file=key_file,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    bad = [e for e in entries if e.get("error") or not e["analysis"]["counters"]["ok"]]
    print(
        f"wrote {out}/report.md, results.json and plots; {len(entries) - len(bad)}/{len(entries)} jams agree "
        f"with the relay's log",
        file=sys.stderr,
    )
    if bad:
        raise SystemExit(1)


@scenarios_app.command("clip")
def scenarios_clip(
    path: Annotated[Path, typer.Argument(help="WAV file to write (mono, 16-bit, 44.1 kHz).")],
    seconds: Annotated[float, typer.Option(help="Length (0.5..3600).", callback=between(0.5, 3600.0))] = 10.0,
    seed: Annotated[int, typer.Option(help="Seed of the notes.")] = 1,
    kind: Annotated[str, typer.Option(help="auto (FluidSynth demo clip if installed) | demo | synthetic")] = "auto",
) -> None:
    """Write the clip a scenario peer plays (the compose file's peers use it when none is given)."""
    from nmp_peer.scenarios.spec import write_clip

    what = write_clip(path, seconds, seed, kind)
    print(f"wrote {path} ({what}, {seconds:g} s)", file=sys.stderr)


@scenarios_app.command("band")
def scenarios_band(
    out: Annotated[Path, typer.Option("--out", help="Folder for report.json, report.md, the mixes and relay logs.")],
    peers: Annotated[int, typer.Option(help="Peers in the band (2..8).")] = 4,
    seconds: Annotated[
        float, typer.Option(help="Each peer's test tone (1..600 s).", callback=between(1.0, 600.0))
    ] = 10.0,
    concealer: Annotated[str, typer.Option(help="The peers' concealer.")] = "lpc",
    link: Annotated[
        list[str] | None,
        typer.Option(
            help="FROM:TO:LOSS[:JITTER_MS[:DUPLICATE]]: that direction's impairment (repeat; the others "
            "are clean). Default: every direction its own (1-6 % loss, 0-2 ms jitter, some duplicates)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the impairments (each link its own, derived).")] = 0,
    key_file: Annotated[Path | None, typer.Option(help="A pre-shared key for the whole band.")] = None,
    codec: Annotated[str, typer.Option(help="What every peer sends: pcm16 | opus.")] = "pcm16",
    config: Annotated[
        str, typer.Option(help="The peers' config: a shipped name (default, lan, wan) or a TOML file.")
    ] = "wan",
    network: Annotated[
        str, typer.Option(help="loopback (127.0.0.1) | netns (a network namespace per peer; needs root).")
    ] = "loopback",
) -> None:
    """A band on loopback or across network namespaces: every pair of peers through its own
    relay, a report per listener.

    Exit code 1 when a listener's counters disagree with a relay's log."""
    from nmp_peer.config import load_config
    from nmp_peer.netsim.impair import Impairment
    from nmp_peer.netsim.loss import BernoulliLoss
    from nmp_peer.proto.security import load_key
    from nmp_peer.scenarios.backends.netns import netns_unavailable
    from nmp_peer.scenarios.band import NAMES, BandPlan, run_band, write_markdown

    if not 2 <= peers <= len(NAMES):
        raise UserError(f"--peers must be 2..{len(NAMES)}, got {peers}")
    names = list(NAMES[:peers])
    links: dict[tuple[str, str], Impairment | None] = {}
    if link:
        specs = link
    else:  # every direction its own: 1..6 % loss, 0..2 ms of jitter, 1 % duplicates on every fourth
        pairs = [(a, b) for a in names for b in names if a != b]
        specs = [
            f"{a}:{b}:{0.01 * (1 + k % 6):g}:{k % 3}:{0.01 if k % 4 == 3 else 0:g}" for k, (a, b) in enumerate(pairs)
        ]
    for k, text in enumerate(specs):
        parts = text.split(":")
        try:
            src, dst, loss = parts[0], parts[1], float(parts[2])
            jitter = float(parts[3]) if len(parts) > 3 else 0.0
            duplicate = float(parts[4]) if len(parts) > 4 else 0.0
        except (IndexError, ValueError):
            raise UserError(f"--link {text!r} is not FROM:TO:LOSS[:JITTER_MS[:DUPLICATE]]") from None
        if src not in names or dst not in names or src == dst or len(parts) > 5:
            raise UserError(f"--link {text!r}: FROM and TO are two of {', '.join(names)}")
        if not (0.0 <= loss <= 1.0 and 0.0 <= jitter < 1000.0 and 0.0 <= duplicate <= 1.0):
            raise UserError(f"--link {text!r}: loss and duplicate are 0..1, jitter 0..1000 ms")
        s = seed * 1000 + k + 1
        links[(src, dst)] = Impairment(BernoulliLoss(loss, seed=s), jitter_ms=jitter, duplicate=duplicate, seed=s)
    if codec not in ("pcm16", "opus"):
        raise UserError(f"--codec is pcm16 or opus, not {codec!r}")
    load_config(config)  # a bad one ends here in one line, not in every peer
    if network not in ("loopback", "netns"):
        raise UserError(f"--network is loopback or netns, not {network!r}")
    if network == "netns" and (reason := netns_unavailable()):
        raise UserError(f"--network netns: {reason}")
    plan = BandPlan(
        out,
        names,
        links=links,
        seconds=seconds,
        concealer=concealer,
        key=load_key(key_file) if key_file else None,
        codec=codec,
        config=config,
        network=network,
    )
    report = asyncio.run(run_band(plan))
    write_markdown(report, out / "report.md")
    print(f"wrote {out}/report.md and report.json; counters agree with the relays: {report['ok']}", file=sys.stderr)
    if not report["ok"]:
        raise SystemExit(1)
