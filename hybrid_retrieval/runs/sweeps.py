"""Sweep arithmetic and resumable multiruns.

* Budget resolvers (``hr_budget_steps``, ``hr_lr``): steps and learning rate per batch size.
* Job records: every finished job writes one small JSON (config values, what the sampler really did,
  metrics per setting and per language pair, code commit, machine, wall time) to its run directory and,
  when ``results_dir`` is set, to ``{results_dir}/{job_key}.json`` — a file meant to be committed.
* Resume: a job whose record already exists (in its directory or in ``results_dir``) is skipped, so
  rerunning a killed sweep, or running it on a fresh machine from the committed records, does only the
  missing jobs; an unfinished job continues from its ``checkpoints/last.ckpt``; failed jobs rerun only
  with ``rerun_failed=true``.
* :class:`SweepProgress`: a Hydra callback printing one line after each job (done / total, failed,
  elapsed, estimated time left).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
import platform
import re
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from hybrid_retrieval.common.atomic import write_text_atomic
from hybrid_retrieval.common.errors import ConfigError
from hybrid_retrieval.common.paths import checkout_root, find_data_dir, project_root

log = logging.getLogger(__name__)

#: Overrides that name where/how a job runs or is watched (logging, checkpoints), not what it computes: left
#: out of the job key.
NON_IDENTITY_KEYS = ("hydra", "results_dir", "rerun_failed", "resume", "logger", "callbacks", "trainer.enable_progress_bar")


def budget_steps(mode: str, pairs: int, steps: int, batch_size: int) -> int:
    """Optimizer steps for a sweep job: ``pairs`` = same training pairs seen, ``steps`` = same step count."""
    if mode == "pairs":
        return max(1, -(-int(pairs) // int(batch_size)))
    if mode == "steps":
        return int(steps)
    raise ValueError(f"budget.mode={mode!r}: expected 'pairs' or 'steps'")


def scaled_lr(rule: str, base_lr: float, batch_size: int, base_batch_size: int) -> float:
    """Learning-rate rule for batch-size sweeps: ``constant``, ``sqrt`` or ``linear`` in batch / base_batch."""
    ratio = int(batch_size) / int(base_batch_size)
    if rule == "constant":
        return float(base_lr)
    if rule == "sqrt":
        return float(base_lr) * ratio**0.5
    if rule == "linear":
        return float(base_lr) * ratio
    raise ValueError(f"budget.lr_rule={rule!r}: expected 'constant', 'sqrt' or 'linear'")


def wandb_group(task_name: str) -> str:
    """One W&B group per sweep (``{task}-{sweep dir name}``, unique per multirun); the task name for single runs."""
    if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        return f"{task_name}-{Path(HydraConfig.get().sweep.dir).name}"
    return task_name


def wandb_run_name() -> str | None:
    """A multirun job's W&B name: its key (the overrides that make it this job); W&B's own name otherwise."""
    if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
        return current_job_key()
    return None


def register_resolvers() -> None:
    """The ``hr_*`` interpolations the configs use (once per process)."""
    for name, fn in (
        ("hr_wandb_group", wandb_group),
        ("hr_wandb_name", wandb_run_name),
        ("hr_root", project_root),
        ("hr_data_dir", find_data_dir),
        ("hr_budget_steps", budget_steps),
        ("hr_lr", scaled_lr),
        ("hr_min", lambda a, b: min(int(a), int(b))),
        ("hr_max", lambda a, b: max(int(a), int(b))),
        ("hr_div", lambda a, b: int(a) // int(b)),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def job_key(overrides: list[str]) -> str:
    """A file-name-safe key from a job's overrides (sorted; where-to-run overrides left out).

    The same command gives the same keys on any machine, so committed records match later reruns."""
    keep = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if not any(key == k or key.startswith(k + ".") for k in NON_IDENTITY_KEYS):
            keep.append(o.lstrip("+~"))
    raw = ",".join(sorted(keep)) or "default"
    safe = re.sub(r"[^A-Za-z0-9._=,-]+", "_", raw)
    if len(safe) <= 150:
        return safe
    return f"{safe[:120]}~{hashlib.blake2b(raw.encode(), digest_size=6).hexdigest()}"  # long: unique, still readable


def current_job_key() -> str | None:
    """The running Hydra job's key (None outside Hydra)."""
    if not HydraConfig.initialized():
        return None
    return job_key(list(HydraConfig.get().overrides.task))


def check_ddp_launcher(cfg: DictConfig) -> None:
    """Refuse DDP inside an in-process multirun, with the working alternative, in one line.

    Lightning's DDP starts ranks 1..N-1 by re-running this process's command line: under ``-m`` with Hydra's
    basic launcher that command is the whole sweep, so every rank would run every job. A launcher that
    gives each job its own processes (submitit: one SLURM task per rank) does not have that problem.
    """
    strategy = str(cfg.trainer.get("strategy", "auto"))
    devices = cfg.trainer.get("devices", 1)
    if not HydraConfig.initialized() or "ddp" not in strategy or devices in (1, "1"):
        return
    hc = HydraConfig.get()
    launcher = str(hc.launcher.get("_target_", ""))
    if hc.mode.name == "MULTIRUN" and launcher.endswith("BasicLauncher"):
        raise ConfigError(
            "trainer.strategy",
            strategy,
            "DDP in a multirun (-m) with the basic launcher would re-run the whole sweep in every rank; "
            "use hydra/launcher=submitit_slurm (one task per device) or run the DDP jobs one at a time without -m",
        )


