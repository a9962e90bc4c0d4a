/*
 * gateway_http — the gateway's HTTP layer on libevent's evhttp.
 *
 * Two servers on the daemon's event loop: the HTTPS one (TLS bufferevents from
 * gateway_tls.c, header/body/time limits, a route table) and, if http.listen is
 * set, a plain one whose only answer is a 308 to the same path over HTTPS.
 *
 * Every response built here carries the security headers and an X-Request-Id
 * (the client's if sane, else a fresh random one) and produces exactly one access
 * log line. Errors are RFC 9457 problem documents. Requests that evhttp itself
 * rejects before our callback runs (malformed request line or headers: 400;
 * headers over limits.max_header_bytes or a body over limits.max_body_bytes: 413)
 * are answered by evhttp with its own minimal page: libevent 2.1 has no hook to
 * decorate them.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto.h"
#include "gateway.h"
#include "log.h"

#define GATEWAY_ALL_METHODS                                                                        \
	(EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | \
	 EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH)
#define GATEWAY_LOG_PATH_MAX 256

/* The gateway this file serves (one per process); set by gateway_http_start. */
static struct gateway *gateway_http_gw;

/* One row per route: path, methods answered, their Allow header, handler. */
struct gateway_route {
	const char *path;
	int methods;
	const char *allow;
	void (*handler)(struct gateway *gw, struct evhttp_request *req,
			const struct gateway_reqinfo *info);
};

static const struct gateway_route gateway_routes[] = {
    {"/healthz", EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, "GET, HEAD", gateway_healthz_start},
};

/* The method's name for logs. */
static const char *gateway_http_method(enum evhttp_cmd_type cmd)
{
	switch (cmd) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	case EVHTTP_REQ_OPTIONS:
		return "OPTIONS";
	case EVHTTP_REQ_TRACE:
		return "TRACE";
	case EVHTTP_REQ_CONNECT:
		return "CONNECT";
	case EVHTTP_REQ_PATCH:
		return "PATCH";
	}
	return "OTHER";
}

/* The reason phrase of the status codes the gateway sends. */
static const char *gateway_http_reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 308:
		return "Permanent Redirect";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 413:
		return "Content Too Large";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	}
	return "Unknown";
}

/* Start the bookkeeping of a request: its id (client's if sane) and start time. */
static void gateway_reqinfo_init(struct gateway_reqinfo *info, struct evhttp_request *req)
{
	static unsigned long fallback;
	const char *given;

	clock_gettime(CLOCK_MONOTONIC, &info->start);
	given = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
	if (given != NULL && gateway_request_id_ok(given)) {
		snprintf(info->id, sizeof info->id, "%s", given);
		return;
	}
	if (crypto_random_id(info->id) < 0) /* not unpredictable, but still unique */
		snprintf(info->id, sizeof info->id, "gw-%d-%lu", (int)getpid(), ++fallback);
}

/* The headers every response carries; HSTS only where the transport is TLS (RFC 6797 7.2). */
static void gateway_http_secure_headers(struct evhttp_request *req, const char *request_id,
					bool tls)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	if (tls)
		evhttp_add_header(h, "Strict-Transport-Security",
				  "max-age=63072000; includeSubDomains");
	evhttp_add_header(h, "Content-Security-Policy",
			  "default-src 'none'; frame-ancestors 'none'");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(h, "Referrer-Policy", "no-referrer");
	evhttp_add_header(h, "X-Frame-Options", "DENY");
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "X-Request-Id", request_id);
	if (gateway_http_gw != NULL && gateway_http_gw->stopping)
		evhttp_add_header(h, "Connection", "close");
}

/* One access log line: no headers, no query string, no body. */
static void gateway_http_log(struct evhttp_request *req, const struct gateway_reqinfo *info,
			     int status, size_t bytes)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	char shortpath[GATEWAY_LOG_PATH_MAX + 1];
	char *addr = NULL;
	ev_uint16_t port = 0;
	double ms = gateway_elapsed_ms(&info->start);

	if (evcon != NULL)
		evhttp_connection_get_peer(evcon, &addr, &port);
	snprintf(shortpath, sizeof shortpath, "%s", path != NULL ? path : "");
	log_set_request_id(info->id);
	log_event(LOG_INFO, "http",
		  LF_STR("method", gateway_http_method(evhttp_request_get_command(req))),
		  LF_STR("path", shortpath), LF_INT("status", status), LF_INT("bytes", bytes),
		  LF_INT("duration_ms", (long long)llround(ms)),
		  LF_STR("client", addr != NULL ? addr : ""));
	log_set_request_id(NULL);
}

