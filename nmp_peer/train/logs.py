"""The run's records: CSV logs that survive a resume, their plots, the progress bar."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

TRAIN_FIELDS = ("step", "seconds", "lr", "sc", "log_mag", "adv_g", "adv_d", "sec_per_step")
VALID_FIELDS = ("step", "lsd_db", "snr_db", "lsd_raw_db", "snr_raw_db", "lsd_lpc_db", "snr_lpc_db")


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
                {k: float(v) if v not in ("", "nan") else float("nan") for k, v in r.items()} for r in csv.DictReader(f)
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


def progress_bar(enabled: bool) -> Any:
    """A rich progress bar with an ``info`` field; ``enabled=False``: one that prints nothing."""
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
