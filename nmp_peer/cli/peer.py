"""``nmp-peer jam`` (one end of a two-host session), ``nmp-peer band`` (one peer of 2-8) and ``nmp-peer devices``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nmp_peer.cli.options import (
    ConcealerOpt,
    ConfigOpt,
    DeviceLatencyOpt,
    DevicePeriodOpt,
    DeviceRateOpt,
    MonitorKeyFileOpt,
    MonitorOpt,
    build_config,
    build_encoder,
    monitor_config,
    positive,
    with_devices,
)
from nmp_peer.errors import UserError
from nmp_peer.jsonio import write_json


def jam(
    listen: Annotated[
        str | None,
        typer.Option(help="Local HOST:PORT to listen on (default: the config's network.listen, 0.0.0.0:50000)."),
    ] = None,
    peer: Annotated[
        str | None, typer.Option(help="The other musician's HOST:PORT (default: the config's network.peer).")
    ] = None,
    input: Annotated[
        str | None, typer.Option("--input", help="Sound device (name or index) or a WAV/FLAC file to send.")
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", help="Sound device (name or index) or a WAV file to write.")
    ] = None,
    config: ConfigOpt = None,
    concealer: ConcealerOpt = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).", callback=positive)
    ] = None,
    stats: Annotated[Path | None, typer.Option(help="Write the JSON summary here too.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No live status line.")] = False,
    key_file: Annotated[
        Path | None,
        typer.Option(help="Pre-shared key file: a handshake per session, every packet authenticated and encrypted."),
    ] = None,
    codec: Annotated[
        str | None, typer.Option(help="What this peer sends: pcm16 | opus (default: the config's). It plays either.")
    ] = None,
    monitor: MonitorOpt = None,
    monitor_key_file: MonitorKeyFileOpt = None,
    device_period: DevicePeriodOpt = None,
    device_rate: DeviceRateOpt = None,
    device_latency: DeviceLatencyOpt = None,
) -> None:
    """One end of a two-host session: send your audio, play the peer's. Ctrl-C stops with a summary."""

    from nmp_peer.live.transport import Endpoint

    watch = monitor_config(monitor, monitor_key_file)
    cfg = with_devices(build_config(config, concealer, codec=codec), device_period, device_rate, device_latency)
    listen = listen or cfg.network.listen
    peer = peer or cfg.network.peer
    if not peer:
        raise UserError(
            "jam needs the other peer's address: --peer HOST:PORT, or peer = \"HOST:PORT\" in the config's [network]"
        )
    _run_peer(
        cfg,
        key_file or cfg.security.key_file,
        stats,
        quiet,
        listen=Endpoint.parse(listen),
        peer=Endpoint.parse(peer),
        input=input,
        output=output,
        duration_s=duration,
        monitor=watch,
    )


def devices() -> None:
    """List the sound devices PortAudio sees."""
    from nmp_peer.live.devices import list_devices

    print(list_devices())


