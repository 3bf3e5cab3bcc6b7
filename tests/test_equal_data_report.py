"""scripts/equal_data_study_report.py on synthetic records: arms by (batch, steps, rate), the rate chosen on the dev
records (seeds averaged), the pre-stated primary endpoint (pending until every seed, then Welch and a verdict),
Holm families, the untrained reference row, unfinished cells listed; and the committed report regenerates."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.conftest import REPO, load_script
from tests.test_sweeps import _record

report = load_script("equal_data_study_report.py")


def _job(batch, alpha, seed, lr, cross, steps=None):
    rec = _record("xquad-r", "mlqa-r", batch, alpha, seed, cross=cross, layers=None)
    steps = steps or 16384 // batch
    rec.update(job=f"B{batch}-a{alpha}-s{seed}-lr{lr}-st{steps}", steps=steps, lr=lr, passes=steps * batch / 1061)
    rec["sampling"].update(pairs=steps * batch, distinct_pairs=9000 + batch + seed)
    rec["metrics"]["val/multi/rank_distance"] = 400.0 + seed  # seed noise, so the families exist
    rec["machine"] = {"host_cpu": "x86_64", "cpus": 2, "gpu": None, "torch": "2.13.0+cpu", "python": "3.11.7"}
    rec["resumed_from_step"] = None
    return rec


def _dev(batch, lr, seed, score):
    cross = 0.70 - 0.05 * abs(math.log10(lr / 1e-5))  # dev cross mAP peaks at 1e-5 (multi elsewhere)
    return {"status": "ok", "job": f"dev-B{batch}-lr{lr}-s{seed}", "batch_size": batch, "lr": lr, "seed": seed,
            "validated_on": "xquad-r-dev", "metrics": {"val/multi/map": score, "val/cross/map": cross}}  # fmt: skip


def _write(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    for rec in records:
        (folder / f"{rec['job']}.json").write_text(json.dumps(rec))


def _world(tmp_path, b16_seeds=5, b256_extra=(3, 4), stray=False, complete=False):
    dev = [_dev(16, lr, s, score + 0.01 * s) for lr, score in ((3e-5, 0.60), (1e-4, 0.58), (3e-4, 0.50)) for s in (0, 1)]
    dev += [_dev(16, 1e-5, s, 0.55) for s in (0, 1)]  # 3e-5 won at the bottom edge: its neighbour ran, and lost
    dev += [_dev(64, lr, 0, score) for lr, score in ((3e-5, 0.60), (1e-4, 0.62), (3e-4, 0.61))]
    _write(tmp_path / "dev", dev)
    _write(tmp_path / "grid_dev", [_dev(256, lr, 0, s) for lr, s in ((3e-5, 0.58), (1e-4, 0.61), (3e-4, 0.60))])
    grid = [_job(256, a, s, 1e-4, 0.56 + 0.001 * s) for a in (0.0, 0.5, 1.0) for s in (0, 1, 2)]
    for rec in grid:  # the grid's records predate both fields; their distinct pairs are replayed (replay_sampling.py)
        del rec["resumed_from_step"], rec["sampling"]["distinct_pairs"]
    replayed = {r["job"]: {"replayed": {"distinct_pairs": 14000 + r["seed"]}} for r in grid if r["batch_size"] == 256}
    (tmp_path / "replayed.json").write_text(json.dumps(replayed))
    grid += [_job(b, 0.5, s, 1e-4, 0.52, steps=64) for b in (16, 64) for s in (0, 1, 2)]  # the grid's equal-steps cells
    _write(tmp_path / "grid", grid)
    jobs = [_job(16, 0.5, s, 3e-5, 0.55 + 0.002 * s) for s in range(b16_seeds)]
    jobs[0]["resumed_from_step"] = 500  # stopped and resumed: its wall time is the last segment's
    jobs += [_job(256, 0.5, s, 1e-4, 0.56 + 0.001 * s) for s in b256_extra]
    jobs += [_job(16, a, s, 3e-5, 0.54 + 0.002 * s) for a in (0.0, 1.0) for s in (0, 1, 2)]
    if stray:
        jobs.append(_job(16, 0.5, 9, 1e-3, 0.5))
    if complete:  # the B=64 arm at its dev rate (1e-4) and both matched arms (steps x rate of B=256 x 64 at 1e-4)
        jobs += [_job(64, 0.5, s, 1e-4, 0.557 + 0.001 * s) for s in (0, 1, 2)]
        jobs += [_job(16, 0.5, s, 1e-4 / 16, 0.53 + 0.002 * s) for s in (0, 1, 2)]
        jobs += [_job(64, 0.5, s, 1e-4 / 4, 0.545 + 0.002 * s) for s in (0, 1, 2)]
    _write(tmp_path / "jobs", jobs)
    (tmp_path / "untrained.json").write_text(json.dumps({"mlqa-r": {
        "cross/map": 0.4581, "multi/map": 0.3101, "mono/map": 0.6511, "multi/rank_distance": 1593.3}}))  # fmt: skip


def _run(tmp_path):
    argv = ["--jobs", "jobs", "--dev", "dev", "--grid", "grid", "--grid-dev", "grid_dev", "--untrained", "untrained.json"]
    argv += ["--replayed", "replayed.json"]
    argv = [str(tmp_path / a) if i % 2 else a for i, a in enumerate(argv)] + ["--out", str(tmp_path / "out")]
    assert report.main(argv) == 0
    return (tmp_path / "out" / "report.md").read_text()


def test_primary_endpoint_is_welch_on_the_two_arms_with_its_mde_and_verdict(tmp_path, capsys):
    _world(tmp_path)
    md = _run(tmp_path)
    # the dev choice: seed means 0.605 / 0.585 / 0.505 / 0.555 -> 3e-5 (its edge neighbour 1e-5 ran and lost)
    assert "| B=16 × 1,024 | **3e-05** | 0, 1 | **0.6050** | 0.6000 / 0.6100 |" in md
    # descriptive: the same rule on dev cross mAP picks 1e-5 for B=16 (tried), 3e-5 for B=64 and B=256 (edge winners
    # whose neighbour 1e-5 was not run); the design's rates above do not change
    other = md.split("Descriptive (added 2026-12-07")[1].split("\n")[0]
    assert "B=16 × 1,024: **1e-05** (1e-05: 0.7000, 3e-05: 0.6761, 0.0001: 0.6500, 0.0003: 0.6261)" in other
    assert (
        "B=64 × 256: **3e-05** (3e-05: 0.6761, 0.0001: 0.6500, 0.0003: 0.6261; an edge winner, its neighbour 1e-05 not run)"
        in other
    )
    assert "B=256 × 64: **3e-05**" in other and "Rates: B=16 × 1,024: 3e-05, B=64 × 256: 0.0001" in md
    big = 0.56 + 0.001 * np.arange(5)
    small = 0.55 + 0.002 * np.arange(5)
    t = stats.ttest_ind(big, small, equal_var=False)
    half = stats.t.ppf(0.975, t.df) * (big.mean() - small.mean()) / t.statistic
    primary = md.split("## Primary endpoint")[1].split("##")[0]
    assert f"Δ = **{big.mean() - small.mean():+.4f}** (95 % CI [{big.mean() - small.mean() - half:+.4f}," in primary
    assert f"Welch {t.df:.1f} dof, p = {t.pvalue:.3g}; 5 vs 5 seeds" in primary
    assert "the bigger batch is better at equal data" in primary and "Minimum detectable effect" in primary
    cells = md.split("## Cells")[1]
    assert "| untrained encoder | — | — | — | 0 | — | — | 0.4581 | 0.3101 | 0.6511 | 1593.3 | — | — |" in cells
    # every cell against the untrained encoder, cross and mono: B=16 at α=0.5 is 0.554 / 0.8 on average
    assert f"| {0.554 - 0.4581:+.4f} | {0.8 - 0.6511:+.4f} |" in cells.split("| B=16 × 1,024 | 0.5 |")[1].split("\n")[0]
    assert "| B=16 × 1,024 | 0.5 | 5 of 5 | 3e-05 | 1,024 | 9,018 | 15.44 |" in cells
    assert "Unfinished cells: B=64 × 256 α=0.5 (0 of 3); B=16 × 1,024, matched α=0.5 (0 of 3)" in cells
    cross = md.split("**cross mAP**")[1].split("**multi mAP**")[0]
    assert "(5 of 9 comparisons have 2+ seeds in both cells)" in cross and "survive Holm's control" in cross
    assert "B=16 × 1,024: α=0 − α=1 | +0.0000 |" in cross
    assert "B=256 × 64 − B=16 × 1,024, α=0.5 (primary)" in md.split("**multi mAP**")[1]  # a secondary metric there
    assert (tmp_path / "out" / "pairs_seen.png").stat().st_size > 10_000
    jobs = (tmp_path / "out" / "jobs.csv").read_text().splitlines()
    assert jobs[0].startswith("arm,alpha,seed,batch_size,steps,lr,pairs,distinct_pairs,distinct_pairs_replayed,passes")
    assert len(jobs) == 1 + 5 + 6 + 9 + 2
    # the grid's records lack distinct pairs: their replayed counts fill the B=256 cells, and jobs.csv says which
    assert "| B=256 × 64 | 0 | 3 of 3 | 0.0001 | 64 | 14,001 |" in cells
    assert f"| B=256 × 64 | 0.5 | 5 of 5 | 0.0001 | 64 | {(14000 + 14001 + 14002 + 9259 + 9260) / 5:,.0f} |" in cells
    csv = pd.read_csv(tmp_path / "out" / "jobs.csv")
    assert csv.distinct_pairs_replayed.sum() == 9 and csv[csv.distinct_pairs_replayed].batch_size.eq(256).all()


def test_pending_until_every_planned_seed_and_strays_are_named(tmp_path):
    _world(tmp_path, b16_seeds=3, b256_extra=(3,))
    md = _run(tmp_path)
    primary = md.split("## Primary endpoint")[1].split("##")[0]
    assert "**Pending**: B=256 × 64 has 4 of 5 seeds, B=16 × 1,024 3 of 5." in primary
    assert "Interim (not the endpoint" in primary and "**no difference shown" not in primary.split("Interim")[0]
    _world(tmp_path, stray=True)
    with pytest.raises(SystemExit, match=r"records outside the design .*B16-a0.5-s9-lr0.001"):
        _run(tmp_path)


def test_every_cell_done_gives_all_nine_secondaries_in_one_holm_family(tmp_path):
    """The complete design (B=64 and both matched arms too): nothing is unfinished, every secondary comparison is a
    row of its metric's Holm family with the Welch interval of its own cells, and the figure is drawn."""
    _world(tmp_path, complete=True)
    md = _run(tmp_path)
    assert "Unfinished cells: none." in md and "Waiting for seeds" not in md
    assert "| B=64 × 256 | 0.5 | 3 of 3 | 0.0001 | 256 |" in md
    assert "| B=16 × 1,024, matched | 0.5 | 3 of 3 | 6.25e-06 | 1,024 |" in md
    cross = md.split("**cross mAP**")[1].split("**multi mAP**")[0]
    assert "(9 of 9 comparisons have 2+ seeds in both cells)" in cross and "at 5 % (the whole family)." in cross
    big, m64 = 0.56 + 0.001 * np.array([0, 1, 2, 3, 4]), 0.545 + 0.002 * np.arange(3)
    t = stats.ttest_ind(big, m64, equal_var=False)
    half = stats.t.ppf(0.975, t.df) * (big.mean() - m64.mean()) / t.statistic
    row = f"| matched steps × rate: B=256 × 64 − B=64 × 256 | {big.mean() - m64.mean():+.4f} | ±{half:.4f} ({t.df:.1f} dof) |"
    assert row in cross, cross
    assert (tmp_path / "out" / "pairs_seen.png").stat().st_size > 10_000
    runs = md.split("## Runs (from the records)")[1]
    assert (
        "Commits: abc (31 jobs)." in runs
        and "Machines: x86_64, 2 CPUs, no GPU, torch 2.13.0+cpu, Python 3.11.7 (31 jobs)." in runs
    )
    assert "Wall time of the 21 jobs run in one piece: 10–10 s" in runs
    assert "Left out: 1 resumed job(s)" in runs and "and 9 record(s) older than the `resumed_from_step` field" in runs


