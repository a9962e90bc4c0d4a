/*
 * auth_admin — what an admin manages: tenant security settings (password
 * policy, SSO key, 2FA requirement, IP allow-lists), API keys, OAuth clients and
 * their client-credentials tokens, and users (create, invite, list, patch,
 * disable, revoke sessions).
 *
 * Secrets are shown once and stored only as SHA-256 (keys, client secrets,
 * access tokens, invitations); the SSO key is sealed under the tenant's DEK.
 * Every change is an audit event in the same transaction, and every effect
 * records the envelope id (db_mark_processed) so a redelivery is a no-op.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "auth_patch.pb-c.h"
#include "crypto.h"
#include "log.h"

#define AUTH_SCOPES_MAX 16
#define AUTH_CIDRS_MAX 32

static const char *const auth_known_scopes[] = {
	"tickets:read", "tickets:write", "users:read", "users:admin", "audit:read",
};

/* Start an admin change: transaction + exactly-once mark. 1 go, 0 answered, -1 err. */
static int auth_change_begin(struct auth_req *r, struct daemon *d, const Ward__Envelope *env,
			     struct queue_reply *reply, queue_result_t *ret)
{
	const char *err = NULL;
	int m;

	if (auth_begin(r, d, env, &err) < 0) {
		*ret = auth_fail(reply, "begin", err);
		return 0;
	}
	m = auth_mark(r, &err);
	if (m <= 0) {
		auth_rollback(r);
		*ret = m < 0 ? auth_fail(reply, "mark", err)
			     : auth_problem(reply, 409, "Conflict", "request already processed");
		return 0;
	}
	return 1;
}

/* Build "{a,b}" from validated words (scopes, CIDRs: no quoting needed). */
static int auth_array_lit(char *const *items, size_t n, char *out, size_t cap)
{
	size_t o = 0;

	if (cap < 3)
		return -1;
	out[o++] = '{';
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(items[i]);

		if (o + l + 3 > cap)
			return -1;
		if (i > 0)
			out[o++] = ',';
		memcpy(out + o, items[i], l);
		o += l;
	}
	out[o++] = '}';
	out[o] = '\0';
	return 0;
}

/* Check scopes against the known list; 0 or -1. */
static int auth_scopes_valid(char *const *scopes, size_t n)
{
	if (n == 0 || n > AUTH_SCOPES_MAX)
		return -1;
	for (size_t i = 0; i < n; i++) {
		bool ok = false;

		for (size_t k = 0; k < sizeof auth_known_scopes / sizeof auth_known_scopes[0]; k++)
			ok |= strcmp(scopes[i], auth_known_scopes[k]) == 0;
		if (!ok)
			return -1;
	}
	return 0;
}

/* Check CIDRs; 0 or -1. */
static int auth_cidrs_valid(char *const *cidrs, size_t n)
{
	struct auth_cidr c;

	if (n > AUTH_CIDRS_MAX)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (auth_cidr_parse(cidrs[i], &c) < 0)
			return -1;
	return 0;
}

/* 1..200 bytes, no control characters. */
static int auth_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 200)
		return 0;
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

/* Ensure the tenant's settings row exists (defaults). */
static int auth_settings_row(struct auth_req *r, const char **error_r)
{
	const char *params[1] = { r->tenant };

	return auth_exec(r,
			 "INSERT INTO auth.settings (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING",
			 1, params, error_r);
}

/* Split a text[] literal into up to cap malloc'd-free pointers into lit. */
static size_t auth_lit_split(char *lit, char **out, size_t cap)
{
	size_t n = 0, len = strlen(lit);
	char *save = NULL, *tok;

	if (len < 2 || lit[0] != '{' || lit[len - 1] != '}')
		return 0;
	lit[len - 1] = '\0';
	for (tok = strtok_r(lit + 1, ",", &save); tok != NULL && n < cap;
	     tok = strtok_r(NULL, ",", &save))
		out[n++] = tok;
	return n;
}

/* ============================== settings ================================ */

AUTH_HANDLER(auth_policy_get)
{
	Ward__PasswordPolicy out = WARD__PASSWORD_POLICY__INIT;
	struct auth_settings s;
	struct auth_req r;
	const char *err = NULL;

	if (auth_begin(&r, d, env, &err) < 0 || auth_settings_load(&r, &s, &err) < 0) {
		auth_rollback(&r);
		return auth_fail(reply, "policy get", err);
	}
	auth_rollback(&r);
	out.min_length = s.policy.min_length;
	out.require_letter = s.policy.require_letter;
	out.require_digit = s.policy.require_digit;
	out.require_symbol = s.policy.require_symbol;
	out.history = s.policy.history;
	out.max_age_days = s.policy.max_age_days;
	auth_settings_free(&s);
	return auth_reply(reply, &out.base);
}

AUTH_HANDLER(auth_policy_put)
{
	Ward__PasswordPolicy *req;
	struct auth_rule_error errs[AUTH_RULES_MAX];
	struct auth_policy pol;
	struct auth_req r;
	char v[6][16], detail[256];
	const char *err = NULL;
	queue_result_t ret;
	size_t n;

	req = ward__password_policy__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	pol.min_length = req->min_length;
	pol.require_letter = req->require_letter;
	pol.require_digit = req->require_digit;
	pol.require_symbol = req->require_symbol;
	pol.history = req->history;
	pol.max_age_days = req->max_age_days;
	if (auth_policy_validate(&pol, errs, &n) < 0) {
		ward__password_policy__free_unpacked(req, NULL);
		return auth_problem_rules(reply, 422, "Unprocessable Content", errs, n);
	}
	if (!auth_change_begin(&r, d, env, reply, &ret))
		goto out;
	snprintf(v[0], 16, "%d", pol.min_length);
	snprintf(v[1], 16, "%s", pol.require_letter ? "t" : "f");
	snprintf(v[2], 16, "%s", pol.require_digit ? "t" : "f");
	snprintf(v[3], 16, "%s", pol.require_symbol ? "t" : "f");
	snprintf(v[4], 16, "%d", pol.history);
	snprintf(v[5], 16, "%d", pol.max_age_days);
	snprintf(detail, sizeof detail,
		 "{\"min_length\":%d,\"require_letter\":%s,\"require_digit\":%s,"
		 "\"require_symbol\":%s,\"history\":%d,\"max_age_days\":%d}",
		 pol.min_length, pol.require_letter ? "true" : "false",
		 pol.require_digit ? "true" : "false", pol.require_symbol ? "true" : "false",
		 pol.history, pol.max_age_days);
	{
		const char *params[7] = { r.tenant, v[0], v[1], v[2], v[3], v[4], v[5] };

		if (auth_settings_row(&r, &err) < 0 ||
		    auth_exec(&r,
			      "UPDATE auth.settings SET min_length = $2::int, require_letter = $3, "
			      "require_digit = $4, require_symbol = $5, history = $6::int, "
			      "max_age_days = $7::int, updated_at = now() WHERE tenant_id = $1",
			      7, params, &err) < 0 ||
		    auth_audit(&r, "settings", "password_policy.update", NULL, "settings:password",
			       env->principal->ip, detail, &err) < 0 ||
		    auth_commit(&r, &err) < 0) {
			auth_rollback(&r);
			ret = auth_fail(reply, "policy put", err);
			goto out;
		}
	}
	ret = auth_reply(reply, &req->base);
out:
	ward__password_policy__free_unpacked(req, NULL);
	return ret;
}

