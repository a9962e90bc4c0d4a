/*
 * ticket_gdpr — ward-ticket's part of a GDPR export or erase (proto/gdpr.proto),
 * asked by ward-auth only (principal kind "service", id "auth": the skeleton has
 * checked that the sender is auth; the handlers check the id).
 *
 * The person: user_id (tickets they requested by account, messages they wrote,
 * attachments they uploaded) and, if given, the blind index of their email
 * (tickets opened for that address, mail they sent: author "mail:<16 hex of the
 * index>", and mail participants).
 *
 * gdpr.export: those rows decrypted, as one JSON object {tickets, messages,
 * attachments} (attachment metadata; their bytes stay downloadable through the
 * ticket API).
 *
 * gdpr.erase: tickets stay with the tenant, anonymised: requester email and name
 * removed, the subject replaced by a marker; every message they wrote has its
 * body replaced by the marker (sealed like any body, bound to its row); their
 * attachments and mail participations are deleted. One transaction with the
 * envelope id, so a redelivery changes nothing; a second erase finds nothing
 * personal left to change but the markers it re-seals.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gdpr.pb-c.h"
#include "log.h"
#include "ticket.h"

#define GDPR_ROWS_MAX 10000
#define GDPR_MARKER "[erased at the person's request]"

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* The rows of the person (parameters $1 user id, $2 email index or ""). */
#define GDPR_TICKETS_WHERE                                                                         \
	"(t.requester_id = $1::uuid OR ($2 <> '' AND t.requester_email_bidx = $2))"
#define GDPR_MESSAGES_WHERE                                                                        \
	"(m.author_id = $1 OR ($2 <> '' AND m.author_id = 'mail:' || left($2, 16)))"

/* Unpack and check a part request: 0 ok, else answered (*ret set). */
static int gdpr_request(const Ward__Envelope *env, const uint8_t *payload, size_t len,
			Ward__GdprPartRequest **req_r, struct queue_reply *reply,
			queue_result_t *ret)
{
	const Ward__Principal *p = env->principal;
	Ward__GdprPartRequest *req;

	*req_r = NULL;
	if (p == NULL || p->kind == NULL || strcmp(p->kind, "service") != 0 || p->id == NULL ||
	    strcmp(p->id, "auth") != 0) {
		*ret = ticket_problem(reply, 403, "Forbidden", "for ward-auth only", NULL);
		return -1;
	}
	req = ward__gdpr_part_request__unpack(NULL, len, payload);
	if (req == NULL || !ticket_uuid_valid(req->user_id) ||
	    (req->email_bidx[0] != '\0' &&
	     (strlen(req->email_bidx) != 64 ||
	      strspn(req->email_bidx, "0123456789abcdef") != 64))) {
		if (req != NULL)
			ward__gdpr_part_request__free_unpacked(req, NULL);
		*ret = ticket_problem(reply, 400, "Bad Request", "malformed part request", NULL);
		return -1;
	}
	*req_r = req;
	return 0;
}

/* Decrypt column col of row i into a JSON string ("" if NULL); NULL on error. */
static json_t *gdpr_open_str(struct daemon *d, const char *tenant, const char *table,
			     const char *column, const char *row_id, PGresult *res, int i, int col,
			     const char **error_r)
{
	uint8_t *pt = NULL;
	size_t n = 0;
	json_t *s;

	if (PQgetisnull(res, i, col))
		return json_string("");
	if (ticket_open(d, tenant, table, column, row_id, PQgetvalue(res, i, col), &pt, &n,
			error_r) < 0)
		return NULL;
	s = json_stringn((const char *)pt, n);
	crypto_wipe(pt, n);
	free(pt);
	if (s == NULL)
		*error_r = "a decrypted value is not UTF-8";
	return s;
}

/* ============================== export ================================== */

