/*
 * ticket_messages — message.create and message.list (public replies and
 * internal notes), attachment.create/list/get, department.create/list.
 *
 * A ticket's messages and attachments follow the ticket's visibility (see
 * ticket_tickets.c): not visible is 404. Customers never see internal notes,
 * nor attachments of internal notes, and cannot write either. A customer's
 * public reply reopens a pending or resolved ticket; a closed ticket takes no
 * public reply (409). Attachment contents and names are sealed like bodies; the
 * content type is sniffed from the bytes, never taken from the client.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "auditlog.h"
#include "ticket.h"

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* Free a string of a message we filled (wiped: it may be decrypted data). */
static void msg_str_free(char **s)
{
	if (*s != NULL && *s != protobuf_c_empty_string) {
		crypto_wipe(*s, strlen(*s));
		free(*s);
	}
	*s = (char *)protobuf_c_empty_string;
}

static void msg_clear(Ward__Message *m)
{
	msg_str_free(&m->id);
	msg_str_free(&m->ticket_id);
	msg_str_free(&m->author_id);
	msg_str_free(&m->author_role);
	msg_str_free(&m->body);
	msg_str_free(&m->created_at);
}

static void att_clear(Ward__Attachment *a)
{
	msg_str_free(&a->id);
	msg_str_free(&a->ticket_id);
	msg_str_free(&a->message_id);
	msg_str_free(&a->filename);
	msg_str_free(&a->content_type);
	msg_str_free(&a->created_at);
}

/* strdup into *dst, counting failures. */
static void msg_set(char **dst, const char *src, int *bad)
{
	char *s = strdup(src);

	if (s == NULL)
		(*bad)++;
	else
		*dst = s;
}

/* Common start: a settable tenant, a usable customer id, a ticket id. */
static int msg_prologue(const Ward__Envelope *env, const struct ticket_who *who,
			const char *ticket_id, struct queue_reply *reply)
{
	if (!ticket_uuid_valid(env->tenant)) {
		ticket_problem(reply, 400, "Bad request", "no tenant", NULL);
		return -1;
	}
	if (who->customer && !ticket_uuid_valid(who->id)) {
		ticket_problem(reply, 403, "Forbidden", NULL, NULL);
		return -1;
	}
	if (ticket_id != NULL && !ticket_uuid_valid(ticket_id)) {
		ticket_problem(reply, 404, "Not found", NULL, NULL);
		return -1;
	}
	return 0;
}

/* ============================== messages ================================ */

#define MSG_COLUMNS                                                                                \
	"m.id, m.seq, m.ticket_id, m.author_id, m.author_role, m.internal, m.body_enc, " TS(       \
	    "m.created_at")

/* A Message from row r of an MSG_COLUMNS result. */
static int msg_fill(struct daemon *d, const char *tenant, PGresult *res, int r, Ward__Message *m,
		    const char **error_r)
{
	uint8_t *pt;
	size_t n;
	int bad = 0;

	ward__message__init(m);
	msg_set(&m->id, PQgetvalue(res, r, 0), &bad);
	msg_set(&m->ticket_id, PQgetvalue(res, r, 2), &bad);
	msg_set(&m->author_id, PQgetvalue(res, r, 3), &bad);
	msg_set(&m->author_role, PQgetvalue(res, r, 4), &bad);
	msg_set(&m->created_at, PQgetvalue(res, r, 7), &bad);
	m->internal = strcmp(PQgetvalue(res, r, 5), "t") == 0;
	if (bad) {
		*error_r = "out of memory";
		return -1;
	}
	if (ticket_open(d, tenant, "ticket.messages", "body_enc", PQgetvalue(res, r, 0),
			PQgetvalue(res, r, 6), &pt, &n, error_r) < 0)
		return -1;
	m->body = (char *)pt;
	return 0;
}

/* Load message id of ticket (as who may see it): 1, 0 or -1. */
static int msg_load(struct daemon *d, const char *tenant, const struct ticket_who *who,
		    const char *id, Ward__Message *m, const char **error_r)
{
	const char *p[2] = {id, who->customer ? "f" : "t"};
	PGresult *res;
	int rc = 0;

	res = db_exec(daemon_db(d),
		      "SELECT " MSG_COLUMNS " FROM ticket.messages m WHERE m.id = $1 "
		      "AND ($2::bool OR NOT m.internal)",
		      2, p, error_r);
	if (res == NULL)
		return -1;
	if (PQntuples(res) == 1) {
		rc = msg_fill(d, tenant, res, 0, m, error_r) < 0 ? -1 : 1;
		if (rc < 0)
			msg_clear(m);
	}
	PQclear(res);
	return rc;
}

