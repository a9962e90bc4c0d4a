/*
 * gateway_routes_auth — the REST API of ward-auth (SPEC §4 auth rows) as rows of
 * the gateway's route table (format: gateway_routes.h; messages: proto/auth.proto
 * and proto/auth_patch.proto). Who may call what is decided by ward-auth's method
 * table (roles, API scopes), not here.
 *
 * Beyond SPEC §4's minimum: POST /api/v1/auth/invitation (set the first password
 * with an invitation token), GET/PUT /api/v1/settings/security (2FA requirement
 * and IP allow-lists), POST /api/v1/users/{id}/sessions/revoke (an admin ends
 * every session of a user) and POST /api/v1/oauth-tokens/revoke.
 * /oauth/token errors carry the RFC 6749 §5.2 code in the problem's title.
 * ROUTE_PENDING_OK marks the few routes a session that must change its password
 * or set up TOTP may use (the gateway refuses it every other route).
 */
#include "auth.pb-c.h"
#include "auth_patch.pb-c.h"
#include "gdpr.pb-c.h"
#include "gateway_routes.h"

#define AUTH_Q "q:auth"
#define KB 1024

const struct gateway_route gateway_routes_auth[] = {
	/* sessions */
	{ "POST", "/api/v1/auth/login", AUTH_Q, "auth.login", &ward__login_request__descriptor,
	  &ward__login_reply__descriptor, ROUTE_PUBLIC | ROUTE_SET_SESSION | ROUTE_LOGIN_RATE, 200,
	  4 * KB },
	{ "POST", "/api/v1/auth/logout", AUTH_Q, "auth.logout", &ward__empty__descriptor, NULL,
	  ROUTE_END_SESSION | ROUTE_PENDING_OK, 204, 1 * KB },
	{ "POST", "/api/v1/auth/password", AUTH_Q, "auth.password_change",
	  &ward__password_change_request__descriptor, &ward__session_renewal__descriptor,
	  ROUTE_PENDING_OK | ROUTE_SET_SESSION, 200, 4 * KB },
	{ "POST", "/api/v1/auth/invitation", AUTH_Q, "auth.invitation_accept",
	  &ward__invitation_accept_request__descriptor, NULL, ROUTE_PUBLIC | ROUTE_LOGIN_RATE, 204,
	  4 * KB },
	/* TOTP */
	{ "POST", "/api/v1/auth/totp/setup", AUTH_Q, "auth.totp_setup", &ward__empty__descriptor,
	  &ward__totp_setup_reply__descriptor, ROUTE_PENDING_OK, 200, 1 * KB },
	{ "POST", "/api/v1/auth/totp/confirm", AUTH_Q, "auth.totp_confirm",
	  &ward__totp_code_request__descriptor, &ward__totp_confirm_reply__descriptor,
	  ROUTE_PENDING_OK | ROUTE_SET_SESSION, 200, 1 * KB },
	{ "DELETE", "/api/v1/auth/totp", AUTH_Q, "auth.totp_disable",
	  &ward__totp_code_request__descriptor, NULL, 0, 204, 1 * KB },
	/* OAuth2 client credentials and SSO */
	{ "POST", "/oauth/token", AUTH_Q, "auth.token", &ward__token_request__descriptor,
	  &ward__token_reply__descriptor, ROUTE_PUBLIC | ROUTE_FORM | ROUTE_LOGIN_RATE, 200,
	  2 * KB },
	{ "GET", "/sso/jwt", AUTH_Q, "auth.sso_jwt", &ward__login_request__descriptor,
	  &ward__login_reply__descriptor,
	  ROUTE_PUBLIC | ROUTE_SET_SESSION | ROUTE_LOGIN_RATE | ROUTE_BROWSER, 200, 0 },
	/* settings */
	{ "GET", "/api/v1/settings/password-policy", AUTH_Q, "settings.password_policy_get",
	  &ward__empty__descriptor, &ward__password_policy__descriptor, 0, 200, 0 },
	{ "PUT", "/api/v1/settings/password-policy", AUTH_Q, "settings.password_policy_put",
	  &ward__password_policy__descriptor, &ward__password_policy__descriptor, 0, 200, 1 * KB },
	{ "GET", "/api/v1/settings/sso", AUTH_Q, "settings.sso_get", &ward__empty__descriptor,
	  &ward__sso_settings__descriptor, 0, 200, 0 },
	{ "PUT", "/api/v1/settings/sso", AUTH_Q, "settings.sso_put", &ward__sso_settings__descriptor,
	  &ward__sso_settings__descriptor, 0, 200, 16 * KB },
	{ "GET", "/api/v1/settings/security", AUTH_Q, "settings.security_get",
	  &ward__empty__descriptor, &ward__security_settings__descriptor, 0, 200, 0 },
	{ "PUT", "/api/v1/settings/security", AUTH_Q, "settings.security_put",
	  &ward__security_settings__descriptor, &ward__security_settings__descriptor, 0, 200,
	  6 * KB },
	/* API keys and OAuth clients */
	{ "POST", "/api/v1/api-keys", AUTH_Q, "api_keys.create",
	  &ward__api_key_create_request__descriptor, &ward__api_key__descriptor, 0, 201, 4 * KB },
	{ "GET", "/api/v1/api-keys", AUTH_Q, "api_keys.list", &ward__list_request__descriptor,
	  &ward__api_key_list__descriptor, 0, 200, 0 },
	{ "DELETE", "/api/v1/api-keys/{id}", AUTH_Q, "api_keys.revoke", &ward__id_request__descriptor,
	  NULL, 0, 204, 0 },
	{ "POST", "/api/v1/oauth-clients", AUTH_Q, "oauth_clients.create",
	  &ward__oauth_client_create_request__descriptor, &ward__oauth_client__descriptor, 0, 201,
	  4 * KB },
	{ "GET", "/api/v1/oauth-clients", AUTH_Q, "oauth_clients.list",
	  &ward__list_request__descriptor, &ward__oauth_client_list__descriptor, 0, 200, 0 },
	{ "DELETE", "/api/v1/oauth-clients/{id}", AUTH_Q, "oauth_clients.delete",
	  &ward__id_request__descriptor, NULL, 0, 204, 0 },
	{ "POST", "/api/v1/oauth-tokens/revoke", AUTH_Q, "oauth_tokens.revoke",
	  &ward__token_revoke_request__descriptor, NULL, 0, 204, 1 * KB },
	/* users */
	{ "POST", "/api/v1/users", AUTH_Q, "users.create", &ward__user_create_request__descriptor,
	  &ward__user_create_reply__descriptor, 0, 201, 4 * KB },
	{ "GET", "/api/v1/users", AUTH_Q, "users.list", &ward__list_request__descriptor,
	  &ward__user_list__descriptor, 0, 200, 0 },
	{ "GET", "/api/v1/users/me", AUTH_Q, "users.me", &ward__empty__descriptor,
	  &ward__user__descriptor, ROUTE_PENDING_OK, 200, 0 },
	{ "GET", "/api/v1/users/{id}", AUTH_Q, "users.get", &ward__id_request__descriptor,
	  &ward__user__descriptor, 0, 200, 0 },
	{ "PATCH", "/api/v1/users/{id}", AUTH_Q, "users.patch",
	  &ward__user_patch_request__descriptor, &ward__user__descriptor, 0, 200, 2 * KB },
	{ "POST", "/api/v1/users/{id}/sessions/revoke", AUTH_Q, "users.revoke_sessions",
	  &ward__id_request__descriptor, NULL, 0, 204, 0 },
	/* GDPR: ward-auth gathers ticket's and audit's parts (proto/gdpr.proto) */
	{ "GET", "/api/v1/users/{id}/export", AUTH_Q, "users.export",
	  &ward__gdpr_user_request__descriptor, &ward__gdpr_export_reply__descriptor,
	  ROUTE_RAW_REPLY, 200, 0 },
	{ "POST", "/api/v1/users/{id}/erase", AUTH_Q, "users.erase",
	  &ward__gdpr_user_request__descriptor, &ward__gdpr_erase_reply__descriptor, 0, 200, 1 * KB },
};

const size_t gateway_routes_auth_n = sizeof gateway_routes_auth / sizeof gateway_routes_auth[0];
