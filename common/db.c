/*
 * db — libpq helpers (see db.h).
 *
 * Every statement travels with its values as parameters: the SQL text is always a
 * constant of the caller and every value travels as a parameter, so nothing read
 * from a request can change a statement's meaning.
 *
 * Statements are prepared once per connection (PQprepare, named ward_<n>) and then
 * run with PQexecPrepared: the server parses each text once instead of on every
 * call (parsing and planning were most of PostgreSQL's CPU per request). At most
 * DB_STMT_MAX texts are kept; others run unprepared with PQexecParams. Prepared
 * statements live as long as the session (a rollback keeps them); the cache is
 * forgotten when the connection is reset.
 *
 * db_begin is lazy: it only records the tenant, and the transaction's first statement
 * travels with BEGIN and the tenant setting in one pipeline (one round trip instead
 * of two). A transaction that runs no statement never reaches the server.
 */
#include "db.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "log.h"

#define DB_STMT_MAX 128
#define DB_DEFER_MAX 8

/* A statement of db_defer, with a copy of its text and values (one allocation). */
struct db_deferred {
	size_t size; /* of the allocation */
	const char *sql;
	int nparams;
	const char *params[DB_DEFER_PARAMS_MAX];
	int lengths[DB_DEFER_PARAMS_MAX];
	int formats[DB_DEFER_PARAMS_MAX];
};

struct db_stmt {
	char *sql; /* NULL: free slot */
	unsigned long hash;
};

struct db {
	PGconn *conn;
	char errbuf[512]; /* last error, for error_r */
	struct db_stmt stmts[DB_STMT_MAX];
	size_t n_stmts;
	bool pending;	       /* db_begin called, BEGIN not yet sent */
	bool pending_tenant;   /* ... with a tenant setting */
	bool pending_async;    /* ... with synchronous_commit off */
	bool begin_failed;     /* a forced BEGIN failed: db_commit must fail */
	char tenant[64];       /* the pending tenant id */
	struct db_deferred *deferred[DB_DEFER_MAX]; /* db_defer'd, not yet sent */
	size_t n_deferred;
};

/* Keep a one-line copy of libpq's message: error_r must outlive PQclear. */
static const char *db_error(db_t *db, const char *what, const char *detail)
{
	size_t n;

	snprintf(db->errbuf, sizeof db->errbuf, "%s: %s", what, detail ? detail : "unknown error");
	n = strlen(db->errbuf);
	while (n > 0 && (db->errbuf[n - 1] == '\n' || db->errbuf[n - 1] == ' '))
		db->errbuf[--n] = '\0';
	return db->errbuf;
}

/* Silence libpq's default notice printing to stderr; logs are JSON. */
static void db_notice(void *arg, const char *message)
{
	(void)arg;
	log_event(LOG_DEBUG, "postgres notice", LF_STR("notice", message));
}

db_t *db_connect(const char *conninfo, const char *password, const char **error_r)
{
	return db_connect_opts(conninfo, password, NULL, error_r);
}

db_t *db_connect_opts(const char *conninfo, const char *password, const char *options,
		      const char **error_r)
{
	/* A NULL value (no password, no options) is ignored by libpq. */
	const char *keys[] = { "dbname", "password", "connect_timeout", "application_name",
			       "options", NULL };
	const char *vals[] = { conninfo, password, "5", "ward", options, NULL };
	static char err[512];
	db_t *db;

	db = calloc(1, sizeof *db);
	if (db == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	/* expand_dbname = 1: the first "dbname" value is the whole conninfo string; the
	 * password is passed separately so it is never part of a string we format. */
	db->conn = PQconnectdbParams(keys, vals, 1);
	if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK) {
		snprintf(err, sizeof err, "cannot connect to PostgreSQL: %s",
			 db->conn ? PQerrorMessage(db->conn) : "out of memory");
		err[strcspn(err, "\n")] = '\0';
		*error_r = err;
		db_free(db);
		return NULL;
	}
	PQsetNoticeProcessor(db->conn, db_notice, NULL);
	return db;
}

/* Forget every prepared statement (the session that held them is gone). */
static void db_stmts_forget(db_t *db)
{
	for (size_t i = 0; i < db->n_stmts; i++) {
		free(db->stmts[i].sql);
		db->stmts[i].sql = NULL;
	}
	db->n_stmts = 0;
}

