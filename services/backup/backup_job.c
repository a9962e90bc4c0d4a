/*
 * backup_job — per-tenant logical backups and their verification and restore.
 *
 * run: one REPEATABLE READ, read-only transaction under the tenant's row-level
 * security reads every tenant table (the rows and order of backup.dump_rows: streamed
 * by COPY in binary format, one table at a time, sorted here) into a stream of lines
 * cut into sealed chunks, written under a temporary name and renamed into place once
 * the authenticated manifest is on disk; the catalog row and the audit event are
 * committed together.
 * verify/restore: the manifest and every chunk are read, hashed, opened and parsed
 * completely before anything is written (nothing half-restored); verify loads each
 * table into a scratch temporary table and compares counts and checksums with the
 * manifest; restore puts the rows back in one transaction (tenant.lifecycle_*;
 * lifecycle_restore_rows reads each table's rows once, deploy/sql/057).
 */
#include <dirent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auditlog.h"
#include "backup.h"
#include "backup_job.h"
#include "crypto.h"
#include "daemon.h"
#include "envelope.h"
#include "log.h"

#define TABLE_NAME_MAX 128
/* snprintf into an array; true if the text did not fit. */
#define PATHF(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__) >= (int)sizeof buf)

static char job_err[512];

/* Format a message into the module's error buffer and return it. */
static const char *job_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *job_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	/* A message cut short is still a message. */
	if (vsnprintf(job_err, sizeof job_err, fmt, ap) < 0)
		job_err[0] = '\0';
	va_end(ap);
	return job_err;
}

/* Wipe rows of tenant data before their memory goes back (megabytes at a time:
 * explicit_bzero is memset's speed, OPENSSL_cleanse a plain loop; keys keep
 * crypto_wipe). */
static void rows_wipe(void *p, size_t n)
{
	if (p != NULL && n > 0)
		explicit_bzero(p, n);
}

/* ------------------------------------------------------------------ tables */

/* The rows of one table as they stream by: a JSON array and a running SHA-256. */
struct bk_table {
	char name[TABLE_NAME_MAX]; /* "schema.table" */
	char *json;		   /* "[row,row,…]" being built (verify/restore) */
	size_t len, cap;
	long long rows;
	EVP_MD_CTX *sha;
	char sha_hex[65];
};

struct bk_tables {
	struct bk_table *t;
	size_t n;
};

static void tables_free(struct bk_tables *ts)
{
	for (size_t i = 0; i < ts->n; i++) {
		free(ts->t[i].json);
		EVP_MD_CTX_free(ts->t[i].sha);
	}
	free(ts->t);
	ts->t = NULL;
	ts->n = 0;
}

