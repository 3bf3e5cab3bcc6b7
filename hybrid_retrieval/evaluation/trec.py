"""TREC run files (``qid Q0 docid rank score tag``, best first): the one writer of every command's run files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

TAG = "hybrid_retrieval"


def trec_lines(qid: str, hits: Iterable[tuple[str, float]], tag: str = TAG) -> str:
    """One query's ranked ``(docid, score)`` hits as run-file lines (ranks from 1)."""
    return "".join(f"{qid} Q0 {doc_id} {rank} {score:.6f} {tag}\n" for rank, (doc_id, score) in enumerate(hits, 1))


def write_trec_run(path: str | Path, run: dict[str, list[tuple[str, float]]], tag: str = TAG) -> Path:
    """``run[qid] = [(docid, score), ...]`` (best first) into ``path`` (its folder created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for qid, hits in run.items():
            fh.write(trec_lines(qid, hits, tag))
    return path
