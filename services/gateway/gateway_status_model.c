/*
 * gateway_status_model — what the status page knows and how it shows it; no I/O
 * except the uptime file, no libevent, no clock (every time is a parameter, so
 * tests choose the day boundaries).
 *
 * States of a component, per cell (status_evaluate):
 *   service without a fresh heartbeat, or cell unreachable  major_outage
 *   an instance reports its database down                   partial_outage
 *   audit outbox over its mark, a dead letter lately (for
 *   mail-ingest: a mail moved to dl:mail-ingest),
 *   a queue's depth over status.pending_high (XLEN q:<svc>: its
 *   consumers delete what they ack, so what is left is not handled yet),
 *   audit backlog degraded, last verified backup too old    degraded_performance
 *   the gateways' 5xx over the error window, at least error_min of them and
 *   error_rate_pct of the answers: api and web degraded_performance (at
 *   error_major_pct: partial_outage)
 *   api/web need auth and ticket, email needs ticket: a dependency's major outage
 *   is at least a partial outage of the component. Email is also the outbound
 *   mailer (mail-out): its states count for email, at most as a partial outage
 *   (mail still comes in; replies wait in q:mail-out).
 * Uptime: per component per UTC day, observed and down milliseconds (down =
 * partial or major outage; degraded and maintenance count as up); the percentage
 * is (observed - down) / observed over the days with data among the last 90.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "gateway_status.h"

const char *const status_service_names[STATUS_SERVICES] = {
    "gateway", "auth", "ticket", "mail-ingest", "audit", "backup", "mail-out"};
enum { SV_GATEWAY, SV_AUTH, SV_TICKET, SV_MAIL, SV_AUDIT, SV_BACKUP, SV_MAILOUT };
const char *const status_component_ids[STATUS_COMPONENTS] = {"api",   "web",   "email",  "auth",
							     "tickets", "audit", "backups"};
const char *const status_component_names[STATUS_COMPONENTS] = {
    "API", "Web", "Email", "Authentication", "Tickets", "Audit log", "Backups"};
enum { CO_API, CO_WEB, CO_EMAIL, CO_AUTH, CO_TICKETS, CO_AUDIT, CO_BACKUPS };

/* Index of the service named by s up to its first ':' (or its end), or -1. */
int status_service_index_of(const char *s)
{
	size_t n = strcspn(s, ":");

	for (int i = 0; i < STATUS_SERVICES; i++)
		if (strlen(status_service_names[i]) == n && memcmp(s, status_service_names[i], n) == 0)
			return i;
	return -1;
}

/* Statuspage's name of a state. */
const char *status_state_name(enum status_state s)
{
	switch (s) {
	case STATUS_OPERATIONAL:
		return "operational";
	case STATUS_DEGRADED:
		return "degraded_performance";
	case STATUS_PARTIAL:
		return "partial_outage";
	case STATUS_MAJOR:
		return "major_outage";
	case STATUS_MAINTENANCE:
		return "under_maintenance";
	}
	return "major_outage";
}

/* The words a person reads for a state. */
static const char *status_state_label(enum status_state s)
{
	static const char *const labels[] = {"Operational", "Degraded performance",
					     "Partial outage", "Major outage",
					     "Under maintenance"};

	return s <= STATUS_MAINTENANCE ? labels[s] : "Major outage";
}

static enum status_state state_max(enum status_state a, enum status_state b)
{
	return a > b ? a : b;
}

/* A queue's depth: its length, entries not handled yet (read or not). */
static long long status_depth(const struct status_svc *s)
{
	return s->depth > 0 ? s->depth : 0;
}

/* Of a queue's depth, the entries delivered and not acked (at most the depth: an
 * entry deleted while pending stays in XPENDING until reclaimed). */
static long long status_not_acked(const struct status_svc *s)
{
	long long d = status_depth(s);

	return s->pending <= 0 ? 0 : s->pending < d ? s->pending : d;
}

/* One service's own state. */
static enum status_state status_svc_state(const struct status_cell *c, int i,
					  const struct status_thresholds *t)
{
	const struct status_svc *s = &c->svc[i];

	if (!c->reachable || s->instances == 0)
		return STATUS_MAJOR;
	if (s->db_down)
		return STATUS_PARTIAL;
	if (s->outbox_degraded || s->dead_letter_recent ||
	    (t->pending_high > 0 && status_depth(s) > t->pending_high))
		return STATUS_DEGRADED;
	return STATUS_OPERATIONAL;
}

/* A dependency's outage makes the dependent at least partially out. */
static enum status_state status_dep(enum status_state own, enum status_state dep)
{
	return dep == STATUS_MAJOR ? state_max(own, STATUS_PARTIAL) : own;
}

/* Component states of a cell from its health data (see the file header). */
void status_evaluate(const struct status_cell *c, const struct status_thresholds *t,
		     long long now_ms, enum status_state out[STATUS_COMPONENTS])
{
	enum status_state sv[STATUS_SERVICES];

	for (int i = 0; i < STATUS_SERVICES; i++)
		sv[i] = status_svc_state(c, i, t);
	out[CO_API] = status_dep(status_dep(sv[SV_GATEWAY], sv[SV_AUTH]), sv[SV_TICKET]);
	out[CO_WEB] = status_dep(sv[SV_GATEWAY], sv[SV_AUTH]);
	if (c->reachable && t->error_rate_pct > 0 && c->window_5xx >= t->error_min &&
	    c->window_answers > 0) {
		long long pct = 100 * c->window_5xx / c->window_answers;
		enum status_state e = pct >= t->error_major_pct ? STATUS_PARTIAL
				      : pct >= t->error_rate_pct ? STATUS_DEGRADED
								 : STATUS_OPERATIONAL;

		out[CO_API] = state_max(out[CO_API], e);
		out[CO_WEB] = state_max(out[CO_WEB], e);
	}
	out[CO_EMAIL] = state_max(status_dep(sv[SV_MAIL], sv[SV_TICKET]),
				  sv[SV_MAILOUT] == STATUS_MAJOR ? STATUS_PARTIAL : sv[SV_MAILOUT]);
	out[CO_AUTH] = sv[SV_AUTH];
	out[CO_TICKETS] = sv[SV_TICKET];
	out[CO_AUDIT] = sv[SV_AUDIT];
	if (c->reachable && c->audit_backlog_degraded)
		out[CO_AUDIT] = state_max(out[CO_AUDIT], STATUS_DEGRADED);
	out[CO_BACKUPS] = sv[SV_BACKUP];
	if (c->reachable && c->backup_verified_ms > 0 && t->backup_max_age_ms > 0 &&
	    now_ms - c->backup_verified_ms > t->backup_max_age_ms)
		out[CO_BACKUPS] = state_max(out[CO_BACKUPS], STATUS_DEGRADED);
	if (c->reachable && c->backup_verify_failed)
		out[CO_BACKUPS] = state_max(out[CO_BACKUPS], STATUS_DEGRADED);
}

