/*
 * backup_target — where backup objects live: a local directory (dev stack) or an
 * S3-compatible object store (off-site, one bucket per region), behind one
 * put/get/list/delete interface (see backup.h).
 *
 * Keys are relative, '/'-separated names of [A-Za-z0-9._-] segments (no empty,
 * "." or ".." segment), e.g. "<tenant_id>/<backup_id>/chunk-000000".
 *
 * local: <dir>/<key>, parents created 0700, objects written under a temporary name
 * (0600, exclusive, fsynced) and renamed into place, so a reader sees a whole object
 * or none. put_nosync starts the object's writeback and renames it into place without
 * waiting; sync then fsyncs each such object and its directory (one wait for many
 * chunks instead of two per chunk).
 * s3: path-style URLs <endpoint>/<bucket>/<key>, signed with AWS SigV4 by libcurl
 * (CURLOPT_AWS_SIGV4, the payload hash signed too). A PUT carries Content-MD5 (the
 * store refuses a body that does not match it) and its answer's ETag must be the
 * MD5 of what was sent; network errors, 5xx, 408 and 429 are retried with
 * exponential backoff; other 4xx fail at once with the store's error code.
 * Credentials: static (access key + secret from the configuration), or the instance
 * role's temporary ones (backup_imds.c), refreshed 5 minutes before they expire and
 * at once after a 403 naming them (ExpiredToken, InvalidToken, InvalidAccessKeyId),
 * with the session token in X-Amz-Security-Token, which libcurl signs like every
 * header we add.
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup.h"
#include "crypto.h"
#include "log.h"

#define TARGET_PATH_MAX 4096
#define TARGET_LIST_MAX 1000000 /* keys in one listing */
#define TARGET_BODY_MAX (1024 * 1024) /* error and list bodies */
#define CREDS_REFRESH_S 300	       /* instance credentials renewed this long before */
#define CREDS_GRACE_S 30	       /* a failed renewal keeps ones valid this long more */
#define CREDS_RETRY_S 30	       /* at most one renewal attempt this often (unforced) */
#define IMDS_TIMEOUT_MS 2000	       /* the metadata service answers at once */

struct backup_target {
	int kind; /* 0 local, 1 s3 */
	char *dir;
	char *endpoint, *bucket, *region, *userpwd, *ca_file, *sigv4;
	int retries, timeout_s;
	int instance;		  /* credentials from the instance role (IMDSv2) */
	char *imds;		  /* the metadata service */
	struct backup_creds creds; /* instance: the current ones */
	time_t renew_at;	  /* instance: the next renewal, unless the store refuses */
	char *token_hdr;	  /* instance: "X-Amz-Security-Token: …" */
	char name[256];
	char err[512];
	char **pending; /* local: paths put without waiting for the disk */
	size_t npending, cappending;
};

/* Format a message into the target's error buffer and return it. */
static const char *target_error(struct backup_target *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static const char *target_error(struct backup_target *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(t->err, sizeof t->err, fmt, ap) < 0)
		t->err[0] = '\0';
	va_end(ap);
	return t->err;
}

int backup_key_ok(const char *key)
{
	const char *seg = key;
	size_t n;

	if (key == NULL || key[0] == '\0' || strlen(key) > 1024)
		return 0;
	for (;;) {
		n = strcspn(seg, "/");
		if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return 0;
		for (size_t i = 0; i < n; i++)
			if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
				   seg[i]) == NULL)
				return 0;
		if (seg[n] == '\0')
			return 1;
		seg += n + 1;
	}
}

/* A prefix: "" or a key, optionally ending in '/'. */
static int prefix_ok(const char *prefix)
{
	char tmp[1100];
	size_t n = strlen(prefix);

	if (n == 0)
		return 1;
	if (n >= sizeof tmp)
		return 0;
	memcpy(tmp, prefix, n + 1);
	if (tmp[n - 1] == '/')
		tmp[n - 1] = '\0';
	return backup_key_ok(tmp);
}

/* ------------------------------------------------------------------ local */

/* mkdir -p of the parents of path (below the target's dir). */
static int local_mkparents(const char *root, char *path)
{
	for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST) {
			*p = '/';
			return -1;
		}
		*p = '/';
	}
	return 0;
}


