"""Aggregate a batch-size sweep: tidy CSV, plots and a markdown report.

    python -m hybrid_retrieval.report logs/xquad_r/multiruns/<time>        # from the job directories
    python -m hybrid_retrieval.report --csv docs/results/sweep.csv --out docs/results   # from a CSV

Each job directory holds ``.hydra/config.yaml`` and either ``final_metrics.json`` (finished),
``FAILED.json`` (failed; kept in the CSV with ``status=failed``) or neither (``status=incomplete``:
still running, or killed). Outputs: ``sweep.csv`` (one row per job), ``pairs.csv`` (one row per job
and language pair: the heatmaps' source), ``summary.csv`` (mean, std, count per α × batch size),
``report.md`` with the effects measured against seed noise, and the figures. ``--baseline`` takes the
``summary.json`` of ``python -m hybrid_retrieval.evaluate`` on the same evaluation pool (the untrained
encoder) and adds it to the table and the curves; it is copied to ``baseline.json`` so that ``--csv``
reproduces everything from the output folder alone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ["mono/map", "cross/map", "multi/map", "multi/rank_distance", "mono/r@1", "cross/r@1", "multi/hit@1", "cross/r@10"]
PAIR_METRICS = ["map", "map@20", "r@1", "r@10"]
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


def _cfg(job: Path) -> dict:
    from omegaconf import OmegaConf  # noqa: PLC0415

    path = job / ".hydra" / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.exists() else {}


def collect(sweep_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per job, one row per job × language pair)."""
    rows, pair_rows = [], []
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
            if evals:
                ev = json.loads(evals[-1].read_text())
                for x in ev["languages"]:
                    for y in ev["languages"]:
                        pair = {k: row[k] for k in ("job", "batch_size", "alpha", "seed")}
                        pair.update(query_lang=x, passage_lang=y)
                        pair.update({m: ev["metrics"].get(f"{x}-{y}/{m}") for m in PAIR_METRICS})
                        pair_rows.append(pair)
        elif (job / "FAILED.json").exists():
            row.update(status="failed", error=json.loads((job / "FAILED.json").read_text())["error"])
        else:
            row.update(status="incomplete", error="no result yet (still running, or killed)")
        rows.append(row)
    if not rows:
        raise SystemExit(f"{sweep_dir}: no job directories (expected */.hydra/config.yaml)")
    return pd.DataFrame(rows), pd.DataFrame(pair_rows)