/* Append a table; -1 on allocation failure or a bad name. */
static int tables_add(struct bk_tables *ts, const char *name)
{
	struct bk_table *t = realloc(ts->t, (ts->n + 1) * sizeof *t);

	if (t == NULL)
		return -1;
	ts->t = t;
	t = &ts->t[ts->n];
	memset(t, 0, sizeof *t);
	if (strlen(name) >= sizeof t->name || (t->sha = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(t->sha, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(t->sha);
		return -1;
	}
	snprintf(t->name, sizeof t->name, "%s", name);
	ts->n++;
	return 0;
}

static struct bk_table *tables_find(struct bk_tables *ts, const char *name, size_t len)
{
	for (size_t i = 0; i < ts->n; i++)
		if (strlen(ts->t[i].name) == len && memcmp(ts->t[i].name, name, len) == 0)
			return &ts->t[i];
	return NULL;
}

/* Grow a buffer to hold need more bytes. */
static int buf_reserve(char **buf, size_t *cap, size_t len, size_t need)
{
	size_t ncap = *cap ? *cap : 4096;
	char *nb;

	if (len + need + 1 <= *cap)
		return 0;
	while (ncap < len + need + 1)
		ncap *= 2;
	nb = realloc(*buf, ncap);
	if (nb == NULL)
		return -1;
	*buf = nb;
	*cap = ncap;
	return 0;
}

/* Account one row to a table: hash (rows joined by '\n'), and keep it if keep. */
static int table_row(struct bk_table *t, const char *row, size_t len, int keep)
{
	if ((t->rows > 0 && EVP_DigestUpdate(t->sha, "\n", 1) != 1) ||
	    EVP_DigestUpdate(t->sha, row, len) != 1)
		return -1;
	t->rows++;
	if (!keep)
		return 0;
	if (buf_reserve(&t->json, &t->cap, t->len, len + 2) < 0)
		return -1;
	t->json[t->len++] = t->rows == 1 ? '[' : ',';
	memcpy(t->json + t->len, row, len);
	t->len += len;
	t->json[t->len] = '\0';
	return 0;
}

/* Finish a table: its hash in hex, its JSON array closed. */
static int table_finish(struct bk_table *t)
{
	uint8_t md[32];
	unsigned int mdlen = 0;

	if (EVP_DigestFinal_ex(t->sha, md, &mdlen) != 1 || mdlen != 32)
		return -1;
	crypto_hex(md, 32, t->sha_hex);
	if (buf_reserve(&t->json, &t->cap, t->len, 2) < 0)
		return -1;
	if (t->rows == 0)
		t->json[t->len++] = '[';
	t->json[t->len++] = ']';
	t->json[t->len] = '\0';
	return 0;
}

/* ------------------------------------------------------------------ keys */

/* bytea in text format ("\x…") into bytes; *out_r malloc'd. */
static int bytea_decode(const char *text, uint8_t **out_r, size_t *len_r)
{
	size_t n;

	if (strncmp(text, "\\x", 2) != 0 || (n = strlen(text + 2)) % 2 != 0 || n == 0)
		return -1;
	*out_r = malloc(n / 2);
	if (*out_r == NULL)
		return -1;
	if (crypto_unhex(text + 2, *out_r, n / 2) < 0) {
		free(*out_r);
		*out_r = NULL;
		return -1;
	}
	*len_r = n / 2;
	return 0;
}

/* Inside a transaction for tenant_id: the DEK of version (0 = newest live one), from
 * the live keys or a closed tenant's kept keys. */
static int tenant_dek(const struct backup_ctx *c, const char *tenant_id, uint32_t version,
		      uint8_t dek[CRYPTO_KEY_LEN], uint32_t *version_r, const char **error_r)
{
	char v[16];
	const char *params[2] = { tenant_id, v };
	PGresult *res;
	uint8_t *wrapped = NULL;
	size_t wlen;
	int ret = -1;

	snprintf(v, sizeof v, "%u", version);
	res = db_exec(c->db,
		      "SELECT version, wrapped FROM ("
		      " SELECT version, wrapped FROM tenant.keys WHERE tenant_id = $1"
		      "  AND wrapped IS NOT NULL"
		      " UNION ALL SELECT version, wrapped FROM tenant.closed_keys"
		      "  WHERE tenant_id = $1) k"
		      " WHERE $2::int = 0 OR version = $2::int ORDER BY version DESC LIMIT 1",
		      2, params, error_r);
	if (res == NULL)
		return -1;
	if (PQntuples(res) != 1) {
		*error_r = "the tenant's key is destroyed (shredded or purged): its backups "
			   "cannot be read";
		goto out;
	}
	if (bytea_decode(PQgetvalue(res, 0, 1), &wrapped, &wlen) < 0 ||
	    daemon_unwrap_key(c->d, tenant_id, wrapped, wlen, dek, error_r) < 0) {
		if (wrapped == NULL)
			*error_r = "cannot decode the tenant's wrapped key";
		goto out;
	}
	*version_r = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
	ret = 0;
out:
	free(wrapped);
	PQclear(res);
	return ret;
}

/* ------------------------------------------------------------------ run */

/* The chunk writer of one backup in progress. */
struct bk_writer {
	struct backup_target *target;
	const char *tenant_id, *backup_id;
	uint8_t key[CRYPTO_KEY_LEN];
	uint32_t dek_version;
	char *buf;
	size_t len, cap, chunk_size;
	uint32_t index;
	long long bytes;
	json_t *chunks;
	const char *error; /* why the last flush failed */
};

/* Seal and write the buffered plaintext as the next chunk. */
static int writer_flush(struct bk_writer *w)
{
	char key[128], hex[65];
	uint8_t *sealed = NULL, md[32];
	size_t slen;
	int ret = -1;

	if (w->len == 0)
		return 0;
	if (atomic_load(&backup_cancel)) {
		w->error = "ward-backup is shutting down: backup abandoned";
		return -1;
	}
	if (PATHF(key, "%s/%s/chunk-%06u", w->tenant_id, w->backup_id, w->index))
		key[0] = '\0'; /* an empty key is refused */
	if (backup_chunk_seal(w->key, w->dek_version, w->tenant_id, w->backup_id, w->index,
			      w->buf, w->len, &sealed, &slen) < 0 ||
	    crypto_sha256(sealed, slen, md) < 0) {
		w->error = "cannot seal a backup chunk";
		goto out;
	}
	if (backup_target_put_nosync(w->target, key, sealed, slen, &w->error) < 0)
		goto out;
	crypto_hex(md, 32, hex);
	if (json_array_append_new(w->chunks, json_pack("{s:I, s:I, s:s}", "size", (json_int_t)slen,
						       "plain", (json_int_t)w->len, "sha256",
						       hex)) < 0)
		goto out;
	w->bytes += (long long)slen;
	w->index++;
	rows_wipe(w->buf, w->len);
	w->len = 0;
	ret = 0;
out:
	free(sealed);
	return ret;
}

/* Append one line "<table>\t<row>\n" to the stream. */
static int writer_line(struct bk_writer *w, const char *table, const char *row, size_t len)
{
	size_t tl = strlen(table);

	if (buf_reserve(&w->buf, &w->cap, w->len, tl + len + 2) < 0)
		return -1;
	memcpy(w->buf + w->len, table, tl);
	w->buf[w->len + tl] = '\t';
	memcpy(w->buf + w->len + tl + 1, row, len);
	w->buf[w->len + tl + 1 + len] = '\n';
	w->len += tl + len + 2;
	return w->len >= w->chunk_size ? writer_flush(w) : 0;
}

/* Remove every object of a backup from the target, the manifest first (so a
 * half-removed backup is never one that looks whole). -1 if one could not go. */
static int backup_objects_remove(struct backup_target *t, const char *tenant_id,
				 const char *backup_id, const char **error_r)
{
	char prefix[128], key[160];
	char **keys = NULL;
	size_t n = 0;
	int ret = 0;

	if (PATHF(prefix, "%s/%s/", tenant_id, backup_id) || PATHF(key, "%smanifest", prefix) ||
	    backup_target_delete(t, key, error_r) < 0 ||
	    backup_target_list(t, prefix, &keys, &n, error_r) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (backup_target_delete(t, keys[i], error_r) < 0)
			ret = -1;
	backup_keys_free(keys, n);
	return ret;
}

/* Record an audit event about tenant_id in the open transaction; detail is taken over. */
static int job_audit(const struct backup_ctx *c, const char *tenant_id, const char *action,
		     const char *target, json_t *detail, const char **error_r)
{
	Ward__AuditEvent ev = WARD__AUDIT_EVENT__INIT;
	char *dj = detail != NULL ? json_dumps(detail, JSON_COMPACT) : NULL;
	int ret;

	ev.tenant_id = (char *)tenant_id;
	ev.type = "backup";
	ev.action = (char *)action;
	ev.actor = (char *)c->actor;
	ev.target = (char *)target;
	ev.detail_json = dj != NULL ? dj : "";
	ret = auditlog_record(c->db, "backup", &ev, error_r);
	free(dj);
	json_decref(detail); /* taken over */
	return ret;
}

/* The rows of one table as COPY … (FORMAT binary) sends them: the whole stream in one
 * buffer, then each row's place in it, sorted. */
struct bk_dump {
	char *buf;
	size_t len, cap;
	struct bk_row {
		const char *p;
		size_t len;
	} *rows;
	size_t n, next; /* rows; the next one to write */
	size_t table;	/* its index in the bk_tables */
	int stream;	/* rows come sorted: written as they arrive, not kept */
	size_t pos;	/* stream: bytes of buf parsed */
	int header, trailer; /* stream: seen */
};

static void dump_free(struct bk_dump *d)
{
	if (d->buf != NULL)
		rows_wipe(d->buf, d->len);
	free(d->buf);
	free(d->rows);
	memset(d, 0, sizeof *d);
}

/* Bytewise order, a prefix first: ORDER BY r COLLATE "C". */
static int row_cmp(const void *a, const void *b)
{
	const struct bk_row *x = a, *y = b;
	int r = memcmp(x->p, y->p, x->len < y->len ? x->len : y->len);

	return r != 0 ? r : (x->len > y->len) - (x->len < y->len);
}

static uint32_t be32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

#define COPY_MALFORMED "the server sent a malformed COPY stream"

/* The binary COPY header at p (avail bytes): its length, 0 if incomplete, -1 if bad. */
static long copy_header(const char *p, size_t avail)
{
	static const char sig[11] = "PGCOPY\n\377\r\n";

	if (avail < 19)
		return 0;
	/* Signature, flags (no OIDs), extension area. */
	if (memcmp(p, sig, sizeof sig) != 0 || (be32(p + 11) & 0xffff0000u) != 0 ||
	    be32(p + 15) > (1u << 20))
		return -1;
	return avail < 19 + (size_t)be32(p + 15) ? 0 : 19 + (long)be32(p + 15);
}

/* One tuple of one text column at p (avail bytes): its length with its 6-byte head
 * (the row is at p + 6), 0 if incomplete, -1 if bad; *trailer_r set at the end mark. */
static long copy_tuple(const char *p, size_t avail, int *trailer_r)
{
	uint32_t len;

	*trailer_r = 0;
	if (avail < 2)
		return 0;
	if (p[0] == '\377' && p[1] == '\377') { /* field count -1: the trailer */
		*trailer_r = 1;
		return 2;
	}
	/* One field, not NULL (row_to_json of a row never is). */
	if (p[0] != 0 || p[1] != 1)
		return -1;
	if (avail < 6)
		return 0;
	if ((len = be32(p + 2)) > 0x7fffffffu)
		return -1;
	return avail - 6 < len ? 0 : 6 + (long)len;
}

/* Split the whole binary COPY stream of one text column into rows and sort them. */
static int dump_parse(struct bk_dump *d, const char **error_r)
{
	const char *p = d->buf, *end = d->buf + d->len;
	size_t cap = 0;
	long h = copy_header(p, d->len);
	int trailer = 0;

	*error_r = COPY_MALFORMED;
	if (h <= 0)
		return -1;
	for (p += h; !trailer; p += h) {
		if ((h = copy_tuple(p, (size_t)(end - p), &trailer)) <= 0)
			return -1;
		if (trailer)
			break;
		if (d->n == cap) {
			struct bk_row *nr;

			cap = cap ? cap * 2 : 1024;
			if ((nr = realloc(d->rows, cap * sizeof *nr)) == NULL) {
				*error_r = "out of memory";
				return -1;
			}
			d->rows = nr;
		}
		d->rows[d->n].p = p + 6;
		d->rows[d->n].len = (size_t)h - 6;
		d->n++;
	}
	if (d->n > 0)
		qsort(d->rows, d->n, sizeof *d->rows, row_cmp);
	return 0;
}

/* Stream mode: write the complete rows received so far (the server sorted them) and
 * keep only an incomplete tail. */
static int dump_stream(struct bk_writer *w, struct bk_tables *ts, struct bk_dump *d,
		       const char **error_r)
{
	struct bk_table *t = &ts->t[d->table];
	long h;

	for (;;) {
		if (!d->header) {
			if ((h = copy_header(d->buf + d->pos, d->len - d->pos)) == 0)
				break;
			d->header = 1;
		} else if (!d->trailer) {
			if ((h = copy_tuple(d->buf + d->pos, d->len - d->pos, &d->trailer)) == 0)
				break;
			if (h > 0 && !d->trailer &&
			    (table_row(t, d->buf + d->pos + 6, (size_t)h - 6, 0) < 0 ||
			     writer_line(w, t->name, d->buf + d->pos + 6, (size_t)h - 6) < 0)) {
				*error_r = w->error ? w->error : "cannot write a backup chunk";
				return -1;
			}
		} else if (d->pos == d->len) {
			break;
		} else {
			h = -1; /* nothing may follow the trailer */
		}
		if (h < 0) {
			*error_r = COPY_MALFORMED;
			return -1;
		}
		d->pos += (size_t)h;
	}
	/* The tail to the front, and nothing of the rows written left behind it. */
	memmove(d->buf, d->buf + d->pos, d->len - d->pos);
	rows_wipe(d->buf + d->len - d->pos, d->pos);
	d->len -= d->pos;
	d->pos = 0;
	return 0;
}

/* Write the rows of a dumped table from d->next on through the writer, about max bytes
 * of them (SIZE_MAX: all), hashing them into its table. */
static int dump_write(struct bk_writer *w, struct bk_tables *ts, struct bk_dump *d, size_t max,
		      const char **error_r)
{
	struct bk_table *t = &ts->t[d->table];
	size_t done = 0;

	while (d->next < d->n && done < max) {
		const struct bk_row *r = &d->rows[d->next++];

		if (table_row(t, r->p, r->len, 0) < 0 || writer_line(w, t->name, r->p, r->len) < 0) {
			*error_r = w->error ? w->error : "cannot write a backup chunk";
			return -1;
		}
		done += r->len;
	}
	return 0;
}

/* Read every row of sch.tbl visible under the tenant's row-level security as JSON text
 * into d, sorted bytewise: exactly what backup.dump_rows returns (which verify_rows
 * checksums against). COPY streams the rows as the server makes them (no cursor round
 * trips, no tuplestore or sort on the server, nothing escaped in binary format); the
 * sort is done here. While the server is busy making them, the rows of the previous
 * table (prev, if not NULL) are sealed and written. A table too big to sort here
 * (d->stream) is sorted by the server and written as it arrives. The names come from
 * backup.tenant_tables() (the catalog) and are quoted anyway. */
static int dump_table(const struct backup_ctx *c, const char *sch, const char *tbl,
		      struct bk_dump *d, struct bk_writer *w, struct bk_tables *ts,
		      struct bk_dump *prev, const char **error_r)
{
	PGconn *conn = db_conn(c->db);
	char *qs = PQescapeIdentifier(conn, sch, strlen(sch));
	char *qt = PQescapeIdentifier(conn, tbl, strlen(tbl));
	char sql[512], *data = NULL;
	PGresult *r = NULL;
	int n, ret = -1;

	if (qs == NULL || qt == NULL ||
	    PATHF(sql, "COPY (SELECT r FROM (SELECT row_to_json(t)::text AS r FROM %s.%s t) x%s) "
		       "TO STDOUT (FORMAT binary)",
		       qs, qt, d->stream ? " ORDER BY r COLLATE \"C\"" : "")) {
		*error_r = "bad table name";
		goto out;
	}
	r = PQexec(conn, sql);
	if (PQresultStatus(r) != PGRES_COPY_OUT) {
		*error_r = job_error("cannot read %s.%s: %s", sch, tbl,
				     r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(conn));
		goto out;
	}
	PQclear(r);
	r = NULL;
	for (;;) {
		int busy = prev != NULL && prev->next < prev->n;

		n = PQgetCopyData(conn, &data, busy);
		if (n > 0) {
			if (buf_reserve(&d->buf, &d->cap, d->len, (size_t)n) < 0) {
				*error_r = "out of memory";
				PQfreemem(data);
				goto drain;
			}
			memcpy(d->buf + d->len, data, (size_t)n);
			d->len += (size_t)n;
			PQfreemem(data);
			if (d->stream && dump_stream(w, ts, d, error_r) < 0)
				goto drain;
			continue;
		}
		if (n < 0)
			break;
		/* Nothing has arrived yet: one chunk of the previous table meanwhile. */
		if (dump_write(w, ts, prev, w->chunk_size, error_r) < 0)
			goto drain;
		if (PQconsumeInput(conn) == 0) {
			*error_r = job_error("cannot read %s.%s: %s", sch, tbl, PQerrorMessage(conn));
			goto out;
		}
	}
	if (n == -2) {
		*error_r = job_error("cannot read %s.%s: %s", sch, tbl, PQerrorMessage(conn));
		goto out;
	}
	r = PQgetResult(conn);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		*error_r = job_error("cannot read %s.%s: %s", sch, tbl,
				     r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(conn));
		goto drain;
	}
	if (!d->stream)
		ret = dump_parse(d, error_r);
	else if (!d->trailer || d->len != 0)
		*error_r = COPY_MALFORMED;
	else
		ret = 0;
drain:
	/* The rest of the COPY and its results: the connection must be usable after. */
	while (ret < 0 && (n = PQgetCopyData(conn, &data, 0)) > 0)
		PQfreemem(data);
	PQclear(r);
	while ((r = PQgetResult(conn)) != NULL)
		PQclear(r);
out:
	PQclear(r);
	PQfreemem(qs);
	PQfreemem(qt);
	return ret;
}

/* Write what is left of a dumped table, finish its hash, free it (left empty). */
static int dump_finish(struct bk_writer *w, struct bk_tables *ts, struct bk_dump *d,
		       const char **error_r)
{
	if (dump_write(w, ts, d, SIZE_MAX, error_r) < 0)
		return -1;
	if (table_finish(&ts->t[d->table]) < 0) {
		*error_r = "cannot hash a table";
		return -1;
	}
	dump_free(d);
	return 0;
}

/* Dump every tenant table through the writer, hashing rows per table: each table is
 * read whole and sorted, then written while the next one is read; one bigger than
 * backup.sort_mib on disk is sorted by the server and written as it comes. */
static int run_dump(const struct backup_ctx *c, struct bk_writer *w, struct bk_tables *ts,
		    const char **error_r)
{
	PGresult *res = db_exec(c->db,
				"SELECT sch, tbl, pg_relation_size(format('%I.%I', sch, tbl)::regclass)"
				" FROM backup.tenant_tables()",
				0, NULL, error_r);
	struct bk_dump dumps[2] = { { 0 }, { 0 } }, *cur = &dumps[0], *prev = NULL;
	long long sort_max = (long long)c->conf->sort_mib * 1024 * 1024;
	int ret = -1;

	if (res == NULL)
		return -1;
	for (int i = 0; i < PQntuples(res); i++) {
		const char *sch = PQgetvalue(res, i, 0), *tbl = PQgetvalue(res, i, 1);
		char name[TABLE_NAME_MAX];

		snprintf(name, sizeof name, "%s.%s", sch, tbl);
		if (tables_add(ts, name) < 0) {
			*error_r = "out of memory";
			goto out;
		}
		cur->table = ts->n - 1;
		/* The table's rows (all tenants') on disk against what may be sorted here:
		 * the JSON text is bigger, and two tables are held at a time. */
		cur->stream = atoll(PQgetvalue(res, i, 2)) > sort_max;
		/* The previous table's rows come first in the stream: all of them before
		 * this one's are streamed, the rest while this one is read. */
		if (prev != NULL && cur->stream) {
			if (dump_finish(w, ts, prev, error_r) < 0)
				goto out;
			prev = NULL;
		}
		if (dump_table(c, sch, tbl, cur, w, ts, cur->stream ? NULL : prev, error_r) < 0)
			goto out;
		if (cur->stream) {
			if (table_finish(&ts->t[cur->table]) < 0) {
				*error_r = "cannot hash a table";
				goto out;
			}
			dump_free(cur);
			continue;
		}
		if (prev != NULL && dump_finish(w, ts, prev, error_r) < 0)
			goto out;
		prev = cur;
		cur = cur == &dumps[0] ? &dumps[1] : &dumps[0];
	}
	if (prev != NULL && dump_finish(w, ts, prev, error_r) < 0)
		goto out;
	if (writer_flush(w) < 0) {
		*error_r = w->error ? w->error : "cannot write a backup chunk";
		goto out;
	}
	ret = 0;
out:
	dump_free(&dumps[0]);
	dump_free(&dumps[1]);
	PQclear(res);
	return ret;
}

static int job_run(const struct backup_ctx *c, const char *tenant_id, const char *slug,
		   json_t **out_r, const char **error_r)
{
	struct bk_writer w = { 0 };
	struct bk_tables ts = { 0 };
	uint8_t dek[CRYPTO_KEY_LEN], salt[BACKUP_SALT_LEN], *mf = NULL;
	char backup_id[33], mkey[128], started[32];
	char schema_version[64] = "", *mjson = NULL;
	const char *params[2] = { tenant_id, NULL };
	json_t *manifest = NULL, *tables = NULL;
	PGresult *res;
	size_t mlen;
	long long rows = 0;
	time_t now = time(NULL);
	int ret = -1, in_tx = 0;

	strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	if (crypto_random_id(backup_id) < 0 || crypto_random(salt, sizeof salt) < 0) {
		*error_r = "no random bytes";
		return -1;
	}
	if (PATHF(mkey, "%s/%s/manifest", tenant_id, backup_id)) {
		*error_r = "bad tenant id";
		return -1;
	}
	/* One snapshot of every table of the tenant, read-only, under its RLS. */
	res = db_exec(c->db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, error_r);
	if (res == NULL)
		goto out;
	PQclear(res);
	in_tx = 1;
	res = db_exec(c->db, "SELECT set_config('app.tenant_id', $1, true), "
			     "backup.schema_version()",
		      1, params, error_r);
	if (res == NULL)
		goto out;
	snprintf(schema_version, sizeof schema_version, "%s", PQgetvalue(res, 0, 1));
	PQclear(res);
	if (tenant_dek(c, tenant_id, 0, dek, &w.dek_version, error_r) < 0)
		goto out;
	w.target = c->target;
	w.tenant_id = tenant_id;
	w.backup_id = backup_id;
	w.chunk_size = (size_t)c->conf->chunk_kib * 1024;
	w.chunks = json_array();
	if (w.chunks == NULL || backup_key_derive(dek, salt, tenant_id, backup_id, w.key) < 0) {
		*error_r = "cannot derive the backup key";
		goto out;
	}
	if (run_dump(c, &w, &ts, error_r) < 0)
		goto out;
	db_rollback(c->db); /* read-only: nothing to commit */
	in_tx = 0;
	tables = json_array();
	for (size_t i = 0; tables != NULL && i < ts.n; i++) {
		rows += ts.t[i].rows;
		json_array_append_new(tables, json_pack("{s:s, s:I, s:s}", "name", ts.t[i].name,
							"rows", (json_int_t)ts.t[i].rows,
							"sha256", ts.t[i].sha_hex));
	}
	now = time(NULL);
	manifest = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:i, s:I, s:I, s:I, s:O, "
			     "s:O}",
			     "format", 1, "backup_id", backup_id, "tenant_id", tenant_id, "slug",
			     slug, "region", c->region, "started_at", started, "finished_ms",
			     (json_int_t)now * 1000, "schema_version", schema_version,
			     "dek_version", (int)w.dek_version, "chunk_size",
			     (json_int_t)w.chunk_size, "rows", (json_int_t)rows, "bytes",
			     (json_int_t)w.bytes, "chunks", w.chunks, "tables", tables);
	mjson = manifest != NULL ? json_dumps(manifest, JSON_COMPACT) : NULL;
	if (mjson == NULL ||
	    backup_manifest_seal(w.key, w.dek_version, salt, tenant_id, backup_id, mjson, &mf,
				 &mlen) < 0) {
		*error_r = "cannot seal the backup manifest";
		goto out;
	}
	/* Every chunk is stored durably (and checked by the target) before the manifest
	 * that names it; the manifest is read back and compared before the backup counts. */
	if (backup_target_sync(c->target, error_r) < 0 ||
	    backup_target_put(c->target, mkey, mf, mlen, error_r) < 0)
		goto out;
	{
		uint8_t *back = NULL;
		size_t blen = 0;
		int same = backup_target_get(c->target, mkey, BACKUP_MANIFEST_MAX + 4096, &back,
					     &blen, error_r) == 0 &&
			   blen == mlen && memcmp(back, mf, mlen) == 0;

		free(back);
		if (!same) {
			*error_r = job_error("the manifest read back from %s differs from what was "
					     "written",
					     backup_target_name(c->target));
			goto out;
		}
	}
	/* The catalog row and its audit event, together. */
	{
		char dv[16], ch[16], rw[24], by[24];
		const char *p[9] = { backup_id, tenant_id, slug, started, dv, ch, rw, by,
				     backup_target_name(c->target) };

		snprintf(dv, sizeof dv, "%u", w.dek_version);
		snprintf(ch, sizeof ch, "%u", w.index);
		snprintf(rw, sizeof rw, "%lld", rows);
		snprintf(by, sizeof by, "%lld", w.bytes);
		if (db_begin(c->db, NULL, error_r) < 0)
			goto out;
		in_tx = 1;
		res = db_exec(c->db,
			      "INSERT INTO backup.backups (id, tenant_id, slug, started_at, "
			      "finished_at, dek_version, chunks, rows, bytes, status, target) VALUES "
			      "($1, $2, $3, $4, now(), $5, $6, $7, $8, 'done', $9)",
			      9, p, error_r);
		if (res == NULL)
			goto out;
		PQclear(res);
		if (job_audit(c, tenant_id, "create", backup_id,
			      json_pack("{s:I, s:I, s:i}", "rows", (json_int_t)rows, "bytes",
					(json_int_t)w.bytes, "chunks", (int)w.index),
			      error_r) < 0 ||
		    db_commit(c->db, error_r) < 0)
			goto out;
		in_tx = 0;
	}
	*out_r = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:i}", "backup_id", backup_id,
			   "tenant_id", tenant_id, "slug", slug, "started_at", started, "rows",
			   (json_int_t)rows, "bytes", (json_int_t)w.bytes, "chunks", (int)w.index);
	ret = *out_r != NULL ? 0 : -1;
