#!/usr/bin/env bash
# ward-ticket through q:ticket (bin/tests/test_ticket_queue call, as the gateway
# would send it): tickets, messages, attachments, departments; isolation between
# tenants and customers (404, never 403), internal notes hidden from customers,
# the status workflow, input limits (422 naming the field), Idempotency-Key,
# cursor pagination under concurrent inserts, encryption at rest (pg_dump finds
# no marker), audit events, and exactly-once creation across a kill -9 between
# commit and ack. Over HTTPS once the gateway routes these rows (not yet here).
. "$(dirname "$0")/lib.sh"
r=eu
DRV=$BIN/tests/test_ticket_queue
TMP=$(mktemp -d /tmp/ward-ticket-e2e.XXXXXX)
chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT

# call TENANT KIND:ID:ROLE METHOD JSON [driver options]: one request, its JSON reply on stdout.
call() {
	local t=$1 who=$2 m=$3 j=$4; shift 4
	local kind=${who%%:*} rest=${who#*:}
	as_user env WARD_VAR="$WARD_VAR" WARD_EU_REDIS="$WARD_EU_REDIS" "$DRV" call --region $r \
		--tenant "$t" --kind "$kind" --id "${rest%%:*}" --role "${rest#*:}" "$@" "$m" "$j"
}
# jget FIELD: the first string value of FIELD in the JSON on stdin.
jget() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" | head -1; }
status_of() { sed -n 's/.*"status":\([0-9]*\)[,}].*/\1/p' | tail -1; }
count_of() { grep -o "\"$1\"" | wc -l; }
# expect NAME STATUS CALL-ARGS...: the call answers STATUS.
expect() {
	local n=$1 want=$2 out st; shift 2
	out=$(call "$@" 2>&1)
	# The top-level status is the last key (sorted output); reply bodies hold "status" too.
	st=$(echo "$out" | grep -o '"status":[0-9-]*}$' | grep -o '[0-9-]*' | head -1)
	if [ "$st" = "$want" ]; then ok "$n"; else not_ok "$n (status ${st:-none}, want $want)"; echo "#   $out" | cut -c1-400; fi
	LAST=$out
}
uuid() { cat /proc/sys/kernel/random/uuid; }

sfx=$RANDOM
"$BIN/wardctl" tenant create --slug "tk-acme-$sfx" --region $r --name "TK Acme" --admin-email a@tk-acme.example >/dev/null ||
	not_ok "tenant create tk-acme"
"$BIN/wardctl" tenant create --slug "tk-other-$sfx" --region $r --name "TK Other" --admin-email a@tk-other.example >/dev/null ||
	not_ok "tenant create tk-other"
TA=$(pg_super $r "SELECT id FROM tenant.tenants WHERE slug = 'tk-acme-$sfx'")
TB=$(pg_super $r "SELECT id FROM tenant.tenants WHERE slug = 'tk-other-$sfx'")
AG=user:$(uuid):agent
AD=user:$(uuid):admin
C1ID=$(uuid); C1=user:$C1ID:customer
C2=user:$(uuid):customer
AGB=user:$(uuid):agent
M=mk$sfx$RANDOM # marker: must never appear in clear in the database

# ------------------------------------------------------------------ create and read
expect "customer creates a ticket" 0 "$TA" "$C1" ticket.create "{\"subject\":\"Printer $M-subject\",\"body\":\"<script>alert(1)</script> $M-body\"}"
T1=$(echo "$LAST" | jget id)
REF1=$(echo "$LAST" | jget ref)
check "the ticket has a per-tenant ref TK-ACME-$sfx-<n>" bash -c "[[ '$REF1' =~ ^TK-ACME-$sfx-[0-9]+$ ]]"
check "a customer's ticket is theirs (requester_id) and open" bash -c "echo '$LAST' | grep -q '\"requester_id\":\"$C1ID\"' && echo '$LAST' | grep -q '\"status\":\"open\"'"
check "HTML in a body is stored and returned as text" bash -c "echo '$LAST' | grep -qF '<script>alert(1)</script>'"
expect "agent creates a ticket for a requester by email" 0 "$TA" "$AG" ticket.create "{\"subject\":\"Phone\",\"body\":\"b\",\"priority\":\"high\",\"requester_email\":\"Jane.$M@Example.COM\",\"requester_name\":\"Jane $M-name\"}"
T2=$(echo "$LAST" | jget id)
REF2=$(echo "$LAST" | jget ref)
check "the requester email is normalised" bash -c "echo '$LAST' | grep -q '\"requester_email\":\"jane.$M@example.com\"'"
check "refs count up per tenant" [ "$(( ${REF2##*-} - ${REF1##*-} ))" = 1 ]
expect "the customer reads their ticket" 0 "$TA" "$C1" ticket.get "{\"id\":\"$T1\"}"
expect "an agent reads any ticket of the tenant" 0 "$TA" "$AG" ticket.get "{\"id\":\"$T1\"}"
expect "the first ticket of another tenant starts its own numbering" 0 "$TB" "$AGB" ticket.create '{"subject":"other","body":"x"}'
check "tk-other's first ref is TK-OTHER-$sfx-1001" bash -c "echo '$LAST' | grep -q '\"ref\":\"TK-OTHER-$sfx-1001\"'"
TB1=$(echo "$LAST" | jget id)

# ------------------------------------------------------------------ isolation: 404, not 403
expect "another customer reading the ticket: 404" 404 "$TA" "$C2" ticket.get "{\"id\":\"$T1\"}"
expect "another customer listing its messages: 404" 404 "$TA" "$C2" message.list "{\"id\":\"$T1\"}"
expect "another customer replying to it: 404" 404 "$TA" "$C2" message.create "{\"id\":\"$T1\",\"body\":\"hi\"}"
expect "another tenant's agent reading the ticket id: 404" 404 "$TB" "$AGB" ticket.get "{\"id\":\"$T1\"}"
expect "another tenant's agent updating the ticket id: 404" 404 "$TB" "$AGB" ticket.update "{\"id\":\"$T1\",\"status\":\"pending\"}"
expect "an acme agent reading tk-other's ticket id: 404" 404 "$TA" "$AG" ticket.get "{\"id\":\"$TB1\"}"
expect "a principal of tk-other in an envelope for acme: refused" 403 "$TA" "$AGB" ticket.get "{\"id\":\"$T1\"}" --principal-tenant "$TB"
LAST=$(call "$TA" "$C2" ticket.list '{}')
check "another customer's list does not hold the ticket" bash -c "! echo '$LAST' | grep -q '$T1'"
LAST=$(call "$TA" "$C1" ticket.list '{}')
check "the customer's list holds only their ticket" bash -c "echo '$LAST' | grep -q '$T1' && ! echo '$LAST' | grep -q '$T2'"
expect "a customer may filter by requester" 0 "$TA" "$C1" ticket.list "{\"requester\":\"$(uuid)\"}"
check "a customer asking for another requester gets nothing" bash -c "echo '$LAST' | grep -q '\"items\":\[\]'"
expect "a customer cannot update a ticket" 403 "$TA" "$C1" ticket.update "{\"id\":\"$T1\",\"status\":\"closed\"}"
expect "an unknown ticket id: 404" 404 "$TA" "$AG" ticket.get "{\"id\":\"$(uuid)\"}"
expect "a malformed ticket id: 404" 404 "$TA" "$AG" ticket.get '{"id":"1 OR 1=1"}'
expect "an API key without a scope is refused" 403 "$TA" "api:key1:" ticket.list '{}'
expect "an API key with tickets:read lists" 0 "$TA" "api:key1:" ticket.list '{}' --scope tickets:read
expect "an API key with tickets:read cannot create" 403 "$TA" "api:key1:" ticket.create '{"subject":"s","body":"b"}' --scope tickets:read
expect "an anonymous principal is refused" 403 "$TA" "anonymous::" ticket.list '{}'

# ------------------------------------------------------------------ input limits
long=$(printf 'x%.0s' $(seq 256))
expect "subject of 256 characters: 422" 422 "$TA" "$C1" ticket.create "{\"subject\":\"$long\",\"body\":\"b\"}"
check "the 422 names the field subject" bash -c "echo '$LAST' | grep -q '\"field\":\"subject\"'"
accents=$(printf '\xc3\xa9%.0s' $(seq 255))
expect "subject of 255 two-byte characters is accepted" 0 "$TA" "$C1" ticket.create "{\"subject\":\"$accents\",\"body\":\"b\"}"
expect "subject with a newline: 422" 422 "$TA" "$C1" ticket.create '{"subject":"a\nb","body":"b"}'
expect "missing body: 422" 422 "$TA" "$C1" ticket.create '{"subject":"s"}'
check "the 422 names the field body" bash -c "echo '$LAST' | grep -q '\"field\":\"body\"'"
{ printf '{"subject":"big","body":"'; head -c 262145 /dev/zero | tr '\0' a; printf '"}'; } >"$TMP/big.json"
expect "body over 256 KiB: 422" 422 "$TA" "$C1" ticket.create "@$TMP/big.json"
check "the 422 names the field body (too long)" bash -c "echo '$LAST' | grep -q '\"field\":\"body\",\"message\":\"is too long\"'"
{ printf '{"subject":"big","body":"'; head -c 262144 /dev/zero | tr '\0' a; printf '"}'; } >"$TMP/max.json"
expect "body of exactly 256 KiB is accepted" 0 "$TA" "$C1" ticket.create "@$TMP/max.json"
expect "a body with a control character: 422" 422 "$TA" "$C1" ticket.create '{"subject":"s","body":"a\u0007b"}'
expect "unknown priority: 422" 422 "$TA" "$AG" ticket.create '{"subject":"s","body":"b","priority":"asap"}'
expect "bad requester_email: 422" 422 "$TA" "$AG" ticket.create '{"subject":"s","body":"b","requester_email":"x@y"}'
expect "a customer cannot open a ticket for someone else: 422" 422 "$TA" "$C1" ticket.create '{"subject":"s","body":"b","requester_email":"v@victim.example"}'

# ------------------------------------------------------------------ messages and notes
expect "agent adds an internal note" 0 "$TA" "$AG" message.create "{\"id\":\"$T1\",\"body\":\"note $M-note\",\"internal\":true}"
expect "agent replies publicly" 0 "$TA" "$AG" message.create "{\"id\":\"$T1\",\"body\":\"public reply\"}"
expect "a customer cannot write an internal note: 422" 422 "$TA" "$C1" message.create "{\"id\":\"$T1\",\"body\":\"x\",\"internal\":true}"
LAST=$(call "$TA" "$C1" message.list "{\"id\":\"$T1\"}")
check "the customer sees the public messages" bash -c "echo '$LAST' | grep -q 'public reply'"
check "the customer never sees the internal note" bash -c "echo '$LAST' | grep -q 'public reply' && ! echo '$LAST' | grep -q -e '$M-note' -e '\"internal\":true'"
LAST=$(call "$TA" "$AG" message.list "{\"id\":\"$T1\"}")
check "the agent sees the internal note" bash -c "echo '$LAST' | grep -q '$M-note'"
check "messages are listed oldest first (the first is the ticket body)" bash -c "echo '$LAST' | grep -o '\"body\":\"[^\"]*\"' | head -1 | grep -q '$M-body'"
LAST=$(call "$TA" "$AG" message.list "{\"id\":\"$T1\",\"limit\":1}")
cur=$(echo "$LAST" | jget next_cursor)
check "message.list pages with a cursor" bash -c "[ -n '$cur' ] && [ \$(echo '$LAST' | grep -o '\"author_role\"' | wc -l) = 1 ]"
LAST=$(call "$TA" "$AG" message.list "{\"id\":\"$T1\",\"limit\":1,\"cursor\":\"$cur\"}")
check "page 2 of the messages is the internal note" bash -c "echo '$LAST' | grep -q '$M-note'"

# ------------------------------------------------------------------ status workflow
expect "agent sets pending" 0 "$TA" "$AG" ticket.update "{\"id\":\"$T1\",\"status\":\"pending\"}"
expect "customer replies" 0 "$TA" "$C1" message.create "{\"id\":\"$T1\",\"body\":\"still broken\"}"
LAST=$(call "$TA" "$C1" ticket.get "{\"id\":\"$T1\"}")
check "a customer reply reopens a pending ticket" bash -c "echo '$LAST' | grep -q '\"status\":\"open\"'"
expect "open → closed directly: 422" 422 "$TA" "$AG" ticket.update "{\"id\":\"$T1\",\"status\":\"closed\"}"
check "the 422 names the field status" bash -c "echo '$LAST' | grep -q '\"field\":\"status\",\"message\":\"cannot change from open to closed\"'"
AGID=${AG#user:}; AGID=${AGID%%:*}
expect "open → resolved" 0 "$TA" "$AG" ticket.update "{\"id\":\"$T1\",\"status\":\"resolved\",\"priority\":\"urgent\",\"assignee_id\":\"$AGID\"}"
expect "the assignee filter finds it" 0 "$TA" "$AG" ticket.list "{\"assignee\":\"$AGID\"}"
check "the assigned ticket is listed for its assignee" bash -c "echo '$LAST' | grep -q '$T1' && ! echo '$LAST' | grep -q '$T2'"
expect "resolved → closed" 0 "$TA" "$AG" ticket.update "{\"id\":\"$T1\",\"status\":\"closed\"}"
expect "a customer reply on a closed ticket: 409" 409 "$TA" "$C1" message.create "{\"id\":\"$T1\",\"body\":\"again\"}"
expect "closed → open: 422" 422 "$TA" "$AG" ticket.update "{\"id\":\"$T1\",\"status\":\"open\"}"
expect "unknown status value: 422" 422 "$TA" "$AG" ticket.update "{\"id\":\"$T1\",\"status\":\"done\"}"
expect "the status filter lists closed tickets" 0 "$TA" "$AG" ticket.list '{"status":"closed"}'
check "status=closed lists only closed tickets" bash -c "[ -n '$T1' ] && echo '$LAST' | grep -q '$T1' && ! echo '$LAST' | grep -q '\"status\":\"open\"'"
expect "updated_since in the future lists nothing" 0 "$TA" "$AG" ticket.list '{"updated_since":"2999-01-01T00:00:00Z"}'
check "updated_since filters" bash -c "echo '$LAST' | grep -q '\"items\":\[\]'"
expect "updated_since that is not a time: 422" 422 "$TA" "$AG" ticket.list '{"updated_since":"yesterday"}'

# ------------------------------------------------------------------ idempotency
K=key-$RANDOM$RANDOM
expect "create with an Idempotency-Key" 0 "$TA" "$C1" ticket.create '{"subject":"idem","body":"once"}' --idem "$K"
I1=$(echo "$LAST" | jget id)
expect "the same key and body again" 0 "$TA" "$C1" ticket.create '{"subject":"idem","body":"once"}' --idem "$K"
I2=$(echo "$LAST" | jget id)
check "a retry with the same key returns the first result" bash -c "[ -n '$I1' ] && [ '$I1' = '$I2' ]"
expect "the same key with another body: 422" 422 "$TA" "$C1" ticket.create '{"subject":"idem","body":"twice"}' --idem "$K"
expect "the same key from another customer is another request" 0 "$TA" "$C2" ticket.create '{"subject":"idem","body":"once"}' --idem "$K"
check "another principal's key does not return the first result" bash -c "[ -n '$(echo "$LAST" | jget id)' ] && [ '$(echo "$LAST" | jget id)' != '$I1' ]"
expect "message with an Idempotency-Key" 0 "$TA" "$AG" message.create "{\"id\":\"$T2\",\"body\":\"m\"}" --idem "$K"
MI1=$(echo "$LAST" | jget id)
expect "the same message again" 0 "$TA" "$AG" message.create "{\"id\":\"$T2\",\"body\":\"m\"}" --idem "$K"
check "a retried message is stored once" bash -c "[ -n '$MI1' ] && [ '$MI1' = '$(echo "$LAST" | jget id)' ]"

# ------------------------------------------------------------------ pagination
for i in 1 2 3 4; do call "$TB" "$AGB" ticket.create "{\"subject\":\"page $i\",\"body\":\"x\"}" >/dev/null; done
LAST=$(call "$TB" "$AGB" ticket.list '{"limit":2}')
p1=$(echo "$LAST" | grep -o '"id":"[^"]*"' | sort)
c1=$(echo "$LAST" | jget next_cursor)
NEWID=$(call "$TB" "$AGB" ticket.create '{"subject":"inserted meanwhile","body":"x"}' | jget id)
LAST=$(call "$TB" "$AGB" ticket.list "{\"limit\":2,\"cursor\":\"$c1\"}")
p2=$(echo "$LAST" | grep -o '"id":"[^"]*"' | sort)
c2=$(echo "$LAST" | jget next_cursor)
LAST=$(call "$TB" "$AGB" ticket.list "{\"limit\":2,\"cursor\":\"$c2\"}")
p3=$(echo "$LAST" | grep -o '"id":"[^"]*"' | sort)
c3=$(echo "$LAST" | jget next_cursor)
check "pages of 2, 2 and 1 over 5 tickets despite an insert between pages" bash -c \
	"[ $(echo "$p1" | grep -c id) = 2 ] && [ $(echo "$p2" | grep -c id) = 2 ] && [ $(echo "$p3" | grep -c id) = 1 ]"
check "no ticket is repeated across pages" bash -c "[ $(printf '%s\n%s\n%s\n' "$p1" "$p2" "$p3" | sort | uniq -d | wc -l) = 0 ]"
check "the last page has no next_cursor" bash -c "[ -n '$p3' ] && [ -z '$c3' ]"
check "the ticket inserted meanwhile is not on the later pages" bash -c "[ -n '$NEWID' ] && ! printf '%s\n%s' '$p2' '$p3' | grep -q '$NEWID'"
expect "a forged cursor: 422" 422 "$TB" "$AGB" ticket.list '{"cursor":"AAAAAAAAAAAA"}'
check "the 422 names the field cursor" bash -c "echo '$LAST' | grep -q '\"field\":\"cursor\"'"
expect "limit 101: 422" 422 "$TB" "$AGB" ticket.list '{"limit":101}'

# ------------------------------------------------------------------ attachments
printf '<html><script>alert("%s-file")</script></html>' "$M" >"$TMP/evil.html"
printf '\x89PNG\r\n\x1a\n\0\0\0\rIHDR' >"$TMP/pic.png"
head -c 600000 /dev/urandom >"$TMP/big.bin"
expect "an agent attaches a file to the emailed requester's ticket" 0 "$TA" "$AG" attachment.create "{\"id\":\"$T2\",\"filename\":\"../x.html\"}" --content-file "$TMP/evil.html"
check "the file name loses its path" bash -c "echo '$LAST' | grep -q '\"filename\":\"x.html\"'"
expect "a customer cannot attach to another's ticket: 404" 404 "$TA" "$C2" attachment.create "{\"id\":\"$T1\",\"filename\":\"a.txt\"}" --content-file "$TMP/evil.html"
expect "customer 1 attaches to their own ticket" 0 "$TA" "$C1" attachment.create "{\"id\":\"$T1\",\"filename\":\"$M-name.html\"}" --content-file "$TMP/evil.html"
A1=$(echo "$LAST" | jget id)
check "the content type is sniffed: HTML is served as text/plain" bash -c "echo '$LAST' | grep -q '\"content_type\":\"text/plain\"'"
expect "an agent attaches a PNG" 0 "$TA" "$AG" attachment.create "{\"id\":\"$T1\",\"filename\":\"pic.jpg\"}" --content-file "$TMP/pic.png"
check "the PNG is image/png whatever its name says" bash -c "echo '$LAST' | grep -q '\"content_type\":\"image/png\"'"
expect "an attachment over the limit: 422" 422 "$TA" "$AG" attachment.create "{\"id\":\"$T1\",\"filename\":\"big.bin\"}" --content-file "$TMP/big.bin"
check "the 422 names the field content" bash -c "echo '$LAST' | grep -q '\"field\":\"content\"'"
expect "the customer downloads their attachment" 0 "$TA" "$C1" attachment.get "{\"id\":\"$T1\",\"aid\":\"$A1\"}"
check "the download is the uploaded bytes" [ "$(echo "$LAST" | jget content | base64 -d)" = "$(cat "$TMP/evil.html")" ]
expect "another customer downloading it: 404" 404 "$TA" "$C2" attachment.get "{\"id\":\"$T1\",\"aid\":\"$A1\"}"
expect "another tenant downloading it: 404" 404 "$TB" "$AGB" attachment.get "{\"id\":\"$T1\",\"aid\":\"$A1\"}"
expect "the attachment under another ticket id: 404" 404 "$TA" "$AG" attachment.get "{\"id\":\"$T2\",\"aid\":\"$A1\"}"
LAST=$(call "$TA" "$AG" message.create "{\"id\":\"$T1\",\"body\":\"secret note\",\"internal\":true}")
NOTE=$(echo "$LAST" | jget id)
expect "an agent attaches a file to an internal note" 0 "$TA" "$AG" attachment.create "{\"id\":\"$T1\",\"filename\":\"internal.txt\",\"message_id\":\"$NOTE\"}" --content-file "$TMP/evil.html"
A3=$(echo "$LAST" | jget id)
LAST=$(call "$TA" "$C1" attachment.list "{\"id\":\"$T1\"}")
check "the customer's attachment list omits the internal note's file" bash -c "[ -n '$A1' ] && [ -n '$A3' ] && echo '$LAST' | grep -q '$A1' && ! echo '$LAST' | grep -q '$A3'"
expect "the customer downloading the internal note's file: 404" 404 "$TA" "$C1" attachment.get "{\"id\":\"$T1\",\"aid\":\"$A3\"}"

# ------------------------------------------------------------------ departments
expect "an admin creates a department" 0 "$TA" "$AD" department.create '{"name":"Billing"}'
DEP=$(echo "$LAST" | jget id)
expect "the same department again: 409" 409 "$TA" "$AD" department.create '{"name":"Billing"}'
expect "an agent cannot create departments" 403 "$TA" "$AG" department.create '{"name":"Sales"}'
expect "an agent lists departments" 0 "$TA" "$AG" department.list '{}'
check "the list holds Billing" bash -c "echo '$LAST' | grep -q '\"name\":\"Billing\"'"
expect "a ticket moves to the department" 0 "$TA" "$AG" ticket.update "{\"id\":\"$T2\",\"department_id\":\"$DEP\"}"
expect "an unknown department: 422" 422 "$TA" "$AG" ticket.update "{\"id\":\"$T2\",\"department_id\":\"$(uuid)\"}"
expect "another tenant's department is unknown: 422" 422 "$TB" "$AGB" ticket.update "{\"id\":\"$TB1\",\"department_id\":\"$DEP\"}"

# ------------------------------------------------------------------ audit events
audit_count() { # ACTION: events of acme with that action, in the outbox or delivered
	pg_super $r "SELECT (SELECT count(*) FROM ticket.outbox WHERE tenant_id = '$TA' AND type = 'ticket' AND action = '$1')
		+ (SELECT count(*) FROM audit.events WHERE tenant_id = '$TA' AND type = 'ticket' AND action = '$1')"
}
for a in create reply note status assign priority attachment.add; do
	check "audit event ticket/$a recorded" bash -c "[ \"\$(pg_super $r \"SELECT (SELECT count(*) FROM ticket.outbox WHERE tenant_id = '$TA' AND type = 'ticket' AND action = '$a') + (SELECT count(*) FROM audit.events WHERE tenant_id = '$TA' AND type = 'ticket' AND action = '$a')\")\" -gt 0 ]"
done
check "audit events name the actor and the ticket" bash -c "[ \"\$(pg_super $r \"SELECT (SELECT count(*) FROM ticket.outbox WHERE tenant_id = '$TA' AND actor = 'user:$C1ID' AND target = 'ticket:$T1') + (SELECT count(*) FROM audit.events WHERE tenant_id = '$TA' AND actor = 'user:$C1ID' AND target = 'ticket:$T1')\")\" -gt 0 ]"
check "an idempotent retry recorded no second create event" bash -c "[ \"\$(pg_super $r \"SELECT count(*) FROM ticket.requests WHERE tenant_id = '$TA' AND idem_key = '$K' AND method = 'ticket.create'\")\" = 2 ]"

# ------------------------------------------------------------------ at rest
check "the database holds only ciphertext for subject, body, names, files" bash -c \
	"pg_super $r \"SELECT t::text FROM ticket.tickets t\" >$TMP/rows && grep -q '$T1' $TMP/rows && ! grep -q '$M' $TMP/rows"
check "pg_dump of the eu cell has no marker (subject, bodies, note, email, name, files)" bash -c \
	"PGPASSWORD=\$(cat $WARD_VAR/$r/secrets/pg-admin) /usr/lib/postgresql/15/bin/pg_dump -h 127.0.0.1 -p $(port_of $r PG) -U postgres ward >$TMP/dump.sql && [ -s $TMP/dump.sql ] && ! grep -qi '$M' $TMP/dump.sql"
check "the dump does hold the tickets (the marker test can fail)" bash -c "grep -q '$T1' $TMP/dump.sql"
check "ticket tables are forced under row-level security" bash -c \
	"[ \"\$(pg_super $r \"SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'ticket' AND c.relname IN ('tickets','messages','attachments','departments','counters','requests') AND c.relrowsecurity AND c.relforcerowsecurity\")\" = 6 ]"
check "ward_ticket without a tenant setting sees no ticket" bash -c "[ \"\$(pg_as $r ward_ticket 'SELECT count(*) FROM ticket.tickets')\" = 0 ]"

# ------------------------------------------------------------------ exactly once across kill -9
etc=$WARD_VAR/$r/etc
pid1=$(pid_of $r ticket)
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
spawn_as_user "$WARD_VAR/$r/run/ticket-2.pid" "$WARD_VAR/$r/log/ticket-2.stderr" "$BIN/ward-ticket" --config "$etc/ticket-2.yaml"
pid2=$(cat "$WARD_VAR/$r/run/ticket-2.pid")
check "ticket-2 (sleeps 8 s after each commit) is up" wait_for 10 bash -c "[ \"\$(rcli $r admin EXISTS hb:ticket:ticket-2)\" = 1 ]"
n0=$(pg_super $r "SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TA'")
call "$TA" "$C1" ticket.create '{"subject":"crash once","body":"exactly once"}' --timeout 40000 >"$TMP/crash.out" 2>&1 &
cpid=$!
check "ticket-2 committed the ticket (and is now between commit and ack)" wait_for 8 bash -c \
	"[ \"\$(pg_super $r \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TA'\")\" = $((n0 + 1)) ]"
check "the message is still pending (not acked)" bash -c "[ \"\$(rcli $r admin XPENDING q:ticket ticket | head -1)\" -gt 0 ]"
kill -KILL "$pid2"
check "ticket-2 is dead (SIGKILL between commit and ack)" wait_for 5 bash -c "! kill -0 $pid2 2>/dev/null"
spawn_as_user "$WARD_VAR/$r/run/ticket-3.pid" "$WARD_VAR/$r/log/ticket-3.stderr" "$BIN/ward-ticket" --config "$etc/ticket-3.yaml"
pid3=$(cat "$WARD_VAR/$r/run/ticket-3.pid")
if wait "$cpid"; then ok "the caller got an answer after the crash"; else not_ok "the caller got no answer"; cat "$TMP/crash.out"; fi
CID=$(jget id <"$TMP/crash.out")
check "the redelivered request created no second ticket" bash -c \
	"[ \"\$(pg_super $r \"SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TA'\")\" = $((n0 + 1)) ]"
check "the answer is the ticket committed before the crash" bash -c \
	"[ -n '$CID' ] && [ \"\$(pg_super $r \"SELECT count(*) FROM ticket.tickets WHERE id = '$CID'\")\" = 1 ]"
check "one create event for it" bash -c "[ \"\$(pg_super $r \"SELECT (SELECT count(*) FROM ticket.outbox WHERE target = 'ticket:$CID' AND action = 'create') + (SELECT count(*) FROM audit.events WHERE target = 'ticket:$CID' AND action = 'create')\")\" = 1 ]"
check "nothing is left pending on q:ticket" wait_for 5 bash -c "[ \"\$(rcli $r admin XPENDING q:ticket ticket | head -1)\" = 0 ]"
kill -TERM "$pid3"
wait_for 10 bash -c "! kill -0 $pid3 2>/dev/null"
rm -f "$etc/ticket-2.yaml" "$etc/ticket-3.yaml" "$WARD_VAR/$r/run/ticket-2.pid" "$WARD_VAR/$r/run/ticket-3.pid"
check "the dev stack brings ticket-1 back" "$TOP/ops/devstack" up
check "ping through q:ticket works again" "$BIN/wardctl" ping --region $r --service ticket
