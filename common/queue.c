/*
 * queue — Redis Streams transport on hiredis (async) + libevent.
 *
 * Three connections per queue_t, each authenticated first (AUTH user pass):
 *   cmd      every non-blocking command: XADD, XACK, XAUTOCLAIM, XPENDING, DEL...
 *   consume  the blocking XREADGROUP on the consumed stream (queue_consume)
 *   reply    the blocking XREAD on this instance's reply stream (first request)
 * Commands on one connection execute in order, so a reply XADDed before the
 * XACK of its request is in Redis before the ack, without waiting for it.
 *
 * Consuming: entries are read in batches (COUNT), each unpacked, checked to be
 * addressed to the stream it came from, opened, checked for its deadline and
 * handed to the handler; the batch's acks go out as one XACK, followed at once
 * (same write) by one XDEL of the same entries: a handled entry leaves the
 * stream, so XLEN q:<service> is what is not handled yet (the queue's depth).
 * Entries left pending (RETRY, or a dead consumer) are reclaimed by a timer
 * running XAUTOCLAIM; their delivery count (XPENDING) decides when they are
 * copied to dl:<service>, then acked and deleted from the stream only once
 * dl:<service> holds the copy.
 *
 * Requests wait in a hash table keyed by envelope id, each with a deadline
 * timer; a reply is accepted only from the service the request went to and
 * only if it opens with that route's key.
 *
 * hiredis frees a reply when our callback returns, and calls every pending
 * callback with a NULL reply when a connection drops (then its disconnect
 * callback); reconnecting is driven only by the connect/disconnect callbacks.
 * queue_free sets ac->data to NULL before freeing a context, so callbacks run
 * by that free only release what they own.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "crypto.h"
#include "envelope.h"
#include "log.h"
#include "queue.h"

#define QUEUE_NAME_MAX 128
#define QUEUE_ID_MAX 64 /* a stream entry id "<ms>-<seq>" */
#define QUEUE_BACKOFF_MIN_MS 100
#define QUEUE_BACKOFF_MAX_MS 5000
#define QUEUE_REREAD_MS 1000 /* after a read error (e.g. NOGROUP) */
#define QUEUE_REPLY_MAXLEN "1000"
#define QUEUE_ERROR_MAX 512

enum queue_conn_kind { QUEUE_CONN_CMD, QUEUE_CONN_CONSUME, QUEUE_CONN_REPLY, QUEUE_CONN_N };

static const char *const queue_conn_names[QUEUE_CONN_N] = { "cmd", "consume", "reply" };

struct queue_conn {
	queue_t *q;
	enum queue_conn_kind kind;
	redisAsyncContext *ac; /* NULL while down */
	int wanted;	       /* opened once; reconnect when lost */
	int ready;	       /* AUTH answered OK */
	int reading;	       /* a blocking read is in flight */
	int lost;	       /* has been lost at least once */
	int backoff_ms;
	struct event *retry_ev; /* reconnect timer */
	struct event *read_ev;	/* delayed re-read after a read error */
};

/* A request waiting for its reply. */
struct queue_pending {
	struct queue_pending *next; /* hash chain */
	queue_t *q;
	char id[33];
	char callee[QUEUE_NAME_MAX]; /* the only sender whose reply is accepted */
	queue_reply_fn cb;
	void *arg;
	struct event *timer;
	int xadd_inflight; /* the XADD's callback still holds this */
	int finished;	   /* cb called; free when the XADD callback runs */
};

/* An entry reclaimed by XAUTOCLAIM, waiting for its delivery count. */
struct queue_reclaim {
	char id[QUEUE_ID_MAX];
	uint8_t *data;
	size_t len;
	int has_e;
};

struct queue {
	struct event_base *base;
	char *host, *user, *password, *service, *instance, *region;
	int port;
	int max_deliveries, claim_idle_ms, read_count, block_ms;
	long maxlen;
	char maxlen_s[24], count_s[16], block_s[16], idle_s[16];
	envelope_keys_t *keys;
	struct queue_conn conn[QUEUE_CONN_N];

	/* consumer */
	char *stream, *group_dl;
	queue_handler_fn handler;
	void *handler_ctx;
	struct event *claim_ev;
	int claim_inflight;
	char claim_cursor[QUEUE_ID_MAX];
	const char **ack_argv; /* XACK stream group id... for one batch (queue_ack_delete) */
	size_t *ack_lens;
	size_t ack_n;

	/* request/reply */
	char *reply_stream;
	char last_reply_id[QUEUE_ID_MAX];
	struct queue_pending **buckets;
	size_t nbuckets, npending;

	/* drain / free */
	unsigned long outstanding; /* commands awaiting a reply (not the reply XREAD) */
	int draining, drain_fired, freeing;
	void (*drain_done)(void *arg);
	void *drain_arg;
	struct event *drain_ev;

	struct queue_stats stats;
	unsigned long xdel_refused; /* XDELs refused in a row (logged at the first) */
};

static void queue_conn_open(struct queue_conn *c);
static void queue_consume_read(queue_t *q);
static void queue_reply_read(queue_t *q);
static void queue_on_reply_read(redisAsyncContext *ac, void *r, void *priv);
static void queue_drain_check(queue_t *q);

/* ------------------------------------------------------------- helpers */

/* strdup that treats NULL as "". */
static char *queue_strdup(const char *s)
{
	return strdup(s != NULL ? s : "");
}

/* 1 if s is a service, instance or stream name we are willing to use. */
static int queue_name_ok(const char *s)
{
	size_t n;

	if (s == NULL)
		return 0;
	n = strlen(s);
	if (n == 0 || n >= QUEUE_NAME_MAX - 8)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == ':' || c == '_' || c == '-' || c == '.'))
			return 0;
	}
	return 1;
}

/* The connection a callback runs for, or NULL once queue_free let go of it. */
static struct queue_conn *queue_conn_of(const redisAsyncContext *ac)
{
	return ac != NULL ? ac->data : NULL;
}

/* Send a command on connection kind; counted in outstanding. 0 or -1. */
static int queue_cmd(queue_t *q, enum queue_conn_kind kind, redisCallbackFn *fn, void *priv,
		     int argc, const char **argv, const size_t *lens)
{
	struct queue_conn *c = &q->conn[kind];

	if (c->ac == NULL || q->freeing)
		return -1;
	if (redisAsyncCommandArgv(c->ac, fn, priv, argc, argv, lens) != REDIS_OK)
		return -1;
	q->outstanding++;
	return 0;
}

/* Callback of fire-and-forget commands: count the answer, log an error. */
static void queue_on_simple(redisAsyncContext *ac, void *r, void *priv)
{
	struct queue_conn *c = queue_conn_of(ac);
	redisReply *reply = r;

	if (c == NULL)
		return;
	c->q->outstanding--;
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
		log_event(LOG_WARN, "redis command refused", LF_STR("error", reply->str),
			  LF_STR("what", priv != NULL ? (const char *)priv : "command"));
	queue_drain_check(c->q);
}

