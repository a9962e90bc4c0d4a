/*
 * envelope — the protobuf Envelope every queue message is, sealed per route.
 *
 * A route is a (sender service, destination stream) pair; its 256-bit key is
 * generated per cell from deploy/policy.yaml and given only to the two services
 * on it. The payload is AES-256-GCM sealed under the route key with the whole
 * header (every field but payload, packed) as associated data, prefixed by
 * "ward-envelope/1", so a header edited, an entry moved to another stream, or a
 * payload moved to another envelope fails to open.
 *
 * Reply streams are per instance ("r:gateway:gw-1"); their route is named by the
 * stream's first two parts ("r:gateway"), so one key serves every instance.
 */
#ifndef WARD_ENVELOPE_H
#define WARD_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "envelope.pb-c.h"

#define ENVELOPE_VERSION 1
/* Largest packed envelope accepted from a stream: 1 MiB payload + header. */
#define ENVELOPE_MAX_PAYLOAD (1024 * 1024)
#define ENVELOPE_MAX_PACKED (ENVELOPE_MAX_PAYLOAD + 16 * 1024)
#define ENVELOPE_MAX_STRING 1024

typedef struct envelope_keys envelope_keys_t;

/* Parse a route key file: one route per line, "<sender> <route> <version> <64 hex>",
 * '#' comments and blank lines ignored. Several versions of a route may be listed;
 * the highest seals, any listed opens. Returns NULL and *error_r on bad input. */
envelope_keys_t *envelope_keys_parse(const unsigned char *data, size_t len, const char **error_r);
/* A set with no route key (a daemon that seals and opens nothing: ward-status);
 * NULL when out of memory. */
envelope_keys_t *envelope_keys_none(void);
void envelope_keys_free(envelope_keys_t *keys);
/* The route name of a stream: "q:auth" → "q:auth", "r:gateway:gw-1" → "r:gateway". */
void envelope_route_of(const char *stream, char *out, size_t out_len);
/* Key to seal with for sender → stream (highest version), or NULL if not held. */
const uint8_t *envelope_keys_sealing(const envelope_keys_t *keys, const char *sender,
				     const char *stream, uint32_t *version_r);
/* Key of a given version for sender → stream, or NULL if not held. */
const uint8_t *envelope_keys_lookup(const envelope_keys_t *keys, const char *sender,
				    const char *stream, uint32_t version);

/* Seal plaintext into env->payload (env->stream and env->sender must be set; the
 * header must be final). env->payload.data is malloc'd: free with
 * envelope_clear_payload. 0 or -1 with *error_r. */
int envelope_seal(Ward__Envelope *env, const envelope_keys_t *keys, const uint8_t *pt, size_t pt_len,
		  const char **error_r);
/* Open env->payload with the route key of (env->sender, env->stream). *pt_r is
 * malloc'd (NUL-terminated), owned by the caller. */
int envelope_open(const Ward__Envelope *env, const envelope_keys_t *keys, uint8_t **pt_r,
		  size_t *pt_len_r, const char **error_r);
void envelope_clear_payload(Ward__Envelope *env);

/* Pack into a malloc'd buffer owned by the caller. */
uint8_t *envelope_pack(const Ward__Envelope *env, size_t *len_r);
/* Unpack untrusted bytes: length capped, version checked, strings bounded and
 * required fields present. Free with ward__envelope__free_unpacked(env, NULL). */
Ward__Envelope *envelope_unpack(const uint8_t *data, size_t len, const char **error_r);

/* 1 if s is a string envelope_unpack accepts: at most ENVELOPE_MAX_STRING bytes of
 * valid UTF-8 without control characters. */
int envelope_string_ok(const char *s);

/* Current wall-clock time in unix milliseconds. */
int64_t envelope_now_ms(void);

#endif
