"""This project's LAReQA evaluation vs. a naive per-setting evaluator, side by side in one run.

* ours: every question and candidate encoded once (de-duplicated, length-sorted, dynamic padding),
  one score block per query language serves all settings, metrics vectorised;
* naive: what a per-pair evaluator does: for each setting (X→Y and X→all), encode that setting's
  questions and candidates again (fixed-order batches padded to max_length), score, then compute AP
  per query in a Python loop.

Both produce the same numbers (checked here). Prints wall times, the ratio, and the share of our time
spent outside the encoder forward pass.

    python benchmarks/eval_speed.py                         # XQuAD-R, 3 languages (en de es), real encoder
    python benchmarks/eval_speed.py --languages all         # all 11 languages (naive side takes long on a CPU)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


class ForwardTimer:
    """Wraps ``encoder.encode`` to add up the time spent in the model forward."""

    def __init__(self, encoder):
        self.encoder, self.inner, self.seconds = encoder, encoder.encode, 0.0
        encoder.encode = self

    def __call__(self, feats, kind):
        t = time.perf_counter()
        out = self.inner(feats, kind)
        self.seconds += time.perf_counter() - t
        return out


def naive_eval(encoder, corpus, batch_size: int) -> dict[str, float]:
    """Per-setting re-encoding, padding to max_length, Python-loop AP. Returns macro mAP per setting type."""

    @torch.no_grad()
    def enc(texts, kind):
        out = []
        for lo in range(0, len(texts), batch_size):
            prefix = encoder.query_prefix if kind == "query" else encoder.passage_prefix
            t = encoder.tokenizer(
                [prefix + x for x in texts[lo : lo + batch_size]],
                padding="max_length",
                truncation=True,
                max_length=encoder.max_length,
                return_tensors="pt",
            )
            out.append(encoder.encode({"input_ids": t["input_ids"], "attention_mask": t["attention_mask"]}, kind))
        return torch.cat(out)

    def ap(scores: np.ndarray, relevant: set[int]) -> float:
        order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
        hits, total = 0, 0.0
        for rank, j in enumerate(order, 1):
            if j in relevant:
                hits += 1
                total += hits / rank
        return total / len(relevant)

    langs, offs = corpus.languages, corpus.c_offsets
    res = {"mono": [], "cross": [], "multi": []}
    for xi, _x in enumerate(langs):
        q_idx = np.flatnonzero(corpus.q_lang == xi)
        for yi, _y in enumerate([*langs, "all"]):
            if yi < len(langs):
                rows = [i for i in q_idx if yi in corpus.gold[corpus.q_ids[i]]]
                c_lo, c_hi = int(offs[yi]), int(offs[yi + 1])
            else:
                rows, c_lo, c_hi = list(q_idx), 0, len(corpus.c_texts)
            q = enc([corpus.q_texts[i] for i in rows], "query")
            c = enc(corpus.c_texts[c_lo:c_hi], "passage")
            s = (q @ c.T).numpy()
            aps = []
            for r, i in enumerate(rows):
                gold = corpus.gold[corpus.q_ids[i]]
                rel = {gold[yi] - c_lo} if yi < len(langs) else set(gold.values())
                aps.append(ap(s[r], rel))
            kind = "multi" if yi == len(langs) else ("mono" if yi == xi else "cross")
            res[kind].append(float(np.mean(aps)))
    return {k: float(np.mean(v)) for k, v in res.items() if v}


def main() -> None:
    from hybrid_retrieval.data.lareqa import load_lareqa
    from hybrid_retrieval.evaluation.encode import encode_texts
    from hybrid_retrieval.evaluation.lareqa_eval import EvalCorpus, evaluate_embeddings
    from hybrid_retrieval.models.encoder import DualEncoder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "xquad-r"))
    ap.add_argument("--languages", nargs="+", default=["en", "de", "es"])
    ap.add_argument("--encoder", default="offline/multilingual-e5-small-q4")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    langs = None if args.languages == ["all"] else args.languages
    ds = load_lareqa(args.data, langs)
    corpus = EvalCorpus.from_dataset(ds)
    enc = DualEncoder(name=args.encoder, max_length=args.max_length)
    enc.eval()
    timer = ForwardTimer(enc)
    print(f"{ds.summary()}\nencoder={args.encoder} max_length={args.max_length} threads={torch.get_num_threads()}")

    t0 = time.perf_counter()
    q = encode_texts(enc, corpus.q_texts, "query", batch_size=args.batch_size)
    c = encode_texts(enc, corpus.c_texts, "passage", batch_size=args.batch_size)
    result = evaluate_embeddings(corpus, q, c)
    ours_s = time.perf_counter() - t0
    ours_fwd = timer.seconds
    macro = result.macro()

    timer.seconds = 0.0
    t0 = time.perf_counter()
    naive = naive_eval(enc, corpus, args.batch_size)
    naive_s = time.perf_counter() - t0
    naive_fwd = timer.seconds

    for k in ("mono", "cross", "multi"):
        if k in naive:
            assert abs(naive[k] - macro[f"{k}/map"]) < 2e-3, (k, naive[k], macro[f"{k}/map"])  # padding-only float noise
    n_settings = len(corpus.languages) ** 2 + len(corpus.languages)
    print(
        f"\n{n_settings} settings; mAP mono/cross/multi: ours {macro['mono/map']:.4f}/{macro['cross/map']:.4f}/"
        f"{macro['multi/map']:.4f}, naive {naive['mono']:.4f}/{naive.get('cross', float('nan')):.4f}/{naive['multi']:.4f}"
    )
    print(f"{'':<8} {'wall s':>8} {'encoder fwd s':>14} {'outside fwd':>12}")
    print(f"{'ours':<8} {ours_s:>8.1f} {ours_fwd:>14.1f} {(ours_s - ours_fwd) / ours_s:>11.1%}")
    print(f"{'naive':<8} {naive_s:>8.1f} {naive_fwd:>14.1f} {(naive_s - naive_fwd) / naive_s:>11.1%}")
    print(f"speed-up (naive / ours): {naive_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
