"""hybrid_retrieval inside sentence-transformers: ``LAReQAEvaluator`` gives the numbers of
``python -m hybrid_retrieval.evaluate`` on the same weights, with ST's prompts, prefixed names, a primary metric
and a CSV; importing it pulls in neither Lightning nor Hydra."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

st = pytest.importorskip("sentence_transformers")


def test_importing_the_st_pieces_imports_neither_lightning_nor_hydra():
    code = "import sys, hybrid_retrieval.st; print(sorted(m for m in ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"  # (a line before it may be W&B announcing offline mode)


@pytest.mark.slow
def test_the_evaluator_equals_hybrid_retrieval_evaluate_on_the_same_weights(tiny_data, tiny_model_dir, tmp_path):
    from hybrid_retrieval.export import export_sentence_transformers
    from hybrid_retrieval.models.encoder import DualEncoder
    from hybrid_retrieval.st import LAReQAEvaluator

    _, evald = tiny_data
    model_dir = export_sentence_transformers(DualEncoder(name=str(tiny_model_dir), max_length=32).eval(), tmp_path / "st")
    model = st.SentenceTransformer(str(model_dir), device="cpu")
    evaluator = LAReQAEvaluator(evald, name="eval-r", batch_size=16)
    metrics = evaluator(model, output_path=str(tmp_path / "out"), epoch=1, steps=7)
    assert evaluator.primary_metric == "eval-r_multi_map" and evaluator.primary_metric in metrics
    assert set(metrics) >= {"eval-r_cross_map", "eval-r_mono_r@10", "eval-r_multi_rank_distance"}

    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "hybrid_retrieval.evaluate", f"data.root={evald}", "dataset=eval-r"]
    cmd += [f"encoder.name={tiny_model_dir}", "encoder.max_length=32", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = json.loads((out / "summary.json").read_text())["macro"]
    for setting in ("mono", "cross", "multi"):
        for m in ("map", "map@20", "r@1", "r@10"):
            assert metrics[f"eval-r_{setting}_{m}"] == pytest.approx(ours[f"{setting}/{m}"], abs=1e-4), (setting, m)
    assert metrics["eval-r_multi_rank_distance"] == pytest.approx(ours["multi/rank_distance"], abs=1e-2)
    rows = list(csv.reader((tmp_path / "out" / "lareqa_eval-r_results.csv").open()))
    assert rows[0][:3] == ["epoch", "steps", "multi_map"] and rows[1][:2] == ["1", "7"]
    assert float(rows[1][2]) == pytest.approx(metrics["eval-r_multi_map"])


def _parallel(tmp_path):
    from tests.conftest import make_lareqa

    train = make_lareqa(tmp_path / "train-r", languages=("en", "de", "es"), n_articles=6, seed=1, prefix="tr",
                        coverage=lambda i: {"en", "de", "es"} if i % 3 else {"en", "de"})  # fmt: skip
    evald = make_lareqa(tmp_path / "eval-r", languages=("en", "de", "es"), n_articles=2, seed=2, prefix="ev")
    return train, evald


@pytest.mark.parametrize(("alpha", "schedule", "cross_mode"), [(0.5, "stratified", "batch"), (0.3, "bernoulli", "example")])
def test_the_st_sampler_draws_what_the_lightning_path_draws(tmp_path, alpha, schedule, cross_mode):
    """Same seed, same data: every batch's (item id, query language, passage language), in order, over two epochs;
    the long layout has one row per item and language (not per pair); two ranks get disjoint slices of each global
    batch whose union is the global batch."""
    from hybrid_retrieval.st import HybridSTBatchSampler, long_layout_from
    from hybrid_retrieval.tasks.text.data import TextDataModule

    train, evald = _parallel(tmp_path)
    options = {"alpha": alpha, "alpha_schedule": schedule, "cross_mode": cross_mode, "batches_per_epoch": 6}
    dm = TextDataModule(train={"root": str(train)}, eval={"root": str(evald)}, batch_size=4, sampler=options, seed=7,
                          allow_overlap=True)  # fmt: skip
    dm.preflight()
    ours = dm.make_sampler(0, 1)
    data = long_layout_from(train)
    assert len(data) == sum(len(it.views) for it in dm.items) and data.column_names == ["id", "language", "anchor", "positive"]
    theirs = HybridSTBatchSampler(data, batch_size=4, seed=7, world_size=1, **options)
    ids, langs = data["id"], data["language"]
    for epoch in (0, 1):
        ours.set_epoch(epoch)
        theirs.set_epoch(epoch)
        want = [[(dm.items[e.item].item_id, e.query_lang, e.passage_lang) for e in b] for b in ours]
        got = [[(ids[q], langs[q], langs[p]) for q, p in zip(rows[:4], rows[4:], strict=True)] for rows in theirs]
        assert got == want and len(got) == len(theirs) == 6
        assert all(ids[q] == ids[p] for rows in theirs for q, p in zip(rows[:4], rows[4:], strict=True))
    two = HybridSTBatchSampler(data, batch_size=2, seed=7, world_size=2, **options)
    two.set_epoch(1)
    slices = list(two)
    assert len(slices) == len(two) == 12
    for g, (r0, r1) in enumerate(zip(slices[0::2], slices[1::2], strict=True)):  # accelerate: rank r takes slice r
        union = [(ids[q], langs[q], langs[p]) for rows in (r0, r1) for q, p in zip(rows[:2], rows[2:], strict=True)]
        assert union == want[g] and not set(r0[:2]) & set(r1[:2])


@pytest.mark.slow
def test_st_trainer_with_mnrl_trains_on_the_hybrid_batches(tmp_path, tiny_model_dir):
    """SentenceTransformerTrainer + MNRL + the sampler and collator: 6 steps, the loss is finite, the realised α of
    the batches it trained on is the stratified schedule's, and the evaluator runs at the end."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # pragma: no cover
        from sentence_transformers.losses import MultipleNegativesRankingLoss

    from hybrid_retrieval.export import export_sentence_transformers
    from hybrid_retrieval.models.encoder import DualEncoder
    from hybrid_retrieval.st import HybridSTBatchSampler, LAReQAEvaluator, hybrid_batch_sampler, hybrid_collator, long_layout_from

    train, evald = _parallel(tmp_path)
    model = st.SentenceTransformer(
        str(export_sentence_transformers(DualEncoder(name=str(tiny_model_dir), max_length=32), tmp_path / "m"))
    )
    data = long_layout_from(train)
    seen = []

    class Recording(HybridSTBatchSampler):
        def __iter__(self):
            for rows in super().__iter__():
                seen.append(rows)
                yield rows

    options = {"alpha": 0.5, "alpha_schedule": "stratified", "batches_per_epoch": 6}
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_train_epochs=1, seed=7, report_to=[],
        batch_sampler=lambda ds, **kw: Recording(ds, **kw, **options), save_strategy="no", logging_steps=1,
        use_cpu=True, dataloader_drop_last=True,
    )  # fmt: skip
    assert callable(hybrid_batch_sampler(**options))
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=MultipleNegativesRankingLoss(model),
                                         data_collator=hybrid_collator(model), evaluator=LAReQAEvaluator(evald))  # fmt: skip
    result = trainer.train()
    assert result.global_step == 6 and result.training_loss == result.training_loss  # finite, not nan
    ids, langs = data["id"], data["language"]
    mono = sum(langs[rows[0]] == langs[rows[4]] for rows in seen[:6])
    assert mono == 3  # stratified α = 0.5 over 6 batches: exactly 3 monolingual
    # what the trainer trained on is what python -m hybrid_retrieval.train draws for the same seed (args.seed)
    from hybrid_retrieval.tasks.text.data import TextDataModule

    dm = TextDataModule(train={"root": str(train)}, eval={"root": str(evald)}, batch_size=4, sampler=options, seed=7,
                          allow_overlap=True)  # fmt: skip
    dm.preflight()
    want = [[(dm.items[e.item].item_id, e.query_lang, e.passage_lang) for e in b] for b in dm.make_sampler(0, 1)]
    got = [[(ids[q], langs[q], langs[p]) for q, p in zip(rows[:4], rows[4:], strict=True)] for rows in seen[:6]]
    assert got == want
    assert "eval_eval-r_multi_map" in trainer.evaluate()  # the trainer prefixes "eval_"


