#!/usr/bin/env bash
# Install Debian's Orthanc, its DICOMweb plugin and its PostgreSQL plugin (index + storage in
# PostgreSQL): the peer server of bench/bench_orthanc.py and bench/bench_scaleout.py.
# A benchmark dependency only (the test install, scripts/install.sh, does not need it).
# Idempotent: when all the packages are installed this only checks; otherwise one
# `apt-get update` and one `apt-get install`. Needs root and apt-get.
#
# The benchmark never uses the system service the package may register: it starts its
# own Orthanc on loopback with a temporary configuration (and Docker images usually
# forbid service starts through /usr/sbin/policy-rc.d anyway).
# Usage: bash scripts/install-orthanc.sh
set -euo pipefail

packages=(orthanc orthanc-dicomweb orthanc-postgresql)
missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "install-orthanc.sh: ${missing[*]} missing; install them as root: apt-get install ${packages[*]}" >&2
    exit 1
fi
echo "install-orthanc.sh: installing ${missing[*]} ..." >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
