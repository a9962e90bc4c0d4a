#!/usr/bin/env bash
# test_auth_sessions.sh — the auth rows of SPEC §4 / issue 3 that test_auth.sh does
# not walk, end to end over HTTPS, each with its denial: lockout per source (any
# account) and the unlock once the lock's time has passed, idle and absolute
# session timeouts per role, no session fixation (a planted cookie is never
# adopted, every login and role change gives a new id), the tenant IP allow-list
# (staff and customers), an API key's CIDR allow-list (inside and outside), an
# OAuth access token of tenant A on tenant B, and the rehash of a password stored
# with other Argon2id parameters at the next login.
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"

R=us
P=$(port_of $R HTTPS)
TMP=$(mktemp -d)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT
SUF=$RANDOM$RANDOM
A=as-a-$SUF
B=as-b-$SUF
. "$(dirname "$0")/lib_api.sh"
reset_rl() { rcli $R admin --scan --pattern 'rl:gateway:login:*' | while read -r k; do rcli $R admin DEL "$k" >/dev/null; done; }
reset_limits() { reset_rl; pg_super $R "DELETE FROM auth.login_failures WHERE tenant_id = '$TA'" >/dev/null; }
cookie_of() { sed -n 's/.*\tward_session\t\(.*\)$/\1/p' "$1" | tail -1; }

outA=$("$BIN/wardctl" tenant create --slug "$A" --region $R --name "AS A" --admin-email admin@as-a.example 2>&1)
outB=$("$BIN/wardctl" tenant create --slug "$B" --region $R --name "AS B" --admin-email admin@as-b.example 2>&1)
PWA=$(echo "$outA" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_password"])')
PWB=$(echo "$outB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_password"])')
TA=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$A'")
reset_limits
check "setup: tenant A's admin" is "$(login_admin "$A" "$TMP/admin" admin@as-a.example "$PWA")" 200
check "setup: tenant B's admin" is "$(login_admin "$B" "$TMP/adminB" admin@as-b.example "$PWB")" 200
PWU="User-Pass-1234-$SUF"
mk_user() { api "$A" "$TMP/admin" POST /api/v1/users "{\"email\":\"$1\",\"name\":\"$1\",\"role\":\"$2\",\"password\":\"$PWU\"}" | cut -c1-3; }
check "setup: an agent and a customer" bash -c "[ '$(mk_user agent@as-a.example agent)' = 201 ] && [ '$(mk_user cust@as-a.example customer)' = 201 ]"

# ------------------------------------------------------------------ lockout per source
# auth.lockout_source (20) failures from one address, each on a different unknown
# account (so no account lock), lock the source: then even another user's right
# password → 429. The gateway's own login limit is cleared between attempts.
for i in $(seq 20); do
	[ $((i % 8)) = 0 ] && reset_rl
	login "$A" "$TMP/x" "nobody$i@as-a.example" "wrong-password-$i" >/dev/null
done
reset_rl
out=$(login "$A" "$TMP/x" agent@as-a.example "$PWU")
check "lockout: 20 failures on different accounts lock the source → 429" is "$(status "$out")" 429
check "lockout: the 429 says when to retry" grep -qi "^retry-after: [1-9]" "$TMP/headers"
check "lockout: the source lock is in auth.login_failures" is "$(pg_super $R "SELECT count(*) FROM auth.login_failures WHERE tenant_id = '$TA' AND key = 'ip:127.0.0.1' AND locked_until > now()")" 1
# The lock's delay (auth.lockout_s, 15 min) passing, without waiting 15 minutes:
pg_super $R "UPDATE auth.login_failures SET locked_until = now() - interval '1 second' WHERE tenant_id = '$TA'" >/dev/null
reset_rl
check "lockout: once the delay has passed the right password works again → 200" is "$(status "$(login "$A" "$TMP/x" agent@as-a.example "$PWU")")" 200
for i in 1 2 3 4 5; do login "$A" "$TMP/x" cust@as-a.example "bad-$i" >/dev/null; done
reset_rl
check "lockout: 5 failures lock the account → 429" is "$(status "$(login "$A" "$TMP/x" cust@as-a.example "$PWU")")" 429
pg_super $R "UPDATE auth.login_failures SET locked_until = now() - interval '1 second' WHERE tenant_id = '$TA'" >/dev/null
reset_rl
check "lockout: the account unlocks after the delay → 200" is "$(status "$(login "$A" "$TMP/x" cust@as-a.example "$PWU")")" 200
reset_limits

