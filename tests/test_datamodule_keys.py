"""Passage text keys for loss.mask_duplicates: equal text <=> equal key, carried through the collator."""

from __future__ import annotations

import pytest

from hybrid_retrieval.data.sampler import Example
from hybrid_retrieval.tasks.text.batches import PairCollator, PairDataset
from hybrid_retrieval.tasks.text.data import TextDataModule


@pytest.mark.parametrize("hard_negatives", [0, 2])
def test_keys_follow_text_identity_and_reach_the_batch(tiny_data, tiny_model_dir, hard_negatives):
    from hybrid_retrieval.models.encoder import DualEncoder

    train, evald = tiny_data
    dm = TextDataModule(
        train={"root": str(train), "name": "tiny-train"},
        eval={"root": str(evald), "name": "tiny-eval"},
        batch_size=4,
        hard_negatives=hard_negatives,
        tokenize="upfront",  # the keys of the up-front path (the lazy path hashes texts: tests/test_lazy_tokenization.py)
    )
    dm.attach_encoder(DualEncoder(name=str(tiny_model_dir), max_length=32))
    dm.setup("fit")
    texts, keys = [], []
    for item, row in zip(dm.items, dm.tokenized, strict=True):
        for lang, view in row.items():
            texts += [item.views[lang].positive, *item.views[lang].negatives]
            keys += [view.positive_key, *view.negative_keys]
    pairs = list(zip(texts, keys, strict=True))
    assert all((ta == tb) == (ka == kb) for ta, ka in pairs for tb, kb in pairs)
    positive_keys = [view.positive_key for row in dm.tokenized for view in row.values()]
    assert len(set(positive_keys)) < len(positive_keys)  # not vacuous: the fixture's questions share answers
    # The collator hands the positives' keys (and the hard negatives' keys) to the loss.
    ds = PairDataset(dm.tokenized)
    lang = next(iter(dm.tokenized[0]))
    rows = [ds[Example(i, lang, lang)] for i in range(4) if lang in dm.tokenized[i]]
    batch = PairCollator(pad_id=1, hard_negatives=hard_negatives)(rows)
    assert batch["passage_keys"].tolist() == [r[2].positive_key for r in rows]
    if hard_negatives:
        assert batch["negative_keys"].shape == (len(rows) * hard_negatives,)
        for i, r in enumerate(rows):
            want = [r[2].negative_keys[j % len(r[2].negative_keys)] for j in range(hard_negatives)]
            assert batch["negative_keys"][i * hard_negatives : (i + 1) * hard_negatives].tolist() == want


def test_borrowed_negative_takes_the_borrowed_positives_key():
    from hybrid_retrieval.tasks.text.batches import TokenizedView

    views = [TokenizedView([5], [6], [], positive_key=10), TokenizedView([7], [8], [], positive_key=11)]
    rows = [(Example(i, "en", "en"), v.query, v) for i, v in enumerate(views)]
    batch = PairCollator(pad_id=1, hard_negatives=1)(rows)
    assert batch["negative_keys"].tolist() == [11, 10]  # each borrowed the next example's positive
    assert batch["negative"]["input_ids"][:, 0].tolist() == [8, 6]
