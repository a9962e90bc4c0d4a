/*
 * wardctl_tenant — create, list and show tenants.
 *
 * A tenant lives in its home cell: its row in tenant.tenants, its data-encryption
 * key (random, wrapped under the region KEK with the tenant id bound in, version 1)
 * in tenant.keys, and its first admin in auth.users, all in one transaction that
 * sets app.tenant_id so row-level security checks every row written. The only thing
 * other cells learn is the directory row slug -> region, written after the home
 * cell committed; if that fails, everything written is undone.
 *
 * Every statement is a constant with parameters (db_exec); keys, the admin's
 * password and its hash are wiped after use.
 */
#include <argon2.h>
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto.h"
#include "wardctl.h"

#define SLUG_MIN 3
#define SLUG_MAX 40
#define NAME_MAX_LEN 200
#define EMAIL_MAX 254
#define PASSWORD_LEN 20
#define UUID_LEN 36
/* Argon2id parameters for stored passwords (the auth service's login verifies and
 * rehashes when they change: the PHC string records them). */
#define ARGON2_T 3
#define ARGON2_M 65536
#define ARGON2_P 1
#define ARGON2_SALT 16
#define ARGON2_HASH 32

const char wardctl_tenant_usage[] =
	"usage: wardctl tenant create --slug S --region R --name N --admin-email E\n"
	"       wardctl tenant list [--region R]\n"
	"       wardctl tenant show --slug S\n"
	"       wardctl tenant delete --slug S [--region R] [--shred]\n"
	"\n"
	"create  create tenant S homed in region R (us, eu, uk) with a fresh data key and\n"
	"        a first admin; prints its URL and the admin's one-time password.\n"
	"        Slugs are [a-z0-9-]{3,40} and unique across every region.\n"
	"list    tenants of every region (or of region R) with their status\n"
	"show    one tenant: id, region, name, status, creation time, data key version\n"
	"delete  close the account: its live data is removed at once, its wrapped data key\n"
	"        is kept apart with the closure date so `wardctl backup restore` can bring\n"
	"        it back within 60 days. --shred destroys the data key and every wrapped\n"
	"        copy now: every backup of the tenant becomes unreadable. --region names the\n"
	"        home cell of an already closed tenant (no longer in the directory).\n";

/* 0 if slug is [a-z0-9-]{3,40}, else -1 after printing why. */
static int tenant_slug_check(const char *slug)
{
	size_t len = strlen(slug);

	if (len < SLUG_MIN || len > SLUG_MAX)
		goto bad;
	for (size_t i = 0; i < len; i++)
		if (!((slug[i] >= 'a' && slug[i] <= 'z') || (slug[i] >= '0' && slug[i] <= '9') ||
		      slug[i] == '-'))
			goto bad;
	return 0;
bad:
	wardctl_error("invalid slug '%s': expected [a-z0-9-]{3,40}", slug);
	return -1;
}

/* 1 if name is 1..200 bytes of valid UTF-8 without control characters. */
static int name_valid(const char *name)
{
	const unsigned char *p = (const unsigned char *)name;
	size_t len = strlen(name);

	if (len == 0 || len > NAME_MAX_LEN)
		return 0;
	while (*p != '\0') {
		size_t n = 0;

		if (*p < 0x20 || *p == 0x7f)
			return 0;
		if (*p < 0x80)
			n = 0;
		else if ((*p & 0xe0) == 0xc0 && *p >= 0xc2)
			n = 1;
		else if ((*p & 0xf0) == 0xe0)
			n = 2;
		else if ((*p & 0xf8) == 0xf0 && *p <= 0xf4)
			n = 3;
		else
			return 0;
		p++;
		for (size_t i = 0; i < n; i++, p++)
			if ((*p & 0xc0) != 0x80)
				return 0;
	}
	return 1;
}

/* Lower-case email into out and check its shape: local@domain, printable ASCII, no
 * spaces, one '@', a dot in the domain, at most 254 bytes. */
