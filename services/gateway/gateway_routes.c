/*
 * gateway_routes — the list of route tables the gateway matches requests against.
 *
 * Each service's engineer writes gateway_routes_<service>.c with its rows; this
 * file only lists the tables. They are declared weak (gateway_routes.h), so a
 * table that does not exist yet links as absent and is skipped.
 */
#include "gateway_routes.h"

/* Table i as rows and count; false once past the last table. Absent tables count 0 rows. */
bool gateway_routes_table(size_t i, const struct gateway_route **rows_r, size_t *n_r)
{
	*rows_r = NULL;
	*n_r = 0;
	switch (i) {
	case 0:
		if (gateway_routes_auth != NULL && &gateway_routes_auth_n != NULL) {
			*rows_r = gateway_routes_auth;
			*n_r = gateway_routes_auth_n;
		}
		return true;
	case 1:
		if (gateway_routes_ticket != NULL && &gateway_routes_ticket_n != NULL) {
			*rows_r = gateway_routes_ticket;
			*n_r = gateway_routes_ticket_n;
		}
		return true;
	case 2:
		if (gateway_routes_audit != NULL && &gateway_routes_audit_n != NULL) {
			*rows_r = gateway_routes_audit;
			*n_r = gateway_routes_audit_n;
		}
		return true;
	}
	return false;
}
