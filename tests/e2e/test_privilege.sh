#!/usr/bin/env bash
# Least privilege, proven by denials: every credential tried outside its policy.
. "$(dirname "$0")/lib.sh"
set -f # commands below carry literal * patterns
r=eu

# ---- Redis: the default user is off; each service user is held to its streams/commands.
refuse "redis: the default user cannot run commands" \
	bash -c "redis-cli -h 127.0.0.1 -p $(port_of $r REDIS) PING | grep -q PONG"
refuse "redis: a wrong password is refused" \
	bash -c "REDISCLI_AUTH=wrong redis-cli --no-auth-warning --user auth -h 127.0.0.1 -p $(port_of $r REDIS) PING | grep -q PONG"
noperm() { # noperm USER CMD...: the reply must be a NOPERM error
	rcli "$r" "$@" 2>&1 | grep -q NOPERM
}
for u in gateway auth ticket mail-ingest mail-out audit backup ops; do
	check "redis: $u can PING" bash -c "REDISCLI_AUTH=\$(cat $WARD_VAR/$r/secrets/redis-$u) redis-cli --no-auth-warning --user $u -h 127.0.0.1 -p $(port_of $r REDIS) PING | grep -q PONG"
	for cmd in FLUSHALL "KEYS *" "CONFIG GET *" "ACL LIST" "CLIENT LIST" SAVE SHUTDOWN "XGROUP CREATE q:x x \$ MKSTREAM" "EVAL return 1 0"; do
		# shellcheck disable=SC2086
		check "redis: $u is denied $cmd" noperm "$u" $cmd
	done
done
check "redis: gateway may not read q:auth (another service's queue)" noperm gateway XREADGROUP GROUP auth x COUNT 1 STREAMS q:auth '>'
check "redis: gateway may not XADD to dl:auth" noperm gateway XADD dl:auth '*' e x
check "redis: mail-ingest may not XADD to q:backup" noperm mail-ingest XADD q:backup '*' e x
check "redis: auth may not read q:ticket" noperm auth XREADGROUP GROUP ticket x COUNT 1 STREAMS q:ticket '>'
check "redis: auth may not XADD to q:backup" noperm auth XADD q:backup '*' e x
check "redis: auth may not read q:ticket's replies to the gateway" noperm auth XREAD COUNT 1 STREAMS r:gateway:gateway-1 0
check "redis: audit may not XADD to q:auth" noperm audit XADD q:auth '*' e x
check "redis: ticket may not read another service's reply stream" noperm ticket XREAD COUNT 1 STREAMS r:gateway:gateway-1 0
check "redis: ticket may not forge auth's heartbeat" noperm ticket SET hb:auth:auth-1 x
check "redis: gateway may not delete a queue" noperm gateway DEL q:auth
# ward-mail-out: consumes q:mail-out, sends to q:audit and q:auth, its memo keys only.
check "redis: mail-out may not XADD to q:ticket" noperm mail-out XADD q:ticket '*' e x
check "redis: mail-out may not read q:auth" noperm mail-out XREADGROUP GROUP auth x COUNT 1 STREAMS q:auth '>'
check "redis: mail-out may not XDEL q:auth (a queue it sends to)" noperm mail-out XDEL q:auth 0-1
check "redis: ticket may not read q:mail-out" noperm ticket XREADGROUP GROUP mail-out x COUNT 1 STREAMS q:mail-out '>'
check "redis: ticket may not read mail-out's sent Message-IDs" noperm ticket GET memo:mail-out:sent:x
check "redis: mail-out may not write another service's memo keys" noperm mail-out SET memo:ticket:x 1
check "redis: mail-out may not DEL its memo keys (SET, GET, EXISTS only)" noperm mail-out DEL memo:mail-out:sent:x
check "redis: mail-out may read its memo keys" bash -c "rcli $r mail-out EXISTS memo:mail-out:sent:x | grep -qx 0"
# Consumers XDEL what they acked, in their own queue only (XLEN is the queue's depth).
check "redis: auth may XDEL in its own queue q:auth" bash -c "rcli $r auth XDEL q:auth 0-1 | grep -qx 0"
check "redis: ticket may XDEL in its own queue q:ticket" bash -c "rcli $r ticket XDEL q:ticket 0-1 | grep -qx 0"
check "redis: gateway may not XDEL q:auth (a queue it sends to)" noperm gateway XDEL q:auth 0-1
check "redis: mail-ingest may not XDEL q:ticket (a queue it sends to)" noperm mail-ingest XDEL q:ticket 0-1
check "redis: auth may not XDEL q:ticket (another service's queue)" noperm auth XDEL q:ticket 0-1
check "redis: auth may not XDEL q:audit (a queue it sends to)" noperm auth XDEL q:audit 0-1
check "redis: ticket may not XDEL q:auth" noperm ticket XDEL q:auth 0-1
check "redis: auth may not XDEL its dead letters (dl:auth)" noperm auth XDEL dl:auth 0-1
check "redis: auth may not XDEL the gateway's replies" noperm auth XDEL r:gateway:gateway-1 0-1
check "redis: ops may not XDEL a queue" noperm ops XDEL q:auth 0-1
check "redis: status may not XDEL a queue" noperm status XDEL q:auth 0-1
check "redis: gateway may INCR its rate-limit counters" bash -c "rcli $r gateway INCR rl:gateway:e2e | grep -qv NOPERM"
check "redis: gateway may not SET its rate-limit counters (INCR/PEXPIRE/GET only)" noperm gateway SET rl:gateway:e2e 0
check "redis: gateway may not touch another service's counters" noperm gateway INCR rl:auth:e2e
check "redis: auth may not touch the gateway's rate-limit counters" noperm auth INCR rl:gateway:e2e
check "redis: mail-ingest may not reset the gateway's rate limits" noperm mail-ingest DEL rl:gateway:e2e
check "redis: gateway may XADD to q:auth (its route)" bash -c "rcli $r gateway XADD q:auth MAXLEN '~' 100000 '*' e junk | grep -qv NOPERM"
# That junk entry cannot be opened: ward-auth dead-letters it and goes on.
check "redis: a forged entry on q:auth is dead-lettered by ward-auth" \
	wait_for 10 bash -c "[ \$(rcli $r admin XLEN dl:auth) -ge 1 ]"
