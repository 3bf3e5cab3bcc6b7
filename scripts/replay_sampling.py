"""Replay what a finished job's sampler drew, from its record alone, and check the replay against the record.

    python scripts/replay_sampling.py docs/results/full_ft_study/jobs/*batch_size=256*.json \
        --out docs/results/equal_data_study/replayed_sampling.json

Why: job records gained ``sampling.distinct_pairs`` (distinct (item, query language, passage language) pairs, what
an equal-data comparison must hold equal) after the full fine-tuning grid had run, so the grid's records lack it.
Batches are a pure function of the configuration and (seed, epoch) (``data.sampler``), so the count can be replayed
exactly: compose the job's configuration from the overrides its record holds, build its training data and sampler
without a model, and describe its ``steps`` batches with the same ``sampling_record`` the job used. A replay is
trusted only when **every sampling field the record holds** is reproduced (realised α, per-setting batch and example
counts, distinct items, refills, in-batch duplicates, feasible and excluded settings); otherwise the script names the
fields that differ and exits 1, writing nothing.

Needs the training benchmark where the job read it (``paths.data_dir``; ../shared/data beside the repository).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hybrid_retrieval.report.collect import read_json
from hybrid_retrieval.runs.sweeps import register_resolvers

CONF = Path(__file__).resolve().parents[1] / "conf"
register_resolvers()  # once, as train.py does: every replay composes with them


def replay(record: dict) -> dict:
    """The sampling block the record's job would write, rebuilt from its overrides (no model, no training)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(record["overrides"]))
    dm = instantiate(cfg.data)
    dm.items = dm.load_train_items()
    return dm.sampling_record(int(record["steps"]))


def differences(recorded: dict, replayed: dict) -> list[str]:
    """The recorded sampling fields the replay does not reproduce (fields the record lacks are not compared)."""
    out = []
    for key, value in recorded.items():
        if key not in replayed:
            out.append(f"{key}: not in the replay")
        elif json.loads(json.dumps(replayed[key])) != value:  # JSON round trip: tuples vs lists, int keys
            out.append(f"{key}: recorded {str(value)[:60]}, replayed {str(replayed[key])[:60]}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", nargs="+", type=Path, help="job records (jobs/*.json) with status ok")
    ap.add_argument("--out", type=Path, help="JSON: job -> the replayed fields the record lacks, and what was checked")
    args = ap.parse_args(argv)
    result, failed = {}, []
    for path in args.records:
        rec = read_json(path)
        if rec.get("status") != "ok":
            continue
        recorded = rec.get("sampling", {})
        replayed = replay(rec)
        diff = differences(recorded, replayed)
        if diff:
            failed.append(f"{path.name}: " + "; ".join(diff))
            continue
        added = {k: v for k, v in replayed.items() if k not in recorded}
        result[rec["job"]] = {"replayed": added, "fields_checked": sorted(recorded)}
        adds = ", ".join(f"{k}={v}" for k, v in added.items()) or "nothing (the record holds every field)"
        print(f"{rec['job']}: {len(recorded)} recorded sampling fields reproduced; adds {adds}")
    if failed:
        print("replay does not reproduce the record:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {args.out} ({len(result)} jobs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
