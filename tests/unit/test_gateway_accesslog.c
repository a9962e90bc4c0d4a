/*
 * test_gateway_accesslog — the gateway's buffered access log: each line is one
 * JSON object of log.c's shape whatever the path holds (quotes, backslashes,
 * control bytes, a forged second line), lines are held until a flush and none is
 * lost at close, a buffer that fills is written out, a rotated file is followed,
 * and nothing is buffered when the log level is above info or the file cannot be
 * opened (log.c writes the line then).
 *
 * services/gateway/ is not in libward.a, so the module is compiled in here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "../../services/gateway/gateway_accesslog.c"

struct fixture {
	char dir[64], path[96];
	struct event_base *base;
	struct daemon_config dc;
};

/* A temporary log file and an event base. */
static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof f->dir, "/tmp/ward-alog.XXXXXX");
	if (mkdtemp(f->dir) == NULL || (f->base = event_base_new()) == NULL)
		return -1;
	snprintf(f->path, sizeof f->path, "%s/gateway.log", f->dir);
	f->dc.service = "gateway";
	f->dc.instance = "gateway-7";
	f->dc.log_level = "info";
	f->dc.log_file = f->path;
	*state = f;
	return 0;
}

/* Close the log, remove the files. */
static int teardown(void **state)
{
	struct fixture *f = *state;
	char rotated[128];

	gateway_accesslog_close();
	snprintf(rotated, sizeof rotated, "%s.1", f->path);
	unlink(rotated);
	unlink(f->path);
	rmdir(f->dir);
	event_base_free(f->base);
	free(f);
	return 0;
}

/* The lines of path, each parsed as JSON (asserts they all are); count in *n_r. */
static json_t *read_lines(const char *path, size_t *n_r)
{
	FILE *fp = fopen(path, "r");
	json_t *all = json_array();
	char line[4096];

	*n_r = 0;
	if (fp == NULL)
		return all;
	while (fgets(line, sizeof line, fp) != NULL) {
		json_error_t e;
		json_t *o;

		assert_non_null(strchr(line, '\n'));
		o = json_loads(line, 0, &e);
		assert_non_null(o);
		assert_true(json_is_object(o));
		json_array_append_new(all, o);
		(*n_r)++;
	}
	fclose(fp);
	return all;
}

static void test_line_shape_and_hostile_paths(void **state)
{
	struct fixture *f = *state;
	static const char *const paths[] = {
		"/api/v1/users/me",
		"/a\"b\\c",
		"/x\",\"status\":200,\"y\":\"",
		"/line\n{\"msg\":\"forged\"}",
		"/ctl\x01\x1f\x7f",
		"/utf8-\xc3\xa9-\xff",
	};
	size_t n = 0;
	json_t *all;
	const char *err = NULL;

	assert_int_equal(gateway_accesslog_open(f->base, &f->dc, &err), 0);
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
		assert_true(gateway_accesslog_line("rid-1", "GET", paths[i], 401, 94, 3,
						   "127.0.0.1"));
	/* Buffered: nothing in the file before the flush. */
	all = read_lines(f->path, &n);
	assert_int_equal(n, 0);
	json_decref(all);
	gateway_accesslog_flush();
	all = read_lines(f->path, &n);
	assert_int_equal(n, sizeof paths / sizeof paths[0]);
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_array_get(all, i);
		const char *p = json_string_value(json_object_get(o, "path"));

		assert_string_equal(json_string_value(json_object_get(o, "level")), "info");
		assert_string_equal(json_string_value(json_object_get(o, "service")), "gateway");
		assert_string_equal(json_string_value(json_object_get(o, "instance")), "gateway-7");
		assert_string_equal(json_string_value(json_object_get(o, "request_id")), "rid-1");
		assert_string_equal(json_string_value(json_object_get(o, "msg")), "http");
		assert_string_equal(json_string_value(json_object_get(o, "method")), "GET");
		assert_int_equal(json_integer_value(json_object_get(o, "status")), 401);
		assert_int_equal(json_integer_value(json_object_get(o, "bytes")), 94);
		assert_int_equal(json_integer_value(json_object_get(o, "duration_ms")), 3);
		assert_string_equal(json_string_value(json_object_get(o, "client")), "127.0.0.1");
		assert_int_equal(strlen(json_string_value(json_object_get(o, "ts"))), 24);
		assert_non_null(p);
		if (i < 5) /* ASCII comes back byte for byte, quotes and controls included */
			assert_string_equal(p, paths[i]);
		else /* bytes outside ASCII become '?' */
			assert_string_equal(p, "/utf8-?" "?-?");
		assert_null(json_object_get(o, "y"));
	}
	json_decref(all);
}

