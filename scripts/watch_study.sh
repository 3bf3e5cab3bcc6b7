#!/usr/bin/env bash
# While a study runs in a separate clone, copy each finished record into this checkout and regenerate the study
# reports in the same commit (so tests/test_full_ft_report.py's and tests/test_equal_data_report.py's byte-for-byte
# checks hold at every commit). Polls every INTERVAL seconds (default 240), ROUNDS times (default: until stopped):
#   nohup bash scripts/watch_study.sh /work/study > /tmp/watch_study.log 2>&1 &
# Folders synced: the full fine-tuning grid, the equal-pairs control, its rate probe, the anchor (a top-2 grid
# job rerun at the study clone's commit) and the equal-data study's jobs and dev records. Each round:
# scripts/sync_study_records.sh per folder (it commits the new records), then the reports, folded into that commit
# with --amend (only the reports' and the records' paths).
set -uo pipefail
src=${1:?usage: watch_study.sh STUDY_CLONE}
cd "$(dirname "$0")/.."
folders=(docs/results/full_ft_study/jobs docs/results/batch_size_study/control docs/results/batch_size_study/control_rate
  docs/results/batch_size_study/anchor docs/results/equal_data_study/jobs docs/results/equal_data_study/dev)
# what the reports write (not README.md)
report=(full_ft_study/{regimes.md,regimes.csv,regimes.png,control.csv,control_rate.csv,pair_deltas.csv,pair_deltas}
  equal_data_study/{report.md,cells.csv,jobs.csv,pairs_seen.png,rate_rule.png,pair_deltas.csv,pair_deltas.png})
reports() {
  nice -n 10 python scripts/full_ft_study_report.py --full docs/results/full_ft_study/jobs \
    --top2 docs/results/batch_size_study/jobs --control docs/results/batch_size_study/control \
    --control-rate docs/results/batch_size_study/control_rate --anchor docs/results/batch_size_study/anchor \
    --out docs/results/full_ft_study || return 1
  [ -f scripts/equal_data_study_report.py ] || return 0
  nice -n 10 python scripts/equal_data_study_report.py --jobs docs/results/equal_data_study/jobs \
    --dev docs/results/equal_data_study/dev --grid docs/results/full_ft_study/jobs \
    --grid-dev docs/results/full_ft_study/dev --untrained docs/results/batch_size_study/baselines.json \
    --replayed docs/results/equal_data_study/replayed_sampling.json --out docs/results/equal_data_study
}
round=0
while true; do
  for rel in "${folders[@]}"; do
    [ -d "$src/$rel" ] || continue
    out=$(bash scripts/sync_study_records.sh "$src" "$rel" 2>&1)
    echo "$(date -u +%H:%M) $out"
    case "$out" in *committed*) ;; *) continue ;; esac
    if ! reports > /tmp/watch_study_report.log 2>&1; then
      echo "watch_study: the report failed (records committed alone):"; tail -5 /tmp/watch_study_report.log
      continue
    fi
    paths=()
    for p in "${report[@]/#/docs/results/}" "${folders[@]}"; do [ -e "$p" ] && paths+=("$p"); done
    git add -- "${paths[@]}"
    git commit -q --amend --no-edit -- "${paths[@]}" && echo "$(date -u +%H:%M) report regenerated in $(git log -1 --format=%h)"
  done
  round=$((round + 1))
  [ -n "${ROUNDS:-}" ] && [ "$round" -ge "$ROUNDS" ] && break
  sleep "${INTERVAL:-240}"
done
