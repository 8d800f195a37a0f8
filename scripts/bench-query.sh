#!/usr/bin/env bash
# query over 10 M transactions (ten days of event time, 1 M accounts; written by the embedded
# dataflow with 1 h commits): selective reads (one day, one account; every matching row as CSV)
# beside a full scan of the table (every row as CSV) and the same filters over all the files
# (--sql: no pruning by iceberg-rust), each a cold process.
# Usage: scripts/bench-query.sh [RECORDS] [ROUNDS]       (defaults: 10000000 3)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-10000000}"
ROUNDS="${2:-3}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
cargo build --release -p dataflow -p query >&2
BIN="${CARGO_TARGET_DIR:-target}/release"
printf 'accounts: 1000000\nseeded_clock: {start: 2026-03-01T00:00:00Z, records_per_second: 12}\ninvalid: {share: 0.0}\n' >"$OUT/gen.yaml"
"$BIN/dataflow" --rate 0 --count "$N" --until-caught-up --quiet --progress 0 -w 2 \
  --commit-interval 3600 --generator-config "$OUT/gen.yaml" --warehouse "$OUT/wh" >/dev/null 2>&1
Q=("$BIN/query" --warehouse "$OUT/wh")
ACC=$("${Q[@]}" --limit 1 --format csv 2>/dev/null | tail -1 | cut -d, -f2)
DAY=2026-03-05
NEXT=2026-03-06
echo "$(find "$OUT/wh/finance/transactions/data" -name '*.parquet' | wc -l) data files; day $DAY, account $ACC"
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); python3 -c "print(f'{$e - $s:.2f}')"; }
printf '%-6s %10s %10s %12s %10s %12s\n' round full-scan day day-no-prune account acct-no-prune
for r in $(seq "$ROUNDS"); do
  full=$(t "${Q[@]}" --sql "SELECT * FROM transactions" --format csv)
  day=$(t "${Q[@]}" --date-range $DAY $DAY --limit 0 --format csv)
  dayall=$(t "${Q[@]}" --format csv --sql "SELECT * FROM transactions WHERE event_time >= TIMESTAMPTZ '${DAY}T00:00:00Z' AND event_time < TIMESTAMPTZ '${NEXT}T00:00:00Z' ORDER BY event_time")
  acct=$(t "${Q[@]}" --account-id "$ACC" --limit 0 --format csv)
  acctall=$(t "${Q[@]}" --format csv --sql "SELECT * FROM transactions WHERE account_id = '$ACC' ORDER BY event_time")
  printf '%-6s %10s %10s %12s %10s %12s\n' "$r" "$full" "$day" "$dayall" "$acct" "$acctall"
done
