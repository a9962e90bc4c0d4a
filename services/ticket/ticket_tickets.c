/*
 * ticket_tickets — ticket.create, ticket.list, ticket.get, ticket.update.
 *
 * Visibility: admins, agents, API credentials and services see every ticket of
 * their tenant (RLS keeps other tenants out); a customer sees only the tickets
 * they requested: requester_id is theirs, or the ticket was opened for their
 * email address (requester_email_bidx = the blind index of their auth.users
 * row, so a customer who registers after an agent opened a ticket for their
 * address sees it; ward_ticket may read only id, tenant_id, email_bidx and role
 * of auth.users, under that table's RLS). Anything not visible is 404, never 403, so ids of other
 * tenants and customers cannot be probed. Lists are newest first, keyed on the
 * per-tenant ticket number, which only grows: a cursor never repeats a ticket, and
 * every ticket committed before the first page is listed exactly once while others
 * are created meanwhile. Numbers are taken in a short transaction of their own
 * (ticket_next_number), so concurrent creations of one tenant share WAL flushes
 * instead of queueing on the counter row; a failed or replayed creation leaves a
 * gap in the numbers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "ticket.h"

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* The customer's own tickets: parameter P is the customer's id (NULL: anyone's). */
#define TICKET_MINE(p)                                                                             \
	"(" p "::uuid IS NULL OR t.requester_id = " p "::uuid OR t.requester_email_bidx = "       \
	"(SELECT u.email_bidx FROM auth.users u WHERE u.id = " p "::uuid AND u.role = 'customer'))"

#define TICKET_COLUMNS                                                                             \
	"t.id, t.number, t.subject_enc, t.status, t.priority, "                                    \
	"coalesce(t.requester_id::text, ''), t.requester_email_enc, t.requester_name_enc, "        \
	"coalesce(t.assignee_id::text, ''), coalesce(t.department_id::text, ''), " TS(             \
	    "t.created_at") ", " TS("t.updated_at")
#define TICKET_NCOLUMNS 12

/* ============================ row <-> message ============================ */

/* Free a string of a message we filled (wiped: it may be decrypted data). */
static void ticket_str_free(char **s)
{
	if (*s != NULL && *s != protobuf_c_empty_string) {
		crypto_wipe(*s, strlen(*s));
		free(*s);
	}
	*s = (char *)protobuf_c_empty_string;
}

/* Free what ticket_fill put in t. */
static void ticket_clear(Ward__Ticket *t)
{
	ticket_str_free(&t->id);
	ticket_str_free(&t->ref);
	ticket_str_free(&t->subject);
	ticket_str_free(&t->status);
	ticket_str_free(&t->priority);
	ticket_str_free(&t->requester_id);
	ticket_str_free(&t->requester_email);
	ticket_str_free(&t->requester_name);
	ticket_str_free(&t->assignee_id);
	ticket_str_free(&t->department_id);
	ticket_str_free(&t->created_at);
	ticket_str_free(&t->updated_at);
	ticket_str_free(&t->body);
}

/* strdup into *dst; on failure leave the empty string and count the error. */
static void ticket_set(char **dst, const char *src, int *bad)
{
	char *s = strdup(src);

	if (s == NULL) {
		(*bad)++;
		return;
	}
	*dst = s;
}

/* Decrypt column col of row r (NULL → "") into *dst. */
static int ticket_set_open(struct daemon *d, const char *tenant, const char *table,
			   const char *column, const char *row_id, PGresult *res, int r, int col,
			   char **dst, const char **error_r)
{
	uint8_t *pt;
	size_t n;

	if (PQgetisnull(res, r, col))
		return 0;
	if (ticket_open(d, tenant, table, column, row_id, PQgetvalue(res, r, col), &pt, &n,
			error_r) < 0)
		return -1;
	*dst = (char *)pt;
	return 0;
}

/* A ticket message from row r of a TICKET_COLUMNS result. */
static int ticket_fill(struct daemon *d, const char *tenant, const char *slug, PGresult *res, int r,
		       Ward__Ticket *t, const char **error_r)
{
	const char *id = PQgetvalue(res, r, 0);
	char ref[96];
	int bad = 0;

	ward__ticket__init(t);
	if (ticket_ref_format(slug, strtoll(PQgetvalue(res, r, 1), NULL, 10), ref, sizeof ref) < 0)
		snprintf(ref, sizeof ref, "%s", PQgetvalue(res, r, 1));
	ticket_set(&t->id, id, &bad);
	ticket_set(&t->ref, ref, &bad);
	ticket_set(&t->status, PQgetvalue(res, r, 3), &bad);
	ticket_set(&t->priority, PQgetvalue(res, r, 4), &bad);
	ticket_set(&t->requester_id, PQgetvalue(res, r, 5), &bad);
	ticket_set(&t->assignee_id, PQgetvalue(res, r, 8), &bad);
	ticket_set(&t->department_id, PQgetvalue(res, r, 9), &bad);
	ticket_set(&t->created_at, PQgetvalue(res, r, 10), &bad);
	ticket_set(&t->updated_at, PQgetvalue(res, r, 11), &bad);
	if (bad) {
		*error_r = "out of memory";
		return -1;
	}
	if (ticket_set_open(d, tenant, "ticket.tickets", "subject_enc", id, res, r, 2, &t->subject,
			    error_r) < 0 ||
	    ticket_set_open(d, tenant, "ticket.tickets", "requester_email_enc", id, res, r, 6,
			    &t->requester_email, error_r) < 0 ||
	    ticket_set_open(d, tenant, "ticket.tickets", "requester_name_enc", id, res, r, 7,
			    &t->requester_name, error_r) < 0)
		return -1;
	return 0;
}

