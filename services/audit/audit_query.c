/*
 * audit_query — reading the log back: audit.list (filters, cursor pagination),
 * audit.export (CSV or JSON), audit.activity (per agent) and audit.verify
 * (recompute the tenant's chain and check its signed checkpoints).
 *
 * Every query runs in a transaction whose app.tenant_id is the envelope's tenant,
 * so row-level security limits it to that tenant's chain (an operator's envelope
 * without a tenant reads the cell's own chain).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "log.h"

#define QUERY_LIMIT_DEFAULT 50
#define QUERY_LIMIT_MAX 100
#define EXPORT_MAX 100000
#define VERIFY_PAGE 5000
#define ACTIVITY_ITEMS_MAX 200
#define ACTIVITY_SESSION_CAP_S (24 * 3600)

/* Columns every event query selects, in this order. A version 2 event's detail
 * lives in audit.event_details (060_gdpr.sql), NULL once erased. */
#define EVENT_COLUMNS                                                                      \
	"replace(id::text, '-', ''), id::text, seq, "                                      \
	"(extract(epoch FROM at) * 1000)::bigint, "                                        \
	"to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), type, "     \
	"action, actor, coalesce(target, ''), coalesce(ip, ''), coalesce(request_id, ''), " \
	"coalesce(detail_enc, (SELECT x.detail_enc FROM audit.event_details x WHERE "      \
	"x.event_id = audit.events.id)), prev_hash, hash, hash_version, detail_digest"
enum { C_ID, C_UUID, C_SEQ, C_AT_MS, C_AT, C_TYPE, C_ACTION, C_ACTOR, C_TARGET, C_IP, C_REQ,
       C_DETAIL, C_PREV, C_HASH, C_HVER, C_DIGEST };

#define FILTER_WHERE                                                                       \
	" FROM audit.events WHERE tenant_id IS NOT DISTINCT FROM NULLIF($1, '')::uuid "    \
	"AND ($2 = '' OR actor = $2) AND ($3 = '' OR type = $3) AND ($4 = '' OR action = $4) " \
	"AND (NULLIF($5, '') IS NULL OR at >= NULLIF($5, '')::timestamptz) "              \
	"AND (NULLIF($6, '') IS NULL OR at < NULLIF($6, '')::timestamptz) "

static const char *nz(const char *s) { return s != NULL ? s : ""; }

/* An RFC 3339 date or date-time (what PostgreSQL's timestamptz parses), or "". */
static int query_time_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0)
		return 1;
	if (n < 10 || n > 35 || strspn(s, "0123456789-:.TZ+") != n)
		return 0;
	return s[4] == '-' && s[7] == '-' && (n == 10 || s[10] == 'T');
}

/* Filter strings: bounded, printable. */
static int query_filter_ok(const char *s)
{
	return strlen(s) <= 255 && envelope_string_ok(s);
}

/* The tenant of a query: the envelope's. */
static const char *query_tenant(const Ward__Envelope *env)
{
	return nz(env->tenant);
}

/* Decrypted detail of a result row ("" when none), malloc'd. */
static char *query_detail(struct daemon *d, const char *tenant, PGresult *res, int i)
{
	size_t n = 0;
	unsigned char *raw;
	char *json = NULL;
	const char *err = NULL;

	if (PQgetisnull(res, i, C_DETAIL))
		return strdup("");
	raw = PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, C_DETAIL), &n);
	if (raw == NULL || audit_detail_open(d, tenant, PQgetvalue(res, i, C_UUID), raw, n, &json,
					     &err) < 0) {
		PQfreemem(raw);
		return strdup("{\"error\":\"detail unavailable\"}");
	}
	PQfreemem(raw);
	return json;
}

/* Run the filtered event query; limit < 0 means none (export). */
static PGresult *query_events(struct daemon *d, const char *tenant, const char *actor,
			      const char *type, const char *action, const char *since,
			      const char *until, const char *before_seq, long limit,
			      const char **error_r)
{
	char lim[24];
	const char *params[8] = { tenant, actor, type, action, since, until, before_seq, lim };

	snprintf(lim, sizeof lim, "%ld", limit);
	return db_exec(daemon_db(d),
		       "SELECT " EVENT_COLUMNS FILTER_WHERE
		       "AND ($7 = '' OR seq < $7::bigint) ORDER BY seq DESC LIMIT $8::bigint",
		       8, params, error_r);
}

/* ================================= list ================================= */

