/*
 * policy_sql — the PostgreSQL roles, grants and operator RLS policies of a cell.
 *
 * The output is a psql script for the cluster superuser, run after the migrations
 * (and again after each new migration: grants on ALL TABLES cover only tables
 * that exist). It is one transaction and idempotent:
 *   1. create each ward_<name> role if missing; LOGIN, no superuser, no
 *      createdb/createrole, no BYPASSRLS, NOINHERIT; password read by psql
 *      from the secret file (`\set pw `cat file``), never printed here;
 *   2. sweep: every right of every ward_* role (database, schemas, tables,
 *      sequences, role memberships) and of PUBLIC is revoked, generated RLS
 *      policies (named ward_*) dropped, and ward_* roles the policy no longer
 *      gives a database role (postgres: none) made NOLOGIN with no password;
 *   3. grant exactly what the policy says (column-level SELECT for `columns:`;
 *      the sweep's table-level REVOKE also revokes column rights), and create the permissive
 *      SELECT-everything RLS policies listed under all_tenants (operators).
 * Names were validated by policy_load; they are printed as plain identifiers.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

/* 1 if path is safe inside single quotes in a shell command: [A-Za-z0-9/._-]. */
static int path_safe(const char *path)
{
	for (const char *p = path; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '/' || *p == '.' || *p == '_' || *p == '-'))
			return 0;
	return path[0] == '/';
}

/* Step 1: roles and passwords. */
static void sql_roles(const struct policy *pol, const char *dir, FILE *out)
{
	fputs("\n-- 1. Roles (created if missing), attributes and passwords.\n", out);
	for (size_t i = 0; i < pol->n; i++) {
		const struct policy_principal *p = &pol->p[i];
		char role[POLICY_NAME_MAX + 8], var[POLICY_NAME_MAX + 8];

		if (!p->has_pg)
			continue;
		policy_role_name(p->name, role, sizeof role);
		snprintf(var, sizeof var, "pw_%s", role + 5);
		fprintf(out,
			"DO $$ BEGIN\n"
			"\tIF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN\n"
			"\t\tCREATE ROLE %s;\n"
			"\tEND IF;\n"
			"END $$;\n"
			"ALTER ROLE %s LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS "
			"NOINHERIT NOREPLICATION;\n"
			"\\set %s `cat '%s/pg-%s'`\n"
			"ALTER ROLE %s PASSWORD :'%s';\n"
			"\\unset %s\n",
			role, role, role, var, dir, p->name, role, var, var);
	}
}

/* Step 2: revoke everything from ward_* roles and PUBLIC, drop generated policies. */
static void sql_sweep(const struct policy *pol, FILE *out)
{
	const char *sep = "";

	fputs("\n-- 2. Sweep: revoke every right not re-granted below.\n"
	      "REVOKE ALL ON DATABASE :\"DBNAME\" FROM PUBLIC;\n"
	      "DO $$\n"
	      "DECLARE\n"
	      "\tkeep text[] := ARRAY[",
	      out);
	for (size_t i = 0; i < pol->n; i++) {
		char role[POLICY_NAME_MAX + 8];

		if (!pol->p[i].has_pg)
			continue;
		policy_role_name(pol->p[i].name, role, sizeof role);
		fprintf(out, "%s'%s'", sep, role);
		sep = ", ";
	}
	fputs("]::text[];\n"
	      "\tr record;\n"
	      "\ts record;\n"
	      "\tm record;\n"
	      "BEGIN\n"
	      "\tFOR s IN SELECT nspname FROM pg_namespace\n"
	      "\t\t WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' LOOP\n"
	      "\t\tEXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', s.nspname);\n"
	      "\t\tEXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM PUBLIC', s.nspname);\n"
	      "\t\tEXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM PUBLIC', "
	      "s.nspname);\n"
	      "\tEND LOOP;\n"
	      "\tFOR r IN SELECT rolname FROM pg_roles\n"
	      "\t\t WHERE rolname LIKE 'ward\\_%' AND NOT rolsuper LOOP\n"
	      "\t\tEXECUTE format('REVOKE ALL ON DATABASE %I FROM %I', current_database(), "
	      "r.rolname);\n"
	      "\t\tFOR s IN SELECT nspname FROM pg_namespace\n"
	      "\t\t\t WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' LOOP\n"
	      "\t\t\tEXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', s.nspname, "
	      "r.rolname);\n"
	      "\t\t\tEXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM %I', s.nspname, "
	      "r.rolname);\n"
	      "\t\t\tEXECUTE format('REVOKE ALL ON SCHEMA %I FROM %I', s.nspname, r.rolname);\n"
	      "\t\tEND LOOP;\n"
	      "\t\tFOR m IN SELECT g.rolname FROM pg_auth_members a\n"
	      "\t\t\t JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles u ON u.oid = a.member\n"
	      "\t\t\t WHERE u.rolname = r.rolname LOOP\n"
	      "\t\t\tEXECUTE format('REVOKE %I FROM %I', m.rolname, r.rolname);\n"
	      "\t\tEND LOOP;\n"
	      "\t\tIF NOT r.rolname = ANY (keep) THEN\n"
	      "\t\t\t-- no database role in the policy (postgres: none, or removed)\n"
	      "\t\t\tEXECUTE format('ALTER ROLE %I NOLOGIN PASSWORD NULL', r.rolname);\n"
	      "\t\tEND IF;\n"
	      "\tEND LOOP;\n"
	      "\tFOR r IN SELECT schemaname, tablename, policyname FROM pg_policies\n"
	      "\t\t WHERE policyname LIKE 'ward\\_%' LOOP\n"
	      "\t\tEXECUTE format('DROP POLICY %I ON %I.%I', r.policyname, r.schemaname, "
	      "r.tablename);\n"
	      "\tEND LOOP;\n"
	      "END $$;\n",
	      out);
}

