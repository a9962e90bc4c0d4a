#!/usr/bin/env bash
# tests/bench/ticket.sh — ticket throughput through the full path (HTTPS → gateway →
# Redis → ward-ticket → PostgreSQL → reply) with wrk, beside baselines measured in
# the same run (SPEC §5 lines):
#   ticket_create_rps / _p99   POST /api/v1/tickets (an API key with tickets:write),
#                              against pgbench's durable single-row INSERT rate on
#                              the same PostgreSQL, same client count (target ≥ 0.5)
#   ticket_get_rps / _p99      GET /api/v1/tickets/{id}, against nginx's static 200
#                              over HTTPS (same certificate, one worker; target ≥ 0.5)
#   ticket_list_rps / _p99     GET /api/v1/tickets?limit=25 (25 tickets decrypted per
#                              answer), same baseline
#   rss_<daemon>_under_load    RSS of each daemon of the cell, sampled during the
#                              create run: its largest process (workers; target
#                              < 64 MiB each)
#   ticket_crypto_cpu_share    share of ward-ticket's CPU samples in OpenSSL/crypto
#                              during the create run (perf, when it may record)
#   redis_xadd_rps_c<C>        the ceilings of the path's hops on this machine, at the
#   ticket_get_ceiling_two_xadds same client count (tests/bench/lib.sh): XADDs/s that
#   pg_pk_select_tps_c<C>      the cell's Redis (appendfsync always) accepts, half of
#                              it (a request and its reply: the most requests/s any
#                              path through one queue hop can reach, before any other
#                              work), and pgbench -S's primary-key SELECTs/s
#   ticket_{create,get}_cpu_us_<part>  CPU time per request of each daemon, Redis
#                              and PostgreSQL during the create and get runs (µs):
#                              where a request's cost goes
#   redis_used_memory_after    Redis's used_memory after the runs, the queues' XLEN
#   redis_xlen_q_<svc>         (consumers delete what they acked: 0 unless a backlog),
#   redis_aof_*, _stream_cmd_usec  AOF rewrites and size, µs in stream commands
# Consumers XDEL what they acked (h/xdel, 2026-11-30; BENCH_WORKERS=4, 10 s runs,
# 3 runs each side alternating, a loaded 2-core machine): used_memory after the
# runs 11.6–17.2 MB with 11.9k–22.8k entries left in q:ticket before, 5.5 MB with
# XLEN 0 after; Redis CPU per request unchanged within the noise (create 311–416
# µs before, 341–414 after; get 167–228 before, 173–231 after), stream commands
# 40 vs 43 µs per request (commandstats), no AOF rewrite in either 10 s run.
# The eu gateway's rate limits are raised for the run (and restored), as in
# tests/bench/gateway.sh: at their defaults they would cap the measurement.
# ward-ticket runs BENCH_WORKERS worker processes (default 4, `workers:` in its
# config, restored after the run).
# Uses the stack of $WARD_VAR if set, else starts its own.
set -uo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
cd "$TOP"
DUR=${BENCH_TICKET_SECONDS:-10}
C=${BENCH_TICKET_CONNECTIONS:-32}
WORKERS=${BENCH_WORKERS:-4}
. "$TOP/tests/bench/lib.sh"
bench_stack
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "bench: wrk and nginx needed (ops/deps)" >&2; exit 1; }

