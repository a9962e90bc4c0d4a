/*
 * auth_session — who is calling: tenant resolution, authentication of every
 * request (session cookie + CSRF, API key, OAuth access token), login with
 * password (+ TOTP) or SSO JWT, logout, password change, invitations, and TOTP
 * enrolment.
 *
 * Sessions are 256-bit random tokens; only their SHA-256 is stored, and the CSRF
 * token bound to a session likewise. Login answers the same 401 for an unknown
 * user, a disabled one and a wrong password, after the same Argon2id work (an
 * unknown user is verified against a dummy hash). Failures are counted per
 * account and per source address; past the threshold both are locked (429 with
 * retry_after) until the lock expires. Each login, failure, logout, password
 * and 2FA change is an audit event written in the same transaction.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "auth_patch.pb-c.h"
#include "crypto.h"
#include "log.h"

#define AUTH_SESSION_PREFIX "ws_"
#define AUTH_CSRF_PREFIX "wc_"
#define AUTH_APIKEY_PREFIX "wk_"
#define AUTH_ACCESS_PREFIX "wat_"
#define AUTH_INVITE_PREFIX "wi_"

/* ============================== users =================================== */

char *auth_open_column(struct auth_req *r, const PGresult *res, int row, int col,
		       const char *table, const char *column, const char *id)
{
	size_t wl = 0, ol = 0;
	unsigned char *w;
	uint8_t *out = NULL;

	if (PQgetisnull(res, row, col))
		return NULL;
	w = PQunescapeBytea((const unsigned char *)PQgetvalue(res, row, col), &wl);
	if (w == NULL)
		return NULL;
	if (auth_open(r, table, column, id, w, wl, &out, &ol) < 0)
		out = NULL;
	PQfreemem(w);
	return (char *)out;
}

int auth_user_fill(struct auth_req *r, const PGresult *res, int row, int col0, Ward__User *u)
{
	const char *id = PQgetvalue(res, row, col0);

	ward__user__init(u);
	u->id = strdup(id);
	u->email = auth_open_column(r, res, row, col0 + 1, "auth.users", "email_enc", id);
	u->name = auth_open_column(r, res, row, col0 + 2, "auth.users", "name_enc", id);
	if (u->name == NULL && PQgetisnull(res, row, col0 + 2))
		u->name = strdup("");
	u->role = strdup(PQgetvalue(res, row, col0 + 3));
	u->disabled = PQgetvalue(res, row, col0 + 4)[0] == 't';
	u->totp_enabled = PQgetvalue(res, row, col0 + 5)[0] == 't';
	u->created_at = strdup(PQgetvalue(res, row, col0 + 6));
	u->must_change_password = PQgetvalue(res, row, col0 + 7)[0] == 't';
	if (u->id == NULL || u->email == NULL || u->name == NULL || u->role == NULL ||
	    u->created_at == NULL) {
		auth_user_clear(u);
		return -1;
	}
	return 0;
}

void auth_user_clear(Ward__User *u)
{
	char *const strs[] = { u->id, u->email, u->name, u->role, u->created_at };

	for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
		if (strs[i] != NULL && strs[i] != protobuf_c_empty_string)
			auth_free_secret(strs[i]);
	ward__user__init(u);
}

/* ============================== tenant.resolve ========================== */

AUTH_HANDLER(auth_tenant_resolve)
{
	Ward__TenantResolveRequest *req = NULL;
	Ward__TenantResolveReply out = WARD__TENANT_RESOLVE_REPLY__INIT;
	db_t *db = daemon_db(d);
	const char *params[1], *err = NULL, *here = daemon_config(d)->region;
	PGresult *res = NULL;
	char region[8] = "", tenant[AUTH_UUID_LEN + 1] = "";
	struct auth_settings s;
	struct auth_req r;
	Ward__Envelope fake;
	queue_result_t ret;

	memset(&s, 0, sizeof s);
	if (!auth_sender_is(env, "gateway mail-ingest"))
		return auth_problem(reply, 403, "Forbidden", "tenant.resolve is for the gateway");
	req = ward__tenant_resolve_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	params[0] = req->slug;
	if (db_begin(db, NULL, &err) < 0)
		goto fail;
	res = db_exec(db, "SELECT region FROM directory.tenants WHERE slug = $1", 1, params, &err);
	if (res == NULL)
		goto fail_tx;
	if (PQntuples(res) == 1)
		snprintf(region, sizeof region, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	res = NULL;
	if (region[0] != '\0' && strcmp(region, here) == 0) {
		res = db_exec(db, "SELECT id, status FROM auth.tenant_by_slug($1)", 1, params, &err);
		if (res == NULL)
			goto fail_tx;
		if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 1), "active") == 0)
			snprintf(tenant, sizeof tenant, "%s", PQgetvalue(res, 0, 0));
		else
			region[0] = '\0'; /* closed, or a directory row without a tenant: unknown */
		PQclear(res);
		res = NULL;
	}
	if (db_commit(db, &err) < 0)
		goto fail;
	out.exists = region[0] != '\0';
	out.region = region;
	out.tenant_id = tenant;
	if (tenant[0] != '\0') {
		/* the tenant's allow-list, read as that tenant */
		fake = *env;
		fake.tenant = tenant;
		if (auth_begin(&r, d, &fake, &err) < 0)
			goto fail;
		if (auth_settings_load(&r, &s, &err) < 0) {
			auth_rollback(&r);
			goto fail;
		}
		auth_rollback(&r);
		out.n_ip_allow = s.n_ip_allow;
		out.ip_allow = s.ip_allow;
	}
	ret = auth_reply(reply, &out.base);
	auth_settings_free(&s);
	ward__tenant_resolve_request__free_unpacked(req, NULL);
	return ret;
fail_tx:
	db_rollback(db);
fail:
	ward__tenant_resolve_request__free_unpacked(req, NULL);
	return auth_fail(reply, "tenant.resolve failed", err);
}

/* ============================== authenticate ============================ */

/* Session cookie: principal of a valid, unexpired session, CSRF checked. */
static queue_result_t auth_authenticate_session(struct auth_req *r,
						const Ward__AuthenticateRequest *req,
						struct queue_reply *reply)
{
	Ward__AuthenticateReply out = WARD__AUTHENTICATE_REPLY__INIT;
	Ward__Principal p = WARD__PRINCIPAL__INIT;
	char hash[65], csrf[65], sid[AUTH_UUID_LEN + 1], uid[AUTH_UUID_LEN + 1], role[16];
	const char *params[1] = { hash }, *err = NULL;
	struct auth_settings s;
	long idle, age, left;
	bool allowed;
	PGresult *res;
	queue_result_t ret;

