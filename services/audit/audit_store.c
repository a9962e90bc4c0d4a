/*
 * audit_store — storing events: one transaction per message (a relay's batch of
 * up to AUDITLOG_BATCH_MAX events costs one durable commit), each event once by
 * id, each appended to its tenant's hash chain, details sealed with the tenant's
 * DEK, and a signed checkpoint every checkpoint_every events or
 * checkpoint_minutes minutes.
 *
 * Chain heads and DEKs are cached in memory; any failed transaction drops the
 * chain cache (heads are reloaded from the table, which is the truth). The
 * unique (tenant_id, seq) index makes a second writer fail instead of forking a
 * chain; the message is then retried.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "auditlog.h"
#include "auth.pb-c.h"
#include "log.h"

#define STORE_CHAINS_MAX 4096
#define STORE_KEYS_MAX 4096

/* A chain's head as last committed (or written in the open transaction). */
struct chain {
	char tenant[AUDIT_TENANT_MAX + 1];
	int64_t seq;
	uint8_t hash[AUDIT_HASH_LEN];
	int64_t cp_seq;	  /* last signed checkpoint */
	int64_t cp_at_ms; /* when it was made (or when the chain was loaded) */
	struct chain *next;
};

/* An unwrapped DEK of a tenant (version), or the cell's detail key (tenant ""). */
struct dek {
	char tenant[AUDIT_TENANT_MAX + 1];
	uint32_t version;
	uint8_t key[CRYPTO_KEY_LEN];
	int64_t loaded_ms; /* "the newest" is trusted for 60 s (a DEK rotation) */
	struct dek *next;
};

static struct {
	struct chain *chains;
	size_t n_chains;
	struct dek *keys;
	size_t n_keys;
	uint8_t signing_key[CRYPTO_KEY_LEN];
	char signing_key_id[17];
	int64_t last_lag_ms, last_batch_ms;
	char txn_tenant[AUDIT_TENANT_MAX + 2]; /* app.tenant_id of the open transaction */
	unsigned long stored, duplicates;
} store;

const uint8_t *audit_signing_key(void) { return store.signing_key; }
const char *audit_signing_key_id(void) { return store.signing_key_id; }

queue_result_t audit_problem(struct queue_reply *reply, int status, const char *title,
			     const char *detail)
{
	Ward__Problem p = WARD__PROBLEM__INIT;
	size_t n;

	p.title = (char *)title;
	p.detail = (char *)(detail != NULL ? detail : "");
	n = ward__problem__get_packed_size(&p);
	reply->status = status;
	reply->error = title;
	reply->data = malloc(n ? n : 1);
	if (reply->data != NULL)
		reply->len = ward__problem__pack(&p, reply->data);
	return QUEUE_DONE;
}

/* ================================ caches ================================ */

static void store_chains_flush(void)
{
	struct chain *c, *next;

	for (c = store.chains; c != NULL; c = next) {
		next = c->next;
		free(c);
	}
	store.chains = NULL;
	store.n_chains = 0;
}

static void store_keys_flush(void)
{
	struct dek *k, *next;

	for (k = store.keys; k != NULL; k = next) {
		next = k->next;
		crypto_wipe(k->key, sizeof k->key);
		free(k);
	}
	store.keys = NULL;
	store.n_keys = 0;
}

/* The chain of tenant, loaded from the table if not cached. Inside a transaction
 * whose app.tenant_id is tenant. */
static struct chain *store_chain(db_t *db, const char *tenant, const char **error_r)
{
	const char *params[1] = { tenant };
	struct chain *c;
	PGresult *res;

	for (c = store.chains; c != NULL; c = c->next)
		if (strcmp(c->tenant, tenant) == 0)
			return c;
	if (store.n_chains >= STORE_CHAINS_MAX)
		store_chains_flush();
	c = calloc(1, sizeof *c);
	if (c == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	snprintf(c->tenant, sizeof c->tenant, "%s", tenant);
	res = db_exec(db,
		      "SELECT seq, hash FROM audit.events WHERE tenant_id IS NOT DISTINCT FROM "
		      "NULLIF($1, '')::uuid ORDER BY seq DESC LIMIT 1",
		      1, params, error_r);
	if (res == NULL)
		goto fail;
	if (PQntuples(res) == 1) {
		size_t n = 0;
		unsigned char *h = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 1), &n);

