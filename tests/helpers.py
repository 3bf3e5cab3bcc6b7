"""Test-only callbacks injected through Hydra overrides (``+callbacks.kill._target_=tests.helpers.KillAtStep``)."""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    """SIGKILL the training process right after optimizer step ``step`` (no clean shutdown).

    ``job_num``: only in that multirun job; ``once_file``: only if that file does not exist yet (it is
    created just before the kill), so a resumed run passes the same step without being killed again."""

    def __init__(self, step: int, job_num: int | None = None, once_file: str | None = None):
        self.step, self.job_num, self.once_file = step, job_num, once_file

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        if self.job_num is not None:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.get().job.num != self.job_num:
                return
        if self.once_file is not None:
            if os.path.exists(self.once_file):
                return
            open(self.once_file, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)


class NaNAtStepLoss:
    """Factory for an InfoNCE loss that returns NaN at one call (fault injection for the NaN guard)."""

    def __new__(cls, nan_at_call: int = 2, rank: int | None = None, **kwargs):
        import torch

        from hybrid_retrieval.models.loss import InfoNCELoss

        class _Loss(InfoNCELoss):
            calls = 0

            def forward(self, *args, **kwargs):
                loss = super().forward(*args, **kwargs)
                type(self).calls += 1
                on_rank = rank is None or int(os.environ.get("LOCAL_RANK", "0")) == rank
                return loss * torch.nan if type(self).calls == nan_at_call and on_rank else loss

        return _Loss(**kwargs)


class SaveParamsAtEnd(L.Callback):
    """Each rank saves its trainable parameters to ``{out_dir}/rank{r}.pt`` when the fit ends
    (and ``rank{r}_start.pt`` when it starts)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def _save(self, trainer, pl_module, suffix: str) -> None:
        import torch

        os.makedirs(self.out_dir, exist_ok=True)
        state = {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}
        torch.save(state, os.path.join(self.out_dir, f"rank{trainer.global_rank}{suffix}.pt"))

    def on_fit_start(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "_start")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "")


class RecordBatches(L.Callback):
    """Writes every training batch's (epoch, item indices, query langs, passage langs) as JSON lines."""

    def __init__(self, path: str, with_tokens: bool = False):
        self.path, self.with_tokens = path, with_tokens  # with_tokens: the query / passage token ids too

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        import json

        row = [trainer.current_epoch, batch["items"], batch["query_langs"], batch["passage_langs"]]
        if self.with_tokens:
            row.append([batch["query"]["input_ids"].tolist(), batch["passage"]["input_ids"].tolist()])
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def _atomic_io():
    from hybrid_retrieval.training.checkpoint_io import AtomicCheckpointIO

    return AtomicCheckpointIO


class KillDuringSave:
    """Checkpoint IO that, at its ``kill_at``-th save, writes half a temporary file and SIGKILLs the process
    (a kill in the middle of a checkpoint write); ``once_file`` makes it happen only once."""

    def __new__(cls, kill_at: int = 2, once_file: str | None = None):
        base = _atomic_io()

        class _IO(base):
            calls = 0

            def save_checkpoint(self, checkpoint, path, storage_options=None):
                type(self).calls += 1
                if type(self).calls == kill_at and not (once_file and os.path.exists(once_file)):
                    from pathlib import Path

                    path = Path(path)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.with_name(f"{path.name}.tmp-{os.getpid()}").write_bytes(b"PK\x03\x04 half a checkpoint")
                    if once_file:
                        open(once_file, "w").close()
                    os.kill(os.getpid(), signal.SIGKILL)
                super().save_checkpoint(checkpoint, path, storage_options)

        return _IO()


class SigtermInValidation(L.Callback):
    """Send SIGTERM to this process at the first batch of the first validation after training step ``step``
    (not the sanity check), once: ``once_file`` records the time the signal was sent."""

    def __init__(self, step: int, once_file: str):
        self.step, self.once_file = step, once_file

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking or trainer.global_step < self.step or batch_idx != 0 or os.path.exists(self.once_file):
            return
        import time

        with open(self.once_file, "w") as fh:
            fh.write(str(time.time()))
        os.kill(os.getpid(), signal.SIGTERM)


class SigtermAtStep(L.Callback):
    """Send SIGTERM to this process when training step ``step`` starts (as SLURM does on pre-emption), once:
    ``once_file`` is created first and records the time the signal was sent."""

    def __init__(self, step: int, once_file: str):
        self.step, self.once_file = step, once_file

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step != self.step or os.path.exists(self.once_file):
            return
        import time

        with open(self.once_file, "w") as fh:
            fh.write(str(time.time()))
        os.kill(os.getpid(), signal.SIGTERM)


def results_of_processes(target, args_list: list[tuple], timeout: float = 300) -> list:
    """Start one spawned process per ``args`` (each ``target(*args, queue)`` puts one result), all at once; their
    results in the order they arrived, after every process exited with 0."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, q)) for args in args_list]
    for p in procs:
        p.start()
    got = [q.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return got