/* The "e" field of a stream entry's field array, or NULL. */
static const redisReply *queue_entry_field(const redisReply *fields, const char *name)
{
	if (fields == NULL || fields->type != REDIS_REPLY_ARRAY)
		return NULL;
	for (size_t i = 0; i + 1 < fields->elements; i += 2) {
		const redisReply *k = fields->element[i], *v = fields->element[i + 1];

		if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
		    k->len == strlen(name) && memcmp(k->str, name, k->len) == 0)
			return v;
	}
	return NULL;
}

/* --------------------------------------------------------- connections */

/* Fail every waiting request with status (connection lost or shutdown). */
static void queue_pending_fail_all(queue_t *q, int status);

/* Schedule the reconnect of c with exponential backoff. */
static void queue_conn_retry(struct queue_conn *c)
{
	struct timeval tv;

	if (c->q->freeing)
		return;
	c->backoff_ms = c->backoff_ms == 0 ? QUEUE_BACKOFF_MIN_MS : c->backoff_ms * 2;
	if (c->backoff_ms > QUEUE_BACKOFF_MAX_MS)
		c->backoff_ms = QUEUE_BACKOFF_MAX_MS;
	tv.tv_sec = c->backoff_ms / 1000;
	tv.tv_usec = (c->backoff_ms % 1000) * 1000;
	if (evtimer_add(c->retry_ev, &tv) != 0)
		log_error("queue: cannot arm the reconnect timer");
}

/* c is gone: forget the context, fail requests that depended on it, retry. */
static void queue_conn_lost(struct queue_conn *c, const char *why)
{
	queue_t *q = c->q;
	int was_up = c->ready || !c->lost;

	c->ac = NULL;
	c->ready = 0;
	c->reading = 0;
	c->lost = 1;
	if (q->freeing)
		return;
	/* Once per outage, not once per reconnect attempt. */
	log_event(was_up ? LOG_WARN : LOG_DEBUG, "redis connection lost",
		  LF_STR("conn", queue_conn_names[c->kind]),
		  LF_STR("error", why != NULL ? why : "closed"));
	if (c->kind != QUEUE_CONN_CONSUME)
		queue_pending_fail_all(q, QUEUE_EDOWN);
	queue_conn_retry(c);
	queue_drain_check(q);
}

/* hiredis: the TCP connection is up, or could not be made. */
static void queue_on_connect(const redisAsyncContext *ac, int status)
{
	struct queue_conn *c = queue_conn_of(ac);

	if (c == NULL || status == REDIS_OK)
		return;
	/* hiredis frees ac after this returns; its callbacks get NULL replies. */
	queue_conn_lost(c, ac->errstr);
}

/* hiredis: an established connection closed (error or our request). */
static void queue_on_disconnect(const redisAsyncContext *ac, int status)
{
	struct queue_conn *c = queue_conn_of(ac);

	if (c == NULL)
		return;
	queue_conn_lost(c, status == REDIS_OK ? "closed" : ac->errstr);
}

/* The answer to AUTH (or PING without a password): the connection is usable. */
static void queue_on_auth(redisAsyncContext *ac, void *r, void *priv)
{
	struct queue_conn *c = queue_conn_of(ac);
	redisReply *reply = r;
	queue_t *q;

	if (c == NULL)
		return;
	q = c->q;
	q->outstanding--;
	if (reply == NULL)
		return; /* dropped: the disconnect callback reconnects */
	if (reply->type == REDIS_REPLY_ERROR) {
		log_event(LOG_ERROR, "redis authentication refused",
			  LF_STR("conn", queue_conn_names[c->kind]), LF_STR("user", q->user),
			  LF_STR("error", reply->str));
		redisAsyncDisconnect(ac); /* then reconnect with backoff */
		return;
	}
	c->ready = 1;
	c->backoff_ms = 0;
	if (c->lost) {
		q->stats.reconnects++;
		log_event(LOG_INFO, "redis connection restored",
			  LF_STR("conn", queue_conn_names[c->kind]));
	}
	if (c->kind == QUEUE_CONN_CONSUME)
		queue_consume_read(q);
	else if (c->kind == QUEUE_CONN_REPLY)
		queue_reply_read(q);
	queue_drain_check(q);
}

/* Open connection c: connect, attach to libevent, send AUTH first. */
static void queue_conn_open(struct queue_conn *c)
{
	queue_t *q = c->q;
	redisAsyncContext *ac;
	const char *argv[3];
	int argc = 0;

	c->wanted = 1;
	c->ready = 0;
	c->reading = 0;
	ac = redisAsyncConnect(q->host, q->port);
	if (ac == NULL) {
		log_error("queue: out of memory connecting to redis");
		queue_conn_retry(c);
		return;
	}
	if (ac->err != 0) {
		if (!c->lost)
			log_event(LOG_WARN, "redis connect failed",
				  LF_STR("conn", queue_conn_names[c->kind]), LF_STR("error", ac->errstr));
		redisAsyncFree(ac);
		c->lost = 1;
		queue_conn_retry(c);
		return;
	}
	if (redisLibeventAttach(ac, q->base) != REDIS_OK ||
	    redisAsyncSetConnectCallback(ac, queue_on_connect) != REDIS_OK ||
	    redisAsyncSetDisconnectCallback(ac, queue_on_disconnect) != REDIS_OK) {
		log_error("queue: cannot attach the redis connection to the event loop");
		redisAsyncFree(ac);
		queue_conn_retry(c);
		return;
	}
	ac->data = c;
	c->ac = ac;
	if (q->password != NULL) {
		argv[argc++] = "AUTH";
		if (q->user[0] != '\0')
			argv[argc++] = q->user;
		argv[argc++] = q->password;
	} else {
		argv[argc++] = "PING";
	}
	if (queue_cmd(q, c->kind, queue_on_auth, NULL, argc, argv, NULL) != 0) {
		log_error("queue: cannot queue AUTH");
		c->ac = NULL;
		ac->data = NULL;
		redisAsyncFree(ac);
		queue_conn_retry(c);
	}
}

/* Reconnect timer. */
static void queue_on_retry(evutil_socket_t fd, short what, void *arg)
{
	struct queue_conn *c = arg;

	if (c->ac == NULL && !c->q->freeing)
		queue_conn_open(c);
}

/* Delayed re-read timer (after a read error). */
static void queue_on_reread(evutil_socket_t fd, short what, void *arg)
{
	struct queue_conn *c = arg;

	if (c->kind == QUEUE_CONN_CONSUME)
		queue_consume_read(c->q);
	else
		queue_reply_read(c->q);
}

/* Re-read after QUEUE_REREAD_MS (a read was refused, e.g. NOGROUP). */
static void queue_reread_later(struct queue_conn *c)
{
	struct timeval tv = { QUEUE_REREAD_MS / 1000, (QUEUE_REREAD_MS % 1000) * 1000 };

	if (evtimer_add(c->read_ev, &tv) != 0)
		log_error("queue: cannot arm the re-read timer");
}

/* ------------------------------------------------------------ sending */

/* XADD a packed envelope to stream with MAXLEN ~ maxlen_s. */
static int queue_xadd(queue_t *q, const char *stream, const char *maxlen_s, const uint8_t *buf,
		      size_t len, redisCallbackFn *fn, void *priv)
{
	const char *argv[] = { "XADD", stream, "MAXLEN", "~", maxlen_s, "*", "e", (const char *)buf };
	size_t lens[] = { 4, strlen(stream), 6, 1, strlen(maxlen_s), 1, 1, len };

	return queue_cmd(q, QUEUE_CONN_CMD, fn, priv, 8, argv, lens);
}

