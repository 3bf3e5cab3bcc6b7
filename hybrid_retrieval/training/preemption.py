"""SIGTERM (SLURM pre-emption, a time limit, ``scancel``): a resume checkpoint, then exit 143, on every rank.

Why not Lightning's own handling: its SIGTERM handler runs a ``dist.broadcast`` inside the signal handler and
forwards the signal to the other ranks, so under DDP the collectives of the ranks stop pairing up (measured:
``trainer=ddp_cpu`` with SIGTERM at step 5 hung until the 600 s test timeout). Here the handler only sets a
flag. The ranks agree on it at points every rank passes in the same order — the end of each training step, the
end of each validation — with one all-reduce of one number; if any rank was signalled, every rank saves its
part of the resume checkpoint and raises ``SIGTERMException`` (the entry point prints how to resume, exit 143).

Where the checkpoint is taken decides whether the resumed run is exact. Lightning resumes a checkpoint taken at
the end of a step as "that step's validation is done" (it fast-forwards it), so a stop at a step whose
validation follows is deferred to the end of that validation, and a signal during a validation lets it finish:
the checkpoint then holds its metrics, the best-so-far and the best checkpoint (this callback is a
``Checkpoint``, which Lightning runs after the ``ModelCheckpoint`` callbacks), exactly what an uninterrupted run
had at that point. The cost: a stop waits for the running validation (set the cluster's grace period, e.g.
``--signal=TERM@120``, above a validation's duration; past it the last periodic checkpoint is what remains).
"""

from __future__ import annotations

import logging
import os
import re
import signal
from pathlib import Path

from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from hybrid_retrieval.models.distributed import all_ranks_true

log = logging.getLogger(__name__)


class PreemptionCheckpoint(Checkpoint):
    """On SIGTERM, ``resume-step{N}.ckpt`` in ``dirpath`` (``last.ckpt`` points at it) and a stop on every rank."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self.saved: Path | None = None
        self.signalled = False

    def _on_sigterm(self, signum, frame) -> None:  # a flag only: no collective, no I/O in a signal handler
        self.signalled = True

    def on_train_start(self, trainer, pl_module) -> None:
        # Replaces the handler Lightning installed for this fit (Lightning restores the user's own at teardown).
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._stop_now(pl_module) and not _validation_follows(trainer):
            self._save_and_stop(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and self._stop_now(pl_module):
            self._save_and_stop(trainer)

    def _stop_now(self, pl_module) -> bool:
        """True on every rank when any rank was signalled (every rank calls this at the same points)."""
        return not all_ranks_true(not self.signalled, pl_module.device)

    def _save_and_stop(self, trainer) -> None:
        path = self.dirpath / f"resume-step{trainer.global_step}.ckpt"
        # The ModelCheckpoint that keeps last.ckpt in this folder must own the link we are about to make: a stop
        # before its first save left its last_model_path empty, so the resumed run took last.ckpt for someone else's
        # and linked last-v1.ckpt instead; after a later kill, resume=true found the stale last.ckpt.
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last and _same_dir(callback.dirpath, self.dirpath):
                callback.last_model_path = str(self.dirpath / "last.ckpt")
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            last = self.dirpath / "last.ckpt"
            tmp = self.dirpath / f"last.ckpt.tmp-{os.getpid()}-link"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(path.name)
            os.replace(tmp, last)
        self.saved = path
        log.warning("SIGTERM: resume checkpoint saved at step %d: %s", trainer.global_step, path)
        raise SIGTERMException


def _same_dir(a, b) -> bool:
    return a is not None and Path(a).resolve() == Path(b).resolve()


def newest_last_checkpoint(dirpath: str | Path) -> Path | None:
    """The checkpoint ``resume=true`` continues from: ``last.ckpt``, or a ``last-vN.ckpt`` written after it.

    Lightning's ModelCheckpoint names its link ``last-vN.ckpt`` when it finds a ``last.ckpt`` it does not own (a
    checkpoint of an older version of this code, or one whose callback settings changed); the newest target wins."""
    links = [p for p in Path(dirpath).glob("last*.ckpt") if re.fullmatch(r"last(-v\d+)?\.ckpt", p.name)]
    links = [p for p in links if p.exists()]  # a dangling link is no checkpoint
    if not links:
        return None
    return max(links, key=lambda p: (p.resolve().stat().st_mtime, p.name == "last.ckpt"))


def _validation_follows(trainer) -> bool:
    """Whether Lightning validates right after the step that just ended (its own rule, same on every rank)."""
    loop = trainer.fit_loop.epoch_loop
    try:
        return bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher)) and not loop._skip_next_val
    except AttributeError:  # another Lightning version: stop at once (exact unless a validation was due)
        return False
