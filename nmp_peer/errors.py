"""The command line's user-error base class.

A ``UserError`` is a mistake the user can fix (a bad value, a missing file); ``nmp-peer``
prints it as one line, ``nmp-peer: error: <message>``, and exits with code 2. Modules
that hold their own user-error classes (``ConfigError``, ``AudioFileError``, ...) keep them;
``nmp_peer.cli._user_errors`` lists them all. Anything not on that list is a bug: it
ends in a traceback and a non-zero exit code, never in the one-line form.

The option checks that raise it while the command line is parsed (``positive``,
``at_least``, ``between``) are in ``nmp_peer.cli.options``.
"""

from __future__ import annotations


class UserError(Exception):
    """Raised by commands for a mistake the user can fix; printed as one line."""
