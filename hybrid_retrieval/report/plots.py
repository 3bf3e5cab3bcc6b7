"""The report's figures: metric curves against batch size, per-pair Δ heatmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hybrid_retrieval.common.plots import heatmap

PANELS = [
    ("mono/map", "monolingual mAP (X→X)"),
    ("cross/map", "cross-lingual mAP (X→Y)"),
    ("multi/map", "multilingual mAP (X→all)"),
    ("multi/rank_distance", "rank distance (lower = less bias)"),
]
RECALL_PANELS = [
    ("mono/r@1", "monolingual R@1 (X→X)"),
    ("cross/r@1", "cross-lingual R@1 (X→Y)"),
    ("multi/hit@1", "multilingual hit@1 (X→all)"),
    ("cross/r@10", "cross-lingual R@10 (X→Y)"),
]


def plot_curves(
    summary: pd.DataFrame,
    out: Path,
    baseline: dict | None = None,
    err: str = "std",
    name: str = "batch_size_curves.png",
    title: str = "mean ± std over seeds",
    panels: list[tuple[str, str]] | None = None,
    xlabels: dict[int, str] | None = None,
) -> Path:
    """One panel per metric, one line per α. ``xlabels``: tick label per batch size (e.g. with the
    distinct negatives a query saw, which is what a batch size means to the loss)."""
    import matplotlib  # noqa: PLC0415 - slow to import (~1 s); only plots need it, after the headless backend is chosen

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - slow to import (~1 s); only plots need it, after the headless backend is chosen

    panels = [(m, t) for m, t in (panels or PANELS) if f"{m} mean" in summary]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), dpi=110, squeeze=False)
    axes = axes[0]
    names = {0.0: "α=0 (cross only)", 0.5: "α=0.5 (hybrid)", 1.0: "α=1 (mono only)"}
    for ax, (metric, panel_title) in zip(axes, panels, strict=True):
        for alpha, grp in summary.groupby("alpha"):
            grp = grp.sort_values("batch_size")
            mean, std = grp[f"{metric} mean"], grp[f"{metric} {err}"].fillna(0.0)
            ax.errorbar(grp.batch_size, mean, yerr=std, marker="o", capsize=3, label=names.get(float(alpha), f"α={alpha}"))
        if baseline is not None and metric in baseline:
            ax.axhline(baseline[metric], color="grey", linestyle="--", linewidth=1, label="zero-shot (untrained)")
        ax.set_xscale("log", base=2)
        if xlabels:
            ax.set_xticks(sorted(xlabels), [xlabels[b] for b in sorted(xlabels)], fontsize=7)
            ax.minorticks_off()
            ax.set_xlabel("batch size (distinct negatives / query)", fontsize=8)
        else:
            ax.set_xlabel("batch size")
        ax.set_title(panel_title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = out / name
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_pair_deltas(pairs: pd.DataFrame, out: Path) -> list[Path]:
    """Per-pair mAP change from the smallest to the largest batch size, per α (mean over seeds)."""
    if pairs is None or pairs.empty:
        return []
    import matplotlib.pyplot as plt  # noqa: PLC0415 - slow to import (~1 s); only plots need it, after the headless backend is chosen

    paths = []
    for alpha, grp in pairs.groupby("alpha"):
        lo, hi = grp.batch_size.min(), grp.batch_size.max()
        if lo == hi:
            continue
        langs = list(dict.fromkeys(grp.query_lang))
        mean = grp.groupby(["batch_size", "query_lang", "passage_lang"])["map"].mean()

        def matrix(batch, mean=mean, langs=langs):
            return np.array([[mean[(batch, x, y)] for y in langs] for x in langs])  # (|L|, |L|)

        fig = heatmap(
            matrix(hi) - matrix(lo), langs, title=f"Δ mAP, batch {hi} − {lo}, α={alpha}", fmt="{:+.2f}", center_zero=True
        )
        path = out / f"pair_delta_alpha{alpha}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
