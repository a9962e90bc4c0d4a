# tests/bench/lib.sh — what every benchmark script does first, sourced after it has
# set TOP. bench_stack: use the dev stack of $WARD_VAR when it has one, else start a
# throwaway one (OWN=1: the script stops it at its end with stack_down; a stack that
# fails to start is stopped here); load the stack's endpoints (devstack.env) and
# wardctl's config; WUSER is the user the daemons run as.
bench_stack() {
	OWN=0
	if [ -z "${WARD_VAR:-}" ] || [ ! -f "$WARD_VAR/devstack.env" ]; then
		. "$TOP/tests/stack.sh"
		stack_up || { stack_down; echo "bench: the dev stack did not start" >&2; exit 1; }
		OWN=1
	fi
	set -a
	. "$WARD_VAR/devstack.env"
	set +a
	export WARD_CONFIG=$WARD_VAR/wardctl.yaml
	. "$TOP/ops/lib.sh"
	WUSER=${WARD_USER:-ward}
	[ "$(id -u)" -eq 0 ] || WUSER=$(id -un)
}
