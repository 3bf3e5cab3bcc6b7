"""The learning rate per batch size of the full fine-tuning study, chosen from the dev-split records.

The rule was fixed before the dev jobs ran (conf/sweep/study_ft_dev.yaml): the highest dev multilingual mAP
(``val/multi/map``) after the 64 steps; rates within ``--tie`` (0.001) of the best go to the smallest of them.
Only records with ``validated_on`` ending in ``-dev`` count, so the evaluation benchmark never enters the choice.

    python scripts/choose_lr.py --records docs/results/full_ft_study/dev            # the table, one line per B
    python scripts/choose_lr.py --records docs/results/full_ft_study/dev --batch 64  # just the rate (for scripts)
    python scripts/choose_lr.py --records ... --out docs/results/full_ft_study/chosen_lr.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METRIC = "val/multi/map"


def load_dev_records(directory: Path) -> list[dict]:
    """The finished dev-split records in ``directory`` (a corrupt file is an error naming it)."""
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise SystemExit(f"error: {path}: not a readable JSON job record ({error})") from None
        if record.get("status") == "ok" and str(record.get("validated_on", "")).endswith("-dev"):
            records.append(record)
    return records


def choose(records: list[dict], tie: float = 0.001) -> dict[int, dict]:
    """Per batch size: the chosen rate, its score, and every rate's score (the whole dev table)."""
    by_batch: dict[int, dict[float, float]] = {}
    for record in records:
        score = record["metrics"].get(METRIC)
        if score is None:
            raise SystemExit(f"error: job {record.get('job')}: no {METRIC} in its metrics")
        rates = by_batch.setdefault(int(record["batch_size"]), {})
        if float(record["lr"]) in rates:
            raise SystemExit(f"error: two dev records for batch {record['batch_size']} and lr {record['lr']}")
        rates[float(record["lr"])] = float(score)
    chosen = {}
    for batch, rates in sorted(by_batch.items()):
        best = max(rates.values())
        lr = min(rate for rate, score in rates.items() if score >= best - tie)
        edge = lr == max(rates)
        chosen[batch] = {"lr": lr, METRIC: rates[lr], "scores": dict(sorted(rates.items())), "top_edge": edge}
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=Path, default=Path("docs/results/full_ft_study/dev"))
    parser.add_argument("--batch", type=int, help="print only the rate chosen for this batch size")
    parser.add_argument("--tie", type=float, default=0.001)
    parser.add_argument("--out", type=Path, help="also write the choice as JSON here")
    args = parser.parse_args(argv)
    if not args.records.is_dir():
        raise SystemExit(f"error: {args.records}: no such directory of dev records")
    chosen = choose(load_dev_records(args.records), args.tie)
    if args.batch is not None:
        if args.batch not in chosen:
            raise SystemExit(f"error: no dev record for batch size {args.batch} (have: {sorted(chosen)})")
        print(f"{chosen[args.batch]['lr']:g}")
        return 0
    for batch, row in chosen.items():
        scores = ", ".join(f"{lr:g}: {s:.4f}" for lr, s in row["scores"].items())
        edge = "  (top edge of the grid)" if row["top_edge"] else ""
        print(f"B={batch}: lr {row['lr']:g} ({METRIC} {row[METRIC]:.4f}; {scores}){edge}")
    if args.out:
        payload = {"metric": METRIC, "tie": args.tie, "chosen": {str(b): r for b, r in chosen.items()}}
        args.out.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