# ------------------------------------------------------------------ timeouts
# Sessions of a fresh login, aged in the database before their first use (so no
# cached answer of the gateway hides them).
sess_id() { pg_super $R "SELECT id FROM auth.sessions WHERE token_hash = encode(sha256('$(cookie_of "$1")'::bytea), 'hex')"; }
login "$A" "$TMP/ag1" agent@as-a.example "$PWU" >/dev/null
pg_super $R "UPDATE auth.sessions SET last_seen_at = now() - interval '3700 seconds' WHERE id = '$(sess_id "$TMP/ag1")'" >/dev/null
check "timeout: an agent session idle for 3700 s (idle_agent 3600 s) → 401" is "$(status "$(api "$A" "$TMP/ag1" GET /api/v1/users/me)")" 401
check "timeout: the expired session is revoked in the database" bash -c "[ -n \"\$(pg_super $R \"SELECT revoked_at FROM auth.sessions WHERE id = '$(sess_id "$TMP/ag1")'\")\" ]"
login "$A" "$TMP/c1" cust@as-a.example "$PWU" >/dev/null
pg_super $R "UPDATE auth.sessions SET last_seen_at = now() - interval '3700 seconds' WHERE id = '$(sess_id "$TMP/c1")'" >/dev/null
check "timeout: a customer session idle as long (idle_customer 24 h) → 200 (per role)" is "$(status "$(api "$A" "$TMP/c1" GET /api/v1/users/me)")" 200
reset_limits
login "$A" "$TMP/ag2" agent@as-a.example "$PWU" >/dev/null
pg_super $R "UPDATE auth.sessions SET created_at = now() - interval '43300 seconds' WHERE id = '$(sess_id "$TMP/ag2")'" >/dev/null
check "timeout: an agent session older than absolute_agent (12 h), though active → 401" is "$(status "$(api "$A" "$TMP/ag2" GET /api/v1/users/me)")" 401

# ------------------------------------------------------------------ fixation
reset_limits
planted="ws_$(printf '%064d' 7)"
printf '%s\tFALSE\t/\tTRUE\t0\tward_session\t%s\n' "$A.$R.$WARD_DOMAIN" "$planted" >"$TMP/fix"
out=$(api "$A" "$TMP/fix" POST /api/v1/auth/login "{\"email\":\"agent@as-a.example\",\"password\":\"$PWU\"}")
check "fixation: login with a planted cookie → 200 and a new session id" bash -c "[ '$(status "$out")' = 200 ] && [ -n '$(cookie_of "$TMP/fix")' ] && [ '$(cookie_of "$TMP/fix")' != '$planted' ]"
printf '%s\tFALSE\t/\tTRUE\t0\tward_session\t%s\n' "$A.$R.$WARD_DOMAIN" "$planted" >"$TMP/fix2"
check "fixation: the planted id is no session → 401" is "$(status "$(api "$A" "$TMP/fix2" GET /api/v1/users/me)")" 401
login "$A" "$TMP/re" agent@as-a.example "$PWU" >/dev/null
old=$(cookie_of "$TMP/re")
cp "$TMP/re" "$TMP/re.old"
login "$A" "$TMP/re" agent@as-a.example "$PWU" >/dev/null
check "fixation: logging in again gives another id" bash -c "[ -n '$old' ] && [ '$(cookie_of "$TMP/re")' != '$old' ]"
AGID=$(pg_super $R "SELECT user_id FROM auth.sessions WHERE token_hash = encode(sha256('$old'::bytea), 'hex')")
out=$(api "$A" "$TMP/admin" PATCH "/api/v1/users/$AGID" '{"role":"customer"}')
check "privilege change: the admin changes the agent's role → 200" is "$(status "$out")" 200
for i in $(seq 14); do st=$(status "$(api "$A" "$TMP/re" GET /api/v1/users/me)"); [ "$st" = 401 ] && break; sleep 0.5; done
check "privilege change: the user's sessions end (a new login, a new id) → 401" is "$st" 401
api "$A" "$TMP/admin" PATCH "/api/v1/users/$AGID" '{"role":"agent"}' >/dev/null

