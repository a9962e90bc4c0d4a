-- 001_foundation.sql — schemas, tenant directory, tenants and keys, users, audit log.
--
-- Applied by the cluster superuser (the migration role), which therefore owns every
-- table: no service role owns anything, so FORCE'd row-level security applies to all
-- of them. No BEGIN/COMMIT here: the runner applies each file in one transaction
-- (psql -1 -v ON_ERROR_STOP=1) together with its schema_migrations row.
-- Grants, service roles and the operator's cross-tenant read policies are not here:
-- `ward-policy sql` generates them from deploy/policy.yaml, run after the migrations.
--
-- Row-level security: every table with a tenant_id is visible and writable only for
-- the tenant named by the transaction's app.tenant_id (db_begin sets it with
-- set_config(..., true)); no setting means no rows.

CREATE SCHEMA directory;
CREATE SCHEMA tenant;
CREATE SCHEMA auth;
CREATE SCHEMA ticket;
CREATE SCHEMA audit;
CREATE SCHEMA backup;

-- The only cross-region data: slug -> home region. Nothing personal; one copy in
-- every cell, written by wardctl. No tenant_id, no RLS: every cell reads it all.
CREATE TABLE directory.tenants (
	slug text PRIMARY KEY CHECK (slug ~ '^[a-z0-9-]{3,40}$'),
	region text NOT NULL CHECK (region IN ('us', 'eu', 'uk')),
	created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenant.tenants (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9-]{3,40}$'),
	name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
	region text NOT NULL CHECK (region IN ('us', 'eu', 'uk')),
	status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
	created_at timestamptz NOT NULL DEFAULT now(),
	closed_at timestamptz,
	CHECK ((status = 'closed') = (closed_at IS NOT NULL))
);

-- Data-encryption keys, wrapped under the region KEK (crypto_wrap_key, context = id).
CREATE TABLE tenant.keys (
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	version int NOT NULL CHECK (version > 0),
	wrapped bytea,
	kek_version int NOT NULL CHECK (kek_version > 0),
	created_at timestamptz NOT NULL DEFAULT now(),
	destroyed_at timestamptz,
	PRIMARY KEY (tenant_id, version),
	-- crypto-shredding: a destroyed key keeps its row (history) but not its bytes
	CHECK ((destroyed_at IS NULL) = (wrapped IS NOT NULL))
);

CREATE TABLE auth.users (
	id uuid PRIMARY KEY,
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	email_enc bytea NOT NULL,
	email_bidx text NOT NULL CHECK (email_bidx ~ '^[0-9a-f]{64}$'),
	name_enc bytea,
	role text NOT NULL CHECK (role IN ('admin', 'agent', 'customer')),
	password_hash text,
	must_change_password boolean NOT NULL DEFAULT false,
	disabled boolean NOT NULL DEFAULT false,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now(),
	UNIQUE (tenant_id, email_bidx)
);

-- Envelope ids already handled: a redelivered message is a no-op (db_mark_processed).
CREATE TABLE auth.processed (id text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE ticket.processed (id text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE audit.processed (id text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE backup.processed (id text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());

-- Append-only, hash-chained. tenant_id NULL = a cell-wide event (no tenant). No
-- foreign key: events outlive the tenant row they describe.
CREATE TABLE audit.events (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	tenant_id uuid,
	at timestamptz NOT NULL DEFAULT now(),
	type text NOT NULL,
	action text NOT NULL,
	actor text NOT NULL,
	target text,
	ip text,
	request_id text,
	detail_enc bytea,
	prev_hash bytea,
	hash bytea NOT NULL
);
CREATE INDEX events_tenant_at ON audit.events (tenant_id, at);

-- No UPDATE, DELETE or TRUNCATE, whoever asks (grants already refuse service roles;
-- this also stops the owner and mistakes in migrations).
CREATE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'audit.events is append-only (% refused)', TG_OP
		USING ERRCODE = 'insufficient_privilege';
END $$;
REVOKE ALL ON FUNCTION audit.refuse_change() FROM PUBLIC;
-- Statement level, so even an UPDATE or DELETE that matches no row is refused.
CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON audit.events
	FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON audit.events
	FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- Row-level security, ENABLE + FORCE, keyed on app.tenant_id.
ALTER TABLE tenant.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant.tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant.tenants
	USING (id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE tenant.keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant.keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant.keys
	USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON auth.users
	USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

-- Cell-wide events (tenant_id NULL) belong to transactions with no tenant set.
ALTER TABLE audit.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit.events
	USING (tenant_id IS NOT DISTINCT FROM NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id IS NOT DISTINCT FROM
		    NULLIF(current_setting('app.tenant_id', true), '')::uuid);
