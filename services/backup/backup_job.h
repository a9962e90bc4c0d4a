/*
 * backup_job — the jobs of ward-backup: back up one tenant, list, verify, restore.
 * Each returns 0 with a JSON result (caller frees) or -1 with a message for a person.
 */
#ifndef WARD_BACKUP_JOB_H
#define WARD_BACKUP_JOB_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "backup.h"
#include "config.h"
#include "db.h"

struct daemon;

struct backup_conf {
	char *dir;	    /* local target: <dir>/<tenant_id>/<backup_id>/ */
	char *s3_endpoint;  /* off-site target (instead of dir): S3-compatible store */
	char *s3_bucket;    /* this region's bucket */
	char *s3_region;
	char *s3_access_key;
	struct conf_secret s3_secret_key;
	char *s3_ca_file;
	char *s3_credentials;  /* "static" (access_key + secret_key_file) or "instance" */
	char *s3_imds_endpoint; /* instance: the metadata service (tests: loopback) */
	int s3_retries;
	char *daily_at;	    /* "HH:MM", UTC */
	int chunk_kib;	    /* plaintext per chunk */
	int sort_mib;	    /* a table up to this size on disk is sorted in memory here */
	int retention_days; /* daily copies */
	int closed_days;    /* a closed tenant's keys and backups */
	char *scratch_dir;  /* point-in-time restores build clusters here (backup_wal.c) */
	char *pg_bin;	    /* pg_basebackup, pg_ctl */
};

/* Set on SIGTERM: a job stops at its next chunk with an error. */
extern atomic_int backup_cancel;

struct backup_ctx {
	db_t *db;
	const struct backup_conf *conf;
	const char *region;
	const uint8_t *kek;
	struct daemon *d; /* for the KEK ring (daemon_unwrap_key) */
	const char *actor; /* "operator:<name>" or "service:backup" */
	struct backup_target *target; /* where the objects are (backup.h) */
};

int backup_job_run(const struct backup_ctx *c, const char *tenant_id, const char *slug,
		   json_t **out_r, const char **error_r);
int backup_job_list(const struct backup_ctx *c, const char *tenant_id, json_t **out_r,
		    const char **error_r);
int backup_job_verify(const struct backup_ctx *c, const char *tenant_id, const char *backup_id,
		      int64_t to_ms, json_t **out_r, const char **error_r);
int backup_job_restore(const struct backup_ctx *c, const char *tenant_id, const char *backup_id,
		       int64_t to_ms, json_t **out_r, const char **error_r);
/* Retention: backups past retention_days (keeping each tenant's newest), and every
 * backup of a tenant closed for closed_days (its keys go too), as of now_ms (unix ms;
 * 0 = now). Each purge removes the objects from the target, then is audited. */
int backup_job_expire(const struct backup_ctx *c, int64_t now_ms, json_t **out_r,
		      const char **error_r);

#endif