queue_result_t audit_list(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			  size_t len, struct queue_reply *reply, const char **error_r)
{
	Ward__AuditListRequest *req = ward__audit_list_request__unpack(NULL, len, payload);
	Ward__AuditListReply out = WARD__AUDIT_LIST_REPLY__INIT;
	Ward__AuditEventView *views = NULL, **ptrs = NULL;
	char **details = NULL, cursor[32] = "", before[24] = "";
	const char *tenant = query_tenant(env);
	PGresult *res = NULL;
	queue_result_t r = QUEUE_RETRY;
	long limit;
	int n = 0;

	if (req == NULL) {
		*error_r = "audit.list: malformed request";
		return QUEUE_REJECT;
	}
	limit = req->limit > 0 ? req->limit : QUERY_LIMIT_DEFAULT;
	if (req->limit < 0 || limit > QUERY_LIMIT_MAX || !query_time_ok(req->since) ||
	    !query_time_ok(req->until) || !query_filter_ok(req->actor) ||
	    !query_filter_ok(req->type) || !query_filter_ok(req->action)) {
		r = audit_problem(reply, 422, "invalid query",
				  "limit: 1 to 100; since, until: RFC 3339 times");
		goto out;
	}
	if (req->cursor[0] != '\0') {
		/* Cursor "c1.<seq>": the page continues below that position. */
		size_t cl = strlen(req->cursor);

		if (cl < 4 || cl > 22 || strncmp(req->cursor, "c1.", 3) != 0 ||
		    strspn(req->cursor + 3, "0123456789") != cl - 3) {
			r = audit_problem(reply, 422, "invalid cursor", NULL);
			goto out;
		}
		snprintf(before, sizeof before, "%s", req->cursor + 3);
	}
	if (db_begin(daemon_db(d), tenant[0] ? tenant : NULL, error_r) < 0)
		goto out;
	res = query_events(d, tenant, req->actor, req->type, req->action, req->since, req->until,
			   before, limit, error_r);
	if (res == NULL) {
		db_rollback(daemon_db(d));
		goto out;
	}
	n = PQntuples(res);
	views = calloc((size_t)n + 1, sizeof *views);
	ptrs = calloc((size_t)n + 1, sizeof *ptrs);
	details = calloc((size_t)n + 1, sizeof *details);
	if (views == NULL || ptrs == NULL || details == NULL) {
		db_rollback(daemon_db(d));
		goto out;
	}
	for (int i = 0; i < n; i++) {
		Ward__AuditEventView *v = &views[i];

		ward__audit_event_view__init(v);
		v->id = PQgetvalue(res, i, C_ID);
		v->at = PQgetvalue(res, i, C_AT);
		v->type = PQgetvalue(res, i, C_TYPE);
		v->action = PQgetvalue(res, i, C_ACTION);
		v->actor = PQgetvalue(res, i, C_ACTOR);
		v->target = PQgetvalue(res, i, C_TARGET);
		v->ip = PQgetvalue(res, i, C_IP);
		v->request_id = PQgetvalue(res, i, C_REQ);
		v->seq = atoll(PQgetvalue(res, i, C_SEQ));
		details[i] = query_detail(d, tenant, res, i);
		v->detail = details[i] != NULL ? details[i] : "";
		ptrs[i] = v;
	}
	db_rollback(daemon_db(d)); /* read-only */
	out.n_events = (size_t)n;
	out.events = ptrs;
	if (n == limit && n > 0) {
		snprintf(cursor, sizeof cursor, "c1.%s", PQgetvalue(res, n - 1, C_SEQ));
		out.next_cursor = cursor;
	}
	reply->len = ward__audit_list_reply__get_packed_size(&out);
	reply->data = malloc(reply->len ? reply->len : 1);
	if (reply->data == NULL)
		goto out;
	ward__audit_list_reply__pack(&out, reply->data);
	r = QUEUE_DONE;
out:
	for (int i = 0; details != NULL && i < n; i++)
		free(details[i]);
	free(details);
	free(views);
	free(ptrs);
	if (res != NULL)
		PQclear(res);
	ward__audit_list_request__free_unpacked(req, NULL);
	return r;
}

/* ================================ export ================================ */

struct growbuf {
	char *p;
	size_t len, cap;
	int failed;
};

