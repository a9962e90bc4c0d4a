#!/usr/bin/env bash
# test_backup_s3.sh — issue 7: off-site backups to an S3-compatible store (a real
# s3rver from tests/node on loopback, plain HTTP), through the uk cell's ward-backup
# reconfigured with backup.s3 (then put back as it was):
#   run → objects in the bucket, none plaintext; verify and restore from S3;
#   wrong credentials → a clear error, no backup recorded;
#   s3rver killed mid-upload (uploads throttled by a slow proxy) → the run fails
#   cleanly (no catalog row, no manifest naming a missing chunk); killed and restarted
#   within the retry window → the run completes and verifies;
#   heartbeats and pings go on during a long backup (the job is off the event loop);
#   retention against a given clock (backup prune --now): daily copies after 35 days
#   (the newest kept), a closed tenant's backups 60 days after closure, gone from the
#   bucket, each purge an audit event;
#   the daily run verifies and publishes hb:backup:last-verified, which the status
#   page shows (uk-backups), degraded when the last verify failed or is too old.
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"

R=uk
P=$(port_of $R HTTPS)
TMP=$(mktemp -d /tmp/ward-backup-s3.XXXXXX)
chmod 755 "$TMP"
. "$(dirname "$0")/lib_api.sh"
ETC=$WARD_VAR/$R/etc
SEC=$WARD_VAR/$R/secrets
BUCKET=ward-backups-$R
SUF=$RANDOM$RANDOM
S=bks3-$SUF
M=s3mark$SUF$RANDOM # must never appear in clear in the bucket
NEWPW='Sturdy-Passphrase-2026!'
S3PORT=$(free_port)
PXPORT=$(free_port)
S3PID=""
PXPID=""

stop_s3() { [ -n "$S3PID" ] && kill -KILL "$S3PID" 2>/dev/null; wait "$S3PID" 2>/dev/null; S3PID=""; }