AUTH_HANDLER(auth_sso_get)
{
	Ward__SsoSettings out = WARD__SSO_SETTINGS__INIT;
	struct auth_settings s;
	struct auth_req r;
	const char *err = NULL;

	if (auth_begin(&r, d, env, &err) < 0 || auth_settings_load(&r, &s, &err) < 0) {
		auth_rollback(&r);
		return auth_fail(reply, "sso get", err);
	}
	auth_rollback(&r);
	out.alg = s.sso_alg == AUTH_JWT_HS256 ? "HS256" : s.sso_alg == AUTH_JWT_RS256 ? "RS256" : "";
	out.has_key = s.sso_key != NULL;
	out.enforce_for_agents = s.sso_enforce_agents;
	out.create_customers = s.sso_create_customers;
	auth_settings_free(&s);
	return auth_reply(reply, &out.base);
}

AUTH_HANDLER(auth_sso_put)
{
	Ward__SsoSettings *req;
	Ward__SsoSettings out = WARD__SSO_SETTINGS__INIT;
	enum auth_jwt_alg alg;
	struct auth_req r;
	uint8_t *enc = NULL;
	size_t enc_len = 0, klen;
	const char *err = NULL, *why = NULL;
	queue_result_t ret;

	req = ward__sso_settings__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	alg = auth_jwt_alg_parse(req->alg);
	klen = strlen(req->key);
	if (req->alg[0] != '\0' && alg == AUTH_JWT_NONE) {
		static const struct auth_rule_error e = { "alg", "must be HS256, RS256 or empty" };

		ret = auth_problem_rules(reply, 422, "Unprocessable Content", &e, 1);
		goto out;
	}
	if (alg == AUTH_JWT_HS256 && (klen < 32 || klen > 512)) {
		static const struct auth_rule_error e = { "key", "HS256 needs 32 to 512 bytes" };

		ret = auth_problem_rules(reply, 422, "Unprocessable Content", &e, 1);
		goto out;
	}
	if (alg == AUTH_JWT_RS256) {
		EVP_PKEY *pk = auth_jwt_pubkey_load(req->key, klen, &why);

		if (pk == NULL) {
			static const struct auth_rule_error e = {
				"key", "RS256 needs an RSA public key (PEM, at least 2048 bits)"
			};

			ret = auth_problem_rules(reply, 422, "Unprocessable Content", &e, 1);
			goto out;
		}
		EVP_PKEY_free(pk);
	}
	if (!auth_change_begin(&r, d, env, reply, &ret))
		goto out;
	if (alg != AUTH_JWT_NONE &&
	    auth_seal(&r, "auth.settings", "sso_key_enc", r.tenant, req->key, klen, &enc,
		      &enc_len) < 0) {
		err = "cannot seal the key";
		goto fail;
	}
	{
		const char *params[5] = { r.tenant, alg == AUTH_JWT_NONE ? "" : req->alg,
					  (const char *)enc, req->enforce_for_agents ? "t" : "f",
					  req->create_customers ? "t" : "f" };
		const int lens[5] = { 0, 0, (int)enc_len, 0, 0 }, fmts[5] = { 0, 0, 1, 0, 0 };
		PGresult *res;

		if (auth_settings_row(&r, &err) < 0)
			goto fail;
		res = db_exec_bin(r.db,
				  "UPDATE auth.settings SET sso_alg = $2, sso_key_enc = $3, "
				  "sso_enforce_agents = $4, sso_create_customers = $5, "
				  "updated_at = now() WHERE tenant_id = $1",
				  5, params, lens, fmts, &err);
		if (res == NULL)
			goto fail;
		PQclear(res);
	}
	if (auth_audit(&r, "settings", "sso.update", NULL, "settings:sso", env->principal->ip,
		       alg == AUTH_JWT_NONE ? "{\"alg\":\"\"}"
		       : alg == AUTH_JWT_HS256 ? "{\"alg\":\"HS256\"}"
					       : "{\"alg\":\"RS256\"}",
		       &err) < 0 ||
	    auth_commit(&r, &err) < 0)
		goto fail;
	out.alg = alg == AUTH_JWT_NONE ? "" : req->alg;
	out.has_key = alg != AUTH_JWT_NONE;
	out.enforce_for_agents = req->enforce_for_agents;
	out.create_customers = req->create_customers;
	ret = auth_reply(reply, &out.base);
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "sso put", err);
out:
	free(enc);
	crypto_wipe(req->key, strlen(req->key));
	ward__sso_settings__free_unpacked(req, NULL);
	return ret;
}

AUTH_HANDLER(auth_security_get)
{
	Ward__SecuritySettings out = WARD__SECURITY_SETTINGS__INIT;
	struct auth_settings s;
	struct auth_req r;
	const char *err = NULL;
	queue_result_t ret;

	if (auth_begin(&r, d, env, &err) < 0 || auth_settings_load(&r, &s, &err) < 0) {
		auth_rollback(&r);
		return auth_fail(reply, "security get", err);
	}
	auth_rollback(&r);
	out.require_2fa_staff = s.require_2fa_staff;
	out.n_ip_allow = s.n_ip_allow;
	out.ip_allow = s.ip_allow;
	out.n_ip_allow_customers = s.n_ip_allow_customers;
	out.ip_allow_customers = s.ip_allow_customers;
	ret = auth_reply(reply, &out.base);
	auth_settings_free(&s);
	return ret;
}

