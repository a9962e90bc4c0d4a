#!/usr/bin/env bash
# Mail ingest (SPEC §6) with real clients (swaks, openssl s_client, Python's
# smtplib/email): new ticket, reply threading, [#REF] rules, loops ignored, 550
# for unknown and other-region recipients, 552 too big, STARTTLS, a duplicate
# Message-ID taken once, dead letters, and kill -9 of mail-ingest, ticket and
# Redis during a stream of mails: every mail a ticket, none twice.
. "$(dirname "$0")/lib.sh"

R=eu
SMTP=$(hostport $R SMTP)
SHOST=${SMTP%:*}
SPORT=${SMTP##*:}
SLUG=mail-e2e
RUN=$$
"$BIN/wardctl" tenant create --slug $SLUG --region $R --name "Mail E2E" --admin-email boss@mail-e2e.example >/dev/null 2>&1
"$BIN/wardctl" tenant create --slug mail-us-e2e --region us --name "Mail US" --admin-email boss@mail-us.example >/dev/null 2>&1
TID=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$SLUG'")
TO=support@$SLUG.$R.$WARD_DOMAIN

# send FROM MSGID SUBJECT [swaks options...]: one mail to the tenant.
send() {
	local from=$1 mid=$2 subj=$3; shift 3
	swaks --server "$SHOST" --port "$SPORT" --to "$TO" --from "$from" \
		--header "Message-Id: <$mid>" --header "Subject: $subj" --timeout 20 "$@"
}
tickets() { pg_super $R "SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'"; }
msgs_of() { pg_super $R "SELECT count(*) FROM ticket.messages m JOIN ticket.mail_ids i ON i.ticket_id = m.ticket_id WHERE i.tenant_id = '$TID' AND i.message_id = (SELECT message_id FROM ticket.mail_ids WHERE tenant_id = '$TID' ORDER BY created_at LIMIT 0) "; }
ref_of_mid() { # the ticket number a Message-ID landed in (via the ticket's own messages)
	pg_super $R "SELECT t.number FROM ticket.tickets t WHERE t.tenant_id = '$TID' ORDER BY t.number DESC LIMIT 1"
}
messages_on() { pg_super $R "SELECT count(*) FROM ticket.messages m JOIN ticket.tickets t ON t.id = m.ticket_id WHERE t.tenant_id = '$TID' AND t.number = $1"; }
spool_empty() { [ "$(mail_spool_pending "$WARD_VAR/$R/spool/mail-ingest")" = 0 ]; }

# ------------------------------------------------------------------ new ticket, reply, duplicate
n0=$(tickets)
check "a mail to support@<slug>.<region> is accepted (250 after DATA)" \
	send alice@example.com "first-$RUN@example.com" "Printer on fire" --body "It burns."
check "…and becomes a new ticket" wait_for 15 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" = $((n0 + 1)) ]"
first=$(ref_of_mid)
check "the subject and the requester email are stored encrypted" bash -c \
	"! pg_super $R \"SELECT encode(subject_enc, 'escape') || encode(requester_email_enc, 'escape') FROM ticket.tickets\" | grep -qi 'printer on fire\|alice@example'"
check "the requester email has a blind index" bash -c \
	"[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID' AND number = $first AND requester_email_bidx ~ '^[0-9a-f]{64}\$'\")\" = 1 ]"
check "the ticket was created by the mail-ingest service" bash -c \
	"[ \"\$(pg_super $R \"SELECT created_by FROM ticket.tickets WHERE tenant_id = '$TID' AND number = $first\")\" = service:mail-ingest ]"
check "an audit event records the ingestion (ticket ref, Message-ID, sender)" wait_for 15 bash -c \
	"pg_super $R \"SELECT count(*) FROM ticket.outbox WHERE tenant_id = '$TID' AND action = 'mail.ingest'\" | grep -q '^[1-9]' || pg_super $R \"SELECT count(*) FROM audit.events WHERE tenant_id = '$TID' AND action = 'mail.ingest'\" | grep -q '^[1-9]'"
check "the mail body never reaches a log" bash -c "! grep -rq 'It burns' $WARD_VAR/$R/log/"

check "the same Message-ID again is accepted…" send alice@example.com "first-$RUN@example.com" "Printer on fire" --body "It burns."
sleep 2
check "…and changes nothing (duplicate Message-ID taken once)" bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" = $((n0 + 1)) ] && [ \"\$(pg_super $R \"SELECT count(*) FROM ticket.messages m JOIN ticket.tickets t ON t.id = m.ticket_id WHERE t.tenant_id = '$TID' AND t.number = $first\")\" = 1 ]"

# One mail whose RCPTs reach two tenants: one ticket in each, and the same mail sent
# again (same Message-ID) adds nothing to either (idempotent per Message-ID + tenant).
# Two tenants of their own, so that the counts of mail-e2e below stay as they are.
"$BIN/wardctl" tenant create --slug mail-two-a --region $R --name "Mail Two A" --admin-email boss@mail-two-a.example >/dev/null 2>&1
"$BIN/wardctl" tenant create --slug mail-two-b --region $R --name "Mail Two B" --admin-email boss@mail-two-b.example >/dev/null 2>&1
TWA=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = 'mail-two-a'")
TWB=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = 'mail-two-b'")
two_counts() { # "<tickets of A> <tickets of B> <messages of A> <messages of B>"
	pg_super $R "SELECT (SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TWA') || ' ' || (SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TWB') || ' ' || (SELECT count(*) FROM ticket.messages WHERE tenant_id = '$TWA') || ' ' || (SELECT count(*) FROM ticket.messages WHERE tenant_id = '$TWB')"
}
two() { swaks --server "$SHOST" --port "$SPORT" --to "support@mail-two-a.$R.$WARD_DOMAIN,support@mail-two-b.$R.$WARD_DOMAIN" \
	--from erin@example.com --header "Message-Id: <two-$RUN@example.com>" --header "Subject: Two helpdesks" --timeout 20 --body "both"; }
check "two new tenants have no ticket yet" bash -c "[ -n '$TWA' ] && [ -n '$TWB' ] && [ '$(two_counts)' = '0 0 0 0' ]"
check "one mail to two tenants (two RCPTs) is accepted" two
check "…one ticket (one message) in each tenant" wait_for 15 bash -c "[ \"\$(pg_super $R \"SELECT (SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TWA') || ' ' || (SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TWB')\")\" = '1 1' ]"
check "the same mail to both again is accepted" two
sleep 3
check "…and is taken once per tenant (still one ticket, one message in each)" [ "$(two_counts)" = "1 1 1 1" ]

check "a reply with In-Reply-To of the first mail is accepted" \
	send alice@example.com "reply1-$RUN@example.com" "Re: Printer on fire" \
	--header "In-Reply-To: <first-$RUN@example.com>" --body "Now it smokes."
check "…and threads onto the same ticket" wait_for 15 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.messages m JOIN ticket.tickets t ON t.id = m.ticket_id WHERE t.tenant_id = '$TID' AND t.number = $first\")\" = 2 ]"
check "…without a new ticket" [ "$(tickets)" = $((n0 + 1)) ]

REF="$(echo $SLUG | tr a-z A-Z)-$first"
check "[#$REF] from the requester is accepted" send alice@example.com "ref1-$RUN@example.com" "About [#$REF]" --body "Any news?"
check "…and threads by the ref" wait_for 15 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.messages m JOIN ticket.tickets t ON t.id = m.ticket_id WHERE t.tenant_id = '$TID' AND t.number = $first\")\" = 3 ]"
check "[#$REF] from a stranger is accepted" send mallory@evil.example "ref2-$RUN@example.com" "Re: [#$REF] inject" --body "Click here"
check "…but opens a new ticket (no injection into someone else's ticket)" wait_for 15 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" = $((n0 + 2)) ]"
check "…and the requester's ticket still has 3 messages" [ "$(messages_on $first)" = 3 ]
check "In-Reply-To of the requester's mail from a stranger: a new ticket too" \
	send mallory@evil.example "irt-$RUN@example.com" "Re: x" --header "In-Reply-To: <first-$RUN@example.com>" --body "hijack"
check "…(not threaded)" wait_for 15 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" = $((n0 + 3)) ]"
nc0=$(tickets)
send bob@example.com "cc1-$RUN@example.com" "Cc test" --header "Cc: carol@example.com" --body hi >/dev/null 2>&1
check "a mail from bob with carol in Cc opens a ticket" wait_for 15 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" = $((nc0 + 1)) ]"
ccnum=$(pg_super $R "SELECT max(number) FROM ticket.tickets WHERE tenant_id = '$TID'")
check "carol (a CC) may reply with [#REF]" send carol@example.com "cc2-$RUN@example.com" "Re: [#$SLUG-$ccnum] me too" --body "cc reply"
check "…and it threads (no new ticket, 2 messages)" wait_for 15 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.messages m JOIN ticket.tickets t ON t.id = m.ticket_id WHERE t.tenant_id = '$TID' AND t.number = $ccnum\")\" = 2 ]"
check "…without a new ticket" [ "$(tickets)" = $((nc0 + 1)) ]
# References only (no In-Reply-To, no [#REF] in the subject), naming the requester's
# first mail among others: a reply on that ticket.
nr0=$(tickets); mr0=$(messages_on $first)
check "a mail from the requester with References only (no In-Reply-To, no [#REF])" \
	send alice@example.com "refs-$RUN@example.com" "Printer again" \
	--header "References: <unknown-$RUN@example.net> <first-$RUN@example.com>" --body "By references."
check "…threads onto the ticket of the referenced mail" wait_for 15 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.messages m JOIN ticket.tickets t ON t.id = m.ticket_id WHERE t.tenant_id = '$TID' AND t.number = $first\")\" = $((mr0 + 1)) ]"
check "…without a new ticket" [ "$(tickets)" = "$nr0" ]

# ------------------------------------------------------------------ loops and noise
n1=$(tickets)
check "an auto-reply (Auto-Submitted) is accepted" send alice@example.com "auto-$RUN@example.com" "Out of office" --header "Auto-Submitted: auto-replied" --body "away"
check "a Precedence: bulk mail is accepted" send alice@example.com "bulk-$RUN@example.com" "Newsletter" --header "Precedence: bulk" --body "news"
check "an X-Autoreply mail is accepted" send alice@example.com "xa-$RUN@example.com" "Auto" --header "X-Autoreply: yes" --body "auto"
check "a bounce (null sender) is accepted" send "<>" "bounce-$RUN@example.com" "Undeliverable" --body "bounce"
check "a MAILER-DAEMON mail is accepted" send MAILER-DAEMON@mx.example.com "md-$RUN@example.com" "Failure" --body "failed"
dsn=$(mktemp)
printf 'From: postmaster@mx.example.com\r\nTo: %s\r\nSubject: Delivery report\r\nMessage-Id: <dsn-%s@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=ZZ\r\n\r\n--ZZ\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--ZZ\r\nContent-Type: message/delivery-status\r\n\r\nStatus: 5.1.1\r\n--ZZ--\r\n' "$TO" "$RUN" >"$dsn"
check "a delivery report (multipart/report) is accepted" swaks --server "$SHOST" --port "$SPORT" --to "$TO" --from postmaster@mx.example.com --data "@$dsn"
rm -f "$dsn"
sleep 2
check "…none of them created a ticket or a reply (no mail loops)" [ "$(tickets)" = "$n1" ]
check "…and they were counted in the log" bash -c "[ \$(grep -c 'never a ticket' $WARD_VAR/$R/log/mail-ingest.log) -ge 6 ]"

# ------------------------------------------------------------------ recipients, sizes, syntax
# raw TEXT: send TEXT (pipelined, as is) to the SMTP port, print every reply.
raw() {
	python3 - "$SHOST" "$SPORT" "$1" <<'PY'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
# Wait for the greeting before talking: a client that speaks first is refused
# (early talker), which is not what these checks are about.
out = b""
while b"\r\n" not in out:
    b = s.recv(65536)
    if not b:
        break
    out += b
s.sendall(sys.argv[3].encode().decode('unicode_escape').encode('latin-1'))
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
except OSError:
    pass
sys.stdout.write(out.decode('latin-1'))
PY
}
export -f raw; export SHOST SPORT
rcpt_code() { # rcpt_code ADDRESS → the reply code to RCPT
	swaks --server "$SHOST" --port "$SPORT" --to "$1" --from a@example.com --quit-after RCPT 2>&1 | sed -n 's/^<\*\* *\([0-9][0-9][0-9]\).*/\1/p' | tail -1
}
check "unknown tenant → 550 at RCPT" [ "$(rcpt_code support@no-such-tenant.$R.$WARD_DOMAIN)" = 550 ]
check "unknown local part → 550" [ "$(rcpt_code nobody@$SLUG.$R.$WARD_DOMAIN)" = 550 ]
check "a tenant of another region (us) → 550 at the eu door" [ "$(rcpt_code support@mail-us-e2e.$R.$WARD_DOMAIN)" = 550 ]
check "another region's domain → 550" [ "$(rcpt_code support@mail-us-e2e.us.$WARD_DOMAIN)" = 550 ]
check "550 carries the enhanced code 5.1.1" bash -c \
	"swaks --server $SHOST --port $SPORT --to support@nope-x.$R.$WARD_DOMAIN --from a@example.com --quit-after RCPT 2>&1 | grep -q '550 5.1.1'"
big=$(mktemp)
head -c 1100000 /dev/zero | tr '\0' 'a' | fold -w 76 >"$big"
check "a mail over the size limit → 552 5.3.4" bash -c \
	"swaks --server $SHOST --port $SPORT --to $TO --from a@example.com --body @$big 2>&1 | grep -q '552 5.3.4'"
check "SIZE= over the limit → 552 at MAIL" bash -c \
	"raw 'EHLO x.example\\r\\nMAIL FROM:<a@example.com> SIZE=99999999\\r\\nQUIT\\r\\n' | grep -q '^552 5.3.4'"
rm -f "$big"
check "EHLO advertises SIZE, 8BITMIME, PIPELINING, STARTTLS" bash -c \
	"raw 'EHLO x.example\\r\\nQUIT\\r\\n' | tr -d '\r' | grep -c '^250-\(SIZE\|8BITMIME\|PIPELINING\|STARTTLS\)' | grep -q 4"
check "MAIL before EHLO → 503 5.5.1" bash -c \
	"raw 'MAIL FROM:<a@example.com>\\r\\nQUIT\\r\\n' | grep -q '^503 5.5.1'"
check "a bad MAIL FROM syntax → 501" bash -c \
	"raw 'EHLO x.example\\r\\nMAIL FROM: a@example.com\\r\\nQUIT\\r\\n' | grep -q '^501 '"
check "an over-long command line → 500 5.5.2" bash -c \
	"raw \"EHLO x.example\\\\r\\\\nNOOP \$(printf 'a%.0s' \$(seq 600))\\\\r\\\\nQUIT\\\\r\\\\n\" | grep -q '^500 5.5.2'"
check "pipelined commands are answered in order (PIPELINING)" bash -c \
	"raw 'EHLO x.example\\r\\nMAIL FROM:<a@example.com>\\r\\nRCPT TO:<$TO>\\r\\nRSET\\r\\nNOOP\\r\\nQUIT\\r\\n' | tr -d '\r' | grep -E '^[0-9]{3} ' | cut -c1-3 | tr '\n' ' ' | grep -q '^220 250 250 250 250 250 221 '"

# ------------------------------------------------------------------ STARTTLS
check "STARTTLS with the cell certificate (verified against the dev CA)" bash -c \
	"echo QUIT | timeout 10 openssl s_client -starttls smtp -connect $SMTP -CAfile $WARD_CA -verify_return_error -servername mail.$R.$WARD_DOMAIN 2>&1 | grep -q 'Verify return code: 0'"
refuse "STARTTLS refuses TLS 1.1" bash -c \
	"echo QUIT | timeout 10 openssl s_client -starttls smtp -connect $SMTP -tls1_1 2>&1 | grep -q 'New, TLSv1.1'"
n1=$(tickets)
check "a mail over STARTTLS becomes a ticket" send alice@example.com "tls-$RUN@example.com" "Over TLS" --tls --body "secure"
check "…created" wait_for 15 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" = $((n1 + 1)) ]"

# ------------------------------------------------------------------ a mail built by another library
a0=$(pg_super $R "SELECT count(*) FROM ticket.attachments WHERE tenant_id = '$TID'")
check "a MIME mail built by Python's email package (ISO-8859-1, attachment) over STARTTLS" python3 - "$SHOST" "$SPORT" "$TO" "$RUN" <<'PY'
import smtplib, ssl, sys
from email.message import EmailMessage
host, port, to, run = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
m = EmailMessage()
m["From"] = "Andr\u00e9 <andre@example.fr>"
m["To"] = to
m["Subject"] = "Caf\u00e9 cr\u00e8me \u00e0 la carte"
m["Message-ID"] = "<py-%s@example.fr>" % run
m.set_content("Bonjour, voil\u00e0 le fichier.\n", charset="iso-8859-1")
m.add_alternative("<p>Bonjour <b>HTML</b></p>", subtype="html")
m.add_attachment(b"\x00\x01binary\xff", maintype="application", subtype="octet-stream", filename="r\u00e9sum\u00e9.bin")
s = smtplib.SMTP(host, port, timeout=20)
s.starttls(context=ssl._create_unverified_context())
s.send_message(m)
s.quit()
PY
check "…became a ticket with its attachment" wait_for 15 bash -c \
	"[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.attachments WHERE tenant_id = '$TID'\")\" = $((a0 + 1)) ]"

# ------------------------------------------------------------------ kill -9 during a stream
stream() { # stream TAG N: N mails with distinct Message-IDs, sequentially, retried on failure
	local i tries
	for i in $(seq "$2"); do
		for tries in $(seq 30); do
			send s$i@example.com "$1-$i-$RUN@example.com" "stream $1 $i" --body "n $i" >/dev/null 2>&1 && break
			sleep 0.5
		done
	done
}
for victim in mail-ingest ticket redis; do
	n=$(tickets)
	N=25
	stream "$victim" $N &
	sp=$!
	sleep 1.5
	if [ $victim = redis ]; then
		kill -9 "$(cat "$WARD_VAR/$R/redis/redis.pid")"
		sleep 1
		"$TOP/ops/devstack" up >/dev/null 2>&1
	else
		kill -9 "$(pid_of $R $victim)"
		sleep 1
		spawn_as_user "$WARD_VAR/$R/run/$victim.pid" "$WARD_VAR/$R/log/$victim.stderr" \
			"$BIN/ward-$victim" --config "$WARD_VAR/$R/etc/$victim.yaml"
	fi
	wait "$sp"
	check "kill -9 of $victim during $N mails: every accepted mail becomes a ticket" \
		wait_for 90 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" -ge $((n + N)) ]"
	check "…none twice (exactly $N new tickets)" bash -c "sleep 3; [ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" = $((n + N)) ]"
	check "…and the spool is empty" wait_for 30 spool_empty
