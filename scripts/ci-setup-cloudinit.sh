#!/usr/bin/env bash
# Installs the real tools the cloud-init tests check provision's output against:
#   cloud-init  (`cloud-init schema --config-file`, `cloud-init devel net-convert`)
#   genisoimage (`isoinfo`), xorriso, util-linux (`blkid`).
# Idempotent: does nothing when every tool is already present. Needs root (or sudo) and apt.
set -euo pipefail

missing=()
command -v cloud-init >/dev/null 2>&1 || missing+=(cloud-init)
command -v isoinfo >/dev/null 2>&1 || missing+=(genisoimage)
command -v xorriso >/dev/null 2>&1 || missing+=(xorriso)
command -v blkid >/dev/null 2>&1 || missing+=(util-linux)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "ci-setup-cloudinit: cloud-init, isoinfo, xorriso and blkid already installed"
    exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    sudo_cmd=(sudo)
fi

echo "ci-setup-cloudinit: installing ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"

cloud-init --version
isoinfo --version 2>&1 | head -n 1
xorriso -version 2>&1 | head -n 1
