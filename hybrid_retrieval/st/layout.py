"""The long layout the sentence-transformers sampler reads: one row per (item, language) — ``id``, ``language``,
``anchor``, ``positive`` and, when any item has one, ``negative`` (its first hard negative) — written from every
training format this project reads, streamed into Arrow (no row list in memory)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import datasets

from hybrid_retrieval.data.item_store import iter_source
from hybrid_retrieval.data.lareqa import load_lareqa
from hybrid_retrieval.data.pairs import ParallelItem, items_from_lareqa


def _rows(items: Iterable[ParallelItem], negatives: bool) -> Iterator[dict]:
    for item in items:
        for lang in item.languages:
            view = item.views[lang]
            row = {"id": item.item_id, "language": lang, "anchor": view.query, "positive": view.positive}
            if negatives:
                row["negative"] = view.negatives[0] if view.negatives else None
            yield row


def long_layout(items: Iterable[ParallelItem] | list[ParallelItem], negatives: bool = False) -> datasets.Dataset:
    """``items`` (any :class:`ParallelItem` iterable, in the order the Lightning path reads them) in the long layout."""
    features = {"id": "string", "language": "string", "anchor": "string", "positive": "string"}
    if negatives:
        features["negative"] = "string"
    schema = datasets.Features({k: datasets.Value(v) for k, v in features.items()})
    items = list(items) if not isinstance(items, list) else items  # from_generator pickles its arguments
    return datasets.Dataset.from_generator(_rows, gen_kwargs={"items": items, "negatives": negatives}, features=schema)


def long_layout_from(source, fmt: str = "auto", languages: list[str] | None = None, hard_negatives: int = 0) -> datasets.Dataset:
    """The long layout of a training source in any format ``python -m hybrid_retrieval.train`` reads: a LAReQA folder
    (``fmt="lareqa"``), a JSONL file, a Parquet file or ``save_to_disk`` folder, aligned per-language files (a
    ``{lang: path}`` mapping), or a hub dataset (:class:`~hybrid_retrieval.data.item_store.HubDataset`)."""
    folder = Path(source) if isinstance(source, str | Path) else None
    saved = folder is not None and (folder / "dataset_info.json").is_file()  # a datasets.save_to_disk folder
    if fmt == "lareqa" or (fmt == "auto" and folder is not None and folder.is_dir() and not saved and any(folder.glob("*.json"))):
        items = items_from_lareqa(load_lareqa(source, languages), hard_negatives=hard_negatives)
    else:
        items = list(iter_source(source, languages))
    return long_layout(items, negatives=any(v.negatives for it in items for v in it.views.values()))
