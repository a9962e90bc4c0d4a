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
 * What evhttp rejects itself, before any callback of ours, it would answer with its
 * own text/html page without security headers (libevent 2.1 has no error callback:
 * evhttp_connection_fail_ → evhttp_send_error). So on the HTTPS server evhttp never
 * sees such a request: a guard on each connection's TLS input (an evbuffer callback,
 * which runs before evhttp's read callback) passes on only complete heads it has
 * checked — request line, methods, version, field syntax, head size, Content-Length
 * against the largest route's max_body, no Transfer-Encoding, Expect — and their
 * bodies. What it refuses becomes a stand-in request that gateway_http_dispatch
 * answers with a problem document, every header, and Connection: close. evhttp's
 * own limits are set looser than the guard's. Output is untouched (a filtering
 * bufferevent would let evhttp close the socket before a last answer is sent).
 * The same guard stands in front of the plain-HTTP redirector (a socket bufferevent:
 * the guard is made at its first bytes and freed by the connection's close callback)
 * and the status page (gateway_status.c, through gateway_guard_tls); each listener's
 * callback answers the stand-in with its own headers (gateway_guard_refused).
 *
 * Slow clients (slowloris): evhttp's timeout (limits.timeout_seconds) restarts at
 * every byte, so a byte every few seconds would hold a connection for ever. The
 * guard also keeps a deadline, limits.header_timeout_seconds: on a TLS connection
 * from its accept (the handshake and the first head must both be done by then),
 * on a plain one from its first byte, and for every later head from its first byte
 * to its end. Past it a TLS connection gets a 408 if that was its first head (after
 * a complete handshake): evhttp has read nothing yet, so it waits for a request
 * line, and the guard hands it a stand-in request (as for its refusals) and calls
 * its read callback. Any other connection, the plain redirector's included, is
 * failed the way evhttp's own timeout fails it (its event callback with
 * BEV_EVENT_TIMEOUT): closed without an answer, and a request of that connection
 * still in flight is detached, not freed under its handler. (No 408 there: evhttp
 * may be writing an earlier answer, and its read callback aborts the process when
 * called outside a reading state.)
 * A request body has a deadline of its own, limits.body_timeout_seconds from the end
 * of its head: a body dripped slowly is failed the same way (closed, no answer).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
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
#define GATEWAY_COALESCE_MAX 16384 /* one TLS record's plaintext */

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
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 410:
		return "Gone";
	case 411:
		return "Length Required";
	case 412:
		return "Precondition Failed";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 417:
		return "Expectation Failed";
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
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	}
	return "Unknown";
}

/*
 * A fresh request id: 32 hex digits of 16 random bytes, like crypto_random_id, but
 * drawn from a pool filled GW_ID_POOL bytes at a time (one RAND_bytes call per 64
 * ids instead of one per request: it was 5 % of the gateway's CPU). -1 if the
 * random generator fails.
 */
#define GW_ID_POOL 1024
static int gateway_http_random_id(char out[33])
{
	static unsigned char pool[GW_ID_POOL];
	static size_t left;
	static const char hexd[] = "0123456789abcdef";
	const unsigned char *p;

	if (left < 16) {
		if (crypto_random(pool, sizeof pool) != 0) {
			left = 0;
			return -1;
		}
		left = sizeof pool;
	}
	p = pool + sizeof pool - left;
	for (size_t i = 0; i < 16; i++) {
		out[2 * i] = hexd[p[i] >> 4];
		out[2 * i + 1] = hexd[p[i] & 15];
	}
	out[32] = '\0';
	OPENSSL_cleanse((void *)p, 16); /* a used id's bytes do not stay behind */
	left -= 16;
	return 0;
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
	if (gateway_http_random_id(info->id) < 0) /* not unpredictable, but still unique */
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

/* One access log line (gateway_accesslog.c): no headers, no query string, no body. */
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
	if (gateway_accesslog_line(info->id, gateway_http_method(evhttp_request_get_command(req)),
				   shortpath, status, bytes, (long long)llround(ms),
				   addr != NULL ? addr : ""))
		return;
	log_set_request_id(info->id);
	log_event(LOG_INFO, "http",
		  LF_STR("method", gateway_http_method(evhttp_request_get_command(req))),
		  LF_STR("path", shortpath), LF_INT("status", status), LF_INT("bytes", bytes),
		  LF_INT("duration_ms", (long long)llround(ms)),
		  LF_STR("client", addr != NULL ? addr : ""));
	log_set_request_id(NULL);
}

