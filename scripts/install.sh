#!/usr/bin/env bash
# Install dcmstream and what its tests need into the current Python.
# Idempotent: a second run only checks. Usage: bash scripts/install.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
python3 -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"
