/*
 * gateway_cache — small bounded caches of answers from auth (tenant.resolve,
 * auth.authenticate), so a steady client costs auth one question per key per TTL.
 *
 * Direct-mapped: a key (the hex SHA-256 from gateway_key_hash, never a raw
 * credential) selects one slot; a newer entry for the same slot replaces the
 * older one. Memory is bounded by slots × GATEWAY_CACHE_VALUE_MAX. Entries expire
 * by the monotonic clock; values are packed protobuf replies, copied in and out.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "gateway.h"
#include "log.h"

struct gateway_cache_slot {
	char key[65];
	long long expires_ms; /* 0: empty */
	unsigned char *data;
	size_t len;
};

struct gateway_cache {
	struct gateway_cache_slot *slots;
	size_t n;
};

/* Monotonic milliseconds. */
static long long gateway_cache_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A cache of n slots (n > 0). Allocation failure is fatal. */
struct gateway_cache *gateway_cache_new(size_t n)
{
	struct gateway_cache *c = calloc(1, sizeof *c);

	if (c == NULL || (c->slots = calloc(n, sizeof *c->slots)) == NULL)
		log_fatal("gateway cache: out of memory");
	c->n = n;
	return c;
}

/* Empty one slot, wiping its value (answers about credentials). */
static void gateway_cache_slot_clear(struct gateway_cache_slot *s)
{
	if (s->data != NULL) {
		OPENSSL_cleanse(s->data, s->len);
		free(s->data);
	}
	memset(s, 0, sizeof *s);
}

/* Free the cache and every value. NULL-safe. */
void gateway_cache_free(struct gateway_cache *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n; i++)
		gateway_cache_slot_clear(&c->slots[i]);
	free(c->slots);
	free(c);
}

/* The slot a key maps to (its first 8 hex digits). */
static struct gateway_cache_slot *gateway_cache_slot(struct gateway_cache *c, const char *key)
{
	unsigned long h = 0;

	for (size_t i = 0; i < 8 && key[i] != '\0'; i++)
		h = h * 31 + (unsigned char)key[i];

	return &c->slots[h % c->n];
}

/* Store a copy of data under key for ttl_ms (values over GATEWAY_CACHE_VALUE_MAX are not kept). */
void gateway_cache_put(struct gateway_cache *c, const char *key, const void *data, size_t len,
		       int ttl_ms)
{
	struct gateway_cache_slot *s = gateway_cache_slot(c, key);

	gateway_cache_slot_clear(s);
	if (ttl_ms <= 0 || len > GATEWAY_CACHE_VALUE_MAX || strlen(key) != 64)
		return;
	if ((s->data = malloc(len ? len : 1)) == NULL)
		return; /* a cache may forget */
	memcpy(s->data, data, len);
	s->len = len;
	memcpy(s->key, key, 65);
	s->expires_ms = gateway_cache_now() + ttl_ms;
}

/* The value under key if present and fresh (valid until the next put or free), else NULL. */
const void *gateway_cache_get(struct gateway_cache *c, const char *key, size_t *len_r)
{
	struct gateway_cache_slot *s = gateway_cache_slot(c, key);

	if (s->expires_ms == 0 || strcmp(s->key, key) != 0)
		return NULL;
	if (s->expires_ms <= gateway_cache_now()) {
		gateway_cache_slot_clear(s);
		return NULL;
	}
	*len_r = s->len;
	return s->data;
}
