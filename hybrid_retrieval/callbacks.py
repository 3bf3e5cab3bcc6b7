"""Callbacks: LAReQA evaluation each validation epoch, logged per language pair (and to W&B); an optional
second validation set in the BEIR/MIRACL layout (nDCG@10, Recall@100, MRR@10); best-so-far tracking."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics import MaxMetric, MinMetric

from hybrid_retrieval.data.beir import load_beir
from hybrid_retrieval.data.image_text import load_image
from hybrid_retrieval.evaluation.adhoc import ADHOC_METRICS, evaluate_adhoc
from hybrid_retrieval.evaluation.encode import encode_texts
from hybrid_retrieval.evaluation.image_text_eval import ImageTextResult, evaluate_image_text
from hybrid_retrieval.evaluation.lareqa_eval import EvalResult, evaluate_embeddings
from hybrid_retrieval.evaluation.trec import write_trec_run
from hybrid_retrieval.models.distributed import all_gather_variable
from hybrid_retrieval.models.image_text import TorchmetricsCLIP
from hybrid_retrieval.plots import heatmap

log = logging.getLogger(__name__)


class BestSoFar:
    """Best value so far of some metrics (torchmetrics ``MaxMetric`` / ``MinMetric``), kept in the checkpoint.

    Logged as ``{name}_best`` (e.g. ``val/multi/map_best``): W&B summaries and sweepers read the best
    evaluation of a run from it, and a resumed run continues from the best it had (``state_dict``).
    The values are computed on rank 0 and broadcast, so every rank updates with the same numbers and no
    synchronisation is needed (``sync_on_compute=False``).
    """

    def __init__(self, directions: dict[str, str]):
        kinds = {"max": MaxMetric, "min": MinMetric}
        # float64: the logged best must equal the logged value it came from (float32 would round 0.3 to 0.30000001)
        self.metrics = {name: kinds[d](sync_on_compute=False).set_dtype(torch.float64) for name, d in directions.items()}
        self.seen: set[str] = set()

    def update(self, values: dict[str, float]) -> dict[str, float]:
        """Feed this evaluation's values; returns ``{name}_best`` for every tracked metric seen so far."""
        for name, metric in self.metrics.items():
            value = values.get(name)
            if value is not None and value == value:  # skip NaN (a setting with no queries)
                metric.update(float(value))
                self.seen.add(name)
        return {f"{name}_best": float(self.metrics[name].compute()) for name in sorted(self.seen)}

    def state_dict(self) -> dict[str, float]:
        return {name: float(self.metrics[name].compute()) for name in sorted(self.seen)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        for name, value in state.items():
            if name in self.metrics:
                self.metrics[name].update(float(value))
                self.seen.add(name)


def _broadcast_and_log(trainer, pl_module, flat: dict[str, float] | None, prefix: str, best: BestSoFar, prog_bar: str | None):
    """Rank 0's metrics to every rank, logged there with the best-so-far values (no sync: they are equal)."""
    flat = trainer.strategy.broadcast(flat, src=0)
    if flat is None:
        return
    for name, value in {**flat, **best.update(flat)}.items():
        pl_module.log(f"{prefix}/{name}", float(value), prog_bar=name == prog_bar, sync_dist=False)


def gather_rows(trainer, pl_module, index: torch.Tensor, emb: torch.Tensor, n_total: int) -> torch.Tensor | None:
    """Assemble every rank's rows into one (n_total, dim) matrix on rank 0 (None on other ranks).

    ``index`` (n_mine,) says which rows this rank's ``emb`` (n_mine, dim) are; ranks may hold different
    counts. Returns None on rank 0 too when the gathered rows are not exactly 0..n_total-1 once each
    (a partial validation), so a metric is never computed over uninitialised rows.
    """
    device = pl_module.device
    index = all_gather_variable(index.to(device)).cpu()  # (n_all,)
    emb = all_gather_variable(emb.to(device)).cpu()  # (n_all, dim)
    if not trainer.is_global_zero:
        return None
    if not torch.equal(torch.sort(index).values, torch.arange(n_total)):  # each row exactly once
        log.warning("gathered %d rows for %d texts (not each exactly once)", index.numel(), n_total)
        return None
    full = torch.empty((n_total, emb.shape[1]))  # (n_total, dim)
    full[index] = emb
    return full


class EmbeddingEvaluator(L.Callback):
    """What every task's evaluator does each validation epoch: collect this rank's (indices, embeddings) from the
    validation steps, assemble every rank's rows on rank 0 (:func:`gather_rows`), score them there, update the
    best-so-far values (kept in the checkpoint), write ``{out_dir}/{file_name}``, log to W&B, and log the numbers
    on every rank. A task supplies :meth:`n_rows`, :meth:`score`, :meth:`describe` and optionally :meth:`logged`,
    :meth:`record`, :meth:`wandb_payload` and :meth:`heatmap`.
    """

    primary: str = ""  # the metric shown in the progress bar (the task's default optimized metric, without prefix)
    what, rows = "evaluation", "row"  # what is evaluated and what a row is (the warning when validation missed some)
    evaluated_step: int | None = None  # the global step of the last evaluation (train.py evaluates a fit's end)

    def __init__(self, prefix: str, out_dir: str | None, plot: bool, directions: dict[str, str]):
        super().__init__()
        self.prefix, self.out_dir, self.plot = prefix, out_dir, plot
        self.last = None  # the last evaluation's result (rank 0)
        self._chunks: list[tuple[torch.Tensor, torch.Tensor]] = []  # (indices, embeddings) of this epoch
        self.best = BestSoFar(directions)

    # ------------------------------------------------------------------ task hooks
    def n_rows(self, trainer: L.Trainer) -> int:
        """How many rows (texts, images) one validation epoch embeds over all ranks."""
        raise NotImplementedError

    def score(self, trainer: L.Trainer, pl_module: L.LightningModule, rows: torch.Tensor):
        """The result of the (n_rows, dim) embeddings, on rank 0; it has ``flat()`` → {metric: value}."""
        raise NotImplementedError

    def flat(self, result) -> dict[str, float]:
        return result.flat()

    def describe(self, trainer: L.Trainer, flat: dict[str, float]) -> str:
        """One log line of this epoch's headline numbers."""
        raise NotImplementedError

    def logged(self, flat: dict[str, float]) -> dict[str, float]:
        """What of ``flat`` is logged (the JSON file keeps everything)."""
        return flat

    def record(self, result, flat: dict[str, float]) -> dict:
        """The JSON file's entries after epoch and step (the metrics among them)."""
        return {"metrics": flat, "languages": result.languages}

    def wandb_payload(self, wandb, result) -> dict:
        return {}

    def pairs_record(self) -> dict:
        """The last evaluation's metrics per language pair, for the job record ({} when the task has none)."""
        return {}

    def summary_table(self) -> str | None:
        """A table printed when a run finishes (None: the macro metrics say it all)."""
        return None

    def headline(self, metrics: dict[str, float]) -> dict[str, float]:
        """The logged metrics printed when a run finishes: this evaluator's macro averages (with their best)."""
        return {}

    def heatmap(self, result) -> tuple[str, np.ndarray, list[str], str] | None:
        """(key, matrix, languages, title) of the W&B heatmap image, or None."""
        return None

    # ------------------------------------------------------------------ the fixed part
    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.evaluated_step = trainer.global_step

    def state_dict(self) -> dict:
        return {"best": self.best.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best.load_state_dict(state_dict.get("best", {}))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._chunks = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if outputs is not None:
            self._chunks.append(outputs)

    def _gathered(self, trainer, pl_module, n_total: int) -> torch.Tensor | None:
        """(n_total, dim) embeddings of this epoch on rank 0 (None elsewhere, or when a row is missing)."""
        chunks, self._chunks = self._chunks, []
        dim = pl_module.encoder.dim
        index = torch.cat([c[0] for c in chunks]) if chunks else torch.zeros(0, dtype=torch.long)
        emb = torch.cat([c[1] for c in chunks]) if chunks else torch.zeros(0, dim)
        return gather_rows(trainer, pl_module, index, emb, n_total)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        rows = self._gathered(trainer, pl_module, self.n_rows(trainer))  # (n_rows, dim) on rank 0
        flat: dict[str, float] | None = None
        if trainer.is_global_zero and rows is None:
            log.warning(
                "%s metrics skipped: validation did not cover every %s (limit_val_batches?)", type(self).__name__, self.rows
            )
        elif trainer.is_global_zero:
            t0 = time.perf_counter()
            result = self.score(trainer, pl_module, rows)
            self.last = result
            flat = self.flat(result)
            log.info("%s (%.1fs)", self.describe(trainer, flat), time.perf_counter() - t0)
            self._write(trainer, result, flat)
            self._to_wandb(trainer, result)
        _broadcast_and_log(trainer, pl_module, None if flat is None else self.logged(flat), self.prefix, self.best, self.primary)

    def _write(self, trainer: L.Trainer, result, flat: dict[str, float]) -> None:
        if not self.out_dir:
            return
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        payload = {"epoch": trainer.current_epoch, "step": trainer.global_step, **self.record(result, flat)}
        (out / self.file_name(trainer)).write_text(json.dumps(payload, indent=1))

    @staticmethod
    def file_name(trainer: L.Trainer) -> str:
        """``epoch{E}.json`` during a fit; a validation outside it (``validate_before_training``) gets its own
        name, ``validate-step{N}.json``, so the first epoch's evaluation does not overwrite it."""
        if trainer.state.fn == TrainerFn.FITTING:
            return f"epoch{trainer.current_epoch:03d}.json"
        return f"validate-step{trainer.global_step:06d}.json"

    def _to_wandb(self, trainer: L.Trainer, result) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        import wandb  # noqa: PLC0415 - slow to import (~2 s) and only needed when W&B logging is on

        payload = self.wandb_payload(wandb, result)
        spec = self.heatmap(result) if self.plot else None
        if spec is not None:
            key, matrix, langs, title = spec
            fig = heatmap(matrix, langs, title=title)
            payload[key] = wandb.Image(fig)
            import matplotlib.pyplot as plt  # noqa: PLC0415 - slow to import (~1 s); only plots need it, after the headless backend is chosen

            plt.close(fig)
        # Lightning's WandbLogger logs `trainer/global_step` as the x-axis metric and never passes step=;
        # an explicit step= that W&B's own counter has already passed is silently dropped, so do the same.
        loggers[0].experiment.log({**payload, "trainer/global_step": trainer.global_step})


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