static void gb_put(struct growbuf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap * 2 + n + 4096;
		char *np = realloc(b->p, cap);

		if (np == NULL) {
			b->failed = 1;
			return;
		}
		b->p = np, b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

/* One CSV field (RFC 4180 quoting); a leading = + - @ is prefixed with ' so a
 * spreadsheet never runs a cell as a formula. */
static void gb_csv(struct growbuf *b, const char *s, int last)
{
	gb_put(b, "\"", 1);
	if (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@')
		gb_put(b, "'", 1);
	for (const char *p = s; *p; p++) {
		if (*p == '"')
			gb_put(b, "\"\"", 2);
		else
			gb_put(b, p, 1);
	}
	gb_put(b, last ? "\"\r\n" : "\",", last ? 3 : 2);
}

queue_result_t audit_export(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			    size_t len, struct queue_reply *reply, const char **error_r)
{
	Ward__AuditExportRequest *req = ward__audit_export_request__unpack(NULL, len, payload);
	const char *tenant = query_tenant(env);
	struct growbuf b = { 0 };
	PGresult *res = NULL;
	queue_result_t r = QUEUE_RETRY;
	json_t *arr = NULL;
	int json, n;

	if (req == NULL) {
		*error_r = "audit.export: malformed request";
		return QUEUE_REJECT;
	}
	json = strcmp(req->format, "json") == 0;
	if ((!json && req->format[0] != '\0' && strcmp(req->format, "csv") != 0) ||
	    !query_time_ok(req->since) || !query_time_ok(req->until) ||
	    !query_filter_ok(req->actor) || !query_filter_ok(req->type) ||
	    !query_filter_ok(req->action)) {
		r = audit_problem(reply, 422, "invalid query",
				  "format: csv or json; since, until: RFC 3339 times");
		goto out;
	}
	if (db_begin(daemon_db(d), tenant[0] ? tenant : NULL, error_r) < 0)
		goto out;
	res = query_events(d, tenant, req->actor, req->type, req->action, req->since, req->until,
			   "", EXPORT_MAX, error_r);
	if (res == NULL) {
		db_rollback(daemon_db(d));
		goto out;
	}
	n = PQntuples(res);
	if (json && (arr = json_array()) == NULL) {
		db_rollback(daemon_db(d));
		goto out;
	}
	if (!json)
		gb_put(&b, "id,at,type,action,actor,target,ip,request_id,detail\r\n", 53);
	for (int i = 0; i < n; i++) {
		char *detail = query_detail(d, tenant, res, i);
		const char *dt = detail != NULL ? detail : "";

		if (json) {
			json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s}",
					      "id", PQgetvalue(res, i, C_ID), "at",
					      PQgetvalue(res, i, C_AT), "type",
					      PQgetvalue(res, i, C_TYPE), "action",
					      PQgetvalue(res, i, C_ACTION), "actor",
					      PQgetvalue(res, i, C_ACTOR), "target",
					      PQgetvalue(res, i, C_TARGET), "ip",
					      PQgetvalue(res, i, C_IP), "request_id",
					      PQgetvalue(res, i, C_REQ), "seq",
					      (json_int_t)atoll(PQgetvalue(res, i, C_SEQ)), "detail", dt);

			if (o == NULL || json_array_append_new(arr, o) < 0)
				b.failed = 1;
		} else {
			gb_csv(&b, PQgetvalue(res, i, C_ID), 0);
			gb_csv(&b, PQgetvalue(res, i, C_AT), 0);
			gb_csv(&b, PQgetvalue(res, i, C_TYPE), 0);
			gb_csv(&b, PQgetvalue(res, i, C_ACTION), 0);
			gb_csv(&b, PQgetvalue(res, i, C_ACTOR), 0);
			gb_csv(&b, PQgetvalue(res, i, C_TARGET), 0);
			gb_csv(&b, PQgetvalue(res, i, C_IP), 0);
			gb_csv(&b, PQgetvalue(res, i, C_REQ), 0);
			gb_csv(&b, dt, 1);
		}
		free(detail);
	}
	db_rollback(daemon_db(d));
	if (json) {
		char *s = json_dumps(arr, JSON_COMPACT | JSON_ENSURE_ASCII);

		if (s == NULL)
			b.failed = 1;
		else
			gb_put(&b, s, strlen(s));
		free(s);
	}
	if (b.failed || b.len > ENVELOPE_MAX_PAYLOAD) {
		r = audit_problem(reply, 413, "export too large",
				  "narrow the export with since/until or filters");
		goto out;
	}
	{
		Ward__AuditExportReply out = WARD__AUDIT_EXPORT_REPLY__INIT;
		size_t packed;

		out.content.data = (uint8_t *)b.p;
		out.content.len = b.len;
		out.content_type = json ? "application/json" : "text/csv; charset=utf-8";
		out.filename = json ? "audit.json" : "audit.csv";
		packed = ward__audit_export_reply__get_packed_size(&out);
		reply->data = malloc(packed ? packed : 1);
		if (reply->data == NULL) {
			*error_r = "out of memory";
			goto out;
		}
		reply->len = ward__audit_export_reply__pack(&out, reply->data);
	}
	r = QUEUE_DONE;
out:
	free(b.p);
	json_decref(arr);
	if (res != NULL)
		PQclear(res);
	ward__audit_export_request__free_unpacked(req, NULL);
	return r;
}

