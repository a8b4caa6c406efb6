#!/usr/bin/env bash
# tarvault serve against nginx serving the same corpus tarballs from disk, measured with wrk in
# the same run (alternating, ROUNDS times; medians reported): requests/s and p99 latency for
#   (a) 304 revalidations (If-None-Match with each server's own ETag), and
#   (b) full GETs of the corpus tarballs,
# rotating over every corpus URL (benches/serve.lua). tarvault verifies every byte it serves
# (the default Fast verification: blake3 against the digest recorded at put time).
#
#   bash benches/serve.sh            # DUR=10 CONNS=32 ROUNDS=3 THREADS=1 by default
#   TARVAULT_BIN=/path/to/tarvault bash benches/serve.sh   # that binary, not this tree's build
#   CACHED=1 bash benches/serve.sh   # tarvault serves through a cache tier (fs) in front of the
#                                    # fs store, warmed before the rounds: a registry in front of
#                                    # a remote store, with the remote's latency left out
#   LARGE_MIB=32 bash benches/serve.sh  # instead of the corpus, 8 random blobs of that many MiB
#                                    # (above the fs's one-piece read of 8 MiB, up to the server's
#                                    # verify-before-head size of 64 MiB)
#
# Needs wrk, nginx and python3 (wrk and nginx are installed with apt when missing and root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CORPUS=${TARVAULT_CORPUS:-$ROOT/../shared/corpus}
DUR=${DUR:-10}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-1}

for tool in wrk nginx; do
  if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
    pkg=$tool; [ "$tool" = nginx ] && pkg=nginx-light
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null
  fi
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# TARVAULT_BIN: a binary built elsewhere (to compare two builds in turn), instead of this tree's.
if [ -n "${TARVAULT_BIN:-}" ]; then
  BIN=$TARVAULT_BIN
else
  cargo build --release --locked --features server,cli --bin tarvault >&2
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/tarvault
fi

# Fresh directories every run (see the machine notes on reusing deleted-from directories).
WORK=$(mktemp -d /tmp/tarvault-serve-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
if [ -n "${LARGE_MIB:-}" ]; then
  # A corpus of its own: 8 random blobs of LARGE_MIB MiB, with their integrity and shasum.
  CORPUS=$WORK/large
  python3 - "$CORPUS" "$LARGE_MIB" <<'PY'
import base64, hashlib, json, os, sys
out, mib = sys.argv[1], int(sys.argv[2])
os.makedirs(os.path.join(out, "tarballs"))
with open(os.path.join(out, "manifest.jsonl"), "w") as m:
    for i in range(8):
        data = os.urandom(mib << 20)
        name = f"large-{i}"
        file = f"tarballs/{name}-1.0.0.tgz"
        with open(os.path.join(out, file), "wb") as f:
            f.write(data)
        m.write(json.dumps({"name": name, "version": "1.0.0", "file": file,
                            "tarball_path": f"/{name}/-/{name}-1.0.0.tgz",
                            "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
                            "shasum": hashlib.sha1(data).hexdigest(), "size": len(data)}) + "\n")
PY
fi
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# The same bytes for both: a store (with the mapping `migrate couch` writes) and a docroot laid
# out as the npm URLs.
python3 - "$CORPUS" "$WORK" <<'PY'
import json, os, shutil, sys
corpus, work = sys.argv[1], sys.argv[2]
with open(os.path.join(corpus, "manifest.jsonl")) as f, open(os.path.join(work, "map.jsonl"), "w") as m, \
     open(os.path.join(work, "files.txt"), "w") as files:
    for line in f:
        if not line.strip():
            continue
        e = json.loads(line)
        dst = os.path.join(work, "www", e["tarball_path"].lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(corpus, e["file"]), dst)
        files.write(os.path.join(corpus, e["file"]) + "\n")
        m.write(json.dumps({"name": e["name"], "version": e["version"],
                            "file": e["tarball_path"].rsplit("/", 1)[1], "integrity": e["integrity"],
                            "shasum": e["shasum"], "size": e["size"]}) + "\n")
PY
chmod -R a+rX "$WORK/www"
xargs -a "$WORK/files.txt" -d '\n' "$BIN" --store "file://$WORK/store?fsync=false" put >/dev/null

NPORT=$(free_port)
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  server {
    listen 127.0.0.1:$NPORT;
    root $WORK/www;
    location / { add_header Cache-Control "public, max-age=31536000, immutable"; }
  }
}
CONF
"$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" & PIDS+=($!)

