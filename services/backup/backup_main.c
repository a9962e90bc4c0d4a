/*
 * ward-backup — encrypted per-tenant backups, retention and restore.
 *
 * Runs under the common skeleton (common/daemon.c): config, log, refusal of root,
 * its own Redis credentials and PostgreSQL role, heartbeat, clean SIGTERM.
 * Operators call it on q:backup (backup.run, backup.list, backup.verify,
 * backup.restore; principal kind "operator" only); a timer runs the daily backup of
 * every active tenant at backup.daily_at (UTC), then verifies each new backup and
 * applies retention. The jobs themselves are in backup_job.c, the format in
 * backup_format.c. Point-in-time recovery of the cell (backup.base, backup.pitr,
 * backup.pitr_expire, backup.scratch_drop, the daily base backup and the
 * `ward-backup wal-push|wal-fetch` modes PostgreSQL runs) is in backup_wal.c.
 */
#include <event2/event.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup.pb-c.h"
#include "backup_job.h"
#include "backup_wal.h"
#include "auditlog.h"
#include "daemon.h"
#include "log.h"

#define BACKUP_TICK_S 30

static struct backup_conf backup_conf;
static struct event *backup_timer;

/* "HH:MM" with HH < 24 and MM < 60. */
static int backup_valid_time(const void *value, const char **reason_r)
{
	const char *s = *(char *const *)value;

	if (s == NULL || strlen(s) != 5 || s[2] != ':' || s[0] < '0' || s[0] > '2' ||
	    s[1] < '0' || s[1] > '9' || s[3] < '0' || s[3] > '5' || s[4] < '0' || s[4] > '9' ||
	    (s[0] - '0') * 10 + (s[1] - '0') > 23) {
		*reason_r = "expected HH:MM (UTC)";
		return -1;
	}
	return 0;
}

#define BC(field) offsetof(struct backup_conf, field)
static const struct conf_entry backup_conf_entries[] = {
	/* No target: the daemon runs (ping, list) but refuses to back up. */
	{ "backup.dir", CONF_STR, BC(dir), false, NULL, 0, 0, NULL },
	{ "backup.daily_at", CONF_STR, BC(daily_at), false, "03:00", 0, 0, backup_valid_time },
	{ "backup.chunk_kib", CONF_INT, BC(chunk_kib), false, "1024", 1, 65536, NULL },
	{ "backup.retention_days", CONF_INT, BC(retention_days), false, "35", 1, 3650, NULL },
	{ "backup.closed_days", CONF_INT, BC(closed_days), false, "60", 1, 3650, NULL },
	{ "backup.scratch_dir", CONF_STR, BC(scratch_dir), false, "/tmp", 0, 0, NULL },
	{ "backup.pg_bin", CONF_STR, BC(pg_bin), false, "/usr/lib/postgresql/15/bin", 0, 0, NULL },
};

/* The job context of a request (actor from its principal) or of the schedule. */
static void backup_ctx_init(struct daemon *d, const Ward__Envelope *env, char *actor,
			    size_t size, struct backup_ctx *c)
{
	if (env != NULL && env->principal != NULL && env->principal->id != NULL)
		snprintf(actor, size, "operator:%s", env->principal->id);
	else
		snprintf(actor, size, "service:backup");
	c->db = daemon_db(d);
	c->conf = &backup_conf;
	c->region = daemon_config(d)->region;
	c->kek = daemon_kek(d);
	c->actor = actor;
}

/* 1 if s is a canonical lower-case UUID. */
static int backup_uuid_ok(const char *s)
{
	if (s == NULL || strlen(s) != 36)
		return 0;
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return 0;
		} else if (strchr("0123456789abcdef", s[i]) == NULL || s[i] == '\0') {
			return 0;
		}
	}
	return 1;
}

/* Back up every tenant of the cell (active ones; with tenant_id, that one only). */
static int backup_all(const struct backup_ctx *c, const char *tenant_id, json_t **out_r,
		      const char **error_r)
{
	PGresult *res = db_exec(c->db, "SELECT id, slug, status FROM backup.tenants()", 0, NULL,
				error_r);
	json_t *arr = json_array(), *failed = json_array();
	int found = 0;

	if (res == NULL || arr == NULL || failed == NULL) {
		PQclear(res);
		json_decref(arr);
		json_decref(failed);
		return -1;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		const char *id = PQgetvalue(res, i, 0), *err = NULL;
		json_t *one = NULL;

		if (tenant_id != NULL && tenant_id[0] != '\0' && strcmp(id, tenant_id) != 0)
			continue;
		if (strcmp(PQgetvalue(res, i, 2), "active") != 0 && (tenant_id == NULL ||
								     tenant_id[0] == '\0'))
			continue;
		found++;
		if (backup_job_run(c, id, PQgetvalue(res, i, 1), &one, &err) < 0) {
			log_warn("backup of tenant %s failed: %s", id, err ? err : "?");
			json_array_append_new(failed, json_pack("{s:s, s:s}", "tenant_id", id,
								"error", err ? err : "failed"));
		} else {
			json_array_append_new(arr, one);
		}
	}
	PQclear(res);
	if (tenant_id != NULL && tenant_id[0] != '\0' && found == 0) {
		json_decref(arr);
		json_decref(failed);
		*error_r = "no such tenant in this cell";
		return -1;
	}
	if (tenant_id != NULL && tenant_id[0] != '\0' && json_array_size(failed) > 0) {
		*error_r = json_string_value(json_object_get(json_array_get(failed, 0), "error"));
		/* error text lives in failed: copy before freeing */
		static char msg[512];

		snprintf(msg, sizeof msg, "%s", *error_r ? *error_r : "backup failed");
		*error_r = msg;
		json_decref(arr);
		json_decref(failed);
		return -1;
	}
	*out_r = json_pack("{s:s, s:o, s:o}", "region", c->region, "backups", arr, "failed",
			   failed);
	return *out_r != NULL ? 0 : -1;
}

