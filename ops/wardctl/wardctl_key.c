/*
 * wardctl_key — `wardctl key rotate-kek|retire-kek|status|rotate-dek`: rotation of a
 * region's key-encryption key and of a tenant's data-encryption key (SPEC §3).
 *
 * The region KEK file is a key ring (common/crypto.h): during a rotation it holds
 * the old and the new version, and every wrapped DEK names in its header the KEK
 * version that wrapped it. The daemons that unwrap DEKs (auth, ticket, audit,
 * backup) pick the KEK by that version and re-read the ring file when they meet a
 * version they do not hold, so there is no restart and no moment when a DEK cannot
 * be unwrapped:
 *   1. a new version is added to the ring (atomic rename of the file);
 *   2. every tenant's DEKs (tenant.keys, and tenant.closed_keys of closed tenants
 *      kept for restores) are unwrapped with the old version and wrapped under the
 *      new one, one tenant per transaction, each row replaced only if it is still
 *      the one read (a concurrent change wins and is picked up on the next run);
 *   3. with --retire (or `retire-kek` later) the old versions leave the ring once
 *      no wrapped key under them remains, checked from the wrapped keys' headers.
 * Every step is an audit event naming the operator, the region and the versions;
 * key material never leaves this process except into the ring file.
 *
 * rotate-dek adds a DEK version to the tenant (and, the first time, its blind-index
 * root as version 0, deploy/sql/065_keys.sql), asks ward-ticket and ward-auth to
 * re-seal their data under it in batches (ticket.rekey, auth.rekey: common/rekey.c)
 * until nothing is left under an older version, waits out the services' key caches,
 * with --destroy-old makes a last pass and destroys the older versions (kept by
 * default, so that backups of the retention window stay restorable).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "crypto.h"
#include "keys.pb-c.h"
#include "wardctl.h"

/* The wrap context of a tenant's blind-index root (tenant.keys version 0) after the
 * tenant id; DEKs are wrapped with the bare tenant id. */
#define KEY_ROOT_CONTEXT "|blind-index"

const char wardctl_key_usage[] =
	"usage: wardctl key rotate-kek --region R [--retire] [--stage | --rewrap]\n"
	"       wardctl key retire-kek --region R --version N\n"
	"       wardctl key status --region R\n"
	"       wardctl key rotate-dek --tenant SLUG [--batch N] [--keep-old | --destroy-old\n"
	"                          [--grace SECONDS]]\n"
	"\n"
	"rotate-kek: add a new version of the region's key-encryption key to its key ring\n"
	"(kek_file) and re-wrap every tenant DEK of the region under it, with no downtime:\n"
	"the daemons unwrap under either version meanwhile. --retire: then remove every\n"
	"older version from the ring (as retire-kek does for each). On several hosts:\n"
	"--stage only adds the version to the ring; copy the ring file to every host\n"
	"holding the KEK; then --rewrap re-wraps under the ring's current version.\n"
	"retire-kek: remove version N from the ring; refused while any wrapped DEK\n"
	"(live or of a closed tenant) is still wrapped under it, or if N is the current\n"
	"version. status: the ring's versions and how many DEKs each wraps.\n"
	"rotate-dek: a new DEK version for the tenant (new writes use it within the\n"
	"services' key cache time); ward-ticket and ward-auth re-seal the tenant's data\n"
	"under it in batches of N (default 200) on request (ticket.rekey, auth.rekey),\n"
	"old versions readable meanwhile. The old versions are kept by default (--keep-old:\n"
	"they seal nothing new, but audit details and the backups of the retention window\n"
	"sealed under them stay readable). --destroy-old (a compromised key): after\n"
	"SECONDS (default 65: longer than the key caches, so no daemon still seals under\n"
	"an old version) a last pass, then the old versions are destroyed, and every\n"
	"backup and audit detail sealed under them is unreadable. Blind indexes do not rotate\n"
	"(see deploy/sql/065_keys.sql). Resumable: run it again after an interruption.\n";

/* One tenant's wrapped keys in one table, re-wrapped under (kek, version). */
struct key_rewrap {
	const struct crypto_keyring *ring;
	const uint8_t *kek;
	uint32_t kek_version;
	long rewrapped;
};

/* Re-wrap the rows of table ("tenant.keys" or "tenant.closed_keys", a constant)
 * of tenant that are not under the new version. Inside the tenant's transaction. */
