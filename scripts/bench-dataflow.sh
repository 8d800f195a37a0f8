#!/usr/bin/env bash
# The dataflow's throughput and memory, through the real binary (docs/performance.md):
#   1. embedded source, dense.yaml (100 000 records per second of event time over 5 M
#      accounts), 1 and 2 workers, and 2 workers with rapid_activity disabled; and 2 workers
#      on the default generator config (1 000 records per second of event time: a replay of
#      a slow stream, where each step holds few records);
#   2. peak RSS with 1 M active accounts (active-1m.yaml, 3 M records, 2 workers);
#   3. through the local broker: the same records in a 4-partition topic, read by Kafka's own
#      consumer-perf-test (org.apache.kafka.tools.ConsumerPerformance), by the dataflow's own
#      Kafka reader alone on 2 threads (the `consume` bench binary: rdkafka, nothing else), and
#      by `dataflow --until-caught-up` with 1 and 2 workers, in the same round, each dataflow
#      run between two raw runs.
# Usage: scripts/bench-dataflow.sh [RECORDS] [ROUNDS] [kafka]   (defaults: 2000000 3; `kafka`
# runs part 3 alone)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000000}"
ROUNDS="${2:-3}"
ONLY="${3:-}"
BROKERS="${KAFKA_BROKERS:-127.0.0.1:${KAFKA_PORT:-9092}}"
BIN="${CARGO_TARGET_DIR:-target}/release"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

cargo build --release -p dataflow -p generator >&2
cargo build --release -p e2e --bin consume >&2

# The rate a run reports on its last progress line: "N read (R/s) | ...".
read_rate() { grep -o 'read ([0-9]*/s)' | tail -n 1 | tr -dc '0-9'; }
base=(--rate 0 --until-caught-up --quiet --progress 0 --no-lakehouse)
dense=("${base[@]}" --generator-config scripts/bench/dense.yaml)
sed 's/rapid_activity: {enabled: true/rapid_activity: {enabled: false/' \
  config/alerting-rules.yaml >"$OUT/no-rapid.yaml"

if [[ "$ONLY" != kafka ]]; then
  printf '%-6s %-44s %12s\n' round what records/s
  for r in $(seq 1 "$ROUNDS"); do
    for w in 1 2; do
      rate=$("$BIN/dataflow" "${dense[@]}" --count "$N" -w "$w" 2>&1 | read_rate)
      printf '%-6s %-44s %12s\n' "$r" "embedded, $w worker(s)" "$rate"
    done
    rate=$("$BIN/dataflow" "${dense[@]}" --count "$N" -w 2 --rules "$OUT/no-rapid.yaml" 2>&1 | read_rate)
    printf '%-6s %-44s %12s\n' "$r" "embedded, 2 workers, rapid_activity disabled" "$rate"
    rate=$("$BIN/dataflow" "${base[@]}" --count "$N" -w 2 --generator-config config/generator.yaml 2>&1 | read_rate)
    printf '%-6s %-44s %12s\n' "$r" "embedded, 2 workers, default generator config" "$rate"
  done

  echo
  printf '%-6s %-44s %12s\n' round "1 M active accounts, 3 M records, 2 workers" "peak RSS"
  for r in $(seq 1 "$ROUNDS"); do
    /usr/bin/time -f '%M' -o "$OUT/rss" "$BIN/dataflow" --rate 0 --count 3000000 --until-caught-up \
      --quiet --progress 0 -w 2 --no-lakehouse --generator-config scripts/bench/active-1m.yaml \
      >/dev/null 2>&1
    printf '%-6s %-44s %9s MB\n' "$r" "" "$(($(cat "$OUT/rss") / 1024))"
  done

  echo
fi

[[ -n "${KAFKA_BROKERS:-}" ]] || scripts/kafka.sh start >&2
topic="bench-dataflow-$$"
# The topics go when the script does: a few hundred MB a million records.
trap 'scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" \
  --delete --topic "$topic.*" >/dev/null 2>&1 || true; rm -rf "$OUT"' EXIT
scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" \
  --create --topic "$topic" --partitions 4 --replication-factor 1 >/dev/null
"$BIN/generator" --seed 1 --count "$N" --rate 0 --progress 0 --config scripts/bench/dense.yaml \
  --brokers "$BROKERS" --topic "$topic" 2>"$OUT/generator.log" || { cat "$OUT/generator.log" >&2; exit 1; }
printf '%-6s %-44s %12s\n' round "$N records from a 4-partition topic" records/s
# The raw rate moves by a fifth from one run to the next on a shared machine, so each dataflow
# run is bracketed by two raw runs and compared with their mean: raw, 2 workers, raw, 1 worker,
# raw.
raw_rate() {
  # The perf tool prints a CSV line whose sixth field is nMsg.sec.
  scripts/kafka.sh tool org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$BROKERS" \
    --topic "$topic" --messages "$N" --group "bench-$$-$RANDOM$RANDOM" 2>/dev/null |
    tail -n 1 | cut -d, -f6 | tr -d ' '
}
dataflow_rate() {
  "$BIN/dataflow" --brokers "$BROKERS" --input-topic "$topic" --until-caught-up --quiet \
    --progress 0 --no-lakehouse -w "$1" --alerts-topic "$topic-alerts" \
    --dead-letter-topic "$topic-dead" 2>&1 | read_rate
}
ratios=()
for r in $(seq 1 "$ROUNDS"); do
  reader=$(KAFKA_BROKERS="$BROKERS" "$BIN/consume" "$topic" 2 2>/dev/null | cut -d' ' -f4)
  printf '%-6s %-44s %12s\n' "$r" "the dataflow's Kafka reader alone, 2 threads" "$reader"
  before=$(raw_rate)
  printf '%-6s %-44s %12.0f\n' "$r" "raw consume (ConsumerPerformance)" "$before"
  for w in 2 1; do
    rate=$(dataflow_rate "$w")
    after=$(raw_rate)
    ratio=$(python3 -c "print(f'{2 * $rate / ($before + $after):.2f}')")
    ratios+=("$w $ratio")
    printf '%-6s %-44s %12s  (%s of the raw runs around it)\n' "$r" "dataflow, $w worker(s)" \
      "$rate" "$ratio"
    printf '%-6s %-44s %12.0f\n' "$r" "raw consume (ConsumerPerformance)" "$after"
    before=$after
  done
done
# The ratios over the rounds: least, median, most.
for w in 2 1; do
  printf '%s\n' "${ratios[@]}" | awk -v w="$w" '$1 == w { print $2 }' | sort -n |
    awk -v w="$w" '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "dataflow, %d worker(s) / raw over %d rounds: %.2f - %.2f, median %.2f\n", w, NR, v[1], v[NR], m }'
done
