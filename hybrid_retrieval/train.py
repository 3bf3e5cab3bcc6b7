"""Train a dual encoder with hybrid batch sampling: ``python -m hybrid_retrieval.train +experiment=xquad_r``.

Thin on purpose: compose the config, instantiate, fit, return the sweep metric.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from hybrid_retrieval.common.console import exit_on_user_error, install_hydra_error_handler, remove_unused_run_dir, user_message
from hybrid_retrieval.common.errors import ConfigError
from hybrid_retrieval.common.paths import CONFIG_DIR
from hybrid_retrieval.common.timing import begin_job, phase
from hybrid_retrieval.models.checkpoint import check_checkpoint
from hybrid_retrieval.runs import sweeps
from hybrid_retrieval.runs.config_check import validate_config
from hybrid_retrieval.runs.session import (
    finish_wandb,
    instantiate_callbacks,
    instantiate_loggers,
    prepare_environment,
    quiet_console,
)
from hybrid_retrieval.runs.sweeps import register_resolvers
from hybrid_retrieval.training.evaluator import EmbeddingEvaluator
from hybrid_retrieval.training.preemption import newest_last_checkpoint

log = logging.getLogger(__name__)
register_resolvers()
install_hydra_error_handler()


def train(cfg: DictConfig) -> float | None:
    """Fit one configuration; returns ``cfg.optimized_metric`` (for Hydra sweepers) or None."""

    quiet_console()  # after importing lightning: it may have added its own console handler
    begin_job()

    validate_config(cfg)
    sweeps.check_ddp_launcher(cfg)
    key = sweeps.current_job_key()
    done = sweeps.finished_record(cfg, key)
    if done is not None:
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "SKIPPED").write_text(f"{done['status']}\t{done['_path']}\n")  # read by sweeps.SweepProgress
        print(f"job {key}: already {done['status']} ({done['_path']}): skipped")
        return sweeps.record_value(done, cfg.optimized_metric)
    (Path(cfg.paths.output_dir) / "SKIPPED").unlink(missing_ok=True)  # from an earlier skip of a job that now runs
    started = sweeps.now_utc()
    commit = sweeps.code_version()  # at the start: the code this job runs
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)
    out_dir = Path(cfg.paths.output_dir)
    start = time.perf_counter()
    datamodule = instantiate(cfg.data)
    datamodule.preflight()  # bad data fails here, in seconds: before the model loads or W&B starts
    instantiate(cfg.trainer, callbacks=[], logger=False)  # a throw-away Trainer: Lightning checks its arguments now
    if cfg.get("seed") is not None:  # from here on the same generator draws, in the same order, as before the preflight
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    ckpt_path = cfg.get("ckpt_path")
    last = newest_last_checkpoint(out_dir / "checkpoints")
    if cfg.get("resume") and ckpt_path is None and (last is not None or not _is_multirun()):
        if last is not None:
            ckpt_path = str(last.resolve())
            log.info("resume=true: continuing from %s", ckpt_path)
        else:
            log.warning("resume=true but %s does not exist: starting from scratch", out_dir / "checkpoints" / "last.ckpt")
    if ckpt_path is not None:  # before the model loads: a file whose unpickling would import code is refused unopened
        check_checkpoint(ckpt_path)
    with phase("model load"):
        model = instantiate(cfg.model)
    datamodule.attach_encoder(model.encoder)
    loggers = instantiate_loggers(cfg.get("logger"))
    callbacks = instantiate_callbacks(cfg.get("callbacks"), has_logger=bool(loggers))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "code_commit": commit, "job_key": key})
    define_wandb_summaries(loggers)
    if cfg.get("validate_before_training") and ckpt_path is None:
        trainer.validate(model, datamodule=datamodule)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    evaluate_the_end(trainer, model, datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    value = metrics.get(cfg.optimized_metric)
    if trainer.is_global_zero:
        wall = round(time.perf_counter() - start, 1)  # this process only: a resumed job's earlier part is not in it
        summary = write_results(cfg, key, model, datamodule, trainer, metrics, started, wall, commit)
        print_summary(trainer, summary, out_dir)
    return value


def write_results(cfg, key, model, datamodule, trainer, metrics, started, wall_time_s, commit) -> dict:
    """``final_metrics.json`` in the run directory and the job record (``results_dir``, a sweep's records)."""
    out_dir = Path(cfg.paths.output_dir)
    best = best_checkpoint_callback(trainer)
    ckpt = best.best_model_path if best is not None else ""
    last = newest_last_checkpoint(out_dir / "checkpoints")
    if not ckpt and last is not None:  # no best-model copy: the resume checkpoint
        ckpt = str(last.resolve())
    summary = {
        "optimized_metric": cfg.optimized_metric,
        "value": metrics.get(cfg.optimized_metric),
        "wall_time_s": wall_time_s,
        "global_step": trainer.global_step,
        "resumed_from_step": getattr(model, "resumed_from_step", None),
        "best_checkpoint": ckpt,
        "skipped_batches": getattr(model, "skipped_batches", 0),
        "metrics": metrics,
    }
    (out_dir / "final_metrics.json").write_text(json.dumps(summary, indent=1))
    record = job_record(cfg, key, model, datamodule, trainer, metrics, started, wall_time_s, commit)
    for path in sweeps.record_paths(cfg, key):
        sweeps.write_json_atomic(path, record)
    if cfg.get("results_dir") and (out_dir / "checkpoints").exists() and _is_multirun():
        shutil.rmtree(out_dir / "checkpoints")  # the job is finished: its resume checkpoint is no longer needed
    return summary


def print_summary(trainer, summary: dict, out_dir: Path) -> None:
    """The console's end of a run: each evaluator's headline numbers and table, time, where things are."""
    evaluators = [c for c in trainer.callbacks if isinstance(c, EmbeddingEvaluator)]
    headline = {k: v for c in evaluators for k, v in c.headline(summary["metrics"]).items()}
    print("\n=== hybrid_retrieval: run finished ===")
    for k in sorted(headline):
        print(f"  {k:<28} {headline[k]:.4f}")
    for table in (c.summary_table() for c in evaluators):
        if table:
            print(table)
    print(f"  wall time                    {summary['wall_time_s']:.1f} s ({trainer.global_step} steps)")
    print(f"  run directory                {out_dir}")
    print(f"  checkpoint                   {summary['best_checkpoint'] or '(none)'}")


def best_checkpoint_callback(trainer) -> ModelCheckpoint | None:
    """The first ``ModelCheckpoint`` (``trainer.checkpoint_callback`` is the first ``Checkpoint`` of any kind, and
    the pre-emption callback is one)."""
    return next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)


