"""Frozen-prefix training and evaluation vs full fine-tuning, side by side in one run (issue: ≥5× at k=2).

Training: the offline encoder, MLQA-R batches (the default experiment's: max_length 64, token embeddings
frozen), the same batches for every setting, steps alternating between settings (full fine-tuning,
k ∈ {1, 2, 4} trainable layers over cached lower-layer states). Pairs/s = median over the timed steps of
batch / (collation + training step + optimizer step). B=32: no gradient caching (length buckets of 8);
B=512: gradient caching in chunks of 128 texts for every setting.

Evaluation: the full XQuAD-R (13,090 questions × 13,014 candidates) encoded and scored, three ways:
no cache (full encoder), cold cache at k=2 (builds the cache, then runs the top 2 layers), warm
cache at k=2 (reads it). Cache size on disk and build time are printed.

    python benchmarks/frozen_prefix.py                      # both parts (about 15 min on a 2-core CPU)
    python benchmarks/frozen_prefix.py --skip-eval --steps 3
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def load_batches(data: str, batch: int, n: int, seed: int = 0):
    from hybrid_retrieval.data.lareqa import load_lareqa
    from hybrid_retrieval.data.pairs import items_from_lareqa
    from hybrid_retrieval.data.sampler import HybridBatchSampler

    items = items_from_lareqa(load_lareqa(data))
    s = HybridBatchSampler([it.languages for it in items], batch, alpha=0.5, cross_mode="example", seed=seed, batches_per_epoch=n)
    return [
        ([items[e.item].views[e.query_lang].query for e in b], [items[e.item].views[e.passage_lang].positive for e in b])
        for b in s
    ]


class Setting:
    """One model (full or frozen prefix) with its optimizer and its per-text rows (token ids or cached states)."""

    def __init__(self, base, k: int | None, batches, chunk: int | None):
        from hybrid_retrieval.models.loss import InfoNCELoss

        self.name = "full" if k is None else f"k={k}"
        self.enc = copy.deepcopy(base)
        if k is not None:
            from hybrid_retrieval.models.encoder import DualEncoder

            # same weights, frozen prefix: rebuild around the copied backbone
            self.enc = DualEncoder(
                backbone=self.enc.query_model,
                tokenizer=base.tokenizer,
                max_length=base.max_length,
                train_layers=k,
                prefix_cache=True,
                freeze_embeddings=True,
            )
        self.enc.train()
        self.chunk, self.loss = chunk, InfoNCELoss(temperature=0.05)
        self.opt = torch.optim.AdamW([p for p in self.enc.parameters() if p.requires_grad], lr=1e-5)
        qs = sorted({t for b in batches for t in b[0]})
        ps = sorted({t for b in batches for t in b[1]})
        q_rows = self.enc.model_rows(self.enc.token_ids(qs, "query"), "query", progress=False)
        p_rows = self.enc.model_rows(self.enc.token_ids(ps, "passage"), "passage", progress=False)
        self.rows = {("query", t): r for t, r in zip(qs, q_rows, strict=True)}
        self.rows.update({("passage", t): r for t, r in zip(ps, p_rows, strict=True)})

    def step(self, batch) -> float:
        """Seconds for collation + one training step (forward, backward, optimizer)."""
        from hybrid_retrieval.common.padding import pad_rows
        from hybrid_retrieval.models.grad_cache import contrastive_backward

        t0 = time.perf_counter()
        pad = self.enc.tokenizer.pad_token_id
        q = pad_rows([self.rows[("query", t)] for t in batch[0]], pad)
        p = pad_rows([self.rows[("passage", t)] for t in batch[1]], pad)
        self.opt.zero_grad(set_to_none=True)
        contrastive_backward(self.enc.encode, self.loss, q, p, chunk_size=self.chunk, bucket_size=8)
        self.opt.step()
        return time.perf_counter() - t0


def bench_train(args, base) -> list[tuple]:
    rows = []
    for batch, chunk in ((32, None), (512, 128)):
        batches = load_batches(args.train_data, batch, args.steps + 1)
        settings = [Setting(base, k, batches, chunk) for k in (None, 1, 2, 4)]
        times = {s.name: [] for s in settings}
        for i, b in enumerate(batches):
            for s in settings:  # alternate: every setting sees the same batch in the same machine state
                dt = s.step(b)
                if i > 0:  # the first step warms up allocators
                    times[s.name].append(dt)
        full = batch / statistics.median(times["full"])
        for s in settings:
            pps = batch / statistics.median(times[s.name])
            rows.append((f"B={batch}" + (f",c{chunk}" if chunk else ""), s.name, pps, pps / full))
            print(f"  B={batch:<4} {s.name:<5} {pps:8.1f} pairs/s  {pps / full:5.2f}x full", flush=True)
    return rows


def bench_eval(args, base) -> list[tuple]:
    from hybrid_retrieval.data.lareqa import load_lareqa
    from hybrid_retrieval.evaluation.encode import encode_texts
    from hybrid_retrieval.evaluation.lareqa_eval import EvalCorpus, evaluate_embeddings
    from hybrid_retrieval.models.encoder import DualEncoder

    corpus = EvalCorpus.from_dataset(load_lareqa(args.eval_data))
    cache = Path(tempfile.mkdtemp(prefix="prefix-bench-"))
    frozen = DualEncoder(
        backbone=copy.deepcopy(base.query_model),
        tokenizer=base.tokenizer,
        max_length=base.max_length,
        train_layers=2,
        prefix_cache=True,
    )
    out = []

    def run(name, enc):
        import os

        os.environ["HYBRID_RETRIEVAL_CACHE"] = str(cache)
        t0 = time.perf_counter()
        q = encode_texts(enc, corpus.q_texts, "query", batch_size=128)
        c = encode_texts(enc, corpus.c_texts, "passage", batch_size=128)
        flat = evaluate_embeddings(corpus, q, c).flat()
        wall = time.perf_counter() - t0
        out.append((name, wall, flat["multi/map"]))
        print(f"  {name:<22} {wall:7.1f} s   multi mAP {flat['multi/map']:.4f}", flush=True)

    try:
        run("no cache (full model)", base)
        run("cold cache, k=2", frozen)
        run("warm cache, k=2", frozen)
        size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
        builds = [float(__import__("json").loads(m.read_text())["build_s"]) for m in cache.rglob("meta.json")]
        print(f"  cache: {size / 2**20:.0f} MB on disk (fp16), built in {sum(builds):.1f} s", flush=True)
        out.append(("cache MB", size / 2**20, sum(builds)))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-data", default=str(REPO.parent / "shared/data/mlqa-r"))
    ap.add_argument("--eval-data", default=str(REPO.parent / "shared/data/xquad-r"))
    ap.add_argument("--steps", type=int, default=4, help="timed steps per setting (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from hybrid_retrieval.models.encoder import DualEncoder

    base = DualEncoder(max_length=64, freeze_embeddings=True)
    print(f"threads {torch.get_num_threads()}, encoder {base.name}, max_length 64")
    if not args.skip_train:
        print("training pairs/s (median of timed steps; same batches, alternating):")
        bench_train(args, base)
    if not args.skip_eval:
        print("full XQuAD-R evaluation wall time (encode + rank + metrics):")
        bench_eval(args, base)


if __name__ == "__main__":
    main()
