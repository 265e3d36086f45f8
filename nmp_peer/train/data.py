"""Training examples: 4096-sample chunks whose last 1024 samples were lost and LP-filled.

Every example is cut from a WAV clip at a seeded random position; the last 1024
samples are replaced by what the runtime's own ``LpcConcealer`` predicts from the 3584
samples before them (the concealer never sees the lost samples). With probability
``burst_fraction`` the packet before the gap was lost too: it is LP-concealed first and
the gap is predicted from a history that holds that concealment, as in the second
packet of a burst (Daniotti & Turchet trained with already-concealed contexts).

LP filling costs about a millisecond per example, so it is done once: one ``.npz``
shard per clip, written by a pool of processes, reused while the clips and the data
settings stay the same (a hash of both names the cache). The true chunks are stored as
int16 (they come from 16-bit WAVs, exactly), the LP part as float32, exactly as the
runtime hands it to the network: a first cache stored it as int16 too, which added a
16-bit noise floor (+3 dB in empty bands) to every training input but to no runtime
input, and the network learned to remove it (docs/model-card.md). Rendering, caching and
training may therefore be interrupted and resumed at any point.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from nmp_peer import BLOCK_FRAMES
from nmp_peer.conceal.gan import CHUNK_CONTEXT_SAMPLES, CHUNK_SAMPLES, PREDICT_SAMPLES, REFINE_MIN_RMS
from nmp_peer.conceal.lpc import LpcConcealer

LPC_CONTEXT_SAMPLES = 3584
FILL_SAMPLES = PREDICT_SAMPLES + BLOCK_FRAMES
"""Stored per example besides the clean chunk: the input's last 1536 samples (a concealed
packet before the gap, if any, and the LP part)."""
CACHE_FORMAT = 2
"""Bumped when what a shard holds changes (2: the LP part in float32), so old caches are not reused."""
LEAD_SAMPLES = LPC_CONTEXT_SAMPLES + BLOCK_FRAMES - CHUNK_CONTEXT_SAMPLES
"""Audio needed before a chunk: the LPC context of the earlier packet of a burst."""


class DataSettings(BaseModel):
    """The ``[data]`` section of a training config (``nmp_peer.train.config``); its values
    name the example cache, so changing one LP-fills the clips again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunks_per_second: float = Field(4.0, gt=0)
    """Examples cut per second of audio (positions drawn at random, overlaps allowed)."""
    min_target_rms: float = Field(REFINE_MIN_RMS, ge=0)
    """Examples whose lost 1024 samples are quieter than this (-60 dBFS) are skipped; the
    runtime plays an LP prediction this quiet unrefined."""
    burst_fraction: float = Field(0.2, ge=0, le=1)
    max_valid_chunks: int = Field(256, ge=1)
    seed: int = Field(0, ge=0)