AUTH_HANDLER(auth_security_put)
{
	Ward__SecuritySettings *req;
	struct auth_req r;
	char a1[AUTH_CIDRS_MAX * 48], a2[AUTH_CIDRS_MAX * 48];
	const char *err = NULL;
	queue_result_t ret;

	req = ward__security_settings__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (auth_cidrs_valid(req->ip_allow, req->n_ip_allow) < 0 ||
	    auth_cidrs_valid(req->ip_allow_customers, req->n_ip_allow_customers) < 0 ||
	    auth_array_lit(req->ip_allow, req->n_ip_allow, a1, sizeof a1) < 0 ||
	    auth_array_lit(req->ip_allow_customers, req->n_ip_allow_customers, a2, sizeof a2) < 0) {
		static const struct auth_rule_error e = { "ip_allow",
							  "CIDRs such as 192.0.2.0/24 (at most 32)" };

		ret = auth_problem_rules(reply, 422, "Unprocessable Content", &e, 1);
		goto out;
	}
	if (!auth_change_begin(&r, d, env, reply, &ret))
		goto out;
	{
		const char *params[4] = { r.tenant, req->require_2fa_staff ? "t" : "f", a1, a2 };

		if (auth_settings_row(&r, &err) < 0 ||
		    auth_exec(&r,
			      "UPDATE auth.settings SET require_2fa_staff = $2, ip_allow = $3::text[], "
			      "ip_allow_customers = $4::text[], updated_at = now() "
			      "WHERE tenant_id = $1",
			      4, params, &err) < 0 ||
		    auth_audit(&r, "settings", "security.update", NULL, "settings:security",
			       env->principal->ip, "", &err) < 0 ||
		    auth_commit(&r, &err) < 0) {
			auth_rollback(&r);
			ret = auth_fail(reply, "security put", err);
			goto out;
		}
	}
	ret = auth_reply(reply, &req->base);
out:
	ward__security_settings__free_unpacked(req, NULL);
	return ret;
}

/* ============================== API keys ================================ */

/* Fill an ApiKey view from a row: id, name, prefix, scopes, cidrs, expires, created,
 * revoked, last_used. Pointers into res / the split buffers. */
static void auth_api_key_view(PGresult *res, int i, Ward__ApiKey *k, char *lits, char **sc,
			      char **ci)
{
	char *l1 = lits, *l2 = lits + 1024;

	ward__api_key__init(k);
	k->id = PQgetvalue(res, i, 0);
	k->name = PQgetvalue(res, i, 1);
	k->prefix = PQgetvalue(res, i, 2);
	snprintf(l1, 1024, "%s", PQgetvalue(res, i, 3));
	snprintf(l2, 2048, "%s", PQgetvalue(res, i, 4));
	k->n_scopes = auth_lit_split(l1, sc, AUTH_SCOPES_MAX);
	k->scopes = sc;
	k->n_allowed_cidrs = auth_lit_split(l2, ci, AUTH_CIDRS_MAX);
	k->allowed_cidrs = ci;
	k->expires_at = PQgetvalue(res, i, 5);
	k->created_at = PQgetvalue(res, i, 6);
	k->revoked = PQgetvalue(res, i, 7)[0] == 't';
	k->last_used_at = PQgetvalue(res, i, 8);
}

#define AUTH_TS(col)                                                                           \
	"coalesce(to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')"
#define AUTH_KEY_COLS                                                                          \
	"id, name, prefix, scopes, allowed_cidrs, " AUTH_TS("expires_at") ", " AUTH_TS(        \
		"created_at") ", revoked_at IS NOT NULL, " AUTH_TS("last_used_at")

AUTH_HANDLER(auth_api_key_create)
{
	Ward__ApiKeyCreateRequest *req;
	Ward__ApiKey k;
	struct auth_req r;
	char id[AUTH_UUID_LEN + 1], key[AUTH_TOKEN_MAX], hash[65], prefix[16], sl[512],
		cl[AUTH_CIDRS_MAX * 48], days[16], actor[64], target[64], lits[3072];
	char *sc[AUTH_SCOPES_MAX], *ci[AUTH_CIDRS_MAX];
	const char *err = NULL;
	PGresult *res = NULL;
	queue_result_t ret;

	req = ward__api_key_create_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	{
		struct auth_rule_error errs[4];
		size_t n = 0;

		if (!auth_name_valid(req->name))
			errs[n++] = (struct auth_rule_error){ "name", "1 to 200 characters" };
		if (auth_scopes_valid(req->scopes, req->n_scopes) < 0 ||
		    auth_array_lit(req->scopes, req->n_scopes, sl, sizeof sl) < 0)
			errs[n++] = (struct auth_rule_error){
				"scopes", "one or more of tickets:read tickets:write users:read "
					  "users:admin audit:read"
			};
		if (auth_cidrs_valid(req->allowed_cidrs, req->n_allowed_cidrs) < 0 ||
		    auth_array_lit(req->allowed_cidrs, req->n_allowed_cidrs, cl, sizeof cl) < 0)
			errs[n++] = (struct auth_rule_error){ "allowed_cidrs", "CIDRs (at most 32)" };
		if (req->expires_in_days < 0 || req->expires_in_days > 3650)
			errs[n++] = (struct auth_rule_error){ "expires_in_days", "0 to 3650" };
		if (n > 0) {
			ret = auth_problem_rules(reply, 422, "Unprocessable Content", errs, n);
			goto out;
		}
	}
	if (!auth_change_begin(&r, d, env, reply, &ret))
		goto out;
	if (auth_uuid_random(id) < 0 || auth_token_new("wk_", key, hash) < 0) {
		err = "no random bytes";
		goto fail;
	}
	snprintf(prefix, sizeof prefix, "%.11s", key);
	snprintf(days, sizeof days, "%d", req->expires_in_days);
	auth_actor(env, actor, sizeof actor);
	{
		const char *params[9] = { id, r.tenant, req->name, prefix, hash, sl, cl, days, actor };

		res = db_exec(r.db,
			      "INSERT INTO auth.api_keys (id, tenant_id, name, prefix, key_hash, "
			      "scopes, allowed_cidrs, expires_at, created_by) VALUES ($1, $2, $3, $4, "
			      "$5, $6::text[], $7::text[], CASE WHEN $8::int > 0 THEN now() + "
			      "make_interval(days => $8::int) END, $9) RETURNING " AUTH_KEY_COLS,
			      9, params, &err);
		if (res == NULL)
			goto fail;
	}
	snprintf(target, sizeof target, "api_key:%s", id);
	if (auth_audit(&r, "api_key", "create", actor, target, env->principal->ip, "", &err) < 0 ||
	    auth_commit(&r, &err) < 0)
		goto fail;
	auth_api_key_view(res, 0, &k, lits, sc, ci);
	k.key = key;
	ret = auth_reply(reply, &k.base);
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "api key create", err);
out:
	PQclear(res);
	crypto_wipe(key, sizeof key);
	ward__api_key_create_request__free_unpacked(req, NULL);
	return ret;
}

