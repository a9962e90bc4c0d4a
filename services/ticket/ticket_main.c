/*
 * ward-ticket — tickets, messages, attachments and departments, encrypted per
 * tenant, on q:ticket.
 *
 * Runs under the common skeleton (common/daemon.c): config, log, refusal of root,
 * its own Redis credentials and PostgreSQL role, heartbeat, clean SIGTERM. Its
 * methods are the rows of ticket_methods below: the skeleton checks each row's
 * roles (or an API credential's scope) and the principal's tenant before the
 * handler runs. Every handler works inside db_begin(db, tenant) so row-level
 * security applies, records the envelope id (db_mark_processed) and its audit
 * event in the transaction of its effect, and answers errors as ward.Problem.
 *
 * This file: the service table, its config, and the helpers the methods share.
 *
 * testing.sleep_after_commit_ms (default 0, tests only): after a handler commits
 * its effect, sleep this long before the reply is sent and the message acked.
 * It widens the window between commit and ack so that an end-to-end test can
 * kill -9 the daemon inside it and prove the redelivered message has no second
 * effect. The daemon logs a warning at start when it is set.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auditlog.h"
#include "log.h"
#include "ticket.h"

struct ticket_config ticket_cfg;

#define TC(field) offsetof(struct ticket_config, field)
static const struct conf_entry ticket_conf_entries[] = {
    {"limits.body_max_bytes", CONF_INT, TC(body_max_bytes), false, "262144", 1024, 900000, NULL},
    {"limits.attachment_max_bytes", CONF_INT, TC(attachment_max_bytes), false, "524288", 1024,
     900000, NULL},
    {"keys.cache_seconds", CONF_INT, TC(key_cache_seconds), false, "60", 1, 3600, NULL},
    {"testing.sleep_after_commit_ms", CONF_INT, TC(sleep_after_commit_ms), false, "0", 0, 60000,
     NULL},
    {"domain", CONF_STR, TC(domain), true, NULL, 0, 0, NULL}, /* From and Message-ID of its mail */
};

/* Payload caps per method (the handlers check the configured limits). */
#define TICKET_SMALL (16 * 1024)
#define TICKET_LARGE ENVELOPE_MAX_PAYLOAD

static const struct daemon_method ticket_methods[] = {
    {"ticket.create", ticket_create, "admin agent customer service", TICKET_LARGE, "tickets:write"},
    {"ticket.rekey", ticket_rekey, "operator", TICKET_SMALL, NULL},
    {"ticket.list", ticket_list, "admin agent customer", TICKET_SMALL, "tickets:read"},
    {"ticket.get", ticket_get, "admin agent customer", TICKET_SMALL, "tickets:read"},
    {"ticket.update", ticket_update, "admin agent", TICKET_SMALL, "tickets:write"},
    {"message.create", ticket_message_create, "admin agent customer service", TICKET_LARGE,
     "tickets:write"},
    {"message.list", ticket_message_list, "admin agent customer", TICKET_SMALL, "tickets:read"},
    {"attachment.create", ticket_attachment_create, "admin agent customer service", TICKET_LARGE,
     "tickets:write"},
    {"attachment.list", ticket_attachment_list, "admin agent customer", TICKET_SMALL,
     "tickets:read"},
    {"attachment.get", ticket_attachment_get, "admin agent customer", TICKET_SMALL, "tickets:read"},
    {"department.create", ticket_department_create, "admin", TICKET_SMALL, "departments:write"},
    {"department.list", ticket_department_list, "admin agent", TICKET_SMALL, "tickets:read"},
    {"ticket.ingest_mail", ticket_ingest_mail, "service", TICKET_LARGE, NULL},
    /* GDPR parts, for ward-auth only (ticket_gdpr.c checks the service id) */
    {"gdpr.export", ticket_gdpr_export, "service", TICKET_SMALL, NULL},
    {"gdpr.erase", ticket_gdpr_erase, "service", TICKET_SMALL, NULL},
};

/* ============================== helpers ================================= */

void ticket_who_of(const Ward__Envelope *env, struct ticket_who *who)
{
	const Ward__Principal *p = env->principal;
	const char *kind = p != NULL && p->kind != NULL ? p->kind : "anonymous";

	memset(who, 0, sizeof *who);
	who->id = p != NULL && p->id != NULL ? p->id : "";
	if (strcmp(kind, "user") == 0) {
		who->role = p->role != NULL ? p->role : "";
		who->customer = strcmp(who->role, "customer") == 0;
	} else {
		/* API credentials and services act tenant-wide, like agents. */
		who->role = strcmp(kind, "api") == 0	   ? "api"
			    : strcmp(kind, "service") == 0 ? "service"
							   : kind;
		who->customer = false;
	}
	snprintf(who->actor, sizeof who->actor, "%s:%s", kind, who->id);
}

