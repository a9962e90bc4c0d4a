#!/usr/bin/env bash
# Outbound mail (issue 5, "Threading"): an agent's public reply is mailed to the
# requester by ward-mail-out through a real SMTP relay that keeps what it gets
# (Postfix's smtp-sink, the dev stack's relay; aiosmtpd for STARTTLS), read back
# with Python's email package; an answer to that mail (swaks, In-Reply-To only, no
# [#REF]) from the requester or anyone threads into the same ticket, a guessed or
# another tenant's Message-ID does not; internal notes and customers' messages are
# never mailed; relay down or 4xx → retried and delivered once, 5xx → dead letter
# and audit event; kill -9 of ward-mail-out mid-stream → every mail once; STARTTLS
# required → nothing in clear; the Redis credentials' denials.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_api.sh"

R=eu
P=$(port_of $R HTTPS)
SMTP=$(hostport $R SMTP)
RELAY=$(hostport $R RELAY)
RPORT=${RELAY##*:}
RDIR=$WARD_VAR/$R/relay
TMP=$(mktemp -d)
chmod 0755 "$TMP"
RUN=$$
A=mo-a-$RUN
B=mo-b-$RUN
trap 'relay_stop; relay_sink; rm -rf "$TMP"' EXIT

newtenant() { # newtenant SLUG: the one-time admin password
	"$BIN/wardctl" tenant create --slug "$1" --region $R --name "Helpdesk $1" \
		--admin-email "boss@$1.example" | sed -n 's/.*"admin_password": *"\([^"]*\)".*/\1/p'
}
PWA=$(newtenant $A)
PWB=$(newtenant $B)
TA=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$A'")
TB=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$B'")

# mailin SLUG FROM MSGID SUBJECT BODY [swaks options]: one mail to the tenant.
mailin() {
	local slug=$1 from=$2 mid=$3 subj=$4 body=$5; shift 5
	swaks --server "${SMTP%:*}" --port "${SMTP##*:}" --to "support@$slug.$R.$WARD_DOMAIN" \
		--from "$from" --header "Message-Id: <$mid>" --header "Subject: $subj" --body "$body" \
		--timeout 20 "$@"
}
tickets_of() { pg_super $R "SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$1'"; }
messages_of() { pg_super $R "SELECT count(*) FROM ticket.messages WHERE ticket_id = '$1'"; }
export -f tickets_of messages_of
export R

# What the relay got, parsed by Python's email package: relay_mails TOKEN prints
# one JSON line per mail whose decoded body holds TOKEN (headers and body).
cat >"$TMP/relay.py" <<'PY'
import email, email.policy, glob, json, os, sys
token = sys.argv[2]
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*")) + glob.glob(os.path.join(sys.argv[1], "new", "*"))):
    if not os.path.isfile(f):
        continue
    raw = open(f, "rb").read()
    i = raw.find(b"Date: ")
    m = email.message_from_bytes(raw[i:] if i >= 0 else raw, policy=email.policy.default)
    try:
        body = m.get_content()
    except Exception:
        continue
    if token in body:
        h = {k: str(v) for k, v in m.items()}
        print(json.dumps({"file": f, "headers": h, "body": body, "raw": raw[i:].decode("utf-8", "replace")}))
PY
relay_mails() { /usr/bin/python3 "$TMP/relay.py" "${2:-$RDIR}" "$1"; }
relay_count() { relay_mails "$1" "${2:-}" | wc -l; }
export -f relay_mails relay_count
export TMP RDIR
MOLOG=$WARD_VAR/$R/log/mail-out.log
# log_has PATTERN N: ward-mail-out's log has more than N lines matching PATTERN.
log_has() { [ "$(grep -c -- "$1" "$MOLOG")" -gt "$2" ]; }
export -f log_has
export MOLOG
# hdr TOKEN NAME: a header of the (first) mail holding TOKEN.
hdr() { relay_mails "$1" | head -1 | /usr/bin/python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["headers"].get(sys.argv[1],""))' "$2"; }
export -f hdr

# The relay: the dev stack's smtp-sink, or one of ours on its port.
relay_stop() {
	local pid
	pid=$(cat "$WARD_VAR/$R/run/relay.pid" 2>/dev/null) || return 0
	kill "$pid" 2>/dev/null
	wait_for 10 bash -c "! kill -0 $pid 2>/dev/null"
	rm -f "$WARD_VAR/$R/run/relay.pid"
	wait_for 10 bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$RPORT) 2>/dev/null"
}
relay_sink() { # relay_sink [smtp-sink options]: (re)start smtp-sink, dumping into $RDIR
	relay_stop
	(cd "$RDIR" && spawn_as_user "$WARD_VAR/$R/run/relay.pid" "$WARD_VAR/$R/log/relay.log" \
		smtp-sink -d "$RDIR/%Y%m%d%H%M%S." -h "relay.$R.$WARD_DOMAIN" "$@" "127.0.0.1:$RPORT" 64)
	wait_for 10 bash -c "(exec 3<>/dev/tcp/127.0.0.1/$RPORT) 2>/dev/null"
}
# ward-mail-out restarted with config $1 (or killed with signal $2 first).
MOCONF=$WARD_VAR/$R/etc/mail-out.yaml
mailout_restart() {
	local conf=$1 sig=${2:-TERM} pid
	pid=$(pid_of $R mail-out)
	kill -"$sig" "$pid" 2>/dev/null
	wait_for 30 bash -c "! kill -0 $pid 2>/dev/null"
	rcli $R admin DEL hb:mail-out:mail-out-1 >/dev/null
	spawn_as_user "$WARD_VAR/$R/run/mail-out.pid" "$WARD_VAR/$R/log/mail-out.stderr" \
		"$BIN/ward-mail-out" --config "$conf"
	wait_for 20 bash -c "[ \"\$(rcli $R admin EXISTS hb:mail-out:mail-out-1)\" = 1 ]"
}
reply() { # reply SLUG JAR TICKET BODY [internal]: status of POST …/messages
	local body
	body=$(/usr/bin/python3 -c 'import json,sys; print(json.dumps({"body":sys.argv[1],"internal":sys.argv[2]=="true"}))' "$4" "${5:-false}")
	status "$(api "$1" "$2" POST "/api/v1/tickets/$3/messages" "$body")"
}

