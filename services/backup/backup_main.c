/*
 * ward-backup — encrypted per-tenant backups, retention and restore.
 *
 * Runs under the common skeleton (common/daemon.c): config, log, refusal of root,
 * its own Redis credentials and PostgreSQL role, heartbeat, clean SIGTERM.
 * Operators call it on q:backup (backup.run, backup.list, backup.verify,
 * backup.restore, backup.prune; principal kind "operator" only); a timer runs the
 * daily backup of every active tenant at backup.daily_at (UTC), then verifies each
 * new backup, publishes the outcome (hb:backup:last-verified, read by the status
 * page) and applies retention; then, as a job of its own, the cell's base backup and
 * point-in-time retention. The jobs themselves are in backup_job.c, the format
 * in backup_format.c, the targets (local directory or S3) in backup_target.c.
 * Point-in-time recovery of the cell (backup.base, backup.pitr,
 * backup.pitr_expire, backup.scratch_drop, the daily base backup and the
 * `ward-backup wal-push|wal-fetch` modes PostgreSQL runs) is in backup_wal.c.
 *
 * Jobs run off the event loop, one at a time, in a worker thread with its own
 * PostgreSQL connection and target: the handler queues the job and defers its
 * reply (queue_reply_later); the worker hands the result back through a pipe the
 * loop watches. Heartbeats, the audit relay and pings go on meanwhile. SIGTERM
 * cancels the job in hand at its next chunk, answers every queued request with 503
 * and joins the worker before the queue drains.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* "static" or "instance". */
static int backup_valid_credentials(const void *value, const char **reason_r)
{
	const char *s = *(char *const *)value;

	if (s != NULL && strcmp(s, "static") != 0 && strcmp(s, "instance") != 0) {
		*reason_r = "expected static or instance";
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
	/* Bigger tables are sorted by PostgreSQL (temporary files past work_mem). */
	{ "backup.sort_mib", CONF_INT, BC(sort_mib), false, "256", 0, 65536, NULL },
	{ "backup.retention_days", CONF_INT, BC(retention_days), false, "35", 1, 3650, NULL },
	{ "backup.closed_days", CONF_INT, BC(closed_days), false, "60", 1, 3650, NULL },
	{ "backup.scratch_dir", CONF_STR, BC(scratch_dir), false, "/tmp", 0, 0, NULL },
	{ "backup.pg_bin", CONF_STR, BC(pg_bin), false, "/usr/lib/postgresql/15/bin", 0, 0, NULL },
	/* Off-site target instead of dir: an S3-compatible store, this region's bucket. */
	{ "backup.s3.endpoint", CONF_STR, BC(s3_endpoint), false, NULL, 0, 0, NULL },
	{ "backup.s3.bucket", CONF_STR, BC(s3_bucket), false, NULL, 0, 0, NULL },
	{ "backup.s3.region", CONF_STR, BC(s3_region), false, NULL, 0, 0, NULL },
	{ "backup.s3.access_key", CONF_STR, BC(s3_access_key), false, NULL, 0, 0, NULL },
	{ "backup.s3.secret_key_file", CONF_SECRET_FILE, BC(s3_secret_key), false, NULL, 0, 0,
	  NULL },
	{ "backup.s3.ca_file", CONF_STR, BC(s3_ca_file), false, NULL, 0, 0, NULL },
	/* instance: the instance role's temporary keys from the metadata service
	 * (IMDSv2), no access_key or secret_key_file; static: those two. */
	{ "backup.s3.credentials", CONF_STR, BC(s3_credentials), false, NULL, 0, 0,
	  backup_valid_credentials },
	{ "backup.s3.imds_endpoint", CONF_STR, BC(s3_imds_endpoint), false,
	  "http://169.254.169.254", 0, 0, NULL },
	{ "backup.s3.retries", CONF_INT, BC(s3_retries), false, "5", 0, 20, NULL },
};

/* One job for the worker: a request (req: the envelope, answered later) or the
 * daily run (req NULL). The result fields are the worker's until it hands it back. */
struct backup_job {
	struct backup_job *next;
	Ward__Envelope *req;
	char method[32];
	char tenant_id[40], backup_id[33];
	int64_t to_ms, now_ms;
	char actor[96];
	int r;
	json_t *out;
	char err[512];
	int verified, verify_failed; /* verifies done by this job, and failed */
};

static struct {
	struct daemon *d;
	pthread_t thread;
	int started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct backup_job *pending, *done; /* FIFO, LIFO */
	int stopping;
	int pipe[2];
	struct event *ev_done;
	db_t *db;			  /* the worker's own connection */
	struct backup_target *target;	  /* the worker's */
	long long last_ok_ms;		  /* newest successful verify (main thread) */
} W = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .pipe = { -1, -1 } };

