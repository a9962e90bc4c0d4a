/*
 * wardctl — the operator tool: shared configuration, output and cell access.
 *
 * Every command prints one JSON document on stdout (one per line for streams of
 * results), errors on stderr, and exits non-zero on failure.
 */
#ifndef WARD_WARDCTL_H
#define WARD_WARDCTL_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "db.h"

/* Regions are configuration: the config's top-level keys other than "domain" name
 * the cells, in file order (at most WARDCTL_REGIONS_MAX). WARDCTL_REGIONS is how many
 * the loaded configuration has; loops over regions use it as before. */
#define WARDCTL_REGIONS_MAX 16
#define WARDCTL_REGIONS wardctl_nregions
extern int wardctl_nregions;

/* One region cell as the operator reaches it. */
struct wardctl_cell {
	char *pg_conninfo;
	struct conf_secret pg_password;
	char *redis_host;
	int redis_port;
	char *redis_user;
	struct conf_secret redis_password;
	struct conf_secret route_keys;
	char *kek_file; /* a path: the KEK is raw bytes, loaded by crypto_key_load */
	int https_port;
	int smtp_port;
};

struct wardctl_conf {
	char *domain;
	struct wardctl_cell cell[WARDCTL_REGIONS_MAX];
};

/* The region names, in config order ("us", "eu", "uk", ...). */
extern const char *wardctl_regions[WARDCTL_REGIONS_MAX];

/* Index of a region name, or -1. */
int wardctl_region_index(const char *name);
/* *v_r = s if s is a decimal number from min to max; else -1. */
int wardctl_number(const char *s, long min, long max, long *v_r);
/* Load the configuration (--config, $WARD_CONFIG, var/wardctl.yaml). */
int wardctl_conf_load(const char *path, struct wardctl_conf *conf);
void wardctl_conf_free(struct wardctl_conf *conf);
/* Connect to a cell's database as the operator role; NULL after printing an error. */
db_t *wardctl_db(const struct wardctl_conf *conf, int region);

/* Print a JSON value on stdout, one line; 0 or -1. Takes no ownership. */
int wardctl_print(const json_t *value);
/* Print "wardctl: " + message on stderr. */
void wardctl_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Commands: argc/argv start at the command's own name. Return the exit status. */
int wardctl_tenant(const struct wardctl_conf *conf, int argc, char **argv);
int wardctl_ping(const struct wardctl_conf *conf, int argc, char **argv);
int wardctl_audit(const struct wardctl_conf *conf, int argc, char **argv);
int wardctl_backup(const struct wardctl_conf *conf, int argc, char **argv);
/* wardctl_backup.c, shared with wardctl_pitr.c: a request to ward-backup (prints
 * its JSON answer; exit status), and TIME (RFC 3339 UTC or unix ms) to unix ms. */
typedef struct Ward__BackupRequest Ward__BackupRequest;
int wardctl_backup_call(const struct wardctl_conf *conf, int region, const char *method,
			const Ward__BackupRequest *req, int timeout_ms);
int wardctl_parse_time(const char *s, int64_t *ms_r);
/* The options of the backup commands as given (wardctl_backup.c, wardctl_pitr.c). */
struct wardctl_backup_args {
	const char *region, *tenant, *backup, *to, *now, *id;
	bool unknown; /* an option that is none of these */
};
/* Parse argv (argv[0] the command) into a. strict: --id is not one of them, and an
 * unknown option is reported by getopt and ends the parse with -1; else quiet, it
 * only sets a->unknown. optind is left after the options, as by getopt. */
int wardctl_backup_args(int argc, char **argv, bool strict, struct wardctl_backup_args *a);

/* wardctl_request.c: requests to a cell's services over their queues. */
/* The operator's name: $USER if it looks like a name, else "ops". */
const char *wardctl_operator(void);

/* A queue connection to one cell as the operator ("ops" user, its route keys). */
struct wardctl_queue {
	struct event_base *base;
	struct queue *q;
};

/* One request: its message, where it goes, what its reply is. */
struct wardctl_call {
	const char *dest;     /* the service's stream, "q:audit" */
	const char *method;   /* also the prefix of every error printed */
	const char *tenant;   /* tenant id, or NULL / "" */
	const ProtobufCMessage *request;
	const ProtobufCMessageDescriptor *reply; /* what the reply unpacks to */
	size_t reply_max;     /* a longer reply is malformed */
	int timeout_ms;
	const char *service;  /* in "timed out (is SERVICE running?)" */
	bool error_status;    /* "error STATUS: reason" for the service's errors */
};

/* Connect to region's Redis; with dest, first check that the route keys may seal to
 * it. 0, or -1 after printing. */
int wardctl_queue_open(const struct wardctl_conf *conf, int region, const char *dest,
		       struct wardctl_queue *wq);
/* Close what wardctl_queue_open opened (also after it failed). */
void wardctl_queue_close(struct wardctl_queue *wq);
/* Send call as the operator and wait for its reply: 0 with *reply_r unpacked (the
 * caller frees it with protobuf_c_message_free_unpacked), or -1 after printing why. */
int wardctl_queue_call(struct wardctl_queue *wq, const struct wardctl_call *call,
		       ProtobufCMessage **reply_r);
/* The same on a connection of its own to region. */
int wardctl_request(const struct wardctl_conf *conf, int region, const struct wardctl_call *call,
		    ProtobufCMessage **reply_r);

/* wardctl_tenant.c: the id (and with status, the status) of tenant slug homed in
 * region, active or closed; 0, or -1 after printing. */
int wardctl_tenant_find(const struct wardctl_conf *conf, int region, const char *slug,
			char id[40], char status[16]);

/* wardctl_key.c: insert a tenant's key (version; 0 = the blind-index root), wrapped
 * under KEK kek_version, into tenant.keys in the caller's transaction; 0 or -1. */
int wardctl_key_store(db_t *db, const char *tenant, uint32_t version, const uint8_t *wrapped,
		      size_t wrapped_len, uint32_t kek_version, const char **error_r);

/* Record an operator action in region's audit log (q:audit, ops route), confirmed
 * by Redis; 0 or -1 with *error_r. tenant_id NULL or "" for cell-wide actions. */
int wardctl_audit_record(const struct wardctl_conf *conf, int region, const char *tenant_id,
			 const char *type, const char *action, const char *target,
			 const char *detail_json, const char **error_r);

/* Audit retention (wardctl_audit_purge.c), as the ward_audit_purge role. */
int wardctl_audit_retention(const struct wardctl_conf *conf, int region, const char *tenant,
			    long days);
int wardctl_audit_purge(const struct wardctl_conf *conf, int region, const char *tenant,
			const char *as_of);

/* Help texts, printed before the config is loaded. */
extern const char wardctl_tenant_usage[];
extern const char wardctl_ping_usage[];
extern const char wardctl_audit_usage[];
extern const char wardctl_backup_usage[];

#endif
