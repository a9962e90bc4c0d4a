# tests/e2e/lib_api.sh — REST API helpers over real HTTPS, sourced after lib.sh by
# tests that log in. The caller sets R (region), P (its HTTPS port) and TMP (a
# scratch directory); a cookie jar file JAR keeps the session, JAR.csrf its CSRF token.

# api SLUG JAR METHOD PATH [JSON] [extra curl args]: prints "<status> <body>".
api() {
	local slug=$1 jar=$2 m=$3 path=$4 data=${5:-} csrf=""; shift 5 2>/dev/null || shift $#
	[ -f "$jar.csrf" ] && csrf=$(cat "$jar.csrf")
	local args=(-sS --max-time 20 --cacert "$WARD_CA" --resolve "$slug.$R.$WARD_DOMAIN:$P:127.0.0.1"
		-o "$TMP/body" -w '%{http_code}' -X "$m" -b "$jar" -c "$jar"
		-H "Origin: https://$slug.$R.$WARD_DOMAIN:$P")
	[ -n "$csrf" ] && [ "${NOCSRF:-0}" = 0 ] && args+=(-H "X-CSRF-Token: ${BADCSRF:-$csrf}")
	[ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
	local code
	code=$(curl -D "$TMP/headers" "${args[@]}" "$@" "https://$slug.$R.$WARD_DOMAIN:$P$path")
	# A password change or TOTP confirm replaces the session (new cookie in the
	# jar, new CSRF token in the body): keep the token next to the jar.
	if [ "$code" = 200 ] && { [ "$path" = /api/v1/auth/password ] || [ "$path" = /api/v1/auth/totp/confirm ]; }; then
		csrf_renew "$jar" "$(cat "$TMP/body")"
	fi
	echo "$code $(cat "$TMP/body")"
}
# csrf_renew JAR JSON: the csrf_token of a session-renewing answer into JAR.csrf.
csrf_renew() {
	local t
	t=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("csrf_token",""))' "$2" 2>/dev/null)
	[ -n "$t" ] && echo "$t" >"$1.csrf"
	return 0
}
# bearer SLUG TOKEN METHOD PATH: with Authorization: Bearer.
bearer() {
	curl -sS --max-time 20 --cacert "$WARD_CA" --resolve "$1.$R.$WARD_DOMAIN:$P:127.0.0.1" \
		-o "$TMP/body" -w '%{http_code}' -X "$3" -H "Authorization: Bearer $2" \
		"https://$1.$R.$WARD_DOMAIN:$P$4"
	echo " $(cat "$TMP/body")"
}
jget() { python3 -c "import json,sys; d=json.loads(sys.argv[1].split(' ',1)[1]); print(eval('d'+sys.argv[2]))" "$1" "$2"; }
status() { echo "${1%% *}"; }
# login SLUG JAR EMAIL PASSWORD [TOTP]: keeps the CSRF token next to the jar.
login() {
	local body out
	body=$(python3 -c 'import json,sys; d={"email":sys.argv[1],"password":sys.argv[2]}
if len(sys.argv)>3: d["totp_code"]=sys.argv[3]
print(json.dumps(d))' "${@:3}")
	rm -f "$2" "$2.csrf"
	out=$(api "$1" "$2" POST /api/v1/auth/login "$body")
	[ "$(status "$out")" = 200 ] && jget "$out" '["csrf_token"]' >"$2.csrf"
	echo "$out"
}
# admin_pw ONETIME: the strong password login_admin sets in place of a one-time one.
admin_pw() { echo "${1}-Chg-7q"; }
# login_admin SLUG JAR EMAIL ONETIME_PASSWORD: log in with the one-time admin password
# (`wardctl tenant create`), change it to $(admin_pw ONETIME) as the session must
# before anything else, and leave JAR (+ JAR.csrf) ready. Prints 200 when both steps
# succeeded, else the failing step's status. Works with a test's own api() of the
# same shape ("<status> <body>").
login_admin() {
	local out st body
	rm -f "$2" "$2.csrf"
	out=$(api "$1" "$2" POST /api/v1/auth/login "$(python3 -c 'import json,sys
print(json.dumps({"email":sys.argv[1],"password":sys.argv[2]}))' "$3" "$4")")
	st=${out%% *}
	[ "$st" = 200 ] || { echo "$st"; return 0; }
	python3 -c 'import json,sys; print(json.loads(sys.argv[1].split(" ",1)[1])["csrf_token"])' \
		"$out" >"$2.csrf"
	body=$(python3 -c 'import json,sys
print(json.dumps({"current_password":sys.argv[1],"new_password":sys.argv[2]}))' "$4" "$(admin_pw "$4")")
	out=$(api "$1" "$2" POST /api/v1/auth/password "$body")
	st=${out%% *}
	[ "$st" = 200 ] && csrf_renew "$2" "${out#* }"
	[ "$st" = 204 ] && st=200
	echo "$st"
}