/* FNV-1a of a statement's text. */
static unsigned long db_stmt_hash(const char *sql)
{
	unsigned long h = 2166136261UL;

	for (; *sql != '\0'; sql++)
		h = (h ^ (unsigned char)*sql) * 16777619UL;
	return h;
}

/* The cache slot of sql, prepared on first use: >= 0; -1 when it is to run
 * unprepared (full cache, no memory); -2 when the server refused to prepare it
 * (*res_r then holds its answer, or NULL). */
static int db_stmt_slot(db_t *db, const char *sql, int nparams, PGresult **res_r)
{
	unsigned long h = db_stmt_hash(sql);
	char name[16];
	size_t i;
	PGresult *res;

	for (i = 0; i < db->n_stmts; i++)
		if (db->stmts[i].hash == h && strcmp(db->stmts[i].sql, sql) == 0)
			return (int)i;
	if (i == DB_STMT_MAX || (db->stmts[i].sql = strdup(sql)) == NULL)
		return -1;
	snprintf(name, sizeof name, "ward_%zu", i);
	res = PQprepare(db->conn, name, sql, nparams, NULL);
	if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
		free(db->stmts[i].sql);
		db->stmts[i].sql = NULL;
		*res_r = res; /* the caller reports the error */
		return -2;
	}
	PQclear(res);
	db->stmts[i].hash = h;
	db->n_stmts++;
	return (int)i;
}

/* Send (pipeline) or run statement slot (-1: unprepared text sql). */
static int db_send_slot(db_t *db, int slot, const char *sql, int nparams,
			const char *const *params, const int *lengths, const int *formats)
{
	char name[16];

	if (slot < 0)
		return PQsendQueryParams(db->conn, sql, nparams, NULL, params, lengths, formats, 0);
	snprintf(name, sizeof name, "ward_%d", slot);
	return PQsendQueryPrepared(db->conn, name, nparams, params, lengths, formats, 0);
}

/* Run sql as a prepared statement of this session, preparing it on first use; a
 * full cache (or no memory) runs it unprepared. The result as libpq gives it. */
static PGresult *db_run_params(db_t *db, const char *sql, int nparams, const char *const *params,
			       const int *lengths, const int *formats)
{
	PGresult *res = NULL;
	char name[16];
	int slot = db_stmt_slot(db, sql, nparams, &res);

	if (slot == -2)
		return res;
	if (slot == -1)
		return PQexecParams(db->conn, sql, nparams, NULL, params, lengths, formats, 0);
	snprintf(name, sizeof name, "ward_%d", slot);
	return PQexecPrepared(db->conn, name, nparams, params, lengths, formats, 0);
}

static void db_deferred_clear(db_t *db);

void db_free(db_t *db)
{
	if (db == NULL)
		return;
	db_stmts_forget(db);
	db_deferred_clear(db);
	if (db->conn != NULL)
		PQfinish(db->conn);
	OPENSSL_cleanse(db, sizeof *db);
	free(db);
}

static int db_flush(db_t *db, const char **error_r);
static PGresult *db_exec_first(db_t *db, const char *sql, int nparams, const char *const *params,
			       const int *lengths, const int *formats, const char **error_r);

PGconn *db_conn(db_t *db)
{
	const char *err = NULL;

	/* Whoever takes the raw connection runs statements the lazy BEGIN and the
	 * deferred statements cannot ride on: send them now. On failure the caller's
	 * statements fail or run outside the tenant (RLS then shows nothing), and
	 * db_commit reports the error. */
	if ((db->pending || db->n_deferred > 0) && db_flush(db, &err) < 0)
		log_event(LOG_ERROR, "database begin failed", LF_STR("error", err));
	return db->conn;
}

PGresult *db_exec_bin(db_t *db, const char *sql, int nparams, const char *const *params,
		      const int *lengths, const int *formats, const char **error_r)
{
	PGresult *res;
	ExecStatusType st;
	int attempt;

	if (db->pending || db->n_deferred > 0)
		return db_exec_first(db, sql, nparams, params, lengths, formats, error_r);
	for (attempt = 0; attempt < 2; attempt++) {
		/* A connection lost between statements is reset once, but only outside a
		 * transaction: inside one, the transaction is gone and the caller must know. */
		if (PQstatus(db->conn) != CONNECTION_OK) {
			PQreset(db->conn);
			db_stmts_forget(db); /* a new session: nothing is prepared */
			if (PQstatus(db->conn) != CONNECTION_OK) {
				*error_r = db_error(db, "connection lost", PQerrorMessage(db->conn));
				return NULL;
			}
		}
		res = db_run_params(db, sql, nparams, params, lengths, formats);
		st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
		if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
			return res;
		*error_r = db_error(db, "query failed",
				    res ? PQresultErrorMessage(res) : PQerrorMessage(db->conn));
		PQclear(res);
		if (PQstatus(db->conn) == CONNECTION_OK ||
		    PQtransactionStatus(db->conn) == PQTRANS_INTRANS)
			return NULL;
	}
	return NULL;
}

