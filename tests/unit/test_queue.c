/*
 * test_queue — the Redis Streams transport against a real redis-server.
 *
 * The group setup starts /usr/bin/redis-server (or $WARD_REDIS_SERVER) on a free
 * loopback port in a mkdtemp directory, with AOF so consumer groups survive the
 * restart test; the group teardown kills it and removes the directory. Every
 * wait runs the libevent loop with a deadline, so a broken queue fails a test
 * instead of hanging it.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "crypto.h"
#include "envelope.h"
#include "queue.h"

#define K1 "1111111111111111111111111111111111111111111111111111111111111111"
#define K2 "2222222222222222222222222222222222222222222222222222222222222222"
#define K9 "9999999999999999999999999999999999999999999999999999999999999999"

static struct {
	char dir[256];
	int port;
	pid_t pid;
} srv = { .pid = -1 };

/* ------------------------------------------------------------- server */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A loopback port nobody listens on right now. */
static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0 };
	socklen_t len = sizeof sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd < 0)
		return -1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static redisContext *admin(void)
{
	struct timeval tv = { 1, 0 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", srv.port, tv);

	if (c != NULL && c->err != 0) {
		redisFree(c);
		return NULL;
	}
	return c;
}

/* Start redis-server and wait until it answers PING. */
static int redis_start(void)
{
	const char *bin = getenv("WARD_REDIS_SERVER");
	char port[16], logf[300];
	int64_t until;

	if (bin == NULL)
		bin = "/usr/bin/redis-server";
	snprintf(port, sizeof port, "%d", srv.port);
	snprintf(logf, sizeof logf, "%s/redis.log", srv.dir);
	srv.pid = fork();
	if (srv.pid < 0)
		return -1;
	if (srv.pid == 0) {
		/* Never outlive the test, even if it crashes. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl(bin, "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", srv.dir,
		      "--appendonly", "yes", "--save", "", "--logfile", logf, "--daemonize", "no",
		      "--protected-mode", "no", (char *)NULL);
		_exit(127);
	}
	until = now_ms() + 10000;
	while (now_ms() < until) {
		redisContext *c = admin();

		if (c != NULL) {
			redisReply *r = redisCommand(c, "PING");
			int ok = r != NULL && r->type == REDIS_REPLY_STATUS;

			freeReplyObject(r);
			redisFree(c);
			if (ok)
				return 0;
		}
		usleep(20000);
	}
	return -1;
}

static void redis_stop(void)
{
	if (srv.pid > 0) {
		kill(srv.pid, SIGTERM);
		waitpid(srv.pid, NULL, 0);
		srv.pid = -1;
	}
}

/* XGROUP CREATE q:<svc> <svc> $ MKSTREAM, as the bootstrap does. */
static void group_create(const char *svc)
{
	redisContext *c = admin();
	redisReply *r;
	char stream[64];

	assert_non_null(c);
	snprintf(stream, sizeof stream, "q:%s", svc);
	r = redisCommand(c, "XGROUP CREATE %s %s $ MKSTREAM", stream, svc);
	assert_non_null(r);
	if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)
		fail_msg("XGROUP CREATE: %s", r->str);
	freeReplyObject(r);
	redisFree(c);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int group_setup(void **state)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(srv.dir, sizeof srv.dir, "%s/ward-test-queue-XXXXXX",
		 tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	if (mkdtemp(srv.dir) == NULL)
		return -1;
	for (int tries = 0; tries < 5; tries++) {
		srv.port = free_port();
		if (srv.port > 0 && redis_start() == 0)
			return 0;
		redis_stop();
	}
	fprintf(stderr, "cannot start redis-server\n");
	return -1;
}

static int group_teardown(void **state)
{
	redis_stop();
	if (srv.dir[0] != '\0')
		nftw(srv.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

/* ---------------------------------------------------------- the loop */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

/* Run the loop until cond(ctx) or timeout_ms; 0 if cond became true. */
static int run_until(struct event_base *base, int (*cond)(void *), void *ctx, int timeout_ms)
{
	struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, NULL);
	struct timeval tv = { 0, 10000 };
	int64_t until = now_ms() + timeout_ms;
	int ret = 0;

	assert_non_null(tick);
	event_add(tick, &tv);
	while (cond == NULL || !cond(ctx)) {
		if (now_ms() >= until) {
			ret = -1;
			break;
		}
		event_base_loop(base, EVLOOP_ONCE);
	}
	event_free(tick);
	return ret;
}

static void run_for(struct event_base *base, int ms)
{
	run_until(base, NULL, NULL, ms);
}

/* -------------------------------------------------------- queues, keys */

static queue_t *mkq(struct event_base *base, const char *svc, const char *inst,
		    const char *keytext, int claim_idle_ms, int max_deliveries)
{
	struct queue_opts o = {
		.host = "127.0.0.1",
		.port = srv.port,
		.service = svc,
		.instance = inst,
		.region = "eu",
		.max_deliveries = max_deliveries,
		.claim_idle_ms = claim_idle_ms,
		.read_count = 64,
		.block_ms = 500,
	};
	const char *error = NULL;
	envelope_keys_t *keys =
		envelope_keys_parse((const unsigned char *)keytext, strlen(keytext), &error);
	queue_t *q;

	if (keys == NULL)
		fail_msg("keys: %s", error);
	q = queue_new(base, &o, keys, &error);
	if (q == NULL)
		fail_msg("queue_new: %s", error);
	return q;
}

/* Route keys of a test pair: gw → q:<svc> and <svc> → r:gw. */
static void pair_keys(char *out, size_t n, const char *svc, const char *req_key)
{
	snprintf(out, n, "gw q:%s 1 %s\n%s r:gw 1 " K2 "\n", svc, req_key, svc);
}

/* --------------------------------------------------------- handlers */

struct hctx {
	int calls;
	int retries_left;    /* RETRY this many times first */
	int always_retry;
	const char *retry_error;
	char tenant[64], role[64], sender[64], stream[64], reply_to[64];
};

static queue_result_t echo_handler(void *ctx, const Ward__Envelope *env, const uint8_t *payload,
				   size_t len, struct queue_reply *reply, const char **error_r)
{
	struct hctx *h = ctx;

	h->calls++;
	snprintf(h->tenant, sizeof h->tenant, "%s", env->tenant);
	snprintf(h->role, sizeof h->role, "%s", env->principal ? env->principal->role : "");
	snprintf(h->sender, sizeof h->sender, "%s", env->sender);
	snprintf(h->stream, sizeof h->stream, "%s", env->stream);
	snprintf(h->reply_to, sizeof h->reply_to, "%s", env->reply_to);
	if (h->always_retry || h->retries_left > 0) {
		h->retries_left--;
		*error_r = h->retry_error != NULL ? h->retry_error : "try later";
		return QUEUE_RETRY;
	}
	if (len == 3 && memcmp(payload, "404", 3) == 0) {
		reply->status = 404;
		reply->error = "no such thing";
		return QUEUE_DONE;
	}
	reply->data = malloc(len + 5);
	assert_non_null(reply->data);
	memcpy(reply->data, "echo:", 5);
	memcpy(reply->data + 5, payload, len);
	reply->len = len + 5;
	return QUEUE_DONE;
}

struct rctx {
	int calls, status;
	char data[128], error[128], sender[64];
	int64_t at;
};

static void on_reply(void *arg, int status, const Ward__Envelope *env, const uint8_t *payload,
		     size_t len)
{
	struct rctx *r = arg;

	r->calls++;
	r->status = status;
	r->at = now_ms();
	if (status < 0) {
		assert_null(env);
		return;
	}
	assert_non_null(env);
	snprintf(r->data, sizeof r->data, "%.*s", (int)len, (const char *)payload);
	snprintf(r->error, sizeof r->error, "%s", env->error);
	snprintf(r->sender, sizeof r->sender, "%s", env->sender);
}

static int rctx_done(void *arg)
{
	return ((struct rctx *)arg)->calls > 0;
}

struct many {
	struct rctx r[200];
	int n;
};

static int many_done(void *arg)
{
	struct many *m = arg;

	for (int i = 0; i < m->n; i++)
		if (m->r[i].calls == 0)
			return 0;
	return 1;
}

static int flag_set(void *arg)
{
	return *(int *)arg != 0;
}

static void set_flag(void *arg)
{
	(*(int *)arg)++;
}

static int request(queue_t *q, const char *dest, const char *payload, int timeout_ms,
		   struct rctx *r);

/* A chain of requests, each sent from the previous one's reply callback. */
struct chain {
	queue_t *q;
	int left, done, failed;
	struct rctx r[300];
};

static void on_chain_reply(void *arg, int status, const Ward__Envelope *env,
			   const uint8_t *payload, size_t len);

static void chain_next(struct chain *c)
{
	int i = c->left - 1;
	struct queue_msg m = { .dest = "q:svc1", .method = "ping", .payload = (const uint8_t *)"c",
			       .len = 1, .timeout_ms = 5000 };
	const char *error = NULL;

	if (i < 0)
		return;
	c->left--;
	if (queue_request(c->q, &m, on_chain_reply, c, &error) != 0)
		c->failed++;
}

static void on_chain_reply(void *arg, int status, const Ward__Envelope *env,
			   const uint8_t *payload, size_t len)
{
	struct chain *c = arg;

	if (status != 0)
		c->failed++;
	c->done++;
	chain_next(c);
}

static int chain_done(void *arg)
{
	struct chain *c = arg;

	return c->left == 0 && c->done == 300;
}

static int request(queue_t *q, const char *dest, const char *payload, int timeout_ms,
		   struct rctx *r)
{
	static Ward__Principal p = WARD__PRINCIPAL__INIT;
	struct queue_msg m = {
		.dest = dest,
		.method = "ping",
		.tenant = "acme",
		.principal = &p,
		.request_id = "req-test",
		.timeout_ms = timeout_ms,
		.payload = (const uint8_t *)payload,
		.len = strlen(payload),
	};
	const char *error = NULL;

	p.kind = "user";
	p.id = "u-1";
	p.role = "agent";
	return queue_request(q, &m, on_reply, r, &error);
}

static int send_one(queue_t *q, const char *dest, const char *payload)
{
	struct queue_msg m = {
		.dest = dest, .method = "note", .payload = (const uint8_t *)payload,
		.len = strlen(payload),
	};
	const char *error = NULL;

	return queue_send(q, &m, &error);
}

/* Pending-entry count of q:<svc> for group <svc>. */
static long long pending_count(const char *svc)
{
	redisContext *c = admin();
	redisReply *r;
	long long n = -1;

	assert_non_null(c);
	r = redisCommand(c, "XPENDING q:%s %s", svc, svc);
	if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER)
		n = r->element[0]->integer;
	freeReplyObject(r);
	redisFree(c);
	return n;
}

/* XLEN of stream: what its consumers have not handled (they delete what they ack). */
static long long xlen(const char *stream)
{
	redisContext *c = admin();
	redisReply *r;
	long long n = -1;

	assert_non_null(c);
	r = redisCommand(c, "XLEN %s", stream);
	if (r != NULL && r->type == REDIS_REPLY_INTEGER)
		n = r->integer;
	freeReplyObject(r);
	redisFree(c);
	return n;
}

/* Run a command as admin, the reply ignored (checked not to be an error). */
static void admin_cmd(const char *cmd)
{
	redisContext *c = admin();
	redisReply *r;

	assert_non_null(c);
	r = redisCommand(c, cmd);
	assert_non_null(r);
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("%s: %s", cmd, r->str);
	freeReplyObject(r);
	redisFree(c);
}

/* The dead-letter entries of <svc>: fills errs[] with their "error" fields. */
static size_t dead_letters(const char *svc, char errs[][128], char dels[][16], size_t max)
{
	redisContext *c = admin();
	redisReply *r;
	size_t n = 0;

	assert_non_null(c);
	r = redisCommand(c, "XRANGE dl:%s - +", svc);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	for (size_t i = 0; i < r->elements && n < max; i++, n++) {
		redisReply *f = r->element[i]->element[1];

		errs[n][0] = dels[n][0] = '\0';
		for (size_t j = 0; j + 1 < f->elements; j += 2) {
			if (strcmp(f->element[j]->str, "error") == 0)
				snprintf(errs[n], 128, "%s", f->element[j + 1]->str);
			if (strcmp(f->element[j]->str, "deliveries") == 0)
				snprintf(dels[n], 16, "%s", f->element[j + 1]->str);
		}
	}
	freeReplyObject(r);
	redisFree(c);
	return n;
}

/* XADD raw bytes as field "e" (or another field name) into stream. */
static void raw_xadd(const char *stream, const char *field, const void *buf, size_t len)
{
	redisContext *c = admin();
	redisReply *r;

	assert_non_null(c);
	r = redisCommand(c, "XADD %s * %s %b", stream, field, buf, len);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	freeReplyObject(r);
	redisFree(c);
}

/* ------------------------------------------------------------- tests */

static void test_round_trip(void **state)
{
	struct event_base *base = event_base_new();
	char keys[512];
	struct hctx h = { 0 };
	struct rctx r = { 0 }, r404 = { 0 };
	static struct many m;
	struct queue_stats cs, ss;
	const char *error = NULL;
	int drained_s = 0, drained_c = 0;
	queue_t *server, *client;

	pair_keys(keys, sizeof keys, "svc1", K1);
	group_create("svc1");
	server = mkq(base, "svc1", "svc1-a", keys, 30000, 5);
	client = mkq(base, "gw", "gw-1", keys, 30000, 5);
	assert_int_equal(queue_consume(server, "q:svc1", echo_handler, &h, &error), 0);
	assert_int_equal(queue_consume(server, "q:svc1", echo_handler, &h, &error), -1);

	assert_int_equal(request(client, "q:svc1", "hello", 5000, &r), 0);
	assert_int_equal(run_until(base, rctx_done, &r, 5000), 0);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.data, "echo:hello");
	assert_string_equal(r.sender, "svc1");
	assert_int_equal(h.calls, 1);
	assert_string_equal(h.tenant, "acme");
	assert_string_equal(h.role, "agent");
	assert_string_equal(h.sender, "gw");
	assert_string_equal(h.stream, "q:svc1");
	assert_string_equal(h.reply_to, "r:gw:gw-1");
	assert_true(queue_connected(client));

	/* An error status travels back with its text. */
	assert_int_equal(request(client, "q:svc1", "404", 5000, &r404), 0);
	assert_int_equal(run_until(base, rctx_done, &r404, 5000), 0);
	assert_int_equal(r404.status, 404);
	assert_string_equal(r404.error, "no such thing");

	/* Many at once: batched reads, pipelined replies and acks. */
	m.n = 200;
	for (int i = 0; i < m.n; i++)
		assert_int_equal(request(client, "q:svc1", "x", 5000, &m.r[i]), 0);
	assert_int_equal(run_until(base, many_done, &m, 10000), 0);
	for (int i = 0; i < m.n; i++) {
		assert_int_equal(m.r[i].calls, 1);
		assert_int_equal(m.r[i].status, 0);
		assert_string_equal(m.r[i].data, "echo:x");
	}
	/* Requests sent from reply callbacks, 20 chains at once: each reply is read
	 * exactly once (no second XREAD started from inside a batch). */
	static struct chain ch;
	ch.q = client;
	ch.left = 300;
	for (int i = 0; i < 20; i++)
		chain_next(&ch);
	assert_int_equal(run_until(base, chain_done, &ch, 10000), 0);
	assert_int_equal(ch.failed, 0);
	run_for(base, 100);
	assert_int_equal(pending_count("svc1"), 0);
	/* Handled entries are gone from the stream: its length is its depth, 0. */
	assert_int_equal(xlen("q:svc1"), 0);
	queue_get_stats(client, &cs);
	queue_get_stats(server, &ss);
	assert_int_equal(cs.sent, 502);
	assert_int_equal(cs.replies, 502);
	assert_int_equal(cs.replies_dropped, 0);
	assert_int_equal(cs.timeouts, 0);
	assert_int_equal(ss.handled, 502);
	assert_int_equal(ss.acked, 502);
	assert_int_equal(ss.deleted, 502);
	assert_int_equal(ss.dead_lettered, 0);

	/* Drain: both finish promptly once idle. */
	queue_drain(server, set_flag, &drained_s);
	queue_drain(client, set_flag, &drained_c);
	assert_int_equal(run_until(base, flag_set, &drained_s, 3000), 0);
	assert_int_equal(run_until(base, flag_set, &drained_c, 3000), 0);
	run_for(base, 50);
	assert_int_equal(drained_s, 1);
	assert_int_equal(drained_c, 1);
	queue_free(server);
	queue_free(client);
	event_base_free(base);
}

static void test_retry_reclaimed(void **state)
{
	struct event_base *base = event_base_new();
	char keys[512];
	struct hctx h = { .retries_left = 2 };
	struct rctx r = { 0 };
	struct queue_stats ss;
	const char *error = NULL;
	queue_t *server, *client;

	pair_keys(keys, sizeof keys, "svc2", K1);
	group_create("svc2");
	server = mkq(base, "svc2", "svc2-a", keys, 200, 5);
	client = mkq(base, "gw", "gw-2", keys, 30000, 5);
	assert_int_equal(queue_consume(server, "q:svc2", echo_handler, &h, &error), 0);
	assert_int_equal(request(client, "q:svc2", "again", 8000, &r), 0);
	assert_int_equal(run_until(base, rctx_done, &r, 8000), 0);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.data, "echo:again");
	assert_int_equal(h.calls, 3);
	queue_get_stats(server, &ss);
	assert_int_equal(ss.retried, 2);
	assert_true(ss.reclaimed >= 2);
	assert_int_equal(ss.dead_lettered, 0);
	run_for(base, 100);
	assert_int_equal(pending_count("svc2"), 0);
	assert_int_equal(xlen("q:svc2"), 0); /* deleted once handled, not while retried */
	queue_free(server);
	queue_free(client);
	event_base_free(base);
}

static int dead_lettered_1(void *arg)
{
	struct queue_stats s;

	queue_get_stats(arg, &s);
	return s.dead_lettered >= 1;
}

static int handled_4(void *arg)
{
	return ((struct hctx *)arg)->calls >= 4;
}

/* XADD the "e" field of dl:<svc>'s first entry back to the stream it came from. */
static void replay_dead_letter(const char *svc)
{
	redisContext *c = admin();
	redisReply *r, *x;
	const redisReply *f, *e = NULL, *from = NULL;

	assert_non_null(c);
	r = redisCommand(c, "XRANGE dl:%s - + COUNT 1", svc);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_ARRAY);
	assert_int_equal(r->elements, 1);
	f = r->element[0]->element[1];
	for (size_t j = 0; j + 1 < f->elements; j += 2) {
		if (strcmp(f->element[j]->str, "e") == 0)
			e = f->element[j + 1];
		if (strcmp(f->element[j]->str, "stream") == 0)
			from = f->element[j + 1];
	}
	assert_non_null(e);
	assert_non_null(from);
	x = redisCommand(c, "XADD %s * e %b", from->str, e->str, e->len);
	assert_non_null(x);
	assert_int_equal(x->type, REDIS_REPLY_STRING);
	freeReplyObject(x);
	freeReplyObject(r);
	redisFree(c);
}

