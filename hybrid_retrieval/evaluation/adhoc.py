"""Ad-hoc retrieval metrics (BEIR/MIRACL protocol): nDCG@10, Recall@100, MRR@10 from an exact faiss top-k.

Definitions are trec_eval's (what pytrec_eval and BEIR report; tests compare against pytrec_eval):
nDCG@10 with linear gains (the judgment grade) and the ideal ranking of all judged documents;
Recall@100 = relevant (grade ≥ 1) documents in the top 100 / all relevant documents of the query,
judged documents missing from the corpus included; MRR@10 = 1 / rank of the first relevant document
in the top 10, else 0. Macro averages over the evaluated queries. Score ties are broken by faiss's order
(trec_eval breaks them by document id), so tied scores can make the two differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hybrid_retrieval.evaluation.shards import ShardedEmbeddings

ADHOC_METRICS = ("ndcg@10", "recall@100", "mrr@10")


@dataclass
class AdhocResult:
    macro: dict[str, float]  # metric -> mean over queries
    per_query: dict[str, dict[str, float]]  # qid -> metric -> value
    run: dict[str, list[tuple[str, float]]]  # qid -> [(docid, score)] best first

    def flat(self) -> dict[str, float]:
        return dict(self.macro)


def exact_topk(q_emb: torch.Tensor | np.ndarray, d_emb: torch.Tensor | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows), each (n_queries, k'), k' = min(k, n_docs): exact inner-product top-k (faiss IndexFlatIP)."""
    import faiss  # noqa: PLC0415 - optional at import time and slow to load (faiss-cpu): only the index paths need it

    d = np.ascontiguousarray(np.asarray(d_emb, dtype=np.float32))  # (n_docs, dim)
    q = np.ascontiguousarray(np.asarray(q_emb, dtype=np.float32))  # (n_queries, dim)
    index = faiss.IndexFlatIP(d.shape[1])
    index.add(d)
    return index.search(q, min(k, d.shape[0]))


def query_metrics(ranked: list[str], judged: dict[str, int]) -> dict[str, float]:
    """nDCG@10, Recall@100, MRR@10 of one ranked list of document ids against graded judgments."""
    relevant = {d for d, g in judged.items() if g >= 1}
    dcg = sum(max(judged.get(d, 0), 0) / math.log2(rank + 1) for rank, d in enumerate(ranked[:10], 1))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:10]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, 1))
    first = next((rank for rank, d in enumerate(ranked[:10], 1) if d in relevant), None)
    return {
        "ndcg@10": dcg / idcg if idcg > 0 else 0.0,
        "recall@100": len(relevant.intersection(ranked[:100])) / len(relevant) if relevant else 0.0,
        "mrr@10": 1.0 / first if first else 0.0,
    }


def evaluate_adhoc(
    query_ids: list[str],
    doc_ids: list[str],
    qrels: dict[str, dict[str, int]],
    q_emb: torch.Tensor | np.ndarray,
    d_emb,  # (n_docs, dim) tensor / array, or evaluation.shards.ShardedEmbeddings
    top_k: int = 100,
    ignore_identical_ids: bool = False,
) -> AdhocResult:
    """Rank every document for every query (exact inner product) and score the top ``top_k`` (≥ 100).

    ``ignore_identical_ids``: drop a document whose id equals the query id (BEIR does so for sets where
    queries are also documents, e.g. Quora, ArguAna).
    """
    if top_k < 100:
        raise ValueError(f"top_k={top_k}: Recall@100 needs at least 100 ranks")
    k = top_k + int(ignore_identical_ids)
    # d_emb: an array, or sharded embeddings on disk (evaluation.shards: searched shard by shard, bounded memory)
    if isinstance(d_emb, ShardedEmbeddings):
        scores, rows = d_emb.topk(np.asarray(q_emb, dtype=np.float32), k)
    else:
        scores, rows = exact_topk(q_emb, d_emb, k)
    run: dict[str, list[tuple[str, float]]] = {}
    per_query: dict[str, dict[str, float]] = {}
    for qid, srow, rrow in zip(query_ids, scores, rows, strict=True):
        hits = [(doc_ids[r], float(s)) for s, r in zip(srow, rrow, strict=True) if r >= 0]
        if ignore_identical_ids:
            hits = [h for h in hits if h[0] != qid]
        hits = hits[:top_k]
        run[qid] = hits
        per_query[qid] = query_metrics([d for d, _ in hits], qrels.get(qid, {}))
    macro = {m: float(np.mean([v[m] for v in per_query.values()])) if per_query else float("nan") for m in ADHOC_METRICS}
    return AdhocResult(macro=macro, per_query=per_query, run=run)
