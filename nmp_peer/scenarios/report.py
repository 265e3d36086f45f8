"""report.md and its plots for a scenario run (``runner.run_scenarios``)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from nmp_peer.scenarios.clicks import CLICK_RATIO

PLOTS = {
    "loss.png": "Loss per scenario: what the relay dropped (A → B), what B counted lost, and late",
    "agreement.png": "B's lost count against the relay's ground truth (bars: the range the relay log allows)",
    "quality.png": "Quality per scenario and concealer: SNR on lost packets and MR-STFT distance",
    "latency.png": "B's latency and buffer depth per scenario",
}


def _fmt(v: Any, digits: int = 1) -> str:
    if isinstance(v, float) and v == math.inf:
        return "∞"
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool):
        return "✓" if v else "✗"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _by_scenario(rows: list[dict[str, Any]], key: str) -> tuple[list[str], list[float]]:
    groups: dict[str, list[float]] = defaultdict(list)
    order: list[str] = []
    for r in rows:
        if r["scenario"] not in order:
            order.append(r["scenario"])
        v = r.get(key)
        if v is not None and math.isfinite(v):
            groups[r["scenario"]].append(float(v))
    return order, [float(np.mean(groups[s])) if groups[s] else math.nan for s in order]


def plot_loss(rows: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    names, relay = _by_scenario(rows, "relay_lost_pct")
    _, lost = _by_scenario(rows, "b_lost_pct")
    late_rows = [{**r, "late_pct": 100.0 * r["b_late"] / r["b_played"] if r.get("b_played") else None} for r in rows]
    _, late = _by_scenario(late_rows, "late_pct")
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(names) + 2), 4))
    ax.bar(x - 0.27, relay, 0.27, label="relay dropped (A → B)")
    ax.bar(x, lost, 0.27, label="B lost")
    ax.bar(x + 0.27, late, 0.27, label="B late")
    ax.set_xticks(x, names, rotation=60, ha="right")
    ax.set_ylabel("% of packets")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_agreement(rows: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    ok = [r for r in rows if r.get("expected_lost_low") is not None]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if ok:
        lo = np.array([r["expected_lost_low"] for r in ok], float)
        hi = np.array([r["expected_lost_high"] for r in ok], float)
        got = np.array([r["b_lost"] for r in ok], float)
        mid = (lo + hi) / 2
        colors = ["tab:green" if r["counters_ok"] else "tab:red" for r in ok]
        ax.errorbar(mid, got, xerr=(hi - lo) / 2, fmt="none", ecolor="0.6", lw=1)
        ax.scatter(mid, got, c=colors, s=18, zorder=3)
        top = max(1.0, float(max(hi.max(), got.max()))) * 1.05
        ax.plot([0, top], [0, top], "k--", lw=0.8)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
    ax.set_xlabel("lost packets the relay log implies")
    ax.set_ylabel("lost packets B counted")
    ax.set_title("counters vs ground truth (red: outside)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_quality(rows: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    names: list[str] = []
    concealers: list[str] = []
    for r in rows:
        names += [r["scenario"]] if r["scenario"] not in names else []
        concealers += [r["concealer"]] if r["concealer"] not in concealers else []
    table = {(r["scenario"], r["concealer"]): r for r in rows}
    x = np.arange(len(names))
    width = 0.8 / max(1, len(concealers))
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 0.55 * len(names) + 2), 7), sharex=True)
    for key, ax, label in (
        ("lost_snr_db", axes[0], "SNR on lost packets (dB) ↑"),
        ("mrstft", axes[1], "MR-STFT distance ↓"),
    ):
        for i, c in enumerate(concealers):
            vals = [table.get((s, c), {}).get(key) for s in names]
            vals = [v if v is not None and math.isfinite(v) else np.nan for v in vals]
            ax.bar(x + (i - (len(concealers) - 1) / 2) * width, vals, width, label=c)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
        ax.axhline(0, color="k", lw=0.6)
    axes[0].legend(ncol=len(concealers))
    axes[1].set_xticks(x, names, rotation=60, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(rows: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    names, latency = _by_scenario(rows, "latency_ms")
    _, depth = _by_scenario(rows, "depth_packets")
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(names) + 2), 4))
    ax.bar(x, latency, 0.6, color="tab:blue", label="latency (ms)")
    ax.set_ylabel("receive latency (ms)")
    ax2 = ax.twinx()
    ax2.plot(x, depth, "o", color="tab:orange", label="buffer depth at the end (packets)")
    ax2.set_ylabel("buffer depth (packets)")
    ax2.set_ylim(0, max([d for d in depth if math.isfinite(d)], default=1.0) * 1.2 + 0.5)
    ax.set_xticks(x, names, rotation=60, ha="right")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="upper center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(entries: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> Path:
    rows = [e["row"] for e in entries if e.get("row") and not e.get("error")]
    plots = []
    if rows:
        for name, fn in (
            ("loss.png", plot_loss),
            ("agreement.png", plot_agreement),
            ("quality.png", plot_quality),
            ("latency.png", plot_latency),
        ):
            fn(rows, out / name)
            plots.append(name)
    lines = [
        "# What the audience would hear: network scenarios",
        "",
        f"Backend **{meta['backend']}**{' (netem where it can)' if meta.get('netem') else ''}; concealers "
        f"{', '.join(meta['concealers'])}; {meta['seconds']:g} s of playing per jam; clip: {meta['clip']} "
        f"({meta['clip_seconds']:g} s); {len(entries)} jams in {meta['wall_s']:g} s.",
        "",
        "Peer A plays a clip to peer B through the impairment relay (and B to A). B's counters are held",
        "against the relay's per-packet log (A → B); B's recording is aligned with A's clip block by block",
        "(cross-correlation) and scored on the packets the relay dropped. `lost` bounds: what the log allows",
        "given where B stopped. `SNR`/`LSD`: on lost packets only (`nmp_peer.lab.metrics`). `click`: the",
        f"steepest sample step of the recording over the steepest within a block of it (above {CLICK_RATIO:g}: a",
        "click, `clicks.find_clicks`). `recovery`: blocks until clean audio came back after an outage or a",
        "restart, beyond the packets that never came.",
        "",
        "## Counters against the relay's ground truth",
        "",
        "| scenario | concealer | relay dropped (whole run) | B lost | allowed | late | dup | concealed "
        "| latency ms | depth | counters |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        r = e["row"]
        if e.get("error"):
            lines.append(f"| {r['scenario']} | {r['concealer']} | error: {e['error'][:120]} ||||||||")
            continue
        lines.append(
            f"| {r['scenario']} | {r['concealer']} | {_fmt(r['relay_lost'])} ({_fmt(r['relay_lost_pct'])} %) | "
            f"{r['b_lost']} | {_fmt(r['expected_lost_low'])}–{_fmt(r['expected_lost_high'])} | {r['b_late']} | "
            f"{r['b_duplicate']} | {r['b_concealed']} | {_fmt(r['latency_ms'])} | {_fmt(r['depth_packets'])} | "
            f"{_fmt(r['counters_ok'])} |"
        )
    lines += [
        "",
        "## Quality of what B played",
        "",
        "| scenario | concealer | SNR lost dB ↑ | LSD lost dB ↓ | SNR all dB ↑ | MR-STFT ↓ | ViSQOL ↑ "
        "| click | recovery | audio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        if e.get("error"):
            continue
        r = e["row"]
        lines.append(
            f"| {r['scenario']} | {r['concealer']} | {_fmt(r['lost_snr_db'])} | {_fmt(r['lost_lsd_db'])} | "
            f"{_fmt(r['snr_db'])} | {_fmt(r['mrstft'], 3)} | {_fmt(r['visqol'], 2)} | {_fmt(r['click_ratio'], 2)} | "
            f"{_fmt(r['recovery_blocks'])} | {_fmt(r['audio_ok'])} |"
        )
    failed = [
        (e, c)
        for e in entries
        if not e.get("error")
        for c in [*e["analysis"]["counters"]["checks"], *e["analysis"]["audio_checks"]]
        if not c["ok"]
    ]
    lines += ["", "## Failed checks", ""]
    lines += [f"- {e['scenario']} / {e['concealer']}: **{c['check']}**: {c['detail']}" for e, c in failed] or ["None."]
    lines += ["", "## Scenarios", ""]
    lines += [f"- **{s['name']}**: {s['description']}" for s in meta["scenarios"]]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{PLOTS[p]}]({p})\n\n{PLOTS[p]}.\n" for p in plots]
    lines += [
        "",
        "Per jam: `<scenario>/<concealer>/` (recordings, relay log, stdout/stderr, result.json); "
        "everything: `results.json`.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
