-- 060_gdpr.sql — erasing one person's data (POST /api/v1/users/{id}/erase) without
-- breaking the audit hash chain.
--
-- auth.users.erased_at: when the account was erased; its row stays (tickets and
-- audit events keep the pseudonymous id) with nothing personal left in it.
--
-- Audit details: the chain used to hash the sealed detail itself (encoding
-- "ward-audit-event/1"), so erasing a detail would break verification. From this
-- migration on, new events use "ward-audit-event/2" (hash_version 2): the chain
-- covers detail_digest = SHA-256 of the sealed detail, stored in audit.events,
-- and the sealed detail lives beside the event in audit.event_details, which
-- ward-audit may DELETE (audit.events stays INSERT/SELECT only, append-only for
-- everybody). Verify checks a present detail against its digest; an erased one
-- leaves the digest, so the chain still verifies. Events written before this
-- migration keep version 1 (their hashes cannot be recomputed without the
-- detail): their details are kept and reported as such by an erase. Not erased
-- either: the other chained columns (actor/target hold the pseudonymous
-- "user:<id>", and the client IP address of events, which the chain covers).
--
-- Applied by the migration role in one transaction; grants from `ward-policy sql`.

ALTER TABLE auth.users ADD COLUMN erased_at timestamptz;

-- Adding columns with constant defaults rewrites nothing (no UPDATE trigger fires).
ALTER TABLE audit.events
	ADD COLUMN hash_version smallint NOT NULL DEFAULT 1 CHECK (hash_version IN (1, 2)),
	ADD COLUMN detail_digest bytea CHECK (detail_digest IS NULL OR length(detail_digest) = 32);
ALTER TABLE audit.events ADD CONSTRAINT events_v2_detail_beside CHECK (
	hash_version = 1 OR detail_enc IS NULL);

-- No tenant column of its own to trust: tenant_id repeats the event's for RLS and
-- backups. Deleting an event (retention purge) deletes its detail.
CREATE TABLE audit.event_details (
	event_id uuid PRIMARY KEY REFERENCES audit.events (id) ON DELETE CASCADE,
	tenant_id uuid,
	detail_enc bytea NOT NULL
);
CREATE INDEX event_details_tenant ON audit.event_details (tenant_id);

ALTER TABLE audit.event_details ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.event_details FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit.event_details
	USING (tenant_id IS NOT DISTINCT FROM NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id IS NOT DISTINCT FROM
		    NULLIF(current_setting('app.tenant_id', true), '')::uuid);

-- Who was erased, when (no personal data: the pseudonymous id only). Written by
-- ward-audit in the transaction that deletes the details; append-only. Verify
-- accepts a missing detail only on an event whose actor or target is listed here.
CREATE TABLE audit.erasures (
	tenant_id uuid NOT NULL,
	subject text NOT NULL CHECK (subject ~ '^user:[0-9a-f-]{36}$'),
	details bigint NOT NULL CHECK (details >= 0),
	at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX erasures_subject ON audit.erasures (tenant_id, subject);
CREATE TRIGGER erasures_append_only BEFORE UPDATE OR DELETE ON audit.erasures
	FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
ALTER TABLE audit.erasures ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.erasures FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit.erasures
	USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
