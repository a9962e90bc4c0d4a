/*
 * auth_jwt — verification of the compact JWS tokens of JWT single sign-on
 * (RFC 7519/7515), on OpenSSL and jansson, for exactly one algorithm fixed by the
 * tenant's configuration: HS256 (shared secret) or RS256 (RSA public key).
 *
 * The classic pitfalls, each refused: "alg": "none" and algorithm switching (the
 * header's alg must equal the configured one, and the key type is fixed by it, so
 * an RS256 public key is never used as an HMAC secret); lax base64 (padding,
 * '+' '/', stray bits, whitespace); duplicate JSON keys; unknown "crit"
 * extensions; a missing or non-numeric exp/iat; tokens used outside their time.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "auth.h"
#include "crypto.h"

/* The configured algorithm's name. */
enum auth_jwt_alg auth_jwt_alg_parse(const char *name)
{
	if (name != NULL && strcmp(name, "HS256") == 0)
		return AUTH_JWT_HS256;
	if (name != NULL && strcmp(name, "RS256") == 0)
		return AUTH_JWT_RS256;
	return AUTH_JWT_NONE;
}

/* Load an RSA public key (PEM "PUBLIC KEY" or "RSA PUBLIC KEY"), ≥ 2048 bits. */
EVP_PKEY *auth_jwt_pubkey_load(const char *pem, size_t len, const char **error_r)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *pk = NULL;

	if (bio == NULL || len > 16384) {
		*error_r = "bad key";
		goto out;
	}
	pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	if (pk == NULL) {
		*error_r = "not a PEM public key";
		goto out;
	}
	if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA || EVP_PKEY_get_bits(pk) < 2048) {
		*error_r = "not an RSA key of at least 2048 bits";
		EVP_PKEY_free(pk);
		pk = NULL;
	}
out:
	BIO_free(bio);
	return pk;
}

/* Value of a base64url character, or -1. */
static int auth_b64url_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Strict base64url decode: alphabet only, no padding, canonical trailing bits. */
int auth_b64url_decode(const char *in, size_t len, uint8_t **out_r, size_t *out_len_r)
{
	uint8_t *out;
	uint32_t buf = 0;
	size_t o = 0;
	int bits = 0;

	if (len % 4 == 1)
		return -1;
	out = malloc(len * 3 / 4 + 2);
	if (out == NULL)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int v = auth_b64url_val((unsigned char)in[i]);

		if (v < 0)
			goto fail;
		buf = (buf << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			out[o++] = (uint8_t)(buf >> (bits - 8));
			bits -= 8;
		}
	}
	if (bits > 0 && (buf & ((1u << bits) - 1)) != 0)
		goto fail; /* non-canonical: the same bytes have one encoding only */
	out[o] = '\0';
	*out_r = out;
	*out_len_r = o;
	return 0;
fail:
	free(out);
	return -1;
}

/* Decode one part as a JSON object (duplicate keys refused). */
static json_t *auth_jwt_json(const char *part, size_t len)
{
	uint8_t *raw = NULL;
	size_t n;
	json_t *j;

	if (auth_b64url_decode(part, len, &raw, &n) < 0)
		return NULL;
	j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
	free(raw);
	if (j != NULL && !json_is_object(j)) {
		json_decref(j);
		j = NULL;
	}
	return j;
}

/* Check the signature over "header.payload" (signing input of sign_len bytes). */
static int auth_jwt_check_sig(const struct auth_jwt_key *key, const char *input, size_t sign_len,
			      const uint8_t *sig, size_t sig_len)
{
	uint8_t mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	EVP_MD_CTX *ctx;
	int ok = 0;

	switch (key->alg) {
	case AUTH_JWT_HS256:
		if (key->secret == NULL || key->secret_len < 32 || sig_len != 32)
			return 0;
		if (HMAC(EVP_sha256(), key->secret, (int)key->secret_len,
			 (const unsigned char *)input, sign_len, mac, &mac_len) == NULL ||
		    mac_len != 32)
			return 0;
		ok = crypto_ct_equal(mac, sig, 32);
		crypto_wipe(mac, sizeof mac);
		return ok;
	case AUTH_JWT_RS256:
		if (key->pub == NULL || EVP_PKEY_get_base_id(key->pub) != EVP_PKEY_RSA ||
		    sig_len != (size_t)EVP_PKEY_get_size(key->pub))
			return 0;
		ctx = EVP_MD_CTX_new();
		if (ctx == NULL)
			return 0;
		/* EVP_DigestVerifyInit's default RSA padding is PKCS #1 v1.5, as RS256 */
		ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key->pub) == 1 &&
		     EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)input, sign_len) ==
			     1;
		EVP_MD_CTX_free(ctx);
		return ok;
	default:
		return 0;
	}
}

