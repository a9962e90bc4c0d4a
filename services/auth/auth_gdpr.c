/*
 * auth_gdpr — GDPR tools (SPEC §4): users.export gathers everything Ward holds
 * about one person of the tenant as one JSON document; users.erase erases it or
 * makes it irreversibly anonymous. Admins only (method table).
 *
 * ward-auth answers the gateway and asks the other owners for their parts, so
 * every schema keeps one reader: ward-ticket (tickets requested, messages
 * written, attachments uploaded) on q:ticket and ward-audit (events by or about
 * the person) on q:audit, as its own service principal (kind "service", id
 * "auth"; the skeleton accepts that only from the sender "auth").
 *
 * The handlers of the skeleton answer synchronously, so these two calls are
 * blocking requests on a Redis connection of their own (gdpr_call): sealed with
 * the route keys ward-auth already holds, answered on a reply stream of its own
 * (r:auth:gdpr-<random>), bounded by GDPR_CALL_MS each. Exports and erasures are
 * rare admin actions; the rest of ward-auth waits that long at most.
 *
 * Erase order: ticket and audit first (ward-ticket needs the person's email
 * blind index, which ward-auth then replaces), ward-auth last, in one
 * transaction with its audit event ("user"/"erase", target user:<id>, counts
 * only). A failure before that answers 503 and changes nothing in ward-auth;
 * every part is idempotent, so the admin (or a redelivery) simply tries again.
 * The event is recorded once: only when the account was not erased yet.
 */
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auditlog.h"
#include "auth.h"
#include "crypto.h"
#include "gdpr.pb-c.h"
#include "log.h"

#define GDPR_CALL_MS 3000
#define GDPR_SESSIONS_MAX 1000

/* ============================ sub-requests ============================== */

/* Find field name in a stream entry's field/value array. */
static const redisReply *gdpr_field(const redisReply *fields, const char *name)
{
	if (fields == NULL || fields->type != REDIS_REPLY_ARRAY)
		return NULL;
	for (size_t i = 0; i + 1 < fields->elements; i += 2)
		if (fields->element[i]->type == REDIS_REPLY_STRING &&
		    strcmp(fields->element[i]->str, name) == 0)
			return fields->element[i + 1];
	return NULL;
}

/* Send method with payload to q:<service> for the envelope's tenant as the
 * service principal "auth", and wait for its reply (at most GDPR_CALL_MS).
 * *status_r: the reply's status (0 ok, else HTTP-like); *out_r: its opened
 * payload, malloc'd, owned by the caller. 0, or -1 with *error_r (transport). */
