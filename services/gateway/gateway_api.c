/*
 * gateway_api — the REST API pipeline: every request on a tenant host goes
 * through these steps, each of which may answer and stop:
 *
 *   1. host     "<slug>.<region>.<domain>": else 404 (only /healthz lives elsewhere)
 *   2. limits   rate-limit buckets in Redis (gateway_ratelimit.c): per source, per
 *               source and tenant, per credential, login routes per source and
 *               tenant; 429 + Retry-After; RateLimit-* on every answer from here on.
 *               Redis down: login routes fail closed (503), the others open (logged).
 *   3. tenant   tenant.resolve on q:auth (cached, positive and negative): unknown 404;
 *               homed elsewhere 421 (API) or 307 (ROUTE_BROWSER), computed locally.
 *   4. route    method + path against every table: 404, or 405 with Allow.
 *   5. browser  Origin, when present, must be the tenant's own https origin, and
 *               Sec-Fetch-Site must not be cross-site (except GET on browser
 *               routes: SSO arrives by a cross-site navigation): 403.
 *   6. identity unless ROUTE_PUBLIC: Bearer or the ward_session cookie (+ X-CSRF-Token
 *               on state-changing requests) → auth.authenticate (cached ≤ 5 s); 401.
 *               A session that must change its password or set up TOTP reaches
 *               only ROUTE_PENDING_OK routes: 403 naming what to do.
 *   7. request  body (JSON, or a form on ROUTE_FORM) + path + query parameters + ip and
 *               user_agent → the route's request message (pbjson): 400/413/415/422.
 *   8. call     queue_request to the route's stream with tenant, principal,
 *               Idempotency-Key and request id; the reply message → JSON (session
 *               cookie set or cleared), a ward.Problem → problem+json (RFC 6749 shape
 *               for ROUTE_FORM).
 *
 * Lifetime: one struct gwreq per request, with at most one asynchronous step in
 * flight. Its evhttp request can disappear under it (connection freed): the close
 * callback then clears g->req, and the step's callback frees g without answering.
 */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "auth.pb-c.h"
#include "daemon.h"
#include "gateway.h"
#include "gateway_routes.h"
#include "log.h"
#include "pbjson.h"
#include "queue.h"

#define GW_COOKIE "ward_session"
#define GW_TENANT_ID_MAX 64
#define GW_IDEMPOTENCY_MAX 255
#define GW_USER_AGENT_MAX 512
#define GW_REPLY_MAX ENVELOPE_MAX_PAYLOAD
#define GW_CACHE_SLOTS 4096
#define GW_IP_MAX 64

struct gwreq {
	struct gwreq *next, **prevp; /* in gw->requests; prevp NULL once orphaned */
	struct gateway *gw;	     /* NULL once orphaned */
	struct evhttp_request *req;  /* NULL once the connection is gone */
	struct evhttp_connection *evcon;
	struct gateway_reqinfo info;
	bool busy; /* an asynchronous step is in flight */

	const struct gateway_route *route;
	int route_status; /* 0 matched, 404, 405 */
	char allow[96];
	struct gateway_param params[GATEWAY_PATH_PARAMS];
	size_t n_params;
	bool state_changing;

	char host[GATEWAY_HOST_MAX + 8];
	char slug[GATEWAY_SLUG_MAX + 1], region[GATEWAY_REGION_MAX + 1];
	char ip[GW_IP_MAX];
	char tenant_id[GW_TENANT_ID_MAX + 1];

	char cred[GATEWAY_CRED_MAX + 1]; /* bearer or cookie value (wiped) */
	bool cookie;			 /* cred came from the session cookie */
	char csrf[256];
	char cred_hash[65];

	bool have_rl;
	struct gateway_rl_result rl;
	Ward__AuthenticateReply *auth;
};

/* ============================================================ helpers */

/* The public HTTPS port of a region: region_ports first (any region), then
 * regions.<us|eu|uk>.https_port; 443 for a region named nowhere. */
uint16_t gateway_region_port(const struct gateway_config *cfg, const char *region)
{
	size_t rn = strlen(region);

	for (size_t i = 0; i < cfg->region_ports.n; i++) {
		const char *it = cfg->region_ports.items[i];

		if (strncmp(it, region, rn) == 0 && it[rn] == ' ')
			return (uint16_t)strtoul(it + rn + 1, NULL, 10);
	}
	if (strcmp(region, "us") == 0)
		return (uint16_t)cfg->port_us;
	if (strcmp(region, "eu") == 0)
		return (uint16_t)cfg->port_eu;
	if (strcmp(region, "uk") == 0)
		return (uint16_t)cfg->port_uk;
	return 443;
}

/* Unlink g from the gateway's in-flight list. */
static void gwreq_unlink(struct gwreq *g)
{
	if (g->prevp == NULL)
		return;
	*g->prevp = g->next;
	if (g->next != NULL)
		g->next->prevp = g->prevp;
	g->next = NULL;
	g->prevp = NULL;
}

/* Stop watching the connection. */
static void gwreq_detach(struct gwreq *g)
{
	if (g->evcon != NULL)
		evhttp_connection_set_closecb(g->evcon, NULL, NULL);
	g->evcon = NULL;
}

/* Free g and wipe what it held. */
static void gwreq_free(struct gwreq *g)
{
	gwreq_unlink(g);
	gwreq_detach(g);
	if (g->auth != NULL)
		ward__authenticate_reply__free_unpacked(g->auth, NULL);
	OPENSSL_cleanse(g, sizeof *g);
	free(g);
}

/*
 * The connection is being freed. If evhttp detached the request first (client
 * gone while we worked: evcon NULL), it waits for a reply that will free it, so
 * keep it; if the whole server is being freed, the request goes with it.
 */
static void gwreq_conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct gwreq *g = arg;

	if (g->req != NULL && evhttp_request_get_connection(g->req) != NULL)
		g->req = NULL;
	g->evcon = NULL;
}

/* Add the RateLimit-* headers (IETF draft) of the worst bucket, if checked. */
static void gwreq_rl_headers(struct gwreq *g)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(g->req);
	char v[32];

	if (!g->have_rl)
		return;
	snprintf(v, sizeof v, "%d", g->rl.limit);
	evhttp_add_header(h, "RateLimit-Limit", v);
	snprintf(v, sizeof v, "%d", g->rl.remaining);
	evhttp_add_header(h, "RateLimit-Remaining", v);
	snprintf(v, sizeof v, "%d", g->rl.reset_s);
	evhttp_add_header(h, "RateLimit-Reset", v);
}

