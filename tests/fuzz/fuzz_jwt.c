/*
 * fuzz_jwt — libFuzzer target for the SSO token check (auth_jwt_verify) and its
 * strict base64url decoder.
 *
 * The input's first byte picks the key the token meets: an HS256 secret, an RSA
 * public key (RS256), or no key; the rest is the token. The clock is fixed, so a
 * seed signed with the fuzz secret (corpus/jwt) reaches the claim checks. Nothing
 * may crash, leak or read out of bounds; a token that is accepted must carry a
 * genuine HMAC of its signing input, exp after now, iat within ±5 minutes, and a
 * NUL-terminated jti and email; a decoded base64url string must re-encode to its
 * input (one encoding per byte string).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

#include "../../services/auth/auth_jwt.c"

#define FUZZ_NOW 1700000000
static const char fuzz_secret[] = "fuzz-secret-0123456789abcdef-0123456789";

/* One RSA key for the run (2048 bits: auth_jwt_pubkey_load's minimum). */
static EVP_PKEY *fuzz_rsa(void)
{
	static EVP_PKEY *pkey;

	if (pkey == NULL && (pkey = EVP_RSA_gen(2048)) == NULL)
		abort();
	return pkey;
}

/* Encode n bytes as base64url without padding (as auth_b64url_decode wants it). */
static size_t fuzz_b64url(const uint8_t *in, size_t n, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0, i;

	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = a[v >> 18 & 63];
		out[o++] = a[v >> 12 & 63];
		out[o++] = a[v >> 6 & 63];
		out[o++] = a[v & 63];
	}
	if (n - i == 1) {
		out[o++] = a[in[i] >> 2];
		out[o++] = a[(in[i] & 3) << 4];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 8 | in[i + 1];

		out[o++] = a[v >> 10 & 63];
		out[o++] = a[v >> 4 & 63];
		out[o++] = a[(v & 15) << 2];
	}
	out[o] = '\0';
	return o;
}

/* An accepted HS256 token: its last part must be the HMAC of the rest. */
static void fuzz_check_genuine(const char *token)
{
	const char *dot2 = strrchr(token, '.');
	uint8_t mac[32];
	unsigned int mac_len = 0;
	char want[64];

	if (dot2 == NULL)
		abort();
	if (HMAC(EVP_sha256(), fuzz_secret, (int)strlen(fuzz_secret), (const uint8_t *)token,
		 (size_t)(dot2 - token), mac, &mac_len) == NULL ||
	    mac_len != 32)
		abort();
	fuzz_b64url(mac, 32, want);
	if (strcmp(want, dot2 + 1) != 0)
		abort(); /* accepted without the key's signature */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct auth_jwt_key key = { 0 };
	struct auth_jwt_claims claims;
	const char *error = NULL;
	uint8_t *raw = NULL;
	size_t raw_len = 0;
	char *token, *again;

	if (size < 1 || size > AUTH_JWT_MAX + 16)
		return 0;
	if ((token = malloc(size)) == NULL)
		return 0;
	memcpy(token, data + 1, size - 1);
	token[size - 1] = '\0';
	switch (data[0] % 3) {
	case 0:
		key.alg = AUTH_JWT_HS256;
		key.secret = (const uint8_t *)fuzz_secret;
		key.secret_len = strlen(fuzz_secret);
		break;
	case 1:
		key.alg = AUTH_JWT_RS256;
		key.pub = fuzz_rsa();
		break;
	default:
		key.alg = AUTH_JWT_NONE;
		break;
	}
	if (auth_jwt_verify(&key, token, FUZZ_NOW, &claims, &error) == 0) {
		if (key.alg == AUTH_JWT_NONE || key.alg == AUTH_JWT_RS256)
			abort(); /* no key, or a signature no one here could make */
		fuzz_check_genuine(token);
		if (claims.exp <= FUZZ_NOW || claims.iat > FUZZ_NOW + AUTH_JWT_SKEW ||
		    claims.iat < FUZZ_NOW - AUTH_JWT_SKEW ||
		    memchr(claims.jti, '\0', sizeof claims.jti) == NULL || claims.jti[0] == '\0' ||
		    memchr(claims.email, '\0', sizeof claims.email) == NULL)
			abort();
	} else if (error == NULL) {
		abort(); /* a refusal always says why */
	}
	/* The decoder alone, on the whole token text. */
	if (auth_b64url_decode(token, strlen(token), &raw, &raw_len) == 0) {
		if ((again = malloc(raw_len / 3 * 4 + 5)) == NULL)
			abort();
		fuzz_b64url(raw, raw_len, again);
		if (strcmp(again, token) != 0)
			abort(); /* two encodings of the same bytes */
		free(again);
		free(raw);
	}
	free(token);
	return 0;
}
