"""The batch-size study's report (docs/results/batch_size_study/README.md): the library's study report plus
this study's own side analyses (twins, α stability, frozen prefix vs full fine-tuning). Same arguments as
``python -m hybrid_retrieval.report --records ...``:

    python scripts/batch_size_study_report.py --records docs/results/batch_size_study/jobs --out ... [--expect ...]
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import pandas as pd

from hybrid_retrieval.report.cli import main as report_main
from hybrid_retrieval.report.collect import extra_overrides_of
from hybrid_retrieval.report.stats import one_job_band, pooled_seed_noise, t_quantile_975
from hybrid_retrieval.report.tables import STRATEGIES, TABLE_METRICS, _digits, _fmt


def alpha_stability(ok: pd.DataFrame, is_main: pd.Series, main_layers: str, out: Path | None = None) -> list[str]:
    """Side study 1: metrics against α at the batch sizes where side α values (e.g. 0.25, 0.75) ran,
    next to the main grid's jobs of the same seeds (like compared with like); with ``out``, also a plot
    of them against α (:func:`plot_alpha_stability`)."""
    layers = ok.train_layers.astype(str) == main_layers
    side = ok[~is_main & layers & (extra_overrides_of(ok) == "")]
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


def twin_deltas(ok: pd.DataFrame, is_main: pd.Series, main_layers: str, out: Path | None = None) -> list[str]:
    """Side jobs that change one thing (an override, or a superseded design) beside their main-grid twin:
    the same direction, α, batch size and seed. Δ = side − twin. One job against one job, so the noise of a
    difference is sd·√2, with sd the direction's pooled seed std of that metric; **bold** when |Δ| exceeds
    the 95 % band t·sd·√2 (a check, not a seed-averaged effect)."""
    layers = ok.train_layers.astype(str) == main_layers
    side = ok[~is_main & layers & (extra_overrides_of(ok) != "")]
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


def full_finetuning_check(ok: pd.DataFrame, is_main: pd.Series, main_layers: str = "2", out: Path | None = None) -> list[str]:
    """Side study 2: does training all layers order the strategies like the frozen prefix does?
    Per batch size: each α's value under full fine-tuning and under the main grid (same seeds), with the
    rank of α among the strategies (1 = best)."""
    regime = extra_overrides_of(ok).map(lambda x: all(o.startswith(FULL_FT_KEYS) for o in x.split()))
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


def _same_cell_main(ok, is_main, train, evald, batch, seeds) -> pd.DataFrame:
    """The main grid's jobs of one direction and batch size, limited to the given seeds."""
    return ok[is_main & (ok.train == train) & (ok["eval"] == evald) & (ok.batch_size == batch) & ok.seed.isin(seeds)]


#: This study's sections of the report, in the order they appear.
SIDE_ANALYSES = (twin_deltas, alpha_stability, full_finetuning_check)


def main(argv: list[str] | None = None) -> None:
    report_main(sys.argv[1:] if argv is None else argv, side_analyses=SIDE_ANALYSES)


if __name__ == "__main__":
    main()
