"""Two peers over real UDP on 127.0.0.1, driven by a shared virtual clock (fast mode)."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest
from conftest import copied_blocks, music_like

from nmp_peer.netsim.impair import Impairment
from nmp_peer.netsim.loopback import LoopbackResult, run_loopback
from nmp_peer.netsim.loss import BernoulliLoss, GilbertElliottLoss
from nmp_peer.receiver.latency import LatencyPolicy
from nmp_peer.receiver.playout import PlayoutConfig


def loop(audio: np.ndarray, impairment: Impairment, depth: int = 3, **kw) -> LoopbackResult:
    cfg = PlayoutConfig(channels=audio.shape[1], latency=LatencyPolicy(mode="fixed", depth_packets=depth))
    return asyncio.run(run_loopback(audio, impairment, playout=cfg, **kw))


def received_part(result: LoopbackResult, audio: np.ndarray) -> np.ndarray:
    lat = result.latency_samples
    assert len(result.output) == len(audio) + lat
    return result.output[lat : lat + len(audio)]


@pytest.mark.parametrize("channels", [1, 2])
def test_clean_stream_is_bit_exact(channels: int) -> None:
    audio = music_like(3.0, channels)
    result = loop(audio, Impairment())
    assert result.latency_samples > 0
    assert np.array_equal(received_part(result, audio), audio)
    s = result.stats
    assert s["packets_lost"] == s["packets_concealed"] == s["packets_late"] == 0
    assert s["packets_received"] == s["packets_sent"]


def test_default_adaptive_policy_leaves_a_clean_stream_bit_exact() -> None:
    audio = music_like(3.0)
    result = asyncio.run(run_loopback(audio, Impairment()))
    assert np.array_equal(received_part(result, audio), audio)


def test_reorder_and_duplicates_inside_the_depth_stay_bit_exact() -> None:
    audio = music_like(3.0)
    result = loop(audio, Impairment(reorder=0.1, duplicate=0.1, seed=4), depth=4)
    s = result.stats
    assert s["injected_reorder"] > 10 and s["injected_duplicate"] > 10
    assert s["packets_duplicate"] == s["injected_duplicate"]
    # A held-back packet arrives after its successor unless that one was held back too.
    assert 0.5 * s["injected_reorder"] <= s["packets_reordered"] <= s["injected_reorder"]
    assert s["packets_lost"] == 0
    assert np.array_equal(received_part(result, audio), audio)


@pytest.mark.parametrize("model", [BernoulliLoss(0.1, seed=1), GilbertElliottLoss(0.1, 3.0, seed=2)])
def test_lost_and_concealed_equal_what_the_injector_dropped(model) -> None:
    audio = music_like(3.0)
    result = loop(audio, Impairment(model, seed=1), concealer="repeat")
    s = result.stats
    dropped = [d.index for d in result.decisions if d.action == "drop"]
    assert len(dropped) > 5
    assert s["packets_lost"] == s["packets_concealed"] == len(dropped)
    out = received_part(result, audio)
    lost = np.zeros(len(audio), bool)
    for k in dropped:
        lost[k * 512 : (k + 1) * 512] = True
    # Packets that arrived play unchanged, except the recovery crossfade at the start of each.
    recovered = np.zeros(len(audio), bool)
    for k in dropped:
        recovered[(k + 1) * 512 : (k + 1) * 512 + 128] = True
    untouched = ~lost & ~recovered
    assert np.array_equal(out[untouched], audio[untouched])
    assert not np.array_equal(out[lost], audio[lost])


def test_late_packets_are_counted_and_never_played_out_of_order() -> None:
    audio = music_like(3.0)
    # 60 ms jitter on a 2-packet buffer: many packets miss their deadline.
    result = loop(audio, Impairment(jitter_ms=40.0, seed=3), depth=2)
    s = result.stats
    assert s["packets_late"] > 0
    assert s["packets_received"] == s["packets_sent"]
    assert s["packets_concealed"] == s["packets_late"] + s["packets_lost"]
    # Every output block that is not concealed is the next source block in order.
    out = received_part(result, audio)
    blocks = len(audio) // 512
    src = audio[: blocks * 512].reshape(blocks, 512, 1)
    found = []
    for k in range(blocks):
        seg = out[k * 512 + 128 : (k + 1) * 512]
        if np.array_equal(seg, src[k, 128:]):
            found.append(k)
    assert found == sorted(found) and len(found) > blocks // 3


def test_sequence_wraparound_mid_stream_is_seamless() -> None:
    audio = music_like(2.0)
    result = loop(audio, Impairment(), first_seq=2**32 - 40)
    assert np.array_equal(received_part(result, audio), audio)
    assert result.stats["packets_lost"] == 0


def test_garbage_flood_is_counted_and_the_stream_plays_on() -> None:
    audio = music_like(2.0)

    # Garbage arrives through the receive path that the socket feeds: twenty junk datagrams
    # (random, or a real packet cut short and padded) before every real packet.
    from nmp_peer.conceal.simple import RepeatConcealer
    from nmp_peer.proto.codec import Pcm16Codec
    from nmp_peer.proto.packetizer import Packetizer
    from nmp_peer.receiver.playout import PlayoutEngine

    rng = np.random.default_rng(0)
    engine = PlayoutEngine(RepeatConcealer(), PlayoutConfig(latency=LatencyPolicy(mode="fixed", depth_packets=2)))
    packetizer = Packetizer(Pcm16Codec(), 1)
    outs = []
    good = packetizer.packetize(audio[:512]).serialize()
    for k in range(len(audio) // 512):
        now = k * 512.0
        for _ in range(20):
            junk = rng.bytes(int(rng.integers(0, 1500)))
            if rng.random() < 0.5:
                junk = good[: int(rng.integers(0, len(good)))] + junk
            engine.push_datagram(junk, now)
        engine.push_datagram(packetizer.packetize(audio[k * 512 : (k + 1) * 512]).serialize(), now)
        outs.append(engine.next_block(now))
    out = np.concatenate(outs)
    s = engine.stats
    assert s.packets_malformed >= 20 * (len(audio) // 512) * 0.9
    assert s.packets_concealed == 0
    lat = engine.first_slot[1]
    n = len(out) - lat
    assert np.array_equal(out[lat:], audio[:n])


@pytest.mark.slow
def test_realtime_mode_runs_on_the_wall_clock() -> None:
    audio = music_like(1.5)
    cfg = PlayoutConfig(latency=LatencyPolicy(mode="adaptive", depth_packets=3))
    result = asyncio.run(run_loopback(audio, Impairment(), playout=cfg, realtime=True))
    s = result.stats
    assert s["packets_received"] == s["packets_sent"] == -(-len(audio) // 512)
    # Scheduling noise on a busy machine may make packets late (concealed, the buffer grown
    # by a block, the reading rate bent for a while), never lose one; what played is the
    # clip in order, every block a copy but the ones those counters account for.
    assert s["packets_lost"] == 0
    touched = s["packets_concealed"] + s["blocks_inserted"] + s["blocks_dropped"]
    blocks = len(audio) // 512
    assert (
        copied_blocks(result.output, audio, result.latency_samples) >= blocks - 3 * touched - s["blocks_resampled"] - 2
    )


def test_ipv6_loopback_socket() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    from nmp_peer.live.transport import Endpoint, UdpSocket

    async def roundtrip() -> bytes:
        a = await UdpSocket.bind(Endpoint.parse("[::1]:0"))
        b = await UdpSocket.bind(Endpoint.parse("[::1]:0"))
        await a.send(b"hello", b.address)
        data, _ = await asyncio.wait_for(b.receive(), 2)
        a.close()
        b.close()
        return data

    try:
        assert asyncio.run(roundtrip()) == b"hello"
    except OSError as exc:  # the kernel has IPv6 but no ::1 configured
        pytest.skip(f"IPv6 loopback unavailable: {exc}")


@pytest.mark.parametrize("stereo", [False, True])
def test_a_keyed_loopback_plays_exactly_what_the_unkeyed_one_plays(stereo: bool) -> None:
    """The handshake runs over the two sockets, every packet is sealed and opened by the
    receiver's gate: the same audio and the same counters, and nothing refused."""
    audio = music_like(3.0, 2 if stereo else 1)
    plain = loop(audio, Impairment(GilbertElliottLoss(0.1, 3.0, seed=5), reorder=0.05, seed=5), depth=4)
    keyed = loop(
        audio, Impairment(GilbertElliottLoss(0.1, 3.0, seed=5), reorder=0.05, seed=5), depth=4, key=bytes(range(32))
    )
    assert np.array_equal(plain.output, keyed.output)
    s = keyed.stats
    assert s["sessions"] == 1 and s["handshake_messages"] == 1 and s["packets_unauthenticated"] == 0
    for k in ("packets_received", "packets_lost", "packets_concealed", "packets_reordered"):
        assert s[k] == plain.stats[k], k
