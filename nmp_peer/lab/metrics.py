"""Quality metrics for concealed audio, as plain functions of numpy arrays.

Signals are mono (1-D, or ``(n, 1)``), float, at 44.1 kHz unless ``sr`` says otherwise;
``lost`` is the per-packet loss mask (``True`` = lost) for packets of
``packet_samples`` (512) samples. A mask longer than the signal's packet count is
cut to it (traces often outlast clips); a shorter one is an error.

- ``lost_packet_snr_db`` and ``lost_packet_lsd_db`` judge only the lost packets, the
  only place where concealers differ (the challenge's MSE/SDR and LSD on lost packets).
- ``burst_groups`` splits a loss mask by the length of the burst each lost packet
  belongs to, so the per-packet metrics can be read per burst length.
- ``mrstft_distance`` is the multi-resolution STFT loss that PARCnet and bin2bin train on.
- ``visqol_audio`` (visqol-python) and ``plcmos`` (speechmos) wrap external models and
  raise ``MetricUnavailable`` when their package is missing. Both ship their models
  and run offline. PLCMOS is a speech model run at 16 kHz: a weak fit for music.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import soxr

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.netsim.loss import packet_burst_lengths

LSD_FFT_SIZE = 1024
LSD_FLOOR = 1e-5
"""Magnitude floor of the LSD spectra: -100 dB re a full-scale sample, below the 16-bit
quantisation floor of a 1024-point Hann spectrum (about -75 dB)."""

MRSTFT_FFT_SIZES = (512, 1024, 2048)
MRSTFT_EPS = 1e-7
VISQOL_SAMPLE_RATE = 48_000
PLCMOS_SAMPLE_RATE = 16_000

BURST_GROUPS: tuple[tuple[str, int, float], ...] = (
    ("1", 1, 1),
    ("2-3", 2, 3),
    ("4-6", 4, 6),
    ("7-16", 7, 16),
    ("17-50", 17, 50),
    (">50", 51, float("inf")),
)
"""Burst-length groups (label, first, last packet count): the challenge's short bursts, its
long ones, the rare outages of up to 0.6 s, and anything longer."""

PER_PACKET_METRICS = ("snr", "lsd")
"""The metrics that judge lost packets only, and so can be taken per burst-length group."""


class MetricUnavailable(RuntimeError):
    """A metric whose package or model cannot be used here; the message says why."""


def _mono(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be mono (1-D or (n, 1)), got shape {arr.shape}")
    return arr


def _pair(ref: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, t = _mono(ref, "ref"), _mono(test, "test")
    if r.shape != t.shape:
        raise ValueError(f"ref and test differ in length: {r.size} vs {t.size} samples")
    return r, t


def _lost_packets(lost: np.ndarray, n_samples: int, packet_samples: int) -> np.ndarray:
    """Indices of the lost packets that overlap the signal."""
    mask = np.asarray(lost, dtype=bool).ravel()
    n_packets = -(-n_samples // packet_samples)
    if mask.size < n_packets:
        raise ValueError(f"loss mask has {mask.size} packets, the signal {n_packets} of {packet_samples} samples")
    return np.flatnonzero(mask[:n_packets])


def burst_groups(lost: np.ndarray) -> dict[str, np.ndarray]:
    """The loss mask split by burst length: per ``BURST_GROUPS`` label, the mask of the lost
    packets whose burst has that length. The four short groups and 17-50 are always there
    (a mask with no packet where the pattern has no such burst); ``>50`` only if present."""
    lengths = packet_burst_lengths(lost)
    groups = {label: (lengths >= lo) & (lengths <= hi) for label, lo, hi in BURST_GROUPS}
    if not groups[">50"].any():
        del groups[">50"]
    return groups


def _snr_db(signal_energy: float, error_energy: float) -> float:
    if error_energy == 0.0:
        return float("inf")
    if signal_energy == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(signal_energy / error_energy))


def lost_packet_snr_db(
    ref: np.ndarray,
    test: np.ndarray,
    lost: np.ndarray,
    packet_samples: int = BLOCK_FRAMES,
) -> float:
    """SNR in dB over the samples of the lost packets only, taken together.

    ``10 log10(sum ref^2 / sum (ref - test)^2)`` over the concatenated lost packets (a
    last partial packet counts with what it has). ``inf`` when they match exactly,
    ``-inf`` when the reference is silent there but the test is not, ``nan`` when no
    packet is lost. Zero-filling scores exactly 0 dB.
    """
    r, t = _pair(ref, test)
    packets = _lost_packets(lost, r.size, packet_samples)
    if packets.size == 0:
        return float("nan")
    idx = (packets[:, None] * packet_samples + np.arange(packet_samples)).ravel()
    idx = idx[idx < r.size]
    return _snr_db(float(np.sum(r[idx] ** 2)), float(np.sum((r[idx] - t[idx]) ** 2)))


def lost_packet_lsd_db(
    ref: np.ndarray,
    test: np.ndarray,
    lost: np.ndarray,
    packet_samples: int = BLOCK_FRAMES,
    n_fft: int = LSD_FFT_SIZE,
    floor: float = LSD_FLOOR,
) -> float:
    """Log-spectral distance in dB on the lost packets only, averaged over them.

    For each lost packet, one frame of ``n_fft`` (1024) samples centred on the packet
    (256 samples of each neighbour with 512-sample packets, zeros beyond the signal's
    ends), Hann window (periodic), ``n_fft``-point real FFT, all ``n_fft / 2 + 1``
    bins: ``LSD = sqrt(mean_k (20 log10 max(|X_k|, f) - 20 log10 max(|Y_k|, f))^2)``
    with ``X`` from ``ref``, ``Y`` from ``test`` and the floor ``f = 1e-5``. The frame
    takes in the packet's edges, where a concealment's discontinuities lie. The result
    is the mean of the per-packet LSDs; ``nan`` when no packet is lost. A copy scaled
    by ``g`` scores exactly ``|20 log10 g|`` wherever both spectra clear the floor (a
    floor rather than an added epsilon keeps that exact). A frame of digital silence
    (inside a long zero-filled burst) sits at -100 dB, so its LSD is set by the floor:
    compare such numbers only under the same definition.
    """
    diff = lost_packet_db_errors(ref, test, lost, packet_samples, n_fft, floor)
    if diff.size == 0:
        return float("nan")
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=1))))


def lost_packet_db_errors(
    ref: np.ndarray,
    test: np.ndarray,
    lost: np.ndarray,
    packet_samples: int = BLOCK_FRAMES,
    n_fft: int = LSD_FFT_SIZE,
    floor: float = LSD_FLOOR,
) -> np.ndarray:
    """The per-bin level errors behind ``lost_packet_lsd_db``: ``(lost packets, n_fft / 2 + 1)``
    of ``20 log10 max(|Y_k|, f) - 20 log10 max(|X_k|, f)`` (test minus reference), on the
    same frames. Their mean over packets is the spectral bias; what remains is the
    frame-to-frame fluctuation that only a waveform-accurate prediction removes."""
    r, t = _pair(ref, test)
    packets = _lost_packets(lost, r.size, packet_samples)
    if n_fft < packet_samples:
        raise ValueError(f"n_fft {n_fft} is shorter than a packet ({packet_samples} samples)")
    if packets.size == 0:
        return np.zeros((0, n_fft // 2 + 1))
    pad = n_fft
    rp, tp = np.pad(r, pad), np.pad(t, pad)
    starts = packets * packet_samples + (packet_samples - n_fft) // 2 + pad
    idx = starts[:, None] + np.arange(n_fft)
    window = _hann(n_fft)
    db_ref = 20.0 * np.log10(np.maximum(np.abs(np.fft.rfft(rp[idx] * window, axis=1)), floor))
    db_test = 20.0 * np.log10(np.maximum(np.abs(np.fft.rfft(tp[idx] * window, axis=1)), floor))
    return db_test - db_ref


def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _stft_magnitude(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| with a periodic Hann window, frames centred on multiples of ``hop``
    (zero padding of ``n_fft / 2`` on both sides), shape (1 + len // hop, bins)."""
    xp = np.pad(x, n_fft // 2)
    n_frames = 1 + (xp.size - n_fft) // hop
    idx = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)
    return np.abs(np.fft.rfft(xp[idx] * _hann(n_fft), axis=1))


