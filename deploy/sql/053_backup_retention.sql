-- 053_backup_retention.sql — retention against a given clock: the closed tenants'
-- kept keys past p_days at p_now (wardctl backup prune --now TIME, for operators
-- and tests; the daily run passes now()). Same rule as tenant.lifecycle_expire.
CREATE FUNCTION tenant.lifecycle_expire_at(p_days int, p_now timestamptz) RETURNS SETOF uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
	IF session_user NOT IN ('ward_backup') THEN
		RAISE EXCEPTION 'tenant.lifecycle_expire_at: not for %', session_user
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	RETURN QUERY DELETE FROM tenant.closed_keys
		WHERE closed_at < p_now - make_interval(days => p_days) RETURNING tenant_id;
END $$;

-- Where each backup's objects are ("local:<dir>" or "s3://<bucket>"; NULL
-- for backups made before targets were recorded: the local directory). Verify,
-- restore and retention only touch the backups of the daemon's configured target.
ALTER TABLE backup.backups ADD COLUMN target text;
