#!/usr/bin/env bash
# The test command (README, CI): install, check the viewer (generated syntax table, tsc,
# committed build = sources), then run the whole suite with pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
bash scripts/check-viewer.sh
exec python3 -m pytest -q "$@"
