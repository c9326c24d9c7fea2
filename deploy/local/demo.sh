#!/usr/bin/env bash
# The main job: install, then run the whole pipeline on the embedded default
# (local Kafka started for you, embedded ClickHouse) and print KPIs per campaign.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: ${0##*/} [socialroi demo options]

Installs the project (.venv) and runs 'socialroi demo'. Options, e.g. --events 50000,
go to the demo; 'socialroi demo --help' lists them."

[[ ${1:-} == -h || ${1:-} == --help ]] && { echo "$USAGE"; exit 0; }

bash "$LOCAL_DIR/install.sh"
cd "$REPO_ROOT"
exec "${SOCIALROI_VENV:-$REPO_ROOT/.venv}/bin/socialroi" demo "$@"
