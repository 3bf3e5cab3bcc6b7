"""The training data path at the paper's scale (issue #25): today's path vs the item store, side by side.

Synthetic parallel data (the generator below): N items × 9 languages, one query and one positive per language
(about 8 and 20 words), written as this project's JSONL. Per N, each measurement in its own subprocess (peak RSS =
that process's ru_maxrss):

* ``list+upfront`` (the path before the item store): parse the JSONL into Python objects, tokenize every text up
  front (the offline encoder's XLM-R tokenizer), build the sampler — the time to the first training batch;
* ``store cold``: build the Arrow item store (empty cache), sampler from its language matrix, first batch
  tokenized lazily; ``store warm``: the same with the cache built (a sweep's second job);
* ``map``: the alternative the issue names — tokenize every text once into the Arrow cache with
  ``datasets.Dataset.map(batched=True, num_proc=2)`` (on a warm item store), batches then read token ids; its
  first batch's ids are checked equal to the lazy path's;
* step overhead: the loader's time per B=32 batch (draw, read rows, tokenize, pad) against one B=32 training step
  of the offline encoder (forward + backward + AdamW), median of 20.

Corpus side: ``encode_to_shards`` of 50k and 200k synthetic passages (a tiny random 2-layer encoder, so the
timing is the data path's, not the model's), peak RSS of each, and an encode killed after its second shard
that resumes with only the missing shards (the shards written by the second call are printed).

    python benchmarks/data_scale.py --items 10000 100000 1000000      # the issue's table (~1 h on 2 cores)
    python benchmarks/data_scale.py --items 2000 --corpus 5000 20000  # a quick look

Never run it while a sweep runs (2 cores: the numbers would be the sweep's).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LANGS = ("ar", "de", "en", "es", "fr", "hi", "ru", "vi", "zh")
WORDS = [f"w{i}" for i in range(5000)]


def generate(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            langs = {
                x: {"query": " ".join(rng.choices(WORDS, k=8)) + "?", "positive": " ".join(rng.choices(WORDS, k=20)) + "."}
                for x in LANGS
            }
            fh.write(json.dumps({"id": f"i{i}", "langs": langs}) + "\n")
    return path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, path: str, cache: str) -> dict:
    """One measurement in this (fresh) process."""
    from hybrid_retrieval.common.offline_model import ensure_offline_model
    from hybrid_retrieval.data.sampler import HybridBatchSampler
    from hybrid_retrieval.models.encoder import load_tokenizer

    tok = load_tokenizer(str(ensure_offline_model()))
    base_mb = _peak_mb()

    def token_ids(texts):
        return tok(texts, truncation=True, max_length=64)["input_ids"]

    t0 = time.perf_counter()
    if mode == "list":
        from hybrid_retrieval.data.pairs import load_jsonl_items

        items = load_jsonl_items(path)
        tokenized = [{x: (token_ids([v.query])[0], token_ids([v.positive])[0]) for x, v in it.views.items()} for it in items]
        sampler = HybridBatchSampler([it.languages for it in items], 32, alpha=0.5, seed=0, batches_per_epoch=64)
        batch = next(iter(sampler))
        _ = [tokenized[e.item][e.query_lang] for e in batch]
    elif mode == "map":
        from hybrid_retrieval.data.item_store import build_store

        store = build_store(path, root=Path(cache))  # warm: built by the "store" runs before
        t0 = time.perf_counter()  # only the tokenization into the cache counts

        def tokenize_rows(rows):
            flat_q = [q for qs in rows["query"] for q in qs]
            flat_p = [p for ps in rows["positive"] for p in ps]
            ids_q, ids_p = token_ids(flat_q), token_ids(flat_p)
            out_q, out_p, k = [], [], 0
            for qs in rows["query"]:
                out_q.append(ids_q[k : k + len(qs)])
                out_p.append(ids_p[k : k + len(qs)])
                k += len(qs)
            return {"query_ids": out_q, "positive_ids": out_p}

        tokenized = store.table.map(
            tokenize_rows,
            batched=True,
            batch_size=1000,
            num_proc=2,
            remove_columns=["title", "query", "positive", "negatives"],
            cache_file_name=str(Path(cache) / "tokenized.arrow"),
            desc="map tokenize",
        )
        sampler = HybridBatchSampler(store.languages_table, 32, alpha=0.5, seed=0, batches_per_epoch=64)
        it = iter(sampler)
        batch = next(it)

        def ids_of(b, column, lang_of):
            rows = tokenized[[e.item for e in b]]
            return [r[row["langs"].index(lang_of(e))] for e, row, r in zip(b, _rows(rows), rows[column], strict=True)]

        got = ids_of(batch, "query_ids", lambda e: e.query_lang)
        assert got == token_ids([store[e.item].views[e.query_lang].query for e in batch]), "map ids differ from lazy ids"
    else:
        from hybrid_retrieval.data.item_store import build_store

        store = build_store(path, root=Path(cache))
        sampler = HybridBatchSampler(store.languages_table, 32, alpha=0.5, seed=0, batches_per_epoch=64)
        it = iter(sampler)
        batch = next(it)
        _ = token_ids([store[e.item].views[e.query_lang].query for e in batch])
    first = time.perf_counter() - t0
    out = {"mode": mode, "first_batch_s": round(first, 2), "peak_mb": round(_peak_mb(), 1), "base_mb": round(base_mb, 1)}
    if mode != "list":
        times = []
        for _ in range(20):
            t = time.perf_counter()
            b = next(it)
            if mode == "map":
                q = ids_of(b, "query_ids", lambda e: e.query_lang)
                p = ids_of(b, "positive_ids", lambda e: e.passage_lang)
            else:
                q = token_ids([store[e.item].views[e.query_lang].query for e in b])
                p = token_ids([store[e.item].views[e.passage_lang].positive for e in b])
            assert len(q) == len(p) == 32
            times.append(time.perf_counter() - t)
        out["loader_ms_per_batch"] = round(1000 * sorted(times)[len(times) // 2], 2)
    return out


def _rows(columns: dict) -> list[dict]:
    """A column dict (``dataset[list_of_indices]``) as rows."""
    keys = list(columns)
    return [dict(zip(keys, vals, strict=True)) for vals in zip(*columns.values(), strict=True)]


def step_ms() -> float:
    """Median time of one B=32 training step of the offline encoder (max_length 64, frozen token embeddings)."""
    import torch

    from hybrid_retrieval.models.encoder import DualEncoder
    from hybrid_retrieval.models.loss import InfoNCELoss

    enc = DualEncoder(max_length=64, freeze_embeddings=True)
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-5)
    rng = random.Random(0)
    qs = [" ".join(rng.choices(WORDS, k=8)) for _ in range(32)]
    ps = [" ".join(rng.choices(WORDS, k=20)) for _ in range(32)]
    times = []
    for _ in range(6):
        t = time.perf_counter()
        loss = InfoNCELoss()(enc.encode(enc.tokenize(qs, "query"), "query"), enc.encode(enc.tokenize(ps, "passage"), "passage"))
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return 1000 * sorted(times[1:])[len(times[1:]) // 2]


def corpus_child(n: int, out: str, resume: bool = False) -> dict:
    import numpy as np
    import torch
    from transformers import BertConfig, BertModel

    from hybrid_retrieval.common.offline_model import ensure_offline_model, write_tokenizer
    from hybrid_retrieval.evaluation.shards import encode_to_shards
    from hybrid_retrieval.models.encoder import DualEncoder, load_tokenizer

    tiny = Path(out) / "tiny-model"
    if not tiny.exists():
        torch.manual_seed(0)
        BertModel(
            BertConfig(
                vocab_size=250002,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                pad_token_id=1,
            ),
            add_pooling_layer=False,
        ).save_pretrained(tiny)
        write_tokenizer(tiny, max_length=128)
    enc = DualEncoder(name=str(tiny), tokenizer=load_tokenizer(str(ensure_offline_model())), max_length=64)
    rng = random.Random(1)
    texts = [" ".join(rng.choices(WORDS, k=20)) for _ in range(n)]
    base = _peak_mb()
    t0 = time.perf_counter()
    emb = encode_to_shards(enc, texts, "passage", Path(out) / f"emb{n}", shard_size=10_000, progress=False)
    result = {
        "n": n,
        "encode_s": round(time.perf_counter() - t0, 1),
        "peak_mb": round(_peak_mb(), 1),
        "before_encode_mb": round(base, 1),
    }
    if resume:  # kill after the second shard, then resume: only the missing shards are encoded again
        folder = Path(out) / f"resume{n}"

        def kill(i):
            if i == 1:
                raise KeyboardInterrupt

        with contextlib.suppress(KeyboardInterrupt):
            encode_to_shards(enc, texts, "passage", folder, shard_size=10_000, progress=False, on_shard=kill)
        written: list[int] = []
        again = encode_to_shards(enc, texts, "passage", folder, shard_size=10_000, progress=False, on_shard=written.append)
        same = all(o1 == o2 and np.array_equal(a, b) for (o1, a), (o2, b) in zip(emb.shards(), again.shards(), strict=True))
        result.update({"resumed_shards": written, "total_shards": -(-n // 10_000), "resumed_equal": same})
    return result


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--corpus", type=int, nargs="*", default=[50_000, 200_000])
    ap.add_argument("--list-max", type=int, default=100_000, help="largest N for today's path (it needs ~23 MB / 1k items)")
    ap.add_argument("--map-max", type=int, default=100_000, help="largest N for the map(num_proc) tokenization")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "step":
            print(json.dumps({"ms": step_ms()}))
        else:
            if kind == "corpus":
                print(json.dumps(corpus_child(int(rest[0]), rest[1], resume=rest[2:] == ["resume"])))
            else:
                print(json.dumps(child(kind, *rest)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        step = run_child("step")["ms"]  # in a child too: Linux keeps a process's peak RSS across exec, so the parent stays small
        print(f"one B=32 training step of the offline encoder: {step:.0f} ms (median)")
        print("| items × 9 languages | path | time to the first batch | peak RSS | loader per B=32 batch (share of a step) |")
        print("|---|---|---|---|---|")
        for n in args.items:
            path = generate(tmp / f"train{n}.jsonl", n)
            cache = str(tmp / f"cache{n}")
            rows = []
            if n <= args.list_max:
                rows.append(("list + up-front tokenization", run_child("list", str(path), cache)))
            rows.append(("item store, cold", run_child("store", str(path), cache)))
            rows.append(("item store, warm", run_child("store", str(path), cache)))
            if n <= args.map_max:
                rows.append(("item store + map(num_proc=2) tokenized", run_child("map", str(path), cache)))
            for name, r in rows:
                loader = r.get("loader_ms_per_batch")
                share = f"{loader:.1f} ms ({100 * loader / step:.1f} %)" if loader else "—"
                print(
                    f"| {n:,} | {name} | {r['first_batch_s']:.1f} s | {r['peak_mb']:.0f} MB ({r['peak_mb'] - r['base_mb']:+.0f} over the tokenizer's) | {share} |"
                )
            path.unlink()
        print("\n| passages | encode (tiny model) | peak RSS | killed after shard 2, resumed |")
        print("|---|---|---|---|")
        for i, n in enumerate(args.corpus):
            r = run_child("corpus", str(n), str(tmp), *(["resume"] if i == 0 else []))
            resumed = (
                f"re-encoded shards {r['resumed_shards']} of {r['total_shards']}, equal: {r['resumed_equal']}"
                if "resumed_shards" in r
                else "—"
            )
            print(
                f"| {n:,} | {r['encode_s']:.0f} s | {r['peak_mb']:.0f} MB ({r['peak_mb'] - r['before_encode_mb']:+.0f} during the encode) | {resumed} |"
            )


if __name__ == "__main__":
    main()
