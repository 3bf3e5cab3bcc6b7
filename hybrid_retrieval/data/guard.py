"""Zero-shot guard: refuse to train on the benchmark that is evaluated.

Compares the training items with the evaluation dataset on four keys: question ids, article titles,
normalised question texts and normalised answer sentences (positives vs. candidate sentences).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from hybrid_retrieval.data.lareqa import LareqaDataset
from hybrid_retrieval.data.pairs import ParallelItem

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation and symbols removed (combining marks kept: Hindi, Thai), whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return _SPACE.sub(" ", text).strip()


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
    ev_qids, ev_titles, ev_q, ev_s = set(), set(), set(), set()
    for split in eval_ds.splits.values():
        for q in split.questions:
            ev_qids.add(q.qid)
            ev_q.add(normalise(q.text))
            if q.title:
                ev_titles.add(q.title)
        ev_s.update(normalise(c.text) for c in split.candidates)
    tr_qids = {it.item_id for it in items}
    tr_titles = {it.title for it in items if it.title}
    tr_q = {normalise(v.query) for it in items for v in it.views.values()}
    tr_s = {normalise(v.positive) for it in items for v in it.views.values()}
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
