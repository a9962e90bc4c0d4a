/*
 * ward-auth — users, roles, passwords, sessions, 2FA, SSO, API credentials.
 *
 * Runs under the common skeleton (common/daemon.c): config, log, refusal of root,
 * its own Redis credentials and PostgreSQL role, heartbeat, clean SIGTERM.
 * Its methods on q:auth are the table below: the one place where each method's
 * permission is stated (roles, API scope; the dispatcher also refuses a principal
 * of another tenant). Methods with roles NULL are the gateway's own questions
 * (tenant.resolve, authenticate) and the public entry points (login, SSO, OAuth
 * token, invitation); their handlers accept only the gateway as sender.
 * Roles: admin ⊃ agent, so agent methods list both.
 */
#include <stddef.h>

#include "auth.h"

struct auth_conf auth_conf;

/* Argon2id: OWASP's minimum is m=19 MiB, t=2, p=1 (or m=46 MiB, t=1); the
 * bounds refuse anything weaker. */
static const struct conf_entry auth_conf_entries[] = {
	{ "auth.argon2_t", CONF_INT, offsetof(struct auth_conf, argon2_t), false, "3", 2, 10, NULL },
	{ "auth.argon2_m_kib", CONF_INT, offsetof(struct auth_conf, argon2_m_kib), false, "65536",
	  19456, 1048576, NULL },
	{ "auth.argon2_p", CONF_INT, offsetof(struct auth_conf, argon2_p), false, "1", 1, 16, NULL },
	{ "auth.lockout_account", CONF_INT, offsetof(struct auth_conf, lockout_account), false,
	  "5", 1, 1000, NULL },
	{ "auth.lockout_source", CONF_INT, offsetof(struct auth_conf, lockout_source), false, "20",
	  1, 100000, NULL },
	{ "auth.lockout_window_s", CONF_INT, offsetof(struct auth_conf, lockout_window_s), false,
	  "900", 1, 86400, NULL },
	{ "auth.lockout_s", CONF_INT, offsetof(struct auth_conf, lockout_s), false, "900", 1, 86400,
	  NULL },
	{ "auth.session_idle_admin_s", CONF_INT, offsetof(struct auth_conf, idle_admin_s), false,
	  "1800", 60, 86400, NULL },
	{ "auth.session_idle_agent_s", CONF_INT, offsetof(struct auth_conf, idle_agent_s), false,
	  "3600", 60, 86400, NULL },
	{ "auth.session_idle_customer_s", CONF_INT, offsetof(struct auth_conf, idle_customer_s),
	  false, "86400", 60, 2592000, NULL },
	{ "auth.session_absolute_admin_s", CONF_INT, offsetof(struct auth_conf, absolute_admin_s),
	  false, "43200", 300, 2592000, NULL },
	{ "auth.session_absolute_agent_s", CONF_INT, offsetof(struct auth_conf, absolute_agent_s),
	  false, "43200", 300, 2592000, NULL },
	{ "auth.session_absolute_customer_s", CONF_INT,
	  offsetof(struct auth_conf, absolute_customer_s), false, "604800", 300, 7776000, NULL },
	{ "auth.access_token_s", CONF_INT, offsetof(struct auth_conf, access_token_s), false, "900",
	  60, 86400, NULL },
	{ "auth.invitation_s", CONF_INT, offsetof(struct auth_conf, invitation_s), false, "604800",
	  300, 2592000, NULL },
	{ "auth.dek_cache_s", CONF_INT, offsetof(struct auth_conf, dek_cache_s), false, "60", 1, 3600,
	  NULL },
	{ "auth.authenticate_cache_ms", CONF_INT, offsetof(struct auth_conf, authenticate_cache_ms),
	  false, "2000", 0, 10000, NULL },
	{ "auth.recovery_codes", CONF_INT, offsetof(struct auth_conf, recovery_codes), false, "10",
	  10, 32, NULL },
	{ "auth.issuer", CONF_STR, offsetof(struct auth_conf, issuer), false, "Ward", 0, 0, NULL },
};

#define STAFF "admin agent"
#define ANYONE "admin agent customer"
#define KB 1024

