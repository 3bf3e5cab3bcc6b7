"""The evaluator callback base both tasks use: collect the validation steps' embeddings, gather them on rank 0,
score, keep the best-so-far values, write JSON, log to W&B; a task supplies its scoring and summary."""

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

from hybrid_retrieval.common.plots import heatmap
from hybrid_retrieval.models.distributed import all_gather_variable

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

    def media(self, wandb, result) -> dict:
        """The W&B objects of one evaluation: the task's tables and, with ``plot``, the heatmap image (also what
        ``python -m hybrid_retrieval.evaluate`` logs)."""
        payload = self.wandb_payload(wandb, result)
        spec = self.heatmap(result) if self.plot else None
        if spec is not None:
            key, matrix, langs, title = spec
            fig = heatmap(matrix, langs, title=title)
            payload[key] = wandb.Image(fig)
            import matplotlib.pyplot as plt  # noqa: PLC0415 - slow to import (~1 s); only plots need it, after the headless backend is chosen

            plt.close(fig)
        return payload

    def _to_wandb(self, trainer: L.Trainer, result) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        import wandb  # noqa: PLC0415 - slow to import (~2 s) and only needed when W&B logging is on

        # Lightning's WandbLogger logs `trainer/global_step` as the x-axis metric and never passes step=;
        # an explicit step= that W&B's own counter has already passed is silently dropped, so do the same.
        loggers[0].experiment.log({**self.media(wandb, result), "trainer/global_step": trainer.global_step})
