"""GPU training throughput: our step vs sentence-transformers' MNRL / CachedMNRL, and the evaluation encode rate.

Real architectures with random weights (no hub): XLM-R base (``XLMRobertaConfig``, 250,002-row vocabulary) and the
multilingual-e5-small ``BertConfig``. Both sides get the SAME synthetic batches of token ids (a realistic length
distribution: queries ~16 tokens, passages ~45, capped at max_length), already tokenized, so the comparison is the
training step alone (no tokenizer on either side), bf16 autocast over fp32 weights (Lightning's ``bf16-mixed``),
token embeddings frozen on both, AdamW. B = 32 (no caching: ours vs MNRL), 512 and 4096 (gradient caching in
chunks of ``--chunk`` texts: ours vs CachedMNRL(mini_batch_size=chunk)). Steps alternate ours / theirs; pairs/s is
the median over the timed steps. Peak memory per side: its weights plus the most its two first steps allocate
(``torch.cuda.max_memory_allocated`` above what was resident; the first step allocates the optimizer state). Equal
work: both losses on the first batch from identical weights (``loss_check``). MFU: model FLOPs (6·P·tokens + attention, forward + backward; the
recompute pass of gradient caching is NOT counted) per second over a bf16 matmul peak measured in the same run.

    python benchmarks/gpu_throughput.py --out gpu_throughput.json      # on a GPU (benchmarks/gpu_check.sh)
    python benchmarks/gpu_throughput.py --cpu-dry-run                   # the same code, tiny configs, on the CPU
"""

from __future__ import annotations

import argparse
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

from hybrid_retrieval.common.offline_model import write_tokenizer  # noqa: E402
from hybrid_retrieval.models.encoder import DualEncoder, load_tokenizer  # noqa: E402
from hybrid_retrieval.models.grad_cache import contrastive_backward  # noqa: E402
from hybrid_retrieval.models.loss import InfoNCELoss  # noqa: E402


def model_config(name: str, tiny: bool):
    from transformers import BertConfig, XLMRobertaConfig

    size = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64} if tiny else {}
    if name == "xlmr-base":
        return XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, **size)
    if name == "e5-small":
        base = {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 1536}
        return BertConfig(vocab_size=250037, max_position_embeddings=512, pad_token_id=1, **(size or base))
    raise ValueError(name)


def synthetic_batch(batch: int, max_length: int, vocab: int, rng: np.random.Generator) -> list[dict[str, torch.Tensor]]:
    """(query, passage) features: lognormal lengths (queries median 16 tokens, passages 45), random ids, right padding."""
    out = []
    for median in (16, 45):
        lens = np.clip(rng.lognormal(np.log(median), 0.45, batch).astype(int), 4, max_length)
        ids = torch.full((batch, int(lens.max())), 1, dtype=torch.long)  # pad id 1 (XLM-R)
        mask = torch.zeros_like(ids)
        for i, n in enumerate(lens):
            ids[i, :n] = torch.as_tensor(rng.integers(5, vocab, n))
            ids[i, 0], ids[i, n - 1] = 0, 2  # <s> ... </s>
            mask[i, :n] = 1
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def model_flops(cfg, feats: list[dict[str, torch.Tensor]]) -> float:
    """Forward + backward FLOPs of the transformer layers: 6·P_layers·tokens + 12·L·h·s² per text (no recompute)."""
    h, layers = cfg.hidden_size, cfg.num_hidden_layers
    per_layer = 4 * h * h + 2 * h * cfg.intermediate_size  # attention projections + MLP weights
    total = 0.0
    for f in feats:
        lens = f["attention_mask"].sum(1).double()
        total += float(6 * layers * per_layer * lens.sum() + 12 * layers * h * (lens**2).sum())
    return total


def matmul_peak(device: str, n: int) -> float:
    """FLOP/s of an n×n×n bf16 matrix product on ``device`` (median of 10 after 3 warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    times = []
    for i in range(13):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Ours:
    def __init__(self, backbone, tokenizer, chunk, device):
        self.enc = DualEncoder(backbone=backbone, tokenizer=tokenizer, freeze_embeddings=True, max_length=512).to(device)
        self.loss, self.chunk, self.device = InfoNCELoss(temperature=0.05), chunk, device
        self.opt = torch.optim.AdamW([p for p in self.enc.parameters() if p.requires_grad], lr=1e-5)

    def step(self, q, p) -> float:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device, dtype=torch.bfloat16):
            loss = contrastive_backward(self.enc.encode, self.loss, q, p, None, chunk_size=self.chunk)
        self.opt.step()
        return float(loss)


class Theirs:
    def __init__(self, model_dir: str, chunk, device):
        from sentence_transformers import SentenceTransformer, losses
        from sentence_transformers.models import Normalize, Pooling, Transformer

        tr = Transformer(model_dir, max_seq_length=512, model_kwargs={"add_pooling_layer": False})
        dim = getattr(tr, "get_embedding_dimension", None) or tr.get_word_embedding_dimension
        self.model = SentenceTransformer(modules=[tr, Pooling(dim(), "mean"), Normalize()], device=device)
        tr.auto_model.get_input_embeddings().weight.requires_grad_(False)
        self.model.train()
        self.device = device
        if chunk:
            self.loss = losses.CachedMultipleNegativesRankingLoss(self.model, scale=20.0, mini_batch_size=chunk)
        else:
            self.loss = losses.MultipleNegativesRankingLoss(self.model, scale=20.0)
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-5)

    def step(self, q, p) -> float:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device, dtype=torch.bfloat16):
            loss = self.loss([dict(q), dict(p)], None)
            loss.backward()
        self.opt.step()
        return float(loss)


def loss_check(ours: Ours, theirs: Theirs, q, p) -> dict:
    """Equal work: both losses on the first batch from identical weights, fp32, dropout off (before any step)."""
    from sentence_transformers import losses

    ours.enc.eval(), theirs.model.eval()
    with torch.no_grad():
        a = float(ours.loss(ours.enc.encode(q, "query"), ours.enc.encode(p, "passage")))
        b = float(losses.MultipleNegativesRankingLoss(theirs.model, scale=20.0)([dict(q), dict(p)], None))
    ours.enc.train(), theirs.model.train()
    return {"ours": a, "theirs": b, "abs_diff": abs(a - b)}


def peak_memory(side, module: torch.nn.Module, batches, device: str) -> float | None:
    """GB a side needs over two steps (the first allocates its optimizer state): its own weights plus the most its
    steps allocate on top of what was resident before them (so the other side's weights do not count); None on CPU."""
    if device != "cuda":
        for q, p in batches[:2]:
            side.step(q, p)
        return None
    own = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    for q, p in batches[:2]:
        side.step(q, p)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before + own) / 2**30


