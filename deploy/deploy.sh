#!/usr/bin/env bash
# deploy/deploy.sh — install or upgrade Ward on one host of a region cell.
#
#   deploy/deploy.sh --region R --host H      [options]   a host over ssh (systemd units)
#   deploy/deploy.sh --region R --local PREFIX [options]   this machine, under PREFIX
#
# options: --services "audit auth ..."  (default: all seven, consumers before senders; in
#                           the first region of regions.yaml also "status" last)
#          --bin DIR        binaries to install (default: bin/ of this tree)
#          --secrets DIR    local mode: the secret store, DIR/<daemon>/<name> (as
#                           ward/<region>/<daemon>/<name> in AWS Secrets Manager)
#          --no-migrate     skip step 5 (a daemon host: its role cannot read the
#                           migration secrets; migrations run on the migration host)
#          --dry-run        print every step, run nothing
#          --check          validate the arguments and the region entry, then exit
#          --render NAME    print the rendered config NAME (a service, or redis-tls), then exit
#
# The region's settings come from its entry in deploy/regions.yaml (or
# $WARD_REGIONS_FILE). Steps (each printed):
#   1. render configs from deploy/templates with the region's entry
#   2. install binaries, units and configs; the previous release is kept for rollback
#   3. one system user per daemon (ward-<svc>; local mode: every daemon as WARD_USER)
#   4. secrets from the secret store into ETC/secrets/<svc>/, mode 0400, owned by
#      that daemon's user only, and only that daemon's own secrets
#   5. migrations of deploy/sql/ not yet applied (as the migration role), then the
#      roles and grants of the policy (ward-policy sql)
#   6. (redis_tls) start or reload the Redis TLS tunnel and check it reaches Redis; then
#      restart the daemons one at a time; after each, wait for a fresh heartbeat of the
#      new process (and the gateway's /healthz); on failure put the previous binary and
#      config back, restart that daemon, check it again, and stop with status 1.
#
# Redis over TLS (regions.yaml redis_tls: yes, the default in host mode): ElastiCache
# requires TLS in transit and the daemons' hiredis 0.14 has none, so each host runs
# stunnel4 (ward-redis-tls.service, deploy/templates/redis-tls*.conf.in) as a client-side
# tunnel: the daemons connect to 127.0.0.1:redis_tunnel_port (default 6380), stunnel to
# redis_host:redis_port with TLS 1.2+, the chain verified against redis_ca (default the
# system bundle, which has Amazon's roots) and the name against redis_host. The status
# page's host gets one more tunnel per other region (redis_tunnel_port+1+index).
#
# The status page (ward-status, "status"): only in the first region of regions.yaml,
# its own process, user and host (terraform: ward-<region>-status). Its secrets are
# the status certificate's key and each cell's read-only status Redis password
# (ward/<first region>/status/{tls-status.key,redis-status-<region>}); no route key,
# no gateway or tenant credential. Deploy its host with --services status --no-migrate.
# Local mode talks to the dev stack's plaintext Redis (redis_tls: no, its default there).
#
# Backups: host mode renders backup.s3 with the region's bucket (regions.yaml
# backup_bucket, terraform's output), its regional endpoint (https://s3.<aws_region>.
# amazonaws.com, or backup_s3_endpoint) and `credentials: instance`: ward-backup signs
# with the backup instance role's temporary keys from IMDSv2, no static key anywhere.
# Local mode keeps backup.dir under PREFIX (no instance role on a dev machine).
# Host mode runs the aws CLI on H with H's instance role: terraform gives each daemon's
# role its own ward/<region>/<daemon>/* secrets only, so deploy a daemon host with
# --services <that daemon> --no-migrate; step 5 reads ward/<region>/migrate/*, which
# only the migration host's role may (terraform/modules/cell/migrate.tf: the group
# ward-<region>-migrate, scaled to 1 for a deploy): deploy it first with --services "".
# Local mode runs the same steps on this machine without systemd or ssh: PREFIX/opt/ward,
# PREFIX/etc/ward, PREFIX/var/{lib,log}, the daemons started as processes (pid files in
# PREFIX/run) as $WARD_USER (default "ward" when root); `--local PREFIX --stop` stops them.
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
REGION="" HOST="" PREFIX="" SECRETS="" BINDIR=$TOP/bin DRY=0 CHECK=0 STOP=0 RENDER="" NOMIG=0
ALL="audit auth ticket backup mail-ingest mail-out gateway" # consumers before senders (mail-out: mail queued meanwhile)
SERVICES=DEFAULT
HEALTH_TIMEOUT=${WARD_DEPLOY_HEALTH_TIMEOUT:-30}
usage() {
	echo "usage: deploy/deploy.sh --region R (--host H | --local PREFIX [--secrets DIR] [--stop])" >&2
	echo "                        [--services LIST] [--bin DIR] [--no-migrate] [--dry-run | --check | --render NAME]" >&2
	exit 2
}
die() { echo "deploy: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
	case $1 in
	--region) REGION=${2:-}; shift 2 || usage ;;
	--host) HOST=${2:-}; shift 2 || usage ;;
	--local) PREFIX=${2:-}; shift 2 || usage ;;
	--secrets) SECRETS=${2:-}; shift 2 || usage ;;
	--services) SERVICES=${2:-}; shift 2 || usage ;;
	--bin) BINDIR=${2:-}; shift 2 || usage ;;
	--dry-run) DRY=1; shift ;;
	--no-migrate) NOMIG=1; shift ;;
	--check) CHECK=1; shift ;;
	--stop) STOP=1; shift ;;
	--render) RENDER=${2:-}; shift 2 || usage ;;
	*) usage ;;
	esac
