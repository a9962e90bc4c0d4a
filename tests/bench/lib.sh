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