/*
 * After evhttp_send_reply: the head and the body sit in the connection's output as
 * separate chains, and a TLS bufferevent makes one SSL_write (one record, one
 * write(2)) per chain. Nothing is written before the next loop turn, so joining
 * them here sends a small answer as one record in one system call. Large answers
 * (attachments) are left as they are: a copy would cost more than a record.
 */
static void gateway_http_coalesce(struct evhttp_connection *evcon)
{
	struct bufferevent *bev = evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;
	struct evbuffer *out = bev != NULL ? bufferevent_get_output(bev) : NULL;
	size_t n = out != NULL ? evbuffer_get_length(out) : 0;

	if (n > 0 && n <= GATEWAY_COALESCE_MAX)
		(void)evbuffer_pullup(out, -1); /* on failure the chains stay: still correct */
}

/* Send a response (body may be NULL), with the security headers, and log it. */
static void gateway_http_send(struct evhttp_request *req, const struct gateway_reqinfo *info,
			      int status, const char *content_type, const char *body, size_t len,
			      bool tls)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evhttp_connection *evcon;
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
	evcon = evhttp_request_get_connection(req);
	evhttp_send_reply(req, status, gateway_http_reason(status), buf);
	if (buf != NULL)
		evbuffer_free(buf);
	gateway_http_coalesce(evcon);
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

/* ============================================================ request guard */

/*
 * Why a request was refused before evhttp parsed it; the index travels in the
 * target of the stand-in request (GATEWAY_REFUSED_PREFIX "<index>").
 */
static const struct {
	int status;
	const char *detail;
} gateway_http_refusals[] = {
	{ 400, "Malformed request line." },
	{ 400, "Malformed header field." },
	{ 431, "The request header block is too large." },
	{ 413, "The request body is too large." },
	{ 411, "Send the body with a Content-Length header (no Transfer-Encoding)." },
	{ 501, "Unknown request method." },
	{ 505, "Only HTTP/1.0 and HTTP/1.1 are served." },
	{ 417, "Only Expect: 100-continue is supported." },
	{ 400, "Malformed Content-Length header." },
	{ 408, "The request head did not arrive in time." },
};
enum {
	GW_REFUSE_LINE,
	GW_REFUSE_FIELD,
	GW_REFUSE_HEAD_SIZE,
	GW_REFUSE_BODY_SIZE,
	GW_REFUSE_LENGTH,
	GW_REFUSE_METHOD,
	GW_REFUSE_VERSION,
	GW_REFUSE_EXPECT,
	GW_REFUSE_CLEN,
	GW_REFUSE_TIMEOUT,
};
/* Only the guard writes a request line with this target: it refuses any client's. */
#define GATEWAY_REFUSED_PREFIX "/.ward-refused/"

/*
 * Whether req is the guard's stand-in for a request it refused (no client can send
 * one: the guard refuses that target). If so, the answer to give: *status_r, its
 * reason phrase as *title_r and *detail_r. Any listener with a guard calls this first.
 */
