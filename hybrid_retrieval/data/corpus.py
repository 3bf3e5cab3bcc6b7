"""The evaluation benchmark as flat, language-grouped lists of texts to encode (data, not evaluation:
the data module builds it, :mod:`hybrid_retrieval.evaluation` consumes it; data never imports evaluation)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hybrid_retrieval.data.lareqa import LareqaDataset


@dataclass
class EvalCorpus:
    """Flat lists of what to encode, grouped by language (candidates contiguous per language)."""

    name: str
    languages: list[str]
    q_texts: list[str]
    q_lang: np.ndarray  # (n_q,) language index
    q_ids: list[str]
    c_texts: list[str]
    c_lang: np.ndarray  # (n_c,) language index
    c_ids: list[str]
    gold: dict[str, dict[int, int]]  # qid -> {language index: global candidate index}
    c_offsets: np.ndarray = field(default=None)  # (n_lang + 1,) candidate slice per language

    @classmethod
    def from_dataset(cls, dataset: LareqaDataset, with_context: bool = False) -> EvalCorpus:
        langs = dataset.languages
        q_texts, q_lang, q_ids, c_texts, c_lang, c_ids = [], [], [], [], [], []
        gold: dict[str, dict[int, int]] = {}
        offsets = [0]
        for li, lang in enumerate(langs):
            split = dataset.splits[lang]
            base = len(c_texts)
            for ci, cand in enumerate(split.candidates):
                c_texts.append(split.candidate_text(ci, with_context))
                c_lang.append(li)
                c_ids.append(cand.cid)
            offsets.append(len(c_texts))
            for q in split.questions:
                q_texts.append(q.text)
                q_lang.append(li)
                q_ids.append(q.qid)
                gold.setdefault(q.qid, {})[li] = base + q.answer
        return cls(
            dataset.name, langs, q_texts, np.array(q_lang), q_ids, c_texts, np.array(c_lang), c_ids, gold, np.array(offsets)
        )
