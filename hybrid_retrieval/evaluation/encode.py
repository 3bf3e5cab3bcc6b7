"""Encode many texts once: de-duplicated, length-sorted, dynamically padded, without gradients.

With a frozen-prefix encoder (``train_layers=k``, ``prefix_cache=true``) the lower layers' states come
from the disk cache and only the top k layers run here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hybrid_retrieval.common.padding import length_sorted_batches, pad_rows
from hybrid_retrieval.models.encoder import DualEncoder


def encode_plan(encoder: DualEncoder, texts: list[str], kind: str) -> tuple[list[list[int]], np.ndarray]:
    """Tokenize unique texts once; returns (token id lists, inverse index text -> unique)."""
    uniq, inverse = np.unique(np.array(texts, dtype=object), return_inverse=True)
    return encoder.token_ids(uniq.tolist(), kind), inverse


@torch.no_grad()
def encode_rows(
    encoder: DualEncoder,
    rows: Sequence,
    kind: str,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "encode",
) -> torch.Tensor:
    """(n, dim) float32 embeddings of token-id or prefix-state rows, longest first so padding stays minimal."""
    pad_id = encoder.tokenizer.pad_token_id or 0
    out = torch.empty((len(rows), encoder.dim), dtype=torch.float32)
    with encoder.evaluating():
        for sel in length_sorted_batches([len(x) for x in rows], batch_size, progress, desc):
            feats = {k: v.to(device) for k, v in pad_rows([rows[i] for i in sel], pad_id).items()}
            out[torch.from_numpy(sel)] = encoder.encode(feats, kind).float().cpu()
    return out


def encode_token_ids(encoder: DualEncoder, ids: list[list[int]], kind: str, progress: bool = False, **kwargs) -> torch.Tensor:
    """(n, dim) embeddings of pre-tokenized texts (through the prefix cache when the encoder uses one)."""
    return encode_rows(encoder, encoder.model_rows(ids, kind, progress), kind, progress=progress, **kwargs)


def encode_texts(encoder: DualEncoder, texts: list[str], kind: str, **kwargs) -> torch.Tensor:
    """(len(texts), dim): each distinct text is encoded exactly once."""
    ids, inverse = encode_plan(encoder, texts, kind)
    emb = encode_token_ids(encoder, ids, kind, **kwargs)
    return emb[torch.from_numpy(inverse.astype(np.int64))]