/* ================================ verify ================================ */

struct checkpoint {
	int64_t seq, at_ms;
	uint8_t hash[AUDIT_HASH_LEN], sig[32];
	int sig_ok, matched;
};

/* bytea column → exactly n bytes into out; 0 or -1. */
static int query_bytes(PGresult *res, int i, int col, uint8_t *out, size_t n)
{
	size_t got = 0;
	unsigned char *raw;

	if (PQgetisnull(res, i, col))
		return -1;
	raw = PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, col), &got);
	if (raw == NULL || got != n) {
		PQfreemem(raw);
		return -1;
	}
	memcpy(out, raw, n);
	PQfreemem(raw);
	return 0;
}

/* Record the first failure (later ones are not reported). */
static void verify_bad(Ward__AuditVerifyReply *out, char *id_buf, size_t id_len, const char *id,
		       int64_t seq, const char *reason)
{
	if (!out->ok)
		return;
	out->ok = 0;
	snprintf(id_buf, id_len, "%s", id);
	out->first_bad_id = id_buf;
	out->first_bad_seq = seq;
	out->reason = (char *)reason;
}

queue_result_t audit_verify(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			    size_t len, struct queue_reply *reply, const char **error_r)
{
	db_t *db = daemon_db(d);
	const char *tenant = query_tenant(env);
	Ward__AuditVerifyReply out = WARD__AUDIT_VERIFY_REPLY__INIT;
	struct checkpoint *cps = NULL;
	size_t n_cps = 0;
	uint8_t prev[AUDIT_HASH_LEN];
	int have_prev = 0;
	int64_t expect = 1;
	char bad_id[40] = "", after[24] = "0";
	const char *params[2] = { tenant, after };
	PGresult *res = NULL;
	queue_result_t r = QUEUE_RETRY;

	out.ok = 1;
	out.first_bad_id = "";
	out.reason = "";
	if (db_begin(db, tenant[0] ? tenant : NULL, error_r) < 0)
		return QUEUE_RETRY;
	/* Where the chain starts: after the last retention purge, if any. */
	res = db_exec(db,
		      "SELECT upto_seq, upto_hash FROM audit.purges WHERE tenant_id IS NOT "
		      "DISTINCT FROM NULLIF($1, '')::uuid ORDER BY upto_seq DESC LIMIT 1",
		      1, params, error_r);
	if (res == NULL)
		goto fail;
	if (PQntuples(res) == 1) {
		out.purged_upto = atoll(PQgetvalue(res, 0, 0));
		expect = out.purged_upto + 1;
		if (query_bytes(res, 0, 1, prev, sizeof prev) == 0)
			have_prev = 1;
	}
	PQclear(res);
	snprintf(after, sizeof after, "%lld", (long long)out.purged_upto);
	res = db_exec(db,
		      "SELECT seq, (extract(epoch FROM at) * 1000)::bigint, hash, signature, key_id "
		      "FROM audit.checkpoints WHERE tenant_id IS NOT DISTINCT FROM "
		      "NULLIF($1, '')::uuid AND seq > $2::bigint ORDER BY seq",
		      2, params, error_r);
	if (res == NULL)
		goto fail;
	n_cps = (size_t)PQntuples(res);
	cps = calloc(n_cps + 1, sizeof *cps);
	if (cps == NULL)
		goto fail;
	for (size_t i = 0; i < n_cps; i++) {
		struct checkpoint *c = &cps[i];

		c->seq = atoll(PQgetvalue(res, (int)i, 0));
		c->at_ms = atoll(PQgetvalue(res, (int)i, 1));
		c->sig_ok = query_bytes(res, (int)i, 2, c->hash, sizeof c->hash) == 0 &&
			    query_bytes(res, (int)i, 3, c->sig, sizeof c->sig) == 0 &&
			    audit_chain_check(audit_signing_key(), tenant, c->seq, c->hash,
					      c->at_ms, c->sig);
	}
	PQclear(res);
	res = NULL;
	for (;;) {
		int n;

		snprintf(after, sizeof after, "%lld", (long long)(expect - 1 > 0 ? expect - 1 : 0));
		res = db_exec(db,
			      "SELECT " EVENT_COLUMNS ", EXISTS (SELECT 1 FROM audit.erasures r WHERE "
			      "r.tenant_id = audit.events.tenant_id AND r.subject IN (actor, target)) "
			      "FROM audit.events WHERE tenant_id IS NOT "
			      "DISTINCT FROM NULLIF($1, '')::uuid AND seq > $2::bigint ORDER BY seq "
			      "LIMIT " "5000",
			      2, params, error_r);
		if (res == NULL)
			goto fail;
		n = PQntuples(res);
		for (int i = 0; i < n; i++) {
			struct audit_row row = { 0 };
			uint8_t stored[AUDIT_HASH_LEN], rowprev[AUDIT_HASH_LEN], calc[AUDIT_HASH_LEN];
			uint8_t digest[AUDIT_HASH_LEN], ddig[AUDIT_HASH_LEN];
			unsigned char *detail = NULL;
			size_t dlen = 0;
			int has_prev = query_bytes(res, i, C_PREV, rowprev, sizeof rowprev) == 0;
			const char *id = PQgetvalue(res, i, C_ID);

			row.seq = atoll(PQgetvalue(res, i, C_SEQ));
			out.events++;
			if (row.seq != expect) {
				verify_bad(&out, bad_id, sizeof bad_id, id, row.seq,
					   row.seq > expect ? "events missing before this one"
							    : "event out of order");
			} else if (has_prev != have_prev ||
				   (have_prev && !crypto_ct_equal(rowprev, prev, sizeof prev))) {
				verify_bad(&out, bad_id, sizeof bad_id, id, row.seq,
					   "previous hash does not match the previous event");
			}
			if (!PQgetisnull(res, i, C_DETAIL))
				detail = PQunescapeBytea(
					(const unsigned char *)PQgetvalue(res, i, C_DETAIL), &dlen);
			row.tenant = tenant;
			row.id = id;
			row.at_ms = atoll(PQgetvalue(res, i, C_AT_MS));
			row.type = PQgetvalue(res, i, C_TYPE);
			row.action = PQgetvalue(res, i, C_ACTION);
			row.actor = PQgetvalue(res, i, C_ACTOR);
			row.target = PQgetvalue(res, i, C_TARGET);
			row.ip = PQgetvalue(res, i, C_IP);
			row.request_id = PQgetvalue(res, i, C_REQ);
			row.detail = detail, row.detail_len = dlen;
			row.prev = has_prev ? rowprev : NULL;
			row.version = atoi(PQgetvalue(res, i, C_HVER));
			if (row.version == 2 &&
			    query_bytes(res, i, C_DIGEST, digest, sizeof digest) == 0)
				row.digest = digest;
			/* Version 2: a detail still present must match the digest the
			 * chain covers; an erased one leaves the digest alone. */
			if (row.version == 2 && detail != NULL &&
			    (row.digest == NULL ||
			     audit_chain_detail_digest(detail, dlen, ddig) < 0 ||
			     !crypto_ct_equal(ddig, digest, sizeof digest)))
				verify_bad(&out, bad_id, sizeof bad_id, id, row.seq,
					   "event detail does not match its digest");
			/* A detail may only go by a GDPR erase of its actor or target
			 * (audit.erasures); any other missing detail was tampered with. */
			if (row.version == 2 && row.digest != NULL && detail == NULL &&
			    strcmp(PQgetvalue(res, i, C_DIGEST + 1), "t") != 0)
				verify_bad(&out, bad_id, sizeof bad_id, id, row.seq,
					   "event detail deleted without a recorded erasure");
			if (query_bytes(res, i, C_HASH, stored, sizeof stored) < 0 ||
			    audit_chain_hash(&row, calc) < 0 ||
			    !crypto_ct_equal(calc, stored, sizeof calc))
				verify_bad(&out, bad_id, sizeof bad_id, id, row.seq,
					   "event content does not match its hash");
			PQfreemem(detail);
			for (size_t k = 0; k < n_cps; k++)
				if (cps[k].seq == row.seq) {
					cps[k].matched = 1;
					if (!cps[k].sig_ok)
						verify_bad(&out, bad_id, sizeof bad_id, id, row.seq,
							   "checkpoint signature invalid");
					else if (!crypto_ct_equal(cps[k].hash, stored,
								  sizeof stored))
						verify_bad(&out, bad_id, sizeof bad_id, id, row.seq,
							   "event differs from the signed "
							   "checkpoint");
				}
			/* Go on from what is stored, so one bad event is reported once. */
			memcpy(prev, stored, sizeof prev);
			have_prev = 1;
			expect = row.seq + 1;
		}
		PQclear(res);
		res = NULL;
		if (n < VERIFY_PAGE)
			break;
	}
	for (size_t k = 0; k < n_cps; k++)
		if (!cps[k].matched)
			verify_bad(&out, bad_id, sizeof bad_id, "", cps[k].seq,
				   cps[k].sig_ok ? "events signed by a checkpoint are missing"
						 : "checkpoint signature invalid");
	out.checkpoints = (int64_t)n_cps;
	db_rollback(db);
	reply->len = ward__audit_verify_reply__get_packed_size(&out);
	reply->data = malloc(reply->len ? reply->len : 1);
	if (reply->data == NULL)
		goto out;
	ward__audit_verify_reply__pack(&out, reply->data);
	if (!out.ok)
		log_event(LOG_WARN, "audit chain does not verify", LF_STR("tenant", tenant),
			  LF_INT("seq", out.first_bad_seq), LF_STR("reason", out.reason));
	r = QUEUE_DONE;
	goto out;
fail:
	db_rollback(db);
out:
	if (res != NULL)
		PQclear(res);
	free(cps);
	return r;
}