/* Load ticket id as who may see it, with its first public message as body.
 * 1 found, 0 not visible, -1 error. t is filled only when 1 (ticket_clear it).
 * commit: the statement ends the transaction (COMMIT in the same round trip),
 * whatever it returns. */
static int ticket_load(struct daemon *d, const char *tenant, const struct ticket_who *who,
		       const char *id, bool commit, Ward__Ticket *t, const char **error_r)
{
	PGresult *(*exec)(db_t *, const char *, int, const char *const *, const char **) =
	    commit ? db_exec_commit : db_exec;
	const char *p[2] = {id, who->customer ? who->id : NULL};
	uint8_t dek[CRYPTO_KEY_LEN];
	uint32_t version;
	char slug[48];
	PGresult *res;
	int found, rc = -1;

	if (ticket_keys_current(d, tenant, dek, &version, slug, error_r) < 0) {
		if (commit)
			db_rollback(daemon_db(d));
		return -1;
	}
	crypto_wipe(dek, sizeof dek);
	/* The ticket and its first public message in one statement. */
	res = exec(daemon_db(d),
		      "SELECT " TICKET_COLUMNS ", m.id, m.body_enc FROM ticket.tickets t "
		      "LEFT JOIN LATERAL (SELECT id, body_enc FROM ticket.messages "
		      "WHERE ticket_id = t.id AND NOT internal ORDER BY seq LIMIT 1) m ON true "
		      "WHERE t.id = $1 AND " TICKET_MINE("$2"),
		      2, p, error_r);
	if (res == NULL)
		return -1;
	found = PQntuples(res) == 1;
	if (!found) {
		rc = 0;
		goto out;
	}
	if (ticket_fill(d, tenant, slug, res, 0, t, error_r) < 0)
		goto fail;
	if (!PQgetisnull(res, 0, TICKET_NCOLUMNS) &&
	    ticket_set_open(d, tenant, "ticket.messages", "body_enc",
			    PQgetvalue(res, 0, TICKET_NCOLUMNS), res, 0, TICKET_NCOLUMNS + 1,
			    &t->body, error_r) < 0)
		goto fail;
	rc = 1;
	goto out;
fail:
	ticket_clear(t);
out:
	PQclear(res);
	return rc;
}

int ticket_visible(struct daemon *d, const char *tenant, const struct ticket_who *who,
		   const char *ticket_id, bool for_update, enum ticket_status *status_r,
		   const char **error_r)
{
	const char *p[2] = {ticket_id, who->customer ? who->id : NULL};
	PGresult *res;
	int found;

	(void)tenant; /* the transaction's app.tenant_id already scopes every row */
	res = db_exec(daemon_db(d),
		      for_update ? "SELECT t.status FROM ticket.tickets t WHERE t.id = $1 "
				   "AND " TICKET_MINE("$2") " FOR UPDATE OF t"
				 : "SELECT t.status FROM ticket.tickets t WHERE t.id = $1 "
				   "AND " TICKET_MINE("$2"),
		      2, p, error_r);
	if (res == NULL)
		return -1;
	found = PQntuples(res) == 1;
	if (found && status_r != NULL)
		*status_r = ticket_status_parse(PQgetvalue(res, 0, 0));
	PQclear(res);
	return found;
}

/* Does the one-row query sql (with its n parameters p) find its row? 1, 0 or -1. */
static int ticket_row_exists(struct daemon *d, const char *sql, int n, const char *const *p,
			     const char **error_r)
{
	PGresult *res = db_exec(daemon_db(d), sql, n, p, error_r);
	int found;

	if (res == NULL)
		return -1;
	found = PQntuples(res) == 1;
	PQclear(res);
	return found;
}

/* Does department id exist in the tenant? 1, 0 or -1. */
static int ticket_department_exists(struct daemon *d, const char *id, const char **error_r)
{
	const char *p[1] = {id};

	return ticket_row_exists(d, "SELECT 1 FROM ticket.departments WHERE id = $1", 1, p,
				 error_r);
}

