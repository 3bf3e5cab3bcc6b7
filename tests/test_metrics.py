"""Ranking metrics against pytrec_eval, on random and adversarial scores, and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybrid_retrieval.evaluation.metrics import metrics_from_ranks, ranks_of

pytrec_eval = pytest.importorskip("pytrec_eval")


def ours(scores: np.ndarray, rel: list[list[int]]) -> dict[str, np.ndarray]:
    r_max = max(len(r) for r in rel)
    rel_t = torch.full((len(rel), r_max), -1, dtype=torch.int64)
    for i, r in enumerate(rel):
        rel_t[i, : len(r)] = torch.tensor(r)
    per_q = metrics_from_ranks(ranks_of(torch.from_numpy(scores), rel_t), (rel_t >= 0).sum(1))
    return {k: v.numpy() for k, v in per_q.items()}


def reference(scores: np.ndarray, rel: list[list[int]]) -> dict[str, np.ndarray]:
    """pytrec_eval; doc ids chosen so trec_eval's tie order (docno descending) = index ascending."""
    n = scores.shape[1]
    doc = [f"d{n - j:07d}" for j in range(n)]
    qrels = {f"q{i}": {doc[j]: 1 for j in r} for i, r in enumerate(rel)}
    run = {f"q{i}": {doc[j]: float(scores[i, j]) for j in range(n)} for i in range(len(rel))}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"map", "map_cut.20", "recall.1,10"})
    res = ev.evaluate(run)
    keys = {"map": "map", "map@20": "map_cut_20", "r@1": "recall_1", "r@10": "recall_10"}
    return {k: np.array([res[f"q{i}"][v] for i in range(len(rel))]) for k, v in keys.items()}


@pytest.mark.parametrize("case", ["random", "ties", "one_relevant", "many_relevant", "all_equal"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_pytrec_eval(case, seed):
    rng = np.random.default_rng(seed)
    n_q, n_c = 17, 60
    if case == "ties":
        scores = rng.integers(0, 4, size=(n_q, n_c)).astype(np.float32)  # massive ties
    elif case == "all_equal":
        scores = np.zeros((n_q, n_c), dtype=np.float32)
    else:
        scores = rng.standard_normal((n_q, n_c)).astype(np.float32)
    if case == "one_relevant":
        rel = [[int(rng.integers(n_c))] for _ in range(n_q)]
    elif case == "many_relevant":
        rel = [sorted(rng.choice(n_c, size=int(rng.integers(5, 15)), replace=False).tolist()) for _ in range(n_q)]
    else:
        rel = [sorted(rng.choice(n_c, size=int(rng.integers(1, 6)), replace=False).tolist()) for _ in range(n_q)]
    got, ref = ours(scores, rel), reference(scores, rel)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-6, err_msg=f"{case} {k}")


def test_hand_worked():
    # 5 candidates; query 0 relevant {1, 3}; query 1 relevant {4}.
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.1], [0.5, 0.5, 0.5, 0.5, 0.5]], dtype=np.float32)
    got = ours(scores, [[1, 3], [4]])
    # q0: ranks 2 and 4 -> AP = (1/2 + 2/4)/2 = 0.5; R@1 = 0; R@10 = 1; rank distance 2.
    assert got["map"][0] == pytest.approx(0.5)
    assert got["r@1"][0] == 0 and got["r@10"][0] == 1 and got["hit@1"][0] == 0
    assert got["rank_distance"][0] == 2
    # q1: all tied; tie order = candidate index, so candidate 4 is ranked 5th -> AP 0.2.
    assert got["map"][1] == pytest.approx(0.2)
    assert got["rank_distance"][1] == 0


def test_map_cutoff_divides_by_min_r_k():
    scores = np.array([np.linspace(1, 0, 30)], dtype=np.float32)
    got = ours(scores, [[0, 25]])  # ranks 1 and 26 -> map@20 = (1/1)/2
    assert got["map@20"][0] == pytest.approx(0.5)
    assert got["map"][0] == pytest.approx((1 + 2 / 26) / 2)
