#!/usr/bin/env bash
# test_redis_tls — the Redis TLS tunnel of a deployed host (issue 8): ElastiCache requires
# TLS in transit and the daemons' hiredis 0.14 has none, so deploy/deploy.sh renders a
# stunnel4 client config (deploy/templates/redis-tls*.conf.in) and the daemons connect
# to its loopback port. Against a real TLS-only redis-server 7 with ACL users and a CA
# made here: AUTH/ACL works through the tunnel; plaintext to the TLS port gets nothing;
# a tunnel with the wrong CA, the wrong host name or a server below TLS 1.2 refuses; and
# Ward's own queue client (wardctl ping, answered by ward-auth) works through a tunnel
# to a cell whose Redis also listens with TLS.
. "$(dirname "$0")/lib.sh"
command -v stunnel4 >/dev/null || { not_ok "stunnel4 is not installed (ops/deps)"; exit 1; }
T=$(mktemp -d)
chmod 755 "$T"
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	rcli uk admin CONFIG SET tls-port 0 >/dev/null 2>&1
	rm -rf "$T"
}
trap cleanup EXIT
RP=$((WARD_PORT_BASE + 60)) TP=$((WARD_PORT_BASE + 61)) # TLS redis, good tunnel
CAP=$((WARD_PORT_BASE + 62)) HNP=$((WARD_PORT_BASE + 63)) # wrong-CA, wrong-name tunnels
OLDP=$((WARD_PORT_BASE + 64)) OLDT=$((WARD_PORT_BASE + 65)) # TLS 1.1 server, its tunnel
UKT=$((WARD_PORT_BASE + 66)) UKP=$((WARD_PORT_BASE + 67)) # the uk cell: TLS port, tunnel

