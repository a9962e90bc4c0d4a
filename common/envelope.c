/*
 * envelope — route keys, sealing, opening and checked unpacking of Envelopes.
 *
 * A route key file lists "<sender> <route> <version> <64 hex>" lines; the keys
 * live in one calloc'd array that is wiped when freed. A payload is sealed with
 * crypto_seal under the key of (env->sender, route of env->stream), the
 * associated data being "ward-envelope/1\0" followed by the packed header (a
 * copy of the envelope with an empty payload). Opening reads the key version
 * from the sealed payload, picks that version of the same route key and
 * recomputes the associated data from the received header, so any edited
 * header field, a stream change or a payload moved elsewhere fails the tag.
 *
 * envelope_unpack is the only way untrusted bytes become an Envelope: length
 * capped before protobuf-c sees them, then every field checked.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto.h"
#include "envelope.h"

#define ENVELOPE_AAD_PREFIX "ward-envelope/1"
#define ENVELOPE_AAD_PREFIX_LEN (sizeof ENVELOPE_AAD_PREFIX) /* with its NUL */
#define ENVELOPE_NAME_MAX 128
#define ENVELOPE_LINE_MAX 512
#define ENVELOPE_KEYS_MAX 4096

struct envelope_key {
	char sender[ENVELOPE_NAME_MAX];
	char route[ENVELOPE_NAME_MAX];
	uint32_t version;
	uint8_t key[CRYPTO_KEY_LEN];
};

struct envelope_keys {
	struct envelope_key *v;
	size_t n, cap;
};

/* ---------------------------------------------------------------- key file */

/* 1 if s is a plausible service or route name: [a-z0-9:_.-], not empty. */
static int envelope_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= ENVELOPE_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == ':' || c == '_' ||
		      c == '-' || c == '.'))
			return 0;
	}
	return 1;
}

/* Parse one non-comment line into keys; the line buffer is the caller's to wipe. */
static int envelope_keys_add_line(envelope_keys_t *keys, char *line, const char **error_r)
{
	char *save = NULL, *sender, *route, *ver, *hex, *extra, *end;
	struct envelope_key *k;
	unsigned long v;

	sender = strtok_r(line, " \t", &save);
	route = strtok_r(NULL, " \t", &save);
	ver = strtok_r(NULL, " \t", &save);
	hex = strtok_r(NULL, " \t", &save);
	extra = strtok_r(NULL, " \t", &save);
	if (sender == NULL || route == NULL || ver == NULL || hex == NULL || extra != NULL) {
		*error_r = "route key line must be \"<sender> <route> <version> <64 hex>\"";
		return -1;
	}
	if (!envelope_name_ok(sender) || !envelope_name_ok(route)) {
		*error_r = "route key line has a bad sender or route name";
		return -1;
	}
	if (ver[0] < '0' || ver[0] > '9') {
		*error_r = "route key version is not a number";
		return -1;
	}
	errno = 0;
	v = strtoul(ver, &end, 10);
	if (errno != 0 || *end != '\0' || v == 0 || v > UINT32_MAX) {
		*error_r = "route key version must be 1..4294967295";
		return -1;
	}
	if (strlen(hex) != 2 * CRYPTO_KEY_LEN) {
		*error_r = "route key must be 64 hex digits";
		return -1;
	}
	if (envelope_keys_lookup(keys, sender, route, (uint32_t)v) != NULL) {
		*error_r = "route key listed twice (same sender, route and version)";
		return -1;
	}
	if (keys->n == keys->cap) {
		size_t cap = keys->cap ? keys->cap * 2 : 8;
		struct envelope_key *nv;

		if (cap > ENVELOPE_KEYS_MAX) {
			*error_r = "too many route keys";
			return -1;
		}
		/* No realloc: the old array holds keys and must be wiped, not just freed. */
		nv = calloc(cap, sizeof *nv);
		if (nv == NULL) {
			*error_r = "out of memory";
			return -1;
		}
		if (keys->n > 0)
			memcpy(nv, keys->v, keys->n * sizeof *nv);
		crypto_wipe(keys->v, keys->cap * sizeof *keys->v);
		free(keys->v);
		keys->v = nv;
		keys->cap = cap;
	}
	k = &keys->v[keys->n];
	if (crypto_unhex(hex, k->key, sizeof k->key) != 0) {
		crypto_wipe(k, sizeof *k);
		*error_r = "route key must be 64 hex digits";
		return -1;
	}
	/* Lengths checked by envelope_name_ok. */
	memcpy(k->sender, sender, strlen(sender) + 1);
	memcpy(k->route, route, strlen(route) + 1);
	k->version = (uint32_t)v;
	keys->n++;
	return 0;
}

