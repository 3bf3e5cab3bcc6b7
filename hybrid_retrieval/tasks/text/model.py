"""The text retrieval task's LightningModule: a dual encoder (queries, passages, optional hard negatives) trained
by the shared core (:class:`~hybrid_retrieval.training.core.ContrastiveModule`: gradient caching, gathered
negatives, the non-finite policy, exact resume, the schedule). This module adds only what is text's own: how a
batch becomes token sides, the duplicate-passage keys of the loss, frozen-prefix checkpoints, and how evaluation
texts are embedded.
"""

from __future__ import annotations

import torch

from hybrid_retrieval.models.checkpoint import check_frozen_prefix
from hybrid_retrieval.models.digest import tensor_digest
from hybrid_retrieval.models.encoder import DualEncoder
from hybrid_retrieval.models.grad_cache import Side, TextSide
from hybrid_retrieval.training.core import (
    NONFINITE_POLICIES,
    ContrastiveModule,
    NonFiniteLossError,
    linear_warmup_decay,
    optimizer_with_schedule,
    planned_steps,
)

# Names configs and callers import from here (conf/model/*.yaml: linear_warmup_decay); they live in the core.
__all__ = [
    "NONFINITE_POLICIES",
    "NonFiniteLossError",
    "TextRetrievalModule",
    "linear_warmup_decay",
    "optimizer_with_schedule",
    "planned_steps",
]


class TextRetrievalModule(ContrastiveModule):
    def __init__(self, encoder: DualEncoder, *args, **kwargs):
        """``encoder`` and the core's arguments (:class:`ContrastiveModule`: loss, optimizer, scheduler, grad_cache,
        gradient_clip_val, nonfinite, warmup_ratio)."""
        super().__init__(encoder, *args, **kwargs)
        # Frozen-prefix runs checkpoint only what trains (+ optimizer): the frozen weights are the base
        # model's, identified by a digest that loading checks (so Lightning must not demand those keys).
        self._frozen_keys = [f"encoder.{n}" for n in encoder.frozen_state_names()]
        self._frozen_digest: str | None = None
        self.strict_loading = not self._frozen_keys

    def frozen_digest(self) -> str:
        """Digest of the frozen weights under the encoder's own state-dict names (what evaluate checks)."""
        if self._frozen_digest is None:
            state = self.encoder.state_dict()
            self._frozen_digest = tensor_digest((k, state[k]) for k in self.encoder.frozen_state_names())
        return self._frozen_digest

    # ------------------------------------------------------------------ the core's hooks
    def sides(self, batch: dict) -> list[Side]:
        groups = [("query", batch["query"]), ("passage", batch["passage"])]
        if batch.get("negative") is not None:
            groups.append(("passage", batch["negative"]))
        return [TextSide(self.encoder.encode, feats, kind, self.bucket_size) for kind, feats in groups]

    def batch_loss(self, batch: dict, *embeddings: torch.Tensor) -> torch.Tensor:
        # (B, dim) queries, (B, dim) positives[, (B·k, dim) hard negatives]
        if self.loss_fn.mask_duplicates:  # the loss needs to know which passages are the same text
            return self.loss_fn(*embeddings, p_keys=batch["passage_keys"], neg_keys=batch.get("negative_keys"))
        return self.loss_fn(*embeddings)

    def batch_languages(self, batch: dict) -> dict[str, list[str]]:
        return {"query langs": batch["query_langs"], "passage langs": batch["passage_langs"]}

    def is_monolingual(self, batch: dict) -> bool:
        return batch["query_langs"][0] == batch["passage_langs"][0]

    def checkpoint_state(self) -> dict:
        return {"encoder": dict(self.encoder.init_config)}  # rebuilds the encoder: evaluate / export need nothing else

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._frozen_keys:
            for k in self._frozen_keys:
                checkpoint["state_dict"].pop(k, None)
            checkpoint["frozen_prefix"] = {
                "keys": self._frozen_keys,
                "digest": self.frozen_digest(),
                "train_layers": self.encoder.train_layers,
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_frozen_prefix(checkpoint, self.encoder.state_dict(), prefix="encoder.", where="resume")
        missing = set(self.state_dict()) - set(checkpoint["state_dict"]) - set(self._frozen_keys)
        if self._frozen_keys and missing:
            raise ValueError(f"resume: checkpoint lacks trainable weights {sorted(missing)[:5]} (another model config?)")
        super().on_load_checkpoint(checkpoint)

    # ---------------------------------------------------------------- validation
    def validation_step(self, batch: dict, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeds one batch of evaluation texts; returns (text indices (b,), embeddings (b, dim)) on the CPU,
        which :class:`~hybrid_retrieval.tasks.text.evaluators.LareqaEvaluator` collects and scores."""
        index, is_q = batch["index"], batch["is_query"]  # (b,), (b,) bool: questions are encoded as queries
        feats = batch["features"]
        emb = torch.empty((index.shape[0], self.encoder.dim), device=index.device)
        for kind, sel in (("query", is_q), ("passage", ~is_q)):
            if sel.any():
                emb[sel] = self.encoder.encode({k: v[sel] for k, v in feats.items()}, kind).float()
        return index.cpu(), emb.detach().cpu()