/* Pack a JSON result as the reply. */
static queue_result_t backup_reply(json_t *out, struct queue_reply *reply, const char **error_r)
{
	Ward__BackupReply r = WARD__BACKUP_REPLY__INIT;
	char *s = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
	size_t n;

	json_decref(out);
	if (s == NULL) {
		*error_r = "out of memory";
		return QUEUE_RETRY;
	}
	r.json = s;
	n = ward__backup_reply__get_packed_size(&r);
	reply->data = malloc(n ? n : 1);
	if (reply->data == NULL) {
		free(s);
		*error_r = "out of memory";
		return QUEUE_RETRY;
	}
	reply->len = ward__backup_reply__pack(&r, reply->data);
	free(s);
	return QUEUE_DONE;
}

/* One handler for the four methods: unpack, check, run the job, reply. */
static queue_result_t backup_handle(struct daemon *d, const Ward__Envelope *env,
				    const uint8_t *payload, size_t len, struct queue_reply *reply,
				    const char **error_r)
{
	static char errbuf[512];
	Ward__BackupRequest *req = ward__backup_request__unpack(NULL, len, payload);
	struct backup_ctx c;
	char actor[96];
	const char *err = NULL;
	json_t *out = NULL;
	int r = -1;

	if (req == NULL) {
		*error_r = "backup: malformed BackupRequest";
		return QUEUE_REJECT;
	}
	backup_ctx_init(d, env, actor, sizeof actor, &c);
	if (backup_conf.dir == NULL && strcmp(env->method, "backup.list") != 0) {
		err = "no backup target configured (backup.dir)";
	} else if (req->tenant_id[0] != '\0' && !backup_uuid_ok(req->tenant_id)) {
		err = "tenant_id must be a UUID";
	} else if (req->backup_id[0] != '\0' && strspn(req->backup_id, "0123456789abcdef") != 32) {
		err = "backup_id must be 32 hex digits";
	} else if (strcmp(env->method, "backup.run") == 0) {
		r = backup_all(&c, req->tenant_id, &out, &err);
	} else if (strcmp(env->method, "backup.list") == 0) {
		r = backup_job_list(&c, req->tenant_id, &out, &err);
	} else if (strcmp(env->method, "backup.base") == 0) {
		r = backup_wal_base(&c, daemon_config(d)->pg_conninfo,
				    (const char *)daemon_config(d)->pg_password.data, &out, &err);
	} else if (strcmp(env->method, "backup.pitr") == 0) {
		r = backup_wal_restore(&c, daemon_config(d)->pg_conninfo,
				       (const char *)daemon_config(d)->pg_password.data,
				       req->tenant_id, req->to_ms, &out, &err);
	} else if (strcmp(env->method, "backup.pitr_expire") == 0) {
		r = backup_wal_expire(&c, req->to_ms > 0 ? req->to_ms : (int64_t)time(NULL) * 1000,
				      &out, &err);
	} else if (strcmp(env->method, "backup.scratch_drop") == 0) {
		r = backup_wal_scratch_drop(&c, req->backup_id, &out, &err);
	} else if (req->tenant_id[0] == '\0') {
		err = "tenant_id is required";
	} else if (strcmp(env->method, "backup.verify") == 0) {
		r = backup_job_verify(&c, req->tenant_id, req->backup_id[0] ? req->backup_id : NULL,
				      req->to_ms, &out, &err);
	} else {
		r = backup_job_restore(&c, req->tenant_id,
				       req->backup_id[0] ? req->backup_id : NULL, req->to_ms, &out,
				       &err);
	}
	ward__backup_request__free_unpacked(req, NULL);
	auditlog_relay_kick(d);
	if (r < 0) {
		snprintf(errbuf, sizeof errbuf, "%s", err != NULL ? err : "failed");
		log_warn("%s: %s", env->method, errbuf);
		reply->status = 422;
		reply->error = errbuf;
		return QUEUE_DONE;
	}
	return backup_reply(out, reply, error_r);
}

/* The daily run: once a day after daily_at (UTC), every active tenant, each new
 * backup verified, then retention. The day is claimed in the database first, so two
 * instances do not both run it. */
