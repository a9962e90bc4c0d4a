/*
 * gateway_ratelimit — request rate limits shared by every gateway instance of a
 * cell, kept in Redis.
 *
 * Algorithm: a sliding-window counter per bucket (per source address, per
 * credential, per source on login routes). Each window of w seconds has a counter
 * key rl:gateway:<bucket>:<hash>:<window number>; a request INCRs the current
 * one (and whoever INCRs it to 1 gives it a PEXPIRE of 2w) and reads the previous
 * ones with one MGET; the estimate
 * prev × (share of the previous window still inside the sliding w) + current must
 * not exceed the limit. Like a token bucket refilled at limit/w, it bounds any w
 * seconds to about limit requests without a burst at window edges.
 *
 * Why not a Lua token bucket: that needs EVAL (or SCRIPT LOAD + EVALSHA), i.e.
 * arbitrary server-side code for the internet-facing daemon; with INCR, PEXPIRE,
 * GET and MGET on ~rl:gateway:* only (deploy/policy.yaml `ratelimit: true`) a
 * compromised gateway can do no more than count. An INCR per bucket and one MGET
 * are pipelined: one round trip per request whatever the number of buckets, n + 1
 * commands (the expiry rides on a window's first request only).
 *
 * Keys hold hashes (gateway_key_hash), never an address or a credential.
 * The connection reconnects with backoff; while it is down, gateway_rl_check
 * returns -1 and the caller applies its failure policy (gateway_api.c).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/crypto.h>

#include "gateway.h"
#include "log.h"

#define RL_BACKOFF_MIN_MS 100
#define RL_BACKOFF_MAX_MS 5000
#define RL_MAX_BUCKETS 4
#define RL_KEY_MAX 160

struct gateway_rl {
	struct event_base *base;
	char *host, *user, *password;
	int port;
	redisAsyncContext *ac;
	bool ready;
	bool freeing;
	int backoff_ms;
	struct event *retry_ev;
	unsigned long down_logged;
};

/* One check in flight: its buckets' answers, then the callback. */
struct rl_check {
	struct gateway_rl *rl;
	gateway_rl_fn cb;
	void *arg;
	size_t n, answers;
	bool failed;
	long long now_ms;
	struct gateway_rl_bucket b[RL_MAX_BUCKETS];
	long long cur[RL_MAX_BUCKETS], prev[RL_MAX_BUCKETS];
};

static void rl_open(struct gateway_rl *rl);

/* ============================================================ event adapter */

/*
 * hiredis's stock libevent adapter (adapters/libevent.h) uses a one-shot read event,
 * re-added after every reply, and waits for the socket to become writable before
 * writing a command: 3 to 4 epoll_ctl calls and an extra loop turn per check. This
 * one keeps a persistent read event (added once) and, once connected, writes the
 * commands of a loop turn by activating the write event by hand (event_active: no
 * system call, run before the loop waits again), so the INCRs and the MGET of a
 * check still leave in one write(2). Only a write the kernel could not take whole
 * (EAGAIN) waits for writability, as does the connect.
 */
struct rl_ev {
	redisAsyncContext *ac;
	struct event *rev, *wev;
	bool reading;	/* rev added */
	bool wpending;	/* wev added or activated */
};
static struct rl_ev *rl_ev_writing; /* whose write handler runs (it may free it) */

/* The socket is readable. */
static void rl_ev_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rl_ev *e = arg;

	(void)fd, (void)what;
	redisAsyncHandleRead(e->ac);
}

/* Writable, or activated by rl_ev_add_write: hiredis writes what it holds. */
static void rl_ev_write_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rl_ev *e = arg;

	(void)fd, (void)what;
	e->wpending = false;
	rl_ev_writing = e;
	redisAsyncHandleWrite(e->ac); /* may free e (cleanup clears rl_ev_writing) */
	rl_ev_writing = NULL;
}

/* hiredis: start reading (idempotent). */
static void rl_ev_add_read(void *priv)
{
	struct rl_ev *e = priv;

	if (!e->reading && event_add(e->rev, NULL) == 0)
		e->reading = true;
}

/* hiredis: stop reading. */
static void rl_ev_del_read(void *priv)
{
	struct rl_ev *e = priv;

	if (e->reading)
		event_del(e->rev);
	e->reading = false;
}

/* hiredis: there is something to write. */
static void rl_ev_add_write(void *priv)
{
	struct rl_ev *e = priv;

	if (e->wpending)
		return;
	e->wpending = true;
	/* Not connected yet, or the last write left bytes over: wait for the socket. */
	if (!(e->ac->c.flags & REDIS_CONNECTED) || rl_ev_writing == e) {
		if (event_add(e->wev, NULL) != 0)
			e->wpending = false;
		return;
	}
	event_active(e->wev, EV_WRITE, 1);
}

