#!/usr/bin/env bash
# The audit API over real HTTPS (SPEC §4 audit rows): what must be recorded is
# recorded — admin changes, logins and logouts, password changes, agent activity on
# tickets —, admins query it with filters and a cursor, verify it, see agent
# activity and export it; nobody else does.
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
R=eu
P=$(port_of $R HTTPS)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
. "$(dirname "$0")/lib_api.sh"
S=audit-api-$RANDOM$RANDOM
S2=audit-api2-$RANDOM$RANDOM

out=$("$BIN/wardctl" tenant create --slug "$S" --region $R --name "Audit API" --admin-email boss@aa.example)
PW=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_password"])')
out2=$("$BIN/wardctl" tenant create --slug "$S2" --region $R --name "Audit API 2" --admin-email boss@ab.example)
PW2=$(echo "$out2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_password"])')
T=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$S'")
NEWPW='Sturdy-Passphrase-2026!'

# Actions to be recorded.
START=$(date +%s)
login "$S" "$TMP/bad" boss@aa.example "not-the-password-9" >/dev/null
check "admin logs in" is "$(status "$(login "$S" "$TMP/admin" boss@aa.example "$PW")")" 200
check "admin changes the one-time password" is "$(status "$(api "$S" "$TMP/admin" POST /api/v1/auth/password \
	"{\"current_password\":\"$PW\",\"new_password\":\"$NEWPW\"}")")" 200
check "admin creates an agent" is "$(status "$(api "$S" "$TMP/admin" POST /api/v1/users \
	'{"email":"agent@aa.example","name":"Agent","role":"agent","password":"Agent-Passphrase-2026!"}')")" 201
check "admin changes the password policy" is "$(status "$(api "$S" "$TMP/admin" PUT /api/v1/settings/password-policy \
	'{"min_length":14,"require_letter":true,"require_digit":true,"require_symbol":false,"history":5,"max_age_days":180}')")" 200
k=$(api "$S" "$TMP/admin" POST /api/v1/api-keys '{"name":"auditor","scopes":["audit:read"]}')
check "admin creates an API key with audit:read" is "$(status "$k")" 201
KEY=$(jget "$k" '["key"]')
k2=$(api "$S" "$TMP/admin" POST /api/v1/api-keys '{"name":"reader","scopes":["tickets:read"]}')
KEY2=$(jget "$k2" '["key"]')
check "admin creates an OAuth client" is "$(status "$(api "$S" "$TMP/admin" POST /api/v1/oauth-clients '{"name":"ci","scopes":["tickets:read"]}')")" 201
check "the agent logs in" is "$(status "$(login "$S" "$TMP/agent" agent@aa.example 'Agent-Passphrase-2026!')")" 200
t=$(api "$S" "$TMP/agent" POST /api/v1/tickets '{"subject":"Printer on fire","body":"Please help"}')
check "the agent opens a ticket" is "$(status "$t")" 201
TID=$(jget "$t" '["id"]')
check "the agent replies" is "$(status "$(api "$S" "$TMP/agent" POST "/api/v1/tickets/$TID/messages" '{"body":"On it"}')")" 201
check "the agent adds an internal note" is "$(status "$(api "$S" "$TMP/agent" POST "/api/v1/tickets/$TID/messages" '{"body":"note","internal":true}')")" 201
check "the agent changes the status" is "$(status "$(api "$S" "$TMP/agent" PATCH "/api/v1/tickets/$TID" '{"status":"pending"}')")" 200
check "the agent logs out" is "$(status "$(api "$S" "$TMP/agent" POST /api/v1/auth/logout '{}')")" 204

# Each must appear in the admin's audit list (events arrive through the outbox).
want="session/login.failure session/login.success user/password.change user/create settings/password_policy.update api_key/create oauth_client/create session/logout"
has_all() {
	local body w
	body=$(api "$S" "$TMP/admin" GET '/api/v1/audit?limit=100')
	for w in $want; do
		python3 - "$body" "${w%%/*}" "${w#*/}" <<'PY' || return 1
import json, sys
d = json.loads(sys.argv[1].split(' ', 1)[1])
sys.exit(0 if any(e["type"] == sys.argv[2] and e["action"] == sys.argv[3] for e in d["events"]) else 1)
PY
	done
}
# Each try costs a request and a few parses: poll a bounded number of times.
polled() { local i; for i in $(seq 20); do "$@" && return 0; sleep 1; done; return 1; }
check "audit: logins (success, failure), logout, password change and every admin change are recorded" polled has_all
has_ticket() {
	local n
	n=$(pg_super $R "SELECT count(DISTINCT action) FROM audit.events WHERE tenant_id = '$T' AND type = 'ticket'")
	[ "$n" -ge 4 ]
}
check "audit: ticket created, replied, noted and status changed are recorded" polled has_ticket
one=$(api "$S" "$TMP/admin" GET '/api/v1/audit?limit=1')
check "audit: each event has id, at, type, action, actor, target, ip, detail" python3 -c "
import json,sys; e=json.loads(sys.argv[1].split(' ',1)[1])['events'][0]
assert all(k in e for k in ('id','at','type','action','actor')), e" "$one"

