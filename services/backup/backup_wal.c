/*
 * backup_wal — point-in-time recovery of a cell (see backup_wal.h for the layout).
 *
 * PostgreSQL's archive_command runs `ward-backup wal-push %p %f --config FILE`: a
 * short-lived mode of this binary, not a request to the daemon, so archiving needs
 * neither Redis nor a running ward-backup (a segment is never held up, or lost, by
 * a daemon restart) and its exit status is the archive's answer to PostgreSQL,
 * which keeps the segment and retries on any non-zero status. It reads the same
 * configuration file as the daemon (backup.dir, kek_file, region).
 *
 * Base backups stream `pg_basebackup -Ft -D -` through the chunk sealing of
 * backup_format.c. A restore unpacks the newest base backup taken before the time
 * into a scratch directory, points restore_command at `ward-backup wal-fetch`, sets
 * recovery_target_time and promote, and starts the cluster on a free loopback port
 * with archiving off. A one-tenant restore then reads that tenant's rows from the
 * scratch cluster (backup.dump_rows, under its RLS), and replaces the tenant's rows in
 * the live cell in one transaction (tenant.lifecycle_pitr_begin, then
 * tenant.lifecycle_restore_rows as for a closed tenant, then
 * tenant.lifecycle_pitr_end: sessions and tokens of the past revoked, API keys and
 * OAuth clients revoked since kept revoked); other tenants are not touched.
 * Passwords are as they were at the time (the audit log says who changed what). Every failure
 * removes the scratch directory: nothing is half-restored.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "auditlog.h"
#include "backup.h"
#include "backup_wal.h"
#include "config.h"
#include "daemon.h"
#include "log.h"

#define WAL_PATHF(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__) >= (int)sizeof buf)
#define WAL_START_TIMEOUT_S "600"

static char wal_err[768];
static char wal_self_exe[1024];
static char wal_self_config[1024];

/* A message for a person, kept in a static buffer (one job at a time). */
static const char *wal_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *wal_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(wal_err, sizeof wal_err, fmt, ap);
	va_end(ap);
	return wal_err;
}

/* ------------------------------------------------------------------ storage */

/* The target of conf: the S3 bucket when backup.s3 is set, else the local directory
 * (the daemon and the short-lived wal-push/wal-fetch build it the same way). */
struct backup_target *backup_wal_target(const struct backup_conf *conf, const char **error_r)
{
	struct backup_target_conf tc = {0};

	if (conf->dir != NULL && conf->s3_endpoint != NULL) {
		*error_r = "backup.dir and backup.s3 are exclusive: one target per cell";
		return NULL;
	}
	if (conf->dir == NULL && conf->s3_endpoint == NULL) {
		*error_r = "no backup target configured (backup.dir or backup.s3)";
		return NULL;
	}
	tc.dir = conf->dir;
	tc.s3_endpoint = conf->s3_endpoint;
	tc.s3_bucket = conf->s3_bucket;
	tc.s3_region = conf->s3_region;
	tc.s3_access_key = conf->s3_access_key;
	tc.s3_secret_key = (const char *)conf->s3_secret_key.data;
	tc.s3_ca_file = conf->s3_ca_file;
	tc.s3_credentials = conf->s3_credentials;
	tc.s3_imds_endpoint = conf->s3_imds_endpoint;
	tc.retries = conf->s3_retries;
	return backup_target_new(&tc, error_r);
}

int backup_wal_store(struct backup_target *t, const char *key, const void *buf, size_t len,
		     const char **error_r)
{
	if (t == NULL) {
		*error_r = "no backup target configured";
		return -1;
	}
	return backup_target_put(t, key, buf, len, error_r);
}

int backup_wal_fetch(struct backup_target *t, const char *key, size_t max, uint8_t **buf_r,
		     size_t *len_r, const char **error_r)
{
	if (t == NULL) {
		*error_r = "no backup target configured";
		return -1;
	}
	return backup_target_get(t, key, max, buf_r, len_r, error_r);
}

/* qsort comparison of two C strings. */
static int wal_cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int backup_wal_list(struct backup_target *t, const char *prefix, json_t **names_r,
		    const char **error_r)
{
	char p[256];
	char **keys = NULL;
	size_t n = 0, plen;
	json_t *arr;
	const char *last = NULL;

	*names_r = NULL;
	if (t == NULL || WAL_PATHF(p, "%s/", prefix)) {
		*error_r = t == NULL ? "no backup target configured" : "bad storage key";
		return -1;
	}
	if (backup_target_list(t, p, &keys, &n, error_r) < 0)
		return -1;
	*names_r = arr = json_array();
	if (arr == NULL) {
		backup_keys_free(keys, n);
		*error_r = "out of memory";
		return -1;
	}
	/* One level below prefix: "cell/base/<id>/chunk-…" names <id>, once. */
	plen = strlen(p);
	for (size_t i = 0; i < n; i++) {
		char *slash = strchr(keys[i] + plen, '/');

		if (slash != NULL)
			*slash = '\0';
	}
	if (n > 0)
		qsort(keys, n, sizeof *keys, wal_cmp_names);
	for (size_t i = 0; i < n; i++) {
		const char *name = keys[i] + plen;

		if (name[0] == '\0' || (last != NULL && strcmp(last, name) == 0))
			continue;
		if (json_array_append_new(arr, json_string(name)) < 0) {
			backup_keys_free(keys, n);
			*error_r = "out of memory";
			return -1;
		}
		last = name;
	}
	backup_keys_free(keys, n);
	return 0;
}

/* qsort: "…/manifest" first, so a base backup being removed stops counting as
 * complete before its chunks go. */
static int wal_cmp_manifest_first(const void *a, const void *b)
{
	const char *x = *(char *const *)a, *y = *(char *const *)b;
	size_t xl = strlen(x), yl = strlen(y);
	int xm = xl >= 9 && strcmp(x + xl - 9, "/manifest") == 0;
	int ym = yl >= 9 && strcmp(y + yl - 9, "/manifest") == 0;

	return xm != ym ? ym - xm : strcmp(x, y);
}

int backup_wal_remove(struct backup_target *t, const char *key, const char **error_r)
{
	char p[256];
	char **keys = NULL;
	size_t n = 0;
	int ret = 0;

	if (t == NULL || WAL_PATHF(p, "%s/", key)) {
		*error_r = t == NULL ? "no backup target configured" : "bad storage key";
		return -1;
	}
	if (backup_target_list(t, p, &keys, &n, error_r) < 0)
		return -1;
	if (n == 0) { /* one object */
		backup_keys_free(keys, n);
		return backup_target_delete(t, key, error_r);
	}
	qsort(keys, n, sizeof *keys, wal_cmp_manifest_first);
	for (size_t i = 0; ret == 0 && i < n; i++)
		ret = backup_target_delete(t, keys[i], error_r);
	backup_keys_free(keys, n);
	return ret;
}

/* nftw callback: remove one entry (depth first). */
static int wal_rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return flag == FTW_DP ? rmdir(p) : unlink(p);
}