done
[ -n "$REGION" ] || usage
[ -n "$HOST" ] || [ -n "$PREFIX" ] || usage
[ -n "$HOST" ] && [ -n "$PREFIX" ] && die "--host and --local exclude each other"
[[ $REGION =~ ^[a-z]{2,8}$ ]] || die "bad region"
[ -z "$HOST" ] || [[ $HOST =~ ^[A-Za-z0-9.-]{1,253}$ ]] || die "bad host"
[ -z "$PREFIX" ] || [[ $PREFIX =~ ^/[A-Za-z0-9._/-]+$ ]] || die "--local needs an absolute path of [A-Za-z0-9._/-]"

# shellcheck source=deploy/regions.sh
. "$TOP/deploy/regions.sh"
regions_list | grep -qx "$REGION" || die "no region $REGION in $WARD_REGIONS_FILE (add it there first: ops/runbooks/add-region.md)"
rget() { regions_get "$REGION" "$1"; }
DOMAIN=$(regions_domain)
STATUS_REGION=$(regions_list | head -1)
# The status page (ward-status) runs in the first region only: its "all" has it last.
if [ "$SERVICES" = DEFAULT ]; then
	SERVICES=$ALL
	[ "$REGION" = "$STATUS_REGION" ] && SERVICES="$ALL status"
fi
for s in $SERVICES; do
	case " $ALL status " in *" $s "*) ;; *) die "unknown service $s" ;; esac
	[ "$s" != status ] || [ "$REGION" = "$STATUS_REGION" ] ||
		die "the status page (status) runs in the first region of regions.yaml only ($STATUS_REGION)"
