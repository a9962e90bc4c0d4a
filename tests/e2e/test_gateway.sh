#!/usr/bin/env bash
# ward-gateway over real HTTPS: TLS policy, security headers on every answer, tenant
# and region routing (404, 421, 307) without calling the other region, request
# limits (400, 413, 414, 415, 422, 431), Origin/CSRF refusals, rate limits (429 +
# RateLimit-*), session cookies and the OAuth token endpoint's RFC 6749 errors; on a
# second eu gateway with short limits: session ticket key rotation, the slowloris
# deadline, connection caps and idle timeout, the cipher policy on an RSA certificate.
. "$(dirname "$0")/lib.sh"
set -f

r=eu
P=$(port_of eu HTTPS)
PUS=$(port_of us HTTPS)
D=$WARD_DOMAIN
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
SUF=$$

# req NAME HOST PATH [curl args]: one request; head in $T/NAME.h, body in $T/NAME.b, status printed.
req() {
	local n=$1 h=$2 p=$3 port=$P
	shift 3
	case $h in *.us.$D) port=$PUS ;; esac
	curl -sS --max-time 15 --cacert "$WARD_CA" --resolve "$h:$port:127.0.0.1" -D "$T/$n.h" -o "$T/$n.b" \
		-w '%{http_code}' "$@" "https://$h:$port$p" 2>/dev/null
}
status_is() { [ "$(req "$@")" = "$EXPECT" ]; }
expect() { # expect STATUS NAME HOST PATH [curl args]
	local want=$1
	shift
	local got
	got=$(req "$@")
	[ "$got" = "$want" ] || { echo "status $got, wanted $want"; cat "$T/$1.h" "$T/$1.b" 2>/dev/null | head -20; return 1; }
}
hdr() { grep -i "^$2:" "$T/$1.h" | head -1 | cut -d: -f2- | tr -d '\r' | sed 's/^ //'; }
has_hdr() { grep -qi "^$2:" "$T/$1.h"; }
body_has() { grep -q -- "$2" "$T/$1.b"; }
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$T/$1.b" "$2"; }
secure_headers() { # every answer carries them
	local n=$1 h
	for h in Strict-Transport-Security Content-Security-Policy X-Content-Type-Options Referrer-Policy X-Request-Id; do
		has_hdr "$n" "$h" || { echo "$n: missing $h"; cat "$T/$n.h"; return 1; }
	done
	grep -qi "^Content-Security-Policy:.*frame-ancestors 'none'" "$T/$n.h" &&
		grep -qi '^X-Content-Type-Options: nosniff' "$T/$n.h"
}
export -f req status_is expect hdr has_hdr body_has json_field secure_headers
export T P PUS D WARD_CA

# ---- tenants for this test: one here (eu), one homed in us, one for the rate-limit burst.
mk_tenant() { # mk_tenant SLUG REGION → prints the admin password
	"$BIN/wardctl" tenant create --slug "$1" --region "$2" --name "GW $1" --admin-email "admin@$1.example" 2>/dev/null |
		sed -n 's/.*"admin_password": *"\([^"]*\)".*/\1/p'
}
EU=gw-e2e-$SUF
US=gw-us-$SUF
BURST=gw-burst-$SUF
PW=$(mk_tenant "$EU" eu)
mk_tenant "$US" us >/dev/null
mk_tenant "$BURST" eu >/dev/null
check "setup: tenants created with wardctl (eu, us)" test -n "$PW"
H=$EU.eu.$D

# ---- TLS: 1.2 and 1.3 only, forward-secret AEAD suites only.
sclient() { echo | timeout 10 openssl s_client -connect "127.0.0.1:$P" -servername "$H" "$@" 2>&1; }
export -f sclient
export H
check "tls: TLS 1.3 handshake succeeds" bash -c 'sclient -tls1_3 | grep -q "Protocol *: *TLSv1.3\|TLSv1.3"'
check "tls: TLS 1.2 handshake succeeds with an ECDHE AEAD suite" bash -c 'sclient -tls1_2 | grep -q "ECDHE-ECDSA-\(AES256-GCM-SHA384\|CHACHA20-POLY1305\|AES128-GCM-SHA256\)"'
for v in tls1 tls1_1; do
	refuse "tls: $v is refused" bash -c "sclient -$v -cipher 'ALL:@SECLEVEL=0' | grep -q 'Cipher is [A-Z]'"
done
for c in ECDHE-ECDSA-AES128-SHA ECDHE-ECDSA-AES256-SHA384 ECDHE-ECDSA-AES128-SHA256 AES128-GCM-SHA256 AES256-SHA ECDHE-RSA-AES128-SHA DHE-RSA-AES128-GCM-SHA256; do
	refuse "tls: non-AEAD or non-forward-secret suite $c is refused" bash -c "sclient -tls1_2 -cipher '$c:@SECLEVEL=0' | grep -q 'New, TLSv1.2, Cipher is $c'"
done
check "tls: no compression" bash -c 'sclient -tls1_2 | grep -q "Compression: NONE"'

# ---- tenant and region routing.
check "host: unknown tenant → 404 problem" expect 404 unknown "nosuch-$SUF.eu.$D" /api/v1/users/me
check "host: 404 is application/problem+json" bash -c "hdr unknown Content-Type | grep -q application/problem+json"
check "host: the bare region host serves only /healthz (404 elsewhere)" expect 404 bare "eu.$D" /api/v1/users/me
check "host: /healthz on the region host" expect 200 health "eu.$D" /healthz
check "host: a host outside the domain → 404" expect 404 other "127.0.0.1" /api/v1/users/me
RID=e2e421$SUF
check "region: a us tenant asked in eu → 421" expect 421 misdirected "$US.eu.$D" /api/v1/users/me -H "X-Request-Id: $RID"
check "region: 421 names the right base URL in detail and base_url" bash -c \
	"body_has misdirected 'https://$US.us.$D:$PUS/api/v1/' && [ \"\$(json_field misdirected base_url)\" = 'https://$US.us.$D:$PUS/api/v1/' ]"
check "region: the us gateway never saw that request" bash -c "sleep 0.5; ! grep -q '$RID' '$WARD_VAR/us/log/gateway.log'"
check "region: the eu gateway logged it" grep -q "$RID" "$WARD_VAR/eu/log/gateway.log"
check "region: a browser route of a us tenant → 307 to the us host" bash -c \
	"expect 307 redirect '$US.eu.$D' '/sso/jwt?jwt=abc' && hdr redirect Location | grep -qx 'https://$US.us.$D:$PUS/sso/jwt?jwt=abc'"