out:
	if (in_tx)
		db_rollback(c->db);
	if (ret < 0) {
		/* Best effort: a target that is down keeps orphan chunks, never a manifest
		 * naming a missing one (the next prune sweeps them: sweep_orphans). */
		const char *rerr = NULL;
		char why[sizeof job_err];

		/* The cause first: the cleanup may reuse the target's message buffer. */
		snprintf(why, sizeof why, "%s", *error_r != NULL ? *error_r : "backup failed");
		*error_r = job_error("%s", why);
		if (backup_objects_remove(c->target, tenant_id, backup_id, &rerr) < 0)
			log_warn("backup %s: cannot remove its partial objects: %s", backup_id,
				 rerr ? rerr : "?");
		(void)backup_target_sync(c->target, &rerr); /* forgets what was removed */
	}
	crypto_wipe(dek, sizeof dek);
	crypto_wipe(w.key, sizeof w.key);
	if (w.buf != NULL)
		rows_wipe(w.buf, w.cap);
	free(w.buf);
	free(mf);
	free(mjson);
	json_decref(manifest);
	json_decref(tables);
	json_decref(w.chunks);
	tables_free(&ts);
	return ret;
}

/* ------------------------------------------------------------------ load */

/* A backup read back: its manifest and every table's rows, all checked. */
struct bk_loaded {
	char backup_id[33];
	json_t *manifest;
	struct bk_tables ts;
};