/* tickets, messages, attachments of the person into obj (inside the transaction). */
static int gdpr_export_rows(struct daemon *d, const char *tenant, const Ward__GdprPartRequest *req,
			    json_t *obj, const char **error_r)
{
	const char *params[2] = { req->user_id, req->email_bidx };
	json_t *tickets = json_array(), *messages = json_array(), *atts = json_array();
	PGresult *res = NULL;
	int ret = -1;

	if (tickets == NULL || messages == NULL || atts == NULL)
		goto oom;
	res = db_exec(daemon_db(d),
		      "SELECT t.id::text, t.number, t.subject_enc, t.status, t.priority, "
		      "t.requester_email_enc, t.requester_name_enc, " TS("t.created_at") ", " TS(
			      "t.updated_at") " FROM ticket.tickets t WHERE " GDPR_TICKETS_WHERE
				      " ORDER BY t.number LIMIT " "10000",
		      2, params, error_r);
	if (res == NULL)
		goto out;
	for (int i = 0; i < PQntuples(res); i++) {
		const char *id = PQgetvalue(res, i, 0);
		json_t *subj = gdpr_open_str(d, tenant, "ticket.tickets", "subject_enc", id, res, i,
					     2, error_r);
		json_t *mail = subj == NULL ? NULL
					    : gdpr_open_str(d, tenant, "ticket.tickets",
							    "requester_email_enc", id, res, i, 5,
							    error_r);
		json_t *name = mail == NULL ? NULL
					    : gdpr_open_str(d, tenant, "ticket.tickets",
							    "requester_name_enc", id, res, i, 6,
							    error_r);
		json_t *o;

		if (name == NULL) {
			json_decref(subj);
			json_decref(mail);
			goto out;
		}
		o = json_pack("{s:s, s:I, s:o, s:s, s:s, s:o, s:o, s:s, s:s}", "id", id, "number",
			      (json_int_t)atoll(PQgetvalue(res, i, 1)), "subject", subj, "status",
			      PQgetvalue(res, i, 3), "priority", PQgetvalue(res, i, 4),
			      "requester_email", mail, "requester_name", name, "created_at",
			      PQgetvalue(res, i, 7), "updated_at", PQgetvalue(res, i, 8));
		if (o == NULL || json_array_append_new(tickets, o) < 0)
			goto oom;
	}
	PQclear(res);
	res = db_exec(daemon_db(d),
		      "SELECT m.id::text, m.ticket_id::text, m.internal, m.body_enc, " TS(
			      "m.created_at") " FROM ticket.messages m WHERE " GDPR_MESSAGES_WHERE
				      " ORDER BY m.seq LIMIT " "10000",
		      2, params, error_r);
	if (res == NULL)
		goto out;
	for (int i = 0; i < PQntuples(res); i++) {
		const char *id = PQgetvalue(res, i, 0);
		json_t *body = gdpr_open_str(d, tenant, "ticket.messages", "body_enc", id, res, i,
					     3, error_r);
		json_t *o;

		if (body == NULL)
			goto out;
		o = json_pack("{s:s, s:s, s:b, s:o, s:s}", "id", id, "ticket_id",
			      PQgetvalue(res, i, 1), "internal",
			      strcmp(PQgetvalue(res, i, 2), "t") == 0, "body", body, "created_at",
			      PQgetvalue(res, i, 4));
		if (o == NULL || json_array_append_new(messages, o) < 0)
			goto oom;
	}
	PQclear(res);
	res = db_exec(daemon_db(d),
		      "SELECT a.id::text, a.ticket_id::text, a.filename_enc, a.content_type, "
		      "a.size, " TS("a.created_at") " FROM ticket.attachments a WHERE a.created_by = "
		      "'user:' || $1 OR a.message_id IN (SELECT m.id FROM ticket.messages m WHERE "
		      GDPR_MESSAGES_WHERE ") ORDER BY a.created_at LIMIT " "10000",
		      2, params, error_r);
	if (res == NULL)
		goto out;
	for (int i = 0; i < PQntuples(res); i++) {
		const char *id = PQgetvalue(res, i, 0);
		json_t *fname = gdpr_open_str(d, tenant, "ticket.attachments", "filename_enc", id,
					      res, i, 2, error_r);
		json_t *o;

		if (fname == NULL)
			goto out;
		o = json_pack("{s:s, s:s, s:o, s:s, s:I, s:s}", "id", id, "ticket_id",
			      PQgetvalue(res, i, 1), "filename", fname, "content_type",
			      PQgetvalue(res, i, 3), "size",
			      (json_int_t)atoll(PQgetvalue(res, i, 4)), "created_at",
			      PQgetvalue(res, i, 5));
		if (o == NULL || json_array_append_new(atts, o) < 0)
			goto oom;
	}
	if (json_object_set(obj, "tickets", tickets) < 0 ||
	    json_object_set(obj, "messages", messages) < 0 ||
	    json_object_set(obj, "attachments", atts) < 0)
		goto oom;
	ret = 0;
	goto out;
oom:
	*error_r = "out of memory";
out:
	if (res != NULL)
		PQclear(res);
	json_decref(tickets);
	json_decref(messages);
	json_decref(atts);
	return ret;
}

queue_result_t ticket_gdpr_export(struct daemon *d, const Ward__Envelope *env,
				  const uint8_t *payload, size_t len, struct queue_reply *reply,
				  const char **error_r)
{
	Ward__GdprPartRequest *req;
	Ward__GdprPartExport out = WARD__GDPR_PART_EXPORT__INIT;
	const char *err = NULL;
	json_t *obj = NULL;
	char *text = NULL;
	queue_result_t ret;

	if (gdpr_request(env, payload, len, &req, reply, &ret) < 0)
		return ret;
	if (db_begin(daemon_db(d), env->tenant, &err) < 0) {
		ret = ticket_problem(reply, 503, "Service Unavailable", "database unavailable",
				     NULL);
		goto out;
	}
	obj = json_object();
	if (obj == NULL || gdpr_export_rows(d, env->tenant, req, obj, &err) < 0 ||
	    (text = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII)) == NULL) {
		db_rollback(daemon_db(d));
		log_event(LOG_WARN, "gdpr export failed", LF_STR("error", err ? err : "memory"));
		ret = ticket_problem(reply, 503, "Service Unavailable", "export failed", NULL);
		goto out;
	}
	db_rollback(daemon_db(d)); /* read-only */
	out.json = text;
	ret = ticket_reply(reply, &out.base, error_r);
