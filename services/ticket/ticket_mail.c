/*
 * ticket_mail — ticket.ingest_mail: a parsed inbound mail becomes a new ticket or
 * a reply on one, exactly once.
 *
 * Only ward-mail-ingest calls it (principal kind "service", id "mail-ingest"; the
 * skeleton checked that the sender is that service). A mail that names no ticket
 * (no references, no "[#REF]": it can only open one) first takes its ticket
 * number in a short transaction of its own, committed asynchronously, as
 * ticket.create does: the tenant's counter row is then not locked until the
 * mail commits, so one tenant's mails do not queue behind each other's commits
 * (a duplicate or a failed attempt leaves a gap in the numbers). Everything
 * else happens in one transaction of the recipient tenant, in two round trips
 * for most mail (libpq pipelines, db_defer): BEGIN, the Message-ID's lock and
 * one query for the duplicate and the sender; then one statement for ticket,
 * message, Message-ID and participants, the attachments, the audit event and
 * COMMIT, whose results nobody reads (a failure there fails the commit, and the
 * whole mail is retried). A reply reads and locks its ticket in between:
 *
 *   1. Idempotency: the Message-ID (as a keyed blind index) is taken once per
 *      tenant in ticket.mail_ids; a second delivery of the same Message-ID (a
 *      client re-sending, mail-ingest replaying its spool after a crash, a
 *      redelivered envelope) answers "duplicate" with the first ticket.
 *   2. Threading: a Message-ID Ward sent (kind 'out') in In-Reply-To/References
 *      threads unconditionally (it is unguessable); a Message-ID of an earlier
 *      inbound mail (kind 'in') or a "[#REF]" of this tenant in the subject
 *      threads only when the sender is the ticket's requester, one of its mail
 *      participants (senders and CCs of its earlier mail) or an agent or admin
 *      of the tenant: nobody can inject text into someone else's ticket by
 *      guessing a ref. A closed ticket takes no reply: the mail opens a new
 *      ticket.
 *   3. The message, its attachments (type sniffed, name cleaned, sealed), the
 *      Message-ID, the participants and one audit event (tenant, Message-ID,
 *      sender, ticket ref; never the body).
 *
 * Who sent it: the sender's address (blind index, the same keyed index ward-auth
 * keeps in auth.users.email_bidx) is looked up in auth.users, where ward-ticket
 * may read id, email_bidx, role and disabled only (deploy/policy.yaml). An
 * enabled agent or admin writes as that user (author_role agent/admin) and is
 * not recorded as a participant; a customer as that user (and is the requester
 * of a new ticket, requester_id); a disabled account threads into nothing (its
 * mail opens a new ticket).
 * The tenant has no account for the sender and the request does not say
 * sender_checked: 409 and nothing done (no number spent); ward-mail-ingest then
 * asks ward-auth (auth.mail_customer) to create the customer and sends the mail
 * again with sender_checked. Most mail comes from known senders: one hop, not
 * two. With sender_checked and still no account, the address alone stays on the
 * ticket (sealed + blind index).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "log.h"
#include "mail.pb-c.h"
#include "ticket.h"

#define MAIL_MAX_REFS 20
#define MAIL_MAX_CC 20
#define MAIL_MAX_ATTACHMENTS 20
#define MAIL_MSGID_MAX 998

/* A thread candidate found for the mail. */
struct mail_target {
	char id[TICKET_UUID_LEN + 1];
	long long number;
	enum ticket_status status;
};

/* Copy s into out as the inside of a JSON string (quotes, backslashes and
 * control characters escaped), truncated to fit. */
