"""Evaluate any encoder on XQuAD-R or MLQA-R with the LAReQA protocol.

    python -m hybrid_retrieval.evaluate dataset=xquad-r                      # untrained offline default
    python -m hybrid_retrieval.evaluate dataset=mlqa-r ckpt_path=.../last.ckpt
    python -m hybrid_retrieval.evaluate model/encoder@encoder=labse          # a hub model (online)
    python -m hybrid_retrieval.evaluate adhoc.root=/data/miracl-de adhoc.split=dev ckpt_path=...  # BEIR layout

Writes to the run directory: ``summary.json`` (macro averages, per-pair metrics, timings),
``matrices/{metric}.csv`` and ``.png`` heatmaps, and ``runs/`` (TREC run files + qrels per setting).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hybrid_retrieval.common.console import install_hydra_error_handler, remove_unused_run_dir, user_errors
from hybrid_retrieval.common.errors import CheckpointError
from hybrid_retrieval.common.paths import CONFIG_DIR
from hybrid_retrieval.common.plots import heatmap
from hybrid_retrieval.data.beir import load_beir
from hybrid_retrieval.data.lareqa import load_lareqa, subsample_questions
from hybrid_retrieval.evaluation.adhoc import evaluate_adhoc
from hybrid_retrieval.evaluation.encode import encode_texts
from hybrid_retrieval.evaluation.lareqa_eval import EvalCorpus, TrecRunWriter, evaluate_embeddings
from hybrid_retrieval.evaluation.shards import encode_to_shards
from hybrid_retrieval.evaluation.trec import write_trec_run
from hybrid_retrieval.models.checkpoint import encoder_from_checkpoint, load_checkpoint_into
from hybrid_retrieval.models.st_settings import st_encoder_settings
from hybrid_retrieval.runs.config_check import check_evaluate_config
from hybrid_retrieval.runs.session import prepare_environment
from hybrid_retrieval.runs.sweeps import register_resolvers
from hybrid_retrieval.tasks.text.evaluators import LareqaEvaluator

log = logging.getLogger(__name__)
register_resolvers()
install_hydra_error_handler()


def write_matrices(out: Path, result, plot: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    langs = result.languages
    for metric, mat in result.pair.items():
        safe = metric.replace("@", "_at_")
        header = "query_lang," + ",".join(langs)
        rows = [f"{x}," + ",".join(f"{v:.6f}" for v in mat[i]) for i, x in enumerate(langs)]
        (out / f"{safe}.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
        if plot and metric in ("map", "r@1"):
            import matplotlib.pyplot as plt  # noqa: PLC0415 - slow to import (~1 s); only plots need it, after the headless backend is chosen

            fig = heatmap(mat, langs, title=f"{metric} (rows: query language, columns: candidate language)")
            fig.savefig(out / f"{safe}.png")
            plt.close(fig)


def log_to_wandb(cfg: DictConfig, out: Path, result, summary: dict) -> None:
    """One W&B run (job_type=eval): macro metrics, and the training evaluator's per-pair table and mAP heatmap."""
    import wandb  # noqa: PLC0415 - slow to import (~2 s) and only needed when W&B logging is on

    run = wandb.init(
        project=cfg.wandb_project,
        job_type="eval",
        group=f"eval-{cfg.dataset}",
        dir=str(out),
        config=summary["config"],
    )
    try:
        payload = {f"eval/{k}": v for k, v in summary["macro"].items()}
        run.log({**payload, **LareqaEvaluator(prefix="eval").media(wandb, result)})
    finally:
        run.finish()


def load_eval_encoder(cfg: DictConfig, device: torch.device):
    """The encoder to evaluate: the checkpoint's own settings when it records them, else the encoder group."""

    encoder = None
    if cfg.get("ckpt_path") and cfg.get("encoder_from_checkpoint", True):
        try:  # the checkpoint's own encoder settings (name, pooling, prefixes, max_length, frozen prefix)
            encoder = encoder_from_checkpoint(cfg.ckpt_path, prefix_cache=bool(cfg.encoder.get("prefix_cache", False)))
            log.info("encoder settings from the checkpoint: %s", encoder.init_config)
        except CheckpointError as err:
            if "does not record its encoder settings" not in str(err):
                raise
            log.warning("%s: using the configured encoder", err)
    if encoder is None and not cfg.get("ckpt_path"):
        settings = st_encoder_settings(str(cfg.encoder.name))
        if settings is not None:  # a sentence-transformers model: its prompts, pooling, normalisation, max length
            log.info("sentence-transformers model: %s", settings)
            encoder = instantiate(cfg.encoder, **settings)
    if encoder is None:
        encoder = instantiate(cfg.encoder)
        if cfg.get("ckpt_path"):
            load_checkpoint_into(encoder, cfg.ckpt_path)
    return encoder.to(device).eval()


def _device(cfg: DictConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str):
    t0 = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t0


def _encode_both(cfg: DictConfig, encoder, device, queries: list[str], passages: list[str], names: tuple[str, str]):
    """(query embeddings, passage embeddings): each distinct text once, with progress bars."""

    kw = {"batch_size": cfg.batch_size, "device": device, "progress": True}
    return encode_texts(encoder, queries, "query", desc=names[0], **kw), encode_texts(
        encoder, passages, "passage", desc=names[1], **kw
    )


