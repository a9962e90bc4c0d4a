# tests/bench/lib.sh — what every benchmark script does first, sourced after it has
# set TOP. bench_stack: use the dev stack of $WARD_VAR when it has one, else start a
# throwaway one (OWN=1: the script stops it at its end with stack_down; a stack that
# fails to start is stopped here); load the stack's endpoints (devstack.env) and
# wardctl's config; WUSER is the user the daemons run as.
bench_stack() {
	OWN=0
	if [ -z "${WARD_VAR:-}" ] || [ ! -f "$WARD_VAR/devstack.env" ]; then
		. "$TOP/tests/stack.sh"
		stack_up || { stack_down; echo "bench: the dev stack did not start" >&2; exit 1; }
		OWN=1
	fi
	set -a
	. "$WARD_VAR/devstack.env"
	set +a
	export WARD_CONFIG=$WARD_VAR/wardctl.yaml
	. "$TOP/ops/lib.sh"
	WUSER=${WARD_USER:-ward}
	[ "$(id -u)" -eq 0 ] || WUSER=$(id -un)
}

# bench_api_key SLUG NAME JAR: a tenant SLUG ("NAME") in the eu cell, its admin signed in
# (the one-time password changed first, as a session must), and an API key with
# tickets:read and tickets:write, printed. Needs P (the eu HTTPS port).
bench_api_key() {
	local host=$1.eu.$WARD_DOMAIN pw newpw='Bench-Passphrase-2026!' csrf
	local url=https://$host:$P
	_cu() { curl -sS --max-time 20 --cacert "$WARD_CA" --resolve "$host:$P:127.0.0.1" -H "Origin: $url" "$@"; }
	_csrf() { sed -n 's/.*"csrf_token":"\([^"]*\)".*/\1/p'; }
	pw=$(bin/wardctl tenant create --slug "$1" --region eu --name "$2" --admin-email "admin@$1.example" 2>/dev/null |
		sed -n 's/.*"admin_password": *"\([^"]*\)".*/\1/p')
	csrf=$(_cu -c "$3" -H 'Content-Type: application/json' \
		-d "{\"email\":\"admin@$1.example\",\"password\":\"$pw\"}" "$url/api/v1/auth/login" | _csrf)
	_cu -o /dev/null -b "$3" -c "$3" -H "X-CSRF-Token: $csrf" -H 'Content-Type: application/json' \
		-d "{\"current_password\":\"$pw\",\"new_password\":\"$newpw\"}" "$url/api/v1/auth/password"
	csrf=$(_cu -c "$3" -H 'Content-Type: application/json' \
		-d "{\"email\":\"admin@$1.example\",\"password\":\"$newpw\"}" "$url/api/v1/auth/login" | _csrf)
	_cu -b "$3" -H "X-CSRF-Token: $csrf" -H 'Content-Type: application/json' \
		-d '{"name":"bench","scopes":["tickets:read","tickets:write"]}' "$url/api/v1/api-keys" |
		sed -n 's/.*"key":"\([^"]*\)".*/\1/p'
}

# CPU time (user + system, clock ticks) of the eu cell's parts, one "name ticks" line
# each: every daemon with its workers, Redis, and PostgreSQL (the postmaster and
# every backend). bench_cpu_take > FILE before a run; bench_cpu_per FILE N PREFIX
# UNIT SCALE after it prints a BENCH line per part: ticks → seconds × SCALE / N.
bench_cpu_of() { # PID...: their and their children's ticks
	local t=0 c q
	for q in "$@" $(for p in "$@"; do pgrep -P "$p"; done); do
		c=$(awk '{ print $14 + $15 }' "/proc/$q/stat" 2>/dev/null) && t=$((t + c))
	done
	echo $t
}
bench_cpu_take() {
	local s
	for s in gateway auth ticket audit mail-ingest backup; do
		echo "${s//-/_} $(bench_cpu_of $(cat "$WARD_VAR/eu/run/$s.pid" 2>/dev/null))"
	done
	echo "redis $(bench_cpu_of $(cat "$WARD_VAR/eu/redis/redis.pid" 2>/dev/null))"
	echo "postgres $(bench_cpu_of $(head -1 "$WARD_VAR/eu/pg/data/postmaster.pid" 2>/dev/null))"
}
bench_cpu_per() {
	local hz
	hz=$(getconf CLK_TCK)
	join <(sort "$1") <(bench_cpu_take | sort) | while read -r name a b; do
		echo "BENCH name=$3_$name value=$(awk -v a="$a" -v b="$b" -v n="$2" -v hz="$hz" -v k="$5" \
			'BEGIN { printf "%.3f", (n > 0 ? (b - a) / hz * k / n : 0) }') unit=$4 baseline=none baseline_value=0 ratio=0"
	done
}