		c->seq = atoll(PQgetvalue(res, 0, 0));
		if (h == NULL || n != AUDIT_HASH_LEN) {
			PQfreemem(h);
			PQclear(res);
			*error_r = "stored chain head has a bad hash";
			goto fail;
		}
		memcpy(c->hash, h, AUDIT_HASH_LEN);
		PQfreemem(h);
	} else {
		/* Empty, or purged entirely: a purge record carries the head. */
		PQclear(res);
		res = db_exec(db,
			      "SELECT upto_seq, upto_hash FROM audit.purges WHERE tenant_id IS NOT "
			      "DISTINCT FROM NULLIF($1, '')::uuid ORDER BY upto_seq DESC LIMIT 1",
			      1, params, error_r);
		if (res == NULL)
			goto fail;
		if (PQntuples(res) == 1) {
			size_t n = 0;
			unsigned char *h =
				PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 1), &n);

			if (h == NULL || n != AUDIT_HASH_LEN) {
				PQfreemem(h);
				PQclear(res);
				*error_r = "purge record has a bad hash";
				goto fail;
			}
			c->seq = atoll(PQgetvalue(res, 0, 0));
			memcpy(c->hash, h, AUDIT_HASH_LEN);
			PQfreemem(h);
		}
	}
	PQclear(res);
	res = db_exec(db,
		      "SELECT coalesce(max(seq), 0) FROM audit.checkpoints WHERE tenant_id IS NOT "
		      "DISTINCT FROM NULLIF($1, '')::uuid",
		      1, params, error_r);
	if (res == NULL)
		goto fail;
	c->cp_seq = atoll(PQgetvalue(res, 0, 0));
	c->cp_at_ms = envelope_now_ms();
	PQclear(res);
	c->next = store.chains;
	store.chains = c;
	store.n_chains++;
	return c;
fail:
	free(c);
	return NULL;
}

/* The DEK of tenant (version 0 = the newest live one), unwrapped with the KEK.
 * Inside a transaction whose app.tenant_id is tenant (tenant.keys is RLS'd). */
static const uint8_t *store_dek(struct daemon *d, const char *tenant, uint32_t version,
				uint32_t *version_r, const char **error_r)
{
	const uint8_t *kek = daemon_kek(d);
	struct dek *k;
	PGresult *res;
	char vbuf[16];
	const char *params[2] = { tenant, vbuf };
	unsigned char *wrapped = NULL;
	size_t wlen = 0;

	/* The cell detail key's version is the region KEK's (key rotation): sealing
	 * uses the current KEK, opening the one the detail names. */
	if (tenant[0] == '\0' && version == 0)
		version = daemon_kek_current(d);
	for (k = store.keys; k != NULL; k = k->next)
		if (strcmp(k->tenant, tenant) == 0 &&
		    (version == 0 ? envelope_now_ms() - k->loaded_ms < 60000
				  : k->version == version)) {
			if (version_r != NULL)
				*version_r = k->version;
			return k->key;
		}
	if (kek == NULL) {
		*error_r = "no KEK";
		return NULL;
	}
	if (store.n_keys >= STORE_KEYS_MAX)
		store_keys_flush();
	k = calloc(1, sizeof *k);
	if (k == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	snprintf(k->tenant, sizeof k->tenant, "%s", tenant);
	k->loaded_ms = envelope_now_ms();
	if (tenant[0] == '\0') {
		/* Cell-wide events: a key derived from the region KEK of that version. */
		const uint8_t *ck = daemon_kek_version(d, version);

		if (ck == NULL || crypto_hkdf(ck, CRYPTO_KEY_LEN, NULL, 0,
					      "ward audit cell detail key", k->key,
					      CRYPTO_KEY_LEN) < 0) {
			*error_r = "cannot derive the cell detail key (its region key version "
				   "is not in the key ring)";
			goto fail;
		}
		k->version = version;
	} else {
		snprintf(vbuf, sizeof vbuf, "%u", version);
		res = db_exec(daemon_db(d),
			      "SELECT version, wrapped FROM tenant.keys WHERE tenant_id = $1::uuid "
			      "AND destroyed_at IS NULL AND version > 0 "
			      "AND ($2::int = 0 OR version = $2::int) "
			      "ORDER BY version DESC LIMIT 1",
			      2, params, error_r);
		if (res == NULL)
			goto fail;
		if (PQntuples(res) != 1) {
			PQclear(res);
			*error_r = "the tenant has no live data key";
			goto fail;
		}
		k->version = (uint32_t)atol(PQgetvalue(res, 0, 0));
		wrapped = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 1), &wlen);
		PQclear(res);
		if (wrapped == NULL ||
		    daemon_unwrap_key(d, tenant, wrapped, wlen, k->key, error_r) < 0) {
			PQfreemem(wrapped);
			if (wrapped == NULL)
				*error_r = "out of memory";
			goto fail;
		}
		PQfreemem(wrapped);
	}
	k->next = store.keys;
	store.keys = k;
	store.n_keys++;
	if (version_r != NULL)
		*version_r = k->version;
	return k->key;
