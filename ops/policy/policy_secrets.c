/*
 * policy_secrets — the credentials and route keys of one cell, created once.
 *
 * Every secret is a file of its own, mode 0600, created with O_EXCL so an
 * existing credential is never replaced: re-running adds only what is missing.
 * Route keys live in a master list, routes.all; each principal's routes-<name>
 * holds only the routes it sends or reads on, in the format envelope_keys_parse()
 * reads ("<sender> <route> <version> <64 hex>"). Those derived files are rewritten
 * (atomically, keeping owner and mode) only when their content changes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto.h"
#include "policy.h"

#define ROUTE_LINE_MAX 256
#define ROUTE_KEYS_MAX (1024 * 1024)

int policy_file_read(int dirfd, const char *name, size_t max, char **buf_r, size_t *len_r,
		     const char **error_r)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	char *buf = NULL;
	size_t len = 0;
	int ret = -1;

	*buf_r = NULL;
	*len_r = 0;
	if (fd < 0) {
		*error_r = errno == ENOENT ? "missing (run the secrets command first)"
					   : "cannot open";
		return -1;
	}
	buf = policy_xcalloc(max + 1, 1);
	for (;;) {
		ssize_t r = read(fd, buf + len, max + 1 - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			*error_r = "read error";
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > max) {
			*error_r = "file too large";
			goto out;
		}
	}
	*buf_r = buf;
	*len_r = len;
	buf = NULL;
	ret = 0;
out:
	if (buf != NULL) {
		crypto_wipe(buf, max + 1);
		free(buf);
	}
	close(fd);
	return ret;
}

/* Write all of buf to fd, fsync, close. */
static int write_all_close(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	int ret = 0;

	while (len > 0) {
		ssize_t w = write(fd, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			ret = -1;
			break;
		}
		p += w;
		len -= (size_t)w;
	}
	if (ret == 0 && fsync(fd) < 0)
		ret = -1;
	if (close(fd) < 0)
		ret = -1;
	return ret;
}

/* Create name in dirfd with buf unless it exists. 1 created, 0 existed, -1 error. */
static int file_create(int dirfd, const char *name, const void *buf, size_t len)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);

	if (fd < 0)
		return errno == EEXIST ? 0 : -1;
	if (write_all_close(fd, buf, len) < 0) {
		unlinkat(dirfd, name, 0);
		return -1;
	}
	return 1;
}

int policy_file_replace(int dirfd, const char *name, const void *buf, size_t len)
{
	char tmp[POLICY_NAME_MAX + 32];
	struct stat st;
	int have_old = fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
	int fd;

	if (have_old && !S_ISREG(st.st_mode))
		return -1;
	snprintf(tmp, sizeof tmp, ".%s.tmp", name);
	unlinkat(dirfd, tmp, 0);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	/* Keep the owner the deployment gave the old file (root may chown; others cannot). */
	if (have_old && (fchown(fd, st.st_uid, st.st_gid) < 0 && geteuid() == 0)) {
		close(fd);
		unlinkat(dirfd, tmp, 0);
		return -1;
	}
	if (write_all_close(fd, buf, len) < 0 || renameat(dirfd, tmp, dirfd, name) < 0) {
		unlinkat(dirfd, tmp, 0);
		return -1;
	}
	return 0;
}

/* Create a random password file: n random bytes as hex, newline-terminated. */
static int secret_password(int dirfd, const char *name, size_t n)
{
	uint8_t raw[32];
	char hex[2 * sizeof raw + 2];
	int r;

	if (n > sizeof raw || crypto_random(raw, n) < 0)
		return -1;
	crypto_hex(raw, n, hex);
	strcat(hex, "\n");
	r = file_create(dirfd, name, hex, strlen(hex));
	crypto_wipe(raw, sizeof raw);
	crypto_wipe(hex, sizeof hex);
	return r < 0 ? -1 : 0;
}

