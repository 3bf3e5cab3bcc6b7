"""Resumable-sweep bookkeeping (job keys, records, skip rules) and the study report built from records."""

from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest
from omegaconf import OmegaConf

from hybrid_retrieval.report import collect_records, summarise
from hybrid_retrieval.report import study_report as library_study_report
from hybrid_retrieval.runs import sweeps
from tests.conftest import load_script

#: The batch-size study's own report sections live in its script (scripts/batch_size_study_report.py).
STUDY_SCRIPT = load_script("batch_size_study_report.py")


def study_report(*args, **kw):
    return library_study_report(*args, side_analyses=STUDY_SCRIPT.SIDE_ANALYSES, **kw)


def test_job_key_ignores_where_to_run_and_order():
    a = sweeps.job_key(["+experiment=mlqa_r", "seed=0", "data.batch_size=16", "logger=csv", "hydra.sweep.dir=/x"])
    b = sweeps.job_key(["data.batch_size=16", "+experiment=mlqa_r", "seed=0", "callbacks.kill.step=3", "results_dir=/y"])
    assert a == b == "data.batch_size=16,experiment=mlqa_r,seed=0"
    assert sweeps.job_key(["data.batch_size=16", "seed=1"]) != sweeps.job_key(["data.batch_size=16", "seed=0"])
    long1 = sweeps.job_key([f"data.train.root=/very/long/path/{'x' * 200}/a", "seed=0"])
    long2 = sweeps.job_key([f"data.train.root=/very/long/path/{'x' * 200}/b", "seed=0"])
    assert long1 != long2 and len(long1) <= 140 and "/" not in long1


def test_finished_record_rules(tmp_path):
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")}, "results_dir": str(tmp_path / "res")})
    assert sweeps.finished_record(cfg, "k") is None
    sweeps.write_json_atomic(tmp_path / "res" / "k.json", {"status": "failed", "job": "k"})
    assert sweeps.finished_record(cfg, "k")["status"] == "failed"  # skipped by default
    cfg.rerun_failed = True
    assert sweeps.finished_record(cfg, "k") is None  # rerun when asked
    sweeps.write_json_atomic(tmp_path / "run" / "result.json", {"status": "ok", "job": "other"})
    assert sweeps.finished_record(cfg, "k") is None  # a run dir of another job does not count
    sweeps.write_json_atomic(tmp_path / "run" / "result.json", {"status": "ok", "job": "k"})
    assert sweeps.finished_record(cfg, "k")["status"] == "ok"
    assert not list((tmp_path / "res").glob(".*tmp*"))  # atomic writes leave no temporary file


def test_record_value_and_progress_count_skipped_jobs(tmp_path, capsys):
    old = {"status": "ok", "metrics": {"val/multi/map": 0.5}}  # written before the *_best metrics existed
    assert sweeps.record_value(old, "val/multi/map_best") == 0.5
    assert sweeps.record_value({"metrics": {"val/multi/map_best": 0.7, "val/multi/map": 0.6}}, "val/multi/map_best") == 0.7
    assert math.isnan(sweeps.record_value({"metrics": {}}, "val/multi/map_best"))

    class Return:  # what Hydra hands a callback: a status and the task's return value
        def __init__(self, status, value):
            self.status, self._return_value = type("S", (), {"name": status})(), value

    progress = sweeps.SweepProgress()
    progress.multirun, progress.total = True, 4
    jobs = [
        ("ok\tjobs/a.json\n", "COMPLETED", float("nan")),
        ("failed\tjobs/b.json\n", "COMPLETED", float("nan")),
        (None, "COMPLETED", 0.4),
        (None, "FAILED", None),
    ]
    for i, (skip, status, value) in enumerate(jobs):
        out = tmp_path / str(i)
        out.mkdir()
        if skip is not None:
            (out / "SKIPPED").write_text(skip)
        cfg = OmegaConf.create({"paths": {"output_dir": str(out)}, "hydra": {"sweep": {"dir": str(tmp_path)}}})
        # Every job its own copy of the callback, as under a parallel launcher (joblib, submitit): the counts come
        # from the sweep directory's ledger, not from the object.
        copy.deepcopy(progress).on_job_end(cfg, Return(status, value))
    # A skipped ok record is not a failure even when its return value is NaN; a skipped failed record is.
    assert "[sweep] 4/4 jobs done (2 failed, 2 skipped)" in capsys.readouterr().out.splitlines()[-1]