check "tenants A and B of the cell" bash -c "[ -n '$TA' ] && [ -n '$TB' ] && [ -n '$PWA' ]"
check "admin of A logs in" [ "$(login_admin $A "$TMP/a" "boss@$A.example" "$PWA")" = 200 ]
check "admin of B logs in" [ "$(login_admin $B "$TMP/b" "boss@$B.example" "$PWB")" = 200 ]
check "the dev stack's relay (smtp-sink) listens" bash -c "(exec 3<>/dev/tcp/127.0.0.1/$RPORT)"

# ------------------------------------------------------------------ a reply is mailed
check "alice mails A: a new ticket" mailin $A alice@example.com "in1-$RUN@example.com" "Printer on fire" "It burns."
check "…the ticket exists" wait_for 15 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TA'\")\" = 1 ]"
T1=$(pg_super $R "SELECT id FROM ticket.tickets WHERE tenant_id = '$TA'")
REF1=$(echo "$A" | tr a-z A-Z)-$(pg_super $R "SELECT number FROM ticket.tickets WHERE id = '$T1'")
TOK1="tok1-$RUN"
check "the admin's public reply → 201" [ "$(reply $A "$TMP/a" "$T1" "Hello Alice, $TOK1
.a line that starts with a dot
Grüße, ünïcödé")" = 201 ]
check "…arrives at the relay" wait_for 20 bash -c "[ \"\$(relay_count $TOK1)\" = 1 ]"
MID1=$(hdr $TOK1 Message-ID)
check "…To: the requester" [ "$(hdr $TOK1 To)" = alice@example.com ]
check "…From: support@<slug>.<region>.<domain> (the tenant's name as display name)" \
	[ "$(hdr $TOK1 From)" = "Helpdesk $A <support@$A.$R.$WARD_DOMAIN>" ]
