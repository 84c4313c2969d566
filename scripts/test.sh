#!/usr/bin/env bash
# The test command (README, CI): install, check the import layers, lint and types (ruff, mypy)
# and the viewer (generated syntax table, tsc, committed build = sources), then run the whole
# suite with pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
# The layers (pyproject.toml [tool.importlinter]) of this checkout's sources, before the tests.
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" lint-imports --no-logo --no-cache
bash scripts/check-quality.sh
bash scripts/check-viewer.sh
exec python3 -m pytest -q "$@"