# ---- a CA, a server certificate for "localhost" only, and a second, unrelated CA
(
	cd "$T" || exit 1
	for ca in ca other-ca; do
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
			-subj "/CN=ward test $ca" -keyout $ca.key -out $ca.pem 2>/dev/null || exit 1
	done
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
		-keyout server.key -out server.csr 2>/dev/null &&
		printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >ext &&
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
			-extfile ext -out server.pem 2>/dev/null
) || { not_ok "making the test CA and certificate"; exit 1; }
chmod 644 "$T"/*
PASS=$(openssl rand -hex 16)
printf 'user default off\nuser ward on >%s ~* &* +@all\n' "$PASS" >"$T/users.acl"
[ "$(id -u)" -eq 0 ] && chown -R "$WUSER:" "$T"

# ---- redis-server 7, TLS only (port 0), TLS 1.2+, clients not asked for certificates
redis-server --port 0 --tls-port "$RP" --bind 127.0.0.1 --tls-cert-file "$T/server.pem" \
	--tls-key-file "$T/server.key" --tls-ca-cert-file "$T/ca.pem" --tls-auth-clients no \
	--tls-protocols "TLSv1.2 TLSv1.3" --aclfile "$T/users.acl" --save '' --appendonly no \
	--dir "$T" --logfile "$T/redis.log" --daemonize no &
PIDS+=($!)
check "redis-server with TLS only starts (TLS port $RP, no plaintext port)" wait_for 10 \
	redis-cli --no-auth-warning --tls --cacert "$T/ca.pem" --sni localhost -h 127.0.0.1 -p "$RP" \
	--user ward --pass "$PASS" PING

# ---- the tunnel configs, rendered by deploy.sh from a regions file (host mode)
region() { # region NAME REDIS_HOST REDIS_PORT CA TUNNEL_PORT
	printf '  - name: %s\n    aws_region: eu-west-2\n    redis_host: %s\n    redis_port: %s\n    redis_ca: %s\n    redis_tunnel_port: %s\n    pg_host: 127.0.0.1\n    backup_bucket: ward-%s-backups-123456789012\n    secret_prefix: ward/%s\n' "$@" "$1" "$1"
}
{
	echo "domain: $WARD_DOMAIN"
	echo "regions:"
	region good localhost "$RP" "$T/ca.pem" "$TP"
	region badca localhost "$RP" "$T/other-ca.pem" "$CAP"
	region badname 127.0.0.1 "$RP" "$T/ca.pem" "$HNP"
	region old localhost "$OLDP" "$T/ca.pem" "$OLDT"
	region uk localhost "$UKT" "$T/ca.pem" "$UKP"
	echo "  - name: local"
	echo "    aws_region: eu-west-2"
	echo "    redis_host: localhost"
	echo "    redis_port: $RP"
	echo "    redis_tls: yes"
	echo "    pg_host: 127.0.0.1"
	echo "    secret_prefix: ward/local"
} >"$T/regions.yaml"
export WARD_REGIONS_FILE=$T/regions.yaml
render() { "$TOP/deploy/deploy.sh" --region "$1" --host "tls-$1.example" --services auth --render "$2"; }
for r in good badca badname old uk; do
	render "$r" redis-tls >"$T/$r.conf" || not_ok "deploy.sh --render redis-tls for $r"
	# The test runs stunnel as itself: its log goes to a file instead of the journal.
	sed -i -e 's/^foreground = yes/foreground = quiet/' -e 's/^debug = notice/debug = info/' -e "/^debug = /a output = $T/$r.log" "$T/$r.conf"
done
check "the rendered tunnel verifies the chain and the host name, TLS 1.2+" bash -c \
	"grep -qx 'verifyChain = yes' $T/good.conf && grep -qx 'checkHost = localhost' $T/good.conf &&
	 grep -qx 'CAfile = $T/ca.pem' $T/good.conf && grep -qx 'sslVersionMin = TLSv1.2' $T/good.conf &&
	 grep -qx 'accept = 127.0.0.1:$TP' $T/good.conf && grep -qx 'connect = localhost:$RP' $T/good.conf"
export -f render
export T
check "the daemons' rendered config points at the tunnel's loopback port" bash -c \
	"render good auth | grep -A2 '^redis:' | tr -d ' ' | tr '\n' ' ' | grep -q 'host:127.0.0.1 port:$TP'"
check "deploy.sh --dry-run installs the tunnel and checks it before any daemon restarts" bash -c \
	"out=\$('$TOP/deploy/deploy.sh' --region good --host tls-good.example --dry-run 2>&1) &&
	 echo \"\$out\" | grep -q 'install -m 0644 .*ward-redis-tls.service' &&
	 echo \"\$out\" | grep -n 'ward-redis-tls healthy\|systemctl restart ward-' | head -1 | grep -q 'ward-redis-tls healthy'"
refuse "deploy.sh --local refuses redis_tls: yes (local mode talks to Redis directly)" \
	"$TOP/deploy/deploy.sh" --region local --local "$T/prefix" --secrets "$T" --check

tunnel() { # tunnel NAME PORT: run stunnel4 on the rendered NAME.conf, wait for its port
	stunnel4 "$T/$1.conf" &
	PIDS+=($!)
	wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$2"
}
via() { # via PORT args...: redis-cli in plaintext to a tunnel's loopback port
	local p=$1; shift
	redis-cli --no-auth-warning -h 127.0.0.1 -p "$p" "$@" 2>&1
}
tunnel good "$TP" || not_ok "the tunnel to the TLS redis listens on $TP"
check "through the tunnel: PING as the ACL user ward answers PONG" bash -c \
	"[ \"\$(redis-cli --no-auth-warning -h 127.0.0.1 -p $TP --user ward --pass $PASS PING)\" = PONG ]"
check "through the tunnel: a stream round trip (XADD, XREAD) as ward" bash -c \
	"redis-cli --no-auth-warning -h 127.0.0.1 -p $TP --user ward --pass $PASS XADD q:tls '*' f v >/dev/null &&
	 redis-cli --no-auth-warning -h 127.0.0.1 -p $TP --user ward --pass $PASS XREAD COUNT 1 STREAMS q:tls 0 | grep -qx v"
out=$(via "$TP" PING)
check "through the tunnel: without AUTH Redis answers NOAUTH (ACL stays end to end)" \
	bash -c "echo '$out' | grep -q NOAUTH"
out=$(via "$TP" --user ward --pass wrong PING)
check "through the tunnel: a wrong password is refused" bash -c "echo '$out' | grep -q WRONGPASS"
check "the tunnel negotiated TLS 1.2 or 1.3 and verified the peer" bash -c \
	"grep -qE 'TLSv1\.[23] ciphersuite' $T/good.log && grep -q 'Certificate accepted' $T/good.log || { grep -iE 'TLS|cert' $T/good.log; false; }"

# Plaintext to the TLS port: the server never answers a Redis reply.
out=$(timeout 5 redis-cli --no-auth-warning -h 127.0.0.1 -p "$RP" --user ward --pass "$PASS" PING 2>&1)
check "plaintext to the TLS port gets no PONG" bash -c "[ \"\$1\" != PONG ] && ! echo \"\$1\" | grep -q PONG" _ "$out"
out=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$RP; printf 'PING\r\n' >&3; timeout 2 cat <&3" 2>&1 | head -c 200)
check "a raw plaintext PING to the TLS port gets no +PONG" bash -c "! echo \"\$1\" | grep -q PONG" _ "$out"

# A tunnel that trusts another CA, or expects another name, forwards nothing.
tunnel badca "$CAP" || not_ok "the wrong-CA tunnel listens"
out=$(timeout 10 redis-cli --no-auth-warning -h 127.0.0.1 -p "$CAP" --user ward --pass "$PASS" PING 2>&1)
check "a tunnel with the wrong CA gets no PONG (connection closed)" bash -c "! echo \"\$1\" | grep -q PONG" _ "$out"
check "…stunnel refused the certificate (verification failed)" \
	grep -qiE 'certificate verify failed|Rejected by CERT|unable to get local issuer' "$T/badca.log"
tunnel badname "$HNP" || not_ok "the wrong-name tunnel listens"
out=$(timeout 10 redis-cli --no-auth-warning -h 127.0.0.1 -p "$HNP" --user ward --pass "$PASS" PING 2>&1)
check "a tunnel expecting another host name gets no PONG (connection closed)" bash -c "! echo \"\$1\" | grep -q PONG" _ "$out"
check "…stunnel refused the name (checkHost)" grep -qiE 'CERT: No matching host name|Rejected by CERT' "$T/badname.log"

# A server that speaks only TLS 1.1: the tunnel (TLS 1.2 minimum) does not connect.
openssl s_server -quiet -accept "$OLDP" -cert "$T/server.pem" -key "$T/server.key" -tls1_1 \
	-cipher 'DEFAULT:@SECLEVEL=0' -rev >"$T/old.out" 2>&1 &
PIDS+=($!)
if wait_for 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$OLDP"; then
	tunnel old "$OLDT" || not_ok "the tunnel to the TLS 1.1 server listens"
	out=$(echo hello | timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$OLDT; cat >&3; timeout 2 cat <&3" 2>&1)
	check "a TLS 1.1 server: the tunnel forwards nothing (its reply never comes)" bash -c "! echo \"\$1\" | grep -q olleh" _ "$out"
	check "…stunnel refused the protocol version" grep -qiE 'unsupported protocol|protocol version|no protocols available' "$T/old.log"
else
	not_ok "openssl s_server -tls1_1 did not start"
fi

# Ward's queue through the tunnel: the uk cell's Redis also listens with TLS on UKT
# (same data, same ACL users); wardctl (hiredis, plaintext) pings q:auth through the
# tunnel, ward-auth answers on its usual connection.
if rcli uk admin CONFIG SET tls-cert-file "$T/server.pem" tls-key-file "$T/server.key" \
	tls-ca-cert-file "$T/ca.pem" tls-auth-clients no tls-protocols "TLSv1.2 TLSv1.3" >/dev/null &&
	rcli uk admin CONFIG SET tls-port "$UKT" | grep -q OK; then
	tunnel uk "$UKP" || not_ok "the tunnel to the uk cell listens"
	sed "/^uk:/,/^[a-z]*:/ s/^  redis_port: .*/  redis_port: $UKP/" "$WARD_CONFIG" >"$T/wardctl.yaml"
	chmod 600 "$T/wardctl.yaml"
	[ "$(id -u)" -eq 0 ] && chown "$WUSER:" "$T/wardctl.yaml"
	check "wardctl's uk cell now points at the tunnel" grep -q "redis_port: $UKP" "$T/wardctl.yaml"
	check "wardctl ping --region uk --service auth through the TLS tunnel" \
		"$BIN/wardctl" --config "$T/wardctl.yaml" ping --region uk --service auth --timeout-ms 5000
	n=$(grep -c 'Certificate accepted' "$T/uk.log" 2>/dev/null || true)
	check "…the ping went through a verified TLS connection ($n)" [ "${n:-0}" -ge 1 ]
else
	not_ok "the uk cell's Redis takes a TLS port at runtime (CONFIG SET tls-port)"
fi
