"""Inspect training data before spending compute: what the sampler would draw, and the zero-shot guard.

python -m hybrid_retrieval.inspect_data --train ../shared/data/mlqa-r --alpha 0 0.5 1 --batch-size 32
python -m hybrid_retrieval.inspect_data --train ../shared/data/mlqa-r --eval ../shared/data/xquad-r
python -m hybrid_retrieval.inspect_data --train train.parquet              # any training format train reads
python -m hybrid_retrieval.inspect_data --train en=mmarco/en.jsonl de=mmarco/de.jsonl   # aligned files

The training data is read exactly as ``train`` reads it (the text data module: LAReQA folders, JSONL, Parquet,
``save_to_disk`` folders, per-language aligned files, hub datasets with ``--format hub``), and each α is described by
the sampling record every job record carries (``data.sampler.sampling_record``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from hybrid_retrieval.common.console import ArgumentParser, user_errors
from hybrid_retrieval.data.guard import check_zero_shot
from hybrid_retrieval.data.lareqa import load_lareqa
from hybrid_retrieval.tasks.text.data import TRAIN_FORMATS, TextDataModule


def train_config(train: list[str], fmt: str) -> dict:
    """``data.train`` for what was given: ``lang=file`` pairs are aligned files; a folder with LAReQA ``*.json``
    files is a benchmark; another folder a ``save_to_disk`` table; ``.parquet`` Parquet; else JSONL."""
    if fmt == "auto":
        path = Path(train[0])
        if "=" in train[0]:
            fmt = "aligned"
        elif path.is_dir():
            fmt = "lareqa" if any(path.glob("*.json")) and not (path / "dataset_info.json").exists() else "arrow"
        else:
            fmt = "parquet" if path.suffix == ".parquet" else "jsonl"
    if fmt == "aligned":
        files = dict(x.split("=", 1) for x in train)
        return {"format": "aligned", "files": files}
    key = "root" if fmt == "lareqa" else "path"
    return {"format": fmt, key: train[0], **({"store": False} if fmt == "jsonl" else {})}


def describe(record: dict, batch_size: int, alpha: float, epochs: int) -> str:
    """A few lines of a sampling record (``data.sampler.sampling_record``)."""
    n, mono = record["batches"], record["mono_batches"]
    settings = record["example_settings"]
    pairs = sum(settings.values())
    mono_pairs = sum(v for k, v in settings.items() if k.split("-")[0] == k.split("-")[1])
    q, p = {}, {}
    for k, v in settings.items():
        x, y = k.split("-")
        q[x], p[y] = q.get(x, 0) + v, p.get(y, 0) + v
    lines = [
        f"alpha={alpha}: {n // epochs} batches/epoch × {batch_size} = {n // epochs * batch_size} pairs/epoch; "
        f"over {epochs} epochs: mono batches {mono}/{n} ({mono / n:.1%}), "
        f"mono pairs {mono_pairs / pairs:.1%}, cross pairs {1 - mono_pairs / pairs:.1%}",
        "  query languages:   " + ", ".join(f"{k} {v / pairs:.1%}" for k, v in sorted(q.items())),
        "  passage languages: " + ", ".join(f"{k} {v / pairs:.1%}" for k, v in sorted(p.items())),
        f"  {record['distinct_items']} distinct items, {record['distinct_pairs']} distinct (item, query language, passage "
        f"language) pairs, refilled slots {record['refilled_examples']}",
    ]
    if "dup_pairs_per_batch" in record:
        lines.append(
            f"  in-batch duplicate positives {record['dup_pairs_per_batch']} pairs/batch; "
            f"distinct negatives per query {record['distinct_negatives_per_query']} (min {record['distinct_negatives_min']})"
        )
    if record["excluded"]:
        lines.append(f"  excluded (fewer items than the batch): {record['excluded']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = ArgumentParser(
        prog="hybrid_retrieval.inspect_data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--train", required=True, nargs="+", help="training data: a LAReQA folder, a file, or lang=file pairs")
    ap.add_argument("--format", default="auto", choices=["auto", *TRAIN_FORMATS], help="data.train.format (auto: guessed)")
    ap.add_argument("--eval", help="LAReQA directory to check zero-shot overlap against")
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--cross-mode", default="batch", choices=["batch", "example"])
    ap.add_argument("--alpha-schedule", default="bernoulli", choices=["bernoulli", "stratified"])
    ap.add_argument("--language-temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")  # stderr: errors only
    with user_errors():
        _run(args)


def _run(args: argparse.Namespace) -> None:
    cfg = train_config(args.train, args.format)
    sampler = {
        "cross_mode": args.cross_mode,
        "alpha_schedule": args.alpha_schedule,
        "language_temperature": args.language_temperature,
    }
    dm = TextDataModule(train=cfg, eval={}, batch_size=args.batch_size, sampler=sampler, seed=args.seed)
    if cfg["format"] == "lareqa":
        print(load_lareqa(cfg["root"]).summary())
    dm.items = dm.load_train_items()
    table = dm.item_languages()
    counts = np.bincount(table.matrix.sum(1))
    cover = ", ".join(f"{k}: {v}" for k, v in enumerate(counts) if v)
    print(f"{table.matrix.shape[0]} parallel items; languages per item: {cover}")
    for alpha in args.alpha:
        dm.sampler_cfg["alpha"] = alpha
        steps = args.epochs * dm.train_batches_per_epoch()
        print(describe(dm.sampling_record(steps), args.batch_size, alpha, args.epochs))
    if args.eval:
        report = check_zero_shot(dm.items, load_lareqa(args.eval), train_name=dm._train_name())
        print(report.describe())


if __name__ == "__main__":
    main()
