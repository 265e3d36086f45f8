"""A stream's end is not a loss; a clean stream stays exact; losses are counted when proven.

Engine-level cases drive the sans-IO playout engine on a virtual clock; the loopback
cases send every packet over real UDP on 127.0.0.1 with the shipped configs, on clips
of 3, 10, 30 and 120 s (the shrink that used to break exactness started once the 8-s
window had filled).
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from conftest import copied_blocks, music_like

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.conceal.simple import RepeatConcealer
from nmp_peer.config import load_config
from nmp_peer.netsim.impair import Impairment
from nmp_peer.netsim.loopback import run_loopback
from nmp_peer.netsim.loss import GilbertElliottLoss
from nmp_peer.proto.codec import Pcm16Codec
from nmp_peer.proto.packetizer import Packetizer
from nmp_peer.proto.wire import FLAG_END, Packet, WireError
from nmp_peer.receiver.latency import LatencyPolicy
from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine

CONFIGS = ("default", "lan", "wan")
LENGTHS = (3.0, 10.0, 30.0, 120.0)
LONG = pytest.mark.slow


def _lengths():
    return [pytest.param(s, marks=LONG) if s >= 30 else s for s in LENGTHS]


# ---------------------------------------------------------------------- the wire
def test_an_end_of_stream_notice_round_trips_and_a_broken_one_is_refused() -> None:
    notice = Packet.end_of_stream(Packet.parse(_audio_packet()).payload_type, 1, 7, 2**32 - 1, 99, 2**32 - 2)
    data = notice.serialize()
    assert data[5] & FLAG_END
    back = Packet.parse(data)
    assert back.end and back.end_seq == 2**32 - 2 and back.seq == 2**32 - 1 and back.stream_id == 7
    assert not Packet.parse(_audio_packet()).end
    broken = bytearray(data)
    broken[-1:] = b""  # payload shorter than the end sequence number
    broken[22:24] = (3).to_bytes(2, "big")
    with pytest.raises(WireError):
        Packet.parse(bytes(broken))


def _audio_packet() -> bytes:
    return Packetizer(Pcm16Codec(), 1).packetize(np.zeros((BLOCK_FRAMES, 1), np.float32)).serialize()


# ---------------------------------------------------------------------- the engine, on a virtual clock
def _engine(depth: int = 2, mode: str = "fixed") -> PlayoutEngine:
    return PlayoutEngine(RepeatConcealer(), PlayoutConfig(latency=LatencyPolicy(mode=mode, depth_packets=depth)))


def _drive(
    engine: PlayoutEngine,
    audio: np.ndarray,
    *,
    lost=(),
    end: bool = True,
    silent_from: int | None = None,
    resume_at: int | None = None,
    extra_ticks: int = 400,
) -> np.ndarray:
    """Send ``audio`` a packet per tick (``lost`` never arrive); after the last, the end
    notices (``end``); ``silent_from``..``resume_at``: the sender sends nothing, then goes on."""
    packetizer = Packetizer(Pcm16Codec(), audio.shape[1])
    n = len(audio) // BLOCK_FRAMES
    blocks = [audio[k * BLOCK_FRAMES : (k + 1) * BLOCK_FRAMES] for k in range(n)]
    ends: list[Packet] = []
    outs, k, tick = [], 0, 0
    while tick < n + extra_ticks + (resume_at or 0) - (silent_from or 0):
        now = float(tick * BLOCK_FRAMES)
        quiet = silent_from is not None and silent_from <= tick < (resume_at if resume_at is not None else 10**9)
        if k < n and not quiet:
            packet = packetizer.packetize(blocks[k])
            if k not in lost:
                engine.push(packet, now)
            k += 1
            if k == n and end:
                ends = packetizer.end_packets()
        elif ends:
            engine.push(ends.pop(0), now)
        outs.append(engine.next_block(now))
        tick += 1
    return np.concatenate(outs)


def test_a_clean_stream_with_an_end_is_exact_then_silence_and_nothing_is_counted() -> None:
    audio = music_like(3.0)
    audio = audio[: len(audio) // BLOCK_FRAMES * BLOCK_FRAMES]
    engine = _engine()
    out = _drive(engine, audio)
    lat = engine.first_slot[1]
    assert np.array_equal(out[lat : lat + len(audio)], audio)
    assert not out[lat + len(audio) :].any()
    s = engine.stats
    assert s.packets_lost == s.packets_concealed == s.underruns == s.blocks_resampled == 0
    assert s.stream_ends == 1 and s.end_notices == 3 and s.blocks_idle > 300


def test_losses_before_the_end_are_counted_exactly_even_the_last_packets() -> None:
    audio = music_like(3.0)
    n = len(audio) // BLOCK_FRAMES
    lost = {10, 11, 40, n - 2, n - 1}  # the last two never arrive: only the end notice proves them sent
    engine = _engine()
    _drive(engine, audio, lost=lost)
    s = engine.stats
    assert s.packets_lost == s.packets_concealed == len(lost)
    assert s.stream_ends == 1


def test_without_an_end_the_missing_tail_is_concealed_and_faded_but_never_lost() -> None:
    """A sender that vanished (killed) sends no end: its silence is a pause, not a loss."""
    audio = music_like(3.0)
    engine = PlayoutEngine(
        RepeatConcealer(),
        PlayoutConfig(latency=LatencyPolicy(mode="fixed", depth_packets=2), fade_after_ms=50.0, fade_ms=25.0),
    )
    _drive(engine, audio, end=False)
    s = engine.stats
    assert s.packets_lost == 0
    fade_blocks = -(-(75.0 * 44.1) // BLOCK_FRAMES)  # concealment until the fade has ended
    assert s.packets_concealed == s.underruns == fade_blocks
    assert s.pauses == 1 and s.blocks_idle >= 300 and s.stream_ends == 0


def test_a_sender_that_pauses_and_goes_on_loses_nothing_and_plays_on_in_order() -> None:
    audio = music_like(4.0)
    n = len(audio) // BLOCK_FRAMES
    engine = _engine(depth=2, mode="adaptive")
    engine.slot_log = []
    _drive(engine, audio, silent_from=100, resume_at=160)
    s = engine.stats
    assert s.packets_lost == 0 and s.lost_while_paused == 0
    assert s.pauses >= 1 and s.stream_ends == 1
    played = [seq for seq, concealed in engine.slot_log if not concealed]
    assert played == sorted(played) and len(played) >= n - 20  # the few that came late are dropped, in order


def test_an_outage_on_the_way_is_charged_exactly_the_packets_that_never_came() -> None:
    audio = music_like(5.0)
    outage = set(range(120, 120 + 172))  # 2 s of packets lost on the way
    engine = _engine(depth=2, mode="adaptive")
    _drive(engine, audio, lost=outage)
    s = engine.stats
    assert s.packets_lost == len(outage)
    # concealed while the concealer's hold and fade last (and the two or three slots around where the pause
    # begins: decoded ahead, and the one that finds the fade done), then paused
    c = engine.concealer
    held = math.ceil((c.fade_after_ms + c.fade_ms) * SAMPLE_RATE / 1000 / BLOCK_FRAMES)
    assert s.pauses == 1 and held <= s.packets_concealed <= held + 3, (held, s.packets_concealed)
    # every lost slot was either concealed (before the fade ended) or passed in the pause
    assert s.packets_concealed + s.lost_while_paused == s.packets_lost


# ---------------------------------------------------------------------- real UDP, shipped configs
def _loopback(name: str, seconds: float, impairment: Impairment, realtime: bool = False, concealer: str = "lpc"):
    audio = music_like(seconds, seed=1)
    cfg = load_config(name)
    return audio, run_loopback(audio, impairment, concealer=concealer, playout=cfg.playout(), realtime=realtime)


def _assert_clean(audio: np.ndarray, result, where: str) -> None:
    s = result.stats
    out = result.output[result.latency_samples : result.latency_samples + len(audio)]
    counts = {
        k: s[k]
        for k in (
            "packets_lost",
            "packets_concealed",
            "underruns",
            "packets_late",
            "blocks_resampled",
            "blocks_inserted",
            "blocks_dropped",
        )
    }
    assert set(counts.values()) == {0}, (where, counts)
    assert np.array_equal(out, audio), where
    assert s["packets_received"] == s["packets_sent"] == -(-len(audio) // BLOCK_FRAMES) and s["stream_ends"] == 1


@pytest.mark.parametrize("seconds", _lengths())
@pytest.mark.parametrize("name", CONFIGS)
def test_a_clean_loopback_is_bit_exact_over_the_whole_clip(name: str, seconds: float) -> None:
    audio, run = _loopback(name, seconds, Impairment())
    _assert_clean(audio, asyncio.run(run), f"{name} {seconds:g} s")


@pytest.mark.parametrize("seconds", _lengths())
@pytest.mark.parametrize("name", CONFIGS)
def test_with_injected_loss_lost_equals_what_was_dropped(name: str, seconds: float) -> None:
    audio, run = _loopback(name, seconds, Impairment(GilbertElliottLoss(0.05, 3.0, seed=2), seed=1))
    s = asyncio.run(run).stats
    assert s["injected_drop"] > 0
    assert s["packets_lost"] == s["injected_drop"], s
    assert s["packets_concealed"] + s["lost_while_paused"] == s["packets_lost"]


def _assert_clean_realtime(audio: np.ndarray, result, where: str) -> None:
    """On the wall clock, exact when the receiver saw nothing happen; what it counted otherwise.

    A loaded machine can stop this process for longer than a block between a tick and
    the packet sent at it: the packet is then really late for that tick, the buffer grows
    by a block (counted) or is read a little fast to shrink back (counted). Nothing is
    ever lost, and the audio is the whole clip in order either way.
    """
    s = result.stats
    assert s["packets_lost"] == 0 and s["packets_received"] == s["packets_sent"] and s["stream_ends"] == 1, (where, s)
    events = {
        k: s[k] for k in ("packets_concealed", "packets_late", "blocks_resampled", "blocks_inserted", "blocks_dropped")
    }
    if not any(events.values()):
        # Packets that piled up before the first read (this process late to its first tick)
        # are skipped, counted, so playout starts at its start depth: the clip from there.
        start = s.get("packets_skipped", 0) * BLOCK_FRAMES
        lat = result.latency_samples
        assert not result.output[lat : lat + start].any(), where
        assert np.array_equal(result.output[lat + start : lat + len(audio)], audio[start:]), where
        return
    # In order: copies of the clip, none from before the one played last (copied_blocks
    # asserts it). How many blocks are exact copies depends on how long the drift
    # correction read between samples, which a loaded machine decides.
    assert copied_blocks(result.output, audio, result.latency_samples) > 0, (where, events)


@pytest.mark.slow
def test_a_clean_realtime_loopback_is_bit_exact_for_every_config_and_length() -> None:
    """All twelve at once, on the wall clock, in one event loop (2 minutes: the longest clip).

    With ``repeat`` instead of the configs' ``lpc``: a clean stream conceals nothing, but
    the engine starts the concealment of the next slot whenever its packet is not in yet
    (one block ahead), and twelve ``lpc`` workers would load this process far beyond one
    peer's (``nmp-peer bench --path jam`` measures that)."""

    async def all_of_them():
        runs = [
            (name, seconds, *_loopback(name, seconds, Impairment(), realtime=True, concealer="repeat"))
            for name in CONFIGS
            for seconds in LENGTHS
        ]
        results = await asyncio.gather(*(run for *_, run in runs))
        pairs = zip(runs, results, strict=True)
        return [(name, seconds, audio, result) for (name, seconds, audio, _), result in pairs]

    for name, seconds, audio, result in asyncio.run(all_of_them()):
        _assert_clean_realtime(audio, result, f"{name} {seconds:g} s, real time")
