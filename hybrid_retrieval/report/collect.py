"""Job results into tidy tables: run directories (``collect``) or committed job records (``collect_records``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from hybrid_retrieval.common.errors import DataFormatError

METRICS = ["mono/map", "cross/map", "multi/map", "multi/rank_distance", "mono/r@1", "cross/r@1", "multi/hit@1", "cross/r@10"]
PAIR_METRICS = ["map", "map@20", "r@1", "r@10"]


def read_json(path: Path) -> dict:
    """A job's JSON file; a corrupt or unreadable one is a :class:`DataFormatError` naming it."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFormatError(path, f"line {err.lineno}", f"valid JSON ({err.msg}); rerun the job or delete the file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataFormatError(path, "file", f"a readable UTF-8 JSON file ({err})") from None
    if not isinstance(value, dict):
        raise DataFormatError(path, "file", "a JSON object")
    return value


def _cfg(job: Path) -> dict:
    path = job / ".hydra" / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.exists() else {}


def collect(sweep_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per job, one row per job × language pair)."""
    rows, pair_rows = [], []
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").exists()):
        cfg = _cfg(job)
        data = cfg.get("data", {})
        row = {
            "job": job.name,
            "batch_size": data.get("batch_size"),
            "alpha": (data.get("sampler") or {}).get("alpha"),
            "seed": cfg.get("seed"),
            "train": (data.get("train") or {}).get("name"),
            "eval": (data.get("eval") or {}).get("name"),
        }
        if (job / "final_metrics.json").exists():
            fm = read_json(job / "final_metrics.json")
            row.update(status="ok", steps=fm.get("global_step"), wall_time_s=fm.get("wall_time_s"))
            for m in METRICS:
                row[m] = fm["metrics"].get(f"val/{m}")
            evals = sorted((job / "eval").glob("epoch*.json"))
            row["eval_json"] = str(evals[-1].relative_to(sweep_dir)) if evals else None
            if evals:
                ev = read_json(evals[-1])
                for x in ev["languages"]:
                    for y in ev["languages"]:
                        pair = {k: row[k] for k in ("job", "batch_size", "alpha", "seed")}
                        pair.update(query_lang=x, passage_lang=y)
                        pair.update({m: ev["metrics"].get(f"{x}-{y}/{m}") for m in PAIR_METRICS})
                        pair_rows.append(pair)
        elif (job / "FAILED.json").exists():
            row.update(status="failed", error=read_json(job / "FAILED.json").get("error", "?"))
        else:
            row.update(status="incomplete", error="no result yet (still running, or killed)")
        rows.append(row)
    if not rows:
        raise SystemExit(f"{sweep_dir}: no job directories (expected */.hydra/config.yaml)")
    return pd.DataFrame(rows), pd.DataFrame(pair_rows)


def collect_records(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per job record, one row per job × language pair) from ``{results_dir}/*.json``.

    Records are what sweeps write with ``results_dir`` set (:mod:`hybrid_retrieval.runs.sweeps`): they hold
    the configuration, what the sampler really did and the metrics, so the report needs no run directory."""
    rows, pair_rows = [], []
    for path in sorted(Path(results_dir).glob("*.json")):
        rec = read_json(path)
        if "status" not in rec:
            continue
        row = {"job": rec.get("job", path.stem), "status": rec["status"]}
        if rec["status"] != "ok":
            row["error"] = rec.get("error", "")
            row.update(_identity_from_overrides(rec.get("overrides", [])))
            rows.append(row)
            continue
        samp = rec.get("sampling", {})
        row.update(
            {k: rec.get(k) for k in ("batch_size", "alpha", "seed", "steps", "train", "eval", "eval_questions", "lr")}
            | {
                "pairs": samp.get("pairs"),
                "eval_candidates": rec.get("eval_candidates"),
                "train_layers": rec.get("train_layers") if rec.get("train_layers") is not None else "all",
                "realised_alpha": samp.get("realised_alpha"),
                "alpha_schedule": samp.get("alpha_schedule"),
                "distinct_negatives": samp.get("distinct_negatives_per_query"),
                "dup_pairs_per_batch": samp.get("dup_pairs_per_batch"),
                "mono_languages": " ".join(sorted(k.split("-")[0] for k in samp.get("batch_settings", {}) if _mono(k))),
                "cross_pairs_used": sum(1 for k in samp.get("batch_settings", {}) if not _mono(k)),
                "cross_pairs": " ".join(sorted(k for k in samp.get("batch_settings", {}) if not _mono(k))),
                "cross_pairs_feasible": len(samp.get("feasible_cross", [])),
                "excluded": "; ".join(samp.get("excluded", [])),
                "wall_time_s": rec.get("wall_time_s"),
                "commit": rec.get("commit"),
                "extra_overrides": _extra_overrides(rec.get("overrides", [])),
            }
        )
        for m in METRICS:
            row[m] = rec["metrics"].get(f"val/{m}")
        rows.append(row)
        for setting, vals in rec.get("pairs", {}).items():
            x, y = setting.split("-", 1)
            if y == "all":
                continue
            pair = {k: row[k] for k in ("job", "train", "eval", "batch_size", "alpha", "seed", "train_layers")}
            pair.update(query_lang=x, passage_lang=y, **{m: vals.get(m) for m in PAIR_METRICS})
            pair_rows.append(pair)
    if not rows:
        raise SystemExit(f"{results_dir}: no job records (*.json with a 'status')")
    return pd.DataFrame(rows), pd.DataFrame(pair_rows)


#: Overrides that place a job in the study's grid; any other (an lr check, full fine-tuning) makes it a side row.
GRID_KEYS = ("experiment", "sweep", "seed", "data.batch_size", "data.sampler.alpha", "logger", "hydra", "results_dir")


def _extra_overrides(overrides: list[str]) -> str:
    keys = [o.lstrip("+~") for o in overrides]
    return " ".join(sorted(o for o in keys if not any(o.split("=", 1)[0] == k or o.startswith(k + ".") for k in GRID_KEYS)))


def _mono(setting: str) -> bool:
    x, _, y = setting.partition("-")
    return x == y


def _identity_from_overrides(overrides: list[str]) -> dict:
    keys = {"data.batch_size": "batch_size", "data.sampler.alpha": "alpha", "seed": "seed"}
    out = {}
    for o in overrides:
        k, _, v = o.lstrip("+").partition("=")
        if k in keys:
            out[keys[k]] = float(v) if keys[k] == "alpha" else int(v)
    return out


def extra_overrides_of(ok: pd.DataFrame) -> pd.Series:
    """Each job's overrides beyond the grid ("" for none; side folders add their label)."""
    return ok["extra_overrides"].fillna("") if "extra_overrides" in ok else pd.Series("", index=ok.index)
