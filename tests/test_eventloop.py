"""The event loop a live peer runs on (``[live] event_loop``): asyncio's or uvloop's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import music_like

from nmp_peer.config import ConfigError, load_config
from nmp_peer.errors import UserError
from nmp_peer.live import eventloop
from nmp_peer.netsim.impair import Impairment
from nmp_peer.netsim.loopback import run_loopback
from nmp_peer.receiver.latency import LatencyPolicy
from nmp_peer.receiver.playout import PlayoutConfig

CLI = [sys.executable, "-m", "nmp_peer.cli"]


async def _which() -> str:
    return eventloop.running_loop_name()


@pytest.mark.parametrize("name", ["asyncio", "uvloop"])
def test_the_named_loop_runs_the_coroutine(name: str) -> None:
    assert eventloop.run(_which(), name) == name


def test_a_clean_loopback_over_real_sockets_is_bit_exact_on_either_loop() -> None:
    audio = music_like(1.0)
    playout = PlayoutConfig(latency=LatencyPolicy(mode="fixed", depth_packets=2))
    for name in ("asyncio", "uvloop"):
        result = eventloop.run(run_loopback(audio, Impairment(), concealer="zeros", playout=playout), name)
        s = result.stats
        assert s["packets_concealed"] == s["packets_lost"] == 0 and s["packets_received"] == s["packets_sent"]
        lat = result.latency_samples
        np.testing.assert_array_equal(result.output[lat : lat + len(audio)], audio)


def test_an_unknown_loop_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown event loop 'tokio'"):
        eventloop.run(_which(), "tokio")


def test_the_config_chooses_the_loop_and_checks_the_name(tmp_path: Path) -> None:
    assert load_config(None).live.event_loop == "asyncio"
    path = tmp_path / "c.toml"
    path.write_text("[live]\nevent_loop = 'uvloop'\n")
    assert load_config(path).live.event_loop == "uvloop"
    path.write_text("[live]\nevent_loop = 'tokio'\n")
    with pytest.raises(ConfigError, match="live.event_loop"):
        load_config(path)


@pytest.mark.slow
def test_without_uvloop_installed_choosing_it_is_one_line() -> None:
    code = (
        "import sys\n"
        "sys.modules['uvloop'] = None  # as if the [uvloop] extra were not installed\n"
        "from nmp_peer.cli import main\n"
        "sys.argv = ['nmp-peer', 'bench', '--path', 'jam', '--event-loop', 'uvloop']\n"
        "raise SystemExit(main())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "pip install 'nmp-peer[uvloop]'" in lines[0], r.stderr


@pytest.mark.slow
def test_bench_jam_names_its_loop() -> None:
    r = subprocess.run(
        [*CLI, "bench", "--path", "jam", "--event-loop", "uvloop"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["event_loop"] == "uvloop" and d["packets_concealed"] == 0 and d["cpu_percent_of_one_core"] > 0
