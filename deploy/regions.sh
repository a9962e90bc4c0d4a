# deploy/regions.sh — read deploy/regions.yaml from shell (sourced by deploy/deploy.sh,
# ops/devstack and the tests). The file is flat on purpose: "- name: R" starts an
# entry, "key: value" lines follow; no anchors, no nesting, no quotes needed.
#
#   regions_list [FILE]            the region names, in file order
#   regions_get R KEY [FILE]       one value of region R ("" if absent)
#   regions_domain [FILE]          the top-level domain

WARD_REGIONS_FILE=${WARD_REGIONS_FILE:-$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)/regions.yaml}

regions_list() {
	awk '/^[[:space:]]*- name:/ { print $3 }' "${1:-$WARD_REGIONS_FILE}"
}

regions_get() {
	awk -v r="$1" -v k="$2" '
		/^[[:space:]]*- name:/ { cur = $3; next }
		cur == r && $1 == k ":" { sub(/^[^:]*:[[:space:]]*/, ""); print; exit }' "${3:-$WARD_REGIONS_FILE}"
}

regions_domain() {
	awk '/^domain:/ { print $2; exit }' "${1:-$WARD_REGIONS_FILE}"
}