/* Answer (if the request is still there) and free g. Takes nothing over. */
static void gwreq_answer(struct gwreq *g, int status, const char *ctype, const char *body,
			 size_t len)
{
	if (g->req != NULL) {
		gwreq_rl_headers(g);
		gateway_http_reply(g->req, &g->info, status, ctype, body, len);
	}
	gwreq_free(g);
}

/* Answer with a problem object (consumed) and free g. */
static void gwreq_problem_obj(struct gwreq *g, int status, json_t *obj)
{
	char *body = obj != NULL ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

	json_decref(obj);
	if (body == NULL) {
		gwreq_answer(g, 500, NULL, NULL, 0);
		return;
	}
	gwreq_answer(g, status, "application/problem+json", body, strlen(body));
	free(body);
}

/* A problem object with type, title, status, detail (detail may be NULL). */
static json_t *gw_problem(int status, const char *title, const char *detail)
{
	json_t *o = json_pack("{s:s, s:s, s:i}", "type", "about:blank", "title", title, "status",
			      status);

	if (o != NULL && detail != NULL && detail[0] != '\0')
		json_object_set_new(o, "detail", json_string(detail));
	return o;
}

/* Answer with a plain problem and free g. */
static void gwreq_problem(struct gwreq *g, int status, const char *title, const char *detail)
{
	gwreq_problem_obj(g, status, gw_problem(status, title, detail));
}

/* Add a response header if the request is still there. */
static void gwreq_header(struct gwreq *g, const char *name, const char *value)
{
	if (g->req != NULL)
		evhttp_add_header(evhttp_request_get_output_headers(g->req), name, value);
}

/* A request header, or NULL. */
static const char *gwreq_in(struct gwreq *g, const char *name)
{
	return evhttp_find_header(evhttp_request_get_input_headers(g->req), name);
}

/* An asynchronous step finished: false (and g freed) if nobody waits any more. */
static bool gwreq_resume(struct gwreq *g)
{
	g->busy = false;
	if (g->req == NULL || g->gw == NULL || g->gw->stopping) {
		if (g->req != NULL) {
			gwreq_problem(g, 503, "Service Unavailable", "The gateway is shutting down.");
			return false;
		}
		gwreq_free(g);
		return false;
	}
	return true;
}

/* The reply callback's status as a problem: timeouts 504, the rest 503. */
static void gwreq_transport_problem(struct gwreq *g, int status, const char *what)
{
	log_set_request_id(g->info.id);
	log_event(LOG_WARN, "upstream failed", LF_STR("step", what), LF_INT("status", status));
	log_set_request_id(NULL);
	if (status == QUEUE_ETIMEDOUT)
		gwreq_problem(g, 504, "Gateway Timeout", "The service did not answer in time.");
	else
		gwreq_problem(g, 503, "Service Unavailable", "The service is unavailable.");
}

/* ============================================================ 8. call */

/* The session cookie: Secure, HttpOnly, SameSite=Strict, whole host. */
static void gwreq_set_cookie(struct gwreq *g, const char *token, long long max_age)
{
	char v[GATEWAY_CRED_MAX + 128];
	char age[40] = "";

	if (max_age > 0)
		snprintf(age, sizeof age, "; Max-Age=%lld", max_age);
	if (token == NULL)
		snprintf(v, sizeof v, GW_COOKIE "=; Path=/; Max-Age=0; Secure; HttpOnly; "
					       "SameSite=Strict");
	else
		snprintf(v, sizeof v, GW_COOKIE "=%s; Path=/%s; Secure; HttpOnly; SameSite=Strict",
			 token, age);
	gwreq_header(g, "Set-Cookie", v);
	OPENSSL_cleanse(v, sizeof v);
}

/* 1 if s is a session token we may put in a Set-Cookie header (cookie-octets). */
static int gw_cookie_value_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > GATEWAY_CRED_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || strchr("-._~+/=", s[i]) != NULL))
			return 0;
	return 1;
}

/* An error reply from the service: its ward.Problem as problem+json (or RFC 6749). */
static void gwreq_error_reply(struct gwreq *g, int status, const Ward__Envelope *env,
			      const uint8_t *payload, size_t len)
{
	Ward__Problem *p = NULL;
	const char *title, *detail;
	json_t *o;
	char ra[16];

	if (status < 400 || status > 599)
		status = 502;
	if (payload != NULL && len > 0 && len <= GW_REPLY_MAX)
		p = ward__problem__unpack(NULL, len, payload);
	title = p != NULL && p->title != NULL && p->title[0] != '\0'
		    ? p->title
		    : (env != NULL && env->error != NULL && env->error[0] != '\0' ? env->error
										  : "Error");
	detail = p != NULL ? p->detail : NULL;
	if (p != NULL && p->retry_after > 0) {
		snprintf(ra, sizeof ra, "%d", p->retry_after);
		gwreq_header(g, "Retry-After", ra);
	}
	if (g->route->flags & ROUTE_FORM) {
		/* RFC 6749 5.2: {"error": code, "error_description": text}. */
		o = json_pack("{s:s}", "error", title);
		if (o != NULL && detail != NULL && detail[0] != '\0')
			json_object_set_new(o, "error_description", json_string(detail));
		if (status == 401)
			gwreq_header(g, "WWW-Authenticate", "Basic realm=\"ward\"");
		if (p != NULL)
			ward__problem__free_unpacked(p, NULL);
		{
			char *body = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER)
					       : NULL;

			json_decref(o);
			gwreq_header(g, "Pragma", "no-cache");
			if (body == NULL)
				gwreq_answer(g, 500, NULL, NULL, 0);
			else
				gwreq_answer(g, status, "application/json", body, strlen(body));
			free(body);
		}
		return;
	}
	o = gw_problem(status, title, detail);
	if (o != NULL && p != NULL && p->n_errors > 0) {
		json_t *errs = json_array();

		for (size_t i = 0; i < p->n_errors && errs != NULL; i++)
			json_array_append_new(errs, json_pack("{s:s, s:s}", "field",
							      p->errors[i]->field, "message",
							      p->errors[i]->message));
		json_object_set_new(o, "errors", errs);
	}
	if (status == 401)
		gwreq_header(g, "WWW-Authenticate", "Bearer");
	if (p != NULL)
		ward__problem__free_unpacked(p, NULL);
	gwreq_problem_obj(g, status, o);
}

