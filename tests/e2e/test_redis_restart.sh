#!/usr/bin/env bash
# Redis restarted under running daemons: they reconnect with backoff and carry on;
# while it is down, requests fail fast instead of hanging.
. "$(dirname "$0")/lib.sh"
r=uk
check "before: ping q:ticket" "$BIN/wardctl" ping --region $r --service ticket
rcli $r admin SHUTDOWN >/dev/null 2>&1
check "redis of $r is down" wait_for 10 bash -c "! rcli $r admin PING"
code=$(https $r /healthz -o /dev/null -w '%{http_code}')
check "while redis is down, /healthz answers 503 (not a hang)" [ "$code" = 503 ]
sleep 1
check "the daemons are still running" bash -c "for s in gateway auth ticket audit backup mail-ingest; do kill -0 \$(cat $WARD_VAR/$r/run/\$s.pid) || exit 1; done"
check "devstack up restarts redis (data kept: AOF)" "$TOP/ops/devstack" up
for s in auth ticket audit backup; do
	check "after restart: ping through q:$s" wait_for 15 "$BIN/wardctl" ping --region $r --service $s
done
check "after restart: /healthz is 200 again" wait_for 15 bash -c "[ \"\$(https $r /healthz -o /dev/null -w '%{http_code}')\" = 200 ]"
for s in gateway auth ticket audit backup mail-ingest; do
	check "after restart: ward-$s heartbeats again" wait_for 15 bash -c "[ \"\$(rcli $r admin EXISTS hb:$s:$s-1)\" = 1 ]"
done
