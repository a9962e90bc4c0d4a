#!/usr/bin/env bash
# test_pitr.sh — issue 7, point-in-time recovery of a cell (services/backup/backup_wal.c):
# the cell's PostgreSQL archives every WAL segment through `ward-backup wal-push`
# (encrypted: a tenant slug written after the base backup is not in clear in the
# archive, yet is there once decrypted); `wardctl backup base` takes an encrypted
# base backup; `wardctl backup restore --region R --to T` rebuilds a scratch cluster
# at T between two writes (the first present, the second absent);
# `--tenant S --to T` puts one tenant back to T in the live cell while another
# tenant's later writes stay; a missing or corrupted WAL segment gives a clear error
# and nothing restored; wal-push fails (non-zero) rather than lose or overwrite a
# segment; retention keeps what 35 days need and drops the rest, each purge an audit
# event of the platform.
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_api.sh"

R=eu
P=$(port_of $R HTTPS)
TMP=$(mktemp -d /tmp/ward-pitr-e2e.XXXXXX)
chmod 755 "$TMP"
mkdir "$TMP/w" && chown "$WUSER" "$TMP/w" 2>/dev/null # wal-fetch runs as the daemons' user
SUF=$RANDOM$RANDOM
S1=pitr-a-$SUF
S2=pitr-b-$SUF
S3=pitr-late-$SUF # created after T: its slug is the plaintext marker of the WAL test
BK=$WARD_VAR/$R/backups
CONF=$WARD_VAR/$R/etc/backup.yaml
NEWPW='Sturdy-Passphrase-2026!'
SCRATCH=""
HOLD=$TMP/hold
cleanup() {
	[ -n "$SCRATCH" ] && "$BIN/wardctl" backup scratch-drop --region $R --id "$SCRATCH" >/dev/null 2>&1
	# put back whatever a failed step left aside
	if [ -d "$HOLD" ]; then mv "$HOLD"/* "$BK/cell/wal/" 2>/dev/null; fi
	rm -rf "$TMP"
}
trap cleanup EXIT

has() { case $1 in *"$2"*) return 0 ;; esac; echo "'$1' lacks '$2'"; return 1; }
j() { python3 -c 'import json,sys
try:
    d = json.loads(sys.argv[1])
    for k in sys.argv[2:]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    print(str(d).lower() if isinstance(d, bool) else d)
except Exception:
    print("")' "$@"; }
reset_limits() {
	rcli $R admin --scan --pattern 'rl:gateway:*' | while read -r k; do rcli $R admin DEL "$k" >/dev/null; done
}
now_iso() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }
# switch_wal: close the current segment and wait until it is in the archive.
switch_wal() {
	local seg
	seg=$(pg_super $R "SELECT pg_walfile_name(pg_switch_wal())")
	wait_for 60 test -f "$BK/cell/wal/$seg" || { echo "segment $seg not archived"; return 1; }
	echo "$seg"
}
# admin SLUG JAR: log in as the tenant's admin and change the one-time password.
admin() {
	local out pw
	out=$(wctl tenant create --slug "$1" --region $R --name "PITR $1" --admin-email "admin@$1.example" 2>&1)
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

# ------------------------------------------------------------------ archiving
check "archive_command hands segments to ward-backup" \
	has "$(pg_super $R "SHOW archive_command")" "ward-backup wal-push"
check "tenant $S1 and its admin" admin "$S1" "$TMP/j1"
check "tenant $S2 and its admin" admin "$S2" "$TMP/j2"
T1ID=$(tid "$S1")
A1=$(ticket "$S1" "$TMP/j1" "first write A")
check "ticket A of $S1 (before the base backup)" test -n "$A1"
out=$(wctl backup base --region $R 2>&1)
BASE=$(j "$out" base_backup_id)
check "wardctl backup base: an encrypted base backup" test -n "$BASE"
check "its manifest and chunks are in the target, private" \
	bash -c "test -f '$BK/cell/base/$BASE/manifest' -a -f '$BK/cell/base/$BASE/chunk-000000' &&
		 test \"\$(stat -c %a '$BK/cell/base/$BASE/manifest')\" = 600"
refuse "no tenant slug in clear in the base backup" grep -rqa "$S1" "$BK/cell/base/$BASE"
SEG0=$(switch_wal)
check "a WAL switch is archived" test -n "$SEG0"
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
check "the segments after T are archived" test -n "$SEG1"

# The WAL archive is ciphertext: the slug written after the base backup is in the
# archived segments only encrypted (and the test can see it once decrypted).
refuse "no tenant slug in clear in the WAL archive" grep -rqa "$S3" "$BK/cell/wal"
refuse "no audit action name in clear in the WAL archive" grep -rqa "tenant.create" "$BK/cell/wal"
found=""
for f in "$BK"/cell/wal/0000*; do
	n=$(basename "$f")
	[[ "$n" < "$SEG0" ]] && continue
	as_user "$BIN/ward-backup" wal-fetch "$n" "$TMP/w/plain" --config "$CONF" >/dev/null 2>&1 || continue
	grep -qa "$S3" "$TMP/w/plain" && found=$n
	rm -f "$TMP/w/plain"
	[ -n "$found" ] && break
done
check "decrypted with the cell key (wal-fetch), a segment does hold the slug" test -n "$found"
check "archived segments are private (0600)" is "$(stat -c %a "$BK/cell/wal/$SEG1")" 600

# ------------------------------------------------------------------ the cell at T
out=$(wctl backup restore --region $R --to "$T" 2>&1)
SCRATCH=$(j "$out" scratch_id)
SPORT=$(j "$out" port)
check "wardctl backup restore --region --to: a scratch cluster, and where it runs" \
	test -n "$SCRATCH" -a -n "$SPORT"
[ -z "$SCRATCH" ] && echo "# $out"
check "it was rebuilt from the base backup" is "$(j "$out" base_backup_id)" "$BASE"
check "scratch at T: ticket A (in the base backup) present" is "$(scratch_sql "SELECT count(*) FROM ticket.tickets WHERE id = '$A1'")" 1
check "scratch at T: ticket A2 (replayed from the WAL) present" is "$(scratch_sql "SELECT count(*) FROM ticket.tickets WHERE id = '$A2'")" 1
check "scratch at T: ticket B (after T) absent" is "$(scratch_sql "SELECT count(*) FROM ticket.tickets WHERE id = '$B1'")" 0
check "scratch at T: tenant $S1 present, $S3 (after T) absent" \
	is "$(scratch_sql "SELECT string_agg(slug, ',' ORDER BY slug) FROM tenant.tenants WHERE slug IN ('$S1', '$S3')")" "$S1"
check "scratch cluster is promoted (read-write)" is "$(scratch_sql "SELECT pg_is_in_recovery()")" f
check "scratch cluster does not archive into the cell's archive" is "$(scratch_sql "SHOW archive_mode")" off
check "the live cell is untouched: ticket B is there" live_has_ticket "$B1" 1
out=$(wctl backup scratch-drop --region $R --id "$SCRATCH" 2>&1)
check "scratch-drop stops and removes it" is "$(j "$out" dropped)" true
check "its directory is gone" bash -c "! test -e '$WARD_VAR/$R/scratch/ward-pitr-$SCRATCH'"
SCRATCH=""

# ------------------------------------------------------------------ bad input
check "no scratch cluster left over" bash -c "test -z \"\$(ls -A '$WARD_VAR/$R/scratch')\""
out=$(wctl backup restore --region $R --to 2001-01-01T00:00:00Z 2>&1)
check "a time before every base backup: a clear error" has "$out" "no base backup"
mkdir -p "$HOLD"
for f in "$BK"/cell/wal/0000*; do n=$(basename "$f"); [[ "$n" < "$SEGT" ]] || mv "$f" "$HOLD/"; done
out=$(wctl backup restore --region $R --to "$T" 2>&1)
rc=$?
check "missing WAL segment: restore fails" test "$rc" -ne 0
check "missing WAL segment: the error names it" has "$out" "WAL segment $SEGT is missing"
out=$(wctl backup restore --region $R --tenant "$S1" --to "$T" 2>&1)
check "missing WAL segment, one tenant: a clear error" has "$out" "is missing from the archive"
check "... and nothing restored: ticket B of $S1 still live" live_has_ticket "$B1" 1
check "... no scratch cluster left behind" bash -c "test -z \"\$(ls -A '$WARD_VAR/$R/scratch')\""
mv "$HOLD"/* "$BK/cell/wal/"
cp "$BK/cell/wal/$SEGT" "$TMP/seg.orig"
python3 - "$BK/cell/wal/$SEGT" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[len(b) // 2] ^= 0x40
open(p, 'wb').write(bytes(b))
EOF
out=$(wctl backup restore --region $R --to "$T" 2>&1)
check "corrupted WAL segment: a clear error naming it" has "$out" "WAL segment $SEGT fails authentication"
check "... no scratch cluster left behind" bash -c "test -z \"\$(ls -A '$WARD_VAR/$R/scratch')\""
cp "$TMP/seg.orig" "$BK/cell/wal/$SEGT"

# wal-push never loses nor overwrites a segment: any failure is a non-zero exit.
echo "not a segment" >"$TMP/fake"
chmod 644 "$TMP/fake"
refuse "wal-push of other content under an archived name fails" \
	as_user "$BIN/ward-backup" wal-push "$TMP/fake" "$SEG1" --config "$CONF"
check "... and the archived segment is unchanged (still opens)" \
	as_user "$BIN/ward-backup" wal-fetch "$SEG1" "$TMP/w/seg1" --config "$CONF"
refuse "wal-push of a missing file fails" \
	as_user "$BIN/ward-backup" wal-push "$TMP/none" FFFFFFFF0000000000000001 --config "$CONF"
refuse "wal-push of a bad name fails" \
	as_user "$BIN/ward-backup" wal-push "$TMP/fake" ../../etc/x --config "$CONF"
chmod 500 "$BK/cell/wal"
refuse "wal-push into an unwritable archive fails" \
	as_user "$BIN/ward-backup" wal-push "$TMP/fake" FFFFFFFF0000000000000002 --config "$CONF"
chmod 700 "$BK/cell/wal"
refuse "wal-fetch of an absent segment fails" \
	as_user "$BIN/ward-backup" wal-fetch FFFFFFFF0000000000000003 "$TMP/w/x" --config "$CONF"

# ------------------------------------------------------------------ one tenant at T
out=$(wctl backup restore --region $R --tenant "$S1" --to "$T" 2>&1)
check "wardctl backup restore --tenant --to: $S1 restored into the live cell" is "$(j "$out" restored)" true
[ "$(j "$out" restored)" = true ] || echo "# $out"
check "live: ticket A of $S1 present" live_has_ticket "$A1" 1
check "live: ticket A2 of $S1 present" live_has_ticket "$A2" 1
check "live: ticket B of $S1 (after T) gone" live_has_ticket "$B1" 0
check "live: ticket C of the other tenant (after T) untouched" live_has_ticket "$C2" 1
check "live: tenant $S3 (after T) untouched" is "$(tid "$S3" | wc -l)" 1
check "sessions of the past are revoked: the old session is refused" \
	is "$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$WARD_CA" --resolve "$S1.$R.$WARD_DOMAIN:$P:127.0.0.1" \
		-b "$TMP/j1" "https://$S1.$R.$WARD_DOMAIN:$P/api/v1/tickets/$A1")" 401
reset_limits
check "the admin signs in again (password as at T)" is "$(status "$(login "$S1" "$TMP/j1" "admin@$S1.example" "$NEWPW")")" 200
check "the API agrees: A readable, B not found" bash -c "
	[ \"\$(curl -sS -o /dev/null -w '%{http_code}' --cacert '$WARD_CA' --resolve '$S1.$R.$WARD_DOMAIN:$P:127.0.0.1' \
		-b '$TMP/j1' 'https://$S1.$R.$WARD_DOMAIN:$P/api/v1/tickets/$A1')\" = 200 ] &&
	[ \"\$(curl -sS -o /dev/null -w '%{http_code}' --cacert '$WARD_CA' --resolve '$S1.$R.$WARD_DOMAIN:$P:127.0.0.1' \
		-b '$TMP/j1' 'https://$S1.$R.$WARD_DOMAIN:$P/api/v1/tickets/$B1')\" = 404 ]"
check "the restore is an audit event of the tenant" wait_for 20 bash -c \
	"[ \"\$(psql -X -tA '$WARD_EU_PG' -c \"SELECT count(*) FROM audit.events WHERE tenant_id = '$T1ID' AND action = 'restore-pitr'\")\" -ge 1 ]"
check "no scratch cluster left after a tenant restore" bash -c "test -z \"\$(ls -A '$WARD_VAR/$R/scratch')\""
out=$(wctl backup restore --region $R --tenant "$S3" --to "$T" 2>&1)
check "a tenant that did not exist at T: a clear error" has "$out" "did not exist at that time"
check "... and it is untouched" is "$(tid "$S3" | wc -l)" 1

# ------------------------------------------------------------------ across a KEK rotation
# The cell key comes from the region KEK: segments and base backups record the KEK
# version they were sealed under, wal-push/wal-fetch read the key ring, so archiving
# goes on after `wardctl key rotate-kek` and a restore replays WAL of both versions.
FAILED0=$(pg_super $R "SELECT failed_count FROM pg_stat_archiver")
out=$(wctl key rotate-kek --region $R 2>&1)
KV=$(j "$out" kek_version)
check "rotate-kek of the cell's region" test -n "$KV"
D1=$(ticket "$S2" "$TMP/j2" "write D after the KEK rotation")
check "ticket D after the rotation" test -n "$D1"
SEG2=$(switch_wal)
check "archiving goes on after rotate-kek (wal-push reads the key ring)" test -n "$SEG2"
check "... with no failed archive attempt since" is "$(pg_super $R "SELECT failed_count FROM pg_stat_archiver")" "$FAILED0"
sleep 1.2
T2=$(now_iso)
sleep 1.2
E1=$(ticket "$S2" "$TMP/j2" "write E after T2")
check "ticket E after T2" test -n "$E1"
SEGE=$(switch_wal)
check "E's segment archived" test -n "$SEGE"
out=$(wctl backup restore --region $R --to "$T2" 2>&1)
SCRATCH=$(j "$out" scratch_id)
SPORT=$(j "$out" port)
check "restore to T2 from the base backup of KEK version 1 and WAL of both versions" test -n "$SCRATCH" -a -n "$SPORT"
[ -z "$SCRATCH" ] && echo "# $out"
check "scratch at T2: ticket D (after the rotation) present, E absent" \
	is "$(scratch_sql "SELECT count(*) FROM ticket.tickets WHERE id = '$D1'")/$(scratch_sql "SELECT count(*) FROM ticket.tickets WHERE id = '$E1'")" "1/0"
out=$(wctl backup scratch-drop --region $R --id "$SCRATCH" 2>&1)
SCRATCH=""
out=$(wctl backup base --region $R 2>&1)
BASEV=$(j "$out" base_backup_id)
check "a base backup after the rotation" test -n "$BASEV"
F1=$(ticket "$S2" "$TMP/j2" "write F after the new base backup")
sleep 1.2
T3=$(now_iso)
sleep 1.2
G1=$(ticket "$S2" "$TMP/j2" "write G after T3") # a commit past T3 ends the replay there
SEGF=$(switch_wal)
out=$(wctl backup restore --region $R --to "$T3" 2>&1)
SCRATCH=$(j "$out" scratch_id)
SPORT=$(j "$out" port)
check "restore to T3 from the base backup sealed under the new KEK version" is "$(j "$out" base_backup_id)" "$BASEV"
[ -z "$SCRATCH" ] && echo "# $out"
check "scratch at T3: tickets D, E and F present, G absent" \
	is "$(scratch_sql "SELECT count(*) FROM ticket.tickets WHERE id IN ('$D1', '$E1', '$F1')")/$(scratch_sql "SELECT count(*) FROM ticket.tickets WHERE id = '$G1'")" 3/0
wctl backup scratch-drop --region $R --id "$SCRATCH" >/dev/null 2>&1
SCRATCH=""

# ------------------------------------------------------------------ retention
out=$(wctl backup base --region $R 2>&1)
BASE2=$(j "$out" base_backup_id)
START2=$(j "$out" start_wal)
check "a second base backup" test -n "$BASE2" -a -n "$START2"
out=$(wctl backup pitr-expire --region $R 2>&1)
check "retention today: every base backup is within 35 days, none purged" \
	is "$(j "$out" purged_base_backups)" "[]"
# (WAL older than the oldest base backup, e.g. the daily one taken at start-up, may
# go: no restore can start before it.)
check "... the WAL a restore to T needs is kept" \
	test -f "$BK/cell/wal/$SEG0" -a -f "$BK/cell/wal/$SEGT" -a -f "$BK/cell/wal/$SEG1"
check "... $BASE and $BASE2 kept" test -f "$BK/cell/base/$BASE/manifest" -a -f "$BK/cell/base/$BASE2/manifest"
LATER=$(( $(date +%s) * 1000 + 36 * 86400 * 1000 ))
out=$(wctl backup pitr-expire --region $R --now "$LATER" 2>&1)
check "retention 36 days later: only the newest base backup is needed" is "$(j "$out" base_backups_kept)" 1
check "... the older ones purged" has "$(j "$out" purged_base_backups)" "$BASE"
check "... its files gone, the newer kept" bash -c "! test -e '$BK/cell/base/$BASE' && test -f '$BK/cell/base/$BASE2/manifest'"
check "... WAL before the kept base backup purged" test "$(j "$out" purged_wal_segments)" -ge 1
check "... none older than its start left" bash -c "for f in '$BK'/cell/wal/0000*; do n=\$(basename \"\$f\"); [[ \"\${n:0:24}\" < '$START2' ]] && exit 1; done; exit 0"
check "... the WAL from its start is kept" test -f "$BK/cell/wal/$START2"
check "the base backup purge is an audit event of the platform (no tenant)" wait_for 20 bash -c \
	"[ \"\$(psql -X -tA '$WARD_EU_PG' -c \"SELECT count(*) FROM audit.events WHERE tenant_id IS NULL AND type = 'backup' AND action = 'purge' AND target = '$BASE'\")\" = 1 ]"
check "the WAL purge too" wait_for 20 bash -c \
	"[ \"\$(psql -X -tA '$WARD_EU_PG' -c \"SELECT count(*) FROM audit.events WHERE tenant_id IS NULL AND action = 'purge' AND target = 'cell/wal'\")\" -ge 1 ]"
exit 0
