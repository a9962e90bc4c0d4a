/*
 * wardctl_status — `wardctl status components` and `wardctl status incident
 * create|update|resolve|list` (SPEC §3, §7).
 *
 * Incidents and maintenances live in a cell's Redis as hb:ops:status:incident:<id>
 * (the operator's own health namespace, which the status page's read-only user
 * reads in every cell), one JSON document each in the shape
 * gateway_status_model.c validates; --region picks the cell (default us). The
 * component view is computed here from the same health data with the status page's
 * own rules (the model is compiled in), as the "ops" Redis user.
 */
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto.h"
#include "envelope.h"
#include "wardctl.h"

/* The status page's model: states, incident validation (no I/O but its uptime file). */
#include "../../services/gateway/gateway_status_model.c"

int wardctl_status(const struct wardctl_conf *conf, int argc, char **argv);

const char wardctl_status_usage[] =
    "usage: wardctl status components [--region R]\n"
    "       wardctl status incident create --name TEXT --body TEXT [--status S]\n"
    "               [--impact none|minor|major|critical] [--components us-api,eu-auth,...]\n"
    "               [--maintenance --scheduled-for T --scheduled-until T] [--region R]\n"
    "       wardctl status incident update --id ID --status S --body TEXT [--region R]\n"
    "       wardctl status incident resolve --id ID [--body TEXT] [--region R]\n"
    "       wardctl status incident list [--region R]\n"
    "\n"
    "Incident statuses: investigating identified monitoring resolved postmortem;\n"
    "maintenance: scheduled in_progress verifying completed. Times T: seconds since\n"
    "the epoch or YYYY-MM-DDTHH:MM:SSZ. Components: <region>-<api|web|email|auth|\n"
    "tickets|audit|backups>. Incidents are stored in the cell --region (default us);\n"
    "the status page shows those of every cell.\n";

#define INC_PREFIX "hb:ops:status:incident:"

/* Connect to a cell's Redis as the operator; NULL after printing an error. */
static redisContext *status_redis(const struct wardctl_conf *conf, int region)
{
	const struct wardctl_cell *cell = &conf->cell[region];
	struct timeval tv = {3, 0};
	redisContext *rc = redisConnectWithTimeout(cell->redis_host, cell->redis_port, tv);
	redisReply *r;

	if (rc == NULL || rc->err) {
		wardctl_error("region %s: cannot reach Redis", wardctl_regions[region]);
		redisFree(rc);
		return NULL;
	}
	(void)redisSetTimeout(rc, tv);
	r = redisCommand(rc, "AUTH %s %b", cell->redis_user, cell->redis_password.data,
			 cell->redis_password.len);
	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		wardctl_error("region %s: Redis refused the operator", wardctl_regions[region]);
		freeReplyObject(r);
		redisFree(rc);
		return NULL;
	}
	freeReplyObject(r);
	return rc;
}

/* A time argument: epoch seconds or YYYY-MM-DDTHH:MM:SSZ → ms; -1 if neither. */
static long long status_time_arg(const char *s)
{
	struct tm tm = {0};
	char *end;
	long long v = strtoll(s, &end, 10);

	if (*s != '\0' && *end == '\0' && v > 0 && v < 32503680000LL)
		return v * 1000;
	end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (end == NULL || *end != '\0')
		return -1;
	return (long long)timegm(&tm) * 1000;
}

/* A fresh id of 12 characters [a-z0-9]. */
static int status_new_id(char out[13])
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char b[12];

	if (crypto_random(b, sizeof b) < 0)
		return -1;
	for (int i = 0; i < 12; i++)
		out[i] = alphabet[b[i] % 36];
	out[12] = '\0';
	return 0;
}

/* Read an incident document; NULL (after an error message) if absent or malformed. */
static json_t *status_incident_get(redisContext *rc, const char *id)
{
	redisReply *r;
	json_t *o = NULL;
	struct status_incident *inc;

	if (!status_id_ok(id)) {
		wardctl_error("bad incident id");
		return NULL;
	}
	r = redisCommand(rc, "GET " INC_PREFIX "%s", id);
	if (r == NULL || r->type != REDIS_REPLY_STRING) {
		wardctl_error("no incident %s in this region", id);
		freeReplyObject(r);
		return NULL;
	}
	if ((inc = status_incident_parse(r->str, r->len)) == NULL ||
	    (o = json_loadb(r->str, r->len, 0, NULL)) == NULL)
		wardctl_error("incident %s is malformed", id);
	status_incident_free(inc);
	freeReplyObject(r);
	return o;
}