/* A gateway's answer counters (see gateway_status.h). 0 or -1. */
int status_http_parse(const json_t *o, long long *at_r, long long *answers_r, long long *errors_r,
		      long long *window_s_r, long long *window_answers_r, long long *window_5xx_r)
{
	const json_t *at = json_object_get(o, "at_ms"), *n = json_object_get(o, "answers"),
		     *e = json_object_get(o, "errors_5xx"), *ws = json_object_get(o, "window_s"),
		     *wn = json_object_get(o, "window_answers"),
		     *we = json_object_get(o, "window_5xx");

	if (!json_is_integer(at) || !json_is_integer(n) || !json_is_integer(e) ||
	    json_integer_value(e) < 0 || json_integer_value(n) < json_integer_value(e))
		return -1;
	*at_r = json_integer_value(at);
	*answers_r = json_integer_value(n);
	*errors_r = json_integer_value(e);
	*window_s_r = *window_answers_r = *window_5xx_r = 0;
	if (ws == NULL && wn == NULL && we == NULL)
		return 0; /* a gateway that publishes no window */
	if (!json_is_integer(ws) || !json_is_integer(wn) || !json_is_integer(we) ||
	    json_integer_value(ws) < 0 || json_integer_value(ws) > 86400 ||
	    json_integer_value(we) < 0 || json_integer_value(wn) < json_integer_value(we) ||
	    json_integer_value(wn) > *answers_r)
		return -1;
	*window_s_r = json_integer_value(ws);
	*window_answers_r = json_integer_value(wn);
	*window_5xx_r = json_integer_value(we);
	return 0;
}

/* The count in an XLEN or XPENDING (summary) reply (see gateway_status.h). */
long long status_reply_count(const redisReply *r)
{
	if (r == NULL)
		return -1;
	if (r->type == REDIS_REPLY_INTEGER)
		return r->integer;
	if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER)
		return r->element[0]->integer;
	return -1;
}

/* Append a sentence to the reasons (dropped when full). */
static void __attribute__((format(printf, 4, 5)))
reason_add(char (*out)[STATUS_REASON_MAX], int max, int *n, const char *fmt, ...)
{
	va_list ap;

	if (*n >= max)
		return;
	va_start(ap, fmt);
	vsnprintf(out[*n], STATUS_REASON_MAX, fmt, ap);
	va_end(ap);
	(*n)++;
}

/* The reasons of one service's own state (status_svc_state's tests, in order). */
static void explain_svc(const struct status_cell *c, int i, const struct status_thresholds *t,
			char (*out)[STATUS_REASON_MAX], int max, int *n)
{
	const struct status_svc *s = &c->svc[i];
	const char *name = status_service_names[i];

	if (!c->reachable) {
		reason_add(out, max, n, "cell unreachable: its Redis does not answer");
		return;
	}
	if (s->instances == 0) {
		reason_add(out, max, n, "heartbeat missing: no fresh heartbeat of %s", name);
		return;
	}
	if (s->db_down)
		reason_add(out, max, n, "database down: an instance of %s reports it", name);
	if (s->outbox_degraded)
		reason_add(out, max, n, "audit outbox: %s's backlog is over its mark", name);
	if (s->dead_letter_recent)
		reason_add(out, max, n, "dead letters: dl:%s grew lately", name);
	if (t->pending_high > 0 && status_depth(s) > t->pending_high)
		reason_add(
		    out, max, n,
		    "queue depth: q:%s has %lld waiting (%lld not read yet, %lld not acked), "
		    "over %lld",
		    name, status_depth(s), status_depth(s) - status_not_acked(s),
		    status_not_acked(s), t->pending_high);
}

/* A dependency's major outage, as a reason of the dependent. */
static void explain_dep(const struct status_cell *c, int i, const struct status_thresholds *t,
			char (*out)[STATUS_REASON_MAX], int max, int *n)
{
	if (c->reachable && status_svc_state(c, i, t) == STATUS_MAJOR)
		reason_add(out, max, n, "depends on %s: no fresh heartbeat of %s",
			   status_service_names[i], status_service_names[i]);
}

/* Why status_evaluate put component comp where it is (see gateway_status.h). */
int status_explain(const struct status_cell *c, const struct status_thresholds *t, long long now_ms,
		   int comp, char (*out)[STATUS_REASON_MAX], int max)
{
	int n = 0;

	switch (comp) {
	case CO_API:
	case CO_WEB:
		explain_svc(c, SV_GATEWAY, t, out, max, &n);
		if (c->reachable && c->svc[SV_GATEWAY].instances > 0) {
			explain_dep(c, SV_AUTH, t, out, max, &n);
			if (comp == CO_API)
				explain_dep(c, SV_TICKET, t, out, max, &n);
		}
		if (c->reachable && t->error_rate_pct > 0 && c->window_5xx >= t->error_min &&
		    c->window_answers > 0 &&
		    100 * c->window_5xx / c->window_answers >= t->error_rate_pct)
			reason_add(out, max, &n,
				   "error rate: %lld 5xx of %lld answers (%lld%%) over %d s "
				   "(degraded from %d%%, partial outage from %d%%)",
				   c->window_5xx, c->window_answers,
				   100 * c->window_5xx / c->window_answers, c->window_s,
				   t->error_rate_pct, t->error_major_pct);
		break;
	case CO_EMAIL:
		explain_svc(c, SV_MAIL, t, out, max, &n);
		if (c->reachable && c->svc[SV_MAIL].instances > 0)
			explain_dep(c, SV_TICKET, t, out, max, &n);
		if (c->reachable)
			explain_svc(c, SV_MAILOUT, t, out, max, &n);
		break;
	case CO_AUTH:
		explain_svc(c, SV_AUTH, t, out, max, &n);
		break;
	case CO_TICKETS:
		explain_svc(c, SV_TICKET, t, out, max, &n);
		break;
	case CO_AUDIT:
		explain_svc(c, SV_AUDIT, t, out, max, &n);
		if (c->reachable && c->audit_backlog_degraded)
			reason_add(out, max, &n,
				   "audit backlog: the audit daemon reports it degraded");
		break;
	case CO_BACKUPS:
		explain_svc(c, SV_BACKUP, t, out, max, &n);
		if (c->reachable && c->backup_verified_ms > 0 && t->backup_max_age_ms > 0 &&
		    now_ms - c->backup_verified_ms > t->backup_max_age_ms)
			reason_add(out, max, &n, "last verified backup: %lld s ago (over %lld s)",
				   (now_ms - c->backup_verified_ms) / 1000,
				   t->backup_max_age_ms / 1000);
		if (c->reachable && c->backup_verify_failed)
			reason_add(out, max, &n, "last verified backup: the latest verify failed");
		break;
	}
	return n;
}