TPORT=$(free_port)
SERVED="file://$WORK/store?fsync=false"
if [ "${CACHED:-0}" = 1 ]; then
  SERVED="{\"cached\": {\"local\": \"file://$WORK/cache?fsync=false\", \"remote\": \"$SERVED\", \"capacity\": \"1GiB\"}}"
fi
"$BIN" --store "$SERVED" serve --listen "127.0.0.1:$TPORT" \
  --map "$WORK/map.jsonl" >/dev/null & PIDS+=($!)

# Wait for both, then collect each server's own ETag per URL (and check 304s really are 304s).
python3 - "$WORK" "$NPORT" "$TPORT" <<'PY'
import os, sys, time, urllib.error, urllib.request
work, nport, tport = sys.argv[1], sys.argv[2], sys.argv[3]
manifest_paths = []
for root, _, names in os.walk(os.path.join(work, "www")):
    for n in names:
        manifest_paths.append("/" + os.path.relpath(os.path.join(root, n), os.path.join(work, "www")))
manifest_paths.sort()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def fetch(port, path, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {}, method="HEAD")
    try:
        r = opener.open(req, timeout=5)
        return r.status, r.headers.get("ETag")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("ETag")
for port in (nport, tport):
    for _ in range(200):
        try:
            fetch(port, manifest_paths[0]); break
        except Exception:
            time.sleep(0.05)
for name, port in (("nginx", nport), ("tarvault", tport)):
    with open(os.path.join(work, f"paths-{name}.txt"), "w") as out:
        for p in manifest_paths:
            # A GET first, which fills a cache tier (CACHED=1).
            opener.open(urllib.request.Request(f"http://127.0.0.1:{port}{p}"), timeout=5).read()
            status, etag = fetch(port, p)
            assert status == 200 and etag, (name, p, status)
            status, _ = fetch(port, p, {"If-None-Match": etag})
            assert status == 304, (name, p, status)
            out.write(f"{p} {etag}\n")
PY

run_wrk() { # server port mode -> "reqs p99ms"
  local out
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency -s "$ROOT/benches/serve.lua" \
    "http://127.0.0.1:$2" -- "$WORK/paths-$1.txt" "$3")
  if grep -q "Non-2xx or 3xx" <<<"$out" || grep -q "Socket errors" <<<"$out"; then
    echo "$1 $3: errors:" >&2; echo "$out" >&2
  fi
  python3 -c '
import re, sys
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
v, u = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", t, re.M).groups()
print(rps, float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u])' <<<"$out"
}

declare -A R
for round in $(seq "$ROUNDS"); do
  for mode in 304 get; do
    for server in nginx tarvault; do
      port=$NPORT; [ $server = tarvault ] && port=$TPORT
      R[$mode,$server,$round]=$(run_wrk $server $port $mode)
      echo "round $round $mode $server: ${R[$mode,$server,$round]}" >&2
    done
  done
done

python3 - "$ROUNDS" "$DUR" "$CONNS" "$THREADS" "${LARGE_MIB:-0}" <<PY
import statistics, sys
rounds, dur, conns, threads, large = map(int, sys.argv[1:6])
R = {}
$(for k in "${!R[@]}"; do echo "R['$k'] = '${R[$k]}'"; done)
what = f"8 random blobs of {large} MiB" if large else "80 corpus tarballs (1.7 KB-5.8 MB)"
print(f"\nwrk -t{threads} -c{conns} -d{dur}s, {rounds} rounds alternating, medians; {what}\n")
print("| scenario | nginx req/s | tarvault req/s | ratio | nginx p99 | tarvault p99 |")
print("|---|---:|---:|---:|---:|---:|")
for mode, label in (("304", "(a) 304 revalidation"), ("get", "(b) full GET")):
    med = {}
    for s in ("nginx", "tarvault"):
        vals = [tuple(map(float, R[f"{mode},{s},{r}"].split())) for r in range(1, rounds + 1)]
        med[s] = (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals))
    print(f"| {label} | {med['nginx'][0]:.0f} | {med['tarvault'][0]:.0f} | {med['tarvault'][0]/med['nginx'][0]:.2f}x "
          f"| {med['nginx'][1]:.2f} ms | {med['tarvault'][1]:.2f} ms |")
PY
curl -s "http://127.0.0.1:$TPORT/-/metrics" 2>/dev/null | grep -E "^tarvault_(integrity|http_not_modified|http_body)" >&2 || true
