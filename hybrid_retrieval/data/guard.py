"""Zero-shot guard: refuse to train on the benchmark that is evaluated.

Compares the training items with the evaluation dataset on four keys: question ids, article titles,
normalised question texts and normalised answer sentences (positives vs. candidate sentences).

The training side's keys are compared as 64-bit hashes of the (normalised) strings. For an item store they are
computed once per store and normalisation version and kept in the cache beside it (``guard/{store key}-v{N}``): the
next job, sweep job or DDP rank reads them instead of normalising every training text again (one process builds
them; the others wait and read, as for the store itself). Counts and examples are those of the string sets (the
examples are the evaluation side's strings; two different keys sharing a 64-bit hash is a 1e-8 chance at 1e6 keys).
"""

from __future__ import annotations

import functools
import hashlib
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybrid_retrieval.common.cache_entry import ensure_entry
from hybrid_retrieval.common.paths import cache_root
from hybrid_retrieval.data.item_store import ItemStore
from hybrid_retrieval.data.lareqa import LareqaDataset

#: Bump when :func:`normalise` changes: cached training keys of another normalisation are then not reused.
GUARD_KEYS_VERSION = 1
KEYS = ("question_ids", "article_titles", "question_texts", "answer_sentences")
_SEP = "\x00"  # joins a batch of texts into one string (NFKC never composes across it); texts holding it go one by one


@functools.cache
def _punct_or_symbol() -> np.ndarray:
    """(0x110000,) bool: the code points of Unicode categories P* and S* (punctuation, symbols), built once (~0.2 s)."""
    lut = np.zeros(sys.maxunicode + 1, dtype=bool)
    lut[[cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] in "PS"]] = True
    return lut


