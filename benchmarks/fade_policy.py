"""The long-burst policy, whole-clip view: ViSQOL, PLCMOS, lost-packet LSD and SNR per fade setting.

    python benchmarks/fade_policy.py LAB_OUT [LAB_OUT ...] > table.md

Each ``LAB_OUT`` is an ``nmp-peer lab --out`` folder of one ``--fade-after-ms``/``--fade-ms``
setting on the same clips, loss settings and seed (so every folder conceals the same loss
patterns), the baseline first. Per loss setting and method: the mean ± 95 % CI over clips
under each fade setting, then each setting minus the baseline, paired clip by clip
(``nmp_peer.lab.report.paired_table``). ``benchmarks/fade_by_burst.py`` splits the
per-packet metrics by burst length.
"""

from __future__ import annotations

import argparse
import math

from fade_by_burst import load

from nmp_peer.lab.report import METRIC_INFO, aggregate, paired_table

METRICS = ("visqol", "plcmos", "lsd", "snr")


def tables(rows: list[dict], fades: list[str]) -> str:
    metrics = [m for m in METRICS if any(not math.isnan(r.get(m, math.nan)) for r in rows)]
    out = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == setting]
        agg = aggregate(mine, ["method"], metrics)
        header = ["method", "fade (ms)", "n", *(METRIC_INFO[m][0] for m in metrics)]
        out += [f"## {setting}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in dict.fromkeys(r["base_method"] for r in mine):
            for f in fades:
                cells = agg.get((f"{method} @ {f}",))
                if cells is None:
                    continue
                n = max(c[2] for c in cells.values())
                values = [f"{cells[m][0]:.3f} ± {cells[m][1]:.3f}" for m in metrics]
                out.append("| " + " | ".join([method, f, str(n), *values]) + " |")
        out.append("")
        for method in dict.fromkeys(r["base_method"] for r in mine):
            out += [
                f"Paired with `{method}` at fade {fades[0]} ms:",
                "",
                paired_table([r for r in mine if r["base_method"] == method], f"{method} @ {fades[0]}", metrics),
                "",
            ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="nmp-peer lab --out folders, the baseline fade first")
    args = parser.parse_args()
    from pathlib import Path

    rows, fades = load([Path(f) for f in args.folders])
    print(tables(rows, fades))


if __name__ == "__main__":
    main()
