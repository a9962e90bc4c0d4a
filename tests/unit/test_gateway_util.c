/*
 * test_gateway_util — the gateway's pure helpers against good and hostile input:
 * listen addresses, client request ids, host names, the redirector's choice of
 * host and Location (no open redirect, no header injection), problem bodies,
 * tenant hosts, percent-decoding, query/form parameters, path patterns, cookies,
 * Bearer/Basic credentials, Origin checks, cache keys and rate-limit verdicts.
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

#include "../../services/gateway/gateway_ratelimit.c"
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

static void test_host_classify(void **state)
{
	char slug[GATEWAY_SLUG_MAX + 1], region[GATEWAY_REGION_MAX + 1];
	uint16_t port;

	assert_int_equal(gateway_host_classify("acme.eu.localhost:8443", "localhost", slug, region,
					       &port),
			 GATEWAY_HOST_TENANT);
	assert_string_equal(slug, "acme");
	assert_string_equal(region, "eu");
	assert_int_equal(port, 8443);
	assert_int_equal(gateway_host_classify("ACME-2.US.Ward.Example", "ward.example", slug,
					       region, &port),
			 GATEWAY_HOST_TENANT);
	assert_string_equal(slug, "acme-2");
	assert_string_equal(region, "us");
	assert_int_equal(port, 0);
	assert_int_equal(gateway_host_classify("eu.localhost", "localhost", slug, region, &port),
			 GATEWAY_HOST_REGION);
	assert_string_equal(region, "eu");
	assert_string_equal(slug, "");

	static const char *const other[] = {
	    "localhost", "a.b.eu.localhost", "ab.eu.localhost", "acme.e.localhost",
	    "acme.eu1.localhost", "acme_x.eu.localhost", "acme.eu.localhost.evil.example",
	    "acme.eu.localhostx", "acme.eu.localhost:", "acme.eu.localhost:80x", "",
	    "acme.eu.localhost:8443:1", "acme..localhost", "127.0.0.1",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.eu.localhost", /* 41 chars */
	    "acme.abcdefghi.localhost"};
	for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
		assert_int_equal(
		    gateway_host_classify(other[i], "localhost", slug, region, &port),
		    GATEWAY_HOST_OTHER);
		assert_string_equal(slug, "");
	}
	assert_int_equal(gateway_host_classify(NULL, "localhost", slug, region, &port),
			 GATEWAY_HOST_OTHER);
}

static void test_urldecode(void **state)
{
	char out[16];

	assert_int_equal(gateway_urldecode("a%20b+c", 7, out, sizeof out, true), 0);
	assert_string_equal(out, "a b c");
	assert_int_equal(gateway_urldecode("a+b", 3, out, sizeof out, false), 0);
	assert_string_equal(out, "a+b");
	assert_int_equal(gateway_urldecode("%e2%82%AC", 9, out, sizeof out, false), 0);
	assert_string_equal(out, "\xe2\x82\xac");
	assert_int_equal(gateway_urldecode("%", 1, out, sizeof out, true), -1);
	assert_int_equal(gateway_urldecode("%4", 2, out, sizeof out, true), -1);
	assert_int_equal(gateway_urldecode("%zz", 3, out, sizeof out, true), -1);
	assert_int_equal(gateway_urldecode("a%00b", 5, out, sizeof out, true), -1);
	assert_int_equal(gateway_urldecode("0123456789abcdef", 16, out, sizeof out, true), -1);
	/* Length-bounded: a '%' at the end of the slice must not read past it. */
	assert_int_equal(gateway_urldecode("ab%41", 3, out, sizeof out, true), -1);
}

struct kv_seen {
	int n;
	char keys[8][32], values[8][32];
};

static int kv_cb(void *arg, const char *k, const char *v, const char **why_r)
{
	struct kv_seen *s = arg;

	if (s->n >= 8) {
		*why_r = "stop";
		return -1;
	}
	snprintf(s->keys[s->n], sizeof s->keys[0], "%s", k);
	snprintf(s->values[s->n], sizeof s->values[0], "%s", v);
	s->n++;
	return 0;
}

