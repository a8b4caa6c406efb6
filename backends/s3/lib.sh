# Shared helpers for the S3 test-server scripts. Source it; do not run it.
S3_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Any python3 >= 3.7 will do (stdlib only). Prefer the system one: a pyenv shim adds ~250 ms
# to every call.
if [ -z "${TARVAULT_PYTHON:-}" ]; then
  if [ -x /usr/bin/python3 ]; then TARVAULT_PYTHON=/usr/bin/python3; else TARVAULT_PYTHON=python3; fi
fi
S3SIGN="$TARVAULT_PYTHON $S3_DIR/s3sign.py"

# Fixed test credentials and bucket (test-only; never use them anywhere real).
: "${TARVAULT_S3_ACCESS_KEY:=tarvaulttestkey}"
: "${TARVAULT_S3_SECRET_KEY:=tarvaulttestsecret}"
: "${TARVAULT_S3_BUCKET:=tarvault-test}"

log() { echo "[$(basename "$0")] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# A TCP port on 127.0.0.1 that is free right now (the kernel picks it).
free_port() {
  $TARVAULT_PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Read KEY from an env file written by a start script (empty if absent).
env_get() { sed -n "s/^$2=//p" "$1" 2>/dev/null | tail -n1; }

# pid_alive PID [PATTERN]: the pid exists and its command line contains PATTERN.
pid_alive() {
  local pid=$1 pat=${2:-}
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  [ -z "$pat" ] || tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pat"
}

# child_running PID: a child of this shell has not exited (a zombie counts as exited).
# Its pid cannot be reused before we reap it, so no command-line check is needed.
child_running() {
  local st
  st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

# stop_pid PID PATTERN: TERM, wait up to 10 s, then KILL. Only if the pid still matches.
stop_pid() {
  local pid=$1 pat=$2 i
  pid_alive "$pid" "$pat" || return 0
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 1 100); do pid_alive "$pid" "$pat" || return 0; sleep 0.1; done
  log "pid $pid did not exit on TERM; sending KILL"
  kill -9 "$pid" 2>/dev/null || true
}

# write_env FILE SERVER PORT PID DIR [EXTRA_LINES]: the env file the tests read.
write_env() {
  local f=$1 tmp
  tmp=$(mktemp "$f.XXXXXX")
  cat >"$tmp" <<EOT
AWS_ACCESS_KEY_ID=$TARVAULT_S3_ACCESS_KEY
AWS_SECRET_ACCESS_KEY=$TARVAULT_S3_SECRET_KEY
AWS_REGION=us-east-1
AWS_DEFAULT_REGION=us-east-1
AWS_ENDPOINT_URL=http://127.0.0.1:$3
AWS_ALLOW_HTTP=true
TARVAULT_S3_BUCKET=$TARVAULT_S3_BUCKET
TARVAULT_S3_SERVER=$2
TARVAULT_S3_PID=$4
TARVAULT_S3_DIR=$5
${6:-}
EOT
  mv "$tmp" "$f"
}

# s3 METHOD PATH [s3sign args]: signed request against $ENDPOINT with the test keys.
s3() {
  $S3SIGN --endpoint "$ENDPOINT" --ak "$TARVAULT_S3_ACCESS_KEY" --sk "$TARVAULT_S3_SECRET_KEY" "$@"
}
