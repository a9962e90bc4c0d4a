/*
 * test_pbjson — JSON <-> protobuf-c by descriptor: good input in every field type,
 * and the refusals the gateway relies on for its 422s: unknown fields (named),
 * wrong types, out-of-range integers, bad UTF-8, overlong strings, too many items,
 * nesting, bad base64; then rendering and a round trip through pack/unpack.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth.pb-c.h"
#include "envelope.pb-c.h"
#include "pbjson.h"

/* Parse text as JSON into desc; returns the message or NULL and *errors_r. */
static ProtobufCMessage *parse(const ProtobufCMessageDescriptor *desc, const char *text,
			       const struct pbjson_limits *lim, json_t **errors_r)
{
	json_error_t jerr;
	json_t *obj = json_loads(text, 0, &jerr);
	ProtobufCMessage *msg = NULL;

	assert_non_null(obj);
	*errors_r = NULL;
	if (pbjson_parse(desc, obj, lim, &msg, errors_r) < 0)
		assert_null(msg);
	else
		assert_null(*errors_r);
	json_decref(obj);
	return msg;
}

/* Expect a refusal whose first error names field and says message (substring). */
static void refused(const ProtobufCMessageDescriptor *desc, const char *text, const char *field,
		    const char *message)
{
	json_t *errs = NULL;
	ProtobufCMessage *msg = parse(desc, text, NULL, &errs);
	json_t *e;

	assert_null(msg);
	assert_non_null(errs);
	assert_true(json_array_size(errs) >= 1);
	e = json_array_get(errs, 0);
	assert_string_equal(json_string_value(json_object_get(e, "field")), field);
	assert_non_null(strstr(json_string_value(json_object_get(e, "message")), message));
	json_decref(errs);
}

static void test_strings_and_bools(void **state)
{
	json_t *errs;
	Ward__LoginRequest *lr = (Ward__LoginRequest *)parse(
	    &ward__login_request__descriptor,
	    "{\"email\":\"a@b.example\",\"password\":\"p\\u00e9ss\",\"totp_code\":null}", NULL,
	    &errs);

	assert_non_null(lr);
	assert_string_equal(lr->email, "a@b.example");
	assert_string_equal(lr->password, "p\xc3\xa9ss");
	assert_string_equal(lr->totp_code, ""); /* null = not given */
	pbjson_free(&lr->base);

	Ward__AuthenticateRequest *ar = (Ward__AuthenticateRequest *)parse(
	    &ward__authenticate_request__descriptor, "{\"state_changing\":true,\"bearer\":\"x\"}",
	    NULL, &errs);
	assert_non_null(ar);
	assert_true(ar->state_changing);
	assert_string_equal(ar->bearer, "x");
	pbjson_free(&ar->base);
}

static void test_nested_and_repeated(void **state)
{
	json_t *errs;
	Ward__AuthenticateReply *a = (Ward__AuthenticateReply *)parse(
	    &ward__authenticate_reply__descriptor,
	    "{\"principal\":{\"kind\":\"api\",\"scopes\":[\"tickets:read\",\"audit:read\"]},"
	    "\"scopes\":[],\"cache_ms\":-5}",
	    NULL, &errs);

	assert_non_null(a);
	assert_non_null(a->principal);
	assert_string_equal(a->principal->kind, "api");
	assert_int_equal(a->principal->n_scopes, 2);
	assert_string_equal(a->principal->scopes[1], "audit:read");
	assert_int_equal(a->n_scopes, 0);
	assert_int_equal(a->cache_ms, -5);
	pbjson_free(&a->base);

	Ward__Problem *p = (Ward__Problem *)parse(
	    &ward__problem__descriptor,
	    "{\"title\":\"t\",\"errors\":[{\"field\":\"a\",\"message\":\"m\"},{\"field\":\"b\"}]}",
	    NULL, &errs);
	assert_non_null(p);
	assert_int_equal(p->n_errors, 2);
	assert_string_equal(p->errors[1]->field, "b");
	pbjson_free(&p->base);
}

static void test_integers_and_bytes(void **state)
{
	json_t *errs;
	Ward__Envelope *e = (Ward__Envelope *)parse(
	    &ward__envelope__descriptor,
	    "{\"version\":4294967295,\"deadline_ms\":-9007199254740993,\"status\":-2147483648,"
	    "\"payload\":\"aGVsbG8=\"}",
	    NULL, &errs);

	assert_non_null(e);
	assert_int_equal(e->version, 4294967295u);
	assert_true(e->deadline_ms == -9007199254740993LL);
	assert_int_equal(e->status, INT32_MIN);
	assert_int_equal(e->payload.len, 5);
	assert_memory_equal(e->payload.data, "hello", 5);
	pbjson_free(&e->base);

	e = (Ward__Envelope *)parse(&ward__envelope__descriptor, "{\"payload\":\"\"}", NULL, &errs);
	assert_non_null(e);
	assert_int_equal(e->payload.len, 0);
	pbjson_free(&e->base);
}

