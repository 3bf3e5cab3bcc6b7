"""The Arrow item store: every source format gives the same items; the sampler sees the same languages; a store
built once is reused; training through it equals training on the in-memory list (same batches, same losses)."""

from __future__ import annotations

import json
import os

import pytest

from hybrid_retrieval.common.errors import DataFormatError
from hybrid_retrieval.data.item_store import build_store, store_key
from hybrid_retrieval.data.pairs import load_jsonl_items
from hybrid_retrieval.data.sampler import HybridBatchSampler
from tests.conftest import REPO
from tests.test_train_e2e import run_cli, tiny_overrides

LANGS = ("de", "en", "es")


def _jsonl(path, n=30):
    rows = []
    for i in range(n):
        langs = {
            x: {"query": f"{x} question {i}", "positive": f"{x} answer {i}", **({"negatives": [f"{x} no {i}"]} if i % 2 else {})}
            for x in LANGS
            if (i + LANGS.index(x)) % 4  # not every item has every language
        }
        rows.append(json.dumps({"id": f"q{i}", "title": f"t{i % 5}", "langs": langs}, ensure_ascii=False))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _table_rows(items) -> list[dict]:
    """Items as the Parquet / save_to_disk columns."""
    return [
        {
            "id": it.item_id,
            "title": it.title,
            "langs": it.languages,
            "query": [it.views[x].query for x in it.languages],
            "positive": [it.views[x].positive for x in it.languages],
            "negatives": [list(it.views[x].negatives) for x in it.languages],
        }
        for it in items
    ]


def _flat(items):
    return [(it.item_id, it.title, {x: (v.query, v.positive, v.negatives) for x, v in it.views.items()}) for it in items]


def test_jsonl_parquet_saved_and_aligned_sources_give_the_same_items(tmp_path):
    import datasets

    src = _jsonl(tmp_path / "train.jsonl")
    reference = load_jsonl_items(src)
    store = build_store(src, root=tmp_path / "cache")
    assert len(store) == 30 and _flat(store) == _flat(reference) and _flat([store[3]]) == _flat(reference[3:4])
    rows = _table_rows(reference)
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    for source in (tmp_path / "train.parquet", tmp_path / "saved"):
        assert _flat(build_store(source, root=tmp_path / "cache")) == _flat(reference), source
    files = {}
    for x in LANGS:  # one file per language, lines in another order than the items
        lines = [
            json.dumps(
                {
                    "id": it.item_id,
                    "query": it.views[x].query,
                    "positive": it.views[x].positive,
                    "negatives": list(it.views[x].negatives),
                }
            )
            for it in reference
            if x in it.views
        ]
        files[x] = tmp_path / f"{x}.jsonl"
        files[x].write_text("\n".join(lines) + "\n", encoding="utf-8")
    aligned = build_store(files, root=tmp_path / "cache")
    assert sorted((i, v) for i, _, v in _flat(aligned)) == sorted((i, v) for i, _, v in _flat(reference))


def test_hub_format_goes_through_load_dataset_and_fails_offline_in_one_line(tmp_path, monkeypatch):
    """format=hub is the real ``datasets.load_dataset`` call: here on a local folder of Parquet files (what a Hub
    dataset repository holds); a name that is not cached, offline, is one line naming it."""
    import datasets

    from hybrid_retrieval.data.item_store import HubDataset

    reference = load_jsonl_items(_jsonl(tmp_path / "train.jsonl"))
    rows = _table_rows(reference)
    (tmp_path / "repo" / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "repo" / "data" / "train-00000.parquet"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    store = build_store(HubDataset(str(tmp_path / "repo")), root=tmp_path / "cache")
    assert _flat(store) == _flat(reference)
    assert build_store(HubDataset(str(tmp_path / "repo")), root=tmp_path / "cache").folder == store.folder  # reused
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataFormatError) as err:
        build_store(HubDataset("someone/not-a-cached-dataset"), root=tmp_path / "cache")
    msg = str(err.value)
    assert msg.startswith("someone/not-a-cached-dataset: dataset: a dataset datasets.load_dataset can load (offline")
    assert "\n" not in msg


