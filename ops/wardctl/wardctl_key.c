/*
 * wardctl_key — `wardctl key rotate-kek|retire-kek|status`: rotation of a region's
 * key-encryption key (SPEC §3).
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
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "crypto.h"
#include "wardctl.h"

const char wardctl_key_usage[] =
	"usage: wardctl key rotate-kek --region R [--retire]\n"
	"       wardctl key retire-kek --region R --version N\n"
	"       wardctl key status --region R\n"
	"\n"
	"rotate-kek: add a new version of the region's key-encryption key to its key ring\n"
	"(kek_file) and re-wrap every tenant DEK of the region under it, with no downtime:\n"
	"the daemons unwrap under either version meanwhile. --retire: then remove every\n"
	"older version from the ring (as retire-kek does for each).\n"
	"retire-kek: remove version N from the ring; refused while any wrapped DEK\n"
	"(live or of a closed tenant) is still wrapped under it, or if N is the current\n"
	"version. status: the ring's versions and how many DEKs each wraps.\n";

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
		if (crypto_keyring_unwrap(rw->ring, tenant, w, wl, dek, NULL) < 0) {
			PQfreemem(w);
			snprintf(msg, sizeof msg,
				 "%s: a DEK of tenant %s is wrapped under KEK version %u, which "
				 "does not unwrap it (retired, or the wrong key ring?)",
				 table, tenant, old);
			*error_r = msg;
			goto out;
		}
		ok = crypto_wrap_key(rw->kek, rw->kek_version, tenant, dek, &nw, &nl) == 0;
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
static int key_rotate_kek(const struct wardctl_conf *conf, int region, bool retire)
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
	if (crypto_random(fresh, sizeof fresh) < 0 || crypto_keyring_add(&ring, next, fresh) < 0) {
		wardctl_error("%s: the key ring is full (%d versions); retire old versions first",
			      path, CRYPTO_KEYRING_MAX);
		goto out;
	}
	crypto_wipe(fresh, sizeof fresh);
	if (crypto_keyring_save(path, &ring, &err) < 0) {
		wardctl_error("%s: %s", path, err);
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
	o = json_pack("{s:s, s:i, s:i, s:i, s:i, s:O}", "region", wardctl_regions[region],
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
		o = json_pack("{s:s, s:i}", "region", wardctl_regions[region], "retired",
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
	o = json_pack("{s:s, s:i, s:O, s:O}", "region", wardctl_regions[region], "kek_version",
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

int wardctl_key(const struct wardctl_conf *conf, int argc, char **argv)
{
	static const struct option opts[] = { { "region", required_argument, NULL, 'r' },
					      { "version", required_argument, NULL, 'v' },
					      { "retire", no_argument, NULL, 'R' },
					      { NULL, 0, NULL, 0 } };
	const char *sub, *region_name = NULL;
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
		default:
			fputs(wardctl_key_usage, stderr);
			return 2;
		}
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
	if (strcmp(sub, "rotate-kek") == 0)
		return key_rotate_kek(conf, region, retire);
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
