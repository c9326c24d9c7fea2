#!/usr/bin/env bash
# Local ClickHouse server for tests, from Debian's clickhouse-server package
# (18.16.1 on bookworm, the oldest ClickHouse the project supports), run with our
# own config (deploy/local/clickhouse/) on 127.0.0.1 only. It runs as the
# invoking user (root in CI is fine: 18.16 does not refuse root).
# User 'default' has no password and is limited to loopback and the native protocol (no HTTP
# port): local tests only.
# It is also the one server of the cluster 'socialroi' (clickhouse/cluster.xml) that the
# replicated option (URL ?cluster=socialroi) is tested on: start ZooKeeper first
# (services.sh does), since 18.16 refuses to start with replicated tables and no ZooKeeper.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: ${0##*/} {install|start|stop|status|client [ARGS...]}

  install  apt-get install clickhouse-server clickhouse-client if missing
  start    start the server (installing it if needed), wait until it answers
  stop     SIGTERM, wait up to 30s, then SIGKILL (fine if not running)
  status   exit 0 if 'SELECT version()' answers
  client   run clickhouse-client against it, e.g.: client -q 'SHOW TABLES'

environment:
  SOCIALROI_CH_PORT       native TCP port (default 19000)
  SOCIALROI_CH_INTERSERVER_PORT  replication port (default 19009)
  SOCIALROI_ZK_PORT       ZooKeeper of the cluster option (default 12181, zookeeper.sh)
  SOCIALROI_STATE_DIR     state root (default <repo>/.local; clickhouse/ inside)"

PORT=${SOCIALROI_CH_PORT:-19000}
INTERSERVER_PORT=${SOCIALROI_CH_INTERSERVER_PORT:-19009}
ZK_PORT=${SOCIALROI_ZK_PORT:-12181}
RUN_DIR=$STATE_DIR/clickhouse
CONF_DIR=$RUN_DIR/etc
DATA_DIR=$RUN_DIR/data
LOG_DIR=$RUN_DIR/logs
PIDFILE=$RUN_DIR/clickhouse.pid
SERVER=/usr/sbin/clickhouse-server
SERVICE=clickhouse
ADDRESS=127.0.0.1:$PORT
PORTS=("$PORT" "$INTERSERVER_PORT")
PORT_SETTINGS="SOCIALROI_CH_PORT / SOCIALROI_CH_INTERSERVER_PORT"
SERVICE_LOGS=("$LOG_DIR/clickhouse-server.err.log:30" "$LOG_DIR/stdout.log:10")

cmd_install() {
    if [[ -x $SERVER ]] && command -v clickhouse-client >/dev/null; then
        return 0
    fi
    local fresh=0
    [[ -x $SERVER ]] || fresh=1
    apt_install clickhouse-server clickhouse-client
    # Without systemd/policy-rc.d the package could have started its own server on 9000.
    ((fresh == 0)) || stop_package_service clickhouse-server
    [[ -x $SERVER ]] || die "clickhouse-server still missing after apt-get install"
}

answers() {
    timeout 10 clickhouse-client --host 127.0.0.1 --port "$PORT" -q 'SELECT version()' >/dev/null 2>&1
}

launch() {
    if port_open 127.0.0.1 9000; then
        log clickhouse "note: something (the package's own service?) listens on the default port 9000; ours uses $PORT"
    fi
    mkdir -p "$DATA_DIR" "$LOG_DIR"
    render "$LOCAL_DIR/clickhouse/config.xml" "$CONF_DIR/config.xml" \
        "TCP_PORT=$PORT" "DATA_DIR=$DATA_DIR" "LOG_DIR=$LOG_DIR"
    render "$LOCAL_DIR/clickhouse/users.xml" "$CONF_DIR/users.xml"
    render "$LOCAL_DIR/clickhouse/cluster.xml" "$CONF_DIR/config.d/cluster.xml" \
        "TCP_PORT=$PORT" "ZK_PORT=$ZK_PORT" "INTERSERVER_PORT=$INTERSERVER_PORT"
    log clickhouse "starting server on 127.0.0.1:$PORT (native protocol only)"
    spawn "$PIDFILE" "$LOG_DIR/stdout.log" "$SERVER" "--config-file=$CONF_DIR/config.xml"
}

cmd_start() {
    cmd_install
    service_start 60
    ((SERVICE_WAS_UP)) || log clickhouse "ready on $ADDRESS, version $(clickhouse-client --host 127.0.0.1 --port "$PORT" -q 'SELECT version()')"
}

cmd_stop() {
    service_stop
}

cmd_status() {
    service_status
}

cmd_client() {
    clickhouse-client --host 127.0.0.1 --port "$PORT" "$@"
}

dispatch "$USAGE" "$@"
