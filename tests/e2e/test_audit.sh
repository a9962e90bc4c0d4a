#!/usr/bin/env bash
# Audit (issue 6): events from wardctl and from service outboxes reach ward-audit,
# stored once, hash-chained; tampering as the database superuser is reported at the
# first bad event; nothing is lost when Redis is killed -9 or ward-audit is down;
# the audit role cannot change history.
. "$(dirname "$0")/lib.sh"
r=eu
slug=audit-e2e

# ---------------------------------------------------------------- operator events
check "wardctl tenant create succeeds" "$BIN/wardctl" tenant create --slug $slug --region $r --name "Audit E2E" --admin-email admin@audit-e2e.example
tid=$(pg_super $r "SELECT id FROM tenant.tenants WHERE slug = '$slug'")
count() { pg_super $r "SELECT count(*) FROM audit.events WHERE $1"; }
check "tenant create is recorded in the tenant's chain (type tenant, action create, operator actor)" \
	wait_for 10 bash -c "[ \"\$(pg_super $r \"SELECT count(*) FROM audit.events WHERE tenant_id = '$tid' AND type = 'tenant' AND action = 'create' AND actor LIKE 'operator:%' AND target = 'tenant:$tid'\")\" = 1 ]"
check "wardctl audit list shows it, detail decrypted" bash -c "$BIN/wardctl audit list --region $r --tenant $slug | grep -q '\\\\\"slug\\\\\":\\\\\"$slug\\\\\"'"
check "the detail is stored encrypted (no slug in clear)" bash -c "! pg_super $r \"SELECT encode(detail_enc, 'escape') FROM audit.events WHERE tenant_id = '$tid' UNION ALL SELECT encode(detail_enc, 'escape') FROM audit.event_details WHERE tenant_id = '$tid'\" | grep -q '$slug'"
check "the detail is stored beside the event (060_gdpr)" test "$(pg_super $r "SELECT count(*) FROM audit.event_details WHERE tenant_id = '$tid'")" -ge 1

# ---------------------------------------------------------------- service outbox relay
ins() { # ins ID TYPE ACTION [DETAIL]: an outbox row as a committed action would leave it
	pg_super $r "INSERT INTO backup.outbox (id, at_ms, tenant_id, type, action, actor, target, detail_json) VALUES ('$1', (extract(epoch FROM now()) * 1000)::bigint, '$tid', '$2', '$3', 'service:backup', 'x', '${4:-{\"n\":1\}}')"
}
id1=$(openssl rand -hex 16)
ins "$id1" backup run
check "an outbox row reaches audit.events" wait_for 10 bash -c "[ \"\$(pg_super $r \"SELECT count(*) FROM audit.events WHERE id = '$id1'\")\" = 1 ]"
check "and is deleted from the outbox once sent" wait_for 5 bash -c "[ \"\$(pg_super $r \"SELECT count(*) FROM backup.outbox WHERE id = '$id1'\")\" = 0 ]"
ins "$id1" backup run
sleep 2
check "the same event delivered twice is stored once" [ "$(count "id = '$id1'")" = 1 ]
check "the relay publishes its backlog for the status page (hb:backup:audit-outbox)" \
	wait_for 10 bash -c "rcli $r admin GET hb:backup:audit-outbox | grep -q '\"degraded\":false'"
check "ward-audit publishes its lag (hb:audit:backlog)" wait_for 10 bash -c "rcli $r admin GET hb:audit:backlog | grep -q '\"lag_ms\"'"

# ---------------------------------------------------------------- append-only
refuse "ward_audit cannot UPDATE audit.events" pg_as $r ward_audit "UPDATE audit.events SET action = 'x'"
refuse "ward_audit cannot DELETE from audit.events" pg_as $r ward_audit "DELETE FROM audit.events"
refuse "ward_audit cannot TRUNCATE audit.events" pg_as $r ward_audit "TRUNCATE audit.events"
refuse "ward_audit cannot DELETE checkpoints" pg_as $r ward_audit "DELETE FROM audit.checkpoints"
refuse "even the superuser cannot UPDATE audit.events with the trigger on" pg_super $r "UPDATE audit.events SET action = 'x' WHERE false"
refuse "the purge role cannot DELETE without recording the purge" pg_as $r ward_audit_purge "DELETE FROM audit.events WHERE false"
check "audit role holds INSERT and SELECT only on audit.events" bash -c \
	"[ \"\$(pg_super $r \"SELECT string_agg(privilege_type, ',' ORDER BY privilege_type) FROM information_schema.role_table_grants WHERE grantee = 'ward_audit' AND table_schema = 'audit' AND table_name = 'events'\")\" = INSERT,SELECT ]"

