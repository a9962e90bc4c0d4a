#!/usr/bin/env bash
# test_auth.sh — SPEC §4's auth rows over real HTTPS through the gateway, each with
# its denials: login (wrong password, unknown user, locked account, expired
# password), CSRF, password policy, TOTP (codes from oathtool; replayed code,
# reused recovery code), API keys (revoked), OAuth client credentials (bad client,
# expired token), SSO JWT (tokens signed by npm jose and hand-built ones for our
# parser: expired, replayed, wrong algorithm, alg none, tampered; the full matrix
# is test_sso.sh), users and roles (customer on an admin route), and a
# session of tenant A used on tenant B. Also: a session replaced (new id and CSRF
# token, the old id 401) at a password change and a TOTP confirm, a CSRF token
# bound to its session, API key expiry and prefix, OAuth token revocation, user
# re-enable, TOTP disable, recovery codes only hashed, and the per-credential rate
# limit counted across two gateways of the cell.
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"

R=us
P=$(port_of $R HTTPS)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
SUF=$RANDOM$RANDOM
A=auth-a-$SUF
B=auth-b-$SUF

. "$(dirname "$0")/lib_api.sh"

# The gateway limits login-type routes to a few per source address and ward-auth
# locks a source after repeated failures; every request here comes from 127.0.0.1,
# so between sections the test clears both counters (the limits themselves are
# tested in the lockout section and by the gateway's tests).
reset_limits() {
	rcli $R admin --scan --pattern 'rl:gateway:login:*' | while read -r k; do rcli $R admin DEL "$k" >/dev/null; done
	pg_super $R "DELETE FROM auth.login_failures WHERE tenant_id = '$TA'" >/dev/null
}
# sess_of JAR: the ward_session cookie's value in a curl cookie jar.
sess_of() { awk '$6 == "ward_session" { v = $7 } END { print v }' "$1"; }
# keep_old JAR: a copy of the jar and its CSRF token as JAR.old (the session before a change).
keep_old() { cp "$1" "$1.old"; cp "$1.csrf" "$1.old.csrf"; }
# gone JAR: the jar's session answers 401 on users/me (within the gateway's cache time).
gone() { [ "$(status "$(api "$A" "$1" GET /api/v1/users/me)")" = 401 ]; }
# renewed NAME JAR OUT: a session-replacing answer: new cookie, new CSRF token (not in
# JSON as a session token), the old session 401, the new one 200 on users/me.
renewed() {
	local n=$1 jar=$2 out=$3
	check "$n: a new session id (cookie) and a new CSRF token, no token in the JSON" bash -c "
		[ -n '$(sess_of "$jar")' ] && [ '$(sess_of "$jar")' != '$(sess_of "$jar.old")' ] &&
		[ -n \"\$(cat '$jar.csrf')\" ] && ! cmp -s '$jar.csrf' '$jar.old.csrf' &&
		grep -q '\"csrf_token\":\"$(cat "$jar.csrf")\"' <<<'${out#* }' && ! grep -q session_token <<<'${out#* }' &&
		grep -qi '^set-cookie: ward_session=$(sess_of "$jar");.*HttpOnly' '$TMP/headers'"
	check "$n: the old session id → 401" wait_for 7 gone "$jar.old"
	check "$n: the new session → 200" is "$(status "$(api "$A" "$jar" GET /api/v1/users/me)")" 200
}

# ------------------------------------------------------------------ tenants
outA=$("$BIN/wardctl" tenant create --slug "$A" --region $R --name "Auth A" --admin-email admin@a.example 2>&1)
outB=$("$BIN/wardctl" tenant create --slug "$B" --region $R --name "Auth B" --admin-email admin@b.example 2>&1)
PWA=$(echo "$outA" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_password"])')
PWB=$(echo "$outB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_password"])')
TA=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$A'")

# ------------------------------------------------------------------ login
out=$(login "$A" "$TMP/admin" admin@a.example "$PWA")
check "login: admin with the one-time password → 200" is "$(status "$out")" 200
check "login: first login must change the password" is "$(jget "$out" '["must_change_password"]')" True
check "login: session token is a cookie, not in the body" bash -c "! grep -q session_token <<<'$out' && grep -q ward_session '$TMP/admin'"
out=$(api "$A" "$TMP/admin" GET /api/v1/users)
check "pending: a session that must change its password → 403 on other routes" is "$(status "$out")" 403
check "pending: the 403 is problem+json naming the password route" bash -c "grep -q /api/v1/auth/password <<<'$out' && grep -qi 'content-type: application/problem+json' '$TMP/headers'"
out=$(api "$A" "$TMP/admin" POST /api/v1/api-keys '{"name":"early","scopes":["users:read"]}')
check "pending: nor can it create an API key → 403" is "$(status "$out")" 403
check "pending: users/me stays open → 200" is "$(status "$(api "$A" "$TMP/admin" GET /api/v1/users/me)")" 200
w1=$(login "$A" "$TMP/x" admin@a.example "wrong-password-1")
w2=$(login "$A" "$TMP/x" nobody@a.example "wrong-password-1")
check "login: wrong password → 401" is "$(status "$w1")" 401
check "login: unknown user → the same 401 body" is "$w1" "$w2"
t0=$(date +%s%N); login "$A" "$TMP/x" nobody2@a.example "x-password" >/dev/null; t1=$(date +%s%N)
login "$A" "$TMP/x" admin@a.example "x-password" >/dev/null; t2=$(date +%s%N)
check "login: unknown user and wrong password take similar time (<3x)" python3 -c "
a=$((t1 - t0)); b=$((t2 - t1)); import sys; sys.exit(0 if max(a,b) < 3*min(a,b) else 1)"
check "login: audit events recorded (success and failure)" bash -c "
for i in \$(seq 50); do n=\$(pg_super $R \"SELECT count(*) FROM audit.events WHERE tenant_id = '$TA' AND action IN ('login.success','login.failure')\"); [ \"\$n\" -ge 3 ] && exit 0; sleep 0.2; done; exit 1"

# ------------------------------------------------------------------ CSRF + password
reset_limits
out=$(NOCSRF=1 api "$A" "$TMP/admin" POST /api/v1/auth/password '{"current_password":"x","new_password":"y"}')
check "password: without X-CSRF-Token → 403" is "$(status "$out")" 403
out=$(BADCSRF=wc_bad api "$A" "$TMP/admin" POST /api/v1/auth/password '{"current_password":"x","new_password":"y"}')
check "password: with a wrong CSRF token → 403" is "$(status "$out")" 403
out=$(api "$A" "$TMP/admin" POST /api/v1/auth/password "{\"current_password\":\"$PWA\",\"new_password\":\"password\"}")
check "password: policy failure → 422" is "$(status "$out")" 422
check "password: 422 names each broken rule (min_length, digit, common)" bash -c "grep -q min_length <<<'$out' && grep -q require_digit <<<'$out' && grep -q common <<<'$out'"
out=$(api "$A" "$TMP/admin" POST /api/v1/auth/password '{"current_password":"not-it","new_password":"Another-pass-9876"}')
check "password: wrong current password → 422" is "$(status "$out")" 422
login "$A" "$TMP/admin2" admin@a.example "$PWA" >/dev/null
out=$(BADCSRF=$(cat "$TMP/admin2.csrf") api "$A" "$TMP/admin" POST /api/v1/auth/password "{\"current_password\":\"$PWA\",\"new_password\":\"Csrf-Cross-Pass-$SUF\"}")
check "csrf: session B's valid CSRF token with session A's cookie → 403" bash -c "[ '$(status "$out")' = 403 ] && grep -qi csrf <<<'$out'"
out=$(BADCSRF=$(cat "$TMP/admin.csrf") api "$A" "$TMP/admin2" POST /api/v1/auth/password "{\"current_password\":\"$PWA\",\"new_password\":\"Csrf-Cross-Pass-$SUF\"}")
check "csrf: and session A's token with session B's cookie → 403" is "$(status "$out")" 403
NEWA="Adm1n-Secure-Pass-$SUF"
keep_old "$TMP/admin"
out=$(api "$A" "$TMP/admin" POST /api/v1/auth/password "{\"current_password\":\"$PWA\",\"new_password\":\"$NEWA\"}")
check "password: change → 200" is "$(status "$out")" 200
renewed "password (pending session)" "$TMP/admin" "$out"
check "password: the old session id is revoked in the database" is "$(pg_super $R "SELECT count(*) FROM auth.sessions WHERE tenant_id = '$TA' AND token_hash = encode(sha256(convert_to('$(sess_of "$TMP/admin.old")', 'UTF8')), 'hex') AND revoked_at IS NOT NULL")" 1
out=$(api "$A" "$TMP/admin2" GET /api/v1/users/me)
check "password: change revoked the other session → 401" is "$(status "$out")" 401
out=$(api "$A" "$TMP/admin" GET /api/v1/users/me)
check "password: the changing session goes on (new id), no longer must change" bash -c "[ '$(status "$out")' = 200 ] && grep -q '\"must_change_password\":false' <<<'$out'"
check "pending: after the change the same session lists users → 200" is "$(status "$(api "$A" "$TMP/admin" GET /api/v1/users)")" 200
out=$(api "$A" "$TMP/admin" POST /api/v1/auth/password "{\"current_password\":\"$NEWA\",\"new_password\":\"$PWA\"}")
check "password: reusing a recent password (history) → 422" bash -c "[ '$(status "$out")' = 422 ] && grep -q history <<<'$out'"

# ------------------------------------------------------------------ users and roles
reset_limits
mk_user() { api "$A" "$TMP/admin" POST /api/v1/users "{\"email\":\"$1\",\"name\":\"$2\",\"role\":\"$3\",\"password\":\"$4\"}"; }
out=$(mk_user agent@a.example "Agent A" agent "Agent-Pass-1234-$SUF")
check "users: admin creates an agent with a password → 201" is "$(status "$out")" 201
AGENT_ID=$(jget "$out" '["user"]["id"]')
out=$(mk_user cust@a.example "Cust A" customer "Cust-Pass-1234-$SUF")
check "users: admin creates a customer → 201" is "$(status "$out")" 201
CUST_ID=$(jget "$out" '["user"]["id"]')
out=$(mk_user weak@a.example "Weak" customer "123456")
check "users: a weak password → 422" is "$(status "$out")" 422
out=$(mk_user agent@a.example "Again" agent "Agent-Pass-1234-$SUF")
check "users: the same email twice → 409" is "$(status "$out")" 409
out=$(api "$A" "$TMP/admin" POST /api/v1/users '{"email":"inv@a.example","name":"Invited","role":"agent"}')
INV=$(jget "$out" '["invitation_token"]')
check "users: without a password → an invitation token" bash -c "[[ '$INV' == wi_* ]]"
out=$(api "$A" "$TMP/anon" POST /api/v1/auth/invitation "{\"token\":\"$INV\",\"new_password\":\"Invited-Pass-77-$SUF\"}")
check "users: the invitation sets the password → 204" is "$(status "$out")" 204
out=$(api "$A" "$TMP/anon" POST /api/v1/auth/invitation "{\"token\":\"$INV\",\"new_password\":\"Invited-Pass-78-$SUF\"}")
check "users: an invitation is single use → 401" is "$(status "$out")" 401
check "users: the invited user logs in" is "$(status "$(login "$A" "$TMP/inv" inv@a.example "Invited-Pass-77-$SUF")")" 200
out=$(api "$A" "$TMP/admin" GET '/api/v1/users?limit=2')
check "users: list with limit → 2 items and a next_cursor" bash -c "[ \"\$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(len(d[\"items\"]), bool(d[\"next_cursor\"]))' '${out#* }')\" = '2 True' ]"
out=$(api "$A" "$TMP/admin" GET "/api/v1/users/$AGENT_ID")
check "users: get one → 200 with its email decrypted" bash -c "grep -q agent@a.example <<<'$out'"
login "$A" "$TMP/cust" cust@a.example "Cust-Pass-1234-$SUF" >/dev/null
out=$(api "$A" "$TMP/cust" GET /api/v1/users)
check "roles: customer lists users → 403" is "$(status "$out")" 403
out=$(api "$A" "$TMP/cust" PUT /api/v1/settings/password-policy '{"min_length":8}')
check "roles: customer changes the password policy → 403" is "$(status "$out")" 403
out=$(api "$A" "$TMP/cust" GET /api/v1/users/me)
check "roles: customer reads users/me → 200" is "$(status "$out")" 200
login "$A" "$TMP/agent" agent@a.example "Agent-Pass-1234-$SUF" >/dev/null
out=$(api "$A" "$TMP/agent" GET /api/v1/users)
check "roles: agent lists users (agents read) → 200" is "$(status "$out")" 200
out=$(api "$A" "$TMP/agent" POST /api/v1/users '{"email":"z@a.example","name":"Z","role":"admin"}')
check "roles: agent creates a user → 403" is "$(status "$out")" 403

# ------------------------------------------------------------------ tenant A on tenant B
reset_limits
cp "$TMP/admin" "$TMP/cross"; cp "$TMP/admin.csrf" "$TMP/cross.csrf"
sed -i "s/$A\.$R/$B.$R/" "$TMP/cross"
out=$(api "$B" "$TMP/cross" GET /api/v1/users/me)
check "tenants: a session of tenant A used on tenant B → 401" is "$(status "$out")" 401
out=$(login "$B" "$TMP/bx" admin@a.example "$NEWA")
check "tenants: A's admin cannot log in on B → 401" is "$(status "$out")" 401

# ------------------------------------------------------------------ admin revokes, disable
reset_limits
out=$(api "$A" "$TMP/admin" POST "/api/v1/users/$CUST_ID/sessions/revoke")
check "users: admin revokes a user's sessions → 204" is "$(status "$out")" 204
# The gateway may reuse a positive answer for up to 5 s: revocation takes effect within that.
for i in $(seq 14); do
	st=$(status "$(api "$A" "$TMP/cust" GET /api/v1/users/me)")
	[ "$st" = 401 ] && break
	sleep 0.5
done
check "users: the revoked session → 401 within the gateway's cache time (≤ 7 s)" is "$st" 401
out=$(api "$A" "$TMP/admin" PATCH "/api/v1/users/$CUST_ID" '{"disabled":true}')
check "users: PATCH disables → 200" bash -c "[ '$(status "$out")' = 200 ] && grep -q '\"disabled\":true' <<<'$out'"
check "users: a disabled user cannot log in → 401" is "$(status "$(login "$A" "$TMP/cust" cust@a.example "Cust-Pass-1234-$SUF")")" 401
out=$(api "$A" "$TMP/admin" PATCH "/api/v1/users/$CUST_ID" '{"disabled":false}')
check "users: PATCH disabled:false re-enables → 200" bash -c "[ '$(status "$out")' = 200 ] && grep -q '\"disabled\":false' <<<'$out'"
check "users: the re-enabled user logs in again → 200" is "$(status "$(login "$A" "$TMP/cust" cust@a.example "Cust-Pass-1234-$SUF")")" 200
check "users: and its session works → 200" is "$(status "$(api "$A" "$TMP/cust" GET /api/v1/users/me)")" 200

# ------------------------------------------------------------------ expired password
reset_limits
api "$A" "$TMP/admin" PUT /api/v1/settings/password-policy '{"min_length":12,"require_letter":true,"require_digit":true,"require_symbol":false,"history":5,"max_age_days":30}' >/dev/null
out=$(api "$A" "$TMP/admin" GET /api/v1/settings/password-policy)
check "policy: GET returns what PUT set" bash -c "grep -q '\"max_age_days\":30' <<<'$out'"
out=$(api "$A" "$TMP/admin" PUT /api/v1/settings/password-policy '{"min_length":4,"history":99}')
check "policy: out-of-bounds values → 422" is "$(status "$out")" 422
pg_super $R "UPDATE auth.users SET password_changed_at = now() - interval '40 days' WHERE id = '$AGENT_ID'" >/dev/null
out=$(login "$A" "$TMP/agent" agent@a.example "Agent-Pass-1234-$SUF")
check "expired password: login succeeds into a forced change" bash -c "[ '$(status "$out")' = 200 ] && grep -q '\"must_change_password\":true' <<<'$out'"
check "expired password: the session is refused other routes → 403" is "$(status "$(api "$A" "$TMP/agent" GET /api/v1/users)")" 403
AGPW2="Agent-Pass-5678-$SUF"
keep_old "$TMP/agent"
out=$(api "$A" "$TMP/agent" POST /api/v1/auth/password "{\"current_password\":\"Agent-Pass-1234-$SUF\",\"new_password\":\"$AGPW2\"}")
check "expired password: the change → 200" is "$(status "$out")" 200
renewed "expired password" "$TMP/agent" "$out"
check "expired password: then the new session works → 200" is "$(status "$(api "$A" "$TMP/agent" GET /api/v1/users)")" 200
check "expired password: the old session id gains nothing → 401" is "$(status "$(api "$A" "$TMP/agent.old" GET /api/v1/users)")" 401

# ------------------------------------------------------------------ lockout
reset_limits
for i in 1 2 3 4 5; do login "$A" "$TMP/x" agent@a.example "bad-password-$i" >/dev/null; done
out=$(login "$A" "$TMP/x" agent@a.example "$AGPW2")
check "lockout: after 5 failures even the right password → 429" is "$(status "$out")" 429
check "lockout: 429 carries Retry-After" grep -qi "^retry-after: [1-9]" "$TMP/headers"

# ------------------------------------------------------------------ TOTP
reset_limits
mk_user totp@a.example "Totp" agent "Totp-Pass-1234-$SUF" >/dev/null
login "$A" "$TMP/totp" totp@a.example "Totp-Pass-1234-$SUF" >/dev/null
out=$(api "$A" "$TMP/totp" POST /api/v1/auth/totp/setup)
SECRET=$(jget "$out" '["secret"]')
check "totp: setup → secret + otpauth:// URI" bash -c "grep -q 'otpauth://totp/' <<<'$out' && [ -n '$SECRET' ]"
out=$(api "$A" "$TMP/totp" POST /api/v1/auth/totp/confirm '{"code":"000000"}')
check "totp: confirm with a wrong code → 422" is "$(status "$out")" 422
CODE=$(oathtool --totp -b "$SECRET")
keep_old "$TMP/totp"
out=$(api "$A" "$TMP/totp" POST /api/v1/auth/totp/confirm "{\"code\":\"$CODE\"}")
check "totp: confirm with oathtool's code → 10 recovery codes" is "$(jget "$out" '["recovery_codes"].__len__()')" 10
renewed "totp confirm" "$TMP/totp" "$out"
jget "$out" '["recovery_codes"]' | tr -d "[]',\"" | tr ' ' '\n' | grep . >"$TMP/rcodes"
WARD_PG_URL=WARD_$(upper $R)_PG
check "totp: none of the 10 recovery codes is in clear in the auth schema (pg_dump, either form)" bash -c "
	[ \$(wc -l <'$TMP/rcodes') = 10 ] && pg_dump '${!WARD_PG_URL}' --schema=auth --data-only >'$TMP/auth.dump' &&
	grep -q recovery_codes '$TMP/auth.dump' &&
	while read -r c; do ! grep -qiF -e \"\$c\" -e \"\${c/-/}\" '$TMP/auth.dump' || exit 1; done <'$TMP/rcodes'"
check "totp: each recovery code is stored as one 64-hex-digit hash" is "$(pg_super $R "SELECT count(*) FROM auth.recovery_codes WHERE tenant_id = '$TA' AND code_hash ~ '^[0-9a-f]{64}$'")" 10
RC=$(jget "$out" '["recovery_codes"][0]')
out=$(login "$A" "$TMP/t2" totp@a.example "Totp-Pass-1234-$SUF")
check "totp: login without a code → 401" is "$(status "$out")" 401
out=$(login "$A" "$TMP/t2" totp@a.example "Totp-Pass-1234-$SUF" "$CODE")
check "totp: the code used at confirm is refused (replay) → 401" is "$(status "$out")" 401
out=$(login "$A" "$TMP/t2" totp@a.example "Totp-Pass-1234-$SUF" "$RC")
check "totp: login with a recovery code → 200" is "$(status "$out")" 200
out=$(login "$A" "$TMP/t3" totp@a.example "Totp-Pass-1234-$SUF" "$RC")
check "totp: the same recovery code again → 401" is "$(status "$out")" 401
NEXT=$(oathtool --totp -b -N "now + 30 seconds" "$SECRET")
out=$(login "$A" "$TMP/t3" totp@a.example "Totp-Pass-1234-$SUF" "$NEXT")
check "totp: login with the next oathtool code → 200" is "$(status "$out")" 200
out=$(login "$A" "$TMP/t4" totp@a.example "Totp-Pass-1234-$SUF" "$NEXT")
check "totp: that code a second time → 401" is "$(status "$out")" 401
out=$(api "$A" "$TMP/totp" DELETE /api/v1/auth/totp '{"code":"999999"}')
check "totp: disable with a wrong code → 422" is "$(status "$out")" 422
# The last code accepted was the next step's: a good code is a later one (tried at the end).
NEXT_STEP=$(( $(date +%s) / 30 + 1 ))

# ------------------------------------------------------------------ API keys
out=$(api "$A" "$TMP/admin" POST /api/v1/api-keys '{"name":"ci","scopes":["users:read"]}')
KEY=$(jget "$out" '["key"]'); KEY_ID=$(jget "$out" '["id"]')
check "api keys: create → 201, key shown once" bash -c "[ '$(status "$out")' = 201 ] && [[ '$KEY' == wk_* ]]"
out=$(api "$A" "$TMP/admin" GET /api/v1/api-keys)
check "api keys: list never shows the key" bash -c "! grep -q '${KEY:10}' <<<'$out' && grep -q '$KEY_ID' <<<'$out'"
check "api keys: list shows the key's prefix (its first characters, not the secret)" python3 -c "
import json,sys; key=sys.argv[2]; d=json.loads(sys.argv[1].split(' ',1)[1])['items']
k=[x for x in d if x['id']==sys.argv[3]][0]
assert k['prefix'] and key.startswith(k['prefix']) and len(k['prefix']) <= 12 < len(key), k
assert 'key' not in k or not k['key'], k" "$out" "$KEY" "$KEY_ID"
check "api keys: stored only as a hash" is "$(pg_super $R "SELECT count(*) FROM auth.api_keys WHERE key_hash = encode(sha256('$KEY'::bytea), 'hex')")" 1
out=$(bearer "$A" "$KEY" GET /api/v1/users)
check "api keys: Bearer key with users:read lists users → 200" is "$(status "$out")" 200
out=$(bearer "$A" "$KEY" POST /api/v1/users)
check "api keys: without users:admin, create a user → 403" is "$(status "$out")" 403
out=$(bearer "$B" "$KEY" GET /api/v1/users)
check "api keys: tenant A's key on tenant B → 401" is "$(status "$out")" 401
out=$(api "$A" "$TMP/admin" POST /api/v1/api-keys '{"name":"short","scopes":["users:read"],"expires_in_days":1}')
EKEY=$(jget "$out" '["key"]'); EKEY_ID=$(jget "$out" '["id"]')
check "api keys: a key with expires_in_days → 201 and an expires_at about a day ahead" python3 -c "
import json,sys,datetime; e=json.loads(sys.argv[1].split(' ',1)[1])['expires_at']
t=datetime.datetime.fromisoformat(e.replace('Z','+00:00')); n=datetime.datetime.now(datetime.timezone.utc)
assert datetime.timedelta(hours=23) < t-n <= datetime.timedelta(days=1), e" "$out"
check "api keys: the expiring key works before it expires → 200" is "$(status "$(bearer "$A" "$EKEY" GET /api/v1/users)")" 200
pg_super $R "UPDATE auth.api_keys SET expires_at = now() - interval '1 s' WHERE id = '$EKEY_ID'" >/dev/null
key_gone() { [ "$(status "$(bearer "$A" "$1" GET /api/v1/users)")" = 401 ]; }
check "api keys: past its expires_at (aged in the database) → 401 (within the gateway's cache time)" wait_for 7 key_gone "$EKEY"
check "api keys: the key without expiry still works → 200" is "$(status "$(bearer "$A" "$KEY" GET /api/v1/users)")" 200
out=$(api "$A" "$TMP/admin" POST /api/v1/api-keys '{"name":"net","scopes":["users:read"],"allowed_cidrs":["192.0.2.0/24"]}')
out=$(bearer "$A" "$(jget "$out" '["key"]')" GET /api/v1/users)
check "api keys: from outside allowed_cidrs → 403" is "$(status "$out")" 403
api "$A" "$TMP/admin" DELETE "/api/v1/api-keys/$KEY_ID" >/dev/null
sleep 2.5 # the gateway may cache a positive answer for up to authenticate_cache_ms
out=$(bearer "$A" "$KEY" GET /api/v1/users)
check "api keys: revoked key → 401" is "$(status "$out")" 401

# ------------------------------------------------------------------ rate limit per credential
# Two more gateways of this cell (rl-1, rl-2: their own ports, no status page) with a
# small ratelimit.per_credential and the per-source limits out of the way. The
# counters live in the cell's Redis, shared by every instance: one API key's
# requests spread over both are counted together.
RLKEY=$(jget "$(api "$A" "$TMP/admin" POST /api/v1/api-keys '{"name":"rl","scopes":["users:read"]}')" '["key"]')
RLKEY2=$(jget "$(api "$A" "$TMP/admin" POST /api/v1/api-keys '{"name":"rl2","scopes":["users:read"]}')" '["key"]')
RLG=()
for g in 1 2; do
	mkdir -p "$TMP/rl$g/state" && chmod 755 "$TMP" "$TMP/rl$g" && chmod 777 "$TMP/rl$g/state"
	RLP[$g]=$(free_port)
	python3 - "$WARD_VAR/$R/etc/gateway.yaml" "$TMP/rl$g/gateway.yaml" "rl-$g" "$TMP/rl$g/state/gateway.log" "${RLP[$g]}" "$(free_port)" <<'PY'
import sys
src, dst, inst, log, https, http = sys.argv[1:7]
out, section = [], None
for line in open(src):
    if not line.startswith(" ") and line.rstrip().endswith(":"):
        section = line.strip()[:-1]
    if section == "status":
        continue
    if line.startswith("instance:"): line = f"instance: gateway-{inst}\n"
    elif line.startswith("log_file:"): line = f"log_file: {log}\n"
    elif line.startswith("  listen:") and section in ("https", "http"):
        line = "  listen: 127.0.0.1:%s\n" % {"https": https, "http": http}[section]
    out.append(line)
out.append("ratelimit:\n  window_seconds: 60\n  per_credential: 10\n  per_source: 100000\n  per_source_tenant: 100000\n")
open(dst, "w").write("".join(out))
PY
	chmod 644 "$TMP/rl$g/gateway.yaml"
	spawn_as_user "$TMP/rl$g/gateway.pid" "$TMP/rl$g/state/gateway.stderr" "$BIN/ward-gateway" --config "$TMP/rl$g/gateway.yaml"
	RLG+=("$(cat "$TMP/rl$g/gateway.pid")")
done
trap 'for p in "${RLG[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$TMP"' EXIT
# rlget N KEY: GET users/me's list through gateway rl-N with a Bearer key; its status.
rlget() {
	curl -sS --max-time 10 --cacert "$WARD_CA" --resolve "$A.$R.$WARD_DOMAIN:${RLP[$1]}:127.0.0.1" \
		-D "$TMP/rl.h" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" \
		"https://$A.$R.$WARD_DOMAIN:${RLP[$1]}/api/v1/users"
}
check "ratelimit: two more gateways of the cell start (per_credential 10)" \
	wait_for 20 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' --cacert '$WARD_CA' https://127.0.0.1:${RLP[1]}/healthz -k)\" = 200 ] && [ \"\$(curl -s -o /dev/null -w '%{http_code}' https://127.0.0.1:${RLP[2]}/healthz -k)\" = 200 ]"
s1=""; for i in $(seq 7); do s1="$s1 $(rlget 1 "$RLKEY")"; done
s2=""; for i in $(seq 7); do s2="$s2 $(rlget 2 "$RLKEY")"; cp "$TMP/rl.h" "$TMP/rl.last.h"; done
check "ratelimit: 7 requests with one key through rl-1 → all 200" is "$s1" " 200 200 200 200 200 200 200"
check "ratelimit: 7 more with the same key through rl-2 → 429 once the shared count passes 10" python3 -c "
import sys; s=sys.argv[1].split(); assert s[:3]==['200']*3 and s[-1]=='429' and set(s)<={'200','429'}, s" "$s2"
check "ratelimit: the 429 carries Retry-After" grep -qi '^retry-after: [0-9]' "$TMP/rl.last.h"
check "ratelimit: another key from the same address is still served on rl-2 → 200" is "$(rlget 2 "$RLKEY2")" 200
check "ratelimit: the cell's own gateway (per_credential 600) still serves the first key → 200" is "$(status "$(bearer "$A" "$RLKEY" GET /api/v1/users)")" 200
for p in "${RLG[@]}"; do kill "$p" 2>/dev/null; done

# ------------------------------------------------------------------ OAuth
reset_limits
out=$(api "$A" "$TMP/admin" POST /api/v1/oauth-clients '{"name":"svc","scopes":["users:read","tickets:read"]}')
CID=$(jget "$out" '["client_id"]'); CSEC=$(jget "$out" '["client_secret"]')
check "oauth: client create → client_id + secret" bash -c "[ '$(status "$out")' = 201 ] && [ -n '$CSEC' ]"
tok() {
	curl -sS --max-time 20 --cacert "$WARD_CA" --resolve "$A.$R.$WARD_DOMAIN:$P:127.0.0.1" \
		-o "$TMP/body" -w '%{http_code}' "$@" "https://$A.$R.$WARD_DOMAIN:$P/oauth/token"
	echo " $(cat "$TMP/body")"
}
out=$(tok -d grant_type=client_credentials -d "client_id=$CID" -d "client_secret=$CSEC" -d scope=users:read)
AT=$(jget "$out" '["access_token"]')
check "oauth: client credentials → Bearer token, expires_in 900" bash -c "[ '$(status "$out")' = 200 ] && grep -q '\"token_type\":\"Bearer\"' <<<'$out' && grep -q '\"expires_in\":900' <<<'$out'"
check "oauth: access token works" is "$(status "$(bearer "$A" "$AT" GET /api/v1/users)")" 200
out=$(tok -d grant_type=client_credentials -d "client_id=$CID" -d "client_secret=$CSEC" -d scope=users:read)
AT2=$(jget "$out" '["access_token"]')
check "oauth: a second token works" is "$(status "$(bearer "$A" "$AT2" GET /api/v1/users)")" 200
out=$(api "$A" "$TMP/admin" POST /api/v1/oauth-tokens/revoke "{\"token\":\"$AT2\"}")
check "oauth: the admin revokes it (POST /api/v1/oauth-tokens/revoke) → 204" is "$(status "$out")" 204
check "oauth: the revoked token → 401 (within the gateway's cache time)" wait_for 7 key_gone "$AT2"
check "oauth: the revocation is stored" is "$(pg_super $R "SELECT count(*) FROM auth.access_tokens WHERE token_hash = encode(sha256('$AT2'::bytea), 'hex') AND revoked_at IS NOT NULL")" 1
check "oauth: the other token still works" is "$(status "$(bearer "$A" "$AT" GET /api/v1/users)")" 200
check "oauth: revoking an unknown token is not an error (RFC 7009) → 204" is "$(status "$(api "$A" "$TMP/admin" POST /api/v1/oauth-tokens/revoke '{"token":"wt_not-a-token"}')")" 204
out=$(tok -d grant_type=client_credentials -d "client_id=$CID" -d "client_secret=wrong")
check "oauth: wrong secret → 401 invalid_client" bash -c "[ '$(status "$out")' = 401 ] && grep -q invalid_client <<<'$out'"
out=$(tok -d grant_type=password -d "client_id=$CID" -d "client_secret=$CSEC")
check "oauth: other grant → 400 unsupported_grant_type" bash -c "[ '$(status "$out")' = 400 ] && grep -q unsupported_grant_type <<<'$out'"
out=$(tok -d grant_type=client_credentials -d "client_id=$CID" -d "client_secret=$CSEC" -d scope=audit:read)
check "oauth: a scope not granted → 400 invalid_scope" bash -c "[ '$(status "$out")' = 400 ] && grep -q invalid_scope <<<'$out'"
pg_super $R "UPDATE auth.access_tokens SET expires_at = now() - interval '1 s' WHERE token_hash = encode(sha256('$AT'::bytea), 'hex')" >/dev/null
sleep 2.5
check "oauth: expired access token → 401" is "$(status "$(bearer "$A" "$AT" GET /api/v1/users)")" 401

# ------------------------------------------------------------------ SSO JWT
reset_limits
SSOKEY="sso-shared-secret-$SUF-0123456789abcdef"
out=$(api "$A" "$TMP/admin" PUT /api/v1/settings/sso "{\"alg\":\"HS256\",\"key\":\"$SSOKEY\",\"enforce_for_agents\":false,\"create_customers\":true}")
check "sso: admin sets an HS256 key → 200, key not echoed" bash -c "[ '$(status "$out")' = 200 ] && ! grep -q '$SSOKEY' <<<'$out'"
b64u() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
# Well-formed tokens come from the npm jose package (tests/node/jwt_sign.mjs; the
# full SSO matrix is in test_sso.sh); hand-built ones (openssl) test our own parser
# on what no JWT library would produce: alg none, a header alg that differs from
# the key's, claims swapped under a valid signature, a secret that is a PEM.
printf '%s' "$SSOKEY" >"$TMP/sso.key"
sign() { node "$TOP/tests/node/jwt_sign.mjs" "$@"; }
# jwt HEADER CLAIMS [SECRET]: hand-built, HS256 by openssl (SECRET "-" = no signature)
jwt() {
	local h c s=${3:-$SSOKEY}
	h=$(printf '%s' "$1" | b64u); c=$(printf '%s' "$2" | b64u)
	if [ "$s" = - ]; then echo "$h.$c."; return; fi
	echo "$h.$c.$(printf '%s' "$h.$c" | openssl dgst -sha256 -hmac "$s" -binary | b64u)"
}
now=$(date +%s)
cl() { echo "{\"iat\":$((now + ${3:-0})),\"exp\":$((now + $2)),\"jti\":\"$1-$SUF\",\"email\":\"sso@a.example\"}"; }
sso() { api "$A" "$TMP/sso" GET "/sso/jwt?jwt=$1"; }
T1=$(sign HS256 "$TMP/sso.key" "$(cl one 120)")
check "sso: a valid token (jose) logs in (and creates the customer) → 200" is "$(status "$(sso "$T1")")" 200
check "sso: the same token again (jti replay) → 401" is "$(status "$(sso "$T1")")" 401
check "sso: expired (jose) → 401" is "$(status "$(sso "$(sign HS256 "$TMP/sso.key" "$(cl two -10 -100)")")")" 401
check "sso: hand-built with the right secret (openssl) → 200 (our parser reads what others sign)" is "$(status "$(sso "$(jwt '{"alg":"HS256","typ":"JWT"}' "$(cl two-b 120)")")")" 200
check "sso: alg none (hand-built) → 401" is "$(status "$(sso "$(jwt '{"alg":"none"}' "$(cl five 120)" -)")")" 401
check "sso: wrong algorithm (HS512 header over an HS256 MAC) → 401" is "$(status "$(sso "$(jwt '{"alg":"HS512"}' "$(cl six 120)")")")" 401
T7=$(sign HS256 "$TMP/sso.key" "$(cl seven 120)")
check "sso: tampered claims under a valid signature → 401" is "$(status "$(sso "${T7%%.*}.$(printf '%s' "$(cl seven 99999)" | b64u).${T7##*.}")")" 401
reset_limits
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/rsa.pem" 2>/dev/null
openssl pkey -in "$TMP/rsa.pem" -pubout -out "$TMP/rsa.pub" 2>/dev/null
out=$(api "$A" "$TMP/admin" PUT /api/v1/settings/sso "$(python3 -c 'import json,sys; print(json.dumps({"alg":"RS256","key":open(sys.argv[1]).read(),"create_customers":True}))' "$TMP/rsa.pub")")
check "sso: admin sets an RS256 public key → 200" is "$(status "$out")" 200
check "sso: RS256 token (jose) → 200" is "$(status "$(sso "$(sign RS256 "$TMP/rsa.pem" "$(cl eight 120)")")")" 200
check "sso: HS256 token signed with the public key (algorithm confusion, hand-built) → 401" \
	is "$(status "$(sso "$(jwt '{"alg":"HS256"}' "$(cl nine 120)" "$(cat "$TMP/rsa.pub")")")")" 401

# ------------------------------------------------------------------ TOTP disable
reset_limits
for i in $(seq 35); do [ $(( $(date +%s) / 30 )) -ge "$NEXT_STEP" ] && break; sleep 1; done
out=$(api "$A" "$TMP/totp" DELETE /api/v1/auth/totp "{\"code\":\"$(oathtool --totp -b -N 'now + 30 seconds' "$SECRET")\"}")
check "totp: disable with a good oathtool code → 204" is "$(status "$out")" 204
TOTP_UID=$(api "$A" "$TMP/totp" GET /api/v1/users/me | python3 -c 'import json,sys; d=json.loads(sys.stdin.read().split(" ",1)[1]); print(d.get("user",d)["id"])')
check "totp: disabled: no secret and no recovery code left" is "$(pg_super $R "SELECT (SELECT count(*) FROM auth.recovery_codes WHERE user_id = '$TOTP_UID') || '/' || (SELECT count(*) FROM auth.users WHERE id = '$TOTP_UID' AND NOT totp_enabled AND totp_secret_enc IS NULL)")" 0/1
check "totp: then the password alone logs in → 200" is "$(status "$(login "$A" "$TMP/t5" totp@a.example "Totp-Pass-1234-$SUF")")" 200

# ------------------------------------------------------------------ 2FA required
reset_limits
mk_user staff2@a.example "Staff" agent "Staff-Pass-1234-$SUF" >/dev/null
out=$(api "$A" "$TMP/admin" PUT /api/v1/settings/security '{"require_2fa_staff":true}')
check "2fa required: admin sets require_2fa_staff → 200" is "$(status "$out")" 200
out=$(login "$A" "$TMP/staff" staff2@a.example "Staff-Pass-1234-$SUF")
check "2fa required: an agent without TOTP logs in, told to set it up" bash -c "[ '$(status "$out")' = 200 ] && grep -q '\"must_setup_totp\":true' <<<'$out'"
out=$(api "$A" "$TMP/staff" GET /api/v1/users)
check "2fa required: its session is refused other routes → 403 naming TOTP setup" bash -c "[ '$(status "$out")' = 403 ] && grep -q /api/v1/auth/totp/setup <<<'$out'"
out=$(api "$A" "$TMP/staff" POST /api/v1/auth/totp/setup)
S2SEC=$(jget "$out" '["secret"]')
keep_old "$TMP/staff"
out=$(api "$A" "$TMP/staff" POST /api/v1/auth/totp/confirm "{\"code\":\"$(oathtool --totp -b "$S2SEC")\"}")
check "2fa required: setup + confirm (oathtool) are allowed → 200" is "$(status "$out")" 200
renewed "2fa required" "$TMP/staff" "$out"
check "2fa required: then the new session lists users → 200" is "$(status "$(api "$A" "$TMP/staff" GET /api/v1/users)")" 200
check "2fa required: the old session id gains nothing → 401" is "$(status "$(api "$A" "$TMP/staff.old" GET /api/v1/users)")" 401
check "2fa required: the admin without TOTP is now confined too → 403" is "$(status "$(api "$A" "$TMP/admin" GET /api/v1/users)")" 403

# ------------------------------------------------------------------ logout
out=$(api "$A" "$TMP/admin" POST /api/v1/auth/logout)
check "logout: → 204" is "$(status "$out")" 204
check "logout: the session no longer works → 401" is "$(status "$(api "$A" "$TMP/admin" GET /api/v1/users/me)")" 401
check "secrets: no session token, key or password in the database in clear" bash -c "
! pg_super $R \"SELECT token_hash FROM auth.sessions\" | grep -q '^ws_' &&
! pg_super $R \"SELECT email_bidx FROM auth.users\" | grep -q '@'"
