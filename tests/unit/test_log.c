/*
 * test_log — every line written by the log module is parsed back with jansson: the
 * header keys and their order, typed fields, request ids, level filtering, refused
 * secrets (never in the file), hostile strings, reopen after rotation, and lines from
 * several processes sharing one file that must never interleave.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "log.h"

struct fixture {
	char dir[64];
	char path[128];
};

/* Make a temp dir and a log path inside it. */
static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (fx == NULL)
		return -1;
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/ward-test-log-XXXXXX");
	if (mkdtemp(fx->dir) == NULL) {
		free(fx);
		return -1;
	}
	snprintf(fx->path, sizeof(fx->path), "%s/ward.log", fx->dir);
	*state = fx;
	return 0;
}

/* Close the log and remove the temp files. */
static int teardown(void **state)
{
	struct fixture *fx = *state;
	char other[160];

	log_close();
	log_set_request_id(NULL);
	(void)unlink(fx->path);
	snprintf(other, sizeof(other), "%s.1", fx->path);
	(void)unlink(other);
	(void)rmdir(fx->dir);
	free(fx);
	return 0;
}

/* Whole file as a malloc'd NUL-terminated string. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* Parse every line of the file; each must be a JSON object. Returns an array (owned). */
static json_t *read_lines(const char *path)
{
	char *buf = slurp(path), *p = buf, *nl;
	json_t *arr = json_array();

	assert_non_null(arr);
	while (*p != '\0') {
		json_error_t err;
		json_t *obj;

		nl = strchr(p, '\n');
		assert_non_null(nl); /* every line ends with a newline */
		*nl = '\0';
		obj = json_loads(p, 0, &err);
		if (obj == NULL)
			fail_msg("line not JSON: %s (%s)", p, err.text);
		assert_true(json_is_object(obj));
		json_array_append_new(arr, obj);
		p = nl + 1;
	}
	free(buf);
	return arr;
}

