#!/usr/bin/env bash
# The main job (README): install, then start the archive + DICOMweb server with demo data.
# The first run generates a 1,000-frame JPEG-LS CT and an RGB ultrasound cine (~15 s) and
# imports them with a few pydicom test files into ./demo-archive; later runs reuse it.
# Then: http://127.0.0.1:8042/dicomweb (QIDO/WADO/STOW-RS), http://127.0.0.1:8042/metrics.
# Extra arguments go to `dcmstream serve` (e.g. --port 9000, --cors-origin '*').
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
exec python3 -m dcmstream serve demo-archive --demo "$@"
