"""Frozen-prefix training (model.encoder.train_layers) and the disk cache of lower-layer states.

The cached path must give the loss and trainable gradients of the uncached frozen-prefix model
(fp32 cache: relative error <= 1e-5), with and without gradient caching and across 2 DDP ranks;
evaluation from cached states equals the uncached evaluation; a stale or foreign cache is never read.
"""

from __future__ import annotations

import copy
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hybrid_retrieval.common.padding import pad_batch, pad_rows
from hybrid_retrieval.evaluation.encode import encode_texts
from hybrid_retrieval.models import prefix_cache as pc
from hybrid_retrieval.models.distributed import all_gather_variable, average_gradients
from hybrid_retrieval.models.grad_cache import contrastive_backward
from hybrid_retrieval.models.loss import InfoNCELoss
from tests.helpers import results_of_processes

TEXTS_Q = ["wie lang ist die donau", "how long is the river", "quién fue el rey", "school of music in the city", "w1 w2"] * 2
TEXTS_P = [f"passage {i}: " + " ".join(f"w{(i * 7 + j) % 40}" for j in range(3 + i % 9)) for i in range(10)]


def _rel_err(a, b, floor=1e-8):
    """Relative error; ``floor`` keeps mathematically-zero gradients (attention key biases, ~1e-12) out of it."""
    return float((a - b).norm() / b.norm().clamp_min(floor))


def _assert_grads_close(got: dict, ref: dict, tol: float = 1e-5) -> None:
    total = torch.cat([g.flatten() for g in ref.values()])
    assert _rel_err(torch.cat([got[n].flatten() for n in ref]), total) <= tol
    floor = 1e-4 * float(total.norm())  # per-parameter check for every gradient not ~0 by symmetry
    for n in ref:
        assert _rel_err(got[n], ref[n], floor) <= tol, n


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRID_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "prefix"


def _features(enc, texts, kind, cached: bool):
    ids = enc.token_ids(texts, kind)
    if cached:
        return pad_rows(enc.model_rows(ids, kind), enc.tokenizer.pad_token_id)
    return pad_batch(ids, enc.tokenizer.pad_token_id)


def test_split_forward_equals_full_model(tiny_encoder_factory):
    """The layer-by-layer forward reproduces the model's own forward exactly (eval mode)."""
    full = tiny_encoder_factory().eval()
    feats = full.tokenize(TEXTS_Q, "query")
    ref = full.encode(feats, "query")
    for k in (1, 2):
        enc = tiny_encoder_factory(train_layers=k).eval()
        assert torch.allclose(enc.encode(feats, "query"), ref, atol=1e-6), k


def test_frozen_prefix_freezes_and_stays_in_eval_mode(tiny_encoder_factory):
    enc = tiny_encoder_factory(train_layers=1)
    enc.train()
    model = enc.query_model
    assert not model.embeddings.training and not model.encoder.layer[0].training and model.encoder.layer[1].training
    assert not any(p.requires_grad for p in model.embeddings.parameters())
    assert not any(p.requires_grad for p in model.encoder.layer[0].parameters())
    assert all(p.requires_grad for p in model.encoder.layer[1].parameters())
    names = enc.frozen_state_names()
    assert any(n.startswith("query_model.embeddings.") for n in names)
    assert any(n.startswith("query_model.encoder.layer.0.") for n in names)
    assert not any(".layer.1." in n for n in names)


def test_bad_train_layers_and_architecture(tiny_encoder_factory, xlmr_tokenizer):
    from transformers import DistilBertConfig, DistilBertModel

    from hybrid_retrieval.models.encoder import DualEncoder

    with pytest.raises(ValueError, match=r"model.encoder.train_layers=3: expected null or an integer in \[1, 2\]"):
        tiny_encoder_factory(train_layers=3)
    with pytest.raises(ValueError, match=r"prefix_cache=True: needs model\.encoder\.train_layers"):
        tiny_encoder_factory(prefix_cache=True)
    distil = DistilBertModel(DistilBertConfig(vocab_size=100, dim=16, n_layers=2, n_heads=2, hidden_dim=32))
    with pytest.raises(ValueError, match=r"^model.encoder.train_layers: DistilBertModel is not a BERT/XLM-R-family"):
        DualEncoder(backbone=distil, tokenizer=xlmr_tokenizer, train_layers=1)