/*
 * A heartbeat value: {"service","instance","at_ms","db",…}. Returns the service's
 * index, or -1 if the value is not a heartbeat of a known service. *fresh_r: at_ms
 * within timeout_ms of now; *db_down_r: "db" is false.
 */
int status_heartbeat_parse(const char *json, size_t len, long long now_ms, long long timeout_ms,
			   bool *fresh_r, bool *db_down_r)
{
	json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
	json_t *svc, *at, *inst, *db;
	int idx = -1;

	*fresh_r = false;
	*db_down_r = false;
	if (root == NULL || !json_is_object(root))
		goto out;
	svc = json_object_get(root, "service");
	at = json_object_get(root, "at_ms");
	inst = json_object_get(root, "instance");
	db = json_object_get(root, "db");
	if (!json_is_string(svc) || !json_is_integer(at) || !json_is_string(inst))
		goto out;
	for (int i = 0; i < STATUS_SERVICES; i++)
		if (strcmp(json_string_value(svc), status_service_names[i]) == 0)
			idx = i;
	if (idx < 0)
		goto out;
	*fresh_r = json_integer_value(at) <= now_ms + timeout_ms &&
		   now_ms - json_integer_value(at) <= timeout_ms;
	*db_down_r = json_is_false(db);
out:
	json_decref(root);
	return idx;
}

/* ================================================================= uptime */

struct uptime_slot {
	long long day; /* days since the epoch; -1 empty */
	uint32_t obs_ms, down_ms;
};

struct uptime_comp {
	char region[STATUS_REGION_MAX + 1];
	int comp;
	struct uptime_slot slot[STATUS_DAYS]; /* indexed by day % STATUS_DAYS */
};

struct status_uptime {
	struct uptime_comp c[STATUS_REGIONS_MAX * STATUS_COMPONENTS];
	size_t n;
};

/* A new, empty record set. NULL on allocation failure. */
struct status_uptime *status_uptime_new(void)
{
	return calloc(1, sizeof(struct status_uptime));
}

void status_uptime_free(struct status_uptime *u)
{
	free(u);
}

/* The record of (region, comp); created if create and there is room; else NULL. */
static struct uptime_comp *uptime_find(const struct status_uptime *u, const char *region, int comp,
				       bool create)
{
	struct status_uptime *w = (struct status_uptime *)u;
	struct uptime_comp *c;

	if (comp < 0 || comp >= STATUS_COMPONENTS || strlen(region) > STATUS_REGION_MAX)
		return NULL;
	for (size_t i = 0; i < u->n; i++)
		if (w->c[i].comp == comp && strcmp(w->c[i].region, region) == 0)
			return &w->c[i];
	if (!create || w->n >= sizeof w->c / sizeof w->c[0])
		return NULL;
	c = &w->c[w->n++];
	snprintf(c->region, sizeof c->region, "%s", region);
	c->comp = comp;
	for (int d = 0; d < STATUS_DAYS; d++)
		c->slot[d].day = -1;
	return c;
}

/* The slot of day, reset if it held an older day. */
static struct uptime_slot *uptime_slot(struct uptime_comp *c, long long day)
{
	struct uptime_slot *s = &c->slot[day % STATUS_DAYS];

	if (s->day != day) {
		s->day = day;
		s->obs_ms = s->down_ms = 0;
	}
	return s;
}

/* Account [from_ms, to_ms) in state s, split at each midnight UTC. */
void status_uptime_record(struct status_uptime *u, const char *region, int comp,
			  enum status_state s, long long from_ms, long long to_ms)
{
	struct uptime_comp *c = uptime_find(u, region, comp, true);
	bool down = s == STATUS_PARTIAL || s == STATUS_MAJOR;

	if (c == NULL || from_ms < 0 || to_ms <= from_ms)
		return;
	while (from_ms < to_ms) {
		long long day = from_ms / STATUS_DAY_MS;
		long long end = (day + 1) * STATUS_DAY_MS;
		long long span = (to_ms < end ? to_ms : end) - from_ms;
		struct uptime_slot *sl = uptime_slot(c, day);

		/* A day holds at most STATUS_DAY_MS of each, which fits in 32 bits. */
		if (sl->obs_ms + span <= STATUS_DAY_MS)
			sl->obs_ms += (uint32_t)span;
		if (down && sl->down_ms + span <= STATUS_DAY_MS)
			sl->down_ms += (uint32_t)span;
		from_ms += span;
	}
}

/* Observed and down ms of one day (0, 0 without data). */
void status_uptime_day(const struct status_uptime *u, const char *region, int comp, long long day,
		       long long *obs_r, long long *down_r)
{
	const struct uptime_comp *c = uptime_find(u, region, comp, false);
	const struct uptime_slot *s;

	*obs_r = *down_r = 0;
	if (c == NULL || day < 0)
		return;
	s = &c->slot[day % STATUS_DAYS];
	if (s->day == day) {
		*obs_r = s->obs_ms;
		*down_r = s->down_ms;
	}
}

/* Uptime percentage over the 90 days ending on today; -1 without data. */
double status_uptime_percent(const struct status_uptime *u, const char *region, int comp,
			     long long today)
{
	long long obs = 0, down = 0;

	for (long long d = today - STATUS_DAYS + 1; d <= today; d++) {
		long long o, w;

		status_uptime_day(u, region, comp, d, &o, &w);
		obs += o;
		down += w;
	}
	if (obs == 0)
		return -1;
	return 100.0 * (double)(obs - down) / (double)obs;
}

/* The records as text: a header line, then "region comp day obs_ms down_ms" per day
 * with data. 0 or -1. */
static int uptime_write(const struct status_uptime *u, FILE *f)
{
	if (fprintf(f, "ward-status-uptime 1\n") < 0)
		return -1;
	for (size_t i = 0; i < u->n; i++)
		for (int d = 0; d < STATUS_DAYS; d++) {
			const struct uptime_slot *s = &u->c[i].slot[d];

			if (s->day >= 0 && s->obs_ms > 0 &&
			    fprintf(f, "%s %s %lld %" PRIu32 " %" PRIu32 "\n", u->c[i].region,
				    status_component_ids[u->c[i].comp], s->day, s->obs_ms,
				    s->down_ms) < 0)
				return -1;
		}
	return 0;
}

/* The records as the uptime file's text (what the owner also publishes in Redis).
 * Caller frees; NULL on allocation failure. */
char *status_uptime_format(const struct status_uptime *u)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	int ok;

	if (f == NULL)
		return NULL;
	ok = uptime_write(u, f) == 0;
	if (fclose(f) != 0 || !ok) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* Merge src into dst: per component and day, the record with more observed time
 * (records only grow within a day, so that one is the more complete). */
