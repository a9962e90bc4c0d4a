/*
 * audit_chain — the hash chain's canonical encoding and the signed checkpoints.
 *
 * An event's hash is SHA-256 over a framing that cannot be ambiguous: a version
 * label, then each field as a 4-byte big-endian length and its bytes (integers
 * as 8 bytes big endian), always in the same order, the previous event's hash
 * last. The detail is hashed sealed (as stored), so the chain can be verified
 * without the tenant's key and still verifies after the key is destroyed.
 *
 * Version 2 ("ward-audit-event/2", events written since deploy/sql/060_gdpr.sql)
 * hashes the SHA-256 of the sealed detail in its place (empty when there is no
 * detail). The digest is stored beside the event and the detail in a table of its
 * own, so a person's details can be erased (GDPR) while the chain still verifies:
 * verify checks a detail still present against its digest.
 * Nothing here touches the database; the unit tests include this file.
 */
#include <stdlib.h>
#include <string.h>

#include "audit.h"

#define CHAIN_EVENT_LABEL "ward-audit-event/1"
#define CHAIN_EVENT_LABEL_V2 "ward-audit-event/2"
#define CHAIN_CHECKPOINT_LABEL "ward-audit-checkpoint/1"

struct chain_buf {
	uint8_t *p;
	size_t len, cap;
	int failed;
};

/* Append n raw bytes. */
static void chain_put(struct chain_buf *b, const void *data, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n > b->cap) {
		size_t cap = (b->cap ? b->cap * 2 : 256) + n;
		uint8_t *np = realloc(b->p, cap);

		if (np == NULL) {
			b->failed = 1;
			return;
		}
		b->p = np, b->cap = cap;
	}
	if (n > 0)
		memcpy(b->p + b->len, data, n);
	b->len += n;
}

/* Append a length-prefixed field. */
static void chain_field(struct chain_buf *b, const void *data, size_t n)
{
	uint8_t len[4] = { (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n };

	if (n > UINT32_MAX) {
		b->failed = 1;
		return;
	}
	chain_put(b, len, 4);
	chain_put(b, data, n);
}

static void chain_str(struct chain_buf *b, const char *s)
{
	chain_field(b, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

static void chain_int(struct chain_buf *b, int64_t v)
{
	uint8_t x[8];
	uint64_t u = (uint64_t)v;

	for (int i = 7; i >= 0; i--, u >>= 8)
		x[i] = (uint8_t)u;
	chain_field(b, x, 8);
}

int audit_chain_encode(const struct audit_row *row, uint8_t **out_r, size_t *len_r)
{
	struct chain_buf b = { 0 };

	*out_r = NULL;
	*len_r = 0;
	chain_str(&b, row->version == 2 ? CHAIN_EVENT_LABEL_V2 : CHAIN_EVENT_LABEL);
	chain_str(&b, row->tenant);
	chain_int(&b, row->seq);
	chain_str(&b, row->id);
	chain_int(&b, row->at_ms);
	chain_str(&b, row->type);
	chain_str(&b, row->action);
	chain_str(&b, row->actor);
	chain_str(&b, row->target);
	chain_str(&b, row->ip);
	chain_str(&b, row->request_id);
	if (row->version == 2)
		chain_field(&b, row->digest, row->digest != NULL ? AUDIT_HASH_LEN : 0);
	else
		chain_field(&b, row->detail, row->detail != NULL ? row->detail_len : 0);
	chain_field(&b, row->prev, row->prev != NULL ? AUDIT_HASH_LEN : 0);
	if (b.failed) {
		free(b.p);
		return -1;
	}
	*out_r = b.p;
	*len_r = b.len;
	return 0;
}

int audit_chain_detail_digest(const uint8_t *detail, size_t len, uint8_t out[AUDIT_HASH_LEN])
{
	return crypto_sha256(detail, len, out);
}

int audit_chain_hash(const struct audit_row *row, uint8_t out[AUDIT_HASH_LEN])
{
	uint8_t *enc;
	size_t len;
	int r;

	if (audit_chain_encode(row, &enc, &len) < 0)
		return -1;
	r = crypto_sha256(enc, len, out);
	free(enc);
	return r;
}

/* The signed message of a checkpoint. */
static int chain_checkpoint_msg(const char *tenant, int64_t seq, const uint8_t hash[AUDIT_HASH_LEN],
				int64_t at_ms, struct chain_buf *b)
{
	chain_str(b, CHAIN_CHECKPOINT_LABEL);
	chain_str(b, tenant);
	chain_int(b, seq);
	chain_field(b, hash, AUDIT_HASH_LEN);
	chain_int(b, at_ms);
	return b->failed ? -1 : 0;
}

int audit_chain_sign(const uint8_t key[CRYPTO_KEY_LEN], const char *tenant, int64_t seq,
		     const uint8_t hash[AUDIT_HASH_LEN], int64_t at_ms, uint8_t sig[32])
{
	struct chain_buf b = { 0 };
	int r = -1;

	if (chain_checkpoint_msg(tenant, seq, hash, at_ms, &b) == 0)
		r = crypto_hmac_sha256(key, CRYPTO_KEY_LEN, b.p, b.len, sig);
	free(b.p);
	return r;
}

int audit_chain_check(const uint8_t key[CRYPTO_KEY_LEN], const char *tenant, int64_t seq,
		      const uint8_t hash[AUDIT_HASH_LEN], int64_t at_ms, const uint8_t sig[32])
{
	uint8_t want[32];
	int ok;

	if (audit_chain_sign(key, tenant, seq, hash, at_ms, want) < 0)
		return 0;
	ok = crypto_ct_equal(want, sig, sizeof want);
	crypto_wipe(want, sizeof want);
	return ok;
}

void audit_chain_key_id(const uint8_t key[CRYPTO_KEY_LEN], char out[17])
{
	uint8_t buf[14 + CRYPTO_KEY_LEN], digest[32];

	memcpy(buf, "ward audit key", 14);
	memcpy(buf + 14, key, CRYPTO_KEY_LEN);
	if (crypto_sha256(buf, sizeof buf, digest) < 0)
		memset(digest, 0, sizeof digest);
	crypto_hex(digest, 8, out);
	crypto_wipe(buf, sizeof buf);
}

int audit_tenant_ok(const char *s)
{
	static const int dash[] = { 8, 13, 18, 23 };

	if (s == NULL)
		return 0;
	if (s[0] == '\0')
		return 1;
	if (strlen(s) != 36)
		return 0;
	for (int i = 0, d = 0; i < 36; i++) {
		if (d < 4 && i == dash[d]) {
			if (s[i] != '-')
				return 0;
			d++;
		} else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
			return 0;
		}
	}
	return 1;
}

void audit_id_to_uuid(const char *hex, char out[37])
{
	size_t o = 0;

	for (size_t i = 0; i < 32 && hex[i] != '\0'; i++) {
		if (i == 8 || i == 12 || i == 16 || i == 20)
			out[o++] = '-';
		out[o++] = hex[i];
	}
	out[o] = '\0';
}