static int key_rewrap_table(db_t *db, const char *table, const char *tenant,
			    struct key_rewrap *rw, const char **error_r)
{
	static char msg[160];
	char sql[256], kv[16];
	const char *p[1] = { tenant };
	PGresult *res;
	int rows, ret = -1;

	snprintf(sql, sizeof sql,
		 "SELECT version, wrapped FROM %s WHERE tenant_id = $1 AND wrapped IS NOT NULL "
		 "ORDER BY version FOR UPDATE",
		 table);
	if ((res = db_exec(db, sql, 1, p, error_r)) == NULL)
		return -1;
	rows = PQntuples(res);
	snprintf(kv, sizeof kv, "%u", rw->kek_version);
	for (int i = 0; i < rows; i++) {
		size_t wl = 0, nl = 0;
		unsigned char *w =
		    PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, 1), &wl);
		uint8_t dek[CRYPTO_KEY_LEN], *nw = NULL;
		char ctx[96];
		uint32_t old = 0;
		PGresult *u;
		int ok;

		if (w == NULL) {
			*error_r = "out of memory";
			goto out;
		}
		if (crypto_sealed_key_version(w, wl, &old) < 0) {
			PQfreemem(w);
			*error_r = "a wrapped key is malformed";
			goto out;
		}
		if (old == rw->kek_version) {
			PQfreemem(w);
			continue;
		}
		/* Version 0 is the blind-index root (065_keys.sql), wrapped with its own
		 * context. */
		snprintf(ctx, sizeof ctx, "%s%s", tenant,
			 strcmp(PQgetvalue(res, i, 0), "0") == 0 ? KEY_ROOT_CONTEXT : "");
		if (crypto_keyring_unwrap(rw->ring, ctx, w, wl, dek, NULL) < 0) {
			PQfreemem(w);
			snprintf(msg, sizeof msg,
				 "%s: a DEK of tenant %s is wrapped under KEK version %u, which "
				 "does not unwrap it (retired, or the wrong key ring?)",
				 table, tenant, old);
			*error_r = msg;
			goto out;
		}
		ok = crypto_wrap_key(rw->kek, rw->kek_version, ctx, dek, &nw, &nl) == 0;
		crypto_wipe(dek, sizeof dek);
		if (!ok) {
			PQfreemem(w);
			*error_r = "cannot wrap a data key";
			goto out;
		}
		snprintf(sql, sizeof sql,
			 "UPDATE %s SET wrapped = $3, kek_version = $4::int "
			 "WHERE tenant_id = $1 AND version = $2::int AND wrapped = $5",
			 table);
		{
			const char *up[5] = { tenant, PQgetvalue(res, i, 0), (const char *)nw, kv,
					      (const char *)w };
			const int ul[5] = { 0, 0, (int)nl, 0, (int)wl }, uf[5] = { 0, 0, 1, 0, 1 };

			u = db_exec_bin(db, sql, 5, up, ul, uf, error_r);
		}
		free(nw);
		PQfreemem(w);
		if (u == NULL)
			goto out;
		if (strcmp(PQcmdTuples(u), "1") == 0)
			rw->rewrapped++;
		PQclear(u);
	}
	ret = 0;
out:
	PQclear(res);
	return ret;
}

/* The ids of every tenant of the cell (open and closed); NULL after an error. */
static PGresult *key_tenants(db_t *db, const char **error_r)
{
	return db_exec(db, "SELECT id FROM tenant.tenants ORDER BY id", 0, NULL, error_r);
}

/* Count wrapped keys per KEK version (from the wrapped keys' own headers) over
 * every tenant: counts[v] for v < 64 is filled, *other_r counts the rest. */
