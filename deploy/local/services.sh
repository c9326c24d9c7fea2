#!/usr/bin/env bash
# Start/stop every local real service the tests need: Kafka, ZooKeeper (for the replicated
# ClickHouse option), ClickHouse, Prometheus.
# Each is idempotent: 'up' on a running stack just checks it answers.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: ${0##*/} {up|down|status}

  up      install what is missing, start kafka, zookeeper, clickhouse and prometheus, wait
          until each answers
  down    stop prometheus, clickhouse, zookeeper and kafka
  status  exit 0 only if all four answer

Ports and paths: see kafka.sh, zookeeper.sh, clickhouse.sh and prometheus.sh --help."

cmd_up() {
    local start=$SECONDS
    # Installs first, so that any apt-get update runs once.
    bash "$LOCAL_DIR/clickhouse.sh" install
    bash "$LOCAL_DIR/zookeeper.sh" install
    bash "$LOCAL_DIR/prometheus.sh" install
    # kcat: the plain Kafka client the hostile-input tests produce with
    command -v kcat >/dev/null || apt_install kcat
    # chromium: the headless browser the HTML report test renders the report in
    [[ -x /usr/bin/chromium ]] || apt_install chromium
    bash "$LOCAL_DIR/kafka.sh" start
    bash "$LOCAL_DIR/zookeeper.sh" start
    bash "$LOCAL_DIR/clickhouse.sh" start
    bash "$LOCAL_DIR/prometheus.sh" start
    log services "all up in $((SECONDS - start))s (state in $STATE_DIR)"
}

cmd_down() {
    local rc=0
    bash "$LOCAL_DIR/prometheus.sh" stop || rc=1
    bash "$LOCAL_DIR/clickhouse.sh" stop || rc=1
    bash "$LOCAL_DIR/zookeeper.sh" stop || rc=1
    bash "$LOCAL_DIR/kafka.sh" stop || rc=1
    return "$rc"
}

cmd_status() {
    local rc=0 svc
    for svc in kafka zookeeper clickhouse prometheus; do
        bash "$LOCAL_DIR/$svc.sh" status || rc=1
    done
    return "$rc"
}

dispatch "$USAGE" "$@"
