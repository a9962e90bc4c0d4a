/*
 * test_audit_chain — ward-audit's canonical encoding, hash chain and checkpoint
 * signatures (services/audit/audit_chain.c, included here: it has no database).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../services/audit/audit_chain.c"

/* Computed independently (Python: struct.pack(">I", len) framing + hashlib.sha256). */
#define KAT_HASH "0c0beb96ae43972eb04b35ccb35482c42644459172917854603996a6570ee970"

static const uint8_t detail[] = { 1, 2, 3, 4, 5 };
static const uint8_t prev[AUDIT_HASH_LEN] = { 0xaa, 0xbb };

static struct audit_row base_row(void)
{
	struct audit_row r = { 0 };

	r.tenant = "2de1e09a-9610-4c45-bc8e-fc9f4d4b2338";
	r.seq = 7;
	r.id = "0c76e0a43bf49573dec30e66d8d474e5";
	r.at_ms = 1700000000123;
	r.type = "user";
	r.action = "update";
	r.actor = "user:1";
	r.target = "user:2";
	r.ip = "192.0.2.1";
	r.request_id = "req";
	r.detail = detail;
	r.detail_len = sizeof detail;
	r.prev = prev;
	return r;
}

static void hex_of(const struct audit_row *r, char out[65])
{
	uint8_t h[AUDIT_HASH_LEN];

	assert_int_equal(audit_chain_hash(r, h), 0);
	crypto_hex(h, sizeof h, out);
}

/* Known answer: the encoding is a stored format; any change must be deliberate
 * (old chains would stop verifying). */
static void test_known_answer(void **state)
{
	struct audit_row r = base_row();
	uint8_t *enc;
	size_t len;
	char hex[65];

	assert_int_equal(audit_chain_encode(&r, &enc, &len), 0);
	/* label, 12 fields: 13 length prefixes */
	assert_int_equal(len, 13 * 4 + strlen("ward-audit-event/1") + strlen(r.tenant) + 8 + 32 +
				      8 + 4 + 6 + 6 + 6 + 9 + 3 + 5 + 32);
	assert_memory_equal(enc, "\0\0\0\x12ward-audit-event/1", 22);
	free(enc);
	hex_of(&r, hex);
	assert_string_equal(hex, KAT_HASH);
}

/* Every field is covered: changing any one changes the hash. */
static void test_every_field_counts(void **state)
{
	struct audit_row r;
	char want[65], got[65];
	uint8_t other_prev[AUDIT_HASH_LEN] = { 0xaa, 0xbc };
	uint8_t other_detail[] = { 1, 2, 3, 4, 6 };

	r = base_row();
	hex_of(&r, want);
	for (int f = 0; f < 13; f++) {
		r = base_row();
		switch (f) {
		case 0: r.tenant = ""; break;
		case 1: r.seq = 8; break;
		case 2: r.id = "0c76e0a43bf49573dec30e66d8d474e6"; break;
		case 3: r.at_ms++; break;
		case 4: r.type = "users"; break;
		case 5: r.action = "updatE"; break;
		case 6: r.actor = "user:2"; break;
		case 7: r.target = "user:1"; break;
		case 8: r.ip = "192.0.2.2"; break;
		case 9: r.request_id = ""; break;
		case 10: r.detail = other_detail; break;
		case 11: r.prev = other_prev; break;
		case 12: r.prev = NULL; break;
		}
		hex_of(&r, got);
		if (strcmp(want, got) == 0)
			fail_msg("field %d does not change the hash", f);
	}
}

/* Length framing: bytes moved from one field to the next give another hash. */
static void test_framing_unambiguous(void **state)
{
	struct audit_row a = base_row(), b = base_row();
	char ha[65], hb[65];

	a.type = "ab", a.action = "c";
	b.type = "a", b.action = "bc";
	hex_of(&a, ha);
	hex_of(&b, hb);
	assert_string_not_equal(ha, hb);
	a = base_row(), b = base_row();
	a.detail = NULL, a.detail_len = 0;
	b.detail = (const uint8_t *)"", b.detail_len = 0;
	hex_of(&a, ha);
	hex_of(&b, hb);
	assert_string_equal(ha, hb); /* no detail and an empty one are the same thing */
}

/* A chain: each hash depends on all earlier events; editing event 2 changes
 * every later link, and swapping two events breaks the prev link. */
static void test_chain_links(void **state)
{
	uint8_t h[4][AUDIT_HASH_LEN], again[AUDIT_HASH_LEN];
	const char *actions[4] = { "a", "b", "c", "d" };
	struct audit_row r;

	for (int i = 0; i < 4; i++) {
		r = base_row();
		r.seq = i + 1;
		r.action = actions[i];
		r.prev = i ? h[i - 1] : NULL;
		assert_int_equal(audit_chain_hash(&r, h[i]), 0);
	}
	/* Event 3 (seq 3) placed at seq 2 (swapped) does not reproduce its hash. */
	r = base_row();
	r.seq = 2;
	r.action = "c";
	r.prev = h[0];
	assert_int_equal(audit_chain_hash(&r, again), 0);
	assert_memory_not_equal(again, h[2], AUDIT_HASH_LEN);
	/* Recomputing event 2 unchanged reproduces it exactly. */
	r.action = "b";
	assert_int_equal(audit_chain_hash(&r, again), 0);
	assert_memory_equal(again, h[1], AUDIT_HASH_LEN);
}

