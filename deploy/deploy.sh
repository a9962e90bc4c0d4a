#!/usr/bin/env bash
# deploy/deploy.sh — install or upgrade Ward on one host of a region cell.
#
#   deploy/deploy.sh --region R --host H [--services "gateway auth ..."] [--dry-run]
#
# Steps (each printed; --dry-run prints them and runs nothing):
#   1. render configs from deploy/templates with deploy/regions/R.env
#   2. copy binaries (bin/), units (deploy/systemd) and configs to H over ssh
#   3. create one system user per daemon (ward-<svc>, no shell, no home)
#   4. fetch secrets from the secret store (AWS Secrets Manager, SECRET_PREFIX/<name>)
#      into /etc/ward/secrets/<svc>/, mode 0400, owned by that daemon's user only
#   5. run the migrations in deploy/sql/ not yet applied, then ward-policy sql
#   6. restart the daemons one at a time; after each, wait for its heartbeat (and the
#      gateway's /healthz); on failure restore the previous binaries and config
#      (kept in /opt/ward/previous) and restart that daemon, then stop.
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
REGION="" HOST="" DRY=0
SERVICES="audit auth ticket backup mail-ingest gateway" # consumers before senders
usage() { echo "usage: deploy/deploy.sh --region us|eu|uk --host HOST [--services LIST] [--dry-run]" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--region) REGION=${2:-}; shift 2 ;;
	--host) HOST=${2:-}; shift 2 ;;
	--services) SERVICES=${2:-}; shift 2 ;;
	--dry-run) DRY=1; shift ;;
	-h | --help) usage ;;
	*) usage ;;
	esac
done
[ -n "$REGION" ] && [ -n "$HOST" ] || usage
[[ $REGION =~ ^[a-z]{2,8}$ ]] || { echo "deploy: bad region" >&2; exit 2; }
[[ $HOST =~ ^[A-Za-z0-9.-]{1,253}$ ]] || { echo "deploy: bad host" >&2; exit 2; }
ENV=$TOP/deploy/regions/$REGION.env
[ -f "$ENV" ] || { echo "deploy: no $ENV (add the region there first; see ops/runbooks)" >&2; exit 2; }
# shellcheck disable=SC1090
. "$ENV"
for s in $SERVICES; do
	case $s in gateway | auth | ticket | mail-ingest | audit | backup) ;; *) echo "deploy: unknown service $s" >&2; exit 2 ;; esac
done

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
step() { echo "deploy[$REGION/$HOST]: $*"; }
run() { # run CMD...: on the target host (printed; skipped with --dry-run)
	echo "+ ssh $HOST $*"
	[ $DRY = 1 ] || ssh -o BatchMode=yes "$HOST" "$@"
}
local_run() {
	echo "+ $*"
	[ $DRY = 1 ] || "$@"
}

