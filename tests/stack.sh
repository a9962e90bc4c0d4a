# tests/stack.sh — start and stop a throwaway dev stack for tests and benchmarks:
# a temporary WARD_VAR (never var/) and a free range of loopback ports.
# Sourced by tests/run and tests/bench/run.

# A base port with 60 free ports above it (three cells, the status page, a fourth
# cell at +40 in test_region, local deploys at +50 in test_deploy).
stack_free_base() {
	local b i p clash used
	used=$(ss -Htan 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -u)
	for i in $(seq 50); do
		# Below the kernel's ephemeral range (ip_local_port_range, 32768 up on
		# Debian), where a client connection of the tests themselves could hold a
		# port between this check and the daemon's bind.
		b=$((20000 + (RANDOM % 127) * 100))
		clash=0
		for p in $(seq "$b" $((b + 59))); do
			if echo "$used" | grep -qx "$p"; then clash=1; break; fi
		done
		[ $clash -eq 0 ] && { echo "$b"; return; }
	done
	echo 0
}

# stack_up: exports WARD_VAR, WARD_PORT_BASE, WARD_TOP; 0 when healthy.
stack_up() {
	export WARD_TOP=$TOP WARD_VAR WARD_PORT_BASE
	WARD_VAR=$(mktemp -d /tmp/ward-test.XXXXXX)
	chmod 0755 "$WARD_VAR"
	WARD_PORT_BASE=$(stack_free_base)
	"$TOP/ops/devstack" up >"$WARD_VAR/devstack-up.log" 2>&1
}

stack_down() {
	"$TOP/ops/devstack" down >/dev/null 2>&1
	# Daemons' stderr: where a sanitizer build reports errors and leaks at exit.
	STACK_SAN_REPORTS=$(grep -lE 'AddressSanitizer|LeakSanitizer|runtime error:' \
		"$WARD_VAR"/*/log/*.stderr 2>/dev/null || true)
	if [ -n "$STACK_SAN_REPORTS" ]; then
		for f in $STACK_SAN_REPORTS; do echo "--- $f"; head -40 "$f"; done
	fi
	[ -n "${WARD_KEEP:-}" ] || rm -rf "$WARD_VAR"
}