bool gateway_guard_refused(struct evhttp_request *req, int *status_r, const char **title_r,
			   const char **detail_r)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	unsigned long why;

	if (path == NULL || strncmp(path, GATEWAY_REFUSED_PREFIX, strlen(GATEWAY_REFUSED_PREFIX)) != 0)
		return false;
	why = strtoul(path + strlen(GATEWAY_REFUSED_PREFIX), NULL, 10);
	if (why >= sizeof gateway_http_refusals / sizeof gateway_http_refusals[0])
		why = GW_REFUSE_LINE;
	*status_r = gateway_http_refusals[why].status;
	*title_r = gateway_http_reason(*status_r);
	*detail_r = gateway_http_refusals[why].detail;
	return true;
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
	const char *detail = NULL, *title = NULL;
	struct gateway_reqinfo info;
	int status;

	gateway_reqinfo_init(&info, req);
	if (gateway_guard_refused(req, &status, &title, &detail)) {
		gateway_http_problem(req, &info, status, title, detail);
		return;
	}
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
	const char *title, *detail;
	int status;

	gateway_reqinfo_init(&info, req);
	if (gateway_guard_refused(req, &status, &title, &detail)) {
		char *body = gateway_problem_json(status, title, detail);

		gateway_http_send(req, &info, status, "application/problem+json", body,
				  body != NULL ? strlen(body) : 0, false);
		free(body);
		return;
	}
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
	/* Looser than the guard's limits, which refuse first with a problem document. */
	evhttp_set_max_headers_size(http, 2 * (size_t)cfg->max_header_bytes + 1024);
	evhttp_set_max_body_size(http, max_body + 1);
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


/* ============================================================ request guard, continued */

/* One connection's guard (see gateway_http_guard_cb). */
struct gateway_guard {
	struct evbuffer *input;	      /* the TLS bufferevent's input, evhttp reads it */
	struct evbuffer_cb_entry *ent;
	struct evbuffer *hold;	      /* arrived, not yet passed to evhttp */
	struct evbuffer *tmp;
	size_t passed;		      /* bytes in input passed and not yet read by evhttp */
	uint64_t body_left;	      /* body bytes of the current request still to pass */
	uint64_t skip_left;	      /* body bytes of a body-less method, dropped */
	size_t max_head;
	uint64_t max_body;
	bool refused;
	struct bufferevent *bev;      /* the connection's, for the deadline */
	struct event *deadline;	      /* limits.header_ or body_timeout_seconds */
	bool timing;		      /* the deadline is armed */
	bool timing_body;	      /* ...for a request body (else for a head) */
	bool head_passed;	      /* a complete head went to evhttp in this round */
	bool any_passed;	      /* evhttp was ever given a head (or a stand-in) */
};

static int gateway_http_guard_idx = -1; /* SSL ex_data: the connection's guard */

