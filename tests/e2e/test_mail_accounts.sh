#!/usr/bin/env bash
# Mail ingest and accounts (SPEC §6): an unknown sender becomes a customer of the
# tenant (ward-auth, through the queue) and the ticket's requester, a known one is
# reused; an admin of the tenant replying with [#REF] threads as staff, a stranger
# or another customer opens a new ticket; the tenant's configured addresses only
# (wardctl mail addresses); dead letters reach dl:mail-ingest and the status page
# (email degraded), and the spool's attempt counters survive a restart; a mail
# built by nodemailer over STARTTLS, verified against the cell's CA.
. "$(dirname "$0")/lib.sh"
. "$WARD_VAR/devstack.env"
export WARD_CONFIG=$WARD_VAR/wardctl.yaml

R=eu
SMTP=$(hostport $R SMTP)
SHOST=${SMTP%:*}
SPORT=${SMTP##*:}
SLUG=mail-acct
RUN=$$
PW=$("$BIN/wardctl" tenant create --slug $SLUG --region $R --name "Mail Accounts" --admin-email boss@mail-acct.example 2>/dev/null |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_password"])')
P=$(port_of $R HTTPS)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
. "$(dirname "$0")/lib_api.sh"
"$BIN/wardctl" tenant create --slug mail-other --region $R --name "Mail Other" --admin-email boss@mail-other.example >/dev/null 2>&1
TID=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$SLUG'")
DOM=$SLUG.$R.$WARD_DOMAIN
TO=support@$DOM

send() { # send FROM MSGID SUBJECT [swaks options...]
	local from=$1 mid=$2 subj=$3; shift 3
	swaks --server "$SHOST" --port "$SPORT" --to "$TO" --from "$from" \
		--header "Message-Id: <$mid>" --header "Subject: $subj" --timeout 20 "$@"
}
q() { pg_super $R "$1"; }
tickets() { q "SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'"; }
customers() { q "SELECT count(*) FROM auth.users WHERE tenant_id = '$TID' AND role = 'customer'"; }
messages_on() { q "SELECT count(*) FROM ticket.messages m JOIN ticket.tickets t ON t.id = m.ticket_id WHERE t.tenant_id = '$TID' AND t.number = $1"; }
last_number() { q "SELECT max(number) FROM ticket.tickets WHERE tenant_id = '$TID'"; }
eq() { [ "$($1)" = "$2" ]; }
export -f q tickets customers; export R TID

# ------------------------------------------------------------------ unknown sender → customer
c0=$(customers); n0=$(tickets)
check "a mail from an unknown sender is accepted" send alice@example.com "a1-$RUN@example.com" "Printer on fire" --body "It burns."
check "…and becomes a ticket" wait_for 20 bash -c "[ \$(tickets) = $((n0 + 1)) ]"
check "…and the sender a new customer of the tenant (ward-auth)" [ "$(customers)" = $((c0 + 1)) ]
T1=$(last_number)
check "…who is the ticket's requester (requester_id = that account)" bash -c \
	"[ \"\$(q \"SELECT count(*) FROM ticket.tickets t JOIN auth.users u ON u.id = t.requester_id AND u.email_bidx = t.requester_email_bidx WHERE t.tenant_id = '$TID' AND t.number = $T1 AND u.role = 'customer'\")\" = 1 ]"
check "…and the message's author" bash -c \
	"[ \"\$(q \"SELECT count(*) FROM ticket.messages m JOIN ticket.tickets t ON t.id = m.ticket_id WHERE t.number = $T1 AND t.tenant_id = '$TID' AND m.author_id = t.requester_id::text AND m.author_role = 'customer'\")\" = 1 ]"
check "the account's email is sealed (not in clear) and has no password" bash -c \
	"[ \"\$(q \"SELECT count(*) FROM auth.users WHERE tenant_id = '$TID' AND role = 'customer' AND password_hash IS NULL AND position('alice' in encode(email_enc, 'escape')) = 0\")\" = $((c0 + 1)) ]"
check "its creation is audited (user create via mail, actor service:mail-ingest)" wait_for 15 bash -c \
	"q \"SELECT count(*) FROM audit.events WHERE tenant_id = '$TID' AND type = 'user' AND action = 'create' AND actor = 'service:mail-ingest'\" | grep -qx 1"
check "a second mail from the same sender (another subject) is accepted" send alice@example.com "a2-$RUN@example.com" "Another thing" --body "Also this."
check "…a second ticket" wait_for 20 bash -c "[ \$(tickets) = $((n0 + 2)) ]"
check "…for the same account: a known customer is reused" bash -c \
	"[ \$(customers) = $((c0 + 1)) ] && [ \"\$(q \"SELECT count(DISTINCT requester_id) FROM ticket.tickets WHERE tenant_id = '$TID' AND requester_id IS NOT NULL\")\" = 1 ]"
# Two mails of one new sender at once: one account (ON CONFLICT in ward-auth).
for i in 1 2 3; do send dora@example.com "d$i-$RUN@example.com" "Dora $i" --body "d" >/dev/null 2>&1 & done
wait
check "three mails at once from a new sender: three tickets…" wait_for 20 bash -c "[ \$(tickets) = $((n0 + 5)) ]"
check "…and one account" [ "$(customers)" = $((c0 + 2)) ]

# ------------------------------------------------------------------ [#REF] by staff, strangers, other customers
REF="$(echo $SLUG | tr a-z A-Z)-$T1"
n1=$(tickets)
check "the tenant's admin replies by mail with [#$REF]" send boss@mail-acct.example "boss1-$RUN@example.com" "Re: [#$REF] Printer on fire" --body "We are on it."
check "…it threads onto the ticket" wait_for 20 bash -c "[ \"\$(q \"SELECT count(*) FROM ticket.messages m JOIN ticket.tickets t ON t.id = m.ticket_id WHERE t.tenant_id = '$TID' AND t.number = $T1\")\" = 2 ]"
check "…as a staff reply (author_role admin, author = the admin's account)" bash -c \
	"[ \"\$(q \"SELECT count(*) FROM ticket.messages m JOIN ticket.tickets t ON t.id = m.ticket_id JOIN auth.users u ON u.id::text = m.author_id WHERE t.tenant_id = '$TID' AND t.number = $T1 AND m.author_role = 'admin' AND u.role = 'admin'\")\" = 1 ]"
check "…without a new ticket or a new account" bash -c "[ \$(tickets) = $n1 ] && [ \$(customers) = $((c0 + 2)) ]"
# An agent (created by the admin over the API, after the one-time password change).
NEWPW='Sturdy-Passphrase-2026!'
out=$(login $SLUG "$TMP/admin" boss@mail-acct.example "$PW")
check "the admin logs in" [ "$(status "$out")" = 200 ]
out=$(api $SLUG "$TMP/admin" POST /api/v1/auth/password "{\"current_password\":\"$PW\",\"new_password\":\"$NEWPW\"}")
check "…and changes the one-time password" [ "$(status "$out")" = 200 ]
# The per-mail audit event (ticket/mail.ingest), read back over HTTPS by the admin:
# its target is the ticket, its detail the Message-ID, the sender and the ticket ref.
T1ID=$(q "SELECT id FROM ticket.tickets WHERE tenant_id = '$TID' AND number = $T1")
out=$(api $SLUG "$TMP/admin" GET '/api/v1/audit?type=ticket&action=mail.ingest&limit=100')
check "audit: the first mail's event names its ticket, Message-ID, sender and ref" python3 -c '
import json, sys
d = json.loads(sys.argv[1].split(" ", 1)[1])["events"]
hits = []
for e in d:
    det = e.get("detail")
    if isinstance(det, str):
        det = json.loads(det)
    if e.get("target") == "ticket:" + sys.argv[2] and det.get("message_id", "").strip("<>") == sys.argv[3]:
        hits.append((e, det))
assert len(hits) == 1, (len(hits), d)
e, det = hits[0]
assert e["actor"] == "service:mail-ingest", e
assert det["from"] == "alice@example.com", det
assert det["ref"] == sys.argv[4], det
assert det["created"] is True, det
' "$out" "$T1ID" "a1-$RUN@example.com" "$REF"
out=$(api $SLUG "$TMP/admin" POST /api/v1/users '{"email":"agent@mail-acct.example","name":"Agent","role":"agent","password":"Agent-Passphrase-2026!"}')
check "the admin creates an agent" [ "$(status "$out")" = 201 ]
agent_created=$out
check "the agent replies by mail with [#$REF] (Agent@… in another case)" send Agent@Mail-Acct.example "agent1-$RUN@example.com" "Re: [#$REF]" --body "Fixed, please check."
check "…it threads onto the ticket as the agent's reply (author_role agent)" wait_for 20 bash -c \
	"[ \"\$(q \"SELECT count(*) FROM ticket.messages m JOIN ticket.tickets t ON t.id = m.ticket_id JOIN auth.users u ON u.id::text = m.author_id WHERE t.tenant_id = '$TID' AND t.number = $T1 AND m.author_role = 'agent' AND u.role = 'agent'\")\" = 1 ] && [ \$(tickets) = $n1 ]"
check "…the ticket has 3 messages" [ "$(messages_on $T1)" = 3 ]
AID=$(jget "$agent_created" '["user"]["id"]')
out=$(api $SLUG "$TMP/admin" PATCH "/api/v1/users/$AID" '{"disabled":true}')
check "the admin disables the agent" [ "$(status "$out")" = 200 ]
check "the disabled agent's [#$REF] is accepted" send agent@mail-acct.example "agent2-$RUN@example.com" "Re: [#$REF]" --body "still me"
check "…but opens a new ticket (a disabled account is nobody's staff)" wait_for 20 bash -c "[ \$(tickets) = $((n1 + 1)) ]"
check "…leaving the ticket at 3 messages" [ "$(messages_on $T1)" = 3 ]
n1=$(tickets)
check "a stranger's [#$REF] is accepted" send mallory@evil.example "m1-$RUN@example.com" "Re: [#$REF] click" --body "inject"
check "…and opens a new ticket" wait_for 20 bash -c "[ \$(tickets) = $((n1 + 1)) ]"
check "…leaving the ticket at 3 messages" [ "$(messages_on $T1)" = 3 ]
check "another customer (dora) writing [#$REF] of alice's ticket is accepted" send dora@example.com "d4-$RUN@example.com" "Re: [#$REF]" --body "me too"
check "…and opens a new ticket (no injection into another customer's ticket)" wait_for 20 bash -c "[ \$(tickets) = $((n1 + 2)) ]"
check "…leaving alice's ticket at 3 messages" [ "$(messages_on $T1)" = 3 ]
check "the admin of another tenant writing [#$REF] opens a new ticket" send boss@mail-other.example "bo-$RUN@example.com" "Re: [#$REF]" --body "not yours"
check "…(not threaded)" wait_for 20 bash -c "[ \$(tickets) = $((n1 + 3)) ] && [ \$(q \"SELECT count(*) FROM ticket.messages m JOIN ticket.tickets t ON t.id = m.ticket_id WHERE t.tenant_id = '$TID' AND t.number = $T1\") = 3 ]"

# ------------------------------------------------------------------ configured addresses
code() { # code ADDRESS → the reply code to RCPT
	swaks --server "$SHOST" --port "$SPORT" --to "$1" --from a@example.com --quit-after RCPT 2>&1 |
		awk '/-> RCPT TO/ { f = 1; next } f && /^<[-*~]/ { match($0, /[0-9][0-9][0-9]/); print substr($0, RSTART, 3); exit }'
}
check "support@ reaches a tenant by default" [ "$(code support@$DOM)" = 250 ]
check "help@ is not configured: 550" [ "$(code help@$DOM)" = 550 ]
check "wardctl mail addresses shows [support]" bash -c "'$BIN/wardctl' mail addresses --slug $SLUG | jq -e '.addresses == [\"support\"] and .region == \"$R\"'"
check "wardctl mail addresses --set support,help,Billing" bash -c "'$BIN/wardctl' mail addresses --slug $SLUG --set support,help,Billing | jq -e '.addresses == [\"support\",\"help\",\"billing\"]'"
check "…help@ is accepted now" [ "$(code help@$DOM)" = 250 ]
check "…BILLING@ too (local parts in any case)" [ "$(code BILLING@$DOM)" = 250 ]
check "…and the change is audited" wait_for 15 bash -c "q \"SELECT count(*) FROM audit.events WHERE tenant_id = '$TID' AND action = 'mail_addresses'\" | grep -q '^[1-9]'"
check "another tenant's help@ is still refused (addresses are per tenant)" [ "$(code help@mail-other.$R.$WARD_DOMAIN)" = 550 ]
nh=$(tickets)
check "a mail to help@ becomes a ticket" swaks --server "$SHOST" --port "$SPORT" --to "help@$DOM" --from alice@example.com --header "Message-Id: <help-$RUN@example.com>" --header "Subject: via help" --body x
check "…created" wait_for 20 bash -c "[ \$(tickets) = $((nh + 1)) ]"
refuse "wardctl mail addresses refuses a bad local part" "$BIN/wardctl" mail addresses --slug $SLUG --set "ok,bad local"
refuse "wardctl mail addresses refuses an unknown tenant" "$BIN/wardctl" mail addresses --slug no-such-tenant
check "wardctl mail addresses --set help drops support" bash -c "'$BIN/wardctl' mail addresses --slug $SLUG --set help | jq -e '.addresses == [\"help\"]'"
# ward-mail-ingest keeps a found address for smtp.recipient_cache_ms (1 s by
# default; refusals are never kept, as help@ above shows): a removed address is
# refused again at the latest once that second is over.
check "…support@ → 550 5.1.1 (within the recipient cache's second)" wait_for 3 bash -c "swaks --server $SHOST --port $SPORT --to support@$DOM --from a@example.com --quit-after RCPT 2>&1 | grep -q '550 5.1.1'"
"$BIN/wardctl" mail addresses --slug $SLUG --set support >/dev/null

# ------------------------------------------------------------------ nodemailer over STARTTLS
nn=$(tickets)
check "a mail built and sent by nodemailer (STARTTLS required, the cell's CA verified)" \
	env NODE_PATH="$TOP/tests/node/node_modules" node - "$SHOST" "$SPORT" "$TO" "$RUN" "$WARD_CA" "mail.$R.$WARD_DOMAIN" <<'JS'
const nodemailer = require('nodemailer');
const fs = require('fs');
const [host, port, to, run, ca, name] = process.argv.slice(2);
const t = nodemailer.createTransport({
  host, port: Number(port), secure: false, requireTLS: true, name: 'client.example',
  tls: { ca: [fs.readFileSync(ca)], servername: name, minVersion: 'TLSv1.2', rejectUnauthorized: true },
  connectionTimeout: 10000, greetingTimeout: 10000, socketTimeout: 20000,
});
t.sendMail({
  from: '"Zoë Node" <zoe@example.org>', to, subject: 'Привет from nodemailer ✓',
  messageId: `<node-${run}@example.org>`,
  text: 'Grüße aus Node.\n', html: '<p>Grüße aus <b>Node</b></p>',
  attachments: [{ filename: 'naïve.txt', content: 'attachment body\n' }],
}).then(info => {
  if (!/^250/.test(info.response)) { console.error(info.response); process.exit(1); }
  process.exit(0);
}).catch(e => { console.error(String(e)); process.exit(1); });
JS
check "…became a ticket with its attachment and its UTF-8 subject" wait_for 20 bash -c \
	"[ \$(tickets) = $((nn + 1)) ] && [ \"\$(q \"SELECT count(*) FROM ticket.attachments a JOIN ticket.tickets t ON t.id = a.ticket_id WHERE t.tenant_id = '$TID' AND t.number = (SELECT max(number) FROM ticket.tickets WHERE tenant_id = '$TID')\")\" = 1 ]"
refuse "nodemailer refuses the cell's certificate without the CA (it is really verified)" \
	env NODE_PATH="$TOP/tests/node/node_modules" node -e "
const n = require('nodemailer');
n.createTransport({ host: '$SHOST', port: $SPORT, secure: false, requireTLS: true, tls: { servername: 'mail.$R.$WARD_DOMAIN' } })
 .sendMail({ from: 'z@example.org', to: '$TO', subject: 'x', text: 'x' })
 .then(() => process.exit(0), () => process.exit(1));"

# ------------------------------------------------------------------ dead letters, counters, status page
# In the uk cell: test_mail.sh dead-letters in eu, and the status page keeps a dead
# letter's degradation for status.dead_letter_window_s.
DR=uk
"$BIN/wardctl" tenant create --slug mail-acct-uk --region $DR --name "Mail UK" --admin-email boss@mail-acct-uk.example >/dev/null 2>&1
DTID=$(pg_super $DR "SELECT id FROM tenant.tenants WHERE slug = 'mail-acct-uk'")
dl=$WARD_VAR/$DR/spool/mail-ingest
SP=${WARD_STATUS_URL#https://status.$WARD_DOMAIN:}
SP=${SP%/}
email_state() {
	curl -sS --max-time 10 --cacert "$WARD_CA" --resolve "status.$WARD_DOMAIN:$SP:127.0.0.1" \
		"https://status.$WARD_DOMAIN:$SP/api/v2/components.json" | jq -r '.components[] | select(.id == "'"$DR"'-email") | .status'
}
export -f email_state mail_spool_pending; export SP WARD_CA WARD_DOMAIN DR
check "the status page shows $DR email operational before" wait_for 60 bash -c '[ "$(email_state)" = operational ]'
xl0=$(rcli $DR admin XLEN dl:mail-ingest 2>/dev/null || echo 0)
# A spool entry ward-ticket can never take: refused max_attempts (5) times in all,
# across a kill -9 of mail-ingest in the middle.
bad=0000000000000002-deadbeef$(printf %04x $((RUN % 65536)))
printf 'WARDSPOOL1\n%s\nnot a protobuf' "$DTID" >"$dl/tmp/$bad"
chown "$WUSER:" "$dl/tmp/$bad" 2>/dev/null || true
mv "$dl/tmp/$bad" "$dl/queue/$bad"
check "the attempt counters of a failing mail are on disk (state/<id>)" \
	wait_for 30 bash -c "[ -f '$dl/state/$bad' ] && [ \"\$(cut -d' ' -f1 '$dl/state/$bad')\" -ge 2 ]"
before=$(cut -d' ' -f1 "$dl/state/$bad")
kill -9 "$(pid_of $DR mail-ingest)"
sleep 0.5
spawn_as_user "$WARD_VAR/$DR/run/mail-ingest.pid" "$WARD_VAR/$DR/log/mail-ingest.stderr" \
	"$BIN/ward-mail-ingest" --config "$WARD_VAR/$DR/etc/mail-ingest.yaml"
check "after kill -9 and restart it becomes a dead letter…" wait_for 90 test -f "$dl/dead/$bad"
check "…after exactly 5 refusals in all ($before before the restart: the count survived)" bash -c \
	"jq -e '.refusals == 5' '$dl/dead/$bad.err' && [ \$(grep 'mail refused by ward-ticket' '$WARD_VAR/$DR/log/mail-ingest.log' | grep -c '$bad') = 5 ]"
check "…recorded in the dead-letter stream dl:mail-ingest with its error and tenant" bash -c \
	"[ \"\$(rcli $DR admin XLEN dl:mail-ingest)\" -gt $xl0 ] && rcli $DR admin XREVRANGE dl:mail-ingest + - COUNT 1 | tr '\n' ' ' | grep -q \"$bad tenant $DTID error ticket.ingest_mail answered 400\""
check "…and never its content" bash -c "! rcli $DR admin XREVRANGE dl:mail-ingest + - COUNT 1 | grep -q 'not a protobuf'"
check "the status page shows the $DR email component degraded" wait_for 30 bash -c '[ "$(email_state)" = degraded_performance ]'
check "wardctl mail dead-letters lists it" bash -c \
	"'$BIN/wardctl' mail dead-letters --region $DR | jq -e 'select(.id == \"$bad\") | .tenant == \"$DTID\" and .refusals == 5'"
check "wardctl mail dead-letters --replay queues it with fresh counters" bash -c \
	"'$BIN/wardctl' mail dead-letters --region $DR --replay $bad | jq -e '.replayed == \"queued\"' &&
	 { [ ! -f '$dl/state/$bad' ] || [ \"\$(cut -d' ' -f1 '$dl/state/$bad')\" -lt 5 ]; }"
check "…and it is retried (5 refusals again, then dead again)" wait_for 90 bash -c "[ -f '$dl/dead/$bad.err' ] && jq -e '.refusals == 5' '$dl/dead/$bad.err'"
rm -f "$dl/dead/$bad" "$dl/dead/$bad.err"

noperm() { rcli "$DR" "$@" 2>&1 | grep -q NOPERM; }
check "redis: mail-ingest may not read its dead-letter stream (XRANGE)" noperm mail-ingest XRANGE dl:mail-ingest - + COUNT 1
check "redis: mail-ingest may not delete its dead-letter stream" noperm mail-ingest DEL dl:mail-ingest
check "redis: mail-ingest may not XADD another service's dead letters" noperm mail-ingest XADD dl:ticket '*' e x
check "redis: the gateway still has no dead-letter stream" noperm gateway XADD dl:gateway '*' e x
check "the spool is empty once everything was delivered" bash -c "[ \"\$(mail_spool_pending '$dl')\" = 0 ] && [ -z \"\$(ls -A '$dl/state')\" ]"
