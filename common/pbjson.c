/*
 * pbjson — JSON (jansson) <-> protobuf-c by message descriptor. See pbjson.h.
 *
 * Messages built here are laid out exactly as protobuf-c's unpacker lays them
 * out (calloc'd struct, message_init, malloc'd strings and arrays), so
 * protobuf_c_message_free_unpacked with the default allocator frees them.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "log.h"
#include "pbjson.h"

#define PBJSON_PATH_MAX 160

struct pbjson_ctx {
	struct pbjson_limits lim;
	json_t *errors;
	size_t n_errors;
};

/* Allocation that succeeds or exits (as Ward's allocations do). */
static void *pbjson_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		log_fatal("pbjson: out of memory");
	return p;
}

/* Record one field error (path and message copied). */
static void pbjson_error(struct pbjson_ctx *ctx, const char *path, const char *message)
{
	json_t *e;

	ctx->n_errors++;
	if (ctx->n_errors > PBJSON_MAX_ERRORS)
		return;
	e = json_pack("{s:s, s:s}", "field", path[0] != '\0' ? path : "(body)", "message",
		      message);
	if (e == NULL || json_array_append_new(ctx->errors, e) != 0)
		log_fatal("pbjson: out of memory");
}

/* 1 if s[0..len) is valid UTF-8 (RFC 3629). */
int pbjson_utf8_ok(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		size_t n;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (len - i <= n)
			return 0;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n + 1;
	}
	return 1;
}

/* The field of desc named name, or NULL. */
const ProtobufCFieldDescriptor *pbjson_field(const ProtobufCMessageDescriptor *desc,
					     const char *name)
{
	if (desc == NULL || name == NULL)
		return NULL;
	return protobuf_c_message_descriptor_get_field_by_name(desc, name);
}

/* path + "." + name (or "[i]") into out, truncated safely. */
static void pbjson_path(char *out, size_t size, const char *path, const char *name, long idx)
{
	int n;

	if (name != NULL)
		n = snprintf(out, size, "%s%s%s", path, path[0] != '\0' ? "." : "", name);
	else
		n = snprintf(out, size, "%s[%ld]", path, idx);
	if (n < 0 || (size_t)n >= size) /* a cut path still names the place well enough */
		out[size - 1] = '\0';
}

/* Size in bytes of one value of a scalar or pointer field. */
static size_t pbjson_value_size(const ProtobufCFieldDescriptor *f)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_ENUM:
		return 4;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return 8;
	case PROTOBUF_C_TYPE_FLOAT:
		return sizeof(float);
	case PROTOBUF_C_TYPE_DOUBLE:
		return sizeof(double);
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(ProtobufCMessage *);
	}
	return 0;
}

static ProtobufCMessage *pbjson_message(struct pbjson_ctx *ctx,
					const ProtobufCMessageDescriptor *desc, const json_t *obj,
					const char *path, int depth);

/*
 * Convert one JSON value into the field's storage at dst (one slot: a scalar,
 * a char *, a message pointer). 0, or -1 with an error recorded. On success a
 * string or message stored at dst is owned by the enclosing message.
 */
