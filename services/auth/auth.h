/*
 * auth.h — what the files of ward-auth share.
 *
 * Pure logic (no I/O, unit-tested by including the .c files): password policy and
 * the common-password list (auth_policy.c, auth_common_passwords.c), TOTP and
 * base32 (auth_totp.c), JWT verification (auth_jwt.c), CIDR allow-lists
 * (auth_cidr.c). Service code: the store (auth_store.c: tenant keys, settings,
 * replies, audit), sessions and logins (auth_session.c), administration
 * (auth_admin.c), the method table and config (auth_main.c).
 */
#ifndef WARD_AUTH_H
#define WARD_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

/* ============================== password policy ========================== */

#define AUTH_PASSWORD_MAX 1024 /* bytes; Argon2 takes more, but nobody types more */

struct auth_policy {
	int min_length;	  /* characters (UTF-8 code points), 8..128 */
	bool require_letter;
	bool require_digit;
	bool require_symbol;
	int history;	  /* refuse the last N passwords, 0..24 */
	int max_age_days; /* 0 = never expires, else 1..3650 */
};

/* The built-in policy of a tenant that never set one. */
extern const struct auth_policy auth_policy_default;

/* One broken rule, for a 422's errors[]. */
struct auth_rule_error {
	const char *field;
	const char *message; /* constant text */
};
#define AUTH_RULES_MAX 8

/* Check password against the policy's composition rules and the common list (not
 * history, which needs the stored hashes). Fills errs (up to AUTH_RULES_MAX) with
 * one entry per broken rule, each naming field; returns how many. */
size_t auth_policy_check(const struct auth_policy *pol, const char *field, const char *password,
			 struct auth_rule_error *errs);
/* 0 if the policy's values are within bounds, else -1 and errs filled (count in *n_r). */
int auth_policy_validate(const struct auth_policy *pol, struct auth_rule_error *errs, size_t *n_r);
/* 1 if password (compared case-insensitively) is one of the common passwords. */
int auth_password_is_common(const char *password);

extern const char *const auth_common_passwords[];
extern const size_t auth_common_passwords_n;

/* ============================== TOTP ===================================== */

#define AUTH_TOTP_SECRET_LEN 20 /* 160 bits, RFC 4226's recommendation for SHA-1 */
#define AUTH_TOTP_PERIOD 30
#define AUTH_TOTP_DIGITS 6
#define AUTH_TOTP_WINDOW 1 /* steps accepted either side of now (clock skew) */

/* RFC 4648 base32 without padding into out (cap bytes incl. NUL); -1 if too small. */
int auth_base32_encode(const uint8_t *in, size_t n, char *out, size_t cap);
/* Decode base32 (either case, no padding or spaces); -1 on any bad character,
 * impossible length, non-zero trailing bits or more than cap bytes. */
int auth_base32_decode(const char *in, uint8_t *out, size_t cap, size_t *n_r);
/* RFC 4226 HOTP, 6 digits. */
int auth_hotp(const uint8_t *key, size_t key_len, uint64_t counter, uint32_t *code_r);
/* RFC 6238 TOTP check of a 6-digit code at unix time now: accepted when it matches
 * a step within ±AUTH_TOTP_WINDOW of now that is later than last_step (a code is
 * accepted once). Returns 1 with *step_r set, 0 if refused, -1 on error. */
int auth_totp_verify(const uint8_t *key, size_t key_len, const char *code, int64_t now,
		     int64_t last_step, int64_t *step_r);
/* otpauth://totp/<issuer>:<account>?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30,
 * percent-encoded; -1 if it does not fit. */
int auth_totp_uri(const char *issuer, const char *account, const char *secret_b32, char *out,
		  size_t cap);

/* ============================== JWT ====================================== */

enum auth_jwt_alg { AUTH_JWT_NONE = 0, AUTH_JWT_HS256, AUTH_JWT_RS256 };

#define AUTH_JWT_MAX 8192
#define AUTH_JWT_SKEW 300 /* seconds: iat within ±5 min of now */