def _record(train, evald, batch, alpha, seed, cross, status="ok", layers=2, extra=()):
    overrides = [f"seed={seed}", *extra]
    rec = {"status": status, "job": f"{train}-{batch}-{alpha}-{seed}-{layers}", "overrides": overrides}
    if status != "ok":
        return {**rec, "error": "ValueError: boom"}
    langs = ["en", "de"]
    return {
        **rec,
        "train": train,
        "eval": evald,
        "batch_size": batch,
        "alpha": alpha,
        "seed": seed,
        "steps": 64,
        "lr": 3e-5 * math.sqrt(batch / 32),
        "train_layers": layers,
        "eval_questions": 100,
        "eval_candidates": 90,
        "wall_time_s": 10.0,
        "commit": "abc",
        "sampling": {
            "pairs": 64 * batch,
            "realised_alpha": alpha,
            "alpha_schedule": "stratified",
            "distinct_negatives_per_query": batch - 1.5,
            "dup_pairs_per_batch": 0.5,
            "batch_settings": {"en-en": 10, "de-de": 10, "en-de": 44},
            "feasible_cross": ["en-de", "de-en"],
            "excluded": [],
        },
        "metrics": {
            "val/mono/map": 0.8,
            "val/cross/map": cross,
            "val/multi/map": 0.4,
            "val/multi/rank_distance": 100.0,
            "val/cross/r@1": 0.5,
        },
        "pairs": {f"{x}-{y}": {"map": cross, "r@1": 0.5, "r@10": 0.9} for x in langs for y in langs},
    }


#: The overrides of a side-study-2 job as the study script writes them (the 12-layer regime, nothing else).
FULL_FT = ("model.encoder.train_layers=null", "model.encoder.prefix_cache=false", "budget.base_lr=3e-5")


