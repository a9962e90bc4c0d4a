-- 050_backup.sql — ward-backup's catalog and the tenant lifecycle (closure,
-- crypto-shredding, restore) as narrow functions.
--
-- Backups are logical: every row of one tenant, as row_to_json text (field ciphertext
-- stays ciphertext), read by ward_backup under row-level security. Neither ward_backup
-- nor ward_ops may write into other services' schemas; the few writes the lifecycle
-- needs (remove a closed tenant's live rows, put them back from a backup, destroy its
-- keys) are SECURITY DEFINER functions that check who calls them (session_user), what
-- tenant they touch, and nothing else. They live in schema tenant, where both roles
-- have USAGE (grants come from `ward-policy sql`).

-- What ward-backup has written: one row per backup (files under the target).
CREATE TABLE backup.backups (
	id text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
	tenant_id uuid NOT NULL,
	slug text NOT NULL,
	started_at timestamptz NOT NULL DEFAULT now(),
	finished_at timestamptz,
	dek_version int NOT NULL,
	chunks int NOT NULL DEFAULT 0,
	rows bigint NOT NULL DEFAULT 0,
	bytes bigint NOT NULL DEFAULT 0,
	status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed', 'purged')),
	verified_at timestamptz,
	verify_ok boolean
);
CREATE INDEX backups_tenant ON backup.backups (tenant_id, started_at);

-- The daily schedule: the last day a run started (one row).
CREATE TABLE backup.schedule (
	one boolean PRIMARY KEY DEFAULT true CHECK (one),
	last_day date NOT NULL
);

-- A closed tenant's wrapped DEKs, kept apart from tenant.keys (no live service reads
-- them) until restore brings them back, the 60 days pass, or --shred destroys them.
CREATE TABLE tenant.closed_keys (
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	version int NOT NULL CHECK (version > 0),
	wrapped bytea NOT NULL,
	kek_version int NOT NULL CHECK (kek_version > 0),
	created_at timestamptz NOT NULL,
	closed_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, version)
);
ALTER TABLE tenant.closed_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant.closed_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant.closed_keys
	USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

-- ------------------------------------------------------------------ reading
-- The tables that hold tenant rows (a tenant_id column, or tenant.tenants itself),
-- from the catalog so a new table is backed up without a change here. The keys are
-- not data: a backup is sealed under a key derived from them.
CREATE FUNCTION backup.tenant_tables() RETURNS TABLE (sch text, tbl text)
LANGUAGE sql STABLE AS $$
	SELECT n.nspname::text, c.relname::text
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind = 'r' AND n.nspname IN ('tenant', 'auth', 'ticket', 'audit')
	  AND (EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
			AND a.attname = 'tenant_id' AND NOT a.attisdropped)
	       OR (n.nspname = 'tenant' AND c.relname = 'tenants'))
	  AND NOT (n.nspname = 'tenant' AND c.relname IN ('keys', 'closed_keys'))
	  AND c.relname NOT IN ('outbox', 'processed')
	ORDER BY 1, 2
$$;

-- Every row of one table visible to the caller (row-level security applies: the
-- caller's transaction names the tenant), as JSON text in a stable order.
CREATE FUNCTION backup.dump_rows(p_schema text, p_table text) RETURNS SETOF text
LANGUAGE plpgsql STABLE SECURITY INVOKER AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM backup.tenant_tables() t
		       WHERE t.sch = p_schema AND t.tbl = p_table) THEN
		RAISE EXCEPTION 'not a tenant table: %.%', p_schema, p_table;
	END IF;
	RETURN QUERY EXECUTE format(
		'SELECT r FROM (SELECT row_to_json(t)::text AS r FROM %I.%I t) x '
		'ORDER BY r COLLATE "C"',
		p_schema, p_table);
END $$;

