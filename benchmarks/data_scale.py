"""The training data path at the paper's scale: the COMMAND a user runs (issue #45) and the loader alone (issue #25).

``command`` (issue #45): ``python -m hybrid_retrieval.train +experiment=xquad_r data.train.format=jsonl
data.train.path=<N items × 9 languages> data.eval.max_questions=50 logger=csv``, as a user starts it, from the
process start to the first training step (the training core logs that moment with its peak RSS and the start-up
phases: ``hybrid_retrieval.common.timing``); the benchmark stops the job there. Per N: **cold** (an empty data cache:
the item store and the zero-shot guard's keys are built; the converted offline model is reused, it is not data),
then **warm** (a second run: a sweep's next job). Peak RSS is reported above the model's: a child that imports the
same modules and instantiates the same ``model`` config, nothing else.

    python benchmarks/data_scale.py command --items 100000 1000000       # the issue's table (~10 min on 2 cores)

``loader`` (issue #25): today's path vs the item store, side by side.

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

    python benchmarks/data_scale.py loader --items 10000 100000 1000000      # issue #25's table (~1 h on 2 cores)
    python benchmarks/data_scale.py loader --items 2000 --corpus 5000 20000  # a quick look

Never run it while a sweep runs (2 cores: the numbers would be the sweep's).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from hybrid_retrieval.common.timing import peak_rss_mb

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


def child(mode: str, path: str, cache: str) -> dict:
    """One measurement in this (fresh) process."""
    from hybrid_retrieval.common.offline_model import ensure_offline_model
    from hybrid_retrieval.data.sampler import HybridBatchSampler
    from hybrid_retrieval.models.encoder import load_tokenizer

    tok = load_tokenizer(str(ensure_offline_model()))
    base_mb = peak_rss_mb()

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
    out = {"mode": mode, "first_batch_s": round(first, 2), "peak_mb": round(peak_rss_mb(), 1), "base_mb": round(base_mb, 1)}
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
    base = peak_rss_mb()
    t0 = time.perf_counter()
    emb = encode_to_shards(enc, texts, "passage", Path(out) / f"emb{n}", shard_size=10_000, progress=False)
    result = {
        "n": n,
        "encode_s": round(time.perf_counter() - t0, 1),
        "peak_mb": round(peak_rss_mb(), 1),
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


# ---------------------------------------------------------------------------------------------- the command (#45)
REPO = Path(__file__).resolve().parents[1]
COMMAND = [
    "-m",
    "hybrid_retrieval.train",
    "+experiment=xquad_r",
    "data.train.format=jsonl",
    "data.eval.max_questions=50",
    "logger=csv",
]


def data_cache(root: Path) -> Path:
    """An empty data cache (no item stores, no guard keys) that shares the user's converted models."""
    from hybrid_retrieval.common.paths import cache_root

    root.mkdir(parents=True, exist_ok=True)
    user = cache_root()
    for entry in user.iterdir() if user.exists() else []:
        if entry.name not in ("items", "guard") and not (root / entry.name).exists():
            (root / entry.name).symlink_to(entry)
    return root


def run_command(path: Path, cache: Path, run_dir: Path, timeout: float) -> dict:
    """Start the train command; at its first training step read the start-up record from its log, then stop it."""
    from hybrid_retrieval.common.timing import FIRST_STEP_MARKER

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HYBRID_RETRIEVAL_CACHE": str(cache), "TQDM_DISABLE": "1"}
    argv = [sys.executable, *COMMAND, f"data.train.path={path}", f"hydra.run.dir={run_dir}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    tail: deque[str] = deque(maxlen=40)
    record, verdict = None, None
    try:
        for line in proc.stdout:
            tail.append(line)
            if "verdict:" in line:
                verdict = line.split("verdict:", 1)[1].strip()
            if FIRST_STEP_MARKER in line:
                wall = time.perf_counter() - t0
                record = json.loads(line[line.index("{", line.index(FIRST_STEP_MARKER)) :])
                record["wall_to_first_step_s"] = round(wall, 1)
                break
            if time.perf_counter() - t0 > timeout:
                break
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if record is None:
        raise SystemExit(f"no first training step within {timeout:.0f} s; the command's last lines:\n{''.join(tail)}")
    record["guard_verdict"] = verdict
    return record


def model_only_mb() -> float:
    """Peak RSS of a process that imports the train command and instantiates its ``model`` config (no data)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import hybrid_retrieval.train  # noqa: F401 - the command's imports, as in the measured runs
    from hybrid_retrieval.common.paths import CONFIG_DIR
    from hybrid_retrieval.common.timing import peak_rss_mb

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train.yaml", overrides=["+experiment=xquad_r"])
    instantiate(cfg.model)
    return peak_rss_mb()


def command_table(items: list[int], workdir: Path, timeout: float) -> None:
    from hybrid_retrieval.common.timing import peak_rss_mb  # noqa: F401 - fail early if the package is missing

    model_mb = run_child("model")["mb"]
    print(f"model only (imports + the xquad_r model config): peak RSS {model_mb:.0f} MB")
    print("| items × 9 languages | cache | to the first step | peak RSS (above the model's) | phases (s) | guard |")
    print("|---|---|---|---|---|---|")
    for n in items:
        path = workdir / f"train{n}.jsonl"
        if not path.exists():
            generate(path, n)
        cache = workdir / f"cache{n}"
        shutil.rmtree(cache, ignore_errors=True)
        data_cache(cache)
        for state in ("cold", "warm"):
            r = run_command(path, cache, workdir / f"run{n}-{state}", timeout)
            phases = ", ".join(f"{k} {v:.1f}" for k, v in r["phases_s"].items() if v >= 0.05)
            print(
                f"| {n:,} | {state} | {r['to_first_step_s']:.1f} s (wall {r['wall_to_first_step_s']:.1f} s) | "
                f"{r['peak_rss_mb']:.0f} MB ({r['peak_rss_mb'] - model_mb:+.0f}) | {phases} | {r['guard_verdict']} |",
                flush=True,
            )


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        kind, *rest = sys.argv[2:]
        if kind == "step":
            print(json.dumps({"ms": step_ms()}))
        elif kind == "model":
            print(json.dumps({"mb": model_only_mb()}))
        elif kind == "corpus":
            print(json.dumps(corpus_child(int(rest[0]), rest[1], resume=rest[2:] == ["resume"])))
        else:
            print(json.dumps(child(kind, *rest)))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    cmd = sub.add_parser("command", help="the train command to its first step, cold and warm (issue #45)")
    cmd.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    cmd.add_argument("--workdir", type=Path, help="keep the generated files here (reused across runs); default: a temp dir")
    cmd.add_argument("--timeout", type=float, default=900, help="seconds allowed to reach the first step, per run")
    loader = sub.add_parser("loader", help="the data path alone: list vs item store vs map (issue #25)")
    loader.add_argument("--items", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    loader.add_argument("--corpus", type=int, nargs="*", default=[50_000, 200_000])
    loader.add_argument("--list-max", type=int, default=100_000, help="largest N for the list path (~23 MB / 1k items)")
    loader.add_argument("--map-max", type=int, default=100_000, help="largest N for the map(num_proc) tokenization")
    args = ap.parse_args()
    if args.what == "command":
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            command_table(args.items, args.workdir.resolve(), args.timeout)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                command_table(args.items, Path(tmp), args.timeout)
        return
    loader_table(args)


def loader_table(args) -> None:
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