# In front of s3rver: tests/e2e/s3_sigv4.py, a proxy that checks each request's SigV4
# signature and payload hash with the secret, as S3 does, then forwards it after DELAY
# seconds (a slow link, to kill s3rver mid-upload).
VPORT=$(free_port)
VPID=""
start_proxy() { # PORT DELAY: prints the pid
	python3 "$(dirname "$0")/s3_sigv4.py" "$1" "$S3PORT" "$2" S3RVER >>"$TMP/proxy.log" 2>&1 &
	echo $!
	wait_for 10 bash -c "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", $1)).close()'"
}
stop_proxy() { [ -n "$1" ] && kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

s3_config() { # FILE ENDPOINT ACCESS_KEY RETRIES [DAILY_AT]
	sed -e '/^  dir: /d' -e '/^  daily_at: /d' "$ETC/backup.yaml" >"$1"
	cat >>"$1" <<EOF
  daily_at: "${5:-23:59}"
  chunk_kib: 1
  sort_mib: 0 # every table sorted by PostgreSQL, its rows streamed (the big-table path)
  s3:
    endpoint: $2
    bucket: $BUCKET
    region: eu-west-2
    access_key: $3
    secret_key_file: $SEC/s3-backup
    retries: $4
EOF
	chown "$WUSER" "$1" 2>/dev/null || true
	chmod 600 "$1"
}
cleanup() {
	backup_restart "$ETC/backup.yaml" >/dev/null 2>&1
	stop_proxy "$PXPID"
	stop_proxy "$VPID"
	stop_s3
	rm -rf "$TMP"
}
trap cleanup EXIT

printf 'S3RVER' >"$SEC/s3-backup"
chown "$WUSER" "$SEC/s3-backup" 2>/dev/null || true
chmod 600 "$SEC/s3-backup"
mkdir -p "$TMP/s3"
check "s3rver starts on loopback" start_s3
VPID=$(start_proxy "$VPORT" 0)
check "the SigV4-checking proxy in front of it" test -n "$VPID"

# ------------------------------------------------------------------ a tenant with data
out=$(wctl tenant create --slug "$S" --region $R --name "BK S3 $SUF" --admin-email admin@$S.example 2>&1)
PW=$(echo "$out" | jq_ admin_password)
T=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$S'")
rcli $R admin --scan --pattern 'rl:gateway:*' | while read -r k; do rcli $R admin DEL "$k" >/dev/null; done
check "the tenant's admin logs in" is "$(status "$(login "$S" "$TMP/jar" "admin@$S.example" "$PW")")" 200
check "the admin changes the one-time password" is "$(status "$(api "$S" "$TMP/jar" POST /api/v1/auth/password \
	"{\"current_password\":\"$PW\",\"new_password\":\"$NEWPW\"}")")" 200
login "$S" "$TMP/jar" "admin@$S.example" "$NEWPW" >/dev/null
made=0
for i in $(seq 40); do
	out=$(api "$S" "$TMP/jar" POST /api/v1/tickets "{\"subject\":\"subject $M $i\",\"body\":\"body $M $i $(head -c 600 /dev/zero | tr '\0' x)\"}")
	[ "$(status "$out")" = 201 ] && made=$((made + 1))
done
check "40 tickets with the marker" is "$made" 40
rows() { pg_super $R "SELECT (SELECT count(*) FROM auth.users WHERE tenant_id='$T') + (SELECT count(*) FROM ticket.tickets WHERE tenant_id='$T') + (SELECT count(*) FROM ticket.messages WHERE tenant_id='$T')"; }
ROWS_BEFORE=$(rows)
done_backups() { pg_super $R "SELECT count(*) FROM backup.backups WHERE tenant_id='$T' AND status='done'"; }
objects() { find "$TMP/s3/$BUCKET" -type f -name '*._S3rver_object' 2>/dev/null | sed -e "s|^$TMP/s3/$BUCKET/||" -e 's|._S3rver_object$||' | sort; }
# Every manifest in the bucket has all its chunks, and names only backups that the
# catalog has (a failed run leaves at most orphan chunks, never a manifest).
consistent() {
	local m d n
	for m in $(objects | grep '/manifest$'); do
		d=${m%/manifest}
		n=$(pg_super $R "SELECT chunks FROM backup.backups WHERE id='${d#*/}' AND status='done'")
		[ -n "$n" ] || { echo "manifest without catalog row: $m"; return 1; }
		for i in $(seq 0 $((n - 1))); do
			[ -f "$TMP/s3/$BUCKET/$d/$(printf 'chunk-%06d' "$i")._S3rver_object" ] ||
				{ echo "$m names a missing chunk $i"; return 1; }
		done
	done
}

# ------------------------------------------------------------------ backup to S3
s3_config "$ETC/backup-s3.yaml" "http://127.0.0.1:$VPORT" S3RVER 3
check "ward-backup restarts with the S3 target" backup_restart "$ETC/backup-s3.yaml"
check "it says which target" grep -q "backup target: s3://$BUCKET at http://127.0.0.1:$VPORT" "$WARD_VAR/$R/log/backup.log"
out=$(wctl backup run --region $R --tenant "$S" 2>&1)
B1=$(echo "$out" | jq_ backups 0 backup_id)
check "backup run to S3 (every request SigV4-signed with the payload's hash)" test -n "$B1"
check "the manifest is in the bucket" test -f "$TMP/s3/$BUCKET/$T/$B1/manifest._S3rver_object"
NCH=$(objects | grep -c "^$T/$B1/chunk-")
check "several chunks in the bucket (chunk_kib 1)" test "$NCH" -ge 20
check "  ... as many as the catalog says" is "$NCH" "$(pg_super $R "SELECT chunks FROM backup.backups WHERE id='$B1'")"
refuse "the marker is nowhere in the bucket's files" grep -rqa "$M" "$TMP/s3"
refuse "no table name or row JSON in clear" grep -rqaE 'ticket\.tickets|tenant_id|subject_enc' "$TMP/s3/$BUCKET/$T"
refuse "nothing left in the local directory" test -e "$WARD_VAR/$R/backups/$T/$B1"
out=$(wctl backup verify --region $R --tenant "$S" 2>&1)
check "verify from S3: counts and checksums match" is "$(echo "$out" | jq_ ok)" true
check "the bucket is consistent" consistent

# A chunk altered in the bucket: refused.
CH=$TMP/s3/$BUCKET/$T/$B1/chunk-000003._S3rver_object
cp -p "$CH" "$TMP/chunk.orig"
python3 - "$CH" <<'PY'
import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[30]^=1; open(p,'wb').write(b)
PY
refuse "a chunk altered in the bucket is refused" wctl backup verify --region $R --tenant "$S"
cp -p "$TMP/chunk.orig" "$CH"
check "  ... and verifies again once put back" wctl backup verify --region $R --tenant "$S"

# ------------------------------------------------------------------ restore from S3
check "tenant delete" wctl tenant delete --slug "$S"
check "live rows gone" is "$(rows)" 0
out=$(wctl backup restore --region $R --tenant "$S" 2>&1)
check "restore from S3" is "$(echo "$out" | jq_ restored)" true
check "every row back" is "$(rows)" "$ROWS_BEFORE"
rcli $R admin --scan --pattern 'rl:gateway:*' | while read -r k; do rcli $R admin DEL "$k" >/dev/null; done
check "login with the changed password works again" is "$(status "$(login "$S" "$TMP/jar2" "admin@$S.example" "$NEWPW")")" 200
out=$(api "$S" "$TMP/jar2" GET "/api/v1/tickets?limit=100")
check "tickets read back decrypted" bash -c "grep -qF 'subject $M 17' <<<'$out'"

# ------------------------------------------------------------------ wrong credentials
printf 'not-the-secret' >"$SEC/s3-backup-bad"
chown "$WUSER" "$SEC/s3-backup-bad" 2>/dev/null || true
chmod 600 "$SEC/s3-backup-bad"
s3_config "$ETC/backup-s3bad.yaml" "http://127.0.0.1:$VPORT" NOT-A-KEY 3
sed -i "s|secret_key_file: .*|secret_key_file: $SEC/s3-backup-bad|" "$ETC/backup-s3bad.yaml"
backup_restart "$ETC/backup-s3bad.yaml"
before=$(done_backups)
out=$(wctl backup run --region $R --tenant "$S" 2>&1)
check "wrong credentials: the run fails" bash -c "[ -z '$(echo "$out" | jq_ backups 0 backup_id)' ]"
check "  ... with a clear error (HTTP 403, InvalidAccessKeyId, credentials)" \
	bash -c "grep -q '403' <<<'$out' && grep -q 'InvalidAccessKeyId' <<<'$out' && grep -q 'credentials' <<<'$out'"
check "  ... and no backup recorded" is "$(done_backups)" "$before"
sed -i "s|access_key: NOT-A-KEY|access_key: S3RVER|" "$ETC/backup-s3bad.yaml"
backup_restart "$ETC/backup-s3bad.yaml"
out=$(wctl backup run --region $R --tenant "$S" 2>&1)
check "right key id, wrong secret: SignatureDoesNotMatch, said clearly" \
	bash -c "grep -q 'SignatureDoesNotMatch' <<<'$out' && grep -q 'credentials' <<<'$out'"
check "  ... and no backup recorded" is "$(done_backups)" "$before"

# ------------------------------------------------------------------ killed mid-upload
PXPID=$(start_proxy "$PXPORT" 0.25)
s3_config "$ETC/backup-s3slow.yaml" "http://127.0.0.1:$PXPORT" S3RVER 2
backup_restart "$ETC/backup-s3slow.yaml"
before=$(done_backups)
hb_at() { rcli $R admin GET hb:backup:backup-1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["at_ms"])' 2>/dev/null; }
wctl backup run --region $R --tenant "$S" >"$TMP/run1.out" 2>&1 &
RUN=$!
check "the throttled upload is under way" wait_for 20 bash -c "[ \$(find '$TMP/s3/$BUCKET/$T' -newer '$TMP/run1.out' -name 'chunk-*._S3rver_object' | wc -l) -ge 3 ]"
hb1=$(hb_at)
sleep 6.5
hb2=$(hb_at)
check "heartbeats go on during the backup" bash -c "[ -n '$hb1' ] && [ -n '$hb2' ] && [ '$hb2' -gt '$hb1' ]"
check "ward-backup answers a ping during the backup" wctl ping --region $R --service backup --timeout-ms 3000
check "  ... which is still running" kill -0 $RUN
stop_s3
wait $RUN
rc=$?
check "s3rver killed mid-upload: the run fails" test "$rc" -ne 0
check "  ... saying why" bash -c "grep -qiE 'connect|refused|s3' '$TMP/run1.out'"
check "  ... no backup recorded" is "$(done_backups)" "$before"
start_s3
check "  ... and the bucket has no manifest naming a missing chunk" consistent
check "the earlier backup still verifies" wctl backup verify --region $R --tenant "$S"

# Killed and back within the retry window: the run completes.
s3_config "$ETC/backup-s3slow.yaml" "http://127.0.0.1:$PXPORT" S3RVER 6
backup_restart "$ETC/backup-s3slow.yaml"
wctl backup run --region $R --tenant "$S" >"$TMP/run2.out" 2>&1 &
RUN=$!
sleep 3
stop_s3
sleep 1
start_s3
wait $RUN
rc=$?
B2=$(jq_ backups 0 backup_id <"$TMP/run2.out")
check "s3rver restarted mid-upload: the run retried and completed" bash -c "[ $rc = 0 ] && [ -n '$B2' ]"
check "  ... the new backup verifies" wctl backup verify --region $R --tenant "$S" --backup "$B2"
check "  ... the bucket is consistent" consistent

# SIGTERM during a backup: the job stops at its next chunk, the caller is answered,
# the daemon exits cleanly, nothing half-recorded.
before=$(done_backups)
wctl backup run --region $R --tenant "$S" >"$TMP/run3.out" 2>&1 &
RUN=$!
wait_for 20 bash -c "[ \$(find '$TMP/s3/$BUCKET/$T' -newer '$TMP/run3.out' -name 'chunk-*._S3rver_object' | wc -l) -ge 2 ]"
BPID=$(pid_of $R backup)
t0=$(date +%s)
kill -TERM "$BPID"
check "SIGTERM mid-backup: ward-backup exits within 15 s" wait_for 15 bash -c "! kill -0 $BPID 2>/dev/null"
wait $RUN
rc=$?
check "  ... the caller gets an answer (an error), not a timeout" bash -c "[ $rc != 0 ] && grep -q 'shutting down' '$TMP/run3.out' && [ \$((\$(date +%s) - $t0)) -lt 30 ]"
check "  ... no backup recorded" is "$(done_backups)" "$before"
check "  ... the bucket is consistent" consistent
check "  ... a clean exit (no sanitizer report, no crash)" bash -c "! grep -qE 'AddressSanitizer|runtime error|Segmentation' '$WARD_VAR/$R/log/backup.stderr'"
stop_proxy "$PXPID"
PXPID=""

# ------------------------------------------------------------------ daily run, status page
s3_config "$ETC/backup-s3.yaml" "http://127.0.0.1:$VPORT" S3RVER 3 "00:00"
pg_super $R "UPDATE backup.schedule SET last_day = '2000-01-01'" >/dev/null
rcli $R admin DEL hb:backup:last-verified >/dev/null
backup_restart "$ETC/backup-s3.yaml"
lv() { rcli $R admin GET hb:backup:last-verified; }
check "the daily run verifies and publishes hb:backup:last-verified" \
	wait_for 60 bash -c "[ -n \"\$(rcli $R admin GET hb:backup:last-verified)\" ]"
check "  ... ok, for this region, just now" bash -c "lv=\$(rcli $R admin GET hb:backup:last-verified); python3 -c 'import json,sys,time; d=json.loads(sys.argv[1]); assert d[\"ok\"] is True and d[\"region\"] == \"$R\" and abs(d[\"at_ms\"]/1000 - time.time()) < 120, d' \"\$lv\""
check "  ... the daily backup of the tenant is verified in the catalog" \
	bash -c "[ \$(pg_super $R \"SELECT count(*) FROM backup.backups WHERE tenant_id='$T' AND verify_ok AND started_at > now() - interval '2 minutes'\") -ge 1 ]"
SP=$((WARD_PORT_BASE + 30))
st() { curl -sS --max-time 5 --cacert "$WARD_CA" --resolve "status.$WARD_DOMAIN:$SP:127.0.0.1" "https://status.$WARD_DOMAIN:$SP$1"; }
comp() { st /api/v2/components.json | python3 -c 'import json,sys; print([c["status"] for c in json.load(sys.stdin)["components"] if c["id"] == sys.argv[1]][0])' "$1"; }
export -f st comp
export SP
check "status page: uk-backups operational" wait_for 20 bash -c '[ "$(comp uk-backups)" = operational ]'
check "  ... shows the last verified backup" wait_for 20 bash -c "st /api/v2/components.json | grep -q 'last verified'"
now_ms=$(($(date +%s) * 1000))
rcli $R admin SET hb:backup:last-verified "{\"region\":\"$R\",\"at_ms\":$now_ms,\"ok\":false,\"checked_ms\":$now_ms}" >/dev/null
check "a failed verify: uk-backups degraded" wait_for 20 bash -c '[ "$(comp uk-backups)" = degraded_performance ]'
old=$((now_ms - 3 * 86400 * 1000))
rcli $R admin SET hb:backup:last-verified "{\"region\":\"$R\",\"at_ms\":$old,\"ok\":true,\"checked_ms\":$old}" >/dev/null
check "a last verified backup three days old: degraded" wait_for 20 bash -c '[ "$(comp uk-backups)" = degraded_performance ]'
rcli $R admin SET hb:backup:last-verified "{\"region\":\"$R\",\"at_ms\":$now_ms,\"ok\":true,\"checked_ms\":$now_ms}" >/dev/null
check "fresh and ok: operational again" wait_for 20 bash -c '[ "$(comp uk-backups)" = operational ]'

# ------------------------------------------------------------------ retention
NB=$(done_backups)
NEWEST=$(pg_super $R "SELECT id FROM backup.backups WHERE tenant_id='$T' AND status='done' ORDER BY started_at DESC LIMIT 1")
out=$(wctl backup prune --region $R --now "$(date -u -d '+34 days' +%Y-%m-%dT%H:%M:%SZ)" 2>&1)
check "prune as of 34 days on: nothing of the tenant purged" is "$(done_backups)" "$NB"
out=$(wctl backup prune --region $R --now "$(date -u -d '+36 days' +%Y-%m-%dT%H:%M:%SZ)" 2>&1)
check "prune as of 36 days on: daily copies past 35 days purged" is "$(done_backups)" 1
check "  ... the newest kept" is "$(pg_super $R "SELECT id FROM backup.backups WHERE tenant_id='$T' AND status='done'")" "$NEWEST"
PURGED=$(pg_super $R "SELECT id FROM backup.backups WHERE tenant_id='$T' AND status='purged'")
check "  ... the purged ones are gone from the bucket" bash -c "for b in $(echo $PURGED); do [ ! -e '$TMP/s3/$BUCKET/$T/'\$b ] || exit 1; done"
purge_audited() { # every purged backup of the tenant has its audit event
	local b
	for b in $(pg_super $R "SELECT id FROM backup.backups WHERE tenant_id='$T' AND status='purged'"); do
		[ "$(pg_super $R "SELECT count(*) FROM audit.events WHERE tenant_id='$T' AND type='backup' AND action='purge' AND target='$b'")" = 1 ] || { echo "no purge event for $b"; return 1; }
	done
}
check "  ... each purge an audit event" wait_for 15 purge_audited
check "tenant delete again" wctl tenant delete --slug "$S"
out=$(wctl backup prune --region $R --now "$(date -u -d '+59 days' +%Y-%m-%dT%H:%M:%SZ)" 2>&1)
check "59 days after closure: the closed tenant's backup and key are kept" \
	bash -c "[ \$(pg_super $R \"SELECT count(*) FROM backup.backups WHERE tenant_id='$T' AND status='done'\") = 1 ] && [ \$(pg_super $R \"SELECT count(*) FROM tenant.closed_keys WHERE tenant_id='$T'\") = 1 ]"
out=$(wctl backup prune --region $R --now "$(date -u -d '+61 days' +%Y-%m-%dT%H:%M:%SZ)" 2>&1)
check "61 days after closure: every backup of the tenant purged" is "$(done_backups)" 0
check "  ... its kept key destroyed" is "$(pg_super $R "SELECT count(*) FROM tenant.closed_keys WHERE tenant_id='$T'")" 0
check "  ... nothing of it left in the bucket (orphan chunks of the killed run too)" bash -c "[ \$(find '$TMP/s3/$BUCKET/$T' -type f -name '*._S3rver_object' 2>/dev/null | wc -l) = 0 ]"
check "  ... each purge an audit event" wait_for 15 purge_audited
refuse "  ... and it cannot be restored any more" wctl backup restore --region $R --tenant "$S"
refuse "prune --now with a malformed time is refused" wctl backup prune --region $R --now yesterday