void status_uptime_merge(struct status_uptime *dst, const struct status_uptime *src)
{
	for (size_t i = 0; i < src->n; i++) {
		struct uptime_comp *c = NULL;

		for (int d = 0; d < STATUS_DAYS; d++) {
			const struct uptime_slot *s = &src->c[i].slot[d];
			struct uptime_slot *t;

			if (s->day < 0 || s->obs_ms == 0)
				continue;
			if (c == NULL &&
			    (c = uptime_find(dst, src->c[i].region, src->c[i].comp, true)) == NULL)
				break;
			t = &c->slot[d];
			if (t->day < s->day || (t->day == s->day && t->obs_ms < s->obs_ms))
				*t = *s;
		}
	}
}

/* Write the records to path atomically (path.tmp.<pid>, fsync, rename). 0 or -1. */
int status_uptime_save(const struct status_uptime *u, const char *path, const char **error_r)
{
	char tmp[4096];
	FILE *f;
	int fd, ok = 1;

	/* Our own temporary name: two writers (never meant to be: see the uptime lease in
	 * gateway_status.c) would not write into one file. */
	if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
		*error_r = "uptime file path too long";
		return -1;
	}
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640)) < 0) {
		*error_r = "cannot create the uptime file";
		return -1;
	}
	if ((f = fdopen(fd, "w")) == NULL) {
		close(fd);
		*error_r = "cannot create the uptime file";
		return -1;
	}
	ok = uptime_write(u, f) == 0;
	ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
	if (fclose(f) != 0)
		ok = 0;
	if (!ok || rename(tmp, path) != 0) {
		unlink(tmp);
		*error_r = "cannot write the uptime file";
		return -1;
	}
	return 0;
}

/* Read records (uptime_write's text) from f, dropping days older than 90 before
 * today. Malformed lines fail. 0 or -1. */
static int uptime_read(struct status_uptime *u, FILE *f, long long today, const char **error_r)
{
	char line[128], region[STATUS_REGION_MAX + 2], comp[16];
	long long day;
	unsigned long obs, down;

	if (fgets(line, sizeof line, f) == NULL || strcmp(line, "ward-status-uptime 1\n") != 0) {
		*error_r = "the uptime records have no known header";
		return -1;
	}
	while (fgets(line, sizeof line, f) != NULL) {
		struct uptime_comp *c;
		struct uptime_slot *s;
		int ci = -1;

		if (sscanf(line, "%15s %15s %lld %lu %lu", region, comp, &day, &obs, &down) != 5 ||
		    day < 0 || obs > (unsigned long)STATUS_DAY_MS || down > obs) {
			*error_r = "malformed line in the uptime records";
			return -1;
		}
		for (int i = 0; i < STATUS_COMPONENTS; i++)
			if (strcmp(comp, status_component_ids[i]) == 0)
				ci = i;
		if (ci < 0 || day <= today - STATUS_DAYS || day > today)
			continue;
		if ((c = uptime_find(u, region, ci, true)) == NULL)
			continue;
		s = uptime_slot(c, day);
		s->obs_ms = (uint32_t)obs;
		s->down_ms = (uint32_t)down;
	}
	return 0;
}

/* Read records saved by status_uptime_save, dropping days older than 90 before
 * today. A missing file is an empty record set. Malformed lines fail. */
int status_uptime_load(struct status_uptime *u, const char *path, long long today,
		       const char **error_r)
{
	FILE *f = fopen(path, "re");
	int ret;

	if (f == NULL) {
		if (errno == ENOENT)
			return 0;
		*error_r = "cannot read the uptime file";
		return -1;
	}
	ret = uptime_read(u, f, today, error_r);
	fclose(f);
	return ret;
}

/* Read records from text (status_uptime_format's). 0 or -1. */
int status_uptime_parse(struct status_uptime *u, const char *text, size_t len, long long today,
			const char **error_r)
{
	FILE *f;
	int ret;

	if (len == 0 || (f = fmemopen((void *)text, len, "r")) == NULL) {
		*error_r = "empty uptime records";
		return -1;
	}
	ret = uptime_read(u, f, today, error_r);
	fclose(f);
	return ret;
}

/* ============================================================== incidents */

/* An id we made: [a-z0-9-], 1..40 bytes. */
bool status_id_ok(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	if (n == 0 || n > 40)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

/* Operator text: a UTF-8 string (jansson checked) of 1..STATUS_TEXT_MAX bytes. */
static char *incident_text(json_t *v)
{
	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    json_string_length(v) > STATUS_TEXT_MAX ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return NULL;
	return strdup(json_string_value(v));
}

/* One of the words allowed. */
static char *incident_word(json_t *v, const char *const *allowed)
{
	if (!json_is_string(v))
		return NULL;
	for (size_t i = 0; allowed[i] != NULL; i++)
		if (strcmp(json_string_value(v), allowed[i]) == 0)
			return strdup(allowed[i]);
	return NULL;
}

static const char *const incident_statuses[] = {
    "investigating", "identified", "monitoring", "resolved", "postmortem",
    "scheduled",     "in_progress", "verifying", "completed", NULL};
static const char *const incident_impacts[] = {"none",	   "minor",	  "major",
					       "critical", "maintenance", NULL};

/* A time in ms, >= 0 (absent: 0). */
static long long incident_ms(json_t *o, const char *key, bool *ok)
{
	json_t *v = json_object_get(o, key);

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		*ok = false;
		return 0;
	}
	return json_integer_value(v);
}

void status_incident_free(struct status_incident *inc)
{
	if (inc == NULL)
		return;
	free(inc->id);
	free(inc->name);
	free(inc->status);
	free(inc->impact);
	for (size_t i = 0; i < inc->n_components; i++)
		free(inc->components[i]);
	free(inc->components);
	for (size_t i = 0; i < inc->n_updates; i++) {
		free(inc->updates[i].id);
		free(inc->updates[i].status);
		free(inc->updates[i].body);
	}
	free(inc->updates);
	free(inc);
}

/*
 * Validate an incident as wardctl stores it: {"id","name","status","impact",
 * "created_ms","updated_ms","resolved_ms","monitoring_ms","scheduled_for_ms",
 * "scheduled_until_ms","components":["us-api",…],"updates":[{"id","status","body",
 * "at_ms"},…]} (updates newest first). NULL if anything is off.
 */
struct status_incident *status_incident_parse(const char *json, size_t len)
{
	json_t *root = NULL, *comps, *ups;
	struct status_incident *inc = NULL;
	bool ok = true;
	size_t i;