struct auth_jwt_key {
	enum auth_jwt_alg alg; /* fixed by config: the token's "alg" must equal it */
	const uint8_t *secret; /* HS256 */
	size_t secret_len;
	EVP_PKEY *pub; /* RS256: an RSA public key of at least 2048 bits */
};

struct auth_jwt_claims {
	char email[255];
	char jti[257];
	int64_t exp;
	int64_t iat;
};

/* Parse an "HS256"/"RS256" name; AUTH_JWT_NONE for anything else. */
enum auth_jwt_alg auth_jwt_alg_parse(const char *name);
/* Load a PEM RSA public key (≥ 2048 bits); NULL with *error_r otherwise. */
EVP_PKEY *auth_jwt_pubkey_load(const char *pem, size_t len, const char **error_r);
/* Verify a compact JWS: strict base64url, header alg equal to key->alg (so never
 * "none", never a switch), no "crit", the signature, then exp > now, iat within
 * ±AUTH_JWT_SKEW of now, nbf ≤ now + skew if present, jti and email present.
 * 0 with claims filled, or -1 and *error_r (a reason for logs, not for the client). */
int auth_jwt_verify(const struct auth_jwt_key *key, const char *token, int64_t now,
		    struct auth_jwt_claims *claims, const char **error_r);
/* Strict base64url without padding (RFC 7515 §2); exposed for tests. *out_r
 * malloc'd (+1, NUL-terminated). -1 on any bad input. */
int auth_b64url_decode(const char *in, size_t len, uint8_t **out_r, size_t *out_len_r);

/* ============================== CIDR ===================================== */

struct auth_cidr {
	int family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	int prefix;
};

/* Parse "a.b.c.d/n", "x::y/n" or a bare address (a /32 or /128). Host bits beyond the
 * prefix must be zero. 0 or -1. */
int auth_cidr_parse(const char *s, struct auth_cidr *out);
/* 1 if ip (an address, IPv4-mapped IPv6 counts as IPv4) is inside c, 0 if not or if
 * ip does not parse. */
int auth_cidr_match(const struct auth_cidr *c, const char *ip);
/* 1 if the list is empty or ip is inside one of the CIDRs, 0 otherwise (an entry that
 * does not parse matches nothing). */
int auth_cidr_list_allows(char *const *cidrs, size_t n, const char *ip);

/* ============================== service ================================== */

#include <protobuf-c/protobuf-c.h>

#include "auth.pb-c.h"
#include "daemon.h"

/* ward-auth's own config keys (section "auth:"), with defaults in auth_main.c. */
struct auth_conf {
	int argon2_t;	   /* iterations */
	int argon2_m_kib;  /* memory */
	int argon2_p;	   /* lanes */
	int lockout_account; /* failures per account within the window before a lock */
	int lockout_source;  /* failures per source address */
	int lockout_window_s;
	int lockout_s;	   /* lock duration */
	int idle_admin_s, idle_agent_s, idle_customer_s;
	int absolute_admin_s, absolute_agent_s, absolute_customer_s;
	int access_token_s;
	int invitation_s;
	int dek_cache_s;
	int authenticate_cache_ms;
	int recovery_codes; /* how many at TOTP confirm */
	char *issuer; /* otpauth issuer name */
};
extern struct auth_conf auth_conf;

#define AUTH_UUID_LEN 36
#define AUTH_EMAIL_MAX 254
#define AUTH_TOKEN_MAX 128

/* A tenant's settings row (defaults when absent). */
struct auth_settings {
	struct auth_policy policy;
	bool require_2fa_staff;
	char **ip_allow;
	size_t n_ip_allow;
	char **ip_allow_customers;
	size_t n_ip_allow_customers;
	enum auth_jwt_alg sso_alg;
	uint8_t *sso_key; /* opened; wiped on free */
	size_t sso_key_len;
	bool sso_enforce_agents;
	bool sso_create_customers;
};

