#!/usr/bin/env bash
# Start a throwaway single-node Ceph cluster (1 mon, 1 mgr, 1 memstore OSD, 1 RADOS Gateway)
# on 127.0.0.1, without systemd, then create an S3 user with fixed test keys and a bucket.
#
# usage: start-ceph.sh ENVFILE
#   Writes ENVFILE (AWS_* vars, TARVAULT_S3_BUCKET, TARVAULT_S3_PID, ...). If ENVFILE names
#   a cluster that is still running, that one is stopped and wiped first (idempotent).
# env:   TARVAULT_CEPH_TIMEOUT  seconds allowed for the start, after install (default 120)
#        TARVAULT_S3_BUCKET / TARVAULT_S3_ACCESS_KEY / TARVAULT_S3_SECRET_KEY  (see lib.sh)
#        TMPDIR  where the scratch dir goes (default /tmp)
# Installs the Debian packages first if needed (install-ceph.sh). Stop: stop-ceph.sh ENVFILE.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ENVFILE=${1:?usage: start-ceph.sh ENVFILE}
ENVFILE=$(realpath -m "$ENVFILE")
TIMEOUT=${TARVAULT_CEPH_TIMEOUT:-120}

[ -f "$ENVFILE" ] && "$S3_DIR/stop-ceph.sh" "$ENVFILE"
"$S3_DIR/install-ceph.sh"

T0=$SECONDS
DEADLINE=$(( SECONDS + TIMEOUT ))
D=$(mktemp -d "${TMPDIR:-/tmp}/tarvault-ceph.XXXXXX")
mkdir -p "$D"/{mon.a,mgr.x,rgw,run,log}
CONF=$D/ceph.conf
export CEPH_CONF=$CONF