/* fsync a file or directory by path; a file gone since counts as done. */
static int local_fsync_path(struct backup_target *t, const char *path, int dir,
			    const char **error_r)
{
	int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0 && errno == ENOENT)
		return 0;
	if (fd < 0 || fsync(fd) < 0) {
		*error_r = target_error(t, "cannot fsync %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

static int local_put(struct backup_target *t, const char *key, const void *buf, size_t len,
		     int durable, const char **error_r)
{
	char path[TARGET_PATH_MAX], tmp[TARGET_PATH_MAX + 64], rnd[33];

	if (snprintf(path, sizeof path, "%s/%s", t->dir, key) >= (int)sizeof path ||
	    crypto_random_id(rnd) < 0 ||
	    snprintf(tmp, sizeof tmp, "%s.tmp-%s", path, rnd) >= (int)sizeof tmp) {
		*error_r = "backup object path too long";
		return -1;
	}
	if (!durable && t->npending == t->cappending) {
		size_t ncap = t->cappending ? t->cappending * 2 : 64;
		char **np = realloc(t->pending, ncap * sizeof *np);

		if (np == NULL) {
			*error_r = "out of memory";
			return -1;
		}
		t->pending = np;
		t->cappending = ncap;
	}
	if (local_mkparents(t->dir, path) < 0 || backup_file_put(tmp, buf, len, durable) < 0) {
		*error_r = target_error(t, "cannot write %s: %s", path, strerror(errno));
		(void)unlink(tmp);
		return -1;
	}
	if (rename(tmp, path) < 0) {
		*error_r = target_error(t, "cannot rename into %s: %s", path, strerror(errno));
		(void)unlink(tmp);
		return -1;
	}
	if (!durable) {
		if ((t->pending[t->npending] = strdup(path)) == NULL) {
			*error_r = "out of memory";
			return -1;
		}
		t->npending++;
		return 0;
	}
	/* The rename itself made durable. */
	*strrchr(path, '/') = '\0';
	return local_fsync_path(t, path, 1, error_r);
}

/* Make every object put without waiting durable: the files, then their directories
 * (each once: put_nosync's objects of one backup share one). */
static int local_sync(struct backup_target *t, const char **error_r)
{
	char last[TARGET_PATH_MAX] = "";
	int ret = 0;

	for (size_t i = 0; i < t->npending; i++)
		if (ret == 0 && local_fsync_path(t, t->pending[i], 0, error_r) < 0)
			ret = -1;
	for (size_t i = 0; i < t->npending; i++) {
		char *slash = strrchr(t->pending[i], '/');

		*slash = '\0';
		if (ret == 0 && strcmp(t->pending[i], last) != 0) {
			if (local_fsync_path(t, t->pending[i], 1, error_r) < 0)
				ret = -1;
			snprintf(last, sizeof last, "%s", t->pending[i]);
		}
		free(t->pending[i]);
	}
	t->npending = 0;
	return ret;
}

static int local_get(struct backup_target *t, const char *key, size_t max, uint8_t **buf_r,
		     size_t *len_r, const char **error_r)
{
	char path[TARGET_PATH_MAX];

	if (snprintf(path, sizeof path, "%s/%s", t->dir, key) >= (int)sizeof path) {
		*error_r = "backup object path too long";
		return -1;
	}
	if (access(path, F_OK) < 0 && errno == ENOENT) {
		*error_r = target_error(t, "%s: no object %s", t->name, key);
		return 1;
	}
	if (backup_file_read(path, max, buf_r, len_r) < 0) {
		*error_r = target_error(t, "%s: cannot read %s (or larger than %zu bytes)", t->name,
					key, max);
		return -1;
	}
	return 0;
}

struct keylist {
	char **k;
	size_t n, cap;
};

static int keylist_add(struct keylist *l, const char *key, size_t len)
{
	char **nk;

	if (l->n >= TARGET_LIST_MAX)
		return -1;
	if (l->n == l->cap) {
		nk = realloc(l->k, (l->cap ? l->cap * 2 : 64) * sizeof *nk);
		if (nk == NULL)
			return -1;
		l->k = nk;
		l->cap = l->cap ? l->cap * 2 : 64;
	}
	l->k[l->n] = strndup(key, len);
	if (l->k[l->n] == NULL)
		return -1;
	l->n++;
	return 0;
}

void backup_keys_free(char **keys, size_t n)
{
	for (size_t i = 0; keys != NULL && i < n; i++)
		free(keys[i]);
	free(keys);
}

/* Walk rel (a directory below dir, "" for dir) adding keys that start with prefix. */
static int local_walk(struct backup_target *t, const char *rel, const char *prefix,
		      struct keylist *l, int depth)
{
	char path[TARGET_PATH_MAX], sub[TARGET_PATH_MAX];
	DIR *d;
	struct dirent *e;
	int ret = 0;

	if (depth > 16 ||
	    snprintf(path, sizeof path, "%s%s%s", t->dir, rel[0] ? "/" : "", rel) >=
		    (int)sizeof path)
		return -1;
	d = opendir(path);
	if (d == NULL)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -1;
	while (ret == 0 && (e = readdir(d)) != NULL) {
		struct stat st;
		size_t n;

		if (e->d_name[0] == '.' || strstr(e->d_name, ".tmp-") != NULL)
			continue;
		if (snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name) >=
			    (int)sizeof sub ||
		    snprintf(path, sizeof path, "%s/%s", t->dir, sub) >= (int)sizeof path ||
		    lstat(path, &st) < 0) {
			ret = -1;
			break;
		}
		n = strlen(sub);
		if (S_ISDIR(st.st_mode)) {
			/* Only descend where the prefix can still match. */
			size_t m = n < strlen(prefix) ? n : strlen(prefix);

			if (strncmp(sub, prefix, m) == 0)
				ret = local_walk(t, sub, prefix, l, depth + 1);
		} else if (S_ISREG(st.st_mode) && strncmp(sub, prefix, strlen(prefix)) == 0 &&
			   backup_key_ok(sub)) {
			ret = keylist_add(l, sub, n);
		}
	}
	closedir(d);
	return ret;
}

static int local_delete(struct backup_target *t, const char *key, const char **error_r)
{
	char path[TARGET_PATH_MAX];
	char *slash;

	if (snprintf(path, sizeof path, "%s/%s", t->dir, key) >= (int)sizeof path) {
		*error_r = "backup object path too long";
		return -1;
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		*error_r = target_error(t, "cannot delete %s: %s", path, strerror(errno));
		return -1;
	}
	/* Empty parent directories go too (a failure just means not empty). */
	while ((slash = strrchr(path, '/')) != NULL && (size_t)(slash - path) > strlen(t->dir)) {
		*slash = '\0';
		if (rmdir(path) < 0)
			break;
	}
	return 0;
}

/* ------------------------------------------------------------------ s3 */

struct s3_buf {
	uint8_t *p;
	size_t len, max;
	int over;
};

struct s3_resp {
	long code;
	struct s3_buf body;
	char etag[80];
};

static size_t s3_on_body(char *data, size_t size, size_t n, void *arg)
{
	struct s3_buf *b = arg;
	size_t add = size * n;
	uint8_t *np;

	if (b->len + add > b->max) {
		b->over = 1;
		return 0; /* aborts the transfer */
	}
	np = realloc(b->p, b->len + add + 1);
	if (np == NULL)
		return 0;
	b->p = np;
	memcpy(b->p + b->len, data, add);
	b->len += add;
	b->p[b->len] = '\0';
	return add;
}

static size_t s3_on_header(char *data, size_t size, size_t n, void *arg)
{
	struct s3_resp *r = arg;
	size_t len = size * n;

	if (len > 5 && strncasecmp(data, "etag:", 5) == 0) {
		const char *v = data + 5;
		size_t vl = len - 5;

		while (vl > 0 && (*v == ' ' || *v == '"')) {
			v++;
			vl--;
		}
		while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == '"' ||
				  v[vl - 1] == ' '))
			vl--;
		if (vl < sizeof r->etag) {
			memcpy(r->etag, v, vl);
			r->etag[vl] = '\0';
		}
	}
	return len;
}