done
AWS_REGION=$(rget aws_region)
REDIS_HOST=$(rget redis_host)
REDIS_PORT=$(rget redis_port)
PG_HOST=$(rget pg_host)
PG_PORT=$(rget pg_port)
PG_PORT=${PG_PORT:-5432}
PG_TLS=$(rget pg_tls)
PG_TLS=${PG_TLS:-sslmode=verify-full sslrootcert=/etc/ward/tls/rds-ca.pem}
MIGRATE_USER=$(rget migrate_user)
MIGRATE_USER=${MIGRATE_USER:-ward_migrate}
SECRET_PREFIX=$(rget secret_prefix)
HTTPS_LISTEN=$(rget https_listen)
HTTPS_LISTEN=${HTTPS_LISTEN:-0.0.0.0:443}
SMTP_LISTEN=$(rget smtp_listen)
SMTP_LISTEN=${SMTP_LISTEN:-0.0.0.0:25}
STATUS_LISTEN=$(rget status_listen)
STATUS_LISTEN=${STATUS_LISTEN:-0.0.0.0:8443}
# Outbound mail (ward-mail-out): the region's SMTP relay, host:port (STARTTLS required).
MAIL_RELAY=$(rget mail_relay)
MAIL_RELAY=${MAIL_RELAY:-smtp.$REGION.internal.$(regions_domain):587}
[[ $MAIL_RELAY =~ ^[A-Za-z0-9.-]{1,253}:[0-9]{1,5}$ ]] || die "region $REGION: mail_relay must be host:port"
REDIS_TLS=$(rget redis_tls)
REDIS_CA=$(rget redis_ca)
REDIS_CA=${REDIS_CA:-/etc/ssl/certs/ca-certificates.crt}
REDIS_TUNNEL_PORT=$(rget redis_tunnel_port)
REDIS_TUNNEL_PORT=${REDIS_TUNNEL_PORT:-6380}
# Backups (host mode): the region's bucket (terraform output backup_bucket), through
# S3's regional endpoint, signed with the backup instance role's temporary credentials
# (IMDSv2; terraform gives no static key). Local mode keeps a directory (no role there).
BACKUP_BUCKET=$(rget backup_bucket)
BACKUP_S3_ENDPOINT=$(rget backup_s3_endpoint)
BACKUP_S3_ENDPOINT=${BACKUP_S3_ENDPOINT:-https://s3.$AWS_REGION.amazonaws.com}
for v in DOMAIN AWS_REGION REDIS_HOST REDIS_PORT PG_HOST SECRET_PREFIX; do
	[ -n "${!v}" ] || die "region $REGION: no ${v,,} in $WARD_REGIONS_FILE"
done
[[ $REDIS_PORT =~ ^[0-9]{1,5}$ && $PG_PORT =~ ^[0-9]{1,5}$ && $REDIS_TUNNEL_PORT =~ ^[0-9]{1,5}$ ]] || die "region $REGION: bad port"
[[ $REDIS_HOST =~ ^[A-Za-z0-9.-]{1,253}$ ]] || die "region $REGION: bad redis_host"
[[ $REDIS_CA =~ ^/[A-Za-z0-9._/-]+$ ]] || die "region $REGION: redis_ca must be an absolute path of [A-Za-z0-9._/-]"
[ -z "$BACKUP_BUCKET" ] || [[ $BACKUP_BUCKET =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "region $REGION: bad backup_bucket"
[[ $BACKUP_S3_ENDPOINT =~ ^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?$ ]] || die "region $REGION: backup_s3_endpoint must be https://host[:port]"
if [ -z "$PREFIX" ] && [ -z "$BACKUP_BUCKET" ] && { [[ " $SERVICES " == *" backup "* ]] || [ "$RENDER" = backup ]; }; then
	die "region $REGION: no backup_bucket in $WARD_REGIONS_FILE (terraform output backup_bucket of its module)"
fi
if [ -n "$PREFIX" ]; then
	ETC=$PREFIX/etc/ward OPT=$PREFIX/opt/ward STATE=$PREFIX/var/lib LOG=$PREFIX/var/log/ward RUN=$PREFIX/run
	HOST=${WARD_DEPLOY_INSTANCE:-$(hostname -s)}
	[[ $HOST =~ ^[A-Za-z0-9-]{1,63}$ ]] || die "bad instance name $HOST"
	[ $STOP = 1 ] || [ -n "$SECRETS" ] || die "--local needs --secrets DIR (the secret store)"
	[ -z "$SECRETS" ] || [ -d "$SECRETS" ] || die "no secret store $SECRETS"
	WUSER=${WARD_USER:-ward}
	[ "$(id -u)" -eq 0 ] || WUSER=$(id -un)
	REDIS_TLS=${REDIS_TLS:-no}
	[ "$REDIS_TLS" = no ] || [ -n "$RENDER" ] || die "region $REGION: local mode reaches Redis directly; set redis_tls: no (a tunnel runs as ward-redis-tls.service on hosts)"
else
	ETC=/etc/ward OPT=/opt/ward STATE=/var/lib LOG=/var/log/ward RUN=/run
fi
REDIS_TLS=${REDIS_TLS:-yes}
case $REDIS_TLS in yes | no) ;; *) die "region $REGION: redis_tls must be yes or no" ;; esac
# The migration host (--services ""): no daemon, so no Redis tunnel (its security
# group reaches PostgreSQL and the API endpoints only).
[ -n "${SERVICES//[[:space:]]/}" ] || REDIS_TLS=no
[ -d "$BINDIR" ] || die "no binaries in $BINDIR"
[ $CHECK = 1 ] && { echo "deploy: --region $REGION ${PREFIX:+--local $PREFIX}${PREFIX:---host $HOST}: arguments ok (services: $SERVICES)"; exit 0; }

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
chmod 0755 "$STAGE"
step() { echo "deploy[$REGION/$HOST]: $*"; }
run() { # run CMD: on the target (ssh H, or a local shell); printed; skipped with --dry-run
	if [ -n "$PREFIX" ]; then
		echo "+ $*"
		[ $DRY = 1 ] || bash -c "$*"
	else
		echo "+ ssh $HOST $*"
		[ $DRY = 1 ] || ssh -o BatchMode=yes "$HOST" "$*"
	fi
}
copy() { # copy LOCAL-FILE... REMOTE-DIR: to the target's staging directory
	if [ -n "$PREFIX" ]; then
		echo "+ cp $*"
		[ $DRY = 1 ] || cp "$@"
	else
		local dst=${*: -1}
		echo "+ scp ${*:1:$#-1} $HOST:$dst"
		[ $DRY = 1 ] || scp -q "${@:1:$#-1}" "$HOST:$dst"
	fi
}
SUDO=sudo
[ -n "$PREFIX" ] && SUDO=""
owner() { if [ -n "$PREFIX" ]; then echo "$WUSER"; else echo "ward-$1"; fi; }

if [ -n "$PREFIX" ] && [ $STOP = 1 ]; then
	for s in $SERVICES; do
		f=$RUN/ward-$s.pid
		[ -f "$f" ] || continue
		run "kill -TERM \$(cat $f) 2>/dev/null; for i in \$(seq 150); do kill -0 \$(cat $f) 2>/dev/null || break; sleep 0.1; done; kill -KILL \$(cat $f) 2>/dev/null; rm -f $f; true"
	done
	exit 0
fi

tunnel_port() { # tunnel_port R: the loopback port of region R's Redis tunnel on this host
	local r i=0
	[ "$1" = "$REGION" ] && { echo "$REDIS_TUNNEL_PORT"; return 0; }
	for r in $(regions_list); do
		[ "$r" = "$1" ] && { echo $((REDIS_TUNNEL_PORT + 1 + i)); return 0; }
		i=$((i + 1))
	done
	return 1
}
redis_addr() { # redis_addr R: "host port" the daemons here use for region R's Redis
	if [ "$REDIS_TLS" = yes ]; then echo "127.0.0.1 $(tunnel_port "$1")"; else echo "$(regions_get "$1" redis_host) $(regions_get "$1" redis_port)"; fi
}
if [ "$REDIS_TLS" = yes ]; then DREDIS_HOST=127.0.0.1 DREDIS_PORT=$REDIS_TUNNEL_PORT; else DREDIS_HOST=$REDIS_HOST DREDIS_PORT=$REDIS_PORT; fi

sub() { # sub FILE: the template with the region's values
	local s=$SVC us=${SVC//-/_}
	sed -e "s|@SERVICE@|$s|g" -e "s|@SERVICE_US@|$us|g" -e "s|@REGION@|$REGION|g" -e "s|@HOST@|${HOST%%.*}|g" \
		-e "s|@REDIS_HOST@|$DREDIS_HOST|g" -e "s|@REDIS_PORT@|$DREDIS_PORT|g" -e "s|@DOMAIN@|$DOMAIN|g" \
		-e "s|@PG_HOST@|$PG_HOST|g" -e "s|@PG_PORT@|$PG_PORT|g" -e "s|@PG_TLS@|$PG_TLS|g" \
		-e "s|@ETC@|$ETC|g" -e "s|@STATE@|$STATE|g" -e "s|@LOG@|$LOG|g" \
		-e "s|@HTTPS_LISTEN@|$HTTPS_LISTEN|g" -e "s|@SMTP_LISTEN@|$SMTP_LISTEN|g" \
		-e "s|@STATUS_LISTEN@|$STATUS_LISTEN|g" -e "s|@MAIL_RELAY@|$MAIL_RELAY|g" "$1"
}
render() { # render SERVICE: its whole config on stdout
	local SVC=$1 r t
	sub "$TOP/deploy/templates/common.yaml.in"
	if [ "$SVC" = mail-out ]; then # queue: a relay down is retried every minute, 100 times
		echo "  claim_idle_ms: 60000"
		echo "  max_deliveries: 100"
	fi
	case $SVC in auth | ticket | audit | backup) sub "$TOP/deploy/templates/db.yaml.in" ;; esac
	t=$TOP/deploy/templates/$SVC.yaml.in
	if [ -f "$t" ]; then
		sub "$t" | while IFS= read -r line; do
			case $line in
			@BACKUP_TARGET@)
				if [ -n "$PREFIX" ]; then
					echo "  dir: $STATE/ward-backup/backups"
				else
					echo "  s3:"
					echo "    endpoint: $BACKUP_S3_ENDPOINT"
					echo "    bucket: $BACKUP_BUCKET"
					echo "    region: $AWS_REGION"
					echo "    credentials: instance # the instance role's keys, IMDSv2 (terraform)"
				fi ;;
			@REGION_PORTS@)
				for r in $(regions_list); do
					local p; p=$(regions_get "$r" https_port)
					echo "  - \"$r ${p:-443}\""
				done ;;
			*) echo "$line" ;;
			esac
		done
	fi
}
render_status() { # render_status: ward-status's config on stdout (no common part: no route key)
	local SVC=status r line
	sub "$TOP/deploy/templates/status.yaml.in" | while IFS= read -r line; do
		if [ "$line" = @STATUS_CELLS@ ]; then
			for r in $(regions_list); do
				echo "    - \"$r $(redis_addr "$r") $ETC/secrets/status/redis-status-$r\""
			done
		else
			echo "$line"
		fi
	done
}