def test_study_report_from_records(tmp_path):
    res = tmp_path / "jobs"
    res.mkdir()
    values = {0: 0.60, 1: 0.62, 2: 0.64}
    n = 0
    for seed, v in values.items():
        for batch in (16, 64):
            for alpha in (0.0, 0.5, 1.0):
                if (batch, alpha, seed) == (64, 1.0, 2):
                    continue  # a missing job
                rec = _record("xquad-r", "mlqa-r", batch, alpha, seed, v + (0.01 if batch == 64 else 0.0))
                (res / f"{n}.json").write_text(json.dumps(rec))
                n += 1
    (res / "side.json").write_text(json.dumps(_record("xquad-r", "mlqa-r", 64, 0.25, 0, 0.7)))
    (res / "full.json").write_text(json.dumps(_record("xquad-r", "mlqa-r", 16, 0.5, 0, 0.7, layers=None, extra=FULL_FT)))
    lr_check = _record("xquad-r", "mlqa-r", 16, 0.0, 0, 0.99)
    lr_check["overrides"] = ["seed=0", "+sweep=study_mlqa_r", "model.optimizer.lr=1e-3"]
    (res / "lr_check.json").write_text(json.dumps(lr_check))  # same cell, extra override: a side row, not a seed
    (res / "bad.json").write_text(json.dumps(_record("xquad-r", "mlqa-r", 1024, 0.5, 0, 0, status="failed")))
    df, pairs = collect_records(res)
    assert (df.status == "ok").sum() == n + 3 and (df.status == "failed").sum() == 1
    assert len(pairs) == 4 * (n + 3)
    out = tmp_path / "report"
    superseded = tmp_path / "superseded"  # a grid job a design change replaced: same key, kept as a side row
    superseded.mkdir()
    (superseded / "old.json").write_text(json.dumps(_record("xquad-r", "mlqa-r", 16, 0.0, 0, 0.11)))
    path = study_report(
        res,
        out,
        expect={("xquad-r", "mlqa-r"): [16, 64]},
        baselines={"mlqa-r": {"cross/map": 0.5}},
        side_records=[superseded],
    )
    text = path.read_text()
    assert f"Source: `{res}` ({n + 4} records) + `{superseded}` (1 side record): {n + 4} ok, 1 failed." in text
    assert "| superseded/ | 0.8000 | 0.1100 |" in text  # a side row, not a fourth seed of (0.0, 16)
    # 3 seeds 0.60/0.62/0.64: mean 0.62, std 0.02, 95 % CI half-width t(2)·0.02/√3
    half = 4.303 * 0.02 / math.sqrt(3)
    assert f"| 0.0 | 16 | 3 | 2.12e-05 | 14.5 | 0.000 | 0.8000 ± 0.0000 | 0.6200 ± {half:.4f} |" in text
    assert "Jobs finished: 17 of 18." in text and "Missing (α, batch, seed): (1.0, 64, 2)" in text
    assert "| 16 | de en | 1 (1) | 2 | none |" in text  # what the sampler drew
    from hybrid_retrieval.report import _excluded_summary

    assert (
        _excluded_summary(["ar-de (207 items); zh-es (161 items)", "", "ar-de (207 items)"]) == "2 settings (161–207 items each)"
    )
    assert "## Side studies" in text and "| xquad-r → mlqa-r | all | 0.5 | 16 | 0 |" in text
    assert "| xquad-r → mlqa-r | 2 | 0.25 | 64 | 0 |" in text
    assert "| model.optimizer.lr=1e-3 | 0.8000 | 0.9900 |" in text
    # Side jobs beside their main-grid twin (α 0, B 16, seed 0: cross 0.60). Band = t(11)·sd·√2 with the pooled
    # seed std: 5 cells of 3 seeds (std 0.02, 2 dof each) and (1.0, 64) with 2 seeds 0.02 apart (1 dof);
    # mono/multi/rank distance never vary: band 0, Δ 0, not bold.
    twin = text.split("against their main-grid twin")[1].split("###")[0]
    band = 2.201 * math.sqrt((10 * 0.02**2 + 0.02**2 / 2) / 11) * math.sqrt(2)
    assert f"xquad-r → mlqa-r: mono/map ±0.0000, cross/map ±{band:.4f}, multi/map ±0.0000" in twin
    rows = [line for line in twin.splitlines() if line.startswith("| xquad-r")]
    assert rows == [
        "| xquad-r → mlqa-r | 0.0 | 16 | 0 | model.optimizer.lr=1e-3 | 2.12e-05 / 2.12e-05 | +0.0000 | **+0.3900** | +0.0000 | +0.0 |",
        "| xquad-r → mlqa-r | 0.0 | 16 | 0 | superseded/ | 2.12e-05 / 2.12e-05 | +0.0000 | **-0.4900** | +0.0000 | +0.0 |",
    ]  # the α=0.25 and the full fine-tuning job have no twin: not listed
    assert "## Failed jobs" in text and "ValueError: boom" in text
    assert "| zero-shot (untrained) |" in text
    assert (out / "xquad-r_to_mlqa-r" / "batch_size_curves.png").exists()
    assert (out / "xquad-r_to_mlqa-r" / "batch_size_curves_recall.png").exists()
    assert "batch_size_curves_recall.png" in text
    assert (out / "sweep.csv").exists() and (out / "pairs.csv").exists()
    main_rows = (df.status == "ok") & (df.train_layers == 2) & df.alpha.isin([0.0, 0.5, 1.0]) & (df.extra_overrides == "")
    summary = summarise(df[main_rows])
    row = summary[(summary.alpha == 0.0) & (summary.batch_size == 16)].iloc[0]
    assert row["cross/map ci95"] == pytest.approx(half, rel=1e-6)


