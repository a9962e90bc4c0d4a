/*
 * wardctl_audit_purge — retention of the audit log.
 *
 *   wardctl audit retention --region R --tenant SLUG --days N
 *   wardctl audit purge --region R [--tenant SLUG] [--as-of TIME]
 *
 * Both run as the dedicated database role ward_audit_purge (deploy/policy.yaml),
 * the only role the delete guard of audit.events lets through, and only in a
 * transaction that first wrote what it removes into audit.purges. A purge removes,
 * per tenant chain, the oldest events older than the tenant's retention (default
 * 730 days), always keeping the newest event so the chain goes on from it; the
 * next remaining event's prev_hash is the recorded upto_hash, so the chain still
 * verifies. Each purge and each retention change is itself an audit event.
 */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "wardctl.h"

#define PURGE_ROLE "ward_audit_purge"
#define PURGE_SECRET "pg-audit-purge"

/* Connect to region's database as the purge role: the operator's conninfo with the
 * role's name, and its password from the same secrets directory. */
static db_t *purge_db(const struct wardctl_conf *conf, int region)
{
	const struct wardctl_cell *cell = &conf->cell[region];
	char conninfo[1024], path[1024], dir[1024], pw[256];
	const char *err = NULL;
	size_t n;
	FILE *f;
	db_t *db;

	snprintf(dir, sizeof dir, "%s", cell->pg_password.path);
	snprintf(path, sizeof path, "%s/" PURGE_SECRET, dirname(dir));
	f = fopen(path, "r");
	if (f == NULL) {
		wardctl_error("region %s: cannot read %s", wardctl_regions[region], path);
		return NULL;
	}
	n = fread(pw, 1, sizeof pw - 1, f);
	fclose(f);
	pw[n] = '\0';
	pw[strcspn(pw, "\r\n")] = '\0';
	/* In a conninfo string the last value of a keyword wins. */
	snprintf(conninfo, sizeof conninfo, "%s user=" PURGE_ROLE, cell->pg_conninfo);
	db = db_connect(conninfo, pw, &err);
	OPENSSL_cleanse(pw, sizeof pw);
	if (db == NULL)
		wardctl_error("region %s: %s", wardctl_regions[region], err);
	return db;
}

/* Set one tenant's retention in days; recorded as an audit event. */
int wardctl_audit_retention(const struct wardctl_conf *conf, int region, const char *tenant,
			    long days)
{
	char days_s[16], detail[64];
	const char *params[2] = { tenant, days_s }, *err = NULL;
	PGresult *res;
	json_t *o;
	db_t *db;
	int ret = 1;

	if (tenant == NULL || *tenant == '\0' || days < 1 || days > 36500) {
		wardctl_error("audit retention needs --tenant and --days 1..36500");
		return 2;
	}
	snprintf(days_s, sizeof days_s, "%ld", days);
	if ((db = purge_db(conf, region)) == NULL)
		return 1;
	/* DELETE + INSERT: the role has no UPDATE anywhere in the audit schema. */
	if (db_begin(db, tenant, &err) < 0 ||
	    (res = db_exec(db, "DELETE FROM audit.retention WHERE tenant_id = $1", 1, params,
			   &err)) == NULL)
		goto fail;
	PQclear(res);
	if ((res = db_exec(db, "INSERT INTO audit.retention (tenant_id, days) VALUES ($1, $2)", 2,
			   params, &err)) == NULL)
		goto fail;
	PQclear(res);
	if (db_commit(db, &err) < 0)
		goto fail;
	snprintf(detail, sizeof detail, "{\"days\":%ld}", days);
	if (wardctl_audit_record(conf, region, tenant, "settings", "audit.retention", "audit",
				 detail, &err) < 0)
		wardctl_error("retention set, but its audit event was not recorded: %s", err);
	o = json_pack("{s:s, s:s, s:i}", "region", wardctl_regions[region], "tenant_id", tenant,
		      "days", (int)days);
	ret = o != NULL && wardctl_print(o) == 0 ? 0 : 1;
	json_decref(o);
	db_free(db);
	return ret;
fail:
	wardctl_error("region %s: %s", wardctl_regions[region], err ? err : "failed");
	db_rollback(db);
	db_free(db);
	return 1;
}

/* Purge one tenant's chain; adds {tenant_id, count, upto_seq} to out when it purged.
 * 0 (nothing or done) or -1 after printing. */