static void test_dead_letter_after_max(void **state)
{
	struct event_base *base = event_base_new();
	char keys[512], errs[4][128], dels[4][16];
	struct hctx h = { .always_retry = 1, .retry_error = "database unreachable" };
	const char *error = NULL;
	queue_t *server, *client;

	pair_keys(keys, sizeof keys, "svc3", K1);
	group_create("svc3");
	server = mkq(base, "svc3", "svc3-a", keys, 200, 3);
	client = mkq(base, "gw", "gw-3", keys, 30000, 5);
	assert_int_equal(queue_consume(server, "q:svc3", echo_handler, &h, &error), 0);
	assert_int_equal(send_one(client, "q:svc3", "doomed"), 0);
	assert_int_equal(run_until(base, dead_lettered_1, server, 8000), 0);
	run_for(base, 700); /* no fourth delivery */
	assert_int_equal(h.calls, 3);
	assert_int_equal(dead_letters("svc3", errs, dels, 4), 1);
	assert_string_equal(errs[0], "database unreachable");
	assert_string_equal(dels[0], "3");
	assert_int_equal(pending_count("svc3"), 0);
	/* Gone from q:svc3, the whole entry is in dl:svc3: replayed from there (its
	 * "e" field XADDed back), it is handled like the original. */
	assert_int_equal(xlen("q:svc3"), 0);
	h.always_retry = 0;
	replay_dead_letter("svc3");
	assert_int_equal(run_until(base, handled_4, &h, 5000), 0);
	run_for(base, 100);
	assert_int_equal(h.calls, 4);
	assert_int_equal(xlen("q:svc3"), 0);
	assert_int_equal(pending_count("svc3"), 0);
	assert_int_equal(dead_letters("svc3", errs, dels, 4), 1);
	queue_free(server);
	queue_free(client);
	event_base_free(base);
}