def test_effects_give_confidence_intervals_from_pooled_seed_noise():
    from hybrid_retrieval.report import effects, t_quantile_975

    rows = []
    for (alpha, batch), base in {(0.0, 16): 0.60, (0.0, 64): 0.70, (0.5, 16): 0.61, (0.5, 64): 0.71}.items():
        rows += [{"status": "ok", "alpha": alpha, "batch_size": batch, "cross/map": base + d} for d in (-0.02, 0.0, 0.02)]
    text = "\n".join(effects(pd.DataFrame(rows), "cross/map"))
    # every cell: std 0.02 over 3 seeds; 4 cells x 2 dof = 8 dof, t = 2.306; SE of a difference 0.02*sqrt(2/3)
    half = 2.306 * 0.02 * math.sqrt(2 / 3)
    assert (
        "pooled std over seeds 0.02000 (4 cells with ≥ 2 seeds, 8 degrees of freedom, t = 2.306; "
        "per-cell std 0.02000–0.02000: pooling assumes one noise level for every cell;" in text
    )
    assert f"| 0.0 | 16 → 64 | +0.1000 | [{0.1 - half:+.4f}, {0.1 + half:+.4f}] **clear** |" in text
    # no α=1 cells: no hybrid − mono row; hybrid − cross is there
    assert "hybrid − mono only" not in text
    assert f"| 16 | hybrid − cross only (α 0.5 − 0) | +0.0100 | [{0.01 - half:+.4f}, {0.01 + half:+.4f}] |" in text
    # unequal seed counts: variances pooled by degrees of freedom, SE from both cell sizes
    rows = [{"status": "ok", "alpha": 0.0, "batch_size": 16, "cross/map": v} for v in (0.58, 0.60, 0.62)] + [
        {"status": "ok", "alpha": 0.0, "batch_size": 64, "cross/map": v} for v in (0.50, 0.54)
    ]
    text = "\n".join(effects(pd.DataFrame(rows), "cross/map"))
    sd = math.sqrt((2 * 0.02**2 + 1 * (0.04**2 / 2)) / 3)
    half = 3.182 * sd * math.sqrt(1 / 3 + 1 / 2)
    assert f"pooled std over seeds {sd:.5f} (2 cells with ≥ 2 seeds, 3 degrees of freedom" in text
    assert f"| 0.0 | 16 → 64 | -0.0800 | [{-0.08 - half:+.4f}, {-0.08 + half:+.4f}] **clear** |" in text
    assert effects(pd.DataFrame(rows[:1] + rows[3:4]), "cross/map") == ["\nOne seed per cell: no noise estimate for cross/map."]
    assert t_quantile_975(35) == 2.042 and t_quantile_975(500) == 1.96 and t_quantile_975(2) == 4.303
    with pytest.raises(ValueError):
        t_quantile_975(0)


def _row(batch, alpha, cross):
    metrics = {"mono/map": 0.8, "cross/map": cross, "multi/map": 0.4, "cross/r@1": 0.5, "multi/rank_distance": 100.0}
    return {"status": "ok", "alpha": alpha, "batch_size": batch, **metrics}


