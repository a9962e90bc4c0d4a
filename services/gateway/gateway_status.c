/*
 * gateway_status — the status listener and its poller, run by ward-status
 * (services/status/status_main.c: its own process, whose only credentials are the
 * cells' read-only status users); and the answer counters of every tenant gateway
 * (see gateway_status.h).
 *
 * Poller: every status.poll_ms, for each cell listed in status.cells, one async
 * hiredis connection as the read-only "status" ACL user sends XLEN dl:<svc>,
 * XLEN q:<svc> (the queue's depth: consumers delete what they ack) and XPENDING
 * q:<svc> <svc> (how much of it is delivered, not acked) for the consumers, then
 * SCAN MATCH hb:* with a GET of each
 * key it understands (heartbeats, audit outbox/backlog, last verified backup,
 * operators' incidents hb:ops:status:incident:<id>, the gateways' answer counters
 * hb:gateway:<instance>:http), and a final PING: replies come
 * in order, so the PING's answer closes a consistent snapshot. A cell that does not
 * answer within two poll periods is unreachable (its components: major outage).
 * After each tick the component states are recomputed and the time since the last
 * tick is added to each component's uptime record, saved to state_dir/uptime
 * every minute and at shutdown.
 *
 * Error rate: every tenant gateway publishes its HTTPS answers and 5xx
 * since start, and over its status.error_window_s, in hb:gateway:<instance>:http each
 * heartbeat period (status_pub_*: a difference of two of its own samples); the poller
 * sums the window figures of a cell's fresh instances, as wardctl status components
 * does, so the page and the operator's view show the same rate.
 *
 * One writer of the uptime file: several ward-status processes may serve the page
 * (same config, e.g. an autoscaling group behind status.<domain>), but only the
 * holder of the lease hb:status:uptime:owner in its own (home) cell records uptime
 * and writes state_dir/uptime (status_lease_*), through the daemon's own connection,
 * which is the home cell's status user too (its keys: hb:status:*). Each tick a
 * standby asks for it with SET NX PX (a lease of STATUS_LEASE_POLLS polls; the value
 * is "<instance>/<nonce>") and the owner renews it; the home cell's poll reads it
 * back (as the status user),
 * and that reading decides: our value → owner, another's → standby. A key absent or
 * a home cell unreachable changes nothing: an owner keeps recording an outage of its
 * own Redis. The owner also publishes its records every 10 s in
 * hb:status:uptime:records (the file's text: health data only); each standby's poll
 * merges them into its own (its pages show the same uptime), so a new owner carries
 * on from them on any host (then merges its own file, saves and publishes at once).
 * SIGTERM: the owner records, saves, publishes and releases (DEL), so a standby
 * takes over within a poll; a killed owner's lease expires instead (what it recorded
 * since its last publication is lost: at most 10 s).
 *
 * Listener: TLS with the status certificate (the gateway's TLS policy and caps,
 * through a shadow struct gateway), GET/HEAD only, documents rendered on request
 * from the last snapshot. Its own headers: a CSP allowing only its stylesheet.
 * The gateway's request guard (gateway_guard_tls) stands in front of it, so what
 * libevent would refuse with its own page gets a problem document with these headers.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "crypto.h"
#include "daemon.h"
#include "envelope.h"
#include "gateway.h"
#include "gateway_status.h"
#include "log.h"
#include "queue.h"

#define STATUS_KEY_MAX 200
#define STATUS_SAVE_EVERY_MS 60000
#define STATUS_PUBLISH_EVERY_MS 10000
#define STATUS_LEASE_POLLS 5 /* the lease lasts this many polls (at least 5 s) */
#define STATUS_LEASE_MAX 96

struct status_sample {
	long long at_ms, answers, errors;
};

struct status_conn {
	struct status_page *sp;
	char region[STATUS_REGION_MAX + 1];
	char host[256];
	int port;
	char *password;
	redisAsyncContext *ac;
	bool ready, polling, known;
	long long poll_started_ms;
	struct status_cell cur, last;
	long long dl_len[STATUS_SERVICES], dl_grew_ms[STATUS_SERVICES];
	long long dl_new[STATUS_SERVICES];
	struct status_incident **inc_new, **inc; /* being read, published */
	size_t n_inc_new, n_inc;
	char lease_new[STATUS_LEASE_MAX]; /* the lease's value read by this poll ("" absent) */
};

struct status_page {
	struct gateway *gw;
	struct gateway shadow; /* for gateway_tls_bevcb: status certificate, own counts */
	struct gateway_config shadow_cfg;
	struct evhttp *http;
	struct evhttp_bound_socket *sock;
	struct event *tick;
	struct status_conn conn[STATUS_REGIONS_MAX];
	size_t n;
	struct status_uptime *uptime;
	char uptime_path[4096];
	char url[300];
	long long last_rec_ms, last_save_ms, last_pub_ms;
	enum status_state states[STATUS_REGIONS_MAX][STATUS_COMPONENTS];
	struct status_incident **all; /* every cell's incidents, newest first */
	size_t n_all;
	/* The uptime file's single writer (see the file header). */
	struct status_conn *home;  /* the cell of this gateway: the lease lives there */
	char me[STATUS_LEASE_MAX]; /* our lease value */
	int role;		   /* -1 not known yet, 0 standby, 1 owner */
	bool stopping;
};

struct status_get {
	struct status_conn *c;
	int kind; /* GET_* */
	int svc;
};
enum {
	GET_HEARTBEAT,
	GET_OUTBOX,
	GET_BACKLOG,
	GET_BACKUP,
	GET_INCIDENT,
	GET_HTTP,
	GET_LEASE,
	GET_UPTIME
};

static struct status_page *status_page;

static void status_poll_start(struct status_conn *c);
static void status_collect(struct status_page *sp);
static void status_lease_seen(struct status_page *sp, const char *value);
static void status_uptime_publish(struct status_page *sp, long long now);

