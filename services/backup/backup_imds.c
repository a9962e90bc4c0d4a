/*
 * backup_imds — temporary credentials of the instance's IAM role from the EC2
 * instance metadata service, IMDSv2 only (see backup.h).
 *
 * One fetch is three requests to the metadata service (http://169.254.169.254, or a
 * configured endpoint):
 *   PUT /latest/api/token  X-aws-ec2-metadata-token-ttl-seconds: 300   → session token
 *   GET /latest/meta-data/iam/security-credentials/          (with the token) → role
 *   GET /latest/meta-data/iam/security-credentials/<role>    (with the token) → JSON
 *     {"Code":"Success","AccessKeyId":…,"SecretAccessKey":…,"Token":…,
 *      "Expiration":"2026-11-30T18:00:00Z",…}
 * A GET is never sent without a session token (no IMDSv1 fallback): a service that
 * refuses the PUT fails the fetch. Answers are bounded (IMDS_BODY_MAX), requests time
 * out after timeout_ms, no proxy from the environment is used and no redirect is
 * followed. Each answer lands in one fixed buffer, wiped before it is freed, and our
 * copies of the session token and the secrets are wiped when replaced or freed
 * (libcurl's internal copies of headers and credentials are beyond our reach).
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup.h"

#define IMDS_BODY_MAX (16 * 1024) /* the credentials document, with its token */
#define IMDS_TOKEN_TTL_S 300	  /* the session token: used at once, then dropped */
#define IMDS_ATTEMPTS 2		  /* a refused connection or a 5xx: one more try */

struct imds_buf {
	char *p; /* IMDS_BODY_MAX + 1 bytes, never reallocated (no stray copy to wipe) */
	size_t len;
	int over;
};

/* libcurl's write callback: append to the fixed buffer, abort past its end. */
static size_t imds_on_body(char *data, size_t size, size_t n, void *arg)
{
	struct imds_buf *b = arg;
	size_t add = size * n;

	if (add > IMDS_BODY_MAX - b->len) {
		b->over = 1;
		return 0;
	}
	memcpy(b->p + b->len, data, add);
	b->len += add;
	b->p[b->len] = '\0';
	return add;
}

/* Wipe and free the secrets of c; c can be refilled after. */
void backup_creds_clear(struct backup_creds *c)
{
	if (c->secret != NULL) {
		OPENSSL_cleanse(c->secret, strlen(c->secret));
		free(c->secret);
	}
	if (c->token != NULL) {
		OPENSSL_cleanse(c->token, strlen(c->token));
		free(c->token);
	}
	memset(c, 0, sizeof *c);
}

/* 1 if s is 1..max characters, each in set. */
static int imds_chars_ok(const char *s, size_t max, const char *set)
{
	size_t n = strlen(s);

	return n > 0 && n <= max && strspn(s, set) == n;
}

#define IMDS_ALNUM "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#define IMDS_B64 IMDS_ALNUM "+/="

/* "YYYY-MM-DDTHH:MM:SSZ" → seconds since the epoch; -1 if malformed. */
static time_t imds_time(const char *s)
{
	struct tm tm = { 0 };
	int y, mo, d, h, mi, se, end = 0;

	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &y, &mo, &d, &h, &mi, &se, &end) != 6 ||
	    end != 20 || s[end] != '\0' || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 ||
	    h > 23 || mi > 59 || se > 60)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = se;
	return timegm(&tm);
}

/* Check a credentials document and copy its keys into c (see backup.h). */
int backup_imds_parse(const char *json, size_t len, const char *role, time_t now,
		      struct backup_creds *c, char *err, size_t errsize)
{
	json_t *doc;
	json_error_t je;
	const char *code, *ak, *sk, *tok, *exp;
	time_t expires;
	int ret = -1;