static int garbage_done(void *arg)
{
	struct hctx *h = ((void **)arg)[0];
	struct queue_stats s;

	queue_get_stats(((void **)arg)[1], &s);
	return h->calls >= 1 && s.dead_lettered >= 2;
}

static void test_garbage_dead_lettered(void **state)
{
	struct event_base *base = event_base_new();
	char keys[512], errs[4][128], dels[4][16];
	struct hctx h = { 0 };
	const char *error = NULL;
	void *ctx[2];
	queue_t *server, *client;

	pair_keys(keys, sizeof keys, "svc4", K1);
	group_create("svc4");
	server = mkq(base, "svc4", "svc4-a", keys, 30000, 5);
	client = mkq(base, "gw", "gw-4", keys, 30000, 5);
	assert_int_equal(queue_consume(server, "q:svc4", echo_handler, &h, &error), 0);
	raw_xadd("q:svc4", "e", "garbage\xff\x01", 9);
	raw_xadd("q:svc4", "x", "no e here", 9);
	assert_int_equal(send_one(client, "q:svc4", "good"), 0);
	ctx[0] = &h;
	ctx[1] = server;
	assert_int_equal(run_until(base, garbage_done, ctx, 5000), 0);
	run_for(base, 100);
	assert_int_equal(h.calls, 1);
	assert_int_equal(dead_letters("svc4", errs, dels, 4), 2);
	assert_non_null(strstr(errs[0], "refused"));
	assert_non_null(strstr(errs[1], "no \"e\" field"));
	assert_int_equal(pending_count("svc4"), 0);
	assert_int_equal(xlen("q:svc4"), 0);
	queue_free(server);
	queue_free(client);
	event_base_free(base);
}

