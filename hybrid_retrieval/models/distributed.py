"""Differentiable all-gather: every rank gets every rank's tensor; gradients flow back to the owner.

Forward: ``all_gather``. Backward: the gradient that *all* ranks computed for rank r's slice is summed
(``all_reduce``) and rank r keeps its slice. Together with DDP's gradient averaging this yields exactly
the gradient of the global-batch loss (see ``tests/test_distributed.py``, which checks 2 × B against
1 × 2B on CPU with gloo). Without an initialised process group the functions are the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_info() -> tuple[int, int]:
    if dist_ready():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)  # (world * rows, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        lo = ctx.rank * ctx.rows
        return grad[lo : lo + ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (same shape on every rank) over ranks, in rank order, keeping gradients."""
    if not dist_ready():
        return tensor
    return _AllGather.apply(tensor)


@torch.no_grad()
def all_gather_variable(tensor: torch.Tensor) -> torch.Tensor:
    """Gather tensors whose first dimension differs per rank (no gradient): pads, gathers, trims."""
    if not dist_ready():
        return tensor
    world = dist.get_world_size()
    n = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    max_n = int(max(s.item() for s in sizes))
    padded = torch.zeros((max_n, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)], dim=0)


@torch.no_grad()
def average_gradients(parameters) -> None:
    """Average ``.grad`` over ranks with one flat ``all_reduce`` (what DDP's reducer would do)."""
    if not dist_ready():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    lo = 0
    for g in grads:
        g.copy_(flat[lo : lo + g.numel()].view_as(g))
        lo += g.numel()


@torch.no_grad()
def all_ranks_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True only if ``flag`` is true on every rank (so all ranks take the same branch, e.g. skip a step)."""
    if not dist_ready():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def gather_objects(obj) -> list:
    """``obj`` of every rank, by rank (``[obj]`` without DDP); a collective: every rank must call it together."""
    if not dist_ready():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