def test_exploratory_comparisons_are_their_own_labelled_benjamini_hochberg_family(tmp_path):
    """The comparisons added after the first matched seeds stay out of the pre-registered Holm families: their own
    section, Welch from their own cells, Benjamini–Hochberg over the three (checked against scipy's)."""
    _world(tmp_path, complete=True)
    md = _run(tmp_path)
    holm_part, section = md.split("## Exploratory comparisons (not pre-registered")
    assert "matched rate − dev-chosen rate" not in holm_part  # not in the pre-registered families
    cross = section.split("**cross mAP**")[1].split("**multi mAP**")[0]
    assert "(3 of 3 comparisons have 2+ seeds in both cells)" in cross
    m64, m16 = 0.545 + 0.002 * np.arange(3), 0.53 + 0.002 * np.arange(3)
    b16, b64 = 0.55 + 0.002 * np.arange(5), 0.557 + 0.001 * np.arange(3)
    pairs = [(m64, m16), (m16, b16), (m64, b64)]
    tests = [stats.ttest_ind(a, b, equal_var=False) for a, b in pairs]
    keep = stats.false_discovery_control([t.pvalue for t in tests]) <= 0.05
    labels = ["matched steps × rate: B=64 × 256 − B=16 × 1,024", "B=16 × 1,024: matched rate − dev-chosen rate",
              "B=64 × 256: matched rate − dev-chosen rate"]  # fmt: skip
    for label, (a, b), t, ok in zip(labels, pairs, tests, keep, strict=True):
        half = stats.t.ppf(0.975, t.df) * (a.mean() - b.mean()) / t.statistic
        row = f"| {label} | {a.mean() - b.mean():+.4f} | ±{half:.4f} ({t.df:.1f} dof) | {'survives' if ok else '—'} |"
        assert row in cross, cross
    assert f"{keep.sum()} of 3 survive Benjamini–Hochberg at 5 %" in cross
    assert "**rank dist.**" not in section.split("## Per language pair")[0]  # cross, multi and mono only
    done = set(pd.read_csv(tmp_path / "out" / "pair_deltas.csv").comparison)
    assert set(labels) <= done and len(done) == 13  # 1 primary + 9 secondaries + 3 exploratory