@dataclass
class ChunkSet:
    """``clean``: (N, 4096) int16, the true chunks; ``fill``: (N, 1536) float32, the input's tail."""

    clean: np.ndarray
    fill: np.ndarray

    def __len__(self) -> int:
        return len(self.clean)

    def batch(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(LP-filled input, clean target) as float32 ``(B, 4096)``."""
        clean = self.clean[index].astype(np.float32) * (1.0 / 32768.0)
        inp = clean.copy()
        inp[:, -FILL_SAMPLES:] = self.fill[index]
        return inp, clean


def find_clips(data_dir: Path) -> tuple[list[Path], list[Path]]:
    """Training and validation WAVs: ``DIR/train`` and ``DIR/valid`` when present (the layout
    ``nmp_peer.synth.build_set`` writes), else every WAV under DIR with one in 20 held out."""
    data_dir = Path(data_dir)
    train_dir, valid_dir = data_dir / "train", data_dir / "valid"
    if train_dir.is_dir() and valid_dir.is_dir():
        return sorted(train_dir.rglob("*.wav")), sorted(valid_dir.rglob("*.wav"))
    files = sorted(data_dir.rglob("*.wav"))
    held = [f for f in files if int(hashlib.sha256(f.name.encode()).hexdigest(), 16) % 20 == 0]
    return [f for f in files if f not in held], held


def make_examples(
    audio: np.ndarray, settings: DataSettings, seed: Sequence[int], max_chunks: int | None = None
) -> ChunkSet:
    """Cut and LP-fill the examples of one clip (mono float)."""
    rng = np.random.default_rng(list(seed))
    lpc = LpcConcealer(context_samples=LPC_CONTEXT_SAMPLES, predict_samples=PREDICT_SAMPLES)
    x = np.asarray(audio, np.float32)
    span = LEAD_SAMPLES + CHUNK_SAMPLES
    clean, fill = [], []
    if len(x) >= span:
        count = int(round(len(x) / 44_100 * settings.chunks_per_second))
        if max_chunks is not None:
            count = min(count, max_chunks)
        for start in rng.integers(0, len(x) - span + 1, size=count):
            seg = x[start : start + span].astype(np.float64)
            gap = LEAD_SAMPLES + CHUNK_CONTEXT_SAMPLES  # index of the first lost sample in seg
            if np.sqrt(np.mean(seg[gap:] ** 2)) < settings.min_target_rms:
                continue
            work = seg.copy()
            if rng.random() < settings.burst_fraction:
                first = gap - BLOCK_FRAMES
                work[first:] = 0.0
                work[first:gap] = lpc.conceal(work[first - LPC_CONTEXT_SAMPLES : first, None], 0)[:BLOCK_FRAMES, 0]
            work[gap:] = lpc.conceal(work[gap - LPC_CONTEXT_SAMPLES : gap, None], 1)[:, 0]
            clean.append(_pcm16(seg[LEAD_SAMPLES:]))
            fill.append(work[-FILL_SAMPLES:].astype(np.float32))
    if not clean:
        return ChunkSet(np.zeros((0, CHUNK_SAMPLES), np.int16), np.zeros((0, FILL_SAMPLES), np.float32))
    return ChunkSet(np.stack(clean), np.stack(fill))


def _pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def _read_mono(path: Path) -> np.ndarray:
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if sr != 44_100:
        raise ValueError(f"{path}: sample rate {sr}, expected 44100")
    return audio.mean(axis=1)


def _shard_job(job: tuple[str, str, dict, int | None, int]) -> str:
    path, shard, settings_dict, max_chunks, index = job
    settings = DataSettings(**settings_dict)
    seed = [settings.seed, index, int(hashlib.sha256(Path(path).name.encode()).hexdigest()[:8], 16)]
    chunks = make_examples(_read_mono(Path(path)), settings, seed, max_chunks)
    partial = shard + ".partial.npz"
    np.savez(partial, clean=chunks.clean, fill=chunks.fill)
    os.replace(partial, shard)
    return shard


def build_cache(
    files: Sequence[Path],
    cache_dir: Path,
    settings: DataSettings,
    *,
    jobs: int = 0,
    max_chunks_per_clip: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ChunkSet:
    """LP-fill the examples of ``files`` into ``cache_dir`` (reusing shards already there) and load them."""
    key = hashlib.sha256(
        json.dumps([CACHE_FORMAT, settings.model_dump(), max_chunks_per_clip, [f.name for f in files]]).encode()
    ).hexdigest()[:12]
    folder = Path(cache_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    shards = [str(folder / f"{i:05d}_{Path(f).stem}.npz") for i, f in enumerate(files)]
    todo = [
        (str(f), s, settings.model_dump(), max_chunks_per_clip, i)
        for i, (f, s) in enumerate(zip(files, shards, strict=False))
        if not Path(s).is_file()
    ]
    done = len(files) - len(todo)
    if progress:
        progress(done, len(files))
    jobs = jobs or os.cpu_count() or 1
    if jobs > 1 and len(todo) > 1:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with context.Pool(min(jobs, len(todo)), initializer=_worker_init) as pool:
            for _ in pool.imap_unordered(_shard_job, todo):
                done += 1
                if progress:
                    progress(done, len(files))
    else:
        for job in todo:
            _shard_job(job)
            done += 1
            if progress:
                progress(done, len(files))
    clean, fill = [], []
    for s in shards:
        with np.load(s) as z:
            clean.append(z["clean"])
            fill.append(z["fill"])
    return ChunkSet(np.concatenate(clean), np.concatenate(fill))


def _worker_init() -> None:
    """Workers are as nice as their parent and run one BLAS/FFT thread each."""
    os.environ["OMP_NUM_THREADS"] = "1"
