"""The image–text task's evaluator: recall both ways, caption mAP per language pair, the multilingual pool, CLIPScore."""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch

from hybrid_retrieval.evaluation.image_text_eval import ImageTextResult, evaluate_image_text
from hybrid_retrieval.tasks.image_text.data import load_image
from hybrid_retrieval.tasks.image_text.model import TorchmetricsCLIP
from hybrid_retrieval.training.evaluator import EmbeddingEvaluator

log = logging.getLogger(__name__)


class ImageTextEvaluator(EmbeddingEvaluator):
    """Image–text evaluation each validation epoch (:mod:`hybrid_retrieval.evaluation.image_text_eval`).

    Image embeddings come from the validation steps (gathered from every rank); captions are encoded here on
    rank 0. Logged: ``{prefix}/t2i/{X}/r@k``, ``{prefix}/i2t/{X}/r@k`` and their macro averages,
    ``{prefix}/caption/{X}-{Y}/map`` (+ mono / cross averages), ``{prefix}/multi/map``, ``{prefix}/multi/rank_distance``,
    ``{prefix}/clipscore/{X}`` (torchmetrics' CLIPScore on a whole CLIP model, the same formula otherwise), best-so-far
    values, a JSON per evaluation in ``out_dir`` and, with W&B, a per-language table and the caption-mAP heatmap."""

    primary, what, rows = "t2i/r@1", "image–text", "image"

    def __init__(self, prefix: str = "val", out_dir: str | None = None, batch_size: int = 128, plot: bool = True):
        directions = {"t2i/r@1": "max", "i2t/r@1": "max", "caption/cross/map": "max", "multi/map": "max"}
        super().__init__(prefix, out_dir, plot, directions)
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def _clipscores_torchmetrics(self, pl_module, dm, texts, owner, langs) -> dict[str, float]:
        from torchmetrics.multimodal.clip_score import CLIPScore  # noqa: PLC0415 - only for a whole CLIP model

        enc = pl_module.encoder
        out = {}
        for x in sorted(set(langs)):
            metric = CLIPScore(model_name_or_path=lambda: (TorchmetricsCLIP(enc.clip_model), enc.clip_processor))
            rows = [(o, t) for o, t, lang in zip(owner, texts, langs, strict=True) if lang == x]
            for lo in range(0, len(rows), self.batch_size):
                chunk = rows[lo : lo + self.batch_size]
                images = [torch.from_numpy(np.array(load_image(dm.eval_items[o].image))).permute(2, 0, 1) for o, _ in chunk]
                metric.update(images, [t for _, t in chunk])
            out[x] = float(metric.compute())
        return out

    def n_rows(self, trainer: L.Trainer) -> int:
        return len(trainer.datamodule.eval_items)

    def score(self, trainer, pl_module, rows: torch.Tensor) -> ImageTextResult:
        dm = trainer.datamodule
        texts, owner, langs = dm.eval_captions()
        enc = pl_module.encoder
        was = enc.training
        enc.eval()
        with torch.no_grad():
            step = self.batch_size
            caps = torch.cat(
                [enc.encode_texts(texts[i : i + step], cache=True).cpu() for i in range(0, len(texts), step)]
            )  # (M, dim)
        enc.train(was)
        scores = self._clipscores_torchmetrics(pl_module, dm, texts, owner, langs) if enc.clip_model is not None else None
        return evaluate_image_text(rows, caps, owner, langs, [it.key for it in dm.eval_items], clipscores=scores)

    def flat(self, result: ImageTextResult) -> dict[str, float]:
        return {k.split("/", 1)[1]: v for k, v in result.flat(self.prefix).items()}

    def describe(self, trainer, flat: dict[str, float]) -> str:
        return (
            f"epoch {trainer.current_epoch} image–text: t2i R@1 {flat['t2i/r@1']:.4f} | i2t R@1 {flat['i2t/r@1']:.4f} | "
            f"caption cross mAP {flat.get('caption/cross/map', float('nan')):.4f} | multi mAP {flat['multi/map']:.4f} | "
            f"rank distance {flat['multi/rank_distance']:.1f} | CLIPScore {flat['clipscore']:.2f}"
        )

    def record(self, result: ImageTextResult, flat: dict[str, float]) -> dict:
        return {"languages": result.languages, "n_images": result.n_images, "metrics": flat}

    def wandb_payload(self, wandb, result: ImageTextResult) -> dict:
        cols = ["language", *(f"t2i/r@{k}" for k in (1, 5, 10)), *(f"i2t/r@{k}" for k in (1, 5, 10)), "clipscore", "mean_rank"]
        rows = [
            [
                x,
                *(result.t2i[x][f"r@{k}"] for k in (1, 5, 10)),
                *(result.i2t[x][f"r@{k}"] for k in (1, 5, 10)),
                result.clipscore[x],
                result.mean_rank[x],
            ]
            for x in result.languages
        ]
        return {f"{self.prefix}/languages": wandb.Table(columns=cols, data=rows)}

    def heatmap(self, result: ImageTextResult):
        title = f"{self.prefix} caption mAP (query → candidate language)"
        return f"{self.prefix}/caption_map_heatmap", result.caption_map, result.languages, title

    def summary_table(self) -> str | None:
        """Per language: recall both ways, CLIPScore, rank in the multilingual pool."""
        return self.last.table() if self.last is not None else None

    def headline(self, metrics: dict[str, float]) -> dict[str, float]:
        p, groups = f"{self.prefix}/", ("multi", "t2i", "i2t", "caption", "clipscore")
        return {
            k: v
            for k, v in metrics.items()
            if k.startswith(p)
            and (
                (k.count("/") == 2 and k.split("/")[1] in groups and "mean_rank" not in k)
                or k.endswith("/clipscore")
                or (k.count("/") == 3 and k.split("/")[1] == "caption" and k.split("/")[2] in ("mono", "cross"))
            )
        }
