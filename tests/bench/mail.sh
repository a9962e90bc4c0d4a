#!/usr/bin/env bash
# tests/bench/mail.sh — mail ingest end to end (SPEC §6), beside Postfix's smtp-sink
# measured in the same run with the same load (smtp-source, Debian's postfix
# package; ops/deps installs it without configuring a mail server):
#   mail_e2e_rps          messages/s from the first SMTP connection until every
#                         message is a committed ticket (ward-mail-ingest: spool
#                         log fdatasynced, 250; ward-ticket: the ticket number in
#                         a short asynchronous transaction, then one transaction
#                         per mail; auth.mail_customer only for a sender the
#                         tenant has no account for), 10 parallel senders of 4 KiB
#                         mails (smtp-source -s 10 -l 4096), against smtp-sink's
#                         rate for the same smtp-source run (target ≥ 0.5)
#   mail_smtp_accept_rps  messages/s until smtp-source finished (every 250 given,
#                         each one durable in the spool), same baseline
#   mail_cpu_ms_<part>    CPU time per mail of each daemon of the cell, of Redis
#                         and of PostgreSQL during the end-to-end run (user +
#                         system, from /proc; tests/bench/lib.sh): where it goes
# ward-ticket and ward-auth run BENCH_WORKERS worker processes each (default 4,
# `workers:` in their configs, restored after the run; printed below), as in
# tests/bench/ticket.sh: one PostgreSQL transaction at a time per process would
# cap the end-to-end rate. ward-mail-ingest appends its spool off the event loop
# (spool.sync_threads writer threads: one writev and one fdatasync of the spool
# log for every message accepted meanwhile), still answering 250 only once the
# message is durable.
#   mail_cpu_ms_total, mail_cpu_ceiling_rps_<n>cores  the sum of those, and
#                         the rate it allows if the cell had every core of the
#                         machine to itself (nproc × 1000 / total), beside
#                         smtp-sink's rate: a same-run ceiling for the ratio
# Why the ratio is still far below 0.5 (2-core dev VM shared with other work):
# smtp-sink keeps nothing; Ward spends ≈2.8 ms CPU per mail over all daemons,
# Redis and PostgreSQL (PostgreSQL ≈1.55, mail-ingest ≈0.5: SMTP, MIME, spool;
# ticket ≈0.4; Redis ≈0.2 with AOF fsync always; audit ≈0.07; auth ≈0: the
# RCPT answer is kept 1 s), so two idle cores cap it near 700 msg/s
# (mail_cpu_ceiling_rps), a ratio of ≈0.2-0.28 against smtp-sink's 2500-3800
# msg/s here. 0.5 would need ≤ 0.5-0.8 ms per mail and per core: PostgreSQL
# alone is 2-3 times that. Its share: the ward-ticket backends ≈1.2 ms (the
# one statement that stores a new ticket ≈0.5: 4 rows, 11 index entries and 8
# foreign-key checks, 4 of them FOR KEY SHARE on the same tenant row from
# concurrent workers, hence MultiXacts; the ticket number's own short
# transaction; the audit outbox row), ward-audit's ≈0.2 ms (event + details).
# Before → after the spool log, the asynchronous ticket number, one hop for known
# senders and fewer round trips (back to back, same load, 2026-11-30, load ≈7):
# e2e 174, 152 → 249, 250 msg/s (ratio 0.072, 0.059 → 0.099, 0.109); CPU per
# mail 6.6, 6.2 → 4.0, 4.2 ms (PostgreSQL 3.0 → 2.0, mail-ingest 1.3 → 0.8, auth
# 0.6 → 0.2, Redis 0.7 → 0.45, ticket 0.8 → 0.55). PostgreSQL statements per mail
# 26 → 16 (auth 11 → 1; ticket 12 in 6 round trips, was 10), one device flush per
# batch of accepted mails instead of one per mail.
# Then (the RCPT answer kept smtp.recipient_cache_ms, 1 s, found addresses only;
# the spool writers take their batch once they hold the log: ≈2 mails per
# fdatasync instead of ≈1, strace -c; no state/ open + unlink per mail; mail_text_clean
# without a call per byte: MIME ≈90 → 60 us; ticket.ingest_mail in 2 round trips
# + the number's, was 4 + 1; ticket.messages keeps a 4 KiB sealed body in its row,
# no TOAST chunks and no futile pglz pass, migration 094) — before, after,
# before, after, BENCH_MAIL_N=2000 on one dev stack, 2026-11-30, load ≈2:
# CPU per mail 4.39, 4.32 → 2.75, 2.84 ms (PostgreSQL 2.22, 2.21 → 1.56, 1.58;
# mail-ingest 0.83, 0.80 → 0.52, 0.55; Redis 0.47, 0.47 → 0.20, 0.22; ticket
# 0.57, 0.57 → 0.40, 0.42; auth 0.22, 0.22 → 0.01, 0.00; audit 0.085, 0.065 →
# 0.07, 0.07); e2e 278, 319 → 500, 379 msg/s (ratio 0.114, 0.100 → 0.132,
# 0.148); SMTP accepted 284, 325 → 743,
# 585 msg/s; CPU ceiling 456, 463 → 729, 706 msg/s. Wall-clock rates and
# smtp-sink's (2400-3800) move with the machine's other work: the CPU figures
# are the evidence.
# Uses the stack of $WARD_VAR if set, else starts its own.
set -uo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
cd "$TOP"
N=${BENCH_MAIL_N:-2000}
WORKERS=${BENCH_WORKERS:-4}
S=${BENCH_MAIL_SENDERS:-10}
L=${BENCH_MAIL_BYTES:-4096}
command -v smtp-source >/dev/null && command -v smtp-sink >/dev/null ||
	{ echo "bench: smtp-source and smtp-sink needed (postfix, ops/deps)" >&2; exit 1; }
