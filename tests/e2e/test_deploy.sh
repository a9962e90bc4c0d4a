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

# terraform/: tests/e2e/test_terraform.sh (policy checks on the parsed HCL).