done

# ------------------------------------------------------------------ dead letters
dl=$WARD_VAR/$R/spool/mail-ingest
check "wardctl mail dead-letters lists nothing yet" bash -c "[ -z \"\$('$BIN/wardctl' mail dead-letters --region $R)\" ]"
refuse "wardctl mail dead-letters without --region fails" "$BIN/wardctl" mail dead-letters
refuse "wardctl mail --replay of a bad id fails" "$BIN/wardctl" mail dead-letters --region $R --replay ../../etc
# A spool entry ward-ticket can never take (a payload that is not a mail): after
# spool.max_attempts refusals it is a dead letter, listed and replayable.
bad=0000000000000001-deadbeef0001
printf 'WARDSPOOL1\n%s\nnot a protobuf' "$TID" >"$dl/tmp/$bad"
chown "$WUSER:" "$dl/tmp/$bad" 2>/dev/null || true
mv "$dl/tmp/$bad" "$dl/queue/$bad"
# One bad message never blocks the others: once it has been refused (and is retried,
# backing off for half a minute more before it is dead), good mails go through.
check "the bad mail is refused and kept for a retry (state/<id> counts a refusal)" wait_for 20 bash -c \
	"[ -f '$dl/queue/$bad' ] && [ -f '$dl/state/$bad' ] && [ \"\$(cut -d' ' -f1 '$dl/state/$bad')\" -ge 1 ]"
