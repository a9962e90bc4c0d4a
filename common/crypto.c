/*
 * crypto — the few primitives Ward uses, on OpenSSL 3.
 *
 * AES-256-GCM through EVP, a versioned sealed format whose header (version byte and
 * key version) is bound into the associated data, key wrapping as a seal with the
 * context in the associated data, HKDF/HMAC/SHA-256 through EVP_KDF/EVP_MAC/EVP_Digest,
 * and small helpers (hex, constant-time compare, wipe, key files). Nothing here logs;
 * every secret intermediate is cleansed before it goes out of scope.
 */
#include "crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "log.h"

#define WRAP_AAD_PREFIX "ward-dek|"
#define BLIND_INFO_PREFIX "ward blind index "
/* Key files are 32 raw bytes or 64 hex digits plus an optional newline (or CRLF). */
#define KEY_FILE_MAX 66

/* Fill buf with len secure random bytes. */
int crypto_random(void *buf, size_t len)
{
	uint8_t *p = buf;

	if (len > 0 && buf == NULL)
		return -1;
	/* RAND_bytes takes an int: feed it in bounded chunks. */
	while (len > 0) {
		size_t chunk = len > (1u << 20) ? (1u << 20) : len;

		if (RAND_bytes(p, (int)chunk) != 1)
			return -1;
		p += chunk;
		len -= chunk;
	}
	return 0;
}

/* Wipe n bytes at p (NULL-safe). */
void crypto_wipe(void *p, size_t n)
{
	if (p != NULL && n > 0)
		OPENSSL_cleanse(p, n);
}

/* 1 if the len bytes at a and b are equal, 0 if not, in time depending only on len. */
int crypto_ct_equal(const void *a, const void *b, size_t len)
{
	if (len == 0)
		return 1;
	return CRYPTO_memcmp(a, b, len) == 0;
}

/* Feed len bytes of aad into a GCM context, in int-sized chunks. */
static int gcm_aad(EVP_CIPHER_CTX *ctx, const void *aad, size_t aad_len, int enc)
{
	const uint8_t *p = aad;
	int outl;

	while (aad_len > 0) {
		size_t chunk = aad_len > INT_MAX ? INT_MAX : aad_len;

		if (enc ? EVP_EncryptUpdate(ctx, NULL, &outl, p, (int)chunk) != 1
			: EVP_DecryptUpdate(ctx, NULL, &outl, p, (int)chunk) != 1)
			return -1;
		p += chunk;
		aad_len -= chunk;
	}
	return 0;
}

/* Encrypt or decrypt len bytes from in to out, in int-sized chunks. */
static int gcm_data(EVP_CIPHER_CTX *ctx, const void *in, size_t len, uint8_t *out, int enc)
{
	const uint8_t *p = in;
	int outl;

	while (len > 0) {
		size_t chunk = len > (INT_MAX / 2) ? (INT_MAX / 2) : len;

		if (enc ? EVP_EncryptUpdate(ctx, out, &outl, p, (int)chunk) != 1
			: EVP_DecryptUpdate(ctx, out, &outl, p, (int)chunk) != 1)
			return -1;
		if ((size_t)outl != chunk)
			return -1;
		p += chunk;
		out += chunk;
		len -= chunk;
	}
	return 0;
}

/* AES-256-GCM encrypt pt (pt_len bytes) into ct with a 12-byte nonce; tag gets 16 bytes. */
int crypto_gcm_encrypt(const uint8_t key[CRYPTO_KEY_LEN], const uint8_t nonce[CRYPTO_NONCE_LEN],
		       const void *aad, size_t aad_len, const void *pt, size_t pt_len, uint8_t *ct,
		       uint8_t tag[CRYPTO_TAG_LEN])
{
	EVP_CIPHER_CTX *ctx = NULL;
	uint8_t final_buf[16];
	int outl, ret = -1;

	if (key == NULL || nonce == NULL || tag == NULL || (aad_len > 0 && aad == NULL) ||
	    (pt_len > 0 && (pt == NULL || ct == NULL)))
		return -1;
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL)
		goto out;
	if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, CRYPTO_NONCE_LEN, NULL) != 1 ||
	    EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) != 1)
		goto out;
	if (gcm_aad(ctx, aad, aad_len, 1) != 0 || gcm_data(ctx, pt, pt_len, ct, 1) != 0)
		goto out;
	if (EVP_EncryptFinal_ex(ctx, final_buf, &outl) != 1 || outl != 0)
		goto out;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CRYPTO_TAG_LEN, tag) != 1)
		goto out;
	ret = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	if (ret != 0 && ct != NULL)
		crypto_wipe(ct, pt_len);
	return ret;
}

