"""Linear-prediction concealment that keeps the level and spectrum of the music.

WIP: tuning version.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.linalg
import scipy.signal

from nmp_peer import BLOCK_FRAMES
from nmp_peer.conceal.base import Concealer


class LpcConcealer(Concealer):
    name = "lpc"
    recovery_fade_samples = 128

    def __init__(
        self,
        order: int = 256,
        context_samples: int = 3584,
        predict_samples: int = 1024,
        *,
        window_alpha: float = 0.25,
        white_noise_correction: float = 1e-4,
        excitation: str = "ltp",
        min_lag: int = 32,
        max_lag: int = 2048,
        match_samples: int = 512,
        min_excitation_gain: float = 0.0,
        max_excitation_gain: float = 1.0,
        gain_mode: str = "corr",
        level_blocks: int = 128,
        max_level: float = 2.0,
        min_level: float = 0.0,
        level_ref_samples: int = 1024,
        lag_domain: str = "signal",
    ) -> None:
        self.order = order
        self.context_samples = context_samples
        self.predict_samples = predict_samples
        self.window_alpha = window_alpha
        self.white_noise_correction = white_noise_correction
        self.excitation = excitation
        self.min_lag = min_lag
        self.max_lag = min(max_lag, context_samples - order - match_samples)
        self.match_samples = match_samples
        self.min_excitation_gain = min_excitation_gain
        self.max_excitation_gain = max_excitation_gain
        self.gain_mode = gain_mode
        self.level_blocks = level_blocks
        self.max_level = max_level
        self.min_level = min_level
        self.level_ref_samples = level_ref_samples
        self.lag_domain = lag_domain
        self._window = scipy.signal.windows.tukey(context_samples, window_alpha)
        self._nfft = scipy.fft.next_fast_len(2 * context_samples - 1, real=True)

    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        hist = np.asarray(history, dtype=np.float64)
        if hist.ndim == 1:
            hist = hist[:, None]
        out = np.empty((self.predict_samples, hist.shape[1]), np.float32)
        for ch in range(hist.shape[1]):
            out[:, ch] = self._conceal_channel(hist[-self.context_samples :, ch])
        return out

    def _conceal_channel(self, x: np.ndarray) -> np.ndarray:
        n, p, P = len(x), self.order, self.predict_samples
        peak = float(np.max(np.abs(x))) if n else 0.0
        if not np.isfinite(peak) or peak < 1e-9:
            return np.zeros(P)
        x = x / peak
        a = self._fit(x)
        if a is None:
            return self._repeat(x, self._best_lag(x)[0]) * peak
        lag, corr = self._best_lag(x) if self.excitation != "none" else (0, 0.0)
        zi = -np.correlate(a[1:], x[: n - p - 1 : -1], mode="full")[p - 1 :]
        if self.excitation == "none":
            exc = np.zeros(P)
        else:
            seg = x[n - lag - p :]
            res = np.convolve(seg, a, mode="valid")
            idx = np.arange(P) % lag
            if self.gain_mode == "corr":
                g = min(max(corr, self.min_excitation_gain), self.max_excitation_gain)
            else:
                g = self.max_excitation_gain
            exc = g * res[idx]
        y, _ = scipy.signal.lfilter([1.0], a, exc, zi=zi)
        y = self._limit_level(x, y)
        if y is None:
            y = self._repeat(x, lag if lag else self._best_lag(x)[0])
        return np.clip(y * peak, -1.0, 1.0)

    def _fit(self, x: np.ndarray) -> np.ndarray | None:
        p = self.order
        spec = scipy.fft.rfft(x * self._window[-len(x) :], self._nfft)
        r = scipy.fft.irfft(spec.real**2 + spec.imag**2, self._nfft)[: p + 1]
        if r[0] <= 0:
            return None
        r[0] *= 1.0 + self.white_noise_correction
        try:
            coef = scipy.linalg.solve_toeplitz(r[:p], -r[1 : p + 1], check_finite=False)
        except (np.linalg.LinAlgError, ValueError):
            return None
        if not np.all(np.isfinite(coef)):
            return None
        return np.concatenate(([1.0], coef))

    def _best_lag(self, x: np.ndarray) -> tuple[int, float]:
        n, w = len(x), self.match_samples
        lo, hi = self.min_lag, self.max_lag
        target = x[n - w :]
        search = x[n - w - hi : n - lo]
        c = scipy.signal.correlate(search, target, mode="valid", method="fft")
        e = np.cumsum(np.concatenate(([0.0], search**2)))
        energy = e[w:] - e[:-w]
        et = float(target @ target)
        norm = c / np.sqrt(np.maximum(energy * et, 1e-30))
        i = int(np.argmax(norm))
        return hi - i, float(norm[i])

    def _repeat(self, x: np.ndarray, lag: int) -> np.ndarray:
        idx = np.arange(self.predict_samples) % lag
        return x[len(x) - lag + idx]

    def _limit_level(self, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        if not np.all(np.isfinite(y)):
            return None
        ref = np.sqrt(np.mean(x[-self.level_ref_samples :] ** 2))
        b = self.level_blocks
        blocks = y.reshape(-1, b)
        rms = np.sqrt(np.mean(blocks**2, axis=1))
        if np.any(rms > 8 * self.max_level * ref + 1e-12):
            return None
        gain = np.ones_like(rms)
        hi = self.max_level * ref
        gain = np.where(rms > hi, hi / np.maximum(rms, 1e-30), gain)
        if self.min_level > 0:
            lo = self.min_level * ref
            gain = np.where((rms < lo) & (rms > 1e-12), lo / np.maximum(rms, 1e-30), gain)
        if np.all(gain == 1.0):
            return y
        # Interpolate gains between block centres so the envelope has no steps.
        centres = (np.arange(len(gain)) + 0.5) * b
        env = np.interp(np.arange(len(y)), centres, gain)
        return y * env
