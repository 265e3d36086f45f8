"""Run under a JACK server: a JACK client plays a clip into a peer's input port and records the
peer's output port in the same cycles; saves the recording and what happened.

    python tests/jack_tap.py CLIP.npy OUT.npz [--seconds-after 1.0] [--wait 60]

The peer is the server's other client whose name starts with ``PortAudio`` (an ``nmp-peer
jam`` on JACK devices). Playing starts at one cycle boundary with recording, so sample ``i``
of the clip and sample ``i`` of the recording belong to the same cycle; each cycle's start
is saved in host time (``cycle_s``), so a lag is measured in time even where the server
lost cycles.
Used by ``tests/test_jack.py`` and ``benchmarks/jack_device_jam.py`` in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import threading
import time

import jack
import numpy as np


def find_ports(client: jack.Client, wait_s: float) -> tuple[jack.Port | None, jack.Port | None]:
    """The peer's input and output ports (either may be absent: a peer with a file on one side)."""
    deadline = time.monotonic() + wait_s
    while True:
        ins = [p for p in client.get_ports(is_input=True, is_audio=True) if p.name.startswith("PortAudio")]
        outs = [p for p in client.get_ports(is_output=True, is_audio=True) if p.name.startswith("PortAudio")]
        if ins and outs:
            return ins[0], outs[0]
        if ins or outs or time.monotonic() > deadline:
            time.sleep(0.5)  # the other direction's stream may open a moment later
            ins = [p for p in client.get_ports(is_input=True, is_audio=True) if p.name.startswith("PortAudio")]
            outs = [p for p in client.get_ports(is_output=True, is_audio=True) if p.name.startswith("PortAudio")]
            return (ins[0] if ins else None), (outs[0] if outs else None)
        time.sleep(0.1)


def port_latency(port: str, kind: str) -> int:
    """The latency (frames, the range's maximum) JACK reports for a port, as ``jack_lsp -l`` prints it."""
    out = subprocess.run(["jack_lsp", "-l", port], capture_output=True, text=True, timeout=30).stdout
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == port:
            for detail in lines[i + 1 : i + 3]:
                m = re.search(rf"port {kind} latency = \[ (\d+) (\d+) \]", detail)
                if m:
                    return int(m.group(2))
    raise SystemExit(f"jack_lsp -l gave no {kind} latency for {port}: {out!r}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("clip")
    parser.add_argument("out")
    parser.add_argument("--seconds-after", type=float, default=1.0, help="Recording kept after the clip ended.")
    parser.add_argument("--lead-in", type=float, default=0.5, help="Seconds between connecting and playing.")
    parser.add_argument("--wait", type=float, default=60.0, help="How long to wait for the peer's ports.")
    args = parser.parse_args()
    clip = np.load(args.clip).astype(np.float32).reshape(-1)
    client = jack.Client("nmp-tap", no_start_server=True)
    play, rec = client.outports.register("play"), client.inports.register("rec")
    rate, period = client.samplerate, client.blocksize
    total = len(clip) + int(args.seconds_after * rate)
    recorded = np.zeros(total + period, np.float32)
    cycle_s = np.zeros(total // period + 2)
    """Host time (time.monotonic) of each played cycle's start: under load the dummy driver
    loses time (a cycle that ran late is not made up), which a count of frames would miss."""
    state = {"pos": -1, "xruns": 0}
    xrun_at: list[float] = []  # host time (time.monotonic) of each xrun
    go, done = threading.Event(), threading.Event()

    @client.set_process_callback
    def process(frames: int) -> None:
        out = play.get_array()
        out[:] = 0.0
        p = state["pos"]
        if p < 0:
            if go.is_set():
                state["pos"] = p = 0
            else:
                return
        if p >= total:
            done.set()
            return
        cycle_s[p // period] = time.monotonic() - client.frames_since_cycle_start / rate
        chunk = clip[p : p + frames]
        out[: len(chunk)] = chunk
        recorded[p : p + frames] = rec.get_array()[: len(recorded) - p]
        state["pos"] = p + frames

    @client.set_xrun_callback
    def xrun(_delay: float) -> None:
        state["xruns"] += 1
        xrun_at.append(time.monotonic())

    with client:
        peer_in, peer_out = find_ports(client, args.wait)
        names = [None if p is None else p.name for p in (peer_in, peer_out)]
        if peer_in is not None:
            client.connect(play, peer_in)
        if peer_out is not None:
            client.connect(peer_out, rec)
        # The latencies JACK reports for the sound card's ports, which the tap stands in for.
        capture, playback = port_latency("system:capture_1", "capture"), port_latency("system:playback_1", "playback")
        time.sleep(args.lead_in)
        go_at = time.monotonic()
        go.set()
        print(json.dumps({"playing": True}), flush=True)
        finished = done.wait(timeout=len(clip) / rate + args.seconds_after + 60)
    np.savez(args.out, recorded=recorded[:total], cycle_s=cycle_s)
    print(
        json.dumps(
            {
                "rate": rate,
                "period": period,
                "finished": finished,
                "input_port": names[0],
                "output_port": names[1],
                "capture_latency": capture,
                "playback_latency": playback,
                "jack_xruns": state["xruns"],
                "xrun_s": [round(t - go_at, 3) for t in xrun_at],  # since the clip started
                "go_at": go_at,
            }
        )
    )


if __name__ == "__main__":
    main()
