/*
 * mail_smtp — the SMTP listener (RFC 5321 ESMTP) on libevent.
 *
 * Extensions: SIZE, 8BITMIME, PIPELINING, ENHANCEDSTATUSCODES, STARTTLS (RFC
 * 3207: the cell certificate, TLS 1.2+, bufferevent_openssl_filter_new over the
 * plain bufferevent; input pipelined behind STARTTLS is discarded, and the
 * session restarts from scratch as the RFC requires). No AUTH, no relaying: the
 * only recipients are <local>@<slug>.<region>.<domain> of this region's tenants
 * for the local parts each tenant configured (tenant.tenants.mail_local_parts,
 * `wardctl mail addresses`), checked with auth.mail_recipient on q:auth (unknown
 * address or tenant, or another region → 550 5.1.1). An address found is not
 * asked again for smtp.recipient_cache_ms (1 s): most mail goes to a few
 * addresses, and each question is a queue round trip through ward-auth and
 * PostgreSQL. Refusals are never kept.
 *
 * Commands are read one CRLF line at a time (at most 512 bytes, RFC 5321
 * 4.5.3.1.4); text lines in DATA at most 1000 bytes with the CRLF. A command
 * that waits for an answer (RCPT's tenant lookup) holds the input: pipelined
 * commands behind it are answered in order once it completes. Timeouts: idle
 * between commands limits.command_timeout_s, during DATA limits.data_timeout_s
 * (421 4.4.2). Caps: limits.connections in all, limits.connections_per_source
 * per client address (421 4.7.0), limits.recipients per message (452 4.5.3), 10
 * errors per session (421 4.7.0), limits.message_bytes (552 5.3.4).
 *
 * End of DATA: mail_parse (mail_mime.c); over a limit → its refusal; an
 * auto-reply, bounce or report → 250 and nothing kept (counted, logged); else one
 * spool file per recipient tenant, fsynced, and then 250.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <glib.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "auth.pb-c.h"
#include "daemon.h"
#include "log.h"
#include "mail.h"

#define SMTP_CMD_MAX 512
#define SMTP_LINE_MAX 1000
#define SMTP_MAX_ERRORS 10
#define SMTP_PATH_MAX 256
#define SMTP_MAX_TENANTS 8

enum smtp_state { S_GREET, S_READY, S_MAIL, S_DATA, S_CLOSING };

struct smtp_rcpt {
	char addr[SMTP_PATH_MAX + 1];
	char tenant[37];
};

struct smtp_conn {
	struct smtp_conn *next;
	struct mail_ingest *mi;
	struct bufferevent *bev;
	char peer[INET6_ADDRSTRLEN];
	enum smtp_state state;
	bool ehlo, helo, tls, busy, dead;
	int errors;
	char from[SMTP_PATH_MAX + 1];
	bool null_sender;
	struct smtp_rcpt *rcpts;
	int n_rcpts;
	char pending_rcpt[SMTP_PATH_MAX + 1]; /* during auth.mail_recipient */
	char pending_key[sizeof ((struct mail_rcpt_cached *)0)->key]; /* its cache key */
	struct evbuffer *data;
	bool data_too_big, data_long_line, in_long_line;
	bool cmd_skip; /* inside an over-long command line: dropped up to its end */
	struct event *linger; /* closing over TLS: waits for the socket side to flush */
	int spool_tenants;	     /* the message being spooled: for the log line */
	long long spool_attachments;
};

static void smtp_read(struct bufferevent *bev, void *arg);
static void smtp_event(struct bufferevent *bev, short what, void *arg);
static void smtp_linger(evutil_socket_t fd, short what, void *arg);

/* ============================== output ================================== */