static int email_normalize(const char *email, char out[EMAIL_MAX + 1])
{
	size_t len = strlen(email), at = 0, ats = 0;

	if (len < 3 || len > EMAIL_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)email[i];

		if (c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' ||
		    c == ',' || c == ';')
			return 0;
		if (c == '@') {
			at = i;
			ats++;
		}
		out[i] = (char)tolower(c);
	}
	out[len] = '\0';
	return ats == 1 && at > 0 && at < len - 1 && strchr(out + at + 1, '.') != NULL &&
	       out[len - 1] != '.';
}

/* A random version 4 UUID, formatted. */
static int uuid_random(char out[UUID_LEN + 1])
{
	uint8_t b[16];

	if (crypto_random(b, sizeof b) < 0)
		return -1;
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	snprintf(out, UUID_LEN + 1,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
		 b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
		 b[15]);
	return 0;
}

/* A random password of PASSWORD_LEN characters with at least one lower-case letter,
 * upper-case letter, digit and symbol. The symbols need no escaping in JSON or a
 * shell's double quotes. Unbiased: bytes beyond a multiple of the alphabet size are
 * dropped. */
static int password_random(char out[PASSWORD_LEN + 1])
{
	static const char alphabet[] = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"
				       "23456789"
				       "%+-.:=@^_~";
	const size_t n = sizeof alphabet - 1, limit = 256 - 256 % n;
	uint8_t buf[64];
	int ret = -1;

	for (int attempt = 0; attempt < 100; attempt++) {
		size_t len = 0;
		int lower = 0, upper = 0, digit = 0, sym = 0;

		while (len < PASSWORD_LEN) {
			if (crypto_random(buf, sizeof buf) < 0)
				goto out;
			for (size_t i = 0; i < sizeof buf && len < PASSWORD_LEN; i++)
				if (buf[i] < limit)
					out[len++] = alphabet[buf[i] % n];
		}
		out[len] = '\0';
		for (size_t i = 0; i < len; i++) {
			unsigned char c = (unsigned char)out[i];

			lower |= islower(c) != 0;
			upper |= isupper(c) != 0;
			digit |= isdigit(c) != 0;
			sym |= !isalnum(c);
		}
		if (lower && upper && digit && sym) {
			ret = 0;
			goto out;
		}
	}
out:
	crypto_wipe(buf, sizeof buf);
	return ret;
}

