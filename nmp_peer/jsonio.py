"""JSON summaries on stdout or in a file, as the commands print them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class OutputFileError(ValueError):
    """An output file (JSON summary, relay log) that cannot be written; the message names it."""


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    """Print ``data`` (``path`` None) or write it; an unwritable path is an ``OutputFileError``."""
    text = json.dumps(data, indent=2, sort_keys=True)
    if path is None:
        print(text)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    except OSError as exc:
        raise OutputFileError(f"cannot write {path}: {exc.strerror}") from None