check "…Subject: Re: [#REF] <subject>" [ "$(hdr $TOK1 Subject)" = "Re: [#$REF1] Printer on fire" ]
check "…Message-ID: <40 hex random>@<slug>.<region>.<domain>" \
	bash -c "[[ '$MID1' =~ ^\<[0-9a-f]{40}@$A\.$R\.$WARD_DOMAIN\>\$ ]]"
check "…Date, MIME-Version, text/plain; charset=utf-8, a transfer encoding" bash -c \
	"[ -n \"\$(hdr $TOK1 Date)\" ] && [ \"\$(hdr $TOK1 MIME-Version)\" = 1.0 ] && [ \"\$(hdr $TOK1 Content-Type)\" = 'text/plain; charset=\"utf-8\"' ] && [ \"\$(hdr $TOK1 Content-Transfer-Encoding)\" = base64 ]"
check "…the body decodes to the reply (UTF-8, the dotted line intact)" bash -c \
	"relay_mails $TOK1 | /usr/bin/python3 -c 'import json,sys; b=json.loads(sys.stdin.read())[\"body\"].replace(\"\\r\\n\",\"\\n\"); assert \"\\n.a line that starts with a dot\\n\" in b and \"Grüße, ünïcödé\" in b, b'"
# (smtp-sink writes what it got with LF line ends: the CRLFs are the unit test's)
check "…every line of the mail is at most 78 bytes" bash -c \
	"relay_mails $TOK1 | /usr/bin/python3 -c 'import json,sys; r=json.loads(sys.stdin.read())[\"raw\"]; assert all(len(l.rstrip(\"\\r\").encode())<=78 for l in r.split(\"\\n\")), r'"
check "the Message-ID is recorded for the ticket as kind 'out' (a blind index, not the id)" bash -c \
	"[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.mail_ids WHERE ticket_id = '$T1' AND kind = 'out' AND message_id_bidx ~ '^[0-9a-f]{64}\$'\")\" = 1 ] && ! pg_super $R \"SELECT message_id_bidx FROM ticket.mail_ids\" | grep -q '${MID1:1:40}'"
check "the mail outbox is empty once relayed" bash -c \
	"[ \"\$(pg_super $R 'SELECT count(*) FROM ticket.mail_outbox')\" = 0 ]"
check "an audit event records the sent mail (type mail, action send)" wait_for 15 bash -c \
	"[ \"\$(pg_super $R \"SELECT count(*) FROM audit.events WHERE tenant_id = '$TA' AND type = 'mail' AND action = 'send'\")\" = 1 ]"

# ------------------------------------------------------------------ what is never mailed
# A customer account with a password, its own ticket and message.
CPW="Carol-Pass-1234-$RUN"
out=$(api $A "$TMP/a" POST /api/v1/users "{\"email\":\"carol-$RUN@example.com\",\"name\":\"Carol\",\"role\":\"customer\",\"password\":\"$CPW\"}")
CID=$(jget "$out" '["user"]["id"]' 2>/dev/null)
check "a customer account (carol)" [ -n "$CID" ]
check "carol logs in" [ "$(status "$(login $A "$TMP/c" "carol-$RUN@example.com" "$CPW")")" = 200 ]
out=$(api $A "$TMP/c" POST /api/v1/tickets '{"subject":"Need help","body":"My account"}')
T2=$(jget "$out" '["id"]' 2>/dev/null)
check "carol opens a ticket through the API" [ -n "$T2" ]
TOKN="note-$RUN"
TOKC="cust-$RUN"
TOK2="tok2-$RUN"
check "an internal note on alice's ticket → 201" [ "$(reply $A "$TMP/a" "$T1" "$TOKN secret" true)" = 201 ]
check "carol's own message on her ticket → 201" [ "$(reply $A "$TMP/c" "$T2" "$TOKC more info")" = 201 ]
check "then the admin's public reply to carol (her address asked of ward-auth)" \
	[ "$(reply $A "$TMP/a" "$T2" "Hi Carol $TOK2")" = 201 ]
