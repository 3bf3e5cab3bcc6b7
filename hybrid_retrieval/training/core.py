"""The training core both tasks use unchanged: :class:`ContrastiveModule`.

A task (text retrieval, image–text) subclasses it and supplies only what differs — how a training batch becomes
:class:`~hybrid_retrieval.models.grad_cache.Side` objects and a loss over their embeddings, which languages a batch
holds, how an evaluation batch becomes embeddings. Everything else is here, once:

* manual optimisation: gradient caching (:func:`~hybrid_retrieval.models.grad_cache.cached_backward`), one
  ``all_reduce`` of the gradients per step with DDP's reducer kept out of the (several) backward passes — with the
  differentiable all-gather in the loss this is the exact global-batch gradient (``tests/test_distributed.py``);
* the non-finite policy, decided on every rank alike (a rank that raised alone would leave the others waiting in
  the next collective for ever);
* exact resume: every rank's RNG state in the checkpoint, restored where the uninterrupted run stood; the data
  module positions the sampler (``set_epoch`` here, mid-epoch skipping in its ``train_dataloader``);
* the learning-rate schedule over the planned steps, and the per-step / per-epoch training logs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

import lightning as L
import torch
from torchmetrics import MeanMetric

from hybrid_retrieval.common.errors import require_choice
from hybrid_retrieval.common.timing import FIRST_STEP_MARKER, first_step_record
from hybrid_retrieval.models.distributed import all_ranks_true, average_gradients, gather_objects
from hybrid_retrieval.models.grad_cache import Side, cached_backward
from hybrid_retrieval.models.loss import InfoNCELoss

log = logging.getLogger(__name__)

NONFINITE_POLICIES = ("raise", "skip")


class NonFiniteLossError(FloatingPointError):
    pass


def check_nonfinite(value) -> None:
    require_choice("model.nonfinite", value, NONFINITE_POLICIES, "expected 'raise' or 'skip'")


class ContrastiveModule(L.LightningModule):
    """Manual-optimisation contrastive training of ``encoder`` with ``loss``; subclasses implement :meth:`sides`, :meth:`batch_loss`,
    :meth:`batch_languages`, :meth:`is_monolingual` and ``validation_step``.

    ``grad_cache``: ``{chunk_size, bucket_size}`` (null = one forward/backward; ``bucket_size`` is used by sides
    that support length buckets). ``nonfinite``: ``raise`` or ``skip`` a batch whose loss is not finite on any rank.
    """

    def __init__(
        self,
        encoder: torch.nn.Module,
        loss: InfoNCELoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., object] | None = None,
        grad_cache: dict | None = None,
        gradient_clip_val: float | None = 1.0,
        nonfinite: str = "raise",
        warmup_ratio: float = 0.1,
    ):
        super().__init__()
        self.automatic_optimization = False
        # encoder before loss: the parameter order (optimizer state, the clipping norm's sum, the flat all-reduce)
        self.encoder, self.loss_fn = encoder, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.chunk_size = (grad_cache or {}).get("chunk_size")
        self.bucket_size = (grad_cache or {}).get("bucket_size")
        self.gradient_clip_val = gradient_clip_val
        check_nonfinite(nonfinite)
        self.nonfinite = nonfinite
        self.warmup_ratio = float(warmup_ratio)
        self.skipped_batches = 0
        # Epoch statistics aggregated over ranks (torchmetrics: weighted by local rows, synced at epoch end):
        # the mean loss and the realised fraction of monolingual batches (realised alpha).
        self.train_loss_mean = MeanMetric()
        self.train_mono_fraction = MeanMetric()
        self._pending_rng: dict | None = None
        self._rng_at_epoch_start = False
        self.resumed_from_step: int | None = None  # the checkpoint's step when fit resumed one (job records say so)
        self.startup: dict | None = None  # time and memory to the first training step (common.timing), for the record

    # ------------------------------------------------------------------ task hooks
    def sides(self, batch: dict) -> list[Side]:
        """The batch's groups of rows to embed, in the order :meth:`batch_loss` takes their embeddings."""
        raise NotImplementedError

    def batch_loss(self, batch: dict, *embeddings: torch.Tensor) -> torch.Tensor:
        """The scalar loss over the embeddings of :meth:`sides` (this rank's rows; the loss gathers the others)."""
        raise NotImplementedError

    def batch_languages(self, batch: dict) -> dict[str, Sequence[str]]:
        """What the batch holds, per side, for logs and error messages: e.g. ``{"query langs": [...]}``."""
        raise NotImplementedError

    def is_monolingual(self, batch: dict) -> bool:
        raise NotImplementedError

    def checkpoint_state(self) -> dict:
        """Extra entries of the checkpoint's ``hybrid_retrieval`` section (e.g. how to rebuild the encoder)."""
        return {}

    # ------------------------------------------------------------------ resume
    # RNG state travels with the checkpoint so a resumed run draws the same dropout masks. It is applied at the
    # first training batch after loading (creating the DataLoader iterator draws from the global generator, which an
    # uninterrupted run did before the checkpoint). Under DDP every rank draws from its own generator, so every
    # rank's state is kept (rank 0 writes the file: gathered here, on every rank, as Lightning dumps on every rank).
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        rng = {
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        checkpoint["hybrid_retrieval"] = {
            **rng,
            "rank_rng": gather_objects(rng),
            "skipped_batches": self.skipped_batches,
            **self.checkpoint_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.resumed_from_step = int(checkpoint.get("global_step", 0))
        state = checkpoint.get("hybrid_retrieval")
        if state:
            per_rank = state.get("rank_rng") or []
            # this rank's own generator; rank 0's when the world size changed (or the checkpoint predates it)
            self._pending_rng = per_rank[self.global_rank] if len(per_rank) == self.trainer.world_size else state
            # Taken at an epoch's last batch (e.g. after its validation): the uninterrupted run made the next
            # epoch's DataLoader iterator AFTER this point, so the state goes back before that iterator is made.
            progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
            self._rng_at_epoch_start = bool(progress.get("is_last_batch"))
            self.skipped_batches = int(state.get("skipped_batches", 0))

    def on_train_epoch_start(self) -> None:
        # Lightning calls set_epoch on `dataloader.sampler` / `batch_sampler.sampler` only, never on a batch sampler
        # itself: the data module advances its hybrid sampler here, before the epoch's iterator is created.
        dm = self.trainer.datamodule
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)
        if self._pending_rng is not None and self._rng_at_epoch_start:
            self._restore_rng()

    def _restore_rng(self) -> None:
        torch.set_rng_state(self._pending_rng["torch_rng"])
        if self._pending_rng.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._pending_rng["cuda_rng"])
        self._pending_rng = None

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self._pending_rng is not None:  # mid-epoch: after the resumed epoch's iterator was made, as before
            self._restore_rng()
        if self.startup is None:
            self.startup = first_step_record()
            log.info("%s after %.1f s: %s", FIRST_STEP_MARKER, self.startup["to_first_step_s"], json.dumps(self.startup))

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        # Keep DDP's reducer out of our (several) backward passes; average_gradients syncs once below.
        ddp = self.trainer.model if self._trainer is not None else None
        if isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            ddp.require_backward_grad_sync = False

        def loss_of(*embeddings: torch.Tensor) -> torch.Tensor:
            return self.batch_loss(batch, *embeddings)

        loss = cached_backward(self.sides(batch), loss_of, self.chunk_size)
        average_gradients(self.parameters())
        # Decided on every rank alike: average_gradients has spread one rank's NaN gradient to all ranks,
        # so a rank whose own loss is finite must skip (or raise) too.
        if not all_ranks_true(bool(torch.isfinite(loss)), loss.device):
            return self._nonfinite(opt, batch, batch_idx, loss)
        if self.gradient_clip_val:
            self.clip_gradients(opt, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        opt.step()
        sch = self.lr_schedulers()
        if sch is not None:
            sch.step()
        self._log_step(batch, loss)
        return loss

    def _nonfinite(self, opt, batch: dict, batch_idx: int, loss: torch.Tensor) -> torch.Tensor:
        langs = ", ".join(f"{name} {sorted(set(values))}" for name, values in self.batch_languages(batch).items())
        where = (
            f"non-finite loss at global step {self.global_step} (rank {self.global_rank} loss {loss.item()}, "
            f"batch {batch_idx}, {langs})"
        )
        if self.nonfinite == "raise":
            raise NonFiniteLossError(where + "; set model.nonfinite=skip to skip such batches")
        self.skipped_batches += 1
        log.warning("%s: batch skipped (%d so far)", where, self.skipped_batches)
        opt.zero_grad(set_to_none=True)
        return loss

    def _log_step(self, batch: dict, loss: torch.Tensor) -> None:
        mono = self.is_monolingual(batch)
        n_local = len(next(iter(self.batch_languages(batch).values())))
        self.log("train/loss", loss, prog_bar=True, batch_size=n_local)
        self.log("train/temperature", 1.0 / self.loss_fn.scale.detach(), batch_size=n_local)
        self.log("train/mono_batch", float(mono), batch_size=n_local)
        self.train_loss_mean.update(loss.detach(), weight=n_local)
        self.train_mono_fraction.update(float(mono))
        self.log("train/loss_epoch", self.train_loss_mean, on_step=False, on_epoch=True)
        self.log("train/mono_fraction", self.train_mono_fraction, on_step=False, on_epoch=True)

    def configure_optimizers(self):
        return optimizer_with_schedule(self, self.optimizer_factory, self.scheduler_factory, self.warmup_ratio)


def optimizer_with_schedule(module: L.LightningModule, optimizer_factory, scheduler_factory, warmup_ratio: float):
    """The optimizer over ``module``'s trainable parameters and, with a scheduler, its per-step warm-up/decay over the
    fit's planned steps — counted WITHOUT building the train DataLoader: ``trainer.estimated_stepping_batches`` would
    create (and start) the train iterator before Lightning restores a checkpoint, so a resumed run could not
    position the sampler mid-epoch."""
    opt = optimizer_factory(params=[p for p in module.parameters() if p.requires_grad])
    if scheduler_factory is None:
        return opt
    trainer = module.trainer
    per_epoch = trainer.datamodule.train_batches_per_epoch(trainer.world_size)
    total = max(1, planned_steps(per_epoch, trainer.limit_train_batches, trainer.max_epochs, trainer.max_steps))
    sch = scheduler_factory(optimizer=opt, num_warmup_steps=int(warmup_ratio * total), num_training_steps=total)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sch, "interval": "step"}}