static int pbjson_value(struct pbjson_ctx *ctx, const ProtobufCFieldDescriptor *f, const json_t *v,
			void *dst, const char *path, int depth)
{
	json_int_t i;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		if (!json_is_integer(v))
			goto not_integer;
		i = json_integer_value(v);
		if (i < INT32_MIN || i > INT32_MAX)
			goto range;
		*(int32_t *)dst = (int32_t)i;
		return 0;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		if (!json_is_integer(v))
			goto not_integer;
		i = json_integer_value(v);
		if (i < 0 || i > (json_int_t)UINT32_MAX)
			goto range;
		*(uint32_t *)dst = (uint32_t)i;
		return 0;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		if (!json_is_integer(v))
			goto not_integer;
		*(int64_t *)dst = (int64_t)json_integer_value(v);
		return 0;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		if (!json_is_integer(v))
			goto not_integer;
		i = json_integer_value(v);
		if (i < 0)
			goto range;
		*(uint64_t *)dst = (uint64_t)i;
		return 0;
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_DOUBLE: {
		double d;

		if (!json_is_number(v)) {
			pbjson_error(ctx, path, "must be a number");
			return -1;
		}
		d = json_number_value(v);
		if (f->type == PROTOBUF_C_TYPE_FLOAT)
			*(float *)dst = (float)d;
		else
			*(double *)dst = d;
		return 0;
	}
	case PROTOBUF_C_TYPE_BOOL:
		if (!json_is_boolean(v)) {
			pbjson_error(ctx, path, "must be true or false");
			return -1;
		}
		*(protobuf_c_boolean *)dst = json_is_true(v);
		return 0;
	case PROTOBUF_C_TYPE_STRING: {
		const char *s;
		size_t n;
		char *copy;

		if (!json_is_string(v)) {
			pbjson_error(ctx, path, "must be a string");
			return -1;
		}
		s = json_string_value(v);
		n = json_string_length(v);
		if (n > ctx->lim.max_string) {
			pbjson_error(ctx, path, "is too long");
			return -1;
		}
		if (memchr(s, '\0', n) != NULL || !pbjson_utf8_ok(s, n)) {
			pbjson_error(ctx, path, "must be UTF-8 text without NUL");
			return -1;
		}
		copy = pbjson_xcalloc(1, n + 1);
		memcpy(copy, s, n);
		*(char **)dst = copy;
		return 0;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		ProtobufCMessage *sub;

		if (!json_is_object(v)) {
			pbjson_error(ctx, path, "must be an object");
			return -1;
		}
		if (depth + 1 >= ctx->lim.max_depth) {
			pbjson_error(ctx, path, "is nested too deeply");
			return -1;
		}
		sub = pbjson_message(ctx, f->descriptor, v, path, depth + 1);
		if (sub == NULL)
			return -1;
		*(ProtobufCMessage **)dst = sub;
		return 0;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		/* Standard base64 with padding (RFC 4648 section 4); bounded by the body size. */
		const char *s = json_is_string(v) ? json_string_value(v) : NULL;
		size_t n = s != NULL ? json_string_length(v) : 0, pad = 0;
		ProtobufCBinaryData *b = dst;
		unsigned char *out;
		int dl;

		if (s == NULL || n % 4 != 0 || n > (size_t)INT_MAX ||
		    strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != n) {
			pbjson_error(ctx, path, "must be base64 text");
			return -1;
		}
		if (n > 0 && s[n - 1] == '=')
			pad++;
		if (n > 1 && s[n - 2] == '=')
			pad++;
		if (memchr(s, '=', n) != NULL && (size_t)((const char *)memchr(s, '=', n) - s) != n - pad) {
			pbjson_error(ctx, path, "must be base64 text");
			return -1;
		}
		out = pbjson_xcalloc(1, n / 4 * 3 + 1);
		dl = n > 0 ? EVP_DecodeBlock(out, (const unsigned char *)s, (int)n) : 0;
		if (dl < 0 || (size_t)dl < pad) {
			free(out);
			pbjson_error(ctx, path, "must be base64 text");
			return -1;
		}
		b->data = out;
		b->len = (size_t)dl - pad;
		return 0;
	}
	case PROTOBUF_C_TYPE_ENUM:
		pbjson_error(ctx, path, "cannot be set");
		return -1;
	}
	pbjson_error(ctx, path, "cannot be set");
	return -1;
not_integer:
	pbjson_error(ctx, path, "must be an integer");
	return -1;
range:
	pbjson_error(ctx, path, "is out of range");
	return -1;
}

/* Free what one slot of field f holds (a string or a message), if anything. */
static void pbjson_slot_free(const ProtobufCFieldDescriptor *f, void *slot)
{
	if (f->type == PROTOBUF_C_TYPE_BYTES) {
		ProtobufCBinaryData *b = slot;

		free(b->data);
		b->data = NULL;
		b->len = 0;
		return;
	}
	if (f->type == PROTOBUF_C_TYPE_STRING) {
		char *s = *(char **)slot;

		if (s != NULL && s != f->default_value && s != (char *)protobuf_c_empty_string)
			free(s);
		*(char **)slot = NULL;
	} else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
		protobuf_c_message_free_unpacked(*(ProtobufCMessage **)slot, NULL);
		*(ProtobufCMessage **)slot = NULL;
	}
}

/* Set field f of msg from JSON value v. 0, or -1 with errors recorded. */
static int pbjson_set(struct pbjson_ctx *ctx, ProtobufCMessage *msg,
		      const ProtobufCFieldDescriptor *f, const json_t *v, const char *path,
		      int depth)
{
	char *base = (char *)msg;
	size_t vsize = pbjson_value_size(f);

	if (f->label == PROTOBUF_C_LABEL_REPEATED) {
		size_t n, k, bad = 0;
		char *arr;

		if (!json_is_array(v)) {
			pbjson_error(ctx, path, "must be an array");
			return -1;
		}
		n = json_array_size(v);
		if (n > ctx->lim.max_repeated) {
			pbjson_error(ctx, path, "has too many items");
			return -1;
		}
		if (n == 0)
			return 0;
		arr = pbjson_xcalloc(n, vsize);
		for (k = 0; k < n; k++) {
			char sub[PBJSON_PATH_MAX];
			const json_t *item = json_array_get(v, k);

			pbjson_path(sub, sizeof sub, path, NULL, (long)k);
			if (json_is_null(item)) {
				pbjson_error(ctx, sub, "must not be null");
				bad++;
			} else if (pbjson_value(ctx, f, item, arr + k * vsize, sub, depth) < 0) {
				bad++;
			}
		}
		if (bad > 0) {
			for (k = 0; k < n; k++)
				pbjson_slot_free(f, arr + k * vsize);
			free(arr);
			return -1;
		}
		*(size_t *)(base + f->quantifier_offset) = n;
		*(void **)(base + f->offset) = arr;
		return 0;
	}
	if (pbjson_value(ctx, f, v, base + f->offset, path, depth) < 0)
		return -1;
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
		*(uint32_t *)(base + f->quantifier_offset) = f->id;
	else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
		 f->type != PROTOBUF_C_TYPE_MESSAGE)
		*(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
	return 0;
}