def evaluate_adhoc_dataset(cfg: DictConfig) -> dict:
    """BEIR/MIRACL-layout evaluation (``adhoc.root=...``): nDCG@10, Recall@100, MRR@10, a TREC run, summary.json."""

    out = Path(cfg.paths.output_dir)
    device = _device(cfg)
    a = cfg.adhoc
    timings: dict[str, float] = {}
    with _timed(timings, "load_data_s"):  # the data first: a bad file fails before the model loads
        ds = load_beir(a.root, a.split, name=a.get("name"), max_queries=a.get("max_queries"))
    log.info("%s", ds.summary())
    with _timed(timings, "load_model_s"):
        encoder = load_eval_encoder(cfg, device)
    with _timed(timings, "encode_s"):
        q_emb = encode_texts(encoder, ds.query_texts, "query", batch_size=cfg.batch_size, device=device, progress=True)
        # documents in resumable fp16 shards on disk: bounded memory at any corpus size; a fixed
        # adhoc.embeddings_dir lets a killed encode resume at its last finished shard
        d_emb = encode_to_shards(
            encoder,
            ds.doc_texts,
            "passage",
            a.get("embeddings_dir") or out / "doc_embeddings",
            shard_size=int(a.get("shard_size") or 50_000),
            batch_size=cfg.batch_size,
            device=device,
        )
    with _timed(timings, "search_and_metrics_s"):
        result = evaluate_adhoc(
            ds.query_ids,
            ds.doc_ids,
            ds.qrels,
            q_emb,
            d_emb,
            top_k=int(a.top_k),
            ignore_identical_ids=bool(a.ignore_identical_ids),
        )
    out.mkdir(parents=True, exist_ok=True)
    if cfg.run_files:
        write_trec_run(out / "runs" / f"{ds.name}.{a.split}.run", result.run)
    (out / "per_query.json").write_text(json.dumps(result.per_query, indent=0))
    summary = {
        "dataset": ds.name,
        "split": a.split,
        "protocol": "adhoc (BEIR/MIRACL layout)",
        "encoder": encoder.init_config,
        "ckpt_path": cfg.get("ckpt_path"),
        "n_queries": len(ds.query_ids),
        "n_documents": len(ds.doc_ids),
        "dropped": ds.dropped,
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "macro": result.macro,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print(f"\n=== ad-hoc retrieval: {ds.summary()} ({a.split}) ===")
    print("  ".join(f"{m} {v:.4f}" for m, v in result.macro.items()))
    print("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"outputs: {out}")
    return summary


def evaluate(cfg: DictConfig) -> dict:
    out = Path(cfg.paths.output_dir)
    device = _device(cfg)
    timings: dict[str, float] = {}
    with _timed(timings, "load_model_s"):
        encoder = load_eval_encoder(cfg, device)
    with _timed(timings, "load_data_s"):
        ds = load_lareqa(cfg.data.root, cfg.data.get("languages"), name=cfg.dataset)
        if cfg.data.get("max_questions") is not None:
            ds = subsample_questions(ds, int(cfg.data.max_questions), seed=0)
        corpus = EvalCorpus.from_dataset(ds, with_context=cfg.data.with_context)
    log.info("%s", ds.summary())
    with _timed(timings, "encode_s"):
        q_emb, c_emb = _encode_both(cfg, encoder, device, corpus.q_texts, corpus.c_texts, ("questions", "candidates"))
    with _timed(timings, "rank_and_metrics_s"):
        writer = TrecRunWriter(out / "runs", corpus, top_k=cfg.run_topk) if cfg.run_files else None
        result = evaluate_embeddings(corpus, q_emb, c_emb, block=cfg.block, run_writer=writer)
        if writer is not None:
            writer.close()
    write_matrices(out / "matrices", result)

    macro = result.macro()
    summary = {
        "dataset": cfg.dataset,
        "encoder": encoder.init_config,
        "ckpt_path": cfg.get("ckpt_path"),
        "n_questions": len(corpus.q_texts),
        "n_candidates": len(corpus.c_texts),
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "macro": macro,
        "per_setting": result.flat(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    if cfg.get("wandb"):
        log_to_wandb(cfg, out, result, summary)
    print(
        f"\n=== LAReQA evaluation: {cfg.dataset} ({len(ds.languages)} languages, {len(corpus.q_texts)} questions, "
        f"{len(corpus.c_texts)} candidates) ==="
    )
    print(f"{'setting':<8} {'mAP':>7} {'mAP@20':>7} {'R@1':>7} {'R@10':>7}")
    for setting in ("mono", "cross", "multi"):
        print(f"{setting:<8} " + " ".join(f"{macro[f'{setting}/{m}']:7.4f}" for m in ("map", "map@20", "r@1", "r@10")))
    print(f"rank distance (multi, lower = less language bias): {macro['multi/rank_distance']:.2f}")
    print("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"outputs: {out}")
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate.yaml")
def main(cfg: DictConfig) -> float:
    prepare_environment()
    with user_errors(cleanup=lambda: remove_unused_run_dir(Path(cfg.paths.output_dir))):
        check_evaluate_config(cfg)  # before any model loads
        if cfg.get("adhoc") and cfg.adhoc.get("root"):
            return float(evaluate_adhoc_dataset(cfg)["macro"]["ndcg@10"])
        summary = evaluate(cfg)
    return float(summary["macro"]["multi/map"]) if not np.isnan(summary["macro"]["multi/map"]) else float("nan")


if __name__ == "__main__":
    main()
