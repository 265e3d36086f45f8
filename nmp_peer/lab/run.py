"""The packet-loss lab: every concealer against every loss setting on every clip, measured.

Each job is one clip under one loss setting: the loss pattern is drawn once (seeded by
the clip and setting), then every method conceals the very same pattern through the
live playout engine (``lab.simulate``), and the metrics compare the result with the
clip. Jobs run in parallel processes, or as tasks on a Dask cluster (``lab.cluster``);
results are plain rows for the report, in job order either way.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.audio_io import read_audio
from nmp_peer.conceal import make_concealer
from nmp_peer.conceal.base import Concealer, final_stage
from nmp_peer.lab import metrics
from nmp_peer.lab.simulate import conceal_trace, offline_config, play_network
from nmp_peer.netsim.impair import Impairment
from nmp_peer.netsim.loss import challenge_like_trace, make_loss_model, read_trace
from nmp_peer.proto.codec import float_to_pcm16, pcm16_to_float
from nmp_peer.receiver.playout import PlayoutConfig

if TYPE_CHECKING:
    from nmp_peer.lab.cluster import DaskCluster

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
ALL_METRICS = ("snr", "lsd", "mrstft", "visqol", "plcmos")


@dataclass(frozen=True)
class Setting:
    """One loss condition: a model with its parameters, or a trace file."""

    model: str
    loss: float = 0.0
    burst: float = 1.0
    trace: str | None = None
    jitter_ms: float = 0.0
    """Network mode: > 0 sends packets through a simulated network with this jitter."""
    very_long: float = field(default=0.0, repr=False)
    """challenge: the share of bursts that last 17-50 packets (``challenge_like_trace``'s
    ``very_long_prob``). Out of the repr, which seeds the loss patterns, so that the
    settings without it keep their seeds and patterns."""

    @property
    def label(self) -> str:
        if self.model == "trace":
            return f"trace {Path(self.trace or '').stem}"
        if self.model == "challenge":
            text = f"challenge-like {self.loss:.0%}"
            return text + f" + {self.very_long:.1%} of bursts 17-50" if self.very_long else text
        text = f"{self.model} {self.loss:.0%}"
        if self.model == "gilbert":
            text += f" burst {self.burst:g}"
        if self.jitter_ms:
            text += f" jitter {self.jitter_ms:g} ms"
        return text


@dataclass(frozen=True)
class Job:
    clip: str
    category: str
    setting: Setting
    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    seed: int
    max_seconds: float | None
    key: bytes | None = None
    """Keyed: every packet sealed and opened as a keyed jam does (the results are the same)."""
    fade_after_ms: float | None = None
    """The playout's ``fade_after_ms`` and ``fade_ms`` (``[conceal]`` in a config); None: each
    concealer's own long-burst policy."""
    fade_ms: float | None = None

    def playout(self) -> PlayoutConfig | None:
        """The playout settings of this job's mode with its fades; None where nothing differs."""
        if self.fade_after_ms is None and self.fade_ms is None:
            return None
        base = PlayoutConfig(channels=1) if self.setting.jitter_ms > 0 else offline_config(1)
        return replace(base, fade_after_ms=self.fade_after_ms, fade_ms=self.fade_ms)


def find_clips(folder: Path) -> list[Path]:
    clips = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not clips:
        raise FileNotFoundError(f"no WAV/FLAC/OGG clips in {folder}")
    return clips


def category_of(clip: Path, root: Path) -> str:
    """A clip's category: its sub-folder under the clips folder, else its name's first word."""
    rel = clip.relative_to(root)
    if len(rel.parts) > 1:
        return rel.parts[0]
    return rel.stem.split("_")[0].split("-")[0]


def load_clip(path: str, max_seconds: float | None) -> np.ndarray:
    """Mono, 44.1 kHz, on the 16-bit grid (the wire's resolution), at most ``max_seconds``."""
    audio, _ = read_audio(path, channels=1)
    if max_seconds is not None:
        audio = audio[: int(max_seconds * SAMPLE_RATE)]
    return pcm16_to_float(float_to_pcm16(audio))


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big")


class TimedConcealer(Concealer):
    """Wraps a concealer to measure the time of each concealment."""

    def __init__(self, inner: Concealer) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.context_samples = inner.context_samples
        self.predict_samples = inner.predict_samples
        self.recovery_fade_samples = inner.recovery_fade_samples
        self.fade_after_ms = inner.fade_after_ms
        self.fade_ms = inner.fade_ms
        self.seconds: list[float] = []

    def conceal(self, history: np.ndarray, burst_index: int) -> np.ndarray:
        return final_stage(self.stages(history, burst_index))

    def stages(self, history: np.ndarray, burst_index: int) -> Iterator[np.ndarray]:
        start = time.perf_counter()
        result = final_stage(self.inner.stages(history, burst_index))
        self.seconds.append(time.perf_counter() - start)
        yield result


