"""The runtime's spectral front end in torch, on the training device.

Training batches (features of LP-filled chunks and of the true ones) are made with it
on the device, so that a GPU never waits for the CPU; the ``resynthesis`` loss domain
uses its differentiable copy of the runtime's inversion. Validation goes through the
runtime's own numpy front end (``nmp_peer.conceal.gan.SpectralFrontEnd``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nmp_peer.conceal.gan import (
    CHUNK_CONTEXT_SAMPLES,
    FEATURE_CEILING,
    GAIN_FLOOR,
    GAP_FRAME,
    HOP,
    N_FFT,
    PAD,
    PREDICT_SAMPLES,
    SpectralFrontEnd,
)

TINY_POWER = 1e-24


class TorchFrontEnd:
    """``SpectralFrontEnd.analyze`` / ``target_features`` in torch, on the training device.

    The same STFT (n_fft 511, hop 16, periodic Hann, centred frames with reflect padding)
    and the same feature ``sqrt(|S| / g) / C``; tests/test_train.py checks it against the
    numpy front end the runtime uses. Training batches are made with it so that a GPU
    never waits for the CPU; validation goes through the numpy front end.
    """

    def __init__(self, device: torch.device) -> None:
        self.window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64).float().to(device)
        numpy_front = SpectralFrontEnd()
        self.inv_wss = torch.from_numpy(numpy_front.inverse_window_sum).to(device)
        self.fade_in = torch.from_numpy(numpy_front.fade_in).to(device)

    def _features(self, x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            x, N_FFT, HOP, N_FFT, self.window, center=True, pad_mode="reflect", return_complex=True
        )  # (B, 256 bins, 256 frames)
        return torch.sqrt(spec.abs() / gain[:, None, None]) * (1.0 / FEATURE_CEILING)

    def analyze(self, chunks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(B, 256, 256)`` and gains ``(B,)`` of LP-filled chunks ``(B, 4096)``."""
        gain = chunks.abs().amax(dim=1).clamp_min(GAIN_FLOOR)
        return self._features(chunks, gain), gain

    def target_features(self, chunks: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return self._features(chunks, gain)

    def played_features(self, feature: torch.Tensor, chunks: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        """Features ``(B, 256, 256)`` of what the runtime makes of refined features
        ``(B, 256, 256)`` for LP-filled ``chunks``: ``SpectralFrontEnd.synthesize`` (the
        refined magnitude of the gap frames with the LP phase, weighted overlap-add),
        ``crossfade`` from the LP prediction, analysed again. Differentiable."""
        spec = torch.stft(chunks, N_FFT, HOP, N_FFT, self.window, center=True, pad_mode="reflect", return_complex=True)[
            ..., GAP_FRAME:
        ]  # (B, bins, 79)
        unit = spec / spec.abs().clamp_min(1e-20)
        mag = gain[:, None, None] * (FEATURE_CEILING * feature[..., GAP_FRAME:]) ** 2
        frames = torch.fft.irfft(mag * unit, n=N_FFT, dim=1) * self.window[None, :, None]  # (B, 511, 79)
        n_gap = frames.shape[-1]
        length = (n_gap - 1) * HOP + N_FFT
        ola = F.fold(frames, output_size=(1, length), kernel_size=(1, N_FFT), stride=(1, HOP))[:, 0, 0]
        first = CHUNK_CONTEXT_SAMPLES - (HOP * GAP_FRAME - PAD)  # the predicted part's first sample
        pred = ola[:, first : first + PREDICT_SAMPLES] * self.inv_wss
        lp = chunks[:, CHUNK_CONTEXT_SAMPLES:]
        n = len(self.fade_in)
        pred = torch.cat([lp[:, :n] + (pred[:, :n] - lp[:, :n]) * self.fade_in, pred[:, n:]], dim=1)
        played = torch.cat([chunks[:, :CHUNK_CONTEXT_SAMPLES], pred], dim=1)
        spec = torch.stft(played, N_FFT, HOP, N_FFT, self.window, center=True, pad_mode="reflect", return_complex=True)
        # |S| and the square root with a floor far below any level that counts (1e-12 of the
        # peak): their gradients at an exact zero (a silent bin) would be NaN and infinite.
        power = spec.real**2 + spec.imag**2 + TINY_POWER * gain[:, None, None] ** 2
        return (power**0.25 / gain[:, None, None].sqrt()) * (1.0 / FEATURE_CEILING)
