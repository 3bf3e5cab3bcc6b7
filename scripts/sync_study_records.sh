#!/usr/bin/env bash
# Copy the finished job records of a study clone into this checkout and commit them, one commit per call.
# The study runs from a separate clone so that development here cannot change the code under a running
# sweep (docs/results/batch_size_study/README.md, "Provenance"); run this every few minutes while it runs:
#   bash scripts/sync_study_records.sh /work/study                 # the batch-size study's jobs/
#   bash scripts/sync_study_records.sh /work/study docs/results/<study>/jobs
# Only records this checkout lacks are copied (a record is written once, atomically, when its job ends);
# one that differs from this checkout's copy is reported and left alone, one that is not JSON is skipped.
set -euo pipefail
src=${1:?usage: sync_study_records.sh STUDY_CLONE [RECORDS_DIR relative to the repository root]}
rel=${2:-docs/results/batch_size_study/jobs}
src=$(cd "$src" && pwd)
cd "$(dirname "$0")/.."
[ -d "$src/$rel" ] || { echo "sync_study_records: no records folder $src/$rel" >&2; exit 2; }
mkdir -p "$rel"
new=()
for f in "$src/$rel"/*.json; do
  [ -e "$f" ] || continue
  b=$(basename "$f")
  if [ -e "$rel/$b" ]; then
    cmp -s "$f" "$rel/$b" || echo "sync_study_records: $b differs from this checkout's copy; kept this one" >&2
  elif python -c 'import json, sys; json.load(open(sys.argv[1]))' "$f" 2>/dev/null; then
    cp "$f" "$rel/$b"
    new+=("$rel/$b")
  else
    echo "sync_study_records: $f is not valid JSON; skipped" >&2
  fi
done
if [ ${#new[@]} -eq 0 ]; then
  echo "sync_study_records: no new records"
  exit 0
fi
total=$(find "$rel" -maxdepth 1 -name '*.json' | wc -l)
git add -- "${new[@]}"
git commit -q -m "study: ${#new[@]} more job record(s) ($total in $(basename "$rel")/)" -- "${new[@]}"
echo "sync_study_records: committed ${#new[@]} new record(s), $total in $rel"
