"""Hybrid batching for ``SentenceTransformerTrainer``: a batch sampler, its data collator and the long data layout.

The training data is one row per (item, language): ``id``, ``language``, ``anchor`` (the query), ``positive``
(its answer in that language) and optionally ``negative`` — 9 rows for an item in 9 languages, never one per
language PAIR (81). A cross-lingual example pairs two rows of one item (the query row in X, the passage row in Y),
so the sampler yields, for each per-device batch of B examples, the B query rows followed by the B passage rows,
and :class:`HybridPairCollator` turns those 2B rows back into B (anchor, positive[, negative]) examples.

The draws are this project's :class:`~hybrid_retrieval.data.sampler.HybridBatchSampler` on the same item ×
language table and seed (α, stratified or Bernoulli schedule, ``cross_mode`` batch / example, language temperature,
``min_pool``), so an ST run sees the batches a ``python -m hybrid_retrieval.train`` run sees. Under DDP each global
batch (per-device batch × world size, one language setting) is yielded as ``world_size`` consecutive slices, which
accelerate hands out round-robin: rank r trains on slice r, as ST's own samplers are split.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pyarrow.compute as pc
import torch

from hybrid_retrieval.data.item_languages import ItemLanguages
from hybrid_retrieval.data.sampler import HybridBatchSampler

try:  # sentence-transformers >= 6
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
except ImportError:  # pragma: no cover - sentence-transformers 3-5
    from sentence_transformers.data_collator import SentenceTransformerDataCollator
    from sentence_transformers.sampler import DefaultBatchSampler


def item_table(dataset, id_column: str = "id", language_column: str = "language") -> tuple[ItemLanguages, np.ndarray]:
    """(the item × language table in order of each id's first row, (items, languages) row index, -1 where absent),
    read from the two columns through Arrow (no Python object per row)."""
    table = dataset.select_columns([id_column, language_column]).with_format("arrow")[:]
    ids = pc.dictionary_encode(table.column(id_column).combine_chunks())  # codes in order of first appearance
    langs = pc.dictionary_encode(table.column(language_column).combine_chunks())
    names = sorted(langs.dictionary.to_pylist())
    remap = np.argsort(np.argsort(langs.dictionary.to_pylist()))  # dictionary order -> sorted order
    item = ids.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    lang = remap[langs.indices.to_numpy(zero_copy_only=False)]
    rows = np.full((len(ids.dictionary), len(names)), -1, dtype=np.int32 if len(item) < 2**31 else np.int64)
    if len(np.unique(item * len(names) + lang)) != len(item):
        raise ValueError(f"the dataset has two rows for one ({id_column}, {language_column}): one row per item and language")
    rows[item, lang] = np.arange(len(item), dtype=rows.dtype)
    return ItemLanguages(tuple(names), rows >= 0), rows


class HybridSTBatchSampler(DefaultBatchSampler):
    """``SentenceTransformerTrainingArguments(batch_sampler=hybrid_batch_sampler(alpha=0.5, ...))``.

    ``batch_size`` is ST's per-device batch; the hybrid batch (one language or pair) is per-device × world size.
    ``batches_per_epoch``: global batches an epoch (default: items / global batch, as the Lightning path).
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        drop_last: bool = True,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        *,
        alpha: float = 0.5,
        alpha_schedule: str = "bernoulli",
        cross_mode: str = "batch",
        language_temperature: float = 0.0,
        batches_per_epoch: int | None = None,
        min_pool: int | None = None,
        languages: list[str] | None = None,
        world_size: int | None = None,
        id_column: str = "id",
        language_column: str = "language",
    ):
        super().__init__(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        if world_size is None:
            ready = torch.distributed.is_available() and torch.distributed.is_initialized()
            world_size = torch.distributed.get_world_size() if ready else 1
        self.world_size, self.per_device = int(world_size), int(batch_size)
        table, self.rows = item_table(dataset, id_column, language_column)
        self.hybrid = HybridBatchSampler(
            table,
            batch_size=self.per_device * self.world_size,
            alpha=alpha,
            languages=languages,
            cross_mode=cross_mode,
            language_temperature=language_temperature,
            batches_per_epoch=batches_per_epoch,
            alpha_schedule=alpha_schedule,
            min_pool=min_pool,
            seed=seed,
        )
        self._col = {name: j for j, name in enumerate(table.names)}

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.hybrid.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.hybrid) * self.world_size  # per-device batches; accelerate gives each rank 1 / world of them

    def __iter__(self) -> Iterator[list[int]]:
        col = self._col
        for batch in self.hybrid:  # a global batch: Examples (item, query language, passage language)
            items = np.fromiter((e.item for e in batch), dtype=np.int64, count=len(batch))
            q = self.rows[items, [col[e.query_lang] for e in batch]]
            p = self.rows[items, [col[e.passage_lang] for e in batch]]
            for r in range(self.world_size):
                lo, hi = r * self.per_device, (r + 1) * self.per_device
                yield [*q[lo:hi].tolist(), *p[lo:hi].tolist()]  # B query rows, then their B passage rows


def hybrid_batch_sampler(**options):
    """The factory ``SentenceTransformerTrainingArguments(batch_sampler=...)`` calls with (dataset, batch_size,
    drop_last, valid_label_columns, generator, seed); ``options`` are :class:`HybridSTBatchSampler`'s keywords."""
    return functools.partial(HybridSTBatchSampler, **options)


class HybridPairCollator(SentenceTransformerDataCollator):
    """Turns the sampler's 2B rows (B query rows, then B passage rows) into B examples ``anchor`` (from the query
    row), ``positive`` (from the passage row) and, when the data has it, ``negative`` (the passage row's), then
    preprocesses them as ST's own collator does (prompts included)."""

    def __call__(self, features: list[dict]) -> dict:
        if len(features) % 2:
            raise ValueError("HybridPairCollator needs the rows of HybridSTBatchSampler (query rows, then passage rows)")
        half = len(features) // 2
        pairs = []
        for query_row, passage_row in zip(features[:half], features[half:], strict=True):
            pair = {"anchor": query_row["anchor"], "positive": passage_row["positive"]}
            if passage_row.get("negative") is not None:
                pair["negative"] = passage_row["negative"]
            pairs.append(pair)
        return super().__call__(pairs)


def hybrid_collator(model, **kwargs) -> HybridPairCollator:
    """The collator for ``model`` (``preprocess_fn`` in sentence-transformers >= 6, ``tokenize_fn`` before)."""
    try:
        return HybridPairCollator(preprocess_fn=model.preprocess, **kwargs)
    except TypeError:  # pragma: no cover - sentence-transformers < 6
        return HybridPairCollator(tokenize_fn=model.tokenize, **kwargs)