static int key_count(db_t *db, long counts[64], long *other_r, const char **error_r)
{
	PGresult *ts = key_tenants(db, error_r);
	int ret = -1;

	memset(counts, 0, 64 * sizeof counts[0]);
	*other_r = 0;
	if (ts == NULL)
		return -1;
	for (int t = 0; t < PQntuples(ts); t++) {
		const char *p[1] = { PQgetvalue(ts, t, 0) };
		PGresult *res;

		if (db_begin(db, p[0], error_r) < 0)
			goto out;
		/* The header's key version, bytes 2..5 (big endian) of the wrapped key. */
		res = db_exec(db,
			      "SELECT ('x' || encode(substring(wrapped from 2 for 4), 'hex'))::bit(32)"
			      "::bigint AS v, count(*) FROM ("
			      " SELECT wrapped FROM tenant.keys WHERE tenant_id = $1"
			      "  AND wrapped IS NOT NULL UNION ALL"
			      " SELECT wrapped FROM tenant.closed_keys WHERE tenant_id = $1) k "
			      "GROUP BY 1",
			      1, p, error_r);
		if (res == NULL) {
			db_rollback(db);
			goto out;
		}
		for (int i = 0; i < PQntuples(res); i++) {
			long v = strtol(PQgetvalue(res, i, 0), NULL, 10);
			long n = strtol(PQgetvalue(res, i, 1), NULL, 10);

			if (v >= 0 && v < 64)
				counts[v] += n;
			else
				*other_r += n;
		}
		PQclear(res);
		db_rollback(db);
	}
	ret = 0;
out:
	PQclear(ts);
	return ret;
}

/* Remove version from the ring at path once nothing is wrapped under it; records
 * the audit event. 0 or -1 (printed). */
static int key_retire(const struct wardctl_conf *conf, int region, db_t *db,
		      struct crypto_keyring *ring, uint32_t version)
{
	const char *path = conf->cell[region].kek_file, *err = NULL;
	long counts[64], other;
	uint32_t cur = 0;
	char detail[128];

	(void)crypto_keyring_current(ring, &cur);
	if (crypto_keyring_find(ring, version) == NULL) {
		wardctl_error("region %s: KEK version %u is not in the key ring",
			      wardctl_regions[region], version);
		return -1;
	}
	if (version == cur) {
		wardctl_error("region %s: KEK version %u is the current one; rotate first",
			      wardctl_regions[region], version);
		return -1;
	}
	if (key_count(db, counts, &other, &err) < 0) {
		wardctl_error("region %s: %s", wardctl_regions[region], err);
		return -1;
	}
	if ((version < 64 && counts[version] > 0) || (version >= 64 && other > 0)) {
		wardctl_error("region %s: %ld data key(s) are still wrapped under KEK version "
			      "%u; run rotate-kek again before retiring it",
			      wardctl_regions[region], version < 64 ? counts[version] : other,
			      version);
		return -1;
	}
	if (crypto_keyring_remove(ring, version) < 0 || crypto_keyring_save(path, ring, &err) < 0) {
		wardctl_error("%s: %s", path, err != NULL ? err : "cannot remove the version");
		return -1;
	}
	snprintf(detail, sizeof detail, "{\"kek_version\":%u,\"current_kek_version\":%u}",
		 version, cur);
	if (wardctl_audit_record(conf, region, NULL, "key", "retire-kek", "kek", detail, &err) <
	    0) {
		wardctl_error("audit event not recorded: %s", err);
		return -1;
	}
	return 0;
}

/* rotate-kek: new version, re-wrap everything, optionally retire the rest. */
/* stage: only add the new version to the ring (then distribute the ring file to
 * every host that holds the KEK); rewrap: only re-wrap under the ring's current
 * version (after a stage); neither: both in one go (one host, the dev stack). */