def _blank_punctuation(text: str) -> str:
    """Every punctuation or symbol code point replaced by a space, vectorised over the code points (numpy)."""
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).copy()
    cps[_punct_or_symbol()[cps]] = 32
    return cps.tobytes().decode("utf-32-le", "surrogatepass")


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation and symbols removed (combining marks kept: Hindi, Thai), whitespace collapsed."""
    return " ".join(_blank_punctuation(unicodedata.normalize("NFKC", text).casefold()).split())


def normalise_all(texts: Iterable[str], batch: int = 20000) -> set[str]:
    """``{normalise(t) for t in texts}``, a batch of texts at a time as one string: the per-text Python work of the
    guard at scale is one split and join (the reference is tests/test_guard_keys.py's per-character loop)."""
    out: set[str] = set()
    chunk: list[str] = []

    def flush() -> None:
        if any(_SEP in t for t in chunk):
            out.update(normalise(t) for t in chunk)
        else:
            joined = _blank_punctuation(unicodedata.normalize("NFKC", _SEP.join(chunk)).casefold())
            out.update(" ".join(t.split()) for t in joined.split(_SEP))
        chunk.clear()

    for text in texts:
        chunk.append(text)
        if len(chunk) >= batch:
            flush()
    if chunk:
        flush()
    return out


@dataclass
class OverlapReport:
    train_name: str
    eval_name: str
    counts: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def overlaps(self) -> bool:
        return any(self.counts.values())

    def summary_line(self) -> str:
        """The overlaps in one line (for an error message)."""
        found = [f"{key} {n} (e.g. {str(self.examples[key][0])[:40]!r})" for key, n in self.counts.items() if n]
        return f"zero-shot guard: train={self.train_name} overlaps eval={self.eval_name}: " + "; ".join(found)

    def describe(self) -> str:
        lines = [f"zero-shot guard: train={self.train_name} vs eval={self.eval_name}"]
        for key, n in self.counts.items():
            tr, ev = self.sizes[key]
            ex = f"  e.g. {self.examples[key][:3]}" if n else ""
            lines.append(f"  {key:<18} overlap {n:>6}  (train {tr}, eval {ev}){ex}")
        lines.append("  verdict: " + ("OVERLAP" if self.overlaps else "disjoint (zero-shot holds)"))
        return "\n".join(lines)


def string_hashes(strings: Iterable[str]) -> np.ndarray:
    """(n,) uint64 in input order: the first 8 bytes of each string's blake2b digest."""
    digests = (hashlib.blake2b(x.encode("utf-8"), digest_size=8).digest() for x in strings)
    return np.fromiter((int.from_bytes(d, "little") for d in digests), dtype=np.uint64)


def key_hashes(strings: Iterable[str]) -> np.ndarray:
    """Sorted unique (n,) uint64 hashes of ``strings`` (:func:`string_hashes`)."""
    return np.unique(string_hashes(strings))


def sorted_contains(sorted_keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(len(values),) bool: which values are in ``sorted_keys`` (sorted, unique), by binary search. ``np.isin`` would
    re-sort or hash the training side's millions of keys on every check (17 s at 9M keys) to look up a few thousand."""
    at = np.searchsorted(sorted_keys, values)
    found = np.zeros(len(values), dtype=bool)
    inside = at < len(sorted_keys)
    found[inside] = sorted_keys[at[inside]] == values[inside]
    return found


def _keys_of_items(items) -> dict[str, np.ndarray]:
    """The four keys of a list of items (or any iterable of :class:`ParallelItem`), hashed."""
    items = list(items)
    return {
        "question_ids": key_hashes(it.item_id for it in items),
        "article_titles": key_hashes(it.title for it in items if it.title),
        "question_texts": key_hashes(normalise_all(v.query for it in items for v in it.views.values())),
        "answer_sentences": key_hashes(normalise_all(v.positive for it in items for v in it.views.values())),
    }


def _keys_of_store(store: ItemStore) -> dict[str, np.ndarray]:
    """The same, read column-wise from the store's Arrow table (no item objects) with a progress bar; each chunk's
    keys are hashed at once, so memory holds 8 bytes per distinct key, not the strings (1M items × 9 languages:
    ~150 MB of hashes instead of ~2 GB of sets of normalised texts)."""
    from tqdm.auto import tqdm  # noqa: PLC0415 - the progress bar of a cold build only

    parts: dict[str, list[np.ndarray]] = {key: [] for key in KEYS}
    bar = tqdm(total=len(store), unit="item", unit_scale=True, desc="zero-shot guard keys", disable=None)
    for chunk in store.column_batches(["id", "title", "query", "positive"]):
        parts["question_ids"].append(key_hashes(chunk["id"]))
        parts["article_titles"].append(key_hashes({t for t in chunk["title"] if t}))
        parts["question_texts"].append(key_hashes(normalise_all(q for row in chunk["query"] for q in row)))
        parts["answer_sentences"].append(key_hashes(normalise_all(p for row in chunk["positive"] for p in row)))
        bar.update(len(chunk["id"]))
    bar.close()
    return {key: np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, np.uint64) for key, arrays in parts.items()}


def train_keys(items) -> dict[str, np.ndarray]:
    """The training side's four keys, hashed; for an :class:`ItemStore` built once per store and reused."""
    if not isinstance(items, ItemStore):
        return _keys_of_items(items)

    def build(folder: Path) -> None:
        np.savez(folder / "keys.npz", **_keys_of_store(items))

    entry = ensure_entry(cache_root() / "guard" / f"{items.folder.name}-v{GUARD_KEYS_VERSION}", build, "zero-shot guard keys")
    with np.load(entry / "keys.npz") as data:
        return {k: data[k] for k in KEYS}


def check_zero_shot(items, eval_ds: LareqaDataset, train_name: str = "train") -> OverlapReport:
    """Overlaps of the training items (a list or an item store) with ``eval_ds`` on the four keys."""
    splits = list(eval_ds.splits.values())
    evald = {
        "question_ids": {q.qid for split in splits for q in split.questions},
        "article_titles": {q.title for split in splits for q in split.questions if q.title},
        "question_texts": normalise_all(q.text for split in splits for q in split.questions),
        "answer_sentences": normalise_all(c.text for split in splits for c in split.candidates),
    }
    train = train_keys(items)
    report = OverlapReport(train_name, eval_ds.name)
    for key in KEYS:
        strings = sorted(evald[key])
        common = sorted_contains(train[key], string_hashes(strings))  # (n_eval,) an evaluation key the training side has
        report.counts[key] = int(common.sum())
        report.sizes[key] = (len(train[key]), len(strings))
        report.examples[key] = [x for x, c in zip(strings, common, strict=True) if c][:3]
    return report