/* A string field of msg by name, or NULL. */
static const char *gw_msg_string(const ProtobufCMessage *msg, const char *name)
{
	const ProtobufCFieldDescriptor *f = pbjson_field(msg->descriptor, name);

	if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
		return NULL;
	return *(char *const *)((const char *)msg + f->offset);
}

/* 1 if s is a media type we will send as Content-Type: type/subtype, no HTML, no odd bytes. */
static int gw_media_type_ok(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	if (n == 0 || n > 127 || strchr(s, '/') == NULL || strncasecmp(s, "text/html", 9) == 0 ||
	    strcasestr(s, "xml") != NULL || strcasestr(s, "javascript") != NULL)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || strchr("/+-.;= ", s[i]) != NULL))
			return 0;
	return 1;
}

/*
 * ROUTE_RAW_REPLY: the reply message carries content (bytes), content_type and
 * filename; the body is the content, sent as an attachment (never rendered by
 * the browser: nosniff and the CSP come with every response).
 */
static void gwreq_raw_reply(struct gwreq *g, const uint8_t *payload, size_t len)
{
	const struct gateway_route *r = g->route;
	ProtobufCMessage *msg = NULL;
	const ProtobufCFieldDescriptor *cf;
	const ProtobufCBinaryData *content;
	const char *ctype, *fname;
	char disp[1024];
	size_t o;

	if (r->reply == NULL || len > GW_REPLY_MAX ||
	    (msg = protobuf_c_message_unpack(r->reply, NULL, len, payload)) == NULL ||
	    (cf = pbjson_field(r->reply, "content")) == NULL || cf->type != PROTOBUF_C_TYPE_BYTES) {
		pbjson_free(msg);
		gwreq_problem(g, 502, "Bad Gateway", "The service sent a malformed reply.");
		return;
	}
	content = (const ProtobufCBinaryData *)((const char *)msg + cf->offset);
	ctype = gw_msg_string(msg, "content_type");
	fname = gw_msg_string(msg, "filename");
	/* RFC 6266 / 8187: filename*=UTF-8''<percent-encoded>. */
	o = (size_t)snprintf(disp, sizeof disp, "attachment; filename*=UTF-8''");
	for (size_t i = 0; fname != NULL && fname[i] != '\0' && o + 4 < sizeof disp; i++) {
		unsigned char c = (unsigned char)fname[i];

		if (isalnum(c) || strchr("!#$&+-.^_`|~", c) != NULL)
			disp[o++] = (char)c;
		else
			o += (size_t)snprintf(disp + o, sizeof disp - o, "%%%02X", c);
	}
	disp[o] = '\0';
	if (fname == NULL || fname[0] == '\0')
		snprintf(disp, sizeof disp, "attachment");
	gwreq_header(g, "Content-Disposition", disp);
	if (content->len == 0) {
		pbjson_free(msg);
		gwreq_answer(g, r->success_status ? r->success_status : 200, NULL, NULL, 0);
		return;
	}
	gwreq_answer(g, r->success_status ? r->success_status : 200,
		     gw_media_type_ok(ctype) ? ctype : "application/octet-stream",
		     (const char *)content->data, content->len);
	protobuf_c_message_free_unpacked(msg, NULL);
}

/* The service answered the routed request. */
static void gwreq_on_reply(void *arg, int status, const Ward__Envelope *env,
			   const uint8_t *payload, size_t len)
{
	struct gwreq *g = arg;
	const struct gateway_route *r = g->route;
	ProtobufCMessage *msg = NULL;
	json_t *obj = NULL;
	char *body = NULL;

	if (!gwreq_resume(g))
		return;
	if (status < 0) {
		gwreq_transport_problem(g, status, r->rpc);
		return;
	}
	if (status != 0) {
		gwreq_error_reply(g, status, env, payload, len);
		return;
	}
	if (r->flags & ROUTE_END_SESSION)
		gwreq_set_cookie(g, NULL, 0);
	if (r->flags & ROUTE_RAW_REPLY) {
		gwreq_raw_reply(g, payload, len);
		return;
	}
	if (r->reply == NULL) {
		gwreq_answer(g, 204, NULL, NULL, 0);
		return;
	}
	if (len > GW_REPLY_MAX ||
	    (msg = protobuf_c_message_unpack(r->reply, NULL, len, payload)) == NULL ||
	    (obj = pbjson_render(msg)) == NULL) {
		pbjson_free(msg);
		gwreq_problem(g, 502, "Bad Gateway", "The service sent a malformed reply.");
		return;
	}
	if (r->flags & ROUTE_SET_SESSION) {
		/* The token goes into the cookie, never into the JSON body. */
		const ProtobufCFieldDescriptor *f = pbjson_field(r->reply, "session_token");
		const ProtobufCFieldDescriptor *e = pbjson_field(r->reply, "expires_at_ms");
		const char *tok = f != NULL && f->type == PROTOBUF_C_TYPE_STRING
				      ? *(char *const *)((const char *)msg + f->offset)
				      : NULL;
		long long max_age = 0;

		if (e != NULL && e->type == PROTOBUF_C_TYPE_INT64) {
			int64_t at = *(const int64_t *)((const char *)msg + e->offset);

			if (at > 0)
				max_age = (at - envelope_now_ms()) / 1000;
		}
		json_object_del(obj, "session_token");
		if (tok != NULL && tok[0] != '\0') {
			if (!gw_cookie_value_ok(tok)) {
				json_decref(obj);
				pbjson_free(msg);
				gwreq_problem(g, 502, "Bad Gateway",
					      "The service sent an unusable session.");
				return;
			}
			gwreq_set_cookie(g, tok, max_age > 0 ? max_age : 0);
		}
	}
	pbjson_free(msg);
	body = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(obj);
	if (body == NULL) {
		gwreq_answer(g, 500, NULL, NULL, 0);
		return;
	}
	gwreq_answer(g, r->success_status ? r->success_status : 200, "application/json", body,
		     strlen(body));
	free(body);
}

/* ============================================================ 7. request */

struct gw_param_ctx {
	const ProtobufCMessageDescriptor *desc;
	json_t *obj;
	json_t *errors;
	bool is_form;
};

/* One query or form parameter into the request object, typed by its field. */
static int gw_param_add(void *arg, const char *key, const char *value, const char **why_r)
{
	struct gw_param_ctx *c = arg;
	const char *why = NULL;
	json_t *v = pbjson_from_text(c->desc, key, value, &why);

	if (v == NULL) {
		json_array_append_new(c->errors, json_pack("{s:s, s:s}", "field", key, "message",
							   why != NULL ? why : "invalid"));
		return 0; /* collect every error */
	}
	json_object_set_new(c->obj, key, v);
	return 0;
}

