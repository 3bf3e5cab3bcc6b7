"""Validate user-facing config values before any work starts: one line naming key, value, what is allowed.

Allowed values come from the classes that enforce them (one source of truth); this module only makes the
failure early, before any model or data loads, and names the config key."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from omegaconf import DictConfig, OmegaConf

from hybrid_retrieval.common.errors import CheckpointError, ConfigError
from hybrid_retrieval.common.offline_model import OFFLINE_MODEL_NAME
from hybrid_retrieval.common.paths import DOWNLOAD_HINT, file_in_the_way
from hybrid_retrieval.data.sampler import check_alpha, check_alpha_schedule, check_cross_mode
from hybrid_retrieval.models.checkpoint import refusal, unsafe_globals
from hybrid_retrieval.models.encoder import check_pooling, check_prefix_cache
from hybrid_retrieval.models.loss import check_similarity, check_temperature
from hybrid_retrieval.tasks.image_text.model import SMALL_CNN, check_norm
from hybrid_retrieval.tasks.text.data import check_tokenize, check_train_format, check_validate_on
from hybrid_retrieval.training.core import check_nonfinite


def _get(cfg: DictConfig, dotted: str, default=None):
    node = cfg
    for part in dotted.split("."):
        if node is None or part not in node:
            return default
        node = node[part]
    return node


def _int(cfg, key: str, lo: int = 1, allow_none: bool = False):
    v = _get(cfg, key)
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(key, v, f"expected an integer >= {lo}" + (" or null" if allow_none else ""))
    return v


def _languages(cfg, key: str, root_key: str) -> None:
    langs = _get(cfg, key)
    root = _get(cfg, root_key)
    if langs is None or root is None:
        return
    available = sorted(p.stem for p in Path(root).glob("*.json"))
    if not list(langs):
        raise ConfigError(key, list(langs), "expected null (all languages) or a non-empty list")
    for lang in langs:
        if lang not in available:
            raise ConfigError(key, list(langs), f"unknown language {lang!r}; {root} has {available}")


def _alpha(cfg) -> None:
    check_alpha(_get(cfg, "data.sampler.alpha", 0.5))


def _safe_checkpoint(ckpt) -> None:
    """A checkpoint whose unpickling would import code is refused before anything loads it (models/checkpoint.py)."""
    try:
        names = unsafe_globals(str(ckpt))
    except CheckpointError:
        raise ConfigError("ckpt_path", ckpt, "not a complete PyTorch checkpoint (truncated or another format)") from None
    if names:
        raise ConfigError("ckpt_path", ckpt, refusal(names))


def _lr(cfg, default: float) -> None:
    lr = _get(cfg, "model.optimizer.lr", default)
    if not isinstance(lr, int | float) or lr <= 0:
        raise ConfigError("model.optimizer.lr", lr, "expected a positive learning rate")


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first bad value (checked in dependency order)."""
    seed = _get(cfg, "seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError("seed", seed, "expected a non-negative integer or null (unseeded)")
    ckpt = _get(cfg, "ckpt_path")
    if ckpt is not None:
        if not Path(str(ckpt)).is_file():
            raise ConfigError("ckpt_path", ckpt, "expected an existing checkpoint file")
        if not zipfile.is_zipfile(str(ckpt)):
            raise ConfigError("ckpt_path", ckpt, "not a complete PyTorch checkpoint (truncated or another format)")
        _safe_checkpoint(ckpt)
    _output_folder(cfg, "results_dir")
    if str(_get(cfg, "data._target_", "")).endswith("ImageTextDataModule"):
        _validate_image_text(cfg)
        return
    fmt = _text_data_paths(cfg)
    batch = _text_sampling(cfg)
    _text_dev_split(cfg, fmt)
    _trainer(cfg, batch)
    _text_model(cfg)


def _text_data_paths(cfg: DictConfig) -> str:
    """The training format and every path it names; returns the format."""
    fmt = _get(cfg, "data.train.format", "lareqa")
    check_train_format(fmt)
    keys = ["data.train.root" if fmt == "lareqa" else "data.train.path", "data.eval.root"]
    if fmt == "hub":  # a dataset name (or a local folder of data files), loaded by datasets.load_dataset
        name = _get(cfg, "data.train.path")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("data.train.path", name, "expected a Hugging Face dataset name or a local folder (format hub)")
        keys = ["data.eval.root"]
    if fmt == "aligned":
        files = _get(cfg, "data.train.files")
        if not isinstance(files, DictConfig) or not files:
            raise ConfigError("data.train.files", files, "expected {lang: path} of per-language JSONL files aligned by id")
        keys = [f"data.train.files.{lang}" for lang in files] + ["data.eval.root"]
    for key in keys:
        path = _get(cfg, key)
        if path is None or not Path(str(path)).exists():
            hint = DOWNLOAD_HINT if key.endswith(".root") else "set this key to an existing file"
            raise ConfigError(key, path, f"expected an existing path; {hint}")
    if fmt == "lareqa":
        _languages(cfg, "data.train.languages", "data.train.root")
    _languages(cfg, "data.eval.languages", "data.eval.root")
    return fmt


def _text_sampling(cfg: DictConfig) -> int:
    """Batch and sampler keys; returns the global batch size."""
    batch = _int(cfg, "data.batch_size")
    _alpha(cfg)
    check_cross_mode(_get(cfg, "data.sampler.cross_mode", "batch"))
    _int(cfg, "data.sampler.batches_per_epoch", allow_none=True)
    _int(cfg, "data.sampler.min_pool", allow_none=True)
    check_alpha_schedule(_get(cfg, "data.sampler.alpha_schedule", "bernoulli"))
    _int(cfg, "data.hard_negatives", lo=0)
    _int(cfg, "data.eval_batch_size")
    _int(cfg, "data.num_workers", lo=0)
    return batch


def _text_dev_split(cfg: DictConfig, fmt: str) -> None:
    fraction = _get(cfg, "data.dev.fraction")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 < float(fraction) < 1.0:
            raise ConfigError("data.dev.fraction", fraction, "expected a share in (0, 1) of the training question ids, or null")
        if fmt != "lareqa":
            raise ConfigError("data.dev.fraction", fraction, "a dev split needs data.train.format=lareqa (or null)")
        _int(cfg, "data.dev.seed", lo=0)
    check_tokenize(_get(cfg, "data.tokenize", "lazy"))
    check_validate_on(_get(cfg, "data.validate_on", "eval"), fraction)
    _int(cfg, "data.eval.max_questions", allow_none=True)  # 0 is not "the full benchmark": null is


def _trainer(cfg: DictConfig, batch: int) -> None:
    """The training core's and the Trainer's keys."""
    _training_core(cfg, batch)
    _int(cfg, "model.grad_cache.bucket_size", allow_none=True)
    precision = str(_get(cfg, "trainer.precision", "32-true"))
    if precision in ("16", "16-mixed", "fp16"):
        # Our manual backward passes (gradient caching) bypass Lightning's GradScaler: fp16 would step on
        # unscaled (underflowing) gradients. bf16 needs no scaler.
        raise ConfigError("trainer.precision", precision, "fp16 mixed precision is not supported; use bf16-mixed or 32-true")
    max_epochs = _int(cfg, "trainer.max_epochs", lo=-1, allow_none=True)
    max_steps = _int(cfg, "trainer.max_steps", lo=-1, allow_none=True)
    if max_epochs == -1 and (max_steps is None or max_steps < 1):
        raise ConfigError("trainer.max_epochs", max_epochs, "-1 (no epoch limit) needs trainer.max_steps > 0 to end the fit")
    devices = _get(cfg, "trainer.devices", 1)
    if isinstance(devices, int) and devices > 0 and batch % devices:
        raise ConfigError("data.batch_size", batch, f"global batch must be divisible by trainer.devices={devices}")


def _text_model(cfg: DictConfig) -> None:
    _int(cfg, "model.encoder.max_length", lo=8)
    train_layers = _int(cfg, "model.encoder.train_layers", allow_none=True)
    prefix_cache = _get(cfg, "model.encoder.prefix_cache", False)
    check_prefix_cache(prefix_cache, train_layers, _get(cfg, "model.encoder.prefix_cache_dtype", "fp16"))
    check_pooling(_get(cfg, "model.encoder.pooling", "mean"))
    lo, hi = _get(cfg, "model.loss.min_temperature", 0.01), _get(cfg, "model.loss.max_temperature", 1.0)
    check_temperature(_get(cfg, "model.loss.temperature", 0.05), lo, hi)
    check_similarity(_get(cfg, "model.loss.similarity", "cosine"))
    for flag in ("symmetric", "mask_duplicates", "learnable_temperature"):
        value = _get(cfg, f"model.loss.{flag}", False)
        if not isinstance(value, bool):
            raise ConfigError(f"model.loss.{flag}", value, "expected true or false")
    _lr(cfg, 1e-5)
    _adhoc_callbacks(cfg)
    _model_name(cfg, "model.encoder.name")


def _output_folder(cfg, key: str) -> None:
    """A folder the run writes into at its END (job records): a file in its place would fail only after training."""
    value = _get(cfg, key)
    if value is None:
        return
    blocker = file_in_the_way(str(value))
    if blocker is not None:
        raise ConfigError(key, value, f"expected a folder to write into ({blocker} is a file)")


def _model_name(cfg, key: str) -> None:
    name = str(_get(cfg, key, OFFLINE_MODEL_NAME))
    problem = model_name_problem(name)
    if problem is not None:
        raise ConfigError(key, name, problem)


def model_name_problem(name: str) -> str | None:
    """A model name is the offline default, an existing local directory, or a hub id (``org/name``); a name that
    can only be a path (absolute, ``./``, ``~``, several ``/``) must exist, and offline a hub id must be cached.
    Returns what is wrong (None: fine); every command that takes a model name asks this before loading it."""
    if name == OFFLINE_MODEL_NAME or Path(name).expanduser().exists():
        return None
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        return "no such model directory"
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    if offline and not _in_hf_cache(name):
        return f"not a local path nor in the HF cache while offline; use {OFFLINE_MODEL_NAME!r}"
    return None


IMAGE_TEXT_FORMATS = ("jsonl", "xm3600", "synthetic")


def _training_core(cfg: DictConfig, batch: int) -> int | None:
    """The training core's keys, the same for every task (hybrid_retrieval/training/core.py); returns the chunk size."""
    chunk = _int(cfg, "model.grad_cache.chunk_size", allow_none=True)  # 0 is not "off": null is
    if chunk is not None and chunk > batch:
        raise ConfigError("model.grad_cache.chunk_size", chunk, f"expected <= data.batch_size ({batch}) or null")
    check_nonfinite(_get(cfg, "model.nonfinite", "raise"))
    return chunk


def _validate_image_text(cfg: DictConfig) -> None:
    """The image–text experiment's keys (``conf/data/image_text.yaml``, ``conf/model/image_text.yaml``)."""
    for side in ("train", "eval"):
        fmt = _get(cfg, f"data.{side}.format", "jsonl")
        if fmt not in IMAGE_TEXT_FORMATS:
            raise ConfigError(f"data.{side}.format", fmt, f"expected one of {', '.join(IMAGE_TEXT_FORMATS)}")
        if fmt != "synthetic":
            path = _get(cfg, f"data.{side}.path")
            if path is None or not Path(str(path)).exists():
                raise ConfigError(f"data.{side}.path", path, "expected an existing image–caption JSONL (or XM3600 folder)")
        else:
            _int(cfg, f"data.{side}.renderings")
    batch = _int(cfg, "data.batch_size", lo=2)
    _int(cfg, "data.image_size", lo=8)
    chunk = _training_core(cfg, batch)
    tower = _get(cfg, "model.encoder.image_tower.name")
    norm = _get(cfg, "model.encoder.image_tower.norm", "batch")
    if tower == SMALL_CNN:
        check_norm(norm)
    if chunk is not None and tower == SMALL_CNN and norm == "batch" and not _get(cfg, "model.encoder.lock_image", False):
        raise ConfigError(
            "model.grad_cache.chunk_size",
            chunk,
            "gradient caching needs a tower that treats images independently: model.encoder.image_tower.norm=group "
            "(BatchNorm's statistics would differ per chunk), or null",
        )
    _alpha(cfg)
    mode = _get(cfg, "data.sampler.cross_mode", "example")
    if mode != "example":
        raise ConfigError(
            "data.sampler.cross_mode", mode, "image–text mixed batches draw a caption language per example: 'example'"
        )
    _int(cfg, "data.sampler.batches_per_epoch", allow_none=True)
    _lr(cfg, 1e-3)
    w = _get(cfg, "model.text_pair_weight", 0.0)
    if isinstance(w, bool) or not isinstance(w, int | float) or w < 0:
        raise ConfigError("model.text_pair_weight", w, "expected a weight >= 0 (0 = no caption→caption pairs)")
    _int(cfg, "trainer.max_epochs", lo=-1, allow_none=True)
    _int(cfg, "trainer.max_steps", lo=-1, allow_none=True)


def _adhoc_callbacks(cfg: DictConfig) -> None:
    """A second validation set (callbacks.*: AdhocEvaluator) must name a BEIR-layout folder with the split's qrels."""

    callbacks = _get(cfg, "callbacks") or {}
    for key, node in callbacks.items():
        if not isinstance(node, DictConfig) or not str(node.get("_target_", "")).endswith("AdhocEvaluator"):
            continue
        root = None if OmegaConf.is_missing(node, "root") else node.get("root")
        split = node.get("split", "dev")
        if root is None or not (Path(str(root)) / "corpus.jsonl").exists():
            raise ConfigError(
                f"callbacks.{key}.root", root, "expected a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/)"
            )
        if not (Path(str(root)) / "qrels" / f"{split}.tsv").exists():
            have = sorted(p.stem for p in (Path(str(root)) / "qrels").glob("*.tsv"))
            raise ConfigError(f"callbacks.{key}.split", split, f"no qrels/{split}.tsv in {root} (has {have})")


def _in_hf_cache(name: str) -> bool:
    try:
        hit = try_to_load_from_cache(name, "config.json")
    except ValueError:  # huggingface_hub's repo-id validator (HFValidationError): not a hub id, so not cached
        return False
    return isinstance(hit, str)


def _device_ok(device: str) -> str | None:
    """None if ``device`` can be used here, else why not."""
    if device in ("auto", "cpu"):
        return None
    try:
        dev = torch.device(device)
    except RuntimeError:
        return "expected auto, cpu, cuda or cuda:N"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available on this machine (use device=cpu or auto)"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
        return None
    if dev.type == "cpu":
        return None
    return "expected auto, cpu, cuda or cuda:N"


def check_evaluate_config(cfg: DictConfig) -> None:
    """``evaluate``'s own keys, before any model loads: one :class:`ConfigError` naming the first bad one."""
    adhoc_root = _get(cfg, "adhoc.root")
    if adhoc_root is not None:
        if not (Path(str(adhoc_root)) / "corpus.jsonl").exists():
            raise ConfigError("adhoc.root", adhoc_root, "expected a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/)")
        _int(cfg, "adhoc.max_queries", allow_none=True)
        _int(cfg, "adhoc.top_k", lo=100)
        _int(cfg, "adhoc.shard_size", allow_none=True)
    else:
        root = _get(cfg, "data.root")
        if root is None or not Path(str(root)).is_dir():
            raise ConfigError(
                "data.root", root, f"expected the benchmark folder (dataset={_get(cfg, 'dataset')}); {DOWNLOAD_HINT}"
            )
        _languages(cfg, "data.languages", "data.root")
        _int(cfg, "data.max_questions", allow_none=True)
        _int(cfg, "block")
        _int(cfg, "run_topk", allow_none=True)
    _int(cfg, "batch_size")
    _int(cfg, "encoder.max_length", lo=8)
    if not _get(cfg, "ckpt_path") or not _get(cfg, "encoder_from_checkpoint", True):
        _model_name(cfg, "encoder.name")
    ckpt = _get(cfg, "ckpt_path")
    if ckpt is not None and not Path(str(ckpt)).is_file():
        raise ConfigError("ckpt_path", ckpt, "expected an existing checkpoint file")
    if ckpt is not None and zipfile.is_zipfile(str(ckpt)):
        _safe_checkpoint(ckpt)
    device = str(_get(cfg, "device", "auto"))
    why = _device_ok(device)
    if why:
        raise ConfigError("device", device, why)
