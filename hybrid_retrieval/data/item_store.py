"""Training items at any size: one memory-mapped Arrow table per source, built once, shared by every job.

Sources: the parallel JSONL format (:func:`hybrid_retrieval.data.pairs.iter_jsonl_items`, the same validation and
messages), Parquet files, a ``datasets.save_to_disk`` folder with the same columns, or per-language files aligned
by id (``{lang: path}``, each a JSONL of ``{"id", "query", "positive"[, "negatives"]}``: how translated QA sets and
mMARCO are distributed). Rows: ``id, title, langs, query, positive, negatives`` (the last four aligned by
language). The table sits in ``{cache}/items/{key}/`` where the key is the sources' content hash, the language
filter and the format version: a sweep's jobs build it once (one process builds, DDP ranks and parallel jobs
wait for it; a damaged entry is rebuilt: :mod:`hybrid_retrieval.common.cache_entry`).
:class:`ItemStore` reads rows as :class:`ParallelItem` on access; its :class:`ItemLanguages` matrix is what the
sampler needs, so no Python object per item is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet
from tqdm.auto import tqdm

from hybrid_retrieval.common.atomic import sha256_of
from hybrid_retrieval.common.cache_entry import ensure_entry
from hybrid_retrieval.common.errors import DataFormatError
from hybrid_retrieval.common.paths import cache_root
from hybrid_retrieval.data.item_languages import ItemLanguages, ItemLanguagesBuilder
from hybrid_retrieval.data.pairs import ParallelItem, View, iter_jsonl_items

FORMAT_VERSION = 1
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("title", pa.string()),
        ("langs", pa.list_(pa.string())),
        ("query", pa.list_(pa.string())),
        ("positive", pa.list_(pa.string())),
        ("negatives", pa.list_(pa.list_(pa.string()))),
    ]
)
ROWS_PER_BATCH = 10_000


@dataclass(frozen=True)
class HubDataset:
    """A dataset loaded with ``datasets.load_dataset`` (a Hub name, or a local folder of data files), with the item
    store's columns ``id, langs, query, positive[, negatives, title]``."""

    name: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None

    def load(self) -> datasets.Dataset:
        try:
            return datasets.load_dataset(self.name, self.config, split=self.split, revision=self.revision)
        except Exception as err:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise DataFormatError(
                self.name,
                "dataset",
                f"a dataset datasets.load_dataset can load{' (offline: HF_HUB_OFFLINE=1)' if offline else ''}: "
                f"a cached Hub name or a local folder of data files ({type(err).__name__}: {first})",
            ) from None


def _source_files(source) -> list[Path]:
    if isinstance(source, Mapping):
        return [Path(source[lang]) for lang in sorted(source)]
    path = Path(source)
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def store_key(source, languages: Sequence[str] | None) -> str:
    """The cache key: content of every source file, its role, the language filter, the format version."""
    h = hashlib.sha256(f"v{FORMAT_VERSION}|{sorted(languages) if languages else None}".encode())
    if isinstance(source, HubDataset):  # the loaded table's own fingerprint (datasets: a hash of its files)
        h.update(json.dumps([source.name, source.config, source.split, source.revision, source.load()._fingerprint]).encode())
        return h.hexdigest()[:24]
    if isinstance(source, Mapping):
        h.update(json.dumps(sorted(source)).encode())
    for path in _source_files(source):
        if not path.exists():
            raise DataFormatError(path, "file", "an existing training data file")
        h.update(path.name.encode() + b"|" + sha256_of(path).encode())
    return h.hexdigest()[:24]


def iter_source(source, languages: Sequence[str] | None = None) -> Iterator[ParallelItem]:
    """The items of a source, in its order, validated (errors name the file, the line / row and the field)."""
    keep = set(languages) if languages else None
    if isinstance(source, HubDataset):
        yield from _iter_rows(source.load(), source.name, keep)
        return
    if isinstance(source, Mapping):
        yield from _iter_aligned(source, keep)
        return
    path = Path(source)
    if path.is_dir() or path.suffix == ".parquet":
        yield from _iter_table(path, keep)
    else:
        yield from iter_jsonl_items(path, list(languages) if languages else None)