	memset(c, 0, sizeof *c);
	if (len > IMDS_BODY_MAX) {
		snprintf(err, errsize, "the credentials of role %s are too large", role);
		return -1;
	}
	doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	if (doc == NULL || !json_is_object(doc)) {
		/* je.text may quote the document: not shown (it holds the secret). */
		snprintf(err, errsize, "the credentials of role %s are not a JSON object "
				       "(bad JSON at line %d)",
			 role, doc == NULL ? je.line : 1);
		goto out;
	}
	code = json_string_value(json_object_get(doc, "Code"));
	if (code == NULL) {
		snprintf(err, errsize, "the credentials of role %s have no Code", role);
		goto out;
	}
	if (strcmp(code, "Success") != 0) {
		snprintf(err, errsize, "the metadata service has no credentials for role %s: "
				       "Code %.64s (not Success)",
			 role, imds_chars_ok(code, 64, IMDS_ALNUM "._-") ? code : "(unprintable)");
		goto out;
	}
	ak = json_string_value(json_object_get(doc, "AccessKeyId"));
	sk = json_string_value(json_object_get(doc, "SecretAccessKey"));
	tok = json_string_value(json_object_get(doc, "Token"));
	exp = json_string_value(json_object_get(doc, "Expiration"));
	if (ak == NULL || sk == NULL || tok == NULL || exp == NULL) {
		snprintf(err, errsize, "the credentials of role %s lack %s", role,
			 ak == NULL ? "AccessKeyId" : sk == NULL ? "SecretAccessKey"
						   : tok == NULL ? "Token" : "Expiration");
		goto out;
	}
	if (!imds_chars_ok(ak, sizeof c->access_key - 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") ||
	    strlen(ak) < 16) {
		snprintf(err, errsize, "the credentials of role %s: malformed AccessKeyId", role);
		goto out;
	}
	if (!imds_chars_ok(sk, 256, IMDS_B64)) {
		snprintf(err, errsize, "the credentials of role %s: malformed SecretAccessKey", role);
		goto out;
	}
	if (!imds_chars_ok(tok, 8192, IMDS_B64)) {
		snprintf(err, errsize, "the credentials of role %s: malformed Token", role);
		goto out;
	}
	if ((expires = imds_time(exp)) < 0) {
		snprintf(err, errsize, "the credentials of role %s: malformed Expiration %.40s",
			 role, exp);
		goto out;
	}
	if (expires <= now) {
		snprintf(err, errsize, "the credentials of role %s expired at %s", role, exp);
		goto out;
	}
	memcpy(c->access_key, ak, strlen(ak) + 1);
	snprintf(c->role, sizeof c->role, "%s", role);
	c->expires = expires;
	if ((c->secret = strdup(sk)) == NULL || (c->token = strdup(tok)) == NULL) {
		snprintf(err, errsize, "out of memory");
		backup_creds_clear(c);
		goto out;
	}
	ret = 0;
out:
	/* The document's strings (the secret, the token) are wiped before jansson frees
	 * them. */
	if (doc != NULL && json_is_object(doc)) {
		const char *k;
		json_t *v;

		json_object_foreach(doc, k, v)
			if (json_is_string(v))
				OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
	}
	json_decref(doc);
	return ret;
}

/* One request to the metadata service: 0 with *code_r (any HTTP status) and the body
 * in b, or -1 on a transport error (message in err). */
static int imds_request(const char *method, const char *url, const char *header,
			long timeout_ms, long *code_r, struct imds_buf *b, char *err,
			size_t errsize)
{
	CURL *h = curl_easy_init();
	struct curl_slist *hdr = NULL, *nh;
	CURLcode cc = CURLE_OK;
	int ret = -1;

	b->len = 0;
	b->over = 0;
	b->p[0] = '\0';
	*code_r = 0;
	if (h == NULL) {
		snprintf(err, errsize, "curl_easy_init failed");
		return -1;
	}
	if ((nh = curl_slist_append(hdr, header)) == NULL)
		goto setup;
	hdr = nh;
	if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_PROXY, "") != CURLE_OK || /* never http_proxy's */
	    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, imds_on_body) != CURLE_OK ||
	    curl_easy_setopt(h, CURLOPT_WRITEDATA, b) != CURLE_OK)
		goto setup;
	/* The PUT has an empty body (Content-Length: 0). */
	if (strcmp(method, "PUT") == 0 &&
	    (curl_easy_setopt(h, CURLOPT_POSTFIELDS, "") != CURLE_OK ||
	     curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L) != CURLE_OK))
		goto setup;
	cc = curl_easy_perform(h);
	if (cc != CURLE_OK) {
		snprintf(err, errsize, "%s", b->over ? "answer too large" : curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, code_r);
	ret = 0;
	goto out;
setup:
	snprintf(err, errsize, "cannot set up the request");
out:
	curl_slist_free_all(hdr); /* the session token: wiped by the caller's copy */
	curl_easy_cleanup(h);
	return ret;
}

/* A request, tried again once after a transport error, 5xx or 429. */
static int imds_call(const char *method, const char *url, const char *header, long timeout_ms,
		     long *code_r, struct imds_buf *b, char *err, size_t errsize)
{
	for (int attempt = 1;; attempt++) {
		int r = imds_request(method, url, header, timeout_ms, code_r, b, err, errsize);

		if (r == 0 && *code_r < 500 && *code_r != 429)
			return 0;
		if (attempt >= IMDS_ATTEMPTS)
			return r;
		{
			struct timespec ts = { 0, 100 * 1000000L };

			while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
				;
		}
	}
}