ng=$(tickets)
gp=()
for i in 1 2 3 4 5; do send good$i@example.com "good-$i-$RUN@example.com" "good $i" --body "g $i" >/dev/null 2>&1 & gp+=($!); done
wait "${gp[@]}"
check "5 good mails sent while the bad one is retried become 5 tickets…" wait_for 20 bash -c \
	"[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" -ge $((ng + 5)) ]"
check "…before the bad one is dead-lettered (it is still being retried)" bash -c \
	"[ ! -f '$dl/dead/$bad' ] && [ -f '$dl/queue/$bad' ]"
check "a mail ward-ticket keeps refusing becomes a dead letter (never lost)" wait_for 60 test -f "$dl/dead/$bad"
check "wardctl mail dead-letters lists it with its error and tenant" bash -c \
	"'$BIN/wardctl' mail dead-letters --region $R | jq -e 'select(.id == \"$bad\") | (.tenant == \"$TID\") and (.error | test(\"answered 400\")) and .refusals >= 5'"
check "…while q:ticket holds none of its refused requests, nor the mails before (XLEN 0: handled entries are deleted)" \
	wait_for 10 bash -c "[ \"\$(rcli $R admin XLEN q:ticket)\" = 0 ]"
check "wardctl mail dead-letters --replay puts it back in the queue" bash -c \
	"'$BIN/wardctl' mail dead-letters --region $R --replay $bad | jq -e '.replayed == \"queued\"' && [ ! -f '$dl/dead/$bad.err' ]"
