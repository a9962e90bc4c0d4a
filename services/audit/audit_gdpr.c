/*
 * audit_gdpr — ward-audit's part of a GDPR export or erase (proto/gdpr.proto),
 * asked by ward-auth only (principal kind "service", id "auth").
 *
 * The person's events are those of the envelope's tenant whose actor or target
 * is "user:<id>".
 *
 * gdpr.export: those events with their details decrypted, as a JSON array.
 *
 * gdpr.erase: deletes their details from audit.event_details and records the
 * erasure (audit.erasures: the pseudonymous subject and a count, nothing else).
 * The chain keeps each detail's digest (version 2 encoding, audit_chain.c), so
 * verify still passes. Events older than 060_gdpr.sql (version 1) hash the
 * detail itself: theirs cannot go without breaking the chain and are counted as
 * kept. One transaction with the envelope id: a redelivery changes nothing.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "gdpr.pb-c.h"
#include "log.h"

#define GDPR_EVENTS_MAX 20000

/* Check the caller and unpack: 0 ok, else answered. */
static int gdpr_request(const Ward__Envelope *env, const uint8_t *payload, size_t len,
			Ward__GdprPartRequest **req_r, char subject[48], struct queue_reply *reply,
			queue_result_t *ret)
{
	const Ward__Principal *p = env->principal;
	Ward__GdprPartRequest *req;

	*req_r = NULL;
	if (p == NULL || p->kind == NULL || strcmp(p->kind, "service") != 0 || p->id == NULL ||
	    strcmp(p->id, "auth") != 0) {
		*ret = audit_problem(reply, 403, "Forbidden", "for ward-auth only");
		return -1;
	}
	if (env->tenant == NULL || env->tenant[0] == '\0' || !audit_tenant_ok(env->tenant)) {
		*ret = audit_problem(reply, 400, "Bad Request", "a tenant is required");
		return -1;
	}
	req = ward__gdpr_part_request__unpack(NULL, len, payload);
	/* user_id: a canonical uuid (the same check as a tenant id). */
	if (req == NULL || req->user_id[0] == '\0' || !audit_tenant_ok(req->user_id)) {
		if (req != NULL)
			ward__gdpr_part_request__free_unpacked(req, NULL);
		*ret = audit_problem(reply, 400, "Bad Request", "malformed part request");
		return -1;
	}
	snprintf(subject, 48, "user:%s", req->user_id);
	*req_r = req;
	return 0;
}

queue_result_t audit_gdpr_export(struct daemon *d, const Ward__Envelope *env,
				 const uint8_t *payload, size_t len, struct queue_reply *reply,
				 const char **error_r)
{
	Ward__GdprPartRequest *req;
	Ward__GdprPartExport out = WARD__GDPR_PART_EXPORT__INIT;
	char subject[48];
	const char *err = NULL, *params[2];
	PGresult *res = NULL;
	json_t *arr = NULL;
	char *text = NULL;
	queue_result_t ret;

	if (gdpr_request(env, payload, len, &req, subject, reply, &ret) < 0)
		return ret;
	params[0] = env->tenant, params[1] = subject;
	if (db_begin(daemon_db(d), env->tenant, &err) < 0) {
		*error_r = err;
		ret = QUEUE_RETRY;
		goto out;
	}
	res = db_exec(daemon_db(d),
		      "SELECT e.id::text, to_char(e.at AT TIME ZONE 'UTC', "
		      "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), e.type, e.action, e.actor, "
		      "coalesce(e.target, ''), coalesce(e.ip, ''), coalesce(e.detail_enc, (SELECT "
		      "x.detail_enc FROM audit.event_details x WHERE x.event_id = e.id)) FROM "
		      "audit.events e WHERE e.tenant_id = $1::uuid AND (e.actor = $2 OR e.target = "
		      "$2) ORDER BY e.seq LIMIT " "20000",
		      2, params, &err);
	if (res == NULL) {
		db_rollback(daemon_db(d));
		*error_r = err;
		ret = QUEUE_RETRY;
		goto out;
	}
	arr = json_array();
	for (int i = 0; arr != NULL && i < PQntuples(res); i++) {
		const char *uuid = PQgetvalue(res, i, 0);
		char *detail = NULL;
		json_t *o;

		if (!PQgetisnull(res, i, 7)) {
			size_t n = 0;
			unsigned char *raw =
				PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, 7), &n);

			if (raw == NULL ||
			    audit_detail_open(d, env->tenant, uuid, raw, n, &detail, &err) < 0)
				detail = NULL;
			PQfreemem(raw);
			if (detail == NULL)
				detail = strdup("{\"error\":\"detail unavailable\"}");
		}
		o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "id", uuid, "at",
			      PQgetvalue(res, i, 1), "type", PQgetvalue(res, i, 2), "action",
			      PQgetvalue(res, i, 3), "actor", PQgetvalue(res, i, 4), "target",
			      PQgetvalue(res, i, 5), "ip", PQgetvalue(res, i, 6), "detail",
			      detail != NULL ? detail : "");
		if (detail != NULL) {
			crypto_wipe(detail, strlen(detail));
			free(detail);
		}
		if (o == NULL || json_array_append_new(arr, o) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	db_rollback(daemon_db(d)); /* read-only */
	if (arr == NULL || (text = json_dumps(arr, JSON_COMPACT | JSON_ENSURE_ASCII)) == NULL) {
		ret = audit_problem(reply, 503, "Service Unavailable", "out of memory");
		goto out;
	}
	out.json = text;
	reply->len = ward__gdpr_part_export__get_packed_size(&out);
	reply->data = malloc(reply->len ? reply->len : 1);
	if (reply->data == NULL) {
		*error_r = "out of memory";
		ret = QUEUE_RETRY;
		goto out;
	}
	ward__gdpr_part_export__pack(&out, reply->data);
	ret = QUEUE_DONE;
out:
	if (res != NULL)
		PQclear(res);
	if (text != NULL) {
		crypto_wipe(text, strlen(text));
		free(text);
	}
	json_decref(arr);
	ward__gdpr_part_request__free_unpacked(req, NULL);
	return ret;
}

