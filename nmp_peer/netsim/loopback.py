"""Two peers on 127.0.0.1 with an impairment injector between them.

The sender packetizes a clip, the injector (the lab's loss and network models) drops,
delays, reorders and duplicates packets, and the receiver's playout engine turns what
arrives into audio. Every packet crosses a real UDP socket.

``fast``: one virtual clock drives both ends, faster than real time and exactly
reproducible: at each tick the sender emits a packet, the injector sends what is due,
the receiver reads exactly those datagrams and plays one block. ``realtime``: the
sender is paced by the wall clock, the injector delays with timers, and the receiver's
playout runs on its own real-time tick with the concealer in a worker thread.

After its last block the sender says the stream ended (``Packetizer.end_packets``, one
notice a block for three blocks); the notices bypass the injector, whose decisions are
one per audio packet (the ground truth of ``injected_*``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.conceal import make_concealer
from nmp_peer.live.memory import freeze_heap
from nmp_peer.live.transport import Endpoint, UdpSocket, sleep_until
from nmp_peer.netsim.impair import Decision, Impairment
from nmp_peer.proto.codec import Pcm16Codec
from nmp_peer.proto.packetizer import Packetizer
from nmp_peer.proto.wire import Packet
from nmp_peer.receiver.gate import KeyedPath
from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine

RECEIVE_TIMEOUT_S = 5.0


@dataclass
class LoopbackResult:
    output: np.ndarray
    latency_samples: int
    stats: dict[str, Any]
    timeline: list[tuple[int, float, float, int]]
    decisions: list[Decision] = field(default_factory=list)


def _blocks(audio: np.ndarray) -> list[np.ndarray]:
    n_blocks = -(-len(audio) // BLOCK_FRAMES)
    padded = np.zeros((n_blocks * BLOCK_FRAMES, audio.shape[1]), np.float32)
    padded[: len(audio)] = audio
    return [padded[i * BLOCK_FRAMES : (i + 1) * BLOCK_FRAMES] for i in range(n_blocks)]


def _ground_truth(decisions: list[Decision]) -> dict[str, int]:
    counts = {"drop": 0, "duplicate": 0, "reorder": 0, "deliver": 0}
    for d in decisions:
        counts[d.action] += 1
    return {f"injected_{k}": v for k, v in counts.items()}


async def run_loopback(
    audio: np.ndarray,
    impairment: Impairment,
    *,
    concealer: str = "repeat",
    playout: PlayoutConfig | None = None,
    realtime: bool = False,
    first_seq: int | None = None,
    codec: Any = None,
    codec_delay: int = 0,
    key: bytes | None = None,
) -> LoopbackResult:
    """Send ``audio`` (frames × channels, float32) from one peer to the other; return what played.

    ``key``: keyed as a jam is: the handshake over the two sockets first, then every
    packet sealed by the sender and opened by the receiver's gate."""
    channels = audio.shape[1]
    playout = playout or PlayoutConfig(channels=channels)
    engine = PlayoutEngine(make_concealer(concealer), playout, threaded=realtime)
    engine.timeline = []
    packetizer = Packetizer(codec or Pcm16Codec(), channels, first_seq=first_seq)
    ts0 = packetizer.timestamp
    receiver = await UdpSocket.bind(Endpoint("127.0.0.1", 0))
    sender = await UdpSocket.bind(Endpoint("127.0.0.1", 0))
    decisions: list[Decision] = []
    try:
        wire = await _Wire.open(engine, packetizer, sender, receiver, key)
        run = _run_realtime if realtime else _run_fast
        # A codec that holds audio back (Opus) needs silence after the clip to flush it.
        sent = (
            np.concatenate([audio, np.zeros((codec_delay + BLOCK_FRAMES, channels), np.float32)])
            if codec_delay
            else audio
        )
        outputs = await run(sent, impairment, engine, packetizer, sender, receiver, decisions, wire)
    finally:
        sender.close()
        receiver.close()
        engine.close()
    if engine.first_slot is None:
        latency = 0
    else:
        ts, out_index = engine.first_slot
        latency = out_index - (ts - ts0) + codec_delay
    output = np.concatenate(outputs) if outputs else np.zeros((0, channels), np.float32)
    wanted = len(audio) + latency
    if len(output) < wanted:
        output = np.concatenate([output, np.zeros((wanted - len(output), channels), np.float32)])
    stats = engine.stats
    stats.packets_sent = len(decisions)
    result = stats.to_dict()
    result["latency_samples"] = latency
    result["latency_ms"] = round(1000.0 * latency / SAMPLE_RATE, 2)
    result.update(_ground_truth(decisions))
    result["send_errors"] = sender.send_errors
    return LoopbackResult(output[:wanted], latency, result, engine.timeline, decisions)


