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