# ---------------------------------------------------------------- tamper evidence
for i in 1 2 3 4 5 6; do ins "$(openssl rand -hex 16)" chain "step$i"; done
check "six more events stored" wait_for 10 bash -c "[ \"\$(pg_super $r \"SELECT count(*) FROM audit.events WHERE tenant_id = '$tid' AND type = 'chain'\")\" = 6 ]"
verify() { "$BIN/wardctl" audit verify --region $r --tenant $slug; }
field() { sed -n "s/.*\"$1\":\\([^,}]*\\).*/\\1/p" | tr -d '"'; }
check "verify: the intact chain is ok" verify
seq_of() { pg_super $r "SELECT seq FROM audit.events WHERE tenant_id = '$tid' AND type = 'chain' AND action = '$1'"; }
id_of() { pg_super $r "SELECT replace(id::text, '-', '') FROM audit.events WHERE tenant_id = '$tid' AND seq = $1"; }
s3=$(seq_of step3); s4=$(seq_of step4); s5=$(seq_of step5)
trig() { pg_super $r "ALTER TABLE audit.events $1 TRIGGER ALL"; }

# Edit a row (superuser, trigger disabled: that is the attack).
trig DISABLE
pg_super $r "UPDATE audit.events SET action = 'stepX' WHERE tenant_id = '$tid' AND seq = $s3"
trig ENABLE
out=$(verify); rc=$?
check "edited row: verify fails (exit 1)" [ $rc = 1 ]
check "edited row: the first bad event is the edited one" [ "$(echo "$out" | field first_bad_id)" = "$(id_of $s3)" ]
trig DISABLE
pg_super $r "UPDATE audit.events SET action = 'step3' WHERE tenant_id = '$tid' AND seq = $s3"
trig ENABLE
check "restored row: verify ok again" verify

# Delete a row.
pg_super $r "CREATE TABLE public.audit_e2e_saved AS SELECT * FROM audit.events WHERE tenant_id = '$tid' AND seq = $s4"
trig DISABLE
pg_super $r "DELETE FROM audit.events WHERE tenant_id = '$tid' AND seq = $s4"
trig ENABLE
out=$(verify); rc=$?
check "deleted row: verify fails" [ $rc = 1 ]
check "deleted row: the first bad event is the one after the gap" [ "$(echo "$out" | field first_bad_seq)" = "$s5" ]
pg_super $r "INSERT INTO audit.events SELECT * FROM public.audit_e2e_saved; DROP TABLE public.audit_e2e_saved"
check "re-inserted row: verify ok again" verify

# Reorder two rows (swap their positions).
trig DISABLE
pg_super $r "UPDATE audit.events SET seq = 999999 WHERE tenant_id = '$tid' AND seq = $s4;
	UPDATE audit.events SET seq = $s4 WHERE tenant_id = '$tid' AND seq = $s5;
	UPDATE audit.events SET seq = $s5 WHERE tenant_id = '$tid' AND seq = 999999"
trig ENABLE
moved=$(id_of $s4)
out=$(verify); rc=$?
check "reordered rows: verify fails" [ $rc = 1 ]
check "reordered rows: the first bad event is the one moved up" bash -c "[ \"$(echo "$out" | field first_bad_id)\" = $moved ] && [ \"$(echo "$out" | field first_bad_seq)\" = $s4 ]"
trig DISABLE
pg_super $r "UPDATE audit.events SET seq = 999999 WHERE tenant_id = '$tid' AND seq = $s4;
	UPDATE audit.events SET seq = $s4 WHERE tenant_id = '$tid' AND seq = $s5;
	UPDATE audit.events SET seq = $s5 WHERE tenant_id = '$tid' AND seq = 999999"
trig ENABLE
check "swapped back: verify ok" verify

# A forged checkpoint (no signing key in the database) is caught.
pg_super $r "ALTER TABLE audit.checkpoints DISABLE TRIGGER ALL; INSERT INTO audit.checkpoints (tenant_id, seq, hash, at, alg, key_id, signature) SELECT tenant_id, seq, hash, now(), 'hmac-sha256', 'forged', sha256('x') FROM audit.events WHERE tenant_id = '$tid' AND seq = $s5"
out=$(verify); rc=$?
check "forged checkpoint: verify fails with 'checkpoint signature invalid'" bash -c "[ $rc = 1 ] && echo '$out' | grep -q 'checkpoint signature invalid'"
pg_super $r "DELETE FROM audit.checkpoints WHERE key_id = 'forged'; ALTER TABLE audit.checkpoints ENABLE TRIGGER ALL"
check "forged checkpoint removed: verify ok" verify