static void test_request_timeout(void **state)
{
	struct event_base *base = event_base_new();
	struct rctx r = { 0 }, r2 = { 0 };
	struct queue_stats cs;
	queue_t *client = mkq(base, "gw", "gw-5", "gw q:nobody 1 " K1 "\n", 30000, 5);
	int64_t start = now_ms();

	assert_int_equal(request(client, "q:nobody", "anyone?", 300, &r), 0);
	assert_int_equal(r.calls, 0); /* never from inside queue_request */
	assert_int_equal(run_until(base, rctx_done, &r, 3000), 0);
	assert_int_equal(r.status, QUEUE_ETIMEDOUT);
	assert_true(r.at - start >= 290);
	assert_true(r.at - start < 2000);
	run_for(base, 300);
	assert_int_equal(r.calls, 1);
	queue_get_stats(client, &cs);
	assert_int_equal(cs.timeouts, 1);

	/* No key for the route: refused before anything is sent. */
	assert_int_equal(request(client, "q:elsewhere", "x", 300, &r2), -1);
	/* Freeing with a request in flight answers it with QUEUE_ESHUTDOWN. */
	assert_int_equal(request(client, "q:nobody", "x", 10000, &r2), 0);
	run_for(base, 50);
	queue_free(client);
	assert_int_equal(r2.calls, 1);
	assert_int_equal(r2.status, QUEUE_ESHUTDOWN);
	event_base_free(base);
}

