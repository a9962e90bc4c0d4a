#!/usr/bin/env bash
# test_roles.sh — issue 3: every REST route of SPEC §4 asked by each kind of caller
# (admin, agent and customer sessions; API keys with one scope each), against a
# matrix written here from SPEC §4's "who" column, not read from the code: a denial
# is 403 (the role or scope check), a grant 2xx, 404 where the id is made up, or 422
# (bodies are chosen so that a granted write fails validation or touches only this test's
# rows). Bodies always fit the route's JSON schema: the gateway refuses one that does
# not (422) before any role is known, for every caller alike. One tenant, its own
# users and keys.
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"

R=eu
P=$(port_of $R HTTPS)
TMP=$(mktemp -d /tmp/ward-roles-e2e.XXXXXX)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT
SUF=$RANDOM$RANDOM
S=rl-$SUF

. "$(dirname "$0")/lib_api.sh" # login_admin; api and login are redefined below
api() { # SLUG WHO METHOD PATH [JSON]: WHO a cookie jar, or key:<api key>
	local slug=$1 who=$2 m=$3 path=$4 data=${5:-}
	local args=(-sS --max-time 30 --cacert "$WARD_CA" --resolve "$slug.$R.$WARD_DOMAIN:$P:127.0.0.1"
		-o "$TMP/body" -w '%{http_code}' -X "$m" -H "Origin: https://$slug.$R.$WARD_DOMAIN:$P")
	if [[ $who == key:* ]]; then
		args+=(-H "Authorization: Bearer ${who#key:}")
	else
		args+=(-b "$who" -c "$who")
		[ -f "$who.csrf" ] && args+=(-H "X-CSRF-Token: $(cat "$who.csrf")")
	fi
	[ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
	local code
	code=$(curl "${args[@]}" "https://$slug.$R.$WARD_DOMAIN:$P$path")
	echo "$code $(cat "$TMP/body" 2>/dev/null)"
}
jv() { python3 -c 'import json,sys
try:
    d = json.loads(sys.argv[1].split(" ", 1)[1])
    for k in sys.argv[2:]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    print(d)
except Exception:
    print("")' "$@"; }
login() { # SLUG JAR EMAIL PASSWORD: the status; the CSRF token next to the jar
	local out
	rm -f "$2" "$2.csrf"
	out=$(api "$1" "$2" POST /api/v1/auth/login "{\"email\":\"$3\",\"password\":\"$4\"}")
	[ "${out%% *}" = 200 ] && jv "$out" csrf_token >"$2.csrf"
	echo "${out%% *}"
}
reset_limits() {
	rcli $R admin --scan --pattern 'rl:gateway:*' | while read -r k; do rcli $R admin DEL "$k" >/dev/null; done
}

# ------------------------------------------------------------------ the callers
out=$("$BIN/wardctl" tenant create --slug "$S" --region $R --name "Roles" --admin-email "admin@$S.example" 2>&1)
PW=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_password"])' 2>/dev/null)
reset_limits
check "login: the admin" is "$(login_admin "$S" "$TMP/admin" "admin@$S.example" "$PW")" 200
UPW="Roles-Pass-9183-$SUF"
mk_user() { # EMAIL ROLE: the new user's id
	jv "$(api "$S" "$TMP/admin" POST /api/v1/users "{\"email\":\"$1\",\"name\":\"$2 $SUF\",\"role\":\"$2\",\"password\":\"$UPW\"}")" user id
}
AG=$(mk_user "agent@$S.example" agent)
CU=$(mk_user "cust@$S.example" customer)
CU2=$(mk_user "cust2@$S.example" customer)
check "users: an agent and two customers" bash -c "[ -n '$AG' ] && [ -n '$CU' ] && [ -n '$CU2' ]"
check "login: the agent" is "$(login "$S" "$TMP/agent" "agent@$S.example" "$UPW")" 200
check "login: a customer" is "$(login "$S" "$TMP/customer" "cust@$S.example" "$UPW")" 200
mk_key() { # SCOPE: an API key with that scope only
	jv "$(api "$S" "$TMP/admin" POST /api/v1/api-keys "{\"name\":\"only $1\",\"scopes\":[\"$1\"]}")" key
}
for sc in tickets:read tickets:write users:read users:admin audit:read; do
	k=$(mk_key "$sc")
	[ -n "$k" ] || not_ok "api key with $sc only"
	printf -v "KEY_${sc/:/_}" '%s' "$k"
done
TK=$(jv "$(api "$S" "$TMP/customer" POST /api/v1/tickets '{"subject":"roles","body":"the customer'"'"'s own"}')" id)
check "a ticket of the customer" test -n "$TK"
# callers by name: jars, or key:<key>
who() {
	case $1 in
	admin | agent | customer) echo "$TMP/$1" ;;
	*) local v="KEY_${1/:/_}"; echo "key:${!v}" ;;
	esac
}