def _metric_values(name: str, ref: np.ndarray, test: np.ndarray, lost: np.ndarray) -> float:
    if name == "snr":
        return metrics.lost_packet_snr_db(ref, test, lost)
    if name == "lsd":
        return metrics.lost_packet_lsd_db(ref, test, lost)
    if name == "mrstft":
        return metrics.mrstft_distance(ref, test)
    if name == "visqol":
        return metrics.visqol_audio(ref, test)
    if name == "plcmos":
        return metrics.plcmos(test)
    raise ValueError(f"unknown metric {name!r}")


def loss_mask(setting: Setting, n_packets: int, seed: int) -> np.ndarray:
    if setting.model == "trace":
        trace = read_trace(setting.trace or "")
        mask = np.zeros(n_packets, bool)
        mask[: min(len(trace), n_packets)] = trace[:n_packets]
        return mask
    if setting.model == "challenge":
        return challenge_like_trace(
            n_packets, seed=seed, loss_rate=setting.loss or 0.10, very_long_prob=setting.very_long
        )
    return make_loss_model(setting.model, setting.loss, setting.burst, None, seed).sample(n_packets)


def run_job(job: Job) -> list[dict[str, Any]]:
    """Conceal one clip under one setting with every method; one row per method."""
    ref = load_clip(job.clip, job.max_seconds)
    n_packets = len(ref) // BLOCK_FRAMES
    ref = ref[: n_packets * BLOCK_FRAMES]
    seed = _seed(job.seed, Path(job.clip).name, job.setting)
    config = job.playout()
    effective = config or PlayoutConfig()
    rows = []
    for method in job.methods:
        concealer = TimedConcealer(make_concealer(method))
        start = time.perf_counter()
        if job.setting.jitter_ms > 0:
            impairment = Impairment(
                make_loss_model(job.setting.model, job.setting.loss, job.setting.burst, job.setting.trace, seed),
                jitter_ms=job.setting.jitter_ms,
                seed=seed,
            )
            played = play_network(ref, impairment, concealer, config, key=job.key)
            out, lost = played.output, played.lost
        else:
            lost = loss_mask(job.setting, n_packets, seed)
            out = conceal_trace(ref, lost, concealer, config, key=job.key)
        sim_s = time.perf_counter() - start
        # Opus baselines are judged against Opus's own clean decode: the concealment alone,
        # not the coding loss that every received packet carries too.
        target = conceal_trace(ref, np.zeros(n_packets, bool), method) if method.startswith("opus-") else ref
        row: dict[str, Any] = {
            "clip": Path(job.clip).name,
            "category": job.category,
            "setting": job.setting.label,
            "loss_model": job.setting.model,
            "loss": job.setting.loss,
            "burst": job.setting.burst,
            "method": method,
            "fade_after_ms": concealer.fade_after_ms if effective.fade_after_ms is None else effective.fade_after_ms,
            "fade_ms": concealer.fade_ms if effective.fade_ms is None else effective.fade_ms,
            "seconds": round(len(ref) / SAMPLE_RATE, 3),
            "lost_packets": int(lost.sum()),
            "loss_rate": round(float(lost.mean()), 4),
            "conceal_ms_per_packet": round(1000 * float(np.mean(concealer.seconds)), 4) if concealer.seconds else 0.0,
            "realtime_factor": round(len(ref) / SAMPLE_RATE / sim_s, 1),
            "reference": "opus clean decode" if target is not ref else "original",
        }
        groups = metrics.burst_groups(lost)
        row.update({f"lost_packets_burst_{label}": int(mask.sum()) for label, mask in groups.items()})
        for name in job.metrics:
            try:
                row[name] = float(_metric_values(name, target[:, 0], out[:, 0], lost))
            except metrics.MetricUnavailable:
                row[name] = float("nan")
            if name in metrics.PER_PACKET_METRICS:  # NaN where the pattern has no such burst
                for label, mask in groups.items():
                    row[f"{name}_burst_{label}"] = float(_metric_values(name, target[:, 0], out[:, 0], mask))
        rows.append(row)
    return rows


def plan(
    clips: Sequence[Path],
    root: Path,
    settings: Sequence[Setting],
    methods: Sequence[str],
    metric_names: Sequence[str],
    seed: int,
    max_seconds: float | None,
    key: bytes | None = None,
    fade_after_ms: float | None = None,
    fade_ms: float | None = None,
) -> list[Job]:
    return [
        Job(
            str(c),
            category_of(c, root),
            s,
            tuple(methods),
            tuple(metric_names),
            seed,
            max_seconds,
            key,
            fade_after_ms,
            fade_ms,
        )
        for c in clips
        for s in settings
    ]


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    progress: Callable[[int], None] | None = None,
    cluster: DaskCluster | None = None,
) -> list[dict[str, Any]]:
    """``run_job`` on each job, rows in job order: in ``workers`` local processes, or as
    tasks on a Dask ``cluster`` (already entered) when one is given."""
    rows: list[dict[str, Any]] = []
    if cluster is not None:
        for result in cluster.map(run_job, jobs, progress):
            rows.extend(result)
        return rows
    if workers <= 1:
        for job in jobs:
            rows.extend(run_job(job))
            if progress:
                progress(1)
        return rows
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(run_job, jobs):
            rows.extend(result)
            if progress:
                progress(1)
    return rows
