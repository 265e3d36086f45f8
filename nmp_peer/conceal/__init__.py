"""Concealers by name. Heavy ones are imported only when asked for."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nmp_peer.conceal.base import Concealer


class UnknownConcealerError(ValueError):
    """A concealer name that is not in the registry; the message names the choices.

    A user error (``nmp-peer`` prints it as one line, exit code 2): the names come from
    the command line or a config file."""


def _zeros() -> Concealer:
    from nmp_peer.conceal.simple import ZerosConcealer

    return ZerosConcealer()


def _repeat() -> Concealer:
    from nmp_peer.conceal.simple import RepeatConcealer

    return RepeatConcealer()


def _lpc() -> Concealer:
    from nmp_peer.conceal.lpc import LpcConcealer

    return LpcConcealer()


def _gan() -> Concealer:
    from nmp_peer.conceal.gan import GanConcealer

    return GanConcealer()


def _gan_model(path: Path) -> Concealer:
    from nmp_peer.conceal.gan import GanConcealer

    return GanConcealer(path)


def _opus_plc() -> Concealer:
    from nmp_peer.conceal.simple import OpusPlcConcealer

    return OpusPlcConcealer()


def _opus_fec() -> Concealer:
    from nmp_peer.conceal.simple import OpusFecConcealer

    return OpusFecConcealer()


FACTORIES: dict[str, Callable[[], Concealer]] = {
    "zeros": _zeros,
    "repeat": _repeat,
    "lpc": _lpc,
    "gan": _gan,
    "opus-plc": _opus_plc,
    "opus-fec": _opus_fec,
}


MODEL_FACTORIES: dict[str, Callable[[Path], Concealer]] = {"gan": _gan_model}
"""The concealers that run a model file, each given another file than the shipped one."""


def concealer_names() -> list[str]:
    return list(FACTORIES)


def make_concealer(name: str, model_path: str | Path | None = None) -> Concealer:
    """Build a concealer by name, with another model file if it runs one (``MODEL_FACTORIES``);
    ``UnknownConcealerError`` names the choices for an unknown one."""
    if model_path is not None:
        if name not in MODEL_FACTORIES:
            raise UnknownConcealerError(
                f"concealer {name!r} runs no model file; {', '.join(MODEL_FACTORIES)} does"
                if name in FACTORIES
                else f"unknown concealer {name!r}; choose one of {', '.join(FACTORIES)}"
            )
        return MODEL_FACTORIES[name](Path(model_path))
    try:
        factory = FACTORIES[name]
    except KeyError:
        raise UnknownConcealerError(f"unknown concealer {name!r}; choose one of {', '.join(FACTORIES)}") from None
    return factory()
