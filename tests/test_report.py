"""report: collects job directories (ok and failed) into CSV, plots and markdown; reproducible from the CSV."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.figure
import pandas as pd
import pytest

from hybrid_retrieval.report import PANELS, plot_curves
from hybrid_retrieval.report import main as report_main


def fake_job(root, name, batch, alpha, seed, value=None, failed=False):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(
        f"seed: {seed}\ndata:\n  batch_size: {batch}\n  sampler:\n    alpha: {alpha}\n  train:\n    name: mlqa-r\n  eval:\n    name: xquad-r\n"
    )
    if failed:
        (job / "FAILED.json").write_text(json.dumps({"error": "ValueError: batch_size=4096 exceeds every pool"}))
        return
    metrics = {
        "val/mono/map": value + 0.2,
        "val/cross/map": value + 0.1,
        "val/multi/map": value,
        "val/multi/rank_distance": 100 / value,
    }
    (job / "final_metrics.json").write_text(json.dumps({"global_step": 4, "wall_time_s": 1.0, "metrics": metrics}))
    langs = ["en", "de"]
    flat = {f"{x}-{y}/map": value + (0.05 if x == y else 0.0) for x in langs for y in langs}
    (job / "eval").mkdir()
    (job / "eval" / "epoch000.json").write_text(json.dumps({"languages": langs, "metrics": flat}))


def test_report_from_dirs_and_from_csv(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    n = 0
    for batch in (16, 64):
        for alpha in (0.0, 0.5, 1.0):
            for seed in (0, 1):
                fake_job(sweep, str(n), batch, alpha, seed, value=0.3 + 0.001 * batch + 0.1 * alpha + 0.01 * seed)
                n += 1
    fake_job(sweep, str(n), 4096, 0.5, 0, failed=True)
    (sweep / "99" / ".hydra").mkdir(parents=True)  # a job still running: config, no result yet
    (sweep / "99" / ".hydra" / "config.yaml").write_text("seed: 0\ndata:\n  batch_size: 64\n")
    baseline = tmp_path / "summary.json"
    baseline.write_text(
        json.dumps({"macro": {"mono/map": 0.61, "cross/map": 0.52, "multi/map": 0.25, "multi/rank_distance": 999.0}})
    )
    report_main([str(sweep), "--baseline", str(baseline)])
    df = pd.read_csv(sweep / "sweep.csv")
    assert len(df) == 14 and (df.status == "failed").sum() == 1 and (df.status == "incomplete").sum() == 1
    pairs = pd.read_csv(sweep / "pairs.csv")
    assert len(pairs) == 12 * 4 and set(pairs.query_lang) == {"en", "de"}
    one = pairs[(pairs.job == 0) & (pairs.query_lang == "en") & (pairs.passage_lang == "en")]["map"].item()
    assert one == pytest.approx(0.3 + 0.016 + 0.05)
    summary = pd.read_csv(sweep / "summary.csv")
    row = summary[(summary.alpha == 0.5) & (summary.batch_size == 64)].iloc[0]
    assert row["multi/map mean"] == pytest.approx(0.3 + 0.064 + 0.05 + 0.005)
    assert row["multi/map std"] == pytest.approx(pd.Series([0.0, 0.01]).std())
    md = (sweep / "report.md").read_text()
    assert "Failed or incomplete jobs" in md and "exceeds every pool" in md and "1 failed, 1 incomplete" in md
    # Rank distance (in ranks) is printed with one decimal everywhere, the [0, 1] metrics with four.
    assert "| zero-shot (untrained) | – | 1 | 0.6100 | 0.5200 | 0.2500 | 999.0 |" in md
    rd = 100 / (0.3 + 0.016)  # α 0, batch 16, seed 0 (the mean of seeds 0 and 1 is below)
    rd_mean = (rd + 100 / (0.3 + 0.016 + 0.01)) / 2
    assert f"| {rd_mean:.1f} ± " in md and f"{rd_mean:.4f}" not in md
    # Effects: multi/map rises 0.048 from batch 16 to 64 (seed noise std 0.0071, 6 cells x 1 dof, t(6) = 2.447):
    # clear; α 0.5 − 1 is −0.05. 95 % half-width = t · sd · √(1/2 + 1/2).
    half = 2.447 * math.sqrt(0.01**2 / 2)
    assert "6 degrees of freedom, t = 2.447; per-cell std 0.00707–0.00707" in md  # sd of (v, v + 0.01)
    assert f"| 0.0 | 16 → 64 | +0.0480 | [{0.048 - half:+.4f}, {0.048 + half:+.4f}] **clear** |" in md
    assert f"| 64 | hybrid − mono only (α 0.5 − 1) | -0.0500 | [{-0.05 - half:+.4f}, {-0.05 + half:+.4f}] **clear** |" in md
    assert "| 64 | hybrid − cross only (α 0.5 − 0) | +0.0500 | [" in md
    assert (sweep / "batch_size_curves.png").exists() and (sweep / "pair_delta_alpha0.5.png").exists()
    # The committed CSV alone reproduces the same summary numbers.
    out2 = tmp_path / "again"
    report_main(["--csv", str(sweep / "sweep.csv"), "--out", str(out2)])
    pd.testing.assert_frame_equal(pd.read_csv(out2 / "summary.csv"), summary)
    md2 = (out2 / "report.md").read_text()
    assert md2.replace(str(sweep / "sweep.csv"), str(sweep)) == md  # same tables, baseline and effects
    assert (out2 / "pair_delta_alpha0.5.png").exists() and (out2 / "baseline.json").exists()


def test_curves_keep_their_title(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle", lambda self, t, **kw: seen.setdefault("title", t))
    rows = []
    for alpha in (0.0, 0.5):
        for batch in (16, 64):
            row = {"alpha": alpha, "batch_size": batch}
            for metric, _ in PANELS:
                row[f"{metric} mean"], row[f"{metric} ci95"] = 0.5 + alpha, 0.01
            rows.append(row)
    path = plot_curves(pd.DataFrame(rows), tmp_path, err="ci95", title="train a → eval b: mean ± 95 % CI")
    assert path.exists() and seen["title"] == "train a → eval b: mean ± 95 % CI"  # not the last panel's title


def test_study_report_regenerates_the_committed_report_byte_for_byte(tmp_path, monkeypatch):
    """The committed batch-size study is reproducible from its records: report.md and the CSVs, exactly
    (the study README's command; a change to the report code must regenerate them in the same commit)."""
    import filecmp

    from tests.conftest import load_script

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # the report names its sources as given: relative, as in the README's command
    study = "docs/results/batch_size_study"
    out = tmp_path / "again"
    load_script("batch_size_study_report.py").main(
        [
            "--records", f"{study}/jobs", "--out", str(out),
            "--expect", "mlqa-r:xquad-r:16,64,256", "xquad-r:mlqa-r:16,64,256,1024",
            "--baseline", f"{study}/baselines/xquad-r.summary.json", f"{study}/baselines/mlqa-r.summary.json",
            "--side-records", f"{study}/superseded_sqrt_lr",
        ]
    )  # fmt: skip
    assert (out / "report.md").read_text() == (repo / study / "report.md").read_text()
    for name in ("sweep.csv", "pairs.csv", "xquad-r_to_mlqa-r/summary.csv", "mlqa-r_to_xquad-r/summary.csv"):
        assert filecmp.cmp(out / name, repo / study / name, shallow=False), name
