#!/usr/bin/env bash
# Viewer quality gates (run by scripts/test.sh before pytest):
#   1. viewer/src/syntaxes.ts is what scripts/gen_viewer_syntaxes.py generates;
#   2. tsc --noEmit type-checks viewer/src;
#   3. the committed build (src/dcmstream/web/static/viewer/) is what viewer/ builds to now
#      (built into a temporary folder and compared).
# Without node/npm the node steps are skipped with a note, except under CI (CI set): there
# a missing node is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/gen_viewer_syntaxes.py --check
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [[ -n "${CI:-}" ]]; then echo "check-viewer: node and npm are required in CI" >&2; exit 1; fi
    echo "check-viewer: node/npm missing, tsc and build comparison skipped" >&2
    exit 0
fi
cd viewer
# npm ci (exact lock) unless node_modules was installed from this very lock file.
if ! cmp -s package-lock.json node_modules/.dcmstream-installed-lock 2>/dev/null; then
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
    cp package-lock.json node_modules/.dcmstream-installed-lock
fi
npx --no-install tsc --noEmit -p .
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
node build.mjs "$out" >/dev/null 2>&1 || node build.mjs "$out"
if ! diff -r -q "$out" ../src/dcmstream/web/static/viewer >&2; then
    echo "check-viewer: the committed viewer build is stale: run bash scripts/build-viewer.sh and commit" >&2
    exit 1
fi
echo "check-viewer: syntaxes.ts generated, tsc clean, committed build matches viewer/src"