/* Seal env (header final) with pt, pack and XADD it to env->stream. */
static int queue_seal_send(queue_t *q, Ward__Envelope *env, const uint8_t *pt, size_t pt_len,
			   const char *maxlen_s, redisCallbackFn *fn, void *priv,
			   const char **error_r)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	int ret = -1;

	if (envelope_seal(env, q->keys, pt, pt_len, error_r) != 0)
		return -1;
	buf = envelope_pack(env, &len);
	if (buf == NULL) {
		*error_r = "cannot pack the envelope";
		goto out;
	}
	if (queue_xadd(q, env->stream, maxlen_s, buf, len, fn, priv) != 0) {
		*error_r = "redis connection down";
		goto out;
	}
	ret = 0;
out:
	free(buf);
	envelope_clear_payload(env);
	return ret;
}

/* Fill the common header of an outgoing request or one-way message. */
static int queue_msg_envelope(queue_t *q, const struct queue_msg *msg, Ward__Envelope *env,
			      char id[33], int default_timeout, const char **error_r)
{
	int timeout;

	if (msg == NULL || !queue_name_ok(msg->dest) || msg->method == NULL ||
	    msg->method[0] == '\0') {
		*error_r = "message needs a destination stream and a method";
		return -1;
	}
	if ((msg->payload == NULL && msg->len > 0) || msg->len > ENVELOPE_MAX_PAYLOAD) {
		*error_r = "bad or oversized payload";
		return -1;
	}
	if (crypto_random_id(id) != 0) {
		*error_r = "no randomness for the envelope id";
		return -1;
	}
	timeout = msg->timeout_ms > 0 ? msg->timeout_ms : default_timeout;
	env->version = ENVELOPE_VERSION;
	env->id = id;
	env->tenant = (char *)(msg->tenant != NULL ? msg->tenant : "");
	env->region = q->region;
	env->sender = q->service;
	env->method = (char *)msg->method;
	env->principal = (Ward__Principal *)msg->principal;
	env->deadline_ms = timeout > 0 ? envelope_now_ms() + timeout : 0;
	env->idempotency_key = (char *)(msg->idempotency_key != NULL ? msg->idempotency_key : "");
	env->request_id = (char *)(msg->request_id != NULL ? msg->request_id : "");
	env->stream = (char *)msg->dest;
	return 0;
}

/* One-way send: sealed, XADDed, not waited for. */
int queue_send(queue_t *q, const struct queue_msg *msg, const char **error_r)
{
	Ward__Envelope env = WARD__ENVELOPE__INIT;
	char id[33];

	if (q == NULL || q->freeing) {
		*error_r = "queue closed";
		return -1;
	}
	if (queue_msg_envelope(q, msg, &env, id, 0, error_r) != 0)
		return -1;
	if (queue_seal_send(q, &env, msg->payload, msg->len, q->maxlen_s, queue_on_simple,
			    "XADD", error_r) != 0)
		return -1;
	q->stats.sent++;
	return 0;
}

/* Run a raw command on the command connection; the reply is only checked. */
int queue_command(queue_t *q, int argc, const char **argv, const size_t *argvlen)
{
	if (q == NULL || argc <= 0 || argv == NULL)
		return -1;
	return queue_cmd(q, QUEUE_CONN_CMD, queue_on_simple, NULL, argc, argv, argvlen);
}

/* ------------------------------------------------------------ requests */

/* Bucket of a request id (random hex, so its first digits hash well). */
static size_t queue_bucket(const queue_t *q, const char *id)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < 16 && id[i] != '\0'; i++)
		h = (h ^ (unsigned char)id[i]) * 1099511628211ULL;
	return (size_t)(h & (q->nbuckets - 1));
}

/* Grow the request table when it gets crowded; failure just keeps chains longer. */
static void queue_pending_grow(queue_t *q)
{
	size_t n = q->nbuckets * 2, old = q->nbuckets;
	struct queue_pending **nb, **ob = q->buckets;

	if (q->npending < q->nbuckets * 2 || n > (SIZE_MAX / sizeof *nb))
		return;
	nb = calloc(n, sizeof *nb);
	if (nb == NULL)
		return;
	q->buckets = nb;
	q->nbuckets = n;
	for (size_t i = 0; i < old; i++) {
		struct queue_pending *p = ob[i], *next;

		for (; p != NULL; p = next) {
			size_t b = queue_bucket(q, p->id);

			next = p->next;
			p->next = nb[b];
			nb[b] = p;
		}
	}
	free(ob);
}

/* Find a waiting request by id. */
static struct queue_pending *queue_pending_find(queue_t *q, const char *id)
{
	struct queue_pending *p;

	for (p = q->buckets[queue_bucket(q, id)]; p != NULL; p = p->next)
		if (strcmp(p->id, id) == 0)
			return p;
	return NULL;
}

/* Take p out of the table. */
static void queue_pending_unlink(queue_t *q, struct queue_pending *p)
{
	struct queue_pending **pp = &q->buckets[queue_bucket(q, p->id)];

	for (; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			p->next = NULL;
			q->npending--;
			return;
		}
	}
}

/* Complete a request: unlink, stop its timer, call cb once, free when possible. */
static void queue_pending_finish(struct queue_pending *p, int status, const Ward__Envelope *env,
				 const uint8_t *pt, size_t len)
{
	queue_t *q = p->q;

	if (p->finished)
		return;
	p->finished = 1;
	queue_pending_unlink(q, p);
	if (p->timer != NULL) {
		event_free(p->timer);
		p->timer = NULL;
	}
	p->cb(p->arg, status, env, pt, len);
	if (!p->xadd_inflight)
		free(p);
	queue_drain_check(q);
}

static void queue_pending_fail_all(queue_t *q, int status)
{
	for (size_t i = 0; i < q->nbuckets; i++) {
		while (q->buckets[i] != NULL)
			queue_pending_finish(q->buckets[i], status, NULL, NULL, 0);
	}
}

/* Deadline of a request. */
static void queue_on_request_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct queue_pending *p = arg;

	p->q->stats.timeouts++;
	queue_pending_finish(p, QUEUE_ETIMEDOUT, NULL, NULL, 0);
}

/* Answer to a request's XADD: a refusal fails the request at once. */
static void queue_on_request_sent(redisAsyncContext *ac, void *r, void *priv)
{
	struct queue_conn *c = queue_conn_of(ac);
	struct queue_pending *p = priv;
	redisReply *reply = r;

	p->xadd_inflight = 0;
	if (c == NULL || p->finished) {
		if (c != NULL)
			c->q->outstanding--;
		if (p->finished)
			free(p);
		if (c != NULL)
			queue_drain_check(c->q);
		return;
	}
	c->q->outstanding--;
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
		log_event(LOG_WARN, "request refused by redis", LF_STR("error", reply->str),
			  LF_STR("stream", p->callee));
		queue_pending_finish(p, QUEUE_EREFUSED, NULL, NULL, 0);
		return;
	}
	/* NULL reply: the disconnect callback fails the request. */
	queue_drain_check(c->q);
}