/* The string value of key in obj, or NULL. */
static const char *jstr(json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

/* One line: header keys in order, timestamp format, typed fields. */
static void test_line_shape(void **state)
{
	struct fixture *fx = *state;
	const char *err = NULL;
	const char *want_order[] = { "ts", "level", "service", "instance", "msg", "user", "n" };
	json_t *arr, *obj;
	const char *ts;
	void *it;
	size_t i;

	assert_int_equal(log_open("auth", "auth-1", fx->path, LOG_DEBUG, &err), 0);
	log_event(LOG_INFO, "login ok", LF_STR("user", "alice"), LF_INT("n", -42));
	arr = read_lines(fx->path);
	assert_int_equal(json_array_size(arr), 1);
	obj = json_array_get(arr, 0);
	for (i = 0, it = json_object_iter(obj); it != NULL;
	     it = json_object_iter_next(obj, it), i++) {
		assert_true(i < sizeof(want_order) / sizeof(want_order[0]));
		assert_string_equal(json_object_iter_key(it), want_order[i]);
	}
	assert_int_equal(i, 7);
	assert_string_equal(jstr(obj, "level"), "info");
	assert_string_equal(jstr(obj, "service"), "auth");
	assert_string_equal(jstr(obj, "instance"), "auth-1");
	assert_string_equal(jstr(obj, "msg"), "login ok");
	assert_string_equal(jstr(obj, "user"), "alice");
	assert_int_equal(json_integer_value(json_object_get(obj, "n")), -42);
	assert_null(json_object_get(obj, "request_id"));
	/* 2026-11-29T23:48:44.123Z */
	ts = jstr(obj, "ts");
	assert_non_null(ts);
	assert_int_equal(strlen(ts), 24);
	for (i = 0; i < 24; i++) {
		const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";

		if (shape[i] == 'd')
			assert_true(ts[i] >= '0' && ts[i] <= '9');
		else
			assert_int_equal(ts[i], shape[i]);
	}
	json_decref(arr);
}

/* request_id appears while set and disappears when cleared. */
static void test_request_id(void **state)
{
	struct fixture *fx = *state;
	json_t *arr;

	assert_int_equal(log_open("gateway", "gw-1", fx->path, LOG_DEBUG, NULL), 0);
	log_set_request_id("req-123");
	log_info("with id");
	log_set_request_id(NULL);
	log_info("without id");
	arr = read_lines(fx->path);
	assert_int_equal(json_array_size(arr), 2);
	assert_string_equal(jstr(json_array_get(arr, 0), "request_id"), "req-123");
	assert_null(json_object_get(json_array_get(arr, 1), "request_id"));
	json_decref(arr);
}

/* A secret field is written as "[refused]", counted, and its value is nowhere in the file. */
static void test_secret_refused(void **state)
{
	struct fixture *fx = *state;
	unsigned long before = log_refused_count();
	char *all;
	json_t *arr;

	assert_int_equal(log_open("auth", "auth-1", fx->path, LOG_INFO, NULL), 0);
	log_event(LOG_WARN, "bad login", LF_STR("user", "bob"),
		  LF_SECRET("password", "hunter2-SuperSecret"));
	/* Filtered by level: not written, still counted. */
	log_event(LOG_DEBUG, "debug", LF_SECRET("token", "tok-SuperSecret"));
	assert_int_equal(log_refused_count(), before + 2);
	all = slurp(fx->path);
	assert_null(strstr(all, "SuperSecret"));
	assert_null(strstr(all, "hunter2"));
	free(all);
	arr = read_lines(fx->path);
	assert_int_equal(json_array_size(arr), 1);
	assert_string_equal(jstr(json_array_get(arr, 0), "password"), "[refused]");
	assert_string_equal(jstr(json_array_get(arr, 0), "level"), "warn");
	json_decref(arr);
}

/* Lines below the minimum level are dropped; level names parse. */
static void test_levels(void **state)
{
	struct fixture *fx = *state;
	log_level_t lv;
	json_t *arr;

	assert_int_equal(log_level_parse("debug", &lv), 0);
	assert_int_equal(lv, LOG_DEBUG);
	assert_int_equal(log_level_parse("warn", &lv), 0);
	assert_int_equal(lv, LOG_WARN);
	assert_int_equal(log_level_parse("error", &lv), 0);
	assert_int_equal(lv, LOG_ERROR);
	assert_int_equal(log_level_parse("fatal", &lv), 0);
	assert_int_equal(lv, LOG_FATAL);
	assert_int_equal(log_level_parse("INFO", &lv), -1);
	assert_int_equal(log_level_parse("warning", &lv), -1);
	assert_int_equal(log_level_parse("", &lv), -1);
	assert_int_equal(log_level_parse(NULL, &lv), -1);

	assert_int_equal(log_open("ticket", "t-1", fx->path, LOG_WARN, NULL), 0);
	log_debug("no");
	log_info("no");
	log_warn("yes %d", 1);
	log_error("yes %d", 2);
	arr = read_lines(fx->path);
	assert_int_equal(json_array_size(arr), 2);
	assert_string_equal(jstr(json_array_get(arr, 0), "msg"), "yes 1");
	assert_string_equal(jstr(json_array_get(arr, 1), "level"), "error");
	json_decref(arr);
}

/* Newlines, quotes, control bytes and invalid UTF-8 stay inside one valid JSON line;
 * a field cannot overwrite the header keys. */
static void test_hostile_strings(void **state)
{
	struct fixture *fx = *state;
	json_t *arr, *obj;
	char *big;

	assert_int_equal(log_open("mail-ingest", "m-1", fx->path, LOG_DEBUG, NULL), 0);
	log_event(LOG_INFO, "a\nb\"c\\d\x01 é",
		  LF_STR("level", "fatal"), LF_STR("msg", "forged"),
		  LF_STR("bad", "x\xff\xfey\xc3"), LF_STR("nul", NULL));
	big = malloc(100000);
	assert_non_null(big);
	memset(big, 'A', 99999);
	big[99999] = '\0';
	log_event(LOG_INFO, big, LF_STR("big", big));
	free(big);
	arr = read_lines(fx->path);
	assert_int_equal(json_array_size(arr), 2);
	obj = json_array_get(arr, 0);
	assert_string_equal(jstr(obj, "msg"), "a\nb\"c\\d\x01 é");
	assert_string_equal(jstr(obj, "level"), "info");
	assert_string_equal(jstr(obj, "_level"), "fatal");
	assert_string_equal(jstr(obj, "_msg"), "forged");
	assert_string_equal(jstr(obj, "bad"), "x??y?");
	assert_true(json_is_null(json_object_get(obj, "nul")));
	obj = json_array_get(arr, 1);
	assert_true(strlen(jstr(obj, "msg")) <= 8192);
	assert_true(strlen(jstr(obj, "big")) <= 8192);
	json_decref(arr);
}

/* After the file is renamed away, log_reopen makes new lines land in a new file. */
static void test_reopen(void **state)
{
	struct fixture *fx = *state;
	char rotated[160];
	json_t *arr;
	struct stat st;

	snprintf(rotated, sizeof(rotated), "%s.1", fx->path);
	assert_int_equal(log_open("audit", "a-1", fx->path, LOG_DEBUG, NULL), 0);
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_mode & 0777 & ~0640, 0);
	log_info("before");
	assert_int_equal(rename(fx->path, rotated), 0);
	log_info("still old");
	assert_int_equal(log_reopen(), 0);
	log_info("after");
	arr = read_lines(rotated);
	assert_int_equal(json_array_size(arr), 2);
	json_decref(arr);
	arr = read_lines(fx->path);
	assert_int_equal(json_array_size(arr), 1);
	assert_string_equal(jstr(json_array_get(arr, 0), "msg"), "after");
	json_decref(arr);
}

