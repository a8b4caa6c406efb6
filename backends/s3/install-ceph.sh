#!/usr/bin/env bash
# Install Ceph (mon, mgr, osd, rgw) from Debian's own packages. Idempotent: skips when the
# binaries are present. Needs root (or sudo). Runs `apt-get update` only when needed.
set -euo pipefail
PKGS=(ceph-mon ceph-osd ceph-mgr radosgw ceph-common)
BINS=(ceph-mon ceph-osd ceph-mgr radosgw radosgw-admin ceph ceph-authtool monmaptool)
missing() { local b; for b in "${BINS[@]}"; do command -v "$b" >/dev/null || return 0; done; return 1; }
if ! missing; then echo "[install-ceph.sh] ceph already installed ($(ceph --version | awk '{print $3}'))" >&2; exit 0; fi
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
APT="$SUDO apt-get -y -q -o Dpkg::Use-Pty=0 --no-install-recommends"
start=$(date +%s)
# Package lists present and knowing radosgw? Otherwise (fresh machine) update first.
if ! apt-cache show radosgw >/dev/null 2>&1; then $SUDO apt-get update -q; fi
# A stale list can point at files the mirror no longer has: update once and retry.
if ! $APT install "${PKGS[@]}" >&2; then
  $SUDO apt-get update -q
  $APT install "${PKGS[@]}" >&2
fi
missing && { echo "[install-ceph.sh] install finished but a ceph binary is missing" >&2; exit 1; }
echo "[install-ceph.sh] ceph $(ceph --version | awk '{print $3}') installed in $(( $(date +%s) - start )) s" >&2
