-- 094_messages_inline_body — a message's sealed body stays in its row up to a
-- page (toast_tuple_target 8160, was about 2 KB): a mail's 4 KiB body was moved
-- to the TOAST table in three chunks, each with its TOAST index entry, after a
-- pglz compression attempt that could never succeed (AES-GCM output does not
-- compress). Measured on the dev stack: an INSERT of a 4 KiB message took about
-- half the time (tests/bench/mail.sh). Bodies past a page still go to TOAST,
-- uncompressed (STORAGE EXTERNAL: no futile pglz pass). Rows already stored
-- keep their place; only new rows are affected.
ALTER TABLE ticket.messages SET (toast_tuple_target = 8160);
ALTER TABLE ticket.messages ALTER COLUMN body_enc SET STORAGE EXTERNAL;