static int gdpr_call(struct daemon *d, const Ward__Envelope *req_env, const char *service,
		     const char *method, const uint8_t *payload, size_t len, int *status_r,
		     uint8_t **out_r, size_t *out_len_r, const char **error_r)
{
	const struct daemon_config *c = daemon_config(d);
	Ward__Envelope env = WARD__ENVELOPE__INIT;
	Ward__Principal me = WARD__PRINCIPAL__INIT;
	Ward__Envelope *rep = NULL;
	envelope_keys_t *keys = NULL;
	redisContext *rc = NULL;
	redisReply *r = NULL;
	char id[33], sfx[33], stream[32], reply_to[64];
	uint8_t *buf = NULL;
	size_t blen = 0;
	int64_t deadline = envelope_now_ms() + GDPR_CALL_MS;
	int ret = -1;

	*out_r = NULL;
	*out_len_r = 0;
	*status_r = 0;
	if (crypto_random_id(id) < 0 || crypto_random_id(sfx) < 0) {
		*error_r = "no random bytes";
		return -1;
	}
	snprintf(stream, sizeof stream, "q:%s", service);
	snprintf(reply_to, sizeof reply_to, "r:auth:gdpr-%.16s", sfx);
	keys = envelope_keys_parse(c->route_keys.data, c->route_keys.len, error_r);
	if (keys == NULL)
		return -1;
	rc = auditlog_redis_open(c->redis_host, c->redis_port,
				 c->redis_user != NULL ? c->redis_user : "auth",
				 (const char *)c->redis_password.data, GDPR_CALL_MS + 1000, error_r);
	if (rc == NULL)
		goto out;
	me.kind = "service";
	me.id = "auth";
	me.tenant = req_env->tenant;
	env.version = ENVELOPE_VERSION;
	env.id = id;
	env.tenant = req_env->tenant;
	env.region = c->region;
	env.sender = "auth";
	env.method = (char *)method;
	env.principal = &me;
	env.deadline_ms = deadline;
	env.reply_to = reply_to;
	env.stream = stream;
	env.request_id = req_env->request_id;
	if (envelope_seal(&env, keys, payload, len, error_r) < 0)
		goto out;
	buf = envelope_pack(&env, &blen);
	if (buf == NULL) {
		*error_r = "cannot pack the envelope";
		goto out;
	}
	{
		const char *argv[5] = { "XADD", stream, "*", "e", (const char *)buf };
		size_t lens[5] = { 4, strlen(stream), 1, 1, blen };

		r = redisCommandArgv(rc, 5, argv, lens);
	}
	if (r == NULL || r->type != REDIS_REPLY_STRING) {
		*error_r = r == NULL ? "Redis connection lost" : "Redis refused the request";
		goto out;
	}
	freeReplyObject(r);
	r = NULL;
	/* The stream is ours alone: its first entry is the answer (or a forgery,
	 * which does not open with the route key). */
	for (;;) {
		int64_t left = deadline - envelope_now_ms();
		char block[24];
		const redisReply *e, *fields, *data;
		const char *argv[7];
		size_t lens[7];

		if (left <= 0) {
			*error_r = "timed out";
			goto out;
		}
		snprintf(block, sizeof block, "%lld", (long long)left);
		argv[0] = "XREAD", argv[1] = "COUNT", argv[2] = "1", argv[3] = "BLOCK";
		argv[4] = block, argv[5] = "STREAMS", argv[6] = reply_to;
		for (int i = 0; i < 7; i++)
			lens[i] = strlen(argv[i]);
		{
			const char *av[8] = { argv[0], argv[1], argv[2], argv[3],
					      argv[4], argv[5], argv[6], "0" };
			size_t al[8] = { lens[0], lens[1], lens[2], lens[3],
					 lens[4], lens[5], lens[6], 1 };

			r = redisCommandArgv(rc, 8, av, al);
		}
		if (r == NULL) {
			*error_r = "Redis connection lost";
			goto out;
		}
		if (r->type == REDIS_REPLY_NIL) {
			freeReplyObject(r);
			r = NULL;
			continue;
		}
		/* [[stream, [[id, [field, value, ...]]]]] */
		if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
		    r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements < 2 ||
		    r->element[0]->element[1]->type != REDIS_REPLY_ARRAY ||
		    r->element[0]->element[1]->elements < 1) {
			*error_r = "unexpected XREAD reply";
			goto out;
		}
		e = r->element[0]->element[1]->element[0];
		fields = e->type == REDIS_REPLY_ARRAY && e->elements >= 2 ? e->element[1] : NULL;
		data = gdpr_field(fields, "e");
		if (data == NULL || data->type != REDIS_REPLY_STRING) {
			*error_r = "reply entry without an envelope";
			goto out;
		}
		rep = envelope_unpack((const uint8_t *)data->str, data->len, error_r);
		if (rep == NULL)
			goto out;
		if (strcmp(rep->sender, service) != 0 || strcmp(rep->stream, reply_to) != 0 ||
		    strcmp(rep->correlation_id, id) != 0) {
			*error_r = "reply from the wrong sender or to another request";
			goto out;
		}
		if (envelope_open(rep, keys, out_r, out_len_r, error_r) < 0)
			goto out;
		*status_r = rep->status;
		ret = 0;
		break;
	}
out:
	if (rc != NULL) {
		freeReplyObject(r);
		r = redisCommand(rc, "DEL %s", reply_to);
	}
	freeReplyObject(r);
	if (rep != NULL)
		ward__envelope__free_unpacked(rep, NULL);
	free(buf);
	envelope_clear_payload(&env);
	envelope_keys_free(keys);
	redisFree(rc);
	return ret;
}

