#!/usr/bin/env bash
# test_backup_imds.sh — issue 8: deployed backups go to S3 with the backup instance's
# IAM role credentials (backup.s3.credentials: instance), fetched from the EC2
# instance metadata service, IMDSv2 only. tests/e2e/imds_emu.py plays the metadata
# service (session tokens, 401 without one, the role's temporary credentials) and an
# S3 front that checks each request's SigV4 signature with the secret of its key id
# and its X-Amz-Security-Token (signed), before a real s3rver. The uk cell's
# ward-backup is reconfigured (then put back as it was):
#   the emulator is faithful: a GET without a session token (IMDSv1) → 401;
#   run → verify → restore with instance credentials, every S3 request carrying the
#   current session token; no secret and no token in the logs;
#   rotation: credentials near Expiration are renewed before the next run (the old ones
#   revoked: never presented again), kept while still valid if the metadata service is
#   down then; credentials revoked early → 403 ExpiredToken → renewed at once, the run
#   completes;
#   denials: the metadata service down, a metadata service without IMDSv2 (the client
#   never falls back to a GET without a token), no role, Code != Success, expired
#   credentials, malformed JSON → the run fails with a clear error, no catalog row;
#   instance credentials with a static key configured → refused at start.
# shellcheck disable=SC1091
. "$(dirname "$0")/lib.sh"

