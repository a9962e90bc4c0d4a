/*
 * auth_store — what every ward-auth handler shares: the request's transaction
 * (as the envelope's tenant, so row-level security applies), the tenant's DEK
 * (unwrapped under the region KEK, cached a few seconds, wiped), sealed columns
 * and blind indexes, Argon2id password hashes, random tokens stored as SHA-256,
 * tenant settings, audit events and problem replies.
 */
#include <argon2.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auditlog.h"
#include "auth.h"
#include "crypto.h"
#include "log.h"

/* ============================== replies ================================= */

/* Pack msg into reply->data. */
queue_result_t auth_reply(struct queue_reply *reply, const ProtobufCMessage *msg)
{
	size_t n = protobuf_c_message_get_packed_size(msg);

	reply->data = malloc(n ? n : 1);
	if (reply->data == NULL) {
		reply->status = 503;
		reply->error = "out of memory";
		return QUEUE_DONE;
	}
	reply->len = protobuf_c_message_pack(msg, reply->data);
	return QUEUE_DONE;
}

/* A ward.Problem reply with optional field errors and retry_after. */
static queue_result_t auth_problem_full(struct queue_reply *reply, int status, const char *title,
					const char *detail, const struct auth_rule_error *errs,
					size_t n, int retry_after)
{
	Ward__Problem p = WARD__PROBLEM__INIT;
	Ward__FieldError fe[AUTH_RULES_MAX], *fep[AUTH_RULES_MAX];
	queue_result_t r;

	if (n > AUTH_RULES_MAX)
		n = AUTH_RULES_MAX;
	for (size_t i = 0; i < n; i++) {
		ward__field_error__init(&fe[i]);
		fe[i].field = (char *)errs[i].field;
		fe[i].message = (char *)errs[i].message;
		fep[i] = &fe[i];
	}
	p.title = (char *)title;
	p.detail = (char *)(detail != NULL ? detail : "");
	p.n_errors = n;
	p.errors = fep;
	p.retry_after = retry_after;
	free(reply->data);
	reply->data = NULL;
	r = auth_reply(reply, &p.base);
	reply->status = status;
	reply->error = title;
	return r;
}

queue_result_t auth_problem(struct queue_reply *reply, int status, const char *title,
			    const char *detail)
{
	return auth_problem_full(reply, status, title, detail, NULL, 0, 0);
}

queue_result_t auth_problem_rules(struct queue_reply *reply, int status, const char *title,
				  const struct auth_rule_error *errs, size_t n)
{
	return auth_problem_full(reply, status, title, "", errs, n, 0);
}

queue_result_t auth_problem_retry(struct queue_reply *reply, int status, const char *title,
				  int retry_after)
{
	return auth_problem_full(reply, status, title, "", NULL, 0, retry_after);
}

/* Log a transient failure once and answer 503 (the gateway maps it). */
queue_result_t auth_fail(struct queue_reply *reply, const char *what, const char *error)
{
	log_event(LOG_ERROR, what, LF_STR("error", error != NULL ? error : "?"));
	return auth_problem(reply, 503, "Service Unavailable", "try again later");
}

/* ============================== requests ================================ */

bool auth_sender_is(const Ward__Envelope *env, const char *list)
{
	size_t n, wn = env->sender != NULL ? strlen(env->sender) : 0;

	if (wn == 0)
		return false;
	while (*list != '\0') {
		n = strcspn(list, " ");
		if (n == wn && strncmp(list, env->sender, n) == 0)
			return true;
		list += n;
		list += strspn(list, " ");
	}
	return false;
}

/* Open the tenant's transaction. */
int auth_begin(struct auth_req *r, struct daemon *d, const Ward__Envelope *env,
	       const char **error_r)
{
	memset(r, 0, sizeof *r);
	r->d = d;
	r->env = env;
	r->db = daemon_db(d);
	r->tenant = env->tenant;
	if (r->db == NULL) {
		*error_r = "no database";
		return -1;
	}
	if (!auth_uuid_valid(r->tenant)) {
		*error_r = "envelope tenant is not a tenant id";
		return -1;
	}
	return db_begin(r->db, r->tenant, error_r);
}

int auth_commit(struct auth_req *r, const char **error_r)
{
	int ret = db_commit(r->db, error_r);

	if (ret == 0)
		auditlog_relay_kick(r->d);
	crypto_wipe(r->dek, sizeof r->dek);
	r->have_dek = false;
	return ret;
}