PGresult *db_exec(db_t *db, const char *sql, int nparams, const char *const *params,
		  const char **error_r)
{
	return db_exec_bin(db, sql, nparams, params, NULL, NULL, error_r);
}

/* Run a statement whose result is not needed. */
static int db_run(db_t *db, const char *sql, int nparams, const char *const *params,
		  const char **error_r)
{
	PGresult *res = db_exec(db, sql, nparams, params, error_r);

	if (res == NULL)
		return -1;
	PQclear(res);
	return 0;
}

int db_defer(db_t *db, const char *sql, int nparams, const char *const *params,
	     const int *lengths, const int *formats, const char **error_r)
{
	struct db_deferred *d;
	size_t size, n, sql_len = strlen(sql) + 1;
	char *p;
	int i;

	if (!db_in_transaction(db) || db->n_deferred == DB_DEFER_MAX || nparams < 0 ||
	    nparams > DB_DEFER_PARAMS_MAX) {
		/* Outside a transaction nothing would send it; or too many: run it now. */
		PGresult *res = db_exec_bin(db, sql, nparams, params, lengths, formats, error_r);

		if (res == NULL)
			return -1;
		PQclear(res);
		return 0;
	}
	size = sizeof *d + sql_len;
	for (i = 0; i < nparams; i++)
		if (params[i] != NULL)
			size += formats != NULL && formats[i] ? (size_t)lengths[i]
							      : strlen(params[i]) + 1;
	d = calloc(1, size);
	if (d == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	d->size = size;
	d->nparams = nparams;
	p = (char *)(d + 1);
	memcpy(p, sql, sql_len);
	d->sql = p;
	p += sql_len;
	for (i = 0; i < nparams; i++) {
		d->formats[i] = formats != NULL ? formats[i] : 0;
		d->lengths[i] = lengths != NULL ? lengths[i] : 0;
		if (params[i] == NULL)
			continue;
		n = d->formats[i] ? (size_t)d->lengths[i] : strlen(params[i]) + 1;
		memcpy(p, params[i], n);
		d->params[i] = p;
		p += n;
	}
	db->deferred[db->n_deferred++] = d;
	return 0;
}

/* Drop the deferred statements (sent, or never to be sent). Their values may be
 * secrets or hashes: wiped. */
static void db_deferred_clear(db_t *db)
{
	for (size_t i = 0; i < db->n_deferred; i++) {
		OPENSSL_cleanse(db->deferred[i], db->deferred[i]->size);
		free(db->deferred[i]);
		db->deferred[i] = NULL;
	}
	db->n_deferred = 0;
}

#define DB_SET_TENANT "SELECT set_config('app.tenant_id', $1, true)"
#define DB_ASYNC_COMMIT "SELECT set_config('synchronous_commit', 'off', true)"
#define DB_SET_TENANT_ASYNC                                                                      \
	"SELECT set_config('app.tenant_id', $1, true), "                                          \
	"set_config('synchronous_commit', 'off', true)"

/* A statement to send in a pipeline. */
struct db_first {
	const char *sql;
	int nparams;
	const char *const *params;
	const int *lengths;
	const int *formats;
	int slot; /* its prepared statement (db_stmt_slot) */
};

/* BEGIN, one setting, the deferred statements, the statement, COMMIT. */
#define DB_PIPE_MAX (2 + DB_DEFER_MAX + 2)

/* One round trip (libpq pipeline mode) for: the pending BEGIN with its settings
 * (tenant, asynchronous commit), the deferred statements, then stmt (may be NULL),
 * then COMMIT when commit is set. A transaction wholly in the pipeline (BEGIN still
 * pending and commit set) is sent without BEGIN and COMMIT: the statements up to
 * the protocol's Sync message are one implicit transaction, committed at the Sync
 * (and rolled back there if one fails), two statements fewer for the server to
 * run. 0 when all succeeded (*res_r: stmt's result); 1
 * when the pipeline could not be used (nothing was sent); -1 on error: a failed
 * BEGIN or setting, or a failed statement or COMMIT when commit is set, leave no
 * transaction open; a failed statement without commit leaves it to the caller's
 * rollback, as db_exec does. Deferred statements are gone afterwards unless 1. */
static int db_pipeline(db_t *db, const struct db_first *stmt, bool commit, PGresult **res_r,
		       const char **error_r)
{
	const char *tparams[1] = { db->tenant };
	struct db_first q[DB_PIPE_MAX];
	PGresult *res = NULL, *last = NULL;
	bool head = db->pending, implicit = db->pending && commit;
	int nq = 0, nhead = 0, istmt = -1, i, n = 0, nulls = 0;
	int failed = 0, head_failed = 0, committed = 0, synced = 0;

	if (PQstatus(db->conn) != CONNECTION_OK ||
	    PQtransactionStatus(db->conn) != (head ? PQTRANS_IDLE : PQTRANS_INTRANS))
		return 1;
	if (head) {
		if (!implicit)
			q[nq++] = (struct db_first){ "BEGIN", 0, NULL, NULL, NULL, 0 };
		if (db->pending_tenant)
			q[nq++] = (struct db_first){ db->pending_async ? DB_SET_TENANT_ASYNC
								       : DB_SET_TENANT,
						     1, tparams, NULL, NULL, 0 };
		else if (db->pending_async)
			q[nq++] = (struct db_first){ DB_ASYNC_COMMIT, 0, NULL, NULL, NULL, 0 };
		nhead = nq;
	}
	for (size_t k = 0; k < db->n_deferred; k++) {
		const struct db_deferred *d = db->deferred[k];

		q[nq++] = (struct db_first){ d->sql, d->nparams, d->params, d->lengths,
					     d->formats, 0 };
	}
	if (stmt != NULL) {
		istmt = nq;
		q[nq++] = *stmt;
	}
	if (commit && !implicit)
		q[nq++] = (struct db_first){ "COMMIT", 0, NULL, NULL, NULL, 0 };
	/* Prepare outside the pipeline (once per session). */
	for (i = 0; i < nq; i++) {
		if ((q[i].slot = db_stmt_slot(db, q[i].sql, q[i].nparams, &res)) != -2)
			continue;
		*error_r = db_error(db, "query failed",
				    res ? PQresultErrorMessage(res) : PQerrorMessage(db->conn));
		PQclear(res);
		db_deferred_clear(db);
		if (commit || head)
			db_rollback(db);
		db->begin_failed = head && !commit;
		return -1;
	}
	if (PQenterPipelineMode(db->conn) != 1)
		return 1;
	db->pending = false;
	for (i = 0; i < nq; i++)
		if (db_send_slot(db, q[i].slot, q[i].sql, q[i].nparams, q[i].params,
				 q[i].lengths, q[i].formats) != 1)
			break;
	if (i < nq || PQpipelineSync(db->conn) != 1) {
		*error_r = db_error(db, "begin failed", PQerrorMessage(db->conn));
		failed = head_failed = 1;
	}
	/* Results in order, each followed by NULL, then the sync. Two NULLs in a row:
	 * nothing more is coming (a send failed, or the connection broke). */
	while ((res = PQgetResult(db->conn)) != NULL || ++nulls < 2) {
		ExecStatusType st;

		if (res == NULL)
			continue;
		nulls = 0;
		st = PQresultStatus(res);
		if (st == PGRES_PIPELINE_SYNC) {
			PQclear(res);
			synced = 1;
			break;
		}
		n++;
		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !failed) {
			*error_r = db_error(db, n <= nhead ? "begin failed" : "query failed",
					    PQresultErrorMessage(res));
			failed = 1;
			head_failed = n <= nhead;
		}
		if (!failed && commit && !implicit && n == nq)
			committed = strcmp(PQcmdStatus(res), "COMMIT") == 0;
		if (!failed && n - 1 == istmt) {
			last = res;
			continue;
		}
		PQclear(res);
	}
	db_deferred_clear(db);
	if (implicit) /* committed at the Sync, when nothing failed before it */
		committed = !failed && synced && n == nq;
	if (PQexitPipelineMode(db->conn) != 1) {
		/* Results left unread: this session cannot be used any more. */
		*error_r = db_error(db, "begin failed", PQerrorMessage(db->conn));
		PQclear(last);
		PQreset(db->conn);
		db_stmts_forget(db);
		return -1;
	}
	if (!failed && n == nq && (!commit || committed)) {
		if (res_r != NULL)
			*res_r = last;
		else
			PQclear(last);
		return 0;
	}
	PQclear(last);
	if (!failed) {
		*error_r = commit ? db_error(db, "commit failed", "the transaction was rolled back")
				  : db_error(db, "begin failed", PQerrorMessage(db->conn));
		head_failed = 1;
	}
	if ((head_failed || commit) && PQtransactionStatus(db->conn) != PQTRANS_IDLE)
		db_rollback(db);
	return -1;
}