check "region: the eu tenant asked at the us endpoint → 421 pointing to eu" bash -c \
	"expect 421 misdir2 '$EU.us.$D' /api/v1/users/me && body_has misdir2 'https://$EU.eu.$D:$P/api/v1/'"
check "tls: a Host that differs from the SNI → 421" bash -c \
	"[ \"\$(curl -sS -o /dev/null -w '%{http_code}' --cacert $WARD_CA --resolve $H:$P:127.0.0.1 -H 'Host: $BURST.eu.$D:$P' https://$H:$P/api/v1/users/me)\" = 421 ]"

# ---- routing and authentication.
check "route: unknown path → 404" expect 404 nopath "$H" /api/v1/no-such-thing
check "route: wrong method → 405 with Allow" bash -c "expect 405 wrongm '$H' /api/v1/tickets -X PUT && hdr wrongm Allow | grep -q GET"
check "auth: no credential → 401 with WWW-Authenticate: Bearer" bash -c "expect 401 noauth '$H' /api/v1/users/me && hdr noauth WWW-Authenticate | grep -q Bearer"
check "auth: a bad bearer token → 401" expect 401 badauth "$H" /api/v1/users/me -H 'Authorization: Bearer not-a-real-token-e2e'
check "auth: a malformed Authorization header → 401" expect 401 badauth2 "$H" /api/v1/users/me -H 'Authorization: Bearer a b'
check "auth: a forged session cookie → 401" expect 401 badcookie "$H" /api/v1/users/me -H 'Cookie: ward_session=forged-e2e'

# ---- browser protections (answered before any credential is checked).
J=(-H 'Content-Type: application/json')
check "origin: a foreign Origin is refused (403)" expect 403 origin "$H" /api/v1/tickets -X POST "${J[@]}" -d '{}' -H 'Origin: https://evil.example' -H 'Authorization: Bearer x'
check "origin: http:// of our own host is foreign too" expect 403 origin2 "$H" /api/v1/tickets -X POST "${J[@]}" -d '{}' -H "Origin: http://$H:$P" -H 'Authorization: Bearer x'
check "origin: Sec-Fetch-Site: cross-site is refused" expect 403 site "$H" /api/v1/tickets -X POST "${J[@]}" -d '{}' -H 'Sec-Fetch-Site: cross-site' -H 'Authorization: Bearer x'
check "csrf: a cookie without X-CSRF-Token on a POST is refused (403)" expect 403 nocsrf "$H" /api/v1/tickets -X POST "${J[@]}" -d '{}' -H 'Cookie: ward_session=whatever-e2e'
check "origin: our own Origin passes to authentication (401)" expect 401 sameorigin "$H" /api/v1/tickets -X POST "${J[@]}" -d '{}' -H "Origin: https://$H:$P" -H 'Authorization: Bearer x'

# ---- limits enforced by the gateway.
check "limits: a URL over limits.max_url_bytes → 414" expect 414 longurl "$H" "/api/v1/users/me?x=$(printf 'a%.0s' $(seq 5000))"
HS=()
for i in $(seq 70); do HS+=(-H "X-E2e-$i: v"); done
check "limits: more header fields than limits.max_headers → 431" expect 431 manyh "$H" /api/v1/users/me "${HS[@]}"
check "limits: a header block over limits.max_header_bytes → 431 problem" bash -c "expect 431 bigh '$H' /api/v1/users/me -H 'X-Big: $(head -c 20000 /dev/zero | tr '\0' a)' && secure_headers bigh && hdr bigh Content-Type | grep -q problem"
head -c 2000000 /dev/zero | tr '\0' a >"$T/big"
check "limits: a body over limits.max_body_bytes → 413" expect 413 bigbody "$H" /api/v1/tickets -X POST "${J[@]}" --data-binary "@$T/big"
check "limits: a raw malformed request line → 400" bash -c \
	"printf 'GET /x HTTP/1.1 extra junk\r\nHost: $H\r\n\r\n' | timeout 5 openssl s_client -quiet -connect 127.0.0.1:$P -servername $H 2>/dev/null | head -1 | grep -q ' 400 '"
check "limits: a request with no Host header → 400" bash -c \
	"printf 'GET /api/v1/users/me HTTP/1.1\r\n\r\n' | timeout 5 openssl s_client -quiet -connect 127.0.0.1:$P -servername $H 2>/dev/null | head -1 | grep -q ' 400 '"

# ---- what libevent would refuse itself (with its own page, no security headers)
# never reaches it: the gateway's guard answers with a problem and every header.
# raw NAME BYTES: sent over TLS (SNI $H) as is; answer head in $T/NAME.h, body $T/NAME.b.
raw() {
	python3 - "$P" "$H" "$1" "$T" "$2" <<'PY'
import socket, ssl, sys
port, host, name, tdir, data = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=host)
t.sendall(data.encode("latin-1").decode("unicode_escape").encode("latin-1"))
out = b""
try:
    while True:
        b = t.recv(65536)
        if not b: break
        out += b
except (socket.timeout, ssl.SSLError, ConnectionError):
    pass
