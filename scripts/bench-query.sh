#!/usr/bin/env bash
# query over 10 M transactions: a month of event time (4 records per second, 1 M accounts),
# written by the embedded dataflow with 1 h commits, so as committed by a running pipeline:
# ~1 500 small files and one manifest per commit. Selective reads (one day, one account; every
# matching row as CSV) beside a full scan (every row as CSV), each a cold process; then
# `query compact` (its time and peak RSS) and the same reads on the compacted table.
# Usage: scripts/bench-query.sh [RECORDS] [ROUNDS]       (defaults: 10000000 3)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-10000000}"
ROUNDS="${2:-3}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
cargo build --release -p dataflow -p query >&2
BIN="${CARGO_TARGET_DIR:-target}/release"
printf 'accounts: 1000000\nseeded_clock: {start: 2026-03-01T00:00:00Z, records_per_second: 4}\ninvalid: {share: 0.0}\n' >"$OUT/gen.yaml"
"$BIN/dataflow" --rate 0 --count "$N" --until-caught-up --quiet --progress 0 -w 2 \
  --commit-interval 3600 --generator-config "$OUT/gen.yaml" --warehouse "$OUT/wh" >/dev/null 2>&1
Q=("$BIN/query" --warehouse "$OUT/wh")
ACC=$("${Q[@]}" --limit 1 --format csv 2>/dev/null | tail -1 | cut -d, -f2)
DAY=2026-03-15
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); python3 -c "print(f'{$e - $s:.2f}')"; }
files() { "${Q[@]}" snapshots --table transactions --format json | python3 -c \
  'import json,sys; print(json.loads(json.load(sys.stdin)[-1]["summary"])["total-data-files"])'; }
rounds() {
  echo "$1: $(files) data files; day $DAY ($("${Q[@]}" --date-range $DAY $DAY --limit 0 --format csv | tail -n +2 | wc -l) rows), account $ACC"
  printf '%-6s %10s %8s %8s\n' round full-scan day account
  for r in $(seq "$ROUNDS"); do
    full=$(t "${Q[@]}" --sql "SELECT * FROM transactions" --format csv)
    day=$(t "${Q[@]}" --date-range $DAY $DAY --limit 0 --format csv)
    acct=$(t "${Q[@]}" --account-id "$ACC" --limit 0 --format csv)
    printf '%-6s %10s %8s %8s\n' "$r" "$full" "$day" "$acct"
  done
}
rounds "as committed"
/usr/bin/time -f "compact: %e s, peak RSS %M KiB" "${Q[@]}" compact --table transactions
rounds "compacted"
