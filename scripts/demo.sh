#!/usr/bin/env bash
# The main job (README): install, then start the archive + DICOMweb server with demo data.
# The first run generates a 1,000-frame JPEG-LS CT and an RGB ultrasound cine (~15 s) and
# imports them with a few pydicom test files into ./demo-archive; later runs reuse it.
# Then open http://127.0.0.1:8042/viewer (the viewer); the DICOMweb root (QIDO/WADO/STOW-RS) is
# http://127.0.0.1:8042/dicomweb, Prometheus metrics /metrics, and OHIF /ohif once
# scripts/install-ohif.sh has installed it. The server prints these addresses when it starts.
# Extra arguments go to `dcmstream serve` (e.g. --port 9000, --cors-origin '*').
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
exec python3 -m dcmstream serve demo-archive --demo "$@"
