/*
 * test_backup_format — the encrypted backup format (services/backup/backup_format.c,
 * included here: it has no database): key derivation bound to tenant and backup,
 * chunks bound to their index and backup, the authenticated manifest, and refusal of
 * every tampering, truncation, swap and wrong key; careful file I/O. The targets
 * (services/backup/backup_target.c): object keys, the local directory target, S3
 * configuration errors and an unreachable store (the S3 protocol itself is tested
 * against s3rver in tests/e2e/test_backup_s3.sh), and the instance credentials
 * (services/backup/backup_imds.c): configuration and the credentials document
 * (the metadata service end to end in tests/e2e/test_backup_imds.sh).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <sys/stat.h>
#include <unistd.h>

#include "../../services/backup/backup_format.c"
#include "../../services/backup/backup_target.c"
#include "../../services/backup/backup_imds.c"

static const char *T1 = "11111111-1111-4111-8111-111111111111";
static const char *T2 = "22222222-2222-4222-8222-222222222222";
static const char *B1 = "0123456789abcdef0123456789abcdef";
static const char *B2 = "fedcba9876543210fedcba9876543210";

static void keys(uint8_t dek[32], uint8_t salt[32], uint8_t key[32])
{
	memset(dek, 7, 32);
	memset(salt, 9, 32);
	assert_int_equal(backup_key_derive(dek, salt, T1, B1, key), 0);
}

static void test_key_binding(void **state)
{
	uint8_t dek[32], salt[32], k1[32], k2[32];

	(void)state;
	keys(dek, salt, k1);
	assert_int_equal(backup_key_derive(dek, salt, T1, B1, k2), 0);
	assert_memory_equal(k1, k2, 32); /* deterministic */
	assert_int_equal(backup_key_derive(dek, salt, T2, B1, k2), 0);
	assert_memory_not_equal(k1, k2, 32);
	assert_int_equal(backup_key_derive(dek, salt, T1, B2, k2), 0);
	assert_memory_not_equal(k1, k2, 32);
	salt[0] ^= 1;
	assert_int_equal(backup_key_derive(dek, salt, T1, B1, k2), 0);
	assert_memory_not_equal(k1, k2, 32);
	assert_memory_not_equal(k1, dek, 32);
}

static void test_chunk_round_trip_and_tamper(void **state)
{
	uint8_t dek[32], salt[32], key[32], other[32], *ct = NULL, *pt = NULL;
	const char *msg = "auth.users\t{\"id\":\"x\",\"email_enc\":\"\\\\x00\"}\n";
	size_t ct_len, pt_len;

	(void)state;
	keys(dek, salt, key);
	assert_int_equal(backup_chunk_seal(key, 3, T1, B1, 5, msg, strlen(msg), &ct, &ct_len), 0);
	assert_int_equal(ct_len, strlen(msg) + CRYPTO_SEAL_OVERHEAD);
	assert_null(memmem(ct, ct_len, "auth.users", 10)); /* nothing in clear */
	assert_int_equal(backup_chunk_open(key, T1, B1, 5, ct, ct_len, &pt, &pt_len), 0);
	assert_int_equal(pt_len, strlen(msg));
	assert_memory_equal(pt, msg, pt_len);
	free(pt);
	pt = NULL;
	/* another index (reordered chunks), backup, tenant, key: refused */
	assert_int_equal(backup_chunk_open(key, T1, B1, 6, ct, ct_len, &pt, &pt_len), -1);
	assert_int_equal(backup_chunk_open(key, T1, B2, 5, ct, ct_len, &pt, &pt_len), -1);
	assert_int_equal(backup_chunk_open(key, T2, B1, 5, ct, ct_len, &pt, &pt_len), -1);
	memset(other, 1, 32);
	assert_int_equal(backup_chunk_open(other, T1, B1, 5, ct, ct_len, &pt, &pt_len), -1);
	/* every byte flipped, and every truncation, is refused */
	for (size_t i = 0; i < ct_len; i++) {
		ct[i] ^= 0x40;
		assert_int_equal(backup_chunk_open(key, T1, B1, 5, ct, ct_len, &pt, &pt_len), -1);
		ct[i] ^= 0x40;
	}
	for (size_t n = 0; n < ct_len; n++)
		assert_int_equal(backup_chunk_open(key, T1, B1, 5, ct, n, &pt, &pt_len), -1);
	assert_null(pt);
	free(ct);
}