	auth_sha256_hex(req->session_token, hash);
	res = db_exec(r->db,
		      "SELECT s.id, s.user_id, u.role, s.csrf_hash, "
		      "extract(epoch FROM now() - s.last_seen_at)::bigint, "
		      "extract(epoch FROM now() - s.created_at)::bigint, u.disabled, "
		      "u.must_change_password, s.token_hash, u.totp_enabled "
		      "FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id "
		      "WHERE s.token_hash = $1 AND s.revoked_at IS NULL",
		      1, params, &err);
	if (res == NULL)
		return auth_fail(reply, "session lookup", err);
	if (PQntuples(res) != 1 || !crypto_ct_equal(PQgetvalue(res, 0, 8), hash, 64) ||
	    PQgetvalue(res, 0, 6)[0] == 't') {
		PQclear(res);
		return auth_problem(reply, 401, "Unauthorized", "no valid session");
	}
	snprintf(sid, sizeof sid, "%s", PQgetvalue(res, 0, 0));
	snprintf(uid, sizeof uid, "%s", PQgetvalue(res, 0, 1));
	snprintf(role, sizeof role, "%s", PQgetvalue(res, 0, 2));
	idle = atol(PQgetvalue(res, 0, 4));
	age = atol(PQgetvalue(res, 0, 5));
	out.must_change_password = PQgetvalue(res, 0, 7)[0] == 't';
	if (req->state_changing) {
		char want[65];

		snprintf(want, sizeof want, "%s", PQgetvalue(res, 0, 3));
		auth_sha256_hex(req->csrf_token, csrf);
		if (req->csrf_token[0] == '\0' || !crypto_ct_equal(want, csrf, 64)) {
			PQclear(res);
			return auth_problem(reply, 403, "Forbidden", "missing or bad CSRF token");
		}
	}
	if (idle > auth_idle_s(role) || age > auth_absolute_s(role)) {
		const char *sp[1] = { sid };

		PQclear(res);
		if (auth_exec(r, "UPDATE auth.sessions SET revoked_at = now() WHERE id = $1", 1, sp,
			      &err) < 0)
			return auth_fail(reply, "session expiry", err);
		return auth_problem(reply, 401, "Unauthorized", "session expired");
	}
	if (auth_settings_load(r, &s, &err) < 0) {
		PQclear(res);
		return auth_fail(reply, "settings", err);
	}
	if (strcmp(role, "customer") == 0)
		allowed = auth_cidr_list_allows(s.ip_allow_customers, s.n_ip_allow_customers,
						req->ip);
	else
		allowed = auth_cidr_list_allows(s.ip_allow, s.n_ip_allow, req->ip);
	out.must_setup_totp = s.require_2fa_staff && strcmp(role, "customer") != 0 &&
			      PQgetvalue(res, 0, 9)[0] != 't';
	auth_settings_free(&s);
	PQclear(res);
	if (!allowed)
		return auth_problem(reply, 403, "Forbidden", "address not allowed");
	if (idle >= 15) {
		const char *sp[1] = { sid };

		if (auth_exec(r, "UPDATE auth.sessions SET last_seen_at = now() WHERE id = $1", 1,
			      sp, &err) < 0)
			return auth_fail(reply, "session touch", err);
	}
	p.kind = "user";
	p.id = uid;
	p.role = role;
	p.tenant = (char *)r->tenant;
	p.session = sid;
	p.ip = req->ip;
	out.principal = &p;
	left = auth_idle_s(role) * 1000L;
	out.cache_ms = auth_conf.authenticate_cache_ms < left ? auth_conf.authenticate_cache_ms
							      : (int32_t)left;
	if (out.must_change_password || out.must_setup_totp)
		out.cache_ms = 0; /* the change must take effect on the next request */
	ret = auth_reply(reply, &out.base);
	return ret;
}

/* Split a PostgreSQL text[] literal of scope words (no quoting needed) into out. */
static size_t auth_scopes_split(char *lit, char **out, size_t cap)
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

/* Bearer: an API key or an OAuth access token. */
static queue_result_t auth_authenticate_bearer(struct auth_req *r,
					       const Ward__AuthenticateRequest *req,
					       struct queue_reply *reply)
{
	Ward__AuthenticateReply out = WARD__AUTHENTICATE_REPLY__INIT;
	Ward__Principal p = WARD__PRINCIPAL__INIT;
	char hash[65], id[AUTH_UUID_LEN + 1], scopes_lit[512], *scopes[16];
	const char *params[1] = { hash }, *err = NULL;
	bool is_key = strncmp(req->bearer, AUTH_APIKEY_PREFIX, 3) == 0;
	PGresult *res;
	long left;
	size_t n;

	if (!is_key && strncmp(req->bearer, AUTH_ACCESS_PREFIX, 4) != 0)
		return auth_problem(reply, 401, "Unauthorized", "unknown credential");
	auth_sha256_hex(req->bearer, hash);
	if (is_key)
		res = db_exec(r->db,
			      "SELECT id, scopes, allowed_cidrs, "
			      "coalesce(extract(epoch FROM expires_at - now())::bigint, 86400), "
			      "revoked_at IS NOT NULL, key_hash, false "
			      "FROM auth.api_keys WHERE key_hash = $1",
			      1, params, &err);
	else
		res = db_exec(r->db,
			      "SELECT t.id, t.scopes, '{}'::text[], "
			      "extract(epoch FROM t.expires_at - now())::bigint, "
			      "t.revoked_at IS NOT NULL, t.token_hash, c.deleted_at IS NOT NULL "
			      "FROM auth.access_tokens t JOIN auth.oauth_clients c ON c.id = t.client "
			      "WHERE t.token_hash = $1",
			      1, params, &err);
	if (res == NULL)
		return auth_fail(reply, "credential lookup", err);
	if (PQntuples(res) != 1 || !crypto_ct_equal(PQgetvalue(res, 0, 5), hash, 64)) {
		PQclear(res);
		return auth_problem(reply, 401, "Unauthorized", "unknown credential");
	}
	left = atol(PQgetvalue(res, 0, 3));
	if (PQgetvalue(res, 0, 4)[0] == 't' || PQgetvalue(res, 0, 6)[0] == 't' || left <= 0) {
		PQclear(res);
		return auth_problem(reply, 401, "Unauthorized", "credential revoked or expired");
	}
	{
		char cidr_lit[2048], *cidrs[32];
		size_t nc;

		snprintf(cidr_lit, sizeof cidr_lit, "%s", PQgetvalue(res, 0, 2));
		nc = auth_scopes_split(cidr_lit, cidrs, 32);
		if (!auth_cidr_list_allows(cidrs, nc, req->ip)) {
			PQclear(res);
			return auth_problem(reply, 403, "Forbidden", "address not allowed");
		}
	}
	snprintf(id, sizeof id, "%s", PQgetvalue(res, 0, 0));
	snprintf(scopes_lit, sizeof scopes_lit, "%s", PQgetvalue(res, 0, 1));
	PQclear(res);
	if (is_key) {
		const char *kp[1] = { id };

		if (auth_exec(r,
			      "UPDATE auth.api_keys SET last_used_at = now() WHERE id = $1 AND "
			      "(last_used_at IS NULL OR last_used_at < now() - interval '60 s')",
			      1, kp, &err) < 0)
			return auth_fail(reply, "key touch", err);
	}
	n = auth_scopes_split(scopes_lit, scopes, 16);
	p.kind = "api";
	p.id = id;
	p.role = "";
	p.tenant = (char *)r->tenant;
	p.session = id;
	p.ip = req->ip;
	p.n_scopes = n;
	p.scopes = scopes;
	out.principal = &p;
	out.n_scopes = n;
	out.scopes = scopes;
	out.cache_ms = auth_conf.authenticate_cache_ms;
	if (left * 1000 < out.cache_ms)
		out.cache_ms = (int32_t)(left * 1000);
	return auth_reply(reply, &out.base);
}

AUTH_HANDLER(auth_authenticate)
{
	Ward__AuthenticateRequest *req;
	struct auth_req r;
	const char *err = NULL;
	queue_result_t ret;

	if (!auth_sender_is(env, "gateway"))
		return auth_problem(reply, 403, "Forbidden", "auth.authenticate is for the gateway");
	req = ward__authenticate_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (strlen(req->session_token) > AUTH_TOKEN_MAX || strlen(req->bearer) > AUTH_TOKEN_MAX ||
	    strlen(req->csrf_token) > AUTH_TOKEN_MAX ||
	    (req->session_token[0] == '\0') == (req->bearer[0] == '\0')) {
		ward__authenticate_request__free_unpacked(req, NULL);
		return auth_problem(reply, 401, "Unauthorized", "one credential expected");
	}
	if (auth_begin(&r, d, env, &err) < 0) {
		ward__authenticate_request__free_unpacked(req, NULL);
		return auth_fail(reply, "authenticate", err);
	}
	if (req->session_token[0] != '\0')
		ret = auth_authenticate_session(&r, req, reply);
	else
		ret = auth_authenticate_bearer(&r, req, reply);
	if (auth_commit(&r, &err) < 0) {
		free(reply->data);
		reply->data = NULL;
		reply->len = 0;
		ret = auth_fail(reply, "authenticate commit", err);
	}
	ward__authenticate_request__free_unpacked(req, NULL);
	return ret;
}