/* Wipe the string values of a JSON tree (passwords) before it is freed. */
static void gw_json_wipe(json_t *j)
{
	const char *k;
	json_t *v;
	size_t i;

	if (json_is_string(j)) {
		OPENSSL_cleanse((char *)json_string_value(j), json_string_length(j));
	} else if (json_is_object(j)) {
		json_object_foreach(j, k, v)
		{
			gw_json_wipe(v);
		}
	} else if (json_is_array(j)) {
		json_array_foreach(j, i, v)
		{
			gw_json_wipe(v);
		}
	}
}

/* 1 if the Content-Type is mime (parameters such as charset=utf-8 allowed). */
static int gw_ctype_is(const char *ct, const char *mime)
{
	size_t n = strlen(mime);

	if (ct == NULL || strncasecmp(ct, mime, n) != 0)
		return 0;
	ct += n;
	ct += strspn(ct, " \t");
	return *ct == '\0' || *ct == ';';
}

/* Build the request message from body, path, query and connection; answer on error. */
#define GW_JSON_KEY_MAX 128

/* Did json_loadb fail on text that is not Unicode (bad bytes, lone surrogates)? */
static bool gw_json_bad_unicode(const json_error_t *e)
{
	return json_error_code(e) == json_error_invalid_utf8 || strstr(e->text, "Unicode") != NULL;
}

/* The member name whose value holds byte pos of a JSON object text: the last
 * string followed by ':' before pos, at any depth ("(body)" if none). Only for
 * naming the field in an error; the body is not trusted beyond that. */
static const char *gw_json_key_at(const char *body, size_t pos, char *out, size_t outlen)
{
	size_t i = 0, start = 0, n;

	snprintf(out, outlen, "(body)");
	while (i < pos) {
		if (body[i] != '"') {
			i++;
			continue;
		}
		start = ++i;
		while (i < pos && body[i] != '"')
			i += body[i] == '\\' ? 2 : 1;
		if (i >= pos)
			break; /* pos is inside this string: it is the value */
		n = i - start;
		i++;
		while (i < pos && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' ||
				   body[i] == '\n'))
			i++;
		if (i < pos && body[i] == ':') {
			if (n >= outlen)
				n = outlen - 1;
			/* Names are ASCII in Ward's API; anything else is shown as '?'. */
			for (size_t k = 0; k < n; k++) {
				unsigned char c = (unsigned char)body[start + k];

				out[k] = c >= 0x20 && c < 0x7f && c != '"' ? (char)c : '?';
			}
			out[n] = '\0';
		}
	}
	return out;
}

