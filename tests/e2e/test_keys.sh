#!/usr/bin/env bash
# test_keys.sh — issue 7, key rotation (SPEC §3 `wardctl key`): rotate-kek with live
# traffic over HTTPS (every request succeeds), every DEK (live and of closed tenants)
# re-wrapped under the new KEK version, the old version retired only when nothing is
# wrapped under it, daemons unwrap under the new version without a restart, a backup
# taken before the rotation still verifies, an unknown KEK version is a clear error,
# audit events without key material.
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"

R=uk
P=$(port_of $R HTTPS)
TMP=$(mktemp -d /tmp/ward-keys-e2e.XXXXXX)
chmod 755 "$TMP"
LOOP=
trap '[ -n "$LOOP" ] && kill "$LOOP" 2>/dev/null; rm -rf "$TMP"' EXIT
. "$(dirname "$0")/lib_api.sh"
SUF=$RANDOM$RANDOM
S=keys-$SUF
S2=keys-closed-$SUF
S3=keys-new-$SUF
KEK=$WARD_VAR/$R/secrets/kek
NEWPW='Sturdy-Passphrase-2026!'
jfield() { python3 -c 'import json,sys; d=json.loads(sys.argv[1])
for k in sys.argv[2:]: d = d[int(k)] if isinstance(d, list) else d[k]
print(d)' "$@"; }
reset_limits() {
	rcli $R admin --scan --pattern 'rl:gateway:*' | while read -r k; do rcli $R admin DEL "$k" >/dev/null; done
}
# Wrapped keys (live and closed) whose header names KEK version $1.
wrapped_under() {
	pg_super $R "SELECT count(*) FROM (SELECT wrapped FROM tenant.keys WHERE wrapped IS NOT NULL
		UNION ALL SELECT wrapped FROM tenant.closed_keys) k
		WHERE substring(wrapped from 2 for 4) = int4send($1)"
}
# tenant_admin SLUG JAR: create the tenant, log in, change the one-time password.
tenant_admin() {
	local out pw
	out=$(wctl tenant create --slug "$1" --region $R --name "Keys $1" --admin-email "admin@$1.example") || return 1
	pw=$(jfield "$out" admin_password)
	[ "$(status "$(login "$1" "$2" "admin@$1.example" "$pw")")" = 200 ] || return 1
	[ "$(status "$(api "$1" "$2" POST /api/v1/auth/password \
		"{\"current_password\":\"$pw\",\"new_password\":\"$NEWPW\"}")")" = 200 ] || return 1
	[ "$(status "$(login "$1" "$2" "admin@$1.example" "$NEWPW")")" = 200 ]
}

reset_limits
check "a tenant with an admin (one-time password changed)" tenant_admin "$S" "$TMP/jar"
T=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$S'")
out=$(api "$S" "$TMP/jar" POST /api/v1/tickets '{"subject":"before rotation","body":"old body"}')
check "a ticket before the rotation" is "$(status "$out")" 201
TK0=$(jget "$out" '["id"]')
check "a second tenant, then closed (its keys kept apart for restores)" \
	bash -c "'$BIN/wardctl' tenant create --slug '$S2' --region $R --name Closed --admin-email a@$S2.example >/dev/null &&
		'$BIN/wardctl' tenant delete --slug '$S2' >/dev/null"
check "the closed tenant's key is in tenant.closed_keys" is \
	"$(pg_super $R "SELECT count(*) FROM tenant.closed_keys k JOIN tenant.tenants t ON t.id = k.tenant_id WHERE t.slug = '$S2'")" 1
out=$(wctl backup run --region $R --tenant "$S" 2>&1)
B1=$(jfield "$out" backups 0 backup_id 2>/dev/null)
check "a backup before the rotation" test -n "$B1"
V0=$(jfield "$(wctl key status --region $R)" kek_version)
check "key status: a current KEK version" test -n "$V0"
refuse "retire-kek of the current version is refused" wctl key retire-kek --region $R --version "$V0"
refuse "retire-kek of a version not in the ring is refused" wctl key retire-kek --region $R --version 77
refuse "key: a bad version is a usage error" wctl key retire-kek --region $R --version x
V1=$((V0 + 1))

