"""Training throughput: this project vs sentence-transformers, same model, data, batches and threads.

Settings (both sides fine-tune the converted offline encoder, token embeddings frozen on both):

* B=32, no gradient caching: our step vs ``MultipleNegativesRankingLoss`` (scale 20 = temperature 0.05);
* B=512 with gradient caching, chunks of 32: ours vs ``CachedMultipleNegativesRankingLoss(mini_batch_size=32)``.

Each side does what its training loop does per step: sentence-transformers tokenizes the batch (its
data collator), we pad pre-tokenized ids (our collator). Steps alternate ours / theirs on the same
batches; pairs/s is the median over the timed steps. Without caching our step runs its forward in
length-sorted buckets (``model.grad_cache.bucket_size``); the same step with one padded forward per side
is timed alongside ("ours 1-fwd"). The loss check runs both on the first batch with dropout off from
identical weights. Peak RSS: a fresh process per side and setting, peak counter reset after loading
data and model, then two training steps.
The model's share: encoder forward+backward FLOPs per step / step time vs a fp32 ``torch.matmul`` peak.

    pip install -e ".[bench]" && python benchmarks/train_throughput.py
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"b32": (32, None), "b512": (512, 32)}


def load_batches(data: str, batch: int, n: int) -> list[tuple[list[str], list[str]]]:
    from hybrid_retrieval.data.lareqa import load_lareqa
    from hybrid_retrieval.data.pairs import items_from_lareqa
    from hybrid_retrieval.data.sampler import HybridBatchSampler

    items = items_from_lareqa(load_lareqa(data))
    s = HybridBatchSampler([it.languages for it in items], batch, alpha=0.5, cross_mode="example", seed=0, batches_per_epoch=n)
    return [
        ([items[e.item].views[e.query_lang].query for e in b], [items[e.item].views[e.passage_lang].positive for e in b])
        for b in s
    ]


class Ours:
    def __init__(self, encoder, chunk, bucket=None):
        from hybrid_retrieval.models.loss import InfoNCELoss

        self.enc, self.chunk, self.bucket, self.loss = encoder, chunk, bucket, InfoNCELoss(temperature=0.05)
        self.opt = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=1e-5)

    def pretokenize(self, batches):
        """What our DataModule does once at setup."""
        tok = self.enc.tokenizer
        cache = {}
        for qs, ps in batches:
            for kind, texts in (("query", qs), ("passage", ps)):
                prefix = self.enc.query_prefix if kind == "query" else self.enc.passage_prefix
                for t, ids in zip(
                    texts,
                    tok([prefix + x for x in texts], truncation=True, max_length=self.enc.max_length)["input_ids"],
                    strict=True,
                ):
                    cache[(kind, t)] = ids
        self.cache = cache

    def step(self, qs, ps) -> float:
        from hybrid_retrieval.common.padding import pad_batch
        from hybrid_retrieval.models.grad_cache import contrastive_backward

        pad = self.enc.tokenizer.pad_token_id
        q = pad_batch([self.cache[("query", t)] for t in qs], pad)
        p = pad_batch([self.cache[("passage", t)] for t in ps], pad)
        self.opt.zero_grad(set_to_none=True)
        loss = contrastive_backward(self.enc.encode, self.loss, q, p, None, chunk_size=self.chunk, bucket_size=self.bucket)
        self.opt.step()
        return float(loss)


class Theirs:
    def __init__(self, model_dir: str, max_length: int, chunk, state_from=None):
        from sentence_transformers import SentenceTransformer, losses
        from sentence_transformers.models import Normalize, Pooling, Transformer

        tr = Transformer(model_dir, max_seq_length=max_length)
        self.model = SentenceTransformer(
            modules=[tr, Pooling(tr.get_word_embedding_dimension(), "mean"), Normalize()], device="cpu"
        )
        if state_from is not None:  # identical starting weights
            tr.auto_model.load_state_dict(state_from.state_dict(), strict=False)
        tr.auto_model.get_input_embeddings().weight.requires_grad_(False)
        self.model.train()
        if chunk:
            self.loss = losses.CachedMultipleNegativesRankingLoss(self.model, scale=20.0, mini_batch_size=chunk)
        else:
            self.loss = losses.MultipleNegativesRankingLoss(self.model, scale=20.0)
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-5)

    def step(self, qs, ps) -> float:
        feats = [self.model.tokenize(["query: " + t for t in qs]), self.model.tokenize(["passage: " + t for t in ps])]
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(feats, None)
        loss.backward()
        self.opt.step()
        return float(loss)


def profile_phases(ours: Ours, batches, reps: int = 3) -> dict[str, float]:
    """Where our no-cache step spends its time: collate, forward, loss, backward, optimizer (median seconds)."""
    from hybrid_retrieval.common.padding import pad_batch

    enc, pad = ours.enc, ours.enc.tokenizer.pad_token_id
    phases: dict[str, list[float]] = {k: [] for k in ("collate", "forward", "loss", "backward", "optimizer")}
    for qs, ps in batches[:reps]:
        t = time.perf_counter()
        q = pad_batch([ours.cache[("query", x)] for x in qs], pad)
        p = pad_batch([ours.cache[("passage", x)] for x in ps], pad)
        t1 = time.perf_counter()
        eq, ep = enc.encode(q, "query"), enc.encode(p, "passage")
        t2 = time.perf_counter()
        loss = ours.loss(eq, ep)
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        ours.opt.step()
        ours.opt.zero_grad(set_to_none=True)
        t5 = time.perf_counter()
        for k, dt in zip(phases, (t1 - t, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            phases[k].append(dt)
    return {k: statistics.median(v) for k, v in phases.items()}


def encoder_flops(enc, batches) -> float:
    """Forward+backward FLOPs of the transformer layers for one batch: 6·P·tokens + attention (12·L·h·s² per text)."""
    cfg = enc.query_model.config
    layer_params = sum(p.numel() for n, p in enc.query_model.named_parameters() if n.startswith("encoder."))
    tok = enc.tokenizer
    total = 0.0
    for qs, ps in batches:
        for prefix, texts in (("query: ", qs), ("passage: ", ps)):
            lens = [len(x) for x in tok([prefix + t for t in texts], truncation=True, max_length=enc.max_length)["input_ids"]]
            total += 6 * layer_params * sum(lens) + 3 * sum(4 * cfg.num_hidden_layers * cfg.hidden_size * n * n for n in lens)
    return total / len(batches)


def matmul_peak(threads: int) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(2):
        a @ b
    t = time.perf_counter()
    reps = 10
    for _ in range(reps):
        a @ b
    return 2 * 2048**3 * reps / (time.perf_counter() - t)


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) in MB, from /proc/self/status."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _bucket(args, chunk) -> int | None:
    return (args.bucket_size or None) if chunk is None else None


def memory_worker(side: str, setting: str, args) -> None:
    """Peak RSS of training steps alone, in a fresh process per side.

    Loading the MLQA-R JSON and the model peaks higher than a B=32 step, so a whole-process maximum
    (``ru_maxrss``) reads the same for both sides. We reset the kernel's peak counter
    (``/proc/self/clear_refs``, value 5) once data and model are loaded, then run two steps (the first
    allocates the optimizer state) and read the peak of those steps.
    """
    import gc

    from hybrid_retrieval.models.encoder import DualEncoder, resolve_model_path

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch, chunk = SETTINGS[setting]
    batches = load_batches(args.data, batch, 2)
    if side == "ours":
        runner = Ours(DualEncoder(max_length=args.max_length, freeze_embeddings=True), chunk, _bucket(args, chunk))
        runner.pretokenize(batches)
    else:
        runner = Theirs(resolve_model_path("offline/multilingual-e5-small-q4"), args.max_length, chunk)
    gc.collect()
    before, _ = _rss_mb()
    Path("/proc/self/clear_refs").write_text("5")
    for qs, ps in batches:
        runner.step(qs, ps)
    _, peak = _rss_mb()
    whole = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": peak, "before_mb": before, "whole_process_mb": whole}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--steps", type=int, default=6, help="timed steps per side (b512 uses half)")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument(
        "--bucket-size", type=int, default=8, help="our no-cache forward in length-sorted buckets of N texts (0 = off)"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mlqa-r"))
    ap.add_argument("--memory-worker", nargs=2, metavar=("SIDE", "SETTING"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_worker:
        memory_worker(*args.memory_worker, args)
        return
    from hybrid_retrieval.models.encoder import DualEncoder, resolve_model_path

    torch.set_num_threads(args.threads)
    peak = matmul_peak(args.threads)
    print(f"threads={args.threads} max_length={args.max_length}; fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    model_dir = resolve_model_path("offline/multilingual-e5-small-q4")
    rows = []
    for setting in args.settings:
        batch, chunk = SETTINGS[setting]
        steps = args.steps if chunk is None else max(2, args.steps // 2)
        batches = load_batches(args.data, batch, steps + 1)
        torch.manual_seed(0)
        enc = DualEncoder(max_length=args.max_length, freeze_embeddings=True)
        ours = Ours(enc, chunk, _bucket(args, chunk))
        t0 = time.perf_counter()
        ours.pretokenize(batches)
        pretok_s = time.perf_counter() - t0
        # Without caching, also time our step with one padded forward per side (no buckets): where the
        # difference to sentence-transformers comes from.
        plain = None
        if ours.bucket:
            plain = Ours(copy.deepcopy(enc), chunk, None)
            plain.cache = ours.cache
        theirs = Theirs(model_dir, args.max_length, chunk, state_from=copy.deepcopy(enc.query_model))
        # Loss check: dropout off, identical weights, the first batch.
        enc.eval()
        theirs.model.eval()
        with torch.no_grad():
            from hybrid_retrieval.common.padding import pad_batch

            pad = enc.tokenizer.pad_token_id
            q = pad_batch([ours.cache[("query", t)] for t in batches[0][0]], pad)
            p = pad_batch([ours.cache[("passage", t)] for t in batches[0][1]], pad)
            l_ours = float(ours.loss(enc.encode(q, "query"), enc.encode(p, "passage")))
            feats = [
                theirs.model.tokenize(["query: " + t for t in batches[0][0]]),
                theirs.model.tokenize(["passage: " + t for t in batches[0][1]]),
            ]
            l_theirs = float(losses_mnrl_value(theirs, feats))
        enc.train()
        theirs.model.train()
        # Warm-up step each, then alternate.
        ours.step(*batches[0])
        theirs.step(*batches[0])
        if plain is not None:
            plain.enc.train()
            plain.step(*batches[0])
        t_ours, t_theirs, t_plain = [], [], []
        for qs, ps in batches[1:]:
            t = time.perf_counter()
            ours.step(qs, ps)
            t_ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            theirs.step(qs, ps)
            t_theirs.append(time.perf_counter() - t)
            if plain is not None:
                t = time.perf_counter()
                plain.step(qs, ps)
                t_plain.append(time.perf_counter() - t)
        flops = encoder_flops(enc, batches[1:])
        if chunk is None:
            prof = profile_phases(ours, batches[1:])
            total = sum(prof.values())
            print(
                f"profile of our B={batch} step, one padded forward per side (median s): "
                + ", ".join(f"{k} {v:.3f} ({v / total:.0%})" for k, v in prof.items())
            )
        passes = 1.0 if chunk is None else 4.0 / 3.0  # grad cache adds one no-grad forward (≈1/3 of fwd+bwd)
        mem = {}
        for side in ("ours", "theirs"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--memory-worker",
                    side,
                    setting,
                    "--threads",
                    str(args.threads),
                    "--max-length",
                    str(args.max_length),
                    "--bucket-size",
                    str(args.bucket_size),
                    "--data",
                    args.data,
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                print(f"memory worker {side}/{setting} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                mem[side] = {"peak_rss_mb": float("nan"), "before_mb": float("nan")}
            else:
                mem[side] = json.loads(out.stdout.strip().splitlines()[-1])
        mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
        mp = statistics.median(t_plain) if t_plain else float("nan")
        rows.append(
            (
                setting,
                batch,
                chunk,
                batch / mo,
                batch / mt,
                batch / mp,
                mt / mo,
                l_ours,
                l_theirs,
                mem["ours"]["peak_rss_mb"],
                mem["theirs"]["peak_rss_mb"],
                mem["ours"]["peak_rss_mb"] - mem["ours"]["before_mb"],
                mem["theirs"]["peak_rss_mb"] - mem["theirs"]["before_mb"],
                flops * passes / mo / peak,
                pretok_s,
            )
        )
    print(
        f"\n{'setting':<8} {'ours pairs/s':>12} {'ST pairs/s':>11} {'ours 1-fwd':>10} {'ratio':>6} {'loss ours':>10} {'loss ST':>9} "
        f"{'RSS ours MB':>11} {'RSS ST MB':>10} {'step+ ours':>10} {'step+ ST':>9} {'ours MFU':>8}"
    )
    for _setting, b, c, po, pt, pp, r, lo, lt, mo_, mt_, do_, dt_, mfu, _pre in rows:
        name = f"B={b}" + (f",c{c}" if c else "")
        print(
            f"{name:<8} {po:>12.1f} {pt:>11.1f} {pp:>10.1f} {r:>6.2f} {lo:>10.5f} {lt:>9.5f} {mo_:>11.0f} {mt_:>10.0f} "
            f"{do_:>10.0f} {dt_:>9.0f} {mfu:>8.1%}"
        )
    print(f"ours: no-cache forward in length-sorted buckets of {args.bucket_size} texts (grad cache: sorted chunks);")
    print("ours 1-fwd = our no-cache step with one padded forward per side (the same batches, timed alternately).")
    print("ratio = our pairs/s / sentence-transformers pairs/s (median step times, alternating, same batches).")
    print("RSS = peak RSS during two training steps (fresh process per side, counter reset after loading);")
    print("step+ = that peak minus the RSS just before the steps (activations, gradients, optimizer state).")
    print("MFU = encoder fwd+bwd FLOPs (grad cache: ×4/3 for the extra no-grad forward) per step time / fp32 matmul peak.")


def losses_mnrl_value(theirs, feats) -> torch.Tensor:
    """The MNRL value without a backward (CMNRL's forward registers one), from the same embeddings."""
    from sentence_transformers import util

    emb = [theirs.model(f)["sentence_embedding"] for f in feats]
    scores = util.cos_sim(emb[0], emb[1]) * 20.0
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(scores)))


if __name__ == "__main__":
    main()