static void test_close_loses_nothing(void **state)
{
	struct fixture *f = *state;
	size_t n = 0;
	json_t *all;
	const char *err = NULL;

	assert_int_equal(gateway_accesslog_open(f->base, &f->dc, &err), 0);
	for (int i = 0; i < 1000; i++)
		assert_true(gateway_accesslog_line("r", "POST", "/api/v1/tickets", 201, 10, 1,
						   "::1"));
	gateway_accesslog_close(); /* what the deinit hook does after SIGTERM */
	all = read_lines(f->path, &n);
	assert_int_equal(n, 1000);
	json_decref(all);
	/* Closed: lines go back to log.c (the caller is told so). */
	assert_false(gateway_accesslog_line("r", "GET", "/", 200, 0, 0, "::1"));
}

static void test_bounded_buffer_writes_when_full(void **state)
{
	struct fixture *f = *state;
	size_t n = 0, sent = 0;
	json_t *all;
	const char *err = NULL;
	char path[300];

	memset(path, 'p', sizeof path - 1);
	path[0] = '/';
	path[sizeof path - 1] = '\0';
	assert_int_equal(gateway_accesslog_open(f->base, &f->dc, &err), 0);
	/* More than the whole buffer, with no loop turn (no timer): written as it fills. */
	while (sent * 300 < 3 * GW_ALOG_BUF) {
		assert_true(gateway_accesslog_line("r", "GET", path, 200, 0, 0, "::1"));
		sent++;
	}
	assert_true(alog.len <= GW_ALOG_BUF);
	all = read_lines(f->path, &n);
	assert_true(n > 0 && n < sent);
	json_decref(all);
	gateway_accesslog_flush();
	all = read_lines(f->path, &n);
	assert_int_equal(n, sent);
	json_decref(all);
}

static void test_timer_flushes(void **state)
{
	struct fixture *f = *state;
	size_t n = 0;
	json_t *all;
	const char *err = NULL;
	struct timeval tv = { 0, 3 * GW_ALOG_FLUSH_MS * 1000 };

	assert_int_equal(gateway_accesslog_open(f->base, &f->dc, &err), 0);
	assert_true(gateway_accesslog_line("r", "GET", "/healthz", 200, 2, 0, "::1"));
	assert_int_equal(event_base_loopexit(f->base, &tv), 0);
	assert_int_equal(event_base_dispatch(f->base), 0);
	all = read_lines(f->path, &n);
	assert_int_equal(n, 1);
	json_decref(all);
}

static void test_follows_rotation(void **state)
{
	struct fixture *f = *state;
	char rotated[128];
	size_t n = 0;
	json_t *all;
	const char *err = NULL;

	snprintf(rotated, sizeof rotated, "%s.1", f->path);
	assert_int_equal(gateway_accesslog_open(f->base, &f->dc, &err), 0);
	assert_true(gateway_accesslog_line("r", "GET", "/before", 200, 0, 0, "::1"));
	gateway_accesslog_flush();
	assert_int_equal(rename(f->path, rotated), 0);
	assert_true(gateway_accesslog_line("r", "GET", "/after", 200, 0, 0, "::1"));
	gateway_accesslog_flush();
	all = read_lines(rotated, &n);
	assert_int_equal(n, 1);
	json_decref(all);
	all = read_lines(f->path, &n);
	assert_int_equal(n, 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(all, 0), "path")),
			    "/after");
	json_decref(all);
}

static void test_level_above_info_buffers_nothing(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;

	f->dc.log_level = "warn";
	assert_int_equal(gateway_accesslog_open(f->base, &f->dc, &err), 0);
	assert_false(gateway_accesslog_line("r", "GET", "/", 200, 0, 0, "::1"));
	f->dc.log_level = "info";
}

static void test_unopenable_file_left_to_log_c(void **state)
{
	struct fixture *f = *state;
	const char *err = NULL;
	char *saved = f->dc.log_file;

	f->dc.log_file = "/nonexistent-ward-dir/gateway.log";
	assert_int_equal(gateway_accesslog_open(f->base, &f->dc, &err), 0);
	/* Not buffered where it could never be written: the caller logs through log.c. */
	assert_false(gateway_accesslog_line("r", "GET", "/", 200, 0, 0, "::1"));
	f->dc.log_file = saved;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_line_shape_and_hostile_paths, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_loses_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bounded_buffer_writes_when_full, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_timer_flushes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_follows_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_level_above_info_buffers_nothing, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unopenable_file_left_to_log_c, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
