#!/usr/bin/env bash
# Generator throughput, end to end through the real binary:
#   - to a file (JSON lines),
#   - to the local Kafka broker, beside Kafka's own kafka-producer-perf-test
#     (org.apache.kafka.tools.ProducerPerformance) with the same record size and producer
#     settings (acks=all, idempotence, linger.ms=10), measured in the same run.
# Usage: scripts/bench-generator.sh [RECORDS] [ROUNDS]      (defaults: 2000000 3)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000000}"
ROUNDS="${2:-3}"
BROKERS="${KAFKA_BROKERS:-127.0.0.1:${KAFKA_PORT:-9092}}"
GEN=target/release/generator
OUT="$(mktemp -d)"
# The topics go when the script does: a few hundred MB a million records.
trap 'scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" \
  --delete --topic "bench-(generator|perf)-[0-9]+-$$" >/dev/null 2>&1 || true; rm -rf "$OUT"' EXIT

cargo build --release -p generator >&2
[[ -n "${KAFKA_BROKERS:-}" ]] || scripts/kafka.sh start

rate() { python3 -c "import sys; print(f'{int(sys.argv[1]) / float(sys.argv[2]):.0f}')" "$@"; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$@"; }

# One file run first, to learn the average record size for the perf tool.
"$GEN" --seed 1 --count "$N" --rate 0 --progress 0 --output "$OUT/records.jsonl"
BYTES=$(($(stat -c %s "$OUT/records.jsonl") - N))   # minus the newlines
SIZE=$((BYTES / N))
echo "records: $N, average record size: $SIZE bytes"
printf '%-6s %-28s %12s\n' round what records/s

for r in $(seq 1 "$ROUNDS"); do
  t0=$(now)
  "$GEN" --seed "$r" --count "$N" --rate 0 --progress 0 --output "$OUT/records.jsonl"
  printf '%-6s %-28s %12s\n' "$r" "generator -> file" "$(rate "$N" "$(elapsed "$t0" "$(now)")")"

  topic="bench-generator-$r-$$"
  # Create both topics outside the timed part: auto-creation would be timed otherwise.
  for t in "$topic" "bench-perf-$r-$$"; do
    scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" \
      --create --topic "$t" --partitions 4 --replication-factor 1 >/dev/null
  done
  t0=$(now)
  "$GEN" --seed "$r" --count "$N" --rate 0 --progress 0 --brokers "$BROKERS" --topic "$topic"
  printf '%-6s %-28s %12s\n' "$r" "generator -> kafka" "$(rate "$N" "$(elapsed "$t0" "$(now)")")"

  # The perf tool reports its own rate on its last line: "N records sent, R records/sec ...".
  line=$(scripts/kafka.sh tool org.apache.kafka.tools.ProducerPerformance \
    --topic "bench-perf-$r-$$" --num-records "$N" --record-size "$SIZE" --throughput -1 \
    --bootstrap-server "$BROKERS" --command-property acks=all --command-property enable.idempotence=true \
      --command-property linger.ms=10 --command-property batch.size=1000000 2>/dev/null | tail -n 1)
  printf '%-6s %-28s %12s\n' "$r" "kafka-producer-perf-test" "$(echo "$line" | sed -E 's/.*sent, ([0-9.]+) records\/sec.*/\1/' | cut -d. -f1)"
done
