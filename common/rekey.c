/*
 * rekey — re-encryption of one tenant's sealed columns under its newest DEK: the
 * columns from the catalog, batches of rows locked FOR UPDATE, each value opened
 * under the version its header names and sealed under the newest one.
 */
#include "rekey.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "log.h"

/* One sealed column. */
struct rekey_col {
	char table[64], column[64];
	int has_id;
};

#define REKEY_COLS_MAX 64

/* The sealed columns of schema (see rekey.h). */
static int rekey_columns(db_t *db, const char *schema, struct rekey_col *cols, size_t *n_r,
			 const char **error_r)
{
	const char *p[1] = { schema };
	PGresult *res = db_exec(
	    db,
	    "SELECT c.table_name, c.column_name, EXISTS (SELECT 1 FROM information_schema.columns i"
	    "  WHERE i.table_schema = c.table_schema AND i.table_name = c.table_name"
	    "  AND i.column_name = 'id') "
	    "FROM information_schema.columns c JOIN information_schema.tables t"
	    " ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
	    " AND t.table_type = 'BASE TABLE' "
	    "WHERE c.table_schema = $1 AND c.data_type = 'bytea' AND c.column_name LIKE '%\\_enc'"
	    " AND EXISTS (SELECT 1 FROM information_schema.columns k"
	    "  WHERE k.table_schema = c.table_schema AND k.table_name = c.table_name"
	    "  AND k.column_name = 'tenant_id') "
	    "ORDER BY 1, 2",
	    1, p, error_r);
	int rows;

	if (res == NULL)
		return -1;
	rows = PQntuples(res);
	if (rows > REKEY_COLS_MAX) {
		PQclear(res);
		*error_r = "too many sealed columns";
		return -1;
	}
	for (int i = 0; i < rows; i++) {
		snprintf(cols[i].table, sizeof cols[i].table, "%s", PQgetvalue(res, i, 0));
		snprintf(cols[i].column, sizeof cols[i].column, "%s", PQgetvalue(res, i, 1));
		cols[i].has_id = PQgetvalue(res, i, 2)[0] == 't';
	}
	*n_r = (size_t)rows;
	PQclear(res);
	return 0;
}