/* AES-256-GCM decrypt ct into pt; -1 (pt wiped) if the tag does not verify. */
int crypto_gcm_decrypt(const uint8_t key[CRYPTO_KEY_LEN], const uint8_t nonce[CRYPTO_NONCE_LEN],
		       const void *aad, size_t aad_len, const void *ct, size_t ct_len,
		       const uint8_t tag[CRYPTO_TAG_LEN], uint8_t *pt)
{
	EVP_CIPHER_CTX *ctx = NULL;
	uint8_t final_buf[16];
	uint8_t tag_copy[CRYPTO_TAG_LEN];
	int outl, ret = -1;

	if (key == NULL || nonce == NULL || tag == NULL || (aad_len > 0 && aad == NULL) ||
	    (ct_len > 0 && (ct == NULL || pt == NULL)))
		return -1;
	/* The ctrl takes a non-const pointer. */
	memcpy(tag_copy, tag, CRYPTO_TAG_LEN);
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL)
		goto out;
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, CRYPTO_NONCE_LEN, NULL) != 1 ||
	    EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) != 1)
		goto out;
	if (gcm_aad(ctx, aad, aad_len, 0) != 0 || gcm_data(ctx, ct, ct_len, pt, 0) != 0)
		goto out;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CRYPTO_TAG_LEN, tag_copy) != 1)
		goto out;
	if (EVP_DecryptFinal_ex(ctx, final_buf, &outl) != 1 || outl != 0)
		goto out;
	ret = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	if (ret != 0 && pt != NULL)
		crypto_wipe(pt, ct_len);
	return ret;
}

/* Build the full associated data: version byte, key version (BE), then the caller's aad.
 * *full_r is malloc'd. */
static int seal_aad(uint32_t key_version, const void *aad, size_t aad_len, uint8_t **full_r,
		    size_t *full_len_r)
{
	uint8_t *full;

	if (aad_len > SIZE_MAX - 5)
		return -1;
	if ((full = malloc(5 + aad_len)) == NULL)
		return -1;
	full[0] = CRYPTO_SEAL_VERSION;
	full[1] = (uint8_t)(key_version >> 24);
	full[2] = (uint8_t)(key_version >> 16);
	full[3] = (uint8_t)(key_version >> 8);
	full[4] = (uint8_t)key_version;
	if (aad_len > 0)
		memcpy(full + 5, aad, aad_len);
	*full_r = full;
	*full_len_r = 5 + aad_len;
	return 0;
}

/* Seal pt into a fresh malloc'd buffer (header, ciphertext, tag) owned by the caller. */
int crypto_seal(const uint8_t key[CRYPTO_KEY_LEN], uint32_t key_version, const void *aad,
		size_t aad_len, const void *pt, size_t pt_len, uint8_t **out_r, size_t *out_len_r)
{
	uint8_t *out = NULL, *full_aad = NULL;
	size_t full_len = 0, out_len;
	int ret = -1;

	if (out_r == NULL || out_len_r == NULL)
		return -1;
	*out_r = NULL;
	*out_len_r = 0;
	if ((aad_len > 0 && aad == NULL) || (pt_len > 0 && pt == NULL) ||
	    pt_len > SIZE_MAX - CRYPTO_SEAL_OVERHEAD)
		return -1;
	out_len = pt_len + CRYPTO_SEAL_OVERHEAD;
	if ((out = malloc(out_len)) == NULL)
		goto out;
	if (seal_aad(key_version, aad, aad_len, &full_aad, &full_len) != 0)
		goto out;
	memcpy(out, full_aad, 5);
	if (crypto_random(out + 5, CRYPTO_NONCE_LEN) != 0)
		goto out;
	if (crypto_gcm_encrypt(key, out + 5, full_aad, full_len, pt, pt_len,
			       out + CRYPTO_SEAL_HEADER, out + CRYPTO_SEAL_HEADER + pt_len) != 0)
		goto out;
	*out_r = out;
	*out_len_r = out_len;
	out = NULL;
	ret = 0;
out:
	free(full_aad);
	if (out != NULL) {
		crypto_wipe(out, out_len);
		free(out);
	}
	return ret;
}

