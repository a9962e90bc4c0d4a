/*
 * gateway_routes_audit — the audit service's REST rows (SPEC §4): the log with
 * filters and cursor pagination, chain verification, agent activity and exports.
 * Who may call them is stated once, in ward-audit's method table (admins, or API
 * credentials with scope audit:read).
 */
#include "audit.pb-c.h"
#include "gateway_routes.h"

const struct gateway_route gateway_routes_audit[] = {
	{ "GET", "/api/v1/audit", "q:audit", "audit.list", &ward__audit_list_request__descriptor,
	  &ward__audit_list_reply__descriptor, 0, 200, 0 },
	{ "GET", "/api/v1/audit/verify", "q:audit", "audit.verify",
	  &ward__audit_verify_request__descriptor, &ward__audit_verify_reply__descriptor, 0, 200,
	  0 },
	/* ?format=csv (default) or json; the reply payload is the file itself. */
	{ "GET", "/api/v1/audit/export", "q:audit", "audit.export",
	  &ward__audit_export_request__descriptor, &ward__audit_export_reply__descriptor,
	  ROUTE_RAW_REPLY, 200, 0 },
	{ "GET", "/api/v1/activity", "q:audit", "audit.activity",
	  &ward__audit_activity_request__descriptor, &ward__audit_activity_reply__descriptor, 0,
	  200, 0 },
};
const size_t gateway_routes_audit_n = sizeof gateway_routes_audit / sizeof gateway_routes_audit[0];
