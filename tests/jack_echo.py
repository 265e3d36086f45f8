"""Run under a JACK server: a JACK client plays a clip into a PortAudio duplex stream that
echoes its input to its output, and records that output; prints what happened as JSON.

Used by ``tests/test_jack.py`` in a process of its own, so that PortAudio starts with the
test's server (it enumerates devices once, when it initializes) and a hung stream cannot
hang the test run.
"""

from __future__ import annotations

import json
import sys
import threading

import jack
import numpy as np
import sounddevice as sd

BLOCK = 512


def main(clip_path: str) -> None:
    clip = np.load(clip_path).astype(np.float32)
    client = jack.Client("nmp-echo-test", no_start_server=True)
    play, rec = client.outports.register("play"), client.inports.register("rec")
    state = {"pos": 0, "xruns": 0, "recorded": [], "pa_status": 0}
    done = threading.Event()
    connected = threading.Event()

    @client.set_process_callback
    def process(frames: int) -> None:
        if not connected.is_set():
            play.get_array()[:] = 0.0
            return
        p = state["pos"]
        chunk = clip[p : p + frames]
        out = play.get_array()
        out[:] = 0.0
        out[: len(chunk)] = chunk
        state["recorded"].append(rec.get_array().copy())
        state["pos"] = p + frames
        if p > len(clip) + 8 * BLOCK:
            done.set()

    @client.set_xrun_callback
    def xrun(_delay: float) -> None:
        state["xruns"] += 1

    def echo(indata: np.ndarray, outdata: np.ndarray, frames: int, _time: object, status: sd.CallbackFlags) -> None:
        if status:
            state["pa_status"] += 1
        outdata[:] = indata

    devices = [d["name"] for d in sd.query_devices()]
    hostapis = [a["name"] for a in sd.query_hostapis()]
    rate, period = client.samplerate, client.blocksize
    with client:
        stream = sd.Stream(samplerate=client.samplerate, blocksize=BLOCK, channels=1, dtype="float32", callback=echo)
        with stream:
            pa_in = [p for p in client.get_ports(is_input=True, is_audio=True) if p.name.startswith("PortAudio")]
            pa_out = [p for p in client.get_ports(is_output=True, is_audio=True) if p.name.startswith("PortAudio")]
            client.connect(play, pa_in[0])
            client.connect(pa_out[0], rec)
            connected.set()
            finished = done.wait(timeout=60)
    recorded = np.concatenate(state["recorded"]) if state["recorded"] else np.zeros(0, np.float32)
    nonzero = np.flatnonzero(recorded)
    lag = int(nonzero[0]) if len(nonzero) else -1
    n = min(len(clip), len(recorded) - lag) if lag >= 0 else 0
    exact = recorded[lag : lag + n] == clip[:n] if n > 0 else np.zeros(0, bool)
    print(
        json.dumps(
            {
                "devices": devices,
                "hostapis": hostapis,
                "rate": rate,
                "period": period,
                "finished": finished,
                "lag_samples": lag,
                "compared": n,
                "clip": len(clip),
                "exact_samples": int(exact.sum()),
                "jack_xruns": state["xruns"],
                "portaudio_status_flags": state["pa_status"],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