static void test_manifest(void **state)
{
	uint8_t dek[32], salt[32], key[32], s2[32], *mf = NULL;
	const char *json = "{\"format\":1,\"tenant_id\":\"11111111-1111-4111-8111-111111111111\"}";
	char *out = NULL;
	size_t len;
	uint32_t v = 0;

	(void)state;
	keys(dek, salt, key);
	assert_int_equal(backup_manifest_seal(key, 4, salt, T1, B1, json, &mf, &len), 0);
	assert_memory_equal(mf, BACKUP_MAGIC, BACKUP_MAGIC_LEN);
	assert_null(memmem(mf, len, "tenant_id", 9));
	assert_int_equal(backup_manifest_header(mf, len, s2, &v), 0);
	assert_memory_equal(s2, salt, 32);
	assert_int_equal(v, 4);
	assert_int_equal(backup_manifest_open(key, T1, B1, mf, len, &out), 0);
	assert_string_equal(out, json);
	free(out);
	out = NULL;
	/* a manifest moved to another backup, truncated or altered: refused */
	assert_int_equal(backup_manifest_open(key, T1, B2, mf, len, &out), -1);
	for (size_t n = 0; n < len; n++)
		assert_int_equal(backup_manifest_open(key, T1, B1, mf, n, &out), -1);
	for (size_t i = 0; i < len; i++) {
		mf[i] ^= 1;
		assert_int_equal(backup_manifest_open(key, T1, B1, mf, len, &out), -1);
		mf[i] ^= 1;
	}
	assert_null(out);
	assert_int_equal(backup_manifest_header(mf, 10, s2, &v), -1);
	mf[0] = 'X';
	assert_int_equal(backup_manifest_header(mf, len, s2, &v), -1);
	free(mf);
}

