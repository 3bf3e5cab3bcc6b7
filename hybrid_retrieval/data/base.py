"""What every task's data module shares: hybrid-batch sampling of training items, its exact resume, and the
sampling record. A task (text: :class:`~hybrid_retrieval.tasks.text.data.TextDataModule`; image–text:
:class:`~hybrid_retrieval.tasks.image_text.data.ImageTextDataModule`) supplies its items' languages, its dataset and
collator, and its evaluation side.

Batches are drawn by :class:`~hybrid_retrieval.data.sampler.HybridBatchSampler` for the GLOBAL batch, and each rank
keeps its slice; Lightning must not re-shard them (the trainer configs set ``use_distributed_sampler: false``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from hybrid_retrieval.common.timing import phase
from hybrid_retrieval.data.item_languages import ItemLanguages
from hybrid_retrieval.data.sampler import HybridBatchSampler, sampling_record

log = logging.getLogger(__name__)


class ShardedLengthSampler:
    """Batches of one rank's contiguous shard of ``lengths`` (longest first): each evaluation row encoded once over all
    ranks (Lightning must not shard these: the trainer configs set ``use_distributed_sampler: false``). Rows of equal
    length (e.g. images) stay in order."""

    def __init__(self, lengths: list[int], batch_size: int, rank: int = 0, world_size: int = 1):
        n = len(lengths)
        per = -(-n // world_size)
        shard = np.arange(rank * per, min(n, (rank + 1) * per))
        order = shard[np.argsort([-lengths[i] for i in shard], kind="stable")]
        self.batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class HybridBatchDataModule(L.LightningDataModule):
    """Training batches from a :class:`HybridBatchSampler`; subclasses implement :meth:`item_languages`,
    :meth:`train_dataset` and :meth:`train_collator` (and may widen :meth:`sampler_options`, :meth:`set_epoch`)."""

    #: True when the training dataset's rows depend on the epoch (set by :meth:`set_epoch`): loader workers must
    #: then be made afresh each epoch, as persistent workers would keep the first epoch's copy.
    dataset_follows_epoch = False

    def __init__(self, batch_size: int, sampler: dict | None, seed: int, num_workers: int):
        super().__init__()
        self.batch_size, self.sampler_cfg = int(batch_size), dict(sampler or {})
        self.seed, self.num_workers = int(seed), int(num_workers)
        self.train_sampler: HybridBatchSampler | None = None  # this rank's, made by train_dataloader

    # ------------------------------------------------------------------ task hooks
    def item_languages(self) -> ItemLanguages:
        """Each training item's languages (what the sampler draws from)."""
        raise NotImplementedError

    def sampler_options(self) -> dict:
        """Keyword arguments of the sampler beyond items, batch size, seed and rank (``data.sampler``)."""
        return dict(self.sampler_cfg)

    def train_dataset(self) -> Dataset:
        """Indexed by :class:`~hybrid_retrieval.data.sampler.Example`."""
        raise NotImplementedError

    def train_collator(self) -> Callable:
        raise NotImplementedError

    def eval_size_record(self) -> dict:
        """The job record's counts of evaluation questions and candidates (None: the task has no such corpus)."""
        return {"eval_questions": None, "eval_candidates": None}

    def positive_key(self) -> Callable[[int, str], Hashable] | None:
        """``(item, passage language) -> the positive's text``, for the sampling record's in-batch duplicates."""
        return None

    # ------------------------------------------------------------------ sampling
    def make_sampler(self, rank: int = 0, world_size: int = 1) -> HybridBatchSampler:
        with phase("sampler"):
            return HybridBatchSampler(
                self.item_languages(),
                batch_size=self.batch_size,
                seed=self.seed,
                rank=rank,
                world_size=world_size,
                **self.sampler_options(),
            )

    def train_batches_per_epoch(self, world_size: int = 1) -> int:
        """Steps per epoch, without building a DataLoader (the LR schedule needs it before a resume)."""
        return len(self.make_sampler(0, world_size))

    def set_epoch(self, epoch: int) -> None:
        """Called by the training core at each epoch's start (Lightning never calls a batch sampler's set_epoch)."""
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(epoch)

    def sampling_record(self, steps: int) -> dict:
        """What the first ``steps`` global batches contain (languages, realised α, in-batch duplicates)."""
        return sampling_record(self.make_sampler(0, 1), steps, self.positive_key())

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank = trainer.global_rank if trainer else 0
        world = trainer.world_size if trainer else 1
        self.train_sampler = self.make_sampler(rank, world)
        if trainer is not None:
            # Built after a checkpoint restore: start at the restored epoch, and mid-epoch skip the
            # batches the interrupted run already trained on (exact: batches depend on (seed, epoch) only).
            self.set_epoch(trainer.current_epoch)
            # A checkpoint taken at an epoch's last batch restores with the NEXT epoch current and that epoch's
            # count of batches done: nothing to skip then (skipping emptied the next epoch and ended training).
            done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
            if trainer.fit_loop.epoch_loop.restarting and 0 < done < len(self.train_sampler):
                self.train_sampler.resume(trainer.current_epoch, done)
                log.info("resuming epoch %d after %d batches", trainer.current_epoch, done)
        return DataLoader(
            self.train_dataset(),
            batch_sampler=self.train_sampler,
            collate_fn=self.train_collator(),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0 and not self.dataset_follows_epoch,
        )