check "redis: ward-auth still answers after the forged entry" "$BIN/wardctl" ping --region $r --service auth

# ---- PostgreSQL: roles per service, grants per policy, RLS, no credential for the edge.
for s in gateway mail-ingest mail-out; do
	refuse "postgres: $s has no database credential file" test -e "$WARD_VAR/$r/secrets/pg-$s"
	refuse "postgres: role ward_${s//-/_} cannot log in" \
		bash -c "PGPASSWORD=x psql -X -tA 'host=127.0.0.1 port=$(port_of $r PG) dbname=ward user=ward_${s//-/_}' -c 'select 1'"
	refuse "config: ward-$s refuses to start with a postgres section" \
		bash -c "cp $WARD_VAR/$r/etc/$s.yaml /tmp/bad-$s.yaml && printf 'postgres:\n  conninfo: \"dbname=ward\"\n' >> /tmp/bad-$s.yaml && chmod 644 /tmp/bad-$s.yaml && runuser -u $WUSER -- $BIN/ward-$s --config /tmp/bad-$s.yaml --check-config"
done
check "postgres: ward_auth reads its own schema" pg_as $r ward_auth "SELECT count(*) FROM auth.users"
refuse "postgres: ward_auth is denied ticket.processed" pg_as $r ward_auth "SELECT count(*) FROM ticket.processed"
refuse "postgres: ward_auth is denied audit.events" pg_as $r ward_auth "SELECT count(*) FROM audit.events"
refuse "postgres: ward_auth cannot write tenant.keys" pg_as $r ward_auth "DELETE FROM tenant.keys"
# ward_ticket may read id, tenant_id, email_bidx and role of auth.users (policy.yaml columns:), nothing else
refuse "postgres: ward_ticket is denied auth.users' sealed emails" pg_as $r ward_ticket "SELECT email_enc FROM auth.users"
refuse "postgres: ward_ticket is denied auth.users' password hashes" pg_as $r ward_ticket "SELECT password_hash FROM auth.users"
refuse "postgres: ward_ticket is denied SELECT * on auth.users" pg_as $r ward_ticket "SELECT * FROM auth.users"
refuse "postgres: ward_ticket cannot write auth.users" pg_as $r ward_ticket "UPDATE auth.users SET role = 'admin'"
refuse "postgres: ward_backup cannot write auth.users" pg_as $r ward_backup "DELETE FROM auth.users"
# GDPR erase (060_gdpr.sql): ward_audit deletes details beside the chain, never events.
check "postgres: ward_audit may delete audit.event_details (GDPR erase)" pg_as $r ward_audit "DELETE FROM audit.event_details WHERE false"
refuse "postgres: ward_audit cannot UPDATE audit.event_details" pg_as $r ward_audit "UPDATE audit.event_details SET detail_enc = '' WHERE false"
refuse "postgres: ward_audit cannot rewrite audit.erasures" pg_as $r ward_audit "DELETE FROM audit.erasures WHERE false"
refuse "postgres: ward_ticket is denied audit.event_details" pg_as $r ward_ticket "SELECT count(*) FROM audit.event_details"
refuse "postgres: ward_auth cannot create tables in public" pg_as $r ward_auth "CREATE TABLE public.x (i int)"
refuse "postgres: ward_auth cannot create a schema" pg_as $r ward_auth "CREATE SCHEMA evil"
ta=$(pg_super $r "SELECT gen_random_uuid()")
check "postgres: ward_audit may INSERT an event (under RLS, in its tenant)" pg_as $r ward_audit \
	"BEGIN; SELECT set_config('app.tenant_id', '$ta', true); INSERT INTO audit.events (id, tenant_id, at, type, action, actor, seq, hash) VALUES (gen_random_uuid(), '$ta', now(), 'test', 'insert', 'e2e', 1, sha256('h')); COMMIT;"
