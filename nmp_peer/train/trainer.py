"""Train the bin2bin-v2 generator: one command, resumable.

    python -m nmp_peer.train.train --config bin2bin_v2 --data DIR --out DIR

``DIR`` (data) holds WAV clips, in ``train/`` and ``valid/`` as ``nmp_peer.synth.build_set``
writes them. ``--out`` receives:

- ``last.pt``: everything needed to continue (networks, EMA, optimisers, step); a new
  run with the same ``--out`` resumes from it, after an interruption or with more steps;
- ``best.pt``: the generator with the best validation LSD (EMA weights, BatchNorm
  statistics recalibrated), which ``nmp_peer.train.export`` turns into ONNX;
- ``train_log.csv``, ``valid_log.csv``, ``losses.png``, ``valid.png``;
- ``cache/``: the LP-filled examples (``nmp_peer.train.data``) unless ``--cache`` says where.

``--device cuda`` (or ``auto``, the default) trains on a GPU: the examples are held on it
and each batch's features are made there (``TorchFrontEnd``); ``scripts/gpu-burst.sh``
runs one time-boxed burst on a lent machine. ``--init CHECKPOINT`` starts a new run from
another run's generator.

Validation runs the generator through the runtime's own numpy front end and scores the
predicted packet with the lab's metrics (``lost_packet_lsd_db``, ``lost_packet_snr_db``):
the EMA generator with recalibrated BatchNorm statistics (what is exported), the raw
weights with their running statistics (to see how much the two differ), and LPC alone.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nmp_peer import BLOCK_FRAMES
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
from nmp_peer.conceal.lpc import LpcConcealer
from nmp_peer.lab import metrics
from nmp_peer.train import losses
from nmp_peer.train.config import TrainConfig, config_from_dict, load_config
from nmp_peer.train.data import FILL_SAMPLES, ChunkSet, build_cache, find_clips
from nmp_peer.train.model import Discriminator, Generator, count_parameters

RECOVERY_FADE_SAMPLES = LpcConcealer.recovery_fade_samples
PACKET_END_FRAME = (CHUNK_CONTEXT_SAMPLES + BLOCK_FRAMES + RECOVERY_FADE_SAMPLES - 1 + PAD) // HOP + 1
"""One past the last frame that reaches what the engine plays of a prediction: the first
packet and the recovery fade from the second (244)."""
TINY_POWER = 1e-24
VALIDATION = "engine-v4"
"""What the validation numbers mean; a checkpoint made under another definition does not
keep its best score (see ``Trainer.predict``)."""
TRAIN_FIELDS = ("step", "seconds", "lr", "sc", "log_mag", "adv_g", "adv_d", "sec_per_step")
VALID_FIELDS = ("step", "lsd_db", "snr_db", "lsd_raw_db", "snr_raw_db", "lsd_lpc_db", "snr_lpc_db")


def lr_at(step: int, config: TrainConfig) -> float:
    """Cosine decay from ``lr`` to ``lr * final_lr_fraction`` over ``optim.steps``."""
    o = config.optim
    t = min(step / max(o.steps, 1), 1.0)
    low = o.lr * o.final_lr_fraction
    return low + (o.lr - low) * 0.5 * (1.0 + math.cos(math.pi * t))


def to_tensor(x: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x[:, None])).to(device)
    return t.contiguous(memory_format=torch.channels_last)


def pick_device(name: str) -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


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
        spec = torch.stft(
            chunks, N_FFT, HOP, N_FFT, self.window, center=True, pad_mode="reflect", return_complex=True
        )[..., GAP_FRAME:]  # (B, bins, 79)
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
        spec = torch.stft(
            played, N_FFT, HOP, N_FFT, self.window, center=True, pad_mode="reflect", return_complex=True
        )
        # |S| and the square root with a floor far below any level that counts (1e-12 of the
        # peak): their gradients at an exact zero (a silent bin) would be NaN and infinite.
        power = spec.real**2 + spec.imag**2 + TINY_POWER * gain[:, None, None] ** 2
        return (power**0.25 / gain[:, None, None].sqrt()) * (1.0 / FEATURE_CEILING)


class DeviceChunks:
    """A ``ChunkSet`` held as tensors on the training device (int16 clean, float32 fill)."""

    def __init__(self, data: ChunkSet, device: torch.device) -> None:
        self.clean = torch.from_numpy(data.clean).to(device)
        self.fill = torch.from_numpy(data.fill).to(device)

    def __len__(self) -> int:
        return len(self.clean)

    def batch(self, index: np.ndarray, sign: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``ChunkSet.batch``, times ``sign``: (LP-filled input, clean target) ``(B, 4096)``."""
        i = torch.from_numpy(index).to(self.clean.device)
        s = torch.from_numpy(sign).to(self.clean.device)
        clean = self.clean[i].float() * (s / 32768.0)
        inp = clean.clone()
        inp[:, -FILL_SAMPLES:] = self.fill[i] * s
        return inp, clean


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
        self.G = Generator(m.features, m.norm, m.residual).to(self.device, memory_format=torch.channels_last)
        self.G.set_form("train")
        self.D = Discriminator(m.disc_features, frames=config.loss.discriminator_frames).to(
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
            for e, b in zip(self.ema.buffers(), self.G.buffers()):
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
                if model == "oracle":
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


class CsvLog:
    """Appends rows; on resume drops rows past the checkpoint's step (they were never saved)."""

    def __init__(self, path: Path, fields: tuple[str, ...], resume_step: int) -> None:
        self.path = path
        self.fields = fields
        rows = []
        if path.is_file() and resume_step > 0:
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items() if k in self.fields}
            )

    def read(self) -> list[dict[str, float]]:
        with open(self.path, newline="") as f:
            return [
                {k: float(v) if v not in ("", "nan") else float("nan") for k, v in r.items()}
                for r in csv.DictReader(f)
            ]