/* 1 if c may appear in a header name or method (RFC 9110 token). */
static int gw_tchar(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* What the head's fields say about the body, collected by gw_head_check. */
struct gw_head {
	bool may_have_body; /* a method evhttp reads a body of */
	int n_clen;
	uint64_t clen;
	bool clen_bad;
	bool te;
	bool expect_bad;
};

/* The value of a field (after "name:") trimmed of SP/HTAB, as [v, v+n). */
static void gw_trim(const char **v, size_t *n)
{
	while (*n > 0 && (**v == ' ' || **v == '\t')) {
		(*v)++;
		(*n)--;
	}
	while (*n > 0 && ((*v)[*n - 1] == ' ' || (*v)[*n - 1] == '\t'))
		(*n)--;
}

/* Check the request line "METHOD SP target SP HTTP/1.x"; -1 or a GW_REFUSE_* index. */
static int gw_request_line(const char *l, size_t n, struct gw_head *h)
{
	static const char *const methods[] = { "GET",	  "HEAD",    "POST",  "PUT",  "DELETE",
					       "OPTIONS", "CONNECT", "TRACE", "PATCH" };
	const char *sp1 = memchr(l, ' ', n), *sp2, *t;
	size_t mlen, tlen, vlen, i;
	char *target;
	struct evhttp_uri *u;
	bool known = false;

	if (sp1 == NULL || sp1 == l)
		return GW_REFUSE_LINE;
	mlen = (size_t)(sp1 - l);
	for (i = 0; i < mlen; i++)
		if (!gw_tchar((unsigned char)l[i]))
			return GW_REFUSE_LINE;
	t = sp1 + 1;
	sp2 = memchr(t, ' ', n - (size_t)(t - l));
	if (sp2 == NULL || sp2 == t)
		return GW_REFUSE_LINE;
	tlen = (size_t)(sp2 - t);
	vlen = n - (size_t)(sp2 + 1 - l);
	if (vlen != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
	    (sp2[8] != '0' && sp2[8] != '1')) {
		if (vlen == 8 && memcmp(sp2 + 1, "HTTP/", 5) == 0 && sp2[7] == '.')
			return GW_REFUSE_VERSION;
		return GW_REFUSE_LINE;
	}
	for (i = 0; i < tlen; i++)
		if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
			return GW_REFUSE_LINE;
	if (t[0] != '/' ||
	    (tlen >= strlen(GATEWAY_REFUSED_PREFIX) &&
	     memcmp(t, GATEWAY_REFUSED_PREFIX, strlen(GATEWAY_REFUSED_PREFIX)) == 0))
		return GW_REFUSE_LINE;
	if ((target = strndup(t, tlen)) == NULL)
		return GW_REFUSE_LINE;
	u = evhttp_uri_parse_with_flags(target, EVHTTP_URI_NONCONFORMANT);
	free(target);
	if (u == NULL)
		return GW_REFUSE_LINE;
	evhttp_uri_free(u);
	for (i = 0; i < sizeof methods / sizeof methods[0]; i++)
		if (strlen(methods[i]) == mlen && memcmp(l, methods[i], mlen) == 0)
			known = true;
	if (!known)
		return GW_REFUSE_METHOD;
	/* libevent 2.1.12 reads a body for every method but HEAD and TRACE. */
	h->may_have_body = !(mlen == 4 && memcmp(l, "HEAD", 4) == 0) &&
			   !(mlen == 5 && memcmp(l, "TRACE", 5) == 0);
	return -1;
}

/* Check one field line "name: value"; -1 or a GW_REFUSE_* index. */
static int gw_field_line(const char *l, size_t n, struct gw_head *h)
{
	const char *colon = memchr(l, ':', n), *v;
	size_t nlen, vlen, i;
	uint64_t x = 0;

	if (colon == NULL || colon == l)
		return GW_REFUSE_FIELD; /* also obs-fold: a line starting with SP or HTAB */
	nlen = (size_t)(colon - l);
	for (i = 0; i < nlen; i++)
		if (!gw_tchar((unsigned char)l[i]))
			return GW_REFUSE_FIELD;
	v = colon + 1;
	vlen = n - nlen - 1;
	for (i = 0; i < vlen; i++) {
		unsigned char c = (unsigned char)v[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return GW_REFUSE_FIELD;
	}
	gw_trim(&v, &vlen);
	if (nlen == 14 && strncasecmp(l, "Content-Length", 14) == 0) {
		h->n_clen++;
		if (vlen == 0 || vlen > 18)
			h->clen_bad = true;
		for (i = 0; i < vlen; i++) {
			if (v[i] < '0' || v[i] > '9')
				h->clen_bad = true;
			else
				x = x * 10 + (uint64_t)(v[i] - '0');
		}
		h->clen = x;
	} else if (nlen == 17 && strncasecmp(l, "Transfer-Encoding", 17) == 0) {
		h->te = true;
	} else if (nlen == 6 && strncasecmp(l, "Expect", 6) == 0) {
		if (!(vlen == 12 && strncasecmp(v, "100-continue", 12) == 0))
			h->expect_bad = true;
	}
	return -1;
}

/*
 * Check a complete head (request line, fields, empty line) of n bytes at p, the
 * way evhttp will read it but stricter: -1 with *body_r / *skip_r (body bytes to
 * pass / to drop), or the GW_REFUSE_* index of the refusal.
 */
static int gw_head_check(const char *p, size_t n, uint64_t max_body, uint64_t *body_r,
			 uint64_t *skip_r)
{
	struct gw_head h = { 0 };
	size_t off = 0, len;
	bool first = true;
	int r;

	*body_r = *skip_r = 0;
	while (off < n) {
		const char *l = p + off, *nl = memchr(l, '\n', n - off);

		if (nl == NULL)
			return GW_REFUSE_FIELD;
		len = (size_t)(nl - l);
		off += len + 1;
		if (len > 0 && l[len - 1] == '\r')
			len--;
		if (memchr(l, '\r', len) != NULL || memchr(l, '\0', len) != NULL)
			return first ? GW_REFUSE_LINE : GW_REFUSE_FIELD;
		if (len == 0)
			break; /* the empty line ending the head */
		r = first ? gw_request_line(l, len, &h) : gw_field_line(l, len, &h);
		if (r >= 0)
			return r;
		first = false;
	}
	if (h.te)
		return GW_REFUSE_LENGTH;
	if (h.n_clen > 1 || h.clen_bad)
		return GW_REFUSE_CLEN;
	if (h.expect_bad)
		return GW_REFUSE_EXPECT;
	if (h.clen > max_body)
		return GW_REFUSE_BODY_SIZE;
	if (h.may_have_body)
		*body_r = h.clen;
	else
		*skip_r = h.clen; /* evhttp reads none: dropped, not taken for a request */
	return -1;
}

/* Move n bytes from the front of g->hold to evhttp's input. */
static void gw_guard_pass(struct gateway_guard *g, size_t n)
{
	if (n == 0)
		return;
	evbuffer_remove_buffer(g->hold, g->input, n);
	g->passed += n;
}

/* Refuse: drop what is held and whatever comes later; evhttp gets a stand-in request
 * that gateway_http_dispatch answers with the problem (and Connection: close). */
static void gw_guard_refuse(struct gateway_guard *g, int why)
{
	size_t before = evbuffer_get_length(g->input);

	evbuffer_drain(g->hold, evbuffer_get_length(g->hold));
	evbuffer_add_printf(g->input,
			    "GET " GATEWAY_REFUSED_PREFIX "%d HTTP/1.1\r\nHost: refused\r\n"
			    "Connection: close\r\n\r\n",
			    why);
	g->passed += evbuffer_get_length(g->input) - before;
	g->refused = g->any_passed = true;
}

/* Pass on from g->hold every complete head (checked) and body; keep the rest. */
static void gw_guard_run(struct gateway_guard *g)
{
	for (;;) {
		size_t len = evbuffer_get_length(g->hold), scan, end = 0;
		const char *p, *a, *b;
		uint64_t body, skip;
		int why;

		if (g->skip_left > 0) {
			size_t n = len < g->skip_left ? len : (size_t)g->skip_left;

			evbuffer_drain(g->hold, n);
			g->skip_left -= n;
			if (g->skip_left > 0)
				return;
			continue;
		}
		if (g->body_left > 0) {
			size_t n = len < g->body_left ? len : (size_t)g->body_left;

			gw_guard_pass(g, n);
			g->body_left -= n;
			if (g->body_left > 0)
				return;
			continue;
		}
		if (len == 0)
			return;
		/* Empty lines before a request line are ignored (RFC 9112 2.2). */
		p = (const char *)evbuffer_pullup(g->hold, len < 2 ? (ev_ssize_t)len : 2);
		if (p[0] == '\n' || (len >= 2 && p[0] == '\r' && p[1] == '\n')) {
			evbuffer_drain(g->hold, p[0] == '\n' ? 1 : 2);
			continue;
		}
		scan = len < g->max_head ? len : g->max_head;
		if ((p = (const char *)evbuffer_pullup(g->hold, (ev_ssize_t)scan)) == NULL)
			return;
		a = memmem(p, scan, "\n\r\n", 3);
		b = memmem(p, scan, "\n\n", 2);
		if (a != NULL && (b == NULL || a < b))
			end = (size_t)(a - p) + 3;
		else if (b != NULL)
			end = (size_t)(b - p) + 2;
		if (end == 0) {
			if (len >= g->max_head)
				gw_guard_refuse(g, GW_REFUSE_HEAD_SIZE);
			return; /* wait for the rest of the head */
		}
		if ((why = gw_head_check(p, end, g->max_body, &body, &skip)) >= 0) {
			gw_guard_refuse(g, why);
			return;
		}
		gw_guard_pass(g, end);
		g->head_passed = g->any_passed = true;
		g->body_left = body;
		g->skip_left = skip;
	}
}

static unsigned long gw_deadline_closed; /* connections closed at a head deadline */
static unsigned long gw_body_deadline_closed; /* ...at a body deadline */

/* The configured deadline of a head (limits.header_timeout_seconds, default 10) or
 * of a body (limits.body_timeout_seconds, default 60), in seconds. */
static int gw_guard_period(bool body)
{
	const struct gateway_config *cfg = gateway_http_gw != NULL ? gateway_http_gw->cfg : NULL;
	int s = cfg == NULL ? 0 : body ? cfg->body_timeout_seconds : cfg->header_timeout_seconds;

	return s > 0 ? s : body ? 60 : 10;
}

/* Arm g's deadline for a head or a body, from now. */
static void gw_guard_arm(struct gateway_guard *g, bool body)
{
	struct timeval tv = { gw_guard_period(body), 0 };

	if (evtimer_add(g->deadline, &tv) != 0)
		log_fatal("cannot arm a request deadline");
	g->timing = true;
	g->timing_body = body;
}

/* After a round of the guard: a head passed, a body complete or a refusal ends the
 * deadline running; then a body still to come, or bytes of a next head waiting,
 * start a new one (an armed one keeps running: same head, same body). */
static void gw_guard_clock(struct gateway_guard *g)
{
	bool in_body = !g->refused && (g->body_left > 0 || g->skip_left > 0);
	bool mid_head = !g->refused && !in_body && evbuffer_get_length(g->hold) > 0;

	if (g->timing && (g->refused || g->head_passed || (g->timing_body && !in_body))) {
		evtimer_del(g->deadline);
		g->timing = false;
	}
	g->head_passed = false;
	if (!g->timing && (in_body || mid_head))
		gw_guard_arm(g, in_body);
}

/* Whether the connection is TLS with its handshake complete. */
static bool gw_guard_handshaken(const struct gateway_guard *g)
{
	SSL *ssl = bufferevent_openssl_get_ssl(g->bev);

	return ssl != NULL && SSL_is_init_finished(ssl);
}

/* The deadline passed: no complete head (or no TLS handshake, or no complete body)
 * in time. The first head of a TLS connection is answered 408 (a stand-in request,
 * evhttp's read callback called: it waits for a request line, having read nothing).
 * Otherwise fail the connection through evhttp's event callback, as its own timeout
 * does; g is freed with the connection before this returns. The plain redirector
 * is always failed so: evhttp never read a stand-in handed to it there (a first head
 * dripped to it was neither answered nor closed), and a redirect has nothing a slow
 * client needs. */
static void gw_guard_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct gateway_guard *g = arg;
	bufferevent_data_cb readcb = NULL;
	bufferevent_event_cb eventcb = NULL;
	void *cbarg = NULL;

	(void)fd, (void)what;
	g->timing = false;
	if (g->refused)
		return; /* its stand-in is answered, with Connection: close */
	bufferevent_getcb(g->bev, &readcb, NULL, &eventcb, &cbarg);
	if (eventcb == NULL || cbarg == NULL)
		return; /* never expected: evhttp sets its callbacks at accept */
	if (g->timing_body) {
		if (gw_body_deadline_closed++ % 1000 == 0)
			log_event(LOG_WARN, "connection closed: no complete request body in time",
				  LF_INT("body_timeout_seconds", gw_guard_period(true)),
				  LF_INT("closed_total", gw_body_deadline_closed));
	} else if (gw_deadline_closed++ % 1000 == 0) {
		log_event(LOG_WARN, "connection closed: no complete request head in time",
			  LF_INT("header_timeout_seconds", gw_guard_period(false)),
			  LF_INT("closed_total", gw_deadline_closed));
	}
	if (!g->timing_body && !g->any_passed && g->passed == 0 && readcb != NULL &&
	    gw_guard_handshaken(g)) {
		evbuffer_cb_clear_flags(g->input, g->ent, EVBUFFER_CB_ENABLED);
		gw_guard_refuse(g, GW_REFUSE_TIMEOUT);
		evbuffer_cb_set_flags(g->input, g->ent, EVBUFFER_CB_ENABLED);
		bufferevent_trigger(g->bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS);
		return;
	}
	eventcb(g->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, cbarg);
}

/*
 * Called by libevent on every change of the TLS bufferevent's input, before evhttp's
 * read callback: new bytes are taken aside into g->hold and passed back only as
 * complete, checked heads and their bodies. So evhttp never parses anything it would
 * answer with its own page (which has no security headers): what it would reject,
 * the guard refuses, and the stand-in request it passes instead is answered by
 * gateway_http_dispatch with a problem document and every header. Bytes evhttp read
 * (deleted from the input) only update the count.
 */
static void gateway_http_guard_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
				  void *arg)
{
	struct gateway_guard *g = arg;
	size_t fresh;

	g->passed = info->n_deleted < g->passed ? g->passed - info->n_deleted : 0;
	if (info->n_added == 0)
		return;
	if (g->passed > evbuffer_get_length(buf))
		g->passed = evbuffer_get_length(buf); /* never expected; keeps the sums sane */
	evbuffer_cb_clear_flags(buf, g->ent, EVBUFFER_CB_ENABLED);
	if (g->refused) {
		fresh = evbuffer_get_length(buf) - g->passed;
		evbuffer_remove_buffer(buf, g->tmp, g->passed);
		evbuffer_drain(buf, fresh);
		evbuffer_add_buffer(buf, g->tmp);
	} else {
		/* Everything after the passed bytes is new: set it aside, keep the order. */
		evbuffer_remove_buffer(buf, g->tmp, g->passed);
		evbuffer_add_buffer(g->hold, buf);
		evbuffer_add_buffer(buf, g->tmp);
		gw_guard_run(g);
	}
	gw_guard_clock(g);
	evbuffer_cb_set_flags(buf, g->ent, EVBUFFER_CB_ENABLED);
}