/* limit/cursor of a list request; -1 if the cursor is not one of ours. */
static int auth_list_args(const Ward__ListRequest *req, char limit[8], const char **cursor)
{
	int l = req->limit <= 0 ? 50 : req->limit > 100 ? 100 : req->limit;

	snprintf(limit, 8, "%d", l + 1); /* one more: is there a next page? */
	*cursor = req->cursor[0] != '\0' ? req->cursor : "00000000-0000-0000-0000-000000000000";
	return auth_uuid_valid(*cursor) ? l : -1;
}

AUTH_HANDLER(auth_api_key_list)
{
	Ward__ListRequest *req;
	Ward__ApiKeyList out = WARD__API_KEY_LIST__INIT;
	Ward__ApiKey *items = NULL, **itemp = NULL;
	char limit[8], (*lits)[3072] = NULL, *(*sc)[AUTH_SCOPES_MAX] = NULL,
		       *(*ci)[AUTH_CIDRS_MAX] = NULL;
	const char *err = NULL, *cursor;
	struct auth_req r;
	PGresult *res = NULL;
	queue_result_t ret;
	int l, n;

	req = ward__list_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	l = auth_list_args(req, limit, &cursor);
	if (l < 0) {
		ret = auth_problem(reply, 400, "Bad Request", "bad cursor");
		goto out;
	}
	if (auth_begin(&r, d, env, &err) < 0)
		goto fail;
	{
		const char *params[2] = { cursor, limit };

		res = db_exec(r.db,
			      "SELECT " AUTH_KEY_COLS " FROM auth.api_keys WHERE id > $1::uuid "
			      "ORDER BY id LIMIT $2::int",
			      2, params, &err);
	}
	auth_rollback(&r);
	if (res == NULL)
		goto fail;
	n = PQntuples(res) > l ? l : PQntuples(res);
	items = calloc((size_t)n + 1, sizeof *items);
	itemp = calloc((size_t)n + 1, sizeof *itemp);
	lits = calloc((size_t)n + 1, sizeof *lits);
	sc = calloc((size_t)n + 1, sizeof *sc);
	ci = calloc((size_t)n + 1, sizeof *ci);
	if (items == NULL || itemp == NULL || lits == NULL || sc == NULL || ci == NULL) {
		err = "out of memory";
		goto fail;
	}
	for (int i = 0; i < n; i++) {
		auth_api_key_view(res, i, &items[i], lits[i], sc[i], ci[i]);
		itemp[i] = &items[i];
	}
	out.n_items = (size_t)n;
	out.items = itemp;
	out.next_cursor = PQntuples(res) > l ? PQgetvalue(res, n - 1, 0) : "";
	ret = auth_reply(reply, &out.base);
	goto out;
fail:
	ret = auth_fail(reply, "api key list", err);
out:
	free(items);
	free(itemp);
	free(lits);
	free(sc);
	free(ci);
	PQclear(res);
	ward__list_request__free_unpacked(req, NULL);
	return ret;
}

/* Revoke/delete by id on one table; shared by keys, clients. */
static queue_result_t auth_revoke_by_id(struct daemon *d, const Ward__Envelope *env,
					const uint8_t *payload, size_t len,
					struct queue_reply *reply, const char *sql,
					const char *type, const char *what)
{
	Ward__IdRequest *req;
	Ward__Empty out = WARD__EMPTY__INIT;
	struct auth_req r;
	const char *err = NULL;
	char target[64];
	PGresult *res;
	queue_result_t ret;

	req = ward__id_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (!auth_uuid_valid(req->id)) {
		ret = auth_problem(reply, 404, "Not Found", "no such id");
		goto out;
	}
	if (!auth_change_begin(&r, d, env, reply, &ret))
		goto out;
	{
		const char *params[1] = { req->id };

		res = db_exec(r.db, sql, 1, params, &err);
		if (res == NULL)
			goto fail;
		if (strcmp(PQcmdTuples(res), "0") == 0) {
			PQclear(res);
			auth_rollback(&r);
			ret = auth_problem(reply, 404, "Not Found", "no such id");
			goto out;
		}
		PQclear(res);
	}
	snprintf(target, sizeof target, "%s:%s", type, req->id);
	if (auth_audit(&r, type, what, NULL, target, env->principal->ip, "", &err) < 0 ||
	    auth_commit(&r, &err) < 0)
		goto fail;
	ret = auth_reply(reply, &out.base);
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, what, err);
out:
	ward__id_request__free_unpacked(req, NULL);
	return ret;
}

AUTH_HANDLER(auth_api_key_revoke)
{
	return auth_revoke_by_id(d, env, payload, len, reply,
				 "UPDATE auth.api_keys SET revoked_at = now() WHERE id = $1 AND "
				 "revoked_at IS NULL",
				 "api_key", "revoke");
}

/* ============================== OAuth =================================== */

