#!/usr/bin/env bash
# Builds and starts the Manta protocol test server on a free loopback port, with a fresh RSA key
# made by ssh-keygen, for tarvault's Manta tests and benchmark.
#
#   start.sh [--watch PID]
#
# Prints shell assignments once the server answers:
#   MANTA_URL=http://127.0.0.1:PORT   MANTA_USER=testuser
#   MANTA_KEY_MATERIAL=…/home/.ssh/id_rsa   MANTA_KEY_ID=<md5 colon-hex>
#   MANTA_TEST_HOME=…/home            (a HOME for node-manta: .ssh/id_rsa{,.pub})
#   MANTA_TEST_SERVER_BIN=…           (the binary, for tests that start servers of their own)
#   MANTA_PID=PID   MANTA_WORK=DIR
# Stop it with `kill -TERM $MANTA_PID`. With `--watch PID` it also stops by itself when PID exits.
set -euo pipefail
DIR=$(cd "$(dirname "$0")" && pwd)
BACKENDS=$(cd "$DIR/.." && pwd)
# shellcheck source=../server-lib.sh
. "$BACKENDS/server-lib.sh"
WATCH=""
while [ $# -gt 0 ]; do
  case "$1" in
    --watch) WATCH=${2:?--watch needs a pid}; shift 2 ;;
    *) echo "start.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v ssh-keygen >/dev/null || { echo "start.sh: ssh-keygen is not installed (openssh-client)" >&2; exit 1; }
echo "start.sh: building manta-test-server" >&2
cargo build --locked --quiet --manifest-path "$BACKENDS/Cargo.toml" -p manta-test-server --bin manta-test-server >&2
# Where cargo put it: CARGO_TARGET_DIR (or a cargo config's build.target-dir) moves it out of
# backends/target.
TARGET=$(cargo metadata --locked --format-version 1 --no-deps --manifest-path "$BACKENDS/Cargo.toml" |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN="${TARGET:-$BACKENDS/target}/debug/manta-test-server"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tarvault-manta.XXXXXX")
mkdir -p "$WORK/home/.ssh" "$WORK/root"
chmod 700 "$WORK/home/.ssh"
ssh-keygen -q -t rsa -b 2048 -N "" -C tarvault-ci -f "$WORK/home/.ssh/id_rsa"
KEY_ID=$(ssh-keygen -l -E md5 -f "$WORK/home/.ssh/id_rsa.pub" | awk '{print $2}' | sed 's/^MD5://')
"$BIN" --listen 127.0.0.1:0 --root "$WORK/root" --user testuser \
  --pubkey "$WORK/home/.ssh/id_rsa.pub" --port-file "$WORK/port" </dev/null >"$WORK/server.log" 2>&1 &
PID=$!
wait_ready manta-test-server "$PID" "$WORK/server.log" test -s "$WORK/port" || exit 1
PORT=$(cat "$WORK/port")
stop_with "$WATCH" "$PID" "$WORK"
echo "MANTA_URL=http://127.0.0.1:$PORT"
echo "MANTA_USER=testuser"
echo "MANTA_KEY_MATERIAL=$WORK/home/.ssh/id_rsa"
echo "MANTA_KEY_ID=$KEY_ID"
echo "MANTA_TEST_HOME=$WORK/home"
echo "MANTA_TEST_SERVER_BIN=$BIN"
echo "MANTA_PID=$PID"
echo "MANTA_WORK=$WORK"