queue_result_t ticket_message_create(struct daemon *d, const Ward__Envelope *env,
				     const uint8_t *payload, size_t len, struct queue_reply *reply,
				     const char **error_r)
{
	Ward__MessageCreateRequest *req;
	Ward__Message m = WARD__MESSAGE__INIT;
	struct ticket_who who;
	struct ticket_errors e = {0};
	char hash[65], mid[TICKET_UUID_LEN + 1], result_id[TICKET_UUID_LEN + 1], target[64];
	char detail[160];
	const char *err = NULL;
	enum ticket_status from, to;
	uint8_t *sealed = NULL;
	size_t sealed_len = 0;
	bool conflict;
	queue_result_t qr;
	int r;

	ticket_who_of(env, &who);
	req = ward__message_create_request__unpack(NULL, len, payload);
	if (req == NULL)
		return ticket_problem(reply, 400, "Malformed request", NULL, NULL);
	if (msg_prologue(env, &who, req->id, reply) < 0) {
		qr = QUEUE_DONE;
		goto out;
	}
	if (req->body[0] == '\0')
		ticket_errors_add(&e, "body", "is required");
	else if (strlen(req->body) > (size_t)ticket_cfg.body_max_bytes)
		ticket_errors_add(&e, "body", "is too long");
	else if (!ticket_text_ok(req->body, strlen(req->body), false, NULL))
		ticket_errors_add(&e, "body", "must be UTF-8 text");
	if (req->internal && who.customer)
		ticket_errors_add(&e, "internal", "customers cannot write internal notes");
	if (e.n > 0) {
		qr = ticket_problem(reply, 422, "Invalid message", NULL, &e);
		goto out;
	}
	if (db_begin(daemon_db(d), env->tenant, &err) < 0) {
		qr = ticket_fail(d, reply, "begin", err, error_r);
		goto out;
	}
	r = ticket_request_seen(d, env, &who, payload, len, result_id, &conflict, hash, &err);
	if (r < 0) {
		qr = ticket_fail(d, reply, "idempotency", err, error_r);
		goto out;
	}
	if (r == 1) {
		if (conflict) {
			db_rollback(daemon_db(d));
			ticket_errors_add(&e, "Idempotency-Key", "was used with another request");
			qr = ticket_problem(reply, 422, "Idempotency-Key reused", NULL, &e);
			goto out;
		}
		if (msg_load(d, env->tenant, &who, result_id, &m, &err) != 1 ||
		    db_commit(daemon_db(d), &err) < 0) {
			qr = ticket_fail(d, reply, "replay", err != NULL ? err : "gone", error_r);
			goto out;
		}
		qr = ticket_reply(reply, &m.base, error_r);
		goto out;
	}
	/* Lock the ticket: its messages are numbered and its status moves in order. */
	r = ticket_visible(d, env->tenant, &who, req->id, true, &from, &err);
	if (r < 0) {
		qr = ticket_fail(d, reply, "ticket", err, error_r);
		goto out;
	}
	if (r == 0) {
		db_rollback(daemon_db(d));
		qr = ticket_problem(reply, 404, "Not found", NULL, NULL);
		goto out;
	}
	to = from;
	if (!req->internal && ticket_status_after_reply(from, who.customer, &to) < 0) {
		db_rollback(daemon_db(d));
		qr = ticket_problem(reply, 409, "Ticket closed",
				    "a closed ticket takes no reply; open a new ticket", NULL);
		goto out;
	}
	if (ticket_uuid_random(mid) < 0 ||
	    ticket_seal(d, env->tenant, "ticket.messages", "body_enc", mid, req->body,
			strlen(req->body), &sealed, &sealed_len, &err) < 0) {
		qr = ticket_fail(d, reply, "encrypt", err != NULL ? err : "no random bytes", error_r);
		goto out;
	}
	{
		const char *p[7] = {mid,
				    env->tenant,
				    req->id,
				    who.id[0] ? who.id : who.actor,
				    who.role,
				    req->internal ? "t" : "f",
				    (const char *)sealed};
		int lens[7] = {0, 0, 0, 0, 0, 0, (int)sealed_len};
		int fmts[7] = {0, 0, 0, 0, 0, 0, 1};

		/* Deferred, as the UPDATE, the audit event and the request record: all
		 * travel with the COMMIT, in one round trip. */
		if (db_defer(daemon_db(d),
			     "INSERT INTO ticket.messages (id, tenant_id, ticket_id, author_id, "
			     "author_role, internal, body_enc) VALUES ($1, $2, $3, $4, $5, $6, $7)",
			     7, p, lens, fmts, &err) < 0) {
			qr = ticket_fail(d, reply, "insert message", err, error_r);
			goto out;
		}
	}
	{
		const char *p[2] = {req->id, ticket_status_name(to)};

		if (db_defer(daemon_db(d),
			     "UPDATE ticket.tickets SET status = $2, updated_at = now() WHERE id = $1",
			     2, p, NULL, NULL, &err) < 0) {
			qr = ticket_fail(d, reply, "update ticket", err, error_r);
			goto out;
		}
	}
	snprintf(target, sizeof target, "ticket:%s", req->id);
	snprintf(detail, sizeof detail, "{\"message\":\"%s\",\"role\":\"%s\"}", mid, who.role);
	if (ticket_audit(d, env, &who, req->internal ? "note" : "reply", target, detail, &err) <
	    0) {
		qr = ticket_fail(d, reply, "audit", err, error_r);
		goto out;
	}
	if (to != from) {
		snprintf(detail, sizeof detail,
			 "{\"from\":\"%s\",\"to\":\"%s\",\"reason\":\"customer reply\"}",
			 ticket_status_name(from), ticket_status_name(to));
		if (ticket_audit(d, env, &who, "status", target, detail, &err) < 0) {
			qr = ticket_fail(d, reply, "audit", err, error_r);
			goto out;
		}
	}
	/* A public reply by staff is mailed to the requester, in this transaction. */
	if (!req->internal && !who.customer &&
	    (strcmp(who.role, "agent") == 0 || strcmp(who.role, "admin") == 0 ||
	     strcmp(who.role, "api") == 0) &&
	    ticket_mailout_reply(d, env, req->id, mid, req->body, &err) < 0) {
		qr = ticket_fail(d, reply, "mail", err, error_r);
		goto out;
	}
	if (ticket_request_record(d, env, &who, hash, mid, &err) < 0 ||
	    msg_load(d, env->tenant, &who, mid, &m, &err) != 1) {
		qr = ticket_fail(d, reply, "record", err != NULL ? err : "gone", error_r);
		goto out;
	}
	if (db_commit(daemon_db(d), &err) < 0) {
		qr = ticket_fail(d, reply, "commit", err, error_r);
		goto out;
	}
	ticket_after_commit();
	if (!req->internal && !who.customer)
		auditlog_relay_kick(d); /* the mail outbox: now, not at the next tick */
	qr = ticket_reply(reply, &m.base, error_r);
out:
	msg_clear(&m);
	free(sealed);
	ward__message_create_request__free_unpacked(req, NULL);
	return qr;
}