/* Percent-encode s (RFC 3986 unreserved kept; '/' kept if keep_slash). */
static int s3_encode(const char *s, int keep_slash, char *out, size_t size)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    ch == '-' || ch == '_' || ch == '.' || ch == '~' || (keep_slash && ch == '/')) {
			if (o + 1 >= size)
				return -1;
			out[o++] = (char)ch;
		} else {
			if (o + 3 >= size)
				return -1;
			out[o++] = '%';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		}
	}
	out[o] = '\0';
	return 0;
}

/* The text between <tag> and </tag> from *pos on; advances *pos. */
static int xml_next(const char **pos, const char *tag, char *out, size_t size)
{
	char open[64], close[64];
	const char *a, *b;

	snprintf(open, sizeof open, "<%s>", tag);
	snprintf(close, sizeof close, "</%s>", tag);
	if ((a = strstr(*pos, open)) == NULL)
		return -1;
	a += strlen(open);
	if ((b = strstr(a, close)) == NULL || (size_t)(b - a) >= size)
		return -1;
	memcpy(out, a, (size_t)(b - a));
	out[b - a] = '\0';
	*pos = b + strlen(close);
	return 0;
}

/* Wipe and free a string holding a secret. */
static void target_wipe(char *s)
{
	if (s != NULL) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

/* Instance credentials: fetch them when there are none, when they expire within
 * CREDS_REFRESH_S, or when force is set (the store refused them). 0, or -1 with a
 * message. A failed renewal of credentials still valid for CREDS_GRACE_S keeps them.
 * Unforced renewals are CREDS_RETRY_S apart at least: the metadata service may hand
 * out the same credentials until shortly before they expire, and a slow or failing
 * one must not cost every request its timeout. */
static int target_creds(struct backup_target *t, int force, const char **error_r)
{
	struct backup_creds c;
	char err[400], *userpwd = NULL, *hdr = NULL, when[32];
	time_t now = time(NULL);
	struct tm tm;

	if (!t->instance)
		return 0;
	if (!force && t->creds.secret != NULL && now < t->renew_at)
		return 0;
	if (backup_imds_fetch(t->imds, IMDS_TIMEOUT_MS, &c, err, sizeof err) < 0) {
		if (!force && t->creds.secret != NULL && now < t->creds.expires - CREDS_GRACE_S) {
			log_warn("%s: %s; the current credentials (role %s) are kept until they "
				 "expire",
				 t->name, err, t->creds.role);
			t->renew_at = now + CREDS_RETRY_S;
			return 0;
		}
		*error_r = target_error(t, "%s: %s", t->name, err);
		return -1;
	}
	if (asprintf(&userpwd, "%s:%s", c.access_key, c.secret) < 0) {
		userpwd = NULL;
		goto oom;
	}
	if (asprintf(&hdr, "X-Amz-Security-Token: %s", c.token) < 0) {
		hdr = NULL;
		goto oom;
	}
	target_wipe(t->userpwd);
	target_wipe(t->token_hdr);
	backup_creds_clear(&t->creds);
	t->userpwd = userpwd;
	t->token_hdr = hdr;
	t->creds = c;
	t->renew_at = c.expires - CREDS_REFRESH_S;
	if (t->renew_at < now + CREDS_RETRY_S)
		t->renew_at = now + CREDS_RETRY_S;
	if (t->renew_at > c.expires - 1)
		t->renew_at = c.expires - 1;
	gmtime_r(&c.expires, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	/* The key id names the credentials (not secret); the secret and token never. */
	log_info("%s: instance credentials of role %s%s (key id %.8s…, expire %s)", t->name,
		 c.role, force ? " renewed after the store refused the previous ones" : "",
		 c.access_key, when);
	return 0;
oom:
	target_wipe(userpwd);
	backup_creds_clear(&c);
	*error_r = "out of memory";
	return -1;
}

/* 1 if a 403 body names credentials the role can renew (expired or rotated). */
static int s3_creds_refused(const struct backup_target *t, const struct s3_resp *r)
{
	char code[64] = "";
	const char *pos = r->body.p ? (const char *)r->body.p : "";

	if (!t->instance || r->code != 403 || xml_next(&pos, "Code", code, sizeof code) < 0)
		return 0;
	return strcmp(code, "ExpiredToken") == 0 || strcmp(code, "InvalidToken") == 0 ||
	       strcmp(code, "InvalidAccessKeyId") == 0 || strcmp(code, "TokenRefreshRequired") == 0;
}

/* One request, no retry. 0 with r filled (any HTTP status), -1 on a transport error,
 * -2 when no credentials could be had (not worth retrying). */
static int s3_once(struct backup_target *t, const char *method, const char *url,
		   const void *body, size_t body_len, const char *content_md5, size_t max,
		   struct s3_resp *r, const char **error_r)
{
	CURL *h = curl_easy_init();
	struct curl_slist *hdr = NULL, *nh;
	char md5h[80], shah[96];
	CURLcode cc;
	int ret = -1;

	memset(r, 0, sizeof *r);
	r->body.max = max;
	if (h == NULL) {
		*error_r = "curl_easy_init failed";
		return -1;
	}
	if (target_creds(t, 0, error_r) < 0) {
		curl_easy_cleanup(h);
		return -2;
	}
	/* The payload's hash, signed (an empty body's for GET/DELETE/HEAD). */
	{
		uint8_t md[32];
		char hex[65];

		if (crypto_sha256(body != NULL ? body : "", body != NULL ? body_len : 0, md) < 0)
			goto out;
		crypto_hex(md, 32, hex);
		snprintf(shah, sizeof shah, "x-amz-content-sha256: %s", hex);
		if ((nh = curl_slist_append(hdr, shah)) == NULL)
			goto out;
		hdr = nh;
	}
	if (body != NULL) {
		snprintf(md5h, sizeof md5h, "Content-MD5: %s", content_md5);
		if ((nh = curl_slist_append(hdr, md5h)) == NULL)
			goto out;
		hdr = nh;
		if ((nh = curl_slist_append(hdr, "Content-Type: application/octet-stream")) == NULL)
			goto out;
		hdr = nh;
	}
	if ((nh = curl_slist_append(hdr, "Expect:")) == NULL)
		goto out;
	hdr = nh;
	if (t->token_hdr != NULL) {
		if ((nh = curl_slist_append(hdr, t->token_hdr)) == NULL)
			goto out;
		hdr = nh;
	}
	if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, t->sigv4) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_USERPWD, t->userpwd) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)t->timeout_s) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s3_on_body) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r->body) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, s3_on_header) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HEADERDATA, r) != CURLE_OK ||
	    (t->ca_file != NULL && curl_easy_setopt(h, CURLOPT_CAINFO, t->ca_file) != CURLE_OK)) {
		*error_r = "cannot set up the S3 request";
		goto out;
	}
	if (body != NULL &&
	    (curl_easy_setopt(h, CURLOPT_POSTFIELDS, body) != CURLE_OK ||
	     curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len) != CURLE_OK)) {
		*error_r = "cannot set up the S3 request";
		goto out;
	}
	if (strcmp(method, "HEAD") == 0 && curl_easy_setopt(h, CURLOPT_NOBODY, 1L) != CURLE_OK)
		goto out;
	cc = curl_easy_perform(h);
	if (cc != CURLE_OK) {
		*error_r = target_error(t, "%s: %s %s", t->name, method,
					r->body.over ? "answer too large" : curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->code);
	ret = 0;
out:
	curl_slist_free_all(hdr);
	curl_easy_cleanup(h);
	if (ret < 0) {
		free(r->body.p);
		r->body.p = NULL;
	}
	return ret;
}