/* The role's credentials: token, role name, document (see backup.h). */
int backup_imds_fetch(const char *endpoint, long timeout_ms, struct backup_creds *c, char *err,
		      size_t errsize)
{
	struct imds_buf b = { 0 };
	char url[512], hdr[160 + 256], role[130], why[256];
	const char *base = endpoint;
	size_t blen = strlen(endpoint);
	long code = 0;
	int ret = -1;

	memset(c, 0, sizeof *c);
	hdr[0] = '\0';
	while (blen > 0 && base[blen - 1] == '/')
		blen--;
	if (blen > 256) {
		snprintf(err, errsize, "instance metadata endpoint too long");
		return -1;
	}
	if ((b.p = malloc(IMDS_BODY_MAX + 1)) == NULL) {
		snprintf(err, errsize, "out of memory");
		return -1;
	}
	/* 1. A session token (IMDSv2). */
	snprintf(url, sizeof url, "%.*s/latest/api/token", (int)blen, base);
	snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token-ttl-seconds: %d", IMDS_TOKEN_TTL_S);
	if (imds_call("PUT", url, hdr, timeout_ms, &code, &b, why, sizeof why) < 0) {
		snprintf(err, errsize, "instance credentials: the instance metadata service at %.*s "
				       "is unreachable (%s)",
			 (int)blen, base, why);
		goto out;
	}
	if (code != 200 || b.len == 0 || b.len > 256 || !imds_chars_ok(b.p, 256, IMDS_B64 "_-.")) {
		snprintf(err, errsize, "instance credentials: the instance metadata service at %.*s "
				       "gave no IMDSv2 session token (HTTP %ld)",
			 (int)blen, base, code);
		goto out;
	}
	snprintf(hdr, sizeof hdr, "X-aws-ec2-metadata-token: %s", b.p);
	OPENSSL_cleanse(b.p, b.len);
	/* 2. The role attached to the instance (the first line of the listing). */
	snprintf(url, sizeof url, "%.*s/latest/meta-data/iam/security-credentials/", (int)blen, base);
	if (imds_call("GET", url, hdr, timeout_ms, &code, &b, why, sizeof why) < 0) {
		snprintf(err, errsize, "instance credentials: the instance metadata service at %.*s "
				       "is unreachable (%s)",
			 (int)blen, base, why);
		goto out;
	}
	if (code == 404 || (code == 200 && b.len == 0)) {
		snprintf(err, errsize, "instance credentials: no IAM role is attached to this "
				       "instance (the metadata service at %.*s lists none)",
			 (int)blen, base);
		goto out;
	}
	if (code != 200) {
		snprintf(err, errsize, "instance credentials: the instance metadata service at %.*s "
				       "refused the role listing (HTTP %ld%s)",
			 (int)blen, base, code,
			 code == 401 ? ": session token not accepted" : "");
		goto out;
	}
	b.p[strcspn(b.p, "\r\n")] = '\0';
	if (!imds_chars_ok(b.p, 128, IMDS_ALNUM "+=,.@_-")) {
		snprintf(err, errsize, "instance credentials: the metadata service names no valid "
				       "IAM role");
		goto out;
	}
	snprintf(role, sizeof role, "%s", b.p);
	/* 3. The role's credentials. */
	snprintf(url, sizeof url, "%.*s/latest/meta-data/iam/security-credentials/%s", (int)blen,
		 base, role);
	if (imds_call("GET", url, hdr, timeout_ms, &code, &b, why, sizeof why) < 0) {
		snprintf(err, errsize, "instance credentials: the instance metadata service at %.*s "
				       "is unreachable (%s)",
			 (int)blen, base, why);
		goto out;
	}
	if (code != 200) {
		snprintf(err, errsize, "instance credentials: the instance metadata service at %.*s "
				       "has no credentials for role %s (HTTP %ld)",
			 (int)blen, base, role, code);
		goto out;
	}
	if (backup_imds_parse(b.p, b.len, role, time(NULL), c, why, sizeof why) < 0) {
		snprintf(err, errsize, "instance credentials: %s", why);
		goto out;
	}
	ret = 0;
out:
	OPENSSL_cleanse(hdr, sizeof hdr);
	OPENSSL_cleanse(b.p, IMDS_BODY_MAX + 1);
	free(b.p);
	return ret;
}
