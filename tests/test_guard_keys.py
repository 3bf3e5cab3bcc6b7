"""The zero-shot guard's text keys at scale: the vectorised normalisation equals the per-character reference on
every text (hypothesis over all of Unicode, and the scripts that matter: Hindi and Thai combining marks, full-width
punctuation), in one batch as text by text, and the guard's verdicts on the real XQuAD-R / MLQA-R pair are the
reference's."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybrid_retrieval.data.guard import check_zero_shot, normalise, normalise_all


def reference(text: str) -> str:
    """The guard's definition, one character at a time (the implementation before it was vectorised)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return re.sub(r"\s+", " ", text).strip()


SAMPLES = [
    "How long is the Danube?",
    "हिन्दी में प्रश्न क्या है?",  # Devanagari with combining vowel signs (Mn / Mc): kept
    "ภาษาไทย ที่นี่ มี อะไร",  # Thai combining marks: kept
    "（全角）！？ＡＢＣ１２３",  # full-width punctuation and letters: NFKC folds, punctuation goes
    "naïve café — «quote» $100 ½ ℃",
    "ΣΊΣΥΦΟΣ ΣΊΣΥΦΟΣ;",  # final sigma under case folding
    "tab\tnew\nline\u00a0nbsp\u2003em",
    "a\x00b",  # the batch separator inside a text: handled text by text
    "",
    "   ",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_normalise_equals_the_reference(text):
    assert normalise(text) == reference(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(), max_size=40), max_size=30))
def test_batched_keys_equal_the_reference_on_any_unicode(texts):
    assert normalise_all(texts, batch=7) == {reference(t) for t in texts}
    assert all(normalise(t) == reference(t) for t in texts)


def test_guard_verdicts_on_the_real_pair_are_the_references():
    from hybrid_retrieval.common.paths import find_data_dir
    from hybrid_retrieval.data.lareqa import load_lareqa
    from hybrid_retrieval.data.pairs import items_from_lareqa
    from tests.conftest import REPO

    data = Path(find_data_dir(str(REPO)))
    if not (data / "xquad-r").is_dir() or not (data / "mlqa-r").is_dir():
        pytest.skip("needs ../shared/data (XQuAD-R and MLQA-R as published)")
    xquad, mlqa = load_lareqa(data / "xquad-r"), load_lareqa(data / "mlqa-r")
    for train, evald in ((xquad, mlqa), (mlqa, xquad), (xquad, xquad)):
        items = items_from_lareqa(train)
        got = check_zero_shot(items, evald, train.name)
        texts = [v.query for it in items for v in it.views.values()]
        ev_q = {reference(q.text) for s in evald.splits.values() for q in s.questions}
        ev_s = {reference(c.text) for s in evald.splits.values() for c in s.candidates}
        tr_s = {reference(v.positive) for it in items for v in it.views.values()}
        assert got.counts["question_texts"] == len({reference(t) for t in texts} & ev_q)
        assert got.counts["answer_sentences"] == len(tr_s & ev_s)
    assert got.overlaps and got.counts["question_texts"] > 1000  # XQuAD-R against itself: the guard fires