def test_rate_rule_figure_draws_each_rule_through_the_shared_b256_point(tmp_path, monkeypatch):
    """rate_rule.png: per metric, the dev-rate line and the matched line over B 16 / 64 / 256, both ending at the
    B=256 × 64 cell (the matched rule's anchor), with seed-sd bars; checked on the drawn data, not the file."""
    _world(tmp_path, complete=True)
    drawn = []
    real = report.plot_rate_rule

    def spy(table, untrained, out):
        path = real(table, untrained, out)
        drawn.append(path)
        return path

    monkeypatch.setattr(report, "plot_rate_rule", spy)
    captured = {}
    real_errorbar = report.plt.Axes.errorbar

    def errorbar(self, x, y, *args, label=None, **kwargs):
        captured.setdefault((self, label), (list(x), list(y), list(kwargs.get("yerr", []))))
        return real_errorbar(self, x, y, *args, label=label, **kwargs)

    monkeypatch.setattr(report.plt.Axes, "errorbar", errorbar)
    _run(tmp_path)
    assert drawn and drawn[0].stat().st_size > 10_000
    captured = {(ax.get_title(), label): data for (ax, label), data in captured.items()}  # titles are set last
    b256 = np.mean(0.56 + 0.001 * np.arange(5))
    xs, ys, es = captured[("cross mAP, α=0.5, MLQA-R", "steps × rate matched to B=256 × 64")]
    assert xs == [16, 64, 256]
    assert ys == pytest.approx([np.mean(0.53 + 0.002 * np.arange(3)), np.mean(0.545 + 0.002 * np.arange(3)), b256])
    assert es[0] == pytest.approx(0.002)
    xs, ys, _ = captured[("cross mAP, α=0.5, MLQA-R", "each batch at its dev-chosen rate")]
    assert ys == pytest.approx([np.mean(0.55 + 0.002 * np.arange(5)), np.mean(0.557 + 0.001 * np.arange(3)), b256])
    assert {title for title, _ in captured if "pairs" not in title} >= {
        "cross mAP, α=0.5, MLQA-R", "multi mAP, α=0.5, MLQA-R", "mono mAP, α=0.5, MLQA-R"}  # fmt: skip


