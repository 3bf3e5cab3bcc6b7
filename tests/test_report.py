"""report: collects job directories (ok and failed) into CSV, plots and markdown; reproducible from the CSV."""

from __future__ import annotations

import json

import pandas as pd
import pytest

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
    report_main([str(sweep)])
    df = pd.read_csv(sweep / "sweep.csv")
    assert len(df) == 13 and (df.status == "failed").sum() == 1
    summary = pd.read_csv(sweep / "summary.csv")
    row = summary[(summary.alpha == 0.5) & (summary.batch_size == 64)].iloc[0]
    assert row["multi/map mean"] == pytest.approx(0.3 + 0.064 + 0.05 + 0.005)
    assert row["multi/map std"] == pytest.approx(pd.Series([0.0, 0.01]).std())
    md = (sweep / "report.md").read_text()
    assert "Failed jobs" in md and "exceeds every pool" in md and "1 failed" in md
    assert (sweep / "batch_size_curves.png").exists() and (sweep / "pair_delta_alpha0.5.png").exists()
    # The committed CSV alone reproduces the same summary numbers.
    out2 = tmp_path / "again"
    report_main(["--csv", str(sweep / "sweep.csv"), "--out", str(out2)])
    pd.testing.assert_frame_equal(pd.read_csv(out2 / "summary.csv"), summary)