# The eu gateway's pid; bench_restart_gateway: restart it with its config as it is
# now ($WARD_VAR/eu/etc/gateway.yaml), 0 once /healthz answers (needs P).
bench_gw_pid() { cat "$WARD_VAR/eu/run/gateway.pid"; }
bench_restart_gateway() {
	kill "$(bench_gw_pid)" 2>/dev/null
	for _ in $(seq 50); do kill -0 "$(bench_gw_pid)" 2>/dev/null || break; sleep 0.1; done
	spawn_as_user "$WARD_VAR/eu/run/gateway.pid" "$WARD_VAR/eu/log/gateway.stderr" "$TOP/bin/ward-gateway" \
		--config "$WARD_VAR/eu/etc/gateway.yaml"
	for _ in $(seq 100); do
		curl -fsS --max-time 2 --cacert "$WARD_CA" --resolve "eu.$WARD_DOMAIN:$P:127.0.0.1" \
			"https://eu.$WARD_DOMAIN:$P/healthz" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}
# bench_restart_svc NAME: ward-NAME of eu with its config as it is now; 0 once it
# answers a ping.
bench_restart_svc() {
	local f=$WARD_VAR/eu/run/$1.pid
	kill "$(cat "$f")" 2>/dev/null
	for _ in $(seq 100); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
	spawn_as_user "$f" "$WARD_VAR/eu/log/$1.stderr" "$TOP/bin/ward-$1" --config "$WARD_VAR/eu/etc/$1.yaml"
	for _ in $(seq 100); do
		bin/wardctl ping --region eu --service "$1" --timeout-ms 1000 >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

# What one hop of the design costs at most, measured on the cell's own servers with
# their own settings, for the ceilings beside the ratios:
# bench_xadd_rps CLIENTS: XADD per second that the eu cell's Redis accepts from
# CLIENTS clients (redis-benchmark, appendfsync as configured: always), on a scratch
# stream deleted after. A request through a queue costs at least two of them (the
# request and its reply), so half of this bounds any such request rate.
bench_xadd_rps() {
	local pw k=bench:xadd:$$ r
	pw=$(cat "$WARD_VAR/eu/secrets/redis-admin") || return 1
	r=$(REDISCLI_AUTH=$pw redis-benchmark -h 127.0.0.1 -p "${WARD_EU_REDIS##*:}" --user admin \
		-a "$pw" -c "$1" -n 200000 -q XADD "$k" MAXLEN '~' 1000 '*' f v 2>/dev/null |
		tr '\r' '\n' | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1)
	REDISCLI_AUTH=$pw redis-cli --no-auth-warning --user admin -h 127.0.0.1 \
		-p "${WARD_EU_REDIS##*:}" DEL "$k" >/dev/null 2>&1
	echo "${r:-0}"
}
# bench_pk_select_tps CLIENTS: primary-key SELECTs per second (pgbench -S, prepared)
# on the eu cell's PostgreSQL, in a scratch database dropped after: one such round
# trip bounds any request that reads one row.
bench_pk_select_tps() {
	local db=bench_pk_$$ url r
	url=${WARD_EU_PG%/*}/$db
	psql -X -q "$WARD_EU_PG" -c "CREATE DATABASE $db" >/dev/null 2>&1 || { echo 0; return; }
	/usr/lib/postgresql/15/bin/pgbench -q -i -s 2 "$url" >/dev/null 2>&1 &&
		r=$(/usr/lib/postgresql/15/bin/pgbench -n -S -M prepared -c "$1" -j 2 -T 8 "$url" 2>/dev/null |
			sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
	psql -X -q "$WARD_EU_PG" -c "DROP DATABASE $db" >/dev/null 2>&1
	echo "${r:-0}"
}
