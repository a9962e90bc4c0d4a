#!/usr/bin/env bash
# tests/bench/gateway.sh — the gateway under load, beside nginx in the same run:
#   gateway_<route>_rps / _p99   wrk over HTTPS keep-alive (-t2 -c64), against nginx
#                                answering a static 200 over HTTPS on the same machine
#                                (one worker, same TLS protocols and suites: the
#                                gateway is one event loop too)
#   redis_xadd_rps_c64,        XADDs/s of the cell's Redis (appendfsync always) at the
#   <route>_ceiling_two_xadds  same client count, and half of it: a request through a
#                              queue hop (request + reply) can go no faster
#   gateway_pipeline_401_rps     the gateway alone: the same route without a credential
#                                (rate-limit check, cached tenant, 401), same baseline
#   gateway_rss_256conn          the gateway's RSS with 256 keep-alive connections busy
#                                (target < 64 MiB)
#   gateway_login_rps            POST /api/v1/auth/login (right password) over HTTPS,
#                                wrk -t2 -c4, against a C loop of argon2id_hash_raw with
#                                the stored hash's parameters on this machine (one
#                                hash per login is the floor); the Argon2id cost
#                                parameters are printed beside it (BENCH_INFO line)
# The route is GET /api/v1/users/me with a session cookie (login as a fresh tenant's
# admin) — authenticated, rate-limited and routed to ward-auth; /healthz if login is
# unavailable. The eu gateway's rate limits are raised for the run (and restored):
# at their defaults (600/min per credential) they would cap the measurement itself;
# the Redis round trip of every check is still paid. ward-auth runs BENCH_WORKERS
# worker processes for the run (default 4, `workers:` in its config, restored).
#
# Uses the stack of $WARD_VAR if set (tests/bench/run), else starts its own.
set -uo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
cd "$TOP"
DUR=${BENCH_GW_SECONDS:-10}
WORKERS=${BENCH_WORKERS:-4}
. "$TOP/tests/bench/lib.sh"
bench_stack
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "bench: wrk and nginx needed (ops/deps)" >&2; exit 1; }

P=${WARD_EU_HTTPS##*:}
W=$(mktemp -d /tmp/ward-bench-gw.XXXXXX)
CONF=$WARD_VAR/eu/etc/gateway.yaml
cp "$CONF" "$W/gateway.yaml.orig"
ACONF=$WARD_VAR/eu/etc/auth.yaml
cp "$ACONF" "$W/auth.yaml.orig"
NGINX_PID=

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "0" }'; }
line() { echo "BENCH name=$1 value=$2 unit=$3 baseline=$4 baseline_value=$5 ratio=$6"; }
rps_of() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
p99_of() { # wrk --latency: "     99%    1.23ms" → ms
	awk '$1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
		if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000;
		printf "%.3f", v }' "$1"
}
cleanup() {
	[ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null
	cp "$W/gateway.yaml.orig" "$CONF"
	bench_restart_gateway >/dev/null 2>&1
	if ! cmp -s "$W/auth.yaml.orig" "$ACONF"; then
		cp "$W/auth.yaml.orig" "$ACONF"
		bench_restart_svc auth >/dev/null 2>&1
	fi
	rm -rf "$W"
	[ $OWN = 1 ] && stack_down
}
trap cleanup EXIT

# Rate limits out of the way (the check itself still runs).
{
	cat "$W/gateway.yaml.orig"
	printf 'ratelimit:\n  per_source: 100000000\n  per_source_tenant: 100000000\n  per_credential: 100000000\n  login_per_source: 100000\n'
} >"$CONF"
bench_restart_gateway || { echo "bench: the gateway did not restart" >&2; exit 1; }
if [ "$WORKERS" -gt 1 ]; then
	{ grep -v '^workers:' "$W/auth.yaml.orig"; echo "workers: $WORKERS"; } >"$ACONF"
	bench_restart_svc auth || { echo "bench: ward-auth did not restart with $WORKERS workers" >&2; exit 1; }
fi

# An authenticated session, if auth.login is there.
SLUG=benchgw$$
HOST=$SLUG.eu.$WARD_DOMAIN
PW=$(bin/wardctl tenant create --slug "$SLUG" --region eu --name "Bench GW" --admin-email "admin@$SLUG.example" 2>/dev/null |
	sed -n 's/.*"admin_password": *"\([^"]*\)".*/\1/p')
COOKIE=
if [ -n "$PW" ]; then
	COOKIE=$(curl -sS --max-time 10 --cacert "$WARD_CA" --resolve "$HOST:$P:127.0.0.1" -D - -o "$W/login.json" \
		-H 'Content-Type: application/json' -d "{\"email\":\"admin@$SLUG.example\",\"password\":\"$PW\"}" \
		"https://$HOST:$P/api/v1/auth/login" | sed -n 's/^[Ss]et-[Cc]ookie: *\(ward_session=[^;]*\);.*/\1/p' | tr -d '\r')
	# The one-time password must be changed before the session may do anything
	# else (and a pending session's answers are not cached): change it.
	NEWPW="$PW-Bench-9"
	CSRF=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["csrf_token"])' "$W/login.json" 2>/dev/null)
	# The change replaces the session (a new cookie): keep that one.
	COOKIE=$(curl -sS --max-time 10 --cacert "$WARD_CA" --resolve "$HOST:$P:127.0.0.1" -D - -o /dev/null \
		-H 'Content-Type: application/json' -H "Cookie: $COOKIE" -H "X-CSRF-Token: $CSRF" \
		-H "Origin: https://$HOST:$P" -d "{\"current_password\":\"$PW\",\"new_password\":\"$NEWPW\"}" \
		"https://$HOST:$P/api/v1/auth/password" | sed -n 's/^[Ss]et-[Cc]ookie: *\(ward_session=[^;]*\);.*/\1/p' | tr -d '\r')
