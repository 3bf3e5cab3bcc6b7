"""LAReQA loading, training items, the zero-shot guard, and one clear error per kind of bad input."""

from __future__ import annotations

import json

import pytest

from hybrid_retrieval.common.errors import DataFormatError
from hybrid_retrieval.data.guard import check_zero_shot
from hybrid_retrieval.data.lareqa import load_lareqa
from hybrid_retrieval.data.pairs import items_from_lareqa, load_jsonl_items
from tests.conftest import make_lareqa


def test_load_and_gold(tiny_data):
    train, _ = tiny_data
    ds = load_lareqa(train)
    assert ds.languages == ["de", "en", "es"]
    en = ds.splits["en"]
    assert len(en.candidates) == 4 * 2 * 3  # articles × paragraphs × sentences
    for q in en.questions:
        cand = en.candidates[q.answer]
        assert cand.lang == "en" and q.title == cand.title
    # Ids present in 'en' and 'de' point at the same sentence position in both.
    for qid, per_lang in ds.by_qid.items():
        pos = {lang: ds.splits[lang].candidates[i].cid.split("/", 1)[1] for lang, i in per_lang.items()}
        assert len(set(pos.values())) == 1, qid
    # Coverage like MLQA-R: some ids are missing in 'es'.
    assert any("es" not in v for v in ds.by_qid.values())


def test_items_and_hard_negatives(tiny_data):
    ds = load_lareqa(tiny_data[0])
    items = items_from_lareqa(ds, hard_negatives=2)
    assert len(items) == len(ds.by_qid)
    item = items[0]
    view = item.views["en"]
    assert len(view.negatives) == 2 and view.positive not in view.negatives
    ctx_items = items_from_lareqa(ds, with_context=True)
    assert ctx_items[0].views["en"].positive.startswith(view.positive + " ")


def test_real_data_counts_if_available():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "xquad-r"
    if not root.exists():
        pytest.skip("../shared/data not present")
    ds = load_lareqa(root, ["en", "th"])
    assert len(ds.splits["en"].questions) == 1190 and len(ds.splits["en"].candidates) == 1180
    assert len(ds.splits["th"].candidates) == 852


def test_guard_disjoint_and_overlap(tiny_data):
    train, evald = tiny_data
    tr, ev = load_lareqa(train), load_lareqa(evald)
    ok = check_zero_shot(items_from_lareqa(tr), ev, "train-r")
    assert not ok.overlaps and "disjoint" in ok.describe()
    bad = check_zero_shot(items_from_lareqa(ev), ev, "eval-r")
    assert bad.overlaps and bad.counts["question_ids"] == len(ev.by_qid)


# --------------------------------------------------------------------------- bad input
def _write(tmp_path, name, text):
    p = tmp_path / "bad"
    p.mkdir(exist_ok=True)
    (p / name).write_text(text, encoding="utf-8")
    return p


def _doc(paragraph):
    return json.dumps({"version": "1.1", "data": [{"title": "T", "paragraphs": [paragraph]}]})


GOOD_PARA = {
    "context": "One two. Three four.",
    "sentences": ["One two.", "Three four."],
    "sentence_breaks": [[0, 8], [9, 20]],
    "qas": [{"id": "q1", "question": "What?", "answers": [{"answer_start": 9, "text": "Three"}]}],
}


@pytest.mark.parametrize(
    ("text", "item", "expected"),
    [
        ('{"version": "1.1", "data": [', "line 1", "valid JSON"),
        ("[1, 2]", "top level", '"data" list'),
        (_doc({k: v for k, v in GOOD_PARA.items() if k != "sentences"}), "paragraphs[0]", '"sentences" field'),
        (_doc({**GOOD_PARA, "sentence_breaks": [[0, 8]]}), "paragraphs[0]", "as many sentence_breaks"),
        (_doc({**GOOD_PARA, "sentence_breaks": [[0, 8], [9, 99]]}), "sentence_breaks[1]", "within the context"),
        (_doc({**GOOD_PARA, "sentence_breaks": [[5, 8], [0, 20]]}), "sentence_breaks[1]", "increasing offsets"),
        (_doc({**GOOD_PARA, "qas": [{"id": "q1", "question": "What?"}]}), "qas[0]", '"answers" field'),
        (_doc({**GOOD_PARA, "qas": [{"id": "q1", "question": "", "answers": [{"answer_start": 0}]}]}), "question", "non-empty"),
        (_doc({**GOOD_PARA, "qas": []}), "language en", "at least one question"),
        (json.dumps({"version": "1.1", "data": []}), "language en", "at least one question"),
    ],
)
def test_bad_input_errors(tmp_path, text, item, expected):
    root = _write(tmp_path, "en.json", text)
    with pytest.raises(DataFormatError) as err:
        load_lareqa(root, ["en"])
    msg = str(err.value)
    assert "en.json" in msg and item in msg and expected in msg, msg


