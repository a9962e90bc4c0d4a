-- 020_audit.sql — audit delivery (outboxes), the hash chain's columns, signed
-- checkpoints, per-tenant retention and the purge path.
--
-- Applied by the migration role in one transaction (see 001). Grants come from
-- `ward-policy sql` (deploy/policy.yaml) afterwards.

-- ------------------------------------------------------------------ outboxes
-- One per service with a database: written in the same transaction as the action
-- (auditlog_record), read and deleted by that daemon's relay once Redis accepted
-- the XADD to q:audit. No row-level security: the relay sends every tenant's
-- rows, and only the owning service's role can reach its schema. Rows live here
-- for about a second (longer only while Redis or ward-audit is down).
CREATE TABLE auth.outbox (
	seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id text NOT NULL UNIQUE CHECK (id ~ '^[0-9a-f]{32}$'),
	at_ms bigint NOT NULL,
	tenant_id text NOT NULL DEFAULT '',
	type text NOT NULL,
	action text NOT NULL,
	actor text NOT NULL,
	target text NOT NULL DEFAULT '',
	ip text NOT NULL DEFAULT '',
	request_id text NOT NULL DEFAULT '',
	detail_json text NOT NULL DEFAULT '',
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE ticket.outbox (LIKE auth.outbox INCLUDING ALL);
CREATE TABLE backup.outbox (LIKE auth.outbox INCLUDING ALL);

-- ------------------------------------------------------------------ events
-- seq: the event's position in its tenant's chain (1, 2, ...); prev_hash is the
-- hash of seq - 1 (NULL only for seq 1); hash = SHA-256 of the canonical encoding
-- (services/audit/audit_chain.c). One chain per tenant, and one for cell-wide
-- events (tenant_id NULL): NULLS NOT DISTINCT makes two writers racing for the
-- same position fail instead of forking the chain.
ALTER TABLE audit.events ADD COLUMN seq bigint NOT NULL CHECK (seq > 0);
ALTER TABLE audit.events ADD CONSTRAINT events_hash_len CHECK (length(hash) = 32);
ALTER TABLE audit.events ADD CONSTRAINT events_prev_hash CHECK (
	(seq = 1 AND prev_hash IS NULL) OR (prev_hash IS NOT NULL AND length(prev_hash) = 32));
CREATE UNIQUE INDEX events_chain ON audit.events (tenant_id, seq) NULLS NOT DISTINCT;
CREATE INDEX events_tenant_actor_at ON audit.events (tenant_id, actor, at);
CREATE INDEX events_tenant_type_at ON audit.events (tenant_id, type, at);

-- Signed checkpoints: (tenant, seq, hash of that event) signed with the key only
-- ward-audit holds, so a chain rewritten from scratch by someone with write access
-- to the database no longer matches.
CREATE TABLE audit.checkpoints (
	tenant_id uuid,
	seq bigint NOT NULL CHECK (seq > 0),
	hash bytea NOT NULL CHECK (length(hash) = 32),
	at timestamptz NOT NULL,
	alg text NOT NULL CHECK (alg IN ('hmac-sha256')),
	key_id text NOT NULL,
	signature bytea NOT NULL,
	UNIQUE NULLS NOT DISTINCT (tenant_id, seq)
);

-- What the retention purge removed: the chain restarts after upto_seq, whose hash
-- the next remaining event carries as prev_hash. Written by the purge role in
-- the transaction that deletes (the delete guard below checks it).
CREATE TABLE audit.purges (
	tenant_id uuid,
	upto_seq bigint NOT NULL CHECK (upto_seq > 0),
	upto_hash bytea NOT NULL CHECK (length(upto_hash) = 32),
	before timestamptz NOT NULL,
	count bigint NOT NULL CHECK (count > 0),
	at timestamptz NOT NULL DEFAULT now(),
	by_role name NOT NULL DEFAULT current_user,
	txid bigint NOT NULL DEFAULT txid_current()
);

-- Retention per tenant; no row = the default, 730 days (2 years).
CREATE TABLE audit.retention (
	tenant_id uuid PRIMARY KEY,
	days int NOT NULL CHECK (days BETWEEN 1 AND 36500),
	updated_at timestamptz NOT NULL DEFAULT now()
);

-- ------------------------------------------------------------------ append-only
-- UPDATE and TRUNCATE stay refused for everybody (001's refuse_change). DELETE
-- only for the dedicated purge role, and only in a transaction that has recorded
-- the purge in audit.purges first.
CREATE FUNCTION audit.guard_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF current_user = 'ward_audit_purge' AND EXISTS (
		SELECT 1 FROM audit.purges WHERE txid = txid_current()) THEN
		RETURN NULL;
	END IF;
	RAISE EXCEPTION 'audit.events is append-only (% refused)', TG_OP
		USING ERRCODE = 'insufficient_privilege';
END $$;
REVOKE ALL ON FUNCTION audit.guard_delete() FROM PUBLIC;
DROP TRIGGER events_no_update_delete ON audit.events;
CREATE TRIGGER events_no_update BEFORE UPDATE ON audit.events
	FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER events_guard_delete BEFORE DELETE ON audit.events
	FOR EACH STATEMENT EXECUTE FUNCTION audit.guard_delete();

CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON audit.checkpoints
	FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON audit.checkpoints
	FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER purges_append_only BEFORE UPDATE OR DELETE ON audit.purges
	FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER purges_no_truncate BEFORE TRUNCATE ON audit.purges
	FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- ------------------------------------------------------------------ row-level security
ALTER TABLE audit.checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit.checkpoints
	USING (tenant_id IS NOT DISTINCT FROM NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id IS NOT DISTINCT FROM
		    NULLIF(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE audit.purges ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.purges FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit.purges
	USING (tenant_id IS NOT DISTINCT FROM NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id IS NOT DISTINCT FROM
		    NULLIF(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE audit.retention ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit.retention FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit.retention
	USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