/* Index of a service name of length n, or -1. */
static int status_service_index(const char *s, size_t n)
{
	for (int i = 0; i < STATUS_SERVICES; i++)
		if (strlen(status_service_names[i]) == n && memcmp(s, status_service_names[i], n) == 0)
			return i;
	return -1;
}

/* Free an incident list. */
static void status_incidents_free(struct status_incident **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		status_incident_free(v[i]);
	free(v);
}

/* The connection a hiredis callback runs for, or NULL. */
static struct status_conn *status_conn_of(const redisAsyncContext *ac)
{
	return ac != NULL ? ac->data : NULL;
}

/* Reply to a GET: fold the value into the snapshot being built. */
static void status_on_get(redisAsyncContext *ac, void *r, void *priv)
{
	struct status_get *g = priv;
	struct status_conn *c = g->c;
	redisReply *reply = r;
	long long now = envelope_now_ms();

	if (reply == NULL || reply->type != REDIS_REPLY_STRING || !c->polling)
		goto out;
	switch (g->kind) {
	case GET_HEARTBEAT: {
		bool fresh, db_down;
		int i = status_heartbeat_parse(reply->str, reply->len, now,
					       c->sp->gw->cfg->status.heartbeat_timeout_ms, &fresh,
					       &db_down);

		if (i >= 0 && i == g->svc && fresh) {
			c->cur.svc[i].instances++;
			c->cur.svc[i].db_down = c->cur.svc[i].db_down || db_down;
		}
		break;
	}
	case GET_OUTBOX:
	case GET_BACKLOG:
	case GET_BACKUP: {
		json_t *o = json_loadb(reply->str, reply->len, 0, NULL);

		if (g->kind == GET_OUTBOX && json_is_true(json_object_get(o, "degraded")))
			c->cur.svc[g->svc].outbox_degraded = true;
		if (g->kind == GET_BACKLOG && json_is_true(json_object_get(o, "degraded")))
			c->cur.audit_backlog_degraded = true;
		if (g->kind == GET_BACKUP && json_is_integer(json_object_get(o, "at_ms")))
			c->cur.backup_verified_ms = json_integer_value(json_object_get(o, "at_ms"));
		if (g->kind == GET_BACKUP && json_is_false(json_object_get(o, "ok")))
			c->cur.backup_verify_failed = true;
		json_decref(o);
		break;
	}
	case GET_HTTP: {
		json_t *o = json_loadb(reply->str, reply->len, 0, NULL);
		long long at, n, e, wn, we, ws;

		if (status_http_parse(o, &at, &n, &e, &ws, &wn, &we) == 0 &&
		    now - at <= c->sp->gw->cfg->status.heartbeat_timeout_ms) {
			c->cur.http_answers += n;
			c->cur.http_5xx += e;
			c->cur.window_answers += wn;
			c->cur.window_5xx += we;
			if (ws > c->cur.window_s)
				c->cur.window_s = (int)ws;
		}
		json_decref(o);
		break;
	}
	case GET_UPTIME: {
		struct status_uptime *u = status_uptime_new();
		const char *err = NULL;

		if (c != c->sp->home || c->sp->role == 1 || u == NULL) {
			status_uptime_free(u);
			break;
		}
		if (status_uptime_parse(u, reply->str, reply->len, now / STATUS_DAY_MS, &err) < 0)
			log_event(LOG_WARN, "status: the published uptime records are malformed",
				  LF_STR("error", err));
		else
			status_uptime_merge(c->sp->uptime, u);
		status_uptime_free(u);
		break;
	}
	case GET_LEASE:
		if (c == c->sp->home && reply->len < sizeof c->lease_new) {
			memcpy(c->lease_new, reply->str, reply->len);
			c->lease_new[reply->len] = '\0';
		}
		break;
	case GET_INCIDENT: {
		struct status_incident *inc = status_incident_parse(reply->str, reply->len);
		struct status_incident **p;

		if (inc == NULL) {
			log_event(LOG_WARN, "status: malformed incident ignored",
				  LF_STR("region", c->region));
			break;
		}
		if (c->n_inc_new >= STATUS_INCIDENTS_MAX ||
		    (p = realloc(c->inc_new, (c->n_inc_new + 1) * sizeof *p)) == NULL) {
			status_incident_free(inc);
			break;
		}
		c->inc_new = p;
		c->inc_new[c->n_inc_new++] = inc;
		break;
	}
	}
out:
	free(g);
}

/* Send a GET of key for kind/svc. */
static void status_get_key(struct status_conn *c, const char *key, size_t n, int kind, int svc)
{
	struct status_get *g = calloc(1, sizeof *g);
	const char *argv[2] = {"GET", key};
	size_t lens[2] = {3, n};

	if (g == NULL)
		return;
	g->c = c;
	g->kind = kind;
	g->svc = svc;
	if (redisAsyncCommandArgv(c->ac, status_on_get, g, 2, argv, lens) != REDIS_OK)
		free(g);
}

/* Which GET a hb:* key deserves; -1 for none. */
static int status_key_kind(const char *key, size_t n, int *svc_r)
{
	static const char inc[] = "hb:ops:status:incident:";
	const char *rest, *colon;

	*svc_r = -1;
	if (n > STATUS_KEY_MAX || n < 4 || memcmp(key, "hb:", 3) != 0)
		return -1;
	if (n > sizeof inc - 1 && memcmp(key, inc, sizeof inc - 1) == 0)
		return GET_INCIDENT;
	if (n == sizeof STATUS_LEASE_KEY - 1 && memcmp(key, STATUS_LEASE_KEY, n) == 0)
		return GET_LEASE;
	if (n == sizeof STATUS_UPTIME_KEY - 1 && memcmp(key, STATUS_UPTIME_KEY, n) == 0)
		return GET_UPTIME;
	rest = key + 3;
	if ((colon = memchr(rest, ':', n - 3)) == NULL)
		return -1;
	if ((*svc_r = status_service_index(rest, (size_t)(colon - rest))) < 0)
		return -1;
	colon++;
	n -= (size_t)(colon - key);
	if (*svc_r == 0 && n > 5 && memcmp(colon + n - 5, ":http", 5) == 0)
		return GET_HTTP;
	if (n == 12 && memcmp(colon, "audit-outbox", 12) == 0)
		return GET_OUTBOX;
	if (*svc_r == 4 && n == 7 && memcmp(colon, "backlog", 7) == 0)
		return GET_BACKLOG;
	if (*svc_r == 5 && n == 13 && memcmp(colon, "last-verified", 13) == 0)
		return GET_BACKUP;
	return GET_HEARTBEAT;
}