/* The per-request context handlers share. */
struct auth_req {
	struct daemon *d;
	db_t *db;
	const Ward__Envelope *env;
	const char *tenant; /* env->tenant, a tenant uuid */
	uint8_t dek[32];
	bool have_dek;
	uint32_t dek_version;	/* the version of dek: the tenant's newest (auth_keys.c) */
	uint8_t blind_root[32]; /* the blind-index root (DEK version 0), if the tenant has one */
	bool have_root;
};

/* --- replies --- */
queue_result_t auth_problem(struct queue_reply *reply, int status, const char *title,
			    const char *detail);
queue_result_t auth_problem_rules(struct queue_reply *reply, int status, const char *title,
				  const struct auth_rule_error *errs, size_t n);
queue_result_t auth_problem_retry(struct queue_reply *reply, int status, const char *title,
				  int retry_after);
queue_result_t auth_reply(struct queue_reply *reply, const ProtobufCMessage *msg);
/* A transient failure (database down...): log, and answer 503 so the caller does not
 * wait for its deadline. */
queue_result_t auth_fail(struct queue_reply *reply, const char *what, const char *error);

/* --- requests --- */
/* Start a request: db handle, tenant, begin the tenant's transaction. -1 on error. */
int auth_begin(struct auth_req *r, struct daemon *d, const Ward__Envelope *env,
	       const char **error_r);
/* End one: commit (0/-1) or roll back; wipes the DEK. */
int auth_commit(struct auth_req *r, const char **error_r);
void auth_rollback(struct auth_req *r);
/* The tenant's DEK (cached briefly in memory, wiped on expiry). */
int auth_dek(struct auth_req *r, const char **error_r);
void auth_dek_cache_clear(void);
/* Seal/open a column value under the tenant's DEK, aad tenant|table|column|row. */
int auth_seal(struct auth_req *r, const char *table, const char *column, const char *row,
	      const void *pt, size_t len, uint8_t **out_r, size_t *out_len_r);
int auth_open(struct auth_req *r, const char *table, const char *column, const char *row,
	      const uint8_t *in, size_t len, uint8_t **out_r, size_t *out_len_r);
/* Blind index of a normalized email. */
int auth_email_bidx(struct auth_req *r, const char *email, char out[65]);
/* auth_keys.c — DEK rotation. The blind index of value for purpose: from the
 * tenant's blind-index root, or before any rotation from its only DEK. */
int auth_blind(struct auth_req *r, const char *purpose, const void *value, size_t len,
	       char out[65]);
/* The tenant's DEK of version (an older one, for opening), in r's transaction. */
int auth_dek_version(struct auth_req *r, uint32_t version, uint8_t dek[32], const char **error_r);
/* auth.rekey (wardctl key rotate-dek, operator): re-seal a batch of the tenant's
 * auth data under its newest DEK; replies ward.RekeyReply. */
queue_result_t auth_rekey(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			  size_t len, struct queue_reply *reply, const char **error_r);
/* Forget the cached keys of tenant (a rotation). */
void auth_dek_forget(const char *tenant);
/* Run one statement, result discarded. */
int auth_exec(struct auth_req *r, const char *sql, int n, const char *const *params,
	      const char **error_r);
/* Mark the envelope processed: 1 new, 0 redelivered, -1 error. */
int auth_mark(struct auth_req *r, const char **error_r);
/* Record an audit event in the transaction. actor/target may be NULL. */
int auth_audit(struct auth_req *r, const char *type, const char *action, const char *actor,
	       const char *target, const char *ip, const char *detail_json, const char **error_r);
/* "user:<id>" etc. of the envelope's principal. */
void auth_actor(const Ward__Envelope *env, char *out, size_t cap);
/* Load / free the tenant's settings. */
int auth_settings_load(struct auth_req *r, struct auth_settings *s, const char **error_r);
void auth_settings_free(struct auth_settings *s);
/* Is the sender the gateway (or one of the listed services)? */
bool auth_sender_is(const Ward__Envelope *env, const char *list);