head, _, body = out.partition(b"\r\n\r\n")
open(f"{tdir}/{name}.h", "wb").write(head + b"\r\n")
open(f"{tdir}/{name}.b", "wb").write(body)
open(f"{tdir}/{name}.all", "wb").write(out)
PY
}
raw_refused() { # raw_refused NAME STATUS BYTES: that status, problem+json, every header
	raw "$1" "$3"
	head -1 "$T/$1.h" | grep -q " $2 " || { echo "status: $(head -1 "$T/$1.h")"; return 1; }
	secure_headers "$1" && hdr "$1" Content-Type | grep -q 'application/problem+json' &&
		python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["status"]==int(sys.argv[2]) and d["detail"]' "$T/$1.b" "$2" &&
		hdr "$1" Connection | grep -qi close
}
export -f raw raw_refused
check "guard: a header line without a colon → 400 problem with every header" raw_refused g1 400 "GET /healthz HTTP/1.1\\r\\nHost: $H\\r\\nBad Header\\r\\n\\r\\n"
check "guard: a garbage request line → 400 problem" raw_refused g2 400 'garbage\r\n\r\n'
check "guard: an unknown method → 501 problem" raw_refused g3 501 "BREW /healthz HTTP/1.1\\r\\nHost: $H\\r\\n\\r\\n"
check "guard: HTTP/2.0 in the request line → 505 problem" raw_refused g4 505 "GET /healthz HTTP/2.0\\r\\nHost: $H\\r\\n\\r\\n"
check "guard: Transfer-Encoding: chunked → 411 problem" raw_refused g5 411 "POST /api/v1/tickets HTTP/1.1\\r\\nHost: $H\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n"
check "guard: Content-Length over the server cap → 413 problem (body never read)" raw_refused g6 413 "POST /api/v1/tickets HTTP/1.1\\r\\nHost: $H\\r\\nContent-Length: 99999999\\r\\n\\r\\n"
check "guard: two Content-Length headers → 400 problem" raw_refused g7 400 "POST /api/v1/tickets HTTP/1.1\\r\\nHost: $H\\r\\nContent-Length: 2\\r\\nContent-Length: 3\\r\\n\\r\\n{}"
check "guard: Expect other than 100-continue → 417 problem" raw_refused g8 417 "POST /api/v1/tickets HTTP/1.1\\r\\nHost: $H\\r\\nExpect: teapot\\r\\nContent-Length: 2\\r\\n\\r\\n{}"
check "guard: an obs-fold continuation line → 400 problem" raw_refused g9 400 "GET /healthz HTTP/1.1\\r\\nHost: $H\\r\\nX-A: 1\\r\\n  folded\\r\\n\\r\\n"
check "guard: a bare CR inside a field → 400 problem" raw_refused g10 400 "GET /healthz HTTP/1.1\\r\\nHost: $H\\r\\nX-A: a\\rb\\r\\n\\r\\n"
check "guard: a head without its end over max_header_bytes → 431 problem" raw_refused g11 431 "GET /healthz HTTP/1.1\\r\\nX-Big: $(head -c 20000 /dev/zero | tr '\0' a)"
check "guard: a client cannot send the guard's stand-in target → 400" raw_refused g12 400 "GET /.ward-refused/3 HTTP/1.1\\r\\nHost: $H\\r\\n\\r\\n"
check "guard: pipelined requests are all answered, in order" bash -c \
	"raw g13 'GET /healthz HTTP/1.1\\r\\nHost: $H\\r\\n\\r\\nGET /api/v1/nothing HTTP/1.1\\r\\nHost: $H\\r\\nConnection: close\\r\\n\\r\\n' && [ \"\$(grep -ao 'HTTP/1.1 [0-9]*' $T/g13.all | tr '\\n' ' ')\" = 'HTTP/1.1 200 HTTP/1.1 404 ' ]"
check "guard: a body sent with HEAD (which evhttp does not read) is dropped, not parsed as a request" bash -c \
	"raw g14 'HEAD /healthz HTTP/1.1\\r\\nHost: $H\\r\\nContent-Length: 11\\r\\n\\r\\nGARBAGE\\r\\n\\r\\nGET /healthz HTTP/1.1\\r\\nHost: $H\\r\\nConnection: close\\r\\n\\r\\n' && [ \"\$(grep -ao 'HTTP/1.1 [0-9]*' $T/g14.all | tr '\\n' ' ')\" = 'HTTP/1.1 200 HTTP/1.1 200 ' ]"
check "guard: a DELETE body is read as its body (evhttp reads it), the next request is served" bash -c \
	"raw g16 'DELETE /api/v1/nothing HTTP/1.1\\r\\nHost: $H\\r\\nContent-Length: 11\\r\\n\\r\\nGARBAGE\\r\\n\\r\\nGET /healthz HTTP/1.1\\r\\nHost: $H\\r\\nConnection: close\\r\\n\\r\\n' && [ \"\$(grep -ao 'HTTP/1.1 [0-9]*' $T/g16.all | tr '\\n' ' ')\" = 'HTTP/1.1 404 HTTP/1.1 200 ' ] && ! grep -aq '<HTML>' $T/g16.all"
check "guard: a request after a refused one on the same connection is not served" bash -c \
	"raw g15 'garbage\\r\\n\\r\\nGET /healthz HTTP/1.1\\r\\nHost: $H\\r\\n\\r\\n' && [ \"\$(grep -ao 'HTTP/1.1 [0-9]*' $T/g15.all | tr '\\n' ' ')\" = 'HTTP/1.1 400 ' ]"
check "guard: the gateway is still healthy" expect 200 health2 "$H" /healthz

# ---- security headers on every answer the gateway itself writes.
for n in unknown bare health other misdirected nopath wrongm noauth origin nocsrf longurl manyh redirect; do
	check "headers: HSTS, CSP, nosniff, Referrer-Policy, X-Request-Id on the '$n' answer" secure_headers "$n"
done
check "headers: RateLimit-Limit/Remaining/Reset on API answers" bash -c \
	"has_hdr noauth RateLimit-Limit && has_hdr noauth RateLimit-Remaining && has_hdr noauth RateLimit-Reset"
check "headers: a sane X-Request-Id is echoed" bash -c "expect 401 rid '$H' /api/v1/users/me -H 'X-Request-Id: e2e-rid-$SUF' && hdr rid X-Request-Id | grep -qx 'e2e-rid-$SUF'"
check "headers: an insane X-Request-Id is replaced" bash -c "expect 401 rid2 '$H' /api/v1/users/me -H 'X-Request-Id: a<b>\"c' && ! hdr rid2 X-Request-Id | grep -q '<'"

# ---- logs: no secrets, no bodies.
req leak "$H" /api/v1/tickets -X POST "${J[@]}" -d '{"subject":"BODY-SECRET-'$SUF'"}' -H "Authorization: Bearer TOKEN-SECRET-$SUF" -H "Cookie: ward_session=COOKIE-SECRET-$SUF" >/dev/null
check "log: the access log holds no bearer token, cookie or body" bash -c \
	"sleep 0.3; ! grep -q 'SECRET-$SUF' $WARD_VAR/eu/log/gateway.log"