/* Free what l holds and leave it empty, so a second call is harmless (backup_load
 * frees on failure and its callers free on every path). */
static void loaded_free(struct bk_loaded *l)
{
	json_decref(l->manifest);
	l->manifest = NULL;
	tables_free(&l->ts);
}

/* The backup to use: backup_id if given, else the newest done one of the tenant taken
 * at or before to_ms (0: any). */
static int pick_backup(const struct backup_ctx *c, const char *tenant_id, const char *backup_id,
		       int64_t to_ms, char out[33], const char **error_r)
{
	char to[24];
	const char *p[4] = { tenant_id, backup_id != NULL ? backup_id : "", to,
			     backup_target_name(c->target) };
	PGresult *res;

	snprintf(to, sizeof to, "%lld", (long long)to_ms);
	res = db_exec(c->db,
		      "SELECT id FROM backup.backups WHERE tenant_id = $1 AND status = 'done'"
		      " AND ($2 = '' OR id = $2)"
		      " AND ($3::bigint = 0 OR started_at <= to_timestamp($3::bigint / 1000.0))"
		      " AND (target = $4 OR (target IS NULL AND $4 LIKE 'local:%'))"
		      " ORDER BY started_at DESC LIMIT 1",
		      4, p, error_r);
	if (res == NULL)
		return -1;
	if (PQntuples(res) != 1) {
		PQclear(res);
		*error_r = "no backup of this tenant matches (on this cell's backup target)";
		return -1;
	}
	snprintf(out, 33, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return 0;
}

/* Parse one opened chunk's lines into the tables of the manifest. */
static int load_lines(struct bk_tables *ts, const uint8_t *pt, size_t len)
{
	const char *p = (const char *)pt, *end = p + len;
	struct bk_table *t = NULL;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *tab = nl != NULL ? memchr(p, '\t', (size_t)(nl - p)) : NULL;

		if (tab == NULL)
			return -1;
		/* A table's lines come together: the last one found is most likely. */
		if (t == NULL || strlen(t->name) != (size_t)(tab - p) ||
		    memcmp(t->name, p, (size_t)(tab - p)) != 0)
			t = tables_find(ts, p, (size_t)(tab - p));
		if (t == NULL || table_row(t, tab + 1, (size_t)(nl - tab - 1), 1) < 0)
			return -1;
		p = nl + 1;
	}
	return 0;
}