check "…arrives, To: carol's account address" wait_for 20 bash -c "[ \"\$(relay_count $TOK2)\" = 1 ]"
check "…To: carol" [ "$(hdr $TOK2 To)" = "carol-$RUN@example.com" ]
check "the internal note was never mailed (the outbox is in order: it came before)" [ "$(relay_count "$TOKN")" = 0 ]
check "carol's message was never mailed" [ "$(relay_count "$TOKC")" = 0 ]
check "carol's account is disabled" bash -c "[ '$(status "$(api $A "$TMP/a" PATCH "/api/v1/users/$CID" '{"disabled":true}')")' = 200 ]"
TOK3="tok3-$RUN"
TOK3B="tok3b-$RUN"
check "a public reply to disabled carol → 201" [ "$(reply $A "$TMP/a" "$T2" "Hi again $TOK3")" = 201 ]
check "a public reply to alice after it → 201" [ "$(reply $A "$TMP/a" "$T1" "Later $TOK3B")" = 201 ]
check "…alice's arrives" wait_for 20 bash -c "[ \"\$(relay_count $TOK3B)\" = 1 ]"
check "…the disabled account's was not mailed (ward-auth gives no address), and audited as skipped" bash -c \
	"[ \"\$(relay_count $TOK3)\" = 0 ] && [ \"\$(pg_super $R \"SELECT count(*) FROM audit.events WHERE tenant_id = '$TA' AND type = 'mail' AND action = 'send.skipped'\")\" -ge 1 ]"

# ------------------------------------------------------------------ answers thread back
n_t1=$(messages_of "$T1")
n_ta=$(tickets_of "$TA")
check "alice answers the mail (In-Reply-To only, no [#REF] in the subject) → 250" \
	mailin $A alice@example.com "ans1-$RUN@example.com" "Re: your answer" "Thanks" --header "In-Reply-To: $MID1"
check "…a reply on the same ticket" wait_for 15 bash -c "[ \"\$(messages_of $T1)\" = $((n_t1 + 1)) ]"
check "a stranger answers the same mail (References only) → 250" \
	mailin $A mallory@elsewhere.example "ans2-$RUN@example.com" "Re: your answer" "Me too" --header "References: <x-$RUN@example.com> $MID1"
check "…also a reply on that ticket (a Ward Message-ID is unguessable: it threads unconditionally)" \
	wait_for 15 bash -c "[ \"\$(messages_of $T1)\" = $((n_t1 + 2)) ]"
check "…and no new ticket" [ "$(tickets_of "$TA")" = "$n_ta" ]
GUESS="<$(printf '0%.0s' $(seq 40))@$A.$R.$WARD_DOMAIN>"
check "a guessed Message-ID of A's domain → 250" \
	mailin $A mallory@elsewhere.example "ans3-$RUN@example.com" "Re: hello" "Guess" --header "In-Reply-To: $GUESS"
check "…threads nowhere: a new ticket" wait_for 15 bash -c "[ \"\$(tickets_of $TA)\" = $((n_ta + 1)) ]"
check "…and alice's ticket is unchanged" [ "$(messages_of "$T1")" = $((n_t1 + 2)) ]
# B's own 'out' Message-ID, sent to A: not A's, so a new ticket of A, nothing on B's.
check "bob mails B: a ticket of B" mailin $B bob@example.com "inb-$RUN@example.com" "Hello B" "Hi"
check "…exists" wait_for 15 bash -c "[ \"\$(tickets_of $TB)\" = 1 ]"
TB1=$(pg_super $R "SELECT id FROM ticket.tickets WHERE tenant_id = '$TB'")
TOKB="tokb-$RUN"
check "B's admin answers bob → 201" [ "$(reply $B "$TMP/b" "$TB1" "Bob, $TOKB")" = 201 ]
check "…mailed" wait_for 20 bash -c "[ \"\$(relay_count $TOKB)\" = 1 ]"
MIDB=$(hdr $TOKB Message-ID)
n_tb1=$(messages_of "$TB1")
n_ta=$(tickets_of "$TA")
check "a mail to A answering B's Message-ID → 250" \
	mailin $A bob@example.com "ans4-$RUN@example.com" "Re: Hello B" "Cross" --header "In-Reply-To: $MIDB"