def _iter_table(path: Path, keep) -> Iterator[ParallelItem]:
    kind = "datasets.save_to_disk folder" if path.is_dir() else "Parquet file"
    try:
        ds = datasets.load_from_disk(str(path)) if path.is_dir() else datasets.Dataset.from_parquet(str(path))
    except (pa.ArrowInvalid, OSError, ValueError, FileNotFoundError) as err:  # truncated, half-copied, not Arrow
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise DataFormatError(path, "file", f"a readable {kind} ({type(err).__name__}: {first})") from None
    yield from _iter_rows(ds, path, keep)


def _iter_rows(ds: datasets.Dataset, path, keep) -> Iterator[ParallelItem]:
    missing = [c for c in ("id", "langs", "query", "positive") if c not in ds.column_names]
    if missing:
        raise DataFormatError(path, "columns", f"id, langs, query, positive[, negatives, title] (missing: {', '.join(missing)})")
    for i, row in enumerate(ds):
        negatives = row.get("negatives") or [[] for _ in row["langs"]]
        if not (len(row["langs"]) == len(row["query"]) == len(row["positive"]) == len(negatives)):
            raise DataFormatError(path, f"row {i} (id {row['id']})", "langs, query, positive, negatives of equal length")
        views = {
            lang: View(q, p, tuple(n))
            for lang, q, p, n in zip(row["langs"], row["query"], row["positive"], negatives, strict=True)
            if keep is None or lang in keep
        }
        if views:
            yield ParallelItem(str(row["id"]), views, str(row.get("title") or ""))


def _iter_aligned(files: Mapping[str, str | Path], keep) -> Iterator[ParallelItem]:
    """Per-language JSONL files aligned by id: an item per id, in order of first appearance (languages sorted)."""
    per_lang: dict[str, dict[str, View]] = {}
    order: dict[str, None] = {}
    for lang in sorted(files):
        if keep is not None and lang not in keep:
            continue
        path = Path(files[lang])
        if not path.exists():
            raise DataFormatError(path, "file", f"the {lang} file of the aligned training data")
        views: dict[str, View] = {}
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataFormatError(path, f"line {n}", f"one JSON object per line ({err.msg})") from None
                if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("query", "positive")):
                    raise DataFormatError(path, f"line {n}", 'an object with "id", "query" and "positive" (strings)')
                item_id = str(obj.get("id"))
                if item_id in views:
                    raise DataFormatError(path, f"line {n} (id {item_id})", "unique ids within a language")
                views[item_id] = View(obj["query"], obj["positive"], tuple(obj.get("negatives") or ()))
                order.setdefault(item_id)
        per_lang[lang] = views
    for item_id in order:
        yield ParallelItem(item_id, {lang: v[item_id] for lang, v in per_lang.items() if item_id in v})


def expected_items(source) -> int | None:
    """How many items a source will yield, when cheap to know (the progress bar's total, so it shows an ETA):
    lines of a JSONL file (counted in binary, ~1 s per GB; blank lines too), rows of a Parquet file (its footer)."""
    if isinstance(source, HubDataset | Mapping):
        return None
    path = Path(source)
    if path.suffix == ".parquet":
        try:
            return pa.parquet.ParquetFile(str(path)).metadata.num_rows
        except (pa.ArrowInvalid, OSError):
            return None  # the reader names the file
    if path.is_file():
        n, last = 0, b"\n"
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 24):
                n += chunk.count(b"\n")
                last = chunk[-1:]
        return n + (last != b"\n")
    return None


