"""The examples on the training device: the data sets from the clips, batches as tensors.

``load_data`` LP-fills (or reads from the cache) the training and validation examples
(``nmp_peer.train.data``); ``DeviceChunks`` holds the training set on the device, so a
batch is an index, not a copy from the host.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmp_peer.train.config import TrainConfig
from nmp_peer.train.data import FILL_SAMPLES, ChunkSet, build_cache, find_clips
from nmp_peer.train.logs import progress_bar


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


def load_data(config: TrainConfig, data_dir: Path, cache_dir: Path, show: bool) -> tuple[ChunkSet, ChunkSet]:
    train_files, valid_files = find_clips(data_dir)
    if not train_files or not valid_files:
        raise SystemExit(f"error: {data_dir} needs WAV clips for training and validation (train/ and valid/)")
    jobs = config.train.cache_jobs or os.cpu_count() or 1
    with progress_bar(show) as progress:
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