/* hiredis: nothing left to write. */
static void rl_ev_del_write(void *priv)
{
	struct rl_ev *e = priv;

	if (e->wpending)
		event_del(e->wev); /* also takes a pending activation back */
	e->wpending = false;
}

/* hiredis frees the context. */
static void rl_ev_cleanup(void *priv)
{
	struct rl_ev *e = priv;

	if (rl_ev_writing == e)
		rl_ev_writing = NULL;
	event_free(e->rev);
	event_free(e->wev);
	free(e);
}

/* Attach ac to base with the adapter above; REDIS_OK or REDIS_ERR. */
static int rl_ev_attach(redisAsyncContext *ac, struct event_base *base)
{
	struct rl_ev *e;

	if (ac->ev.data != NULL || (e = calloc(1, sizeof *e)) == NULL)
		return REDIS_ERR;
	e->ac = ac;
	e->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, rl_ev_read_cb, e);
	e->wev = event_new(base, ac->c.fd, EV_WRITE, rl_ev_write_cb, e);
	if (e->rev == NULL || e->wev == NULL) {
		if (e->rev != NULL)
			event_free(e->rev);
		if (e->wev != NULL)
			event_free(e->wev);
		free(e);
		return REDIS_ERR;
	}
	ac->ev.addRead = rl_ev_add_read;
	ac->ev.delRead = rl_ev_del_read;
	ac->ev.addWrite = rl_ev_add_write;
	ac->ev.delWrite = rl_ev_del_write;
	ac->ev.cleanup = rl_ev_cleanup;
	ac->ev.data = e;
	rl_ev_add_read(e);
	rl_ev_add_write(e); /* the connect completes on writability */
	return REDIS_OK;
}

/* Wall-clock milliseconds: windows must agree between gateway instances. */
static long long rl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Schedule a reconnect with exponential backoff. */
static void rl_retry(struct gateway_rl *rl)
{
	struct timeval tv;

	if (rl->freeing)
		return;
	rl->backoff_ms = rl->backoff_ms == 0 ? RL_BACKOFF_MIN_MS : rl->backoff_ms * 2;
	if (rl->backoff_ms > RL_BACKOFF_MAX_MS)
		rl->backoff_ms = RL_BACKOFF_MAX_MS;
	tv.tv_sec = rl->backoff_ms / 1000;
	tv.tv_usec = (rl->backoff_ms % 1000) * 1000;
	evtimer_add(rl->retry_ev, &tv);
}

/* The connection is gone (hiredis frees the context after this). */
static void rl_lost(struct gateway_rl *rl, const char *why)
{
	if (rl->ready)
		log_event(LOG_WARN, "rate limit: redis connection lost",
			  LF_STR("error", why != NULL ? why : "closed"));
	rl->ac = NULL;
	rl->ready = false;
	rl_retry(rl);
}

/* hiredis: connect result. */
static void rl_on_connect(const redisAsyncContext *ac, int status)
{
	struct gateway_rl *rl = ac->data;

	if (rl != NULL && status != REDIS_OK)
		rl_lost(rl, ac->errstr);
}

/* hiredis: an established connection closed. */
static void rl_on_disconnect(const redisAsyncContext *ac, int status)
{
	struct gateway_rl *rl = ac->data;

	if (rl != NULL)
		rl_lost(rl, status == REDIS_OK ? "closed" : ac->errstr);
}

/* AUTH answered: usable, or refused (then drop and retry later). */
static void rl_on_auth(redisAsyncContext *ac, void *r, void *priv)
{
	struct gateway_rl *rl = ac->data;
	redisReply *reply = r;

	if (rl == NULL || reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		log_event(LOG_ERROR, "rate limit: redis authentication refused",
			  LF_STR("error", reply->str));
		redisAsyncDisconnect(ac);
		return;
	}
	rl->ready = true;
	rl->backoff_ms = 0;
	log_event(LOG_INFO, "rate limit: redis connected");
}

/* Reconnect timer. */
static void rl_on_retry(evutil_socket_t fd, short what, void *arg)
{
	struct gateway_rl *rl = arg;

	if (rl->ac == NULL && !rl->freeing)
		rl_open(rl);
}