queue_result_t ticket_message_list(struct daemon *d, const Ward__Envelope *env,
				   const uint8_t *payload, size_t len, struct queue_reply *reply,
				   const char **error_r)
{
	Ward__MessageListRequest *req;
	Ward__MessageListReply out = WARD__MESSAGE_LIST_REPLY__INIT;
	Ward__Message *items = NULL, **ptrs = NULL;
	struct ticket_who who;
	struct ticket_errors e = {0};
	char limit_s[16], cursor_s[24], next[TICKET_CURSOR_LEN + 1] = "";
	const char *err = NULL;
	long long cursor = 0;
	queue_result_t qr;
	PGresult *res = NULL;
	int limit, rows = 0, i, filled = 0, r;

	ticket_who_of(env, &who);
	req = ward__message_list_request__unpack(NULL, len, payload);
	if (req == NULL)
		return ticket_problem(reply, 400, "Malformed request", NULL, NULL);
	if (msg_prologue(env, &who, req->id, reply) < 0) {
		qr = QUEUE_DONE;
		goto out;
	}
	limit = req->limit == 0 ? TICKET_LIST_DEFAULT : req->limit;
	if (limit < 1 || limit > TICKET_LIST_MAX)
		ticket_errors_add(&e, "limit", "must be 1 to 100");
	if (req->cursor[0] != '\0' && ticket_cursor_decode(req->cursor, 'm', &cursor) < 0)
		ticket_errors_add(&e, "cursor", "is not a cursor of this list");
	if (e.n > 0) {
		qr = ticket_problem(reply, 422, "Invalid list request", NULL, &e);
		goto out;
	}
	snprintf(limit_s, sizeof limit_s, "%d", limit + 1);
	snprintf(cursor_s, sizeof cursor_s, "%lld", cursor);
	if (db_begin(daemon_db(d), env->tenant, &err) < 0) {
		qr = ticket_fail(d, reply, "begin", err, error_r);
		goto out;
	}
	r = ticket_visible(d, env->tenant, &who, req->id, false, NULL, &err);
	if (r <= 0) {
		if (r < 0) {
			qr = ticket_fail(d, reply, "ticket", err, error_r);
		} else {
			db_rollback(daemon_db(d));
			qr = ticket_problem(reply, 404, "Not found", NULL, NULL);
		}
		goto out;
	}
	{
		const char *p[4] = {req->id, who.customer ? "f" : "t", cursor > 0 ? cursor_s : NULL,
				    limit_s};

		res =
		    db_exec(daemon_db(d),
			    "SELECT " MSG_COLUMNS " FROM ticket.messages m WHERE m.ticket_id = $1 "
			    "AND ($2::bool OR NOT m.internal) "
			    "AND ($3::bigint IS NULL OR m.seq > $3::bigint) "
			    "ORDER BY m.seq LIMIT $4::int",
			    4, p, &err);
	}
	if (res == NULL) {
		qr = ticket_fail(d, reply, "list", err, error_r);
		goto out;
	}
	rows = PQntuples(res);
	if (rows > limit) {
		rows = limit;
		if (ticket_cursor_encode('m', strtoll(PQgetvalue(res, rows - 1, 1), NULL, 10),
					 next) < 0)
			next[0] = '\0';
	}
	items = calloc((size_t)rows + 1, sizeof *items);
	ptrs = calloc((size_t)rows + 1, sizeof *ptrs);
	if (items == NULL || ptrs == NULL) {
		qr = ticket_fail(d, reply, "list", "out of memory", error_r);
		goto out;
	}
	for (i = 0; i < rows; i++, filled++) {
		if (msg_fill(d, env->tenant, res, i, &items[i], &err) < 0) {
			msg_clear(&items[i]);
			qr = ticket_fail(d, reply, "list decrypt", err, error_r);
			goto out;
		}
		ptrs[i] = &items[i];
	}
	if (db_commit(daemon_db(d), &err) < 0) {
		qr = ticket_fail(d, reply, "commit", err, error_r);
		goto out;
	}
	out.n_items = (size_t)rows;
	out.items = ptrs;
	out.next_cursor = next;
	qr = ticket_reply(reply, &out.base, error_r);
out:
	for (i = 0; i < filled; i++)
		msg_clear(&items[i]);
	free(items);
	free(ptrs);
	PQclear(res);
	ward__message_list_request__free_unpacked(req, NULL);
	return qr;
}