/* Read the key version of a sealed buffer without opening it. */
int crypto_sealed_key_version(const uint8_t *in, size_t in_len, uint32_t *key_version_r)
{
	if (in == NULL || key_version_r == NULL || in_len < CRYPTO_SEAL_OVERHEAD ||
	    in[0] != CRYPTO_SEAL_VERSION)
		return -1;
	*key_version_r = (uint32_t)in[1] << 24 | (uint32_t)in[2] << 16 | (uint32_t)in[3] << 8 |
			 (uint32_t)in[4];
	return 0;
}

/* Open a sealed buffer into a malloc'd, NUL-terminated plaintext owned by the caller. */
int crypto_open(const uint8_t key[CRYPTO_KEY_LEN], const void *aad, size_t aad_len,
		const uint8_t *in, size_t in_len, uint8_t **out_r, size_t *out_len_r,
		uint32_t *key_version_r)
{
	uint8_t *out = NULL, *full_aad = NULL;
	size_t full_len = 0, pt_len = 0;
	uint32_t kv;
	int ret = -1;

	if (out_r == NULL || out_len_r == NULL)
		return -1;
	*out_r = NULL;
	*out_len_r = 0;
	if (aad_len > 0 && aad == NULL)
		return -1;
	if (crypto_sealed_key_version(in, in_len, &kv) != 0)
		return -1;
	pt_len = in_len - CRYPTO_SEAL_OVERHEAD;
	if ((out = malloc(pt_len + 1)) == NULL)
		goto out;
	if (seal_aad(kv, aad, aad_len, &full_aad, &full_len) != 0)
		goto out;
	if (crypto_gcm_decrypt(key, in + 5, full_aad, full_len, in + CRYPTO_SEAL_HEADER, pt_len,
			       in + CRYPTO_SEAL_HEADER + pt_len, out) != 0)
		goto out;
	out[pt_len] = '\0';
	*out_r = out;
	*out_len_r = pt_len;
	if (key_version_r != NULL)
		*key_version_r = kv;
	out = NULL;
	ret = 0;
out:
	free(full_aad);
	if (out != NULL) {
		crypto_wipe(out, pt_len + 1);
		free(out);
	}
	return ret;
}

/* Build "ward-dek|" + context as a malloc'd buffer (not NUL-terminated in *len_r). */
static int wrap_aad(const char *context, char **aad_r, size_t *len_r)
{
	size_t plen = sizeof(WRAP_AAD_PREFIX) - 1, clen;
	char *aad;

	if (context == NULL)
		return -1;
	clen = strlen(context);
	if (clen > SIZE_MAX - plen - 1 || (aad = malloc(plen + clen + 1)) == NULL)
		return -1;
	memcpy(aad, WRAP_AAD_PREFIX, plen);
	memcpy(aad + plen, context, clen + 1);
	*aad_r = aad;
	*len_r = plen + clen;
	return 0;
}

/* Wrap dek under kek bound to context; *out_r malloc'd, owned by the caller. */
int crypto_wrap_key(const uint8_t kek[CRYPTO_KEY_LEN], uint32_t kek_version, const char *context,
		    const uint8_t dek[CRYPTO_KEY_LEN], uint8_t **out_r, size_t *out_len_r)
{
	char *aad = NULL;
	size_t aad_len = 0;
	int ret;

	if (out_r != NULL)
		*out_r = NULL;
	if (dek == NULL || wrap_aad(context, &aad, &aad_len) != 0)
		return -1;
	ret = crypto_seal(kek, kek_version, aad, aad_len, dek, CRYPTO_KEY_LEN, out_r, out_len_r);
	free(aad);
	return ret;
}