@pytest.mark.parametrize("chunk", [None, 3])
@pytest.mark.parametrize("dropout", [False, True])
def test_cached_path_equals_uncached_loss_and_grads(tiny_encoder_factory, cache_dir, chunk, dropout):
    torch.manual_seed(0)
    enc = tiny_encoder_factory(train_layers=1, prefix_cache_dtype="fp32")
    enc.train(dropout)
    enc2 = copy.deepcopy(enc)
    enc2.prefix_cache = True  # same weights, states read from the (fp32) cache
    loss_fn = InfoNCELoss(temperature=0.05)
    grads = []
    for model, cached in ((enc, False), (enc2, True)):
        q = _features(model, TEXTS_Q, "query", cached)
        p = _features(model, TEXTS_P, "passage", cached)
        assert ("prefix_hidden" in q) == cached
        torch.manual_seed(7)  # same dropout masks in the trainable top layer
        loss = contrastive_backward(model.encode, loss_fn, q, p, chunk_size=chunk, bucket_size=4)
        grads.append((loss, {n: x.grad.clone() for n, x in model.named_parameters() if x.grad is not None}))
    (l_ref, g_ref), (l_c, g_c) = grads
    assert float(l_c) == pytest.approx(float(l_ref), rel=1e-5)
    assert g_ref.keys() == g_c.keys() and all(".layer.1." in n for n in g_ref)  # only the top layer gets gradients
    _assert_grads_close(g_c, g_ref)


def test_fp16_cache_bound(tiny_encoder_factory, cache_dir):
    """fp16 storage of the prefix states: embeddings within cosine 0.9999 of the uncached ones."""
    enc = tiny_encoder_factory(train_layers=1, prefix_cache=True)  # fp16 default
    enc.eval()
    ref = tiny_encoder_factory(train_layers=1).eval()
    texts = TEXTS_P + TEXTS_Q
    a = encode_texts(enc, texts, "passage")
    b = encode_texts(ref, texts, "passage")
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert float(cos.min()) >= 0.9999
    meta = json.loads(next(cache_dir.glob("*/meta.json")).read_text())
    assert meta["dtype"] == "fp16" and meta["split_layer"] == 1


def test_cache_reused_and_never_stale(tiny_encoder_factory, cache_dir):
    enc = tiny_encoder_factory(train_layers=1, prefix_cache=True)
    ids = enc.token_ids(TEXTS_P, "passage")
    first = pc.load_or_build(enc, ids, "passage", progress=False)
    assert pc.load_or_build(enc, ids, "passage", progress=False).path == first.path  # reused
    assert len([p for p in cache_dir.iterdir() if not p.name.startswith(".")]) == 1  # beside it: .{key}.lock
    # edited text, other max_length, other weights, other split, other dtype: each a new entry
    edited = enc.token_ids([*TEXTS_P[:-1], TEXTS_P[-1] + " x"], "passage")
    short = tiny_encoder_factory(train_layers=1, prefix_cache=True, max_length=8)
    other_w = tiny_encoder_factory(train_layers=1, prefix_cache=True)
    with torch.no_grad():
        other_w.query_model.encoder.layer[0].output.dense.weight.add_(1e-3)
    fp32 = tiny_encoder_factory(train_layers=1, prefix_cache=True, prefix_cache_dtype="fp32")
    paths = {first.path}
    paths.add(pc.load_or_build(enc, edited, "passage", progress=False).path)
    paths.add(pc.load_or_build(short, short.token_ids(TEXTS_P, "passage"), "passage", progress=False).path)
    paths.add(pc.load_or_build(other_w, ids, "passage", progress=False).path)
    paths.add(pc.load_or_build(fp32, ids, "passage", progress=False).path)
    assert len(paths) == 5
    # weights of a TRAINABLE layer do not change the frozen prefix: same entry
    top = tiny_encoder_factory(train_layers=1, prefix_cache=True)
    with torch.no_grad():
        top.query_model.encoder.layer[1].output.dense.weight.add_(1.0)
    assert pc.load_or_build(top, ids, "passage", progress=False).path == first.path
    # the states of the foreign-weights entry really differ
    a = pc.load_or_build(other_w, ids, "passage", progress=False)
    assert not np.array_equal(np.asarray(a.states), np.asarray(first.states))


def test_half_written_entry_is_never_read(tiny_encoder_factory, cache_dir):
    """A killed build leaves a .tmp directory (no meta.json at the final name): it is ignored and cleaned."""
    enc = tiny_encoder_factory(train_layers=1, prefix_cache=True)
    ids = enc.token_ids(TEXTS_P, "passage")
    key = pc._key(pc.fingerprint(enc, "passage"), "fp16", ids)
    dead = cache_dir / f"{key}.tmp-999999999-abc"  # pid that does not exist
    dead.mkdir(parents=True)
    (dead / "states.bin").write_bytes(b"garbage")
    states = pc.load_or_build(enc, ids, "passage", progress=False)
    assert states.path == cache_dir / key and not dead.exists()
    assert len(states) == len(ids) and states[0].shape == (len(ids[0]), 32)


