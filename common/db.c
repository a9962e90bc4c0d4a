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
 */
#include "db.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "log.h"

#define DB_STMT_MAX 128

struct db_stmt {
	char *sql; /* NULL: free slot */
	unsigned long hash;
};

struct db {
	PGconn *conn;
	char errbuf[512]; /* last error, for error_r */
	struct db_stmt stmts[DB_STMT_MAX];
	size_t n_stmts;
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
	const char *keys[] = { "dbname", "password", "connect_timeout", "application_name", NULL };
	const char *vals[] = { conninfo, password, "5", "ward", NULL };
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

/* Run sql as a prepared statement of this session, preparing it on first use; a
 * full cache (or no memory) runs it unprepared. The result as libpq gives it. */
static PGresult *db_run_params(db_t *db, const char *sql, int nparams, const char *const *params,
			       const int *lengths, const int *formats)
{
	unsigned long h = db_stmt_hash(sql);
	char name[16];
	size_t i;
	PGresult *res;

	for (i = 0; i < db->n_stmts; i++)
		if (db->stmts[i].hash == h && strcmp(db->stmts[i].sql, sql) == 0)
			break;
	if (i == db->n_stmts) {
		if (i == DB_STMT_MAX || (db->stmts[i].sql = strdup(sql)) == NULL)
			return PQexecParams(db->conn, sql, nparams, NULL, params, lengths,
					    formats, 0);
		snprintf(name, sizeof name, "ward_%zu", i);
		res = PQprepare(db->conn, name, sql, nparams, NULL);
		if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
			free(db->stmts[i].sql);
			db->stmts[i].sql = NULL;
			return res; /* the caller reports the error */
		}
		PQclear(res);
		db->stmts[i].hash = h;
		db->n_stmts++;
	}
	snprintf(name, sizeof name, "ward_%zu", i);
	return PQexecPrepared(db->conn, name, nparams, params, lengths, formats, 0);
}

void db_free(db_t *db)
{
	if (db == NULL)
		return;
	db_stmts_forget(db);
	if (db->conn != NULL)
		PQfinish(db->conn);
	OPENSSL_cleanse(db, sizeof *db);
	free(db);
}

PGconn *db_conn(db_t *db)
{
	return db->conn;
}

PGresult *db_exec_bin(db_t *db, const char *sql, int nparams, const char *const *params,
		      const int *lengths, const int *formats, const char **error_r)
{
	PGresult *res;
	ExecStatusType st;
	int attempt;

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

#define DB_SET_TENANT "SELECT set_config('app.tenant_id', $1, true)"

/* BEGIN and set the tenant in one round trip (libpq pipeline mode). 0 when both
 * succeeded; 1 when the pipeline could not be used (nothing was sent); -1 on error
 * (the transaction, if any, rolled back). */
static int db_begin_pipelined(db_t *db, const char *tenant_id, const char **error_r)
{
	const char *params[1] = { tenant_id };
	PGresult *res;
	int good = 0, failed = 0, nulls = 0;

	if (PQstatus(db->conn) != CONNECTION_OK ||
	    PQtransactionStatus(db->conn) != PQTRANS_IDLE || PQenterPipelineMode(db->conn) != 1)
		return 1;
	if (PQsendQueryParams(db->conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) != 1 ||
	    PQsendQueryParams(db->conn, DB_SET_TENANT, 1, NULL, params, NULL, NULL, 0) != 1 ||
	    PQpipelineSync(db->conn) != 1) {
		*error_r = db_error(db, "begin failed", PQerrorMessage(db->conn));
		failed = 1;
	}
	/* Results: BEGIN, NULL, set_config, NULL, then the sync. Two NULLs in a row:
	 * nothing more is coming (a send failed, or the connection broke). */
	while ((res = PQgetResult(db->conn)) != NULL || ++nulls < 2) {
		ExecStatusType st;

		if (res == NULL)
			continue;
		nulls = 0;
		st = PQresultStatus(res);
		if (st == PGRES_PIPELINE_SYNC) {
			PQclear(res);
			break;
		}
		if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
			good++;
		} else if (!failed) {
			*error_r = db_error(db, "begin failed", PQresultErrorMessage(res));
			failed = 1;
		}
		PQclear(res);
	}
	if (PQexitPipelineMode(db->conn) != 1) {
		/* Results left unread: this session cannot be used any more. */
		*error_r = db_error(db, "begin failed", PQerrorMessage(db->conn));
		PQreset(db->conn);
		db_stmts_forget(db);
		return -1;
	}
	if (!failed && good == 2)
		return 0;
	if (!failed)
		*error_r = db_error(db, "begin failed", PQerrorMessage(db->conn));
	db_rollback(db);
	return -1;
}

int db_begin(db_t *db, const char *tenant_id, const char **error_r)
{
	const char *params[1] = { tenant_id };
	int r;

	if (tenant_id != NULL && (r = db_begin_pipelined(db, tenant_id, error_r)) <= 0)
		return r;
	if (db_run(db, "BEGIN", 0, NULL, error_r) < 0)
		return -1;
	if (tenant_id == NULL)
		return 0;
	/* SET LOCAL takes no parameters; set_config(..., true) is its parameterised form. */
	if (db_run(db, DB_SET_TENANT, 1, params, error_r) < 0) {
		db_rollback(db);
		return -1;
	}
	return 0;
}

int db_commit(db_t *db, const char **error_r)
{
	PGresult *res = db_exec(db, "COMMIT", 0, NULL, error_r);
	int ok;

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