/* ============================== lockout ================================= */

/* Seconds until the account or the source is unlocked, 0 if neither is locked. */
static int auth_lock_left(struct auth_req *r, const char *acct, const char *src,
			  const char **error_r)
{
	const char *params[2] = { acct, src };
	PGresult *res = db_exec(r->db,
				"SELECT coalesce(max(ceil(extract(epoch FROM locked_until - now())))"
				"::int, 0) FROM auth.login_failures "
				"WHERE key IN ($1, $2) AND locked_until > now()",
				2, params, error_r);
	int left;

	if (res == NULL)
		return -1;
	left = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	return left;
}

/* Count one failure on key; lock it when threshold is reached within the window. */
static int auth_lock_count(struct auth_req *r, const char *key, int threshold,
			   const char **error_r)
{
	char win[16], lock[16];
	const char *params[4] = { r->tenant, key, win, lock };
	PGresult *res;
	int n;

	snprintf(win, sizeof win, "%d", auth_conf.lockout_window_s);
	snprintf(lock, sizeof lock, "%d", auth_conf.lockout_s);
	res = db_exec(r->db,
		      "INSERT INTO auth.login_failures AS f (tenant_id, key, failures) "
		      "VALUES ($1, $2, 1) ON CONFLICT (tenant_id, key) DO UPDATE SET "
		      "failures = CASE WHEN f.window_start < now() - make_interval(secs => $3::int) "
		      "THEN 1 ELSE f.failures + 1 END, "
		      "window_start = CASE WHEN f.window_start < now() - make_interval(secs => "
		      "$3::int) THEN now() ELSE f.window_start END "
		      "RETURNING failures, $4::int",
		      4, params, error_r);
	if (res == NULL)
		return -1;
	n = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (n < threshold)
		return 0;
	return auth_exec(r,
			 "UPDATE auth.login_failures SET locked_until = now() + "
			 "make_interval(secs => $4::int), failures = 0, window_start = now() "
			 "WHERE tenant_id = $1 AND key = $2 AND $3::int >= 0",
			 4, params, error_r);
}

/* ============================== sessions ================================ */

/* Create a session for user; fills the LoginReply's tokens (malloc'd strings). */
static int auth_session_create(struct auth_req *r, const char *user_id, const char *role,
			       const char *ip, const char *user_agent, Ward__LoginReply *out,
			       const char **error_r)
{
	char sid[AUTH_UUID_LEN + 1], token[AUTH_TOKEN_MAX], thash[65], csrf[AUTH_TOKEN_MAX],
		chash[65], ua[513];
	const char *params[7] = { sid, r->tenant, user_id, thash, chash, ip, ua };
	int ret = -1;

	snprintf(ua, sizeof ua, "%s", user_agent != NULL ? user_agent : "");
	if (auth_uuid_random(sid) < 0 || auth_token_new(AUTH_SESSION_PREFIX, token, thash) < 0 ||
	    auth_token_new(AUTH_CSRF_PREFIX, csrf, chash) < 0) {
		*error_r = "no random bytes";
		goto out;
	}
	if (auth_exec(r,
		      "INSERT INTO auth.sessions (id, tenant_id, user_id, token_hash, csrf_hash, ip, "
		      "user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7)",
		      7, params, error_r) < 0)
		goto out;
	out->session_token = strdup(token);
	out->csrf_token = strdup(csrf);
	if (out->session_token == NULL || out->csrf_token == NULL) {
		*error_r = "out of memory";
		goto out;
	}
	out->expires_at_ms = envelope_now_ms() + (int64_t)auth_absolute_s(role) * 1000;
	ret = 0;
out:
	crypto_wipe(token, sizeof token);
	crypto_wipe(csrf, sizeof csrf);
	return ret;
}

/* Free what auth_session_create and auth_user_fill put into out. */
static void auth_login_reply_clear(Ward__LoginReply *out)
{
	if (out->session_token != protobuf_c_empty_string)
		auth_free_secret(out->session_token);
	if (out->csrf_token != protobuf_c_empty_string)
		auth_free_secret(out->csrf_token);
	if (out->user != NULL)
		auth_user_clear(out->user);
}

/* Replace the caller's cookie session by a new one (no fixation at a privilege
 * change): the old id revoked, the new tokens into out (as auth_session_create).
 * revoke_all also ends every other session of the user. Nothing new when the
 * caller has no live session (a Bearer credential). */
static int auth_session_rotate(struct auth_req *r, const Ward__Principal *p, bool revoke_all,
			       Ward__LoginReply *out, const char **error_r)
{
	const char *params[2] = { p->id, p->session };
	char ua[513];
	bool live = false;
	PGresult *res;

	if (p->session != NULL && auth_uuid_valid(p->session)) {
		res = db_exec(r->db,
			      "SELECT user_agent FROM auth.sessions WHERE user_id = $1 AND "
			      "id = $2::uuid AND revoked_at IS NULL FOR UPDATE",
			      2, params, error_r);
		if (res == NULL)
			return -1;
		live = PQntuples(res) == 1;
		snprintf(ua, sizeof ua, "%s", live ? PQgetvalue(res, 0, 0) : "");
		PQclear(res);
	}
	if (revoke_all) {
		if (auth_exec(r,
			      "UPDATE auth.sessions SET revoked_at = now() WHERE user_id = $1 AND "
			      "revoked_at IS NULL",
			      1, params, error_r) < 0)
			return -1;
	} else if (live &&
		   auth_exec(r,
			     "UPDATE auth.sessions SET revoked_at = now() WHERE user_id = $1 AND "
			     "id = $2::uuid",
			     2, params, error_r) < 0) {
		return -1;
	}
	if (!live)
		return 0;
	return auth_session_create(r, p->id, p->role, p->ip, ua, out, error_r);
}

/* ============================== TOTP check ============================== */

/* Check a code for user: a TOTP code (6 digits, a later step than the last one
 * accepted) or an unused recovery code, consumed. 1 ok, 0 refused, -1 error. */