/* Without a pipeline: BEGIN and its settings, then the deferred statements, one
 * round trip each. */
static int db_flush_slow(db_t *db, const char **error_r)
{
	struct db_deferred *d[DB_DEFER_MAX];
	size_t n = db->n_deferred, i;
	const char *params[1] = { db->tenant };
	int rc = 0;

	/* Taken out first: db_exec would otherwise come back here. */
	memcpy(d, db->deferred, n * sizeof d[0]);
	db->n_deferred = 0;
	if (db->pending) {
		db->pending = false;
		/* SET LOCAL takes no parameters; set_config(..., true) is its
		 * parameterised form. */
		if (db_run(db, "BEGIN", 0, NULL, error_r) < 0 ||
		    (db->pending_tenant && db_run(db, DB_SET_TENANT, 1, params, error_r) < 0) ||
		    (db->pending_async && db_run(db, DB_ASYNC_COMMIT, 0, NULL, error_r) < 0)) {
			db_rollback(db);
			db->begin_failed = true;
			rc = -1;
		}
	}
	for (i = 0; i < n && rc == 0; i++) {
		PGresult *res = db_exec_bin(db, d[i]->sql, d[i]->nparams, d[i]->params,
					    d[i]->lengths, d[i]->formats, error_r);

		if (res == NULL)
			rc = -1;
		PQclear(res);
	}
	memcpy(db->deferred, d, n * sizeof d[0]);
	db->n_deferred = n;
	db_deferred_clear(db);
	return rc;
}

