-- 045_mail_addresses.sql — the addresses a tenant receives mail at (SPEC §6).
--
-- <local part>@<slug>.<region>.<domain> reaches the tenant only for the local
-- parts listed here (lower case; "support" for every tenant until its operator
-- sets others with `wardctl mail addresses`). ward-mail-ingest asks ward-auth
-- (auth.mail_recipient) at RCPT time; anything else is refused (550 5.1.1).
-- Applied by the migration role in one transaction.

ALTER TABLE tenant.tenants ADD COLUMN mail_local_parts text[] NOT NULL DEFAULT '{support}'
	CHECK (cardinality(mail_local_parts) BETWEEN 1 AND 20
	       AND array_to_string(mail_local_parts, ',') ~ '^[a-z0-9][a-z0-9._+-]{0,63}(,[a-z0-9][a-z0-9._+-]{0,63})*$');