static void smtp_reply(struct smtp_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* One reply line (fmt without CRLF). */
static void smtp_reply(struct smtp_conn *c, const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	va_list ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\r\n", 2);
}

/* Free a connection (or mark it, if a lookup still holds a pointer to it). */
static void smtp_free(struct smtp_conn *c)
{
	struct mail_ingest *mi = c->mi;
	struct smtp_conn **pp;

	if (c->bev != NULL) {
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	if (!c->dead) {
		for (pp = &mi->conns; *pp != NULL; pp = &(*pp)->next)
			if (*pp == c) {
				*pp = c->next;
				break;
			}
		mi->n_conns--;
		c->dead = true;
	}
	if (c->linger != NULL) {
		event_free(c->linger);
		c->linger = NULL;
	}
	if (c->busy)
		return; /* the lookup's callback frees it */
	if (c->data != NULL)
		evbuffer_free(c->data);
	free(c->rcpts);
	free(c);
}

/* Close once the output is flushed. */
static void smtp_close_after_flush(struct smtp_conn *c)
{
	/* Every caller queued a reply first: the write callback frees c once it is
	 * flushed (never here, while smtp_process may still hold c). */
	c->state = S_CLOSING;
	bufferevent_disable(c->bev, EV_READ);
}

/* Free c once nothing is left to send, down to the socket (under TLS the
 * filter's output drains into the plain bufferevent first). */
static void smtp_close_when_flushed(struct smtp_conn *c)
{
	struct bufferevent *u = c->bev != NULL ? bufferevent_get_underlying(c->bev) : NULL;
	struct timeval tv = {0, 20000};

	if (u != NULL && evbuffer_get_length(bufferevent_get_output(u)) > 0 &&
	    (c->linger != NULL ||
	     (c->linger = evtimer_new(daemon_base(c->mi->d), smtp_linger, c)) != NULL)) {
		evtimer_add(c->linger, &tv);
		return;
	}
	smtp_free(c);
}

static void smtp_linger(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	smtp_close_when_flushed(arg);
}

static void smtp_write_done(struct bufferevent *bev, void *arg)
{
	struct smtp_conn *c = arg;

	(void)bev;
	if (c->state == S_CLOSING)
		smtp_close_when_flushed(c);
}

/* Count an error; after too many, 421 and close. 1 if closed. */
static int smtp_error(struct smtp_conn *c)
{
	if (++c->errors < SMTP_MAX_ERRORS)
		return 0;
	smtp_reply(c, "421 4.7.0 %s Too many errors, closing", c->mi->cfg->hostname);
	smtp_close_after_flush(c);
	return 1;
}

static void smtp_timeouts(struct smtp_conn *c)
{
	struct timeval tv = {c->state == S_DATA ? c->mi->cfg->data_timeout_s
						: c->mi->cfg->command_timeout_s,
			     0};

	bufferevent_set_timeouts(c->bev, &tv, &tv);
}

/* Forget the transaction (RSET, EHLO, after DATA). */
static void smtp_reset(struct smtp_conn *c)
{
	c->from[0] = '\0';
	c->null_sender = false;
	c->n_rcpts = 0;
	c->data_too_big = c->data_long_line = c->in_long_line = false;
	if (c->data != NULL)
		evbuffer_drain(c->data, evbuffer_get_length(c->data));
	if (c->state == S_MAIL || c->state == S_DATA)
		c->state = S_READY;
}

/* ============================== syntax ================================== */

/* A domain (letters, digits, '-', '.') or an address literal "[...]". */
static bool smtp_domain_ok(const char *s, size_t n)
{
	if (n == 0 || n > 255)
		return false;
	if (s[0] == '[')
		return n >= 3 && s[n - 1] == ']' && strspn(s + 1, "0123456789abcdefABCDEF:.IPv6") == n - 2;
	for (size_t i = 0; i < n; i++)
		if (!(g_ascii_isalnum(s[i]) || s[i] == '-' || s[i] == '.'))
			return false;
	return s[0] != '.' && s[0] != '-';
}

/* "<path>" at s: local@domain with a dot-atom or quoted local part; "" allowed
 * if null_ok. Copies the address into out and returns the rest after '>' or NULL. */
static const char *smtp_path(const char *s, bool null_ok, char *out, size_t out_len)
{
	const char *e, *at;
	size_t n;

	if (*s != '<')
		return NULL;
	e = strchr(s, '>');
	if (e == NULL)
		return NULL;
	n = (size_t)(e - s - 1);
	if (n == 0) {
		if (!null_ok)
			return NULL;
		out[0] = '\0';
		return e + 1;
	}
	if (n >= out_len || s[1] == '@') /* no source routes */
		return NULL;
	memcpy(out, s + 1, n);
	out[n] = '\0';
	at = strrchr(out, '@');
	if (at == NULL || at == out || !smtp_domain_ok(at + 1, strlen(at + 1)))
		return NULL;
	for (const char *p = out; p < at; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || strchr("<>()[]\\,;:", *p))
			return NULL;
	return e + 1;
}

/* ============================== commands ================================ */

static void smtp_ehlo(struct smtp_conn *c, const char *arg, bool extended)
{
	const struct mail_config *cfg = c->mi->cfg;

	if (!smtp_domain_ok(arg, strlen(arg))) {
		smtp_reply(c, "501 5.5.4 Syntax: %s hostname", extended ? "EHLO" : "HELO");
		smtp_error(c);
		return;
	}
	smtp_reset(c);
	c->state = S_READY;
	c->helo = true;
	c->ehlo = extended;
	if (!extended) {
		smtp_reply(c, "250 %s", cfg->hostname);
		return;
	}
	smtp_reply(c, "250-%s", cfg->hostname);
	smtp_reply(c, "250-SIZE %d", cfg->max_message_bytes);
	smtp_reply(c, "250-8BITMIME");
	smtp_reply(c, "250-PIPELINING");
	if (c->mi->tls != NULL && !c->tls)
		smtp_reply(c, "250-STARTTLS");
	smtp_reply(c, "250 ENHANCEDSTATUSCODES");
}

/* ESMTP parameters of MAIL: SIZE=n, BODY=7BIT|8BITMIME. -1 after replying. */
static int smtp_mail_params(struct smtp_conn *c, const char *p)
{
	while (*p == ' ')
		p++;
	while (*p != '\0') {
		const char *e = strchr(p, ' ');
		size_t n = e != NULL ? (size_t)(e - p) : strlen(p);

		if (n > 5 && strncasecmp(p, "SIZE=", 5) == 0) {
			char *end;
			unsigned long long v = strtoull(p + 5, &end, 10);

			if (end != p + n || n > 25) {
				smtp_reply(c, "501 5.5.4 Bad SIZE parameter");
				return -1;
			}
			if (v > (unsigned long long)c->mi->cfg->max_message_bytes) {
				smtp_reply(c, "552 5.3.4 Message size exceeds fixed limit");
				return -1;
			}
		} else if (n > 5 && strncasecmp(p, "BODY=", 5) == 0) {
			if (!((n == 9 && strncasecmp(p + 5, "7BIT", 4) == 0) ||
			      (n == 13 && strncasecmp(p + 5, "8BITMIME", 8) == 0))) {
				smtp_reply(c, "501 5.5.4 Bad BODY parameter");
				return -1;
			}
		} else {
			smtp_reply(c, "555 5.5.4 Unsupported MAIL parameter");
			return -1;
		}
		p += n;
		while (*p == ' ')
			p++;
	}
	return 0;
}

static void smtp_mail(struct smtp_conn *c, const char *arg)
{
	const char *rest;

	if (!c->helo) {
		smtp_reply(c, "503 5.5.1 Send EHLO first");
		smtp_error(c);
		return;
	}
	if (c->state != S_READY) {
		smtp_reply(c, "503 5.5.1 Nested MAIL command");
		smtp_error(c);
		return;
	}
	if (strncasecmp(arg, "FROM:", 5) != 0 ||
	    (rest = smtp_path(arg + 5, true, c->from, sizeof c->from)) == NULL ||
	    (*rest != '\0' && *rest != ' ')) {
		smtp_reply(c, "501 5.1.7 Syntax: MAIL FROM:<address>");
		smtp_error(c);
		return;
	}
	if (*rest == ' ' && (!c->ehlo || smtp_mail_params(c, rest) < 0)) {
		if (!c->ehlo)
			smtp_reply(c, "555 5.5.4 Parameters need EHLO");
		c->from[0] = '\0';
		smtp_error(c);
		return;
	}
	c->null_sender = c->from[0] == '\0';
	c->state = S_MAIL;
	c->n_rcpts = 0;
	smtp_reply(c, "250 2.1.0 Ok");
}

static void smtp_process(struct smtp_conn *c);

/* ============================== recipient cache ========================= */

/* Milliseconds of the monotonic clock (the cache's expiry: wall-clock steps must
 * not keep an entry alive). */
static int64_t smtp_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The tenant that key ("<slug>|<local>") reached when ward-auth was last asked,
 * if that was less than smtp.recipient_cache_ms ago; else NULL. Most mail goes
 * to a few addresses: this spares the RCPT's queue round trip through ward-auth
 * and PostgreSQL. Only found addresses are kept (an address a tenant adds works
 * at once); one removed, or a tenant suspended, is refused after at most that
 * long. */
static const char *smtp_rcpt_cached(struct mail_ingest *mi, const char *key)
{
	int64_t now;

	if (mi->cfg->recipient_cache_ms <= 0)
		return NULL;
	now = smtp_mono_ms();
	for (int i = 0; i < MAIL_RCPT_CACHE; i++) {
		const struct mail_rcpt_cached *e = &mi->rcpt_cache[i];

		if (e->until_ms > now && strcmp(e->key, key) == 0)
			return e->tenant;
	}
	return NULL;
}

/* Keep what ward-auth answered for key: its slot, else an expired one, else the
 * one closest to expiry. */
static void smtp_rcpt_keep(struct mail_ingest *mi, const char *key, const char *tenant)
{
	struct mail_rcpt_cached *slot = NULL;

	if (mi->cfg->recipient_cache_ms <= 0 || key[0] == '\0')
		return;
	for (int i = 0; i < MAIL_RCPT_CACHE; i++) {
		struct mail_rcpt_cached *e = &mi->rcpt_cache[i];

		if (strcmp(e->key, key) == 0) {
			slot = e;
			break;
		}
		if (slot == NULL || e->until_ms < slot->until_ms)
			slot = e;
	}
	snprintf(slot->key, sizeof slot->key, "%s", key);
	snprintf(slot->tenant, sizeof slot->tenant, "%s", tenant);
	slot->until_ms = smtp_mono_ms() + mi->cfg->recipient_cache_ms;
}

/* Take addr (of tenant) as the message's next recipient, and say so. */
static void smtp_rcpt_add(struct smtp_conn *c, const char *addr, const char *tenant)
{
	snprintf(c->rcpts[c->n_rcpts].addr, sizeof c->rcpts[0].addr, "%s", addr);
	snprintf(c->rcpts[c->n_rcpts].tenant, sizeof c->rcpts[0].tenant, "%s", tenant);
	c->n_rcpts++;
	smtp_reply(c, "250 2.1.5 Ok");
}

/* auth.mail_recipient answered for c->pending_rcpt. */
static void smtp_on_resolve(void *arg, int status, const Ward__Envelope *reply,
			    const uint8_t *payload, size_t len)
{
	struct smtp_conn *c = arg;
	Ward__MailRecipientReply *r = NULL;

	(void)reply;
	c->busy = false;
	if (c->dead) {
		smtp_free(c);
		return;
	}
	if (status < 0 || status >= 500) {
		smtp_reply(c, "451 4.3.0 Recipient lookup failed, try again later");
		goto next;
	}
	if (status == 0)
		r = ward__mail_recipient_reply__unpack(NULL, len, payload);
	if (r == NULL || strlen(r->tenant_id) != 36) {
		/* no such address, tenant, or homed in another region: mail never
		 * crosses regions */
		smtp_reply(c, "550 5.1.1 <%s>: Recipient address rejected: no such mailbox here",
			   c->pending_rcpt);
		if (r != NULL)
			ward__mail_recipient_reply__free_unpacked(r, NULL);
		if (smtp_error(c))
			return;
		goto next;
	}
	smtp_rcpt_keep(c->mi, c->pending_key, r->tenant_id);
	smtp_rcpt_add(c, c->pending_rcpt, r->tenant_id);
	ward__mail_recipient_reply__free_unpacked(r, NULL);
next:
	if (c->mi->stopping) {
		smtp_reply(c, "421 4.3.2 %s Service shutting down, closing", c->mi->cfg->hostname);
		smtp_close_after_flush(c);
		return;
	}
	smtp_process(c);
}

static void smtp_rcpt(struct smtp_conn *c, const char *arg)
{
	const struct mail_config *cfg = c->mi->cfg;
	const char *region = daemon_config(c->mi->d)->region, *rest, *at, *dot;
	char addr[SMTP_PATH_MAX + 1], slug[64], local[65], suffix[SMTP_PATH_MAX];
	const char *tenant;
	Ward__MailRecipientRequest rq = WARD__MAIL_RECIPIENT_REQUEST__INIT;
	struct queue_msg qm = {0};
	uint8_t buf[256];
	const char *err = NULL;
	bool local_ok;
	size_t ll;

	if (c->state != S_MAIL) {
		smtp_reply(c, "503 5.5.1 Need MAIL before RCPT");
		smtp_error(c);
		return;
	}
	if (strncasecmp(arg, "TO:", 3) != 0 ||
	    (rest = smtp_path(arg + 3, false, addr, sizeof addr)) == NULL) {
		smtp_reply(c, "501 5.1.3 Syntax: RCPT TO:<address>");
		smtp_error(c);
		return;
	}
	if (*rest != '\0') {
		smtp_reply(c, "555 5.5.4 Unsupported RCPT parameter");
		smtp_error(c);
		return;
	}
	if (c->n_rcpts >= cfg->max_recipients) {
		smtp_reply(c, "452 4.5.3 Too many recipients");
		return;
	}
	/* <local>@<slug>.<region>.<domain>; local as a tenant may configure it
	 * ([a-z0-9._+-], at most 64), compared in lower case */
	at = strrchr(addr, '@');
	ll = (size_t)(at - addr);
	local_ok = ll >= 1 && ll < sizeof local;
	for (size_t i = 0; local_ok && i < ll; i++) {
		local[i] = g_ascii_tolower(addr[i]);
		local_ok = g_ascii_isalnum(local[i]) || strchr("._+-", local[i]) != NULL;
	}
	if (local_ok)
		local[ll] = '\0';
	snprintf(suffix, sizeof suffix, ".%s.%s", region, cfg->domain);
	dot = strchr(at + 1, '.');
	if (!local_ok || dot == NULL || strcasecmp(dot, suffix) != 0 ||
	    (size_t)(dot - at - 1) >= sizeof slug || dot - at - 1 < 3) {
		smtp_reply(c, "550 5.1.1 <%s>: Recipient address rejected: no such mailbox here",
			   addr);
		smtp_error(c);
		return;
	}
	for (size_t i = 0; i < (size_t)(dot - at - 1); i++)
		slug[i] = g_ascii_tolower(at[1 + i]);
	slug[dot - at - 1] = '\0';
	snprintf(c->pending_key, sizeof c->pending_key, "%s|%s", slug, local);
	if ((tenant = smtp_rcpt_cached(c->mi, c->pending_key)) != NULL) {
		smtp_rcpt_add(c, addr, tenant);
		return;
	}
	rq.slug = slug;
	rq.local_part = local;
	qm.dest = "q:auth";
	qm.method = "auth.mail_recipient";
	qm.timeout_ms = cfg->resolve_timeout_ms;
	qm.payload = buf;
	qm.len = ward__mail_recipient_request__pack(&rq, buf);
	snprintf(c->pending_rcpt, sizeof c->pending_rcpt, "%s", addr);
	c->busy = true;
	if (queue_request(daemon_queue(c->mi->d), &qm, smtp_on_resolve, c, &err) < 0) {
		c->busy = false;
		smtp_reply(c, "451 4.3.0 Recipient lookup failed, try again later");
	}
}

/* Start TLS on this connection (RFC 3207). */
static void smtp_starttls(struct smtp_conn *c, const char *arg)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct bufferevent *tls_bev;
	SSL *ssl;

	if (c->mi->tls == NULL || c->tls) {
		smtp_reply(c, "503 5.5.1 TLS not available");
		smtp_error(c);
		return;
	}
	if (*arg != '\0') {
		smtp_reply(c, "501 5.5.4 Syntax: STARTTLS");
		smtp_error(c);
		return;
	}
	/* Anything pipelined behind STARTTLS was sent in clear: never obey it. */
	evbuffer_drain(in, evbuffer_get_length(in));
	smtp_reply(c, "220 2.0.0 Ready to start TLS");
	ssl = SSL_new(c->mi->tls);
	if (ssl == NULL) {
		smtp_reply(c, "454 4.7.0 TLS not available");
		return;
	}
	tls_bev = bufferevent_openssl_filter_new(daemon_base(c->mi->d), c->bev, ssl,
						 BUFFEREVENT_SSL_ACCEPTING,
						 BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (tls_bev == NULL) {
		SSL_free(ssl);
		smtp_reply(c, "454 4.7.0 TLS not available");
		return;
	}
	c->bev = tls_bev;
	c->tls = true;
	c->helo = c->ehlo = false;
	smtp_reset(c);
	c->state = S_READY;
	bufferevent_setcb(c->bev, smtp_read, smtp_write_done, smtp_event, c);
	smtp_timeouts(c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* The spool's writers are done with c's message: answer it now. */
static void smtp_on_spooled(void *arg, int rc, const char *id, const char *error)
{
	struct smtp_conn *c = arg;
	struct mail_ingest *mi = c->mi;

	c->busy = false;
	if (c->dead) {
		smtp_free(c);
		return;
	}
	if (rc == 0) {
		mi->stats.accepted++;
		log_event(LOG_INFO, "mail accepted", LF_STR("spool_id", id), LF_STR("peer", c->peer),
			  LF_INT("tenants", c->spool_tenants),
			  LF_INT("attachments", c->spool_attachments));
		smtp_reply(c, "250 2.0.0 Ok: queued as %s", id);
	} else {
		/* nothing acknowledged: the client retries (spool files already
		 * committed for other tenants are idempotent by Message-ID) */
		log_event(LOG_ERROR, "spool write failed", LF_STR("error", error));
		smtp_reply(c, "451 4.3.0 Local error in processing, try again later");
	}
	if (mi->stopping) {
		smtp_reply(c, "421 4.3.2 %s Service shutting down, closing", mi->cfg->hostname);
		smtp_close_after_flush(c);
		return;
	}
	smtp_process(c);
}

/* End of DATA: parse, then spool per tenant; the answer comes once the files are
 * durable (smtp_on_spooled), the session waiting meanwhile (busy). */
static void smtp_data_end(struct smtp_conn *c)
{
	struct mail_ingest *mi = c->mi;
	size_t len = evbuffer_get_length(c->data);
	const char *data, *reason, *code, *err = NULL;
	Ward__MailIngestRequest *req = NULL;
	struct mail_put *put = NULL;
	char done[SMTP_MAX_TENANTS][37];
	int n_done = 0;
	enum mail_verdict v;

	c->state = S_READY;
	smtp_timeouts(c);
	if (c->data_too_big) {
		mi->stats.refused++;
		smtp_reply(c, "552 5.3.4 Message size exceeds fixed limit");
		goto out;
	}
	if (c->data_long_line) {
		mi->stats.refused++;
		smtp_reply(c, "554 5.6.0 Message has a line over %d bytes (RFC 5322 2.1.1)",
			   SMTP_LINE_MAX - 2);
		goto out;
	}
	data = (const char *)evbuffer_pullup(c->data, -1);
	v = mail_parse(data != NULL ? data : "", len, c->null_sender ? "" : c->from, &mi->lim, &req,
		       &reason, &code);
	if (v == MAIL_REFUSE) {
		mi->stats.refused++;
		log_event(LOG_INFO, "mail refused", LF_STR("peer", c->peer), LF_STR("reply", code));
		smtp_reply(c, "%s", code);
		goto out;
	}
	if (v == MAIL_IGNORE) {
		mi->stats.ignored++;
		log_event(LOG_INFO, "mail ignored: never a ticket", LF_STR("reason", reason),
			  LF_STR("peer", c->peer), LF_INT("ignored", mi->stats.ignored));
		smtp_reply(c, "250 2.0.0 Ok: accepted, not a ticket (%s)", reason);
		goto out;
	}
	if ((put = mail_put_new()) == NULL) {
		err = "out of memory";
		goto fail;
	}
	for (int i = 0; i < c->n_rcpts; i++) {
		bool seen = false;

		for (int k = 0; k < n_done; k++)
			seen = seen || strcmp(done[k], c->rcpts[i].tenant) == 0;
		if (seen)
			continue;
		if (n_done >= SMTP_MAX_TENANTS)
			break;
		free(req->recipient);
		req->recipient = strdup(c->rcpts[i].addr);
		if (req->recipient == NULL) {
			err = "out of memory";
			goto fail;
		}
		if (mail_put_add(mi, put, c->rcpts[i].tenant, req, &err) < 0)
			goto fail;
		snprintf(done[n_done++], 37, "%s", c->rcpts[i].tenant);
	}
	c->spool_tenants = n_done;
	c->spool_attachments = (long long)req->n_attachments;
	c->busy = true;
	if (mail_put_submit(mi, put, smtp_on_spooled, c) < 0) {
		c->busy = false;
		put = NULL; /* taken */
		err = "spool closing";
		goto fail;
	}
	goto out;
fail:
	mail_put_free(put);
	log_event(LOG_ERROR, "spool write failed", LF_STR("error", err ? err : "oom"));
	smtp_reply(c, "451 4.3.0 Local error in processing, try again later");
out:
	mail_request_free(req);
	smtp_reset(c);
}

static void smtp_data(struct smtp_conn *c, const char *arg)
{
	if (c->state != S_MAIL) {
		smtp_reply(c, "503 5.5.1 Need MAIL command");
		smtp_error(c);
		return;
	}
	if (*arg != '\0') {
		smtp_reply(c, "501 5.5.4 Syntax: DATA");
		smtp_error(c);
		return;
	}
	if (c->n_rcpts == 0) {
		smtp_reply(c, "554 5.5.1 No valid recipients");
		smtp_error(c);
		return;
	}
	if (c->data == NULL && (c->data = evbuffer_new()) == NULL) {
		smtp_reply(c, "451 4.3.0 Out of memory");
		return;
	}
	c->state = S_DATA;
	smtp_timeouts(c);
	smtp_reply(c, "354 End data with <CR><LF>.<CR><LF>");
}

/* One command line (without CRLF). */
static void smtp_command(struct smtp_conn *c, char *line)
{
	char verb[12];
	size_t n = strcspn(line, " ");
	const char *arg = line[n] == ' ' ? line + n + 1 : line + n;

	if (n >= sizeof verb) {
		smtp_reply(c, "500 5.5.2 Command unrecognized");
		smtp_error(c);
		return;
	}
	memcpy(verb, line, n);
	verb[n] = '\0';
	if (strcasecmp(verb, "EHLO") == 0)
		smtp_ehlo(c, arg, true);
	else if (strcasecmp(verb, "HELO") == 0)
		smtp_ehlo(c, arg, false);
	else if (strcasecmp(verb, "MAIL") == 0)
		smtp_mail(c, arg);
	else if (strcasecmp(verb, "RCPT") == 0)
		smtp_rcpt(c, arg);
	else if (strcasecmp(verb, "DATA") == 0)
		smtp_data(c, arg);
	else if (strcasecmp(verb, "STARTTLS") == 0)
		smtp_starttls(c, arg);
	else if (strcasecmp(verb, "RSET") == 0) {
		if (*arg != '\0') {
			smtp_reply(c, "501 5.5.4 Syntax: RSET");
			smtp_error(c);
			return;
		}
		smtp_reset(c);
		smtp_reply(c, "250 2.0.0 Ok");
	} else if (strcasecmp(verb, "NOOP") == 0) {
		smtp_reply(c, "250 2.0.0 Ok");
	} else if (strcasecmp(verb, "QUIT") == 0) {
		smtp_reply(c, "221 2.0.0 Bye");
		smtp_close_after_flush(c);
	} else if (strcasecmp(verb, "VRFY") == 0) {
		smtp_reply(c, "252 2.5.0 Cannot VRFY user");
	} else if (strcasecmp(verb, "HELP") == 0) {
		smtp_reply(c, "214 2.0.0 See RFC 5321");
	} else {
		smtp_reply(c, "500 5.5.2 Command unrecognized");
		smtp_error(c);
	}
}

/* DATA lines until the final dot; returns true when the message ended. */
static bool smtp_data_lines(struct smtp_conn *c, struct evbuffer *in)
{
	size_t eol_len;
	struct evbuffer_ptr p;
	size_t max = (size_t)c->mi->cfg->max_message_bytes;

	for (;;) {
		size_t avail = evbuffer_get_length(in), n;
		char line[SMTP_LINE_MAX + 1];

		p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
		if (p.pos < 0) {
			if (avail > SMTP_LINE_MAX) {
				c->in_long_line = true;
				c->data_long_line = true;
				evbuffer_drain(in, avail);
			}
			return false;
		}
		n = (size_t)p.pos;
		if (c->in_long_line || n + eol_len > SMTP_LINE_MAX) {
			/* the rest of a long line: drop it, the message is refused */
			c->in_long_line = false;
			c->data_long_line = true;
			evbuffer_drain(in, n + eol_len);
			continue;
		}
		evbuffer_remove(in, line, n);
		evbuffer_drain(in, eol_len);
		line[n] = '\0';
		if (n == 1 && line[0] == '.')
			return true;
		if (c->data_too_big || c->data_long_line)
			continue; /* read to the end, keep nothing */
		/* dot-unstuffing (RFC 5321 4.5.2) */
		if (evbuffer_get_length(c->data) + n + 2 > max) {
			c->data_too_big = true;
			evbuffer_drain(c->data, evbuffer_get_length(c->data));
			continue;
		}
		evbuffer_add(c->data, line[0] == '.' ? line + 1 : line, line[0] == '.' ? n - 1 : n);
		evbuffer_add(c->data, "\r\n", 2);
	}
}

/* Handle what the input holds, in order, until a command waits. */
static void smtp_process(struct smtp_conn *c)
{
	struct evbuffer *in;

	while (!c->busy && !c->dead && c->state != S_CLOSING) {
		in = bufferevent_get_input(c->bev);
		if (c->state == S_DATA) {
			if (!smtp_data_lines(c, in))
				return;
			smtp_data_end(c);
			continue;
		}
		{
			size_t eol_len;
			struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len,
								    EVBUFFER_EOL_CRLF);
			char line[SMTP_CMD_MAX + 1];

			if (p.pos < 0) {
				/* keep memory bounded: drop it now, answer at its end */
				if (evbuffer_get_length(in) > SMTP_CMD_MAX) {
					evbuffer_drain(in, evbuffer_get_length(in));
					c->cmd_skip = true;
				}
				return;
			}
			if (c->cmd_skip || (size_t)p.pos + eol_len > SMTP_CMD_MAX) {
				c->cmd_skip = false;
				evbuffer_drain(in, (size_t)p.pos + eol_len);
				smtp_reply(c, "500 5.5.2 Line too long");
				if (smtp_error(c))
					return;
				continue;
			}
			evbuffer_remove(in, line, (size_t)p.pos);
			evbuffer_drain(in, eol_len);
			line[p.pos] = '\0';
			if (strlen(line) != (size_t)p.pos) {
				smtp_reply(c, "500 5.5.2 NUL in command");
				if (smtp_error(c))
					return;
				continue;
			}
			smtp_command(c, line);
		}
	}
}

static void smtp_read(struct bufferevent *bev, void *arg)
{
	(void)bev;
	smtp_process(arg);
}

static void smtp_event(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_conn *c = arg;

	(void)bev;
	if ((what & BEV_EVENT_TIMEOUT) && c->state != S_CLOSING) {
		smtp_reply(c, "421 4.4.2 %s Timeout, closing", c->mi->cfg->hostname);
		bufferevent_set_timeouts(c->bev, NULL, NULL);
		smtp_close_after_flush(c);
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
		smtp_free(c);
}

/* ============================== accepting =============================== */

static void smtp_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
			int salen, void *arg)
{
	struct mail_ingest *mi = arg;
	struct smtp_conn *c, *o;
	int same = 0;

	(void)l;
	(void)salen;
	c = calloc(1, sizeof *c);
	if (c == NULL || (c->rcpts = calloc((size_t)mi->cfg->max_recipients + 1,
					    sizeof *c->rcpts)) == NULL) {
		if (c != NULL)
			free(c);
		evutil_closesocket(fd);
		return;
	}
	c->mi = mi;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, c->peer, sizeof c->peer);
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, c->peer,
			  sizeof c->peer);
	c->bev = bufferevent_socket_new(daemon_base(mi->d), fd,
					BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (c->bev == NULL) {
		evutil_closesocket(fd);
		free(c->rcpts);
		free(c);
		return;
	}
	for (o = mi->conns; o != NULL; o = o->next)
		same += strcmp(o->peer, c->peer) == 0;
	c->next = mi->conns;
	mi->conns = c;
	mi->n_conns++;
	mi->stats.connections++;
	c->state = S_READY;
	bufferevent_setcb(c->bev, smtp_read, smtp_write_done, smtp_event, c);
	smtp_timeouts(c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (mi->stopping || mi->n_conns > mi->cfg->max_connections ||
	    same >= mi->cfg->max_per_source) {
		mi->stats.refused_connections++;
		smtp_reply(c, "421 4.7.0 %s Too many connections, try again later",
			   mi->cfg->hostname);
		smtp_close_after_flush(c);
		return;
	}
	smtp_reply(c, "220 %s ESMTP Ward", mi->cfg->hostname);
}

/* The TLS server context: the cell certificate, TLS 1.2 and 1.3 only. */
static SSL_CTX *smtp_tls_ctx(const struct mail_config *cfg, const char **error_r)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	BIO *bio = NULL;
	EVP_PKEY *pkey = NULL;

	if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		*error_r = "TLS context";
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				     SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1) {
		*error_r = "TLS ciphers";
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert_file) != 1) {
		*error_r = "tls.cert_file: cannot load the PEM certificate chain";
		goto fail;
	}
	if (cfg->tls_key.data == NULL ||
	    (bio = BIO_new_mem_buf(cfg->tls_key.data, (int)cfg->tls_key.len)) == NULL ||
	    (pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) == NULL ||
	    SSL_CTX_use_PrivateKey(ctx, pkey) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		*error_r = "tls.key_file: no usable key for tls.cert_file";
		goto fail;
	}
	BIO_free(bio);
	EVP_PKEY_free(pkey);
	return ctx;
fail:
	BIO_free(bio);
	EVP_PKEY_free(pkey);
	SSL_CTX_free(ctx);
	return NULL;
}