/* ============================== attachments ============================= */

#define ATT_COLUMNS                                                                                \
	"a.id, a.ticket_id, coalesce(a.message_id::text, ''), a.filename_enc, "                    \
	"a.content_type, a.size, " TS("a.created_at")

/* Attachments of internal notes are internal: $2 false hides them. */
#define ATT_VISIBLE                                                                                \
	"($2::bool OR a.message_id IS NULL OR NOT EXISTS (SELECT 1 FROM ticket.messages m "        \
	"WHERE m.id = a.message_id AND m.internal))"

/* An Attachment (metadata) from row r of an ATT_COLUMNS result. */
static int att_fill(struct daemon *d, const char *tenant, PGresult *res, int r, Ward__Attachment *a,
		    const char **error_r)
{
	uint8_t *pt;
	size_t n;
	int bad = 0;

	ward__attachment__init(a);
	msg_set(&a->id, PQgetvalue(res, r, 0), &bad);
	msg_set(&a->ticket_id, PQgetvalue(res, r, 1), &bad);
	msg_set(&a->message_id, PQgetvalue(res, r, 2), &bad);
	msg_set(&a->content_type, PQgetvalue(res, r, 4), &bad);
	msg_set(&a->created_at, PQgetvalue(res, r, 6), &bad);
	a->size = strtoll(PQgetvalue(res, r, 5), NULL, 10);
	if (bad) {
		*error_r = "out of memory";
		return -1;
	}
	if (ticket_open(d, tenant, "ticket.attachments", "filename_enc", PQgetvalue(res, r, 0),
			PQgetvalue(res, r, 3), &pt, &n, error_r) < 0)
		return -1;
	a->filename = (char *)pt;
	return 0;
}

/* Load attachment aid of ticket tid as who may see it: 1, 0 or -1. */
static int att_load(struct daemon *d, const char *tenant, const struct ticket_who *who,
		    const char *tid, const char *aid, Ward__Attachment *a, const char **error_r)
{
	const char *p[3] = {aid, who->customer ? "f" : "t", tid};
	PGresult *res;
	int rc = 0;

	res = db_exec(daemon_db(d),
		      "SELECT " ATT_COLUMNS " FROM ticket.attachments a WHERE a.id = $1 "
		      "AND a.ticket_id = $3 AND " ATT_VISIBLE,
		      3, p, error_r);
	if (res == NULL)
		return -1;
	if (PQntuples(res) == 1) {
		rc = att_fill(d, tenant, res, 0, a, error_r) < 0 ? -1 : 1;
		if (rc < 0)
			att_clear(a);
	}
	PQclear(res);
	return rc;
}