def planned_steps(per_epoch: int, limit_train_batches, max_epochs: int | None, max_steps: int | None) -> int:
    """The optimizer steps a fit will make, as Lightning counts them (the learning-rate schedule's length).

    ``limit_train_batches``: an int caps the batches per epoch, a float in [0, 1] keeps that fraction of them;
    ``max_epochs`` None or -1 with ``max_steps`` > 0: the steps alone end the fit (epochs unbounded); both unset:
    Lightning's default of 1000 epochs. An endless fit (``max_epochs=-1``, no ``max_steps``) has no schedule length.
    """
    if isinstance(limit_train_batches, float):
        per_epoch = int(per_epoch * limit_train_batches)
    elif limit_train_batches is not None:
        per_epoch = min(per_epoch, int(limit_train_batches))
    steps = int(max_steps) if max_steps is not None and max_steps > 0 else None
    if max_epochs is None or max_epochs == -1:
        if steps is not None:
            return steps
        if max_epochs == -1:
            raise ValueError("trainer.max_epochs=-1 without trainer.max_steps: an endless fit has no schedule length")
        max_epochs = 1000  # Lightning's default when neither is set
    total = per_epoch * int(max_epochs)
    return min(total, steps) if steps is not None else total


def linear_warmup_decay(optimizer, num_warmup_steps: int, num_training_steps: int):
    """Linear warm-up then linear decay to 0 (the usual BERT/e5 fine-tuning schedule)."""

    def factor(step: int) -> float:
        if step < num_warmup_steps:
            return (step + 1) / max(1, num_warmup_steps)
        return max(0.0, (num_training_steps - step) / max(1, num_training_steps - num_warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
