"""The built wheel carries what an installed peer needs: the shipped configs and the model.

`.ci/wheel-check` goes further (installs the wheel in a fresh venv and jams with it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import nmp_peer

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(nmp_peer.__file__).resolve().parent


def _has_setuptools() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 68


@pytest.mark.slow
@pytest.mark.skipif(not _has_setuptools(), reason="building the wheel offline needs setuptools>=68 in this environment")
def test_the_wheel_carries_every_shipped_config_and_module(tmp_path: Path) -> None:
    if PACKAGE.parent != REPO:
        pytest.skip(f"nmp_peer is imported from {PACKAGE}, not from this checkout")
    src = tmp_path / "src"  # a copy: no build/ or egg-info in the checkout, nothing stale in the wheel
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(PACKAGE, src / "nmp_peer", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("nmp_peer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    configs = {p.relative_to(PACKAGE.parent).as_posix() for p in (PACKAGE / "conf").rglob("*.toml")}
    assert {
        "nmp_peer/conf/default.toml",
        "nmp_peer/conf/lan.toml",
        "nmp_peer/conf/wan.toml",
        "nmp_peer/conf/scenarios.toml",
        "nmp_peer/conf/band/quartet.toml",
        "nmp_peer/conf/train/bin2bin_v2.toml",
        "nmp_peer/conf/train/experiments/bin2bin_v2_cpu_noadv.toml",
    } <= configs
    assert configs <= names, sorted(configs - names)
    assert "nmp_peer/conceal/models/bin2bin_v2.onnx" in names
    assert "nmp_peer/live/monitor.html" in names  # the web monitor's page
    modules = {p.relative_to(PACKAGE.parent).as_posix() for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= names, sorted(modules - names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "nmp-peer = nmp_peer.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
