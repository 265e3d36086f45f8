"""Tables, files and plots from the lab's rows: metrics.csv, metrics.json, report.md, PNGs."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.lab.metrics import BURST_GROUPS, PER_PACKET_METRICS
from nmp_peer.receiver.playout import PlayoutConfig

METRIC_INFO = {
    "visqol": ("ViSQOL (audio mode, 48 kHz)", "higher"),
    "plcmos": ("PLCMOS (16 kHz speech model)", "higher"),
    "snr": ("SNR on lost packets (dB)", "higher"),
    "lsd": ("LSD on lost packets (dB)", "lower"),
    "mrstft": ("MR-STFT distance", "lower"),
    "conceal_ms_per_packet": ("concealment time (ms/packet)", "lower"),
}


def mean_ci(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and half-width of its 95 % confidence interval (Student t); NaN/inf values are left out."""
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    if len(a) == 0:
        return math.nan, math.nan, 0
    if len(a) == 1:
        return float(a[0]), math.nan, 1
    half = float(sps.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
    return float(a.mean()), half, len(a)


def _fmt(mean: float, half: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def aggregate(
    rows: Sequence[dict[str, Any]], keys: Sequence[str], metrics: Sequence[str]
) -> dict[tuple, dict[str, tuple[float, float, int]]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    return {g: {m: mean_ci([r.get(m, math.nan) for r in rs]) for m in metrics} for g, rs in groups.items()}


def _by_text(group: Any) -> Any:
    return tuple(str(x) for x in group) if isinstance(group, tuple) else str(group)


def _table(
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    metrics: Sequence[str],
    sort_key: Callable[[tuple], Any] = _by_text,
) -> str:
    agg = aggregate(rows, keys, metrics)
    header = [
        *keys,
        "n",
        *(
            f"{METRIC_INFO.get(m, (m,))[0]} {'↑' if METRIC_INFO.get(m, ('', 'higher'))[1] == 'higher' else '↓'}"
            for m in metrics
        ),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in sorted(agg, key=sort_key):
        values = agg[group]
        n = max(v[2] for v in values.values()) if values else 0
        lines.append("| " + " | ".join([*map(str, group), str(n), *(_fmt(*values[m][:2]) for m in metrics)]) + " |")
    return "\n".join(lines)


REFINES_LPC = ("gan",)
"""Concealers that refine the LPC prediction: the report also pairs them with ``lpc``."""


def paired_table(
    rows: Sequence[dict[str, Any]],
    baseline: str,
    metrics: Sequence[str],
    by: str = "setting",
    sort_key: Callable[[Any], Any] = _by_text,
) -> str:
    """Per ``by`` group (setting or category), each method minus ``baseline`` on the same
    clip: the mean difference and its 95 % CI. Pairing removes the clip-to-clip spread that
    dominates the plain means. The unit is the clip: where a group holds a clip under
    several settings, its differences are averaged first, so n counts clips."""
    by_key = {(r["setting"], r["clip"], r["method"]): r for r in rows}
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != baseline]
    header = [by, "method", "n", *(f"Δ {METRIC_INFO.get(m, (m,))[0]}" for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in sorted({r[by] for r in rows}, key=sort_key):
        runs = sorted({(r["clip"], r["setting"]) for r in rows if r[by] == group})
        for method in methods:
            cells, n = [], 0
            for m in metrics:
                per_clip: dict[str, list[float]] = defaultdict(list)
                for clip, setting in runs:
                    a, b = by_key.get((setting, clip, method)), by_key.get((setting, clip, baseline))
                    if a is not None and b is not None:
                        per_clip[clip].append(float(a.get(m, math.nan)) - float(b.get(m, math.nan)))
                mean, half, k = mean_ci([float(np.mean(d)) for d in per_clip.values()])
                n = max(n, k)
                cells.append(
                    "–" if math.isnan(mean) else (f"{mean:+.3f}" if math.isnan(half) else f"{mean:+.3f} ± {half:.3f}")
                )
            lines.append("| " + " | ".join([str(group), f"{method} − {baseline}", str(n), *cells]) + " |")
    return "\n".join(lines)


def burst_rows(rows: Sequence[dict[str, Any]], setting: str) -> list[dict[str, Any]]:
    """One row per burst-length group of each of ``setting``'s rows, with that group's
    per-packet metrics under their plain names (``lsd``, ...) and its ``burst`` label.
    Each group's ``setting`` is its own (``setting · burst``), so pairing stays within it."""
    out = []
    for row in rows:
        if row["setting"] != setting:
            continue
        for label, _, _ in BURST_GROUPS:
            if f"lost_packets_burst_{label}" not in row:
                continue
            derived = {k: row[k] for k in ("clip", "category", "method")}
            derived.update(setting=f"{setting} · {label}", burst=label, lost_packets=row[f"lost_packets_burst_{label}"])
            derived.update({m: row.get(f"{m}_burst_{label}", math.nan) for m in PER_PACKET_METRICS})
            out.append(derived)
    return out


def burst_order(label: Any) -> int:
    return [g[0] for g in BURST_GROUPS].index(label)


def burst_section(rows: Sequence[dict[str, Any]], metrics: Sequence[str]) -> list[str]:
    """report.md's tables by burst length: per setting, the per-packet metrics of the lost
    packets grouped by the length of their burst, plain and paired like the tables above.
    Empty when no per-packet metric was measured."""
    shown = [m for m in PER_PACKET_METRICS if m in metrics]
    if not shown or not any("lost_packets_burst_1" in r for r in rows):
        return []
    methods = list(dict.fromkeys(r["method"] for r in rows))
    order = {m: i for i, m in enumerate(methods)}
    lines = [
        "## By burst length",
        "",
        "Each lost packet counts in the group of the length of the burst it belongs to (packets); "
        "SNR is taken over a group's packets together, LSD is their mean, per clip, then over the "
        "clips that have such bursts (n). Paired tables: each method minus the baseline on the "
        "same clip and group.",
        "",
    ]
    for setting in dict.fromkeys(r["setting"] for r in rows):
        derived = [d for d in burst_rows(rows, setting) if d["lost_packets"] > 0]
        if not derived:
            continue
        totals: dict[str, int] = defaultdict(int)
        for d in derived:
            if d["method"] == methods[0]:
                totals[d["burst"]] += d["lost_packets"]
        all_lost = sum(totals.values())
        share = ", ".join(
            f"{label}: {totals[label]} ({totals[label] / all_lost:.0%})" for label in sorted(totals, key=burst_order)
        )
        lines += [
            f"### {setting}",
            "",
            f"Lost packets by burst length, all clips: {share}.",
            "",
            _table(derived, ["burst", "method"], shown, lambda g: (burst_order(g[0]), order[g[1]])),
            "",
        ]
        for baseline in ("repeat", "lpc"):
            others = [m for m in methods if m != baseline and (baseline == "repeat" or m in REFINES_LPC)]
            if baseline in methods and others:
                chosen = [d for d in derived if d["method"] in (baseline, *others)]
                lines += [
                    f"Paired with `{baseline}`:",
                    "",
                    paired_table(chosen, baseline, shown, by="burst", sort_key=burst_order),
                    "",
                ]
    return lines


def write_rows(rows: Sequence[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]
    (out / "metrics.json").write_text(json.dumps(clean, indent=1))


def _fades_text(meta: dict[str, Any]) -> str:
    """The long-burst policy of each method, as the report's first lines state it."""
    fades: dict[str, list[float]] = meta.get("fades", {})
    if not fades:
        return "a burst fades to silence as each concealer's policy says"
    policies = {(a, f) for a, f in fades.values()}
    if len(policies) == 1:
        ((a, f),) = policies
        return f"a burst fades to silence after {a:g} ms over {f:g} ms"
    each = ", ".join(f"{m} {a:g}/{f:g}" for m, (a, f) in fades.items())
    return f"a burst fades to silence after / over (ms): {each}"


def write_report(
    rows: Sequence[dict[str, Any]], out: Path, metric_names: Sequence[str], meta: dict[str, Any], plots: Sequence[str]
) -> Path:
    shown = [m for m in metric_names if any(m in r for r in rows)] + ["conceal_ms_per_packet"]
    sections = [
        "# Packet-loss lab report",
        "",
        f"Command: `{meta.get('command', '')}`  ",
        f"Clips: {meta.get('clips')} from `{meta.get('clips_dir')}` ({meta.get('audio_s', 0):.0f} s of audio), "
        f"methods: {', '.join(meta.get('methods', []))}, seed {meta.get('seed')}; {_fades_text(meta)}.  ",
        f"Wall time {meta.get('wall_s', 0):.1f} s with {meta.get('jobs')} worker(s); concealment alone ran at "
        f"{meta.get('sim_realtime', 0):.0f}× real time per worker (mean over jobs).",
        "",
        "Every method conceals the same loss pattern per clip and setting, through the live "
        "playout engine on a virtual clock (concealment is causal: no lookahead). Values are "
        "means with the half-width of a 95 % confidence interval (Student t over clips).",
        "",
        "Metric notes: SNR and LSD are computed on the lost packets only. ViSQOL runs in audio "
        "mode at 48 kHz, full reference: the closest offline stand-in for the challenge's "
        "listening test. PLCMOS is a speech-trained, non-intrusive model run at 16 kHz: on "
        "music it is a coarse signal and it ignores everything above 8 kHz. The Opus baselines "
        "(`opus-plc`, `opus-fec`) send Opus at 128 kbit/s and are scored against Opus's own "
        "clean decode, so they show the concealment alone, not the coding loss.",
        "",
        "## By method and loss setting",
        "",
        _table(rows, ["setting", "method"], shown),
        "",
    ]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    if "repeat" in methods and len(methods) > 1:
        quality = [m for m in shown if m != "conceal_ms_per_packet"]
        sections += [
            "## Paired with `repeat` on the same clips",
            "",
            "Each method minus `repeat`, clip by clip; an interval that excludes 0 is a "
            "difference the clips support (for LSD and MR-STFT, negative is better).",
            "",
            paired_table(rows, "repeat", quality),
            "",
        ]
    refined = [m for m in methods if m in REFINES_LPC]
    if "lpc" in methods and refined:
        quality = [m for m in shown if m != "conceal_ms_per_packet"]
        sections += [
            "## Paired with `lpc` on the same clips",
            "",
            f"What {', '.join(f'`{m}`' for m in refined)} add to the LPC prediction they start from, clip by clip.",
            "",
            paired_table([r for r in rows if r["method"] in ("lpc", *refined)], "lpc", quality),
            "",
        ]
    sections += burst_section(rows, shown)
    categories = {r["category"] for r in rows}
    if len(categories) > 1:
        per_category = [m for m in shown if m in ("visqol", "lsd", "snr", "plcmos")]
        sections += ["## By category (all settings)", "", _table(rows, ["category", "method"], per_category), ""]
        for baseline in ("repeat", "lpc"):
            others = [m for m in methods if m != baseline and (baseline == "repeat" or m in REFINES_LPC)]
            if baseline in methods and others:
                sections += [
                    f"## By category, paired with `{baseline}`",
                    "",
                    "Each clip's difference averaged over the settings, then the mean over the "
                    "category's clips with its 95 % CI (n counts clips).",
                    "",
                    paired_table(
                        [r for r in rows if r["method"] in (baseline, *others)], baseline, per_category, by="category"
                    ),
                    "",
                ]
    if plots:
        sections += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    path = out / "report.md"
    path.write_text("\n".join(sections))
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric_per_method(rows: Sequence[dict[str, Any]], metric: str, path: Path) -> None:
    plt = _plt()
    agg = aggregate(rows, ["setting", "method"], [metric])
    settings = sorted({g[0] for g in agg})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(settings) + 2), 4), dpi=100)
    x = np.arange(len(settings))
    for i, m in enumerate(methods):
        means = [agg.get((s, m), {metric: (math.nan, math.nan, 0)})[metric][0] for s in settings]
        halves = [agg.get((s, m), {metric: (math.nan, math.nan, 0)})[metric][1] for s in settings]
        ax.bar(x + i * width - 0.4 + width / 2, means, width, yerr=np.nan_to_num(halves), capsize=3, label=m)
    ax.set_xticks(x, settings, rotation=15, fontsize=8)
    label, better = METRIC_INFO.get(metric, (metric, "higher"))
    ax.set_ylabel(f"{label} ({better} is better)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_metric_vs_loss(rows: Sequence[dict[str, Any]], metric: str, path: Path) -> bool:
    """Metric against loss rate, one line per method and loss model; False if only one rate."""
    models = {r["loss_model"] for r in rows if r["loss_model"] != "trace"}
    if not any(len({r["loss"] for r in rows if r["loss_model"] == mdl}) > 1 for mdl in models):
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    agg = aggregate([r for r in rows if r["loss_model"] != "trace"], ["loss_model", "method", "loss"], [metric])
    for mdl in sorted(models):
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((g[2], v[metric]) for g, v in agg.items() if g[0] == mdl and g[1] == method)
            if len(pts) < 2:
                continue
            xs = [100 * p[0] for p in pts]
            ax.errorbar(
                xs,
                [p[1][0] for p in pts],
                yerr=np.nan_to_num([p[1][1] for p in pts]),
                marker="o",
                capsize=3,
                label=f"{method} ({mdl})",
            )
    label, better = METRIC_INFO.get(metric, (metric, "higher"))
    ax.set_xlabel("packet loss (%)")
    ax.set_ylabel(f"{label} ({better} is better)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_burst_spectrograms(ref: np.ndarray, lost: np.ndarray, outputs: dict[str, np.ndarray], path: Path) -> None:
    """Spectrograms of original, zero-filled and each method's output around the longest burst."""
    from scipy.signal import stft

    plt = _plt()
    mask = np.asarray(lost, bool)
    best, run, start, best_start = 0, 0, 0, 0
    for i, v in enumerate(mask):
        run = run + 1 if v else 0
        if run == 1:
            start = i
        if run > best:
            best, best_start = run, start
    centre = (best_start + best / 2) * BLOCK_FRAMES
    half = int(0.25 * SAMPLE_RATE)
    lo, hi = max(0, int(centre) - half), min(len(ref), int(centre) + half)
    lossy = ref.copy()
    lossy[np.repeat(mask, BLOCK_FRAMES)[: len(ref)]] = 0
    panels = {"original": ref, "lossy (zeros)": lossy, **outputs}
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.9 * len(panels)), dpi=90, sharex=True)
    for ax, (name, sig) in zip(np.atleast_1d(axes), panels.items(), strict=False):
        f, t, z = stft(sig[lo:hi], SAMPLE_RATE, nperseg=512, noverlap=384)
        ax.pcolormesh(
            t + lo / SAMPLE_RATE, f / 1000, 20 * np.log10(np.abs(z) + 1e-6), vmin=-100, vmax=-10, shading="auto"
        )
        for k in np.flatnonzero(mask):
            t0 = k * BLOCK_FRAMES / SAMPLE_RATE
            if lo / SAMPLE_RATE <= t0 <= hi / SAMPLE_RATE:
                ax.axvspan(t0, t0 + BLOCK_FRAMES / SAMPLE_RATE, color="white", alpha=0.12)
        ax.set_ylabel("kHz")
        ax.set_title(name, fontsize=9)
    np.atleast_1d(axes)[-1].set_xlabel(f"time (s), longest burst: {best} packets (shaded: lost)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_lab_report(
    rows: Sequence[dict[str, Any]],
    out: Path,
    *,
    metrics: Sequence[str],
    methods: Sequence[str],
    settings: Sequence[Any],
    example_clip: str,
    max_seconds: float | None,
    playout: PlayoutConfig | None = None,
    command: str,
    clips: int,
    clips_dir: str,
    seed: int,
    wall_s: float,
    jobs: int,
) -> tuple[Path, list[str], dict[str, Any]]:
    """Everything ``nmp-peer lab`` writes after its run, into ``out``: metrics.csv and
    metrics.json, a plot of each metric per method (and against the loss rate where there
    are several), burst spectrograms of ``example_clip`` under the first of ``settings``
    (``nmp_peer.lab.run.Setting``; none in network mode or when it loses nothing) played
    with ``playout`` (None: the lab's default), report.md and meta.json.

    Returns the report's path, the plots' file names and the meta (meta.json's content).
    """
    from nmp_peer.lab.run import load_clip, loss_mask

    out.mkdir(parents=True, exist_ok=True)
    write_rows(rows, out)
    plots = []
    for m in metrics:
        name = f"{m}_per_method.png"
        plot_metric_per_method(rows, m, out / name)
        plots.append(name)
        if plot_metric_vs_loss(rows, m, out / f"{m}_vs_loss.png"):
            plots.append(f"{m}_vs_loss.png")
    ref = load_clip(example_clip, max_seconds)
    ref = ref[: len(ref) // BLOCK_FRAMES * BLOCK_FRAMES]
    n_packets = len(ref) // BLOCK_FRAMES
    lost = loss_mask(settings[0], n_packets, 0) if settings[0].jitter_ms == 0 else np.zeros(n_packets, bool)
    if lost.any():
        from nmp_peer.lab.simulate import conceal_trace

        outputs = {m: conceal_trace(ref, lost, m, playout)[:, 0] for m in methods}
        plot_burst_spectrograms(ref[:, 0], lost, outputs, out / "burst_spectrograms.png")
        plots.append("burst_spectrograms.png")
    meta = {
        "command": command,
        "clips": clips,
        "clips_dir": clips_dir,
        # the clips' own length, once: each clip is concealed again in every setting
        "audio_s": sum(r["seconds"] for r in rows if r["method"] == methods[0] and r["setting"] == rows[0]["setting"]),
        "methods": list(methods),
        "seed": seed,
        "fades": {r["method"]: [r["fade_after_ms"], r["fade_ms"]] for r in rows},
        "wall_s": wall_s,
        "jobs": jobs,
        "sim_realtime": float(np.mean([r["realtime_factor"] for r in rows])),
    }
    return write_report(rows, out, metrics, meta, plots), plots, meta
