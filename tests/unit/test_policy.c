/*
 * test_policy — ward-policy: policy validation, routes, secrets, ACL and SQL output,
 * and the Redis ACL enforced by a real redis-server (started here, in a temporary
 * directory on a free loopback port, when redis-server is installed).
 *
 * The generator's sources are compiled in directly (they are not part of libward).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <limits.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../ops/policy/policy_acl.c"
#include "../../ops/policy/policy_load.c"
#include "../../ops/policy/policy_secrets.c"
#include "../../ops/policy/policy_sql.c"

/* The shape of deploy/policy.yaml. */
static const char good_policy[] =
	"services:\n"
	"  gateway:\n"
	"    redis:\n"
	"      send: [q:auth, q:ticket, q:audit]\n"
	"    postgres: none\n"
	"  auth:\n"
	"    redis:\n"
	"      consume: [q:auth]\n"
	"      send: [q:audit]\n"
	"    postgres:\n"
	"      schema: auth\n"
	"      on:\n"
	"        tenant: [SELECT]\n"
	"        directory: [SELECT]\n"
	"  ticket:\n"
	"    redis:\n"
	"      consume: [q:ticket]\n"
	"      send: [q:audit, q:auth]\n"
	"    postgres:\n"
	"      schema: ticket\n"
	"      columns:\n"
	"        auth.users: [id, tenant_id, email_bidx, role]\n"
	"  mail-ingest:\n"
	"    redis:\n"
	"      send: [q:ticket, q:auth, q:audit]\n"
	"    postgres: none\n"
	"  audit:\n"
	"    redis:\n"
	"      consume: [q:audit]\n"
	"    postgres:\n"
	"      schema: audit\n"
	"      tables:\n"
	"        events: [INSERT, SELECT]\n"
	"  backup:\n"
	"    redis:\n"
	"      consume: [q:backup]\n"
	"      send: [q:audit]\n"
	"    postgres:\n"
	"      schema: backup\n"
	"      on:\n"
	"        auth: [SELECT]\n"
	"operators:\n"
	"  ops:\n"
	"    redis:\n"
	"      send: [q:auth, q:ticket, q:audit, q:backup]\n"
	"    postgres:\n"
	"      on:\n"
	"        directory: [SELECT, INSERT, UPDATE, DELETE]\n"
	"        tenant: [SELECT, INSERT, UPDATE, DELETE]\n"
	"        auth: [SELECT, INSERT, UPDATE, DELETE]\n"
	"        audit: [SELECT]\n"
	"      all_tenants: [tenant.tenants, tenant.keys]\n";

static struct policy *load(const char *yaml, char **err)
{
	return policy_load_buffer("p.yaml", yaml, strlen(yaml), err);
}

/* 1 if the policy has route (sender, route) read by reader. */
static int has_route(const struct policy *pol, const char *sender, const char *route,
		     const char *reader)
{
	for (size_t i = 0; i < pol->n_routes; i++)
		if (strcmp(pol->routes[i].sender, sender) == 0 &&
		    strcmp(pol->routes[i].route, route) == 0 &&
		    (reader == NULL || strcmp(pol->routes[i].reader, reader) == 0))
			return 1;
	return 0;
}

static void test_load_good(void **state)
{
	char *err = NULL;
	struct policy *pol = load(good_policy, &err);

	(void)state;
	assert_non_null(pol);
	assert_null(err);
	assert_int_equal(pol->n, 7);
	assert_non_null(policy_find(pol, "mail-ingest"));
	assert_false(policy_find(pol, "gateway")->has_pg);
	assert_true(policy_find(pol, "ops")->operator);
	assert_string_equal(policy_consumer(pol, "q:audit")->name, "audit");
	assert_null(policy_consumer(pol, "q:gateway"));
	assert_int_equal(policy_find(pol, "audit")->tables[0].rights, POLICY_INSERT | POLICY_SELECT);
	assert_int_equal(policy_find(pol, "ticket")->n_columns, 1);
	assert_string_equal(policy_find(pol, "ticket")->columns[0].table, "auth.users");
	assert_int_equal(policy_find(pol, "ticket")->columns[0].n_cols, 4);
	assert_string_equal(policy_find(pol, "ticket")->columns[0].cols[2], "email_bidx");
	assert_int_equal(policy_find(pol, "auth")->n_columns, 0);
	/* requests: (sender, stream) read by the consumer */
	assert_true(has_route(pol, "gateway", "q:auth", "auth"));
	assert_true(has_route(pol, "ops", "q:backup", "backup"));
	/* replies: (consumer, r:sender) read by the sender */
	assert_true(has_route(pol, "auth", "r:gateway", "gateway"));
	assert_true(has_route(pol, "audit", "r:mail-ingest", "mail-ingest"));
	assert_true(has_route(pol, "backup", "r:ops", "ops"));
	/* nothing the policy does not imply */
	assert_false(has_route(pol, "gateway", "r:auth", NULL));
	assert_false(has_route(pol, "auth", "q:ticket", NULL));
	assert_false(has_route(pol, "backup", "r:gateway", NULL));
	/* 14 sends + 14 distinct reply routes */
	assert_int_equal(pol->n_routes, 28);
	policy_free(pol);
}

/* Replace the first occurrence of from by to in good_policy. */
static char *variant(const char *from, const char *to)
{
	const char *at = strstr(good_policy, from);
	char *out;

	assert_non_null(at);
	out = calloc(1, sizeof good_policy + strlen(to) + 1);
	assert_non_null(out);
	memcpy(out, good_policy, (size_t)(at - good_policy));
	strcat(out, to);
	strcat(out, at + strlen(from));
	return out;
}