static void mail_json_escape(const char *s, char *out, size_t out_len)
{
	size_t o = 0;

	for (; *s != '\0' && o + 7 < out_len; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			o += (size_t)snprintf(out + o, out_len - o, "\\u%04x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	out[o] = '\0';
}

/* Is the sender (blind index) the requester or a mail participant of ticket id?
 * 1, 0 or -1. */
static int mail_sender_on(struct daemon *d, const char *ticket_id, const char *sender_bidx,
			  const char **error_r)
{
	const char *p[2] = {ticket_id, sender_bidx};
	PGresult *res;
	int found;

	res = db_exec(daemon_db(d),
		      "SELECT 1 FROM ticket.tickets WHERE id = $1 AND requester_email_bidx = $2 "
		      "UNION ALL SELECT 1 FROM ticket.mail_participants "
		      "WHERE ticket_id = $1 AND email_bidx = $2 LIMIT 1",
		      2, p, error_r);
	if (res == NULL)
		return -1;
	found = PQntuples(res) > 0;
	PQclear(res);
	return found;
}

/* The sender's account, if the tenant has one (enabled). */
struct mail_sender {
	char user_id[TICKET_UUID_LEN + 1]; /* "" when unknown */
	char role[16];			   /* admin, agent, customer; "" when unknown */
	bool staff;			   /* an enabled agent or admin of the tenant */
	bool disabled;			   /* a disabled account: its mail never threads */
};

/* Fill t from a (id, number, status) row starting at column c. */
static void mail_target_set_at(struct mail_target *t, PGresult *res, int r, int c)
{
	snprintf(t->id, sizeof t->id, "%s", PQgetvalue(res, r, c));
	t->number = strtoll(PQgetvalue(res, r, c + 1), NULL, 10);
	t->status = ticket_status_parse(PQgetvalue(res, r, c + 2));
}

/* One round trip for what every mail needs to know first: was its Message-ID
 * taken already (1: t and mid filled, the first ticket and message), and who is
 * its sender (s filled from auth.users by blind index; a disabled account is
 * remembered as such and otherwise treated as unknown). 0 (new Message-ID), 1
 * (duplicate) or -1. */
static int mail_lookup(struct daemon *d, const char *msgid_bidx, const char *sender_bidx,
		       struct mail_target *t, char mid[TICKET_UUID_LEN + 1], struct mail_sender *s,
		       const char **error_r)
{
	const char *p[2] = {msgid_bidx, sender_bidx};
	PGresult *res;
	int dup = 0;

	memset(s, 0, sizeof *s);
	res = db_exec(daemon_db(d),
		      "SELECT 'dup', t.id::text, t.number::text, t.status::text, "
		      "coalesce(m.message_id::text, '') "
		      "FROM ticket.mail_ids m JOIN ticket.tickets t ON t.id = m.ticket_id "
		      "WHERE m.message_id_bidx = $1 "
		      "UNION ALL SELECT 'user', id::text, role::text, disabled::text, '' "
		      "FROM auth.users WHERE email_bidx = $2",
		      2, p, error_r);
	if (res == NULL)
		return -1;
	for (int i = 0; i < PQntuples(res); i++) {
		if (strcmp(PQgetvalue(res, i, 0), "dup") == 0) {
			mail_target_set_at(t, res, i, 1);
			snprintf(mid, TICKET_UUID_LEN + 1, "%s", PQgetvalue(res, i, 4));
			dup = 1;
		} else if (strcmp(PQgetvalue(res, i, 3), "true") == 0) {
			s->disabled = true;
		} else {
			snprintf(s->user_id, sizeof s->user_id, "%s", PQgetvalue(res, i, 1));
			snprintf(s->role, sizeof s->role, "%s", PQgetvalue(res, i, 2));
			s->staff = strcmp(s->role, "admin") == 0 || strcmp(s->role, "agent") == 0;
		}
	}
	PQclear(res);
	return dup;
}

/* May this sender write on ticket id? Staff always; others per mail_sender_on. */
static int mail_may_thread(struct daemon *d, const char *ticket_id, const char *sender_bidx,
			   const struct mail_sender *s, const char **error_r)
{
	return s->staff ? 1 : mail_sender_on(d, ticket_id, sender_bidx, error_r);
}

/* Fill t from a (id, number, status) row. */
static void mail_target_set(struct mail_target *t, PGresult *res, int r)
{
	mail_target_set_at(t, res, r, 0);
}

/* The ticket this mail answers, if any: 1 (t filled), 0 (new ticket), -1 error. */
static int mail_thread(struct daemon *d, const Ward__Envelope *env,
		       const Ward__MailIngestRequest *req, const char *slug,
		       const char *sender_bidx, const struct mail_sender *s, struct mail_target *t,
		       const char **error_r)
{
	char arr[MAIL_MAX_REFS * 66 + 4], bidx[65], rslug[48];
	size_t n = 0, o = 0;
	long long number;
	PGresult *res;
	int r;

	/* References: blind indexes as a text[] literal (hex only, nothing to quote). */
	arr[o++] = '{';
	for (size_t i = 0; i < req->n_references && n < MAIL_MAX_REFS; i++) {
		const char *m = req->references[i];

		if (m[0] == '\0' || strlen(m) > MAIL_MSGID_MAX)
			continue;
		if (ticket_blind(d, env->tenant, "ticket.mail_id", m, strlen(m), bidx, error_r) < 0)
			return -1;
		o += (size_t)snprintf(arr + o, sizeof arr - o, "%s%s", n ? "," : "", bidx);
		n++;
	}
	arr[o++] = '}';
	arr[o] = '\0';
	if (n > 0) {
		const char *p[1] = {arr};

		/* Ward's own Message-IDs first, then the most recent ticket. */
		res = db_exec(daemon_db(d),
			      "SELECT t.id, t.number, t.status, m.kind FROM ticket.mail_ids m "
			      "JOIN ticket.tickets t ON t.id = m.ticket_id "
			      "WHERE m.message_id_bidx = ANY ($1::text[]) "
			      "ORDER BY (m.kind = 'out') DESC, t.number DESC",
			      1, p, error_r);
		if (res == NULL)
			return -1;
		for (int i = 0; i < PQntuples(res); i++) {
			mail_target_set(t, res, i);
			if (strcmp(PQgetvalue(res, i, 3), "out") == 0) {
				PQclear(res);
				return 1;
			}
			r = mail_may_thread(d, t->id, sender_bidx, s, error_r);
			if (r != 0) {
				PQclear(res);
				return r;
			}
		}
		PQclear(res);
	}
	if (req->subject_ref[0] == '\0' ||
	    ticket_ref_parse(req->subject_ref, rslug, sizeof rslug, &number) < 0 ||
	    strcmp(rslug, slug) != 0)
		return 0;
	{
		char num[24];
		const char *p[1] = {num};

		snprintf(num, sizeof num, "%lld", number);
		res = db_exec(daemon_db(d),
			      "SELECT id, number, status FROM ticket.tickets WHERE number = $1", 1,
			      p, error_r);
		if (res == NULL)
			return -1;
		if (PQntuples(res) != 1) {
			PQclear(res);
			return 0;
		}
		mail_target_set(t, res, 0);
		PQclear(res);
	}
	return mail_may_thread(d, t->id, sender_bidx, s, error_r);
}

/* Check what mail-ingest sent; field errors into e. email: the sender, normalised. */
static void mail_check(const Ward__MailIngestRequest *req, char *email, struct ticket_errors *e)
{
	size_t chars;

	if (req->message_id[0] == '\0' || strlen(req->message_id) > MAIL_MSGID_MAX)
		ticket_errors_add(e, "message_id", "is required (at most 998 bytes)");
	if (!ticket_email_normalize(req->from_email, email, TICKET_EMAIL_MAX + 1))
		ticket_errors_add(e, "from_email", "is not an email address");
	if (req->subject[0] == '\0' ||
	    !ticket_text_ok(req->subject, strlen(req->subject), true, &chars) ||
	    chars > TICKET_SUBJECT_MAX_CHARS)
		ticket_errors_add(e, "subject", "must be one line of 1 to 255 characters");
	if (req->from_name[0] != '\0' &&
	    (!ticket_text_ok(req->from_name, strlen(req->from_name), true, &chars) ||
	     chars > TICKET_NAME_MAX_CHARS))
		ticket_errors_add(e, "from_name", "must be one line of at most 200 characters");
	if (req->body[0] == '\0' || strlen(req->body) > (size_t)ticket_cfg.body_max_bytes ||
	    !ticket_text_ok(req->body, strlen(req->body), false, NULL))
		ticket_errors_add(e, "body", "must be UTF-8 text within the body limit");
	if (req->n_attachments > MAIL_MAX_ATTACHMENTS)
		ticket_errors_add(e, "attachments", "too many");
	for (size_t i = 0; i < req->n_attachments; i++) {
		const Ward__MailAttachment *a = req->attachments[i];

		if (a->content.len == 0 || a->content.len > (size_t)ticket_cfg.attachment_max_bytes ||
		    !ticket_utf8_valid(a->filename, strlen(a->filename), NULL)) {
			ticket_errors_add(e, "attachments", "empty, too large or a bad name");
			break;
		}
	}
}

/* Queue one INSERT/UPDATE (binary-capable parameters) whose result nobody
 * reads: it travels with COMMIT in one round trip (db_defer), and its failure
 * is the commit's (the whole mail is retried). 0 or -1. */
static int mail_exec(struct daemon *d, const char *sql, int n, const char *const *p,
		     const int *lens, const int *fmts, const char **error_r)
{
	return db_defer(daemon_db(d), sql, n, p, lens, fmts, error_r);
}

/* The per-tenant counter: the next ticket number. */
#define MAIL_COUNTER_SQL                                                                           \
	"INSERT INTO ticket.counters (tenant_id, last_number) VALUES ($1, 1001) "                  \
	"ON CONFLICT (tenant_id) DO UPDATE "                                                       \
	"SET last_number = ticket.counters.last_number + 1 RETURNING last_number"

/* A ticket number in a short transaction of its own (begun by the caller with
 * db_begin_async: its commit does not wait for the WAL flush), as ticket.create
 * takes its numbers: the tenant's counter row stays locked for one statement,
 * not until the mail's transaction commits, so the mails of one tenant do not
 * queue behind each other's commits. The mail's synchronous commit, later in
 * the WAL, makes the counter durable with it. Unless checked, only when the
 * tenant has an account for the sender (else mail-ingest asks ward-auth first:
 * no number is spent). A duplicate or a failed attempt leaves a gap in the
 * numbers. 1 (a number), 0 (an unknown sender) or -1; the transaction is over. */
static int mail_number_async(struct daemon *d, const char *tenant, const char *sender_bidx,
			     bool checked, long long *number_r, const char **error_r)
{
	const char *p[3] = {tenant, checked ? "t" : "f", sender_bidx};
	PGresult *res;
	int r;

	res = db_exec_commit(daemon_db(d),
			     "INSERT INTO ticket.counters (tenant_id, last_number) "
			     "SELECT $1::uuid, 1001 WHERE $2::boolean OR EXISTS "
			     "(SELECT 1 FROM auth.users WHERE email_bidx = $3) "
			     "ON CONFLICT (tenant_id) DO UPDATE "
			     "SET last_number = ticket.counters.last_number + 1 RETURNING last_number",
			     3, p, error_r);
	if (res == NULL)
		return -1;
	r = PQntuples(res) == 1;
	if (r)
		*number_r = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return r;
}

/* The tenant has no account for the sender, and mail-ingest has not asked
 * ward-auth for one yet: nothing done; it asks, then sends the mail again. */
static queue_result_t mail_unknown_sender(struct queue_reply *reply)
{
	return ticket_problem(reply, 409, "Unknown sender",
			      "ask auth.mail_customer, then send again with sender_checked", NULL);
}

/* The next number inside the mail's transaction: for a mail that named a
 * ticket (references, "[#REF]") and threads into none, whose number was not
 * taken beforehand. 0 or -1. */
static int mail_number_here(struct daemon *d, const char *tenant, long long *number_r,
			    const char **error_r)
{
	const char *p[1] = {tenant};
	PGresult *res = db_exec(daemon_db(d), MAIL_COUNTER_SQL, 1, p, error_r);

	if (res == NULL)
		return -1;
	*number_r = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return 0;
}

/* The mail's participants, who may later write "[#REF]": the sender (unless
 * staff: they thread by their role while their account is enabled) and the CCs,
 * as a text[] literal of blind indexes (hex: nothing to quote). 0 or -1. */
static int mail_participants(struct daemon *d, const Ward__Envelope *env,
			     const Ward__MailIngestRequest *req, const char *sender_bidx,
			     const struct mail_sender *s, char *arr, size_t arr_len,
			     const char **error_r)
{
	size_t o = 0, n = 0;

	arr[o++] = '{';
	for (size_t i = s->staff ? 1 : 0; i <= req->n_cc && i <= MAIL_MAX_CC; i++) {
		char email[TICKET_EMAIL_MAX + 1], bidx[65];
		const char *who_bidx = sender_bidx;

		if (i > 0) {
			if (!ticket_email_normalize(req->cc[i - 1], email, sizeof email))
				continue;
			if (ticket_blind(d, env->tenant, "auth.users.email", email, strlen(email),
					 bidx, error_r) < 0)
				return -1;
			who_bidx = bidx;
		}
		if (o + 66 + 2 > arr_len) {
			*error_r = "too many participants";
			return -1;
		}
		o += (size_t)snprintf(arr + o, arr_len - o, "%s%s", n ? "," : "", who_bidx);
		n++;
	}
	arr[o++] = '}';
	arr[o] = '\0';
	return 0;
}

/* Insert the mail's attachments (type sniffed, name cleaned, sealed) on message
 * mid of ticket t. 0 or -1. */
static int mail_attachments(struct daemon *d, const Ward__Envelope *env,
			    const Ward__MailIngestRequest *req, const struct mail_target *t,
			    const char *mid, const char *actor, const char **error_r)
{
	for (size_t i = 0; i < req->n_attachments; i++) {
		const Ward__MailAttachment *a = req->attachments[i];
		char aid[TICKET_UUID_LEN + 1], name[TICKET_FILENAME_MAX + 1], size_s[24];
		uint8_t *sname = NULL, *sc = NULL;
		size_t sname_len = 0, sc_len = 0;
		int r;

		ticket_filename_clean(a->filename, name);
		snprintf(size_s, sizeof size_s, "%zu", a->content.len);
		if (ticket_uuid_random(aid) < 0 ||
		    ticket_seal(d, env->tenant, "ticket.attachments", "filename_enc", aid, name,
				strlen(name), &sname, &sname_len, error_r) < 0 ||
		    ticket_seal(d, env->tenant, "ticket.attachments", "content_enc", aid,
				a->content.data, a->content.len, &sc, &sc_len, error_r) < 0) {
			free(sname);
			free(sc);
			return -1;
		}
		{
			const char *p[9] = {aid,
					    env->tenant,
					    t->id,
					    mid,
					    (const char *)sname,
					    ticket_sniff(a->content.data, a->content.len),
					    size_s,
					    (const char *)sc,
					    actor};
			int lens[9] = {0, 0, 0, 0, (int)sname_len, 0, 0, (int)sc_len, 0};
			int fmts[9] = {0, 0, 0, 0, 1, 0, 0, 1, 0};

			r = mail_exec(d,
				      "INSERT INTO ticket.attachments (id, tenant_id, ticket_id, "
				      "message_id, filename_enc, content_type, size, content_enc, "
				      "created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
				      9, p, lens, fmts, error_r);
		}
		free(sname);
		free(sc);
		if (r < 0)
			return -1;
	}
	return 0;
}

/* The ticket's new message, its Message-ID and its participants, in one
 * statement: $1 ticket, $2 tenant, $3 message, $4 author, $5 author role, $6
 * sealed body, $7 Message-ID blind index, $8 participants (text[]). */
#define MAIL_MESSAGE_CTES                                                                          \
	"m AS (INSERT INTO ticket.messages (id, tenant_id, ticket_id, author_id, author_role, "    \
	"internal, body_enc) VALUES ($3, $2, $1, $4, $5, false, $6)), "                             \
	"i AS (INSERT INTO ticket.mail_ids (tenant_id, message_id_bidx, kind, ticket_id, "         \
	"message_id) VALUES ($2, $7, 'in', $1, $3)) "                                               \
	"INSERT INTO ticket.mail_participants (tenant_id, ticket_id, email_bidx) "                 \
	"SELECT DISTINCT $2::uuid, $1::uuid, b FROM unnest($8::text[]) b ON CONFLICT DO NOTHING"

/* A new ticket (created: sealed subject and requester; t->number taken) or the
 * reply on ticket t (its status and updated_at), with the message, the
 * Message-ID and the participants: one statement, one round trip; then the
 * attachments. 0 or -1. */
static int mail_write(struct daemon *d, const Ward__Envelope *env,
		      const Ward__MailIngestRequest *req, const struct mail_target *t, bool created,
		      const char *email, const char *mid, const char *msgid_bidx,
		      const char *sender_bidx, const struct mail_sender *s, const char *actor,
		      const char **error_r)
{
	uint8_t *body = NULL, *subj = NULL, *em = NULL, *name = NULL;
	size_t body_len = 0, subj_len = 0, em_len = 0, name_len = 0;
	char author[40], num[24], parts[(MAIL_MAX_CC + 1) * 66 + 4];
	int rc = -1;

	/* The author is the sender's account, or (none) its address: a prefix of its
	 * index. A mail without an account is a customer's. */
	if (s->user_id[0] != '\0')
		snprintf(author, sizeof author, "%s", s->user_id);
	else
		snprintf(author, sizeof author, "mail:%.16s", sender_bidx);
	snprintf(num, sizeof num, "%lld", t->number);
	if (mail_participants(d, env, req, sender_bidx, s, parts, sizeof parts, error_r) < 0 ||
	    ticket_seal(d, env->tenant, "ticket.messages", "body_enc", mid, req->body,
			strlen(req->body), &body, &body_len, error_r) < 0)
		goto out;
	if (created &&
	    (ticket_seal(d, env->tenant, "ticket.tickets", "subject_enc", t->id, req->subject,
			 strlen(req->subject), &subj, &subj_len, error_r) < 0 ||
	     ticket_seal(d, env->tenant, "ticket.tickets", "requester_email_enc", t->id, email,
			 strlen(email), &em, &em_len, error_r) < 0 ||
	     (req->from_name[0] != '\0' &&
	      ticket_seal(d, env->tenant, "ticket.tickets", "requester_name_enc", t->id,
			  req->from_name, strlen(req->from_name), &name, &name_len, error_r) < 0)))
		goto out;
	{
		/* a customer's account is the requester; staff writing in keep the address */
		const char *requester = strcmp(s->role, "customer") == 0 ? s->user_id : NULL;
		const char *p[15] = {t->id,
				     env->tenant,
				     mid,
				     author,
				     s->role[0] != '\0' ? s->role : "customer",
				     (const char *)body,
				     msgid_bidx,
				     parts,
				     created ? num : ticket_status_name(t->status),
				     (const char *)subj,
				     (const char *)em,
				     sender_bidx,
				     (const char *)name,
				     actor,
				     requester};
		int lens[15] = {0, 0, 0, 0, 0, (int)body_len, 0, 0,
				0, (int)subj_len, (int)em_len, 0, (int)name_len, 0, 0};
		int fmts[15] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0};

		if (created)
			rc = mail_exec(d,
				       "WITH t AS (INSERT INTO ticket.tickets (id, tenant_id, number, "
				       "subject_enc, requester_email_enc, requester_email_bidx, "
				       "requester_name_enc, created_by, requester_id) VALUES ($1, $2, "
				       "$9, $10, $11, $12, $13, $14, $15)), " MAIL_MESSAGE_CTES,
				       15, p, lens, fmts, error_r);
		else
			rc = mail_exec(d,
				       "WITH t AS (UPDATE ticket.tickets SET status = $9, "
				       "updated_at = now() WHERE id = $1), " MAIL_MESSAGE_CTES,
				       9, p, lens, fmts, error_r);
	}
	if (rc == 0)
		rc = mail_attachments(d, env, req, t, mid, actor, error_r);
out:
	free(body);
	free(subj);
	free(em);
	free(name);
	return rc;
}

/* Answer with the ticket, its ref and the message. */
static queue_result_t mail_answer(struct queue_reply *reply, const char *slug,
				  const struct mail_target *t, const char *mid, bool created,
				  bool duplicate, const char **error_r)
{
	Ward__MailIngestReply out = WARD__MAIL_INGEST_REPLY__INIT;
	char ref[96];

	if (ticket_ref_format(slug, t->number, ref, sizeof ref) < 0)
		snprintf(ref, sizeof ref, "%lld", t->number);
	out.ticket_id = (char *)t->id;
	out.ref = ref;
	out.message_id = (char *)mid;
	out.created = created;
	out.duplicate = duplicate;
	return ticket_reply(reply, &out.base, error_r);
}

queue_result_t ticket_ingest_mail(struct daemon *d, const Ward__Envelope *env,
				  const uint8_t *payload, size_t len, struct queue_reply *reply,
				  const char **error_r)
{
	Ward__MailIngestRequest *req = NULL;
	struct ticket_who who;
	struct ticket_errors e = {0};
	struct mail_target t;
	struct mail_sender sender;
	uint8_t dek[CRYPTO_KEY_LEN];
	uint32_t version;
	char email[TICKET_EMAIL_MAX + 1], slug[48], msgid_bidx[65], sender_bidx[65];
	char mid[TICKET_UUID_LEN + 1] = "", target[64], ref[96];
	char detail[2048], jmsgid[700], jfrom[400];
	const char *err = NULL;
	bool created = false, likely_new;
	long long number = 0;
	queue_result_t qr;
	int r;

	memset(&t, 0, sizeof t);
	ticket_who_of(env, &who);
	if (strcmp(who.role, "service") != 0 || strcmp(who.id, "mail-ingest") != 0)
		return ticket_problem(reply, 403, "Forbidden", "ticket.ingest_mail is for mail-ingest",
				      NULL);
	if (!ticket_uuid_valid(env->tenant))
		return ticket_problem(reply, 400, "Bad request", "no tenant", NULL);
	req = ward__mail_ingest_request__unpack(NULL, len, payload);
	if (req == NULL)
		return ticket_problem(reply, 400, "Malformed request", NULL, NULL);
	mail_check(req, email, &e);
	if (e.n > 0) {
		qr = ticket_problem(reply, 422, "Invalid mail", NULL, &e);
		goto out;
	}
	/* A mail that names no ticket (no references, no "[#REF]") can only open one
	 * (or be a duplicate): its number first, in a transaction of its own. */
	likely_new = req->n_references == 0 && req->subject_ref[0] == '\0';
	if ((likely_new ? db_begin_async(daemon_db(d), env->tenant, &err)
			: db_begin(daemon_db(d), env->tenant, &err)) < 0) {
		qr = ticket_retry(d, "begin", err, error_r);
		goto out;
	}
	if (ticket_keys_current(d, env->tenant, dek, &version, slug, &err) < 0 ||
	    ticket_blind(d, env->tenant, "ticket.mail_id", req->message_id,
			 strlen(req->message_id), msgid_bidx, &err) < 0 ||
	    ticket_blind(d, env->tenant, "auth.users.email", email, strlen(email), sender_bidx,
			 &err) < 0) {
		crypto_wipe(dek, sizeof dek);
		qr = ticket_retry(d, "keys", err, error_r);
		goto out;
	}
	crypto_wipe(dek, sizeof dek);
	if (likely_new) {
		r = mail_number_async(d, env->tenant, sender_bidx, req->sender_checked, &number,
				      &err);
		if (r < 0) {
			qr = ticket_retry(d, "number", err, error_r);
			goto out;
		}
		if (r == 0) {
			qr = mail_unknown_sender(reply);
			goto out;
		}
		if (db_begin(daemon_db(d), env->tenant, &err) < 0) {
			qr = ticket_retry(d, "begin", err, error_r);
			goto out;
		}
	}
	/* One Message-ID at a time per tenant: a concurrent duplicate waits, then sees
	 * it. Sent with BEGIN and the lookup, in the transaction's first round trip:
	 * the statements of a pipeline run in order, and the lookup, a statement of
	 * its own, takes its snapshot once the lock is held. */
	{
		char lockkey[100];
		const char *p[1] = {lockkey};

		snprintf(lockkey, sizeof lockkey, "mail|%s", msgid_bidx);
		if (db_defer(daemon_db(d), "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
			     1, p, NULL, NULL, &err) < 0) {
			qr = ticket_retry(d, "lock", err, error_r);
			goto out;
		}
	}
	r = mail_lookup(d, msgid_bidx, sender_bidx, &t, mid, &sender, &err);
	if (r < 0) {
		qr = ticket_retry(d, "lookup", err, error_r);
		goto out;
	}
	if (r == 1) {
		if (db_commit(daemon_db(d), &err) < 0) {
			qr = ticket_retry(d, "commit", err, error_r);
			goto out;
		}
		qr = mail_answer(reply, slug, &t, mid, false, true, error_r);
		goto out;
	}
	if (!req->sender_checked && sender.user_id[0] == '\0' && !sender.disabled) {
		db_rollback(daemon_db(d));
		qr = mail_unknown_sender(reply);
		goto out;
	}
	/* a disabled account (an agent who left, a blocked customer) writes into no
	 * existing ticket, whatever it quotes: its mail opens a new one */
	r = sender.disabled || number > 0
		? 0
		: mail_thread(d, env, req, slug, sender_bidx, &sender, &t, &err);
	if (r < 0) {
		qr = ticket_retry(d, "thread", err, error_r);
		goto out;
	}
	if (r == 1) {
		/* Lock the ticket: messages are numbered and the status moves in order. */
		enum ticket_status to;

		r = ticket_visible(d, env->tenant, &who, t.id, true, &t.status, &err);
		if (r < 0) {
			qr = ticket_retry(d, "ticket", err, error_r);
			goto out;
		}
		if (r == 0 || ticket_status_after_reply(t.status, !sender.staff, &to) < 0)
			r = 0; /* gone or closed: a new ticket */
		else
			t.status = to;
	}
	if (r == 0) {
		created = true;
		memset(&t, 0, sizeof t);
		t.status = TS_OPEN;
		if (number == 0 && mail_number_here(d, env->tenant, &number, &err) < 0) {
			qr = ticket_retry(d, "number", err, error_r);
			goto out;
		}
		t.number = number;
		if (ticket_uuid_random(t.id) < 0) {
			qr = ticket_retry(d, "insert ticket", "no random bytes", error_r);
			goto out;
		}
	}
	if (ticket_uuid_random(mid) < 0 ||
	    mail_write(d, env, req, &t, created, email, mid, msgid_bidx, sender_bidx, &sender,
		       who.actor, &err) < 0) {
		qr = ticket_retry(d, "store", err != NULL ? err : "no random bytes", error_r);
		goto out;
	}
	if (ticket_ref_format(slug, t.number, ref, sizeof ref) < 0)
		snprintf(ref, sizeof ref, "%lld", t.number);
	mail_json_escape(req->message_id, jmsgid, sizeof jmsgid);
	mail_json_escape(email, jfrom, sizeof jfrom);
	snprintf(target, sizeof target, "ticket:%s", t.id);
	snprintf(detail, sizeof detail,
		 "{\"ref\":\"%s\",\"message\":\"%s\",\"message_id\":\"%s\",\"from\":\"%s\","
		 "\"created\":%s,\"attachments\":%zu,\"sender_role\":\"%s\"}",
		 ref, mid, jmsgid, jfrom, created ? "true" : "false", req->n_attachments,
		 sender.role[0] != '\0' ? sender.role : "unknown");
	if (ticket_audit(d, env, &who, "mail.ingest", target, detail, &err) < 0) {
		qr = ticket_retry(d, "audit", err, error_r);
		goto out;
	}
	if (db_commit(daemon_db(d), &err) < 0) {
		qr = ticket_retry(d, "commit", err, error_r);
		goto out;
	}
	ticket_after_commit();
	log_event(LOG_INFO, "mail ingested", LF_STR("tenant", env->tenant), LF_STR("ticket", t.id),
		  LF_STR("ref", ref), LF_INT("created", created));
	qr = mail_answer(reply, slug, &t, mid, created, false, error_r);
out:
	crypto_wipe(email, sizeof email);
	ward__mail_ingest_request__free_unpacked(req, NULL);
	return qr;
}
