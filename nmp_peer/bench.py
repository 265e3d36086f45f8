"""Benchmarks that print JSON: what the README's numbers come from.

Timings are per packet on one thread, after a warm-up, on whatever machine runs them;
``machine`` in the output says which. ``p50/p99/max`` are wall-clock; the ``cpu_``
twins count only this thread's CPU time, so they do not grow when another process
preempts the benchmark on a busy machine. ``busy_core`` keeps another core busy while
a bench runs; ``bench_vs`` interleaves two concealers run by run and reports their
ratio per run; concealers that report stages (``Concealer.set_stage_hook``) get a time
per stage.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from nmp_peer import BLOCK_FRAMES, PACKET_S, SAMPLE_RATE
from nmp_peer.conceal.base import Concealer

MACHINE = f"{platform.machine()} {os.cpu_count()} cpu(s), python {platform.python_version()}"


def _summary(samples_s: Sequence[float], scale: float, unit: str) -> dict[str, Any]:
    a = np.asarray(samples_s) * scale
    return {
        f"p50_{unit}": round(float(np.percentile(a, 50)), 3),
        f"p99_{unit}": round(float(np.percentile(a, 99)), 3),
        f"max_{unit}": round(float(a.max()), 3),
        f"mean_{unit}": round(float(a.mean()), 3),
        "n": len(a),
        "machine": MACHINE,
    }


def _timings(wall_ns: Sequence[int], cpu_ns: Sequence[int], unit: str) -> dict[str, Any]:
    """Wall-clock percentiles (``p50_ms`` ...) and their ``cpu_`` twins (this thread's CPU time)."""
    scale = {"us": 1e-3, "ms": 1e-6}[unit]
    result = _summary(wall_ns, scale, unit)
    result.update({f"cpu_{k}": v for k, v in _summary(cpu_ns, scale, unit).items() if k.endswith(f"_{unit}")})
    return result


class StageTimes:
    """A concealer's stage hook (``Concealer.set_stage_hook``) that reads both clocks.

    ``start()`` before each call, ``end()`` after it: each stage's wall and CPU time in
    that call (a stage met twice, once per channel, is summed), since the previous
    stage's end or the call's start.
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, tuple[int, int]]] = []
        self._wall = self._cpu = 0
        self._current: dict[str, tuple[int, int]] = {}

    def start(self) -> None:
        self._current = {}
        self._wall, self._cpu = time.perf_counter_ns(), time.thread_time_ns()

    def __call__(self, stage: str) -> None:
        wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
        w, c = self._current.get(stage, (0, 0))
        self._current[stage] = (w + wall - self._wall, c + cpu - self._cpu)
        self._wall, self._cpu = wall, cpu

    def end(self) -> None:
        if self._current:
            self.calls.append(self._current)

    def summary(self, total_cpu_ns: Sequence[int]) -> dict[str, Any]:
        """Per stage, in the order met: wall and CPU percentiles over the calls that ran it, and
        its share of the concealer's mean CPU time per call (over all calls)."""
        names: list[str] = []
        for call in self.calls:
            names += [n for n in call if n not in names]
        total = float(np.sum(total_cpu_ns)) or 1.0
        out: dict[str, Any] = {}
        for name in names:
            wall = [c[name][0] for c in self.calls if name in c]
            cpu = [c[name][1] for c in self.calls if name in c]
            entry = {k: v for k, v in _timings(wall, cpu, "ms").items() if k != "machine" and "max_" not in k}
            entry["share_of_cpu"] = round(float(np.sum(cpu)) / total, 3)
            out[name] = entry
        return out


def _test_signal(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A harmonic tone with vibrato plus a little noise: music-like input for timings."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    phase = 2 * np.pi * (220 * t + 2.0 * np.sin(2 * np.pi * 5 * t))
    x = sum(0.3 / k * np.sin(k * phase) for k in range(1, 8)) + 0.01 * rng.standard_normal(n)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


_SPINNER = "import sys\nsys.stdout.write('spinning\\n')\nsys.stdout.flush()\nwhile True:\n    pass\n"


@contextmanager
def busy_core() -> Iterator[dict[str, Any]]:
    """Another process spins on the CPU while the block runs: the other core of a 2-core
    machine is taken, as by a training job. The dict it yields says, once the block is
    done, how much of a core the spinner had (from its own CPU time) and the load average."""
    import resource

    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _SPINNER], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    report: dict[str, Any] = {"spinners": 1}
    start = time.perf_counter()
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # it has started and spins
        start = time.perf_counter()
        yield report
    finally:
        wall = time.perf_counter() - start
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        report["seconds"] = round(wall, 2)
        report["spinner_cpu_share"] = round(cpu / max(wall, 1e-9), 3)
        report["loadavg_1min"] = round(os.getloadavg()[0], 2)


REFERENCE_VARIANT = "reference"
"""The ``--vs`` variant that names the GAN pipeline as it was before issue 17 (speed):
``nmp_peer.conceal.gan_reference``, what the fast one is tested to equal."""


def concealer_variant(spec: str, method: str | None) -> Concealer:
    """A ``--vs`` variant: a concealer's name, ``reference`` (the GAN pipeline before issue
    17, ``nmp_peer.conceal.gan_reference``), or a model file for ``method`` (``gan``)."""
    from nmp_peer.conceal import UnknownConcealerError, concealer_names, make_concealer

    if spec in concealer_names():
        return make_concealer(spec)
    if spec == REFERENCE_VARIANT:
        if method not in (None, "gan"):
            raise UnknownConcealerError(f"--vs {REFERENCE_VARIANT} is the gan pipeline's reference, not {method}'s")
        from nmp_peer.conceal.gan_reference import ReferenceGanConcealer

        return ReferenceGanConcealer()
    if method is None:
        raise UnknownConcealerError(
            f"--vs {spec!r} is no concealer ({', '.join(concealer_names())}); "
            "a model file needs --method NAME to run it"
        )
    return make_concealer(method, model_path=Path(spec))


def bench_receive(packets: int = 20_000, loss: float = 0.0, keyed: bool = False, pace_s: float = 0.0) -> dict[str, Any]:
    """The receive gate (keyed: the AEAD open and the replay window), the jitter buffer and the
    playout per packet (zeros concealer: the receive path alone).

    ``pace_s``: sleep that long before each packet, as a live peer waits for the next one.
    Back to back, the path runs from warm caches; after a sleep, the first touch of each
    line and page costs what the machine makes it cost (on a VM whose idle vCPU is given
    to others, 10-25 times a warm loop's time), which is what a jam pays per packet."""
    import os

    from nmp_peer.conceal.simple import ZerosConcealer
    from nmp_peer.proto.codec import Pcm16Codec
    from nmp_peer.proto.packetizer import Packetizer
    from nmp_peer.proto.session import Session
    from nmp_peer.receiver.gate import ReceiveGate
    from nmp_peer.receiver.latency import LatencyPolicy
    from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine

    audio = _test_signal(BLOCK_FRAMES * 512)
    packetizer = Packetizer(Pcm16Codec(), 1)
    # Fixed depth: the steady state of a drift-free stream (the reader copies, no resampling).
    engine = PlayoutEngine(ZerosConcealer(), PlayoutConfig(latency=LatencyPolicy(mode="fixed")))
    peer = ("127.0.0.1", 50000)
    sender = receiver = None
    handshake_ms = None
    if keyed:
        key = os.urandom(32)
        for _warm_up in range(2):  # the second: the libraries' first-call costs paid
            sender, receiver = Session(key), Session(key)
            t = time.perf_counter_ns()
            hello = sender.outbound.poll(0.0, packetizer.stream_id)[0]
            welcome = receiver.on_control(receiver.decode(hello), 0.0)
            assert welcome is not None
            sender.on_control(sender.decode(welcome), 0.0)
            handshake_ms = round((time.perf_counter_ns() - t) / 1e6, 3)  # both ends' CPU, no network
    gate = ReceiveGate(engine.stats, peer=peer, session=receiver)
    datagrams = []
    seal_ns = []
    for k in range(packets):
        packet = packetizer.packetize(audio[(k % 512) * BLOCK_FRAMES : (k % 512 + 1) * BLOCK_FRAMES])
        if sender is not None:
            t = time.perf_counter_ns()
            sealed = sender.outbound.seal(packet)
            seal_ns.append(time.perf_counter_ns() - t)
            assert sealed is not None
            packet = sealed
        datagrams.append(packet.serialize())
    rng = np.random.default_rng(0)
    lost = rng.random(packets) < loss
    wall: list[int] = []
    cpu: list[int] = []
    for k, data in enumerate(datagrams):
        now = float(k * BLOCK_FRAMES)
        if pace_s:
            time.sleep(pace_s)
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        if not lost[k]:
            admitted = gate.admit(data, peer, k * PACKET_S)
            if admitted is not None:
                engine.push(admitted, now, follow=gate.new_stream)
        engine.next_block(now)
        cpu.append(time.thread_time_ns() - c)
        wall.append(time.perf_counter_ns() - t)
    warm = min(1000, packets // 10)
    if engine.stats.packets_received != int((~lost).sum()):
        raise RuntimeError(f"the receive path dropped packets: {engine.stats.to_dict()}")  # a bug, not a user's
    result: dict[str, Any] = {"path": "receive", "keyed": keyed, "paced_ms": round(1000 * pace_s, 2)}
    result.update(_timings(wall[warm:], cpu[warm:], "us"))
    result["drift_correction_read_us"] = _bench_drift_read()
    result["bytes_per_packet"] = len(datagrams[0])
    if keyed:
        result["handshake_ms"] = handshake_ms
        result["seal_p50_us"] = round(float(np.percentile(seal_ns, 50)) / 1000, 3)
    return result


def _bench_drift_read(calls: int = 2000) -> float:
    """p50 of one output block read through the interpolating reader (only while correcting drift)."""
    from nmp_peer.receiver.drift import read_block

    source = _test_signal(4 * BLOCK_FRAMES)
    times = []
    for i in range(calls):
        t = time.perf_counter()
        read_block(source, 10.25 + (i % 7) * 0.1, 1.0002, BLOCK_FRAMES)
        times.append(time.perf_counter() - t)
    return round(float(np.percentile(times, 50)) * 1e6, 3)


def bench_method(method: str, calls: int = 300, channels: int = 1) -> dict[str, Any]:
    """Time per concealed packet (all ``channels``) of one concealer, called as the engine calls it."""
    from nmp_peer.conceal import make_concealer

    return bench_concealer(make_concealer(method), calls, channels)


def _bench_audio(channels: int) -> np.ndarray:
    """Ten seconds of the test signal; a second channel is the first at 0.7 of its level
    with other noise (alike, as stereo music is, but not the same)."""
    audio = _test_signal(SAMPLE_RATE * 10)
    if channels == 1:
        return audio
    return np.concatenate(
        [audio] + [0.7 * _test_signal(SAMPLE_RATE * 10, seed=k) for k in range(1, channels)], axis=1
    ).astype(np.float32)


def _concealer_calls(
    concealer: Concealer, audio: np.ndarray, calls: int, first: int, stages: StageTimes
) -> tuple[list[int], list[int]]:
    """Wall and CPU ns of ``calls`` concealments (all stages, as the engine runs them) of
    histories taken from ``audio`` at positions numbered from ``first``."""
    ctx = concealer.context_samples
    wall: list[int] = []
    cpu: list[int] = []
    for i in range(first, first + calls):
        start = ctx + (i * 997) % (len(audio) - ctx - 1)
        history = np.ascontiguousarray(audio[start - ctx : start])
        t, c = time.perf_counter_ns(), time.thread_time_ns()
        stages.start()
        for _ in concealer.stages(history, i % 3):
            pass
        stages.end()
        cpu.append(time.thread_time_ns() - c)
        wall.append(time.perf_counter_ns() - t)
    return wall, cpu


def _timed_concealer(concealer: Concealer, channels: int = 1) -> StageTimes:
    concealer.warm_up(channels)
    stages = StageTimes()
    concealer.set_stage_hook(stages)
    return stages


def bench_concealer(concealer: Concealer, calls: int = 300, channels: int = 1) -> dict[str, Any]:
    """``bench_method`` for a concealer already made (another model file, say). With the
    stages the concealer reports (``Concealer.set_stage_hook``), under ``stages``."""
    stages = _timed_concealer(concealer, channels)
    audio = _bench_audio(channels)
    faults_before = _minor_faults()
    try:
        wall, cpu = _concealer_calls(concealer, audio, calls, 0, stages)
    finally:
        concealer.set_stage_hook(None)
    faults = _minor_faults() - faults_before
    result = {"method": concealer.name, "channels": channels, **_timings(wall, cpu, "ms")}
    result["minor_faults_per_call"] = round(faults / calls, 2)
    if stages.calls:
        result["stages"] = stages.summary(cpu)
    return result


def _minor_faults() -> int:
    """This thread's minor page faults so far (pages the kernel mapped in on first touch)."""
    import resource

    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    return resource.getrusage(who).ru_minflt


def median_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free confidence interval for the median: order statistics ``k`` and
    ``n + 1 - k`` with the smallest ``k`` whose binomial coverage is still ``level``.

    Returns ``(low, high, coverage)``; with too few values for ``level`` (under 6 for 95 %),
    the extremes and their coverage."""
    from scipy.stats import binom

    x = np.sort(np.asarray(values, float))
    n = len(x)
    k = 1  # 1-based: the interval [x_(k), x_(n+1-k)] covers the median with 1 - 2 P(B <= k - 1)
    while k + 1 <= n // 2 and 1 - 2 * binom.cdf(k, n, 0.5) >= level:
        k += 1
    coverage = 1 - 2 * binom.cdf(k - 1, n, 0.5)
    return float(x[k - 1]), float(x[n - k]), float(coverage)


def bench_vs(
    variants: Sequence[tuple[str, Concealer]], runs: int = 10, calls: int = 300, channels: int = 1
) -> dict[str, Any]:
    """Two concealers timed run by run, interleaved (A B, B A, A B, ...), each run on the
    same histories for both: the ratio B/A of their median time in each run, and the median
    of those ratios with a distribution-free 95 % interval. A machine that slows down or
    speeds up for a while slows both alike within a run, so the ratio holds where absolute
    times do not. ``calls`` per variant, split over the runs."""
    if len(variants) != 2:
        raise ValueError("bench_vs compares two variants")
    per_run = max(1, calls // runs)
    audio = _bench_audio(channels)
    hooks = [_timed_concealer(c, channels) for _, c in variants]
    wall: list[list[int]] = [[], []]
    cpu: list[list[int]] = [[], []]
    ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    try:
        for r in range(runs):
            medians = {}
            for v in (0, 1) if r % 2 == 0 else (1, 0):
                w_ns, c_ns = _concealer_calls(variants[v][1], audio, per_run, r * per_run, hooks[v])
                wall[v] += w_ns
                cpu[v] += c_ns
                medians[v] = (float(np.median(w_ns)), float(np.median(c_ns)))
            ratios["wall"].append(medians[1][0] / medians[0][0])
            ratios["cpu"].append(medians[1][1] / max(medians[0][1], 1.0))
    finally:
        for _, c in variants:
            c.set_stage_hook(None)
    result: dict[str, Any] = {
        "vs": [name for name, _ in variants],
        "channels": channels,
        "runs": runs,
        "calls_per_run": per_run,
    }
    for v, key in ((0, "a"), (1, "b")):
        entry = {"variant": variants[v][0], "method": variants[v][1].name, **_timings(wall[v], cpu[v], "ms")}
        entry.pop("machine")
        if hooks[v].calls:
            entry["stages"] = hooks[v].summary(cpu[v])
        result[key] = entry
    for clock, key in (("wall", "ratio_b_over_a"), ("cpu", "cpu_ratio_b_over_a")):
        lo, hi, coverage = median_ci(ratios[clock])
        result[key] = {
            "per_run": [round(x, 4) for x in ratios[clock]],
            "median": round(float(np.median(ratios[clock])), 4),
            "ci": [round(lo, 4), round(hi, 4)],
            "ci_coverage": round(coverage, 3),
        }
    result["machine"] = MACHINE
    return result


def bench_codec(codec: str = "opus", packets: int = 2000, bitrate: int = 128_000) -> dict[str, Any]:
    """Encode + decode time per 512-sample packet, and the bitrate on the wire."""
    from nmp_peer.proto.codec import Pcm16Codec
    from nmp_peer.proto.wire import HEADER_BYTES

    audio = _test_signal(BLOCK_FRAMES * packets)
    blocks = [audio[k * BLOCK_FRAMES : (k + 1) * BLOCK_FRAMES] for k in range(packets)]
    enc_ns: list[int] = []
    dec_ns: list[int] = []
    wall_ns: list[int] = []
    size = 0
    extra: dict[str, Any]
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes], object]
    if codec == "opus":
        from nmp_peer.proto.opus import OpusDecoderStream, OpusEncoderStream, OpusSettings, codec_delay_samples

        settings = OpusSettings(bitrate=bitrate)
        encoder, decoder = OpusEncoderStream(1, settings), OpusDecoderStream(1, settings.frame_ms)
        encode, decode = encoder.encode, decoder.decode_slot
        extra = {
            "bitrate_setting": bitrate,
            "added_latency_ms": round(1000 * codec_delay_samples(settings) / SAMPLE_RATE, 2),
        }
    elif codec == "pcm16":
        pcm = Pcm16Codec()
        encode = pcm.encode

        def decode(payload: bytes) -> object:
            return pcm.decode(payload, 1)

        extra = {"added_latency_ms": 0.0}
    else:
        raise ValueError(f"unknown codec {codec!r}; choose pcm16 or opus")
    for block in blocks:
        w, t = time.perf_counter_ns(), time.thread_time_ns()
        payload = encode(block)
        t2 = time.thread_time_ns()
        decode(payload)
        dec_ns.append(time.thread_time_ns() - t2)
        wall_ns.append(time.perf_counter_ns() - w)
        enc_ns.append(t2 - t)
        size += len(payload)
    rate = SAMPLE_RATE / BLOCK_FRAMES
    cpu_ns = [e + d for e, d in zip(enc_ns, dec_ns, strict=True)]
    return {
        "codec": codec,
        **_timings(wall_ns[100:], cpu_ns[100:], "ms"),
        "encode_cpu_p50_ms": round(float(np.percentile(enc_ns[100:], 50)) * 1e-6, 4),
        "decode_cpu_p50_ms": round(float(np.percentile(dec_ns[100:], 50)) * 1e-6, 4),
        "encode_decode_cpu_p99_ms": round(float(np.percentile(np.add(enc_ns, dec_ns)[100:], 99)) * 1e-6, 4),
        "payload_kbps": round(size / packets * rate * 8 / 1000, 1),
        "wire_kbps": round((size / packets + HEADER_BYTES + 28) * rate * 8 / 1000, 1),
        **extra,
    }


def bench_jam(seconds: float = 10.0, event_loop: str = "asyncio") -> dict[str, Any]:
    """CPU of a real-time loopback jam (both ends of one direction, zeros concealer), % of one
    core, on the named event loop (``nmp_peer.live.eventloop``: asyncio or uvloop)."""
    from nmp_peer.live import eventloop
    from nmp_peer.netsim.impair import Impairment
    from nmp_peer.netsim.loopback import run_loopback

    audio = _test_signal(int(seconds * SAMPLE_RATE))
    warm = run_loopback(audio[: SAMPLE_RATE // 2], Impairment(), concealer="zeros", realtime=True)
    eventloop.run(warm, event_loop)
    wall, cpu = time.perf_counter(), time.process_time()
    result = eventloop.run(run_loopback(audio, Impairment(), concealer="zeros", realtime=True), event_loop)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "path": "jam",
        "event_loop": event_loop,
        "seconds": round(wall, 2),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 2),
        "packets": result.stats["packets_sent"],
        "packets_concealed": result.stats["packets_concealed"],
        "machine": MACHINE,
    }


def bench_monitor(seconds: float = 10.0, remotes: int = 7, pages: int = 2) -> dict[str, Any]:
    """The web monitor's cost on the event loop it shares with the jam: snapshots of ``remotes``
    streams built and published ``SNAPSHOT_HZ`` times a second, each sent to ``pages``
    WebSocket clients (real ones, on their own thread and loop: their CPU is not counted).
    ``loop_cpu_percent_of_one_core`` is the CPU time of the server's thread over the wall time."""
    import asyncio
    import threading

    import aiohttp

    from nmp_peer.live.monitor import SNAPSHOT_HZ, Monitor, MonitorConfig, SnapshotBoard, publish_every
    from nmp_peer.receiver.snapshot import LevelMeter, make_snapshot, peer_snapshot, self_snapshot
    from nmp_peer.receiver.stats import Stats

    streams = [Stats() for _ in range(remotes)]
    meters = [LevelMeter() for _ in range(remotes + 1)]
    rng = np.random.default_rng(0)
    block = (0.1 * rng.standard_normal((BLOCK_FRAMES, 1))).astype(np.float32)
    build_ns: list[int] = []
    t0 = time.monotonic()

    def build() -> dict[str, Any]:
        for i, s in enumerate(streams):  # what the receivers would have counted meanwhile
            s.packets_received += 4
            s.packets_lost += int(rng.random() < 0.05)
            s.buffer_depth_packets = 2.0 + rng.random()
            meters[i].update(block)
        start = time.perf_counter_ns()
        peers = [peer_snapshot(f"peer{i}", f"10.0.0.{i}:50000", s, meters[i], 20.0) for i, s in enumerate(streams)]
        snap = make_snapshot(time.monotonic() - t0, self_snapshot("me", streams[0], meters[-1]), peers)
        build_ns.append(time.perf_counter_ns() - start)
        return snap

    received = [0] * pages
    sizes: list[int] = []

    async def page(url: str, i: int, stop: threading.Event) -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            while not stop.is_set():
                msg = await ws.receive(timeout=1.0)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                received[i] += 1
                sizes.append(len(msg.data))

    async def run() -> dict[str, Any]:
        board = SnapshotBoard()
        monitor = Monitor(MonitorConfig("127.0.0.1", 0), board)
        await monitor.start()
        publisher = asyncio.get_running_loop().create_task(publish_every(board, build))
        stop = threading.Event()
        url = f"http://127.0.0.1:{monitor.port}/ws"
        watchers = threading.Thread(
            target=lambda: asyncio.run(_gather(*(page(url, i, stop) for i in range(pages)))), daemon=True
        )
        watchers.start()
        while monitor.clients < pages:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # warm up
        seq0, got0, wall, cpu = board.seq, list(received), time.perf_counter(), time.thread_time()
        await asyncio.sleep(seconds)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        seq1, got1 = board.seq, list(received)
        stop.set()
        publisher.cancel()
        await monitor.close()
        watchers.join(10.0)
        return {
            "path": "monitor",
            "remotes": remotes,
            "pages": pages,
            "seconds": round(wall, 2),
            "snapshot_hz_target": SNAPSHOT_HZ,
            "snapshots_per_s": round((seq1 - seq0) / wall, 2),
            "messages_per_s_per_page": round(min(b - a for a, b in zip(got0, got1, strict=True)) / wall, 2),
            "message_bytes": int(np.median(sizes)) if sizes else 0,
            "build_us_p50": round(float(np.percentile(build_ns, 50)) / 1000, 1),
            "loop_cpu_percent_of_one_core": round(100 * cpu / wall, 2),
            "machine": MACHINE,
        }

    return asyncio.run(run())


async def _gather(*aws: Any) -> None:
    import asyncio

    await asyncio.gather(*aws)


def opus_quality(clips: list[str], bitrates: list[int], seconds: float = 8.0) -> list[dict[str, Any]]:
    """Quality of clean Opus transmission (no loss) against the original, per bitrate: the
    lab's ViSQOL and the SNR of the aligned decode, averaged over the clips."""
    from nmp_peer.lab import metrics
    from nmp_peer.lab.run import load_clip
    from nmp_peer.lab.simulate import conceal_trace
    from nmp_peer.proto.opus import OpusSettings

    refs = [load_clip(c, seconds) for c in clips]
    rows = []
    for bitrate in bitrates:
        settings = OpusSettings(bitrate=bitrate)
        visqol, snr = [], []
        for ref in refs:
            out = conceal_trace(ref, np.zeros(len(ref) // BLOCK_FRAMES + 1, bool), "opus-plc", opus=settings)
            visqol.append(metrics.visqol_audio(ref[:, 0], out[:, 0]))
            err = ref[:, 0] - out[:, 0]
            snr.append(10 * np.log10(np.sum(ref[:, 0] ** 2) / max(np.sum(err**2), 1e-20)))
        rows.append(
            {
                "codec": "opus",
                "bitrate": bitrate,
                "clips": len(refs),
                "visqol": round(float(np.mean(visqol)), 3),
                "snr_db": round(float(np.mean(snr)), 2),
            }
        )
    return rows


FLOOD_MULTIPLES = (10, 50, 100, 200, 500, 1000, 2000)
"""Garbage rates of ``bench_flood``, in multiples of the stream's packet rate."""
FLOOD_MAX_BYTES = 65_000


def _udp_drops(port: int) -> int | None:
    """The kernel's receive-buffer drop counter of the UDP socket bound to ``port`` (Linux)."""
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[-1])
    return None


def _send_stream(port: int, n: int, start: float) -> dict[str, Any]:
    """The real stream: ``n`` PCM16 packets at the packet rate from their own socket (a process of its own)."""
    import socket

    from nmp_peer.proto.codec import Pcm16Codec
    from nmp_peer.proto.packetizer import Packetizer

    audio = _test_signal(BLOCK_FRAMES * 256)
    packetizer = Packetizer(Pcm16Codec(), 1)
    block_s = BLOCK_FRAMES / SAMPLE_RATE
    late_s = 0.0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for k in range(n):
            delay = start + k * block_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            late_s = max(late_s, -delay)
            i = k % 256
            sock.sendto(
                packetizer.packetize(audio[i * BLOCK_FRAMES : (i + 1) * BLOCK_FRAMES]).serialize(), ("127.0.0.1", port)
            )
    return {"sent": n, "max_send_lateness_ms": round(late_s * 1e3, 2)}


def _flood(port: int, rate: float, start: float, seconds: float, seed: int) -> dict[str, Any]:
    """Random garbage of 0..FLOOD_MAX_BYTES bytes at ``rate`` datagrams/s from another socket, paced per millisecond."""
    import socket

    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, 2 * FLOOD_MAX_BYTES, dtype=np.uint8).tobytes()
    sizes = rng.integers(0, FLOOD_MAX_BYTES + 1, 1 << 16)
    offsets = rng.integers(0, FLOOD_MAX_BYTES, 1 << 16)
    view = memoryview(pool)
    sent = errors = 0
    addr = ("127.0.0.1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        delay = start - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                break
            due = int(elapsed * rate) + 1 - sent - errors
            for _ in range(due):
                j = (sent + errors) & 0xFFFF
                try:
                    sock.sendto(view[offsets[j] : offsets[j] + sizes[j]], addr)
                    sent += 1
                except OSError:
                    errors += 1
            if due <= 0:
                time.sleep(0.0005)
        elapsed = time.monotonic() - start
    return {"sent": sent, "send_errors": errors, "achieved_rate": round(sent / elapsed, 1)}


def bench_flood(multiples: tuple[int, ...] = FLOOD_MULTIPLES, seconds: float = 5.0, seed: int = 0) -> dict[str, Any]:
    """The garbage flood rate at which the real stream first loses a packet.

    A real receiving ``Peer`` on 127.0.0.1 hears a real stream (86 packets/s, another
    process) while a third process floods it with random datagrams of 0..65,000 bytes
    from another socket, for ``seconds`` at each rate. Per rate: the stream's packets
    sent, received and lost, what the peer concealed meanwhile, its drop counters, and
    the kernel's receive-buffer drops for the peer's socket (/proc/net/udp)."""
    import asyncio
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    rate = SAMPLE_RATE / BLOCK_FRAMES
    steps = []
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(time.sleep, [0.0, 0.0]))  # start both workers before timing anything
        for k, multiple in enumerate(multiples):
            steps.append(asyncio.run(_flood_step(pool, multiple * rate, seconds, seed + k)) | {"multiple": multiple})
    first = next((s["multiple"] for s in steps if s["stream_lost"] > 0), None)
    return {
        "path": "flood",
        "seconds_per_rate": seconds,
        "flood_bytes": f"0..{FLOOD_MAX_BYTES}",
        "first_multiple_with_stream_loss": first,
        "rates": steps,
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "machine": MACHINE,
    }


async def _flood_step(pool: Any, flood_rate: float, seconds: float, seed: int) -> dict[str, Any]:
    import asyncio
    import socket

    from nmp_peer.config import load_config
    from nmp_peer.live.peer import JamOptions, Peer
    from nmp_peer.live.transport import Endpoint

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = JamOptions(
        listen=Endpoint("127.0.0.1", port),
        peer=Endpoint("127.0.0.1", 9),
        input=None,
        output=None,
        concealer="zeros",
        playout=load_config(None).playout(),
        pin="host",  # the stream comes from a pool process's own port
    )
    peer = Peer(options)
    running = asyncio.get_running_loop().create_task(peer.run())
    await asyncio.sleep(0.3)  # bound and playing
    drops0 = _udp_drops(port) or 0
    lead = 0.5  # the flood starts this long before the stream and ends this long after it
    start = time.monotonic() + 0.3
    n = int(seconds * SAMPLE_RATE / BLOCK_FRAMES)
    flood = asyncio.wrap_future(pool.submit(_flood, port, flood_rate, start, seconds + 2 * lead, seed))
    stream = asyncio.wrap_future(pool.submit(_send_stream, port, n, start + lead))
    stream_result = await stream
    stats = peer.engine.stats
    during = {"blocks_concealed": stats.packets_concealed, "underruns": stats.underruns}
    flood_result = await flood
    await asyncio.sleep(0.3)  # the last real packets are read
    drops = (_udp_drops(port) or 0) - drops0
    peer.stop()
    summary = await running
    rejected = sum(
        summary[k] for k in ("packets_oversized", "packets_malformed", "packets_rate_limited", "packets_foreign")
    )
    return {
        "flood_rate": round(flood_rate, 1),
        "flood_sent": flood_result["sent"],
        "flood_achieved_rate": flood_result["achieved_rate"],
        "stream_sent": stream_result["sent"],
        "stream_received": summary["packets_received"],
        "stream_lost": stream_result["sent"] - summary["packets_received"],
        "stream_late": summary["packets_late"],
        **during,
        "kernel_drops": drops,
        "garbage_counted": rejected,
        "garbage_uncounted": flood_result["sent"]
        - (drops - (stream_result["sent"] - summary["packets_received"]))
        - rejected,
        "rejected": {
            k: summary[k] for k in ("packets_oversized", "packets_malformed", "packets_rate_limited", "packets_foreign")
        },
        "max_send_lateness_ms": stream_result["max_send_lateness_ms"],
        "receive_buffer_bytes": summary.get("receive_buffer_bytes"),
    }
