"""Property tests for the HybridBatchSampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hybrid_retrieval.common.errors import SamplerError
from hybrid_retrieval.data.sampler import HybridBatchSampler

LANGS = ["ar", "de", "en", "es", "hi"]


def mlqa_like(n: int, seed: int = 0) -> list[list[str]]:
    """Every item has 'en' plus 1–3 other languages (MLQA-R's coverage pattern)."""
    rng = np.random.default_rng(seed)
    return [
        ["en", *rng.choice(LANGS[:1] + LANGS[1:2] + LANGS[3:], size=int(rng.integers(1, 4)), replace=False).tolist()]
        for _ in range(n)
    ]


def parallel(n: int) -> list[list[str]]:
    return [list(LANGS) for _ in range(n)]


@settings(max_examples=40, deadline=None)
@given(
    alpha=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    batch=st.integers(2, 24),
    seed=st.integers(0, 10_000),
    mode=st.sampled_from(["batch", "example"]),
    n=st.integers(30, 120),
)
def test_batch_invariants(alpha, batch, seed, mode, n):
    items = mlqa_like(n, seed)
    try:
        s = HybridBatchSampler(items, batch, alpha=alpha, cross_mode=mode, seed=seed)
    except ValueError as err:  # documented: no language (pair) pool can fill one batch
        assert "exceeds every" in str(err)
        assume(False)
    batches = list(s)
    assert len(batches) == len(s)
    for b in batches:
        assert len(b) == batch
        assert len({e.item for e in b}) == batch  # no shared question id
        for e in b:
            assert e.query_lang in items[e.item] and e.passage_lang in items[e.item]
        mono = b[0].query_lang == b[0].passage_lang
        if mono:  # language purity
            assert alpha > 0
            assert {(e.query_lang, e.passage_lang) for e in b} == {(b[0].query_lang,) * 2}
        else:
            assert alpha < 1
            assert all(e.query_lang != e.passage_lang for e in b)
            if mode == "batch":
                assert len({(e.query_lang, e.passage_lang) for e in b}) == 1


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 0.8, 1.0])
def test_empirical_alpha(alpha):
    s = HybridBatchSampler(parallel(400), 4, alpha=alpha, seed=3)
    mono = []
    for epoch in range(20):
        s.set_epoch(epoch)
        mono += [b[0].query_lang == b[0].passage_lang for b in s]
    rate = float(np.mean(mono))  # 2000 batches: binomial std <= 0.011
    assert abs(rate - alpha) < 0.04, rate


def test_deterministic_and_epoch_dependent():
    a = HybridBatchSampler(mlqa_like(80), 8, alpha=0.5, seed=7)
    b = HybridBatchSampler(mlqa_like(80), 8, alpha=0.5, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)


@settings(max_examples=25, deadline=None)
@given(
    world=st.sampled_from([1, 2, 4]), per_rank=st.integers(1, 6), seed=st.integers(0, 999), alpha=st.sampled_from([0.0, 0.5, 1.0])
)
def test_rank_slices_disjoint_and_complete(world, per_rank, seed, alpha):
    items = mlqa_like(90, seed)
    batch = world * per_rank
    full = list(HybridBatchSampler(items, batch, alpha=alpha, seed=seed).global_batches())
    shards = [list(HybridBatchSampler(items, batch, alpha=alpha, seed=seed, rank=r, world_size=world)) for r in range(world)]
    for step, global_batch in enumerate(full):
        parts = [shards[r][step] for r in range(world)]
        assert all(len(p) == per_rank for p in parts)
        assert [e for part in parts for e in part] == global_batch  # complete, in rank order
        ids = [e.item for p in parts for e in p]
        assert len(set(ids)) == len(ids)  # disjoint