void ticket_errors_add(struct ticket_errors *e, const char *field, const char *message)
{
	if (e->n >= TICKET_MAX_FIELD_ERRORS)
		return;
	ward__field_error__init(&e->items[e->n]);
	e->items[e->n].field = (char *)field;
	e->items[e->n].message = (char *)message;
	e->ptrs[e->n] = &e->items[e->n];
	e->n++;
}

queue_result_t ticket_problem(struct queue_reply *reply, int status, const char *title,
			      const char *detail, const struct ticket_errors *e)
{
	Ward__Problem pb = WARD__PROBLEM__INIT;
	size_t n;

	pb.title = (char *)title;
	pb.detail = (char *)(detail != NULL ? detail : "");
	if (e != NULL && e->n > 0) {
		pb.n_errors = e->n;
		pb.errors = (Ward__FieldError **)e->ptrs;
	}
	reply->status = status;
	reply->error = title;
	n = ward__problem__get_packed_size(&pb);
	reply->data = malloc(n ? n : 1);
	if (reply->data != NULL)
		reply->len = ward__problem__pack(&pb, reply->data);
	return QUEUE_DONE;
}

queue_result_t ticket_reply(struct queue_reply *reply, const ProtobufCMessage *msg,
			    const char **error_r)
{
	size_t n = protobuf_c_message_get_packed_size(msg);

	reply->data = malloc(n ? n : 1);
	if (reply->data == NULL) {
		*error_r = "out of memory";
		return QUEUE_RETRY;
	}
	reply->len = protobuf_c_message_pack(msg, reply->data);
	reply->status = 0;
	return QUEUE_DONE;
}

queue_result_t ticket_retry(struct daemon *d, const char *what, const char *error,
			    const char **error_r)
{
	db_rollback(daemon_db(d));
	log_event(LOG_WARN, "ticket request failed, will retry", LF_STR("step", what),
		  LF_STR("error", error != NULL ? error : "unknown"));
	*error_r = what;
	return QUEUE_RETRY;
}

queue_result_t ticket_fail(struct daemon *d, struct queue_reply *reply, const char *what,
			   const char *error, const char **error_r)
{
	if (error != ticket_err_integrity)
		return ticket_retry(d, what, error, error_r);
	db_rollback(daemon_db(d));
	log_event(LOG_ERROR, "stored data failed its integrity check", LF_STR("step", what),
		  LF_STR("error", error));
	return ticket_problem(reply, 500, "Internal Server Error",
			      "Stored data failed its integrity check.", NULL);
}

void ticket_after_commit(void)
{
	struct timespec ts;

	if (ticket_cfg.sleep_after_commit_ms <= 0)
		return;
	ts.tv_sec = ticket_cfg.sleep_after_commit_ms / 1000;
	ts.tv_nsec = (long)(ticket_cfg.sleep_after_commit_ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) < 0)
		;
}

int ticket_audit(struct daemon *d, const Ward__Envelope *env, const struct ticket_who *who,
		 const char *action, const char *target, const char *detail_json,
		 const char **error_r)
{
	Ward__AuditEvent ev = WARD__AUDIT_EVENT__INIT;
	const char *dot = strchr(action, '.');
	char type[32];

	/* "department.create" → type department, action create; else type ticket. */
	if (dot != NULL && strncmp(action, "department", (size_t)(dot - action)) == 0) {
		snprintf(type, sizeof type, "department");
		action = dot + 1;
	} else {
		snprintf(type, sizeof type, "ticket");
	}
	ev.tenant_id = env->tenant;
	ev.type = type;
	ev.action = (char *)action;
	ev.actor = (char *)who->actor;
	ev.target = (char *)target;
	ev.ip = env->principal != NULL && env->principal->ip != NULL ? env->principal->ip : "";
	ev.request_id = env->request_id != NULL && *env->request_id ? env->request_id : env->id;
	ev.detail_json = (char *)(detail_json != NULL ? detail_json : "{}");
	return auditlog_record(daemon_db(d), "ticket", &ev, error_r);
}

int ticket_uuid_random(char out[TICKET_UUID_LEN + 1])
{
	uint8_t b[16];

	if (crypto_random(b, sizeof b) < 0)
		return -1;
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	snprintf(out, TICKET_UUID_LEN + 1,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
		 b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
		 b[15]);
	return 0;
}