. "$TOP/tests/bench/lib.sh"
bench_stack
SINK_PID=
W=$(mktemp -d /tmp/ward-bench-mail.XXXXXX)
chmod 755 "$W"
for s in ticket auth; do cp "$WARD_VAR/eu/etc/$s.yaml" "$W/$s.yaml.orig"; done
cleanup() {
	[ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null
	for s in ticket auth; do
		if ! cmp -s "$W/$s.yaml.orig" "$WARD_VAR/eu/etc/$s.yaml"; then
			cp "$W/$s.yaml.orig" "$WARD_VAR/eu/etc/$s.yaml"
			bench_restart_svc $s >/dev/null 2>&1
		fi
	done
	rm -rf "$W"
	[ $OWN = 1 ] && stack_down
}
trap cleanup EXIT
if [ "$WORKERS" -gt 1 ]; then
	for s in ticket auth; do
		{ grep -v '^workers:' "$W/$s.yaml.orig"; echo "workers: $WORKERS"; } >"$WARD_VAR/eu/etc/$s.yaml"
		bench_restart_svc $s || { echo "bench: ward-$s did not restart with $WORKERS workers" >&2; exit 1; }
	done
fi
echo "bench: ward-ticket and ward-auth with $WORKERS worker processes each (BENCH_WORKERS)" >&2

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "0" }'; }
line() { echo "BENCH name=$1 value=$2 unit=$3 baseline=$4 baseline_value=$5 ratio=$6"; }
now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.1f", n / (b - a) }'; }
PG=$WARD_EU_PG
SMTP=$WARD_EU_SMTP
SLUG=bench-mail
bin/wardctl tenant create --slug $SLUG --region eu --name "Bench Mail" --admin-email boss@bench-mail.example >/dev/null 2>&1
TID=$(psql -X -q -tA "$PG" -c "SELECT id FROM tenant.tenants WHERE slug = '$SLUG'")
TO=support@$SLUG.eu.$WARD_DOMAIN
tickets() { psql -X -q -tA "$PG" -c "SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$TID'"; }
# wait_tickets COUNT: until the tenant has COUNT tickets (at most 600 s); 0 or 1.
wait_tickets() {
	local end=$((SECONDS + 600))
	while [ $SECONDS -lt $end ]; do
		[ "$(tickets)" -ge "$1" ] && return 0
		sleep 0.05
	done
	return 1
}
src() { # src HOST:PORT MSGS: the load, as smtp-source sends it
	smtp-source -s "$S" -m "$2" -l "$L" -f bench@example.com -t "$TO" -M bench.example "$1" 2>&1
}

