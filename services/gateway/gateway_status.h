/*
 * gateway_status — the deployment's public status page (SPEC §7), served by
 * ward-status (services/status/), its own process on its own listener
 * (status.<domain>), whose only Redis credentials are each cell's read-only "status"
 * user; and the answer counters every tenant gateway publishes for it.
 *
 * gateway_status_model.c	pure: component states from health data, 90-day
 *				uptime records, incidents, Statuspage v2 JSON, Atom, HTML
 * gateway_status.c		listener, poller (each cell's Redis as the read-only
 *				"status" user), routing
 *
 * The page reads only health data (hb:* keys, queue lengths, dead letters); it
 * holds no tenant data and no credential that reaches tenant data.
 */
#ifndef WARD_GATEWAY_STATUS_H
#define WARD_GATEWAY_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "config.h"

#define STATUS_REGIONS_MAX 16
#define STATUS_REGION_MAX 15
#define STATUS_SERVICES 7   /* gateway auth ticket mail-ingest audit backup mail-out */
#define STATUS_COMPONENTS 7 /* api web email auth tickets audit backups */
#define STATUS_DAYS 90
#define STATUS_DAY_MS 86400000LL
#define STATUS_INCIDENTS_MAX 200
#define STATUS_TEXT_MAX 4096   /* operator text: name or update body */
#define STATUS_UPDATES_MAX 50  /* updates per incident */

/* The uptime lease and the owner's published records (gateway_status.c), in the
 * status page's home cell: keys of the status user's own (hb:status:*; its
 * heartbeats are hb:status:<instance>, an instance name has no colon). */
#define STATUS_LEASE_KEY "hb:status:uptime:owner"
#define STATUS_UPTIME_KEY "hb:status:uptime:records"

/* The status page's config keys (status.* in ward-status's file). */
struct gateway_status_config {
	char *listen;		       /* NULL: no status page on this gateway */
	char *cert_file;
	struct conf_secret key;
	char *state_dir;	       /* uptime records */
	struct conf_list cells;	       /* "us 127.0.0.1 6379 /path/redis-status" */
	char *user;		       /* Redis ACL user, default "status" */
	char *page_name;
	int poll_ms;
	int heartbeat_timeout_ms;
	int pending_high;	       /* a queue's depth (waiting + pending) above: degraded */
	int dead_letter_window_s;      /* a new dead letter within: degraded */
	int backup_max_age_s;	       /* last verified backup older: degraded */
	int error_window_s;	       /* the gateways' 5xx rate over this window: */
	int error_rate_pct;	       /*   at least this % of answers: degraded */
	int error_major_pct;	       /*   at least this %: partial outage */
	int error_min;		       /*   and at least this many 5xx */
};

enum status_state {
	STATUS_OPERATIONAL = 0,
	STATUS_DEGRADED = 1,
	STATUS_PARTIAL = 2,
	STATUS_MAJOR = 3,
	STATUS_MAINTENANCE = 4,
};

extern const char *const status_service_names[STATUS_SERVICES];
extern const char *const status_component_ids[STATUS_COMPONENTS];
extern const char *const status_component_names[STATUS_COMPONENTS];

/* One service of one cell, as a poll saw it. */
struct status_svc {
	int instances;		/* fresh heartbeats */
	bool db_down;		/* an instance reports its database down */
	bool outbox_degraded;	/* hb:<svc>:audit-outbox says so */
	bool dead_letter_recent; /* dl:<svc> grew within the window */
	long long depth;	 /* XLEN q:<svc>: entries not handled yet (its consumers
				  * delete what they ack), -1 unknown */
	long long pending;	 /* of those, delivered and not acked (XPENDING), -1 unknown */
};

/* One cell, as a poll saw it. */
struct status_cell {
	char region[STATUS_REGION_MAX + 1];
	bool reachable;
	struct status_svc svc[STATUS_SERVICES];
	bool audit_backlog_degraded;
	long long backup_verified_ms; /* 0: never reported */
	bool backup_verify_failed;    /* the latest verify of the cell failed */
	/* The gateways' HTTPS answers (hb:gateway:<instance>:http, cumulative per
	 * instance, summed over the fresh ones) and, over the error window, how many
	 * answers and how many 5xx (the poller's difference of two samples). */
	long long http_answers, http_5xx;
	long long window_answers, window_5xx;
	int window_s; /* the window the gateways published (0: none published) */
};

struct status_thresholds {
	long long pending_high;
	long long backup_max_age_ms;
	int error_rate_pct, error_major_pct; /* 0: error rate not used */
	long long error_min;
};

/* Component states of a cell from its health data. */
void status_evaluate(const struct status_cell *c, const struct status_thresholds *t,
		     long long now_ms, enum status_state out[STATUS_COMPONENTS]);
/* The count in a hiredis reply to XLEN (an integer) or to XPENDING's summary form
 * (its first element), -1 for anything else (an error, no such group). */
struct redisReply;
long long status_reply_count(const struct redisReply *r);
/* A gateway's hb:gateway:<instance>:http value: at_ms, answers and 5xx since start,
 * window_s and the answers and 5xx over it (0 from a gateway that publishes none).
 * 0, or -1 if malformed. */
