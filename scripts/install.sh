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

# Browser tests (tests/viewer): Debian's chromium, driven by pip's playwright (installed with
# the test extra above) through executable_path; Playwright never downloads a browser here.
if [ ! -x /usr/bin/chromium ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "install.sh: /usr/bin/chromium is missing (need root and apt-get); browser tests will be skipped" >&2
    fi
fi

# PostgreSQL catalog tests (tests/postgres_util.py start a throwaway server): Debian's
# `postgresql` (initdb/pg_ctl under /usr/lib/postgresql/*/bin), installed only when missing.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        # One `apt-get update` per install run: skipped when a section above just did it.
        if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
            apt-get update -qq
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
        # The package may start its default cluster; the tests start their own servers.
        if command -v pg_lsclusters >/dev/null; then
            pg_lsclusters -h | awk '$4 == "online" {print $1, $2}' | while read -r version cluster; do
                pg_ctlcluster "$version" "$cluster" stop || true
            done
        fi
    else
        echo "install.sh: PostgreSQL is missing (need root and apt-get); its catalog tests will be skipped" >&2
    fi
fi

# S3 blob store tests run on two real S3-protocol servers (tests/s3_util.py): moto's (pip,
# above) and OpenStack Swift with its s3api middleware, from Debian's packages, installed
# only when missing. The tests start their own Swift servers in a temporary folder.
if ! command -v swift-proxy-server >/dev/null || ! command -v swift-ring-builder >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
            apt-get update -qq
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            swift swift-proxy swift-account swift-container swift-object >/dev/null \
            || echo "install.sh: OpenStack Swift could not be installed; its S3 tests will be skipped" >&2
    else
        echo "install.sh: OpenStack Swift is missing (need root and apt-get); its S3 tests will be skipped" >&2
    fi
fi

# OHIF at /ohif (not committed: ~200 MB from npm into third_party/ohif/).
if [ ! -f third_party/ohif/index.html ]; then
    bash scripts/install-ohif.sh || echo "install.sh: OHIF could not be installed; /ohif and its test are unavailable" >&2
fi