def band(
    session: Annotated[
        str | None,
        typer.Option(help="Session file (peers' names, addresses, mix; optional key): a path or a shipped name."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Which of the session file's peers this one is.")] = None,
    peer: Annotated[
        list[str] | None,
        typer.Option("--peer", help="A remote as NAME=HOST:PORT (repeat it; instead of a session file)."),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(help="Local HOST:PORT (default: all interfaces at this peer's port in the session file)."),
    ] = None,
    input: Annotated[
        str | None, typer.Option("--input", help="Sound device (name or index) or a WAV/FLAC file to send.")
    ] = None,
    output: Annotated[
        str | None, typer.Option("--output", help="Sound device (name or index) or a WAV file for the mix.")
    ] = None,
    config: ConfigOpt = None,
    concealer: ConcealerOpt = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).", callback=positive)
    ] = None,
    stats: Annotated[Path | None, typer.Option(help="Write the JSON summary here too.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No live status line.")] = False,
    key_file: Annotated[Path | None, typer.Option(help="Pre-shared key file (overrides the session file's).")] = None,
    codec: Annotated[str | None, typer.Option(help="What this peer sends: pcm16 | opus (default: config's).")] = None,
    mono: Annotated[bool, typer.Option("--mono", help="A mono mix (default: stereo, each peer panned).")] = False,
    mute: Annotated[list[str] | None, typer.Option("--mute", help="Leave this peer out of the mix (repeat).")] = None,
    gain: Annotated[list[str] | None, typer.Option("--gain", help="NAME=DB: a peer's level in the mix.")] = None,
    pan: Annotated[list[str] | None, typer.Option("--pan", help="NAME=P: a peer's pan, -1 left .. 1 right.")] = None,
    monitor: MonitorOpt = None,
    monitor_key_file: MonitorKeyFileOpt = None,
    device_period: DevicePeriodOpt = None,
    device_rate: DeviceRateOpt = None,
    device_latency: DeviceLatencyOpt = None,
) -> None:
    """One peer of a band (2-8 peers, full mesh): send to every other peer, mix what they send.

    The two-host `jam` is the same session with one remote."""
    from dataclasses import replace

    from nmp_peer.bandfile import load_band, parse_peer_option
    from nmp_peer.live.peer import MAX_REMOTES
    from nmp_peer.live.transport import Endpoint
    from nmp_peer.receiver.mixer import MixError

    watch = monitor_config(monitor, monitor_key_file)
    if (session is None) == (not peer):
        raise UserError("band needs either --session FILE (with --name) or --peer NAME=HOST:PORT (repeated)")
    band_key: str | None = None
    band_config: str | None = None
    if session is not None:
        if name is None:
            raise UserError("band --session needs --name: which of the session's peers this one is")
        band_file = load_band(session)
        remotes = band_file.remotes(name)
        me = band_file.me(name)
        listen = listen or f":{Endpoint.parse(me.address).port}"
        band_key, band_config = band_file.session.key_file, band_file.session.config
    else:
        remotes = [parse_peer_option(p) for p in peer or []]
        if not listen:
            raise UserError("band --peer needs --listen HOST:PORT (this peer's own address)")
        names = [r.name for r in remotes]
        if len(set(names)) != len(names):
            raise UserError("each --peer needs a name of its own")
        if not 1 <= len(remotes) <= MAX_REMOTES:
            raise UserError(f"a band has 1..{MAX_REMOTES} remotes, got {len(remotes)}")
    by_name = {r.name: i for i, r in enumerate(remotes)}

    def index(option: str, who: str) -> int:
        if who not in by_name:
            raise UserError(f"{option} {who!r}: no such remote ({', '.join(by_name)})")
        return by_name[who]

    try:
        for who in mute or []:
            i = index("--mute", who)
            remotes[i] = replace(remotes[i], mute=True)
        for option, items in (("--gain", gain or []), ("--pan", pan or [])):
            for item in items:
                who, sep, value = item.partition("=")
                try:
                    number = float(value)
                except ValueError:
                    number = float("nan")
                if not sep or number != number:
                    raise UserError(f"{option} {item!r} is not NAME=NUMBER")
                i = index(option, who)
                r = remotes[i]
                remotes[i] = replace(r, gain_db=number) if option == "--gain" else replace(r, pan=number)
        for r in remotes:
            r.strip()  # a gain or pan out of range: MixError
    except MixError as exc:
        raise UserError(str(exc)) from None
    cfg = with_devices(
        build_config(config or band_config, concealer, codec=codec), device_period, device_rate, device_latency
    )
    _run_peer(
        cfg,
        key_file or band_key or cfg.security.key_file,
        stats,
        quiet,
        listen=Endpoint.parse(listen),
        peer=None,
        remotes=remotes,
        out_channels=1 if mono else 2,
        input=input,
        output=output,
        duration_s=duration,
        monitor=watch,
    )


def _run_peer(cfg: Any, key_path: str | Path | None, stats: Path | None, quiet: bool, **session: Any) -> None:
    """Run one peer (a duo's jam or a band's member) with the config's concealer, playout,
    codec, security and event loop; print its JSON summary (and write it to ``stats``).
    A device that stopped: the summary, then one line and exit code 74."""
    from rich.console import Console

    from nmp_peer.live import eventloop
    from nmp_peer.live.peer import JamOptions, Peer
    from nmp_peer.proto.security import load_key

    encoder, _ = build_encoder(cfg)
    console = Console(stderr=True)
    options = JamOptions(
        concealer=cfg.conceal.method,
        playout=cfg.playout(),
        status=None if quiet else (lambda line: console.print(line, highlight=False, soft_wrap=True)),
        key=load_key(key_path) if key_path else None,
        encrypt=cfg.security.encrypt,
        pin=cfg.security.pin,
        repin_after_s=cfg.security.repin_after_s,
        codec=encoder,
        devices=cfg.device.settings(),
        **session,
    )
    peer = Peer(options)
    summary = eventloop.run(peer.run(), cfg.live.event_loop)
    write_json(None, summary)
    if stats is not None:
        write_json(stats, summary)
    if peer.failure is not None:
        raise peer.failure
