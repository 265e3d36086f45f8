"""Build sets of synthetic clips with a manifest: the evaluation set and training data.

Each clip is named by a *clip seed*, and the clip seeds of the splits come from
disjoint ranges (``SPLIT_SEED_RANGES``), so no validation or evaluation clip can be
regenerated into a training set whatever ``seed`` and size either set is built with.
A set with ``seed`` s uses the clip seeds ``start + s * SEEDS_PER_SET + index``.

Clips render independently, so a set renders in parallel over ``jobs`` processes and
resumes after an interruption: a clip whose audio and sidecar JSON both exist is
read back instead of rendered (the sidecar is written last, so its presence means
the audio is complete). The manifest is rebuilt from the sidecars at the end.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmp_peer import SAMPLE_RATE
from nmp_peer.synth.clips import EVAL_CATEGORIES, KINDS, ClipSpec, render_clip
from nmp_peer.synth.render import (
    DEFAULT_SETTINGS,
    RenderSettings,
    default_soundfont,
    find_fluidsynth,
    list_soundfonts,
    write_audio,
)

SPLIT_SEED_RANGES: dict[str, range] = {
    "train": range(0, 1_000_000_000),
    "valid": range(1_000_000_000, 1_100_000_000),
    "eval": range(1_100_000_000, 1_200_000_000),
}
SEEDS_PER_SET = 1_000_000
"""Clip seeds reserved for one (split, seed) set: its largest possible size."""

TRAIN_KINDS = (
    "band",
    "mixture",
    "piano",
    "strings",
    "band",
    "mixture",
    "guitar",
    "winds",
    "brass",
    "voices",
    "bass",
    "drums",
)
"""Kinds cycled through for training: full arrangements and mixtures are a third of
the clips, every instrument family is present, solo bass and drums included."""


@dataclass(frozen=True)
class SetPreset:
    """Defaults for one kind of set; ``build_set`` arguments override them."""

    split: str
    kinds: tuple[str, ...]
    clip_seconds: float
    augment: float
    description: str


PRESETS: dict[str, SetPreset] = {
    "eval": SetPreset(
        "eval",
        EVAL_CATEGORIES,
        10.0,
        0.0,
        "labelled evaluation clips, the categories in turn, dry renders",
    ),
    "valid": SetPreset(
        "valid",
        TRAIN_KINDS,
        30.0,
        1.0,
        "held-out clips drawn like training ones, for validation during training",
    ),
    "train": SetPreset(
        "train",
        TRAIN_KINDS,
        30.0,
        1.0,
        "long varied clips with augmentation for GAN training",
    ),
}

MANIFEST_CSV_FIELDS = (
    "file",
    "category",
    "duration_s",
    "seed",
    "split",
    "soundfonts",
    "programs",
    "tempo_bpm",
    "key",
    "scale",
    "meter",
    "augmentation",
    "rms_dbfs",
)


def clip_seed(split: str, seed: int, index: int) -> int:
    """Return the clip seed of clip ``index`` of the set ``seed`` in ``split``."""
    seeds = SPLIT_SEED_RANGES[split]
    if not 0 <= index < SEEDS_PER_SET:
        raise ValueError(f"clip index {index} outside 0..{SEEDS_PER_SET - 1}")
    value = seeds.start + seed * SEEDS_PER_SET + index
    if seed < 0 or value not in seeds:
        raise ValueError(f"set seed {seed} outside the {split} range ({len(seeds) // SEEDS_PER_SET} sets)")
    return value


def split_of_seed(value: int) -> str:
    """Return the split whose range holds clip seed ``value``."""
    for split, seeds in SPLIT_SEED_RANGES.items():
        if value in seeds:
            return split
    raise ValueError(f"clip seed {value} belongs to no split")


@dataclass(frozen=True)
class _Job:
    index: int
    spec: ClipSpec
    split: str
    audio_path: Path
    soundfonts: tuple[Path, ...]
    settings: RenderSettings


def build_set(
    out_dir: Path | str,
    preset: str = "eval",
    *,
    n_clips: int | None = None,
    hours: float | None = None,
    clip_seconds: float | None = None,
    seed: int = 0,
    kinds: Sequence[str] | None = None,
    jobs: int = 1,
    audio_format: str = "wav",
    soundfonts: Sequence[Path] | None = None,
    settings: RenderSettings = DEFAULT_SETTINGS,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render a set of clips into ``out_dir`` and return the path of ``manifest.json``.

    Give the size as ``n_clips`` or as ``hours`` (rounded up to whole clips). Clip
    ``i`` has kind ``kinds[i % len(kinds)]``, so every kind is equally represented.
    ``manifest.csv`` beside it has one flat row per clip for spreadsheets and pandas.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {tuple(PRESETS)}")
    base = PRESETS[preset]
    seconds = clip_seconds if clip_seconds is not None else base.clip_seconds
    if (n_clips is None) == (hours is None):
        raise ValueError("give exactly one of n_clips and hours")
    count = n_clips if n_clips is not None else math.ceil(hours * 3600 / seconds)  # type: ignore[operator]
    kind_cycle = tuple(kinds) if kinds is not None else base.kinds
    for kind in kind_cycle:
        if kind not in KINDS:
            raise ValueError(f"unknown clip kind {kind!r}; expected one of {KINDS}")
    if audio_format not in ("wav", "flac"):
        raise ValueError("audio_format must be 'wav' or 'flac'")
    find_fluidsynth(settings.fluidsynth)
    fonts = tuple(sorted(soundfonts if soundfonts is not None else list_soundfonts(), key=lambda p: p.name))
    default_soundfont(fonts)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_jobs = []
    for index in range(count):
        kind = kind_cycle[index % len(kind_cycle)]
        spec = ClipSpec(kind, clip_seed(base.split, seed, index), seconds, base.augment)
        path = out / f"{kind}_{spec.seed:010d}.{audio_format}"
        all_jobs.append(_Job(index, spec, base.split, path, fonts, settings))

    records: dict[int, dict[str, Any]] = {}
    pending = []
    for job in all_jobs:
        existing = _read_sidecar(job)
        if existing is None:
            pending.append(job)
        else:
            records[job.index] = existing
    done = len(records)
    if progress:
        progress(done, count)
    if jobs > 1 and len(pending) > 1:
        with _process_context().Pool(min(jobs, len(pending))) as pool:
            for index, record in pool.imap_unordered(_run_job, pending):
                records[index] = record
                done += 1
                if progress:
                    progress(done, count)
    else:
        for job in pending:
            index, record = _run_job(job)
            records[index] = record
            done += 1
            if progress:
                progress(done, count)

    clips = [records[i] for i in range(count)]
    return _write_manifest(out, preset, base, seed, seconds, fonts, clips)


def _process_context() -> multiprocessing.context.BaseContext:
    """Fork where available: workers only run FluidSynth and NumPy, and unlike spawn,
    fork does not require callers' scripts to guard with ``if __name__ == "__main__"``."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _sidecar(job: _Job) -> Path:
    return job.audio_path.with_suffix(".json")