static void gwreq_call(struct gwreq *g)
{
	struct pbjson_limits lim = { 0 };
	const struct gateway_route *r = g->route;
	struct evbuffer *in = evhttp_request_get_input_buffer(g->req);
	size_t len = evbuffer_get_length(in);
	size_t max = r->max_body != 0 ? r->max_body : (size_t)g->gw->cfg->max_body_bytes;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(g->req);
	const char *query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
	const char *ctype = gwreq_in(g, "Content-Type");
	const char *idem = gwreq_in(g, "Idempotency-Key");
	struct gw_param_ctx pc = {0};
	ProtobufCMessage *msg = NULL;
	json_t *errors = NULL;
	uint8_t *packed = NULL;
	size_t plen = 0;
	const char *why = NULL;
	struct queue_msg qm = {0};
	Ward__Principal anon = WARD__PRINCIPAL__INIT, pr;
	char basic_id[GATEWAY_PARAM_MAX + 1], basic_secret[GATEWAY_PARAM_MAX + 1];
	bool basic = false;

	basic_id[0] = basic_secret[0] = '\0';
	if (len > max) {
		gwreq_problem(g, 413, "Content Too Large", "The request body is too large.");
		return;
	}
	if (idem != NULL && (strlen(idem) == 0 || strlen(idem) > GW_IDEMPOTENCY_MAX ||
			     !envelope_string_ok(idem))) {
		gwreq_problem(g, 400, "Bad Request", "Malformed Idempotency-Key header.");
		return;
	}
	pc.desc = r->request;
	if ((pc.errors = json_array()) == NULL)
		goto oom;
	if (r->flags & ROUTE_FORM) {
		char *copy;
		const char *authz = gwreq_in(g, "Authorization");
		char b64[GATEWAY_CRED_MAX + 1];

		if (len > 0 && !gw_ctype_is(ctype, "application/x-www-form-urlencoded")) {
			gwreq_problem(g, 415, "Unsupported Media Type",
				      "Send application/x-www-form-urlencoded.");
			goto out;
		}
		if ((pc.obj = json_object()) == NULL || (copy = malloc(len + 1)) == NULL)
			goto oom;
		evbuffer_copyout(in, copy, len);
		copy[len] = '\0';
		pc.is_form = true;
		if (memchr(copy, '\0', len) != NULL ||
		    gateway_params_each(copy, len, gw_param_add, &pc, &why) < 0) {
			OPENSSL_cleanse(copy, len);
			free(copy);
			gwreq_header(g, "Pragma", "no-cache");
			gwreq_answer(g, 400, "application/json",
				     "{\"error\":\"invalid_request\"}", 27);
			goto out_nofree_g;
		}
		OPENSSL_cleanse(copy, len);
		free(copy);
		if (authz != NULL && gateway_auth_scheme(authz, "Basic", b64, sizeof b64)) {
			if (gateway_basic_decode(b64, basic_id, sizeof basic_id, basic_secret,
						 sizeof basic_secret) < 0 ||
			    json_object_get(pc.obj, "client_secret") != NULL) {
				OPENSSL_cleanse(b64, sizeof b64);
				gwreq_header(g, "Pragma", "no-cache");
				gwreq_header(g, "WWW-Authenticate", "Basic realm=\"ward\"");
				gwreq_answer(g, 401, "application/json",
					     "{\"error\":\"invalid_client\"}", 26);
				goto out_nofree_g;
			}
			basic = true;
		}
		OPENSSL_cleanse(b64, sizeof b64);
	} else if (len > 0 && g->state_changing) {
		json_error_t jerr;
		const char *body;
		char detail[96], key[GW_JSON_KEY_MAX];

		if (!gw_ctype_is(ctype, "application/json")) {
			gwreq_problem(g, 415, "Unsupported Media Type", "Send application/json.");
			goto out;
		}
		body = (const char *)evbuffer_pullup(in, -1);
		pc.obj = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
		if (pc.obj == NULL && gw_json_bad_unicode(&jerr)) {
			/* Text that is not UTF-8 is a field's problem (422), not the syntax's. */
			json_t *o = gw_problem(422, "Unprocessable Content", "Some fields are invalid.");
			json_t *e = json_pack("[{s:s, s:s}]", "field",
					      gw_json_key_at(body, (size_t)jerr.position, key,
							     sizeof key),
					      "message", "must be valid UTF-8 text");

			if (o != NULL && e != NULL)
				json_object_set(o, "errors", e);
			json_decref(e);
			gwreq_problem_obj(g, 422, o);
			goto out_nofree_g;
		}
		if (pc.obj == NULL || !json_is_object(pc.obj)) {
			snprintf(detail, sizeof detail,
				 pc.obj == NULL ? "Malformed JSON at line %d, column %d."
						: "The body must be a JSON object.",
				 jerr.line, jerr.column);
			gwreq_problem(g, 400, "Bad Request", detail);
			goto out;
		}
	} else if ((pc.obj = json_object()) == NULL) {
		goto oom;
	}
	/* Path parameters, then the query, then what only the gateway may say. */
	for (size_t i = 0; i < g->n_params; i++) {
		const char *w = NULL;
		json_t *v = pbjson_from_text(r->request, g->params[i].name, g->params[i].value, &w);

		if (v == NULL) {
			gwreq_problem(g, 404, "Not Found", "No resource exists at this path.");
			goto out;
		}
		json_object_set_new(pc.obj, g->params[i].name, v);
	}
	if (query != NULL && gateway_params_each(query, strlen(query), gw_param_add, &pc, &why) < 0) {
		gwreq_problem(g, 400, "Bad Request", why);
		goto out;
	}
	if (basic) {
		json_object_set_new(pc.obj, "client_id", json_string(basic_id));
		json_object_set_new(pc.obj, "client_secret", json_string(basic_secret));
	}
	if (pbjson_field(r->request, "ip") != NULL)
		json_object_set_new(pc.obj, "ip", json_string(g->ip));
	if (pbjson_field(r->request, "user_agent") != NULL) {
		const char *ua = gwreq_in(g, "User-Agent");
		char uab[GW_USER_AGENT_MAX + 1];

		snprintf(uab, sizeof uab, "%s", ua != NULL ? ua : "");
		json_t *v = json_string(uab); /* NULL when not UTF-8: left out */

		if (v != NULL)
			json_object_set_new(pc.obj, "user_agent", v);
	}
	/* A string may be as long as the route's body allows (ticket bodies: 256 KiB). */
	lim.max_string = r->max_body > PBJSON_DEFAULT_STRING ? r->max_body : 0;
	if (json_array_size(pc.errors) == 0 &&
	    pbjson_parse(r->request, pc.obj, &lim, &msg, &errors) == 0) {
		plen = protobuf_c_message_get_packed_size(msg);
		if ((packed = malloc(plen ? plen : 1)) == NULL)
			goto oom;
		protobuf_c_message_pack(msg, packed);
	} else {
		json_t *o;

		if (errors != NULL)
			json_array_extend(pc.errors, errors);
		if (r->flags & ROUTE_FORM) {
			gwreq_header(g, "Pragma", "no-cache");
			gwreq_answer(g, 400, "application/json", "{\"error\":\"invalid_request\"}",
				     27);
			goto out_nofree_g;
		}
		o = gw_problem(422, "Unprocessable Content", "Some fields are invalid.");
		if (o != NULL)
			json_object_set(o, "errors", pc.errors);
		gwreq_problem_obj(g, 422, o);
		goto out_nofree_g;
	}

	if (g->auth != NULL && g->auth->principal != NULL) {
		pr = *g->auth->principal; /* shallow: strings stay the reply's */
	} else {
		pr = anon;
		pr.kind = "anonymous";
		pr.tenant = g->tenant_id;
	}
	pr.ip = g->ip;
	qm.dest = r->stream;
	qm.method = r->rpc;
	qm.tenant = g->tenant_id;
	qm.principal = &pr;
	qm.idempotency_key = idem;
	qm.request_id = g->info.id;
	qm.timeout_ms = g->gw->cfg->upstream_timeout_ms;
	qm.payload = packed;
	qm.len = plen;
	g->busy = true;
	if (queue_request(daemon_queue(g->gw->d), &qm, gwreq_on_reply, g, &why) < 0) {
		g->busy = false;
		log_set_request_id(g->info.id);
		log_event(LOG_WARN, "cannot send request", LF_STR("rpc", r->rpc),
			  LF_STR("error", why != NULL ? why : ""));
		log_set_request_id(NULL);
		gwreq_problem(g, 503, "Service Unavailable", "The service is unavailable.");
	}
	goto out_nofree_g;
oom:
	gwreq_problem(g, 503, "Service Unavailable", "Out of memory.");
out:
out_nofree_g: /* g may be freed (answered) here: only locals below */
	OPENSSL_cleanse(basic_secret, sizeof basic_secret);
	if (packed != NULL) {
		OPENSSL_cleanse(packed, plen);
		free(packed);
	}
	pbjson_free(msg);
	if (pc.obj != NULL)
		gw_json_wipe(pc.obj);
	json_decref(pc.obj);
	json_decref(pc.errors);
	json_decref(errors);
}

/* ============================================================ 6. identity */

/* Use an AuthenticateReply (from auth or the cache): the principal must be ours. */
static void gwreq_authenticated(struct gwreq *g, Ward__AuthenticateReply *a)
{
	if (a->principal == NULL || a->principal->tenant == NULL ||
	    strcmp(a->principal->tenant, g->tenant_id) != 0) {
		ward__authenticate_reply__free_unpacked(a, NULL);
		gwreq_header(g, "WWW-Authenticate", "Bearer");
		gwreq_problem(g, 401, "Unauthorized", "Authentication required.");
		return;
	}
	/* The one place a pending session is confined: a new password or TOTP first. */
	if ((a->must_change_password || a->must_setup_totp) &&
	    !(g->route->flags & ROUTE_PENDING_OK)) {
		bool pw = a->must_change_password;

		ward__authenticate_reply__free_unpacked(a, NULL);
		gwreq_problem(g, 403, pw ? "Password Change Required" : "Two-Factor Setup Required",
			      pw ? "Change your password first: POST /api/v1/auth/password with "
				   "current_password and new_password."
				 : "Set up two-factor authentication first: POST "
				   "/api/v1/auth/totp/setup, then POST /api/v1/auth/totp/confirm "
				   "with a code.");
		return;
	}
	g->auth = a;
	gwreq_call(g);
}

