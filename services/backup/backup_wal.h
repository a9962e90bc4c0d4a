/*
 * backup_wal — point-in-time recovery of a whole cell: the encrypted WAL archive,
 * the daily physical base backups and the scratch cluster rebuilt at a time.
 *
 * Layout in the backup target (keys of the storage functions below):
 *   cell/wal/<segment name>            "WARDWAL1" | crypto_seal(K, 1, aad, segment)
 *     aad = "ward-wal/1|<region>|<name>|<plain size>"
 *   cell/base/<backup_id>/chunk-NNNNNN  the pg_basebackup tar stream, sealed per chunk
 *   cell/base/<backup_id>/manifest      as a tenant backup (backup_format.c), with
 *                                        tenant "cell-<region>"
 * K = HKDF-SHA256(KEK, no salt, "ward backup cell v1|<region>"), the cell backup key;
 * a base backup's chunks are sealed under backup_key_derive(K, salt, "cell-<region>",
 * backup_id). A segment renamed, truncated, moved to another cell or swapped fails
 * its tag. Nothing is written in clear.
 *
 * Storage goes through backup_wal_store/fetch/list/remove only, over the cell's
 * backup target (backup_target.c): the S3 bucket when backup.s3 is configured, the
 * local directory (backup.dir) otherwise; keys are "cell/…".
 */
#ifndef WARD_BACKUP_WAL_H
#define WARD_BACKUP_WAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "backup_job.h"
#include "config.h"
#include "crypto.h"

#define BACKUP_WAL_MAGIC "WARDWAL1"
#define BACKUP_WAL_MAX (64 * 1024 * 1024) /* largest segment accepted */

/* ---- storage: the only place the target is touched (key = relative path) ---- */
/* The target of conf (S3 if backup.s3.endpoint is set, else backup.dir); NULL with a
 * message if none or both. Free with backup_target_free. */
struct backup_target *backup_wal_target(const struct backup_conf *conf, const char **error_r);
/* Write key, whole or not at all, verified by the target; 0 or -1. */
int backup_wal_store(struct backup_target *t, const char *key, const void *buf, size_t len,
		     const char **error_r);
/* Read key: 0, 1 if absent, -1 on error; *buf_r malloc'd. */
int backup_wal_fetch(struct backup_target *t, const char *key, size_t max, uint8_t **buf_r,
		     size_t *len_r, const char **error_r);
/* The names one level below prefix, sorted and unique; a JSON array of strings. */
int backup_wal_list(struct backup_target *t, const char *prefix, json_t **names_r,
		    const char **error_r);
/* Remove key: one object, or every object under key/ (a manifest first); 0 if gone. */
int backup_wal_remove(struct backup_target *t, const char *key, const char **error_r);

/* ---- the format ---- */
/* The cell backup key of region. */
int backup_wal_cell_key(const uint8_t kek[CRYPTO_KEY_LEN], const char *region,
			uint8_t key[CRYPTO_KEY_LEN]);
/* 1 if name is one PostgreSQL may archive (segment, .history, .backup, .partial). */
int backup_wal_name_ok(const char *name);
/* Seal a segment under the cell key of KEK version kek_version (recorded in the
 * sealed header, so that the segment opens after a KEK rotation); *out_r malloc'd. */
int backup_wal_seal(const uint8_t key[CRYPTO_KEY_LEN], uint32_t kek_version, const char *region,
		    const char *name, const void *pt, size_t len, uint8_t **out_r,
		    size_t *out_len_r);
/* The KEK version a sealed segment's cell key comes from; 0 or -1 (not a segment). */
int backup_wal_kek_version(const uint8_t *in, size_t in_len, uint32_t *version_r);
/* Open a sealed segment; -1 on any tampering; *out_r malloc'd. */
int backup_wal_open(const uint8_t key[CRYPTO_KEY_LEN], const char *region, const char *name,
		    const uint8_t *in, size_t in_len, uint8_t **out_r, size_t *out_len_r);
/* The segment holding lsn ("X/Y") on timeline tli, for seg_mib MiB segments. */
int backup_wal_segment_of(const char *lsn, unsigned tli, unsigned seg_mib, char out[25]);

/* ---- archive_command / restore_command: short-lived modes of ward-backup ---- */
/* `ward-backup wal-push PATH NAME --config FILE` and
 * `ward-backup wal-fetch NAME PATH --config FILE [--notes FILE]`: exit status. The
 * file is read with the daemon's table and ward-backup's (entries, into conf). */
int backup_wal_main(int argc, char **argv, const struct conf_entry *entries, size_t n,
		    struct backup_conf *conf);

/* ---- jobs of the daemon (JSON out, message for a person on failure) ---- */
/* Take a base backup now (pg_basebackup through the encryption). */
int backup_wal_base(const struct backup_ctx *c, const char *conninfo, const char *password,
		    json_t **out_r, const char **error_r);
/* Retention as of now_ms: base backups and WAL no longer needed to reach any time
 * in the last retention_days. */
int backup_wal_expire(const struct backup_ctx *c, int64_t now_ms, json_t **out_r,
		      const char **error_r);
/* Rebuild a scratch cluster at to_ms; with tenant_id, copy that tenant into the live
 * cell (c->db) and drop the scratch cluster; else leave it running and say where. */
int backup_wal_restore(const struct backup_ctx *c, const char *conninfo, const char *password,
		       const char *tenant_id, int64_t to_ms, json_t **out_r, const char **error_r);
/* Stop and remove the scratch cluster id. */
int backup_wal_scratch_drop(const struct backup_ctx *c, const char *id, json_t **out_r,
			    const char **error_r);
/* The binary and configuration restore_command runs with (set by main). */
void backup_wal_set_self(const char *config_path);

#endif