AUTH_HANDLER(auth_oauth_client_create)
{
	Ward__OAuthClientCreateRequest *req;
	Ward__OAuthClient out = WARD__OAUTH_CLIENT__INIT;
	struct auth_req r;
	char id[AUTH_UUID_LEN + 1], cid[40], secret[AUTH_TOKEN_MAX], hash[65], sl[512],
		actor[64], target[64], created[32] = "";
	uint8_t raw[12];
	const char *err = NULL;
	queue_result_t ret;

	req = ward__oauth_client_create_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (!auth_name_valid(req->name) || auth_scopes_valid(req->scopes, req->n_scopes) < 0 ||
	    auth_array_lit(req->scopes, req->n_scopes, sl, sizeof sl) < 0) {
		static const struct auth_rule_error e[2] = {
			{ "name", "1 to 200 characters" },
			{ "scopes", "one or more of tickets:read tickets:write users:read "
				    "users:admin audit:read" },
		};

		ret = auth_problem_rules(reply, 422, "Unprocessable Content", e, 2);
		goto out;
	}
	if (!auth_change_begin(&r, d, env, reply, &ret))
		goto out;
	if (auth_uuid_random(id) < 0 || crypto_random(raw, sizeof raw) < 0 ||
	    auth_token_new("wcs_", secret, hash) < 0) {
		err = "no random bytes";
		goto fail;
	}
	memcpy(cid, "wci_", 4);
	crypto_hex(raw, sizeof raw, cid + 4);
	auth_actor(env, actor, sizeof actor);
	{
		const char *params[7] = { id, r.tenant, cid, hash, req->name, sl, actor };
		PGresult *res = db_exec(r.db,
					"INSERT INTO auth.oauth_clients (id, tenant_id, client_id, "
					"secret_hash, name, scopes, created_by) VALUES ($1, $2, $3, "
					"$4, $5, $6::text[], $7) RETURNING " AUTH_TS("created_at"),
					7, params, &err);
		if (res == NULL)
			goto fail;
		snprintf(created, sizeof created, "%s", PQgetvalue(res, 0, 0));
		PQclear(res);
	}
	snprintf(target, sizeof target, "oauth_client:%s", id);
	if (auth_audit(&r, "oauth_client", "create", actor, target, env->principal->ip, "", &err) <
		    0 ||
	    auth_commit(&r, &err) < 0)
		goto fail;
	out.id = id;
	out.client_id = cid;
	out.client_secret = secret;
	out.name = req->name;
	out.n_scopes = req->n_scopes;
	out.scopes = req->scopes;
	out.created_at = created;
	ret = auth_reply(reply, &out.base);
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "oauth client create", err);
out:
	crypto_wipe(secret, sizeof secret);
	ward__oauth_client_create_request__free_unpacked(req, NULL);
	return ret;
}

AUTH_HANDLER(auth_oauth_client_list)
{
	Ward__ListRequest *req;
	Ward__OAuthClientList out = WARD__OAUTH_CLIENT_LIST__INIT;
	Ward__OAuthClient *items = NULL, **itemp = NULL;
	char limit[8], (*lits)[1024] = NULL, *(*sc)[AUTH_SCOPES_MAX] = NULL;
	const char *err = NULL, *cursor;
	struct auth_req r;
	PGresult *res = NULL;
	queue_result_t ret;
	int l, n;

	req = ward__list_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	l = auth_list_args(req, limit, &cursor);
	if (l < 0) {
		ret = auth_problem(reply, 400, "Bad Request", "bad cursor");
		goto out;
	}
	if (auth_begin(&r, d, env, &err) < 0)
		goto fail;
	{
		const char *params[2] = { cursor, limit };

		res = db_exec(r.db,
			      "SELECT id, client_id, name, scopes, " AUTH_TS("created_at")
			      " FROM auth.oauth_clients WHERE deleted_at IS NULL AND id > $1::uuid "
			      "ORDER BY id LIMIT $2::int",
			      2, params, &err);
	}
	auth_rollback(&r);
	if (res == NULL)
		goto fail;
	n = PQntuples(res) > l ? l : PQntuples(res);
	items = calloc((size_t)n + 1, sizeof *items);
	itemp = calloc((size_t)n + 1, sizeof *itemp);
	lits = calloc((size_t)n + 1, sizeof *lits);
	sc = calloc((size_t)n + 1, sizeof *sc);
	if (items == NULL || itemp == NULL || lits == NULL || sc == NULL) {
		err = "out of memory";
		goto fail;
	}
	for (int i = 0; i < n; i++) {
		ward__oauth_client__init(&items[i]);
		items[i].id = PQgetvalue(res, i, 0);
		items[i].client_id = PQgetvalue(res, i, 1);
		items[i].name = PQgetvalue(res, i, 2);
		snprintf(lits[i], sizeof lits[i], "%s", PQgetvalue(res, i, 3));
		items[i].n_scopes = auth_lit_split(lits[i], sc[i], AUTH_SCOPES_MAX);
		items[i].scopes = sc[i];
		items[i].created_at = PQgetvalue(res, i, 4);
		itemp[i] = &items[i];
	}
	out.n_items = (size_t)n;
	out.items = itemp;
	out.next_cursor = PQntuples(res) > l ? PQgetvalue(res, n - 1, 0) : "";
	ret = auth_reply(reply, &out.base);
	goto out;
fail:
	ret = auth_fail(reply, "oauth client list", err);
out:
	free(items);
	free(itemp);
	free(lits);
	free(sc);
	PQclear(res);
	ward__list_request__free_unpacked(req, NULL);
	return ret;
}

AUTH_HANDLER(auth_oauth_client_delete)
{
	return auth_revoke_by_id(d, env, payload, len, reply,
				 "UPDATE auth.oauth_clients SET deleted_at = now() WHERE id = $1 "
				 "AND deleted_at IS NULL",
				 "oauth_client", "delete");
}

/* RFC 6749 §5.2 error: the code in Problem.title. */
static queue_result_t auth_oauth_error(struct queue_reply *reply, int status, const char *code,
				       const char *desc)
{
	return auth_problem(reply, status, code, desc);
}