static int key_rotate_kek(const struct wardctl_conf *conf, int region, bool retire, bool stage,
			  bool rewrap)
{
	const char *path = conf->cell[region].kek_file, *err = NULL;
	struct crypto_keyring ring;
	struct key_rewrap rw = { 0 };
	uint8_t fresh[CRYPTO_KEY_LEN];
	uint32_t cur = 0, next;
	PGresult *ts = NULL;
	db_t *db = NULL;
	json_t *o = NULL, *retired = json_array();
	char detail[160];
	long tenants = 0;
	int ret = 1;

	if (crypto_keyring_load(path, &ring, &err) < 0) {
		wardctl_error("%s: %s", path, err);
		json_decref(retired);
		return 1;
	}
	if ((db = wardctl_db(conf, region)) == NULL || retired == NULL)
		goto out;
	(void)crypto_keyring_current(&ring, &cur);
	next = cur + 1;
	if (rewrap) {
		/* The staged version is the current one; "from" is the newest below it. */
		next = cur;
		cur = 0;
		for (size_t i = 0; i < ring.n; i++)
			if (ring.version[i] < next && ring.version[i] > cur)
				cur = ring.version[i];
	} else {
		if (crypto_random(fresh, sizeof fresh) < 0 ||
		    crypto_keyring_add(&ring, next, fresh) < 0) {
			wardctl_error("%s: the key ring is full (%d versions); retire old versions "
				      "first",
				      path, CRYPTO_KEYRING_MAX);
			goto out;
		}
		crypto_wipe(fresh, sizeof fresh);
		if (crypto_keyring_save(path, &ring, &err) < 0) {
			wardctl_error("%s: %s", path, err);
			goto out;
		}
	}
	if (stage) {
		snprintf(detail, sizeof detail, "{\"staged_kek_version\":%u}", next);
		if (wardctl_audit_record(conf, region, NULL, "key", "stage-kek", "kek", detail,
					 &err) < 0) {
			wardctl_error("audit event not recorded: %s", err);
			goto out;
		}
		o = json_pack("{s:s, s:I, s:b}", "region", wardctl_regions[region], "kek_version",
			      (json_int_t)next, "staged", 1);
		if (o != NULL && wardctl_print(o) == 0)
			ret = 0;
		goto out;
	}
	/* Daemons re-read the ring at most every 100 ms when they meet a new version:
	 * let any read from just before the save age out before the first DEK moves. */
	nanosleep(&(struct timespec){ 0, 300 * 1000 * 1000 }, NULL);
	rw.ring = &ring;
	rw.kek = crypto_keyring_find(&ring, next);
	rw.kek_version = next;
	if ((ts = key_tenants(db, &err)) == NULL) {
		wardctl_error("region %s: %s", wardctl_regions[region], err);
		goto out;
	}
	for (int t = 0; t < PQntuples(ts); t++) {
		const char *tenant = PQgetvalue(ts, t, 0);

		if (db_begin(db, tenant, &err) < 0 ||
		    key_rewrap_table(db, "tenant.keys", tenant, &rw, &err) < 0 ||
		    key_rewrap_table(db, "tenant.closed_keys", tenant, &rw, &err) < 0 ||
		    db_commit(db, &err) < 0) {
			db_rollback(db);
			wardctl_error("region %s: tenant %s: %s (KEK version %u stays in the ring; "
				      "run rotate-kek again)",
				      wardctl_regions[region], tenant, err, next);
			goto out;
		}
		tenants++;
	}
	snprintf(detail, sizeof detail,
		 "{\"from_kek_version\":%u,\"to_kek_version\":%u,\"tenants\":%ld,"
		 "\"rewrapped\":%ld}",
		 cur, next, tenants, rw.rewrapped);
	if (wardctl_audit_record(conf, region, NULL, "key", "rotate-kek", "kek", detail, &err) <
	    0) {
		wardctl_error("audit event not recorded: %s", err);
		goto out;
	}
	if (retire) {
		while (ring.n > 1) {
			uint32_t v = ring.version[0] == next ? ring.version[1] : ring.version[0];

			if (key_retire(conf, region, db, &ring, v) < 0)
				goto out;
			json_array_append_new(retired, json_integer(v));
		}
	}
	o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:O}", "region", wardctl_regions[region],
		      "from_kek_version", (json_int_t)cur, "kek_version", (json_int_t)next,
		      "tenants", (json_int_t)tenants, "rewrapped", (json_int_t)rw.rewrapped,
		      "retired", retired);
	if (o != NULL && wardctl_print(o) == 0)
		ret = 0;
out:
	crypto_wipe(fresh, sizeof fresh);
	crypto_keyring_wipe(&ring);
	json_decref(o);
	json_decref(retired);
	PQclear(ts);
	db_free(db);
	return ret;
}

/* retire-kek --version N. */
static int key_retire_kek(const struct wardctl_conf *conf, int region, uint32_t version)
{
	const char *path = conf->cell[region].kek_file, *err = NULL;
	struct crypto_keyring ring;
	db_t *db;
	json_t *o;
	int ret = 1;

	if (crypto_keyring_load(path, &ring, &err) < 0) {
		wardctl_error("%s: %s", path, err);
		return 1;
	}
	if ((db = wardctl_db(conf, region)) != NULL &&
	    key_retire(conf, region, db, &ring, version) == 0) {
		o = json_pack("{s:s, s:I}", "region", wardctl_regions[region], "retired",
			      (json_int_t)version);
		if (o != NULL && wardctl_print(o) == 0)
			ret = 0;
		json_decref(o);
	}
	crypto_keyring_wipe(&ring);
	db_free(db);
	return ret;
}

