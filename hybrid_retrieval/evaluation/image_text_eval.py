"""Image–text retrieval metrics per language, from embeddings (pure torch; no Lightning).

With images ``I`` (N, d) and captions ``C`` (M, d), L2-normalised, caption ``c`` belonging to image ``owner[c]``
in language ``lang[c]``, and scene keys ``key`` (N,) (images with equal keys show the same thing):

* ``t2i/{X}/r@k`` — captions in X as queries over all N images; a hit when an image with the caption's key is in
  the top k (the usual image–text "R@k", i.e. success@k);
* ``i2t/{X}/r@k`` — each image as query over the captions in X; a hit when one of its (same-key) captions is in
  the top k;
* ``caption/{X}-{Y}/map`` — captions in X as queries over the captions in Y (for X = Y without the query itself):
  the same-key captions are relevant (captions of one image are parallel): the cross-lingual text retrieval of
  LAReQA, on captions;
* ``multi/map``, ``multi/rank_distance`` — each image as query over the captions of all languages (relevant: all
  its same-key captions); rank distance = worst − best relevant rank (LAReQA's language bias), and
  ``multi/mean_rank/{X}`` the mean rank of its relevant captions in X (which language the model prefers);
* ``clipscore/{X}`` — CLIPScore of each image with its captions in X as torchmetrics computes it:
  ``max(100 · mean(cos), 0)`` (the mean over pairs, then clamped; :func:`clip_score`).

Ranks and AP come from :mod:`hybrid_retrieval.evaluation.metrics` (checked against pytrec_eval); ties are broken
by candidate index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hybrid_retrieval.evaluation.metrics import metrics_from_ranks, ranks_of

RECALL_KS = (1, 5, 10)


def clip_score(image_emb: torch.Tensor, text_emb: torch.Tensor) -> float:
    """torchmetrics' CLIPScore of matched rows: max(100 · mean_i cos(image_i, text_i), 0)."""
    a = torch.nn.functional.normalize(image_emb.double(), dim=-1)
    b = torch.nn.functional.normalize(text_emb.double(), dim=-1)
    return float(torch.clamp(100 * (a * b).sum(-1).mean(), min=0.0))


def _relevant(
    query_keys: torch.Tensor, cand_keys: torch.Tensor, exclude: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, R) indices of same-key candidates (-1 padded) and (q,) their counts; ``exclude`` (q,) drops one each."""
    same = query_keys.unsqueeze(1) == cand_keys.unsqueeze(0)  # (q, c)
    if exclude is not None:
        same[torch.arange(len(query_keys)), exclude] = False
    counts = same.sum(1)
    width = max(1, int(counts.max()) if len(counts) else 1)
    rel = torch.full((len(query_keys), width), -1, dtype=torch.long)
    for i, row in enumerate(same):
        idx = row.nonzero().flatten()
        rel[i, : len(idx)] = idx
    return rel, counts


def _hits(scores: torch.Tensor, rel: torch.Tensor, counts: torch.Tensor) -> dict[str, float]:
    ranks = ranks_of(scores, rel)  # (q, R)
    best = ranks.min(1).values  # (q,) rank of the best relevant candidate
    out = {f"r@{k}": float((best <= k).double().mean()) for k in RECALL_KS}
    out["map"] = float(metrics_from_ranks(ranks, counts)["map"].mean())
    return out


@dataclass
class ImageTextResult:
    languages: list[str]
    t2i: dict[str, dict[str, float]]  # language -> metric -> value
    i2t: dict[str, dict[str, float]]
    caption_map: np.ndarray  # (L, L) caption X -> caption Y mAP
    multi: dict[str, float]
    mean_rank: dict[str, float]  # language -> mean rank of the relevant captions in the multilingual pool
    clipscore: dict[str, float]
    n_images: int

    def table(self) -> str:
        """Per-language lines for the console: recall both ways, CLIPScore, the pool's mean relevant rank."""
        lines = [
            f"  {'lang':<5} {'t2i R@1':>8} {'R@5':>6} {'R@10':>6} {'i2t R@1':>8} {'R@5':>6} {'R@10':>6} "
            f"{'CLIPScore':>10} {'pool rank':>10}"
        ]
        for x in self.languages:
            t, i = self.t2i[x], self.i2t[x]
            lines.append(
                f"  {x:<5} {t['r@1']:>8.4f} {t['r@5']:>6.4f} {t['r@10']:>6.4f} {i['r@1']:>8.4f} {i['r@5']:>6.4f} "
                f"{i['r@10']:>6.4f} {self.clipscore[x]:>10.2f} {self.mean_rank[x]:>10.1f}"
            )
        lines.append(
            f"  {self.n_images} images; chance t2i R@1 = {1 / self.n_images:.4f}; multilingual pool mAP {self.multi['map']:.4f}, "
            f"rank distance {self.multi['rank_distance']:.1f}"
        )
        return "\n".join(lines)

    def flat(self, prefix: str = "val") -> dict[str, float]:
        out: dict[str, float] = {}
        for side in ("t2i", "i2t"):
            table = getattr(self, side)
            for x in self.languages:
                for m, v in table[x].items():
                    out[f"{prefix}/{side}/{x}/{m}"] = v
            for m in table[self.languages[0]]:
                out[f"{prefix}/{side}/{m}"] = float(np.mean([table[x][m] for x in self.languages]))
        for i, x in enumerate(self.languages):
            for j, y in enumerate(self.languages):
                out[f"{prefix}/caption/{x}-{y}/map"] = float(self.caption_map[i, j])
        n = len(self.languages)
        off = ~np.eye(n, dtype=bool)
        out[f"{prefix}/caption/mono/map"] = float(np.diag(self.caption_map).mean())
        if n > 1:
            out[f"{prefix}/caption/cross/map"] = float(self.caption_map[off].mean())
        for m, v in self.multi.items():
            out[f"{prefix}/multi/{m}"] = v
        for x, v in self.mean_rank.items():
            out[f"{prefix}/multi/mean_rank/{x}"] = v
        for x, v in self.clipscore.items():
            out[f"{prefix}/clipscore/{x}"] = v
        out[f"{prefix}/clipscore"] = float(np.mean(list(self.clipscore.values())))
        return out