static void test_refusals(void **state)
{
	const ProtobufCMessageDescriptor *lr = &ward__login_request__descriptor;
	const ProtobufCMessageDescriptor *env = &ward__envelope__descriptor;

	refused(lr, "{\"email\":\"a\",\"is_admin\":true}", "is_admin", "unknown field");
	refused(lr, "{\"email\":5}", "email", "string");
	refused(lr, "{\"email\":[\"a\"]}", "email", "string");
	refused(&ward__authenticate_request__descriptor, "{\"state_changing\":\"yes\"}",
		"state_changing", "true or false");
	refused(env, "{\"status\":2147483648}", "status", "range");
	refused(env, "{\"status\":1.5}", "status", "integer");
	refused(env, "{\"version\":-1}", "version", "range");
	refused(env, "{\"payload\":\"a\"}", "payload", "base64");
	refused(env, "{\"payload\":\"a=bc\"}", "payload", "base64");
	refused(env, "{\"payload\":\"ab!c\"}", "payload", "base64");
	refused(&ward__problem__descriptor, "{\"errors\":{}}", "errors", "array");
	refused(&ward__problem__descriptor, "{\"errors\":[null]}", "errors[0]", "null");
	refused(&ward__problem__descriptor, "{\"errors\":[{\"field\":1}]}", "errors[0].field",
		"string");
	refused(&ward__problem__descriptor, "{\"errors\":[{\"evil\":1}]}", "errors[0].evil",
		"unknown");
	refused(&ward__authenticate_reply__descriptor, "{\"principal\":\"x\"}", "principal",
		"object");
	refused(&ward__authenticate_reply__descriptor, "{\"principal\":{\"scopes\":\"a\"}}",
		"principal.scopes", "array");

	/* Not an object at all. */
	json_t *arr = json_array(), *errs = NULL;
	ProtobufCMessage *msg = NULL;

	assert_int_equal(pbjson_parse(lr, arr, NULL, &msg, &errs), -1);
	assert_null(msg);
	assert_string_equal(json_string_value(json_object_get(json_array_get(errs, 0), "field")),
			    "(body)");
	json_decref(errs);
	json_decref(arr);

	/* Every error is listed, not only the first. */
	json_t *obj = json_loads("{\"a\":1,\"email\":2,\"password\":3}", 0, NULL);

	assert_int_equal(pbjson_parse(lr, obj, NULL, &msg, &errs), -1);
	assert_int_equal(json_array_size(errs), 3);
	json_decref(errs);
	json_decref(obj);
}