def plot_logs(out: Path, train_log: CsvLog, valid_log: CsvLog) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = train_log.read()
    if rows:
        steps = np.array([r["step"] for r in rows])
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for key in ("sc", "log_mag"):
            axes[0].plot(steps, _smooth(np.array([r[key] for r in rows])), label=key)
        axes[0].set_xlabel("step")
        axes[0].set_title("spectral losses (smoothed)")
        axes[0].legend()
        for key in ("adv_g", "adv_d"):
            v = np.array([r[key] for r in rows])
            ok = np.isfinite(v)
            if ok.any():
                axes[1].plot(steps[ok], _smooth(v[ok]), label=key)
        axes[1].set_xlabel("step")
        axes[1].set_title("LSGAN losses (smoothed)")
        axes[1].legend()
        fig.tight_layout()
        fig.savefig(out / "losses.png", dpi=100)
        plt.close(fig)
    rows = valid_log.read()
    if rows:
        steps = np.array([r["step"] for r in rows])
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        panels = (
            (axes[0], "lsd", "LSD on the predicted packet, dB (lower is better)"),
            (axes[1], "snr", "SNR on the predicted packet, dB"),
        )
        for ax, metric, title in panels:
            ax.plot(steps, [r[f"{metric}_db"] for r in rows], "o-", label="EMA + recalibrated BN")
            ax.plot(steps, [r[f"{metric}_raw_db"] for r in rows], "x--", label="raw weights")
            ax.axhline(rows[0][f"{metric}_lpc_db"], color="gray", ls=":", label="LPC alone")
            ax.set_xlabel("step")
            ax.set_title(title, fontsize=9)
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / "valid.png", dpi=100)
        plt.close(fig)


def _smooth(v: np.ndarray, n: int = 20) -> np.ndarray:
    if len(v) < n:
        return v
    kernel = np.ones(n) / n
    return np.convolve(np.pad(v, (n - 1, 0), mode="edge"), kernel, mode="valid")


def _progress(enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        disable=not enabled,
    )