def test_every_item_once_per_epoch_when_parallel():
    # Fully parallel data: every language pool holds every item, so no refill is ever needed.
    s = HybridBatchSampler(parallel(96), 8, alpha=0.5, seed=0)
    seen = Counter(e.item for b in s for e in b)
    assert set(seen) == set(range(96)) and set(seen.values()) == {1}
    assert s.stats["refilled"] == 0


def test_refill_counts_when_pool_runs_dry():
    items = [["en", "de"]] * 10 + [["en"]] * 30  # 'de' items are few
    s = HybridBatchSampler(items, 8, alpha=1.0, language_temperature=0.0, seed=1)
    list(s)
    assert s.stats["refilled"] > 0


def test_too_big_batch_is_clear_error_and_small_pools_excluded(caplog):
    items = mlqa_like(50)
    with pytest.raises(
        ValueError,
        match=r"data.batch_size=64 exceeds every monolingual pool: the largest is en with 50 items \(data.batch_size <= 50 fits",
    ):
        HybridBatchSampler(items, 64, alpha=0.5)
    s = HybridBatchSampler([["en", "de"]] * 5 + [["en", "es"]] * 20, 10, alpha=1.0)
    assert s.mono_keys == ["en", "es"]
    assert "excluded" in caplog.text


def test_cross_lingual_batches_from_one_language_say_what_they_need():
    with pytest.raises(
        SamplerError, match=r"need items in 2\+ languages sharing an id; the training data has 1 language\(s\) \(en\)"
    ):
        HybridBatchSampler([["en"]] * 20, 4, alpha=0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.5}, r"alpha=1.5"),
        ({"batch_size": 0}, r"batch_size=0"),
        ({"batch_size": 6, "world_size": 4}, r"divisible by world_size=4"),
        ({"cross_mode": "pair"}, r"cross_mode='pair'"),
        ({"languages": ["en", "xx"]}, r"\['xx'\] have no training items"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        HybridBatchSampler(parallel(20), **args)


def test_language_temperature_weights():
    items = [["en", "de"]] * 10 + [["en"]] * 90
    prop = HybridBatchSampler(items, 2, alpha=1.0, language_temperature=1.0)
    uni = HybridBatchSampler(items, 2, alpha=1.0, language_temperature=0.0)
    assert dict(zip(prop.mono_keys, prop.mono_w, strict=True))["en"] == pytest.approx(100 / 110)
    assert dict(zip(uni.mono_keys, uni.mono_w, strict=True))["en"] == pytest.approx(0.5)


@pytest.mark.parametrize(("alpha", "n"), [(0.5, 64), (0.25, 10), (0.75, 7), (0.0, 9), (1.0, 9), (0.5, 1)])
def test_stratified_realises_alpha_exactly(alpha, n):
    from hybrid_retrieval.data.sampler import sampling_record

    s = HybridBatchSampler(parallel(200), batch_size=8, alpha=alpha, alpha_schedule="stratified", batches_per_epoch=n, seed=3)
    for epoch in (0, 1):
        s.set_epoch(epoch)
        kinds = [b[0].query_lang == b[0].passage_lang for b in s]
        assert sum(kinds) == int(np.floor(alpha * n + 0.5)) and len(kinds) == n
    rec = sampling_record(s, steps=n)
    assert rec["mono_batches"] == int(np.floor(alpha * n + 0.5)) and rec["realised_alpha"] == pytest.approx(
        rec["mono_batches"] / n
    )


def test_stratified_order_depends_on_seed_and_epoch_and_resumes():
    def plan(seed, epoch):
        s = HybridBatchSampler(
            parallel(200), batch_size=8, alpha=0.5, alpha_schedule="stratified", batches_per_epoch=32, seed=seed
        )
        s.set_epoch(epoch)
        return [b[0].query_lang == b[0].passage_lang for b in s], s

    a, s = plan(0, 0)
    assert a == plan(0, 0)[0] and a != plan(1, 0)[0] and a != plan(0, 1)[0]
    full = list(s)
    s.resume(0, 5)
    assert list(s) == full[5:]  # mid-epoch resume: the rest of the same epoch


def test_sampling_record_counts_settings_excluded_and_duplicates():
    from hybrid_retrieval.data.sampler import sampling_record

    # item i's positive sentence in language x: items 2k and 2k+1 share it (an answer sentence asked twice)
    items = mlqa_like(300, seed=4)
    s = HybridBatchSampler(items, batch_size=16, alpha=0.5, seed=1, batches_per_epoch=5, min_pool=120)
    key = lambda item, lang: (item // 2, lang)  # noqa: E731
    rec = sampling_record(s, steps=12, positive_key=key)  # 2 epochs and a bit: replayed across epochs
    assert rec["batches"] == 12 and rec["pairs"] == 12 * 16
    assert rec["mono_batches"] + rec["cross_batches"] == 12
    assert sum(rec["batch_settings"].values()) == 12 and sum(rec["example_settings"].values()) == 12 * 16
    # brute force over the same batches
    dup, neg, seen, pairs = [], [], Counter(), set()
    done = 0
    for epoch in range(3):
        s.set_epoch(epoch)
        for b in s:
            if done == 12:
                break
            done += 1
            groups = Counter(key(e.item, e.passage_lang) for e in b)
            dup.append(sum(g * (g - 1) // 2 for g in groups.values()))
            neg.append(len(groups) - 1)
            seen[f"{b[0].query_lang}-{b[0].passage_lang}"] += 1
            pairs.update((e.item, e.query_lang, e.passage_lang) for e in b)
    assert rec["batch_settings"] == dict(seen)
    assert rec["distinct_pairs"] == len(pairs) and rec["distinct_items"] <= len(pairs) <= 12 * 16
    assert rec["dup_pairs_per_batch"] == pytest.approx(np.mean(dup), abs=1e-3) and max(dup) > 0
    assert rec["distinct_negatives_per_query"] == pytest.approx(np.mean(neg), abs=1e-3)
    # min_pool=120 excludes small pools even though they could fill a batch of 16
    sizes = {k: len(v) for k, v in s.cross.items()}
    small = [k for k, n in sizes.items() if 16 <= n < 120]
    assert small and all(f"{'-'.join(k)} ({sizes[k]} items)" in rec["excluded"] for k in small)
    assert all("-".join(k) not in rec["feasible_cross"] for k in small)


def test_batches_equal_the_recorded_ones_of_the_list_based_sampler():
    """tests/data/sampler_golden.json: two epochs of five configurations, written by the sampler before it worked
    on a language matrix (commit 9fc0723); from lists and from an ItemLanguages matrix the batches are unchanged."""
    import json
    from pathlib import Path

    from hybrid_retrieval.data.item_languages import ItemLanguages

    golden = json.loads((Path(__file__).parent / "data" / "sampler_golden.json").read_text())
    items = golden["items"]
    for case in golden["cases"]:
        for source in (items, ItemLanguages.from_lists(items)):
            s = HybridBatchSampler(source, **case["config"])
            assert s.n_items == case["n_items"] and s.excluded == case["excluded"]
            for epoch, expected in enumerate(case["epochs"]):
                s.set_epoch(epoch)
                assert [[[e.item, e.query_lang, e.passage_lang] for e in b] for b in s] == expected, case["config"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["zh", "ar", "en", "de", "hi"]), unique=True, max_size=5), max_size=30))
def test_item_languages_built_item_by_item_is_the_membership_matrix(item_languages):
    """Columns are the sorted languages seen (whatever order they first appear in), rows the items (an item with no
    language is an all-false row)."""
    from hybrid_retrieval.data.item_languages import ItemLanguages

    table = ItemLanguages.from_lists(item_languages)
    names = tuple(sorted({x for langs in item_languages for x in langs}))
    assert table.names == names and table.matrix.shape == (len(item_languages), len(names))
    assert table.matrix.tolist() == [[x in langs for x in names] for langs in item_languages]
