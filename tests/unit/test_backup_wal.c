/*
 * test_backup_wal — the WAL archive of point-in-time recovery
 * (services/backup/backup_wal.c, included here with backup_format.c): the cell key
 * bound to the region, segments bound to name, size and region and refused on any
 * tampering, the names PostgreSQL may archive, LSN → segment names, the storage
 * functions over the local-directory target (one level of names, removal of a
 * base backup's objects, a target from the configuration: exclusive, required), and `ward-backup wal-push|wal-fetch` end to end on
 * files (idempotent re-push, refusal to overwrite, notes of missing/corrupt segments).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../services/backup/backup_format.c"
#include "../../services/backup/backup_target.c"
#include "../../services/backup/backup_imds.c"
#include "../../services/backup/backup_wal.c"

atomic_int backup_cancel; /* defined by backup_main.c in the daemon */

#define SEG "000000010000000000000002"
#define SEG2 "000000010000000000000003"

static void test_cell_key(void **state)
{
	uint8_t kek[32], a[32], b[32], a2[32];

	(void)state;
	memset(kek, 5, sizeof kek);
	assert_int_equal(backup_wal_cell_key(kek, "eu", a), 0);
	assert_int_equal(backup_wal_cell_key(kek, "eu", a2), 0);
	assert_int_equal(backup_wal_cell_key(kek, "us", b), 0);
	assert_memory_equal(a, a2, 32);
	assert_memory_not_equal(a, b, 32);
	assert_memory_not_equal(a, kek, 32);
}

static void test_seal_open(void **state)
{
	uint8_t key[32], other[32], pt[4096], *s = NULL, *o = NULL;
	size_t slen, olen;
	const char *marker = "tenant-slug-in-clear";

	(void)state;
	memset(key, 1, sizeof key);
	memset(other, 2, sizeof other);
	memset(pt, 'x', sizeof pt);
	memcpy(pt + 100, marker, strlen(marker));
	assert_int_equal(backup_wal_seal(key, 1, "eu", SEG, pt, sizeof pt, &s, &slen), 0);
	assert_int_equal(slen, sizeof pt + 8 + CRYPTO_SEAL_OVERHEAD);
	assert_memory_equal(s, "WARDWAL1", 8);
	assert_null(memmem(s, slen, marker, strlen(marker)));
	assert_int_equal(backup_wal_open(key, "eu", SEG, s, slen, &o, &olen), 0);
	assert_int_equal(olen, sizeof pt);
	assert_memory_equal(o, pt, sizeof pt);
	free(o);
	o = NULL;
	/* another name, region or key */
	assert_int_equal(backup_wal_open(key, "eu", SEG2, s, slen, &o, &olen), -1);
	assert_int_equal(backup_wal_open(key, "us", SEG, s, slen, &o, &olen), -1);
	assert_int_equal(backup_wal_open(other, "eu", SEG, s, slen, &o, &olen), -1);
	/* truncated, extended, flipped, bad magic, too short */
	assert_int_equal(backup_wal_open(key, "eu", SEG, s, slen - 1, &o, &olen), -1);
	for (size_t i = 0; i < slen; i += slen / 7) {
		s[i] ^= 0x20;
		assert_int_equal(backup_wal_open(key, "eu", SEG, s, slen, &o, &olen), -1);
		s[i] ^= 0x20;
	}
	s[slen - 1] ^= 1;
	assert_int_equal(backup_wal_open(key, "eu", SEG, s, slen, &o, &olen), -1);
	s[slen - 1] ^= 1;
	assert_int_equal(backup_wal_open(key, "eu", SEG, s, 10, &o, &olen), -1);
	assert_null(o);
	free(s);
}

static void test_names(void **state)
{
	(void)state;
	assert_true(backup_wal_name_ok(SEG));
	assert_true(backup_wal_name_ok("00000002.history"));
	assert_true(backup_wal_name_ok(SEG ".00000028.backup"));
	assert_true(backup_wal_name_ok(SEG ".partial"));
	assert_false(backup_wal_name_ok(""));
	assert_false(backup_wal_name_ok(NULL));
	assert_false(backup_wal_name_ok("00000001000000000000000a")); /* lower case */
	assert_false(backup_wal_name_ok("0000000100000000000000023"));
	assert_false(backup_wal_name_ok("../../../etc/passwd"));
	assert_false(backup_wal_name_ok(SEG "/x"));
	assert_false(backup_wal_name_ok(SEG ".backup"));
	assert_false(backup_wal_name_ok("0000000Z.history"));
	assert_false(backup_wal_name_ok(SEG ".0000002g.backup"));
}