/* Send the pending BEGIN and the deferred statements now (one round trip when it
 * can). */
static int db_flush(db_t *db, const char **error_r)
{
	bool head = db->pending;
	int r = db_pipeline(db, NULL, false, NULL, error_r);

	if (r == 1)
		return db_flush_slow(db, error_r);
	db->pending = false;
	if (r < 0 && head)
		db->begin_failed = true;
	return r;
}

/* The pending BEGIN and deferred statements riding with the next statement. */
static PGresult *db_exec_first(db_t *db, const char *sql, int nparams, const char *const *params,
			       const int *lengths, const int *formats, const char **error_r)
{
	struct db_first first = { sql, nparams, params, lengths, formats, 0 };
	PGresult *res = NULL;
	int r;

	if (db->pending && PQstatus(db->conn) != CONNECTION_OK) {
		/* Outside a transaction still: a lost connection may be reset. */
		PQreset(db->conn);
		db_stmts_forget(db);
		if (PQstatus(db->conn) != CONNECTION_OK) {
			*error_r = db_error(db, "connection lost", PQerrorMessage(db->conn));
			db->pending = false;
			db->begin_failed = true;
			db_deferred_clear(db);
			return NULL;
		}
	}
	r = db_pipeline(db, &first, false, &res, error_r);
	if (r == 0)
		return res;
	if (r < 0) {
		db->pending = false;
		return NULL;
	}
	if (db_flush_slow(db, error_r) < 0) /* no pipeline: the long way */
		return NULL;
	return db_exec_bin(db, sql, nparams, params, lengths, formats, error_r);
}

/* Record a lazy BEGIN (sent with the first statement). */
static int db_begin_lazy(db_t *db, const char *tenant_id, bool async, const char **error_r)
{
	if (tenant_id != NULL && strlen(tenant_id) >= sizeof db->tenant) {
		*error_r = "tenant id too long";
		return -1;
	}
	db_deferred_clear(db); /* left by a transaction never committed nor rolled back */
	db->pending = true;
	db->begin_failed = false;
	db->pending_tenant = tenant_id != NULL;
	db->pending_async = async;
	snprintf(db->tenant, sizeof db->tenant, "%s", tenant_id != NULL ? tenant_id : "");
	return 0;
}