class _Wire:
    """Packets to datagrams and back: plain, or keyed (sealed, and opened by the receive gate)."""

    def __init__(self, engine: PlayoutEngine, path: KeyedPath | None) -> None:
        self.engine, self.path = engine, path

    @classmethod
    async def open(
        cls, engine: PlayoutEngine, packetizer: Packetizer, sender: UdpSocket, receiver: UdpSocket, key: bytes | None
    ) -> _Wire:
        if key is None:
            return cls(engine, None)
        path = KeyedPath(key, engine.stats)
        await sender.send(path.hello(packetizer.stream_id), receiver.address)  # the handshake over the sockets
        hello, _ = await asyncio.wait_for(receiver.receive(), RECEIVE_TIMEOUT_S)
        await receiver.send(path.answer(hello), sender.address)
        welcome, _ = await asyncio.wait_for(sender.receive(), RECEIVE_TIMEOUT_S)
        path.complete(welcome)
        return cls(engine, path)

    def encode(self, packet: Packet) -> bytes:
        return packet.serialize() if self.path is None else self.path.seal(packet)

    def deliver(self, data: bytes, now: float) -> None:
        if self.path is None:
            self.engine.push_datagram(data, now)
            return
        packet, new_stream = self.path.open(data, now / SAMPLE_RATE)
        if packet is not None:
            self.engine.push(packet, now, follow=new_stream)


def _done(engine: PlayoutEngine, n_samples: int, ts0: int) -> bool:
    if engine.first_slot is None:
        return False
    ts, out_index = engine.first_slot
    return engine.samples_out >= n_samples + out_index - (ts - ts0) + 2 * BLOCK_FRAMES


async def _run_fast(
    audio: np.ndarray,
    impairment: Impairment,
    engine: PlayoutEngine,
    packetizer: Packetizer,
    sender: UdpSocket,
    receiver: UdpSocket,
    decisions: list[Decision],
    wire: _Wire,
) -> list[np.ndarray]:
    blocks = _blocks(audio)
    ts0 = packetizer.timestamp
    address = receiver.address
    in_flight: list[tuple[float, int, bytes]] = []
    order = itertools.count()
    outputs: list[np.ndarray] = []
    max_ticks = len(blocks) + 4 * engine.config.latency.max_depth_packets + 2000
    ends: list[bytes] = []
    for tick in range(max_ticks):
        now = float(tick * BLOCK_FRAMES)
        if tick < len(blocks):
            data = wire.encode(packetizer.packetize(blocks[tick]))
            decision = impairment.next_decision()
            decisions.append(decision)
            for delay_s in decision.delays_s:
                heapq.heappush(in_flight, (now + delay_s * SAMPLE_RATE, next(order), data))
        elif tick == len(blocks):
            ends = [wire.encode(p) for p in packetizer.end_packets()]
        if ends:
            heapq.heappush(in_flight, (now, next(order), ends.pop(0)))
        due: list[tuple[float, int, bytes]] = []
        while in_flight and in_flight[0][0] <= now:
            due.append(heapq.heappop(in_flight))
        for _, _, data in due:
            await sender.send(data, address)
        for arrival, _, _ in due:
            data, _ = await asyncio.wait_for(receiver.receive(), RECEIVE_TIMEOUT_S)
            wire.deliver(data, arrival)
        outputs.append(engine.next_block(now))
        if tick >= len(blocks) and _done(engine, len(audio) - 2 * BLOCK_FRAMES, ts0):
            break
    return outputs


async def _run_realtime(
    audio: np.ndarray,
    impairment: Impairment,
    engine: PlayoutEngine,
    packetizer: Packetizer,
    sender: UdpSocket,
    receiver: UdpSocket,
    decisions: list[Decision],
    wire: _Wire,
) -> list[np.ndarray]:
    loop = asyncio.get_running_loop()
    blocks = _blocks(audio)
    ts0 = packetizer.timestamp
    address = receiver.address
    block_s = BLOCK_FRAMES / SAMPLE_RATE
    freeze_heap()
    t0 = loop.time() + 0.05
    outputs: list[np.ndarray] = []

    def now_samples() -> float:
        return (loop.time() - t0) * SAMPLE_RATE

    def deliver(data: bytes) -> None:
        sender.send_nowait(data, address)

    async def send() -> None:
        for k, block in enumerate(blocks):
            await sleep_until(loop, t0 + k * block_s)
            data = wire.encode(packetizer.packetize(block))
            decision = impairment.next_decision()
            decisions.append(decision)
            for delay_s in decision.delays_s:
                if delay_s > 0:
                    loop.call_later(delay_s, deliver, data)
                else:
                    deliver(data)
        for k, end in enumerate(packetizer.end_packets()):
            await sleep_until(loop, t0 + (len(blocks) + k) * block_s)
            deliver(wire.encode(end))

    async def receive() -> None:
        while True:
            data, _ = await receiver.receive()
            wire.deliver(data, now_samples())

    async def play() -> None:
        max_ticks = len(blocks) + 4 * engine.config.latency.max_depth_packets + 2000
        for tick in range(max_ticks):
            await sleep_until(loop, t0 + tick * block_s)
            for data, _ in receiver.take_ready():  # what arrived while this tick was late
                wire.deliver(data, now_samples())
            outputs.append(engine.next_block(now_samples()))
            if tick >= len(blocks) and _done(engine, len(audio) - 2 * BLOCK_FRAMES, ts0):
                return

    receiving = loop.create_task(receive())
    try:
        await asyncio.gather(send(), play())
    finally:
        receiving.cancel()
    return outputs