/* The PING closing a poll: publish the snapshot. */
static void status_on_done(redisAsyncContext *ac, void *r, void *priv)
{
	struct status_conn *c = status_conn_of(ac);
	long long now = envelope_now_ms();

	if (c == NULL || r == NULL || !c->polling)
		return;
	c->polling = false;
	c->cur.reachable = true;
	for (int i = 0; i < STATUS_SERVICES; i++) {
		if (c->dl_new[i] >= 0 && c->dl_len[i] >= 0 && c->dl_new[i] > c->dl_len[i])
			c->dl_grew_ms[i] = now;
		if (c->dl_new[i] >= 0)
			c->dl_len[i] = c->dl_new[i];
		c->cur.svc[i].dead_letter_recent =
		    c->dl_grew_ms[i] > 0 &&
		    now - c->dl_grew_ms[i] < 1000LL * c->sp->gw->cfg->status.dead_letter_window_s;
	}
	c->last = c->cur;
	c->known = true;
	status_incidents_free(c->inc, c->n_inc);
	c->inc = c->inc_new;
	c->n_inc = c->n_inc_new;
	c->inc_new = NULL;
	c->n_inc_new = 0;
	status_collect(c->sp); /* sp->all pointed into the list just freed */
	if (c == c->sp->home)
		status_lease_seen(c->sp, c->lease_new);
}

/* A SCAN page: GET what we understand, then the next page or the closing PING. */
static void status_on_scan(redisAsyncContext *ac, void *r, void *priv)
{
	struct status_conn *c = status_conn_of(ac);
	redisReply *reply = r, *keys;
	int svc;

	if (c == NULL || reply == NULL || !c->polling)
		return;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    reply->element[1]->type != REDIS_REPLY_ARRAY) {
		log_event(LOG_WARN, "status: SCAN refused", LF_STR("region", c->region),
			  LF_STR("error", reply->type == REDIS_REPLY_ERROR ? reply->str : "?"));
		redisAsyncDisconnect(ac);
		return;
	}
	keys = reply->element[1];
	for (size_t i = 0; i < keys->elements; i++) {
		const redisReply *k = keys->element[i];
		int kind;

		if (k->type != REDIS_REPLY_STRING)
			continue;
		if ((kind = status_key_kind(k->str, k->len, &svc)) < 0)
			continue;
		/* The owner's published records: read by the others, in the home cell. */
		if (kind == GET_UPTIME && (c != c->sp->home || c->sp->role == 1))
			continue;
		status_get_key(c, k->str, k->len, kind, svc);
	}
	if (strcmp(reply->element[0]->str, "0") != 0 && strlen(reply->element[0]->str) < 32) {
		const char *argv[6] = {"SCAN", reply->element[0]->str, "MATCH", "hb:*", "COUNT",
				       "1000"};

		redisAsyncCommandArgv(ac, status_on_scan, NULL, 6, argv, NULL);
	} else {
		redisAsyncCommand(ac, status_on_done, NULL, "PING");
	}
}

/* A count for one service (priv: its slot): XLEN dl:<svc> or q:<svc>, or XPENDING
 * q:<svc>'s summary; an error leaves the slot unknown (-1). */
static void status_on_xlen(redisAsyncContext *ac, void *r, void *priv)
{
	struct status_conn *c = status_conn_of(ac);
	long long *slot = priv;

	if (c == NULL || r == NULL || !c->polling)
		return;
	*slot = status_reply_count(r);
}

/* Start one poll of a connected cell. */
static void status_poll_start(struct status_conn *c)
{
	static const char *const consumers[] = {"auth", "ticket", "audit", "backup", "mail-out"};

	memset(&c->cur, 0, sizeof c->cur);
	snprintf(c->cur.region, sizeof c->cur.region, "%s", c->region);
	status_incidents_free(c->inc_new, c->n_inc_new);
	c->inc_new = NULL;
	c->n_inc_new = 0;
	c->polling = true;
	c->poll_started_ms = envelope_now_ms();
	c->lease_new[0] = '\0';
	for (int i = 0; i < STATUS_SERVICES; i++) {
		c->cur.svc[i].depth = -1;
		c->cur.svc[i].pending = -1;
		c->dl_new[i] = -1;
	}
	for (size_t j = 0; j < sizeof consumers / sizeof consumers[0]; j++) {
		int i = status_service_index(consumers[j], strlen(consumers[j]));

		redisAsyncCommand(c->ac, status_on_xlen, &c->dl_new[i], "XLEN dl:%s",
				  consumers[j]);
		redisAsyncCommand(c->ac, status_on_xlen, &c->cur.svc[i].depth, "XLEN q:%s",
				  consumers[j]);
		redisAsyncCommand(c->ac, status_on_xlen, &c->cur.svc[i].pending, "XPENDING q:%s %s",
				  consumers[j], consumers[j]);
	}
	/* mail-ingest consumes nothing but dead-letters what it could not deliver */
	redisAsyncCommand(c->ac, status_on_xlen, &c->dl_new[status_service_index("mail-ingest", 11)],
			  "XLEN dl:mail-ingest");
	redisAsyncCommand(c->ac, status_on_scan, NULL, "SCAN 0 MATCH hb:* COUNT 1000");
}