@pytest.mark.slow
def test_the_documented_example_runs_verbatim_on_a_tiny_fixture(tmp_path, tiny_model_dir):
    """docs/sentence_transformers.md (the README links it): its Python block, as written, with MODEL / TRAIN / EVAL /
    BATCH pointing at a tiny model and tiny data (the defaults are the real model and ../shared/data)."""
    from hybrid_retrieval.export import export_sentence_transformers
    from hybrid_retrieval.models.encoder import DualEncoder

    page = (REPO / "docs" / "sentence_transformers.md").read_text(encoding="utf-8")
    code = page.split("```python\n", 1)[1].split("```", 1)[0]
    train, evald = _parallel(tmp_path)
    model = export_sentence_transformers(DualEncoder(name=str(tiny_model_dir), max_length=32), tmp_path / "m")
    env = {**os.environ, "MODEL": str(model), "TRAIN": str(train), "EVAL": str(evald), "BATCH": "4", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "eval_eval-r_multi_map" in proc.stdout and (tmp_path / "st-hybrid").is_dir()


@pytest.mark.slow
def test_evaluate_takes_a_sentence_transformers_model_with_its_own_settings(tiny_data, tiny_model_dir, tmp_path):
    """``evaluate encoder.name=<ST model dir>``: the model's prompts, pooling, normalisation and max length are read
    from it (none passed on the command line), so the numbers equal the LAReQAEvaluator's on that model."""
    from hybrid_retrieval.export import export_sentence_transformers
    from hybrid_retrieval.models.encoder import DualEncoder
    from hybrid_retrieval.models.st_settings import st_encoder_settings
    from hybrid_retrieval.st import LAReQAEvaluator

    _, evald = tiny_data
    enc = DualEncoder(name=str(tiny_model_dir), max_length=24, pooling="cls", query_prefix="q: ", passage_prefix="p: ")
    model_dir = export_sentence_transformers(enc.eval(), tmp_path / "st")
    settings = st_encoder_settings(str(model_dir))
    assert settings == {"name": str(model_dir), "pooling": "cls", "normalize": True, "query_prefix": "q: ",
                        "passage_prefix": "p: ", "max_length": 24}  # fmt: skip
    assert st_encoder_settings(str(tiny_model_dir)) is None  # a plain transformers directory
    # the numbers: mean pooling (a random tiny model's CLS vectors nearly tie, so rankings would be float noise)
    enc = DualEncoder(name=str(tiny_model_dir), max_length=24, query_prefix="q: ", passage_prefix="p: ")
    model_dir = export_sentence_transformers(enc.eval(), tmp_path / "st-mean")
    want = LAReQAEvaluator(evald, name="eval-r")(st.SentenceTransformer(str(model_dir), device="cpu"))
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "hybrid_retrieval.evaluate", f"data.root={evald}", "dataset=eval-r"]
    cmd += [f"encoder.name={model_dir}", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads((out / "summary.json").read_text())
    assert (
        got["encoder"]["query_prefix"] == "q: "
        and got["encoder"]["passage_prefix"] == "p: "
        and got["encoder"]["max_length"] == 24
    )
    for key in ("mono/map", "cross/map", "multi/map", "multi/r@10"):
        assert got["macro"][key] == pytest.approx(want[f"eval-r_{key.replace('/', '_')}"], abs=1e-4), key


def test_the_long_layout_from_every_training_format(tmp_path):
    """JSONL, Parquet, a save_to_disk folder and aligned per-language files give the same rows: one per item and
    language (never one per pair), with the first hard negative where the data has negatives."""
    import datasets

    from hybrid_retrieval.data.pairs import load_jsonl_items
    from hybrid_retrieval.st import long_layout_from
    from tests.test_item_store import _jsonl, _table_rows

    jsonl = _jsonl(tmp_path / "train.jsonl")
    items = load_jsonl_items(jsonl)
    datasets.Dataset.from_list(_table_rows(items)).to_parquet(str(tmp_path / "train.parquet"))
    datasets.Dataset.from_list(_table_rows(items)).save_to_disk(str(tmp_path / "saved"))
    files = {}
    for lang in sorted({x for it in items for x in it.views}):
        rows = [{"id": it.item_id, "query": it.views[lang].query, "positive": it.views[lang].positive,
                 "negatives": list(it.views[lang].negatives)} for it in items if lang in it.views]  # fmt: skip
        files[lang] = tmp_path / f"{lang}.jsonl"
        files[lang].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    want = sorted(
        (it.item_id, x, v.query, v.positive, v.negatives[0] if v.negatives else None) for it in items for x, v in it.views.items()
    )
    for source in (jsonl, tmp_path / "train.parquet", tmp_path / "saved", files):
        data = long_layout_from(source)
        got = sorted(zip(data["id"], data["language"], data["anchor"], data["positive"], data["negative"], strict=True))
        assert got == want and len(data) == sum(len(it.views) for it in items), source