tunnel_regions() { # the regions whose Redis this host reaches (the status page's host: all)
	if [ "$STATUS_REGION" = "$REGION" ] && [[ " $SERVICES " == *" status "* ]]; then regions_list; else echo "$REGION"; fi
}
render_tunnel() { # render_tunnel: the stunnel config of this host's Redis TLS tunnels on stdout
	local line r
	while IFS= read -r line; do
		if [ "$line" = @TUNNELS@ ]; then
			for r in $(tunnel_regions); do
				sed -e "s|@TUNNEL_REGION@|$r|g" -e "s|@TUNNEL_PORT@|$(tunnel_port "$r")|g" \
					-e "s|@TUNNEL_HOST@|$(regions_get "$r" redis_host)|g" \
					-e "s|@TUNNEL_REDIS_PORT@|$(regions_get "$r" redis_port)|g" \
					-e "s|@REDIS_CA@|$REDIS_CA|g" -e '1{/^;/d}' "$TOP/deploy/templates/redis-tls-tunnel.conf.in"
			done
		else
			echo "$line" | sed -e "s|@ETC@|$ETC|g"
		fi
	done <"$TOP/deploy/templates/redis-tls.conf.in"
}
if [ -n "$RENDER" ]; then
	case $RENDER in
	redis-tls) [ "$REDIS_TLS" = yes ] || die "region $REGION: redis_tls is no, no tunnel"; render_tunnel ;;
	status) [ "$REGION" = "$STATUS_REGION" ] || die "--render status: the status page runs in $STATUS_REGION only"; render_status ;;
	*) case " $ALL " in *" $RENDER "*) render "$RENDER" ;; *) die "--render: unknown config $RENDER" ;; esac ;;
	esac
	exit 0
