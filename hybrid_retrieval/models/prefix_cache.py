"""Disk cache of frozen-prefix hidden states: every text runs the lower L−k layers once, ever.

With ``model.encoder.train_layers=k`` the embeddings and lower layers are frozen and dropout-free, so a
text's states after layer L−k are a pure function of (frozen weights, token ids). They are computed
once (no grad, length-sorted batches), stored *ragged* (no padding) in one memory-mapped array, and
every later job, epoch and evaluation reads them back instead of running those layers.

Layout of one cache entry, ``{cache_root}/prefix/{key}/``:

* ``states.bin``  (total_tokens, hidden) fp16 (default) or fp32, rows of text i = ``offsets[i]:offsets[i+1]``
* ``offsets.npy`` (n_texts + 1,) int64
* ``meta.json``   what the key was made of (for people; the key itself is the hash)
* ``manifest.json`` sizes and digests of the files above, written last (:mod:`hybrid_retrieval.common.cache_entry`)

``key`` = hash of: the frozen weights' bytes (the *fingerprint*), the split layer, the dtype and every
text's token ids (which already encode tokenizer, prefixes, max_length and the text itself). A stale or
foreign entry therefore has another key and is never read. Entries are built in a private temporary
directory and renamed into place (atomic on POSIX) by one process while the others wait for it; a killed
build leaves only a ``.tmp-*`` directory, which is never read, and a damaged entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hybrid_retrieval.common.cache_entry import ensure_entry
from hybrid_retrieval.common.padding import length_sorted_batches, pad_batch
from hybrid_retrieval.common.paths import cache_root
from hybrid_retrieval.models.digest import tensor_digest

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_DTYPES = {"fp16": np.float16, "fp32": np.float32}


def prefix_cache_root() -> Path:
    """``$HYBRID_RETRIEVAL_CACHE/prefix`` (or the user cache dir), shared by every job and run."""
    return cache_root() / "prefix"


def fingerprint(encoder, kind: str) -> str:
    """Hash of the frozen prefix of the ``kind`` tower: its module layout and every frozen weight's bytes."""
    model = encoder.tower(kind)
    named = [(f"{i}.{n}", t) for i, m in enumerate(encoder._frozen_modules(model)) for n, t in m.state_dict().items()]
    return tensor_digest(named, salt=f"{type(model).__name__}|split={encoder.split_layer}|v{FORMAT_VERSION}")


def _key(fp: str, dtype: str, ids: Sequence[Sequence[int]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{fp}|{dtype}|{len(ids)}".encode())
    for x in ids:
        h.update(np.asarray(x, dtype=np.int32).tobytes())
        h.update(b"\xff\xff\xff\xff")  # separator: [1,2]+[3] != [1]+[2,3]
    return h.hexdigest()


class PrefixStates:
    """Read-only ragged view of one cache entry: ``states[i]`` is text i's (len_i, hidden) array."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.offsets = np.load(self.path / "offsets.npy")
        total, hidden = int(self.offsets[-1]), int(self.meta["hidden"])
        dtype = _DTYPES[self.meta["dtype"]]
        self.states = np.memmap(self.path / "states.bin", dtype=dtype, mode="r", shape=(total, hidden))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.states[self.offsets[i] : self.offsets[i + 1]]

    def rows(self) -> list[np.ndarray]:
        return [self[i] for i in range(len(self))]

    @property
    def nbytes(self) -> int:
        return int(self.states.nbytes)


def _build(encoder, ids: Sequence[Sequence[int]], kind: str, dtype: str, out: Path, batch_size: int, progress: bool):
    """Compute every text's prefix states into ``out`` (a fresh directory)."""
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    hidden = int(encoder.tower(kind).config.hidden_size)
    states = np.memmap(out / "states.bin", dtype=_DTYPES[dtype], mode="w+", shape=(max(1, int(offsets[-1])), hidden))
    pad_id = encoder.tokenizer.pad_token_id or 0
    device = next(encoder.parameters()).device
    with encoder.evaluating():
        for sel in length_sorted_batches(lengths, batch_size, progress, f"prefix cache ({kind}, {len(ids)} texts)"):
            feats = {k: v.to(device) for k, v in pad_batch([ids[i] for i in sel], pad_id).items()}
            h = encoder.encode_prefix(feats, kind).float().cpu().numpy()  # (b, seq, hidden)
            for row, i in enumerate(sel):
                states[offsets[i] : offsets[i + 1]] = h[row, : lengths[i]]
    states.flush()
    del states
    np.save(out / "offsets.npy", offsets)


def load_or_build(
    encoder, ids: Sequence[Sequence[int]], kind: str, root: Path | None = None, batch_size: int = 128, progress: bool = True
) -> PrefixStates:
    """The cache entry for these token ids under ``encoder``'s frozen ``kind`` tower, built if missing."""
    if encoder.train_layers is None:
        raise ValueError("prefix cache needs model.encoder.train_layers=k")
    dtype = encoder.prefix_cache_dtype
    fp = fingerprint(encoder, kind)
    key = _key(fp, dtype, ids)
    root = Path(root) if root is not None else prefix_cache_root()
    final = root / key
    t0 = time.perf_counter()
    built = False

    def build(folder: Path) -> None:
        nonlocal built
        _build(encoder, ids, kind, dtype, folder, batch_size, progress)
        meta = {
            "format": FORMAT_VERSION,
            "fingerprint": fp,
            "model": getattr(encoder, "name", None),
            "split_layer": encoder.split_layer,
            "train_layers": encoder.train_layers,
            "kind": kind,
            "dtype": dtype,
            "hidden": int(encoder.tower(kind).config.hidden_size),
            "max_length": encoder.max_length,
            "prefix": encoder.query_prefix if kind == "query" else encoder.passage_prefix,
            "n_texts": len(ids),
            "n_tokens": int(sum(len(x) for x in ids)),
            "build_s": round(time.perf_counter() - t0, 2),
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))
        built = True

    states = PrefixStates(ensure_entry(final, build, "prefix cache"))
    if built:
        log.info(
            "prefix cache built: %s (%d texts, %.0f MB, %.1fs)", final, len(ids), states.nbytes / 2**20, time.perf_counter() - t0
        )
    else:
        log.info("prefix cache hit: %s (%d texts)", final, len(ids))
    return states


def cached_prefix_rows(encoder, ids: Sequence[Sequence[int]], kind: str, **kwargs) -> list[np.ndarray]:
    """Prefix states for each entry of ``ids`` (distinct texts computed and stored once), as ragged rows."""
    index: dict[tuple[int, ...], int] = {}
    uniq: list[Sequence[int]] = []
    where = []
    for x in ids:
        t = tuple(x)
        if t not in index:
            index[t] = len(uniq)
            uniq.append(x)
        where.append(index[t])
    states = load_or_build(encoder, uniq, kind, **kwargs)
    return [states[i] for i in where]
