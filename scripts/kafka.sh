#!/usr/bin/env bash
# A real single-node Apache Kafka broker (4.x, KRaft: no ZooKeeper) for development, tests and CI,
# without Docker: the broker's jars come from Maven Central through `mvn` into a cache outside the
# repository (fetched once), and the node listens on 127.0.0.1 only.
# Run `scripts/kafka.sh help` for the commands and settings.
set -euo pipefail

readonly KAFKA_VERSION=4.3.1
# The SLF4J binding must match the log4j-core that kafka-server 4.3.1 itself pulls in (2.25.4), and
# must be the SLF4J 1.x binding: Kafka 4.3's poms still pin slf4j-api 1.7.36.
readonly LOG4J_VERSION=2.25.4
# Pinned so that every machine resolves the jars the same way, whatever Maven's default is.
readonly DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

CACHE="${KAFKA_HOME_CACHE:-$HOME/.cache/finstream/kafka-$KAFKA_VERSION}"
PORT="${KAFKA_PORT:-9092}"
[[ "$PORT" =~ ^[0-9]+$ ]] || { echo "kafka.sh: KAFKA_PORT must be a number" >&2; exit 1; }
# port+1 rather than a fixed 9093, so that a second broker on another KAFKA_PORT does not collide
# with the default one's controller.
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
DATA="${KAFKA_DATA_DIR:-$CACHE/data-$PORT}"
HEAP="${KAFKA_HEAP:--Xmx512m -Xms256m}"
TOOL_HEAP="${KAFKA_TOOL_HEAP:--Xmx512m}"
PARTITIONS="${KAFKA_PARTITIONS:-4}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

LIB="$CACHE/lib"
PIDFILE="$DATA/broker.pid"
SERVER_LOG="$DATA/server.log"   # the broker's own log (log4j2, rolled at 20 MB)
CONSOLE_LOG="$DATA/broker.out"  # the JVM's stdout/stderr: crashes, and the storage format output

usage() {
  cat <<EOF
Usage: scripts/kafka.sh COMMAND

Runs one Apache Kafka $KAFKA_VERSION broker (KRaft, broker and controller in one process) on
127.0.0.1:$PORT for development, tests and CI. Needs Java 17+ and Maven; the first start fetches
the jars from Maven Central (about 55 MB, once) into $CACHE.

Commands:
  start              fetch the jars and format the storage if not done yet, start the broker and
                     wait until it answers. If it already runs, says so and exits 0.
  stop               stop the broker (SIGTERM; SIGKILL after KAFKA_STOP_TIMEOUT). Idempotent.
  status             print whether it runs; exit 0 if it does, 1 if not
  logs [-f]          print the end of the broker's log (-f: keep following it)
  reset              stop the broker and delete its data (all topics and offsets)
  tool CLASS ARGS    run a Java class on Kafka's classpath, against the running broker, e.g.
    scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:$PORT \\
        --create --topic demo --partitions 4 --replication-factor 1
    scripts/kafka.sh tool org.apache.kafka.tools.ProducerPerformance --bootstrap-server \\
        127.0.0.1:$PORT --topic demo --num-records 100000 --record-size 200 --throughput -1 \\
        --command-property acks=all
    scripts/kafka.sh tool org.apache.kafka.tools.ConsumerPerformance --bootstrap-server \\
        127.0.0.1:$PORT --topic demo --num-records 100000
    scripts/kafka.sh tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server \\
        127.0.0.1:$PORT --topic demo --from-beginning --max-messages 5
  help               this text

Environment (default in brackets):
  KAFKA_PORT             client port, PLAINTEXT [9092]
  KAFKA_CONTROLLER_PORT  KRaft controller port [KAFKA_PORT + 1]
  KAFKA_PARTITIONS       partitions of auto-created topics [4]
  KAFKA_HEAP             broker JVM heap flags [-Xmx512m -Xms256m]
  KAFKA_TOOL_HEAP        heap flags for 'tool' [-Xmx512m]
  KAFKA_START_TIMEOUT    seconds 'start' waits for the broker to answer [90]
  KAFKA_STOP_TIMEOUT     seconds 'stop' waits before SIGKILL [30]
  KAFKA_HOME_CACHE       jars and data [~/.cache/finstream/kafka-$KAFKA_VERSION]
  KAFKA_DATA_DIR         this broker's config, data, logs and pid [KAFKA_HOME_CACHE/data-PORT]
  JAVA_HOME              the Java to use [java on PATH]

Files in KAFKA_DATA_DIR: server.properties, server.log (the broker's log), broker.out (JVM
output), broker.pid, kafka-logs/ (partition data).
EOF
}