AUTH_HANDLER(auth_token)
{
	Ward__TokenRequest *req;
	Ward__TokenReply out = WARD__TOKEN_REPLY__INIT;
	struct auth_req r;
	char hash[65], cuuid[AUTH_UUID_LEN + 1], granted[512], want_lit[512], tid[AUTH_UUID_LEN + 1],
		token[AUTH_TOKEN_MAX], thash[65], ttl[16], actor[64];
	char *want[AUTH_SCOPES_MAX], *have[AUTH_SCOPES_MAX], want_buf[512];
	size_t nw = 0, nh;
	const char *err = NULL;
	PGresult *res;
	queue_result_t ret;

	if (!auth_sender_is(env, "gateway"))
		return auth_problem(reply, 403, "Forbidden", "for the gateway");
	req = ward__token_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_oauth_error(reply, 400, "invalid_request", "malformed request");
	if (strcmp(req->grant_type, "client_credentials") != 0) {
		ret = auth_oauth_error(reply, 400,
				       req->grant_type[0] == '\0' ? "invalid_request"
								  : "unsupported_grant_type",
				       "grant_type must be client_credentials");
		goto out;
	}
	if (req->client_id[0] == '\0' || req->client_secret[0] == '\0' ||
	    strlen(req->client_id) > 64 || strlen(req->client_secret) > AUTH_TOKEN_MAX ||
	    strlen(req->scope) >= sizeof want_buf) {
		ret = auth_oauth_error(reply, 400, "invalid_request",
				       "client_id and client_secret are required");
		goto out;
	}
	if (!auth_change_begin(&r, d, env, reply, &ret))
		goto out;
	auth_sha256_hex(req->client_secret, hash);
	{
		const char *params[1] = { req->client_id };

		res = db_exec(r.db,
			      "SELECT id, secret_hash, scopes FROM auth.oauth_clients "
			      "WHERE client_id = $1 AND deleted_at IS NULL",
			      1, params, &err);
		if (res == NULL)
			goto fail;
		if (PQntuples(res) != 1 || !crypto_ct_equal(PQgetvalue(res, 0, 1), hash, 64)) {
			PQclear(res);
			if (auth_audit(&r, "oauth_client", "token.failure", "anonymous", "",
				       req->ip, "", &err) < 0 ||
			    auth_commit(&r, &err) < 0)
				goto fail;
			ret = auth_oauth_error(reply, 401, "invalid_client",
					       "client authentication failed");
			goto out;
		}
		snprintf(cuuid, sizeof cuuid, "%s", PQgetvalue(res, 0, 0));
		snprintf(granted, sizeof granted, "%s", PQgetvalue(res, 0, 2));
		PQclear(res);
	}
	nh = auth_lit_split(granted, have, AUTH_SCOPES_MAX);
	/* scope: space-separated subset of the client's scopes; empty = all of them */
	snprintf(want_buf, sizeof want_buf, "%s", req->scope);
	{
		char *save = NULL;

		for (char *t = strtok_r(want_buf, " ", &save); t != NULL && nw < AUTH_SCOPES_MAX;
		     t = strtok_r(NULL, " ", &save)) {
			bool ok = false;

			for (size_t i = 0; i < nh; i++)
				ok |= strcmp(t, have[i]) == 0;
			if (!ok) {
				auth_rollback(&r);
				ret = auth_oauth_error(reply, 400, "invalid_scope",
						       "scope not granted to this client");
				goto out;
			}
			want[nw++] = t;
		}
	}
	if (nw == 0) {
		memcpy(want, have, nh * sizeof *have);
		nw = nh;
	}
	if (auth_array_lit(want, nw, want_lit, sizeof want_lit) < 0 || auth_uuid_random(tid) < 0 ||
	    auth_token_new("wat_", token, thash) < 0) {
		err = "token";
		goto fail;
	}
	snprintf(ttl, sizeof ttl, "%d", auth_conf.access_token_s);
	snprintf(actor, sizeof actor, "oauth_client:%s", cuuid);
	{
		const char *params[6] = { tid, r.tenant, cuuid, thash, want_lit, ttl };

		if (auth_exec(&r,
			      "INSERT INTO auth.access_tokens (id, tenant_id, client, token_hash, "
			      "scopes, expires_at) VALUES ($1, $2, $3, $4, $5::text[], now() + "
			      "make_interval(secs => $6::int))",
			      6, params, &err) < 0 ||
		    auth_exec(&r,
			      "DELETE FROM auth.access_tokens WHERE expires_at < now() - "
			      "interval '1 day'",
			      0, NULL, &err) < 0 ||
		    auth_audit(&r, "oauth_client", "token.issue", actor, actor, req->ip, "", &err) <
			    0 ||
		    auth_commit(&r, &err) < 0)
			goto fail;
	}
	{
		char scope_s[512];
		size_t o = 0;

		scope_s[0] = '\0';
		for (size_t i = 0; i < nw; i++)
			o += (size_t)snprintf(scope_s + o, sizeof scope_s - o, "%s%s",
					      i ? " " : "", want[i]);
		out.access_token = token;
		out.token_type = "Bearer";
		out.expires_in = auth_conf.access_token_s;
		out.scope = scope_s;
		ret = auth_reply(reply, &out.base);
	}
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "token", err);
out:
	crypto_wipe(token, sizeof token);
	crypto_wipe(req->client_secret, strlen(req->client_secret));
	ward__token_request__free_unpacked(req, NULL);
	return ret;
}

AUTH_HANDLER(auth_token_revoke)
{
	Ward__TokenRevokeRequest *req;
	Ward__Empty out = WARD__EMPTY__INIT;
	struct auth_req r;
	char hash[65];
	const char *err = NULL;
	queue_result_t ret;

	req = ward__token_revoke_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (!auth_change_begin(&r, d, env, reply, &ret))
		goto out;
	auth_sha256_hex(req->token, hash);
	{
		const char *params[1] = { hash };

		/* RFC 7009: an unknown token is not an error */
		if (auth_exec(&r,
			      "UPDATE auth.access_tokens SET revoked_at = now() WHERE token_hash = $1 "
			      "AND revoked_at IS NULL",
			      1, params, &err) < 0 ||
		    auth_audit(&r, "oauth_client", "token.revoke", NULL, "", env->principal->ip, "",
			       &err) < 0 ||
		    auth_commit(&r, &err) < 0) {
			auth_rollback(&r);
			ret = auth_fail(reply, "token revoke", err);
			goto out;
		}
	}
	ret = auth_reply(reply, &out.base);
out:
	crypto_wipe(req->token, strlen(req->token));
	ward__token_revoke_request__free_unpacked(req, NULL);
	return ret;
}

/* ============================== users =================================== */

static int auth_role_valid(const char *role)
{
	return strcmp(role, "admin") == 0 || strcmp(role, "agent") == 0 ||
	       strcmp(role, "customer") == 0;
}

/* One user by id into u (0), not found (1), error (-1). */
static int auth_user_by_id(struct auth_req *r, const char *id, Ward__User *u,
			   const char **error_r)
{
	const char *params[1] = { id };
	PGresult *res;
	int ret;

	if (!auth_uuid_valid(id))
		return 1;
	res = db_exec(r->db, "SELECT " AUTH_USER_COLS " FROM auth.users u WHERE u.id = $1", 1,
		      params, error_r);
	if (res == NULL)
		return -1;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return 1;
	}
	ret = auth_user_fill(r, res, 0, 0, u);
	PQclear(res);
	if (ret < 0)
		*error_r = "cannot read the user";
	return ret;
}