/* SSL ex_data free: the connection is gone. */
static void gateway_http_guard_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
				    long argl, void *argp)
{
	struct gateway_guard *g = ptr;

	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	if (g == NULL)
		return;
	if (g->ent != NULL)
		evbuffer_remove_cb_entry(g->input, g->ent);
	if (g->deadline != NULL)
		event_free(g->deadline);
	evbuffer_free(g->hold);
	evbuffer_free(g->tmp);
	free(g);
}

/* A new guard on bev's input, passing heads up to max_head bytes and bodies up to
 * max_body; its head deadline runs from now. */
static struct gateway_guard *gw_guard_new(struct bufferevent *bev, size_t max_head,
					  uint64_t max_body)
{
	struct gateway_guard *g = calloc(1, sizeof *g);

	if (g == NULL || (g->hold = evbuffer_new()) == NULL || (g->tmp = evbuffer_new()) == NULL)
		log_fatal("out of memory");
	g->bev = bev;
	g->input = bufferevent_get_input(bev);
	if ((g->deadline = evtimer_new(bufferevent_get_base(bev), gw_guard_deadline, g)) == NULL)
		log_fatal("out of memory");
	gw_guard_arm(g, false);
	g->max_head = max_head;
	g->max_body = max_body;
	if ((g->ent = evbuffer_add_cb(g->input, gateway_http_guard_cb, g)) == NULL)
		log_fatal("cannot guard a connection");
	return g;
}