/* rm -rf path (no symlink followed); 0 if gone. Scratch directories only. */
static int wal_rmtree(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISDIR(st.st_mode))
		return unlink(path);
	return nftw(path, wal_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ------------------------------------------------------------------ format */

int backup_wal_cell_key(const uint8_t kek[CRYPTO_KEY_LEN], const char *region,
			uint8_t key[CRYPTO_KEY_LEN])
{
	char info[96];

	if (WAL_PATHF(info, "ward backup cell v1|%s", region))
		return -1;
	return crypto_hkdf(kek, CRYPTO_KEY_LEN, NULL, 0, info, key, CRYPTO_KEY_LEN);
}

int backup_wal_name_ok(const char *name)
{
	size_t n = name != NULL ? strlen(name) : 0;
	size_t hex = n > 0 ? strspn(name, "0123456789ABCDEF") : 0;

	if (n == 24 && hex == 24)
		return 1; /* a segment */
	if (hex == 24 &&
	    (strcmp(name + 24, ".partial") == 0 ||
	     (n == 24 + 1 + 8 + 7 && name[24] == '.' &&
	      strspn(name + 25, "0123456789ABCDEF") == 8 && strcmp(name + 33, ".backup") == 0)))
		return 1;
	return n == 16 && hex == 8 && strcmp(name + 8, ".history") == 0;
}

/* The AAD of a segment: region, name and plaintext size. */
static void wal_aad(char *out, size_t size, const char *region, const char *name, size_t len)
{
	snprintf(out, size, "ward-wal/1|%s|%s|%zu", region, name, len);
}

int backup_wal_seal(const uint8_t key[CRYPTO_KEY_LEN], uint32_t kek_version, const char *region,
		    const char *name, const void *pt, size_t len, uint8_t **out_r,
		    size_t *out_len_r)
{
	char aad[160];
	uint8_t *sealed = NULL, *out;
	size_t slen;

	wal_aad(aad, sizeof aad, region, name, len);
	if (crypto_seal(key, kek_version, aad, strlen(aad), pt, len, &sealed, &slen) < 0)
		return -1;
	out = malloc(BACKUP_MAGIC_LEN + slen);
	if (out == NULL) {
		free(sealed);
		return -1;
	}
	memcpy(out, BACKUP_WAL_MAGIC, BACKUP_MAGIC_LEN);
	memcpy(out + BACKUP_MAGIC_LEN, sealed, slen);
	free(sealed);
	*out_r = out;
	*out_len_r = BACKUP_MAGIC_LEN + slen;
	return 0;
}

int backup_wal_kek_version(const uint8_t *in, size_t in_len, uint32_t *version_r)
{
	if (in_len < BACKUP_MAGIC_LEN + CRYPTO_SEAL_OVERHEAD ||
	    memcmp(in, BACKUP_WAL_MAGIC, BACKUP_MAGIC_LEN) != 0)
		return -1;
	return crypto_sealed_key_version(in + BACKUP_MAGIC_LEN, in_len - BACKUP_MAGIC_LEN,
					 version_r);
}

int backup_wal_open(const uint8_t key[CRYPTO_KEY_LEN], const char *region, const char *name,
		    const uint8_t *in, size_t in_len, uint8_t **out_r, size_t *out_len_r)
{
	char aad[160];

	if (in_len < BACKUP_MAGIC_LEN + CRYPTO_SEAL_OVERHEAD ||
	    memcmp(in, BACKUP_WAL_MAGIC, BACKUP_MAGIC_LEN) != 0)
		return -1;
	wal_aad(aad, sizeof aad, region, name, in_len - BACKUP_MAGIC_LEN - CRYPTO_SEAL_OVERHEAD);
	return crypto_open(key, aad, strlen(aad), in + BACKUP_MAGIC_LEN, in_len - BACKUP_MAGIC_LEN,
			   out_r, out_len_r, NULL);
}

int backup_wal_segment_of(const char *lsn, unsigned tli, unsigned seg_mib, char out[25])
{
	unsigned long long hi, lo, pos, seg, per;
	char *end;

	if (lsn == NULL || seg_mib == 0 || tli == 0)
		return -1;
	errno = 0;
	hi = strtoull(lsn, &end, 16);
	if (errno != 0 || end == lsn || *end != '/' || hi > 0xffffffffULL)
		return -1;
	lo = strtoull(end + 1, &end, 16);
	if (errno != 0 || (*end != '\0' && *end != ' ') || lo > 0xffffffffULL)
		return -1;
	pos = (hi << 32) | lo;
	seg = pos / ((unsigned long long)seg_mib * 1024 * 1024);
	per = 0x100000000ULL / ((unsigned long long)seg_mib * 1024 * 1024);
	snprintf(out, 25, "%08X%08X%08X", tli, (unsigned)(seg / per), (unsigned)(seg % per));
	return 0;
}

/* ------------------------------------------------------------------ processes */

/* fork and exec argv (no shell) with stdin/stdout on the given fds (-1: /dev/null),
 * stderr to errfile (or /dev/null), and PGPASSWORD in the environment if given. The
 * child holds no other descriptor of the daemon. Returns the pid or -1. */
static pid_t wal_spawn(char *const argv[], int in_fd, int out_fd, const char *errfile,
		       const char *pgpassword)
{
	/* The child's environment is built before fork: jobs run on a worker thread,
	 * and between fork and exec only async-signal-safe calls are made. */
	size_t n = 0, k = 0;
	char **envp, *pw = NULL;
	pid_t pid;

	while (environ != NULL && environ[n] != NULL)
		n++;
	envp = calloc(n + 2, sizeof *envp);
	if (envp == NULL || (pgpassword != NULL && asprintf(&pw, "PGPASSWORD=%s", pgpassword) < 0)) {
		free(envp);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "PGPASSWORD=", 11) != 0)
			envp[k++] = environ[i];
	if (pw != NULL)
		envp[k++] = pw;
	envp[k] = NULL;
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		int err =
		    errfile != NULL ? open(errfile, O_WRONLY | O_CREAT | O_APPEND, 0600) : null;

		if (null < 0 || err < 0 || dup2(in_fd >= 0 ? in_fd : null, 0) < 0 ||
		    dup2(out_fd >= 0 ? out_fd : null, 1) < 0 || dup2(err, 2) < 0)
			_exit(127);
		closefrom(3);
		signal(SIGPIPE, SIG_DFL);
		execve(argv[0], argv, envp);
		_exit(127);
	}
	if (pw != NULL) {
		crypto_wipe(pw, strlen(pw));
		free(pw);
	}
	free(envp);
	return pid;
}