say() { echo "kafka.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# EPOCHREALTIME's separator follows the locale (a comma in some), hence "all but digits".
now_ms() { echo $(( ${EPOCHREALTIME//[!0-9]/} / 1000 )); }
since() { local ms=$(( $(now_ms) - $1 )); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }

# Serialises start, stop and the first fetch between concurrent callers (parallel test binaries,
# two terminals). flock is optional: without it we just take our chances.
lock() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  if command -v flock >/dev/null; then flock 9; fi
}

need_java() {
  command -v "$JAVA" >/dev/null \
    || die "Java 17+ is needed: apt-get install -y openjdk-17-jre-headless (or set JAVA_HOME)"
  local v
  v=$("$JAVA" -version 2>&1 | sed -nE '1s/.*version "([0-9]+).*/\1/p')
  [[ "${v:-0}" -ge 17 ]] || die "Kafka $KAFKA_VERSION needs Java 17+, $JAVA is ${v:-unknown}"
}

pom() {
  cat <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.finstream</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- ProducerPerformance, ConsumerPerformance, TopicCommand, the console tools. -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- Kafka logs through SLF4J; without a binding every log line is dropped. -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
}

# The jars, once per cache. The marker is the POM they came from, so that a change to the list
# above refetches instead of running on a stale classpath.
fetch() {
  if [[ -f "$LIB/.pom" && "$(cat "$LIB/.pom")" == "$(pom)" ]]; then return 0; fi
  command -v mvn >/dev/null || die "Maven is needed to fetch Kafka: apt-get install -y maven"
  say "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIB (first run only)..."
  local t0
  t0=$(now_ms)
  pom >"$CACHE/pom.xml"
  rm -rf "$LIB.partial"
  # Maven's own output goes to a file: on success it is noise (and colour codes even with -B).
  if ! (cd "$CACHE" && mvn -B -Dstyle.color=never "$DEPENDENCY_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$LIB.partial") >"$CACHE/mvn.log" 2>&1; then
    grep -E "ERROR|FAIL" "$CACHE/mvn.log" | head -n 20 >&2 || true
    die "Maven could not fetch the jars (full output: $CACHE/mvn.log); run again to retry"
  fi
  rm -rf "$LIB"
  mv "$LIB.partial" "$LIB"
  pom >"$LIB/.pom"
  say "fetched $(find "$LIB" -name '*.jar' | wc -l) jars ($(du -sh "$LIB" | cut -f1)) in $(since "$t0")"
}

# Two logging setups: the broker logs INFO to a rolling file in its data dir; tools log only
# warnings, to stderr, so that their results on stdout stay parseable.
write_log_configs() {
  cat >"$CACHE/log4j2-broker.properties" <<'EOF'
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
# One line per request otherwise.
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
  cat >"$CACHE/log4j2-tools.properties" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
}

write_server_properties() {
  mkdir -p "$DATA"
  cat >"$DATA/server.properties" <<EOF
# Written by scripts/kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
# A dynamic KRaft quorum of one (formatted with --standalone), as Kafka 4's quickstart does.
controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA/kafka-logs

num.partitions=$PARTITIONS
auto.create.topics.enable=true
# One node: internal topics cannot have more than one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# The default 50 partitions per internal topic make the first consumer group or transaction
# wait for 50 partitions to be created; a few are plenty for one node.
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4
share.coordinator.state.topic.num.partitions=4
# Tests join groups constantly; the default 3 s delay would be added to each first join.
group.initial.rebalance.delay.ms=0
# A development broker: benchmarks would otherwise fill the disk for a week.
log.retention.hours=24
EOF
}

# A Kafka cluster id is a base64url UUID (22 characters). One starting with '-' would be read as
# an option by the storage tool, so Kafka never makes one; neither do we.
cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ "$id" != -* ]] && { echo "$id"; return; }
  done
}

# KRaft storage must be formatted before the first start, and only then: formatting again would
# give the node a new cluster id that no longer matches its data.
format_storage() {
  [[ -f "$DATA/kafka-logs/meta.properties" ]] && return 0
  say "formatting KRaft storage in $DATA/kafka-logs"
  # shellcheck disable=SC2086  # TOOL_HEAP holds several JVM flags on purpose.
  "$JAVA" $TOOL_HEAP -Dlog4j2.configurationFile="$CACHE/log4j2-tools.properties" -cp "$LIB/*" \
      kafka.tools.StorageTool format --standalone --cluster-id "$(cluster_id)" \
      --config "$DATA/server.properties" >>"$CONSOLE_LOG" 2>&1 9>&- \
    || { say "formatting the storage failed:"; tail -n 20 "$CONSOLE_LOG" >&2; exit 1; }
}

# The pid of the broker this script started for this data dir, if it is alive. The command line
# is checked so that a recycled pid is not mistaken for the broker.
our_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid cmd
  pid=$(cat "$PIDFILE")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
  else
    cmd=$(ps -o args= -p "$pid" 2>/dev/null) || return 1
  fi
  [[ "$cmd" == *kafka.Kafka*"$DATA/server.properties"* ]] || return 1
  echo "$pid"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Whether a Kafka broker serves requests on the client port: sends an ApiVersions request (v0,
# client id "probe") and waits for the 4-byte length of its reply. A bare TCP connect is not
# enough: Kafka binds the port early but serves requests only once it has caught up with the
# metadata and is unfenced, i.e. ready for clients. Costs milliseconds, unlike a JVM tool.
answering() {
  # shellcheck disable=SC2016  # expanded by the inner bash, which gets the port as $1.
  timeout 3 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "\x00\x00\x00\x0f\x00\x12\x00\x00\x00\x00\x00\x01\x00\x05probe" >&3
    [[ $(head -c 4 <&3 | wc -c) -eq 4 ]]
  ' _ "$PORT" 2>/dev/null
}

start() {
  lock
  local pid
  if pid=$(our_pid) && answering; then
    say "already running on 127.0.0.1:$PORT (pid $pid)"
    return 0
  fi
  if [[ -z "${pid:-}" ]]; then
    rm -f "$PIDFILE"
    local p
    for p in "$PORT" "$CONTROLLER_PORT"; do
      if port_open "$p"; then
        die "another process listens on 127.0.0.1:$p (not a broker this script started for" \
          "$DATA); stop it, or use another KAFKA_PORT"
      fi
    done
    need_java
    fetch
    write_log_configs
    write_server_properties
    format_storage
    say "starting Kafka $KAFKA_VERSION on 127.0.0.1:$PORT (log: $SERVER_LOG)"
    # The log is appended to across restarts; this line shows where this run begins.
    echo "===== scripts/kafka.sh start $(date '+%F %T') =====" >>"$SERVER_LOG"
    # setsid: its own session, so that a Ctrl-C meant for the test run that started it does not
    # also kill the broker. fd 9 (the lock) must not be inherited, or the lock lives on with it.
    local detach=()
    if command -v setsid >/dev/null; then detach=(setsid); fi
    # shellcheck disable=SC2086  # HEAP holds several JVM flags on purpose.
    "${detach[@]}" nohup "$JAVA" $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dkafka.logs.dir="$DATA" -Dlog4j2.configurationFile="$CACHE/log4j2-broker.properties" \
        -cp "$LIB/*" kafka.Kafka "$DATA/server.properties" \
        >>"$CONSOLE_LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    echo "$pid" >"$PIDFILE"
  else
    say "pid $pid is running but not answering yet; waiting for it"
  fi
  local t0
  t0=$(now_ms)
  until answering; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "the broker exited during start-up; end of $SERVER_LOG and $CONSOLE_LOG:"
      tail -n 30 "$SERVER_LOG" "$CONSOLE_LOG" >&2 2>/dev/null || true
      rm -f "$PIDFILE"
      exit 1
    fi
    if (( $(now_ms) - t0 > START_TIMEOUT * 1000 )); then
      say "no answer on 127.0.0.1:$PORT after $START_TIMEOUT s (pid $pid left running for" \
        "inspection; 'scripts/kafka.sh stop' ends it); end of $SERVER_LOG:"
      tail -n 40 "$SERVER_LOG" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.2
  done
  say "ready on 127.0.0.1:$PORT after $(since "$t0") (pid $pid, data $DATA)"
}

stop() {
  lock
  local pid
  if ! pid=$(our_pid); then
    rm -f "$PIDFILE"
    say "not running"
    return 0
  fi
  say "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local t0
  t0=$(now_ms)
  while kill -0 "$pid" 2>/dev/null; do
    if (( $(now_ms) - t0 > STOP_TIMEOUT * 1000 )); then
      say "still running after $STOP_TIMEOUT s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$PIDFILE"
  say "stopped after $(since "$t0")"
}

status() {
  local pid
  if pid=$(our_pid); then
    if answering; then
      echo "running on 127.0.0.1:$PORT (pid $pid, data $DATA)"
      return 0
    fi
    echo "not answering on 127.0.0.1:$PORT (pid $pid is alive: starting, stopping or stuck)"
    return 1
  fi
  echo "not running (127.0.0.1:$PORT, data $DATA)"
  return 1
}

reset() {
  stop
  [[ -e "$DATA" ]] || { say "nothing to delete at $DATA"; return 0; }
  # KAFKA_DATA_DIR may point anywhere; delete only what is recognisably ours.
  [[ -f "$DATA/server.properties" || -z "$(ls -A "$DATA")" ]] \
    || die "$DATA does not look like a data dir of this script; not deleting it"
  rm -rf "$DATA"
  say "deleted $DATA"
}

tool() {
  [[ $# -ge 1 ]] || die "usage: scripts/kafka.sh tool CLASS [ARGS...]"
  need_java
  lock
  fetch
  write_log_configs
  exec 9>&-
  # shellcheck disable=SC2086  # TOOL_HEAP holds several JVM flags on purpose.
  exec "$JAVA" $TOOL_HEAP -Dlog4j2.configurationFile="$CACHE/log4j2-tools.properties" \
    -cp "$LIB/*" "$@"
}

logs() {
  [[ -f "$SERVER_LOG" ]] || die "no log yet at $SERVER_LOG"
  if [[ "${1:-}" == "-f" ]]; then
    exec tail -n 50 -F "$SERVER_LOG"
  fi
  tail -n 100 "$SERVER_LOG"
}

[[ "$CONTROLLER_PORT" =~ ^[0-9]+$ ]] || die "KAFKA_CONTROLLER_PORT must be a number"
[[ "$PORT" != "$CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"

cmd="${1:-help}"
if (($#)); then shift; fi
case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  logs) logs "$@" ;;
  reset) reset ;;
  tool) tool "$@" ;;
  help | -h | --help) usage ;;
  *) usage >&2; exit 2 ;;
esac
