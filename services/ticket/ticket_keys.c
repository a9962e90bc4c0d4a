/*
 * ticket_keys — the tenants' data-encryption keys in ward-ticket, and sealing of
 * column values under them.
 *
 * A DEK is read from tenant.keys (wrapped under the region KEK, context = tenant
 * id) inside the caller's tenant transaction, so row-level security applies to
 * the key too. Unwrapped keys are cached for keys.cache_seconds in a small fixed
 * table and wiped when they expire, are evicted, or the daemon stops: a key in
 * memory for a few seconds saves an unwrap per request, and a rotation or
 * crypto-shredding is seen within the cache time.
 *
 * DEK rotation (wardctl key rotate-dek): the highest version seals, any live
 * version opens what names it; version 0 is the tenant's blind-index root (065_keys.sql),
 * which keeps blind indexes stable across rotations. ticket.rekey re-seals the
 * ticket schema's values under the newest version in batches (common/rekey.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "keys.pb-c.h"
#include "log.h"
#include "rekey.h"
#include "ticket.h"

#define TICKET_KEY_CACHE 64
#define TICKET_KEY_VERSIONS 8

struct ticket_key_entry {
	bool used;
	bool current; /* the highest version at load time: the one that seals */
	char tenant[TICKET_UUID_LEN + 1];
	uint32_t version;
	uint8_t dek[CRYPTO_KEY_LEN];
	char slug[48];
	int64_t loaded_ms;
};

static struct ticket_key_entry ticket_key_cache[TICKET_KEY_CACHE];

/* Wipe one cache slot. */
static void ticket_key_drop(struct ticket_key_entry *e)
{
	crypto_wipe(e, sizeof *e);
}

void ticket_keys_flush(void)
{
	for (size_t i = 0; i < TICKET_KEY_CACHE; i++)
		ticket_key_drop(&ticket_key_cache[i]);
}

/* Find a live entry (current == true: the sealing key; else by version), wiping
 * expired entries on the way. */
static struct ticket_key_entry *ticket_key_find(const char *tenant, bool current, uint32_t version)
{
	int64_t now = envelope_now_ms(), ttl = (int64_t)ticket_cfg.key_cache_seconds * 1000;
	struct ticket_key_entry *found = NULL;

	for (size_t i = 0; i < TICKET_KEY_CACHE; i++) {
		struct ticket_key_entry *e = &ticket_key_cache[i];

		if (!e->used)
			continue;
		if (now - e->loaded_ms >= ttl || now < e->loaded_ms) {
			ticket_key_drop(e);
			continue;
		}
		if (found == NULL && strcmp(e->tenant, tenant) == 0 &&
		    (current ? e->current : e->version == version))
			found = e;
	}
	return found;
}

/* A slot for a new entry: a free one, else the oldest. */
static struct ticket_key_entry *ticket_key_slot(void)
{
	struct ticket_key_entry *oldest = &ticket_key_cache[0];

	for (size_t i = 0; i < TICKET_KEY_CACHE; i++) {
		if (!ticket_key_cache[i].used)
			return &ticket_key_cache[i];
		if (ticket_key_cache[i].loaded_ms < oldest->loaded_ms)
			oldest = &ticket_key_cache[i];
	}
	ticket_key_drop(oldest);
	return oldest;
}

/* Read and unwrap the tenant's live key versions into the cache. */
static int ticket_keys_load(struct daemon *d, const char *tenant, const char **error_r)
{
	const char *params[1] = {tenant};
	const uint8_t *kek = daemon_kek(d);
	PGresult *res;
	int rows, i, rc = -1;
	int64_t now = envelope_now_ms();
	bool own;

	if (kek == NULL) {
		*error_r = "no region key";
		return -1;
	}
	/* Row-level security needs the tenant's transaction: outside one (a value read
	 * after its COMMIT rode with the query) the keys get one of their own. */
	own = !db_in_transaction(daemon_db(d));
	if (own && db_begin(daemon_db(d), tenant, error_r) < 0)
		return -1;
	res = (own ? db_exec_commit : db_exec)(
	    daemon_db(d),
	    "SELECT k.version, k.wrapped, t.slug FROM tenant.keys k "
	    "JOIN tenant.tenants t ON t.id = k.tenant_id "
	    "WHERE k.tenant_id = $1 AND k.wrapped IS NOT NULL AND t.status = 'active' "
	    "ORDER BY k.version DESC LIMIT 9",
	    1, params, error_r);
	if (res == NULL)
		return -1;
	rows = PQntuples(res);
	if (rows == 0 || strcmp(PQgetvalue(res, 0, 0), "0") == 0) {
		*error_r = "the tenant has no live data key";
		goto out;
	}
	/* Replace whatever the cache held for this tenant. */
	for (i = 0; i < TICKET_KEY_CACHE; i++)
		if (ticket_key_cache[i].used && strcmp(ticket_key_cache[i].tenant, tenant) == 0)
			ticket_key_drop(&ticket_key_cache[i]);
	for (i = 0; i < rows; i++) {
		struct ticket_key_entry *e;
		size_t wlen = 0;
		unsigned char *wrapped =
		    PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, 1), &wlen);
		uint8_t dek[CRYPTO_KEY_LEN];
		long version = strtol(PQgetvalue(res, i, 0), NULL, 10);
		int ok;

		if (wrapped == NULL) {
			*error_r = "out of memory";
			goto out;
		}
		char ctx[TICKET_UUID_LEN + 16];

		/* Version 0: the blind-index root, wrapped with its own context. */
		snprintf(ctx, sizeof ctx, "%s%s", tenant, version == 0 ? "|blind-index" : "");
		ok = daemon_unwrap_key(d, ctx, wrapped, wlen, dek, error_r) == 0;
		PQfreemem(wrapped);
		if (!ok)
			goto out;
		e = ticket_key_slot();
		e->used = true;
		e->current = i == 0;
		snprintf(e->tenant, sizeof e->tenant, "%s", tenant);
		e->version = (uint32_t)version;
		memcpy(e->dek, dek, sizeof dek);
		crypto_wipe(dek, sizeof dek);
		snprintf(e->slug, sizeof e->slug, "%s", PQgetvalue(res, i, 2));
		e->loaded_ms = now;
	}
	rc = 0;