void auth_rollback(struct auth_req *r)
{
	if (r->db != NULL)
		db_rollback(r->db);
	crypto_wipe(r->dek, sizeof r->dek);
	r->have_dek = false;
}

int auth_exec(struct auth_req *r, const char *sql, int n, const char *const *params,
	      const char **error_r)
{
	PGresult *res = db_exec(r->db, sql, n, params, error_r);

	if (res == NULL)
		return -1;
	PQclear(res);
	return 0;
}

int auth_mark(struct auth_req *r, const char **error_r)
{
	return db_mark_processed(r->db, "auth.processed", r->env->id, error_r);
}

/* ============================== DEK cache =============================== */

#define AUTH_DEK_SLOTS 64

struct auth_dek_slot {
	char tenant[AUTH_UUID_LEN + 1];
	uint8_t dek[CRYPTO_KEY_LEN];
	uint32_t version; /* the newest live DEK version (it seals) */
	uint8_t root[CRYPTO_KEY_LEN];
	bool have_root;
	time_t loaded;
};
static struct auth_dek_slot auth_deks[AUTH_DEK_SLOTS];

/* Wipe every cached DEK (deinit). */
void auth_dek_cache_clear(void)
{
	crypto_wipe(auth_deks, sizeof auth_deks);
}

void auth_dek_forget(const char *tenant)
{
	for (size_t i = 0; i < AUTH_DEK_SLOTS; i++)
		if (strcmp(auth_deks[i].tenant, tenant) == 0)
			crypto_wipe(&auth_deks[i], sizeof auth_deks[i]);
}

/* Copy a cache slot into the request. */
static void auth_dek_take(struct auth_req *r, const struct auth_dek_slot *s)
{
	memcpy(r->dek, s->dek, sizeof r->dek);
	r->dek_version = s->version;
	memcpy(r->blind_root, s->root, sizeof r->blind_root);
	r->have_root = s->have_root;
	r->have_dek = true;
}

/* The tenant's newest DEK (and its blind-index root, version 0, if stored): the
 * cache, else tenant.keys unwrapped with the KEK of the version each names. */
int auth_dek(struct auth_req *r, const char **error_r)
{
	const char *params[1] = { r->tenant };
	time_t now = time(NULL);
	struct auth_dek_slot *free_slot = NULL, *oldest = &auth_deks[0], got;
	const uint8_t *kek = daemon_kek(r->d);
	PGresult *res;
	int ret = 0, rows;

	if (r->have_dek)
		return 0;
	for (size_t i = 0; i < AUTH_DEK_SLOTS; i++) {
		struct auth_dek_slot *s = &auth_deks[i];

		if (s->tenant[0] != '\0' && now - s->loaded >= auth_conf.dek_cache_s)
			crypto_wipe(s, sizeof *s); /* expired: forget it */
		if (s->tenant[0] == '\0') {
			if (free_slot == NULL)
				free_slot = s;
			continue;
		}
		if (strcmp(s->tenant, r->tenant) == 0) {
			auth_dek_take(r, s);
			return 0;
		}
		if (s->loaded < oldest->loaded)
			oldest = s;
	}
	if (kek == NULL) {
		*error_r = "no KEK";
		return -1;
	}
	res = db_exec(r->db,
		      "SELECT version, wrapped FROM tenant.keys WHERE tenant_id = $1 "
		      "AND destroyed_at IS NULL AND (version = 0 OR version = (SELECT max(version) "
		      "FROM tenant.keys WHERE tenant_id = $1 AND destroyed_at IS NULL)) "
		      "ORDER BY version DESC",
		      1, params, error_r);
	if (res == NULL)
		return -1;
	rows = PQntuples(res);
	if (rows < 1 || strcmp(PQgetvalue(res, 0, 0), "0") == 0) {
		PQclear(res);
		*error_r = "tenant has no data key";
		return -1;
	}
	memset(&got, 0, sizeof got);
	for (int i = 0; i < rows && ret == 0; i++) {
		size_t wl = 0;
		unsigned char *w = PQunescapeBytea((const unsigned char *)PQgetvalue(res, i, 1), &wl);
		uint32_t v = (uint32_t)strtoul(PQgetvalue(res, i, 0), NULL, 10);
		char ctx[AUTH_UUID_LEN + 16];

		/* Version 0 is the blind-index root, wrapped with its own context. */
		snprintf(ctx, sizeof ctx, "%s%s", r->tenant, v == 0 ? "|blind-index" : "");
		ret = w == NULL ? -1
				: daemon_unwrap_key(r->d, ctx, w, wl, v == 0 ? got.root : got.dek,
						    error_r);
		if (w == NULL)
			*error_r = "out of memory";
		PQfreemem(w);
		if (v == 0)
			got.have_root = true;
		else
			got.version = v;
	}
	PQclear(res);
	if (ret < 0) { /* *error_r says which region key version was missing or failed */
		crypto_wipe(&got, sizeof got);
		return -1;
	}
	snprintf(got.tenant, sizeof got.tenant, "%s", r->tenant);
	got.loaded = now;
	auth_dek_take(r, &got);
	if (free_slot == NULL)
		free_slot = oldest;
	*free_slot = got;
	crypto_wipe(&got, sizeof got);
	return 0;
}