/* Wait for pid; 0 if it exited 0. */
static int wal_wait(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Run argv to completion; 0 if it exited 0. */
static int wal_run(char *const argv[], const char *errfile)
{
	pid_t pid = wal_spawn(argv, -1, -1, errfile, NULL);

	return pid < 0 ? -1 : wal_wait(pid);
}

/* ------------------------------------------------------------------ base backups */

/* One base backup as its manifest says. */
struct wal_base {
	char id[33];
	int64_t started_ms, finished_ms;
	char start_wal[25];
	json_t *manifest;
};

static int64_t wal_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The key of one base backup (salt from its manifest or new) under the cell key of
 * KEK version kek_version (the manifest header records it; 0: the daemon's KEK). */
static int wal_base_key(const struct backup_ctx *c, uint32_t kek_version,
			const uint8_t salt[BACKUP_SALT_LEN], const char *id, char tenant[64],
			uint8_t key[CRYPTO_KEY_LEN])
{
	uint8_t cell[CRYPTO_KEY_LEN];
	const uint8_t *kek = c->kek;
	int r;

	snprintf(tenant, 64, "cell-%s", c->region);
	if (kek_version != 0 && c->d != NULL)
		kek = daemon_kek_version(c->d, kek_version);
	if (kek == NULL || backup_wal_cell_key(kek, c->region, cell) < 0)
		return -1;
	r = backup_key_derive(cell, salt, tenant, id, key);
	crypto_wipe(cell, sizeof cell);
	return r;
}

/* Read and open the manifest of base backup id into b; -1 with a message. */
static int wal_base_load(const struct backup_ctx *c, const char *id, struct wal_base *b,
			 const char **error_r)
{
	char k[128], tenant[64];
	uint8_t salt[BACKUP_SALT_LEN], key[CRYPTO_KEY_LEN], *buf = NULL;
	uint32_t ver;
	size_t len;
	char *json = NULL;
	json_error_t jerr;
	int r;

	memset(b, 0, sizeof *b);
	snprintf(k, sizeof k, "cell/base/%s/manifest", id);
	r = backup_wal_fetch(c->target, k, BACKUP_MANIFEST_MAX, &buf, &len, error_r);
	if (r != 0) {
		if (r > 0)
			*error_r = wal_error("base backup %s has no manifest (incomplete)", id);
		return -1;
	}
	r = -1;
	if (backup_manifest_header(buf, len, salt, &ver) < 0 ||
	    wal_base_key(c, ver, salt, id, tenant, key) < 0 ||
	    backup_manifest_open(key, tenant, id, buf, len, &json) < 0) {
		*error_r = wal_error("base backup %s: the manifest does not authenticate", id);
		goto out;
	}
	b->manifest = json_loads(json, 0, &jerr);
	if (b->manifest == NULL ||
	    json_unpack(b->manifest, "{s:I, s:I}", "started_ms", &b->started_ms, "finished_ms",
			&b->finished_ms) < 0 ||
	    json_string_value(json_object_get(b->manifest, "start_wal")) == NULL) {
		*error_r = wal_error("base backup %s: malformed manifest", id);
		goto out;
	}
	snprintf(b->id, sizeof b->id, "%s", id);
	snprintf(b->start_wal, sizeof b->start_wal, "%s",
		 json_string_value(json_object_get(b->manifest, "start_wal")));
	r = 0;
out:
	crypto_wipe(key, sizeof key);
	free(buf);
	free(json);
	if (r < 0) {
		json_decref(b->manifest);
		b->manifest = NULL;
	}
	return r;
}

static void wal_bases_free(struct wal_base *v, size_t n)
{
	for (size_t i = 0; v != NULL && i < n; i++)
		json_decref(v[i].manifest);
	free(v);
}

/* qsort: oldest first. */
static int wal_cmp_base(const void *a, const void *b)
{
	const struct wal_base *x = a, *y = b;

	return x->finished_ms < y->finished_ms ? -1 : x->finished_ms > y->finished_ms;
}

/* Every complete base backup, oldest first. Unreadable ones are skipped with a
 * warning (they cannot be restored from anyway). */
static int wal_bases(const struct backup_ctx *c, struct wal_base **v_r, size_t *n_r,
		     const char **error_r)
{
	json_t *names = NULL, *name;
	struct wal_base *v;
	size_t i, n = 0;

	if (backup_wal_list(c->target, "cell/base", &names, error_r) < 0) {
		json_decref(names);
		return -1;
	}
	v = calloc(json_array_size(names) + 1, sizeof *v);
	if (v == NULL) {
		json_decref(names);
		return -1;
	}
	json_array_foreach(names, i, name)
	{
		const char *id = json_string_value(name), *err = NULL;

		if (id == NULL || strlen(id) != 32 || strspn(id, "0123456789abcdef") != 32)
			continue;
		if (wal_base_load(c, id, &v[n], &err) < 0) {
			log_warn("%s", err);
			continue;
		}
		n++;
	}
	json_decref(names);
	qsort(v, n, sizeof *v, wal_cmp_base);
	*v_r = v;
	*n_r = n;
	return 0;
}

/* The start point of a backup from pg_basebackup -v's messages, as a segment name. */
static int wal_start_segment(const char *logfile, unsigned seg_mib, char out[25])
{
	static const char tag[] = "write-ahead log start point: ";
	char line[512];
	FILE *f = fopen(logfile, "re");
	int r = -1;

	if (f == NULL)
		return -1;
	while (r < 0 && fgets(line, sizeof line, f) != NULL) {
		char *p = strstr(line, tag), lsn[40];
		unsigned tli;

		if (p != NULL && sscanf(p + sizeof tag - 1, "%39s on timeline %u", lsn, &tli) == 2)
			r = backup_wal_segment_of(lsn, tli, seg_mib, out);
	}
	fclose(f);
	return r;
}

int backup_wal_base(const struct backup_ctx *c, const char *conninfo, const char *password,
		    json_t **out_r, const char **error_r)
{
	char id[33] = "", tenant[64], k[160], logfile[4200], label[64], pgbb[1024], start[25] = "";
	char hex[65];
	uint8_t salt[BACKUP_SALT_LEN], key[CRYPTO_KEY_LEN], sha[32], *buf = NULL, *mf = NULL;
	/* A cell's physical backup is large: chunks of at least 1 MiB whatever
	 * backup.chunk_kib says for tenant backups (1 KiB would be a request per KiB). */
	size_t chunk = (size_t)(c->conf->chunk_kib < 1024 ? 1024 : c->conf->chunk_kib) * 1024;
	size_t fill = 0, mlen;
	int64_t started = wal_now_ms(), bytes = 0;
	json_t *chunks = json_array(), *manifest = NULL;
	char *mjson = NULL;
	uint32_t index = 0, kek_version;
	int pipefd[2] = {-1, -1}, ret = -1, eof = 0;
	unsigned seg_mib;
	pid_t pid = -1;
	PGresult *res;

	if (chunks == NULL || c->target == NULL || c->kek == NULL)
		goto out;
	/* Segment names follow from LSNs only with the cluster's segment size. */
	res = db_exec(c->db,
		      "SELECT setting::bigint / 1048576 FROM pg_settings "
		      "WHERE name = 'wal_segment_size'",
		      0, NULL, error_r);
	if (res == NULL || PQntuples(res) != 1 ||
	    (seg_mib = (unsigned)atoi(PQgetvalue(res, 0, 0))) == 0 || seg_mib > 1024) {
		PQclear(res);
		*error_r = "cannot read wal_segment_size";
		goto out;
	}
	PQclear(res);
	kek_version = c->d != NULL ? daemon_kek_current(c->d) : 0;
	if (crypto_random_id(id) < 0 || crypto_random(salt, sizeof salt) < 0 ||
	    wal_base_key(c, kek_version, salt, id, tenant, key) < 0) {
		*error_r = "cannot derive the base backup key";
		goto out;
	}
	snprintf(label, sizeof label, "ward base %s", id);
	snprintf(logfile, sizeof logfile, "%s/.basebackup-%s.log", c->conf->scratch_dir, id);
	snprintf(pgbb, sizeof pgbb, "%s/pg_basebackup", c->conf->pg_bin);
	buf = malloc(chunk);
	if (buf == NULL || pipe2(pipefd, O_CLOEXEC) < 0) {
		*error_r = "out of memory";
		goto out;
	}
	{
		/* Tar to stdout with the WAL needed for consistency inside (-X fetch). */
		char *argv[] = {pgbb,	 "-d", (char *)conninfo, "-D", "-",   "-F", "t",  "-X",
				"fetch", "-c", "fast",		 "-l", label, "-v", "-w", NULL};

		pid = wal_spawn(argv, -1, pipefd[1], logfile, password);
	}
	close(pipefd[1]);
	pipefd[1] = -1;
	if (pid < 0) {
		*error_r = "cannot start pg_basebackup";
		goto out;
	}
	while (!eof) {
		ssize_t n = read(pipefd[0], buf + fill, chunk - fill);
		uint8_t *sealed = NULL;
		size_t slen;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*error_r = "cannot read from pg_basebackup";
			goto out;
		}
		eof = n == 0;
		fill += (size_t)n;
		if (fill < chunk && !eof)
			continue;
		if (fill == 0)
			break;
		if (atomic_load(&backup_cancel)) { /* SIGTERM: stop at this chunk */
			*error_r = "ward-backup is shutting down";
			goto out;
		}
		snprintf(k, sizeof k, "cell/base/%s/chunk-%06u", id, index);
		if (backup_chunk_seal(key, 1, tenant, id, index, buf, fill, &sealed, &slen) < 0 ||
		    crypto_sha256(sealed, slen, sha) < 0 ||
		    backup_wal_store(c->target, k, sealed, slen, error_r) < 0) {
			free(sealed);
			if (*error_r == NULL)
				*error_r = "cannot seal a chunk";
			goto out;
		}
		free(sealed);
		crypto_hex(sha, sizeof sha, hex);
		json_array_append_new(
		    chunks, json_pack("{s:I, s:s}", "size", (json_int_t)slen, "sha256", hex));
		bytes += (int64_t)fill;
		index++;
		crypto_wipe(buf, fill);
		fill = 0;
	}
	close(pipefd[0]);
	pipefd[0] = -1;
	if (wal_wait(pid) < 0) {
		pid = -1;
		*error_r = wal_error("pg_basebackup failed (see %s)", logfile);
		goto out;
	}
	pid = -1;
	if (index == 0 || wal_start_segment(logfile, seg_mib, start) < 0) {
		*error_r = wal_error("pg_basebackup gave no start point (see %s)", logfile);
		goto out;
	}
	manifest = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:I, s:O}", "format", 1,
			     "kind", "cell-base", "backup_id", id, "region", c->region,
			     "started_ms", (json_int_t)started, "finished_ms",
			     (json_int_t)wal_now_ms(), "start_wal", start, "chunk_size",
			     (json_int_t)chunk, "bytes", (json_int_t)bytes, "chunks", chunks);
	mjson = manifest != NULL ? json_dumps(manifest, JSON_COMPACT) : NULL;
	snprintf(k, sizeof k, "cell/base/%s/manifest", id);
	if (mjson == NULL ||
	    backup_manifest_seal(key, kek_version != 0 ? kek_version : 1, salt, tenant, id, mjson,
				 &mf, &mlen) < 0 ||
	    backup_wal_store(c->target, k, mf, mlen, error_r) < 0) {
		if (*error_r == NULL)
			*error_r = "cannot write the base backup manifest";
		goto out;
	}
	(void)unlink(logfile);
	log_info("base backup %s of cell %s: %lld bytes, %u chunks, from WAL %s", id, c->region,
		 (long long)bytes, index, start);
	*out_r = json_pack("{s:s, s:s, s:s, s:I, s:i, s:s}", "region", c->region, "base_backup_id",
			   id, "kind", "cell-base", "bytes", (json_int_t)bytes, "chunks",
			   (int)index, "start_wal", start);
	ret = *out_r != NULL ? 0 : -1;
