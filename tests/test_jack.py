"""Sound devices through a real audio server: JACK with its dummy driver (issue 16).

The server is private to each test (``jack_server`` in conftest); where JACK cannot run
the tests are skipped with the reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import music_like
from jack_server import JackServer

pytestmark = pytest.mark.slow  # a server and a client process each

HERE = Path(__file__).parent


def test_devices_lists_the_jack_server(jack_server: JackServer) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "nmp_peer.cli", "devices"],
        capture_output=True,
        text=True,
        timeout=120,
        env=jack_server.env,
    )
    assert r.returncode == 0, r.stderr
    assert "JACK Audio Connection Kit" in r.stdout


def test_a_portaudio_stream_on_jack_passes_a_clip_bit_exact(jack_server: JackServer, tmp_path: Path) -> None:
    """A JACK client plays a clip into a sounddevice duplex stream that echoes it, and records
    the echo: the PortAudio path on a real server moves audio unchanged, at a fixed lag."""
    clip = music_like(2.0)[:, 0]
    np.save(tmp_path / "clip.npy", clip)
    r = subprocess.run(
        [sys.executable, str(HERE / "jack_echo.py"), str(tmp_path / "clip.npy")],
        capture_output=True,
        text=True,
        timeout=120,
        env=jack_server.env,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert "JACK Audio Connection Kit" in result["hostapis"] and result["devices"], result
    assert result["finished"] and result["rate"] == 44100 and result["period"] == 512, result
    assert result["compared"] == len(clip), result
    xruns = result["jack_xruns"] + result["portaudio_status_flags"]
    # Every xrun either side counted may cost a period or two of the echo; nothing else may.
    assert result["exact_samples"] >= len(clip) - xruns * 2 * result["period"], result