def _read_sidecar(job: _Job) -> dict[str, Any] | None:
    """Return the stored record if this exact clip was rendered before."""
    sidecar = _sidecar(job)
    if not (sidecar.is_file() and job.audio_path.is_file()):
        return None
    try:
        record = json.loads(sidecar.read_text())
    except json.JSONDecodeError:
        return None
    if record.get("seed") != job.spec.seed or record.get("requested_s") != job.spec.seconds:
        return None
    if record.get("augment_strength") != job.spec.augment:
        return None
    record["index"] = job.index
    return record


def _run_job(job: _Job) -> tuple[int, dict[str, Any]]:
    """Render, write and describe one clip (runs in a worker process)."""
    clip = render_clip(job.spec, list(job.soundfonts), job.settings)
    partial = job.audio_path.with_name(f".{job.audio_path.stem}.partial{job.audio_path.suffix}")
    write_audio(partial, clip.audio, job.settings.sample_rate)
    os.replace(partial, job.audio_path)
    record = {
        "index": job.index,
        "file": job.audio_path.name,
        "category": job.spec.kind,
        "split": job.split,
        "requested_s": job.spec.seconds,
        "augment_strength": job.spec.augment,
        **clip.info,
    }
    sidecar = _sidecar(job)
    partial_json = sidecar.with_name(f".{sidecar.name}.partial")
    partial_json.write_text(json.dumps(record, indent=1))
    os.replace(partial_json, sidecar)
    return job.index, record


def _programs_text(record: dict[str, Any]) -> str:
    return ";".join(f"{p['role']}:{p['group']}:{p['program']}" for p in record["song"]["parts"])


def _write_manifest(
    out: Path,
    preset: str,
    base: SetPreset,
    seed: int,
    seconds: float,
    fonts: tuple[Path, ...],
    clips: list[dict[str, Any]],
) -> Path:
    manifest = {
        "preset": preset,
        "split": base.split,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "clip_seconds": seconds,
        "n_clips": len(clips),
        "total_seconds": round(sum(c["duration_s"] for c in clips), 2),
        "categories": dict(Counter(c["category"] for c in clips)),
        "soundfonts": [f.name for f in fonts],
        "clip_seed_range": [
            SPLIT_SEED_RANGES[base.split].start,
            SPLIT_SEED_RANGES[base.split].stop,
        ],
        "clips": clips,
    }
    json_path = out / "manifest.json"
    json_path.write_text(json.dumps(manifest, indent=1))
    with open(out / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_CSV_FIELDS)
        writer.writeheader()
        for clip in clips:
            writer.writerow(
                {
                    "file": clip["file"],
                    "category": clip["category"],
                    "duration_s": clip["duration_s"],
                    "seed": clip["seed"],
                    "split": clip["split"],
                    "soundfonts": ";".join(clip["soundfonts"]),
                    "programs": _programs_text(clip),
                    "tempo_bpm": clip["song"]["tempo_bpm"],
                    "key": clip["song"]["key"],
                    "scale": clip["song"]["scale"],
                    "meter": clip["song"]["meter"],
                    "augmentation": json.dumps(clip["augmentation"], sort_keys=True),
                    "rms_dbfs": clip["rms_dbfs"],
                }
            )
    return json_path