/* Send a response (body may be NULL), with the security headers, and log it. */
static void gateway_http_send(struct evhttp_request *req, const struct gateway_reqinfo *info,
			      int status, const char *content_type, const char *body, size_t len,
			      bool tls)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *buf = NULL;

	gateway_http_secure_headers(req, info->id, tls);
	if (body != NULL && len > 0) {
		if (content_type != NULL)
			evhttp_add_header(h, "Content-Type", content_type);
		if ((buf = evbuffer_new()) == NULL || evbuffer_add(buf, body, len) != 0) {
			/* Out of memory: an empty 500 rather than a half-made answer. */
			evbuffer_free(buf);
			buf = NULL;
			status = 500;
			len = 0;
			evhttp_remove_header(h, "Content-Type");
		}
	}
	gateway_http_log(req, info, status, body != NULL ? len : 0);
	evhttp_send_reply(req, status, gateway_http_reason(status), buf);
	if (buf != NULL)
		evbuffer_free(buf);
}

/* Answer a request on the HTTPS server. See gateway_http_send. */
void gateway_http_reply(struct evhttp_request *req, const struct gateway_reqinfo *info, int status,
			const char *content_type, const char *body, size_t len)
{
	gateway_http_send(req, info, status, content_type, body, len, true);
}

/* Answer with a problem document (application/problem+json). */
void gateway_http_problem(struct evhttp_request *req, const struct gateway_reqinfo *info,
			  int status, const char *title, const char *detail)
{
	char *body = gateway_problem_json(status, title, detail);

	gateway_http_reply(req, info, status, "application/problem+json", body,
			   body != NULL ? strlen(body) : 0);
	free(body);
}

/* HTTPS: route the request by exact path, then by method. */
static void gateway_http_dispatch(struct evhttp_request *req, void *arg)
{
	struct gateway *gw = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	const struct gateway_route *route = NULL;
	struct gateway_reqinfo info;
	size_t i;

	gateway_reqinfo_init(&info, req);
	if (gw->stopping) {
		gateway_http_problem(req, &info, 503, "Service Unavailable",
				     "The gateway is shutting down.");
		return;
	}
	for (i = 0; path != NULL && i < sizeof gateway_routes / sizeof gateway_routes[0]; i++)
		if (strcmp(path, gateway_routes[i].path) == 0)
			route = &gateway_routes[i];
	if (route == NULL) {
		gateway_http_problem(req, &info, 404, "Not Found",
				     "No resource exists at this path.");
		return;
	}
	if ((evhttp_request_get_command(req) & route->methods) == 0) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", route->allow);
		gateway_http_problem(req, &info, 405, "Method Not Allowed",
				     "This resource does not support the request method.");
		return;
	}
	route->handler(gw, req, &info);
}

/* Plain HTTP: every request gets a 308 to the same target over HTTPS. */
static void gateway_http_redirect(struct evhttp_request *req, void *arg)
{
	struct gateway *gw = arg;
	const char *host = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
	char name[GATEWAY_HOST_MAX + 1];
	char location[2048 + GATEWAY_HOST_MAX + 16];
	struct gateway_reqinfo info;
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	gateway_reqinfo_init(&info, req);
	if (!gateway_host_in_domain(host, gw->cfg->domain, name, sizeof name))
		snprintf(name, sizeof name, "%s", gw->cfg->domain);
	if (gateway_redirect_location(location, sizeof location, name, gw->https_port,
				      evhttp_request_get_uri(req)) < 0 &&
	    gateway_redirect_location(location, sizeof location, name, gw->https_port, "/") < 0) {
		gateway_http_send(req, &info, 400, NULL, NULL, 0, false);
		return;
	}
	evhttp_add_header(h, "Location", location);
	evhttp_add_header(h, "Connection", "close");
	gateway_http_send(req, &info, 308, NULL, NULL, 0, false);
}

