"""The LPC+GAN pipeline as it was before issue 17 (speed), frozen: the reference the fast one
(``nmp_peer.conceal.gan``) is tested against (``tests/test_gan.py``: equal within 1e-5) and
timed against (``nmp-peer bench --method gan --vs reference,gan``).

Channel by channel, one onnxruntime call of batch 1 per channel, the front end's arithmetic
as it was. Do not optimise it: its only use is to be what the fast pipeline must equal.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.fft

from nmp_peer.conceal.base import Concealer, StageHook, final_stage
from nmp_peer.conceal.gan import (
    CHUNK_CONTEXT_SAMPLES,
    CHUNK_SAMPLES,
    CROSSFADE_SAMPLES,
    FEATURE_CEILING,
    GAIN_FLOOR,
    GAP_FRAME,
    HOP,
    N_BINS,
    N_FFT,
    N_FRAMES,
    PAD,
    PREDICT_SAMPLES,
    REFINE_MIN_RMS,
    SILENCE_FLOOR,
    WINDOW,
    GanConcealer,
)


class ReferenceFrontEnd:
    """``SpectralFrontEnd`` for one chunk as it was (full band: ``REFINE_FROM_HZ`` is 0)."""

    def __init__(self) -> None:
        self.window = WINDOW.astype(np.float32)
        n_gap = N_FRAMES - GAP_FRAME
        self._gap_offset = HOP * GAP_FRAME - PAD - CHUNK_CONTEXT_SAMPLES
        wss = np.zeros((n_gap - 1) * HOP + N_FFT)
        for i in range(n_gap):
            wss[i * HOP : i * HOP + N_FFT] += WINDOW**2
        wss = wss[-self._gap_offset : -self._gap_offset + PREDICT_SAMPLES]
        self.inverse_window_sum = (1.0 / wss).astype(np.float32)
        fade = 0.5 - 0.5 * np.cos(np.pi * (np.arange(CROSSFADE_SAMPLES) + 0.5) / CROSSFADE_SAMPLES)
        self.fade_in = fade.astype(np.float32)

    def analyze(self, chunk: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.atleast_2d(np.asarray(chunk, dtype=np.float32))
        gain = np.maximum(np.max(np.abs(x), axis=1), GAIN_FLOOR).astype(np.float32)
        padded = np.pad(x, [(0, 0), (PAD, PAD)], mode="reflect")
        view = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=-1)[:, first * HOP :: HOP]
        frames = view * self.window
        spec = scipy.fft.rfft(frames, axis=-1)
        mag = np.abs(spec)
        mag *= (1.0 / gain)[:, None, None]
        feature = np.sqrt(mag, out=mag)
        feature *= np.float32(1.0 / FEATURE_CEILING)
        out = np.zeros((len(frames), N_BINS, N_FRAMES), np.float32)
        out[..., first:] = feature.transpose(0, 2, 1)
        return out, spec[:, GAP_FRAME - first :], gain

    def synthesize(self, feature: np.ndarray, gap_spec: np.ndarray, gain: np.ndarray) -> np.ndarray:
        f = np.asarray(feature, np.float32)
        if f.shape[-1] == N_FRAMES:
            f = f[..., GAP_FRAME:]
        mag = np.square(np.float32(FEATURE_CEILING) * f.transpose(0, 2, 1))
        mag *= np.asarray(gain, np.float32)[:, None, None]
        lp_mag = np.abs(gap_spec)
        live = lp_mag > 1e-20
        ratio = np.divide(mag, lp_mag, out=np.zeros_like(mag), where=live)
        spec = gap_spec * ratio
        if not live.all():
            spec[~live] = mag[~live]
        frames = scipy.fft.irfft(spec, n=N_FFT, axis=-1)
        frames *= self.window
        batch, n_gap = frames.shape[:2]
        rows = np.zeros((batch, n_gap, (n_gap - 1) * HOP + N_FFT), np.float32)
        b, r, k = rows.strides
        skewed = np.lib.stride_tricks.as_strided(rows, (batch, n_gap, N_FFT), (b, r + HOP * k, k), writeable=True)
        skewed[...] = frames
        start = -self._gap_offset
        return rows[..., start : start + PREDICT_SAMPLES].sum(axis=1) * self.inverse_window_sum

    def crossfade(self, lp: np.ndarray, refined: np.ndarray) -> np.ndarray:
        out = np.array(refined, np.float32)
        n = CROSSFADE_SAMPLES
        out[..., :n] = lp[..., :n] + (refined[..., :n] - lp[..., :n]) * self.fade_in
        return out


class ReferenceGanConcealer(Concealer):
    """The GAN concealer as it was: LPC, then each channel refined by its own batch-1 call."""

    name = "gan-reference"
    stage_count = 2
    fade_after_ms = GanConcealer.fade_after_ms
    fade_ms = GanConcealer.fade_ms
    context_samples = GanConcealer.context_samples
    predict_samples = PREDICT_SAMPLES

    def __init__(self, model_path: str | Path | None = None) -> None:
        self.fast = GanConcealer(model_path)  # the same session, LPC stage and checks
        self.lpc = self.fast.lpc
        self.session = self.fast.session
        self.input_from_frame = self.fast.input_from_frame
        self.recovery_fade_samples = self.fast.recovery_fade_samples
        self.front = ReferenceFrontEnd()
        self._input = self.session.get_inputs()[0].name

    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        return final_stage(self.stages(history, burst_index))

    def stages(self, history: np.ndarray, burst_index: int) -> Iterator[np.ndarray]:
        hist = np.asarray(history, dtype=np.float32)
        if hist.ndim == 1:
            hist = hist[:, None]
        lp = self.lpc.conceal(hist, burst_index)
        yield lp
        out = lp.copy()
        for ch in range(hist.shape[1]):
            out[:, ch] = self._refine(hist[:, ch], lp[:, ch])
        yield out

    def _refine(self, history: np.ndarray, lp: np.ndarray) -> np.ndarray:
        chunk = np.empty(CHUNK_SAMPLES, np.float32)
        tail = history[-CHUNK_CONTEXT_SAMPLES:]
        chunk[: CHUNK_CONTEXT_SAMPLES - len(tail)] = 0.0
        chunk[CHUNK_CONTEXT_SAMPLES - len(tail) : CHUNK_CONTEXT_SAMPLES] = tail
        chunk[CHUNK_CONTEXT_SAMPLES:] = lp
        np.nan_to_num(chunk, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        gap_rms = float(np.sqrt(np.mean(np.square(chunk[CHUNK_CONTEXT_SAMPLES:], dtype=np.float64))))
        if gap_rms < REFINE_MIN_RMS:
            return lp.astype(np.float32)
        hook = self.stage_hook
        feature, gap_spec, gain = self.front.analyze(chunk, self.input_from_frame)
        if hook is not None:
            hook("analysis_stft")
        refined = self.session.run(None, {self._input: feature[:, None]})[0]
        if hook is not None:
            hook("network")
        pred = self.front.synthesize(refined[:, 0], gap_spec, gain)[0]
        if not np.all(np.isfinite(pred)):
            return lp.astype(np.float32)
        out = self.front.crossfade(lp.astype(np.float32), pred)
        out[np.abs(out) < SILENCE_FLOOR] = 0.0
        out = np.clip(out, -1.0, 1.0, out=out)
        if hook is not None:
            hook("synthesis")
        return out

    def set_stage_hook(self, hook: StageHook | None) -> None:
        self.stage_hook = hook
        self.lpc.set_stage_hook(hook)

    def warm_up(self, channels: int = 1) -> None:
        """The fast concealer's warm-up (LPC, session), then this path's own first calls."""
        self.fast.warm_up(channels)
        t = np.arange(self.context_samples, dtype=np.float32)
        tone = 0.1 * np.sin(2 * np.pi * 440.0 / 44_100 * t) + 0.01 * np.sin(2 * np.pi * 3000.0 / 44_100 * t)
        for _ in range(3):
            self.conceal(np.repeat(tone[:, None], channels, axis=1), 0)