/* The answer to AUTH: usable, or refused (then disconnect; retried next tick). */
static void status_on_auth(redisAsyncContext *ac, void *r, void *priv)
{
	struct status_conn *c = status_conn_of(ac);
	redisReply *reply = r;

	if (c == NULL || reply == NULL)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		log_event(LOG_ERROR, "status: redis authentication refused",
			  LF_STR("region", c->region), LF_STR("error", reply->str));
		redisAsyncDisconnect(ac);
		return;
	}
	c->ready = true;
	status_poll_start(c);
}

/* The connection is gone (or never came up): the cell is unreachable. */
static void status_conn_lost(struct status_conn *c)
{
	c->ac = NULL;
	c->ready = false;
	c->polling = false;
	memset(&c->last, 0, sizeof c->last);
	snprintf(c->last.region, sizeof c->last.region, "%s", c->region);
	c->last.reachable = false;
	c->known = true;
}

static void status_on_connect(const redisAsyncContext *ac, int status)
{
	struct status_conn *c = status_conn_of(ac);

	if (c != NULL && status != REDIS_OK)
		status_conn_lost(c);
}

static void status_on_disconnect(const redisAsyncContext *ac, int status)
{
	struct status_conn *c = status_conn_of(ac);

	if (c != NULL)
		status_conn_lost(c);
}

/* Connect to a cell and authenticate. */
static void status_connect(struct status_conn *c)
{
	const char *user = c->sp->gw->cfg->status.user;
	redisAsyncContext *ac = redisAsyncConnect(c->host, c->port);

	if (ac == NULL)
		return;
	if (ac->err) {
		redisAsyncFree(ac);
		status_conn_lost(c);
		return;
	}
	ac->data = c;
	if (redisLibeventAttach(ac, c->sp->gw->base) != REDIS_OK) {
		redisAsyncFree(ac);
		return;
	}
	redisAsyncSetConnectCallback(ac, status_on_connect);
	redisAsyncSetDisconnectCallback(ac, status_on_disconnect);
	c->ac = ac;
	redisAsyncCommand(ac, status_on_auth, NULL, "AUTH %s %s", user, c->password);
}

/* Incidents of every cell, deduplicated by id, newest first. */
static int status_incident_cmp(const void *a, const void *b)
{
	const struct status_incident *x = *(struct status_incident *const *)a;
	const struct status_incident *y = *(struct status_incident *const *)b;

	if (x->created_ms != y->created_ms)
		return x->created_ms > y->created_ms ? -1 : 1;
	return strcmp(x->id, y->id);
}

/* Rebuild sp->all (borrowed pointers into each connection's list). */
static void status_collect(struct status_page *sp)
{
	size_t total = 0, n = 0;
	struct status_incident **all;

	for (size_t i = 0; i < sp->n; i++)
		total += sp->conn[i].n_inc;
	free(sp->all);
	sp->all = NULL;
	sp->n_all = 0;
	if (total == 0 || (all = calloc(total, sizeof *all)) == NULL)
		return;
	for (size_t i = 0; i < sp->n; i++)
		for (size_t j = 0; j < sp->conn[i].n_inc; j++) {
			bool dup = false;

			for (size_t k = 0; k < n; k++)
				dup = dup || strcmp(all[k]->id, sp->conn[i].inc[j]->id) == 0;
			if (!dup)
				all[n++] = sp->conn[i].inc[j];
		}
	qsort(all, n, sizeof *all, status_incident_cmp);
	sp->all = all;
	sp->n_all = n;
}

/* The view of the current snapshot (cells copied into cells[]). */
static void status_view_make(struct status_page *sp, struct status_view *v,
			     struct status_cell cells[STATUS_REGIONS_MAX], long long now)
{
	for (size_t i = 0; i < sp->n; i++)
		cells[i] = sp->conn[i].last;
	memset(v, 0, sizeof *v);
	v->page_name = sp->gw->cfg->status.page_name;
	v->url = sp->url;
	v->now_ms = now;
	v->n_cells = sp->n;
	v->cells = cells;
	v->states = (const enum status_state(*)[STATUS_COMPONENTS])sp->states;
	v->uptime = sp->uptime;
	v->incidents = sp->all;
	v->n_incidents = sp->n_all;
}

/* Recompute states and account the elapsed time to each component's uptime. */
static void status_account(struct status_page *sp, long long now)
{
	const struct gateway_status_config *cfg = &sp->gw->cfg->status;
	struct status_thresholds t = {cfg->pending_high, 1000LL * cfg->backup_max_age_s,
				      cfg->error_rate_pct, cfg->error_major_pct, cfg->error_min};
	struct status_cell cells[STATUS_REGIONS_MAX];
	struct status_view v;
	long long from = sp->last_rec_ms;
	const char *err = NULL;

	status_collect(sp);
	for (size_t i = 0; i < sp->n; i++)
		status_evaluate(&sp->conn[i].last, &t, now, sp->states[i]);
	status_view_make(sp, &v, cells, now);
	status_apply_maintenance(&v, sp->states);
	/* Only the lease's owner records. A gap (the gateway was down, the loop stalled,
	 * it was a standby) is not observed time. */
	if (sp->role == 1 && from > 0 && now > from && now - from <= 3LL * cfg->poll_ms)
		for (size_t i = 0; i < sp->n; i++)
			if (sp->conn[i].known)
				for (int k = 0; k < STATUS_COMPONENTS; k++)
					status_uptime_record(sp->uptime, sp->conn[i].region, k,
							     sp->states[i][k], from, now);
	sp->last_rec_ms = sp->role == 1 ? now : 0;
	if (sp->role == 1 && now - sp->last_save_ms >= STATUS_SAVE_EVERY_MS) {
		if (status_uptime_save(sp->uptime, sp->uptime_path, &err) < 0)
			log_event(LOG_WARN, "status: cannot save uptime", LF_STR("error", err),
				  LF_STR("path", sp->uptime_path));
		sp->last_save_ms = now;
	}
	if (sp->role == 1 && now - sp->last_pub_ms >= STATUS_PUBLISH_EVERY_MS)
		status_uptime_publish(sp, now);
}

