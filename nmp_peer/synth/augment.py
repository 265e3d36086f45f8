"""Cheap, recorded augmentations: gain, synthetic room reverb, EQ tilt and stem mixing.

SoundFont renders are dry and all share a handful of sample sets; a concealer trained
on them alone would learn that clean sound. These transforms widen the material at
little cost: a decaying-noise impulse response stands in for a room, a pair of
shelving biquads for a microphone or a mix that is darker or brighter, and mixing
separately rendered stems (from different SoundFonts) for an ensemble. Every
parameter is drawn into an ``Augmentation`` that the manifest records, so a clip can
be reproduced and a report can group by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import signal

from nmp_peer import SAMPLE_RATE


@dataclass(frozen=True)
class Augmentation:
    """Parameters of one augmentation chain; the defaults change nothing."""

    gain_db: float = 0.0
    tilt_db: float = 0.0
    """Treble minus bass change in dB about ``pivot_hz``: positive is brighter."""
    pivot_hz: float = 1000.0
    reverb_rt60_s: float = 0.0
    """Time for the synthetic room's tail to fall by 60 dB; 0 means no reverb."""
    reverb_wet: float = 0.0
    reverb_seed: int = 0

    def describe(self) -> dict[str, float | int]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def random_augmentation(rng: np.random.Generator, strength: float = 1.0) -> Augmentation:
    """Draw an augmentation; ``strength`` 0 gives the identity, 1 the full ranges."""
    has_reverb = rng.random() < 0.6 * strength
    return Augmentation(
        gain_db=float(rng.uniform(-6.0, 6.0) * strength),
        tilt_db=float(rng.uniform(-6.0, 6.0) * strength),
        pivot_hz=float(math.exp(rng.uniform(math.log(400.0), math.log(3000.0)))),
        reverb_rt60_s=float(rng.uniform(0.2, 2.0)) if has_reverb else 0.0,
        reverb_wet=float(rng.uniform(0.05, 0.4) * strength) if has_reverb else 0.0,
        reverb_seed=int(rng.integers(0, 2**31 - 1)),
    )