out:
	if (pid > 0) {
		kill(pid, SIGTERM);
		(void)wal_wait(pid);
	}
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	if (ret < 0 && c->target != NULL && id[0] != '\0') {
		const char *ignored = NULL;

		snprintf(k, sizeof k, "cell/base/%s", id);
		(void)backup_wal_remove(c->target, k, &ignored);
	}
	if (buf != NULL)
		crypto_wipe(buf, chunk);
	crypto_wipe(key, sizeof key);
	free(buf);
	free(mf);
	free(mjson);
	json_decref(manifest);
	json_decref(chunks);
	return ret;
}

/* ------------------------------------------------------------------ retention */

/* A cell purge as an audit event of the platform (no tenant), committed on its own
 * after the objects are gone; detail is taken over. */
static int wal_audit_purge(const struct backup_ctx *c, const char *target, json_t *detail,
			   const char **error_r)
{
	Ward__AuditEvent ev = WARD__AUDIT_EVENT__INIT;
	char *dj = NULL;
	int ret = -1;

	if (detail == NULL || json_object_set_new(detail, "reason", json_string("retention")) < 0 ||
	    json_object_set_new(detail, "region", json_string(c->region)) < 0 ||
	    json_object_set_new(detail, "target", json_string(backup_target_name(c->target))) <
		0 ||
	    (dj = json_dumps(detail, JSON_COMPACT)) == NULL) {
		*error_r = "out of memory";
		goto out;
	}
	ev.tenant_id = "";
	ev.type = "backup";
	ev.action = "purge";
	ev.actor = (char *)c->actor;
	ev.target = (char *)target;
	ev.detail_json = dj;
	if (db_begin(c->db, NULL, error_r) < 0)
		goto out;
	if (auditlog_record(c->db, "backup", &ev, error_r) < 0 || db_commit(c->db, error_r) < 0) {
		db_rollback(c->db);
		goto out;
	}
	ret = 0;
out:
	free(dj);
	json_decref(detail);
	return ret;
}

int backup_wal_expire(const struct backup_ctx *c, int64_t now_ms, json_t **out_r,
		      const char **error_r)
{
	int64_t cutoff = now_ms - (int64_t)c->conf->retention_days * 86400 * 1000;
	struct wal_base *v = NULL;
	size_t n = 0, keep = 0, i;
	json_t *gone_b = json_array(), *gone_w = json_array(), *names = NULL, *name;
	char k[160];
	int rmfail = 0;

	if (gone_b == NULL || gone_w == NULL || wal_bases(c, &v, &n, error_r) < 0)
		goto fail;
	/* Keep the newest base backup finished at or before the cutoff (a restore to
	 * exactly the cutoff starts there) and every newer one. */
	for (i = 0; i < n; i++)
		if (v[i].finished_ms <= cutoff)
			keep = i;
	for (i = 0; i < keep; i++) {
		snprintf(k, sizeof k, "cell/base/%s", v[i].id);
		if (backup_wal_remove(c->target, k, error_r) < 0 ||
		    wal_audit_purge(c, v[i].id,
				    json_pack("{s:s, s:I}", "kind", "cell-base", "finished_ms",
					      (json_int_t)v[i].finished_ms),
				    error_r) < 0)
			goto fail;
		json_array_append_new(gone_b, json_string(v[i].id));
		log_info("retention: base backup %s of cell %s purged", v[i].id, c->region);
	}
	/* WAL before the oldest kept base backup's start reaches no time kept. With no
	 * base backup at all, nothing goes: the WAL may be all there is. */
	if (n > 0) {
		if (backup_wal_list(c->target, "cell/wal", &names, error_r) < 0)
			goto fail;
		json_array_foreach(names, i, name)
		{
			const char *w = json_string_value(name);

			if (w == NULL || strlen(w) < 24 || strspn(w, "0123456789ABCDEF") < 24 ||
			    strncmp(w, v[keep].start_wal, 24) >= 0)
				continue; /* timeline histories stay: they are tiny */
			snprintf(k, sizeof k, "cell/wal/%s", w);
			if (backup_wal_remove(c->target, k, error_r) < 0) {
				rmfail = 1;
				break;
			}
			json_array_append_new(gone_w, json_string(w));
		}
		json_decref(names);
		names = NULL;
		/* The segments purged (in order), one event: also when a removal failed
		 * half-way, so what is gone is on record. */
		if (json_array_size(gone_w) > 0 &&
		    wal_audit_purge(
			c, "cell/wal",
			json_pack("{s:s, s:I, s:s, s:s}", "kind", "cell-wal", "segments",
				  (json_int_t)json_array_size(gone_w), "first",
				  json_string_value(json_array_get(gone_w, 0)), "last",
				  json_string_value(
				      json_array_get(gone_w, json_array_size(gone_w) - 1))),
			error_r) < 0)
			goto fail;
		if (rmfail)
			goto fail;
	}
	*out_r =
	    json_pack("{s:s, s:I, s:s, s:o, s:I, s:i}", "region", c->region, "cutoff_ms",
		      (json_int_t)cutoff, "oldest_kept_base", n > 0 ? v[keep].id : "",
		      "purged_base_backups", gone_b, "purged_wal_segments",
		      (json_int_t)json_array_size(gone_w), "base_backups_kept", (int)(n - keep));
	json_decref(gone_w);
	wal_bases_free(v, n);
	return *out_r != NULL ? 0 : -1;
fail:
	json_decref(names);
	json_decref(gone_b);
	json_decref(gone_w);
	wal_bases_free(v, n);
	return -1;
}

