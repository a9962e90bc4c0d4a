/*
 * test_crypto — published vectors (GCM spec, NIST CAVP, RFC 5869, RFC 4231, FIPS 180)
 * for the primitives, then the sealed format, key wrapping and key files, with the
 * denials that matter: any tampering, wrong key, wrong aad, wrong context, short input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "crypto.h"

/* Decode a hex string of any even length into a malloc'd buffer (test helper). */
static uint8_t *hex_dup(const char *hex, size_t *len_r)
{
	size_t n = strlen(hex) / 2;
	uint8_t *out = malloc(n + 1);
	char *tmp = strdup(hex);

	assert_non_null(out);
	assert_non_null(tmp);
	assert_int_equal(crypto_unhex(tmp, out, n), 0);
	free(tmp);
	*len_r = n;
	return out;
}

struct gcm_vector {
	const char *name, *key, *iv, *aad, *pt, *ct, *tag;
};

/* McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13-16 (AES-256),
 * and one NIST CAVP gcmEncryptExtIV256 vector (Keylen 256, IVlen 96, PTlen 128, AADlen 160). */
static const struct gcm_vector gcm_vectors[] = {
	{ "gcm-spec 13 (empty plaintext, no aad)",
	  "0000000000000000000000000000000000000000000000000000000000000000",
	  "000000000000000000000000", "", "", "", "530f8afbc74536b9a963b4f1c4cb738b" },
	{ "gcm-spec 14", "0000000000000000000000000000000000000000000000000000000000000000",
	  "000000000000000000000000", "", "00000000000000000000000000000000",
	  "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919" },
	{ "gcm-spec 15", "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
	  "cafebabefacedbaddecaf888", "",
	  "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
	  "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
	  "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
	  "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
	  "b094dac5d93471bdec1a502270e3cc6c" },
	{ "gcm-spec 16 (aad)", "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
	  "cafebabefacedbaddecaf888", "feedfacedeadbeeffeedfacedeadbeefabaddad2",
	  "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
	  "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
	  "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
	  "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
	  "76fc6ece0f4e1768cddf8853bb2d551b" },
	{ "CAVP gcmEncryptExtIV256 (aad)",
	  "83688deb4af8007f9b713b47cfa6c73e35ea7a3aa4ecdb414dded03bf7a0fd3a",
	  "0b459724904e010a46901cf3", "794a14ccd178c8ebfd1379dc704c5e208f9d8424",
	  "33d893a2114ce06fc15d55e454cf90c3", "cc66bee423e3fcd4c0865715e9586696",
	  "0fb291bd3dba94a1dfd8b286cfb97ac5" },
};

/* Every GCM vector encrypts to its ciphertext and tag and decrypts back; a flipped tag
 * bit fails and wipes the output. */
static void test_gcm_vectors(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(gcm_vectors) / sizeof(gcm_vectors[0]); i++) {
		const struct gcm_vector *v = &gcm_vectors[i];
		size_t klen, ivlen, alen, plen, clen, tlen;
		uint8_t *key = hex_dup(v->key, &klen), *iv = hex_dup(v->iv, &ivlen);
		uint8_t *aad = hex_dup(v->aad, &alen), *pt = hex_dup(v->pt, &plen);
		uint8_t *ct = hex_dup(v->ct, &clen), *tag = hex_dup(v->tag, &tlen);
		uint8_t out[128], out_tag[16], back[128];

		print_message("vector: %s\n", v->name);
		assert_int_equal(klen, 32);
		assert_int_equal(ivlen, 12);
		assert_int_equal(plen, clen);
		assert_true(plen <= sizeof(out));
		assert_int_equal(crypto_gcm_encrypt(key, iv, alen ? aad : NULL, alen, pt, plen, out,
						    out_tag),
				 0);
		assert_memory_equal(out, ct, clen);
		assert_memory_equal(out_tag, tag, 16);
		assert_int_equal(crypto_gcm_decrypt(key, iv, alen ? aad : NULL, alen, ct, clen, tag,
						    back),
				 0);
		assert_memory_equal(back, pt, plen);

		tag[15] ^= 0x01;
		memset(back, 0xaa, sizeof(back));
		assert_int_equal(crypto_gcm_decrypt(key, iv, alen ? aad : NULL, alen, ct, clen, tag,
						    back),
				 -1);
		if (plen > 0) {
			uint8_t zero[128] = { 0 };

			assert_memory_equal(back, zero, plen);
		}
		free(key);
		free(iv);
		free(aad);
		free(pt);
		free(ct);
		free(tag);
	}
}

