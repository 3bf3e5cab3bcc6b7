"""The report's table cells: the strategy table of a summary and how numbers, intervals and exclusions are written."""

from __future__ import annotations

import pandas as pd

STRATEGIES = ((1.0, "X→X only (α=1)"), (0.0, "X→Y only (α=0)"), (0.5, "hybrid (α=0.5)"))
TABLE_METRICS = (
    ("mono/map", "mono mAP"),
    ("cross/map", "cross mAP"),
    ("multi/map", "multi mAP"),
    ("cross/r@1", "cross R@1"),
    ("multi/rank_distance", "rank distance"),
)


def strategy_table(summary: pd.DataFrame) -> list[str]:
    """The three training strategies side by side per batch size, the layout of the paper's Table 1
    (2408.10536), best mean per batch size and column in bold (lowest for rank distance)."""
    lines = [
        "\nThe sampling strategies side by side (layout of the paper's Table 1; this project's model, data and "
        "scale — see the study README for why the paper's own numbers are not beside them):\n",
        "| batch | strategy | " + " | ".join(t for _, t in TABLE_METRICS) + " |",
        "|---|---|" + "---|" * len(TABLE_METRICS),
    ]
    for b, grp in summary.groupby("batch_size"):
        best = {}  # the unique best mean per column (no bold for a tie)
        for m, _ in TABLE_METRICS:
            col = grp[f"{m} mean"]
            top = col.min() if "rank_distance" in m else col.max()
            best[m] = top if (col == top).sum() == 1 and len(col) > 1 else None
        for alpha, name in STRATEGIES:
            row = grp[grp.alpha == alpha]
            if row.empty:
                continue
            r = row.iloc[0]
            cells = []
            for m, _ in TABLE_METRICS:
                text = _ci(r, m)
                cells.append(f"**{text}**" if r[f"{m} mean"] == best[m] else text)
            lines.append(f"| {int(b)} | {name} | " + " | ".join(cells) + " |")
    return lines


def _digits(metric: str) -> int:
    """Decimals to print: rank distance is in ranks (0.1 is already below its seed noise), the rest in [0, 1]."""
    return 1 if "rank_distance" in metric else 4


def _fmt(value, metric: str) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{value:.{_digits(metric)}f}"


def _excluded_summary(values) -> str:
    """'30 settings (161–207 items)' from the jobs' '; '-joined exclusion lists (details: sweep.csv)."""
    items = {x for v in values if isinstance(v, str) and v for x in v.split("; ")}
    if not items:
        return "none"
    sizes = [int(x.rsplit("(", 1)[1].split()[0]) for x in items]
    return f"{len(items)} settings ({min(sizes)}–{max(sizes)} items each)"


def _ci(row, metric: str) -> str:
    mean, ci = row.get(f"{metric} mean"), row.get(f"{metric} ci95")
    return "–" if pd.isna(mean) else _mean_pm(mean, ci, metric)


def _mean_pm(mean: float, spread: float, metric: str) -> str:
    """'mean ± spread' at the metric's digits; the mean alone when there is no spread (one seed)."""
    d = _digits(metric)
    return f"{mean:.{d}f}" if pd.isna(spread) else f"{mean:.{d}f} ± {spread:.{d}f}"