fail() {
  log "FAILED after $(( SECONDS - T0 )) s: $*"
  local f
  for f in "$D"/log/*; do
    [ -s "$f" ] || continue
    echo "===== tail -n 40 $f =====" >&2
    tail -n 40 "$f" >&2
  done
  "$S3_DIR/stop-ceph.sh" --dir "$D" >&2 || true
  exit 1
}
left() { echo $(( DEADLINE - SECONDS )); }
budget() { local l; l=$(left); echo $(( l > 1 ? l : 1 )); }   # for timeout(1): 0 = no limit
# until_ok DESC CMD...: retry CMD every 0.5 s until it succeeds or the deadline passes.
until_ok() {
  local desc=$1; shift
  while ! "$@" >/dev/null 2>&1; do
    [ "$(left)" -gt 0 ] || fail "timed out waiting for $desc"
    sleep 0.5
  done
}
# Every ceph CLI call is bounded so that a dead mon cannot hang the script.
C() { timeout 30 ceph -c "$CONF" --connect-timeout 20 "$@"; }

MON_PORT=$(free_port)
RGW_PORT=$(free_port)
while [ "$RGW_PORT" = "$MON_PORT" ]; do RGW_PORT=$(free_port); done
FSID=$($TARVAULT_PYTHON -c 'import uuid; print(uuid.uuid4())')

cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
mon initial members = a
public network = 127.0.0.0/8
public addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $D/\$cluster.\$name.keyring
run dir = $D/run
log file = $D/log/\$name.log
pid file = $D/run/\$name.pid
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 4
osd pool default pgp num = 4
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
# A throwaway test cluster in a scratch dir: do not refuse to start because the machine's disk
# is nearly full (the mon stops at <= crit% free, and a CI disk can sit at 1%).
mon data avail warn = 0
mon data avail crit = 0
auth allow insecure global id reclaim = false
ms bind ipv6 = false
[mon]
# Commit map changes quickly (default 1 s per proposal): faster pool/OSD setup.
paxos propose interval = 0.1
paxos min wait = 0.01
admin socket = $D/run/\$name.asok
mon data = $D/mon.\$id
[mgr]
admin socket = $D/run/\$name.asok
mgr data = $D/mgr.\$id
[osd]
admin socket = $D/run/\$name.asok
osd data = $D/osd.\$id
osd objectstore = memstore
memstore device bytes = 4294967296
osd max object size = 134217728
osd memory target = 1073741824
[client.rgw.gw]
admin socket = $D/run/\$name.asok
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $D/rgw
rgw dns name = 127.0.0.1
rgw thread pool size = 64
EOF

# Keys.
ceph-authtool --create-keyring "$D/ceph.mon.a.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$D/ceph.client.admin.keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$D/ceph.mon.a.keyring" --import-keyring "$D/ceph.client.admin.keyring" >/dev/null

# Monitor.
monmaptool --create --clobber --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$D/monmap" >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$D/monmap" --keyring "$D/ceph.mon.a.keyring" \
  >"$D/log/mon-mkfs.out" 2>&1 || fail "ceph-mon --mkfs"
ceph-mon -c "$CONF" -i a >"$D/log/mon.out" 2>&1 || fail "ceph-mon did not start"
until_ok "the monitor" C -s
log "mon up on 127.0.0.1:$MON_PORT ($(( SECONDS - T0 )) s)"
# Create the gateway's pools now (one CLI process; they are made while the OSD starts) so
# that radosgw does not create them one by one at startup (~10 s slower).
for p in .rgw.root default.rgw.control default.rgw.meta default.rgw.log \
         default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec; do
  printf 'osd pool create %s\nosd pool application enable %s rgw\n' "$p" "$p"
done | timeout "$(budget)" ceph -c "$CONF" --connect-timeout 20 >"$D/log/pools.out" 2>&1 &
POOLS_PID=$!

# Manager (health and stats only; the gateway works without it, so a failure is not fatal).
C auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
  -o "$D/ceph.mgr.x.keyring" >/dev/null || fail "mgr key"
ceph-mgr -c "$CONF" -i x >"$D/log/mgr.out" 2>&1 || log "ceph-mgr failed to start (not fatal)"

# One memstore OSD (objects live in RAM; nothing big is written to disk).
OSD_UUID=$($TARVAULT_PYTHON -c 'import uuid; print(uuid.uuid4())')
ID=$(C osd new "$OSD_UUID") || fail "ceph osd new"
mkdir -p "$D/osd.$ID"
ceph-osd -c "$CONF" -i "$ID" --mkfs --mkkey --no-mon-config --osd-uuid "$OSD_UUID" \
  --keyring "$D/osd.$ID/keyring" >"$D/log/osd-mkfs.$ID.out" 2>&1 || fail "ceph-osd --mkfs"
C auth add "osd.$ID" osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' \
  -i "$D/osd.$ID/keyring" >/dev/null 2>&1 || fail "osd key"
ceph-osd -c "$CONF" -i "$ID" --keyring "$D/osd.$ID/keyring" >"$D/log/osd.$ID.out" 2>&1 \
  || fail "ceph-osd did not start"
wait $POOLS_PID || fail "creating the rgw pools"
osd_up() { C osd stat 2>/dev/null | grep -q "1 up"; }
until_ok "the OSD to come up" osd_up
log "osd.$ID up ($(( SECONDS - T0 )) s)"

# RADOS Gateway.
C auth get-or-create client.rgw.gw mon 'allow rw' osd 'allow rwx' mgr 'allow rw' \
  -o "$D/ceph.client.rgw.gw.keyring" >/dev/null || fail "rgw key"
radosgw -c "$CONF" -n client.rgw.gw --keyring "$D/ceph.client.rgw.gw.keyring" \
  >"$D/log/rgw.out" 2>&1 || fail "radosgw did not start"
ENDPOINT=http://127.0.0.1:$RGW_PORT
rgw_answers() { $S3SIGN --endpoint "$ENDPOINT" --ak x --sk x --timeout 2 --quiet GET / >/dev/null; }
until_ok "the gateway on $ENDPOINT" rgw_answers
log "rgw answers on $ENDPOINT ($(( SECONDS - T0 )) s)"

# S3 user with the fixed test keys, then the bucket (retried: pools are created on first use).
timeout "$(budget)" radosgw-admin -c "$CONF" -n client.admin user create --uid=tarvault \
  --display-name=tarvault --access-key="$TARVAULT_S3_ACCESS_KEY" \
  --secret-key="$TARVAULT_S3_SECRET_KEY" >"$D/log/user-create.out" 2>&1 || fail "radosgw-admin user create"
until_ok "bucket creation" s3 --quiet --expect 200 --timeout 30 PUT "/$TARVAULT_S3_BUCKET"
# Warm-up write: the first PUT into a new bucket creates the data pool (~2 s); pay it here.
until_ok "a warm-up PUT" s3 --quiet --expect 200 --timeout 30 --data x PUT "/$TARVAULT_S3_BUCKET/.warmup"
s3 --quiet --expect 204 DELETE "/$TARVAULT_S3_BUCKET/.warmup" >/dev/null || fail "warm-up DELETE"

RGW_PID=$(cat "$D/run/client.rgw.gw.pid")
write_env "$ENVFILE" ceph "$RGW_PORT" "$RGW_PID" "$D" "CEPH_CONF=$CONF"
log "ceph rgw ready on $ENDPOINT, bucket $TARVAULT_S3_BUCKET, in $(( SECONDS - T0 )) s; env in $ENVFILE"
