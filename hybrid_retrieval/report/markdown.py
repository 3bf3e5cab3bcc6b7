"""Markdown reports: the sweep report (``write_markdown``) and the study report from job records
(``study_report``), with the effects against seed noise. Study-specific analyses plug in as ``side_analyses``."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from hybrid_retrieval.report.collect import METRICS, collect_records, extra_overrides_of
from hybrid_retrieval.report.plots import RECALL_PANELS, plot_curves, plot_pair_deltas
from hybrid_retrieval.report.stats import (
    Comparison,
    _pool,
    benjamini_hochberg,
    compare,
    holm,
    minimum_detectable_effect,
    summarise,
    t_quantile_975,
)
from hybrid_retrieval.report.tables import (
    TABLE_METRICS,
    _ci,
    _digits,
    _excluded_summary,
    _fmt,
    _mean_pm,
    strategy_table,
)

#: A study's own section of the report: (finished jobs, main-grid mask, main layer count, output folder) -> lines.
SideAnalysis = Callable[[pd.DataFrame, pd.Series, str, Path], list[str]]


#: The paper's (arXiv 2408.10536) hybrid-minus-baseline gains in cross-lingual mAP: what a strategy family would
#: need to detect to speak to the paper's claim.
PAPER_STRATEGY_GAIN = {"cross/map": (0.003, 0.005)}


def effects(df: pd.DataFrame, metric: str = "cross/map") -> list[str]:
    """Markdown lines: batch-size and sampling effects, each with two 95 % confidence intervals, and the
    multiplicity control of each family of comparisons.

    Pooled: the pooled standard deviation over seeds of all (α, batch) cells (weighted by their degrees of
    freedom; assumes the cells share one noise level); a difference of two cell means with n_a and n_b seeds
    has standard error sd·√(1/n_a + 1/n_b) and Student t with the pooled degrees of freedom. Welch: the two
    cells' own seeds only (no shared-noise assumption). 'clear' = the interval excludes 0. Families: the
    batch-size steps, and hybrid vs each baseline; Holm's step-down (family-wise 5 %) and Benjamini–Hochberg
    (false discovery rate 5 %) on the Welch p-values of each family; and the family's minimum detectable effect.
    """
    ok = df[(df.status == "ok") & df[metric].notna()]
    if ok.empty:
        return []
    cells = ok.groupby(["alpha", "batch_size"])[metric]
    var, n, values = cells.var(), cells.count(), cells.apply(list)
    sd, dof = _pool(var, n)
    if dof == 0:
        return [f"\nOne seed per cell: no noise estimate for {metric}."]
    t = t_quantile_975(dof)
    digits = _digits(metric)
    cell_sd = var[n > 1] ** 0.5
    lines = [
        f"\n### Effects on {metric}: differences with 95 % confidence intervals\n",
        f"Seed noise: pooled std over seeds {sd:.{digits + 1}f} ({int((n > 1).sum())} cells with ≥ 2 seeds, "
        f"{dof} degrees of freedom, t = {t:.3f}; per-cell std {cell_sd.min():.{digits + 1}f}–"
        f"{cell_sd.max():.{digits + 1}f}: pooling assumes one noise level for every cell; the Welch interval uses "
        "the two cells' own seeds instead). 'clear' = the interval excludes 0; Holm ✓ = still clear after Holm's "
        "control of the family-wise error (5 %, Welch p-values).",
    ]
    batch_family = []
    for alpha in sorted(ok.alpha.unique()):
        bs = sorted(b for a, b in values.index if a == alpha)
        steps = list(itertools.pairwise(bs))
        if len(bs) > 2:
            steps.append((bs[0], bs[-1]))
        for lo, hi in steps:
            c = compare(values[(alpha, hi)], values[(alpha, lo)], sd, dof, f"| {alpha} | {int(lo)} → {int(hi)} |")
            batch_family.append(c)
    strategy_family = []
    alphas = sorted(ok.alpha.unique())
    if 0.5 in alphas and len(alphas) > 1:
        for b in sorted(ok.batch_size.unique()):
            for other, name in ((1.0, "hybrid − mono only (α 0.5 − 1)"), (0.0, "hybrid − cross only (α 0.5 − 0)")):
                if (0.5, b) in values.index and (other, b) in values.index:
                    strategy_family.append(compare(values[(0.5, b)], values[(other, b)], sd, dof, f"| {int(b)} | {name} |"))
    n_typical = int(n[n > 1].median())
    for family, header, what in (
        (batch_family, "| α | batch change |", "batch-size comparisons"),
        (strategy_family, "| batch | comparison |", "strategy comparisons"),
    ):
        if not family:
            continue
        holm_ok = holm([c.welch_p for c in family])
        bh_ok = benjamini_hochberg([c.welch_p for c in family])
        lines += ["", header + " Δ | 95 % CI, pooled noise | 95 % CI, Welch (dof) | Holm |", "|---|---|---|---|---|---|"]
        for c, kept in zip(family, holm_ok, strict=True):
            lines.append(f"{c.label} {c.diff:+.{digits}f} | {_interval(c.diff, c.pooled_half, c.pooled_clear, digits)} | "
                         f"{_welch_cell(c, digits)} | {'✓' if kept else '–'} |")  # fmt: skip
        m = len(family)
        pooled_n = sum(c.pooled_clear for c in family)
        welch_n = sum(c.welch_clear for c in family)
        differ = sum(c.pooled_clear != c.welch_clear for c in family)
        mde = minimum_detectable_effect(sd, dof, n_typical, n_typical)
        mde_holm = minimum_detectable_effect(sd, dof, n_typical, n_typical, level=0.05 / m)
        lines.append(
            f"\nFamily of {m} {what}: clear with pooled noise {pooled_n}, with Welch {welch_n} (verdicts differ in "
            f"{differ}); after Holm (family-wise 5 %) {sum(holm_ok)}, after Benjamini–Hochberg (FDR 5 %) {sum(bh_ok)}. "
            f"Minimum detectable effect (two-sided 5 %, 80 % power, {n_typical} vs {n_typical} seeds, pooled noise): "
            f"{mde:.{digits}f}; at Holm's strictest step (5 %/{m}) {mde_holm:.{digits}f}."
        )
        gain = PAPER_STRATEGY_GAIN.get(metric)
        if what.startswith("strategy") and gain:
            lines.append(
                f"The paper's hybrid − baseline gains on {metric} (+{gain[0]:.3f} to +{gain[1]:.3f}) against that minimum "
                f"detectable effect: {detectability(gain, mde)} for one comparison, {detectability(gain, mde_holm)} after Holm."
            )
    return lines


def detectability(gain: tuple[float, float], mde: float) -> str:
    """How a published effect range compares with a minimum detectable effect, in the words the reports use."""
    if gain[1] < mde:
        return "not detectable at this power"
    return "detectable only at the top of that range" if gain[0] < mde else "detectable"


def _interval(diff: float, half: float, clear: bool, digits: int) -> str:
    return f"[{diff - half:+.{digits}f}, {diff + half:+.{digits}f}]" + (" **clear**" if clear else "")


def _welch_cell(c: Comparison, digits: int) -> str:
    if math.isnan(c.welch_half):
        return "– (a cell has one seed)"
    return _interval(c.diff, c.welch_half, c.welch_clear, digits) + f" ({c.welch_df:.1f})"


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
    "mono_languages", "cross_pairs_used", "cross_pairs", "cross_pairs_feasible", "excluded", *METRICS, "wall_time_s", "commit",
]  # fmt: skip


def main_grid(ok: pd.DataFrame, alphas: tuple[float, ...] = (0.0, 0.5, 1.0), main_layers: str = "2") -> pd.Series:
    """Which rows (of finished jobs) are cells of the study's main grid: the main layer count, a main α
    and no override beyond the grid's (side studies, learning-rate checks, superseded jobs are not)."""
    return (ok.train_layers.astype(str) == main_layers) & ok.alpha.isin(alphas) & (extra_overrides_of(ok) == "")


