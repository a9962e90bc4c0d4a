/*
 * test_config — a good file with every type (and defaults), then every kind of refusal
 * with its exact "file:line: key: reason" text, checking that a failed load leaves the
 * target zeroed (and, under ASan, that nothing leaked). Table bugs must abort.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

struct cfg {
	char *name;
	int port;
	bool tls;
	struct conf_secret pw;
	struct conf_list hosts;
	char *redis_host;
	int redis_db;
	char *mode;
	int any;
};

/* Validator: mode must be "safe" or "fast". */
static int mode_ok(const void *value, const char **reason_r)
{
	const char *s = *(char *const *)value;

	if (strcmp(s, "safe") == 0 || strcmp(s, "fast") == 0)
		return 0;
	*reason_r = "must be safe or fast";
	return -1;
}

static const struct conf_entry cfg_table[] = {
	{ "name", CONF_STR, offsetof(struct cfg, name), true, NULL, 0, 0, NULL },
	{ "port", CONF_INT, offsetof(struct cfg, port), true, NULL, 1, 65535, NULL },
	{ "tls", CONF_BOOL, offsetof(struct cfg, tls), false, "yes", 0, 0, NULL },
	{ "password_file", CONF_SECRET_FILE, offsetof(struct cfg, pw), false, NULL, 0, 0, NULL },
	{ "hosts", CONF_STR_LIST, offsetof(struct cfg, hosts), false, "[a, b]", 0, 0, NULL },
	{ "redis.host", CONF_STR, offsetof(struct cfg, redis_host), false, "127.0.0.1", 0, 0,
	  NULL },
	{ "redis.db", CONF_INT, offsetof(struct cfg, redis_db), true, NULL, 0, 15, NULL },
	{ "mode", CONF_STR, offsetof(struct cfg, mode), false, "safe", 0, 0, mode_ok },
	{ "deep.a.b.c", CONF_INT, offsetof(struct cfg, any), false, NULL, 0, 0, NULL },
};

static char tmpdir[64];

/* A path inside the test's temp dir (static buffer, one per call site is enough). */
static const char *tmp_path(const char *name, char buf[256])
{
	snprintf(buf, 256, "%s/%s", tmpdir, name);
	return buf;
}