/* An empty set: a daemon with no route (see envelope.h). */
envelope_keys_t *envelope_keys_none(void)
{
	return calloc(1, sizeof(envelope_keys_t));
}

/* Parse a route key file (see envelope.h); NULL and *error_r on bad input. */
envelope_keys_t *envelope_keys_parse(const unsigned char *data, size_t len, const char **error_r)
{
	envelope_keys_t *keys;
	char line[ENVELOPE_LINE_MAX];
	size_t pos = 0;
	const char *error = NULL;

	if (data == NULL && len > 0) {
		*error_r = "no route key data";
		return NULL;
	}
	keys = calloc(1, sizeof *keys);
	if (keys == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	while (pos < len) {
		size_t start = pos, n, i;
		char *p;

		while (pos < len && data[pos] != '\n')
			pos++;
		n = pos - start;
		if (pos < len)
			pos++; /* the newline */
		if (n > 0 && data[start + n - 1] == '\r')
			n--;
		if (n >= sizeof line) {
			error = "route key line too long";
			goto out;
		}
		for (i = 0; i < n; i++) {
			unsigned char c = data[start + i];

			if (c == '\0' || (c < 0x20 && c != '\t') || c >= 0x7f) {
				error = "route key file holds a control or non-ASCII byte";
				goto out;
			}
		}
		memcpy(line, data + start, n);
		line[n] = '\0';
		p = line;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0' || *p == '#')
			continue;
		if (envelope_keys_add_line(keys, p, &error) != 0)
			goto out;
	}
	if (keys->n == 0)
		error = "route key file lists no key";
out:
	crypto_wipe(line, sizeof line);
	if (error != NULL) {
		envelope_keys_free(keys);
		*error_r = error;
		return NULL;
	}
	return keys;
}

/* Wipe and free a key set. NULL-safe. */
void envelope_keys_free(envelope_keys_t *keys)
{
	if (keys == NULL)
		return;
	if (keys->v != NULL) {
		crypto_wipe(keys->v, keys->cap * sizeof *keys->v);
		free(keys->v);
	}
	crypto_wipe(keys, sizeof *keys);
	free(keys);
}

/* Route name of a stream: "r:<svc>:<instance>" → "r:<svc>", others unchanged.
 * out is "" if the name does not fit, so no key matches. */
void envelope_route_of(const char *stream, char *out, size_t out_len)
{
	size_t n;

	if (out == NULL || out_len == 0)
		return;
	out[0] = '\0';
	if (stream == NULL)
		return;
	n = strlen(stream);
	if (strncmp(stream, "r:", 2) == 0) {
		const char *colon = strchr(stream + 2, ':');

		if (colon != NULL)
			n = (size_t)(colon - stream);
	}
	if (n >= out_len)
		return;
	memcpy(out, stream, n);
	out[n] = '\0';
}

/* Find the key of sender → stream's route with version (0 = highest). */
static const struct envelope_key *envelope_keys_find(const envelope_keys_t *keys,
						      const char *sender, const char *stream,
						      uint32_t version)
{
	char route[ENVELOPE_NAME_MAX];
	const struct envelope_key *best = NULL;

	if (keys == NULL || sender == NULL || stream == NULL)
		return NULL;
	envelope_route_of(stream, route, sizeof route);
	if (route[0] == '\0')
		return NULL;
	for (size_t i = 0; i < keys->n; i++) {
		const struct envelope_key *k = &keys->v[i];

		if (strcmp(k->sender, sender) != 0 || strcmp(k->route, route) != 0)
			continue;
		if (version != 0) {
			if (k->version == version)
				return k;
		} else if (best == NULL || k->version > best->version) {
			best = k;
		}
	}
	return best;
}

/* Key to seal sender → stream with: the highest version held. */
const uint8_t *envelope_keys_sealing(const envelope_keys_t *keys, const char *sender,
				     const char *stream, uint32_t *version_r)
{
	const struct envelope_key *k = envelope_keys_find(keys, sender, stream, 0);

	if (k == NULL)
		return NULL;
	if (version_r != NULL)
		*version_r = k->version;
	return k->key;
}

/* Key of one version of sender → stream, or NULL. */
const uint8_t *envelope_keys_lookup(const envelope_keys_t *keys, const char *sender,
				    const char *stream, uint32_t version)
{
	const struct envelope_key *k;

	if (version == 0)
		return NULL;
	k = envelope_keys_find(keys, sender, stream, version);
	return k != NULL ? k->key : NULL;
}

/* ------------------------------------------------------------ seal / open */

/* Build the associated data: prefix + the envelope packed without its payload. */
static uint8_t *envelope_aad(const Ward__Envelope *env, size_t *len_r)
{
	Ward__Envelope hdr = *env;
	size_t n;
	uint8_t *aad;

	hdr.payload.data = NULL;
	hdr.payload.len = 0;
	n = ward__envelope__get_packed_size(&hdr);
	aad = malloc(ENVELOPE_AAD_PREFIX_LEN + n);
	if (aad == NULL)
		return NULL;
	memcpy(aad, ENVELOPE_AAD_PREFIX, ENVELOPE_AAD_PREFIX_LEN);
	if (ward__envelope__pack(&hdr, aad + ENVELOPE_AAD_PREFIX_LEN) != n) {
		free(aad);
		return NULL;
	}
	*len_r = ENVELOPE_AAD_PREFIX_LEN + n;
	return aad;
}

/* Seal pt into env->payload under the route key of (sender, stream). */
int envelope_seal(Ward__Envelope *env, const envelope_keys_t *keys, const uint8_t *pt, size_t pt_len,
		  const char **error_r)
{
	const uint8_t *key;
	uint32_t version = 0;
	uint8_t *aad = NULL, *out = NULL;
	size_t aad_len = 0, out_len = 0;
	int ret = -1;

	if (env == NULL || env->sender == NULL || env->stream == NULL || env->sender[0] == '\0' ||
	    env->stream[0] == '\0') {
		*error_r = "envelope has no sender or stream";
		return -1;
	}
	if (pt_len > ENVELOPE_MAX_PAYLOAD) {
		*error_r = "payload too large";
		return -1;
	}
	key = envelope_keys_sealing(keys, env->sender, env->stream, &version);
	if (key == NULL) {
		*error_r = "no route key for this sender and stream";
		return -1;
	}
	envelope_clear_payload(env);
	aad = envelope_aad(env, &aad_len);
	if (aad == NULL) {
		*error_r = "cannot pack the envelope header";
		goto out;
	}
	if (crypto_seal(key, version, aad, aad_len, pt != NULL ? pt : (const uint8_t *)"", pt_len,
			&out, &out_len) != 0) {
		*error_r = "sealing failed";
		goto out;
	}
	env->payload.data = out;
	env->payload.len = out_len;
	ret = 0;
out:
	free(aad);
	return ret;
}

/* Open env->payload with the key of (sender, stream) and the sealed key version. */
int envelope_open(const Ward__Envelope *env, const envelope_keys_t *keys, uint8_t **pt_r,
		  size_t *pt_len_r, const char **error_r)
{
	const uint8_t *key;
	uint32_t version = 0;
	uint8_t *aad = NULL;
	size_t aad_len = 0;
	int ret = -1;

	*pt_r = NULL;
	*pt_len_r = 0;
	if (env == NULL || env->sender == NULL || env->stream == NULL) {
		*error_r = "envelope has no sender or stream";
		return -1;
	}
	if (env->payload.data == NULL || env->payload.len < CRYPTO_SEAL_OVERHEAD ||
	    crypto_sealed_key_version(env->payload.data, env->payload.len, &version) != 0) {
		*error_r = "payload is not sealed";
		return -1;
	}
	key = envelope_keys_lookup(keys, env->sender, env->stream, version);
	if (key == NULL) {
		*error_r = "no route key for this sender, stream and key version";
		return -1;
	}
	aad = envelope_aad(env, &aad_len);
	if (aad == NULL) {
		*error_r = "cannot pack the envelope header";
		goto out;
	}
	if (crypto_open(key, aad, aad_len, env->payload.data, env->payload.len, pt_r, pt_len_r,
			NULL) != 0) {
		*error_r = "payload does not open (forged, altered or moved)";
		*pt_r = NULL;
		*pt_len_r = 0;
		goto out;
	}
	ret = 0;
out:
	free(aad);
	return ret;
}

/* Free the payload buffer of an envelope we sealed. */
void envelope_clear_payload(Ward__Envelope *env)
{
	if (env == NULL)
		return;
	free(env->payload.data);
	env->payload.data = NULL;
	env->payload.len = 0;
}

/* ----------------------------------------------------------- pack / unpack */

/* Pack env into a malloc'd buffer; NULL on failure. */
uint8_t *envelope_pack(const Ward__Envelope *env, size_t *len_r)
{
	size_t n;
	uint8_t *buf;

	if (env == NULL || len_r == NULL)
		return NULL;
	n = ward__envelope__get_packed_size(env);
	buf = malloc(n > 0 ? n : 1);
	if (buf == NULL)
		return NULL;
	if (ward__envelope__pack(env, buf) != n) {
		free(buf);
		return NULL;
	}
	*len_r = n;
	return buf;
}

/* 1 if s is at most ENVELOPE_MAX_STRING bytes of valid UTF-8 without control
 * characters (C0, DEL, C1), overlongs or surrogates. */
int envelope_string_ok(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, n;

	if (s == NULL)
		return 0;
	n = strnlen(s, ENVELOPE_MAX_STRING + 1);
	if (n > ENVELOPE_MAX_STRING)
		return 0;
	while (i < n) {
		unsigned char c = p[i];
		uint32_t cp;
		size_t k;

		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f)
				return 0;
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			k = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			k = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			k = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (i + k >= n)
			return 0;
		for (size_t j = 1; j <= k; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i + j] & 0x3f);
		}
		if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
			return 0;
		i += k + 1;
	}
	return 1;
}