/* The region of slug in one cell's directory: 1 found (region_r set), 0 not, -1 error. */
static int directory_lookup(db_t *db, const char *slug, char region_r[8], const char **error_r)
{
	const char *params[1] = { slug };
	PGresult *res = db_exec(db, "SELECT region FROM directory.tenants WHERE slug = $1", 1,
				params, error_r);
	int found;

	if (res == NULL)
		return -1;
	found = PQntuples(res) > 0;
	if (found)
		snprintf(region_r, 8, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return found;
}

int wardctl_tenant_find(const struct wardctl_conf *conf, int region, const char *slug,
			char id[40], char status[16])
{
	const char *params[1] = { slug }, *err = NULL;
	db_t *db = wardctl_db(conf, region);
	PGresult *res;

	if (db == NULL)
		return -1;
	res = db_exec(db, "SELECT id, status FROM tenant.tenants WHERE slug = $1", 1, params, &err);
	if (res == NULL || PQntuples(res) != 1) {
		wardctl_error("region %s: no tenant '%s' homed here%s%s", wardctl_regions[region],
			      slug, err ? ": " : "", err ? err : "");
		PQclear(res);
		db_free(db);
		return -1;
	}
	snprintf(id, 40, "%s", PQgetvalue(res, 0, 0));
	if (status != NULL)
		snprintf(status, 16, "%s", PQgetvalue(res, 0, 1));
	PQclear(res);
	db_free(db);
	return 0;
}

/* The home region of slug, from the first cell whose directory answers: its index;
 * -1 if that directory has no such slug, -2 if no cell could be asked. */
static int tenant_home(const struct wardctl_conf *conf, const char *slug, char where[8])
{
	const char *err = NULL;
	int home = -2;

	for (int i = 0; i < WARDCTL_REGIONS && home < 0; i++) {
		db_t *db;
		int r;

		if ((db = wardctl_db(conf, i)) == NULL)
			continue;
		r = directory_lookup(db, slug, where, &err);
		if (r < 0)
			wardctl_error("region %s: %s", wardctl_regions[i], err);
		db_free(db);
		if (r > 0 && (home = wardctl_region_index(where)) < 0)
			home = -2;
		else if (r == 0)
			return -1;
	}
	return home;
}

/* Run one statement whose result is not needed (constant SQL, text parameters). */
static int run(db_t *db, const char *sql, int n, const char *const *params, const char **error_r)
{
	PGresult *res = db_exec(db, sql, n, params, error_r);

	if (res == NULL)
		return -1;
	PQclear(res);
	return 0;
}

/* Undo a created tenant in its home cell (one transaction as that tenant). */
static void tenant_undo_home(db_t *db, const char *tenant_id, const char *slug)
{
	const char *id[1] = { tenant_id }, *s[1] = { slug }, *err = NULL;

	if (db_begin(db, tenant_id, &err) < 0 ||
	    run(db, "DELETE FROM auth.users WHERE tenant_id = $1", 1, id, &err) < 0 ||
	    run(db, "DELETE FROM tenant.keys WHERE tenant_id = $1", 1, id, &err) < 0 ||
	    run(db, "DELETE FROM tenant.tenants WHERE id = $1", 1, id, &err) < 0 ||
	    run(db, "DELETE FROM directory.tenants WHERE slug = $1", 1, s, &err) < 0 ||
	    db_commit(db, &err) < 0) {
		db_rollback(db);
		wardctl_error("undo failed in the home cell, remove tenant %s (%s) by hand: %s",
			      slug, tenant_id, err);
	}
}

/* What tenant create writes in the home cell. */
struct tenant_new {
	char id[UUID_LEN + 1];
	char user_id[UUID_LEN + 1];
	char email[EMAIL_MAX + 1];
	char bidx[65];
	char password[PASSWORD_LEN + 1];
	char *hash; /* PHC string, malloc'd */
	size_t hash_len;
	uint8_t kek[CRYPTO_KEY_LEN];
	uint32_t kek_version; /* the key ring's current version (wardctl key rotate-kek) */
	uint8_t dek[CRYPTO_KEY_LEN];
	uint8_t *wrapped;
	size_t wrapped_len;
	uint8_t *email_enc;
	size_t email_enc_len;
};

/* Wipe and free what tenant_new holds. */
static void tenant_new_clear(struct tenant_new *t)
{
	if (t->hash != NULL) {
		crypto_wipe(t->hash, t->hash_len);
		free(t->hash);
	}
	free(t->wrapped);
	free(t->email_enc);
	crypto_wipe(t, sizeof *t);
}

/* Generate the keys, the admin's password, its hash and sealed email. */
static int tenant_new_make(struct tenant_new *t, const char *kek_file, const char **error_r)
{
	uint8_t salt[ARGON2_SALT];
	char aad[128];
	int r;

	{
		struct crypto_keyring ring;
		const uint8_t *cur;

		if (crypto_keyring_load(kek_file, &ring, error_r) < 0)
			return -1;
		cur = crypto_keyring_current(&ring, &t->kek_version);
		if (cur != NULL)
			memcpy(t->kek, cur, CRYPTO_KEY_LEN);
		crypto_keyring_wipe(&ring);
		if (cur == NULL) {
			*error_r = "the key ring holds no key";
			return -1;
		}
	}
	if (uuid_random(t->id) < 0 || uuid_random(t->user_id) < 0 ||
	    crypto_random(t->dek, sizeof t->dek) < 0 || password_random(t->password) < 0 ||
	    crypto_random(salt, sizeof salt) < 0) {
		*error_r = "no random bytes";
		return -1;
	}
	if (crypto_wrap_key(t->kek, t->kek_version, t->id, t->dek, &t->wrapped, &t->wrapped_len) <
	    0) {
		*error_r = "cannot wrap the data key";
		return -1;
	}
	/* Associated data: tenant|table|column|row, so the ciphertext cannot move. */
	snprintf(aad, sizeof aad, "%s|auth.users|email_enc|%s", t->id, t->user_id);
	if (crypto_seal(t->dek, 1, aad, strlen(aad), t->email, strlen(t->email), &t->email_enc,
			&t->email_enc_len) < 0 ||
	    crypto_blind_index(t->dek, "auth.users.email", t->email, strlen(t->email), t->bidx) <
		    0) {
		*error_r = "cannot encrypt the admin's email";
		return -1;
	}
	t->hash_len = argon2_encodedlen(ARGON2_T, ARGON2_M, ARGON2_P, ARGON2_SALT, ARGON2_HASH,
					Argon2_id);
	t->hash = calloc(1, t->hash_len + 1);
	if (t->hash == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	r = argon2id_hash_encoded(ARGON2_T, ARGON2_M, ARGON2_P, t->password, strlen(t->password),
				  salt, sizeof salt, ARGON2_HASH, t->hash, t->hash_len);
	crypto_wipe(salt, sizeof salt);
	if (r != ARGON2_OK) {
		*error_r = argon2_error_message(r);
		return -1;
	}
	return 0;
}

/* The home cell's transaction: tenant, key, first admin, directory row. */
static int tenant_create_home(db_t *db, const struct tenant_new *t, const char *slug,
			      const char *name, const char *region, const char **error_r)
{
	const char *tp[4] = { t->id, slug, name, region };
	const char *up[5] = { t->user_id, t->id, (const char *)t->email_enc, t->bidx, t->hash };
	const int ul[5] = { 0, 0, (int)t->email_enc_len, 0, 0 }, uf[5] = { 0, 0, 1, 0, 0 };
	const char *dp[2] = { slug, region };
	PGresult *res;

	if (db_begin(db, t->id, error_r) < 0)
		return -1;
	if (run(db, "INSERT INTO tenant.tenants (id, slug, name, region) VALUES ($1, $2, $3, $4)",
		4, tp, error_r) < 0)
		goto fail;
	if (wardctl_key_store(db, t->id, 1, t->wrapped, t->wrapped_len, t->kek_version,
			      error_r) < 0)
		goto fail;
	res = db_exec_bin(db,
			  "INSERT INTO auth.users (id, tenant_id, email_enc, email_bidx, role, "
			  "password_hash, must_change_password) "
			  "VALUES ($1, $2, $3, $4, 'admin', $5, true)",
			  5, up, ul, uf, error_r);
	if (res == NULL)
		goto fail;
	PQclear(res);
	if (run(db, "INSERT INTO directory.tenants (slug, region) VALUES ($1, $2)", 2, dp,
		error_r) < 0)
		goto fail;
	return db_commit(db, error_r);
fail:
	db_rollback(db);
	return -1;
}

/* Print the create result; the password goes through a buffer we wipe, not jansson. */
static int tenant_create_print(const char *slug, const char *region, const char *domain,
			       int https_port, const char *email, const char *password)
{
	json_t *o = json_object();
	char url[256], *s = NULL, *line = NULL;
	size_t len;
	int ret = -1, n;

	snprintf(url, sizeof url, "https://%s.%s.%s:%d/", slug, region, domain, https_port);
	if (o == NULL || json_object_set_new(o, "slug", json_string(slug)) < 0 ||
	    json_object_set_new(o, "region", json_string(region)) < 0 ||
	    json_object_set_new(o, "url", json_string(url)) < 0 ||
	    json_object_set_new(o, "admin_email", json_string(email)) < 0)
		goto out;
	s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
	if (s == NULL || (len = strlen(s)) < 2)
		goto out;
	s[len - 1] = '\0'; /* drop the closing brace, append the password by hand */
	len = len + PASSWORD_LEN + 32;
	line = malloc(len);
	if (line == NULL)
		goto out;
	/* password_random's alphabet needs no JSON escaping */
	n = snprintf(line, len, "%s,\"admin_password\":\"%s\"}\n", s, password);
	if (n < 0 || (size_t)n >= len)
		goto out;
	for (size_t off = 0; off < (size_t)n;) {
		ssize_t w = write(STDOUT_FILENO, line + off, (size_t)n - off);

		if (w <= 0)
			goto out;
		off += (size_t)w;
	}
	ret = 0;
out:
	if (line != NULL) {
		crypto_wipe(line, len);
		free(line);
	}
	free(s);
	json_decref(o);
	return ret;
}

/* wardctl tenant create. */
static int tenant_create(const struct wardctl_conf *conf, int argc, char **argv)
{
	static const struct option opts[] = { { "slug", required_argument, NULL, 's' },
					      { "region", required_argument, NULL, 'r' },
					      { "name", required_argument, NULL, 'n' },
					      { "admin-email", required_argument, NULL, 'e' },
					      { NULL, 0, NULL, 0 } };
	const char *slug = NULL, *region = NULL, *name = NULL, *email = NULL, *err = NULL;
	db_t *db[WARDCTL_REGIONS_MAX] = { NULL };
	int done[WARDCTL_REGIONS_MAX] = { 0 };
	struct tenant_new t;
	int c, home, ret = 1;

	memset(&t, 0, sizeof t);
	optind = 0;
	while ((c = getopt_long(argc, argv, "s:r:n:e:", opts, NULL)) != -1) {
		switch (c) {
		case 's': slug = optarg; break;
		case 'r': region = optarg; break;
		case 'n': name = optarg; break;
		case 'e': email = optarg; break;
		default: fputs(wardctl_tenant_usage, stderr); return 2;
		}
	}
	if (optind < argc || slug == NULL || region == NULL || name == NULL || email == NULL) {
		wardctl_error("tenant create needs --slug, --region, --name and --admin-email");
		return 2;
	}
	if (tenant_slug_check(slug) < 0)
		return 1;
	home = wardctl_region_index(region);
	if (home < 0) {
		wardctl_error("invalid region '%s': expected us, eu or uk", region);
		return 1;
	}
	if (!name_valid(name)) {
		wardctl_error("invalid name: 1 to %d bytes of UTF-8, no control characters",
			      NAME_MAX_LEN);
		return 1;
	}
	if (!email_normalize(email, t.email)) {
		wardctl_error("invalid admin email '%s'", email);
		return 1;
	}
	/* Unique across regions: every cell's directory must be reachable and free. */
	for (int i = 0; i < WARDCTL_REGIONS; i++) {
		char where[8];
		int r;

		if ((db[i] = wardctl_db(conf, i)) == NULL)
			goto out;
		r = directory_lookup(db[i], slug, where, &err);
		if (r < 0) {
			wardctl_error("region %s: %s", wardctl_regions[i], err);
			goto out;
		}
		if (r > 0) {
			wardctl_error("tenant '%s' already exists (region %s)", slug, where);
			goto out;
		}
	}
	if (tenant_new_make(&t, conf->cell[home].kek_file, &err) < 0) {
		wardctl_error("region %s: %s", region, err);
		goto out;
	}
	if (tenant_create_home(db[home], &t, slug, name, region, &err) < 0) {
		wardctl_error("region %s: cannot create tenant '%s': %s", region, slug, err);
		goto out;
	}
	done[home] = 1;
	for (int i = 0; i < WARDCTL_REGIONS; i++) {
		const char *dp[2] = { slug, region };

		if (i == home)
			continue;
		if (run(db[i], "INSERT INTO directory.tenants (slug, region) VALUES ($1, $2)", 2, dp,
			&err) < 0) {
			wardctl_error("region %s: cannot record tenant '%s' in the directory: %s "
				      "(creation undone)",
				      wardctl_regions[i], slug, err);
			goto undo;
		}
		done[i] = 1;
	}
	/* Recorded before success is reported; if it cannot be, the creation is undone. */
	{
		json_t *dj = json_pack("{s:s, s:s, s:s}", "slug", slug, "name", name, "region",
				       region);
		char *detail = dj != NULL ? json_dumps(dj, JSON_COMPACT) : NULL;
		char target[64];
		int ar;

		snprintf(target, sizeof target, "tenant:%s", t.id);
		ar = detail != NULL ? wardctl_audit_record(conf, home, t.id, "tenant", "create",
							   target, detail, &err)
				    : -1;
		free(detail);
		json_decref(dj);
		if (ar < 0) {
			wardctl_error("region %s: cannot record the audit event: %s (creation "
				      "undone)",
				      region, err != NULL ? err : "out of memory");
			goto undo;
		}
	}
	if (tenant_create_print(slug, region, conf->domain, conf->cell[home].https_port, t.email,
				t.password) < 0) {
		wardctl_error("cannot write the result (creation undone)");
		goto undo;
	}
	ret = 0;
	goto out;
undo:
	for (int i = 0; i < WARDCTL_REGIONS; i++) {
		const char *dp[1] = { slug };

		if (!done[i])
			continue;
		if (i == home)
			tenant_undo_home(db[i], t.id, slug);
		else if (run(db[i], "DELETE FROM directory.tenants WHERE slug = $1", 1, dp, &err) <
			 0)
			wardctl_error("region %s: undo failed, remove directory row '%s' by hand: %s",
				      wardctl_regions[i], slug, err);
	}
out:
	for (int i = 0; i < WARDCTL_REGIONS; i++)
		db_free(db[i]);
	tenant_new_clear(&t);
	return ret;
}

/* Add the tenants of one cell (directory rows homed there + their status) to arr. */
static int tenant_list_cell(const struct wardctl_conf *conf, int region, json_t *arr)
{
	const char *params[1] = { wardctl_regions[region] }, *err = NULL;
	db_t *db = wardctl_db(conf, region);
	PGresult *res = NULL;
	int ret = -1;

	if (db == NULL)
		return -1;
	/* The directory says where a tenant lives; the home cell says what it is. */
	res = db_exec(db,
		      "SELECT d.slug, d.region, t.name, coalesce(t.status, 'missing'), "
		      "to_char(coalesce(t.created_at, d.created_at) AT TIME ZONE 'UTC', "
		      "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
		      "FROM directory.tenants d LEFT JOIN tenant.tenants t ON t.slug = d.slug "
		      "WHERE d.region = $1 ORDER BY d.slug",
		      1, params, &err);
	if (res == NULL) {
		wardctl_error("region %s: %s", wardctl_regions[region], err);
		goto out;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		json_t *o = json_pack("{s:s, s:s, s:s?, s:s, s:s}", "slug", PQgetvalue(res, i, 0),
				      "region", PQgetvalue(res, i, 1), "name",
				      PQgetisnull(res, i, 2) ? NULL : PQgetvalue(res, i, 2),
				      "status", PQgetvalue(res, i, 3), "created_at",
				      PQgetvalue(res, i, 4));

		if (o == NULL || json_array_append_new(arr, o) < 0) {
			wardctl_error("out of memory");
			goto out;
		}
	}
	ret = 0;
out:
	PQclear(res);
	db_free(db);
	return ret;
}

/* wardctl tenant list [--region R]. */
static int tenant_list(const struct wardctl_conf *conf, int argc, char **argv)
{
	static const struct option opts[] = { { "region", required_argument, NULL, 'r' },
					      { NULL, 0, NULL, 0 } };
	const char *region = NULL;
	json_t *arr = json_array(), *out = NULL;
	int c, ret = 1;

	optind = 0;
	while ((c = getopt_long(argc, argv, "r:", opts, NULL)) != -1) {
		if (c != 'r') {
			fputs(wardctl_tenant_usage, stderr);
			json_decref(arr);
			return 2;
		}
		region = optarg;
	}
	if (optind < argc || arr == NULL) {
		fputs(wardctl_tenant_usage, stderr);
		json_decref(arr);
		return 2;
	}
	if (region != NULL && wardctl_region_index(region) < 0) {
		wardctl_error("invalid region '%s': expected us, eu or uk", region);
		goto out;
	}
	for (int i = 0; i < WARDCTL_REGIONS; i++) {
		if (region != NULL && i != wardctl_region_index(region))
			continue;
		if (tenant_list_cell(conf, i, arr) < 0)
			goto out;
	}
	out = json_pack("{s:O}", "tenants", arr);
	if (out == NULL || wardctl_print(out) < 0) {
		wardctl_error("cannot write the result");
		goto out;
	}
	ret = 0;
out:
	json_decref(out);
	json_decref(arr);
	return ret;
}

/* wardctl tenant show --slug S. */
static int tenant_show(const struct wardctl_conf *conf, int argc, char **argv)
{
	static const struct option opts[] = { { "slug", required_argument, NULL, 's' },
					      { NULL, 0, NULL, 0 } };
	const char *slug = NULL, *err = NULL;
	char where[8] = "";
	db_t *db = NULL;
	PGresult *res = NULL;
	json_t *o = NULL;
	int c, home = -1, ret = 1;

	optind = 0;
	while ((c = getopt_long(argc, argv, "s:", opts, NULL)) != -1) {
		if (c != 's') {
			fputs(wardctl_tenant_usage, stderr);
			return 2;
		}
		slug = optarg;
	}
	if (optind < argc || slug == NULL) {
		wardctl_error("tenant show needs --slug");
		return 2;
	}
	if (tenant_slug_check(slug) < 0)
		return 1;
	if ((home = tenant_home(conf, slug, where)) == -1) {
		wardctl_error("no tenant '%s'", slug);
		return 1;
	}
	if (home < 0) {
		wardctl_error("tenant '%s': no cell could be asked", slug);
		return 1;
	}
	if ((db = wardctl_db(conf, home)) == NULL)
		goto out;
	res = db_exec(db,
		      "SELECT t.id, t.slug, t.region, t.name, t.status, "
		      "to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
		      "to_char(t.closed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
		      "(SELECT max(k.version) FROM tenant.keys k "
		      " WHERE k.tenant_id = t.id AND k.destroyed_at IS NULL) "
		      "FROM tenant.tenants t WHERE t.slug = $1",
		      1, (const char *const[]){ slug }, &err);
	if (res == NULL) {
		wardctl_error("region %s: %s", where, err);
		goto out;
	}
	if (PQntuples(res) != 1) {
		wardctl_error("tenant '%s' is in the directory (region %s) but not in its cell",
			      slug, where);
		goto out;
	}
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s?, s:o}", "id", PQgetvalue(res, 0, 0),
		      "slug", PQgetvalue(res, 0, 1), "region", PQgetvalue(res, 0, 2), "name",
		      PQgetvalue(res, 0, 3), "status", PQgetvalue(res, 0, 4), "created_at",
		      PQgetvalue(res, 0, 5), "closed_at",
		      PQgetisnull(res, 0, 6) ? NULL : PQgetvalue(res, 0, 6), "dek_version",
		      PQgetisnull(res, 0, 7) ? json_null()
					     : json_integer(atoll(PQgetvalue(res, 0, 7))));
	if (o == NULL || wardctl_print(o) < 0) {
		wardctl_error("cannot write the result");
		goto out;
	}
	ret = 0;
out:
	json_decref(o);
	PQclear(res);
	db_free(db);
	return ret;
}