def test_the_sampler_draws_the_same_batches_from_the_store(tmp_path):
    src = _jsonl(tmp_path / "train.jsonl", n=60)
    items, store = load_jsonl_items(src), build_store(src, root=tmp_path / "cache")
    for cfg in ({"alpha": 0.5, "seed": 0}, {"alpha": 0.0, "seed": 1, "cross_mode": "example"}):
        a = HybridBatchSampler([it.languages for it in items], 4, **cfg)
        b = HybridBatchSampler(store.languages_table, 4, **cfg)
        assert [[(e.item, e.query_lang, e.passage_lang) for e in batch] for batch in a] == [
            [(e.item, e.query_lang, e.passage_lang) for e in batch] for batch in b
        ]


def test_a_store_is_built_once_and_keyed_by_content(tmp_path):
    src = _jsonl(tmp_path / "train.jsonl")
    first = build_store(src, root=tmp_path / "cache")
    stamp = (first.folder / "items.arrow").stat().st_mtime_ns
    again = build_store(src, root=tmp_path / "cache")
    assert again.folder == first.folder and (again.folder / "items.arrow").stat().st_mtime_ns == stamp
    assert store_key(src, ["en"]) != store_key(src, None)
    _jsonl(src, n=31)
    assert store_key(src, None) != first.folder.name  # new content, new entry
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "langs": {"en": {"query": "q"}}}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad.jsonl: line 1 \(id a\).langs.en.positive: a non-empty string"):
        build_store(bad, root=tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir() if ".tmp-" in p.name] == []  # nothing half-built