/* Make the guard's SSL ex_data index (once per process). 0, or -1 and *error_r. */
int gateway_guard_init(const char **error_r)
{
	if (gateway_http_guard_idx < 0 &&
	    (gateway_http_guard_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL,
							   gateway_http_guard_free)) < 0) {
		*error_r = "SSL_get_ex_new_index failed";
		return -1;
	}
	return 0;
}

/*
 * Put a guard in front of a TLS bufferevent that evhttp will read (from any bevcb):
 * it lives as long as the connection's SSL. Its refusals reach the listener's
 * callback as stand-in requests: see gateway_guard_refused.
 */
void gateway_guard_tls(struct bufferevent *bev, size_t max_head, uint64_t max_body)
{
	struct gateway_guard *g = gw_guard_new(bev, max_head, max_body);

	if (gateway_http_guard_idx < 0 ||
	    SSL_set_ex_data(bufferevent_openssl_get_ssl(bev), gateway_http_guard_idx, g) != 1)
		log_fatal("cannot guard a connection");
}

/* evhttp's bevcb for HTTPS: the TLS bufferevent (gateway_tls.c) with its guard. */
static struct bufferevent *gateway_http_bevcb(struct event_base *base, void *arg)
{
	struct gateway *gw = arg;
	struct bufferevent *bev = gateway_tls_bevcb(base, arg);