def test_study_report_strategy_table_and_side_study_checks(tmp_path):
    res = tmp_path / "jobs"
    res.mkdir()
    frozen = {0.0: 0.50, 0.5: 0.55, 1.0: 0.52}  # frozen prefix: hybrid > mono > cross
    full = {0.0: 0.60, 0.5: 0.58, 1.0: 0.56}  # full fine-tuning: cross > hybrid > mono (another order)
    for alpha, v in frozen.items():
        for seed in (0, 1):
            (res / f"f{alpha}-{seed}.json").write_text(json.dumps(_record("xquad-r", "mlqa-r", 16, alpha, seed, v + 0.01 * seed)))
        (res / f"full{alpha}.json").write_text(
            json.dumps(_record("xquad-r", "mlqa-r", 16, alpha, 0, full[alpha], layers=None, extra=FULL_FT))
        )
    for alpha, v in {0.25: 0.53, 0.75: 0.54}.items():
        (res / f"side{alpha}.json").write_text(json.dumps(_record("xquad-r", "mlqa-r", 16, alpha, 0, v)))
    text = study_report(res, tmp_path / "out").read_text()
    # strategies side by side: the unique best cross mAP of the batch (hybrid, mean 0.555 over seeds 0/1) in
    # bold; tied columns (mono mAP 0.8 everywhere) are not
    assert "| 16 | hybrid (α=0.5) | 0.8000 ± 0.0000 | **0.5550 ± 0.0635** | 0.4000 ± 0.0000 |" in text
    assert "| 16 | X→Y only (α=0) | 0.8000 ± 0.0000 | 0.5050 ± 0.0635 |" in text
    from hybrid_retrieval.report import strategy_table

    alone = strategy_table(summarise(pd.DataFrame([_row(1024, 0.0, 0.5)])))  # one strategy: nothing to beat
    assert alone[-1] == "| 1024 | X→Y only (α=0) | 0.8000 | 0.5000 | 0.4000 | 0.5000 | 100.0 |"
    # α stability: seed-0 main jobs beside the side α values, in α order
    stab = text.split("Side study: stability in α")[1].split("###")[0]
    rows = [line for line in stab.splitlines() if line.startswith("| xquad-r")]
    assert [line.split(" | ")[3] for line in rows] == ["0.0", "0.25", "0.5", "0.75", "1.0"]
    assert "| xquad-r → mlqa-r | 16 | 0 | 0.25 | 0.8000 | 0.5300 |" in stab
    assert "| xquad-r → mlqa-r | 16 | 0 | 0.5 | 0.8000 | 0.5500 |" in stab  # seed 0 only, not the mean over seeds
    assert "![alpha_stability](alpha_stability.png)" in stab
    assert (tmp_path / "out" / "alpha_stability.png").stat().st_size > 0
    # full fine-tuning vs frozen prefix, seed 0 of both: values with the rank of α (1 = best)
    check = text.split("frozen prefix vs full fine-tuning")[1]
    assert "| xquad-r → mlqa-r | 16 | 0 | 0.0 | 0.6000 (1) | 0.5000 (3) |" in check
    assert "| xquad-r → mlqa-r | 16 | 0 | 0.5 | 0.5800 (2) | 0.5500 (1) |" in check
    # pairwise: α 0.5 − 0 is −0.02 full vs +0.05 frozen, α 1 − 0 is −0.04 vs +0.02 (reversed, but not both outside
    # the band t(3)·sd·√2 = 3.182 · 0.00707 · 1.414 = 0.0318); α 1 − 0.5 agrees (−0.02 vs −0.03): not listed
    assert (
        "- B=16 cross/map: different order of α (reversed: α 0.5 − 0.0: -0.0200 full vs +0.0500 frozen (not both "
        "outside ±0.0318); α 1.0 − 0.0: -0.0400 full vs +0.0200 frozen (not both outside ±0.0318))"
    ) in check
    assert "- B=16 multi/map: same order of α\n" in check  # all tied at 0.4 in both: no reversal


def test_full_finetuning_check_calls_a_reversal_clear_only_outside_the_band(tmp_path):
    res = tmp_path / "jobs"
    res.mkdir()
    for alpha, v in {0.0: 0.50, 1.0: 0.60}.items():  # frozen: α=1 ahead by 0.10; seed noise sd 0.000707
        for seed in (0, 1):
            (res / f"f{alpha}-{seed}.json").write_text(
                json.dumps(_record("xquad-r", "mlqa-r", 16, alpha, seed, v + 0.001 * seed))
            )
    for alpha, v in {0.0: 0.60, 1.0: 0.50}.items():  # full fine-tuning: α=0 ahead by 0.10
        (res / f"full{alpha}.json").write_text(
            json.dumps(_record("xquad-r", "mlqa-r", 16, alpha, 0, v, layers=None, extra=FULL_FT))
        )
    masked = _record("xquad-r", "mlqa-r", 16, 0.0, 0, 0.99, layers=None, extra=(*FULL_FT, "model.loss.mask_duplicates=true"))
    (res / "full-masked.json").write_text(json.dumps({**masked, "job": "full-masked"}))  # another regime: not in the check
    check = study_report(res, tmp_path / "out").read_text().split("frozen prefix vs full fine-tuning")[1]
    assert "0.9900" not in check.split("###")[0]
    # band t(2)·sd·√2 = 4.303 · 0.000707 · 1.414 = 0.0043: both ±0.10 differences are outside it
    assert (
        "- B=16 cross/map: different order of α (reversed: α 1.0 − 0.0: -0.1000 full vs +0.1000 frozen (both outside ±0.0043))"
        in check
    )
