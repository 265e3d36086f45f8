"""Opus beside PCM: the 48 kHz frame mapping, PLC and FEC, and Opus end to end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import music_like

from nmp_peer import BLOCK_FRAMES
from nmp_peer.lab import metrics
from nmp_peer.lab.simulate import conceal_trace
from nmp_peer.netsim.impair import Impairment
from nmp_peer.netsim.loopback import run_loopback
from nmp_peer.netsim.loss import BernoulliLoss
from nmp_peer.proto.opus import (
    OpusDecoderStream,
    OpusEncoderStream,
    OpusSettings,
    codec_delay_samples,
    pack_frames,
    unpack_frames,
)
from nmp_peer.proto.wire import WireError
from nmp_peer.receiver.latency import LatencyPolicy
from nmp_peer.receiver.playout import PlayoutConfig


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - test) ** 2)))


def test_payload_format_roundtrip_and_errors() -> None:
    payload = pack_frames(2**32 + 7, [b"abc", b"de"])
    assert unpack_frames(payload) == (7, [b"abc", b"de"])
    for bad in (b"\x00", payload[:-1], payload + b"x", pack_frames(1, [b"a"])[:5] + b"\x00\x00"):
        with pytest.raises(WireError):
            unpack_frames(bad)


@pytest.mark.parametrize("frame_ms", [5.0, 10.0, 20.0])
def test_every_packet_yields_one_block_with_a_constant_measured_delay(frame_ms: float) -> None:
    settings = OpusSettings(frame_ms=frame_ms)
    x = music_like(2.0)
    enc, dec = OpusEncoderStream(1, settings), OpusDecoderStream(1, frame_ms)
    out = []
    for k in range(len(x) // BLOCK_FRAMES):
        payload = enc.encode(x[k * BLOCK_FRAMES : (k + 1) * BLOCK_FRAMES])
        block, synthetic = dec.decode_slot(payload)
        assert block.shape == (BLOCK_FRAMES, 1) and not synthetic
        out.append(block)
    y = np.concatenate(out)
    d = codec_delay_samples(settings)
    assert snr_db(x[2000 : len(y) - d, 0], y[2000 + d :, 0]) > 18.0
    assert dec.frames_concealed == 0


def test_lost_packets_are_concealed_by_opus_and_fec_recovers_with_the_next_packet() -> None:
    x = music_like(3.0)
    lost = np.zeros(len(x) // BLOCK_FRAMES + 1, bool)
    lost[[30, 60, 61, 100, 150, 200]] = True
    target = conceal_trace(x, np.zeros_like(lost), "opus-plc")
    plc = conceal_trace(x, lost, "opus-plc")
    zeros = conceal_trace(x, lost, "zeros")
    assert metrics.lost_packet_lsd_db(target[:, 0], plc[:, 0], lost) < metrics.lost_packet_lsd_db(
        x[:, 0], zeros[:, 0], lost
    )
    fec_target = conceal_trace(x, np.zeros_like(lost), "opus-fec", opus=OpusSettings(bitrate=24_000, fec=True))
    fec = conceal_trace(x, lost, "opus-fec", opus=OpusSettings(bitrate=24_000, fec=True))
    plc24 = conceal_trace(x, lost, "opus-plc", opus=OpusSettings(bitrate=24_000, fec=True))
    # At 24 kbit/s Opus uses SILK/hybrid and sends LBRR: FEC beats PLC on isolated losses.
    assert metrics.lost_packet_snr_db(fec_target[:, 0], fec[:, 0], lost) > metrics.lost_packet_snr_db(
        fec_target[:, 0], plc24[:, 0], lost
    )


@pytest.mark.parametrize("concealer", ["opus-plc", "lpc"])
def test_opus_loopback_over_udp_counts_losses_and_stays_aligned(concealer: str) -> None:
    x = music_like(3.0)
    settings = OpusSettings()
    cfg = PlayoutConfig(latency=LatencyPolicy(mode="fixed", depth_packets=2))
    result = asyncio.run(
        run_loopback(
            x,
            Impairment(BernoulliLoss(0.05, seed=2), seed=2),
            concealer=concealer,
            playout=cfg,
            codec=OpusEncoderStream(1, settings),
            codec_delay=codec_delay_samples(settings),
        )
    )
    s = result.stats
    assert s["packets_lost"] == s["packets_concealed"] == s["injected_drop"] > 0
    assert s["packets_malformed"] == 0
    y = result.output[result.latency_samples :]
    received = ~np.repeat(np.array([d.action == "drop" for d in result.decisions]), BLOCK_FRAMES)[: len(x)]
    received[:4096] = False
    assert snr_db(x[received, 0], y[received, 0]) > 12.0


@pytest.mark.slow
def test_a_pcm_peer_and_an_opus_peer_play_each_other(tmp_path: Path) -> None:
    import socket

    from nmp_peer.audio_io import read_audio, write_audio

    def port() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    write_audio(a, music_like(2.0, seed=1))
    write_audio(b, music_like(2.0, seed=2))
    pa, pb = port(), port()
    cli = [sys.executable, "-m", "nmp_peer.cli", "jam", "--quiet", "--duration", "3.5", "--config", "wan"]
    pa_proc = subprocess.Popen(
        [
            *cli,
            "--listen",
            f"127.0.0.1:{pa}",
            "--peer",
            f"127.0.0.1:{pb}",
            "--input",
            str(a),
            "--output",
            str(tmp_path / "a_hears.wav"),
            "--codec",
            "pcm16",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pb_proc = subprocess.Popen(
        [
            *cli,
            "--listen",
            f"127.0.0.1:{pb}",
            "--peer",
            f"127.0.0.1:{pa}",
            "--input",
            str(b),
            "--output",
            str(tmp_path / "b_hears.wav"),
            "--codec",
            "opus",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    (oa, ea), (ob, eb) = pa_proc.communicate(timeout=60), pb_proc.communicate(timeout=60)
    assert pa_proc.returncode == 0 and pb_proc.returncode == 0, (ea, eb)
    for out in (oa, ob):
        s = json.loads(out)
        assert s["packets_received"] > 150 and s["packets_malformed"] == 0
    heard, _ = read_audio(tmp_path / "a_hears.wav")  # A (PCM) heard B's Opus stream
    assert np.sqrt(np.mean(heard**2)) > 0.05


@pytest.mark.slow
def test_bench_codec_reports_bitrate_and_latency() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "nmp_peer.cli", "bench", "--codec", "opus", "--bitrate", "64000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert 50 < d["payload_kbps"] < 90 and d["added_latency_ms"] > 2.5


@pytest.mark.parametrize("concealer", ["lpc", "opus-plc"])
def test_an_opus_stream_the_adaptive_buffer_shrinks_plays_on(concealer: str) -> None:
    """A deep start makes the adaptive policy drop blocks; each dropped packet still goes
    through the Opus decoder (it crashed here: the drop decoded through the PCM codec),
    so the decoder sees every frame, conceals nothing and the buffer really shrinks."""
    settings = OpusSettings(bitrate=96_000)
    audio = music_like(4.0)
    policy = LatencyPolicy(mode="adaptive", depth_packets=10, window_s=1.0)
    result = asyncio.run(
        run_loopback(
            audio,
            Impairment(),
            concealer=concealer,
            playout=PlayoutConfig(latency=policy),
            codec=OpusEncoderStream(1, settings),
            codec_delay=codec_delay_samples(settings),
        )
    )
    s = result.stats
    assert s["blocks_dropped"] >= 3
    assert s["packets_lost"] == s["packets_concealed"] == 0
    assert s["buffer_depth_packets"] < 10 - s["blocks_dropped"] + 1.5
    assert s["packets_received"] == s["packets_sent"]


def test_an_opus_stream_through_a_buffer_that_grows_and_shrinks_plays_every_packet() -> None:
    """Late packets grow the adaptive buffer (inserted blocks), a calm spell shrinks it
    again (dropped blocks), on one Opus stream through the engine's one decoder path."""
    from nmp_peer.conceal.lpc import LpcConcealer
    from nmp_peer.proto.packetizer import Packetizer
    from nmp_peer.receiver.playout import PlayoutEngine

    settings = OpusSettings(bitrate=96_000)
    audio = music_like(8.0)
    n = len(audio) // BLOCK_FRAMES
    policy = LatencyPolicy(mode="adaptive", depth_packets=1, window_s=1.0)
    engine = PlayoutEngine(LpcConcealer(), PlayoutConfig(latency=policy))
    packetizer = Packetizer(OpusEncoderStream(1, settings), 1)
    rng = np.random.default_rng(3)
    # Packets 40..140 come up to 6 blocks late (in order); the rest on time.
    due = [k * BLOCK_FRAMES + (rng.uniform(0, 6 * BLOCK_FRAMES) if 40 <= k < 140 else 0.0) for k in range(n)]
    due = list(np.maximum.accumulate(due))
    packets = [packetizer.packetize(audio[k * BLOCK_FRAMES : (k + 1) * BLOCK_FRAMES]) for k in range(n)]
    sent = 0
    for tick in range(n + 40):
        now = float(tick * BLOCK_FRAMES)
        while sent < n and due[sent] <= now:
            engine.push(packets[sent], now)
            sent += 1
        engine.next_block(now)
    s = engine.stats
    assert s.blocks_inserted >= 1 and s.blocks_dropped >= 1, s
    assert s.packets_received == n and s.packets_lost == 0 and s.packets_malformed == 0
