#!/usr/bin/env bash
# test_deploy — deploy/: systemd units verify clean with the hardening the design asks
# (exposure below 2.0), deploy.sh --dry-run prints every step and refuses bad input,
# and terraform/ keeps its security posture (policy checks on the HCL text: terraform
# itself is not installable here, so the HCL is not validated by terraform).
. "$(dirname "$0")/lib.sh"
units=$TOP/deploy/systemd
tmp=$(mktemp -d)
for s in gateway auth ticket mail-ingest mail-out audit backup status; do
	u=$units/ward-$s.service
	sed "s|/opt/ward/bin/|$TOP/bin/|" "$u" >"$tmp/ward-$s.service"
	check "ward-$s.service: systemd-analyze verify is clean" bash -c "[ -z \"\$(systemd-analyze verify '$tmp/ward-$s.service' 2>&1)\" ]"
	score=$(systemd-analyze security --offline=true "$tmp/ward-$s.service" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
	echo "# ward-$s.service exposure $score"
	check "ward-$s.service: exposure $score below 2.0" awk -v s="$score" 'BEGIN { exit !(s != "" && s < 2.0) }'
	for k in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes PrivateDevices=yes \
		SystemCallFilter=@system-service "User=ward-$s" RestrictAddressFamilies=; do
		grep -q "^$k" "$u" || not_ok "ward-$s.service lacks $k"
	done
	case $s in
	gateway | mail-ingest) check "ward-$s.service: only CAP_NET_BIND_SERVICE" grep -qx 'CapabilityBoundingSet=CAP_NET_BIND_SERVICE' "$u" ;;
	*) check "ward-$s.service: no capability" grep -qx 'CapabilityBoundingSet=' "$u" ;;
	esac