static int auth_totp_check(struct auth_req *r, const char *user_id, const uint8_t *secret,
			   size_t secret_len, int64_t last_step, const char *code,
			   const char **error_r)
{
	char norm[32], hash[65], step_s[24];
	size_t n = 0;
	int64_t step;
	int ok;

	if (strlen(code) == AUTH_TOTP_DIGITS) {
		ok = auth_totp_verify(secret, secret_len, code, (int64_t)time(NULL), last_step,
				      &step);
		if (ok == 1) {
			const char *params[2] = { user_id, step_s };

			snprintf(step_s, sizeof step_s, "%lld", (long long)step);
			/* the condition makes two concurrent logins with one code race safely */
			PGresult *res = db_exec(r->db,
						"UPDATE auth.users SET totp_last_step = $2::bigint "
						"WHERE id = $1 AND totp_last_step < $2::bigint",
						2, params, error_r);
			if (res == NULL)
				return -1;
			ok = strcmp(PQcmdTuples(res), "1") == 0;
			PQclear(res);
		}
		return ok;
	}
	/* recovery code: XXXXX-XXXXX, case and dashes ignored */
	for (const char *p = code; *p != '\0' && n < sizeof norm - 1; p++)
		if (*p != '-' && *p != ' ')
			norm[n++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
	norm[n] = '\0';
	if (n != 10 || auth_dek(r, error_r) < 0)
		return n != 10 ? 0 : -1;
	if (auth_blind(r, "auth.recovery_codes", norm, n, hash) < 0)
		return -1;
	{
		const char *params[2] = { user_id, hash };
		PGresult *res = db_exec(r->db,
					"UPDATE auth.recovery_codes SET used_at = now() "
					"WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
					2, params, error_r);
		if (res == NULL)
			return -1;
		ok = strcmp(PQcmdTuples(res), "1") == 0;
		PQclear(res);
	}
	crypto_wipe(norm, sizeof norm);
	return ok;
}

/* ============================== login =================================== */

struct auth_login_user {
	bool found;
	char id[AUTH_UUID_LEN + 1];
	char role[16];
	char *hash;
	bool disabled, must_change, totp_enabled, expired;
	uint8_t *totp_secret;
	size_t totp_secret_len;
	int64_t totp_last_step;
};

static void auth_login_user_free(struct auth_login_user *u)
{
	auth_free_secret(u->hash);
	if (u->totp_secret != NULL) {
		crypto_wipe(u->totp_secret, u->totp_secret_len);
		free(u->totp_secret);
	}
	memset(u, 0, sizeof *u);
}

/* Load the user with email blind index bidx. */
static int auth_login_user_load(struct auth_req *r, const char *bidx, int max_age_days,
				struct auth_login_user *u, const char **error_r)
{
	char age[16];
	const char *params[2] = { bidx, age };
	PGresult *res;

	memset(u, 0, sizeof *u);
	snprintf(age, sizeof age, "%d", max_age_days);
	res = db_exec(r->db,
		      "SELECT id, role, password_hash, disabled, must_change_password, totp_enabled, "
		      "totp_secret_enc, totp_last_step, "
		      "($2::int > 0 AND password_changed_at < now() - make_interval(days => $2::int)) "
		      "FROM auth.users WHERE email_bidx = $1",
		      2, params, error_r);
	if (res == NULL)
		return -1;
	if (PQntuples(res) == 1) {
		u->found = true;
		snprintf(u->id, sizeof u->id, "%s", PQgetvalue(res, 0, 0));
		snprintf(u->role, sizeof u->role, "%s", PQgetvalue(res, 0, 1));
		if (!PQgetisnull(res, 0, 2))
			u->hash = strdup(PQgetvalue(res, 0, 2));
		u->disabled = PQgetvalue(res, 0, 3)[0] == 't';
		u->must_change = PQgetvalue(res, 0, 4)[0] == 't';
		u->totp_enabled = PQgetvalue(res, 0, 5)[0] == 't';
		u->totp_last_step = atoll(PQgetvalue(res, 0, 7));
		u->expired = PQgetvalue(res, 0, 8)[0] == 't';
		if (u->totp_enabled) {
			char *s = auth_open_column(r, res, 0, 6, "auth.users", "totp_secret_enc",
						   u->id);

			if (s == NULL) {
				PQclear(res);
				*error_r = "cannot open the TOTP secret";
				return -1;
			}
			u->totp_secret = (uint8_t *)s;
			u->totp_secret_len = AUTH_TOTP_SECRET_LEN;
		}
	}
	PQclear(res);
	return 0;
}

/* Fill out->user from the users table. */
static int auth_login_fill_user(struct auth_req *r, const char *user_id, Ward__User *u,
				const char **error_r)
{
	const char *params[1] = { user_id };
	PGresult *res = db_exec(r->db, "SELECT " AUTH_USER_COLS " FROM auth.users u WHERE u.id = $1",
				1, params, error_r);
	int ret;

	if (res == NULL)
		return -1;
	ret = PQntuples(res) == 1 ? auth_user_fill(r, res, 0, 0, u) : -1;
	PQclear(res);
	if (ret < 0)
		*error_r = "cannot read the user";
	return ret;
}

/* After the credential checked: IP allow-list, rehash, expiry, session, audit. */
static queue_result_t auth_login_finish(struct auth_req *r, struct auth_login_user *u,
					const struct auth_settings *s, const char *password,
					const char *ip, const char *user_agent, const char *how,
					struct queue_reply *reply)
{
	Ward__LoginReply out = WARD__LOGIN_REPLY__INIT;
	Ward__User user;
	char actor[64], *newhash = NULL;
	const char *err = NULL;
	const char *params[2] = { u->id, NULL };
	queue_result_t ret;
	bool staff = strcmp(u->role, "customer") != 0;

	ward__user__init(&user);
	if (staff ? !auth_cidr_list_allows(s->ip_allow, s->n_ip_allow, ip)
		  : !auth_cidr_list_allows(s->ip_allow_customers, s->n_ip_allow_customers, ip)) {
		snprintf(actor, sizeof actor, "user:%s", u->id);
		if (auth_audit(r, "session", "login.refused", actor, actor, ip,
			       "{\"reason\":\"address not allowed\"}", &err) < 0 ||
		    auth_commit(r, &err) < 0)
			return auth_fail(reply, "login", err);
		return auth_problem(reply, 403, "Forbidden", "address not allowed");
	}
	if (password != NULL && u->hash != NULL && auth_password_needs_rehash(u->hash)) {
		if (auth_password_hash(password, &newhash) < 0)
			goto fail;
		params[1] = newhash;
		if (auth_exec(r, "UPDATE auth.users SET password_hash = $2 WHERE id = $1", 2, params,
			      &err) < 0)
			goto fail;
	}
	if (u->expired && !u->must_change) {
		if (auth_exec(r, "UPDATE auth.users SET must_change_password = true WHERE id = $1",
			      1, params, &err) < 0)
			goto fail;
		u->must_change = true;
	}
	if (auth_session_create(r, u->id, u->role, ip, user_agent, &out, &err) < 0 ||
	    auth_login_fill_user(r, u->id, &user, &err) < 0)
		goto fail;
	out.user = &user;
	out.must_change_password = u->must_change;
	out.must_setup_totp = s->require_2fa_staff && staff && !u->totp_enabled;
	snprintf(actor, sizeof actor, "user:%s", u->id);
	if (auth_audit(r, "session", "login.success", actor, actor, ip, how, &err) < 0 ||
	    auth_commit(r, &err) < 0)
		goto fail;
	ret = auth_reply(reply, &out.base);
	auth_login_reply_clear(&out);
	auth_free_secret(newhash);
	return ret;
fail:
	auth_rollback(r);
	auth_login_reply_clear(&out);
	auth_free_secret(newhash);
	return auth_fail(reply, "login", err);
}

/* A failed login: count it, audit it, commit, 401. */
static queue_result_t auth_login_failed(struct auth_req *r, const char *acct, const char *src,
					const struct auth_login_user *u, const char *ip,
					const char *why, struct queue_reply *reply)
{
	const char *err = NULL;
	char target[64], detail[128];

	snprintf(target, sizeof target, u->found ? "user:%s" : "unknown", u->id);
	snprintf(detail, sizeof detail, "{\"reason\":\"%s\"}", why);
	if (auth_lock_count(r, acct, auth_conf.lockout_account, &err) < 0 ||
	    auth_lock_count(r, src, auth_conf.lockout_source, &err) < 0 ||
	    auth_audit(r, "session", "login.failure", "anonymous", target, ip, detail, &err) < 0 ||
	    auth_commit(r, &err) < 0) {
		auth_rollback(r);
		return auth_fail(reply, "login failure", err);
	}
	return auth_problem(reply, 401, "Unauthorized",
			    strcmp(why, "totp required") == 0 ? "TOTP code required"
							      : "wrong credentials");
}

AUTH_HANDLER(auth_login)
{
	Ward__LoginRequest *req;
	struct auth_login_user u;
	struct auth_settings s;
	struct auth_req r;
	char email[AUTH_EMAIL_MAX + 1], bidx[65], acct[80], src[80];
	const char *err = NULL;
	queue_result_t ret;
	int left, ok;

	memset(&u, 0, sizeof u);
	memset(&s, 0, sizeof s);
	if (!auth_sender_is(env, "gateway"))
		return auth_problem(reply, 403, "Forbidden", "auth.login is for the gateway");
	req = ward__login_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (strlen(req->password) > AUTH_PASSWORD_MAX || strlen(req->totp_code) > 32 ||
	    strlen(req->ip) > 64 || !auth_email_normalize(req->email, email) ||
	    req->password[0] == '\0') {
		/* the same answer as a wrong password, after the same work */
		(void)auth_password_verify(NULL, req->password[0] != '\0' ? "x" : "y");
		ward__login_request__free_unpacked(req, NULL);
		return auth_problem(reply, 401, "Unauthorized", "wrong credentials");
	}
	if (auth_begin(&r, d, env, &err) < 0) {
		ward__login_request__free_unpacked(req, NULL);
		return auth_fail(reply, "login", err);
	}
	ok = auth_mark(&r, &err);
	if (ok <= 0) {
		auth_rollback(&r);
		ward__login_request__free_unpacked(req, NULL);
		return ok < 0 ? auth_fail(reply, "login", err)
			      : auth_problem(reply, 409, "Conflict", "request already processed");
	}
	if (auth_settings_load(&r, &s, &err) < 0 || auth_email_bidx(&r, email, bidx) < 0)
		goto fail;
	snprintf(acct, sizeof acct, "acct:%s", bidx);
	snprintf(src, sizeof src, "ip:%s", req->ip);
	left = auth_lock_left(&r, acct, src, &err);
	if (left < 0)
		goto fail;
	if (left > 0) {
		if (auth_audit(&r, "session", "login.locked", "anonymous", "", req->ip, "", &err) <
			    0 ||
		    auth_commit(&r, &err) < 0)
			goto fail;
		ret = auth_problem_retry(reply, 429, "Too Many Requests", left);
		goto out;
	}
	if (auth_login_user_load(&r, bidx, s.policy.max_age_days, &u, &err) < 0)
		goto fail;
	ok = auth_password_verify(u.found && !u.disabled ? u.hash : NULL, req->password);
	if (ok < 0) {
		err = "password verification failed";
		goto fail;
	}
	if (ok == 0 || !u.found || u.disabled) {
		ret = auth_login_failed(&r, acct, src, &u, req->ip,
					u.disabled ? "disabled" : "wrong password", reply);
		goto out;
	}
	if (s.sso_enforce_agents && s.sso_alg != AUTH_JWT_NONE && strcmp(u.role, "agent") == 0) {
		ret = auth_login_failed(&r, acct, src, &u, req->ip, "sso required", reply);
		goto out;
	}
	if (u.totp_enabled) {
		if (req->totp_code[0] == '\0') {
			/* right password, second factor missing: not counted as a failure */
			auth_rollback(&r);
			ret = auth_problem(reply, 401, "Unauthorized", "TOTP code required");
			goto out;
		}
		ok = auth_totp_check(&r, u.id, u.totp_secret, u.totp_secret_len, u.totp_last_step,
				     req->totp_code, &err);
		if (ok < 0)
			goto fail;
		if (ok == 0) {
			ret = auth_login_failed(&r, acct, src, &u, req->ip, "wrong totp", reply);
			goto out;
		}
	}
	{
		const char *params[1] = { acct };

		if (auth_exec(&r, "DELETE FROM auth.login_failures WHERE key = $1", 1, params,
			      &err) < 0)
			goto fail;
	}
	ret = auth_login_finish(&r, &u, &s, req->password, req->ip, req->user_agent,
				"{\"method\":\"password\"}", reply);
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "login", err);
out:
	auth_login_user_free(&u);
	auth_settings_free(&s);
	crypto_wipe(req->password, strlen(req->password));
	ward__login_request__free_unpacked(req, NULL);
	return ret;
}