/* Unwrap a wrapped DEK for context into dek; any tampering or wrong context fails. */
int crypto_unwrap_key(const uint8_t kek[CRYPTO_KEY_LEN], const char *context,
		      const uint8_t *wrapped, size_t wrapped_len, uint8_t dek[CRYPTO_KEY_LEN],
		      uint32_t *kek_version_r)
{
	char *aad = NULL;
	size_t aad_len = 0, pt_len = 0;
	uint8_t *pt = NULL;
	int ret = -1;

	if (dek == NULL || wrapped_len != CRYPTO_KEY_LEN + CRYPTO_SEAL_OVERHEAD)
		return -1;
	if (wrap_aad(context, &aad, &aad_len) != 0)
		return -1;
	if (crypto_open(kek, aad, aad_len, wrapped, wrapped_len, &pt, &pt_len, kek_version_r) != 0)
		goto out;
	if (pt_len != CRYPTO_KEY_LEN)
		goto out;
	memcpy(dek, pt, CRYPTO_KEY_LEN);
	ret = 0;
out:
	if (pt != NULL) {
		crypto_wipe(pt, pt_len + 1);
		free(pt);
	}
	free(aad);
	return ret;
}

/* HKDF-SHA256 (extract and expand) of ikm with optional salt and info into out_len bytes. */
int crypto_hkdf(const uint8_t *ikm, size_t ikm_len, const void *salt, size_t salt_len,
		const char *info, uint8_t *out, size_t out_len)
{
	EVP_KDF *kdf = NULL;
	EVP_KDF_CTX *kctx = NULL;
	OSSL_PARAM params[5], *p = params;
	int ret = -1;

	if (out == NULL || out_len == 0 || out_len > 255 * 32 || (ikm_len > 0 && ikm == NULL) ||
	    (salt_len > 0 && salt == NULL))
		return -1;
	if ((kdf = EVP_KDF_fetch(NULL, "HKDF", NULL)) == NULL ||
	    (kctx = EVP_KDF_CTX_new(kdf)) == NULL)
		goto out;
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
	if (salt != NULL && salt_len > 0)
		*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt,
							 salt_len);
	if (info != NULL && info[0] != '\0')
		*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info,
							 strlen(info));
	*p = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(kctx, out, out_len, params) != 1)
		goto out;
	ret = 0;
out:
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	if (ret != 0)
		crypto_wipe(out, out_len);
	return ret;
}

