"""The text task's rows: training views (token ids, or frozen-prefix states), the datasets the hybrid sampler indexes,
the collator that pads a batch; evaluation texts sharded by length over ranks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from hybrid_retrieval.common.padding import pad_rows
from hybrid_retrieval.data.pairs import ParallelItem
from hybrid_retrieval.data.sampler import Example


@dataclass
class TokenizedView:
    """One (item, language) view as model rows: token-id lists, or prefix-state arrays with the prefix cache."""

    query: list[int] | np.ndarray
    positive: list[int] | np.ndarray
    negatives: list
    positive_key: int = -1  # text identity (equal text = equal key) for loss.mask_duplicates
    negative_keys: tuple[int, ...] = ()


class PairDataset(Dataset):
    """Indexed by :class:`Example`: returns the tokenized (query, positive, negatives) of that setting."""

    def __init__(self, tokenized: list[dict[str, TokenizedView]]):
        self.tokenized = tokenized

    def __len__(self) -> int:
        return len(self.tokenized)

    def __getitem__(self, ex: Example):
        return ex, self.tokenized[ex.item][ex.query_lang].query, self.tokenized[ex.item][ex.passage_lang]


def text_key(text: str) -> int:
    """A stable 63-bit identity of a passage text (equal text, equal key): what loss.mask_duplicates compares."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") >> 1


class LazyPairDataset(Dataset):
    """Indexed by :class:`Example` like :class:`PairDataset`, but tokenizes the example's texts when it is drawn:
    nothing is tokenized up front, so memory holds the texts only (the batches and the first loss are the same as
    with up-front tokenization: the same tokenizer call per text, keys equal exactly where texts are equal)."""

    def __init__(self, items: list[ParallelItem], token_ids):
        self.items, self.token_ids = items, token_ids

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, ex: Example):
        views = self.items[ex.item].views
        q, p = views[ex.query_lang], views[ex.passage_lang]
        query = self.token_ids([q.query], "query")[0]
        passages = self.token_ids([p.positive, *p.negatives], "passage")
        view = TokenizedView(query, passages[0], passages[1:], text_key(p.positive), tuple(text_key(t) for t in p.negatives))
        return ex, query, view


class PairCollator:
    """Pads queries, positives and exactly ``hard_negatives`` negatives per example.

    An example with fewer negatives repeats its own; one with none borrows the next example's
    positive (already an in-batch negative, so no false negative is introduced).
    """

    def __init__(self, pad_id: int, hard_negatives: int):
        self.pad_id, self.k = pad_id, hard_negatives

    def __call__(self, rows) -> dict:
        examples = [r[0] for r in rows]
        out = {
            "query": pad_rows([r[1] for r in rows], self.pad_id),
            "passage": pad_rows([r[2].positive for r in rows], self.pad_id),
            "passage_keys": torch.tensor([r[2].positive_key for r in rows]),  # (B,) same text = same key
            "items": [e.item for e in examples],  # item indices: what the sampler drew (tests, debugging)
            "query_langs": [e.query_lang for e in examples],
            "passage_langs": [e.passage_lang for e in examples],
        }
        if self.k > 0:
            negs, keys = [], []
            for i, (_, _, view) in enumerate(rows):
                own = view.negatives
                for j in range(self.k):
                    if own:
                        negs.append(own[j % len(own)])
                        keys.append(view.negative_keys[j % len(own)] if view.negative_keys else -1)
                    else:
                        borrowed = rows[(i + 1) % len(rows)][2]
                        negs.append(borrowed.positive)
                        keys.append(borrowed.positive_key)
            out["negative"] = pad_rows(negs, self.pad_id)
            out["negative_keys"] = torch.tensor(keys)  # (B·k,)
        return out


class EvalTextDataset(Dataset):
    """Unique evaluation texts (questions then candidates), indexed by position."""

    def __init__(self, ids: list[list[int]]):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return i, self.ids[i]


class EvalCollator:
    """Pads evaluation rows; rows below ``n_queries`` are questions (encoded as queries), the rest candidates."""

    def __init__(self, pad_id: int, n_queries: int):
        self.pad_id, self.n_queries = pad_id, int(n_queries)

    def __call__(self, rows) -> dict:
        index = torch.tensor([r[0] for r in rows])  # (b,)
        return {"index": index, "is_query": index < self.n_queries, "features": pad_rows([r[1] for r in rows], self.pad_id)}
