-- 040_mail.sql — mail ingest on ward-ticket's side: Message-IDs and participants.
--
-- ticket.mail_ids: every Message-ID that entered a ticket (kind 'in') or that Ward
-- sent out for one (kind 'out', written by the outbound mailer). It threads
-- replies (In-Reply-To/References) and makes ingestion idempotent: a Message-ID
-- is taken once per tenant, so a mail redelivered, re-sent by a client or replayed
-- from mail-ingest's spool after a crash creates nothing twice. The Message-ID is
-- stored as a keyed blind index under the tenant's DEK (it can be personal data).
--
-- ticket.mail_participants: the senders and CCs of a ticket's mail (blind index of
-- the address). A "[#REF]" in a subject threads into a ticket only when the sender
-- is its requester or one of these; anyone else opens a new ticket.
-- Applied by the migration role in one transaction; grants from `ward-policy sql`.

CREATE TABLE ticket.mail_ids (
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	message_id_bidx text NOT NULL CHECK (message_id_bidx ~ '^[0-9a-f]{64}$'),
	kind text NOT NULL CHECK (kind IN ('in', 'out')),
	ticket_id uuid NOT NULL REFERENCES ticket.tickets (id) ON DELETE CASCADE,
	message_id uuid REFERENCES ticket.messages (id) ON DELETE CASCADE,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tenant_id, message_id_bidx)
);
CREATE INDEX mail_ids_ticket ON ticket.mail_ids (tenant_id, ticket_id);

CREATE TABLE ticket.mail_participants (
	tenant_id uuid NOT NULL REFERENCES tenant.tenants (id),
	ticket_id uuid NOT NULL REFERENCES ticket.tickets (id) ON DELETE CASCADE,
	email_bidx text NOT NULL CHECK (email_bidx ~ '^[0-9a-f]{64}$'),
	PRIMARY KEY (tenant_id, ticket_id, email_bidx)
);

ALTER TABLE ticket.mail_ids ENABLE ROW LEVEL SECURITY;
ALTER TABLE ticket.mail_ids FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ticket.mail_ids
	USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

ALTER TABLE ticket.mail_participants ENABLE ROW LEVEL SECURITY;
ALTER TABLE ticket.mail_participants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ticket.mail_participants
	USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
	WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