/* A request with retries: 0 = 2xx, 1 = 404, -1 = failed (message in *error_r). */
static int s3_call(struct backup_target *t, const char *method, const char *key,
		   const char *query, const void *body, size_t body_len, size_t max,
		   struct s3_resp *r, const char **error_r)
{
	char url[TARGET_PATH_MAX], ekey[3 * 1100], md5b64[40] = "";
	unsigned int delay_ms = 200;

	if (s3_encode(key, 1, ekey, sizeof ekey) < 0 ||
	    snprintf(url, sizeof url, "%s/%s/%s%s%s", t->endpoint, t->bucket, ekey,
		     query ? "?" : "", query ? query : "") >= (int)sizeof url) {
		*error_r = "S3 URL too long";
		return -1;
	}
	if (body != NULL) {
		uint8_t md[16];
		unsigned int mdlen = 0;

		if (EVP_Digest(body, body_len, md, &mdlen, EVP_md5(), NULL) != 1 || mdlen != 16) {
			*error_r = "cannot hash the object";
			return -1;
		}
		EVP_EncodeBlock((unsigned char *)md5b64, md, 16);
	}
	for (int attempt = 0, renewed = 0;; attempt++) {
		const char *err = NULL;
		int transient, rc;

		rc = s3_once(t, method, url, body, body_len, md5b64, max, r, &err);
		if (rc == -2) {
			*error_r = err;
			return -1;
		}
		if (rc == 0) {
			if (r->code >= 200 && r->code < 300)
				return 0;
			if (r->code == 404 && body == NULL)
				return 1;
			if (!renewed && s3_creds_refused(t, r)) {
				/* Rotated or expired under us: new ones, then at once again. */
				free(r->body.p);
				r->body.p = NULL;
				renewed = 1;
				attempt--;
				if (target_creds(t, 1, error_r) < 0)
					return -1;
				continue;
			}
			transient = r->code >= 500 || r->code == 408 || r->code == 429;
			{
				char code[64] = "", msg[200] = "";
				const char *pos = r->body.p ? (const char *)r->body.p : "";
				const char *pos2 = pos;

				(void)xml_next(&pos, "Code", code, sizeof code);
				(void)xml_next(&pos2, "Message", msg, sizeof msg);
				*error_r = target_error(
					t, "%s: %s %s: HTTP %ld %s%s%s%s", t->name, method, key,
					r->code, code,
					r->code == 403 ? " (the store refused the credentials or "
							 "the signature)"
						       : "",
					msg[0] ? ": " : "", msg);
			}
			free(r->body.p);
			r->body.p = NULL;
		} else {
			transient = 1;
			*error_r = err;
		}
		if (!transient || attempt >= t->retries)
			return -1;
		{
			struct timespec ts = { delay_ms / 1000, (long)(delay_ms % 1000) * 1000000L };

			while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
				;
		}
		if (delay_ms < 8000)
			delay_ms *= 2;
	}
}