# ------------------------------------------------------------------ tenant IP allow-list
reset_limits
out=$(api "$A" "$TMP/admin" PUT /api/v1/settings/security '{"ip_allow":["127.0.0.0/8"],"ip_allow_customers":["192.0.2.0/24"]}')
check "ip allow-list: staff from 127.0.0.0/8, customers from 192.0.2.0/24 → 200" is "$(status "$out")" 200
check "ip allow-list: the admin (inside) still works → 200" is "$(status "$(api "$A" "$TMP/admin" GET /api/v1/users)")" 200
check "ip allow-list: an agent from 127.0.0.1 logs in → 200" is "$(status "$(login "$A" "$TMP/ag3" agent@as-a.example "$PWU")")" 200
out=$(login "$A" "$TMP/c2" cust@as-a.example "$PWU")
check "ip allow-list: a customer from outside theirs → 403" is "$(status "$out")" 403
for i in $(seq 14); do st=$(status "$(api "$A" "$TMP/c1" GET /api/v1/users/me)"); [ "$st" = 403 ] && break; sleep 0.5; done
check "ip allow-list: a customer session from before is refused too → 403" is "$st" 403
out=$(api "$A" "$TMP/admin" PUT /api/v1/settings/security '{"ip_allow":["127.0.0.0/8"],"ip_allow_customers":[]}')
check "ip allow-list: customers unaffected when theirs is empty → 200" is "$(status "$(login "$A" "$TMP/c2" cust@as-a.example "$PWU")")" 200
out=$(api "$A" "$TMP/admin" PUT /api/v1/settings/security '{"ip_allow":["not-a-cidr"]}')
check "ip allow-list: a malformed CIDR → 422" is "$(status "$out")" 422
# Staff from outside: the list moved away from 127.0.0.0/8 in the database (doing it
# through the API would lock the admin out mid-test, which is the point).
pg_super $R "UPDATE auth.settings SET ip_allow = '{198.51.100.0/24}' WHERE tenant_id = '$TA'" >/dev/null
reset_limits
check "ip allow-list: an agent from outside the staff list → 403" is "$(status "$(login "$A" "$TMP/ag4" agent@as-a.example "$PWU")")" 403
pg_super $R "UPDATE auth.settings SET ip_allow = '{}' WHERE tenant_id = '$TA'" >/dev/null

# ------------------------------------------------------------------ API key CIDRs
sleep 5.5 # cached answers of the allow-list section expire
out=$(api "$A" "$TMP/admin" POST /api/v1/api-keys '{"name":"inside","scopes":["users:read"],"allowed_cidrs":["127.0.0.1/32","::1/128"]}')
check "api key cidrs: a key allowed from 127.0.0.1 works → 200" is "$(status "$(bearer "$A" "$(jget "$out" '["key"]')" GET /api/v1/users)")" 200
out=$(api "$A" "$TMP/admin" POST /api/v1/api-keys '{"name":"outside","scopes":["users:read"],"allowed_cidrs":["203.0.113.0/24"]}')
check "api key cidrs: a key allowed only from 203.0.113.0/24 → 403" is "$(status "$(bearer "$A" "$(jget "$out" '["key"]')" GET /api/v1/users)")" 403
out=$(api "$A" "$TMP/admin" POST /api/v1/api-keys '{"name":"bad","scopes":["users:read"],"allowed_cidrs":["10.0.0.1/8"]}')
check "api key cidrs: a CIDR with host bits → 422" is "$(status "$out")" 422