/* ------------------------------------------------------------------ restore */

void backup_wal_set_self(const char *config_path)
{
	ssize_t n = readlink("/proc/self/exe", wal_self_exe, sizeof wal_self_exe - 1);

	char *abs = config_path != NULL ? realpath(config_path, NULL) : NULL;

	wal_self_exe[n > 0 ? n : 0] = '\0';
	if (abs == NULL || WAL_PATHF(wal_self_config, "%s", abs))
		wal_self_config[0] = '\0';
	free(abs);
}

/* A free loopback TCP port (the kernel's choice); 0 if none. */
static int wal_free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = 0;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

/* Decrypt base backup b into the tar at data (tar -x); every chunk checked against
 * the manifest before it is fed in. */
static int wal_unpack(const struct backup_ctx *c, const struct wal_base *b, const char *data,
		      const char *errfile, const char **error_r)
{
	uint8_t salt[BACKUP_SALT_LEN], key[CRYPTO_KEY_LEN], *mbuf = NULL, sha[32];
	char k[160], tenant[64], hex[65];
	json_t *chunks = json_object_get(b->manifest, "chunks"), *ch;
	size_t i, mlen;
	uint32_t ver;
	int pipefd[2] = {-1, -1}, ret = -1;
	pid_t pid = -1;
	char *argv[] = {"/bin/tar", "-x", "-f", "-", "-C", (char *)data, NULL};

	snprintf(k, sizeof k, "cell/base/%s/manifest", b->id);
	if (backup_wal_fetch(c->target, k, BACKUP_MANIFEST_MAX, &mbuf, &mlen, error_r) != 0 ||
	    backup_manifest_header(mbuf, mlen, salt, &ver) < 0 ||
	    wal_base_key(c, ver, salt, b->id, tenant, key) < 0) {
		*error_r = wal_error("base backup %s: cannot read its manifest", b->id);
		goto out;
	}
	if (!json_is_array(chunks) || json_array_size(chunks) == 0) {
		*error_r = wal_error("base backup %s: no chunks in the manifest", b->id);
		goto out;
	}
	if (pipe2(pipefd, O_CLOEXEC) < 0 ||
	    (pid = wal_spawn(argv, pipefd[0], -1, errfile, NULL)) < 0) {
		*error_r = "cannot start tar";
		goto out;
	}
	close(pipefd[0]);
	pipefd[0] = -1;
	json_array_foreach(chunks, i, ch)
	{
		uint8_t *in = NULL, *pt = NULL;
		size_t in_len, pt_len, off = 0;
		const char *want = json_string_value(json_object_get(ch, "sha256"));
		int r;

		snprintf(k, sizeof k, "cell/base/%s/chunk-%06zu", b->id, i);
		r = backup_wal_fetch(c->target, k, BACKUP_CHUNK_MAX + 4096, &in, &in_len, error_r);
		if (r != 0) {
			*error_r = wal_error("base backup %s: chunk %zu %s", b->id, i,
					     r > 0 ? "is missing" : "cannot be read");
			goto out;
		}
		(void)crypto_sha256(in, in_len, sha);
		crypto_hex(sha, sizeof sha, hex);
		if (want == NULL || strcmp(want, hex) != 0 ||
		    backup_chunk_open(key, tenant, b->id, (uint32_t)i, in, in_len, &pt, &pt_len) <
			0) {
			free(in);
			*error_r = wal_error("base backup %s: chunk %zu fails its check (tampered)",
					     b->id, i);
			goto out;
		}
		free(in);
		while (off < pt_len) {
			ssize_t n = write(pipefd[1], pt + off, pt_len - off);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			off += (size_t)n;
		}
		crypto_wipe(pt, pt_len);
		free(pt);
		if (off < pt_len) {
			*error_r = "tar stopped reading (see its messages)";
			goto out;
		}
	}
	close(pipefd[1]);
	pipefd[1] = -1;
	ret = wal_wait(pid);
	pid = -1;
	if (ret < 0)
		*error_r = wal_error("tar could not unpack base backup %s", b->id);
out:
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	if (pid > 0)
		(void)wal_wait(pid);
	crypto_wipe(key, sizeof key);
	free(mbuf);
	return ret;
}

