#!/usr/bin/env bash
# Stop a cluster started by start-ceph.sh, delete its scratch dir and its env file.
# usage: stop-ceph.sh ENVFILE   |   stop-ceph.sh --dir SCRATCH_DIR
# Kills only the daemons whose pid files are in that scratch dir (and whose command line
# names it). Succeeds when there is nothing to stop.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ENVFILE=
if [ "${1:-}" = --dir ]; then D=${2:?usage: stop-ceph.sh --dir DIR}
else
  ENVFILE=${1:?usage: stop-ceph.sh ENVFILE | --dir DIR}
  [ -f "$ENVFILE" ] || { log "no env file $ENVFILE: nothing to stop"; exit 0; }
  D=$(env_get "$ENVFILE" TARVAULT_S3_DIR)
fi
if [ -n "$D" ] && [ -d "$D/run" ]; then
  shopt -s nullglob
  for f in "$D"/run/client.rgw.gw.pid "$D"/run/osd.*.pid "$D"/run/mgr.x.pid "$D"/run/mon.a.pid; do
    stop_pid "$(cat "$f")" "$D/ceph.conf"
  done
fi
# Remove only what start-ceph.sh made.
case "$(basename "${D:-x}")" in
  tarvault-ceph.*) [ -f "$D/ceph.conf" ] && rm -rf "$D" ;;
esac
[ -n "$ENVFILE" ] && rm -f "$ENVFILE"
log "stopped${D:+ ($D)}"