fi

secrets_of() { # the secret store names a daemon needs (never another daemon's)
	local s=$1 r
	if [ "$s" = status ]; then # read-only health data: no route key, nothing of the gateway's
		echo "tls-status.key"
		for r in $(regions_list); do echo "redis-status-$r"; done
		return 0
	fi
	echo "redis-$s routes-$s"
	case $s in auth | ticket | audit | backup) echo "pg-$s kek" ;; esac
	[ "$s" = audit ] && echo "audit-signing-key"
	case $s in gateway | mail-ingest) echo "tls-$REGION.key" ;; esac
	return 0
}

# The target's staging directory (local mode: beside ours).
if [ -n "$PREFIX" ]; then RSTAGE=$STAGE/target; else RSTAGE=/tmp/ward-deploy.$(date +%s).$$; fi

step "1/6 render configs"
for s in $SERVICES; do
	if [ "$s" = status ]; then render_status >"$STAGE/$s.yaml"; else render "$s" >"$STAGE/$s.yaml"; fi
	echo "  $s.yaml ($(wc -l <"$STAGE/$s.yaml") lines)"
done
if [ "$REDIS_TLS" = yes ]; then
	render_tunnel >"$STAGE/redis-tls.conf"
	echo "  redis-tls.conf (tunnels: $(tunnel_regions | tr '\n' ' ')→ $REDIS_HOST:$REDIS_PORT from 127.0.0.1:$REDIS_TUNNEL_PORT)"
fi

step "2/6 install binaries, units and configs (previous release kept for rollback)"
run "install -d -m 0755 $RSTAGE"
run "$SUDO install -d -m 0755 $OPT/bin $OPT/previous $ETC $ETC/tls $LOG $STATE && for f in $OPT/bin/*; do [ -e \"\$f\" ] && cp -a \"\$f\" $OPT/previous/; done; for f in $ETC/*.yaml; do [ -e \"\$f\" ] && cp -a \"\$f\" $OPT/previous/; done; true"
for s in $SERVICES; do
	[ -x "$BINDIR/ward-$s" ] || die "no $BINDIR/ward-$s"
	copy "$BINDIR/ward-$s" "$STAGE/$s.yaml" "$TOP/deploy/systemd/ward-$s.service" "$RSTAGE/"