/*
 * Whether id is an enabled agent or admin of the tenant whose transaction is
 * open (auth.users under its RLS: another tenant's user is not there; ward_ticket
 * reads id, tenant_id, role and disabled only). 1 yes, 0 no, -1 error.
 */
static int ticket_assignee_ok(struct daemon *d, const char *tenant, const char *id,
			      const char **error_r)
{
	const char *p[2] = {id, tenant};

	return ticket_row_exists(d,
				 "SELECT 1 FROM auth.users WHERE id = $1::uuid AND tenant_id = "
				 "$2::uuid AND role IN ('agent', 'admin') AND NOT disabled",
				 2, p, error_r);
}

/* A new assignee id in an open transaction: 0 if it may be assigned, else -1 with the
 * transaction rolled back and *qr_r the answer (422 naming assignee_id, under title,
 * or the failure's). */
static int ticket_assignee_check(struct daemon *d, const char *tenant, const char *id,
				 struct queue_reply *reply, const char *title, queue_result_t *qr_r,
				 const char **error_r)
{
	struct ticket_errors e = {0};
	const char *err = NULL;
	int r = ticket_assignee_ok(d, tenant, id, &err);

	if (r == 1)
		return 0;
	if (r < 0) {
		*qr_r = ticket_fail(d, reply, "assignee", err, error_r);
		return -1;
	}
	db_rollback(daemon_db(d));
	ticket_errors_add(&e, "assignee_id", "is not an enabled agent or admin of this tenant");
	*qr_r = ticket_problem(reply, 422, title, NULL, &e);
	return -1;
}

/* The common start of every handler: a tenant id we can set for RLS, and a
 * customer id usable as requester. 0, or -1 with the problem in reply. */
static int ticket_prologue(const Ward__Envelope *env, const struct ticket_who *who,
			   struct queue_reply *reply)
{
	if (!ticket_uuid_valid(env->tenant)) {
		ticket_problem(reply, 400, "Bad request", "no tenant", NULL);
		return -1;
	}
	if (who->customer && !ticket_uuid_valid(who->id)) {
		ticket_problem(reply, 403, "Forbidden", NULL, NULL);
		return -1;
	}
	return 0;
}

/* ============================== ticket.create =========================== */

/* Check a create request; field errors into e. */
static void ticket_create_check(const Ward__TicketCreateRequest *req, const struct ticket_who *who,
				char *email, struct ticket_errors *e)
{
	size_t chars;

	if (req->subject[0] == '\0')
		ticket_errors_add(e, "subject", "is required");
	else if (!ticket_text_ok(req->subject, strlen(req->subject), true, &chars))
		ticket_errors_add(e, "subject", "must be UTF-8 text on one line");
	else if (chars > TICKET_SUBJECT_MAX_CHARS)
		ticket_errors_add(e, "subject", "must be at most 255 characters");
	if (req->body[0] == '\0')
		ticket_errors_add(e, "body", "is required");
	else if (strlen(req->body) > (size_t)ticket_cfg.body_max_bytes)
		ticket_errors_add(e, "body", "is too long");
	else if (!ticket_text_ok(req->body, strlen(req->body), false, NULL))
		ticket_errors_add(e, "body", "must be UTF-8 text");
	if (req->priority[0] != '\0' && !ticket_priority_valid(req->priority))
		ticket_errors_add(e, "priority", "must be one of low, normal, high, urgent");
	email[0] = '\0';
	if (req->requester_email[0] != '\0') {
		if (who->customer)
			ticket_errors_add(e, "requester_email",
					  "customers open tickets for themselves");
		else if (!ticket_email_normalize(req->requester_email, email, TICKET_EMAIL_MAX + 1))
			ticket_errors_add(e, "requester_email", "is not an email address");
	}
	if (req->requester_name[0] != '\0' &&
	    (!ticket_text_ok(req->requester_name, strlen(req->requester_name), true, &chars) ||
	     chars > TICKET_NAME_MAX_CHARS))
		ticket_errors_add(e, "requester_name",
				  "must be one line of at most 200 characters");
	if (req->department_id[0] != '\0' && !ticket_uuid_valid(req->department_id))
		ticket_errors_add(e, "department_id", "is not a department id");
	if (req->assignee_id[0] != '\0') {
		if (who->customer)
			ticket_errors_add(e, "assignee_id", "customers cannot assign tickets");
		else if (!ticket_uuid_valid(req->assignee_id))
			ticket_errors_add(e, "assignee_id", "is not a user id");
	}
}

/* Sealed values of a new ticket, freed together. */
struct ticket_sealed {
	uint8_t *subject, *email, *name, *body;
	size_t subject_len, email_len, name_len, body_len;
};

