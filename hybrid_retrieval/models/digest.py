"""Content digests of tensors: what identifies frozen weights exactly (prefix-cache keys, checkpoints)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch


def encoder_digest(encoder) -> str:
    """Identifies a model's weights exactly (an index or embedding shards record it; a query compares it)."""
    return tensor_digest(sorted(encoder.state_dict().items()))


def tensor_digest(named: Iterable[tuple[str, torch.Tensor]], salt: str = "") -> str:
    """Hash of names, shapes, dtypes and bytes, in the order given."""
    h = hashlib.blake2b(salt.encode(), digest_size=16)
    for name, t in named:
        arr = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(arr.shape)}:{arr.dtype}".encode())
        h.update(arr.view(torch.uint8).numpy())
    return h.hexdigest()