/* HMAC-SHA256 of msg under key into out. */
int crypto_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t msg_len,
		       uint8_t out[32])
{
	EVP_MAC *mac = NULL;
	EVP_MAC_CTX *mctx = NULL;
	OSSL_PARAM params[2];
	size_t outl = 0;
	int ret = -1;

	if (out == NULL || (key_len > 0 && key == NULL) || (msg_len > 0 && msg == NULL))
		return -1;
	if ((mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL ||
	    (mctx = EVP_MAC_CTX_new(mac)) == NULL)
		goto out;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	/* An empty key is legal HMAC; OpenSSL wants a non-NULL pointer for it. */
	if (EVP_MAC_init(mctx, key_len > 0 ? key : (const uint8_t *)"", key_len, params) != 1 ||
	    EVP_MAC_update(mctx, msg_len > 0 ? msg : "", msg_len) != 1 ||
	    EVP_MAC_final(mctx, out, &outl, 32) != 1 || outl != 32)
		goto out;
	ret = 0;
out:
	EVP_MAC_CTX_free(mctx);
	EVP_MAC_free(mac);
	return ret;
}

/* SHA-256 of msg into out. */
int crypto_sha256(const void *msg, size_t len, uint8_t out[32])
{
	unsigned int outl = 0;

	if (out == NULL || (len > 0 && msg == NULL))
		return -1;
	if (EVP_Digest(len > 0 ? msg : "", len, out, &outl, EVP_sha256(), NULL) != 1 || outl != 32)
		return -1;
	return 0;
}

/* Hex of HMAC-SHA256(HKDF(dek, "ward blind index " purpose), value) into out_hex. */
int crypto_blind_index(const uint8_t dek[CRYPTO_KEY_LEN], const char *purpose, const void *value,
		       size_t value_len, char out_hex[65])
{
	char info[128];
	uint8_t subkey[32], mac[32];
	int n, ret = -1;

	if (dek == NULL || purpose == NULL || out_hex == NULL)
		return -1;
	n = snprintf(info, sizeof(info), "%s%s", BLIND_INFO_PREFIX, purpose);
	if (n < 0 || (size_t)n >= sizeof(info))
		return -1;
	if (crypto_hkdf(dek, CRYPTO_KEY_LEN, NULL, 0, info, subkey, sizeof(subkey)) != 0 ||
	    crypto_hmac_sha256(subkey, sizeof(subkey), value, value_len, mac) != 0)
		goto out;
	crypto_hex(mac, sizeof(mac), out_hex);
	ret = 0;
out:
	crypto_wipe(subkey, sizeof(subkey));
	crypto_wipe(mac, sizeof(mac));
	return ret;
}

/* Lower-case hex of n bytes of in into out (2n+1 bytes). */
void crypto_hex(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0x0f];
	}
	out[2 * n] = '\0';
}

