#!/usr/bin/env bash
# GDPR tools over real HTTPS (SPEC §4): GET /api/v1/users/{id}/export gives an admin
# everything Ward holds about one person — profile, tickets requested, messages
# written, audit events by or about them — and nothing of anyone else;
# POST /api/v1/users/{id}/erase erases it across ward-auth, ward-ticket and
# ward-audit (tickets stay, anonymised; the audit chain still verifies). The
# denials: customers, agents and other tenants' admins.
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"
R=eu
P=$(port_of $R HTTPS)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
. "$(dirname "$0")/lib_api.sh"
S=gdpr-$RANDOM$RANDOM
S2=gdpr2-$RANDOM$RANDOM
polled() { local i; for i in $(seq 20); do "$@" && return 0; sleep 1; done; return 1; }
# body of an api answer
body() { echo "${1#* }"; }
has() { grep -qF -- "$2" <<<"$1" || { echo "missing: $2"; return 1; }; }
lacks() { ! grep -qF -- "$2" <<<"$1" || { echo "found: $2"; return 1; }; }
NEWPW='Sturdy-Passphrase-2026!'
CPW='Customer-Passphrase-2026!'
M=$RANDOM$RANDOM
A_EMAIL="alice.$M@gd.example"
A_NAME="Alice Gdpr$M"
B_EMAIL="bob.$M@gd.example"
A_SUBJ="Alice subject $M"
A_BODY="Alice first body $M"
A_REPLY="Alice reply $M"
AG_REPLY="Agent answer $M"
B_SUBJ="Bob subject $M"

# Two tenants, each admin past the one-time password.
out=$("$BIN/wardctl" tenant create --slug "$S" --region $R --name "GDPR" --admin-email boss@gd.example)
PW=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_password"])')
out2=$("$BIN/wardctl" tenant create --slug "$S2" --region $R --name "GDPR 2" --admin-email boss@gd2.example)
PW2=$(echo "$out2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_password"])')
T=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$S'")
login "$S" "$TMP/admin" boss@gd.example "$PW" >/dev/null
check "admin changes the one-time password" is "$(status "$(api "$S" "$TMP/admin" POST /api/v1/auth/password \
	"{\"current_password\":\"$PW\",\"new_password\":\"$NEWPW\"}")")" 200
login "$S" "$TMP/admin" boss@gd.example "$NEWPW" >/dev/null
login "$S2" "$TMP/admin2" boss@gd2.example "$PW2" >/dev/null
api "$S2" "$TMP/admin2" POST /api/v1/auth/password "{\"current_password\":\"$PW2\",\"new_password\":\"$NEWPW\"}" >/dev/null
check "other tenant's admin logs in" is "$(status "$(login "$S2" "$TMP/admin2" boss@gd2.example "$NEWPW")")" 200

mk() { api "$1" "$2" POST /api/v1/users "{\"email\":\"$3\",\"name\":\"$4\",\"role\":\"$5\",\"password\":\"$CPW\"}"; }
a=$(mk "$S" "$TMP/admin" "$A_EMAIL" "$A_NAME" customer)
check "admin creates customer A" is "$(status "$a")" 201
A=$(jget "$a" '["user"]["id"]' 2>/dev/null || jget "$a" '["id"]')
b=$(mk "$S" "$TMP/admin" "$B_EMAIL" "Bob Other$M" customer)
B=$(jget "$b" '["user"]["id"]' 2>/dev/null || jget "$b" '["id"]')
mk "$S" "$TMP/admin" "agent.$M@gd.example" "Agent" agent >/dev/null
z=$(mk "$S2" "$TMP/admin2" "zed.$M@gd2.example" "Zed$M" customer)
Z=$(jget "$z" '["user"]["id"]' 2>/dev/null || jget "$z" '["id"]')
check "users have ids" test -n "$A" -a -n "$B" -a -n "$Z"

