"""LPC + GAN concealment (bin2bin-v2): the LPC prediction, refined in the STFT-magnitude domain.

On each lost packet the LPC concealer predicts 1024 samples (this packet and the next).
The last 3072 samples of the history and those 1024 form a 4096-sample chunk; its
compressed STFT magnitude (1 x 256 bins x 256 frames) goes through the generator, an
onnxruntime session, and the refined magnitude with the LP phase is inverted back to
the last 1024 samples. The exported generator computes only the 79 output frames that
reach those samples (``nmp_peer.train.export``), exactly as the full network would, and
reads only the input frames that reach them (from its ``input_from_frame``, 65): the
front end leaves the others zero instead of computing them.
The prediction fades from LP to the refined signal over all 1024 samples (half-Hann):
the seam with the history stays the LPC's, the played packet is at most half refined
(the LP prediction is surest next to the history), and the second packet, from which
the engine fades into the next real one, ends fully refined. Chosen against 128 and
512 samples in the lab (docs/model-card.md): the longer fade gives smaller but
consistent gains over LPC, on ViSQOL too, where the short one's were within the noise.

The spectral front end (``SpectralFrontEnd``) is numpy only and is also what training
uses to make the network's inputs and targets, so training and runtime agree by
construction:

- STFT: n_fft 511, hop 16, periodic Hann window of 511 samples, frames centred on
  multiples of the hop with reflect padding of 255 samples (``torch.stft(center=True,
  pad_mode="reflect")``), as in the authors' code. Their chunk is 4090 samples; ours is
  the report's 4096 (3072 of context + 1024 predicted, whole packets), and both give
  ``1 + (n + 2 * 255 - 511) // 16 = 256`` frames: frame ``i`` is centred on sample
  ``16 i``, the last on 4080, and samples 4081..4095 are still covered by 15 frames.
  Only frames 177..255 reach the predicted samples (3072..4095); the inverse STFT uses
  those 79 frames alone (weighted overlap-add, divided by the summed squared window),
  the others are context.
- Feature: ``sqrt(|S| / g) / C`` with ``g`` the chunk's peak (history and LP part) and
  ``C = sqrt(sum(window)) = 15.98``. The authors' ``|S| ** 0.5 / 3.5`` saturates the
  sigmoid for louder music (1.5-1.8 % of real-music bins above the ceiling, measured);
  here a bin of the input chunk can never exceed it (|S| <= g * sum(window)), and the
  network is level-invariant, so the level of the training set no longer matters.
  Inverse: ``|S| = g * (C * G) ** 2``.
"""

from __future__ import annotations

import importlib.resources
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.fft

from nmp_peer import SAMPLE_RATE
from nmp_peer.conceal.base import HOLD_FADE_MS, HOLD_MS, Concealer, StageHook, final_stage
from nmp_peer.conceal.lpc import LpcConcealer

CHUNK_SAMPLES = 4096
CHUNK_CONTEXT_SAMPLES = 3072
PREDICT_SAMPLES = 1024
N_FFT = 511
HOP = 16
PAD = N_FFT // 2
N_BINS = N_FFT // 2 + 1  # 256
N_FRAMES = 256
GAP_FRAME = -(-(CHUNK_CONTEXT_SAMPLES - PAD) // HOP)  # 177
"""First frame that reaches the predicted samples; frames GAP_FRAME..255 (79) make the output."""
CROSSFADE_SAMPLES = 1024
WINDOW = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float64)
FEATURE_CEILING = float(np.sqrt(WINDOW.sum()))
GAIN_FLOOR = 1e-6
"""The smallest peak the features are normalised by (no division by zero on silence)."""
REFINE_FROM_HZ = 0.0
"""The runtime keeps the LP magnitude below this frequency and takes the refined one above."""
REFINE_MIN_RMS = 1e-3
"""An LP prediction quieter than this (-60 dBFS RMS) is played as it is. The network was
trained only on gaps at least this loud (``train.data.DataSettings.min_target_rms``);
below, the 16-bit floor is a large part of what it would see, and the refinement spreads
a faint noise floor where a note has died away."""
SILENCE_FLOOR = 2.0**-24
"""Output samples smaller than this (-144 dBFS, under a 24-bit converter's step) are set
to exact zero: where the LP prediction has gone silent, the inverse FFT leaves rounding
noise (~1e-17) that no one hears, but that keeps digital silence from being silence
(PLCMOS, for one, scored a bass clip a whole point lower for it)."""
MODEL_FILE = "bin2bin_v2.onnx"
MAX_BATCH = 8
"""Chunks per network call with a model whose batch axis is dynamic (a band's 7 streams, mono)."""