static void backup_tick(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	struct backup_ctx c;
	char actor[96], day[16], hm[8];
	const char *p[1] = { day }, *err = NULL;
	time_t now = time(NULL);
	struct tm tm;
	PGresult *res;
	json_t *out = NULL, *bk;
	size_t i;

	(void)fd;
	(void)what;
	gmtime_r(&now, &tm);
	strftime(day, sizeof day, "%Y-%m-%d", &tm);
	strftime(hm, sizeof hm, "%H:%M", &tm);
	if (backup_conf.dir == NULL || strcmp(hm, backup_conf.daily_at) < 0)
		return;
	backup_ctx_init(d, NULL, actor, sizeof actor, &c);
	res = db_exec(c.db,
		      "INSERT INTO backup.schedule (one, last_day) VALUES (true, $1::date) "
		      "ON CONFLICT (one) DO UPDATE SET last_day = EXCLUDED.last_day "
		      "WHERE backup.schedule.last_day < EXCLUDED.last_day RETURNING last_day",
		      1, p, &err);
	if (res == NULL) {
		log_warn("daily backup: %s", err);
		return;
	}
	if (PQntuples(res) == 0) { /* already done today */
		PQclear(res);
		return;
	}
	PQclear(res);
	log_info("daily backup of %s starts", c.region);
	if (backup_all(&c, NULL, &out, &err) < 0) {
		log_warn("daily backup: %s", err ? err : "failed");
		return;
	}
	json_array_foreach(json_object_get(out, "backups"), i, bk) {
		json_t *v = NULL;
		const char *verr = NULL;

		if (backup_job_verify(&c, json_string_value(json_object_get(bk, "tenant_id")),
				      json_string_value(json_object_get(bk, "backup_id")), 0, &v,
				      &verr) < 0)
			log_warn("verify of backup %s failed: %s",
				 json_string_value(json_object_get(bk, "backup_id")),
				 verr ? verr : "?");
		json_decref(v);
	}
	json_decref(out);
	out = NULL;
	if (backup_job_expire(&c, &out, &err) < 0)
		log_warn("retention: %s", err ? err : "failed");
	json_decref(out);
	out = NULL;
	/* The cell's base backup for point-in-time recovery, and its retention. */
	if (backup_wal_base(&c, daemon_config(d)->pg_conninfo,
			    (const char *)daemon_config(d)->pg_password.data, &out, &err) < 0)
		log_warn("base backup: %s", err ? err : "failed");
	json_decref(out);
	out = NULL;
	if (backup_wal_expire(&c, (int64_t)now * 1000, &out, &err) < 0)
		log_warn("point-in-time retention: %s", err ? err : "failed");
	json_decref(out);
	auditlog_relay_kick(d);
}

static int backup_init(struct daemon *d, const char **error_r)
{
	struct timeval tv = { BACKUP_TICK_S, 0 };

	backup_timer = event_new(daemon_base(d), -1, EV_PERSIST, backup_tick, d);
	if (backup_timer == NULL || event_add(backup_timer, &tv) < 0) {
		*error_r = "cannot start the schedule timer";
		return -1;
	}
	/* A first look right away: a daemon started after daily_at runs today's backup. */
	event_active(backup_timer, EV_TIMEOUT, 0);
	return 0;
}

static void backup_deinit(struct daemon *d)
{
	(void)d;
	if (backup_timer != NULL)
		event_free(backup_timer);
	backup_timer = NULL;
}

static const struct daemon_method backup_methods[] = {
	{ "backup.run", backup_handle, "operator", 4096, NULL },
	{ "backup.list", backup_handle, "operator", 4096, NULL },
	{ "backup.verify", backup_handle, "operator", 4096, NULL },
	{ "backup.restore", backup_handle, "operator", 4096, NULL },
	{ "backup.base", backup_handle, "operator", 4096, NULL },
	{ "backup.pitr", backup_handle, "operator", 4096, NULL },
	{ "backup.pitr_expire", backup_handle, "operator", 4096, NULL },
	{ "backup.scratch_drop", backup_handle, "operator", 4096, NULL },
};

static const struct daemon_service backup_service = {
	.name = "backup",
	.conf = backup_conf_entries,
	.n_conf = sizeof backup_conf_entries / sizeof backup_conf_entries[0],
	.conf_target = &backup_conf,
	.methods = backup_methods,
	.n_methods = sizeof backup_methods / sizeof backup_methods[0],
	.consumes = true,
	.needs_db = true,
	.forbid_db = false,
	.needs_kek = true,
	.outbox_schema = "backup",
	.init = backup_init,
	.deinit = backup_deinit,
};

int main(int argc, char **argv)
{
	/* PostgreSQL's archive_command / restore_command: a short-lived mode. */
	if (argc > 1 && (strcmp(argv[1], "wal-push") == 0 || strcmp(argv[1], "wal-fetch") == 0))
		return backup_wal_main(argc, argv, backup_conf_entries,
				       sizeof backup_conf_entries / sizeof backup_conf_entries[0],
				       &backup_conf);
	/* restore_command names this binary and its configuration file. */
	for (int i = 1; i + 1 < argc; i++)
		if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0)
			backup_wal_set_self(argv[i + 1]);
	return daemon_main(argc, argv, &backup_service);
}