def test_per_pair_deltas_are_seed_means_of_each_finished_comparison(tmp_path):
    """Per language pair, first cell minus second, each the mean over its seeds; a comparison with a cell still
    short of its planned seeds is left out, and the primary one is drawn as a heatmap."""
    _world(tmp_path)  # no B=64 arm and no matched arm yet
    path = tmp_path / "jobs" / "B16-a0.5-s0-lr3e-05-st1024.json"
    rec = json.loads(path.read_text())
    rec["pairs"]["en-de"]["map"] = 0.70  # one seed of one pair: the B=16 cell's en→de mean rises to 0.584
    path.write_text(json.dumps(rec))
    md = _run(tmp_path)
    section = md.split("## Per language pair")[1].split("## Runs")[0]
    big, small = np.mean(0.56 + 0.001 * np.arange(5)), np.mean(0.55 + 0.002 * np.arange(5))  # 0.562, 0.554
    en_de = big - np.mean([0.70, *(0.55 + 0.002 * np.arange(1, 5))])  # -0.022
    de_en = big - small  # +0.008
    row = (
        f"| B=256 × 64 − B=16 × 1,024, α=0.5 (primary) | 1 of 2 | {(en_de + de_en) / 2:+.4f} | {en_de:+.4f} (en→de) | "
        f"{de_en:+.4f} (de→en) | 2 of 2 |"
    )
    assert row in section, section
    csv = pd.read_csv(tmp_path / "out" / "pair_deltas.csv")
    done = set(csv.comparison)
    assert "B=256 × 64 − B=16 × 1,024, α=0.5 (primary)" in done and "B=16 × 1,024: α=0 − α=1" in done
    assert not any("B=64 × 256" in c or "matched" in c for c in done)  # their cells have no seed yet
    assert len(done) == 6 and len(csv) == 6 * 4  # 6 comparisons x (2 cross + 2 mono) pairs
    assert (tmp_path / "out" / "pair_deltas.png").stat().st_size > 10_000