static void test_segment_of(void **state)
{
	char out[25];

	(void)state;
	assert_int_equal(backup_wal_segment_of("0/2000028", 1, 16, out), 0);
	assert_string_equal(out, "000000010000000000000002");
	assert_int_equal(backup_wal_segment_of("0/BAC448", 1, 1, out), 0);
	assert_string_equal(out, "00000001000000000000000B");
	assert_int_equal(backup_wal_segment_of("1/FF000000", 3, 16, out), 0);
	assert_string_equal(out, "0000000300000001000000FF");
	assert_int_equal(backup_wal_segment_of("2/00100000", 1, 1, out), 0);
	assert_string_equal(out, "000000010000000200000001");
	assert_int_equal(backup_wal_segment_of("x/1", 1, 16, out), -1);
	assert_int_equal(backup_wal_segment_of("0/1", 0, 16, out), -1);
	assert_int_equal(backup_wal_segment_of("0/1", 1, 0, out), -1);
	assert_int_equal(backup_wal_segment_of("0-1", 1, 16, out), -1);
	assert_int_equal(backup_wal_segment_of("100000000/0", 1, 16, out), -1);
}

/* A private temporary directory. */
static char *tmpdir(void)
{
	char *d = strdup("/tmp/test_backup_wal.XXXXXX");

	assert_non_null(d);
	assert_non_null(mkdtemp(d));
	return d;
}

