"""Ad-hoc retrieval benchmarks in the BEIR layout (MIRACL, Mr. TyDi and the BEIR sets are distributed so):

    root/corpus.jsonl        {"_id", "title", "text"} per line ("docid" or "id" accepted for "_id")
    root/queries.jsonl       {"_id", "text"} per line      (or queries.tsv: id<TAB>text)
    root/qrels/{split}.tsv   query-id<TAB>corpus-id<TAB>score, optional header line
                             (TREC qrels, ``qid Q0 docid rel``, are read too: MIRACL ships those)

Only queries with at least one relevant document (score > 0) in the split are evaluated, as BEIR does;
the others are counted in ``AdhocDataset.dropped``. Errors name the file, the line and what was expected.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hybrid_retrieval.common.errors import DataFormatError

log = logging.getLogger(__name__)

ID_FIELDS = ("_id", "docid", "id")


@dataclass
class AdhocDataset:
    """A corpus, the queries of one split and their graded judgments (``qrels[qid][docid] = grade``)."""

    name: str
    doc_ids: list[str]
    doc_texts: list[str]  # title and text joined ("{title}. {text}"), what the passage encoder sees
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    dropped: dict[str, int] = field(default_factory=dict)  # why queries / judgments were left out, and how many

    def summary(self) -> str:
        n_rel = sum(sum(1 for g in r.values() if g > 0) for r in self.qrels.values())
        extra = "".join(f", {v} {k}" for k, v in self.dropped.items() if v)
        return f"{self.name}: {len(self.doc_ids)} documents, {len(self.query_ids)} queries, {n_rel} relevant judgments{extra}"


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                yield n, line.rstrip("\n").rstrip("\r")


def _json_records(path: Path, what: str) -> Iterator[tuple[int, str, dict]]:
    for n, line in _lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, f"line {n}", f"one JSON object per line ({err.msg})") from err
        if not isinstance(obj, dict):
            raise DataFormatError(path, f"line {n}", f"a JSON object ({what})")
        key = next((k for k in ID_FIELDS if k in obj), None)
        if key is None or not isinstance(obj.get("text"), str):
            raise DataFormatError(
                path, f"line {n}", f'an object with an id ("_id", "docid" or "id") and "text" (string) ({what})'
            )
        yield n, str(obj[key]), obj


def passage_text(title: str, text: str) -> str:
    """What the passage encoder sees of a titled document: ``"{title}. {text}"`` (the text alone without a title)."""
    return f"{title}. {text}" if title else text


def read_texts(path: str | Path, what: str = "document") -> tuple[list[str], list[str]]:
    """(ids, texts) of a corpus or query file: JSONL (``.jsonl``: an id in "_id", "docid" or "id", "text", optional
    "title") or TSV (any other name: id<TAB>text[<TAB>title]); titles joined by :func:`passage_text`. The one
    reader of such files (BEIR corpora, ``search index --corpus``, ``search query --queries``): errors name the
    file, the line and what was expected; ids must be unique; at least one line."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file", "an existing JSONL or TSV file")
    ids, texts, seen = [], [], set()
    if path.suffix == ".jsonl":
        rows = ((n, doc_id, obj.get("title") or "", obj["text"]) for n, doc_id, obj in _json_records(path, f"a {what}"))
    else:
        rows = _tsv_records(path)
    for n, doc_id, title, text in rows:
        if doc_id in seen:
            raise DataFormatError(path, f"line {n} (id {doc_id})", f"unique {what} ids")
        seen.add(doc_id)
        ids.append(doc_id)
        texts.append(passage_text(title, text))
    if not ids:
        raise DataFormatError(path, "file", "at least one line")
    return ids, texts


def _tsv_records(path: Path) -> Iterator[tuple[int, str, str, str]]:
    for n, line in _lines(path):
        parts = line.split("\t")
        if len(parts) < 2:
            raise DataFormatError(path, f"line {n}", "id<TAB>text[<TAB>title]")
        yield n, parts[0], (parts[2] if len(parts) > 2 else ""), parts[1]


def read_corpus(path: Path) -> tuple[list[str], list[str]]:
    """A BEIR ``corpus.jsonl``: (document ids, "title. text")."""
    return read_texts(path, "document")


def read_queries(root: Path) -> dict[str, str]:
    jsonl, tsv = root / "queries.jsonl", root / "queries.tsv"
    if not jsonl.exists() and not tsv.exists():
        raise DataFormatError(jsonl, "file", "queries.jsonl (or queries.tsv) in the dataset folder")
    return dict(zip(*read_texts(jsonl if jsonl.exists() else tsv, "query"), strict=True))


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``qid -> {docid: grade}`` from BEIR TSV (3 columns, optional header) or TREC qrels (4 columns)."""
    if not path.exists():
        raise DataFormatError(path, "file", "a qrels file (query-id, corpus-id, score) for this split")
    qrels: dict[str, dict[str, int]] = {}
    for n, line in _lines(path):
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) == 4:  # TREC: qid Q0 docid rel
            qid, doc_id, grade = parts[0], parts[2], parts[3]
        elif len(parts) == 3:
            qid, doc_id, grade = parts
        else:
            raise DataFormatError(path, f"line {n}", "query-id<TAB>corpus-id<TAB>score (or TREC: qid Q0 docid rel)")
        try:
            value = int(float(grade))
        except ValueError:
            if n == 1:  # the header line (query-id corpus-id score)
                continue
            raise DataFormatError(path, f"line {n}", f"an integer relevance grade, got {grade!r}") from None
        qrels.setdefault(qid, {})[doc_id] = value
    if not qrels:
        raise DataFormatError(path, "file", "at least one judgment")
    return qrels


def load_beir(root: str | Path, split: str = "test", name: str | None = None, max_queries: int | None = None) -> AdhocDataset:
    """Load a BEIR-layout folder (see the module docstring); ``max_queries`` keeps the first N judged queries."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(root, "folder", "a BEIR-layout dataset folder (corpus.jsonl, queries.jsonl, qrels/)")
    doc_ids, doc_texts = read_corpus(root / "corpus.jsonl")
    queries = read_queries(root)
    qrels_path = root / "qrels" / f"{split}.tsv"
    qrels = read_qrels(qrels_path)
    docs = set(doc_ids)
    dropped = {
        "queries without a relevant document": 0,
        "queries missing from the queries file": 0,
        "judgments of unknown documents": 0,
    }
    kept: dict[str, dict[str, int]] = {}
    for qid, judged in qrels.items():
        unknown = [d for d in judged if d not in docs]
        dropped["judgments of unknown documents"] += len(unknown)
        if qid not in queries:
            dropped["queries missing from the queries file"] += 1
        elif not any(g > 0 for g in judged.values()):
            dropped["queries without a relevant document"] += 1
        else:
            # Unknown documents stay judged (pytrec_eval and BEIR count them in the recall denominator).
            kept[qid] = judged
    if not kept:
        raise DataFormatError(qrels_path, "file", "at least one query with a relevant document and a text in queries")
    query_ids = [q for q in queries if q in kept]  # the queries file's order
    if max_queries is not None:
        query_ids = query_ids[: int(max_queries)]
        kept = {q: kept[q] for q in query_ids}
    if dropped["judgments of unknown documents"]:
        log.warning("%s: %d judgments name documents not in corpus.jsonl", qrels_path, dropped["judgments of unknown documents"])
    return AdhocDataset(
        name=name or root.name,
        doc_ids=doc_ids,
        doc_texts=doc_texts,
        query_ids=query_ids,
        query_texts=[queries[q] for q in query_ids],
        qrels=kept,
        dropped=dropped,
    )