queue_result_t ticket_attachment_create(struct daemon *d, const Ward__Envelope *env,
					const uint8_t *payload, size_t len,
					struct queue_reply *reply, const char **error_r)
{
	Ward__AttachmentCreateRequest *req;
	Ward__Attachment a = WARD__ATTACHMENT__INIT;
	struct ticket_who who;
	struct ticket_errors e = {0};
	char hash[65], aid[TICKET_UUID_LEN + 1], result_id[TICKET_UUID_LEN + 1], target[64];
	char name[TICKET_FILENAME_MAX + 1], detail[200], size_s[24];
	const char *err = NULL, *type;
	uint8_t *sname = NULL, *scontent = NULL;
	size_t sname_len = 0, scontent_len = 0;
	bool conflict;
	queue_result_t qr;
	PGresult *res;
	int r;

	ticket_who_of(env, &who);
	req = ward__attachment_create_request__unpack(NULL, len, payload);
	if (req == NULL)
		return ticket_problem(reply, 400, "Malformed request", NULL, NULL);
	if (msg_prologue(env, &who, req->id, reply) < 0) {
		qr = QUEUE_DONE;
		goto out;
	}
	if (req->content.len == 0)
		ticket_errors_add(&e, "content", "is required");
	else if (req->content.len > (size_t)ticket_cfg.attachment_max_bytes)
		ticket_errors_add(&e, "content", "is too large");
	if (!ticket_utf8_valid(req->filename, strlen(req->filename), NULL))
		ticket_errors_add(&e, "filename", "must be UTF-8");
	if (req->message_id[0] != '\0' && !ticket_uuid_valid(req->message_id))
		ticket_errors_add(&e, "message_id", "is not a message id");
	if (e.n > 0) {
		qr = ticket_problem(reply, 422, "Invalid attachment", NULL, &e);
		goto out;
	}
	ticket_filename_clean(req->filename, name);
	type = ticket_sniff(req->content.data, req->content.len);
	if (db_begin(daemon_db(d), env->tenant, &err) < 0) {
		qr = ticket_fail(d, reply, "begin", err, error_r);
		goto out;
	}
	r = ticket_request_seen(d, env, &who, payload, len, result_id, &conflict, hash, &err);
	if (r < 0) {
		qr = ticket_fail(d, reply, "idempotency", err, error_r);
		goto out;
	}
	if (r == 1) {
		if (conflict) {
			db_rollback(daemon_db(d));
			ticket_errors_add(&e, "Idempotency-Key", "was used with another request");
			qr = ticket_problem(reply, 422, "Idempotency-Key reused", NULL, &e);
			goto out;
		}
		if (att_load(d, env->tenant, &who, req->id, result_id, &a, &err) != 1 ||
		    db_commit(daemon_db(d), &err) < 0) {
			qr = ticket_fail(d, reply, "replay", err != NULL ? err : "gone", error_r);
			goto out;
		}
		qr = ticket_reply(reply, &a.base, error_r);
		goto out;
	}
	r = ticket_visible(d, env->tenant, &who, req->id, true, NULL, &err);
	if (r < 0) {
		qr = ticket_fail(d, reply, "ticket", err, error_r);
		goto out;
	}
	if (r == 0) {
		db_rollback(daemon_db(d));
		qr = ticket_problem(reply, 404, "Not found", NULL, NULL);
		goto out;
	}
	if (req->message_id[0] != '\0') {
		const char *p[3] = {req->message_id, req->id, who.customer ? "f" : "t"};

		res = db_exec(daemon_db(d),
			      "SELECT 1 FROM ticket.messages WHERE id = $1 AND ticket_id = $2 "
			      "AND ($3::bool OR NOT internal)",
			      3, p, &err);
		if (res == NULL) {
			qr = ticket_fail(d, reply, "message", err, error_r);
			goto out;
		}
		r = PQntuples(res);
		PQclear(res);
		if (r != 1) {
			db_rollback(daemon_db(d));
			ticket_errors_add(&e, "message_id", "no such message on this ticket");
			qr = ticket_problem(reply, 422, "Invalid attachment", NULL, &e);
			goto out;
		}
	}
	if (ticket_uuid_random(aid) < 0 ||
	    ticket_seal(d, env->tenant, "ticket.attachments", "filename_enc", aid, name,
			strlen(name), &sname, &sname_len, &err) < 0 ||
	    ticket_seal(d, env->tenant, "ticket.attachments", "content_enc", aid, req->content.data,
			req->content.len, &scontent, &scontent_len, &err) < 0) {
		qr = ticket_fail(d, reply, "encrypt", err != NULL ? err : "no random bytes", error_r);
		goto out;
	}
	snprintf(size_s, sizeof size_s, "%zu", req->content.len);
	{
		const char *p[9] = {aid,
				    env->tenant,
				    req->id,
				    req->message_id[0] ? req->message_id : NULL,
				    (const char *)sname,
				    type,
				    size_s,
				    (const char *)scontent,
				    who.actor};
		int lens[9] = {0, 0, 0, 0, (int)sname_len, 0, 0, (int)scontent_len, 0};
		int fmts[9] = {0, 0, 0, 0, 1, 0, 0, 1, 0};

		res = db_exec_bin(daemon_db(d),
				  "INSERT INTO ticket.attachments (id, tenant_id, ticket_id, "
				  "message_id, filename_enc, content_type, size, content_enc, "
				  "created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
				  9, p, lens, fmts, &err);
		if (res == NULL) {
			qr = ticket_fail(d, reply, "insert attachment", err, error_r);
			goto out;
		}
		PQclear(res);
	}
	{
		const char *p[1] = {req->id};

		res = db_exec(daemon_db(d),
			      "UPDATE ticket.tickets SET updated_at = now() WHERE id = $1", 1, p,
			      &err);
		if (res == NULL) {
			qr = ticket_fail(d, reply, "update ticket", err, error_r);
			goto out;
		}
		PQclear(res);
	}
	snprintf(target, sizeof target, "ticket:%s", req->id);
	snprintf(detail, sizeof detail,
		 "{\"attachment\":\"%s\",\"content_type\":\"%s\",\"size\":%zu}", aid, type,
		 req->content.len);
	if (ticket_audit(d, env, &who, "attachment.add", target, detail, &err) < 0 ||
	    ticket_request_record(d, env, &who, hash, aid, &err) < 0 ||
	    att_load(d, env->tenant, &who, req->id, aid, &a, &err) != 1) {
		qr = ticket_fail(d, reply, "record", err != NULL ? err : "gone", error_r);
		goto out;
	}
	if (db_commit(daemon_db(d), &err) < 0) {
		qr = ticket_fail(d, reply, "commit", err, error_r);
		goto out;
	}
	ticket_after_commit();
	qr = ticket_reply(reply, &a.base, error_r);
out:
	att_clear(&a);
	free(sname);
	free(scontent);
	ward__attachment_create_request__free_unpacked(req, NULL);
	return qr;
}

