#!/usr/bin/env bash
# Start s3s-fs (a small S3 server storing objects as files) on a free 127.0.0.1 port with a
# fresh data dir and the fixed test keys (SigV4 enforced), create the bucket, write ENVFILE.
#
# usage: start-s3s.sh ENVFILE
#   If ENVFILE names a server that is still running, that one is stopped and wiped first.
# env:   TARVAULT_TOOLS  tools cache holding bin/s3s-fs (installed by install-s3s.sh if absent)
#        TARVAULT_S3_BUCKET / TARVAULT_S3_ACCESS_KEY / TARVAULT_S3_SECRET_KEY  (see lib.sh)
#        TMPDIR  where the data dir goes (default /tmp)
# Stop: stop-s3s.sh ENVFILE.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ENVFILE=${1:?usage: start-s3s.sh ENVFILE}
ENVFILE=$(realpath -m "$ENVFILE")
[ -f "$ENVFILE" ] && "$S3_DIR/stop-s3s.sh" "$ENVFILE"
BIN=$("$S3_DIR/install-s3s.sh" | tail -n1)

T0=$(date +%s%N)
D=$(mktemp -d "${TMPDIR:-/tmp}/tarvault-s3s.XXXXXX")
mkdir -p "$D/data"
PID=
for attempt in 1 2 3 4 5; do
  PORT=$(free_port)
  # setsid: own session, so a Ctrl-C in the caller's terminal does not kill the server.
  setsid "$BIN" --host 127.0.0.1 --port "$PORT" --access-key "$TARVAULT_S3_ACCESS_KEY" \
    --secret-key "$TARVAULT_S3_SECRET_KEY" "$D/data" >"$D/s3s-fs.log" 2>&1 </dev/null &
  PID=$!
  ENDPOINT=http://127.0.0.1:$PORT
  for i in $(seq 1 500); do                     # up to ~10 s
    child_running "$PID" || break              # exited: port taken in the meantime?
    if port_open "$PORT"; then
      s3 --quiet --timeout 2 --expect 200 GET / >/dev/null 2>&1 && break 2
    fi
    sleep 0.02
  done
  log "s3s-fs did not come up on port $PORT (attempt $attempt); log:"; cat "$D/s3s-fs.log" >&2
  kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=
done
[ -n "$PID" ] || { rm -rf "$D"; die "s3s-fs failed to start"; }
s3 --quiet --expect 200 PUT "/$TARVAULT_S3_BUCKET" >/dev/null \
  || { kill "$PID" || true; rm -rf "$D"; die "could not create bucket $TARVAULT_S3_BUCKET"; }
write_env "$ENVFILE" s3s-fs "$PORT" "$PID" "$D"
log "s3s-fs ready on $ENDPOINT (pid $PID), bucket $TARVAULT_S3_BUCKET, in $(( ($(date +%s%N) - T0) / 1000000 )) ms; env in $ENVFILE"
