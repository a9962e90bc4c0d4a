#!/usr/bin/env bash
# tests/bench/backup.sh — backup and restore throughput of one tenant of
# BENCH_BACKUP_TICKETS tickets (default 100000), beside baselines measured in the same
# run (SPEC §5 lines):
#   backup_mbps    wardctl backup run of the tenant (every row of every table read
#                  under RLS, chunked, sealed AES-256-GCM, written to the local target,
#                  manifest read back): sealed bytes / wall time
#   restore_mbps   wardctl backup restore of the closed tenant (read, hash, open,
#                  parse, put every row back in one transaction): same bytes / time
#   baselines      the tenant's ticket rows (tickets + messages) with COPY … TO STDOUT
#                  | openssl enc -aes-256-ctr (openssl enc has no GCM) to a file, and
#                  back with openssl enc -d | COPY … FROM STDIN into scratch tables
#                  with the same indexes (LIKE … INCLUDING ALL);
#                  openssl speed -evp aes-256-gcm (1 MiB blocks) as the crypto ceiling.
#   Target: ≥ 0.5 × the COPY | openssl baseline (or disk-bound: see *_disk_mbps, a
#   dd with fsync of the same size on the same filesystem).
# The tickets: 20 through the API, then N sealed by tests/bench/backup_seed.c exactly
# as ward-ticket seals them (DEK unwrapped with the KEK, AAD "<tenant>|<table>|<column>|
# <row id>") and loaded with COPY (the API path makes ~100 tickets/s here: 100,000
# would take most of an hour); one of them is read back decrypted through the API.
# The eu gateway's rate limits are raised for the run (and restored). Uses the stack
# of $WARD_VAR if set, else starts its own.
set -uo pipefail
TOP=$(cd "$(dirname "$0")/../.." && pwd)
cd "$TOP"
N=${BENCH_BACKUP_TICKETS:-100000}
. "$TOP/tests/bench/lib.sh"
bench_stack

