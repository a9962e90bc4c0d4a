/*
 * wardctl_pitr — point-in-time recovery of a cell (SPEC §3 `wardctl backup restore`):
 *
 *   wardctl backup base --region R                 a base backup of the cell now
 *   wardctl backup restore --region R --to TIME    a scratch cluster at TIME
 *   wardctl backup restore --region R --tenant S --to TIME
 *                                                  tenant S (active) back to TIME
 *   wardctl backup scratch-drop --region R --id ID stop and remove a scratch cluster
 *   wardctl backup pitr-expire --region R [--now TIME]  retention as of TIME
 *
 * Requests to ward-backup on q:backup as the operator (services/backup/backup_wal.c).
 * A closed tenant's restore stays with wardctl_backup.c (from its logical backups);
 * wardctl_backup() hands everything else here through wardctl_pitr().
 */
#include <event2/event.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backup.pb-c.h"
#include "crypto.h"
#include "envelope.h"
#include "queue.h"
#include "wardctl.h"

#define PITR_REPLY_MAX (4 * 1024 * 1024)
#define PITR_TIMEOUT_MS 900000

struct pitr_call {
	struct event_base *base;
	int status;
	char error[768];
	char *json;
};

/* The reply of ward-backup. */
static void pitr_done(void *arg, int status, const Ward__Envelope *env, const uint8_t *payload,
		      size_t len)
{
	struct pitr_call *c = arg;
	Ward__BackupReply *r;

	c->status = status;
	if (status < 0) {
		snprintf(c->error, sizeof c->error, "%s",
			 status == QUEUE_ETIMEDOUT ? "timed out (is ward-backup running?)"
						   : "Redis connection down");
	} else if (env->status != 0) {
		snprintf(c->error, sizeof c->error, "%s",
			 env->error != NULL ? env->error : "failed");
		c->status = env->status;
	} else if (len > PITR_REPLY_MAX ||
		   (r = ward__backup_reply__unpack(NULL, len, payload)) == NULL) {
		snprintf(c->error, sizeof c->error, "malformed reply");
		c->status = -1;
	} else {
		c->json = strdup(r->json);
		ward__backup_reply__free_unpacked(r, NULL);
	}
	event_base_loopbreak(c->base);
}