AUTH_HANDLER(auth_user_create)
{
	Ward__UserCreateRequest *req;
	Ward__UserCreateReply out = WARD__USER_CREATE_REPLY__INIT;
	Ward__User user;
	struct auth_rule_error errs[AUTH_RULES_MAX];
	struct auth_settings s;
	struct auth_req r;
	char id[AUTH_UUID_LEN + 1], email[AUTH_EMAIL_MAX + 1], bidx[65], inv[AUTH_TOKEN_MAX] = "",
		ihash[65], ttl[16], target[64], *hash = NULL;
	uint8_t *eenc = NULL, *nenc = NULL;
	size_t eenc_len = 0, nenc_len = 0, n = 0;
	const char *err = NULL;
	queue_result_t ret;

	memset(&s, 0, sizeof s);
	ward__user__init(&user);
	req = ward__user_create_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (!auth_email_normalize(req->email, email))
		errs[n++] = (struct auth_rule_error){ "email", "not an email address" };
	if (req->name[0] != '\0' && !auth_name_valid(req->name))
		errs[n++] = (struct auth_rule_error){ "name", "1 to 200 characters" };
	if (!auth_role_valid(req->role))
		errs[n++] = (struct auth_rule_error){ "role", "admin, agent or customer" };
	if (n > 0) {
		ret = auth_problem_rules(reply, 422, "Unprocessable Content", errs, n);
		goto out;
	}
	if (!auth_change_begin(&r, d, env, reply, &ret))
		goto out;
	if (auth_settings_load(&r, &s, &err) < 0)
		goto fail;
	if (req->password[0] != '\0') {
		n = auth_policy_check(&s.policy, "password", req->password, errs);
		if (n > 0) {
			auth_rollback(&r);
			ret = auth_problem_rules(reply, 422, "Unprocessable Content", errs, n);
			goto out;
		}
		if (auth_password_hash(req->password, &hash) < 0) {
			err = "cannot hash";
			goto fail;
		}
	} else if (auth_token_new("wi_", inv, ihash) < 0) {
		err = "no random bytes";
		goto fail;
	}
	if (auth_uuid_random(id) < 0 || auth_email_bidx(&r, email, bidx) < 0 ||
	    auth_seal(&r, "auth.users", "email_enc", id, email, strlen(email), &eenc, &eenc_len) <
		    0 ||
	    (req->name[0] != '\0' &&
	     auth_seal(&r, "auth.users", "name_enc", id, req->name, strlen(req->name), &nenc,
		       &nenc_len) < 0)) {
		err = "cannot seal";
		goto fail;
	}
	snprintf(ttl, sizeof ttl, "%d", auth_conf.invitation_s);
	{
		const char *params[9] = { id,	     r.tenant, (const char *)eenc,
					  bidx,	     (const char *)nenc, req->role,
					  hash,	     inv[0] != '\0' ? ihash : NULL, ttl };
		const int lens[9] = { 0, 0, (int)eenc_len, 0, (int)nenc_len, 0, 0, 0, 0 };
		const int fmts[9] = { 0, 0, 1, 0, 1, 0, 0, 0, 0 };
		const char *bp[1] = { bidx };
		PGresult *res = db_exec(r.db, "SELECT 1 FROM auth.users WHERE email_bidx = $1", 1,
					bp, &err);

		if (res == NULL)
			goto fail;
		if (PQntuples(res) > 0) {
			static const struct auth_rule_error e = { "email", "already in use" };

			PQclear(res);
			auth_rollback(&r);
			ret = auth_problem_rules(reply, 409, "Conflict", &e, 1);
			goto out;
		}
		PQclear(res);
		res = db_exec_bin(r.db,
				  "INSERT INTO auth.users (id, tenant_id, email_enc, email_bidx, "
				  "name_enc, role, password_hash, invitation_hash, "
				  "invitation_expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
				  "CASE WHEN $8::text IS NULL THEN NULL ELSE now() + "
				  "make_interval(secs => $9::int) END)",
				  9, params, lens, fmts, &err);
		if (res == NULL)
			goto fail;
		PQclear(res);
	}
	snprintf(target, sizeof target, "user:%s", id);
	{
		char detail[64];

		snprintf(detail, sizeof detail, "{\"role\":\"%s\",\"invited\":%s}", req->role,
			 inv[0] != '\0' ? "true" : "false");
		if (auth_audit(&r, "user", "create", NULL, target, env->principal->ip, detail,
			       &err) < 0 ||
		    auth_user_by_id(&r, id, &user, &err) != 0 || auth_commit(&r, &err) < 0)
			goto fail;
	}
	out.user = &user;
	out.invitation_token = inv;
	ret = auth_reply(reply, &out.base);
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "user create", err);
out:
	auth_user_clear(&user);
	auth_settings_free(&s);
	auth_free_secret(hash);
	crypto_wipe(inv, sizeof inv);
	free(eenc);
	free(nenc);
	crypto_wipe(req->password, strlen(req->password));
	ward__user_create_request__free_unpacked(req, NULL);
	return ret;
}

AUTH_HANDLER(auth_user_list)
{
	Ward__ListRequest *req;
	Ward__UserList out = WARD__USER_LIST__INIT;
	Ward__User *items = NULL, **itemp = NULL;
	char limit[8], next[AUTH_UUID_LEN + 1] = "";
	const char *err = NULL, *cursor;
	struct auth_req r;
	PGresult *res = NULL;
	queue_result_t ret;
	int l, n = 0;

	req = ward__list_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	l = auth_list_args(req, limit, &cursor);
	if (l < 0) {
		ret = auth_problem(reply, 400, "Bad Request", "bad cursor");
		goto out;
	}
	if (auth_begin(&r, d, env, &err) < 0) {
		ret = auth_fail(reply, "user list", err);
		goto out;
	}
	{
		const char *params[2] = { cursor, limit };

		res = db_exec(r.db,
			      "SELECT " AUTH_USER_COLS " FROM auth.users u WHERE u.id > $1::uuid "
			      "ORDER BY u.id LIMIT $2::int",
			      2, params, &err);
	}
	if (res == NULL)
		goto fail;
	n = PQntuples(res) > l ? l : PQntuples(res);
	items = calloc((size_t)n + 1, sizeof *items);
	itemp = calloc((size_t)n + 1, sizeof *itemp);
	if (items == NULL || itemp == NULL) {
		err = "out of memory";
		n = 0;
		goto fail;
	}
	for (int i = 0; i < n; i++) {
		if (auth_user_fill(&r, res, i, 0, &items[i]) < 0) {
			err = "cannot read a user";
			n = i;
			goto fail;
		}
		itemp[i] = &items[i];
	}
	if (PQntuples(res) > l)
		snprintf(next, sizeof next, "%s", PQgetvalue(res, n - 1, 0));
	auth_rollback(&r);
	out.n_items = (size_t)n;
	out.items = itemp;
	out.next_cursor = next;
	ret = auth_reply(reply, &out.base);
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "user list", err);
out:
	for (int i = 0; items != NULL && i < n; i++)
		auth_user_clear(&items[i]);
	free(items);
	free(itemp);
	PQclear(res);
	ward__list_request__free_unpacked(req, NULL);
	return ret;
}

