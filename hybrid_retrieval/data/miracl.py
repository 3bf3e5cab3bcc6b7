"""Fetch one MIRACL language into the BEIR layout that ``evaluate adhoc.root=...`` and the ``adhoc_eval``
callback read (needs the network and ``pip install datasets``; nothing here runs at test time):

    python -m hybrid_retrieval.data.miracl --lang sw --split dev --out data/miracl-sw
    python -m hybrid_retrieval.evaluate adhoc.root=data/miracl-sw adhoc.split=dev ckpt_path=...

Sources (Hugging Face): topics and qrels from the ``miracl/miracl`` dataset repository
(``miracl-v1.0-{lang}/topics/topics.miracl-v1.0-{lang}-{split}.tsv``, ``qid<TAB>query``;
``.../qrels/qrels.miracl-v1.0-{lang}-{split}.tsv``, TREC ``qid Q0 docid rel``), the passages from
``miracl/miracl-corpus`` (``docid``, ``title``, ``text``). Corpora are large (Swahili 0.13 M passages,
German 15.9 M, English 32.9 M): encoding a big one needs a GPU; ``--corpus-jsonl`` takes a local copy.
The test split's qrels are not public (``dev`` is what papers report).
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import hf_hub_download
from tqdm import tqdm

TOPICS = "miracl-v1.0-{lang}/topics/topics.miracl-v1.0-{lang}-{split}.tsv"
QRELS = "miracl-v1.0-{lang}/qrels/qrels.miracl-v1.0-{lang}-{split}.tsv"


def write_beir(out: str | Path, topics: str | Path, qrels: str | Path, corpus: Iterable[dict], split: str) -> Path:
    """Lay out MIRACL files as BEIR: queries.tsv, qrels/{split}.tsv (TREC lines are read as they are), corpus.jsonl."""
    out = Path(out)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(topics, out / "queries.tsv")
    shutil.copyfile(qrels, out / "qrels" / f"{split}.tsv")
    tmp = out / "corpus.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as fh:
        for doc in tqdm(corpus, desc="corpus", unit="doc"):
            fh.write(
                json.dumps({"_id": doc["docid"], "title": doc.get("title", ""), "text": doc["text"]}, ensure_ascii=False) + "\n"
            )
    tmp.replace(out / "corpus.jsonl")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lang", required=True, help="MIRACL language code (ar bn de en es fa fi fr hi id ja ko ru sw te th yo zh)")
    ap.add_argument("--split", default="dev", help="dev (public qrels) or train")
    ap.add_argument("--out", required=True, help="output folder (BEIR layout)")
    ap.add_argument("--corpus-jsonl", help="a local MIRACL corpus JSONL (docid, title, text) instead of the hub")
    args = ap.parse_args(argv)

    topics = hf_hub_download("miracl/miracl", TOPICS.format(lang=args.lang, split=args.split), repo_type="dataset")
    qrels = hf_hub_download("miracl/miracl", QRELS.format(lang=args.lang, split=args.split), repo_type="dataset")
    if args.corpus_jsonl:
        with open(args.corpus_jsonl, encoding="utf-8") as fh:
            write_beir(args.out, topics, qrels, (json.loads(line) for line in fh if line.strip()), args.split)
    else:
        try:
            import datasets  # noqa: PLC0415 - slow to import (~1 s); only the MIRACL download streams through it
        except ImportError as err:
            raise SystemExit("the MIRACL corpus is read with Hugging Face `datasets`: pip install datasets") from err
        corpus = datasets.load_dataset("miracl/miracl-corpus", args.lang, split="train", streaming=True)
        write_beir(args.out, topics, qrels, corpus, args.split)
    print(f"wrote {args.out}: evaluate with  python -m hybrid_retrieval.evaluate adhoc.root={args.out} adhoc.split={args.split}")


if __name__ == "__main__":
    main()