/* RFC 5869 appendix A.1 (HKDF-SHA256, basic test case). */
static void test_hkdf_rfc5869(void **state)
{
	uint8_t ikm[22], salt[13], okm[42];
	char info[11];
	char hex[85];
	size_t i;

	memset(ikm, 0x0b, sizeof(ikm));
	for (i = 0; i < sizeof(salt); i++)
		salt[i] = (uint8_t)i;
	for (i = 0; i < 10; i++)
		info[i] = (char)(0xf0 + i);
	info[10] = '\0';
	assert_int_equal(crypto_hkdf(ikm, sizeof(ikm), salt, sizeof(salt), info, okm, sizeof(okm)),
			 0);
	crypto_hex(okm, sizeof(okm), hex);
	assert_string_equal(hex, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
				 "34007208d5b887185865");
	/* Output length bounds. */
	assert_int_equal(crypto_hkdf(ikm, sizeof(ikm), NULL, 0, NULL, okm, 0), -1);
}

/* RFC 4231 test cases 1 and 2 (HMAC-SHA256), FIPS 180-2 "abc" for SHA-256. */
static void test_hmac_sha256(void **state)
{
	uint8_t key[20], mac[32];
	char hex[65];

	memset(key, 0x0b, sizeof(key));
	assert_int_equal(crypto_hmac_sha256(key, sizeof(key), "Hi There", 8, mac), 0);
	crypto_hex(mac, 32, hex);
	assert_string_equal(hex,
			    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	assert_int_equal(crypto_hmac_sha256((const uint8_t *)"Jefe", 4,
					    "what do ya want for nothing?", 28, mac),
			 0);
	crypto_hex(mac, 32, hex);
	assert_string_equal(hex,
			    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	assert_int_equal(crypto_sha256("abc", 3, mac), 0);
	crypto_hex(mac, 32, hex);
	assert_string_equal(hex,
			    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	assert_int_equal(crypto_sha256(NULL, 0, mac), 0);
	crypto_hex(mac, 32, hex);
	assert_string_equal(hex,
			    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/* Seal then open round-trips with the key version; header layout is as documented. */
static void test_seal_roundtrip(void **state)
{
	uint8_t key[32], *sealed = NULL, *pt = NULL;
	size_t sealed_len = 0, pt_len = 0;
	uint32_t kv = 0;
	const char *msg = "ticket body: hello";

	assert_int_equal(crypto_random(key, sizeof(key)), 0);
	assert_int_equal(crypto_seal(key, 0x01020304, "t1|ticket", 9, msg, strlen(msg), &sealed,
				     &sealed_len),
			 0);
	assert_int_equal(sealed_len, strlen(msg) + CRYPTO_SEAL_OVERHEAD);
	assert_int_equal(sealed[0], CRYPTO_SEAL_VERSION);
	assert_int_equal(sealed[1], 1);
	assert_int_equal(sealed[4], 4);
	assert_int_equal(crypto_sealed_key_version(sealed, sealed_len, &kv), 0);
	assert_int_equal(kv, 0x01020304);
	kv = 0;
	assert_int_equal(crypto_open(key, "t1|ticket", 9, sealed, sealed_len, &pt, &pt_len, &kv),
			 0);
	assert_int_equal(pt_len, strlen(msg));
	assert_string_equal((char *)pt, msg);
	assert_int_equal(kv, 0x01020304);
	free(pt);
	pt = NULL;
	/* key_version_r may be NULL. */
	assert_int_equal(crypto_open(key, "t1|ticket", 9, sealed, sealed_len, &pt, &pt_len, NULL),
			 0);
	free(pt);
	free(sealed);

	/* Empty plaintext and empty aad. */
	assert_int_equal(crypto_seal(key, 7, NULL, 0, NULL, 0, &sealed, &sealed_len), 0);
	assert_int_equal(sealed_len, CRYPTO_SEAL_OVERHEAD);
	assert_int_equal(crypto_open(key, NULL, 0, sealed, sealed_len, &pt, &pt_len, &kv), 0);
	assert_int_equal(pt_len, 0);
	assert_int_equal(pt[0], '\0');
	assert_int_equal(kv, 7);
	free(pt);
	free(sealed);
}

/* Two seals of the same plaintext differ (fresh nonce). */
static void test_seal_nonce_fresh(void **state)
{
	uint8_t key[32] = { 1 }, *a = NULL, *b = NULL;
	size_t alen, blen;

	assert_int_equal(crypto_seal(key, 1, NULL, 0, "same", 4, &a, &alen), 0);
	assert_int_equal(crypto_seal(key, 1, NULL, 0, "same", 4, &b, &blen), 0);
	assert_int_equal(alen, blen);
	assert_memory_not_equal(a + 5, b + 5, CRYPTO_NONCE_LEN);
	free(a);
	free(b);
}

/* Flipping any single byte of a sealed buffer (version, key version, nonce, ciphertext,
 * tag), a wrong key, a wrong or missing aad, or truncation makes crypto_open fail. */
static void test_open_denials(void **state)
{
	uint8_t key[32], other[32], *sealed = NULL, *pt = NULL;
	size_t sealed_len = 0, pt_len = 0, i;

	assert_int_equal(crypto_random(key, sizeof(key)), 0);
	memcpy(other, key, sizeof(other));
	other[0] ^= 0x80;
	assert_int_equal(crypto_seal(key, 3, "aad", 3, "secret", 6, &sealed, &sealed_len), 0);

	for (i = 0; i < sealed_len; i++) {
		sealed[i] ^= 0x01;
		assert_int_equal(crypto_open(key, "aad", 3, sealed, sealed_len, &pt, &pt_len,
					     NULL),
				 -1);
		assert_null(pt);
		sealed[i] ^= 0x01;
	}
	/* Key version altered to a different value entirely (not just one bit). */
	sealed[4] = 9;
	assert_int_equal(crypto_open(key, "aad", 3, sealed, sealed_len, &pt, &pt_len, NULL), -1);
	sealed[4] = 3;
	/* Unknown version byte. */
	sealed[0] = 2;
	assert_int_equal(crypto_open(key, "aad", 3, sealed, sealed_len, &pt, &pt_len, NULL), -1);
	sealed[0] = CRYPTO_SEAL_VERSION;

	assert_int_equal(crypto_open(other, "aad", 3, sealed, sealed_len, &pt, &pt_len, NULL), -1);
	assert_int_equal(crypto_open(key, "aae", 3, sealed, sealed_len, &pt, &pt_len, NULL), -1);
	assert_int_equal(crypto_open(key, "aad!", 4, sealed, sealed_len, &pt, &pt_len, NULL), -1);
	assert_int_equal(crypto_open(key, NULL, 0, sealed, sealed_len, &pt, &pt_len, NULL), -1);
	for (i = 0; i < sealed_len; i++)
		assert_int_equal(crypto_open(key, "aad", 3, sealed, i, &pt, &pt_len, NULL), -1);
	assert_int_equal(crypto_open(key, "aad", 3, NULL, 0, &pt, &pt_len, NULL), -1);
	{
		uint32_t kv;

		assert_int_equal(crypto_sealed_key_version(sealed, CRYPTO_SEAL_OVERHEAD - 1, &kv),
				 -1);
	}
	/* And the untouched buffer still opens. */
	assert_int_equal(crypto_open(key, "aad", 3, sealed, sealed_len, &pt, &pt_len, NULL), 0);
	assert_string_equal((char *)pt, "secret");
	free(pt);
	free(sealed);
}

/* A wrapped DEK opens only under its KEK and its own context. */
static void test_wrap_key(void **state)
{
	uint8_t kek[32], kek2[32], dek[32], back[32], *w = NULL;
	size_t wlen = 0;
	uint32_t kv = 0;

	assert_int_equal(crypto_random(kek, 32), 0);
	assert_int_equal(crypto_random(kek2, 32), 0);
	assert_int_equal(crypto_random(dek, 32), 0);
	assert_int_equal(crypto_wrap_key(kek, 5, "tenant-a", dek, &w, &wlen), 0);
	assert_int_equal(wlen, 32 + CRYPTO_SEAL_OVERHEAD);
	assert_int_equal(crypto_unwrap_key(kek, "tenant-a", w, wlen, back, &kv), 0);
	assert_memory_equal(back, dek, 32);
	assert_int_equal(kv, 5);

	assert_int_equal(crypto_unwrap_key(kek, "tenant-b", w, wlen, back, NULL), -1);
	assert_int_equal(crypto_unwrap_key(kek, "tenant-a\n", w, wlen, back, NULL), -1);
	assert_int_equal(crypto_unwrap_key(kek, "", w, wlen, back, NULL), -1);
	assert_int_equal(crypto_unwrap_key(kek2, "tenant-a", w, wlen, back, NULL), -1);
	assert_int_equal(crypto_unwrap_key(kek, "tenant-a", w, wlen - 1, back, NULL), -1);
	assert_int_equal(crypto_unwrap_key(kek, NULL, w, wlen, back, NULL), -1);
	w[wlen - 1] ^= 1;
	assert_int_equal(crypto_unwrap_key(kek, "tenant-a", w, wlen, back, NULL), -1);
	free(w);

	/* A plain seal of a 32-byte payload with the bare context as aad is not a wrapped key. */
	assert_int_equal(crypto_seal(kek, 5, "tenant-a", 8, dek, 32, &w, &wlen), 0);
	assert_int_equal(crypto_unwrap_key(kek, "tenant-a", w, wlen, back, NULL), -1);
	free(w);
}

/* Blind indexes are deterministic per (dek, purpose, value) and differ otherwise. */
static void test_blind_index(void **state)
{
	uint8_t dek[32] = { 0 }, dek2[32] = { 1 };
	char a[65], b[65], c[65], d[65];

	assert_int_equal(crypto_blind_index(dek, "email", "a@example.com", 13, a), 0);
	assert_int_equal(crypto_blind_index(dek, "email", "a@example.com", 13, b), 0);
	assert_string_equal(a, b);
	assert_int_equal(strlen(a), 64);
	assert_int_equal(crypto_blind_index(dek, "phone", "a@example.com", 13, c), 0);
	assert_string_not_equal(a, c);
	assert_int_equal(crypto_blind_index(dek2, "email", "a@example.com", 13, d), 0);
	assert_string_not_equal(a, d);
	assert_int_equal(crypto_blind_index(dek, "email", "b@example.com", 13, d), 0);
	assert_string_not_equal(a, d);
}

/* Hex, unhex, ct_equal, random ids, wipe. */
static void test_helpers(void **state)
{
	uint8_t in[3] = { 0x00, 0xab, 0xff }, out[3];
	char hex[7], id1[33], id2[33];
	size_t i;

	crypto_hex(in, 3, hex);
	assert_string_equal(hex, "00abff");
	assert_int_equal(crypto_unhex("00ABff", out, 3), 0);
	assert_memory_equal(in, out, 3);
	assert_int_equal(crypto_unhex("00abf", out, 3), -1);
	assert_int_equal(crypto_unhex("00abff0", out, 3), -1);
	assert_int_equal(crypto_unhex("00abfg", out, 3), -1);
	assert_int_equal(crypto_unhex("", out, 0), 0);

	assert_int_equal(crypto_ct_equal("abc", "abc", 3), 1);
	assert_int_equal(crypto_ct_equal("abc", "abd", 3), 0);
	assert_int_equal(crypto_ct_equal("x", "y", 0), 1);

	assert_int_equal(crypto_random_id(id1), 0);
	assert_int_equal(crypto_random_id(id2), 0);
	assert_int_equal(strlen(id1), 32);
	assert_string_not_equal(id1, id2);
	for (i = 0; i < 32; i++)
		assert_non_null(strchr("0123456789abcdef", id1[i]));

	crypto_wipe(in, 3);
	assert_int_equal(in[0] | in[1] | in[2], 0);
	crypto_wipe(NULL, 10);
}

/* Write len bytes to a fresh file in dir; return its path (static buffer per call site). */
static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Key files: 32 raw bytes, 64 hex digits with or without a newline; everything else fails. */
static void test_key_load(void **state)
{
	char dir[] = "/tmp/ward-test-crypto-XXXXXX", path[256];
	uint8_t raw[32], key[32];
	char hex[66];
	const char *err = NULL;
	size_t i;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/key", dir);
	for (i = 0; i < 32; i++)
		raw[i] = (uint8_t)(i * 7 + 1);
	raw[5] = '\n';
	crypto_hex(raw, 32, hex);

	write_file(path, raw, 32);
	assert_int_equal(crypto_key_load(path, key, &err), 0);
	assert_memory_equal(key, raw, 32);

	write_file(path, hex, 64);
	memset(key, 0, 32);
	assert_int_equal(crypto_key_load(path, key, &err), 0);
	assert_memory_equal(key, raw, 32);

	hex[64] = '\n';
	write_file(path, hex, 65);
	memset(key, 0, 32);
	assert_int_equal(crypto_key_load(path, key, &err), 0);
	assert_memory_equal(key, raw, 32);

	/* Wrong sizes. */
	write_file(path, raw, 31);
	err = NULL;
	assert_int_equal(crypto_key_load(path, key, &err), -1);
	assert_non_null(err);
	write_file(path, hex, 63);
	assert_int_equal(crypto_key_load(path, key, &err), -1);
	write_file(path, "", 0);
	assert_int_equal(crypto_key_load(path, key, &err), -1);
	{
		char big[200];

		memset(big, 'a', sizeof(big));
		write_file(path, big, sizeof(big));
		assert_int_equal(crypto_key_load(path, key, &err), -1);
		write_file(path, big, 66);
		assert_int_equal(crypto_key_load(path, key, &err), -1);
	}
	/* 64 characters that are not hex. */
	hex[3] = 'z';
	write_file(path, hex, 64);
	assert_int_equal(crypto_key_load(path, key, &err), -1);
	/* Two newlines. */
	hex[3] = 'a';
	hex[64] = '\n';
	hex[65] = '\n';
	write_file(path, hex, 66);
	assert_int_equal(crypto_key_load(path, key, &err), -1);

	assert_int_equal(unlink(path), 0);
	err = NULL;
	assert_int_equal(crypto_key_load(path, key, &err), -1);
	assert_non_null(err);
	assert_int_equal(rmdir(dir), 0);
}

/* Key rings: legacy file = version 1; ring format round trip; unwrap picks the
 * version from the header; a retired version no longer unwraps; bad rings refused. */
static void test_keyring(void **state)
{
	char dir[] = "/tmp/ward-ring-XXXXXX", path[64], newp[80];
	struct crypto_keyring ring, back;
	uint8_t k1[32], k2[32], dek[32], out[32], *w1 = NULL, *w2 = NULL;
	size_t l1 = 0, l2 = 0;
	uint32_t v = 0;
	const char *err = NULL;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/kek", dir);
	snprintf(newp, sizeof newp, "%s/kek.new", dir);
	assert_int_equal(crypto_random(k1, 32), 0);
	assert_int_equal(crypto_random(k2, 32), 0);
	assert_int_equal(crypto_random(dek, 32), 0);
	write_file(path, k1, 32);
	assert_int_equal(crypto_keyring_load(path, &ring, &err), 0);
	assert_int_equal(ring.n, 1);
	assert_non_null(crypto_keyring_current(&ring, &v));
	assert_int_equal(v, 1);
	assert_memory_equal(crypto_keyring_find(&ring, 1), k1, 32);
	assert_null(crypto_keyring_find(&ring, 2));

	assert_int_equal(crypto_wrap_key(k1, 1, "t", dek, &w1, &l1), 0);
	assert_int_equal(crypto_keyring_add(&ring, 2, k2), 0);
	assert_int_equal(crypto_keyring_add(&ring, 2, k2), -1); /* twice */
	assert_int_equal(crypto_keyring_add(&ring, 0, k2), -1);
	assert_int_equal(crypto_keyring_save(path, &ring, &err), 0);
	assert_int_equal(access(newp, F_OK), -1);
	assert_int_equal(crypto_keyring_load(path, &back, &err), 0);
	assert_int_equal(back.n, 2);
	assert_memory_equal(crypto_keyring_current(&back, &v), k2, 32);
	assert_int_equal(v, 2);
	assert_int_equal(crypto_wrap_key(k2, 2, "t", dek, &w2, &l2), 0);
	/* Both generations unwrap through the ring, each with its own key. */
	assert_int_equal(crypto_keyring_unwrap(&back, "t", w1, l1, out, &v), 0);
	assert_int_equal(v, 1);
	assert_memory_equal(out, dek, 32);
	assert_int_equal(crypto_keyring_unwrap(&back, "t", w2, l2, out, &v), 0);
	assert_int_equal(v, 2);
	/* Retired: version 1 is gone, its wrapped keys fail (no fallback to another key). */
	assert_int_equal(crypto_keyring_remove(&back, 1), 0);
	assert_int_equal(crypto_keyring_remove(&back, 1), -1);
	assert_int_equal(crypto_keyring_save(path, &back, &err), 0);
	crypto_keyring_wipe(&back);
	assert_int_equal(crypto_keyring_load(path, &back, &err), 0);
	assert_int_equal(back.n, 1);
	assert_int_equal(crypto_keyring_unwrap(&back, "t", w1, l1, out, NULL), -1);
	assert_int_equal(crypto_keyring_unwrap(&back, "t", w2, l2, out, NULL), 0);
	/* A wrapped key whose header claims version 2 but was wrapped by key 1 fails. */
	w1[4] = 2;
	assert_int_equal(crypto_keyring_unwrap(&ring, "t", w1, l1, out, NULL), -1);

	/* Malformed rings. */
	write_file(path, "ward-kek 0 00\n", 14);
	assert_int_equal(crypto_keyring_load(path, &back, &err), -1);
	assert_non_null(err);
	{
		char text[400];
		char hex[65];

		crypto_hex(k1, 32, hex);
		snprintf(text, sizeof text, "ward-kek 3 %s\nward-kek 3 %s\n", hex, hex);
		write_file(path, text, strlen(text));
		assert_int_equal(crypto_keyring_load(path, &back, &err), -1);
		assert_string_equal(err, "key ring: a version appears twice");
		snprintf(text, sizeof text, "ward-kek 3 %s", hex);
		write_file(path, text, strlen(text));
		assert_int_equal(crypto_keyring_load(path, &back, &err), -1);
		snprintf(text, sizeof text, "ward-kek 03 %s\n", hex);
		write_file(path, text, strlen(text));
		assert_int_equal(crypto_keyring_load(path, &back, &err), -1);
		snprintf(text, sizeof text, "ward-kek 3 %s\n", hex);
		write_file(path, text, strlen(text));
		assert_int_equal(crypto_keyring_load(path, &back, &err), 0);
		assert_int_equal(back.n, 1);
		assert_memory_equal(crypto_keyring_find(&back, 3), k1, 32);
	}
	crypto_keyring_wipe(&ring);
	crypto_keyring_wipe(&back);
	free(w1);
	free(w2);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

/* The blind-index root gives the same indexes as the DEK, and is not the DEK. */
static void test_blind_root(void **state)
{
	uint8_t dek[32], root[32];
	char a[65], b[65], c[65];

	(void)state;
	assert_int_equal(crypto_random(dek, 32), 0);
	assert_int_equal(crypto_blind_root(dek, root), 0);
	assert_memory_not_equal(dek, root, 32);
	assert_int_equal(crypto_blind_index(dek, "auth.users.email", "a@b.example", 11, a), 0);
	assert_int_equal(crypto_blind_index_root(root, "auth.users.email", "a@b.example", 11, b), 0);
	assert_string_equal(a, b);
	assert_int_equal(crypto_blind_index_root(root, "ticket.mail_id", "a@b.example", 11, c), 0);
	assert_string_not_equal(a, c);
	assert_int_equal(crypto_blind_index(dek, "auth.recovery_codes", "", 0, a), 0);
	assert_int_equal(crypto_blind_index_root(root, "auth.recovery_codes", "", 0, b), 0);
	assert_string_equal(a, b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gcm_vectors),    cmocka_unit_test(test_hkdf_rfc5869),
		cmocka_unit_test(test_hmac_sha256),    cmocka_unit_test(test_seal_roundtrip),
		cmocka_unit_test(test_seal_nonce_fresh), cmocka_unit_test(test_open_denials),
		cmocka_unit_test(test_wrap_key),       cmocka_unit_test(test_blind_index),
		cmocka_unit_test(test_helpers),	       cmocka_unit_test(test_key_load),
		cmocka_unit_test(test_keyring), cmocka_unit_test(test_blind_root),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
