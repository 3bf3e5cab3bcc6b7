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


@pytest.mark.parametrize("seed", [0, 1])
def test_lareqa_aggregation_against_pytrec_eval_on_partial_coverage(tmp_path, seed):
    """Every X→Y and X→all value of evaluate_embeddings, recomputed by pytrec_eval from the written run and
    qrels files (random embeddings; MLQA-style coverage: not every question exists in every language);
    rank distance recomputed from the run files; the block size changes no number."""
    import torch

    from hybrid_retrieval.data.lareqa import load_lareqa
    from hybrid_retrieval.evaluation.lareqa_eval import EvalCorpus, TrecRunWriter, evaluate_embeddings
    from tests.conftest import make_lareqa

    root = make_lareqa(
        tmp_path / "mlqa-like",
        languages=("en", "de", "es", "fr"),
        n_articles=3,
        seed=seed,
        coverage=lambda i: {"en", "de", "es", "fr"} if i % 3 == 0 else ({"en", "de"} if i % 3 == 1 else {"en", "es", "fr"}),
    )
    corpus = EvalCorpus.from_dataset(load_lareqa(root, name="mlqa-like"))
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(len(corpus.q_texts), 8, generator=g), dim=-1)
    c = torch.nn.functional.normalize(torch.randn(len(corpus.c_texts), 8, generator=g), dim=-1)
    writer = TrecRunWriter(tmp_path / "runs", corpus, top_k=None)
    result = evaluate_embeddings(corpus, q, c, block=5, run_writer=writer)
    writer.close()
    for block in (1, 3, 256):
        again = evaluate_embeddings(corpus, q, c, block=block).flat()
        assert again == pytest.approx(result.flat(), abs=1e-12), block  # summation order only

    def read(path):
        out: dict = {}
        for line in path.read_text().splitlines():
            parts = line.split()
            if path.suffix == ".run":  # score from the rank: no ties from rounding in the file
                out.setdefault(parts[0], {})[parts[2]] = 1e6 - int(parts[3])
            else:
                out.setdefault(parts[0], {})[parts[2]] = int(parts[3])
        return out

    langs = result.languages
    for i, x in enumerate(langs):
        for j, y in enumerate([*langs, "all"]):
            run = read(tmp_path / "runs" / f"{x}-{y}.run")
            qrels = read(tmp_path / "runs" / f"qrels.{y}.txt")
            qrels = {k: v for k, v in qrels.items() if k in run}
            ev = pytrec_eval.RelevanceEvaluator(qrels, {"map", "recall.1,10"}).evaluate(run)
            assert len(ev) == len(run) > 0
            got = {
                m: float(np.mean([r[k] for r in ev.values()]))
                for m, k in (("map", "map"), ("r@1", "recall_1"), ("r@10", "recall_10"))
            }
            mine = {m: (result.pair[m][i, j] if y != "all" else result.multi[m][i]) for m in got}
            for m in got:
                assert mine[m] == pytest.approx(got[m], abs=1e-9), (x, y, m)
            if y == "all":  # rank distance: worst − best rank of a query's relevant candidates
                dist = []
                for qid, docs in run.items():
                    ranks = sorted(1e6 - s for d, s in docs.items() if qrels[qid].get(d))
                    dist.append(ranks[-1] - ranks[0])
                assert result.multi["rank_distance"][i] == pytest.approx(np.mean(dist), abs=1e-9), x
