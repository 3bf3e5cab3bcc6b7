"""Padding: token-id lists, or cached frozen-prefix states, into batch tensors (a bottom module: data, models
and evaluation all pad, none of them owns it).

A *row* is either a list of token ids or a ``(len, hidden)`` array of prefix states
(:mod:`hybrid_retrieval.models.prefix_cache`); :func:`pad_rows` pads whichever it is given, so the
training and evaluation loaders work the same with and without the prefix cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` (b, width) right-padded with ``pad_id`` and ``attention_mask`` (b, width)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.as_tensor(x)
        mask[i, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def pad_states(rows: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """``prefix_hidden`` (b, width, hidden) float32, zero-padded, and ``attention_mask`` (b, width)."""
    width = max(len(r) for r in rows)
    hidden = np.zeros((len(rows), width, rows[0].shape[1]), dtype=np.float32)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        hidden[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return {"prefix_hidden": torch.from_numpy(hidden), "attention_mask": mask}


def is_state_row(row) -> bool:
    return isinstance(row, np.ndarray) and row.ndim == 2


def pad_rows(rows: Sequence, pad_id: int) -> dict[str, torch.Tensor]:
    """Pad token-id rows or prefix-state rows (all of one kind)."""
    return pad_states(rows) if is_state_row(rows[0]) else pad_batch(rows, pad_id)


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, progress: bool = False, desc: str = ""
) -> Iterator[np.ndarray]:
    """Indices of ``batch_size`` rows at a time, longest first (padding stays small); tqdm bar if ``progress``."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    starts = range(0, len(order), batch_size)
    if progress:
        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    for lo in starts:
        yield order[lo : lo + batch_size]