@functools.lru_cache(maxsize=8)
def code_version() -> str:
    """The code this process runs: the git commit of the checkout it was imported from, or, for a regular
    (non-editable) install, the package version (never the commit of whatever repository the cwd is in)."""
    root = checkout_root()
    if root is not None:
        return git_commit(root)

    try:
        return f"hybrid_retrieval=={version('hybrid_retrieval')} (installed)"
    except PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=8)
def git_commit(root: str | Path) -> str:
    """Asked once per process (the code a sweep process runs is what it loaded first). ``sha`` of the checkout (``+dirty`` when tracked files differ), or 'unknown' outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo): float results of a CPU run can differ across CPU models."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict:
    """What ran a job; ``cpu_model`` and ``cpu_kernels`` (torch's CPU instruction set, e.g. AVX512) because the same
    command gives slightly different numbers on different CPUs (docs/results/image_text_synthetic/README.md)."""
    return {
        "host_cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_json_atomic(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=1, default=float))


def record_paths(cfg: DictConfig, key: str | None) -> list[Path]:
    """Where this job's record lives: its run directory, and ``results_dir`` when set."""
    paths = [Path(cfg.paths.output_dir) / "result.json"]
    if cfg.get("results_dir") and key:
        paths.append(Path(cfg.results_dir) / f"{key}.json")
    return paths


def finished_record(cfg: DictConfig, key: str | None) -> dict | None:
    """An existing record that makes this job skippable (ok; or failed unless ``rerun_failed``)."""
    for path in record_paths(cfg, key):
        if path.exists():
            rec = json.loads(path.read_text())
            if rec.get("job") != key:  # a run directory reused by another job (subdir by grid position)
                continue
            if rec.get("status") == "ok" or (rec.get("status") == "failed" and not cfg.get("rerun_failed", False)):
                return {**rec, "_path": str(path)}
    return None


def record_value(record: dict, metric: str) -> float:
    """``metric`` from a job record; NaN when absent.

    Records written before the best-so-far metrics existed hold ``val/multi/map`` but no
    ``val/multi/map_best``: for those the last value stands in (their jobs validated once, at the end).
    """
    metrics = record.get("metrics") or {}
    if metric in metrics:
        return float(metrics[metric])
    if metric.endswith("_best") and metric.removesuffix("_best") in metrics:
        return float(metrics[metric.removesuffix("_best")])
    return float("nan")


class SweepProgress(Callback):
    """Hydra callback: after each job, ``[sweep] 5/36 jobs done (1 failed, 3 skipped), 42m elapsed, ~2h10m left``.

    The counts live in a ledger in the sweep directory (one line a finished job, appended), not in this object:
    with a parallel launcher (joblib, submitit, SLURM) every job runs this callback in its own process."""

    LEDGER = ".sweep_progress"

    def __init__(self) -> None:
        self.multirun = False
        self.total = 0
        self.start = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            merged = {k: f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()}
            merged.update({o.split("=", 1)[0]: o for o in config.hydra.overrides.task})  # the command line wins
            parsed = OverridesParser.create().parse_overrides(list(merged.values()))
            self.total = sum(len(b) for b in BasicSweeper.split_arguments(parsed, None))
        except Exception:
            self.total = 0
        self.multirun = True
        self.start = time.time()  # wall clock: the jobs' processes compare against it
        ledger = Path(config.hydra.sweep.dir) / self.LEDGER
        ledger.parent.mkdir(parents=True, exist_ok=True)
        ledger.write_text("")  # this invocation's count starts at zero (a rerun of the sweep counts afresh)

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        if not self.multirun:
            return
        value = getattr(job_return, "_return_value", None)
        status = getattr(getattr(job_return, "status", None), "name", "")
        skip_file = Path(config.paths.output_dir) / "SKIPPED"
        if skip_file.exists():  # "{status}\t{record}" of the record that made train.py skip the job
            outcome = "skipped-failed" if skip_file.read_text().split("\t", 1)[0].strip() == "failed" else "skipped"
        elif status == "FAILED" or (isinstance(value, float) and value != value):
            outcome = "failed"
        else:
            outcome = "ok"
        ledger = Path(config.hydra.sweep.dir) / self.LEDGER
        with ledger.open("a") as fh:  # one short append: whole lines even when jobs end at once
            fh.write(outcome + "\n")
        lines = ledger.read_text().split()
        done, skipped = len(lines), sum(x.startswith("skipped") for x in lines)
        failed = sum(x in ("failed", "skipped-failed") for x in lines)
        elapsed = time.time() - self.start
        ran = done - skipped
        left = ""
        if self.total and ran:
            eta = elapsed / ran * (self.total - done)
            left = f", ~{_hm(eta)} left"
        total = f"/{self.total}" if self.total else ""
        print(f"[sweep] {done}{total} jobs done ({failed} failed, {skipped} skipped), {_hm(elapsed)} elapsed{left}", flush=True)


def _hm(seconds: float) -> str:
    m = int(seconds // 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{int(seconds % 60):02d}s"
