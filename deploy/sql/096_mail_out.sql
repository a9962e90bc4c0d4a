-- 096_mail_out.sql — outbound mail (ward-mail-out): ward-ticket's mail outbox.
--
-- An agent's public reply on a ticket that has a requester is mailed to that
-- requester. In the reply's own transaction ward-ticket takes a random
-- Message-ID (recorded in ticket.mail_ids, kind 'out', as a blind index: a mail
-- answering it threads back into the ticket) and writes one row here: the whole
-- mail.send request (proto/mail.proto MailSendRequest: addresses, subject, body,
-- Message-ID) sealed under the tenant's DEK with the associated data
-- "<tenant>|ticket.mail_outbox|payload_enc|<id>". The daemon's outbox relay
-- (common/auditlog.c, the same one that relays ticket.outbox to q:audit) opens
-- it, sends it to q:mail-out and deletes the row once Redis has it: a crash
-- between commit and relay loses nothing (the row is swept again); a row sent
-- twice is mailed once (ward-mail-out remembers the Message-IDs it sent).
--
-- Like ticket.outbox, no row-level security and no tenant_id column: rows live
-- about a second, only ward-ticket's relay reads every tenant's rows, and the
-- table is no tenant table for backups (a restore must never mail again). No
-- foreign key either: a tenant closed meanwhile leaves a row the relay drops.
-- Applied by the migration role in one transaction; grants from `ward-policy sql`.

CREATE TABLE ticket.mail_outbox (
	seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id uuid NOT NULL UNIQUE,
	tenant uuid NOT NULL,
	payload_enc bytea NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);
