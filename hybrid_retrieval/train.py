"""Train a dual encoder with hybrid batch sampling: ``python -m hybrid_retrieval.train +experiment=xquad_r``.

Thin on purpose: compose the config, instantiate, fit, return the sweep metric.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from hybrid_retrieval.utils import (
    finish_wandb,
    instantiate_callbacks,
    instantiate_loggers,
    prepare_environment,
    register_resolvers,
)

log = logging.getLogger(__name__)
register_resolvers()


def train(cfg: DictConfig) -> float | None:
    """Fit one configuration; returns ``cfg.optimized_metric`` (for Hydra sweepers) or None."""
    import lightning as L  # noqa: PLC0415 - keep `--help` fast
    from hydra.utils import instantiate  # noqa: PLC0415

    from hybrid_retrieval.config_check import validate_config  # noqa: PLC0415

    validate_config(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)
    out_dir = Path(cfg.paths.output_dir)
    start = time.perf_counter()
    model = instantiate(cfg.model)
    datamodule = instantiate(cfg.data)
    datamodule.attach_encoder(model.encoder)
    loggers = instantiate_loggers(cfg.get("logger"))
    callbacks = instantiate_callbacks(cfg.get("callbacks"), has_logger=bool(loggers))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    ckpt_path = cfg.get("ckpt_path")
    last = out_dir / "checkpoints" / "last.ckpt"
    if cfg.get("resume") and ckpt_path is None:
        if last.exists():
            ckpt_path = str(last.resolve())
            log.info("resume=true: continuing from %s", ckpt_path)
        else:
            log.warning("resume=true but %s does not exist: starting from scratch", last)
    if cfg.get("validate_before_training") and ckpt_path is None:
        trainer.validate(model, datamodule=datamodule)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    value = metrics.get(cfg.optimized_metric)
    if trainer.is_global_zero:
        ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        summary = {
            "optimized_metric": cfg.optimized_metric,
            "value": value,
            "wall_time_s": round(time.perf_counter() - start, 1),
            "global_step": trainer.global_step,
            "best_checkpoint": ckpt,
            "skipped_batches": getattr(model, "skipped_batches", 0),
            "metrics": metrics,
        }
        (out_dir / "final_metrics.json").write_text(json.dumps(summary, indent=1))
        macro = {k: v for k, v in metrics.items() if k.count("/") == 2 and k.split("/")[1] in ("mono", "cross", "multi")}
        print("\n=== hybrid_retrieval: run finished ===")
        for k in sorted(macro):
            print(f"  {k:<28} {macro[k]:.4f}")
        print(f"  wall time                    {summary['wall_time_s']:.1f} s ({trainer.global_step} steps)")
        print(f"  run directory                {out_dir}")
        print(f"  checkpoint                   {ckpt or '(none)'}")
    return value


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415
    from hydra.types import RunMode  # noqa: PLC0415

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="../conf", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    prepare_environment()
    try:
        return train(cfg)
    except Exception as err:
        # In a sweep one failed job (say, an impossible batch size) must not take the others down:
        # record it for `report` and let Hydra go on with the next job.
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "FAILED.json").write_text(json.dumps({"error": f"{type(err).__name__}: {err}"}, indent=1))
        if _is_multirun():
            log.exception("job failed (recorded in %s); the sweep continues", out / "FAILED.json")
            return float("nan")
        raise
    finally:
        finish_wandb()


if __name__ == "__main__":
    main()
