#!/usr/bin/env bash
# test_status — the public status page (SPEC §7): Statuspage v2 JSON, Atom, HTML
# without script; a killed daemon's component goes to an outage within the
# heartbeat timeout and recovers on restart; an operator's incident (with markup in
# its text) shows in JSON, Atom and HTML, escaped; the "status" Redis user reads
# health data only; the page renders in headless Chromium without console errors.
# The page is ward-status, its own process (not the us gateway): it holds no route key
# and no gateway credential, and its Redis credential is refused every tenant-reaching
# command.
. "$(dirname "$0")/lib.sh"
. "$WARD_VAR/devstack.env"
export WARD_CONFIG=$WARD_VAR/wardctl.yaml
SP=${WARD_STATUS_URL#https://status.$WARD_DOMAIN:}
SP=${SP%/}
st() { # st PATH [curl args]
	local p=$1; shift
	curl -sS --max-time 10 --cacert "$WARD_CA" --resolve "status.$WARD_DOMAIN:$SP:127.0.0.1" \
		"$@" "https://status.$WARD_DOMAIN:$SP$p"
}
export -f st
export SP WARD_CA WARD_DOMAIN
comp() { st /api/v2/components.json | jq -r --arg id "$1" '.components[] | select(.id == $id) | .status'; }
export -f comp

check "status page answers summary.json with page, status and components" \
	bash -c 'st /api/v2/summary.json | jq -e ".page.id and .page.url and (.status.indicator | type == \"string\") and (.components | length == 24) and (.incidents | type == \"array\") and (.scheduled_maintenances | type == \"array\")"'
check "every region's tickets component becomes operational" \
	wait_for 20 bash -c '[ "$(comp us-tickets)$(comp eu-tickets)$(comp uk-tickets)" = operationaloperationaloperational ]'
check "status.json has indicator and description" \
	bash -c 'st /api/v2/status.json | jq -e ".status.indicator and .status.description"'
check "components.json: Statuspage fields and states" \
	bash -c 'st /api/v2/components.json | jq -e "[.components[] | select(.group == false)] | all(.id and .name and .group_id and .position and (.status | test(\"^(operational|degraded_performance|partial_outage|major_outage|under_maintenance)$\")))"'
check "HTML has a strict CSP and no script" bash -c '
	h=$(st / -D - -o /tmp/status-page.$$); b=$(cat /tmp/status-page.$$); rm -f /tmp/status-page.$$
	echo "$h" | grep -qi "^content-security-policy: default-src .none.; style-src .self.;" &&
	echo "$h" | grep -qi "^x-content-type-options: nosniff" &&
	! echo "$b" | grep -qi "<script" && echo "$b" | grep -q "Region eu"'
refuse "POST to the status page is refused" bash -c 'st /api/v2/summary.json -f -X POST -d x'
check "unknown path is 404" bash -c '[ "$(st /nope -o /dev/null -w "%{http_code}")" = 404 ]'

# ---- the page is its own process: ward-status, not the us gateway
SD=$WARD_VAR/status
spid() { cat "$SD/run/status.pid"; }
# listening PID: the TCP ports PID listens on (its sockets in /proc/PID/fd, LISTEN
# entries of /proc/net/tcp{,6}), sorted, one a line.
listening() {
	python3 - "$1" <<'PY'
import os, sys
pid = sys.argv[1]
inodes = set()
for fd in os.listdir(f"/proc/{pid}/fd"):
    try:
        t = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        continue
    if t.startswith("socket:["):
        inodes.add(t[8:-1])
ports = set()
for f in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(f).readlines()[1:]:
        c = line.split()
        if c[3] == "0A" and c[9] in inodes:
            ports.add(int(c[1].split(":")[1], 16))
print("\n".join(str(p) for p in sorted(ports)))
PY
}
# scli REGION args...: redis-cli with the status process's own credential for REGION.
scli() {
	local r=$1; shift
	REDISCLI_AUTH=$(cat "$SD/secrets/redis-status-$r") redis-cli --no-auth-warning --user status \
		-h 127.0.0.1 -p "$(port_of "$r" REDIS)" "$@"
}
export SD
export -f spid listening scli
check "ward-status runs the page: its process is bin/ward-status and listens on the status port only" \
	bash -c '[ "$(readlink /proc/$(spid)/exe)" = "$BIN/ward-status" ] && [ "$(listening $(spid))" = "$SP" ]'
check "…the us gateway has no status listener (its HTTPS and HTTP ports only)" bash -c '
	l=$(listening "$(pid_of us gateway)" | tr "\n" " ")
	want=$(printf "%s\n" "$(port_of us HTTPS)" "$(port_of us HTTP)" | sort -n | tr "\n" " ")
	[ "$l" = "$want" ] || { echo "listening: $l; want: $want"; false; }'
check "…and its config names no status page (status.error_window_s only)" \
	bash -c '! grep -qE "^  (listen|cells|key_file|state_dir):.*status|redis-status" <(sed -n "/^status:/,/^[a-z]/p" "$WARD_VAR/us/etc/gateway.yaml")'
check "ward-status beats as itself (hb:status:status-1), not as a gateway" \
	bash -c 'rcli us status GET hb:status:status-1 | jq -e ".service == \"status\" and .pid == $(spid)" && [ -z "$(rcli us status GET hb:gateway:status-1)" ]'
check "ward-status's secrets: the status TLS key and each cell's status password, nothing else" \
	bash -c '[ "$(ls "$SD/secrets" | tr "\n" " ")" = "redis-status-eu redis-status-uk redis-status-us tls-status.key " ]'
check "…no route key and no gateway Redis password among them (by content), none in its config" bash -c '
	for f in "$SD"/secrets/*; do
		for g in "$WARD_VAR"/*/secrets/routes-* "$WARD_VAR"/*/secrets/redis-gateway "$WARD_VAR"/*/secrets/redis-ops "$WARD_VAR"/*/secrets/kek; do
			cmp -s "$f" "$g" && { echo "$f = $g"; exit 1; }
		done
	done
	! grep -qE "route_keys_file|routes-|redis-gateway|kek_file|postgres" "$SD/etc/status.yaml" &&
	grep -qx "  user: status" "$SD/etc/status.yaml"'
# Denials of the status process's own credential, in its home cell and another.
check "status credential: XADD to q:ticket refused (NOPERM)" bash -c 'scli us XADD q:ticket "*" a b | grep -q NOPERM && scli eu XADD q:ticket "*" a b | grep -q NOPERM'
check "status credential: XADD to q:auth refused (NOPERM)" bash -c 'scli us XADD q:auth "*" a b | grep -q NOPERM && scli uk XADD q:auth "*" a b | grep -q NOPERM'
check "status credential: no queue entry, no reply stream (tenant data in envelopes) (NOPERM)" bash -c \
	'scli us XRANGE q:ticket - + COUNT 1 | grep -q NOPERM && scli us XREAD COUNT 1 STREAMS r:gateway:gateway-1 0 | grep -q NOPERM && scli eu XREADGROUP GROUP ticket x COUNT 1 STREAMS q:ticket ">" | grep -q NOPERM'
check "status credential: no rate-limit key, no key outside hb:* (NOPERM)" bash -c \
	'scli us GET rl:gateway:x | grep -q NOPERM && scli us GET tenant:demo | grep -q NOPERM && scli us KEYS "*" | grep -q NOPERM'
check "status credential: no write on another service's heartbeat or an incident (NOPERM)" bash -c \
	'scli us SET hb:gateway:gateway-1 x | grep -q NOPERM && scli us SET hb:ops:status:incident:x y | grep -q NOPERM'
# Config that mixes the two is refused.
TC=$(mktemp -d)
chmod 755 "$TC"
[ "$(id -u)" -eq 0 ] && chown "$WUSER" "$TC"
export TC
{ sed '/^status:/,$d' "$WARD_VAR/us/etc/gateway.yaml"; printf 'status:\n  listen: 127.0.0.1:1\n'; } >"$TC/gw.yaml"
{ cat "$SD/etc/status.yaml"; printf 'https:\n  listen: 127.0.0.1:1\n'; } >"$TC/st-https.yaml"
{ cat "$SD/etc/status.yaml"; printf 'queue:\n  route_keys_file: %s\n' "$WARD_VAR/us/secrets/routes-gateway"; } >"$TC/st-routes.yaml"
sed -e 's/^  user: status$/  user: gateway/' -e "s|^  password_file: .*|  password_file: $WARD_VAR/us/secrets/redis-gateway|" \
	-e "s|^  listen: .*|  listen: 127.0.0.1:$(free_port)|" -e "s|^log_file: .*|log_file: $TC/st-user.log|" "$SD/etc/status.yaml" >"$TC/st-user.yaml"
chmod 644 "$TC"/*.yaml
check "ward-gateway refuses a config with the status page (status.listen): it runs as ward-status" \
	bash -c '! as_user "$BIN/ward-gateway" --config "$TC/gw.yaml" --check-config >"$TC/o" 2>&1; grep -q "status.listen: the status page runs as ward-status" "$TC/o"'
check "ward-status refuses a tenant listener (https.listen)" \
	bash -c '! as_user "$BIN/ward-status" --config "$TC/st-https.yaml" --check-config >"$TC/o" 2>&1; grep -q "https.listen: ward-status serves only the status page" "$TC/o"'
check "ward-status refuses a route key file" \
	bash -c '! as_user "$BIN/ward-status" --config "$TC/st-routes.yaml" --check-config >"$TC/o" 2>&1; grep -q "queue.route_keys_file: ward-status must hold no route key" "$TC/o"'
check "ward-status refuses to start with another Redis user than the status user (the gateway's)" \
	bash -c '! as_user timeout 20 "$BIN/ward-status" --config "$TC/st-user.yaml" >/dev/null 2>&1; grep -q "must be the home cell.s status user" "$TC/st-user.log"'
rm -rf "$TC"

# ---- a daemon dies: its component goes to an outage, and comes back
pid=$(pid_of eu ticket)
t0=$(date +%s%N)
kill -KILL "$pid"
wait_for 25 bash -c '[ "$(comp eu-tickets)" = major_outage ]' >/dev/null
dt=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "# eu-tickets major_outage ${dt} ms after the kill (heartbeat timeout 15000 ms, poll 1000 ms)"
check "eu ticket killed: eu-tickets major_outage within the heartbeat timeout (+ a poll and a page request): ${dt} ms" \
	bash -c "[ '$(comp eu-tickets)' = major_outage ] && [ $dt -le 17500 ]"
check "…and eu-api at least partial_outage; us-tickets still operational" \
	bash -c '[ "$(comp eu-api)" = partial_outage ] && [ "$(comp us-tickets)" = operational ]'
check "the page indicator is critical" bash -c 'st /api/v2/status.json | jq -e ".status.indicator == \"critical\""'
check "wardctl status components agrees" \
	bash -c '"$BIN/wardctl" status components --region eu | jq -e ".regions.eu.components.tickets == \"major_outage\""'
check "wardctl status components gives the reason: heartbeat missing (tickets), a dependency (api)" \
	bash -c '"$BIN/wardctl" status components --region eu | jq -e ".regions.eu | (.reasons.tickets == [\"heartbeat missing: no fresh heartbeat of ticket\"]) and (.reasons.api | index(\"depends on ticket: no fresh heartbeat of ticket\") != null) and (.reasons.auth == null)"'
spawn_as_user "$WARD_VAR/eu/run/ticket.pid" "$WARD_VAR/eu/log/ticket.stderr" "$BIN/ward-ticket" --config "$WARD_VAR/eu/etc/ticket.yaml"
check "eu ticket restarted: eu-tickets operational again" \
	wait_for 20 bash -c '[ "$(comp eu-tickets)" = operational ]'
check "the outage shows in eu-tickets' uptime (below 100%)" \
	bash -c 'st /api/v2/components.json | jq -e ".components[] | select(.id == \"eu-tickets\") | .uptime_90d < 100"'
check "the HTML shows it: eu-tickets' 90-day bar (90 days, today not all up) and the same percentage" bash -c '
	st / >"/tmp/status-bar.$$" && u=$(st /api/v2/components.json | jq -r ".components[] | select(.id == \"eu-tickets\") | .uptime_90d")
	python3 - "/tmp/status-bar.$$" "$u" <<"PY"; r=$?; rm -f "/tmp/status-bar.$$"; exit $r
import re, sys
html, want = open(sys.argv[1]).read(), float(sys.argv[2])
row = re.search(r"<tr id=\"c-eu-tickets\">(.*?)</tr>", html, re.S).group(1)
days = re.findall(r"<span class=\"(\w+)\" title=\"(\d{4}-\d\d-\d\d): ", row)
assert len(days) == 90, len(days)
assert days[-1][1] == __import__("datetime").datetime.utcnow().strftime("%Y-%m-%d"), days[-1]
assert days[-1][0] in ("partial", "down"), days[-1]
pct = float(re.search(r"<td class=\"pct\">([0-9.]+)% uptime</td>", row).group(1))
assert abs(pct - want) < 0.5, (pct, want)  # two requests, a second or so apart
PY'

# ---- incidents
out=$("$BIN/wardctl" status incident create --region eu --name 'Login <script>alert(1)</script> slow' \
	--body 'Investigating <img src=x onerror=alert(2)> & "quotes"' --impact major --components eu-auth,eu-api)
id=$(echo "$out" | jq -r .id)
check "wardctl status incident create prints the incident" bash -c "[ -n '$id' ] && [ '$id' != null ]"
check "the incident appears in incidents/unresolved.json" \
	wait_for 10 bash -c "st /api/v2/incidents/unresolved.json | jq -e '.incidents[] | select(.id == \"$id\") | .incident_updates[0].body | test(\"<img\")'"
check "…with Statuspage fields" bash -c "st /api/v2/incidents.json | jq -e '.incidents[] | select(.id == \"$id\") | .name and .status == \"investigating\" and .impact == \"major\" and .shortlink and .created_at and (.components | length == 2) and (.incident_updates[0] | .id and .status and .created_at and .display_at)'"
check "the incident is in the Atom feed, escaped" bash -c "st /history.atom | grep -q 'Login &lt;script&gt;alert(1)&lt;/script&gt; slow' && ! st /history.atom | grep -q '<script'"
check "the incident is in the HTML, escaped" bash -c "b=\$(st /); echo \"\$b\" | grep -q 'Login &lt;script&gt;' && echo \"\$b\" | grep -q '&lt;img src=x' && ! echo \"\$b\" | grep -q '<img'"
check "an open major incident makes the indicator at least major" \
	bash -c 'st /api/v2/status.json | jq -e ".status.indicator == \"major\" or .status.indicator == \"critical\""'
check "wardctl status incident update" bash -c "'$BIN/wardctl' status incident update --region eu --id $id --status monitoring --body 'Fix deployed' | jq -e '.status == \"monitoring\" and .monitoring_ms > 0'"
check "wardctl status incident resolve" bash -c "'$BIN/wardctl' status incident resolve --region eu --id $id | jq -e '.status == \"resolved\" and (.updates | length == 3)'"
check "a resolved incident leaves unresolved.json" \
	wait_for 10 bash -c "! st /api/v2/incidents/unresolved.json | jq -e '.incidents[] | select(.id == \"$id\")'"
refuse "an incident with a bad status is refused" "$BIN/wardctl" status incident update --region eu --id "$id" --status exploded --body x
refuse "an incident id with a path is refused" "$BIN/wardctl" status incident update --region eu --id '../x' --status monitoring --body x
mid=$("$BIN/wardctl" status incident create --region us --maintenance --name 'DB upgrade' --body 'Planned' \
	--status in_progress --components us-backups | jq -r .id)
check "a maintenance in progress puts its component under_maintenance" \
	wait_for 10 bash -c '[ "$(comp us-backups)" = under_maintenance ]'
check "…and is listed in summary.json's scheduled_maintenances" \
	bash -c "st /api/v2/summary.json | jq -e '.scheduled_maintenances[] | select(.id == \"$mid\")'"
"$BIN/wardctl" status incident resolve --region us --id "$mid" >/dev/null

# ---- error rate: a burst of 5xx from the us gateway degrades us api/web (while every
# heartbeat stays fresh), and they recover once the burst leaves the error window.
. "$TOP/tests/e2e/lib_api.sh"
TMP=$(mktemp -d)
chmod 755 "$TMP"
ES=errburst$$
R=us P=$(port_of us HTTPS)
eo=$("$BIN/wardctl" tenant create --slug "$ES" --region us --name "Error Burst" --admin-email boss@eb.example)
EPW=$(echo "$eo" | jq -r .admin_password)
login "$ES" "$TMP/a" boss@eb.example "$EPW" >/dev/null
api "$ES" "$TMP/a" POST /api/v1/auth/password "{\"current_password\":\"$EPW\",\"new_password\":\"Burst-Passphrase-2026!\"}" >/dev/null
check "error burst: the admin logs in with a new password" is "$(status "$(login "$ES" "$TMP/a" boss@eb.example 'Burst-Passphrase-2026!')")" 200
check "error burst: us-api operational before" wait_for 10 bash -c '[ "$(comp us-api)" = operational ]'
for i in $(seq 60); do api "$ES" "$TMP/a" GET /api/v1/users/me >/dev/null; done
# The tickets table disappears for a while: ward-ticket cannot answer, the gateway
# answers 504 after upstream.timeout_ms; heartbeats go on.
pg_super us "ALTER TABLE ticket.tickets RENAME TO tickets_away"
bp=""
for i in $(seq 12); do
	(api "$ES" "$TMP/a" GET /api/v1/tickets >"$TMP/burst.$i") &
	bp="$bp $!"
done
wait $bp # (not a bare wait: the eu ticket daemon restarted above is a child too)
pg_super us "ALTER TABLE ticket.tickets_away RENAME TO tickets"
check "error burst: the 12 requests failed with 5xx" bash -c "cat $TMP/burst.* | cut -c1 | sort -u | grep -qx 5"
check "error burst: the gateway publishes its answer counters (hb:gateway:gateway-1:http)" \
	wait_for 12 bash -c 'rcli us status GET hb:gateway:gateway-1:http | jq -e ".errors_5xx >= 12 and .answers >= 72"'
check "error burst: us-api and us-web turn degraded_performance (12 of ~72 answers)" \
	wait_for 15 bash -c '[ "$(comp us-api) $(comp us-web)" = "degraded_performance degraded_performance" ]'
check "error burst: wardctl status components shows the same error rate and the reason" \
	wait_for 10 bash -c '"$BIN/wardctl" status components --region us | jq -e ".regions.us | (.error_rate.window_s == 20) and (.error_rate.errors_5xx >= 12) and (.error_rate.percent >= 5) and (.components.api == \"degraded_performance\") and (.reasons.api | any(test(\"^error rate: [0-9]+ 5xx of [0-9]+ answers \\\\([0-9]+%\\\\) over 20 s\"))) and (.reasons.tickets == null)"'
check "error burst: …and the page's figures are the gateways' published window (hb:gateway:gateway-1:http)" \
	bash -c 'rcli us status GET hb:gateway:gateway-1:http | jq -e ".window_s == 20 and .window_5xx >= 12 and .window_answers >= .window_5xx"'
check "error burst: …while every us heartbeat is fresh (us-auth operational, eu-api operational)" \
	bash -c '[ "$(comp us-auth)" = operational ] && [ "$(comp eu-api)" = operational ]'
check "error burst: the page indicator is minor" bash -c 'st /api/v2/status.json | jq -e ".status.indicator == \"minor\""'
check "error burst: us-api recovers once the burst leaves the 20 s window" \
	wait_for 45 bash -c '[ "$(comp us-api)" = operational ] && [ "$(comp us-web)" = operational ]'
check "error burst: …and wardctl shows no reason any more" \
	wait_for 10 bash -c '"$BIN/wardctl" status components --region us | jq -e ".regions.us | (.components.api == \"operational\") and (.reasons.api == null) and (.error_rate.errors_5xx < 12)"'
"$BIN/wardctl" tenant delete --slug "$ES" >/dev/null 2>&1
rm -rf "$TMP"

# ---- the last verified backup: the test plays ward-backup's report (as the cell's
# admin) with a verify 30 h old; the page and wardctl both judge it from hb:*.
old=$(( $(date +%s) * 1000 - 30 * 3600 * 1000 ))
prev=$(rcli eu admin GET hb:backup:last-verified)
before=$(comp eu-backups) # (earlier tests may have left a failed verify: not operational)
export before
rcli eu admin SET hb:backup:last-verified "{\"region\":\"eu\",\"at_ms\":$old,\"ok\":true,\"checked_ms\":$old}" >/dev/null
check "a verified backup 30 h old: eu-backups degraded_performance on the page" \
	wait_for 10 bash -c '[ "$(comp eu-backups)" = degraded_performance ] && [ "$(comp us-backups)" = operational ]'
check "…and wardctl gives the reason: last verified backup, its age over the limit" \
	bash -c '"$BIN/wardctl" status components --region eu | jq -e ".regions.eu | (.components.backups == \"degraded_performance\") and (.reasons.backups | any(test(\"^last verified backup: 10[0-9]{4} s ago \\\\(over 93600 s\\\\)$\")))"'
if [ -n "$prev" ]; then rcli eu admin SET hb:backup:last-verified "$prev" >/dev/null; else rcli eu admin DEL hb:backup:last-verified >/dev/null; fi
check "…back to its state with the real report ($before)" \
	wait_for 10 bash -c '[ "$(comp eu-backups)" = "$before" ] || { "$BIN/wardctl" status components --region eu | jq -c .regions.eu.reasons; false; }'

# ---- queue depth (XLEN q:<svc>: consumers XDEL what they acked). First a burst
# handled: every entry leaves the stream, XLEN back to 0 (the page reads it).
for q in auth ticket audit; do
	check "queue depth: a burst of 300 pings handled by $q leaves q:$q empty (XLEN 0)" bash -c "
		'$BIN/wardctl' ping --region eu --service $q --count 300 --concurrency 30 | jq -e '.ok == 300' >/dev/null &&
		wait_for 10 bash -c '[ \"\$(rcli eu admin XLEN q:$q)\" = 0 ]' || { echo \"XLEN q:$q: \$(rcli eu admin XLEN q:$q)\"; false; }"
done
check "queue depth: …and wardctl names no queue depth for them (XLEN, as the page reads it)" \
	bash -c '! "$BIN/wardctl" status components --region eu | jq -e "[.regions.eu.reasons[]?[]?] | any(test(\"^queue depth\"))"'
# Then the eu audit daemon is frozen (SIGSTOP: its heartbeat stays fresh
# for the 15 s timeout) while 1100 entries wait in q:audit that its group has not
# read: eu-audit turns degraded, wardctl names the depth. Its connections are closed
# first (CLIENT KILL), so its blocked XREADGROUP is not handed a batch of them, and
# the entries are deleted before it resumes (and reconnects): it never reads one.
apid=$(pid_of eu audit)
before=$(comp eu-audit) # (earlier tests may have left it degraded: dead letters lately)
kill -STOP "$apid"
rcli eu admin CLIENT KILL USER audit >/dev/null
for i in $(seq 1100); do echo "XADD q:audit * depth-test $i"; done | rcli eu admin >"$TMP.ids" 2>&1
check "queue depth: 1100 entries not read yet → eu-audit degraded_performance (heartbeat fresh)" \
	wait_for 8 bash -c '[ "$(comp eu-audit)" = degraded_performance ] && [ "$(comp us-audit)" = operational ]'
check "queue depth: wardctl gives the reason (the depth, what is not read yet)" \
	bash -c '"$BIN/wardctl" status components --region eu | jq -e ".regions.eu | (.components.audit == \"degraded_performance\") and (.reasons.audit | any(test(\"^queue depth: q:audit has 1[0-9]{3} waiting \\\\(1[0-9]{3} not read yet, [0-9]+ not acked\\\\), over 1000$\")))"'
grep -E '^[0-9]+-[0-9]+$' "$TMP.ids" | sed 's/^/XDEL q:audit /' | rcli eu admin >/dev/null
kill -CONT "$apid"
rm -f "$TMP.ids"
check "queue depth: the entries gone and the daemon resumed, eu-audit back to its state ($before)" \
	wait_for 20 bash -c '[ "$(comp eu-audit)" = "$before" ] || { "$BIN/wardctl" status components --region eu | jq -c .regions.eu.reasons; false; }'
check "queue depth: …and wardctl names no queue depth any more" \
	bash -c '! "$BIN/wardctl" status components --region eu | jq -e ".regions.eu.reasons.audit // [] | any(test(\"^queue depth\"))"'

# ---- the status user reads health data only
check "status user: GET of a heartbeat" bash -c '[ -n "$(rcli us status GET hb:gateway:gateway-1)" ]'
check "status user: XLEN and XPENDING on queues" bash -c 'rcli us status XLEN q:auth | grep -qE "^[0-9]+$" && rcli us status XPENDING q:auth auth | head -1 | grep -qE "^[0-9]+$"'
check "status user: no XINFO GROUPS (XLEN is the depth; no group details)" bash -c 'rcli us status XINFO GROUPS q:auth | grep -q NOPERM'
check "status user: no XDEL on a queue" bash -c 'rcli us status XDEL q:auth 0-1 | grep -q NOPERM'
check "status user: no XINFO STREAM (it would show entries)" bash -c 'rcli us status XINFO STREAM q:auth | grep -q NOPERM'
check "status user: no XADD to a queue" bash -c 'rcli us status XADD q:auth "*" a b | grep -q NOPERM'
check "status user: no rate-limit keys" bash -c 'rcli us status GET rl:gateway:x | grep -q NOPERM'
check "status user: no write on incidents" bash -c 'rcli us status SET hb:ops:status:incident:x y | grep -q NOPERM'
check "status user: no XREADGROUP" bash -c 'rcli us status XREADGROUP GROUP auth x COUNT 1 STREAMS q:auth ">" | grep -q NOPERM'
check "status user: no DEL of a heartbeat" bash -c 'rcli us status DEL hb:gateway:gateway-1 | grep -q NOPERM'
check "status user: cannot read a queue's entries (XRANGE)" bash -c 'rcli us status XRANGE q:auth - + COUNT 1 | grep -q NOPERM'
check "status user: cannot read dead letters' entries (XREVRANGE)" bash -c 'rcli us status XREVRANGE dl:auth + - COUNT 1 | grep -q NOPERM'
check "status user: may read a queue's length" bash -c 'rcli us status XLEN q:auth | grep -qv NOPERM'
check "status user has no database role" bash -c '! [ -e "$WARD_VAR/us/secrets/pg-status" ]'

# ---- headless Chromium: renders, no console errors (CSP violations are errors)
if command -v chromium >/dev/null; then
	prof=$(mktemp -d)
	chmod 777 "$prof"
	log=$(mktemp)
	chmod 666 "$log"
	as_user timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
		--disable-component-update --disable-sync --no-first-run --user-data-dir="$prof" \
		--enable-logging=stderr --v=0 --ignore-certificate-errors \
		--host-resolver-rules="MAP status.$WARD_DOMAIN 127.0.0.1" \
		--dump-dom "https://status.$WARD_DOMAIN:$SP/" >"$log.dom" 2>"$log"
	check "Chromium renders the page (DOM has the regions)" grep -q 'Region uk' "$log.dom"
	check "Chromium: no console errors or CSP violations" bash -c "! grep -iE 'CONSOLE|Content Security Policy|Refused to' '$log'"
	rm -rf "$prof" "$log" "$log.dom"
else
	not_ok "chromium is not installed (ops/deps installs it)"
fi

# ==== the status host behind the gateway's request guard (issue 3): what libevent
# would refuse with its own page (no security headers) gets a problem document with
# the status page's own strict header set and Connection: close.
ST=$(mktemp -d)
export ST
# sraw NAME BYTES: sent as is over TLS (SNI status.<domain>); $ST/NAME.{h,b,all}.
sraw() {
	python3 - "$SP" "status.$WARD_DOMAIN" "$1" "$ST" "$2" <<'PY'
import socket, ssl, sys
port, host, name, tdir, data = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=host)
t.sendall(data.encode("latin-1").decode("unicode_escape").encode("latin-1"))
out = b""
try:
    while True:
        b = t.recv(65536)
        if not b: break
        out += b
except (socket.timeout, ssl.SSLError, ConnectionError):
    pass
head, _, body = out.partition(b"\r\n\r\n")
open(f"{tdir}/{name}.h", "wb").write(head + b"\r\n")
open(f"{tdir}/{name}.b", "wb").write(body)
open(f"{tdir}/{name}.all", "wb").write(out)
PY
}
shdr() { grep -i "^$2:" "$ST/$1.h" | head -1 | cut -d: -f2- | tr -d '\r' | sed 's/^ //'; }
status_headers() { # the status page's set: HSTS, its strict CSP, nosniff, …
	local n=$1 h
	for h in Strict-Transport-Security Content-Security-Policy X-Content-Type-Options Referrer-Policy X-Frame-Options Cache-Control X-Request-Id; do
		grep -qi "^$h:" "$ST/$n.h" || { echo "$n: missing $h"; cat "$ST/$n.h"; return 1; }
	done
	shdr "$n" Content-Security-Policy | grep -q "^default-src 'none'; style-src 'self';.*frame-ancestors 'none'" &&
		shdr "$n" X-Content-Type-Options | grep -q nosniff
}
status_refused() { # status_refused NAME STATUS BYTES: that status, problem+json, headers, no libevent page
	sraw "$1" "$3"
	head -1 "$ST/$1.h" | grep -q "^HTTP/1.[01] $2 " || { echo "status: $(head -1 "$ST/$1.h")"; return 1; }
	status_headers "$1" && shdr "$1" Content-Type | grep -q 'application/problem+json' &&
		python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["status"]==int(sys.argv[2]) and d["detail"]' "$ST/$1.b" "$2" &&
		shdr "$1" Connection | grep -qi close && ! grep -aqi '<html\|<title' "$ST/$1.all"
}
export -f sraw shdr status_headers status_refused
SH=status.$WARD_DOMAIN
check "status guard: a sane raw request is served (200, the page's headers)" bash -c \
	"sraw s0 'GET /api/v2/status.json HTTP/1.1\\r\\nHost: $SH\\r\\nConnection: close\\r\\n\\r\\n' && head -1 $ST/s0.h | grep -q ' 200 ' && status_headers s0 && grep -q indicator $ST/s0.b"
check "status guard: a garbage request line → 400 problem, strict headers, no libevent page" \
	status_refused s1 400 'garbage\r\n\r\n'
check "status guard: a header block over the status page's limit → 431 problem" \
	status_refused s2 431 "GET / HTTP/1.1\\r\\nHost: $SH\\r\\nX-Big: $(head -c 10000 /dev/zero | tr '\0' a)\\r\\n\\r\\n"
check "status guard: an unknown method → 501 problem" \
	status_refused s3 501 "BREW / HTTP/1.1\\r\\nHost: $SH\\r\\n\\r\\n"
check "status guard: a bad Content-Length → 400 problem" \
	status_refused s4 400 "GET / HTTP/1.1\\r\\nHost: $SH\\r\\nContent-Length: -1\\r\\n\\r\\n"
check "status guard: Transfer-Encoding → 411 problem" \
	status_refused s5 411 "POST / HTTP/1.1\\r\\nHost: $SH\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n"
check "status guard: a body (the page takes none) → 413 problem" \
	status_refused s6 413 "POST / HTTP/1.1\\r\\nHost: $SH\\r\\nContent-Length: 4\\r\\n\\r\\nabcd"
check "status guard: a header line without a colon → 400 problem" \
	status_refused s7 400 "GET / HTTP/1.1\\r\\nHost: $SH\\r\\nBad Header\\r\\n\\r\\n"
check "status guard: TRACE reaches the page's own 405 (headers, no libevent page)" bash -c \
	"sraw s8 'TRACE / HTTP/1.1\\r\\nHost: $SH\\r\\nConnection: close\\r\\n\\r\\n' && head -1 $ST/s8.h | grep -q ' 405 ' && status_headers s8 && ! grep -aqi '<html' $ST/s8.all"
check "status guard: a request after a refused one on the same connection is not served" bash -c \
	"sraw s9 'garbage\\r\\n\\r\\nGET / HTTP/1.1\\r\\nHost: $SH\\r\\n\\r\\n' && [ \"\$(grep -ao 'HTTP/1.1 [0-9]*' $ST/s9.all | tr '\\n' ' ')\" = 'HTTP/1.1 400 ' ]"
check "status guard: the page still answers" bash -c 'st /api/v2/status.json | jq -e .status.indicator'
rm -rf "$ST"

# ==== one writer of the uptime file when several ward-status processes serve the page:
# a second one (status-2) with the same config but its own state dir, so what each
# writes shows apart. Only the holder of the lease hb:status:uptime:owner records
# uptime and writes its file; the other serves the page and writes nothing.
G2=$WARD_VAR/status/s2
mkdir -p "$G2/state" && chmod 755 "$G2"
[ "$(id -u)" -eq 0 ] && chown "$WUSER" "$G2/state"
G2LOG=$WARD_VAR/status/log/status-2.log G2ERR=$WARD_VAR/status/log/status-2.stderr
G2S=$(free_port)
export G2 G2LOG G2S
python3 - "$WARD_VAR/status/etc/status.yaml" "$G2/status.yaml" "$G2/state" "$G2LOG" "$G2S" <<'PY'
import sys
src, dst, state, log, status = sys.argv[1:6]
out = []
for line in open(src):
    if line.startswith("instance:"): line = "instance: status-2\n"
    elif line.startswith("log_file:"): line = f"log_file: {log}\n"
    elif line.startswith("  listen:"): line = f"  listen: 127.0.0.1:{status}\n"
    elif line.startswith("  state_dir:"): line = f"  state_dir: {state}\n"
    out.append(line)
open(dst, "w").write("".join(out))
PY
chmod 644 "$G2/status.yaml"
owner() { rcli us status GET hb:status:uptime:owner; }
export -f owner
g2_start() { spawn_as_user "$G2/status.pid" "$G2ERR" "$BIN/ward-status" --config "$G2/status.yaml"; }
g2_stop() { # g2_stop SIGNAL: and wait for it to exit
	local p; p=$(cat "$G2/status.pid" 2>/dev/null) || return 0
	kill -"$1" "$p" 2>/dev/null
	for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
	return 1
}
logged() { grep -c "\"msg\":\"status: $2\"" "$1" 2>/dev/null || true; }
export -f logged
g2_start
check "uptime lease: a second ward-status starts as a standby, naming status-1 as the owner" \
	wait_for 15 bash -c '[ "$(logged "$G2LOG" "uptime standby")" -ge 1 ] && grep "uptime standby" "$G2LOG" | grep -q "\"owner\":\"status-1/"'
check "uptime lease: hb:status:uptime:owner holds status-1's value, with an expiry" \
	bash -c 'owner | grep -q "^status-1/[0-9a-f]\{16\}$" && t=$(rcli us status TTL hb:status:uptime:owner) && [ "$t" -gt 0 ] && [ "$t" -le 5 ]'
check "uptime lease: wardctl status components names the owner" \
	bash -c '"$BIN/wardctl" status components --region us | jq -e ".regions.us.uptime_owner | startswith(\"status-1/\")"'
check "uptime lease: the standby serves the page too" \
	wait_for 10 bash -c 'curl -sS --max-time 5 --cacert "$WARD_CA" --resolve "status.$WARD_DOMAIN:$G2S:127.0.0.1" "https://status.$WARD_DOMAIN:$G2S/api/v2/components.json" | jq -e "[.components[] | select(.group == false)] | length == 21"'
check "uptime lease: the owner publishes its records (hb:status:uptime:records: region component day observed down)" \
	bash -c 'v=$(rcli us status GET hb:status:uptime:records) && [ "$(echo "$v" | head -1)" = "ward-status-uptime 1" ] && echo "$v" | tail -n +2 | grep -qE "^eu tickets [0-9]+ [0-9]+ [1-9][0-9]*$" && ! echo "$v" | tail -n +2 | grep -vqE "^[a-z0-9-]+ [a-z]+ [0-9]+ [0-9]+ [0-9]+$"'
check "uptime lease: the standby shows the same uptime (eu-tickets below 100%: an outage it never saw)" \
	wait_for 15 bash -c 'curl -sS --max-time 5 --cacert "$WARD_CA" --resolve "status.$WARD_DOMAIN:$G2S:127.0.0.1" "https://status.$WARD_DOMAIN:$G2S/api/v2/components.json" | jq -e ".components[] | select(.id == \"eu-tickets\") | .uptime_90d < 100"'
check "uptime lease: the status user writes only its own keys (hb:status:*), no other service's" \
	bash -c 'rcli us status SET hb:gateway:status-uptime x | grep -q NOPERM && rcli us status SET hb:auth:x x | grep -q NOPERM'
sleep 3
check "uptime lease: the lease stays with status-1 while both run" bash -c 'owner | grep -q "^status-1/" && [ "$(logged "$G2LOG" "uptime owner")" = 0 ]'
g2_stop TERM
check "uptime lease: the standby stopped writes no uptime file, not even at shutdown" \
	bash -c '[ -z "$(ls -A "$G2/state")" ]'
# The owner stops (SIGTERM): it saves, releases the lease, and the standby takes over.
g2_start
wait_for 15 bash -c '[ "$(logged "$G2LOG" "uptime standby")" -ge 2 ]' >/dev/null
UF=$SD/state/uptime
u1=$(stat -c %i "$UF" 2>/dev/null)
g1log=$SD/log/status.log
n_owner=$(logged "$g1log" "uptime owner")
p1=$(spid)
kill -TERM "$p1"
for _ in $(seq 100); do kill -0 "$p1" 2>/dev/null || break; sleep 0.1; done
check "uptime lease: status-1 at SIGTERM saves its file and releases the lease" \
	bash -c "[ \"\$(logged '$g1log' 'uptime lease released')\" -ge 1 ] && [ \"\$(stat -c %i '$UF')\" != '$u1' ]"
check "uptime lease: the standby takes it over within a few polls and writes its own file at once" \
	wait_for 8 bash -c 'owner | grep -q "^status-2/" && [ "$(logged "$G2LOG" "uptime owner")" = 1 ] && [ -s "$G2/state/uptime" ]'
check "uptime lease: …carrying on from status-1's records (its file has the eu tickets outage)" \
	bash -c "awk '\$1 == \"eu\" && \$2 == \"tickets\" && \$5 > 0 { f = 1 } END { exit !f }' '$G2/state/uptime'"
spawn_as_user "$SD/run/status.pid" "$SD/log/status.stderr" "$BIN/ward-status" --config "$SD/etc/status.yaml"
check "uptime lease: status-1 restarted is now the standby" \
	wait_for 15 bash -c "grep 'uptime standby' '$g1log' | tail -1 | grep -q '\"owner\":\"status-2/' && owner | grep -q '^status-2/'"
u1=$(stat -c %i "$UF")
sleep 2
check "uptime lease: …and writes nothing while standby" bash -c "[ \"\$(stat -c %i '$UF')\" = '$u1' ] && [ \"\$(logged '$g1log' 'uptime owner')\" = $n_owner ]"
# The owner is killed (no release): its lease expires (5 polls) and status-1 takes over.
g2_stop KILL
check "uptime lease: a killed owner's lease expires and the standby takes over" \
	wait_for 15 bash -c "owner | grep -q '^status-1/' && [ \"\$(logged '$g1log' 'uptime owner')\" = $((n_owner + 1)) ]"
check "uptime lease: …carrying on from the file (its records of before, then saved at once)" \
	bash -c "[ \"\$(stat -c %i '$UF')\" != '$u1' ] && grep -q '^us tickets ' '$UF'"
check "uptime lease: status-2 became the owner once only" \
	bash -c "[ \"\$(logged '$G2LOG' 'uptime owner')\" = 1 ]"
check "the status page answers again on status-1" wait_for 15 bash -c 'st /api/v2/status.json | jq -e .status.indicator'
rm -rf "$G2"

# ==== the status process killed (kill -9: no save, no release) and restarted keeps its
# uptime (state_dir): the eu tickets outage recorded before is still on the page.
p1=$(spid)
kill -KILL "$p1"
for _ in $(seq 100); do kill -0 "$p1" 2>/dev/null || break; sleep 0.1; done
check "ward-status killed: the page is gone (nothing else serves it: not the us gateway)" \
	bash -c '! st /api/v2/status.json -f >/dev/null 2>&1'
spawn_as_user "$SD/run/status.pid" "$SD/log/status.stderr" "$BIN/ward-status" --config "$SD/etc/status.yaml"
check "ward-status restarted: the owner again once its old lease expired" \
	wait_for 20 bash -c "owner | grep -q '^status-1/' && [ \"\$(logged '$g1log' 'uptime owner')\" = $((n_owner + 2)) ]"
check "…and its page keeps the uptime: eu-tickets' outage still below 100%" \
	wait_for 10 bash -c 'st /api/v2/components.json | jq -e ".components[] | select(.id == \"eu-tickets\") | .uptime_90d < 100"'
check "…served by the new ward-status process" bash -c '[ "$(listening $(spid))" = "$SP" ] && rcli us status GET hb:status:status-1 | jq -e ".pid == $(spid)"'