fi
if [ -n "$COOKIE" ] && [ "$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$WARD_CA" --resolve "$HOST:$P:127.0.0.1" \
	-H "Cookie: $COOKIE" "https://$HOST:$P/api/v1/users/me")" = 200 ]; then
	NAME=gateway_users_me
	PATH_=/api/v1/users/me
	HDR=(-H "Host: $HOST:$P" -H "Cookie: $COOKIE")
else
	echo "bench: no session (auth.login unavailable): measuring /healthz instead" >&2
	NAME=gateway_healthz
	PATH_=/healthz
	HOST=eu.$WARD_DOMAIN
	HDR=(-H "Host: $HOST:$P")
fi

# nginx: a static 200 over HTTPS, same certificate, protocols and suites, one worker.
NP=$((P + 7))
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
	ssl_ciphers ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256;
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
for _ in $(seq 50); do curl -sk -o /dev/null "https://127.0.0.1:$NP/" && break; sleep 0.1; done

wrk -t2 -c64 -d"${DUR}s" --latency "https://127.0.0.1:$NP/" >"$W/nginx.out" 2>&1
wrk -t2 -c64 -d"${DUR}s" --latency "${HDR[@]}" "https://127.0.0.1:$P$PATH_" >"$W/gw.out" 2>&1
nrps=$(rps_of "$W/nginx.out")
grps=$(rps_of "$W/gw.out")
non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' "$W/gw.out")
[ -n "$non2xx" ] && echo "bench: $non2xx non-2xx answers from the gateway" >&2
line "${NAME}_rps" "${grps:-0}" req/s nginx_static_200_rps "${nrps:-0}" "$(ratio "${grps:-0}" "${nrps:-0}")"
line "${NAME}_p99" "$(p99_of "$W/gw.out")" ms nginx_static_200_p99 "$(p99_of "$W/nginx.out")" \
	"$(ratio "$(p99_of "$W/gw.out")" "$(p99_of "$W/nginx.out")")"