/* Ask service for its part of the person's data (method gdpr.export or
 * gdpr.erase). On success *part_r is the opened reply payload (malloc'd). 0 ok,
 * -1 with *error_r. */
static int gdpr_part(struct daemon *d, const Ward__Envelope *env, const char *service,
		     const char *method, const char *user_id, const char *bidx, uint8_t **part_r,
		     size_t *part_len_r, const char **error_r)
{
	Ward__GdprPartRequest req = WARD__GDPR_PART_REQUEST__INIT;
	uint8_t buf[256];
	size_t n;
	int status = 0;

	req.user_id = (char *)user_id;
	req.email_bidx = (char *)bidx;
	if (ward__gdpr_part_request__get_packed_size(&req) > sizeof buf) {
		*error_r = "request too large";
		return -1;
	}
	n = ward__gdpr_part_request__pack(&req, buf);
	if (gdpr_call(d, env, service, method, buf, n, &status, part_r, part_len_r, error_r) < 0)
		return -1;
	if (status != 0) {
		free(*part_r);
		*part_r = NULL;
		*error_r = "the service refused its part";
		log_event(LOG_WARN, "gdpr part refused", LF_STR("service", service),
			  LF_STR("method", method), LF_INT("status", status));
		return -1;
	}
	return 0;
}

/* ============================== reading ================================= */

/* The person as ward-auth knows them: 1 found (fills *u, bidx, erased_at), 0 not
 * in this tenant, -1 error. Inside r's transaction. */
static int gdpr_user(struct auth_req *r, const char *id, Ward__User *u, char bidx[65],
		     char erased_at[40], const char **error_r)
{
	const char *params[1] = { id };
	PGresult *res;
	int ret;

	res = db_exec(r->db,
		      "SELECT " AUTH_USER_COLS ", u.email_bidx, coalesce(to_char(u.erased_at AT "
		      "TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') FROM auth.users u "
		      "WHERE u.id = $1",
		      1, params, error_r);
	if (res == NULL)
		return -1;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return 0;
	}
	ret = auth_user_fill(r, res, 0, 0, u);
	snprintf(bidx, 65, "%s", PQgetvalue(res, 0, AUTH_USER_NCOLS));
	snprintf(erased_at, 40, "%s", PQgetvalue(res, 0, AUTH_USER_NCOLS + 1));
	PQclear(res);
	if (ret < 0) {
		*error_r = "cannot read the user";
		return -1;
	}
	return 1;
}

/* The person's sessions (where and with what they signed in) as a JSON array. */
static json_t *gdpr_sessions(struct auth_req *r, const char *id, const char **error_r)
{
	const char *params[1] = { id };
	PGresult *res;
	json_t *arr;

	res = db_exec(r->db,
		      "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
		      "to_char(last_seen_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ip, "
		      "user_agent, revoked_at IS NOT NULL FROM auth.sessions WHERE user_id = $1 "
		      "ORDER BY created_at DESC LIMIT " "1000",
		      1, params, error_r);
	if (res == NULL)
		return NULL;
	arr = json_array();
	for (int i = 0; arr != NULL && i < PQntuples(res); i++) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b}", "created_at",
				      PQgetvalue(res, i, 0), "last_seen_at", PQgetvalue(res, i, 1),
				      "ip", PQgetvalue(res, i, 2), "user_agent",
				      PQgetvalue(res, i, 3), "revoked",
				      strcmp(PQgetvalue(res, i, 4), "t") == 0);

		if (o == NULL || json_array_append_new(arr, o) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	PQclear(res);
	if (arr == NULL)
		*error_r = "out of memory";
	return arr;
}

/* A service's part (a JSON text) parsed, or NULL. */
static json_t *gdpr_part_json(const uint8_t *data, size_t len)
{
	Ward__GdprPartExport *p = ward__gdpr_part_export__unpack(NULL, len, data);
	json_t *j = NULL;

	if (p != NULL)
		j = json_loads(p->json, JSON_REJECT_DUPLICATES, NULL);
	if (p != NULL)
		ward__gdpr_part_export__free_unpacked(p, NULL);
	return j;
}

/* Is the caller the person themself? (An admin may not erase their own account:
 * the tenant could lose its last admin and the session it acts with.) */
