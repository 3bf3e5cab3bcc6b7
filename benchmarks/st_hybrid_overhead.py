"""What hybrid batching costs a sentence-transformers training script (hybrid_retrieval.st).

1. Overhead per step: the data path of one batch (batch sampler -> rows -> collator, tokenisation included) with
   ``HybridSTBatchSampler`` + ``HybridPairCollator`` on the long layout, against ST's default path
   (``DefaultBatchSampler`` + its collator on a ready-made (anchor, positive) pair dataset of the same texts), both
   set against the MNRL training step (forward, backward, AdamW) at the same batch size, timed in the same run:
   overhead = (ours + drawing a batch - default) / step. Medians over ``--batches``.
2. Memory at scale: the sampler + collator built on a memory-mapped long layout of ``--items`` items x 9 languages
   (one row per item and language), RSS above the loaded dataset, after drawing ``--batches`` batches.

    python benchmarks/st_hybrid_overhead.py                                  # MLQA-R + 1M items x 9 languages
    python benchmarks/st_hybrid_overhead.py --items 20000 --batches 5        # a quick check
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024


def _median_s(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def overhead(args) -> dict:
    import datasets
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from hybrid_retrieval.models.encoder import resolve_model_path
    from hybrid_retrieval.st import HybridSTBatchSampler, hybrid_collator, long_layout_from

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(resolve_model_path("offline/multilingual-e5-small-q4"), device="cpu")
    model.max_seq_length = args.max_length
    long = long_layout_from(args.train)
    ours = HybridSTBatchSampler(long, batch_size=args.batch, seed=0, alpha=0.5, batches_per_epoch=args.batches + 1)
    rows = [r for r in ours][: args.batches]
    anchors, positives = long["anchor"], long["positive"]
    pairs = datasets.Dataset.from_dict(  # the same (anchor, positive) texts, ready-made, for ST's default path
        {
            "anchor": [anchors[i] for r in rows for i in r[: args.batch]],
            "positive": [positives[i] for r in rows for i in r[args.batch :]],
        }
    )
    shuffled = torch.utils.data.RandomSampler(range(len(pairs)), generator=torch.Generator().manual_seed(0))
    theirs = DefaultBatchSampler(shuffled, batch_size=args.batch, drop_last=True)  # as the trainer builds it
    ours_collate, default_collate = hybrid_collator(model), SentenceTransformerDataCollator(preprocess_fn=model.preprocess)
    default_rows = list(theirs)
    counter = {"ours": 0, "default": 0}

    def our_path():  # what the DataLoader does per batch: fetch the 2B rows, then the collator pairs and tokenises
        idx = rows[counter["ours"] % len(rows)]
        counter["ours"] += 1
        return ours_collate([long[i] for i in idx])

    def default_path():
        idx = default_rows[counter["default"] % len(default_rows)]
        counter["default"] += 1
        return default_collate([pairs[i] for i in idx])

    it = iter(ours)
    sampler_s = _median_s(lambda: next(it), args.batches)  # drawing one global batch (ST's default: an index slice)
    loss = MultipleNegativesRankingLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = default_path()

    def step():
        feats = [{k[len(c) + 1 :]: v for k, v in batch.items() if k.startswith(c + "_")} for c in ("anchor", "positive")]
        opt.zero_grad(set_to_none=True)
        loss(feats, None).backward()
        opt.step()

    step()  # warm-up (optimizer state)
    t_ours, t_default, t_step = [], [], []
    for _ in range(args.batches):  # alternating, so drift hits all three alike
        t_ours.append(_median_s(our_path, 1))
        t_default.append(_median_s(default_path, 1))
        t_step.append(_median_s(step, 1))
    ours_s, default_s, step_s = (statistics.median(x) for x in (t_ours, t_default, t_step))
    return {
        "batch": args.batch,
        "max_length": args.max_length,
        "threads": args.threads,
        "rows": len(long),
        "hybrid_data_path_s": ours_s,
        "default_data_path_s": default_s,
        "sampler_draw_s": sampler_s,
        "mnrl_step_s": step_s,
        "overhead_of_step": (ours_s + sampler_s - default_s) / step_s,
    }


def memory(args) -> dict:
    import datasets
    import pyarrow as pa

    from hybrid_retrieval.st import HybridPairCollator, HybridSTBatchSampler

    langs = ["ar", "de", "en", "es", "hi", "ru", "th", "vi", "zh"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.arrow"
        rng = np.random.default_rng(0)
        with pa.OSFile(str(path), "wb") as sink:
            schema = pa.schema(
                [("id", pa.string()), ("language", pa.string()), ("anchor", pa.string()), ("positive", pa.string())]
            )
            with pa.ipc.new_stream(sink, schema) as writer:
                for lo in range(0, args.items, 100_000):
                    n = min(100_000, args.items - lo)
                    ids = np.repeat(np.arange(lo, lo + n), len(langs)).astype(str)
                    lang = np.tile(langs, n)
                    words = rng.integers(0, 50_000, size=(n * len(langs), 2)).astype(str)
                    text = np.char.add(np.char.add("w", words[:, 0]), np.char.add(" w", words[:, 1]))
                    writer.write_table(pa.table({"id": ids, "language": lang, "anchor": text, "positive": text}, schema=schema))
        gc.collect()
        data = datasets.Dataset.from_file(str(path), in_memory=False)
        before = _rss_mb()
        t = time.perf_counter()
        sampler = HybridSTBatchSampler(data, batch_size=args.batch, seed=0, alpha=0.5, batches_per_epoch=args.batches)
        build_s = time.perf_counter() - t
        collate = HybridPairCollator(preprocess_fn=lambda texts, **kw: {"n": len(texts)})  # rows only: no model here
        for idx in sampler:
            collate([data[i] for i in idx])
        after = _rss_mb()
        return {
            "items": args.items,
            "languages": len(langs),
            "rows": len(data),
            "build_s": build_s,
            "rss_above_dataset_mb": after - before,
        }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default=str(REPO.parent / "shared" / "data" / "mlqa-r"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    out = {"memory": memory(args)}
    print(json.dumps(out["memory"]), flush=True)
    if not args.skip_overhead:
        out["overhead"] = overhead(args)
        print(json.dumps(out["overhead"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
