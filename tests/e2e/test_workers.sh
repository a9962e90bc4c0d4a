#!/usr/bin/env bash
# workers: N (common/daemon.c): a supervisor and N worker processes, each its own
# consumer of q:<service> with its own heartbeat; a dead worker is started again;
# SIGTERM stops them all cleanly (exit 0, heartbeats withdrawn); kill -9 of the
# supervisor takes every worker with it (a crash of the daemon, not orphans);
# services that must run as one process refuse the key.
. "$(dirname "$0")/lib.sh"
r=eu
etc=$WARD_VAR/$r/etc
tmp=$(mktemp -d)
chmod 755 "$tmp"

# A service whose handlers must not run concurrently refuses workers > 1.
{ grep -v '^workers:' "$etc/audit.yaml"; echo 'workers: 2'; } >"$tmp/audit-w.yaml"
chmod 644 "$tmp/audit-w.yaml"
refuse "config: ward-audit refuses workers: 2 (its hash chain is sequential)" \
	as_user "$BIN/ward-audit" --config "$tmp/audit-w.yaml" --check-config
out=$(as_user "$BIN/ward-audit" --config "$tmp/audit-w.yaml" --check-config 2>&1)
names_key() { echo "$out" | grep -q 'workers: ward-audit runs as one process'; }
check "config: the refusal names the key" names_key

# A second ticket instance with three workers.
start_w() {
	sed -e 's/^instance: ticket-1$/instance: ticket-8/' -e "s|/ticket.log$|/ticket-8.log|" \
		-e '/^workers:/d' "$etc/ticket.yaml" >"$tmp/ticket-8.yaml"
	echo 'workers: 3' >>"$tmp/ticket-8.yaml"
	chmod 644 "$tmp/ticket-8.yaml"
	spawn_as_user "$tmp/ticket-8.pid" "$tmp/ticket-8.stderr" "$BIN/ward-ticket" --config "$tmp/ticket-8.yaml"
	sup=$(cat "$tmp/ticket-8.pid")
}
nworkers() { pgrep -P "$sup" | wc -l; }
hbs() { rcli $r admin --scan --pattern 'hb:ticket:ticket-8*' | sort | tr '\n' ' '; }
start_w
check "workers: 3 → three worker processes under the supervisor" wait_for 10 bash -c "[ \$(pgrep -P $sup | wc -l) = 3 ]"
check "each worker heartbeats under its own instance name" wait_for 10 bash -c \
	"[ \"\$(rcli $r admin --scan --pattern 'hb:ticket:ticket-8*' | sort | tr '\n' ' ')\" = 'hb:ticket:ticket-8 hb:ticket:ticket-8-w1 hb:ticket:ticket-8-w2 ' ]"
check "q:ticket answers 200 pings (8 at a time) with the workers in its group" \
	bash -c "$BIN/wardctl ping --region $r --service ticket --count 200 --concurrency 8 | grep -q '\"failed\":0'"
check "…each handled ping deleted from q:ticket once acked, by whichever worker (XLEN 0)" \
	wait_for 5 bash -c "[ \"\$(rcli $r admin XLEN q:ticket)\" = 0 ]"
check "the workers are consumers of the ticket group" bash -c \
	"rcli $r admin XINFO CONSUMERS q:ticket ticket | grep -q '^ticket-8-w2$'"

# A worker killed is started again under the same name.
victim=$(pgrep -P "$sup" | head -1)
kill -KILL "$victim"
check "a worker killed with SIGKILL is started again" wait_for 10 bash -c \
	"[ \$(pgrep -P $sup | wc -l) = 3 ] && ! pgrep -P $sup | grep -qx $victim"
check "its death is logged by the supervisor" grep -q '"worker died; starting it again"' "$WARD_VAR/$r/log/ticket-8.log"
check "pings still answered after the restart" bash -c "$BIN/wardctl ping --region $r --service ticket --count 20 --concurrency 4 | grep -q '\"failed\":0'"

# SIGTERM: every worker finishes and exits, the supervisor exits 0.
kids=$(pgrep -P "$sup" | tr '\n' ' ')
kill -TERM "$sup"
wait "$sup"; rc=$?
check "SIGTERM: the supervisor exits 0 after its workers" [ "$rc" = 0 ]
check "SIGTERM: no worker is left" bash -c "for p in $kids; do kill -0 \$p 2>/dev/null && exit 1; done; exit 0"
check "SIGTERM: every worker's heartbeat is withdrawn" bash -c "[ -z \"\$(rcli $r admin --scan --pattern 'hb:ticket:ticket-8*')\" ]"

# kill -9 of the supervisor is a crash of the whole daemon.
start_w
check "started again with three workers" wait_for 10 bash -c "[ \$(pgrep -P $sup | wc -l) = 3 ]"
kids=$(pgrep -P "$sup" | tr '\n' ' ')
kill -KILL "$sup"
check "kill -9 of the supervisor: every worker dies with it" wait_for 5 bash -c \
	"for p in $kids; do kill -0 \$p 2>/dev/null && exit 1; done; exit 0"
check "nothing is left pending on q:ticket" wait_for 5 bash -c "[ \"\$(rcli $r admin XPENDING q:ticket ticket | head -1)\" = 0 ]"
rcli $r admin XGROUP DELCONSUMER q:ticket ticket ticket-8 >/dev/null 2>&1
for i in 1 2; do rcli $r admin XGROUP DELCONSUMER q:ticket ticket ticket-8-w$i >/dev/null 2>&1; done
rm -rf "$tmp" "$WARD_VAR/$r/log/ticket-8.log"