# ------------------------------------------------------------ live traffic
# Create a ticket and read it back, over and over, as the admin; every status
# goes to a file. Until the stop file appears.
traffic() {
	local n=0 out id JAR=$TMP/jar TMP=$TMP/loop # its own body/headers files (api writes to $TMP)
	mkdir -p "$TMP"
	while [ ! -f "$STOP" ]; do
		n=$((n + 1))
		out=$(api "$S" "$JAR" POST /api/v1/tickets "{\"subject\":\"live $n\",\"body\":\"body $n\"}")
		echo "POST $(status "$out")" >>"$TRAFFIC"
		id=$(jget "$out" '["id"]' 2>/dev/null)
		out=$(api "$S" "$JAR" GET "/api/v1/tickets/$id")
		echo "GET $(status "$out") $(jget "$out" '["subject"]' 2>/dev/null | tr ' ' _)" >>"$TRAFFIC"
		out=$(api "$S" "$JAR" GET "/api/v1/tickets/$TK0")
		echo "GET0 $(status "$out") $(jget "$out" '["subject"]' 2>/dev/null | tr ' ' _)" >>"$TRAFFIC"
	done
}
TRAFFIC=$TMP/traffic
STOP=$TMP/stop
traffic &
LOOP=$!
wait_for 30 test -s "$TMP/traffic" || true
sleep 2

# ------------------------------------------------------------------ rotate
out=$(wctl key rotate-kek --region $R 2>"$TMP/rot.err")
check "rotate-kek succeeds under live traffic" is "$(jfield "$out" kek_version 2>/dev/null)" "$V1"
check "rotate-kek re-wrapped at least the two tenants' keys" test "$(jfield "$out" rewrapped)" -ge 2
check "the ring file now holds both versions" bash -c "grep -q '^ward-kek $V0 ' '$KEK' && grep -q '^ward-kek $V1 ' '$KEK'"
check "the ring file is 0600 and keeps its owner (the daemons read it)" is \
	"$(stat -c '%a %U' "$KEK")" "600 $(stat -c %U "$WARD_VAR/$R/secrets/pg-ops")"
check "no DEK is wrapped under the old KEK (live and closed, by header)" is "$(wrapped_under "$V0")" 0
check "tenant.keys.kek_version says the new version" is \
	"$(pg_super $R "SELECT count(*) FROM tenant.keys WHERE wrapped IS NOT NULL AND kek_version <> $V1")" 0
check "closed_keys.kek_version says the new version" is \
	"$(pg_super $R "SELECT count(*) FROM tenant.closed_keys WHERE kek_version <> $V1")" 0

# A tenant created now gets a DEK wrapped under the new version; the daemons meet it
# for the first time (auth on login, ticket on the ticket, audit on the events).
reset_limits
check "a tenant created after the rotation works end to end" tenant_admin "$S3" "$TMP/jar3"
check "its DEK is wrapped under the new KEK version" is \
	"$(pg_super $R "SELECT count(*) FROM tenant.keys k JOIN tenant.tenants t ON t.id = k.tenant_id WHERE t.slug = '$S3' AND substring(k.wrapped from 2 for 4) = int4send($V1) AND k.kek_version = $V1")" 1
out=$(api "$S3" "$TMP/jar3" POST /api/v1/tickets '{"subject":"after rotation","body":"new"}')
check "ticket for the new tenant (ticket unwraps under the new KEK)" is "$(status "$out")" 201
TK3=$(jget "$out" '["id"]')
check "and reads back" is "$(jget "$(api "$S3" "$TMP/jar3" GET "/api/v1/tickets/$TK3")" '["subject"]')" "after rotation"

# ------------------------------------------------------------------ retire
out=$(wctl key retire-kek --region $R --version "$V0" 2>&1)
check "retire-kek of the old version succeeds once nothing is wrapped under it" is "$(jfield "$out" retired 2>/dev/null)" "$V0"
check "the ring no longer holds the old version" bash -c "! grep -q '^ward-kek $V0 ' '$KEK' && grep -q '^ward-kek $V1 ' '$KEK'"
check "nothing is wrapped under the retired version" is "$(wrapped_under "$V0")" 0
sleep 3
touch "$TMP/stop"
wait "$LOOP"
LOOP=
N=$(wc -l <"$TMP/traffic")
BAD=$(grep -cv -e '^POST 201$' -e '^GET 200 live_[0-9]*$' -e '^GET0 200 before_rotation$' "$TMP/traffic")
check "live traffic through rotate-kek and retire: $N requests, none failed" is "$BAD" 0
[ "$BAD" = 0 ] || grep -v -e '^POST 201$' -e '^GET 200 live' -e '^GET0 200 before' "$TMP/traffic" | head -5 | sed 's/^/#   /'
check "the traffic ran through the rotation (>= 9 requests)" test "$N" -ge 9

