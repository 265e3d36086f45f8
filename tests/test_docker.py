"""The container backend: docker/compose.yaml, the image, and jams between containers.

Marked ``docker``; deselect with ``-m "not docker"``. Starts dockerd in the background
when no engine answers (root), builds the base and the image with ``mk/docker.mk``
when the image is missing (a few minutes, once; cached afterwards), then plays the
"clean" and "bernoulli-5" scenarios through peer-a, impair and peer-b and holds B's
counters against the relay's log. Skipped, with the reason, where there is no docker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nmp_peer.scenarios import load_scenarios, select
from nmp_peer.scenarios.backends.docker import (
    COMPOSE_FILE,
    DEFAULT_IMAGE,
    compose_command,
    compose_unavailable,
    docker_unavailable,
    image_exists,
    netem_unavailable,
    start_dockerd,
)

REPO = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT_S = 1500


def _compose_or_skip() -> None:
    reason = compose_unavailable()
    if reason:
        pytest.skip(reason)


def test_compose_file_is_valid_for_both_profiles() -> None:
    _compose_or_skip()
    env = {**os.environ, "NMP_NET": "198.18.77", "NMP_OUT": "/tmp/nmp-compose-check"}
    for profile in ([], ["--profile", "netem"]):
        r = subprocess.run(
            [*compose_command("nmpcheck"), *profile, "config"], capture_output=True, text=True, env=env, timeout=60
        )
        assert r.returncode == 0, r.stderr
        assert "198.18.77.0/24" in r.stdout and "internal: true" in r.stdout
        assert "10.0." not in r.stdout and "172.1" not in r.stdout and "192.168." not in r.stdout
    services = subprocess.run(
        [*compose_command("nmpcheck"), "--profile", "netem", "config", "--services"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    ).stdout.split()
    assert set(services) == {"prepare", "impair", "peer-a", "peer-b", "peer-a-netem", "peer-b-netem"}


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed (apt-get install docker.io docker-compose)")
    reason = start_dockerd()
    if reason:
        pytest.skip(f"no Docker engine: {reason}")
    _compose_or_skip()
    if not image_exists(DEFAULT_IMAGE):
        log = REPO / "build" / "docker-test-build.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "w") as f:
            r = subprocess.run(
                ["make", "-f", "mk/docker.mk", "docker-image", "SUDO="],
                cwd=REPO,
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT_S,
            )
        if r.returncode != 0:
            pytest.fail(f"`make -f mk/docker.mk docker-image` failed; the end of {log}:\n{log.read_text()[-3000:]}")
    reason = docker_unavailable(DEFAULT_IMAGE)
    if reason:
        pytest.fail(reason)
    return DEFAULT_IMAGE


def _leftovers(project_prefix: str = "nmpscen") -> list[str]:
    r = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, timeout=30)
    n = subprocess.run(["docker", "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True, timeout=30)
    return [x for x in (r.stdout + n.stdout).split() if x.startswith(f"{project_prefix}{os.getpid() % 100000}")]


@pytest.mark.docker
def test_image_runs_unprivileged_and_has_the_commands(image: str) -> None:
    r = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "sh",
            image,
            "-c",
            "id -u && nmp-peer scenarios list && nmp-peer impair --help && tc -V && setpriv --help",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "10001" and any(line.startswith("outage-2s") for line in lines)
    r = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "jam", "--peer", "nowhere"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.strip().startswith("nmp-peer: error:"), r.stderr


@pytest.mark.docker
def test_compose_jams_count_what_the_relay_logged(image: str, tmp_path: Path) -> None:
    from nmp_peer.scenarios.runner import run_scenarios

    key = tmp_path / "jam.key"
    key.write_text(os.urandom(32).hex())
    entries = [  # clean without a key; the lossy one keyed (the key file read inside the containers)
        *run_scenarios(
            select(load_scenarios(), ["clean"]),
            tmp_path / "plain",
            backend="docker",
            concealers=["repeat"],
            seconds=3.0,
            clip="synthetic",
            image=image,
        ),
        *run_scenarios(
            select(load_scenarios(), ["bernoulli-5"]),
            tmp_path / "keyed",
            backend="docker",
            concealers=["repeat"],
            seconds=3.0,
            clip="synthetic",
            image=image,
            key_file=key,
        ),
    ]
    errors = [e["error"] for e in entries if e.get("error")]
    assert not errors, errors
    by_name: dict[str, Any] = {e["scenario"]: e for e in entries}
    keyed_b = by_name["bernoulli-5"]["result"]["b"]
    assert keyed_b["sessions"] == 1 and keyed_b["handshakes"] >= 1 and keyed_b["encrypted"], keyed_b
    for name, entry in by_name.items():
        analysis, result = entry["analysis"], entry["result"]
        failed = [c for c in [*analysis["counters"]["checks"], *analysis["audio_checks"]] if not c["ok"]]
        assert not failed, (name, failed)
        assert result["subnet"].startswith("198.1") and result["relay"]["forward"].startswith(result["subnet"][:-4])
        assert set(result["exit_codes"].values()) == {0}
        assert result["b"]["blocks_played"] > 150
    assert by_name["clean"]["result"]["b"]["packets_lost"] == 0
    lossy = by_name["bernoulli-5"]
    assert lossy["result"]["relay"]["a2b"]["dropped"] > 3 and lossy["result"]["b"]["packets_lost"] > 3
    assert (tmp_path / "plain" / "report.md").exists() and (tmp_path / "keyed" / "report.md").exists()
    assert _leftovers() == []


@pytest.mark.docker
def test_netem_profile_where_the_kernel_has_netem(image: str, tmp_path: Path) -> None:
    reason = netem_unavailable()
    if reason:
        pytest.skip(f"netem profile not run: {reason}")
    from nmp_peer.scenarios.runner import run_scenarios

    entries = run_scenarios(
        select(load_scenarios(), ["bernoulli-5"]),
        tmp_path,
        backend="docker",
        concealers=["repeat"],
        seconds=3.0,
        clip="synthetic",
        image=image,
        netem="on",
    )
    entry = entries[0]
    assert not entry.get("error"), entry.get("error")
    assert entry["result"]["netem"]["args"] == "loss random 5%"
    assert entry["analysis"]["counters"]["ok"], entry["analysis"]["counters"]["checks"]


def test_compose_file_sits_beside_the_dockerfile() -> None:
    assert COMPOSE_FILE.is_file() and (COMPOSE_FILE.parent / "Dockerfile").is_file()
