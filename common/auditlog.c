/*
 * auditlog — recording audit events so that none is lost once its action has
 * committed (see auditlog.h).
 *
 * auditlog_record appends the event to <schema>.outbox inside the caller's
 * transaction. The relay (one per daemon with a database) reads the outbox in
 * order, sends up to AUDITLOG_BATCH_MAX rows as one audit.record_batch envelope
 * with a blocking XADD on a connection of its own — so it knows Redis accepted
 * the entry (appendfsync always: it is on disk) — and only then deletes exactly
 * those rows. Redis down, refusing, or killed between the XADD and the DELETE:
 * the rows stay and are sent again; ward-audit stores an event id once.
 * q:audit is never trimmed by the relay's XADD, so an entry is never dropped
 * unread while ward-audit is down.
 *
 * The same relay sends a service's other outboxes (auditlog_outbox_add: ward-ticket's
 * mail outbox to q:mail-out), row by row after the audit batch: a row whose payload
 * cannot be made now is skipped and tried again at the next tick (it blocks no
 * other row), a failed XADD stops the batch, a row sent is deleted.
 *
 * The relay also publishes hb:<service>:audit-outbox ({"pending", "high_water",
 * "degraded"}) so the status page can flag a backlog while the service keeps
 * working.
 */
#include "auditlog.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>

#include "crypto.h"
#include "daemon.h"
#include "envelope.h"
#include "log.h"

#define RELAY_INTERVAL_S 1
#define RELAY_REDIS_TIMEOUT_MS 2000
#define RELAY_STATUS_EVERY 5 /* ticks between hb:<service>:audit-outbox updates */

/* ============================== events ================================== */

/* 1 if s is 32 lower-case hex digits. */
static int auditlog_id_ok(const char *s)
{
	return strlen(s) == 32 && strspn(s, "0123456789abcdef") == 32;
}

/* A NULL string field becomes "" (protobuf-c uses a shared empty string). */
static const char *nz(const char *s)
{
	return s != NULL ? s : "";
}

/* Valid UTF-8 (no overlongs, no surrogates) of len bytes. */
static int auditlog_utf8_ok(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i];
		size_t n;
		unsigned cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, cp = c & 0x07;
		else
			return 0;
		if (n >= len - i)
			return 0;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n + 1;
	}
	return 1;
}

int auditlog_prepare(Ward__AuditEvent *ev, const char **error_r)
{
	static char idbuf[33];
	const char *fields[8];

	if (ev == NULL) {
		*error_r = "no event";
		return -1;
	}
	if (ev->id == NULL || ev->id[0] == '\0') {
		/* The caller's event borrows a fresh id; copy it before the next call. */
		if (crypto_random_id(idbuf) < 0) {
			*error_r = "no random bytes for the event id";
			return -1;
		}
		ev->id = idbuf;
	} else if (!auditlog_id_ok(ev->id)) {
		*error_r = "event id: expected 32 lower-case hex digits";
		return -1;
	}
	if (ev->at_ms <= 0)
		ev->at_ms = envelope_now_ms();
	fields[0] = nz(ev->tenant_id), fields[1] = nz(ev->type), fields[2] = nz(ev->action);
	fields[3] = nz(ev->actor), fields[4] = nz(ev->target), fields[5] = nz(ev->ip);
	fields[6] = nz(ev->request_id), fields[7] = NULL;
	for (int i = 0; fields[i] != NULL; i++)
		if (strlen(fields[i]) > 255 || !envelope_string_ok(fields[i])) {
			*error_r = "event field too long or not printable UTF-8";
			return -1;
		}
	if (fields[1][0] == '\0' || fields[2][0] == '\0' || fields[3][0] == '\0') {
		*error_r = "event needs type, action and actor";
		return -1;
	}
	if (strlen(nz(ev->detail_json)) > AUDITLOG_DETAIL_MAX ||
	    !auditlog_utf8_ok((const unsigned char *)nz(ev->detail_json),
			      strlen(nz(ev->detail_json)))) {
		*error_r = "event detail too large or not UTF-8";
		return -1;
	}
	return 0;
}

/* "auth" → "INSERT INTO auth.outbox ..."; schema is a constant of the caller,
 * checked anyway so no input can ever reach the SQL text. */