/* Value of one hex digit, or -1. */
static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode exactly 2*out_len hex digits (and nothing more) into out. */
int crypto_unhex(const char *hex, uint8_t *out, size_t out_len)
{
	size_t i;

	if (hex == NULL || out == NULL)
		return -1;
	for (i = 0; i < out_len; i++) {
		int hi, lo;

		if ((hi = hex_digit(hex[2 * i])) < 0 || (lo = hex_digit(hex[2 * i + 1])) < 0) {
			crypto_wipe(out, out_len);
			return -1;
		}
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	if (hex[2 * out_len] != '\0') {
		crypto_wipe(out, out_len);
		return -1;
	}
	return 0;
}

/* A random 128-bit id as 32 lower-case hex digits. */
int crypto_random_id(char out[33])
{
	uint8_t raw[16];

	if (out == NULL || crypto_random(raw, sizeof(raw)) != 0)
		return -1;
	crypto_hex(raw, sizeof(raw), out);
	return 0;
}

/* Load a key file of 32 raw bytes or 64 hex digits with an optional trailing newline. */
int crypto_key_load(const char *path, uint8_t key[CRYPTO_KEY_LEN], const char **error_r)
{
	/* One byte more than the largest valid file, to detect oversize files. */
	char buf[KEY_FILE_MAX + 2];
	size_t len = 0;
	ssize_t r;
	int fd = -1, ret = -1;
	const char *err = NULL;

	if (path == NULL || key == NULL) {
		err = "no key file";
		goto out;
	}
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		err = errno == ENOENT ? "key file does not exist" : "cannot open key file";
		goto out;
	}
	while (len < sizeof(buf)) {
		r = read(fd, buf + len, sizeof(buf) - len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			err = "cannot read key file";
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	if (len > KEY_FILE_MAX) {
		err = "key file too large (want 32 raw bytes or 64 hex digits)";
		goto out;
	}
	if (len == CRYPTO_KEY_LEN) {
		memcpy(key, buf, CRYPTO_KEY_LEN);
		ret = 0;
		goto out;
	}
	/* Hex form: strip one "\n" or "\r\n". */
	if (len > 0 && buf[len - 1] == '\n') {
		len--;
		if (len > 0 && buf[len - 1] == '\r')
			len--;
	}
	if (len != 2 * CRYPTO_KEY_LEN) {
		err = "key file has the wrong size (want 32 raw bytes or 64 hex digits)";
		goto out;
	}
	buf[len] = '\0';
	if (crypto_unhex(buf, key, CRYPTO_KEY_LEN) != 0) {
		err = "key file is not 64 hex digits";
		goto out;
	}
	ret = 0;
out:
	if (fd >= 0)
		(void)close(fd);
	crypto_wipe(buf, sizeof(buf));
	if (ret != 0 && key != NULL)
		crypto_wipe(key, CRYPTO_KEY_LEN);
	if (error_r != NULL)
		*error_r = err;
	return ret;
}

/* ------------------------------------------------------------ key rings */

#define KEYRING_FILE_MAX 2048
#define KEYRING_TAG "ward-kek "

void crypto_keyring_wipe(struct crypto_keyring *ring)
{
	crypto_wipe(ring, ring != NULL ? sizeof *ring : 0);
}

/* The key of version, or NULL. */
const uint8_t *crypto_keyring_find(const struct crypto_keyring *ring, uint32_t version)
{
	if (ring == NULL)
		return NULL;
	for (size_t i = 0; i < ring->n && i < CRYPTO_KEYRING_MAX; i++)
		if (ring->version[i] == version)
			return ring->key[i];
	return NULL;
}

/* The highest version's key, or NULL. */
const uint8_t *crypto_keyring_current(const struct crypto_keyring *ring, uint32_t *version_r)
{
	size_t best = SIZE_MAX;

	if (ring == NULL)
		return NULL;
	for (size_t i = 0; i < ring->n && i < CRYPTO_KEYRING_MAX; i++)
		if (best == SIZE_MAX || ring->version[i] > ring->version[best])
			best = i;
	if (best == SIZE_MAX)
		return NULL;
	if (version_r != NULL)
		*version_r = ring->version[best];
	return ring->key[best];
}

/* Add a new version to the ring. */
int crypto_keyring_add(struct crypto_keyring *ring, uint32_t version,
		       const uint8_t key[CRYPTO_KEY_LEN])
{
	if (ring == NULL || key == NULL || version == 0 || version > INT32_MAX ||
	    ring->n >= CRYPTO_KEYRING_MAX || crypto_keyring_find(ring, version) != NULL)
		return -1;
	ring->version[ring->n] = version;
	memcpy(ring->key[ring->n], key, CRYPTO_KEY_LEN);
	ring->n++;
	return 0;
}

/* Remove a version from the ring, wiping its key. */
int crypto_keyring_remove(struct crypto_keyring *ring, uint32_t version)
{
	size_t i;

	if (ring == NULL)
		return -1;
	for (i = 0; i < ring->n; i++)
		if (ring->version[i] == version)
			break;
	if (i == ring->n)
		return -1;
	for (; i + 1 < ring->n; i++) {
		ring->version[i] = ring->version[i + 1];
		memcpy(ring->key[i], ring->key[i + 1], CRYPTO_KEY_LEN);
	}
	ring->n--;
	ring->version[ring->n] = 0;
	crypto_wipe(ring->key[ring->n], CRYPTO_KEY_LEN);
	return 0;
}

/* Parse the ring format (NUL-terminated text) into ring. */
static int keyring_parse(char *text, struct crypto_keyring *ring, const char **error_r)
{
	char *line = text, *nl;
	uint8_t key[CRYPTO_KEY_LEN];

	while (*line != '\0') {
		char *end = NULL, *hex;
		unsigned long v;

		if ((nl = strchr(line, '\n')) == NULL) {
			*error_r = "key ring: the last line has no newline";
			return -1;
		}
		*nl = '\0';
		if (strncmp(line, KEYRING_TAG, sizeof(KEYRING_TAG) - 1) != 0) {
			*error_r = "key ring: a line does not start with \"ward-kek \"";
			return -1;
		}
		hex = line + sizeof(KEYRING_TAG) - 1;
		if (*hex < '1' || *hex > '9') {
			*error_r = "key ring: bad version";
			return -1;
		}
		errno = 0;
		v = strtoul(hex, &end, 10);
		if (errno != 0 || v == 0 || v > INT32_MAX || *end != ' ') {
			*error_r = "key ring: bad version";
			return -1;
		}
		if (crypto_unhex(end + 1, key, sizeof key) != 0) {
			*error_r = "key ring: a key is not 64 hex digits";
			return -1;
		}
		if (crypto_keyring_find(ring, (uint32_t)v) != NULL) {
			crypto_wipe(key, sizeof key);
			*error_r = "key ring: a version appears twice";
			return -1;
		}
		if (crypto_keyring_add(ring, (uint32_t)v, key) != 0) {
			crypto_wipe(key, sizeof key);
			*error_r = "key ring: too many keys";
			return -1;
		}
		crypto_wipe(key, sizeof key);
		line = nl + 1;
	}
	if (ring->n == 0) {
		*error_r = "key ring: no key";
		return -1;
	}
	return 0;
}

/* Load a key ring (legacy single key = version 1, or the ring format). */
int crypto_keyring_load(const char *path, struct crypto_keyring *ring, const char **error_r)
{
	char buf[KEYRING_FILE_MAX + 1];
	const char *err = NULL;
	size_t len = 0;
	ssize_t r;
	int fd = -1, ret = -1;

	if (ring == NULL || path == NULL) {
		err = "no key file";
		goto out;
	}
	crypto_keyring_wipe(ring);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		err = errno == ENOENT ? "key file does not exist" : "cannot open key file";
		goto out;
	}
	while (len < sizeof(buf) - 1) {
		r = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			err = "cannot read key file";
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	buf[len] = '\0';
	if (len >= sizeof(KEYRING_TAG) - 1 &&
	    memcmp(buf, KEYRING_TAG, sizeof(KEYRING_TAG) - 1) == 0 && len > KEY_FILE_MAX) {
		if (len >= sizeof(buf) - 1) {
			err = "key ring file too large";
			goto out;
		}
		if (memchr(buf, '\0', len) != NULL) {
			err = "key ring: a NUL byte";
			goto out;
		}
		ret = keyring_parse(buf, ring, &err);
		goto out;
	}
	/* Legacy: one key, version 1 (crypto_key_load checks the size and format). */
	ring->version[0] = 1;
	if (crypto_key_load(path, ring->key[0], &err) == 0) {
		ring->n = 1;
		ret = 0;
	}
out:
	if (fd >= 0)
		(void)close(fd);
	crypto_wipe(buf, sizeof(buf));
	if (ret != 0)
		crypto_keyring_wipe(ring);
	if (error_r != NULL)
		*error_r = err;
	return ret;
}


/* Save the ring atomically: temporary file beside path, fsync, rename. */
int crypto_keyring_save(const char *path, const struct crypto_keyring *ring,
			const char **error_r)
{
	char tmp[4096] = "", text[KEYRING_FILE_MAX], hex[2 * CRYPTO_KEY_LEN + 1];
	struct stat st;
	const char *err = "cannot write the key ring";
	size_t len = 0;
	int fd = -1, ret = -1, n;

	if (path == NULL || ring == NULL || ring->n == 0 || ring->n > CRYPTO_KEYRING_MAX) {
		err = "nothing to save";
		goto out;
	}
	n = snprintf(tmp, sizeof tmp, "%s.new", path);
	if (n < 0 || (size_t)n >= sizeof tmp) {
		tmp[0] = '\0';
		err = "key file path too long";
		goto out;
	}
	for (size_t i = 0; i < ring->n; i++) {
		crypto_hex(ring->key[i], CRYPTO_KEY_LEN, hex);
		n = snprintf(text + len, sizeof text - len, "%s%u %s\n", KEYRING_TAG,
			     ring->version[i], hex);
		if (n < 0 || (size_t)n >= sizeof text - len)
			goto out;
		len += (size_t)n;
	}
	(void)unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		goto out;
	/* The daemons read the file as its owner: a replacement keeps the owner, group
	 * and mode (never more than 0640) of the file it replaces. */
	if (stat(path, &st) == 0) {
		if ((st.st_uid != geteuid() || st.st_gid != getegid()) &&
		    fchown(fd, st.st_uid, st.st_gid) < 0) {
			err = "cannot give the new key ring the old file's owner";
			goto out;
		}
		if (fchmod(fd, st.st_mode & 0640) < 0)
			goto out;
	}
	if (log_write_all(fd, text, len) < 0 || fsync(fd) < 0)
		goto out;
	if (close(fd) < 0) {
		fd = -1;
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) < 0)
		goto out;
	ret = 0;
out:
	if (fd >= 0)
		(void)close(fd);
	if (ret != 0 && tmp[0] != '\0')
		(void)unlink(tmp);
	crypto_wipe(text, sizeof text);
	crypto_wipe(hex, sizeof hex);
	if (error_r != NULL)
		*error_r = ret == 0 ? NULL : err;
	return ret;
}

/* Unwrap with the ring key named by the wrapped key's header. */
int crypto_keyring_unwrap(const struct crypto_keyring *ring, const char *context,
			  const uint8_t *wrapped, size_t wrapped_len, uint8_t dek[CRYPTO_KEY_LEN],
			  uint32_t *kek_version_r)
{
	const uint8_t *kek;
	uint32_t v;

	if (crypto_sealed_key_version(wrapped, wrapped_len, &v) != 0 ||
	    (kek = crypto_keyring_find(ring, v)) == NULL)
		return -1;
	return crypto_unwrap_key(kek, context, wrapped, wrapped_len, dek, kek_version_r);
}

/* ------------------------------------------------------- blind-index roots */

/* One HKDF step (mode "EXTRACT_ONLY" or "EXPAND_ONLY") into 32 bytes. */
static int hkdf_step(const char *mode, const uint8_t key[CRYPTO_KEY_LEN], const char *info,
		     uint8_t out[CRYPTO_KEY_LEN])
{
	EVP_KDF *kdf = NULL;
	EVP_KDF_CTX *kctx = NULL;
	OSSL_PARAM params[5], *p = params;
	int ret = -1;

	if ((kdf = EVP_KDF_fetch(NULL, "HKDF", NULL)) == NULL ||
	    (kctx = EVP_KDF_CTX_new(kdf)) == NULL)
		goto out;
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MODE, (char *)mode, 0);
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, CRYPTO_KEY_LEN);
	if (info != NULL)
		*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info,
							 strlen(info));
	*p = OSSL_PARAM_construct_end();
	if (EVP_KDF_derive(kctx, out, CRYPTO_KEY_LEN, params) != 1)
		goto out;
	ret = 0;
