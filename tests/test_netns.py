"""Two jam processes in two network namespaces, the relay in a third; needs root and ``ip netns``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nmp_peer.audio_io import write_audio
from nmp_peer.scenarios.backends.netns import (
    RelayOptions,
    check_address,
    list_namespaces,
    loss_accounting,
    netns_topology,
    netns_unavailable,
    run_netns_jam,
    tbf_unavailable,
)

from conftest import music_like


@pytest.fixture(scope="module")
def netns() -> None:
    reason = netns_unavailable()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")


@pytest.fixture
def clips(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    write_audio(a, music_like(8.0, seed=1))
    write_audio(b, music_like(8.0, seed=2))
    return a, b


def test_only_loopback_and_benchmark_addresses_are_accepted() -> None:
    for ok in ("127.0.0.1", "198.18.1.2", "198.19.255.254"):
        assert check_address(ok) == ok
    for bad in ("10.0.0.1", "192.168.1.1", "8.8.8.8", "198.20.0.1", "::1"):
        with pytest.raises(ValueError, match="outside"):
            check_address(bad)


def test_namespaces_and_processes_are_removed_when_the_body_fails(netns: None) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with netns_topology() as topo:
            names = topo.namespaces
            assert set(names) <= set(list_namespaces())
            sleeper = topo.spawn(topo.ns_a, ["sleep", "30"])
            raise RuntimeError("boom")
    assert not set(names) & set(list_namespaces())
    assert sleeper.poll() is not None
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert topo.veth_ra not in links and topo.veth_a not in links


@pytest.mark.slow
def test_jam_across_namespaces_counts_the_losses_the_relay_logged(netns: None, clips: tuple[Path, Path], tmp_path: Path) -> None:
    result = run_netns_jam(*clips, tmp_path / "out", relay=RelayOptions(loss=0.05, seed=3, both_ways=False), duration_s=4.0)
    acc = loss_accounting(result)
    assert acc["a_received"] > 150 and acc["b_received"] > 150, acc
    assert acc["relay_lost_low"] <= acc["b_lost"] <= acc["relay_lost_high"], acc
    assert acc["relay_lost_high"] > 0, acc
    assert acc["relay_a2b_received"] == acc["a_sent"], acc
    assert acc["a_arrived"] == acc["relay_b2a_sent"], acc
    assert result["relay"]["b2a"]["lost"] == 0 and result["relay"]["foreign"] == 0
    assert result["relay"]["forward"].startswith("198.18.")
    assert not set(result["namespaces"]) & set(list_namespaces())


@pytest.mark.slow
def test_jam_across_namespaces_with_a_tbf_rate_limit(netns: None, clips: tuple[Path, Path], tmp_path: Path) -> None:
    """A 600 kbit/s token bucket behind the relay: the 751 kbit/s stream loses about a fifth more.

    B's losses are the relay's drops plus some of the qdisc's (those after B stopped are
    not B's); everything the relay sent toward B went through the qdisc.
    """
    reason = tbf_unavailable()
    if reason:
        pytest.skip(f"tc tbf unavailable: {reason}")
    result = run_netns_jam(*clips, tmp_path / "out", relay=RelayOptions(loss=0.02, seed=4, both_ways=False),
                           duration_s=4.0, tbf_kbps=600)
    acc, tbf = loss_accounting(result), result["tbf"]
    assert acc["a_received"] > 150 and acc["b_received"] > 100, acc
    assert tbf["dropped"] > 20, tbf
    assert acc["relay_lost_low"] + 10 <= acc["b_lost"] <= acc["relay_lost_high"] + tbf["dropped"], (acc, tbf)
    offered = tbf["packets"] + tbf["dropped"]
    assert 0 <= offered - result["relay"]["a2b"]["copies_sent"] <= 8, (tbf, result["relay"]["a2b"])  # + a few ARP
    assert acc["a_arrived"] == acc["relay_b2a_sent"], acc
    assert not set(result["namespaces"]) & set(list_namespaces())