int mail_smtp_start(struct mail_ingest *mi, const char **error_r)
{
	struct sockaddr_storage ss;
	int sslen = sizeof ss;

	if (mi->cfg->tls_cert_file != NULL && mi->cfg->tls_cert_file[0] != '\0') {
		mi->tls = smtp_tls_ctx(mi->cfg, error_r);
		if (mi->tls == NULL)
			return -1;
	}
	memset(&ss, 0, sizeof ss);
	if (evutil_parse_sockaddr_port(mi->cfg->listen, (struct sockaddr *)&ss, &sslen) < 0) {
		*error_r = "smtp.listen: not host:port";
		return -1;
	}
	mi->listener = evconnlistener_new_bind(daemon_base(mi->d), smtp_accept, mi,
					       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
						   LEV_OPT_CLOSE_ON_EXEC,
					       128, (struct sockaddr *)&ss, sslen);
	if (mi->listener == NULL) {
		*error_r = "smtp.listen: cannot listen";
		return -1;
	}
	return 0;
}

void mail_smtp_stop(struct mail_ingest *mi)
{
	struct smtp_conn *c;

	if (mi->listener != NULL)
		evconnlistener_free(mi->listener);
	mi->listener = NULL;
	for (c = mi->conns; c != NULL; c = c->next) {
		if (c->busy || c->state == S_CLOSING || c->bev == NULL)
			continue; /* a lookup or the spool answers first (then 421) */
		smtp_reply(c, "421 4.3.2 %s Service shutting down, closing", mi->cfg->hostname);
		smtp_close_after_flush(c);
	}
}

void mail_smtp_close(struct mail_ingest *mi)
{
	if (mi->listener != NULL)
		evconnlistener_free(mi->listener);
	mi->listener = NULL;
	while (mi->conns != NULL) {
		struct smtp_conn *c = mi->conns;

		/* last chance for a plain session's last replies (421) if the loop
		 * stopped before they were flushed: the socket is non-blocking */
		if (c->bev != NULL && !c->tls &&
		    evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
			(void)evbuffer_write(bufferevent_get_output(c->bev), bufferevent_getfd(c->bev));
		smtp_free(c);
	}
	SSL_CTX_free(mi->tls);
	mi->tls = NULL;
}