static void test_params(void **state)
{
	struct kv_seen s = {0};
	const char *why = NULL;
	const char *q = "grant_type=client_credentials&scope=a+b%3Ac&&flag&e=";

	assert_int_equal(gateway_params_each(q, strlen(q), kv_cb, &s, &why), 0);
	assert_int_equal(s.n, 4);
	assert_string_equal(s.keys[0], "grant_type");
	assert_string_equal(s.values[1], "a b:c");
	assert_string_equal(s.keys[2], "flag");
	assert_string_equal(s.values[2], "");
	assert_string_equal(s.values[3], "");
	memset(&s, 0, sizeof s);
	assert_int_equal(gateway_params_each("a=1&a=2", 7, kv_cb, &s, &why), -1);
	assert_string_equal(why, "parameter given twice");
	memset(&s, 0, sizeof s);
	assert_int_equal(gateway_params_each("=1", 2, kv_cb, &s, &why), -1);
	memset(&s, 0, sizeof s);
	assert_int_equal(gateway_params_each("a=%zz", 5, kv_cb, &s, &why), -1);
	memset(&s, 0, sizeof s);
	{
		char many[400] = "";

		for (int i = 0; i < GATEWAY_PARAMS_MAX + 1; i++)
			snprintf(many + strlen(many), sizeof many - strlen(many), "k%d=&", i);
		assert_int_equal(gateway_params_each(many, strlen(many), kv_cb, &s, &why), -1);
	}
}

static void test_path_match(void **state)
{
	struct gateway_param p[GATEWAY_PATH_PARAMS];
	size_t n;

	assert_true(gateway_path_match("/api/v1/users/me", "/api/v1/users/me", p, &n));
	assert_int_equal(n, 0);
	assert_true(gateway_path_match("/api/v1/users/{id}", "/api/v1/users/abc%2Dd", p, &n));
	assert_int_equal(n, 1);
	assert_string_equal(p[0].name, "id");
	assert_string_equal(p[0].value, "abc-d");
	assert_true(gateway_path_match("/t/{id}/a/{aid}", "/t/1/a/2", p, &n));
	assert_int_equal(n, 2);
	assert_string_equal(p[1].value, "2");
	assert_false(gateway_path_match("/api/v1/users/{id}", "/api/v1/users/", p, &n));
	assert_false(gateway_path_match("/api/v1/users/{id}", "/api/v1/users/a/b", p, &n));
	assert_false(gateway_path_match("/api/v1/users/{id}", "/api/v1/users", p, &n));
	assert_false(gateway_path_match("/api/v1/users/{id}", "/api/v1/users/a%2Fb", p, &n));
	assert_false(gateway_path_match("/api/v1/users/{id}", "/api/v1/users/a%00", p, &n));
	assert_false(gateway_path_match("/api/v1/users/me", "/api/v1/users/me/", p, &n));
	assert_false(gateway_path_match("/api/v1/users/me", "/api/v1/users/mex", p, &n));
	assert_false(gateway_path_match("/api/v1/users/me", "//api/v1/users/me", p, &n));
	assert_false(gateway_path_match("/a", NULL, p, &n));
}

static void test_cookie_and_auth(void **state)
{
	char out[32], id[32], secret[32];

	assert_true(gateway_cookie_get("a=1; ward_session=tok123; b=2", "ward_session", out,
				       sizeof out));
	assert_string_equal(out, "tok123");
	assert_true(gateway_cookie_get("ward_session=\"q\"", "ward_session", out, sizeof out));
	assert_string_equal(out, "q");
	assert_false(gateway_cookie_get("xward_session=1", "ward_session", out, sizeof out));
	assert_false(gateway_cookie_get("ward_session=", "ward_session", out, sizeof out));
	assert_false(gateway_cookie_get("ward_sessionx=1", "ward_session", out, sizeof out));
	assert_false(gateway_cookie_get("ward_session=0123456789012345678901234567890123456789",
					"ward_session", out, sizeof out));

	assert_true(gateway_auth_scheme("Bearer abc.DEF-_~+/=", "Bearer", out, sizeof out));
	assert_string_equal(out, "abc.DEF-_~+/=");
	assert_true(gateway_auth_scheme("bearer  x ", "Bearer", out, sizeof out));
	assert_string_equal(out, "x");
	assert_false(gateway_auth_scheme("Bearer", "Bearer", out, sizeof out));
	assert_false(gateway_auth_scheme("Bearer a b", "Bearer", out, sizeof out));
	assert_false(gateway_auth_scheme("Bearer a\"b", "Bearer", out, sizeof out));
	assert_false(gateway_auth_scheme("Basic abc", "Bearer", out, sizeof out));
	assert_false(gateway_auth_scheme("Bearerabc", "Bearer", out, sizeof out));

	/* "client:s%3Acret" → client / s:cret (RFC 6749 2.3.1 form-encodes both). */
	assert_int_equal(gateway_basic_decode("Y2xpZW50OnMlM0FjcmV0", id, sizeof id, secret,
					      sizeof secret),
			 0);
	assert_string_equal(id, "client");
	assert_string_equal(secret, "s:cret");
	assert_int_equal(gateway_basic_decode("Y2xpZW50", id, sizeof id, secret, sizeof secret),
			 -1); /* no colon */
	assert_int_equal(gateway_basic_decode("OnNlY3JldA==", id, sizeof id, secret, sizeof secret),
			 -1); /* empty id */
	assert_int_equal(gateway_basic_decode("abc", id, sizeof id, secret, sizeof secret), -1);
	assert_int_equal(gateway_basic_decode("", id, sizeof id, secret, sizeof secret), -1);
}

