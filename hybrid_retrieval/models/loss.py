"""InfoNCE with in-batch (optionally gathered) negatives, hard negatives and a symmetric term."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybrid_retrieval.models.distributed import all_gather_with_grad, world_info

SIMILARITIES = ("cosine", "dot")


class InfoNCELoss(nn.Module):
    """Contrastive loss over a (queries × passages) similarity matrix.

    Inputs per rank: ``q`` (B, dim) queries; ``p`` (B, dim) positives; optional ``neg`` (B·k, dim)
    hard negatives. Each query's candidates are every positive and hard negative of the (global) batch;
    its label is its own positive. With ``gather_across_devices`` the passages of all ranks are
    gathered with a differentiable all-gather, so the contrastive batch is the global batch.

    ``temperature``: fixed, or learnable (``learnable_temperature``) as a log-scale clamped to
    ``[min_temperature, max_temperature]``. ``symmetric`` adds the passage→query term (over positives).
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
    ):
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ValueError(f"loss.similarity={similarity!r}: expected 'cosine' or 'dot'")
        if not min_temperature <= temperature <= max_temperature or temperature <= 0:
            raise ValueError(f"loss.temperature={temperature}: expected within [{min_temperature}, {max_temperature}], > 0")
        self.similarity, self.symmetric, self.gather = similarity, symmetric, gather_across_devices
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

    def forward(self, q: torch.Tensor, p: torch.Tensor, neg: torch.Tensor | None = None) -> torch.Tensor:
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
        loss = F.cross_entropy(logits, labels)
        if self.symmetric:
            all_q = all_gather_with_grad(q) if world > 1 else q  # (world·B, dim)
            logits_p = scale * p @ all_q.T  # (B, world·B)
            loss = 0.5 * (loss + F.cross_entropy(logits_p, labels))
        return loss