done
# The Redis TLS tunnel (stunnel4, DynamicUser): same checks, no capability at all.
u=$units/ward-redis-tls.service
cp "$u" "$tmp/"
check "ward-redis-tls.service: systemd-analyze verify is clean" bash -c "[ -z \"\$(systemd-analyze verify '$tmp/ward-redis-tls.service' 2>&1)\" ]"
score=$(systemd-analyze security --offline=true "$tmp/ward-redis-tls.service" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
echo "# ward-redis-tls.service exposure $score"
check "ward-redis-tls.service: exposure $score below 2.0" awk -v s="$score" 'BEGIN { exit !(s != "" && s < 2.0) }'
check "ward-redis-tls.service: no capability, its own dynamic user, no secrets" bash -c \
	"grep -qx 'CapabilityBoundingSet=' $u && grep -qx 'DynamicUser=yes' $u && grep -q '^InaccessiblePaths=.*/etc/ward/secrets' $u"
rm -rf "$tmp"

out=$("$TOP/deploy/deploy.sh" --region eu --host app1.eu.example --dry-run)
check "deploy.sh --dry-run prints the six steps" bash -c "[ \$(echo \"\$1\" | grep -c '^deploy\[eu/app1.eu.example\]: [1-6]/6') = 6 ]" _ "$out"
check "deploy.sh restarts one daemon at a time, gateway last" bash -c "echo \"\$1\" | grep 'systemctl restart' | tail -1 | grep -q ward-gateway" _ "$out"
check "deploy.sh fetches only a daemon's own secrets (ward/eu/<daemon>/…)" bash -c \
	"echo \"\$1\" | grep -q 'secret-id ward/eu/gateway/redis-gateway' && ! echo \"\$1\" | grep 'secret-id ward/eu/gateway/' | grep -q 'pg-\|kek'" _ "$out"
mk=$(mktemp -d)
printf '#!/bin/sh\ntouch %s/ran\n' "$mk" >"$mk/ssh" && cp "$mk/ssh" "$mk/scp" && chmod 755 "$mk/ssh" "$mk/scp"
PATH=$mk:$PATH "$TOP/deploy/deploy.sh" --region eu --host app1.eu.example --dry-run >/dev/null 2>&1
check "deploy.sh --dry-run runs nothing (no ssh, no scp)" [ ! -e "$mk/ran" ]
# Host mode across terraform: each host fetches only what its instance role may read
# (terraform/modules/cell: a daemon's role ward/<r>/<daemon>/* and the public
# certificates ward/<r>/tls/*; the migration host's ward/<r>/migrate/* and tls/*).
for s in gateway auth ticket mail-ingest mail-out audit backup; do
	o=$("$TOP/deploy/deploy.sh" --region eu --host "$s.eu.example" --services "$s" --no-migrate --dry-run)
	check "deploy.sh --services $s --no-migrate: only ward/eu/$s/* and ward/eu/tls/* secrets, step 5 skipped" bash -c \
		"ids=\$(grep -o 'secret-id [^ ]*' <<<\"\$1\" | cut -d' ' -f2 | sort -u); [ -n \"\$ids\" ] && ! grep -vE '^ward/eu/($s|tls)/' <<<\"\$ids\" && grep -q '5/6 migrations skipped' <<<\"\$1\" && ! grep -q psql <<<\"\$1\"" _ "$o"
done
# The backup host: backup.s3 with the region's bucket (terraform output, regions.yaml),
# its regional endpoint and the instance role's credentials (IMDSv2, no static key).
o=$("$TOP/deploy/deploy.sh" --region eu --host backup.eu.example --render backup)
check "deploy.sh: the backup host's config: the region's bucket, regional endpoint, instance credentials" bash -c \
	"grep -qx '  s3:' <<<\"\$1\" && grep -qx '    bucket: ward-eu-backups-123456789012' <<<\"\$1\" && grep -qx '    region: eu-west-1' <<<\"\$1\" && grep -qx '    endpoint: https://s3.eu-west-1.amazonaws.com' <<<\"\$1\" && grep -q '^    credentials: instance' <<<\"\$1\"" _ "$o"
check "…no static key, no local backup directory" bash -c "! grep -qE 'access_key|secret_key_file|^  dir:' <<<\"\$1\"" _ "$o"
bk=$(mktemp /tmp/ward-deploy-backup.XXXXXX.yaml)
sed -e "s|/etc/ward/secrets/backup/|$WARD_VAR/uk/secrets/|" -e "s|^log_file: .*|log_file: /dev/null|" <<<"$o" >"$bk"
chmod 644 "$bk"
check "…and ward-backup loads it" as_user "$BIN/ward-backup" --check-config --config "$bk"
rm -f "$bk"
o=$("$TOP/deploy/deploy.sh" --region eu --host backup.eu.example --services backup --no-migrate --dry-run)
check "deploy.sh --services backup: no local backup directory on the host" bash -c "! grep -q 'ward-backup/backups' <<<\"\$1\"" _ "$o"
nb=$(mktemp)
grep -v 'backup_bucket:' "$TOP/deploy/regions.yaml" >"$nb"
refuse "deploy.sh refuses to deploy backup without the region's backup_bucket" env WARD_REGIONS_FILE="$nb" "$TOP/deploy/deploy.sh" --region eu --host backup.eu.example --services backup --no-migrate --dry-run
rm -f "$nb"
o=$("$TOP/deploy/deploy.sh" --region eu --host migrate.eu.example --services "" --dry-run)
check "deploy.sh on the migration host (--services \"\"): every migration, no daemon, no Redis tunnel" bash -c \
	"grep -q '5/6 migrations (as ward_migrate)' <<<\"\$1\" && [ \$(grep -c 'schema_migrations WHERE version' <<<\"\$1\") = $(ls "$TOP"/deploy/sql/*.sql | wc -l) ] && ! grep -qE 'systemctl restart|redis-tls|useradd' <<<\"\$1\"" _ "$o"
check "…and only ward/eu/migrate/* and ward/eu/tls/* secrets (what terraform's migrate role may read)" bash -c \
	"ids=\$(grep -o 'secret-id [^ ]*' <<<\"\$1\" | cut -d' ' -f2 | sort -u); grep -q '^ward/eu/migrate/pg-auth$' <<<\"\$ids\" && ! grep -vE '^ward/eu/(migrate|tls)/' <<<\"\$ids\"" _ "$o"
rm -rf "$mk"
# The status page (ward-status): its own host in the first region, its own secrets only.
o=$("$TOP/deploy/deploy.sh" --region us --host status.us.example --services status --no-migrate --dry-run)
check "deploy.sh --services status: only ward/us/status/{tls-status.key,redis-status-<region>} (and tls/*), no route key" bash -c \
	"ids=\$(grep -o 'secret-id [^ ]*' <<<\"\$1\" | cut -d' ' -f2 | sort -u | grep -v '^ward/us/tls/' | tr '\n' ' '); [ \"\$ids\" = 'ward/us/status/redis-status-eu ward/us/status/redis-status-uk ward/us/status/redis-status-us ward/us/status/tls-status.key ' ] || { echo \"\$ids\"; false; }" _ "$o"
check "…installs ward-status with its own unit and user, and tunnels to every cell's Redis" bash -c \
	"grep -q 'ward-status.service /etc/systemd/system/ward-status.service' <<<\"\$1\" && grep -q 'useradd .* ward-status\$' <<<\"\$1\" && grep -q 'tunnels: us eu uk' <<<\"\$1\" && ! grep -q 'ward-gateway' <<<\"\$1\"" _ "$o"
o=$("$TOP/deploy/deploy.sh" --region us --host gw.us.example --services gateway --no-migrate --dry-run)
check "deploy.sh --services gateway in the status region: no status secret, no status config" bash -c \
	"! grep -q 'status' <<<\"\$(grep -o 'secret-id [^ ]*' <<<\"\$1\")\" && ! \"$TOP/deploy/deploy.sh\" --region us --host gw.us.example --render gateway | grep -qE '^status:|redis-status'" _ "$o"
check "deploy.sh --render status: the status user, each cell's status password, no route key" bash -c \
	"c=\$(\"$TOP/deploy/deploy.sh\" --region us --host s.us.example --render status); grep -qx 'service: status' <<<\"\$c\" && grep -qx '  user: status' <<<\"\$c\" && [ \$(grep -c 'redis-status-' <<<\"\$c\") = 4 ] && ! grep -qE 'route_keys|routes-|redis-gateway' <<<\"\$c\""
refuse "deploy.sh refuses the status page outside the first region" "$TOP/deploy/deploy.sh" --region eu --host x --services status --check
check "deploy.sh's default on the first region deploys the status page last, on eu not at all" bash -c \
	"\"$TOP/deploy/deploy.sh\" --region us --host a.us.example --check | grep -q 'services: audit auth ticket backup mail-ingest mail-out gateway status)' && \"$TOP/deploy/deploy.sh\" --region eu --host a.eu.example --check | grep -q 'gateway)'"
check "deploy.sh --check parses a valid command line" "$TOP/deploy/deploy.sh" --region uk --host app1.uk.example --services "ticket gateway" --check
refuse "deploy.sh refuses an unknown region" "$TOP/deploy/deploy.sh" --region mars --host x --dry-run
refuse "deploy.sh refuses a host with shell metacharacters" "$TOP/deploy/deploy.sh" --region eu --host 'x;rm' --dry-run
refuse "deploy.sh refuses an unknown service" "$TOP/deploy/deploy.sh" --region eu --host x --services "ticket sshd" --check
refuse "deploy.sh refuses --host with --local" "$TOP/deploy/deploy.sh" --region eu --host x --local /tmp/x --check

# ---- a real deploy on this machine (--local): the uk cell of the test stack gets a
# second instance of every daemon from a secret-store directory, installed under a
# prefix, on ports base+50 (https) and base+51 (smtp).
T=$(mktemp -d)
chmod 755 "$T"
P=$T/prefix STORE=$T/store
HP=$((WARD_PORT_BASE + 50)) SMP=$((WARD_PORT_BASE + 51))
sec=$WARD_VAR/uk/secrets
for s in audit auth ticket backup mail-ingest mail-out gateway ops migrate; do
	mkdir -p "$STORE/$s"
	cp "$sec"/* "$STORE/$s/"
	cp "$WARD_VAR/tls/uk.key" "$STORE/$s/tls-uk.key"
done
cp "$sec/pg-admin" "$STORE/migrate/password"
mkdir -p "$STORE/tls" && cp "$WARD_VAR/tls/uk.pem" "$WARD_VAR/tls/ca.pem" "$STORE/tls/"
[ "$(id -u)" -eq 0 ] && chown -R "$WUSER:" "$T"
cat >"$T/regions.yaml" <<YAML
domain: $WARD_DOMAIN
regions:
  - name: us
    aws_region: us-east-1
    redis_host: 127.0.0.1
    redis_port: $(port_of us REDIS)
    pg_host: 127.0.0.1
    secret_prefix: ward/us
    https_port: $(port_of us HTTPS)
    status_listen: 127.0.0.1:$((WARD_PORT_BASE + 52))
  - name: eu
    aws_region: eu-west-1
    redis_host: 127.0.0.1
    redis_port: $(port_of eu REDIS)
    pg_host: 127.0.0.1
    secret_prefix: ward/eu
    https_port: $(port_of eu HTTPS)
  - name: uk
    aws_region: eu-west-2
    redis_host: 127.0.0.1
    redis_port: $(port_of uk REDIS)
    pg_host: 127.0.0.1
    pg_port: $(port_of uk PG)
    pg_tls: sslmode=disable
    migrate_user: postgres
    secret_prefix: ward/uk
    https_listen: 127.0.0.1:$HP
    https_port: $HP
    smtp_listen: 127.0.0.1:$SMP
YAML
export WARD_REGIONS_FILE=$T/regions.yaml WARD_DEPLOY_INSTANCE=deploytest WARD_DEPLOY_HEALTH_TIMEOUT=8
dep() { "$TOP/deploy/deploy.sh" --region uk --local "$P" --secrets "$STORE" "$@"; }
hb() { rcli uk ops GET "hb:$1:$1-deploytest" | jq -r .pid; }
lpid() { cat "$P/run/ward-$1.pid"; }
export -f hb lpid
export P
dep >"$T/deploy1.out" 2>&1
rc=$?
check "deploy --local: exit 0, every daemon healthy" bash -c "[ $rc = 0 ] && grep -q 'uk/deploytest\]: done' $T/deploy1.out" || true
[ $rc = 0 ] || sed 's/^/#   /' "$T/deploy1.out" | tail -20
check "deploy --local: the binaries are installed under the prefix, the previous release kept" bash -c \
	"cmp -s $P/opt/ward/bin/ward-ticket $TOP/bin/ward-ticket && [ -d $P/opt/ward/previous ]"
check "deploy --local: each daemon runs the installed binary with its heartbeat" bash -c \
	'for s in audit auth ticket backup mail-ingest mail-out gateway; do [ "$(readlink /proc/$(lpid $s)/exe)" = "$P/opt/ward/bin/ward-$s" ] && [ "$(hb $s)" = "$(lpid $s)" ] || { echo "$s"; exit 1; }; done'
check "deploy --local: the gateway serves /healthz on its own port" bash -c \
	"curl -fsS --cacert $WARD_CA --resolve uk.$WARD_DOMAIN:$HP:127.0.0.1 https://uk.$WARD_DOMAIN:$HP/healthz | jq -e '.status == \"ok\"'"
check "deploy --local: mail-ingest answers SMTP on its own port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$SMP && head -c 4 <&3 | grep -q 220"
check "deploy --local: every migration already applied is skipped, none re-run" bash -c \
	"[ \$(grep -cE '^  [0-9]+_[a-z_]+: already applied\$' $T/deploy1.out) = $(ls "$TOP"/deploy/sql/*.sql | wc -l) ] && ! grep -qE '^  [0-9]+_[a-z_]+: applied\$' $T/deploy1.out"
check "deploy --local: secrets mode 0400 in a 0500 directory per daemon" bash -c \
	"[ \$(stat -c %a $P/etc/ward/secrets/auth/kek) = 400 ] && [ \$(stat -c %a $P/etc/ward/secrets/auth) = 500 ]"
check "deploy --local: the gateway got only its own secrets (no database password, no KEK)" bash -c \
	"[ \"\$(ls $P/etc/ward/secrets/gateway | tr '\n' ' ')\" = 'redis-gateway routes-gateway tls-uk.key ' ]"
check "deploy --local: mail-ingest got only its own secrets" bash -c \
	"[ \"\$(ls $P/etc/ward/secrets/mail-ingest | tr '\n' ' ')\" = 'redis-mail-ingest routes-mail-ingest tls-uk.key ' ]"
check "deploy --local: mail-out got only its own secrets (no database password, no KEK, no TLS key)" bash -c \
	"[ \"\$(ls $P/etc/ward/secrets/mail-out | tr '\n' ' ')\" = 'redis-mail-out routes-mail-out ' ]"
check "deploy.sh: mail-out's config: the region's relay, STARTTLS required, the system CA bundle" bash -c \
	"c=\$(WARD_REGIONS_FILE=$TOP/deploy/regions.yaml \"$TOP/deploy/deploy.sh\" --region eu --host m.eu.example --render mail-out); grep -qx 'relay: smtp.eu.internal.ward.example.com:587' <<<\"\$c\" && grep -qx 'starttls: required' <<<\"\$c\" && grep -qx '  ca_file: /etc/ssl/certs/ca-certificates.crt' <<<\"\$c\" && ! grep -q postgres <<<\"\$c\""
check "deploy --local: the rendered configs load (the daemons run on them) and name the region's ports" bash -c \
	"grep -q 'listen: 127.0.0.1:$HP' $P/etc/ward/gateway.yaml && grep -q '\"uk $HP\"' $P/etc/ward/gateway.yaml"

# A release with a broken ward-ticket (it runs but never beats): the deploy stops at
# ticket, puts the previous binary back, restarts it healthy, and leaves the daemons
# after it alone.
before_gw=$(lpid gateway) before_mail=$(lpid mail-ingest) before_auth=$(lpid auth)
mkdir -p "$T/badbin"
cp "$TOP"/bin/ward-* "$T/badbin/"
printf '#!/bin/sh\nexec sleep 600\n' >"$T/badbin/ward-ticket"
chmod 755 "$T/badbin"/*
dep --bin "$T/badbin" >"$T/deploy2.out" 2>&1
rc=$?
check "deploy --local with a broken ward-ticket fails (exit 1)" [ $rc = 1 ]
check "…it says it rolls ward-ticket back" grep -q 'rolling back ward-ticket' "$T/deploy2.out"
check "…the previous ward-ticket binary is installed again" cmp -s "$P/opt/ward/bin/ward-ticket" "$TOP/bin/ward-ticket"
check "…and ward-ticket runs it again with a fresh heartbeat" bash -c \
	'[ "$(readlink /proc/$(lpid ticket)/exe)" = "$P/opt/ward/bin/ward-ticket" ] && [ "$(hb ticket)" = "$(lpid ticket)" ]'
check "…the daemons before it were restarted (one at a time)" bash -c "[ \$(lpid auth) != $before_auth ]"
check "…the daemons after it were not touched (gateway, mail-ingest)" bash -c \
	"[ \$(lpid gateway) = $before_gw ] && [ \$(lpid mail-ingest) = $before_mail ]"
bad=$(sed -n 's/^+ wait for hb:ticket:ticket-deploytest with pid \([0-9]*\).*/\1/p' "$T/deploy2.out" | head -1)
check "…the broken process (pid $bad) is not left running" bash -c "[ -n '$bad' ] && ! kill -0 '$bad' 2>/dev/null"
"$TOP/deploy/deploy.sh" --region uk --local "$P" --stop >/dev/null 2>&1
check "deploy --local --stop stops the local daemons" bash -c "! ls $P/run/*.pid 2>/dev/null | grep -q ."

# ---- the status page deployed on its own (--local, us: the first region of the file),
# from a store holding only what it needs; it serves the page on base+52 as a standby
# (status-1 of the dev stack holds the uptime lease).
P2=$T/prefix2 S2=$T/store2 SP2=$((WARD_PORT_BASE + 52))
mkdir -p "$S2/status" "$S2/tls"
cp "$WARD_VAR/tls/status.key" "$S2/status/tls-status.key"
for r in us eu uk; do cp "$WARD_VAR/$r/secrets/redis-status" "$S2/status/redis-status-$r"; done
cp "$WARD_VAR/tls/status.pem" "$WARD_VAR/tls/ca.pem" "$S2/tls/"
[ "$(id -u)" -eq 0 ] && chown -R "$WUSER:" "$S2"
"$TOP/deploy/deploy.sh" --region us --local "$P2" --secrets "$S2" --services status --no-migrate >"$T/deploy3.out" 2>&1
rc=$?
check "deploy --local --services status: exit 0, ward-status healthy (its heartbeat, read as the status user)" bash -c \
	"[ $rc = 0 ] && grep -q 'ward-status healthy' $T/deploy3.out && grep -q 'us/deploytest\]: done' $T/deploy3.out" || sed 's/^/#   /' "$T/deploy3.out" | tail -20
check "…its secrets: the status key and each cell's status password, nothing else" bash -c \
	"[ \"\$(ls $P2/etc/ward/secrets/status | tr '\n' ' ')\" = 'redis-status-eu redis-status-uk redis-status-us tls-status.key ' ] && [ \"\$(ls $P2/etc/ward/secrets)\" = status ]"
check "…it runs the installed ward-status and serves the page on its own port" bash -c \
	"[ \"\$(readlink /proc/\$(cat $P2/run/ward-status.pid)/exe)\" = $P2/opt/ward/bin/ward-status ] && wait_for 10 bash -c 'curl -fsS --cacert $WARD_CA --resolve status.$WARD_DOMAIN:$SP2:127.0.0.1 https://status.$WARD_DOMAIN:$SP2/api/v2/summary.json | jq -e \".components | length == 24\"'"
"$TOP/deploy/deploy.sh" --region us --local "$P2" --services status --stop >/dev/null 2>&1
check "deploy --local --services status --stop stops it" bash -c "! ls $P2/run/*.pid 2>/dev/null | grep -q ."
rm -rf "$T"