	if (len > 256 * 1024 ||
	    (root = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL)) == NULL ||
	    !json_is_object(root) || (inc = calloc(1, sizeof *inc)) == NULL)
		goto fail;
	if (!json_is_string(json_object_get(root, "id")) ||
	    !status_id_ok(json_string_value(json_object_get(root, "id"))) ||
	    (inc->id = strdup(json_string_value(json_object_get(root, "id")))) == NULL ||
	    (inc->name = incident_text(json_object_get(root, "name"))) == NULL ||
	    (inc->status = incident_word(json_object_get(root, "status"), incident_statuses)) ==
		NULL ||
	    (inc->impact = incident_word(json_object_get(root, "impact"), incident_impacts)) ==
		NULL)
		goto fail;
	inc->created_ms = incident_ms(root, "created_ms", &ok);
	inc->updated_ms = incident_ms(root, "updated_ms", &ok);
	inc->resolved_ms = incident_ms(root, "resolved_ms", &ok);
	inc->monitoring_ms = incident_ms(root, "monitoring_ms", &ok);
	inc->scheduled_for_ms = incident_ms(root, "scheduled_for_ms", &ok);
	inc->scheduled_until_ms = incident_ms(root, "scheduled_until_ms", &ok);
	comps = json_object_get(root, "components");
	ups = json_object_get(root, "updates");
	if (!ok || !json_is_array(comps) || json_array_size(comps) > 64 || !json_is_array(ups) ||
	    json_array_size(ups) == 0 || json_array_size(ups) > STATUS_UPDATES_MAX)
		goto fail;
	if ((inc->components = calloc(json_array_size(comps) + 1, sizeof(char *))) == NULL ||
	    (inc->updates = calloc(json_array_size(ups), sizeof *inc->updates)) == NULL)
		goto fail;
	for (i = 0; i < json_array_size(comps); i++) {
		json_t *c = json_array_get(comps, i);

		if (!json_is_string(c) || !status_id_ok(json_string_value(c)) ||
		    (inc->components[i] = strdup(json_string_value(c))) == NULL)
			goto fail;
		inc->n_components++;
	}
	for (i = 0; i < json_array_size(ups); i++) {
		json_t *u = json_array_get(ups, i);
		struct status_update *su = &inc->updates[i];

		inc->n_updates++;
		if (!json_is_object(u) || !json_is_string(json_object_get(u, "id")) ||
		    !status_id_ok(json_string_value(json_object_get(u, "id"))) ||
		    (su->id = strdup(json_string_value(json_object_get(u, "id")))) == NULL ||
		    (su->status = incident_word(json_object_get(u, "status"), incident_statuses)) ==
			NULL ||
		    (su->body = incident_text(json_object_get(u, "body"))) == NULL)
			goto fail;
		su->at_ms = incident_ms(u, "at_ms", &ok);
		if (!ok)
			goto fail;
	}
	json_decref(root);
	return inc;
fail:
	json_decref(root);
	status_incident_free(inc);
	return NULL;
}

/* A maintenance is scheduled with a window; an incident is not. */
bool status_incident_maintenance(const struct status_incident *inc)
{
	return strcmp(inc->impact, "maintenance") == 0;
}

bool status_incident_unresolved(const struct status_incident *inc)
{
	return strcmp(inc->status, "resolved") != 0 && strcmp(inc->status, "postmortem") != 0 &&
	       strcmp(inc->status, "completed") != 0;
}

/* ================================================================= render */

/* ISO 8601 UTC with milliseconds. */
void status_iso8601(long long ms, char out[32])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (ms < 0 || gmtime_r(&t, &tm) == NULL) {
		snprintf(out, 32, "1970-01-01T00:00:00.000Z");
		return;
	}
	size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);

	snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

/* Escape &, <, >, " and ' (HTML and XML, text and attributes); control characters
 * other than newline and tab become U+FFFD's cousin '?'. Caller frees; NULL on OOM. */
