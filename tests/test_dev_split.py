"""Dev split of a training benchmark (data.dev): whole articles held out, disjoint from training, seeded."""

from __future__ import annotations

import pytest

from hybrid_retrieval.data.lareqa import load_lareqa, split_dev, subsample_questions
from tests.conftest import make_lareqa


@pytest.fixture
def ten_articles(tmp_path):
    return load_lareqa(make_lareqa(tmp_path / "train-r", n_articles=10, seed=3, prefix="tr"))


def test_split_holds_out_whole_articles_and_is_disjoint(ten_articles):
    split = split_dev(ten_articles, 0.25, seed=0)
    dev_ids, train_ids = set(split.dev.by_qid), set(split.train.by_qid)
    assert dev_ids and train_ids and not dev_ids & train_ids
    assert dev_ids | train_ids == set(ten_articles.by_qid)
    assert len(dev_ids) >= 0.25 * len(ten_articles.by_qid)
    for lang in ten_articles.languages:  # every language of a held-out id is held out
        dev_titles = {q.title for q in split.dev.splits[lang].questions}
        assert not dev_titles & {q.title for q in split.train.splits[lang].questions}
        assert {q.qid for q in split.dev.splits[lang].questions} == dev_ids
        # each part's questions still point at their own answer sentence
        for part in (split.dev, split.train):
            s = part.splits[lang]
            original = {q.qid: q for q in ten_articles.splits[lang].questions}
            for q in s.questions:
                orig = ten_articles.splits[lang]
                assert s.candidates[q.answer].text == orig.candidates[original[q.qid].answer].text
    rec = split.record()
    assert rec["dev_questions"] == len(dev_ids) and rec["train_questions"] == len(train_ids)
    assert rec["articles"] == len({q.title for q in split.dev.splits["en"].questions})


def test_split_is_fixed_by_its_seed(ten_articles):
    a, b = split_dev(ten_articles, 0.25, seed=0), split_dev(ten_articles, 0.25, seed=0)
    assert a.record() == b.record()
    others = {split_dev(ten_articles, 0.25, seed=s).record()["dev_qids_sha1"] for s in range(1, 6)}
    assert len(others | {a.record()["dev_qids_sha1"]}) > 1


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_bad_fraction(ten_articles, fraction):
    with pytest.raises(ValueError, match="dev fraction"):
        split_dev(ten_articles, fraction)


def test_subsample_unchanged_by_the_refactor(ten_articles):
    """subsample_questions shares the article choice with split_dev: its subset is the first articles of the order."""
    sub = subsample_questions(ten_articles, 5, seed=0)
    dev = split_dev(ten_articles, 5 / len(ten_articles.by_qid), seed=0).dev
    assert set(sub.by_qid) == set(dev.by_qid)
    assert sub.name == f"{ten_articles.name}[{len(sub.by_qid)}q]"


def test_datamodule_trains_without_dev_and_validates_on_it(tmp_path, tiny_model_dir):
    from hybrid_retrieval.models.encoder import DualEncoder
    from hybrid_retrieval.tasks.text.data import TextDataModule

    train = make_lareqa(tmp_path / "train-r", n_articles=10, seed=3, prefix="tr")
    evald = make_lareqa(tmp_path / "eval-r", languages=("en", "de"), n_articles=2, seed=2, prefix="ev")
    dm = TextDataModule(
        train={"root": str(train), "name": "tr"},
        eval={"root": str(evald), "name": "ev"},
        batch_size=4,
        dev={"fraction": 0.2, "seed": 0},
        validate_on="dev",
        allow_overlap=True,  # the fixture's 3-word questions repeat across articles; the counts are checked below
    )
    dm.attach_encoder(DualEncoder(name=str(tiny_model_dir), max_length=32))
    dm.setup("fit")
    dev_ids = set(dm.dev_split.dev.by_qid)
    assert dev_ids and not dev_ids & {it.item_id for it in dm.items}
    assert dm.corpus.name == "tr-dev"
    assert len(dm.corpus.q_texts) == sum(len(s.questions) for s in dm.dev_split.dev.splits.values())
    rec = dm.split_record(steps=3)
    assert rec["validated_on"] == "tr-dev" and rec["dev_split"]["dev_questions"] == len(dev_ids)
    assert rec["guard"]["train_vs_dev"]["question_ids"] == 0 and rec["guard"]["train_vs_dev"]["article_titles"] == 0
    assert rec["guard"]["train_vs_dev"]["answer_sentences"] == 0
    assert rec["train_items"] == len(dm.items) and rec["passes"] == pytest.approx(12 / len(dm.items), abs=1e-4)


def test_validate_on_dev_needs_a_fraction(tiny_data):
    from hybrid_retrieval.tasks.text.data import TextDataModule

    train, evald = tiny_data
    with pytest.raises(ValueError, match=r"needs data\.dev\.fraction"):
        TextDataModule(train={"root": str(train)}, eval={"root": str(evald)}, validate_on="dev")
    with pytest.raises(ValueError, match="validate_on"):
        TextDataModule(train={"root": str(train)}, eval={"root": str(evald)}, validate_on="test")