def run_setting(name: str, batch: int, chunk: int | None, args, model_dir: Path, tokenizer, peak: float) -> dict:
    from transformers import AutoModel

    device, rng = args.device, np.random.default_rng(batch)
    cfg = model_config(name, args.cpu_dry_run)
    batches = [
        [{k: v.to(device) for k, v in f.items()} for f in synthetic_batch(batch, args.max_length, cfg.vocab_size, rng)]
        for _ in range(args.steps + 2)
    ]
    result = {"model": name, "batch": batch, "chunk": chunk, "max_length": args.max_length}
    backbone = AutoModel.from_pretrained(model_dir, add_pooling_layer=False)
    ours, theirs = Ours(backbone, tokenizer, chunk, device), Theirs(str(model_dir), chunk, device)
    result["loss_check"] = loss_check(ours, theirs, *batches[0])  # before any step: identical weights
    result["ours_peak_gb"] = peak_memory(ours, ours.enc, batches, device)
    result["theirs_peak_gb"] = peak_memory(theirs, theirs.model, batches, device)
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for q, p in batches[2:]:  # alternate, same batch for both
        for key, side in (("ours", ours), ("theirs", theirs)):
            _sync(device)
            t = time.perf_counter()
            side.step(q, p)
            _sync(device)
            times[key].append(time.perf_counter() - t)
    flops = statistics.mean(model_flops(cfg, b) for b in batches[2:])
    for key in times:
        step = statistics.median(times[key])
        result[f"{key}_pairs_per_s"] = batch / step
        result[f"{key}_mfu"] = flops / step / peak
    result["ratio"] = result["ours_pairs_per_s"] / result["theirs_pairs_per_s"]
    del ours, theirs, batches
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def encode_rate(name: str, args, model_dir: Path, tokenizer) -> dict:
    """Evaluation: texts/s of our encoder (no_grad, bf16 autocast, length-sorted batches of 256) over n texts."""
    from transformers import AutoModel

    device, rng = args.device, np.random.default_rng(1)
    cfg = model_config(name, args.cpu_dry_run)
    enc = DualEncoder(backbone=AutoModel.from_pretrained(model_dir, add_pooling_layer=False), tokenizer=tokenizer).to(device)
    enc.eval()
    feats = synthetic_batch(args.encode_texts, args.max_length, cfg.vocab_size, rng)[1]
    order = torch.argsort(feats["attention_mask"].sum(1))
    _sync(device)
    t = time.perf_counter()
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        for lo in range(0, len(order), 256):
            idx = order[lo : lo + 256]
            width = int(feats["attention_mask"][idx].sum(1).max())
            enc.encode({k: v[idx, :width].to(device, non_blocking=True) for k, v in feats.items()}, "passage")
    _sync(device)
    return {"model": name, "texts": args.encode_texts, "texts_per_s": args.encode_texts / (time.perf_counter() - t)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny configs, small batches, on the CPU: checks the code")
    ap.add_argument("--models", nargs="+", default=["xlmr-base", "e5-small"])
    ap.add_argument("--batches", nargs="+", type=int, default=[32, 512, 4096])
    ap.add_argument("--chunk", type=int, default=256, help="gradient-caching chunk (texts) for batches above it")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side and setting")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--encode-texts", type=int, default=26000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.cpu_dry_run:
        args.batches, args.chunk, args.steps, args.encode_texts, args.max_length = [8, 32], 8, 2, 64, 32
    elif not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device (use --cpu-dry-run to check the code on the CPU)")
    args.device = "cpu" if args.cpu_dry_run else "cuda"
    torch.manual_seed(0)
    peak = matmul_peak(args.device, 256 if args.cpu_dry_run else 8192)
    out = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu (dry run)", "torch": torch.__version__}
    out |= {"cuda": torch.version.cuda, "bf16_matmul_peak_tflops": peak / 1e12, "settings": [], "encode": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            from transformers import AutoModel

            model_dir = Path(tmp) / name
            AutoModel.from_config(model_config(name, args.cpu_dry_run), add_pooling_layer=False).save_pretrained(model_dir)
            write_tokenizer(model_dir, max_length=512)
            tokenizer = load_tokenizer(str(model_dir))
            for batch in args.batches:
                chunk = args.chunk if batch > args.chunk else None
                row = run_setting(name, batch, chunk, args, model_dir, tokenizer, peak)
                out["settings"].append(row)
                print(json.dumps(row), flush=True)
            out["encode"].append(encode_rate(name, args, model_dir, tokenizer))
            print(json.dumps(out["encode"][-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
