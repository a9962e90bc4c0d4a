/*
 * daemon — the one skeleton every Ward daemon runs in (after Postfix's
 * single_server_main): argument parsing, config, logging, the refusal to run as
 * root, the event loop, signals, Redis and PostgreSQL handles, heartbeats, and
 * dispatch of queue messages to a table of methods.
 *
 * Lifecycle: parse --config → load config (common keys + the service's own) →
 * open log → refuse root → connect Redis (and PostgreSQL if configured, refused
 * for services that must hold no database credential) → svc->init → consume
 * q:<service> if the table has methods → run → SIGTERM: stop reading, finish the
 * message in hand, flush writes, svc->deinit, exit 0. SIGHUP reopens the log.
 * Every daemon answers "ping" on its queue.
 *
 * Workers (`workers: N` > 1, services with multi_worker): after the config is
 * loaded the process becomes a supervisor that forks N workers, each running the
 * lifecycle above as its own consumer (worker 0 keeps the configured instance name,
 * worker i is "<instance>-w<i>"; only worker 0 relays the audit outbox). The
 * supervisor holds no connection; it forwards SIGTERM/SIGINT/SIGHUP, restarts a
 * worker that dies, and exits when all have stopped (0 if each exited 0). Workers
 * die with the supervisor (PR_SET_PDEATHSIG SIGKILL), so kill -9 of the daemon's
 * pid is a crash of all of it: their pending entries are reclaimed as usual.
 */
#ifndef WARD_DAEMON_H
#define WARD_DAEMON_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "crypto.h"
#include "db.h"
#include "envelope.h"
#include "queue.h"

struct daemon_config {
	char *service;	 /* must equal the service's name */
	char *region;	 /* us, eu, uk */
	char *instance;	 /* default <service>-<pid> */
	char *log_level; /* default info */
	char *log_file;	 /* default stderr */
	char *redis_host;
	int redis_port;
	char *redis_user;
	struct conf_secret redis_password;
	struct conf_secret route_keys;
	char *pg_conninfo; /* absent for services without database */
	struct conf_secret pg_password;
	struct conf_secret kek; /* region KEK, only for services that need it */
	int heartbeat_seconds;
	int max_deliveries;
	int claim_idle_ms;
	int stream_maxlen;
	int read_count;
	int block_ms;
	int workers; /* worker processes (default 1: no fork); see daemon_service.multi_worker */
};

struct daemon;

/* A method answered on q:<service>: the one place its permission is stated. The
 * handler has the daemon, the opened envelope and its payload; it fills reply
 * (see queue.h). roles: NULL = any principal (including none), else a
 * space-separated list of allowed roles or principal kinds ("operator service
 * admin"). scope: the scope an API credential (principal kind "api") must hold;
 * NULL = API credentials may not call it. A principal of another tenant than the
 * envelope's is refused for every method with roles. */
struct daemon_method {
	const char *name;
	queue_result_t (*handler)(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
				  size_t len, struct queue_reply *reply, const char **error_r);
	const char *roles;
	size_t max_payload;
	const char *scope;
};

struct daemon_service {
	const char *name; /* "auth", "mail-ingest", … */
	/* Service-specific config keys, or NULL; target filled before init. */
	const struct conf_entry *conf;
	size_t n_conf;
	void *conf_target;
	const struct daemon_method *methods; /* answered on q:<name>; "ping" is built in */
	size_t n_methods;
	bool consumes;	/* reads q:<name> */
	bool needs_db;	/* must have postgres.conninfo */
	bool forbid_db; /* must not have one (gateway, mail-ingest) */
	bool needs_kek;
	/* Holds no route key (queue.route_keys_file refused): sends no envelope, answers
	 * none (ward-status, which reads health data only). */
	bool no_routes;
	/* May run as several worker processes (config `workers: N`): each is a consumer
	 * of its own in the same group, with its own connections. Only for services whose
	 * handlers are safe to run concurrently (every effect in one PostgreSQL
	 * transaction, exactly once by db_mark_processed). */
	bool multi_worker;
	/* Plan every prepared statement once (plan_cache_mode = force_generic_plan): for
	 * services whose statements use their indexes whatever the values (no optional
	 * filters written as "$1 IS NULL OR ..."); re-planning each execution was a
	 * quarter of PostgreSQL's CPU per request. */
	bool generic_plans;
	/* Schema of the audit outbox ("auth", "ticket", "backup") for services with a
	 * database: its relay (auditlog.h) runs from after init until shutdown. */
	const char *outbox_schema;
	int (*init)(struct daemon *d, const char **error_r);
	void (*deinit)(struct daemon *d);
	/* Called on SIGTERM before draining (close listeners). May be NULL. */
	void (*stop)(struct daemon *d);
};

/* Run the daemon; returns the process exit status. */
int daemon_main(int argc, char **argv, const struct daemon_service *svc);

struct event_base *daemon_base(struct daemon *d);
queue_t *daemon_queue(struct daemon *d);
db_t *daemon_db(struct daemon *d); /* NULL without database */
const struct daemon_config *daemon_config(struct daemon *d);
const uint8_t *daemon_kek(struct daemon *d); /* NULL unless needs_kek */
/* KEK rotation (wardctl key rotate-kek): the key ring's version of the current
 * KEK (0 without one); the KEK of a given version (re-reading the ring file when
 * it is missing), or NULL; unwrap a wrapped DEK with the KEK its header names. */
uint32_t daemon_kek_current(struct daemon *d);
const uint8_t *daemon_kek_version(struct daemon *d, uint32_t version);
int daemon_unwrap_key(struct daemon *d, const char *context, const uint8_t *wrapped,
		      size_t wrapped_len, uint8_t dek[CRYPTO_KEY_LEN], const char **error_r);
const struct daemon_service *daemon_service(struct daemon *d);
/* Ask the loop to stop as on SIGTERM (for a fatal condition found in a callback). */
void daemon_shutdown(struct daemon *d);

/* The common config table (exposed for wardctl and tests). */
extern const struct conf_entry daemon_conf_entries[];
extern const size_t daemon_conf_n;

#endif