check "…where mail-ingest picks it up again (and dead-letters it again)" wait_for 60 test -f "$dl/dead/$bad"
rm -f "$dl/dead/$bad" "$dl/dead/$bad.err"

# ------------------------------------------------------------------ kill -9 with mails held after 250
# ward-ticket is stopped (SIGSTOP) so that accepted mails (250 given) wait in the
# spool or in q:ticket; then the victim is killed, restarted, ward-ticket resumed:
# every one of them becomes exactly one ticket.
held() { mail_spool_pending "$WARD_VAR/$R/spool/mail-ingest"; }
export -f held mail_spool_pending; export R
for victim in mail-ingest ticket redis; do
	n=$(tickets)
	N=10
	tpid=$(pid_of $R ticket)
	kill -STOP "$tpid"
	ok250=0
	for i in $(seq $N); do
		send h$i@example.com "held-$victim-$i-$RUN@example.com" "held $victim $i" --body "h $i" >/dev/null 2>&1 && ok250=$((ok250 + 1))
	done
	check "ward-ticket stopped: $N mails accepted with 250 ($victim test)" [ "$ok250" = $N ]
	check "…and held in the spool (not yet tickets)" bash -c "[ \$(held) -ge $N ] && [ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" = $n ]"
	if [ $victim = redis ]; then
		kill -9 "$(cat "$WARD_VAR/$R/redis/redis.pid")"
		sleep 1
		"$TOP/ops/devstack" up >/dev/null 2>&1
		kill -CONT "$tpid"
	elif [ $victim = ticket ]; then
		kill -9 "$tpid"
		kill -CONT "$tpid" 2>/dev/null
		sleep 1
		spawn_as_user "$WARD_VAR/$R/run/ticket.pid" "$WARD_VAR/$R/log/ticket.stderr" \
			"$BIN/ward-ticket" --config "$WARD_VAR/$R/etc/ticket.yaml"
	else
		kill -9 "$(pid_of $R mail-ingest)"
		sleep 1
		check "…still in the spool after kill -9 of mail-ingest" bash -c "[ \$(held) -ge $N ]"
		spawn_as_user "$WARD_VAR/$R/run/mail-ingest.pid" "$WARD_VAR/$R/log/mail-ingest.stderr" \
			"$BIN/ward-mail-ingest" --config "$WARD_VAR/$R/etc/mail-ingest.yaml"
		kill -CONT "$tpid"
	fi
	check "kill -9 of $victim with $N accepted mails held: every one becomes a ticket" \
		wait_for 120 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" -ge $((n + N)) ]"
	check "…exactly once ($N new tickets)" bash -c "sleep 3; [ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" = $((n + N)) ]"
	check "…and the spool is empty" wait_for 60 spool_empty