fail:
	crypto_wipe(k, sizeof *k);
	free(k);
	return NULL;
}

/* The associated data binding a detail to its row. */
static void store_aad(const char *tenant, const char *event_uuid, char *out, size_t n)
{
	snprintf(out, n, "%s|audit.events|detail_enc|%s", tenant, event_uuid);
}

int audit_detail_seal(struct daemon *d, const char *tenant, const char *event_uuid,
		      const char *json, uint8_t **out_r, size_t *len_r, const char **error_r)
{
	char aad[160];
	uint32_t version = 0;
	const uint8_t *key = store_dek(d, tenant, 0, &version, error_r);

	if (key == NULL)
		return -1;
	store_aad(tenant, event_uuid, aad, sizeof aad);
	if (crypto_seal(key, version, aad, strlen(aad), json, strlen(json), out_r, len_r) < 0) {
		*error_r = "cannot seal the detail";
		return -1;
	}
	return 0;
}

int audit_detail_open(struct daemon *d, const char *tenant, const char *event_uuid,
		      const uint8_t *in, size_t len, char **json_r, const char **error_r)
{
	char aad[160];
	uint32_t version = 0;
	const uint8_t *key;
	uint8_t *out = NULL;
	size_t out_len = 0;

	if (crypto_sealed_key_version(in, len, &version) < 0) {
		*error_r = "malformed sealed detail";
		return -1;
	}
	key = store_dek(d, tenant, version, NULL, error_r);
	if (key == NULL)
		return -1;
	store_aad(tenant, event_uuid, aad, sizeof aad);
	if (crypto_open(key, aad, strlen(aad), in, len, &out, &out_len, NULL) < 0) {
		*error_r = "the detail does not open (tampered, or key destroyed)";
		return -1;
	}
	*json_r = (char *)out;
	return 0;
}

/* ================================ storing =============================== */

/* Point app.tenant_id at tenant for the rest of the transaction (sent with the
 * next statement). */
static int store_set_tenant(db_t *db, const char *tenant, const char **error_r)
{
	const char *params[1] = { tenant };

	return db_defer(db, "SELECT set_config('app.tenant_id', $1, true)", 1, params, NULL, NULL,
			error_r);
}

/* Sign and insert a checkpoint at the chain's head (inside the transaction,
 * app.tenant_id already the chain's tenant). */
