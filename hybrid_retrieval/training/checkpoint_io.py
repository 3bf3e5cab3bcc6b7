"""Checkpoints written atomically: a kill during a save never leaves a truncated file behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from hybrid_retrieval.common.atomic import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to a temporary beside the target, fsync, then ``os.replace`` onto the final name (atomic on POSIX)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with atomic_file(Path(path)) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