/* =============================== activity =============================== */

struct agent {
	char *actor;
	Ward__AuditAgentActivity a;
	Ward__AuditActivityItem *items;
	Ward__AuditActivityItem **ptrs;
	int64_t login_at;
	size_t seen;
};

queue_result_t audit_activity(struct daemon *d, const Ward__Envelope *env,
			      const uint8_t *payload, size_t len, struct queue_reply *reply,
			      const char **error_r)
{
	Ward__AuditActivityRequest *req = ward__audit_activity_request__unpack(NULL, len, payload);
	Ward__AuditActivityReply out = WARD__AUDIT_ACTIVITY_REPLY__INIT;
	const char *tenant = query_tenant(env);
	char agent[300] = "";
	struct agent *agents = NULL;
	Ward__AuditAgentActivity **aptrs = NULL;
	size_t n_agents = 0;
	PGresult *res = NULL;
	queue_result_t r = QUEUE_RETRY;
	int64_t until_ms;
	int n;

	if (req == NULL) {
		*error_r = "audit.activity: malformed request";
		return QUEUE_REJECT;
	}
	if (!query_time_ok(req->since) || !query_time_ok(req->until) ||
	    !query_filter_ok(req->agent)) {
		r = audit_problem(reply, 422, "invalid query", "since, until: RFC 3339 times");
		goto out;
	}
	if (req->agent[0] != '\0')
		snprintf(agent, sizeof agent, "%s%s",
			 strncmp(req->agent, "user:", 5) == 0 ? "" : "user:", req->agent);
	if (db_begin(daemon_db(d), tenant[0] ? tenant : NULL, error_r) < 0)
		goto out;
	{
		const char *params[4] = { tenant, agent, req->since, req->until };

		/* Logins, logouts (session events) and replies/notes (ticket events). */
		res = db_exec(daemon_db(d),
			      "SELECT actor, action, coalesce(target, ''), "
			      "(extract(epoch FROM at) * 1000)::bigint, "
			      "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
			      "(extract(epoch FROM coalesce(NULLIF($4, '')::timestamptz, now())) * "
			      "1000)::bigint FROM audit.events WHERE tenant_id IS NOT DISTINCT FROM "
			      "NULLIF($1, '')::uuid AND actor LIKE 'user:%' AND ($2 = '' OR actor = $2) "
			      "AND at >= coalesce(NULLIF($3, '')::timestamptz, now() - interval '30 "
			      "days') AND (NULLIF($4, '') IS NULL OR at < NULLIF($4, '')::timestamptz) "
			      "AND (action IN ('login', 'login.success', 'logout') OR (type = "
			      "'ticket' AND action IN ('reply', 'note', 'message.create'))) "
			      "ORDER BY actor, seq LIMIT 100000",
			      4, params, error_r);
	}
	db_rollback(daemon_db(d));
	if (res == NULL)
		goto out;
	n = PQntuples(res);
	agents = calloc((size_t)n + 1, sizeof *agents);
	aptrs = calloc((size_t)n + 1, sizeof *aptrs);
	if (agents == NULL || aptrs == NULL)
		goto out;
	until_ms = n > 0 ? atoll(PQgetvalue(res, 0, 5)) : 0;
	for (int i = 0; i < n; i++) {
		const char *actor = PQgetvalue(res, i, 0), *action = PQgetvalue(res, i, 1);
		int64_t at = atoll(PQgetvalue(res, i, 3));
		struct agent *a = n_agents > 0 ? &agents[n_agents - 1] : NULL;
		const char *kind;

		if (a == NULL || strcmp(a->actor, actor) != 0) {
			a = &agents[n_agents++];
			a->actor = (char *)actor;
			ward__audit_agent_activity__init(&a->a);
			a->a.actor = a->actor;
			a->items = calloc(ACTIVITY_ITEMS_MAX, sizeof *a->items);
			a->ptrs = calloc(ACTIVITY_ITEMS_MAX, sizeof *a->ptrs);
			if (a->items == NULL || a->ptrs == NULL)
				goto out;
		}
		if (strncmp(action, "login", 5) == 0) {
			kind = "login";
			a->a.logins++;
			if (a->login_at == 0)
				a->login_at = at;
		} else if (strcmp(action, "logout") == 0) {
			kind = "logout";
			a->a.logouts++;
			if (a->login_at != 0) {
				a->a.seconds_logged_in += (at - a->login_at) / 1000;
				a->login_at = 0;
			}
		} else {
			kind = strcmp(action, "note") == 0 ? "note" : "reply";
			a->a.replies++;
		}
		/* Newest ACTIVITY_ITEMS_MAX items, kept as a ring, ordered at the end. */
		{
			Ward__AuditActivityItem *it =
				&a->items[a->a.n_items < ACTIVITY_ITEMS_MAX ? a->a.n_items
									     : a->seen % ACTIVITY_ITEMS_MAX];

			ward__audit_activity_item__init(it);
			it->at = PQgetvalue(res, i, 4);
			it->action = (char *)kind;
			it->target = PQgetvalue(res, i, 2);
			if (a->a.n_items < ACTIVITY_ITEMS_MAX)
				a->a.n_items++;
			a->seen++;
		}
	}
	for (size_t k = 0; k < n_agents; k++) {
		struct agent *a = &agents[k];
		int64_t open = a->login_at != 0 ? (until_ms - a->login_at) / 1000 : 0;

		/* A session never logged out counts until now, at most a day. */
		if (open > 0)
			a->a.seconds_logged_in += open < ACTIVITY_SESSION_CAP_S ? open
										: ACTIVITY_SESSION_CAP_S;
		/* Items newest first (by time; the ring is not in order once wrapped). */
		for (size_t j = 0; j < a->a.n_items; j++)
			a->ptrs[j] = &a->items[j];
		for (size_t x = 1; x < a->a.n_items; x++)
			for (size_t y = x; y > 0 && strcmp(a->ptrs[y - 1]->at, a->ptrs[y]->at) < 0;
			     y--) {
				Ward__AuditActivityItem *t = a->ptrs[y];

				a->ptrs[y] = a->ptrs[y - 1];
				a->ptrs[y - 1] = t;
			}
		a->a.items = a->ptrs;
		aptrs[k] = &a->a;
	}
	out.n_agents = n_agents;
	out.agents = aptrs;
	reply->len = ward__audit_activity_reply__get_packed_size(&out);
	reply->data = malloc(reply->len ? reply->len : 1);
	if (reply->data == NULL)
		goto out;
	ward__audit_activity_reply__pack(&out, reply->data);
	r = QUEUE_DONE;
out:
	for (size_t k = 0; agents != NULL && k < n_agents; k++) {
		free(agents[k].items);
		free(agents[k].ptrs);
	}
	free(agents);
	free(aptrs);
	if (res != NULL)
		PQclear(res);
	ward__audit_activity_request__free_unpacked(req, NULL);
	return r;
}
