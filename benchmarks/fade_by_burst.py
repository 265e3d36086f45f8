"""The burst fade's settings side by side: lost-packet LSD and SNR by burst length, per method.

    python benchmarks/fade_by_burst.py LAB_OUT [LAB_OUT ...] > table.md

Each ``LAB_OUT`` is an ``nmp-peer lab --out`` folder of one ``--fade-after-ms``/``--fade-ms``
setting (metrics.json), all on the same clips, loss setting and seed, so every folder
conceals the same loss patterns. Per method: the mean ± 95 % CI over clips of each
burst-length group (and of all lost packets) under each fade setting, then each setting minus the first folder's,
paired clip by clip (``nmp_peer.lab.report.paired_table``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from nmp_peer.lab.metrics import PER_PACKET_METRICS
from nmp_peer.lab.report import METRIC_INFO, aggregate, burst_order, burst_rows, paired_table


def fade_label(row: dict[str, Any]) -> str:
    return f"{row['fade_after_ms']:g}/{row['fade_ms']:g}"


def load(folders: list[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """All folders' rows, each method renamed ``method @ fade_after/fade``; the fade labels in order."""
    rows, fades = [], []
    for folder in folders:
        for row in json.loads((folder / "metrics.json").read_text()):
            row = {k: (math.nan if v is None else v) for k, v in row.items()}
            label = fade_label(row)
            if label not in fades:
                fades.append(label)
            rows.append(row | {"method": f"{row['method']} @ {label}", "base_method": row["method"]})
    return rows, fades


def tables(rows: list[dict[str, Any]], fades: list[str]) -> str:
    out = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        out += [f"## {setting}", ""]
        derived = [d for d in burst_rows(rows, setting) if d["lost_packets"] > 0]
        groups = sorted({d["burst"] for d in derived}, key=burst_order)
        for method in dict.fromkeys(r["base_method"] for r in rows):
            mine = [d for d in derived if d["method"].startswith(f"{method} @ ")]
            whole = [r | {"burst": "all"} for r in rows if r["setting"] == setting and r["base_method"] == method]
            agg = aggregate([*mine, *whole], ["burst", "method"], PER_PACKET_METRICS)
            out += [f"### `{method}`", ""]
            for metric in PER_PACKET_METRICS:
                name, better = METRIC_INFO[metric]
                header = ["burst (packets)", "n", *(f"fade {f} ms" for f in fades)]
                out += [
                    f"{name}, {better} is better:",
                    "",
                    "| " + " | ".join(header) + " |",
                    "|" + "---|" * len(header),
                ]
                for g in [*groups, "all"]:
                    cells = [agg.get((g, f"{method} @ {f}"), {metric: (math.nan, math.nan, 0)})[metric] for f in fades]
                    n = max(c[2] for c in cells)
                    text = ["–" if math.isnan(m) else f"{m:.2f} ± {h:.2f}" for m, h, _ in cells]
                    out.append("| " + " | ".join([g, str(n), *text]) + " |")
                out.append("")
            out += [
                f"Paired with `{method}` at fade {fades[0]} ms (the same clips and patterns):",
                "",
                paired_table(mine, f"{method} @ {fades[0]}", PER_PACKET_METRICS, by="burst", sort_key=burst_order),
                "",
            ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="nmp-peer lab --out folders, the baseline fade first")
    args = parser.parse_args()
    rows, fades = load(args.folders)
    print(tables(rows, fades))


if __name__ == "__main__":
    main()
