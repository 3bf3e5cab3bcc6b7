"""The batch-size study in both regimes, side by side: full fine-tuning (docs/results/full_ft_study/jobs, the rate
per batch size chosen on a dev split) and the committed top-2-layer grid (docs/results/batch_size_study/jobs),
both trained on XQuAD-R and evaluated zero-shot on the full MLQA-R, B ∈ {16, 64, 256} × α ∈ {0, 0.5, 1}.

    python scripts/full_ft_study_report.py --full docs/results/full_ft_study/jobs \
        --top2 docs/results/batch_size_study/jobs --out docs/results/full_ft_study

Writes ``regimes.csv`` (one row per regime × batch × α: seeds, mean and sd of each metric), ``regimes.png`` (the
curves of both regimes in one figure) and ``regimes.md`` (the table; per regime the batch and strategy effects
with pooled and Welch 95 % intervals, Holm's control within each family, and the minimum detectable effect).
Cells still running are listed, never filled in.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from hybrid_retrieval.report.collect import collect_records
from hybrid_retrieval.report.stats import compare, holm, minimum_detectable_effect, pooled_seed_noise

BATCHES, ALPHAS, SEEDS = (16, 64, 256), (0.0, 0.5, 1.0), (0, 1, 2)
METRICS = {"cross/map": "cross mAP", "multi/map": "multi mAP", "mono/map": "mono mAP", "multi/rank_distance": "rank dist."}
REGIMES = ("full fine-tuning", "top 2 layers")


def load(full: Path, top2: Path) -> pd.DataFrame:
    """One row per finished job of either regime, restricted to the shared design."""
    frames = []
    f, _ = collect_records(full)
    frames.append(f[f.status == "ok"].assign(regime=REGIMES[0]))
    t, _ = collect_records(top2)
    t = t[(t.status == "ok") & (t.train == "xquad-r") & (t["eval"] == "mlqa-r") & (t.extra_overrides.fillna("") == "")]
    frames.append(t.assign(regime=REGIMES[1]))
    df = pd.concat(frames, ignore_index=True)
    return df[df.batch_size.isin(BATCHES) & df.alpha.isin(ALPHAS)]


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


def _fmt(v: float, metric: str) -> str:
    if math.isnan(v):
        return "—"
    return f"{v:.1f}" if "rank" in metric else f"{v:.4f}"


def effect_lines(df: pd.DataFrame, regime: str) -> list[str]:
    """Batch effects (64−16, 256−64 per α) and strategy effects (hybrid − α=0 / α=1 per B), per metric; Holm within
    each (kind, metric) family. Only comparisons whose two cells both have 2+ seeds."""
    here = df[df.regime == regime]
    out = []
    for metric, name in METRICS.items():
        if here[metric].notna().sum() < 4:
            continue
        grouped = here.groupby(["alpha", "batch_size"])[metric]
        sd, dof = pooled_seed_noise(here, metric)
        families = {"batch": [], "strategy": []}
        for a in ALPHAS:
            for lo, hi in ((16, 64), (64, 256)):
                families["batch"].append((f"α={a:g}: B {hi} − {lo}", (a, hi), (a, lo)))
        for b in BATCHES:
            for base in (0.0, 1.0):
                families["strategy"].append((f"B={b}: hybrid − α={base:g}", (0.5, b), (base, b)))
        for kind, comps in families.items():
            done = []
            for label, ka, kb in comps:
                if ka in grouped.groups and kb in grouped.groups:
                    va, vb = grouped.get_group(ka).to_numpy(), grouped.get_group(kb).to_numpy()
                    if len(va) >= 2 and len(vb) >= 2 and dof >= 1:
                        done.append(compare(va, vb, sd, dof, label))
            if not done:
                continue
            survive = holm([c.welch_p for c in done])
            mde = minimum_detectable_effect(sd, dof, 3, 3) if dof >= 1 else float("nan")
            out.append(
                f"\n**{regime}, {kind}, {name}** (pooled seed sd {_fmt(sd, metric)}, {dof} dof; minimum detectable effect "
                f"at 3 vs 3 seeds {_fmt(mde, metric)}):\n"
            )
            out.append("| comparison | Δ | 95 % CI, pooled | 95 % CI, Welch | Holm (Welch) |")
            out.append("|---|---|---|---|---|")
            for c, ok in zip(done, survive, strict=True):
                pooled = f"±{_fmt(c.pooled_half, metric)}" + (" clear" if c.pooled_clear else "")
                welch = "—" if math.isnan(c.welch_half) else f"±{_fmt(c.welch_half, metric)} ({c.welch_df:.1f} dof)"
                out.append(f"| {c.label} | {c.diff:+.4f} | {pooled} | {welch} | {'survives' if ok else '—'} |")
            out.append(f"\n{sum(survive)} of {len(done)} survive Holm's control at 5 %.")
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


def markdown(table: pd.DataFrame, df: pd.DataFrame, figure: Path) -> str:
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
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", type=Path, default=Path("docs/results/full_ft_study/jobs"))
    ap.add_argument("--top2", type=Path, default=Path("docs/results/batch_size_study/jobs"))
    ap.add_argument("--out", type=Path, default=Path("docs/results/full_ft_study"))
    args = ap.parse_args(argv)
    df = load(args.full, args.top2)
    table = cells(df)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "regimes.csv", index=False, float_format="%.6g")
    figure = plot(table, args.out)
    (args.out / "regimes.md").write_text(markdown(table, df, figure), encoding="utf-8")
    print((args.out / "regimes.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
