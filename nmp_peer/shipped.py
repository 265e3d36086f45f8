"""The configs shipped with the package (``nmp_peer/conf/``), found through ``importlib.resources``.

``conf/default.toml``, ``lan.toml`` and ``wan.toml`` (``--config NAME``), ``conf/scenarios.toml``
(``nmp-peer scenarios``) and ``conf/train/`` (the training configs, ``nmp_peer.train.config``) are package
data, so an installed wheel has them as well as a checkout. Standard library only: the
training tools import this without the peer's dependencies.
"""

from __future__ import annotations

import atexit
from contextlib import ExitStack
from functools import cache
from importlib import resources
from pathlib import Path


@cache
def conf_dir() -> Path:
    """The shipped configs' folder, ``nmp_peer/conf`` of the imported package, as a real path
    (from Python 3.12 a zipped package is extracted once, for the process's lifetime)."""
    stack = ExitStack()
    atexit.register(stack.close)
    return stack.enter_context(resources.as_file(resources.files("nmp_peer").joinpath("conf")))


def shipped_names(subdir: str = "") -> list[str]:
    """The names of the shipped configs in ``conf/`` (not the scenario set) or in ``conf/<subdir>``."""
    folder = conf_dir() / subdir if subdir else conf_dir()
    skip = set() if subdir else {"scenarios"}
    return sorted(p.stem for p in folder.glob("*.toml") if p.stem not in skip)


def resolve_config(path_or_name: str | Path, error: type[Exception], what: str = "config", subdir: str = "") -> Path:
    """The file the user named if it exists, else the shipped config of that name (``wan``);
    neither: ``error`` with one line that lists the shipped names."""
    p = Path(path_or_name)
    if p.exists():
        return p
    name = str(path_or_name)
    folder = conf_dir() / subdir if subdir else conf_dir()
    if name and "/" not in name and "\\" not in name and (folder / f"{name}.toml").is_file():
        return folder / f"{name}.toml"
    names = ", ".join(shipped_names(subdir))
    raise error(f"{what} file {path_or_name} not found: neither a file nor a shipped name ({names})")