/* status: ring versions (never keys) and the DEKs wrapped under each. */
static int key_status(const struct wardctl_conf *conf, int region)
{
	const char *path = conf->cell[region].kek_file, *err = NULL;
	struct crypto_keyring ring;
	long counts[64], other = 0;
	json_t *o = NULL, *vs = json_array(), *wr = json_object();
	uint32_t cur = 0;
	db_t *db = NULL;
	int ret = 1;

	if (crypto_keyring_load(path, &ring, &err) < 0) {
		wardctl_error("%s: %s", path, err);
		json_decref(vs);
		json_decref(wr);
		return 1;
	}
	(void)crypto_keyring_current(&ring, &cur);
	if (vs == NULL || wr == NULL || (db = wardctl_db(conf, region)) == NULL)
		goto out;
	if (key_count(db, counts, &other, &err) < 0) {
		wardctl_error("region %s: %s", wardctl_regions[region], err);
		goto out;
	}
	for (size_t i = 0; i < ring.n; i++)
		json_array_append_new(vs, json_integer(ring.version[i]));
	for (int v = 0; v < 64; v++) {
		char k[16];

		if (counts[v] == 0)
			continue;
		snprintf(k, sizeof k, "%d", v);
		json_object_set_new(wr, k, json_integer(counts[v]));
	}
	if (other > 0)
		json_object_set_new(wr, "other", json_integer(other));
	o = json_pack("{s:s, s:I, s:O, s:O}", "region", wardctl_regions[region], "kek_version",
		      (json_int_t)cur, "ring", vs, "wrapped_by_version", wr);
	if (o != NULL && wardctl_print(o) == 0)
		ret = 0;
out:
	crypto_keyring_wipe(&ring);
	json_decref(o);
	json_decref(vs);
	json_decref(wr);
	db_free(db);
	return ret;
}

/* ------------------------------------------------------------ rotate-dek */

/* One rekey request to dest ("q:ticket" / "q:auth"); *reply_r unpacked, or -1 printed. */
static int key_rekey_call(struct wardctl_queue *wq, const char *dest, const char *method,
			  const char *tenant, int batch, Ward__RekeyReply **reply_r)
{
	Ward__RekeyRequest req = WARD__REKEY_REQUEST__INIT;
	const struct wardctl_call call = { .dest = dest,
					   .method = method,
					   .tenant = tenant,
					   .request = &req.base,
					   .reply = &ward__rekey_reply__descriptor,
					   .reply_max = 4096,
					   .timeout_ms = 120000,
					   .service = "the service" };
	ProtobufCMessage *m;

	req.tenant_id = (char *)tenant;
	req.batch = batch;
	if (wardctl_queue_call(wq, &call, &m) < 0)
		return -1;
	*reply_r = (Ward__RekeyReply *)m;
	return 0;
}

/* Passes of ticket.rekey and auth.rekey until nothing is under an older version
 * than new_version in either; adds to *done_r. */
static int key_rekey_all(struct wardctl_queue *wq, const char *tenant, uint32_t new_version, int batch,
			 long *done_r)
{
	static const char *const dests[2][2] = { { "q:ticket", "ticket.rekey" },
						 { "q:auth", "auth.rekey" } };

	for (int s = 0; s < 2; s++) {
		for (;;) {
			Ward__RekeyReply *r = NULL;
			long remaining;

			if (key_rekey_call(wq, dests[s][0], dests[s][1], tenant, batch, &r) < 0)
				return -1;
			remaining = (long)r->remaining;
			*done_r += (long)r->done;
			if (r->dek_version != new_version) {
				wardctl_error("%s: the service seals under DEK version %u, not %u "
					      "(a newer rotation?)",
					      dests[s][1], r->dek_version, new_version);
				ward__rekey_reply__free_unpacked(r, NULL);
				return -1;
			}
			if (r->done == 0 && remaining > 0) {
				wardctl_error("%s: %ld values remain and none moved", dests[s][1],
					      remaining);
				ward__rekey_reply__free_unpacked(r, NULL);
				return -1;
			}
			ward__rekey_reply__free_unpacked(r, NULL);
			if (remaining == 0)
				break;
		}
	}
	return 0;
}

