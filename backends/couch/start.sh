#!/usr/bin/env bash
# Starts pouchdb-server (in memory: a CouchDB-compatible server) on a free loopback port, for the
# migration tests and benchmark. Derived from shared/reference/couch/run-couch.sh.
#
#   start.sh [--watch PID] [--dir DIR]
#
# Installs the server first if needed (`npm ci --ignore-scripts` from the committed lockfile, under
# a lock, so concurrent callers install once). Once the server answers, prints shell assignments:
#   COUCH_URL=http://127.0.0.1:PORT
#   COUCH_PID=PID
#   COUCH_WORK=DIR        (its working directory and log)
# Stop it with `kill -TERM $COUCH_PID`. With `--watch PID` it also stops by itself when PID exits
# (the test process that started it), so an aborted test run leaves no server behind. With
# `--dir DIR` the databases live on disk in DIR (leveldb) instead of in memory, like a real
# registry's (the benchmark uses this).
set -euo pipefail
DIR=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../server-lib.sh
. "$DIR/../server-lib.sh"
WATCH=""
STORAGE=(--in-memory)
while [ $# -gt 0 ]; do
  case "$1" in
    --watch) WATCH=${2:?--watch needs a pid}; shift 2 ;;
    --dir) mkdir -p "${2:?--dir needs a directory}"; STORAGE=(--dir "$(cd "$2" && pwd)"); shift 2 ;;
    *) echo "start.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v node >/dev/null || { echo "start.sh: node is not installed (needed for pouchdb-server)" >&2; exit 1; }
if [ ! -x "$DIR/node_modules/.bin/pouchdb-server" ]; then
  (
    flock 9
    if [ ! -x "$DIR/node_modules/.bin/pouchdb-server" ]; then
      command -v npm >/dev/null || { echo "start.sh: npm is not installed" >&2; exit 1; }
      echo "start.sh: installing pouchdb-server (npm ci --ignore-scripts)" >&2
      (cd "$DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    fi
  ) 9>"$DIR/.install.lock"
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tarvault-couch.XXXXXX")
PORT=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
# The server writes config.json and log.txt into its working directory: give it its own.
(cd "$WORK" && exec "$DIR/node_modules/.bin/pouchdb-server" "${STORAGE[@]}" --host 127.0.0.1 --port "$PORT" \
    --no-color --no-stdout-logs --config "$WORK/config.json" </dev/null >"$WORK/server.log" 2>&1) &
PID=$!
couch_answers() { curl -fs -o /dev/null "http://127.0.0.1:$PORT/" 2>/dev/null; }
wait_ready pouchdb-server "$PID" "$WORK/server.log" couch_answers || exit 1
stop_with "$WATCH" "$PID" "$WORK"
echo "COUCH_URL=http://127.0.0.1:$PORT"
echo "COUCH_PID=$PID"
echo "COUCH_WORK=$WORK"
