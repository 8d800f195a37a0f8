#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, no ZooKeeper) for development, tests and CI,
# without Docker: the broker's jars come from Maven Central through Maven into a cache outside
# the repository, and the node listens on 127.0.0.1 only.
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
LOG4J_VERSION=2.25.4
CACHE="${KAFKA_HOME_CACHE:-$HOME/.cache/finstream/kafka-$KAFKA_VERSION}"
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
DATA="${KAFKA_DATA_DIR:-$CACHE/data-$PORT}"
HEAP="${KAFKA_HEAP:--Xmx512m -Xms128m}"
PARTITIONS="${KAFKA_PARTITIONS:-4}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
PIDFILE="$DATA/broker.pid"
LOG="$DATA/broker.log"

usage() {
  cat <<EOF
Usage: scripts/kafka.sh COMMAND

A single-node Apache Kafka $KAFKA_VERSION broker (KRaft) on 127.0.0.1:$PORT, for development,
tests and CI. The first start fetches the broker from Maven Central (about 100 MB, cached).

Commands:
  start              fetch (first time only), format storage (first time only), start, wait
                     until the broker answers. Does nothing if it is already running.
  stop               stop the broker (SIGTERM, then SIGKILL after 30 s)
  status             say whether it runs; exit 0 if it does, 1 if not
  logs               follow the broker's log
  reset              stop and delete its data (topics, offsets)
  tool CLASS ARGS    run a Kafka tool class on the broker's classpath, e.g.
                       scripts/kafka.sh tool org.apache.kafka.tools.ProducerPerformance --help

Environment (defaults in brackets):
  KAFKA_PORT [9092]  KAFKA_CONTROLLER_PORT [port+1]  KAFKA_PARTITIONS [4] (for new topics)
  KAFKA_HEAP [-Xmx512m -Xms128m]  KAFKA_START_TIMEOUT [90 s]
  KAFKA_HOME_CACHE [~/.cache/finstream/kafka-VERSION]  KAFKA_DATA_DIR [cache/data-PORT]
EOF
}

say() { echo "kafka.sh: $*" >&2; }

# The jars, once: a throwaway POM whose dependencies are the broker and its tools.
fetch() {
  [[ -f "$CACHE/lib/.complete" ]] && return 0
  command -v mvn >/dev/null || { say "Maven (mvn) is needed to fetch Kafka: apt-get install -y maven"; exit 1; }
  command -v java >/dev/null || { say "Java 17+ is needed to run Kafka: apt-get install -y openjdk-17-jre-headless"; exit 1; }
  say "fetching Kafka $KAFKA_VERSION from Maven Central into $CACHE (first run only)..."
  mkdir -p "$CACHE"
  cat >"$CACHE/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.finstream</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- Kafka logs through SLF4J; without a binding it prints nothing useful. -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$CACHE/lib"
  (cd "$CACHE" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$CACHE/lib") >&2
  cat >"$CACHE/log4j2.properties" <<'EOF'
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
EOF
  touch "$CACHE/lib/.complete"
}

java_run() {
  # shellcheck disable=SC2086  # HEAP holds several JVM flags on purpose.
  java $HEAP -Dlog4j2.configurationFile="$CACHE/log4j2.properties" -cp "$CACHE/lib/*" "$@"
}

running() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

# Whether something accepts connections on the broker's port.
answering() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

configure() {
  mkdir -p "$DATA"
  cat >"$DATA/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA/logs
num.partitions=$PARTITIONS
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
EOF
  if [[ ! -f "$DATA/logs/meta.properties" ]]; then
    local id
    id=$(java_run kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    java_run kafka.tools.StorageTool format --standalone -t "$id" -c "$DATA/server.properties" >>"$LOG" 2>&1 \
      || { say "formatting storage failed:"; tail -n 20 "$LOG" >&2; exit 1; }
  fi
}

start() {
  if running && answering; then
    say "already running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
    return 0
  fi
  if answering; then
    say "something else already listens on 127.0.0.1:$PORT; set KAFKA_PORT to use another port"
    exit 1
  fi
  fetch
  configure
  local t0=$SECONDS
  say "starting Kafka $KAFKA_VERSION on 127.0.0.1:$PORT (log: $LOG)"
  # shellcheck disable=SC2086  # HEAP holds several JVM flags on purpose.
  nohup java $HEAP -Dlog4j2.configurationFile="$CACHE/log4j2.properties" -cp "$CACHE/lib/*" \
    kafka.Kafka "$DATA/server.properties" >>"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  # Ready means the broker serves metadata, not merely that the port is open.
  until answering && java_run org.apache.kafka.tools.BrokerApiVersionsCommand \
      --bootstrap-server "127.0.0.1:$PORT" >/dev/null 2>&1; do
    if ! running; then
      say "the broker exited during start-up:"; tail -n 30 "$LOG" >&2; exit 1
    fi
    if (( SECONDS - t0 > START_TIMEOUT )); then
      say "no answer after $START_TIMEOUT s:"; tail -n 30 "$LOG" >&2; exit 1
    fi
    sleep 0.5
  done
  say "ready on 127.0.0.1:$PORT after $((SECONDS - t0)) s (pid $(cat "$PIDFILE"))"
}

stop() {
  if ! running; then
    say "not running"
    rm -f "$PIDFILE"
    return 0
  fi
  local pid
  pid=$(cat "$PIDFILE")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "did not stop within 30 s: killing"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
  say "stopped"
}

case "${1:-help}" in
  start) start ;;
  stop) stop ;;
  status)
    if running && answering; then echo "running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; else echo "not running"; exit 1; fi ;;
  logs) tail -n 50 -f "$LOG" ;;
  reset) stop; rm -rf "$DATA"; say "deleted $DATA" ;;
  tool) shift; fetch; java_run "$@" ;;
  help|-h|--help) usage ;;
  *) usage >&2; exit 2 ;;
esac