static int auditlog_schema_ok(const char *schema)
{
	size_t n = schema != NULL ? strlen(schema) : 0;

	return n > 0 && n < 32 && strspn(schema, "abcdefghijklmnopqrstuvwxyz_") == n;
}

int auditlog_record(db_t *db, const char *schema, Ward__AuditEvent *ev, const char **error_r)
{
	char sql[256], at[24];
	const char *params[10];

	if (!auditlog_schema_ok(schema)) {
		*error_r = "auditlog_record: bad schema name";
		return -1;
	}
	if (auditlog_prepare(ev, error_r) < 0)
		return -1;
	snprintf(sql, sizeof sql,
		 "INSERT INTO %s.outbox (id, at_ms, tenant_id, type, action, actor, target, ip, "
		 "request_id, detail_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
		 schema);
	snprintf(at, sizeof at, "%lld", (long long)ev->at_ms);
	params[0] = ev->id, params[1] = at, params[2] = nz(ev->tenant_id);
	params[3] = nz(ev->type), params[4] = nz(ev->action), params[5] = nz(ev->actor);
	params[6] = nz(ev->target), params[7] = nz(ev->ip), params[8] = nz(ev->request_id);
	params[9] = nz(ev->detail_json);
	/* Sent with the transaction's next statement or its COMMIT. */
	return db_defer(db, sql, 10, params, NULL, NULL, error_r);
}