out:
	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	if (ret != 0)
		crypto_wipe(out, CRYPTO_KEY_LEN);
	return ret;
}

/* PRK = HKDF-Extract(no salt, dek). */
int crypto_blind_root(const uint8_t dek[CRYPTO_KEY_LEN], uint8_t root[CRYPTO_KEY_LEN])
{
	if (dek == NULL || root == NULL)
		return -1;
	return hkdf_step("EXTRACT_ONLY", dek, NULL, root);
}

/* Hex of HMAC-SHA256(HKDF-Expand(root, "ward blind index " purpose), value). */
int crypto_blind_index_root(const uint8_t root[CRYPTO_KEY_LEN], const char *purpose,
			    const void *value, size_t value_len, char out_hex[65])
{
	char info[128];
	uint8_t subkey[32], mac[32];
	int n, ret = -1;

	if (root == NULL || purpose == NULL || out_hex == NULL)
		return -1;
	n = snprintf(info, sizeof(info), "%s%s", BLIND_INFO_PREFIX, purpose);
	if (n < 0 || (size_t)n >= sizeof(info))
		return -1;
	if (hkdf_step("EXPAND_ONLY", root, info, subkey) != 0 ||
	    crypto_hmac_sha256(subkey, sizeof(subkey), value, value_len, mac) != 0)
		goto out;
	crypto_hex(mac, sizeof(mac), out_hex);
	ret = 0;
out:
	crypto_wipe(subkey, sizeof(subkey));
	crypto_wipe(mac, sizeof(mac));
	return ret;
}
