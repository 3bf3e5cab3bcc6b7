"""The text task's evaluators: LAReQA on the validation texts each epoch, and an optional second validation set in
the BEIR/MIRACL layout (nDCG@10, Recall@100, MRR@10)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import torch

from hybrid_retrieval.data.beir import load_beir
from hybrid_retrieval.evaluation.adhoc import ADHOC_METRICS, evaluate_adhoc
from hybrid_retrieval.evaluation.encode import encode_texts
from hybrid_retrieval.evaluation.lareqa_eval import EvalResult, evaluate_embeddings
from hybrid_retrieval.evaluation.trec import write_trec_run
from hybrid_retrieval.training.evaluator import BestSoFar, EmbeddingEvaluator, _broadcast_and_log, gather_rows

log = logging.getLogger(__name__)


class LareqaEvaluator(EmbeddingEvaluator):
    """LAReQA evaluation of the validation texts (questions then candidates), scored on rank 0.

    Logged: ``{prefix}/{mono,cross,multi}/{metric}`` macro averages, ``{prefix}/multi/rank_distance``,
    ``{prefix}/{X}-{Y}/map`` per pair and ``{prefix}/{X}-all/map``; the primary metric (default
    ``val/multi/map``) drives checkpointing and early stopping. With a W&B logger: a heatmap image of the
    X→Y mAP matrix and a ``wandb.Table`` of every pair. Every evaluation is also written as JSON to
    ``{out_dir}/epoch{E}.json``.
    """

    primary, what, rows = "multi/map", "LAReQA", "text"

    def __init__(self, prefix: str = "val", out_dir: str | None = None, block: int = 256, plot: bool = True):
        directions = {f"{s}/map": "max" for s in ("mono", "cross", "multi")}
        super().__init__(prefix, out_dir, plot, {**directions, "multi/rank_distance": "min"})
        self.block = block

    def n_rows(self, trainer: L.Trainer) -> int:
        return len(trainer.datamodule.eval_ids)

    def score(self, trainer, pl_module, rows: torch.Tensor) -> EvalResult:
        dm = trainer.datamodule
        return evaluate_embeddings(dm.corpus, rows[: dm.n_eval_queries], rows[dm.n_eval_queries :], block=self.block)

    def describe(self, trainer, flat: dict[str, float]) -> str:
        return (
            f"epoch {trainer.current_epoch} {trainer.datamodule.corpus.name}: mono mAP {flat['mono/map']:.4f} | "
            f"cross mAP {flat['cross/map']:.4f} | multi mAP {flat['multi/map']:.4f} | "
            f"rank distance {flat['multi/rank_distance']:.1f}"
        )

    def logged(self, flat: dict[str, float]) -> dict[str, float]:
        return {
            k: v for k, v in flat.items() if "/" in k and (k.split("/")[0] in ("mono", "cross", "multi") or k.endswith("/map"))
        }

    def wandb_payload(self, wandb, result: EvalResult) -> dict:
        langs = result.languages
        rows = []
        for i, x in enumerate(langs):
            for j, y in enumerate(langs):
                rows.append([x, y, *(float(result.pair[m][i, j]) for m in sorted(result.pair)), int(result.n_queries[i, j])])
        return {
            f"{self.prefix}/pairs": wandb.Table(columns=["query_lang", "cand_lang", *sorted(result.pair), "n_queries"], data=rows)
        }

    def heatmap(self, result: EvalResult):
        return (
            f"{self.prefix}/map_heatmap",
            result.pair["map"],
            result.languages,
            f"{self.prefix} mAP (query → candidate language)",
        )

    def headline(self, metrics: dict[str, float]) -> dict[str, float]:
        p = f"{self.prefix}/"
        return {
            k: v
            for k, v in metrics.items()
            if k.startswith(p) and k.count("/") == 2 and k.split("/")[1] in ("mono", "cross", "multi") and "mean_rank" not in k
        }

    def pairs_record(self) -> dict:
        result, pairs = self.last, {}
        if result is not None:
            for i, x in enumerate(result.languages):
                for j, y in enumerate(result.languages):
                    pairs[f"{x}-{y}"] = {m: float(result.pair[m][i, j]) for m in ("map", "r@1", "r@10")}
                pairs[f"{x}-all"] = {m: float(result.multi[m][i]) for m in ("map", "r@1", "r@10", "rank_distance")}
        return pairs


class AdhocEvaluator(L.Callback):
    """A second validation set in the BEIR/MIRACL layout, evaluated each validation epoch.

    Logs ``{prefix}/{name}/ndcg@10``, ``recall@100``, ``mrr@10`` and their ``_best``. Every rank encodes
    a strided share of the queries and documents; rank 0 ranks all documents exactly (faiss) and scores the
    top ``top_k``. The data is read once, at setup; ``max_queries`` bounds the cost on a big dev set.
    """

    def __init__(
        self,
        root: str,
        split: str = "dev",
        name: str | None = None,
        prefix: str = "val",
        max_queries: int | None = None,
        batch_size: int = 128,
        top_k: int = 100,
        ignore_identical_ids: bool = False,
        out_dir: str | None = None,
    ):
        super().__init__()
        self.root, self.split, self.prefix, self.max_queries = root, split, prefix, max_queries
        self.name = name or Path(root).name
        self.batch_size, self.top_k, self.ignore_identical_ids, self.out_dir = batch_size, top_k, ignore_identical_ids, out_dir
        self.dataset = None
        self.last = None

        self.best = BestSoFar({f"{self.name}/{m}": "max" for m in ADHOC_METRICS})

    @property
    def state_key(self) -> str:
        return f"AdhocEvaluator[{self.name}/{self.split}]"

    def state_dict(self) -> dict:
        return {"best": self.best.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best.load_state_dict(state_dict.get("best", {}))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dataset is None:
            self.dataset = load_beir(self.root, self.split, name=self.name, max_queries=self.max_queries)
            log.info("second validation set: %s", self.dataset.summary())

    def _encode_share(self, trainer, pl_module, texts: list[str], kind: str) -> torch.Tensor | None:
        """(len(texts), dim) on rank 0 (None elsewhere): each rank encodes texts[rank::world]."""

        rank, world = trainer.global_rank, trainer.world_size
        mine = torch.arange(rank, len(texts), world)
        emb = encode_texts(
            pl_module.encoder, [texts[i] for i in mine.tolist()], kind, batch_size=self.batch_size, device=pl_module.device
        )
        return gather_rows(trainer, pl_module, mine, emb, len(texts))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return

        ds = self.dataset
        t0 = time.perf_counter()
        q_emb = self._encode_share(trainer, pl_module, ds.query_texts, "query")
        d_emb = self._encode_share(trainer, pl_module, ds.doc_texts, "passage")
        flat = None
        if trainer.is_global_zero:
            result = evaluate_adhoc(
                ds.query_ids, ds.doc_ids, ds.qrels, q_emb, d_emb, top_k=self.top_k, ignore_identical_ids=self.ignore_identical_ids
            )
            self.last = result
            flat = {f"{self.name}/{m}": v for m, v in result.macro.items()}
            log.info(
                "epoch %d %s (%s, %d queries): " + " | ".join(f"{m} %.4f" for m in result.macro) + " (%.1fs)",
                trainer.current_epoch,
                self.name,
                self.split,
                len(ds.query_ids),
                *result.macro.values(),
                time.perf_counter() - t0,
            )
            if self.out_dir:
                out = Path(self.out_dir)
                write_trec_run(out / f"{self.name}.{self.split}.epoch{trainer.current_epoch:03d}.run", result.run)
                payload = {"epoch": trainer.current_epoch, "step": trainer.global_step, "metrics": result.macro}
                (out / f"{self.name}.{self.split}.epoch{trainer.current_epoch:03d}.json").write_text(
                    json.dumps(payload, indent=1)
                )
        _broadcast_and_log(trainer, pl_module, flat, self.prefix, self.best, prog_bar=None)
