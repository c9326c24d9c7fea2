#!/usr/bin/env bash
# Local Apache Kafka broker for tests: one KRaft node (broker + controller) on 127.0.0.1.
#
# Kafka is pinned to 3.9.1, not 4.x: Kafka 4.0 removed old protocol API versions
# that the Python clients used here (aiokafka under faust-streaming, kafka-python)
# still send. The jars come from Maven Central (deploy/local/kafka/pom.xml), so no
# binary tarball download is needed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: ${0##*/} {fetch|start|stop|status|reset|topics [ARGS...]|scram-password}

  fetch   resolve the Kafka 3.9.1 jars with Maven into the cache (skipped when cached)
  start   fetch if needed, format storage once, start the broker, wait until it answers and coordinates consumer groups
  stop    SIGTERM, wait up to 30s, then SIGKILL (fine if not running)
  status  exit 0 if the broker answers a real API call
  reset   stop and delete the broker's state (topics, offsets, logs, cluster id)
  topics  run kafka-topics (TopicCommand) against it, e.g.: topics --list
  scram-password  print the local SCRAM password of user 'socialroi' (SASL listener)

environment:
  SOCIALROI_KAFKA_PORT             client listener   (default 19092)
  SOCIALROI_KAFKA_CONTROLLER_PORT  KRaft controller  (default 19093)
  SOCIALROI_KAFKA_SASL_PORT        SASL_PLAINTEXT + SCRAM-SHA-256 listener (default 19094)
  SOCIALROI_KAFKA_HEAP             broker JVM heap   (default '-Xmx512m -Xms256m')
  SOCIALROI_STATE_DIR              state root (default <repo>/.local; kafka/ inside)
  SOCIALROI_CACHE_DIR              jar cache  (default ~/.cache/socialroi)"

KAFKA_VERSION=3.9.1
PORT=${SOCIALROI_KAFKA_PORT:-19092}
CONTROLLER_PORT=${SOCIALROI_KAFKA_CONTROLLER_PORT:-19093}
SASL_PORT=${SOCIALROI_KAFKA_SASL_PORT:-19094}
SCRAM_USER=socialroi
BOOTSTRAP=127.0.0.1:$PORT
POM=$LOCAL_DIR/kafka/pom.xml
LIBS=$CACHE_DIR/kafka-$KAFKA_VERSION/libs
RUN_DIR=$STATE_DIR/kafka
DATA_DIR=$RUN_DIR/data
LOG_DIR=$RUN_DIR/logs
PIDFILE=$RUN_DIR/kafka.pid
CONF=$RUN_DIR/server.properties
# LOCAL TEST credential, generated once per state dir (never a production password).
SCRAM_PASSWORD_FILE=$RUN_DIR/scram-$SCRAM_USER.password
SERVICE=kafka
ADDRESS=$BOOTSTRAP
PORTS=("$PORT" "$SASL_PORT" "$CONTROLLER_PORT")
PORT_SETTINGS="SOCIALROI_KAFKA_PORT / SOCIALROI_KAFKA_SASL_PORT / SOCIALROI_KAFKA_CONTROLLER_PORT"
SERVICE_LOGS=("$LOG_DIR/server.log:40" "$LOG_DIR/kafka.out:20")
RESTART_HINT="${0##*/} stop (or reset to wipe its data) and start again"

# Java for the CLI tools: small heap, fast start-up, warnings only.
KAFKA_TOOL=(java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC
    "-Dlog4j.configuration=file:$LOCAL_DIR/kafka/tools-log4j.properties" -cp "$LIBS/*")

pom_hash() {
    sha256sum <"$POM" | cut -d' ' -f1
}

need_java() {
    command -v java >/dev/null || apt_install openjdk-17-jre-headless
}

cmd_fetch() {
    need_java
    if [[ -f $LIBS/.complete && $(<"$LIBS/.complete") == "$(pom_hash)" ]]; then
        log kafka "jars already in $LIBS"
        return 0
    fi
    command -v mvn >/dev/null || apt_install maven
    local tmp="$LIBS.tmp.$$" mvn_log="$LIBS.maven.log"
    rm -rf "$tmp"
    mkdir -p "$(dirname "$LIBS")"
    log kafka "resolving Kafka $KAFKA_VERSION runtime jars with Maven into $LIBS"
    if ! mvn -B -q -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime "-DoutputDirectory=$tmp" >"$mvn_log" 2>&1 ||
        [[ ! -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]]; then
        rm -rf "$tmp"
        show_log kafka "$mvn_log" 30
        die "Maven could not resolve $POM (needs Maven Central); rerun: ${0##*/} fetch"
    fi
    pom_hash >"$tmp/.complete"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    log kafka "$(find "$LIBS" -name '*.jar' | wc -l) jars cached"
}

# True if the broker answers a metadata request (not just a TCP connect).
answers() {
    port_open 127.0.0.1 "$PORT" &&
        timeout 30 "${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
            --command-config "$LOCAL_DIR/kafka/admin.properties" --list >/dev/null 2>&1
}

