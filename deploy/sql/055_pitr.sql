-- 055_pitr.sql — point-in-time restore of one tenant into the live cell
-- (services/backup/backup_wal.c): ward-backup rebuilds the cell at a time in a
-- scratch cluster, reads the tenant's rows there, and in one transaction here
-- removes the tenant's live rows (this function) and puts back those rows
-- (tenant.lifecycle_restore_rows, as for a closed tenant), then closes what must
-- not come back from the past (tenant.lifecycle_pitr_end). The tenant row, its keys
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
	-- Credentials revoked in the live cell stay revoked once the past is back.
	DROP TABLE IF EXISTS pg_temp.ward_pitr_revoked;
	CREATE TEMP TABLE ward_pitr_revoked ON COMMIT DROP AS
		SELECT 'api_key'::text AS kind, id, revoked_at AS at FROM auth.api_keys
			WHERE tenant_id = p_tenant AND revoked_at IS NOT NULL
		UNION ALL
		SELECT 'oauth_client', id, deleted_at FROM auth.oauth_clients
			WHERE tenant_id = p_tenant AND deleted_at IS NOT NULL;
	RETURN tenant.lifecycle_wipe(p_tenant);
END $$;

-- After the rows are back: no session or access token of the past is valid (it may
-- have been logged out or revoked since; everyone signs in again), and API keys and
-- OAuth clients revoked in the live cell before the restore stay revoked. Returns the
-- sessions and tokens revoked.
CREATE FUNCTION tenant.lifecycle_pitr_end(p_tenant uuid) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	n bigint;
	k bigint;
BEGIN
	IF session_user NOT IN ('ward_backup') THEN
		RAISE EXCEPTION 'tenant.lifecycle_pitr_end: not for %', session_user
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	UPDATE auth.sessions SET revoked_at = now()
		WHERE tenant_id = p_tenant AND revoked_at IS NULL;
	GET DIAGNOSTICS n = ROW_COUNT;
	UPDATE auth.access_tokens SET revoked_at = now()
		WHERE tenant_id = p_tenant AND revoked_at IS NULL;
	GET DIAGNOSTICS k = ROW_COUNT;
	UPDATE auth.api_keys a SET revoked_at = r.at FROM pg_temp.ward_pitr_revoked r
		WHERE r.kind = 'api_key' AND a.id = r.id AND a.tenant_id = p_tenant
		  AND a.revoked_at IS NULL;
	UPDATE auth.oauth_clients o SET deleted_at = r.at FROM pg_temp.ward_pitr_revoked r
		WHERE r.kind = 'oauth_client' AND o.id = r.id AND o.tenant_id = p_tenant
		  AND o.deleted_at IS NULL;
	DROP TABLE pg_temp.ward_pitr_revoked;
	RETURN n + k;
END $$;