queue_result_t audit_gdpr_erase(struct daemon *d, const Ward__Envelope *env,
				const uint8_t *payload, size_t len, struct queue_reply *reply,
				const char **error_r)
{
	Ward__GdprPartRequest *req;
	Ward__GdprPartErase out = WARD__GDPR_PART_ERASE__INIT;
	db_t *db = daemon_db(d);
	char subject[48], count[24];
	const char *err = NULL, *params[3];
	PGresult *res;
	queue_result_t ret = QUEUE_RETRY;
	int fresh;

	if (gdpr_request(env, payload, len, &req, subject, reply, &ret) < 0)
		return ret;
	params[0] = env->tenant, params[1] = subject, params[2] = count;
	if (db_begin(db, env->tenant, &err) < 0)
		goto fail;
	fresh = db_mark_processed(db, "audit.processed", env->id, &err);
	if (fresh < 0)
		goto fail;
	if (fresh == 1) {
		res = db_exec(db,
			      "DELETE FROM audit.event_details x USING audit.events e WHERE "
			      "x.event_id = e.id AND e.tenant_id = $1::uuid AND (e.actor = $2 OR "
			      "e.target = $2)",
			      2, params, &err);
		if (res == NULL)
			goto fail;
		out.audit_details = atoll(PQcmdTuples(res));
		PQclear(res);
		res = db_exec(db,
			      "SELECT count(*) FROM audit.events e WHERE e.tenant_id = $1::uuid AND "
			      "(e.actor = $2 OR e.target = $2) AND e.hash_version = 1 AND "
			      "e.detail_enc IS NOT NULL",
			      2, params, &err);
		if (res == NULL)
			goto fail;
		out.audit_details_kept = atoll(PQgetvalue(res, 0, 0));
		PQclear(res);
		snprintf(count, sizeof count, "%lld", (long long)out.audit_details);
		res = db_exec(db,
			      "INSERT INTO audit.erasures (tenant_id, subject, details) VALUES "
			      "($1::uuid, $2, $3::bigint)",
			      3, params, &err);
		if (res == NULL)
			goto fail;
		PQclear(res);
	}
	if (db_commit(db, &err) < 0)
		goto fail;
	log_event(LOG_INFO, "gdpr erase (audit part)", LF_STR("subject", subject),
		  LF_INT("details", out.audit_details), LF_INT("kept", out.audit_details_kept));
	reply->len = ward__gdpr_part_erase__get_packed_size(&out);
	reply->data = malloc(reply->len ? reply->len : 1);
	if (reply->data == NULL) {
		/* Committed: the redelivery finds it processed and answers zeros. */
		*error_r = "out of memory";
		ret = QUEUE_RETRY;
		goto out;
	}
	ward__gdpr_part_erase__pack(&out, reply->data);
	ret = QUEUE_DONE;
	goto out;
fail:
	db_rollback(db);
	log_event(LOG_WARN, "gdpr erase (audit part) failed", LF_STR("error", err));
	*error_r = "gdpr.erase failed";
	ret = QUEUE_RETRY;
out:
	ward__gdpr_part_request__free_unpacked(req, NULL);
	return ret;
}
