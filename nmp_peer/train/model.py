"""The bin2bin-v2 networks: a depthwise-separable U-Net generator and a conditional discriminator.

Shapes follow the runtime (``nmp_peer.conceal.gan``): the generator maps one
``1 x 256 x 256`` compressed STFT magnitude (bins x frames) of the LP-filled chunk to
the refined one, in the same scale, through a sigmoid. ``features`` sets the width:
the encoder has ``features * (1, 2, 4, 4, 4)`` channels, so ``features=16`` is the
report's [16, 32, 64, 64, 64] (about 81 K parameters, the authors' training configs)
and ``features=64`` reproduces the report's Table I (1,152,449 parameters).

``norm`` picks the normalisation after each pointwise convolution: ``"batch"`` (the
report's BatchNorm; folded into the convolutions at export) or ``"group"`` (GroupNorm,
no running statistics, so no train/eval mismatch and no recalibration; costs a little
at inference because it cannot be folded).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_MULTIPLIERS = (1, 2, 4, 4, 4)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose batch, group or none")


class DownBlock(nn.Module):
    """4x4 depthwise conv, stride 2 -> 1x1 pointwise -> norm -> LeakyReLU(0.2).

    With ``fused`` the two convolutions run as one dense 4x4 convolution whose kernel is
    their product (``pointwise[o, c] * depthwise[c]``): the same function and the same
    parameters, but PyTorch's CPU depthwise kernels are slow, above all backwards, and
    on the high-resolution stages the dense form trains about twice as fast.
    """

    def __init__(self, c_in: int, c_out: int, norm: str, fused: bool = False) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 4, stride=2, padding=1, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=norm == "none")
        self.norm = _norm(norm, c_out)
        self.act = nn.LeakyReLU(0.2)
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            pw = self.pointwise.weight  # (out, in, 1, 1)
            kernel = pw * self.depthwise.weight.transpose(0, 1)  # (out, in, 4, 4)
            y = F.conv2d(x, kernel, self.pointwise.bias, stride=2, padding=1)
        else:
            y = self.pointwise(self.depthwise(x))
        return self.act(self.norm(y))


class UpBlock(nn.Module):
    """4x4 depthwise transposed conv, stride 2 -> 1x1 pointwise -> norm -> ReLU
    (the last one: no norm, sigmoid). ``fused`` as in ``DownBlock``."""

    def __init__(self, c_in: int, c_out: int, norm: str, last: bool = False, fused: bool = False) -> None:
        super().__init__()
        self.depthwise = nn.ConvTranspose2d(c_in, c_in, 4, stride=2, padding=1, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=last or norm == "none")
        self.norm = nn.Identity() if last else _norm(norm, c_out)
        self.act = nn.Sigmoid() if last else nn.ReLU()
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            pw = self.pointwise.weight  # (out, in, 1, 1)
            kernel = self.depthwise.weight * pw.transpose(0, 1)  # (in, out, 4, 4)
            y = F.conv_transpose2d(x, kernel, self.pointwise.bias, stride=2, padding=1)
        else:
            y = self.pointwise(self.depthwise(x))
        return self.act(self.norm(y))


class Generator(nn.Module):
    """Depthwise-separable U-Net: five stride-2 stages down, a 3x3 bottleneck, five up."""

    def __init__(self, features: int = 16, norm: str = "batch", multipliers: Sequence[int] = ENCODER_MULTIPLIERS) -> None:
        super().__init__()
        self.features = features
        self.norm_kind = norm
        chans = [features * m for m in multipliers]
        self.down = nn.ModuleList()
        c_prev = 1
        for k, c in enumerate(chans):
            self.down.append(DownBlock(c_prev, c, norm, fused=k == 0))
            c_prev = c
        self.bottleneck = nn.Sequential(
            nn.Conv2d(chans[-1], chans[-1], 3, padding=1, bias=norm == "none"),
            _norm(norm, chans[-1]),
            nn.LeakyReLU(0.2),
        )
        # Decoder stage k takes [previous output, encoder skip k] and mirrors encoder stage k.
        self.up = nn.ModuleList()
        c_in = chans[-1]
        for k in range(len(chans) - 1, -1, -1):
            c_out = chans[k - 1] if k > 0 else 1
            self.up.append(UpBlock(c_in + chans[k], c_out, norm, last=k == 0, fused=k <= 1))
            c_in = c_out

    def set_fused(self, fused: bool) -> None:
        """Dense form on the stages where it is faster (training), or the literal
        depthwise-separable form everywhere (``False``: export, and the runtime's graph)."""
        n = len(self.down)
        for k, block in enumerate(self.down):
            block.fused = fused and k == 0
        for k, block in enumerate(self.up):
            block.fused = fused and k >= n - 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.bottleneck(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = block(torch.cat([x, skip], dim=1))
        return x


class Discriminator(nn.Module):
    """Conditional LSGAN critic: [candidate, LP-filled input] -> one unbounded score.

    A strided conv, then CNN blocks (reflection padding, conv stride 2, BatchNorm,
    LeakyReLU), then a fully connected layer to a scalar, as in the report.
    """

    def __init__(self, features: int = 16, frames: int = 128, bins: int = 256, n_blocks: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(2, features, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = features
        for k in range(n_blocks):
            c_out = features * min(2 ** (k + 1), 4)
            layers += [
                nn.ReflectionPad2d(1),
                nn.Conv2d(c, c_out, 4, stride=2, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2),
            ]
            c = c_out
        self.body = nn.Sequential(*layers)
        side = 2 ** (n_blocks + 1)
        self.head = nn.Linear(c * (bins // side) * (frames // side), 1)

    def forward(self, candidate: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = self.body(torch.cat([candidate, condition], dim=1))
        return self.head(h.flatten(1)).squeeze(1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int] = (1, 1, 256, 256)) -> int:
    """Multiply-accumulates of one forward pass (convolutions, transposed convolutions and
    linear layers; normalisations and activations not counted), measured with forward hooks."""
    total = 0

    def conv_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.ConvTranspose2d):
            # every input position scatters a kernel into c_out / groups channels
            x = inputs[0]
            k = module.kernel_size[0] * module.kernel_size[1]
            total += x.numel() * k * module.out_channels // module.groups
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * k * module.in_channels // module.groups
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [
        m.register_forward_hook(conv_hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(*input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def model_info(features: int = 16, norm: str = "batch") -> dict[str, int | str]:
    """Parameter count and mult-adds of the generator at this width (for ``model-info``)."""
    g = Generator(features, norm)
    return {
        "model": f"bin2bin-v2 generator, features={features}, norm={norm}",
        "parameters": count_parameters(g),
        "macs": count_macs(g),
    }
