#!/usr/bin/env bash
# test_sso.sh — JWT single sign-on (GET /sso/jwt, SPEC §4) over real HTTPS with
# tokens signed by the npm `jose` package (tests/node/jwt_sign.mjs), an
# implementation independent of ward-auth's: HS256 and RS256 tokens that log in,
# and each refusal — forged signature, expired, iat more than 5 minutes ahead,
# replayed jti, alg none, another HMAC algorithm than the configured one, an HS256
# token keyed with the RS256 public key (algorithm confusion), an RS256 token from
# another key, missing email — plus agents held to SSO when the tenant enforces it.
# (No audience or issuer is configured in SPEC §4's SSO settings, so none is
# checked.) Our own parser's answers to hand-made malformed tokens are in
# test_auth.sh and tests/fuzz/fuzz_jwt.c.
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"

R=us
P=$(port_of $R HTTPS)
TMP=$(mktemp -d)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT
SUF=$RANDOM$RANDOM
S=sso-$SUF
. "$(dirname "$0")/lib_api.sh"
reset_limits() {
	rcli $R admin --scan --pattern 'rl:gateway:login:*' | while read -r k; do rcli $R admin DEL "$k" >/dev/null; done
	pg_super $R "DELETE FROM auth.login_failures WHERE tenant_id = '$T'" >/dev/null
}
# sign ALG KEYFILE CLAIMS [HEADER]: a token from jose.
sign() { node "$TOP/tests/node/jwt_sign.mjs" "$@"; }
now=$(date +%s)
# claims JTI EXP-OFFSET [IAT-OFFSET] [EMAIL]
claims() { printf '{"iat":%d,"exp":%d,"jti":"%s-%s","email":"%s"}' $((now + ${3:-0})) $((now + $2)) "$1" "$SUF" "${4:-sso.user@s.example}"; }
sso() { api "$S" "$TMP/sso" GET "/sso/jwt?jwt=$1"; }

out=$("$BIN/wardctl" tenant create --slug "$S" --region $R --name "SSO" --admin-email admin@s.example 2>&1)
PW=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_password"])')
T=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$S'")
reset_limits
check "setup: the admin logs in" is "$(login_admin "$S" "$TMP/admin" admin@s.example "$PW")" 200
check "setup: jose is installed (tests/node, npm ci)" test -f "$TOP/tests/node/node_modules/jose/package.json"

# ------------------------------------------------------------------ HS256
head -c 48 /dev/urandom | base64 | tr -d '\n=+/' >"$TMP/hs.key"
python3 -c 'import json,sys; print(json.dumps({"alg":"HS256","key":open(sys.argv[1]).read(),"create_customers":True}))' "$TMP/hs.key" >"$TMP/hs.json"
out=$(api "$S" "$TMP/admin" PUT /api/v1/settings/sso "$(cat "$TMP/hs.json")")
check "hs256: the admin sets the shared secret → 200, secret not echoed" bash -c "[ '$(status "$out")' = 200 ] && ! grep -qF '$(cat "$TMP/hs.key")' <<<'$out'"
printf 'another-secret-another-secret-0123456789' >"$TMP/other.key"

T1=$(sign HS256 "$TMP/hs.key" "$(claims one 120)" '{"typ":"JWT"}')
out=$(sso "$T1")
check "hs256: a valid jose token logs in → 200 and a session cookie" bash -c "[ '$(status "$out")' = 200 ] && grep -q ward_session '$TMP/sso'"
check "hs256: the unknown email became a customer" bash -c "grep -q '\"role\":\"customer\"' <<<'$out'"
out=$(api "$S" "$TMP/sso" GET /api/v1/users/me)
check "hs256: the SSO session works (users/me names the user)" bash -c "[ '$(status "$out")' = 200 ] && grep -q sso.user@s.example <<<'$out'"
check "hs256: the same token again (jti replay) → 401" is "$(status "$(sso "$T1")")" 401
check "hs256: signed with another secret (forged) → 401" is "$(status "$(sso "$(sign HS256 "$TMP/other.key" "$(claims two 120)")")")" 401
check "hs256: expired (exp 10 s ago) → 401" is "$(status "$(sso "$(sign HS256 "$TMP/hs.key" "$(claims three -10 -100)")")")" 401
check "hs256: iat 10 minutes in the future → 401" is "$(status "$(sso "$(sign HS256 "$TMP/hs.key" "$(claims four 900 600)")")")" 401
check "hs256: iat 4 minutes in the future (within ±5 min) → 200" is "$(status "$(sso "$(sign HS256 "$TMP/hs.key" "$(claims four-b 900 240)")")")" 200
check "hs256: iat 10 minutes in the past → 401" is "$(status "$(sso "$(sign HS256 "$TMP/hs.key" "$(claims five 120 -600)")")")" 401
reset_limits
check "hs256: alg none (jose UnsecuredJWT) → 401" is "$(status "$(sso "$(sign none - "$(claims six 120)")")")" 401
check "hs256: HS512 with the right secret (not the configured alg) → 401" is "$(status "$(sso "$(sign HS512 "$TMP/hs.key" "$(claims seven 120)")")")" 401
check "hs256: no email claim → 401" is "$(status "$(sso "$(sign HS256 "$TMP/hs.key" "{\"iat\":$now,\"exp\":$((now + 120)),\"jti\":\"eight-$SUF\"}")")")" 401
check "hs256: no jti claim → 401" is "$(status "$(sso "$(sign HS256 "$TMP/hs.key" "{\"iat\":$now,\"exp\":$((now + 120)),\"email\":\"x@s.example\"}")")")" 401
T9=$(sign HS256 "$TMP/hs.key" "$(claims nine 120)")
IFS=. read -r h9 c9 s9 <<<"$T9"
forged=$(python3 -c 'import base64,json,sys; print(base64.urlsafe_b64encode(json.dumps({"iat":int(sys.argv[1]),"exp":int(sys.argv[1])+120,"jti":"nine-x","email":"admin@s.example"}).encode()).decode().rstrip("="))' "$now")
check "hs256: claims swapped under a valid signature (become the admin) → 401" is "$(status "$(sso "$h9.$forged.$s9")")" 401
audited() { # the audit API lists at least N sso_jwt login failures
	local i out
	for i in $(seq 40); do
		out=$(api "$S" "$TMP/admin" GET '/api/v1/audit?action=login.failure&limit=100')
		python3 -c 'import json,sys; d=json.loads(sys.argv[1].split(" ",1)[1]); sys.exit(0 if sum("sso_jwt" in json.dumps(e) for e in d["events"]) >= int(sys.argv[2]) else 1)' "$out" "$1" 2>/dev/null && return 0
		sleep 0.25
	done
	echo "${out:0:300}"; return 1
}
check "hs256: refusals are audited (login.failure, method sso_jwt)" audited 5