def study_report(
    records: Path,
    out: Path,
    expect: dict[tuple[str, str], list[int]] | None = None,
    alphas: tuple[float, ...] = (0.0, 0.5, 1.0),
    seeds: tuple[int, ...] = (0, 1, 2),
    main_layers: str = "2",
    baselines: dict[str, dict] | None = None,
    side_records: list[Path] | None = None,
    side_analyses: tuple[SideAnalysis, ...] = (),
) -> Path:
    """The batch-size study from its job records: per direction, mean ± 95 % CI over seeds per α × batch,
    effects against seed noise, per-pair deltas, what the sampler really used, side studies, missing jobs.

    ``side_records``: more record folders whose jobs are side rows whatever their overrides (e.g. jobs a
    design change superseded: their keys are the grid's, so they cannot stay in ``records``); each row
    is labelled with its folder's name. ``side_analyses``: a study's own sections on its side rows, each
    ``f(ok, is_main, main_layers, out) -> markdown lines`` (the batch-size study's live in its script)."""
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
                cross_union=("cross_pairs", lambda s: len({p for x in s if isinstance(x, str) for p in x.split()})),
                cross_feasible=("cross_pairs_feasible", "max"),
                excluded=("excluded", _excluded_summary),
            )
            lines.append("\nWhat the sampler really used (over all jobs of a batch size):\n")
            lines.append(
                "| batch | mono languages drawn | cross pairs drawn, all jobs (most in one job) | cross pairs feasible "
                "| excluded settings |"
            )
            lines.append("|---|---|---|---|---|")
            for b, r in mix.iterrows():
                lines.append(
                    f"| {int(b)} | {r.mono} | {int(r.cross_union)} ({int(r.cross_used)}) | {int(r.cross_feasible)} | {r.excluded} |"
                )
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
        for analysis in side_analyses:
            lines += analysis(ok, is_main, main_layers, out)
    bad = df[df.status != "ok"]
    if len(bad):
        lines.append("\n## Failed jobs\n")
        lines += [f"- {r.job}: {r.get('error', '')}" for _, r in bad.iterrows()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