def _write_table(items: Iterator[ParallelItem], out: Path, source_name: str, total: int | None = None) -> int:
    languages = ItemLanguagesBuilder()  # its n counts the items written
    with pa.OSFile(str(out / "items.arrow"), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as writer:
        batch: dict[str, list] = {f.name: [] for f in SCHEMA}
        bar = tqdm(total=total, unit="item", unit_scale=True, desc=f"item store ({source_name})", disable=None)
        for item in items:
            langs = item.languages
            batch["id"].append(item.item_id)
            batch["title"].append(item.title)
            batch["langs"].append(langs)
            batch["query"].append([item.views[x].query for x in langs])
            batch["positive"].append([item.views[x].positive for x in langs])
            batch["negatives"].append([list(item.views[x].negatives) for x in langs])
            languages.add(langs)
            bar.update()
            if len(batch["id"]) >= ROWS_PER_BATCH:
                writer.write_batch(pa.record_batch(batch, schema=SCHEMA))
                batch = {f.name: [] for f in SCHEMA}
        if batch["id"]:
            writer.write_batch(pa.record_batch(batch, schema=SCHEMA))
        bar.close()
    table = languages.build()
    np.save(out / "languages.npy", table.matrix)
    n = languages.n
    (out / "meta.json").write_text(json.dumps({"format": FORMAT_VERSION, "n": n, "languages": list(table.names)}))
    return n


def source_name(source) -> str:
    """What a source is called in records, progress bars and messages."""
    if isinstance(source, HubDataset):
        return source.name
    return Path(next(iter(source.values()))).parent.name if isinstance(source, Mapping) else Path(source).name


def build_store(source, languages: Sequence[str] | None = None, root: Path | None = None) -> ItemStore:
    """The :class:`ItemStore` of ``source``, built if its cache entry is missing or damaged (one process builds;
    the others, DDP ranks and parallel jobs alike, wait for it and use its entry, or fail with its message)."""
    key = store_key(source, languages)
    target = Path(root or cache_root() / "items") / key

    def build(folder: Path) -> None:
        if not _write_table(iter_source(source, languages), folder, source_name(source), expected_items(source)):
            where = (
                source.name
                if isinstance(source, HubDataset)
                else (Path(next(iter(source.values()))).parent if isinstance(source, Mapping) else source)
            )
            wanted = f" with a language in {list(languages)}" if languages else ""
            raise DataFormatError(where, "file", f"at least one parallel item{wanted} (the file has none)")

    return ItemStore(ensure_entry(target, build, "item store"))


class ItemStore(Sequence):
    """The items of one cache entry, memory-mapped; ``store[i]`` is a :class:`ParallelItem` built on access."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.table = datasets.Dataset.from_file(str(self.folder / "items.arrow"))
        self.languages_table = ItemLanguages(tuple(self.meta["languages"]), np.load(self.folder / "languages.npy"))
        self._columns = None  # (langs, positive) Arrow columns, for positive()

    def __len__(self) -> int:
        return int(self.meta["n"])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        row = self.table[int(i)]
        views = {
            lang: View(q, p, tuple(n))
            for lang, q, p, n in zip(row["langs"], row["query"], row["positive"], row["negatives"], strict=True)
        }
        return ParallelItem(row["id"], views, row["title"])

    def positive(self, i: int, lang: str) -> str:
        """Item ``i``'s positive in ``lang``, read from two Arrow columns (~5 µs; a whole row as an item: ~100 µs):
        the sampling record reads one per training example of a job."""
        if self._columns is None:
            arrow = self.table.data.table
            self._columns = (arrow.column("langs"), arrow.column("positive"))
        langs, positives = self._columns
        return positives[i][langs[i].as_py().index(lang)].as_py()

    def column_batches(self, columns: Sequence[str]) -> Iterator[dict[str, list]]:
        """The rows in the file's record batches (``ROWS_PER_BATCH``), only ``columns``, as Python lists. Read, not
        memory-mapped: a pass over a multi-GB store holds one batch, where the mapped table would keep every page it
        touched resident (1M items × 9 languages: +1.2 GB of RSS for one pass)."""
        with pa.OSFile(str(self.folder / "items.arrow")) as source, pa.ipc.open_stream(source) as reader:
            for batch in reader:
                yield batch.select(list(columns)).to_pydict()

    def __iter__(self) -> Iterator[ParallelItem]:
        for chunk in self.column_batches([f.name for f in SCHEMA]):
            for j in range(len(chunk["id"])):
                views = {
                    lang: View(q, p, tuple(n))
                    for lang, q, p, n in zip(
                        chunk["langs"][j], chunk["query"][j], chunk["positive"][j], chunk["negatives"][j], strict=True
                    )
                }
                yield ParallelItem(chunk["id"][j], views, chunk["title"][j])