done

# ------------------------------------------------------------------ the spool log after a crash
# A kill -9 of mail-ingest while it appends leaves at worst a damaged tail on its
# newest log segment (records never acknowledged): the next start delivers every
# record before it, skips the tail and writes to a new segment.
sp=$WARD_VAR/$R/spool/mail-ingest
newest_seg() { ls "$sp/log" | grep -E '^[0-9a-f]{16}$' | sort | tail -1; }
n=$(tickets)
tpid=$(pid_of $R ticket)
kill -STOP "$tpid"
ok250=0
for i in 1 2 3; do
	send t$i@example.com "torn-$i-$RUN@example.com" "torn $i" --body "t $i" >/dev/null 2>&1 && ok250=$((ok250 + 1))
done
kill -9 "$(pid_of $R mail-ingest)"
seg=$(newest_seg)
# a record whose header made it and whose payload did not
printf 'WSL1\000\020\000\000\000\000\000\000torn' >>"$sp/log/$seg"
check "3 mails accepted (250), kill -9 of mail-ingest, a torn record at the end of its log" \
	bash -c "[ $ok250 = 3 ] && [ \$(held) = 3 ]"
spawn_as_user "$WARD_VAR/$R/run/mail-ingest.pid" "$WARD_VAR/$R/log/mail-ingest.stderr" \
	"$BIN/ward-mail-ingest" --config "$WARD_VAR/$R/etc/mail-ingest.yaml"