/* Read, check and open a whole backup. Inside a transaction for tenant_id (the keys
 * are read under its row-level security). */
static int backup_load(const struct backup_ctx *c, const char *tenant_id, const char *backup_id,
		       struct bk_loaded *l, const char **error_r)
{
	char dir[128], path[160], *mjson = NULL;
	uint8_t *buf = NULL, salt[BACKUP_SALT_LEN], dek[CRYPTO_KEY_LEN], key[CRYPTO_KEY_LEN];
	size_t len;
	uint32_t version, got_version;
	json_t *chunks, *tables, *v;
	json_error_t jerr;
	size_t i;
	int ret = -1;

	memset(l, 0, sizeof *l);
	snprintf(l->backup_id, sizeof l->backup_id, "%s", backup_id);
	if (PATHF(dir, "%s/%s", tenant_id, backup_id) || PATHF(path, "%s/manifest", dir)) {
		*error_r = "bad backup id";
		return -1;
	}
	{
		const char *gerr = NULL;
		int g = backup_target_get(c->target, path, BACKUP_MANIFEST_MAX + 4096, &buf, &len,
					  &gerr);

		if (g != 0) {
			*error_r = g > 0 ? "the backup's manifest is missing"
					 : job_error("the backup's manifest is unreadable: %s",
						     gerr ? gerr : "?");
			return -1;
		}
	}
	if (backup_manifest_header(buf, len, salt, &version) < 0) {
		*error_r = "the backup's manifest is truncated or not a Ward backup";
		goto out;
	}
	if (tenant_dek(c, tenant_id, version, dek, &got_version, error_r) < 0)
		goto out;
	if (backup_key_derive(dek, salt, tenant_id, backup_id, key) < 0 ||
	    backup_manifest_open(key, tenant_id, backup_id, buf, len, &mjson) < 0) {
		*error_r = "the backup's manifest does not authenticate (tampered, truncated "
			   "or another key)";
		goto out;
	}
	l->manifest = json_loads(mjson, 0, &jerr);
	chunks = json_object_get(l->manifest, "chunks");
	tables = json_object_get(l->manifest, "tables");
	if (!json_is_array(chunks) || !json_is_array(tables) ||
	    !json_is_string(json_object_get(l->manifest, "tenant_id")) ||
	    strcmp(json_string_value(json_object_get(l->manifest, "tenant_id")), tenant_id) != 0) {
		*error_r = "the backup's manifest is malformed";
		goto out;
	}
	json_array_foreach(tables, i, v) {
		const char *name = json_string_value(json_object_get(v, "name"));

		if (name == NULL || tables_add(&l->ts, name) < 0) {
			*error_r = "the backup's manifest is malformed";
			goto out;
		}
	}
	json_array_foreach(chunks, i, v) {
		const char *sha = json_string_value(json_object_get(v, "sha256"));
		uint8_t md[32], *pt = NULL;
		char hex[65];
		size_t pt_len;

		free(buf);
		buf = NULL;
		if (atomic_load(&backup_cancel)) {
			*error_r = "ward-backup is shutting down";
			goto out;
		}
		if (PATHF(path, "%s/chunk-%06zu", dir, i))
			path[0] = '\0'; /* an empty key is refused */
		{
			const char *gerr = NULL;
			int g = backup_target_get(c->target, path,
						  BACKUP_CHUNK_MAX + CRYPTO_SEAL_OVERHEAD, &buf,
						  &len, &gerr);

			if (g != 0) {
				*error_r = g > 0 ? job_error("chunk %s of the backup is missing",
							     path + strlen(dir) + 1)
						 : job_error("chunk %s of the backup is unreadable: %s",
							     path + strlen(dir) + 1,
							     gerr ? gerr : "?");
				goto out;
			}
		}
		if (crypto_sha256(buf, len, md) < 0 || (crypto_hex(md, 32, hex), sha == NULL) ||
		    strcmp(hex, sha) != 0) {
			*error_r = job_error("chunk %s does not match the manifest's checksum",
					     path + strlen(dir) + 1);
			goto out;
		}
		if (backup_chunk_open(key, tenant_id, backup_id, (uint32_t)i, buf, len, &pt,
				      &pt_len) < 0) {
			*error_r = "a chunk does not authenticate";
			goto out;
		}
		if (load_lines(&l->ts, pt, pt_len) < 0) {
			rows_wipe(pt, pt_len);
			free(pt);
			*error_r = "a chunk holds a malformed line or an unknown table";
			goto out;
		}
		rows_wipe(pt, pt_len);
		free(pt);
	}
	json_array_foreach(tables, i, v) {
		struct bk_table *t = &l->ts.t[i];
		const char *sha = json_string_value(json_object_get(v, "sha256"));

		if (table_finish(t) < 0 || sha == NULL || strcmp(sha, t->sha_hex) != 0 ||
		    json_integer_value(json_object_get(v, "rows")) != t->rows) {
			*error_r = job_error("table %s does not match the manifest (rows or "
					     "checksum)",
					     t->name);
			goto out;
		}
	}
	ret = 0;
out:
	crypto_wipe(dek, sizeof dek);
	crypto_wipe(key, sizeof key);
	free(buf);
	free(mjson);
	if (ret < 0)
		loaded_free(l);
	return ret;
}