static const struct daemon_method auth_methods[] = {
	/* the gateway's questions and the public entry points (sender checked) */
	{ "tenant.resolve", auth_tenant_resolve, NULL, 1 * KB, NULL },
	{ "auth.authenticate", auth_authenticate, NULL, 2 * KB, NULL },
	{ "auth.rekey", auth_rekey, "operator", 1 * KB, NULL },
	{ "auth.login", auth_login, NULL, 4 * KB, NULL },
	{ "auth.sso_jwt", auth_sso_jwt, NULL, 12 * KB, NULL },
	{ "auth.token", auth_token, NULL, 2 * KB, NULL },
	{ "auth.invitation_accept", auth_invitation_accept, NULL, 4 * KB, NULL },
	/* ward-mail-ingest: the account of a mail's sender (auth_mail.c) */
	{ "auth.mail_customer", auth_mail_customer, NULL, 2 * KB, NULL },
	{ "auth.mail_recipient", auth_mail_recipient, NULL, 1 * KB, NULL },
	/* ward-mail-out: the address of a ticket's requester (auth_mail.c) */
	{ "auth.mail_address", auth_mail_address, NULL, 1 * KB, NULL },
	/* the caller's own session */
	{ "auth.logout", auth_logout, ANYONE, 1 * KB, NULL },
	{ "auth.password_change", auth_password_change, ANYONE, 4 * KB, NULL },
	{ "auth.totp_setup", auth_totp_setup, ANYONE, 1 * KB, NULL },
	{ "auth.totp_confirm", auth_totp_confirm, ANYONE, 1 * KB, NULL },
	{ "auth.totp_disable", auth_totp_disable, ANYONE, 1 * KB, NULL },
	{ "users.me", auth_user_me, ANYONE, 1 * KB, "users:read" },
	/* tenant settings: admins only, never API credentials */
	{ "settings.password_policy_get", auth_policy_get, "admin", 1 * KB, NULL },
	{ "settings.password_policy_put", auth_policy_put, "admin", 1 * KB, NULL },
	{ "settings.sso_get", auth_sso_get, "admin", 1 * KB, NULL },
	{ "settings.sso_put", auth_sso_put, "admin", 20 * KB, NULL },
	{ "settings.security_get", auth_security_get, "admin", 1 * KB, NULL },
	{ "settings.security_put", auth_security_put, "admin", 8 * KB, NULL },
	/* API credentials: admins */
	{ "api_keys.create", auth_api_key_create, "admin", 4 * KB, NULL },
	{ "api_keys.list", auth_api_key_list, "admin", 1 * KB, NULL },
	{ "api_keys.revoke", auth_api_key_revoke, "admin", 1 * KB, NULL },
	{ "oauth_clients.create", auth_oauth_client_create, "admin", 4 * KB, NULL },
	{ "oauth_clients.list", auth_oauth_client_list, "admin", 1 * KB, NULL },
	{ "oauth_clients.delete", auth_oauth_client_delete, "admin", 1 * KB, NULL },
	{ "oauth_tokens.revoke", auth_token_revoke, "admin", 1 * KB, NULL },
	/* users: admins write, agents read */
	{ "users.create", auth_user_create, "admin", 4 * KB, "users:admin" },
	{ "users.list", auth_user_list, STAFF, 1 * KB, "users:read" },
	{ "users.get", auth_user_get, STAFF, 1 * KB, "users:read" },
	{ "users.patch", auth_user_patch, "admin", 2 * KB, "users:admin" },
	{ "users.revoke_sessions", auth_user_revoke_sessions, "admin", 1 * KB, "users:admin" },
	/* GDPR (auth_gdpr.c) */
	{ "users.export", auth_user_export, "admin", 1 * KB, "users:admin" },
	{ "users.erase", auth_user_erase, "admin", 1 * KB, "users:admin" },
};

/* Dummy hash for equal-time refusals. */
static int auth_init(struct daemon *d, const char **error_r)
{
	if (auth_password_init() < 0) {
		*error_r = "cannot compute the dummy password hash";
		return -1;
	}
	return 0;
}

/* Wipe what is cached. */
static void auth_deinit(struct daemon *d)
{
	auth_password_deinit();
	auth_dek_cache_clear();
}

static const struct daemon_service auth_service = {
	.name = "auth",
	.conf = auth_conf_entries,
	.n_conf = sizeof auth_conf_entries / sizeof auth_conf_entries[0],
	.conf_target = &auth_conf,
	.methods = auth_methods,
	.n_methods = sizeof auth_methods / sizeof auth_methods[0],
	.consumes = true,
	.multi_worker = true, /* handlers are one transaction each, exactly once */
	.generic_plans = true,
	.needs_db = true,
	.forbid_db = false,
	.needs_kek = true,
	.outbox_schema = "auth",
	.init = auth_init,
	.deinit = auth_deinit,
};

int main(int argc, char **argv)
{
	return daemon_main(argc, argv, &auth_service);
}
