/*
 * auth_totp — RFC 6238 time-based one-time passwords (HMAC-SHA-1, 6 digits, 30 s
 * steps) on RFC 4226 HOTP, the RFC 4648 base32 the secret is shown in, and the
 * otpauth:// URI authenticator apps scan.
 *
 * A code is accepted once: the caller stores the step of the last accepted code
 * and auth_totp_verify refuses that step and every earlier one.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/hmac.h>

#include "auth.h"
#include "crypto.h"

static const char auth_b32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/* Base32 encode without padding. */
int auth_base32_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
	size_t need = (n * 8 + 4) / 5, o = 0;
	uint32_t buf = 0;
	int bits = 0;

	if (need + 1 > cap)
		return -1;
	for (size_t i = 0; i < n; i++) {
		buf = (buf << 8) | in[i];
		bits += 8;
		while (bits >= 5) {
			out[o++] = auth_b32_alphabet[(buf >> (bits - 5)) & 31];
			bits -= 5;
		}
	}
	if (bits > 0)
		out[o++] = auth_b32_alphabet[(buf << (5 - bits)) & 31];
	out[o] = '\0';
	return 0;
}

/* Base32 decode, strict. */
int auth_base32_decode(const char *in, uint8_t *out, size_t cap, size_t *n_r)
{
	size_t len = strlen(in), o = 0;
	uint32_t buf = 0;
	int bits = 0;

	/* 8 chars hold 5 bytes; a remainder of 1, 3 or 6 chars is never produced */
	if (len % 8 == 1 || len % 8 == 3 || len % 8 == 6)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int c = (unsigned char)in[i], v;

		if (c >= 'a' && c <= 'z')
			c -= 'a' - 'A';
		if (c >= 'A' && c <= 'Z')
			v = c - 'A';
		else if (c >= '2' && c <= '7')
			v = c - '2' + 26;
		else
			return -1;
		buf = (buf << 5) | (uint32_t)v;
		bits += 5;
		if (bits >= 8) {
			if (o >= cap)
				return -1;
			out[o++] = (uint8_t)(buf >> (bits - 8));
			bits -= 8;
		}
	}
	if (bits > 0 && (buf & ((1u << bits) - 1)) != 0)
		return -1;
	*n_r = o;
	return 0;
}

/* RFC 4226 §5.3: HMAC-SHA-1 of the big-endian counter, dynamic truncation. */
int auth_hotp(const uint8_t *key, size_t key_len, uint64_t counter, uint32_t *code_r)
{
	uint8_t msg[8], mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	uint32_t bin;
	int off;

	for (int i = 7; i >= 0; i--) {
		msg[i] = (uint8_t)(counter & 0xff);
		counter >>= 8;
	}
	if (HMAC(EVP_sha1(), key, (int)key_len, msg, sizeof msg, mac, &mac_len) == NULL ||
	    mac_len != 20)
		return -1;
	off = mac[19] & 0x0f;
	bin = ((uint32_t)(mac[off] & 0x7f) << 24) | ((uint32_t)mac[off + 1] << 16) |
	      ((uint32_t)mac[off + 2] << 8) | (uint32_t)mac[off + 3];
	*code_r = bin % 1000000;
	crypto_wipe(mac, sizeof mac);
	return 0;
}

/* Check a code against the steps around now, refusing steps already used. */
int auth_totp_verify(const uint8_t *key, size_t key_len, const char *code, int64_t now,
		     int64_t last_step, int64_t *step_r)
{
	int64_t step = now / AUTH_TOTP_PERIOD, found = -1;
	char want[8];

	if (strlen(code) != AUTH_TOTP_DIGITS || now < 0)
		return 0;
	for (int i = 0; i < AUTH_TOTP_DIGITS; i++)
		if (code[i] < '0' || code[i] > '9')
			return 0;
	/* Try every step of the window (no early exit) so timing says nothing. */
	for (int64_t s = step - AUTH_TOTP_WINDOW; s <= step + AUTH_TOTP_WINDOW; s++) {
		uint32_t c;

		if (s < 0)
			continue;
		if (auth_hotp(key, key_len, (uint64_t)s, &c) < 0)
			return -1;
		snprintf(want, sizeof want, "%06u", c);
		if (crypto_ct_equal(want, code, AUTH_TOTP_DIGITS) && s > last_step && found < 0)
			found = s;
	}
	crypto_wipe(want, sizeof want);
	if (found < 0)
		return 0;
	*step_r = found;
	return 1;
}

/* Percent-encode s (RFC 3986 unreserved kept) onto out at *o. */
static int auth_totp_pct(const char *s, char *out, size_t cap, size_t *o)
{
	static const char hex[] = "0123456789ABCDEF";

	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			if (*o + 1 >= cap)
				return -1;
			out[(*o)++] = (char)*p;
		} else {
			if (*o + 3 >= cap)
				return -1;
			out[(*o)++] = '%';
			out[(*o)++] = hex[*p >> 4];
			out[(*o)++] = hex[*p & 15];
		}
	}
	out[*o] = '\0';
	return 0;
}

/* Append a constant string. */
static int auth_totp_lit(const char *s, char *out, size_t cap, size_t *o)
{
	size_t n = strlen(s);

	if (*o + n >= cap)
		return -1;
	memcpy(out + *o, s, n + 1);
	*o += n;
	return 0;
}

/* The key URI format of Google Authenticator, understood by every TOTP app. */
int auth_totp_uri(const char *issuer, const char *account, const char *secret_b32, char *out,
		  size_t cap)
{
	size_t o = 0;

	if (cap == 0)
		return -1;
	out[0] = '\0';
	if (auth_totp_lit("otpauth://totp/", out, cap, &o) < 0 ||
	    auth_totp_pct(issuer, out, cap, &o) < 0 || auth_totp_lit(":", out, cap, &o) < 0 ||
	    auth_totp_pct(account, out, cap, &o) < 0 ||
	    auth_totp_lit("?secret=", out, cap, &o) < 0 ||
	    auth_totp_lit(secret_b32, out, cap, &o) < 0 ||
	    auth_totp_lit("&issuer=", out, cap, &o) < 0 ||
	    auth_totp_pct(issuer, out, cap, &o) < 0 ||
	    auth_totp_lit("&algorithm=SHA1&digits=6&period=30", out, cap, &o) < 0)
		return -1;
	return 0;
}