static int store_checkpoint(db_t *db, struct chain *c, const char **error_r)
{
	uint8_t sig[32];
	char seq[24], at[24];
	int64_t now = envelope_now_ms();
	const char *params[6];
	int lens[6] = { 0 }, fmts[6] = { 0 };
	PGresult *res;

	if (c->seq <= c->cp_seq || c->seq == 0)
		return 0;
	if (audit_chain_sign(store.signing_key, c->tenant, c->seq, c->hash, now, sig) < 0) {
		*error_r = "cannot sign the checkpoint";
		return -1;
	}
	snprintf(seq, sizeof seq, "%lld", (long long)c->seq);
	snprintf(at, sizeof at, "%lld", (long long)now);
	params[0] = c->tenant, params[1] = seq, params[2] = (const char *)c->hash;
	params[3] = at, params[4] = store.signing_key_id, params[5] = (const char *)sig;
	lens[2] = AUDIT_HASH_LEN, fmts[2] = 1, lens[5] = 32, fmts[5] = 1;
	res = db_exec_bin(db,
			  "INSERT INTO audit.checkpoints (tenant_id, seq, hash, at, alg, key_id, "
			  "signature) VALUES (NULLIF($1, '')::uuid, $2::bigint, $3, timestamptz "
			  "'epoch' + $4::bigint * interval '1 millisecond', 'hmac-sha256', $5, $6)",
			  6, params, lens, fmts, error_r);
	if (res == NULL)
		return -1;
	PQclear(res);
	c->cp_seq = c->seq;
	c->cp_at_ms = now;
	return 0;
}

/* Append one event to its chain, inside the open transaction. 1 stored, 0 already
 * stored (same id), -1 error. */
static int store_event_id(struct daemon *d, Ward__AuditEvent *ev, const char **error_r);

/* An event without an id gets one here (never stored into the unpacked message,
 * which protobuf-c frees). */
static int store_event(struct daemon *d, Ward__AuditEvent *ev, const char **error_r)
{
	char idbuf[33];
	char *orig = ev->id;
	int r;

	if (ev->id == NULL || ev->id[0] == '\0') {
		if (crypto_random_id(idbuf) < 0) {
			*error_r = "no random bytes";
			return -1;
		}
		ev->id = idbuf;
	}
	r = store_event_id(d, ev, error_r);
	ev->id = orig;
	return r;
}

static int store_event_id(struct daemon *d, Ward__AuditEvent *ev, const char **error_r)
{
	db_t *db = daemon_db(d);
	const char *tenant = ev->tenant_id != NULL ? ev->tenant_id : "";
	char uuid[37], seq[24], at[24];
	struct audit_row row = { 0 };
	uint8_t hash[AUDIT_HASH_LEN], digest[AUDIT_HASH_LEN], *detail = NULL;
	size_t detail_len = 0;
	struct chain *c;
	const char *params[13];
	int lens[13] = { 0 }, fmts[13] = { 0 }, ret = -1;
	PGresult *res;

	if (auditlog_prepare(ev, error_r) < 0 || !audit_tenant_ok(tenant)) {
		if (*error_r == NULL)
			*error_r = "tenant_id: not a uuid";
		return -2; /* malformed: the whole message is refused */
	}
	audit_id_to_uuid(ev->id, uuid);
	/* A batch is mostly one tenant: set app.tenant_id only when it changes. */
	if (strcmp(store.txn_tenant, tenant) != 0) {
		if (store_set_tenant(db, tenant, error_r) < 0)
			return -1;
		snprintf(store.txn_tenant, sizeof store.txn_tenant, "%s", tenant);
	}
	c = store_chain(db, tenant, error_r);
	if (c == NULL)
		return -1;
	if (ev->detail_json != NULL && ev->detail_json[0] != '\0' &&
	    audit_detail_seal(d, tenant, uuid, ev->detail_json, &detail, &detail_len, error_r) < 0)
		return -1;
	row.tenant = tenant;
	row.seq = c->seq + 1;
	row.id = ev->id;
	row.at_ms = ev->at_ms;
	row.type = ev->type, row.action = ev->action, row.actor = ev->actor;
	row.target = ev->target ? ev->target : "", row.ip = ev->ip ? ev->ip : "";
	row.request_id = ev->request_id ? ev->request_id : "";
	/* Version 2: the chain covers the detail's digest; the detail itself goes
	 * to audit.event_details, from where a GDPR erase may delete it. */
	row.version = 2;
	if (detail != NULL && audit_chain_detail_digest(detail, detail_len, digest) < 0) {
		*error_r = "cannot hash the detail";
		goto out;
	}
	row.digest = detail != NULL ? digest : NULL;
	row.prev = row.seq > 1 ? c->hash : NULL;
	if (audit_chain_hash(&row, hash) < 0) {
		*error_r = "cannot hash the event";
		goto out;
	}
	snprintf(seq, sizeof seq, "%lld", (long long)row.seq);
	snprintf(at, sizeof at, "%lld", (long long)row.at_ms);
	params[0] = uuid, params[1] = tenant, params[2] = seq, params[3] = at;
	params[4] = row.type, params[5] = row.action, params[6] = row.actor;
	params[7] = row.target, params[8] = row.ip, params[9] = row.request_id;
	params[10] = (const char *)row.digest, lens[10] = row.digest ? AUDIT_HASH_LEN : 0;
	fmts[10] = 1;
	params[11] = (const char *)row.prev, lens[11] = row.prev ? AUDIT_HASH_LEN : 0, fmts[11] = 1;
	params[12] = (const char *)hash, lens[12] = AUDIT_HASH_LEN, fmts[12] = 1;
	res = db_exec_bin(db,
			  "INSERT INTO audit.events (id, tenant_id, seq, at, type, action, actor, "
			  "target, ip, request_id, hash_version, detail_digest, prev_hash, hash) "
			  "VALUES ($1::uuid, NULLIF($2, '')::uuid, $3::bigint, timestamptz 'epoch' + "
			  "$4::bigint * interval '1 millisecond', $5, $6, $7, NULLIF($8, ''), "
			  "NULLIF($9, ''), NULLIF($10, ''), 2, $11, $12, $13) ON CONFLICT (id) DO "
			  "NOTHING RETURNING 1",
			  13, params, lens, fmts, error_r);
	if (res == NULL)
		goto out;
	ret = PQntuples(res) == 1;
	PQclear(res);
	if (ret == 1 && detail != NULL) {
		const char *dp[3] = { uuid, tenant, (const char *)detail };
		int dl[3] = { 0, 0, (int)detail_len }, df[3] = { 0, 0, 1 };

		/* Sent with the next event or the COMMIT. */
		if (db_defer(db,
			     "INSERT INTO audit.event_details (event_id, tenant_id, detail_enc) "
			     "VALUES ($1::uuid, NULLIF($2, '')::uuid, $3)",
			     3, dp, dl, df, error_r) < 0) {
			ret = -1;
			goto out;
		}
	}
	if (ret == 1) {
		c->seq = row.seq;
		memcpy(c->hash, hash, AUDIT_HASH_LEN);
		if (c->seq - c->cp_seq >= audit_conf.checkpoint_every &&
		    store_checkpoint(db, c, error_r) < 0)
			ret = -1;
	}
out:
	free(detail);
	return ret;
}

