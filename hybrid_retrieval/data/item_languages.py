"""Which training item has which language: a boolean matrix, the one thing the sampler needs of the data at any
size (no Python object per item), and its builder for stores written item by item."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ItemLanguages:
    """Which item has which language, as a boolean matrix: what the sampler needs of the data, at any size
    (a million items × 9 languages is 9 MB, with no Python object per item)."""

    names: tuple[str, ...]  # sorted language codes, the matrix's columns
    matrix: np.ndarray  # (n_items, n_languages) bool

    @classmethod
    def from_lists(cls, item_languages: Iterable[Sequence[str]]) -> ItemLanguages:
        builder = ItemLanguagesBuilder()
        for langs in item_languages:
            builder.add(langs)
        return builder.build()


class ItemLanguagesBuilder:
    """Collects an :class:`ItemLanguages` item by item in compact arrays (10 bytes per item-language), so a store
    of a million items × 9 languages is built without a Python list per item (~1 GB at that size)."""

    def __init__(self):
        self._col: dict[str, int] = {}  # language -> column, in first-seen order (sorted in build)
        self._rows, self._cols = array("q"), array("h")  # one entry per (item, language)
        self.n = 0

    def add(self, languages: Sequence[str]) -> None:
        """The next item's languages."""
        for lang in languages:
            self._rows.append(self.n)
            self._cols.append(self._col.setdefault(lang, len(self._col)))
        self.n += 1

    def build(self) -> ItemLanguages:
        names = tuple(sorted(self._col))
        to_sorted = np.zeros(len(self._col), dtype=np.int64)  # first-seen column -> sorted column
        for name, j in self._col.items():
            to_sorted[j] = names.index(name)
        matrix = np.zeros((self.n, len(names)), dtype=bool)
        rows = np.frombuffer(self._rows, dtype=np.int64) if self._rows else np.zeros(0, np.int64)
        cols = np.frombuffer(self._cols, dtype=np.int16) if self._cols else np.zeros(0, np.int16)
        matrix[rows, to_sorted[cols]] = True
        return ItemLanguages(names, matrix)