/* Several processes appending long lines to one file: every line parses. */
static void test_multiprocess(void **state)
{
	struct fixture *fx = *state;
	enum { PROCS = 4, LINES = 200 };
	char msg[6000];
	pid_t pids[PROCS];
	json_t *arr;
	size_t i;
	int p, status;

	assert_int_equal(log_open("backup", "b-1", fx->path, LOG_DEBUG, NULL), 0);
	for (p = 0; p < PROCS; p++) {
		pids[p] = fork();
		assert_true(pids[p] >= 0);
		if (pids[p] == 0) {
			memset(msg, 'a' + p, sizeof(msg) - 1);
			msg[sizeof(msg) - 1] = '\0';
			for (i = 0; i < LINES; i++)
				log_event(LOG_INFO, msg, LF_INT("proc", p), LF_INT("i", i));
			_exit(0);
		}
	}
	for (p = 0; p < PROCS; p++) {
		assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	arr = read_lines(fx->path);
	assert_int_equal(json_array_size(arr), PROCS * LINES);
	for (i = 0; i < json_array_size(arr); i++) {
		json_t *obj = json_array_get(arr, i);
		json_int_t proc = json_integer_value(json_object_get(obj, "proc"));

		assert_int_equal(strlen(jstr(obj, "msg")), sizeof(msg) - 1);
		assert_int_equal(jstr(obj, "msg")[0], 'a' + proc);
	}
	json_decref(arr);
}

/* log_fatal writes a fatal line and exits 1. */
static void test_fatal(void **state)
{
	struct fixture *fx = *state;
	json_t *arr;
	pid_t pid;
	int status;

	assert_int_equal(log_open("auth", "auth-1", fx->path, LOG_ERROR, NULL), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		log_fatal("cannot bind %s", "127.0.0.1:1");
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 1);
	arr = read_lines(fx->path);
	assert_int_equal(json_array_size(arr), 1);
	assert_string_equal(jstr(json_array_get(arr, 0), "level"), "fatal");
	assert_string_equal(jstr(json_array_get(arr, 0), "msg"), "cannot bind 127.0.0.1:1");
	json_decref(arr);
}

/* Opening an impossible path fails with a reason and leaves logging usable. */
static void test_open_errors(void **state)
{
	struct fixture *fx = *state;
	char bad[160];
	const char *err = NULL;

	snprintf(bad, sizeof(bad), "%s/missing-dir/x.log", fx->dir);
	assert_int_equal(log_open("auth", "a", bad, LOG_INFO, &err), -1);
	assert_non_null(err);
	err = NULL;
	assert_int_equal(log_open(NULL, "a", fx->path, LOG_INFO, &err), -1);
	assert_non_null(err);
	assert_int_equal(log_open("auth", "a", fx->path, (log_level_t)9, &err), -1);
	/* Still on stderr: must not crash. */
	log_info("to stderr (expected in test output)");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_line_shape, setup, teardown),
		cmocka_unit_test_setup_teardown(test_request_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_secret_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_levels, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_strings, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_multiprocess, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fatal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