/* "tenant|table|column|row" */
static int auth_aad(struct auth_req *r, const char *table, const char *column, const char *row,
		    char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s|%s|%s|%s", r->tenant, table, column, row);

	return n < 0 || (size_t)n >= cap ? -1 : n;
}

int auth_seal(struct auth_req *r, const char *table, const char *column, const char *row,
	      const void *pt, size_t len, uint8_t **out_r, size_t *out_len_r)
{
	char aad[256];
	const char *err;
	int n = auth_aad(r, table, column, row, aad, sizeof aad);

	if (n < 0 || auth_dek(r, &err) < 0)
		return -1;
	return crypto_seal(r->dek, r->dek_version, aad, (size_t)n, pt, len, out_r, out_len_r);
}

int auth_open(struct auth_req *r, const char *table, const char *column, const char *row,
	      const uint8_t *in, size_t len, uint8_t **out_r, size_t *out_len_r)
{
	char aad[256];
	const char *err;
	int n = auth_aad(r, table, column, row, aad, sizeof aad);

	uint32_t v = 0;
	uint8_t old[CRYPTO_KEY_LEN];
	int ret;

	if (n < 0 || auth_dek(r, &err) < 0 || crypto_sealed_key_version(in, len, &v) < 0)
		return -1;
	if (v == r->dek_version)
		return crypto_open(r->dek, aad, (size_t)n, in, len, out_r, out_len_r, NULL);
	/* Sealed under an older DEK version (a rotation under way): open with it. */
	if (auth_dek_version(r, v, old, &err) < 0) {
		log_warn("auth: a sealed %s.%s: %s", table, column, err);
		return -1;
	}
	ret = crypto_open(old, aad, (size_t)n, in, len, out_r, out_len_r, NULL);
	crypto_wipe(old, sizeof old);
	return ret;
}

int auth_email_bidx(struct auth_req *r, const char *email, char out[65])
{
	return auth_blind(r, "auth.users.email", email, strlen(email), out);
}

/* ============================== audit =================================== */

void auth_actor(const Ward__Envelope *env, char *out, size_t cap)
{
	const Ward__Principal *p = env->principal;

	if (p == NULL || p->kind == NULL || *p->kind == '\0')
		snprintf(out, cap, "anonymous");
	else if (strcmp(p->kind, "api") == 0)
		snprintf(out, cap, "api:%s", p->id);
	else
		snprintf(out, cap, "%s:%s", p->kind, p->id);
}

int auth_audit(struct auth_req *r, const char *type, const char *action, const char *actor,
	       const char *target, const char *ip, const char *detail_json, const char **error_r)
{
	Ward__AuditEvent ev = WARD__AUDIT_EVENT__INIT;
	char who[128];

	if (actor == NULL) {
		auth_actor(r->env, who, sizeof who);
		actor = who;
	}
	ev.tenant_id = (char *)r->tenant;
	ev.type = (char *)type;
	ev.action = (char *)action;
	ev.actor = (char *)actor;
	ev.target = (char *)(target != NULL ? target : "");
	ev.ip = (char *)(ip != NULL ? ip : "");
	ev.request_id = r->env->request_id != NULL ? r->env->request_id : (char *)"";
	ev.detail_json = (char *)(detail_json != NULL ? detail_json : "");
	return auditlog_record(r->db, "auth", &ev, error_r);
}

/* ============================== settings ================================ */

