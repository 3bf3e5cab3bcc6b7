"""Gathered negatives across 2 CPU processes (gloo) give the 1 × 2B loss and gradients.

Each rank encodes its half of the global batch, scores its queries against the passages of both
ranks (differentiable all-gather), back-propagates (optionally with gradient caching), and the
gradients are averaged over ranks. That must equal one process running the whole batch.
"""

from __future__ import annotations

import functools
import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from hybrid_retrieval.models.distributed import all_gather_variable, all_gather_with_grad, average_gradients
from hybrid_retrieval.models.grad_cache import contrastive_backward
from hybrid_retrieval.models.loss import InfoNCELoss
from hybrid_retrieval.training.evaluator import gather_rows

B, DIM, WORLD = 8, 16, 2


class TinyEncoder(nn.Module):
    """Stand-in for a transformer: embeds token ids, mean-pools over the mask, one MLP."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 32), nn.Tanh(), nn.Linear(32, DIM))

    def encode(self, feats, kind):
        h = self.emb(feats["input_ids"])  # (b, seq, dim)
        m = feats["attention_mask"].unsqueeze(-1).float()
        pooled = (h * m).sum(1) / m.sum(1)
        return self.mlp(pooled) + (0.1 if kind == "query" else 0.0)


def make_batch(n, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (n, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[:, 4:] = (torch.rand(n, 2, generator=g) > 0.5).long()
    return {"input_ids": ids, "attention_mask": mask}


def run_case(encoder, loss_fn, q, p, n, chunk, keys=None):
    """``keys`` = (passage keys, negative keys) for a duplicate-masking loss (shared texts across ranks)."""
    call = functools.partial(loss_fn, p_keys=keys[0], neg_keys=keys[1]) if keys is not None else loss_fn
    loss = contrastive_backward(encoder.encode, call, q, p, n, chunk_size=chunk)
    params = list(encoder.parameters()) + list(loss_fn.parameters())
    average_gradients(params)
    return loss, [x.grad.clone() for x in params]


CASES = [  # (hard negatives per example, symmetric, learnable temperature, grad-cache chunk, mask duplicates)
    (0, False, False, None, False),
    (1, True, True, None, False),
    (1, False, True, 3, False),
    (0, True, False, None, True),
    (1, False, False, 3, True),
]


def global_keys(k):
    """Text keys of the global batch: positive i has key i % 5, so copies sit on both ranks; negatives
    repeat each other and some positives."""
    return torch.arange(2 * B) % 5, (torch.arange(2 * B * k) % 7 + 2 if k else None)


def _slice(feats, lo, hi):
    return {k: v[lo:hi] for k, v in feats.items()}


_CPU_MODULE = SimpleNamespace(device=torch.device("cpu"))


def _fake_trainer(global_zero: bool) -> SimpleNamespace:
    return SimpleNamespace(is_global_zero=global_zero)


def _worker(rank, port, out_path):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    results = []
    try:
        for k, sym, learn, chunk, mask in CASES:
            torch.manual_seed(0)
            enc = TinyEncoder()
            loss_fn = InfoNCELoss(temperature=0.1, symmetric=sym, learnable_temperature=learn, mask_duplicates=mask)
            q, p = make_batch(2 * B, 1), make_batch(2 * B, 2)
            lo, hi = rank * B, (rank + 1) * B
            neg = _slice(make_batch(2 * B * k, 3), lo * k, hi * k) if k else None
            pk, nk = global_keys(k)
            keys = (pk[lo:hi], nk[lo * k : hi * k] if k else None) if mask else None
            loss, grads = run_case(enc, loss_fn, _slice(q, lo, hi), _slice(p, lo, hi), neg, chunk, keys)
            global_loss = all_gather_variable(loss.reshape(1)).mean()
            results.append((float(global_loss), grads))
        # Variable-size gather (evaluation path): rank r contributes r + 1 rows.
        gathered = all_gather_variable(torch.full((rank + 1, 2), float(rank)))
        x = torch.ones(3, requires_grad=True)
        (all_gather_with_grad(x * (rank + 1)).sum() * (rank + 1)).backward()
        # Evaluators' assembly: rank r encoded rows r, r+2, ... of 5; rank 0 gets the full matrix in order.
        mine = torch.arange(rank, 5, WORLD)
        rows = gather_rows(_fake_trainer(rank == 0), _CPU_MODULE, mine, (mine * 10).float().unsqueeze(1).repeat(1, 2), 5)
        assert (rows is None) == (rank != 0)
        if rank == 0:
            torch.save({"results": results, "gathered": gathered, "xgrad": x.grad, "rows": rows}, out_path)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_equal_one_big_batch(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True, start_method="spawn")
    got = torch.load(out)
    for (k, sym, learn, chunk, mask), (loss_2xb, grads_2xb) in zip(CASES, got["results"], strict=True):
        torch.manual_seed(0)
        enc = TinyEncoder()
        loss_fn = InfoNCELoss(temperature=0.1, symmetric=sym, learnable_temperature=learn, mask_duplicates=mask)
        q, p = make_batch(2 * B, 1), make_batch(2 * B, 2)
        neg = make_batch(2 * B * k, 3) if k else None
        loss_1x2b, grads_1x2b = run_case(enc, loss_fn, q, p, neg, None, global_keys(k) if mask else None)
        assert loss_2xb == pytest.approx(float(loss_1x2b), rel=1e-5), (k, sym, learn, chunk, mask)
        if mask:  # not vacuous: the keys really remove candidates on the one-process side
            torch.manual_seed(0)
            plain, _ = run_case(TinyEncoder(), InfoNCELoss(temperature=0.1, symmetric=sym), q, p, neg, None)
            assert abs(float(plain) - float(loss_1x2b)) > 1e-3
        for a, b in zip(grads_2xb, grads_1x2b, strict=True):
            err = float((a - b).norm() / b.norm().clamp_min(1e-12))
            assert err <= 1e-5, (k, sym, learn, chunk, mask, err)
    assert got["gathered"].tolist() == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
    # d/dx of sum_r (r+1) * sum(all_gather(x_s * (s+1))) on rank 0: (s+1)=1 times sum_r (r+1) = 3.
    assert got["xgrad"].tolist() == [3.0, 3.0, 3.0]
    assert got["rows"].tolist() == [[10.0 * i] * 2 for i in range(5)]


def test_gather_rows_single_process_checks_coverage():
    emb = torch.arange(8.0).reshape(4, 2)  # (4, dim 2): row i of the input holds 2i, 2i+1
    full = gather_rows(_fake_trainer(True), _CPU_MODULE, torch.tensor([2, 0, 3, 1]), emb, 4)
    assert full.tolist() == [[2.0, 3.0], [6.0, 7.0], [0.0, 1.0], [4.0, 5.0]]
    # A partial validation (a row missing) or a row twice must not give a matrix with uninitialised rows.
    assert gather_rows(_fake_trainer(True), _CPU_MODULE, torch.tensor([0, 1, 2]), emb[:3], 4) is None
    assert gather_rows(_fake_trainer(True), _CPU_MODULE, torch.tensor([0, 1, 1, 2]), emb, 4) is None
    assert gather_rows(_fake_trainer(False), _CPU_MODULE, torch.tensor([0, 1, 2, 3]), emb, 4) is None


def test_no_process_group_is_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x and all_gather_variable(x) is x
    loss = InfoNCELoss()(torch.randn(4, 8), torch.randn(4, 8))
    assert torch.isfinite(loss)
