"""Gradient caching equals the full-batch computation (dropout off and on, hard negatives, learnable T)."""

from __future__ import annotations

import copy

import pytest
import torch

from hybrid_retrieval.models.grad_cache import contrastive_backward, encode_bucketed
from hybrid_retrieval.models.loss import InfoNCELoss


def _batch(encoder, n, seed, kind):
    g = torch.Generator().manual_seed(seed)
    texts = [
        " ".join(f"w{int(x)}" for x in torch.randint(0, 50, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g))
        for _ in range(n)
    ]
    return encoder.tokenize(texts, kind)


def _full_graph_backward(encode, loss_fn, q, p, n, chunk):
    groups = [("query", q), ("passage", p)] + ([("passage", n)] if n is not None else [])
    embs = [encode_bucketed(encode, f, kind, chunk) for kind, f in groups]  # chunk-wise, with the graph
    loss = loss_fn(*embs)
    loss.backward()
    return loss.detach()


def _grads(module):
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def _rel_err(a, b, floor=1e-8):
    """Relative error; ``floor`` keeps mathematically-zero gradients (attention key biases) out of it."""
    return float((a - b).norm() / b.norm().clamp_min(floor))


def assert_same_loss_and_grads(full, cached, enc, enc2) -> None:
    """The cached run's loss (rel 1e-5) and every parameter gradient (rel 1e-4 of the full-batch ones)."""
    assert float(full) == pytest.approx(float(cached), rel=1e-5)
    ga, gb = _grads(enc), _grads(enc2)
    total = float(torch.cat([g.flatten() for g in ga.values()]).norm())
    assert ga.keys() == gb.keys() and len(ga) > 10
    worst = max(_rel_err(gb[k], ga[k], floor=1e-6 * total) for k in ga)
    assert worst <= 1e-4, worst


@pytest.mark.parametrize("dropout", [False, True])
@pytest.mark.parametrize(("negatives", "learnable", "symmetric"), [(0, False, False), (2, True, True)])
def test_grad_cache_matches_full_batch(tiny_encoder_factory, dropout, negatives, learnable, symmetric):
    torch.manual_seed(0)
    enc = tiny_encoder_factory()
    enc.train(dropout)  # dropout layers active only in train mode
    loss_fn = InfoNCELoss(temperature=0.05, learnable_temperature=learnable, symmetric=symmetric)
    enc2, loss2 = copy.deepcopy(enc), copy.deepcopy(loss_fn)
    q, p = _batch(enc, 12, 1, "query"), _batch(enc, 12, 2, "passage")
    n = _batch(enc, 12 * negatives, 3, "passage") if negatives else None

    torch.manual_seed(123)
    if dropout:
        # Same dropout realisation as the cached run: chunk-wise forward WITH the graph, one backward
        # over the full matrix. (A plain full-batch pass draws masks of another shape.)
        full = _full_graph_backward(enc.encode, loss_fn, q, p, n, chunk=5)
    else:
        full = contrastive_backward(enc.encode, loss_fn, q, p, n, chunk_size=None)
    torch.manual_seed(123)
    cached = contrastive_backward(enc2.encode, loss2, q, p, n, chunk_size=5)

    assert_same_loss_and_grads(full, cached, enc, enc2)
    if learnable:
        assert _rel_err(loss2.log_inv_temperature.grad, loss_fn.log_inv_temperature.grad) <= 1e-4


@pytest.mark.parametrize("negatives", [0, 1])
def test_length_buckets_match_one_forward(tiny_encoder_factory, negatives):
    """Bucketed forward (less padding) gives the loss and gradients of one padded forward."""
    torch.manual_seed(0)
    enc = tiny_encoder_factory()
    enc.eval()
    loss_fn = InfoNCELoss(temperature=0.05)
    enc2 = copy.deepcopy(enc)
    q, p = _batch(enc, 12, 1, "query"), _batch(enc, 12, 2, "passage")
    n = _batch(enc, 12 * negatives, 3, "passage") if negatives else None
    full = contrastive_backward(enc.encode, loss_fn, q, p, n)
    bucketed = contrastive_backward(enc2.encode, loss_fn, q, p, n, bucket_size=4)
    assert float(full) == pytest.approx(float(bucketed), rel=1e-5)
    ga, gb = _grads(enc), _grads(enc2)
    total = float(torch.cat([g.flatten() for g in ga.values()]).norm())
    assert ga.keys() == gb.keys() and len(ga) > 10
    assert max(_rel_err(gb[k], ga[k], floor=1e-6 * total) for k in ga) <= 1e-4


def test_length_buckets_pad_less(tiny_encoder_factory):
    """Each bucket is padded only to its own longest text (the point of bucketing)."""
    enc = tiny_encoder_factory()
    q = _batch(enc, 12, 1, "query")
    seen = []
    encode_bucketed(lambda f, kind: (seen.append(f["input_ids"].shape), enc.encode(f, kind))[1], q, "query", 4)
    assert len(seen) == 3
    assert sum(r * w for r, w in seen) < q["input_ids"].numel()
    with pytest.raises(ValueError, match="bucket_size=0"):
        contrastive_backward(enc.encode, InfoNCELoss(), q, q, bucket_size=0)


def test_dropout_really_differs_without_rng_restore(tiny_encoder_factory):
    """Sanity check that the dropout case is meaningful: two passes differ unless the RNG is restored."""
    enc = tiny_encoder_factory()
    enc.train()
    q = _batch(enc, 4, 1, "query")
    with torch.no_grad():
        a, b = enc.encode(q, "query"), enc.encode(q, "query")
    assert not torch.allclose(a, b)


def test_separate_towers_and_pooling(tiny_encoder_factory):
    enc = tiny_encoder_factory(shared=False, pooling="cls")
    assert enc.query_model is not enc.passage_model
    q = _batch(enc, 4, 1, "query")
    p = _batch(enc, 4, 2, "passage")
    loss = InfoNCELoss()(enc.encode(q, "query"), enc.encode(p, "passage"))
    loss.backward()
    for tower in (enc.query_model, enc.passage_model):
        assert any(x.grad is not None and x.grad.abs().sum() > 0 for x in tower.parameters())
    shared = tiny_encoder_factory()
    assert shared.query_model is shared.passage_model
    with torch.no_grad():
        hidden = torch.randn(2, 3, 4)
        mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
        shared.pooling, shared.normalize = "mean", False
        torch.testing.assert_close(shared.pool(hidden, mask)[1], hidden[1, 0])
        torch.testing.assert_close(shared.pool(hidden, mask)[0], hidden[0, :2].mean(0))
