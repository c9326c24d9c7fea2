#!/usr/bin/env bash
# Local Prometheus for tests, from Debian's prometheus package, on 127.0.0.1 only.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: ${0##*/} {install|start|stop|status}

  install  apt-get install prometheus (server + promtool) if missing
  start    check the config, start the server (installing it if needed), wait for /-/ready
  stop     SIGTERM, wait up to 30s, then SIGKILL (fine if not running)
  status   exit 0 if /-/ready answers

environment:
  SOCIALROI_PROM_PORT    web/API port (default 19090)
  SOCIALROI_PROM_CONFIG  config file  (default deploy/local/prometheus/prometheus.yml)
  SOCIALROI_STATE_DIR    state root   (default <repo>/.local; prometheus/ inside)"

PORT=${SOCIALROI_PROM_PORT:-19090}
CONFIG=${SOCIALROI_PROM_CONFIG:-$LOCAL_DIR/prometheus/prometheus.yml}
[[ $CONFIG == /* ]] || CONFIG="$PWD/$CONFIG"
URL=http://127.0.0.1:$PORT
RUN_DIR=$STATE_DIR/prometheus
LOG_DIR=$RUN_DIR/logs
PIDFILE=$RUN_DIR/prometheus.pid
SERVICE=prometheus
ADDRESS=$URL
PORTS=("$PORT")
PORT_SETTINGS=SOCIALROI_PROM_PORT
SERVICE_LOGS=("$LOG_DIR/prometheus.log:30")

cmd_install() {
    if command -v prometheus >/dev/null && command -v promtool >/dev/null && command -v curl >/dev/null; then
        return 0
    fi
    local fresh=0
    command -v prometheus >/dev/null || fresh=1
    apt_install prometheus curl
    # Without systemd/policy-rc.d the package could have started its own server on 9090.
    ((fresh == 0)) || stop_package_service prometheus
}

answers() {
    curl -fsS -m 5 "$URL/-/ready" >/dev/null 2>&1
}

launch() {
    promtool check config "$CONFIG" >/dev/null || die "invalid config $CONFIG (see: promtool check config $CONFIG)"
    mkdir -p "$RUN_DIR/data" "$LOG_DIR"
    log prometheus "starting on $URL with $CONFIG"
    spawn "$PIDFILE" "$LOG_DIR/prometheus.log" prometheus \
        "--config.file=$CONFIG" \
        "--storage.tsdb.path=$RUN_DIR/data" \
        --storage.tsdb.retention.time=2d \
        "--web.listen-address=127.0.0.1:$PORT" \
        --web.enable-lifecycle
}

cmd_start() {
    cmd_install
    service_start 60
    ((SERVICE_WAS_UP)) || log prometheus "ready on $URL (pid $(<"$PIDFILE"))"
}

cmd_stop() {
    service_stop
}

cmd_status() {
    service_status
}

dispatch "$USAGE" "$@"