class ModelNotFoundError(FileNotFoundError):
    """The ONNX generator is not where it should be; the message says how to make it."""


def default_model_path() -> Path:
    """``nmp_peer/conceal/models/bin2bin_v2.onnx``, found through the package's resources."""
    try:
        return Path(str(importlib.resources.files("nmp_peer.conceal") / "models" / MODEL_FILE))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - unusual installs
        return Path(__file__).with_name("models") / MODEL_FILE


class SpectralFrontEnd:
    """The generator's input and output transforms, vectorised over a batch of chunks.

    ``analyze`` maps LP-filled chunks to features (network input), the complex STFT of
    the gap frames (for the phase) and the gains; ``synthesize`` maps refined features
    of the gap frames back to the 1024 predicted samples. Frames are strided views of
    the padded chunk, the FFTs are scipy's single-precision ones and the overlap-add
    writes each frame into its own row, shifted through a strided view, and sums the rows.
    """

    def __init__(self, refine_from_hz: float = 0.0) -> None:
        self.window = WINDOW.astype(np.float32)
        # Per bin, how much of the refined magnitude ``synthesize`` takes (the rest is
        # the LP's): 0 below refine_from_hz, a raised-cosine ramp over the quarter below it;
        # None (all of it) for the full band.
        self.refine_weight: np.ndarray | None = None
        if refine_from_hz > 0:
            freqs = np.arange(N_BINS) * SAMPLE_RATE / N_FFT
            ramp = np.clip((freqs - 0.75 * refine_from_hz) / (0.25 * refine_from_hz), 0.0, 1.0)
            self.refine_weight = (0.5 - 0.5 * np.cos(np.pi * ramp)).astype(np.float32)
        n_gap = N_FRAMES - GAP_FRAME
        # chunk sample where the first gap frame starts, relative to the predicted part
        self._gap_offset = HOP * GAP_FRAME - PAD - CHUNK_CONTEXT_SAMPLES  # -495
        wss = np.zeros((n_gap - 1) * HOP + N_FFT)
        for i in range(n_gap):
            wss[i * HOP : i * HOP + N_FFT] += WINDOW**2
        wss = wss[-self._gap_offset : -self._gap_offset + PREDICT_SAMPLES]
        if np.any(wss < 1e-3):
            raise AssertionError("gap frames do not cover the predicted samples")
        self.inverse_window_sum = (1.0 / wss).astype(np.float32)
        fade = 0.5 - 0.5 * np.cos(np.pi * (np.arange(CROSSFADE_SAMPLES) + 0.5) / CROSSFADE_SAMPLES)
        self.fade_in = fade.astype(np.float32)
        # scratch for up to two chunks (the runtime's mono and stereo calls)
        self._padded = np.empty((2, CHUNK_SAMPLES + 2 * PAD), np.float32)
        self._frames = np.empty((2, N_FRAMES, N_FFT), np.float32)

    def _frames_of(self, padded: np.ndarray, first: int = 0) -> np.ndarray:
        """Windowed frames ``first..255`` ``(B, 256 - first, 511)`` of padded chunks ``(B, 4606)``."""
        view = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=-1)[:, first * HOP :: HOP]
        out = self._frames[: padded.shape[0], first:] if padded.shape[0] <= 2 else None
        return np.multiply(view, self.window, out=out)

    def _features_of(self, frames: np.ndarray, gain: np.ndarray, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Features ``(B, 256, 256)``, frames before ``first`` zero; the STFT of the frames given."""
        spec = scipy.fft.rfft(frames, axis=-1)  # (B, frames, bins), complex64
        mag = np.abs(spec)
        mag *= (1.0 / gain)[:, None, None]
        feature = np.sqrt(mag, out=mag)
        feature *= np.float32(1.0 / FEATURE_CEILING)
        if first == 0:
            return np.ascontiguousarray(feature.transpose(0, 2, 1)), spec
        out = np.zeros((len(frames), N_BINS, N_FRAMES), np.float32)
        out[..., first:] = feature.transpose(0, 2, 1)
        return out, spec

    def _pad(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] > 2 or x.shape[1] != CHUNK_SAMPLES:  # training's batches
            return np.pad(x, [(0, 0), (PAD, PAD)], mode="reflect")
        return _reflect_into(x, self._padded[: x.shape[0]])

    def analyze(self, chunks: np.ndarray, first_frame: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features ``(B, 256 bins, 256 frames)`` float32, gap STFT ``(B, 79, 256)`` complex64,
        gains ``(B,)`` float32. ``chunks`` is ``(B, 4096)`` or one chunk ``(4096,)``.

        ``first_frame``: the frames before it are left zero, not computed (the exported
        generator does not read them: its ``input_from_frame``)."""
        if not 0 <= first_frame <= GAP_FRAME:
            raise ValueError(f"first_frame must be in 0..{GAP_FRAME}")
        x = np.atleast_2d(np.asarray(chunks, dtype=np.float32))
        gain = np.maximum(np.max(np.abs(x), axis=1), GAIN_FLOOR).astype(np.float32)
        feature, spec = self._features_of(self._frames_of(self._pad(x), first_frame), gain, first_frame)
        return feature, spec[:, GAP_FRAME - first_frame :], gain

    def target_features(self, chunks: np.ndarray, gain: np.ndarray) -> np.ndarray:
        """Features of the true chunks on the scale of the LP-filled ones (``gain``): training."""
        x = np.atleast_2d(np.asarray(chunks, dtype=np.float32))
        return self._features_of(self._frames_of(self._pad(x)), np.asarray(gain, np.float32))[0]

    def synthesize(self, feature: np.ndarray, gap_spec: np.ndarray, gain: np.ndarray) -> np.ndarray:
        """Predicted samples ``(B, 1024)`` from refined features (``(B, 256, 256)``, or only
        the gap frames ``(B, 256, 79)``), the LP STFT of the gap frames and the gains."""
        f = np.asarray(feature, np.float32)
        if f.shape[-1] == N_FRAMES:
            f = f[..., GAP_FRAME:]
        mag = np.square(np.float32(FEATURE_CEILING) * f.transpose(0, 2, 1))
        mag *= np.asarray(gain, np.float32)[:, None, None]
        # the LP phase: the refined magnitude over the LP's times the LP spectrum (the bare
        # magnitude where the LP bin is empty)
        lp_mag = np.abs(gap_spec)
        live = lp_mag > 1e-20
        if self.refine_weight is not None:  # the LP magnitude below refine_from_hz
            mag -= lp_mag
            mag *= self.refine_weight
            mag += lp_mag
        ratio = np.divide(mag, lp_mag, out=np.zeros_like(mag), where=live)
        spec = gap_spec * ratio
        if not live.all():
            spec[~live] = mag[~live]
        frames = scipy.fft.irfft(spec, n=N_FFT, axis=-1)
        frames *= self.window
        batch, n_gap = frames.shape[:2]
        # Weighted overlap-add: frame i's hop j lands on output hop i + j. Each frame is
        # written into its own row shifted by i hops (a strided view with a row stride one
        # hop longer than a row), and the rows are summed.
        rows = np.zeros((batch, n_gap, (n_gap - 1) * HOP + N_FFT), np.float32)
        b, r, k = rows.strides
        skewed = np.lib.stride_tricks.as_strided(rows, (batch, n_gap, N_FFT), (b, r + HOP * k, k), writeable=True)
        skewed[...] = frames
        start = -self._gap_offset
        return rows[..., start : start + PREDICT_SAMPLES].sum(axis=1) * self.inverse_window_sum

    def crossfade(self, lp: np.ndarray, refined: np.ndarray) -> np.ndarray:
        """The prediction starts as LP and becomes the refined one over ``CROSSFADE_SAMPLES``."""
        out = np.array(refined, np.float32)
        n = CROSSFADE_SAMPLES
        out[..., :n] = lp[..., :n] + (refined[..., :n] - lp[..., :n]) * self.fade_in
        return out


def _reflect_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``np.pad(x, [(0, 0), (PAD, PAD)], mode="reflect")`` for chunks ``(B, n)``, written into ``out``."""
    n = x.shape[1]
    out[:, PAD : PAD + n] = x
    out[:, :PAD] = x[:, PAD:0:-1]
    out[:, PAD + n :] = x[:, n - 2 : n - 2 - PAD : -1]
    return out


class GanConcealer(Concealer):
    """LPC prediction refined by the bin2bin-v2 generator; yields LPC first, then the refined one.

    One warm onnxruntime session (graph optimisation ALL, ``threads`` intra-op threads)
    is made at construction. Stateless between calls like every concealer; scratch
    buffers are reused under a lock. The channels of a stream are refined together: their
    LPC predictions, then one front end pass and ONE network call of batch ``channels``
    (the model's batch dimension is symbolic), not a pass per channel.
    """

    name = "gan"
    stage_count = 2  # the LPC prediction, then its refinement
    fade_after_ms = HOLD_MS
    fade_ms = HOLD_FADE_MS
    context_samples = 3584
    predict_samples = PREDICT_SAMPLES

    def __init__(self, model_path: str | Path | None = None, threads: int = 1, lpc: LpcConcealer | None = None) -> None:
        import onnxruntime as ort

        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_file():
            raise ModelNotFoundError(
                f"GAN concealer model not found at {path}; train and export one with "
                "python -m nmp_peer.train.train ... and python -m nmp_peer.train.export "
                "(see docs/model-card.md), or choose another concealer"
            )
        self.lpc = lpc or LpcConcealer(context_samples=self.context_samples, predict_samples=PREDICT_SAMPLES)
        if self.lpc.predict_samples != PREDICT_SAMPLES or self.lpc.context_samples > self.context_samples:
            raise ValueError("the LPC stage must predict 1024 samples from at most 3584")
        self.recovery_fade_samples = self.lpc.recovery_fade_samples
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        expected = {"n_fft": N_FFT, "hop": HOP, "chunk_samples": CHUNK_SAMPLES, "output_from_frame": GAP_FRAME}
        for key, value in expected.items():
            if key in meta and int(meta[key]) != value:
                raise ValueError(f"{path}: model was trained with {key}={meta[key]}, runtime uses {value}")
        self.metadata = dict(meta)
        self.input_from_frame = int(meta.get("input_from_frame", 0))
        if not 0 <= self.input_from_frame <= GAP_FRAME:
            raise ValueError(f"{path}: input_from_frame {self.input_from_frame} is outside 0..{GAP_FRAME}")
        self._input = self.session.get_inputs()[0].name
        frames = self.session.get_outputs()[0].shape[-1]
        if frames not in (N_FRAMES, N_FRAMES - GAP_FRAME):
            raise ValueError(
                f"{path}: the model outputs {frames} frames, expected {N_FRAMES - GAP_FRAME} or {N_FRAMES}"
            )
        batch = self.session.get_inputs()[0].shape[0]
        self._fixed_batch = batch if isinstance(batch, int) else None
        """None: the model takes any batch (the shipped one); else the one batch size it takes."""
        self.front = SpectralFrontEnd(REFINE_FROM_HZ)
        self._chunk_buffers: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else MAX_BATCH
        """Chunks one network call takes: the model's batch axis (1 for a fixed one; a
        dynamic one: ``MAX_BATCH``); ``stages_batch`` and the shared worker use it."""

    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        return final_stage(self.stages(history, burst_index))

    def stages(self, history: np.ndarray, burst_index: int) -> Iterator[np.ndarray]:
        hist = np.asarray(history, dtype=np.float32)
        if hist.ndim == 1:
            hist = hist[:, None]
        lp = self.lpc.conceal(hist, burst_index)
        yield lp
        yield self.refine(hist, lp)

    def refine(self, history: np.ndarray, lp: np.ndarray) -> np.ndarray:
        """The refined ``(1024, channels)`` samples, given the LP prediction of every channel:
        the channels loud enough to refine go through the front end and ONE network call
        together (a batch of that many), the others keep their LP prediction."""
        with self._lock:
            channels = lp.shape[1]
            chunks = self._chunks(channels)
            tail = history[-CHUNK_CONTEXT_SAMPLES:]
            chunks[:, : CHUNK_CONTEXT_SAMPLES - len(tail)] = 0.0
            chunks[:, CHUNK_CONTEXT_SAMPLES - len(tail) : CHUNK_CONTEXT_SAMPLES] = tail.T
            chunks[:, CHUNK_CONTEXT_SAMPLES:] = lp.T
            np.nan_to_num(chunks, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            gap = chunks[:, CHUNK_CONTEXT_SAMPLES:]
            gap_rms = np.sqrt(np.mean(np.square(gap, dtype=np.float64), axis=1))
            loud = np.flatnonzero(gap_rms >= REFINE_MIN_RMS)  # silence included: silence in, silence out
            out = np.array(lp, np.float32)
            if len(loud) == 0:
                return out
            batch = chunks if len(loud) == channels else chunks[loud]
            hook = self.stage_hook
            feature, gap_spec, gain = self.front.analyze(batch, self.input_from_frame)
            if hook is not None:
                hook("analysis_stft")
            refined = self._run(feature)
            if hook is not None:
                hook("network")
            pred = self.front.synthesize(refined, gap_spec, gain)
            for row, ch in enumerate(loud):
                if not np.all(np.isfinite(pred[row])):
                    continue  # that channel keeps its LP prediction
                mixed = self.front.crossfade(lp[:, ch], pred[row])
                mixed[np.abs(mixed) < SILENCE_FLOOR] = 0.0
                out[:, ch] = np.clip(mixed, -1.0, 1.0, out=mixed)
            if hook is not None:
                hook("synthesis")
            return out

    def _chunks(self, channels: int) -> np.ndarray:
        """The scratch chunks ``(channels, 4096)``, made once per channel count."""
        chunks = self._chunk_buffers.get(channels)
        if chunks is None:
            chunks = self._chunk_buffers[channels] = np.empty((channels, CHUNK_SAMPLES), np.float32)
        return chunks

    def _run(self, feature: np.ndarray) -> np.ndarray:
        """The generator on features ``(B, 256, 256)``: refined gap frames ``(B, 256, 79)``; one
        call of batch B (a model exported with a fixed batch of 1 is called once per item)."""
        x = feature[:, None]
        if self._fixed_batch is None or self._fixed_batch == len(x):
            return self.session.run(None, {self._input: x})[0][:, 0]
        return np.concatenate([self.session.run(None, {self._input: x[i : i + 1]})[0][:, 0] for i in range(len(x))])

    def stages_batch(self, histories: list[np.ndarray], burst_indices: list[int]) -> Iterator[list[np.ndarray]]:
        """``stages`` of several concealments at once (a band's streams that lost a packet in the
        same block): every LPC prediction first, then the refinement of all of them in as few
        network calls as ``max_batch`` allows. Each result is the one ``stages`` gives."""
        hists = []
        for h in histories:
            hist = np.asarray(h, dtype=np.float32)
            hists.append(hist[:, None] if hist.ndim == 1 else hist)
        lps = [self.lpc.conceal(h, b) for h, b in zip(hists, burst_indices, strict=True)]
        yield lps
        outs = [lp.copy() for lp in lps]
        with self._lock:
            items = []  # (job, channel, chunk) of every chunk loud enough to refine
            for j, (hist, lp) in enumerate(zip(hists, lps, strict=True)):
                for ch in range(hist.shape[1]):
                    chunk = np.zeros(CHUNK_SAMPLES, np.float32)
                    tail = hist[-CHUNK_CONTEXT_SAMPLES:, ch]
                    chunk[CHUNK_CONTEXT_SAMPLES - len(tail) : CHUNK_CONTEXT_SAMPLES] = tail
                    chunk[CHUNK_CONTEXT_SAMPLES:] = lp[:, ch]
                    np.nan_to_num(chunk, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
                    gap = chunk[CHUNK_CONTEXT_SAMPLES:]
                    if float(np.sqrt(np.mean(np.square(gap, dtype=np.float64)))) >= REFINE_MIN_RMS:
                        items.append((j, ch, chunk))
            for start in range(0, len(items), self.max_batch):
                part = items[start : start + self.max_batch]
                feature, gap_spec, gain = self.front.analyze(np.stack([c for _, _, c in part]), self.input_from_frame)
                preds = self.front.synthesize(self._run(feature), gap_spec, gain)
                for (j, ch, _), pred in zip(part, preds, strict=True):
                    lp = lps[j][:, ch].astype(np.float32)
                    if not np.all(np.isfinite(pred)):
                        continue
                    out = self.front.crossfade(lp, pred)
                    out[np.abs(out) < SILENCE_FLOOR] = 0.0
                    outs[j][:, ch] = np.clip(out, -1.0, 1.0, out=out)
        yield outs

    def set_stage_hook(self, hook: StageHook | None) -> None:
        self.stage_hook = hook
        self.lpc.set_stage_hook(hook)

    def warm_up(self, channels: int = 1) -> None:
        """Pay the first-call costs (FFT plans, the session's first run) before the stream starts."""
        self.lpc.warm_up(channels)
        t = np.arange(self.context_samples, dtype=np.float32)
        tone = 0.1 * np.sin(2 * np.pi * 440.0 / 44_100 * t) + 0.01 * np.sin(2 * np.pi * 3000.0 / 44_100 * t)
        for _ in range(3):
            self.conceal(np.repeat(tone[:, None], channels, axis=1), 0)


__all__ = [
    "CHUNK_SAMPLES",
    "FEATURE_CEILING",
    "GAP_FRAME",
    "GanConcealer",
    "ModelNotFoundError",
    "SpectralFrontEnd",
    "default_model_path",
]