static void test_utf8_and_limits(void **state)
{
	struct pbjson_limits lim = {.max_string = 4, .max_repeated = 2, .max_depth = 2};
	json_t *obj, *errs = NULL;
	ProtobufCMessage *msg = NULL;

	/* jansson builds strings without checking when told the length: prove pbjson checks. */
	obj = json_object();
	json_object_set_new(obj, "email", json_stringn_nocheck("\xc0\xaf", 2));
	assert_int_equal(pbjson_parse(&ward__login_request__descriptor, obj, NULL, &msg, &errs),
			 -1);
	json_decref(errs);
	json_object_set_new(obj, "email", json_stringn_nocheck("a\0b", 3));
	assert_int_equal(pbjson_parse(&ward__login_request__descriptor, obj, NULL, &msg, &errs),
			 -1);
	json_decref(errs);
	json_object_set_new(obj, "email", json_string("abcd"));
	assert_int_equal(pbjson_parse(&ward__login_request__descriptor, obj, &lim, &msg, &errs), 0);
	pbjson_free(msg);
	json_object_set_new(obj, "email", json_string("abcde"));
	assert_int_equal(pbjson_parse(&ward__login_request__descriptor, obj, &lim, &msg, &errs),
			 -1);
	assert_non_null(strstr(
	    json_string_value(json_object_get(json_array_get(errs, 0), "message")), "too long"));
	json_decref(errs);
	json_decref(obj);

	obj = json_loads("{\"scopes\":[\"a\",\"b\",\"c\"]}", 0, NULL);
	assert_int_equal(pbjson_parse(&ward__authenticate_reply__descriptor, obj, &lim, &msg, &errs),
			 -1);
	json_decref(errs);
	json_decref(obj);
	/* Depth counts message levels: AuthenticateReply + Principal is 2. */
	obj = json_loads("{\"principal\":{}}", 0, NULL);
	assert_int_equal(pbjson_parse(&ward__authenticate_reply__descriptor, obj, &lim, &msg, &errs),
			 0);
	pbjson_free(msg);
	lim.max_depth = 1;
	assert_int_equal(pbjson_parse(&ward__authenticate_reply__descriptor, obj, &lim, &msg, &errs),
			 -1);
	assert_non_null(strstr(
	    json_string_value(json_object_get(json_array_get(errs, 0), "message")), "deeply"));
	json_decref(errs);
	json_decref(obj);

	assert_true(pbjson_utf8_ok("h\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10));
	assert_false(pbjson_utf8_ok("\xed\xa0\x80", 3));     /* surrogate */
	assert_false(pbjson_utf8_ok("\xe0\x80\xaf", 3));     /* overlong */
	assert_false(pbjson_utf8_ok("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
	assert_false(pbjson_utf8_ok("\xc3", 1));	     /* truncated */
	assert_false(pbjson_utf8_ok("\xff", 1));
}

static void test_from_text(void **state)
{
	const char *why = NULL;
	json_t *v;

	v = pbjson_from_text(&ward__envelope__descriptor, "status", "-42", &why);
	assert_true(json_is_integer(v) && json_integer_value(v) == -42);
	json_decref(v);
	v = pbjson_from_text(&ward__authenticate_request__descriptor, "state_changing", "true",
			     &why);
	assert_true(json_is_true(v));
	json_decref(v);
	v = pbjson_from_text(&ward__principal__descriptor, "scopes", "a", &why);
	assert_true(json_is_array(v) && json_array_size(v) == 1);
	json_decref(v);
	assert_null(pbjson_from_text(&ward__envelope__descriptor, "status", "4x", &why));
	assert_null(pbjson_from_text(&ward__envelope__descriptor, "status", "", &why));
	assert_null(pbjson_from_text(&ward__envelope__descriptor, "status", " 1", &why));
	assert_null(pbjson_from_text(&ward__envelope__descriptor, "nope", "1", &why));
	assert_string_equal(why, "unknown field");
	assert_null(pbjson_from_text(&ward__authenticate_request__descriptor, "state_changing",
				     "yes", &why));
	assert_null(pbjson_from_text(&ward__login_request__descriptor, "email", "\xff", &why));
}

static void test_render_roundtrip(void **state)
{
	Ward__LoginReply lr = WARD__LOGIN_REPLY__INIT;
	Ward__User u = WARD__USER__INIT;
	json_t *obj, *errs = NULL;
	ProtobufCMessage *back = NULL;
	uint8_t buf[512];
	size_t n;
	Ward__LoginReply *un;
	char *text;

	u.id = "u1";
	u.email = "e@x";
	u.totp_enabled = 1;
	lr.session_token = "tok";
	lr.csrf_token = "c";
	lr.user = &u;
	lr.expires_at_ms = 1800000000000LL;
	obj = pbjson_render(&lr.base);
	assert_non_null(obj);
	assert_true(json_integer_value(json_object_get(obj, "expires_at_ms")) == 1800000000000LL);
	assert_true(json_is_true(json_object_get(json_object_get(obj, "user"), "totp_enabled")));
	assert_true(json_is_false(json_object_get(obj, "must_change_password")));
	text = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
	assert_non_null(strstr(text, "\"session_token\":\"tok\""));
	free(text);
	/* JSON back into a message: the same bytes once packed. */
	assert_int_equal(pbjson_parse(&ward__login_reply__descriptor, obj, NULL, &back, &errs), 0);
	n = protobuf_c_message_pack(back, buf);
	assert_int_equal(n, ward__login_reply__get_packed_size(&lr));
	un = ward__login_reply__unpack(NULL, n, buf);
	assert_non_null(un);
	assert_string_equal(un->user->email, "e@x");
	ward__login_reply__free_unpacked(un, NULL);
	pbjson_free(back);
	json_decref(obj);

	/* Unset nested messages are omitted; repeated fields are arrays; bytes base64. */
	Ward__Envelope env = WARD__ENVELOPE__INIT;
	env.payload.data = (uint8_t *)"hello";
	env.payload.len = 5;
	obj = pbjson_render(&env.base);
	assert_null(json_object_get(obj, "principal"));
	assert_string_equal(json_string_value(json_object_get(obj, "payload")), "aGVsbG8=");
	json_decref(obj);
	Ward__Problem p = WARD__PROBLEM__INIT;
	obj = pbjson_render(&p.base);
	assert_true(json_is_array(json_object_get(obj, "errors")));
	json_decref(obj);
	pbjson_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_strings_and_bools), cmocka_unit_test(test_nested_and_repeated),
	    cmocka_unit_test(test_integers_and_bytes), cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_utf8_and_limits),   cmocka_unit_test(test_from_text),
	    cmocka_unit_test(test_render_roundtrip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