/* The home region and id of slug (an active tenant); -1 after printing. */
static int key_find_tenant(const struct wardctl_conf *conf, const char *slug, char id[40])
{
	for (int i = 0; i < WARDCTL_REGIONS; i++) {
		const char *p[1] = { slug }, *err = NULL;
		db_t *db;
		PGresult *res;
		int found = 0;

		if (conf->cell[i].pg_conninfo == NULL || (db = wardctl_db(conf, i)) == NULL)
			continue;
		res = db_exec(db, "SELECT id FROM tenant.tenants WHERE slug = $1 AND status = 'active'",
			      1, p, &err);
		if (res != NULL && PQntuples(res) == 1) {
			snprintf(id, 40, "%s", PQgetvalue(res, 0, 0));
			found = 1;
		}
		PQclear(res);
		db_free(db);
		if (found)
			return i;
	}
	wardctl_error("no active tenant '%s' in any region", slug);
	return -1;
}

int wardctl_key_store(db_t *db, const char *tenant, uint32_t version, const uint8_t *wrapped,
		      size_t wrapped_len, uint32_t kek_version, const char **error_r)
{
	char vbuf[16], kvbuf[16];
	const char *p[4] = { tenant, vbuf, (const char *)wrapped, kvbuf };
	const int l[4] = { 0, 0, (int)wrapped_len, 0 }, f[4] = { 0, 0, 1, 0 };
	PGresult *res;

	snprintf(vbuf, sizeof vbuf, "%u", version);
	snprintf(kvbuf, sizeof kvbuf, "%u", kek_version);
	res = db_exec_bin(db,
			  "INSERT INTO tenant.keys (tenant_id, version, wrapped, kek_version) "
			  "VALUES ($1, $2::int, $3, $4::int)",
			  4, p, l, f, error_r);
	if (res == NULL)
		return -1;
	PQclear(res);
	return 0;
}

/* In the tenant's transaction: store the blind-index root if absent, then a new DEK
 * version; *from_r the newest version before, *to_r the new one. */
static int key_new_dek(db_t *db, const struct crypto_keyring *ring, const char *tenant,
		       uint32_t *from_r, uint32_t *to_r, const char **error_r)
{
	const char *p[1] = { tenant };
	PGresult *res = db_exec(db,
				"SELECT version, wrapped FROM tenant.keys WHERE tenant_id = $1 "
				"AND wrapped IS NOT NULL ORDER BY version FOR UPDATE",
				1, p, error_r);
	uint8_t dek[CRYPTO_KEY_LEN], root[CRYPTO_KEY_LEN], *w = NULL;
	const uint8_t *kek;
	uint32_t kv = 0, max = 0;
	int rows, has_root = 0, ret = -1;
	size_t wl = 0;
	char ctx[96];

	if (res == NULL)
		return -1;
	rows = PQntuples(res);
	for (int i = 0; i < rows; i++) {
		uint32_t v = (uint32_t)strtoul(PQgetvalue(res, i, 0), NULL, 10);

		if (v == 0)
			has_root = 1;
		if (v > max)
			max = v;
	}
	if (max == 0 || (kek = crypto_keyring_current(ring, &kv)) == NULL) {
		*error_r = "the tenant has no live DEK";
		goto out;
	}
	if (!has_root) {
		/* The root of the DEK the indexes were made with: before any rotation,
		 * the only one (version 1). */
		size_t ol = 0;
		unsigned char *o;
		int ok;

		if (rows != 1 || max != 1) {
			*error_r = "no blind-index root, and not only DEK version 1 (cannot tell "
				   "which DEK the indexes come from)";
			goto out;
		}
		if ((o = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 1), &ol)) == NULL) {
			*error_r = "out of memory";
			goto out;
		}
		ok = crypto_keyring_unwrap(ring, tenant, o, ol, dek, NULL) == 0;
		PQfreemem(o);
		if (!ok) {
			*error_r = "cannot unwrap DEK version 1 with the region key ring";
			goto out;
		}
		ok = crypto_blind_root(dek, root) == 0;
		crypto_wipe(dek, sizeof dek);
		snprintf(ctx, sizeof ctx, "%s%s", tenant, KEY_ROOT_CONTEXT);
		if (!ok || crypto_wrap_key(kek, kv, ctx, root, &w, &wl) < 0) {
			*error_r = "cannot derive or wrap the blind-index root";
			goto out;
		}
		if (wardctl_key_store(db, tenant, 0, w, wl, kv, error_r) < 0)
			goto out;
		free(w);
		w = NULL;
	}
	if (crypto_random(dek, sizeof dek) < 0 || crypto_wrap_key(kek, kv, tenant, dek, &w, &wl) < 0) {
		*error_r = "cannot make or wrap a DEK";
		goto out;
	}
	if (wardctl_key_store(db, tenant, max + 1, w, wl, kv, error_r) < 0)
		goto out;
	*from_r = max;
	*to_r = max + 1;
	ret = 0;