def test_a_truncated_source_names_file_and_line_and_leaves_no_cache_entry(tmp_path):
    import datasets

    src = _jsonl(tmp_path / "train.jsonl", n=30)
    text = src.read_text(encoding="utf-8")
    src.write_text(text[: len(text) - 25], encoding="utf-8")  # a copy cut off inside the last line
    cache = tmp_path / "cache"
    with pytest.raises(DataFormatError) as err:
        build_store(src, root=cache)
    assert str(err.value).startswith(f"{src}: line 30") and "\n" not in str(err.value)
    # no entry, no temporary: the next run builds afresh (only the hidden lock and failure note of that key remain)
    assert not cache.exists() or [p.name for p in cache.iterdir() if not p.name.startswith(".")] == []
    good = _jsonl(tmp_path / "good.jsonl", n=30)
    rows = [
        {
            "id": it.item_id,
            "langs": it.languages,
            "query": [it.views[x].query for x in it.languages],
            "positive": [it.views[x].positive for x in it.languages],
        }
        for it in load_jsonl_items(good)
    ]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "t.parquet"))
    blob = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "t.parquet").write_bytes(blob[: len(blob) // 2])  # a half-copied Parquet file
    with pytest.raises(DataFormatError) as err:
        build_store(tmp_path / "t.parquet", root=cache)
    assert str(err.value).startswith(f"{tmp_path / 't.parquet'}: file: a readable Parquet file")
    assert not cache.exists() or [p.name for p in cache.iterdir() if not p.name.startswith(".")] == []


@pytest.mark.slow
def test_training_through_the_store_equals_the_in_memory_list(tiny_data, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    src = _jsonl(tmp_path / "train.jsonl", n=40)
    runs = {}
    for store in ("true", "false"):
        run_dir, batches = tmp_path / store, tmp_path / f"{store}.jsonl"
        args = [
            *tiny_overrides(tiny_data, tiny_model_dir, run_dir),
            "logger=none",
            "data.train.format=jsonl",
            f"data.train.path={src}",
            f"data.train.store={store}",
            "data.hard_negatives=1",
            "trainer.deterministic=true",
            "+callbacks.record._target_=tests.helpers.RecordBatches",
            f"+callbacks.record.path={batches}",
            "+callbacks.record.with_tokens=true",
        ]
        run_cli(args, tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), "HYBRID_RETRIEVAL_CACHE": str(tmp_path / "cache")})
        runs[store] = (batches.read_text(), json.loads((run_dir / "final_metrics.json").read_text()))
    assert runs["true"][0] == runs["false"][0]  # items, languages and token ids of every batch
    for key in ("train/loss", "val/cross/map", "val/multi/map"):
        assert abs(runs["true"][1]["metrics"][key] - runs["false"][1]["metrics"][key]) <= 1e-6, key
    assert any((tmp_path / "cache" / "items").iterdir())


def test_inspect_data_reads_every_format_train_reads_and_describes_them_alike(tmp_path, monkeypatch, capsys):
    """inspect_data goes through the text data module: JSONL, Parquet, a save_to_disk folder and aligned per-language
    files give the same item count and, for the same seed, the same sampling description."""
    import datasets

    from hybrid_retrieval.inspect_data import main

    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    src = _jsonl(tmp_path / "train.jsonl")
    reference = load_jsonl_items(src)
    rows = _table_rows(reference)
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    aligned = []
    for x in LANGS:
        lines = [
            json.dumps({"id": it.item_id, "query": it.views[x].query, "positive": it.views[x].positive})
            for it in reference
            if x in it.views
        ]
        (tmp_path / f"{x}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        aligned.append(f"{x}={tmp_path / f'{x}.jsonl'}")
    outputs = {}
    for name, train in (
        ("jsonl", [str(src)]),
        ("parquet", [str(tmp_path / "train.parquet")]),
        ("arrow", [str(tmp_path / "saved")]),
        ("aligned", aligned),
    ):
        main(["--train", *train, "--alpha", "0.5", "--batch-size", "4", "--epochs", "2"])
        outputs[name] = capsys.readouterr().out
        assert outputs[name].startswith(f"{len(reference)} parallel items"), (name, outputs[name])
        assert "alpha=0.5:" in outputs[name] and "distinct (item, query language, passage language) pairs" in outputs[name]
    # the same items in the same order: the same batches (aligned files hold them in id order, so only counts there)
    assert outputs["jsonl"] == outputs["parquet"] == outputs["arrow"]
    assert outputs["aligned"].splitlines()[0] == outputs["jsonl"].splitlines()[0]


def test_a_store_written_in_small_record_batches_reads_back_whole(tmp_path, monkeypatch):
    """Record batches of 7 rows (30 items: 5 batches, the last partial): iteration, column batches and the language
    matrix (collected item by item while writing) equal the source's items."""
    import numpy as np

    from hybrid_retrieval.data import item_store

    monkeypatch.setattr(item_store, "ROWS_PER_BATCH", 7)
    src = _jsonl(tmp_path / "train.jsonl")
    reference = load_jsonl_items(src)
    store = build_store(src, root=tmp_path / "cache")
    assert _flat(store) == _flat(reference)
    batches = list(store.column_batches(["id", "langs"]))
    assert [len(b["id"]) for b in batches] == [7, 7, 7, 7, 2]
    assert [x for b in batches for x in b["langs"]] == [it.languages for it in reference]
    table = store.languages_table
    expected = np.array([[x in it.languages for x in table.names] for it in reference])
    assert table.names == LANGS and np.array_equal(table.matrix, expected)


def test_store_positive_and_the_sampling_record_equal_the_list_path(tmp_path):
    """``ItemStore.positive`` (two Arrow columns, what the sampling record reads per example) equals the items'."""
    from hybrid_retrieval.data.sampler import sampling_record

    src = _jsonl(tmp_path / "train.jsonl")
    reference = load_jsonl_items(src)
    store = build_store(src, root=tmp_path / "cache")
    assert [store.positive(i, x) for i, it in enumerate(reference) for x in it.languages] == [
        it.views[x].positive for it in reference for x in it.languages
    ]
    sampler = HybridBatchSampler(store.languages_table, 4, alpha=0.5, seed=3)
    by_store = sampling_record(sampler, 20, store.positive)
    by_list = sampling_record(sampler, 20, lambda i, x: reference[i].views[x].positive)
    assert by_store == by_list and by_store["batches"] == 20