static int s3_put(struct backup_target *t, const char *key, const void *buf, size_t len,
		  const char **error_r)
{
	struct s3_resp r;
	uint8_t md[16];
	unsigned int mdlen = 0;
	char hex[33];
	int ret;

	ret = s3_call(t, "PUT", key, NULL, buf, len, TARGET_BODY_MAX, &r, error_r);
	if (ret != 0)
		return -1;
	free(r.body.p);
	/* The store's ETag of a single-part upload is the MD5 of what it stored. */
	if (EVP_Digest(buf, len, md, &mdlen, EVP_md5(), NULL) != 1)
		return -1;
	crypto_hex(md, 16, hex);
	if (strcasecmp(r.etag, hex) != 0) {
		*error_r = target_error(t, "%s: PUT %s: the stored object's ETag (%s) is not the "
					   "MD5 of what was sent",
					t->name, key, r.etag[0] ? r.etag : "none");
		return -1;
	}
	return 0;
}

static int s3_get(struct backup_target *t, const char *key, size_t max, uint8_t **buf_r,
		  size_t *len_r, const char **error_r)
{
	struct s3_resp r;
	int ret = s3_call(t, "GET", key, NULL, NULL, 0, max, &r, error_r);

	if (ret == 1) {
		*error_r = target_error(t, "%s: no object %s", t->name, key);
		return 1;
	}
	if (ret < 0)
		return -1;
	if (r.body.p == NULL && (r.body.p = malloc(1)) == NULL)
		return -1;
	*buf_r = r.body.p;
	*len_r = r.body.len;
	return 0;
}