# ---- a real session (needs ward-auth's auth.login).
ADMIN="admin@$EU.example"
if expect 200 login "$H" /api/v1/auth/login -X POST "${J[@]}" -H "Origin: https://$H:$P" \
	-d "{\"email\":\"$ADMIN\",\"password\":\"$PW\"}" >/dev/null 2>&1; then
	ok "session: login with the one-time admin password → 200"
	COOKIE=$(hdr login Set-Cookie)
	SESS=$(echo "$COOKIE" | sed -n 's/^ward_session=\([^;]*\);.*/\1/p')
	CSRF=$(json_field login csrf_token)
	check "session: Set-Cookie is HttpOnly; Secure; SameSite=Strict; Path=/" bash -c \
		"echo '$COOKIE' | grep -q 'HttpOnly' && echo '$COOKIE' | grep -q 'Secure' && echo '$COOKIE' | grep -q 'SameSite=Strict' && echo '$COOKIE' | grep -q 'Path=/'"
	check "session: the session token is not in the JSON body" bash -c "! body_has login session_token && [ -n '$SESS' ] && ! body_has login '$SESS'"
	check "session: the JSON body has csrf_token and user" bash -c "[ -n '$CSRF' ] && body_has login '\"user\"'"
	C=(-H "Cookie: ward_session=$SESS")
	check "session: GET /api/v1/users/me with the cookie → 200" expect 200 me "$H" /api/v1/users/me "${C[@]}"
	check "pending: the one-time password's session is refused other routes (403 saying what to do)" bash -c \
		"expect 403 pend '$H' /api/v1/tickets -H 'Cookie: ward_session=$SESS' && body_has pend /api/v1/auth/password && hdr pend Content-Type | grep -q problem"
	check "pending: the password change is allowed → 200" expect 200 chpw "$H" /api/v1/auth/password -X POST "${J[@]}" "${C[@]}" \
		-H "X-CSRF-Token: $CSRF" -d "{\"current_password\":\"$PW\",\"new_password\":\"$PW-Chg-7q\"}"
	# The change replaces the session (no fixation): a new cookie and CSRF token.
	OLDC=("${C[@]}")
	SESS=$(hdr chpw Set-Cookie | sed -n 's/^ward_session=\([^;]*\);.*/\1/p')
	OLDCSRF=$CSRF
	CSRF=$(json_field chpw csrf_token)
	check "pending: the change sets a new session cookie and CSRF token (not the token in JSON)" bash -c \
		"[ -n '$SESS' ] && [ '${OLDC[1]}' != 'Cookie: ward_session=$SESS' ] && [ -n '$CSRF' ] && [ '$CSRF' != '$OLDCSRF' ] && ! body_has chpw session_token"
	C=(-H "Cookie: ward_session=$SESS")
	check "pending: after the change the old session id → 401" expect 401 oldsess "$H" /api/v1/tickets "${OLDC[@]}"
	check "pending: after the change the new session reaches other routes → 200" expect 200 unpend "$H" /api/v1/tickets "${C[@]}"
	check "csrf: POST with the cookie and no X-CSRF-Token → 403" expect 403 csrf1 "$H" /api/v1/tickets -X POST "${J[@]}" "${C[@]}" -d '{"subject":"s","body":"b"}'
	check "csrf: POST with a wrong X-CSRF-Token → 403" expect 403 csrf2 "$H" /api/v1/tickets -X POST "${J[@]}" "${C[@]}" -H 'X-CSRF-Token: wrong' -d '{"subject":"s","body":"b"}'
	X=(-H "X-CSRF-Token: $CSRF")
	check "request: text/plain body → 415" expect 415 ctype "$H" /api/v1/tickets -X POST "${C[@]}" "${X[@]}" -H 'Content-Type: text/plain' -d '{}'
	check "request: malformed JSON → 400 problem" expect 400 badjson "$H" /api/v1/tickets -X POST "${J[@]}" "${C[@]}" "${X[@]}" -d '{"subject":'
	check "request: a JSON array body → 400" expect 400 arrjson "$H" /api/v1/tickets -X POST "${J[@]}" "${C[@]}" "${X[@]}" -d '[1]'
	check "request: duplicate JSON keys → 400" expect 400 dupjson "$H" /api/v1/tickets -X POST "${J[@]}" "${C[@]}" "${X[@]}" -d '{"subject":"a","subject":"b"}'
	check "request: unknown and mistyped fields → 422 naming each" bash -c \
		"expect 422 v422 '$H' /api/v1/tickets -X POST -H 'Content-Type: application/json' -H 'Cookie: ward_session=$SESS' -H 'X-CSRF-Token: $CSRF' -d '{\"subject\":5,\"is_admin\":true}' && body_has v422 '\"field\":\"subject\"' && body_has v422 '\"field\":\"is_admin\"'"
	check "request: a body over the route's max_body (ticket 300 KiB) → 413 problem" bash -c \
		"head -c 400000 /dev/zero | tr '\\0' a > $T/mid && expect 413 midbody '$H' /api/v1/tickets -X POST -H 'Content-Type: application/json' -H 'Cookie: ward_session=$SESS' -H 'X-CSRF-Token: $CSRF' --data-binary @$T/mid && hdr midbody Content-Type | grep -q problem"
	check "session: logout clears the cookie" bash -c \
		"expect 204 logout '$H' /api/v1/auth/logout -X POST -H 'Cookie: ward_session=$SESS' -H 'X-CSRF-Token: $CSRF' && hdr logout Set-Cookie | grep -q 'ward_session=;.*Max-Age=0'"
	check "session: the cookie is refused after logout (within the 5 s cache)" bash -c \
		"sleep 5.5; expect 401 after '$H' /api/v1/users/me -H 'Cookie: ward_session=$SESS'"
	check "tenant isolation: tenant A's cookie on tenant B's host → 401" expect 401 cross "$BURST.eu.$D" /api/v1/users/me "${C[@]}"
else
	not_ok "session: login (POST /api/v1/auth/login) — needs ward-auth's auth.login and its route"
	sed 's/^/#   /' "$T/login.h" "$T/login.b" 2>/dev/null | head -5
fi

# ---- OAuth token endpoint: form body, Basic client authentication, RFC 6749 errors.
F=(-H 'Content-Type: application/x-www-form-urlencoded')
check "oauth: a JSON body → 415" expect 415 tokjson "$H" /oauth/token -X POST "${J[@]}" -d '{}'
check "oauth: a malformed form → 400 {\"error\":\"invalid_request\"}" bash -c \
	"expect 400 tokbad '$H' /oauth/token -X POST -H 'Content-Type: application/x-www-form-urlencoded' -d 'grant_type=%zz' && [ \"\$(json_field tokbad error)\" = invalid_request ]"
check "oauth: unknown Basic client → 401 invalid_client with WWW-Authenticate: Basic" bash -c \
	"expect 401 tokcli '$H' /oauth/token -X POST -H 'Content-Type: application/x-www-form-urlencoded' -u 'nobody:wrong' -d 'grant_type=client_credentials' && [ \"\$(json_field tokcli error)\" = invalid_client ] && hdr tokcli WWW-Authenticate | grep -q Basic"

# ---- rate limits (on a tenant of their own, so other tests keep their budget).
BH=$BURST.eu.$D
for i in $(seq 12); do
	req "login$i" "$BH" /api/v1/auth/login -X POST "${J[@]}" -d '{"email":"x@y.example","password":"wrong"}' >"$T/login$i.s"
done
check "ratelimit: a burst of logins is cut at ratelimit.login_per_source → 429" grep -q 429 "$T/login12.s"
check "ratelimit: the 429 has Retry-After and RateLimit-* headers" bash -c \
	"has_hdr login12 Retry-After && [ \"\$(hdr login12 RateLimit-Remaining)\" = 0 ] && has_hdr login12 RateLimit-Limit && has_hdr login12 RateLimit-Reset"