/* Connect, attach to the loop, AUTH first. */
static void rl_open(struct gateway_rl *rl)
{
	const char *argv[3] = {"AUTH", rl->user, rl->password};
	redisAsyncContext *ac = redisAsyncConnect(rl->host, rl->port);

	if (ac == NULL || ac->err != 0) {
		if (ac != NULL)
			redisAsyncFree(ac);
		rl_retry(rl);
		return;
	}
	if (rl_ev_attach(ac, rl->base) != REDIS_OK ||
	    redisAsyncSetConnectCallback(ac, rl_on_connect) != REDIS_OK ||
	    redisAsyncSetDisconnectCallback(ac, rl_on_disconnect) != REDIS_OK) {
		redisAsyncFree(ac);
		rl_retry(rl);
		return;
	}
	ac->data = rl;
	rl->ac = ac;
	if (rl->password == NULL)
		argv[0] = "PING";
	if (redisAsyncCommandArgv(ac, rl_on_auth, NULL, rl->password != NULL ? 3 : 1, argv, NULL) !=
	    REDIS_OK) {
		ac->data = NULL;
		rl->ac = NULL;
		redisAsyncFree(ac);
		rl_retry(rl);
	}
}

/* A limiter on Redis at host:port as user (password may be NULL: no AUTH). Copies its
 * arguments; connects asynchronously. */
struct gateway_rl *gateway_rl_new(struct event_base *base, const char *host, int port,
				  const char *user, const char *password)
{
	struct gateway_rl *rl = calloc(1, sizeof *rl);

	if (rl == NULL || (rl->host = strdup(host)) == NULL ||
	    (rl->user = strdup(user != NULL ? user : "gateway")) == NULL ||
	    (password != NULL && (rl->password = strdup(password)) == NULL) ||
	    (rl->retry_ev = evtimer_new(base, rl_on_retry, rl)) == NULL)
		log_fatal("rate limit: out of memory");
	rl->base = base;
	rl->port = port;
	rl_open(rl);
	return rl;
}

/* Close and free; checks in flight get their callback with -1 (hiredis calls them
 * with NULL replies). NULL-safe. */
void gateway_rl_free(struct gateway_rl *rl)
{
	if (rl == NULL)
		return;
	rl->freeing = true;
	if (rl->ac != NULL) {
		redisAsyncContext *ac = rl->ac;

		rl->ac = NULL;
		redisAsyncFree(ac); /* calls pending callbacks with NULL and the disconnect cb */
	}
	if (rl->retry_ev != NULL)
		event_free(rl->retry_ev);
	if (rl->password != NULL) {
		OPENSSL_cleanse(rl->password, strlen(rl->password));
		free(rl->password);
	}
	free(rl->host);
	free(rl->user);
	free(rl);
}

/* 1 while connected and authenticated. */
bool gateway_rl_up(const struct gateway_rl *rl)
{
	return rl != NULL && rl->ready && rl->ac != NULL;
}

/*
 * The verdict of one bucket from its counters at now: limited or not, remaining
 * requests, seconds to the end of the window (reset) and, when limited, seconds
 * until the estimate falls under the limit (retry). Pure: unit-tested.
 */
void gateway_rl_verdict(const struct gateway_rl_bucket *b, long long prev, long long cur,
			long long now_ms, struct gateway_rl_result *r)
{
	long long w_ms = (long long)b->window_s * 1000;
	long long into = now_ms % w_ms;
	double weight = (double)(w_ms - into) / (double)w_ms;
	double est = (double)prev * weight + (double)cur;
	double wait_ms;

	r->limit = b->limit;
	r->limited = est > (double)b->limit;
	r->remaining = r->limited ? 0 : (int)floor((double)b->limit - est);
	if (r->remaining < 0)
		r->remaining = 0;
	r->reset_s = (int)((w_ms - into + 999) / 1000);
	r->retry_s = 0;
	if (r->limited) {
		/* Until prev × weight + cur ≤ limit - 1 within this window, else into the next. */
		double need = (double)cur - ((double)b->limit - 1.0);

		if (need <= 0 && prev > 0) {
			wait_ms = ((double)prev * weight - ((double)b->limit - 1.0 - (double)cur)) /
				  (double)prev * (double)w_ms;
		} else {
			double next_cur_share = (double)cur > 0 ? ((double)b->limit - 1.0) / cur : 1;

			if (next_cur_share < 0)
				next_cur_share = 0;
			wait_ms = (double)(w_ms - into) + (1.0 - next_cur_share) * (double)w_ms;
		}
		r->retry_s = (int)ceil(wait_ms / 1000.0);
		if (r->retry_s < 1)
			r->retry_s = 1;
		if (r->retry_s > 2 * b->window_s)
			r->retry_s = 2 * b->window_s;
	}
}

/* The counter key of bucket b in window win. */
static void rl_key(char key[RL_KEY_MAX], const struct gateway_rl_bucket *b, long long win)
{
	snprintf(key, RL_KEY_MAX, "rl:gateway:%s:%.32s:%lld", b->name, b->id, win);
}

/* A window's first request gives its counter an expiry of two windows (a
 * failure leaves a small key behind; nothing waits for the answer). */