/* ============================== SSO JWT ================================= */

/* Create a customer for an SSO email never seen. */
static int auth_sso_create_customer(struct auth_req *r, const char *email, const char *bidx,
				    struct auth_login_user *u, const char **error_r)
{
	uint8_t *enc = NULL;
	size_t enc_len = 0;
	int ret = -1;

	memset(u, 0, sizeof *u);
	if (auth_uuid_random(u->id) < 0 ||
	    auth_seal(r, "auth.users", "email_enc", u->id, email, strlen(email), &enc, &enc_len) <
		    0) {
		*error_r = "cannot seal the email";
		return -1;
	}
	{
		const char *params[4] = { u->id, r->tenant, (const char *)enc, bidx };
		const int lens[4] = { 0, 0, (int)enc_len, 0 }, fmts[4] = { 0, 0, 1, 0 };
		PGresult *res = db_exec_bin(r->db,
					    "INSERT INTO auth.users (id, tenant_id, email_enc, "
					    "email_bidx, role) VALUES ($1, $2, $3, $4, 'customer')",
					    4, params, lens, fmts, error_r);
		if (res != NULL) {
			PQclear(res);
			ret = 0;
		}
	}
	free(enc);
	u->found = true;
	snprintf(u->role, sizeof u->role, "customer");
	return ret;
}