queue_result_t ticket_attachment_list(struct daemon *d, const Ward__Envelope *env,
				      const uint8_t *payload, size_t len, struct queue_reply *reply,
				      const char **error_r)
{
	Ward__AttachmentListRequest *req;
	Ward__AttachmentListReply out = WARD__ATTACHMENT_LIST_REPLY__INIT;
	Ward__Attachment *items = NULL, **ptrs = NULL;
	struct ticket_who who;
	const char *err = NULL;
	queue_result_t qr;
	PGresult *res = NULL;
	int rows, i, filled = 0, r;

	ticket_who_of(env, &who);
	req = ward__attachment_list_request__unpack(NULL, len, payload);
	if (req == NULL)
		return ticket_problem(reply, 400, "Malformed request", NULL, NULL);
	if (msg_prologue(env, &who, req->id, reply) < 0) {
		qr = QUEUE_DONE;
		goto out;
	}
	if (db_begin(daemon_db(d), env->tenant, &err) < 0) {
		qr = ticket_fail(d, reply, "begin", err, error_r);
		goto out;
	}
	r = ticket_visible(d, env->tenant, &who, req->id, false, NULL, &err);
	if (r <= 0) {
		if (r < 0) {
			qr = ticket_fail(d, reply, "ticket", err, error_r);
		} else {
			db_rollback(daemon_db(d));
			qr = ticket_problem(reply, 404, "Not found", NULL, NULL);
		}
		goto out;
	}
	{
		const char *p[2] = {req->id, who.customer ? "f" : "t"};

		res = db_exec(daemon_db(d),
			      "SELECT " ATT_COLUMNS
			      " FROM ticket.attachments a WHERE a.ticket_id = $1 "
			      "AND " ATT_VISIBLE " ORDER BY a.created_at, a.id LIMIT 1000",
			      2, p, &err);
	}
	if (res == NULL) {
		qr = ticket_fail(d, reply, "list", err, error_r);
		goto out;
	}
	rows = PQntuples(res);
	items = calloc((size_t)rows + 1, sizeof *items);
	ptrs = calloc((size_t)rows + 1, sizeof *ptrs);
	if (items == NULL || ptrs == NULL) {
		qr = ticket_fail(d, reply, "list", "out of memory", error_r);
		goto out;
	}
	for (i = 0; i < rows; i++, filled++) {
		if (att_fill(d, env->tenant, res, i, &items[i], &err) < 0) {
			att_clear(&items[i]);
			qr = ticket_fail(d, reply, "list decrypt", err, error_r);
			goto out;
		}
		ptrs[i] = &items[i];
	}
	if (db_commit(daemon_db(d), &err) < 0) {
		qr = ticket_fail(d, reply, "commit", err, error_r);
		goto out;
	}
	out.n_items = (size_t)rows;
	out.items = ptrs;
	qr = ticket_reply(reply, &out.base, error_r);
out:
	for (i = 0; i < filled; i++)
		att_clear(&items[i]);
	free(items);
	free(ptrs);
	PQclear(res);
	ward__attachment_list_request__free_unpacked(req, NULL);
	return qr;
}