/* --- secrets --- */
int auth_email_normalize(const char *email, char out[AUTH_EMAIL_MAX + 1]);
int auth_uuid_random(char out[AUTH_UUID_LEN + 1]);
int auth_uuid_valid(const char *s);
/* A new token "<prefix><64 hex>" and its SHA-256 hex. */
int auth_token_new(const char *prefix, char out[AUTH_TOKEN_MAX], char hash_hex[65]);
void auth_sha256_hex(const char *s, char out[65]);
/* Argon2id PHC string with the configured parameters; *hash_r malloc'd. */
int auth_password_hash(const char *password, char **hash_r);
/* 1 match, 0 no match (a NULL hash verifies against a dummy, same cost), -1 error. */
int auth_password_verify(const char *hash, const char *password);
/* 1 if hash was made with other parameters than the configured ones. */
int auth_password_needs_rehash(const char *hash);
int auth_password_init(void);
void auth_password_deinit(void);
/* Free a string after wiping it (NULL-safe). */
void auth_free_secret(char *s);

/* Users: the columns auth_user_fill reads, in order (prefix "u."). */
#define AUTH_USER_COLS                                                                          \
	"u.id, u.email_enc, u.name_enc, u.role, u.disabled, u.totp_enabled, "                  \
	"to_char(u.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "          \
	"u.must_change_password"
#define AUTH_USER_NCOLS 8
/* Fill u from row of res (columns AUTH_USER_COLS from col0); strings malloc'd,
 * free with auth_user_clear. 0 or -1. */
int auth_user_fill(struct auth_req *r, const PGresult *res, int row, int col0, Ward__User *u);
void auth_user_clear(Ward__User *u);
/* The opened bytea column of a row (malloc'd, NUL-terminated) or NULL. */
char *auth_open_column(struct auth_req *r, const PGresult *res, int row, int col,
		       const char *table, const char *column, const char *id);

/* A role's session timeouts. */
int auth_idle_s(const char *role);
int auth_absolute_s(const char *role);

/* --- method handlers (auth_session.c, auth_admin.c) --- */
#define AUTH_HANDLER(name)                                                                    \
	queue_result_t name(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload, \
			    size_t len, struct queue_reply *reply, const char **error_r)
AUTH_HANDLER(auth_tenant_resolve);
AUTH_HANDLER(auth_authenticate);
AUTH_HANDLER(auth_login);
AUTH_HANDLER(auth_sso_jwt);
AUTH_HANDLER(auth_logout);
AUTH_HANDLER(auth_password_change);
AUTH_HANDLER(auth_invitation_accept);
AUTH_HANDLER(auth_totp_setup);
AUTH_HANDLER(auth_totp_confirm);
AUTH_HANDLER(auth_totp_disable);
AUTH_HANDLER(auth_policy_get);
AUTH_HANDLER(auth_policy_put);
AUTH_HANDLER(auth_sso_get);
AUTH_HANDLER(auth_sso_put);
AUTH_HANDLER(auth_security_get);
AUTH_HANDLER(auth_security_put);
AUTH_HANDLER(auth_api_key_create);
AUTH_HANDLER(auth_api_key_list);
AUTH_HANDLER(auth_api_key_revoke);
AUTH_HANDLER(auth_oauth_client_create);
AUTH_HANDLER(auth_oauth_client_list);
AUTH_HANDLER(auth_oauth_client_delete);
AUTH_HANDLER(auth_token);
AUTH_HANDLER(auth_token_revoke);
AUTH_HANDLER(auth_user_create);
AUTH_HANDLER(auth_user_list);
AUTH_HANDLER(auth_user_get);
/* auth_gdpr.c */
AUTH_HANDLER(auth_user_export);
AUTH_HANDLER(auth_user_erase);
AUTH_HANDLER(auth_user_me);
AUTH_HANDLER(auth_user_patch);
AUTH_HANDLER(auth_user_revoke_sessions);
AUTH_HANDLER(auth_mail_customer); /* auth_mail.c */
AUTH_HANDLER(auth_mail_recipient);
AUTH_HANDLER(auth_mail_address);

#endif