int db_begin(db_t *db, const char *tenant_id, const char **error_r)
{
	return db_begin_lazy(db, tenant_id, false, error_r);
}

int db_begin_async(db_t *db, const char *tenant_id, const char **error_r)
{
	return db_begin_lazy(db, tenant_id, true, error_r);
}

PGresult *db_exec_commit(db_t *db, const char *sql, int nparams, const char *const *params,
			 const char **error_r)
{
	struct db_first stmt = { sql, nparams, params, NULL, NULL, 0 };
	PGresult *res = NULL;
	int r;

	if (db->begin_failed) {
		db_rollback(db);
		*error_r = db_error(db, "commit failed", "the transaction never began");
		return NULL;
	}
	r = db_pipeline(db, &stmt, true, &res, error_r);
	if (r == 0)
		return res;
	if (r < 0) {
		db->pending = false;
		return NULL;
	}
	/* No pipeline: the long way. */
	if ((res = db_exec(db, sql, nparams, params, error_r)) == NULL)
		return NULL;
	if (db_commit(db, error_r) < 0) {
		PQclear(res);
		return NULL;
	}
	return res;
}

bool db_in_transaction(db_t *db)
{
	return db->pending || db->n_deferred > 0 || PQtransactionStatus(db->conn) != PQTRANS_IDLE;
}

int db_commit(db_t *db, const char **error_r)
{
	PGresult *res;
	int ok, r;

	if (db->begin_failed) {
		db->begin_failed = false;
		db_rollback(db);
		*error_r = db_error(db, "commit failed", "the transaction never began");
		return -1;
	}
	if (db->pending && db->n_deferred == 0) { /* no statement ran: nothing to commit */
		db->pending = false;
		return 0;
	}
	if (db->n_deferred > 0) {
		/* The deferred statements and COMMIT in one round trip. */
		r = db_pipeline(db, NULL, true, NULL, error_r);
		if (r <= 0) {
			db->pending = false;
			return r;
		}
		if (db_flush_slow(db, error_r) < 0) {
			db_rollback(db);
			return -1;
		}
	}
	res = db_exec(db, "COMMIT", 0, NULL, error_r);
	if (res == NULL)
		return -1;
	/* COMMIT of an aborted transaction "succeeds" with status ROLLBACK. */
	ok = strcmp(PQcmdStatus(res), "COMMIT") == 0;
	PQclear(res);
	if (!ok) {
		*error_r = db_error(db, "commit failed", "the transaction was rolled back");
		return -1;
	}
	return 0;
}

void db_rollback(db_t *db)
{
	PGresult *res;

	db->begin_failed = false;
	db_deferred_clear(db);
	if (db->pending) { /* BEGIN was never sent */
		db->pending = false;
		return;
	}
	if (PQstatus(db->conn) != CONNECTION_OK)
		return;
	res = PQexec(db->conn, "ROLLBACK");
	PQclear(res);
}

/* The processed tables the services own; the table name is chosen from this list,
 * never taken from a caller's string into SQL. */
static const struct {
	const char *table;
	const char *sql;
} db_processed_sql[] = {
	{ "auth.processed", "INSERT INTO auth.processed (id) VALUES ($1) ON CONFLICT DO NOTHING" },
	{ "ticket.processed", "INSERT INTO ticket.processed (id) VALUES ($1) ON CONFLICT DO NOTHING" },
	{ "audit.processed", "INSERT INTO audit.processed (id) VALUES ($1) ON CONFLICT DO NOTHING" },
	{ "backup.processed", "INSERT INTO backup.processed (id) VALUES ($1) ON CONFLICT DO NOTHING" },
};

int db_mark_processed(db_t *db, const char *table, const char *envelope_id, const char **error_r)
{
	const char *params[1] = { envelope_id };
	PGresult *res;
	size_t i;
	int inserted;

	for (i = 0; i < sizeof db_processed_sql / sizeof db_processed_sql[0]; i++)
		if (strcmp(db_processed_sql[i].table, table) == 0)
			break;
	if (i == sizeof db_processed_sql / sizeof db_processed_sql[0]) {
		*error_r = "unknown processed table";
		return -1;
	}
	res = db_exec(db, db_processed_sql[i].sql, 1, params, error_r);
	if (res == NULL)
		return -1;
	inserted = strcmp(PQcmdTuples(res), "1") == 0;
	PQclear(res);
	return inserted;
}
