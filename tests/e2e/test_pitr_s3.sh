#!/usr/bin/env bash
# test_pitr_s3.sh — issue 7, point-in-time recovery with the off-site target: the us
# cell's ward-backup reconfigured with backup.s3 (a real s3rver from tests/node on
# loopback) and its PostgreSQL's archive_command pointed at that configuration
# (ALTER SYSTEM; both put back at the end). WAL segments and base backups then go to
# the bucket, never the local directory, and nothing in the bucket is plaintext;
# `restore --region R --to T` rebuilds a scratch cluster from the bucket (the
# scratch cluster's restore_command fetches from S3 too), `--tenant S --to T` puts one
# tenant back (ward-backup answers pings meanwhile: the job is on its worker
# thread); a corrupted segment object is refused by name; `pitr-expire` purges the
# old base backup and WAL from the bucket, each purge an audit event of the platform.
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_api.sh"

R=us
P=$(port_of $R HTTPS)
TMP=$(mktemp -d /tmp/ward-pitr-s3.XXXXXX)
chmod 755 "$TMP"
mkdir "$TMP/w" && chown "$WUSER" "$TMP/w" 2>/dev/null
ETC=$WARD_VAR/$R/etc
SEC=$WARD_VAR/$R/secrets
CONF=$ETC/backup-pitr-s3.yaml
BK=$WARD_VAR/$R/backups
BUCKET=ward-backups-$R
SUF=$RANDOM$RANDOM
S1=pitrs3-a-$SUF
S2=pitrs3-b-$SUF
S3=pitrs3-late-$SUF # created after T: its slug must not be in clear in the bucket
NEWPW='Sturdy-Passphrase-2026!'
SCRATCH=""
S3PID=""
has() { [ -n "$2" ] || { echo "nothing to look for"; return 1; }
	case $1 in *"$2"*) return 0 ;; esac; echo "'$1' lacks '$2'"; return 1; }