char *status_escape(const char *s)
{
	size_t n = 0, i;
	char *out, *p;

	for (i = 0; s[i] != '\0'; i++)
		n += strchr("&<>\"'", s[i]) != NULL ? 6 : 1;
	if ((out = malloc(n + 1)) == NULL)
		return NULL;
	for (p = out, i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *rep = c == '&'  ? "&amp;"
				  : c == '<'  ? "&lt;"
				  : c == '>'  ? "&gt;"
				  : c == '"'  ? "&quot;"
				  : c == '\'' ? "&#39;"
					      : NULL;

		if (rep != NULL) {
			memcpy(p, rep, strlen(rep));
			p += strlen(rep);
		} else {
			*p++ = (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f ? '?' : (char)c;
		}
	}
	*p = '\0';
	return out;
}

/* "us-api" of a cell's component into out. */
static void component_id(char out[40], const char *region, int comp)
{
	snprintf(out, 40, "%s-%s", region, status_component_ids[comp]);
}

/* The maintenance window is now (or it was started by hand and is not over). */
static bool maintenance_active(const struct status_incident *inc, long long now_ms)
{
	if (!status_incident_maintenance(inc) || !status_incident_unresolved(inc))
		return false;
	if (strcmp(inc->status, "in_progress") == 0 || strcmp(inc->status, "verifying") == 0)
		return true;
	return inc->scheduled_for_ms > 0 && inc->scheduled_for_ms <= now_ms &&
	       (inc->scheduled_until_ms == 0 || now_ms < inc->scheduled_until_ms);
}

/* Components under an active maintenance show under_maintenance. */
void status_apply_maintenance(const struct status_view *v,
			      enum status_state states[][STATUS_COMPONENTS])
{
	char id[40];

	for (size_t i = 0; i < v->n_incidents; i++) {
		const struct status_incident *inc = v->incidents[i];

		if (!maintenance_active(inc, v->now_ms))
			continue;
		for (size_t c = 0; c < v->n_cells; c++)
			for (int k = 0; k < STATUS_COMPONENTS; k++) {
				component_id(id, v->cells[c].region, k);
				for (size_t j = 0; j < inc->n_components; j++)
					if (strcmp(inc->components[j], id) == 0)
						states[c][k] = STATUS_MAINTENANCE;
			}
	}
}

/* The page's indicator and its description, from components and open incidents. */
static void status_indicator(const struct status_view *v, const char **ind_r, const char **desc_r)
{
	int worst = 0; /* 0 none, 1 minor, 2 major, 3 critical */
	bool maint = false;

	for (size_t c = 0; c < v->n_cells; c++)
		for (int k = 0; k < STATUS_COMPONENTS; k++) {
			enum status_state s = v->states[c][k];
			int w = s == STATUS_DEGRADED ? 1 : s == STATUS_PARTIAL ? 2 : s == STATUS_MAJOR ? 3 : 0;

			maint = maint || s == STATUS_MAINTENANCE;
			worst = w > worst ? w : worst;
		}
	for (size_t i = 0; i < v->n_incidents; i++) {
		const struct status_incident *inc = v->incidents[i];
		int w = strcmp(inc->impact, "critical") == 0 ? 3
			: strcmp(inc->impact, "major") == 0  ? 2
			: strcmp(inc->impact, "minor") == 0  ? 1
							     : 0;

		if (status_incident_unresolved(inc) && !status_incident_maintenance(inc))
			worst = w > worst ? w : worst;
	}
	if (worst == 0 && maint) {
		*ind_r = "maintenance";
		*desc_r = "Service Under Maintenance";
		return;
	}
	*ind_r = worst == 3 ? "critical" : worst == 2 ? "major" : worst == 1 ? "minor" : "none";
	*desc_r = worst == 3   ? "Major System Outage"
		  : worst == 2 ? "Partial System Outage"
		  : worst == 1 ? "Minor Service Outage"
			       : "All Systems Operational";
}

/* json_object_set_new that remembers a failure in *ok. */
static void jset(json_t *o, const char *k, json_t *v, bool *ok)
{
	if (v == NULL || json_object_set_new(o, k, v) != 0)
		*ok = false;
}

static json_t *jtime(long long ms)
{
	char t[32];

	if (ms <= 0)
		return json_null();
	status_iso8601(ms, t);
	return json_string(t);
}

static json_t *json_page(const struct status_view *v, bool *ok)
{
	json_t *p = json_object();

	if (p == NULL) {
		*ok = false;
		return NULL;
	}
	jset(p, "id", json_string("ward"), ok);
	jset(p, "name", json_string(v->page_name), ok);
	jset(p, "url", json_string(v->url), ok);
	jset(p, "time_zone", json_string("Etc/UTC"), ok);
	jset(p, "updated_at", jtime(v->now_ms), ok);
	return p;
}

/* One Statuspage component object (a region group when comp < 0). */
static json_t *json_component(const struct status_view *v, size_t cell, int comp, bool *ok)
{
	json_t *o = json_object();
	const char *region = v->cells[cell].region;
	char id[40], name[96];
	enum status_state worst = STATUS_OPERATIONAL;

	if (o == NULL) {
		*ok = false;
		return NULL;
	}
	if (comp < 0) {
		json_t *ids = json_array();

		snprintf(id, sizeof id, "%s", region);
		snprintf(name, sizeof name, "Region %s", region);
		for (int k = 0; k < STATUS_COMPONENTS; k++) {
			char cid[40];

			component_id(cid, region, k);
			if (ids == NULL || json_array_append_new(ids, json_string(cid)) != 0)
				*ok = false;
			worst = state_max(worst, v->states[cell][k]);
		}
		jset(o, "id", json_string(id), ok);
		jset(o, "name", json_string(name), ok);
		jset(o, "status", json_string(status_state_name(worst)), ok);
		jset(o, "group", json_true(), ok);
		jset(o, "group_id", json_null(), ok);
		jset(o, "components", ids, ok);
	} else {
		double up = status_uptime_percent(v->uptime, region, comp, v->now_ms / STATUS_DAY_MS);

		component_id(id, region, comp);
		snprintf(name, sizeof name, "%s (%s)", status_component_names[comp], region);
		jset(o, "id", json_string(id), ok);
		jset(o, "name", json_string(name), ok);
		jset(o, "status", json_string(status_state_name(v->states[cell][comp])), ok);
		jset(o, "group", json_false(), ok);
		jset(o, "group_id", json_string(region), ok);
		jset(o, "uptime_90d", up < 0 ? json_null() : json_real(up), ok);
	}
	jset(o, "created_at", jtime(v->now_ms), ok);
	jset(o, "updated_at", jtime(v->now_ms), ok);
	jset(o, "position", json_integer((json_int_t)(cell * (STATUS_COMPONENTS + 1) + comp + 1)),
	     ok);
	if (comp == CO_BACKUPS && v->cells[cell].backup_verified_ms > 0) {
		/* The last verified backup of the region, and whether the latest check failed. */
		char desc[96];
		json_t *at = jtime(v->cells[cell].backup_verified_ms);

		snprintf(desc, sizeof desc, "last verified backup %s%s",
			 json_string_value(at) ? json_string_value(at) : "?",
			 v->cells[cell].backup_verify_failed ? "; the latest verify failed" : "");
		json_decref(at);
		jset(o, "description", json_string(desc), ok);
	} else {
		jset(o, "description", json_null(), ok);
	}
	jset(o, "showcase", json_true(), ok);
	jset(o, "start_date", json_null(), ok);
	jset(o, "page_id", json_string("ward"), ok);
	jset(o, "only_show_if_degraded", json_false(), ok);
	return o;
}

static json_t *json_components(const struct status_view *v, bool *ok)
{
	json_t *a = json_array();

	if (a == NULL) {
		*ok = false;
		return NULL;
	}
	for (size_t c = 0; c < v->n_cells; c++)
		for (int k = -1; k < STATUS_COMPONENTS; k++)
			if (json_array_append_new(a, json_component(v, c, k, ok)) != 0)
				*ok = false;
	return a;
}

/* One Statuspage incident object with its updates and affected components. */
static json_t *json_incident(const struct status_view *v, const struct status_incident *inc,
			     bool *ok)
{
	json_t *o = json_object(), *ups = json_array(), *comps = json_array();
	char link[512];

	if (o == NULL || ups == NULL || comps == NULL) {
		json_decref(o);
		json_decref(ups);
		json_decref(comps);
		*ok = false;
		return NULL;
	}
	snprintf(link, sizeof link, "%sincidents/%s", v->url, inc->id);
	jset(o, "id", json_string(inc->id), ok);
	jset(o, "name", json_string(inc->name), ok);
	jset(o, "status", json_string(inc->status), ok);
	jset(o, "impact", json_string(inc->impact), ok);
	jset(o, "created_at", jtime(inc->created_ms), ok);
	jset(o, "updated_at", jtime(inc->updated_ms), ok);
	jset(o, "monitoring_at", jtime(inc->monitoring_ms), ok);
	jset(o, "resolved_at", jtime(inc->resolved_ms), ok);
	jset(o, "started_at", jtime(inc->created_ms), ok);
	jset(o, "shortlink", json_string(link), ok);
	jset(o, "page_id", json_string("ward"), ok);
	if (status_incident_maintenance(inc)) {
		jset(o, "scheduled_for", jtime(inc->scheduled_for_ms), ok);
		jset(o, "scheduled_until", jtime(inc->scheduled_until_ms), ok);
	}
	for (size_t i = 0; i < inc->n_updates; i++) {
		const struct status_update *u = &inc->updates[i];
		json_t *uo = json_object(), *aff = json_array();

		if (uo == NULL || aff == NULL || json_array_append_new(ups, uo) != 0) {
			json_decref(aff);
			*ok = false;
			continue;
		}
		jset(uo, "id", json_string(u->id), ok);
		jset(uo, "status", json_string(u->status), ok);
		jset(uo, "body", json_string(u->body), ok);
		jset(uo, "incident_id", json_string(inc->id), ok);
		jset(uo, "created_at", jtime(u->at_ms), ok);
		jset(uo, "updated_at", jtime(u->at_ms), ok);
		jset(uo, "display_at", jtime(u->at_ms), ok);
		jset(uo, "affected_components", aff, ok);
		jset(uo, "deliver_notifications", json_true(), ok);
		jset(uo, "custom_tweet", json_null(), ok);
		jset(uo, "tweet_id", json_null(), ok);
		for (size_t j = 0; j < inc->n_components; j++) {
			json_t *ac = json_object();

			if (ac == NULL || json_array_append_new(aff, ac) != 0) {
				*ok = false;
				continue;
			}
			jset(ac, "code", json_string(inc->components[j]), ok);
			jset(ac, "name", json_string(inc->components[j]), ok);
		}
	}
	jset(o, "incident_updates", ups, ok);
	for (size_t c = 0; c < v->n_cells; c++)
		for (int k = 0; k < STATUS_COMPONENTS; k++) {
			char id[40];

			component_id(id, v->cells[c].region, k);
			for (size_t j = 0; j < inc->n_components; j++)
				if (strcmp(inc->components[j], id) == 0 &&
				    json_array_append_new(comps, json_component(v, c, k, ok)) != 0)
					*ok = false;
		}
	jset(o, "components", comps, ok);
	return o;
}

/* Incidents (not maintenances unless maint) that are unresolved if only_open. */
static json_t *json_incidents(const struct status_view *v, bool only_open, bool maint, bool *ok)
{
	json_t *a = json_array();
	size_t n = 0;

	if (a == NULL) {
		*ok = false;
		return NULL;
	}
	for (size_t i = 0; i < v->n_incidents && n < 50; i++) {
		const struct status_incident *inc = v->incidents[i];

		if (status_incident_maintenance(inc) != maint)
			continue;
		if (only_open && !status_incident_unresolved(inc))
			continue;
		if (json_array_append_new(a, json_incident(v, inc, ok)) != 0)
			*ok = false;
		n++;
	}
	return a;
}

/* The Statuspage v2 document named what. Caller frees; NULL on failure. */
char *status_render_json(const struct status_view *v, const char *what)
{
	json_t *root = json_object(), *st;
	const char *ind, *desc;
	bool ok = root != NULL;
	char *out = NULL;

	if (!ok)
		return NULL;
	jset(root, "page", json_page(v, &ok), &ok);
	if (strcmp(what, "summary") == 0 || strcmp(what, "components") == 0)
		jset(root, "components", json_components(v, &ok), &ok);
	if (strcmp(what, "summary") == 0 || strcmp(what, "unresolved") == 0)
		jset(root, "incidents", json_incidents(v, true, false, &ok), &ok);
	else if (strcmp(what, "incidents") == 0)
		jset(root, "incidents", json_incidents(v, false, false, &ok), &ok);
	if (strcmp(what, "summary") == 0)
		jset(root, "scheduled_maintenances", json_incidents(v, true, true, &ok), &ok);
	else if (strcmp(what, "scheduled") == 0)
		jset(root, "scheduled_maintenances", json_incidents(v, false, true, &ok), &ok);
	if (strcmp(what, "summary") == 0 || strcmp(what, "status") == 0) {
		status_indicator(v, &ind, &desc);
		if ((st = json_object()) == NULL)
			ok = false;
		else {
			jset(st, "indicator", json_string(ind), &ok);
			jset(st, "description", json_string(desc), &ok);
		}
		jset(root, "status", st, &ok);
	}
	if (ok)
		out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
	json_decref(root);
	return out;
}

/* ------------------------------------------------------ a growing string */
struct sbuf {
	char *s;
	size_t len, cap;
	bool failed;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->cap == 0 ? 8192 : b->cap);
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		if ((p = realloc(b->s, cap)) == NULL) {
			b->failed = true;
			return;
		}
		b->s = p;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof tmp)
		b->failed = true;
	else
		sb_add(b, tmp, (size_t)n);
}

