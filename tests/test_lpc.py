"""LpcConcealer: contract, numerical stability, and that it keeps level where repetition fails."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, sosfilt

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.conceal import make_concealer
from nmp_peer.conceal.lpc import LpcConcealer
from nmp_peer.conceal.simple import RepeatConcealer

CTX = 3584
PRED = 1024


@pytest.fixture(scope="module")
def lpc() -> LpcConcealer:
    return LpcConcealer()


def _split(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """History (CTX, 1) float32 and the true continuation (PRED,) of a 1-D signal."""
    sig = np.asarray(signal, dtype=np.float32)
    return sig[:CTX, None].copy(), sig[CTX : CTX + PRED].astype(np.float64)


def _snr_db(truth: np.ndarray, estimate: np.ndarray) -> float:
    err = np.sum((truth - estimate) ** 2)
    return float(10 * np.log10(np.sum(truth**2) / max(err, 1e-30)))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


def _time(n: int = CTX + PRED) -> np.ndarray:
    return np.arange(n) / SAMPLE_RATE


def _harmonic(f0: float, n_harmonics: int, t: np.ndarray, rng: np.random.Generator, vibrato: float = 0.0) -> np.ndarray:
    """A harmonic tone with 1/k partials; ``vibrato`` is the relative depth of a 5 Hz vibrato."""
    phase = 2 * np.pi * f0 * (t - vibrato / (2 * np.pi * 5.0) * np.cos(2 * np.pi * 5.0 * t))
    return sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, n_harmonics + 1))


def test_registered_with_issue_defaults():
    c = make_concealer("lpc")
    assert isinstance(c, LpcConcealer)
    assert (c.order, c.context_samples, c.predict_samples) == (256, CTX, PRED)
    assert 0 < c.recovery_fade_samples <= PRED - BLOCK_FRAMES


@pytest.mark.parametrize("channels", [1, 2])
def test_shape_and_dtype(lpc, channels):
    rng = np.random.default_rng(channels)
    history = (0.1 * rng.standard_normal((CTX, channels))).astype(np.float32)
    out = lpc.conceal(history, 0)
    assert out.shape == (PRED, channels)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))


def test_stereo_channels_are_concealed_alike_and_independently(lpc):
    rng = np.random.default_rng(0)
    t = _time(CTX)
    left = 0.4 * np.sin(2 * np.pi * 330 * t) + 0.01 * rng.standard_normal(CTX)
    right = 0.2 * rng.standard_normal(CTX)
    stereo = np.stack([left, right], axis=1).astype(np.float32)
    out = lpc.conceal(stereo, 0)
    np.testing.assert_array_equal(out[:, 0], lpc.conceal(stereo[:, :1], 0)[:, 0])
    np.testing.assert_array_equal(out[:, 1], lpc.conceal(stereo[:, 1:], 0)[:, 0])
    swapped = lpc.conceal(stereo[:, ::-1].copy(), 0)
    np.testing.assert_array_equal(swapped, out[:, ::-1])


def test_silence_gives_silence(lpc):
    out = lpc.conceal(np.zeros((CTX, 2), np.float32), 0)
    assert np.all(np.isfinite(out))
    assert np.max(np.abs(out)) <= 1e-7


@pytest.mark.parametrize("level", [0.5, 1.0, -0.3])
def test_dc_stays_bounded_and_keeps_its_level(lpc, level):
    history, _ = _split(np.full(CTX + PRED, level))
    out = lpc.conceal(history, 0)[:, 0]
    assert np.all(np.isfinite(out))
    assert np.max(np.abs(out)) <= 1.0
    assert 0.5 * abs(level) <= _rms(out) <= 1.5 * abs(level)


@pytest.mark.parametrize("freq", [55.0, 440.0, 1000.0, 3000.0, 8000.0, 15000.0])
def test_pure_tone_is_predicted_over_the_whole_horizon(lpc, freq):
    phase = np.random.default_rng(int(freq)).uniform(0, 2 * np.pi)
    history, truth = _split(0.5 * np.sin(2 * np.pi * freq * _time() + phase))
    out = lpc.conceal(history, 0)[:, 0]
    assert _snr_db(truth, out) >= 30.0


def test_full_scale_clipped_square_stays_in_range(lpc):
    t = _time()
    wave = np.clip(3.0 * np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 660 * t), -1.0, 1.0)
    history, truth = _split(wave)
    out = lpc.conceal(history, 0)[:, 0]
    assert np.all(np.isfinite(out))
    assert np.max(np.abs(out)) <= 1.0
    assert 0.5 <= _rms(out) / _rms(truth) <= 1.5


@pytest.mark.parametrize("std", [0.05, 0.3, 1.0])
def test_white_noise_keeps_a_bounded_level(lpc, std):
    rng = np.random.default_rng(7)
    history, _ = _split(np.clip(std * rng.standard_normal(CTX + PRED), -1, 1))
    out = lpc.conceal(history, 0)[:, 0]
    assert np.all(np.isfinite(out))
    assert np.max(np.abs(out)) <= 1.0
    ratio = _rms(out) / _rms(history[-2 * BLOCK_FRAMES :])
    assert 0.5 <= ratio <= 2.0


def test_tiny_signal_is_concealed_like_a_loud_one(lpc):
    rng = np.random.default_rng(3)
    t = _time(CTX)
    loud = 0.5 * np.sin(2 * np.pi * 300 * t) + 0.05 * rng.standard_normal(CTX)
    loud = loud.astype(np.float32)[:, None]
    tiny = loud * np.float32(1e-6)
    out_loud = lpc.conceal(loud, 0).astype(np.float64)
    out_tiny = lpc.conceal(tiny, 0).astype(np.float64)
    assert np.all(np.isfinite(out_tiny))
    assert _rms(out_tiny) > 0
    np.testing.assert_allclose(out_tiny * 1e6, out_loud, atol=1e-4 * np.max(np.abs(out_loud)))


def test_non_finite_history_gives_finite_output(lpc):
    rng = np.random.default_rng(5)
    history = (0.2 * rng.standard_normal((CTX, 1))).astype(np.float32)
    history[100, 0] = np.nan
    history[-3, 0] = np.inf
    out = lpc.conceal(history, 0)
    assert np.all(np.isfinite(out))
    assert np.max(np.abs(out)) <= 1.0


def test_output_depends_only_on_the_history():
    rng = np.random.default_rng(11)
    sig = 0.2 * _harmonic(147.0, 10, _time(), rng) + 0.01 * rng.standard_normal(CTX + PRED)
    history, _ = _split(sig)
    kept = history.copy()
    first = LpcConcealer()
    reference = first.conceal(history, 0)
    np.testing.assert_array_equal(history, kept)  # the argument is not modified
    other = (0.5 * rng.standard_normal((CTX, 1))).astype(np.float32)
    first.conceal(other, 0)  # no state carried over
    np.testing.assert_array_equal(first.conceal(history, 0), reference)
    np.testing.assert_array_equal(LpcConcealer().conceal(history, 0), reference)


def test_harmonic_signal_keeps_its_level(lpc):
    rng = np.random.default_rng(2)
    sig = 0.15 * _harmonic(196.0, 12, _time(), rng, vibrato=0.004)
    sig += 0.003 * rng.standard_normal(CTX + PRED)
    history, truth = _split(sig)
    out = lpc.conceal(history, 0)[:, 0].astype(np.float64)
    for part in (slice(0, BLOCK_FRAMES), slice(0, PRED)):
        assert 0.5 <= np.sum(out[part] ** 2) / np.sum(truth[part] ** 2) <= 2.0


def test_high_band_does_not_vanish(lpc):
    """Plain LPC's free response loses the unpredictable high band; the excitation keeps it."""
    rng = np.random.default_rng(4)
    hiss_filter = butter(4, 4000, "highpass", fs=SAMPLE_RATE, output="sos")
    hiss = sosfilt(hiss_filter, rng.standard_normal(CTX + PRED))
    sig = 0.2 * _harmonic(220.0, 6, _time(), rng) + 0.05 * hiss
    history, truth = _split(sig)
    out = lpc.conceal(history, 0)[:, 0].astype(np.float64)
    high = butter(6, 5000, "highpass", fs=SAMPLE_RATE, output="sos")
    e_out = np.sum(sosfilt(high, out)[128:BLOCK_FRAMES] ** 2)
    e_true = np.sum(sosfilt(high, truth)[128:BLOCK_FRAMES] ** 2)
    assert 0.4 <= e_out / e_true <= 2.5