# The freshly created tenant above proves the unwrap under the new version by auth,
# ticket and audit; the backup service proves it for an existing tenant:
out=$(wctl backup verify --region $R --tenant "$S" --backup "$B1" 2>&1)
check "a backup taken before the rotation verifies after the old KEK is retired" is "$(jfield "$out" ok 2>/dev/null || echo "$out")" True
out=$(wctl backup run --region $R --tenant "$S" 2>&1)
check "and a new backup runs" test -n "$(jfield "$out" backups 0 backup_id 2>/dev/null)"

# Several hosts: --stage adds the version only (the ring file is then copied to every
# KEK holder), --rewrap --retire moves the DEKs and drops the old version.
out=$(wctl key rotate-kek --region $R --stage 2>&1)
check "rotate-kek --stage: the new version in the ring, nothing re-wrapped yet" is \
	"$(jfield "$out" kek_version 2>/dev/null)/$(grep -c '^ward-kek ' "$KEK")/$(wrapped_under $((V1 + 1)))" "$((V1 + 1))/2/0"
refuse "rotate-kek: --stage with --rewrap is a usage error" wctl key rotate-kek --region $R --stage --rewrap
out=$(wctl key rotate-kek --region $R --rewrap --retire 2>&1)
check "rotate-kek --rewrap --retire: DEKs under the staged version, the previous one retired" is \
	"$(jfield "$out" kek_version 2>/dev/null)/$(jfield "$out" retired 0 2>/dev/null)/$(wrapped_under "$V1")" "$((V1 + 1))/$V1/0"
check "the ring holds exactly one version" is "$(grep -c '^ward-kek ' "$KEK")" 1
reset_limits
check "the tenant still logs in after two rotations" is "$(status "$(login "$S3" "$TMP/jar3" "admin@$S3.example" "$NEWPW")")" 200

# ------------------------------------------------------------- rotate-dek
# Sealed values of tenant $1 (auth and ticket schemas, every *_enc column) whose
# header names another DEK version than $2.
not_under() {
	local q
	q=$(pg_super $R "SELECT string_agg(format('SELECT count(*) AS n FROM %I.%I WHERE tenant_id = %L AND %I IS NOT NULL AND substring(%I from 2 for 4) <> int4send(%s)',
		c.table_schema, c.table_name, '$1', c.column_name, c.column_name, $2), ' UNION ALL ')
		FROM information_schema.columns c WHERE c.table_schema IN ('auth', 'ticket') AND c.data_type = 'bytea'
		AND c.column_name LIKE '%\_enc' AND EXISTS (SELECT 1 FROM information_schema.columns k
		WHERE k.table_schema = c.table_schema AND k.table_name = c.table_name AND k.column_name = 'tenant_id')")
	pg_super $R "SELECT sum(n) FROM ($q) x"
}
sealed_total() { pg_super $R "SELECT (SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$1') + (SELECT count(*) FROM ticket.messages WHERE tenant_id = '$1') + (SELECT count(*) FROM auth.users WHERE tenant_id = '$1')"; }
D0=$(pg_super $R "SELECT max(version) FROM tenant.keys WHERE tenant_id = '$T' AND wrapped IS NOT NULL")
check "before rotate-dek: the tenant's data is under DEK version $D0" is "$(not_under "$T" "$D0")" 0
check "before rotate-dek: there is data ($(sealed_total "$T") rows)" test "$(sealed_total "$T")" -ge 5
reset_limits
check "an agent with a name (auth data sealed)" is "$(status "$(api "$S" "$TMP/jar" POST /api/v1/users \
	'{"email":"agent@keys.example","name":"Agent Smith","role":"agent","password":"Agent-Passphrase-2026!"}')")" 201
