"""The batch-size study in both regimes, side by side: full fine-tuning (docs/results/full_ft_study/jobs, the rate
per batch size chosen on a dev split) and the committed top-2-layer grid (docs/results/batch_size_study/jobs),
both trained on XQuAD-R and evaluated zero-shot on the full MLQA-R, B ∈ {16, 64, 256} × α ∈ {0, 0.5, 1}.

    python scripts/full_ft_study_report.py --full docs/results/full_ft_study/jobs \
        --top2 docs/results/batch_size_study/jobs --control docs/results/batch_size_study/control \
        --control-rate docs/results/batch_size_study/control_rate --anchor docs/results/batch_size_study/anchor \
        --out docs/results/full_ft_study

Writes ``regimes.csv`` (one row per regime × batch × α: seeds, mean and sd of each metric), ``regimes.png`` (the
curves of both regimes in one figure) and ``regimes.md`` (the table; per regime the batch and strategy effects
with pooled and Welch 95 % intervals, Holm's control within each family, and the minimum detectable effect); with
``--control``, ``control.csv`` (one row per job: pairs and passes over the training items) and the equal-pairs
control's section of ``regimes.md``; with ``--control-rate`` as well, ``control_rate.csv`` and the control's rate
probe (B=256 × 256 at a quarter of the rate); with ``--anchor``, grid jobs rerun at the control's commit beside their
records; ``pair_deltas.csv`` and ``pair_deltas/{full_ft,top2}/*.png`` (cross-lingual mAP per language pair,
B=256 − B=16, per regime and α; summarised in ``regimes.md``). Cells still running are listed, never filled in.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from hybrid_retrieval.report.collect import collect_records, read_json
from hybrid_retrieval.report.markdown import PAPER_STRATEGY_GAIN, detectability
from hybrid_retrieval.report.plots import plot_pair_deltas
from hybrid_retrieval.report.stats import compare, holm, minimum_detectable_effect, pooled_seed_noise

BATCHES, ALPHAS, SEEDS = (16, 64, 256), (0.0, 0.5, 1.0), (0, 1, 2)
METRICS = {"cross/map": "cross mAP", "multi/map": "multi mAP", "mono/map": "mono mAP", "multi/rank_distance": "rank dist."}
REGIMES = ("full fine-tuning", "top 2 layers")


def _top2_grid(jobs: pd.DataFrame) -> pd.Series:
    """The committed top-2 folder also holds the other direction and the side studies: keep its XQuAD-R → MLQA-R grid."""
    return (
        (jobs.status == "ok") & (jobs.train == "xquad-r") & (jobs["eval"] == "mlqa-r") & (jobs.extra_overrides.fillna("") == "")
    )


def load(full: Path, top2: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per finished job of either regime, one row per job × language pair), restricted to the shared design."""
    frames, pair_frames = [], []
    for regime, folder in zip(REGIMES, (full, top2), strict=True):
        jobs, pairs = collect_records(folder)
        keep = _top2_grid(jobs) if regime == REGIMES[1] else jobs.status == "ok"
        jobs = jobs[keep & jobs.batch_size.isin(BATCHES) & jobs.alpha.isin(ALPHAS)]
        frames.append(jobs.assign(regime=regime))
        pair_frames.append(pairs[pairs.job.isin(jobs.job)].assign(regime=regime))
    return pd.concat(frames, ignore_index=True), pd.concat(pair_frames, ignore_index=True)


