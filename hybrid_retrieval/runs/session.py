"""Small glue for the entry points: environment defaults, a quiet console, callback/logger instantiation, W&B
shutdown. (Paths: :mod:`hybrid_retrieval.common.paths`; resolvers: :mod:`hybrid_retrieval.runs.sweeps`.)"""

from __future__ import annotations

import logging
import os
import sys

from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def prepare_environment() -> None:
    """Offline-friendly defaults: W&B offline unless WANDB_MODE is set; no prompts; quiet tokenizers."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build it loaded: not for the console
    if os.environ.get("WANDB_MODE") == "online" and not os.environ.get("WANDB_API_KEY") and not sys.stdin.isatty():
        log.warning("WANDB_MODE=online without WANDB_API_KEY and no terminal: switching W&B to offline")
        os.environ["WANDB_MODE"] = "offline"


#: Console messages nobody can act on (all still go to train.log): Lightning's manual-optimization checkpoint
#: essay, its litlogger advertisement and eval-mode note (the frozen prefix is in eval mode on purpose),
#: pytree deprecations from Lightning's own code, W&B's anonymous-mode notice, the few-workers hint.
CONSOLE_NOISE = (
    "Using ModelCheckpoint with manual optimization",
    "litlogger",
    "module(s) in eval mode at the start of training",
    "LeafSpec",
    "anonymous setting",
    "does not have many workers",
)


class ConsoleNoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in CONSOLE_NOISE)


def quiet_console() -> None:
    """Each message once on the console, nothing the user cannot act on; the log file keeps everything.

    Warnings are routed into logging (so train.log has them); Lightning's own console handlers are
    dropped so its messages reach the console once, through the root (Hydra's) handler."""
    logging.captureWarnings(True)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if type(h) is logging.StreamHandler:
                lg.removeHandler(h)
        lg.propagate = True
    for h in logging.getLogger().handlers:
        console = isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
        if console and not any(isinstance(f, ConsoleNoiseFilter) for f in h.filters):
            h.addFilter(ConsoleNoiseFilter())


def instantiate_callbacks(cfg: DictConfig | None, has_logger: bool = True) -> list:
    """Build every ``_target_`` callback; the LR monitor is dropped when there is no logger to write to."""

    if not cfg:
        return []
    out = []
    for c in cfg.values():
        if isinstance(c, DictConfig) and "_target_" in c:
            if not has_logger and c._target_.endswith("LearningRateMonitor"):
                continue
            out.append(instantiate(c))
    return out


def instantiate_loggers(cfg: DictConfig | None) -> list:
    if not cfg:
        return []
    out = []
    for c in cfg.values():
        if isinstance(c, DictConfig) and "_target_" in c:
            out.append(instantiate(c))
    return out


def finish_wandb() -> None:
    """Close the W&B run if one was started (called in ``finally`` so crashes still flush)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
