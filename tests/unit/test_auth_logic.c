/*
 * test_auth_logic — ward-auth's pure logic: password policy and the common list,
 * base32/HOTP/TOTP (RFC 4226 and RFC 6238 vectors, codes from the real `oathtool`,
 * replay refusal), JWT verification (HS256 and RS256 tokens signed here with
 * OpenSSL; forged, expired, future, wrong-algorithm, alg "none", lax base64,
 * duplicate keys, missing claims) and CIDR allow-lists.
 *
 * The service's .c files are compiled into this test directly (they are not in
 * libward.a).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

#include "../../services/auth/auth_cidr.c"
#include "../../services/auth/auth_common_passwords.c"
#include "../../services/auth/auth_jwt.c"
#include "../../services/auth/auth_policy.c"
#include "../../services/auth/auth_totp.c"

/* ============================== policy ================================== */

static bool has_rule(const struct auth_rule_error *e, size_t n, const char *needle)
{
	for (size_t i = 0; i < n; i++)
		if (strstr(e[i].message, needle) != NULL)
			return true;
	return false;
}

static void test_policy_rules(void **state)
{
	struct auth_policy pol = auth_policy_default;
	struct auth_rule_error e[AUTH_RULES_MAX];
	size_t n;

	pol.require_symbol = true;
	n = auth_policy_check(&pol, "new_password", "Tr0ub4dor&3-horse", e);
	assert_int_equal(n, 0);
	n = auth_policy_check(&pol, "new_password", "short1!", e);
	assert_int_equal(n, 1);
	assert_true(has_rule(e, n, "min_length"));
	assert_string_equal(e[0].field, "new_password");
	n = auth_policy_check(&pol, "new_password", "abcdefghijklmnop", e);
	assert_true(has_rule(e, n, "require_digit"));
	assert_true(has_rule(e, n, "require_symbol"));
	assert_false(has_rule(e, n, "require_letter"));
	n = auth_policy_check(&pol, "new_password", "12345678901234!", e);
	assert_true(has_rule(e, n, "require_letter"));
	/* every broken rule at once */
	n = auth_policy_check(&pol, "p", "", e);
	assert_int_equal(n, 4);
	/* UTF-8: characters, not bytes */
	pol.min_length = 8;
	pol.require_digit = false;
	pol.require_symbol = false;
	n = auth_policy_check(&pol, "p", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9" "a", e);
	assert_true(has_rule(e, n, "min_length"));
	n = auth_policy_check(&pol, "p", "abc\x01" "defghijk", e);
	assert_true(has_rule(e, n, "control"));
}

static void test_policy_common(void **state)
{
	struct auth_policy pol = { 8, false, false, false, 0, 0 };
	struct auth_rule_error e[AUTH_RULES_MAX];

	assert_int_equal(auth_common_passwords_n, 10000);
	for (size_t i = 1; i < auth_common_passwords_n; i++)
		assert_true(strcmp(auth_common_passwords[i - 1], auth_common_passwords[i]) < 0);
	assert_true(auth_password_is_common("password"));
	assert_true(auth_password_is_common("PassWord"));
	assert_true(auth_password_is_common("123456"));
	assert_true(auth_password_is_common("qwerty"));
	assert_false(auth_password_is_common("correct horse battery staple 93!"));
	assert_int_equal(auth_policy_check(&pol, "p", "baseball", e), 1);
	assert_true(has_rule(e, 1, "common"));
	/* the last and the first entries are found (bsearch edges) */
	assert_true(auth_password_is_common(auth_common_passwords[0]));
	assert_true(auth_password_is_common(auth_common_passwords[auth_common_passwords_n - 1]));
}

static void test_policy_validate(void **state)
{
	struct auth_rule_error e[AUTH_RULES_MAX];
	struct auth_policy ok = auth_policy_default, bad = { 4, true, true, true, 99, -1 };
	size_t n;

	assert_int_equal(auth_policy_validate(&ok, e, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(auth_policy_validate(&bad, e, &n), -1);
	assert_int_equal(n, 3);
	assert_string_equal(e[0].field, "min_length");
	assert_string_equal(e[1].field, "history");
	assert_string_equal(e[2].field, "max_age_days");
}

/* ============================== TOTP ==================================== */

static void test_base32(void **state)
{
	uint8_t out[32];
	char enc[64];
	size_t n;

	/* RFC 4648 §10 */
	assert_int_equal(auth_base32_encode((const uint8_t *)"foobar", 6, enc, sizeof enc), 0);
	assert_string_equal(enc, "MZXW6YTBOI");
	assert_int_equal(auth_base32_decode("MZXW6YTBOI", out, sizeof out, &n), 0);
	assert_int_equal(n, 6);
	assert_memory_equal(out, "foobar", 6);
	assert_int_equal(auth_base32_decode("mzxw6ytboi", out, sizeof out, &n), 0);
	assert_int_equal(auth_base32_decode("MZXW6YTBO1", out, sizeof out, &n), -1);
	assert_int_equal(auth_base32_decode("MZXW6YTBOI======", out, sizeof out, &n), -1);
	assert_int_equal(auth_base32_decode("MZXW6YTBOJ", out, sizeof out, &n), -1); /* bits */
	assert_int_equal(auth_base32_decode("M", out, sizeof out, &n), -1);
	assert_int_equal(auth_base32_decode("MZXW6YTBOI", out, 3, &n), -1);
	assert_int_equal(auth_base32_encode((const uint8_t *)"foobar", 6, enc, 10), -1);
}

static void test_hotp_rfc4226(void **state)
{
	static const uint32_t want[10] = { 755224, 287082, 359152, 969429, 338314,
					   254676, 287922, 162583, 399871, 520489 };
	const uint8_t *key = (const uint8_t *)"12345678901234567890";
	uint32_t c;

	for (uint64_t i = 0; i < 10; i++) {
		assert_int_equal(auth_hotp(key, 20, i, &c), 0);
		assert_int_equal(c, want[i]);
	}
}

static void test_totp_rfc6238(void **state)
{
	const uint8_t *key = (const uint8_t *)"12345678901234567890";
	static const struct {
		int64_t t;
		const char *code;
	} v[] = { { 59, "287082" },
		  { 1111111109, "081804" },
		  { 1111111111, "050471" },
		  { 1234567890, "005924" },
		  { 2000000000, "279037" } };
	int64_t step;

	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
		assert_int_equal(auth_totp_verify(key, 20, v[i].code, v[i].t, 0, &step), 1);
		assert_int_equal(step, v[i].t / 30);
		/* replay: the same step is refused once recorded */
		assert_int_equal(auth_totp_verify(key, 20, v[i].code, v[i].t, step, &step), 0);
	}
	/* one step of skew accepted, two refused */
	assert_int_equal(auth_totp_verify(key, 20, "005924", 1234567890 + 30, 0, &step), 1);
	assert_int_equal(auth_totp_verify(key, 20, "005924", 1234567890 + 61, 0, &step), 0);
	/* malformed codes */
	assert_int_equal(auth_totp_verify(key, 20, "00592", 1234567890, 0, &step), 0);
	assert_int_equal(auth_totp_verify(key, 20, "0059244", 1234567890, 0, &step), 0);
	assert_int_equal(auth_totp_verify(key, 20, "00592a", 1234567890, 0, &step), 0);
	assert_int_equal(auth_totp_verify(key, 20, "", 1234567890, 0, &step), 0);
	assert_int_equal(auth_totp_verify(key, 20, "123456", 1234567890, 0, &step), 0);
}

/* A code from the real oathtool (Debian package oathtool), if installed. */
static void test_totp_oathtool(void **state)
{
	uint8_t key[AUTH_TOTP_SECRET_LEN];
	char b32[64], cmd[256], code[16] = "";
	int64_t step;
	FILE *p;

	if (system("command -v oathtool >/dev/null 2>&1") != 0) {
		fprintf(stderr, "# oathtool not installed: skipped\n");
		skip();
	}
	for (size_t i = 0; i < sizeof key; i++)
		key[i] = (uint8_t)(i * 37 + 11);
	assert_int_equal(auth_base32_encode(key, sizeof key, b32, sizeof b32), 0);
	snprintf(cmd, sizeof cmd, "oathtool --totp -b %s", b32);
	p = popen(cmd, "r");
	assert_non_null(p);
	assert_non_null(fgets(code, sizeof code, p));
	assert_int_equal(pclose(p), 0);
	code[strcspn(code, "\n")] = '\0';
	assert_int_equal(strlen(code), 6);
	assert_int_equal(auth_totp_verify(key, sizeof key, code, (int64_t)time(NULL), 0, &step), 1);
	assert_int_equal(auth_totp_verify(key, sizeof key, code, (int64_t)time(NULL), step, &step),
			 0);
	key[0] ^= 1; /* another secret: refused */
	assert_int_equal(auth_totp_verify(key, sizeof key, code, (int64_t)time(NULL), 0, &step), 0);
}

static void test_totp_uri(void **state)
{
	char uri[512];

	assert_int_equal(auth_totp_uri("Ward", "a b@example.com", "MZXW6YTBOI", uri, sizeof uri),
			 0);
	assert_string_equal(uri, "otpauth://totp/Ward:a%20b%40example.com?secret=MZXW6YTBOI"
				 "&issuer=Ward&algorithm=SHA1&digits=6&period=30");
	assert_int_equal(auth_totp_uri("Ward", "x@example.com", "MZXW6YTBOI", uri, 20), -1);
}

/* ============================== JWT ===================================== */

static const char hs_secret[] = "0123456789abcdef0123456789abcdef-sso";

/* base64url of raw (no padding). */
static void b64url(const uint8_t *in, size_t n, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0, i = 0;

	for (; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = a[v >> 18];
		out[o++] = a[(v >> 12) & 63];
		out[o++] = a[(v >> 6) & 63];
		out[o++] = a[v & 63];
	}
	if (n - i == 1) {
		out[o++] = a[in[i] >> 2];
		out[o++] = a[(in[i] & 3) << 4];
	} else if (n - i == 2) {
		out[o++] = a[in[i] >> 2];
		out[o++] = a[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		out[o++] = a[(in[i + 1] & 15) << 2];
	}
	out[o] = '\0';
}

/* A signed token: header and claims JSON, signed with HS256 (key NULL) or RS256. */
static char *jwt_make(const char *hdr, const char *claims, EVP_PKEY *rsa, const char *hs)
{
	char *tok = malloc(8192), sig64[1024];
	uint8_t sig[512];
	size_t n, sl = sizeof sig;
	unsigned int ml = 0;

	b64url((const uint8_t *)hdr, strlen(hdr), tok);
	n = strlen(tok);
	tok[n++] = '.';
	b64url((const uint8_t *)claims, strlen(claims), tok + n);
	n = strlen(tok);
	if (rsa != NULL) {
		EVP_MD_CTX *c = EVP_MD_CTX_new();

		assert_int_equal(EVP_DigestSignInit(c, NULL, EVP_sha256(), NULL, rsa), 1);
		assert_int_equal(EVP_DigestSign(c, sig, &sl, (uint8_t *)tok, n), 1);
		EVP_MD_CTX_free(c);
	} else if (hs != NULL) {
		HMAC(EVP_sha256(), hs, (int)strlen(hs), (uint8_t *)tok, n, sig, &ml);
		sl = ml;
	} else {
		sl = 0;
	}
	b64url(sig, sl, sig64);
	tok[n++] = '.';
	strcpy(tok + n, sig64);
	return tok;
}

static char *claims_at(int64_t iat, int64_t exp, const char *jti, const char *email)
{
	char *c = malloc(512);

	snprintf(c, 512, "{\"iat\":%lld,\"exp\":%lld,\"jti\":\"%s\",\"email\":\"%s\"}",
		 (long long)iat, (long long)exp, jti, email);
	return c;
}

static int verify(const struct auth_jwt_key *k, const char *tok, int64_t now,
		  struct auth_jwt_claims *c)
{
	const char *why = NULL;
	int r = auth_jwt_verify(k, tok, now, c, &why);

	if (r < 0)
		assert_non_null(why);
	return r;
}

static void test_jwt_hs256(void **state)
{
	struct auth_jwt_key k = { AUTH_JWT_HS256, (const uint8_t *)hs_secret, sizeof hs_secret - 1,
				  NULL };
	struct auth_jwt_claims c;
	int64_t now = 1700000000;
	char *cl = claims_at(now - 10, now + 120, "j-1", "Ann@Example.com");
	char *tok = jwt_make("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", cl, NULL, hs_secret), *bad;

	assert_int_equal(verify(&k, tok, now, &c), 0);
	assert_string_equal(c.email, "Ann@Example.com");
	assert_string_equal(c.jti, "j-1");
	/* forged: another secret */
	bad = jwt_make("{\"alg\":\"HS256\"}", cl, NULL, "another-secret-another-secret-000");
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	/* alg none, with and without a signature */
	bad = jwt_make("{\"alg\":\"none\"}", cl, NULL, NULL);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	bad = jwt_make("{\"alg\":\"none\"}", cl, NULL, hs_secret);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	/* wrong algorithm names */
	bad = jwt_make("{\"alg\":\"HS512\"}", cl, NULL, hs_secret);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	bad = jwt_make("{\"alg\":\"hs256\"}", cl, NULL, hs_secret);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	/* crit, duplicate keys, not an object */
	bad = jwt_make("{\"alg\":\"HS256\",\"crit\":[\"x\"]}", cl, NULL, hs_secret);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	bad = jwt_make("{\"alg\":\"HS256\",\"alg\":\"none\"}", cl, NULL, hs_secret);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	bad = jwt_make("[\"HS256\"]", cl, NULL, hs_secret);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	/* expired, too old, from the future, exp missing, jti/email missing */
	assert_int_equal(verify(&k, tok, now + 121, &c), -1);
	assert_int_equal(verify(&k, tok, now - 400, &c), -1);
	free(cl);
	cl = claims_at(now - 301, now + 60, "j", "a@b.co");
	bad = jwt_make("{\"alg\":\"HS256\"}", cl, NULL, hs_secret);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	free(cl);
	bad = jwt_make("{\"alg\":\"HS256\"}", "{\"iat\":1700000000,\"jti\":\"j\",\"email\":\"a@b.co\"}",
		       NULL, hs_secret);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	bad = jwt_make("{\"alg\":\"HS256\"}",
		       "{\"iat\":1700000000,\"exp\":1700000100,\"email\":\"a@b.co\"}", NULL,
		       hs_secret);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	bad = jwt_make("{\"alg\":\"HS256\"}",
		       "{\"iat\":1700000000,\"exp\":1700000100,\"jti\":\"j\",\"email\":7}", NULL,
		       hs_secret);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	bad = jwt_make("{\"alg\":\"HS256\"}",
		       "{\"iat\":\"1700000000\",\"exp\":1700000100,\"jti\":\"j\",\"email\":\"a@b.co\"}",
		       NULL, hs_secret);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	/* structure: tampered payload, padding, extra part, empty */
	bad = strdup(tok);
	bad[strchr(bad, '.') - bad + 3] ^= 1;
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	bad = malloc(strlen(tok) + 4);
	sprintf(bad, "%s==", tok);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	sprintf(bad, "%s.x", tok);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	assert_int_equal(verify(&k, "", now, &c), -1);
	assert_int_equal(verify(&k, "a.b", now, &c), -1);
	/* no key configured: nothing verifies */
	k.alg = AUTH_JWT_NONE;
	assert_int_equal(verify(&k, tok, now, &c), -1);
	/* a short HS256 secret is refused */
	k.alg = AUTH_JWT_HS256;
	k.secret_len = 16;
	assert_int_equal(verify(&k, tok, now, &c), -1);
	free(tok);
}

static void test_jwt_rs256(void **state)
{
	EVP_PKEY *rsa = EVP_RSA_gen(2048), *other = EVP_RSA_gen(2048);
	struct auth_jwt_key k = { AUTH_JWT_RS256, NULL, 0, rsa };
	struct auth_jwt_key hk = { AUTH_JWT_HS256, NULL, 0, NULL };
	struct auth_jwt_claims c;
	int64_t now = (int64_t)time(NULL);
	char *cl = claims_at(now, now + 60, "r-1", "bob@example.com"), *tok, *bad;
	unsigned char *der = NULL;
	int derlen;

	assert_non_null(rsa);
	assert_non_null(other);
	tok = jwt_make("{\"alg\":\"RS256\"}", cl, rsa, NULL);
	assert_int_equal(verify(&k, tok, now, &c), 0);
	assert_string_equal(c.jti, "r-1");
	/* signed by another key */
	bad = jwt_make("{\"alg\":\"RS256\"}", cl, other, NULL);
	assert_int_equal(verify(&k, bad, now, &c), -1);
	free(bad);
	/* algorithm confusion: HS256 with the public key's bytes as the secret */
	derlen = i2d_PUBKEY(rsa, &der);
	assert_true(derlen > 0);
	{
		char *pubsecret = malloc((size_t)derlen + 1);

		memcpy(pubsecret, der, (size_t)derlen);
		pubsecret[derlen] = '\0';
		bad = jwt_make("{\"alg\":\"HS256\"}", cl, NULL, "x-not-the-key-but-an-hs256-token");
		assert_int_equal(verify(&k, bad, now, &c), -1);
		free(bad);
		free(pubsecret);
	}
	OPENSSL_free(der);
	/* an RS256 token given to an HS256 configuration */
	hk.secret = (const uint8_t *)hs_secret;
	hk.secret_len = sizeof hs_secret - 1;
	assert_int_equal(verify(&hk, tok, now, &c), -1);
	/* a PEM round trip, and a small key refused */
	{
		BIO *b = BIO_new(BIO_s_mem());
		char *pem;
		long n;
		const char *why = NULL;
		EVP_PKEY *loaded, *small = EVP_RSA_gen(1024);

		assert_int_equal(PEM_write_bio_PUBKEY(b, rsa), 1);
		n = BIO_get_mem_data(b, &pem);
		loaded = auth_jwt_pubkey_load(pem, (size_t)n, &why);
		assert_non_null(loaded);
		EVP_PKEY_free(loaded);
		BIO_free(b);
		b = BIO_new(BIO_s_mem());
		assert_int_equal(PEM_write_bio_PUBKEY(b, small), 1);
		n = BIO_get_mem_data(b, &pem);
		assert_null(auth_jwt_pubkey_load(pem, (size_t)n, &why));
		assert_null(auth_jwt_pubkey_load("not a key", 9, &why));
		BIO_free(b);
		EVP_PKEY_free(small);
	}
	free(tok);
	free(cl);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(other);
}

static void test_b64url(void **state)
{
	uint8_t *out;
	size_t n;

	assert_int_equal(auth_b64url_decode("Zm9vYg", 6, &out, &n), 0);
	assert_int_equal(n, 4);
	assert_memory_equal(out, "foob", 4);
	free(out);
	assert_int_equal(auth_b64url_decode("Zm9vYh", 6, &out, &n), -1); /* stray bits */
	assert_int_equal(auth_b64url_decode("Zm9vYg==", 8, &out, &n), -1);
	assert_int_equal(auth_b64url_decode("Zm9v+g", 6, &out, &n), -1);
	assert_int_equal(auth_b64url_decode("Zm9v/g", 6, &out, &n), -1);
	assert_int_equal(auth_b64url_decode("Z", 1, &out, &n), -1);
	assert_int_equal(auth_b64url_decode("", 0, &out, &n), 0);
	free(out);
}

/* ============================== CIDR ==================================== */

static void test_cidr(void **state)
{
	struct auth_cidr c;
	char *list[2] = { "10.0.0.0/8", "2001:db8::/32" };

	assert_int_equal(auth_cidr_parse("192.0.2.0/24", &c), 0);
	assert_true(auth_cidr_match(&c, "192.0.2.77"));
	assert_false(auth_cidr_match(&c, "192.0.3.1"));
	assert_true(auth_cidr_match(&c, "::ffff:192.0.2.1"));
	assert_false(auth_cidr_match(&c, "2001:db8::1"));
	assert_false(auth_cidr_match(&c, "garbage"));
	assert_false(auth_cidr_match(&c, ""));
	assert_int_equal(auth_cidr_parse("10.1.2.3", &c), 0);
	assert_int_equal(c.prefix, 32);
	assert_true(auth_cidr_match(&c, "10.1.2.3"));
	assert_false(auth_cidr_match(&c, "10.1.2.4"));
	assert_int_equal(auth_cidr_parse("10.0.0.0/12", &c), 0);
	assert_true(auth_cidr_match(&c, "10.15.255.255"));
	assert_false(auth_cidr_match(&c, "10.16.0.0"));
	assert_int_equal(auth_cidr_parse("0.0.0.0/0", &c), 0);
	assert_true(auth_cidr_match(&c, "8.8.8.8"));
	/* refused: host bits, bad prefixes, junk */
	assert_int_equal(auth_cidr_parse("10.0.0.1/8", &c), -1);
	assert_int_equal(auth_cidr_parse("10.0.0.0/33", &c), -1);
	assert_int_equal(auth_cidr_parse("10.0.0.0/-1", &c), -1);
	assert_int_equal(auth_cidr_parse("10.0.0.0/08", &c), -1);
	assert_int_equal(auth_cidr_parse("10.0.0.0/", &c), -1);
	assert_int_equal(auth_cidr_parse("10.0.0.0/8x", &c), -1);
	assert_int_equal(auth_cidr_parse("10.0.0/8", &c), -1);
	assert_int_equal(auth_cidr_parse("", &c), -1);
	assert_int_equal(auth_cidr_parse("2001:db8::/129", &c), -1);
	assert_int_equal(auth_cidr_parse("2001:db8::/32", &c), 0);
	assert_true(auth_cidr_match(&c, "2001:db8:ffff::1"));
	assert_false(auth_cidr_match(&c, "2001:db9::1"));
	assert_false(auth_cidr_match(&c, "10.0.0.1"));
	/* lists */
	assert_true(auth_cidr_list_allows(NULL, 0, "1.2.3.4"));
	assert_true(auth_cidr_list_allows(list, 2, "10.9.9.9"));
	assert_true(auth_cidr_list_allows(list, 2, "2001:db8::5"));
	assert_false(auth_cidr_list_allows(list, 2, "11.0.0.1"));
	assert_false(auth_cidr_list_allows(list, 2, ""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_policy_rules),  cmocka_unit_test(test_policy_common),
		cmocka_unit_test(test_policy_validate), cmocka_unit_test(test_base32),
		cmocka_unit_test(test_hotp_rfc4226),  cmocka_unit_test(test_totp_rfc6238),
		cmocka_unit_test(test_totp_oathtool), cmocka_unit_test(test_totp_uri),
		cmocka_unit_test(test_jwt_hs256),     cmocka_unit_test(test_jwt_rs256),
		cmocka_unit_test(test_b64url),	      cmocka_unit_test(test_cidr),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