/* Split "schema.table" in place-safe copies. */
static int split_name(const char *name, char sch[64], char tbl[64])
{
	const char *dot = strchr(name, '.');

	if (dot == NULL || (size_t)(dot - name) >= 64 || strlen(dot + 1) >= 64)
		return -1;
	memcpy(sch, name, (size_t)(dot - name));
	sch[dot - name] = '\0';
	snprintf(tbl, 64, "%s", dot + 1);
	return 0;
}

/* ------------------------------------------------------------------ verify */

int backup_job_verify(const struct backup_ctx *c, const char *tenant_id, const char *backup_id,
		      int64_t to_ms, json_t **out_r, const char **error_r)
{
	struct bk_loaded l = { 0 };
	char id[33];
	json_t *tables = NULL;
	long long rows = 0;
	int ret = -1, ok = 1, in_tx = 0;

	if (pick_backup(c, tenant_id, backup_id, to_ms, id, error_r) < 0)
		return -1;
	if (db_begin(c->db, tenant_id, error_r) < 0)
		return -1;
	in_tx = 1;
	if (backup_load(c, tenant_id, id, &l, error_r) < 0)
		goto record;
	tables = json_array();
	for (size_t i = 0; i < l.ts.n && tables != NULL; i++) {
		struct bk_table *t = &l.ts.t[i];
		char sch[64], tbl[64];
		const char *p[3] = { sch, tbl, t->json };
		PGresult *res;
		int same;

		if (split_name(t->name, sch, tbl) < 0) {
			*error_r = "bad table name in the manifest";
			goto out;
		}
		/* A scratch table of the same definition, loaded and checksummed by the server. */
		res = db_exec(c->db, "SELECT n, sha FROM backup.verify_rows($1, $2, $3::jsonb)", 3,
			      p, error_r);
		if (res == NULL)
			goto out;
		same = atoll(PQgetvalue(res, 0, 0)) == t->rows &&
		       strcmp(PQgetvalue(res, 0, 1), t->sha_hex) == 0;
		ok &= same;
		rows += t->rows;
		json_array_append_new(tables, json_pack("{s:s, s:I, s:I, s:b}", "name", t->name,
							"rows", (json_int_t)t->rows, "restored",
							(json_int_t)atoll(PQgetvalue(res, 0, 0)),
							"match", same));
		PQclear(res);
	}
record:
	/* The outcome (good or bad) is recorded and audited. */
	{
		const char *p[2] = { id, ok && tables != NULL ? "true" : "false" };
		PGresult *res = db_exec(c->db,
					"UPDATE backup.backups SET verified_at = now(), "
					"verify_ok = $2::boolean WHERE id = $1",
					2, p, error_r);
		const char *why = tables == NULL ? *error_r : NULL;

		if (res == NULL)
			goto out;
		PQclear(res);
		if (job_audit(c, tenant_id, ok && tables != NULL ? "verify" : "verify.failure", id,
			      json_pack("{s:s?}", "error", why), error_r) < 0 ||
		    db_commit(c->db, error_r) < 0)
			goto out;
		in_tx = 0;
		if (tables == NULL) {
			*error_r = why;
			goto out;
		}
	}
	*out_r = json_pack("{s:b, s:s, s:s, s:I, s:O}", "ok", ok, "backup_id", id, "tenant_id",
			   tenant_id, "rows", (json_int_t)rows, "tables", tables);
	ret = *out_r != NULL ? 0 : -1;
	if (ret == 0 && !ok) {
		*error_r = "the restored rows do not match the manifest";
		ret = -1;
		json_decref(*out_r);
		*out_r = NULL;
	}
out:
	if (in_tx)
		db_rollback(c->db);
	json_decref(tables);
	loaded_free(&l);
	return ret;
}

