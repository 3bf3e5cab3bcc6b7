"""Knobs that had no test of their own: each checked for what it must change (and what it must not)."""

from __future__ import annotations

import json

import faiss
import torch
import torch.nn.functional as F

from hybrid_retrieval.models.loss import InfoNCELoss
from tests.test_train_e2e import run_cli, tiny_overrides

TEXTS = ["How long is the Danube?", "Wie lang ist die Donau?", "¿Cuánto mide el Danubio?", "Дунай длинный"]


def test_dot_similarity_uses_raw_inner_products_and_cosine_ignores_the_scale():
    torch.manual_seed(0)
    q, p = torch.randn(4, 8), torch.randn(4, 8)
    dot = InfoNCELoss(temperature=0.5, similarity="dot")
    expected = F.cross_entropy(q @ p.T / 0.5, torch.arange(4))
    assert torch.allclose(dot(q, p), expected, atol=1e-6)
    assert not torch.allclose(dot(3 * q, p), dot(q, p))  # the norm counts under dot
    cos = InfoNCELoss(temperature=0.5, similarity="cosine")
    assert torch.allclose(cos(3 * q, p), cos(q, p), atol=1e-6)


def _loss_and_grads(encoder, train: bool = False):
    """Loss and gradients of one fixed batch, without dropout (train=True keeps training mode, dropout at 0)."""
    encoder.train(train)
    for m in encoder.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    q = encoder.encode(encoder.tokenize(TEXTS, "query"), "query")
    p = encoder.encode(encoder.tokenize(TEXTS[::-1], "passage"), "passage")
    loss = InfoNCELoss()(q, p)
    loss.backward()
    return loss.detach(), {n: t.grad.clone() for n, t in encoder.named_parameters() if t.grad is not None}


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_encoder_factory):
    plain, ckpt = tiny_encoder_factory(), tiny_encoder_factory(gradient_checkpointing=True)
    assert _checkpointing(ckpt.query_model) and not _checkpointing(plain.query_model)
    ckpt.load_state_dict(plain.state_dict())
    la, ga = _loss_and_grads(plain)
    lb, gb = _loss_and_grads(ckpt, train=True)  # checkpointing acts in training mode only (dropout off)
    assert torch.allclose(la, lb, atol=1e-6) and ga.keys() == gb.keys() and len(ga) > 10
    assert all(torch.allclose(ga[n], gb[n], atol=1e-5) for n in ga)


def _checkpointing(model) -> bool:
    flag = getattr(model, "is_activation_checkpointing", None)  # transformers >= 5.x renamed it
    return bool(flag if flag is not None else model.is_gradient_checkpointing)


def test_freeze_embeddings_freezes_the_token_table_only(tiny_encoder_factory):
    enc = tiny_encoder_factory(freeze_embeddings=True)
    table = enc.query_model.get_input_embeddings().weight
    assert not table.requires_grad
    trainable = [n for n, t in enc.named_parameters() if t.requires_grad]
    assert trainable and all("word_embeddings" not in n for n in trainable)
    assert any("position_embeddings" in n for n in trainable) or any("layer" in n for n in trainable)
    before = table.detach().clone()
    opt = torch.optim.AdamW([t for t in enc.parameters() if t.requires_grad], lr=1e-2)
    _loss_and_grads(enc)
    opt.step()
    assert torch.equal(before, table.detach())
    assert tiny_encoder_factory().query_model.get_input_embeddings().weight.requires_grad  # default: trainable


