#!/usr/bin/env bash
# The daemon skeleton: refuses root, refuses bad configuration with file:line: key:
# reason, reopens its log on SIGHUP, exits 0 on SIGTERM.
. "$(dirname "$0")/lib.sh"
r=eu
etc=$WARD_VAR/$r/etc
tmp=$(mktemp -d); chmod 755 "$tmp"

if [ "$(id -u)" -eq 0 ]; then
	out=$("$BIN/ward-auth" --config "$etc/auth.yaml" 2>&1); rc=$?
	check "a daemon started as root refuses to run" bash -c "[ $rc -ne 0 ] && echo '$out' | grep -q 'refusing to run as root'"
fi
for s in gateway auth ticket audit backup mail-ingest; do
	check "ward-$s --check-config accepts the dev stack's config" as_user "$BIN/ward-$s" --config "$etc/$s.yaml" --check-config
done

# Each bad config: the expected message, with file and line.
badconf() { # badconf NAME EXPECTED-REGEX SED-EXPR
	local name=$1 want=$2 expr=$3 f=$tmp/$RANDOM.yaml out
	sed -e "$expr" "$etc/ticket.yaml" >"$f"; chmod 644 "$f"
	out=$(as_user "$BIN/ward-ticket" --config "$f" --check-config 2>&1)
	if [ $? -ne 0 ] && echo "$out" | grep -Eq "$want"; then ok "config: $name"; else not_ok "config: $name"; echo "# $out"; fi
}
badconf "unknown key → file:line: key: reason" "$tmp/[0-9]+\.yaml:4: colour: " 's/^region: eu$/region: eu\ncolour: blue/'
badconf "unknown nested key" "\.yaml:[0-9]+: redis\.colour: " 's/^  user: ticket$/  user: ticket\n  colour: blue/'
badconf "missing required key" "\.yaml:[0-9]+: region: .*(missing|required)" '/^region: /d'
badconf "bad region value (regions are [a-z]{2,8}: deploy/regions.yaml)" "\.yaml:3: region: .*2 to 8 letters a-z" 's/^region: eu$/region: Eu-1/'
badconf "port out of range" "\.yaml:[0-9]+: redis\.port: " 's/^  port: .*/  port: 99999/'
badconf "port not a number" "\.yaml:[0-9]+: redis\.port: " 's/^  port: .*/  port: many/'
badconf "inline secret refused (secrets by file only)" "\.yaml:[0-9]+: redis\.password: " 's/^  password_file: \(.*redis-ticket\)$/  password: hunter2/'
badconf "secret file missing" "redis\.password_file: " 's|^  password_file: .*redis-ticket$|  password_file: /nonexistent/secret|'
badconf "wrong service name" "service: .*ward-ticket" 's/^service: ticket$/service: auth/'
badconf "YAML syntax error" "\.yaml:[0-9]+: " 's/^region: eu$/region: [eu/'
printf 'service: gateway\nregion: eu\nredis:\n  port: 1\n  user: gateway\n  password_file: %s\nqueue:\n  route_keys_file: %s\nkek_file: %s\nhttps:\n  listen: 127.0.0.1:1\n  cert_file: x\n  key_file: %s\n' \
	"$WARD_VAR/$r/secrets/redis-gateway" "$WARD_VAR/$r/secrets/routes-gateway" "$WARD_VAR/$r/secrets/kek" "$WARD_VAR/tls/$r.key" >"$tmp/gw.yaml"
chmod 644 "$tmp/gw.yaml"
refuse "config: the gateway refuses to hold the region KEK" as_user "$BIN/ward-gateway" --config "$tmp/gw.yaml" --check-config

# SIGHUP reopens the log (rotation), SIGTERM exits 0.
sed -e 's/^instance: audit-1$/instance: audit-9/' -e "s|/audit.log$|/audit-9.log|" "$etc/audit.yaml" >"$tmp/audit-9.yaml"
chmod 644 "$tmp/audit-9.yaml"
spawn_as_user "$tmp/audit-9.pid" "$tmp/audit-9.stderr" "$BIN/ward-audit" --config "$tmp/audit-9.yaml"
pid=$(cat "$tmp/audit-9.pid")
log=$WARD_VAR/$r/log/audit-9.log
check "a second audit instance starts and heartbeats" wait_for 10 bash -c "[ \"\$(rcli $r admin EXISTS hb:audit:audit-9)\" = 1 ]"
check "its log is JSON lines" bash -c "head -1 '$log' | grep -Eq '^\\{\"ts\":\"[0-9T:.-]+Z\",\"level\":\"[a-z]+\",\"service\":\"audit\".*\\}$'"
mv "$log" "$log.1"
kill -HUP "$pid"
check "SIGHUP reopens the log file" wait_for 5 test -s "$log"
kill -TERM "$pid"; wait "$pid"; rc=$?
check "SIGTERM: exit status 0" [ "$rc" = 0 ]
check "SIGTERM: the exit is logged" grep -q '"stopped"' "$log"
rm -rf "$tmp" "$log" "$log.1"