/* Version 2 (060_gdpr.sql): the digest of the sealed detail stands in for it, so
 * erasing the detail leaves the hash computable; everything else still counts. */
#define KAT_HASH_V2 "946da5bbde0b9150e51d52ddb8a3aee818150b5e5c9f84d2f4762997e5c3dda0"
static void test_version2_digest(void **state)
{
	struct audit_row r = base_row(), e;
	uint8_t digest[AUDIT_HASH_LEN], other[AUDIT_HASH_LEN];
	char v1[65], v2[65], got[65];

	hex_of(&r, v1);
	assert_int_equal(audit_chain_detail_digest(detail, sizeof detail, digest), 0);
	r.version = 2;
	r.digest = digest;
	hex_of(&r, v2);
	assert_string_equal(v2, KAT_HASH_V2);
	assert_string_not_equal(v1, v2);
	/* The erased detail: same hash without it. */
	e = r;
	e.detail = NULL, e.detail_len = 0;
	hex_of(&e, got);
	assert_string_equal(got, v2);
	/* But the digest counts, and no detail at all is another event. */
	memcpy(other, digest, sizeof other);
	other[5] ^= 1;
	e.digest = other;
	hex_of(&e, got);
	assert_string_not_equal(got, v2);
	e.digest = NULL;
	hex_of(&e, got);
	assert_string_not_equal(got, v2);
	/* Other fields still count in version 2. */
	e = r;
	e.actor = "user:3";
	hex_of(&e, got);
	assert_string_not_equal(got, v2);
}

static void test_checkpoint_signature(void **state)
{
	uint8_t key[CRYPTO_KEY_LEN], key2[CRYPTO_KEY_LEN], hash[AUDIT_HASH_LEN], sig[32];
	const char *t = "2de1e09a-9610-4c45-bc8e-fc9f4d4b2338";
	char id1[17], id2[17];

	memset(key, 0x11, sizeof key);
	memset(key2, 0x11, sizeof key2);
	key2[31] ^= 1;
	memset(hash, 0x42, sizeof hash);
	assert_int_equal(audit_chain_sign(key, t, 1000, hash, 1700000000000, sig), 0);
	assert_int_equal(audit_chain_check(key, t, 1000, hash, 1700000000000, sig), 1);
	assert_int_equal(audit_chain_check(key2, t, 1000, hash, 1700000000000, sig), 0);
	assert_int_equal(audit_chain_check(key, "", 1000, hash, 1700000000000, sig), 0);
	assert_int_equal(audit_chain_check(key, t, 999, hash, 1700000000000, sig), 0);
	assert_int_equal(audit_chain_check(key, t, 1000, hash, 1700000000001, sig), 0);
	hash[0] ^= 1;
	assert_int_equal(audit_chain_check(key, t, 1000, hash, 1700000000000, sig), 0);
	hash[0] ^= 1;
	sig[31] ^= 0x80;
	assert_int_equal(audit_chain_check(key, t, 1000, hash, 1700000000000, sig), 0);
	audit_chain_key_id(key, id1);
	audit_chain_key_id(key2, id2);
	assert_int_equal(strlen(id1), 16);
	assert_string_not_equal(id1, id2);
	audit_chain_key_id(key, id2);
	assert_string_equal(id1, id2);
}

static void test_tenant_and_ids(void **state)
{
	char uuid[37];

	assert_true(audit_tenant_ok(""));
	assert_true(audit_tenant_ok("2de1e09a-9610-4c45-bc8e-fc9f4d4b2338"));
	assert_false(audit_tenant_ok("2DE1E09A-9610-4c45-bc8e-fc9f4d4b2338"));
	assert_false(audit_tenant_ok("2de1e09a96104c45bc8efc9f4d4b2338"));
	assert_false(audit_tenant_ok("2de1e09a-9610-4c45-bc8e-fc9f4d4b233"));
	assert_false(audit_tenant_ok("2de1e09a-9610-4c45-bc8e-fc9f4d4b2338'"));
	assert_false(audit_tenant_ok("2de1e09a-9610-4c45-bc8e+fc9f4d4b2338"));
	assert_false(audit_tenant_ok(NULL));
	audit_id_to_uuid("0c76e0a43bf49573dec30e66d8d474e5", uuid);
	assert_string_equal(uuid, "0c76e0a4-3bf4-9573-dec3-0e66d8d474e5");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_known_answer),	     cmocka_unit_test(test_every_field_counts),
		cmocka_unit_test(test_framing_unambiguous), cmocka_unit_test(test_chain_links),
		cmocka_unit_test(test_checkpoint_signature), cmocka_unit_test(test_tenant_and_ids),
		cmocka_unit_test(test_version2_digest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