# The queue hop's ceiling (tests/bench/lib.sh): half the XADDs/s of the cell's Redis
# (appendfsync always) at the same client count: a request and its reply.
xadd=$(bench_xadd_rps 64)
half=$(awk -v x="${xadd:-0}" 'BEGIN { printf "%.1f", x / 2 }')
line redis_xadd_rps_c64 "${xadd:-0}" req/s nginx_static_200_rps "${nrps:-0}" "$(ratio "${xadd:-0}" "${nrps:-0}")"
line "${NAME}_ceiling_two_xadds" "$half" req/s nginx_static_200_rps "${nrps:-0}" "$(ratio "$half" "${nrps:-0}")"

# The gateway's own pipeline without a service behind it: host, rate-limit check in
# Redis, tenant (cached), route, 401 for the missing credential.
if [ "$NAME" = gateway_users_me ]; then
	wrk -t2 -c64 -d"${DUR}s" --latency -H "Host: $HOST:$P" "https://127.0.0.1:$P/api/v1/users/me" >"$W/gw401.out" 2>&1
	r401=$(rps_of "$W/gw401.out")
	line gateway_pipeline_401_rps "${r401:-0}" req/s nginx_static_200_rps "${nrps:-0}" "$(ratio "${r401:-0}" "${nrps:-0}")"
fi

# RSS with 256 busy keep-alive connections, sampled in the middle of the run.
wrk -t4 -c256 -d6s "${HDR[@]}" "https://127.0.0.1:$P$PATH_" >"$W/gw256.out" 2>&1 &
WRK=$!
sleep 4
kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$(bench_gw_pid)/status")
wait $WRK
line gateway_rss_256conn "${kb:-0}" KiB target_64MiB 65536 "$(ratio "${kb:-0}" 65536)"

# Logins per second: each one verifies the password with Argon2id (bounded by design).
if [ "$NAME" = gateway_users_me ]; then
	PHC=$(psql -X -q -tA "$WARD_EU_PG" -c "SELECT password_hash FROM auth.users WHERE password_hash LIKE '\$argon2id\$%' ORDER BY created_at DESC LIMIT 1" 2>/dev/null)
	m=$(echo "$PHC" | sed -n 's/.*[$,]m=\([0-9]*\).*/\1/p'); t=$(echo "$PHC" | sed -n 's/.*[$,]t=\([0-9]*\).*/\1/p')
	p=$(echo "$PHC" | sed -n 's/.*[$,]p=\([0-9]*\).*/\1/p')
	echo "BENCH_INFO argon2id m_kib=${m:-?} t=${t:-?} p=${p:-?} (from the stored hash of the bench tenant)"
	cat >"$W/login.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"email":"admin@$SLUG.example","password":"$NEWPW"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Host"] = "$HOST:$P"
LUA
	wrk -t2 -c4 -d"${DUR}s" --latency -s "$W/login.lua" "https://127.0.0.1:$P/api/v1/auth/login" >"$W/login.out" 2>&1
	lrps=$(rps_of "$W/login.out")
	lbad=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' "$W/login.out")
	[ -n "$lbad" ] && echo "bench: $lbad logins were refused" >&2
	# Baseline: argon2id_hash_raw with the same parameters in a C loop, one thread.
	cat >"$W/a2.c" <<'C'
#include <argon2.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv)
{
	unsigned t = atoi(argv[1]), m = atoi(argv[2]), p = atoi(argv[3]), n = 0;
	unsigned char out[32], salt[16] = "0123456789abcdef";
	struct timespec a, b;
	double s = 0;
	clock_gettime(CLOCK_MONOTONIC, &a);
	while (s < 5.0) {
		if (argon2id_hash_raw(t, m, p, "a-password-1234", 15, salt, 16, out, 32) != ARGON2_OK)
			return 1;
		n++;
		clock_gettime(CLOCK_MONOTONIC, &b);
		s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
	}
	printf("%.2f\n", n / s);
	return 0;
}
C
	hps=0
	if [ -n "$m" ] && cc -O2 -o "$W/a2" "$W/a2.c" -largon2 2>/dev/null; then
		hps=$("$W/a2" "$t" "$m" "$p")
	fi
	line gateway_login_rps "${lrps:-0}" logins/s argon2id_hashes_per_s_1thread "${hps:-0}" "$(ratio "${lrps:-0}" "${hps:-0}")"
fi