/* Start the reply reader: clear stale replies of a previous process, then read. */
static void queue_reply_start(queue_t *q)
{
	const char *argv[] = { "DEL", q->reply_stream };

	if (q->conn[QUEUE_CONN_REPLY].wanted)
		return;
	snprintf(q->last_reply_id, sizeof q->last_reply_id, "0-0");
	/* Ordered before our first request on the same connection. */
	if (queue_cmd(q, QUEUE_CONN_CMD, queue_on_simple, "DEL", 2, argv, NULL) != 0)
		log_warn("queue: cannot clear the reply stream %s", q->reply_stream);
	queue_conn_open(&q->conn[QUEUE_CONN_REPLY]);
}

/* Request/reply: cb runs exactly once. */
int queue_request(queue_t *q, const struct queue_msg *msg, queue_reply_fn cb, void *arg,
		  const char **error_r)
{
	Ward__Envelope env = WARD__ENVELOPE__INIT;
	struct queue_pending *p;
	struct timeval tv;
	int timeout;

	if (q == NULL || q->freeing || cb == NULL) {
		*error_r = q == NULL || q->freeing ? "queue closed" : "no reply callback";
		return -1;
	}
	if (q->conn[QUEUE_CONN_CMD].ac == NULL) {
		*error_r = "redis connection down";
		return -1;
	}
	p = calloc(1, sizeof *p);
	if (p == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	p->q = q;
	p->cb = cb;
	p->arg = arg;
	if (queue_msg_envelope(q, msg, &env, p->id, 5000, error_r) != 0)
		goto fail;
	/* Replies are accepted only from the service the request is for. */
	snprintf(p->callee, sizeof p->callee, "%s",
		 strncmp(msg->dest, "q:", 2) == 0 ? msg->dest + 2 : msg->dest);
	env.reply_to = q->reply_stream;
	timeout = msg->timeout_ms > 0 ? msg->timeout_ms : 5000;
	p->timer = evtimer_new(q->base, queue_on_request_timeout, p);
	if (p->timer == NULL) {
		*error_r = "out of memory";
		goto fail;
	}
	queue_reply_start(q);
	if (queue_seal_send(q, &env, msg->payload, msg->len, q->maxlen_s, queue_on_request_sent, p,
			    error_r) != 0)
		goto fail;
	p->xadd_inflight = 1;
	tv.tv_sec = timeout / 1000;
	tv.tv_usec = (timeout % 1000) * 1000;
	if (evtimer_add(p->timer, &tv) != 0)
		log_error("queue: cannot arm a request timer"); /* still bounded by EDOWN/free */
	{
		size_t b = queue_bucket(q, p->id);

		p->next = q->buckets[b];
		q->buckets[b] = p;
		q->npending++;
	}
	q->stats.sent++;
	queue_pending_grow(q);
	queue_reply_read(q); /* in case it stopped (drain) */
	return 0;
fail:
	if (p->timer != NULL)
		event_free(p->timer);
	free(p);
	return -1;
}

/* Issue the blocking XREAD on our reply stream. */
static void queue_reply_read(queue_t *q)
{
	struct queue_conn *c = &q->conn[QUEUE_CONN_REPLY];
	const char *argv[] = { "XREAD", "COUNT", q->count_s, "BLOCK", q->block_s,
			       "STREAMS", q->reply_stream, q->last_reply_id };

	if (!c->ready || c->reading || q->freeing || (q->draining && q->npending == 0))
		return;
	/* Not counted in outstanding: it only matters while requests wait. */
	if (redisAsyncCommandArgv(c->ac, queue_on_reply_read, NULL, 8, argv, NULL) != REDIS_OK) {
		log_warn("queue: cannot issue XREAD on %s", q->reply_stream);
		return;
	}
	c->reading = 1;
}

/* One reply entry: check, match, open, complete its request. */
static void queue_reply_entry(queue_t *q, const redisReply *fields)
{
	const redisReply *e = queue_entry_field(fields, "e");
	Ward__Envelope *env = NULL;
	struct queue_pending *p;
	const char *error = NULL;
	uint8_t *pt = NULL;
	size_t pt_len = 0;
	int status;

	q->stats.replies_dropped++; /* until it completes a request */
	if (e == NULL)
		return;
	env = envelope_unpack((const uint8_t *)e->str, e->len, &error);
	if (env == NULL) {
		log_event(LOG_WARN, "reply refused", LF_STR("error", error));
		return;
	}
	if (strcmp(env->stream, q->reply_stream) != 0 || env->correlation_id[0] == '\0') {
		log_event(LOG_WARN, "reply refused", LF_STR("error", "not addressed to us"));
		goto out;
	}
	p = queue_pending_find(q, env->correlation_id);
	if (p == NULL) {
		log_event(LOG_INFO, "late or unknown reply dropped", LF_STR("id", env->correlation_id),
			  LF_STR("sender", env->sender));
		goto out;
	}
	if (strcmp(env->sender, p->callee) != 0) {
		log_event(LOG_WARN, "reply refused", LF_STR("error", "reply from the wrong service"),
			  LF_STR("sender", env->sender), LF_STR("expected", p->callee));
		goto out;
	}
	if (envelope_open(env, q->keys, &pt, &pt_len, &error) != 0) {
		q->stats.rejected_open++;
		log_event(LOG_WARN, "reply refused", LF_STR("error", error),
			  LF_STR("sender", env->sender));
		goto out;
	}
	q->stats.replies++;
	q->stats.replies_dropped--;
	/* Negative codes are ours (transport errors): a peer cannot claim them. */
	status = env->status < 0 ? 502 : env->status;
	queue_pending_finish(p, status, env, pt, pt_len);
out:
	if (pt != NULL) {
		crypto_wipe(pt, pt_len);
		free(pt);
	}
	ward__envelope__free_unpacked(env, NULL);
}

/* Answer to the reply XREAD: process entries, read again. */
static void queue_on_reply_read(redisAsyncContext *ac, void *r, void *priv)
{
	struct queue_conn *c = queue_conn_of(ac);
	redisReply *reply = r;
	queue_t *q;

	if (c == NULL)
		return;
	q = c->q;
	if (reply == NULL) {
		c->reading = 0;
		return;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		c->reading = 0;
		log_event(LOG_WARN, "reply stream read refused", LF_STR("error", reply->str));
		queue_reread_later(c);
		return;
	}
	/* reading stays set while the batch is handled: a reply callback that sends a
	 * new request must not start a second XREAD from the middle of this batch. */
	if (reply->type == REDIS_REPLY_ARRAY) {
		for (size_t s = 0; s < reply->elements; s++) {
			const redisReply *st = reply->element[s];

			if (st->type != REDIS_REPLY_ARRAY || st->elements != 2 ||
			    st->element[1]->type != REDIS_REPLY_ARRAY)
				continue;
			for (size_t i = 0; i < st->element[1]->elements; i++) {
				const redisReply *ent = st->element[1]->element[i];

				if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2 ||
				    ent->element[0]->type != REDIS_REPLY_STRING ||
				    ent->element[0]->len >= sizeof q->last_reply_id)
					continue;
				memcpy(q->last_reply_id, ent->element[0]->str,
				       ent->element[0]->len);
				q->last_reply_id[ent->element[0]->len] = '\0';
				queue_reply_entry(q, ent->element[1]);
			}
		}
	}
	c->reading = 0;
	queue_reply_read(q);
	queue_drain_check(q);
}