rm -f "$STOP"
TRAFFIC=$TMP/traffic2
traffic &
LOOP=$!
sleep 2
out=$(wctl key rotate-dek --tenant "$S" --batch 7 --destroy-old 2>"$TMP/dek.err")
check "rotate-dek succeeds under live traffic (batches of 7, grace 65 s)" is "$(jfield "$out" dek_version 2>/dev/null)" "$((D0 + 1))"
[ -n "$out" ] || sed 's/^/#   /' "$TMP/dek.err"
check "rotate-dek re-sealed the tenant's values" test "$(jfield "$out" resealed)" -ge 5
check "and destroyed the old version" is "$(jfield "$out" destroyed)" 1
sleep 2
touch "$STOP"
wait "$LOOP"
LOOP=
N=$(wc -l <"$TRAFFIC")
BAD=$(grep -cv -e '^POST 201$' -e '^GET 200 live_[0-9]*$' -e '^GET0 200 before_rotation$' "$TRAFFIC")
check "live traffic through rotate-dek: $N requests, none failed" is "$BAD" 0
[ "$BAD" = 0 ] || grep -v -e '^POST 201$' -e '^GET 200 live' -e '^GET0 200 before' "$TRAFFIC" | head -5 | sed 's/^/#   /'
check "the traffic ran through the rotation (>= 30 requests)" test "$N" -ge 30
check "no sealed value of the tenant is under the old DEK version (auth + ticket, by header)" is "$(not_under "$T" "$((D0 + 1))")" 0
check "the old DEK version is destroyed (row kept, bytes gone)" is \
	"$(pg_super $R "SELECT count(*) FROM tenant.keys WHERE tenant_id = '$T' AND version = $D0 AND wrapped IS NULL AND destroyed_at IS NOT NULL")" 1
check "the blind-index root (version 0) is stored, wrapped" is \
	"$(pg_super $R "SELECT count(*) FROM tenant.keys WHERE tenant_id = '$T' AND version = 0 AND length(wrapped) = 65")" 1
reset_limits
check "login by email still works (blind indexes did not move)" is "$(status "$(login "$S" "$TMP/jar" "admin@$S.example" "$NEWPW")")" 200
check "the agent logs in too" is "$(status "$(login "$S" "$TMP/jara" agent@keys.example 'Agent-Passphrase-2026!')")" 200
check "the old ticket reads under the new DEK" is "$(jget "$(api "$S" "$TMP/jar" GET "/api/v1/tickets/$TK0")" '["subject"]')" "before rotation"
out=$(api "$S" "$TMP/jar" GET /api/v1/users)
check "names and emails open under the new DEK" bash -c "echo '$out' | grep -q 'Agent Smith' && echo '$out' | grep -q agent@keys.example"
out=$(wctl backup verify --region $R --tenant "$S" --backup "$B1" 2>&1)
check "a backup taken before rotate-dek no longer restores: a clear error (its DEK is destroyed)" \
	grep -q 'key is destroyed' <<<"$out"
out=$(wctl backup run --region $R --tenant "$S" 2>&1)
B2=$(jfield "$out" backups 0 backup_id 2>/dev/null)
check "a backup after rotate-dek verifies" is "$(jfield "$(wctl backup verify --region $R --tenant "$S" --backup "$B2" 2>&1)" ok 2>/dev/null)" True
check "audit events for rotate-dek and destroy-dek of the tenant" is \
	"$(pg_super $R "SELECT count(DISTINCT action) FROM audit.events WHERE tenant_id = '$T' AND type = 'key' AND action IN ('rotate-dek', 'destroy-dek')")" 2
# --keep-old: the old version is kept (sealing nothing) so that backups and audit
# details sealed under it stay readable; the live data moves all the same.
out=$(wctl backup run --region $R --tenant "$S3" 2>&1)
B3=$(jfield "$out" backups 0 backup_id 2>/dev/null)
T3=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$S3'")
out=$(wctl key rotate-dek --tenant "$S3" 2>"$TMP/dek3.err")
got3="$(jfield "$out" dek_version 2>/dev/null)/$(jfield "$out" destroyed 2>/dev/null)"
check "rotate-dek by default (--keep-old): a new version, nothing destroyed" is "$got3" "2/0"
[ "$got3" = 2/0 ] || { echo "# stdout: $out"; sed 's/^/# stderr: /' "$TMP/dek3.err"; }
check "--keep-old: the live data is under the new version all the same" is "$(not_under "$T3" 2)" 0
check "--keep-old: a backup from before the rotation still verifies" is \
	"$(jfield "$(wctl backup verify --region $R --tenant "$S3" --backup "$B3" 2>&1)" ok 2>/dev/null)" True
