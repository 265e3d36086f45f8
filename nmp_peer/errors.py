"""The command line's user-error base class and the checks that turn bad option values into one.

A ``UserError`` is a mistake the user can fix (a bad value, a missing file); ``nmp-peer``
prints it as one line, ``nmp-peer: error: <message>``, and exits with code 2. Modules
that hold their own user-error classes (``ConfigError``, ``AudioFileError``, ...) keep them;
``nmp_peer.cli._user_errors`` lists them all. Anything not on that list is a bug: it
ends in a traceback and a non-zero exit code, never in the one-line form.

The option checks are Typer callbacks (``callback=finite``, say): they run while the
command line is parsed, so a bad value is reported as a usage error (exit code 2) that
names the option, before anything starts.
"""

from __future__ import annotations

import math

import typer


class UserError(Exception):
    """Raised by commands for a mistake the user can fix; printed as one line."""


def finite(value: float | None) -> float | None:
    """Typer callback: refuse NaN and ±inf (``--delay-ms nan``); ``None`` (not given) passes."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value:g}")
    return value


def positive_seconds(value: float | None) -> float | None:
    """Typer callback for a length of time: a finite number of seconds above zero."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a positive, finite number of seconds, got {value:g}")
    return value


def check_finite(name: str, value: float) -> float:
    """``value`` unless NaN or ±inf, in which case a ``UserError`` naming the option ``name``."""
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value:g}")
    return value