# True once consumer groups can be coordinated: asking for a group's coordinator creates
# __consumer_offsets on a fresh broker, and until it is up every consumer group's first
# join fails (aiokafka logs that as an ERROR). The tool exits 0 either way, so read it
# (whole: an early-exiting grep on a pipe would fail the pipeline under pipefail).
groups_coordinated() {
    local out
    out=$(timeout 60 "${KAFKA_TOOL[@]}" org.apache.kafka.tools.consumer.group.ConsumerGroupCommand \
        --bootstrap-server "$BOOTSTRAP" --command-config "$LOCAL_DIR/kafka/admin.properties" \
        --describe --group socialroi-readiness 2>&1) || return 1
    [[ $out == *"does not exist"* ]]
}

configure() {
    mkdir -p "$DATA_DIR" "$LOG_DIR"
    render "$LOCAL_DIR/kafka/server.properties.in" "$CONF" \
        "PORT=$PORT" "SASL_PORT=$SASL_PORT" "CONTROLLER_PORT=$CONTROLLER_PORT" "DATA_DIR=$DATA_DIR"
    render "$LOCAL_DIR/kafka/log4j.properties.in" "$RUN_DIR/log4j.properties" "LOG_DIR=$LOG_DIR"
    if [[ ! -s $RUN_DIR/cluster.id ]]; then
        "${KAFKA_TOOL[@]}" kafka.tools.StorageTool random-uuid | tail -n1 >"$RUN_DIR/cluster.id"
    fi
    if [[ ! -s $SCRAM_PASSWORD_FILE ]]; then
        (umask 077 && od -An -N18 -tx1 /dev/urandom | tr -d ' \n' >"$SCRAM_PASSWORD_FILE")
    fi
    if [[ ! -f $DATA_DIR/meta.properties ]]; then
        log kafka "formatting KRaft storage in $DATA_DIR (cluster id $(<"$RUN_DIR/cluster.id"))"
        "${KAFKA_TOOL[@]}" kafka.tools.StorageTool format -t "$(<"$RUN_DIR/cluster.id")" \
            -c "$CONF" --ignore-formatted \
            --add-scram "SCRAM-SHA-256=[name=$SCRAM_USER,password=$(<"$SCRAM_PASSWORD_FILE")]" >&2
    fi
}

# ensure_scram -- storage formatted before the SASL listener existed has no credential:
# add (or reset) it through the PLAINTEXT listener. Idempotent.
ensure_scram() {
    local have
    have=$("${KAFKA_TOOL[@]}" kafka.admin.ConfigCommand --bootstrap-server "$BOOTSTRAP" \
        --command-config "$LOCAL_DIR/kafka/admin.properties" \
        --describe --entity-type users --entity-name "$SCRAM_USER" 2>/dev/null) || have=
    [[ $have == *SCRAM-SHA-256* ]] && return 0
    log kafka "adding SCRAM-SHA-256 credential for user $SCRAM_USER"
    "${KAFKA_TOOL[@]}" kafka.admin.ConfigCommand --bootstrap-server "$BOOTSTRAP" \
        --command-config "$LOCAL_DIR/kafka/admin.properties" --alter \
        --add-config "SCRAM-SHA-256=[password=$(<"$SCRAM_PASSWORD_FILE")]" \
        --entity-type users --entity-name "$SCRAM_USER" >/dev/null \
        || die "could not add the SCRAM credential for $SCRAM_USER"
}

launch() {
    cmd_fetch
    configure
    log kafka "starting broker on $BOOTSTRAP (controller 127.0.0.1:$CONTROLLER_PORT)"
    # shellcheck disable=SC2086 # SOCIALROI_KAFKA_HEAP holds several JVM flags
    spawn "$PIDFILE" "$LOG_DIR/kafka.out" \
        java ${SOCIALROI_KAFKA_HEAP:--Xmx512m -Xms256m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true "-Dkafka.logs.dir=$LOG_DIR" \
        "-Dlog4j.configuration=file:$RUN_DIR/log4j.properties" \
        -cp "$LIBS/*" kafka.Kafka "$CONF"
}

cmd_start() {
    service_start 60
    if port_open 127.0.0.1 "$SASL_PORT"; then
        ensure_scram
    elif ((SERVICE_WAS_UP)); then
        log kafka "WARNING: no SASL listener on $SASL_PORT (started with an older config); the SASL tests need: ${0##*/} stop, then start"
    else
        die "broker answers on $BOOTSTRAP but not on its SASL port $SASL_PORT (started with an older config?): ${0##*/} stop, then start"
    fi
    wait_ready "$PIDFILE" 90 groups_coordinated || service_failed "broker cannot coordinate consumer groups after 90s"
    ((SERVICE_WAS_UP)) || log kafka "ready on $BOOTSTRAP, SASL/SCRAM on 127.0.0.1:$SASL_PORT (pid $(<"$PIDFILE"))"
}

cmd_scram_password() {
    [[ -s $SCRAM_PASSWORD_FILE ]] || die "no SCRAM password yet: ${0##*/} start creates it"
    cat "$SCRAM_PASSWORD_FILE"
    echo
}

cmd_stop() {
    service_stop
}

cmd_status() {
    service_status
}

cmd_reset() {
    cmd_stop
    rm -rf "$RUN_DIR"
    log kafka "state deleted ($RUN_DIR)"
}

cmd_topics() {
    [[ -f $LIBS/.complete ]] || cmd_fetch
    "${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" "$@"
}

dispatch "$USAGE" "$@"
