"""``nmp-peer jam`` (one end of a live session) and ``nmp-peer devices``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from nmp_peer.cli.options import ConcealerOpt, ConfigOpt, build_config, build_encoder, positive
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
    device_period: Annotated[
        int | None, typer.Option(help="Sound-device frames per callback (default: the config's; 0: the device's own).")
    ] = None,
    device_rate: Annotated[
        int | None, typer.Option(help="Sound-device sample rate (default: the config's; 0: the device's default).")
    ] = None,
    device_latency: Annotated[
        str | None, typer.Option(help="Sound-device latency: low | high | milliseconds (default: the config's).")
    ] = None,
) -> None:
    """One end of a two-host session: send your audio, play the peer's. Ctrl-C stops with a summary."""
    from rich.console import Console

    from nmp_peer.live.peer import JamOptions, Peer
    from nmp_peer.live.transport import Endpoint
    from nmp_peer.proto.security import load_key

    cfg = build_config(config, concealer, codec=codec)
    if device_period is not None or device_rate is not None or device_latency is not None:
        from nmp_peer.config import Config, ConfigError, first_error

        data = cfg.model_dump()
        for name, value in (("period", device_period), ("rate", device_rate), ("latency", device_latency)):
            if value is not None:
                data["device"][name] = value
        try:
            cfg = Config.model_validate(data)
        except ValueError as exc:  # pydantic's ValidationError
            from pydantic import ValidationError

            raise ConfigError(first_error(exc) if isinstance(exc, ValidationError) else str(exc)) from None
    listen = listen or cfg.network.listen
    peer = peer or cfg.network.peer
    if not peer:
        raise UserError(
            "jam needs the other peer's address: --peer HOST:PORT, or peer = \"HOST:PORT\" in the config's [network]"
        )
    encoder, _ = build_encoder(cfg)
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
        status=None if quiet else (lambda line: console.print(line, highlight=False, soft_wrap=True)),
        key=key,
        encrypt=cfg.security.encrypt,
        pin=cfg.security.pin,
        repin_after_s=cfg.security.repin_after_s,
        codec=encoder,
        devices=cfg.device.settings(),
    )
    jam = Peer(options)
    summary = asyncio.run(jam.run())
    write_json(None, summary)
    if stats is not None:
        write_json(stats, summary)
    if jam.failure is not None:  # a device stopped: the summary above, then one line and exit code 74
        raise jam.failure


def devices() -> None:
    """List the sound devices PortAudio sees."""
    from nmp_peer.live.devices import list_devices

    print(list_devices())
