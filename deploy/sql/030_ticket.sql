-- 030_ticket.sql — ward-ticket's tables: tickets, messages, attachments,
-- departments, the per-tenant ticket number, and the record of requests already
-- answered (Idempotency-Key and redelivered envelopes).
--
-- Every personal or customer-written value is a *_enc column: AES-256-GCM
-- ciphertext (crypto_seal) under the tenant's DEK with associated data
-- "<tenant_id>|ticket.<table>|<column>|<row id>", so a ciphertext copied to
-- another row, column or tenant fails to open. Email equality uses a blind index.
-- Applied by the migration role in one transaction (see 001_foundation.sql);
-- grants come from `ward-policy sql`. Every table has tenant_id and FORCE'd RLS.

CREATE TABLE ticket.departments (
	id uuid PRIMARY KEY,
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
	created_at timestamptz NOT NULL DEFAULT now(),
	UNIQUE (tenant_id, name)
);

-- The last ticket number given in each tenant (refs are "<SLUG>-<number>"). The
-- row lock taken by the increment also orders creations: numbers commit in order,
-- which keeps list cursors (keyed on the number) stable under concurrent inserts.
CREATE TABLE ticket.counters (
	tenant_id uuid PRIMARY KEY REFERENCES tenant.tenants (id),
	last_number bigint NOT NULL CHECK (last_number > 0)
);

CREATE TABLE ticket.tickets (
	id uuid PRIMARY KEY,
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	number bigint NOT NULL CHECK (number > 0),
	subject_enc bytea NOT NULL,
	status text NOT NULL DEFAULT 'open'
		CHECK (status IN ('open', 'pending', 'resolved', 'closed')),
	priority text NOT NULL DEFAULT 'normal'
		CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
	requester_id uuid,                -- the customer's user id, when known
	requester_email_enc bytea,
	requester_email_bidx text CHECK (requester_email_bidx ~ '^[0-9a-f]{64}$'),
	requester_name_enc bytea,
	assignee_id uuid,
	department_id uuid REFERENCES ticket.departments (id),
	created_by text NOT NULL,         -- "user:<id>", "api:<id>", "service:<name>"
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now(),
	UNIQUE (tenant_id, number),
	CHECK ((requester_email_enc IS NULL) = (requester_email_bidx IS NULL))
);
CREATE INDEX tickets_requester ON ticket.tickets (tenant_id, requester_id, number);
CREATE INDEX tickets_assignee ON ticket.tickets (tenant_id, assignee_id, number);
CREATE INDEX tickets_status ON ticket.tickets (tenant_id, status, number);
CREATE INDEX tickets_email ON ticket.tickets (tenant_id, requester_email_bidx);

-- seq orders a ticket's messages: writers hold the ticket's row lock, so a
-- ticket's messages commit in seq order (stable cursors).
CREATE TABLE ticket.messages (
	id uuid PRIMARY KEY,
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	ticket_id uuid NOT NULL REFERENCES ticket.tickets (id) ON DELETE CASCADE,
	seq bigserial NOT NULL,
	author_id text NOT NULL,
	author_role text NOT NULL,
	internal boolean NOT NULL DEFAULT false,
	body_enc bytea NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_ticket ON ticket.messages (tenant_id, ticket_id, seq);

CREATE TABLE ticket.attachments (
	id uuid PRIMARY KEY,
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	ticket_id uuid NOT NULL REFERENCES ticket.tickets (id) ON DELETE CASCADE,
	message_id uuid REFERENCES ticket.messages (id) ON DELETE CASCADE,
	filename_enc bytea NOT NULL,
	content_type text NOT NULL CHECK (content_type ~ '^[a-z]+/[a-z0-9.+-]+$'),
	size integer NOT NULL CHECK (size >= 0),
	content_enc bytea NOT NULL,
	created_by text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attachments_ticket ON ticket.attachments (tenant_id, ticket_id, created_at);

-- Requests with an effect, once answered: by envelope id (a redelivered envelope
-- gets the first answer again) and by Idempotency-Key per principal (a retried
-- POST gets the first result). request_hash is a keyed hash of the request body
-- (blind index under the DEK): the same key with another body is refused.
CREATE TABLE ticket.requests (
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	envelope_id text NOT NULL,
	principal text NOT NULL,
	idem_key text,
	request_hash text NOT NULL CHECK (request_hash ~ '^[0-9a-f]{64}$'),
	method text NOT NULL,
	result_id uuid NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, envelope_id),
	UNIQUE (tenant_id, principal, method, idem_key)
);

ALTER TABLE ticket.departments ENABLE ROW LEVEL SECURITY;
ALTER TABLE ticket.departments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ticket.departments
	USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE ticket.counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE ticket.counters FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ticket.counters
	USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE ticket.tickets ENABLE ROW LEVEL SECURITY;
ALTER TABLE ticket.tickets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ticket.tickets
	USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE ticket.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE ticket.messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ticket.messages
	USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE ticket.attachments ENABLE ROW LEVEL SECURITY;
ALTER TABLE ticket.attachments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ticket.attachments
	USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE ticket.requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE ticket.requests FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ticket.requests
	USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