/* Parse a PostgreSQL text[] in text form ({a,b}) of simple CIDR strings. */
static int auth_text_array(const char *s, char ***items_r, size_t *n_r)
{
	char **items = NULL;
	size_t n = 0, len = strlen(s);

	*items_r = NULL;
	*n_r = 0;
	if (len < 2 || s[0] != '{' || s[len - 1] != '}')
		return -1;
	for (size_t i = 1; i < len - 1;) {
		size_t j = i;
		char **grown;

		while (j < len - 1 && s[j] != ',')
			j++;
		grown = realloc(items, (n + 1) * sizeof *items);
		if (grown == NULL)
			goto fail;
		items = grown;
		items[n] = strndup(s + i, j - i);
		if (items[n] == NULL)
			goto fail;
		/* CIDRs and scopes contain no quotes; strip any anyway */
		if (items[n][0] == '"') {
			size_t l = strlen(items[n]);

			memmove(items[n], items[n] + 1, l);
			if (l >= 2 && items[n][l - 2] == '"')
				items[n][l - 2] = '\0';
		}
		n++;
		i = j + 1;
	}
	*items_r = items;
	*n_r = n;
	return 0;
fail:
	for (size_t i = 0; i < n; i++)
		free(items[i]);
	free(items);
	return -1;
}

static void auth_strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n && v != NULL; i++)
		free(v[i]);
	free(v);
}

void auth_settings_free(struct auth_settings *s)
{
	auth_strv_free(s->ip_allow, s->n_ip_allow);
	auth_strv_free(s->ip_allow_customers, s->n_ip_allow_customers);
	if (s->sso_key != NULL) {
		crypto_wipe(s->sso_key, s->sso_key_len);
		free(s->sso_key);
	}
	memset(s, 0, sizeof *s);
}

int auth_settings_load(struct auth_req *r, struct auth_settings *s, const char **error_r)
{
	const char *params[1] = { r->tenant };
	PGresult *res;
	int ret = -1;

	memset(s, 0, sizeof *s);
	s->policy = auth_policy_default;
	res = db_exec(r->db,
		      "SELECT min_length, require_letter, require_digit, require_symbol, history, "
		      "max_age_days, require_2fa_staff, ip_allow, ip_allow_customers, sso_alg, "
		      "sso_key_enc, sso_enforce_agents, sso_create_customers "
		      "FROM auth.settings WHERE tenant_id = $1",
		      1, params, error_r);
	if (res == NULL)
		return -1;
	if (PQntuples(res) == 0) {
		ret = 0;
		goto out;
	}
	s->policy.min_length = atoi(PQgetvalue(res, 0, 0));
	s->policy.require_letter = PQgetvalue(res, 0, 1)[0] == 't';
	s->policy.require_digit = PQgetvalue(res, 0, 2)[0] == 't';
	s->policy.require_symbol = PQgetvalue(res, 0, 3)[0] == 't';
	s->policy.history = atoi(PQgetvalue(res, 0, 4));
	s->policy.max_age_days = atoi(PQgetvalue(res, 0, 5));
	s->require_2fa_staff = PQgetvalue(res, 0, 6)[0] == 't';
	if (auth_text_array(PQgetvalue(res, 0, 7), &s->ip_allow, &s->n_ip_allow) < 0 ||
	    auth_text_array(PQgetvalue(res, 0, 8), &s->ip_allow_customers,
			    &s->n_ip_allow_customers) < 0) {
		*error_r = "bad settings row";
		goto out;
	}
	s->sso_alg = auth_jwt_alg_parse(PQgetvalue(res, 0, 9));
	s->sso_enforce_agents = PQgetvalue(res, 0, 11)[0] == 't';
	s->sso_create_customers = PQgetvalue(res, 0, 12)[0] == 't';
	if (!PQgetisnull(res, 0, 10)) {
		size_t wl = 0;
		unsigned char *w = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 10), &wl);
		int o = w == NULL ? -1
				  : auth_open(r, "auth.settings", "sso_key_enc", r->tenant, w, wl,
					      &s->sso_key, &s->sso_key_len);

		PQfreemem(w);
		if (o < 0) {
			*error_r = "cannot open the SSO key";
			goto out;
		}
	}
	ret = 0;
out:
	PQclear(res);
	if (ret < 0)
		auth_settings_free(s);
	return ret;
}

/* ============================== secrets ================================= */

int auth_email_normalize(const char *email, char out[AUTH_EMAIL_MAX + 1])
{
	size_t len = strlen(email), at = 0, ats = 0;

	if (len < 3 || len > AUTH_EMAIL_MAX)
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

int auth_uuid_random(char out[AUTH_UUID_LEN + 1])
{
	uint8_t b[16];

	if (crypto_random(b, sizeof b) < 0)
		return -1;
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	snprintf(out, AUTH_UUID_LEN + 1,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
		 b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
		 b[15]);
	return 0;
}

int auth_uuid_valid(const char *s)
{
	if (s == NULL || strlen(s) != AUTH_UUID_LEN)
		return 0;
	for (int i = 0; i < AUTH_UUID_LEN; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return 0;
		} else if (!isxdigit((unsigned char)s[i])) {
			return 0;
		}
	}
	return 1;
}