def load_data(config: TrainConfig, data_dir: Path, cache_dir: Path, show: bool) -> tuple[ChunkSet, ChunkSet]:
    train_files, valid_files = find_clips(data_dir)
    if not train_files or not valid_files:
        raise SystemExit(f"error: {data_dir} needs WAV clips for training and validation (train/ and valid/)")
    jobs = config.train.cache_jobs or os.cpu_count() or 1
    with _progress(show) as progress:
        for name, files, cap in (("train", train_files, None), ("valid", valid_files, None)):
            task = progress.add_task(f"LP-filling {name}", total=len(files), info="")
            progress.update(task, info=f"{len(files)} clips")

            def report(done: int, total: int, task: Any = task) -> None:
                progress.update(task, completed=done)

            if name == "train":
                train_set = build_cache(
                    files, cache_dir / "train", config.data, jobs=jobs, max_chunks_per_clip=cap, progress=report
                )
            else:
                per_clip = -(-config.data.max_valid_chunks // len(files))
                valid_set = build_cache(
                    files, cache_dir / "valid", config.data, jobs=jobs, max_chunks_per_clip=per_clip, progress=report
                )
    if len(valid_set) > config.data.max_valid_chunks:
        keep = config.data.max_valid_chunks
        valid_set = ChunkSet(valid_set.clean[:keep], valid_set.fill[:keep])
    return train_set, valid_set


def train(
    config: TrainConfig,
    data_dir: Path,
    out: Path,
    *,
    cache_dir: Path | None = None,
    steps: int | None = None,
    max_minutes: float | None = None,
    progress: bool = True,
    device: str = "auto",
    init: Path | None = None,
) -> Trainer:
    """Train (or resume) until ``optim.steps`` (or ``steps``) or ``max_minutes`` of this run."""
    torch.set_num_threads(config.train.threads)
    dev = pick_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out.mkdir(parents=True, exist_ok=True)
    train_set, valid_set = load_data(config, data_dir, cache_dir or out / "cache", progress)
    trainer = Trainer(config, train_set, valid_set, out, dev)
    last = out / "last.pt"
    if last.is_file():
        stored = torch.load(last, map_location="cpu", weights_only=False)["config"]
        if config_from_dict(stored).model != config.model:
            raise SystemExit(f"error: {last} was trained with another [model] section; use a new --out")
        trainer.load(last)
    elif init is not None:
        trainer.init_from(init)
    train_log = CsvLog(out / "train_log.csv", TRAIN_FIELDS, trainer.step)
    valid_log = CsvLog(out / "valid_log.csv", VALID_FIELDS, trainer.step)
    total = steps if steps is not None else config.optim.steps
    stop = {"flag": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["flag"] = True

    old = signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    print(
        f"{config.name}: generator {count_parameters(trainer.G):,} parameters, "
        f"{len(train_set):,} training / {len(valid_set)} validation examples, "
        f"step {trainer.step} of {total}, on {dev}",
        file=sys.stderr,
    )
    last_valid = ""
    try:
        with _progress(progress) as bar:
            task = bar.add_task("training", total=total, completed=trainer.step, info="")
            mark, mark_step = time.monotonic(), trainer.step
            while trainer.step < total and not stop["flag"]:
                if max_minutes is not None and time.monotonic() - started > 60 * max_minutes:
                    break
                rng = np.random.default_rng([config.train.seed, trainer.step])
                row = trainer.train_step(rng)
                if trainer.step % config.train.log_every == 0 or trainer.step == total:
                    values = {k: float(v) for k, v in row.items()}  # waits for the device
                    now = time.monotonic()
                    per_step = (now - mark) / max(trainer.step - mark_step, 1)
                    trainer.seconds += now - mark
                    mark, mark_step = now, trainer.step
                    train_log.append(
                        {"step": trainer.step, "seconds": trainer.seconds, "sec_per_step": per_step, **values}
                    )
                    bar.update(
                        task,
                        completed=trainer.step,
                        info=f"sc {values['sc']:.3f} log-mag {values['log_mag']:.3f} "
                        f"{per_step:.3f} s/step {last_valid}",
                    )
                if trainer.step % config.train.valid_every == 0 or trainer.step == total:
                    v = trainer.validate()
                    valid_log.append(v)
                    last_valid = f"val LSD {v['lsd_db']:.2f} dB (LPC {v['lsd_lpc_db']:.2f})"
                    plot_logs(out, train_log, valid_log)
                    mark = time.monotonic()  # validation time is not training time
                if trainer.step % config.train.checkpoint_every == 0:
                    trainer.save()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        trainer.save()
        if not (out / "best.pt").is_file():
            valid_log.append(trainer.validate())
        plot_logs(out, train_log, valid_log)
    print(f"stopped at step {trainer.step}; continue with the same command", file=sys.stderr)
    return trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the bin2bin-v2 generator (resumes from --out/last.pt).")
    parser.add_argument("--config", required=True, help="TOML file or a shipped name (nmp_peer/conf/train: bin2bin_v2, tiny, ...)")
    parser.add_argument("--data", required=True, type=Path, help="folder of WAV clips (train/ and valid/)")
    parser.add_argument("--out", required=True, type=Path, help="run folder: checkpoints, logs, plots")
    parser.add_argument("--cache", type=Path, default=None, help="LP-filled example cache (default OUT/cache)")
    parser.add_argument("--steps", type=int, default=None, help="stop at this step instead of optim.steps")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (and checkpoint) after this long")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when present)")
    parser.add_argument("--init", type=Path, default=None, help="a new run starts from this checkpoint's generator")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--oracle", action="store_true",
                        help="no training: print LSD/SNR on the validation split of LPC alone and of the true "
                        "magnitude with the LP phase (the bound of a magnitude-only refinement)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.oracle:
        train_set, valid_set = load_data(config, args.data, args.cache or args.out / "cache", not args.no_progress)
        trainer = Trainer(config, train_set, valid_set, args.out)
        print(json.dumps({"lpc": trainer.score(None), "oracle": trainer.score("oracle")}))
        return 0
    train(
        config,
        args.data,
        args.out,
        cache_dir=args.cache,
        steps=args.steps,
        max_minutes=args.max_minutes,
        progress=not args.no_progress,
        device=args.device,
        init=args.init,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