out:
	PQclear(res);
	return rc;
}

int ticket_keys_current(struct daemon *d, const char *tenant, uint8_t dek[CRYPTO_KEY_LEN],
			uint32_t *version_r, char slug[48], const char **error_r)
{
	struct ticket_key_entry *e = ticket_key_find(tenant, true, 0);

	if (e == NULL) {
		if (ticket_keys_load(d, tenant, error_r) < 0)
			return -1;
		e = ticket_key_find(tenant, true, 0);
		if (e == NULL) {
			*error_r = "key cache failure";
			return -1;
		}
	}
	memcpy(dek, e->dek, CRYPTO_KEY_LEN);
	*version_r = e->version;
	if (slug != NULL)
		memcpy(slug, e->slug, sizeof e->slug);
	return 0;
}

int ticket_keys_version(struct daemon *d, const char *tenant, uint32_t version,
			uint8_t dek[CRYPTO_KEY_LEN], const char **error_r)
{
	struct ticket_key_entry *e = ticket_key_find(tenant, false, version);

	if (e == NULL) {
		if (ticket_keys_load(d, tenant, error_r) < 0)
			return -1;
		e = ticket_key_find(tenant, false, version);
		if (e == NULL) {
			*error_r = "no live data key of that version (destroyed?)";
			return -1;
		}
	}
	memcpy(dek, e->dek, CRYPTO_KEY_LEN);
	return 0;
}

/* "<tenant>|<table>|<column>|<row>": what binds a ciphertext to its place. */
static int ticket_aad(char *aad, size_t n, const char *tenant, const char *table,
		      const char *column, const char *row)
{
	int w = snprintf(aad, n, "%s|%s|%s|%s", tenant, table, column, row);

	return w < 0 || (size_t)w >= n ? -1 : w;
}

int ticket_seal(struct daemon *d, const char *tenant, const char *table, const char *column,
		const char *row, const void *pt, size_t pt_len, uint8_t **out_r, size_t *out_len_r,
		const char **error_r)
{
	uint8_t dek[CRYPTO_KEY_LEN];
	uint32_t version;
	char aad[256];
	int n, rc = -1;

	if ((n = ticket_aad(aad, sizeof aad, tenant, table, column, row)) < 0) {
		*error_r = "associated data too long";
		return -1;
	}
	if (ticket_keys_current(d, tenant, dek, &version, NULL, error_r) < 0)
		return -1;
	if (crypto_seal(dek, version, aad, (size_t)n, pt, pt_len, out_r, out_len_r) < 0)
		*error_r = "cannot encrypt";
	else
		rc = 0;
	crypto_wipe(dek, sizeof dek);
	return rc;
}

const char ticket_err_integrity[] = "a sealed value does not open (tampered or moved)";