/* Append the recovery settings to the scratch cluster's configuration. */
static int wal_recovery_conf(const struct backup_ctx *c, const char *scratch, const char *data,
			     int port, int64_t to_ms)
{
	char path[4200], when[64];
	time_t s = (time_t)(to_ms / 1000);
	struct tm tm;
	FILE *f;
	int fd;

	gmtime_r(&s, &tm);
	strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
	if (WAL_PATHF(path, "%s/postgresql.auto.conf", data))
		return -1;
	f = fopen(path, "ae");
	if (f == NULL)
		return -1;
	/* Later lines win: the live cell's archive_command must never run here (the
	 * scratch cluster would archive a new timeline into the cell's archive). */
	fprintf(f,
		"\n# ward-backup point-in-time restore of cell %s\n"
		"port = %d\n"
		"listen_addresses = '127.0.0.1'\n"
		"unix_socket_directories = '%s'\n"
		"archive_mode = off\n"
		"archive_command = ''\n"
		"hot_standby = off\n"
		"restore_command = '%s wal-fetch %%f %%p --config %s --notes %s/fetch.notes'\n"
		"recovery_target_time = '%s.%03d+00'\n"
		"recovery_target_inclusive = on\n"
		"recovery_target_action = 'promote'\n"
		"recovery_target_timeline = 'current'\n",
		c->region, port, scratch, wal_self_exe, wal_self_config, scratch, when,
		(int)(to_ms % 1000));
	if (fclose(f) != 0)
		return -1;
	if (WAL_PATHF(path, "%s/recovery.signal", data))
		return -1;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

/* Why recovery failed, from wal-fetch's notes and the server's log. */
static const char *wal_why(const char *scratch, const char *when)
{
	char path[4200], line[512], missing[64] = "", corrupt[512] = "", fatal[320] = "";
	char unreadable[80] = "";
	FILE *f;
	int not_reached = 0;

	snprintf(path, sizeof path, "%s/fetch.notes", scratch);
	if ((f = fopen(path, "re")) != NULL) {
		while (fgets(line, sizeof line, f) != NULL) {
			line[strcspn(line, "\n")] = '\0';
			if (strncmp(line, "unreadable ", 11) == 0 && unreadable[0] == '\0')
				snprintf(unreadable, sizeof unreadable, "%.64s", line + 11);
			else if (strncmp(line, "corrupt ", 8) == 0 && corrupt[0] == '\0')
				snprintf(corrupt, sizeof corrupt, "%.64s", line + 8);
			else if (strncmp(line, "missing ", 8) == 0 && missing[0] == '\0' &&
				 strlen(line + 8) == 24)
				memcpy(missing, line + 8, 25); /* 24 characters and the NUL */
		}
		fclose(f);
	}
	snprintf(path, sizeof path, "%s/postgres.log", scratch);
	if ((f = fopen(path, "re")) != NULL) {
		while (fgets(line, sizeof line, f) != NULL) {
			char *p = strstr(line, "FATAL:");

			if (strstr(line, "recovery ended before configured recovery target") !=
			    NULL)
				not_reached = 1;
			if (p != NULL && fatal[0] == '\0' &&
			    strstr(p, "not accepting connections") == NULL &&
			    strstr(p, "is starting up") == NULL) {
				p[strcspn(p, "\n")] = '\0';
				snprintf(fatal, sizeof fatal, " (%.300s)", p);
			}
		}
		fclose(f);
	}
	if (unreadable[0] != '\0')
		return wal_error("cannot restore to %s: WAL segment %s could not be read from "
				 "the backup target (unreachable or refused); nothing was restored",
				 when, unreadable);
	if (corrupt[0] != '\0')
		return wal_error("cannot restore to %s: WAL segment %s fails authentication "
				 "(corrupted or tampered); nothing was restored",
				 when, corrupt);
	if (missing[0] != '\0' && not_reached)
		return wal_error("cannot restore to %s: WAL segment %s is missing from the "
				 "archive (recovery ended before the target time); nothing was "
				 "restored",
				 when, missing);
	return wal_error("cannot restore to %s: the scratch cluster did not recover%s; "
			 "nothing was restored",
			 when, not_reached ? " (recovery ended before the target time)" : fatal);
}

/* Stop the scratch cluster (if running) and remove its directory. */
static void wal_scratch_remove(const struct backup_ctx *c, const char *scratch)
{
	char data[4200], pid[4300], pgctl[1100];

	snprintf(data, sizeof data, "%s/data", scratch);
	snprintf(pid, sizeof pid, "%s/postmaster.pid", data);
	snprintf(pgctl, sizeof pgctl, "%s/pg_ctl", c->conf->pg_bin);
	if (access(pid, F_OK) == 0) {
		char *argv[] = {pgctl, "-D", data, "-m", "immediate", "-w", "stop", NULL};

		(void)wal_run(argv, NULL);
	}
	(void)wal_rmtree(scratch);
}

/* Every row of tenant_id in the scratch cluster, table by table (JSON arrays). */
static int wal_tenant_read(db_t *scratch, const char *tenant_id, json_t **tables_r,
			   const char **error_r)
{
	const char *p1[1] = {tenant_id};
	json_t *tables = json_array();
	PGresult *res = NULL, *rows;
	int ret = -1;

	if (tables == NULL)
		return -1;
	res = db_exec(scratch, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, error_r);
	if (res == NULL)
		goto out;
	PQclear(res);
	res = db_exec(scratch, "SELECT set_config('app.tenant_id', $1, true)", 1, p1, error_r);
	if (res == NULL)
		goto out;
	PQclear(res);
	res = db_exec(scratch, "SELECT 1 FROM tenant.tenants WHERE id = $1", 1, p1, error_r);
	if (res == NULL)
		goto out;
	if (PQntuples(res) != 1) {
		*error_r = "the tenant did not exist at that time";
		goto out;
	}
	PQclear(res);
	res = db_exec(scratch, "SELECT sch, tbl FROM backup.tenant_tables()", 0, NULL, error_r);
	if (res == NULL)
		goto out;
	for (int i = 0; i < PQntuples(res); i++) {
		const char *p[2] = {PQgetvalue(res, i, 0), PQgetvalue(res, i, 1)};

		rows = db_exec(scratch,
			       "SELECT count(*), '[' || coalesce(string_agg(r, ','), '') || ']' "
			       "FROM backup.dump_rows($1, $2) r",
			       2, p, error_r);
		if (rows == NULL)
			goto out;
		json_array_append_new(tables,
				      json_pack("{s:s, s:s, s:I, s:s}", "sch", p[0], "tbl", p[1],
						"rows", (json_int_t)atoll(PQgetvalue(rows, 0, 0)),
						"json", PQgetvalue(rows, 0, 1)));
		PQclear(rows);
	}
	ret = 0;
out:
	PQclear(res);
	db_rollback(scratch);
	if (ret == 0)
		*tables_r = tables;
	else
		json_decref(tables);
	return ret;
}

/* Replace tenant_id's rows in the live cell with tables, in one transaction, with its
 * audit event; the tenant row, its keys and its audit log stay. */
static int wal_tenant_write(const struct backup_ctx *c, const char *tenant_id, json_t *tables,
			    const char *when, long long *rows_r, const char **error_r)
{
	const char *p1[1] = {tenant_id};
	Ward__AuditEvent ev = WARD__AUDIT_EVENT__INIT;
	json_t *t;
	PGresult *res;
	char *dj = NULL;
	long long rows = 0, revoked;
	json_t *detail;
	size_t i;

	if (db_begin(c->db, tenant_id, error_r) < 0)
		return -1;
	res = db_exec(c->db, "SELECT tenant.lifecycle_pitr_begin($1)", 1, p1, error_r);
	if (res == NULL)
		goto fail;
	PQclear(res);
	json_array_foreach(tables, i, t)
	{
		const char *p[4] = {tenant_id, json_string_value(json_object_get(t, "sch")),
				    json_string_value(json_object_get(t, "tbl")),
				    json_string_value(json_object_get(t, "json"))};

		res = db_exec(c->db, "SELECT tenant.lifecycle_restore_rows($1, $2, $3, $4::jsonb)",
			      4, p, error_r);
		if (res == NULL)
			goto fail;
		rows += atoll(PQgetvalue(res, 0, 0));
		PQclear(res);
	}
	res = db_exec(c->db, "SELECT tenant.lifecycle_pitr_end($1)", 1, p1, error_r);
	if (res == NULL)
		goto fail;
	revoked = atoll(PQgetvalue(res, 0, 0));
	PQclear(res);
	detail = json_pack("{s:s, s:I, s:I}", "to", when, "rows", (json_int_t)rows,
			   "sessions_revoked", (json_int_t)revoked);
	dj = detail != NULL ? json_dumps(detail, JSON_COMPACT) : NULL;
	json_decref(detail);
	ev.tenant_id = (char *)tenant_id;
	ev.type = "backup";
	ev.action = "restore-pitr";
	ev.actor = (char *)c->actor;
	ev.target = (char *)when;
	ev.detail_json = dj != NULL ? dj : "";
	if (auditlog_record(c->db, "backup", &ev, error_r) < 0 || db_commit(c->db, error_r) < 0)
		goto fail;
	free(dj);
	*rows_r = rows;
	return 0;
fail:
	free(dj);
	db_rollback(c->db);
	return -1;
}

/* Wait until the scratch cluster has replayed to the target and promoted (it takes no
 * connection before: hot_standby is off); NULL if its server stopped or it took too
 * long. Returns "pg_is_in_recovery, schema_version" and the connection in *db_r. */
static PGresult *wal_wait_promoted(const struct backup_ctx *c, const char *data,
				   const char *conninfo, const char *password, db_t **db_r)
{
	char pgctl[1100];
	char *argv[] = {pgctl, "-D", (char *)data, "status", NULL};
	int64_t deadline = wal_now_ms() + (int64_t)atoi(WAL_START_TIMEOUT_S) * 1000;
	struct timespec nap = {0, 200 * 1000 * 1000};

	snprintf(pgctl, sizeof pgctl, "%s/pg_ctl", c->conf->pg_bin);
	while (wal_now_ms() < deadline) {
		const char *err = NULL;
		db_t *db = db_connect(conninfo, password, &err);
		PGresult *res;

		if (db != NULL) {
			res = db_exec(db, "SELECT pg_is_in_recovery(), backup.schema_version()", 0,
				      NULL, &err);
			if (res != NULL && strcmp(PQgetvalue(res, 0, 0), "f") == 0) {
				*db_r = db;
				return res;
			}
			PQclear(res);
			db_free(db);
		} else if (wal_run(argv, NULL) < 0) {
			return NULL; /* the server is gone: recovery failed */
		}
		nanosleep(&nap, NULL);
	}
	return NULL;
}

int backup_wal_restore(const struct backup_ctx *c, const char *conninfo, const char *password,
		       const char *tenant_id, int64_t to_ms, json_t **out_r, const char **error_r)
{
	char id[33], scratch[4096], data[4200], logf[4300], pgctl[1100], when[40], port_s[16];
	char sconn[2048];
	struct wal_base *v = NULL;
	const struct wal_base *b = NULL;
	size_t n = 0;
	time_t s = (time_t)(to_ms / 1000);
	struct tm tm;
	int port, ret = -1, made = 0;
	db_t *sdb = NULL;
	json_t *tables = NULL;
	PGresult *res;

	gmtime_r(&s, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (wal_self_exe[0] == '\0' || wal_self_config[0] == '\0' ||
	    strpbrk(wal_self_exe, "' \\") != NULL || strpbrk(wal_self_config, "' \\") != NULL) {
		*error_r = "ward-backup cannot name itself for restore_command";
		return -1;
	}
	if (to_ms <= 0 || to_ms > wal_now_ms()) {
		*error_r = "--to must be a time in the past";
		return -1;
	}
	if (wal_bases(c, &v, &n, error_r) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (v[i].finished_ms <= to_ms)
			b = &v[i];
	if (b == NULL) {
		*error_r =
		    wal_error("no base backup of cell %s finished before %s", c->region, when);
		goto out;
	}
	if (crypto_random_id(id) < 0 ||
	    WAL_PATHF(scratch, "%s/ward-pitr-%s", c->conf->scratch_dir, id) ||
	    strpbrk(scratch, "' \\") != NULL || mkdir(scratch, 0700) < 0) {
		*error_r =
		    wal_error("cannot create a scratch directory in %s", c->conf->scratch_dir);
		goto out;
	}
	made = 1;
	snprintf(data, sizeof data, "%s/data", scratch);
	snprintf(logf, sizeof logf, "%s/postgres.log", scratch);
	snprintf(pgctl, sizeof pgctl, "%s/pg_ctl", c->conf->pg_bin);
	if (mkdir(data, 0700) < 0) {
		*error_r = "cannot create the scratch data directory";
		goto out;
	}
	if (wal_unpack(c, b, data, logf, error_r) < 0)
		goto out;
	port = wal_free_port();
	if (port == 0 || wal_recovery_conf(c, scratch, data, port, to_ms) < 0) {
		*error_r = "cannot configure the scratch cluster";
		goto out;
	}
	snprintf(port_s, sizeof port_s, "%d", port);
	{
		char *argv[] = {pgctl,	 "-D", data, "-l", logf, "-w", "-t", WAL_START_TIMEOUT_S,
				"start", NULL};

		if (wal_run(argv, NULL) < 0) {
			*error_r = wal_why(scratch, when);
			goto out;
		}
	}
	if (WAL_PATHF(sconn, "%s host=127.0.0.1 port=%d", conninfo, port) ||
	    (res = wal_wait_promoted(c, data, sconn, password, &sdb)) == NULL) {
		*error_r = wal_why(scratch, when);
		goto out;
	}
	if (tenant_id == NULL || tenant_id[0] == '\0') {
		PQclear(res);
		*out_r =
		    json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s}", "region", c->region,
			      "to", when, "base_backup_id", b->id, "scratch_id", id, "host",
			      "127.0.0.1", "port", port, "socket_dir", scratch, "data_dir", data,
			      "stop", "wardctl backup scratch-drop --region R --id <scratch_id>");
		ret = *out_r != NULL ? 0 : -1;
		if (ret == 0)
			made = 0; /* it stays up for the operator */
		goto out;
	}
	{
		const char *err = NULL;
		PGresult *live = db_exec(c->db, "SELECT backup.schema_version()", 0, NULL, &err);

		if (live == NULL || strcmp(PQgetvalue(live, 0, 0), PQgetvalue(res, 0, 1)) != 0) {
			*error_r = wal_error("schema version %s at %s differs from the live %s; "
					     "restore the cell and migrate it first",
					     PQgetvalue(res, 0, 1), when,
					     live != NULL ? PQgetvalue(live, 0, 0) : "?");
			PQclear(live);
			PQclear(res);
			goto out;
		}
		PQclear(live);
		PQclear(res);
	}
	{
		long long rows = 0;

		if (wal_tenant_read(sdb, tenant_id, &tables, error_r) < 0 ||
		    wal_tenant_write(c, tenant_id, tables, when, &rows, error_r) < 0)
			goto out;
		*out_r = json_pack("{s:b, s:s, s:s, s:s, s:s, s:I}", "restored", 1, "region",
				   c->region, "tenant_id", tenant_id, "to", when, "base_backup_id",
				   b->id, "rows", (json_int_t)rows);
		ret = *out_r != NULL ? 0 : -1;
	}
out:
	db_free(sdb);
	json_decref(tables);
	if (made)
		wal_scratch_remove(c, scratch);
	wal_bases_free(v, n);
	return ret;
}

int backup_wal_scratch_drop(const struct backup_ctx *c, const char *id, json_t **out_r,
			    const char **error_r)
{
	char scratch[4096];
	struct stat st;

	if (id == NULL || strlen(id) != 32 || strspn(id, "0123456789abcdef") != 32 ||
	    WAL_PATHF(scratch, "%s/ward-pitr-%s", c->conf->scratch_dir, id)) {
		*error_r = "scratch id: 32 hex digits";
		return -1;
	}
	if (lstat(scratch, &st) < 0 || !S_ISDIR(st.st_mode)) {
		*error_r = "no such scratch cluster";
		return -1;
	}
	wal_scratch_remove(c, scratch);
	*out_r = json_pack("{s:s, s:b}", "scratch_id", id, "dropped", 1);
	return *out_r != NULL ? 0 : -1;
}

/* ------------------------------------------------------------------ wal-push / wal-fetch */

/* Append a line to the notes file of a restore (best effort: the exit status is the
 * answer PostgreSQL acts on). */
static void wal_note(const char *notes, const char *what, const char *name)
{
	FILE *f;

	if (notes == NULL || (f = fopen(notes, "ae")) == NULL)
		return;
	fprintf(f, "%s %s\n", what, name);
	fclose(f);
}

/* Write buf to path (truncating), as restore_command's destination. */
static int wal_write_to(const char *path, const uint8_t *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t off = 0;

	if (fd < 0)
		return -1;
	while (off < len) {
		ssize_t n = write(fd, buf + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			(void)unlink(path);
			return -1;
		}
		off += (size_t)n;
	}
	return close(fd);
}

/* The cell key for a segment sealed under the ring's KEK version (0: the current
 * one, whose version is then stored in *version_r); -1 if the ring lacks it. */
static int wal_ring_key(const struct crypto_keyring *ring, const char *region, uint32_t version,
			uint8_t key[CRYPTO_KEY_LEN], uint32_t *version_r)
{
	const uint8_t *kek;

	kek = version == 0 ? crypto_keyring_current(ring, &version) :
			     crypto_keyring_find(ring, version);
	if (kek == NULL || backup_wal_cell_key(kek, region, key) < 0)
		return -1;
	if (version_r != NULL)
		*version_r = version;
	return 0;
}

/* Open a sealed segment with the cell key of the KEK version its header names. */
static int wal_open_ring(const struct crypto_keyring *ring, const char *region, const char *name,
			 const uint8_t *in, size_t len, uint8_t **out_r, size_t *out_len_r)
{
	uint8_t key[CRYPTO_KEY_LEN];
	uint32_t version;
	int r = -1;

	if (backup_wal_kek_version(in, len, &version) == 0 &&
	    wal_ring_key(ring, region, version, key, NULL) == 0)
		r = backup_wal_open(key, region, name, in, len, out_r, out_len_r);
	crypto_wipe(key, sizeof key);
	return r;
}

/* Archive one segment: seal under the current KEK's cell key, store. A segment
 * already archived with the same content is success (PostgreSQL retries after a
 * crash); with other content, failure. */
static int wal_push(struct backup_target *t, const char *region,
		    const struct crypto_keyring *ring, const char *path, const char *name)
{
	uint8_t *pt = NULL, *sealed = NULL, *old = NULL, *oldpt = NULL, key[CRYPTO_KEY_LEN];
	size_t len, slen, olen, optlen;
	uint32_t version = 0;
	char k[128];
	const char *err = NULL;
	int r, ret = 1;

	if (backup_file_read(path, BACKUP_WAL_MAX, &pt, &len) < 0) {
		fprintf(stderr, "ward-backup wal-push: cannot read %s\n", path);
		return 1;
	}
	snprintf(k, sizeof k, "cell/wal/%s", name);
	r = backup_wal_fetch(t, k, BACKUP_WAL_MAX + 4096, &old, &olen, &err);
	if (r == 0) {
		if (wal_open_ring(ring, region, name, old, olen, &oldpt, &optlen) == 0 &&
		    optlen == len && memcmp(oldpt, pt, len) == 0)
			ret = 0;
		else
			fprintf(stderr,
				"ward-backup wal-push: %s is already archived with other "
				"content; refusing to overwrite\n",
				name);
		goto out;
	}
	if (r < 0) {
		fprintf(stderr, "ward-backup wal-push: %s\n", err);
		goto out;
	}
	if (wal_ring_key(ring, region, 0, key, &version) < 0 ||
	    backup_wal_seal(key, version, region, name, pt, len, &sealed, &slen) < 0) {
		fprintf(stderr, "ward-backup wal-push: cannot seal %s\n", name);
		goto out;
	}
	if (backup_wal_store(t, k, sealed, slen, &err) < 0) {
		fprintf(stderr, "ward-backup wal-push: %s\n", err);
		goto out;
	}
	ret = 0;
out:
	crypto_wipe(key, sizeof key);
	if (pt != NULL)
		crypto_wipe(pt, len);
	if (oldpt != NULL)
		crypto_wipe(oldpt, optlen);
	free(pt);
	free(oldpt);
	free(old);
	free(sealed);
	return ret;
}

/* Restore one segment to path; 1 if absent (normal at the end of the archive). */
static int wal_fetch_one(struct backup_target *t, const char *region,
			 const struct crypto_keyring *ring, const char *name, const char *path,
			 const char *notes)
{
	uint8_t *in = NULL, *pt = NULL;
	size_t len, plen;
	char k[128];
	const char *err = NULL;
	int r, ret = 1;

	snprintf(k, sizeof k, "cell/wal/%s", name);
	r = backup_wal_fetch(t, k, BACKUP_WAL_MAX + 4096, &in, &len, &err);
	if (r > 0) {
		wal_note(notes, "missing", name);
		return 1;
	}
	if (r < 0) { /* the target failed (unreachable, refused): not the segment's fault */
		fprintf(stderr, "ward-backup wal-fetch: %s: %s\n", name, err ? err : "cannot read");
		wal_note(notes, "unreadable", name);
		goto out;
	}
	if (wal_open_ring(ring, region, name, in, len, &pt, &plen) < 0) {
		fprintf(stderr,
			"ward-backup wal-fetch: %s fails authentication (corrupted, tampered, "
			"or sealed under a KEK version no longer in the ring)\n",
			name);
		wal_note(notes, "corrupt", name);
		goto out;
	}
	if (wal_write_to(path, pt, plen) < 0) {
		fprintf(stderr, "ward-backup wal-fetch: cannot write %s: %s\n", path,
			strerror(errno));
		goto out;
	}
	wal_note(notes, "ok", name);
	ret = 0;
out:
	if (pt != NULL)
		crypto_wipe(pt, plen);
	free(pt);
	free(in);
	return ret;
}

int backup_wal_main(int argc, char **argv, const struct conf_entry *entries, size_t n,
		    struct backup_conf *conf)
{
	struct daemon_config dc;
	struct conf_section sec[2] = {
	    {daemon_conf_entries, daemon_conf_n, &dc},
	    {entries, n, conf},
	};
	const char *mode = argv[1], *config = NULL, *notes = NULL, *err = NULL;
	struct crypto_keyring ring;
	struct backup_target *t = NULL;
	char *cerr = NULL;
	int ret = 1;

	if (argc < 4) {
		fprintf(stderr,
			"usage: ward-backup wal-push PATH NAME --config FILE\n"
			"       ward-backup wal-fetch NAME PATH --config FILE [--notes FILE]\n");
		return 2;
	}
	for (int i = 4; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			config = argv[++i];
		else if (strcmp(argv[i], "--notes") == 0 && i + 1 < argc)
			notes = argv[++i];
		else {
			fprintf(stderr, "ward-backup %s: unexpected argument %s\n", mode, argv[i]);
			return 2;
		}
	}
	{
		const char *name = strcmp(mode, "wal-push") == 0 ? argv[3] : argv[2];

		if (config == NULL || !backup_wal_name_ok(name)) {
			fprintf(stderr, "ward-backup %s: needs --config and a WAL file name\n",
				mode);
			return 2;
		}
	}
	memset(&dc, 0, sizeof dc);
	memset(&ring, 0, sizeof ring);
	if (conf_load(config, sec, 2, &cerr) < 0) {
		fprintf(stderr, "ward-backup %s: %s\n", mode, cerr != NULL ? cerr : "bad config");
		free(cerr);
		return 1;
	}
	if (dc.kek.path == NULL || crypto_keyring_load(dc.kek.path, &ring, &err) < 0 ||
	    (t = backup_wal_target(conf, &err)) == NULL) {
		fprintf(stderr, "ward-backup %s: %s\n", mode,
			err != NULL ? err : "needs a backup target and kek_file");
		goto out;
	}
	if (strcmp(mode, "wal-push") == 0)
		ret = wal_push(t, dc.region, &ring, argv[2], argv[3]);
	else
		ret = wal_fetch_one(t, dc.region, &ring, argv[2], argv[3], notes);
out:
	backup_target_free(t);
	crypto_keyring_wipe(&ring);
	conf_free(sec, 2);
	return ret;
}