/* Re-seal one value (bytea text form) of row; 1 replaced, 0 changed meanwhile, -1. */
static int rekey_value(db_t *db, const char *schema, const struct rekey_col *c,
		       const char *qtable, const char *qcol, const char *tenant, const char *row,
		       const char *value, const struct rekey_keys *keys, const char **error_r)
{
	static char msg[256];
	unsigned char *old = NULL;
	uint8_t dek[CRYPTO_KEY_LEN], *pt = NULL, *sealed = NULL;
	size_t old_len = 0, pt_len = 0, sealed_len = 0;
	uint32_t v = 0;
	char aad[320], sql[512];
	int n, ret = -1;
	PGresult *res;

	n = snprintf(aad, sizeof aad, "%s|%s.%s|%s|%s", tenant, schema, c->table, c->column, row);
	if (n < 0 || (size_t)n >= sizeof aad) {
		*error_r = "associated data too long";
		return -1;
	}
	if ((old = PQunescapeBytea((const unsigned char *)value, &old_len)) == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	if (crypto_sealed_key_version(old, old_len, &v) < 0) {
		snprintf(msg, sizeof msg, "%s.%s.%s: a value is not sealed", schema, c->table,
			 c->column);
		*error_r = msg;
		goto out;
	}
	if (keys->dek(keys->arg, v, dek, error_r) < 0) {
		snprintf(msg, sizeof msg, "%s.%s.%s: a value names DEK version %u: %s", schema,
			 c->table, c->column, v, *error_r != NULL ? *error_r : "no such key");
		*error_r = msg;
		goto out;
	}
	n = crypto_open(dek, aad, (size_t)n, old, old_len, &pt, &pt_len, NULL);
	crypto_wipe(dek, sizeof dek);
	if (n < 0) {
		snprintf(msg, sizeof msg,
			 "%s.%s.%s: a value under DEK version %u does not open (tampered or moved)",
			 schema, c->table, c->column, v);
		*error_r = msg;
		goto out;
	}
	if (crypto_seal(keys->new_dek, keys->new_version, aad, strlen(aad), pt, pt_len, &sealed,
			&sealed_len) < 0) {
		*error_r = "cannot encrypt";
		goto out;
	}
	snprintf(sql, sizeof sql,
		 "UPDATE %s.%s SET %s = $1 WHERE %s = $2 AND tenant_id = $3 AND %s = $4",
		 schema, qtable, qcol, c->has_id ? "id" : "tenant_id", qcol);
	{
		const char *p[4] = { (const char *)sealed, row, tenant, (const char *)old };
		const int l[4] = { (int)sealed_len, 0, 0, (int)old_len }, f[4] = { 1, 0, 0, 1 };

		res = db_exec_bin(db, sql, 4, p, l, f, error_r);
	}
	if (res == NULL)
		goto out;
	ret = strcmp(PQcmdTuples(res), "1") == 0 ? 1 : 0;
	PQclear(res);
out:
	if (pt != NULL) {
		crypto_wipe(pt, pt_len + 1);
		free(pt);
	}
	free(sealed);
	PQfreemem(old);
	return ret;
}

int rekey_schema(db_t *db, const char *schema, const char *tenant, const struct rekey_keys *keys,
		 long batch, long *done_r, long *remaining_r, const char **error_r)
{
	struct rekey_col cols[REKEY_COLS_MAX];
	PGconn *conn = db_conn(db);
	size_t n = 0;
	char vbuf[16], lbuf[24], sql[768];
	long done = 0, remaining = 0;
	int ret = -1;

	*done_r = *remaining_r = 0;
	if (rekey_columns(db, schema, cols, &n, error_r) < 0)
		return -1;
	snprintf(vbuf, sizeof vbuf, "%u", keys->new_version);
	for (size_t i = 0; i < n; i++) {
		char *qt = PQescapeIdentifier(conn, cols[i].table, strlen(cols[i].table));
		char *qc = PQescapeIdentifier(conn, cols[i].column, strlen(cols[i].column));
		const char *p[3] = { tenant, vbuf, lbuf };
		PGresult *res = NULL;
		int bad = 0;

		if (qt == NULL || qc == NULL) {
			PQfreemem(qt);
			PQfreemem(qc);
			*error_r = "out of memory";
			return -1;
		}
		snprintf(lbuf, sizeof lbuf, "%ld", batch - done > 0 ? batch - done : 0);
		if (batch - done > 0) {
			snprintf(sql, sizeof sql,
				 "SELECT %s::text, %s FROM %s.%s WHERE tenant_id = $1 AND %s IS NOT "
				 "NULL AND substring(%s from 2 for 4) <> int4send($2::int) "
				 "LIMIT $3::int FOR UPDATE",
				 cols[i].has_id ? "id" : "tenant_id", qc, schema, qt, qc, qc);
			res = db_exec(db, sql, 3, p, error_r);
			for (int r = 0; res != NULL && r < PQntuples(res); r++) {
				int k = rekey_value(db, schema, &cols[i], qt, qc, tenant,
						    PQgetvalue(res, r, 0), PQgetvalue(res, r, 1),
						    keys, error_r);

				if (k < 0) {
					bad = 1;
					break;
				}
				done += k;
			}
			if (res == NULL)
				bad = 1;
			PQclear(res);
		}
		if (!bad) {
			snprintf(sql, sizeof sql,
				 "SELECT count(*) FROM %s.%s WHERE tenant_id = $1 AND %s IS NOT NULL "
				 "AND substring(%s from 2 for 4) <> int4send($2::int)",
				 schema, qt, qc, qc);
			res = db_exec(db, sql, 2, p, error_r);
			if (res == NULL)
				bad = 1;
			else
				remaining += strtol(PQgetvalue(res, 0, 0), NULL, 10);
			PQclear(res);
		}
		PQfreemem(qt);
		PQfreemem(qc);
		if (bad)
			goto out;
	}
	*done_r = done;
	*remaining_r = remaining;
	ret = 0;
out:
	return ret;
}

queue_result_t rekey_answer(const char *method, const char *tenant, Ward__RekeyRequest *req,
			    const char *err, uint32_t dek_version, long done, long remaining,
			    struct queue_reply *reply, const char **error_r)
{
	static char errbuf[300];
	Ward__RekeyReply out = WARD__REKEY_REPLY__INIT;

	ward__rekey_request__free_unpacked(req, NULL);
	if (err != NULL) {
		snprintf(errbuf, sizeof errbuf, "%s: %s", method, err);
		log_warn("%s (tenant %s)", errbuf, tenant);
		reply->status = 422;
		reply->error = errbuf;
		return QUEUE_DONE;
	}
	out.dek_version = dek_version;
	out.done = done;
	out.remaining = remaining;
	reply->len = ward__rekey_reply__get_packed_size(&out);
	if ((reply->data = malloc(reply->len ? reply->len : 1)) == NULL) {
		*error_r = "out of memory";
		return QUEUE_RETRY;
	}
	ward__rekey_reply__pack(&out, reply->data);
	log_info("%s tenant %s: %ld re-sealed under DEK version %u, %ld remaining", method, tenant,
		 done, dek_version, remaining);
	return QUEUE_DONE;
}
