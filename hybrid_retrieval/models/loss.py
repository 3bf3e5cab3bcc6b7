"""InfoNCE with in-batch (optionally gathered) negatives, hard negatives and a symmetric term."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybrid_retrieval.common.errors import ConfigError, require_choice
from hybrid_retrieval.models.distributed import all_gather_variable, all_gather_with_grad, world_info

SIMILARITIES = ("cosine", "dot")


def check_similarity(value) -> None:
    require_choice("model.loss.similarity", value, SIMILARITIES, "expected 'cosine' or 'dot'")


def check_temperature(value, lo: float = 0.01, hi: float = 1.0) -> None:
    """A positive number within [``min_temperature``, ``max_temperature``] (the learnable temperature's clamp)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError("model.loss.temperature", value, "expected a positive number")
    if not lo <= value <= hi:
        raise ConfigError(
            "model.loss.temperature", value, f"expected within [{lo}, {hi}] (model.loss.min_temperature / max_temperature)"
        )


class InfoNCELoss(nn.Module):
    """Contrastive loss over a (queries × passages) similarity matrix.

    Inputs per rank: ``q`` (B, dim) queries; ``p`` (B, dim) positives; optional ``neg`` (B·k, dim)
    hard negatives. Each query's candidates are every positive and hard negative of the (global) batch;
    its label is its own positive. With ``gather_across_devices`` the passages of all ranks are
    gathered with a differentiable all-gather, so the contrastive batch is the global batch.

    ``temperature``: fixed, or learnable (``learnable_temperature``) as a log-scale clamped to
    ``[min_temperature, max_temperature]``. ``symmetric`` adds the passage→query term (over positives).

    ``mask_duplicates``: questions can share an answer sentence (55 % of XQuAD-R's do), so a batch can hold
    the same passage text several times. With keys (``p_keys`` (B,), ``neg_keys`` (B·k,): equal key = equal
    text, the same numbering on every rank), a query's candidates become its positive plus each *other*
    distinct passage once: the copies of its own positive are not negatives (they were false negatives
    with the positive's own score) and a repeated passage no longer counts twice in the denominator. The
    passage→query term masks the other queries answered by the same text. Without duplicates in the batch
    the loss is unchanged.
    """

    def __init__(
        self,
        temperature: float = 0.05,
        similarity: str = "cosine",
        learnable_temperature: bool = False,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
        symmetric: bool = False,
        gather_across_devices: bool = True,
        mask_duplicates: bool = False,
    ):
        super().__init__()
        check_similarity(similarity)
        check_temperature(temperature, min_temperature, max_temperature)
        self.similarity, self.symmetric, self.gather = similarity, symmetric, gather_across_devices
        self.mask_duplicates = bool(mask_duplicates)
        self.min_t, self.max_t = min_temperature, max_temperature
        log_inv_t = torch.tensor(math.log(1.0 / temperature))
        if learnable_temperature:
            self.log_inv_temperature = nn.Parameter(log_inv_t)
        else:
            self.register_buffer("log_inv_temperature", log_inv_t)

    @property
    def scale(self) -> torch.Tensor:
        lo, hi = math.log(1.0 / self.max_t), math.log(1.0 / self.min_t)
        return self.log_inv_temperature.clamp(lo, hi).exp()

    def forward(
        self,
        q: torch.Tensor,
        p: torch.Tensor,
        neg: torch.Tensor | None = None,
        p_keys: torch.Tensor | None = None,
        neg_keys: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.similarity == "cosine":
            q, p = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
            neg = F.normalize(neg, dim=-1) if neg is not None else None
        rank, world = world_info() if self.gather else (0, 1)
        if world > 1:
            all_p = all_gather_with_grad(p)  # (world·B, dim)
            all_neg = all_gather_with_grad(neg) if neg is not None else None
        else:
            all_p, all_neg = p, neg
        cands = all_p if all_neg is None else torch.cat([all_p, all_neg], 0)  # (world·B·(1+k), dim)
        scale = self.scale
        logits = scale * q @ cands.T  # (B, world·B·(1+k))
        b = q.shape[0]
        labels = torch.arange(b, device=q.device) + rank * b  # (B,)
        all_p_keys = None
        if self.mask_duplicates:
            all_p_keys, cand_keys = self._gathered_keys(p_keys, neg_keys, neg is not None, world)
            logits = logits.masked_fill(duplicate_mask(cand_keys, labels), float("-inf"))
        loss = F.cross_entropy(logits, labels)
        if self.symmetric:
            all_q = all_gather_with_grad(q) if world > 1 else q  # (world·B, dim)
            logits_p = scale * p @ all_q.T  # (B, world·B)
            if all_p_keys is not None:
                # Passage i vs query j: j is a false negative when its positive is the same text as i.
                same = all_p_keys[labels].unsqueeze(1) == all_p_keys.unsqueeze(0)  # (B, world·B)
                not_own = torch.arange(all_p_keys.shape[0], device=q.device).unsqueeze(0) != labels.unsqueeze(1)
                logits_p = logits_p.masked_fill(same & not_own, float("-inf"))
            loss = 0.5 * (loss + F.cross_entropy(logits_p, labels))
        return loss

    @staticmethod
    def _gathered_keys(p_keys, neg_keys, has_neg: bool, world: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(world·B,) positive keys and (world·B·(1+k),) candidate keys, in the order of the candidates."""
        if p_keys is None or (has_neg and neg_keys is None):
            raise ValueError("loss.mask_duplicates=true needs the passages' keys (p_keys, and neg_keys with hard negatives)")
        all_p_keys = all_gather_variable(p_keys) if world > 1 else p_keys
        if not has_neg:
            return all_p_keys, all_p_keys
        all_neg_keys = all_gather_variable(neg_keys) if world > 1 else neg_keys
        return all_p_keys, torch.cat([all_p_keys, all_neg_keys])


def duplicate_mask(cand_keys: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, N) True where a candidate must not count for a query: a copy of the query's own positive other
    than its label column, or a repeat of another passage (the first occurrence stays).

    ``cand_keys`` (N,) text keys of the candidates; ``labels`` (B,) each query's positive column.
    """
    n = cand_keys.shape[0]
    cols = torch.arange(n, device=cand_keys.device)  # (N,)
    _, inverse = torch.unique(cand_keys, return_inverse=True)  # (N,) group of each column
    first = torch.full((int(inverse.max()) + 1 if n else 0,), n, device=cand_keys.device, dtype=torch.long)
    first = first.scatter_reduce(0, inverse, cols, reduce="amin")  # first column of each group
    repeat = first[inverse] != cols  # (N,) a later copy of some text
    own = cand_keys.unsqueeze(0) == cand_keys[labels].unsqueeze(1)  # (B, N) same text as the own positive
    is_label = cols.unsqueeze(0) == labels.unsqueeze(1)  # (B, N)
    return (own & ~is_label) | (repeat.unsqueeze(0) & ~own)