check "ratelimit: the 429 is a problem document with the security headers" bash -c \
	"hdr login12 Content-Type | grep -q problem+json && secure_headers login12"
: >"$T/urls"
for i in $(seq 650); do printf 'url = "https://%s:%s/api/v1/users/me"\noutput = "/dev/null"\n' "$BH" "$P" >>"$T/urls"; done
curl -sS --max-time 60 --cacert "$WARD_CA" --resolve "$BH:$P:127.0.0.1" -K "$T/urls" -w '%{http_code}\n' >"$T/burst" 2>/dev/null
check "ratelimit: a burst over ratelimit.per_source_tenant ends in 429s" bash -c "grep -c 429 $T/burst | grep -qv '^0$' && head -1 $T/burst | grep -q 401"
check "ratelimit: another tenant from the same source is still served" expect 401 stillok "$H" /api/v1/users/me

# ---- the gateway survived everything above.
check "gateway: still healthy" bash -c "https eu /healthz | grep -q '\"status\":\"ok\"'"

# ==== the plain-HTTP redirector behind the same request guard (issue 3): what libevent
# would refuse with its own page gets a problem document with the security headers
# (no HSTS over plain HTTP, RFC 6797 7.2) and Connection: close; a sane request still
# gets its 308 to HTTPS.
PH=$(port_of eu HTTP)
export PH
# plain NAME BYTES: sent over plain TCP to the redirector; $T/NAME.{h,b,all} as raw() does.
plain() {
	python3 - "$PH" "$1" "$T" "$2" <<'PY'
import os, socket, sys, time
port, name, tdir, data = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
raw = data.encode("latin-1").decode("unicode_escape").encode("latin-1")
if os.environ.get("DRIP"):  # one byte per segment: the guard must wait for the whole head
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(raw)):
        s.send(raw[i:i + 1]); time.sleep(0.005)
else:
    s.sendall(raw)
out = b""
try:
    while True:
        b = s.recv(65536)
        if not b: break
        out += b
except (socket.timeout, ConnectionError):
    pass
head, _, body = out.partition(b"\r\n\r\n")
open(f"{tdir}/{name}.h", "wb").write(head + b"\r\n")
open(f"{tdir}/{name}.b", "wb").write(body)
open(f"{tdir}/{name}.all", "wb").write(out)
PY
}
plain_headers() { # the redirector's headers: every SPEC §4 one but HSTS
	local n=$1 h
	for h in Content-Security-Policy X-Content-Type-Options Referrer-Policy X-Frame-Options Cache-Control X-Request-Id; do
		has_hdr "$n" "$h" || { echo "$n: missing $h"; cat "$T/$n.h"; return 1; }
	done
	hdr "$n" Content-Security-Policy | grep -q "default-src 'none'" &&
		! has_hdr "$n" Strict-Transport-Security
}
plain_refused() { # plain_refused NAME STATUS BYTES: that status, problem+json, headers, no libevent page
	plain "$1" "$3"
	head -1 "$T/$1.h" | grep -q "^HTTP/1.[01] $2 " || { echo "status: $(head -1 "$T/$1.h")"; return 1; }
	plain_headers "$1" && hdr "$1" Content-Type | grep -q 'application/problem+json' &&
		python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["status"]==int(sys.argv[2]) and d["detail"]' "$T/$1.b" "$2" &&
		hdr "$1" Connection | grep -qi close && ! grep -aqi '<html\|<title' "$T/$1.all"
}
export -f plain plain_headers plain_refused
check "http redirector: a sane request still gets 308 to https with the headers" bash -c \
	"plain p0 'GET /api/v1/x?y=1 HTTP/1.1\\r\\nHost: $H\\r\\nConnection: close\\r\\n\\r\\n' && head -1 $T/p0.h | grep -q ' 308 ' && [ \"\$(hdr p0 Location)\" = 'https://$H:$P/api/v1/x?y=1' ] && plain_headers p0"
check "http redirector: a garbage request line → 400 problem, headers, no libevent page" \
	plain_refused p1 400 'garbage\r\n\r\n'
check "http redirector: a header block over max_header_bytes → 431 problem" \
	plain_refused p2 431 "GET / HTTP/1.1\\r\\nHost: $H\\r\\nX-Big: $(head -c 20000 /dev/zero | tr '\0' a)\\r\\n\\r\\n"
check "http redirector: an unknown method → 501 problem" \
	plain_refused p3 501 "BREW / HTTP/1.1\\r\\nHost: $H\\r\\n\\r\\n"
check "http redirector: a bad Content-Length → 400 problem" \
	plain_refused p4 400 "POST / HTTP/1.1\\r\\nHost: $H\\r\\nContent-Length: 12x\\r\\n\\r\\n"
check "http redirector: Transfer-Encoding → 411 problem" \
	plain_refused p5 411 "POST / HTTP/1.1\\r\\nHost: $H\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n"
check "http redirector: a body (it takes none) → 413 problem" \
	plain_refused p6 413 "POST / HTTP/1.1\\r\\nHost: $H\\r\\nContent-Length: 5\\r\\n\\r\\nhello"
check "http redirector: HTTP/2.0 → 505 problem" \
	plain_refused p7 505 "GET / HTTP/2.0\\r\\nHost: $H\\r\\n\\r\\n"
check "http redirector: a request after a refused one on the same connection is not served" bash -c \
	"plain p8 'garbage\\r\\n\\r\\nGET / HTTP/1.1\\r\\nHost: $H\\r\\n\\r\\n' && [ \"\$(grep -ao 'HTTP/1.1 [0-9]*' $T/p8.all | tr '\\n' ' ')\" = 'HTTP/1.1 400 ' ]"
check "http redirector: a sane request arriving a byte at a time is redirected once, whole" bash -c \
	"DRIP=1 plain p9 'GET /drip?q=1 HTTP/1.1\\r\\nHost: $H\\r\\nConnection: close\\r\\n\\r\\n' && [ \"\$(grep -ao 'HTTP/1.1 [0-9]*' $T/p9.all | tr '\\n' ' ')\" = 'HTTP/1.1 308 ' ] && [ \"\$(hdr p9 Location)\" = 'https://$H:$P/drip?q=1' ]"
check "http redirector: a garbage line arriving a byte at a time → 400 problem" bash -c \
	"DRIP=1 plain_refused p11 400 'garbage\\r\\n\\r\\n'"