# A's data: a ticket with a first body and a reply; the agent answers; the agent
# also opens a ticket for A's address (requester by email). B has a ticket too.
login "$S" "$TMP/a" "$A_EMAIL" "$CPW" >/dev/null
login "$S" "$TMP/b" "$B_EMAIL" "$CPW" >/dev/null
login "$S" "$TMP/agent" "agent.$M@gd.example" "$CPW" >/dev/null
t=$(api "$S" "$TMP/a" POST /api/v1/tickets "{\"subject\":\"$A_SUBJ\",\"body\":\"$A_BODY\"}")
check "A opens a ticket" is "$(status "$t")" 201
TA=$(jget "$t" '["id"]')
check "A replies" is "$(status "$(api "$S" "$TMP/a" POST "/api/v1/tickets/$TA/messages" "{\"body\":\"$A_REPLY\"}")")" 201
ATT=$(printf 'Alice file %s' "$M" | base64 -w0)
check "A uploads an attachment" is "$(status "$(api "$S" "$TMP/a" POST "/api/v1/tickets/$TA/attachments" "{\"filename\":\"alice-$M.txt\",\"content\":\"$ATT\"}")")" 201
check "the agent answers A" is "$(status "$(api "$S" "$TMP/agent" POST "/api/v1/tickets/$TA/messages" "{\"body\":\"$AG_REPLY\"}")")" 201
t2=$(api "$S" "$TMP/agent" POST /api/v1/tickets "{\"subject\":\"For Alice $M\",\"body\":\"Agent wrote this $M\",\"requester_email\":\"$A_EMAIL\"}")
check "the agent opens a ticket for A's address" is "$(status "$t2")" 201
TA2=$(jget "$t2" '["id"]')
tb=$(api "$S" "$TMP/b" POST /api/v1/tickets "{\"subject\":\"$B_SUBJ\",\"body\":\"Bob body $M\"}")
check "B opens a ticket" is "$(status "$tb")" 201

# ---------------------------------------------------------------- export
export_a() { api "$S" "$TMP/admin" GET "/api/v1/users/$A/export"; }
# A's login reaches ward-audit through the outbox: poll until it is in the export.
has_login() { local e; e=$(export_a); grep -q '"login.success"' <<<"$e"; }
check "export: A's audit events arrive" polled has_login
e=$(export_a)
check "export: 200, JSON" is "$(status "$e")" 200
check "export: a JSON download" grep -qi '^content-type: application/json' "$TMP/headers"
E=$(body "$e")
check "export: A's profile (email, name, role)" python3 -c "
import json,sys; d=json.loads(sys.argv[1]); u=d['user']
assert u['id']==sys.argv[2] and u['email']==sys.argv[3] and u['name']==sys.argv[4] and u['role']=='customer', u
" "$E" "$A" "$A_EMAIL" "$A_NAME"
check "export: A's tickets (own and opened for A's address), decrypted" python3 -c "
import json,sys; d=json.loads(sys.argv[1]); ids={t['id'] for t in d['tickets']}
assert ids=={sys.argv[2],sys.argv[3]}, ids
assert any(t['subject']==sys.argv[4] for t in d['tickets'])
" "$E" "$TA" "$TA2" "$A_SUBJ"
check "export: the messages A wrote, decrypted, and only those" python3 -c "
import json,sys; d=json.loads(sys.argv[1]); b=sorted(m['body'] for m in d['messages'])
assert b==sorted([sys.argv[2],sys.argv[3]]), b
" "$E" "$A_BODY" "$A_REPLY"
check "export: the attachment A uploaded (metadata)" python3 -c "
import json,sys; d=json.loads(sys.argv[1]); assert [a['filename'] for a in d['attachments']]==[sys.argv[2]], d['attachments']
" "$E" "alice-$M.txt"
check "export: audit events by A (login) and about A (user create)" python3 -c "
import json,sys; d=json.loads(sys.argv[1]); ev=d['audit_events']; a='user:'+sys.argv[2]
assert any(x['action']=='login.success' and x['actor']==a for x in ev), ev
assert any(x['action']=='create' and x['target']==a for x in ev), ev
assert all(x['actor']==a or x['target']==a for x in ev), ev
" "$E" "$A"
check "export: nothing of B" lacks "$E" "$B_EMAIL"
check "export: not B's ticket" lacks "$E" "$B_SUBJ"
check "export: not B's id" lacks "$E" "$B"
check "export: not the agent's reply" lacks "$E" "$AG_REPLY"
check "export: nothing of the other tenant" lacks "$E" "$Z"
has_export_event() {
	[ "$(pg_super $R "SELECT count(*) FROM audit.events WHERE tenant_id = '$T' AND type = 'user' AND action = 'export' AND target = 'user:$A'")" -ge 1 ]
}
check "export: audit-logged (user/export, target user:A)" polled has_export_event