# ------------------------------------------------------------------ RS256
reset_limits
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/rsa.pem" 2>/dev/null
openssl pkey -in "$TMP/rsa.pem" -pubout -out "$TMP/rsa.pub" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/rsa2.pem" 2>/dev/null
out=$(api "$S" "$TMP/admin" PUT /api/v1/settings/sso "$(python3 -c 'import json,sys; print(json.dumps({"alg":"RS256","key":open(sys.argv[1]).read(),"create_customers":True}))' "$TMP/rsa.pub")")
check "rs256: the admin sets an RSA public key → 200" is "$(status "$out")" 200
out=$(api "$S" "$TMP/admin" PUT /api/v1/settings/sso '{"alg":"RS256","key":"-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n"}')
check "rs256: a key that is not a PEM RSA public key → 422" is "$(status "$out")" 422
check "rs256: a valid jose RS256 token → 200" is "$(status "$(sso "$(sign RS256 "$TMP/rsa.pem" "$(claims ten 120)")")")" 200
check "rs256: signed by another RSA key → 401" is "$(status "$(sso "$(sign RS256 "$TMP/rsa2.pem" "$(claims eleven 120)")")")" 401
check "rs256: HS256 keyed with the public key PEM (algorithm confusion) → 401" is "$(status "$(sso "$(sign HS256 "$TMP/rsa.pub" "$(claims twelve 120)")")")" 401
check "rs256: an HS256 token with the old shared secret → 401" is "$(status "$(sso "$(sign HS256 "$TMP/hs.key" "$(claims thirteen 120)")")")" 401
check "rs256: alg none → 401" is "$(status "$(sso "$(sign none - "$(claims fourteen 120)")")")" 401
check "rs256: expired → 401" is "$(status "$(sso "$(sign RS256 "$TMP/rsa.pem" "$(claims fifteen -5 -60)")")")" 401
T16=$(sign RS256 "$TMP/rsa.pem" "$(claims sixteen 120)")
sso "$T16" >/dev/null
check "rs256: replayed jti → 401" is "$(status "$(sso "$T16")")" 401

# ------------------------------------------------------------------ enforcement
reset_limits
out=$(api "$S" "$TMP/admin" POST /api/v1/users "{\"email\":\"agent@s.example\",\"name\":\"Agent\",\"role\":\"agent\",\"password\":\"Agent-Pass-1234-$SUF\"}")
check "enforce: an agent with a password" is "$(status "$out")" 201
check "enforce: logs in with the password while SSO is optional → 200" is "$(status "$(login "$S" "$TMP/ag" agent@s.example "Agent-Pass-1234-$SUF")")" 200
out=$(api "$S" "$TMP/admin" PUT /api/v1/settings/sso "$(python3 -c 'import json,sys; print(json.dumps({"alg":"RS256","key":open(sys.argv[1]).read(),"enforce_for_agents":True}))' "$TMP/rsa.pub")")
check "enforce: the admin requires SSO for agents → 200" is "$(status "$out")" 200
reset_limits
out=$(login "$S" "$TMP/ag" agent@s.example "Agent-Pass-1234-$SUF")
check "enforce: the agent's password login is now refused" bash -c "[ '$(status "$out")' = 401 ] || [ '$(status "$out")' = 403 ]"
check "enforce: the agent logs in by SSO → 200" is "$(status "$(sso "$(sign RS256 "$TMP/rsa.pem" "$(claims seventeen 120 0 agent@s.example)")")")" 200

# ------------------------------------------------------------------ no create_customers
# The settings above left create_customers off: a valid token for an email the
# tenant does not know logs nobody in and creates nobody.
reset_limits
n0=$(pg_super $R "SELECT count(*) FROM auth.users WHERE tenant_id = '$T'")
out=$(sso "$(sign RS256 "$TMP/rsa.pem" "$(claims eighteen 120 0 stranger@s.example)")")
check "no create_customers: an unknown email with a valid token → 401" is "$(status "$out")" 401
check "no create_customers: no session cookie was set" bash -c "! grep -qi '^set-cookie: ward_session=[^;]' '$TMP/headers'"
check "no create_customers: no user was created" is "$(pg_super $R "SELECT count(*) FROM auth.users WHERE tenant_id = '$T'")" "$n0"
check "no create_customers: a known customer still logs in by SSO → 200" is "$(status "$(sso "$(sign RS256 "$TMP/rsa.pem" "$(claims nineteen 120)")")")" 200
