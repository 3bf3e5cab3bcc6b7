"""Exact vs HNSW faiss search over XQuAD-R candidates: recall@10 against the exact index and the speed-up.

The untrained offline encoder embeds all 13,014 XQuAD-R candidate sentences (11 languages) and 2,000
questions (every language); the pool is also enlarged ×4 with perturbed copies (noise σ=0.01 per
dimension, re-normalised) to see how the gap grows. Per pool: build time, queries/s (all queries at
once, median of 5 repetitions, flat and HNSW alternating), recall@10 of HNSW against the exact top 10.

    python benchmarks/search_speed.py                  # encodes once (cached in --emb), then times
    python benchmarks/search_speed.py --skip-encode    # time only, from the saved embeddings
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def encode(args) -> None:
    from hybrid_retrieval.data.corpus import EvalCorpus
    from hybrid_retrieval.data.lareqa import load_lareqa
    from hybrid_retrieval.evaluation.encode import encode_texts
    from hybrid_retrieval.models.encoder import DualEncoder

    corpus = EvalCorpus.from_dataset(load_lareqa(args.data))
    enc = DualEncoder(max_length=64).eval()
    rng = np.random.default_rng(0)
    qsel = rng.choice(len(corpus.q_texts), size=2000, replace=False)
    c = encode_texts(enc, corpus.c_texts, "passage", progress=True).numpy()
    q = encode_texts(enc, [corpus.q_texts[i] for i in qsel], "query", progress=True).numpy()
    np.savez(args.emb, c=c, q=q)


def time_search(args) -> None:
    import faiss

    from hybrid_retrieval.search import build_index

    data = np.load(args.emb)
    c, q = data["c"].astype(np.float32), data["q"].astype(np.float32)
    rng = np.random.default_rng(1)
    big = [c] + [c + rng.normal(0, 0.01, c.shape).astype(np.float32) for _ in range(3)]
    big = np.concatenate(big)
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    print(f"faiss {faiss.__version__}, threads {faiss.omp_get_max_threads()}, {len(q)} queries, k=10")
    print(f"{'pool':>7} {'index':<14} {'build s':>8} {'queries/s':>10} {'speed-up':>9} {'recall@10':>10}")
    for pool in (c, big):
        flat, t_flat = _build(build_index, pool, "flat")
        hnsw, t_hnsw = _build(build_index, pool, "hnsw")
        hnsw.hnsw.efSearch = args.ef_search
        times = {"flat": [], "hnsw": []}
        for _ in range(5):
            for name, idx in (("flat", flat), ("hnsw", hnsw)):
                t0 = time.perf_counter()
                _, rows = idx.search(q, 10)
                times[name].append(time.perf_counter() - t0)
                if name == "flat":
                    exact = rows
                else:
                    approx = rows
        recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
        qps = {k: len(q) / statistics.median(v) for k, v in times.items()}
        print(f"{len(pool):>7} {'IndexFlatIP':<14} {t_flat:8.2f} {qps['flat']:10.0f} {1.0:9.2f} {1.0:10.4f}")
        print(
            f"{len(pool):>7} {f'HNSW32 ef{args.ef_search}':<14} {t_hnsw:8.2f} {qps['hnsw']:10.0f} {qps['hnsw'] / qps['flat']:9.2f} {recall:10.4f}"
        )


def _build(build_index, pool, kind):
    t0 = time.perf_counter()
    idx = build_index(pool, kind)
    return idx, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared/data/xquad-r"))
    ap.add_argument("--emb", default="/tmp/xquad_r_embeddings.npz")
    ap.add_argument("--ef-search", type=int, default=128, dest="ef_search")
    ap.add_argument("--skip-encode", action="store_true")
    args = ap.parse_args()
    if not args.skip_encode or not Path(args.emb).exists():
        encode(args)
    time_search(args)


if __name__ == "__main__":
    main()
