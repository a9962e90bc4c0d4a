/*
 * gateway_routes — the REST API as a table: each row maps an HTTP method and path
 * onto a method of a service queue, with the protobuf messages the JSON is read
 * into and written from (common/pbjson), and what the route requires.
 *
 * Request message: the JSON body (by field name), then path parameters ("{id}"
 * fills field "id"), then query parameters (same names), then, if the message has
 * them, fields "ip" and "user_agent" from the connection. Reply: the service's
 * reply message as JSON with success_status; an error reply (envelope status != 0)
 * becomes application/problem+json from its ward.Problem payload.
 *
 * Each service's rows live in gateway_routes_<service>.c, written with that
 * service; gateway_routes.c lists the tables.
 */
#ifndef WARD_GATEWAY_ROUTES_H
#define WARD_GATEWAY_ROUTES_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

enum {
	ROUTE_PUBLIC = 1 << 0,	  /* no credential needed (login, oauth token, sso) */
	ROUTE_SET_SESSION = 1 << 1, /* reply has session_token (LoginReply…): set the cookie */
	ROUTE_END_SESSION = 1 << 2, /* clear the session cookie after success */
	ROUTE_FORM = 1 << 3,	  /* body is application/x-www-form-urlencoded (RFC 6749) */
	ROUTE_LOGIN_RATE = 1 << 4, /* the much tighter login rate limit */
	ROUTE_BROWSER = 1 << 5,	  /* a page (307 to the right region, not 421) */
	ROUTE_RAW_REPLY = 1 << 6, /* reply is not JSON: no pbjson (downloads, CSV) */
	ROUTE_PENDING_OK = 1 << 7, /* open to a session that must first change its password
				    * or set up TOTP (every other route: 403) */
};

struct gateway_route {
	const char *method; /* "GET", "POST", "PUT", "PATCH", "DELETE" */
	const char *path;   /* "/api/v1/users/{id}": a {name} segment matches one segment */
	const char *stream; /* "q:auth" */
	const char *rpc;    /* method on that queue, e.g. "auth.login" */
	const ProtobufCMessageDescriptor *request;
	const ProtobufCMessageDescriptor *reply; /* NULL: empty 204 */
	unsigned flags;
	int success_status; /* 200, 201, 204 */
	size_t max_body;    /* 0: the gateway default */
};

/* Every service's rows (defined in gateway_routes_<service>.c). Weak: a table not
 * written yet links as empty (gateway_routes.c checks the addresses). */
extern const struct gateway_route gateway_routes_auth[] __attribute__((weak));
extern const size_t gateway_routes_auth_n __attribute__((weak));
extern const struct gateway_route gateway_routes_ticket[] __attribute__((weak));
extern const size_t gateway_routes_ticket_n __attribute__((weak));
extern const struct gateway_route gateway_routes_audit[] __attribute__((weak));
extern const size_t gateway_routes_audit_n __attribute__((weak));

/* gateway_routes.c: table i (0, 1, …) as rows and count; false past the last table. */
bool gateway_routes_table(size_t i, const struct gateway_route **rows_r, size_t *n_r);

#endif