static int purge_tenant(const struct wardctl_conf *conf, int region, db_t *db,
			const char *tenant, const char *as_of, json_t *out)
{
	const char *params[2] = { tenant, as_of }, *err = NULL;
	char detail[160];
	PGresult *res = NULL;
	json_t *item;
	char *upto = NULL, *count = NULL;

	if (db_begin(db, tenant, &err) < 0)
		goto fail;
	/* The last event of the prefix older than the cut-off, never the newest event. */
	res = db_exec(db,
		      "WITH cut AS (SELECT $2::timestamptz - make_interval(days => COALESCE("
		      "  (SELECT days FROM audit.retention WHERE tenant_id = $1), 730)) AS before),"
		      " keep AS (SELECT LEAST("
		      "  COALESCE((SELECT min(seq) FROM audit.events, cut WHERE tenant_id = $1"
		      "   AND at >= cut.before), 9223372036854775807),"
		      "  (SELECT max(seq) FROM audit.events WHERE tenant_id = $1)) AS seq)"
		      " SELECT e.seq, e.hash, (SELECT count(*) FROM audit.events"
		      "   WHERE tenant_id = $1 AND seq <= e.seq), cut.before"
		      " FROM audit.events e, keep, cut WHERE e.tenant_id = $1 AND e.seq < keep.seq"
		      " ORDER BY e.seq DESC LIMIT 1",
		      2, params, &err);
	if (res == NULL)
		goto fail;
	if (PQntuples(res) == 0) {
		PQclear(res);
		db_rollback(db);
		return 0;
	}
	{
		const char *p[5] = { tenant, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
				     PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 2) };
		PGresult *r2;

		upto = strdup(p[1]);
		count = strdup(p[4]);
		if (upto == NULL || count == NULL)
			goto fail;
		/* Record first: the delete guard lets the purge role through only then. */
		r2 = db_exec(db,
			     "INSERT INTO audit.purges (tenant_id, upto_seq, upto_hash, before, count)"
			     " VALUES ($1, $2, decode(substr($3, 3), 'hex'), $4, $5)",
			     5, p, &err);
		if (r2 == NULL)
			goto fail;
		PQclear(r2);
		r2 = db_exec(db, "DELETE FROM audit.events WHERE tenant_id = $1 AND seq <= $2", 2,
			     p, &err);
		if (r2 == NULL)
			goto fail;
		PQclear(r2);
	}
	PQclear(res);
	res = NULL;
	if (db_commit(db, &err) < 0)
		goto fail;
	snprintf(detail, sizeof detail, "{\"upto_seq\":%s,\"count\":%s}", upto, count);
	if (wardctl_audit_record(conf, region, tenant, "audit", "purge", "audit:events", detail,
				 &err) < 0)
		wardctl_error("purged, but the purge's audit event was not recorded: %s", err);
	item = json_pack("{s:s, s:I, s:I}", "tenant_id", tenant, "count",
			 (json_int_t)strtoll(count, NULL, 10), "upto_seq",
			 (json_int_t)strtoll(upto, NULL, 10));
	if (item != NULL)
		json_array_append_new(out, item);
	free(upto);
	free(count);
	return 0;
fail:
	wardctl_error("region %s: purge of tenant %s: %s", wardctl_regions[region], tenant,
		      err ? err : "out of memory");
	if (res != NULL)
		PQclear(res);
	db_rollback(db);
	free(upto);
	free(count);
	return -1;
}

/* Purge every tenant of the cell (or one), retention evaluated at as_of (NULL:
 * now; a later time catches up, an earlier one keeps more); prints {"region",
 * "purged": [...]}. */
int wardctl_audit_purge(const struct wardctl_conf *conf, int region, const char *tenant,
			const char *as_of)
{
	const char *err = NULL;
	PGresult *res = NULL;
	json_t *out, *o;
	db_t *db;
	int ret = 0, i;

	if (as_of == NULL)
		as_of = "now";
	if ((db = purge_db(conf, region)) == NULL)
		return 1;
	out = json_array();
	if (tenant != NULL && *tenant != '\0') {
		ret = purge_tenant(conf, region, db, tenant, as_of, out) < 0;
	} else {
		res = db_exec(db, "SELECT id FROM tenant.tenants ORDER BY id", 0, NULL, &err);
		if (res == NULL) {
			wardctl_error("region %s: %s", wardctl_regions[region], err);
			ret = 1;
		}
		for (i = 0; res != NULL && i < PQntuples(res); i++)
			if (purge_tenant(conf, region, db, PQgetvalue(res, i, 0), as_of, out) < 0)
				ret = 1;
		if (res != NULL)
			PQclear(res);
	}
	o = json_pack("{s:s, s:o}", "region", wardctl_regions[region], "purged", out);
	if (o == NULL || wardctl_print(o) < 0)
		ret = 1;
	json_decref(o);
	db_free(db);
	return ret;
}
