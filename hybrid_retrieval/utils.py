"""Small glue: resolvers, environment defaults, callback/logger instantiation, W&B shutdown."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hybrid_retrieval.sweeps import budget_steps, scaled_lr

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent


def _checkout_root() -> Path | None:
    """The source checkout this package runs from (editable install or PYTHONPATH), if any."""
    candidate = PACKAGE_DIR.parent
    return candidate if (candidate / "conf" / "train.yaml").exists() else None


def config_dir() -> str:
    """Absolute path of the Hydra configs: the checkout's ``conf/`` (the source), else the copy that a regular
    ``pip install .`` ships inside the package (``hybrid_retrieval/conf``, see setup.py)."""
    root = _checkout_root()
    if root is not None:
        return str(root / "conf")
    shipped = PACKAGE_DIR / "conf"
    if (shipped / "train.yaml").exists():
        return str(shipped)
    raise FileNotFoundError(f"no configs: neither {PACKAGE_DIR.parent / 'conf'} nor {shipped} holds train.yaml")


CONFIG_DIR = config_dir()


def project_root() -> str:
    """The checkout root (the folder holding conf/ beside the package); for an installed package the current
    directory (so logs/ and ../shared/data are found from where the command runs; see conf/paths)."""
    root = _checkout_root()
    return str(root) if root is not None else str(Path.cwd())


def wandb_group(task_name: str) -> str:
    """One W&B group per sweep (``{task}-{sweep dir name}``, unique per multirun); the task name for single runs."""
    from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415

    if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        return f"{task_name}-{Path(HydraConfig.get().sweep.dir).name}"
    return task_name


def wandb_run_name() -> str | None:
    """A multirun job's W&B name: its key (the overrides that make it this job); W&B's own name otherwise."""
    from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415

    from hybrid_retrieval.sweeps import current_job_key  # noqa: PLC0415

    if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        return current_job_key()
    return None


def register_resolvers() -> None:
    for name, fn in (
        ("hr_wandb_group", wandb_group),
        ("hr_wandb_name", wandb_run_name),
        ("hr_root", project_root),
        ("hr_budget_steps", budget_steps),
        ("hr_lr", scaled_lr),
        ("hr_min", lambda a, b: min(int(a), int(b))),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


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
    from hydra.utils import instantiate  # noqa: PLC0415

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
    from hydra.utils import instantiate  # noqa: PLC0415

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