atomic_int backup_cancel; /* backup_job.c stops at its next chunk when set */

/* 1 if a target is configured. */
static int backup_has_target(void)
{
	return backup_conf.dir != NULL || backup_conf.s3_endpoint != NULL;
}

/* The job context: a connection (the worker's own, or the loop's for a catalog read),
 * the target, the actor of the job. */
static void backup_ctx_init(struct daemon *d, db_t *db, const char *actor, struct backup_ctx *c)
{
	c->db = db;
	c->conf = &backup_conf;
	c->region = daemon_config(d)->region;
	c->kek = daemon_kek(d);
	c->d = d;
	c->actor = actor;
	c->target = W.target;
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
		if (atomic_load(&backup_cancel)) {
			err = "ward-backup is shutting down";
			json_array_append_new(failed, json_pack("{s:s, s:s}", "tenant_id", id,
								"error", err));
			continue;
		}
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

/* Pack a JSON result as a BackupReply; *data_r malloc'd. */
static int backup_pack(json_t *out, uint8_t **data_r, size_t *len_r)
{
	Ward__BackupReply r = WARD__BACKUP_REPLY__INIT;
	char *s = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
	size_t n;

	if (s == NULL)
		return -1;
	r.json = s;
	n = ward__backup_reply__get_packed_size(&r);
	*data_r = malloc(n ? n : 1);
	if (*data_r == NULL) {
		free(s);
		return -1;
	}
	*len_r = ward__backup_reply__pack(&r, *data_r);
	free(s);
	return 0;
}

/* Verify the new backups of a daily run; counts into j. */
static void backup_daily_verify(const struct backup_ctx *c, json_t *out, struct backup_job *j)
{
	json_t *bk;
	size_t i;

	json_array_foreach(json_object_get(out, "backups"), i, bk) {
		json_t *v = NULL;
		const char *verr = NULL;

		if (atomic_load(&backup_cancel))
			return;
		j->verified++;
		if (backup_job_verify(c, json_string_value(json_object_get(bk, "tenant_id")),
				      json_string_value(json_object_get(bk, "backup_id")), 0, &v,
				      &verr) < 0) {
			j->verify_failed++;
			log_warn("verify of backup %s failed: %s",
				 json_string_value(json_object_get(bk, "backup_id")),
				 verr ? verr : "?");
		}
		json_decref(v);
	}
}

/* The daily part of point-in-time recovery: the cell's base backup, then its
 * retention (each purge audited). Failures are logged; the next day tries again. */
static void backup_daily_cell(const struct backup_ctx *c)
{
	const struct daemon_config *cfg = daemon_config(W.d);
	json_t *out = NULL;
	const char *err = NULL;

	if (atomic_load(&backup_cancel))
		return;
	if (backup_wal_base(c, cfg->pg_conninfo, (const char *)cfg->pg_password.data, &out,
			    &err) < 0)
		log_warn("base backup: %s", err ? err : "failed");
	json_decref(out);
	out = NULL;
	err = NULL;
	if (backup_wal_expire(c, (int64_t)time(NULL) * 1000, &out, &err) < 0)
		log_warn("point-in-time retention: %s", err ? err : "failed");
	json_decref(out);
}

/* Run one job on the worker thread. */
static void backup_job_exec(struct backup_job *j)
{
	const struct daemon_config *cfg = daemon_config(W.d);
	struct backup_ctx c;
	const char *err = NULL;

	backup_ctx_init(W.d, W.db, j->actor, &c);
	j->r = -1;
	if (W.db == NULL) {
		W.db = db_connect(cfg->pg_conninfo, (const char *)cfg->pg_password.data, &err);
		c.db = W.db;
		if (W.db == NULL) {
			snprintf(j->err, sizeof j->err, "database: %s", err ? err : "unreachable");
			return;
		}
	}
	if (j->req == NULL && j->method[0] == '\0') { /* daily: back up, verify, retention */
		json_t *pr = NULL;

		log_info("daily backup of %s starts", c.region);
		j->r = backup_all(&c, NULL, &j->out, &err);
		if (j->r == 0)
			backup_daily_verify(&c, j->out, j);
		if (backup_job_expire(&c, 0, &pr, &err) < 0)
			log_warn("retention: %s", err ? err : "failed");
		json_decref(pr);
	} else if (strcmp(j->method, "daily.cell") == 0) {
		j->r = 0;
		backup_daily_cell(&c);
	} else if (strcmp(j->method, "backup.run") == 0) {
		j->r = backup_all(&c, j->tenant_id, &j->out, &err);
	} else if (strcmp(j->method, "backup.verify") == 0) {
		j->verified = 1;
		j->r = backup_job_verify(&c, j->tenant_id, j->backup_id[0] ? j->backup_id : NULL,
					 j->to_ms, &j->out, &err);
		j->verify_failed = j->r < 0;
	} else if (strcmp(j->method, "backup.restore") == 0) {
		j->r = backup_job_restore(&c, j->tenant_id, j->backup_id[0] ? j->backup_id : NULL,
					  j->to_ms, &j->out, &err);
	} else if (strcmp(j->method, "backup.prune") == 0) {
		j->r = backup_job_expire(&c, j->now_ms, &j->out, &err);
	} else if (strcmp(j->method, "backup.base") == 0) {
		j->r = backup_wal_base(&c, cfg->pg_conninfo, (const char *)cfg->pg_password.data,
				       &j->out, &err);
	} else if (strcmp(j->method, "backup.pitr") == 0) {
		j->r = backup_wal_restore(&c, cfg->pg_conninfo, (const char *)cfg->pg_password.data,
					  j->tenant_id, j->to_ms, &j->out, &err);
	} else if (strcmp(j->method, "backup.pitr_expire") == 0) {
		j->r = backup_wal_expire(&c, j->now_ms > 0 ? j->now_ms : (int64_t)time(NULL) * 1000,
					 &j->out, &err);
	} else if (strcmp(j->method, "backup.scratch_drop") == 0) {
		j->r = backup_wal_scratch_drop(&c, j->backup_id, &j->out, &err);
	} else {
		err = "unknown method";
	}
	if (j->r < 0)
		snprintf(j->err, sizeof j->err, "%s", err != NULL ? err : "failed");
	/* A connection lost mid-job is replaced for the next one. */
	if (j->r < 0 && PQstatus(db_conn(W.db)) != CONNECTION_OK) {
		db_free(W.db);
		W.db = NULL;
	}
}

/* The worker: jobs in order until stopping. */
static void *backup_worker(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&W.mu);
	for (;;) {
		struct backup_job *j;

		while (W.pending == NULL && !W.stopping)
			pthread_cond_wait(&W.cv, &W.mu);
		if (W.pending == NULL)
			break;
		j = W.pending;
		W.pending = j->next;
		pthread_mutex_unlock(&W.mu);
		backup_job_exec(j);
		pthread_mutex_lock(&W.mu);
		j->next = W.done;
		W.done = j;
		/* Wake the loop; a full pipe already means "look". */
		if (write(W.pipe[1], "j", 1) < 0 && errno != EAGAIN)
			log_warn("backup: cannot wake the event loop");
	}
	pthread_mutex_unlock(&W.mu);
	db_free(W.db);
	W.db = NULL;
	return NULL;
}

