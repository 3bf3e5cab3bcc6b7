"""Statistics of a sweep's cells: means and t intervals over seeds, pooled seed noise, and the per-comparison
(Welch) intervals with multiplicity control used by the report. Pure pandas / math: no plotting, no markdown."""

from __future__ import annotations

import math

import pandas as pd

from hybrid_retrieval.report.collect import METRICS

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
