-- 057_backup_restore_single_pass.sql — tenant.lifecycle_restore_rows reads its rows
-- once: only the tenant's rows are inserted, and if that is fewer than the backup
-- holds, the rest belonged to another tenant and the whole restore fails (the caller's
-- one transaction: nothing half-restored). Same checks, same result, same errors as
-- 050_backup.sql's version, which parsed every row twice (a count, then the insert).
CREATE OR REPLACE FUNCTION tenant.lifecycle_restore_rows(p_tenant uuid, p_schema text,
							 p_table text, p_rows jsonb) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
	n bigint;
	total bigint;
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
	total := jsonb_array_length(p_rows);
	PERFORM set_config('session_replication_role', 'replica', true);
	EXECUTE format('INSERT INTO %I.%I SELECT * FROM jsonb_populate_recordset(NULL::%I.%I, $1) r '
		       'WHERE r.tenant_id IS NOT DISTINCT FROM $2',
		       p_schema, p_table, p_schema, p_table) USING p_rows, p_tenant;
	GET DIAGNOSTICS n = ROW_COUNT;
	PERFORM set_config('session_replication_role', 'origin', true);
	IF n <> total THEN
		RAISE EXCEPTION 'restore of %.%: % rows of another tenant', p_schema, p_table,
			total - n;
	END IF;
	RETURN n;
END $$;
