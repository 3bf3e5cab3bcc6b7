"""Aggregate a batch-size sweep: tidy CSV, plots and a markdown report.

    python -m hybrid_retrieval.report logs/xquad_r/multiruns/<time>        # from the job directories
    python -m hybrid_retrieval.report --csv docs/results/sweep.csv --out docs/results   # from a CSV

Each job directory holds ``.hydra/config.yaml`` and either ``final_metrics.json`` (finished) or
``FAILED.json`` (failed; kept in the CSV with ``status=failed``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ["mono/map", "cross/map", "multi/map", "multi/rank_distance", "mono/r@1", "cross/r@1", "multi/hit@1", "cross/r@10"]
PANELS = [
    ("mono/map", "monolingual mAP (X→X)"),
    ("cross/map", "cross-lingual mAP (X→Y)"),
    ("multi/map", "multilingual mAP (X→all)"),
    ("multi/rank_distance", "rank distance (lower = less bias)"),
]


def _cfg(job: Path) -> dict:
    from omegaconf import OmegaConf  # noqa: PLC0415

    path = job / ".hydra" / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.exists() else {}


def collect(sweep_dir: Path) -> pd.DataFrame:
    rows = []
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").exists()):
        cfg = _cfg(job)
        data = cfg.get("data", {})
        row = {
            "job": job.name,
            "batch_size": data.get("batch_size"),
            "alpha": (data.get("sampler") or {}).get("alpha"),
            "seed": cfg.get("seed"),
            "train": (data.get("train") or {}).get("name"),
            "eval": (data.get("eval") or {}).get("name"),
        }
        if (job / "final_metrics.json").exists():
            fm = json.loads((job / "final_metrics.json").read_text())
            row.update(status="ok", steps=fm.get("global_step"), wall_time_s=fm.get("wall_time_s"))
            for m in METRICS:
                row[m] = fm["metrics"].get(f"val/{m}")
            evals = sorted((job / "eval").glob("epoch*.json"))
            row["eval_json"] = str(evals[-1].relative_to(sweep_dir)) if evals else None
        else:
            err = json.loads((job / "FAILED.json").read_text())["error"] if (job / "FAILED.json").exists() else "no result"
            row.update(status="failed", error=err)
        rows.append(row)
    if not rows:
        raise SystemExit(f"{sweep_dir}: no job directories (expected */.hydra/config.yaml)")
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    ok = df[df.status == "ok"]
    agg = ok.groupby(["alpha", "batch_size"])[[m for m in METRICS if m in ok]].agg(["mean", "std", "count"])
    agg.columns = [f"{m} {s}" for m, s in agg.columns]
    return agg.reset_index()


def plot_curves(summary: pd.DataFrame, out: Path) -> Path:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4), dpi=110)
    names = {0.0: "α=0 (cross only)", 0.5: "α=0.5 (hybrid)", 1.0: "α=1 (mono only)"}
    for ax, (metric, title) in zip(axes, PANELS, strict=True):
        for alpha, grp in summary.groupby("alpha"):
            grp = grp.sort_values("batch_size")
            mean, std = grp[f"{metric} mean"], grp[f"{metric} std"].fillna(0.0)
            ax.errorbar(grp.batch_size, mean, yerr=std, marker="o", capsize=3, label=names.get(float(alpha), f"α={alpha}"))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("mean ± std over seeds", fontsize=8)
    fig.tight_layout()
    path = out / "batch_size_curves.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_pair_deltas(df: pd.DataFrame, sweep_dir: Path | None, out: Path) -> list[Path]:
    """Per-pair mAP change from the smallest to the largest batch size, per alpha (needs eval JSONs)."""
    if sweep_dir is None or "eval_json" not in df:
        return []
    from hybrid_retrieval.plots import heatmap  # noqa: PLC0415

    paths = []
    ok = df[(df.status == "ok") & df.eval_json.notna()]
    for alpha, grp in ok.groupby("alpha"):
        lo, hi = grp.batch_size.min(), grp.batch_size.max()
        if lo == hi:
            continue

        def mean_matrix(sub):
            mats = []
            for rel in sub.eval_json:
                ev = json.loads((sweep_dir / rel).read_text())
                langs = ev["languages"]
                mats.append(np.array([[ev["metrics"][f"{x}-{y}/map"] for y in langs] for x in langs]))
            return langs, np.mean(mats, axis=0)

        langs, m_lo = mean_matrix(grp[grp.batch_size == lo])
        _, m_hi = mean_matrix(grp[grp.batch_size == hi])
        fig = heatmap(m_hi - m_lo, langs, title=f"Δ mAP, batch {hi} − {lo}, α={alpha}", fmt="{:+.2f}", center_zero=True)
        path = out / f"pair_delta_alpha{alpha}.png"
        fig.savefig(path)
        import matplotlib.pyplot as plt  # noqa: PLC0415

        plt.close(fig)
        paths.append(path)
    return paths


def write_markdown(df: pd.DataFrame, summary: pd.DataFrame, out: Path, figures: list[Path], source: str) -> Path:
    lines = [
        f"# Batch-size sweep report\n\nSource: `{source}`. Jobs: {len(df)} ({(df.status == 'ok').sum()} ok, "
        f"{(df.status == 'failed').sum()} failed).\n"
    ]
    lines.append("| α | batch | n | mono mAP | cross mAP | multi mAP | rank distance |")
    lines.append("|---|---|---|---|---|---|---|")

    def fmt(row, m):
        mean, std = row.get(f"{m} mean"), row.get(f"{m} std")
        return f"{mean:.4f} ± {0.0 if pd.isna(std) else std:.4f}" if not pd.isna(mean) else "–"

    for _, r in summary.sort_values(["alpha", "batch_size"]).iterrows():
        lines.append(
            f"| {r.alpha} | {int(r.batch_size)} | {int(r['mono/map count'])} | {fmt(r, 'mono/map')} | "
            f"{fmt(r, 'cross/map')} | {fmt(r, 'multi/map')} | {fmt(r, 'multi/rank_distance')} |"
        )
    failed = df[df.status == "failed"]
    if len(failed):
        lines.append("\n## Failed jobs\n")
        for _, r in failed.iterrows():
            lines.append(f"- job {r.job} (batch {r.batch_size}, α {r.alpha}, seed {r.seed}): {r.get('error', '')}")
    lines.append("")
    for fig in figures:
        lines.append(f"![{fig.stem}]({fig.name})")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", nargs="?", help="a multirun directory (logs/<task>/multiruns/<time>)")
    ap.add_argument("--csv", help="re-create the report from a tidy CSV written earlier")
    ap.add_argument("--out", help="output folder (default: the sweep directory)")
    args = ap.parse_args(argv)
    if bool(args.sweep_dir) == bool(args.csv):
        ap.error("give a sweep directory or --csv")
    sweep_dir = Path(args.sweep_dir) if args.sweep_dir else None
    df = collect(sweep_dir) if sweep_dir else pd.read_csv(args.csv)
    out = Path(args.out) if args.out else (sweep_dir or Path(args.csv).parent)
    out.mkdir(parents=True, exist_ok=True)
    if sweep_dir:
        df.to_csv(out / "sweep.csv", index=False)
    summary = summarise(df)
    summary.to_csv(out / "summary.csv", index=False)
    figures = [plot_curves(summary, out), *plot_pair_deltas(df, sweep_dir, out)] if len(summary) else []
    report = write_markdown(df, summary, out, figures, str(sweep_dir or args.csv))
    print(report.read_text())
    print(f"written: {out / 'summary.csv'}, {report}, " + ", ".join(str(f) for f in figures))


if __name__ == "__main__":
    main()