out:
	crypto_wipe(dek, sizeof dek);
	crypto_wipe(root, sizeof root);
	free(w);
	PQclear(res);
	return ret;
}

/* rotate-dek --tenant SLUG. */
static int key_rotate_dek(const struct wardctl_conf *conf, const char *slug, int batch,
			  int grace, bool keep_old)
{
	struct crypto_keyring ring;
	struct wardctl_queue wq = { 0 };
	char tenant[40], detail[256], target[64], vbuf[16];
	const char *err = NULL;
	uint32_t from = 0, to = 0;
	long done = 0, destroyed = 0;
	db_t *db = NULL;
	json_t *o = NULL;
	int region, ret = 1;

	if ((region = key_find_tenant(conf, slug, tenant)) < 0)
		return 1;
	if (conf->cell[region].kek_file == NULL ||
	    crypto_keyring_load(conf->cell[region].kek_file, &ring, &err) < 0) {
		wardctl_error("region %s: kek_file: %s", wardctl_regions[region],
			      err != NULL ? err : "not configured");
		return 1;
	}
	snprintf(target, sizeof target, "tenant:%s", tenant);
	if ((db = wardctl_db(conf, region)) == NULL)
		goto out;
	if (db_begin(db, tenant, &err) < 0 || key_new_dek(db, &ring, tenant, &from, &to, &err) < 0 ||
	    db_commit(db, &err) < 0) {
		db_rollback(db);
		wardctl_error("tenant %s: %s", slug, err);
		goto out;
	}
	snprintf(detail, sizeof detail, "{\"slug\":\"%s\",\"from_dek_version\":%u,"
		 "\"to_dek_version\":%u}", slug, from, to);
	if (wardctl_audit_record(conf, region, tenant, "key", "rotate-dek", target, detail, &err) <
	    0) {
		wardctl_error("audit event not recorded: %s", err);
		goto out;
	}
	/* First pass now (the services forget their cached keys on the request), the
	 * last after the grace period, when no daemon can hold an older version as
	 * the one that seals. */
	if (wardctl_queue_open(conf, region, NULL, &wq) < 0 ||
	    key_rekey_all(&wq, tenant, to, batch, &done) < 0)
		goto out;
	if (!keep_old) {
		const char *dp[2] = { tenant, vbuf };
		PGresult *res;

		sleep((unsigned)grace);
		if (key_rekey_all(&wq, tenant, to, batch, &done) < 0)
			goto out;
		snprintf(vbuf, sizeof vbuf, "%u", to);
		if (db_begin(db, tenant, &err) < 0 ||
		    (res = db_exec(db,
				   "UPDATE tenant.keys SET wrapped = NULL, destroyed_at = now() "
				   "WHERE tenant_id = $1 AND version > 0 AND version < $2::int "
				   "AND wrapped IS NOT NULL",
				   2, dp, &err)) == NULL) {
			db_rollback(db);
			wardctl_error("tenant %s: %s", slug, err);
			goto out;
		}
		destroyed = strtol(PQcmdTuples(res), NULL, 10);
		PQclear(res);
		if (db_commit(db, &err) < 0) {
			wardctl_error("tenant %s: %s", slug, err);
			goto out;
		}
		snprintf(detail, sizeof detail,
			 "{\"slug\":\"%s\",\"destroyed_below_dek_version\":%u,\"destroyed\":%ld}",
			 slug, to, destroyed);
		if (wardctl_audit_record(conf, region, tenant, "key", "destroy-dek", target, detail,
					 &err) < 0) {
			wardctl_error("audit event not recorded: %s", err);
			goto out;
		}
	}
	o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "tenant", slug, "id", tenant,
		      "region", wardctl_regions[region], "from_dek_version", (json_int_t)from,
		      "dek_version", (json_int_t)to, "resealed", (json_int_t)done, "destroyed",
		      (json_int_t)destroyed);
	if (o != NULL && wardctl_print(o) == 0)
		ret = 0;