static void backup_job_free(struct backup_job *j)
{
	if (j == NULL)
		return;
	if (j->req != NULL)
		ward__envelope__free_unpacked(j->req, NULL);
	json_decref(j->out);
	free(j);
}

/* Publish the outcome of verifies for the status page: the newest successful
 * verify of the region and whether the latest one passed. */
static void backup_publish_verified(int ok)
{
	const struct daemon_config *cfg = daemon_config(W.d);
	char value[256];
	const char *argv[3] = { "SET", "hb:backup:last-verified", value };
	size_t lens[3];

	if (ok)
		W.last_ok_ms = (long long)time(NULL) * 1000;
	snprintf(value, sizeof value,
		 "{\"region\":\"%s\",\"at_ms\":%lld,\"ok\":%s,\"checked_ms\":%lld}", cfg->region,
		 W.last_ok_ms, ok ? "true" : "false", (long long)time(NULL) * 1000);
	lens[0] = 3;
	lens[1] = strlen(argv[1]);
	lens[2] = strlen(value);
	if (queue_command(daemon_queue(W.d), 3, argv, lens) < 0)
		log_warn("backup: cannot publish hb:backup:last-verified");
}

/* Hand a finished job's result back: the deferred reply, the status key. */
static void backup_job_finish(struct backup_job *j)
{
	if (j->verified > 0)
		backup_publish_verified(j->verify_failed == 0 && (j->req != NULL || j->r == 0));
	if (j->req == NULL && j->method[0] != '\0') {
		log_info("daily base backup and point-in-time retention done");
	} else if (j->req == NULL) {
		if (j->r < 0)
			log_warn("daily backup: %s", j->err);
		else
			log_info("daily backup done: %d verified, %d failed", j->verified,
				 j->verify_failed);
	} else if (j->r < 0) {
		log_warn("%s: %s", j->method, j->err);
		queue_reply_later(daemon_queue(W.d), j->req, 422, j->err, NULL, 0);
	} else {
		uint8_t *data = NULL;
		size_t len = 0;

		if (backup_pack(j->out, &data, &len) < 0)
			queue_reply_later(daemon_queue(W.d), j->req, 500, "out of memory", NULL, 0);
		else
			queue_reply_later(daemon_queue(W.d), j->req, 0, NULL, data, len);
		free(data);
	}
	backup_job_free(j);
}