out:
	if (text != NULL) {
		crypto_wipe(text, strlen(text));
		free(text);
	}
	json_decref(obj);
	ward__gdpr_part_request__free_unpacked(req, NULL);
	return ret;
}

/* =============================== erase ================================== */

/* Re-seal column of every row id the query returns with the marker. Returns the
 * number of rows, or -1. */
static long long gdpr_mark_rows(struct daemon *d, const char *tenant, const char *select_sql,
				const char *update_sql, const char *table, const char *column,
				const char *const *params, const char **error_r)
{
	PGresult *res = db_exec(daemon_db(d), select_sql, 2, params, error_r);
	long long n = 0;

	if (res == NULL)
		return -1;
	for (int i = 0; i < PQntuples(res); i++) {
		const char *id = PQgetvalue(res, i, 0);
		uint8_t *sealed = NULL;
		size_t slen = 0;
		PGresult *u;

		if (ticket_seal(d, tenant, table, column, id, GDPR_MARKER, strlen(GDPR_MARKER),
				&sealed, &slen, error_r) < 0) {
			PQclear(res);
			return -1;
		}
		{
			const char *p[2] = { id, (const char *)sealed };
			int lens[2] = { 0, (int)slen }, fmts[2] = { 0, 1 };

			u = db_exec_bin(daemon_db(d), update_sql, 2, p, lens, fmts, error_r);
		}
		free(sealed);
		if (u == NULL) {
			PQclear(res);
			return -1;
		}
		PQclear(u);
		n++;
	}
	PQclear(res);
	return n;
}

/* Run a statement, return its row count (or -1). */
static long long gdpr_count(struct daemon *d, const char *sql, const char *const *params,
			    const char **error_r)
{
	PGresult *res = db_exec(daemon_db(d), sql, 2, params, error_r);
	long long n;

	if (res == NULL)
		return -1;
	n = atoll(PQcmdTuples(res));
	PQclear(res);
	return n;
}

queue_result_t ticket_gdpr_erase(struct daemon *d, const Ward__Envelope *env,
				 const uint8_t *payload, size_t len, struct queue_reply *reply,
				 const char **error_r)
{
	Ward__GdprPartRequest *req;
	Ward__GdprPartErase out = WARD__GDPR_PART_ERASE__INIT;
	const char *err = NULL;
	queue_result_t ret;
	long long atts = 0, msgs = 0, tickets = 0;
	int fresh;

	if (gdpr_request(env, payload, len, &req, reply, &ret) < 0)
		return ret;
	if (db_begin(daemon_db(d), env->tenant, &err) < 0) {
		ret = ticket_retry(d, "begin", err, error_r);
		goto out;
	}
	fresh = db_mark_processed(daemon_db(d), "ticket.processed", env->id, &err);
	if (fresh < 0) {
		ret = ticket_retry(d, "mark", err, error_r);
		goto out;
	}
	if (fresh == 1) {
		const char *params[2] = { req->user_id, req->email_bidx };

		atts = gdpr_count(d,
				  "DELETE FROM ticket.attachments a WHERE a.created_by = 'user:' || "
				  "$1 OR a.message_id IN (SELECT m.id FROM ticket.messages m WHERE "
				  GDPR_MESSAGES_WHERE ")",
				  params, &err);
		msgs = atts < 0 ? -1
				: gdpr_mark_rows(d, env->tenant,
						 "SELECT m.id::text FROM ticket.messages m WHERE "
						 GDPR_MESSAGES_WHERE,
						 "UPDATE ticket.messages SET body_enc = $2 WHERE id = $1",
						 "ticket.messages", "body_enc", params, &err);
		tickets = msgs < 0 ? -1
				   : gdpr_mark_rows(d, env->tenant,
						    "SELECT t.id::text FROM ticket.tickets t WHERE "
						    GDPR_TICKETS_WHERE,
						    "UPDATE ticket.tickets SET subject_enc = $2, "
						    "requester_email_enc = NULL, requester_email_bidx = "
						    "NULL, requester_name_enc = NULL, updated_at = now() "
						    "WHERE id = $1",
						    "ticket.tickets", "subject_enc", params, &err);
		if (tickets < 0 ||
		    (req->email_bidx[0] != '\0' &&
		     gdpr_count(d,
				"DELETE FROM ticket.mail_participants WHERE email_bidx = $2 AND "
				"$1 <> ''",
				params, &err) < 0)) {
			ret = ticket_retry(d, "erase", err, error_r);
			goto out;
		}
	}
	if (db_commit(daemon_db(d), &err) < 0) {
		ret = ticket_retry(d, "commit", err, error_r);
		goto out;
	}
	log_event(LOG_INFO, "gdpr erase (ticket part)", LF_STR("user", req->user_id),
		  LF_INT("tickets", tickets), LF_INT("messages", msgs), LF_INT("attachments", atts));
	out.tickets = tickets;
	out.messages = msgs;
	out.attachments = atts;
	ret = ticket_reply(reply, &out.base, error_r);
out:
	ward__gdpr_part_request__free_unpacked(req, NULL);
	return ret;
}
