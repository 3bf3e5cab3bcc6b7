"""hybrid_retrieval inside sentence-transformers: ``LAReQAEvaluator`` gives the numbers of
``python -m hybrid_retrieval.evaluate`` on the same weights, with ST's prompts, prefixed names, a primary metric
and a CSV; importing it pulls in neither Lightning nor Hydra."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

st = pytest.importorskip("sentence_transformers")


def test_importing_the_st_pieces_imports_neither_lightning_nor_hydra():
    code = "import sys, hybrid_retrieval.st; print(sorted(m for m in ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"  # (a line before it may be W&B announcing offline mode)


@pytest.mark.slow
def test_the_evaluator_equals_hybrid_retrieval_evaluate_on_the_same_weights(tiny_data, tiny_model_dir, tmp_path):
    from hybrid_retrieval.export import export_sentence_transformers
    from hybrid_retrieval.models.encoder import DualEncoder
    from hybrid_retrieval.st import LAReQAEvaluator

    _, evald = tiny_data
    model_dir = export_sentence_transformers(DualEncoder(name=str(tiny_model_dir), max_length=32).eval(), tmp_path / "st")
    model = st.SentenceTransformer(str(model_dir), device="cpu")
    evaluator = LAReQAEvaluator(evald, name="eval-r", batch_size=16)
    metrics = evaluator(model, output_path=str(tmp_path / "out"), epoch=1, steps=7)
    assert evaluator.primary_metric == "eval-r_multi_map" and evaluator.primary_metric in metrics
    assert set(metrics) >= {"eval-r_cross_map", "eval-r_mono_r@10", "eval-r_multi_rank_distance"}

    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "hybrid_retrieval.evaluate", f"data.root={evald}", "dataset=eval-r"]
    cmd += [f"encoder.name={tiny_model_dir}", "encoder.max_length=32", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = json.loads((out / "summary.json").read_text())["macro"]
    for setting in ("mono", "cross", "multi"):
        for m in ("map", "map@20", "r@1", "r@10"):
            assert metrics[f"eval-r_{setting}_{m}"] == pytest.approx(ours[f"{setting}/{m}"], abs=1e-4), (setting, m)
    assert metrics["eval-r_multi_rank_distance"] == pytest.approx(ours["multi/rank_distance"], abs=1e-2)
    rows = list(csv.reader((tmp_path / "out" / "lareqa_eval-r_results.csv").open()))
    assert rows[0][:3] == ["epoch", "steps", "multi_map"] and rows[1][:2] == ["1", "7"]
    assert float(rows[1][2]) == pytest.approx(metrics["eval-r_multi_map"])