/* Apply the configured limits to an evhttp server. */
static void gateway_http_limits(struct evhttp *http, const struct gateway_config *cfg,
				ev_ssize_t max_body)
{
	evhttp_set_max_headers_size(http, cfg->max_header_bytes);
	evhttp_set_max_body_size(http, max_body);
	evhttp_set_timeout(http, cfg->timeout_seconds);
	evhttp_set_allowed_methods(http, GATEWAY_ALL_METHODS);
	/* Read (and drop) the rest of an oversized body so the client sees the 413. */
	(void)evhttp_set_flags(http, EVHTTP_SERVER_LINGERING_CLOSE);
}

/* Create a server on gw->base bound to spec; *port_r gets the port. */
static struct evhttp *gateway_http_listen(struct gateway *gw, const char *key, const char *spec,
					  struct evhttp_bound_socket **sock_r, uint16_t *port_r,
					  const char **error_r)
{
	static char err[320];
	char host[GATEWAY_HOST_MAX + 1];
	const char *why;
	struct evhttp *http;

	if (gateway_listen_parse(spec, host, sizeof host, port_r, &why) < 0) {
		snprintf(err, sizeof err, "%s: %s", key, why);
		*error_r = err;
		return NULL;
	}
	if ((http = evhttp_new(gw->base)) == NULL) {
		*error_r = "cannot create HTTP server";
		return NULL;
	}
	if ((*sock_r = evhttp_bind_socket_with_handle(http, host, *port_r)) == NULL) {
		snprintf(err, sizeof err, "%s: cannot listen on %s: %s", key, spec,
			 strerror(errno));
		*error_r = err;
		evhttp_free(http);
		return NULL;
	}
	return http;
}

/* Start both servers. 0, or -1 and *error_r (nothing left listening). */
int gateway_http_start(struct gateway *gw, const char **error_r)
{
	uint16_t port;

	gateway_http_gw = gw;
	gw->https = gateway_http_listen(gw, "https.listen", gw->cfg->https_listen, &gw->https_sock,
					&gw->https_port, error_r);
	if (gw->https == NULL)
		goto fail;
	evhttp_set_bevcb(gw->https, gateway_tls_bevcb, gw);
	evhttp_set_gencb(gw->https, gateway_http_dispatch, gw);
	gateway_http_limits(gw->https, gw->cfg, gw->cfg->max_body_bytes);
	if (gw->cfg->http_listen != NULL) {
		gw->http = gateway_http_listen(gw, "http.listen", gw->cfg->http_listen,
					       &gw->http_sock, &port, error_r);
		if (gw->http == NULL)
			goto fail;
		evhttp_set_gencb(gw->http, gateway_http_redirect, gw);
		gateway_http_limits(gw->http, gw->cfg, 0);
	}
	log_event(LOG_INFO, "listening", LF_STR("https", gw->cfg->https_listen),
		  LF_STR("http", gw->cfg->http_listen != NULL ? gw->cfg->http_listen : ""));
	return 0;
fail:
	gateway_http_free(gw);
	return -1;
}

/* Stop accepting: close both listening sockets; open connections carry on. */
void gateway_http_stop(struct gateway *gw)
{
	gw->stopping = true;
	if (gw->https != NULL && gw->https_sock != NULL)
		evhttp_del_accept_socket(gw->https, gw->https_sock);
	gw->https_sock = NULL;
	if (gw->http != NULL && gw->http_sock != NULL)
		evhttp_del_accept_socket(gw->http, gw->http_sock);
	gw->http_sock = NULL;
}

/* Free both servers and every connection they hold. NULL-safe, idempotent. */
void gateway_http_free(struct gateway *gw)
{
	if (gw->https != NULL)
		evhttp_free(gw->https);
	gw->https = NULL;
	gw->https_sock = NULL;
	if (gw->http != NULL)
		evhttp_free(gw->http);
	gw->http = NULL;
	gw->http_sock = NULL;
	gateway_http_gw = NULL;
}