/* Build a message of type desc from object obj; NULL with errors recorded. */
static ProtobufCMessage *pbjson_message(struct pbjson_ctx *ctx,
					const ProtobufCMessageDescriptor *desc, const json_t *obj,
					const char *path, int depth)
{
	ProtobufCMessage *msg = pbjson_xcalloc(1, desc->sizeof_message);
	const char *key;
	json_t *v;
	size_t before = ctx->n_errors;

	desc->message_init(msg);
	json_object_foreach((json_t *)obj, key, v)
	{
		char sub[PBJSON_PATH_MAX];
		const ProtobufCFieldDescriptor *f = pbjson_field(desc, key);

		pbjson_path(sub, sizeof sub, path, key, 0);
		if (f == NULL) {
			pbjson_error(ctx, sub, "unknown field");
			continue;
		}
		if (json_is_null(v))
			continue;
		(void)pbjson_set(ctx, msg, f, v, sub, depth);
	}
	if (ctx->n_errors != before) {
		protobuf_c_message_free_unpacked(msg, NULL);
		return NULL;
	}
	return msg;
}

/* JSON object → new message of type desc. See pbjson.h. */
int pbjson_parse(const ProtobufCMessageDescriptor *desc, const json_t *obj,
		 const struct pbjson_limits *limits, ProtobufCMessage **msg_r, json_t **errors_r)
{
	struct pbjson_ctx ctx = {0};

	*msg_r = NULL;
	*errors_r = NULL;
	if (limits != NULL)
		ctx.lim = *limits;
	if (ctx.lim.max_string == 0)
		ctx.lim.max_string = PBJSON_DEFAULT_STRING;
	if (ctx.lim.max_repeated == 0)
		ctx.lim.max_repeated = PBJSON_DEFAULT_REPEATED;
	if (ctx.lim.max_depth <= 0)
		ctx.lim.max_depth = PBJSON_DEFAULT_DEPTH;
	if ((ctx.errors = json_array()) == NULL)
		log_fatal("pbjson: out of memory");
	if (desc == NULL || desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
		pbjson_error(&ctx, "", "no message type");
	else if (!json_is_object(obj))
		pbjson_error(&ctx, "", "must be a JSON object");
	else
		*msg_r = pbjson_message(&ctx, desc, obj, "", 0);
	if (*msg_r == NULL) {
		*errors_r = ctx.errors;
		return -1;
	}
	json_decref(ctx.errors);
	return 0;
}

/* Text of a query/path/form parameter → JSON value of field name's type. */
json_t *pbjson_from_text(const ProtobufCMessageDescriptor *desc, const char *name,
			 const char *text, const char **why_r)
{
	const ProtobufCFieldDescriptor *f = pbjson_field(desc, name);
	char *end;
	long long ll;
	json_t *v = NULL;

	if (f == NULL) {
		*why_r = "unknown field";
		return NULL;
	}
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		errno = 0;
		if (text[0] == '\0' || !(text[0] == '-' || (text[0] >= '0' && text[0] <= '9'))) {
			*why_r = "must be an integer";
			return NULL;
		}
		ll = strtoll(text, &end, 10);
		if (errno != 0 || *end != '\0') {
			*why_r = "must be an integer";
			return NULL;
		}
		v = json_integer(ll);
		break;
	case PROTOBUF_C_TYPE_BOOL:
		if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0) {
			v = json_true();
		} else if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0) {
			v = json_false();
		} else {
			*why_r = "must be true or false";
			return NULL;
		}
		break;
	case PROTOBUF_C_TYPE_STRING:
		v = json_string(text); /* NULL if not UTF-8 */
		if (v == NULL) {
			*why_r = "must be UTF-8 text";
			return NULL;
		}
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			json_t *a = json_array();

			if (a == NULL || json_array_append_new(a, v) != 0)
				log_fatal("pbjson: out of memory");
			v = a;
		}
		break;
	default:
		*why_r = "cannot be set";
		return NULL;
	}
	if (v == NULL)
		log_fatal("pbjson: out of memory");
	return v;
}

