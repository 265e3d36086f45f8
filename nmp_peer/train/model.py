"""The bin2bin-v2 networks: a depthwise-separable U-Net generator and a conditional discriminator.

Shapes follow the runtime (``nmp_peer.conceal.gan``): the generator maps one
``1 x 256 x 256`` compressed STFT magnitude (bins x frames) of the LP-filled chunk to
the refined one, in the same scale, through a sigmoid. ``features`` sets the width:
the encoder has ``features * (1, 2, 4, 4, 4)`` channels, so ``features=16`` is the
report's [16, 32, 64, 64, 64] (about 81 K parameters, the authors' training configs)
and ``features=64`` reproduces the report's Table I (1,152,449 parameters).

``residual`` (a departure from the report, on by default) adds the input's logit before
the output sigmoid, so the network learns a correction of the LP-filled spectrogram
rather than the whole spectrogram; its last layer starts at zero, so the untrained
generator returns the LPC prediction unchanged. The LPC it refines is already good
(it keeps level and spectrum, see ``nmp_peer.conceal.lpc``), and a short training run
cannot spend its steps relearning the identity.

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
OUTPUT_BIAS_INIT = -4.0
RESIDUAL_EPS = 1e-6


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


_SUBPIXEL_TAPS = torch.zeros(2, 3, 4)
# ConvTranspose(k=4, stride 2, padding 1) along one axis: output 2m takes x[m-1] w[3] +
# x[m] w[1], output 2m+1 takes x[m] w[2] + x[m+1] w[0]; row a (output parity) maps the
# 4 kernel taps onto the 3 input offsets -1, 0, +1.
_SUBPIXEL_TAPS[0, 0, 3] = _SUBPIXEL_TAPS[0, 1, 1] = 1.0
_SUBPIXEL_TAPS[1, 1, 2] = _SUBPIXEL_TAPS[1, 2, 0] = 1.0


class UpBlock(nn.Module):
    """4x4 depthwise transposed conv, stride 2 -> 1x1 pointwise -> norm -> ReLU
    (the last one: no norm; the generator applies the sigmoid).

    ``form`` says how the same function is computed:

    - ``"separable"``: literally, as the two layers;
    - ``"fused"``: one dense transposed convolution with the product kernel (faster to
      train on a CPU at high resolution, as in ``DownBlock``);
    - ``"subpixel"``: each of the four output phases (row and column parity) is a 3x3
      depthwise convolution of the input followed by the pointwise one, and a pixel
      shuffle interleaves them. This is the exported form: onnxruntime's grouped
      ``ConvTranspose`` is slow (~3x the whole network's time on its own) whereas
      depthwise ``Conv`` has a fast path.
    """

    def __init__(self, c_in: int, c_out: int, norm: str, last: bool = False) -> None:
        super().__init__()
        self.depthwise = nn.ConvTranspose2d(c_in, c_in, 4, stride=2, padding=1, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=last or norm == "none")
        self.norm = nn.Identity() if last else _norm(norm, c_out)
        self.act = nn.Identity() if last else nn.ReLU()
        self.form = "separable"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "fused":
            kernel = self.depthwise.weight * self.pointwise.weight.transpose(0, 1)  # (in, out, 4, 4)
            y = F.conv_transpose2d(x, kernel, self.pointwise.bias, stride=2, padding=1)
        elif self.form == "subpixel":
            y = self._subpixel(x)
        else:
            y = self.pointwise(self.depthwise(x))
        return self.act(self.norm(y))

    def phase_kernels(self) -> list[torch.Tensor]:
        """The four 3x3 depthwise kernels ``(C, 1, 3, 3)`` of output parities (0,0), (0,1),
        (1,0), (1,1), from the 4x4 transposed-convolution kernel."""
        taps = _SUBPIXEL_TAPS.to(self.depthwise.weight.dtype)
        kernels = torch.einsum("aik,bjl,ckl->cabij", taps, taps, self.depthwise.weight[:, 0])
        return [kernels[:, a, b, None].contiguous() for a in (0, 1) for b in (0, 1)]

    def freeze_phase_kernels(self) -> None:
        """Compute the phase kernels once, for export: the ONNX graph then holds them as
        constants (which onnxruntime prepacks) instead of recomputing them on every run."""
        with torch.no_grad():
            self.frozen_kernels: list[torch.Tensor] | None = self.phase_kernels()

    def _subpixel(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        kernels = getattr(self, "frozen_kernels", None) or self.phase_kernels()
        phases = [self.pointwise(F.conv2d(x, k, padding=1, groups=c)) for k in kernels]
        y = torch.stack(phases, dim=2).reshape(n, -1, h, w)  # channel o * 4 + 2a + b
        return F.pixel_shuffle(y, 2)


class Generator(nn.Module):
    """Depthwise-separable U-Net: five stride-2 stages down, a 3x3 bottleneck, five up."""

    def __init__(
        self,
        features: int = 16,
        norm: str = "batch",
        residual: bool = True,
        multipliers: Sequence[int] = ENCODER_MULTIPLIERS,
    ) -> None:
        super().__init__()
        self.features = features
        self.norm_kind = norm
        self.residual = residual
        chans = [features * m for m in multipliers]
        self.down = nn.ModuleList()
        c_prev = 1
        for c in chans:
            self.down.append(DownBlock(c_prev, c, norm))
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
            self.up.append(UpBlock(c_in + chans[k], c_out, norm, last=k == 0))
            c_in = c_out
        with torch.no_grad():
            top = self.up[-1]
            assert isinstance(top, UpBlock)
            last = top.pointwise
            assert last.bias is not None  # the last block's 1x1 convolution has a bias
            if residual:
                # zero-initialised correction: the untrained generator returns its input
                last.weight.zero_()
                last.bias.zero_()
            else:
                # start the sigmoid near the median feature of music (about 0.01) instead of
                # 0.5, a level 30 dB too loud everywhere that early steps would spend undoing
                last.bias.fill_(OUTPUT_BIAS_INIT)

    def set_form(self, form: str) -> None:
        """How the separable blocks are computed; the function and parameters stay the same.

        ``"train"``: dense product kernels on the high-resolution stages, where PyTorch's
        CPU depthwise kernels are slowest (about 2x faster steps); ``"export"``: sub-pixel
        decoder with a dense last block, the form onnxruntime runs fastest (measured
        against the other mixes, interleaved, same process); ``"separable"``: as written.
        """
        if form not in ("train", "export", "separable"):
            raise ValueError(f"unknown form {form!r}")
        n = len(self.down)
        for k, down in enumerate(self.down):
            assert isinstance(down, DownBlock)
            down.fused = form == "train" and k == 0
        for k, block in enumerate(self.up):
            assert isinstance(block, UpBlock)
            if form == "train":
                block.form = "fused" if k >= n - 2 else "separable"
            elif form == "export":
                # the last block maps to one channel: there the dense transposed convolution
                # reads its input once and is the fastest (~17 % of the whole network)
                block.form = "fused" if k == n - 1 else "subpixel"
            else:
                block.form = "separable"

    def set_output_from(self, frame: int | None) -> None:
        """Compute only output frames ``frame`` onwards (the runtime uses only the frames
        that reach the predicted samples), or all of them (``None``).

        Every block then works on the time range its outputs need, and nothing else
        (``crop_plan``). The result equals the full network's ``[..., frame:]`` exactly
        (tested), and input frames before ``input_from()`` do not reach it, so the runtime
        need not compute them. With ``frame = 177`` the decoder's two high-resolution
        blocks do a third of their work and the encoder three quarters.
        """
        self.output_from = frame

    def crop_plan(self, start: int) -> tuple[list[int], int, list[int]]:
        """First exact frame each block must deliver for outputs ``start`` onwards:
        ``(encoder, bottleneck, decoder)``, encoder stage 0 first, decoder last block first.

        Decoder: a stride-2, kernel-4 transposed convolution makes output ``o`` from
        inputs ``(o - 2) // 2 .. (o + 1) // 2``, so its input must be exact from
        ``(o - 1) // 2``. Encoder: a stride-2, kernel-4 convolution (padding 1) makes
        ``o`` from ``2 o - 1 .. 2 o + 2``; the 3x3 bottleneck makes ``o`` from
        ``o - 1 .. o + 1``. A stage must also feed its skip connection from where the
        decoder reads it. Each block is given its input cropped one frame before the
        first exact one it needs (an even start, so the strided grid stays aligned, and
        one column for its zero padding to spoil); that one inexact output frame is
        never read.
        """
        decoder = [start]
        for _ in self.up:
            decoder.append(max((decoder[-1] - 1) // 2, 0))
        n = len(self.down)
        bottleneck = decoder[n]
        encoder = [0] * n
        need = bottleneck - 1
        for level in range(n - 1, -1, -1):
            # skip of stage ``level`` is read by the decoder block that makes resolution ``level``
            encoder[level] = max(min(decoder[level + 1], need), 0)
            need = 2 * encoder[level] - 1
        return encoder, bottleneck, decoder

    def input_from(self) -> int:
        """First input frame that reaches the outputs (0 when all frames are computed)."""
        start = getattr(self, "output_from", None)
        if start is None:
            return 0
        return max(2 * self.crop_plan(start)[0][0] - 1, 0)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        start = getattr(self, "output_from", None)
        if start is None:
            x = inp
            skips = []
            for block in self.down:
                x = block(x)
                skips.append(x)
            x = self.bottleneck(x)
            for block, skip in zip(self.up, reversed(skips), strict=False):
                x = block(torch.cat([x, skip], dim=1))
        else:
            encoder, bottleneck, decoder = self.crop_plan(start)
            x, offset = inp, 0  # offset: absolute frame index of x[..., 0] at x's resolution
            skips = []
            for block, first in zip(self.down, encoder, strict=False):
                crop = max(2 * first - 2, 0)
                x = block(x[..., crop - offset :])
                offset = crop // 2
                skips.append((x, offset))
            crop = max(bottleneck - 1, 0)
            x = self.bottleneck(x[..., crop - offset :])
            offset = crop
            for k, (block, (skip, skip_offset)) in enumerate(zip(self.up, reversed(skips), strict=False)):
                first_in = decoder[len(self.up) - k]  # crop inputs to start here
                x = block(torch.cat([x[..., first_in - offset :], skip[..., first_in - skip_offset :]], dim=1))
                offset = 2 * first_in
            x = x[..., start - offset :]
            inp = inp[..., start:]
        if self.residual:
            x = x + torch.logit(inp.clamp(RESIDUAL_EPS, 1.0 - RESIDUAL_EPS))
        return torch.sigmoid(x)


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
    linear layers; normalisations and activations not counted), measured with forward hooks
    on the separable form (for a generator restricted by ``set_output_from``, of that part)."""
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
    forms: list[tuple[nn.Module, bool | str]] = [(m, m.fused) for m in model.modules() if isinstance(m, DownBlock)]
    forms += [(m, m.form) for m in model.modules() if isinstance(m, UpBlock)]
    if isinstance(model, Generator):
        model.set_form("separable")  # count the network as designed, not a computation form
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(*input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        for m, f in forms:
            if isinstance(m, DownBlock):
                m.fused = bool(f)
            elif isinstance(m, UpBlock):
                m.form = str(f)
    return total


def model_info(features: int = 16, norm: str = "batch", residual: bool = True) -> dict[str, int | str]:
    """Parameter count and mult-adds of the generator at this width (for ``model-info``)."""
    g = Generator(features, norm, residual)
    return {
        "model": f"bin2bin-v2 generator, features={features}, norm={norm}",
        "parameters": count_parameters(g),
        "macs": count_macs(g),
    }