static void ticket_sealed_free(struct ticket_sealed *s)
{
	free(s->subject);
	free(s->email);
	free(s->name);
	free(s->body);
}

/*
 * The tenant's next ticket number, in a transaction of its own whose commit does not
 * wait for its WAL flush (synchronous_commit off for it alone): the counter row is
 * locked for one statement instead of across the ticket's durable commit. A number
 * is never given twice: the ticket's own commit is later in the WAL, so when it
 * survives a crash so does the counter.
 */
static int ticket_next_number(struct daemon *d, const char *tenant, long long *number_r,
			      const char **error_r)
{
	const char *p[1] = {tenant};
	PGresult *res;

	/* One round trip: BEGIN, tenant, asynchronous commit, the upsert, COMMIT. */
	if (db_begin_async(daemon_db(d), tenant, error_r) < 0)
		return -1;
	res = db_exec_commit(daemon_db(d),
			     "INSERT INTO ticket.counters (tenant_id, last_number) VALUES ($1, 1001) "
			     "ON CONFLICT (tenant_id) DO UPDATE "
			     "SET last_number = ticket.counters.last_number + 1 RETURNING last_number",
			     1, p, error_r);
	if (res == NULL)
		return -1;
	*number_r = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return 0;
}

queue_result_t ticket_create(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			     size_t len, struct queue_reply *reply, const char **error_r)
{
	Ward__TicketCreateRequest *req;
	Ward__Ticket t = WARD__TICKET__INIT;
	struct ticket_who who;
	struct ticket_errors e = {0};
	struct ticket_sealed s = {0};
	char email[TICKET_EMAIL_MAX + 1], bidx[65], hash[65], id[TICKET_UUID_LEN + 1];
	char mid[TICKET_UUID_LEN + 1], result_id[TICKET_UUID_LEN + 1], detail[256], target[64];
	const char *err = NULL, *priority;
	bool conflict;
	queue_result_t qr;
	long long number;
	int seen;

	ticket_who_of(env, &who);
	if (ticket_prologue(env, &who, reply) < 0)
		return QUEUE_DONE;
	req = ward__ticket_create_request__unpack(NULL, len, payload);
	if (req == NULL)
		return ticket_problem(reply, 400, "Malformed request", NULL, NULL);
	ticket_create_check(req, &who, email, &e);
	if (e.n > 0) {
		qr = ticket_problem(reply, 422, "Invalid ticket", NULL, &e);
		goto out;
	}
	priority = req->priority[0] != '\0' ? req->priority : "normal";
	if (ticket_next_number(d, env->tenant, &number, &err) < 0) {
		qr = ticket_fail(d, reply, "number", err, error_r);
		goto out;
	}
	if (db_begin(daemon_db(d), env->tenant, &err) < 0) {
		qr = ticket_fail(d, reply, "begin", err, error_r);
		goto out;
	}
	seen = ticket_request_seen(d, env, &who, payload, len, result_id, &conflict, hash, &err);
	if (seen < 0) {
		qr = ticket_fail(d, reply, "idempotency", err, error_r);
		goto out;
	}
	if (seen == 1) {
		if (conflict) {
			db_rollback(daemon_db(d));
			ticket_errors_add(&e, "Idempotency-Key", "was used with another request");
			qr = ticket_problem(reply, 422, "Idempotency-Key reused", NULL, &e);
			goto out;
		}
		if (ticket_load(d, env->tenant, &who, result_id, true, &t, &err) != 1) {
			qr = ticket_fail(d, reply, "replay", err != NULL ? err : "gone", error_r);
			goto out;
		}
		qr = ticket_reply(reply, &t.base, error_r);
		goto out;
	}
	if (req->department_id[0] != '\0') {
		int r = ticket_department_exists(d, req->department_id, &err);

		if (r < 0) {
			qr = ticket_fail(d, reply, "department", err, error_r);
			goto out;
		}
		if (r == 0) {
			db_rollback(daemon_db(d));
			ticket_errors_add(&e, "department_id", "no such department");
			qr = ticket_problem(reply, 422, "Invalid ticket", NULL, &e);
			goto out;
		}
	}
	if (req->assignee_id[0] != '\0' &&
	    ticket_assignee_check(d, env->tenant, req->assignee_id, reply, "Invalid ticket", &qr,
				  error_r) < 0)
		goto out;
	if (ticket_uuid_random(id) < 0 || ticket_uuid_random(mid) < 0) {
		qr = ticket_fail(d, reply, "random", "no random bytes", error_r);
		goto out;
	}
	if (ticket_seal(d, env->tenant, "ticket.tickets", "subject_enc", id, req->subject,
			strlen(req->subject), &s.subject, &s.subject_len, &err) < 0 ||
	    ticket_seal(d, env->tenant, "ticket.messages", "body_enc", mid, req->body,
			strlen(req->body), &s.body, &s.body_len, &err) < 0 ||
	    (email[0] != '\0' &&
	     (ticket_seal(d, env->tenant, "ticket.tickets", "requester_email_enc", id, email,
			  strlen(email), &s.email, &s.email_len, &err) < 0 ||
	      ticket_blind(d, env->tenant, "auth.users.email", email, strlen(email), bidx, &err) <
		  0)) ||
	    (req->requester_name[0] != '\0' &&
	     ticket_seal(d, env->tenant, "ticket.tickets", "requester_name_enc", id,
			 req->requester_name, strlen(req->requester_name), &s.name, &s.name_len,
			 &err) < 0)) {
		qr = ticket_fail(d, reply, "encrypt", err, error_r);
		goto out;
	}
	{
		char num[24];
		const char *p[12];
		int lens[12] = {0}, fmts[12] = {0};

		snprintf(num, sizeof num, "%lld", number);
		p[0] = id;
		p[1] = env->tenant;
		p[2] = num;
		p[3] = (const char *)s.subject, lens[3] = (int)s.subject_len, fmts[3] = 1;
		p[4] = priority;
		/* A customer's ticket is theirs; an agent's is for requester_email: the
		 * customer with that address if one exists (else the address alone,
		 * matched by blind index once they register). */
		p[5] = who.customer ? who.id : NULL;
		p[6] = (const char *)s.email, lens[6] = (int)s.email_len, fmts[6] = 1;
		p[7] = email[0] != '\0' ? bidx : NULL;
		p[8] = (const char *)s.name, lens[8] = (int)s.name_len, fmts[8] = 1;
		p[9] = req->assignee_id[0] != '\0' ? req->assignee_id : NULL;
		p[10] = req->department_id[0] != '\0' ? req->department_id : NULL;
		p[11] = who.actor;
		if (db_defer(daemon_db(d),
			     "INSERT INTO ticket.tickets (id, tenant_id, number, subject_enc, "
			     "priority, requester_id, requester_email_enc, requester_email_bidx, "
			     "requester_name_enc, assignee_id, department_id, created_by) "
			     "VALUES ($1, $2, $3, $4, $5, coalesce($6::uuid, (SELECT u.id FROM "
			     "auth.users u WHERE u.email_bidx = $8 AND u.role = 'customer')), $7, "
			     "$8, $9, $10, $11, $12)",
			     12, p, lens, fmts, &err) < 0) {
			qr = ticket_fail(d, reply, "insert ticket", err, error_r);
			goto out;
		}
	}
	{
		const char *p[6] = {mid,      env->tenant,
				    id,	      who.id[0] ? who.id : who.actor,
				    who.role, (const char *)s.body};
		int lens[6] = {0, 0, 0, 0, 0, (int)s.body_len}, fmts[6] = {0, 0, 0, 0, 0, 1};

		if (db_defer(daemon_db(d),
			     "INSERT INTO ticket.messages (id, tenant_id, ticket_id, author_id, "
			     "author_role, internal, body_enc) VALUES ($1, $2, $3, $4, $5, false, $6)",
			     6, p, lens, fmts, &err) < 0) {
			qr = ticket_fail(d, reply, "insert message", err, error_r);
			goto out;
		}
	}
	snprintf(target, sizeof target, "ticket:%s", id);
	snprintf(detail, sizeof detail, "{\"number\":%lld,\"priority\":\"%s\",\"message\":\"%s\"}",
		 number, priority, mid);
	if (ticket_audit(d, env, &who, "create", target, detail, &err) < 0 ||
	    ticket_request_record(d, env, &who, hash, id, &err) < 0) {
		qr = ticket_fail(d, reply, "record", err, error_r);
		goto out;
	}
	/* The inserts above were deferred: they travel with the read back of the reply
	 * (inside the transaction, the same code as a replay) and its COMMIT, in one
	 * round trip. */
	if (ticket_load(d, env->tenant, &who, id, true, &t, &err) != 1) {
		qr = ticket_fail(d, reply, "read back and commit", err != NULL ? err : "gone", error_r);
		goto out;
	}
	ticket_after_commit();
	qr = ticket_reply(reply, &t.base, error_r);
out:
	ticket_clear(&t);
	ticket_sealed_free(&s);
	crypto_wipe(email, sizeof email);
	ward__ticket_create_request__free_unpacked(req, NULL);
	return qr;
}