queue_result_t ticket_attachment_get(struct daemon *d, const Ward__Envelope *env,
				     const uint8_t *payload, size_t len, struct queue_reply *reply,
				     const char **error_r)
{
	Ward__AttachmentGetRequest *req;
	Ward__AttachmentDownload out = WARD__ATTACHMENT_DOWNLOAD__INIT;
	Ward__Attachment a = WARD__ATTACHMENT__INIT;
	struct ticket_who who;
	const char *err = NULL;
	uint8_t *content = NULL;
	size_t content_len = 0;
	queue_result_t qr;
	PGresult *res = NULL;
	int r;

	ticket_who_of(env, &who);
	req = ward__attachment_get_request__unpack(NULL, len, payload);
	if (req == NULL)
		return ticket_problem(reply, 400, "Malformed request", NULL, NULL);
	if (msg_prologue(env, &who, req->id, reply) < 0) {
		qr = QUEUE_DONE;
		goto out;
	}
	if (!ticket_uuid_valid(req->aid)) {
		qr = ticket_problem(reply, 404, "Not found", NULL, NULL);
		goto out;
	}
	if (db_begin(daemon_db(d), env->tenant, &err) < 0) {
		qr = ticket_fail(d, reply, "begin", err, error_r);
		goto out;
	}
	/* The ticket's rules first (a customer's own ticket only), then the file's. */
	r = ticket_visible(d, env->tenant, &who, req->id, false, NULL, &err);
	if (r == 1)
		r = att_load(d, env->tenant, &who, req->id, req->aid, &a, &err);
	if (r <= 0) {
		if (r < 0) {
			qr = ticket_fail(d, reply, "attachment", err, error_r);
		} else {
			db_rollback(daemon_db(d));
			qr = ticket_problem(reply, 404, "Not found", NULL, NULL);
		}
		goto out;
	}
	{
		const char *p[1] = {req->aid};

		res =
		    db_exec(daemon_db(d),
			    "SELECT content_enc FROM ticket.attachments WHERE id = $1", 1, p, &err);
	}
	if (res == NULL || PQntuples(res) != 1 ||
	    ticket_open(d, env->tenant, "ticket.attachments", "content_enc", req->aid,
			PQgetvalue(res, 0, 0), &content, &content_len, &err) < 0) {
		qr = ticket_fail(d, reply, "content", err != NULL ? err : "gone", error_r);
		goto out;
	}
	if (db_commit(daemon_db(d), &err) < 0) {
		qr = ticket_fail(d, reply, "commit", err, error_r);
		goto out;
	}
	out.filename = a.filename;
	out.content_type = a.content_type;
	out.content.data = content;
	out.content.len = content_len;
	qr = ticket_reply(reply, &out.base, error_r);
out:
	if (content != NULL) {
		crypto_wipe(content, content_len);
		free(content);
	}
	PQclear(res);
	att_clear(&a);
	ward__attachment_get_request__free_unpacked(req, NULL);
	return qr;
}

/* ============================== departments ============================= */

queue_result_t ticket_department_create(struct daemon *d, const Ward__Envelope *env,
					const uint8_t *payload, size_t len,
					struct queue_reply *reply, const char **error_r)
{
	Ward__DepartmentCreateRequest *req;
	Ward__Department out = WARD__DEPARTMENT__INIT;
	struct ticket_who who;
	struct ticket_errors e = {0};
	char hash[65], id[TICKET_UUID_LEN + 1], result_id[TICKET_UUID_LEN + 1], target[64];
	char created[40] = "";
	const char *err = NULL;
	bool conflict;
	size_t chars;
	queue_result_t qr;
	PGresult *res;
	int r;