/* One line of a route key file. */
struct route_line {
	char sender[POLICY_NAME_MAX + 1];
	char route[POLICY_NAME_MAX + 3];
	unsigned version;
	char hex[65];
};

/* Parse a route key list; lines must be well formed. */
static int routes_parse(char *buf, size_t len, struct route_line **lines_r, size_t *n_r)
{
	size_t cap = 1, n = 0;
	struct route_line *lines;
	char *save = NULL, *line;

	for (size_t i = 0; i < len; i++)
		if (buf[i] == '\n')
			cap++;
	lines = policy_xcalloc(cap, sizeof *lines);
	*lines_r = lines;
	*n_r = 0;
	for (line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		struct route_line *l = &lines[n];
		char extra;

		if (line[0] == '#' || line[0] == '\0')
			continue;
		if (strlen(line) > ROUTE_LINE_MAX ||
		    sscanf(line, "%32s %34s %u %64s %c", l->sender, l->route, &l->version, l->hex,
			   &extra) != 4 ||
		    strlen(l->hex) != 64 || l->version == 0)
			return -1;
		for (size_t i = 0; i < 64; i++)
			if (!((l->hex[i] >= '0' && l->hex[i] <= '9') ||
			      (l->hex[i] >= 'a' && l->hex[i] <= 'f')))
				return -1;
		*n_r = ++n;
	}
	return 0;
}

/* Format lines (all, or only those of routes held by name) into a malloc'd buffer. */
static char *routes_format(const struct policy *pol, const struct route_line *lines, size_t n,
			   const char *name, size_t *len_r)
{
	size_t cap = n * (ROUTE_LINE_MAX + 2) + 128, len = 0;
	char *buf = policy_xcalloc(cap, 1);

	len += (size_t)snprintf(buf, cap, "# Ward route keys (ward-policy): sender route version key\n");
	for (size_t i = 0; i < n; i++) {
		const struct route_line *l = &lines[i];

		if (name != NULL) {
			int held = 0;

			for (size_t r = 0; r < pol->n_routes; r++) {
				const struct policy_route *pr = &pol->routes[r];

				if (strcmp(pr->sender, l->sender) == 0 &&
				    strcmp(pr->route, l->route) == 0 &&
				    (strcmp(pr->sender, name) == 0 || strcmp(pr->reader, name) == 0))
					held = 1;
			}
			if (!held)
				continue;
		}
		len += (size_t)snprintf(buf + len, cap - len, "%s %s %u %s\n", l->sender, l->route,
					l->version, l->hex);
	}
	*len_r = len;
	return buf;
}

