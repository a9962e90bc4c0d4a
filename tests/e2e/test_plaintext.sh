#!/usr/bin/env bash
# No plaintext reaches Redis: a marker sent through every queue is absent from what
# Redis received (MONITOR), from its AOF and from a snapshot, yet comes back intact.
. "$(dirname "$0")/lib.sh"
r=us
marker="WARDMARK$(openssl rand -hex 8)"
mon=$(mktemp)
REDISCLI_AUTH=$(secret $r redis-admin) timeout 20 redis-cli --no-auth-warning --user admin -h 127.0.0.1 \
	-p "$(port_of $r REDIS)" MONITOR >"$mon" 2>&1 &
mpid=$!
sleep 0.5
for s in auth ticket audit backup; do
	check "the marker goes through q:$s and comes back in the reply" bash -c \
		"$BIN/wardctl ping --region $r --service $s --text '$marker-$s' | grep -q '$marker-$s'"
done
sleep 0.5
kill "$mpid" 2>/dev/null; wait "$mpid" 2>/dev/null
check "MONITOR saw the queue traffic (XADD to q:auth)" grep -q '"XADD" "q:auth"' "$mon"
refuse "the marker never reached Redis on the wire (MONITOR)" grep -q "$marker" "$mon"
rcli $r admin SAVE >/dev/null
check "a snapshot exists" test -s "$WARD_VAR/$r/redis/dump.rdb"
refuse "the marker is not in Redis's AOF or snapshot files" grep -rqa "$marker" "$WARD_VAR/$r/redis"
refuse "the marker is not in the daemons' logs" grep -rqa "$marker" "$WARD_VAR/$r/log"
rm -f "$mon"