/* GET one user by id (the caller's own for users.me). */
static queue_result_t auth_user_show(struct daemon *d, const Ward__Envelope *env, const char *id,
				     struct queue_reply *reply)
{
	Ward__User u;
	struct auth_req r;
	const char *err = NULL;
	queue_result_t ret;
	int found;

	ward__user__init(&u);
	if (auth_begin(&r, d, env, &err) < 0)
		return auth_fail(reply, "user get", err);
	found = auth_user_by_id(&r, id, &u, &err);
	auth_rollback(&r);
	if (found < 0)
		return auth_fail(reply, "user get", err);
	if (found == 1)
		return auth_problem(reply, 404, "Not Found", "no such user");
	ret = auth_reply(reply, &u.base);
	auth_user_clear(&u);
	return ret;
}

AUTH_HANDLER(auth_user_get)
{
	Ward__IdRequest *req = ward__id_request__unpack(NULL, len, payload);
	queue_result_t ret;

	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	ret = auth_user_show(d, env, req->id, reply);
	ward__id_request__free_unpacked(req, NULL);
	return ret;
}

AUTH_HANDLER(auth_user_me)
{
	const Ward__Principal *p = env->principal;

	if (p == NULL || strcmp(p->kind, "user") != 0)
		return auth_problem(reply, 404, "Not Found", "not a user");
	return auth_user_show(d, env, p->id, reply);
}

/* Revoke every session of user id (inside r's transaction). */
static int auth_sessions_revoke_all(struct auth_req *r, const char *id, const char **error_r)
{
	const char *params[1] = { id };

	return auth_exec(r,
			 "UPDATE auth.sessions SET revoked_at = now() WHERE user_id = $1 AND "
			 "revoked_at IS NULL",
			 1, params, error_r);
}

AUTH_HANDLER(auth_user_patch)
{
	Ward__UserPatchRequest *req;
	Ward__User u;
	struct auth_rule_error errs[3];
	struct auth_req r;
	uint8_t *nenc = NULL;
	size_t nenc_len = 0, n = 0;
	char target[64], detail[160];
	const char *err = NULL;
	queue_result_t ret;
	int found;

	ward__user__init(&u);
	req = ward__user_patch_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (req->id == NULL || !auth_uuid_valid(req->id)) {
		ret = auth_problem(reply, 404, "Not Found", "no such user");
		goto out;
	}
	if (req->name != NULL && !auth_name_valid(req->name))
		errs[n++] = (struct auth_rule_error){ "name", "1 to 200 characters" };
	if (req->role != NULL && !auth_role_valid(req->role))
		errs[n++] = (struct auth_rule_error){ "role", "admin, agent or customer" };
	if (req->has_disabled && req->disabled && env->principal->kind != NULL &&
	    strcmp(env->principal->kind, "user") == 0 && strcmp(env->principal->id, req->id) == 0)
		errs[n++] = (struct auth_rule_error){ "disabled", "you cannot disable yourself" };
	if (n > 0) {
		ret = auth_problem_rules(reply, 422, "Unprocessable Content", errs, n);
		goto out;
	}
	if (!auth_change_begin(&r, d, env, reply, &ret))
		goto out;
	found = auth_user_by_id(&r, req->id, &u, &err);
	if (found != 0) {
		auth_rollback(&r);
		ret = found < 0 ? auth_fail(reply, "user patch", err)
				: auth_problem(reply, 404, "Not Found", "no such user");
		goto out;
	}
	if (req->name != NULL &&
	    auth_seal(&r, "auth.users", "name_enc", req->id, req->name, strlen(req->name), &nenc,
		      &nenc_len) < 0) {
		err = "cannot seal";
		goto fail;
	}
	{
		const char *params[4] = { req->id, (const char *)nenc, req->role,
					  req->has_disabled ? (req->disabled ? "t" : "f") : NULL };
		const int lens[4] = { 0, (int)nenc_len, 0, 0 }, fmts[4] = { 0, 1, 0, 0 };
		PGresult *res = db_exec_bin(r.db,
					    "UPDATE auth.users SET name_enc = coalesce($2, name_enc), "
					    "role = coalesce($3, role), "
					    "disabled = coalesce($4::boolean, disabled), "
					    "updated_at = now() WHERE id = $1",
					    4, params, lens, fmts, &err);
		if (res == NULL)
			goto fail;
		PQclear(res);
	}
	/* a disabled user or a changed role: every session ends (no stale privilege) */
	if (((req->has_disabled && req->disabled) ||
	     (req->role != NULL && strcmp(req->role, u.role) != 0)) &&
	    auth_sessions_revoke_all(&r, req->id, &err) < 0)
		goto fail;
	snprintf(target, sizeof target, "user:%s", req->id);
	snprintf(detail, sizeof detail, "{\"name\":%s,\"role\":\"%s\",\"disabled\":\"%s\"}",
		 req->name != NULL ? "\"changed\"" : "null", req->role != NULL ? req->role : "",
		 req->has_disabled ? (req->disabled ? "true" : "false") : "");
	auth_user_clear(&u);
	if (auth_audit(&r, "user", "update", NULL, target, env->principal->ip, detail, &err) < 0 ||
	    auth_user_by_id(&r, req->id, &u, &err) != 0 || auth_commit(&r, &err) < 0)
		goto fail;
	ret = auth_reply(reply, &u.base);
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "user patch", err);
out:
	auth_user_clear(&u);
	free(nenc);
	ward__user_patch_request__free_unpacked(req, NULL);
	return ret;
}

AUTH_HANDLER(auth_user_revoke_sessions)
{
	Ward__IdRequest *req;
	Ward__Empty out = WARD__EMPTY__INIT;
	struct auth_req r;
	char target[64];
	const char *err = NULL;
	queue_result_t ret;

	req = ward__id_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (!auth_uuid_valid(req->id)) {
		ret = auth_problem(reply, 404, "Not Found", "no such user");
		goto out;
	}
	if (!auth_change_begin(&r, d, env, reply, &ret))
		goto out;
	snprintf(target, sizeof target, "user:%s", req->id);
	if (auth_sessions_revoke_all(&r, req->id, &err) < 0 ||
	    auth_audit(&r, "session", "revoke_all", NULL, target, env->principal->ip, "", &err) <
		    0 ||
	    auth_commit(&r, &err) < 0) {
		auth_rollback(&r);
		ret = auth_fail(reply, "revoke sessions", err);
		goto out;
	}
	ret = auth_reply(reply, &out.base);
out:
	ward__id_request__free_unpacked(req, NULL);
	return ret;
}