/* ----------------------------------------------------------- consuming */

/* Add an entry id to the batch's XACK (ids point into the current reply). */
static void queue_ack_add(queue_t *q, const char *id, size_t len)
{
	if (q->ack_n >= (size_t)q->read_count + 3)
		return; /* cannot happen: one batch is at most read_count entries */
	q->ack_argv[q->ack_n] = id;
	q->ack_lens[q->ack_n] = len;
	q->ack_n++;
}

/* Answer to an XDEL of handled entries: count them. A refusal (a policy without
 * +xdel) leaves them to MAXLEN, and XLEN counts them meanwhile: logged once per
 * run of refusals, not once per batch. */
static void queue_on_xdel(redisAsyncContext *ac, void *r, void *priv)
{
	struct queue_conn *c = queue_conn_of(ac);
	redisReply *reply = r;
	queue_t *q;

	if (c == NULL)
		return;
	q = c->q;
	q->outstanding--;
	if (reply != NULL && reply->type == REDIS_REPLY_INTEGER) {
		if (reply->integer > 0)
			q->stats.deleted += (unsigned long)reply->integer;
		q->xdel_refused = 0;
	} else if (reply != NULL && reply->type == REDIS_REPLY_ERROR && q->xdel_refused++ == 0) {
		log_event(LOG_WARN, "redis refused to delete handled entries (MAXLEN trims them)",
			  LF_STR("stream", q->stream), LF_STR("error", reply->str));
	}
	queue_drain_check(q);
}

/* XACK then XDEL of the ids in argv[3..argc-1]; argv[0..2] are scratch slots (the
 * layout of ack_argv). Both go out pipelined on the command connection (one write,
 * run in order by Redis), so an entry is deleted only once acked, and acked only
 * after its effect (the caller's rule): a handled entry is of no more use (a dead
 * letter has its own copy in dl:<service> by then), and deleting it keeps the stream
 * as long as what is not handled yet: XLEN q:<service> is the queue's depth, MAXLEN
 * trims only a real backlog, Redis's memory and AOF rewrites stay small. Only this
 * service's group reads the stream, so no other group still needs an entry.
 * 0, or -1 if the XACK could not be sent (the entries stay pending, reclaimed). */
static int queue_ack_delete(queue_t *q, const char **argv, size_t *lens, size_t argc)
{
	size_t n = argc - 3;

	argv[0] = "XACK";
	lens[0] = 4;
	argv[1] = q->stream;
	lens[1] = strlen(q->stream);
	argv[2] = q->service;
	lens[2] = strlen(q->service);
	if (queue_cmd(q, QUEUE_CONN_CMD, queue_on_simple, "XACK", (int)argc, argv, lens) != 0)
		return -1;
	q->stats.acked += n;
	/* XDEL <stream> <id>...: the same arguments from slot 1 on (hiredis formats a
	 * command at once, so the slots may change right after). */
	argv[1] = "XDEL";
	lens[1] = 4;
	argv[2] = q->stream;
	lens[2] = strlen(q->stream);
	if (queue_cmd(q, QUEUE_CONN_CMD, queue_on_xdel, NULL, (int)argc - 1, argv + 1, lens + 1) != 0)
		log_warn("queue: cannot delete %zu handled entries (MAXLEN trims them)", n);
	return 0;
}

/* Send the batch's XACK and XDEL (pipelined, after the batch's replies). */
static void queue_ack_flush(queue_t *q)
{
	size_t n = q->ack_n - 3;

	if (n == 0)
		return;
	if (queue_ack_delete(q, q->ack_argv, q->ack_lens, q->ack_n) != 0)
		log_warn("queue: cannot ack %zu entries (left pending, will be reclaimed)", n);
	q->ack_n = 3;
}

/* A dead letter on its way: the entry it copies, acked once dl:<service> has it. */
struct queue_dead {
	char id[QUEUE_ID_MAX];
};

/* Answer to a dead letter's XADD: only now is the entry acked and deleted from the
 * stream; refused or lost, it stays pending and is dead-lettered again when
 * reclaimed (never gone from both streams). */
static void queue_on_dead_lettered(redisAsyncContext *ac, void *r, void *priv)
{
	struct queue_conn *c = queue_conn_of(ac);
	struct queue_dead *d = priv;
	redisReply *reply = r;
	const char *argv[4];
	size_t lens[4];
	queue_t *q;

	if (c == NULL)
		goto out;
	q = c->q;
	q->outstanding--;
	if (reply == NULL)
		goto check; /* connection lost: still pending */
	if (reply->type != REDIS_REPLY_STRING) {
		log_event(LOG_ERROR, "dead letter refused by redis, entry left pending",
			  LF_STR("stream", q->stream), LF_STR("id", d->id),
			  LF_STR("error", reply->type == REDIS_REPLY_ERROR ? reply->str
									 : "unexpected reply"));
		goto check;
	}
	q->stats.dead_lettered++;
	argv[3] = d->id;
	lens[3] = strlen(d->id);
	if (queue_ack_delete(q, argv, lens, 4) != 0)
		log_warn("queue: cannot ack dead-lettered entry %s (left pending)", d->id);
check:
	queue_drain_check(q);
out:
	free(d);
}

/* XADD the original bytes of an entry to dl:<service> with why it failed; the entry
 * is acked and deleted once that XADD is answered (queue_on_dead_lettered), so the
 * caller leaves it out of its batch's ack. */
static void queue_dead_letter(queue_t *q, const char *id, const uint8_t *data, size_t len,
			      const char *error, long deliveries)
{
	char dl_n[24];
	const char *argv[] = { "XADD",	 q->group_dl, "MAXLEN", "~",	  q->maxlen_s, "*",
			       "e",	 (const char *)data,    "error", error,
			       "stream", q->stream,   "id",	id,	  "deliveries", dl_n };
	size_t lens[16];
	struct queue_dead *d;

	snprintf(dl_n, sizeof dl_n, "%ld", deliveries);
	argv[7] = data != NULL ? (const char *)data : "";
	for (size_t i = 0; i < 16; i++)
		lens[i] = i == 7 ? (data != NULL ? len : 0) : strlen(argv[i]);
	d = calloc(1, sizeof *d);
	if (d != NULL && strlen(id) < sizeof d->id)
		memcpy(d->id, id, strlen(id) + 1);
	if (d == NULL || d->id[0] == '\0' ||
	    queue_cmd(q, QUEUE_CONN_CMD, queue_on_dead_lettered, d, 16, argv, lens) != 0) {
		free(d);
		log_event(LOG_ERROR, "cannot dead-letter an entry, left pending", LF_STR("id", id),
			  LF_STR("error", error));
		return;
	}
	log_event(LOG_WARN, "entry dead-lettered", LF_STR("stream", q->stream), LF_STR("id", id),
		  LF_STR("error", error), LF_INT("deliveries", deliveries));
}