kill -CONT "$tpid"
check "…every accepted mail becomes a ticket" wait_for 60 bash -c "[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" -ge $((n + 3)) ]"
check "…exactly once" bash -c "sleep 2; [ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" = $((n + 3)) ]"
check "…the start reported the torn tail" grep -q '"torn_tail":1' "$WARD_VAR/$R/log/mail-ingest.log"
check "…the next mail is accepted" send t4@example.com "torn-4-$RUN@example.com" "torn 4" --body t4
check "…into a new segment of the log" bash -c "[ \"\$(ls '$sp/log' | grep -E '^[0-9a-f]{16}\$' | sort | tail -1)\" != $seg ]"
check "…and the spool is empty" wait_for 60 spool_empty

# A log record ward-ticket can never take (a payload that is not a mail), in a
# segment written while mail-ingest is stopped: after spool.max_attempts
# refusals it becomes the file dead/<id>, is marked done in the log (the segment
# is removed), and a restart does not bring it back.
kill "$(pid_of $R mail-ingest)"
wait_for 20 bash -c "! kill -0 $(pid_of $R mail-ingest) 2>/dev/null"
bad=0000000000000002-deadbeef0002
lseg=$(printf '%016x' $((16#$(newest_seg) + 1)))
python3 - "$sp/log/$lseg" "$bad" "$TID" <<'PY'
import struct, sys, zlib
path, rid, tid = sys.argv[1:4]
payload = b"WARDSPOOL1\n" + tid.encode() + b"\nnot a protobuf"
body = rid.encode().ljust(64, b"\0") + payload
open(path, "wb").write(b"WSL1" + struct.pack("<II", len(payload), zlib.crc32(body)) + body)
PY
chown "$WUSER:" "$sp/log/$lseg" 2>/dev/null || true
chmod 600 "$sp/log/$lseg"
check "a record written into the spool log is pending" bash -c "[ \$(held) = 1 ]"
spawn_as_user "$WARD_VAR/$R/run/mail-ingest.pid" "$WARD_VAR/$R/log/mail-ingest.stderr" \
	"$BIN/ward-mail-ingest" --config "$WARD_VAR/$R/etc/mail-ingest.yaml"
check "…refused by ward-ticket, it becomes a dead letter (never lost)" wait_for 120 test -f "$sp/dead/$bad"
check "…with its payload as it was spooled" bash -c "grep -q 'not a protobuf' '$sp/dead/$bad'"
check "…marked done in the log: nothing pending, its segment removed" wait_for 20 bash -c "[ \$(held) = 0 ] && [ ! -e '$sp/log/$lseg' ]"
check "…listed by wardctl mail dead-letters" bash -c \
	"'$BIN/wardctl' mail dead-letters --region $R | jq -e 'select(.id == \"$bad\") | .refusals >= 5'"
kill "$(pid_of $R mail-ingest)"
wait_for 20 bash -c "! kill -0 $(pid_of $R mail-ingest) 2>/dev/null"
rm -f "$sp/dead/$bad.err"
spawn_as_user "$WARD_VAR/$R/run/mail-ingest.pid" "$WARD_VAR/$R/log/mail-ingest.stderr" \
	"$BIN/ward-mail-ingest" --config "$WARD_VAR/$R/etc/mail-ingest.yaml"
check "…and a restart does not bring it back" bash -c "sleep 3; [ \$(held) = 0 ] && [ ! -f '$sp/dead/$bad.err' ]"
rm -f "$sp/dead/$bad" "$sp/dead/$bad.err"

# ------------------------------------------------------------------ SMTP limits over a raw socket
# smtp_py MODE: a raw SMTP client for limits swaks cannot reach; prints every reply.
smtp_py() {
	python3 - "$SHOST" "$SPORT" "$TO" "$@" <<'PY'
import socket, sys, time
host, port, to, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def conn():
    s = socket.create_connection((host, port), timeout=15)
    g = b""
    while b"\r\n" not in g:
        b = s.recv(65536)
        if not b:
            break
        g += b
    return s, g
def drain(s, out=b""):
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except OSError:
        pass
    return out
def mail(body):
    return ("EHLO x.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<%s>\r\nDATA\r\n" % to).encode() \
        + body + b"\r\n.\r\nQUIT\r\n"
if mode == "rcpts":  # one more RCPT than limits.recipients (20)
    s, out = conn()
    s.sendall(("EHLO x.example\r\nMAIL FROM:<a@example.com>\r\n" + "RCPT TO:<%s>\r\n" % to * 21 + "QUIT\r\n").encode())
elif mode == "longline":  # a DATA line of 1200 bytes (the limit is 998 + CRLF)
    s, out = conn()
    s.sendall(mail(b"Subject: long line\r\n\r\n" + b"a" * 1200))
elif mode == "headerbytes":  # a header section over limits.header_bytes (64 KiB)
    s, out = conn()
    s.sendall(mail(b"Subject: big headers\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"h" * 900) for i in range(80)) + b"\r\nbody"))
elif mode == "headercount":  # more header fields than limits.headers (200)
    s, out = conn()
    s.sendall(mail(b"Subject: many headers\r\n" + b"".join(b"X-H-%d: v\r\n" % i for i in range(250)) + b"\r\nbody"))
elif mode == "text":  # 300 KB of text: over limits.body_bytes (256 KiB), under the size limit
    s, out = conn()
    s.sendall(mail(b"Subject: long text\r\n\r\n" + b"".join(b"line %06d %s\r\n" % (i, b"t" * 60) for i in range(4500))))
elif mode == "idle":  # say nothing after EHLO: the command timeout closes the session
    s, out = conn()
    s.sendall(b"EHLO x.example\r\n")
    t0 = time.time()
    out = drain(s, out)
    out += b"elapsed %d\r\n" % int(time.time() - t0)
elif mode == "conns":  # N+1 connections from one source: the last is refused
    n = int(sys.argv[5])
    held = [conn() for _ in range(n)]
    s, out = conn()
    out = b"".join(g for _, g in held) + out
    for h, _ in held:
        h.close()
sys.stdout.write(drain(s, out).decode("latin-1"))
PY
}
export -f smtp_py; export TO
check "the 21st RCPT of a mail → 452 4.5.3 (limits.recipients 20), the first 20 taken" bash -c \
	"out=\$(smtp_py rcpts | tr -d '\r'); [ \$(grep -c '^250 2.1.5' <<<\"\$out\") = 20 ] && [ \$(grep -c '^452 4.5.3' <<<\"\$out\") = 1 ]"
n=$(tickets)
check "a DATA line over 1000 bytes → 554 5.6.0 (refused, not truncated)" bash -c "smtp_py longline | grep -q '^554 5.6.0 Message has a line over'"
check "a header section over 64 KiB → 552 5.3.4" bash -c "smtp_py headerbytes | grep -q '^552 5.3.4 Header section too large'"
check "more than 200 header fields → 552 5.3.4" bash -c "smtp_py headercount | grep -q '^552 5.3.4 Too many header fields'"
check "a text over limits.body_bytes → 552 5.3.4 Message text too long" bash -c "smtp_py text | grep -q '^552 5.3.4 Message text too long'"
check "…none of the refused mails became a ticket" bash -c "sleep 2; [ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" = $n ]"
check "20 connections from one source are served, the 21st → 421 4.7.0" bash -c \
	"out=\$(smtp_py conns 20 | tr -d '\r'); [ \$(grep -c '^220 ' <<<\"\$out\") = 20 ] && grep -q '^421 4.7.0 .*Too many connections' <<<\"\$out\""

# ------------------------------------------------------------------ small limits: timeout, dead letter replayed
# mail-ingest restarted with a 2 s command timeout, and a delivery that gives up
# after 2 unanswered tries of 1 s: with ward-ticket stopped, a mail becomes a dead
# letter; the cause removed (ward-ticket resumed), its replay becomes the ticket.
etc=$WARD_VAR/$R/etc
mpid=$(pid_of $R mail-ingest)
kill -TERM "$mpid"
wait_for 20 bash -c "! kill -0 $mpid 2>/dev/null"
cp "$etc/mail-ingest.yaml" "$etc/mail-ingest.yaml.orig"
sed -i -e 's/^spool:$/spool:\n  max_transport_failures: 2/' \
	-e 's/^  route_keys_file: \(.*\)$/  route_keys_file: \1\n  deliver_timeout_ms: 1000/' "$etc/mail-ingest.yaml"
printf 'limits:\n  command_timeout_s: 2\n' >>"$etc/mail-ingest.yaml"
chown "$WUSER:" "$etc/mail-ingest.yaml" 2>/dev/null || true
spawn_as_user "$WARD_VAR/$R/run/mail-ingest.pid" "$WARD_VAR/$R/log/mail-ingest.stderr" \
	"$BIN/ward-mail-ingest" --config "$etc/mail-ingest.yaml"
check "mail-ingest restarted with small limits answers" wait_for 20 bash -c "raw 'QUIT\\r\\n' | grep -q '^220 '"
check "an idle session after EHLO → 421 4.4.2 after the command timeout (2 s)" bash -c \
	"out=\$(smtp_py idle | tr -d '\r'); grep -q '^421 4.4.2 .*Timeout' <<<\"\$out\" && e=\$(sed -n 's/^elapsed //p' <<<\"\$out\") && [ \"\$e\" -ge 1 ] && [ \"\$e\" -le 5 ]"
n=$(tickets)
# dead letters of this tenant listed before (ids), so that only the new one counts
"$BIN/wardctl" mail dead-letters --region $R | jq -r "select(.tenant == \"$TID\") | .id" >"$WARD_VAR/dl-before.$RUN"
new_dead() { "$BIN/wardctl" mail dead-letters --region $R | jq -r "select(.tenant == \"$TID\") | .id" | grep -vxF -f "$WARD_VAR/dl-before.$RUN" | head -1; }
export -f new_dead; export RUN TID
tpid=$(pid_of $R ticket)
kill -STOP "$tpid"
check "ward-ticket stopped: a mail is accepted (250)" send zed@example.com "dead-$RUN@example.com" "Dead then replayed" --body "replay me"
check "…unanswered twice, it becomes a dead letter" wait_for 30 bash -c '[ -n "$(new_dead)" ]'
DID=$(new_dead)
check "…listed with the recipient's tenant" bash -c \
	"'$BIN/wardctl' mail dead-letters --region $R | jq -e 'select(.id == \"$DID\") | .tenant == \"$TID\"'"
kill -CONT "$tpid"
check "ward-ticket resumed (the cause removed): still no ticket before the replay" bash -c \
	"sleep 4; [ -n '$DID' ] && [ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" = $n ]"
check "wardctl mail dead-letters --replay queues it" bash -c \
	"'$BIN/wardctl' mail dead-letters --region $R --replay '$DID' | jq -e '.replayed == \"queued\"'"
check "…and the replayed mail becomes its ticket, once" wait_for 30 bash -c \
	"[ \"\$(pg_super $R \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'\")\" = $((n + 1)) ]"
check "…no dead letter left for it" [ ! -f "$WARD_VAR/$R/spool/mail-ingest/dead/$DID" ]
check "…and the spool is empty" wait_for 30 spool_empty
mpid=$(pid_of $R mail-ingest)
kill -TERM "$mpid"
wait_for 20 bash -c "! kill -0 $mpid 2>/dev/null"
mv "$etc/mail-ingest.yaml.orig" "$etc/mail-ingest.yaml"
rm -f "$WARD_VAR/dl-before.$RUN"
check "mail-ingest back with its own limits" "$TOP/ops/devstack" up
