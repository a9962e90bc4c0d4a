/*
 * fuzz_http — libFuzzer target for the gateway's request → JSON → protobuf path.
 *
 * The input is a small request: "<host>\n<target>\n<cookie>\n<authorization>\n
 * <origin>\n<body>" (missing lines are empty). Each part goes through what the
 * gateway does with it: tenant host classification, path matching against route
 * patterns, query and form parsing into typed JSON (pbjson_from_text), cookie,
 * Bearer and Basic parsing, the Origin check, then the body as JSON into several
 * request messages (pbjson_parse), rendered back and packed. Nothing may crash,
 * leak, read out of bounds or abort on any input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../services/gateway/gateway_util.c"
#include "auth.pb-c.h"
#include "envelope.pb-c.h"
#include "pbjson.h"

#define FUZZ_PARTS 6

static const ProtobufCMessageDescriptor *const fuzz_descs[] = {
	&ward__login_request__descriptor, &ward__authenticate_reply__descriptor,
	&ward__problem__descriptor, &ward__envelope__descriptor,
	&ward__tenant_resolve_reply__descriptor,
};

static const char *const fuzz_patterns[] = {
	"/api/v1/users/{id}", "/api/v1/tickets/{id}/messages", "/api/v1/tickets/{id}/attachments/{aid}",
	"/oauth/token", "/api/v1/auth/login",
};

struct fuzz_form {
	const ProtobufCMessageDescriptor *desc;
	json_t *obj;
};

/* Parameter callback: the typed value, as gateway_api.c builds it. */
static int fuzz_param(void *arg, const char *key, const char *value, const char **why_r)
{
	struct fuzz_form *f = arg;
	const char *why = NULL;
	json_t *v = pbjson_from_text(f->desc, key, value, &why);

	if (v != NULL)
		json_object_set_new(f->obj, key, v);
	return 0;
}

/* JSON object → message → JSON → packed bytes → unpacked again. */
static void fuzz_message(const ProtobufCMessageDescriptor *desc, const json_t *obj)
{
	ProtobufCMessage *msg = NULL, *back;
	json_t *errors = NULL, *out;
	struct pbjson_limits lim = {.max_string = 256, .max_repeated = 16, .max_depth = 4};
	uint8_t *buf;
	size_t n;

	if (pbjson_parse(desc, obj, &lim, &msg, &errors) < 0) {
		if (errors == NULL || json_array_size(errors) == 0)
			abort(); /* a refusal always says why */
		json_decref(errors);
		return;
	}
	out = pbjson_render(msg);
	json_decref(out);
	n = protobuf_c_message_get_packed_size(msg);
	buf = malloc(n ? n : 1);
	if (buf == NULL)
		abort();
	if (protobuf_c_message_pack(msg, buf) != n)
		abort();
	back = protobuf_c_message_unpack(desc, NULL, n, buf);
	if (back == NULL) /* what pbjson accepted must pack into valid protobuf (UTF-8!) */
		abort();
	protobuf_c_message_free_unpacked(back, NULL);
	free(buf);
	pbjson_free(msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 1), *part[FUZZ_PARTS], *p;
	char slug[GATEWAY_SLUG_MAX + 1], region[GATEWAY_REGION_MAX + 1];
	char out[GATEWAY_CRED_MAX + 1], id[256], secret[256];
	struct gateway_param params[GATEWAY_PATH_PARAMS];
	const char *why = NULL, *q;
	size_t i, np, body_len;
	uint16_t port;
	json_error_t jerr;
	json_t *obj;

	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	p = copy;
	for (i = 0; i < FUZZ_PARTS - 1; i++) {
		part[i] = p;
		p = p != NULL ? strchr(p, '\n') : NULL;
		if (p != NULL)
			*p++ = '\0';
	}
	for (i = 0; i < FUZZ_PARTS - 1; i++)
		if (part[i] == NULL)
			part[i] = "";
	part[FUZZ_PARTS - 1] = p != NULL ? p : "";
	body_len = p != NULL ? size - (size_t)(p - copy) : 0;

	(void)gateway_host_classify(part[0], "localhost", slug, region, &port);
	(void)gateway_host_classify(part[0], "ward.example", slug, region, &port);
	q = strchr(part[1], '?');
	for (i = 0; i < sizeof fuzz_patterns / sizeof fuzz_patterns[0]; i++) {
		char path[512];
		size_t pl = q != NULL ? (size_t)(q - part[1]) : strlen(part[1]);

		if (pl < sizeof path) {
			memcpy(path, part[1], pl);
			path[pl] = '\0';
			(void)gateway_path_match(fuzz_patterns[i], path, params, &np);
		}
	}
	(void)gateway_cookie_get(part[2], "ward_session", out, sizeof out);
	if (gateway_auth_scheme(part[3], "Basic", out, sizeof out))
		(void)gateway_basic_decode(out, id, sizeof id, secret, sizeof secret);
	(void)gateway_auth_scheme(part[3], "Bearer", out, sizeof out);
	(void)gateway_origin_same(part[4], part[0]);

	for (i = 0; i < sizeof fuzz_descs / sizeof fuzz_descs[0]; i++) {
		struct fuzz_form f = {fuzz_descs[i], json_object()};

		if (f.obj == NULL)
			break;
		if (q != NULL)
			(void)gateway_params_each(q + 1, strlen(q + 1), fuzz_param, &f, &why);
		(void)gateway_params_each(part[5], body_len, fuzz_param, &f, &why);
		fuzz_message(f.desc, f.obj);
		json_decref(f.obj);
	}
	obj = json_loadb(part[5], body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (obj != NULL) {
		for (i = 0; i < sizeof fuzz_descs / sizeof fuzz_descs[0]; i++)
			fuzz_message(fuzz_descs[i], obj);
		json_decref(obj);
	}
	free(copy);
	return 0;
}
