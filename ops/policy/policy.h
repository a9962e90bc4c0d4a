/*
 * policy — the least-privilege model of a cell, read from deploy/policy.yaml.
 *
 * A principal is a service (daemon) or an operator. Each may consume streams
 * (q:<name>) with its consumer group, send to streams, and hold a PostgreSQL role
 * with rights on its own schema (narrowed per table) and on other schemas.
 * policy_load() validates everything a generator relies on, so the generators
 * (secrets, Redis ACL, SQL) only ever print names that matched a strict pattern.
 */
#ifndef WARD_POLICY_H
#define WARD_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define POLICY_NAME_MAX 32

/* Table rights, as PostgreSQL names them. */
enum {
	POLICY_SELECT = 1 << 0,
	POLICY_INSERT = 1 << 1,
	POLICY_UPDATE = 1 << 2,
	POLICY_DELETE = 1 << 3,
};
#define POLICY_RIGHTS_ALL (POLICY_SELECT | POLICY_INSERT | POLICY_UPDATE | POLICY_DELETE)

/* Rights on one object: a schema's tables (`on:`) or one table (`tables:`). */
struct policy_grant {
	char *name;
	unsigned rights;
};

/* `columns:` — SELECT on some columns only of another schema's table. */
struct policy_columns {
	char *table; /* "schema.table" */
	char **cols;
	size_t n_cols;
};

struct policy_principal {
	char *name;	  /* service or operator name, [a-z][a-z0-9-]* */
	bool operator;	  /* under operators: */
	int line;
	char **consume;	  /* streams read with the consumer group */
	size_t n_consume;
	char **send;	  /* streams it may XADD to */
	size_t n_send;
	bool has_pg;	  /* false for `postgres: none` */
	char *schema;	  /* own schema, may be NULL (operators) */
	struct policy_grant *tables; /* overrides within the own schema */
	size_t n_tables;
	struct policy_grant *on; /* rights on other schemas */
	size_t n_on;
	char **all_tenants; /* "schema.table": a permissive SELECT-all RLS policy */
	size_t n_all_tenants;
	struct policy_columns *columns; /* column-level SELECT on other schemas' tables */
	size_t n_columns;
	bool ratelimit;	    /* redis.ratelimit: rate-limit counters rl:<name>:* */
	bool health_only;   /* redis.health_only: an operator reading health data only */
	bool dead_letters;  /* redis.dead_letters: XADD to dl:<name> without consuming */
	bool memo;	    /* redis.memo: its own short-lived keys memo:<name>:* (SET, GET) */
};

/* A route: sender → stream ("q:auth") or sender → reply route ("r:gateway"). */
struct policy_route {
	const char *sender;
	char *route;
	const char *reader;
};

struct policy {
	char *path;
	struct policy_principal *p;
	size_t n;
	struct policy_route *routes;
	size_t n_routes;
};

/* Read and validate the policy file. NULL on error with *error_r malloc'd,
 * "file:line: key: reason". */
struct policy *policy_load(const char *path, char **error_r);
/* The same from a buffer (name used in messages); for tests. */
struct policy *policy_load_buffer(const char *name, const char *buf, size_t len, char **error_r);
void policy_free(struct policy *pol);

/* The principal named name, or NULL. */
const struct policy_principal *policy_find(const struct policy *pol, const char *name);
/* The principal consuming stream, or NULL. */
const struct policy_principal *policy_consumer(const struct policy *pol, const char *stream);
/* 1 if p sends to stream. */
int policy_sends_to(const struct policy_principal *p, const char *stream);
/* The PostgreSQL role of a principal: "ward_" + name with '-' as '_'. */
void policy_role_name(const char *name, char *out, size_t out_len);
/* Print rights as "SELECT, INSERT". */
void policy_rights_print(FILE *f, unsigned rights);

/* Create the missing secret files and route key files in dir. */
int policy_secrets(const struct policy *pol, const char *dir, const char **error_r);
/* Print the Redis ACL file; reads the redis-* secrets from dir. */
int policy_redis_acl(const struct policy *pol, const char *dir, FILE *out, const char **error_r);
/* Print the "stream group" pairs the bootstrap must XGROUP CREATE. */
void policy_streams(const struct policy *pol, FILE *out);
/* Print the psql script for roles, grants and operator RLS policies. */
int policy_sql(const struct policy *pol, const char *dir, FILE *out, const char **error_r);

/* Read file name of dirfd (no symlinks), at most max bytes, into a malloc'd
 * NUL-terminated buffer (wipe and free it). */
int policy_file_read(int dirfd, const char *name, size_t max, char **buf_r, size_t *len_r,
		     const char **error_r);
/* Replace name in dirfd atomically with buf (0600, keeping the old owner). */
int policy_file_replace(int dirfd, const char *name, const void *buf, size_t len);

/* Allocation that succeeds or exits. */
void *policy_xcalloc(size_t n, size_t size);
char *policy_xstrdup(const char *s);

#endif