/* wardctl tenant delete --slug S [--region R] [--shred]. */
static int tenant_delete(const struct wardctl_conf *conf, int argc, char **argv)
{
	static const struct option opts[] = { { "slug", required_argument, NULL, 's' },
					      { "region", required_argument, NULL, 'r' },
					      { "shred", no_argument, NULL, 'S' },
					      { NULL, 0, NULL, 0 } };
	const char *slug = NULL, *region = NULL, *err = NULL;
	char where[8] = "", id[40], detail[128];
	int c, home = -1, shred = 0, ret = 1;
	db_t *db = NULL;
	PGresult *res = NULL;
	json_t *o = NULL;

	optind = 0;
	while ((c = getopt_long(argc, argv, "s:r:S", opts, NULL)) != -1) {
		if (c == 's')
			slug = optarg;
		else if (c == 'r')
			region = optarg;
		else if (c == 'S')
			shred = 1;
		else {
			fputs(wardctl_tenant_usage, stderr);
			return 2;
		}
	}
	if (optind < argc || slug == NULL) {
		wardctl_error("tenant delete needs --slug");
		return 2;
	}
	if (tenant_slug_check(slug) < 0)
		return 1;
	if (region != NULL && (home = wardctl_region_index(region)) < 0) {
		wardctl_error("unknown region '%s'", region);
		return 2;
	}
	if (home < 0 && (home = tenant_home(conf, slug, where)) == -1) {
		wardctl_error("no tenant '%s' in the directory (closed? give --region)", slug);
		return 1;
	}
	if (home < 0 || (db = wardctl_db(conf, home)) == NULL) {
		wardctl_error("tenant '%s': no cell could be asked", slug);
		goto out;
	}
	if (wardctl_tenant_find(conf, home, slug, id, NULL) < 0)
		goto out;
	/* One transaction in a narrow function (050_backup.sql) that checks the caller. */
	res = db_exec(db, shred ? "SELECT tenant.lifecycle_shred($1)" : "SELECT tenant.lifecycle_close($1)",
		      1, (const char *const[]){ id }, &err);
	if (res == NULL) {
		wardctl_error("region %s: %s", wardctl_regions[home], err);
		goto out;
	}
	snprintf(detail, sizeof detail, "{\"slug\":\"%s\",\"%s\":%s}", slug,
		 shred ? "keys_destroyed" : "rows_removed", PQgetvalue(res, 0, 0));
	/* The other cells' directories forget the slug too (best effort). */
	for (int i = 0; i < WARDCTL_REGIONS; i++) {
		db_t *other;

		if (i == home || (other = wardctl_db(conf, i)) == NULL)
			continue;
		if (run(other, "DELETE FROM directory.tenants WHERE slug = $1", 1,
			(const char *const[]){ slug }, &err) < 0)
			wardctl_error("region %s: directory: %s", wardctl_regions[i], err);
		db_free(other);
	}
	if (wardctl_audit_record(conf, home, id, "tenant", shred ? "shred" : "delete", id, detail,
				 &err) < 0)
		wardctl_error("audit event not recorded: %s", err);
	o = json_pack("{s:s, s:s, s:s, s:s, s:b}", "id", id, "slug", slug, "region",
		      wardctl_regions[home], "status", "closed", "shredded", shred);
	if (o == NULL || wardctl_print(o) < 0)
		goto out;
	ret = 0;
out:
	json_decref(o);
	PQclear(res);
	db_free(db);
	return ret;
}

int wardctl_tenant(const struct wardctl_conf *conf, int argc, char **argv)
{
	if (argc < 2) {
		fputs(wardctl_tenant_usage, stderr);
		return 2;
	}
	if (strcmp(argv[1], "create") == 0)
		return tenant_create(conf, argc - 1, argv + 1);
	if (strcmp(argv[1], "list") == 0)
		return tenant_list(conf, argc - 1, argv + 1);
	if (strcmp(argv[1], "show") == 0)
		return tenant_show(conf, argc - 1, argv + 1);
	if (strcmp(argv[1], "delete") == 0)
		return tenant_delete(conf, argc - 1, argv + 1);
	wardctl_error("unknown tenant command '%s'", argv[1]);
	fputs(wardctl_tenant_usage, stderr);
	return 2;
}