def cells(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for regime in REGIMES:
        for b in BATCHES:
            for a in ALPHAS:
                sub = df[(df.regime == regime) & (df.batch_size == b) & (df.alpha == a)]
                if sub.lr.nunique() > 1:  # a cell is one design point: mixing rates (dev records?) is an error
                    raise SystemExit(f"{regime} B={b} α={a:g}: records at several learning rates {sorted(sub.lr.unique())}")
                row = {"regime": regime, "batch_size": b, "alpha": a, "seeds": len(sub)}
                row["lr"] = float(sub.lr.iloc[0]) if len(sub) else float("nan")
                for m in METRICS:
                    row[f"{m} mean"] = float(sub[m].mean()) if len(sub) else float("nan")
                    row[f"{m} sd"] = float(sub[m].std(ddof=1)) if len(sub) > 1 else float("nan")
                rows.append(row)
    return pd.DataFrame(rows)


def _fmt(v: float, metric: str, sign: str = "") -> str:
    if math.isnan(v):
        return "—"
    return f"{v:{sign}.1f}" if "rank" in metric else f"{v:{sign}.4f}"


def _family(title: str, sd: float, dof: int, metric: str, done: list, gain: tuple[float, float] | None = None) -> list[str]:
    """One family's table: Δ, pooled and Welch 95 % intervals, Holm's verdict on the Welch p-values, and its MDE;
    with ``gain`` (a published effect range on this metric), whether that range is detectable at this power."""
    survive = holm([c.welch_p for c in done])
    mde = minimum_detectable_effect(sd, dof, 3, 3) if dof >= 1 else float("nan")
    out = [
        f"\n**{title}** (pooled seed sd {_fmt(sd, metric)}, {dof} dof; minimum detectable effect at 3 vs 3 seeds "
        f"{_fmt(mde, metric)}):\n",
        "| comparison | Δ | 95 % CI, pooled | 95 % CI, Welch | Holm (Welch) |",
        "|---|---|---|---|---|",
    ]
    for c, ok in zip(done, survive, strict=True):
        pooled = f"±{_fmt(c.pooled_half, metric)}" + (" clear" if c.pooled_clear else "")
        welch = "—" if math.isnan(c.welch_half) else f"±{_fmt(c.welch_half, metric)} ({c.welch_df:.1f} dof)"
        out.append(f"| {c.label} | {_fmt(c.diff, metric, '+')} | {pooled} | {welch} | {'survives' if ok else '—'} |")
    out.append(f"\n{sum(survive)} of {len(done)} survive Holm's control at 5 %.")
    if gain and dof >= 1:
        mde_holm = minimum_detectable_effect(sd, dof, 3, 3, level=0.05 / len(done))
        out.append(
            f"The paper's hybrid − baseline gains (+{gain[0]:.3f} to +{gain[1]:.3f}) against this family's minimum "
            f"detectable effect: {detectability(gain, mde)} for one comparison, {detectability(gain, mde_holm)} after Holm."
        )
    return out


def _cell_comparisons(noise: pd.DataFrame, metric: str, wanted: list[tuple[str, tuple, tuple]]) -> tuple[list, float, int]:
    """(comparisons, pooled sd, its dof): for each (label, key a, key b) of ``wanted`` whose two (α, batch_size) cells
    both have 2+ seeds, a − b with Welch from the two cells' own seeds beside the noise pooled over all of
    ``noise``'s (α, batch_size) cells."""
    sd, dof = pooled_seed_noise(noise, metric)
    seeds = {key: g.to_numpy() for key, g in noise.groupby(["alpha", "batch_size"])[metric]}
    done = [
        compare(seeds[ka], seeds[kb], sd, dof, label)
        for label, ka, kb in wanted
        if dof >= 1 and len(seeds.get(ka, ())) >= 2 and len(seeds.get(kb, ())) >= 2
    ]
    return done, sd, dof


def effect_lines(df: pd.DataFrame, regime: str) -> list[str]:
    """Batch effects (64−16, 256−64 per α) and strategy effects (all three pairs of α per B), per metric; Holm within
    each (kind, metric) family. Only comparisons whose two cells both have 2+ seeds."""
    here = df[df.regime == regime]
    out = []
    for metric, name in METRICS.items():
        if here[metric].notna().sum() < 4:
            continue
        families = {"batch": [], "strategy": []}
        for a in ALPHAS:
            for lo, hi in ((16, 64), (64, 256)):
                families["batch"].append((f"α={a:g}: B {hi} − {lo}", (a, hi), (a, lo)))
        for b in BATCHES:  # all three pairs of strategies: the hybrid against each baseline, and the baselines
            for label, ka, kb in (("hybrid − α=0", 0.5, 0.0), ("hybrid − α=1", 0.5, 1.0), ("α=0 − α=1", 0.0, 1.0)):
                families["strategy"].append((f"B={b}: {label}", (ka, b), (kb, b)))
        for kind, comps in families.items():
            done, sd, dof = _cell_comparisons(here, metric, comps)
            if not done:
                continue
            gain = PAPER_STRATEGY_GAIN.get(metric) if kind == "strategy" else None
            out += _family(f"{regime}, {kind}, {name}", sd, dof, metric, done, gain)
    return out


def plot(table: pd.DataFrame, out: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, metric in zip(axes, ("cross/map", "multi/map", "multi/rank_distance"), strict=True):
        for regime, style in zip(REGIMES, ("-", "--"), strict=True):
            for a, colour in zip(ALPHAS, ("tab:blue", "tab:green", "tab:red"), strict=True):
                sub = table[(table.regime == regime) & (table.alpha == a) & (table.seeds > 0)]
                if len(sub):
                    ax.errorbar(
                        sub.batch_size,
                        sub[f"{metric} mean"],
                        yerr=sub[f"{metric} sd"].fillna(0),
                        fmt="o" + style,
                        color=colour,
                        label=f"{regime}, α={a:g}",
                        capsize=2,
                    )
        ax.set_xscale("log", base=2)
        ax.set_xticks(BATCHES, [str(b) for b in BATCHES])
        ax.set_xlabel("batch size")
        ax.set_title(METRICS[metric] + " (XQuAD-R → MLQA-R)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "regimes.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pair_deltas(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per regime, α and cross-lingual pair X→Y (X≠Y): mAP at B=256 minus B=16, each the mean over its seeds."""
    cross = pairs[pairs.query_lang != pairs.passage_lang]
    mean = cross.groupby(["regime", "alpha", "query_lang", "passage_lang", "batch_size"])["map"].mean().unstack()
    if not {BATCHES[0], BATCHES[-1]} <= set(mean.columns):
        return pd.DataFrame(columns=["regime", "alpha", "query_lang", "passage_lang", "delta"])
    delta = (mean[BATCHES[-1]] - mean[BATCHES[0]]).dropna().rename("delta")
    return delta.reset_index()


def pair_lines(deltas: pd.DataFrame) -> list[str]:
    """How broad the B 16 → 256 cross-lingual gain is: per regime and α, over the language pairs."""
    if deltas.empty:
        return []
    lines = [
        f"\n## Per language pair: cross-lingual mAP, B {BATCHES[-1]} − {BATCHES[0]}\n",
        "Each pair X→Y (X≠Y) as the mean over its seeds at each batch size; heatmaps per regime and α in",
        "`pair_deltas/` (all pairs, monolingual ones included).",
        "",
        "| regime | α | pairs | gained | mean Δ | smallest Δ | largest Δ |",
        "|---|---|---|---|---|---|---|",
    ]
    for (regime, a), grp in deltas.groupby(["regime", "alpha"], sort=False):
        lo, hi = grp.loc[grp.delta.idxmin()], grp.loc[grp.delta.idxmax()]
        lines.append(
            f"| {regime} | {a:g} | {len(grp)} | {int((grp.delta > 0).sum())} | {grp.delta.mean():+.4f} | "
            f"{lo.delta:+.4f} ({lo.query_lang}→{lo.passage_lang}) | {hi.delta:+.4f} ({hi.query_lang}→{hi.passage_lang}) |"
        )
    return lines


def plot_pairs(pairs: pd.DataFrame, out: Path) -> None:
    """The per-pair Δ heatmaps of each regime (hybrid_retrieval.report.plots), B 16 → 256 per α."""
    for regime, sub in pairs.groupby("regime"):
        folder = out / "pair_deltas" / ("full_ft" if regime == REGIMES[0] else "top2")
        folder.mkdir(parents=True, exist_ok=True)
        plot_pair_deltas(sub[sub.batch_size.isin((BATCHES[0], BATCHES[-1]))], folder)


def markdown(table: pd.DataFrame, df: pd.DataFrame, figure: Path, deltas: pd.DataFrame) -> str:
    lines = [
        "# The batch-size study in both regimes (generated by scripts/full_ft_study_report.py)",
        "",
        "Train XQuAD-R, evaluate zero-shot on the full MLQA-R (20,534 candidates), 64 updates per job. Full fine-tuning:",
        "all 12 layers, trained on the 1,061 question ids outside the dev split, the rate per batch size chosen on that",
        "dev split. Top 2 layers: the committed grid (all 1,190 ids, 1e-4·√(B/32) held from B=64). Mean ± sd over seeds.",
        "",
        "| regime | batch | α | lr | seeds | " + " | ".join(METRICS.values()) + " |",
        "|---|---|---|---|---|" + "---|" * len(METRICS),
    ]
    for _, r in table.iterrows():
        vals = " | ".join(
            _fmt(r[f"{m} mean"], m) + ("" if math.isnan(r[f"{m} sd"]) else f" ± {_fmt(r[f'{m} sd'], m)}") for m in METRICS
        )
        lr = "—" if math.isnan(r.lr) else f"{r.lr:.3g}"
        lines.append(f"| {r.regime} | {r.batch_size} | {r.alpha:g} | {lr} | {r.seeds} | {vals} |")
    missing = table[table.seeds < len(SEEDS)]
    lines.append("")
    if len(missing):
        lines.append(
            f"Not finished yet: {len(missing)} of {len(table)} cells have fewer than {len(SEEDS)} seeds ("
            + ", ".join(f"{r.regime} B={r.batch_size} α={r.alpha:g}: {r.seeds}" for _, r in missing.iterrows())
            + ")."
        )
    lines.append(f"\n![both regimes]({figure.name})")
    for regime in REGIMES:
        lines += effect_lines(df, regime)
    lines += pair_lines(deltas)
    return "\n".join(lines) + "\n"


CONTROL_CELLS = ((256, 64), (256, 256), (1024, 64))  # (batch, steps): the grid's two ends and the control between


def _passes(folder: Path, jobs: set[str]) -> dict[str, float]:
    """Passes over the training items per job: the record's ``passes`` (newer records) or pairs / distinct items
    drawn (older records, which did not write it; equal when every item was drawn, as at 16,384+ pairs here)."""
    out = {}
    for f in sorted(folder.glob("*.json")):
        rec = read_json(f)
        if rec.get("job") in jobs:
            samp = rec.get("sampling", {})
            out[rec["job"]] = rec.get("passes") or samp["pairs"] / samp["distinct_items"]
    return out


def load_control(control: Path, top2: Path) -> pd.DataFrame:
    """The equal-pairs control (top 2 layers, B=256 for 256 steps) beside the grid's B=256 and B=1024 at 64 steps,
    XQuAD-R → MLQA-R; one row per job with ``cell`` = "B×steps" and its passes over the training items."""
    t, _ = collect_records(top2)
    t = t[_top2_grid(t)]
    frames = [t[t.batch_size.isin((256, 1024)) & (t.steps == 64)].assign(source=top2)]
    if any(control.glob("*.json")):  # none yet: the table lists the control's cells as unfinished
        c, _ = collect_records(control)
        ok = (c.status == "ok") & (c.train == "xquad-r") & (c["eval"] == "mlqa-r")
        frames.append(c[ok & (c.batch_size == 256) & (c.steps == 256)].assign(source=control))
    df = pd.concat(frames, ignore_index=True)
    df = df[df.alpha.isin(ALPHAS)].copy()
    passes = {}
    for source in (control, top2):
        passes.update(_passes(source, set(df.job[df.source == source])))
    df["passes"] = df.job.map(passes)
    df["cell"] = [f"{b}×{s}" for b, s in zip(df.batch_size, df.steps, strict=True)]
    if df.lr.nunique() > 1:  # the control compares batches at one rate; another rate would be a second variable
        raise SystemExit(f"equal-pairs control: records at several learning rates {sorted(df.lr.unique())}")
    return df


def _cell_row(label: str, alpha: float, sub: pd.DataFrame) -> str:
    """One control-table row: seeds, pairs, passes and mean ± sd per metric of a cell's jobs (dashes when none)."""
    if not len(sub):
        return f"| {label} | {alpha:g} | 0 | — | — | " + " | ".join("—" for _ in METRICS) + " |"
    vals = " | ".join(_fmt(sub[m].mean(), m) + (f" ± {_fmt(sub[m].std(ddof=1), m)}" if len(sub) > 1 else "") for m in METRICS)
    return f"| {label} | {alpha:g} | {len(sub)} | {int(sub.pairs.iloc[0]):,} | {sub.passes.mean():.1f} | {vals} |"


def control_lines(df: pd.DataFrame) -> list[str]:
    """The control's table (mean ± sd per cell, pairs and passes) and its two families of comparisons per metric:
    equal pairs (B=1024×64 − B=256×256: the bigger batch, 4× fewer updates) and equal batch (B=256×256 − B=256×64:
    4× the updates and pairs); Welch from each cell's own seeds, pooled over the control's cells, Holm per family."""
    lines = [
        "\n## Equal-pairs control (top 2 layers)\n",
        "B=256 for 256 steps sees the 65,536 pairs of the grid's B=1024 × 64 steps (same learning rate 1.41e-4, same",
        "schedule shape), so a gain of B=1024 over B=256 × 256 is the batch at equal data, and B=256 × 256 over",
        "B=256 × 64 is more updates and passes at equal batch. Train XQuAD-R (all 1,190 ids), evaluate the full MLQA-R.",
        "",
        "| B × steps | α | seeds | pairs | passes | " + " | ".join(METRICS.values()) + " |",
        "|---|---|---|---|---|" + "---|" * len(METRICS),
    ]
    missing = []
    for b, steps in CONTROL_CELLS:
        for a in ALPHAS:
            sub = df[(df.cell == f"{b}×{steps}") & (df.alpha == a)]
            if len(sub) < len(SEEDS):
                missing.append(f"{b}×{steps} α={a:g}: {len(sub)}")
            lines.append(_cell_row(f"{b} × {steps}", a, sub))
    if missing:
        lines.append(f"\nNot finished yet: {len(missing)} of 9 cells have fewer than {len(SEEDS)} seeds ({', '.join(missing)}).")
    families = {
        "equal pairs (B=1024×64 − B=256×256)": ("1024×64", "256×256"),
        "equal batch (B=256×256 − B=256×64)": ("256×256", "256×64"),
    }
    noise = df.assign(batch_size=df.cell)  # pooled noise per (α, cell), not per (α, batch)
    for metric, name in METRICS.items():
        for family, (hi, lo) in families.items():
            done, sd, dof = _cell_comparisons(noise, metric, [(f"α={a:g}", (a, hi), (a, lo)) for a in ALPHAS])
            if done:
                lines += _family(f"control, {family}, {name}", sd, dof, metric, done)
    return lines


RATE_ALPHAS = (0.5,)  # the rate probe's design: the hybrid only, 3 seeds
RATE_CELL = "256×256 lr/4"


def load_rate(folder: Path, control: pd.DataFrame) -> pd.DataFrame:
    """The rate probe of the control: B=256 for 256 steps at a quarter of the control's rate (one row per job, ``cell``
    = RATE_CELL), so that steps × rate equals the 64-step jobs'. Refuses any other rate: it would be another probe."""
    cols = [*control.columns]
    if not any(folder.glob("*.json")):
        return pd.DataFrame(columns=cols)
    c, _ = collect_records(folder)
    ok = (c.status == "ok") & (c.train == "xquad-r") & (c["eval"] == "mlqa-r") & (c.batch_size == 256) & (c.steps == 256)
    c = c[ok & c.alpha.isin(ALPHAS)].copy()
    want = control.lr.iloc[0] / 4
    if len(c) and not all(math.isclose(lr, want, rel_tol=1e-6) for lr in c.lr):
        raise SystemExit(f"rate probe: records at {sorted(c.lr.unique())}, expected the control's rate / 4 ({want:.4g})")
    c["passes"] = c.job.map(_passes(folder, set(c.job)))
    c["cell"] = RATE_CELL
    return c.assign(source=folder)


def rate_lines(rate: pd.DataFrame, control: pd.DataFrame) -> list[str]:
    """The probe beside the control's B=256×256 (same batches and pairs, 4× the rate) and the grid's B=1024×64
    (same pairs and summed step size steps × rate, 4× the batch): is the control's drop the small batch's
    repetition, or 256 steps moving the weights 4× as far?"""
    lr = control.lr.iloc[0]
    lines = [
        "\n### The rate: B=256 × 256 at a quarter of the rate\n",
        f"B=256 for 256 steps at {lr / 4:.3g} (the control's {lr:.3g} / 4): steps × rate as in the 64-step jobs, so a",
        "gain over B=256 × 256 at the full rate is the rate, and B=1024 × 64 over it is the bigger batch at equal pairs",
        "and equal summed step size. α=0.5 only.",
        "",
        "| B × steps, rate | α | seeds | pairs | passes | " + " | ".join(METRICS.values()) + " |",
        "|---|---|---|---|---|" + "---|" * len(METRICS),
    ]
    df = pd.concat([control, rate], ignore_index=True)
    missing = []
    for cell, label in (
        ("256×256", f"256 × 256, {lr:.3g}"),
        (RATE_CELL, f"256 × 256, {lr / 4:.3g}"),
        ("1024×64", f"1024 × 64, {lr:.3g}"),
    ):
        for a in RATE_ALPHAS:
            sub = df[(df.cell == cell) & (df.alpha == a)]
            if cell == RATE_CELL and len(sub) < len(SEEDS):
                missing.append(f"{len(sub)} of {len(SEEDS)} seeds at α={a:g}")
            lines.append(_cell_row(label, a, sub))
    if missing:
        lines.append(f"\nNot finished yet: the probe has {', '.join(missing)}.")
    comparisons = {  # one family per metric and α: both questions, Holm over the two
        "the rate: 256×256 at lr/4 − at lr": (RATE_CELL, "256×256"),
        "the batch at equal pairs and step size: 1024×64 − 256×256 at lr/4": ("1024×64", RATE_CELL),
    }
    for a in RATE_ALPHAS:
        noise = df[df.cell.isin(("256×256", RATE_CELL, "1024×64")) & (df.alpha == a)].assign(batch_size=lambda d: d.cell)
        for metric, name in METRICS.items():
            done, sd, dof = _cell_comparisons(
                noise, metric, [(label, (a, hi), (a, lo)) for label, (hi, lo) in comparisons.items()]
            )
            if done:
                lines += _family(f"rate probe, α={a:g}, {name}", sd, dof, metric, done)
    return lines


def anchor_lines(anchor: Path, top2: Path) -> list[str]:
    """Grid jobs rerun at the control's commit beside their committed records (matched by job name): the control's
    jobs run at a later commit than the grid's, so this measures what the code in between changes (the same batches?
    how far apart are the metrics, against the cell's seed noise?)."""
    lines = ["\n### Anchor: a grid job rerun at the control's commit\n"]
    grid = {}
    for f in sorted(top2.glob("*.json")):
        rec = read_json(f)
        if rec.get("status") == "ok":
            grid[rec["job"]] = rec
    reruns = [read_json(f) for f in sorted(anchor.glob("*.json"))] if anchor.is_dir() else []
    reruns = [r for r in reruns if r.get("status") == "ok" and r.get("job") in grid]
    if not reruns:
        return [*lines, "Not run yet (`docs/results/batch_size_study/anchor/` has no finished rerun of a grid job)."]
    t, _ = collect_records(top2)
    t = t[_top2_grid(t)]
    lines += [
        "| job | grid commit → rerun commit | same batches | "
        + " | ".join(f"{name} (grid → rerun, Δ)" for name in METRICS.values())
        + " | largest Δ (abs.), every mAP | cross mAP seed sd of the cell |",
        "|---|---|---|" + "---|" * len(METRICS) + "---|---|",
    ]
    for new in reruns:
        old = grid[new["job"]]
        same = old["sampling"].get("batch_settings") == new["sampling"].get("batch_settings") and all(
            old["sampling"].get(k) == new["sampling"].get(k) for k in ("pairs", "refilled_examples", "realised_alpha")
        )
        cols = []
        for m in METRICS:
            a, b = old["metrics"][f"val/{m}"], new["metrics"][f"val/{m}"]
            cols.append(f"{_fmt(a, m)} → {_fmt(b, m)}, {_fmt(b - a, m, '+')}")
        maps = [k for k in old["metrics"] if k.endswith("/map") and k in new["metrics"]]
        worst = max(abs(new["metrics"][k] - old["metrics"][k]) for k in maps)
        cell = t[
            (t.batch_size == old["batch_size"]) & (t.alpha == old["alpha"]) & (t.steps == old["steps"]) & (t.lr == old["lr"])
        ]
        lines.append(
            f"| {new['job']} | {old['commit'][:7]} → {new['commit'][:7]} | {'yes' if same else 'no'} | "
            + " | ".join(cols)
            + f" | {worst:.4f} over {len(maps)} | {_fmt(cell['cross/map'].std(ddof=1), 'cross/map')} ({len(cell)} seeds) |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", type=Path, default=Path("docs/results/full_ft_study/jobs"))
    ap.add_argument("--top2", type=Path, default=Path("docs/results/batch_size_study/jobs"))
    ap.add_argument("--control", type=Path, default=None, help="the equal-pairs control's records (optional)")
    ap.add_argument(
        "--control-rate", type=Path, default=None, help="the control at a quarter of its rate (optional; with --control)"
    )
    ap.add_argument("--anchor", type=Path, default=None, help="grid jobs rerun at the control's commit (optional)")
    ap.add_argument("--out", type=Path, default=Path("docs/results/full_ft_study"))
    args = ap.parse_args(argv)
    if args.control_rate is not None and args.control is None:
        ap.error("--control-rate compares with the control: give --control too")
    df, pairs = load(args.full, args.top2)
    table = cells(df)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "regimes.csv", index=False, float_format="%.6g")
    deltas = pair_deltas(pairs)
    deltas.to_csv(args.out / "pair_deltas.csv", index=False, float_format="%.6g")
    figure = plot(table, args.out)
    plot_pairs(pairs, args.out)
    text = markdown(table, df, figure, deltas)
    if args.control is not None:
        ctl = load_control(args.control, args.top2)
        cols = ["cell", "batch_size", "steps", "alpha", "seed", "pairs", "passes", "lr", *METRICS, "commit", "job"]
        ctl[cols].sort_values(["cell", "alpha", "seed"]).to_csv(args.out / "control.csv", index=False, float_format="%.6g")
        text += "\n".join(control_lines(ctl)) + "\n"
        if args.control_rate is not None:
            rate = load_rate(args.control_rate, ctl)
            rate[cols].sort_values(["alpha", "seed"]).to_csv(args.out / "control_rate.csv", index=False, float_format="%.6g")
            text += "\n".join(rate_lines(rate, ctl)) + "\n"
    if args.anchor is not None:
        text += "\n".join(anchor_lines(args.anchor, args.top2)) + "\n"
    (args.out / "regimes.md").write_text(text, encoding="utf-8")
    print((args.out / "regimes.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
