"""Lightning's W&B logger without the ``anonymous`` argument it always passes (W&B warns that the setting
has no effect, on every run; nothing a user can do about it)."""

from __future__ import annotations

from lightning.pytorch.loggers.wandb import WandbLogger as _WandbLogger


class WandbLogger(_WandbLogger):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)