/* Send the handler's answer to env->reply_to, sealed on route service → caller. */
static void queue_send_reply(queue_t *q, const Ward__Envelope *req, int status, const char *error,
			     const uint8_t *data, size_t len)
{
	Ward__Envelope env = WARD__ENVELOPE__INIT;
	char id[33], prefix[QUEUE_NAME_MAX];
	const char *err = NULL;

	if (req->reply_to[0] == '\0')
		return;
	/* A reply goes only to the authenticated sender's own reply streams. */
	snprintf(prefix, sizeof prefix, "r:%s:", req->sender);
	if (strncmp(req->reply_to, prefix, strlen(prefix)) != 0) {
		log_event(LOG_WARN, "reply_to is not the sender's, no reply sent",
			  LF_STR("sender", req->sender), LF_STR("reply_to", req->reply_to));
		return;
	}
	if (crypto_random_id(id) != 0) {
		log_error("queue: no randomness for a reply id");
		return;
	}
	env.version = ENVELOPE_VERSION;
	env.id = id;
	env.tenant = req->tenant;
	env.region = q->region;
	env.sender = q->service;
	env.method = req->method;
	env.deadline_ms = req->deadline_ms;
	env.correlation_id = req->id;
	env.status = status;
	env.error = (char *)(error != NULL && envelope_string_ok(error) ? error : "");
	if (error != NULL && env.error[0] == '\0' && error[0] != '\0')
		env.error = "error";
	env.stream = req->reply_to;
	env.request_id = req->request_id;
	if (data == NULL)
		len = 0;
	if (len > ENVELOPE_MAX_PAYLOAD) {
		log_event(LOG_ERROR, "reply too large, sending an error instead",
			  LF_STR("method", req->method), LF_INT("len", (long long)len));
		env.status = 500;
		env.error = "reply too large";
		len = 0;
	}
	if (queue_seal_send(q, &env, data, len, QUEUE_REPLY_MAXLEN, queue_on_simple, "XADD reply",
			    &err) != 0)
		log_event(LOG_WARN, "cannot send a reply", LF_STR("error", err),
			  LF_STR("reply_to", req->reply_to));
}

void queue_reply_later(queue_t *q, const Ward__Envelope *req, int status, const char *error,
		       const uint8_t *data, size_t len)
{
	queue_send_reply(q, req, status, error, data, len);
}

/* Handle one entry of stream: 1 if it must be acked now, 0 to leave it pending or
 * when it is dead-lettered (acked once dl:<service> has it). */
static int queue_process(queue_t *q, const char *id, const uint8_t *data, size_t len, int has_e,
			 long deliveries)
{
	Ward__Envelope *env = NULL;
	struct queue_reply rep = { 0 };
	const char *error = NULL, *herr = NULL;
	char why[QUEUE_ERROR_MAX];
	uint8_t *pt = NULL;
	size_t pt_len = 0;
	queue_result_t res;
	int ack = 1;

	if (!has_e) {
		queue_dead_letter(q, id, NULL, 0, "entry has no \"e\" field", deliveries);
		return 0;
	}
	env = envelope_unpack(data, len, &error);
	if (env == NULL) {
		snprintf(why, sizeof why, "refused: %s", error);
		queue_dead_letter(q, id, data, len, why, deliveries);
		return 0;
	}
	if (strcmp(env->stream, q->stream) != 0) {
		queue_dead_letter(q, id, data, len, "envelope addressed to another stream",
				  deliveries);
		ack = 0;
		goto out;
	}
	if (envelope_open(env, q->keys, &pt, &pt_len, &error) != 0) {
		q->stats.rejected_open++;
		snprintf(why, sizeof why, "cannot open: %s", error);
		queue_dead_letter(q, id, data, len, why, deliveries);
		ack = 0;
		goto out;
	}
	if (env->deadline_ms != 0 && env->deadline_ms < envelope_now_ms()) {
		log_event(LOG_WARN, "expired entry dropped", LF_STR("id", id),
			  LF_STR("method", env->method), LF_STR("sender", env->sender),
			  LF_STR("request_id", env->request_id));
		goto out;
	}
	log_set_request_id(env->request_id[0] != '\0' ? env->request_id : NULL);
	res = q->handler(q->handler_ctx, env, pt, pt_len, &rep, &herr);
	q->stats.handled++;
	switch (res) {
	case QUEUE_DONE:
		if (!rep.deferred)
			queue_send_reply(q, env, rep.status, rep.error, rep.data, rep.len);
		break;
	case QUEUE_RETRY:
		if (deliveries < q->max_deliveries) {
			q->stats.retried++;
			ack = 0;
			break;
		}
		queue_dead_letter(q, id, data, len, herr != NULL ? herr : "handler failed",
				  deliveries);
		ack = 0;
		break;
	case QUEUE_REJECT:
	default:
		if (herr == NULL)
			herr = res == QUEUE_REJECT ? "rejected by the handler"
						   : "handler returned an unknown result";
		queue_send_reply(q, env, rep.status > 0 ? rep.status : 500,
				 rep.error != NULL ? rep.error : herr, rep.data, rep.len);
		queue_dead_letter(q, id, data, len, herr, deliveries);
		ack = 0;
		break;
	}
	log_set_request_id(NULL);
out:
	if (rep.data != NULL)
		free(rep.data);
	if (pt != NULL) {
		crypto_wipe(pt, pt_len);
		free(pt);
	}
	ward__envelope__free_unpacked(env, NULL);
	return ack;
}

/* Answer to XREADGROUP: handle the batch, ack it in one XACK, read again. */
static void queue_on_consume_read(redisAsyncContext *ac, void *r, void *priv)
{
	struct queue_conn *c = queue_conn_of(ac);
	redisReply *reply = r;
	queue_t *q;

	if (c == NULL)
		return;
	q = c->q;
	q->outstanding--;
	if (reply == NULL) {
		c->reading = 0;
		return; /* dropped: reading resumes after the reconnect */
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		c->reading = 0;
		log_event(LOG_WARN, "XREADGROUP refused", LF_STR("stream", q->stream),
			  LF_STR("error", reply->str));
		queue_reread_later(c);
		queue_drain_check(q);
		return;
	}
	if (reply->type == REDIS_REPLY_ARRAY) {
		q->ack_n = 3;
		for (size_t s = 0; s < reply->elements; s++) {
			const redisReply *st = reply->element[s];

			if (st->type != REDIS_REPLY_ARRAY || st->elements != 2 ||
			    st->element[1]->type != REDIS_REPLY_ARRAY)
				continue;
			for (size_t i = 0; i < st->element[1]->elements; i++) {
				const redisReply *ent = st->element[1]->element[i], *e;
				const redisReply *eid;

				if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2 ||
				    ent->element[0]->type != REDIS_REPLY_STRING)
					continue;
				eid = ent->element[0];
				e = queue_entry_field(ent->element[1], "e");
				if (queue_process(q, eid->str, e != NULL ? (const uint8_t *)e->str : NULL,
						  e != NULL ? e->len : 0, e != NULL, 1))
					queue_ack_add(q, eid->str, eid->len);
			}
		}
		queue_ack_flush(q);
	}
	c->reading = 0; /* only now: no second XREADGROUP while the batch runs */
	queue_consume_read(q);
	queue_drain_check(q);
}