AUTH_HANDLER(auth_sso_jwt)
{
	Ward__LoginRequest *req;
	struct auth_jwt_claims claims;
	struct auth_jwt_key key;
	struct auth_login_user u;
	struct auth_settings s;
	struct auth_req r;
	char email[AUTH_EMAIL_MAX + 1], bidx[65], jti_hash[65], exp_s[24];
	const char *err = NULL, *why = NULL;
	queue_result_t ret;
	int ok;

	memset(&u, 0, sizeof u);
	memset(&s, 0, sizeof s);
	memset(&key, 0, sizeof key);
	if (!auth_sender_is(env, "gateway"))
		return auth_problem(reply, 403, "Forbidden", "auth.sso_jwt is for the gateway");
	req = ward__login_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (auth_begin(&r, d, env, &err) < 0) {
		ward__login_request__free_unpacked(req, NULL);
		return auth_fail(reply, "sso", err);
	}
	ok = auth_mark(&r, &err);
	if (ok <= 0) {
		auth_rollback(&r);
		ward__login_request__free_unpacked(req, NULL);
		return ok < 0 ? auth_fail(reply, "sso", err)
			      : auth_problem(reply, 409, "Conflict", "request already processed");
	}
	if (auth_settings_load(&r, &s, &err) < 0)
		goto fail;
	key.alg = s.sso_alg;
	if (s.sso_alg == AUTH_JWT_HS256) {
		key.secret = s.sso_key;
		key.secret_len = s.sso_key_len;
	} else if (s.sso_alg == AUTH_JWT_RS256 && s.sso_key != NULL) {
		key.pub = auth_jwt_pubkey_load((const char *)s.sso_key, s.sso_key_len, &why);
	}
	if (auth_jwt_verify(&key, req->jwt, (int64_t)time(NULL), &claims, &why) < 0 ||
	    !auth_email_normalize(claims.email, email)) {
		if (why == NULL)
			why = "bad email";
		goto refused;
	}
	/* jti single use: remembered until the token expires anyway */
	auth_sha256_hex(claims.jti, jti_hash);
	snprintf(exp_s, sizeof exp_s, "%lld", (long long)claims.exp);
	{
		const char *params[3] = { r.tenant, jti_hash, exp_s };
		PGresult *res = db_exec(r.db,
					"INSERT INTO auth.jwt_seen (tenant_id, jti_hash, expires_at) "
					"VALUES ($1, $2, to_timestamp($3::bigint)) "
					"ON CONFLICT DO NOTHING",
					3, params, &err);
		if (res == NULL)
			goto fail;
		ok = strcmp(PQcmdTuples(res), "1") == 0;
		PQclear(res);
		if (!ok) {
			why = "jti replayed";
			goto refused;
		}
	}
	if (auth_exec(&r, "DELETE FROM auth.jwt_seen WHERE expires_at < now() - interval '1 hour'",
		      0, NULL, &err) < 0 ||
	    auth_email_bidx(&r, email, bidx) < 0 ||
	    auth_login_user_load(&r, bidx, 0, &u, &err) < 0)
		goto fail;
	if (!u.found && s.sso_create_customers &&
	    auth_sso_create_customer(&r, email, bidx, &u, &err) < 0)
		goto fail;
	if (!u.found || u.disabled) {
		why = u.found ? "user disabled" : "unknown user";
		goto refused;
	}
	ret = auth_login_finish(&r, &u, &s, NULL, req->ip, req->user_agent,
				"{\"method\":\"sso_jwt\"}", reply);
	goto out;
refused:
	{
		char detail[160];

		snprintf(detail, sizeof detail, "{\"method\":\"sso_jwt\",\"reason\":\"%s\"}", why);
		/* commit the audit event (and nothing else: a refused token leaves no jti) */
		auth_rollback(&r);
		if (auth_begin(&r, d, env, &err) < 0 ||
		    auth_audit(&r, "session", "login.failure", "anonymous", "", req->ip, detail,
			       &err) < 0 ||
		    auth_commit(&r, &err) < 0) {
			auth_rollback(&r);
			ret = auth_fail(reply, "sso", err);
			goto out;
		}
		ret = auth_problem(reply, 401, "Unauthorized", "invalid token");
	}
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "sso", err);
out:
	EVP_PKEY_free(key.pub);
	auth_login_user_free(&u);
	auth_settings_free(&s);
	ward__login_request__free_unpacked(req, NULL);
	return ret;
}

/* ============================== logout ================================== */

AUTH_HANDLER(auth_logout)
{
	const Ward__Principal *p = env->principal;
	Ward__Empty out = WARD__EMPTY__INIT;
	const char *err = NULL;
	struct auth_req r;
	char target[64];

	if (p == NULL || strcmp(p->kind, "user") != 0 || !auth_uuid_valid(p->session))
		return auth_problem(reply, 400, "Bad Request", "no session");
	if (auth_begin(&r, d, env, &err) < 0)
		return auth_fail(reply, "logout", err);
	{
		const char *params[2] = { p->session, p->id };

		snprintf(target, sizeof target, "session:%s", p->session);
		if (auth_exec(&r,
			      "UPDATE auth.sessions SET revoked_at = now() "
			      "WHERE id = $1 AND user_id = $2::uuid AND revoked_at IS NULL",
			      2, params, &err) < 0 ||
		    auth_audit(&r, "session", "logout", NULL, target, p->ip, "", &err) < 0 ||
		    auth_commit(&r, &err) < 0) {
			auth_rollback(&r);
			return auth_fail(reply, "logout", err);
		}
	}
	return auth_reply(reply, &out.base);
}

/* ============================== passwords =============================== */

/* Policy + history check of a new password for user_id (current hash included
 * in the history). n > 0 errors filled = refused; -1 on error. */
static int auth_password_acceptable(struct auth_req *r, const struct auth_policy *pol,
				    const char *user_id, const char *current_hash,
				    const char *password, struct auth_rule_error *errs, size_t *n_r,
				    const char **error_r)
{
	char lim[16];
	const char *params[2] = { user_id, lim };
	PGresult *res;
	bool reused = false;
	size_t n = auth_policy_check(pol, "new_password", password, errs);

	*n_r = n;
	if (pol->history <= 0 || strlen(password) > AUTH_PASSWORD_MAX)
		return 0;
	if (current_hash != NULL && auth_password_verify(current_hash, password) == 1)
		reused = true;
	snprintf(lim, sizeof lim, "%d", pol->history - 1);
	res = db_exec(r->db,
		      "SELECT password_hash FROM auth.password_history WHERE user_id = $1 "
		      "ORDER BY created_at DESC LIMIT $2::int",
		      2, params, error_r);
	if (res == NULL)
		return -1;
	for (int i = 0; i < PQntuples(res) && !reused; i++)
		if (auth_password_verify(PQgetvalue(res, i, 0), password) == 1)
			reused = true;
	PQclear(res);
	if (reused && n < AUTH_RULES_MAX) {
		errs[n].field = "new_password";
		errs[n].message = "was used recently (history)";
		*n_r = n + 1;
	}
	return 0;
}

/* Store a new password (the old one goes to the history). */
static int auth_password_store(struct auth_req *r, const char *user_id, const char *old_hash,
			       const char *password, const char **error_r)
{
	char *hash = NULL;
	int ret = -1;

	if (auth_password_hash(password, &hash) < 0) {
		*error_r = "cannot hash the password";
		return -1;
	}
	{
		const char *up[2] = { user_id, hash };
		const char *hp[3] = { r->tenant, user_id, old_hash };

		if (auth_exec(r,
			      "UPDATE auth.users SET password_hash = $2, password_changed_at = now(), "
			      "must_change_password = false, invitation_hash = NULL, "
			      "invitation_expires_at = NULL, updated_at = now() WHERE id = $1",
			      2, up, error_r) < 0)
			goto out;
		if (old_hash != NULL &&
		    auth_exec(r,
			      "INSERT INTO auth.password_history (tenant_id, user_id, password_hash) "
			      "VALUES ($1, $2, $3)",
			      3, hp, error_r) < 0)
			goto out;
		if (auth_exec(r,
			      "DELETE FROM auth.password_history WHERE ctid IN (SELECT ctid FROM "
			      "auth.password_history WHERE user_id = $1 ORDER BY created_at DESC "
			      "OFFSET 24)",
			      1, up, error_r) < 0)
			goto out;
	}
	ret = 0;
out:
	auth_free_secret(hash);
	return ret;
}