reset_limits
check "--keep-old: the tenant's admin logs in (blind index from the root)" is "$(status "$(login "$S3" "$TMP/jar3" "admin@$S3.example" "$NEWPW")")" 200

# A value whose header names a DEK version that does not exist: a clear error, no plaintext.
out=$(api "$S" "$TMP/jar" POST /api/v1/tickets '{"subject":"to be tampered","body":"x"}')
TKX=$(jget "$out" '["id"]')
pg_super $R "UPDATE ticket.tickets SET subject_enc = overlay(subject_enc placing int4send(99) from 2 for 4) WHERE id = '$TKX'" >/dev/null
out=$(api "$S" "$TMP/jar" GET "/api/v1/tickets/$TKX")
check "a value under an unknown DEK version: refused, not shown" bash -c "[ '$(status "$out")' -ge 500 ] && ! grep -q 'to be tampered' <<<'$out'"
check "the ticket daemon names the problem" grep -q "no live data key of that version" "$WARD_VAR/$R/log/ticket.log"
out=$(wctl key rotate-dek --tenant "$S" --grace 0 --destroy-old 2>&1)
check "rotate-dek stops on a value that does not open, naming the column" grep -q 'ticket.tickets.subject_enc: a value names DEK version 99' <<<"$out"
pg_super $R "UPDATE ticket.tickets SET subject_enc = overlay(subject_enc placing int4send($((D0 + 1))) from 2 for 4) WHERE id = '$TKX'" >/dev/null
check "restored, the value reads again (that pass left the older version live, not destroyed)" is \
	"$(jget "$(api "$S" "$TMP/jar" GET "/api/v1/tickets/$TKX")" '["subject"]')" "to be tampered"

# ------------------------------------------------------------- denials
# A DEK whose header names a KEK version that is not in the ring: a clear error in
# the daemon's log and a refused request, never plaintext or a silent fallback.
S4=keys-bad-$SUF
check "a fourth tenant" tenant_admin "$S4" "$TMP/jar4"
T4=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$S4'")
pg_super $R "UPDATE tenant.keys SET wrapped = overlay(wrapped placing int4send(9) from 2 for 4) WHERE tenant_id = '$T4'" >/dev/null
sleep 61 # the DEK caches of auth and ticket (60 s) forget the good key
out=$(api "$S4" "$TMP/jar4" POST /api/v1/tickets '{"subject":"x","body":"y"}')
check "a DEK under an unknown KEK version: the request fails" test "$(status "$out")" -ge 500
check "the daemon says which KEK version is missing" \
	grep -q "region key version 9, which is not in the key ring" "$WARD_VAR/$R/log/ticket.log" "$WARD_VAR/$R/log/auth.log"
refuse "rotate-kek refuses to re-wrap what it cannot unwrap (and says which tenant)" wctl key rotate-kek --region $R
check "other tenants are unaffected" is "$(status "$(api "$S3" "$TMP/jar3" GET "/api/v1/tickets/$TK3")")" 200
pg_super $R "UPDATE tenant.keys SET wrapped = NULL, destroyed_at = now() WHERE tenant_id = '$T4'" >/dev/null

# The old tenant's tickets, read after the caches expired (re-unwrapped under the
# newest KEK): the 61 s wait above covers it.
reset_limits
check "the first tenant's old ticket reads after its DEK was re-loaded under the new KEK" is \
	"$(jget "$(api "$S" "$TMP/jar" GET "/api/v1/tickets/$TK0")" '["subject"]')" "before rotation"

# ------------------------------------------------------------------ audit
check "audit events for rotate-kek and retire-kek" is \
	"$(pg_super $R "SELECT count(*) > 0 FROM audit.events WHERE type = 'key' AND action = 'rotate-kek'")/$(pg_super $R "SELECT count(*) > 0 FROM audit.events WHERE type = 'key' AND action = 'retire-kek'")" "t/t"
check "rotate-kek is attributed to the operator" is \
	"$(pg_super $R "SELECT count(*) > 0 FROM audit.events WHERE type = 'key' AND action = 'rotate-kek' AND actor LIKE 'operator:%'")" t
KEYHEX=$(sed -n 's/^ward-kek [0-9]* //p' "$KEK")
check "no key material in any log or in the command's output" \
	bash -c "! grep -rqi '$KEYHEX' '$WARD_VAR/$R/log' '$TMP/rot.err'"