static bool gdpr_is_caller(const Ward__Envelope *env, const char *id)
{
	const Ward__Principal *p = env->principal;

	return p != NULL && p->kind != NULL && strcmp(p->kind, "user") == 0 && p->id != NULL &&
	       strcmp(p->id, id) == 0;
}

/* ============================== export ================================== */

AUTH_HANDLER(auth_user_export)
{
	Ward__GdprUserRequest *req;
	Ward__GdprExportReply out = WARD__GDPR_EXPORT_REPLY__INIT;
	Ward__User u;
	struct auth_req r;
	char bidx[65] = "", erased[40] = "", target[64], fname[64];
	const char *err = NULL;
	uint8_t *tpart = NULL, *apart = NULL;
	size_t tlen = 0, alen = 0;
	json_t *doc = NULL, *sessions = NULL, *tickets = NULL, *events = NULL;
	char *text = NULL;
	queue_result_t ret;
	int found;

	ward__user__init(&u);
	req = ward__gdpr_user_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (!auth_uuid_valid(req->id)) {
		ret = auth_problem(reply, 404, "Not Found", "no such user");
		goto out;
	}
	/* 1. ward-auth's part, read in a transaction of its own. */
	if (auth_begin(&r, d, env, &err) < 0) {
		ret = auth_fail(reply, "export", err);
		goto out;
	}
	found = gdpr_user(&r, req->id, &u, bidx, erased, &err);
	if (found == 1)
		sessions = gdpr_sessions(&r, req->id, &err);
	auth_rollback(&r);
	if (found < 0 || (found == 1 && sessions == NULL)) {
		ret = auth_fail(reply, "export", err);
		goto out;
	}
	if (found == 0) {
		ret = auth_problem(reply, 404, "Not Found", "no such user");
		goto out;
	}
	/* 2. ticket's and audit's parts. */
	if (gdpr_part(d, env, "ticket", "gdpr.export", req->id, bidx, &tpart, &tlen, &err) < 0 ||
	    gdpr_part(d, env, "audit", "gdpr.export", req->id, bidx, &apart, &alen, &err) < 0) {
		ret = auth_fail(reply, "export: gather", err);
		goto out;
	}
	tickets = gdpr_part_json(tpart, tlen);
	events = gdpr_part_json(apart, alen);
	if (tickets == NULL || events == NULL) {
		ret = auth_fail(reply, "export", "a service sent a malformed part");
		goto out;
	}
	doc = json_pack("{s:s, s:s, s:{s:s, s:s, s:s, s:s, s:b, s:b, s:s, s:s*}, s:O, s:O, s:O}",
			"format", "ward-gdpr-export/1", "tenant", env->tenant, "user", "id", u.id,
			"email", u.email != NULL ? u.email : "", "name",
			u.name != NULL ? u.name : "", "role", u.role != NULL ? u.role : "",
			"disabled", u.disabled, "totp_enabled", u.totp_enabled, "created_at",
			u.created_at != NULL ? u.created_at : "", "erased_at",
			erased[0] != '\0' ? erased : NULL, "sessions", sessions, "tickets",
			json_object_get(tickets, "tickets"), "audit_events", events);
	if (doc != NULL && json_object_get(tickets, "messages") != NULL)
		json_object_set(doc, "messages", json_object_get(tickets, "messages"));
	if (doc != NULL && json_object_get(tickets, "attachments") != NULL)
		json_object_set(doc, "attachments", json_object_get(tickets, "attachments"));
	if (doc == NULL || json_object_get(doc, "tickets") == NULL ||
	    (text = json_dumps(doc, JSON_COMPACT | JSON_ENSURE_ASCII)) == NULL) {
		ret = auth_fail(reply, "export", "cannot build the document");
		goto out;
	}
	if (strlen(text) > ENVELOPE_MAX_PAYLOAD - 1024) {
		ret = auth_problem(reply, 413, "Payload Too Large",
				   "the export is larger than one reply can carry");
		goto out;
	}
	/* 3. The export is an audited action (recorded once per request). */
	snprintf(target, sizeof target, "user:%s", req->id);
	if (auth_begin(&r, d, env, &err) < 0) {
		ret = auth_fail(reply, "export", err);
		goto out;
	}
	found = auth_mark(&r, &err);
	if (found < 0 ||
	    (found == 1 &&
	     auth_audit(&r, "user", "export", NULL, target, env->principal->ip, "", &err) < 0) ||
	    auth_commit(&r, &err) < 0) {
		auth_rollback(&r);
		ret = auth_fail(reply, "export", err);
		goto out;
	}
	snprintf(fname, sizeof fname, "user-%s.json", req->id);
	out.content.data = (uint8_t *)text;
	out.content.len = strlen(text);
	out.content_type = "application/json";
	out.filename = fname;
	ret = auth_reply(reply, &out.base);
out:
	if (text != NULL) {
		crypto_wipe(text, strlen(text));
		free(text);
	}
	json_decref(doc);
	json_decref(sessions);
	json_decref(tickets);
	json_decref(events);
	if (tpart != NULL)
		crypto_wipe(tpart, tlen);
	if (apart != NULL)
		crypto_wipe(apart, alen);
	free(tpart);
	free(apart);
	auth_user_clear(&u);
	ward__gdpr_user_request__free_unpacked(req, NULL);
	return ret;
}