out:
	crypto_keyring_wipe(&ring);
	wardctl_queue_close(&wq);
	json_decref(o);
	db_free(db);
	return ret;
}

int wardctl_key(const struct wardctl_conf *conf, int argc, char **argv)
{
	static const struct option opts[] = { { "region", required_argument, NULL, 'r' },
					      { "version", required_argument, NULL, 'v' },
					      { "retire", no_argument, NULL, 'R' },
					      { "tenant", required_argument, NULL, 't' },
					      { "batch", required_argument, NULL, 'b' },
					      { "grace", required_argument, NULL, 'g' },
					      { "keep-old", no_argument, NULL, 'K' },
					      { "destroy-old", no_argument, NULL, 'D' },
					      { "stage", no_argument, NULL, 'S' },
					      { "rewrap", no_argument, NULL, 'W' },
					      { NULL, 0, NULL, 0 } };
	const char *sub, *region_name = NULL, *slug = NULL;
	long batch = 200, grace = 65;
	bool keep_old = true, stage = false, rewrap = false;
	unsigned long version = 0;
	bool retire = false;
	char *end = NULL;
	int c, region;

	if (argc < 2) {
		fputs(wardctl_key_usage, stderr);
		return 2;
	}
	sub = argv[1];
	optind = 0;
	while ((c = getopt_long(argc - 1, argv + 1, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			region_name = optarg;
			break;
		case 'v':
			version = strtoul(optarg, &end, 10);
			if (end == optarg || *end != '\0' || version == 0 || version > INT32_MAX) {
				wardctl_error("--version: a positive integer");
				return 2;
			}
			break;
		case 'R':
			retire = true;
			break;
		case 't':
			slug = optarg;
			break;
		case 'b':
		case 'g': {
			long v;

			if (wardctl_number(optarg, c == 'b' ? 1 : 0, c == 'b' ? 10000 : 86400, &v) <
			    0) {
				wardctl_error("--%s: out of range", c == 'b' ? "batch" : "grace");
				return 2;
			}
			*(c == 'b' ? &batch : &grace) = v;
			break;
		}
		case 'K':
			keep_old = true;
			break;
		case 'D':
			keep_old = false;
			break;
		case 'S':
			stage = true;
			break;
		case 'W':
			rewrap = true;
			break;
		default:
			fputs(wardctl_key_usage, stderr);
			return 2;
		}
	}
	if (strcmp(sub, "rotate-dek") == 0) {
		if (optind < argc - 1 || slug == NULL || region_name != NULL) {
			fputs(wardctl_key_usage, stderr);
			return 2;
		}
		return key_rotate_dek(conf, slug, (int)batch, (int)grace, keep_old);
	}
	if (optind < argc - 1 || region_name == NULL) {
		fputs(wardctl_key_usage, stderr);
		return 2;
	}
	if ((region = wardctl_region_index(region_name)) < 0) {
		wardctl_error("unknown region '%s'", region_name);
		return 2;
	}
	if (conf->cell[region].kek_file == NULL) {
		wardctl_error("region %s: no kek_file in the configuration", region_name);
		return 1;
	}
	if (strcmp(sub, "rotate-kek") == 0) {
		if (stage && (rewrap || retire)) {
			wardctl_error("rotate-kek: --stage goes alone (then --rewrap [--retire])");
			return 2;
		}
		return key_rotate_kek(conf, region, retire, stage, rewrap);
	}
	if (strcmp(sub, "retire-kek") == 0) {
		if (version == 0) {
			wardctl_error("retire-kek: --version N is required");
			return 2;
		}
		return key_retire_kek(conf, region, (uint32_t)version);
	}
	if (strcmp(sub, "status") == 0)
		return key_status(conf, region);
	wardctl_error("key: unknown subcommand '%s'", sub);
	fputs(wardctl_key_usage, stderr);
	return 2;
}