def test_break_mismatch_is_counted_warning(tmp_path):
    para = {**GOOD_PARA, "sentences": ["One two!", "Three four."]}
    ds = load_lareqa(_write(tmp_path, "en.json", _doc(para)), ["en"])
    assert ds.warnings["sentence_break_text_mismatch"] == 1


def test_answer_outside_sentences_skip_or_strict(tmp_path):
    qas = GOOD_PARA["qas"] + [{"id": "q2", "question": "Gap?", "answers": [{"answer_start": 8, "text": " "}]}]
    root = _write(tmp_path, "en.json", _doc({**GOOD_PARA, "qas": qas}))
    ds = load_lareqa(root, ["en"])
    assert ds.warnings["answer_outside_sentences"] == 1 and len(ds.splits["en"].questions) == 1
    with pytest.raises(DataFormatError, match=r"q2.*answer_start 8"):
        load_lareqa(root, ["en"], strict=True)


def test_unknown_language_and_missing_dir(tiny_data, tmp_path):
    with pytest.raises(DataFormatError, match=r"languages \['xx'\].*\['de', 'en', 'es'\]"):
        load_lareqa(tiny_data[0], ["en", "xx"])
    with pytest.raises(DataFormatError, match="existing dataset directory"):
        load_lareqa(tmp_path / "nope")


def test_jsonl_items_and_errors(tmp_path):
    good = tmp_path / "ok.jsonl"
    good.write_text(
        json.dumps(
            {
                "id": "a",
                "langs": {"en": {"query": "q", "positive": "p", "negatives": ["n"]}, "de": {"query": "f", "positive": "d"}},
            }
        )
        + "\n\n"
        + json.dumps({"id": "b", "langs": {"en": {"query": "q2", "positive": "p2"}}})
        + "\n",
        encoding="utf-8",
    )
    items = load_jsonl_items(good)
    assert [i.item_id for i in items] == ["a", "b"] and items[0].views["en"].negatives == ("n",)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "langs": {"en": {"query": "q"}}}) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad.jsonl: line 1 \(id a\).langs.en.positive: a non-empty string"):
        load_jsonl_items(bad)
    bad.write_text('{"id": "a", "langs": \n', encoding="utf-8")
    with pytest.raises(DataFormatError, match="line 1: one JSON object per line"):
        load_jsonl_items(bad)


def test_shipped_example_jsonl_loads():
    from pathlib import Path

    items = load_jsonl_items(Path(__file__).resolve().parents[1] / "examples" / "parallel_train.jsonl")
    assert len(items) >= 4 and all(len(i.views) >= 2 for i in items)


def test_fixture_generator_is_consistent(tmp_path):
    root = make_lareqa(tmp_path / "x", languages=("en", "fr"), n_articles=1)
    ds = load_lareqa(root)
    assert set(ds.languages) == {"en", "fr"} and not ds.warnings


def test_subsample_keeps_gold_consistent(tiny_data):
    from hybrid_retrieval.data.lareqa import subsample_questions

    full = load_lareqa(tiny_data[1])
    sub = subsample_questions(full, 3)
    assert 3 <= len(sub.by_qid) < len(full.by_qid)
    for lang, split in sub.splits.items():
        orig = full.splits[lang]
        orig_answer = {q.qid: orig.candidates[q.answer].text for q in orig.questions}
        for q in split.questions:
            assert split.candidates[q.answer].text == orig_answer[q.qid]  # same gold sentence
        assert len(split.candidates) < len(orig.candidates)
        titles = {c.title for c in split.candidates}
        assert titles == {q.title for q in split.questions}  # whole articles, nothing else


@pytest.mark.parametrize(
    ("lines", "where", "expected"),
    [
        (['{"id": "a", "langs": {"en": {"query": "q", "positive": "p"}}}'] * 2, "line 2 (id a)", "unique ids"),
        (['{"langs": {"en": {"query": "q", "positive": "p"}}}'], "line 1", 'an object with an "id"'),
        (
            ['{"id": "a", "langs": {"en": {"query": "q", "positive": "p", "negatives": "n"}}}'],
            "line 1 (id a).langs.en.negatives",
            "a list of strings",
        ),
        ([], "file", "at least one parallel item (the file has none)"),
        (["", "   "], "file", "at least one parallel item"),
    ],
    ids=["duplicate_id", "missing_id", "negatives_not_list", "no_items", "blank_lines_only"],
)
def test_jsonl_error_cases_name_file_line_field(tmp_path, lines, where, expected):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    with pytest.raises(DataFormatError) as err:
        load_jsonl_items(path)
    assert err.value.file == str(path) and err.value.item == where and expected in err.value.expected


def test_jsonl_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"missing\.jsonl: file: an existing JSONL file"):
        load_jsonl_items(tmp_path / "missing.jsonl")