done
for s in $SERVICES; do
	run "$SUDO install -m 0755 $RSTAGE/ward-$s $OPT/bin/ward-$s.new && $SUDO mv -f $OPT/bin/ward-$s.new $OPT/bin/ward-$s && $SUDO install -m 0640 $RSTAGE/$s.yaml $ETC/$s.yaml"
	[ -n "$PREFIX" ] || run "sudo install -m 0644 $RSTAGE/ward-$s.service /etc/systemd/system/ward-$s.service"
done
if [ "$REDIS_TLS" = yes ]; then # host mode only (local mode refuses redis_tls: yes)
	copy "$STAGE/redis-tls.conf" "$TOP/deploy/systemd/ward-redis-tls.service" "$RSTAGE/"
	run "dpkg-query -W -f='\${Status}' stunnel4 2>/dev/null | grep -q 'install ok installed' || sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stunnel4"
	run "if [ -e $ETC/redis-tls.conf ]; then sudo cp -a $ETC/redis-tls.conf $OPT/previous/; fi; sudo install -m 0644 $RSTAGE/redis-tls.conf $ETC/redis-tls.conf && sudo install -m 0644 $RSTAGE/ward-redis-tls.service /etc/systemd/system/ward-redis-tls.service"
fi
copy "$BINDIR/ward-policy" "$TOP/deploy/policy.yaml" "$RSTAGE/"
run "$SUDO install -m 0755 $RSTAGE/ward-policy $OPT/bin/ward-policy && $SUDO install -m 0644 $RSTAGE/policy.yaml $ETC/policy.yaml"
[ -n "$PREFIX" ] || run "sudo systemctl daemon-reload"
# Certificates (public) are kept beside the secrets: tls/<region>.pem, tls/status.pem,
# tls/rds-ca.pem (local mode: every .pem of DIR/tls).
if [ -n "$PREFIX" ]; then
	[ -d "$SECRETS/tls" ] && copy "$SECRETS"/tls/*.pem "$ETC/tls/"
else
	for c in "$REGION.pem" rds-ca.pem $([[ " $SERVICES " == *" status "* ]] && echo status.pem); do
		run "aws --region $AWS_REGION secretsmanager get-secret-value --secret-id $SECRET_PREFIX/tls/$c --query SecretString --output text | sudo install -m 0644 /dev/stdin $ETC/tls/$c"
	done
fi

step "3/6 users"
for s in $SERVICES; do
	if [ -n "$PREFIX" ]; then
		echo "  ward-$s runs as $WUSER (local mode)"
	else
		run "id ward-$s >/dev/null 2>&1 || sudo useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ward-$s"
	fi
	run "$SUDO install -d -m 0700 -o $(owner "$s") -g $(owner "$s") $STATE/ward-$s $LOG/$s"
	case $s in
	mail-ingest) run "$SUDO install -d -m 0700 -o $(owner "$s") -g $(owner "$s") $STATE/ward-$s/spool" ;;
	backup) [ -z "$PREFIX" ] || run "install -d -m 0700 -o $(owner "$s") -g $(owner "$s") $STATE/ward-$s/backups" ;;
	esac
	run "$SUDO chgrp $(owner "$s") $ETC/$s.yaml"
done

step "4/6 secrets from the secret store ($SECRET_PREFIX/<daemon>/*), one directory per daemon"
run "$SUDO install -d -m 0711 $ETC/secrets"
for s in $SERVICES; do
	o=$(owner "$s")
	run "$SUDO install -d -m 0500 -o $o -g $o $ETC/secrets/$s"
	for name in $(secrets_of "$s"); do
		if [ -n "$PREFIX" ]; then
			[ $DRY = 1 ] || [ -f "$SECRETS/$s/$name" ] || die "secret store: no $s/$name"
			run "install -m 0400 -o $o -g $o $SECRETS/$s/$name $ETC/secrets/$s/$name"
		else
			run "aws --region $AWS_REGION secretsmanager get-secret-value --secret-id $SECRET_PREFIX/$s/$name --query SecretString --output text | sudo install -m 0400 -o $o -g $o /dev/stdin $ETC/secrets/$s/$name"
		fi
	done
done

if [ $NOMIG = 1 ]; then
	step "5/6 migrations skipped (--no-migrate): the migration host runs them (terraform: ward-$REGION-migrate)"
else
	step "5/6 migrations (as $MIGRATE_USER) and grants from the policy"
	if [ -n "$PREFIX" ]; then
		MIG="PGPASSWORD=\$(cat $SECRETS/migrate/password) psql -X -q -v ON_ERROR_STOP=1 'host=$PG_HOST port=$PG_PORT dbname=ward user=$MIGRATE_USER'"
		POLDIR=$SECRETS/migrate
	else
		# The migration role's own credentials (pg_service.conf "ward-migrate", .pgpass) and
		# the password of every role the policy defines, for ward-policy sql: root only,
		# removed again after this step.
		MIG="psql -X -q -v ON_ERROR_STOP=1 'service=ward-migrate'"
		POLDIR=/etc/ward/secrets/migrate
		run "sudo install -d -m 0700 $POLDIR"
		for role in $(awk '/^services:/ { f = 1; next } f && /^  [a-z-]+:$/ { n = substr($1, 1, length($1) - 1); r[n] = 1 }
			f && /postgres: none/ { delete r[n] } END { for (k in r) print k }' "$TOP/deploy/policy.yaml" | sort); do
			run "aws --region $AWS_REGION secretsmanager get-secret-value --secret-id $SECRET_PREFIX/migrate/pg-$role --query SecretString --output text | sudo install -m 0400 /dev/stdin $POLDIR/pg-$role"
		done
	fi
	run "$MIG -c 'CREATE TABLE IF NOT EXISTS public.schema_migrations (version text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())'"
	for f in "$TOP"/deploy/sql/*.sql; do
		v=$(basename "$f" .sql)
		copy "$f" "$RSTAGE/"
		run "if $MIG -tAc \"SELECT 1 FROM public.schema_migrations WHERE version = '$v'\" | grep -q 1; then echo '  $v: already applied'; else $MIG -1 -f $RSTAGE/$v.sql -c \"INSERT INTO public.schema_migrations (version) VALUES ('$v')\" && echo '  $v: applied'; fi"
	done
	run "$SUDO $OPT/bin/ward-policy --policy $ETC/policy.yaml sql --dir $POLDIR | $MIG >/dev/null"
	[ -n "$PREFIX" ] || run "sudo rm -rf $POLDIR"
fi

run "rm -rf $RSTAGE"

step "6/6 restart one daemon at a time with health checks"
if [ "$REDIS_TLS" = yes ]; then
	# The tunnel first: reload keeps the running daemons' connections; then every tunnel
	# must reach its Redis through verified TLS (an unauthenticated PING answers NOAUTH).
	tunnel_ok() {
		local r checks=""
		for r in $(tunnel_regions); do
			checks="$checks && redis-cli -h 127.0.0.1 -p $(tunnel_port "$r") PING 2>&1 | grep -qE '^(PONG|NOAUTH)'"
		done
		run "for i in \$(seq $HEALTH_TIMEOUT); do systemctl is-active --quiet ward-redis-tls $checks && exit 0; sleep 1; done; exit 1"
	}
	run "sudo systemctl enable --quiet ward-redis-tls && sudo systemctl reload-or-restart ward-redis-tls"
	if ! tunnel_ok; then
		step "ward-redis-tls does not reach Redis: putting the previous tunnel config back; no daemon was touched"
		run "if [ -e $OPT/previous/redis-tls.conf ]; then sudo install -m 0644 $OPT/previous/redis-tls.conf $ETC/redis-tls.conf && sudo systemctl restart ward-redis-tls; fi"
		exit 1
	fi
	step "ward-redis-tls healthy"
fi
pid_of() { # the running pid of ward-S on the target (local: pid file; host: systemd)
	if [ -n "$PREFIX" ]; then cat "$RUN/ward-$1.pid" 2>/dev/null || true; fi
}
restart() { # restart S
	local s=$1
	if [ -n "$PREFIX" ]; then
		local f=$RUN/ward-$s.pid
		run "mkdir -p $RUN; if [ -f $f ]; then kill -TERM \$(cat $f) 2>/dev/null; for i in \$(seq 150); do kill -0 \$(cat $f) 2>/dev/null || break; sleep 0.1; done; kill -KILL \$(cat $f) 2>/dev/null; rm -f $f; fi; true"
		echo "+ start $OPT/bin/ward-$s --config $ETC/$s.yaml (as $WUSER, pid in $f)"
		if [ $DRY = 0 ]; then
			(
				cd /
				if [ "$(id -u)" -eq 0 ]; then
					exec setpriv --reuid="$WUSER" --regid="$WUSER" --init-groups --inh-caps=-all -- \
						"$OPT/bin/ward-$s" --config "$ETC/$s.yaml" </dev/null >>"$LOG/$s/stderr" 2>&1
				fi
				exec "$OPT/bin/ward-$s" --config "$ETC/$s.yaml" </dev/null >>"$LOG/$s/stderr" 2>&1
			) &
			echo $! >"$f"
		fi
	else
		run "sudo systemctl enable --quiet ward-$s && sudo systemctl restart ward-$s"
	fi
}
# Who reads a heartbeat: the operator's user; on the status page's host (which holds
# no other credential) its own read-only status user, which may GET hb:*.
hb_user() { if [ "$1" = status ]; then echo status; else echo ops; fi; }
hb_secret() { if [ "$1" = status ]; then echo "status/redis-status-$REGION"; else echo ops/redis-ops; fi; }
healthy() { # healthy S: the new process runs and its own heartbeat is fresh (gateway: /healthz)
	local s=$1 key="hb:$s:$s-${HOST%%.*}"
	if [ -n "$PREFIX" ]; then
		local pid; pid=$(pid_of "$s")
		echo "+ wait for $key with pid $pid (${HEALTH_TIMEOUT}s)"
		[ $DRY = 1 ] && return 0
		local i hb
		for i in $(seq $((HEALTH_TIMEOUT * 5))); do
			kill -0 "$pid" 2>/dev/null || { echo "  ward-$s (pid $pid) exited"; return 1; }
			hb=$(REDISCLI_AUTH=$(cat "$SECRETS/$(hb_secret "$s")") redis-cli --no-auth-warning -h "$REDIS_HOST" \
				-p "$REDIS_PORT" --user "$(hb_user "$s")" GET "$key" 2>/dev/null || true)
			if echo "$hb" | grep -q "\"pid\":$pid,"; then
				if [ "$s" != gateway ]; then return 0; fi
				local ca=() p=${HTTPS_LISTEN##*:}
				[ -f "$ETC/tls/ca.pem" ] && ca=(--cacert "$ETC/tls/ca.pem")
				curl -fsS --max-time 5 "${ca[@]}" --resolve "$REGION.$DOMAIN:$p:127.0.0.1" \
					"https://$REGION.$DOMAIN:$p/healthz" >/dev/null 2>&1 && return 0
			fi
			sleep 0.2
		done
		echo "  ward-$s: no fresh heartbeat of pid $pid within ${HEALTH_TIMEOUT}s"
		return 1
	fi
	run "for i in \$(seq $HEALTH_TIMEOUT); do systemctl is-active --quiet ward-$s && pid=\$(systemctl show -p MainPID --value ward-$s) && REDISCLI_AUTH=\"\$(sudo cat /etc/ward/secrets/$(hb_secret "$s"))\" redis-cli --no-auth-warning -h $DREDIS_HOST -p $DREDIS_PORT --user $(hb_user "$s") GET $key | grep -q \"\\\"pid\\\":\$pid,\" && exit 0; sleep 1; done; exit 1" || return 1
	if [ "$s" = gateway ]; then
		run "curl -fsS --max-time 5 --resolve $REGION.$DOMAIN:${HTTPS_LISTEN##*:}:127.0.0.1 https://$REGION.$DOMAIN:${HTTPS_LISTEN##*:}/healthz >/dev/null" || return 1
	fi
	return 0
}
for s in $SERVICES; do
	restart "$s"
	if ! healthy "$s"; then
		step "ward-$s is not healthy: rolling back ward-$s to the previous release"
		run "if [ -e $OPT/previous/ward-$s ]; then $SUDO install -m 0755 $OPT/previous/ward-$s $OPT/bin/ward-$s.new && mv -f $OPT/bin/ward-$s.new $OPT/bin/ward-$s; fi; if [ -e $OPT/previous/$s.yaml ]; then $SUDO install -m 0640 -g $(owner "$s") $OPT/previous/$s.yaml $ETC/$s.yaml; fi"
		restart "$s"
		if healthy "$s"; then
			step "ward-$s rolled back and healthy; the remaining daemons were not touched; deploy failed"
		else
			step "ward-$s is still unhealthy after rollback: page the on-call (ops/runbooks/incident-response.md)"
		fi
		exit 1
	fi
	step "ward-$s healthy"
done
step "done"
