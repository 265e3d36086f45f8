"""The Trainer: bin2bin-v2's generator and critic, their optimisers, the EMA and validation.

One ``train_step`` is a generator update on a batch made on the device (every n_G-th a
critic update too); ``validate`` scores the EMA generator with recalibrated BatchNorm
statistics (what is exported), the raw weights and LPC alone on the validation split,
through the runtime's numpy front end and the lab's metrics, and keeps the best as
``best.pt``. The training loop and its command line are ``nmp_peer.train.train``.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nmp_peer import BLOCK_FRAMES
from nmp_peer.conceal.gan import CHUNK_CONTEXT_SAMPLES, GAP_FRAME, HOP, PAD, SpectralFrontEnd
from nmp_peer.conceal.lpc import LpcConcealer
from nmp_peer.lab import metrics
from nmp_peer.train import losses
from nmp_peer.train.batches import DeviceChunks, to_tensor
from nmp_peer.train.config import TrainConfig, config_from_dict
from nmp_peer.train.data import ChunkSet
from nmp_peer.train.frontend import TorchFrontEnd
from nmp_peer.train.model import Discriminator, Generator

RECOVERY_FADE_SAMPLES = LpcConcealer.recovery_fade_samples
PACKET_END_FRAME = (CHUNK_CONTEXT_SAMPLES + BLOCK_FRAMES + RECOVERY_FADE_SAMPLES - 1 + PAD) // HOP + 1
"""One past the last frame that reaches what the engine plays of a prediction: the first
packet and the recovery fade from the second (244)."""
VALIDATION = "engine-v4"
"""What the validation numbers mean; a checkpoint made under another definition does not
keep its best score (see ``Trainer.predict``)."""


def lr_at(step: int, config: TrainConfig) -> float:
    """Cosine decay from ``lr`` to ``lr * final_lr_fraction`` over ``optim.steps``."""
    o = config.optim
    t = min(step / max(o.steps, 1), 1.0)
    low = o.lr * o.final_lr_fraction
    return low + (o.lr - low) * 0.5 * (1.0 + math.cos(math.pi * t))


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        train_set: ChunkSet,
        valid_set: ChunkSet,
        out: Path,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.train_chunks = DeviceChunks(train_set, self.device)
        self.valid_set = valid_set
        self.out = out
        self.front = SpectralFrontEnd()
        self.torch_front = TorchFrontEnd(self.device)
        torch.manual_seed(config.train.seed)
        m = config.model
        # (torch's type stubs lack Module.to's memory_format; it is a documented argument)
        self.G = Generator(m.features, m.norm, m.residual).to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.G.set_form("train")
        self.D = Discriminator(m.disc_features, frames=config.loss.discriminator_frames).to(  # type: ignore[call-overload]
            self.device, memory_format=torch.channels_last
        )
        self.ema = copy.deepcopy(self.G).requires_grad_(False)
        o = config.optim
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=o.lr, betas=o.betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=o.lr, betas=o.betas)
        self.step = 0
        self.seconds = 0.0
        self.best_lsd = float("inf")
        self.lpc_scores: dict[str, float] | None = None
        self.last_d_loss: float | torch.Tensor = float("nan")

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "seconds": self.seconds,
            "best_lsd": self.best_lsd,
            "validation": VALIDATION,
            "config": self.config.to_dict(),
            "generator": self.G.state_dict(),
            "discriminator": self.D.state_dict(),
            "ema": self.ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
        }

    def save(self, name: str = "last.pt") -> None:
        _atomic_save(self.state(), self.out / name)

    def init_from(self, path: Path) -> None:
        """Start from the generator of another run (a ``best.pt``, or a ``last.pt``'s EMA):
        weights and BatchNorm statistics into the generator and its EMA; the critic, the
        optimisers and the step start fresh."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        if config_from_dict(state["config"]).model != self.config.model:
            raise SystemExit(f"error: {path} holds another [model] than this config's")
        weights = state["ema"] if "ema" in state else state["generator"]
        self.G.load_state_dict(weights)
        self.ema.load_state_dict(weights)

    def load(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        self.ema.load_state_dict(state["ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.step = int(state["step"])
        self.seconds = float(state["seconds"])
        self.best_lsd = float(state["best_lsd"]) if state.get("validation") == VALIDATION else float("inf")

    # ------------------------------------------------------------------ data
    def batch(
        self, rng: np.random.Generator, size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features and target features ``(B, 1, 256, 256)`` of random training examples,
        and their LP-filled chunks ``(B, 4096)`` and gains ``(B,)``."""
        index = rng.integers(0, len(self.train_chunks), size)
        sign = rng.choice(np.array([-1.0, 1.0], np.float32), size)[:, None]  # LPC is odd: a free augmentation
        inp, clean = self.train_chunks.batch(index, sign)
        with torch.no_grad():
            feature, gain = self.torch_front.analyze(inp)
            target = self.torch_front.target_features(clean, gain)
        shape = (size, 1, *feature.shape[1:])
        return (
            feature.reshape(shape).contiguous(memory_format=torch.channels_last),
            target.reshape(shape).contiguous(memory_format=torch.channels_last),
            inp,
            gain,
        )

    # ------------------------------------------------------------------ training
    def train_step(self, rng: np.random.Generator) -> dict[str, float | torch.Tensor]:
        """One generator update (and every n_G-th a critic update); losses as 0-d tensors,
        so that the caller decides when to wait for the device (``float()``)."""
        c = self.config
        lr = lr_at(self.step, c)
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = lr
        x, y, inp, gain = self.batch(rng, c.optim.batch_size)
        self.G.train()
        out = self.G(x)
        if c.loss.domain == "resynthesis":
            out = self.torch_front.played_features(out[:, 0], inp, gain)[:, None]
        frames = slice(GAP_FRAME, PACKET_END_FRAME if c.loss.loss_frames == "packet" else None)
        pred_mag = losses.magnitude(out[..., frames])
        true_mag = losses.magnitude(y[..., frames])
        sc = losses.spectral_convergence(true_mag, pred_mag)
        log_mag = losses.log_magnitude(true_mag, pred_mag, c.loss.log_eps)
        loss = c.loss.spectral_weight * (sc + log_mag)
        adversarial = c.loss.adversarial_weight > 0 and self.step >= c.loss.adversarial_start_step
        adv_g: float | torch.Tensor = float("nan")
        if adversarial:
            k = c.loss.discriminator_frames
            # the critic sees the last k frames; before the gap both candidates hold the truth
            fake = torch.cat([y[..., -k:GAP_FRAME], out[..., GAP_FRAME:]], dim=-1)
            cond = x[..., -k:]
            g_adv = losses.lsgan_generator(self.D(fake, cond))
            loss = loss + c.loss.adversarial_weight * g_adv
            adv_g = g_adv.detach()
        self.opt_G.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_G.step()
        self._update_ema()
        if adversarial and self.step % c.loss.generator_steps_per_discriminator_step == 0:
            d_loss = losses.lsgan_discriminator(self.D(y[..., -k:], cond), self.D(fake.detach(), cond))
            self.opt_D.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_D.step()
            self.last_d_loss = d_loss.detach()
        self.step += 1
        return {
            "lr": lr,
            "sc": sc.detach(),
            "log_mag": log_mag.detach(),
            "adv_g": adv_g,
            "adv_d": self.last_d_loss,
        }

    def _update_ema(self) -> None:
        decay = min(self.config.train.ema_decay, (1.0 + self.step) / (10.0 + self.step))
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.G.parameters()), 1.0 - decay)
            for e, b in zip(self.ema.buffers(), self.G.buffers(), strict=False):
                e.copy_(b)

    # ------------------------------------------------------------------ validation
    def recalibrated(self) -> nn.Module:
        """The EMA generator with BatchNorm statistics recomputed on training batches."""
        model = copy.deepcopy(self.ema)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        if bns:
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average over the calibration batches
            rng = np.random.default_rng([self.config.train.seed, 0xCA1])
            model.train()
            with torch.no_grad():
                for _ in range(self.config.train.bn_recalibration_batches):
                    model(self.batch(rng, self.config.optim.batch_size)[0])
            for bn in bns:
                bn.momentum = 0.1
        return model.eval()

    def predict(
        self, model: nn.Module | str | None, data: ChunkSet, batch: int = 16
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reference, played and mask over the validation chunks; ``model=None``: LPC alone;
        ``model="oracle"``: the true magnitude with the LP phase (what a perfect magnitude
        refinement could reach; it reads the future, so it is a bound, not a concealer).

        As the playout engine plays an isolated loss: two packets of history, the first
        predicted packet, then the real next packet, faded in from the prediction's
        second packet over the concealer's recovery fade. The LSD frame of the lost packet
        (1024 samples centred on it) thus sees both seams, as in the lab's measurements.
        """
        fade = 0.5 - 0.5 * np.cos(np.pi * (np.arange(RECOVERY_FADE_SAMPLES) + 0.5) / RECOVERY_FADE_SAMPLES)
        refs, tests = [], []
        for start in range(0, len(data), batch):
            index = np.arange(start, min(start + batch, len(data)))
            inp, clean = data.batch(index)
            lp = inp[:, CHUNK_CONTEXT_SAMPLES:]
            if model is None:
                pred = lp
            else:
                feature, gap_spec, gain = self.front.analyze(inp)
                if isinstance(model, str):  # "oracle": the clean target's own features
                    out = self.front.target_features(clean, gain)
                else:
                    with torch.no_grad():
                        out = model(to_tensor(feature, self.device)).cpu().numpy()[:, 0]
                pred = np.clip(self.front.crossfade(lp, self.front.synthesize(out, gap_spec, gain)), -1, 1)
            seg = slice(CHUNK_CONTEXT_SAMPLES - 1024, None)  # 2 packets of history, the 2 predicted
            refs.append(clean[:, seg])
            played = clean[:, seg].copy()
            played[:, :1024] = inp[:, seg][:, :1024]
            played[:, 1024:1536] = pred[:, :BLOCK_FRAMES]
            tail = pred[:, BLOCK_FRAMES : BLOCK_FRAMES + RECOVERY_FADE_SAMPLES]
            head = played[:, 1536 : 1536 + RECOVERY_FADE_SAMPLES]
            played[:, 1536 : 1536 + RECOVERY_FADE_SAMPLES] = tail + (head - tail) * fade
            tests.append(played)
        ref = np.concatenate(refs).ravel()
        test = np.concatenate(tests).ravel()
        lost = np.tile(np.array([False, False, True, False]), len(data))
        return ref, test, lost

    def score(self, model: nn.Module | str | None) -> dict[str, float]:
        ref, test, lost = self.predict(model, self.valid_set)
        return {
            "lsd": metrics.lost_packet_lsd_db(ref, test, lost),
            "snr": metrics.lost_packet_snr_db(ref, test, lost),
        }

    def validate(self) -> dict[str, float]:
        if self.lpc_scores is None:
            self.lpc_scores = self.score(None)
        model = self.recalibrated()
        ema = self.score(model)
        self.G.eval()
        raw = self.score(self.G)
        self.G.train()
        row = {
            "step": self.step,
            "lsd_db": ema["lsd"],
            "snr_db": ema["snr"],
            "lsd_raw_db": raw["lsd"],
            "snr_raw_db": raw["snr"],
            "lsd_lpc_db": self.lpc_scores["lsd"],
            "snr_lpc_db": self.lpc_scores["snr"],
        }
        if ema["lsd"] < self.best_lsd:
            self.best_lsd = ema["lsd"]
            _atomic_save(
                {
                    "step": self.step,
                    "config": self.config.to_dict(),
                    "generator": model.state_dict(),
                    "metrics": row,
                    "train_seconds": self.seconds,
                },
                self.out / "best.pt",
            )
        return row


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