static int s3_delete(struct backup_target *t, const char *key, const char **error_r)
{
	struct s3_resp r;
	int ret = s3_call(t, "DELETE", key, NULL, NULL, 0, TARGET_BODY_MAX, &r, error_r);

	if (ret == 0)
		free(r.body.p);
	return ret < 0 ? -1 : 0; /* a missing object is deleted already */
}

static int s3_list(struct backup_target *t, const char *prefix, struct keylist *l,
		   const char **error_r)
{
	char query[2048], epre[3 * 1100], token[1024] = "", etok[3 * 1024], key[1100];
	char trunc[16];

	if (s3_encode(prefix, 0, epre, sizeof epre) < 0)
		return -1;
	for (;;) {
		struct s3_resp r;
		const char *pos;
		int more;

		/* Parameters in canonical (sorted) order: libcurl signs the query as given. */
		if (s3_encode(token, 0, etok, sizeof etok) < 0 ||
		    snprintf(query, sizeof query, "%s%s%slist-type=2&prefix=%s",
			     token[0] ? "continuation-token=" : "", token[0] ? etok : "",
			     token[0] ? "&" : "", epre) >= (int)sizeof query) {
			*error_r = "S3 list query too long";
			return -1;
		}
		/* The bucket itself: key "" gives "<bucket>/". */
		{
			char url[TARGET_PATH_MAX];
			unsigned int delay_ms = 200;
			int attempt = 0, renewed = 0;

			if (snprintf(url, sizeof url, "%s/%s/?%s", t->endpoint, t->bucket, query) >=
			    (int)sizeof url)
				return -1;
			for (;;) {
				const char *err = NULL;
				int rc = s3_once(t, "GET", url, NULL, 0, NULL, 16 * TARGET_BODY_MAX, &r,
						 &err);

				if (rc == 0 && r.code == 200)
					break;
				if (rc == -2) {
					*error_r = err;
					return -1;
				}
				if (rc == 0 && !renewed && s3_creds_refused(t, &r)) {
					free(r.body.p);
					renewed = 1;
					if (target_creds(t, 1, error_r) < 0)
						return -1;
					continue;
				}
				if (err == NULL) {
					char code[64] = "";
					const char *p = r.body.p ? (const char *)r.body.p : "";

					(void)xml_next(&p, "Code", code, sizeof code);
					err = target_error(t, "%s: list %s: HTTP %ld %s", t->name,
							   prefix, r.code, code);
					free(r.body.p);
					if (r.code < 500 && r.code != 408 && r.code != 429)
						attempt = t->retries;
				}
				if (attempt++ >= t->retries) {
					*error_r = err;
					return -1;
				}
				{
					struct timespec ts = { delay_ms / 1000,
							       (long)(delay_ms % 1000) * 1000000L };

					while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
						;
				}
				if (delay_ms < 8000)
					delay_ms *= 2;
			}
		}
		pos = r.body.p ? (const char *)r.body.p : "";
		while (xml_next(&pos, "Key", key, sizeof key) == 0) {
			if (!backup_key_ok(key))
				continue; /* not one of ours */
			if (keylist_add(l, key, strlen(key)) < 0) {
				free(r.body.p);
				*error_r = "too many objects to list";
				return -1;
			}
		}
		pos = r.body.p ? (const char *)r.body.p : "";
		more = xml_next(&pos, "IsTruncated", trunc, sizeof trunc) == 0 &&
		       strcmp(trunc, "true") == 0;
		pos = r.body.p ? (const char *)r.body.p : "";
		if (more && xml_next(&pos, "NextContinuationToken", token, sizeof token) < 0)
			more = 0;
		free(r.body.p);
		if (!more)
			return 0;
	}
}

