/*
 * test_gateway_util — the gateway's pure helpers against good and hostile input:
 * listen addresses, client request ids, host names, the redirector's choice of
 * host and Location (no open redirect, no header injection) and problem bodies.
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

#include <cmocka.h>
#include <jansson.h>

#include "../../services/gateway/gateway_util.c"

static void test_listen_parse(void **state)
{
	char host[64];
	uint16_t port = 0;
	const char *err = NULL;

	assert_int_equal(gateway_listen_parse("127.0.0.1:8443", host, sizeof host, &port, &err), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 8443);
	assert_int_equal(gateway_listen_parse("[::1]:443", host, sizeof host, &port, &err), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 443);
	assert_int_equal(gateway_listen_parse("localhost:65535", host, sizeof host, &port, &err),
			 0);
	assert_int_equal(port, 65535);

	static const char *const bad[] = {
	    "",	     "127.0.0.1",      "127.0.0.1:",	"127.0.0.1:0",	 "127.0.0.1:65536",
	    ":8443", "127.0.0.1:84a3", "::1:8443",	"[::1]8443",	 "[::1",
	    "[]:80", "127.0.0.1:-1",   "127.0.0.1: 80", "127.0.0.1:+80", "h:99999999999999999999",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err = NULL;
		assert_int_equal(gateway_listen_parse(bad[i], host, sizeof host, &port, &err), -1);
		assert_non_null(err);
	}
	assert_int_equal(gateway_listen_parse(NULL, host, sizeof host, &port, &err), -1);
	/* A host longer than the buffer is refused, not truncated. */
	assert_int_equal(gateway_listen_parse("abcdefghij:80", host, 10, &port, &err), -1);
	assert_int_equal(gateway_listen_parse("abcdefghi:80", host, 10, &port, &err), 0);
}

static void test_request_id(void **state)
{
	char max[65], over[66];

	memset(max, 'a', 64);
	max[64] = '\0';
	memset(over, 'a', 65);
	over[65] = '\0';
	assert_true(gateway_request_id_ok("abc-123-XYZ"));
	assert_true(gateway_request_id_ok("0"));
	assert_true(gateway_request_id_ok(max));
	assert_false(gateway_request_id_ok(over));
	assert_false(gateway_request_id_ok(""));
	assert_false(gateway_request_id_ok(NULL));
	assert_false(gateway_request_id_ok("a b"));
	assert_false(gateway_request_id_ok("a\r\nSet-Cookie: x"));
	assert_false(gateway_request_id_ok("<script>"));
	assert_false(gateway_request_id_ok("a_b"));
	assert_false(gateway_request_id_ok("caf\xc3\xa9"));
}

static void test_hostname(void **state)
{
	char long_label[80], long_name[300];

	assert_true(gateway_hostname_ok("localhost"));
	assert_true(gateway_hostname_ok("demo.eu.example.com"));
	assert_true(gateway_hostname_ok("a-b.c"));
	assert_false(gateway_hostname_ok(""));
	assert_false(gateway_hostname_ok(NULL));
	assert_false(gateway_hostname_ok(".a"));
	assert_false(gateway_hostname_ok("a..b"));
	assert_false(gateway_hostname_ok("a."));
	assert_false(gateway_hostname_ok("-a.b"));
	assert_false(gateway_hostname_ok("a-.b"));
	assert_false(gateway_hostname_ok("a_b.c"));
	assert_false(gateway_hostname_ok("a b"));
	assert_false(gateway_hostname_ok("a/b"));
	memset(long_label, 'a', 64);
	long_label[64] = '\0';
	assert_false(gateway_hostname_ok(long_label));
	long_label[63] = '\0';
	assert_true(gateway_hostname_ok(long_label));
	for (size_t i = 0; i < 254; i++)
		long_name[i] = (i % 2) ? '.' : 'a';
	long_name[254] = 'a';
	long_name[255] = '\0';
	assert_false(gateway_hostname_ok(long_name));
}