/* Validate with the status page's own parser, then store. 0 or -1. */
static int status_incident_put(redisContext *rc, json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	struct status_incident *inc = s != NULL ? status_incident_parse(s, strlen(s)) : NULL;
	redisReply *r = NULL;
	int ret = -1;

	if (inc == NULL) {
		wardctl_error("the incident is not valid (name/body 1..%d bytes of UTF-8, known "
			      "status and impact, component ids [a-z0-9-], at most %d updates)",
			      STATUS_TEXT_MAX, STATUS_UPDATES_MAX);
		goto out;
	}
	r = redisCommand(rc, "SET " INC_PREFIX "%s %s", inc->id, s);
	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		wardctl_error("cannot store the incident: %s",
			      r != NULL ? r->str : "connection lost");
		goto out;
	}
	ret = 0;
out:
	freeReplyObject(r);
	status_incident_free(inc);
	free(s);
	return ret;
}

/* Prepend an update {id, status, body, at_ms} and set the incident's status. */
static int status_add_update(json_t *o, const char *status, const char *body, long long now)
{
	json_t *ups = json_object_get(o, "updates"), *u = json_object();
	char uid[13];

	if (!json_is_array(ups) || u == NULL || status_new_id(uid) < 0) {
		json_decref(u);
		return -1;
	}
	json_object_set_new(u, "id", json_string(uid));
	json_object_set_new(u, "status", json_string(status));
	json_object_set_new(u, "body", json_string(body));
	json_object_set_new(u, "at_ms", json_integer(now));
	if (json_array_insert_new(ups, 0, u) != 0)
		return -1;
	json_object_set_new(o, "status", json_string(status));
	json_object_set_new(o, "updated_ms", json_integer(now));
	if (strcmp(status, "monitoring") == 0)
		json_object_set_new(o, "monitoring_ms", json_integer(now));
	if (strcmp(status, "resolved") == 0 || strcmp(status, "completed") == 0)
		json_object_set_new(o, "resolved_ms", json_integer(now));
	return 0;
}

/* Record the operator's action in the cell's audit log (best effort: warn only). */
static void status_audit(const struct wardctl_conf *conf, int region, const char *action,
			 const char *id)
{
	const char *err = NULL;

	if (wardctl_audit_record(conf, region, NULL, "status", action, id, "{}", &err) < 0)
		wardctl_error("warning: not recorded in the audit log: %s",
			      err != NULL ? err : "?");
}