/* An integer NumericDate claim; -1 if absent or not an integer. */
static int auth_jwt_int(json_t *claims, const char *name, int64_t *v)
{
	json_t *j = json_object_get(claims, name);

	if (json_is_integer(j)) {
		*v = (int64_t)json_integer_value(j);
		return 0;
	}
	if (json_is_real(j) && json_real_value(j) > 0 && json_real_value(j) < 1e12) {
		*v = (int64_t)json_real_value(j);
		return 0;
	}
	return -1;
}

/* Verify a token; see auth.h. */
int auth_jwt_verify(const struct auth_jwt_key *key, const char *token, int64_t now,
		    struct auth_jwt_claims *claims, const char **error_r)
{
	const char *dot1, *dot2, *alg;
	json_t *hdr = NULL, *body = NULL, *v;
	uint8_t *sig = NULL;
	size_t len, sig_len;
	int64_t nbf;
	int ret = -1;

	memset(claims, 0, sizeof *claims);
	len = strnlen(token, AUTH_JWT_MAX + 1);
	if (len == 0 || len > AUTH_JWT_MAX) {
		*error_r = "token empty or too long";
		return -1;
	}
	dot1 = strchr(token, '.');
	dot2 = dot1 != NULL ? strchr(dot1 + 1, '.') : NULL;
	if (dot1 == NULL || dot2 == NULL || strchr(dot2 + 1, '.') != NULL) {
		*error_r = "not a compact JWS";
		return -1;
	}
	if (key->alg == AUTH_JWT_NONE) {
		*error_r = "no SSO key configured";
		return -1;
	}
	hdr = auth_jwt_json(token, (size_t)(dot1 - token));
	if (hdr == NULL) {
		*error_r = "bad header";
		goto out;
	}
	alg = json_string_value(json_object_get(hdr, "alg"));
	if (alg == NULL || auth_jwt_alg_parse(alg) != key->alg) {
		*error_r = "algorithm not the configured one";
		goto out;
	}
	if (json_object_get(hdr, "crit") != NULL) {
		*error_r = "critical header extension";
		goto out;
	}
	v = json_object_get(hdr, "typ");
	if (v != NULL && (!json_is_string(v) || (strcasecmp(json_string_value(v), "JWT") != 0))) {
		*error_r = "typ is not JWT";
		goto out;
	}
	if (auth_b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), &sig, &sig_len) < 0 ||
	    !auth_jwt_check_sig(key, token, (size_t)(dot2 - token), sig, sig_len)) {
		*error_r = "bad signature";
		goto out;
	}
	/* Only now read the claims: nothing unsigned is trusted. */
	body = auth_jwt_json(dot1 + 1, (size_t)(dot2 - dot1 - 1));
	if (body == NULL) {
		*error_r = "bad claims";
		goto out;
	}
	if (auth_jwt_int(body, "exp", &claims->exp) < 0 || auth_jwt_int(body, "iat", &claims->iat) < 0) {
		*error_r = "exp and iat are required";
		goto out;
	}
	if (claims->exp <= now) {
		*error_r = "expired";
		goto out;
	}
	if (claims->iat > now + AUTH_JWT_SKEW || claims->iat < now - AUTH_JWT_SKEW) {
		*error_r = "iat outside ±5 minutes";
		goto out;
	}
	if (json_object_get(body, "nbf") != NULL &&
	    (auth_jwt_int(body, "nbf", &nbf) < 0 || nbf > now + AUTH_JWT_SKEW)) {
		*error_r = "not yet valid";
		goto out;
	}
	v = json_object_get(body, "jti");
	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    json_string_length(v) >= sizeof claims->jti) {
		*error_r = "jti is required";
		goto out;
	}
	memcpy(claims->jti, json_string_value(v), json_string_length(v) + 1);
	v = json_object_get(body, "email");
	if (!json_is_string(v) || json_string_length(v) < 3 ||
	    json_string_length(v) >= sizeof claims->email ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		*error_r = "email is required";
		goto out;
	}
	memcpy(claims->email, json_string_value(v), json_string_length(v) + 1);
	ret = 0;
out:
	free(sig);
	json_decref(hdr);
	json_decref(body);
	if (ret < 0)
		memset(claims, 0, sizeof *claims);
	return ret;
}
