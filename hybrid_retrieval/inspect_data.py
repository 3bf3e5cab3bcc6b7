"""Inspect training data before spending compute: sampler statistics and the zero-shot guard.

python -m hybrid_retrieval.inspect_data --train ../shared/data/mlqa-r --alpha 0 0.5 1 --batch-size 32
python -m hybrid_retrieval.inspect_data --train ../shared/data/mlqa-r --eval ../shared/data/xquad-r
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

from hybrid_retrieval.cli import ArgumentParser, user_errors
from hybrid_retrieval.data.guard import check_zero_shot
from hybrid_retrieval.data.lareqa import load_lareqa
from hybrid_retrieval.data.pairs import items_from_lareqa, load_jsonl_items
from hybrid_retrieval.data.sampler import HybridBatchSampler


def sampler_report(item_langs, batch_size: int, alpha: float, epochs: int, **kw) -> str:
    s = HybridBatchSampler(item_langs, batch_size, alpha=alpha, **kw)
    settings, q_langs, p_langs, seen = Counter(), Counter(), Counter(), Counter()
    n_batches = mono = 0
    for epoch in range(epochs):
        s.set_epoch(epoch)
        for batch in s:
            n_batches += 1
            is_mono = batch[0].query_lang == batch[0].passage_lang
            mono += is_mono
            for e in batch:
                settings["mono" if e.query_lang == e.passage_lang else "cross"] += 1
                q_langs[e.query_lang] += 1
                p_langs[e.passage_lang] += 1
                if epoch == 0:
                    seen[e.item] += 1
    pairs = sum(settings.values())
    lines = [
        f"alpha={alpha}: {len(s)} batches/epoch × {batch_size} = {len(s) * batch_size} pairs/epoch; "
        f"over {epochs} epochs: mono batches {mono}/{n_batches} ({mono / n_batches:.1%}), "
        f"mono pairs {settings['mono'] / pairs:.1%}, cross pairs {settings['cross'] / pairs:.1%}",
        "  query languages:   " + ", ".join(f"{k} {v / pairs:.1%}" for k, v in sorted(q_langs.items())),
        "  passage languages: " + ", ".join(f"{k} {v / pairs:.1%}" for k, v in sorted(p_langs.items())),
        f"  epoch 0: {len(seen)}/{s.n_items} distinct items seen, max repeats {max(seen.values())}, "
        f"refilled slots over all epochs {s.stats['refilled']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = ArgumentParser(
        prog="hybrid_retrieval.inspect_data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--train", required=True, help="LAReQA directory or JSONL file of parallel items")
    ap.add_argument("--eval", help="LAReQA directory to check zero-shot overlap against")
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--cross-mode", default="batch", choices=["batch", "example"])
    ap.add_argument("--language-temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")  # stderr: errors only
    with user_errors():
        _run(args)


def _run(args: argparse.Namespace) -> None:
    path = Path(args.train)
    if path.is_dir():
        ds = load_lareqa(path)
        print(ds.summary())
        items = items_from_lareqa(ds)
    else:
        items = load_jsonl_items(path)
    cover = Counter(len(it.views) for it in items)
    print(f"{len(items)} parallel items; languages per item: " + ", ".join(f"{k}: {v}" for k, v in sorted(cover.items())))
    for alpha in args.alpha:
        print(
            sampler_report(
                [it.languages for it in items],
                args.batch_size,
                alpha,
                args.epochs,
                cross_mode=args.cross_mode,
                language_temperature=args.language_temperature,
                seed=args.seed,
            )
        )
    if args.eval:
        report = check_zero_shot(items, load_lareqa(args.eval), train_name=path.name)
        print(report.describe())


if __name__ == "__main__":
    main()