/* auth.authenticate answered. */
static void gwreq_on_auth(void *arg, int status, const Ward__Envelope *env, const uint8_t *payload,
			  size_t len)
{
	struct gwreq *g = arg;
	Ward__AuthenticateReply *a;
	int ttl;

	if (!gwreq_resume(g))
		return;
	if (status < 0) {
		gwreq_transport_problem(g, status, "auth.authenticate");
		return;
	}
	if (status == 401 || status == 403 || status == 429) {
		gwreq_error_reply(g, status, env, payload, len); /* 401: WWW-Authenticate */
		return;
	}
	if (status != 0 || len > GATEWAY_CACHE_VALUE_MAX ||
	    (a = ward__authenticate_reply__unpack(NULL, len, payload)) == NULL) {
		gwreq_problem(g, 502, "Bad Gateway", "Authentication failed unexpectedly.");
		return;
	}
	ttl = a->cache_ms < g->gw->cfg->auth_cache_max_ms ? a->cache_ms
							   : g->gw->cfg->auth_cache_max_ms;
	if (ttl > 0)
		gateway_cache_put(g->gw->auth_cache, g->cred_hash, payload, len, ttl);
	gwreq_authenticated(g, a);
}

/* Step 6: find the credential, then the cache or auth.authenticate. */
static void gwreq_identify(struct gwreq *g)
{
	Ward__AuthenticateRequest ar = WARD__AUTHENTICATE_REQUEST__INIT;
	Ward__Principal svc = WARD__PRINCIPAL__INIT;
	struct queue_msg qm = {0};
	const void *hit;
	size_t hlen = 0, plen;
	uint8_t *packed;
	const char *why = NULL;

	if (g->route->flags & ROUTE_PUBLIC) {
		gwreq_call(g);
		return;
	}
	if (g->cred[0] == '\0') {
		gwreq_header(g, "WWW-Authenticate", "Bearer");
		gwreq_problem(g, 401, "Unauthorized", "Authentication required.");
		return;
	}
	if (g->cookie && g->state_changing) {
		const char *t = gwreq_in(g, "X-CSRF-Token");

		if (t == NULL || t[0] == '\0' || strlen(t) >= sizeof g->csrf ||
		    !envelope_string_ok(t)) {
			gwreq_problem(g, 403, "Forbidden",
				      "A state-changing request with a session cookie needs "
				      "its X-CSRF-Token header.");
			return;
		}
		snprintf(g->csrf, sizeof g->csrf, "%s", t);
	}
	{
		const char *parts[] = {"auth",	     g->tenant_id, g->ip, g->cookie ? "c" : "b",
				       g->cred,	     g->csrf,	   g->state_changing ? "w" : "r"};

		gateway_key_hash(g->cred_hash, parts, sizeof parts / sizeof parts[0]);
	}
	hit = gateway_cache_get(g->gw->auth_cache, g->cred_hash, &hlen);
	if (hit != NULL) {
		Ward__AuthenticateReply *a = ward__authenticate_reply__unpack(NULL, hlen, hit);

		if (a != NULL) {
			gwreq_authenticated(g, a);
			return;
		}
	}
	if (g->cookie)
		ar.session_token = g->cred;
	else
		ar.bearer = g->cred;
	ar.csrf_token = g->csrf;
	ar.state_changing = g->state_changing;
	ar.ip = g->ip;
	plen = ward__authenticate_request__get_packed_size(&ar);
	if ((packed = malloc(plen ? plen : 1)) == NULL) {
		gwreq_problem(g, 503, "Service Unavailable", "Out of memory.");
		return;
	}
	ward__authenticate_request__pack(&ar, packed);
	svc.kind = "service";
	svc.id = "gateway";
	svc.ip = g->ip;
	qm.dest = "q:auth";
	qm.method = "auth.authenticate";
	qm.tenant = g->tenant_id;
	qm.principal = &svc;
	qm.request_id = g->info.id;
	qm.timeout_ms = g->gw->cfg->upstream_timeout_ms;
	qm.payload = packed;
	qm.len = plen;
	g->busy = true;
	if (queue_request(daemon_queue(g->gw->d), &qm, gwreq_on_auth, g, &why) < 0) {
		g->busy = false;
		OPENSSL_cleanse(packed, plen);
		free(packed);
		gwreq_problem(g, 503, "Service Unavailable", "Authentication is unavailable.");
		return;
	}
	OPENSSL_cleanse(packed, plen);
	free(packed);
}

/* ============================================================ 3–5. tenant, route, browser */

/* Steps 4 and 5 once the tenant is ours. */
static void gwreq_checks(struct gwreq *g)
{
	const char *origin = gwreq_in(g, "Origin");
	const char *site = gwreq_in(g, "Sec-Fetch-Site");
	bool nav = (g->route != NULL && (g->route->flags & ROUTE_BROWSER) &&
		    evhttp_request_get_command(g->req) == EVHTTP_REQ_GET);

	if (g->route_status == 405) {
		gwreq_header(g, "Allow", g->allow);
		gwreq_problem(g, 405, "Method Not Allowed",
			      "This resource does not support the request method.");
		return;
	}
	if (g->route == NULL) {
		gwreq_problem(g, 404, "Not Found", "No resource exists at this path.");
		return;
	}
	if ((origin != NULL && !gateway_origin_same(origin, g->host)) ||
	    (site != NULL && strcasecmp(site, "cross-site") == 0 && !nav)) {
		gwreq_problem(g, 403, "Forbidden", "Cross-origin requests are refused.");
		return;
	}
	gwreq_identify(g);
}