def evaluate_the_end(trainer, model, datamodule) -> None:
    """Every run ends evaluated: a fit that stopped without an evaluation at its last step (``max_steps`` mid-epoch, a
    time limit, early stopping) is evaluated once more now, on every rank (the gather needs them all); with a
    best-model checkpoint configured, the final weights are saved and become the best when their score is."""
    evaluators = [c for c in trainer.callbacks if isinstance(c, EmbeddingEvaluator)]
    if not evaluators or trainer.global_step == 0 or any(c.evaluated_step == trainer.global_step for c in evaluators):
        return
    if trainer.is_global_zero:
        log.info("training ended at step %d without an evaluation there: evaluating the final weights", trainer.global_step)
    trainer.validate(model, datamodule=datamodule, verbose=False)
    best = best_checkpoint_callback(trainer)
    if best is None or not best.dirpath or best.monitor is None:
        return
    path = str(Path(best.dirpath) / f"final-step{trainer.global_step}.ckpt")
    trainer.save_checkpoint(path)  # every rank calls it; rank 0 writes
    score = trainer.callback_metrics.get(best.monitor)
    current = trainer.callback_metrics.get(best.monitor.removesuffix("_best"))
    if score is not None and current is not None and float(current) >= float(score):  # the final weights are the best
        best.best_model_path, best.best_model_score = path, score.detach().clone()


def define_wandb_summaries(loggers) -> None:
    """W&B run summaries: the best mAP / R@k (max) and rank distance (min) of the run, not the last value."""

    for lg in loggers:
        if isinstance(lg, WandbLogger):
            run = lg.experiment
            run.define_metric("val/*", summary="max")
            run.define_metric("val/multi/rank_distance", summary="min")
            run.define_metric("val/multi/rank_distance_best", summary="min")
            run.define_metric("train/loss", summary="min")