/* Append s escaped for HTML/XML. */
static void sb_esc(struct sbuf *b, const char *s)
{
	char *e = status_escape(s);

	if (e == NULL)
		b->failed = true;
	else
		sb_add(b, e, strlen(e));
	free(e);
}

static char *sb_done(struct sbuf *b)
{
	if (b->failed) {
		free(b->s);
		return NULL;
	}
	return b->s;
}

/* The Atom feed of incidents and maintenances (RFC 4287). Caller frees. */
char *status_render_atom(const struct status_view *v)
{
	struct sbuf b = {0};
	char t[32];
	long long newest = 0;

	for (size_t i = 0; i < v->n_incidents; i++)
		if (v->incidents[i]->updated_ms > newest)
			newest = v->incidents[i]->updated_ms;
	status_iso8601(newest > 0 ? newest : 0, t);
	sb_printf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		      "<feed xmlns=\"http://www.w3.org/2005/Atom\" xml:lang=\"en\">\n<id>");
	sb_esc(&b, v->url);
	sb_printf(&b, "history</id>\n<title>");
	sb_esc(&b, v->page_name);
	sb_printf(&b, " status - incident history</title>\n<updated>%s</updated>\n", t);
	sb_printf(&b, "<link rel=\"alternate\" type=\"text/html\" href=\"");
	sb_esc(&b, v->url);
	sb_printf(&b, "\"/>\n<link rel=\"self\" type=\"application/atom+xml\" href=\"");
	sb_esc(&b, v->url);
	sb_printf(&b, "history.atom\"/>\n<author><name>");
	sb_esc(&b, v->page_name);
	sb_printf(&b, "</name></author>\n");
	for (size_t i = 0; i < v->n_incidents && i < 50; i++) {
		const struct status_incident *inc = v->incidents[i];

		sb_printf(&b, "<entry>\n<id>");
		sb_esc(&b, v->url);
		sb_printf(&b, "incidents/%s</id>\n<title>", inc->id); /* id is [a-z0-9-] */
		sb_esc(&b, inc->name);
		status_iso8601(inc->created_ms, t);
		sb_printf(&b, "</title>\n<published>%s</published>\n", t);
		status_iso8601(inc->updated_ms, t);
		sb_printf(&b, "<updated>%s</updated>\n<link rel=\"alternate\" href=\"", t);
		sb_esc(&b, v->url);
		sb_printf(&b, "#incident-%s\"/>\n<content type=\"text\">", inc->id);
		for (size_t j = 0; j < inc->n_updates; j++) {
			status_iso8601(inc->updates[j].at_ms, t);
			sb_printf(&b, "%s %s: ", t, inc->updates[j].status);
			sb_esc(&b, inc->updates[j].body);
			sb_add(&b, "\n", 1);
		}
		sb_printf(&b, "</content>\n</entry>\n");
	}
	sb_printf(&b, "</feed>\n");
	return sb_done(&b);
}