/* Use a TenantResolveReply (from auth or the cache). */
static void gwreq_tenant(struct gwreq *g, const Ward__TenantResolveReply *t)
{
	const char *own = daemon_config(g->gw->d)->region;
	char url[GATEWAY_HOST_MAX + 64];
	json_t *o;

	if (!t->exists || t->region == NULL || t->region[0] == '\0') {
		gwreq_problem(g, 404, "Not Found", "No such tenant.");
		return;
	}
	if (strcmp(t->region, own) != 0) {
		/* Never proxied, never asked: the URL is computed from config alone. */
		if (gateway_base_url(url, sizeof url, g->slug, t->region, g->gw->cfg->domain,
				     gateway_region_port(g->gw->cfg, t->region)) < 0 ||
		    strspn(t->region, "abcdefghijklmnopqrstuvwxyz") != strlen(t->region)) {
			gwreq_problem(g, 502, "Bad Gateway", "Bad tenant directory entry.");
			return;
		}
		if (g->route != NULL && (g->route->flags & ROUTE_BROWSER)) {
			char loc[sizeof url + 2048];

			if (gateway_redirect_location(loc, sizeof loc, url + 8, 443,
						      evhttp_request_get_uri(g->req)) < 0)
				snprintf(loc, sizeof loc, "%s/", url);
			gwreq_header(g, "Location", loc);
			gwreq_answer(g, 307, NULL, NULL, 0);
			return;
		}
		o = gw_problem(421, "Misdirected Request", NULL);
		if (o != NULL) {
			char detail[sizeof url + 96];
			char base[sizeof url + 16];

			snprintf(detail, sizeof detail,
				 "This tenant is served in region %s: use %s/api/v1/", t->region, url);
			snprintf(base, sizeof base, "%s/api/v1/", url);
			json_object_set_new(o, "detail", json_string(detail));
			json_object_set_new(o, "region", json_string(t->region));
			json_object_set_new(o, "base_url", json_string(base));
			json_object_set_new(o, "instance", json_string(base));
		}
		gwreq_problem_obj(g, 421, o);
		return;
	}
	if (t->tenant_id == NULL || t->tenant_id[0] == '\0' ||
	    strlen(t->tenant_id) > GW_TENANT_ID_MAX || !envelope_string_ok(t->tenant_id)) {
		gwreq_problem(g, 502, "Bad Gateway", "Bad tenant directory entry.");
		return;
	}
	snprintf(g->tenant_id, sizeof g->tenant_id, "%s", t->tenant_id);
	gwreq_checks(g);
}

/* tenant.resolve answered. */
static void gwreq_on_tenant(void *arg, int status, const Ward__Envelope *env,
			    const uint8_t *payload, size_t len)
{
	struct gwreq *g = arg;
	Ward__TenantResolveReply *t;
	char key[65];
	const char *parts[] = {"tenant", g->slug};

	if (!gwreq_resume(g))
		return;
	if (status < 0) {
		gwreq_transport_problem(g, status, "tenant.resolve");
		return;
	}
	if (status != 0 || len > GATEWAY_CACHE_VALUE_MAX ||
	    (t = ward__tenant_resolve_reply__unpack(NULL, len, payload)) == NULL) {
		gwreq_problem(g, 502, "Bad Gateway", "The tenant directory failed.");
		return;
	}
	gateway_key_hash(key, parts, 2);
	gateway_cache_put(g->gw->tenant_cache, key, payload, len, g->gw->cfg->tenant_cache_ms);
	gwreq_tenant(g, t);
	ward__tenant_resolve_reply__free_unpacked(t, NULL);
}

/* Step 3: the cache, or tenant.resolve on q:auth. */
static void gwreq_resolve(struct gwreq *g)
{
	Ward__TenantResolveRequest tr = WARD__TENANT_RESOLVE_REQUEST__INIT;
	Ward__Principal svc = WARD__PRINCIPAL__INIT;
	struct queue_msg qm = {0};
	uint8_t packed[128];
	const void *hit;
	size_t hlen = 0;
	char key[65];
	const char *parts[] = {"tenant", g->slug};
	const char *why = NULL;

	gateway_key_hash(key, parts, 2);
	hit = gateway_cache_get(g->gw->tenant_cache, key, &hlen);
	if (hit != NULL) {
		Ward__TenantResolveReply *t = ward__tenant_resolve_reply__unpack(NULL, hlen, hit);

		if (t != NULL) {
			gwreq_tenant(g, t);
			ward__tenant_resolve_reply__free_unpacked(t, NULL);
			return;
		}
	}
	tr.slug = g->slug;
	if (ward__tenant_resolve_request__get_packed_size(&tr) > sizeof packed) {
		gwreq_problem(g, 404, "Not Found", "No such tenant.");
		return;
	}
	svc.kind = "service";
	svc.id = "gateway";
	qm.dest = "q:auth";
	qm.method = "tenant.resolve";
	qm.principal = &svc;
	qm.request_id = g->info.id;
	qm.timeout_ms = g->gw->cfg->upstream_timeout_ms;
	qm.payload = packed;
	qm.len = ward__tenant_resolve_request__pack(&tr, packed);
	g->busy = true;
	if (queue_request(daemon_queue(g->gw->d), &qm, gwreq_on_tenant, g, &why) < 0) {
		g->busy = false;
		gwreq_problem(g, 503, "Service Unavailable", "The tenant directory is unavailable.");
	}
}

/* ============================================================ 2. limits */

/* The rate-limit verdict. */
static void gwreq_on_rl(void *arg, int status, const struct gateway_rl_result *r)
{
	struct gwreq *g = arg;
	char ra[16];

	if (!gwreq_resume(g))
		return;
	if (status < 0) {
		if (g->route != NULL && (g->route->flags & ROUTE_LOGIN_RATE)) {
			gwreq_header(g, "Retry-After", "5");
			gwreq_problem(g, 503, "Service Unavailable",
				      "Login is unavailable for a moment.");
			return;
		}
		gwreq_resolve(g);
		return;
	}
	g->have_rl = true;
	g->rl = *r;
	if (r->limited) {
		snprintf(ra, sizeof ra, "%d", r->retry_s);
		gwreq_header(g, "Retry-After", ra);
		gwreq_problem(g, 429, "Too Many Requests", "Rate limit exceeded; retry later.");
		return;
	}
	gwreq_resolve(g);
}