/* The loop's side of the pipe: every finished job. */
static void backup_on_done(evutil_socket_t fd, short what, void *arg)
{
	char buf[64];
	struct backup_job *list, *next;

	(void)what;
	(void)arg;
	while (read(fd, buf, sizeof buf) > 0)
		;
	pthread_mutex_lock(&W.mu);
	list = W.done;
	W.done = NULL;
	pthread_mutex_unlock(&W.mu);
	for (; list != NULL; list = next) {
		next = list->next;
		backup_job_finish(list);
	}
	auditlog_relay_kick(W.d);
}

/* Queue a job for the worker (taken over). */
static void backup_job_submit(struct backup_job *j)
{
	struct backup_job **p;

	pthread_mutex_lock(&W.mu);
	for (p = &W.pending; *p != NULL; p = &(*p)->next)
		;
	j->next = NULL;
	*p = j;
	pthread_cond_signal(&W.cv);
	pthread_mutex_unlock(&W.mu);
}

/* backup.list is a catalog read: answered at once on the loop. */
static queue_result_t backup_list_now(struct daemon *d, const char *tenant_id,
				      struct queue_reply *reply, const char **error_r)
{
	static char errbuf[512];
	struct backup_ctx c;
	json_t *out = NULL;
	const char *err = NULL;

	backup_ctx_init(d, daemon_db(d), "operator", &c);
	if (backup_job_list(&c, tenant_id, &out, &err) < 0) {
		snprintf(errbuf, sizeof errbuf, "%s", err ? err : "failed");
		reply->status = 422;
		reply->error = errbuf;
		return QUEUE_DONE;
	}
	if (backup_pack(out, &reply->data, &reply->len) < 0) {
		json_decref(out);
		*error_r = "out of memory";
		return QUEUE_RETRY;
	}
	json_decref(out);
	return QUEUE_DONE;
}