R=uk
P=$(port_of $R HTTPS)
TMP=$(mktemp -d /tmp/ward-backup-imds.XXXXXX)
chmod 755 "$TMP"
. "$(dirname "$0")/lib_api.sh"
ETC=$WARD_VAR/$R/etc
BUCKET=ward-backups-$R
SUF=$RANDOM$RANDOM
S=bkimds-$SUF
M=imdsmark$SUF$RANDOM
S3PORT=$(free_port)
IPORT=$(free_port)
VPORT=$(free_port)
CPORT=$(free_port)
S3PID=""
EPID=""
stop_s3() { [ -n "$S3PID" ] && kill -KILL "$S3PID" 2>/dev/null; wait "$S3PID" 2>/dev/null; S3PID=""; }
ctl() { curl -sS --max-time 5 "http://127.0.0.1:$CPORT$1"; }
# st EXPR: a Python expression over the emulator's state s (JSON), printed.
st() { ctl /state | python3 -c 'import json,sys,time; s=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
imds_config() { # FILE [ENDPOINT]: the S3 target with instance credentials
	sed -e '/^  dir: /d' -e '/^  daily_at: /d' "$ETC/backup.yaml" >"$1"
	cat >>"$1" <<EOF
  daily_at: "23:59"
  chunk_kib: 4
  s3:
    endpoint: http://127.0.0.1:$VPORT
    bucket: $BUCKET
    region: eu-west-2
    credentials: instance
    imds_endpoint: ${2:-http://127.0.0.1:$IPORT}
    retries: 2
EOF
	chown "$WUSER" "$1" 2>/dev/null || true
	chmod 600 "$1"
}
cleanup() {
	backup_restart "$ETC/backup.yaml" >/dev/null 2>&1
	[ -n "$EPID" ] && kill "$EPID" 2>/dev/null && wait "$EPID" 2>/dev/null
	stop_s3
	rm -rf "$TMP"
}
trap cleanup EXIT

mkdir -p "$TMP/s3"
check "s3rver starts on loopback" start_s3
python3 "$TOP/tests/e2e/imds_emu.py" "$IPORT" "$VPORT" "$CPORT" "$S3PORT" >>"$TMP/emu.log" 2>&1 &
EPID=$!
check "the IMDSv2 emulator and its S3 front start" wait_for 10 curl -s -o /dev/null "http://127.0.0.1:$CPORT/state"

# ------------------------------------------------------------------ the emulator is faithful
IMDS=http://127.0.0.1:$IPORT
CRED=/latest/meta-data/iam/security-credentials/
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@"; }
check "IMDSv1: a GET of the credentials without a session token → 401" is "$(code "$IMDS$CRED")" 401
check "  ... with a made-up token → 401" is "$(code -H 'X-aws-ec2-metadata-token: AAAAmadeup' "$IMDS$CRED")" 401
check "a token PUT without a TTL → 400" is "$(code -X PUT "$IMDS/latest/api/token")" 400
check "a token PUT with a TTL over 6 hours → 400" is "$(code -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 21601' "$IMDS/latest/api/token")" 400
check "a token PUT through a proxy (X-Forwarded-For) → 403" is "$(code -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' -H 'X-Forwarded-For: 10.0.0.1' "$IMDS/latest/api/token")" 403
TOK=$(curl -s -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "$IMDS/latest/api/token")
check "IMDSv2: PUT a token, then GET the role with it" is "$(curl -s -H "X-aws-ec2-metadata-token: $TOK" "$IMDS$CRED")" ward-uk-backup
check "  ... the S3 front refuses unsigned requests" is "$(code "http://127.0.0.1:$VPORT/$BUCKET/")" 403
tokenless() { st 'sum(1 for e in s["imds"] if e["method"] == "GET" and e["token"] != "valid")'; }
NOTOK0=$(tokenless)

# ------------------------------------------------------------------ a tenant with data
out=$(wctl tenant create --slug "$S" --region $R --name "BK IMDS $SUF" --admin-email admin@$S.example 2>&1)
PW=$(echo "$out" | jq_ admin_password)
T=$(pg_super $R "SELECT id FROM tenant.tenants WHERE slug = '$S'")
rcli $R admin --scan --pattern 'rl:gateway:*' | while read -r k; do rcli $R admin DEL "$k" >/dev/null; done
NEWPW='Sturdy-Passphrase-2026!'
login "$S" "$TMP/jar" "admin@$S.example" "$PW" >/dev/null
api "$S" "$TMP/jar" POST /api/v1/auth/password "{\"current_password\":\"$PW\",\"new_password\":\"$NEWPW\"}" >/dev/null
login "$S" "$TMP/jar" "admin@$S.example" "$NEWPW" >/dev/null
made=0
for i in $(seq 12); do
	out=$(api "$S" "$TMP/jar" POST /api/v1/tickets "{\"subject\":\"subject $M $i\",\"body\":\"body $M $i $(head -c 3000 /dev/zero | tr '\0' y)\"}")
	[ "$(status "$out")" = 201 ] && made=$((made + 1))
done
check "12 tickets with the marker" is "$made" 12
rows() { pg_super $R "SELECT (SELECT count(*) FROM auth.users WHERE tenant_id='$T') + (SELECT count(*) FROM ticket.tickets WHERE tenant_id='$T') + (SELECT count(*) FROM ticket.messages WHERE tenant_id='$T')"; }
ROWS_BEFORE=$(rows)
catalog() { pg_super $R "SELECT count(*) FROM backup.backups WHERE tenant_id='$T'"; }

# ------------------------------------------------------------------ backup, verify, restore
imds_config "$ETC/backup-imds.yaml"
check "ward-backup restarts with the S3 target and instance credentials" backup_restart "$ETC/backup-imds.yaml"
check "it says so" grep -q "backup target: s3://$BUCKET at http://127.0.0.1:$VPORT, instance role credentials from $IMDS" "$WARD_VAR/$R/log/backup.log"
S0=$(st 'len(s["s3"])')
out=$(wctl backup run --region $R --tenant "$S" 2>&1)
B1=$(echo "$out" | jq_ backups 0 backup_id)
check "backup run with the role's temporary credentials" test -n "$B1"
A1=$(st 's["current"]')
check "  ... the manifest is in the bucket" test -f "$TMP/s3/$BUCKET/$T/$B1/manifest._S3rver_object"
check "  ... every S3 request was signed with the role's key and carried its session token (signed)" \
	is "$(st "len(s['s3']) > $S0 + 3 and all(e['akid'] == '$A1' and e['refused'] is None for e in s['s3'][$S0:])")" True
check "  ... the credentials came through IMDSv2 (a PUT for a session token, GETs with it)" \
	is "$(st "any(e['method'] == 'PUT' and e['status'] == 200 for e in s['imds']) and any(e['path'].endswith('/ward-uk-backup') and e['token'] == 'valid' for e in s['imds'])")" True
refuse "the marker is nowhere in the bucket" grep -rqa "$M" "$TMP/s3"
out=$(wctl backup verify --region $R --tenant "$S" 2>&1)
check "verify from S3 with instance credentials" is "$(echo "$out" | jq_ ok)" true
check "tenant delete" wctl tenant delete --slug "$S"
out=$(wctl backup restore --region $R --tenant "$S" 2>&1)
check "restore from S3 with instance credentials" is "$(echo "$out" | jq_ restored)" true
check "  ... every row back" is "$(rows)" "$ROWS_BEFORE"
check "one IMDS fetch served the whole run, verify and restore (credentials cached)" \
	is "$(st 'sum(1 for e in s["imds"] if e["path"].endswith("/ward-uk-backup"))')" 1
secrets_logged() { # any secret or session token handed out, in ward-backup's logs
	ctl /state | python3 -c 'import json,sys
s = json.load(sys.stdin)
logs = open(sys.argv[1], errors="replace").read() + open(sys.argv[2], errors="replace").read()
bad = [k for k, c in s["creds"].items() if c["secret"] in logs or c["token"] in logs or c["token"][:40] in logs]
print(bad); sys.exit(1 if bad else 0)' "$WARD_VAR/$R/log/backup.log" "$WARD_VAR/$R/log/backup.stderr"
}
check "no secret key and no session token in ward-backup's logs" secrets_logged

# ------------------------------------------------------------------ rotation
# Credentials expiring in 340 s: renewed 5 minutes before (40 s after they were handed
# out, and at least 30 s after the last fetch).
ctl "/rotate?ttl=340" >/dev/null
backup_restart "$ETC/backup-imds.yaml"
out=$(wctl backup run --region $R --tenant "$S" 2>&1)
A2=$(st 's["current"]')
check "a run with credentials expiring in less than 6 minutes" bash -c "[ -n '$(echo "$out" | jq_ backups 0 backup_id)' ] && [ '$A2' != '$A1' ]"
renewal_due() { # seconds until ward-backup renews A2 (plus a margin)
	st "max(0, max(s['creds']['$A2']['expires'] - 300, max(e['t'] for e in s['imds'] if e['path'].endswith('/ward-uk-backup')) + 30) + 1.5 - time.time())"
}
sleep "$(renewal_due)"
# Due for renewal but the metadata service is down: the credentials, still valid, are
# kept (a warning), the run completes.
ctl "/imds?up=0" >/dev/null
out=$(wctl backup run --region $R --tenant "$S" 2>&1)
check "renewal due, the metadata service down: the still-valid credentials are kept, the run completes" \
	test -n "$(echo "$out" | jq_ backups 0 backup_id)"
check "  ... with a warning naming the metadata service" grep -q "is unreachable .*the current credentials (role ward-uk-backup) are kept until they expire" "$WARD_VAR/$R/log/backup.log"
ctl "/imds?up=1" >/dev/null
# Rotated at the metadata service, the old key revoked: the next run must fetch and use
# the new ones up front (the next attempt comes 30 s after the failed one).
A3=$(ctl "/rotate?ttl=21600" | jq_ akid)
ctl "/revoke?akid=$A2" >/dev/null
sleep 31
n0=$(st 'len(s["s3"])')
out=$(wctl backup run --region $R --tenant "$S" 2>&1)
check "rotation: the next run renews before Expiration and completes" test -n "$(echo "$out" | jq_ backups 0 backup_id)"
check "  ... every request of it with the new key, none with the revoked one" \
	is "$(st "all(e['akid'] == '$A3' and e['refused'] is None for e in s['s3'][$n0:]) and len(s['s3']) > $n0")" True
check "  ... the renewal logged with the role and key id, not the secret" grep -q "instance credentials of role ward-uk-backup (key id ${A3:0:8}" "$WARD_VAR/$R/log/backup.log"
# Revoked before their Expiration (the store says ExpiredToken): renewed at once.
A4=$(ctl "/rotate?ttl=21600" | jq_ akid)
ctl "/revoke?all=1" >/dev/null
n0=$(st 'len(s["s3"])')
out=$(wctl backup run --region $R --tenant "$S" 2>&1)
check "credentials revoked early: 403 ExpiredToken, renewed at once, the run completes" test -n "$(echo "$out" | jq_ backups 0 backup_id)"
check "  ... exactly one request refused (the old key), then the new key only" \
	is "$(st "[e['refused'] for e in s['s3'][$n0:] if e['refused']] == ['ExpiredToken'] and all(e['akid'] == '$A4' for e in s['s3'][$n0 + 1:])")" True
check "  ... said in the log" grep -q "renewed after the store refused the previous ones" "$WARD_VAR/$R/log/backup.log"
check "every backup so far verifies" wctl backup verify --region $R --tenant "$S"
check "no secret key and no session token in the logs after rotations" secrets_logged

# PostgreSQL's archive_command / restore_command: short-lived processes, each fetching
# the role's credentials itself.
mkdir -p "$TMP/w" && chown "$WUSER" "$TMP/w" 2>/dev/null
head -c 100000 /dev/urandom >"$TMP/w/seg" && chmod 644 "$TMP/w/seg"
SEG=0000000100000000000000F0
n0=$(st 'len(s["s3"])')
check "wal-push with instance credentials" as_user "$BIN/ward-backup" wal-push "$TMP/w/seg" $SEG --config "$ETC/backup-imds.yaml"
check "wal-fetch with instance credentials gives it back" bash -c \
	"as_user '$BIN/ward-backup' wal-fetch $SEG '$TMP/w/seg.back' --config '$ETC/backup-imds.yaml' && cmp '$TMP/w/seg' '$TMP/w/seg.back'"
check "  ... both signed with the current key and its session token" \
	is "$(st "len(s['s3']) > $n0 and all(e['akid'] == s['current'] and e['refused'] is None for e in s['s3'][$n0:])")" True

# ------------------------------------------------------------------ denials
# fails NAME MODE WANT: with the emulator in MODE, a fresh ward-backup's run fails with
# an error matching WANT and records nothing.
fails() {
	local name=$1 mode=$2 want=$3 before out
	ctl "/mode?m=$mode" >/dev/null
	backup_restart "$ETC/backup-imds.yaml"
	before=$(catalog)
	out=$(wctl backup run --region $R --tenant "$S" 2>&1)
	if [ -z "$(echo "$out" | jq_ backups 0 backup_id)" ] && grep -qE "$want" <<<"$out" && [ "$(catalog)" = "$before" ]; then
		ok "$name: the run fails with a clear error, no catalog row"
	else
		not_ok "$name: the run fails with a clear error, no catalog row"
		echo "$out" | head -5 | sed 's/^/#   /'
	fi
	ctl "/mode?m=ok" >/dev/null
}
ctl "/imds?up=0" >/dev/null
fails "the metadata service down" ok "instance metadata service at $IMDS is unreachable"
as_user "$BIN/ward-backup" wal-push "$TMP/w/seg" 0000000100000000000000F1 --config "$ETC/backup-imds.yaml" >"$TMP/w/push.out" 2>&1
check "  ... wal-push fails too (PostgreSQL keeps the segment), saying why" \
	bash -c "[ $? -ne 0 ] && grep -q 'instance metadata service at $IMDS is unreachable' '$TMP/w/push.out'"
ctl "/imds?up=1" >/dev/null
n0=$(st 'len(s["s3"])')
fails "no IMDSv2 (a metadata service that gives no session token)" v1only "gave no IMDSv2 session token"
check "  ... and the client never fell back to a GET without a token" is "$(tokenless)" "$NOTOK0"
fails "no role attached to the instance" norole "no IAM role is attached"
fails "Code != Success" code "Code AssumeRoleUnauthorizedAccess \(not Success\)"
fails "expired credentials" expired "credentials of role ward-uk-backup expired at"
fails "malformed credentials JSON" badjson "not a JSON object"
check "  ... none of them reached the store" is "$(st 'len(s["s3"])')" "$n0"
backup_restart "$ETC/backup-imds.yaml"
check "the metadata service well again: a fresh ward-backup's run works" test -n "$(wctl backup run --region $R --tenant "$S" 2>&1 | jq_ backups 0 backup_id)"

# Instance credentials and a static key together: refused when ward-backup starts.
imds_config "$TMP/both.yaml"
printf '    access_key: S3RVER\n' >>"$TMP/both.yaml"
chown "$WUSER" "$TMP/both.yaml" 2>/dev/null || true
as_user timeout 20 "$BIN/ward-backup" --config "$TMP/both.yaml" >"$TMP/both.out" 2>&1 </dev/null
rc=$?
check "instance credentials with an access_key configured: ward-backup refuses to start" \
	bash -c "[ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'start-up failed: backup target: s3 credentials instance .*no access_key or secret_key_file' '$WARD_VAR/$R/log/backup.log'"
sed -i 's/credentials: instance/credentials: metadata/' "$TMP/both.yaml"
as_user timeout 20 "$BIN/ward-backup" --config "$TMP/both.yaml" >"$TMP/kind.out" 2>&1 </dev/null
check "an unknown credentials kind: refused with the configuration" grep -q 'credentials.*static or instance' "$TMP/kind.out"