int status_http_parse(const json_t *o, long long *at_r, long long *answers_r, long long *errors_r,
		      long long *window_s_r, long long *window_answers_r, long long *window_5xx_r);
/* Why status_evaluate put component comp where it is: up to max sentences for an
 * operator ("heartbeat missing: …", "queue depth: …", "error rate: …", "last
 * verified backup: …"), each at most STATUS_REASON_MAX bytes; none when
 * operational. Returns how many. */
#define STATUS_REASON_MAX 160
int status_explain(const struct status_cell *c, const struct status_thresholds *t, long long now_ms,
		   int comp, char (*out)[STATUS_REASON_MAX], int max);
/* The status.* defaults (gateway_main.c's config table) for readers without the
 * status page's config (wardctl status components). */
#define STATUS_DEFAULT_HEARTBEAT_TIMEOUT_MS 15000
#define STATUS_DEFAULT_PENDING_HIGH 1000
#define STATUS_DEFAULT_BACKUP_MAX_AGE_S 93600
#define STATUS_DEFAULT_ERROR_RATE_PCT 5
#define STATUS_DEFAULT_ERROR_MAJOR_PCT 50
#define STATUS_DEFAULT_ERROR_MIN 10
/* A heartbeat value (JSON) → its service index and whether it is fresh; -1 if not one. */
int status_heartbeat_parse(const char *json, size_t len, long long now_ms, long long timeout_ms,
			   bool *fresh_r, bool *db_down_r);
const char *status_state_name(enum status_state s); /* "operational", … */
int status_service_index_of(const char *s);	    /* "auth" or "auth:…" → 1 */

/* ----------------------------------------------------------------- uptime */
struct status_uptime;
struct status_uptime *status_uptime_new(void);
void status_uptime_free(struct status_uptime *u);
/* Account [from_ms, to_ms) of component (region, comp) in state, split at midnights UTC. */
void status_uptime_record(struct status_uptime *u, const char *region, int comp,
			  enum status_state s, long long from_ms, long long to_ms);
/* Observed and down milliseconds of a component on day (days since the epoch, UTC). */
void status_uptime_day(const struct status_uptime *u, const char *region, int comp, long long day,
		       long long *obs_r, long long *down_r);
/* Percentage over the STATUS_DAYS days ending on today's day; -1 without data. */
double status_uptime_percent(const struct status_uptime *u, const char *region, int comp,
			     long long today);
int status_uptime_save(const struct status_uptime *u, const char *path, const char **error_r);
int status_uptime_load(struct status_uptime *u, const char *path, long long today,
		       const char **error_r);
/* The records as text (the file's format; caller frees), and back. */
char *status_uptime_format(const struct status_uptime *u);
int status_uptime_parse(struct status_uptime *u, const char *text, size_t len, long long today,
			const char **error_r);
/* Per component and day, keep the record with more observed time. */
void status_uptime_merge(struct status_uptime *dst, const struct status_uptime *src);

/* --------------------------------------------------------------- incidents */
struct status_update {
	char *id, *status, *body;
	long long at_ms;
};
struct status_incident {
	char *id, *name, *status, *impact;
	long long created_ms, updated_ms, resolved_ms, monitoring_ms;
	long long scheduled_for_ms, scheduled_until_ms; /* maintenance; 0 otherwise */
	char **components; /* "us-api" */
	size_t n_components;
	struct status_update *updates; /* newest first */
	size_t n_updates;
};
/* Validate and copy an incident (as wardctl stores it); NULL if malformed. */
struct status_incident *status_incident_parse(const char *json, size_t len);
void status_incident_free(struct status_incident *inc);
bool status_incident_unresolved(const struct status_incident *inc);
bool status_incident_maintenance(const struct status_incident *inc);
bool status_id_ok(const char *s);

/* ------------------------------------------------------------------ render */
/* Everything a rendering needs; incidents sorted newest first. */
struct status_view {
	const char *page_name;
	const char *url; /* "https://status.example.com/" */
	long long now_ms;
	size_t n_cells;
	const struct status_cell *cells;
	const enum status_state (*states)[STATUS_COMPONENTS]; /* per cell, after maintenance */
	const struct status_uptime *uptime;
	struct status_incident *const *incidents;
	size_t n_incidents;
};
/* Apply in-progress maintenance to the computed states. */
void status_apply_maintenance(const struct status_view *v,
			      enum status_state states[][STATUS_COMPONENTS]);
/* "summary", "status", "components", "incidents", "unresolved", "scheduled". Caller frees. */
char *status_render_json(const struct status_view *v, const char *what);
char *status_render_atom(const struct status_view *v);
char *status_render_html(const struct status_view *v);
extern const char status_css[];

/* gateway_status.c: the listener and poller, started by ward-status's init; the
 * answer counters (hb:gateway:<instance>:http), started by the tenant gateway's;
 * free (of both) is NULL-safe and idempotent. */
struct gateway;
int gateway_status_start(struct gateway *gw, const char **error_r);
int gateway_status_pub_start(struct gateway *gw, const char **error_r);
void gateway_status_stop(struct gateway *gw);
void gateway_status_free(struct gateway *gw);
/* Escape s for HTML/XML text and attributes into a malloc'd string. */
char *status_escape(const char *s);
void status_iso8601(long long ms, char out[32]);

#endif
