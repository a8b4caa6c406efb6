#!/usr/bin/env bash
# Stop a server started by start-s3s.sh, delete its data dir and its env file.
# usage: stop-s3s.sh ENVFILE     (succeeds when there is nothing to stop)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ENVFILE=${1:?usage: stop-s3s.sh ENVFILE}
[ -f "$ENVFILE" ] || { log "no env file $ENVFILE: nothing to stop"; exit 0; }
D=$(env_get "$ENVFILE" TARVAULT_S3_DIR)
PID=$(env_get "$ENVFILE" TARVAULT_S3_PID)
# Kill only if that pid is still our s3s-fs (its command line names our data dir).
[ -n "$D" ] && stop_pid "$PID" "$D/data"
case "$(basename "${D:-x}")" in
  tarvault-s3s.*) rm -rf "$D" ;;
esac
rm -f "$ENVFILE"
log "stopped${D:+ ($D)}"
