#!/usr/bin/env bash
# Audit retention: the purge removes events past the tenant's retention as the
# dedicated role, records what it removed, leaves an audit event, and the chain
# still verifies; nobody else can delete an event.
. "$(dirname "$0")/lib.sh"
r=eu
"$BIN/wardctl" tenant create --slug purge-e2e --region $r --name "Purge" --admin-email p@purge.example >/dev/null ||
	not_ok "tenant create"
tid=$(pg_super $r "SELECT id FROM tenant.tenants WHERE slug = 'purge-e2e'")
for i in 1 2 3 4 5; do
	pg_super $r "INSERT INTO backup.outbox (id, at_ms, tenant_id, type, action, actor, target) VALUES (md5(random()::text), (extract(epoch FROM now()) * 1000)::bigint, '$tid', 'test', 'purge-$i', 'service:backup', 'x')" >/dev/null
done
count() { pg_super $r "SELECT count(*) FROM audit.events WHERE tenant_id = '$tid'"; }
check "six events in the tenant's chain (create + 5)" wait_for 15 bash -c "[ \"\$(pg_super $r \"SELECT count(*) FROM audit.events WHERE tenant_id = '$tid'\")\" = 6 ]"

refuse "retention: --days out of range is refused" "$BIN/wardctl" audit retention --region $r --tenant purge-e2e --days 0
check "retention: set to 1 day" "$BIN/wardctl" audit retention --region $r --tenant purge-e2e --days 1
check "retention: the change is an audit event" wait_for 10 bash -c \
	"[ \"\$(pg_super $r \"SELECT count(*) FROM audit.events WHERE tenant_id = '$tid' AND action = 'audit.retention'\")\" = 1 ]"

out=$("$BIN/wardctl" audit purge --region $r --tenant purge-e2e 2>&1)
check "purge now: nothing is past a 1-day retention yet" bash -c "echo '$out' | grep -q '\"purged\": *\[\]'"
before=$(count)
out=$("$BIN/wardctl" audit purge --region $r --tenant purge-e2e --as-of "$(date -u -d '+3 days' '+%Y-%m-%d %H:%M:%S+00')" 2>&1)
check "purge 3 days on: every event but the newest is removed" bash -c "echo '$out' | grep -q '\"count\": *$((before - 1))'"
check "one event is left" bash -c "[ \"\$(pg_super $r \"SELECT count(*) FROM audit.events WHERE tenant_id = '$tid' AND action <> 'purge'\")\" = 1 ]"
check "the purge is recorded in audit.purges by the purge role" bash -c \
	"[ \"\$(pg_super $r \"SELECT by_role || ':' || count FROM audit.purges WHERE tenant_id = '$tid'\")\" = ward_audit_purge:$((before - 1)) ]"
check "the purge is itself an audit event" wait_for 10 bash -c \
	"[ \"\$(pg_super $r \"SELECT count(*) FROM audit.events WHERE tenant_id = '$tid' AND type = 'audit' AND action = 'purge'\")\" = 1 ]"
check "the chain still verifies after the purge" "$BIN/wardctl" audit verify --region $r --tenant purge-e2e
pg_super $r "INSERT INTO backup.outbox (id, at_ms, tenant_id, type, action, actor) VALUES (md5(random()::text), (extract(epoch FROM now()) * 1000)::bigint, '$tid', 'test', 'after', 'service:backup')" >/dev/null
check "new events chain on after the purge" wait_for 10 bash -c \
	"[ \"\$(pg_super $r \"SELECT count(*) FROM audit.events WHERE tenant_id = '$tid' AND action = 'after'\")\" = 1 ]"
check "and the chain verifies" "$BIN/wardctl" audit verify --region $r --tenant purge-e2e

# Denials: only the purge role, only after recording the purge.
pw_purge=$(secret $r pg-audit-purge)
as_purge() { PGPASSWORD=$pw_purge psql -X -q -tA -v ON_ERROR_STOP=1 "host=127.0.0.1 port=$(port_of $r PG) dbname=ward user=ward_audit_purge" -c "$1"; }
refuse "the purge role cannot delete without recording the purge first" \
	as_purge "BEGIN; SELECT set_config('app.tenant_id', '$tid', true); DELETE FROM audit.events WHERE tenant_id = '$tid'; COMMIT;"
refuse "the purge role cannot UPDATE an event" \
	as_purge "BEGIN; SELECT set_config('app.tenant_id', '$tid', true); UPDATE audit.events SET actor = 'x'; COMMIT;"
refuse "the purge role cannot rewrite audit.purges" \
	as_purge "BEGIN; SELECT set_config('app.tenant_id', '$tid', true); DELETE FROM audit.purges; COMMIT;"
refuse "the purge role cannot read tickets" as_purge "SELECT count(*) FROM ticket.tickets"
refuse "the operator role cannot delete events" pg_as $r ward_ops "DELETE FROM audit.events"
refuse "the audit role cannot delete events" pg_as $r ward_audit "DELETE FROM audit.events"
