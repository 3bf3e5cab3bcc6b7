"""Test-only callbacks injected through Hydra overrides (``+callbacks.kill._target_=tests.helpers.KillAtStep``)."""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    """SIGKILL the training process right after optimizer step ``step`` (no clean shutdown)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class NaNAtStepLoss:
    """Factory for an InfoNCE loss that returns NaN at one call (fault injection for the NaN guard)."""

    def __new__(cls, nan_at_call: int = 2, **kwargs):
        import torch

        from hybrid_retrieval.models.loss import InfoNCELoss

        class _Loss(InfoNCELoss):
            calls = 0

            def forward(self, *args):
                loss = super().forward(*args)
                type(self).calls += 1
                return loss * torch.nan if type(self).calls == nan_at_call else loss

        return _Loss(**kwargs)
