/*
 * db — libpq helpers: one connection per daemon under its own role, parameterised
 * queries only (PQexecParams; there is no helper that takes SQL built at run time
 * from input), transactions that set the tenant for row-level security, and the
 * processed-message record that makes a redelivered envelope a no-op.
 */
#ifndef WARD_DB_H
#define WARD_DB_H

#include <stdbool.h>

#include <libpq-fe.h>

typedef struct db db_t;

/* Connect with conninfo (no password in it) and password (may be NULL). */
db_t *db_connect(const char *conninfo, const char *password, const char **error_r);
/* The same with server options for the session (libpq's "options", e.g. "-c
 * plan_cache_mode=force_generic_plan"; NULL for none). */
db_t *db_connect_opts(const char *conninfo, const char *password, const char *options,
		      const char **error_r);
void db_free(db_t *db);
PGconn *db_conn(db_t *db);

/* Run sql with text parameters. Returns the result (PQclear it) when the status is
 * COMMAND_OK or TUPLES_OK, else NULL with *error_r (valid until the next call).
 * A broken connection is reset once before giving up. */
PGresult *db_exec(db_t *db, const char *sql, int nparams, const char *const *params,
		  const char **error_r);
/* The same with lengths and formats per parameter (1 = binary, for bytea). */
PGresult *db_exec_bin(db_t *db, const char *sql, int nparams, const char *const *params,
		      const int *lengths, const int *formats, const char **error_r);

/* Most values of a deferred statement (db_defer). */
#define DB_DEFER_PARAMS_MAX 16

/* Inside a transaction: queue sql (a statement whose result is only success or
 * failure, e.g. an INSERT) with a copy of its values, to be sent in one round trip
 * with the transaction's next statement or its COMMIT (db_exec*, db_commit,
 * db_exec_commit, db_conn). Its error, if any, is then that call's error, and the
 * transaction must be rolled back as after any failed statement. Outside a
 * transaction, with too many values or too many queued, it runs at once. 0 or -1.
 * db_rollback drops what is queued. */
int db_defer(db_t *db, const char *sql, int nparams, const char *const *params,
	     const int *lengths, const int *formats, const char **error_r);

/* BEGIN; and if tenant_id is not NULL, set app.tenant_id for this transaction only
 * (set_config(..., true)), which every RLS policy reads. Lazy: both are sent with
 * the transaction's first statement (one round trip), so a failure to begin shows
 * as that statement's error; db_conn() sends them at once. */
int db_begin(db_t *db, const char *tenant_id, const char **error_r);
/* The same with synchronous_commit off for this transaction: its COMMIT does not
 * wait for the WAL flush (the next synchronous commit flushes it too). */
int db_begin_async(db_t *db, const char *tenant_id, const char **error_r);
/* Run sql, then COMMIT, in one round trip (with the BEGIN too if no statement ran
 * yet). The statement's result when both succeeded; else NULL with *error_r and
 * the transaction rolled back. Either way the transaction is over. */
PGresult *db_exec_commit(db_t *db, const char *sql, int nparams, const char *const *params,
			 const char **error_r);
/* COMMIT, and check the server really committed (an aborted transaction's COMMIT
 * answers ROLLBACK). 0 or -1. */
int db_commit(db_t *db, const char **error_r);
/* Inside a transaction (begun, even if BEGIN has not been sent yet)? */
bool db_in_transaction(db_t *db);
/* ROLLBACK, errors ignored (the connection may be gone). */
void db_rollback(db_t *db);

/* Inside a transaction: record envelope id in table (a constant such as
 * "auth.processed", never input). 1 if new, 0 if already processed, -1 on error. */
int db_mark_processed(db_t *db, const char *table, const char *envelope_id, const char **error_r);

#endif