/* ============================== ticket.get ============================== */

queue_result_t ticket_get(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			  size_t len, struct queue_reply *reply, const char **error_r)
{
	Ward__TicketGetRequest *req;
	Ward__Ticket t = WARD__TICKET__INIT;
	struct ticket_who who;
	const char *err = NULL;
	queue_result_t qr;
	int r;

	ticket_who_of(env, &who);
	if (ticket_prologue(env, &who, reply) < 0)
		return QUEUE_DONE;
	req = ward__ticket_get_request__unpack(NULL, len, payload);
	if (req == NULL)
		return ticket_problem(reply, 400, "Malformed request", NULL, NULL);
	if (!ticket_uuid_valid(req->id)) {
		qr = ticket_problem(reply, 404, "Not found", NULL, NULL);
		goto out;
	}
	if (db_begin(daemon_db(d), env->tenant, &err) < 0) {
		qr = ticket_fail(d, reply, "begin", err, error_r);
		goto out;
	}
	r = ticket_load(d, env->tenant, &who, req->id, true, &t, &err); /* and commits */
	if (r < 0) {
		qr = ticket_fail(d, reply, "get", err, error_r);
		goto out;
	}
	if (r == 0) {
		qr = ticket_problem(reply, 404, "Not found", NULL, NULL);
		goto out;
	}
	qr = ticket_reply(reply, &t.base, error_r);
out:
	ticket_clear(&t);
	ward__ticket_get_request__free_unpacked(req, NULL);
	return qr;
}