j() { python3 -c 'import json,sys
try:
    d = json.loads(sys.argv[1])
    for k in sys.argv[2:]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    print(str(d).lower() if isinstance(d, bool) else d)
except Exception:
    print("")' "$@"; }
S3PORT=$(free_port)
OBJ=$TMP/s3/$BUCKET # s3rver keeps object KEY in $OBJ/KEY._S3rver_object
obj() { echo "$OBJ/$1._S3rver_object"; }

archive_to() { # CONFIG: PostgreSQL archives through ward-backup with CONFIG
	pg_super $R "ALTER SYSTEM SET archive_command = '$BIN/ward-backup wal-push %p %f --config $1'" &&
		pg_super $R "SELECT pg_reload_conf()" >/dev/null
}
cleanup() {
	[ -n "$SCRATCH" ] && wctl backup scratch-drop --region $R --id "$SCRATCH" >/dev/null 2>&1
	pg_super $R "ALTER SYSTEM RESET archive_command" >/dev/null 2>&1
	pg_super $R "SELECT pg_reload_conf()" >/dev/null 2>&1
	backup_restart "$ETC/backup.yaml" >/dev/null 2>&1
	[ -n "$S3PID" ] && kill "$S3PID" 2>/dev/null
	wait "$S3PID" 2>/dev/null
	rm -f "$CONF"
	rm -rf "$TMP"
}
trap cleanup EXIT

reset_limits() {
	rcli $R admin --scan --pattern 'rl:gateway:*' | while read -r k; do rcli $R admin DEL "$k" >/dev/null; done
}
now_iso() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }
# switch_wal: close the current segment and wait until it is in the bucket.
switch_wal() {
	local seg
	seg=$(pg_super $R "SELECT pg_walfile_name(pg_switch_wal())")
	wait_for 60 test -f "$(obj "cell/wal/$seg")" || { echo "segment $seg not in the bucket" >&2; return 1; }
	echo "$seg"
}
admin() { # SLUG JAR: the tenant, its admin signed in with a changed password
	local out pw
	out=$(wctl tenant create --slug "$1" --region $R --name "PITR S3 $1" --admin-email "admin@$1.example" 2>&1)
	pw=$(j "$out" admin_password)
	reset_limits
	[ "$(status "$(login "$1" "$2" "admin@$1.example" "$pw")")" = 200 ] || return 1
	[ "$(status "$(api "$1" "$2" POST /api/v1/auth/password \
		"{\"current_password\":\"$pw\",\"new_password\":\"$NEWPW\"}")")" = 200 ]
}
ticket() { # SLUG JAR SUBJECT: the new ticket's id
	local out
	out=$(api "$1" "$2" POST /api/v1/tickets "{\"subject\":\"$3\",\"body\":\"body of $3\"}")
	[ "$(status "$out")" = 201 ] && jget "$out" '["id"]'
}
tid() { pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$1'"; }
live_has_ticket() { is "$(pg_super $R "SELECT count(*) FROM ticket.tickets WHERE id = '$1'")" "$2"; }
scratch_sql() { PGPASSWORD=$(secret $R pg-admin) psql -X -q -tA -v ON_ERROR_STOP=1 \
	"host=127.0.0.1 port=$SPORT dbname=ward user=postgres" -c "$1"; }
platform_purges() { # TARGET: purge events of the platform chain naming it
	psql -X -tA "$WARD_US_PG" -c "SELECT count(*) FROM audit.events WHERE tenant_id IS NULL AND type = 'backup' AND action = 'purge' AND target = '$1'"
}
export -f platform_purges

# ------------------------------------------------------------------ S3 target
printf 'S3RVER' >"$SEC/s3-pitr"
chown "$WUSER" "$SEC/s3-pitr" 2>/dev/null || true
chmod 600 "$SEC/s3-pitr"
mkdir -p "$TMP/s3"
check "s3rver starts on loopback" start_s3
sed -e '/^  dir: /d' -e '/^  daily_at: /d' "$ETC/backup.yaml" >"$CONF"
cat >>"$CONF" <<EOF
  daily_at: "23:59"
  s3:
    endpoint: http://127.0.0.1:$S3PORT
    bucket: $BUCKET
    region: us-east-1
    access_key: S3RVER
    secret_key_file: $SEC/s3-pitr
    retries: 2
EOF
chown "$WUSER" "$CONF" 2>/dev/null || true
chmod 600 "$CONF"
check "ward-backup restarts with the S3 target" backup_restart "$CONF"
check "PostgreSQL archives through ward-backup with the S3 configuration" archive_to "$CONF"
check "... as SHOW archive_command says" has "$(pg_super $R "SHOW archive_command")" "$CONF"
# pg_reload_conf() returns before the archiver has read the new archive_command: a
# segment closed at once may still go to the local directory. Switch (after a WAL
# record, or the switch is a no-op) until one lands in the bucket.
to_bucket() {
	local seg i
	for i in 1 2 3 4 5 6; do
		seg=$(pg_super $R "SELECT pg_logical_emit_message(false, 'ward-test', 'switch'); SELECT pg_walfile_name(pg_switch_wal())" | tail -1)
		wait_for 20 test -f "$(obj "cell/wal/$seg")" && { echo "$seg"; return 0; }
	done
	return 1
}
SEGS=$(to_bucket)
check "a WAL switch lands in the bucket" test -n "$SEGS"
refuse "... and not in the local directory" test -e "$BK/cell/wal/$SEGS"

# ------------------------------------------------------------------ base, writes, T
check "tenant $S1 and its admin" admin "$S1" "$TMP/j1"
check "tenant $S2 and its admin" admin "$S2" "$TMP/j2"
T1ID=$(tid "$S1")
A1=$(ticket "$S1" "$TMP/j1" "first write A")
check "ticket A of $S1 (before the base backup)" test -n "$A1"
out=$(wctl backup base --region $R 2>&1)
BASE=$(j "$out" base_backup_id)
check "wardctl backup base to S3" test -n "$BASE"
[ -z "$BASE" ] && echo "# $out"
check "its manifest and first chunk are in the bucket" \
	test -f "$(obj "cell/base/$BASE/manifest")" -a -f "$(obj "cell/base/$BASE/chunk-000000")"
refuse "... not in the local directory" test -e "$BK/cell/base/$BASE"
SEG0=$(switch_wal)
A2=$(ticket "$S1" "$TMP/j1" "second write A2")
check "ticket A2 of $S1 (after the base backup, before T)" test -n "$A2"
sleep 1.2
T=$(now_iso)
SEGT=$(pg_super $R "SELECT pg_walfile_name(pg_current_wal_lsn())")
sleep 1.2
B1=$(ticket "$S1" "$TMP/j1" "write B after T")
C2=$(ticket "$S2" "$TMP/j2" "write C of the other tenant after T")
check "tickets B ($S1) and C ($S2) after T" test -n "$B1" -a -n "$C2"
out=$(wctl tenant create --slug "$S3" --region $R --name "late" --admin-email "a@$S3.example" 2>&1)
check "tenant $S3 created after T" test -n "$(j "$out" admin_password)"
SEG1=$(switch_wal)
check "the segments after T are in the bucket" test -n "$SEG1"
refuse "no tenant slug in clear in the bucket" grep -rqa "$S3" "$TMP/s3"
refuse "no slug of the base backup's tenants in clear in the bucket" grep -rqa "$S1" "$TMP/s3"
found=""
for f in "$OBJ"/cell/wal/0000*._S3rver_object; do
	n=$(basename "$f" ._S3rver_object)
	[[ "$n" < "$SEG0" ]] && continue
	as_user "$BIN/ward-backup" wal-fetch "$n" "$TMP/w/plain" --config "$CONF" >/dev/null 2>&1 || continue
	grep -qa "$S3" "$TMP/w/plain" && found=$n
	rm -f "$TMP/w/plain"
	[ -n "$found" ] && break
done
check "wal-fetch from S3 decrypts a segment that does hold the slug" test -n "$found"

# ------------------------------------------------------------------ the cell at T, from S3
# The restore runs on ward-backup's worker thread: the daemon answers pings meanwhile.
wctl backup restore --region $R --to "$T" >"$TMP/restore.out" 2>&1 &
RUN=$!
check "the restore is under way (a scratch directory)" wait_for 30 bash -c \
	"ls -d '$WARD_VAR/$R/scratch'/ward-pitr-* >/dev/null 2>&1"
check "ward-backup answers a ping during the restore" wctl ping --region $R --service backup --timeout-ms 3000
check "... while the restore is still running" kill -0 $RUN
wait $RUN
out=$(cat "$TMP/restore.out")
SCRATCH=$(j "$out" scratch_id)
SPORT=$(j "$out" port)
check "restore --region --to from S3: a scratch cluster" test -n "$SCRATCH" -a -n "$SPORT"
[ -z "$SCRATCH" ] && echo "# $out"
check "it was rebuilt from the base backup in the bucket" bash -c "[ -n '$BASE' ] && [ '$(j "$out" base_backup_id)' = '$BASE' ]"
check "scratch at T: ticket A present" is "$(scratch_sql "SELECT count(*) FROM ticket.tickets WHERE id = '$A1'")" 1
check "scratch at T: ticket A2 (WAL from S3) present" is "$(scratch_sql "SELECT count(*) FROM ticket.tickets WHERE id = '$A2'")" 1
check "scratch at T: ticket B (after T) absent" is "$(scratch_sql "SELECT count(*) FROM ticket.tickets WHERE id = '$B1'")" 0
check "scratch at T: tenant $S3 (after T) absent" is "$(scratch_sql "SELECT count(*) FROM tenant.tenants WHERE slug = '$S3'")" 0
out=$(wctl backup scratch-drop --region $R --id "$SCRATCH" 2>&1)
check "scratch-drop" is "$(j "$out" dropped)" true
SCRATCH=""

# A segment object altered in the bucket: refused by name, nothing left behind.
cp -p "$(obj "cell/wal/$SEGT")" "$TMP/seg.orig"
python3 - "$(obj "cell/wal/$SEGT")" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[len(b) // 2] ^= 0x40
open(p, 'wb').write(bytes(b))
EOF
out=$(wctl backup restore --region $R --to "$T" 2>&1)
check "a corrupted segment in the bucket: a clear error naming it" has "$out" "WAL segment $SEGT fails authentication"
check "... no scratch cluster left behind" bash -c "test -z \"\$(ls -A '$WARD_VAR/$R/scratch')\""
cp -p "$TMP/seg.orig" "$(obj "cell/wal/$SEGT")"

# ------------------------------------------------------------------ one tenant at T, from S3
out=$(wctl backup restore --region $R --tenant "$S1" --to "$T" 2>&1)
check "restore --tenant --to from S3: $S1 restored into the live cell" is "$(j "$out" restored)" true
[ "$(j "$out" restored)" = true ] || echo "# $out"
check "live: tickets A and A2 of $S1 present" bash -c "[ \"\$(psql -X -tA '$WARD_US_PG' -c \"SELECT count(*) FROM ticket.tickets WHERE id IN ('$A1', '$A2')\")\" = 2 ]"
check "live: ticket B of $S1 (after T) gone" live_has_ticket "$B1" 0
check "live: ticket C of the other tenant untouched" live_has_ticket "$C2" 1
check "the restore is an audit event of the tenant" wait_for 20 bash -c \
	"[ \"\$(psql -X -tA '$WARD_US_PG' -c \"SELECT count(*) FROM audit.events WHERE tenant_id = '$T1ID' AND action = 'restore-pitr'\")\" -ge 1 ]"

# ------------------------------------------------------------------ retention in the bucket
out=$(wctl backup base --region $R 2>&1)
BASE2=$(j "$out" base_backup_id)
START2=$(j "$out" start_wal)
check "a second base backup to S3" test -n "$BASE2" -a -n "$START2"
LATER=$(( $(date +%s) * 1000 + 36 * 86400 * 1000 ))
WALPURGES=$(platform_purges cell/wal)
out=$(wctl backup pitr-expire --region $R --now "$LATER" 2>&1)
check "pitr-expire 36 days later: $BASE purged" has "$(j "$out" purged_base_backups)" "$BASE"
check "... its objects gone from the bucket, $BASE2 kept" bash -c \
	"! test -e '$(obj "cell/base/$BASE/manifest")' && ! test -e '$(obj "cell/base/$BASE/chunk-000000")' &&
	 test -f '$(obj "cell/base/$BASE2/manifest")'"
check "... WAL before $START2 purged from the bucket" test "$(j "$out" purged_wal_segments)" -ge 1
check "... $SEG0 among them" bash -c "[ -n '$SEG0' ] && ! test -e '$(obj "cell/wal/$SEG0")'"
check "... the WAL from $START2 kept" test -f "$(obj "cell/wal/$START2")"
check "the base backup purge is an audit event of the platform" wait_for 20 bash -c "[ \"\$(platform_purges '$BASE')\" = 1 ]"
check "the WAL purge is an audit event of the platform" wait_for 20 bash -c "[ \"\$(platform_purges cell/wal)\" -gt '$WALPURGES' ]"
wctl audit list --region $R --type backup --action purge >"$TMP/ev" 2>&1
check "... wardctl audit list shows it: reason, the bucket" bash -c \
	"grep -q '$BASE' '$TMP/ev' && grep -q retention '$TMP/ev' && grep -q 's3://$BUCKET' '$TMP/ev'"
grep -q "$BASE" "$TMP/ev" || head -c 600 "$TMP/ev" | sed 's/^/# /'
exit 0
