#!/usr/bin/env bash
# test_ticket.sh — SPEC §4's ticket rows over real HTTPS through the gateway, with
# real logins (the tenant admin from `wardctl tenant create`, agents and customers
# made with POST /api/v1/users, API keys): tickets, messages, attachments,
# departments; isolation as denials (another tenant's ticket id → 404, another
# customer's ticket → 404, internal notes absent for customers), requester by email
# (a customer who exists, or registers later, sees the tickets opened for their
# address), the status workflow and reopen on a customer reply, filters and cursor
# pagination under concurrent inserts, Idempotency-Key, input limits (422 naming
# the field), downloads only through an authorised request (attachment, nosniff),
# encryption at rest (pg_dump finds no marker), audit events delivered to
# audit.events, and exactly-once creation across a kill -9 of ward-ticket between
# commit and ack, for a ticket and for a reply (the HTTPS caller still gets the
# first result); assignment only to an enabled agent or admin of the tenant; AAD
# binding (a sealed subject swapped between two rows does not open).
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"

R=eu
P=$(port_of $R HTTPS)
TMP=$(mktemp -d /tmp/ward-ticket-e2e.XXXXXX)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT
SUF=$RANDOM$RANDOM
A=tk-a-$SUF
B=tk-b-$SUF
M=mk$SUF$RANDOM # marker: must never appear in clear in the database