def apply_augmentation(audio: np.ndarray, aug: Augmentation, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Apply EQ, reverb and gain in that order; the result stays within [-1, 1].

    Gain is applied last and the peak is then limited by scaling (not clipping), so a
    positive gain on a loud clip raises it only as far as full scale.
    """
    out = np.asarray(audio, dtype=np.float32)
    if aug.tilt_db != 0.0:
        out = eq_tilt(out, aug.tilt_db, aug.pivot_hz, sample_rate)
    if aug.reverb_rt60_s > 0.0 and aug.reverb_wet > 0.0:
        ir = decaying_noise_ir(aug.reverb_rt60_s, np.random.default_rng(aug.reverb_seed), sample_rate)
        out = add_reverb(out, ir, aug.reverb_wet)
    return limit_peak(apply_gain(out, aug.gain_db))


def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale by ``gain_db``; linear, so it may leave [-1, 1] (see ``limit_peak``)."""
    return (np.asarray(audio, dtype=np.float32) * np.float32(10 ** (gain_db / 20))).astype(np.float32)


def limit_peak(audio: np.ndarray, peak: float = 0.99) -> np.ndarray:
    """Scale the whole signal down if its peak exceeds ``peak``; never clips."""
    audio = np.nan_to_num(np.asarray(audio, dtype=np.float32))
    current = float(np.max(np.abs(audio))) if audio.size else 0.0
    if current > peak:
        audio = audio * np.float32(peak / current)
    return audio.astype(np.float32)


def decaying_noise_ir(
    rt60_s: float,
    rng: np.random.Generator,
    sample_rate: int = SAMPLE_RATE,
    predelay_ms: float = 8.0,
) -> np.ndarray:
    """Return a unit-energy room impulse response: sparse early echoes, then a noise tail.

    The tail decays by 60 dB over ``rt60_s`` and is low-passed more as it goes on
    (two noise layers crossfaded), because real rooms absorb treble faster than bass.
    The direct sound is left to the dry path.
    """
    length = max(1, int(rt60_s * sample_rate))
    t = np.arange(length) / sample_rate
    envelope = 10.0 ** (-3.0 * t / rt60_s)
    bright = rng.standard_normal(length)
    dark = signal.sosfilt(signal.butter(2, 3000.0, fs=sample_rate, output="sos"), rng.standard_normal(length))
    dark *= np.std(bright) / max(float(np.std(dark)), 1e-12)
    mix = np.minimum(1.0, t / max(rt60_s / 3, 1e-3))
    tail = envelope * ((1 - mix) * bright + mix * dark)
    for _ in range(6):
        tap = int(rng.uniform(0.003, 0.05) * sample_rate)
        if tap < length:
            tail[tap] += rng.uniform(-1.5, 1.5)
    predelay = int(predelay_ms * sample_rate / 1000)
    ir = np.concatenate([np.zeros(predelay), tail])
    return (ir / np.sqrt(np.sum(ir**2))).astype(np.float32)


def add_reverb(audio: np.ndarray, ir: np.ndarray, wet: float) -> np.ndarray:
    """Mix the dry signal with its convolution by ``ir``; the length is unchanged.

    The tail that would ring past the end is dropped, as when a clip is cut from a
    longer recording in a room.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        return audio
    reverberant = signal.oaconvolve(audio, ir, mode="full")[: audio.shape[0]]
    return ((1.0 - wet) * audio + wet * reverberant).astype(np.float32)


def _shelf_sos(kind: str, gain_db: float, freq_hz: float, sample_rate: int) -> np.ndarray:
    """RBJ audio-EQ-cookbook shelving biquad (slope 1) as one second-order section."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * freq_hz / sample_rate
    cos_w0, alpha = math.cos(w0), math.sin(w0) / 2 * math.sqrt(2)
    sqrt_a = 2 * math.sqrt(a) * alpha
    if kind == "low":
        b = [
            a * ((a + 1) - (a - 1) * cos_w0 + sqrt_a),
            2 * a * ((a - 1) - (a + 1) * cos_w0),
            a * ((a + 1) - (a - 1) * cos_w0 - sqrt_a),
        ]
        den = [
            (a + 1) + (a - 1) * cos_w0 + sqrt_a,
            -2 * ((a - 1) + (a + 1) * cos_w0),
            (a + 1) + (a - 1) * cos_w0 - sqrt_a,
        ]
    else:
        b = [
            a * ((a + 1) + (a - 1) * cos_w0 + sqrt_a),
            -2 * a * ((a - 1) + (a + 1) * cos_w0),
            a * ((a + 1) + (a - 1) * cos_w0 - sqrt_a),
        ]
        den = [
            (a + 1) - (a - 1) * cos_w0 + sqrt_a,
            2 * ((a - 1) - (a + 1) * cos_w0),
            (a + 1) - (a - 1) * cos_w0 - sqrt_a,
        ]
    return np.array([[*(x / den[0] for x in b), 1.0, den[1] / den[0], den[2] / den[0]]])


def eq_tilt(audio: np.ndarray, tilt_db: float, pivot_hz: float = 1000.0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Tilt the spectrum about ``pivot_hz``: bass by -tilt/2 dB, treble by +tilt/2 dB."""
    sos = np.vstack(
        [
            _shelf_sos("low", -tilt_db / 2, pivot_hz, sample_rate),
            _shelf_sos("high", tilt_db / 2, pivot_hz, sample_rate),
        ]
    )
    return signal.sosfilt(sos, np.asarray(audio, dtype=np.float64)).astype(np.float32)


def mix_stems(stems: Sequence[np.ndarray], gains_db: Sequence[float] | None = None) -> np.ndarray:
    """Sum stems (zero-padded to the longest) with per-stem gains; level is not limited."""
    if not stems:
        raise ValueError("mix_stems needs at least one stem")
    gains = list(gains_db) if gains_db is not None else [0.0] * len(stems)
    if len(gains) != len(stems):
        raise ValueError(f"{len(stems)} stems but {len(gains)} gains")
    mix = np.zeros(max(s.shape[0] for s in stems), dtype=np.float32)
    for stem, gain_db in zip(stems, gains, strict=True):
        mix[: stem.shape[0]] += apply_gain(stem, gain_db)
    return mix
