#!/usr/bin/env bash
# test_backup.sh — issue 7, pieces 1 and 2: encrypted per-tenant backups through
# q:backup (wardctl backup run|list|verify|restore), nothing plaintext in a backup
# file, tampered chunk / manifest / missing chunk refused, verify into scratch
# tables; wardctl tenant delete (live data gone, login refused), restore of the
# closed tenant whole (login and ticket back), --shred makes restore fail; audit
# events for each; only ward_ops / ward_backup may call the lifecycle functions.
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"

R=eu
P=$(port_of $R HTTPS)
TMP=$(mktemp -d /tmp/ward-backup-e2e.XXXXXX)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT
SUF=$RANDOM$RANDOM
S=bk-$SUF
M=bkmark$SUF$RANDOM # marker: must never appear in clear in a backup file
BK=$WARD_VAR/$R/backups

. "$(dirname "$0")/lib_api.sh" # login_admin, admin_pw; api, jget and login are redefined below
api() { # SLUG JAR METHOD PATH [JSON]: "<status> <body>"
	local slug=$1 jar=$2 m=$3 path=$4 data=${5:-} csrf=""
	[ -f "$jar.csrf" ] && csrf=$(cat "$jar.csrf")
	local args=(-sS --max-time 30 --cacert "$WARD_CA" --resolve "$slug.$R.$WARD_DOMAIN:$P:127.0.0.1"
		-o "$TMP/body" -w '%{http_code}' -X "$m" -H "Origin: https://$slug.$R.$WARD_DOMAIN:$P"
		-b "$jar" -c "$jar")
	[ -n "$csrf" ] && args+=(-H "X-CSRF-Token: $csrf")
	[ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
	local code
	code=$(curl "${args[@]}" "https://$slug.$R.$WARD_DOMAIN:$P$path")
	echo "$code $(cat "$TMP/body" 2>/dev/null)"
}
jget() { python3 -c 'import json,sys
try:
    d = json.loads(sys.argv[1].split(" ", 1)[1] if sys.argv[1][:1].isdigit() and " " in sys.argv[1] else sys.argv[1])
    for k in sys.argv[2:]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    print(str(d).lower() if isinstance(d, bool) else d)
except Exception:
    print("")' "$@"; }
login() {
	local out
	rm -f "$2" "$2.csrf"
	out=$(api "$1" "$2" POST /api/v1/auth/login "{\"email\":\"$3\",\"password\":\"$4\"}")
	[ "${out%% *}" = 200 ] && jget "$out" csrf_token >"$2.csrf"
	echo "${out%% *}"
}
reset_limits() {
	rcli $R admin --scan --pattern 'rl:gateway:*' | while read -r k; do rcli $R admin DEL "$k" >/dev/null; done
}

# ------------------------------------------------------------------ data
out=$(wctl tenant create --slug "$S" --region $R --name "BK $SUF" --admin-email admin@$S.example 2>&1)
PW=$(jget "$out" admin_password)
T=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$S'")
reset_limits
check "login as the tenant's admin" is "$(login_admin "$S" "$TMP/jar" "admin@$S.example" "$PW")" 200
PW=$(admin_pw "$PW") # the one-time password is gone
out=$(api "$S" "$TMP/jar" POST /api/v1/tickets "{\"subject\":\"subject $M\",\"body\":\"body $M\"}")
TK=$(jget "$out" id)
check "a ticket with the marker" is "${out%% *}" 201
ROWS_BEFORE=$(pg_super $R "SELECT (SELECT count(*) FROM auth.users WHERE tenant_id='$T') + (SELECT count(*) FROM ticket.tickets WHERE tenant_id='$T') + (SELECT count(*) FROM ticket.messages WHERE tenant_id='$T')")

# ------------------------------------------------------------------ backup
out=$(wctl backup run --region $R --tenant "$S" 2>&1)
B1=$(jget "$out" backups 0 backup_id)
check "backup run: one backup of the tenant" test -n "$B1"
check "backup files exist (manifest + chunk)" test -f "$BK/$T/$B1/manifest" -a -f "$BK/$T/$B1/chunk-000000"
check "files are private (0600)" is "$(stat -c %a "$BK/$T/$B1/manifest")" 600
refuse "plaintext marker absent from backup files" grep -rqa "$M" "$BK/$T"
refuse "no row JSON or table name in clear" grep -rqaE 'auth\.users|tenant_id|password_hash' "$BK/$T"
check "the ciphertext of the subject is not in clear either" bash -c "! grep -rqa 'admin@$S.example' '$BK/$T'"
out=$(wctl backup list --region $R --tenant "$S" 2>&1)
check "backup list shows it" is "$(jget "$out" backups 0 id)" "$B1"
out=$(wctl backup verify --region $R --tenant "$S" 2>&1)
check "verify: restored into scratch tables, counts and checksums match" is "$(jget "$out" ok)" true
check "verify: rows restored" test "$(jget "$out" rows)" -ge 3
check "verified backup recorded" is "$(pg_super $R "SELECT verify_ok FROM backup.backups WHERE id='$B1'")" t

# ------------------------------------------------------------------ tampering
cp -a "$BK/$T/$B1" "$TMP/orig"
python3 - "$BK/$T/$B1/chunk-000000" <<'PY'
import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[40]^=1; open(p,'wb').write(b)
PY
refuse "a tampered chunk is refused" wctl backup verify --region $R --tenant "$S"
check "  ... and recorded as a failed verify" is "$(pg_super $R "SELECT verify_ok FROM backup.backups WHERE id='$B1'")" f
cp -pf "$TMP/orig/chunk-000000" "$BK/$T/$B1/chunk-000000"
check "the original chunk verifies again" wctl backup verify --region $R --tenant "$S"
head -c 100 "$TMP/orig/manifest" >"$BK/$T/$B1/manifest"
refuse "a truncated manifest is refused" wctl backup verify --region $R --tenant "$S"
python3 - "$TMP/orig/manifest" "$BK/$T/$B1/manifest" <<'PY'
import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[-20]^=0x80; open(sys.argv[2],'wb').write(b)
PY
refuse "a tampered manifest is refused" wctl backup verify --region $R --tenant "$S"
cp -pf "$TMP/orig/manifest" "$BK/$T/$B1/manifest"
rm -f "$BK/$T/$B1/chunk-000000"
refuse "a missing chunk is refused" wctl backup verify --region $R --tenant "$S"
cp -pf "$TMP/orig/chunk-000000" "$BK/$T/$B1/chunk-000000"
check "restored files verify" wctl backup verify --region $R --tenant "$S"

# ------------------------------------------------------------------ orphans
# What a killed run leaves (objects no catalog row names) goes at the next prune,
# audited; never while a run holds the objects lock (a run on another instance).
O=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkdir -p "$BK/$T/$O"
head -c 4096 /dev/urandom >"$BK/$T/$O/chunk-000000"
head -c 64 /dev/urandom >"$BK/$T/$O/manifest"
mkdir -p "$BK/not-a-tenant" && echo keep >"$BK/not-a-tenant/file"
[ "$(id -u)" -eq 0 ] && chown -R --reference="$BK" "$BK/$T/$O" "$BK/not-a-tenant"
psql -X -q "$WARD_EU_PG" -c "SELECT pg_advisory_lock_shared(7370, 1), pg_sleep(15)" >/dev/null 2>&1 &
LOCKER=$!
wait_for 10 bash -c "[ \$(psql -X -tA '$WARD_EU_PG' -c \"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock' AND granted\") -ge 1 ]"
out=$(wctl backup prune --region $R 2>&1)
check "prune while a run holds the objects lock: the orphan is left" test -f "$BK/$T/$O/chunk-000000"
check "  ... and named nowhere" is "$(jget "$out" orphans_removed 0)" ""
kill "$LOCKER" 2>/dev/null
pg_super $R "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock'" >/dev/null
wait "$LOCKER" 2>/dev/null
out=$(wctl backup prune --region $R 2>&1)
check "prune: the orphan's objects are removed" test ! -e "$BK/$T/$O/chunk-000000" -a ! -e "$BK/$T/$O/manifest"
check "  ... and named in the answer" bash -c "grep -q '$O' <<<'$out'"
check "  ... the catalogued backup is untouched" wctl backup verify --region $R --tenant "$S"
check "  ... a key that is no tenant backup is untouched" test -f "$BK/not-a-tenant/file"
check "  ... an audit event (purge, orphan objects)" wait_for 10 bash -c "[ \$(psql -X -tA '$WARD_EU_PG' -c \"SELECT count(*) FROM audit.events WHERE tenant_id='$T' AND type='backup' AND action='purge' AND target='$O'\") -ge 1 ]"
rm -rf "$BK/not-a-tenant"

# ------------------------------------------------------------------ privileges
refuse "ward_ticket cannot close a tenant" pg_as $R ward_ticket "SELECT tenant.lifecycle_close('$T')"
refuse "ward_backup cannot close a tenant" pg_as $R ward_backup "SELECT tenant.lifecycle_close('$T')"
refuse "ward_ops cannot restore rows itself" pg_as $R ward_ops "SELECT tenant.lifecycle_restore_begin('$T')"
refuse "ward_auth cannot list every tenant" pg_as $R ward_auth "SELECT * FROM backup.tenants()"
# A restore puts back only the tenant's own rows: a backup naming another tenant's row
# fails whole (the row is not inserted, even briefly), with the error saying so.
OTHER=$(python3 -c 'import uuid; print(uuid.uuid4())')
out=$(pg_as $R ward_backup "SELECT tenant.lifecycle_restore_rows('$T', 'ticket', 'departments',
	'[{\"id\": \"$(python3 -c 'import uuid; print(uuid.uuid4())')\", \"tenant_id\": \"$OTHER\"}]'::jsonb)" 2>&1)
check "restore rows: another tenant's row fails the restore, named as such" \
	bash -c "grep -q 'rows of another tenant' <<<\"\$1\"" _ "$out"
check "... and nothing of it was inserted" is \
	"$(pg_super $R "SELECT count(*) FROM ticket.departments WHERE tenant_id = '$OTHER'")" 0
refuse "restore of an active tenant is refused" wctl backup restore --region $R --tenant "$S"
check "the gateway cannot send to q:backup (Redis ACL)" \
	bash -c "rcli $R gateway XADD q:backup '*' e x 2>&1 | grep -q NOPERM"

# ------------------------------------------------------------------ delete, restore
check "tenant delete" wctl tenant delete --slug "$S"
check "status closed" is "$(pg_super $R "SELECT status FROM tenant.tenants WHERE id='$T'")" closed
check "live rows removed at once" is "$(pg_super $R "SELECT (SELECT count(*) FROM auth.users WHERE tenant_id='$T') + (SELECT count(*) FROM ticket.tickets WHERE tenant_id='$T') + (SELECT count(*) FROM ticket.messages WHERE tenant_id='$T')")" 0
check "live key gone, wrapped copy kept apart with the closure date" is \
	"$(pg_super $R "SELECT (SELECT count(*) FROM tenant.keys WHERE tenant_id='$T') || '/' || (SELECT count(*) FROM tenant.closed_keys WHERE tenant_id='$T' AND closed_at IS NOT NULL)")" 0/1
reset_limits
check "login refused after closure" bash -c "[ \"\$(echo x)\" = x ] && [ '$(login "$S" "$TMP/jar2" "admin@$S.example" "$PW")' != 200 ]"
check "a delete audit event" wait_for 10 bash -c "[ \$(psql -X -tA '$WARD_EU_PG' -c \"SELECT count(*) FROM audit.events WHERE tenant_id='$T' AND type='tenant' AND action='delete'\") -ge 1 ]"
out=$(wctl backup restore --region $R --tenant "$S" 2>&1)
check "restore of the closed tenant" is "$(jget "$out" restored)" true
check "status active again" is "$(pg_super $R "SELECT status FROM tenant.tenants WHERE id='$T'")" active
check "every row back" is "$(pg_super $R "SELECT (SELECT count(*) FROM auth.users WHERE tenant_id='$T') + (SELECT count(*) FROM ticket.tickets WHERE tenant_id='$T') + (SELECT count(*) FROM ticket.messages WHERE tenant_id='$T')")" "$ROWS_BEFORE"
reset_limits
# (the gateway may still hold the closed tenant's answer for a few seconds)
login_ok() { local i; for i in $(seq 15); do [ "$(login "$S" "$TMP/jar3" "admin@$S.example" "$PW")" = 200 ] && return 0; sleep 1; done; return 1; }
check "login works again (password restored)" login_ok
out=$(api "$S" "$TMP/jar3" GET "/api/v1/tickets/$TK")
check "the ticket reads back decrypted" bash -c "grep -qF 'subject $M' <<<'$out'"
check "a restore audit event" wait_for 10 bash -c "[ \$(psql -X -tA '$WARD_EU_PG' -c \"SELECT count(*) FROM audit.events WHERE tenant_id='$T' AND type='backup' AND action='restore'\") -ge 1 ]"
check "a backup audit event" bash -c "[ \$(psql -X -tA '$WARD_EU_PG' -c \"SELECT count(*) FROM audit.events WHERE tenant_id='$T' AND type='backup' AND action='create'\") -ge 1 ]"

# ------------------------------------------------------------------ shred
check "tenant delete --shred" wctl tenant delete --slug "$S" --shred
check "no wrapped copy left anywhere" is "$(pg_super $R "SELECT (SELECT count(*) FROM tenant.keys WHERE tenant_id='$T' AND wrapped IS NOT NULL) + (SELECT count(*) FROM tenant.closed_keys WHERE tenant_id='$T')")" 0
refuse "restore of a shredded tenant fails" wctl backup restore --region $R --tenant "$S"
refuse "verify of a shredded tenant's backup fails" wctl backup verify --region $R --tenant "$S"
check "nothing half-restored" is "$(pg_super $R "SELECT count(*) FROM auth.users WHERE tenant_id='$T'")" 0
check "a shred audit event" wait_for 10 bash -c "[ \$(psql -X -tA '$WARD_EU_PG' -c \"SELECT count(*) FROM audit.events WHERE tenant_id='$T' AND action='shred'\") -ge 1 ]"
refuse "backup verify without --tenant" wctl backup verify --region $R
refuse "cell point-in-time restore to a time past the archive is refused" wctl backup restore --region $R --to 2030-01-01T00:00:00Z