/* ------------------------------------------------------------------ restore */

int backup_job_restore(const struct backup_ctx *c, const char *tenant_id, const char *backup_id,
		       int64_t to_ms, json_t **out_r, const char **error_r)
{
	struct bk_loaded l = { 0 };
	const char *p1[1] = { tenant_id };
	char id[33];
	PGresult *res;
	long long rows = 0;
	int ret = -1;

	if (pick_backup(c, tenant_id, backup_id, to_ms, id, error_r) < 0)
		return -1;
	if (db_begin(c->db, tenant_id, error_r) < 0)
		return -1;
	/* Everything is read and checked before the first write. */
	if (backup_load(c, tenant_id, id, &l, error_r) < 0)
		goto out;
	res = db_exec(c->db, "SELECT tenant.lifecycle_restore_begin($1)", 1, p1, error_r);
	if (res == NULL)
		goto out;
	PQclear(res);
	for (size_t i = 0; i < l.ts.n; i++) {
		struct bk_table *t = &l.ts.t[i];
		char sch[64], tbl[64];
		const char *p[4] = { tenant_id, sch, tbl, t->json };

		if (split_name(t->name, sch, tbl) < 0) {
			*error_r = "bad table name in the manifest";
			goto out;
		}
		res = db_exec(c->db, "SELECT tenant.lifecycle_restore_rows($1, $2, $3, $4::jsonb)", 4,
			      p, error_r);
		if (res == NULL)
			goto out;
		rows += atoll(PQgetvalue(res, 0, 0));
		PQclear(res);
	}
	res = db_exec(c->db, "SELECT tenant.lifecycle_restore_end($1)", 1, p1, error_r);
	if (res == NULL)
		goto out;
	PQclear(res);
	if (job_audit(c, tenant_id, "restore", id, json_pack("{s:I}", "rows", (json_int_t)rows),
		      error_r) < 0 ||
	    db_commit(c->db, error_r) < 0)
		goto out;
	*out_r = json_pack("{s:b, s:s, s:s, s:I}", "restored", 1, "backup_id", id, "tenant_id",
			   tenant_id, "rows", (json_int_t)rows);
	ret = *out_r != NULL ? 0 : -1;
	loaded_free(&l);
	return ret;
out:
	db_rollback(c->db);
	loaded_free(&l);
	return ret;
}

/* ------------------------------------------------------------------ objects lock */

/*
 * A run's objects are on the target before the catalog names them (its row comes
 * last), so objects that no catalog row names are either a run in progress or an
 * orphan (a run killed, or whose cleanup met a target that was down). Every run
 * holds a shared session lock of the cell's database while it writes; the orphan
 * sweep runs only when it gets the lock exclusively (no run anywhere in the cell:
 * the backup daemons of a cell share its database), and never waits for it.
 */
#define OBJECTS_LOCK "SELECT pg_advisory_lock_shared(7370, 1)"
#define OBJECTS_UNLOCK "SELECT pg_advisory_unlock_shared(7370, 1)"
#define OBJECTS_TRYLOCK "SELECT pg_try_advisory_lock(7370, 1)"
#define OBJECTS_TRYUNLOCK "SELECT pg_advisory_unlock(7370, 1)"

/* Run sql, a lock function's call (outside any transaction); its boolean answer. */
static int objects_lock_call(const struct backup_ctx *c, const char *sql, const char **error_r)
{
	PGresult *res = db_exec(c->db, sql, 0, NULL, error_r);
	int ret;

	if (res == NULL)
		return -1;
	ret = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return ret;
}

int backup_job_run(const struct backup_ctx *c, const char *tenant_id, const char *slug,
		   json_t **out_r, const char **error_r)
{
	const char *uerr = NULL;
	int ret;

	if (objects_lock_call(c, OBJECTS_LOCK, error_r) < 0)
		return -1;
	ret = job_run(c, tenant_id, slug, out_r, error_r);
	if (objects_lock_call(c, OBJECTS_UNLOCK, &uerr) != 1)
		log_warn("backup: cannot release the objects lock: %s", uerr ? uerr : "not held");
	return ret;
}

/* ------------------------------------------------------------------ list, expire */

int backup_job_list(const struct backup_ctx *c, const char *tenant_id, json_t **out_r,
		    const char **error_r)
{
	const char *p[1] = { tenant_id != NULL ? tenant_id : "" };
	PGresult *res = db_exec(
		c->db,
		"SELECT id, tenant_id, slug, "
		"to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
		"status, chunks, rows, bytes, "
		"coalesce(to_char(verified_at AT TIME ZONE 'UTC', "
		"'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), coalesce(verify_ok::text, '') "
		"FROM backup.backups WHERE $1 = '' OR tenant_id::text = $1 "
		"ORDER BY started_at DESC LIMIT 1000",
		1, p, error_r);
	json_t *arr;

	if (res == NULL)
		return -1;
	arr = json_array();
	for (int i = 0; arr != NULL && i < PQntuples(res); i++) {
		const char *vok = PQgetvalue(res, i, 9);

		json_array_append_new(
			arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s?, s:o}", "id",
				       PQgetvalue(res, i, 0), "tenant_id", PQgetvalue(res, i, 1),
				       "slug", PQgetvalue(res, i, 2), "started_at",
				       PQgetvalue(res, i, 3), "status", PQgetvalue(res, i, 4),
				       "chunks", (json_int_t)atoll(PQgetvalue(res, i, 5)), "rows",
				       (json_int_t)atoll(PQgetvalue(res, i, 6)), "bytes",
				       (json_int_t)atoll(PQgetvalue(res, i, 7)), "verified_at",
				       PQgetvalue(res, i, 8)[0] ? PQgetvalue(res, i, 8) : NULL,
				       "verify_ok",
				       vok[0] == '\0' ? json_null() : json_boolean(vok[0] == 't')));
	}
	PQclear(res);
	*out_r = json_pack("{s:s, s:o}", "region", c->region, "backups", arr);
	return *out_r != NULL ? 0 : -1;
}

/* Purge one backup: its objects on the target, its catalog status, an audit event. */
static int purge_one(const struct backup_ctx *c, const char *id, const char *tenant_id,
		     const char *why, const char **error_r)
{
	const char *p[1] = { id };
	PGresult *res;

	if (backup_objects_remove(c->target, tenant_id, id, error_r) < 0)
		return -1; /* the catalog still names it: tried again next time */
	/* A closed tenant's purge takes everything under its prefix, orphan chunks of
	 * failed runs included. */
	if (strcmp(why, "tenant closed") == 0) {
		char prefix[64], **keys = NULL;
		size_t n = 0;

		if (PATHF(prefix, "%s/", tenant_id) ||
		    backup_target_list(c->target, prefix, &keys, &n, error_r) < 0)
			return -1;
		for (size_t i = 0; i < n; i++)
			if (backup_target_delete(c->target, keys[i], error_r) < 0) {
				backup_keys_free(keys, n);
				return -1;
			}
		backup_keys_free(keys, n);
	}
	if (db_begin(c->db, NULL, error_r) < 0)
		return -1;
	res = db_exec(c->db, "UPDATE backup.backups SET status = 'purged' WHERE id = $1", 1, p,
		      error_r);
	if (res == NULL)
		goto fail;
	PQclear(res);
	if (job_audit(c, tenant_id, "purge", id,
		      json_pack("{s:s, s:s}", "reason", why, "target",
				backup_target_name(c->target)),
		      error_r) < 0 ||
	    db_commit(c->db, error_r) < 0)
		goto fail;
	return 0;
fail:
	db_rollback(c->db);
	return -1;
}

