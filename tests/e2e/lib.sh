# tests/e2e/lib.sh — helpers for end-to-end tests, sourced by each tests/e2e/test_*.sh.
# The runner (tests/run) has started a dev stack in $WARD_VAR on $WARD_PORT_BASE.
set -uo pipefail
TOP=${WARD_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
: "${WARD_VAR:?run through tests/run}"
# shellcheck disable=SC1091
set -a
. "$WARD_VAR/devstack.env"
set +a
WUSER=${WARD_USER:-ward}
BIN=$TOP/bin
export WARD_CONFIG=$WARD_VAR/wardctl.yaml

ok() { echo "ok - $*"; }
not_ok() { echo "not ok - $*"; }
# check NAME CMD...: ok when the command succeeds.
check() { local n=$1; shift; if "$@" >/tmp/ward-check.$$ 2>&1; then ok "$n"; else not_ok "$n"; sed 's/^/#   /' /tmp/ward-check.$$ | tail -15; fi; rm -f /tmp/ward-check.$$; }
# refuse NAME CMD...: ok when the command fails.
refuse() { local n=$1; shift; if "$@" >/tmp/ward-check.$$ 2>&1; then not_ok "$n (was allowed)"; sed 's/^/#   /' /tmp/ward-check.$$ | tail -5; else ok "$n"; fi; rm -f /tmp/ward-check.$$; }

. "$TOP/ops/lib.sh"
upper() { echo "$1" | tr a-z A-Z; }
# is GOT WANT: true when equal, else says both (for check's report)
is() { [ "$1" = "$2" ] || { echo "got '$1', want '$2'"; return 1; }; }
wctl() { "$BIN/wardctl" "$@"; }
# jq_ KEY...: the value at that path of the JSON on stdin (list indexes as numbers,
# booleans as true/false), or an empty line
jq_() { python3 -c 'import json,sys
try:
    d = json.loads(sys.stdin.read())
    for k in sys.argv[1:]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    print(str(d).lower() if isinstance(d, bool) else d)
except Exception:
    print("")' "$@"; }
hostport() { local v="WARD_$(upper "$1")_$2"; echo "${!v}"; }
port_of() { hostport "$1" "$2" | sed -e 's|^postgresql://[^@]*@||' -e 's|/.*||' -e 's/.*://'; }
secret() { cat "$WARD_VAR/$1/secrets/$2"; }

# rcli REGION USER args...: redis-cli as a given ACL user of the cell.
rcli() {
	local r=$1 u=$2; shift 2
	REDISCLI_AUTH=$(secret "$r" "redis-$u") redis-cli --no-auth-warning --user "$u" \
		-h 127.0.0.1 -p "$(port_of "$r" REDIS)" "$@"
}
# pg_as REGION ROLE SQL: psql as a service role (its password from the cell's secrets).
pg_as() {
	local r=$1 role=$2 sql=$3 svc=${2#ward_}
	PGPASSWORD=$(secret "$r" "pg-${svc//_/-}") psql -X -q -tA -v ON_ERROR_STOP=1 \
		"host=127.0.0.1 port=$(port_of "$r" PG) dbname=ward user=$role" -c "$sql"
}
# pg_super REGION SQL: the cell's superuser (operator access).
pg_super() { local url="WARD_$(upper "$1")_PG"; psql -X -q -tA -v ON_ERROR_STOP=1 "${!url}" -c "$2"; }

# https REGION PATH [curl args]: a request to the cell's gateway, verified against the dev CA.
https() {
	local r=$1 path=$2; shift 2
	local p; p=$(port_of "$r" HTTPS)
	curl -sS --max-time 10 --cacert "$WARD_CA" --resolve "$r.$WARD_DOMAIN:$p:127.0.0.1" \
		"$@" "https://$r.$WARD_DOMAIN:$p$path"
}

pid_of() { cat "$WARD_VAR/$1/run/$2.pid"; }

# wait_for SECONDS CMD...: poll until CMD succeeds.
wait_for() {
	local t=$1 i; shift
	for i in $(seq $((t * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}

export WUSER BIN TOP
export -f ok not_ok check refuse as_user upper hostport port_of secret rcli pg_as pg_super https pid_of wait_for

# A free TCP port on the loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# The S3 tests: s3rver (npm, tests/node) on 127.0.0.1:$S3PORT keeping $BUCKET in
# $TMP/s3; S3PID is its pid.
start_s3() {
	node "$TOP/tests/node/node_modules/s3rver/bin/s3rver.js" -d "$TMP/s3" -a 127.0.0.1 -p "$S3PORT" \
		--silent --configure-bucket "$BUCKET" >>"$TMP/s3rver.log" 2>&1 &
	S3PID=$!
	wait_for 20 bash -c "curl -s -o /dev/null http://127.0.0.1:$S3PORT/"
}
# backup_restart CONFIG: ward-backup of cell $R restarted with CONFIG, 0 once it
# heartbeats again.
backup_restart() {
	local pid
	pid=$(pid_of $R backup)
	kill -TERM "$pid" 2>/dev/null
	wait_for 20 bash -c "! kill -0 $pid 2>/dev/null"
	rcli $R admin DEL hb:backup:backup-1 >/dev/null
	spawn_as_user "$WARD_VAR/$R/run/backup.pid" "$WARD_VAR/$R/log/backup.stderr" \
		"$BIN/ward-backup" --config "$1"
	wait_for 20 bash -c "[ \"\$(rcli $R admin EXISTS hb:backup:backup-1)\" = 1 ]"
}

# mail_spool_pending DIR: how many mails ward-mail-ingest's spool DIR holds for
# delivery: files in queue/, and records of the spool log (log/<seq>: "WSL1", u32
# length, u32 CRC-32 of id and payload, 64-byte id, payload; services/mail-ingest/
# mail_spool.c) up to a segment's first damaged record, less the ids in its .done.
mail_spool_pending() {
	python3 - "$1" <<'PY'
import os, struct, sys, zlib
d = sys.argv[1]
n = len([f for f in os.listdir(os.path.join(d, "queue")) if not f.startswith(".")])
logd = os.path.join(d, "log")
for seg in sorted(os.listdir(logd) if os.path.isdir(logd) else []):
    if len(seg) != 16:
        continue
    try:
        done = set(open(os.path.join(logd, seg + ".done"), "rb").read().split(b"\n"))
    except FileNotFoundError:
        done = set()
    data = open(os.path.join(logd, seg), "rb").read()
    off = 0
    while off + 76 <= len(data) and data[off:off + 4] == b"WSL1":
        ln, crc = struct.unpack_from("<II", data, off + 4)
        body = data[off + 12:off + 76 + ln]
        if len(body) != 64 + ln or zlib.crc32(body) != crc:
            break
        if body[:64].rstrip(b"\0") not in done:
            n += 1
        off += 76 + ln
print(n)
PY
}