	gateway_guard_tls(bev, (size_t)gw->cfg->max_header_bytes,
			  (uint64_t)gateway_http_max_body(gw->cfg));
	return bev;
}

/* evhttp frees a plain connection: its guard goes first (the input is still there). */
static void gw_plain_close(struct evhttp_connection *evcon, void *arg)
{
	(void)evcon;
	gateway_http_guard_free(NULL, arg, NULL, 0, 0, NULL);
}

/*
 * A plain connection's first bytes. A socket bufferevent has no SSL to hang the
 * guard on, and libevent 2.1 tells of a connection's end only through the
 * evhttp_connection's close callback; the connection exists once evhttp has set the
 * bufferevent's callbacks (their argument), that is before any byte is read. So the
 * guard is made here, freed by that close callback, and takes these first bytes.
 * A connection that never sends anything costs no guard.
 */
static void gw_plain_first_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
			      void *arg)
{
	struct bufferevent *bev = arg;
	void *cbarg = NULL;
	struct gateway_guard *g;

	if (info->n_added == 0)
		return;
	bufferevent_getcb(bev, NULL, NULL, NULL, &cbarg);
	if (cbarg == NULL || gateway_http_gw == NULL)
		log_fatal("plain connection without evhttp");
	/* Not run again in this round: libevent saved the next entry before calling us. */
	if (evbuffer_remove_cb(buf, gw_plain_first_cb, bev) != 0)
		log_fatal("cannot guard a connection");
	g = gw_guard_new(bev, (size_t)gateway_http_gw->cfg->max_header_bytes, 0);
	evhttp_connection_set_closecb(cbarg, gw_plain_close, g);
	gateway_http_guard_cb(buf, info, g); /* nothing was passed yet: all of buf is new */
}

/* evhttp's bevcb for the plain redirector: a socket bufferevent whose input is guarded
 * (no body is taken: the redirector needs none). */
static struct bufferevent *gateway_http_plain_bevcb(struct event_base *base, void *arg)
{
	struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);

	(void)arg;
	if (bev == NULL || evbuffer_add_cb(bufferevent_get_input(bev), gw_plain_first_cb, bev) == NULL)
		log_fatal("cannot create a plain bufferevent");
	return bev;
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
	if (gateway_guard_init(error_r) < 0)
		goto fail;
	evhttp_set_bevcb(gw->https, gateway_http_bevcb, gw);
	evhttp_set_gencb(gw->https, gateway_http_dispatch, gw);
	gateway_http_limits(gw->https, gw->cfg, gateway_http_max_body(gw->cfg));
	if (gw->cfg->http_listen != NULL) {
		gw->http = gateway_http_listen(gw, "http.listen", gw->cfg->http_listen,
					       &gw->http_sock, &port, error_r);
		if (gw->http == NULL)
			goto fail;
		evhttp_set_bevcb(gw->http, gateway_http_plain_bevcb, gw);
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