/* Issue the blocking XREADGROUP for new entries. */
static void queue_consume_read(queue_t *q)
{
	struct queue_conn *c = &q->conn[QUEUE_CONN_CONSUME];
	const char *argv[] = { "XREADGROUP", "GROUP", q->service, q->instance, "COUNT", q->count_s,
			       "BLOCK",      q->block_s, "STREAMS", q->stream, ">" };

	if (!c->ready || c->reading || q->draining || q->freeing || q->stream == NULL)
		return;
	if (queue_cmd(q, QUEUE_CONN_CONSUME, queue_on_consume_read, NULL, 11, argv, NULL) != 0) {
		log_warn("queue: cannot issue XREADGROUP on %s", q->stream);
		return;
	}
	c->reading = 1;
}

/* ----------------------------------------------------------- reclaiming */

static void queue_reclaim_free(struct queue_reclaim *rc)
{
	if (rc == NULL)
		return;
	free(rc->data);
	free(rc);
}

/* XPENDING answer for one reclaimed entry: dead-letter or process it. */
static void queue_on_xpending(redisAsyncContext *ac, void *r, void *priv)
{
	struct queue_conn *c = queue_conn_of(ac);
	struct queue_reclaim *rc = priv;
	redisReply *reply = r;
	const redisReply *row;
	queue_t *q;
	long long deliveries;

	if (c == NULL)
		goto out;
	q = c->q;
	q->outstanding--;
	if (reply == NULL)
		goto out; /* stays pending; reclaimed again later */
	if (reply->type != REDIS_REPLY_ARRAY) {
		log_event(LOG_WARN, "XPENDING refused", LF_STR("error",
			  reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply"));
		goto check;
	}
	if (reply->elements == 0)
		goto check; /* acked meanwhile by someone else */
	row = reply->element[0];
	if (row->type != REDIS_REPLY_ARRAY || row->elements < 4 ||
	    row->element[3]->type != REDIS_REPLY_INTEGER)
		goto check;
	deliveries = row->element[3]->integer;
	q->ack_n = 3;
	if (deliveries > q->max_deliveries) {
		char why[96];

		snprintf(why, sizeof why, "delivered %lld times without completion", deliveries);
		queue_dead_letter(q, rc->id, rc->data, rc->len, why, (long)deliveries);
	} else if (queue_process(q, rc->id, rc->data, rc->len, rc->has_e, (long)deliveries)) {
		queue_ack_add(q, rc->id, strlen(rc->id));
	}
	queue_ack_flush(q);
check:
	queue_drain_check(q);
out:
	queue_reclaim_free(rc);
}

/* XAUTOCLAIM answer ([cursor, entries, deleted]): ask each entry's delivery count. */
static void queue_on_autoclaim(redisAsyncContext *ac, void *r, void *priv)
{
	struct queue_conn *c = queue_conn_of(ac);
	redisReply *reply = r;
	const redisReply *entries;
	queue_t *q;

	if (c == NULL)
		return;
	q = c->q;
	q->outstanding--;
	q->claim_inflight = 0;
	if (reply == NULL)
		return;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    reply->element[1]->type != REDIS_REPLY_ARRAY) {
		log_event(LOG_WARN, "XAUTOCLAIM refused", LF_STR("error",
			  reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply"));
		goto out;
	}
	if (reply->element[0]->len < sizeof q->claim_cursor)
		snprintf(q->claim_cursor, sizeof q->claim_cursor, "%s", reply->element[0]->str);
	entries = reply->element[1];
	for (size_t i = 0; i < entries->elements; i++) {
		const redisReply *ent = entries->element[i], *e;
		struct queue_reclaim *rc;

		if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2 ||
		    ent->element[0]->type != REDIS_REPLY_STRING ||
		    ent->element[0]->len >= QUEUE_ID_MAX)
			continue;
		rc = calloc(1, sizeof *rc);
		if (rc == NULL)
			continue;
		memcpy(rc->id, ent->element[0]->str, ent->element[0]->len);
		e = queue_entry_field(ent->element[1], "e");
		if (e != NULL) {
			rc->has_e = 1;
			rc->len = e->len;
			rc->data = malloc(e->len > 0 ? e->len : 1);
			if (rc->data == NULL) {
				free(rc);
				continue;
			}
			memcpy(rc->data, e->str, e->len);
		}
		q->stats.reclaimed++;
		{
			const char *argv[] = { "XPENDING", q->stream, q->service, "IDLE", "0",
					       rc->id, rc->id, "1" };

			if (queue_cmd(q, QUEUE_CONN_CMD, queue_on_xpending, rc, 8, argv, NULL) != 0)
				queue_reclaim_free(rc);
		}
	}
out:
	queue_drain_check(q);
}

/* Reclaim timer: XAUTOCLAIM entries idle longer than claim_idle_ms. */
static void queue_on_claim_timer(evutil_socket_t fd, short what, void *arg)
{
	queue_t *q = arg;
	const char *argv[] = { "XAUTOCLAIM", q->stream,	  q->service, q->instance, q->idle_s,
			       q->claim_cursor, "COUNT", q->count_s };

	if (q->stream == NULL || q->draining || q->freeing || q->claim_inflight ||
	    !q->conn[QUEUE_CONN_CMD].ready)
		return;
	if (queue_cmd(q, QUEUE_CONN_CMD, queue_on_autoclaim, NULL, 8, argv, NULL) == 0)
		q->claim_inflight = 1;
}

/* Start consuming stream with handler. */
int queue_consume(queue_t *q, const char *stream, queue_handler_fn handler, void *ctx,
		  const char **error_r)
{
	struct timeval tv;
	int every;

	if (q == NULL || handler == NULL || !queue_name_ok(stream)) {
		*error_r = "queue_consume needs a stream name and a handler";
		return -1;
	}
	if (q->stream != NULL) {
		*error_r = "this queue already consumes a stream";
		return -1;
	}
	q->stream = strdup(stream);
	q->ack_argv = calloc((size_t)q->read_count + 3, sizeof *q->ack_argv);
	q->ack_lens = calloc((size_t)q->read_count + 3, sizeof *q->ack_lens);
	q->claim_ev = event_new(q->base, -1, EV_PERSIST, queue_on_claim_timer, q);
	if (q->stream == NULL || q->ack_argv == NULL || q->ack_lens == NULL || q->claim_ev == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	q->ack_n = 3; /* slots 0..2: the command, stream and group (queue_ack_delete) */
	q->handler = handler;
	q->handler_ctx = ctx;
	every = q->claim_idle_ms / 2 > 10 ? q->claim_idle_ms / 2 : 10;
	tv.tv_sec = every / 1000;
	tv.tv_usec = (every % 1000) * 1000;
	if (event_add(q->claim_ev, &tv) != 0) {
		*error_r = "cannot arm the reclaim timer";
		return -1;
	}
	queue_conn_open(&q->conn[QUEUE_CONN_CONSUME]);
	return 0;
}

/* --------------------------------------------------------- drain, state */

/* Run the drain callback (from the loop, never inside a hiredis callback). */
static void queue_on_drained(evutil_socket_t fd, short what, void *arg)
{
	queue_t *q = arg;

	if (q->drain_done != NULL)
		q->drain_done(q->drain_arg);
}

/* If draining and nothing is left in flight, schedule the drain callback. */
static void queue_drain_check(queue_t *q)
{
	if (!q->draining || q->drain_fired || q->freeing)
		return;
	if ((q->outstanding == 0 && q->npending == 0) || q->conn[QUEUE_CONN_CMD].ac == NULL) {
		q->drain_fired = 1;
		event_active(q->drain_ev, EV_TIMEOUT, 0);
	}
}

/* Stop reading; done(arg) once handled entries are acked and writes answered. */
void queue_drain(queue_t *q, void (*done)(void *arg), void *arg)
{
	if (q == NULL || q->draining)
		return;
	q->draining = 1;
	q->drain_done = done;
	q->drain_arg = arg;
	if (q->claim_ev != NULL)
		event_del(q->claim_ev);
	queue_drain_check(q);
}

int queue_connected(const queue_t *q)
{
	return q != NULL && q->conn[QUEUE_CONN_CMD].ready;
}

void queue_get_stats(const queue_t *q, struct queue_stats *out)
{
	if (q == NULL) {
		memset(out, 0, sizeof *out);
		return;
	}
	*out = q->stats;
}

/* ---------------------------------------------------------- life cycle */

/* Create a transport; keys are taken over (freed here on failure too). */
queue_t *queue_new(struct event_base *base, const struct queue_opts *opts, envelope_keys_t *keys,
		   const char **error_r)
{
	queue_t *q = NULL;
	char name[QUEUE_NAME_MAX + 8];

	if (base == NULL || opts == NULL || keys == NULL || opts->host == NULL ||
	    opts->host[0] == '\0' || opts->port <= 0 || opts->port > 65535 ||
	    !queue_name_ok(opts->service) || !queue_name_ok(opts->instance)) {
		*error_r = "queue needs a base, keys, host, port, service and instance";
		goto fail;
	}
	q = calloc(1, sizeof *q);
	if (q == NULL) {
		*error_r = "out of memory";
		goto fail;
	}
	q->base = base;
	q->keys = keys;
	keys = NULL;
	q->port = opts->port;
	q->host = queue_strdup(opts->host);
	q->user = queue_strdup(opts->user != NULL ? opts->user : opts->service);
	q->password = opts->password != NULL ? strdup(opts->password) : NULL;
	q->service = queue_strdup(opts->service);
	q->instance = queue_strdup(opts->instance);
	q->region = queue_strdup(opts->region);
	q->max_deliveries = opts->max_deliveries > 0 ? opts->max_deliveries : 5;
	q->claim_idle_ms = opts->claim_idle_ms > 0 ? opts->claim_idle_ms : 30000;
	q->maxlen = opts->maxlen > 0 ? opts->maxlen : 100000;
	q->read_count = opts->read_count > 0 && opts->read_count <= 10000 ? opts->read_count : 64;
	q->block_ms = opts->block_ms > 0 ? opts->block_ms : 2000;
	snprintf(q->maxlen_s, sizeof q->maxlen_s, "%ld", q->maxlen);
	snprintf(q->count_s, sizeof q->count_s, "%d", q->read_count);
	snprintf(q->block_s, sizeof q->block_s, "%d", q->block_ms);
	snprintf(q->idle_s, sizeof q->idle_s, "%d", q->claim_idle_ms);
	snprintf(q->claim_cursor, sizeof q->claim_cursor, "0-0");
	snprintf(name, sizeof name, "r:%s:%s", opts->service, opts->instance);
	q->reply_stream = strdup(name);
	snprintf(name, sizeof name, "dl:%s", opts->service);
	q->group_dl = strdup(name);
	q->nbuckets = 256;
	q->buckets = calloc(q->nbuckets, sizeof *q->buckets);
	q->drain_ev = event_new(base, -1, 0, queue_on_drained, q);
	if (q->host == NULL || q->user == NULL || (opts->password != NULL && q->password == NULL) ||
	    q->service == NULL || q->instance == NULL || q->region == NULL ||
	    q->reply_stream == NULL || q->group_dl == NULL || q->buckets == NULL ||
	    q->drain_ev == NULL) {
		*error_r = "out of memory";
		goto fail;
	}
	for (int i = 0; i < QUEUE_CONN_N; i++) {
		struct queue_conn *c = &q->conn[i];

		c->q = q;
		c->kind = (enum queue_conn_kind)i;
		c->retry_ev = evtimer_new(base, queue_on_retry, c);
		c->read_ev = evtimer_new(base, queue_on_reread, c);
		if (c->retry_ev == NULL || c->read_ev == NULL) {
			*error_r = "out of memory";
			goto fail;
		}
	}
	queue_conn_open(&q->conn[QUEUE_CONN_CMD]);
	return q;
fail:
	envelope_keys_free(keys);
	queue_free(q);
	return NULL;
}

/* Write what the command connection has buffered (best effort, at free time). */
static void queue_flush_cmd(queue_t *q)
{
	redisAsyncContext *ac = q->conn[QUEUE_CONN_CMD].ac;
	int done = 0;

	if (ac == NULL || !(ac->c.flags & REDIS_CONNECTED))
		return;
	for (int i = 0; i < 8 && !done; i++)
		if (redisBufferWrite(&ac->c, &done) != REDIS_OK)
			break;
}

/* Close everything, fail waiting requests with QUEUE_ESHUTDOWN, free. */
void queue_free(queue_t *q)
{
	if (q == NULL)
		return;
	q->freeing = 1;
	if (q->buckets != NULL)
		queue_pending_fail_all(q, QUEUE_ESHUTDOWN);
	if (q->conn[QUEUE_CONN_REPLY].wanted && q->conn[QUEUE_CONN_CMD].ready) {
		const char *argv[] = { "DEL", q->reply_stream };

		if (redisAsyncCommandArgv(q->conn[QUEUE_CONN_CMD].ac, NULL, NULL, 2, argv, NULL) ==
		    REDIS_OK)
			queue_flush_cmd(q);
	}
	for (int i = 0; i < QUEUE_CONN_N; i++) {
		struct queue_conn *c = &q->conn[i];

		if (c->ac != NULL) {
			redisAsyncContext *ac = c->ac;

			c->ac = NULL;
			ac->data = NULL; /* callbacks run by the free only release their own */
			redisAsyncFree(ac);
		}
		if (c->retry_ev != NULL)
			event_free(c->retry_ev);
		if (c->read_ev != NULL)
			event_free(c->read_ev);
	}
	if (q->claim_ev != NULL)
		event_free(q->claim_ev);
	if (q->drain_ev != NULL)
		event_free(q->drain_ev);
	free(q->buckets);
	free(q->ack_argv);
	free(q->ack_lens);
	free(q->stream);
	free(q->group_dl);
	free(q->reply_stream);
	free(q->host);
	free(q->user);
	if (q->password != NULL) {
		crypto_wipe(q->password, strlen(q->password));
		free(q->password);
	}
	free(q->service);
	free(q->instance);
	free(q->region);
	envelope_keys_free(q->keys);
	free(q);
}
