#!/usr/bin/env bash
# The main job (README): install, generate a large multiframe sample, show lazy access.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
exec python3 -m dcmstream demo "$@"
