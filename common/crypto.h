/*
 * crypto — the few primitives Ward uses, on OpenSSL 3.
 *
 * Random bytes, AES-256-GCM with associated data, a versioned sealed format,
 * key wrapping (tenant DEK under the region KEK), HKDF-SHA256, HMAC-SHA256 blind
 * indexes, SHA-256 and constant-time comparison. Every function returns 0 on
 * success and -1 on failure; nothing here logs.
 *
 * Sealed format (crypto_seal/crypto_open):
 *   byte 0      CRYPTO_SEAL_VERSION (1)
 *   bytes 1..4  key version, big endian (which KEK/DEK/route key sealed it)
 *   bytes 5..16 random 96-bit nonce
 *   then        ciphertext (same length as the plaintext), 16-byte GCM tag
 * The version byte and key version are bound into the associated data too, so
 * they cannot be altered without the tag failing.
 */
#ifndef WARD_CRYPTO_H
#define WARD_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define CRYPTO_KEY_LEN 32
#define CRYPTO_NONCE_LEN 12
#define CRYPTO_TAG_LEN 16
#define CRYPTO_SEAL_VERSION 1
#define CRYPTO_SEAL_HEADER (1 + 4 + CRYPTO_NONCE_LEN)
#define CRYPTO_SEAL_OVERHEAD (CRYPTO_SEAL_HEADER + CRYPTO_TAG_LEN)

/* Fill buf with len cryptographically secure random bytes. */
int crypto_random(void *buf, size_t len);

/* Raw AES-256-GCM with a 12-byte nonce (used by crypto_seal; exposed for test vectors).
 * ct receives pt_len bytes. */
int crypto_gcm_encrypt(const uint8_t key[CRYPTO_KEY_LEN], const uint8_t nonce[CRYPTO_NONCE_LEN],
		       const void *aad, size_t aad_len, const void *pt, size_t pt_len, uint8_t *ct,
		       uint8_t tag[CRYPTO_TAG_LEN]);
/* Returns -1 if the tag does not verify; pt is then wiped. */
int crypto_gcm_decrypt(const uint8_t key[CRYPTO_KEY_LEN], const uint8_t nonce[CRYPTO_NONCE_LEN],
		       const void *aad, size_t aad_len, const void *ct, size_t ct_len,
		       const uint8_t tag[CRYPTO_TAG_LEN], uint8_t *pt);

/* Seal pt under key (tagged key_version) with aad. *out_r is malloc'd, owned by the
 * caller, *out_len_r = pt_len + CRYPTO_SEAL_OVERHEAD. */
int crypto_seal(const uint8_t key[CRYPTO_KEY_LEN], uint32_t key_version, const void *aad,
		size_t aad_len, const void *pt, size_t pt_len, uint8_t **out_r, size_t *out_len_r);
/* Open a sealed buffer. *out_r is malloc'd (+1 byte, NUL-terminated for convenience),
 * owned by the caller. key_version_r may be NULL. Fails on any tampering, wrong key,
 * wrong aad, unknown version or short input. */
int crypto_open(const uint8_t key[CRYPTO_KEY_LEN], const void *aad, size_t aad_len,
		const uint8_t *in, size_t in_len, uint8_t **out_r, size_t *out_len_r,
		uint32_t *key_version_r);
/* Read the key version of a sealed buffer without opening it (to pick the key). */
int crypto_sealed_key_version(const uint8_t *in, size_t in_len, uint32_t *key_version_r);

/* Wrap a DEK under a KEK; context (e.g. the tenant id) is bound as aad so a wrapped
 * key cannot be moved to another tenant. *out_r malloc'd, owned by the caller. */
int crypto_wrap_key(const uint8_t kek[CRYPTO_KEY_LEN], uint32_t kek_version, const char *context,
		    const uint8_t dek[CRYPTO_KEY_LEN], uint8_t **out_r, size_t *out_len_r);
int crypto_unwrap_key(const uint8_t kek[CRYPTO_KEY_LEN], const char *context, const uint8_t *wrapped,
		      size_t wrapped_len, uint8_t dek[CRYPTO_KEY_LEN], uint32_t *kek_version_r);

/* HKDF-SHA256 (RFC 5869). salt may be NULL. */
int crypto_hkdf(const uint8_t *ikm, size_t ikm_len, const void *salt, size_t salt_len,
		const char *info, uint8_t *out, size_t out_len);
int crypto_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t msg_len,
		       uint8_t out[32]);