/* The operator's name: $USER if it looks like a name, else "ops". */
static const char *pitr_operator(void)
{
	const char *user = getenv("USER");

	if (user == NULL || user[0] == '\0' || strlen(user) > 64 ||
	    strspn(user, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
		strlen(user))
		return "ops";
	return user;
}

/* Send method with req to q:backup of region; print the JSON answer. Exit status. */
static int pitr_call(const struct wardctl_conf *conf, int region, const char *method,
		     const Ward__BackupRequest *req)
{
	const struct wardctl_cell *cell = &conf->cell[region];
	struct queue_opts qo = {0};
	struct queue_msg msg = {0};
	struct pitr_call c = {0};
	Ward__Principal principal = WARD__PRINCIPAL__INIT;
	envelope_keys_t *keys = NULL;
	queue_t *q = NULL;
	char instance[48], request_id[33];
	const char *err = NULL;
	size_t len = ward__backup_request__get_packed_size(req);
	uint8_t *payload = malloc(len ? len : 1);
	int ret = 1;

	if (payload == NULL)
		return 1;
	ward__backup_request__pack(req, payload);
	keys = envelope_keys_parse(cell->route_keys.data, cell->route_keys.len, &err);
	if (keys == NULL) {
		wardctl_error("%s: %s", cell->route_keys.path, err);
		goto out;
	}
	if ((c.base = event_base_new()) == NULL)
		goto out;
	snprintf(instance, sizeof instance, "wardctl-%ld", (long)getpid());
	qo.host = cell->redis_host;
	qo.port = cell->redis_port;
	qo.user = cell->redis_user;
	qo.password = (const char *)cell->redis_password.data;
	qo.service = cell->redis_user;
	qo.instance = instance;
	qo.region = wardctl_regions[region];
	q = queue_new(c.base, &qo, keys, &err);
	keys = NULL; /* the queue owns them now */
	if (q == NULL) {
		wardctl_error("region %s: %s", wardctl_regions[region], err ? err : "no Redis");
		goto out;
	}
	principal.kind = "operator";
	principal.id = (char *)pitr_operator();
	(void)crypto_random_id(request_id);
	msg.dest = "q:backup";
	msg.method = method;
	msg.tenant = req->tenant_id;
	msg.principal = &principal;
	msg.request_id = request_id;
	msg.timeout_ms = PITR_TIMEOUT_MS;
	msg.payload = payload;
	msg.len = len;
	c.status = -1;
	if (queue_request(q, &msg, pitr_done, &c, &err) < 0) {
		wardctl_error("%s: %s", method, err ? err : "cannot send");
		goto out;
	}
	event_base_dispatch(c.base);
	if (c.status != 0)
		wardctl_error("%s: %s", method, c.error);
	else if (c.json != NULL && puts(c.json) != EOF && fflush(stdout) == 0)
		ret = 0;
out:
	queue_free(q);
	envelope_keys_free(keys);
	if (c.base != NULL)
		event_base_free(c.base);
	free(c.json);
	free(payload);
	return ret;
}

/* TIME as RFC 3339 UTC ("…Z", fractions kept to the millisecond) or unix ms. */
static int pitr_parse_time(const char *s, int64_t *ms_r)
{
	struct tm tm = {0};
	char *end;
	int64_t frac = 0;

	if (s[0] != '\0' && strlen(s) <= 15 && strspn(s, "0123456789") == strlen(s)) {
		*ms_r = strtoll(s, NULL, 10);
		return 0;
	}
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (end == NULL)
		return -1;
	if (*end == '.') {
		int digits = 0;

		for (end++; *end >= '0' && *end <= '9'; end++, digits++)
			if (digits < 3)
				frac = frac * 10 + (*end - '0');
		for (; digits < 3; digits++)
			frac *= 10;
	}
	if (strcmp(end, "Z") != 0)
		return -1;
	*ms_r = (int64_t)timegm(&tm) * 1000 + frac;
	return 0;
}

/* The id and status of tenant slug homed in region; -1 after printing. */
static int pitr_tenant(const struct wardctl_conf *conf, int region, const char *slug, char id[40],
		       char status[16])
{
	const char *params[1] = {slug}, *err = NULL;
	db_t *db = wardctl_db(conf, region);
	PGresult *res;

	if (db == NULL)
		return -1;
	res = db_exec(db, "SELECT id, status FROM tenant.tenants WHERE slug = $1", 1, params, &err);
	if (res == NULL || PQntuples(res) != 1) {
		wardctl_error("region %s: no tenant '%s' homed here%s%s", wardctl_regions[region],
			      slug, err ? ": " : "", err ? err : "");
		PQclear(res);
		db_free(db);
		return -1;
	}
	snprintf(id, 40, "%s", PQgetvalue(res, 0, 0));
	snprintf(status, 16, "%s", PQgetvalue(res, 0, 1));
	PQclear(res);
	db_free(db);
	return 0;
}

/* The commands above (their help is in wardctl_backup_usage); *handled = 0 leaves
 * the command to wardctl_backup.c. Returns the exit status. */
int wardctl_pitr(const struct wardctl_conf *conf, int argc, char **argv, int *handled);
int wardctl_pitr(const struct wardctl_conf *conf, int argc, char **argv, int *handled)
{
	static const struct option opts[] = {{"region", required_argument, NULL, 'r'},
					     {"tenant", required_argument, NULL, 't'},
					     {"backup", required_argument, NULL, 'b'},
					     {"to", required_argument, NULL, 'T'},
					     {"now", required_argument, NULL, 'N'},
					     {"id", required_argument, NULL, 'i'},
					     {NULL, 0, NULL, 0}};
	Ward__BackupRequest req = WARD__BACKUP_REQUEST__INIT;
	const char *region = NULL, *slug = NULL, *to = NULL, *now = NULL, *id = NULL, *method;
	char tenant_id[40] = "", status[16] = "", scratch[33] = "";
	int c, r, backup = 0;
	const char *cmd = argc >= 2 ? argv[1] : "";

	*handled = 0;
	if (strcmp(cmd, "base") != 0 && strcmp(cmd, "restore") != 0 &&
	    strcmp(cmd, "scratch-drop") != 0 && strcmp(cmd, "pitr-expire") != 0)
		return 0;
	argc--;
	argv++;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "r:t:b:T:N:i:", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			region = optarg;
			break;
		case 't':
			slug = optarg;
			break;
		case 'b':
			backup = 1;
			break;
		case 'T':
			to = optarg;
			break;
		case 'N':
			now = optarg;
			break;
		case 'i':
			id = optarg;
			break;
		default:
			backup = 1;
			break; /* not ours: wardctl_backup.c's parser says why */
		}
	}
	opterr = 1;
	/* A restore without --to, or of a named logical backup, is not point in time. */
	if (strcmp(cmd, "restore") == 0 && (to == NULL || backup))
		return 0;
	*handled = 1;
	if (optind < argc || region == NULL || (r = wardctl_region_index(region)) < 0) {
		wardctl_error("backup %s needs --region us|eu|uk", cmd);
		return 2;
	}
	if ((to != NULL && pitr_parse_time(to, &req.to_ms) < 0) ||
	    (now != NULL && pitr_parse_time(now, &req.now_ms) < 0)) {
		wardctl_error("--%s: expected RFC 3339 UTC time or unix ms", to ? "to" : "now");
		return 2;
	}
	if (strcmp(cmd, "base") == 0) {
		method = "backup.base";
	} else if (strcmp(cmd, "pitr-expire") == 0) {
		method = "backup.pitr_expire";
	} else if (strcmp(cmd, "scratch-drop") == 0) {
		if (id == NULL || strlen(id) != 32 || strspn(id, "0123456789abcdef") != 32) {
			wardctl_error("scratch-drop needs --id (32 hex digits)");
			return 2;
		}
		snprintf(scratch, sizeof scratch, "%s", id);
		method = "backup.scratch_drop";
	} else {
		method = "backup.pitr";
		if (slug != NULL) {
			if (pitr_tenant(conf, r, slug, tenant_id, status) < 0)
				return 1;
			if (strcmp(status, "active") != 0) {
				*handled = 0; /* a closed tenant: from its logical backups */
				return 0;
			}
		}
	}
	req.tenant_id = tenant_id;
	req.backup_id = scratch;
	return pitr_call(conf, r, method, &req);
}
