"""Generator and discriminator objectives: spectral convergence, log-STFT magnitude, LSGAN.

The spectral terms compare magnitudes on the scale the runtime inverts, ``|S| / g =
(C * feature) ** 2`` (see ``nmp_peer.conceal.gan``), over the frames that reach the
predicted samples only: the other frames are context, which the runtime never uses.
"""

from __future__ import annotations

import torch

from nmp_peer.conceal.gan import FEATURE_CEILING


def magnitude(feature: torch.Tensor) -> torch.Tensor:
    return (FEATURE_CEILING * feature) ** 2


def spectral_convergence(target_mag: torch.Tensor, pred_mag: torch.Tensor) -> torch.Tensor:
    """``||S - S^||_F / ||S||_F`` per example, averaged (report eq. 3)."""
    dims = tuple(range(1, target_mag.ndim))
    num = torch.sqrt(torch.sum((target_mag - pred_mag) ** 2, dim=dims))
    den = torch.sqrt(torch.sum(target_mag**2, dim=dims)).clamp_min(1e-8)
    return torch.mean(num / den)


def log_magnitude(target_mag: torch.Tensor, pred_mag: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Mean ``|log(S + eps) - log(S^ + eps)|`` (report eq. 4). ``eps`` (relative to the
    chunk's peak) sits near the 16-bit noise floor of these spectra, so the loss does not
    chase quantisation noise in empty bins."""
    return torch.mean(torch.abs(torch.log(target_mag + eps) - torch.log(pred_mag + eps)))


def lsgan_generator(fake_score: torch.Tensor) -> torch.Tensor:
    """``1/2 E[(D(G(z)|c) - 1)^2]`` (report eq. 2)."""
    return 0.5 * torch.mean((fake_score - 1.0) ** 2)


def lsgan_discriminator(real_score: torch.Tensor, fake_score: torch.Tensor) -> torch.Tensor:
    """``1/2 E[(D(x|c) - 1)^2] + 1/2 E[D(G(z)|c)^2]`` (report eq. 1)."""
    return 0.5 * torch.mean((real_score - 1.0) ** 2) + 0.5 * torch.mean(fake_score**2)