# ------------------------------------------------------------------ OAuth token A on B
reset_limits
out=$(api "$A" "$TMP/admin" POST /api/v1/oauth-clients '{"name":"svc","scopes":["users:read"]}')
CID=$(jget "$out" '["client_id"]'); CSEC=$(jget "$out" '["client_secret"]')
AT=$(curl -sS --max-time 20 --cacert "$WARD_CA" --resolve "$A.$R.$WARD_DOMAIN:$P:127.0.0.1" \
	-d grant_type=client_credentials -d "client_id=$CID" -d "client_secret=$CSEC" \
	"https://$A.$R.$WARD_DOMAIN:$P/oauth/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
check "oauth: tenant A's access token works on A → 200" is "$(status "$(bearer "$A" "$AT" GET /api/v1/users)")" 200
check "oauth: the same token on tenant B → 401" is "$(status "$(bearer "$B" "$AT" GET /api/v1/users)")" 401
out=$(curl -sS --max-time 20 --cacert "$WARD_CA" --resolve "$B.$R.$WARD_DOMAIN:$P:127.0.0.1" -o /dev/null -w '%{http_code}' \
	-d grant_type=client_credentials -d "client_id=$CID" -d "client_secret=$CSEC" "https://$B.$R.$WARD_DOMAIN:$P/oauth/token")
check "oauth: tenant A's client credentials at tenant B's /oauth/token → 401" is "$out" 401

# ------------------------------------------------------------------ rehash
# A hash made with other Argon2id parameters (t=2, m=19456 KiB: OWASP's minimum)
# is replaced at the next successful login by one with ward-auth's parameters.
cat >"$TMP/a2.c" <<'C'
#include <argon2.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv)
{
	char out[256];
	const unsigned char salt[16] = "e2e-rehash-salt!";
	if (argc != 2 || argon2id_hash_encoded(2, 19456, 1, argv[1], strlen(argv[1]), salt, 16, 32,
					       out, sizeof out) != ARGON2_OK)
		return 1;
	puts(out);
	return 0;
}
C
if cc -o "$TMP/a2" "$TMP/a2.c" -largon2 2>"$TMP/cc.err"; then
	reset_limits
	OLDH=$("$TMP/a2" "$PWU")
	CUID=$(pg_super $R "SELECT user_id FROM auth.sessions s WHERE token_hash = encode(sha256('$(cookie_of "$TMP/c2")'::bytea), 'hex')")
	pg_super $R "UPDATE auth.users SET password_hash = '$OLDH' WHERE id = '$CUID'" >/dev/null
	check "rehash: a login against the old-parameter hash succeeds → 200" is "$(status "$(login "$A" "$TMP/c3" cust@as-a.example "$PWU")")" 200
	NEWH=$(pg_super $R "SELECT password_hash FROM auth.users WHERE id = '$CUID'")
	check "rehash: the stored hash now has ward-auth's parameters (not m=19456,t=2)" bash -c "[[ '$NEWH' == \\\$argon2id\\\$v=19\\\$* ]] && [[ '$NEWH' != *m=19456,t=2,* ]] && [ '$NEWH' != '$OLDH' ]"
	check "rehash: and the password still works → 200" is "$(status "$(login "$A" "$TMP/c4" cust@as-a.example "$PWU")")" 200
	check "rehash: a wrong password against the new hash → 401" is "$(status "$(login "$A" "$TMP/c5" cust@as-a.example "not-$PWU")")" 401
else
	not_ok "rehash: cannot build the Argon2id helper ($(head -1 "$TMP/cc.err"))"
fi