# The login events name who, from where and when (not only that they happened).
BOSS=$(pg_super $R "SELECT id FROM auth.users WHERE tenant_id = '$T' AND role = 'admin'")
login_fields() { # ACTION ACTOR TARGET: the audit API's ACTION events include one with these fields
	local out
	out=$(api "$S" "$TMP/admin" GET "/api/v1/audit?action=$1&limit=100")
	python3 - "$out" "$@" "$START" <<'PY'
import datetime, json, sys
out, action, actor, target, start = sys.argv[1:6]
ev = json.loads(out.split(' ', 1)[1])['events']
now = datetime.datetime.now(datetime.timezone.utc)
t0 = datetime.datetime.fromtimestamp(int(start) - 5, datetime.timezone.utc)
def ok(e):
    at = datetime.datetime.fromisoformat(e['at'].replace('Z', '+00:00'))
    return (e['action'] == action and e['type'] == 'session' and e['actor'] == actor and
            e.get('target') == target and e.get('ip') == '127.0.0.1' and t0 <= at <= now)
assert any(ok(e) for e in ev), [{k: e.get(k) for k in ('at', 'actor', 'target', 'ip')} for e in ev]
PY
}
check "audit: the failed login names actor anonymous, the account as target, ip 127.0.0.1 and its time" \
	login_fields login.failure anonymous "user:$BOSS"
check "audit: the successful login names the user as actor, ip 127.0.0.1 and its time" \
	login_fields login.success "user:$BOSS" "user:$BOSS"
check "audit: the same fields in the database row (superuser)" is "$(pg_super $R "SELECT count(*) FROM audit.events WHERE tenant_id = '$T' AND type = 'session' AND ((action = 'login.failure' AND actor = 'anonymous') OR (action = 'login.success' AND actor = 'user:$BOSS')) AND target = 'user:$BOSS' AND ip = '127.0.0.1' AND at BETWEEN to_timestamp($START - 5) AND now()")" 2

# Filters and cursor pagination.
f=$(api "$S" "$TMP/admin" GET '/api/v1/audit?action=login.success&limit=100')
check "audit: ?action= filters" python3 -c "
import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1])['events']
assert d and all(e['action']=='login.success' for e in d), d" "$f"
p1=$(api "$S" "$TMP/admin" GET '/api/v1/audit?limit=2')
c=$(jget "$p1" '["next_cursor"]')
p2=$(api "$S" "$TMP/admin" GET "/api/v1/audit?limit=2&cursor=$c")
check "audit: ?limit=2 gives two events and a cursor" python3 -c "
import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1]); assert len(d['events'])==2 and d['next_cursor']" "$p1"
check "audit: the next page continues without overlap" python3 -c "
import json,sys; a=json.loads(sys.argv[1].split(' ',1)[1])['events']; b=json.loads(sys.argv[2].split(' ',1)[1])['events']
assert b and not {e['id'] for e in a} & {e['id'] for e in b}" "$p1" "$p2"
check "audit: limit over 100 is refused (422)" is "$(status "$(api "$S" "$TMP/admin" GET '/api/v1/audit?limit=101')")" 422

v=$(api "$S" "$TMP/admin" GET /api/v1/audit/verify)
check "audit/verify: the chain verifies" bash -c "[ '$(status "$v")' = 200 ] && [ '$(jget "$v" '["ok"]')' = True ]"
a=$(api "$S" "$TMP/admin" GET /api/v1/activity)
check "activity: the agent's login, logout and reply are counted" python3 -c "
import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1])['agents']
assert any(x['logins']>=1 and x['replies']>=1 and x['logouts']>=1 for x in d), d" "$a"
csv=$(api "$S" "$TMP/admin" GET '/api/v1/audit/export?format=csv')
check "export: CSV with a header line" bash -c "[ '$(status "$csv")' = 200 ] && echo '${csv#* }' | head -1 | grep -q 'action'"
js=$(api "$S" "$TMP/admin" GET '/api/v1/audit/export?format=json')
check "export: JSON" is "$(status "$js")" 200

# Denials.
check "an agent may not read the audit log (403)" is "$(status "$(api "$S" "$TMP/agent2" GET /api/v1/audit)")" 401
login "$S" "$TMP/agent2" agent@aa.example 'Agent-Passphrase-2026!' >/dev/null
check "a logged-in agent may not read the audit log (403)" is "$(status "$(api "$S" "$TMP/agent2" GET /api/v1/audit)")" 403
check "an agent may not verify the chain (403)" is "$(status "$(api "$S" "$TMP/agent2" GET /api/v1/audit/verify)")" 403
check "an API key with audit:read may read it" is "$(status "$(bearer "$S" "$KEY" GET /api/v1/audit)")" 200
check "an API key without audit:read may not (403)" is "$(status "$(bearer "$S" "$KEY2" GET /api/v1/audit)")" 403
check "the audit:read key may not create users (403)" bash -c "[ \"\$(curl -sS -o /dev/null -w '%{http_code}' --cacert $WARD_CA --resolve $S.$R.$WARD_DOMAIN:$P:127.0.0.1 -X POST -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' --data '{\"email\":\"x@aa.example\",\"name\":\"x\",\"role\":\"admin\"}' https://$S.$R.$WARD_DOMAIN:$P/api/v1/users)\" = 403 ]"
check "tenant B's admin logs in (and changes the one-time password)" is "$(login_admin "$S2" "$TMP/b" boss@ab.example "$PW2")" 200
b=$(api "$S2" "$TMP/b" GET '/api/v1/audit?limit=100')
check "tenant B's audit log holds none of tenant A's events" python3 -c "
import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1])['events']
assert d and not any('aa.example' in json.dumps(e) or e['action']=='password_policy.update' for e in d), d" "$b"
check "tenant A's key on tenant B is refused (401)" is "$(status "$(bearer "$S2" "$KEY" GET /api/v1/audit)")" 401