static void test_host_in_domain(void **state)
{
	char out[254];

	assert_true(gateway_host_in_domain("localhost", "localhost", out, sizeof out));
	assert_string_equal(out, "localhost");
	assert_true(gateway_host_in_domain("Demo.EU.localhost:8080", "localhost", out, sizeof out));
	assert_string_equal(out, "demo.eu.localhost");
	assert_false(gateway_host_in_domain("evil.com", "localhost", out, sizeof out));
	assert_false(gateway_host_in_domain("evillocalhost", "localhost", out, sizeof out));
	assert_false(gateway_host_in_domain("localhost.evil.com", "localhost", out, sizeof out));
	assert_false(gateway_host_in_domain("localhost:80:81", "localhost", out, sizeof out));
	assert_false(gateway_host_in_domain("localhost:", "localhost", out, sizeof out));
	assert_false(gateway_host_in_domain("localhost:8o", "localhost", out, sizeof out));
	assert_false(gateway_host_in_domain("a@localhost", "localhost", out, sizeof out));
	assert_false(gateway_host_in_domain("x/.localhost", "localhost", out, sizeof out));
	assert_false(gateway_host_in_domain("[::1]", "localhost", out, sizeof out));
	assert_false(gateway_host_in_domain(NULL, "localhost", out, sizeof out));
	assert_false(gateway_host_in_domain("", "localhost", out, sizeof out));
	/* No room for the name: refused, not truncated. */
	assert_false(gateway_host_in_domain("demo.localhost", "localhost", out, 14));
	assert_true(gateway_host_in_domain("demo.localhost", "localhost", out, 15));
}

static void test_redirect_location(void **state)
{
	char out[128];

	assert_int_equal(gateway_redirect_location(out, sizeof out, "localhost", 8443, "/a?b=c"),
			 0);
	assert_string_equal(out, "https://localhost:8443/a?b=c");
	assert_int_equal(gateway_redirect_location(out, sizeof out, "example.com", 443, "/"), 0);
	assert_string_equal(out, "https://example.com/");
	/* Anything but a clean origin-form target becomes "/". */
	static const char *const bad[] = {"//evil.com/x", "http://evil.com/",	   "x",	    "",
					  "/a b",	  "/a\r\nSet-Cookie: x=1", "/a\\b", "/\x7f",
					  "/caf\xc3\xa9"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(gateway_redirect_location(out, sizeof out, "h", 443, bad[i]), 0);
		assert_string_equal(out, "https://h/");
	}
	assert_int_equal(gateway_redirect_location(out, sizeof out, "h", 443, NULL), 0);
	assert_string_equal(out, "https://h/");
	/* Too long for the buffer: -1, never truncated. */
	assert_int_equal(gateway_redirect_location(out, 20, "localhost", 8443, "/abcdef"), -1);
}

static void test_problem_json(void **state)
{
	char *s = gateway_problem_json(404, "Not Found", "no \"such\" thing");
	json_error_t jerr;
	json_t *j;

	assert_non_null(s);
	j = json_loads(s, 0, &jerr);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "type")), "about:blank");
	assert_string_equal(json_string_value(json_object_get(j, "title")), "Not Found");
	assert_int_equal(json_integer_value(json_object_get(j, "status")), 404);
	assert_string_equal(json_string_value(json_object_get(j, "detail")), "no \"such\" thing");
	json_decref(j);
	free(s);
	s = gateway_problem_json(503, "Service Unavailable", NULL);
	assert_non_null(s);
	assert_null(strstr(s, "detail"));
	free(s);
	/* Invalid UTF-8 in the detail: no document rather than a broken one. */
	s = gateway_problem_json(400, "Bad Request", "\xff\xfe");
	assert_null(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_listen_parse),      cmocka_unit_test(test_request_id),
	    cmocka_unit_test(test_hostname),	      cmocka_unit_test(test_host_in_domain),
	    cmocka_unit_test(test_redirect_location), cmocka_unit_test(test_problem_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
