/*
 * auth_keys — DEK rotation in ward-auth (wardctl key rotate-dek).
 *
 * The newest live DEK version seals (auth_dek, auth_seal); a value sealed under an
 * older live version still opens (auth_open → auth_dek_version) until auth.rekey
 * has re-sealed it. Blind indexes (emails, recovery codes) do not rotate: they come
 * from the tenant's blind-index root (tenant.keys version 0, 065_keys.sql), stored
 * by the first rotation, or before any rotation from the only DEK, whose root it
 * is — recovery codes are kept only as blind indexes and could never be recomputed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "auth.h"
#include "keys.pb-c.h"
#include "log.h"
#include "rekey.h"

int auth_blind(struct auth_req *r, const char *purpose, const void *value, size_t len,
	       char out[65])
{
	const char *err = NULL;

	if (auth_dek(r, &err) < 0)
		return -1;
	if (r->have_root)
		return crypto_blind_index_root(r->blind_root, purpose, value, len, out);
	if (r->dek_version != 1) {
		log_warn("auth: tenant %s: DEK version %u but no blind-index root", r->tenant,
			 r->dek_version);
		return -1;
	}
	return crypto_blind_index(r->dek, purpose, value, len, out);
}

int auth_dek_version(struct auth_req *r, uint32_t version, uint8_t dek[32], const char **error_r)
{
	static char msg[96];
	char vbuf[16];
	const char *p[2] = { r->tenant, vbuf };
	PGresult *res;
	unsigned char *w;
	size_t wl = 0;
	int ret;

	if (version == 0) {
		*error_r = "key version 0 is the blind-index root, not a DEK";
		return -1;
	}
	snprintf(vbuf, sizeof vbuf, "%u", version);
	res = db_exec(r->db,
		      "SELECT wrapped FROM tenant.keys WHERE tenant_id = $1 AND version = $2::int "
		      "AND wrapped IS NOT NULL",
		      2, p, error_r);
	if (res == NULL)
		return -1;
	if (PQntuples(res) != 1) {
		PQclear(res);
		snprintf(msg, sizeof msg, "no live DEK version %u (destroyed or unknown)", version);
		*error_r = msg;
		return -1;
	}
	w = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 0), &wl);
	PQclear(res);
	if (w == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	ret = daemon_unwrap_key(r->d, r->tenant, w, wl, dek, error_r);
	PQfreemem(w);
	return ret;
}

/* rekey_keys.dek: a DEK version of the request's tenant. */
static int auth_rekey_dek(void *arg, uint32_t version, uint8_t dek[CRYPTO_KEY_LEN],
			  const char **error_r)
{
	struct auth_req *r = arg;

	if (version == r->dek_version) {
		memcpy(dek, r->dek, CRYPTO_KEY_LEN);
		return 0;
	}
	return auth_dek_version(r, version, dek, error_r);
}

queue_result_t auth_rekey(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			  size_t len, struct queue_reply *reply, const char **error_r)
{
	Ward__RekeyRequest *req = ward__rekey_request__unpack(NULL, len, payload);
	Ward__RekeyReply out = WARD__REKEY_REPLY__INIT;
	struct auth_req r;
	struct rekey_keys keys = { auth_rekey_dek, &r, NULL, 0 };
	long done = 0, remaining = 0;
	const char *err = NULL;

	if (req == NULL) {
		*error_r = "auth.rekey: malformed RekeyRequest";
		return QUEUE_REJECT;
	}
	if (env->tenant == NULL || strcmp(req->tenant_id, env->tenant) != 0 || req->batch < 1 ||
	    req->batch > 10000) {
		ward__rekey_request__free_unpacked(req, NULL);
		reply->status = 400;
		reply->error = "auth.rekey: tenant_id must be the envelope's tenant, batch 1..10000";
		return QUEUE_DONE;
	}
	if (auth_begin(&r, d, env, &err) < 0) {
		auth_rollback(&r);
		goto fail;
	}
	auth_dek_forget(env->tenant);
	if (auth_dek(&r, &err) < 0) {
		auth_rollback(&r);
		goto fail;
	}
	keys.new_dek = r.dek;
	keys.new_version = r.dek_version;
	out.dek_version = r.dek_version;
	if (rekey_schema(r.db, "auth", r.tenant, &keys, req->batch, &done, &remaining, &err) < 0) {
		auth_rollback(&r);
		goto fail;
	}
	if (auth_commit(&r, &err) < 0)
		goto fail;
	return rekey_answer("auth.rekey", env->tenant, req, NULL, out.dek_version, done, remaining,
			    reply, error_r);
fail:
	return rekey_answer("auth.rekey", env->tenant, req, err != NULL ? err : "failed", 0, 0, 0,
			    reply, error_r);
}