P=${WARD_EU_HTTPS##*:}
PG=$WARD_EU_PG
W=$(mktemp -d /tmp/ward-bench-ticket.XXXXXX)
chmod 755 "$W"
CONF=$WARD_VAR/eu/etc/gateway.yaml
cp "$CONF" "$W/gateway.yaml.orig"
TCONF=$WARD_VAR/eu/etc/ticket.yaml
cp "$TCONF" "$W/ticket.yaml.orig"
NGINX_PID=

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "0" }'; }
line() { echo "BENCH name=$1 value=$2 unit=$3 baseline=$4 baseline_value=$5 ratio=$6"; }
rps_of() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
p99_of() { # wrk --latency: "     99%    1.23ms" → ms
	awk '$1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
		if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000;
		printf "%.3f", v }' "$1"
}
non2xx() { awk '/Non-2xx or 3xx responses:/ { print $5 }' "$1"; }
psql_() { psql -X -q -tA -c "SET client_min_messages = warning" -v ON_ERROR_STOP=1 "$PG" -c "$1"; }
# The pids of a daemon: its own and its workers'.
pids_of() { local p; p=$(cat "$WARD_VAR/eu/run/$1.pid" 2>/dev/null) || return; echo "$p" $(pgrep -P "$p"); }
cleanup() {
	[ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null
	cp "$W/gateway.yaml.orig" "$CONF"
	bench_restart_gateway >/dev/null 2>&1
	if ! cmp -s "$W/ticket.yaml.orig" "$TCONF"; then
		cp "$W/ticket.yaml.orig" "$TCONF"
		bench_restart_svc ticket >/dev/null 2>&1
	fi
	rm -rf "$W"
	[ $OWN = 1 ] && stack_down
}
trap cleanup EXIT

{
	cat "$W/gateway.yaml.orig"
	printf 'ratelimit:\n  per_source: 100000000\n  per_source_tenant: 100000000\n  per_credential: 100000000\n'
} >"$CONF"
bench_restart_gateway || { echo "bench: the gateway did not restart" >&2; exit 1; }
if [ "$WORKERS" -gt 1 ]; then
	{ grep -v '^workers:' "$W/ticket.yaml.orig"; echo "workers: $WORKERS"; } >"$TCONF"
	bench_restart_svc ticket || { echo "bench: ward-ticket did not restart with $WORKERS workers" >&2; exit 1; }
fi

# A tenant, its admin's session, and an API key with tickets:read and tickets:write.
SLUG=benchtk$$
HOST=$SLUG.eu.$WARD_DOMAIN
URL=https://$HOST:$P
cu() { curl -sS --max-time 20 --cacert "$WARD_CA" --resolve "$HOST:$P:127.0.0.1" -H "Origin: $URL" "$@"; }
KEY=$(bench_api_key "$SLUG" "Bench Ticket" "$W/jar")
[ -n "$KEY" ] || { echo "bench: no API key (login, password change or api-keys failed)" >&2; exit 1; }
TID=$(cu -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
	-d '{"subject":"bench seed","body":"seed"}' "$URL/api/v1/tickets" | sed -n 's/^{"id":"\([^"]*\)".*/\1/p')
[ -n "$TID" ] || { echo "bench: ticket create failed" >&2; exit 1; }
for i in $(seq 30); do
	cu -o /dev/null -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
		-d "{\"subject\":\"seed $i\",\"body\":\"seed body $i\"}" "$URL/api/v1/tickets"
done

cat >"$W/create.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"subject":"Printer on fire","body":"The printer in room 4 is on fire again. Please help."}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.headers["Host"] = "$HOST:$P"
LUA
HDR=(-H "Host: $HOST:$P" -H "Authorization: Bearer $KEY")

# Baseline 1: durable single-row inserts with pgbench, the same client count.
psql_ "DROP TABLE IF EXISTS public.bench_ticket_scratch; CREATE TABLE public.bench_ticket_scratch (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), subject bytea NOT NULL, body bytea NOT NULL)"
echo "INSERT INTO public.bench_ticket_scratch (subject, body) VALUES (decode(md5(random()::text), 'hex'), decode(md5(random()::text) || md5(random()::text), 'hex'));" >"$W/pgb.sql"
pgb=$(/usr/lib/postgresql/15/bin/pgbench -n -f "$W/pgb.sql" -c "$C" -j 4 -T "$DUR" "$PG" 2>/dev/null |
	sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
psql_ "DROP TABLE public.bench_ticket_scratch"

# Baseline 2: nginx, a static 200 over HTTPS, same certificate, one worker.
NP=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$W/nginx/logs"
cp "$WARD_VAR/tls/eu.pem" "$WARD_VAR/tls/eu.key" "$W/nginx/"
cat >"$W/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $W/nginx/nginx.pid;
error_log $W/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	keepalive_requests 1000000;
	ssl_protocols TLSv1.2 TLSv1.3;
	server {
		listen 127.0.0.1:$NP ssl;
		ssl_certificate $W/nginx/eu.pem;
		ssl_certificate_key $W/nginx/eu.key;
		location / { return 200 "ok\n"; }
	}
}
CONF
nginx -p "$W/nginx" -c "$W/nginx/nginx.conf" >"$W/nginx/logs/stdout" 2>&1 &
NGINX_PID=$!
for _ in $(seq 50); do curl -sk --max-time 2 -o /dev/null "https://127.0.0.1:$NP/" && break; sleep 0.1; done
wrk -t2 -c"$C" -d"${DUR}s" --latency "https://127.0.0.1:$NP/" >"$W/nginx.out" 2>&1
nrps=$(rps_of "$W/nginx.out")
np99=$(p99_of "$W/nginx.out")
# The hops' own ceilings on this machine (tests/bench/lib.sh), at the same client count.
xadd=$(bench_xadd_rps "$C")
pks=$(bench_pk_select_tps "$C")

# Create, with RSS sampled and (if perf may record) ward-ticket's CPU profiled midway.
TPIDS=$(pids_of ticket | tr ' ' ',')
before=$(psql_ "SELECT count(*) FROM ticket.tickets")
bench_cpu_take >"$W/cpu.create"
wrk -t2 -c"$C" -d"${DUR}s" --latency -s "$W/create.lua" "https://127.0.0.1:$P/api/v1/tickets" >"$W/create.out" 2>&1 &
WRK=$!
sleep $((DUR / 2))
for s in gateway auth ticket audit mail-ingest backup; do
	for p in $(pids_of $s); do awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null; done |
		sort -n | tail -1 >"$W/rss.$s"
done
share=
if command -v perf >/dev/null && perf record -q -F 999 -g -p "$TPIDS" -o "$W/perf.data" -- sleep 3 >/dev/null 2>&1; then
	share=$(perf report -i "$W/perf.data" --no-children --sort dso --stdio 2>/dev/null |
		awk '/^ *[0-9.]+%/ { p = $1; sub(/%/, "", p); t += p; if ($0 ~ /libcrypto|libssl/) c += p }
			END { if (t > 0) printf "%.3f", c / t; }')
fi
wait $WRK
after=$(psql_ "SELECT count(*) FROM ticket.tickets")
ccpu=$(bench_cpu_per "$W/cpu.create" "$((after - before))" ticket_create_cpu_us us/request 1000000)
crps=$(rps_of "$W/create.out")
[ -n "$(non2xx "$W/create.out")" ] && echo "bench: $(non2xx "$W/create.out") non-2xx answers to create" >&2
line ticket_create_rps "${crps:-0}" req/s pgbench_insert_c$C "${pgb:-0}" "$(ratio "${crps:-0}" "${pgb:-0}")"
line ticket_create_p99 "$(p99_of "$W/create.out")" ms none 0 0
line ticket_create_stored "$((after - before))" tickets none 0 0

bench_cpu_take >"$W/cpu.get"
wrk -t2 -c"$C" -d"${DUR}s" --latency "${HDR[@]}" "https://127.0.0.1:$P/api/v1/tickets/$TID" >"$W/get.out" 2>&1
grps=$(rps_of "$W/get.out")
gcpu=$(bench_cpu_per "$W/cpu.get" "$(awk '/requests in/ { print $1 }' "$W/get.out")" ticket_get_cpu_us us/request 1000000)
[ -n "$(non2xx "$W/get.out")" ] && echo "bench: $(non2xx "$W/get.out") non-2xx answers to get" >&2
line ticket_get_rps "${grps:-0}" req/s nginx_static_200_rps "${nrps:-0}" "$(ratio "${grps:-0}" "${nrps:-0}")"
half=$(awk -v x="${xadd:-0}" 'BEGIN { printf "%.1f", x / 2 }')
line redis_xadd_rps_c$C "${xadd:-0}" req/s nginx_static_200_rps "${nrps:-0}" "$(ratio "${xadd:-0}" "${nrps:-0}")"
line ticket_get_ceiling_two_xadds "$half" req/s nginx_static_200_rps "${nrps:-0}" "$(ratio "$half" "${nrps:-0}")"
line pg_pk_select_tps_c$C "${pks:-0}" tps nginx_static_200_rps "${nrps:-0}" "$(ratio "${pks:-0}" "${nrps:-0}")"
line ticket_get_p99 "$(p99_of "$W/get.out")" ms nginx_static_200_p99 "${np99:-0}" "$(ratio "$(p99_of "$W/get.out")" "${np99:-0}")"

wrk -t2 -c"$C" -d"${DUR}s" --latency "${HDR[@]}" "https://127.0.0.1:$P/api/v1/tickets?limit=25" >"$W/list.out" 2>&1
lrps=$(rps_of "$W/list.out")
[ -n "$(non2xx "$W/list.out")" ] && echo "bench: $(non2xx "$W/list.out") non-2xx answers to list" >&2
line ticket_list25_rps "${lrps:-0}" req/s nginx_static_200_rps "${nrps:-0}" "$(ratio "${lrps:-0}" "${nrps:-0}")"
line ticket_list25_p99 "$(p99_of "$W/list.out")" ms nginx_static_200_p99 "${np99:-0}" "$(ratio "$(p99_of "$W/list.out")" "${np99:-0}")"

# Redis after the runs: its memory (INFO used_memory) and what its queues hold
# (XLEN: handled entries are deleted by their consumers, only a backlog stays).
rport=${WARD_EU_REDIS##*:}
rinfo() { REDISCLI_AUTH=$(cat "$WARD_VAR/eu/secrets/redis-admin") redis-cli --no-auth-warning --user admin -p "$rport" "$@"; }
line redis_used_memory_after "$(rinfo INFO memory | tr -d '\r' | sed -n 's/^used_memory://p')" bytes none 0 0
for q in ticket audit auth; do
	line "redis_xlen_q_$q" "$(rinfo XLEN "q:$q")" entries none 0 0
done
# Since the stack started: AOF rewrites and the AOF's size (every XDEL is logged
# too), and Redis's time in stream commands (INFO commandstats, µs).
line redis_aof_rewrites "$(rinfo INFO persistence | tr -d '\r' | sed -n 's/^aof_rewrites://p')" rewrites none 0 0
line redis_aof_current_size "$(rinfo INFO persistence | tr -d '\r' | sed -n 's/^aof_current_size://p')" bytes none 0 0
line redis_stream_cmd_usec "$(rinfo INFO commandstats | tr -d '\r' |
	awk -F'[=,]' '/^cmdstat_x/ { t += $4 } END { print t + 0 }')" us none 0 0

for s in gateway auth ticket audit mail-ingest backup; do
	[ -s "$W/rss.$s" ] || continue
	kb=$(cat "$W/rss.$s")
	line "rss_${s//-/_}_under_load" "$kb" KiB target_64MiB 65536 "$(ratio "$kb" 65536)"
done
if [ -n "$share" ]; then
	line ticket_crypto_cpu_share "$share" fraction none 0 0
else
	echo "bench: perf could not record ward-ticket (perf_event_paranoid?): no crypto share" >&2
fi
printf '%s\n%s\n' "$ccpu" "$gcpu"
exit 0
