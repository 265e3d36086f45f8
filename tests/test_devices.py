"""The sound-device edge without a device: a failing callback is counted and ends the jam.

The streams themselves run on a real JACK server in ``tests/test_jack.py``; what cannot
be made to fail realistically there, an exception inside a callback, is tested here on
the guard that wraps every callback the peer gives PortAudio.
"""

from __future__ import annotations

import numpy as np
import pytest

from nmp_peer.errors import EXIT_ENVIRONMENT, EnvironmentFailure
from nmp_peer.live.devices import DeviceFailure, DeviceStreams
from nmp_peer.receiver.stats import Stats


class Abort(Exception):
    """Stands for sounddevice's ``CallbackAbort`` (importing sounddevice here would make
    PortAudio scan the devices in the test process)."""


def test_an_exception_in_a_callback_is_counted_aborts_the_stream_and_ends_the_jam() -> None:
    stats = Stats()
    woken: list[bool] = []
    streams = DeviceStreams(stats, wake=lambda: woken.append(True))

    def callback(outdata: np.ndarray, frames: int, _time: object, _status: object) -> None:
        outdata[:] = np.zeros((frames, 2), np.float32)  # two channels into a mono block

    guarded = streams.guard("output", "output device '0' (system)", callback, Abort)
    assert streams.failure() is None
    with pytest.raises(Abort):
        guarded(np.zeros((512, 1), np.float32), 512, None, None)
    assert stats.device_callback_errors == 1
    assert woken == [True]
    failure = streams.failure()
    assert failure is not None and failure.startswith("the output device '0' (system) callback raised ValueError")
    assert "\n" not in failure


def test_a_callback_that_returns_is_not_a_failure() -> None:
    stats = Stats()
    streams = DeviceStreams(stats)
    guarded = streams.guard("input", "input device '0'", lambda *args: None, Abort)
    for _ in range(3):
        guarded(np.zeros((512, 1), np.float32), 512, None, None)
    assert stats.device_callback_errors == 0 and streams.failure() is None
    assert streams.close() == 0 and stats.device_close_timeouts == 0


def test_a_device_failure_is_an_environment_failure_not_a_user_mistake() -> None:
    from nmp_peer.cli import _user_errors

    assert issubclass(DeviceFailure, EnvironmentFailure) and EXIT_ENVIRONMENT == 74
    assert not issubclass(DeviceFailure, _user_errors())


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--device-period", "3"], "device.period"),
        (["--device-rate", "100"], "device.rate"),
        (["--device-latency", "fast"], "device.latency"),
        (["--device-latency", "0"], "device.latency"),
    ],
)
@pytest.mark.parametrize(
    "command",
    [["jam", "--peer", "127.0.0.1:9"], ["band", "--listen", "127.0.0.1:0", "--peer", "x=127.0.0.1:9"]],
    ids=["jam", "band"],
)
def test_bad_device_settings_are_one_line_and_exit_2(
    command: list[str], args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from nmp_peer.cli import main

    assert main([*command, "--input", "missing.wav", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nmp-peer: error: ") and fragment in err[0], err


def test_device_settings_from_the_config_and_the_command_line() -> None:
    from nmp_peer.config import Config
    from nmp_peer.live.devices import DeviceSettings

    assert Config().device.settings() == DeviceSettings(period=0, rate=0, latency="low")
    cfg = Config.model_validate({"device": {"period": 128, "rate": 48000, "latency": 5}})
    assert cfg.device.settings() == DeviceSettings(period=128, rate=48000, latency=0.005)
    assert Config.model_validate({"device": {"latency": "8"}}).device.settings().latency == 0.008