render() { # render SERVICE > file
	local s=$1 us=${1//-/_}
	sed -e "s/@SERVICE@/$s/g" -e "s/@SERVICE_US@/$us/g" -e "s/@REGION@/$REGION/g" -e "s/@HOST@/${HOST%%.*}/g" \
		-e "s/@REDIS_HOST@/$REDIS_HOST/g" -e "s/@REDIS_PORT@/$REDIS_PORT/g" -e "s/@DOMAIN@/$DOMAIN/g" \
		"$TOP/deploy/templates/common.yaml.in"
	case $s in auth | ticket | audit | backup) sed -e "s/@SERVICE@/$s/g" -e "s/@SERVICE_US@/$us/g" -e "s/@PG_HOST@/$PG_HOST/g" "$TOP/deploy/templates/db.yaml.in" ;; esac
	if [ "$s" = gateway ]; then
		sed -e "s/@REGION@/$REGION/g" -e "s/@DOMAIN@/$DOMAIN/g" "$TOP/deploy/templates/gateway.yaml.in"
		if [ "${STATUS_REGION:-us}" = "$REGION" ]; then
			local cells="" f
			for f in "$TOP"/deploy/regions/*.env; do
				cells="$cells    - \"$(. "$f"; echo "$REGION $REDIS_HOST $REDIS_PORT /etc/ward/secrets/gateway/redis-status-$REGION")\"\n"
			done
			sed -e "s|@STATUS_CELLS@|$cells|" "$TOP/deploy/templates/gateway-status.yaml.in" | sed 's/\\n/\n/g' | sed '/^$/d'
		fi
	fi
}

secrets_of() { # the secret store names a daemon needs (never another daemon's)
	local s=$1
	echo "redis-$s routes-$s"
	case $s in auth | ticket | audit | backup) echo "pg-$s kek" ;; esac
	[ "$s" = audit ] && echo "audit-signing-key"
	[ "$s" = gateway ] && echo "tls-$REGION.key"
	if [ "$s" = gateway ] && [ "${STATUS_REGION:-us}" = "$REGION" ]; then
		echo "tls-status.key"
		local f; for f in "$TOP"/deploy/regions/*.env; do echo "redis-status-$(. "$f"; echo "$REGION")"; done
	fi
}

step "1/6 render configs"
for s in $SERVICES; do
	render "$s" >"$STAGE/$s.yaml"
	echo "  $s.yaml ($(wc -l <"$STAGE/$s.yaml") lines)"
done

step "2/6 install binaries, units and configs (previous release kept for rollback)"
run "sudo install -d -m 0755 /opt/ward/bin /opt/ward/previous /etc/ward /etc/ward/tls && sudo cp -a /opt/ward/bin/. /opt/ward/previous/ 2>/dev/null || true; sudo cp -a /etc/ward/*.yaml /opt/ward/previous/ 2>/dev/null || true"
for s in $SERVICES; do
	local_run scp -q "$TOP/bin/ward-$s" "$HOST:/tmp/ward-$s"
	local_run scp -q "$STAGE/$s.yaml" "$HOST:/tmp/$s.yaml"
	local_run scp -q "$TOP/deploy/systemd/ward-$s.service" "$HOST:/tmp/ward-$s.service"
	run "sudo install -m 0755 /tmp/ward-$s /opt/ward/bin/ward-$s && sudo install -m 0640 -g ward-$s /tmp/$s.yaml /etc/ward/$s.yaml && sudo install -m 0644 /tmp/ward-$s.service /etc/systemd/system/ward-$s.service && rm -f /tmp/ward-$s /tmp/$s.yaml /tmp/ward-$s.service"
done
local_run scp -q "$TOP/bin/ward-policy" "$TOP/deploy/policy.yaml" "$HOST:/tmp/"
run "sudo install -m 0755 /tmp/ward-policy /opt/ward/bin/ward-policy && sudo install -m 0644 /tmp/policy.yaml /etc/ward/policy.yaml && sudo systemctl daemon-reload"

step "3/6 users"
for s in $SERVICES; do
	run "id ward-$s >/dev/null 2>&1 || sudo useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ward-$s"
done

step "4/6 secrets from the secret store ($SECRET_PREFIX/*), one directory per daemon"
for s in $SERVICES; do
	run "sudo install -d -m 0500 -o ward-$s -g ward-$s /etc/ward/secrets/$s"
	for name in $(secrets_of "$s"); do
		run "aws --region $AWS_REGION secretsmanager get-secret-value --secret-id $SECRET_PREFIX/$name --query SecretString --output text | sudo install -m 0400 -o ward-$s -g ward-$s /dev/stdin /etc/ward/secrets/$s/$name"
	done
done

step "5/6 migrations (as the migration role) and grants from the policy"
for f in "$TOP"/deploy/sql/*.sql; do
	v=$(basename "$f" .sql)
	local_run scp -q "$f" "$HOST:/tmp/$v.sql"
	run "psql -X -v ON_ERROR_STOP=1 \"service=ward-migrate\" -tAc \"SELECT 1 FROM public.schema_migrations WHERE version = '$v'\" | grep -q 1 || psql -X -1 -v ON_ERROR_STOP=1 \"service=ward-migrate\" -f /tmp/$v.sql -c \"INSERT INTO public.schema_migrations (version) VALUES ('$v')\"; rm -f /tmp/$v.sql"
done
run "sudo /opt/ward/bin/ward-policy --policy /etc/ward/policy.yaml sql --dir /etc/ward/secrets/migrate | psql -X -v ON_ERROR_STOP=1 \"service=ward-migrate\""

step "6/6 restart one daemon at a time with health checks"
healthy() { # healthy SERVICE: the unit is active and its heartbeat is fresh
	local s=$1
	run "for i in \$(seq 30); do systemctl is-active --quiet ward-$s && redis-cli --no-auth-warning -h $REDIS_HOST -p $REDIS_PORT --user ops --pass \"\$(sudo cat /etc/ward/secrets/ops/redis-ops)\" EXISTS hb:$s:$s-${HOST%%.*} | grep -q 1 && exit 0; sleep 1; done; exit 1"
	if [ "$s" = gateway ]; then
		run "curl -fsS --max-time 5 --resolve $REGION.$DOMAIN:443:127.0.0.1 https://$REGION.$DOMAIN/healthz >/dev/null"
	fi
}
for s in $SERVICES; do
	run "sudo systemctl enable --quiet ward-$s && sudo systemctl restart ward-$s"
	if ! healthy "$s"; then
		step "ward-$s is not healthy: rolling back ward-$s"
		run "sudo install -m 0755 /opt/ward/previous/ward-$s /opt/ward/bin/ward-$s && sudo install -m 0640 -g ward-$s /opt/ward/previous/$s.yaml /etc/ward/$s.yaml && sudo systemctl restart ward-$s"
		healthy "$s" || step "ward-$s is still unhealthy after rollback: page the on-call (ops/runbooks/incident-response.md)"
		exit 1
	fi
	step "ward-$s healthy"
done
step "done"
