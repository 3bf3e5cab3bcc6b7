"""Encode many texts once: de-duplicated, length-sorted, dynamically padded, without gradients."""

from __future__ import annotations

import numpy as np
import torch

from hybrid_retrieval.models.encoder import DualEncoder


def encode_plan(encoder: DualEncoder, texts: list[str], kind: str) -> tuple[list[list[int]], np.ndarray]:
    """Tokenize unique texts once; returns (token id lists, inverse index text -> unique)."""
    uniq, inverse = np.unique(np.array(texts, dtype=object), return_inverse=True)
    return encoder.token_ids(uniq.tolist(), kind), inverse


def pad_batch(ids: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


@torch.no_grad()
def encode_token_ids(
    encoder: DualEncoder,
    ids: list[list[int]],
    kind: str,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "encode",
) -> torch.Tensor:
    """(n, dim) float32 embeddings of pre-tokenized texts, longest first so padding stays minimal."""
    order = np.argsort([-len(x) for x in ids], kind="stable")
    pad_id = encoder.tokenizer.pad_token_id or 0
    out = torch.empty((len(ids), encoder.dim), dtype=torch.float32)
    starts = range(0, len(ids), batch_size)
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    was_training = encoder.training
    encoder.eval()
    try:
        for lo in starts:
            sel = order[lo : lo + batch_size]
            feats = {k: v.to(device) for k, v in pad_batch([ids[i] for i in sel], pad_id).items()}
            out[torch.from_numpy(sel)] = encoder.encode(feats, kind).float().cpu()
    finally:
        encoder.train(was_training)
    return out


def encode_texts(encoder: DualEncoder, texts: list[str], kind: str, **kwargs) -> torch.Tensor:
    """(len(texts), dim): each distinct text is encoded exactly once."""
    ids, inverse = encode_plan(encoder, texts, kind)
    emb = encode_token_ids(encoder, ids, kind, **kwargs)
    return emb[torch.from_numpy(inverse.astype(np.int64))]