# ---------------------------------------------------------------- denials
check "a customer cannot export another user (403)" is "$(status "$(api "$S" "$TMP/a" GET "/api/v1/users/$B/export")")" 403
check "a customer cannot export themself either (admin only, 403)" is "$(status "$(api "$S" "$TMP/a" GET "/api/v1/users/$A/export")")" 403
check "an agent cannot export (403)" is "$(status "$(api "$S" "$TMP/agent" GET "/api/v1/users/$A/export")")" 403
check "an agent cannot erase (403)" is "$(status "$(api "$S" "$TMP/agent" POST "/api/v1/users/$A/erase" '{}')")" 403
check "a customer cannot erase (403)" is "$(status "$(api "$S" "$TMP/b" POST "/api/v1/users/$A/erase" '{}')")" 403
check "another tenant's admin: export of A is 404" is "$(status "$(api "$S2" "$TMP/admin2" GET "/api/v1/users/$A/export")")" 404
check "another tenant's admin: erase of A is 404" is "$(status "$(api "$S2" "$TMP/admin2" POST "/api/v1/users/$A/erase" '{}')")" 404
check "admin: another tenant's user id is 404 (export)" is "$(status "$(api "$S" "$TMP/admin" GET "/api/v1/users/$Z/export")")" 404
check "admin: another tenant's user id is 404 (erase)" is "$(status "$(api "$S" "$TMP/admin" POST "/api/v1/users/$Z/erase" '{}')")" 404
check "admin: unknown id is 404" is "$(status "$(api "$S" "$TMP/admin" GET /api/v1/users/00000000-0000-4000-8000-000000000000/export)")" 404
login "$S" "$TMP/bad" "$A_EMAIL" "wrong-password-9" >/dev/null
check "A still logs in (nothing erased by the refusals)" is "$(status "$(login "$S" "$TMP/a2" "$A_EMAIL" "$CPW")")" 200
check "Z is untouched" is "$(pg_super $R "SELECT erased_at IS NULL FROM auth.users WHERE id = '$Z'")" t

# What A's data looks like at rest before the erase: the blind index of the email
# and the ciphertexts of the email and of a message body A wrote.
BIDX=$(pg_super $R "SELECT email_bidx FROM auth.users WHERE id = '$A'")
EMAIL_ENC=$(pg_super $R "SELECT encode(email_enc, 'hex') FROM auth.users WHERE id = '$A'")
ATT_ENC=$(pg_super $R "SELECT encode(content_enc, 'hex') FROM ticket.attachments WHERE created_by = 'user:$A'")
check "before: A's attachment is stored" test -n "$ATT_ENC"
BODY_ENC=$(pg_super $R "SELECT encode(body_enc, 'hex') FROM ticket.messages WHERE author_id = '$A' ORDER BY seq LIMIT 1")
check "before: the blind index of A's email is in the tickets opened for it" is \
	"$(pg_super $R "SELECT count(*) FROM ticket.tickets WHERE requester_email_bidx = '$BIDX'")" 1

# ---------------------------------------------------------------- erase
er=$(api "$S" "$TMP/admin" POST "/api/v1/users/$A/erase" '{}')
check "erase: 200" is "$(status "$er")" 200
check "erase: counts" python3 -c "
import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1])
assert d['erased'] and not d.get('already_erased'), d
assert int(d['tickets_anonymised'])==2 and int(d['messages_erased'])==2, d
assert int(d['audit_details_erased'])>=1 and int(d['attachments_erased'])==1, d" "$er"

# The dump first: a login attempt afterwards counts failures for the address again.
pg_dump_cell() { local url="WARD_$(upper $R)_PG"; pg_dump --data-only "${!url}"; }
pg_dump_cell >"$TMP/dump"
check "after: the database dump has a lot in it (sanity)" test "$(wc -c <"$TMP/dump")" -gt 10000
check "after: the dump holds B's blind index (sanity: the grep can find one)" grep -q \
	"$(pg_super $R "SELECT email_bidx FROM auth.users WHERE id = '$B'")" "$TMP/dump"
