/*
 * backup — ward-backup's internals: the encrypted backup format and the jobs.
 *
 * A backup of one tenant is a directory <target>/<tenant_id>/<backup_id>/ holding
 *   chunk-000000, chunk-000001, …  crypto_seal(K, dek_version, aad, plaintext chunk)
 *     aad = "ward-backup/1|<tenant_id>|<backup_id>|chunk|<index>"
 *   manifest                       "WARDBKP1" | salt (32) |
 *                                  crypto_seal(K, dek_version, aad, manifest JSON)
 *     aad = "ward-backup/1|<tenant_id>|<backup_id>|manifest|<salt hex>"
 * with K = HKDF-SHA256(DEK, salt, "ward backup v1|<tenant_id>|<backup_id>"), the
 * DEK of version dek_version. The manifest lists every chunk's size and SHA-256
 * (of the file), the row count and SHA-256 of every table, the tenant, region,
 * times and schema version; a chunk swapped, truncated, reordered or moved to
 * another backup fails its hash or its tag. The plaintext stream is one line per
 * row, "<schema>.<table>\t<row_to_json text>\n" (field ciphertext stays ciphertext).
 * Destroying the DEK makes every backup of the tenant unreadable.
 */
#ifndef WARD_BACKUP_H
#define WARD_BACKUP_H

#include <stddef.h>
#include <stdint.h>

#include "crypto.h"

#define BACKUP_MAGIC "WARDBKP1"
#define BACKUP_MAGIC_LEN 8
#define BACKUP_SALT_LEN 32
#define BACKUP_ID_LEN 32
#define BACKUP_MANIFEST_MAX (16 * 1024 * 1024)
#define BACKUP_CHUNK_MAX (64 * 1024 * 1024)

/* The backup key of one backup. */
int backup_key_derive(const uint8_t dek[CRYPTO_KEY_LEN], const uint8_t salt[BACKUP_SALT_LEN],
		      const char *tenant_id, const char *backup_id, uint8_t key[CRYPTO_KEY_LEN]);
/* Seal chunk index; *out_r malloc'd (caller frees). */
int backup_chunk_seal(const uint8_t key[CRYPTO_KEY_LEN], uint32_t dek_version,
		      const char *tenant_id, const char *backup_id, uint32_t index,
		      const void *pt, size_t len, uint8_t **out_r, size_t *out_len_r);
/* Open chunk index; *out_r malloc'd (caller frees). -1 on any tampering. */
int backup_chunk_open(const uint8_t key[CRYPTO_KEY_LEN], const char *tenant_id,
		      const char *backup_id, uint32_t index, const uint8_t *in, size_t in_len,
		      uint8_t **out_r, size_t *out_len_r);
/* The manifest file's bytes: magic, salt, sealed JSON. *out_r malloc'd. */
int backup_manifest_seal(const uint8_t key[CRYPTO_KEY_LEN], uint32_t dek_version,
			 const uint8_t salt[BACKUP_SALT_LEN], const char *tenant_id,
			 const char *backup_id, const char *json, uint8_t **out_r,
			 size_t *out_len_r);
/* The salt and DEK version of a manifest file, read before the key is known. */
int backup_manifest_header(const uint8_t *in, size_t len, uint8_t salt[BACKUP_SALT_LEN],
			   uint32_t *dek_version_r);
/* Open a manifest file; *json_r malloc'd NUL-terminated JSON. */
int backup_manifest_open(const uint8_t key[CRYPTO_KEY_LEN], const char *tenant_id,
			 const char *backup_id, const uint8_t *in, size_t len, char **json_r);

/* Read a whole regular file of at most max bytes; *buf_r malloc'd. */
int backup_file_read(const char *path, size_t max, uint8_t **buf_r, size_t *len_r);
/* Create path (exclusive, 0600), write, fsync, close. */
int backup_file_write(const char *path, const void *buf, size_t len);

#endif
