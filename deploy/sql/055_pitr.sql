-- 055_pitr.sql — point-in-time restore of one tenant into the live cell
-- (services/backup/backup_wal.c): ward-backup rebuilds the cell at a time in a
-- scratch cluster, reads the tenant's rows there, and in one transaction here
-- removes the tenant's live rows (this function) and puts back those rows
-- (tenant.lifecycle_restore_rows, as for a closed tenant). The tenant row, its keys
-- and its audit log stay as they are; no other tenant is touched.
CREATE FUNCTION tenant.lifecycle_pitr_begin(p_tenant uuid) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
	IF session_user NOT IN ('ward_backup') THEN
		RAISE EXCEPTION 'tenant.lifecycle_pitr_begin: not for %', session_user
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM tenant.tenants WHERE id = p_tenant AND status = 'active'
			FOR UPDATE) THEN
		RAISE EXCEPTION 'tenant % is not active: restore a closed tenant from its backups',
			p_tenant;
	END IF;
	RETURN tenant.lifecycle_wipe(p_tenant);
END $$;