def test_beats_repetition_on_a_chord_with_vibrato(lpc):
    """A sustained chord with vibrato: prediction must follow the partials, repetition cannot."""
    rng = np.random.default_rng(8)
    n = CTX + PRED + 8 * 997
    t = _time(n)
    chord = sum(_harmonic(f, 6, t, rng, vibrato=0.005) for f in (261.6, 329.6, 392.0)) * 0.1
    repeat = RepeatConcealer()
    snr_lpc, snr_rep = [], []
    for k in range(8):
        history, truth = _split(chord[k * 997 :])
        block = truth[:BLOCK_FRAMES]
        snr_lpc.append(_snr_db(block, lpc.conceal(history, 0)[:BLOCK_FRAMES, 0]))
        repeated = repeat.conceal(history[-repeat.context_samples :], 0)[:BLOCK_FRAMES, 0]
        snr_rep.append(_snr_db(block, repeated))
    assert np.mean(snr_lpc) >= np.mean(snr_rep) + 6.0
    assert np.min(snr_lpc) > 3.0


@pytest.mark.parametrize("kind", ["noise", "chord", "square"])
def test_long_burst_fed_back_stays_bounded(lpc, kind):
    """Engine semantics: each lost packet is concealed from a history that holds the earlier
    concealment. Over 16 packets the level must neither explode nor die."""
    rng = np.random.default_rng(9)
    t = _time(CTX)
    if kind == "noise":
        played = 0.3 * rng.standard_normal(CTX)
    elif kind == "chord":
        played = 0.1 * sum(_harmonic(f, 8, t, rng, vibrato=0.005) for f in (110.0, 138.6, 164.8))
    else:
        played = np.clip(2.0 * np.sin(2 * np.pi * 98 * t), -1, 1)
    played = played.astype(np.float32)
    ref = _rms(played[-2 * BLOCK_FRAMES :])
    for burst_index in range(16):
        out = lpc.conceal(played[-CTX:, None], burst_index)
        assert np.all(np.isfinite(out)) and np.max(np.abs(out)) <= 1.0
        block = out[:BLOCK_FRAMES, 0]
        assert 0.3 * ref <= _rms(block) <= 2.5 * ref
        played = np.concatenate([played, block])


def test_inconsistent_configuration_is_rejected():
    with pytest.raises(ValueError):
        LpcConcealer(context_samples=1024)
    with pytest.raises(ValueError):
        LpcConcealer(split_taps=128)


def test_a_note_that_stopped_is_not_brought_back(lpc):
    rng = np.random.default_rng(12)
    t = _time(CTX)
    note = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(CTX)
    note[-800:] = 0.0
    out = lpc.conceal(note.astype(np.float32)[:, None], 0)
    assert _rms(out) <= 1e-3 * _rms(note[:-800])


def test_a_fast_decay_is_followed_not_held(lpc):
    rng = np.random.default_rng(13)
    n = np.arange(CTX + PRED)
    tone = 0.8 * np.sin(2 * np.pi * 220 * n / SAMPLE_RATE) + 0.1 * rng.standard_normal(len(n))
    sig = tone * np.exp(-n / 600.0)  # -7.4 dB per packet
    history, truth = _split(sig)
    out = lpc.conceal(history, 0)[:, 0]
    last = _rms(history[-BLOCK_FRAMES:])
    assert _rms(out[:BLOCK_FRAMES]) <= 0.8 * last
    assert _rms(out[BLOCK_FRAMES:]) <= _rms(out[:BLOCK_FRAMES])
