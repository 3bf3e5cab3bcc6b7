"""Zero-shot guard: refuse to train on the benchmark that is evaluated.

Compares the training items with the evaluation dataset on four keys: question ids, article titles,
normalised question texts and normalised answer sentences (positives vs. candidate sentences).
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from hybrid_retrieval.data.lareqa import LareqaDataset
from hybrid_retrieval.data.pairs import ParallelItem

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


def check_zero_shot(items: list[ParallelItem], eval_ds: LareqaDataset, train_name: str = "train") -> OverlapReport:
    splits = list(eval_ds.splits.values())
    ev_qids = {q.qid for split in splits for q in split.questions}
    ev_titles = {q.title for split in splits for q in split.questions if q.title}
    ev_q = normalise_all(q.text for split in splits for q in split.questions)
    ev_s = normalise_all(c.text for split in splits for c in split.candidates)
    tr_qids = {it.item_id for it in items}
    tr_titles = {it.title for it in items if it.title}
    tr_q = normalise_all(v.query for it in items for v in it.views.values())
    tr_s = normalise_all(v.positive for it in items for v in it.views.values())
    report = OverlapReport(train_name, eval_ds.name)
    for key, tr, ev in (
        ("question_ids", tr_qids, ev_qids),
        ("article_titles", tr_titles, ev_titles),
        ("question_texts", tr_q, ev_q),
        ("answer_sentences", tr_s, ev_s),
    ):
        common = tr & ev
        report.counts[key] = len(common)
        report.sizes[key] = (len(tr), len(ev))
        report.examples[key] = sorted(common)[:3]
    return report
