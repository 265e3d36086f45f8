"""Linear-prediction concealment that keeps the level and spectrum of the music through a gap.

Estimator: the autocorrelation method on a Tukey(0.25)-windowed context, a relative
white-noise correction of 1e-6 on R[0], Levinson-Durbin via ``scipy.linalg.solve_toeplitz``.
The loaded, positive-definite Toeplitz system gives a minimum-phase filter in a fraction
of a millisecond, and the window beat no window before (docs/bin2bin-v2.md). Burg was not chosen:
its order recursion is a Python loop of 256 steps over the context (several ms per call),
and its sharper poles would buy little here, because the level is not carried by the
filter's free response. Lighter loading (1e-4 down to 1e-6) measured better on real music
(mostly in how empty bands stay empty); the output is still checked, and a prediction that
is not finite or blows up falls back to repetition at the long-term lag.

Why plain LPC is not enough: its zero-input response continues only what the filter can
predict, so on real music it decays (~0.2x the energy) and the high bands vanish. Here
the synthesis filter starts from its exact state at the end of the history (no seam) and
is driven by the history's own prediction residual, as in codecs' LTP-excited concealment:

- below ``split_hz`` (most of the energy, hence of the waveform SNR): the residual one
  long-term lag back, the lag in ``pitch_lags`` whose segment best matches the last
  packet (normalised correlation); never under a packet, so a packet holds no copy of itself;
- above ``split_hz`` (most of the spectrum): the residual about one packet back, the most
  recent material, at the lag in ``recent_lags`` that best matches the last packet's high
  band, so tonal partials continue in phase (a fixed 512 lag left them beating).

A complementary linear-phase FIR pair joins the bands. The excitation has the context's
own level and spectrum, so the prediction keeps both through a burst. Where the last
packet is much quieter than the copied segment (a note stopped or decays fast), the copy
follows it down instead of bringing it back; a per-128-sample guard keeps the prediction
within ``max_level`` times the context's RMS.

How it compares with the other concealers is measured by the lab (``nmp-peer lab``;
README, "Results", with the command that gives the figures).
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.linalg
import scipy.signal

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.conceal.base import HOLD_FADE_MS, HOLD_MS, Concealer


class LpcConcealer(Concealer):
    """Order-256 LPC, excited by the history's residual: a long-term lag back below
    ``split_hz``, about one packet back above it.

    Stateless: every call refits from ``history`` (in a burst it holds the earlier
    concealment), so ``burst_index`` is not needed. Channels are concealed one by one,
    alike; each has its own filter.
    """

    name = "lpc"
    fade_after_ms = HOLD_MS
    fade_ms = HOLD_FADE_MS
    recovery_fade_samples = 64
    """Short, so the real packet takes over quickly from a prediction that drifts from it;
    long enough that the seam's spectrum shows no step (64 was chosen over 32, 128 and 256
    on the seams' spectra)."""

    def __init__(
        self,
        order: int = 256,
        context_samples: int = 3584,
        predict_samples: int = 1024,
        *,
        window_alpha: float = 0.25,
        white_noise_correction: float = 1e-6,
        split_hz: float = 1000.0,
        split_taps: int = 129,
        match_samples: int = BLOCK_FRAMES,
        pitch_lags: tuple[int, int] = (BLOCK_FRAMES, 2048),
        recent_lags: tuple[int, int] = (BLOCK_FRAMES, BLOCK_FRAMES + 128),
        pitch_gain_floor: float = 1.0,
        decay_knee: float = 0.7,
        max_level: float = 2.0,
        level_ref_samples: int = 2048,
        level_block_samples: int = 128,
    ) -> None:
        half = split_taps // 2
        span = max(pitch_lags[1], recent_lags[1]) + half
        if (
            split_taps % 2 == 0
            or not 0 < order
            or not half < pitch_lags[0] <= pitch_lags[1]
            or not half < recent_lags[0] <= recent_lags[1]
            or span + order > context_samples
            or match_samples + pitch_lags[1] > context_samples
            or match_samples + recent_lags[1] + 2 * half > context_samples
        ):
            raise ValueError("inconsistent order, lags, split filter and context_samples")
        self.order = order
        self.context_samples = context_samples
        self.predict_samples = predict_samples
        self.white_noise_correction = white_noise_correction
        self.match_samples = match_samples
        self.pitch_lags = pitch_lags
        self.recent_lags = recent_lags
        self.pitch_gain_floor = pitch_gain_floor
        self.decay_knee = decay_knee
        self.max_level = max_level
        self.level_ref_samples = min(level_ref_samples, context_samples)
        self.level_block_samples = level_block_samples
        self._window = scipy.signal.windows.tukey(context_samples, window_alpha)
        self._nfft_fit = scipy.fft.next_fast_len(context_samples + order, real=True)
        self._lowpass = scipy.signal.firwin(split_taps, split_hz, fs=SAMPLE_RATE)
        self._highpass = -self._lowpass
        self._highpass[half] += 1.0
        self._half = half
        self._t = np.arange(-half, predict_samples + half)
        self._span = span
        self._nfft_res = scipy.fft.next_fast_len(span + order, real=True)

    def warm_up(self, channels: int = 1) -> None:
        """Run once on a tone: silence returns early and would not touch the FFT caches."""
        t = np.arange(self.context_samples, dtype=np.float32)
        tone = 0.1 * np.sin(2 * np.pi * 440.0 / SAMPLE_RATE * t)
        self.conceal(np.repeat(tone[:, None], channels, axis=1), 0)

    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        hist = np.asarray(history, dtype=np.float64)
        if hist.ndim == 1:
            hist = hist[:, None]
        n = self.context_samples
        if len(hist) < n:
            hist = np.concatenate([np.zeros((n - len(hist), hist.shape[1])), hist])
        hist = hist[-n:]
        if not np.isfinite(hist).all():  # rare: nan_to_num's own cost is not
            hist = np.nan_to_num(hist, nan=0.0, posinf=0.0, neginf=0.0)
        out = np.empty((self.predict_samples, hist.shape[1]), np.float32)
        for ch in range(hist.shape[1]):
            out[:, ch] = self._conceal_channel(hist[:, ch])
        return out

    def _conceal_channel(self, x: np.ndarray) -> np.ndarray:
        peak = float(np.max(np.abs(x)))
        if peak < 1e-9:
            return np.zeros(self.predict_samples)
        x = x / peak  # all below is scale-invariant; this keeps tiny signals well-conditioned
        lag, corr, level = self._best_lag(x, *self.pitch_lags)
        a = self._fit(x)
        if self.stage_hook is not None:
            self.stage_hook("lpc_fit")
        gain = min(max(corr, self.pitch_gain_floor), 1.0) * self._decay_gain(level)
        y = None if a is None else self._synthesize(x, a, lag, gain)
        if y is None:
            y = self._decay_gain(level) * x[len(x) - lag + np.arange(self.predict_samples) % lag]
        y = np.clip(y * peak, -1.0, 1.0)
        if self.stage_hook is not None:
            self.stage_hook("lpc_predict")
        return y

    def _fit(self, x: np.ndarray) -> np.ndarray | None:
        """Prediction polynomial [1, a1..ap], or None when the normal equations are degenerate."""
        p = self.order
        spec = scipy.fft.rfft(x * self._window, self._nfft_fit)
        r = scipy.fft.irfft(spec.real**2 + spec.imag**2, self._nfft_fit)[: p + 1]
        if not r[0] > 0:
            return None
        r[0] *= 1.0 + self.white_noise_correction
        try:
            coef = scipy.linalg.solve_toeplitz(r[:p], -r[1:], check_finite=False)
        except (np.linalg.LinAlgError, ValueError):
            return None
        if not np.all(np.isfinite(coef)):
            return None
        return np.concatenate(([1.0], coef))

    def _best_lag(self, x: np.ndarray, lo: int, hi: int) -> tuple[int, float, float]:
        """The lag in [lo, hi] whose segment of ``x`` best matches the end of ``x``; the
        normalised correlation there; the end's RMS over the segment's."""
        n, w = len(x), self.match_samples
        target = x[n - w :]
        search = x[n - w - hi : n - lo]
        if hi - lo <= 256:
            c = np.correlate(search, target, mode="valid")
        else:
            m = scipy.fft.next_fast_len(w + hi - lo, real=True)
            c = scipy.fft.irfft(scipy.fft.rfft(search, m) * np.conj(scipy.fft.rfft(target, m)), m)
            c = c[: hi - lo + 1]
        e = np.cumsum(np.concatenate(([0.0], search * search)))
        energy = e[w:] - e[:-w]
        e_target = float(target @ target)
        norm = c / np.sqrt(np.maximum(energy * e_target, 1e-30))
        i = int(np.argmax(norm))
        return hi - i, float(norm[i]), float(np.sqrt(e_target / max(energy[i], 1e-30)))

    def _synthesize(self, x: np.ndarray, a: np.ndarray, lag: int, gain: float) -> np.ndarray | None:
        n, p, span, m, half = len(x), self.order, self._span, self._nfft_res, self._half
        spec = scipy.fft.rfft(x[n - span - p :], m) * scipy.fft.rfft(a, m)
        res = scipy.fft.irfft(spec, m)[p : p + span]  # residual of the last ``span`` samples
        # The recent lag is matched on the high band only; a causal filter on both sides
        # of the match delays both alike.
        lo, hi = self.recent_lags
        seg = x[n - self.match_samples - hi - 2 * half :]
        high = np.convolve(seg, self._highpass, mode="valid")
        recent_lag, _, recent_level = self._best_lag(high, lo, hi)
        t = self._t  # excitation index, from half a filter before the gap to half after
        pitch = res[span - lag + np.mod(t, lag)]
        recent = res[span - recent_lag + np.mod(t, recent_lag)]
        recent[half:] *= self._decay_gain(recent_level)
        diff = gain * pitch - recent
        diff[:half] = 0.0  # before the gap both are the true residual
        exc = recent[half:-half] + np.convolve(diff, self._lowpass, mode="valid")
        zi = -np.correlate(a[1:], x[: n - p - 1 : -1], mode="full")[p - 1 :]  # state after x
        y, _ = scipy.signal.lfilter([1.0], a, exc, zi=zi)
        return self._guard_level(x, y)

    def _decay_gain(self, level: float) -> float:
        """1, unless the last packet is much quieter than the copied segment (a note that
        stopped or decays fast): then follow it down, so that it is not brought back."""
        return min(level / self.decay_knee, 1.0)

    def _guard_level(self, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        """Bound the prediction's short-term RMS by the context's; None if it blew up."""
        if not np.all(np.isfinite(y)):
            return None
        ref = float(np.sqrt(np.mean(x[-self.level_ref_samples :] ** 2)))
        b = self.level_block_samples
        nb = -(-len(y) // b)
        power = np.zeros(nb * b)
        power[: len(y)] = y * y
        rms = np.sqrt(power.reshape(nb, b).mean(axis=1))
        limit = self.max_level * ref + 1e-6
        if np.any(rms > 8 * limit):
            return None
        if np.all(rms <= limit):
            return y
        gain = np.minimum(1.0, limit / np.maximum(rms, 1e-30))
        centres = (np.arange(nb) + 0.5) * b
        return y * np.interp(np.arange(len(y)), centres, gain)