AUTH_HANDLER(auth_password_change)
{
	const Ward__Principal *p = env->principal;
	Ward__PasswordChangeRequest *req;
	Ward__SessionRenewal out = WARD__SESSION_RENEWAL__INIT;
	Ward__LoginReply sess = WARD__LOGIN_REPLY__INIT;
	struct auth_rule_error errs[AUTH_RULES_MAX];
	struct auth_settings s;
	struct auth_req r;
	const char *err = NULL;
	char *hash = NULL, target[64];
	PGresult *res;
	queue_result_t ret;
	size_t n = 0;
	int ok;

	memset(&s, 0, sizeof s);
	if (p == NULL || strcmp(p->kind, "user") != 0 || !auth_uuid_valid(p->id))
		return auth_problem(reply, 403, "Forbidden", "a user session is required");
	req = ward__password_change_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (auth_begin(&r, d, env, &err) < 0) {
		ward__password_change_request__free_unpacked(req, NULL);
		return auth_fail(reply, "password change", err);
	}
	{
		const char *params[1] = { p->id };

		res = db_exec(r.db, "SELECT password_hash FROM auth.users WHERE id = $1", 1, params,
			      &err);
		if (res == NULL)
			goto fail;
		if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
			hash = strdup(PQgetvalue(res, 0, 0));
		PQclear(res);
	}
	ok = strlen(req->current_password) <= AUTH_PASSWORD_MAX
		     ? auth_password_verify(hash, req->current_password)
		     : 0;
	snprintf(target, sizeof target, "user:%s", p->id);
	if (ok != 1) {
		static const struct auth_rule_error wrong = { "current_password", "is wrong" };

		if (auth_audit(&r, "user", "password.change_failed", NULL, target, p->ip, "",
			       &err) < 0 ||
		    auth_commit(&r, &err) < 0)
			goto fail;
		ret = auth_problem_rules(reply, 422, "Unprocessable Content", &wrong, 1);
		goto out;
	}
	if (auth_settings_load(&r, &s, &err) < 0 ||
	    auth_password_acceptable(&r, &s.policy, p->id, hash, req->new_password, errs, &n,
				     &err) < 0)
		goto fail;
	if (n > 0) {
		auth_rollback(&r);
		ret = auth_problem_rules(reply, 422, "Unprocessable Content", errs, n);
		goto out;
	}
	/* Every session of the user ends; the caller's goes on under a new id. */
	if (auth_password_store(&r, p->id, hash, req->new_password, &err) < 0 ||
	    auth_session_rotate(&r, p, true, &sess, &err) < 0 ||
	    auth_audit(&r, "user", "password.change", NULL, target, p->ip, "", &err) < 0 ||
	    auth_commit(&r, &err) < 0)
		goto fail;
	out.session_token = sess.session_token;
	out.csrf_token = sess.csrf_token;
	out.expires_at_ms = sess.expires_at_ms;
	ret = auth_reply(reply, &out.base);
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "password change", err);
out:
	auth_login_reply_clear(&sess);
	auth_free_secret(hash);
	auth_settings_free(&s);
	crypto_wipe(req->new_password, strlen(req->new_password));
	crypto_wipe(req->current_password, strlen(req->current_password));
	ward__password_change_request__free_unpacked(req, NULL);
	return ret;
}

AUTH_HANDLER(auth_invitation_accept)
{
	Ward__InvitationAcceptRequest *req;
	Ward__Empty out = WARD__EMPTY__INIT;
	struct auth_rule_error errs[AUTH_RULES_MAX];
	struct auth_settings s;
	struct auth_req r;
	char hash[65], uid[AUTH_UUID_LEN + 1], target[64];
	const char *err = NULL, *params[1] = { hash };
	PGresult *res;
	queue_result_t ret;
	size_t n = 0;

	memset(&s, 0, sizeof s);
	if (!auth_sender_is(env, "gateway"))
		return auth_problem(reply, 403, "Forbidden", "for the gateway");
	req = ward__invitation_accept_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (auth_begin(&r, d, env, &err) < 0) {
		ward__invitation_accept_request__free_unpacked(req, NULL);
		return auth_fail(reply, "invitation", err);
	}
	auth_sha256_hex(req->token, hash);
	res = db_exec(r.db,
		      "SELECT id FROM auth.users WHERE invitation_hash = $1 AND "
		      "invitation_expires_at > now() AND NOT disabled",
		      1, params, &err);
	if (res == NULL)
		goto fail;
	if (PQntuples(res) != 1 || strncmp(req->token, AUTH_INVITE_PREFIX, 3) != 0) {
		PQclear(res);
		auth_rollback(&r);
		ret = auth_problem(reply, 401, "Unauthorized", "invalid or expired invitation");
		goto out;
	}
	snprintf(uid, sizeof uid, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	if (auth_settings_load(&r, &s, &err) < 0 ||
	    auth_password_acceptable(&r, &s.policy, uid, NULL, req->new_password, errs, &n, &err) <
		    0)
		goto fail;
	if (n > 0) {
		auth_rollback(&r);
		ret = auth_problem_rules(reply, 422, "Unprocessable Content", errs, n);
		goto out;
	}
	snprintf(target, sizeof target, "user:%s", uid);
	if (auth_password_store(&r, uid, NULL, req->new_password, &err) < 0 ||
	    auth_audit(&r, "user", "invitation.accept", target, target, req->ip, "", &err) < 0 ||
	    auth_commit(&r, &err) < 0)
		goto fail;
	ret = auth_reply(reply, &out.base);
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "invitation", err);
out:
	auth_settings_free(&s);
	crypto_wipe(req->new_password, strlen(req->new_password));
	ward__invitation_accept_request__free_unpacked(req, NULL);
	return ret;
}

/* ============================== TOTP ==================================== */

AUTH_HANDLER(auth_totp_setup)
{
	const Ward__Principal *p = env->principal;
	Ward__TotpSetupReply out = WARD__TOTP_SETUP_REPLY__INIT;
	uint8_t secret[AUTH_TOTP_SECRET_LEN], *enc = NULL;
	char b32[64], uri[768], *email = NULL;
	size_t enc_len = 0;
	const char *err = NULL;
	struct auth_req r;
	PGresult *res;
	queue_result_t ret;

	if (p == NULL || strcmp(p->kind, "user") != 0)
		return auth_problem(reply, 403, "Forbidden", "a user session is required");
	if (auth_begin(&r, d, env, &err) < 0)
		return auth_fail(reply, "totp setup", err);
	{
		const char *params[1] = { p->id };

		res = db_exec(r.db, "SELECT email_enc, totp_enabled FROM auth.users WHERE id = $1",
			      1, params, &err);
		if (res == NULL)
			goto fail;
		if (PQntuples(res) != 1 || PQgetvalue(res, 0, 1)[0] == 't') {
			PQclear(res);
			auth_rollback(&r);
			return auth_problem(reply, 409, "Conflict", "TOTP is already enabled");
		}
		email = auth_open_column(&r, res, 0, 0, "auth.users", "email_enc", p->id);
		PQclear(res);
		if (email == NULL) {
			err = "cannot open the email";
			goto fail;
		}
	}
	if (crypto_random(secret, sizeof secret) < 0 ||
	    auth_base32_encode(secret, sizeof secret, b32, sizeof b32) < 0 ||
	    auth_totp_uri(auth_conf.issuer, email, b32, uri, sizeof uri) < 0 ||
	    auth_seal(&r, "auth.users", "totp_secret_enc", p->id, secret, sizeof secret, &enc,
		      &enc_len) < 0) {
		err = "cannot make a TOTP secret";
		goto fail;
	}
	{
		const char *params[2] = { p->id, (const char *)enc };
		const int lens[2] = { 0, (int)enc_len }, fmts[2] = { 0, 1 };

		res = db_exec_bin(r.db,
				  "UPDATE auth.users SET totp_secret_enc = $2, totp_last_step = 0 "
				  "WHERE id = $1 AND NOT totp_enabled",
				  2, params, lens, fmts, &err);
		if (res == NULL)
			goto fail;
		PQclear(res);
	}
	if (auth_commit(&r, &err) < 0)
		goto fail;
	out.secret = b32;
	out.otpauth_uri = uri;
	ret = auth_reply(reply, &out.base);
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "totp setup", err);
out:
	crypto_wipe(secret, sizeof secret);
	crypto_wipe(b32, sizeof b32);
	crypto_wipe(uri, sizeof uri);
	free(enc);
	auth_free_secret(email);
	return ret;
}

/* Load the user's TOTP secret (pending or enabled). 1 found, 0 none, -1 error. */
static int auth_totp_load(struct auth_req *r, const char *uid, bool *enabled, uint8_t **secret,
			  int64_t *last_step, const char **error_r)
{
	const char *params[1] = { uid };
	PGresult *res = db_exec(r->db,
				"SELECT totp_secret_enc, totp_enabled, totp_last_step FROM auth.users "
				"WHERE id = $1 FOR UPDATE",
				1, params, error_r);
	int ret = 0;

	*secret = NULL;
	if (res == NULL)
		return -1;
	if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
		*enabled = PQgetvalue(res, 0, 1)[0] == 't';
		*last_step = atoll(PQgetvalue(res, 0, 2));
		*secret = (uint8_t *)auth_open_column(r, res, 0, 0, "auth.users", "totp_secret_enc",
						      uid);
		ret = *secret != NULL ? 1 : -1;
		if (ret < 0)
			*error_r = "cannot open the TOTP secret";
	}
	PQclear(res);
	return ret;
}