/* Step 2: count the request in its buckets. */
static void gwreq_limit(struct gwreq *g)
{
	const struct gateway_config *cfg = g->gw->cfg;
	struct gateway_rl_bucket b[4];
	size_t n = 0;

	memset(b, 0, sizeof b);
	{
		const char *p[] = {"ip", g->ip};

		b[n].name = "ip";
		gateway_key_hash(b[n].id, p, 2);
		b[n].limit = cfg->rl_ip;
		b[n++].window_s = cfg->rl_window_s;
	}
	{
		const char *p[] = {"tip", g->slug, g->ip};

		b[n].name = "tip";
		gateway_key_hash(b[n].id, p, 3);
		b[n].limit = cfg->rl_tenant_ip;
		b[n++].window_s = cfg->rl_window_s;
	}
	if (g->cred[0] != '\0') {
		const char *p[] = {"cred", g->slug, g->cred};

		b[n].name = "cred";
		gateway_key_hash(b[n].id, p, 3);
		b[n].limit = cfg->rl_credential;
		b[n++].window_s = cfg->rl_window_s;
	}
	if (g->route != NULL && (g->route->flags & ROUTE_LOGIN_RATE)) {
		const char *p[] = {"login", g->slug, g->ip};

		b[n].name = "login";
		gateway_key_hash(b[n].id, p, 3);
		b[n].limit = cfg->rl_login;
		b[n++].window_s = cfg->rl_window_s;
	}
	g->busy = true;
	if (gateway_rl_check(g->gw->rl, b, n, gwreq_on_rl, g) < 0) {
		g->busy = false;
		gwreq_on_rl(g, -1, NULL);
	}
}

/* Step 4 before the rest (pure): which route, or 404/405 with the Allow list. */
static void gwreq_route(struct gwreq *g, const char *path)
{
	const char *method = gateway_http_method(evhttp_request_get_command(g->req));
	const struct gateway_route *rows;
	struct gateway_param params[GATEWAY_PATH_PARAMS];
	size_t n, np, i, t;

	g->route_status = 404;
	g->allow[0] = '\0';
	for (t = 0; gateway_routes_table(t, &rows, &n); t++)
		for (i = 0; i < n; i++) {
			if (!gateway_path_match(rows[i].path, path, params, &np))
				continue;
			if (strcmp(rows[i].method, method) == 0) {
				g->route = &rows[i];
				g->route_status = 0;
				memcpy(g->params, params, sizeof params);
				g->n_params = np;
				return;
			}
			g->route_status = 405;
			if (strstr(g->allow, rows[i].method) == NULL &&
			    strlen(g->allow) + strlen(rows[i].method) + 3 < sizeof g->allow) {
				if (g->allow[0] != '\0')
					strcat(g->allow, ", ");
				strcat(g->allow, rows[i].method);
			}
		}
}

/*
 * Entry from gateway_http.c for every request to a tenant host (after the
 * generic checks: limits, host, SNI). Answers now or later; takes nothing over.
 */
void gateway_api_start(struct gateway *gw, struct evhttp_request *req,
		       const struct gateway_reqinfo *info)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	const char *host = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
	const char *authz, *cookie;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct gwreq *g;
	uint16_t port;
	char *addr = NULL;
	ev_uint16_t peer_port = 0;

	if ((g = calloc(1, sizeof *g)) == NULL) {
		gateway_http_problem(req, info, 503, "Service Unavailable", "Out of memory.");
		return;
	}
	g->gw = gw;
	g->req = req;
	g->info = *info;
	g->state_changing = cmd == EVHTTP_REQ_POST || cmd == EVHTTP_REQ_PUT ||
			    cmd == EVHTTP_REQ_PATCH || cmd == EVHTTP_REQ_DELETE;
	g->evcon = evcon;
	if (evcon != NULL) {
		evhttp_connection_set_closecb(evcon, gwreq_conn_closed, g);
		evhttp_connection_get_peer(evcon, &addr, &peer_port);
	}
	snprintf(g->ip, sizeof g->ip, "%s", addr != NULL ? addr : "");
	g->next = gw->requests;
	if (g->next != NULL)
		g->next->prevp = &g->next;
	g->prevp = &gw->requests;
	gw->requests = g;

	if (host == NULL || path == NULL ||
	    gateway_host_classify(host, gw->cfg->domain, g->slug, g->region, &port) !=
		GATEWAY_HOST_TENANT ||
	    strcmp(g->region, daemon_config(gw->d)->region) != 0) {
		gwreq_problem(g, 404, "Not Found", "No resource exists at this address.");
		return;
	}
	snprintf(g->host, sizeof g->host, "%s", host);
	authz = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	cookie = evhttp_find_header(evhttp_request_get_input_headers(req), "Cookie");
	if (authz != NULL && strncasecmp(authz, "Basic ", 6) != 0) {
		if (!gateway_auth_scheme(authz, "Bearer", g->cred, sizeof g->cred)) {
			gwreq_header(g, "WWW-Authenticate", "Bearer error=\"invalid_request\"");
			gwreq_problem(g, 401, "Unauthorized", "Malformed Authorization header.");
			return;
		}
	} else if (cookie != NULL && gateway_cookie_get(cookie, GW_COOKIE, g->cred, sizeof g->cred)) {
		g->cookie = true;
	}
	gwreq_route(g, path);
	gwreq_limit(g);
}

/*
 * Shutdown: with answer, every waiting client gets a 503 now (stop hook); then
 * every state is orphaned and freed by the callback of its step in flight.
 */
void gateway_api_orphan_all(struct gateway *gw, bool answer)
{
	while (gw->requests != NULL) {
		struct gwreq *g = gw->requests;

		gwreq_unlink(g);
		gwreq_detach(g);
		if (answer && g->req != NULL) {
			gwreq_rl_headers(g);
			gateway_http_problem(g->req, &g->info, 503, "Service Unavailable",
					     "The gateway is shutting down.");
		}
		g->req = NULL;
		g->gw = NULL;
		if (!g->busy)
			gwreq_free(g);
	}
}

/* Caches and the rate limiter (its own Redis connection, as the gateway's user). */
int gateway_api_init(struct gateway *gw, const char **error_r)
{
	const struct daemon_config *dc = daemon_config(gw->d);

	gw->tenant_cache = gateway_cache_new(GW_CACHE_SLOTS);
	gw->auth_cache = gateway_cache_new(GW_CACHE_SLOTS);
	gw->rl = gateway_rl_new(gw->base, dc->redis_host, dc->redis_port,
				dc->redis_user != NULL ? dc->redis_user : "gateway",
				(const char *)dc->redis_password.data);
	return 0;
}

/* Free what gateway_api_init made. Idempotent. */
void gateway_api_deinit(struct gateway *gw)
{
	gateway_rl_free(gw->rl);
	gw->rl = NULL;
	gateway_cache_free(gw->tenant_cache);
	gw->tenant_cache = NULL;
	gateway_cache_free(gw->auth_cache);
	gw->auth_cache = NULL;
}
