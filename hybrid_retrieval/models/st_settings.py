"""The settings of a sentence-transformers model directory (or hub id) as :class:`DualEncoder` keywords, so that
``python -m hybrid_retrieval.evaluate encoder.name=<ST model>`` encodes as the model itself does: its ``query`` /
``document`` prompts as prefixes, its pooling, its Normalize module and its max_seq_length.

Read from ``modules.json``, ``config_sentence_transformers.json``, ``sentence_bert_config.json`` (or, from
sentence-transformers 6 on, the tokenizer's ``model_max_length``) and the Pooling module's ``config.json``; a model
this project cannot reproduce (another pooling, extra modules such as Dense) is a
:class:`~hybrid_retrieval.common.errors.ConfigError` naming what it has.
"""

from __future__ import annotations

import json
from pathlib import Path

from hybrid_retrieval.common.errors import ConfigError

#: sentence-transformers < 6 records the pooling as one flag per mode (6 writes ``pooling_mode`` itself)
_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _local(name: str) -> Path | None:
    """The folder holding ``name``'s modules.json: the directory itself, or the hub snapshot (cached or fetched)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path if (path / "modules.json").is_file() else None
    try:
        from huggingface_hub import hf_hub_download  # noqa: PLC0415 - only for hub ids

        return Path(hf_hub_download(name, "modules.json")).parent
    except Exception:  # not a hub id, not an ST model, or offline and not cached: a plain transformers model
        return None


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def st_encoder_settings(name: str, key: str = "encoder.name") -> dict | None:
    """DualEncoder keywords (name, pooling, normalize, prefixes, max_length) for an ST model, or None for another."""
    root = _local(name)
    if root is None:
        return None
    modules = json.loads((root / "modules.json").read_text(encoding="utf-8"))
    kinds = {m["type"].rsplit(".", 1)[-1]: m.get("path", "") for m in modules}
    extra = sorted(set(kinds) - {"Transformer", "Pooling", "Normalize"})
    if extra or "Transformer" not in kinds or "Pooling" not in kinds:
        raise ConfigError(
            key, name, f"a sentence-transformers model of Transformer + Pooling [+ Normalize] (it has {sorted(kinds)})"
        )
    pooling_cfg = _json(root / kinds["Pooling"] / "config.json")
    flags = [mode for flag, mode in _POOLING_FLAGS.items() if pooling_cfg.get(flag)]
    mode = pooling_cfg.get("pooling_mode") or ("+".join(flags) if flags else None)
    if mode not in ("mean", "cls"):
        raise ConfigError(key, name, f"mean or CLS pooling (the model pools with {mode!r})")
    prompts = _json(root / "config_sentence_transformers.json").get("prompts") or {}
    transformer = root / kinds["Transformer"] if kinds["Transformer"] else root
    max_length = _json(transformer / "sentence_bert_config.json").get("max_seq_length")
    if max_length is None:  # sentence-transformers >= 6 keeps it as the tokenizer's model_max_length
        max_length = _json(transformer / "tokenizer_config.json").get("model_max_length")
        max_length = max_length if isinstance(max_length, int) and max_length <= 100_000 else None  # not a sentinel
    local = Path(name).expanduser().is_dir()
    return {
        "name": str(transformer) if local or kinds["Transformer"] else name,
        "pooling": mode,
        "normalize": "Normalize" in kinds,
        "query_prefix": prompts.get("query", ""),
        "passage_prefix": prompts.get("document", prompts.get("passage", "")),
        **({"max_length": int(max_length)} if max_length else {}),
    }
