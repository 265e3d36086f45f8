"""Sound devices through a real audio server: JACK with its dummy driver (issue 16).

The server is private to each test (``jack_server`` in conftest); where JACK cannot run
the tests are skipped with the reason.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import JamProcess, music_like
from jack_server import JackServer

from nmp_peer.audio_io import write_audio

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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def device_jam(jack_server: JackServer, tmp_path: Path) -> tuple[JamProcess, JamProcess]:
    """B on the JACK server's devices (``--input 0 --output 0``, quiet: its stderr is only what
    goes wrong), A with files; both on 127.0.0.1. Returns once A hears B (B's streams run)."""
    pa, pb = free_port(), free_port()
    write_audio(tmp_path / "a.wav", music_like(60.0))
    b = JamProcess(
        ["--listen", f"127.0.0.1:{pb}", "--peer", f"127.0.0.1:{pa}", "--input", "0", "--output", "0", "--quiet"],
        env=jack_server.env,
    )
    a = JamProcess(
        ["--listen", f"127.0.0.1:{pa}", "--peer", f"127.0.0.1:{pb}"]
        + ["--input", str(tmp_path / "a.wav"), "--output", str(tmp_path / "a_heard.wav")]
    )
    try:
        a.wait_for("A hears B", lambda: a.received() > 100, timeout_s=120)
    except BaseException:
        a.kill()
        b.kill()
        raise
    return a, b


def test_killing_the_jack_server_ends_a_device_jam_with_one_line_and_exit_74(
    jack_server: JackServer, tmp_path: Path
) -> None:
    """The audio server dies mid-jam (SIGKILL): B ends at once, says so in one line, exit code 74."""
    assert jack_server.process is not None
    a, b = device_jam(jack_server, tmp_path)
    try:
        jack_server.process.kill()
        killed = time.monotonic()
        code = b.process.wait(timeout=10)  # measured: 0.6 s (a 0.5-s close timeout); a busy CI machine gets 10
        took = time.monotonic() - killed
        code, summary, err = b.stop(sig=None)
    finally:
        a.kill()
        b.kill()
    print(f"B exited {took:.2f} s after the JACK server was killed")
    assert code == 74, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nmp-peer: error: sound device failed: the ") and "device '0'" in lines[0], err
    assert "stopped" in lines[0] and "audio server" in lines[0], err
    assert summary["device_failure"] and summary["device_failure"] in lines[0], summary
    assert summary["blocks_played"] > 0 and summary["device_callback_errors"] == 0, summary


def test_a_second_ctrl_c_exits_at_once_while_a_frozen_server_holds_the_close(
    jack_server: JackServer, tmp_path: Path
) -> None:
    """A frozen audio server (SIGSTOP) makes closing B's streams hang: the first Ctrl-C starts
    the shutdown (which would abandon the streams after 2 s), the second ends B at once (130)."""
    assert jack_server.process is not None
    a, b = device_jam(jack_server, tmp_path)
    try:
        jack_server.process.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # the server's clients see it stall
        b.process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        b.process.send_signal(signal.SIGINT)
        code = b.process.wait(timeout=10)
    finally:
        jack_server.process.send_signal(signal.SIGCONT)
        a.kill()
        b.kill()
    assert code == 130
