# ops/lib.sh — shell helpers shared by ops/devstack and the test scripts.

# as_user CMD...: run a command as the unprivileged user $WUSER when we are root
# (servers and daemons never run as root). setpriv execs in place (no PAM session,
# no extra process), so a pid taken with $! is the program's own and signals reach
# it directly.
as_user() {
	if [ "$(id -u)" -eq 0 ]; then
		HOME=/nonexistent USER=$WUSER LOGNAME=$WUSER \
			setpriv --reuid="$WUSER" --regid="$WUSER" --init-groups --inh-caps=-all -- "$@"
	else
		"$@"
	fi
}

# ensure_user: as root, create the unprivileged system user $WUSER if missing.
ensure_user() {
	[ "$(id -u)" -eq 0 ] || return 0
	id -u "$WUSER" >/dev/null 2>&1 ||
		useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$WUSER"
}

# spawn_as_user PIDFILE LOGFILE CMD...: start CMD in the background as $WUSER, its
# output appended to LOGFILE, and write its own pid (not a shell's) to PIDFILE.
spawn_as_user() {
	local pidfile=$1 log=$2
	shift 2
	(
		if [ "$(id -u)" -eq 0 ]; then
			export HOME=/nonexistent USER=$WUSER LOGNAME=$WUSER
			exec setpriv --reuid="$WUSER" --regid="$WUSER" --init-groups --inh-caps=-all -- "$@" \
				</dev/null >>"$log" 2>&1
		fi
		exec "$@" </dev/null >>"$log" 2>&1
	) &
	echo $! >"$pidfile"
}