. "$(dirname "$0")/lib_api.sh" # login_admin; api, jget and login are redefined below
# api SLUG JAR METHOD PATH [JSON|@file] [extra curl args]: prints "<status> <body>".
# IDEM=key adds an Idempotency-Key; BEARER=token authenticates with it instead of
# the jar's session; headers of the answer in $TMP/headers.
api() {
	local slug=$1 jar=$2 m=$3 path=$4 data=${5:-} csrf=""; shift 5 2>/dev/null || shift $#
	[ -f "$jar.csrf" ] && csrf=$(cat "$jar.csrf")
	local bf=$TMP/body.$BASHPID hf=$TMP/headers.$BASHPID # calls may run in parallel
	local args=(-sS --max-time 30 --cacert "$WARD_CA" --resolve "$slug.$R.$WARD_DOMAIN:$P:127.0.0.1"
		-o "$bf" -w '%{http_code}' -X "$m" -H "Origin: https://$slug.$R.$WARD_DOMAIN:$P")
	if [ -n "${BEARER:-}" ]; then
		args+=(-H "Authorization: Bearer $BEARER")
	elif [ "$jar" != - ]; then
		args+=(-b "$jar" -c "$jar")
		[ -n "$csrf" ] && args+=(-H "X-CSRF-Token: $csrf")
	fi
	[ -n "${IDEM:-}" ] && args+=(-H "Idempotency-Key: $IDEM")
	[ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
	local code
	code=$(curl -D "$hf" "${args[@]}" "$@" "https://$slug.$R.$WARD_DOMAIN:$P$path")
	touch "$bf" "$hf"
	echo "$code $(tr -d '\0' <"$bf")"
	mv -f "$bf" "$TMP/body"
	mv -f "$hf" "$TMP/headers"
}
# jget "<status> <json>" KEY...: a value of the JSON ("" if absent).
jget() {
	python3 -c 'import json,sys
try:
    d = json.loads(sys.argv[1].split(" ", 1)[1])
    for k in sys.argv[2:]:
        d = d[int(k)] if isinstance(d, list) else d[k]
    print(str(d).lower() if isinstance(d, bool) else d)
except Exception:
    print("")' "$@"
}
# ids "<status> <json>": the ids of its items, one a line.
ids() { python3 -c 'import json,sys
try: print("\n".join(i["id"] for i in json.loads(sys.argv[1].split(" ", 1)[1])["items"]))
except Exception: pass' "$1"; }
# fields "<status> <json>": the field names of a 422's errors, space-separated.
fields() { python3 -c 'import json,sys
try: print(" ".join(e["field"] for e in json.loads(sys.argv[1].split(" ", 1)[1])["errors"]))
except Exception: pass' "$1"; }
status() { echo "${1%% *}"; }
has() { grep -qF -- "$2" <<<"$1" || { echo "'$2' not in: ${1:0:300}"; return 1; }; }
hasnt() { ! grep -qF -- "$2" <<<"$1" || { echo "'$2' found in: ${1:0:300}"; return 1; }; }
# expect NAME STATUS api-args...: the request answers STATUS; the answer in $LAST.
expect() {
	local n=$1 want=$2; shift 2
	LAST=$(api "$@")
	if [ "$(status "$LAST")" = "$want" ]; then ok "$n"; else
		not_ok "$n (status $(status "$LAST"), want $want)"; echo "#   ${LAST:0:400}"; fi
}
# login SLUG JAR EMAIL PASSWORD: a session, its CSRF token next to the jar.
login() {
	local out
	rm -f "$2" "$2.csrf"
	out=$(api "$1" "$2" POST /api/v1/auth/login "{\"email\":\"$3\",\"password\":\"$4\"}")
	[ "$(status "$out")" = 200 ] && jget "$out" csrf_token >"$2.csrf"
	status "$out"
}
# Every request comes from 127.0.0.1: clear the per-source login limit before logins.
reset_limits() {
	rcli $R admin --scan --pattern 'rl:gateway:login:*' | while read -r k; do rcli $R admin DEL "$k" >/dev/null; done
}
uuid() { cat /proc/sys/kernel/random/uuid; }
b64json() { # FILE: the file's bytes as a JSON string of base64
	printf '"%s"' "$(base64 -w0 <"$1")"
}

# ------------------------------------------------------------------ tenants, users, logins
outA=$("$BIN/wardctl" tenant create --slug "$A" --region $R --name "TK A" --admin-email admin@tk-a.example 2>&1)
outB=$("$BIN/wardctl" tenant create --slug "$B" --region $R --name "TK B" --admin-email admin@tk-b.example 2>&1)
PWA=$(echo "$outA" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_password"])')
PWB=$(echo "$outB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_password"])')
TA=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$A'")
TB=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$B'")
reset_limits
check "login: tenant A's admin" is "$(login_admin "$A" "$TMP/adA" admin@tk-a.example "$PWA")" 200
check "login: tenant B's admin" is "$(login_admin "$B" "$TMP/adB" admin@tk-b.example "$PWB")" 200
PWU="User-Pass-1234-$SUF"
# mk_user SLUG ADMIN-JAR EMAIL ROLE NAME: prints the new user's id.
mk_user() {
	local out
	out=$(api "$1" "$2" POST /api/v1/users "{\"email\":\"$3\",\"name\":\"$5\",\"role\":\"$4\",\"password\":\"$PWU\"}")
	[ "$(status "$out")" = 201 ] || echo "# mk_user $3: $out" >&2
	jget "$out" user id
}
AGID=$(mk_user "$A" "$TMP/adA" agent@tk-a.example agent "Agent A")
C1ID=$(mk_user "$A" "$TMP/adA" c1@tk-a.example customer "Cust One")
C2ID=$(mk_user "$A" "$TMP/adA" c2@tk-a.example customer "Cust Two")
AGBID=$(mk_user "$B" "$TMP/adB" agent@tk-b.example agent "Agent B")
check "users: an agent and two customers in A, an agent in B" bash -c "[ -n '$AGID' ] && [ -n '$C1ID' ] && [ -n '$C2ID' ] && [ -n '$AGBID' ]"
check "login: A's agent" is "$(login "$A" "$TMP/ag" agent@tk-a.example "$PWU")" 200
check "login: customer 1" is "$(login "$A" "$TMP/c1" c1@tk-a.example "$PWU")" 200
check "login: customer 2" is "$(login "$A" "$TMP/c2" c2@tk-a.example "$PWU")" 200
check "login: B's agent" is "$(login "$B" "$TMP/agb" agent@tk-b.example "$PWU")" 200

# ------------------------------------------------------------------ create and read
expect "customer creates a ticket → 201" 201 "$A" "$TMP/c1" POST /api/v1/tickets \
	"{\"subject\":\"Printer $M-subject\",\"body\":\"<script>alert(1)</script> $M-body\"}"
T1=$(jget "$LAST" id)
REF1=$(jget "$LAST" ref)
check "the ticket has a per-tenant ref TK-A-$SUF-<n>" bash -c "[[ '$REF1' =~ ^TK-A-$SUF-[0-9]+$ ]]"
check "a customer's ticket is theirs (requester_id) and open" bash -c "[ '$(jget "$LAST" requester_id)' = '$C1ID' ] && [ '$(jget "$LAST" status)' = open ]"
check "HTML in a body is stored and returned as text, unchanged" is "$(jget "$LAST" body)" "<script>alert(1)</script> $M-body"
check "the answer is JSON (never rendered as HTML)" grep -qi '^content-type: application/json' "$TMP/headers"
expect "agent opens a ticket for an email with no account yet → 201" 201 "$A" "$TMP/ag" POST /api/v1/tickets \
	"{\"subject\":\"Phone\",\"body\":\"b\",\"priority\":\"high\",\"requester_email\":\"Jane.$M@Example.COM\",\"requester_name\":\"Jane $M-name\"}"
T2=$(jget "$LAST" id)
REF2=$(jget "$LAST" ref)
check "the requester email is normalised" is "$(jget "$LAST" requester_email)" "jane.$M@example.com"
check "no account: requester_id is empty" is "$(jget "$LAST" requester_id)" ""
check "refs count up per tenant" is "$(( ${REF2##*-} - ${REF1##*-} ))" 1
expect "agent opens a ticket for customer 1's email → 201" 201 "$A" "$TMP/ag" POST /api/v1/tickets \
	'{"subject":"For c1 by email","body":"b","requester_email":"C1@tk-a.example"}'
T3=$(jget "$LAST" id)
check "an existing customer's address: requester_id is that customer" is "$(jget "$LAST" requester_id)" "$C1ID"
expect "the customer reads their ticket → 200" 200 "$A" "$TMP/c1" GET "/api/v1/tickets/$T1"
expect "the customer reads the ticket opened for their email → 200" 200 "$A" "$TMP/c1" GET "/api/v1/tickets/$T3"
expect "an agent reads any ticket of the tenant → 200" 200 "$A" "$TMP/ag" GET "/api/v1/tickets/$T1"
expect "the admin reads any ticket of the tenant → 200" 200 "$A" "$TMP/adA" GET "/api/v1/tickets/$T2"
expect "B's first ticket → 201" 201 "$B" "$TMP/agb" POST /api/v1/tickets '{"subject":"other","body":"x"}'
check "another tenant starts its own numbering (TK-B-$SUF-1001)" is "$(jget "$LAST" ref)" "TK-B-$SUF-1001"
TB1=$(jget "$LAST" id)

# ------------------------------------------------------------------ isolation: 404, not 403
expect "another customer reading the ticket → 404" 404 "$A" "$TMP/c2" GET "/api/v1/tickets/$T1"
expect "another customer listing its messages → 404" 404 "$A" "$TMP/c2" GET "/api/v1/tickets/$T1/messages"
expect "another customer replying to it → 404" 404 "$A" "$TMP/c2" POST "/api/v1/tickets/$T1/messages" '{"body":"hi"}'
expect "another customer listing its attachments → 404" 404 "$A" "$TMP/c2" GET "/api/v1/tickets/$T1/attachments"
expect "another tenant's agent reading the ticket id → 404" 404 "$B" "$TMP/agb" GET "/api/v1/tickets/$T1"
expect "another tenant's agent updating the ticket id → 404" 404 "$B" "$TMP/agb" PATCH "/api/v1/tickets/$T1" '{"status":"pending"}'
expect "another tenant's admin reading the ticket id → 404" 404 "$B" "$TMP/adB" GET "/api/v1/tickets/$T1"
expect "an A agent reading B's ticket id → 404" 404 "$A" "$TMP/ag" GET "/api/v1/tickets/$TB1"
cp "$TMP/ag" "$TMP/cross"; cp "$TMP/ag.csrf" "$TMP/cross.csrf"
sed -i "s/$A\.$R/$B.$R/" "$TMP/cross"
expect "A's agent session presented to B's host → 401" 401 "$B" "$TMP/cross" GET "/api/v1/tickets/$TB1"
expect "no credential → 401" 401 "$A" - GET /api/v1/tickets
expect "customer 2 lists tickets → 200" 200 "$A" "$TMP/c2" GET /api/v1/tickets
check "another customer's list holds none of customer 1's tickets" bash -c "! grep -q -e '$T1' -e '$T3' <<<'$(ids "$LAST")'"
expect "customer 1 lists tickets → 200" 200 "$A" "$TMP/c1" GET /api/v1/tickets
L=$(ids "$LAST")
check "customer 1's list holds their tickets (own and by email), not the agent's other one" bash -c "grep -q '$T1' <<<'$L' && grep -q '$T3' <<<'$L' && ! grep -q '$T2' <<<'$L'"
expect "a customer may filter by requester" 200 "$A" "$TMP/c1" GET "/api/v1/tickets?requester=$C2ID"
check "a customer asking for another requester gets nothing" is "$(ids "$LAST")" ""
expect "an agent lists all the tenant's tickets" 200 "$A" "$TMP/ag" GET /api/v1/tickets
check "the agent's list holds every A ticket and no B ticket" bash -c "L='$(ids "$LAST")'; grep -q '$T1' <<<\"\$L\" && grep -q '$T2' <<<\"\$L\" && grep -q '$T3' <<<\"\$L\" && ! grep -q '$TB1' <<<\"\$L\""
expect "the admin lists all the tenant's tickets" 200 "$A" "$TMP/adA" GET /api/v1/tickets
check "the admin's list holds every A ticket" bash -c "L='$(ids "$LAST")'; grep -q '$T1' <<<\"\$L\" && grep -q '$T2' <<<\"\$L\""
expect "a customer cannot update a ticket → 403" 403 "$A" "$TMP/c1" PATCH "/api/v1/tickets/$T1" '{"status":"closed"}'
expect "an unknown ticket id → 404" 404 "$A" "$TMP/ag" GET "/api/v1/tickets/$(uuid)"
expect "a malformed ticket id → 404" 404 "$A" "$TMP/ag" GET "/api/v1/tickets/1%20OR%201=1"

# ------------------------------------------------------------------ API credentials
out=$(api "$A" "$TMP/adA" POST /api/v1/api-keys '{"name":"reader","scopes":["tickets:read"]}')
KR=$(jget "$out" key)
out=$(api "$A" "$TMP/adA" POST /api/v1/api-keys '{"name":"users","scopes":["users:read"]}')
KU=$(jget "$out" key)
check "api keys: one with tickets:read, one with users:read" bash -c "[[ '$KR' == wk_* ]] && [[ '$KU' == wk_* ]]"
BEARER=$KR expect "an API key with tickets:read lists tickets → 200" 200 "$A" - GET /api/v1/tickets
check "the key's list holds the tenant's tickets" bash -c "grep -q '$T1' <<<'$(ids "$LAST")'"
BEARER=$KR expect "an API key with tickets:read reads one → 200" 200 "$A" - GET "/api/v1/tickets/$T2"
BEARER=$KR expect "an API key with tickets:read cannot create → 403" 403 "$A" - POST /api/v1/tickets '{"subject":"s","body":"b"}'
BEARER=$KR expect "an API key with tickets:read cannot reply → 403" 403 "$A" - POST "/api/v1/tickets/$T1/messages" '{"body":"b"}'
BEARER=$KU expect "an API key without a tickets scope cannot list → 403" 403 "$A" - GET /api/v1/tickets
BEARER=$KR expect "A's key on B's host → 401" 401 "$B" - GET /api/v1/tickets

# ------------------------------------------------------------------ requester by email, registered later
JID=$(mk_user "$A" "$TMP/adA" "jane.$M@example.com" customer "Jane")
reset_limits
check "login: Jane, who registered after her ticket was opened" is "$(login "$A" "$TMP/jane" "JANE.$M@example.com" "$PWU")" 200
expect "Jane lists her tickets → 200" 200 "$A" "$TMP/jane" GET /api/v1/tickets
L=$(ids "$LAST")
check "Jane sees the ticket opened for her address, and only it" bash -c "grep -q '$T2' <<<'$L' && ! grep -q -e '$T1' -e '$T3' <<<'$L'"
expect "Jane reads it → 200" 200 "$A" "$TMP/jane" GET "/api/v1/tickets/$T2"
expect "Jane reads its messages → 200" 200 "$A" "$TMP/jane" GET "/api/v1/tickets/$T2/messages"
expect "Jane replies to it → 201" 201 "$A" "$TMP/jane" POST "/api/v1/tickets/$T2/messages" '{"body":"thanks"}'
expect "Jane reading customer 1's ticket → 404" 404 "$A" "$TMP/jane" GET "/api/v1/tickets/$T1"
expect "customer 1 reading Jane's ticket → 404" 404 "$A" "$TMP/c1" GET "/api/v1/tickets/$T2"
expect "the requester filter finds tickets opened for her address" 200 "$A" "$TMP/ag" GET "/api/v1/tickets?requester=$JID"
check "requester=<Jane> lists her ticket" bash -c "grep -q '$T2' <<<'$(ids "$LAST")' && ! grep -q '$T1' <<<'$(ids "$LAST")'"
check "the database keeps the address sealed with a blind index (no user row made by ticket)" bash -c \
	"[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE id = '$T2' AND requester_id IS NULL AND requester_email_enc IS NOT NULL AND requester_email_bidx ~ '^[0-9a-f]{64}\$'\")\" = 1 ]"
check "ward_ticket cannot read users' sealed emails or password hashes" bash -c \
	"! pg_as $R ward_ticket 'SELECT email_enc FROM auth.users' && ! pg_as $R ward_ticket 'SELECT password_hash FROM auth.users'"

# ------------------------------------------------------------------ input limits
long=$(printf 'x%.0s' $(seq 256))
expect "subject of 256 characters → 422" 422 "$A" "$TMP/c1" POST /api/v1/tickets "{\"subject\":\"$long\",\"body\":\"b\"}"
check "the 422 names the field subject" is "$(fields "$LAST")" subject
check "the error is a problem document" grep -qi '^content-type: application/problem+json' "$TMP/headers"
accents=$(printf '\xc3\xa9%.0s' $(seq 255))
expect "subject of 255 two-byte characters → 201" 201 "$A" "$TMP/c1" POST /api/v1/tickets "{\"subject\":\"$accents\",\"body\":\"b\"}"
expect "subject with a newline → 422" 422 "$A" "$TMP/c1" POST /api/v1/tickets '{"subject":"a\nb","body":"b"}'
check "the 422 names the field subject (one line)" is "$(fields "$LAST")" subject
expect "missing body → 422" 422 "$A" "$TMP/c1" POST /api/v1/tickets '{"subject":"s"}'
check "the 422 names the field body" is "$(fields "$LAST")" body
{ printf '{"subject":"big","body":"'; head -c 262145 /dev/zero | tr '\0' a; printf '"}'; } >"$TMP/big.json"
expect "body over 256 KiB → 422" 422 "$A" "$TMP/c1" POST /api/v1/tickets "@$TMP/big.json"
check "the 422 names the field body (too long)" bash -c "[ '$(fields "$LAST")' = body ] && grep -q 'is too long' <<<'$LAST'"
{ printf '{"subject":"big","body":"'; head -c 262144 /dev/zero | tr '\0' a; printf '"}'; } >"$TMP/max.json"
{ printf '{"subject":"64k","body":"'; head -c 65536 /dev/zero | tr '\0' a; printf '"}'; } >"$TMP/64k.json"
expect "body of 64 KiB → 201" 201 "$A" "$TMP/c1" POST /api/v1/tickets "@$TMP/64k.json"
expect "body of exactly 256 KiB → 201" 201 "$A" "$TMP/c1" POST /api/v1/tickets "@$TMP/max.json"
{ printf '{"subject":"huge","body":"'; head -c 400000 /dev/zero | tr '\0' a; printf '"}'; } >"$TMP/huge.json"
expect "a request body over the route's cap → 413" 413 "$A" "$TMP/c1" POST /api/v1/tickets "@$TMP/huge.json"
expect "a body with a control character → 422" 422 "$A" "$TMP/c1" POST /api/v1/tickets '{"subject":"s","body":"a\u0007b"}'
check "the 422 names the field body (control character)" is "$(fields "$LAST")" body
n0=$(pg_super $R "SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TA'")
# Invalid UTF-8 is refused by the gateway with a 422 naming the field; nothing is stored.
expect_bad_utf8() { # NAME FILE FIELD
	LAST=$(api "$A" "$TMP/c1" POST /api/v1/tickets "@$2")
	if [ "$(status "$LAST")" = 422 ]; then
		check "$1 → 422 naming the field $3" is "$(fields "$LAST")" "$3"
	else
		not_ok "$1 → 422 (status $(status "$LAST"))"; echo "#   ${LAST:0:300}"
	fi
}
printf '{"subject":"lone \\ud800 surrogate","body":"b"}' >"$TMP/sur1.json"
expect_bad_utf8 "subject with a lone high surrogate escape" "$TMP/sur1.json" subject
printf '{"subject":"s","body":"lone \\udc00 low"}' >"$TMP/sur2.json"
expect_bad_utf8 "body with a lone low surrogate escape" "$TMP/sur2.json" body
printf '{"subject":"bad \xff\xfe bytes","body":"b"}' >"$TMP/raw1.json"
expect_bad_utf8 "subject with raw invalid bytes" "$TMP/raw1.json" subject
printf '{"subject":"s","body":"overlong \xc0\xaf slash"}' >"$TMP/raw2.json"
expect_bad_utf8 "body with an overlong UTF-8 form" "$TMP/raw2.json" body
printf '{"subject":"s","body":"cesu \xed\xa0\x80 surrogate"}' >"$TMP/raw3.json"
expect_bad_utf8 "body with a UTF-8-encoded surrogate" "$TMP/raw3.json" body
check "no invalid UTF-8 request stored a ticket" is "$(pg_super $R "SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TA'")" "$n0"
expect "unknown priority → 422" 422 "$A" "$TMP/ag" POST /api/v1/tickets '{"subject":"s","body":"b","priority":"asap"}'
check "the 422 names the field priority" is "$(fields "$LAST")" priority
expect "bad requester_email → 422" 422 "$A" "$TMP/ag" POST /api/v1/tickets '{"subject":"s","body":"b","requester_email":"x@y"}'
check "the 422 names the field requester_email" is "$(fields "$LAST")" requester_email
expect "a customer cannot open a ticket for someone else → 422" 422 "$A" "$TMP/c1" POST /api/v1/tickets '{"subject":"s","body":"b","requester_email":"v@victim.example"}'
expect "an unknown JSON field → 422" 422 "$A" "$TMP/c1" POST /api/v1/tickets '{"subject":"s","body":"b","requester_id":"x"}'

# ------------------------------------------------------------------ messages and notes
expect "agent adds an internal note → 201" 201 "$A" "$TMP/ag" POST "/api/v1/tickets/$T1/messages" "{\"body\":\"note $M-note\",\"internal\":true}"
expect "agent replies publicly → 201" 201 "$A" "$TMP/ag" POST "/api/v1/tickets/$T1/messages" '{"body":"public reply"}'
expect "a customer cannot write an internal note → 422" 422 "$A" "$TMP/c1" POST "/api/v1/tickets/$T1/messages" '{"body":"x","internal":true}'
check "the 422 names the field internal" is "$(fields "$LAST")" internal
expect "the customer lists the messages → 200" 200 "$A" "$TMP/c1" GET "/api/v1/tickets/$T1/messages"
check "the customer sees the public messages" has "$LAST" "public reply"
check "the customer never sees the internal note" bash -c "grep -q 'public reply' <<<'$LAST' && ! grep -q -e '$M-note' -e '\"internal\":true' <<<'$LAST'"
expect "the agent lists the messages → 200" 200 "$A" "$TMP/ag" GET "/api/v1/tickets/$T1/messages"
check "the agent sees the internal note" has "$LAST" "$M-note"
check "messages are listed oldest first (the first is the ticket body)" is "$(jget "$LAST" items 0 body)" "<script>alert(1)</script> $M-body"
expect "message list, one per page" 200 "$A" "$TMP/ag" GET "/api/v1/tickets/$T1/messages?limit=1"
cur=$(jget "$LAST" next_cursor)
check "message.list pages with a cursor" bash -c "[ -n '$cur' ] && [ \$(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])[\"items\"]))' '${LAST#* }') = 1 ]"
expect "message list, page 2" 200 "$A" "$TMP/ag" GET "/api/v1/tickets/$T1/messages?limit=1&cursor=$cur"
check "page 2 of the messages is the internal note" has "$LAST" "$M-note"

# ------------------------------------------------------------------ status workflow
expect "agent sets pending → 200" 200 "$A" "$TMP/ag" PATCH "/api/v1/tickets/$T1" '{"status":"pending"}'
expect "customer replies → 201" 201 "$A" "$TMP/c1" POST "/api/v1/tickets/$T1/messages" '{"body":"still broken"}'
expect "customer reads the ticket" 200 "$A" "$TMP/c1" GET "/api/v1/tickets/$T1"
check "a customer reply reopens a pending ticket" is "$(jget "$LAST" status)" open
expect "open → closed directly → 422" 422 "$A" "$TMP/ag" PATCH "/api/v1/tickets/$T1" '{"status":"closed"}'
check "the 422 names the field status" bash -c "[ '$(fields "$LAST")' = status ] && grep -q 'cannot change from open to closed' <<<'$LAST'"
expect "open → resolved, priority and assignee → 200" 200 "$A" "$TMP/ag" PATCH "/api/v1/tickets/$T1" "{\"status\":\"resolved\",\"priority\":\"urgent\",\"assignee_id\":\"$AGID\"}"
check "the change is in the answer" bash -c "[ '$(jget "$LAST" status)' = resolved ] && [ '$(jget "$LAST" priority)' = urgent ] && [ '$(jget "$LAST" assignee_id)' = '$AGID' ]"
# Assignment: only an enabled agent or admin of the ticket's tenant (auth.users under
# the tenant's RLS); anyone else → 422 naming assignee_id, and nothing is stored.
AG2ID=$(mk_user "$A" "$TMP/adA" agent2@tk-a.example agent "Agent Two")
AGDID=$(mk_user "$A" "$TMP/adA" agentd@tk-a.example agent "Agent Gone")
check "users: a second agent and an agent to disable in A" bash -c "[ -n '$AG2ID' ] && [ -n '$AGDID' ]"
expect "the admin disables an agent → 200" 200 "$A" "$TMP/adA" PATCH "/api/v1/users/$AGDID" '{"disabled":true}'
ADMAID=$(pg_super $R "SELECT id FROM auth.users WHERE tenant_id = '$TA' AND role = 'admin' LIMIT 1")
expect "assign to another agent of the tenant → 200" 200 "$A" "$TMP/ag" PATCH "/api/v1/tickets/$T2" "{\"assignee_id\":\"$AG2ID\"}"
check "the ticket is assigned to that agent" is "$(jget "$LAST" assignee_id)" "$AG2ID"
expect "assign to the tenant's admin → 200" 200 "$A" "$TMP/ag" PATCH "/api/v1/tickets/$T2" "{\"assignee_id\":\"$ADMAID\"}"
check "the ticket is assigned to the admin" bash -c "[ -n '$ADMAID' ] && [ '$(jget "$LAST" assignee_id)' = '$ADMAID' ]"
bad_assignee() { # NAME ID: PATCH and POST with assignee_id ID → 422 naming it, ticket unchanged
	expect "assign to $1 → 422" 422 "$A" "$TMP/ag" PATCH "/api/v1/tickets/$T2" "{\"assignee_id\":\"$2\"}"
	check "the 422 names the field assignee_id ($1)" is "$(fields "$LAST")" assignee_id
	check "the ticket keeps its assignee ($1)" is "$(pg_super $R "SELECT assignee_id FROM ticket.tickets WHERE id = '$T2'")" "$ADMAID"
	expect "create assigned to $1 → 422" 422 "$A" "$TMP/ag" POST /api/v1/tickets "{\"subject\":\"assign $1\",\"body\":\"x\",\"assignee_id\":\"$2\"}"
	check "the 422 names the field assignee_id (create, $1)" is "$(fields "$LAST")" assignee_id
}
bad_assignee "a customer of the tenant" "$C1ID"
bad_assignee "another tenant's agent" "$AGBID"
bad_assignee "a random UUID" "$(uuid)"
bad_assignee "a disabled agent" "$AGDID"
check "no ticket was created by a refused assignment" is "$(pg_super $R "SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TA' AND assignee_id IN ('$C1ID', '$AGBID', '$AGDID')")" 0
expect "create assigned to an agent of the tenant → 201" 201 "$A" "$TMP/ag" POST /api/v1/tickets "{\"subject\":\"assigned\",\"body\":\"x\",\"assignee_id\":\"$AG2ID\"}"
check "the new ticket is assigned to that agent" is "$(jget "$LAST" assignee_id)" "$AG2ID"
expect "B's agent assigning B's ticket to A's agent → 422" 422 "$B" "$TMP/agb" PATCH "/api/v1/tickets/$TB1" "{\"assignee_id\":\"$AGID\"}"
check "the 422 names the field assignee_id (cross-tenant)" is "$(fields "$LAST")" assignee_id
expect "unassign → 200" 200 "$A" "$TMP/ag" PATCH "/api/v1/tickets/$T2" '{"unassign":true}'
check "the ticket is unassigned" is "$(jget "$LAST" assignee_id)" ""
expect "customer replies to a resolved ticket → 201" 201 "$A" "$TMP/c1" POST "/api/v1/tickets/$T1/messages" '{"body":"no, still broken"}'
expect "customer reads the ticket again" 200 "$A" "$TMP/c1" GET "/api/v1/tickets/$T1"
check "a customer reply reopens a resolved ticket" is "$(jget "$LAST" status)" open
expect "an agent's reply leaves it open → 201" 201 "$A" "$TMP/ag" POST "/api/v1/tickets/$T1/messages" '{"body":"looking"}'
expect "open → resolved again → 200" 200 "$A" "$TMP/ag" PATCH "/api/v1/tickets/$T1" '{"status":"resolved"}'
expect "the assignee filter" 200 "$A" "$TMP/ag" GET "/api/v1/tickets?assignee=$AGID"
check "the assigned ticket is listed for its assignee, others not" bash -c "grep -q '$T1' <<<'$(ids "$LAST")' && ! grep -q '$T2' <<<'$(ids "$LAST")'"
expect "assignee=none" 200 "$A" "$TMP/ag" GET "/api/v1/tickets?assignee=none"
check "assignee=none lists unassigned tickets only" bash -c "grep -q '$T2' <<<'$(ids "$LAST")' && ! grep -q '$T1' <<<'$(ids "$LAST")'"
expect "resolved → closed → 200" 200 "$A" "$TMP/ag" PATCH "/api/v1/tickets/$T1" '{"status":"closed"}'
expect "a customer reply on a closed ticket → 409" 409 "$A" "$TMP/c1" POST "/api/v1/tickets/$T1/messages" '{"body":"again"}'
expect "closed → open → 422" 422 "$A" "$TMP/ag" PATCH "/api/v1/tickets/$T1" '{"status":"open"}'
expect "unknown status value → 422" 422 "$A" "$TMP/ag" PATCH "/api/v1/tickets/$T1" '{"status":"done"}'
expect "the status filter" 200 "$A" "$TMP/ag" GET "/api/v1/tickets?status=closed"
check "status=closed lists only closed tickets" bash -c "grep -q '$T1' <<<'$(ids "$LAST")' && ! grep -q -e '\"status\":\"open\"' -e '$T2' <<<'$LAST'"
expect "updated_since in the future" 200 "$A" "$TMP/ag" GET "/api/v1/tickets?updated_since=2999-01-01T00:00:00Z"
check "updated_since in the future lists nothing" is "$(ids "$LAST")" ""
expect "updated_since in the past" 200 "$A" "$TMP/ag" GET "/api/v1/tickets?updated_since=2000-01-01T00:00:00Z"
check "updated_since in the past lists the tickets" has "$(ids "$LAST")" "$T1"
expect "updated_since that is not a time → 422" 422 "$A" "$TMP/ag" GET "/api/v1/tickets?updated_since=yesterday"
check "the 422 names the field updated_since" is "$(fields "$LAST")" updated_since
expect "a status filter value that is not a status → 422" 422 "$A" "$TMP/ag" GET "/api/v1/tickets?status=nope"

# ------------------------------------------------------------------ idempotency
K=key-$RANDOM$RANDOM
IDEM=$K expect "create with an Idempotency-Key → 201" 201 "$A" "$TMP/c1" POST /api/v1/tickets '{"subject":"idem","body":"once"}'
I1=$(jget "$LAST" id)
IDEM=$K expect "the same key and body again → 201" 201 "$A" "$TMP/c1" POST /api/v1/tickets '{"subject":"idem","body":"once"}'
check "a retry with the same key returns the first result" bash -c "[ -n '$I1' ] && [ '$I1' = '$(jget "$LAST" id)' ]"
IDEM=$K expect "the same key with another body → 422" 422 "$A" "$TMP/c1" POST /api/v1/tickets '{"subject":"idem","body":"twice"}'
check "the 422 names Idempotency-Key" is "$(fields "$LAST")" Idempotency-Key
IDEM=$K expect "the same key from another customer is another request → 201" 201 "$A" "$TMP/c2" POST /api/v1/tickets '{"subject":"idem","body":"once"}'
check "another principal's key does not return the first result" bash -c "[ -n '$(jget "$LAST" id)' ] && [ '$(jget "$LAST" id)' != '$I1' ]"
IDEM=$K expect "a message with an Idempotency-Key → 201" 201 "$A" "$TMP/ag" POST "/api/v1/tickets/$T2/messages" '{"body":"m"}'
MI1=$(jget "$LAST" id)
IDEM=$K expect "the same message again → 201" 201 "$A" "$TMP/ag" POST "/api/v1/tickets/$T2/messages" '{"body":"m"}'
check "a retried message is stored once" bash -c "[ -n '$MI1' ] && [ '$MI1' = '$(jget "$LAST" id)' ]"
check "one row per (principal, key) in ticket.requests for ticket.create" is \
	"$(pg_super $R "SELECT count(*) FROM ticket.requests WHERE tenant_id = '$TA' AND idem_key = '$K' AND method = 'ticket.create'")" 2

# ------------------------------------------------------------------ pagination under concurrent inserts
for i in 1 2 3 4 5; do api "$B" "$TMP/agb" POST /api/v1/tickets "{\"subject\":\"page $i\",\"body\":\"x\"}" >/dev/null; done
ALL=$(ids "$(api "$B" "$TMP/agb" GET '/api/v1/tickets?limit=100')" | sort)
check "B holds 6 tickets before paging" is "$(echo "$ALL" | grep -c .)" 6
LAST=$(api "$B" "$TMP/agb" GET '/api/v1/tickets?limit=2')
p1=$(ids "$LAST")
c1=$(jget "$LAST" next_cursor)
# Tickets are created between the pages, each committed before the next page is read
# (three after page 1, three after page 2): an offset-based cursor would hand the
# newest of them out on the later pages, or repeat tickets of page 1.
ins() { api "$B" "$TMP/agb" POST /api/v1/tickets "{\"subject\":\"meanwhile $1\",\"body\":\"x\"}" >"$TMP/ins.$1"; }
for i in 1 2 3; do ins $i; done
LAST=$(api "$B" "$TMP/agb" GET "/api/v1/tickets?limit=2&cursor=$c1")
p2=$(ids "$LAST")
c2=$(jget "$LAST" next_cursor)
for i in 4 5 6; do ins $i; done
LAST=$(api "$B" "$TMP/agb" GET "/api/v1/tickets?limit=2&cursor=$c2")
p3=$(ids "$LAST")
c3=$(jget "$LAST" next_cursor)
NEW=$(for i in 1 2 3 4 5 6; do jget "$(cat "$TMP/ins.$i")" id; done)
check "the inserts between the pages all succeeded" is "$(echo "$NEW" | grep -c .)" 6
check "pages of 2, 2 and 2 over the 6 tickets" bash -c "[ $(echo "$p1" | grep -c .) = 2 ] && [ $(echo "$p2" | grep -c .) = 2 ] && [ $(echo "$p3" | grep -c .) = 2 ]"
check "the pages are exactly the tickets before paging: none repeated, none skipped" is "$(printf '%s\n%s\n%s\n' "$p1" "$p2" "$p3" | sort)" "$ALL"
check "the last page has no next_cursor" is "$c3" ""
check "no ticket inserted meanwhile is on the later pages" bash -c "! grep -qF -f <(echo '$NEW') <<<'$(printf '%s\n%s' "$p2" "$p3")'"
expect "a fresh first page after the inserts" 200 "$B" "$TMP/agb" GET '/api/v1/tickets?limit=2'
check "a fresh first page starts with the newest inserts (they were committed)" bash -c "grep -q '$(jget "$(cat "$TMP/ins.6")" id)' <<<'$(ids "$LAST")'"
expect "a forged cursor → 422" 422 "$B" "$TMP/agb" GET '/api/v1/tickets?cursor=AAAAAAAAAAAA'
check "the 422 names the field cursor" is "$(fields "$LAST")" cursor
expect "a message-list cursor on the ticket list → 422" 422 "$A" "$TMP/ag" GET "/api/v1/tickets?cursor=$cur"
expect "limit 101 → 422" 422 "$B" "$TMP/agb" GET '/api/v1/tickets?limit=101'
check "the 422 names the field limit" is "$(fields "$LAST")" limit

# ------------------------------------------------------------------ attachments
printf '<html><script>alert("%s-file")</script></html>' "$M" >"$TMP/evil.html"
printf '\x89PNG\r\n\x1a\n\0\0\0\rIHDR' >"$TMP/pic.png"
head -c 600000 /dev/urandom >"$TMP/big.bin"
att() { # FILENAME FILE [message_id]: an upload's JSON body, in $TMP/att.json
	printf '{"filename":"%s","content":%s%s}' "$1" "$(b64json "$2")" "${3:+,\"message_id\":\"$3\"}" >"$TMP/att.json"
	echo "@$TMP/att.json"
}
expect "an agent attaches a file to the emailed requester's ticket → 201" 201 "$A" "$TMP/ag" POST "/api/v1/tickets/$T2/attachments" "$(att ../x.html "$TMP/evil.html")"
check "the file name loses its path" is "$(jget "$LAST" filename)" x.html
expect "a customer cannot attach to another's ticket → 404" 404 "$A" "$TMP/c2" POST "/api/v1/tickets/$T1/attachments" "$(att a.txt "$TMP/evil.html")"
expect "customer 1 attaches to their own (closed) ticket → 201" 201 "$A" "$TMP/c1" POST "/api/v1/tickets/$T1/attachments" "$(att "$M-name.html" "$TMP/evil.html")"
A1=$(jget "$LAST" id)
check "the content type is sniffed: HTML is text/plain" is "$(jget "$LAST" content_type)" text/plain
check "the size is the decoded size" is "$(jget "$LAST" size)" "$(stat -c %s "$TMP/evil.html")"
expect "an agent attaches a PNG named .jpg → 201" 201 "$A" "$TMP/ag" POST "/api/v1/tickets/$T1/attachments" "$(att pic.jpg "$TMP/pic.png")"
check "the PNG is image/png whatever its name says" is "$(jget "$LAST" content_type)" image/png
expect "an attachment over the limit (512 KiB) → 422" 422 "$A" "$TMP/ag" POST "/api/v1/tickets/$T1/attachments" "$(att big.bin "$TMP/big.bin")"
check "the 422 names the field content" is "$(fields "$LAST")" content
expect "content that is not base64 → 422" 422 "$A" "$TMP/ag" POST "/api/v1/tickets/$T1/attachments" '{"filename":"a","content":"%%%"}'
check "the 422 names the field content (base64)" is "$(fields "$LAST")" content
api "$A" "$TMP/c1" GET "/api/v1/tickets/$T1/attachments/$A1" >/dev/null
check "the customer downloads their attachment → 200" is "$(head -1 "$TMP/headers" | awk '{print $2}')" 200
check "the download is the uploaded bytes" cmp "$TMP/body" "$TMP/evil.html"
check "the download is Content-Disposition: attachment with the name" grep -qi "^content-disposition: attachment; filename\*=UTF-8''$M-name.html" "$TMP/headers"
check "the download has X-Content-Type-Options: nosniff" grep -qi '^x-content-type-options: nosniff' "$TMP/headers"
check "the download is served as text/plain, never text/html" bash -c "grep -i '^content-type:' '$TMP/headers' | grep -qi 'text/plain' && ! grep -qi '^content-type: text/html' '$TMP/headers'"
expect "an agent downloads it → 200" 200 "$A" "$TMP/ag" GET "/api/v1/tickets/$T1/attachments/$A1"
expect "downloading without a credential → 401" 401 "$A" - GET "/api/v1/tickets/$T1/attachments/$A1"
expect "another customer downloading it → 404" 404 "$A" "$TMP/c2" GET "/api/v1/tickets/$T1/attachments/$A1"
expect "another tenant downloading it → 404" 404 "$B" "$TMP/agb" GET "/api/v1/tickets/$T1/attachments/$A1"
expect "the attachment under another ticket id → 404" 404 "$A" "$TMP/ag" GET "/api/v1/tickets/$T2/attachments/$A1"
expect "an unknown attachment id → 404" 404 "$A" "$TMP/ag" GET "/api/v1/tickets/$T1/attachments/$(uuid)"
expect "an agent writes an internal note" 201 "$A" "$TMP/ag" POST "/api/v1/tickets/$T2/messages" '{"body":"secret note","internal":true}'
NOTE=$(jget "$LAST" id)
expect "an agent attaches a file to the internal note → 201" 201 "$A" "$TMP/ag" POST "/api/v1/tickets/$T2/attachments" "$(att internal.txt "$TMP/evil.html" "$NOTE")"
A3=$(jget "$LAST" id)
expect "Jane lists the attachments of her ticket" 200 "$A" "$TMP/jane" GET "/api/v1/tickets/$T2/attachments"
check "the customer's attachment list omits the internal note's file" bash -c "[ -n '$A3' ] && [ -n '$(ids "$LAST")' ] && ! grep -q '$A3' <<<'$(ids "$LAST")'"
expect "the customer downloading the internal note's file → 404" 404 "$A" "$TMP/jane" GET "/api/v1/tickets/$T2/attachments/$A3"
expect "the agent downloads the internal note's file → 200" 200 "$A" "$TMP/ag" GET "/api/v1/tickets/$T2/attachments/$A3"

# ------------------------------------------------------------------ departments
expect "an admin creates a department → 201" 201 "$A" "$TMP/adA" POST /api/v1/departments '{"name":"Billing"}'
DEP=$(jget "$LAST" id)
expect "the same department again → 409" 409 "$A" "$TMP/adA" POST /api/v1/departments '{"name":"Billing"}'
expect "an agent cannot create departments → 403" 403 "$A" "$TMP/ag" POST /api/v1/departments '{"name":"Sales"}'
expect "a customer cannot list departments → 403" 403 "$A" "$TMP/c1" GET /api/v1/departments
expect "an agent lists departments → 200" 200 "$A" "$TMP/ag" GET /api/v1/departments
check "the list holds Billing" has "$LAST" '"name":"Billing"'
expect "a ticket moves to the department → 200" 200 "$A" "$TMP/ag" PATCH "/api/v1/tickets/$T2" "{\"department_id\":\"$DEP\"}"
expect "an unknown department → 422" 422 "$A" "$TMP/ag" PATCH "/api/v1/tickets/$T2" "{\"department_id\":\"$(uuid)\"}"
expect "another tenant's department is unknown → 422" 422 "$B" "$TMP/agb" PATCH "/api/v1/tickets/$TB1" "{\"department_id\":\"$DEP\"}"
check "the 422 names the field department_id" is "$(fields "$LAST")" department_id

# ------------------------------------------------------------------ AAD binds a ciphertext to its row
# A superuser swaps the sealed subjects of two tickets of one tenant (same DEK): each
# ciphertext is bound to its row id, so neither opens under the other's row; reading
# gives an error, never the other ticket's subject. Swapped back, both read again.
SX="aad-x-$M"
SY="aad-y-$M"
expect "a ticket X for the swap → 201" 201 "$A" "$TMP/ag" POST /api/v1/tickets "{\"subject\":\"$SX\",\"body\":\"x\"}"
TX=$(jget "$LAST" id)
expect "a ticket Y for the swap → 201" 201 "$A" "$TMP/ag" POST /api/v1/tickets "{\"subject\":\"$SY\",\"body\":\"y\"}"
TY=$(jget "$LAST" id)
swap_subjects() {
	pg_super $R "UPDATE ticket.tickets t SET subject_enc = o.subject_enc FROM ticket.tickets o WHERE (t.id = '$TX' AND o.id = '$TY') OR (t.id = '$TY' AND o.id = '$TX')" >/dev/null
}
hx=$(pg_super $R "SELECT md5(subject_enc) FROM ticket.tickets WHERE id = '$TX'")
hy=$(pg_super $R "SELECT md5(subject_enc) FROM ticket.tickets WHERE id = '$TY'")
swap_subjects
check "the superuser swapped the sealed subjects of X and Y" bash -c "[ -n '$hx' ] && [ '$hx' != '$hy' ] && [ \"\$(pg_super $R \"SELECT md5(subject_enc) FROM ticket.tickets WHERE id = '$TX'\")\" = '$hy' ]"
SWAP=$(api "$A" "$TMP/ag" GET "/api/v1/tickets/$TX")
check "reading X with Y's sealed subject is a 500 at once (no retry can cure it), not 200" is "$(status "$SWAP")" 500
check "  ... naming the integrity check" bash -c "grep -q 'integrity check' <<<'$SWAP'"
check "the answer never holds Y's subject (nor X's)" bash -c "! grep -q -e '$SY' -e '$SX' <<<'$SWAP'"
swap_subjects
expect "swapped back, X reads again → 200" 200 "$A" "$TMP/ag" GET "/api/v1/tickets/$TX"
check "X's subject is its own again" is "$(jget "$LAST" subject)" "$SX"
# The failed read was answered and acked, not left for a retry: nothing pending, so
# that the crash test below counts only its own pending request.
check "the failed read leaves nothing pending on q:ticket" wait_for 15 bash -c "[ \"\$(rcli $R admin XPENDING q:ticket ticket | head -1)\" = 0 ]"

# ------------------------------------------------------------------ audit events reach ward-audit
ev_count() { # WHERE: events of tenant A stored by ward-audit in audit.events
	pg_super $R "SELECT count(*) FROM audit.events WHERE tenant_id = '$TA' AND $1"
}
for a in create reply note status assign priority attachment.add; do
	check "audit: ticket/$a delivered to audit.events" wait_for 15 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM audit.events WHERE tenant_id = '$TA' AND type = 'ticket' AND action = '$a'\")\" -gt 0 ]"
done
check "audit: department/create delivered" wait_for 15 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM audit.events WHERE tenant_id = '$TA' AND type = 'department' AND action = 'create'\")\" = 1 ]"
check "audit: the create names the customer and the ticket" is "$(ev_count "action = 'create' AND actor = 'user:$C1ID' AND target = 'ticket:$T1'")" 1
check "audit: the agent's status change is recorded as theirs" bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM audit.events WHERE tenant_id = '$TA' AND action = 'status' AND actor = 'user:$AGID' AND target = 'ticket:$T1'\")\" -ge 3 ]"
check "audit: the reopen by the customer's reply is recorded" bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM audit.events WHERE tenant_id = '$TA' AND action = 'status' AND actor = 'user:$C1ID' AND target = 'ticket:$T1'\")\" = 2 ]"
check "audit: the assignment is recorded" is "$(ev_count "action = 'assign' AND actor = 'user:$AGID' AND target = 'ticket:$T1'")" 1
check "audit: the internal note and the replies are recorded" bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM audit.events WHERE tenant_id = '$TA' AND action = 'note' AND target = 'ticket:$T1'\")\" = 1 ] && [ \"\$(pg_super $R \"SELECT count(*) FROM audit.events WHERE tenant_id = '$TA' AND action = 'reply' AND target = 'ticket:$T1'\")\" -ge 4 ]"
check "audit: an idempotent retry recorded one create event" is "$(ev_count "action = 'create' AND target = 'ticket:$I1'")" 1
check "audit: tenant B's events are B's" is "$(ev_count "target = 'ticket:$TB1'")" 0
check "audit: the outbox of ward-ticket is drained" wait_for 15 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.outbox WHERE tenant_id = '$TA'\")\" = 0 ]"
expect "the admin reads the audit log over HTTPS" 200 "$A" "$TMP/adA" GET "/api/v1/audit?type=ticket&action=create&limit=100"
check "GET /api/v1/audit lists the ticket's creation" has "$LAST" "ticket:$T1"
expect "the admin reads the agent activity log" 200 "$A" "$TMP/adA" GET /api/v1/activity
check "an agent's reply counts in the agent activity log" bash -c "grep -q '$AGID' <<<'$LAST' && grep -q 'reply' <<<'$LAST'"

# ------------------------------------------------------------------ at rest
check "the database holds only ciphertext for subject, email, name" bash -c \
	"pg_super $R \"SELECT t::text FROM ticket.tickets t\" >$TMP/rows && grep -q '$T1' $TMP/rows && ! grep -q '$M' $TMP/rows"
check "pg_dump of the eu cell has no marker (subject, bodies, note, email, name, files)" bash -c \
	"PGPASSWORD=\$(cat $WARD_VAR/$R/secrets/pg-admin) /usr/lib/postgresql/15/bin/pg_dump -h 127.0.0.1 -p $(port_of $R PG) -U postgres ward >$TMP/dump.sql && [ -s $TMP/dump.sql ] && ! grep -qi '$M' $TMP/dump.sql"
check "the dump does hold the tickets (the marker test can fail)" grep -q "$T1" "$TMP/dump.sql"
check "ticket tables are forced under row-level security" is \
	"$(pg_super $R "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'ticket' AND c.relname IN ('tickets','messages','attachments','departments','counters','requests') AND c.relrowsecurity AND c.relforcerowsecurity")" 6
check "ward_ticket without a tenant setting sees no ticket" is "$(pg_as $R ward_ticket 'SELECT count(*) FROM ticket.tickets')" 0
check "ward_ticket without a tenant setting sees no user" is "$(pg_as $R ward_ticket 'SELECT count(id) FROM auth.users')" 0

# ------------------------------------------------------------------ exactly once across kill -9
etc=$WARD_VAR/$R/etc
pid1=$(pid_of $R ticket)
kill -TERM "$pid1"
wait_for 10 bash -c "! kill -0 $pid1 2>/dev/null" || not_ok "ticket-1 did not stop"
mk_instance() { # NAME EXTRA-YAML
	sed -e "s/^instance: ticket-1$/instance: $1/" -e "s|/ticket.log$|/$1.log|" \
		-e 's/^  route_keys_file: \(.*\)$/  route_keys_file: \1\n  claim_idle_ms: 1000/' \
		"$etc/ticket.yaml" >"$etc/$1.yaml"
	printf '%s' "$2" >>"$etc/$1.yaml"
	chown "$WUSER" "$etc/$1.yaml" 2>/dev/null || true
}
mk_instance ticket-2 $'testing:\n  sleep_after_commit_ms: 8000\n'
mk_instance ticket-3 ''
spawn_as_user "$WARD_VAR/$R/run/ticket-2.pid" "$WARD_VAR/$R/log/ticket-2.stderr" "$BIN/ward-ticket" --config "$etc/ticket-2.yaml"
pid2=$(cat "$WARD_VAR/$R/run/ticket-2.pid")
check "ticket-2 (sleeps 8 s after each commit) is up" wait_for 10 bash -c "[ \"\$(rcli $R admin EXISTS hb:ticket:ticket-2)\" = 1 ]"
n0=$(pg_super $R "SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TA'")
api "$A" "$TMP/c1" POST /api/v1/tickets '{"subject":"crash once","body":"exactly once"}' >"$TMP/crash.out" 2>&1 &
cpid=$!
check "ticket-2 committed the ticket (and is now between commit and ack)" wait_for 8 bash -c \
	"[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TA'\")\" = $((n0 + 1)) ]"
check "the message is still pending (not acked)" bash -c "[ \"\$(rcli $R admin XPENDING q:ticket ticket | head -1)\" -gt 0 ]"
check "…and still in q:ticket (not deleted before its ack)" bash -c "[ \"\$(rcli $R admin XLEN q:ticket)\" -gt 0 ]"
kill -KILL "$pid2"
check "ticket-2 is dead (SIGKILL between commit and ack)" wait_for 5 bash -c "! kill -0 $pid2 2>/dev/null"
spawn_as_user "$WARD_VAR/$R/run/ticket-3.pid" "$WARD_VAR/$R/log/ticket-3.stderr" "$BIN/ward-ticket" --config "$etc/ticket-3.yaml"
pid3=$(cat "$WARD_VAR/$R/run/ticket-3.pid")
wait "$cpid"
CRASH=$(cat "$TMP/crash.out")
check "the HTTPS caller got 201 after the crash (redelivered to ticket-3)" is "$(status "$CRASH")" 201
CID=$(jget "$CRASH" id)
check "the redelivered request created no second ticket" is "$(pg_super $R "SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TA'")" "$((n0 + 1))"
check "the answer is the ticket committed before the crash" bash -c \
	"[ -n '$CID' ] && [ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE id = '$CID'\")\" = 1 ]"
check "one create event for it" wait_for 10 bash -c "[ \"\$(pg_super $R \"SELECT (SELECT count(*) FROM ticket.outbox WHERE target = 'ticket:$CID' AND action = 'create') + (SELECT count(*) FROM audit.events WHERE target = 'ticket:$CID' AND action = 'create')\")\" = 1 ]"
check "nothing is left pending on q:ticket" wait_for 5 bash -c "[ \"\$(rcli $R admin XPENDING q:ticket ticket | head -1)\" = 0 ]"
check "…and the redelivered entry, acked by ticket-3, is deleted from q:ticket (XLEN 0)" \
	wait_for 5 bash -c "[ \"\$(rcli $R admin XLEN q:ticket)\" = 0 ]"
# The same for a reply (POST /api/v1/tickets/{id}/messages): ticket-3 stops, the
# sleeping ticket-2 takes the request, commits, and is killed before its ack.
kill -TERM "$pid3"
wait_for 10 bash -c "! kill -0 $pid3 2>/dev/null" || not_ok "ticket-3 did not stop"
spawn_as_user "$WARD_VAR/$R/run/ticket-2.pid" "$WARD_VAR/$R/log/ticket-2.stderr" "$BIN/ward-ticket" --config "$etc/ticket-2.yaml"
pid2=$(cat "$WARD_VAR/$R/run/ticket-2.pid")
check "ticket-2 (sleeps 8 s after each commit) is up again" wait_for 10 bash -c "kill -0 $pid2 2>/dev/null"
nm0=$(pg_super $R "SELECT count(*) FROM ticket.messages WHERE ticket_id = '$CID'")
api "$A" "$TMP/c1" POST "/api/v1/tickets/$CID/messages" '{"body":"reply exactly once"}' >"$TMP/crashm.out" 2>&1 &
cpid=$!
check "ticket-2 committed the reply (and is now between commit and ack)" wait_for 8 bash -c \
	"[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.messages WHERE ticket_id = '$CID'\")\" = $((nm0 + 1)) ]"
check "the reply request is still pending (not acked)" bash -c "[ \"\$(rcli $R admin XPENDING q:ticket ticket | head -1)\" -gt 0 ]"
kill -KILL "$pid2"
check "ticket-2 is dead again (SIGKILL between commit and ack)" wait_for 5 bash -c "! kill -0 $pid2 2>/dev/null"
spawn_as_user "$WARD_VAR/$R/run/ticket-3.pid" "$WARD_VAR/$R/log/ticket-3.stderr" "$BIN/ward-ticket" --config "$etc/ticket-3.yaml"
pid3=$(cat "$WARD_VAR/$R/run/ticket-3.pid")
wait "$cpid"
CRASHM=$(cat "$TMP/crashm.out")
check "the HTTPS caller got 201 for the reply after the crash" is "$(status "$CRASHM")" 201
CMID=$(jget "$CRASHM" id)
check "the redelivered reply created no second message" is "$(pg_super $R "SELECT count(*) FROM ticket.messages WHERE ticket_id = '$CID'")" "$((nm0 + 1))"
check "the answer is the message committed before the crash" bash -c \
	"[ -n '$CMID' ] && [ \"\$(pg_super $R \"SELECT count(*) FROM ticket.messages WHERE id = '$CMID' AND ticket_id = '$CID'\")\" = 1 ]"
check "one reply event for the ticket" wait_for 10 bash -c "[ \"\$(pg_super $R \"SELECT (SELECT count(*) FROM ticket.outbox WHERE target = 'ticket:$CID' AND action = 'reply') + (SELECT count(*) FROM audit.events WHERE target = 'ticket:$CID' AND action = 'reply')\")\" = 1 ]"
check "nothing is left pending on q:ticket after the reply" wait_for 5 bash -c "[ \"\$(rcli $R admin XPENDING q:ticket ticket | head -1)\" = 0 ]"
check "…and the redelivered reply, acked by ticket-3, is deleted from q:ticket (XLEN 0)" \
	wait_for 5 bash -c "[ \"\$(rcli $R admin XLEN q:ticket)\" = 0 ]"
kill -TERM "$pid3"
wait_for 10 bash -c "! kill -0 $pid3 2>/dev/null"
rm -f "$etc/ticket-2.yaml" "$etc/ticket-3.yaml" "$WARD_VAR/$R/run/ticket-2.pid" "$WARD_VAR/$R/run/ticket-3.pid"
check "the dev stack brings ticket-1 back" "$TOP/ops/devstack" up
check "ping through q:ticket works again" "$BIN/wardctl" ping --region $R --service ticket
expect "a ticket over HTTPS after the restart → 201" 201 "$A" "$TMP/c1" POST /api/v1/tickets '{"subject":"after","body":"restart"}'
