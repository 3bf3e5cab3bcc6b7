"""The learning rate per batch size of the full fine-tuning study, chosen from the dev-split records.

The rule was fixed before the dev jobs ran (conf/sweep/study_ft_dev.yaml, conf/sweep/study_eq_dev.yaml): the
highest dev multilingual mAP (``val/multi/map``) at the end of training, averaged over the seeds of a rate; rates
within ``--tie`` (0.001) of the best go to the smallest of them. Only records with ``validated_on`` ending in
``-dev`` count, so the evaluation benchmark never enters the choice. A winner at an edge of the rates tried has a
neighbour to try (the rate ladder 1e-5, 3e-5, 1e-4, 3e-4, 1e-3): ``--neighbour`` prints it, or nothing.

    python scripts/choose_lr.py --records docs/results/full_ft_study/dev            # the table, one line per B
    python scripts/choose_lr.py --records docs/results/full_ft_study/dev --batch 64  # just the rate (for scripts)
    python scripts/choose_lr.py --records ... --out docs/results/full_ft_study/chosen_lr.json
    python scripts/choose_lr.py --records docs/results/equal_data_study/dev --batch 16 --neighbour
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METRIC = "val/multi/map"
LADDER = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)  # the rates a dev grid draws from, each about 3x the last


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


def choose(records: list[dict], tie: float = 0.001, metric: str = METRIC) -> dict[int, dict]:
    """Per batch size: the chosen rate, its seed-mean score, every rate's score and seeds (the whole dev table).
    ``metric`` is the design's selection metric; another one answers "what would that metric have chosen"."""
    by_batch: dict[int, dict[float, dict[int, float]]] = {}
    for record in records:
        score = record["metrics"].get(metric)
        if score is None:
            raise SystemExit(f"error: job {record.get('job')}: no {metric} in its metrics")
        seeds = by_batch.setdefault(int(record["batch_size"]), {}).setdefault(float(record["lr"]), {})
        if int(record["seed"]) in seeds:
            raise SystemExit(
                f"error: two dev records for batch {record['batch_size']}, lr {record['lr']} and seed {record['seed']}"
            )
        seeds[int(record["seed"])] = float(score)
    chosen = {}
    for batch, by_rate in sorted(by_batch.items()):
        rates = {lr: sum(seeds.values()) / len(seeds) for lr, seeds in sorted(by_rate.items())}
        best = max(rates.values())
        lr = min(rate for rate, score in rates.items() if score >= best - tie)
        chosen[batch] = {
            "lr": lr,
            metric: rates[lr],
            "scores": rates,
            "seeds": {rate: sorted(seeds) for rate, seeds in sorted(by_rate.items())},
            "top_edge": lr == max(rates),
            "bottom_edge": lr == min(rates) and len(rates) > 1,
        }
    return chosen


def neighbour(row: dict) -> float | None:
    """The untried ladder rate beyond the winner when it sits at an edge of the rates tried (else None)."""
    lr, tried = row["lr"], row["scores"]
    if not (row["top_edge"] or row["bottom_edge"]) or lr not in LADDER:
        return None
    i = LADDER.index(lr) + (1 if row["top_edge"] else -1)
    return LADDER[i] if 0 <= i < len(LADDER) and LADDER[i] not in tried else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=Path, default=Path("docs/results/full_ft_study/dev"))
    parser.add_argument("--batch", type=int, help="print only the rate chosen for this batch size")
    parser.add_argument("--neighbour", action="store_true", help="with --batch: the rate to try next, or nothing")
    parser.add_argument("--tie", type=float, default=0.001)
    parser.add_argument("--metric", default=METRIC, help=f"selection metric (default: the design's, {METRIC})")
    parser.add_argument("--out", type=Path, help="also write the choice as JSON here")
    args = parser.parse_args(argv)
    if not args.records.is_dir():
        raise SystemExit(f"error: {args.records}: no such directory of dev records")
    chosen = choose(load_dev_records(args.records), args.tie, args.metric)
    if args.batch is not None:
        if args.batch not in chosen:
            raise SystemExit(f"error: no dev record for batch size {args.batch} (have: {sorted(chosen)})")
        if args.neighbour:
            nxt = neighbour(chosen[args.batch])
            if nxt is not None:
                print(f"{nxt:g}")
            return 0
        print(f"{chosen[args.batch]['lr']:g}")
        return 0
    for batch, row in chosen.items():
        scores = ", ".join(f"{lr:g}: {s:.4f}" for lr, s in row["scores"].items())
        edge = "  (top edge of the grid)" if row["top_edge"] else "  (bottom edge of the grid)" if row["bottom_edge"] else ""
        print(f"B={batch}: lr {row['lr']:g} ({args.metric} {row[args.metric]:.4f}; {scores}){edge}")
    if args.out:
        payload = {"metric": args.metric, "tie": args.tie, "chosen": {str(b): r for b, r in chosen.items()}}
        args.out.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