def evaluate_image_text(
    image_emb: torch.Tensor,
    caption_emb: torch.Tensor,
    owner: Sequence[int],
    caption_langs: Sequence[str],
    image_keys: Sequence[str] | None = None,
    clipscores: dict[str, float] | None = None,
) -> ImageTextResult:
    """All settings for images (N, d) and captions (M, d); ``clipscores`` overrides the per-language CLIPScore (the
    torchmetrics value of a whole CLIP model)."""
    img = torch.nn.functional.normalize(image_emb.double(), dim=-1)  # (N, d)
    cap = torch.nn.functional.normalize(caption_emb.double(), dim=-1)  # (M, d)
    owner_t = torch.as_tensor(list(owner), dtype=torch.long)  # (M,)
    names = {k: i for i, k in enumerate(dict.fromkeys(image_keys or range(len(img))))}
    ikey = torch.tensor([names[k] for k in (image_keys or range(len(img)))])  # (N,) scene id per image
    ckey = ikey[owner_t]  # (M,)
    langs = sorted(set(caption_langs))
    lang_t = np.asarray(caption_langs)
    sel = {x: torch.from_numpy(np.flatnonzero(lang_t == x)) for x in langs}
    t2i, i2t, score = {}, {}, {}
    for x in langs:
        c = sel[x]
        rel, n = _relevant(ckey[c], ikey)
        t2i[x] = {k: v for k, v in _hits(cap[c] @ img.T, rel, n).items() if k != "map"}
        rel, n = _relevant(ikey, ckey[c])
        keep = n > 0  # an image without a caption in X has no relevant candidate there
        i2t[x] = {k: v for k, v in _hits((img @ cap[c].T)[keep], rel[keep], n[keep]).items() if k != "map"}
        score[x] = clip_score(img[owner_t[c]], cap[c])
    cmap = np.zeros((len(langs), len(langs)))
    for i, x in enumerate(langs):
        for j, y in enumerate(langs):
            q, cand = sel[x], sel[y]
            exclude = None
            if x == y:
                exclude = torch.arange(len(q))  # the query itself is not a candidate answer
            rel, n = _relevant(ckey[q], ckey[cand], exclude)
            scores = cap[q] @ cap[cand].T
            if exclude is not None:
                scores[torch.arange(len(q)), exclude] = -torch.inf
            keep = n > 0
            cmap[i, j] = _hits(scores[keep], rel[keep], n[keep])["map"] if keep.any() else float("nan")
    rel, n = _relevant(ikey, ckey)
    ranks = ranks_of(img @ cap.T, rel)  # (N, R)
    m = metrics_from_ranks(ranks, n)
    multi = {"map": float(m["map"].mean()), "rank_distance": float(m["rank_distance"].mean())}
    mean_rank = {}
    rel_lang = np.where(rel.numpy() >= 0, lang_t[rel.clamp_min(0).numpy()], "")
    for x in langs:
        mask = torch.from_numpy(rel_lang == x)
        mean_rank[x] = float(ranks[mask].double().mean()) if mask.any() else float("nan")
    return ImageTextResult(langs, t2i, i2t, cmap, multi, mean_rank, clipscores or score, len(img))
