"""The live receive path, driven by a virtual clock: offline concealment and network simulation.

Nothing here conceals by itself: packets go through the same packetizer, jitter buffer,
playout engine and concealers as in a jam, only without sockets and faster than real
time. A lost packet's samples are zeroed before packetizing, so they are never read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.conceal import make_concealer
from nmp_peer.conceal.base import Concealer
from nmp_peer.netsim.impair import Impairment
from nmp_peer.proto.codec import Codec, Pcm16Codec
from nmp_peer.proto.opus import OpusSettings
from nmp_peer.proto.packetizer import Packetizer
from nmp_peer.proto.wire import Packet
from nmp_peer.receiver.gate import KeyedPath
from nmp_peer.receiver.latency import LatencyPolicy
from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine
from nmp_peer.receiver.stats import Stats


@dataclass
class Played:
    output: np.ndarray
    """What the receiver played, aligned with the input (same length)."""
    lost: np.ndarray
    """Per packet: True where the slot was concealed (dropped, or late)."""
    stats: Stats


def _blocks(audio: np.ndarray) -> np.ndarray:
    n_blocks = -(-len(audio) // BLOCK_FRAMES)
    padded = np.zeros((n_blocks * BLOCK_FRAMES, audio.shape[1]), np.float32)
    padded[: len(audio)] = audio
    return padded.reshape(n_blocks, BLOCK_FRAMES, audio.shape[1])


def offline_config(channels: int = 1) -> PlayoutConfig:
    """``conceal_trace``'s playout settings: a fixed one-packet buffer (nothing arrives late)."""
    return PlayoutConfig(channels=channels, latency=LatencyPolicy(mode="fixed", depth_packets=1))


def _engine(concealer: str | Concealer, channels: int, config: PlayoutConfig | None) -> PlayoutEngine:
    concealer = make_concealer(concealer) if isinstance(concealer, str) else concealer
    config = config or offline_config(channels)
    if concealer.name == "opus-fec":  # the baseline is Opus's decoder with its in-band FEC
        config = replace(config, codec_fec=True)
    return PlayoutEngine(concealer, config)


def _aligned(engine: PlayoutEngine, outputs: list[np.ndarray], ts0: int, n: int, channels: int) -> np.ndarray:
    out = np.concatenate(outputs)
    if engine.first_slot is None:
        return np.zeros((n, channels), np.float32)
    ts, index = engine.first_slot
    latency = index - (ts - ts0)
    return out[latency : latency + n]


def _encoder(concealer: str | Concealer, channels: int, opus: OpusSettings | None) -> tuple[Codec, int]:
    """The sender's codec: Opus for the Opus baselines (or when asked), else PCM16.

    Returns it with the delay it adds (samples), which the alignment removes.
    """
    name = concealer if isinstance(concealer, str) else concealer.name
    if opus is None and name.startswith("opus-"):
        opus = OpusSettings(fec=name == "opus-fec")
    if opus is None:
        return Pcm16Codec(), 0
    from nmp_peer.proto.opus import OpusEncoderStream, codec_delay_samples

    return OpusEncoderStream(channels, opus), codec_delay_samples(opus, channels)


def conceal_trace(
    audio: np.ndarray,
    lost: np.ndarray,
    concealer: str | Concealer,
    config: PlayoutConfig | None = None,
    opus: OpusSettings | None = None,
    key: bytes | None = None,
) -> np.ndarray:
    """Play ``audio`` (frames × channels) with the packets marked in ``lost`` missing.

    Returns the played audio, the same length as the input. A trace shorter than the
    audio means the remaining packets arrive. The stream is PCM16, or Opus for the
    ``opus-plc``/``opus-fec`` baselines or when ``opus`` settings are given. ``key``:
    each packet sealed by a keyed sender and opened by the receiver's gate, as live.
    """
    channels = audio.shape[1]
    blocks = _blocks(audio)
    mask = np.zeros(len(blocks), bool)
    mask[: min(len(lost), len(blocks))] = np.asarray(lost, bool)[: len(blocks)]
    blocks[mask] = 0.0  # never read a lost packet's samples
    engine = _engine(concealer, channels, config)
    codec, codec_delay = _encoder(concealer, channels, opus)
    packetizer = Packetizer(codec, channels)
    push = _delivery(engine, packetizer, key)
    ts0 = packetizer.timestamp + codec_delay  # the codec delays the audio within the slots
    outputs = []
    extra = engine.config.latency.depth_packets + 2 + -(-codec_delay // BLOCK_FRAMES)
    silence = np.zeros_like(blocks[0])
    for k in range(len(blocks) + extra):
        now = float(k * BLOCK_FRAMES)
        if k < len(blocks) or codec_delay:
            packet = packetizer.packetize(blocks[k] if k < len(blocks) else silence)
            if k >= len(blocks) or not mask[k]:
                push(packet, now)
        outputs.append(engine.next_block(now))
    engine.close()
    return _aligned(engine, outputs, ts0, len(audio), channels)


def _delivery(engine: PlayoutEngine, packetizer: Packetizer, key: bytes | None) -> Callable[[Packet, float], object]:
    """How a packet reaches the engine: directly, or (``key``) sealed and through the receive gate."""
    if key is None:
        return engine.push
    path = KeyedPath(key, engine.stats)
    path.handshake(packetizer.stream_id)

    def push(packet: Packet, now: float) -> None:
        opened, new_stream = path.open(path.seal(packet), now / SAMPLE_RATE)
        if opened is None:
            raise RuntimeError(f"the keyed path refused a packet: {engine.stats}")  # a bug
        engine.push(opened, now, follow=new_stream)

    return push


def play_network(
    audio: np.ndarray,
    impairment: Impairment,
    concealer: str | Concealer,
    config: PlayoutConfig | None = None,
    key: bytes | None = None,
) -> Played:
    """Send ``audio`` through a simulated network into the playout engine.

    Packets arrive at their simulated times; those past their deadline are late and
    concealed, exactly as live. The output is aligned on the starting latency; with an
    adaptive buffer that changes depth the alignment drifts by the inserted or dropped
    blocks, which ``stats`` reports.
    """
    channels = audio.shape[1]
    blocks = _blocks(audio)
    config = config or PlayoutConfig(channels=channels)
    engine = _engine(concealer, channels, config)
    engine.slot_log = []
    packetizer = Packetizer(Pcm16Codec(), channels)
    push = _delivery(engine, packetizer, key)
    ts0 = packetizer.timestamp
    packets = [packetizer.packetize(b) for b in blocks]
    arrivals: list[tuple[float, int]] = []
    for k in range(len(blocks)):
        for delay_s in impairment.decide():
            arrivals.append((k * BLOCK_FRAMES + delay_s * SAMPLE_RATE, k))
    arrivals.sort()
    outputs = []
    i = 0
    tick = 0
    horizon = len(blocks) + config.latency.max_depth_packets + 8
    while tick < horizon:
        now = float(tick * BLOCK_FRAMES)
        while i < len(arrivals) and arrivals[i][0] <= now:
            push(packets[arrivals[i][1]], arrivals[i][0])
            i += 1
        outputs.append(engine.next_block(now))
        tick += 1
    engine.close()
    output = _aligned(engine, outputs, ts0, len(audio), channels)
    concealed = np.zeros(len(blocks), bool)
    first = packets[0].seq
    for seq, was_concealed in engine.slot_log:
        index = (seq - first) % 2**32
        if was_concealed and index < len(blocks):
            concealed[index] = True
    return Played(output, concealed, engine.stats)
