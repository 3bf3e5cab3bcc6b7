"""Parallel training items: one question id with, per language, a query, a positive and negatives.

A :class:`ParallelItem` is what the hybrid sampler draws. For a batch setting (X, Y) an item gives the
pair (query in X, positive passage in Y): X = Y is a monolingual pair, X != Y a cross-lingual one.
Items come from a LAReQA dataset (:func:`items_from_lareqa`) or from the generic JSONL format
(:func:`load_jsonl_items`) documented in docs/data.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hybrid_retrieval.common.errors import DataFormatError
from hybrid_retrieval.data.lareqa import LareqaDataset


@dataclass(frozen=True)
class View:
    """One language of an item."""

    query: str
    positive: str
    negatives: tuple[str, ...] = ()


@dataclass
class ParallelItem:
    item_id: str
    views: dict[str, View]
    title: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return sorted(self.views)


def items_from_lareqa(dataset: LareqaDataset, with_context: bool = False, hard_negatives: int = 0) -> list[ParallelItem]:
    """Turn a LAReQA dataset into parallel items, one per question id.

    ``with_context``: the positive passage is "sentence + paragraph" (LAReQA's USE-QA encodes the
    candidate with its paragraph as context); the default, bare sentence, matches how the paper
    (arXiv 2408.10536) and this project's evaluation encode candidates.
    ``hard_negatives``: up to k other sentences of the answer's paragraph (closest first).
    """
    items: dict[str, ParallelItem] = {}
    for lang, split in dataset.splits.items():
        for q in split.questions:
            negatives: list[str] = []
            if hard_negatives > 0:
                siblings = _siblings(split, q.answer)
                siblings.sort(key=lambda i: abs(i - q.answer))
                negatives = [split.candidate_text(i, with_context) for i in siblings[:hard_negatives]]
            view = View(q.text, split.candidate_text(q.answer, with_context), tuple(negatives))
            item = items.setdefault(q.qid, ParallelItem(q.qid, {}, q.title))
            item.views[lang] = view
    return list(items.values())


def _siblings(split, answer: int) -> list[int]:
    """Indices of the other sentences in the answer's paragraph (candidates are stored paragraph by paragraph)."""
    para = split.candidates[answer].paragraph
    lo = answer
    while lo > 0 and split.candidates[lo - 1].paragraph == para:
        lo -= 1
    hi = answer
    while hi + 1 < len(split.candidates) and split.candidates[hi + 1].paragraph == para:
        hi += 1
    return [i for i in range(lo, hi + 1) if i != answer]


def load_jsonl_items(path: str | Path, languages: list[str] | None = None) -> list[ParallelItem]:
    """Read the generic parallel training format, one JSON object per line::

        {"id": "q1", "title": "optional", "langs": {
            "en": {"query": "...", "positive": "...", "negatives": ["...", "..."]},
            "de": {"query": "...", "positive": "..."}}}

    ``negatives`` is optional. Lines that are blank are skipped; anything else malformed is an error
    naming the file, the line and the field. (Large files: :mod:`hybrid_retrieval.data.item_store` streams the
    same parser into a memory-mapped Arrow table.)
    """
    items = list(iter_jsonl_items(path, languages))
    if not items:
        wanted = f" with a language in {list(languages)}" if languages is not None else ""
        raise DataFormatError(path, "file", f"at least one parallel item{wanted} (the file has none)")
    return items


def _view(path: Path, where: str, v) -> View:
    """One language's ``{query, positive, negatives}`` of a JSONL item, checked (every language is, kept or not)."""
    if not isinstance(v, dict):
        raise DataFormatError(path, where, "an object with query and positive")
    for key in ("query", "positive"):
        if not isinstance(v.get(key), str) or not v[key].strip():
            raise DataFormatError(path, f"{where}.{key}", "a non-empty string")
    negs = v.get("negatives", [])
    if not isinstance(negs, list) or not all(isinstance(n, str) for n in negs):
        raise DataFormatError(path, f"{where}.negatives", "a list of strings")
    return View(v["query"], v["positive"], tuple(negs))


def iter_jsonl_items(path: str | Path, languages: list[str] | None = None) -> Iterator[ParallelItem]:
    """The items of a parallel JSONL file, one at a time, validated as :func:`load_jsonl_items` describes."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, "file", "an existing JSONL file of parallel items")
    seen: set[str] = set()
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            where = f"line {line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(path, where, f"UTF-8 text (byte {err.start} of the line is not)") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(path, where, f"one JSON object per line ({err.msg})") from err
            if not isinstance(obj, dict) or not isinstance(obj.get("id"), str | int):
                raise DataFormatError(path, where, 'an object with an "id" (string)')
            item_id = str(obj["id"])
            if item_id in seen:
                raise DataFormatError(path, f"{where} (id {item_id})", "unique ids")
            seen.add(item_id)
            langs = obj.get("langs")
            if not isinstance(langs, dict) or not langs:
                raise DataFormatError(path, f"{where} (id {item_id})", 'a non-empty "langs" object {lang: {query, positive}}')
            views = {lang: _view(path, f"{where} (id {item_id}).langs.{lang}", v) for lang, v in langs.items()}
            views = {lang: v for lang, v in views.items() if languages is None or lang in languages}
            if views:
                yield ParallelItem(item_id, views, str(obj.get("title", "")))