/* ============================== ticket.list ============================= */

/* The list's statement: fixed fragments for the filters present, each value a
 * parameter, so that every combination is a statement of its own whose (generic)
 * plan walks the index it needs: one statement with "$1 IS NULL OR ..." for every
 * filter would be planned once for all and scan the whole tenant. */
static PGresult *ticket_list_query(struct daemon *d, const Ward__TicketListRequest *req,
				   const struct ticket_who *who, const char *cursor,
				   const char *limit, const char **error_r)
{
	char sql[2048];
	const char *p[8];
	size_t len;
	int n = 0;

	len = (size_t)snprintf(sql, sizeof sql, "SELECT " TICKET_COLUMNS
				" FROM ticket.tickets t WHERE true");
#define TICKET_WHERE(...) \
	(len += (size_t)snprintf(sql + len, sizeof sql - len, __VA_ARGS__))
	if (req->status[0] != '\0') {
		p[n++] = req->status;
		TICKET_WHERE(" AND t.status = $%d", n);
	}
	if (strcmp(req->assignee, "none") == 0) {
		TICKET_WHERE(" AND t.assignee_id IS NULL");
	} else if (req->assignee[0] != '\0') {
		p[n++] = req->assignee;
		TICKET_WHERE(" AND t.assignee_id = $%d::uuid", n);
	}
	if (req->requester[0] != '\0') {
		p[n++] = req->requester;
		TICKET_WHERE(" AND (t.requester_id = $%d::uuid OR t.requester_email_bidx = "
			     "(SELECT r.email_bidx FROM auth.users r WHERE r.id = $%d::uuid))",
			     n, n);
	}
	if (req->updated_since[0] != '\0') {
		p[n++] = req->updated_since;
		TICKET_WHERE(" AND t.updated_at >= $%d::timestamptz", n);
	}
	if (cursor != NULL) {
		p[n++] = cursor;
		TICKET_WHERE(" AND t.number < $%d::bigint", n);
	}
	if (who->customer) {
		p[n++] = who->id;
		TICKET_WHERE(" AND (t.requester_id = $%d::uuid OR t.requester_email_bidx = "
			     "(SELECT u.email_bidx FROM auth.users u WHERE u.id = $%d::uuid "
			     "AND u.role = 'customer'))",
			     n, n);
	}
	p[n++] = limit;
	TICKET_WHERE(" ORDER BY t.number DESC LIMIT $%d::int", n);
#undef TICKET_WHERE
	if (len >= sizeof sql) {
		*error_r = "list statement too long";
		return NULL;
	}
	return db_exec(daemon_db(d), sql, n, p, error_r);
}