/* 1 if s is exactly 32 lower-case hex digits (a crypto_random_id). */
static int envelope_id_ok(const char *s)
{
	size_t i;

	for (i = 0; i < 32; i++) {
		char c = s[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return 0;
	}
	return s[32] == '\0';
}

/* Check every field of an unpacked envelope; 0 or -1 with *error_r. */
static int envelope_check(const Ward__Envelope *env, const char **error_r)
{
	const char *strs[] = { env->id,		     env->tenant,     env->region,
			       env->sender,	     env->method,     env->reply_to,
			       env->idempotency_key, env->correlation_id, env->error,
			       env->stream,	     env->request_id };

	if (env->version != ENVELOPE_VERSION) {
		*error_r = "unsupported envelope version";
		return -1;
	}
	for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
		if (!envelope_string_ok(strs[i])) {
			*error_r = "envelope string too long, not UTF-8 or with control characters";
			return -1;
		}
	}
	if (env->principal != NULL) {
		const Ward__Principal *p = env->principal;
		const char *ps[] = { p->kind, p->id, p->role, p->tenant, p->session };

		for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
			if (!envelope_string_ok(ps[i])) {
				*error_r = "principal string too long, not UTF-8 or with control "
					   "characters";
				return -1;
			}
		}
	}
	if (!envelope_id_ok(env->id)) {
		*error_r = "envelope id is not 32 hex digits";
		return -1;
	}
	if (env->correlation_id[0] != '\0' && !envelope_id_ok(env->correlation_id)) {
		*error_r = "correlation id is not 32 hex digits";
		return -1;
	}
	if (env->sender[0] == '\0' || env->method[0] == '\0' || env->stream[0] == '\0') {
		*error_r = "envelope lacks sender, method or stream";
		return -1;
	}
	if (env->reply_to[0] != '\0' && strncmp(env->reply_to, "r:", 2) != 0) {
		*error_r = "reply_to is not a reply stream";
		return -1;
	}
	if (env->deadline_ms < 0) {
		*error_r = "negative deadline";
		return -1;
	}
	if (env->payload.len > ENVELOPE_MAX_PAYLOAD + CRYPTO_SEAL_OVERHEAD) {
		*error_r = "payload too large";
		return -1;
	}
	return 0;
}

/* Unpack and check untrusted bytes; NULL and *error_r when refused. */
Ward__Envelope *envelope_unpack(const uint8_t *data, size_t len, const char **error_r)
{
	Ward__Envelope *env;

	if (data == NULL || len == 0) {
		*error_r = "empty envelope";
		return NULL;
	}
	if (len > ENVELOPE_MAX_PACKED) {
		*error_r = "envelope too large";
		return NULL;
	}
	env = ward__envelope__unpack(NULL, len, data);
	if (env == NULL) {
		*error_r = "envelope is not a valid protobuf message";
		return NULL;
	}
	if (envelope_check(env, error_r) != 0) {
		ward__envelope__free_unpacked(env, NULL);
		return NULL;
	}
	return env;
}

/* Current wall-clock time in unix milliseconds. */
int64_t envelope_now_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