AUTH_HANDLER(auth_totp_confirm)
{
	const Ward__Principal *p = env->principal;
	Ward__TotpCodeRequest *req;
	Ward__TotpConfirmReply out = WARD__TOTP_CONFIRM_REPLY__INIT;
	Ward__LoginReply sess = WARD__LOGIN_REPLY__INIT;
	char codes[32][12], *codep[32], target[64];
	uint8_t *secret = NULL;
	int64_t last = 0, step = 0;
	bool enabled = false;
	const char *err = NULL;
	struct auth_req r;
	queue_result_t ret;
	int n = auth_conf.recovery_codes, found;

	if (p == NULL || strcmp(p->kind, "user") != 0)
		return auth_problem(reply, 403, "Forbidden", "a user session is required");
	req = ward__totp_code_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (auth_begin(&r, d, env, &err) < 0) {
		ward__totp_code_request__free_unpacked(req, NULL);
		return auth_fail(reply, "totp confirm", err);
	}
	found = auth_totp_load(&r, p->id, &enabled, &secret, &last, &err);
	if (found < 0)
		goto fail;
	if (found == 0 || enabled) {
		auth_rollback(&r);
		ret = auth_problem(reply, 409, "Conflict",
				   enabled ? "TOTP is already enabled" : "no TOTP setup pending");
		goto out;
	}
	if (auth_totp_verify(secret, AUTH_TOTP_SECRET_LEN, req->code, (int64_t)time(NULL), last,
			     &step) != 1) {
		static const struct auth_rule_error bad = { "code", "is not a valid code" };

		auth_rollback(&r);
		ret = auth_problem_rules(reply, 422, "Unprocessable Content", &bad, 1);
		goto out;
	}
	{
		char step_s[24];
		const char *params[3] = { p->id, step_s, r.tenant };

		snprintf(step_s, sizeof step_s, "%lld", (long long)step);
		if (auth_exec(&r,
			      "UPDATE auth.users SET totp_enabled = true, totp_last_step = $2::bigint "
			      "WHERE id = $1",
			      2, params, &err) < 0 ||
		    auth_exec(&r, "DELETE FROM auth.recovery_codes WHERE user_id = $1", 1, params,
			      &err) < 0 ||
		    auth_dek(&r, &err) < 0)
			goto fail;
		for (int i = 0; i < n; i++) {
			uint8_t raw[7];
			char b32[16], hash[65];
			const char *cp[3] = { r.tenant, p->id, hash };

			if (crypto_random(raw, sizeof raw) < 0 ||
			    auth_base32_encode(raw, sizeof raw, b32, sizeof b32) < 0) {
				err = "no random bytes";
				goto fail;
			}
			b32[10] = '\0';
			snprintf(codes[i], sizeof codes[i], "%.5s-%.5s", b32, b32 + 5);
			codep[i] = codes[i];
			if (auth_blind(&r, "auth.recovery_codes", b32, 10, hash) < 0 ||
			    auth_exec(&r,
				      "INSERT INTO auth.recovery_codes (tenant_id, user_id, code_hash) "
				      "VALUES ($1, $2, $3)",
				      3, cp, &err) < 0)
				goto fail;
			crypto_wipe(b32, sizeof b32);
		}
	}
	snprintf(target, sizeof target, "user:%s", p->id);
	if (auth_session_rotate(&r, p, false, &sess, &err) < 0 ||
	    auth_audit(&r, "user", "2fa.enable", NULL, target, p->ip, "", &err) < 0 ||
	    auth_commit(&r, &err) < 0)
		goto fail;
	out.n_recovery_codes = (size_t)n;
	out.recovery_codes = codep;
	out.session_token = sess.session_token;
	out.csrf_token = sess.csrf_token;
	out.expires_at_ms = sess.expires_at_ms;
	ret = auth_reply(reply, &out.base);
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "totp confirm", err);
out:
	auth_login_reply_clear(&sess);
	crypto_wipe(codes, sizeof codes);
	if (secret != NULL) {
		crypto_wipe(secret, AUTH_TOTP_SECRET_LEN);
		free(secret);
	}
	ward__totp_code_request__free_unpacked(req, NULL);
	return ret;
}

AUTH_HANDLER(auth_totp_disable)
{
	const Ward__Principal *p = env->principal;
	Ward__TotpCodeRequest *req;
	Ward__Empty out = WARD__EMPTY__INIT;
	uint8_t *secret = NULL;
	int64_t last = 0;
	bool enabled = false;
	const char *err = NULL;
	struct auth_settings s;
	struct auth_req r;
	char target[64];
	queue_result_t ret;
	int found, ok;

	memset(&s, 0, sizeof s);
	if (p == NULL || strcmp(p->kind, "user") != 0)
		return auth_problem(reply, 403, "Forbidden", "a user session is required");
	req = ward__totp_code_request__unpack(NULL, len, payload);
	if (req == NULL)
		return auth_problem(reply, 400, "Bad Request", "malformed request");
	if (auth_begin(&r, d, env, &err) < 0) {
		ward__totp_code_request__free_unpacked(req, NULL);
		return auth_fail(reply, "totp disable", err);
	}
	found = auth_totp_load(&r, p->id, &enabled, &secret, &last, &err);
	if (found < 0 || auth_settings_load(&r, &s, &err) < 0)
		goto fail;
	if (found == 0 || !enabled) {
		auth_rollback(&r);
		ret = auth_problem(reply, 409, "Conflict", "TOTP is not enabled");
		goto out;
	}
	if (s.require_2fa_staff && strcmp(p->role, "customer") != 0) {
		auth_rollback(&r);
		ret = auth_problem(reply, 409, "Conflict", "the tenant requires 2FA for staff");
		goto out;
	}
	ok = auth_totp_check(&r, p->id, secret, AUTH_TOTP_SECRET_LEN, last, req->code, &err);
	if (ok < 0)
		goto fail;
	if (ok == 0) {
		static const struct auth_rule_error bad = { "code", "is not a valid code" };

		auth_rollback(&r);
		ret = auth_problem_rules(reply, 422, "Unprocessable Content", &bad, 1);
		goto out;
	}
	snprintf(target, sizeof target, "user:%s", p->id);
	{
		const char *params[1] = { p->id };

		if (auth_exec(&r,
			      "UPDATE auth.users SET totp_enabled = false, totp_secret_enc = NULL, "
			      "totp_last_step = 0 WHERE id = $1",
			      1, params, &err) < 0 ||
		    auth_exec(&r, "DELETE FROM auth.recovery_codes WHERE user_id = $1", 1, params,
			      &err) < 0 ||
		    auth_audit(&r, "user", "2fa.disable", NULL, target, p->ip, "", &err) < 0 ||
		    auth_commit(&r, &err) < 0)
			goto fail;
	}
	ret = auth_reply(reply, &out.base);
	goto out;
fail:
	auth_rollback(&r);
	ret = auth_fail(reply, "totp disable", err);
out:
	auth_settings_free(&s);
	if (secret != NULL) {
		crypto_wipe(secret, AUTH_TOTP_SECRET_LEN);
		free(secret);
	}
	ward__totp_code_request__free_unpacked(req, NULL);
	return ret;
}
