"""PNG plots of a playout run (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nmp_peer import SAMPLE_RATE


def plot_timeline(timeline: list[tuple[int, float, float, int]], path: str | Path, title: str = "") -> None:
    """Buffer depth and target depth over time, with concealed, inserted and dropped blocks marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.array(timeline, dtype=float).reshape(-1, 4)
    t = data[:, 0] / SAMPLE_RATE
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    ax.plot(t, data[:, 1], lw=0.8, label="buffer depth (packets)")
    ax.plot(t, data[:, 2], lw=1.2, ls="--", label="target depth")
    top = max(1.0, float(data[:, 1:3].max(initial=1.0))) * 1.1
    for code, color, label in (
        (1, "tab:red", "concealed"),
        (2, "tab:orange", "inserted"),
        (3, "tab:purple", "dropped"),
    ):
        marks = t[data[:, 3] == code]
        if len(marks):
            ax.vlines(marks, 0, top * 0.08, color=color, lw=0.8, label=f"{label} ({len(marks)})")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("packets")
    ax.set_ylim(0, top)
    ax.set_title(title or "playout buffer")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