static void test_storage(void **state)
{
	struct backup_conf conf = {0};
	struct backup_target *t;
	const char *err = NULL;
	uint8_t *buf = NULL;
	size_t len;
	json_t *names = NULL;
	char path[512];
	struct stat st;

	(void)state;
	/* no target, or two: refused */
	assert_null(backup_wal_target(&conf, &err));
	assert_non_null(strstr(err, "no backup target"));
	conf.s3_endpoint = "http://127.0.0.1:1";
	conf.dir = "/tmp";
	assert_null(backup_wal_target(&conf, &err));
	assert_non_null(strstr(err, "exclusive"));
	conf.s3_endpoint = NULL;
	conf.dir = tmpdir();
	t = backup_wal_target(&conf, &err);
	assert_non_null(t);
	assert_int_equal(backup_wal_store(t, "cell/wal/" SEG2, "bbb", 3, &err), 0);
	assert_int_equal(backup_wal_store(t, "cell/wal/" SEG, "aaaa", 4, &err), 0);
	snprintf(path, sizeof path, "%s/cell/wal/" SEG, conf.dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(backup_wal_fetch(t, "cell/wal/" SEG, 100, &buf, &len, &err), 0);
	assert_int_equal(len, 4);
	assert_memory_equal(buf, "aaaa", 4);
	free(buf);
	buf = NULL;
	assert_int_equal(backup_wal_fetch(t, "cell/wal/" SEG, 2, &buf, &len, &err), -1);
	assert_int_equal(backup_wal_fetch(t, "cell/wal/nothing", 100, &buf, &len, &err), 1);
	assert_int_equal(backup_wal_fetch(t, "../etc/passwd", 100, &buf, &len, &err), -1);
	assert_int_equal(backup_wal_store(t, "/etc/x", "a", 1, &err), -1);
	assert_int_equal(backup_wal_store(t, "cell/../../x", "a", 1, &err), -1);
	assert_int_equal(backup_wal_fetch(NULL, "cell/wal/" SEG, 100, &buf, &len, &err), -1);
	/* sorted, no temporary or hidden file */
	snprintf(path, sizeof path, "%s/cell/wal/.hidden", conf.dir);
	assert_int_equal(backup_file_write(path, "x", 1), 0);
	assert_int_equal(backup_wal_list(t, "cell/wal", &names, &err), 0);
	assert_int_equal(json_array_size(names), 2);
	assert_string_equal(json_string_value(json_array_get(names, 0)), SEG);
	assert_string_equal(json_string_value(json_array_get(names, 1)), SEG2);
	json_decref(names);
	assert_int_equal(backup_wal_list(t, "cell/none", &names, &err), 0);
	assert_int_equal(json_array_size(names), 0);
	json_decref(names);
	/* one level: a base backup's objects name it once */
	assert_int_equal(backup_wal_store(t, "cell/base/b2/chunk-000000", "c", 1, &err), 0);
	assert_int_equal(backup_wal_store(t, "cell/base/b1/chunk-000000", "c", 1, &err), 0);
	assert_int_equal(backup_wal_store(t, "cell/base/b1/chunk-000001", "c", 1, &err), 0);
	assert_int_equal(backup_wal_store(t, "cell/base/b1/manifest", "m", 1, &err), 0);
	assert_int_equal(backup_wal_list(t, "cell/base", &names, &err), 0);
	assert_int_equal(json_array_size(names), 2);
	assert_string_equal(json_string_value(json_array_get(names, 0)), "b1");
	assert_string_equal(json_string_value(json_array_get(names, 1)), "b2");
	json_decref(names);
	assert_int_equal(backup_wal_remove(t, "cell/base/b1", &err), 0);
	assert_int_equal(backup_wal_fetch(t, "cell/base/b1/manifest", 100, &buf, &len, &err), 1);
	assert_int_equal(backup_wal_fetch(t, "cell/base/b1/chunk-000001", 100, &buf, &len, &err),
			 1);
	assert_int_equal(backup_wal_list(t, "cell/base", &names, &err), 0);
	assert_int_equal(json_array_size(names), 1);
	json_decref(names);
	assert_int_equal(backup_wal_remove(t, "cell/wal/" SEG, &err), 0);
	assert_int_equal(backup_wal_fetch(t, "cell/wal/" SEG, 100, &buf, &len, &err), 1);
	assert_int_equal(backup_wal_remove(t, "cell/wal/" SEG, &err), 0); /* already gone */
	assert_int_equal(backup_wal_remove(t, "cell", &err), 0);
	assert_int_equal(unlink(path), 0); /* the hidden file is not the target's */
	assert_int_equal(wal_rmtree(conf.dir), 0);
	backup_target_free(t);
	free(conf.dir);
}

/* The table ward-backup's main passes (the part wal-push reads). */
static struct backup_conf tconf;
static const struct conf_entry tentries[] = {
    {"backup.dir", CONF_STR, offsetof(struct backup_conf, dir), false, NULL, 0, 0, NULL},
    {"backup.daily_at", CONF_STR, offsetof(struct backup_conf, daily_at), false, "03:00", 0, 0,
     NULL},
    {"backup.scratch_dir", CONF_STR, offsetof(struct backup_conf, scratch_dir), false, NULL, 0, 0,
     NULL},
    {"backup.s3.endpoint", CONF_STR, offsetof(struct backup_conf, s3_endpoint), false, NULL, 0, 0,
     NULL},
    {"backup.s3.bucket", CONF_STR, offsetof(struct backup_conf, s3_bucket), false, NULL, 0, 0,
     NULL},
    {"backup.s3.region", CONF_STR, offsetof(struct backup_conf, s3_region), false, NULL, 0, 0,
     NULL},
    {"backup.s3.access_key", CONF_STR, offsetof(struct backup_conf, s3_access_key), false, NULL,
     0, 0, NULL},
    {"backup.s3.secret_key_file", CONF_SECRET_FILE, offsetof(struct backup_conf, s3_secret_key),
     false, NULL, 0, 0, NULL},
    {"backup.s3.retries", CONF_INT, offsetof(struct backup_conf, s3_retries), false, "0", 0, 20,
     NULL},
};

static int run(const char *mode, const char *a, const char *b, const char *config,
	       const char *notes)
{
	char *argv[] = {"ward-backup",
			(char *)mode,
			(char *)a,
			(char *)b,
			"--config",
			(char *)config,
			notes ? "--notes" : NULL,
			(char *)notes,
			NULL};

	return backup_wal_main(notes ? 8 : 6, argv, tentries, sizeof tentries / sizeof tentries[0],
			       &tconf);
}

static void write_file(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void test_push_fetch(void **state)
{
	char *d = tmpdir(), cfg[256], p[512], q[512], notes[512], seg[8192], *text;
	uint8_t kek[32], *buf = NULL, *back = NULL;
	size_t len, blen;

	(void)state;
	memset(kek, 0x42, sizeof kek);
	for (size_t i = 0; i < sizeof seg; i++)
		seg[i] = (char)(i * 31);
	memcpy(seg + 500, "audit-action-marker", 19);
	snprintf(p, sizeof p, "%s/kek", d);
	write_file(p, kek, sizeof kek);
	snprintf(p, sizeof p, "%s/secret", d);
	write_file(p, "pw", 2);
	snprintf(cfg, sizeof cfg, "%s/backup.yaml", d);
	{
		char y[2048];

		snprintf(y, sizeof y,
			 "service: backup\nregion: eu\nredis:\n  port: 6379\n  user: backup\n"
			 "  password_file: %s/secret\nqueue:\n  route_keys_file: %s/secret\n"
			 "kek_file: %s/kek\nbackup:\n  dir: %s/target\n",
			 d, d, d, d);
		write_file(cfg, y, strlen(y));
	}
	snprintf(p, sizeof p, "%s/target", d);
	assert_int_equal(mkdir(p, 0700), 0);
	snprintf(p, sizeof p, "%s/pg_wal_seg", d);
	write_file(p, seg, sizeof seg);
	snprintf(notes, sizeof notes, "%s/notes", d);
	/* push, and push again (PostgreSQL retries after a crash): both succeed */
	assert_int_equal(run("wal-push", p, SEG, cfg, NULL), 0);
	assert_int_equal(run("wal-push", p, SEG, cfg, NULL), 0);
	/* stored sealed, no plaintext */
	snprintf(q, sizeof q, "%s/target/cell/wal/" SEG, d);
	assert_int_equal(backup_file_read(q, 1 << 20, &buf, &len), 0);
	assert_null(memmem(buf, len, "audit-action-marker", 19));
	free(buf);
	buf = NULL;
	/* other content under the same name: refused, the archive unchanged */
	seg[0] ^= 1;
	write_file(p, seg, sizeof seg);
	assert_int_not_equal(run("wal-push", p, SEG, cfg, NULL), 0);
	seg[0] ^= 1;
	/* fetch back, byte for byte */
	snprintf(q, sizeof q, "%s/restored", d);
	assert_int_equal(run("wal-fetch", SEG, q, cfg, notes), 0);
	assert_int_equal(backup_file_read(q, 1 << 20, &back, &blen), 0);
	assert_int_equal(blen, sizeof seg);
	assert_memory_equal(back, seg, sizeof seg);
	free(back);
	/* absent: 1, noted missing; tampered: 1, noted corrupt */
	assert_int_equal(run("wal-fetch", SEG2, q, cfg, notes), 1);
	snprintf(q, sizeof q, "%s/target/cell/wal/" SEG, d);
	assert_int_equal(backup_file_read(q, 1 << 20, &buf, &len), 0);
	buf[len / 2] ^= 0x10;
	assert_int_equal(unlink(q), 0);
	assert_int_equal(backup_file_write(q, buf, len), 0);
	free(buf);
	snprintf(q, sizeof q, "%s/restored2", d);
	assert_int_equal(run("wal-fetch", SEG, q, cfg, notes), 1);
	assert_int_equal(access(q, F_OK), -1);
	assert_int_equal(backup_file_read(notes, 4096, (uint8_t **)&text, &len), 0);
	text[len] = '\0'; /* backup_file_read leaves room for it */
	assert_non_null(strstr(text, "ok " SEG "\n"));
	assert_non_null(strstr(text, "missing " SEG2 "\n"));
	assert_non_null(strstr(text, "corrupt " SEG "\n"));
	free(text);
	/* bad invocations */
	assert_int_equal(run("wal-push", p, "../../x", cfg, NULL), 2);
	assert_int_not_equal(run("wal-push", "/nonexistent", SEG2, cfg, NULL), 0);
	snprintf(q, sizeof q, "%s/none.yaml", d);
	assert_int_not_equal(run("wal-push", p, SEG2, q, NULL), 0);
	/* both targets configured: refused */
	{
		char y[2048];

		snprintf(y, sizeof y,
			 "service: backup\nregion: eu\nredis:\n  port: 6379\n  user: backup\n"
			 "  password_file: %s/secret\nqueue:\n  route_keys_file: %s/secret\n"
			 "kek_file: %s/kek\nbackup:\n  dir: %s/target\n  s3:\n"
			 "    endpoint: http://127.0.0.1:1\n",
			 d, d, d, d);
		snprintf(q, sizeof q, "%s/both.yaml", d);
		write_file(q, y, strlen(y));
		assert_int_not_equal(run("wal-push", p, SEG2, q, NULL), 0);
		/* an S3 target that cannot be reached: the segment is not fetched, and
		 * the restore's notes say unreadable (not corrupt, not missing) */
		snprintf(y, sizeof y,
			 "service: backup\nregion: eu\nredis:\n  port: 6379\n  user: backup\n"
			 "  password_file: %s/secret\nqueue:\n  route_keys_file: %s/secret\n"
			 "kek_file: %s/kek\nbackup:\n  s3:\n    endpoint: http://127.0.0.1:1\n"
			 "    bucket: b\n    region: eu-west-1\n    access_key: k\n"
			 "    secret_key_file: %s/secret\n    retries: 0\n",
			 d, d, d, d);
		snprintf(q, sizeof q, "%s/s3.yaml", d);
		write_file(q, y, strlen(y));
		snprintf(notes, sizeof notes, "%s/notes2", d);
		snprintf(y, sizeof y, "%s/restored3", d);
		assert_int_equal(run("wal-fetch", SEG, y, q, notes), 1);
		assert_int_equal(access(y, F_OK), -1);
		assert_int_not_equal(run("wal-push", p, SEG2, q, NULL), 0);
		assert_int_equal(backup_file_read(notes, 4096, (uint8_t **)&text, &len), 0);
	text[len] = '\0'; /* backup_file_read leaves room for it */
		assert_string_equal(text, "unreadable " SEG "\n");
		free(text);
	}
	assert_int_equal(wal_rmtree(d), 0);
	assert_int_equal(access(d, F_OK), -1);
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cell_key), cmocka_unit_test(test_seal_open),
	    cmocka_unit_test(test_names),    cmocka_unit_test(test_segment_of),
	    cmocka_unit_test(test_storage),  cmocka_unit_test(test_push_fetch),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