# ---------------------------------------------------------------- Redis killed -9 during a burst
N=200
{
	for i in $(seq $N); do
		echo "INSERT INTO backup.outbox (id, at_ms, tenant_id, type, action, actor) VALUES (md5(random()::text), (extract(epoch FROM now()) * 1000)::bigint, '$tid', 'burst', 'b$i', 'service:backup'); SELECT pg_sleep(0.01);"
	done
} >"$WARD_VAR/burst.sql"
url="WARD_$(upper $r)_PG"
psql -X -q -v ON_ERROR_STOP=1 "${!url}" -f "$WARD_VAR/burst.sql" >/dev/null &
burst=$!
sleep 1
kill -9 "$(cat "$WARD_VAR/$r/redis/redis.pid")"
check "burst: every action committed while Redis was killed" wait "$burst"
check "Redis is down" wait_for 5 bash -c "! rcli $r admin PING"
sleep 1
check "burst: the rows wait in the outbox while Redis is down" bash -c "[ \"\$(pg_super $r \"SELECT count(*) FROM backup.outbox\")\" -gt 0 ]"
check "devstack up restarts Redis" "$TOP/ops/devstack" up
check "burst: all $N events stored once Redis is back (none lost)" wait_for 60 bash -c "[ \"\$(pg_super $r \"SELECT count(DISTINCT action) FROM audit.events WHERE tenant_id = '$tid' AND type = 'burst'\")\" = $N ]"
check "burst: and each once" [ "$(count "tenant_id = '$tid' AND type = 'burst'")" = $N ]

# ---------------------------------------------------------------- ward-audit down
kill -TERM "$(pid_of $r audit)"
check "ward-audit stopped" wait_for 15 bash -c "! kill -0 $(pid_of $r audit) 2>/dev/null"
for i in $(seq 20); do ins "$(openssl rand -hex 16)" waiting "w$i"; done
check "audit down: the outbox still drains into q:audit" wait_for 10 bash -c "[ \"\$(pg_super $r \"SELECT count(*) FROM backup.outbox\")\" = 0 ]"
check "audit down: nothing stored yet" [ "$(count "tenant_id = '$tid' AND type = 'waiting'")" = 0 ]
check "devstack up restarts ward-audit" "$TOP/ops/devstack" up
check "audit back: the 20 waiting events arrive" wait_for 30 bash -c "[ \"\$(pg_super $r \"SELECT count(*) FROM audit.events WHERE tenant_id = '$tid' AND type = 'waiting'\")\" = 20 ]"
check "after all of it, the chain verifies" verify

# ---------------------------------------------------------------- logins from ward-auth (when wired)
n=$(count "tenant_id = '$tid' AND type = 'session'")
if https $r /healthz -o /dev/null 2>&1 && [ -n "${WARD_DEMO_ADMIN_EMAIL:-}" ]; then
	demo=$(pg_super $WARD_DEMO_REGION "SELECT id FROM tenant.tenants WHERE slug = '$WARD_DEMO_TENANT'")
	before=$(pg_super $WARD_DEMO_REGION "SELECT count(*) FROM audit.events WHERE tenant_id = '$demo' AND action LIKE 'login%'")
	p=$(port_of $WARD_DEMO_REGION HTTPS)
	curl -sS --max-time 10 --cacert "$WARD_CA" --resolve "$WARD_DEMO_TENANT.$WARD_DEMO_REGION.$WARD_DOMAIN:$p:127.0.0.1" \
		-H 'Content-Type: application/json' -d "{\"email\":\"$WARD_DEMO_ADMIN_EMAIL\",\"password\":\"wrong-password\"}" \
		"https://$WARD_DEMO_TENANT.$WARD_DEMO_REGION.$WARD_DOMAIN:$p/api/v1/auth/login" -o /dev/null 2>&1
	if wait_for 10 bash -c "[ \"\$(pg_super $WARD_DEMO_REGION \"SELECT count(*) FROM audit.events WHERE tenant_id = '$demo' AND action LIKE 'login%'\")\" -gt $before ]"; then
		ok "a failed login through the API is recorded"
	else
		ok "# SKIP login events: ward-auth does not record them yet ($n session events)"
	fi
fi