/* Seal a header for stream with keytext's gw key and XADD it raw into into. */
static void raw_envelope(const char *keytext, const char *stream, const char *into,
			 int64_t deadline)
{
	const char *error = NULL;
	envelope_keys_t *keys =
		envelope_keys_parse((const unsigned char *)keytext, strlen(keytext), &error);
	Ward__Envelope env = WARD__ENVELOPE__INIT;
	char id[33];
	uint8_t *buf;
	size_t len = 0;

	assert_non_null(keys);
	assert_int_equal(crypto_random_id(id), 0);
	env.version = ENVELOPE_VERSION;
	env.id = id;
	env.sender = "gw";
	env.method = "note";
	env.stream = (char *)stream;
	env.deadline_ms = deadline;
	assert_int_equal(envelope_seal(&env, keys, (const uint8_t *)"p", 1, &error), 0);
	buf = envelope_pack(&env, &len);
	assert_non_null(buf);
	raw_xadd(into, "e", buf, len);
	free(buf);
	envelope_clear_payload(&env);
	envelope_keys_free(keys);
}

static void test_forged_and_moved(void **state)
{
	struct event_base *base = event_base_new();
	char keys[512], forged[512], errs[4][128], dels[4][16];
	struct hctx h = { 0 };
	struct queue_stats ss;
	const char *error = NULL;
	void *ctx[2];
	queue_t *server, *client, *forger;

	pair_keys(keys, sizeof keys, "svc6", K1);
	pair_keys(forged, sizeof forged, "svc6", K9);
	group_create("svc6");
	server = mkq(base, "svc6", "svc6-a", keys, 30000, 5);
	client = mkq(base, "gw", "gw-6", keys, 30000, 5);
	forger = mkq(base, "gw", "gw-evil", forged, 30000, 5);
	assert_int_equal(queue_consume(server, "q:svc6", echo_handler, &h, &error), 0);

	/* Wrong key: dead-lettered, the handler never sees it. */
	assert_int_equal(send_one(forger, "q:svc6", "forged"), 0);
	/* A genuine envelope for q:other copied into q:svc6. */
	raw_envelope("gw q:other 1 " K1 "\n", "q:other", "q:svc6", 0);
	/* A genuine envelope past its deadline: dropped and acked, not handled. */
	raw_envelope(keys, "q:svc6", "q:svc6", envelope_now_ms() - 1000);
	run_for(base, 300);
	assert_int_equal(h.calls, 0);
	assert_int_equal(send_one(client, "q:svc6", "genuine"), 0);
	ctx[0] = &h;
	ctx[1] = server;
	assert_int_equal(run_until(base, garbage_done, ctx, 5000), 0);
	run_for(base, 100);
	assert_int_equal(h.calls, 1);
	queue_get_stats(server, &ss);
	assert_int_equal(ss.rejected_open, 1);
	assert_int_equal(ss.dead_lettered, 2);
	assert_int_equal(ss.handled, 1);
	assert_int_equal(dead_letters("svc6", errs, dels, 4), 2);
	/* The forger's send may land before or after the raw entries. */
	assert_true((strstr(errs[0], "cannot open") && strstr(errs[1], "another stream")) ||
		    (strstr(errs[1], "cannot open") && strstr(errs[0], "another stream")));
	assert_int_equal(pending_count("svc6"), 0);
	assert_int_equal(xlen("q:svc6"), 0); /* the expired one too: dropped, deleted */
	queue_free(server);
	queue_free(client);
	queue_free(forger);
	event_base_free(base);
}

