-- 010_auth.sql — ward-auth: sessions, password history, TOTP, recovery codes,
-- tenant security settings, API keys, OAuth clients and access tokens, login
-- throttling, SSO replay guard, and the slug lookup of tenant.resolve.
--
-- Applied by the migration role in one transaction (see 001). Grants come from
-- `ward-policy sql` afterwards (the auth role gets its whole schema).
-- Secrets are never stored: tokens, keys and client secrets only as SHA-256
-- (hex), recovery codes as keyed hashes, the TOTP secret and the SSO key sealed
-- under the tenant's DEK. Every table has row-level security on app.tenant_id.

ALTER TABLE auth.users
	ADD COLUMN password_changed_at timestamptz NOT NULL DEFAULT now(),
	ADD COLUMN totp_secret_enc bytea,
	ADD COLUMN totp_enabled boolean NOT NULL DEFAULT false,
	ADD COLUMN totp_last_step bigint NOT NULL DEFAULT 0,
	ADD COLUMN invitation_hash text UNIQUE CHECK (invitation_hash ~ '^[0-9a-f]{64}$'),
	ADD COLUMN invitation_expires_at timestamptz,
	ADD CONSTRAINT users_totp_secret CHECK (NOT totp_enabled OR totp_secret_enc IS NOT NULL);

CREATE TABLE auth.sessions (
	id uuid PRIMARY KEY,
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
	token_hash text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
	csrf_hash text NOT NULL CHECK (csrf_hash ~ '^[0-9a-f]{64}$'),
	ip text NOT NULL DEFAULT '',
	user_agent text NOT NULL DEFAULT '' CHECK (length(user_agent) <= 512),
	created_at timestamptz NOT NULL DEFAULT now(),
	last_seen_at timestamptz NOT NULL DEFAULT now(),
	revoked_at timestamptz
);
CREATE INDEX sessions_user ON auth.sessions (tenant_id, user_id) WHERE revoked_at IS NULL;

CREATE TABLE auth.password_history (
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
	password_hash text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX password_history_user ON auth.password_history (tenant_id, user_id, created_at);

CREATE TABLE auth.recovery_codes (
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
	code_hash text NOT NULL CHECK (code_hash ~ '^[0-9a-f]{64}$'),
	used_at timestamptz,
	PRIMARY KEY (tenant_id, user_id, code_hash)
);

-- One row per tenant; no row = the defaults (auth_policy_default, SSO off).
CREATE TABLE auth.settings (
	tenant_id uuid PRIMARY KEY REFERENCES tenant.tenants (id),
	min_length int NOT NULL DEFAULT 12 CHECK (min_length BETWEEN 8 AND 128),
	require_letter boolean NOT NULL DEFAULT true,
	require_digit boolean NOT NULL DEFAULT true,
	require_symbol boolean NOT NULL DEFAULT false,
	history int NOT NULL DEFAULT 5 CHECK (history BETWEEN 0 AND 24),
	max_age_days int NOT NULL DEFAULT 0 CHECK (max_age_days BETWEEN 0 AND 3650),
	require_2fa_staff boolean NOT NULL DEFAULT false,
	ip_allow text[] NOT NULL DEFAULT '{}',
	ip_allow_customers text[] NOT NULL DEFAULT '{}',
	sso_alg text NOT NULL DEFAULT '' CHECK (sso_alg IN ('', 'HS256', 'RS256')),
	sso_key_enc bytea,
	sso_enforce_agents boolean NOT NULL DEFAULT false,
	sso_create_customers boolean NOT NULL DEFAULT false,
	updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE auth.api_keys (
	id uuid PRIMARY KEY,
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
	prefix text NOT NULL,
	key_hash text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
	scopes text[] NOT NULL,
	allowed_cidrs text[] NOT NULL DEFAULT '{}',
	expires_at timestamptz,
	created_by text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	last_used_at timestamptz,
	revoked_at timestamptz
);

CREATE TABLE auth.oauth_clients (
	id uuid PRIMARY KEY,
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	client_id text NOT NULL UNIQUE,
	secret_hash text NOT NULL CHECK (secret_hash ~ '^[0-9a-f]{64}$'),
	name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
	scopes text[] NOT NULL,
	created_by text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	deleted_at timestamptz
);

CREATE TABLE auth.access_tokens (
	id uuid PRIMARY KEY,
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	client uuid NOT NULL REFERENCES auth.oauth_clients (id) ON DELETE CASCADE,
	token_hash text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
	scopes text[] NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	expires_at timestamptz NOT NULL,
	revoked_at timestamptz
);
CREATE INDEX access_tokens_expiry ON auth.access_tokens (expires_at);

-- Login failures per account ("acct:<email blind index>") and per source
-- ("ip:<address>"): a window of failures, then a lock until locked_until.
CREATE TABLE auth.login_failures (
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	key text NOT NULL CHECK (length(key) <= 200),
	failures int NOT NULL DEFAULT 0,
	window_start timestamptz NOT NULL DEFAULT now(),
	locked_until timestamptz,
	PRIMARY KEY (tenant_id, key)
);

-- SSO token ids already used (kept until the token would have expired anyway).
CREATE TABLE auth.jwt_seen (
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	jti_hash text NOT NULL CHECK (jti_hash ~ '^[0-9a-f]{64}$'),
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (tenant_id, jti_hash)
);

DO $$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['sessions', 'password_history', 'recovery_codes', 'settings',
				 'api_keys', 'oauth_clients', 'access_tokens', 'login_failures',
				 'jwt_seen'] LOOP
		EXECUTE format('ALTER TABLE auth.%I ENABLE ROW LEVEL SECURITY', t);
		EXECUTE format('ALTER TABLE auth.%I FORCE ROW LEVEL SECURITY', t);
		EXECUTE format('CREATE POLICY tenant_isolation ON auth.%I '
			       'USING (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')::uuid) '
			       'WITH CHECK (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')::uuid)',
			       t);
	END LOOP;
END $$;

-- tenant.resolve must find a tenant by its slug before it knows the tenant id,
-- which RLS on tenant.tenants forbids. This function answers exactly that
-- question (id, region, status of one slug) and nothing else; it runs as its
-- owner, the migration role. Only roles with USAGE on schema auth can reach it
-- (the sweep of `ward-policy sql` revokes schema rights from PUBLIC).
CREATE FUNCTION auth.tenant_by_slug(p_slug text)
	RETURNS TABLE (id uuid, region text, status text)
	LANGUAGE sql STABLE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS $$ SELECT t.id, t.region, t.status FROM tenant.tenants t WHERE t.slug = p_slug $$;
