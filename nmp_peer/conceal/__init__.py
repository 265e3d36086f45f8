"""Concealers by name. Heavy ones are imported only when asked for."""

from __future__ import annotations

from collections.abc import Callable

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


def concealer_names() -> list[str]:
    return list(FACTORIES)


def make_concealer(name: str) -> Concealer:
    """Build a concealer by name; ``UnknownConcealerError`` names the choices for an unknown one."""
    try:
        factory = FACTORIES[name]
    except KeyError:
        raise UnknownConcealerError(f"unknown concealer {name!r}; choose one of {', '.join(FACTORIES)}") from None
    return factory()