def collect_records(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per job record, one row per job × language pair) from ``{results_dir}/*.json``.

    Records are what sweeps write with ``results_dir`` set (:mod:`hybrid_retrieval.sweeps`): they hold
    the configuration, what the sampler really did and the metrics, so the report needs no run directory."""
    rows, pair_rows = [], []
    for path in sorted(Path(results_dir).glob("*.json")):
        rec = json.loads(path.read_text())
        if "status" not in rec:
            continue
        row = {"job": rec.get("job", path.stem), "status": rec["status"]}
        if rec["status"] != "ok":
            row["error"] = rec.get("error", "")
            row.update(_identity_from_overrides(rec.get("overrides", [])))
            rows.append(row)
            continue
        samp = rec.get("sampling", {})
        row.update(
            {k: rec.get(k) for k in ("batch_size", "alpha", "seed", "steps", "train", "eval", "eval_questions", "lr")}
            | {
                "pairs": samp.get("pairs"),
                "eval_candidates": rec.get("eval_candidates"),
                "train_layers": rec.get("train_layers") if rec.get("train_layers") is not None else "all",
                "realised_alpha": samp.get("realised_alpha"),
                "alpha_schedule": samp.get("alpha_schedule"),
                "distinct_negatives": samp.get("distinct_negatives_per_query"),
                "dup_pairs_per_batch": samp.get("dup_pairs_per_batch"),
                "mono_languages": " ".join(sorted(k.split("-")[0] for k in samp.get("batch_settings", {}) if _mono(k))),
                "cross_pairs_used": sum(1 for k in samp.get("batch_settings", {}) if not _mono(k)),
                "cross_pairs_feasible": len(samp.get("feasible_cross", [])),
                "excluded": "; ".join(samp.get("excluded", [])),
                "wall_time_s": rec.get("wall_time_s"),
                "commit": rec.get("commit"),
                "extra_overrides": _extra_overrides(rec.get("overrides", [])),
            }
        )
        for m in METRICS:
            row[m] = rec["metrics"].get(f"val/{m}")
        rows.append(row)
        for setting, vals in rec.get("pairs", {}).items():
            x, y = setting.split("-", 1)
            if y == "all":
                continue
            pair = {k: row[k] for k in ("job", "train", "eval", "batch_size", "alpha", "seed", "train_layers")}
            pair.update(query_lang=x, passage_lang=y, **{m: vals.get(m) for m in PAIR_METRICS})
            pair_rows.append(pair)
    if not rows:
        raise SystemExit(f"{results_dir}: no job records (*.json with a 'status')")
    return pd.DataFrame(rows), pd.DataFrame(pair_rows)


#: Overrides that place a job in the study's grid; any other (an lr check, full fine-tuning) makes it a side row.
GRID_KEYS = ("experiment", "sweep", "seed", "data.batch_size", "data.sampler.alpha", "logger", "hydra", "results_dir")


def _extra_overrides(overrides: list[str]) -> str:
    keys = [o.lstrip("+~") for o in overrides]
    return " ".join(sorted(o for o in keys if not any(o.split("=", 1)[0] == k or o.startswith(k + ".") for k in GRID_KEYS)))


def _mono(setting: str) -> bool:
    x, _, y = setting.partition("-")
    return x == y


def _identity_from_overrides(overrides: list[str]) -> dict:
    keys = {"data.batch_size": "batch_size", "data.sampler.alpha": "alpha", "seed": "seed"}
    out = {}
    for o in overrides:
        k, _, v = o.lstrip("+").partition("=")
        if k in keys:
            out[keys[k]] = float(v) if keys[k] == "alpha" else int(v)
    return out


#: Student t 0.975 quantiles (two-sided 95 %) by degrees of freedom; between tabulated values the
#: next lower one is used (a slightly wider, conservative interval).
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086,
    21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042,
    40: 2.021, 60: 2.000, 120: 1.980,
}  # fmt: skip


def t_quantile_975(dof: int) -> float:
    """Student t 0.975 quantile (two-sided 95 % interval); no scipy needed."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    if dof > 120:
        return 1.960
    return _T975[max(d for d in _T975 if d <= dof)]


def summarise(df: pd.DataFrame, by: tuple[str, ...] = ("alpha", "batch_size")) -> pd.DataFrame:
    """Mean, std, count and the 95 % confidence half-width (t over seeds) per cell."""
    ok = df[df.status == "ok"]
    agg = ok.groupby(list(by))[[m for m in METRICS if m in ok]].agg(["mean", "std", "count"])
    agg.columns = [f"{m} {s}" for m, s in agg.columns]
    for m in METRICS:
        if f"{m} std" in agg:
            n = agg[f"{m} count"]
            agg[f"{m} ci95"] = [
                t_quantile_975(int(c) - 1) * sd / math.sqrt(c) if c > 1 and not pd.isna(sd) else float("nan")
                for sd, c in zip(agg[f"{m} std"], n, strict=True)
            ]
    return agg.reset_index()


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
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

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
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from hybrid_retrieval.plots import heatmap  # noqa: PLC0415

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


def _pool(var: pd.Series, n: pd.Series) -> tuple[float, int]:
    """Pooled standard deviation of cells with variances ``var`` and sizes ``n`` (weighted by degrees of
    freedom) and those degrees of freedom; (nan, 0) when no cell has two values."""
    dof = int((n - 1).clip(lower=0).sum())
    if dof == 0:
        return float("nan"), 0
    return math.sqrt(float(((n - 1) * var.fillna(0.0)).sum()) / dof), dof


def pooled_seed_noise(df: pd.DataFrame, metric: str) -> tuple[float, int]:
    """The pooled standard deviation over seeds of the (α, batch) cells of ``df`` (variances weighted by
    their degrees of freedom) and those degrees of freedom; (nan, 0) when no cell has two seeds."""
    cells = df[df[metric].notna()].groupby(["alpha", "batch_size"])[metric]
    return _pool(cells.var(), cells.count())


def one_job_band(df: pd.DataFrame, metric: str) -> float:
    """95 % half-width of a one-job-vs-one-job difference, t·sd·√2 with sd the pooled seed std of ``df``'s
    cells (nan when no cell has two seeds): the yardstick for single-seed side jobs."""
    sd, dof = pooled_seed_noise(df, metric)
    return t_quantile_975(dof) * sd * math.sqrt(2) if dof else float("nan")


def effects(df: pd.DataFrame, metric: str = "cross/map") -> list[str]:
    """Markdown lines: batch-size and sampling effects, each with a 95 % confidence interval from the seed noise.

    Noise = the pooled standard deviation over seeds of all (α, batch) cells (weighted by their degrees
    of freedom; this assumes the cells share one noise level). A difference of two cell means with n_a
    and n_b seeds has standard error sd·√(1/n_a + 1/n_b); its 95 % interval uses Student t with the
    pooled degrees of freedom, and it is called clear when that interval excludes 0.
    """
    ok = df[(df.status == "ok") & df[metric].notna()]
    if ok.empty:
        return []
    cells = ok.groupby(["alpha", "batch_size"])[metric]
    var, n, mean = cells.var(), cells.count(), cells.mean()
    sd, dof = _pool(var, n)
    if dof == 0:
        return [f"\nOne seed per cell: no noise estimate for {metric}."]
    t = t_quantile_975(dof)
    digits = _digits(metric)
    cell_sd = var[n > 1] ** 0.5

    def diff(a: tuple, b: tuple) -> str:
        d = mean[a] - mean[b]
        half = t * sd * math.sqrt(1.0 / n[a] + 1.0 / n[b])
        verdict = "**clear**" if abs(d) > half else "within noise"
        return f"{d:+.{digits}f} [{d - half:+.{digits}f}, {d + half:+.{digits}f}] ({verdict})"

    lines = [
        f"\n### Effects on {metric}: differences with 95 % confidence intervals\n",
        f"Seed noise: pooled std over seeds {sd:.{digits + 1}f} ({int((n > 1).sum())} cells with ≥ 2 seeds, "
        f"{dof} degrees of freedom, t = {t:.3f}; per-cell std {cell_sd.min():.{digits + 1}f}–"
        f"{cell_sd.max():.{digits + 1}f}: pooling assumes one noise level for every cell). "
        "'clear' = the interval excludes 0.\n",
    ]
    rows = []
    for alpha in sorted(ok.alpha.unique()):
        bs = sorted(b for a, b in mean.index if a == alpha)
        steps = list(itertools.pairwise(bs))
        if len(bs) > 2:
            steps.append((bs[0], bs[-1]))
        rows += [f"| {alpha} | {int(lo)} → {int(hi)} | {diff((alpha, hi), (alpha, lo))} |" for lo, hi in steps]
    if rows:
        lines += ["| α | batch change | Δ [95 % CI] |", "|---|---|---|", *rows]
    alphas = sorted(ok.alpha.unique())
    if 0.5 in alphas and len(alphas) > 1:
        lines += ["", "| batch | hybrid − mono only (α 0.5 − 1) | hybrid − cross only (α 0.5 − 0) |", "|---|---|---|"]
        for b in sorted(ok.batch_size.unique()):
            cols = [diff((0.5, b), (o, b)) if (0.5, b) in mean.index and (o, b) in mean.index else "–" for o in (1.0, 0.0)]
            lines.append(f"| {int(b)} | {cols[0]} | {cols[1]} |")
    return lines


def write_markdown(
    df: pd.DataFrame, summary: pd.DataFrame, out: Path, figures: list[Path], source: str, baseline: dict | None = None
) -> Path:
    incomplete = (df.status == "incomplete").sum()
    lines = [
        f"# Batch-size sweep report\n\nSource: `{source}`. Jobs: {len(df)} ({(df.status == 'ok').sum()} ok, "
        f"{(df.status == 'failed').sum()} failed" + (f", {incomplete} incomplete" if incomplete else "") + ").\n"
    ]
    lines.append("| α | batch | n | mono mAP | cross mAP | multi mAP | rank distance |")
    lines.append("|---|---|---|---|---|---|---|")

    def fmt(row, m):
        mean, std = row.get(f"{m} mean"), row.get(f"{m} std")
        return "–" if pd.isna(mean) else _mean_pm(mean, 0.0 if pd.isna(std) else std, m)

    for _, r in summary.sort_values(["alpha", "batch_size"]).iterrows():
        lines.append(
            f"| {r.alpha} | {int(r.batch_size)} | {int(r['mono/map count'])} | {fmt(r, 'mono/map')} | "
            f"{fmt(r, 'cross/map')} | {fmt(r, 'multi/map')} | {fmt(r, 'multi/rank_distance')} |"
        )
    if baseline is not None:
        lines.append(
            "| zero-shot (untrained) | – | 1 | "
            + " | ".join(
                _fmt(baseline[m], m) if m in baseline else "–"
                for m in ("mono/map", "cross/map", "multi/map", "multi/rank_distance")
            )
            + " |"
        )
    lines += effects(df, "cross/map") + effects(df, "multi/map") + effects(df, "mono/map")
    failed = df[df.status != "ok"]
    if len(failed):
        lines.append("\n## Failed or incomplete jobs\n")
        for _, r in failed.iterrows():
            lines.append(f"- job {r.job} (batch {r.batch_size}, α {r.alpha}, seed {r.seed}): {r.get('error', '')}")
    lines.append("")
    for fig in figures:
        lines.append(f"![{fig.stem}]({fig.name})")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


STUDY_COLUMNS = [
    "job", "train", "eval", "batch_size", "alpha", "seed", "steps", "pairs", "eval_questions", "eval_candidates",
    "train_layers", "lr", "status", "realised_alpha", "alpha_schedule", "distinct_negatives", "dup_pairs_per_batch",
    "mono_languages", "cross_pairs_used", "cross_pairs_feasible", "excluded", *METRICS, "wall_time_s", "commit",
]  # fmt: skip


def main_grid(ok: pd.DataFrame, alphas: tuple[float, ...] = (0.0, 0.5, 1.0), main_layers: str = "2") -> pd.Series:
    """Which rows (of finished jobs) are cells of the study's main grid: the main layer count, a main α
    and no override beyond the grid's (side studies, learning-rate checks, superseded jobs are not)."""
    return (ok.train_layers.astype(str) == main_layers) & ok.alpha.isin(alphas) & (_extra(ok) == "")


def _extra(ok: pd.DataFrame) -> pd.Series:
    """Each job's overrides beyond the grid ("" for none; side folders add their label)."""
    return ok["extra_overrides"].fillna("") if "extra_overrides" in ok else pd.Series("", index=ok.index)


def _same_cell_main(ok, is_main, train, evald, batch, seeds) -> pd.DataFrame:
    """The main grid's jobs of one direction and batch size, limited to the given seeds."""
    return ok[is_main & (ok.train == train) & (ok["eval"] == evald) & (ok.batch_size == batch) & ok.seed.isin(seeds)]


def study_report(
    records: Path,
    out: Path,
    expect: dict[tuple[str, str], list[int]] | None = None,
    alphas: tuple[float, ...] = (0.0, 0.5, 1.0),
    seeds: tuple[int, ...] = (0, 1, 2),
    main_layers: str = "2",
    baselines: dict[str, dict] | None = None,
    side_records: list[Path] | None = None,
) -> Path:
    """The batch-size study from its job records: per direction, mean ± 95 % CI over seeds per α × batch,
    effects against seed noise, per-pair deltas, what the sampler really used, side studies, missing jobs.

    ``side_records``: more record folders whose jobs are side rows whatever their overrides (e.g. jobs a
    design change superseded: their keys are the grid's, so they cannot stay in ``records``); each row
    is labelled with its folder's name."""
    df, pairs = collect_records(records)
    sources = [f"`{records}` ({len(df)} record{'s' * (len(df) != 1)})"]
    for folder in side_records or []:
        side_df, side_pairs = collect_records(folder)
        sources.append(f"`{folder}` ({len(side_df)} side record{'s' * (len(side_df) != 1)})")
        label = f"{Path(folder).name}/"
        extra = side_df["extra_overrides"].fillna("") if "extra_overrides" in side_df else [""] * len(side_df)
        side_df["extra_overrides"] = [f"{label} {x}".strip() for x in extra]
        df, pairs = pd.concat([df, side_df], ignore_index=True), pd.concat([pairs, side_pairs], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    df = df.reindex(columns=[c for c in STUDY_COLUMNS if c in df] + [c for c in df if c not in STUDY_COLUMNS])
    df.to_csv(out / "sweep.csv", index=False)
    pairs.to_csv(out / "pairs.csv", index=False)
    ok = df[df.status == "ok"]
    is_main = main_grid(ok, alphas, main_layers)
    lines = [
        "# Batch-size study report\n",
        f"Source: {' + '.join(sources)}: {(df.status == 'ok').sum()} ok, {(df.status != 'ok').sum()} failed. "
        "Cells: mean ± 95 % confidence half-width over seeds (Student t; n = seeds in the cell). "
        "Generated by `python -m hybrid_retrieval.report --records ...`.\n",
    ]
    directions = sorted({(r.train, r.eval) for r in ok.itertuples()} | set(expect or {}))
    for train, evald in directions:
        main = ok[is_main & (ok.train == train) & (ok["eval"] == evald)]
        sub = out / f"{train}_to_{evald}"
        sub.mkdir(exist_ok=True)
        lines.append(f"\n## Train {train} → evaluate {evald} (zero-shot, full benchmark)\n")
        if main.empty:
            lines.append("No finished job yet.\n")
        else:
            summary = summarise(main)
            summary.to_csv(sub / "summary.csv", index=False)
            first = main.iloc[0]
            lines.append(
                f"{int(first.eval_questions)} questions × {int(first.eval_candidates)} candidates; "
                f"{int(main.steps.iloc[0])} optimizer steps per job; frozen prefix: top {main_layers} layers train.\n"
            )
            lines.append(
                "| α | batch | n | lr | distinct negatives / query | realised α | mono mAP | cross mAP | multi mAP | cross R@1 | rank distance |"
            )
            lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
            for _, r in summary.sort_values(["alpha", "batch_size"]).iterrows():
                cell = main[(main.alpha == r.alpha) & (main.batch_size == r.batch_size)]
                lines.append(
                    f"| {r.alpha} | {int(r.batch_size)} | {int(r['mono/map count'])} | {cell.lr.iloc[0]:.2e} | "
                    f"{cell.distinct_negatives.mean():.1f} | {cell.realised_alpha.mean():.3f} | "
                    + " | ".join(_ci(r, m) for m in ("mono/map", "cross/map", "multi/map", "cross/r@1", "multi/rank_distance"))
                    + " |"
                )
            base = (baselines or {}).get(evald)
            if base:
                lines.append(
                    "| zero-shot (untrained) | – | – | – | – | – | "
                    + " | ".join(_fmt(base.get(m), m) for m, _ in TABLE_METRICS)
                    + " |"
                )
            lines += strategy_table(summary)
            mix = main.groupby("batch_size").agg(
                mono=("mono_languages", lambda s: " ".join(sorted({lang for x in s if x for lang in x.split()})) or "–"),
                cross_used=("cross_pairs_used", "max"),
                cross_feasible=("cross_pairs_feasible", "max"),
                excluded=("excluded", _excluded_summary),
            )
            lines.append("\nWhat the sampler really used (over all jobs of a batch size):\n")
            lines.append("| batch | mono languages drawn | cross pairs drawn | cross pairs feasible | excluded settings |")
            lines.append("|---|---|---|---|---|")
            for b, r in mix.iterrows():
                lines.append(f"| {int(b)} | {r.mono} | {int(r.cross_used)} | {int(r.cross_feasible)} | {r.excluded} |")
            for metric in ("cross/map", "multi/map", "mono/map", "multi/rank_distance"):
                lines += effects(main, metric)
            negatives = {int(b): f"{int(b)}\n({v:.0f})" for b, v in main.groupby("batch_size").distinct_negatives.mean().items()}
            figs = [
                plot_curves(
                    summary,
                    sub,
                    base,
                    err="ci95",
                    title=f"train {train} → eval {evald}: mean ± 95 % CI over seeds",
                    xlabels=negatives,
                ),
                plot_curves(
                    summary,
                    sub,
                    base,
                    err="ci95",
                    name="batch_size_curves_recall.png",
                    title=f"train {train} → eval {evald}: recall, mean ± 95 % CI over seeds",
                    panels=RECALL_PANELS,
                    xlabels=negatives,
                ),
                *plot_pair_deltas(pairs[pairs.job.isin(main.job)], sub),
            ]
            lines.append("")
            lines += [f"![{f.stem}]({f.relative_to(out)})" for f in figs]
        if expect and (train, evald) in expect:
            have = {(float(r.alpha), int(r.batch_size), int(r.seed)) for r in main.itertuples()}
            missing = [(a, b, s) for s in seeds for a in alphas for b in expect[(train, evald)] if (a, b, s) not in have]
            total = len(alphas) * len(seeds) * len(expect[(train, evald)])
            lines.append(f"\nJobs finished: {total - len(missing)} of {total}.")
            if missing:
                lines.append("Missing (α, batch, seed): " + ", ".join(f"({a}, {b}, {s})" for a, b, s in missing))
    side = ok[~is_main]
    if len(side):
        lines.append("\n## Side studies (one row per job)\n")
        lines.append(
            "| train → eval | layers trained | α | batch | seed | lr | other overrides | mono mAP | cross mAP | multi mAP "
            "| cross R@1 | rank distance |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for _, r in side.sort_values(["train", "alpha", "batch_size", "seed"]).iterrows():
            lines.append(
                f"| {r.train} → {r['eval']} | {r.train_layers} | {r.alpha} | {int(r.batch_size)} | {r.seed} | {r.lr:.2e} | "
                f"{r.get('extra_overrides') or '–'} | "
                + " | ".join(_fmt(r[m], m) for m in ("mono/map", "cross/map", "multi/map", "cross/r@1", "multi/rank_distance"))
                + " |"
            )
        lines += twin_deltas(ok, is_main, main_layers)
        lines += alpha_stability(ok, is_main, main_layers, out)
        lines += full_finetuning_check(ok, is_main)
    bad = df[df.status != "ok"]
    if len(bad):
        lines.append("\n## Failed jobs\n")
        lines += [f"- {r.job}: {r.get('error', '')}" for _, r in bad.iterrows()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


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


def alpha_stability(ok: pd.DataFrame, is_main: pd.Series, main_layers: str, out: Path | None = None) -> list[str]:
    """Side study 1: metrics against α at the batch sizes where side α values (e.g. 0.25, 0.75) ran,
    next to the main grid's jobs of the same seeds (like compared with like); with ``out``, also a plot
    of them against α (:func:`plot_alpha_stability`)."""
    layers = ok.train_layers.astype(str) == main_layers
    side = ok[~is_main & layers & (_extra(ok) == "")]
    if side.empty:
        return []
    lines = [
        "\n### Side study: stability in α (one row per α; main-grid jobs of the same seeds included)\n",
        "| train → eval | batch | seeds | α | " + " | ".join(t for _, t in TABLE_METRICS) + " |",
        "|---|---|---|---|" + "---|" * len(TABLE_METRICS),
    ]
    curves = {}  # (train, eval, batch, seeds averaged) -> α-indexed means
    for (train, evald, b), grp in side.groupby(["train", "eval", "batch_size"]):
        seeds = sorted(grp.seed.unique())
        same = _same_cell_main(ok, is_main, train, evald, b, seeds)
        both = pd.concat([grp, same]).groupby("alpha")[[m for m, _ in TABLE_METRICS]].mean()
        curves[(train, evald, int(b), len(seeds))] = both.sort_index()
        for alpha, r in both.sort_index().iterrows():
            lines.append(
                f"| {train} → {evald} | {int(b)} | {' '.join(str(int(s)) for s in seeds)} | {alpha} | "
                + " | ".join(_fmt(r[m], m) for m, _ in TABLE_METRICS)
                + " |"
            )
    if out is not None:
        path = plot_alpha_stability(curves, ok[is_main], out)
        lines += ["", f"![{path.stem}]({path.name})"]
    return lines


ALPHA_PANELS = (("cross/map", "cross mAP"), ("multi/map", "multi mAP"), ("multi/rank_distance", "rank distance"))


def plot_alpha_stability(curves: dict, main: pd.DataFrame, out: Path) -> Path:
    """Metric against α, one line per (direction, batch size); error bars ±t·sd/√n with sd the direction's
    pooled seed std and n the seeds averaged (for one seed: the range one job's value falls in by seed alone)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, len(ALPHA_PANELS), figsize=(4.2 * len(ALPHA_PANELS), 3.4), dpi=110, squeeze=False)
    for ax, (metric, panel_title) in zip(axes[0], ALPHA_PANELS, strict=True):
        for (train, evald, b, n), tab in curves.items():
            sd, dof = pooled_seed_noise(main[(main.train == train) & (main["eval"] == evald)], metric)
            half = t_quantile_975(dof) * sd / math.sqrt(n) if dof else 0.0
            ax.errorbar(tab.index, tab[metric], yerr=half, marker="o", capsize=3, label=f"{train} → {evald}, B={b}")
        ax.axvspan(0.4, 0.6, color="grey", alpha=0.12, linewidth=0)
        ax.set_xlabel("α (share of monolingual batches)")
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1])
        ax.set_title(panel_title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("stability in α (shaded: the paper's stable range 0.4–0.6); ±95 % range from seed noise", fontsize=8)
    fig.tight_layout()
    path = out / "alpha_stability.png"
    fig.savefig(path)
    plt.close(fig)
    return path


TWIN_METRICS = ("mono/map", "cross/map", "multi/map", "multi/rank_distance")


def twin_deltas(ok: pd.DataFrame, is_main: pd.Series, main_layers: str) -> list[str]:
    """Side jobs that change one thing (an override, or a superseded design) beside their main-grid twin:
    the same direction, α, batch size and seed. Δ = side − twin. One job against one job, so the noise of a
    difference is sd·√2, with sd the direction's pooled seed std of that metric; **bold** when |Δ| exceeds
    the 95 % band t·sd·√2 (a check, not a seed-averaged effect)."""
    layers = ok.train_layers.astype(str) == main_layers
    side = ok[~is_main & layers & (_extra(ok) != "")]
    key = ["train", "eval", "alpha", "batch_size", "seed"]
    main = ok[is_main]
    twins = main.drop_duplicates(key).set_index(key)
    bands = {}  # per direction with side jobs: metric -> 95 % half-width of a one-job-vs-one-job difference
    for train, evald in {(r.train, r["eval"]) for _, r in side.iterrows()}:
        here = main[(main.train == train) & (main["eval"] == evald)]
        bands[(train, evald)] = {m: one_job_band(here, m) for m in TWIN_METRICS}
    rows, used = [], set()
    for _, r in side.sort_values(["train", "extra_overrides", "alpha", "batch_size", "seed"]).iterrows():
        k = tuple(r[c] for c in key)
        if k not in twins.index:
            continue
        twin = twins.loc[k]
        direction = (r.train, r["eval"])
        used.add(direction)
        cells = []
        for m in TWIN_METRICS:
            d = r[m] - twin[m]
            text = f"{d:+.{_digits(m)}f}"
            cells.append(f"**{text}**" if abs(d) > bands[direction][m] else text)
        rows.append(
            f"| {r.train} → {r['eval']} | {r.alpha} | {int(r.batch_size)} | {int(r.seed)} | {r.extra_overrides} | "
            f"{r.lr:.2e} / {twin.lr:.2e} | " + " | ".join(cells) + " |"
        )
    if not rows:
        return []
    noise = "; ".join(
        f"{t} → {e}: " + ", ".join(f"{m} ±{_fmt(bands[(t, e)][m], m)}" for m in TWIN_METRICS) for t, e in sorted(used)
    )
    return [
        "\n### Side jobs against their main-grid twin (same direction, α, batch, seed; Δ = side − twin)\n",
        f"95 % band of a one-job-vs-one-job difference (t·sd·√2, pooled seed std of the direction): {noise}. "
        "**Bold** = outside the band.\n",
        "| train → eval | α | batch | seed | differs in | lr (side / twin) | "
        + " | ".join(f"Δ {t}" for m, t in TABLE_METRICS if m in TWIN_METRICS)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(TWIN_METRICS),
        *rows,
    ]


#: Overrides that make a job full fine-tuning (layers, cache, its learning rate, gradient-cache chunks) and
#: nothing else: a full fine-tuning job with any other override (e.g. duplicate masking) is not in the check.
FULL_FT_KEYS = ("model.encoder.", "budget.base_lr=", "model.grad_cache.")


def full_finetuning_check(ok: pd.DataFrame, is_main: pd.Series) -> list[str]:
    """Side study 2: does training all layers order the strategies like the frozen prefix does?
    Per batch size: each α's value under full fine-tuning and under the main grid (same seeds), with the
    rank of α among the strategies (1 = best)."""
    regime = _extra(ok).map(lambda x: all(o.startswith(FULL_FT_KEYS) for o in x.split()))
    full = ok[(ok.train_layers.astype(str) == "all") & ok.alpha.isin([a for a, _ in STRATEGIES]) & regime]
    if full.empty:
        return []
    lines = [
        "\n### Side study: frozen prefix vs full fine-tuning (rank of α within a batch size in brackets, 1 = best)\n",
        "| train → eval | batch | seeds | α | cross mAP, full | cross mAP, frozen | multi mAP, full | multi mAP, frozen "
        "| rank distance, full | rank distance, frozen |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    same_order = []
    for (train, evald, b), grp in full.groupby(["train", "eval", "batch_size"]):
        seeds = sorted(grp.seed.unique())
        frozen = _same_cell_main(ok, is_main, train, evald, b, seeds)
        metrics = ["cross/map", "multi/map", "multi/rank_distance"]
        f_mean, z_mean = grp.groupby("alpha")[metrics].mean(), frozen.groupby("alpha")[metrics].mean()
        ranks = {}
        for name, tab in (("full", f_mean), ("frozen", z_mean)):
            for m in metrics:
                ranks[(name, m)] = tab[m].rank(ascending="rank_distance" in m, method="min")
        for alpha in f_mean.index:
            cells = []
            for m in metrics:
                for name, tab in (("full", f_mean), ("frozen", z_mean)):
                    cells.append(f"{_fmt(tab[m][alpha], m)} ({int(ranks[(name, m)][alpha])})" if alpha in tab.index else "–")
            lines.append(
                f"| {train} → {evald} | {int(b)} | {' '.join(str(int(s)) for s in seeds)} | {alpha} | " + " | ".join(cells) + " |"
            )
        common = sorted(f_mean.index.intersection(z_mean.index))
        here = ok[is_main & (ok.train == train) & (ok["eval"] == evald)]
        for m in metrics:
            if len(common) < 2 or len(common) != len(f_mean.index):
                continue
            band = one_job_band(here, m)
            agree = list(f_mean[m][common].sort_values().index) == list(z_mean[m][common].sort_values().index)
            flips = []
            for a, c in itertools.combinations(common, 2):
                d_full, d_frozen = f_mean[m][c] - f_mean[m][a], z_mean[m][c] - z_mean[m][a]
                if math.copysign(1, d_full) != math.copysign(1, d_frozen) and (d_full or d_frozen):
                    clear = abs(d_full) > band and abs(d_frozen) > band
                    flips.append(
                        f"α {c} − {a}: {d_full:+.{_digits(m)}f} full vs {d_frozen:+.{_digits(m)}f} frozen "
                        f"({'both outside' if clear else 'not both outside'} ±{_fmt(band, m)})"
                    )
            same_order.append(
                f"B={int(b)} {m}: {'same' if agree else 'different'} order of α"
                + (f" (reversed: {'; '.join(flips)})" if flips else "")
            )
    if same_order:
        lines.append(
            "\nOrder of α per metric. A reversed pair is one whose difference has opposite signs in the two regimes; "
            "± is the 95 % band of a one-job-vs-one-job difference from the frozen grid's pooled seed noise (full "
            "fine-tuning ran one seed, so its own noise is not measured: the band assumes it is alike). A reversal "
            "means something only when both differences are outside it.\n"
        )
        lines += [f"- {x}" for x in same_order]
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dir", nargs="?", help="a multirun directory (logs/<task>/multiruns/<time>)")
    ap.add_argument("--csv", help="re-create the report from a tidy CSV written earlier")
    ap.add_argument("--out", help="output folder (default: the sweep directory)")
    ap.add_argument("--baseline", nargs="+", help="summary.json of `hybrid_retrieval.evaluate` on the same pool (zero-shot row)")
    ap.add_argument("--records", help="a results_dir of job records (*.json): the study report, per direction")
    ap.add_argument(
        "--expect",
        nargs="*",
        default=[],
        help="expected grid per direction, e.g. xquad-r:mlqa-r:16,64,256,1024 (lists missing jobs)",
    )
    ap.add_argument("--side-records", nargs="*", default=[], help="record folders shown as side rows only (with --records)")
    ap.add_argument("--alphas", default="0,0.5,1")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args(argv)
    if args.records:
        expect = {(t, e): [int(b) for b in bs.split(",")] for t, e, bs in (x.split(":") for x in args.expect)}
        baselines = {}
        for path in args.baseline or []:
            src = json.loads(Path(path).read_text())
            baselines[src.get("dataset", Path(path).parent.name)] = src.get("macro", src)
        out = Path(args.out or args.records)
        report = study_report(
            Path(args.records),
            out,
            expect,
            alphas=tuple(float(a) for a in args.alphas.split(",")),
            seeds=tuple(int(x) for x in args.seeds.split(",")),
            baselines=baselines,
            side_records=[Path(x) for x in args.side_records],
        )
        (out / "baselines.json").write_text(json.dumps(baselines, indent=1))
        print(report.read_text())
        return
    if bool(args.sweep_dir) == bool(args.csv):
        ap.error("give a sweep directory, --csv or --records")
    args.baseline = args.baseline[0] if args.baseline else None
    sweep_dir = Path(args.sweep_dir) if args.sweep_dir else None
    if sweep_dir:
        df, pairs = collect(sweep_dir)
    else:
        df = pd.read_csv(args.csv)
        pairs_csv = Path(args.csv).with_name("pairs.csv")
        pairs = pd.read_csv(pairs_csv) if pairs_csv.exists() else None
    out = Path(args.out) if args.out else (sweep_dir or Path(args.csv).parent)
    out.mkdir(parents=True, exist_ok=True)
    baseline = None
    if args.baseline:
        src = json.loads(Path(args.baseline).read_text())
        baseline = src.get("macro", src)  # evaluate's summary.json, or a baseline.json written here
        (out / "baseline.json").write_text(json.dumps(baseline, indent=1))
    elif args.csv and Path(args.csv).with_name("baseline.json").exists():
        baseline = json.loads(Path(args.csv).with_name("baseline.json").read_text())
        if out.resolve() != Path(args.csv).parent.resolve():
            (out / "baseline.json").write_text(json.dumps(baseline, indent=1))
    if sweep_dir:
        df.to_csv(out / "sweep.csv", index=False)
        pairs.to_csv(out / "pairs.csv", index=False)
    summary = summarise(df)
    summary.to_csv(out / "summary.csv", index=False)
    figures = [plot_curves(summary, out, baseline), *plot_pair_deltas(pairs, out)] if len(summary) else []
    report = write_markdown(df, summary, out, figures, str(sweep_dir or args.csv), baseline)
    print(report.read_text())
    print(f"written: {out / 'summary.csv'}, {report}, " + ", ".join(str(f) for f in figures))


if __name__ == "__main__":
    main()
