#!/usr/bin/env bash
# The test command (README, CI): install, then run the whole suite with pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
exec python3 -m pytest -q "$@"