def test_no_rate_is_used_before_the_dev_split_chose_it(tmp_path):
    """B=16's dev grid without its second seeds: the rate is pending, and a job at any rate is outside the design."""
    _world(tmp_path)
    for path in (tmp_path / "dev").glob("dev-B16-*-s1.json"):
        path.unlink()
    rate = report.rates(tmp_path / "dev", tmp_path / "grid_dev")
    assert rate["B=16 × 1,024"] is None and rate["B=64 × 256"] == 1e-4 and rate["B=16 × 1,024, matched"] == 1e-4 / 16
    with pytest.raises(SystemExit, match="records outside the design"):
        _run(tmp_path)


def test_the_committed_report_recomputes_from_the_committed_records(tmp_path, capsys):
    """docs/results/equal_data_study/report.md and its CSVs are exactly what the records give (the README's command)."""
    eq, ft = REPO / "docs/results/equal_data_study", REPO / "docs/results/full_ft_study"
    argv = ["--jobs", str(eq / "jobs"), "--dev", str(eq / "dev"), "--grid", str(ft / "jobs"), "--grid-dev", str(ft / "dev")]
    argv += ["--untrained", str(REPO / "docs/results/batch_size_study/baselines.json"), "--out", str(tmp_path / "again")]
    argv += ["--replayed", str(eq / "replayed_sampling.json")]
    assert report.main(argv) == 0
    for name in ("report.md", "cells.csv", "jobs.csv", "pair_deltas.csv"):
        assert (tmp_path / "again" / name).read_text(encoding="utf-8") == (eq / name).read_text(encoding="utf-8"), name
