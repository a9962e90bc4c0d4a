/*
 * pbjson — JSON (jansson) <-> protobuf-c messages, driven by the message descriptors.
 *
 * The gateway reads every request body into the route's request message and writes
 * every reply message back as JSON with these two functions; nothing is written by
 * hand per message. Field names are the .proto names (snake_case).
 *
 * JSON → message (pbjson_parse): the input must be an object; every member must
 * name a field of the message (an unknown member is an error naming it); values are
 * type-checked: strings (valid UTF-8, no NUL, at most max_string bytes), integers
 * in range of the field's type (a JSON real is refused for an integer field),
 * booleans, numbers for float/double, objects for nested messages (at most
 * max_depth deep), arrays for repeated fields (at most max_repeated items). JSON
 * null means "not given". Bytes fields take standard base64 with padding (bounded
 * by the body size, not max_string). Enums are not used by Ward's API and refused. All errors are collected, not only the first, as an array of
 * {"field": "a.b[2]", "message": "…"} for a 422 problem.
 *
 * Message → JSON (pbjson_render): an object with every field (defaults included,
 * so clients see a stable shape), repeated fields as arrays, unset nested messages
 * omitted, 64-bit integers as JSON numbers, bytes as base64.
 */
#ifndef WARD_PBJSON_H
#define WARD_PBJSON_H

#include <stddef.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

struct pbjson_limits {
	size_t max_string;   /* bytes per string (0: PBJSON_DEFAULT_STRING) */
	size_t max_repeated; /* items per repeated field (0: PBJSON_DEFAULT_REPEATED) */
	int max_depth;	     /* message levels, the top one included (0: PBJSON_DEFAULT_DEPTH) */
};

#define PBJSON_DEFAULT_STRING (64 * 1024)
#define PBJSON_DEFAULT_REPEATED 1000
#define PBJSON_DEFAULT_DEPTH 8
#define PBJSON_MAX_ERRORS 32 /* further errors are not listed */

/*
 * Read obj into a new message of type desc. Returns 0 and *msg_r (free with
 * pbjson_free), or -1 with *errors_r a new JSON array of field errors (the caller
 * decrefs it; never empty). limits may be NULL (defaults). Allocation failure
 * aborts, as every allocation in Ward does.
 */
int pbjson_parse(const ProtobufCMessageDescriptor *desc, const json_t *obj,
		 const struct pbjson_limits *limits, ProtobufCMessage **msg_r, json_t **errors_r);

/*
 * Convert the text of a query, path or form parameter into the JSON value that
 * field name of desc takes: integer fields parse decimal, bool fields take
 * "true"/"false"/"1"/"0", string fields stay strings; a repeated string field
 * takes one value. NULL with *why_r set if the field is unknown or the text does
 * not fit its type. The caller owns the returned reference.
 */
json_t *pbjson_from_text(const ProtobufCMessageDescriptor *desc, const char *name,
			 const char *text, const char **why_r);

/* The field of desc named name, or NULL. */
const ProtobufCFieldDescriptor *pbjson_field(const ProtobufCMessageDescriptor *desc,
					     const char *name);

/* A new JSON object for msg (the caller decrefs it); NULL only on allocation failure. */
json_t *pbjson_render(const ProtobufCMessage *msg);

/* Wipe every string and bytes value of msg (recursively), then free it: a message
 * made by pbjson_parse or unpacked with the default allocator. NULL-safe. */
void pbjson_free(ProtobufCMessage *msg);

/* 1 if s[0..len) is valid UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */
int pbjson_utf8_ok(const char *s, size_t len);

#endif
