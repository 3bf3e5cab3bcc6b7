"""The synthetic image–text sweep's tables and plot from its job records (a PIPELINE CHECK, labelled as such).

    python scripts/image_text_sweep_report.py [docs/results/image_text_synthetic]

Reads ``jobs/*.json`` (written by ``+sweep=image_text_synthetic``), writes ``summary.csv`` (one row per batch size
and α: mean and sd over seeds), ``per_language.csv`` (t2i R@1 per caption language) and ``batch_alpha.png``; prints
the markdown table that docs/results/image_text_synthetic/README.md quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt

METRICS = {
    "val/t2i/r@1": "t2i R@1",
    "val/i2t/r@1": "i2t R@1",
    "val/caption/cross/map": "caption X→Y mAP",
    "val/multi/map": "pool mAP",
    "val/multi/rank_distance": "rank distance",
    "val/clipscore": "CLIPScore",
}


def load(folder: Path) -> pd.DataFrame:
    rows = []
    for path in sorted((folder / "jobs").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("status") != "ok":
            continue
        row = {
            "batch_size": rec["batch_size"],
            "alpha": rec["alpha"],
            "seed": rec["seed"],
            "steps": rec["steps"],
            "pairs": rec["sampling"]["pairs"],
            "realised_alpha": rec["sampling"]["realised_alpha"],
            "passes": rec["passes_over_images"],
            "wall_s": rec["wall_time_s"],
            "commit": rec["commit"],
        }
        row.update({k: rec["metrics"].get(k) for k in METRICS})
        row.update(
            {
                f"t2i/{k.split('/')[2]}": v
                for k, v in rec["metrics"].items()
                if k.startswith("val/t2i/") and k.count("/") == 3 and k.endswith("/r@1")
            }
        )
        rows.append(row)
    if not rows:
        raise SystemExit(f"no finished job records in {folder / 'jobs'}")
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["batch_size", "alpha"])
    out = g.agg(
        seeds=("seed", "nunique"), steps=("steps", "first"), pairs=("pairs", "first"), realised_alpha=("realised_alpha", "mean")
    )
    for k in METRICS:
        out[f"{k}_mean"] = g[k].mean()
        out[f"{k}_sd"] = g[k].std(ddof=1)
    return out.reset_index()


def markdown(s: pd.DataFrame) -> str:
    head = "| B | α (realised) | steps | seeds | " + " | ".join(METRICS.values()) + " |"
    lines = [head, "|" + "---|" * (4 + len(METRICS))]
    for _, r in s.iterrows():
        cells = []
        for k in METRICS:
            fmt = "{:.1f} ± {:.1f}" if k in ("val/multi/rank_distance", "val/clipscore") else "{:.4f} ± {:.4f}"
            cells.append(fmt.format(r[f"{k}_mean"], r[f"{k}_sd"]))
        lines.append(
            f"| {int(r.batch_size)} | {r.alpha:g} ({r.realised_alpha:g}) | {int(r.steps)} | {int(r.seeds)} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def plot(s: pd.DataFrame, out: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), dpi=110)
    for ax, k in zip(axes, ("val/t2i/r@1", "val/caption/cross/map", "val/multi/rank_distance"), strict=True):
        for alpha, part in s.groupby("alpha"):
            ax.errorbar(part.batch_size, part[f"{k}_mean"], yerr=part[f"{k}_sd"], marker="o", capsize=3, label=f"α={alpha:g}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (equal pairs)")
        ax.set_title(METRICS[k])
    axes[0].legend()
    fig.suptitle("SYNTHETIC image–caption set: pipeline check, not a research result", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default="docs/results/image_text_synthetic", type=Path)
    args = ap.parse_args(argv)
    df = load(args.folder)
    s = summary(df)
    s.to_csv(args.folder / "summary.csv", index=False, float_format="%.6g")
    langs = sorted(c for c in df.columns if c.startswith("t2i/"))
    df.groupby(["batch_size", "alpha"])[langs].mean().reset_index().to_csv(
        args.folder / "per_language.csv", index=False, float_format="%.6g"
    )
    plot(s, args.folder / "batch_alpha.png")
    print(markdown(s))
    print(f"\n{len(df)} jobs; commits {sorted(set(df.commit))}; wall time {df.wall_s.sum() / 60:.1f} min in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