/* wardctl status incident …: argv[0] is "create", "update", "resolve" or "list". */
static int status_incident(const struct wardctl_conf *conf, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"region", required_argument, NULL, 'r'},	  {"id", required_argument, NULL, 'i'},
	    {"name", required_argument, NULL, 'n'},	  {"body", required_argument, NULL, 'b'},
	    {"status", required_argument, NULL, 's'},	  {"impact", required_argument, NULL, 'p'},
	    {"components", required_argument, NULL, 'c'}, {"maintenance", no_argument, NULL, 'm'},
	    {"scheduled-for", required_argument, NULL, 'f'},
	    {"scheduled-until", required_argument, NULL, 'u'},
	    {NULL, 0, NULL, 0}};
	const char *region_name = "us", *id = NULL, *name = NULL, *body = NULL, *st = NULL;
	const char *impact = NULL, *comps = NULL, *sfor = NULL, *suntil = NULL;
	bool maint = false;
	const char *verb = argv[0];
	redisContext *rc = NULL;
	json_t *o = NULL;
	long long now = envelope_now_ms();
	int c, region, ret = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r': region_name = optarg; break;
		case 'i': id = optarg; break;
		case 'n': name = optarg; break;
		case 'b': body = optarg; break;
		case 's': st = optarg; break;
		case 'p': impact = optarg; break;
		case 'c': comps = optarg; break;
		case 'm': maint = true; break;
		case 'f': sfor = optarg; break;
		case 'u': suntil = optarg; break;
		default: fputs(wardctl_status_usage, stderr); return 2;
		}
	}
	if ((region = wardctl_region_index(region_name)) < 0) {
		wardctl_error("unknown region '%s'", region_name);
		return 2;
	}
	if ((rc = status_redis(conf, region)) == NULL)
		return 1;
	if (strcmp(verb, "create") == 0) {
		char iid[13];
		json_t *ca = json_array();
		long long f = 0, u = 0;

		if (name == NULL || body == NULL) {
			wardctl_error("create needs --name and --body");
			json_decref(ca);
			ret = 2;
			goto out;
		}
		if ((sfor != NULL && (f = status_time_arg(sfor)) < 0) ||
		    (suntil != NULL && (u = status_time_arg(suntil)) < 0) || (u > 0 && u <= f)) {
			wardctl_error("bad --scheduled-for/--scheduled-until");
			json_decref(ca);
			ret = 2;
			goto out;
		}
		for (const char *p = comps; p != NULL && *p != '\0';) {
			size_t n = strcspn(p, ",");
			char one[40];

			snprintf(one, sizeof one, "%.*s", (int)(n < 39 ? n : 39), p);
			json_array_append_new(ca, json_string(one));
			p += n + (p[n] == ',');
		}
		if (status_new_id(iid) < 0 || (o = json_object()) == NULL) {
			json_decref(ca);
			goto out;
		}
		json_object_set_new(o, "id", json_string(iid));
		json_object_set_new(o, "name", json_string(name));
		json_object_set_new(o, "status", json_string(st ? st : maint ? "scheduled"
									   : "investigating"));
		json_object_set_new(o, "impact",
				    json_string(maint ? "maintenance" : impact ? impact : "minor"));
		json_object_set_new(o, "created_ms", json_integer(now));
		json_object_set_new(o, "updated_ms", json_integer(now));
		json_object_set_new(o, "resolved_ms", json_integer(0));
		json_object_set_new(o, "monitoring_ms", json_integer(0));
		json_object_set_new(o, "scheduled_for_ms", json_integer(maint ? f : 0));
		json_object_set_new(o, "scheduled_until_ms", json_integer(maint ? u : 0));
		json_object_set_new(o, "components", ca);
		json_object_set_new(o, "updates", json_array());
		if (status_add_update(o, st ? st : maint ? "scheduled" : "investigating", body,
				      now) < 0)
			goto out;
	} else if (strcmp(verb, "update") == 0 || strcmp(verb, "resolve") == 0) {
		bool resolve = strcmp(verb, "resolve") == 0;

		if (id == NULL || (!resolve && (st == NULL || body == NULL))) {
			wardctl_error("%s needs --id%s", verb, resolve ? "" : ", --status and --body");
			ret = 2;
			goto out;
		}
		if ((o = status_incident_get(rc, id)) == NULL)
			goto out;
		if (resolve) {
			bool m = json_is_string(json_object_get(o, "impact")) &&
				 strcmp(json_string_value(json_object_get(o, "impact")),
					"maintenance") == 0;

			st = m ? "completed" : "resolved";
			if (body == NULL)
				body = m ? "The maintenance is complete." : "This incident is resolved.";
		}
		if (status_add_update(o, st, body, now) < 0)
			goto out;
	} else if (strcmp(verb, "list") == 0) {
		redisReply *r = redisCommand(rc, "SCAN 0 MATCH " INC_PREFIX "* COUNT 10000");
		json_t *list = json_array();

		if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
			for (size_t i = 0; i < r->element[1]->elements; i++) {
				json_t *one = status_incident_get(
				    rc, r->element[1]->element[i]->str + strlen(INC_PREFIX));

				if (one != NULL)
					json_array_append_new(list, one);
			}
		freeReplyObject(r);
		ret = wardctl_print(list) < 0;
		json_decref(list);
		goto out;
	} else {
		wardctl_error("unknown incident command '%s'", verb);
		ret = 2;
		goto out;
	}
	if (status_incident_put(rc, o) < 0)
		goto out;
	status_audit(conf, region, strcmp(verb, "create") == 0 ? "incident.create"
				   : strcmp(verb, "update") == 0 ? "incident.update"
								 : "incident.resolve",
		     json_string_value(json_object_get(o, "id")));
	ret = wardctl_print(o) < 0;