def _build_worker(cache_root, model_dir, out_q):
    os.environ["HYBRID_RETRIEVAL_CACHE"] = cache_root
    from hybrid_retrieval.models.encoder import DualEncoder

    enc = DualEncoder(name=model_dir, max_length=32, train_layers=1, prefix_cache=True)
    states = pc.load_or_build(enc, enc.token_ids(TEXTS_P * 20, "passage"), "passage", progress=False)
    out_q.put((str(states.path), float(np.asarray(states.states, dtype=np.float64).sum())))


@pytest.mark.slow
def test_two_jobs_building_the_same_entry(tiny_model_dir, tmp_path):
    got = results_of_processes(_build_worker, [(str(tmp_path / "c"), str(tiny_model_dir))] * 2)
    assert got[0] == got[1]
    entries = [p for p in (tmp_path / "c" / "prefix").iterdir() if not p.name.startswith(".")]  # .{key}.lock beside
    assert len(entries) == 1 and (entries[0] / "meta.json").exists() and (entries[0] / "manifest.json").exists()


def test_evaluation_from_cache_equals_uncached(tiny_data, tiny_encoder_factory, cache_dir):
    from hybrid_retrieval.data.lareqa import load_lareqa
    from hybrid_retrieval.evaluation.lareqa_eval import EvalCorpus, evaluate_embeddings

    corpus = EvalCorpus.from_dataset(load_lareqa(tiny_data[1], name="tiny"))
    flats = []
    for cached in (False, True):
        enc = tiny_encoder_factory(train_layers=1, prefix_cache=cached, prefix_cache_dtype="fp32")
        q = encode_texts(enc, corpus.q_texts, "query", batch_size=7)
        c = encode_texts(enc, corpus.c_texts, "passage", batch_size=7)
        flats.append(evaluate_embeddings(corpus, q, c).flat())
    assert flats[0].keys() == flats[1].keys()
    for k, v in flats[0].items():
        assert flats[1][k] == pytest.approx(v, abs=1e-6), k


# ------------------------------------------------------------------------------------------ DDP (2 ranks)
B, WORLD = 4, 2


def _ddp_worker(rank, port, model_dir, cache_root, out_path):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    os.environ["HYBRID_RETRIEVAL_CACHE"] = cache_root
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        from hybrid_retrieval.models.encoder import DualEncoder

        results = []
        for chunk in (None, 2):
            torch.manual_seed(0)
            enc = DualEncoder(name=model_dir, max_length=32, train_layers=1, prefix_cache=True, prefix_cache_dtype="fp32")
            enc.eval()  # no dropout: ranks draw different masks than one process would
            lo, hi = rank * B, (rank + 1) * B
            q = _features(enc, TEXTS_Q[: 2 * B][lo:hi], "query", cached=True)
            p = _features(enc, TEXTS_P[: 2 * B][lo:hi], "passage", cached=True)
            loss = contrastive_backward(enc.encode, InfoNCELoss(temperature=0.05), q, p, chunk_size=chunk)
            params = [x for x in enc.parameters() if x.requires_grad]
            average_gradients(params)
            global_loss = all_gather_variable(loss.reshape(1)).mean()
            results.append((float(global_loss), [x.grad.clone() for x in params]))
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_cached_two_ranks_equal_uncached_one_process(tiny_model_dir, tiny_encoder_factory, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "rank0.pt"
    args = (port, str(tiny_model_dir), str(tmp_path / "cache"), str(out))
    mp.start_processes(_ddp_worker, args=args, nprocs=WORLD, join=True, start_method="spawn")
    got = torch.load(out)
    torch.manual_seed(0)
    enc = tiny_encoder_factory(train_layers=1).eval()
    q = _features(enc, TEXTS_Q[: 2 * B], "query", cached=False)
    p = _features(enc, TEXTS_P[: 2 * B], "passage", cached=False)
    loss = contrastive_backward(enc.encode, InfoNCELoss(temperature=0.05), q, p)
    ref = {i: x.grad for i, x in enumerate(x for x in enc.parameters() if x.requires_grad)}
    for chunk, (loss_ddp, grads) in zip((None, 2), got, strict=True):
        assert loss_ddp == pytest.approx(float(loss), rel=1e-5), chunk
        _assert_grads_close(dict(enumerate(grads)), ref)
