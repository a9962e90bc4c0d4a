-- 065_keys.sql — DEK rotation (wardctl key rotate-dek).
--
-- A tenant's DEK versions are rows 1, 2, … of tenant.keys; the highest live one
-- seals, every live one opens what names it. Version 0 is not a DEK: it is the
-- tenant's blind-index root, HKDF-Extract of its first DEK (crypto_blind_root),
-- wrapped under the KEK with context "<tenant id>|blind-index". It is stored by the
-- first rotate-dek, before any DEK is destroyed, so every blind index (emails,
-- recovery codes, mail ids, request hashes — some of them one-way and impossible to
-- recompute) stays valid while the DEK that first derived it is destroyed; the root
-- opens nothing sealed. It follows the tenant like its DEKs: re-wrapped by
-- rotate-kek, moved to tenant.closed_keys on close, destroyed by --shred.
ALTER TABLE tenant.keys DROP CONSTRAINT keys_version_check;
ALTER TABLE tenant.keys ADD CONSTRAINT keys_version_check CHECK (version >= 0);
ALTER TABLE tenant.closed_keys DROP CONSTRAINT closed_keys_version_check;
ALTER TABLE tenant.closed_keys ADD CONSTRAINT closed_keys_version_check CHECK (version >= 0);