refuse "after: A's email is nowhere in the dump (plaintext)" grep -qF "$A_EMAIL" "$TMP/dump"
refuse "after: A's name is nowhere in the dump" grep -qF "$A_NAME" "$TMP/dump"
refuse "after: the blind index of A's email is nowhere in the dump" grep -qF "$BIDX" "$TMP/dump"
refuse "after: the ciphertext of A's email is gone" grep -qF "${EMAIL_ENC:0:64}" "$TMP/dump"
refuse "after: the ciphertext of A's message body is gone" grep -qF "${BODY_ENC:0:64}" "$TMP/dump"
refuse "after: the ciphertext of A's attachment is gone" grep -qF "${ATT_ENC:0:64}" "$TMP/dump"
refuse "after: A's message bodies are nowhere in plaintext" grep -qF "Alice reply $M" "$TMP/dump"
check "after: A cannot log in (401)" is "$(status "$(login "$S" "$TMP/a3" "$A_EMAIL" "$CPW")")" 401
check "after: A's session is gone (401)" is "$(status "$(api "$S" "$TMP/a2" GET /api/v1/users/me)")" 401
check "after: no password hash, TOTP or session left for A" is "$(pg_super $R "SELECT (password_hash IS NULL AND totp_secret_enc IS NULL AND name_enc IS NULL AND disabled AND erased_at IS NOT NULL)::text || (SELECT count(*) FROM auth.sessions WHERE user_id = '$A')::text FROM auth.users WHERE id = '$A'")" true0

g=$(api "$S" "$TMP/admin" GET "/api/v1/tickets/$TA")
check "after: A's ticket stays with the tenant" is "$(status "$g")" 200
check "after: the ticket's requester is anonymised" python3 -c "
import json,sys; t=json.loads(sys.argv[1].split(' ',1)[1])
assert t.get('requester_email','')=='' and t.get('requester_name','')=='', t
assert sys.argv[2] not in json.dumps(t), t" "$g" "$A_SUBJ"
g2=$(api "$S" "$TMP/admin" GET "/api/v1/tickets/$TA2")
check "after: the ticket opened for A's address stays, without the address" python3 -c "
import json,sys; t=json.loads(sys.argv[1].split(' ',1)[1])
assert t.get('requester_email','')=='', t" "$g2"
ms=$(api "$S" "$TMP/admin" GET "/api/v1/tickets/$TA/messages")
check "after: A's messages are replaced by a marker, the agent's stays" python3 -c "
import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1]); b=[m['body'] for m in (d.get('messages') or d.get('items'))]
assert sys.argv[2] in b, b
assert not any(sys.argv[3] in x or sys.argv[4] in x for x in b), b
assert sum(1 for x in b if x.startswith('[erased')) == 2, b" "$ms" "$AG_REPLY" "$A_BODY" "$A_REPLY"
check "after: A's attachment is gone from the ticket" python3 -c "
import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1]); assert sys.argv[2] not in json.dumps(d), d" \
	"$(api "$S" "$TMP/admin" GET "/api/v1/tickets/$TA/attachments")" "alice-$M.txt"
check "after: B's ticket is untouched" is "$(status "$(api "$S" "$TMP/b" GET "/api/v1/tickets/$(jget "$tb" '["id"]')")")" 200

v=$(api "$S" "$TMP/admin" GET /api/v1/audit/verify)
check "after: the audit chain verifies (API)" python3 -c "
import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1]); assert d['ok'] is True and int(d['events'])>5, d" "$v"
check "after: wardctl audit verify passes" python3 -c "
import json,sys; d=json.loads(sys.stdin.read()); assert d['ok'] is True, d" < <("$BIN/wardctl" audit verify --region $R --tenant "$S")
has_erase_event() {
	[ "$(pg_super $R "SELECT count(*) FROM audit.events WHERE tenant_id = '$T' AND type = 'user' AND action = 'erase' AND target = 'user:$A'")" = 1 ]
}
check "after: the erase is audit-logged, naming the user id" polled has_erase_event
check "after: only the erase event about A keeps a detail (counts, nothing personal)" is \
	"$(pg_super $R "SELECT string_agg(e.action, ',') FROM audit.events e JOIN audit.event_details x ON x.event_id = e.id WHERE e.tenant_id = '$T' AND (e.actor = 'user:$A' OR e.target = 'user:$A')")" erase
check "after: the events about A are all still there (hashes kept)" test \
	"$(pg_super $R "SELECT count(*) FROM audit.events WHERE tenant_id = '$T' AND (actor = 'user:$A' OR target = 'user:$A')")" -ge 3

