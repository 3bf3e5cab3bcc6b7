"""Corpus-scale encoding: embeddings written to disk in resumable fp16 shards, searched shard by shard.

``encode_to_shards`` encodes ``shard_size`` texts at a time into ``{out}/shard{i:05d}.npy`` (float16, each written
atomically), so peak memory is one shard's texts and embeddings whatever the corpus size, and a killed encode
resumes at the first missing shard (the manifest pins the texts, the encoder weights and the shard size: a
different corpus or model in the same folder is an error, not a silent mix). ``ShardedEmbeddings`` memory-maps
the shards; ``topk`` is exact inner-product search over them, merging each shard's best ``k``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hybrid_retrieval.common.atomic import atomic_file, write_text_atomic
from hybrid_retrieval.common.errors import UserError
from hybrid_retrieval.evaluation.encode import encode_texts
from hybrid_retrieval.models.digest import encoder_digest

MANIFEST = "manifest.json"


def texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _shard_path(out: Path, i: int) -> Path:
    return out / f"shard{i:05d}.npy"


def encode_to_shards(
    encoder,
    texts: Sequence[str],
    kind: str,
    out: str | Path,
    shard_size: int = 50_000,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> ShardedEmbeddings:
    """Embeddings of ``texts`` (as ``kind``) in ``out``, reusing every shard already there; returns them memory-mapped.

    ``on_shard(i)`` is called after shard ``i`` is written (progress hooks; the tests kill an encode with it)."""
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size}: expected >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "n": len(texts),
        "kind": kind,
        "shard_size": int(shard_size),
        "dim": int(encoder.dim),
        "dtype": "float16",
        "texts": texts_digest(texts),
        "encoder": encoder_digest(encoder),
    }
    path = out / MANIFEST
    if path.exists():
        old = json.loads(path.read_text())
        changed = [k for k in manifest if old.get(k) != manifest[k]]
        if changed:
            raise UserError(f"{out}: holds shards of another encode ({', '.join(changed)} differ); use an empty folder")
    else:
        write_text_atomic(path, json.dumps(manifest, indent=1))
    n_shards = -(-len(texts) // shard_size)
    todo = [i for i in range(n_shards) if not _shard_path(out, i).exists()]
    bar = tqdm(
        total=len(texts),
        initial=len(texts) - sum(min(shard_size, len(texts) - i * shard_size) for i in todo),
        unit="text",
        desc=f"encode {kind} shards",
        disable=not progress,
    )
    for i in todo:
        lo, hi = i * shard_size, min(len(texts), (i + 1) * shard_size)
        emb = encode_texts(encoder, list(texts[lo:hi]), kind, batch_size=batch_size, device=device)  # (hi-lo, dim)
        with atomic_file(_shard_path(out, i)) as tmp, open(tmp, "wb") as fh:
            np.save(fh, emb.numpy().astype(np.float16))
        bar.update(hi - lo)
        if on_shard is not None:
            on_shard(i)
    bar.close()
    return ShardedEmbeddings(out)


class ShardedEmbeddings:
    """The shards of one encode, memory-mapped (float16 on disk, float32 per shard when searched)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / MANIFEST).read_text())
        n, size = self.manifest["n"], self.manifest["shard_size"]
        self.paths = [_shard_path(self.folder, i) for i in range(-(-n // size))]
        missing = [p.name for p in self.paths if not p.exists()]
        if missing:
            raise UserError(f"{self.folder}: incomplete encode ({len(missing)} shards missing, first {missing[0]}); rerun it")

    def __len__(self) -> int:
        return int(self.manifest["n"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def shards(self) -> Iterator[tuple[int, np.ndarray]]:
        """(offset of its first row, (rows, dim) float16 memmap) per shard, in order."""
        offset = 0
        for path in self.paths:
            arr = np.load(path, mmap_mode="r")
            yield offset, arr
            offset += arr.shape[0]

    def topk(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner-product top ``k``: (scores, rows), each (n_queries, min(k, n)), best first, over all shards."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))  # (nq, dim)
        k = min(k, len(self))
        best_s = np.full((q.shape[0], 0), -np.inf, dtype=np.float32)
        best_r = np.zeros((q.shape[0], 0), dtype=np.int64)
        for offset, shard in self.shards():
            s = q @ np.asarray(shard, dtype=np.float32).T  # (nq, rows)
            kk = min(k, s.shape[1])
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            cand_s = np.concatenate([best_s, np.take_along_axis(s, part, axis=1)], axis=1)
            cand_r = np.concatenate([best_r, part + offset], axis=1)
            # best first; equal scores: lower row first (the order a flat index over all rows gives)
            order = np.lexsort((cand_r, -cand_s), axis=1)[:, :k]
            best_s, best_r = np.take_along_axis(cand_s, order, axis=1), np.take_along_axis(cand_r, order, axis=1)
        return best_s, best_r

    def to_array(self) -> np.ndarray:
        """All embeddings as one float32 array (for small corpora and tests)."""
        return (
            np.concatenate([np.asarray(s, dtype=np.float32) for _, s in self.shards()])
            if self.paths
            else np.zeros((0, self.dim), np.float32)
        )
