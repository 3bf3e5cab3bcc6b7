"""The LAReQA evaluation protocol, per language pair, from embeddings computed once.

Settings for a dataset with languages L (arXiv 2408.10536, LAReQA):

* monolingual X→X: questions in X against the candidates in X;
* cross-lingual X→Y (X≠Y): questions in X against the candidates in Y; a question counts only if its
  id exists in Y (always for XQuAD-R; MLQA-R ids cover 2–4 languages);
* multilingual X→all: questions in X against the pool of every language's candidates; relevant = the
  answer sentence in every language that has the id.

Every question and candidate is encoded once; one (queries × pool) score block per language X serves
all |L| + 1 settings of X. Metrics: see :mod:`hybrid_retrieval.evaluation.metrics`. Macro averages:
``mono`` = mean over X of X→X, ``cross`` = mean over X≠Y of X→Y, ``multi`` = mean over X of X→all;
``multi/rank_distance`` = mean over X of the per-query (worst − best relevant rank), lower = less bias.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hybrid_retrieval.data.corpus import EvalCorpus
from hybrid_retrieval.evaluation.metrics import metrics_from_ranks, ranks_of
from hybrid_retrieval.evaluation.trec import TAG, trec_lines

log = logging.getLogger(__name__)

#: Per language pair (mono X→X, cross X→Y). Each question has ONE relevant candidate there, so hit@k (any relevant
#: in the top k) would equal r@k exactly: it is reported only where they differ, in the multilingual setting.
METRICS = ("map", "map@20", "r@1", "r@10")
#: Multilingual X→all: one relevant candidate per language that has the id, so hit@k ≥ r@k; plus language bias.
MULTI_METRICS = (*METRICS, "hit@1", "hit@10", "rank_distance")


@dataclass
class EvalResult:
    languages: list[str]
    pair: dict[str, np.ndarray]  # metric -> (L, L) matrix, [X, Y] = X→Y
    multi: dict[str, np.ndarray]  # metric -> (L,) per query language; includes rank_distance
    n_queries: np.ndarray  # (L, L) number of queries per pair

    def macro(self) -> dict[str, float]:
        n = len(self.languages)
        off = ~np.eye(n, dtype=bool)
        out: dict[str, float] = {}
        for m, mat in self.pair.items():
            out[f"mono/{m}"] = float(np.nanmean(np.diag(mat)))
            out[f"cross/{m}"] = float(np.nanmean(mat[off])) if n > 1 else float("nan")
        for m, vec in self.multi.items():
            out[f"multi/{m}"] = float(np.nanmean(vec))
        return out

    def flat(self) -> dict[str, float]:
        """Everything as ``{X}-{Y}/{metric}``, ``{X}-all/{metric}`` and macro names, for loggers."""
        out = self.macro()
        for m, mat in self.pair.items():
            for i, x in enumerate(self.languages):
                for j, y in enumerate(self.languages):
                    out[f"{x}-{y}/{m}"] = float(mat[i, j])
        for m, vec in self.multi.items():
            for i, x in enumerate(self.languages):
                out[f"{x}-all/{m}"] = float(vec[i])
        return out


def score_blocks(q: torch.Tensor, c: torch.Tensor, block: int):
    """Yield (start, scores) with scores (block, n_c) = q[start:start+block] @ c.T."""
    for lo in range(0, q.shape[0], block):
        yield lo, q[lo : lo + block] @ c.T


def evaluate_embeddings(
    corpus: EvalCorpus,
    q_emb: torch.Tensor,
    c_emb: torch.Tensor,
    block: int = 256,
    run_writer: Callable[[str, list[str], torch.Tensor, torch.Tensor, list[str]], None] | None = None,
) -> EvalResult:
    """All settings from question embeddings (n_q, dim) and candidate embeddings (n_c, dim).

    Scores are inner products: pass normalised embeddings for cosine similarity.
    ``run_writer(setting, query_ids, scores, candidate_offset, candidate_ids)`` receives each score block.
    """
    langs, n = corpus.languages, len(corpus.languages)
    q_emb, c_emb = q_emb.float(), c_emb.float()
    offs = corpus.c_offsets
    sums = {m: np.zeros((n, n)) for m in METRICS}
    counts = np.zeros((n, n))
    multi_sums: dict[str, np.ndarray] = {m: np.zeros(n) for m in MULTI_METRICS}
    multi_counts = np.zeros(n)
    for xi, x in enumerate(langs):
        q_idx = np.flatnonzero(corpus.q_lang == xi)
        qx = q_emb[torch.from_numpy(q_idx)]  # (n_x, dim)
        qids = [corpus.q_ids[i] for i in q_idx]
        for lo, scores in score_blocks(qx, c_emb, block):  # scores: (b, n_c)
            b_qids = qids[lo : lo + scores.shape[0]]
            golds = [corpus.gold[qid] for qid in b_qids]
            # Monolingual and cross-lingual settings: columns of language Y only.
            for yi, y in enumerate(langs):
                rows = [r for r, g in enumerate(golds) if yi in g]
                if not rows:
                    continue
                c_lo, c_hi = int(offs[yi]), int(offs[yi + 1])
                s = scores[rows, c_lo:c_hi]  # (rows, n_y)
                rel = torch.tensor([[golds[r][yi] - c_lo] for r in rows])  # (rows, 1)
                per_q = metrics_from_ranks(ranks_of(s, rel), torch.ones(len(rows), dtype=torch.int64))
                for m in METRICS:
                    sums[m][xi, yi] += float(per_q[m].sum())
                counts[xi, yi] += len(rows)
                if run_writer is not None:
                    run_writer(f"{x}-{y}", [b_qids[r] for r in rows], s, c_lo, corpus.c_ids)
            # Multilingual setting: the whole pool.
            r_max = max(len(g) for g in golds)
            rel = torch.full((len(golds), r_max), -1, dtype=torch.int64)  # (b, R)
            for r, g in enumerate(golds):
                rel[r, : len(g)] = torch.tensor(sorted(g.values()))
            n_rel = (rel >= 0).sum(1)
            per_q = metrics_from_ranks(ranks_of(scores, rel), n_rel)
            for m in multi_sums:
                multi_sums[m][xi] += float(per_q[m].sum())
            multi_counts[xi] += len(golds)
            if run_writer is not None:
                run_writer(f"{x}-all", b_qids, scores, 0, corpus.c_ids)
    with np.errstate(invalid="ignore", divide="ignore"):
        pair = {m: sums[m] / counts for m in METRICS}
        multi = {m: multi_sums[m] / multi_counts for m in multi_sums}
    return EvalResult(langs, pair, multi, counts)


class TrecRunWriter:
    """Writes TREC run files (``qid Q0 docid rank score tag``) and qrels, one file per setting.

    ``top_k=None`` writes the full ranking (needed to recompute mAP without cutoff); a cutoff keeps
    files small and still allows map@20 (k ≥ 20), r@1 and r@10 to be recomputed.
    """

    def __init__(self, out_dir: str | Path, corpus: EvalCorpus, top_k: int | None = 100, tag: str = TAG):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.top_k, self.tag, self.corpus = top_k, tag, corpus
        self._open: dict[str, object] = {}

    def __call__(self, setting: str, qids: list[str], scores: torch.Tensor, c_lo: int, c_ids: list[str]) -> None:
        fh = self._open.get(setting)
        if fh is None:
            fh = (self.dir / f"{setting}.run").open("w", encoding="utf-8")
            self._open[setting] = fh
        k = scores.shape[1] if self.top_k is None else min(self.top_k, scores.shape[1])
        # Stable descending sort: equal scores keep candidate-index order (the metrics' tie rule).
        top_scores, order = torch.sort(scores, dim=1, descending=True, stable=True)
        top_scores, order = top_scores[:, :k].tolist(), order[:, :k].tolist()
        fh.write(
            "".join(
                trec_lines(qid, ((c_ids[c_lo + ci], sc) for ci, sc in zip(order[r], top_scores[r])), self.tag)
                for r, qid in enumerate(qids)
            )
        )

    def write_qrels(self) -> None:
        """``qrels.all.txt`` for the X-all runs, ``qrels.{Y}.txt`` (language Y's candidates) for X-Y runs."""
        c = self.corpus
        files = {"all": (self.dir / "qrels.all.txt").open("w", encoding="utf-8")}
        for lang in c.languages:
            files[lang] = (self.dir / f"qrels.{lang}.txt").open("w", encoding="utf-8")
        try:
            for qid, per_lang in c.gold.items():
                for li, ci in sorted(per_lang.items()):
                    line = f"{qid} 0 {c.c_ids[ci]} 1\n"
                    files["all"].write(line)
                    files[c.languages[li]].write(line)
        finally:
            for fh in files.values():
                fh.close()

    def close(self) -> None:
        for fh in self._open.values():
            fh.close()
        self._open.clear()
        self.write_qrels()
