"""Quality metrics against values known in advance."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from nmp_peer.lab import metrics
from nmp_peer.lab.metrics import (
    MetricUnavailable,
    lost_packet_lsd_db,
    lost_packet_snr_db,
    mrstft_distance,
    plcmos,
    visqol_audio,
)
from nmp_peer.netsim.loss import GilbertElliottLoss, challenge_like_trace

SR = 44_100
PACKET = 512


def harmonic(seconds: float, seed: int = 0, stationary: bool = False) -> np.ndarray:
    """A voiced, speech-like tone: 19 harmonics of a gliding pitch, a syllable envelope
    and a little noise (so every spectrum bin stays far above the LSD floor)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 180 * (1 + 0.05 * np.sin(2 * np.pi * 5 * t)) * np.where(t % 1.0 < 0.5, 1.0, 1.25)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum((0.5 / k) * np.sin(k * phase) for k in range(1, 20))
    env = 1.0 if stationary else 0.3 + 0.7 * np.abs(np.sin(3 * np.pi * t))
    return 0.3 * x * env + 0.003 * rng.standard_normal(t.size)


def packets(x: np.ndarray) -> int:
    return -(-x.size // PACKET)


def zero_fill(x: np.ndarray, lost: np.ndarray) -> np.ndarray:
    y = x.copy()
    for i in np.flatnonzero(lost):
        y[i * PACKET : (i + 1) * PACKET] = 0.0
    return y


@pytest.fixture(scope="module")
def clip() -> tuple[np.ndarray, np.ndarray]:
    x = harmonic(3.0)
    lost = challenge_like_trace(packets(x), seed=3, loss_rate=0.15)
    return x, lost


# --- lost-packet SNR -------------------------------------------------------------------


def test_snr_identical_is_inf(clip) -> None:
    x, lost = clip
    assert lost_packet_snr_db(x, x, lost) == float("inf")


@pytest.mark.parametrize(("gain", "expected_db"), [(0.5, 6.0206), (0.0, 0.0), (2.0, 0.0), (0.9, 20.0)])
def test_snr_scaled_copy(clip, gain: float, expected_db: float) -> None:
    x, lost = clip
    assert lost_packet_snr_db(x, gain * x, lost) == pytest.approx(expected_db, abs=1e-4)


def test_snr_zero_filled_is_zero(clip) -> None:
    x, lost = clip
    assert lost_packet_snr_db(x, zero_fill(x, lost), lost) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 30.0])