P=${WARD_EU_HTTPS##*:}
PG=$WARD_EU_PG
W=$(mktemp -d /tmp/ward-bench-backup.XXXXXX)
chmod 755 "$W"
CONF=$WARD_VAR/eu/etc/gateway.yaml
cp "$CONF" "$W/gateway.yaml.orig"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "0" }'; }
line() { echo "BENCH name=$1 value=$2 unit=$3 baseline=$4 baseline_value=$5 ratio=$6"; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", b / 1048576 / s; else print "0" }'; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
psql_() { psql -X -q -tA -v ON_ERROR_STOP=1 "$PG" -c "$1"; }
cleanup() {
	cp "$W/gateway.yaml.orig" "$CONF"
	bench_restart_gateway >/dev/null 2>&1
	psql_ "DROP TABLE IF EXISTS public.bench_backup_t, public.bench_backup_m" >/dev/null 2>&1
	rm -rf "$W"
	[ $OWN = 1 ] && stack_down
}
trap cleanup EXIT

{
	cat "$W/gateway.yaml.orig"
	printf 'ratelimit:\n  per_source: 100000000\n  per_source_tenant: 100000000\n  per_credential: 100000000\n'
} >"$CONF"
bench_restart_gateway || { echo "bench: the gateway did not restart" >&2; exit 1; }

# A tenant, its admin (one-time password changed first), an API key with tickets:write.
SLUG=benchbk$$
HOST=$SLUG.eu.$WARD_DOMAIN
URL=https://$HOST:$P
cu() { curl -sS --max-time 20 --cacert "$WARD_CA" --resolve "$HOST:$P:127.0.0.1" -H "Origin: $URL" "$@"; }
KEY=$(bench_api_key "$SLUG" "Bench Backup" "$W/jar")
[ -n "$KEY" ] || { echo "bench: no API key (login, password change or api-keys failed)" >&2; exit 1; }
T=$(psql_ "SELECT id FROM tenant.tenants WHERE slug = '$SLUG'")

# Tickets: a few through the API (ward-ticket's own path), then the bulk with
# tests/bench/backup_seed.c, which seals like ward-ticket (the tenant's DEK unwrapped
# with the KEK, the same AAD per row and column) and loads with COPY; a seeded ticket
# must then read back decrypted through the API (same keys, same AAD, same format).
for i in $(seq 20); do
	cu -o /dev/null -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
		-d "{\"subject\":\"api $i\",\"body\":\"api body $i\"}" "$URL/api/v1/tickets"
done
PKGS="libevent libevent_openssl hiredis libprotobuf-c yaml-0.1 jansson openssl libpq libargon2 gmime-3.0"
# shellcheck disable=SC2046
cc -std=c17 -D_GNU_SOURCE -O2 -Icommon $(pkg-config --cflags $PKGS) -o "$W/backup_seed" \
	tests/bench/backup_seed.c build/rel/libward.a $(pkg-config --libs $PKGS) -lm ||
	{ echo "bench: cannot build backup_seed (make first)" >&2; exit 1; }
count() { psql_ "SELECT count(*) FROM ticket.tickets WHERE tenant_id = '$T'"; }
t0=$(now)
"$W/backup_seed" "$PG" "$WARD_VAR/eu/secrets/kek" "$T" "$N" >/dev/null || { echo "bench: seeding failed" >&2; exit 1; }
NT=$(count)
echo "# $NT tickets (+ one message each) sealed and loaded in $(secs "$t0" "$(now)") s" >&2
SEEDED=$(psql_ "SELECT id FROM ticket.tickets WHERE tenant_id = '$T' AND created_by = 'service:bench' ORDER BY number DESC LIMIT 1")
cu -H "Authorization: Bearer $KEY" "$URL/api/v1/tickets/$SEEDED" | grep -q "Printer on fire in room $N" ||
	{ echo "bench: a seeded ticket does not read back through the API" >&2; exit 1; }

# Backup.
t0=$(now)
out=$(bin/wardctl backup run --region eu --tenant "$SLUG") || { echo "bench: backup failed: $out" >&2; exit 1; }
bs=$(secs "$t0" "$(now)")
BYTES=$(echo "$out" | sed -n 's/.*"bytes":\([0-9]*\).*/\1/p' | head -1)
ROWS=$(echo "$out" | sed -n 's/.*"rows":\([0-9]*\).*/\1/p' | head -1)
echo "# backup: $ROWS rows, $BYTES sealed bytes in $bs s" >&2

# Baseline: the ticket rows out with COPY, through openssl enc, to a file (fsynced).
t0=$(now)
psql -X -q -v ON_ERROR_STOP=1 "$PG" -c "COPY (SELECT * FROM ticket.tickets WHERE tenant_id = '$T') TO STDOUT" \
	| openssl enc -aes-256-ctr -pbkdf2 -pass pass:bench -out "$W/t.enc" &&
psql -X -q -v ON_ERROR_STOP=1 "$PG" -c "COPY (SELECT * FROM ticket.messages WHERE tenant_id = '$T') TO STDOUT" \
	| openssl enc -aes-256-ctr -pbkdf2 -pass pass:bench -out "$W/m.enc" && sync -f "$W/t.enc"
cs=$(secs "$t0" "$(now)")
CBYTES=$(($(stat -c %s "$W/t.enc") + $(stat -c %s "$W/m.enc")))
# Restore baseline: decrypt and COPY into scratch tables of the same shape.
psql_ "CREATE TABLE public.bench_backup_t (LIKE ticket.tickets INCLUDING ALL); CREATE TABLE public.bench_backup_m (LIKE ticket.messages INCLUDING ALL)"
t0=$(now)
openssl enc -d -aes-256-ctr -pbkdf2 -pass pass:bench -in "$W/t.enc" |
	psql -X -q -v ON_ERROR_STOP=1 "$PG" -c "COPY public.bench_backup_t FROM STDIN" &&
openssl enc -d -aes-256-ctr -pbkdf2 -pass pass:bench -in "$W/m.enc" |
	psql -X -q -v ON_ERROR_STOP=1 "$PG" -c "COPY public.bench_backup_m FROM STDIN"
crs=$(secs "$t0" "$(now)")
# Disk: the same number of bytes written and fsynced where the backups go.
t0=$(now)
dd if=/dev/zero of="$WARD_VAR/eu/backups/.bench-dd" bs=1M count=$(((BYTES + 1048575) / 1048576)) conv=fsync status=none
ds=$(secs "$t0" "$(now)")
rm -f "$WARD_VAR/eu/backups/.bench-dd"
GCM=$(openssl speed -evp aes-256-gcm -bytes 1048576 -seconds 3 2>/dev/null | awk 'tolower($1) == "aes-256-gcm" { v = $NF; sub(/k$/, "", v); printf "%.1f", v * 1000 / 1048576 }')

# Restore: close the tenant, bring it back.
bin/wardctl tenant delete --slug "$SLUG" >/dev/null || { echo "bench: tenant delete failed" >&2; exit 1; }
t0=$(now)
out=$(bin/wardctl backup restore --region eu --tenant "$SLUG") || { echo "bench: restore failed: $out" >&2; exit 1; }
rs=$(secs "$t0" "$(now)")
[ "$(count)" = "$NT" ] || { echo "bench: restored $(count) tickets, want $NT" >&2; exit 1; }

B=$(mbps "$BYTES" "$bs")
R=$(mbps "$BYTES" "$rs")
CB=$(mbps "$CBYTES" "$cs")
CR=$(mbps "$CBYTES" "$crs")
D=$(mbps "$BYTES" "$ds")
line backup_mbps_${NT}_tickets "$B" MB/s copy_openssl_enc "$CB" "$(ratio "$B" "$CB")"
line restore_mbps_${NT}_tickets "$R" MB/s openssl_dec_copy "$CR" "$(ratio "$R" "$CR")"
line backup_seconds_${NT}_tickets "$bs" s none 0 0
line restore_seconds_${NT}_tickets "$rs" s none 0 0
line backup_vs_aes256gcm_speed "$B" MB/s openssl_speed_aes256gcm "$GCM" "$(ratio "$B" "$GCM")"
line backup_disk_mbps "$B" MB/s dd_fsync "$D" "$(ratio "$B" "$D")"
