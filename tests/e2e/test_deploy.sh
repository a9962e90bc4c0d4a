#!/usr/bin/env bash
# test_deploy — deploy/: systemd units verify clean with the hardening the design asks
# (exposure below 2.0), deploy.sh --dry-run prints every step and refuses bad input,
# and terraform/ keeps its security posture (policy checks on the HCL text: terraform
# itself is not installable here, so the HCL is not validated by terraform).
. "$(dirname "$0")/lib.sh"
units=$TOP/deploy/systemd
tmp=$(mktemp -d)
for s in gateway auth ticket mail-ingest audit backup; do
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
rm -rf "$tmp"

out=$("$TOP/deploy/deploy.sh" --region eu --host app1.eu.example --dry-run)
check "deploy.sh --dry-run prints the six steps" bash -c "[ \$(echo \"\$1\" | grep -c '^deploy\[eu/app1.eu.example\]: [1-6]/6') = 6 ]" _ "$out"
check "deploy.sh restarts one daemon at a time, gateway last" bash -c "echo \"\$1\" | grep 'systemctl restart' | tail -1 | grep -q ward-gateway" _ "$out"
check "deploy.sh fetches only a daemon's own secrets" bash -c "! echo \"\$1\" | grep 'secrets/gateway/' | grep -q 'pg-\|kek'" _ "$out"
check "deploy.sh has a rollback path" grep -q 'rolling back' "$TOP/deploy/deploy.sh"
refuse "deploy.sh refuses an unknown region" "$TOP/deploy/deploy.sh" --region mars --host x --dry-run
refuse "deploy.sh refuses a host with shell metacharacters" "$TOP/deploy/deploy.sh" --region eu --host 'x;rm' --dry-run

tf=$TOP/terraform
check "terraform: one module instance per region us/eu/uk with their AWS regions" bash -c "
	grep -q 'region = \"us-east-1\"' $tf/main.tf && grep -q 'region = \"eu-west-1\"' $tf/main.tf &&
	grep -q 'region = \"eu-west-2\"' $tf/main.tf && [ \$(grep -c 'source *= \"./modules/cell\"' $tf/main.tf) = 3 ]"
m=$tf/modules/cell
check "terraform: RDS Multi-AZ, encrypted with KMS, 35-day backups, deletion protection, private" bash -c "
	grep -q 'multi_az *= true' $m/data.tf && grep -q 'storage_encrypted *= true' $m/data.tf &&
	grep -q 'backup_retention_period *= 35' $m/data.tf && grep -q 'deletion_protection *= true' $m/data.tf &&
	grep -q 'publicly_accessible *= false' $m/data.tf"
check "terraform: ElastiCache with TLS, at-rest encryption, replicas, ACL users" bash -c "
	grep -q 'transit_encryption_enabled *= true' $m/data.tf && grep -q 'at_rest_encryption_enabled *= true' $m/data.tf &&
	grep -q 'num_cache_clusters *= 2' $m/data.tf && grep -q 'user_group_ids' $m/data.tf"
check "terraform: backups bucket encrypted, versioned, 60-day lifecycle, public access blocked" bash -c "
	grep -q 'aws:kms' $m/data.tf && grep -q 'status = \"Enabled\"' $m/data.tf && grep -q 'days = 60' $m/data.tf &&
	[ \$(grep -cE '(block_public_acls|block_public_policy|ignore_public_acls|restrict_public_buckets) *= true' $m/data.tf) = 4 ]"
check "terraform: 0.0.0.0/0 only on the two public ports (443, 25)" python3 - "$m/network.tf" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
blocks = re.findall(r'ingress\s*\{[^}]*\}', s)
opens = [b for b in blocks if '0.0.0.0/0' in b]
ports = sorted(int(re.search(r'from_port\s*=\s*(\d+)', b).group(1)) for b in opens)
assert ports == [25, 443], ports
assert all(re.search(r'to_port\s*=\s*(\d+)', b).group(1) == re.search(r'from_port\s*=\s*(\d+)', b).group(1) for b in opens)
assert s.count('0.0.0.0/0') == 2, s.count('0.0.0.0/0')
PY
check "terraform: private subnets in two availability zones" grep -q 'count *= 2' "$m/network.tf"
check "terraform: DNS *.<region>.<domain> and mx.<region>.<domain>" bash -c "grep -q '\"\*.\${var.region}.\${var.domain}\"' $m/compute.tf && grep -q '\"mx.\${var.region}.\${var.domain}\"' $m/compute.tf"
check "terraform: gateway and mail-ingest have no PostgreSQL egress" bash -c "grep -q 'toset(\[\"auth\", \"ticket\", \"audit\", \"backup\"\])' $m/network.tf"
check "terraform: HCL braces balance in every file" python3 - $tf/main.tf $m/*.tf <<'PY'
import sys
for f in sys.argv[1:]:
    s = open(f).read()
    assert s.count('{') == s.count('}') and s.count('[') == s.count(']'), f
PY
