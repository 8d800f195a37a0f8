#!/usr/bin/env bash
# What the lakehouse costs the dataflow, and what it leaves on disk.
#   1. End to end (embedded source, scripts/bench/dense.yaml, 2 workers) with the lakehouse and
#      with --no-lakehouse, alternating, in the same run: records/s of each and their ratio.
#   2. Files per table per hour and bytes per row of `transactions`, at 10 k and 100 k records/s
#      of event time (the rate a live stream has): RECORDS_PER_S × 120 records (two minutes of
#      event time) into a fresh warehouse, files counted and scaled to an hour.
# The sink alone (rows → Parquet → commit): cargo bench -p sink --bench write
# Usage: scripts/bench-lakehouse.sh [RECORDS] [ROUNDS]      (defaults: 2000000 3)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000000}"
ROUNDS="${2:-3}"
DF=target/release/dataflow
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
cargo build --release -p dataflow >&2

# The rate the final progress line reports, e.g. "dataflow: 2000000 read (512345/s) | …".
run() {
  "$DF" --rate 0 --count "$N" --until-caught-up --quiet --progress 0 -w 2 \
    --generator-config scripts/bench/dense.yaml --warehouse "$OUT/wh-$RANDOM" "$@" 2>&1 |
    sed -n 's/^dataflow: [0-9]* read[^(]*(\([0-9]*\)\/s).*/\1/p'
}

echo "1. end to end, $N records, 2 workers (records/s)"
printf '%-6s %14s %14s %8s\n' round lakehouse "no lakehouse" ratio
for r in $(seq "$ROUNDS"); do
  with=$(run)
  without=$(run --no-lakehouse)
  printf '%-6s %14s %14s %8s\n' "$r" "$with" "$without" \
    "$(python3 -c "print(f'{$with / $without:.2f}')")"
done

echo
echo "2. files per table per hour, bytes per transactions row"
printf '%-10s %-14s %10s %12s %14s\n' rate/s table files rows files/hour
for rate in 10000 100000; do
  count=$((rate * 120))
  wh="$OUT/files-$rate"
  cfg="$OUT/gen-$rate.yaml"
  printf 'accounts: 5000000\nseeded_clock: {start: 2026-03-02T09:00:00Z, records_per_second: %d}\n' "$rate" >"$cfg"
  "$DF" --rate 0 --count "$count" --until-caught-up --quiet --progress 0 -w 2 \
    --generator-config "$cfg" --warehouse "$wh" >/dev/null 2>&1
  for t in transactions alerts dead_letters; do
    files=$(find "$wh/finance/$t/data" -name '*.parquet' | wc -l)
    printf '%-10s %-14s %10s %12s %14s\n' "$rate" "$t" "$files" "" "$((files * 30))"
  done
  bytes=$(find "$wh/finance/transactions/data" -name '*.parquet' -printf '%s\n' | awk '{s+=$1} END {print s}')
  rows=$(python3 - "$wh" <<'PY'
import sys, pyarrow.parquet as pq, glob
print(sum(pq.ParquetFile(f).metadata.num_rows for f in glob.glob(sys.argv[1] + "/finance/transactions/data/*/*.parquet")))
PY
)
  echo "  transactions at $rate/s: $rows rows, $bytes bytes: $(python3 -c "print(f'{$bytes / $rows:.1f}')") bytes/row"
done