static void test_load_errors(void **state)
{
	static const struct {
		const char *from, *to, *expect;
	} cases[] = {
		{ "services:\n", "servicez:\n", "p.yaml:1: (top): unknown key 'servicez'" },
		{ "      send: [q:audit]\n    postgres:\n      schema: auth",
		  "      send: [q:Audit]\n    postgres:\n      schema: auth",
		  "p.yaml:9: services.auth.redis.send: invalid stream name" },
		{ "[q:auth, q:ticket, q:audit]", "[x:auth]", "invalid stream name 'x:auth'" },
		{ "[q:auth, q:ticket, q:audit]", "[q:auth2]", "invalid stream name" },
		{ "[q:auth, q:ticket, q:audit]", "[r:auth]", "reply streams are implied" },
		{ "[q:auth, q:ticket, q:audit]", "[q:nobody]", "unknown stream q:nobody" },
		{ "[q:auth, q:ticket, q:audit]", "[q:auth, q:auth]", "'q:auth' listed twice" },
		{ "events: [INSERT, SELECT]", "events: [INSERT, DROP]",
		  "p.yaml:33: services.audit.postgres.tables.events: unknown right 'DROP'" },
		{ "events: [INSERT, SELECT]", "events: []", "empty list of rights" },
		{ "events: [INSERT, SELECT]", "events: [SELECT, SELECT]", "listed twice" },
		{ "    postgres: none\n  auth:", "    postgres: maybe\n  auth:",
		  "services.gateway.postgres: expected 'none' or a mapping" },
		{ "    postgres: none\n  auth:", "    postgres: none\n    postgres: none\n  auth:",
		  "duplicate key 'postgres'" },
		{ "    postgres: none\n  auth:", "    redis_: {}\n    postgres: none\n  auth:",
		  "services.gateway: unknown key 'redis_'" },
		{ "      consume: [q:backup]", "      consume: [q:audit]",
		  "q:audit is already consumed by audit" },
		{ "  mail-ingest:\n    redis:\n      send: [q:ticket, q:auth, q:audit]\n    postgres: "
		  "none\n",
		  "  mail-ingest:\n    redis:\n      send: [q:ticket]\n", "missing 'postgres'" },
		{ "  ticket:\n", "  Ticket:\n", "services.Ticket: invalid name" },
		{ "      schema: ticket\n", "      schema: Ticket\n", "invalid schema name" },
		{ "        auth: [SELECT]\n", "        auth; x: [SELECT]\n", "invalid name" },
		{ "      all_tenants: [tenant.tenants, tenant.keys]",
		  "      all_tenants: [tenant]", "invalid table 'tenant' (expected schema.table)" },
		{ "      all_tenants: [tenant.tenants, tenant.keys]", "      all_tenants: [a.b\"]",
		  "invalid table" },
		{ "      send: [q:audit, q:auth]", "      send: [q:audit, q:ticket]",
		  "sends to its own queue" },
		{ "operators:\n  ops:", "operators:\n  auth:", "name already used" },
		{ "auth.users: [id, tenant_id", "auth_users: [id, tenant_id",
		  "invalid table 'auth_users' (expected schema.table)" },
		{ "[id, tenant_id, email_bidx, role]", "[id, email-bidx]",
		  "services.ticket.postgres.columns.auth.users: invalid column 'email-bidx'" },
		{ "[id, tenant_id, email_bidx, role]", "[]", "empty list of columns" },
		{ "[id, tenant_id, email_bidx, role]", "[id, id]", "'id' listed twice" },
		{ "[id, tenant_id, email_bidx, role]", "{id: x}", "expected a list" },
		{ "auth.users: [id, tenant_id", "ticket.tickets: [id, tenant_id",
		  "'columns' names its own schema 'ticket'" },
		{ "      schema: ticket\n      columns:", "      schema: ticket\n      on:\n"
		  "        auth: [SELECT]\n      columns:", "'on' already grants its schema" },
		{ "      send: [q:audit]\n    postgres:\n      schema: auth",
		  "      send: [q:audit\n    postgres:\n      schema: auth", "(yaml)" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *yaml = variant(cases[i].from, cases[i].to), *err = NULL;
		struct policy *pol = load(yaml, &err);

		if (pol != NULL || err == NULL || strstr(err, cases[i].expect) == NULL)
			print_error("case %zu: expected '%s', got '%s'\n", i, cases[i].expect,
				    err != NULL ? err : "(accepted)");
		assert_null(pol);
		assert_non_null(err);
		assert_non_null(strstr(err, cases[i].expect));
		/* every message starts with file:line: */
		assert_int_equal(strncmp(err, "p.yaml:", 7), 0);
		free(err);
		free(yaml);
	}
	{
		char *err = NULL;

		assert_null(load("", &err));
		assert_non_null(err);
		free(err);
		assert_null(load("- a\n- b\n", &err));
		assert_non_null(strstr(err, "expected a mapping"));
		free(err);
	}
}

/* Read a whole file into a NUL-terminated buffer (test helper, small files). */
static char *slurp(const char *dir, const char *name, size_t *len_r)
{
	char path[1024], *buf;
	FILE *f;
	size_t n;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	f = fopen(path, "r");
	if (f == NULL)
		return NULL;
	buf = calloc(1, 1 << 16);
	assert_non_null(buf);
	n = fread(buf, 1, (1 << 16) - 1, f);
	fclose(f);
	if (len_r != NULL)
		*len_r = n;
	return buf;
}

static int file_mode(const char *dir, const char *name)
{
	char path[1024];
	struct stat st;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (lstat(path, &st) < 0)
		return -1;
	return (int)(st.st_mode & 07777);
}

static void rm_rf(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[1024];

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		struct stat st;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
			rm_rf(path);
		else
			unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

/* Every line of a routes file names the holder as sender or reader. */
static void check_routes_file(const struct policy *pol, const char *dir, const char *name)
{
	char file[64], *buf, *save = NULL;
	int lines = 0;

	snprintf(file, sizeof file, "routes-%s", name);
	buf = slurp(dir, file, NULL);
	assert_non_null(buf);
	for (char *l = strtok_r(buf, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
		char sender[40], route[40], hex[80];
		unsigned v;

		if (l[0] == '#')
			continue;
		assert_int_equal(sscanf(l, "%39s %39s %u %79s", sender, route, &v, hex), 4);
		assert_int_equal(strlen(hex), 64);
		assert_int_equal(v, 1);
		assert_true(has_route(pol, sender, route, NULL));
		if (strcmp(sender, name) != 0) {
			int reads = 0;

			for (size_t i = 0; i < pol->n_routes; i++)
				if (strcmp(pol->routes[i].sender, sender) == 0 &&
				    strcmp(pol->routes[i].route, route) == 0 &&
				    strcmp(pol->routes[i].reader, name) == 0)
					reads = 1;
			assert_true(reads);
		}
		lines++;
	}
	assert_true(lines > 0);
	free(buf);
}

static void test_secrets(void **state)
{
	char tmpl[] = "/tmp/test_policy.XXXXXX", dir[64], *err = NULL, *a, *b, *c;
	const char *e = NULL;
	struct policy *pol = load(good_policy, &err), *pol2;
	char *yaml2;
	size_t len;

	(void)state;
	assert_non_null(pol);
	assert_non_null(mkdtemp(tmpl));
	snprintf(dir, sizeof dir, "%s/secrets", tmpl);
	assert_int_equal(policy_secrets(pol, dir, &e), 0);
	assert_int_equal(file_mode(tmpl, "secrets") & 0777, 0700);
	assert_int_equal(file_mode(dir, "redis-gateway"), 0600);
	assert_int_equal(file_mode(dir, "redis-ops"), 0600);
	assert_int_equal(file_mode(dir, "redis-admin"), 0600);
	assert_int_equal(file_mode(dir, "pg-auth"), 0600);
	assert_int_equal(file_mode(dir, "pg-ops"), 0600);
	assert_int_equal(file_mode(dir, "pg-gateway"), -1);	/* no database credential */
	assert_int_equal(file_mode(dir, "pg-mail-ingest"), -1);
	assert_int_equal(file_mode(dir, "kek"), 0600);
	assert_int_equal(file_mode(dir, "routes.all"), 0600);
	assert_int_equal(file_mode(dir, "routes-auth"), 0600);
	a = slurp(dir, "kek", &len);
	assert_int_equal(len, 32);
	free(a);
	a = slurp(dir, "redis-auth", &len);
	assert_int_equal(len, 49);
	assert_int_equal(a[48], '\n');
	b = slurp(dir, "redis-ticket", NULL);
	assert_string_not_equal(a, b);
	free(a);
	free(b);
	for (size_t i = 0; i < pol->n; i++)
		check_routes_file(pol, dir, pol->p[i].name);
	/* gateway holds its sends and its replies, never another service's */
	a = slurp(dir, "routes-gateway", NULL);
	assert_non_null(strstr(a, "gateway q:auth 1 "));
	assert_non_null(strstr(a, "auth r:gateway 1 "));
	assert_null(strstr(a, "ticket q:auth"));
	assert_null(strstr(a, "r:ticket"));
	free(a);

	/* A second run changes nothing, and never replaces an existing secret. */
	{
		char path[1024];
		FILE *f;

		snprintf(path, sizeof path, "%s/redis-auth", dir);
		f = fopen(path, "w");
		assert_non_null(f);
		fputs("operator-chosen-password-000000\n", f);
		fclose(f);
	}
	a = slurp(dir, "routes.all", NULL);
	assert_int_equal(policy_secrets(pol, dir, &e), 0);
	b = slurp(dir, "routes.all", NULL);
	assert_string_equal(a, b);
	free(b);
	b = slurp(dir, "redis-auth", NULL);
	assert_string_equal(b, "operator-chosen-password-000000\n");
	free(b);

	/* A new route is added; existing keys stay. */
	yaml2 = variant("      send: [q:audit]\n    postgres:\n      schema: backup",
			"      send: [q:audit, q:ticket]\n    postgres:\n      schema: backup");
	pol2 = load(yaml2, &err);
	assert_non_null(pol2);
	assert_int_equal(policy_secrets(pol2, dir, &e), 0);
	b = slurp(dir, "routes.all", NULL);
	assert_int_equal(strncmp(a, b, strlen(a)), 0);
	assert_non_null(strstr(b + strlen(a), "backup q:ticket 1 "));
	assert_non_null(strstr(b + strlen(a), "ticket r:backup 1 "));
	c = slurp(dir, "routes-ticket", NULL);
	assert_non_null(strstr(c, "backup q:ticket 1 "));
	free(c);

	/* A corrupt master list is refused, not regenerated. */
	{
		char path[1024];
		FILE *f;

		snprintf(path, sizeof path, "%s/routes.all", dir);
		f = fopen(path, "a");
		assert_non_null(f);
		fputs("auth q:audit 1 nothex\n", f);
		fclose(f);
		assert_int_equal(policy_secrets(pol2, dir, &e), -1);
	}
	free(a);
	free(b);
	free(yaml2);
	policy_free(pol2);
	policy_free(pol);
	rm_rf(tmpl);
}

/* Run a generator into a malloc'd string. */
static char *capture(int (*fn)(const struct policy *, const char *, FILE *, const char **),
		     const struct policy *pol, const char *dir, int *ret_r)
{
	static char *buf; /* static: open_memstream keeps their addresses until fclose */
	static size_t len;
	FILE *f;
	const char *e = NULL;

	buf = NULL;
	len = 0;
	f = open_memstream(&buf, &len);
	assert_non_null(f);
	*ret_r = fn(pol, dir, f, &e);
	fclose(f);
	return buf;
}

static void test_acl_and_sql(void **state)
{
	char tmpl[] = "/tmp/test_policy.XXXXXX", *err = NULL, *acl, *sql, *pw;
	const char *e = NULL;
	struct policy *pol = load(good_policy, &err);
	int ret;

	(void)state;
	assert_non_null(mkdtemp(tmpl));
	/* no secrets yet: refused */
	acl = capture(policy_redis_acl, pol, tmpl, &ret);
	assert_int_equal(ret, -1);
	free(acl);
	assert_int_equal(policy_secrets(pol, tmpl, &e), 0);
	acl = capture(policy_redis_acl, pol, tmpl, &ret);
	assert_int_equal(ret, 0);
	assert_int_equal(strncmp(acl, "user default off resetpass", 26), 0);
	assert_true(acl[0] != '#' && strstr(acl, "\n#") == NULL); /* Redis takes no comments */
	pw = slurp(tmpl, "redis-auth", NULL);
	pw[strcspn(pw, "\n")] = '\0';
	assert_null(strstr(acl, pw)); /* only hashes */
	free(pw);
	assert_non_null(strstr(acl, "user admin on #"));
	assert_non_null(strstr(acl, "(~q:auth +xreadgroup"));
	assert_non_null(strstr(acl, "%W~r:gateway:* "));
	assert_non_null(strstr(acl, "(%W~hb:auth:* +set +expire +del)"));
	/* gateway: no queue of its own, no dead letters, no consume rights */
	{
		char *g = strstr(acl, "user gateway "), *end = strchr(g, '\n');

		*end = '\0';
		assert_null(strstr(g, "xreadgroup"));
		assert_null(strstr(g, "dl:"));
		assert_null(strstr(g, "+@all"));
		*end = '\n';
	}
	assert_non_null(strstr(strstr(acl, "user ops "), "%R~q:*"));
	free(acl);

	sql = capture(policy_sql, pol, tmpl, &ret);
	assert_int_equal(ret, 0);
	pw = slurp(tmpl, "pg-auth", NULL);
	pw[strcspn(pw, "\n")] = '\0';
	assert_null(strstr(sql, pw));
	free(pw);
	assert_non_null(strstr(sql, "\\set pw_auth `cat '/tmp/test_policy."));
	assert_non_null(strstr(sql, "ALTER ROLE ward_auth PASSWORD :'pw_auth';"));
	assert_null(strstr(sql, "ALTER ROLE ward_mail_ingest"));
	assert_null(strstr(sql, "GRANT CONNECT ON DATABASE :\"DBNAME\" TO ward_gateway"));
	assert_non_null(strstr(sql, "NOBYPASSRLS NOINHERIT"));
	assert_non_null(strstr(sql, "REVOKE ALL ON TABLE audit.events FROM ward_audit;\n"
				    "GRANT SELECT, INSERT ON TABLE audit.events TO ward_audit;"));
	assert_non_null(strstr(sql, "CREATE POLICY ward_ops ON tenant.tenants AS PERMISSIVE FOR "
				    "SELECT TO ward_ops USING (true);"));
	assert_non_null(strstr(sql, "GRANT USAGE ON SCHEMA auth TO ward_ticket;\nGRANT SELECT (id, "
				    "tenant_id, email_bidx, role) ON TABLE auth.users TO ward_ticket;"));
	assert_null(strstr(sql, "GRANT SELECT ON ALL TABLES IN SCHEMA auth TO ward_ticket"));
	assert_non_null(strstr(sql, "NOLOGIN PASSWORD NULL"));
	assert_non_null(strstr(sql, "BEGIN;"));
	assert_non_null(strstr(sql, "COMMIT;"));
	free(sql);
	policy_free(pol);
	rm_rf(tmpl);
}

/* ---- A real redis-server with the generated ACL --------------------------- */

struct redis_fixture {
	char dir[64];
	int port;
	pid_t pid;
};

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static redisContext *redis_login(const struct redis_fixture *fx, const char *user)
{
	char name[64], *pw;
	redisContext *c = redisConnect("127.0.0.1", fx->port);
	redisReply *r;

	assert_non_null(c);
	assert_int_equal(c->err, 0);
	snprintf(name, sizeof name, "redis-%s", user);
	pw = slurp(fx->dir, name, NULL);
	assert_non_null(pw);
	pw[strcspn(pw, "\n")] = '\0';
	r = redisCommand(c, "AUTH %s %s", user, pw);
	assert_non_null(r);
	if (r->type != REDIS_REPLY_STATUS)
		print_error("AUTH %s: %s\n", user, r->str);
	assert_int_equal(r->type, REDIS_REPLY_STATUS);
	freeReplyObject(r);
	free(pw);
	return c;
}

/* Run a command; 1 if Redis refused it with NOPERM, 0 if it was allowed. */
static int noperm(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	redisReply *r;
	int denied;

	va_start(ap, fmt);
	r = redisvCommand(c, fmt, ap);
	va_end(ap);
	assert_non_null(r);
	denied = r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOPERM", 6) == 0;
	freeReplyObject(r);
	return denied;
}

static int redis_setup(void **state)
{
	static struct redis_fixture fx;
	char *err = NULL, acl_path[128], port[16], *acl;
	const char *e = NULL;
	struct policy *pol;
	FILE *f;
	int ret;

	if (access("/usr/bin/redis-server", X_OK) != 0) {
		*state = NULL;
		return 0;
	}
	snprintf(fx.dir, sizeof fx.dir, "/tmp/test_policy.XXXXXX");
	assert_non_null(mkdtemp(fx.dir));
	pol = load(good_policy, &err);
	assert_non_null(pol);
	assert_int_equal(policy_secrets(pol, fx.dir, &e), 0);
	acl = capture(policy_redis_acl, pol, fx.dir, &ret);
	assert_int_equal(ret, 0);
	policy_free(pol);
	snprintf(acl_path, sizeof acl_path, "%s/users.acl", fx.dir);
	f = fopen(acl_path, "w");
	assert_non_null(f);
	fputs(acl, f);
	fclose(f);
	free(acl);
	fx.port = free_port();
	snprintf(port, sizeof port, "%d", fx.port);
	fx.pid = fork();
	assert_true(fx.pid >= 0);
	if (fx.pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		dup2(null, 2);
		execl("/usr/bin/redis-server", "redis-server", "--port", port, "--bind",
		      "127.0.0.1", "--dir", fx.dir, "--aclfile", acl_path, "--save", "",
		      "--appendonly", "no", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100; i++) {
		redisContext *c = redisConnect("127.0.0.1", fx.port);
		int up = c != NULL && c->err == 0;

		redisFree(c);
		if (up) {
			*state = &fx;
			return 0;
		}
		usleep(50000);
	}
	kill(fx.pid, SIGKILL);
	waitpid(fx.pid, NULL, 0);
	return -1;
}

static int redis_teardown(void **state)
{
	struct redis_fixture *fx = *state;

	if (fx == NULL)
		return 0;
	kill(fx->pid, SIGTERM);
	waitpid(fx->pid, NULL, 0);
	rm_rf(fx->dir);
	return 0;
}

static void test_redis_acl_enforced(void **state)
{
	struct redis_fixture *fx = *state;
	redisContext *admin, *gw, *auth, *ops, *anon;
	redisReply *r;

	if (fx == NULL)
		skip();
	/* the default user is off: nothing without AUTH, and AUTH default fails */
	anon = redisConnect("127.0.0.1", fx->port);
	r = redisCommand(anon, "PING");
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	assert_non_null(strstr(r->str, "NOAUTH"));
	freeReplyObject(r);
	r = redisCommand(anon, "AUTH default %s", "");
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	freeReplyObject(r);
	r = redisCommand(anon, "AUTH auth wrong-password");
	assert_int_equal(r->type, REDIS_REPLY_ERROR);
	freeReplyObject(r);
	redisFree(anon);

	admin = redis_login(fx, "admin");
	assert_false(noperm(admin, "XGROUP CREATE q:auth auth $ MKSTREAM"));
	gw = redis_login(fx, "gateway");
	auth = redis_login(fx, "auth");
	ops = redis_login(fx, "ops");

	/* allowed: the transport's own paths */
	assert_false(noperm(gw, "PING"));
	assert_false(noperm(gw, "XADD q:auth * e x"));
	assert_false(noperm(auth, "XREADGROUP GROUP auth a1 COUNT 10 STREAMS q:auth >"));
	assert_false(noperm(auth, "XAUTOCLAIM q:auth auth a1 0 0-0 COUNT 10"));
	assert_false(noperm(auth, "XPENDING q:auth auth - + 10"));
	assert_false(noperm(auth, "XACK q:auth auth 0-1"));
	assert_false(noperm(auth, "XDEL q:auth 0-1")); /* what it acked, in its own queue */
	assert_false(noperm(auth, "XADD r:gateway:gw-1 MAXLEN ~ 1000 * e y"));
	assert_false(noperm(auth, "XADD q:audit * e x"));
	assert_false(noperm(auth, "XADD dl:auth * e x"));
	assert_false(noperm(auth, "SET hb:auth:a1 {} EX 15"));
	assert_false(noperm(gw, "XREAD COUNT 10 STREAMS r:gateway:gw-1 0"));
	assert_false(noperm(gw, "DEL r:gateway:gw-1"));
	assert_false(noperm(ops, "GET hb:auth:a1"));
	assert_false(noperm(ops, "XRANGE q:auth - + COUNT 1"));
	assert_false(noperm(ops, "XADD q:backup * e x"));

	/* denied: forbidden commands */
	assert_true(noperm(gw, "FLUSHALL"));
	assert_true(noperm(auth, "KEYS *"));
	assert_true(noperm(auth, "CONFIG GET *"));
	assert_true(noperm(auth, "EVAL %s 0", "return 1"));
	assert_true(noperm(auth, "XGROUP CREATE q:auth x $"));
	assert_true(noperm(ops, "FLUSHDB"));
	assert_true(noperm(ops, "ACL LIST"));
	/* denied: another service's streams, replies, heartbeats */
	assert_true(noperm(auth, "XREADGROUP GROUP ticket a1 COUNT 1 STREAMS q:ticket >"));
	assert_true(noperm(auth, "XADD q:ticket * e x"));
	assert_true(noperm(auth, "XADD q:backup * e x"));
	assert_true(noperm(gw, "XADD r:auth:a1 * e x"));
	assert_true(noperm(gw, "XREAD COUNT 1 STREAMS r:auth:a1 0"));
	assert_true(noperm(auth, "XREAD COUNT 1 STREAMS r:gateway:gw-1 0"));
	assert_true(noperm(auth, "SET hb:ticket:t1 x"));
	assert_true(noperm(auth, "XADD dl:ticket * e x"));
	/* denied: a sender may append to a queue, nothing else */
	assert_true(noperm(gw, "XRANGE q:auth - +"));
	assert_true(noperm(gw, "XREADGROUP GROUP auth g COUNT 1 STREAMS q:auth >"));
	assert_true(noperm(gw, "XACK q:auth auth 0-1"));
	assert_true(noperm(gw, "XDEL q:auth 0-1"));
	/* a consumer deletes what it handled in its own queue, never in one it sends to */
	assert_true(noperm(auth, "XDEL q:audit 0-1"));
	assert_true(noperm(auth, "XDEL q:ticket 0-1"));
	assert_true(noperm(auth, "XDEL dl:auth 0-1"));
	assert_true(noperm(auth, "XDEL r:gateway:gw-1 0-1"));
	assert_true(noperm(ops, "XDEL q:auth 0-1"));
	assert_true(noperm(gw, "DEL q:auth"));
	assert_true(noperm(gw, "SET q:auth x"));
	assert_true(noperm(ops, "DEL q:auth"));
	assert_true(noperm(auth, "DEL r:gateway:gw-1"));
	assert_true(noperm(auth, "GET hb:auth:a1"));
	/* the queue survived all of that */
	r = redisCommand(admin, "XLEN q:auth");
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	assert_int_equal(r->integer, 1);
	freeReplyObject(r);
	redisFree(admin);
	redisFree(gw);
	redisFree(auth);
	redisFree(ops);
}


/* ---- A real PostgreSQL cluster with the migrations and the generated SQL --- */

#define PG_BIN "/usr/lib/postgresql/15/bin"

struct pg_fixture {
	char dir[64];
	char top[PATH_MAX];
	int port;
};

/* Run a shell command quietly; its exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	if (r < 0 || (size_t)r >= sizeof cmd)
		return -1;
	r = system(cmd);
	return r == -1 ? -1 : WEXITSTATUS(r);
}

/* The repository top: this binary is <top>/bin/tests/test_policy. */
static int repo_top(char top[PATH_MAX])
{
	char *cut;

	if (realpath("/proc/self/exe", top) == NULL || (cut = strstr(top, "/bin/tests/")) == NULL)
		return -1;
	*cut = '\0';
	return 0;
}

static int pg_setup(void **state)
{
	static struct pg_fixture fx;
	struct policy *pol;
	char *err = NULL, *sql, path[PATH_MAX + 64], pw[PATH_MAX + 64];
	const char *e = NULL;
	FILE *f;
	int ret;

	*state = NULL;
	/* initdb refuses root; tests run as the unprivileged user */
	if (geteuid() == 0 || access(PG_BIN "/initdb", X_OK) != 0 || repo_top(fx.top) < 0)
		return 0;
	snprintf(fx.dir, sizeof fx.dir, "/tmp/test_policy.XXXXXX");
	assert_non_null(mkdtemp(fx.dir));
	pol = load(good_policy, &err);
	assert_non_null(pol);
	snprintf(path, sizeof path, "%s/s", fx.dir);
	assert_int_equal(policy_secrets(pol, path, &e), 0);
	sql = capture(policy_sql, pol, path, &ret);
	assert_int_equal(ret, 0);
	policy_free(pol);
	snprintf(path, sizeof path, "%s/grants.sql", fx.dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(sql, f);
	fclose(f);
	free(sql);
	snprintf(pw, sizeof pw, "%s/su", fx.dir);
	f = fopen(pw, "w");
	assert_non_null(f);
	fputs("superuser-test-password\n", f);
	fclose(f);
	fx.port = free_port();
	assert_int_equal(sh(PG_BIN "/initdb -D %s/data -U postgres --auth=scram-sha-256 "
				   "--pwfile=%s -E UTF8 --no-sync >/dev/null 2>&1",
			    fx.dir, pw),
			 0);
	assert_int_equal(sh(PG_BIN "/pg_ctl -D %s/data -o \"-p %d -k %s -c "
				   "listen_addresses=127.0.0.1 -c fsync=off\" -l %s/log -w start "
				   ">/dev/null 2>&1",
			    fx.dir, fx.port, fx.dir, fx.dir),
			 0);
	*state = &fx;
	setenv("PGPASSWORD", "superuser-test-password", 1);
	assert_int_equal(sh("psql -h 127.0.0.1 -p %d -U postgres -d postgres -qc "
			    "'CREATE DATABASE ward' >/dev/null", fx.port), 0);
	/* A role the policy gives no database access (postgres: none) that exists. */
	assert_int_equal(sh("psql -h 127.0.0.1 -p %d -U postgres -d ward -qc "
			    "\"CREATE ROLE ward_gateway LOGIN PASSWORD 'gw-password-123'\"",
			    fx.port), 0);
	assert_int_equal(sh("for f in %s/deploy/sql/[0-9]*.sql; do psql -h 127.0.0.1 -p %d "
			    "-U postgres -d ward -1 -v ON_ERROR_STOP=1 -q -f \"$f\" || exit 1; "
			    "done", fx.top, fx.port), 0);
	/* twice: idempotent */
	for (int i = 0; i < 2; i++)
		assert_int_equal(sh("psql -h 127.0.0.1 -p %d -U postgres -d ward -v ON_ERROR_STOP=1 "
				    "-q -f %s/grants.sql >/dev/null", fx.port, fx.dir), 0);
	assert_int_equal(
		sh("psql -h 127.0.0.1 -p %d -U postgres -d ward -v ON_ERROR_STOP=1 -q -c \""
		   "INSERT INTO tenant.tenants (id, slug, name, region) VALUES "
		   "('11111111-1111-4111-8111-111111111111', 'acme', 'Acme', 'eu'), "
		   "('22222222-2222-4222-8222-222222222222', 'beta', 'Beta', 'eu'); "
		   "INSERT INTO auth.users (id, tenant_id, email_enc, email_bidx, role) VALUES "
		   "(gen_random_uuid(), '11111111-1111-4111-8111-111111111111', '\\x01', "
		   "repeat('a', 64), 'admin'), "
		   "(gen_random_uuid(), '22222222-2222-4222-8222-222222222222', '\\x02', "
		   "repeat('b', 64), 'admin'); "
		   "INSERT INTO audit.events (tenant_id, type, action, actor, seq, hash) VALUES "
		   "('11111111-1111-4111-8111-111111111111', 'admin', 'create', 'x', 1, "
		   "sha256('e1'))\"",
		   fx.port),
		0);
	unsetenv("PGPASSWORD");
	return 0;
}

static int pg_teardown(void **state)
{
	struct pg_fixture *fx = *state;

	if (fx == NULL)
		return 0;
	sh(PG_BIN "/pg_ctl -D %s/data -m immediate stop >/dev/null 2>&1", fx->dir);
	rm_rf(fx->dir);
	return 0;
}

/* Connect as role with the password of secret file name (NULL: pw given). */
static PGconn *pg_login(const struct pg_fixture *fx, const char *role, const char *secret,
			const char *pw)
{
	char port[16], dir[128], *buf = NULL;
	const char *keys[] = { "host", "port", "dbname", "user", "password", NULL };
	const char *vals[6];
	PGconn *c;

	snprintf(port, sizeof port, "%d", fx->port);
	if (secret != NULL) {
		snprintf(dir, sizeof dir, "%s/s", fx->dir);
		buf = slurp(dir, secret, NULL);
		assert_non_null(buf);
		buf[strcspn(buf, "\n")] = '\0';
		pw = buf;
	}
	vals[0] = "127.0.0.1", vals[1] = port, vals[2] = "ward", vals[3] = role, vals[4] = pw;
	vals[5] = NULL;
	c = PQconnectdbParams(keys, vals, 0);
	free(buf);
	return c;
}

/* Run sql; the SQLSTATE of its error, or "00000". Copied into a static buffer. */
static const char *pg_state(PGconn *c, const char *sql)
{
	static char state[6];
	PGresult *r = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(r);

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		snprintf(state, sizeof state, "00000");
	else
		snprintf(state, sizeof state, "%s",
			 PQresultErrorField(r, PG_DIAG_SQLSTATE) ? PQresultErrorField(r, PG_DIAG_SQLSTATE)
								 : "?????");
	PQclear(r);
	return state;
}

/* The single value of a query, as an integer. */
static long pg_count(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	long n = -1;

	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		n = atol(PQgetvalue(r, 0, 0));
	PQclear(r);
	return n;
}

#define ACME "SELECT set_config('app.tenant_id', '11111111-1111-4111-8111-111111111111', true)"
#define DENIED "42501"

static void test_pg_enforced(void **state)
{
	struct pg_fixture *fx = *state;
	PGconn *auth, *audit, *ops, *backup, *ticket, *su, *c;

	if (fx == NULL)
		skip();
	auth = pg_login(fx, "ward_auth", "pg-auth", NULL);
	assert_int_equal(PQstatus(auth), CONNECTION_OK);
	/* RLS: no tenant set, no rows; tenant set, only its rows; no writes elsewhere */
	assert_int_equal(pg_count(auth, "SELECT count(*) FROM auth.users"), 0);
	assert_string_equal(pg_state(auth, "BEGIN"), "00000");
	assert_string_equal(pg_state(auth, ACME), "00000");
	assert_int_equal(pg_count(auth, "SELECT count(*) FROM auth.users"), 1);
	assert_int_equal(pg_count(auth, "SELECT count(*) FROM tenant.tenants"), 1);
	assert_string_equal(pg_state(auth, "INSERT INTO auth.users (id, tenant_id, email_enc, "
					   "email_bidx, role) VALUES (gen_random_uuid(), "
					   "'22222222-2222-4222-8222-222222222222', '\\x03', "
					   "repeat('c', 64), 'admin')"),
			    DENIED);
	pg_state(auth, "ROLLBACK");
	/* other schemas, other rights */
	assert_string_equal(pg_state(auth, "SELECT * FROM ticket.processed"), DENIED);
	assert_string_equal(pg_state(auth, "SELECT * FROM audit.events"), DENIED);
	assert_string_equal(pg_state(auth, "UPDATE tenant.tenants SET name = 'x'"), DENIED);
	assert_string_equal(pg_state(auth, "INSERT INTO directory.tenants VALUES ('zzz', 'eu')"),
			    DENIED);
	assert_string_equal(pg_state(auth, "CREATE TABLE auth.x (a int)"), DENIED);
	assert_string_equal(pg_state(auth, "CREATE TABLE public.x (a int)"), DENIED);
	assert_string_equal(pg_state(auth, "CREATE TEMP TABLE x (a int)"), DENIED);
	assert_string_equal(pg_state(auth, "SET ROLE ward_ops"), DENIED);
	PQfinish(auth);

	/* audit: INSERT and SELECT its events, never UPDATE, DELETE or TRUNCATE */
	audit = pg_login(fx, "ward_audit", "pg-audit", NULL);
	assert_int_equal(PQstatus(audit), CONNECTION_OK);
	assert_string_equal(pg_state(audit, "BEGIN"), "00000");
	assert_string_equal(pg_state(audit, ACME), "00000");
	assert_string_equal(pg_state(audit, "INSERT INTO audit.events (tenant_id, type, action, "
					    "actor, seq, prev_hash, hash) VALUES ('11111111-1111-"
					    "4111-8111-111111111111', 'a', 'b', 'c', 2, sha256('e1'), "
					    "sha256('e2'))"),
			    "00000");
	assert_int_equal(pg_count(audit, "SELECT count(*) FROM audit.events"), 2);
	assert_string_equal(pg_state(audit, "COMMIT"), "00000");
	assert_string_equal(pg_state(audit, "UPDATE audit.events SET actor = 'z'"), DENIED);
	assert_string_equal(pg_state(audit, "DELETE FROM audit.events"), DENIED);
	assert_string_equal(pg_state(audit, "TRUNCATE audit.events"), DENIED);
	assert_string_equal(pg_state(audit, "SELECT * FROM auth.users"), DENIED);
	PQfinish(audit);

	/* even the table owner cannot rewrite the audit log */
	su = pg_login(fx, "postgres", NULL, "superuser-test-password");
	assert_int_equal(PQstatus(su), CONNECTION_OK);
	assert_string_equal(pg_state(su, "UPDATE audit.events SET actor = 'z'"), DENIED);
	assert_string_equal(pg_state(su, "DELETE FROM audit.events"), DENIED);
	/* audit.event_details references the events (060_gdpr): a plain TRUNCATE is
	 * refused for that already (0A000), with CASCADE the append-only trigger. */
	assert_string_not_equal(pg_state(su, "TRUNCATE audit.events"), "00000");
	assert_string_equal(pg_state(su, "TRUNCATE audit.events CASCADE"), DENIED);
	assert_int_equal(pg_count(su, "SELECT count(DISTINCT tableowner) FROM pg_tables WHERE "
				      "schemaname IN ('auth', 'tenant', 'audit', 'directory')"),
			 1);
	assert_int_equal(pg_count(su, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'ward\\_%' "
				      "AND (rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb)"),
			 0);
	PQfinish(su);

	/* operator: every tenant's row in tenant.tenants, but no other tenant's users */
	ops = pg_login(fx, "ward_ops", "pg-ops", NULL);
	assert_int_equal(PQstatus(ops), CONNECTION_OK);
	assert_int_equal(pg_count(ops, "SELECT count(*) FROM tenant.tenants"), 2);
	assert_int_equal(pg_count(ops, "SELECT count(*) FROM auth.users"), 0);
	assert_int_equal(pg_count(ops, "WITH u AS (UPDATE tenant.tenants SET name = 'x' "
				       "RETURNING 1) SELECT count(*) FROM u"),
			 0);
	assert_string_equal(pg_state(ops, "SELECT * FROM ticket.processed"), DENIED);
	PQfinish(ops);

	/* backup reads, never writes */
	backup = pg_login(fx, "ward_backup", "pg-backup", NULL);
	assert_int_equal(PQstatus(backup), CONNECTION_OK);
	assert_string_equal(pg_state(backup, "SELECT count(*) FROM auth.users"), "00000");
	assert_string_equal(pg_state(backup, "DELETE FROM auth.users"), DENIED);
	PQfinish(backup);

	/* ticket: the granted columns of auth.users, under its RLS; nothing else of it */
	ticket = pg_login(fx, "ward_ticket", "pg-ticket", NULL);
	assert_int_equal(PQstatus(ticket), CONNECTION_OK);
	assert_int_equal(pg_count(ticket, "SELECT count(email_bidx) FROM auth.users"), 0);
	assert_string_equal(pg_state(ticket, "BEGIN"), "00000");
	assert_string_equal(pg_state(ticket, ACME), "00000");
	assert_int_equal(pg_count(ticket, "SELECT count(*) FROM auth.users WHERE role = 'admin' "
					  "AND email_bidx = repeat('a', 64)"),
			 1);
	assert_int_equal(pg_count(ticket, "SELECT count(id) FROM auth.users WHERE tenant_id = "
					  "'22222222-2222-4222-8222-222222222222'"),
			 0);
	assert_string_equal(pg_state(ticket, "ROLLBACK"), "00000");
	assert_string_equal(pg_state(ticket, "SELECT email_enc FROM auth.users"), DENIED);
	assert_string_equal(pg_state(ticket, "SELECT password_hash FROM auth.users"), DENIED);
	assert_string_equal(pg_state(ticket, "SELECT * FROM auth.users"), DENIED);
	assert_string_equal(pg_state(ticket, "UPDATE auth.users SET role = 'admin'"), DENIED);
	assert_string_equal(pg_state(ticket, "SELECT count(*) FROM auth.sessions"), DENIED);
	PQfinish(ticket);
	/* the sweep takes column rights back when the policy drops them */
	{
		char *yaml = variant("      columns:\n        auth.users: [id, tenant_id, email_bidx, "
				     "role]\n", ""), *err = NULL, *sql, path[PATH_MAX + 64];
		struct policy *pol = load(yaml, &err);
		int ret;
		FILE *f;

		assert_non_null(pol);
		snprintf(path, sizeof path, "%s/s", fx->dir);
		sql = capture(policy_sql, pol, path, &ret);
		assert_int_equal(ret, 0);
		snprintf(path, sizeof path, "%s/grants2.sql", fx->dir);
		assert_non_null(f = fopen(path, "w"));
		fputs(sql, f);
		fclose(f);
		free(sql);
		policy_free(pol);
		free(yaml);
		setenv("PGPASSWORD", "superuser-test-password", 1);
		assert_int_equal(sh("psql -h 127.0.0.1 -p %d -U postgres -d ward -v ON_ERROR_STOP=1 "
				    "-q -f %s >/dev/null", fx->port, path), 0);
		unsetenv("PGPASSWORD");
		ticket = pg_login(fx, "ward_ticket", "pg-ticket", NULL);
		assert_int_equal(PQstatus(ticket), CONNECTION_OK);
		assert_string_equal(pg_state(ticket, "SELECT email_bidx FROM auth.users"), DENIED);
		PQfinish(ticket);
	}

	/* credentials: a password opens only its own role; no-database roles cannot log in */
	ticket = pg_login(fx, "ward_ticket", "pg-auth", NULL);
	assert_int_not_equal(PQstatus(ticket), CONNECTION_OK);
	PQfinish(ticket);
	c = pg_login(fx, "ward_gateway", NULL, "gw-password-123");
	assert_int_not_equal(PQstatus(c), CONNECTION_OK);
	PQfinish(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_load_good),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_secrets),
		cmocka_unit_test(test_acl_and_sql),
		cmocka_unit_test_setup_teardown(test_redis_acl_enforced, redis_setup,
						redis_teardown),
		cmocka_unit_test_setup_teardown(test_pg_enforced, pg_setup, pg_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