/* ------------------------------------------------------ the uptime lease */

/* Run a command on the daemon's own Redis connection (the home cell's status user;
 * reply ignored). */
static void status_lease_command(struct status_page *sp, int argc, const char **argv)
{
	size_t lens[6];

	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	(void)queue_command(daemon_queue(sp->gw->d), argc, argv, lens);
}

/* Each tick: ask for the lease (SET NX PX); the owner also renews it (EXPIRE). */
static void status_lease_tick(struct status_page *sp)
{
	long long ttl_ms = (long long)STATUS_LEASE_POLLS * sp->gw->cfg->status.poll_ms;
	char px[24], ex[24];
	const char *set[6] = {"SET", STATUS_LEASE_KEY, sp->me, "NX", "PX", px};
	const char *expire[3] = {"EXPIRE", STATUS_LEASE_KEY, ex};

	if (sp->stopping)
		return;
	if (ttl_ms < 5000)
		ttl_ms = 5000;
	snprintf(px, sizeof px, "%lld", ttl_ms);
	snprintf(ex, sizeof ex, "%lld", (ttl_ms + 999) / 1000);
	/* SET NX first: an owner whose lease vanished (its Redis restarted) takes it
	 * again; an owner's EXPIRE that lands on another's lease (ours had expired) only
	 * lengthens it, and the next reading makes us a standby. */
	status_lease_command(sp, 6, set);
	if (sp->role == 1)
		status_lease_command(sp, 3, expire);
}

/* Merge the uptime file into the records (a new owner: what it saved itself before). */
static void status_uptime_merge_file(struct status_page *sp)
{
	struct status_uptime *u = status_uptime_new();
	const char *err = NULL;

	if (u == NULL)
		return;
	if (status_uptime_load(u, sp->uptime_path, envelope_now_ms() / STATUS_DAY_MS, &err) < 0)
		log_event(LOG_WARN, "status: cannot read uptime", LF_STR("error", err),
			  LF_STR("path", sp->uptime_path));
	else
		status_uptime_merge(sp->uptime, u);
	status_uptime_free(u);
}

/* The owner publishes its records in its cell (hb:status:uptime:records, health data
 * only), so whichever status process takes the lease next carries on from them, whatever
 * host it runs on: the file is each host's own copy. */
static void status_uptime_publish(struct status_page *sp, long long now)
{
	char *text = status_uptime_format(sp->uptime);
	const char *argv[3] = {"SET", STATUS_UPTIME_KEY, text};

	if (text == NULL)
		return;
	status_lease_command(sp, 3, argv);
	free(text);
	sp->last_pub_ms = now;
}

/* The home cell's poll read the lease's value: owner, standby, or no change. */
static void status_lease_seen(struct status_page *sp, const char *value)
{
	const char *err = NULL;
	bool mine = strcmp(value, sp->me) == 0;

	if (value[0] == '\0' || sp->stopping)
		return; /* absent: the next SET NX settles it */
	if (mine && sp->role != 1) {
		/* Carry on from the previous owner's published records (merged by each
		 * poll while standby) and our own file, then claim both copies. */
		status_uptime_merge_file(sp);
		sp->last_rec_ms = 0;
		sp->role = 1;
		if (status_uptime_save(sp->uptime, sp->uptime_path, &err) < 0)
			log_event(LOG_WARN, "status: cannot save uptime", LF_STR("error", err),
				  LF_STR("path", sp->uptime_path));
		sp->last_save_ms = envelope_now_ms();
		status_uptime_publish(sp, sp->last_save_ms);
		log_event(LOG_INFO, "status: uptime owner", LF_STR("lease", sp->me),
			  LF_STR("path", sp->uptime_path));
	} else if (!mine && sp->role != 0) {
		sp->role = 0;
		sp->last_rec_ms = 0;
		log_event(LOG_INFO, "status: uptime standby", LF_STR("owner", value),
			  LF_STR("lease", sp->me));
	}
}

/* Timer: poll every cell, then account. */
static void status_tick(evutil_socket_t fd, short what, void *arg)
{
	struct status_page *sp = arg;
	long long now = envelope_now_ms();

	status_lease_tick(sp);
	for (size_t i = 0; i < sp->n; i++) {
		struct status_conn *c = &sp->conn[i];

		if (c->ac == NULL) {
			status_connect(c);
		} else if (c->polling) {
			if (now - c->poll_started_ms > 2LL * sp->gw->cfg->status.poll_ms) {
				log_event(LOG_WARN, "status: cell does not answer",
					  LF_STR("region", c->region));
				redisAsyncDisconnect(c->ac);
			}
		} else if (c->ready) {
			status_poll_start(c);
		}
	}
	status_account(sp, now);
}

/* ================================================================== HTTP */

/* Send a response with the status page's headers and one access log line. */
static void status_send(struct evhttp_request *req, int code, const char *reason,
			const char *type, const char *body, bool cors)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *buf = evbuffer_new();
	char rid[33];
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	size_t len = body != NULL ? strlen(body) : 0;

	if (crypto_random_id(rid) < 0)
		snprintf(rid, sizeof rid, "status");
	evhttp_add_header(h, "Strict-Transport-Security", "max-age=63072000; includeSubDomains");
	evhttp_add_header(h, "Content-Security-Policy",
			  "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
			  "form-action 'none'; frame-ancestors 'none'");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(h, "Referrer-Policy", "no-referrer");
	evhttp_add_header(h, "X-Frame-Options", "DENY");
	evhttp_add_header(h, "Cache-Control", code == 200 ? "public, max-age=10" : "no-store");
	evhttp_add_header(h, "X-Request-Id", rid);
	if (cors)
		evhttp_add_header(h, "Access-Control-Allow-Origin", "*");
	if (type != NULL)
		evhttp_add_header(h, "Content-Type", type);
	if (buf != NULL && body != NULL && evhttp_request_get_command(req) != EVHTTP_REQ_HEAD &&
	    evbuffer_add(buf, body, len) != 0) {
		evbuffer_free(buf);
		buf = NULL;
	}
	if (buf == NULL) {
		code = 500;
		reason = "Internal Server Error";
	}
	log_set_request_id(rid);
	log_event(LOG_INFO, "http", LF_STR("listener", "status"),
		  LF_STR("method", gateway_http_method(evhttp_request_get_command(req))),
		  LF_STR("path", path != NULL && strlen(path) < 200 ? path : "-"),
		  LF_INT("status", code), LF_INT("bytes", len));
	log_set_request_id(NULL);
	evhttp_send_reply(req, code, reason, buf);
	if (buf != NULL)
		evbuffer_free(buf);
}

