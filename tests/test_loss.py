"""InfoNCE with duplicate masking, checked against a brute-force per-query reference."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from hybrid_retrieval.models.grad_cache import contrastive_backward
from hybrid_retrieval.models.loss import InfoNCELoss, duplicate_mask


def reference_loss(q, p, neg, p_keys, neg_keys, scale, symmetric=False):
    """Loops, one query at a time: the positive plus the first copy of every other distinct passage text."""
    q, p = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
    cands = p if neg is None else torch.cat([p, F.normalize(neg, dim=-1)])
    keys = p_keys.tolist() + ([] if neg_keys is None else neg_keys.tolist())
    terms = []
    for i in range(q.shape[0]):
        own, kept, seen = keys[i], [i], {keys[i]}
        for j, key in enumerate(keys):
            if key not in seen:
                kept.append(j)
                seen.add(key)
        scores = scale * (q[i] @ cands[kept].T)  # the positive is kept[0]
        terms.append(torch.logsumexp(scores, 0) - scores[0])
        assert own == keys[kept[0]]
    loss = torch.stack(terms).mean()
    if symmetric:
        back = []
        for i in range(p.shape[0]):
            kept = [i] + [j for j in range(q.shape[0]) if p_keys[j] != p_keys[i]]
            scores = scale * (p[i] @ q[kept].T)
            back.append(torch.logsumexp(scores, 0) - scores[0])
        loss = 0.5 * (loss + torch.stack(back).mean())
    return loss


def _inputs(b=6, k=0, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, p = torch.randn(b, dim, generator=g), torch.randn(b, dim, generator=g)
    neg = torch.randn(b * k, dim, generator=g) if k else None
    return q, p, neg


# Keys: queries 0, 2 and 4 share one answer text (key 7); 1 and 3 share key 3; 5 is alone. Hard negatives
# (k=1) repeat an in-batch positive (key 3), repeat each other (key 40) or are new.
P_KEYS = torch.tensor([7, 3, 7, 3, 7, 9])
NEG_KEYS = torch.tensor([3, 40, 40, 41, 9, 42])


@pytest.mark.parametrize("k", [0, 1])
@pytest.mark.parametrize("symmetric", [False, True])
def test_masked_loss_and_gradients_match_brute_force(k, symmetric):
    q, p, neg = _inputs(k=k)
    neg_keys = NEG_KEYS if k else None
    p[2], p[4], p[3] = p[0], p[0], p[1]  # equal keys are equal texts: equal vectors
    if k:  # a hard negative with a positive's key is that positive's text: make the vectors equal too
        neg[0] = p[1]
        neg[4] = p[5]
        neg[2] = neg[1]
    for tensor in (q, p) + ((neg,) if k else ()):
        tensor.requires_grad_(True)
    loss_fn = InfoNCELoss(temperature=0.05, mask_duplicates=True, symmetric=symmetric)
    got = loss_fn(q, p, neg, p_keys=P_KEYS, neg_keys=neg_keys)
    grads = torch.autograd.grad(got, [t for t in (q, p, neg) if t is not None])
    want = reference_loss(q, p, neg, P_KEYS, neg_keys, scale=20.0, symmetric=symmetric)
    want_grads = torch.autograd.grad(want, [t for t in (q, p, neg) if t is not None])
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    for a, b in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # Not vacuous: the plain loss over the same batch differs (it counts false negatives and repeats).
    plain = InfoNCELoss(temperature=0.05, symmetric=symmetric)(q, p, neg)
    assert abs(float(plain.detach()) - float(got.detach())) > 1e-3


def test_without_duplicates_masking_changes_nothing():
    q, p, neg = _inputs(k=1, seed=1)
    keys, neg_keys = torch.arange(6), torch.arange(6, 12)
    for sym in (False, True):
        masked = InfoNCELoss(mask_duplicates=True, symmetric=sym)(q, p, neg, p_keys=keys, neg_keys=neg_keys)
        plain = InfoNCELoss(symmetric=sym)(q, p, neg)
        assert float(masked) == pytest.approx(float(plain), rel=1e-6)


def test_duplicate_mask_keeps_label_even_when_it_is_a_later_copy():
    keys = torch.tensor([5, 5, 6, 6, 5])  # query 1's positive is the second copy of text 5
    mask = duplicate_mask(keys, labels=torch.tensor([1, 3]))
    assert mask.tolist() == [
        [True, False, False, True, True],  # own text 5: only column 1 (its label); text 6 once (column 2)
        [False, True, True, False, True],  # own text 6: only column 3; text 5 once (column 0)
    ]


def test_missing_keys_is_a_clear_error():
    q, p, neg = _inputs(k=1)
    with pytest.raises(ValueError, match="mask_duplicates=true needs"):
        InfoNCELoss(mask_duplicates=True)(q, p)
    with pytest.raises(ValueError, match="neg_keys"):
        InfoNCELoss(mask_duplicates=True)(q, p, neg, p_keys=P_KEYS)


class _Lin(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 8)

    def encode(self, feats, kind):
        return self.lin(feats["x"]) + (0.1 if kind == "query" else 0.0)


def test_gradient_caching_with_masking_equals_one_pass():
    g = torch.Generator().manual_seed(3)
    q = {"x": torch.randn(6, 4, generator=g), "attention_mask": torch.ones(6, 1)}
    p = {"x": torch.randn(6, 4, generator=g), "attention_mask": torch.ones(6, 1)}
    p["x"][2] = p["x"][0]  # same text, same input
    grads = []
    for chunk in (None, 2):
        enc = _Lin()
        loss_fn = functools.partial(InfoNCELoss(mask_duplicates=True), p_keys=torch.tensor([0, 1, 0, 2, 3, 4]))
        contrastive_backward(enc.encode, loss_fn, q, p, chunk_size=chunk)
        grads.append([t.grad.clone() for t in enc.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
