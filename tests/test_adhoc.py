"""Ad-hoc retrieval (BEIR/MIRACL layout): loader, metrics against pytrec_eval, evaluate CLI, training callback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import pytrec_eval

from hybrid_retrieval.common.errors import DataFormatError
from hybrid_retrieval.data.beir import load_beir
from hybrid_retrieval.evaluation.adhoc import evaluate_adhoc, query_metrics
from hybrid_retrieval.training.evaluator import BestSoFar
from tests.conftest import make_beir


def test_loader_reads_beir_layout_and_counts_what_it_leaves_out(tiny_beir):
    ds = load_beir(tiny_beir, "dev")
    assert ds.name == "tiny-beir" and len(ds.doc_ids) == 40
    assert ds.query_ids == [f"q{i}" for i in range(8)]  # q_zero has no relevant document: left out
    assert ds.dropped["queries without a relevant document"] == 1
    assert ds.dropped["judgments of unknown documents"] == 1
    assert ds.qrels["q0"]["d_missing"] == 1  # kept: it counts in the recall denominator, as in pytrec_eval
    first = json.loads((tiny_beir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert ds.doc_texts[0] == f"{first['title']}. {first['text']}"
    assert load_beir(tiny_beir, "dev", max_queries=3).query_ids == ["q0", "q1", "q2"]


def test_trec_qrels_and_queries_tsv_read_the_same(tmp_path):
    a = load_beir(make_beir(tmp_path / "a"), "dev")
    b_root = make_beir(tmp_path / "b", qrels_format="trec")
    queries = [json.loads(x) for x in (b_root / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    (b_root / "queries.jsonl").unlink()
    (b_root / "queries.tsv").write_text("".join(f"{q['_id']}\t{q['text']}\n" for q in queries), encoding="utf-8")
    b = load_beir(b_root, "dev")
    assert (a.query_ids, a.query_texts, a.qrels, a.doc_texts) == (b.query_ids, b.query_texts, b.qrels, b.doc_texts)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: _edit_line(r / "corpus.jsonl", 3, "{not json"), r"corpus.jsonl: line 3: one JSON object per line"),
        (
            lambda r: _edit_line(r / "corpus.jsonl", 2, '{"_id": "d0", "text": "again"}'),
            r"corpus.jsonl: line 2 \(id d0\): unique document ids",
        ),
        (lambda r: _edit_line(r / "queries.jsonl", 1, '{"_id": "q0"}'), r"queries.jsonl: line 1: an object with an id"),
        (
            lambda r: _edit_line(r / "qrels" / "dev.tsv", 4, "q1\td1\thigh"),
            r"dev.tsv: line 4: an integer relevance grade, got 'high'",
        ),
        (lambda r: _edit_line(r / "qrels" / "dev.tsv", 5, "q1 d1"), r"dev.tsv: line 5: query-id<TAB>corpus-id<TAB>score"),
        (lambda r: (r / "qrels" / "dev.tsv").rename(r / "qrels" / "test.tsv"), r"dev.tsv: file: a qrels file"),
    ],
    ids=["bad-json", "duplicate-doc", "query-without-text", "bad-grade", "short-line", "missing-split"],
)
def test_loader_errors_name_file_line_and_expectation(tiny_beir, damage, message):
    damage(tiny_beir)
    with pytest.raises(DataFormatError, match=message):
        load_beir(tiny_beir, "dev")


def _edit_line(path, n: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[n - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _random_case(seed: int, n_docs: int = 300, n_queries: int = 40, dim: int = 16):
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n_docs, dim)).astype(np.float32)
    q = rng.normal(size=(n_queries, dim)).astype(np.float32)
    doc_ids = [f"doc{i}" for i in range(n_docs)]
    query_ids = [f"q{i}" for i in range(n_queries)]
    qrels = {}
    for qid in query_ids:
        judged = rng.choice(n_docs, size=int(rng.integers(1, 12)), replace=False)
        grades = {doc_ids[j]: int(rng.integers(0, 4)) for j in judged}
        grades[doc_ids[int(judged[0])]] = max(1, grades[doc_ids[int(judged[0])]])  # at least one relevant
        if rng.random() < 0.2:
            grades["not_in_corpus"] = 1
        qrels[qid] = grades
    return query_ids, doc_ids, qrels, q, d


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_pytrec_eval(seed):
    query_ids, doc_ids, qrels, q, d = _random_case(seed)
    result = evaluate_adhoc(query_ids, doc_ids, qrels, q, d, top_k=100)
    run = {qid: {doc: score for doc, score in hits} for qid, hits in result.run.items()}
    run10 = {qid: {doc: score for doc, score in hits[:10]} for qid, hits in result.run.items()}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run10)
    # The top-k really is the exact top-k by inner product.
    scores = q @ d.T
    assert [d for d, _ in result.run["q3"]] == [doc_ids[j] for j in np.argsort(-scores[3])[:100]]
    for qid in query_ids:
        assert result.per_query[qid]["ndcg@10"] == pytest.approx(full[qid]["ndcg_cut_10"], abs=1e-9), qid
        assert result.per_query[qid]["recall@100"] == pytest.approx(full[qid]["recall_100"], abs=1e-9), qid
        assert result.per_query[qid]["mrr@10"] == pytest.approx(rr[qid]["recip_rank"], abs=1e-9), qid
    assert result.macro["ndcg@10"] == pytest.approx(np.mean([full[x]["ndcg_cut_10"] for x in query_ids]), abs=1e-12)
    assert 0 < result.macro["ndcg@10"] < 1 and 0 < result.macro["recall@100"] < 1


def test_query_metrics_by_hand():
    judged = {"a": 2, "b": 1, "c": 0, "z": 1}  # z is never retrieved
    m = query_metrics(["c", "b", "x", "a"], judged)
    dcg = 1 / np.log2(3) + 2 / np.log2(5)
    idcg = 2 / np.log2(2) + 1 / np.log2(3) + 1 / np.log2(4)
    assert m == pytest.approx({"ndcg@10": dcg / idcg, "recall@100": 2 / 3, "mrr@10": 1 / 2})
    assert query_metrics(["x"] * 10 + ["a"], judged)["mrr@10"] == 0.0  # first relevant at rank 11


def test_ignore_identical_ids_drops_the_query_itself():
    ids = ["q0", "d1", "d2"]
    emb = np.eye(3, dtype=np.float32)
    q = np.array([[1.0, 0.5, 0.0]], dtype=np.float32)
    kept = evaluate_adhoc(["q0"], ids, {"q0": {"d1": 1}}, q, emb, top_k=100)
    dropped = evaluate_adhoc(["q0"], ids, {"q0": {"d1": 1}}, q, emb, top_k=100, ignore_identical_ids=True)
    assert kept.run["q0"][0][0] == "q0" and kept.macro["mrr@10"] == 0.5
    assert dropped.run["q0"][0][0] == "d1" and dropped.macro["mrr@10"] == 1.0


def test_best_so_far_tracks_max_min_and_survives_a_checkpoint():
    best = BestSoFar({"multi/map": "max", "multi/rank_distance": "min"})
    assert best.update({"multi/map": 0.3, "multi/rank_distance": 50.0}) == {
        "multi/map_best": 0.3,
        "multi/rank_distance_best": 50.0,
    }
    assert best.update({"multi/map": 0.2, "multi/rank_distance": 70.0}) == {
        "multi/map_best": 0.3,
        "multi/rank_distance_best": 50.0,
    }
    state = best.state_dict()
    resumed = BestSoFar({"multi/map": "max", "multi/rank_distance": "min"})
    resumed.load_state_dict(state)
    assert resumed.update({"multi/map": 0.25, "multi/rank_distance": 40.0}) == {
        "multi/map_best": 0.3,
        "multi/rank_distance_best": 40.0,
    }
    assert best.update({"multi/map": float("nan")}) == {"multi/map_best": 0.3, "multi/rank_distance_best": 50.0}


@pytest.mark.slow
def test_evaluate_cli_adhoc_agrees_with_pytrec_eval_on_its_run(tiny_beir, tiny_model_dir, tmp_path):
    out = tmp_path / "eval"
    cmd = [
        sys.executable,
        "-m",
        "hybrid_retrieval.evaluate",
        f"adhoc.root={tiny_beir}",
        "adhoc.split=dev",
        f"encoder.name={tiny_model_dir}",
        "encoder.max_length=32",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ndcg@10" in proc.stdout and "8 queries" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    run: dict[str, dict[str, float]] = {}
    for line in (out / "runs" / "tiny-beir.dev.run").read_text().splitlines():
        qid, _, doc, _rank, score, _ = line.split()
        run.setdefault(qid, {})[doc] = float(score)
    assert len(run) == 8 and all(len(v) == 40 for v in run.values())  # every document ranked (40 < 100)
    qrels = load_beir(tiny_beir, "dev").qrels
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    # (run-file scores are rounded to 1e-6: ties there could reorder, so compare the macro values loosely)
    assert summary["macro"]["ndcg@10"] == pytest.approx(np.mean([v["ndcg_cut_10"] for v in ref.values()]), abs=1e-6)
    assert summary["macro"]["recall@100"] == pytest.approx(np.mean([v["recall_100"] for v in ref.values()]), abs=1e-9)
    assert summary["dropped"]["queries without a relevant document"] == 1


@pytest.mark.slow
def test_training_with_a_second_validation_set(tiny_data, tiny_beir, tiny_model_dir, tmp_path):
    from tests.test_train_e2e import run_cli, tiny_overrides

    run_dir = tmp_path / "run"
    args = [
        *tiny_overrides(tiny_data, tiny_model_dir, run_dir),
        "logger=csv",
        "callbacks=adhoc_eval",
        f"callbacks.adhoc_eval.root={tiny_beir}",
        "callbacks.adhoc_eval.name=beir",
        "trainer.max_epochs=3",
    ]
    run_cli(args, tmp_path)
    metrics = json.loads((run_dir / "final_metrics.json").read_text())["metrics"]
    epochs = [json.loads((run_dir / "eval" / f"beir.dev.epoch{e:03d}.json").read_text())["metrics"] for e in range(3)]
    lareqa = [json.loads((run_dir / "eval" / f"epoch{e:03d}.json").read_text())["metrics"] for e in range(3)]
    for m in ("ndcg@10", "recall@100", "mrr@10"):
        assert metrics[f"val/beir/{m}"] == pytest.approx(epochs[-1][m], abs=1e-6)
        assert metrics[f"val/beir/{m}_best"] == pytest.approx(max(e[m] for e in epochs), abs=1e-6)
    assert metrics["val/multi/map_best"] == pytest.approx(max(e["multi/map"] for e in lareqa), abs=1e-6)
    assert metrics["val/multi/rank_distance_best"] == pytest.approx(min(e["multi/rank_distance"] for e in lareqa), abs=1e-4)
    assert (run_dir / "eval" / "beir.dev.epoch002.run").exists()
    # the best-so-far values travel in the checkpoint (a resumed run continues from them)
    import torch

    ckpt = torch.load(next((run_dir / "checkpoints").glob("epoch*.ckpt")), weights_only=False)
    saved = ckpt["callbacks"]["LareqaEvaluator"]["best"]["multi/map"]
    assert any(abs(saved - e["multi/map"]) < 1e-9 for e in lareqa)
    assert "ndcg@10" in "".join(ckpt["callbacks"]["AdhocEvaluator[beir/dev]"]["best"])
    # torchmetrics epoch aggregates: realised alpha over the epoch's 3 batches, mean loss
    assert min(abs(metrics["train/mono_fraction"] - k / 3) for k in range(4)) < 1e-6
    assert metrics["train/loss_epoch"] > 0


@pytest.mark.slow
def test_second_validation_set_without_root_is_one_line_error(tiny_data, tiny_model_dir, tmp_path):
    from tests.test_train_e2e import run_cli, tiny_overrides

    proc = run_cli([*tiny_overrides(tiny_data, tiny_model_dir, tmp_path / "r"), "callbacks=adhoc_eval"], tmp_path, check=False)
    assert proc.returncode == 2
    assert "error: config callbacks.adhoc_eval.root=None: expected a BEIR-layout folder" in proc.stderr


def test_miracl_files_convert_to_a_loadable_beir_folder(tmp_path):
    """The MIRACL release's shapes (topics TSV, TREC qrels, corpus records with docid) -> load_beir."""
    from hybrid_retrieval.data.miracl import write_beir

    topics = tmp_path / "topics.miracl-v1.0-sw-dev.tsv"
    topics.write_text("0\tNani alikuwa rais wa kwanza?\n1\tMto mrefu zaidi ni upi?\n", encoding="utf-8")
    qrels = tmp_path / "qrels.miracl-v1.0-sw-dev.tsv"
    qrels.write_text("0 Q0 10#0 1\n0 Q0 10#1 0\n1 Q0 22#3 1\n", encoding="utf-8")
    corpus = [
        {"docid": "10#0", "title": "Rais", "text": "Rais wa kwanza."},
        {"docid": "10#1", "title": "Rais", "text": "Historia."},
    ]
    corpus.append({"docid": "22#3", "title": "Mto", "text": "Mto Nile ni mrefu."})
    ds = load_beir(write_beir(tmp_path / "miracl-sw", topics, qrels, iter(corpus), "dev"), "dev")
    assert ds.name == "miracl-sw" and ds.query_ids == ["0", "1"] and ds.qrels == {"0": {"10#0": 1, "10#1": 0}, "1": {"22#3": 1}}
    assert ds.doc_ids == ["10#0", "10#1", "22#3"] and ds.doc_texts[2] == "Mto. Mto Nile ni mrefu."
