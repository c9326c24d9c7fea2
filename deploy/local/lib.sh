# shellcheck shell=bash
# Shared helpers for deploy/local/*.sh. Source it, do not run it:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Environment (all optional):
#   SOCIALROI_STATE_DIR  runtime state: data, logs, pid files (default <repo>/.local, git-ignored)
#   SOCIALROI_CACHE_DIR  downloads reused across runs (default $HOME/.cache/socialroi)

LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$LOCAL_DIR/../.." && pwd)"
STATE_DIR="${SOCIALROI_STATE_DIR:-$REPO_ROOT/.local}"
CACHE_DIR="${SOCIALROI_CACHE_DIR:-${HOME:-/root}/.cache/socialroi}"
[[ $STATE_DIR == /* ]] || STATE_DIR="$PWD/$STATE_DIR"
[[ $CACHE_DIR == /* ]] || CACHE_DIR="$PWD/$CACHE_DIR"
export LOCAL_DIR REPO_ROOT STATE_DIR CACHE_DIR
LOG_TAG=$(basename "$0" .sh)

# log TAG MESSAGE...  -- progress/status lines go to stderr so stdout stays clean.
log() {
    local tag=$1
    shift
    printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "$tag" "$*" >&2
}

die() {
    log "$LOG_TAG" "ERROR: $*"
    exit 1
}

# port_open HOST PORT -- true if a TCP connect succeeds (bash /dev/tcp, no nc needed).
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# wait_until TIMEOUT_SECONDS COMMAND... -- poll COMMAND every second until it succeeds.
wait_until() {
    local timeout=$1
    shift
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

# proc_running PID -- true if PID is a live, non-zombie process.
proc_running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != [ZX] ]]
}

# pid_alive PIDFILE -- true if PIDFILE names a live process of ours: its command
# line mentions STATE_DIR, so a stale pid file whose pid was reused does not count.
pid_alive() {
    local pid cmdline
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && proc_running "$pid" || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$STATE_DIR"* ]]
}

# wait_ready PIDFILE TIMEOUT_SECONDS COMMAND... -- poll COMMAND every second until it
# succeeds; give up early if the process in PIDFILE dies. (Checks the bare pid, not
# pid_alive: right after spawn the child may not have exec'd its command yet.)
wait_ready() {
    local pid deadline=$((SECONDS + $2))
    pid=$(<"$1")
    shift 2
    while ((SECONDS < deadline)); do
        proc_running "$pid" || return 1
        "$@" && return 0
        sleep 1
    done
    return 1
}

# spawn PIDFILE OUTFILE COMMAND... -- start COMMAND detached from this shell
# (own session, immune to SIGHUP), stdout+stderr appended to OUTFILE.
spawn() {
    local pidfile=$1 outfile=$2
    shift 2
    mkdir -p "$(dirname "$pidfile")" "$(dirname "$outfile")"
    setsid nohup "$@" >>"$outfile" 2>&1 </dev/null &
    echo $! >"$pidfile"
}

proc_gone() {
    ! proc_running "$1"
}

# stop_pidfile NAME PIDFILE [GRACE_SECONDS] -- SIGTERM, wait, then SIGKILL.
# Succeeds if the process is not running.
stop_pidfile() {
    local name=$1 pidfile=$2 grace=${3:-30} pid
    if ! pid_alive "$pidfile"; then
        rm -f "$pidfile"
        log "$name" "not running"
        return 0
    fi
    pid=$(<"$pidfile")
    log "$name" "stopping (pid $pid, SIGTERM, up to ${grace}s)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_until "$grace" proc_gone "$pid"; then
        log "$name" "still running after ${grace}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_until 10 proc_gone "$pid" || die "$name: pid $pid survived SIGKILL"
    fi
    rm -f "$pidfile"
    log "$name" "stopped"
}

# render TEMPLATE OUTPUT NAME=VALUE... -- copy TEMPLATE replacing every @NAME@ with VALUE.
render() {
    local template=$1 output=$2 text kv
    shift 2
    text=$(<"$template")
    for kv in "$@"; do
        # Quoted pattern and replacement: no globbing, no bash 5.2 '&' substitution.
        text=${text//"@${kv%%=*}@"/"${kv#*=}"}
    done
    if [[ $text =~ @[A-Z_]+@ ]]; then
        die "render $template: unreplaced placeholder ${BASH_REMATCH[0]}"
    fi
    mkdir -p "$(dirname "$output")"
    printf '%s\n' "$text" >"$output"
}

# show_log NAME FILE [LINES] -- print the tail of a log for failure reports.
show_log() {
    local name=$1 file=$2 lines=${3:-40}
    if [[ -s $file ]]; then
        log "$name" "last $lines lines of $file:"
        tail -n "$lines" "$file" >&2
    else
        log "$name" "no log at $file"
    fi
}

# apt_install PACKAGE... -- non-interactive install, waiting for the dpkg lock
# (another apt may be running) and running 'apt-get update' only when a package
# has no install candidate yet. Returns 0 if every package is installed.
apt_install() {
    local -a missing=()
    local pkg
    for pkg in "$@"; do
        [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == 'install ok installed' ]] || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) -eq 0 ]] || die "need root to apt-get install ${missing[*]}"
    local -a apt=(apt-get -q -y -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
    for pkg in "${missing[@]}"; do
        if [[ $(apt-cache policy "$pkg" 2>/dev/null) != *'Candidate: '[0-9]* ]]; then
            log apt "apt-get update (no candidate for $pkg)"
            DEBIAN_FRONTEND=noninteractive "${apt[@]}" update >&2
            break
        fi
    done
    log apt "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2
}

# stop_package_service NAME -- a freshly installed Debian package may start its
# own service on the default ports; stop and disable it (ours runs separately).
stop_package_service() {
    local svc=$1
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/$svc ]] && "/etc/init.d/$svc" status >/dev/null 2>&1; then
        log "$svc" "stopping the package's own init.d service"
        "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
}

# -- a service's start and status, shared by kafka.sh, zookeeper.sh, clickhouse.sh and
# prometheus.sh. Each describes its service with:
#   SERVICE        log tag (kafka, zookeeper, ...)
#   PIDFILE        pid file of the running server
#   ADDRESS        where it answers, for messages (127.0.0.1:19000, http://...)
#   LOG_DIR        its logs
#   PORTS          array: the ports it listens on, which must be free before it starts
#   PORT_SETTINGS  the variables that choose those ports, named when one is taken
#   SERVICE_LOGS   array of FILE:LINES, the log tails that explain a failed start
#   RESTART_HINT   optional: what to do after a failed start (default: stop, start again)
# and the functions:
#   answers        true once the service serves requests
#   launch         write its config and spawn it (its ports are known to be free)

# service_start TIMEOUT_SECONDS -- start the service unless it already answers, and wait
# until it does. Sets SERVICE_WAS_UP to 1 when it already answered (it says so), else 0.
# A pid alive but not answering yet is waited for, not started twice. Dies (with the
# log tails) when the service does not answer within the timeout or its process exits.
# shellcheck disable=SC2034,SC2153 # SERVICE_WAS_UP is for the caller; PIDFILE is the caller's
service_start() {
    local timeout=$1 port
    SERVICE_WAS_UP=0
    if pid_alive "$PIDFILE"; then
        if answers; then
            log "$SERVICE" "already running (pid $(<"$PIDFILE")) on $ADDRESS"
            SERVICE_WAS_UP=1
            return 0
        fi
        log "$SERVICE" "running (pid $(<"$PIDFILE")) but not answering yet, waiting"
    else
        for port in "${PORTS[@]}"; do
            ! port_open 127.0.0.1 "$port" || die "port $port is taken by another process (set $PORT_SETTINGS)"
        done
        launch
    fi
    wait_ready "$PIDFILE" "$timeout" answers || service_failed "no answer on $ADDRESS within ${timeout}s"
}

# service_failed MESSAGE -- show the service's log tails, then die with MESSAGE and what
# to do next.
service_failed() {
    local entry
    for entry in "${SERVICE_LOGS[@]}"; do
        show_log "$SERVICE" "${entry%:*}" "${entry##*:}"
    done
    die "$1; see $LOG_DIR/, then: ${RESTART_HINT:-${0##*/} stop and start again}"
}

# service_status -- say whether the service runs and answers; exit status 0 when it does.
service_status() {
    if pid_alive "$PIDFILE" && answers; then
        log "$SERVICE" "up on $ADDRESS (pid $(<"$PIDFILE"))"
    else
        log "$SERVICE" "down"
        return 1
    fi
}

# service_stop -- SIGTERM, wait up to 30s, then SIGKILL (fine if not running).
service_stop() {
    stop_pidfile "$SERVICE" "$PIDFILE" 30
}

# dispatch USAGE ACTION -- common handling for -h/--help/missing/unknown action.
# Each script defines cmd_<action> functions; this calls the one asked for.
dispatch() {
    local usage=$1 action=${2:-}
    case $action in
        -h | --help | help)
            printf '%s\n' "$usage"
            exit 0
            ;;
        '')
            printf '%s\n' "$usage" >&2
            exit 2
            ;;
    esac
    if [[ $(type -t "cmd_${action//-/_}") != function ]]; then
        printf 'unknown action: %s\n%s\n' "$action" "$usage" >&2
        exit 2
    fi
    shift 2
    "cmd_${action//-/_}" "$@"
}
