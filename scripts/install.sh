#!/usr/bin/env bash
# Install dcmstream and what its tests need into the current Python.
# Idempotent: a second run only checks. Usage: bash scripts/install.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
python3 -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"

# Peers the tests compare against (DCMTK, GDCM, dicom3tools' dciodvfy): Debian packages,
# installed only when a binary is missing, with one `apt-get update` first.
if ! command -v dcmdjpls >/dev/null || ! command -v dciodvfy >/dev/null \
    || ! dpkg -s libgdcm-tools >/dev/null 2>&1; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            dcmtk libgdcm-tools dicom3tools >/dev/null
    else
        echo "install.sh: dcmtk, libgdcm-tools and dicom3tools are missing (need root and apt-get)" >&2
    fi
fi
