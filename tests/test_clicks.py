"""The click detector of the scenario analysis: a margin from the signal itself, both ways.

A click is a sample step far steeper than every step of the audio within a block of it
(``clicks.find_clicks``, threshold ``CLICK_RATIO``). Clean music, and music whose
losses were concealed with smooth seams, stay well below the threshold; a seam that
cuts to silence, or a splice without a crossfade, lies well above it.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.netsim.impair import Impairment
from nmp_peer.netsim.loss import BernoulliLoss, GilbertElliottLoss
from nmp_peer.scenarios.alignment import track_alignment
from nmp_peer.scenarios.clicks import CLICK_RATIO, _neighbourhood_max, find_clicks
from nmp_peer.synth.signals import synthetic_music

CLEAN_BELOW = CLICK_RATIO / 1.5
"""Clean or smoothly concealed music: its steepest step at most this many times its neighbourhood's."""
CLICK_ABOVE = 2 * CLICK_RATIO
"""A real discontinuity: at least this many times."""


def _clip(seed: int) -> np.ndarray:
    return synthetic_music(4.0, seed=seed)[:, 0].astype(np.float64)


def test_the_neighbourhood_is_a_block_either_side_without_the_step_itself() -> None:
    steps = np.random.default_rng(0).random(3000)
    got = _neighbourhood_max(steps, 64, 2)
    for n in (0, 1, 3, 70, 1500, 2998, 2999):
        around = [steps[k] for k in range(max(0, n - 64), min(len(steps), n + 65)) if abs(k - n) > 2]
        assert got[n] == max(around)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clean_music_has_a_clear_margin_below_the_threshold(seed: int) -> None:
    clicks = find_clicks(_clip(seed))
    assert len(clicks.positions) == 0 and 0.9 < clicks.max_ratio < CLEAN_BELOW, clicks.max_ratio


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_splice_without_a_crossfade_is_a_click_with_a_clear_margin(seed: int) -> None:
    clip = _clip(seed)
    # 300 samples cut out without a crossfade, where the cut jumps by at least a fifth of full scale.
    jumps = np.abs(clip[20_300:40_300] - clip[19_999:39_999])
    n = 20_000 + int(np.flatnonzero(jumps > 0.2)[0])
    spliced = np.concatenate([clip[:n], clip[n + 300 :]])
    clicks = find_clicks(spliced)
    assert list(clicks.positions) == [n], clicks
    assert clicks.ratios[0] > CLICK_ABOVE and clicks.max_ratio == clicks.ratios[0]


def test_a_step_the_clip_itself_has_is_not_the_receivers_click() -> None:
    """The clip starts abruptly mid-waveform; played back exactly it is the clip's own step."""
    clip = _clip(1)
    clip[:5000] = 0.0
    clip[5000:] += 0.3  # and a DC step where it starts: any onset of the clip, exactly reproduced
    out = np.concatenate([np.zeros(7 * BLOCK_FRAMES + 8), clip])
    out = out[: len(out) // BLOCK_FRAMES * BLOCK_FRAMES]
    assert list(find_clicks(out).positions) == [7 * BLOCK_FRAMES + 8 + 5000]  # without the clip: a click
    assert len(find_clicks(out, clip, track_alignment(out, clip)).positions) == 0


@pytest.mark.parametrize(
    "loss", [BernoulliLoss(0.1, seed=2), GilbertElliottLoss(0.05, 2.0, seed=2)], ids=["bernoulli", "gilbert"]
)
def test_smooth_concealment_is_clean_and_cutting_to_silence_clicks(loss) -> None:
    """The real playout engine (virtual clock): repetition with its seam correction and LPC
    join the music; the zeros concealer drops to silence mid-waveform."""
    from nmp_peer.netsim.loopback import run_loopback

    clip = synthetic_music(4.0, seed=2)
    ratios = {}
    for concealer in ("repeat", "lpc", "zeros"):
        result = asyncio.run(run_loopback(clip, Impairment(loss, seed=2), concealer=concealer))
        assert result.stats["packets_lost"] > 10
        out = result.output[:, 0].astype(np.float64)
        clicks = find_clicks(out)
        ratios[concealer] = (clicks.max_ratio, len(clicks.positions))
    assert ratios["repeat"][0] < CLEAN_BELOW and ratios["lpc"][0] < CLEAN_BELOW, ratios
    assert ratios["zeros"][0] > CLICK_ABOVE and ratios["zeros"][1] >= 3, ratios


@pytest.mark.parametrize("concealer", ["lpc", "repeat", "gan"])
def test_a_two_second_outage_fades_to_silence_click_free_and_recovers(concealer: str) -> None:
    """A 220 Hz tone, a 2-s gap, the tone again: the engine conceals for the concealer's
    own long-burst policy, fades out, stays silent, and plays the packets exactly again
    once they come back (after the one recovery crossfade).

    Each concealment continues the burst's unfaded concealment, and only its output is
    faded: a prediction from the faded history stepped down at every block seam."""
    from nmp_peer.conceal import make_concealer
    from nmp_peer.proto.codec import Pcm16Codec
    from nmp_peer.proto.packetizer import Packetizer
    from nmp_peer.receiver.latency import LatencyPolicy
    from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine

    engine = PlayoutEngine(
        make_concealer(concealer), PlayoutConfig(latency=LatencyPolicy(mode="fixed", depth_packets=2))
    )
    before, gap, after = 100, round(2.0 * SAMPLE_RATE / BLOCK_FRAMES), 40
    total = before + gap + after
    packetizer = Packetizer(Pcm16Codec(), 1)
    t = np.arange(total * BLOCK_FRAMES) / SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None]
    sent = Pcm16Codec().decode(Pcm16Codec().encode(tone), 1)  # what the packets carry (16 bits)
    out = []
    for k in range(total):
        packet = packetizer.packetize(tone[k * BLOCK_FRAMES : (k + 1) * BLOCK_FRAMES])
        if not before <= k < before + gap:
            engine.push(packet, float(k * BLOCK_FRAMES))
        out.append(engine.next_block(float(k * BLOCK_FRAMES))[:, 0])
    y = np.concatenate(out).astype(np.float64)
    b = BLOCK_FRAMES
    # the playout delay: the one lag at which the output before the gap is the packets' audio
    delay = next(d for d in range(4 * b) if np.array_equal(y[4 * b : before * b], sent[4 * b - d : before * b - d, 0]))
    policy_ms = engine.fade_after_ms + engine.fade_ms
    quiet_from = (before + 1) * b + delay + round(policy_ms * SAMPLE_RATE / 1000)
    assert policy_ms <= 1500.0  # the cap: well inside the 2 s
    assert quiet_from < (before + gap) * b + delay - 10 * b
    assert np.abs(y[quiet_from : (before + gap) * b + delay]).max() == 0.0  # faded out, silent
    clicks = find_clicks(y)
    assert len(clicks.positions) == 0, (clicks.positions, clicks.ratios)
    back = (before + gap + 1) * b + delay  # after the first packet back (crossfaded in): the same delay, exact
    np.testing.assert_array_equal(y[back:], sent[back - delay : len(y) - delay, 0])