check "http redirector: a connection that sends nothing and closes is harmless" \
	python3 -c "import socket; socket.create_connection(('127.0.0.1', $PH), timeout=5).close()"
check "http redirector: a connection that sends half a head and closes is harmless" \
	python3 -c "import socket; s = socket.create_connection(('127.0.0.1', $PH), timeout=5); s.sendall(b'GET / HTTP/1.1\\r\\nHost: x'); s.close()"
check "http redirector: still answering after all of the above" bash -c \
	"plain p10 'GET / HTTP/1.0\\r\\n\\r\\n' && head -1 $T/p10.h | grep -q ' 308 '"

# ==== issue 3: a second eu gateway (gateway-2) with short periods, so the time limits
# show within the test: session ticket keys rotated every 3 s, a 4 s deadline for the
# TLS handshake and each request head, keep-alive connections idle 3 s at most, and 4
# connections per source. It has an RSA certificate from the dev CA (the cells' are
# ECDSA), so that RSA key exchange and ECDHE-RSA CBC suites could be negotiated if the
# cipher policy let them.
G2=$WARD_VAR/eu/g2
mkdir -p "$G2" && chmod 755 "$G2"
openssl req -newkey rsa:2048 -nodes -subj "/CN=eu.$D" -keyout "$G2/rsa.key" -out "$G2/rsa.csr" 2>/dev/null &&
	openssl x509 -req -in "$G2/rsa.csr" -CA "$WARD_VAR/tls/ca.pem" -CAkey "$WARD_VAR/tls/ca.key" \
		-set_serial "$((RANDOM * 32768 + RANDOM))" -days 2 -out "$G2/rsa.pem" \
		-extfile <(printf 'subjectAltName=DNS:*.eu.%s,DNS:eu.%s\nextendedKeyUsage=serverAuth\n' "$D" "$D") 2>/dev/null
chmod 600 "$G2/rsa.key"
[ "$(id -u)" -eq 0 ] && chown "$WUSER" "$G2/rsa.key"
G2P=$(free_port)
G2HP=$(free_port)
G2LOG=$WARD_VAR/eu/log/gateway-2.log G2ERR=$WARD_VAR/eu/log/gateway-2.stderr
python3 - "$WARD_VAR/eu/etc/gateway.yaml" "$G2/gateway.yaml" "$G2LOG" "$G2P" "$G2" "$G2HP" <<'PY'
import sys
src, dst, log, https, g2, http = sys.argv[1:7]
out, section = [], None
for line in open(src):
    if not line.startswith(" ") and line.rstrip().endswith(":"):
        section = line.strip()[:-1]
    if line.startswith("instance:"): line = "instance: gateway-2\n"
    elif line.startswith("log_file:"): line = f"log_file: {log}\n"
    elif line.startswith("  listen:") and section == "https":
        line = f"  listen: 127.0.0.1:{https}\n  ticket_rotate_seconds: 3\n"
    elif line.startswith("  listen:") and section == "http":
        line = f"  listen: 127.0.0.1:{http}\n"
    elif line.startswith("  cert_file:") and section == "https": line = f"  cert_file: {g2}/rsa.pem\n"
    elif line.startswith("  key_file:") and section == "https": line = f"  key_file: {g2}/rsa.key\n"
    out.append(line)
out.append("limits:\n  header_timeout_seconds: 4\n  body_timeout_seconds: 6\n  timeout_seconds: 3\n  max_connections_per_source: 4\n")
open(dst, "w").write("".join(out))
PY
chmod 644 "$G2/gateway.yaml"
spawn_as_user "$G2/gateway.pid" "$G2ERR" "$BIN/ward-gateway" --config "$G2/gateway.yaml"
g2_stop() { local p; p=$(cat "$G2/gateway.pid" 2>/dev/null) || return 0; kill -TERM "$p" 2>/dev/null
	for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done; return 1; }
trap 'g2_stop; rm -rf "$T"' EXIT
export G2P G2HP G2LOG
check "gateway-2: a second eu gateway with short limits starts" \
	wait_for 15 bash -c "curl -sS --max-time 3 --cacert '$WARD_CA' --resolve 'eu.$D:$G2P:127.0.0.1' https://eu.$D:$G2P/healthz | grep -q '\"status\":\"ok\"'"

# ---- session tickets with rotating keys (https.ticket_rotate_seconds: 3 on gateway-2).
# sess PORT VERSION FILE [in|out]: one handshake saving (out) or offering (in) the session;
# prints s_client's output. The client waits a little for TLS 1.3's NewSessionTicket.
sess() {
	(sleep 0.4) | timeout 10 openssl s_client -connect "127.0.0.1:$1" -servername "$H" -CAfile "$WARD_CA" \
		"-$2" "-sess_$4" "$3" "${@:5}" 2>&1
}
resumed() { sess "$1" "$2" "$3" in | grep -q '^Reused, '; }
rotations() { grep -c '"msg":"tls: session ticket keys rotated"' "$G2LOG" 2>/dev/null || true; }
# wait_rotation N: until the rotation count exceeds N.
wait_rotation() { wait_for 10 bash -c "[ \"\$(grep -c '\"msg\":\"tls: session ticket keys rotated\"' '$G2LOG')\" -gt $1 ]"; }
export -f sess resumed
for v in tls1_2 tls1_3; do
	sess "$G2P" "$v" "$T/s0.$v" out >/dev/null
	check "tickets ($v): a saved session resumes (Reused)" resumed "$G2P" "$v" "$T/s0.$v"
	check "tickets ($v): …on the gateway that issued it only: another gateway's keys refuse it (full handshake)" \
		bash -c "sess $P $v $T/s0.$v in | grep -q '^New, '"
done
for v in tls1_2 tls1_3; do
	n=$(rotations)
	sess "$G2P" "$v" "$T/s1.$v" out >/dev/null
	check "tickets ($v): the session was saved with a ticket" grep -q 'SSL SESSION PARAMETERS' "$T/s1.$v"
	wait_rotation "$n"
	# (-msg: TLS 1.2 sends a NewSessionTicket on resumption only when the ticket is renewed)
	check "tickets ($v): a session from before one key rotation still resumes (previous key)" \
		bash -c "sess $G2P $v $T/s1.$v in -msg -sess_out $T/s1r.$v | tee $T/m1.$v | grep -q '^Reused, '"
	wait_rotation $((n + 1))
	check "tickets ($v): a session from before two key rotations does not resume (full handshake)" \
		bash -c "sess $G2P $v $T/s1.$v in | grep -q '^New, '"
	if [ "$v" = tls1_2 ]; then
		check "tickets (tls1_2): resumed under the previous key, the ticket was renewed (NewSessionTicket)" \
			grep -q 'NewSessionTicket' "$T/m1.$v"
		m=$(rotations)
		wait_rotation "$m"
		sess "$G2P" "$v" "$T/s2.$v" out >/dev/null
		check "tickets (tls1_2): resumed under the current key, it is not (no NewSessionTicket)" \
			bash -c "sess $G2P $v $T/s2.$v in -msg | tee $T/m2 | grep -q '^Reused, ' && ! grep -q NewSessionTicket $T/m2"
	else
		check "tickets ($v): …but the fresh ticket given when it resumed under the previous key does" \
			resumed "$G2P" "$v" "$T/s1r.$v"
	fi