refuse "postgres: ward_audit may not UPDATE events" pg_as $r ward_audit "UPDATE audit.events SET actor = 'x'"
refuse "postgres: ward_audit may not DELETE events" pg_as $r ward_audit "DELETE FROM audit.events"
refuse "postgres: ward_audit may not TRUNCATE events" pg_as $r ward_audit "TRUNCATE audit.events"
refuse "postgres: even the superuser's UPDATE of an event is refused by the trigger" pg_super $r "UPDATE audit.events SET actor = 'x'"
refuse "postgres: even the superuser's DELETE of an event is refused by the trigger" pg_super $r "DELETE FROM audit.events"
for role in ward_auth ward_ticket ward_audit ward_backup ward_ops; do
	check "postgres: $role is neither superuser nor BYPASSRLS" \
		bash -c "[ \"\$(pg_super $r \"SELECT rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb FROM pg_roles WHERE rolname = '$role'\")\" = f ]"
done
check "postgres: no table is owned by a service role" \
	bash -c "[ \"\$(pg_super $r \"SELECT count(*) FROM pg_tables WHERE tableowner LIKE 'ward_%'\")\" = 0 ]"

# RLS: two tenants' users; ward_auth sees only the tenant set for its transaction.
t1=$(pg_super $r "SELECT gen_random_uuid()"); t2=$(pg_super $r "SELECT gen_random_uuid()")
pg_super $r "INSERT INTO tenant.tenants (id, slug, name, region) VALUES ('$t1', 'rls-a-$$', 'A', '$r'), ('$t2', 'rls-b-$$', 'B', '$r')" >/dev/null
pg_super $r "INSERT INTO auth.users (id, tenant_id, email_enc, email_bidx, role) VALUES (gen_random_uuid(), '$t1', '\x00', repeat('a', 64), 'agent'), (gen_random_uuid(), '$t2', '\x00', repeat('b', 64), 'agent')" >/dev/null
check "postgres: RLS shows ward_auth its tenant's row" \
	bash -c "[ \"\$(pg_as $r ward_auth \"BEGIN; SELECT set_config('app.tenant_id', '$t1', true); SELECT string_agg(left(email_bidx, 3), ',') FROM auth.users WHERE email_bidx IN (repeat('a', 64), repeat('b', 64)); COMMIT;\" | tail -1)\" = aaa ]"
check "postgres: RLS hides every row when no tenant is set" \
	bash -c "[ \"\$(pg_as $r ward_auth \"SELECT count(*) FROM auth.users\")\" = 0 ]"
refuse "postgres: RLS refuses ward_auth inserting a row for another tenant" pg_as $r ward_auth \
	"BEGIN; SELECT set_config('app.tenant_id', '$t1', true); INSERT INTO auth.users (id, tenant_id, email_enc, email_bidx, role) VALUES (gen_random_uuid(), '$t2', '\x00', repeat('c', 64), 'agent'); COMMIT;"
pg_super $r "DELETE FROM auth.users WHERE email_bidx IN (repeat('a', 64), repeat('b', 64), repeat('c', 64))" >/dev/null
pg_super $r "DELETE FROM tenant.tenants WHERE id IN ('$t1', '$t2')" >/dev/null

# Cells are separate: one cell's credentials open no other cell's database.
refuse "postgres: eu's ward_auth password does not open the us database" \
	bash -c "PGPASSWORD=\$(cat $WARD_VAR/eu/secrets/pg-auth) psql -X -tA 'host=127.0.0.1 port=$(port_of us PG) dbname=ward user=ward_auth' -c 'select 1'"
refuse "redis: eu's auth password does not open us's Redis" \
	bash -c "REDISCLI_AUTH=\$(cat $WARD_VAR/eu/secrets/redis-auth) redis-cli --no-auth-warning --user auth -h 127.0.0.1 -p $(port_of us REDIS) PING | grep -q PONG"
refuse "keys: eu and us have different KEKs" cmp -s "$WARD_VAR/eu/secrets/kek" "$WARD_VAR/us/secrets/kek"

# Route keys: each service holds only its routes.
refuse "keys: gateway holds no key of the auth -> q:audit route" grep -q '^auth q:audit ' "$WARD_VAR/$r/secrets/routes-gateway"
refuse "keys: mail-ingest holds no key of the gateway -> q:auth route" grep -q '^gateway q:auth ' "$WARD_VAR/$r/secrets/routes-mail-ingest"
check "keys: auth holds the gateway -> q:auth route" grep -q '^gateway q:auth ' "$WARD_VAR/$r/secrets/routes-auth"
set +f
for f in "$WARD_VAR/$r/secrets/"*; do
	check "secrets: $(basename "$f") is mode 0600" bash -c "[ \$(stat -c %a '$f') = 600 ]"
done
