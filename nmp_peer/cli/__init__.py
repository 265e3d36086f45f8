"""The ``nmp-peer`` command. User mistakes end in one line on stderr and exit code 2; a
failure of the environment (a sound device that stopped) in one line and exit code 74.

One module per command group, each a set of plain functions registered here, in the
order ``nmp-peer --help`` lists them: ``peer`` (jam, band, devices), ``offline`` (loopback,
conceal, demo), ``lab`` (lab, clips), ``bench`` (bench, model-info) and ``net`` (impair,
the scenarios group). The options several commands share, and the checks behind them,
are in ``options``.
"""

from __future__ import annotations

import os
import sys

import typer

from nmp_peer.cli import bench, lab, net, offline, peer
from nmp_peer.errors import EXIT_ENVIRONMENT, EnvironmentFailure, UserError

__all__ = ["UserError", "app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="nmp-peer: networked music performance with causal packet-loss concealment.",
)
app.command()(peer.jam)
app.command()(peer.band)
app.command()(offline.loopback)
app.command()(offline.conceal)
app.command()(lab.lab)
app.command()(lab.clips)
app.command()(offline.demo)
app.command("model-info")(bench.model_info)
app.command()(peer.devices)
app.command()(bench.bench)
app.command()(net.impair)
app.add_typer(net.scenarios_app, name="scenarios")


def _user_errors() -> tuple[type[BaseException], ...]:
    """The mistakes a user can fix, each printed as one line with exit code 2; the list is
    explicit, so that a bug (any other exception, a bare ``ValueError`` included) ends in a
    traceback and a non-zero exit code instead of passing for a user mistake."""
    from nmp_peer.audio_io import AudioFileError
    from nmp_peer.bandfile import BandFileError
    from nmp_peer.conceal import UnknownConcealerError
    from nmp_peer.conceal.gan import ModelNotFoundError
    from nmp_peer.config import ConfigError
    from nmp_peer.jsonio import OutputFileError
    from nmp_peer.live.devices import DeviceError
    from nmp_peer.live.transport import EndpointError
    from nmp_peer.netsim.loss import TraceError
    from nmp_peer.proto.security import KeyFileError
    from nmp_peer.scenarios.spec import ScenarioError
    from nmp_peer.synth.render import SynthUnavailableError

    return (
        UserError,
        ConfigError,
        BandFileError,
        AudioFileError,
        EndpointError,
        DeviceError,
        TraceError,
        SynthUnavailableError,
        KeyFileError,
        ModelNotFoundError,
        UnknownConcealerError,
        ScenarioError,
        OutputFileError,
    )


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
    except EnvironmentFailure as exc:
        print(f"nmp-peer: error: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT
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