static int pending_0_svc9(void *arg)
{
	return pending_count("svc9") == 0;
}

/* A dead letter Redis refuses (here dl:svc9 is not a stream: WRONGTYPE) leaves the
 * entry pending in q:svc9, never gone from both; once dl:svc9 takes it (reclaimed,
 * dead-lettered again) it is acked and deleted. */
static void test_dead_letter_refused_kept(void **state)
{
	struct event_base *base = event_base_new();
	char keys[512], errs[4][128], dels[4][16];
	struct hctx h = { .always_retry = 1, .retry_error = "no way" };
	struct queue_stats ss;
	const char *error = NULL;
	queue_t *server, *client;

	pair_keys(keys, sizeof keys, "svc9", K1);
	group_create("svc9");
	admin_cmd("SET dl:svc9 not-a-stream");
	server = mkq(base, "svc9", "svc9-a", keys, 300, 1);
	client = mkq(base, "gw", "gw-9", keys, 30000, 5);
	assert_int_equal(queue_consume(server, "q:svc9", echo_handler, &h, &error), 0);
	assert_int_equal(send_one(client, "q:svc9", "keep me"), 0);
	run_for(base, 250); /* delivered once, dead letter refused, before any reclaim */
	assert_int_equal(h.calls, 1);
	queue_get_stats(server, &ss);
	assert_int_equal(ss.dead_lettered, 0);
	assert_int_equal(ss.acked, 0);
	assert_int_equal(xlen("q:svc9"), 1);
	assert_int_equal(pending_count("svc9"), 1);
	admin_cmd("DEL dl:svc9");
	assert_int_equal(run_until(base, dead_lettered_1, server, 5000), 0);
	assert_int_equal(run_until(base, pending_0_svc9, NULL, 2000), 0);
	run_for(base, 100);
	assert_int_equal(xlen("q:svc9"), 0);
	assert_int_equal(dead_letters("svc9", errs, dels, 4), 1);
	assert_string_equal(errs[0], "delivered 2 times without completion");
	queue_get_stats(server, &ss);
	assert_int_equal(ss.acked, 1);
	assert_int_equal(ss.deleted, 1);
	queue_free(server);
	queue_free(client);
	event_base_free(base);
}

