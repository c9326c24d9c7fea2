#!/usr/bin/env bash
# Create the project's virtualenv (.venv) and install socialroi with its dev tools into it.
# Idempotent: re-running only installs what changed in pyproject.toml.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: ${0##*/} [--help]

Creates \$SOCIALROI_VENV (default <repo>/.venv) with python3 (3.11+) and installs the
project with its [dev] extras in editable mode."

[[ ${1:-} == -h || ${1:-} == --help ]] && { echo "$USAGE"; exit 0; }

VENV="${SOCIALROI_VENV:-$REPO_ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "python3 not found: install Python 3.11 or newer"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Python 3.11 or newer is needed, found $("$PYTHON" --version 2>&1)"
if [[ ! -x $VENV/bin/python ]]; then
    log install "creating $VENV"
    "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed: apt-get install python3-venv"
fi
stamp="$VENV/.socialroi-installed"
if [[ ! -f $stamp || $REPO_ROOT/pyproject.toml -nt $stamp ]]; then
    log install "installing socialroi and its dependencies (first run downloads them)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "${REPO_ROOT}[dev]"
    touch "$stamp"
fi
log install "ready: $VENV/bin/socialroi"