void auth_sha256_hex(const char *s, char out[65])
{
	uint8_t h[32];

	crypto_sha256(s, strlen(s), h);
	crypto_hex(h, sizeof h, out);
}

int auth_token_new(const char *prefix, char out[AUTH_TOKEN_MAX], char hash_hex[65])
{
	uint8_t raw[32];
	char hex[65];

	if (crypto_random(raw, sizeof raw) < 0)
		return -1;
	crypto_hex(raw, sizeof raw, hex);
	snprintf(out, AUTH_TOKEN_MAX, "%s%s", prefix, hex);
	auth_sha256_hex(out, hash_hex);
	crypto_wipe(raw, sizeof raw);
	crypto_wipe(hex, sizeof hex);
	return 0;
}

void auth_free_secret(char *s)
{
	if (s != NULL) {
		crypto_wipe(s, strlen(s));
		free(s);
	}
}

/* ============================== passwords =============================== */

#define AUTH_SALT_LEN 16
#define AUTH_HASH_LEN 32

static char *auth_dummy_hash; /* verified when there is no user, for equal timing */

int auth_password_hash(const char *password, char **hash_r)
{
	uint8_t salt[AUTH_SALT_LEN];
	size_t n = argon2_encodedlen((uint32_t)auth_conf.argon2_t, (uint32_t)auth_conf.argon2_m_kib,
				     (uint32_t)auth_conf.argon2_p, AUTH_SALT_LEN, AUTH_HASH_LEN,
				     Argon2_id);
	char *h = calloc(1, n + 1);
	int r;

	*hash_r = NULL;
	if (h == NULL || crypto_random(salt, sizeof salt) < 0) {
		free(h);
		return -1;
	}
	r = argon2id_hash_encoded((uint32_t)auth_conf.argon2_t, (uint32_t)auth_conf.argon2_m_kib,
				  (uint32_t)auth_conf.argon2_p, password, strlen(password), salt,
				  sizeof salt, AUTH_HASH_LEN, h, n);
	crypto_wipe(salt, sizeof salt);
	if (r != ARGON2_OK) {
		free(h);
		return -1;
	}
	*hash_r = h;
	return 0;
}

int auth_password_verify(const char *hash, const char *password)
{
	int r;

	if (hash == NULL || strncmp(hash, "$argon2id$", 10) != 0) {
		/* same work as a real user's check, then no */
		(void)argon2id_verify(auth_dummy_hash, password, strlen(password));
		return 0;
	}
	r = argon2id_verify(hash, password, strlen(password));
	if (r == ARGON2_OK)
		return 1;
	if (r == ARGON2_VERIFY_MISMATCH)
		return 0;
	return -1;
}

int auth_password_needs_rehash(const char *hash)
{
	char want[96];

	snprintf(want, sizeof want, "$argon2id$v=19$m=%d,t=%d,p=%d$", auth_conf.argon2_m_kib,
		 auth_conf.argon2_t, auth_conf.argon2_p);
	return strncmp(hash, want, strlen(want)) != 0;
}

int auth_password_init(void)
{
	uint8_t pw[16];
	char hex[33];
	int r;

	if (crypto_random(pw, sizeof pw) < 0)
		return -1;
	crypto_hex(pw, sizeof pw, hex);
	r = auth_password_hash(hex, &auth_dummy_hash);
	crypto_wipe(hex, sizeof hex);
	crypto_wipe(pw, sizeof pw);
	return r;
}

void auth_password_deinit(void)
{
	auth_free_secret(auth_dummy_hash);
	auth_dummy_hash = NULL;
}

int auth_idle_s(const char *role)
{
	if (strcmp(role, "admin") == 0)
		return auth_conf.idle_admin_s;
	if (strcmp(role, "agent") == 0)
		return auth_conf.idle_agent_s;
	return auth_conf.idle_customer_s;
}

int auth_absolute_s(const char *role)
{
	if (strcmp(role, "admin") == 0)
		return auth_conf.absolute_admin_s;
	if (strcmp(role, "agent") == 0)
		return auth_conf.absolute_agent_s;
	return auth_conf.absolute_customer_s;
}