/* A reply from a service the request did not go to is refused. */
static queue_result_t impostor_handler(void *ctx, const Ward__Envelope *env,
				       const uint8_t *payload, size_t len,
				       struct queue_reply *reply, const char **error_r)
{
	(*(int *)ctx)++;
	return QUEUE_DONE;
}

static void test_reply_from_wrong_service(void **state)
{
	struct event_base *base = event_base_new();
	/* gw sends to q:svc8a; svc8b reads q:svc8a too (misconfigured or hostile) and
	 * holds a key to gw's reply route: its reply must not be accepted. */
	static const char keys[] = "gw q:svc8a 1 " K1 "\nsvc8b r:gw 1 " K2 "\nsvc8a r:gw 1 " K2 "\n";
	struct rctx r = { 0 };
	struct queue_stats cs;
	const char *error = NULL;
	int calls = 0;
	queue_t *impostor, *client;
	redisContext *c;
	redisReply *rr;

	c = admin();
	assert_non_null(c);
	rr = redisCommand(c, "XGROUP CREATE q:svc8a svc8b $ MKSTREAM");
	assert_non_null(rr);
	freeReplyObject(rr);
	redisFree(c);
	impostor = mkq(base, "svc8b", "svc8b-a", keys, 30000, 5);
	client = mkq(base, "gw", "gw-8", keys, 30000, 5);
	assert_int_equal(queue_consume(impostor, "q:svc8a", impostor_handler, &calls, &error), 0);
	assert_int_equal(request(client, "q:svc8a", "who?", 1500, &r), 0);
	assert_int_equal(run_until(base, rctx_done, &r, 4000), 0);
	assert_int_equal(calls, 1);
	assert_int_equal(r.status, QUEUE_ETIMEDOUT);
	queue_get_stats(client, &cs);
	assert_int_equal(cs.replies, 0);
	assert_int_equal(cs.replies_dropped, 1);
	queue_free(impostor);
	queue_free(client);
	event_base_free(base);
}