def mrstft_distance(
    ref: np.ndarray,
    test: np.ndarray,
    fft_sizes: tuple[int, ...] = MRSTFT_FFT_SIZES,
) -> float:
    """Multi-resolution STFT distance, mean over resolutions of SC + log-magnitude L1.

    For each FFT size N (512, 1024, 2048), hop N / 4, periodic Hann window:
    spectral convergence ``||S_ref - S_test||_F / ||S_ref||_F`` plus
    ``mean |ln max(S_ref, 1e-7) - ln max(S_test, 1e-7)|`` (the Parallel WaveGAN and
    PARCnet loss, natural log). 0 for identical signals; a silent reference makes the
    spectral convergence ``inf`` unless the test is silent too.
    """
    r, t = _pair(ref, test)
    total = 0.0
    for n_fft in fft_sizes:
        s_ref = _stft_magnitude(r, n_fft, n_fft // 4)
        s_test = _stft_magnitude(t, n_fft, n_fft // 4)
        # Frobenius norms as numpy's pairwise sums, not np.linalg.norm: its BLAS dot adds in
        # an order that depends on the BLAS thread count, so the same job run in a worker with
        # another count (a Dask worker's is 1) differed in the last bit.
        diff = float(np.sqrt(np.sum(np.square(s_ref - s_test))))
        norm = float(np.sqrt(np.sum(np.square(s_ref))))
        sc = 0.0 if diff == 0.0 else (diff / norm if norm > 0.0 else float("inf"))
        log_l1 = float(np.mean(np.abs(np.log(np.maximum(s_ref, MRSTFT_EPS)) - np.log(np.maximum(s_test, MRSTFT_EPS)))))
        total += sc + log_l1
    return total / len(fft_sizes)


@functools.lru_cache(maxsize=1)
def _visqol_api() -> Any:
    try:
        from visqol import VisqolApi
    except ImportError as e:
        raise MetricUnavailable(f"ViSQOL needs the visqol-python package (pip install 'nmp-peer[lab]'): {e}") from e
    api = VisqolApi()
    api.create(mode="audio")
    return api


def visqol_audio(ref: np.ndarray, test: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """ViSQOL v3 audio mode MOS-LQO (about 1 to 4.75; identical signals score ~4.73).

    Full-reference, run at 48 kHz: both signals are resampled with soxr first. Pure
    Python (visqol-python) and slow: about 1.3 s per second of audio on one core.
    """
    r, t = _pair(ref, test)
    api = _visqol_api()
    if sr != VISQOL_SAMPLE_RATE:
        r = soxr.resample(r, sr, VISQOL_SAMPLE_RATE, quality="HQ")
        t = soxr.resample(t, sr, VISQOL_SAMPLE_RATE, quality="HQ")
    return float(api.measure_from_arrays(r, t, VISQOL_SAMPLE_RATE).moslqo)


@functools.lru_cache(maxsize=1)
def _plcmos_model() -> Any:
    try:
        from speechmos.plcmos import PLCMOS
    except ImportError as e:
        raise MetricUnavailable(f"PLCMOS needs the speechmos package (pip install 'nmp-peer[lab]'): {e}") from e
    return PLCMOS()


def plcmos(test: np.ndarray, sr: int = SAMPLE_RATE, rounds: int = 15, seed: int = 0) -> float:
    """PLCMOS v2 (Microsoft PLC challenge), non-intrusive, about 1 to 5.

    The test signal alone, resampled to 16 kHz with soxr and clipped to [-1, 1]. The
    model averages ``rounds`` runs with random "rater" embeddings; speechmos draws them
    from numpy's global generator, so this function runs the same ONNX model itself
    with embeddings from ``seed``, which makes the score reproducible. Trained on
    speech: read it as a rough indicator for music.
    """
    x = _mono(test, "test")
    model = _plcmos_model()
    if sr != PLCMOS_SAMPLE_RATE:
        x = soxr.resample(x, sr, PLCMOS_SAMPLE_RATE, quality="HQ")
    x = np.clip(x, -1.0, 1.0)
    features = np.asarray(model.stft_transform(x), np.float32)[np.newaxis, np.newaxis, ...]
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(rounds):
        embed = rng.standard_normal((1, 64)).astype(np.float32)
        out = model.session.run(None, {"degraded_audio": features, "rater_embed": embed})[0]
        scores.append(float(np.asarray(out).ravel()[0]))
    return float(np.mean(scores))