out:
	json_decref(o);
	redisFree(rc);
	return ret;
}

/* A gateway's answer counters (hb:gateway:<instance>:http): add a fresh one's window
 * to the cell, as the status page's poller does. */
static void status_read_http(struct status_cell *cell, const char *key, const json_t *o,
			     long long now)
{
	size_t n = strlen(key);
	long long at, answers, errors, ws, wa, we;

	if (n <= 16 || strncmp(key, "hb:gateway:", 11) != 0 || strcmp(key + n - 5, ":http") != 0 ||
	    status_http_parse(o, &at, &answers, &errors, &ws, &wa, &we) < 0 ||
	    now - at > STATUS_DEFAULT_HEARTBEAT_TIMEOUT_MS)
		return;
	cell->http_answers += answers;
	cell->http_5xx += errors;
	cell->window_answers += wa;
	cell->window_5xx += we;
	if (ws > cell->window_s)
		cell->window_s = (int)ws;
}

/* One cell's health data, read as the operator (the status page's inputs: heartbeats,
 * queue depths, the gateways' answer counters, the last verified backup). The uptime
 * lease's value goes to owner (its size), "" if none. */
static void status_read_cell(redisContext *rc, struct status_cell *cell, long long now, char *owner,
			     size_t owner_size)
{
	static const char *const consumers[] = {"auth", "ticket", "audit", "backup", "mail-out"};
	char cursor[32] = "0";

	cell->reachable = rc != NULL;
	owner[0] = '\0';
	if (rc == NULL)
		return;
	for (size_t j = 0; j < sizeof consumers / sizeof consumers[0]; j++) {
		int i = status_service_index_of(consumers[j]);
		/* XLEN: the depth (consumers delete what they ack); XPENDING: not acked */
		redisReply *r = redisCommand(rc, "XLEN q:%s", consumers[j]);

		cell->svc[i].depth = status_reply_count(r);
		freeReplyObject(r);
		r = redisCommand(rc, "XPENDING q:%s %s", consumers[j], consumers[j]);
		cell->svc[i].pending = status_reply_count(r);
		freeReplyObject(r);
	}
	do {
		redisReply *r = redisCommand(rc, "SCAN %s MATCH hb:* COUNT 1000", cursor);

		if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
			cell->reachable = r != NULL;
			freeReplyObject(r);
			return;
		}
		snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
		for (size_t k = 0; k < r->element[1]->elements; k++) {
			const char *key = r->element[1]->element[k]->str;
			redisReply *v = redisCommand(rc, "GET %s", key);
			json_t *o;
			bool fresh, db_down;
			int i;

			if (v == NULL || v->type != REDIS_REPLY_STRING) {
				freeReplyObject(v);
				continue;
			}
			if (strcmp(key, STATUS_LEASE_KEY) == 0) {
				snprintf(owner, owner_size, "%.*s", (int)v->len, v->str);
				freeReplyObject(v);
				continue;
			}
			i = status_heartbeat_parse(v->str, v->len, now,
						   STATUS_DEFAULT_HEARTBEAT_TIMEOUT_MS, &fresh,
						   &db_down);
			if (i >= 0 && fresh) {
				cell->svc[i].instances++;
				cell->svc[i].db_down = cell->svc[i].db_down || db_down;
			}
			o = json_loadb(v->str, v->len, 0, NULL);
			status_read_http(cell, key, o, now);
			if (strcmp(key, "hb:backup:last-verified") == 0) {
				if (json_is_integer(json_object_get(o, "at_ms")))
					cell->backup_verified_ms =
					    json_integer_value(json_object_get(o, "at_ms"));
				if (json_is_false(json_object_get(o, "ok")))
					cell->backup_verify_failed = true;
			}
			if (strstr(key, ":audit-outbox") != NULL &&
			    json_is_true(json_object_get(o, "degraded")) &&
			    (i = status_service_index_of(key + 3)) >= 0)
				cell->svc[i].outbox_degraded = true;
			if (strcmp(key, "hb:audit:backlog") == 0 &&
			    json_is_true(json_object_get(o, "degraded")))
				cell->audit_backlog_degraded = true;
			json_decref(o);
			freeReplyObject(v);
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0);
}

