/*
 * gateway_http — the gateway's HTTP layer on libevent's evhttp.
 *
 * Two servers on the daemon's event loop: the HTTPS one (TLS bufferevents from
 * gateway_tls.c, header/body/time limits, a route table) and, if http.listen is
 * set, a plain one whose only answer is a 308 to the same path over HTTPS.
 *
 * Every response built here carries the security headers and an X-Request-Id
 * (the client's if sane, else a fresh random one) and produces exactly one access
 * log line. Errors are RFC 9457 problem documents. Before the API pipeline
 * (gateway_api.c) every request is checked here: target length (414), number of
 * header fields (431), exactly one Host (400), and a Host naming the same host as
 * the TLS SNI when one was sent (421). /healthz answers on any host.
 *
 * What evhttp rejects itself, before any callback of ours, it answers with its own
 * text/html page and no security headers, then closes the connection: a malformed
 * request line or header (400), a header block over limits.max_header_bytes (400),
 * a body over the largest route's max_body (413), an unknown method (501). In
 * libevent 2.1 these come from evhttp_connection_fail_ → evhttp_send_error inside
 * http.c; 2.1 has no error callback (evhttp_set_errorcb is 2.2) and no hook between
 * parsing and that answer, and such a request never reaches the gencb (its uri is
 * NULL). Decorating them would take an output bufferevent filter parsing our own
 * HTTP framing (a copy of every byte served, and a parser on the response path)
 * for pages that carry no data, no script and no user input. Bodies within the
 * server cap but over their route's max_body get a problem+json 413 from
 * gateway_api.c with every header.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "crypto.h"
#include "gateway.h"
#include "gateway_routes.h"
#include "log.h"

#define GATEWAY_ALL_METHODS                                                                        \
	(EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | \
	 EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH)
#define GATEWAY_LOG_PATH_MAX 256

/* The gateway this file serves (one per process); set by gateway_http_start. */
static struct gateway *gateway_http_gw;

/* The method's name for logs. */
const char *gateway_http_method(enum evhttp_cmd_type cmd)
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
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 307:
		return "Temporary Redirect";
	case 308:
		return "Permanent Redirect";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 409:
		return "Conflict";
	case 410:
		return "Gone";
	case 412:
		return "Precondition Failed";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 421:
		return "Misdirected Request";
	case 422:
		return "Unprocessable Content";
	case 423:
		return "Locked";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
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

/* Answers of the HTTPS server since start, /healthz aside (its 503 reports a
 * dependency, not a failed request): the status page's error-rate signal. */
static unsigned long long http_answers, http_answers_5xx;

void gateway_http_counts(unsigned long long *answers_r, unsigned long long *errors_r)
{
	*answers_r = http_answers;
	*errors_r = http_answers_5xx;
}

/* Answer a request on the HTTPS server. See gateway_http_send. */
void gateway_http_reply(struct evhttp_request *req, const struct gateway_reqinfo *info, int status,
			const char *content_type, const char *body, size_t len)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;

	if (path == NULL || strcmp(path, "/healthz") != 0) {
		http_answers++;
		if (status >= 500)
			http_answers_5xx++;
	}
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

/* The SNI the client sent on this request's TLS connection, or NULL. An IP literal
 * (which RFC 6066 3 forbids, but some clients send) counts as no name. */
static const char *gateway_http_sni(struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;
	SSL *ssl = bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;
	const char *sni = ssl != NULL ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
	unsigned char addr[16];

	if (sni != NULL &&
	    (inet_pton(AF_INET, sni, addr) == 1 || inet_pton(AF_INET6, sni, addr) == 1))
		return NULL;
	return sni;
}

/*
 * The checks every HTTPS request gets before routing: target length, header
 * count, exactly one Host, and the SNI (when sent) naming the same host. 0, or
 * the status to answer with and *detail_r.
 */
static int gateway_http_precheck(struct gateway *gw, struct evhttp_request *req,
				 const char **detail_r)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *uri = evhttp_request_get_uri(req);
	const char *host = NULL, *sni;
	struct evkeyval *kv;
	int n = 0, hosts = 0;

	if (uri == NULL || strlen(uri) > (size_t)gw->cfg->max_url_bytes) {
		*detail_r = "The request target is too long.";
		return 414;
	}
	for (kv = in->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
		n++;
		if (strcasecmp(kv->key, "Host") == 0) {
			hosts++;
			host = kv->value;
		}
	}
	if (n > gw->cfg->max_headers) {
		*detail_r = "Too many header fields.";
		return 431;
	}
	if (hosts != 1 || host == NULL || host[0] == '\0') {
		*detail_r = "Exactly one Host header is required.";
		return 400;
	}
	sni = gateway_http_sni(req);
	if (sni != NULL) {
		size_t hn = strcspn(host, ":");

		if (strlen(sni) != hn || strncasecmp(sni, host, hn) != 0) {
			*detail_r = "The Host header does not match the TLS server name.";
			return 421;
		}
	}
	return 0;
}

/* HTTPS: generic checks, then /healthz (any host) or the API pipeline (gateway_api.c). */
static void gateway_http_dispatch(struct evhttp_request *req, void *arg)
{
	struct gateway *gw = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	const char *detail = NULL;
	struct gateway_reqinfo info;
	int status;

	gateway_reqinfo_init(&info, req);
	if (gw->stopping) {
		gateway_http_problem(req, &info, 503, "Service Unavailable",
				     "The gateway is shutting down.");
		return;
	}
	if ((status = gateway_http_precheck(gw, req, &detail)) != 0) {
		gateway_http_problem(req, &info, status, gateway_http_reason(status), detail);
		return;
	}
	if (path != NULL && strcmp(path, "/healthz") == 0) {
		enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

		if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
					  "GET, HEAD");
			gateway_http_problem(req, &info, 405, "Method Not Allowed",
					     "This resource does not support the request method.");
			return;
		}
		gateway_healthz_start(gw, req, &info);
		return;
	}
	gateway_api_start(gw, req, &info);
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

/* The server-wide body cap: the largest a route allows (each route is held to its own
 * max_body in gateway_api.c, with a problem+json 413; over this one, evhttp answers). */
static ev_ssize_t gateway_http_max_body(const struct gateway_config *cfg)
{
	const struct gateway_route *rows;
	size_t n, t, i, max = (size_t)cfg->max_body_bytes;

	for (t = 0; gateway_routes_table(t, &rows, &n); t++)
		for (i = 0; i < n; i++)
			if (rows[i].max_body > max)
				max = rows[i].max_body;
	return (ev_ssize_t)max;
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
	gateway_http_limits(gw->https, gw->cfg, gateway_http_max_body(gw->cfg));
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