/* One stored value of field f at src as a new JSON value. */
static json_t *pbjson_render_value(const ProtobufCFieldDescriptor *f, const void *src)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_ENUM:
		return json_integer(*(const int32_t *)src);
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return json_integer(*(const uint32_t *)src);
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		return json_integer(*(const int64_t *)src);
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64: {
		uint64_t u = *(const uint64_t *)src;

		return u > (uint64_t)LLONG_MAX ? json_real((double)u) : json_integer((json_int_t)u);
	}
	case PROTOBUF_C_TYPE_FLOAT:
		return json_real(*(const float *)src);
	case PROTOBUF_C_TYPE_DOUBLE:
		return json_real(*(const double *)src);
	case PROTOBUF_C_TYPE_BOOL:
		return json_boolean(*(const protobuf_c_boolean *)src);
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)src;

		/* An unpacked reply is UTF-8 checked by protobuf-c; still never abort on it. */
		if (s == NULL)
			s = "";
		return pbjson_utf8_ok(s, strlen(s)) ? json_string(s) : json_string("");
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *b = src;
		size_t cap = 4 * ((b->len + 2) / 3) + 1;
		char *out;
		json_t *v;

		if (b->len > (size_t)INT_MAX / 2)
			return json_string("");
		out = pbjson_xcalloc(1, cap);
		if (b->len > 0)
			EVP_EncodeBlock((unsigned char *)out, b->data, (int)b->len);
		v = json_string(out);
		free(out);
		return v;
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *sub = *(ProtobufCMessage *const *)src;

		return sub != NULL ? pbjson_render(sub) : json_null();
	}
	}
	return json_null();
}

/* Message → new JSON object. See pbjson.h. */
json_t *pbjson_render(const ProtobufCMessage *msg)
{
	const ProtobufCMessageDescriptor *desc = msg->descriptor;
	const char *base = (const char *)msg;
	json_t *obj = json_object();

	if (obj == NULL)
		return NULL;
	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		json_t *v;

		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			const char *arr = *(char *const *)(base + f->offset);
			size_t vsize = pbjson_value_size(f);

			if ((v = json_array()) == NULL)
				goto fail;
			for (size_t k = 0; k < n && arr != NULL; k++)
				if (json_array_append_new(v, pbjson_render_value(f, arr + k * vsize)) !=
				    0) {
					json_decref(v);
					goto fail;
				}
		} else {
			if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
				if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
					continue;
			} else if (f->type == PROTOBUF_C_TYPE_MESSAGE &&
				   *(ProtobufCMessage *const *)(base + f->offset) == NULL) {
				continue;
			}
			v = pbjson_render_value(f, base + f->offset);
		}
		if (v == NULL || json_object_set_new(obj, f->name, v) != 0)
			goto fail;
	}
	return obj;
fail:
	json_decref(obj);
	return NULL;
}

/* Wipe one stored value of field f (strings, bytes, nested messages). */
static void pbjson_wipe_value(const ProtobufCFieldDescriptor *f, void *slot);

/* Wipe every string and bytes field of msg, recursively (passwords, tokens). */
static void pbjson_wipe(ProtobufCMessage *msg)
{
	char *base = (char *)msg;

	for (unsigned i = 0; i < msg->descriptor->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &msg->descriptor->fields[i];

		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(size_t *)(base + f->quantifier_offset);
			char *arr = *(char **)(base + f->offset);

			for (size_t k = 0; k < n && arr != NULL; k++)
				pbjson_wipe_value(f, arr + k * pbjson_value_size(f));
		} else {
			pbjson_wipe_value(f, base + f->offset);
		}
	}
}

static void pbjson_wipe_value(const ProtobufCFieldDescriptor *f, void *slot)
{
	if (f->type == PROTOBUF_C_TYPE_STRING) {
		char *s = *(char **)slot;

		if (s != NULL && s != (char *)protobuf_c_empty_string && s != f->default_value)
			OPENSSL_cleanse(s, strlen(s));
	} else if (f->type == PROTOBUF_C_TYPE_BYTES) {
		ProtobufCBinaryData *b = slot;

		if (b->data != NULL && b->len > 0)
			OPENSSL_cleanse(b->data, b->len);
	} else if (f->type == PROTOBUF_C_TYPE_MESSAGE && *(ProtobufCMessage **)slot != NULL) {
		pbjson_wipe(*(ProtobufCMessage **)slot);
	}
}

/* Wipe the strings of msg (they may be secrets), then free it. NULL-safe. */
void pbjson_free(ProtobufCMessage *msg)
{
	if (msg == NULL)
		return;
	pbjson_wipe(msg);
	protobuf_c_message_free_unpacked(msg, NULL);
}
