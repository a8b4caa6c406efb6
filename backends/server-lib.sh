# Shared tail of the scripts that start a test server in the background (couch/start.sh,
# manta/start.sh). Source it; do not run it.

# wait_ready NAME PID LOG CHECK...: waits up to 20 s for the command CHECK to succeed while PID
# lives. If it never does, prints the server's LOG, stops PID and returns 1.
wait_ready() {
  local name=$1 pid=$2 log=$3
  shift 3
  for _ in $(seq 1 400); do
    if "$@"; then return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "start.sh: $name did not start; its log:" >&2
  cat "$log" >&2 || true
  kill -TERM "$pid" 2>/dev/null || true
  return 1
}

# stop_with WATCH PID WORK: once process WATCH exits (the test run that started the server), stop
# PID (TERM, then KILL after 3 s) and remove its working directory WORK. Returns at once; a no-op
# when WATCH is empty.
stop_with() {
  local watch=$1 pid=$2 work=$3
  [ -n "$watch" ] || return 0
  (
    while kill -0 "$watch" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
    kill -TERM "$pid" 2>/dev/null || true
    sleep 3
    kill -KILL "$pid" 2>/dev/null || true
    rm -rf "$work"
  ) </dev/null >/dev/null 2>&1 &
  disown || true
}