/* One handler for the methods: unpack, check, then list now or queue the job. */
static queue_result_t backup_handle(struct daemon *d, const Ward__Envelope *env,
				    const uint8_t *payload, size_t len, struct queue_reply *reply,
				    const char **error_r)
{
	Ward__BackupRequest *req = ward__backup_request__unpack(NULL, len, payload);
	struct backup_job *j = NULL;
	const char *err = NULL;
	uint8_t *copy = NULL;
	size_t clen;

	if (req == NULL) {
		*error_r = "backup: malformed BackupRequest";
		return QUEUE_REJECT;
	}
	if (!backup_has_target() && strcmp(env->method, "backup.list") != 0)
		err = "no backup target configured (backup.dir or backup.s3)";
	else if (req->tenant_id[0] != '\0' && !backup_uuid_ok(req->tenant_id))
		err = "tenant_id must be a UUID";
	else if (req->backup_id[0] != '\0' && strspn(req->backup_id, "0123456789abcdef") != 32)
		err = "backup_id must be 32 hex digits";
	else if (req->tenant_id[0] == '\0' && (strcmp(env->method, "backup.verify") == 0 ||
					       strcmp(env->method, "backup.restore") == 0))
		err = "tenant_id is required";
	else if (strcmp(env->method, "backup.list") == 0) {
		queue_result_t qr = backup_list_now(d, req->tenant_id, reply, error_r);

		ward__backup_request__free_unpacked(req, NULL);
		return qr;
	} else if (W.stopping)
		err = "ward-backup is shutting down";
	if (err != NULL) {
		ward__backup_request__free_unpacked(req, NULL);
		log_warn("%s: %s", env->method, err);
		reply->status = 422;
		reply->error = err;
		return QUEUE_DONE;
	}
	/* The envelope is copied for the reply sent when the job is done. */
	clen = ward__envelope__get_packed_size(env);
	j = calloc(1, sizeof *j);
	copy = malloc(clen ? clen : 1);
	if (j == NULL || copy == NULL ||
	    (ward__envelope__pack(env, copy),
	     (j->req = ward__envelope__unpack(NULL, clen, copy)) == NULL)) {
		free(copy);
		free(j);
		ward__backup_request__free_unpacked(req, NULL);
		*error_r = "out of memory";
		return QUEUE_RETRY;
	}
	free(copy);
	snprintf(j->method, sizeof j->method, "%s", env->method);
	snprintf(j->tenant_id, sizeof j->tenant_id, "%s", req->tenant_id);
	snprintf(j->backup_id, sizeof j->backup_id, "%s", req->backup_id);
	j->to_ms = req->to_ms;
	j->now_ms = req->now_ms;
	snprintf(j->actor, sizeof j->actor, "operator:%s",
		 env->principal != NULL && env->principal->id != NULL ? env->principal->id : "?");
	ward__backup_request__free_unpacked(req, NULL);
	backup_job_submit(j);
	reply->deferred = 1;
	return QUEUE_DONE;
}

/* The daily run: once a day after daily_at (UTC). The day is claimed in the
 * database first, so two instances do not both run it; the work is the worker's. */
