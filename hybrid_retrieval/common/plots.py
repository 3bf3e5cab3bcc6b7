"""Plots people would rather look at than read: language-pair heatmaps."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def heatmap(
    matrix: np.ndarray,
    languages: list[str],
    title: str = "",
    fmt: str = "{:.2f}",
    cmap: str = "viridis",
    center_zero: bool = False,
):
    """(L, L) matrix, rows = query language, columns = candidate language, values annotated."""
    n = len(languages)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n), dpi=110)
    kw = {}
    if center_zero:
        lim = float(np.nanmax(np.abs(matrix))) or 1.0
        kw = {"vmin": -lim, "vmax": lim}
        cmap = "RdBu"
    im = ax.imshow(matrix, cmap=cmap, **kw)
    ax.set_xticks(range(n), languages)
    ax.set_yticks(range(n), languages)
    ax.set_xlabel("candidate language")
    ax.set_ylabel("query language")
    if title:
        ax.set_title(title, fontsize=9)
    for i in range(n):
        for j in range(n):
            v = matrix[i, j]
            if np.isfinite(v):
                ax.text(
                    j,
                    i,
                    fmt.format(v),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if not center_zero and v < np.nanmean(matrix) else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig
