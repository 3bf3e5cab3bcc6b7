"""Search your own corpus with a trained retriever: build a faiss index once, query it many times.

    # index a corpus (JSONL: {"id", "text"[, "title"]} per line, or TSV: id<TAB>text[<TAB>title])
    python -m hybrid_retrieval.search index --ckpt last.ckpt --corpus docs.jsonl --index my_index/
    python -m hybrid_retrieval.search index --corpus docs.tsv --index my_index/ --kind hnsw   # approximate
    # query it: from the command line (prints the top hits) or a file (writes a TREC run)
    python -m hybrid_retrieval.search query --index my_index/ -q "Wie lang ist die Donau?" -k 5
    python -m hybrid_retrieval.search query --index my_index/ --queries queries.tsv --run out.run -k 100

The index folder holds ``index.faiss``, ``ids.json`` (row -> document id), ``texts.json`` (row -> text, for
printing hits; ``--no-texts`` leaves it out) and ``meta.json`` (the encoder settings, checkpoint and index
kind), so querying needs only ``--index``. ``--ckpt`` omitted = the
untrained offline default encoder. Exact inner-product search (``IndexFlatIP``) by default; ``hnsw``
(``IndexHNSWFlat``, inner product) trades a little recall for speed (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from textwrap import shorten

import numpy as np

from hybrid_retrieval.common.console import ArgumentParser, user_errors
from hybrid_retrieval.common.errors import UserError
from hybrid_retrieval.common.paths import file_in_the_way
from hybrid_retrieval.data.beir import read_texts
from hybrid_retrieval.evaluation.encode import encode_texts
from hybrid_retrieval.evaluation.shards import ShardedEmbeddings, encode_to_shards
from hybrid_retrieval.evaluation.trec import write_trec_run
from hybrid_retrieval.models.checkpoint import encoder_from_checkpoint
from hybrid_retrieval.models.digest import encoder_digest
from hybrid_retrieval.models.encoder import DualEncoder
from hybrid_retrieval.runs.config_check import model_name_problem

SNIPPET_CHARS = 100  # characters of a hit's text printed after its id


def _absolute(path: str | None) -> str | None:
    """A path as absolute if it names an existing file or folder (a hub model name stays as it is)."""
    return str(Path(path).resolve()) if path and Path(path).exists() else path


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def load_encoder(ckpt: str | None, base: str | None = None):
    if ckpt:
        return encoder_from_checkpoint(ckpt, **({"name": base} if base else {}))
    return DualEncoder(**({"name": base} if base else {})).eval()


def build_index(emb, kind: str = "flat", hnsw_m: int = 32, ef_construction: int = 200):
    """A faiss inner-product index over (n, dim) embeddings: an array, or sharded embeddings (added shard by shard,
    so only one shard is ever held as float32 besides the index)."""
    import faiss  # noqa: PLC0415 - optional at import time and slow to load (faiss-cpu): only the index paths need it

    dim = emb.dim if isinstance(emb, ShardedEmbeddings) else emb.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
    else:
        raise ValueError(f"--kind {kind!r}: expected 'flat' or 'hnsw'")
    parts = (s for _, s in emb.shards()) if isinstance(emb, ShardedEmbeddings) else [emb]
    for part in parts:
        index.add(np.ascontiguousarray(part, dtype=np.float32))
    return index


def _writable_folder(folder: Path, flag: str) -> None:
    """One line now when a file sits where ``folder`` (or a folder above it) must be."""
    blocker = file_in_the_way(folder)
    if blocker is not None:
        raise UserError(f"{flag} {folder}: {blocker} is a file, not a folder")


def cmd_index(args) -> None:
    import faiss  # noqa: PLC0415 - optional at import time and slow to load (faiss-cpu): only the index paths need it

    out = Path(args.index)
    _writable_folder(out, "--index")
    if args.base and (problem := model_name_problem(args.base)) is not None:
        raise UserError(f"--base {args.base}: {problem}")
    ids, texts = read_texts(args.corpus)
    encoder = load_encoder(args.ckpt, args.base)
    t0 = time.perf_counter()
    # resumable fp16 shards under the index folder: a killed run of the same command continues where it stopped
    emb = encode_to_shards(encoder, texts, "passage", out / "shards", shard_size=args.shard_size, batch_size=args.batch_size)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = build_index(emb, args.kind, args.hnsw_m)
    t_idx = time.perf_counter() - t0
    faiss.write_index(index, str(out / "index.faiss"))
    (out / "ids.json").write_text(json.dumps(ids))
    if args.store_texts:
        (out / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    meta = {
        "encoder": encoder.init_config,
        "encoder_digest": encoder_digest(encoder),  # a query must use these weights
        "ckpt": _absolute(args.ckpt),  # so the index can be queried from any directory
        "base": _absolute(args.base),
        "kind": args.kind,
        "n": len(ids),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    if not args.keep_shards:
        shutil.rmtree(out / "shards", ignore_errors=True)
    print(f"indexed {len(ids)} documents ({args.kind}) in {out}: encode {t_enc:.1f} s, index {t_idx:.2f} s")


def cmd_query(args) -> None:
    import faiss  # noqa: PLC0415 - optional at import time and slow to load (faiss-cpu): only the index paths need it

    folder = Path(args.index)
    if args.run:  # written after the search: a file in the way must fail now, not after the encoding
        _writable_folder(Path(args.run).parent, "--run")
        if Path(args.run).is_dir():
            raise UserError(f"--run {args.run}: a folder; give the run file's path")
    for name in ("meta.json", "ids.json", "index.faiss"):
        if not (folder / name).is_file():
            raise UserError(
                f"{folder}: not an index folder (no {name}; build one with: search index --corpus ... --index {folder})"
            )
    try:
        meta = json.loads((folder / "meta.json").read_text())
        ids = json.loads((folder / "ids.json").read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{folder}: meta.json / ids.json are not valid JSON ({err.msg}); rebuild the index") from None
    texts_file = folder / "texts.json"
    texts = json.loads(texts_file.read_text(encoding="utf-8")) if texts_file.exists() else None
    index = faiss.read_index(str(folder / "index.faiss"))
    if meta["kind"] == "hnsw":
        index.hnsw.efSearch = args.ef_search
    if args.queries:
        qids, qtexts = read_texts(args.queries, "query")
    elif args.query:
        qids, qtexts = [f"q{i + 1}" for i in range(len(args.query))], list(args.query)
    else:
        raise UserError("search query: give --query/-q TEXT or --queries FILE")
    encoder = load_encoder(meta["ckpt"], meta.get("base"))
    recorded = meta.get("encoder_digest")
    if recorded is not None and encoder_digest(encoder) != recorded:
        raise UserError(
            f"{folder}: built with other encoder weights than {meta['ckpt'] or 'the default encoder'} now holds "
            "(the checkpoint or base model changed): rebuild the index"
        )
    t0 = time.perf_counter()
    q = encode_texts(encoder, qtexts, "query", batch_size=args.batch_size).numpy()
    scores, rows = index.search(np.ascontiguousarray(q, dtype=np.float32), args.k)
    took = time.perf_counter() - t0
    if args.run:
        run = {
            qid: [(ids[r], float(s)) for s, r in zip(srow, rrow, strict=True) if r >= 0]
            for qid, srow, rrow in zip(qids, scores, rows, strict=True)
        }
        write_trec_run(args.run, run)
        print(f"{len(qids)} queries in {took:.2f} s -> {args.run}")
        return
    for qid, text, srow, rrow in zip(qids, qtexts, scores, rows, strict=True):
        print(f"[{qid}] {text}")
        for rank, (s, r) in enumerate(zip(srow, rrow, strict=True), 1):
            if r >= 0:
                snippet = "" if texts is None else "  " + shorten(" ".join(texts[r].split()), SNIPPET_CHARS)
                print(f"  {rank:>3}. {s:.4f}  {ids[r]}{snippet}")
    print(f"({len(qids)} queries, {took:.2f} s incl. encoding)", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    ap = ArgumentParser(prog="hybrid_retrieval.search", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ix = sub.add_parser("index", help="encode a corpus and save a faiss index")
    ix.add_argument("--corpus", required=True, help="JSONL (id, text[, title]) or TSV (id, text[, title])")
    ix.add_argument("--index", required=True, help="output folder")
    ix.add_argument("--ckpt", help="a hybrid_retrieval checkpoint (default: the untrained offline encoder)")
    ix.add_argument("--base", help="base model name/path overriding the recorded one")
    ix.add_argument("--kind", default="flat", choices=["flat", "hnsw"])
    ix.add_argument("--hnsw-m", type=_positive, default=32, dest="hnsw_m")
    ix.add_argument("--batch-size", type=_positive, default=128, dest="batch_size")
    ix.add_argument("--shard-size", type=_positive, default=50_000, dest="shard_size", help="texts per resumable shard")
    ix.add_argument("--keep-shards", action="store_true", help="keep the fp16 embedding shards after the index is built")
    ix.add_argument("--no-texts", action="store_false", dest="store_texts", help="do not keep the texts (hits print ids only)")
    qp = sub.add_parser("query", help="search an index")
    qp.add_argument("--index", required=True)
    qp.add_argument("-q", "--query", action="append", help="a query text (repeatable)")
    qp.add_argument("--queries", help="JSONL or TSV of queries (id, text)")
    qp.add_argument("-k", type=_positive, default=10)
    qp.add_argument("--run", help="write a TREC run file instead of printing")
    qp.add_argument("--ef-search", type=_positive, default=128, dest="ef_search", help="HNSW search breadth")
    qp.add_argument("--batch-size", type=_positive, default=128, dest="batch_size")
    args = ap.parse_args(argv)
    with user_errors():
        {"index": cmd_index, "query": cmd_query}[args.cmd](args)


if __name__ == "__main__":
    main()