check "…a new ticket of A (another tenant's Message-ID threads nowhere in A)" \
	wait_for 15 bash -c "[ \"\$(tickets_of $TA)\" = $((n_ta + 1)) ]"
check "…and nothing on B's ticket" [ "$(messages_of "$TB1")" = "$n_tb1" ]

# ------------------------------------------------------------------ relay failures
dl0=$(rcli $R admin XLEN dl:mail-out)
TOK4="tok4-$RUN"
relay_stop
n=$(grep -c 'cannot connect' "$MOLOG")
check "relay down (connection refused): a reply → 201" [ "$(reply $A "$TMP/a" "$T1" "Down $TOK4")" = 201 ]
check "…ward-mail-out will retry (cannot connect)" wait_for 20 log_has 'cannot connect' "$n"
n=$(grep -c 'RCPT TO: 4' "$MOLOG")
relay_sink -r RCPT
check "relay answers 4xx to RCPT: not delivered, retried" wait_for 20 log_has 'RCPT TO: 4' "$n"
check "…nothing reached the relay" [ "$(relay_count "$TOK4")" = 0 ]
relay_sink
check "relay back: delivered" wait_for 40 bash -c "[ \"\$(relay_count $TOK4)\" -ge 1 ]"
sleep 7
check "…once (one copy at the relay), nothing left pending" bash -c \
	"[ \"\$(relay_count $TOK4)\" = 1 ] && [ \"\$(rcli $R admin XLEN q:mail-out)\" = 0 ] && [ \"\$(rcli $R admin XLEN dl:mail-out)\" = $dl0 ]"

TOK5="tok5-$RUN"
relay_sink -f RCPT
n_fail0=$(grep -c 'refused the mail for good' "$WARD_VAR/$R/log/mail-out.log")
check "relay answers 5xx to RCPT: a reply → 201" [ "$(reply $A "$TMP/a" "$T1" "Refused $TOK5")" = 201 ]
check "…dead-lettered (dl:mail-out) with the relay's answer" wait_for 20 bash -c \
	"[ \"\$(rcli $R admin XLEN dl:mail-out)\" = $((dl0 + 1)) ] && rcli $R admin XREVRANGE dl:mail-out + - COUNT 1 | grep -q 'RCPT TO: 5'"
check "…an audit event (mail send.failed)" wait_for 15 bash -c \
	"[ \"\$(pg_super $R \"SELECT count(*) FROM audit.events WHERE tenant_id = '$TA' AND type = 'mail' AND action = 'send.failed'\")\" = 1 ]"
sleep 7
check "…not retried (one attempt, nothing pending)" bash -c \
	"[ \"\$(grep -c 'refused the mail for good' $WARD_VAR/$R/log/mail-out.log)\" = $((n_fail0 + 1)) ] && [ \"\$(rcli $R admin XLEN q:mail-out)\" = 0 ]"
relay_sink

# ------------------------------------------------------------------ kill -9 mid-stream
relay_sink -w 1 # each DATA answered after a second: the stream is still going when killed
for i in 1 2 3 4 5 6; do reply $A "$TMP/a" "$T1" "Stream $i k9-$i-$RUN" >/dev/null; done
check "a stream of 6 replies: the first arrives" wait_for 20 bash -c "[ \"\$(relay_count k9-1-$RUN)\" = 1 ]"
mailout_restart "$MOCONF" KILL
check "kill -9 of ward-mail-out mid-stream, restarted: it heartbeats" \
	[ "$(rcli $R admin EXISTS hb:mail-out:mail-out-1)" = 1 ]
relay_sink
check "…every mail of the stream delivered" wait_for 60 bash -c \
	"for i in 1 2 3 4 5 6; do [ \"\$(relay_count k9-\$i-$RUN)\" -ge 1 ] || exit 1; done"
