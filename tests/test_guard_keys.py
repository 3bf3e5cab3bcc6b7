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


def _planted(tmp_path: Path):
    """A LAReQA evaluation fixture and JSONL training items that overlap it on each of the four keys once, written
    differently where normalisation must match them (full-width punctuation, case, Hindi / Thai combining marks)."""
    import json

    from tests.conftest import make_lareqa

    evald = make_lareqa(tmp_path / "eval-r", languages=("en", "de"), n_articles=2, seed=2, prefix="ev")
    from hybrid_retrieval.data.lareqa import load_lareqa

    ev = load_lareqa(evald)
    split = ev.splits["en"]
    q0, c0 = split.questions[0], split.candidates[1]
    rows = [
        {"id": q0.qid, "langs": {"en": {"query": "unrelated question one", "positive": "unrelated answer one"}}},
        {"id": "t1", "title": q0.title, "langs": {"de": {"query": "frage zwei", "positive": "antwort zwei"}}},
        {"id": "t2", "langs": {"en": {"query": q0.text.upper() + "？", "positive": "unrelated answer three"}}},
        {"id": "t3", "langs": {"en": {"query": "question four", "positive": "（" + c0.text + "）"}}},
        {"id": "t4", "langs": {"hi": {"query": "हिन्दी में प्रश्न क्या है?", "positive": "ภาษาไทย ที่นี่ มี อะไร"}}},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path, ev


def test_store_keys_are_computed_once_and_give_the_list_verdicts(tmp_path, monkeypatch):
    """An item store's guard keys: the same counts, sizes and examples as the in-memory items, each planted overlap
    found once; computed on the first check only (the second reads the cache: normalising again would fail)."""
    from hybrid_retrieval.data import guard
    from hybrid_retrieval.data.item_store import build_store
    from hybrid_retrieval.data.pairs import load_jsonl_items

    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    path, ev = _planted(tmp_path)
    listed = check_zero_shot(load_jsonl_items(path), ev, "train")
    assert listed.counts == {"question_ids": 1, "article_titles": 1, "question_texts": 1, "answer_sentences": 1}
    store = build_store(path, root=tmp_path / "cache" / "items")
    first = check_zero_shot(store, ev, "train")
    assert (first.counts, first.sizes, first.examples) == (listed.counts, listed.sizes, listed.examples)
    assert len([p for p in (tmp_path / "cache" / "guard").iterdir() if not p.name.startswith(".")]) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the training keys were normalised again")

    monkeypatch.setattr(guard, "_keys_of_store", fail)
    again = check_zero_shot(store, ev, "train")
    assert (again.counts, again.sizes, again.examples) == (listed.counts, listed.sizes, listed.examples)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 2**64 - 1), max_size=40),
    st.lists(st.integers(0, 2**64 - 1), max_size=40),
)
def test_sorted_contains_equals_isin(keys, values):
    """The guard's lookup of evaluation hashes in the training side's sorted keys (binary search, not np.isin: that
    re-sorts millions of training keys per check) — including values beyond the largest key and no keys at all."""
    import numpy as np

    from hybrid_retrieval.data.guard import sorted_contains

    sorted_keys = np.unique(np.array(keys, dtype=np.uint64))
    probe = np.array(values + keys[:5], dtype=np.uint64)
    assert sorted_contains(sorted_keys, probe).tolist() == np.isin(probe, sorted_keys).tolist()


def test_store_keys_read_across_record_batches_equal_the_list_verdicts(tmp_path, monkeypatch):
    """A store written in record batches of 3 rows (a million-item store has 100 of 10,000): the guard reads it batch
    by batch and finds every planted overlap, with the list path's counts and sizes."""
    from hybrid_retrieval.data import item_store
    from hybrid_retrieval.data.pairs import load_jsonl_items

    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(item_store, "ROWS_PER_BATCH", 3)
    path, ev = _planted(tmp_path)
    store = item_store.build_store(path, root=tmp_path / "cache" / "items")
    assert len(list(store.column_batches(["id"]))) == -(-len(store) // 3) > 1
    listed = check_zero_shot(load_jsonl_items(path), ev, "train")
    got = check_zero_shot(store, ev, "train")
    assert (got.counts, got.sizes, got.examples) == (listed.counts, listed.sizes, listed.examples)
    assert all(got.counts.values())


def test_committed_job_records_guard_counts_are_recomputed_by_todays_guard():
    """Every committed job record that names its guard counts: today's guard on the same training data (dev split
    included) and evaluation set gives the same counts, so the published runs' zero-shot verdicts still hold."""
    import json

    from hybrid_retrieval.common.paths import find_data_dir
    from hybrid_retrieval.data.lareqa import load_lareqa, split_dev
    from hybrid_retrieval.data.pairs import items_from_lareqa
    from tests.conftest import REPO

    data = Path(find_data_dir(str(REPO)))
    if not (data / "xquad-r").is_dir() or not (data / "mlqa-r").is_dir():
        pytest.skip("needs ../shared/data (XQuAD-R and MLQA-R as published)")
    cases: dict[tuple, dict] = {}
    for path in (REPO / "docs" / "results").rglob("*.json"):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and record.get("guard"):
            dev = record.get("dev_split") or {}
            cases.setdefault((record["train"], record["eval"], dev.get("fraction"), dev.get("seed")), record["guard"])
    assert cases, "no committed record names its guard counts"
    for (train_name, eval_name, fraction, seed), counts in cases.items():
        train, evald = load_lareqa(data / train_name), load_lareqa(data / eval_name)
        targets = {"train_vs_eval": evald}
        if fraction is not None:
            split = split_dev(train, float(fraction), seed=int(seed))
            train, targets["train_vs_dev"] = split.train, split.dev
        items = items_from_lareqa(train)
        got = {name: dict(check_zero_shot(items, target, train_name).counts) for name, target in targets.items()}
        assert got == counts, (train_name, eval_name, fraction)