/* Bring routes.all up to the policy and rewrite every routes-<name>. */
static int secrets_routes(const struct policy *pol, int dirfd, const char **error_r)
{
	char *buf = NULL, *out = NULL;
	size_t len = 0, n = 0, n_old = 0, out_len = 0;
	struct route_line *lines = NULL, *all = NULL;
	int ret = -1, added = 0;
	const char *err;

	struct stat st;

	if (fstatat(dirfd, "routes.all", &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    policy_file_read(dirfd, "routes.all", ROUTE_KEYS_MAX, &buf, &len, &err) < 0) {
		*error_r = "routes.all: cannot read";
		goto out;
	}
	if (buf != NULL && routes_parse(buf, len, &lines, &n) < 0) {
		*error_r = "routes.all: malformed line";
		goto out;
	}
	n_old = n;
	all = policy_xcalloc(n + pol->n_routes, sizeof *all);
	if (n > 0)
		memcpy(all, lines, n * sizeof *all);
	for (size_t r = 0; r < pol->n_routes; r++) {
		const struct policy_route *pr = &pol->routes[r];
		uint8_t key[32];
		int found = 0;

		for (size_t i = 0; i < n; i++)
			if (strcmp(all[i].sender, pr->sender) == 0 &&
			    strcmp(all[i].route, pr->route) == 0)
				found = 1;
		if (found)
			continue;
		if (crypto_random(key, sizeof key) < 0) {
			*error_r = "no random bytes";
			goto out;
		}
		snprintf(all[n].sender, sizeof all[n].sender, "%s", pr->sender);
		snprintf(all[n].route, sizeof all[n].route, "%s", pr->route);
		all[n].version = 1;
		crypto_hex(key, sizeof key, all[n].hex);
		crypto_wipe(key, sizeof key);
		n++;
		added = 1;
	}
	if (added || buf == NULL) {
		out = routes_format(pol, all, n, NULL, &out_len);
		if (policy_file_replace(dirfd, "routes.all", out, out_len) < 0) {
			*error_r = "routes.all: cannot write";
			goto out;
		}
		crypto_wipe(out, out_len);
		free(out);
		out = NULL;
	}
	for (size_t i = 0; i < pol->n; i++) {
		char name[POLICY_NAME_MAX + 16], *old = NULL;
		size_t old_len = 0;
		int same;

		snprintf(name, sizeof name, "routes-%s", pol->p[i].name);
		out = routes_format(pol, all, n, pol->p[i].name, &out_len);
		same = policy_file_read(dirfd, name, ROUTE_KEYS_MAX, &old, &old_len, &err) == 0 &&
		       old_len == out_len && memcmp(old, out, out_len) == 0;
		if (old != NULL) {
			crypto_wipe(old, old_len);
			free(old);
		}
		if (!same && policy_file_replace(dirfd, name, out, out_len) < 0) {
			*error_r = "routes-<name>: cannot write";
			goto out;
		}
		crypto_wipe(out, out_len);
		free(out);
		out = NULL;
	}
	ret = 0;
out:
	if (out != NULL) {
		crypto_wipe(out, out_len);
		free(out);
	}
	if (buf != NULL) {
		crypto_wipe(buf, len);
		free(buf);
	}
	if (lines != NULL) {
		crypto_wipe(lines, n_old * sizeof *lines);
		free(lines);
	}
	if (all != NULL) {
		crypto_wipe(all, (n_old + pol->n_routes) * sizeof *all);
		free(all);
	}
	return ret;
}

int policy_secrets(const struct policy *pol, const char *dir, const char **error_r)
{
	int dirfd = -1, ret = -1;
	uint8_t kek[CRYPTO_KEY_LEN];

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		*error_r = "cannot create the directory";
		return -1;
	}
	dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		*error_r = "cannot open the directory";
		return -1;
	}
	for (size_t i = 0; i < pol->n; i++) {
		char name[POLICY_NAME_MAX + 8];

		snprintf(name, sizeof name, "redis-%s", pol->p[i].name);
		if (secret_password(dirfd, name, 24) < 0)
			goto fail;
		if (!pol->p[i].has_pg)
			continue;
		snprintf(name, sizeof name, "pg-%s", pol->p[i].name);
		if (secret_password(dirfd, name, 24) < 0)
			goto fail;
	}
	if (secret_password(dirfd, "redis-admin", 24) < 0)
		goto fail;
	/* Raw bytes; a last byte of '\n' is redrawn because readers of secret files
	 * strip one trailing newline (config.c), which would shorten the key. */
	do {
		if (crypto_random(kek, sizeof kek) < 0)
			goto fail;
	} while (kek[sizeof kek - 1] == '\n');
	if (file_create(dirfd, "kek", kek, sizeof kek) < 0)
		goto fail;
	/* ward-audit's checkpoint signing key (HMAC-SHA256), 64 hex digits: only the
	 * audit service's configuration names it; no other principal is given it. */
	if (policy_find(pol, "audit") != NULL && secret_password(dirfd, "audit-signing-key", 32) < 0)
		goto fail;
	if (secrets_routes(pol, dirfd, error_r) < 0)
		goto out;
	ret = 0;
	goto out;
fail:
	*error_r = "cannot create a secret file";
out:
	crypto_wipe(kek, sizeof kek);
	close(dirfd);
	return ret;
}