/* The cell's error rate over the gateways' window: {window_s, answers, errors_5xx,
 * percent} (percent null without answers). */
static json_t *status_error_json(const struct status_cell *cell)
{
	json_t *o = json_object();

	json_object_set_new(o, "window_s", json_integer(cell->window_s));
	json_object_set_new(o, "answers", json_integer(cell->window_answers));
	json_object_set_new(o, "errors_5xx", json_integer(cell->window_5xx));
	json_object_set_new(
	    o, "percent",
	    cell->window_answers > 0
		? json_real((double)(1000 * cell->window_5xx / cell->window_answers) / 10.0)
		: json_null());
	return o;
}

/* wardctl status components [--region R]: each cell's components and states. */
static int status_components(const struct wardctl_conf *conf, int argc, char **argv)
{
	static const struct option opts[] = {{"region", required_argument, NULL, 'r'},
					     {NULL, 0, NULL, 0}};
	/* The status page's default thresholds; the error window is the one the gateways
	 * publish. Dead letters need two readings: not judged here (the page does). */
	const struct status_thresholds t = {
	    STATUS_DEFAULT_PENDING_HIGH, 1000LL * STATUS_DEFAULT_BACKUP_MAX_AGE_S,
	    STATUS_DEFAULT_ERROR_RATE_PCT, STATUS_DEFAULT_ERROR_MAJOR_PCT,
	    STATUS_DEFAULT_ERROR_MIN};
	const char *only = NULL;
	json_t *root = json_object(), *regions = json_object();
	long long now = envelope_now_ms();
	int c, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c != 'r') {
			fputs(wardctl_status_usage, stderr);
			json_decref(root);
			json_decref(regions);
			return 2;
		}
		only = optarg;
	}
	if (only != NULL && wardctl_region_index(only) < 0) {
		wardctl_error("unknown region '%s'", only);
		json_decref(root);
		json_decref(regions);
		return 2;
	}
	for (int r = 0; r < WARDCTL_REGIONS; r++) {
		struct status_cell cell = {0};
		enum status_state st[STATUS_COMPONENTS];
		redisContext *rc;
		json_t *o, *comps, *reasons;
		char owner[128];

		if (only != NULL && strcmp(only, wardctl_regions[r]) != 0)
			continue;
		o = json_object(), comps = json_object(), reasons = json_object();
		rc = status_redis(conf, r);
		snprintf(cell.region, sizeof cell.region, "%s", wardctl_regions[r]);
		status_read_cell(rc, &cell, now, owner, sizeof owner);
		redisFree(rc);
		status_evaluate(&cell, &t, now, st);
		for (int k = 0; k < STATUS_COMPONENTS; k++) {
			char why[8][STATUS_REASON_MAX];
			int n = status_explain(&cell, &t, now, k, why, 8);
			json_t *a = json_array();

			json_object_set_new(comps, status_component_ids[k],
					    json_string(status_state_name(st[k])));
			for (int j = 0; j < n; j++)
				json_array_append_new(a, json_string(why[j]));
			if (n > 0)
				json_object_set_new(reasons, status_component_ids[k], a);
			else
				json_decref(a);
		}
		json_object_set_new(o, "reachable", json_boolean(cell.reachable));
		json_object_set_new(o, "components", comps);
		json_object_set_new(o, "reasons", reasons);
		json_object_set_new(o, "error_rate", status_error_json(&cell));
		json_object_set_new(o, "uptime_owner", owner[0] ? json_string(owner) : json_null());
		json_object_set_new(regions, wardctl_regions[r], o);
	}
	json_object_set_new(root, "regions", regions);
	ret = wardctl_print(root) < 0;
	json_decref(root);
	return ret;
}

/* wardctl status …: argv[0] is "status". */
int wardctl_status(const struct wardctl_conf *conf, int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "components") == 0)
		return status_components(conf, argc - 1, argv + 1);
	if (argc >= 3 && strcmp(argv[1], "incident") == 0)
		return status_incident(conf, argc - 2, argv + 2);
	fputs(wardctl_status_usage, stderr);
	return 2;
}
