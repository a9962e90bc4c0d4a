#!/usr/bin/env bash
# tests/bench/audit.sh — audit ingestion beside its baselines, in the same run on
# the same cell (SPEC §5 BENCH lines):
#   audit_ingest      events/s from a service outbox through the relay, q:audit
#                     and ward-audit into the hash chain (N events committed at
#                     once, timed until the last is stored)
#   pgbench_insert    pgbench, custom script: one durable INSERT per transaction
#                     into a scratch table, C clients, same PostgreSQL
#   redis_xadd        redis-benchmark XADD on the cell's Redis, C clients
# Target: audit_ingest >= 0.5 x pgbench_insert (the relay sends batches of 256,
# ward-audit stores a batch in one transaction).
set -uo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
cd "$TOP"
. "$TOP/tests/stack.sh"
N=${BENCH_AUDIT_N:-20000}
C=${BENCH_CONCURRENCY:-8}
T=${BENCH_SECONDS:-5}
own_stack=0
if [ -z "${WARD_VAR:-}" ] || [ ! -f "${WARD_VAR:-/nonexistent}/devstack.env" ]; then
	stack_up || { echo "bench: the dev stack did not start" >&2; stack_down; exit 1; }
	own_stack=1
fi
set -a; . "$WARD_VAR/devstack.env"; set +a
r=eu
pg=$WARD_EU_PG
rport=${WARD_EU_REDIS##*:}
radmin=$(cat "$WARD_VAR/$r/secrets/redis-admin")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "0" }'; }
line() { echo "BENCH name=$1 value=$2 unit=$3 baseline=$4 baseline_value=$5 ratio=$6"; }
psql_() { psql -X -q -tA -c "SET client_min_messages = warning" -v ON_ERROR_STOP=1 "$pg" -c "$1"; }
now_ms() { date +%s%3N; }

# Baseline 1: durable single-row inserts with pgbench.
psql_ "DROP TABLE IF EXISTS public.bench_scratch; CREATE TABLE public.bench_scratch (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), actor text NOT NULL, payload text NOT NULL)"
script=$(mktemp)
echo "INSERT INTO public.bench_scratch (actor, payload) VALUES ('user:' || :client_id, md5(random()::text));" >"$script"
pgb=$(/usr/lib/postgresql/15/bin/pgbench -n -f "$script" -c "$C" -j "$C" -T "$T" "$pg" 2>/dev/null |
	sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
rm -f "$script"
psql_ "DROP TABLE public.bench_scratch"

# Baseline 2: XADD on the same Redis.
xadd=$(redis-benchmark -h 127.0.0.1 -p "$rport" --user admin -a "$radmin" -n 50000 -c "$C" -P 1 --csv \
	XADD bench:audit-baseline '*' e 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef 2>/dev/null |
	tail -1 | awk -F'","' '{ gsub(/"/, "", $2); print $2 }')
redis-cli --no-auth-warning --user admin -a "$radmin" -p "$rport" DEL bench:audit-baseline >/dev/null

# Ward: N events committed into ward-backup's outbox at once (as actions would
# leave them), timed until ward-audit has chained and stored the last one.
tenant=$(psql_ "SELECT id FROM tenant.tenants ORDER BY created_at LIMIT 1")
before=$(psql_ "SELECT count(*) FROM audit.events")
t0=$(now_ms)
psql_ "INSERT INTO backup.outbox (id, at_ms, tenant_id, type, action, actor, target, detail_json)
	SELECT md5(random()::text || g), (extract(epoch FROM now()) * 1000)::bigint, '$tenant', 'bench', 'ingest',
	       'service:backup', 'bench:' || g, '{\"n\":' || g || '}' FROM generate_series(1, $N) g"
want=$((before + N))
for i in $(seq 1200); do
	[ "$(psql_ "SELECT count(*) FROM audit.events")" -ge "$want" ] && break
	sleep 0.1
done
t1=$(now_ms)
got=$(( $(psql_ "SELECT count(*) FROM audit.events") - before ))
rate=$(awk -v n="$got" -v ms="$((t1 - t0))" 'BEGIN { printf "%.1f", (ms > 0) ? n * 1000 / ms : 0 }')
[ "$got" -lt "$N" ] && echo "bench: only $got of $N audit events stored in time" >&2
line audit_ingest_hash_chain "$rate" events/s pgbench_insert_c$C "${pgb:-0}" "$(ratio "$rate" "${pgb:-0}")"
line redis_xadd_c$C "${xadd:-0}" req/s none 0 0
line pgbench_insert_c$C "${pgb:-0}" tps none 0 0
verify=$(WARD_CONFIG=$WARD_VAR/wardctl.yaml bin/wardctl audit verify --region $r --tenant "$(psql_ "SELECT slug FROM tenant.tenants WHERE id = '$tenant'")")
echo "$verify" | grep -q '"ok":true' || echo "bench: the chain does not verify after the run: $verify" >&2
[ $own_stack = 1 ] && stack_down
exit 0