/* An Idempotency-Key we accept: 1..255 printable ASCII characters. */
static bool ticket_idem_key_ok(const char *k)
{
	size_t n = strlen(k);

	if (n == 0 || n > TICKET_IDEM_KEY_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (k[i] < 0x21 || k[i] > 0x7e)
			return false;
	return true;
}

int ticket_request_seen(struct daemon *d, const Ward__Envelope *env, const struct ticket_who *who,
			const uint8_t *payload, size_t len, char result_id[TICKET_UUID_LEN + 1],
			bool *conflict_r, char request_hash[65], const char **error_r)
{
	db_t *db = daemon_db(d);
	const char *key = env->idempotency_key != NULL ? env->idempotency_key : "";
	PGresult *res;
	int r, found;

	*conflict_r = false;
	result_id[0] = '\0';
	/* A keyed hash: a plain hash of a short body could be guessed from the table. */
	if (ticket_blind(d, env->tenant, "ticket.request", payload, len, request_hash, error_r) < 0)
		return -1;
	r = db_mark_processed(db, "ticket.processed", env->id, error_r);
	if (r < 0)
		return -1;
	if (r == 0) {
		/* Redelivered after its effect committed: answer with the first result. */
		const char *p[2] = {env->tenant, env->id};

		res = db_exec(db,
			      "SELECT result_id FROM ticket.requests "
			      "WHERE tenant_id = $1 AND envelope_id = $2",
			      2, p, error_r);
		if (res == NULL)
			return -1;
		found = PQntuples(res) == 1;
		if (found)
			snprintf(result_id, TICKET_UUID_LEN + 1, "%s", PQgetvalue(res, 0, 0));
		PQclear(res);
		if (!found) {
			*error_r = "processed envelope without a recorded result";
			return -1;
		}
		return 1;
	}
	if (*key == '\0')
		return 0;
	if (!ticket_idem_key_ok(key)) {
		*conflict_r = true;
		return 1;
	}
	{
		const char *p[4] = {env->tenant, who->actor, env->method, key};
		char lockkey[600];
		const char *lp[1] = {lockkey};

		/* Two requests with one key at once: the second waits for the first. */
		snprintf(lockkey, sizeof lockkey, "%s|%s|%s|%s", env->tenant, who->actor,
			 env->method, key);
		res = db_exec(db, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", 1, lp,
			      error_r);
		if (res == NULL)
			return -1;
		PQclear(res);
		res = db_exec(db,
			      "SELECT result_id, request_hash FROM ticket.requests "
			      "WHERE tenant_id = $1 AND principal = $2 AND method = $3 "
			      "AND idem_key = $4",
			      4, p, error_r);
		if (res == NULL)
			return -1;
		found = PQntuples(res) == 1;
		if (found) {
			snprintf(result_id, TICKET_UUID_LEN + 1, "%s", PQgetvalue(res, 0, 0));
			*conflict_r = !crypto_ct_equal(PQgetvalue(res, 0, 1), request_hash, 64);
		}
		PQclear(res);
		return found;
	}
}

int ticket_request_record(struct daemon *d, const Ward__Envelope *env, const struct ticket_who *who,
			  const char *request_hash, const char *result_id, const char **error_r)
{
	const char *key = env->idempotency_key != NULL && *env->idempotency_key != '\0'
			      ? env->idempotency_key
			      : NULL;
	const char *p[7] = {env->tenant,  env->id,     who->actor, key,
			    request_hash, env->method, result_id};

	return db_defer(daemon_db(d),
			"INSERT INTO ticket.requests (tenant_id, envelope_id, principal, idem_key, "
			"request_hash, method, result_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
			7, p, NULL, NULL, error_r);
}

/* ============================== lifecycle =============================== */

static int ticket_init(struct daemon *d, const char **error_r)
{
	if (ticket_cfg.sleep_after_commit_ms > 0)
		log_event(LOG_WARN, "testing.sleep_after_commit_ms is set: for tests only",
			  LF_INT("ms", ticket_cfg.sleep_after_commit_ms));
	if (strlen(ticket_cfg.domain) > 100 ||
	    strspn(ticket_cfg.domain, "abcdefghijklmnopqrstuvwxyz0123456789.-") !=
		strlen(ticket_cfg.domain)) {
		*error_r = "domain: expected a lower-case host name";
		return -1;
	}
	/* agents' public replies, mailed by ward-mail-out (ticket_mailout.c) */
	return ticket_mailout_init(error_r);
}

static void ticket_deinit(struct daemon *d)
{
	ticket_keys_flush();
}

static const struct daemon_service ticket_service = {
    .name = "ticket",
    .conf = ticket_conf_entries,
    .n_conf = sizeof ticket_conf_entries / sizeof ticket_conf_entries[0],
    .conf_target = &ticket_cfg,
    .methods = ticket_methods,
    .n_methods = sizeof ticket_methods / sizeof ticket_methods[0],
    .consumes = true,
    .multi_worker = true, /* handlers are one transaction each, exactly once */
    .generic_plans = true,
    .needs_db = true,
    .forbid_db = false,
    .needs_kek = true,
    .outbox_schema = "ticket", /* audit events: relayed by daemon.c */
    .init = ticket_init,
    .deinit = ticket_deinit,
};

int main(int argc, char **argv)
{
	return daemon_main(argc, argv, &ticket_service);
}