/* Store events in one transaction with the envelope id. */
static queue_result_t store_events(struct daemon *d, const Ward__Envelope *env,
				   Ward__AuditEvent **evs, size_t n, struct queue_reply *reply,
				   const char **error_r)
{
	db_t *db = daemon_db(d);
	unsigned long stored = 0, dups = 0;
	int64_t now = envelope_now_ms(), oldest = now;
	int r;

	if (db_begin(db, NULL, error_r) < 0)
		return QUEUE_RETRY;
	snprintf(store.txn_tenant, sizeof store.txn_tenant, "\001"); /* none yet */
	r = db_mark_processed(db, "audit.processed", env->id, error_r);
	if (r <= 0) {
		db_rollback(db);
		return r == 0 ? QUEUE_DONE : QUEUE_RETRY;
	}
	for (size_t i = 0; i < n; i++) {
		*error_r = NULL;
		r = store_event(d, evs[i], error_r);
		if (r == -2) {
			log_event(LOG_WARN, "malformed audit event refused",
				  LF_STR("sender", env->sender), LF_STR("error", *error_r));
			if (n > 1)
				continue; /* one bad row must not cost the rest of a batch */
			db_rollback(db);
			(void)audit_problem(reply, 422, "malformed audit event", *error_r);
			return QUEUE_REJECT;
		}
		if (r < 0)
			goto fail;
		if (r == 1)
			stored++;
		else
			dups++;
		if (evs[i]->at_ms < oldest)
			oldest = evs[i]->at_ms;
	}
	if (db_commit(db, error_r) < 0)
		goto fail;
	store.stored += stored;
	store.duplicates += dups;
	store.last_lag_ms = now - oldest;
	store.last_batch_ms = now;
	return QUEUE_DONE;
fail:
	db_rollback(db);
	store_chains_flush(); /* the table is the truth: reload heads */
	return QUEUE_RETRY;
}