x=$(api "$S" "$TMP/admin" GET "/api/v1/users/$A/export")
check "after: export of the erased user: 200" is "$(status "$x")" 200
X=$(body "$x")
check "after: the export shows nothing personal (email)" lacks "$X" "$A_EMAIL"
check "after: ... nor the name" lacks "$X" "$A_NAME"
check "after: ... nor subjects or bodies" python3 -c "
import json,sys; d=json.loads(sys.argv[1]); s=json.dumps(d)
for w in sys.argv[2:]: assert w not in s, w
assert d['user']['erased_at'] and d['user']['email']=='' and d['sessions']==[], d['user']
" "$X" "$A_SUBJ" "$A_BODY" "$A_REPLY"

# Idempotent: a second erase changes nothing and records no second event.
er2=$(api "$S" "$TMP/admin" POST "/api/v1/users/$A/erase" '{}')
check "a second erase: 200, already erased" python3 -c "
import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1]); assert d['erased'] and d['already_erased'], d" "$er2"
sleep 2
check "a second erase records no second erase event" has_erase_event
check "the chain still verifies after the second erase" python3 -c "
import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1]); assert d['ok'] is True, d" \
	"$(api "$S" "$TMP/admin" GET /api/v1/audit/verify)"
check "the admin cannot erase their own account (409)" is "$(status "$(api "$S" "$TMP/admin" POST "/api/v1/users/$(jget "$(api "$S" "$TMP/admin" GET /api/v1/users/me)" '["id"]')/erase" '{}')")" 409

# The pieces are for ward-auth only: the gateway's route key cannot ask ward-audit
# or ward-ticket for them (no route), and a service claiming to be auth fails.
check "B still logs in (only A was erased)" is "$(status "$(login "$S" "$TMP/b2" "$B_EMAIL" "$CPW")")" 200
check "Z still logs in in the other tenant" is "$(status "$(login "$S2" "$TMP/z" "zed.$M@gd2.example" "$CPW")")" 200

# The digest still guards the details that remain: a detail swapped for another
# event's (as someone with write access to the database could) fails verify.
E1=$(pg_super $R "SELECT x.event_id FROM audit.event_details x JOIN audit.events e ON e.id = x.event_id WHERE e.tenant_id = '$T' ORDER BY e.seq LIMIT 1")
E2=$(pg_super $R "SELECT x.event_id FROM audit.event_details x JOIN audit.events e ON e.id = x.event_id WHERE e.tenant_id = '$T' ORDER BY e.seq DESC LIMIT 1")
pg_super $R "CREATE TABLE public.gdpr_e2e_saved AS SELECT * FROM audit.event_details WHERE event_id = '$E1'"
pg_super $R "UPDATE audit.event_details SET detail_enc = (SELECT detail_enc FROM audit.event_details WHERE event_id = '$E2') WHERE event_id = '$E1'"
vt=$(api "$S" "$TMP/admin" GET /api/v1/audit/verify)
check "tampered detail: verify fails, naming the digest" python3 -c "
import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1]); assert d['ok'] is False and 'digest' in d['reason'], d" "$vt"
pg_super $R "UPDATE audit.event_details x SET detail_enc = s.detail_enc FROM public.gdpr_e2e_saved s WHERE x.event_id = s.event_id; DROP TABLE public.gdpr_e2e_saved"
check "restored detail: verify passes again" python3 -c "
import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1]); assert d['ok'] is True, d" \
	"$(api "$S" "$TMP/admin" GET /api/v1/audit/verify)"
# A detail deleted other than by an erase (of an event about nobody erased) fails too.
pg_super $R "CREATE TABLE public.gdpr_e2e_saved AS SELECT * FROM audit.event_details WHERE event_id = '$E1'"
pg_super $R "DELETE FROM audit.event_details WHERE event_id = '$E1'"
vt=$(api "$S" "$TMP/admin" GET /api/v1/audit/verify)
check "detail deleted without an erasure: verify fails" python3 -c "
import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1]); assert d['ok'] is False and 'erasure' in d['reason'], d" "$vt"
pg_super $R "INSERT INTO audit.event_details SELECT * FROM public.gdpr_e2e_saved; DROP TABLE public.gdpr_e2e_saved"
check "detail put back: verify passes again" python3 -c "
import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1]); assert d['ok'] is True, d" \
	"$(api "$S" "$TMP/admin" GET /api/v1/audit/verify)"
