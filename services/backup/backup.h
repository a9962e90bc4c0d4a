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
#include <time.h>

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
/* The same; durable 0: no fsync, only the writeback started (fsync it later). */
int backup_file_put(const char *path, const void *buf, size_t len, int durable);

/*
 * Targets: where backup objects are kept (backup_target.c). One interface over a
 * local directory (dev stack) and an S3-compatible object store (off-site; path-style
 * URLs, AWS SigV4 by libcurl, Content-MD5 and ETag checked on every PUT, transient
 * failures retried with exponential backoff). Keys are relative '/'-separated names
 * of [A-Za-z0-9._-] segments ("<tenant>/<backup>/chunk-000000"); objects are whole
 * or absent (local: temporary name + rename; S3: single PUT). A target is used by
 * one thread at a time. Every call returns 0 on success, -1 with a message for a
 * person in *error_r (valid until the next call on the same target); get also
 * returns 1 when the object does not exist.
 *
 * Usage (e.g. shipping a WAL segment):
 *   struct backup_target_conf tc = { .dir = "/var/lib/ward/backups" };
 *   struct backup_target *t = backup_target_new(&tc, &err);
 *   backup_target_put(t, "wal/000000010000000000000001", buf, len, &err);
 */
struct backup_target_conf {
	const char *dir;	   /* local: an absolute directory (used when no s3_endpoint) */
	const char *s3_endpoint;   /* "https://s3.eu-west-1.amazonaws.com", "http://127.0.0.1:port" */
	const char *s3_bucket;	   /* one bucket per region */
	const char *s3_region;	   /* SigV4 region, "eu-west-1" */
	const char *s3_access_key;
	const char *s3_secret_key;
	const char *s3_ca_file;	   /* NULL: the system's CAs */
	const char *s3_credentials; /* "static" (access_key + secret), "instance" (IMDSv2);
				       NULL: static */
	const char *s3_imds_endpoint; /* instance: NULL = http://169.254.169.254 */
	int retries;		   /* retries of a transient failure (0: none) */
	int timeout_s;		   /* per request (0: 300) */
};
struct backup_target;

struct backup_target *backup_target_new(const struct backup_target_conf *conf,
					const char **error_r);
void backup_target_free(struct backup_target *t); /* NULL-safe */
/* "local:<dir>" or "s3://<bucket>": names the target in messages and the catalog. */
const char *backup_target_name(const struct backup_target *t);
/* Store buf under key (replacing it), durably and verified. */
int backup_target_put(struct backup_target *t, const char *key, const void *buf, size_t len,
		      const char **error_r);
/* The same, except that a local target does not wait for the disk: the object is
 * whole or absent, but durable only once backup_target_sync returns 0 (an S3 PUT is
 * durable when it is answered). For many objects before one that names them. */
int backup_target_put_nosync(struct backup_target *t, const char *key, const void *buf,
			     size_t len, const char **error_r);
/* Make every object put with put_nosync since the last sync durable (one removed
 * since counts as done). */
int backup_target_sync(struct backup_target *t, const char **error_r);
/* Read key (at most max bytes); *buf_r malloc'd (caller frees). 1: no such object. */
int backup_target_get(struct backup_target *t, const char *key, size_t max, uint8_t **buf_r,
		      size_t *len_r, const char **error_r);
/* Every key starting with prefix ("" = all), unordered; free with backup_keys_free. */
int backup_target_list(struct backup_target *t, const char *prefix, char ***keys_r, size_t *n_r,
		       const char **error_r);
/* Remove key; a missing object counts as removed. */
int backup_target_delete(struct backup_target *t, const char *key, const char **error_r);
void backup_keys_free(char **keys, size_t n);
/* 1 if key is a valid object key. */
int backup_key_ok(const char *key);

/*
 * Instance credentials (backup_imds.c): the temporary keys of the instance's IAM role
 * from the EC2 instance metadata service, IMDSv2 only (a session token from
 * PUT /latest/api/token, then GET .../iam/security-credentials/[<role>] with it).
 * An S3 target with s3_credentials "instance" fetches them before its first request,
 * again 5 minutes before they expire, and at once after the store answers 403
 * ExpiredToken, InvalidToken or InvalidAccessKeyId; every request is signed with them
 * and carries the session token in X-Amz-Security-Token (signed too). Secrets are
 * never logged and are wiped when replaced.
 */
struct backup_creds {
	char access_key[129];
	char *secret; /* malloc'd; wiped by backup_creds_clear */
	char *token;  /* the session token (X-Amz-Security-Token); wiped likewise */
	time_t expires;
	char role[129];
};
/* Fetch the role's credentials from the metadata service at endpoint; each request
 * times out after timeout_ms. 0, or -1 with a message for a person in err. */
int backup_imds_fetch(const char *endpoint, long timeout_ms, struct backup_creds *c, char *err,
		      size_t errsize);
/* Check a credentials document of role (Code Success, the keys well-formed, not expired
 * at now) and copy it into c. 0, or -1 with a message (never quoting a secret). */
int backup_imds_parse(const char *json, size_t len, const char *role, time_t now,
		      struct backup_creds *c, char *err, size_t errsize);
/* Wipe and free c's secrets (NULL-safe fields; c reusable). */
void backup_creds_clear(struct backup_creds *c);

#endif