/* GRANT rights on every table (and, for writers, sequence) of schema. */
static void sql_grant_schema(FILE *out, const char *schema, unsigned rights, const char *role)
{
	fprintf(out, "GRANT USAGE ON SCHEMA %s TO %s;\n", schema, role);
	fputs("GRANT ", out);
	policy_rights_print(out, rights);
	fprintf(out, " ON ALL TABLES IN SCHEMA %s TO %s;\n", schema, role);
	if (rights & (POLICY_INSERT | POLICY_UPDATE))
		fprintf(out, "GRANT USAGE ON ALL SEQUENCES IN SCHEMA %s TO %s;\n", schema, role);
}

/* Step 3: what the policy grants. */
static void sql_grants(const struct policy *pol, FILE *out)
{
	fputs("\n-- 3. Grants, exactly as deploy/policy.yaml says.\n", out);
	for (size_t i = 0; i < pol->n; i++) {
		const struct policy_principal *p = &pol->p[i];
		char role[POLICY_NAME_MAX + 8];

		if (!p->has_pg)
			continue;
		policy_role_name(p->name, role, sizeof role);
		fprintf(out, "-- %s\nGRANT CONNECT ON DATABASE :\"DBNAME\" TO %s;\n", p->name, role);
		if (p->schema != NULL) {
			sql_grant_schema(out, p->schema, POLICY_RIGHTS_ALL, role);
			for (size_t t = 0; t < p->n_tables; t++) {
				fprintf(out, "REVOKE ALL ON TABLE %s.%s FROM %s;\nGRANT ", p->schema,
					p->tables[t].name, role);
				policy_rights_print(out, p->tables[t].rights);
				fprintf(out, " ON TABLE %s.%s TO %s;\n", p->schema, p->tables[t].name,
					role);
			}
		}
		for (size_t o = 0; o < p->n_on; o++)
			sql_grant_schema(out, p->on[o].name, p->on[o].rights, role);
		for (size_t c = 0; c < p->n_columns; c++) {
			const struct policy_columns *pc = &p->columns[c];
			int sl = (int)strcspn(pc->table, ".");

			fprintf(out, "GRANT USAGE ON SCHEMA %.*s TO %s;\nGRANT SELECT (", sl,
				pc->table, role);
			for (size_t k = 0; k < pc->n_cols; k++)
				fprintf(out, "%s%s", k ? ", " : "", pc->cols[k]);
			fprintf(out, ") ON TABLE %s TO %s;\n", pc->table, role);
		}
		for (size_t a = 0; a < p->n_all_tenants; a++)
			fprintf(out,
				"CREATE POLICY %s ON %s AS PERMISSIVE FOR SELECT TO %s USING (true);\n",
				role, p->all_tenants[a], role);
	}
}

int policy_sql(const struct policy *pol, const char *dir, FILE *out, const char **error_r)
{
	char abs[PATH_MAX];

	if (realpath(dir, abs) == NULL) {
		*error_r = "cannot resolve the secrets directory";
		return -1;
	}
	if (!path_safe(abs)) {
		*error_r = "the secrets directory path must be made of [A-Za-z0-9/._-]";
		return -1;
	}
	fputs("-- PostgreSQL roles and grants of a Ward cell, generated by ward-policy from\n"
	      "-- deploy/policy.yaml. Run as the cluster superuser after the migrations:\n"
	      "--   psql -v ON_ERROR_STOP=1 -d ward -f this.sql\n"
	      "\\set ON_ERROR_STOP on\n"
	      "BEGIN;\n",
	      out);
	sql_roles(pol, abs, out);
	sql_sweep(pol, out);
	sql_grants(pol, out);
	fputs("\nCOMMIT;\n", out);
	return 0;
}