# ------------------------------------------------------------------ the matrix
# expect_all METHOD PATH BODY  caller=verdict ...   verdict: ok (2xx, or 422: the body
# reached the service's validation), 404 (reached it, nothing of that id) or 403
N_GRANT=0 N_DENY=0
expect_all() {
	local m=$1 path=$2 body=$3 c st want; shift 3
	for c in "$@"; do
		want=${c#*=}
		st=$(api "$S" "$(who "${c%%=*}")" "$m" "$path" "$body")
		st=${st%% *}
		if [ "$want" = 403 ]; then
			N_DENY=$((N_DENY + 1))
			[ "$st" = 403 ] && ok "$m $path as ${c%%=*} → 403" || not_ok "$m $path as ${c%%=*} → $st, want 403"
		elif [ "$want" = 404 ]; then # granted, and the service found no such thing
			N_GRANT=$((N_GRANT + 1))
			[ "$st" = 404 ] && ok "$m $path as ${c%%=*} → 404 (granted)" || not_ok "$m $path as ${c%%=*} → $st, want 404"
		else
			N_GRANT=$((N_GRANT + 1))
			case $st in 2?? | 422) ok "$m $path as ${c%%=*} → $st (granted)" ;;
			*) not_ok "$m $path as ${c%%=*} → $st, want a grant (2xx, or 422 for the body)" ;; esac
		fi
	done
}
NOBODY=00000000-0000-4000-8000-000000000000
SESSIONS_STAFF="admin=ok agent=ok customer=403"
ADMIN_ONLY="admin=ok agent=403 customer=403"
NO_KEY="tickets:read=403 tickets:write=403 users:read=403 users:admin=403 audit:read=403"
reset_limits

# Tenant settings: admins only, never an API credential.
expect_all GET /api/v1/settings/password-policy "" $ADMIN_ONLY $NO_KEY
expect_all PUT /api/v1/settings/password-policy '{"min_length":-1}' $ADMIN_ONLY $NO_KEY
expect_all GET /api/v1/settings/sso "" $ADMIN_ONLY $NO_KEY
expect_all PUT /api/v1/settings/sso '{"alg":"none"}' $ADMIN_ONLY $NO_KEY
expect_all GET /api/v1/settings/security "" $ADMIN_ONLY $NO_KEY
expect_all PUT /api/v1/settings/security '{"ip_allow":["not a cidr"]}' $ADMIN_ONLY $NO_KEY
# API credentials: admins only.
expect_all POST /api/v1/api-keys '{"name":"","scopes":["no:such"]}' $ADMIN_ONLY $NO_KEY
expect_all GET /api/v1/api-keys "" $ADMIN_ONLY $NO_KEY
expect_all DELETE "/api/v1/api-keys/$NOBODY" "" admin=404 agent=403 customer=403 $NO_KEY
expect_all POST /api/v1/oauth-clients '{"name":"","scopes":["no:such"]}' $ADMIN_ONLY $NO_KEY
expect_all GET /api/v1/oauth-clients "" $ADMIN_ONLY $NO_KEY
expect_all DELETE "/api/v1/oauth-clients/$NOBODY" "" admin=404 agent=403 customer=403 $NO_KEY
expect_all POST /api/v1/oauth-tokens/revoke '{"token":"no such token"}' $ADMIN_ONLY $NO_KEY
# Users: admins write, agents read; keys by users:read / users:admin.
expect_all POST /api/v1/users '{"email":"not an email","role":"agent"}' $ADMIN_ONLY \
	users:admin=ok users:read=403 tickets:write=403 audit:read=403
expect_all GET /api/v1/users "" $SESSIONS_STAFF users:read=ok tickets:read=403 audit:read=403
expect_all GET "/api/v1/users/$CU2" "" $SESSIONS_STAFF users:read=ok tickets:read=403
expect_all PATCH "/api/v1/users/$CU2" "{\"name\":\"Renamed $SUF\"}" $ADMIN_ONLY \
	users:admin=ok users:read=403 tickets:write=403
expect_all POST "/api/v1/users/$CU2/sessions/revoke" "" $ADMIN_ONLY users:admin=ok users:read=403
expect_all GET "/api/v1/users/$CU2/export" "" $ADMIN_ONLY users:admin=ok users:read=403 audit:read=403
expect_all POST "/api/v1/users/$NOBODY/erase" "" admin=404 agent=403 customer=403 users:read=403 tickets:write=403
# (an API key is no user: users:read lets it ask, and there is no such user)
expect_all GET /api/v1/users/me "" admin=ok agent=ok customer=ok users:read=404 tickets:read=403
# Tickets: agents all, customers their own; keys by tickets:read / tickets:write.
expect_all POST /api/v1/tickets '{"subject":"","body":""}' admin=ok agent=ok customer=ok \
	tickets:write=ok tickets:read=403 users:admin=403
expect_all GET /api/v1/tickets "" admin=ok agent=ok customer=ok tickets:read=ok tickets:write=403 users:read=403
expect_all GET "/api/v1/tickets/$TK" "" admin=ok agent=ok customer=ok tickets:read=ok users:admin=403
expect_all PATCH "/api/v1/tickets/$TK" '{"priority":"no such priority"}' $SESSIONS_STAFF \
	tickets:write=ok tickets:read=403
expect_all POST "/api/v1/tickets/$TK/messages" '{"body":""}' admin=ok agent=ok customer=ok \
	tickets:write=ok tickets:read=403
expect_all GET "/api/v1/tickets/$TK/messages" "" admin=ok agent=ok customer=ok tickets:read=ok users:read=403
expect_all POST /api/v1/departments '{"name":""}' $ADMIN_ONLY tickets:write=403
expect_all GET /api/v1/departments "" $SESSIONS_STAFF tickets:read=ok users:read=403
# Audit and activity: admins; keys by audit:read.
expect_all GET /api/v1/audit "" $ADMIN_ONLY audit:read=ok users:admin=403 tickets:read=403
expect_all GET /api/v1/audit/verify "" $ADMIN_ONLY audit:read=ok users:admin=403
expect_all GET /api/v1/activity "" $ADMIN_ONLY audit:read=ok tickets:write=403

out=$(api "$S" "$TMP/admin" GET "/api/v1/users/$CU2")
check "the admin's rename took, the refused ones did not" is "$(jv "$out" name)$(jv "$out" user name)" "Renamed $SUF"
echo "# $N_GRANT grants and $N_DENY denials checked"