/* Head bytes the status page takes; it takes no body (a larger one is refused). */
#define STATUS_MAX_HEAD 8192

/* evhttp's bevcb for the status page: the gateway's TLS bufferevent with the status
 * certificate (arg: the shadow gateway), behind the request guard. */
static struct bufferevent *status_bevcb(struct event_base *base, void *arg)
{
	struct bufferevent *bev = gateway_tls_bevcb(base, arg);

	gateway_guard_tls(bev, STATUS_MAX_HEAD, 0);
	return bev;
}

/* Route a request on the status host. */
static void status_dispatch(struct evhttp_request *req, void *arg)
{
	struct status_page *sp = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct status_cell cells[STATUS_REGIONS_MAX];
	struct status_view v;
	static const struct {
		const char *path, *what;
	} json_routes[] = {
	    {"/api/v2/summary.json", "summary"},
	    {"/api/v2/status.json", "status"},
	    {"/api/v2/components.json", "components"},
	    {"/api/v2/incidents.json", "incidents"},
	    {"/api/v2/incidents/unresolved.json", "unresolved"},
	    {"/api/v2/scheduled-maintenances.json", "scheduled"},
	};
	char *body = NULL;
	const char *title, *detail;
	int code;

	if (gateway_guard_refused(req, &code, &title, &detail)) {
		/* The guard refused what evhttp would have answered with its own page. */
		body = gateway_problem_json(code, title, detail);
		status_send(req, code, title, "application/problem+json", body, false);
		free(body);
		return;
	}
	if (sp->gw->stopping) {
		status_send(req, 503, "Service Unavailable", "text/plain", "shutting down\n", false);
		return;
	}
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
		status_send(req, 405, "Method Not Allowed", "text/plain", "method not allowed\n",
			    false);
		return;
	}
	if (path == NULL)
		path = "";
	status_view_make(sp, &v, cells, envelope_now_ms());
	if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
		body = status_render_html(&v);
		status_send(req, body ? 200 : 500, "OK", "text/html; charset=utf-8", body, false);
	} else if (strcmp(path, "/status.css") == 0) {
		status_send(req, 200, "OK", "text/css; charset=utf-8", status_css, false);
	} else if (strcmp(path, "/history.atom") == 0) {
		body = status_render_atom(&v);
		status_send(req, body ? 200 : 500, "OK", "application/atom+xml; charset=utf-8", body,
			    false);
	} else {
		for (size_t i = 0; i < sizeof json_routes / sizeof json_routes[0]; i++)
			if (strcmp(path, json_routes[i].path) == 0) {
				body = status_render_json(&v, json_routes[i].what);
				status_send(req, body ? 200 : 500, "OK",
					    "application/json; charset=utf-8", body, true);
				free(body);
				return;
			}
		status_send(req, 404, "Not Found", "application/problem+json",
			    "{\"type\":\"about:blank\",\"title\":\"Not Found\",\"status\":404}",
			    false);
	}
	free(body);
}

/* Parse "region host port password_file" into c. 0 or -1 with *error_r. */
static int status_cell_parse(struct status_conn *c, const char *spec, const char **error_r)
{
	char region[32], host[256], file[1024];
	int port;
	FILE *f;
	char pw[512];
	size_t n;

	if (sscanf(spec, "%31s %255s %d %1023s", region, host, &port, file) != 4 ||
	    strlen(region) > STATUS_REGION_MAX || !status_id_ok(region) || port < 1 ||
	    port > 65535) {
		*error_r = "status.cells: each entry is \"region host port password_file\"";
		return -1;
	}
	if ((f = fopen(file, "re")) == NULL) {
		*error_r = "status.cells: cannot read a password file";
		return -1;
	}
	n = fread(pw, 1, sizeof pw - 1, f);
	fclose(f);
	while (n > 0 && (pw[n - 1] == '\n' || pw[n - 1] == '\r'))
		n--;
	pw[n] = '\0';
	if (n == 0 || (c->password = strdup(pw)) == NULL) {
		crypto_wipe(pw, sizeof pw);
		*error_r = "status.cells: empty password file";
		return -1;
	}
	crypto_wipe(pw, sizeof pw);
	snprintf(c->region, sizeof c->region, "%.15s", region);
	snprintf(c->host, sizeof c->host, "%s", host);
	c->port = port;
	snprintf(c->last.region, sizeof c->last.region, "%.15s", region);
	for (int i = 0; i < STATUS_SERVICES; i++)
		c->dl_len[i] = -1;
	return 0;
}

/* ------------------------------------------------- every gateway: its counters */
#define STATUS_PUB_SAMPLES 4096 /* a window of status.error_window_s (<= 3600 s) per heartbeat */

static struct {
	struct gateway *gw;
	struct event *ev;
	char key[192];
	struct status_sample samples[STATUS_PUB_SAMPLES]; /* oldest first */
	size_t n_samples;
} status_pub;

/*
 * Add (now, answers, errors) to samples (oldest first, n of cap) and return through
 * *wa_r, *we_r the answers and 5xx over the window_ms ending now: the difference with
 * the newest sample at or before the window's start (or the oldest one we have).
 */