/* Write a file in the temp dir. */
static void put_file(const char *name, const void *data, size_t len)
{
	char path[256];
	FILE *f = fopen(tmp_path(name, path), "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static int group_setup(void **state)
{
	char buf[4096];

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/ward-test-config-XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	put_file("pw", "s3cret\n", 7);
	put_file("pw2", "two\n\n", 5);
	put_file("empty", "", 0);
	put_file("nl", "\n", 1);
	memset(buf, 'x', sizeof(buf));
	{
		char path[256];
		FILE *f = fopen(tmp_path("big", path), "wb");
		int i;

		if (f == NULL)
			return -1;
		for (i = 0; i < 17; i++) /* 68 KiB > 64 KiB */
			if (fwrite(buf, 1, sizeof(buf), f) != sizeof(buf))
				return -1;
		fclose(f);
	}
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Every table field is zero (nothing left behind after a failure or conf_free). */
static void assert_zeroed(const struct cfg *c)
{
	assert_null(c->name);
	assert_int_equal(c->port, 0);
	assert_false(c->tls);
	assert_null(c->pw.path);
	assert_null(c->pw.data);
	assert_int_equal(c->pw.len, 0);
	assert_null(c->hosts.items);
	assert_int_equal(c->hosts.n, 0);
	assert_null(c->redis_host);
	assert_int_equal(c->redis_db, 0);
	assert_null(c->mode);
	assert_int_equal(c->any, 0);
}

/* Load yaml against cfg_table; return the error (malloc'd) or NULL on success. */
static char *load(const char *yaml, struct cfg *c)
{
	struct conf_section sec = { cfg_table, sizeof(cfg_table) / sizeof(cfg_table[0]), c };
	char *err = NULL;
	int r;

	/* Garbage in the target must not matter: fields are zeroed before use. */
	memset(c, 0xa5, sizeof(*c));
	r = conf_load_buffer("t.yaml", yaml, strlen(yaml), &sec, 1, &err);
	if (r == 0) {
		assert_null(err);
		return NULL;
	}
	assert_int_equal(r, -1);
	assert_non_null(err);
	assert_zeroed(c);
	return err;
}

/* Expect yaml to fail with exactly the message want (or starting with it if prefix). */
static void expect_error(const char *yaml, const char *want, bool prefix)
{
	struct cfg c;
	char *err = load(yaml, &c);

	if (err == NULL)
		fail_msg("loaded but expected: %s\n--- input:\n%s", want, yaml);
	if (prefix ? strncmp(err, want, strlen(want)) != 0 : strcmp(err, want) != 0)
		fail_msg("got:  %s\nwant: %s%s", err, want, prefix ? "..." : "");
	free(err);
}

/* Good file: every type, nesting, defaults, a secret file with its newline stripped. */
static void test_good_file(void **state)
{
	char path[256], yaml[1024];
	struct conf_section sec = { cfg_table, sizeof(cfg_table) / sizeof(cfg_table[0]), NULL };
	struct cfg c;
	char *err = NULL;

	snprintf(yaml, sizeof(yaml),
		 "# Ward test\n"
		 "name: \"ward é\"\n"
		 "port: 6379\n"
		 "tls: off\n"
		 "password_file: %s\n"
		 "hosts:\n"
		 "  - h1\n"
		 "  - 'h2'\n"
		 "  - \"\"\n"
		 "redis:\n"
		 "  db: 15\n"
		 "deep: {a: {b: {c: -2147483648}}}\n",
		 tmp_path("pw", path));
	assert_null(load(yaml, &c));
	assert_string_equal(c.name, "ward é");
	assert_int_equal(c.port, 6379);
	assert_false(c.tls);
	assert_string_equal(c.pw.path, path);
	assert_int_equal(c.pw.len, 6);
	assert_memory_equal(c.pw.data, "s3cret", 7);
	assert_int_equal(c.hosts.n, 3);
	assert_string_equal(c.hosts.items[0], "h1");
	assert_string_equal(c.hosts.items[1], "h2");
	assert_string_equal(c.hosts.items[2], "");
	assert_string_equal(c.redis_host, "127.0.0.1"); /* default */
	assert_int_equal(c.redis_db, 15);
	assert_string_equal(c.mode, "safe"); /* default, validated */
	assert_int_equal(c.any, -2147483648LL);
	sec.target = &c;
	conf_free(&sec, 1);
	assert_zeroed(&c);
	conf_free(&sec, 1); /* twice is harmless */

	/* Defaults for tls and hosts; only one newline stripped from a secret. */
	snprintf(yaml, sizeof(yaml),
		 "name: x\nport: 1\nredis: {db: 0, host: r}\nmode: fast\npassword_file: %s\n",
		 tmp_path("pw2", path));
	assert_null(load(yaml, &c));
	assert_true(c.tls);
	assert_int_equal(c.hosts.n, 2);
	assert_string_equal(c.hosts.items[0], "a");
	assert_string_equal(c.hosts.items[1], "b");
	assert_string_equal(c.redis_host, "r");
	assert_string_equal(c.mode, "fast");
	assert_int_equal(c.pw.len, 4);
	assert_memory_equal(c.pw.data, "two\n", 5);
	assert_int_equal(c.any, 0);
	conf_free(&sec, 1);
	assert_zeroed(&c);

	/* Every boolean spelling; empty list. */
	{
		const char *t[] = { "true", "yes", "on" }, *f[] = { "false", "no", "off" };
		size_t i;

		for (i = 0; i < 3; i++) {
			snprintf(yaml, sizeof(yaml), "name: x\nport: 1\nredis: {db: 0}\ntls: %s\n",
				 t[i]);
			assert_null(load(yaml, &c));
			assert_true(c.tls);
			conf_free(&sec, 1);
			snprintf(yaml, sizeof(yaml),
				 "name: x\nport: 1\nredis: {db: 0}\ntls: %s\nhosts: []\n", f[i]);
			assert_null(load(yaml, &c));
			assert_false(c.tls);
			assert_int_equal(c.hosts.n, 0);
			conf_free(&sec, 1);
		}
	}
	(void)err;
}

/* The same through conf_load from a real file. */
static void test_load_file(void **state)
{
	struct cfg c;
	struct conf_section sec = { cfg_table, sizeof(cfg_table) / sizeof(cfg_table[0]), &c };
	char path[256], want[512];
	char *err = NULL;
	const char *good = "name: n\nport: 2\nredis:\n  db: 3\n";

	put_file("good.yaml", good, strlen(good));
	assert_int_equal(conf_load(tmp_path("good.yaml", path), &sec, 1, &err), 0);
	assert_null(err);
	assert_string_equal(c.name, "n");
	assert_int_equal(c.redis_db, 3);
	conf_free(&sec, 1);

	/* Errors carry the path as the file name. */
	put_file("bad.yaml", "name: n\nport: 0\n", 16);
	assert_int_equal(conf_load(tmp_path("bad.yaml", path), &sec, 1, &err), -1);
	snprintf(want, sizeof(want), "%s:2: port: out of range [1, 65535]", path);
	assert_string_equal(err, want);
	free(err);
	assert_zeroed(&c);

	/* Unreadable: missing, a directory, too big. */
	assert_int_equal(conf_load(tmp_path("missing.yaml", path), &sec, 1, &err), -1);
	snprintf(want, sizeof(want), "%s:0: -: cannot open: No such file or directory", path);
	assert_string_equal(err, want);
	free(err);
	assert_int_equal(conf_load(tmpdir, &sec, 1, &err), -1);
	snprintf(want, sizeof(want), "%s:0: -: not a regular file", tmpdir);
	assert_string_equal(err, want);
	free(err);
	{
		size_t n = 1024 * 1024 + 1;
		char *big = malloc(n);

		assert_non_null(big);
		memset(big, '#', n);
		put_file("big.yaml", big, n);
		assert_int_equal(conf_load(tmp_path("big.yaml", path), &sec, 1, &err), -1);
		snprintf(want, sizeof(want), "%s:0: -: file too big (max 1048576 bytes)", path);
		assert_string_equal(err, want);
		free(err);
		assert_int_equal(conf_load_buffer("b.yaml", big, n, &sec, 1, &err), -1);
		assert_string_equal(err, "b.yaml:0: -: file too big (max 1048576 bytes)");
		free(err);
		free(big);
	}
	/* A file not readable by us (skipped when running as root). */
	if (geteuid() != 0) {
		put_file("noperm.yaml", good, strlen(good));
		assert_int_equal(chmod(tmp_path("noperm.yaml", path), 0), 0);
		assert_int_equal(conf_load(path, &sec, 1, &err), -1);
		snprintf(want, sizeof(want), "%s:0: -: cannot open: Permission denied", path);
		assert_string_equal(err, want);
		free(err);
	}
	/* error_r may be NULL. */
	assert_int_equal(conf_load(tmp_path("missing.yaml", path), &sec, 1, NULL), -1);
}

/* Unknown, duplicate and missing keys. */
static void test_key_errors(void **state)
{
	expect_error("name: x\nport: 1\nredis:\n  db: 1\nbogus: 2\n",
		     "t.yaml:5: bogus: unknown key", false);
	expect_error("name: x\nport: 1\nredis:\n  db: 1\n  nope: 1\n",
		     "t.yaml:5: redis.nope: unknown key", false);
	expect_error("redis.db: 1\n", "t.yaml:1: redis.db: unknown key", false);
	expect_error("\"\": 1\n", "t.yaml:1: : unknown key", false);
	expect_error("Name: x\n", "t.yaml:1: Name: unknown key", false);
	expect_error("name: x\nport: 1\nname: y\nredis: {db: 1}\n",
		     "t.yaml:3: name: duplicate key (first on line 1)", false);
	expect_error("redis:\n  db: 1\nname: x\nport: 1\nredis:\n  host: h\n",
		     "t.yaml:5: redis: duplicate key (first on line 1)", false);
	expect_error("redis: {db: 1, db: 2}\n",
		     "t.yaml:1: redis.db: duplicate key (first on line 1)", false);
	expect_error("port: 1\nredis: {db: 1}\n", "t.yaml:1: name: missing required key", false);
	expect_error("\n\nname: x\nport: 1\nredis:\n  host: h\n",
		     "t.yaml:5: redis.db: missing required key", false);
	expect_error("name: x\nport: 1\n", "t.yaml:1: redis.db: missing required key", false);
	expect_error("? [a]\n: 1\n", "t.yaml:1: -: key is not a string", false);
	expect_error("redis:\n  ? {a: 1}\n  : 1\n", "t.yaml:2: redis: key is not a string", false);
}

/* Wrong node types and bad values. */
static void test_value_errors(void **state)
{
	expect_error("name:\n  a: 1\n", "t.yaml:2: name: expected a string, got a mapping", false);
	expect_error("name: [a]\n", "t.yaml:1: name: expected a string, got a list", false);
	expect_error("port: {a: 1}\n", "t.yaml:1: port: expected an integer, got a mapping", false);
	expect_error("tls: [yes]\n", "t.yaml:1: tls: expected a boolean, got a list", false);
	expect_error("hosts: a\n", "t.yaml:1: hosts: expected a list, got a scalar", false);
	expect_error("hosts:\n  - a\n  - [b]\n", "t.yaml:3: hosts: list items must be strings",
		     false);
	expect_error("hosts: [a, ~]\n", "t.yaml:1: hosts: list items must be strings", false);
	expect_error("password_file: [a]\n",
		     "t.yaml:1: password_file: expected a file path, got a list", false);
	expect_error("redis: 5\n", "t.yaml:1: redis: expected a mapping, got a scalar", false);
	expect_error("redis:\n", "t.yaml:1: redis: expected a mapping, got nothing", false);
	expect_error("redis: [1]\n", "t.yaml:1: redis: expected a mapping, got a list", false);
	expect_error("name:\nport: 1\n", "t.yaml:1: name: missing value", false);
	expect_error("name: ~\n", "t.yaml:1: name: missing value", false);
	expect_error("name: null\n", "t.yaml:1: name: missing value", false);
	expect_error("name: \"a\\0b\"\n", "t.yaml:1: name: value contains a NUL byte", false);

	expect_error("port: 12ab\n", "t.yaml:1: port: not an integer", false);
	expect_error("port: ''\n", "t.yaml:1: port: not an integer", false);
	expect_error("port: 0x10\n", "t.yaml:1: port: not an integer", false);
	expect_error("port: 1.5\n", "t.yaml:1: port: not an integer", false);
	expect_error("port: ' 1'\n", "t.yaml:1: port: not an integer", false);
	expect_error("port: '-'\n", "t.yaml:1: port: not an integer", false);
	expect_error("port: 0\n", "t.yaml:1: port: out of range [1, 65535]", false);
	expect_error("port: 65536\n", "t.yaml:1: port: out of range [1, 65535]", false);
	expect_error("port: -99999999999999999999\n", "t.yaml:1: port: out of range [1, 65535]",
		     false);
	expect_error("deep: {a: {b: {c: 2147483648}}}\n",
		     "t.yaml:1: deep.a.b.c: out of range [-2147483648, 2147483647]", false);
	expect_error("tls: maybe\n", "t.yaml:1: tls: not a boolean (true/false/yes/no/on/off)",
		     false);
	expect_error("tls: 1\n", "t.yaml:1: tls: not a boolean (true/false/yes/no/on/off)", false);
	expect_error("tls: TRUE\n", "t.yaml:1: tls: not a boolean (true/false/yes/no/on/off)",
		     false);
	expect_error("name: x\nport: 1\nredis: {db: 1}\nmode: slow\n",
		     "t.yaml:4: mode: must be safe or fast", false);

	/* A value is never echoed in a message. */
	{
		struct cfg c;
		char *err = load("port: hunter2-secret\n", &c);

		assert_non_null(err);
		assert_null(strstr(err, "hunter2"));
		free(err);
	}
}

/* Secret files: missing, empty, too big, not regular; errors after a secret was read
 * still free it (ASan would see the leak). */
static void test_secret_errors(void **state)
{
	char yaml[512], path[256], want[512];

	snprintf(yaml, sizeof(yaml), "password_file: %s\n", tmp_path("nope", path));
	expect_error(yaml,
		     "t.yaml:1: password_file: cannot open secret file: No such file or directory",
		     false);
	snprintf(yaml, sizeof(yaml), "password_file: %s\n", tmp_path("empty", path));
	expect_error(yaml, "t.yaml:1: password_file: secret file is empty", false);
	snprintf(yaml, sizeof(yaml), "password_file: %s\n", tmp_path("nl", path));
	expect_error(yaml, "t.yaml:1: password_file: secret file is empty", false);
	snprintf(yaml, sizeof(yaml), "password_file: %s\n", tmp_path("big", path));
	expect_error(yaml, "t.yaml:1: password_file: secret file too big (max 65536 bytes)", false);
	snprintf(yaml, sizeof(yaml), "password_file: %s\n", tmpdir);
	expect_error(yaml, "t.yaml:1: password_file: secret file is not a regular file", false);
	expect_error("password_file: ''\n", "t.yaml:1: password_file: empty file path", false);
	/* The secret loads, then a later key fails: the secret must be freed. */
	snprintf(yaml, sizeof(yaml), "password_file: %s\nname: x\nport: 1\nredis: {db: 99}\n",
		 tmp_path("pw", path));
	snprintf(want, sizeof(want), "t.yaml:4: redis.db: out of range [0, 15]");
	expect_error(yaml, want, false);
}

/* Syntax errors, empty documents, non-mapping top level, aliases, several documents,
 * nesting. */
static void test_document_errors(void **state)
{
	expect_error("name: x\nport: 1\n  bad: indent\n",
		     "t.yaml:3: -: YAML syntax error: "
		     "mapping values are not allowed in this context",
		     false);
	expect_error("name: x\nport: [1\n", "t.yaml:3: -: YAML syntax error: ", true);
	expect_error("name: \"unterminated\n", "t.yaml:2: -: YAML syntax error: ", true);
	expect_error("name: \xff\xfe\n", "t.yaml:1: -: YAML syntax error: ", true);
	expect_error("", "t.yaml:1: -: empty file", false);
	expect_error("# only a comment\n\n", "t.yaml:1: -: empty file", false);
	expect_error("---\n", "t.yaml:1: -: empty file", false);
	expect_error("- a\n- b\n", "t.yaml:1: -: top level is not a mapping", false);
	expect_error("\njust text\n", "t.yaml:2: -: top level is not a mapping", false);
	expect_error("name: &a x\nport: 1\nmode: *a\n", "t.yaml:3: -: aliases not allowed", false);
	expect_error("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
		     "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
		     "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
		     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n",
		     "t.yaml:2: -: aliases not allowed", false);
	expect_error("name: x\n---\nname: y\n", "t.yaml:2: -: only one YAML document allowed",
		     false);
	{
		char deep[200] = "deep: ";
		int i;

		for (i = 0; i < 20; i++)
			strcat(deep, "{a: ");
		strcat(deep, "1");
		for (i = 0; i < 20; i++)
			strcat(deep, "}");
		strcat(deep, "\n");
		expect_error(deep, "t.yaml:1: -: nesting too deep", false);
	}
	/* Control characters from the file are not copied into the message as-is. */
	expect_error("\"a\\nb\": 1\n", "t.yaml:1: a?b: unknown key", false);
}

/* Two sections filled from one file; an unknown key is unknown to both. */
static void test_sections(void **state)
{
	struct other {
		bool enabled;
		char *dir;
	} o;
	static const struct conf_entry other_table[] = {
		{ "audit.enabled", CONF_BOOL, offsetof(struct other, enabled), true, NULL, 0, 0,
		  NULL },
		{ "audit.dir", CONF_STR, offsetof(struct other, dir), false, NULL, 0, 0, NULL },
	};
	struct cfg c;
	struct conf_section secs[2] = {
		{ cfg_table, sizeof(cfg_table) / sizeof(cfg_table[0]), &c },
		{ other_table, 2, &o },
	};
	const char *yaml = "name: x\nport: 1\nredis: {db: 2}\naudit:\n  enabled: on\n";
	char *err = NULL;

	assert_int_equal(conf_load_buffer("t.yaml", yaml, strlen(yaml), secs, 2, &err), 0);
	assert_true(o.enabled);
	assert_null(o.dir); /* no default: stays zeroed */
	assert_int_equal(c.redis_db, 2);
	conf_free(secs, 2);
	assert_false(o.enabled);
	assert_null(c.name);

	yaml = "name: x\nport: 1\nredis: {db: 2}\naudit:\n  dir: /x\n";
	assert_int_equal(conf_load_buffer("t.yaml", yaml, strlen(yaml), secs, 2, &err), -1);
	assert_string_equal(err, "t.yaml:4: audit.enabled: missing required key");
	free(err);
	assert_null(o.dir);
	assert_zeroed(&c);
}

/* Bad defaults in a table are reported; table bugs abort. */
static void test_table_bugs(void **state)
{
	struct cfg c;
	static const struct conf_entry bad_default[] = {
		{ "port", CONF_INT, offsetof(struct cfg, port), false, "many", 0, 0, NULL },
	};
	static const struct conf_entry bad_secret[] = {
		{ "password", CONF_SECRET_FILE, offsetof(struct cfg, pw), false, NULL, 0, 0, NULL },
	};
	struct conf_section sec = { bad_default, 1, &c };
	char *err = NULL;
	pid_t pid;
	int status;

	assert_int_equal(conf_load_buffer("t.yaml", "a: 1\n", 0, &sec, 1, &err), -1);
	assert_string_equal(err, "t.yaml:1: -: empty file");
	free(err);
	assert_int_equal(conf_load_buffer("t.yaml", "{}", 2, &sec, 1, &err), -1);
	assert_string_equal(err, "t.yaml:1: port: not an integer");
	free(err);

	sec.entries = bad_secret;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		(void)conf_load_buffer("t.yaml", "{}", 2, &sec, 1, NULL);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_file),     cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_key_errors),    cmocka_unit_test(test_value_errors),
		cmocka_unit_test(test_secret_errors), cmocka_unit_test(test_document_errors),
		cmocka_unit_test(test_sections),      cmocka_unit_test(test_table_bugs),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
