#!/usr/bin/env bash
# The project's test command: install, start the real Kafka, ClickHouse and Prometheus,
# run lint, type checks, unit and integration tests, then stop the services it started.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: ${0##*/} [PYTEST_ARGS...]

Installs the project (.venv), starts the local services (deploy/local/services.sh up),
runs ruff, mypy (strict on pipeline/, streams/ and sinks/) and pytest on tests/unit and
tests/integration, and stops the services again unless they were already running.
Extra arguments go to pytest, e.g. '-k sink' or 'tests/unit'."

[[ ${1:-} == -h || ${1:-} == --help ]] && { echo "$USAGE"; exit 0; }

bash "$LOCAL_DIR/install.sh"
VENV="${SOCIALROI_VENV:-$REPO_ROOT/.venv}"

if bash "$LOCAL_DIR/services.sh" status >/dev/null 2>&1; then
    log test "services already running; leaving them up afterwards"
else
    trap 'bash "$LOCAL_DIR/services.sh" down' EXIT
fi
bash "$LOCAL_DIR/services.sh" up

cd "$REPO_ROOT"
log test "ruff"
"$VENV/bin/ruff" check pipeline streams sinks tests deploy
log test "mypy (strict on pipeline/, streams/ and sinks/)"
"$VENV/bin/mypy" pipeline streams sinks
log test "pytest"
# Integration tests need the services above; they fail (never skip) if one is missing.
export SOCIALROI_TEST_REQUIRE_SERVICES=1
"$VENV/bin/python" -m pytest -p no:cacheprovider -q "${@:-tests}"