static void rl_expire(struct gateway_rl *rl, const struct gateway_rl_bucket *b, long long now_ms)
{
	long long w_ms = (long long)b->window_s * 1000;
	char key[RL_KEY_MAX], ttl[24];
	const char *argv[3] = {"PEXPIRE", key, ttl};

	rl_key(key, b, now_ms / w_ms);
	snprintf(ttl, sizeof ttl, "%lld", 2 * w_ms);
	if (redisAsyncCommandArgv(rl->ac, NULL, NULL, 3, argv, NULL) != REDIS_OK)
		log_event(LOG_WARN, "rate limit: cannot set an expiry");
}

/* Each reply of a check (n INCRs, then the MGET): count it; on the last one,
 * decide and call back. */
static void rl_on_reply(redisAsyncContext *ac, void *r, void *priv)
{
	struct rl_check *c = priv;
	redisReply *reply = r;
	size_t idx = c->answers;
	struct gateway_rl_result res = {0}, worst = {0};

	(void)ac;
	c->answers++;
	if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
		if (reply != NULL && !c->failed)
			log_event(LOG_ERROR, "rate limit: redis refused", LF_STR("error", reply->str));
		c->failed = true;
	} else if (idx < c->n && reply->type == REDIS_REPLY_INTEGER) {
		c->cur[idx] = reply->integer;
		if (reply->integer == 1 && gateway_rl_up(c->rl))
			rl_expire(c->rl, &c->b[idx], c->now_ms);
	} else if (idx == c->n && reply->type == REDIS_REPLY_ARRAY && reply->elements == c->n) {
		for (size_t i = 0; i < c->n; i++)
			if (reply->element[i]->type == REDIS_REPLY_STRING)
				c->prev[i] = strtoll(reply->element[i]->str, NULL, 10);
	} else {
		c->failed = true;
	}
	if (c->answers < c->n + 1)
		return;
	if (c->failed) {
		c->cb(c->arg, -1, NULL);
		free(c);
		return;
	}
	worst.remaining = -1;
	for (size_t i = 0; i < c->n; i++) {
		gateway_rl_verdict(&c->b[i], c->prev[i], c->cur[i], c->now_ms, &res);
		/* Report the bucket that limits, else the one with the least left. */
		if (worst.remaining < 0 || (res.limited && !worst.limited) ||
		    (res.limited == worst.limited &&
		     (res.limited ? res.retry_s > worst.retry_s : res.remaining < worst.remaining)))
			worst = res;
	}
	c->cb(c->arg, 0, &worst);
	free(c);
}

/*
 * Count one request against buckets b[0..n) (n ≤ 4) and call cb(arg, 0, verdict)
 * or cb(arg, -1, NULL) if Redis failed, exactly once, from the event loop. Returns
 * -1 without calling cb when Redis is not connected.
 */
int gateway_rl_check(struct gateway_rl *rl, const struct gateway_rl_bucket *b, size_t n,
		     gateway_rl_fn cb, void *arg)
{
	struct rl_check *c;

	if (!gateway_rl_up(rl) || n == 0 || n > RL_MAX_BUCKETS) {
		if (rl != NULL && rl->down_logged++ % 1000 == 0)
			log_event(LOG_WARN, "rate limit: redis unavailable",
				  LF_INT("times", rl->down_logged));
		return -1;
	}
	if ((c = calloc(1, sizeof *c)) == NULL)
		return -1;
	c->rl = rl;
	c->cb = cb;
	c->arg = arg;
	c->n = n;
	c->now_ms = rl_now_ms();
	memcpy(c->b, b, n * sizeof *b);
	{
		char keys[RL_MAX_BUCKETS][RL_KEY_MAX], prev[RL_MAX_BUCKETS][RL_KEY_MAX];
		const char *mget[RL_MAX_BUCKETS + 1] = {"MGET"};

		for (size_t i = 0; i < n; i++) {
			long long win = c->now_ms / ((long long)b[i].window_s * 1000);
			const char *incr[2] = {"INCR", keys[i]};

			rl_key(keys[i], &b[i], win);
			rl_key(prev[i], &b[i], win - 1);
			mget[i + 1] = prev[i];
			/* Only allocation failure can refuse a command on a live context. */
			if (redisAsyncCommandArgv(rl->ac, rl_on_reply, c, 2, incr, NULL) != REDIS_OK) {
				if (i == 0) {
					free(c);
					return -1;
				}
				log_fatal("rate limit: out of memory");
			}
		}
		if (redisAsyncCommandArgv(rl->ac, rl_on_reply, c, (int)n + 1, mget, NULL) != REDIS_OK)
			log_fatal("rate limit: out of memory");
	}
	return 0;
}
