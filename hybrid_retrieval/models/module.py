"""LightningModule: dual encoder + InfoNCE, gradient caching and gathered negatives.

Optimisation is manual (``automatic_optimization = False``) because gradient caching needs several
backward passes per step. Under DDP the module keeps DDP's reducer out of those passes and averages
the gradients itself with one ``all_reduce`` per step, after all chunks; together with the
differentiable all-gather in the loss this is the exact global-batch gradient
(``tests/test_distributed.py``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import lightning as L
import torch
from torchmetrics import MeanMetric

from hybrid_retrieval.models.checkpoint import check_frozen_prefix
from hybrid_retrieval.models.digest import tensor_digest
from hybrid_retrieval.models.distributed import all_ranks_true, average_gradients, gather_objects
from hybrid_retrieval.models.encoder import DualEncoder
from hybrid_retrieval.models.grad_cache import contrastive_backward
from hybrid_retrieval.models.loss import InfoNCELoss

log = logging.getLogger(__name__)


NONFINITE_POLICIES = ("raise", "skip")


class NonFiniteLossError(FloatingPointError):
    pass


class HybridRetrievalModule(L.LightningModule):
    def __init__(
        self,
        encoder: DualEncoder,
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
        self.encoder, self.loss_fn = encoder, loss
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.chunk_size = (grad_cache or {}).get("chunk_size")
        self.bucket_size = (grad_cache or {}).get("bucket_size")
        self.gradient_clip_val = gradient_clip_val
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"model.nonfinite={nonfinite!r}: expected 'raise' or 'skip'")
        self.nonfinite = nonfinite
        self.warmup_ratio = warmup_ratio
        self.skipped_batches = 0
        # Epoch statistics aggregated over ranks (torchmetrics: weighted by local queries, synced at epoch end):
        # the mean loss and the realised fraction of monolingual batches (realised alpha).
        self.train_loss_mean = MeanMetric()
        self.train_mono_fraction = MeanMetric()
        self._pending_rng: dict | None = None
        self._rng_at_epoch_start = False
        self.resumed_from_step: int | None = None  # the checkpoint's step when fit resumed one (job records say so)
        # Frozen-prefix runs checkpoint only what trains (+ optimizer): the frozen weights are the base
        # model's, identified by a digest that loading checks (so Lightning must not demand those keys).
        self._frozen_keys = [f"encoder.{n}" for n in encoder.frozen_state_names()]
        self._frozen_digest: str | None = None
        self.strict_loading = not self._frozen_keys

    def frozen_digest(self) -> str:
        """Digest of the frozen weights under the encoder's own state-dict names (what evaluate checks)."""
        if self._frozen_digest is None:
            state = self.encoder.state_dict()
            self._frozen_digest = tensor_digest((k, state[k]) for k in self.encoder.frozen_state_names())
        return self._frozen_digest

    # ------------------------------------------------------------------ training
    # RNG state travels with the checkpoint so a resumed run draws the same dropout masks. It is
    # applied at the first training batch after loading (creating the DataLoader iterator draws from
    # the global generator, which an uninterrupted run did before the checkpoint). Under DDP every rank
    # draws from its own generator, so every rank's state is kept (rank 0 writes the file: gathered here,
    # on every rank, as Lightning dumps a checkpoint on every rank).
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        rng = {
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        checkpoint["hybrid_retrieval"] = {
            **rng,
            "rank_rng": gather_objects(rng),
            "skipped_batches": self.skipped_batches,
            "encoder": dict(self.encoder.init_config),  # rebuilds the encoder: evaluate / export need nothing else
        }
        if self._frozen_keys:
            for k in self._frozen_keys:
                checkpoint["state_dict"].pop(k, None)
            checkpoint["frozen_prefix"] = {
                "keys": self._frozen_keys,
                "digest": self.frozen_digest(),
                "train_layers": self.encoder.train_layers,
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.resumed_from_step = int(checkpoint.get("global_step", 0))
        check_frozen_prefix(checkpoint, self.encoder.state_dict(), prefix="encoder.", where="resume")
        missing = set(self.state_dict()) - set(checkpoint["state_dict"]) - set(self._frozen_keys)
        if self._frozen_keys and missing:
            raise ValueError(f"resume: checkpoint lacks trainable weights {sorted(missing)[:5]} (another model config?)")
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
        # Lightning calls set_epoch on `dataloader.sampler` / `batch_sampler.sampler` only, never on a
        # batch sampler itself: advance the hybrid sampler here, before the epoch's iterator is created.
        dm = self.trainer.datamodule
        sampler = getattr(dm, "train_sampler", None) if dm is not None else None
        if sampler is not None:
            sampler.set_epoch(self.current_epoch)
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

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        # Keep DDP's reducer out of our (several) backward passes; average_gradients syncs once below.
        ddp = self.trainer.model if self._trainer is not None else None
        if isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            ddp.require_backward_grad_sync = False
        loss_fn = self.loss_fn
        if self.loss_fn.mask_duplicates:  # the loss needs to know which passages are the same text
            loss_fn = functools.partial(self.loss_fn, p_keys=batch["passage_keys"], neg_keys=batch.get("negative_keys"))
        loss = contrastive_backward(
            self.encoder.encode,
            loss_fn,
            batch["query"],
            batch["passage"],
            batch.get("negative"),
            chunk_size=self.chunk_size,
            bucket_size=self.bucket_size,
        )
        average_gradients(self.parameters())
        # Decided on every rank alike: average_gradients has spread one rank's NaN gradient to all ranks,
        # so a rank whose own loss is finite must skip (or raise) too.
        if not all_ranks_true(bool(torch.isfinite(loss)), loss.device):
            where = (
                f"non-finite loss at global step {self.global_step} (rank {self.global_rank} loss {loss.item()}, batch {batch_idx}, "
                f"query langs {sorted(set(batch['query_langs']))}, passage langs {sorted(set(batch['passage_langs']))})"
            )
            if self.nonfinite == "raise":
                raise NonFiniteLossError(where + "; set model.nonfinite=skip to skip such batches")
            self.skipped_batches += 1
            log.warning("%s: batch skipped (%d so far)", where, self.skipped_batches)
            opt.zero_grad(set_to_none=True)
            return loss
        if self.gradient_clip_val:
            self.clip_gradients(opt, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        opt.step()
        sch = self.lr_schedulers()
        if sch is not None:
            sch.step()
        mono = batch["query_langs"][0] == batch["passage_langs"][0]
        n_local = len(batch["query_langs"])
        self.log("train/loss", loss, prog_bar=True, batch_size=n_local)
        self.log("train/temperature", 1.0 / self.loss_fn.scale.detach(), batch_size=n_local)
        self.log("train/mono_batch", float(mono), batch_size=n_local)
        self.train_loss_mean.update(loss.detach(), weight=n_local)
        self.train_mono_fraction.update(float(mono))
        self.log("train/loss_epoch", self.train_loss_mean, on_step=False, on_epoch=True)
        self.log("train/mono_fraction", self.train_mono_fraction, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return optimizer_with_schedule(self, self.optimizer_factory, self.scheduler_factory, self.warmup_ratio)

    # ---------------------------------------------------------------- validation
    def validation_step(self, batch: dict, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeds one batch of evaluation texts; returns (text indices (b,), embeddings (b, dim)) on the CPU,
        which :class:`~hybrid_retrieval.callbacks.LareqaEvaluator` collects and scores."""
        dm = self.trainer.datamodule
        index = batch["index"]  # (b,)
        n_q = dm.n_eval_queries
        feats = batch["features"]
        is_q = index < n_q
        emb = torch.empty((index.shape[0], self.encoder.dim), device=index.device)
        for kind, sel in (("query", is_q), ("passage", ~is_q)):
            if sel.any():
                emb[sel] = self.encoder.encode({k: v[sel] for k, v in feats.items()}, kind).float()
        return index.cpu(), emb.detach().cpu()


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
