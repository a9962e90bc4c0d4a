#!/usr/bin/env bash
# test_region — regions are configuration (ops/runbooks/add-region.md): a fourth
# region "au" is one entry more in a copy of deploy/regions.yaml, one module block more
# in a copy of terraform/ (which the policy checks accept), and an `ops/devstack up`
# (the dev stack's deploy). Then: wardctl creates a au tenant; the au gateway serves
# it; asked at the us endpoint it is 421 pointing to au; mail for it is refused by the
# us cell; the status page lists the au components and they turn operational. At the
# end the au cell is removed again and the us gateway is back on three regions.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/e2e/lib_api.sh"
TMP=$(mktemp -d)
chmod 755 "$TMP"
SUF=$$
S=maple$SUF
SP=${WARD_STATUS_URL#https://status.$WARD_DOMAIN:}
SP=${SP%/}
st() { curl -sS --max-time 10 --cacert "$WARD_CA" --resolve "status.$WARD_DOMAIN:$SP:127.0.0.1" "https://status.$WARD_DOMAIN:$SP$1"; }
comp() { st /api/v2/components.json | jq -r --arg id "$1" '.components[] | select(.id == $id) | .status'; }
export -f st comp
export SP
devstack() { "$TOP/ops/devstack" "$@" >>"$TMP/devstack.log" 2>&1; }
restart_us_gateway() { # the 421 targets (us gateway) and the cells (ward-status) are read at start
	local pid; pid=$(pid_of us gateway)
	kill -TERM "$pid" && wait_for 20 bash -c "! kill -0 $pid"
	pid=$(cat "$WARD_VAR/status/run/status.pid" 2>/dev/null) || return 0
	kill -TERM "$pid" && wait_for 20 bash -c "! kill -0 $pid"
}

cleanup() { # stop the au cell; the us gateway back on the three regions of deploy/regions.yaml
	WARD_REGIONS=au "$TOP/ops/devstack" down >>"$TMP/devstack.log" 2>&1
	unset WARD_REGIONS_FILE
	restart_us_gateway
	"$TOP/ops/devstack" up >>"$TMP/devstack.log" 2>&1
}
trap cleanup EXIT

# ---- one entry in regions.yaml, one module block in terraform/.
cp "$TOP/deploy/regions.yaml" "$TMP/regions.yaml"
cat >>"$TMP/regions.yaml" <<'YAML'
  - name: au
    aws_region: ap-southeast-2
    vpc_cidr: 10.40.0.0/16
    redis_host: redis.au.internal.ward.example.com
    redis_port: 6379
    pg_host: pg.au.internal.ward.example.com
    secret_prefix: ward/au
YAML
cp -r "$TOP/terraform" "$TMP/tf"
cat >>"$TMP/tf/main.tf" <<'HCL'

provider "aws" {
  alias  = "au"
  region = "ap-southeast-2"
}

module "cell_au" {
  source    = "./modules/cell"
  providers = { aws = aws.au }
  region    = "au"
  domain    = var.domain
  zone_id   = var.zone_id
  vpc_cidr  = "10.40.0.0/16"
}
HCL
check "terraform: the au module instance passes every policy check against the new regions.yaml" bash -c \
	"NODE_PATH=$TOP/tests/node/node_modules node $TOP/tests/e2e/tf_policy.js $TMP/tf $TMP/regions.yaml >$TMP/tf.out; ! grep -q '^not ok' $TMP/tf.out && [ \$(grep -c '^ok' $TMP/tf.out) -ge 15 ]"
refuse "terraform: without its module instance the new region fails the checks" bash -c \
	"NODE_PATH=$TOP/tests/node/node_modules node $TOP/tests/e2e/tf_policy.js $TOP/terraform $TMP/regions.yaml"
. "$TOP/deploy/regions.sh"
check "regions.yaml: the copy lists us eu uk au" bash -c "[ \"\$(. $TOP/deploy/regions.sh; regions_list $TMP/regions.yaml | tr '\n' ' ')\" = 'us eu uk au ' ]"

# ---- deploy: the dev stack starts the fourth cell from the regions file.
export WARD_REGIONS_FILE=$TMP/regions.yaml
export WARD_UP_TIMEOUT_S=120 # a new cell: initdb, migrations, six daemons (slower under ASan)
if devstack up; then
	ok "devstack up starts the au cell (Redis, PostgreSQL, six daemons) healthy"
else
	not_ok "devstack up starts the au cell (Redis, PostgreSQL, six daemons) healthy"
	tail -20 "$TMP/devstack.log" | sed 's/^/#   /'
	for f in "$WARD_VAR"/au/log/*.stderr; do [ -s "$f" ] && { echo "# $f"; tail -5 "$f" | sed 's/^/#   /'; }; done
	exit 1 # (cleanup: the au cell down, the us gateway back on three regions)
fi
restart_us_gateway
check "the us gateway and the status page restart with four regions" devstack up
set -a; . "$WARD_VAR/devstack.env"; set +a
check "devstack.env names the au endpoints" bash -c "[ -n \"\${WARD_AU_HTTPS:-}\" ] && [ -n \"\${WARD_AU_SMTP:-}\" ]"
check "wardctl's config has the au cell" grep -q '^au:' "$WARD_VAR/wardctl.yaml"
check "the au cell has its own KEK and secrets" bash -c "[ -s $WARD_VAR/au/secrets/kek ] && ! cmp -s $WARD_VAR/au/secrets/kek $WARD_VAR/us/secrets/kek"
check "the au cell ran every migration" bash -c "[ \$(pg_super au 'SELECT count(*) FROM public.schema_migrations') = $(ls "$TOP"/deploy/sql/*.sql | wc -l) ]"

# ---- a tenant of the fourth region.
out=$("$BIN/wardctl" tenant create --slug "$S" --region au --name "Maple Leaf" --admin-email boss@maple.example 2>&1)
check "wardctl tenant create --region au" bash -c "echo '$out' | jq -e '.url and .admin_password' >/dev/null"
PW=$(echo "$out" | jq -r '.admin_password // empty')
check "the tenant's URL is on the au host" bash -c "echo '$out' | jq -r .url | grep -q '^https://$S.au.$WARD_DOMAIN'"
check "every cell's directory knows the au tenant" bash -c \
	"for r in us eu uk au; do [ \"\$(pg_super \$r \"SELECT region FROM directory.tenants WHERE slug = '$S'\")\" = au ] || exit 1; done"
check "the tenant's data is only in the au cell" bash -c \
	"[ \"\$(pg_super au \"SELECT count(*) FROM tenant.tenants WHERE slug = '$S'\")\" = 1 ] && for r in us eu uk; do [ \"\$(pg_super \$r \"SELECT count(*) FROM tenant.tenants WHERE slug = '$S'\")\" = 0 ] || exit 1; done"
R=au P=$(port_of au HTTPS)
NEWPW='Maple-Passphrase-2026!'
check "the au gateway serves the tenant: the admin logs in" is "$(status "$(login "$S" "$TMP/admin" boss@maple.example "$PW")")" 200
check "the admin changes the one-time password" is "$(status "$(api "$S" "$TMP/admin" POST /api/v1/auth/password \
	"{\"current_password\":\"$PW\",\"new_password\":\"$NEWPW\"}")")" 200
login "$S" "$TMP/admin" boss@maple.example "$NEWPW" >/dev/null
t=$(api "$S" "$TMP/admin" POST /api/v1/tickets '{"subject":"Snow on the line","body":"Frozen"}')
check "the au tenant opens a ticket in the au cell" is "$(status "$t")" 201
check "the ticket is stored (sealed) in the au database" bash -c "[ \$(pg_super au 'SELECT count(*) FROM ticket.tickets') -ge 1 ]"
R=us P=$(port_of us HTTPS)
o=$(curl -sS --max-time 10 --cacert "$WARD_CA" --resolve "$S.us.$WARD_DOMAIN:$P:127.0.0.1" -o "$TMP/mis" -w '%{http_code}' \
	"https://$S.us.$WARD_DOMAIN:$P/api/v1/users/me")
check "the au tenant asked at the us endpoint → 421" is "$o" 421
check "…naming the au base URL with the au port" is "$(jq -r .base_url "$TMP/mis")" "https://$S.au.$WARD_DOMAIN:$(port_of au HTTPS)/api/v1/"
check "mail for the au tenant is refused by the us cell (550 at RCPT)" bash -c \
	"swaks --server 127.0.0.1 --port $(port_of us SMTP) --to support@$S.au.$WARD_DOMAIN --from a@b.example --quit-after RCPT 2>&1 | grep -q '^<\*\* *550'"

# ---- the status page lists the fourth region.
check "the status page lists the au components (api … backups)" bash -c \
	"st /api/v2/components.json | jq -e '[.components[] | select(.id | startswith(\"au-\")) | .id] | sort == [\"au-api\",\"au-audit\",\"au-auth\",\"au-backups\",\"au-email\",\"au-tickets\",\"au-web\"]'"
check "the au tickets component turns operational" wait_for 20 bash -c '[ "$(comp au-tickets)" = operational ]'
check "summary.json has 4 regions × (7 components + a group)" bash -c "st /api/v2/summary.json | jq -e '.components | length == 32'"
check "the HTML page shows the au region" bash -c "st / | grep -q '<h2>Region au'"
pid=$(pid_of au ticket)
kill -TERM "$pid"
check "killing the au ticket daemon turns au-tickets to an outage" wait_for 25 bash -c '[ "$(comp au-tickets)" = major_outage ]'
check "…and the us tickets stay operational" is "$(comp us-tickets)" operational
devstack up
check "…and back to operational when restarted" wait_for 25 bash -c '[ "$(comp au-tickets)" = operational ]'

# ---- back to three regions (also when a check above aborted the script).
check "wardctl tenant delete of the au tenant" "$BIN/wardctl" tenant delete --slug "$S" --region au
cleanup
trap - EXIT
check "the stack is back on us eu uk" devstack up
check "the status page is back on three regions" bash -c "st /api/v2/summary.json | jq -e '.components | length == 24'"
rm -rf "$TMP"