def test_validate_before_training_scores_the_untrained_model_first(tiny_data, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_cli([*tiny_overrides(tiny_data, tiny_model_dir, run_dir), "logger=csv", "validate_before_training=true"], tmp_path)
    evals = {p.name: json.loads(p.read_text()) for p in (run_dir / "eval").glob("*.json")}
    # the untrained model's evaluation (step 0) is kept beside the one per epoch, not overwritten by epoch 0
    assert sorted(evals) == ["epoch000.json", "epoch001.json", "validate-step000000.json"]
    assert [evals[n]["step"] for n in sorted(evals)] == [3, 6, 0]
    before, after = evals["validate-step000000.json"]["metrics"], evals["epoch001.json"]["metrics"]
    assert before["multi/map"] != after["multi/map"]


def test_early_stopping_ends_the_fit_when_the_metric_stalls(tiny_data, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_cli(
        [
            *tiny_overrides(tiny_data, tiny_model_dir, run_dir),
            "logger=csv",
            "callbacks=early_stopping",
            "callbacks.early_stopping.patience=0",
            "+callbacks.early_stopping.min_delta=1.0",  # nothing improves by a whole mAP point: stop at once
            "trainer.max_epochs=5",
        ],
        tmp_path,
    )
    summary = json.loads((run_dir / "final_metrics.json").read_text())
    # epoch 0 sets the best score, epoch 1 fails to beat it by min_delta: stop after 2 of the 5 epochs (3 steps each)
    assert summary["global_step"] == 6, summary["global_step"]


def test_allow_overlap_overrides_the_zero_shot_guard(tiny_data, tiny_model_dir, tmp_path):
    train, _ = tiny_data
    run_dir = tmp_path / "run"
    same = [*tiny_overrides(tiny_data, tiny_model_dir, run_dir), f"data.eval.root={train}", "logger=none", "trainer.max_epochs=1"]
    refused = run_cli(same, tmp_path, check=False)
    assert refused.returncode != 0 and "allow_overlap" in refused.stdout + refused.stderr
    run_cli([*same, "data.allow_overlap=true"], tmp_path)
    assert json.loads((run_dir / "final_metrics.json").read_text())["global_step"] == 3


def test_hard_negatives_from_a_jsonl_train_end_to_end(tiny_data, tiny_model_dir, tmp_path):
    rows = []
    for i in range(12):
        langs = {
            lang: {"query": f"{lang} question {i}", "positive": f"{lang} answer {i}", "negatives": [f"{lang} wrong {i}"]}
            for lang in ("en", "de")
        }
        rows.append(json.dumps({"id": f"q{i}", "langs": langs}))
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    run_cli(
        [
            *tiny_overrides(tiny_data, tiny_model_dir, run_dir),
            "logger=none",
            "data.train.format=jsonl",
            f"data.train.path={path}",
            "data.hard_negatives=1",
            "trainer.max_epochs=1",
        ],
        tmp_path,
    )
    summary = json.loads((run_dir / "final_metrics.json").read_text())
    assert summary["global_step"] == 3 and summary["metrics"]["train/loss"] > 0


def test_inspect_data_cli_reports_the_sampler_and_the_guard(tiny_data, capsys):
    from hybrid_retrieval.inspect_data import main

    train, evald = tiny_data
    main(["--train", str(train), "--eval", str(evald), "--alpha", "0", "1", "--batch-size", "4", "--epochs", "2"])
    out = capsys.readouterr().out
    assert "alpha=0.0:" in out and "alpha=1.0:" in out
    assert "mono batches 0/" in out  # alpha 0: no monolingual batch at all
    assert "(100.0%)" in out  # alpha 1: every batch monolingual
    assert "query languages:" in out and "overlap" in out.lower()


def test_hnsw_query_uses_the_requested_ef_search(tmp_path, monkeypatch, tiny_model_dir, capsys):
    from hybrid_retrieval import search

    corpus = tmp_path / "docs.tsv"
    corpus.write_text("".join(f"d{i}\tword{i} text number {i}\n" for i in range(40)), encoding="utf-8")
    search.main(
        ["index", "--corpus", str(corpus), "--index", str(tmp_path / "hnsw"), "--kind", "hnsw", "--base", str(tiny_model_dir)]
    )
    seen = []
    real = faiss.read_index

    def spy(path):
        index = real(path)
        seen.append(index)
        return index

    monkeypatch.setattr(faiss, "read_index", spy)
    search.main(["query", "--index", str(tmp_path / "hnsw"), "-q", "word3 text", "-k", "3", "--ef-search", "7"])
    assert len(seen) == 1 and faiss.downcast_index(seen[0]).hnsw.efSearch == 7
    assert "[q1] word3 text" in capsys.readouterr().out
