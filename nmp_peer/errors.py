"""The command line's user-error base class and the checks that turn bad option values into one.

A ``UserError`` is a mistake the user can fix (a bad value, a missing file); ``nmp-peer``
prints it as one line, ``nmp-peer: error: <message>``, and exits with code 2. Modules
that hold their own user-error classes (``ConfigError``, ``AudioFileError``, ...) keep them;
``nmp_peer.cli._user_errors`` lists them all. Anything not on that list is a bug: it
ends in a traceback and a non-zero exit code, never in the one-line form.

The option checks are Typer callbacks (``callback=positive``, ``callback=between(0, 1)``):
they run while the command line is parsed, before anything starts, and raise a
``UserError`` that names the option, so a bad value reads like every other user
mistake (one line, exit code 2). They are used instead of Typer's own ``min=``/``max=``,
which let ±inf through and report NaN as "should be greater than or equal to 0" in the
parser's four-line usage message.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import typer


class UserError(Exception):
    """Raised by commands for a mistake the user can fix; printed as one line."""


def _option(param: typer.CallbackParam) -> str:
    return max(param.opts, key=len) if param.opts else str(param.name)


def positive(param: typer.CallbackParam, value: float | None) -> float | None:
    """Typer callback for a duration or a rate: a finite number above zero; ``None`` (not given) passes."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UserError(f"{_option(param)} must be positive and finite, got {value:g}")
    return value


def at_least(low: float) -> Callable[[typer.CallbackParam, float | None], float | None]:
    """Typer callback: a finite number >= ``low``."""

    def check(param: typer.CallbackParam, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value >= low):
            raise UserError(f"{_option(param)} must be a finite number >= {low:g}, got {value:g}")
        return value

    return check


def between(low: float, high: float) -> Callable[[typer.CallbackParam, float | None], float | None]:
    """Typer callback: a number in [``low``, ``high``] (NaN is not)."""

    def check(param: typer.CallbackParam, value: float | None) -> float | None:
        if value is not None and not low <= value <= high:
            raise UserError(f"{_option(param)} must be in [{low:g}, {high:g}], got {value:g}")
        return value

    return check