static void status_window_add(struct status_sample *samples, size_t *n, size_t cap, long long now,
			      long long answers, long long errors, long long window_ms,
			      long long *wa_r, long long *we_r)
{
	size_t drop = 0;

	if (*n > 0 && (answers < samples[*n - 1].answers || errors < samples[*n - 1].errors))
		*n = 0; /* counters went down: start over */
	if (*n == cap)
		drop = 1;
	/* Keep one sample at or before the window's start: the base of the difference. */
	while (drop + 1 < *n && samples[drop + 1].at_ms <= now - window_ms)
		drop++;
	if (drop > 0) {
		memmove(samples, samples + drop, (*n - drop) * sizeof samples[0]);
		*n -= drop;
	}
	samples[(*n)++] = (struct status_sample){now, answers, errors};
	*wa_r = answers - samples[0].answers;
	*we_r = errors - samples[0].errors;
}

/*
 * Publish this gateway's answer counters, since start and over status.error_window_s
 * (read by the status page's poller and by wardctl status components, which sum the
 * fresh ones of a cell: both show the same error rate).
 */
static void status_pub_tick(evutil_socket_t fd, short what, void *arg)
{
	const struct daemon_config *dc = daemon_config(status_pub.gw->d);
	int window_s = status_pub.gw->cfg->status.error_window_s;
	unsigned long long answers, errors;
	long long now = envelope_now_ms(), wa, we;
	char value[256], ttl[16];
	const char *argv[5];
	size_t lens[5];

	gateway_http_counts(&answers, &errors);
	status_window_add(status_pub.samples, &status_pub.n_samples, STATUS_PUB_SAMPLES, now,
			  (long long)answers, (long long)errors, 1000LL * window_s, &wa, &we);
	snprintf(value, sizeof value,
		 "{\"at_ms\":%lld,\"answers\":%llu,\"errors_5xx\":%llu,\"window_s\":%d,"
		 "\"window_answers\":%lld,\"window_5xx\":%lld}",
		 now, answers, errors, window_s, wa, we);
	snprintf(ttl, sizeof ttl, "%d", dc->heartbeat_seconds * 3);
	argv[0] = "SET", argv[1] = status_pub.key, argv[2] = value, argv[3] = "EX", argv[4] = ttl;
	for (int i = 0; i < 5; i++)
		lens[i] = strlen(argv[i]);
	(void)queue_command(daemon_queue(status_pub.gw->d), 5, argv, lens);
}

/* The tenant gateway: publish hb:gateway:<instance>:http every heartbeat period. 0 or -1. */
int gateway_status_pub_start(struct gateway *gw, const char **error_r)
{
	const struct daemon_config *dc = daemon_config(gw->d);
	struct timeval tv = {dc->heartbeat_seconds, 0};

	status_pub.gw = gw;
	snprintf(status_pub.key, sizeof status_pub.key, "hb:gateway:%s:http", dc->instance);
	if ((status_pub.ev = event_new(gw->base, -1, EV_PERSIST, status_pub_tick, NULL)) == NULL) {
		*error_r = "cannot create the counters timer";
		return -1;
	}
	event_add(status_pub.ev, &tv);
	return 0;
}

static void status_pub_free(void)
{
	if (status_pub.ev != NULL)
		event_free(status_pub.ev);
	status_pub.ev = NULL;
}

