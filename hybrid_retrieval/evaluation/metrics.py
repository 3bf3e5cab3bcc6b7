"""Ranking metrics from the ranks of the relevant candidates (pure torch, vectorised).

Definitions (several relevant candidates per query allowed; ``R`` = number of relevant candidates,
``r_1 < … < r_R`` their 1-based ranks):

* ``map``   — average precision without cutoff, ``(1/R) Σ_k k / r_k``, averaged over queries;
* ``map@20`` — ``(1/min(R, 20)) Σ_{k: r_k ≤ 20} k / r_k`` (XTREME's LAReQA scorer; equal to
  trec_eval's ``map_cut_20`` whenever R ≤ 20, which holds for XQuAD-R and MLQA-R);
* ``r@k``   — recall at k, ``|{k': r_k' ≤ k}| / R`` (trec_eval ``recall_k``);
* ``hit@k`` — 1 if any relevant candidate is in the top k (success@k).

Ties: candidates with equal scores are ordered by candidate index (lower index first), so ranks are
distinct and deterministic. The tests compare against pytrec_eval with document ids chosen so that
trec_eval's tie order (document id descending) is the same order.

A query with no relevant candidate has no defined metric and is excluded (the callers never build one).
"""

from __future__ import annotations

import torch

RECALL_KS = (1, 10)
MAP_CUTOFF = 20


def ranks_of(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``relevant`` candidates.

    scores: (queries, candidates); relevant: (queries, R) candidate indices, -1 = padding.
    Returns (queries, R) int64 ranks, padding positions set to a large sentinel.
    """
    valid = relevant >= 0  # (q, R)
    rel = relevant.clamp_min(0)
    rel_scores = scores.gather(1, rel)  # (q, R)
    higher = (scores.unsqueeze(1) > rel_scores.unsqueeze(2)).sum(-1)  # (q, R)
    idx = torch.arange(scores.shape[1], device=scores.device)  # (c,)
    tied_before = ((scores.unsqueeze(1) == rel_scores.unsqueeze(2)) & (idx.view(1, 1, -1) < rel.unsqueeze(2))).sum(-1)
    ranks = higher + tied_before + 1
    return torch.where(valid, ranks, torch.full_like(ranks, torch.iinfo(torch.int64).max // 4))


def metrics_from_ranks(ranks: torch.Tensor, n_relevant: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-query metrics from (queries, R) ranks (padding = sentinel) and (queries,) relevant counts."""
    r_sorted, _ = ranks.sort(dim=1)  # (q, R) ascending; padding last
    k = torch.arange(1, r_sorted.shape[1] + 1, device=ranks.device).unsqueeze(0)  # (1, R)
    valid = k <= n_relevant.unsqueeze(1)  # (q, R)
    prec = torch.where(valid, k / r_sorted.to(torch.float64), torch.zeros((), dtype=torch.float64))
    n = n_relevant.to(torch.float64)
    out = {"map": prec.sum(1) / n}
    in_cut = valid & (r_sorted <= MAP_CUTOFF)
    out[f"map@{MAP_CUTOFF}"] = torch.where(in_cut, prec, torch.zeros_like(prec)).sum(1) / n.clamp(max=MAP_CUTOFF)
    for cut in RECALL_KS:
        hits = (valid & (r_sorted <= cut)).sum(1).to(torch.float64)
        out[f"r@{cut}"] = hits / n
        out[f"hit@{cut}"] = (hits > 0).to(torch.float64)
    # Language bias (LAReQA multilingual setting): spread of the relevant candidates' ranks.
    last = r_sorted.gather(1, (n_relevant - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
    out["rank_distance"] = (last - r_sorted[:, 0]).to(torch.float64)
    return out