sleep 6
check "…each once" bash -c "for i in 1 2 3 4 5 6; do [ \"\$(relay_count k9-\$i-$RUN)\" = 1 ] || exit 1; done"

# ------------------------------------------------------------------ STARTTLS
sed -e 's/^starttls: .*/starttls: required/' -e "s|^tls:|tls:\n  name: relay.$R.$WARD_DOMAIN|" "$MOCONF" >"$TMP/mo-tls.yaml"
chmod 0644 "$TMP/mo-tls.yaml"
mailout_restart "$TMP/mo-tls.yaml"
n=$(grep -c 'offers no STARTTLS' "$MOLOG")
TOK6="tok6-$RUN"
check "STARTTLS required, the relay (smtp-sink) offers none: a reply → 201" [ "$(reply $A "$TMP/a" "$T1" "TLS $TOK6")" = 201 ]
check "…not sent in clear (refused before MAIL FROM)" wait_for 20 log_has 'offers no STARTTLS' "$n"
check "…nothing at the relay, the mail still queued" bash -c \
	"[ \"\$(relay_count $TOK6)\" = 0 ] && [ \"\$(rcli $R admin XLEN q:mail-out)\" -ge 1 ]"
relay_stop
mkdir -p "$TMP/maildir/tmp" "$TMP/maildir/new" "$TMP/maildir/cur" && chmod -R 0777 "$TMP/maildir"
cp "$WARD_VAR/tls/$R.pem" "$WARD_VAR/tls/$R.key" "$TMP/" && chmod 0644 "$TMP/$R.key" "$TMP/$R.pem"
spawn_as_user "$TMP/aiosmtpd.pid" "$TMP/aiosmtpd.log" /usr/bin/python3 -m aiosmtpd -n \
	-l "127.0.0.1:$RPORT" --tlscert "$TMP/$R.pem" --tlskey "$TMP/$R.key" \
	-c aiosmtpd.handlers.Mailbox "$TMP/maildir"
cp "$TMP/aiosmtpd.pid" "$WARD_VAR/$R/run/relay.pid"
check "a relay with STARTTLS (aiosmtpd, the cell's certificate, TLS required by it too)" \
	wait_for 15 bash -c "(exec 3<>/dev/tcp/127.0.0.1/$RPORT) 2>/dev/null"
check "…the queued mail is delivered over TLS, once" wait_for 40 bash -c \
	"[ \"\$(relay_count $TOK6 $TMP/maildir)\" = 1 ]"
sed -i "s|^  name: .*|  name: wrong.example|" "$TMP/mo-tls.yaml"
mailout_restart "$TMP/mo-tls.yaml"
n=$(grep -c 'STARTTLS: handshake failed' "$MOLOG")
TOK7="tok7-$RUN"
check "a relay certificate that does not name tls.name: a reply → 201" [ "$(reply $A "$TMP/a" "$T1" "Name $TOK7")" = 201 ]
check "…refused at the handshake" wait_for 20 log_has 'STARTTLS: handshake failed' "$n"
check "…not sent" [ "$(relay_count $TOK7 "$TMP/maildir")" = 0 ]
relay_sink
mailout_restart "$MOCONF"
check "back to the dev relay: that mail too is delivered, once" wait_for 40 bash -c \
	"[ \"\$(relay_count $TOK7)\" = 1 ]"

