#!/usr/bin/env bash
# A consumer killed with SIGKILL holding a message: another instance reclaims it
# (XAUTOCLAIM), processes it once, and the caller gets exactly one answer.
. "$(dirname "$0")/lib.sh"
r=eu
etc=$WARD_VAR/$r/etc

# A second ward-auth instance that reclaims after 1 s of idleness.
sed -e 's/^instance: auth-1$/instance: auth-2/' -e "s|/auth.log$|/auth-2.log|" \
	-e 's/^  route_keys_file: \(.*\)$/  route_keys_file: \1\n  claim_idle_ms: 1000/' \
	"$etc/auth.yaml" >"$etc/auth-2.yaml"
chown "$WUSER" "$etc/auth-2.yaml" 2>/dev/null || true

pid1=$(pid_of $r auth)
dl_before=$(rcli $r admin XLEN dl:auth)
pending_on_auth1() { [ "$(rcli $r admin XPENDING q:auth auth - + 10 auth-1 | head -1)" != "" ]; }
delivered=0
for attempt in 1 2 3 4 5; do
	kill -STOP "$pid1"
	# auth-1's blocking XREADGROUP is still open server-side: Redis hands it the message.
	"$BIN/wardctl" ping --region $r --service auth --text "crash-$attempt" --timeout-ms 30000 >/tmp/ward-crash.out 2>&1 &
	wpid=$!
	if wait_for 2 pending_on_auth1; then delivered=1; break; fi
	kill -CONT "$pid1"; wait "$wpid" 2>/dev/null
done
if [ $delivered = 1 ]; then ok "the message is pending on auth-1 (stopped mid-message)"; else not_ok "could not get a message pending on auth-1"; fi
kill -KILL "$pid1"
check "auth-1 is dead (SIGKILL)" wait_for 5 bash -c "! kill -0 $pid1 2>/dev/null"

spawn_as_user "$WARD_VAR/$r/run/auth-2.pid" "$WARD_VAR/$r/log/auth-2.stderr" "$BIN/ward-auth" --config "$etc/auth-2.yaml"
pid2=$(cat "$WARD_VAR/$r/run/auth-2.pid")
if wait "$wpid"; then ok "the caller got an answer after the crash"; else not_ok "the caller got no answer"; cat /tmp/ward-crash.out; fi
check "the answer came from auth-2 (reclaimed, not lost)" grep -q '"instance": *"auth-2"' /tmp/ward-crash.out
check "nothing is left pending on q:auth" bash -c "[ \"\$(rcli $r admin XPENDING q:auth auth | head -1)\" = 0 ]"
check "…and the reclaimed entry, acked, is deleted from q:auth (XLEN 0)" \
	wait_for 5 bash -c "[ \"\$(rcli $r admin XLEN q:auth)\" = 0 ]"
check "auth-2 handled the message exactly once" wait_for 12 bash -c \
	"rcli $r admin GET hb:auth:auth-2 | grep -q '\"handled\":1,'"
check "nothing was dead-lettered by the crash" bash -c "[ \"\$(rcli $r admin XLEN dl:auth)\" = $dl_before ]"

# SIGTERM: auth-2 finishes and exits 0; the dev stack restarts auth-1.
kill -TERM "$pid2"
wait "$pid2"; rc=$?
check "SIGTERM: ward-auth exits 0 (clean shutdown)" [ "$rc" = 0 ]
check "SIGTERM: its heartbeat is withdrawn" bash -c "[ \"\$(rcli $r admin EXISTS hb:auth:auth-2)\" = 0 ]"
check "the dev stack brings auth-1 back" "$TOP/ops/devstack" up
check "ping through q:auth works again" "$BIN/wardctl" ping --region $r --service auth
rm -f /tmp/ward-crash.out "$etc/auth-2.yaml"