/* ward-status: start the status listener and poller. 0 or -1. */
int gateway_status_start(struct gateway *gw, const char **error_r)
{
	const struct gateway_status_config *cfg = &gw->cfg->status;
	const struct daemon_config *dc = daemon_config(gw->d);
	static char err[320];
	struct status_page *sp;
	char host[GATEWAY_HOST_MAX + 1];
	uint16_t port;
	struct timeval tv;

	if (cfg->listen == NULL || cfg->cert_file == NULL || cfg->key.data == NULL || cfg->state_dir == NULL ||
	    cfg->cells.n == 0 || cfg->cells.n > STATUS_REGIONS_MAX) {
		*error_r = "status.listen needs status.cert_file, status.key_file, status.state_dir "
			   "and 1..16 status.cells";
		return -1;
	}
	if (gateway_listen_parse(cfg->listen, host, sizeof host, &port, error_r) < 0)
		return -1;
	if ((sp = calloc(1, sizeof *sp)) == NULL || (sp->uptime = status_uptime_new()) == NULL) {
		free(sp);
		*error_r = "out of memory";
		return -1;
	}
	status_page = sp;
	sp->gw = gw;
	for (size_t i = 0; i < cfg->cells.n; i++) {
		sp->conn[i].sp = sp;
		if (status_cell_parse(&sp->conn[i], cfg->cells.items[i], error_r) < 0)
			goto fail;
		sp->n++;
	}
	for (size_t i = 0; i < sp->n; i++)
		if (strcmp(sp->conn[i].region, daemon_config(gw->d)->region) == 0)
			sp->home = &sp->conn[i];
	if (sp->home == NULL) {
		snprintf(err, sizeof err,
			 "status.cells must list this process's own region (%.15s): the uptime "
			 "file's lease lives in its Redis",
			 dc->region);
		*error_r = err;
		goto fail;
	}
	/* The daemon's own connection (heartbeat, lease) is the home cell's status user:
	 * the page holds no other credential. */
	if (strcmp(dc->redis_user, cfg->user) != 0 || strcmp(dc->redis_host, sp->home->host) != 0 ||
	    dc->redis_port != sp->home->port) {
		snprintf(err, sizeof err,
			 "redis: must be the home cell's status user (user %.32s at %.64s:%d, as in "
			 "status.cells for %.15s)",
			 cfg->user, sp->home->host, sp->home->port, dc->region);
		*error_r = err;
		goto fail;
	}
	if (gateway_guard_init(error_r) < 0)
		goto fail;
	{
		uint8_t nonce[8];
		char hex[17];

		if (crypto_random(nonce, sizeof nonce) < 0) {
			*error_r = "no randomness for the uptime lease";
			goto fail;
		}
		for (size_t i = 0; i < sizeof nonce; i++)
			snprintf(hex + 2 * i, 3, "%02x", nonce[i]);
		snprintf(sp->me, sizeof sp->me, "%.60s/%s", daemon_config(gw->d)->instance, hex);
	}
	sp->role = -1;
	snprintf(sp->uptime_path, sizeof sp->uptime_path, "%s/uptime", cfg->state_dir);
	if (status_uptime_load(sp->uptime, sp->uptime_path, envelope_now_ms() / STATUS_DAY_MS,
			       error_r) < 0)
		goto fail;
	sp->last_save_ms = envelope_now_ms();
	if (port == 443)
		snprintf(sp->url, sizeof sp->url, "https://status.%s/", gw->cfg->domain);
	else
		snprintf(sp->url, sizeof sp->url, "https://status.%s:%u/", gw->cfg->domain,
			 (unsigned)port);
	/* The gateway's TLS setup with the status certificate, and its own counters. */
	sp->shadow_cfg = *gw->cfg;
	sp->shadow_cfg.https_cert_file = cfg->cert_file;
	sp->shadow_cfg.https_key = cfg->key;
	sp->shadow = *gw;
	sp->shadow.cfg = &sp->shadow_cfg;
	sp->shadow.connections = 0;
	sp->shadow.sources = gateway_tls_sources_new();
	if ((sp->shadow.ssl_ctx = gateway_tls_ctx_new(&sp->shadow_cfg, error_r)) == NULL)
		goto fail;
	if ((sp->http = evhttp_new(gw->base)) == NULL ||
	    (sp->sock = evhttp_bind_socket_with_handle(sp->http, host, port)) == NULL) {
		snprintf(err, sizeof err, "status.listen: cannot listen on %s: %s", cfg->listen,
			 strerror(errno));
		*error_r = err;
		goto fail;
	}
	evhttp_set_bevcb(sp->http, status_bevcb, &sp->shadow);
	evhttp_set_gencb(sp->http, status_dispatch, sp);
	/* Looser than the guard's (status_bevcb), which refuses first with a problem
	 * document; every method reaches status_dispatch, which answers 405 itself. */
	evhttp_set_max_headers_size(sp->http, 2 * STATUS_MAX_HEAD + 1024);
	evhttp_set_max_body_size(sp->http, 1);
	evhttp_set_timeout(sp->http, 10);
	evhttp_set_allowed_methods(sp->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
						 EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
						 EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH |
						 EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
	if ((sp->tick = event_new(gw->base, -1, EV_PERSIST, status_tick, sp)) == NULL) {
		*error_r = "cannot create the status timer";
		goto fail;
	}
	tv.tv_sec = cfg->poll_ms / 1000;
	tv.tv_usec = (cfg->poll_ms % 1000) * 1000;
	event_add(sp->tick, &tv);
	status_tick(-1, 0, sp);
	log_event(LOG_INFO, "status page listening", LF_STR("listen", cfg->listen),
		  LF_INT("cells", sp->n));
	return 0;
fail:
	gateway_status_free(gw);
	return -1;
}

/* SIGTERM: stop accepting on the status listener. */
void gateway_status_stop(struct gateway *gw)
{
	struct status_page *sp = status_page;

	/* Requests on open connections get 503 (gw->stopping, set by ward-status's stop). */
	if (sp != NULL && sp->http != NULL && sp->sock != NULL)
		evhttp_del_accept_socket(sp->http, sp->sock);
	if (sp == NULL)
		return;
	sp->sock = NULL;
	/* The owner records up to now, saves and releases the lease (the queue is still
	 * up: its drain waits for the DEL): a standby takes over within a poll. */
	if (sp->role == 1) {
		const char *del[2] = {"DEL", STATUS_LEASE_KEY};
		const char *err = NULL;

		status_account(sp, envelope_now_ms());
		if (status_uptime_save(sp->uptime, sp->uptime_path, &err) < 0)
			log_event(LOG_WARN, "status: cannot save uptime", LF_STR("error", err));
		status_uptime_publish(sp, envelope_now_ms());
		status_lease_command(sp, 2, del);
		log_event(LOG_INFO, "status: uptime lease released", LF_STR("lease", sp->me));
	}
	sp->role = 0;
	sp->stopping = true;
}

/* Free the listener, the poller and the records (saved first). NULL-safe. */
void gateway_status_free(struct gateway *gw)
{
	struct status_page *sp = status_page;
	const char *err = NULL;

	status_pub_free();
	if (sp == NULL)
		return;
	if (sp->tick != NULL) {
		event_free(sp->tick);
		/* Only the owner writes (after a stop, nobody here: it saved then). */
		if (sp->role == 1 && status_uptime_save(sp->uptime, sp->uptime_path, &err) < 0)
			log_event(LOG_WARN, "status: cannot save uptime", LF_STR("error", err));
	}
	if (sp->http != NULL)
		evhttp_free(sp->http);
	for (size_t i = 0; i < STATUS_REGIONS_MAX; i++) {
		struct status_conn *c = &sp->conn[i];

		if (c->ac != NULL) {
			redisAsyncContext *ac = c->ac;

			c->ac = NULL;
			ac->data = NULL; /* callbacks now see no connection */
			redisAsyncFree(ac);
		}
		status_incidents_free(c->inc, c->n_inc);
		status_incidents_free(c->inc_new, c->n_inc_new);
		if (c->password != NULL) {
			crypto_wipe(c->password, strlen(c->password));
			free(c->password);
		}
	}
	gateway_tls_ctx_free(sp->shadow.ssl_ctx);
	gateway_tls_sources_free(sp->shadow.sources);
	status_uptime_free(sp->uptime);
	free(sp->all);
	free(sp);
	status_page = NULL;
}