queue_result_t ticket_list(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			   size_t len, struct queue_reply *reply, const char **error_r)
{
	Ward__TicketListRequest *req;
	Ward__TicketListReply out = WARD__TICKET_LIST_REPLY__INIT;
	Ward__Ticket *items = NULL, **ptrs = NULL;
	struct ticket_who who;
	struct ticket_errors e = {0};
	char limit_s[16], cursor_s[24], next[TICKET_CURSOR_LEN + 1] = "", slug[48];
	const char *err = NULL;
	uint8_t dek[CRYPTO_KEY_LEN];
	uint32_t version;
	long long cursor = 0;
	queue_result_t qr;
	PGresult *res = NULL;
	int limit, rows, i, filled = 0;

	ticket_who_of(env, &who);
	if (ticket_prologue(env, &who, reply) < 0)
		return QUEUE_DONE;
	req = ward__ticket_list_request__unpack(NULL, len, payload);
	if (req == NULL)
		return ticket_problem(reply, 400, "Malformed request", NULL, NULL);
	limit = req->limit == 0 ? TICKET_LIST_DEFAULT : req->limit;
	if (limit < 1 || limit > TICKET_LIST_MAX)
		ticket_errors_add(&e, "limit", "must be 1 to 100");
	if (req->status[0] != '\0' && ticket_status_parse(req->status) == TS_INVALID)
		ticket_errors_add(&e, "status", "must be one of open, pending, resolved, closed");
	if (req->assignee[0] != '\0' && strcmp(req->assignee, "none") != 0 &&
	    !ticket_uuid_valid(req->assignee))
		ticket_errors_add(&e, "assignee", "must be a user id or none");
	if (req->requester[0] != '\0' && !ticket_uuid_valid(req->requester))
		ticket_errors_add(&e, "requester", "must be a user id");
	if (req->updated_since[0] != '\0' && !ticket_time_valid(req->updated_since))
		ticket_errors_add(&e, "updated_since", "must be an RFC 3339 date-time");
	if (req->cursor[0] != '\0' && ticket_cursor_decode(req->cursor, 't', &cursor) < 0)
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
	if (ticket_keys_current(d, env->tenant, dek, &version, slug, &err) < 0) {
		qr = ticket_fail(d, reply, "keys", err, error_r);
		goto out;
	}
	crypto_wipe(dek, sizeof dek);
	res = ticket_list_query(d, req, &who, cursor > 0 ? cursor_s : NULL, limit_s, &err);
	if (res == NULL) {
		qr = ticket_fail(d, reply, "list", err, error_r);
		goto out;
	}
	rows = PQntuples(res);
	if (rows > limit) {
		rows = limit;
		if (ticket_cursor_encode('t', strtoll(PQgetvalue(res, rows - 1, 1), NULL, 10),
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
		if (ticket_fill(d, env->tenant, slug, res, i, &items[i], &err) < 0) {
			ticket_clear(&items[i]);
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
		ticket_clear(&items[i]);
	free(items);
	free(ptrs);
	PQclear(res);
	ward__ticket_list_request__free_unpacked(req, NULL);
	return qr;
}

/* ============================== ticket.update =========================== */

/* Append one audit event for a changed field. */
static int ticket_audit_change(struct daemon *d, const Ward__Envelope *env,
			       const struct ticket_who *who, const char *action, const char *target,
			       const char *from, const char *to, const char **error_r)
{
	char detail[200];

	snprintf(detail, sizeof detail, "{\"from\":\"%s\",\"to\":\"%s\"}", from, to);
	return ticket_audit(d, env, who, action, target, detail, error_r);
}

queue_result_t ticket_update(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			     size_t len, struct queue_reply *reply, const char **error_r)
{
	Ward__TicketUpdateRequest *req;
	Ward__Ticket t = WARD__TICKET__INIT;
	struct ticket_who who;
	struct ticket_errors e = {0};
	char old_status[16], old_priority[16], old_assignee[40], old_dept[40], target[64];
	const char *err = NULL, *new_assignee;
	enum ticket_status from, to = TS_INVALID;
	queue_result_t qr;
	PGresult *res;
	int r;

	ticket_who_of(env, &who);
	if (ticket_prologue(env, &who, reply) < 0)
		return QUEUE_DONE;
	req = ward__ticket_update_request__unpack(NULL, len, payload);
	if (req == NULL)
		return ticket_problem(reply, 400, "Malformed request", NULL, NULL);
	if (!ticket_uuid_valid(req->id)) {
		qr = ticket_problem(reply, 404, "Not found", NULL, NULL);
		goto out;
	}
	if (req->status[0] != '\0' && (to = ticket_status_parse(req->status)) == TS_INVALID)
		ticket_errors_add(&e, "status", "must be one of open, pending, resolved, closed");
	if (req->priority[0] != '\0' && !ticket_priority_valid(req->priority))
		ticket_errors_add(&e, "priority", "must be one of low, normal, high, urgent");
	if (req->assignee_id[0] != '\0' && (req->unassign || !ticket_uuid_valid(req->assignee_id)))
		ticket_errors_add(&e, "assignee_id", "must be a user id (without unassign)");
	if (req->department_id[0] != '\0' && !ticket_uuid_valid(req->department_id))
		ticket_errors_add(&e, "department_id", "is not a department id");
	if (e.n > 0) {
		qr = ticket_problem(reply, 422, "Invalid change", NULL, &e);
		goto out;
	}
	if (db_begin(daemon_db(d), env->tenant, &err) < 0) {
		qr = ticket_fail(d, reply, "begin", err, error_r);
		goto out;
	}
	r = db_mark_processed(daemon_db(d), "ticket.processed", env->id, &err);
	if (r < 0) {
		qr = ticket_fail(d, reply, "processed", err, error_r);
		goto out;
	}
	if (r == 0)
		goto answer; /* redelivered: the change is made, answer with the ticket */
	{
		const char *p[1] = {req->id};

		res = db_exec(daemon_db(d),
			      "SELECT status, priority, coalesce(assignee_id::text, ''), "
			      "coalesce(department_id::text, '') FROM ticket.tickets WHERE id = $1 "
			      "FOR UPDATE",
			      1, p, &err);
	}
	if (res == NULL) {
		qr = ticket_fail(d, reply, "read", err, error_r);
		goto out;
	}
	if (PQntuples(res) != 1) {
		PQclear(res);
		db_rollback(daemon_db(d));
		qr = ticket_problem(reply, 404, "Not found", NULL, NULL);
		goto out;
	}
	snprintf(old_status, sizeof old_status, "%s", PQgetvalue(res, 0, 0));
	snprintf(old_priority, sizeof old_priority, "%s", PQgetvalue(res, 0, 1));
	snprintf(old_assignee, sizeof old_assignee, "%s", PQgetvalue(res, 0, 2));
	snprintf(old_dept, sizeof old_dept, "%s", PQgetvalue(res, 0, 3));
	PQclear(res);
	from = ticket_status_parse(old_status);
	if (to != TS_INVALID && !ticket_status_transition_ok(from, to)) {
		char msg[96];

		db_rollback(daemon_db(d));
		snprintf(msg, sizeof msg, "cannot change from %s to %s", old_status, req->status);
		ticket_errors_add(&e, "status", msg);
		qr = ticket_problem(reply, 422, "Invalid change", NULL, &e);
		goto out;
	}
	if (req->department_id[0] != '\0' && strcmp(req->department_id, old_dept) != 0) {
		r = ticket_department_exists(d, req->department_id, &err);
		if (r < 0) {
			qr = ticket_fail(d, reply, "department", err, error_r);
			goto out;
		}
		if (r == 0) {
			db_rollback(daemon_db(d));
			ticket_errors_add(&e, "department_id", "no such department");
			qr = ticket_problem(reply, 422, "Invalid change", NULL, &e);
			goto out;
		}
	}
	if (req->assignee_id[0] != '\0' && strcmp(req->assignee_id, old_assignee) != 0 &&
	    ticket_assignee_check(d, env->tenant, req->assignee_id, reply, "Invalid change", &qr,
				  error_r) < 0)
		goto out;
	new_assignee = req->unassign ? "" : req->assignee_id[0] ? req->assignee_id : old_assignee;
	snprintf(target, sizeof target, "ticket:%s", req->id);
	{
		const char *p[5] = {req->id, to != TS_INVALID ? req->status : old_status,
				    req->priority[0] ? req->priority : old_priority,
				    new_assignee[0] ? new_assignee : NULL,
				    req->department_id[0] ? req->department_id
				    : old_dept[0]	  ? old_dept
							  : NULL};

		res =
		    db_exec(daemon_db(d),
			    "UPDATE ticket.tickets SET status = $2, priority = $3, "
			    "assignee_id = $4::uuid, department_id = $5::uuid, updated_at = now() "
			    "WHERE id = $1",
			    5, p, &err);
		if (res == NULL) {
			qr = ticket_fail(d, reply, "update", err, error_r);
			goto out;
		}
		PQclear(res);
	}
	if ((to != TS_INVALID && to != from &&
	     ticket_audit_change(d, env, &who, "status", target, old_status, req->status, &err) <
		 0) ||
	    (req->priority[0] && strcmp(req->priority, old_priority) != 0 &&
	     ticket_audit_change(d, env, &who, "priority", target, old_priority, req->priority,
				 &err) < 0) ||
	    (strcmp(new_assignee, old_assignee) != 0 &&
	     ticket_audit_change(d, env, &who, "assign", target, old_assignee, new_assignee, &err) <
		 0) ||
	    (req->department_id[0] && strcmp(req->department_id, old_dept) != 0 &&
	     ticket_audit_change(d, env, &who, "department", target, old_dept, req->department_id,
				 &err) < 0)) {
		qr = ticket_fail(d, reply, "audit", err, error_r);
		goto out;
	}
answer:
	r = ticket_load(d, env->tenant, &who, req->id, false, &t, &err);
	if (r < 0) {
		qr = ticket_fail(d, reply, "read back", err, error_r);
		goto out;
	}
	if (r == 0) {
		db_rollback(daemon_db(d));
		qr = ticket_problem(reply, 404, "Not found", NULL, NULL);
		goto out;
	}
	if (db_commit(daemon_db(d), &err) < 0) {
		qr = ticket_fail(d, reply, "commit", err, error_r);
		goto out;
	}
	ticket_after_commit();
	qr = ticket_reply(reply, &t.base, error_r);
out:
	ticket_clear(&t);
	ward__ticket_update_request__free_unpacked(req, NULL);
	return qr;
}