# Warm up (connections, the sender's account, caches).
t=$(tickets)
src "$SMTP" 20 >/dev/null
wait_tickets $((t + 20)) || { echo "bench: warm-up mail did not become tickets" >&2; exit 1; }

bench_cpu_take >"$W/cpu0"

# Ward, end to end.
t=$(tickets)
t0=$(now)
out=$(src "$SMTP" "$N")
t1=$(now)
if [ -n "$out" ]; then echo "bench: smtp-source against ward-mail-ingest: $out" >&2; fi
case $out in *fatal*) exit 1 ;; esac
wait_tickets $((t + N)) || { echo "bench: only $(($(tickets) - t)) of $N mails became tickets" >&2; exit 1; }
t2=$(now)
[ "$(tickets)" -eq $((t + N)) ] || { echo "bench: $(($(tickets) - t)) tickets for $N mails" >&2; exit 1; }
e2e=$(rate "$N" "$t0" "$t2")
cpu_lines=$(bench_cpu_per "$W/cpu0" "$N" mail_cpu_ms ms/mail 1000)
acc=$(rate "$N" "$t0" "$t1")

# smtp-sink: the same smtp-source load against Postfix's test server (accepts and
# discards), on a free port, as the unprivileged user.
SP=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
smtp-sink -u "$WUSER" "127.0.0.1:$SP" 256 &
SINK_PID=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$SP") 2>/dev/null && break; sleep 0.1; done
src "127.0.0.1:$SP" 20 >/dev/null
s0=$(now)
out=$(src "127.0.0.1:$SP" "$N")
s1=$(now)
if [ -n "$out" ]; then echo "bench: smtp-source against smtp-sink: $out" >&2; fi
case $out in *fatal*) exit 1 ;; esac
sink=$(rate "$N" "$s0" "$s1")
kill "$SINK_PID" 2>/dev/null
wait "$SINK_PID" 2>/dev/null
SINK_PID=

line mail_e2e_rps_s${S}_${L}B "$e2e" msg/s smtp_sink_rps_s${S}_${L}B "$sink" "$(ratio "$e2e" "$sink")"
line mail_smtp_accept_rps_s${S}_${L}B "$acc" msg/s smtp_sink_rps_s${S}_${L}B "$sink" "$(ratio "$acc" "$sink")"
printf '%s\n' "$cpu_lines"
# The ceiling those CPU figures set: every core of the machine given to the cell
# and nothing else, how many mails per second the measured CPU per mail (all
# daemons, Redis, PostgreSQL) allows, beside smtp-sink's rate.
cpu_ms=$(printf '%s\n' "$cpu_lines" | sed -n 's/.* value=\([0-9.]*\) .*/\1/p' | awk '{ t += $1 } END { printf "%.3f", t }')
ceil=$(awk -v c="$(nproc)" -v t="$cpu_ms" 'BEGIN { if (t > 0) printf "%.1f", c * 1000 / t; else print 0 }')
line mail_cpu_ms_total "$cpu_ms" ms/mail none 0 0
line mail_cpu_ceiling_rps_$(nproc)cores "$ceil" msg/s smtp_sink_rps_s${S}_${L}B "$sink" "$(ratio "$ceil" "$sink")"
line mail_bench_workers_ticket_auth "$WORKERS" processes none 0 0