static void test_files(void **state)
{
	char dir[] = "/tmp/test-backup-XXXXXX", path[256];
	uint8_t *buf = NULL;
	size_t len;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/f", dir);
	assert_int_equal(backup_file_write(path, "hello", 5), 0);
	assert_int_equal(backup_file_write(path, "again", 5), -1); /* never overwrites */
	assert_int_equal(backup_file_read(path, 5, &buf, &len), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(buf, "hello", 5);
	free(buf);
	buf = NULL;
	assert_int_equal(backup_file_read(path, 4, &buf, &len), -1); /* over the cap */
	assert_int_equal(backup_file_read(dir, 1000, &buf, &len), -1); /* not a file */
	unlink(path);
	assert_int_equal(backup_file_read(path, 1000, &buf, &len), -1);
	assert_null(buf);
	rmdir(dir);
}

static void test_target_keys(void **state)
{
	(void)state;
	assert_true(backup_key_ok("t/b/chunk-000000"));
	assert_true(backup_key_ok("wal/000000010000000000000001"));
	assert_false(backup_key_ok(""));
	assert_false(backup_key_ok("/abs"));
	assert_false(backup_key_ok("a//b"));
	assert_false(backup_key_ok("a/"));
	assert_false(backup_key_ok("a/../b"));
	assert_false(backup_key_ok(".."));
	assert_false(backup_key_ok("a/./b"));
	assert_false(backup_key_ok("a b"));
	assert_false(backup_key_ok("a?b"));
	assert_false(backup_key_ok("a%2Fb"));
}

static void test_target_local(void **state)
{
	char dir[] = "/tmp/ward-target-XXXXXX", path[256];
	struct backup_target_conf tc = { 0 };
	struct backup_target *t;
	const char *err = NULL;
	uint8_t *buf = NULL;
	size_t len = 0, n = 0;
	char **keys = NULL;
	struct stat st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	tc.dir = "relative/dir";
	assert_null(backup_target_new(&tc, &err));
	assert_non_null(strstr(err, "absolute"));
	tc.dir = dir;
	t = backup_target_new(&tc, &err);
	assert_non_null(t);
	assert_int_equal(strncmp(backup_target_name(t), "local:/tmp/", 11), 0);
	assert_int_equal(backup_target_put(t, "t1/b1/chunk-000000", "hello", 5, &err), 0);
	assert_int_equal(backup_target_put(t, "t1/b1/manifest", "m1", 2, &err), 0);
	assert_int_equal(backup_target_put(t, "t1/b2/manifest", "m2", 2, &err), 0);
	assert_int_equal(backup_target_put(t, "t2/b3/manifest", "m3", 2, &err), 0);
	/* Replaced whole, private, no temporary left behind. */
	assert_int_equal(backup_target_put(t, "t1/b1/manifest", "m1bis", 5, &err), 0);
	snprintf(path, sizeof path, "%s/t1/b1/manifest", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(backup_target_get(t, "t1/b1/manifest", 100, &buf, &len, &err), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(buf, "m1bis", 5);
	free(buf);
	/* Too large for the caller's limit: an error, not a truncation. */
	assert_int_equal(backup_target_get(t, "t1/b1/chunk-000000", 3, &buf, &len, &err), -1);
	assert_int_equal(backup_target_get(t, "t1/b9/manifest", 100, &buf, &len, &err), 1);
	assert_null(buf);
	assert_int_equal(backup_target_put(t, "../escape", "x", 1, &err), -1);
	assert_int_equal(backup_target_get(t, "t1/../../etc/passwd", 100, &buf, &len, &err), -1);
	assert_int_equal(backup_target_list(t, "t1/", &keys, &n, &err), 0);
	assert_int_equal(n, 3);
	backup_keys_free(keys, n);
	assert_int_equal(backup_target_list(t, "t1/b1/", &keys, &n, &err), 0);
	assert_int_equal(n, 2);
	backup_keys_free(keys, n);
	assert_int_equal(backup_target_list(t, "", &keys, &n, &err), 0);
	assert_int_equal(n, 4);
	backup_keys_free(keys, n);
	assert_int_equal(backup_target_list(t, "nobody/", &keys, &n, &err), 0);
	assert_int_equal(n, 0);
	backup_keys_free(keys, n);
	/* Delete: the object, then its emptied directories; a missing one is fine. */
	assert_int_equal(backup_target_delete(t, "t2/b3/manifest", &err), 0);
	snprintf(path, sizeof path, "%s/t2", dir);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(backup_target_delete(t, "t2/b3/manifest", &err), 0);
	assert_int_equal(backup_target_list(t, "t1/", &keys, &n, &err), 0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(backup_target_delete(t, keys[i], &err), 0);
	backup_keys_free(keys, n);
	assert_int_equal(rmdir(dir), 0); /* everything went */
	backup_target_free(t);
}

static void test_target_s3_config(void **state)
{
	struct backup_target_conf tc = { .s3_endpoint = "http://127.0.0.1:1", .s3_bucket = "b",
					  .s3_region = "eu-west-2", .s3_access_key = "k",
					  .s3_secret_key = "s", .retries = 1, .timeout_s = 5 };
	struct backup_target *t;
	const char *err = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;

	(void)state;
	tc.s3_bucket = NULL;
	assert_null(backup_target_new(&tc, &err));
	tc.s3_bucket = "b";
	tc.s3_endpoint = "ftp://127.0.0.1";
	assert_null(backup_target_new(&tc, &err));
	tc.s3_endpoint = "http://127.0.0.1:1";
	tc.s3_bucket = "a/b";
	assert_null(backup_target_new(&tc, &err));
	tc.s3_bucket = "b";
	tc.s3_region = "EU WEST";
	assert_null(backup_target_new(&tc, &err));
	tc.s3_region = "eu-west-2";
	t = backup_target_new(&tc, &err);
	assert_non_null(t);
	assert_string_equal(backup_target_name(t), "s3://b");
	/* Nothing listens on port 1: retried once, then a message naming the store. */
	assert_int_equal(backup_target_put(t, "t/b/manifest", "x", 1, &err), -1);
	assert_non_null(strstr(err, "s3://b"));
	assert_int_equal(backup_target_get(t, "t/b/manifest", 10, &buf, &len, &err), -1);
	assert_null(buf);
	backup_target_free(t);
}

/* Instance credentials: static and instance exclusive, the kind checked. */
static void test_target_s3_instance_config(void **state)
{
	struct backup_target_conf tc = { .s3_endpoint = "http://127.0.0.1:1", .s3_bucket = "b",
					  .s3_region = "eu-west-2", .s3_credentials = "instance",
					  .s3_imds_endpoint = "http://127.0.0.1:1", .retries = 0,
					  .timeout_s = 5 };
	struct backup_target *t;
	const char *err = NULL;
	uint8_t *buf = NULL;
	size_t len = 0;

	(void)state;
	tc.s3_access_key = "k";
	assert_null(backup_target_new(&tc, &err));
	assert_non_null(strstr(err, "no access_key"));
	tc.s3_access_key = NULL;
	tc.s3_credentials = "metadata";
	assert_null(backup_target_new(&tc, &err));
	tc.s3_credentials = "static"; /* static without keys */
	assert_null(backup_target_new(&tc, &err));
	tc.s3_credentials = "instance";
	tc.s3_imds_endpoint = "file:///etc/passwd";
	assert_null(backup_target_new(&tc, &err));
	tc.s3_imds_endpoint = "http://127.0.0.1:1";
	t = backup_target_new(&tc, &err);
	assert_non_null(t);
	/* Nothing listens there: the metadata service named, the store never asked. */
	assert_int_equal(backup_target_get(t, "t/b/manifest", 10, &buf, &len, &err), -1);
	assert_non_null(strstr(err, "instance metadata service at http://127.0.0.1:1 is unreachable"));
	assert_null(buf);
	backup_target_free(t);
}

#define DOC(code, ak, sk, tok, exp)                                                          \
	"{\"Code\":\"" code "\",\"AccessKeyId\":\"" ak "\",\"SecretAccessKey\":\"" sk    \
	"\",\"Token\":\"" tok "\",\"Expiration\":\"" exp "\",\"Type\":\"AWS-HMAC\"}"

/* The credentials document: Code, fields, charsets, expiry; no secret in a message. */
static void test_imds_parse(void **state)
{
	struct backup_creds c;
	char err[300];
	const time_t now = 1800000000; /* 2027-01-15T08:00:00Z */
	const char *ok = DOC("Success", "ASIAEXAMPLE1234567", "c2VjcmV0+/secret", "VG9rZW4=",
			     "2027-01-15T14:00:00Z");

	(void)state;
	assert_int_equal(backup_imds_parse(ok, strlen(ok), "r", now, &c, err, sizeof err), 0);
	assert_string_equal(c.access_key, "ASIAEXAMPLE1234567");
	assert_string_equal(c.secret, "c2VjcmV0+/secret");
	assert_string_equal(c.token, "VG9rZW4=");
	assert_string_equal(c.role, "r");
	assert_int_equal(c.expires, now + 6 * 3600);
	backup_creds_clear(&c);
	assert_null(c.secret);
	assert_null(c.token);
	backup_creds_clear(&c); /* twice: fine */

	static const struct {
		const char *doc, *want;
	} bad[] = {
		{ DOC("AssumeRoleUnauthorizedAccess", "ASIAEXAMPLE1234567", "c2VjcmV0", "VG9r",
		      "2027-01-15T14:00:00Z"),
		  "Code AssumeRoleUnauthorizedAccess (not Success)" },
		{ DOC("Success", "ASIAEXAMPLE1234567", "c2VjcmV0", "VG9r", "2027-01-15T07:59:59Z"),
		  "expired at 2027-01-15T07:59:59Z" },
		{ DOC("Success", "ASIAEXAMPLE1234567", "c2VjcmV0", "VG9r", "2027-01-15 14:00"),
		  "malformed Expiration" },
		{ DOC("Success", "asia-short", "c2VjcmV0", "VG9r", "2027-01-15T14:00:00Z"),
		  "malformed AccessKeyId" },
		{ DOC("Success", "ASIAEXAMPLE1234567", "sec:ret", "VG9r", "2027-01-15T14:00:00Z"),
		  "malformed SecretAccessKey" },
		{ DOC("Success", "ASIAEXAMPLE1234567", "c2VjcmV0", "VG9r\\r\\nX-Evil: 1",
		      "2027-01-15T14:00:00Z"),
		  "malformed Token" },
		{ "{\"Code\":\"Success\",\"AccessKeyId\":\"ASIAEXAMPLE1234567\"}", "lack SecretAccessKey" },
		{ "{\"Code\":\"Success\",\"SecretAccessKey\":\"c2VjcmV0\"", "not a JSON object" },
		{ "[1, 2]", "not a JSON object" },
		{ "{\"AccessKeyId\":\"ASIAEXAMPLE1234567\"}", "no Code" },
		{ "{\"Code\":\"Success\",\"Code\":\"Success\"}", "not a JSON object" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		assert_int_equal(backup_imds_parse(bad[i].doc, strlen(bad[i].doc), "r", now, &c, err,
						   sizeof err),
				 -1);
		if (strstr(err, bad[i].want) == NULL)
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, bad[i].want);
		assert_null(strstr(err, "c2VjcmV0")); /* never the secret */
		assert_null(c.secret);
		assert_null(c.token);
	}
	/* Bounded: a document over 16 KiB is refused before parsing. */
	{
		size_t n = 17 * 1024;
		char *big = malloc(n + 1);

		assert_non_null(big);
		memset(big, ' ', n);
		big[n] = '\0';
		assert_int_equal(backup_imds_parse(big, n, "r", now, &c, err, sizeof err), -1);
		assert_non_null(strstr(err, "too large"));
		free(big);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_binding),
		cmocka_unit_test(test_chunk_round_trip_and_tamper),
		cmocka_unit_test(test_manifest),
		cmocka_unit_test(test_files),
		cmocka_unit_test(test_target_keys),
		cmocka_unit_test(test_target_local),
		cmocka_unit_test(test_target_s3_config),
		cmocka_unit_test(test_target_s3_instance_config),
		cmocka_unit_test(test_imds_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