int auditlog_send(queue_t *q, Ward__AuditEvent *ev, const char **error_r)
{
	struct queue_msg msg = { 0 };
	uint8_t *buf;
	size_t len;
	int r;

	if (auditlog_prepare(ev, error_r) < 0)
		return -1;
	len = ward__audit_event__get_packed_size(ev);
	buf = malloc(len ? len : 1);
	if (buf == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	ward__audit_event__pack(ev, buf);
	msg.dest = "q:audit";
	msg.method = "audit.record";
	msg.tenant = nz(ev->tenant_id);
	msg.request_id = nz(ev->request_id);
	msg.payload = buf;
	msg.len = len;
	r = queue_send(q, &msg, error_r);
	free(buf);
	return r;
}

/* ============================ blocking Redis ============================ */

redisContext *auditlog_redis_open(const char *host, int port, const char *user,
				  const char *password, int timeout_ms, const char **error_r)
{
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	redisContext *rc = redisConnectWithTimeout(host, port, tv);
	redisReply *r;

	if (rc == NULL || rc->err) {
		*error_r = "cannot connect to Redis";
		redisFree(rc);
		return NULL;
	}
	if (redisSetTimeout(rc, tv) != REDIS_OK) {
		*error_r = "cannot set the Redis timeout";
		redisFree(rc);
		return NULL;
	}
	if (password != NULL) {
		r = redisCommand(rc, "AUTH %s %s", user, password);
		if (r == NULL || r->type == REDIS_REPLY_ERROR) {
			*error_r = r == NULL ? "Redis connection lost" : "Redis refused AUTH";
			freeReplyObject(r);
			redisFree(rc);
			return NULL;
		}
		freeReplyObject(r);
	}
	return rc;
}

int auditlog_xadd(redisContext *rc, const envelope_keys_t *keys, const char *sender,
		  const char *region, const char *method, const char *tenant,
		  const Ward__Principal *principal, const uint8_t *payload, size_t len,
		  const char **error_r)
{
	return auditlog_xadd_to(rc, keys, "q:audit", sender, region, method, tenant, principal,
				payload, len, error_r);
}

int auditlog_xadd_to(redisContext *rc, const envelope_keys_t *keys, const char *stream,
		     const char *sender, const char *region, const char *method,
		     const char *tenant, const Ward__Principal *principal, const uint8_t *payload,
		     size_t len, const char **error_r)
{
	Ward__Envelope env = WARD__ENVELOPE__INIT;
	char id[33];

	if (len > ENVELOPE_MAX_PAYLOAD || crypto_random_id(id) < 0) {
		*error_r = "payload too large or no random bytes";
		return -1;
	}
	env.version = ENVELOPE_VERSION;
	env.id = id;
	env.tenant = (char *)nz(tenant);
	env.region = (char *)region;
	env.sender = (char *)sender;
	env.method = (char *)method;
	env.principal = (Ward__Principal *)principal;
	env.stream = (char *)stream;
	return auditlog_xadd_envelope(rc, keys, &env, payload, len, error_r);
}

int auditlog_xadd_envelope(redisContext *rc, const envelope_keys_t *keys, Ward__Envelope *env,
			   const uint8_t *payload, size_t len, const char **error_r)
{
	uint8_t *buf = NULL;
	size_t blen = 0;
	redisReply *r = NULL;
	const char *argv[5];
	size_t lens[5];
	int ret = -1;

	if (envelope_seal(env, keys, payload, len, error_r) < 0)
		return -1;
	buf = envelope_pack(env, &blen);
	if (buf == NULL) {
		*error_r = "cannot pack the envelope";
		goto out;
	}
	argv[0] = "XADD", argv[1] = env->stream, argv[2] = "*", argv[3] = "e";
	argv[4] = (const char *)buf;
	lens[0] = 4, lens[1] = strlen(env->stream), lens[2] = 1, lens[3] = 1, lens[4] = blen;
	r = redisCommandArgv(rc, 5, argv, lens);
	if (r == NULL) {
		*error_r = "Redis connection lost";
		goto out;
	}
	if (r->type != REDIS_REPLY_STRING) {
		*error_r = r->type == REDIS_REPLY_ERROR ? "Redis refused the XADD"
							: "unexpected XADD reply";
		goto out;
	}
	ret = 0;
out:
	freeReplyObject(r);
	free(buf);
	envelope_clear_payload(env);
	return ret;
}

/* ================================ relay ================================= */

#define RELAY_OUTBOX_MAX 4
#define RELAY_OUTBOX_BATCH 32

/* A registered outbox and its statements. */
struct relay_outbox {
	const struct auditlog_outbox *ob;
	char select_sql[320], delete_sql[128];
	char after[24]; /* read on from after this seq (a full batch), "0": from the start */
	unsigned long failures;
};

static const struct auditlog_outbox *auditlog_outboxes[RELAY_OUTBOX_MAX];
static size_t auditlog_n_outboxes;

int auditlog_outbox_add(const struct auditlog_outbox *ob, const char **error_r)
{
	if (ob == NULL || !auditlog_schema_ok(ob->table) || ob->payload == NULL ||
	    auditlog_n_outboxes >= RELAY_OUTBOX_MAX) {
		*error_r = "outbox: bad table name, no payload function, or too many";
		return -1;
	}
	auditlog_outboxes[auditlog_n_outboxes++] = ob;
	return 0;
}

struct auditlog_relay {
	struct daemon *d;
	char schema[32];
	char select_sql[256], delete_sql[128], count_sql[96];
	char status_key[128];
	envelope_keys_t *keys;
	redisContext *rc;
	struct event *timer;
	unsigned ticks;
	unsigned long sent, failures;
	int warned;
	struct relay_outbox outbox[RELAY_OUTBOX_MAX];
	size_t n_outbox;
};

/* One daemon per process, so one relay. */
static struct auditlog_relay *auditlog_relay;

/* (Re)connect the relay's own blocking Redis connection. */
static int relay_connect(struct auditlog_relay *r, const char **error_r)
{
	const struct daemon_config *c = daemon_config(r->d);

	if (r->rc != NULL)
		return 0;
	r->rc = auditlog_redis_open(c->redis_host, c->redis_port, c->redis_user,
				    (const char *)c->redis_password.data, RELAY_REDIS_TIMEOUT_MS,
				    error_r);
	return r->rc != NULL ? 0 : -1;
}

/* Publish the outbox backlog for the status page (best effort). */
static void relay_status(struct auditlog_relay *r)
{
	const char *err = NULL;
	PGresult *res = db_exec(daemon_db(r->d), r->count_sql, 0, NULL, &err);
	long long pending;
	char value[160];
	redisReply *rep;

	if (res == NULL || r->rc == NULL) {
		if (res != NULL)
			PQclear(res);
		return;
	}
	pending = atoll(PQgetvalue(res, 0, 0));
	PQclear(res);
	snprintf(value, sizeof value, "{\"pending\":%lld,\"high_water\":%d,\"degraded\":%s}",
		 pending, AUDITLOG_OUTBOX_HIGH_WATER,
		 pending > AUDITLOG_OUTBOX_HIGH_WATER ? "true" : "false");
	if (pending > AUDITLOG_OUTBOX_HIGH_WATER && !r->warned) {
		log_event(LOG_WARN, "audit outbox past its high-water mark",
			  LF_INT("pending", pending), LF_INT("high_water", AUDITLOG_OUTBOX_HIGH_WATER));
		r->warned = 1;
	} else if (pending <= AUDITLOG_OUTBOX_HIGH_WATER) {
		r->warned = 0;
	}
	rep = redisCommand(r->rc, "SET %s %s EX 30", r->status_key, value);
	if (rep == NULL) {
		redisFree(r->rc);
		r->rc = NULL;
	}
	freeReplyObject(rep);
}

/* Send one batch of outbox rows; delete them once Redis has them. Returns the
 * number of rows sent, 0 if none, -1 on failure (rows kept). */
static int relay_flush_once(struct auditlog_relay *r)
{
	db_t *db = daemon_db(r->d);
	const struct daemon_config *c = daemon_config(r->d);
	Ward__AuditEventBatch batch = WARD__AUDIT_EVENT_BATCH__INIT;
	Ward__AuditEvent *evs = NULL, **ptrs = NULL;
	Ward__Principal principal = WARD__PRINCIPAL__INIT;
	PGresult *res = NULL, *del = NULL;
	const char *err = NULL, *params[1];
	char *seqs = NULL;
	uint8_t *buf = NULL;
	size_t len, off = 0, cap;
	int n, ret = -1;

	res = db_exec(db, r->select_sql, 0, NULL, &err);
	if (res == NULL)
		goto fail;
	n = PQntuples(res);
	if (n == 0) {
		ret = 0;
		goto out;
	}
	if (relay_connect(r, &err) < 0)
		goto fail;
	evs = calloc((size_t)n, sizeof *evs);
	ptrs = calloc((size_t)n, sizeof *ptrs);
	cap = (size_t)n * 21 + 3;
	seqs = malloc(cap);
	if (evs == NULL || ptrs == NULL || seqs == NULL) {
		err = "out of memory";
		goto fail;
	}
	seqs[off++] = '{';
	for (int i = 0; i < n; i++) {
		Ward__AuditEvent *e = &evs[i];

		ward__audit_event__init(e);
		e->id = PQgetvalue(res, i, 1);
		e->at_ms = atoll(PQgetvalue(res, i, 2));
		e->tenant_id = PQgetvalue(res, i, 3);
		e->type = PQgetvalue(res, i, 4);
		e->action = PQgetvalue(res, i, 5);
		e->actor = PQgetvalue(res, i, 6);
		e->target = PQgetvalue(res, i, 7);
		e->ip = PQgetvalue(res, i, 8);
		e->request_id = PQgetvalue(res, i, 9);
		e->detail_json = PQgetvalue(res, i, 10);
		ptrs[i] = e;
		off += (size_t)snprintf(seqs + off, cap - off, "%s%s", i ? "," : "",
					PQgetvalue(res, i, 0));
	}
	seqs[off++] = '}';
	seqs[off] = '\0';
	batch.n_events = (size_t)n;
	batch.events = ptrs;
	len = ward__audit_event_batch__get_packed_size(&batch);
	buf = malloc(len ? len : 1);
	if (buf == NULL) {
		err = "out of memory";
		goto fail;
	}
	ward__audit_event_batch__pack(&batch, buf);
	principal.kind = "service";
	principal.id = c->service;
	if (auditlog_xadd(r->rc, r->keys, c->service, c->region, "audit.record_batch", "",
			  &principal, buf, len, &err) < 0) {
		redisFree(r->rc);
		r->rc = NULL;
		goto fail;
	}
	/* Exactly the rows sent: a row committed later with a lower seq stays. The
	 * DELETE's commit does not wait for its WAL flush: rows a crash brings back are
	 * sent again, and stored once by id. */
	params[0] = seqs;
	if (db_in_transaction(db))
		del = db_exec(db, r->delete_sql, 1, params, &err);
	else if (db_begin_async(db, NULL, &err) == 0)
		del = db_exec_commit(db, r->delete_sql, 1, params, &err);
	if (del == NULL)
		goto fail; /* sent again later; stored once by id */
	r->sent += (unsigned long)n;
	r->failures = 0;
	ret = n;
	goto out;
fail:
	/* Log the first failure of a run, then every 60th: Redis may be down a while. */
	if (r->failures++ % 60 == 0)
		log_event(LOG_WARN, "audit outbox relay: rows kept for later",
			  LF_STR("schema", r->schema), LF_STR("error", err ? err : "unknown"));
out:
	if (del != NULL)
		PQclear(del);
	if (res != NULL)
		PQclear(res);
	free(evs);
	free(ptrs);
	free(seqs);
	free(buf);
	return ret;
}

/* Run one statement in a transaction of tenant (rows of an outbox other than
 * the audit one may sit under row-level security elsewhere: say whose). */
static int relay_tenant_exec(db_t *db, const char *tenant, const char *sql, const char *param,
			     const char **error_r)
{
	PGresult *res;

	if (db_begin(db, tenant, error_r) < 0)
		return -1;
	res = db_exec(db, sql, 1, (const char *const[]){ param }, error_r);
	if (res == NULL) {
		db_rollback(db);
		return -1;
	}
	PQclear(res);
	return db_commit(db, error_r);
}

/* Send one batch of a registered outbox, row by row: each row's payload is made
 * by the service (in a transaction of the row's tenant), XADDed, then the row
 * deleted. A row whose payload fails is skipped (kept for the next tick: one bad
 * row never holds up the others); a failed XADD or DELETE stops the batch.
 * Returns the rows handled, or -1 when something failed. */
static int relay_flush_outbox(struct auditlog_relay *r, struct relay_outbox *o)
{
	db_t *db = daemon_db(r->d);
	const struct daemon_config *c = daemon_config(r->d);
	Ward__Principal principal = WARD__PRINCIPAL__INIT;
	PGresult *res;
	const char *err = NULL, *skipped = NULL;
	int n, done = 0;

	if (db_in_transaction(db))
		return 0; /* a handler's transaction is open: next tick */
	res = db_exec(db, o->select_sql, 1, (const char *const[]){ o->after }, &err);
	if (res == NULL)
		goto fail;
	n = PQntuples(res);
	/* a full batch: the next one reads on behind it (rows skipped here cannot hold
	 * up the rest); a short one: the next starts over (the skipped ones again) */
	snprintf(o->after, sizeof o->after, "%s", n == RELAY_OUTBOX_BATCH ? PQgetvalue(res, n - 1, 0) : "0");
	principal.kind = "service";
	principal.id = c->service;
	for (int i = 0; i < n; i++) {
		const char *seq = PQgetvalue(res, i, 0), *tenant = PQgetvalue(res, i, 1);
		uint8_t *pt = NULL;
		size_t pt_len = 0;
		int v;

		if (db_begin(db, tenant, &err) < 0)
			break;
		v = o->ob->payload(r->d, res, i, &pt, &pt_len, &err);
		db_rollback(db);
		if (v < 0) {
			skipped = err != NULL ? err : "cannot make the payload";
			err = NULL;
			continue;
		}
		if (v == 0 && (relay_connect(r, &err) < 0 ||
			       auditlog_xadd_to(r->rc, r->keys, o->ob->stream, c->service, c->region,
						o->ob->method, tenant, &principal, pt, pt_len, &err) < 0)) {
			if (r->rc != NULL) {
				redisFree(r->rc);
				r->rc = NULL;
			}
			crypto_wipe(pt, pt_len);
			free(pt);
			break;
		}
		crypto_wipe(pt, pt_len);
		free(pt);
		if (v == 1)
			log_event(LOG_WARN, "outbox row dropped: it can never be sent",
				  LF_STR("table", o->ob->table), LF_STR("error", err ? err : ""));
		/* sent (or dropped): gone; a crash before this sends it again */
		if (relay_tenant_exec(db, tenant, o->delete_sql, seq, &err) < 0)
			break;
		done++;
		err = NULL;
	}
	PQclear(res);
	if (err == NULL && skipped == NULL) {
		o->failures = 0;
		return done;
	}
	if (err == NULL)
		err = skipped;
fail:
	if (o->failures++ % 60 == 0)
		log_event(LOG_WARN, "outbox relay: rows kept for later", LF_STR("table", o->ob->table),
			  LF_STR("error", err ? err : "unknown"));
	return -1;
}

/* Timer: drain the outbox in batches, yielding to the loop between batches. */
static void relay_tick(evutil_socket_t fd, short what, void *arg)
{
	struct auditlog_relay *r = arg;
	struct timeval tv = { RELAY_INTERVAL_S, 0 }, now = { 0, 0 };
	int n = relay_flush_once(r);

	for (size_t i = 0; i < r->n_outbox; i++)
		if (relay_flush_outbox(r, &r->outbox[i]) == RELAY_OUTBOX_BATCH)
			n = AUDITLOG_BATCH_MAX; /* more waiting: come back at once */
	if (r->ticks++ % RELAY_STATUS_EVERY == 0)
		relay_status(r);
	evtimer_add(r->timer, n == AUDITLOG_BATCH_MAX ? &now : &tv);
}

int auditlog_relay_start(struct daemon *d, const char *schema, const char **error_r)
{
	const struct daemon_config *c = daemon_config(d);
	struct auditlog_relay *r;
	struct timeval now = { 0, 0 };

	if (auditlog_relay != NULL || daemon_db(d) == NULL || !auditlog_schema_ok(schema)) {
		*error_r = "audit relay: needs a database, a valid schema, and runs once";
		return -1;
	}
	r = calloc(1, sizeof *r);
	if (r == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	r->d = d;
	snprintf(r->schema, sizeof r->schema, "%s", schema);
	snprintf(r->select_sql, sizeof r->select_sql,
		 "SELECT seq, id, at_ms, tenant_id, type, action, actor, target, ip, request_id, "
		 "detail_json FROM %s.outbox ORDER BY seq LIMIT %d",
		 schema, AUDITLOG_BATCH_MAX);
	snprintf(r->delete_sql, sizeof r->delete_sql,
		 "DELETE FROM %s.outbox WHERE seq = ANY ($1::bigint[])", schema);
	snprintf(r->count_sql, sizeof r->count_sql, "SELECT count(*) FROM %s.outbox", schema);
	snprintf(r->status_key, sizeof r->status_key, "hb:%s:audit-outbox", c->service);
	r->keys = envelope_keys_parse(c->route_keys.data, c->route_keys.len, error_r);
	if (r->keys == NULL)
		goto fail;
	if (envelope_keys_sealing(r->keys, c->service, "q:audit", NULL) == NULL) {
		*error_r = "audit relay: no route key to q:audit (see deploy/policy.yaml)";
		goto fail;
	}
	for (size_t i = 0; i < auditlog_n_outboxes; i++) {
		struct relay_outbox *o = &r->outbox[r->n_outbox];

		if (envelope_keys_sealing(r->keys, c->service, auditlog_outboxes[i]->stream, NULL) ==
		    NULL) {
			*error_r = "outbox relay: no route key to its stream (see deploy/policy.yaml)";
			goto fail;
		}
		o->ob = auditlog_outboxes[i];
		snprintf(o->select_sql, sizeof o->select_sql,
			 "SELECT seq, tenant, %s FROM %s.%s WHERE seq > $1::bigint ORDER BY seq LIMIT %d",
			 o->ob->columns, schema, o->ob->table, RELAY_OUTBOX_BATCH);
		snprintf(o->after, sizeof o->after, "0");
		snprintf(o->delete_sql, sizeof o->delete_sql, "DELETE FROM %s.%s WHERE seq = $1",
			 schema, o->ob->table);
		r->n_outbox++;
	}
	r->timer = evtimer_new(daemon_base(d), relay_tick, r);
	if (r->timer == NULL) {
		*error_r = "audit relay: cannot create its timer";
		goto fail;
	}
	evtimer_add(r->timer, &now); /* flush what waited while we were down */
	auditlog_relay = r;
	return 0;
fail:
	envelope_keys_free(r->keys);
	free(r);
	return -1;
}

void auditlog_relay_kick(struct daemon *d)
{
	struct timeval now = { 0, 0 };

	if (auditlog_relay != NULL && auditlog_relay->d == d)
		evtimer_add(auditlog_relay->timer, &now);
}

void auditlog_relay_stop(struct daemon *d)
{
	struct auditlog_relay *r = auditlog_relay;

	if (r == NULL || r->d != d)
		return;
	/* One last flush: what stays is sent at the next start. */
	if (daemon_db(d) != NULL)
		(void)relay_flush_once(r);
	event_free(r->timer);
	redisFree(r->rc);
	envelope_keys_free(r->keys);
	free(r);
	auditlog_relay = NULL;
}