/* A tenant backup's object key: "<tenant uuid>/<backup id: 32 hex>/<name>". The two
 * ids into tenant_r and id_r, 0; -1 for any other key (e.g. the cell's WAL archive). */
static int object_ids(const char *key, char tenant_r[37], char id_r[33])
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < 36; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? key[i] != '-' : key[i] == '\0' || strchr(hex, key[i]) == NULL)
			return -1;
	}
	if (key[36] != '/')
		return -1;
	for (size_t i = 37; i < 37 + 32; i++)
		if (key[i] == '\0' || strchr(hex, key[i]) == NULL)
			return -1;
	if (key[69] != '/' || key[70] == '\0')
		return -1;
	memcpy(tenant_r, key, 36);
	tenant_r[36] = '\0';
	memcpy(id_r, key + 37, 32);
	id_r[32] = '\0';
	return 0;
}

/* Remove the objects of backups that no catalog row names (or only as purged): what
 * killed runs and failed cleanups left (see OBJECTS_LOCK). Each removal is audited
 * and its id appended to swept. Skipped (0) while a run holds the lock. */
static int sweep_orphans(const struct backup_ctx *c, json_t *swept, json_t *failed,
			 const char **error_r)
{
	char **keys = NULL, tenant[37], id[33], last[70] = "";
	size_t n = 0;
	int got, ret = -1;

	got = objects_lock_call(c, OBJECTS_TRYLOCK, error_r);
	if (got <= 0)
		return got;
	if (backup_target_list(c->target, "", &keys, &n, error_r) < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		const char *p[1] = { id }, *perr = NULL;
		PGresult *res;
		bool named;

		/* Keys come grouped by backup on both targets; a repeat is harmless. */
		if (object_ids(keys[i], tenant, id) < 0 || strncmp(keys[i], last, 69) == 0)
			continue;
		memcpy(last, keys[i], 69);
		last[69] = '\0';
		res = db_exec(c->db,
			      "SELECT count(*) FROM backup.backups WHERE id = $1 AND status <> 'purged'",
			      1, p, error_r);
		if (res == NULL)
			goto out;
		named = strcmp(PQgetvalue(res, 0, 0), "0") != 0;
		PQclear(res);
		if (named)
			continue;
		if (backup_objects_remove(c->target, tenant, id, &perr) < 0 ||
		    db_begin(c->db, NULL, &perr) < 0 ||
		    job_audit(c, tenant, "purge", id,
			      json_pack("{s:s, s:s}", "reason", "orphan objects", "target",
					backup_target_name(c->target)),
			      &perr) < 0 ||
		    db_commit(c->db, &perr) < 0) {
			db_rollback(c->db);
			log_warn("sweep of the orphan objects of backup %s failed: %s", id,
				 perr ? perr : "?");
			json_array_append_new(failed, json_pack("{s:s, s:s}", "backup_id", id,
								"error", perr ? perr : "failed"));
			continue;
		}
		log_info("backup %s: orphan objects removed from %s", id,
			 backup_target_name(c->target));
		json_array_append_new(swept, json_string(id));
	}
	ret = 0;
out:
	backup_keys_free(keys, n);
	{
		const char *uerr = NULL;

		if (objects_lock_call(c, OBJECTS_TRYUNLOCK, &uerr) != 1)
			log_warn("backup: cannot release the sweep lock: %s",
				 uerr ? uerr : "not held");
	}
	return ret;
}

int backup_job_expire(const struct backup_ctx *c, int64_t now_ms, json_t **out_r,
		      const char **error_r)
{
	char rd[16], cd[16], now[32];
	const char *p[4] = { rd, cd, now, backup_target_name(c->target) };
	PGresult *res;
	json_t *arr = json_array(), *failed = json_array(), *orphans = json_array();
	int ret = -1;

	snprintf(rd, sizeof rd, "%d", c->conf->retention_days);
	snprintf(cd, sizeof cd, "%d", c->conf->closed_days);
	snprintf(now, sizeof now, "%lld", (long long)now_ms);
	if (arr == NULL || failed == NULL || orphans == NULL)
		goto out;
	/* The clock: now, or the operator's --now (to apply retention as of a date). */
	res = db_exec(c->db,
		      "SELECT tenant.lifecycle_expire_at($1::int, CASE WHEN $2::bigint = 0 THEN "
		      "now() ELSE to_timestamp($2::bigint / 1000.0) END)",
		      2, p + 1, error_r);
	if (res == NULL)
		goto out;
	PQclear(res);
	res = db_exec(c->db,
		      "WITH clock AS (SELECT CASE WHEN $3::bigint = 0 THEN now() ELSE "
		      " to_timestamp($3::bigint / 1000.0) END AS now) "
		      "SELECT b.id, b.tenant_id, CASE WHEN t.status = 'closed' AND "
		      " t.closed_at < clock.now - make_interval(days => $2::int) THEN 'tenant closed' "
		      " ELSE 'retention' END FROM clock, backup.backups b "
		      "LEFT JOIN backup.tenants() t ON t.id = b.tenant_id "
		      "WHERE b.status = 'done' AND (b.target = $4 OR (b.target IS NULL AND "
		      " $4 LIKE 'local:%')) AND ("
		      " (t.status = 'closed' AND t.closed_at < clock.now - make_interval(days => $2::int))"
		      " OR (t.id IS NULL AND b.started_at < clock.now - make_interval(days => $2::int))"
		      " OR (b.started_at < clock.now - make_interval(days => $1::int) AND b.id <> ("
		      "  SELECT n.id FROM backup.backups n WHERE n.tenant_id = b.tenant_id AND"
		      "  n.status = 'done' ORDER BY n.started_at DESC LIMIT 1)))",
		      4, p, error_r);
	if (res == NULL)
		goto out;
	for (int i = 0; i < PQntuples(res); i++) {
		const char *perr = NULL;

		if (purge_one(c, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
			      PQgetvalue(res, i, 2), &perr) < 0) {
			log_warn("purge of backup %s failed: %s", PQgetvalue(res, i, 0),
				 perr ? perr : "?");
			json_array_append_new(failed,
					      json_pack("{s:s, s:s}", "backup_id",
							PQgetvalue(res, i, 0), "error",
							perr ? perr : "failed"));
			continue;
		}
		json_array_append_new(arr, json_string(PQgetvalue(res, i, 0)));
	}
	PQclear(res);
	if (sweep_orphans(c, orphans, failed, error_r) < 0)
		goto out;
	*out_r = json_pack("{s:s, s:O, s:O, s:O}", "region", c->region, "purged", arr,
			   "orphans_removed", orphans, "failed", failed);
	ret = *out_r != NULL ? 0 : -1;
out:
	json_decref(arr);
	json_decref(failed);
	json_decref(orphans);
	return ret;
}