static void backup_tick(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	char day[16], hm[8];
	const char *p[1] = { day }, *err = NULL;
	time_t now = time(NULL);
	struct tm tm;
	PGresult *res;
	struct backup_job *j;

	(void)fd;
	(void)what;
	gmtime_r(&now, &tm);
	strftime(day, sizeof day, "%Y-%m-%d", &tm);
	strftime(hm, sizeof hm, "%H:%M", &tm);
	if (!backup_has_target() || W.stopping || strcmp(hm, backup_conf.daily_at) < 0)
		return;
	res = db_exec(daemon_db(d),
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
	j = calloc(1, sizeof *j);
	if (j == NULL) {
		log_warn("daily backup: out of memory");
		return;
	}
	snprintf(j->actor, sizeof j->actor, "service:backup");
	backup_job_submit(j);
	/* Then the cell's base backup and point-in-time retention, a job of its own:
	 * the tenants' outcome is published without waiting for it. */
	j = calloc(1, sizeof *j);
	if (j == NULL) {
		log_warn("daily base backup: out of memory");
		return;
	}
	snprintf(j->method, sizeof j->method, "daily.cell");
	snprintf(j->actor, sizeof j->actor, "service:backup");
	backup_job_submit(j);
}

static int backup_init(struct daemon *d, const char **error_r)
{
	struct timeval tv = { BACKUP_TICK_S, 0 };
	PGresult *res;
	const char *err = NULL;

	W.d = d;
	if (backup_conf.dir != NULL && backup_conf.s3_endpoint != NULL) {
		*error_r = "backup.dir and backup.s3 are exclusive: one target per cell";
		return -1;
	}
	if (backup_has_target()) {
		/* The same construction as wal-push/wal-fetch (backup_wal.c). */
		W.target = backup_wal_target(&backup_conf, error_r);
		if (W.target == NULL)
			return -1;
		log_info("backup target: %s%s%s%s%s", backup_target_name(W.target),
			 backup_conf.s3_endpoint ? " at " : "",
			 backup_conf.s3_endpoint ? backup_conf.s3_endpoint : "",
			 backup_conf.s3_endpoint && backup_conf.s3_credentials &&
					 strcmp(backup_conf.s3_credentials, "instance") == 0
				 ? ", instance role credentials from "
				 : "",
			 backup_conf.s3_endpoint && backup_conf.s3_credentials &&
					 strcmp(backup_conf.s3_credentials, "instance") == 0
				 ? backup_conf.s3_imds_endpoint
				 : "");
	}
	/* The newest successful verify so far, for hb:backup:last-verified. */
	res = db_exec(daemon_db(d),
		      "SELECT coalesce((extract(epoch FROM max(verified_at)) * 1000)::bigint, 0) "
		      "FROM backup.backups WHERE verify_ok",
		      0, NULL, &err);
	if (res != NULL) {
		W.last_ok_ms = atoll(PQgetvalue(res, 0, 0));
		PQclear(res);
	}
	if (pipe2(W.pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		*error_r = "cannot create the worker's pipe";
		return -1;
	}
	W.ev_done = event_new(daemon_base(d), W.pipe[0], EV_READ | EV_PERSIST, backup_on_done, d);
	if (W.ev_done == NULL || event_add(W.ev_done, NULL) < 0) {
		*error_r = "cannot watch the worker's pipe";
		return -1;
	}
	if (pthread_create(&W.thread, NULL, backup_worker, NULL) != 0) {
		*error_r = "cannot start the backup worker";
		return -1;
	}
	W.started = 1;
	backup_timer = event_new(daemon_base(d), -1, EV_PERSIST, backup_tick, d);
	if (backup_timer == NULL || event_add(backup_timer, &tv) < 0) {
		*error_r = "cannot start the schedule timer";
		return -1;
	}
	/* A first look right away: a daemon started after daily_at runs today's backup. */
	event_active(backup_timer, EV_TIMEOUT, 0);
	return 0;
}

/* SIGTERM: cancel the job in hand, answer the queued ones, join the worker, so
 * every reply is written before the queue drains. */
static void backup_stop(struct daemon *d)
{
	struct backup_job *pending;

	(void)d;
	if (!W.started)
		return;
	atomic_store(&backup_cancel, 1);
	pthread_mutex_lock(&W.mu);
	W.stopping = 1;
	pending = W.pending;
	W.pending = NULL;
	pthread_cond_signal(&W.cv);
	pthread_mutex_unlock(&W.mu);
	for (struct backup_job *next; pending != NULL; pending = next) {
		next = pending->next;
		if (pending->req != NULL)
			queue_reply_later(daemon_queue(d), pending->req, 503,
					  "ward-backup is shutting down", NULL, 0);
		backup_job_free(pending);
	}
	pthread_join(W.thread, NULL);
	W.started = 0;
	backup_on_done(W.pipe[0], EV_READ, d);
}

static void backup_deinit(struct daemon *d)
{
	backup_stop(d);
	if (backup_timer != NULL)
		event_free(backup_timer);
	backup_timer = NULL;
	if (W.ev_done != NULL)
		event_free(W.ev_done);
	W.ev_done = NULL;
	for (int i = 0; i < 2; i++)
		if (W.pipe[i] >= 0)
			close(W.pipe[i]);
	W.pipe[0] = W.pipe[1] = -1;
	backup_target_free(W.target);
	W.target = NULL;
}

static const struct daemon_method backup_methods[] = {
	{ "backup.run", backup_handle, "operator", 4096, NULL },
	{ "backup.list", backup_handle, "operator", 4096, NULL },
	{ "backup.verify", backup_handle, "operator", 4096, NULL },
	{ "backup.restore", backup_handle, "operator", 4096, NULL },
	{ "backup.prune", backup_handle, "operator", 4096, NULL },
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
	.stop = backup_stop,
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