-- The cell's tenants (ward-backup's schedule needs them all; RLS would show none).
CREATE FUNCTION backup.tenants() RETURNS TABLE (id uuid, slug text, status text,
						closed_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
	IF session_user NOT IN ('ward_backup') THEN
		RAISE EXCEPTION 'backup.tenants: not for %', session_user
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	RETURN QUERY SELECT t.id, t.slug, t.status, t.closed_at FROM tenant.tenants t
		ORDER BY t.slug;
END $$;

-- Load rows into a scratch copy of a tenant table (a temporary table: dropped at
-- commit) and return their count and SHA-256 over the same text dump_rows gives.
CREATE FUNCTION backup.verify_rows(p_schema text, p_table text, p_rows jsonb)
RETURNS TABLE (n bigint, sha text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF session_user NOT IN ('ward_backup') THEN
		RAISE EXCEPTION 'backup.verify_rows: not for %', session_user
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM backup.tenant_tables() t
		       WHERE t.sch = p_schema AND t.tbl = p_table) THEN
		RAISE EXCEPTION 'not a tenant table: %.%', p_schema, p_table;
	END IF;
	DROP TABLE IF EXISTS pg_temp.ward_verify;
	EXECUTE format('CREATE TEMP TABLE ward_verify (LIKE %I.%I INCLUDING ALL) ON COMMIT DROP',
		       p_schema, p_table);
	EXECUTE format('INSERT INTO pg_temp.ward_verify SELECT * FROM jsonb_populate_recordset('
		       'NULL::%I.%I, $1)', p_schema, p_table) USING p_rows;
	RETURN QUERY SELECT count(*), encode(sha256(convert_to(coalesce(
			string_agg(r, E'\n' ORDER BY r COLLATE "C"), ''), 'UTF8')), 'hex')
		FROM (SELECT row_to_json(v)::text AS r FROM pg_temp.ward_verify v) x;
	DROP TABLE pg_temp.ward_verify;
END $$;

-- ------------------------------------------------------------------ lifecycle
-- Delete every live row of a tenant (not its audit log, which is append-only and
-- outlives the tenant, nor the tenant row, which keeps the closure date).
CREATE FUNCTION tenant.lifecycle_wipe(p_tenant uuid) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
	t record;
	n bigint := 0;
	k bigint;
BEGIN
	-- Foreign keys between the tenant's own tables need no order: all go.
	PERFORM set_config('session_replication_role', 'replica', true);
	FOR t IN SELECT * FROM backup.tenant_tables() WHERE sch <> 'audit'
			AND NOT (sch = 'tenant' AND tbl = 'tenants') LOOP
		EXECUTE format('DELETE FROM %I.%I WHERE tenant_id = $1', t.sch, t.tbl) USING p_tenant;
		GET DIAGNOSTICS k = ROW_COUNT;
		n := n + k;
	END LOOP;
	PERFORM set_config('session_replication_role', 'origin', true);
	RETURN n;
END $$;
REVOKE ALL ON FUNCTION tenant.lifecycle_wipe(uuid) FROM PUBLIC;

-- wardctl tenant delete: close the tenant, remove its live data at once, keep its
-- wrapped DEKs apart with the closure date. Returns the rows removed.
CREATE FUNCTION tenant.lifecycle_close(p_tenant uuid) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
	s text;
	n bigint;
BEGIN
	IF session_user NOT IN ('ward_ops') THEN
		RAISE EXCEPTION 'tenant.lifecycle_close: not for %', session_user
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	SELECT slug INTO s FROM tenant.tenants WHERE id = p_tenant AND status = 'active' FOR UPDATE;
	IF s IS NULL THEN
		RAISE EXCEPTION 'no active tenant %', p_tenant;
	END IF;
	INSERT INTO tenant.closed_keys (tenant_id, version, wrapped, kek_version, created_at)
		SELECT tenant_id, version, wrapped, kek_version, created_at FROM tenant.keys
		WHERE tenant_id = p_tenant AND wrapped IS NOT NULL;
	DELETE FROM tenant.keys WHERE tenant_id = p_tenant;
	n := tenant.lifecycle_wipe(p_tenant);
	UPDATE tenant.tenants SET status = 'closed', closed_at = now() WHERE id = p_tenant;
	DELETE FROM directory.tenants WHERE slug = s;
	RETURN n;
END $$;

-- wardctl tenant delete --shred: destroy every wrapped copy of the tenant's DEKs
-- (closing it first if it is still active). Every backup becomes unreadable.
CREATE FUNCTION tenant.lifecycle_shred(p_tenant uuid) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
	n bigint;
	k bigint;
BEGIN
	IF session_user NOT IN ('ward_ops') THEN
		RAISE EXCEPTION 'tenant.lifecycle_shred: not for %', session_user
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM tenant.tenants WHERE id = p_tenant) THEN
		RAISE EXCEPTION 'no tenant %', p_tenant;
	END IF;
	IF EXISTS (SELECT 1 FROM tenant.tenants WHERE id = p_tenant AND status = 'active') THEN
		PERFORM tenant.lifecycle_close(p_tenant);
	END IF;
	DELETE FROM tenant.closed_keys WHERE tenant_id = p_tenant;
	GET DIAGNOSTICS n = ROW_COUNT;
	-- The key history stays (which versions existed, when destroyed), never the bytes.
	UPDATE tenant.keys SET wrapped = NULL, destroyed_at = now()
		WHERE tenant_id = p_tenant AND wrapped IS NOT NULL;
	GET DIAGNOSTICS k = ROW_COUNT;
	RETURN n + k;
