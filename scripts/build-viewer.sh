#!/usr/bin/env bash
# Build the viewer (viewer/, TypeScript + esbuild) into src/dcmstream/web/static/viewer/.
# The built files are committed, so `pip install` alone serves /viewer; run this after
# changing viewer/ and commit the result. Needs node >= 18 and npm (npm ci: exact lock).
#   bash scripts/build-viewer.sh
set -euo pipefail
cd "$(dirname "$0")/../viewer"
npm ci --no-audit --no-fund --loglevel=error
npx tsc --noEmit -p .
node build.mjs