int crypto_sha256(const void *msg, size_t len, uint8_t out[32]);
/* Keyed blind index of value for equality lookups: hex of
 * HMAC-SHA256(HKDF(dek, info "ward blind index " purpose), value). out_hex: 65 bytes. */
int crypto_blind_index(const uint8_t dek[CRYPTO_KEY_LEN], const char *purpose, const void *value,
		       size_t value_len, char out_hex[65]);

/* 1 if equal, 0 if not; time depends only on len. */
int crypto_ct_equal(const void *a, const void *b, size_t len);
/* Lower-case hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void crypto_hex(const uint8_t *in, size_t n, char *out);
/* Exactly 2*out_len hex digits into out_len bytes; -1 on bad input. */
int crypto_unhex(const char *hex, uint8_t *out, size_t out_len);
/* A random id: 16 random bytes as 32 hex digits (out: 33 bytes). */
int crypto_random_id(char out[33]);
/* Wipe memory the compiler may not elide. NULL-safe. */
void crypto_wipe(void *p, size_t n);
/* Load a 32-byte key from a file holding exactly 32 raw bytes or 64 hex digits
 * (optionally newline-terminated). error_r gets a message for a person. */
int crypto_key_load(const char *path, uint8_t key[CRYPTO_KEY_LEN], const char **error_r);


/*
 * Key rings: a region KEK file holding several versions during a rotation.
 * Two file formats are read:
 *   legacy   32 raw bytes or 64 hex digits (crypto_key_load): one key, version 1
 *   ring     one line per key, "ward-kek <version> <64 hex digits>\n", versions
 *            1..2^31-1, each at most once, at most CRYPTO_KEYRING_MAX lines
 * The current key (the one that wraps) is the highest version. The version is the
 * one crypto_wrap_key records in the wrapped key's header, so an unwrapper picks
 * the key with crypto_sealed_key_version.
 */
#define CRYPTO_KEYRING_MAX 8

struct crypto_keyring {
	size_t n;
	uint32_t version[CRYPTO_KEYRING_MAX];
	uint8_t key[CRYPTO_KEYRING_MAX][CRYPTO_KEY_LEN];
};

/* Load a key ring file (either format) into ring; on failure ring is wiped. */
int crypto_keyring_load(const char *path, struct crypto_keyring *ring, const char **error_r);
/* Write ring in the ring format to path atomically (a 0600 temporary file in the
 * same directory, fsync'd, renamed over path). */
int crypto_keyring_save(const char *path, const struct crypto_keyring *ring,
			const char **error_r);
/* The key of version, or NULL. */
const uint8_t *crypto_keyring_find(const struct crypto_keyring *ring, uint32_t version);
/* The highest version's key (and version), or NULL for an empty ring. */
const uint8_t *crypto_keyring_current(const struct crypto_keyring *ring, uint32_t *version_r);
/* Add a key of version (not present yet, ring not full); 0 or -1. */
int crypto_keyring_add(struct crypto_keyring *ring, uint32_t version,
		       const uint8_t key[CRYPTO_KEY_LEN]);
/* Remove version (wiping its key); 0, or -1 if absent. */
int crypto_keyring_remove(struct crypto_keyring *ring, uint32_t version);
/* Unwrap a wrapped DEK with the ring key whose version its header names. */
int crypto_keyring_unwrap(const struct crypto_keyring *ring, const char *context,
			  const uint8_t *wrapped, size_t wrapped_len, uint8_t dek[CRYPTO_KEY_LEN],
			  uint32_t *kek_version_r);
/* Wipe the whole ring. NULL-safe. */
void crypto_keyring_wipe(struct crypto_keyring *ring);

/*
 * Blind indexes across DEK rotations. crypto_blind_index(dek, …) is HMAC under
 * HKDF(dek, "ward blind index " purpose) = HKDF-Expand(PRK, info) with
 * PRK = HKDF-Extract(no salt, dek). The PRK ("blind-index root") gives every
 * purpose's index key but, being one-way, opens nothing sealed under the DEK; kept
 * (wrapped) when the DEK is rotated and destroyed, it keeps every index valid.
 */
/* The blind-index root of dek. */
int crypto_blind_root(const uint8_t dek[CRYPTO_KEY_LEN], uint8_t root[CRYPTO_KEY_LEN]);
/* The same index as crypto_blind_index(dek, …) from the root of dek. */
int crypto_blind_index_root(const uint8_t root[CRYPTO_KEY_LEN], const char *purpose,
			    const void *value, size_t value_len, char out_hex[65]);

#endif