def test_snr_white_noise(snr_db: float) -> None:
    x = harmonic(3.0, stationary=True)
    lost = GilbertElliottLoss(0.3, 2.0, seed=1).sample(packets(x))
    noise = np.random.default_rng(2).standard_normal(x.size)
    noise *= np.sqrt(np.mean(x**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    assert lost_packet_snr_db(x, x + noise, lost) == pytest.approx(snr_db, abs=0.2)


def test_snr_ignores_received_packets(clip) -> None:
    x, lost = clip
    y = x.copy()
    y[np.repeat(~lost, PACKET)[: x.size]] = 0.0
    assert lost_packet_snr_db(x, y, lost) == float("inf")


def test_snr_edge_cases() -> None:
    x = harmonic(0.5)
    n = packets(x)
    assert np.isnan(lost_packet_snr_db(x, 0 * x, np.zeros(n, bool)))
    silent = np.zeros_like(x)
    assert lost_packet_snr_db(silent, x, np.ones(n, bool)) == float("-inf")
    # a partial last packet counts with the samples it has
    lost = np.zeros(n, bool)
    lost[-1] = True
    assert x.size % PACKET != 0
    assert lost_packet_snr_db(x, 0.5 * x, lost) == pytest.approx(6.0206, abs=1e-4)


def test_mask_length_and_shapes(clip) -> None:
    x, lost = clip
    longer = np.concatenate([lost, np.ones(50, bool)])
    assert lost_packet_snr_db(x, 0.5 * x, longer) == lost_packet_snr_db(x, 0.5 * x, lost)
    with pytest.raises(ValueError, match="loss mask"):
        lost_packet_snr_db(x, x, lost[:-1])
    with pytest.raises(ValueError, match="length"):
        lost_packet_snr_db(x, x[:-1], lost)
    assert lost_packet_snr_db(x[:, None], 0.5 * x[:, None], lost) == pytest.approx(6.0206, abs=1e-4)
    with pytest.raises(ValueError, match="mono"):
        lost_packet_snr_db(np.stack([x, x], 1), np.stack([x, x], 1), lost)


# --- lost-packet LSD ---------------------------------------------------------------------


def test_lsd_identical_is_zero(clip) -> None:
    x, lost = clip
    assert lost_packet_lsd_db(x, x, lost) == 0.0


@pytest.mark.parametrize("gain", [0.5, 2.0, 0.1])
def test_lsd_scaled_copy_is_exact(clip, gain: float) -> None:
    x, lost = clip
    assert lost_packet_lsd_db(x, gain * x, lost) == pytest.approx(abs(20 * np.log10(gain)), abs=1e-9)


def test_lsd_only_sees_frames_around_lost_packets() -> None:
    x = harmonic(2.0)
    lost = np.zeros(packets(x), bool)
    lost[[10, 40, 41]] = True
    y = 0.5 * x
    y[60 * PACKET : 100 * PACKET] = 0.0  # far from every lost packet's frame
    assert lost_packet_lsd_db(x, y, lost) == pytest.approx(6.0206, abs=1e-4)
    # the frame reaches 256 samples into each neighbour
    y = x.copy()
    y[11 * PACKET + 255] += 0.1
    assert lost_packet_lsd_db(x, y, lost) > 0.0
    y = x.copy()
    y[11 * PACKET + 256] += 0.1
    assert lost_packet_lsd_db(x, y, lost) == 0.0


def test_lsd_zero_filled_is_large_and_edges_work(clip) -> None:
    x, lost = clip
    assert lost_packet_lsd_db(x, zero_fill(x, lost), lost) > 20.0
    first_and_last = np.zeros(packets(x), bool)
    first_and_last[[0, -1]] = True
    assert lost_packet_lsd_db(x, 0.5 * x, first_and_last) == pytest.approx(6.0206, abs=1e-4)
    assert np.isnan(lost_packet_lsd_db(x, x, np.zeros(packets(x), bool)))


def test_lsd_errors_are_the_bins_behind_the_lsd(clip) -> None:
    """``lost_packet_db_errors``: one row of per-bin level errors per lost packet, whose
    per-packet RMS averages to the LSD; a scaled copy has the same error in every bin."""
    x, lost = clip
    noisy = x + 0.01 * np.random.default_rng(3).standard_normal(x.shape)
    errors = metrics.lost_packet_db_errors(x, noisy, lost)
    assert errors.shape == (int(lost.sum()), 513)
    assert np.mean(np.sqrt(np.mean(errors**2, axis=1))) == pytest.approx(lost_packet_lsd_db(x, noisy, lost))
    np.testing.assert_allclose(metrics.lost_packet_db_errors(x, 0.5 * x, lost), 20 * np.log10(0.5), atol=1e-9)
    assert metrics.lost_packet_db_errors(x, x, np.zeros(packets(x), bool)).shape == (0, 513)


# --- multi-resolution STFT -------------------------------------------------------------------


def test_mrstft_identical_is_zero(clip) -> None:
    x, _ = clip
    assert mrstft_distance(x, x) == 0.0


def test_mrstft_scaled_copy(clip) -> None:
    """Halving: spectral convergence 0.5 and |ln 2| in every bin, at every resolution."""
    x, _ = clip
    assert mrstft_distance(x, 0.5 * x) == pytest.approx(0.5 + np.log(2), abs=1e-9)


def test_mrstft_grows_with_damage(clip) -> None:
    x, lost = clip
    rng = np.random.default_rng(4)
    light = mrstft_distance(x, x + 0.001 * rng.standard_normal(x.size))
    heavy = mrstft_distance(x, x + 0.05 * rng.standard_normal(x.size))
    gaps = mrstft_distance(x, zero_fill(x, lost))
    assert 0 < light < heavy
    assert gaps > light


# --- ViSQOL and PLCMOS ---------------------------------------------------------------------------


@pytest.mark.slow
def test_visqol_clean_vs_degraded(clip) -> None:
    pytest.importorskip("visqol")
    x, lost = clip
    clean = visqol_audio(x, x)
    assert clean > 4.6
    degraded = zero_fill(x, lost) + 0.02 * np.random.default_rng(5).standard_normal(x.size)
    assert visqol_audio(x, degraded) < clean - 0.5


def test_plcmos_clean_vs_zero_filled(clip) -> None:
    pytest.importorskip("speechmos")
    x, lost = clip
    clean = plcmos(x)
    gaps = plcmos(zero_fill(x, lost))
    assert np.isfinite(clean) and np.isfinite(gaps)
    assert 1.0 <= gaps < clean - 1.0 and clean <= 5.5
    assert plcmos(x) == clean  # seeded rater embeddings: reproducible
    assert np.isfinite(plcmos(4 * x))  # beyond [-1, 1]: clipped, not an error


@pytest.mark.parametrize(
    ("module", "call"),
    [
        ("visqol", lambda x: visqol_audio(x, x)),
        ("speechmos.plcmos", lambda x: plcmos(x)),
    ],
)
def test_missing_package_raises_metric_unavailable(monkeypatch, module: str, call) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    metrics._visqol_api.cache_clear()
    metrics._plcmos_model.cache_clear()
    try:
        with pytest.raises(MetricUnavailable, match="nmp-peer\\[lab\\]"):
            call(harmonic(0.1))
    finally:
        metrics._visqol_api.cache_clear()
        metrics._plcmos_model.cache_clear()
