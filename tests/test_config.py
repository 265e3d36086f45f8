from __future__ import annotations

from pathlib import Path

import pytest

from nmp_peer.config import CONF_DIR, ConfigError, load_config


@pytest.mark.parametrize("name", sorted(p.stem for p in CONF_DIR.glob("*.toml") if p.stem != "scenarios"))
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(name)
    policy = cfg.playout().latency
    assert policy.min_depth_packets <= policy.max_depth_packets


def test_the_three_required_configs_exist() -> None:
    for name in ("default", "lan", "wan"):
        assert (CONF_DIR / f"{name}.toml").exists()


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[buffer]\ndepth_packets = 0\n", "buffer.depth_packets"),
        ("[buffer]\nmode = 'fast'\n", "buffer.mode"),
        ("[buffer]\nmin_depth_packets = 9\nmax_depth_packets = 3\n", "min_depth_packets must not exceed"),
        ("[conceal]\nmethod = 'magic'\n", "unknown concealer 'magic'"),
        ("[audio]\nchannels = 3\n", "audio.channels"),
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