/* =============================== erase ================================== */

/* Erase ward-auth's data of the person inside r's transaction: credentials,
 * second factor, sessions, keys and clients they created, the login throttle
 * of their address (acct:<index>); email and name
 * replaced (the email by nothing, its blind index by a random value, so the
 * address is free and matches nothing). */
static int gdpr_erase_auth(struct auth_req *r, const char *id, const char *bidx,
			   const char **error_r)
{
	char actor[64], nobody[65], acct[80];
	uint8_t rnd[32], *email = NULL;
	size_t email_len = 0;
	const char *p1[1] = { id }, *pa[1] = { actor }, *pk[1] = { acct };
	int ret = -1;

	snprintf(actor, sizeof actor, "user:%s", id);
	snprintf(acct, sizeof acct, "acct:%s", bidx); /* the login throttle's key */
	if (crypto_random(rnd, sizeof rnd) < 0) {
		*error_r = "no random bytes";
		return -1;
	}
	crypto_hex(rnd, sizeof rnd, nobody);
	if (auth_seal(r, "auth.users", "email_enc", id, "", 0, &email, &email_len) < 0) {
		*error_r = "cannot seal";
		return -1;
	}
	{
		const char *params[3] = { id, (const char *)email, nobody };
		int lens[3] = { 0, (int)email_len, 0 }, fmts[3] = { 0, 1, 0 };
		PGresult *res = db_exec_bin(
			r->db,
			"UPDATE auth.users SET email_enc = $2, email_bidx = $3, name_enc = NULL, "
			"password_hash = NULL, must_change_password = false, totp_secret_enc = NULL, "
			"totp_enabled = false, totp_last_step = 0, invitation_hash = NULL, "
			"invitation_expires_at = NULL, disabled = true, updated_at = now(), "
			"erased_at = coalesce(erased_at, now()) WHERE id = $1",
			3, params, lens, fmts, error_r);

		if (res == NULL)
			goto out;
		PQclear(res);
	}
	if (auth_exec(r, "DELETE FROM auth.sessions WHERE user_id = $1", 1, p1, error_r) < 0 ||
	    auth_exec(r, "DELETE FROM auth.password_history WHERE user_id = $1", 1, p1, error_r) <
		    0 ||
	    auth_exec(r, "DELETE FROM auth.recovery_codes WHERE user_id = $1", 1, p1, error_r) < 0 ||
	    auth_exec(r, "DELETE FROM auth.api_keys WHERE created_by = $1", 1, pa, error_r) < 0 ||
	    auth_exec(r, "DELETE FROM auth.oauth_clients WHERE created_by = $1", 1, pa, error_r) <
		    0 ||
	    auth_exec(r, "DELETE FROM auth.login_failures WHERE key = $1", 1, pk, error_r) < 0)
		goto out;
	ret = 0;
out:
	free(email);
	return ret;
}