int ticket_open(struct daemon *d, const char *tenant, const char *table, const char *column,
		const char *row, const char *pg_bytea, uint8_t **out_r, size_t *out_len_r,
		const char **error_r)
{
	uint8_t dek[CRYPTO_KEY_LEN];
	unsigned char *sealed;
	size_t sealed_len = 0;
	uint32_t version;
	char aad[256];
	int n, rc = -1;

	if ((n = ticket_aad(aad, sizeof aad, tenant, table, column, row)) < 0) {
		*error_r = "associated data too long";
		return -1;
	}
	sealed = PQunescapeBytea((const unsigned char *)pg_bytea, &sealed_len);
	if (sealed == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	if (crypto_sealed_key_version(sealed, sealed_len, &version) < 0) {
		*error_r = "not a sealed value";
		goto out;
	}
	if (ticket_keys_version(d, tenant, version, dek, error_r) < 0)
		goto out;
	if (crypto_open(dek, aad, (size_t)n, sealed, sealed_len, out_r, out_len_r, NULL) < 0)
		*error_r = ticket_err_integrity;
	else
		rc = 0;
	crypto_wipe(dek, sizeof dek);
out:
	PQfreemem(sealed);
	return rc;
}

/* Blind indexes do not rotate with the DEK: they come from the tenant's blind-index
 * root (version 0, stored by the first rotation), or, before any rotation, from
 * its only DEK (version 1), whose root that is. */
int ticket_blind(struct daemon *d, const char *tenant, const char *purpose, const void *value,
		 size_t len, char out_hex[65], const char **error_r)
{
	uint8_t dek[CRYPTO_KEY_LEN];
	uint32_t version;
	struct ticket_key_entry *root;
	int rc = -1;

	if (ticket_keys_current(d, tenant, dek, &version, NULL, error_r) < 0)
		return -1;
	root = ticket_key_find(tenant, false, 0);
	if (root == NULL && version != 1) {
		/* Evicted apart from the current key: read them again. */
		if (ticket_keys_load(d, tenant, error_r) < 0)
			goto out;
		root = ticket_key_find(tenant, false, 0);
		if (root == NULL) {
			*error_r = "the tenant's blind-index root is missing (DEK rotated without it)";
			goto out;
		}
	}
	if ((root != NULL ? crypto_blind_index_root(root->dek, purpose, value, len, out_hex)
			  : crypto_blind_index(dek, purpose, value, len, out_hex)) < 0) {
		*error_r = "cannot compute a blind index";
		goto out;
	}
	rc = 0;
out:
	crypto_wipe(dek, sizeof dek);
	return rc;
}

/* Forget every cached key of tenant (a rotation: read them again). */
static void ticket_keys_forget(const char *tenant)
{
	for (size_t i = 0; i < TICKET_KEY_CACHE; i++)
		if (ticket_key_cache[i].used && strcmp(ticket_key_cache[i].tenant, tenant) == 0)
			ticket_key_drop(&ticket_key_cache[i]);
}

struct ticket_rekey_arg {
	struct daemon *d;
	const char *tenant;
};

/* rekey_keys.dek: a version of the tenant's DEK (not the root). */
static int ticket_rekey_dek(void *arg, uint32_t version, uint8_t dek[CRYPTO_KEY_LEN],
			    const char **error_r)
{
	struct ticket_rekey_arg *a = arg;

	if (version == 0) {
		*error_r = "a value names key version 0 (the blind-index root seals nothing)";
		return -1;
	}
	return ticket_keys_version(a->d, a->tenant, version, dek, error_r);
}

queue_result_t ticket_rekey(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			    size_t len, struct queue_reply *reply, const char **error_r)
{
	Ward__RekeyRequest *req = ward__rekey_request__unpack(NULL, len, payload);
	Ward__RekeyReply out = WARD__REKEY_REPLY__INIT;
	struct ticket_rekey_arg arg = { d, env->tenant };
	struct rekey_keys keys = { ticket_rekey_dek, &arg, NULL, 0 };
	uint8_t dek[CRYPTO_KEY_LEN];
	long done = 0, remaining = 0;
	const char *err = NULL;
	db_t *db = daemon_db(d);

	if (req == NULL) {
		*error_r = "ticket.rekey: malformed RekeyRequest";
		return QUEUE_REJECT;
	}
	if (env->tenant == NULL || strlen(env->tenant) != TICKET_UUID_LEN ||
	    strcmp(req->tenant_id, env->tenant) != 0 || req->batch < 1 || req->batch > 10000) {
		ward__rekey_request__free_unpacked(req, NULL);
		reply->status = 400;
		reply->error = "ticket.rekey: tenant_id must be the envelope's tenant, batch 1..10000";
		return QUEUE_DONE;
	}
	ticket_keys_forget(env->tenant);
	if (db_begin(db, env->tenant, &err) < 0 ||
	    ticket_keys_current(d, env->tenant, dek, &out.dek_version, NULL, &err) < 0) {
		db_rollback(db);
		goto fail;
	}
	keys.new_dek = dek;
	keys.new_version = out.dek_version;
	if (rekey_schema(db, "ticket", env->tenant, &keys, req->batch, &done, &remaining, &err) <
		    0 ||
	    db_commit(db, &err) < 0) {
		db_rollback(db);
		crypto_wipe(dek, sizeof dek);
		goto fail;
	}
	crypto_wipe(dek, sizeof dek);
	return rekey_answer("ticket.rekey", env->tenant, req, NULL, out.dek_version, done, remaining,
			    reply, error_r);
fail:
	return rekey_answer("ticket.rekey", env->tenant, req, err != NULL ? err : "failed", 0, 0, 0,
			    reply, error_r);
}