	ticket_who_of(env, &who);
	req = ward__department_create_request__unpack(NULL, len, payload);
	if (req == NULL)
		return ticket_problem(reply, 400, "Malformed request", NULL, NULL);
	if (msg_prologue(env, &who, NULL, reply) < 0) {
		qr = QUEUE_DONE;
		goto out;
	}
	if (req->name[0] == '\0' || !ticket_text_ok(req->name, strlen(req->name), true, &chars) ||
	    chars > TICKET_DEPARTMENT_MAX_CHARS) {
		ticket_errors_add(&e, "name", "must be one line of 1 to 100 characters");
		qr = ticket_problem(reply, 422, "Invalid department", NULL, &e);
		goto out;
	}
	if (db_begin(daemon_db(d), env->tenant, &err) < 0) {
		qr = ticket_fail(d, reply, "begin", err, error_r);
		goto out;
	}
	r = ticket_request_seen(d, env, &who, payload, len, result_id, &conflict, hash, &err);
	if (r < 0) {
		qr = ticket_fail(d, reply, "idempotency", err, error_r);
		goto out;
	}
	if (r == 1 && conflict) {
		db_rollback(daemon_db(d));
		ticket_errors_add(&e, "Idempotency-Key", "was used with another request");
		qr = ticket_problem(reply, 422, "Idempotency-Key reused", NULL, &e);
		goto out;
	}
	if (r == 0) {
		const char *p[3] = {id, env->tenant, req->name};

		if (ticket_uuid_random(id) < 0) {
			qr = ticket_fail(d, reply, "random", "no random bytes", error_r);
			goto out;
		}
		res = db_exec(daemon_db(d),
			      "INSERT INTO ticket.departments (id, tenant_id, name) "
			      "VALUES ($1, $2, $3) ON CONFLICT (tenant_id, name) DO NOTHING",
			      3, p, &err);
		if (res == NULL) {
			qr = ticket_fail(d, reply, "insert department", err, error_r);
			goto out;
		}
		r = strcmp(PQcmdTuples(res), "1") == 0;
		PQclear(res);
		if (!r) {
			db_rollback(daemon_db(d));
			qr = ticket_problem(reply, 409, "Department exists",
					    "a department of that name exists", NULL);
			goto out;
		}
		snprintf(target, sizeof target, "department:%s", id);
		if (ticket_audit(d, env, &who, "department.create", target, "{}", &err) < 0 ||
		    ticket_request_record(d, env, &who, hash, id, &err) < 0) {
			qr = ticket_fail(d, reply, "record", err, error_r);
			goto out;
		}
		snprintf(result_id, sizeof result_id, "%s", id);
	}
	{
		const char *p[1] = {result_id};

		res = db_exec(
		    daemon_db(d),
		    "SELECT name, " TS("created_at") " FROM ticket.departments WHERE id = $1", 1, p,
		    &err);
	}
	if (res == NULL || PQntuples(res) != 1) {
		PQclear(res);
		qr = ticket_fail(d, reply, "read back", err != NULL ? err : "gone", error_r);
		goto out;
	}
	snprintf(created, sizeof created, "%s", PQgetvalue(res, 0, 1));
	out.id = result_id;
	out.name = req->name;
	out.created_at = created;
	PQclear(res);
	if (db_commit(daemon_db(d), &err) < 0) {
		qr = ticket_fail(d, reply, "commit", err, error_r);
		goto out;
	}
	ticket_after_commit();
	qr = ticket_reply(reply, &out.base, error_r);
out:
	ward__department_create_request__free_unpacked(req, NULL);
	return qr;
}

queue_result_t ticket_department_list(struct daemon *d, const Ward__Envelope *env,
				      const uint8_t *payload, size_t len, struct queue_reply *reply,
				      const char **error_r)
{
	Ward__DepartmentListReply out = WARD__DEPARTMENT_LIST_REPLY__INIT;
	Ward__Department *items = NULL, **ptrs = NULL;
	struct ticket_who who;
	const char *err = NULL;
	queue_result_t qr;
	PGresult *res = NULL;
	int rows, i;

	ticket_who_of(env, &who);
	if (msg_prologue(env, &who, NULL, reply) < 0)
		return QUEUE_DONE;
	if (db_begin(daemon_db(d), env->tenant, &err) < 0)
		return ticket_fail(d, reply, "begin", err, error_r);
	res = db_exec(daemon_db(d),
		      "SELECT id, name, " TS("created_at") " FROM ticket.departments "
							   "ORDER BY name LIMIT 1000",
		      0, NULL, &err);
	if (res == NULL || db_commit(daemon_db(d), &err) < 0) {
		qr = ticket_fail(d, reply, "list", err, error_r);
		goto out;
	}
	rows = PQntuples(res);
	items = calloc((size_t)rows + 1, sizeof *items);
	ptrs = calloc((size_t)rows + 1, sizeof *ptrs);
	if (items == NULL || ptrs == NULL) {
		*error_r = "out of memory";
		qr = QUEUE_RETRY;
		goto out;
	}
	/* The strings stay in res until the reply is packed. */
	for (i = 0; i < rows; i++) {
		ward__department__init(&items[i]);
		items[i].id = PQgetvalue(res, i, 0);
		items[i].name = PQgetvalue(res, i, 1);
		items[i].created_at = PQgetvalue(res, i, 2);
		ptrs[i] = &items[i];
	}
	out.n_items = (size_t)rows;
	out.items = ptrs;
	qr = ticket_reply(reply, &out.base, error_r);
out:
	free(items);
	free(ptrs);
	PQclear(res);
	return qr;
}
