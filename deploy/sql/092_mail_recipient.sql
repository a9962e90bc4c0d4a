-- 092_mail_recipient — auth.mail_recipient(slug, local part, region): the tenant
-- that <local>@<slug>.<region>.<domain> reaches, in one statement outside any
-- transaction (ward-auth's auth.mail_recipient, once per RCPT, used two read-only
-- transactions: auth.tenant_by_slug, then the tenant's local parts under its
-- row-level security). Like auth.tenant_by_slug it runs as its owner, the
-- migration role, and answers exactly that question and nothing else: the
-- tenant id when an active tenant of that region has the slug and lists the
-- local part (tenant.tenants.mail_local_parts), else NULL. Only roles with USAGE
-- on schema auth can reach it (the sweep of `ward-policy sql` revokes schema
-- rights from PUBLIC). Applied by the migration role in one transaction.
CREATE FUNCTION auth.mail_recipient(p_slug text, p_local text, p_region text)
	RETURNS uuid
	LANGUAGE sql STABLE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS $$ SELECT t.id FROM tenant.tenants t
	      WHERE t.slug = p_slug AND t.region = p_region AND t.status = 'active'
	        AND p_local = ANY (t.mail_local_parts) $$;