done
check "tickets: a TLS 1.2 client without tickets gets no session ID to resume by (no server-side session cache)" \
	bash -c "sess $G2P tls1_2 $T/sid out -no_ticket | grep -q '^ *Session-ID: *\$' && { [ ! -s $T/sid ] || sess $G2P tls1_2 $T/sid in -no_ticket | grep -q '^New, '; }"
check "tickets: each rotation is logged" bash -c "[ \"\$(grep -c 'session ticket keys rotated' '$G2LOG')\" -ge 4 ]"

# ---- slow clients (slowloris): gateway-2 gives the TLS handshake and each request head
# 4 s (limits.header_timeout_seconds) while evhttp's idle timeout (3 s) restarts at every
# byte. slow MODE: a python client against gateway-2; prints what it measured.
slow() {
	python3 - "$G2P" "$H" "$1" "$G2HP" <<'PY'
import select, socket, ssl, sys, time
port, host, mode, http_port = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def tls():
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=host)
got = b""
def closed(s, wait):
    # True once the peer has closed (EOF, reset, TLS error) within wait seconds; TLS
    # records without data (TLS 1.3 session tickets) are read and waited past, data
    # is kept in got.
    global got
    end = time.monotonic() + wait
    while (left := end - time.monotonic()) > 0:
        if not select.select([s], [], [], left)[0]: return False
        s.setblocking(False)
        try:
            b = s.recv(65536)
            if b == b"": return True
            got += b
        except ssl.SSLWantReadError: pass
        except (ssl.SSLError, OSError): return True
        finally: s.settimeout(10)
    return False
def answer(s):
    out = b""
    while b"\r\n\r\n" not in out:
        b = s.recv(65536)
        if not b: break
        out += b
    return out.split(b"\r\n")[0].decode()
if mode == "drip":   # a head a byte per second; a normal request meanwhile
    t0 = time.monotonic(); s = tls(); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode())
    other = None
    for i in range(20):
        try: s.send(b"a")
        except (ssl.SSLError, ConnectionError, OSError): break
        if i == 1:
            o = tls(); o.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()); other = answer(o)
        if closed(s, 1.0): break
    head, _, body = got.partition(b"\r\n\r\n")
    print(f"closed after {time.monotonic() - t0:.1f} s; other connection: {other}; answer: {head.decode('latin-1')!r} {body.decode('latin-1')!r}")
elif mode == "plaindrip":   # the same against the plain-HTTP redirector
    t0 = time.monotonic(); s = socket.create_connection(("127.0.0.1", http_port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(f"GET /x HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode())
    for i in range(20):
        try: s.send(b"a")
        except OSError: break
        if closed(s, 1.0): break
    head, _, body = got.partition(b"\r\n\r\n")
    print(f"closed after {time.monotonic() - t0:.1f} s; answer: {head.decode('latin-1')!r} {body.decode('latin-1')!r}")
elif mode == "late":  # request 1 answered, then the next head a byte per second
    s = tls(); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()); a1 = answer(s)
    t0 = time.monotonic()
    s.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
    for i in range(20):
        try: s.send(b"a")
        except (ssl.SSLError, ConnectionError, OSError): break
        if closed(s, 1.0): break
    print(f"{a1} | closed after {time.monotonic() - t0:.1f} s from the second head's first byte; after the first answer: {got!r}")
elif mode == "hello":  # a TLS ClientHello dripped a byte per second (never completes)
    t0 = time.monotonic(); s = socket.create_connection(("127.0.0.1", port), timeout=10)
    hello = bytes.fromhex("16030100c8010000c40303") + bytes(200)
    for i in range(20):
        try: s.send(hello[i:i + 1])
        except OSError: break
        if closed(s, 1.0): break
    print(f"closed after {time.monotonic() - t0:.1f} s")
elif mode == "keepalive":  # request 1, 2 s idle, request 2 dripped over 3 s: both served
    t0 = time.monotonic(); s = tls(); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()); a1 = answer(s)
    time.sleep(2)
    head = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    step = 3.0 / len(head)
    for i in range(len(head)):
        s.send(head[i:i + 1]); time.sleep(step)
    a2 = answer(s)
    print(f"{a1} | {a2} | connection age {time.monotonic() - t0:.1f} s")
elif mode == "body":  # a complete head, then its 100-byte body a byte per second
    s = tls(); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(f"POST /api/v1/auth/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n".encode())
    t0 = time.monotonic()
    for i in range(20):
        try: s.send(b" ")
        except (ssl.SSLError, ConnectionError, OSError): break
        if closed(s, 1.0): break
    print(f"closed after {time.monotonic() - t0:.1f} s from the head's end; answer: {got!r}")
elif mode == "bodyok":  # the same body sent over 3 s: in time, answered
    s = tls(); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = b'{"email": "slow@example.com", "password": "x"}'.ljust(100)
    s.sendall(f"POST /api/v1/auth/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n".encode())
    for i in range(0, 100, 10):
        s.send(body[i:i + 10]); time.sleep(0.3)
    print(answer(s))
elif mode == "idle":  # a keep-alive connection left idle after its answer
    s = tls(); s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()); a = answer(s)
    t0 = time.monotonic()
    c = closed(s, 10)
    print(f"{a} | closed={c} after {time.monotonic() - t0:.1f} s idle")
PY
}
export -f slow
within() { # within OUT LO HI: the "after N s" figure of OUT in [LO, HI]
	echo "$1"; python3 -c 'import re,sys; v=float(re.search(r"after ([0-9.]+) s", sys.argv[1]).group(1)); sys.exit(not float(sys.argv[2]) <= v <= float(sys.argv[3]))' "$1" "$2" "$3"
}
export -f within
out=$(slow drip)
echo "# slowloris drip: $out"
echo "$out" >"$T/drip.out"
check "slowloris: a head dripped a byte a second is cut at the 4 s deadline (evhttp's idle timeout never fires)" within "$out" 3.5 6.5
check "slowloris: …while a normal request on another connection is served" grep -q 'other connection: HTTP/1.1 200' "$T/drip.out"
check "slowloris: …and the slow first head is answered 408, a problem document, Connection: close" \
	bash -c "grep -q 'answer: .HTTP/1.1 408 Request Timeout' $T/drip.out && grep -qi 'Content-Type: application/problem+json' $T/drip.out && grep -qi 'Connection: close' $T/drip.out && grep -q '\"status\":408' $T/drip.out"