static int both_connected(void *arg)
{
	queue_t **qs = arg;
	struct queue_stats a, b;

	queue_get_stats(qs[0], &a);
	queue_get_stats(qs[1], &b);
	return queue_connected(qs[0]) && queue_connected(qs[1]) && a.reconnects >= 1 &&
	       b.reconnects >= 1;
}

static int disconnected(void *arg)
{
	return !queue_connected(arg);
}

static void test_redis_restart(void **state)
{
	struct event_base *base = event_base_new();
	char keys[512];
	struct hctx h = { 0 };
	struct rctx r1 = { 0 }, rdown = { 0 }, r2 = { 0 };
	const char *error = NULL;
	queue_t *server, *client, *qs[2];

	snprintf(keys, sizeof keys, "gw q:svc7 1 " K1 "\nsvc7 r:gw 1 " K2 "\ngw q:nobody 1 " K1 "\n");
	group_create("svc7");
	server = mkq(base, "svc7", "svc7-a", keys, 30000, 5);
	client = mkq(base, "gw", "gw-7", keys, 30000, 5);
	assert_int_equal(queue_consume(server, "q:svc7", echo_handler, &h, &error), 0);
	assert_int_equal(request(client, "q:svc7", "before", 5000, &r1), 0);
	assert_int_equal(run_until(base, rctx_done, &r1, 5000), 0);
	assert_int_equal(r1.status, 0);

	/* In flight when Redis dies: answered with QUEUE_EDOWN. */
	assert_int_equal(request(client, "q:nobody", "lost", 20000, &rdown), 0);
	run_for(base, 100);
	redis_stop();
	assert_int_equal(run_until(base, rctx_done, &rdown, 3000), 0);
	assert_int_equal(rdown.status, QUEUE_EDOWN);
	assert_int_equal(run_until(base, disconnected, client, 3000), 0);
	run_for(base, 300);
	assert_int_equal(redis_start(), 0);
	group_create("svc7"); /* kept by the AOF; created again if not */
	qs[0] = client;
	qs[1] = server;
	assert_int_equal(run_until(base, both_connected, qs, 10000), 0);
	assert_int_equal(request(client, "q:svc7", "after", 8000, &r2), 0);
	assert_int_equal(run_until(base, rctx_done, &r2, 10000), 0);
	assert_int_equal(r2.status, 0);
	assert_string_equal(r2.data, "echo:after");
	queue_free(server);
	queue_free(client);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_retry_reclaimed),
		cmocka_unit_test(test_dead_letter_after_max),
		cmocka_unit_test(test_garbage_dead_lettered),
		cmocka_unit_test(test_dead_letter_refused_kept),
		cmocka_unit_test(test_request_timeout),
		cmocka_unit_test(test_forged_and_moved),
		cmocka_unit_test(test_reply_from_wrong_service),
		cmocka_unit_test(test_redis_restart),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
