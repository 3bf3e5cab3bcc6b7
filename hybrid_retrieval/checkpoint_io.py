"""Checkpoints written atomically: a kill during a save never leaves a truncated file behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to ``{path}.tmp-{pid}``, fsync, then ``os.replace`` onto the final name (atomic on POSIX)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def remove_stale_temporaries(folder: Path) -> None:
    """Delete ``*.tmp-{pid}`` files left by a process killed mid-save (its pid no longer runs)."""
    for tmp in folder.glob("*.tmp-*"):
        try:
            pid = int(tmp.name.rsplit(".tmp-", 1)[1])
            if pid != os.getpid():
                os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, PermissionError):
            continue