out=$(slow plaindrip)
echo "# slowloris drip on the redirector: $out"
echo "$out" >"$T/pdrip.out"
check "slowloris: a head dripped to the plain-HTTP redirector is cut at the 4 s deadline from its first byte (closed, no answer: no redirect for it)" \
	bash -c "within \"\$(cat $T/pdrip.out)\" 3.5 6.5 && grep -q \"answer: '' ''\" $T/pdrip.out"
out=$(slow late)
echo "# slowloris keep-alive drip: $out"
check "slowloris: a later head on a keep-alive connection, dripped, is cut at the deadline from its first byte (closed, no answer)" \
	bash -c 'echo "$1" | grep -q "^HTTP/1.1 200 OK | .*first answer: b..\$" && within "$1" 3.5 6.5' _ "$out"
out=$(slow hello)
echo "# slowloris handshake drip: $out"
check "slowloris: a TLS handshake dripped a byte a second is cut at the deadline too" within "$out" 3.5 6.5
check "slowloris: the deadline is per head: a keep-alive connection older than it, with a slow (3 s) second head, is served twice" \
	bash -c "slow keepalive | tee /dev/stderr | grep -q '^HTTP/1.1 200 OK | HTTP/1.1 200 OK |'"
out=$(slow body)
echo "# slowloris body drip: $out"
check "slowloris: a body dripped a byte a second is cut at its own 6 s deadline from the head's end (closed, no answer; not the 4 s head deadline, not the 3 s idle timeout)" \
	bash -c 'echo "$1" | grep -q "answer: b..\$" && within "$1" 5.5 8.5' _ "$out"
check "slowloris: a body sent in time (100 bytes over 3 s) is answered" bash -c "slow bodyok | tee /dev/stderr | grep -q '^HTTP/1.1 [0-9]'"
check "slowloris: the body deadline is logged (rate-limited)" grep -q '"msg":"connection closed: no complete request body in time"' "$G2LOG"
check "slowloris: the deadline is logged (rate-limited)" grep -q '"msg":"connection closed: no complete request head in time"' "$G2LOG"
check "gateway-2: still healthy after the slow clients" \
	bash -c "curl -sS --max-time 3 --cacert '$WARD_CA' --resolve 'eu.$D:$G2P:127.0.0.1' https://eu.$D:$G2P/healthz | grep -q '\"status\":\"ok\"'"

# ---- the cipher policy against an RSA certificate (gateway-2): only ECDHE with AEAD.
s2() { echo | timeout 10 openssl s_client -connect "127.0.0.1:$G2P" -servername "$H" "$@" 2>&1; }
export -f s2
check "tls (RSA certificate): ECDHE-RSA-AES256-GCM-SHA384 is negotiated (the check below can succeed)" \
	bash -c "s2 -tls1_2 -cipher ECDHE-RSA-AES256-GCM-SHA384 | grep -q 'New, TLSv1.2, Cipher is ECDHE-RSA-AES256-GCM-SHA384'"
for c in ECDHE-RSA-AES128-SHA ECDHE-RSA-AES256-SHA ECDHE-RSA-AES128-SHA256 ECDHE-RSA-AES256-SHA384 AES128-GCM-SHA256 AES256-GCM-SHA384 AES128-SHA AES256-SHA256 DHE-RSA-AES128-GCM-SHA256 DHE-RSA-CHACHA20-POLY1305; do
	refuse "tls (RSA certificate): $c is refused" bash -c "s2 -tls1_2 -cipher '$c:@SECLEVEL=0' | grep -q 'Cipher is $c'"
done
refuse "tls (RSA certificate): no suite with RSA key exchange at all (kRSA)" bash -c "s2 -tls1_2 -cipher 'kRSA:@SECLEVEL=0' | grep -q 'New, TLSv1.2, Cipher is [A-Z]'"
refuse "tls (RSA certificate): no suite with DHE key exchange at all (kDHE)" bash -c "s2 -tls1_2 -cipher 'kDHE:@SECLEVEL=0' | grep -q 'New, TLSv1.2, Cipher is [A-Z]'"
check "tls: the configured TLS 1.2 list (gateway_tls.c) expands to ECDHE key exchange with AEAD ciphers only" bash -c '
	l=$(sed -n "/^#define GATEWAY_TLS12_CIPHERS/,/^#define/p" "$TOP/services/gateway/gateway_tls.c" | grep -o "\"[^\"]*\"" | tr -d "\"" | tr -d "\n")
	v=$(openssl ciphers -v "$l") && [ -n "$v" ] && echo "$v" &&
		! echo "$v" | grep -v "Kx=ECDH .*Enc=\(AESGCM\|CHACHA20\)" | grep -q "TLSv1.2"'

# ---- renegotiation: refused (SSL_OP_NO_RENEGOTIATION). s_client's "R" asks for one.
check "tls: a client-initiated renegotiation (s_client R) is refused: no renegotiation" \
	bash -c "(echo R; sleep 1.5) | timeout 10 openssl s_client -tls1_2 -connect 127.0.0.1:$G2P -servername $H 2>&1 | tee /dev/stderr | grep -A3 '^RENEGOTIATING' | grep -q 'no renegotiation'"

# ---- limits.max_connections_per_source (4 on gateway-2), limits.timeout_seconds (3 s).
check "connections: 4 from one source are served, a 5th is refused in its handshake, one closed makes room" \
	python3 -c '
import socket, ssl, sys, time
port, host = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def tls():
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname=host)
held = [tls() for _ in range(4)]
try:
    tls(); print("5th connection accepted"); sys.exit(1)
except (ssl.SSLError, ConnectionError) as e:
    print("5th refused:", e)
held.pop().close()
time.sleep(0.3)
s = tls(); s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
a = s.recv(4096).split(b"\r\n")[0]; print("after one closed:", a)
sys.exit(0 if a.startswith(b"HTTP/1.1 200") else 1)
' "$G2P" "$H"
out=$(slow idle)
echo "# idle keep-alive: $out"
check "connections: an idle keep-alive connection is closed after limits.timeout_seconds (3 s), not before" \
	bash -c 'echo "$1" | grep -q "^HTTP/1.1 200 OK | closed=True" && within "$1" 2.5 5.5' _ "$out"
