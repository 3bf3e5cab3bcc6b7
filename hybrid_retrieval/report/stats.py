"""Statistics of a sweep's cells: means and t intervals over seeds, pooled seed noise, and the per-comparison
(Welch) intervals with multiplicity control used by the report. Pure pandas / math: no plotting, no markdown."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

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


@dataclass(frozen=True)
class Comparison:
    """One difference of two cell means, a − b, with the pooled-noise and the per-comparison (Welch) view.

    Pooled: sd from all cells of the family's direction (assumes one noise level), Student t with the pooled
    degrees of freedom (the tabulated, conservative quantile of :func:`t_quantile_975`). Welch: each cell's own
    seeds, the Welch–Satterthwaite degrees of freedom (exact t quantile): right when the noise differs between
    cells, and wide with three seeds a cell."""

    label: str
    diff: float
    pooled_half: float
    pooled_p: float
    welch_half: float  # nan when a cell has fewer than two seeds
    welch_df: float
    welch_p: float

    @property
    def pooled_clear(self) -> bool:
        return abs(self.diff) > self.pooled_half

    @property
    def welch_clear(self) -> bool:
        return not math.isnan(self.welch_half) and abs(self.diff) > self.welch_half


def welch(a, b) -> tuple[float, float, float]:
    """(mean(a) − mean(b), its standard error from each sample's own variance, Welch–Satterthwaite dof);
    standard error and dof are nan when a sample has fewer than two values."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, float("nan"), float("nan")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, 0.0, float(len(a) + len(b) - 2)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return diff, se, float(dof)


def compare(a, b, pooled_sd: float, pooled_dof: int, label: str = "") -> Comparison:
    """Both views of the difference a − b of two cells' seed values (see :class:`Comparison`)."""

    diff, se, dof = welch(a, b)
    pooled_se = pooled_sd * math.sqrt(1.0 / len(a) + 1.0 / len(b))
    pooled_p = float(2 * sps.t.sf(abs(diff) / pooled_se, pooled_dof)) if pooled_se > 0 else float(diff == 0)
    if math.isnan(se):
        w_half, w_p = float("nan"), float("nan")
    elif se == 0:
        w_half, w_p = 0.0, float(diff == 0)
    else:
        w_half, w_p = float(sps.t.ppf(0.975, dof) * se), float(2 * sps.t.sf(abs(diff) / se, dof))
    return Comparison(label, diff, t_quantile_975(pooled_dof) * pooled_se, pooled_p, w_half, dof, w_p)


def holm(pvalues: list[float], level: float = 0.05) -> list[bool]:
    """Holm's step-down control of the family-wise error at ``level``: which hypotheses are rejected (nan p:
    not tested, never rejected). Uniformly more powerful than Bonferroni, valid under any dependence."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m, reject = len(tested), [False] * len(pvalues)
    for k, (p, i) in enumerate(tested):
        if p > level / (m - k):
            break
        reject[i] = True
    return reject


def benjamini_hochberg(pvalues: list[float], level: float = 0.05) -> list[bool]:
    """Benjamini–Hochberg control of the false discovery rate at ``level`` (nan p: not tested)."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m, reject = len(tested), [False] * len(pvalues)
    last = max((k for k, (p, _) in enumerate(tested, 1) if p <= level * k / m), default=0)
    for _p, i in tested[:last]:
        reject[i] = True
    return reject


def minimum_detectable_effect(sd: float, dof: int, n_a: int, n_b: int, level: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided t test at ``level`` detects with probability ``power``, for
    cells of n_a and n_b seeds and seed noise sd with ``dof`` degrees of freedom: (t_{1−level/2} + t_power)·se."""

    se = sd * math.sqrt(1.0 / n_a + 1.0 / n_b)
    return float((sps.t.ppf(1 - level / 2, dof) + sps.t.ppf(power, dof)) * se)
