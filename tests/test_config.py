from __future__ import annotations

import json
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from conftest import music_like

from nmp_peer.config import CONF_DIR, Config, ConfigError, load_config, shipped_names


@pytest.mark.parametrize("name", sorted(p.stem for p in CONF_DIR.glob("*.toml") if p.stem != "scenarios"))
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(name)
    policy = cfg.playout().latency
    assert policy.min_depth_packets <= policy.max_depth_packets


def test_the_three_required_configs_exist() -> None:
    for name in ("default", "lan", "wan"):
        assert (CONF_DIR / f"{name}.toml").exists()


def _package_tomls(*parts: str) -> list[str]:
    """The ``.toml`` names in ``nmp_peer/conf/<parts>`` as importlib.resources sees the package."""
    folder = resources.files("nmp_peer").joinpath("conf", *parts)
    return sorted(e.name.removesuffix(".toml") for e in folder.iterdir() if e.is_file() and e.name.endswith(".toml"))


def test_every_shipped_name_loads_from_the_package_resources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nmp_peer.scenarios import load_scenarios
    from nmp_peer.train.config import load_config as load_train_config

    monkeypatch.chdir(tmp_path)  # names, not paths: nothing beside the working directory helps
    peer = [n for n in _package_tomls() if n != "scenarios"]
    assert {"default", "lan", "wan"} <= set(peer) and peer == shipped_names()
    for name in peer:
        assert isinstance(load_config(name), Config)
    train = _package_tomls("train")
    assert {"bin2bin_v2", "bin2bin_v2_cpu", "tiny"} <= set(train) and train == shipped_names("train")
    experiments = _package_tomls("train", "experiments")
    assert "bin2bin_v2_cpu_noadv" in experiments and not set(train) & set(experiments)  # a name is one file
    for name in train + experiments:
        assert load_train_config(name).name == name
    assert [s.name for s in load_scenarios()][:1] == ["clean"]
    assert load_config("default") == Config()  # default.toml writes out the built-in values


def test_an_unknown_name_lists_the_shipped_ones_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nmp_peer.train.config import load_config as load_train_config

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config("wann")
    message = str(err.value)
    assert "wann" in message and "default, lan, wan" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"bin2bin_v2_cpu, .*tiny; experiments: .*bin2bin_v2_cpu_noadv") as err:
        load_train_config("tinny")
    assert "\n" not in str(err.value)
    (tmp_path / "wan").write_text("[buffer]\ndepth_packets = 7\n")  # a file the user names wins
    assert load_config("wan").buffer.depth_packets == 7
    assert load_config(str(CONF_DIR / "lan.toml")).buffer.mode == "fixed"  # a path still works


def test_network_addresses_are_checked_when_the_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[network]\npeer = "nowhere"\n')
    with pytest.raises(ConfigError, match="network.peer: 'nowhere' is not HOST:PORT"):
        load_config(path)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _senders_to(port: int, config: Path, wav: Path, tmp_path: Path, *args: str) -> set[tuple[str, int]]:
    """Run a short jam; the addresses that the datagrams reaching ``port`` came from."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", port))
        sink.settimeout(0.2)
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "nmp_peer.cli",
                "jam",
                "--config",
                str(config),
                "--input",
                str(wav),
                "--output",
                str(tmp_path / "heard.wav"),
                "--duration",
                "0.5",
                "--quiet",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["packets_sent"] > 0
        senders = set()
        try:
            while True:
                senders.add(sink.recvfrom(4096)[1])
        except TimeoutError:
            pass
    return senders


def test_jam_takes_listen_and_peer_from_the_config_and_the_command_line_wins(tmp_path: Path) -> None:
    from nmp_peer.audio_io import write_audio

    wav = tmp_path / "me.wav"
    write_audio(wav, music_like(0.5, seed=3))
    listen, peer, other = _free_port(), _free_port(), _free_port()
    config = tmp_path / "net.toml"
    config.write_text(f'[network]\nlisten = "127.0.0.1:{listen}"\npeer = "127.0.0.1:{peer}"\n')
    assert _senders_to(peer, config, wav, tmp_path) == {("127.0.0.1", listen)}
    assert _senders_to(other, config, wav, tmp_path, "--peer", f"127.0.0.1:{other}") == {("127.0.0.1", listen)}


def test_jam_without_a_peer_anywhere_says_so_in_one_line() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "nmp_peer.cli", "jam", "--config", "default", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "--peer HOST:PORT" in r.stderr and "[network]" in r.stderr


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[buffer]\ndepth_packets = 0\n", "buffer.depth_packets"),
        ("[buffer]\nmode = 'fast'\n", "buffer.mode"),
        ("[buffer]\nmin_depth_packets = 9\nmax_depth_packets = 3\n", "min_depth_packets must not exceed"),
        ("[conceal]\nmethod = 'magic'\n", "unknown concealer 'magic'"),
        ("[audio]\nchannels = 3\n", "audio.channels"),
        ("[live]\nevent_loop = 'tokio'\n", "live.event_loop"),
        ("[nonsense]\nx = 1\n", "nonsense: unknown key"),
        ("[buffer\n", "not valid TOML"),
    ],
)
def test_bad_configs_name_the_problem_in_one_line(text: str, fragment: str, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert fragment in message and "\n" not in message and str(path) in message
