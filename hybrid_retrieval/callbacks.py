"""Callbacks: LAReQA evaluation each validation epoch, logged per language pair (and to W&B)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import torch

from hybrid_retrieval.evaluation.lareqa_eval import EvalResult, evaluate_embeddings
from hybrid_retrieval.models.distributed import all_gather_variable

log = logging.getLogger(__name__)


class LareqaEvaluator(L.Callback):
    """Gathers the validation embeddings of every rank, evaluates on rank 0, logs on all ranks.

    Logged: ``{prefix}/{mono,cross,multi}/{metric}`` macro averages, ``{prefix}/multi/rank_distance``,
    ``{prefix}/{X}-{Y}/map`` per pair and ``{prefix}/{X}-all/map``; the primary metric (default
    ``val/multi/map``) drives checkpointing and early stopping. With a W&B logger: a heatmap image of the
    X→Y mAP matrix and a ``wandb.Table`` of every pair. Every evaluation is also written as JSON to
    ``{out_dir}/epoch{E}.json``.
    """

    def __init__(self, prefix: str = "val", out_dir: str | None = None, block: int = 256, plot: bool = True):
        super().__init__()
        self.prefix, self.out_dir, self.block, self.plot = prefix, out_dir, block, plot
        self.last: EvalResult | None = None
        self._chunks: list[tuple[torch.Tensor, torch.Tensor]] = []  # (indices, embeddings) of this epoch

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._chunks = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if outputs is not None:
            self._chunks.append(outputs)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        dm = trainer.datamodule
        chunks, self._chunks = self._chunks, []
        dim = pl_module.encoder.dim
        index = torch.cat([c[0] for c in chunks]) if chunks else torch.zeros(0, dtype=torch.long)
        emb = torch.cat([c[1] for c in chunks]) if chunks else torch.zeros(0, dim)
        device = pl_module.device
        index = all_gather_variable(index.to(device)).cpu()
        emb = all_gather_variable(emb.to(device)).cpu()
        flat: dict[str, float] | None = None
        if trainer.is_global_zero:
            n_total = len(dm.eval_ids)
            if index.numel() != n_total:
                log.warning(
                    "validation covered %d of %d texts (limit_val_batches?): LAReQA metrics skipped", index.numel(), n_total
                )
            else:
                full = torch.empty((n_total, dim))
                full[index] = emb
                t0 = time.perf_counter()
                result = evaluate_embeddings(dm.corpus, full[: dm.n_eval_queries], full[dm.n_eval_queries :], block=self.block)
                self.last = result
                flat = result.flat()
                log.info(
                    "epoch %d %s: mono mAP %.4f | cross mAP %.4f | multi mAP %.4f | rank distance %.1f (%.1fs)",
                    trainer.current_epoch,
                    dm.corpus.name,
                    flat["mono/map"],
                    flat["cross/map"],
                    flat["multi/map"],
                    flat["multi/rank_distance"],
                    time.perf_counter() - t0,
                )
                self._write(trainer, result, flat)
                self._to_wandb(trainer, result)
        flat = trainer.strategy.broadcast(flat, src=0)
        if flat is None:
            return
        keep = {
            k: v for k, v in flat.items() if "/" in k and (k.split("/")[0] in ("mono", "cross", "multi") or k.endswith("/map"))
        }
        for name, value in keep.items():
            pl_module.log(f"{self.prefix}/{name}", float(value), prog_bar=name == "multi/map", sync_dist=False)

    def _write(self, trainer: L.Trainer, result: EvalResult, flat: dict[str, float]) -> None:
        out = Path(self.out_dir) if self.out_dir else None
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        payload = {"epoch": trainer.current_epoch, "step": trainer.global_step, "metrics": flat, "languages": result.languages}
        (out / f"epoch{trainer.current_epoch:03d}.json").write_text(json.dumps(payload, indent=1))

    def _to_wandb(self, trainer: L.Trainer, result: EvalResult) -> None:
        from lightning.pytorch.loggers import WandbLogger  # noqa: PLC0415

        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        import wandb  # noqa: PLC0415

        from hybrid_retrieval.plots import heatmap  # noqa: PLC0415

        run = loggers[0].experiment
        langs = result.languages
        rows = []
        for i, x in enumerate(langs):
            for j, y in enumerate(langs):
                rows.append([x, y, *(float(result.pair[m][i, j]) for m in sorted(result.pair)), int(result.n_queries[i, j])])
        table = wandb.Table(columns=["query_lang", "cand_lang", *sorted(result.pair), "n_queries"], data=rows)
        payload = {f"{self.prefix}/pairs": table}
        if self.plot:
            fig = heatmap(result.pair["map"], langs, title=f"{self.prefix} mAP (query → candidate language)")
            payload[f"{self.prefix}/map_heatmap"] = wandb.Image(fig)
            import matplotlib.pyplot as plt  # noqa: PLC0415

            plt.close(fig)
        # Lightning's WandbLogger logs `trainer/global_step` as the x-axis metric and never passes step=;
        # an explicit step= that W&B's own counter has already passed is silently dropped, so do the same.
        run.log({**payload, "trainer/global_step": trainer.global_step})