AUTH_HANDLER(auth_user_erase)
{
	Ward__GdprUserRequest *req;
	Ward__GdprEraseReply out = WARD__GDPR_ERASE_REPLY__INIT;
	Ward__GdprPartErase *tp = NULL, *ap = NULL;
	Ward__User u;
	struct auth_req r;
	char bidx[65] = "", erased[40] = "", target[64], detail[256];
	const char *err = NULL;
	uint8_t *tpart = NULL, *apart = NULL;
	size_t tlen = 0, alen = 0;
	queue_result_t ret;
	int found, fresh;

	ward__user__init(&u);
	req = ward__gdpr_user_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (!auth_uuid_valid(req->id)) {
		ret = auth_problem(reply, 404, "Not Found", "no such user");
		goto out;
	}
	if (gdpr_is_caller(env, req->id)) {
		ret = auth_problem(reply, 409, "Conflict", "an admin cannot erase their own account");
		goto out;
	}
	if (auth_begin(&r, d, env, &err) < 0) {
		ret = auth_fail(reply, "erase", err);
		goto out;
	}
	found = gdpr_user(&r, req->id, &u, bidx, erased, &err);
	auth_rollback(&r);
	if (found < 0) {
		ret = auth_fail(reply, "erase", err);
		goto out;
	}
	if (found == 0) {
		ret = auth_problem(reply, 404, "Not Found", "no such user");
		goto out;
	}
	/* An erased account's index is random: tickets opened for the old address
	 * were anonymised by the first erase, so the repeat matches by id only. */
	if (gdpr_part(d, env, "ticket", "gdpr.erase", req->id, erased[0] ? "" : bidx, &tpart,
		      &tlen, &err) < 0 ||
	    gdpr_part(d, env, "audit", "gdpr.erase", req->id, "", &apart, &alen, &err) < 0) {
		ret = auth_fail(reply, "erase: ticket and audit parts", err);
		goto out;
	}
	tp = ward__gdpr_part_erase__unpack(NULL, tlen, tpart);
	ap = ward__gdpr_part_erase__unpack(NULL, alen, apart);
	if (tp == NULL || ap == NULL) {
		ret = auth_fail(reply, "erase", "a service sent a malformed part");
		goto out;
	}
	if (auth_begin(&r, d, env, &err) < 0) {
		ret = auth_fail(reply, "erase", err);
		goto out;
	}
	fresh = auth_mark(&r, &err);
	snprintf(target, sizeof target, "user:%s", req->id);
	snprintf(detail, sizeof detail,
		 "{\"tickets_anonymised\":%lld,\"messages_erased\":%lld,\"attachments_erased\":"
		 "%lld,\"audit_details_erased\":%lld,\"audit_details_kept\":%lld}",
		 (long long)tp->tickets, (long long)tp->messages, (long long)tp->attachments,
		 (long long)ap->audit_details, (long long)ap->audit_details_kept);
	/* The event once: on the first erase of the account, not on a repeat. */
	if (fresh < 0 || gdpr_erase_auth(&r, req->id, bidx, &err) < 0 ||
	    (erased[0] == '\0' &&
	     auth_audit(&r, "user", "erase", NULL, target, env->principal->ip, detail, &err) < 0) ||
	    auth_commit(&r, &err) < 0) {
		auth_rollback(&r);
		ret = auth_fail(reply, "erase", err);
		goto out;
	}
	log_event(LOG_INFO, "user erased", LF_STR("user", req->id),
		  LF_STR("repeat", erased[0] ? "yes" : "no"));
	out.id = req->id;
	out.erased = 1;
	out.already_erased = erased[0] != '\0';
	out.tickets_anonymised = tp->tickets;
	out.messages_erased = tp->messages;
	out.attachments_erased = tp->attachments;
	out.audit_details_erased = ap->audit_details;
	out.audit_details_kept = ap->audit_details_kept;
	ret = auth_reply(reply, &out.base);
out:
	if (tp != NULL)
		ward__gdpr_part_erase__free_unpacked(tp, NULL);
	if (ap != NULL)
		ward__gdpr_part_erase__free_unpacked(ap, NULL);
	free(tpart);
	free(apart);
	auth_user_clear(&u);
	ward__gdpr_user_request__free_unpacked(req, NULL);
	return ret;
}
