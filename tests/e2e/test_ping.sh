#!/usr/bin/env bash
# A ping round trip through every consumed queue of every cell, and each gateway's
# /healthz over TLS (which pings auth and ticket through their queues).
. "$(dirname "$0")/lib.sh"

for r in us eu uk; do
	for s in auth ticket audit backup; do
		out=$("$BIN/wardctl" ping --region "$r" --service "$s" --text "hello-$r-$s" 2>&1)
		if echo "$out" | grep -q "\"text\": *\"hello-$r-$s\"" && echo "$out" | grep -q "\"region\": *\"$r\"" &&
			echo "$out" | grep -q "\"service\": *\"$s\""; then
			ok "$r: ping through q:$s answered by ward-$s of $r"
		else
			not_ok "$r: ping through q:$s"; echo "# $out"
		fi
	done
	body=$(https "$r" /healthz -w '\n%{http_code}')
	code=$(echo "$body" | tail -1)
	if [ "$code" = 200 ] && echo "$body" | grep -q '"status": *"ok"'; then
		ok "$r: GET /healthz over TLS is 200 with auth and ticket answering"
	else
		not_ok "$r: GET /healthz ($code)"; echo "# $body"
	fi
done

# A ping to a queue nobody consumes times out cleanly instead of hanging.
refuse "ping of a service with no queue fails with an error" \
	timeout 20 "$BIN/wardctl" ping --region eu --service gateway --timeout-ms 1000

# Redis unreachable: a single ping and a --count run both end at once with status 1
# (a --count run once hung: a request that could not be sent was never finished).
sed "s/redis_port: ${WARD_EU_REDIS##*:}\$/redis_port: 1/" "$WARD_CONFIG" >"$WARD_VAR/wardctl-noredis.yaml"
for n in 1 3; do
	out=$(timeout 20 "$BIN/wardctl" --config "$WARD_VAR/wardctl-noredis.yaml" ping --region eu --service auth --count $n 2>&1)
	rc=$?
	check "Redis unreachable: ping --count $n exits 1, not a hang (status $rc)" test "$rc" = 1
	check "... and says the connection is down" grep -qi "connection down" <<<"$out"
done
check "... the --count run counts every request as failed" grep -q '"failed": *3' <<<"$out"