queue_result_t audit_record(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			    size_t len, struct queue_reply *reply, const char **error_r)
{
	Ward__AuditEvent *ev = ward__audit_event__unpack(NULL, len, payload);
	queue_result_t r;

	if (ev == NULL) {
		*error_r = "audit.record: malformed AuditEvent";
		return QUEUE_REJECT;
	}
	r = store_events(d, env, &ev, 1, reply, error_r);
	ward__audit_event__free_unpacked(ev, NULL);
	return r;
}

queue_result_t audit_record_batch(struct daemon *d, const Ward__Envelope *env,
				  const uint8_t *payload, size_t len, struct queue_reply *reply,
				  const char **error_r)
{
	Ward__AuditEventBatch *b = ward__audit_event_batch__unpack(NULL, len, payload);
	queue_result_t r;

	if (b == NULL || b->n_events > AUDITLOG_BATCH_MAX) {
		if (b != NULL)
			ward__audit_event_batch__free_unpacked(b, NULL);
		*error_r = "audit.record_batch: malformed or too large";
		return QUEUE_REJECT;
	}
	r = store_events(d, env, b->events, b->n_events, reply, error_r);
	ward__audit_event_batch__free_unpacked(b, NULL);
	return r;
}

/* ================================ timers ================================ */

void audit_store_tick(struct daemon *d)
{
	db_t *db = daemon_db(d);
	int64_t now = envelope_now_ms();
	int64_t lag = now - store.last_batch_ms < 10000 ? store.last_lag_ms : 0;
	const char *err = NULL;
	char key[160], value[256];
	const char *argv[5];
	size_t lens[5];

	/* Checkpoints due by time, for chains written since their last one. */
	for (struct chain *c = store.chains; c != NULL; c = c->next) {
		if (c->seq <= c->cp_seq ||
		    now - c->cp_at_ms < (int64_t)audit_conf.checkpoint_minutes * 60000)
			continue;
		if (db_begin(db, c->tenant[0] ? c->tenant : NULL, &err) < 0 ||
		    store_checkpoint(db, c, &err) < 0 || db_commit(db, &err) < 0) {
			db_rollback(db);
			log_event(LOG_WARN, "cannot write a checkpoint", LF_STR("error", err));
			store_chains_flush();
			break;
		}
	}
	/* The backlog, for the status page: how old the events being stored are. */
	snprintf(key, sizeof key, "hb:audit:backlog");
	snprintf(value, sizeof value,
		 "{\"lag_ms\":%lld,\"high_water_ms\":%d,\"degraded\":%s,\"stored\":%lu,"
		 "\"duplicates\":%lu}",
		 (long long)lag, audit_conf.lag_high_water_ms,
		 lag > audit_conf.lag_high_water_ms ? "true" : "false", store.stored,
		 store.duplicates);
	argv[0] = "SET", argv[1] = key, argv[2] = value, argv[3] = "EX", argv[4] = "30";
	for (int i = 0; i < 5; i++)
		lens[i] = strlen(argv[i]);
	(void)queue_command(daemon_queue(d), 5, argv, lens);
}

int audit_store_init(struct daemon *d, const char **error_r)
{
	const struct daemon_config *c = daemon_config(d);
	char path[4096];
	const char *file = audit_conf.signing_key_file;

	if (file == NULL) {
		/* Default: beside the KEK, as ward-policy creates it. */
		const char *slash = strrchr(c->kek.path, '/');
		int dir = slash != NULL ? (int)(slash - c->kek.path) : 0;

		snprintf(path, sizeof path, "%.*s%saudit-signing-key", dir, c->kek.path,
			 slash != NULL ? "/" : "");
		file = path;
	}
	if (crypto_key_load(file, store.signing_key, error_r) < 0)
		return -1;
	audit_chain_key_id(store.signing_key, store.signing_key_id);
	return 0;
}

void audit_store_deinit(void)
{
	store_chains_flush();
	store_keys_flush();
	crypto_wipe(store.signing_key, sizeof store.signing_key);
}
