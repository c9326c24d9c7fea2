#!/usr/bin/env bash
# Local ZooKeeper for the replicated-ClickHouse option (ReplicatedReplacingMergeTree,
# ON CLUSTER DDL): one standalone node from Debian's zookeeper package (3.8.0 on
# bookworm), run as a foreground java process with our own zoo.cfg on 127.0.0.1
# only - not the package's service (that is the separate zookeeperd package, which
# we never install). No admin HTTP server; four-letter words limited to ruok,srvr.
#
# Debian's layout: /usr/share/java/zookeeper.jar carries a Class-Path manifest
# listing its dependency jars in /usr/share/java (jute, netty, jetty, slf4j-api...),
# but no slf4j binding, so slf4j-log4j12.jar + log4j-1.2.jar (both pulled in by
# libzookeeper-java) are added here. /etc/zookeeper/conf is only an example config.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: ${0##*/} {install|start|stop|status|cli [ARGS...]}

  install  apt-get install zookeeper (jars only, no service) and a Java runtime if missing
  start    write zoo.cfg, start the server (installing it if needed), wait for 'ruok'
  stop     SIGTERM, wait up to 30s, then SIGKILL (fine if not running)
  status   exit 0 if the server answers 'ruok' with 'imok'; prints 'srvr' output
  cli      run zkCli (ZooKeeperMain) against it, e.g.: cli ls /clickhouse

environment:
  SOCIALROI_ZK_PORT    client port (default 12181)
  SOCIALROI_ZK_HEAP    server JVM heap (default '-Xmx256m -Xms64m')
  SOCIALROI_STATE_DIR  state root (default <repo>/.local; zookeeper/ inside)"

PORT=${SOCIALROI_ZK_PORT:-12181}
RUN_DIR=$STATE_DIR/zookeeper
DATA_DIR=$RUN_DIR/data
LOG_DIR=$RUN_DIR/logs
PIDFILE=$RUN_DIR/zookeeper.pid
CONF=$RUN_DIR/zoo.cfg
LOG4J=$RUN_DIR/log4j.properties
JAVA_DIR=/usr/share/java
CLASSPATH_ZK="$JAVA_DIR/zookeeper.jar:$JAVA_DIR/slf4j-log4j12.jar:$JAVA_DIR/log4j-1.2.jar"
SERVICE=zookeeper
ADDRESS=127.0.0.1:$PORT
PORTS=("$PORT")
PORT_SETTINGS=SOCIALROI_ZK_PORT
SERVICE_LOGS=("$LOG_DIR/zookeeper.log:30" "$LOG_DIR/zookeeper.out:20")

jars_present() {
    local jar
    for jar in zookeeper.jar zookeeper-jute.jar slf4j-log4j12.jar log4j-1.2.jar; do
        [[ -f $JAVA_DIR/$jar ]] || return 1
    done
}

cmd_install() {
    command -v java >/dev/null || apt_install openjdk-17-jre-headless
    jars_present && return 0
    apt_install zookeeper
    jars_present || die "ZooKeeper jars still missing in $JAVA_DIR after apt-get install"
}

# four_letter WORD -- send a 4lw command, print the reply (the server closes after it).
four_letter() {
    # shellcheck disable=SC2016 # $1/$2 are expanded by the inner bash
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf %s "$2" >&3 && cat <&3' \
        _ "$PORT" "$1" 2>/dev/null
}

answers() {
    [[ $(four_letter ruok) == imok ]]
}

configure() {
    mkdir -p "$DATA_DIR" "$LOG_DIR"
    cat >"$CONF" <<EOF
# Written by deploy/local/zookeeper.sh on every start; edits are lost.
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$DATA_DIR
clientPortAddress=127.0.0.1
clientPort=$PORT
maxClientCnxns=200
# No Jetty admin server (it would take 0.0.0.0:8080).
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
# Keep the local data dir small.
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
    cat >"$LOG4J" <<EOF
# Written by deploy/local/zookeeper.sh on every start; edits are lost.
log4j.rootLogger=INFO, ROLLINGFILE
log4j.appender.ROLLINGFILE=org.apache.log4j.RollingFileAppender
log4j.appender.ROLLINGFILE.File=$LOG_DIR/zookeeper.log
log4j.appender.ROLLINGFILE.MaxFileSize=10MB
log4j.appender.ROLLINGFILE.MaxBackupIndex=2
log4j.appender.ROLLINGFILE.layout=org.apache.log4j.PatternLayout
log4j.appender.ROLLINGFILE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n
EOF
}

launch() {
    configure
    log zookeeper "starting standalone server on 127.0.0.1:$PORT (data $DATA_DIR)"
    # shellcheck disable=SC2086 # SOCIALROI_ZK_HEAP holds several JVM flags
    spawn "$PIDFILE" "$LOG_DIR/zookeeper.out" \
        java ${SOCIALROI_ZK_HEAP:--Xmx256m -Xms64m} -XX:+UseG1GC -Djava.awt.headless=true \
        "-Dzookeeper.log.dir=$LOG_DIR" "-Dlog4j.configuration=file:$LOG4J" \
        -Dzookeeper.jmx.log4j.disable=true \
        -cp "$CLASSPATH_ZK" org.apache.zookeeper.server.quorum.QuorumPeerMain "$CONF"
}

cmd_start() {
    cmd_install
    service_start 60
    ((SERVICE_WAS_UP)) || log zookeeper "ready on $ADDRESS (pid $(<"$PIDFILE"))"
}

cmd_stop() {
    service_stop
}

cmd_status() {
    service_status || return 1
    four_letter srvr || true
}

cmd_cli() {
    jars_present || cmd_install
    java -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Dlog4j.rootLogger=WARN \
        -Dzookeeper.root.logger=WARN -Dlog4j.configuration=file:/dev/null \
        -cp "$CLASSPATH_ZK" org.apache.zookeeper.ZooKeeperMain -server "127.0.0.1:$PORT" "$@"
}

dispatch "$USAGE" "$@"