/* ------------------------------------------------------------------ interface */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_ok;

static void target_curl_init(void)
{
	curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

struct backup_target *backup_target_new(const struct backup_target_conf *conf,
					const char **error_r)
{
	struct backup_target *t = calloc(1, sizeof *t);

	if (t == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	t->retries = conf->retries > 0 ? conf->retries : 0;
	t->timeout_s = conf->timeout_s > 0 ? conf->timeout_s : 300;
	if (conf->s3_endpoint == NULL) {
		if (conf->dir == NULL || conf->dir[0] != '/') {
			*error_r = "backup target: a local directory must be an absolute path";
			goto fail;
		}
		t->kind = 0;
		if ((t->dir = strdup(conf->dir)) == NULL)
			goto oom;
		snprintf(t->name, sizeof t->name, "local:%s", conf->dir);
		return t;
	}
	t->kind = 1;
	if (conf->s3_credentials != NULL && strcmp(conf->s3_credentials, "static") != 0 &&
	    strcmp(conf->s3_credentials, "instance") != 0) {
		*error_r = "backup target: s3 credentials must be static or instance";
		goto fail;
	}
	t->instance = conf->s3_credentials != NULL && strcmp(conf->s3_credentials, "instance") == 0;
	if (t->instance && (conf->s3_access_key != NULL || conf->s3_secret_key != NULL)) {
		*error_r = "backup target: s3 credentials instance take the instance role's keys: "
			   "no access_key or secret_key_file with them";
		goto fail;
	}
	if (conf->s3_bucket == NULL || conf->s3_region == NULL ||
	    (!t->instance && (conf->s3_access_key == NULL || conf->s3_secret_key == NULL)) ||
	    (strncmp(conf->s3_endpoint, "https://", 8) != 0 &&
	     strncmp(conf->s3_endpoint, "http://", 7) != 0)) {
		*error_r = "backup target: s3 needs endpoint (http[s]://host[:port]), bucket, "
			   "region and credentials (access_key and secret_key_file, or "
			   "credentials: instance)";
		goto fail;
	}
	if (t->instance && conf->s3_imds_endpoint != NULL &&
	    strncmp(conf->s3_imds_endpoint, "http://", 7) != 0 &&
	    strncmp(conf->s3_imds_endpoint, "https://", 8) != 0) {
		*error_r = "backup target: s3 imds_endpoint must be http[s]://host[:port]";
		goto fail;
	}
	if (!backup_key_ok(conf->s3_bucket) || strchr(conf->s3_bucket, '/') != NULL ||
	    strspn(conf->s3_region, "abcdefghijklmnopqrstuvwxyz0123456789-") !=
		    strlen(conf->s3_region)) {
		*error_r = "backup target: bad s3 bucket or region name";
		goto fail;
	}
	(void)pthread_once(&curl_once, target_curl_init);
	if (!curl_ok) {
		*error_r = "curl_global_init failed";
		goto fail;
	}
	t->endpoint = strdup(conf->s3_endpoint);
	t->bucket = strdup(conf->s3_bucket);
	t->region = strdup(conf->s3_region);
	t->ca_file = conf->s3_ca_file ? strdup(conf->s3_ca_file) : NULL;
	if (t->endpoint == NULL || t->bucket == NULL || t->region == NULL ||
	    (conf->s3_ca_file && t->ca_file == NULL) ||
	    asprintf(&t->sigv4, "aws:amz:%s:s3", conf->s3_region) < 0) {
		t->sigv4 = NULL;
		goto oom;
	}
	if (t->instance) {
		t->imds = strdup(conf->s3_imds_endpoint ? conf->s3_imds_endpoint
							: "http://169.254.169.254");
		if (t->imds == NULL)
			goto oom;
	} else if (asprintf(&t->userpwd, "%s:%s", conf->s3_access_key, conf->s3_secret_key) < 0) {
		t->userpwd = NULL;
		goto oom;
	}
	while (strlen(t->endpoint) > 0 && t->endpoint[strlen(t->endpoint) - 1] == '/')
		t->endpoint[strlen(t->endpoint) - 1] = '\0';
	/* The bucket names the target (its endpoint may change: a proxy, a new URL). */
	snprintf(t->name, sizeof t->name, "s3://%s", t->bucket);
	return t;
oom:
	*error_r = "out of memory";
fail:
	backup_target_free(t);
	return NULL;
}

void backup_target_free(struct backup_target *t)
{
	if (t == NULL)
		return;
	free(t->dir);
	free(t->endpoint);
	free(t->bucket);
	free(t->region);
	free(t->ca_file);
	free(t->sigv4);
	for (size_t i = 0; i < t->npending; i++)
		free(t->pending[i]);
	free(t->pending);
	target_wipe(t->userpwd);
	target_wipe(t->token_hdr);
	backup_creds_clear(&t->creds);
	free(t->imds);
	free(t);
}

const char *backup_target_name(const struct backup_target *t)
{
	return t->name;
}

int backup_target_put(struct backup_target *t, const char *key, const void *buf, size_t len,
		      const char **error_r)
{
	if (!backup_key_ok(key)) {
		*error_r = "bad backup object key";
		return -1;
	}
	return t->kind == 0 ? local_put(t, key, buf, len, 1, error_r)
			    : s3_put(t, key, buf, len, error_r);
}

int backup_target_put_nosync(struct backup_target *t, const char *key, const void *buf,
			     size_t len, const char **error_r)
{
	if (!backup_key_ok(key)) {
		*error_r = "bad backup object key";
		return -1;
	}
	return t->kind == 0 ? local_put(t, key, buf, len, 0, error_r)
			    : s3_put(t, key, buf, len, error_r);
}

int backup_target_sync(struct backup_target *t, const char **error_r)
{
	return t->kind == 0 ? local_sync(t, error_r) : 0;
}

int backup_target_get(struct backup_target *t, const char *key, size_t max, uint8_t **buf_r,
		      size_t *len_r, const char **error_r)
{
	*buf_r = NULL;
	*len_r = 0;
	if (!backup_key_ok(key)) {
		*error_r = "bad backup object key";
		return -1;
	}
	return t->kind == 0 ? local_get(t, key, max, buf_r, len_r, error_r)
			    : s3_get(t, key, max, buf_r, len_r, error_r);
}

int backup_target_list(struct backup_target *t, const char *prefix, char ***keys_r, size_t *n_r,
		       const char **error_r)
{
	struct keylist l = { 0 };
	int ret;

	*keys_r = NULL;
	*n_r = 0;
	if (!prefix_ok(prefix)) {
		*error_r = "bad backup object prefix";
		return -1;
	}
	if (t->kind == 0) {
		ret = local_walk(t, "", prefix, &l, 0);
		if (ret < 0)
			*error_r = target_error(t, "%s: cannot list %s", t->name, prefix);
	} else {
		ret = s3_list(t, prefix, &l, error_r);
	}
	if (ret < 0) {
		backup_keys_free(l.k, l.n);
		return -1;
	}
	*keys_r = l.k;
	*n_r = l.n;
	return 0;
}

int backup_target_delete(struct backup_target *t, const char *key, const char **error_r)
{
	if (!backup_key_ok(key)) {
		*error_r = "bad backup object key";
		return -1;
	}
	return t->kind == 0 ? local_delete(t, key, error_r) : s3_delete(t, key, error_r);
}