END $$;

-- Restore, step 1 (ward-backup, one transaction with steps 2 and 3): the tenant must
-- be closed with its keys kept; whatever is live of it is removed.
CREATE FUNCTION tenant.lifecycle_restore_begin(p_tenant uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
	IF session_user NOT IN ('ward_backup') THEN
		RAISE EXCEPTION 'tenant.lifecycle_restore_begin: not for %', session_user
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM tenant.tenants WHERE id = p_tenant AND status = 'closed'
			FOR UPDATE) THEN
		RAISE EXCEPTION 'tenant % is not closed: close it before restoring', p_tenant;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM tenant.closed_keys WHERE tenant_id = p_tenant) THEN
		RAISE EXCEPTION 'tenant % has no key left (shredded or purged)', p_tenant;
	END IF;
	PERFORM tenant.lifecycle_wipe(p_tenant);
END $$;

-- Restore, step 2: insert the rows of one table, every one of them the tenant's.
CREATE FUNCTION tenant.lifecycle_restore_rows(p_tenant uuid, p_schema text, p_table text,
					      p_rows jsonb) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
	n bigint;
	bad bigint;
BEGIN
	IF session_user NOT IN ('ward_backup') THEN
		RAISE EXCEPTION 'tenant.lifecycle_restore_rows: not for %', session_user
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM backup.tenant_tables() t
		       WHERE t.sch = p_schema AND t.tbl = p_table) THEN
		RAISE EXCEPTION 'not a tenant table: %.%', p_schema, p_table;
	END IF;
	-- The audit log and the tenant row outlive closure: nothing to put back.
	IF p_schema = 'audit' OR (p_schema = 'tenant' AND p_table = 'tenants') THEN
		RETURN 0;
	END IF;
	EXECUTE format('SELECT count(*) FILTER (WHERE tenant_id IS DISTINCT FROM $2) '
		       'FROM jsonb_populate_recordset(NULL::%I.%I, $1)', p_schema, p_table)
		INTO bad USING p_rows, p_tenant;
	IF bad > 0 THEN
		RAISE EXCEPTION 'restore of %.%: % rows of another tenant', p_schema, p_table, bad;
	END IF;
	PERFORM set_config('session_replication_role', 'replica', true);
	EXECUTE format('INSERT INTO %I.%I SELECT * FROM jsonb_populate_recordset(NULL::%I.%I, $1)',
		       p_schema, p_table, p_schema, p_table) USING p_rows;
	GET DIAGNOSTICS n = ROW_COUNT;
	PERFORM set_config('session_replication_role', 'origin', true);
	RETURN n;
END $$;

-- Restore, step 3: the keys go back, the tenant is active and in the directory again.
CREATE FUNCTION tenant.lifecycle_restore_end(p_tenant uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
	IF session_user NOT IN ('ward_backup') THEN
		RAISE EXCEPTION 'tenant.lifecycle_restore_end: not for %', session_user
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	DELETE FROM tenant.keys WHERE tenant_id = p_tenant;
	INSERT INTO tenant.keys (tenant_id, version, wrapped, kek_version, created_at)
		SELECT tenant_id, version, wrapped, kek_version, created_at FROM tenant.closed_keys
		WHERE tenant_id = p_tenant;
	DELETE FROM tenant.closed_keys WHERE tenant_id = p_tenant;
	UPDATE tenant.tenants SET status = 'active', closed_at = NULL WHERE id = p_tenant;
	INSERT INTO directory.tenants (slug, region)
		SELECT slug, region FROM tenant.tenants WHERE id = p_tenant
		ON CONFLICT (slug) DO NOTHING;
END $$;

-- Retention: a closed tenant's keys 60 days after closure (then every backup of it is
-- unreadable and its files are purged). Returns the tenants whose keys went.
CREATE FUNCTION tenant.lifecycle_expire(p_days int) RETURNS SETOF uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
	IF session_user NOT IN ('ward_backup') THEN
		RAISE EXCEPTION 'tenant.lifecycle_expire: not for %', session_user
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	RETURN QUERY DELETE FROM tenant.closed_keys
		WHERE closed_at < now() - make_interval(days => p_days) RETURNING tenant_id;
END $$;

-- The migration level, written into each manifest (ward_backup cannot read public).
-- The table is the migration runner's (ops/devstack, deploy.sh); made here too so
-- this migration applies wherever the runner is another one (tests).
CREATE TABLE IF NOT EXISTS public.schema_migrations (
	version text PRIMARY KEY,
	at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION backup.schema_version() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
	SELECT coalesce(max(version), '') FROM public.schema_migrations
$$;
