"""report.stats: Welch intervals, Holm / Benjamini–Hochberg, minimum detectable effect — against scipy references."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from hybrid_retrieval.report.stats import benjamini_hochberg, compare, holm, minimum_detectable_effect, welch


@pytest.mark.parametrize("seed", range(5))
def test_welch_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.5, 0.01, 3), rng.normal(0.51, 0.003 * (seed + 1), 3 + seed % 2)
    diff, se, dof = welch(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert diff / se == pytest.approx(ref.statistic, rel=1e-10)
    assert dof == pytest.approx(ref.df, rel=1e-10)
    c = compare(a, b, pooled_sd=0.01, pooled_dof=20)
    assert c.welch_p == pytest.approx(ref.pvalue, rel=1e-10)
    lo, hi = ref.confidence_interval(0.95)
    assert (c.diff - c.welch_half, c.diff + c.welch_half) == pytest.approx((lo, hi), rel=1e-9)
    # pooled view: t with the pooled dof and sd·√(1/na + 1/nb)
    se_pooled = 0.01 * math.sqrt(1 / len(a) + 1 / len(b))
    assert c.pooled_p == pytest.approx(2 * sps.t.sf(abs(diff) / se_pooled, 20), rel=1e-10)
    assert c.pooled_half == pytest.approx(2.086 * se_pooled)


def test_welch_with_one_seed_has_no_interval():
    c = compare([0.5], [0.4, 0.41], pooled_sd=0.01, pooled_dof=10)
    assert math.isnan(c.welch_half) and math.isnan(c.welch_p) and not c.welch_clear and c.pooled_clear


def test_holm_and_bh_on_a_worked_example():
    # Holm: sorted p 0.001 <= .05/5, 0.01 <= .05/4, 0.02 > .05/3 -> stop: two rejections.
    p = [0.02, 0.001, 0.04, 0.01, 0.5]
    assert holm(p) == [False, True, False, True, False]
    # BH: k=4 (0.04 <= .05·4/5 = 0.04) is the largest k with p_(k) <= .05·k/5 -> the four smallest are rejected.
    assert benjamini_hochberg(p) == [True, True, True, True, False]
    assert holm([float("nan"), 0.01]) == [False, True]  # an untested comparison is never rejected, nor counted
    assert holm([]) == [] and benjamini_hochberg([]) == []


def test_holm_agrees_with_adjusted_p_values_on_random_families():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(0, 0.1, rng.integers(1, 12)).tolist()
        order = np.argsort(p)
        m = len(p)
        adjusted = np.maximum.accumulate([min(1.0, (m - k) * p[i]) for k, i in enumerate(order)])
        want = [False] * m
        for k, i in enumerate(order):
            want[i] = adjusted[k] <= 0.05
        assert holm(p) == want
        # BH via its adjusted p-values (step-up): min over j >= k of m·p_(j)/j
        bh_adj = np.minimum.accumulate([m * p[i] / (k + 1) for k, i in enumerate(order)][::-1])[::-1]
        want = [False] * m
        for k, i in enumerate(order):
            want[i] = bh_adj[k] <= 0.05
        assert benjamini_hochberg(p) == want


def test_minimum_detectable_effect_has_about_the_stated_power():
    sd, dof, n = 0.002, 18, 3
    mde = minimum_detectable_effect(sd, dof, n, n)
    se = sd * math.sqrt(2 / n)
    crit = sps.t.ppf(0.975, dof)
    power = sps.nct.sf(crit, dof, mde / se) + sps.nct.cdf(-crit, dof, mde / se)
    assert 0.78 < power < 0.82  # the (t_{1-a/2} + t_power)·se approximation to the noncentral t
    assert minimum_detectable_effect(sd, dof, n, n, level=0.05 / 6) > mde


def test_effects_report_both_intervals_and_the_family_control():
    from hybrid_retrieval.report import effects

    rows = []
    spread = {(0.0, 16): 0.001, (0.0, 64): 0.02, (0.5, 16): 0.001, (0.5, 64): 0.001, (1.0, 16): 0.001, (1.0, 64): 0.001}
    means = {(0.0, 16): 0.60, (0.0, 64): 0.63, (0.5, 16): 0.61, (0.5, 64): 0.64, (1.0, 16): 0.605, (1.0, 64): 0.62}
    for cell, mu in means.items():
        rows += [
            {"status": "ok", "alpha": cell[0], "batch_size": cell[1], "cross/map": mu + d * spread[cell]} for d in (-1, 0, 1)
        ]
    text = "\n".join(effects(pd.DataFrame(rows), "cross/map"))
    # the noisy α=0 B=64 cell: clear with pooled noise, not with its own (Welch) noise
    row = next(line for line in text.splitlines() if line.startswith("| 0.0 | 16 → 64 |"))
    assert "**clear** |" in row.split("|")[4] + "|" and "**clear**" not in row.split("|")[5]
    assert "Family of 3 batch-size comparisons: clear with pooled noise 3, with Welch 2 (verdicts differ in 1)" in text
    assert "Family of 4 strategy comparisons" in text
    assert "The paper's hybrid − baseline gains on cross/map (+0.003 to +0.005)" in text