def job_record(cfg, key, model, datamodule, trainer, metrics, started, wall_time_s, commit) -> dict:
    """What this job really was and did, next to its metrics (one small JSON, meant to be committed)."""

    evaluator = next((c for c in trainer.callbacks if isinstance(c, EmbeddingEvaluator)), None)
    return {
        "status": "ok",
        "job": key,
        "started": started,
        "finished": sweeps.now_utc(),
        "wall_time_s": wall_time_s,
        "resumed_from_step": getattr(model, "resumed_from_step", None),  # None: trained in one go
        "commit": commit,
        "machine": sweeps.machine(),
        "train": cfg.data.train.get("name") or _data_label(cfg.data.train),
        "eval": cfg.data.eval.get("name") or _data_label(cfg.data.eval),
        **datamodule.eval_size_record(),
        "batch_size": int(cfg.data.batch_size),
        "alpha": float(cfg.data.sampler.alpha),
        "seed": cfg.get("seed"),
        "lr": float(cfg.model.optimizer.lr),
        "mask_duplicates": bool(cfg.model.loss.get("mask_duplicates", False)),
        "train_layers": OmegaConf.select(cfg, "model.encoder.train_layers", default=None),
        "encoder": OmegaConf.select(cfg, "model.encoder.name", default=None) or _describe_target(cfg.model.encoder),
        "max_length": OmegaConf.select(cfg, "model.encoder.max_length", default=None),
        "steps": int(trainer.global_step),
        "skipped_batches": int(getattr(model, "skipped_batches", 0)),
        "startup": getattr(model, "startup", None),  # seconds and peak RSS to the first step, per phase
        "sampling": datamodule.sampling_record(int(trainer.global_step)),
        **datamodule.split_record(int(trainer.global_step)),
        "metrics": metrics,
        "pairs": evaluator.pairs_record() if evaluator is not None else {},
        "overrides": _task_overrides(),
    }


def _data_label(node) -> str | None:
    """A data side without a ``name`` (image–text): its format and path (a synthetic set: its seed)."""
    fmt = node.get("format")
    if fmt is None:
        return None
    where = node.get("path") or (f"seed {node.get('seed')}, {node.get('renderings')} renderings" if fmt == "synthetic" else "")
    return f"{fmt}: {where}" if where else fmt


def _describe_target(node) -> str:
    """A model config without a ``name`` (the image–text encoder): its target and its towers' names."""
    towers = {k: OmegaConf.select(node, f"{k}.name", default=None) for k in ("image_tower", "text_tower")}
    parts = [f"{k}={v}" for k, v in towers.items() if v]
    return f"{node.get('_target_', '?')}({', '.join(parts)})"


def _task_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    prepare_environment()
    try:
        return train(cfg)
    except SIGTERMException:
        out = Path(cfg.paths.output_dir)
        print(
            f"stopped by SIGTERM: resume with the same command and resume=true ({out / 'checkpoints' / 'last.ckpt'})",
            file=sys.stderr,
        )
        sys.exit(143)  # 128 + SIGTERM, as a process killed by the signal
    except Exception as err:
        if user_message(err) is not None and (isinstance(err, ConfigError) or not _is_multirun()):
            # The user's to fix: one line (hybrid_retrieval.common.console), nothing recorded; a bad config value is the same
            # in every job of a sweep, so it stops the sweep.
            if not _is_multirun():
                remove_unused_run_dir(Path(cfg.paths.output_dir))
            exit_on_user_error(err)
        # In a sweep one failed job (say, an impossible batch size) must not take the others down:
        # record it for `report` and let Hydra go on with the next job.
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        error = f"{type(err).__name__}: {err}"
        (out / "FAILED.json").write_text(json.dumps({"error": error}, indent=1))
        key = sweeps.current_job_key()
        if cfg.get("results_dir") and key:  # recorded so a resumed sweep skips it unless rerun_failed=true
            failed = {
                "status": "failed",
                "job": key,
                "error": error,
                "finished": sweeps.now_utc(),
                "overrides": _task_overrides(),
            }
            sweeps.write_json_atomic(Path(cfg.results_dir) / f"{key}.json", failed)
        if _is_multirun():
            log.exception("job failed (recorded in %s); the sweep continues", out / "FAILED.json")
            return float("nan")
        raise
    finally:
        finish_wandb()


if __name__ == "__main__":
    main()