/* The stylesheet (served as /status.css: the CSP allows no inline style). */
const char status_css[] =
    "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;"
    "color:#222;background:#fff}\n"
    "h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}\n"
    ".banner{padding:1rem;border-radius:4px;color:#fff;font-weight:bold}\n"
    ".i-none{background:#2e7d32}.i-minor{background:#f9a825}.i-major{background:#ef6c00}"
    ".i-critical{background:#c62828}.i-maintenance{background:#1565c0}\n"
    "table{width:100%;border-collapse:collapse}td{padding:.4rem;border-bottom:1px solid #ddd;"
    "vertical-align:middle}\n"
    ".s-operational{color:#2e7d32}.s-degraded_performance{color:#b26a00}"
    ".s-partial_outage{color:#ef6c00}.s-major_outage{color:#c62828}"
    ".s-under_maintenance{color:#1565c0}\n"
    ".bar{display:flex;gap:1px;height:1.4rem}.bar span{flex:1;background:#2e7d32}"
    ".bar .nodata{background:#ccc}.bar .partial{background:#f9a825}.bar .down{background:#c62828}\n"
    ".pct{white-space:nowrap;text-align:right}\n"
    ".incident{border-left:4px solid #999;padding:.2rem 1rem;margin:1rem 0}"
    ".incident p{white-space:pre-wrap}\n"
    "footer{margin-top:2rem;color:#666;font-size:.9rem}\n";

/* The 90-day bar of a component: one span per day. */
static void html_bar(struct sbuf *b, const struct status_view *v, const char *region, int comp)
{
	long long today = v->now_ms / STATUS_DAY_MS;

	sb_printf(b, "<div class=\"bar\">");
	for (long long d = today - STATUS_DAYS + 1; d <= today; d++) {
		long long obs, down;
		char t[32];

		status_uptime_day(v->uptime, region, comp, d, &obs, &down);
		status_iso8601(d * STATUS_DAY_MS, t);
		t[10] = '\0';
		if (obs == 0)
			sb_printf(b, "<span class=\"nodata\" title=\"%s: no data\"></span>", t);
		else
			sb_printf(b, "<span class=\"%s\" title=\"%s: %.3f%%\"></span>",
				  down == 0 ? "up" : down * 100 < obs ? "partial" : "down", t,
				  100.0 * (double)(obs - down) / (double)obs);
	}
	sb_printf(b, "</div>");
}

/* One incident as HTML: every operator text escaped. */
static void html_incident(struct sbuf *b, const struct status_incident *inc)
{
	char t[32];

	sb_printf(b, "<div class=\"incident\" id=\"incident-%s\"><h3>", inc->id);
	sb_esc(b, inc->name);
	sb_printf(b, "</h3><div>Impact: %s</div>", inc->impact);
	if (status_incident_maintenance(inc) && inc->scheduled_for_ms > 0) {
		status_iso8601(inc->scheduled_for_ms, t);
		sb_printf(b, "<div>Scheduled for %s", t);
		if (inc->scheduled_until_ms > 0) {
			status_iso8601(inc->scheduled_until_ms, t);
			sb_printf(b, " until %s", t);
		}
		sb_printf(b, "</div>");
	}
	for (size_t j = 0; j < inc->n_updates; j++) {
		status_iso8601(inc->updates[j].at_ms, t);
		sb_printf(b, "<p><strong>%s</strong> <time datetime=\"%s\">%s</time><br>",
			  inc->updates[j].status, t, t);
		sb_esc(b, inc->updates[j].body);
		sb_printf(b, "</p>");
	}
	sb_printf(b, "</div>\n");
}

/* The HTML page: no script, no inline style, every operator text escaped. */
char *status_render_html(const struct status_view *v)
{
	struct sbuf b = {0};
	const char *ind, *desc;
	char t[32];
	size_t shown = 0;

	status_indicator(v, &ind, &desc);
	sb_printf(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
		      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
		      "<title>");
	sb_esc(&b, v->page_name);
	sb_printf(&b, " status</title><link rel=\"stylesheet\" href=\"/status.css\">"
		      "<link rel=\"alternate\" type=\"application/atom+xml\" href=\"/history.atom\""
		      " title=\"Incident history\"></head>\n<body><h1>");
	sb_esc(&b, v->page_name);
	sb_printf(&b, " status</h1>\n<div class=\"banner i-%s\" id=\"indicator\">%s</div>\n", ind,
		  desc);
	sb_printf(&b, "<h2>Active incidents and maintenance</h2>\n");
	for (size_t i = 0; i < v->n_incidents; i++)
		if (status_incident_unresolved(v->incidents[i])) {
			html_incident(&b, v->incidents[i]);
			shown++;
		}
	if (shown == 0)
		sb_printf(&b, "<p>No incidents reported.</p>\n");
	for (size_t c = 0; c < v->n_cells; c++) {
		const char *r = v->cells[c].region;

		sb_printf(&b, "<h2>Region ");
		sb_esc(&b, r);
		sb_printf(&b, "</h2>\n<table>\n");
		for (int k = 0; k < STATUS_COMPONENTS; k++) {
			enum status_state s = v->states[c][k];
			double up = status_uptime_percent(v->uptime, r, k, v->now_ms / STATUS_DAY_MS);
			char id[40];

			component_id(id, r, k);
			sb_printf(&b, "<tr id=\"c-");
			sb_esc(&b, id);
			sb_printf(&b, "\"><td>%s</td><td class=\"s-%s\">%s</td><td>",
				  status_component_names[k], status_state_name(s),
				  status_state_label(s));
			html_bar(&b, v, r, k);
			if (up < 0)
				sb_printf(&b, "</td><td class=\"pct\">no data</td></tr>\n");
			else
				sb_printf(&b, "</td><td class=\"pct\">%.2f%% uptime</td></tr>\n",
					  up);
		}
		sb_printf(&b, "</table>\n");
	}
	sb_printf(&b, "<h2>Past incidents</h2>\n");
	shown = 0;
	for (size_t i = 0; i < v->n_incidents && shown < 20; i++)
		if (!status_incident_unresolved(v->incidents[i])) {
			html_incident(&b, v->incidents[i]);
			shown++;
		}
	if (shown == 0)
		sb_printf(&b, "<p>No past incidents.</p>\n");
	status_iso8601(v->now_ms, t);
	sb_printf(&b, "<footer>Updated <time datetime=\"%s\">%s</time>. "
		      "<a href=\"/history.atom\">Atom feed</a> &middot; "
		      "<a href=\"/api/v2/summary.json\">JSON</a></footer>\n</body></html>\n",
		  t, t);
	return sb_done(&b);
}