# ------------------------------------------------------------------ crash after commit
# ward-ticket killed -9 between the reply's commit and the relay (its test-only pause
# after each commit): the mail waits in the outbox, sealed, and goes out once the
# restarted ward-ticket sweeps it.
TKCONF=$WARD_VAR/$R/etc/ticket.yaml
ticket_restart() { # ticket_restart CONFIG [SIGNAL]
	local pid
	pid=$(pid_of $R ticket)
	kill -"${2:-TERM}" "$pid" 2>/dev/null
	wait_for 30 bash -c "! kill -0 $pid 2>/dev/null"
	rcli $R admin DEL hb:ticket:ticket-1 >/dev/null
	spawn_as_user "$WARD_VAR/$R/run/ticket.pid" "$WARD_VAR/$R/log/ticket.stderr" \
		"$BIN/ward-ticket" --config "$1"
	wait_for 20 bash -c "[ \"\$(rcli $R admin EXISTS hb:ticket:ticket-1)\" = 1 ]"
}
{ cat "$TKCONF"; printf 'testing:\n  sleep_after_commit_ms: 8000\n'; } >"$TMP/ticket-slow.yaml"
chmod 0644 "$TMP/ticket-slow.yaml"
ticket_restart "$TMP/ticket-slow.yaml"
TOK8="tok8-$RUN"
reply $A "$TMP/a" "$T1" "Crash $TOK8" >/dev/null 2>&1 &
RPID=$! # (only this one: the daemons this script restarted are its children too)
check "a reply committed, ward-ticket paused before relaying: the mail waits in the outbox" \
	wait_for 20 bash -c "[ \"\$(pg_super $R 'SELECT count(*) FROM ticket.mail_outbox')\" = 1 ]"
check "…sealed (neither body, address nor subject readable in the row)" bash -c \
	"! pg_super $R \"SELECT encode(payload_enc, 'escape') FROM ticket.mail_outbox\" | grep -qE '$TOK8|alice@example|Printer'"
ticket_restart "$TKCONF" KILL
wait "$RPID"
check "kill -9 of ward-ticket before the relay, restarted: the mail is delivered" wait_for 30 bash -c \
	"[ \"\$(relay_count $TOK8)\" = 1 ]"
sleep 3
check "…once, and the outbox is empty" bash -c \
	"[ \"\$(relay_count $TOK8)\" = 1 ] && [ \"\$(pg_super $R 'SELECT count(*) FROM ticket.mail_outbox')\" = 0 ]"

# ------------------------------------------------------------------ logs, denials
check "no body, subject or address of a mail in any log" bash -c \
	"! grep -rqE '$TOK1|$TOK2|$TOK4|Printer on fire|alice@example.com|carol-$RUN' $WARD_VAR/$R/log/*.log"
check "mail-out's credential cannot XADD to q:ticket (NOPERM)" bash -c \
	"rcli $R mail-out XADD q:ticket '*' e x 2>&1 | grep -q NOPERM"
check "…nor read q:auth (XRANGE, XREADGROUP: NOPERM)" bash -c \
	"rcli $R mail-out XRANGE q:auth - + COUNT 1 2>&1 | grep -q NOPERM && rcli $R mail-out XREADGROUP GROUP auth x COUNT 1 STREAMS q:auth '>' 2>&1 | grep -q NOPERM"
check "…but may XADD to q:auth (its route) and read its memo keys" bash -c \
	"rcli $R mail-out EXISTS memo:mail-out:sent:x | grep -qx 0"
check "ticket's credential cannot read q:mail-out (NOPERM)" bash -c \
	"rcli $R ticket XRANGE q:mail-out - + COUNT 1 2>&1 | grep -q NOPERM && rcli $R ticket XREADGROUP GROUP mail-out x COUNT 1 STREAMS q:mail-out '>' 2>&1 | grep -q NOPERM"
check "…but may XADD to it (its route)" bash -c "rcli $R ticket XADD q:mail-out MAXLEN 1000 '*' e x | grep -qv NOPERM"
check "mail-out's memo keys are its own: ticket cannot read them" bash -c \
	"rcli $R ticket GET memo:mail-out:sent:x 2>&1 | grep -q NOPERM"
check "a forged mail.send (not sealed with ticket's route key) is dead-lettered, not mailed" wait_for 20 bash -c \
	"rcli $R admin XREVRANGE dl:mail-out + - COUNT 1 | grep -q 'cannot open\|refused'"
check "mail-out holds no database credential" bash -c "! grep -q postgres $MOCONF && [ ! -f $WARD_VAR/$R/secrets/pg-mail-out ]"
