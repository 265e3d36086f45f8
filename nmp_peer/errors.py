"""The command line's user-error base class.

A ``UserError`` is a mistake the user can fix (a bad value, a missing file); ``nmp-peer``
prints it as one line, ``nmp-peer: error: <message>``, and exits with code 2. Modules
that hold their own user-error classes (``ConfigError``, ``AudioFileError``, ...) keep them;
``nmp_peer.cli._user_errors`` lists them all. Anything not on that list is a bug: it
ends in a traceback and a non-zero exit code, never in the one-line form.

An ``EnvironmentFailure`` is neither: something the command runs on failed under it (a
sound device stopped because its audio server died). It is printed in the same one-line
form and exits with ``EXIT_ENVIRONMENT`` (74, ``EX_IOERR`` of BSD's ``sysexits.h``), so a
script tells it from a user mistake (2), a bug (1) and an interrupt (130).

The option checks that raise it while the command line is parsed (``positive``,
``at_least``, ``between``) are in ``nmp_peer.cli.options``.
"""

from __future__ import annotations


class UserError(Exception):
    """Raised by commands for a mistake the user can fix; printed as one line."""


EXIT_ENVIRONMENT = 74
"""Exit code of an ``EnvironmentFailure`` (``EX_IOERR``: an input/output error)."""


class EnvironmentFailure(Exception):
    """Raised when what the command runs on fails under it; printed as one line, exit code 74."""