static void test_origin(void **state)
{
	assert_true(gateway_origin_same("https://acme.eu.localhost:8443", "acme.eu.localhost:8443"));
	assert_true(gateway_origin_same("https://ACME.eu.localhost", "acme.eu.localhost"));
	assert_true(gateway_origin_same("https://acme.eu.localhost:443", "acme.eu.localhost"));
	assert_false(gateway_origin_same("http://acme.eu.localhost:8443", "acme.eu.localhost:8443"));
	assert_false(gateway_origin_same("https://acme.eu.localhost", "acme.eu.localhost:8443"));
	assert_false(gateway_origin_same("https://evil.example", "acme.eu.localhost"));
	assert_false(gateway_origin_same("https://acme.eu.localhost.evil", "acme.eu.localhost"));
	assert_false(gateway_origin_same("null", "acme.eu.localhost"));
	assert_false(gateway_origin_same("https://acme.eu.localhost/x", "acme.eu.localhost"));
	assert_false(gateway_origin_same("https://acme.eu.localhost:84x", "acme.eu.localhost"));
	assert_false(gateway_origin_same(NULL, "acme.eu.localhost"));
}

static void test_base_url_and_hash(void **state)
{
	char url[64], h1[65], h2[65], h3[65];
	const char *a[] = {"ab", "c"}, *b[] = {"a", "bc"}, *c[] = {"ab", "c"};

	assert_int_equal(gateway_base_url(url, sizeof url, "acme", "us", "localhost", 17002), 0);
	assert_string_equal(url, "https://acme.us.localhost:17002");
	assert_int_equal(gateway_base_url(url, sizeof url, "acme", "us", "ward.example", 443), 0);
	assert_string_equal(url, "https://acme.us.ward.example");
	assert_int_equal(gateway_base_url(url, 10, "acme", "us", "ward.example", 443), -1);
	gateway_key_hash(h1, a, 2);
	gateway_key_hash(h2, b, 2);
	gateway_key_hash(h3, c, 2);
	assert_int_equal(strlen(h1), 64);
	assert_string_not_equal(h1, h2); /* parts are separated, not concatenated */
	assert_string_equal(h1, h3);
}

static void test_rl_verdict(void **state)
{
	struct gateway_rl_bucket b = {.name = "ip", .limit = 10, .window_s = 60};
	struct gateway_rl_result r;
	long long w0 = 1000LL * 60 * 1000; /* start of a window */

	gateway_rl_verdict(&b, 0, 1, w0, &r);
	assert_false(r.limited);
	assert_int_equal(r.remaining, 9);
	assert_int_equal(r.reset_s, 60);
	gateway_rl_verdict(&b, 0, 10, w0 + 30000, &r);
	assert_false(r.limited);
	assert_int_equal(r.remaining, 0);
	assert_int_equal(r.reset_s, 30);
	gateway_rl_verdict(&b, 0, 11, w0 + 30000, &r);
	assert_true(r.limited);
	assert_true(r.retry_s >= 30 && r.retry_s <= 120);
	/* A full previous window still weighs at the start of this one... */
	gateway_rl_verdict(&b, 10, 1, w0, &r);
	assert_true(r.limited);
	assert_true(r.retry_s >= 1 && r.retry_s <= 60);
	/* ...and half as much half-way through. */
	gateway_rl_verdict(&b, 10, 1, w0 + 30000, &r);
	assert_false(r.limited);
	assert_int_equal(r.remaining, 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_listen_parse),      cmocka_unit_test(test_request_id),
	    cmocka_unit_test(test_hostname),	      cmocka_unit_test(test_host_in_domain),
	    cmocka_unit_test(test_redirect_location), cmocka_unit_test(test_problem_json),
	    cmocka_unit_test(test_host_classify),     cmocka_unit_test(test_urldecode),
	    cmocka_unit_test(test_params),	      cmocka_unit_test(test_path_match),
	    cmocka_unit_test(test_cookie_and_auth),   cmocka_unit_test(test_origin),
	    cmocka_unit_test(test_base_url_and_hash), cmocka_unit_test(test_rl_verdict),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
