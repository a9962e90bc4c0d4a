/*
 * wardctl_mail — `wardctl mail dead-letters --region R [--replay ID] [--spool DIR]`
 * and `wardctl mail addresses --slug S [--set a,b,...]`.
 *
 * addresses: the local parts at which tenant S receives mail
 * (<local>@<slug>.<region>.<domain>; tenant.tenants.mail_local_parts, default
 * support), read or replaced in the tenant's home cell as the operator role; a
 * change is recorded in the tenant's audit log. ward-mail-ingest asks at each
 * RCPT (auth.mail_recipient), so a change applies to the next mail.
 *
 * Dead letters are the mails ward-mail-ingest accepted (250) but ward-ticket
 * refused spool.max_attempts times (or never answered): they stay in the cell's
 * spool, dead/<id> with dead/<id>.err, never lost. Listing prints one JSON object
 * per line {id, tenant, size, error, refusals, timeouts, at}; never the content.
 * --replay ID moves it back to queue/ with fresh attempt counters (state/<id>
 * removed), which ward-mail-ingest rescans every few seconds; ward-ticket's Message-ID idempotency makes a replay of an already
 * ingested mail harmless. The spool is $WARD_VAR/<region>/spool/mail-ingest
 * (WARD_VAR defaults to var) unless --spool names it; the operator needs file
 * access to it (it belongs to the daemons' user).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "wardctl.h"

const char wardctl_mail_usage[] =
    "usage: wardctl mail dead-letters --region R [--replay ID] [--spool DIR]\n"
    "       wardctl mail addresses --slug S [--set LOCAL[,LOCAL...]]\n"
    "dead-letters  list the mails ward-mail-ingest could not deliver to ward-ticket (one\n"
    "              JSON object a line: id, tenant, size, error, refusals, timeouts, at),\n"
    "              or put one back in the delivery queue with --replay ID.\n"
    "addresses     the local parts tenant S receives mail at (LOCAL@S.<region>.<domain>),\n"
    "              or replace them with --set (1 to 20 of [a-z0-9][a-z0-9._+-]{0,63}).\n";

#define WARDCTL_MAIL_MAX_LOCALS 20

/* A local part as tenants may configure it (lower-cased in place). */
static int wardctl_mail_local_ok(char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] >= 'A' && s[i] <= 'Z')
			s[i] = (char)(s[i] - 'A' + 'a');
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		      (i > 0 && strchr("._+-", s[i]) != NULL)))
			return 0;
	}
	return 1;
}

/* `wardctl mail addresses --slug S [--set LIST]`. */
static int wardctl_mail_addresses(const struct wardctl_conf *conf, int argc, char **argv)
{
	static const struct option opts[] = {{"slug", required_argument, NULL, 's'},
					     {"set", required_argument, NULL, 'S'},
					     {NULL, 0, NULL, 0}};
	const char *slug = NULL, *set = NULL, *err = NULL;
	char lit[WARDCTL_MAIL_MAX_LOCALS * 66 + 4] = "", tid[40] = "", region[8] = "", *copy = NULL;
	db_t *db = NULL;
	PGresult *res = NULL;
	json_t *o = NULL, *arr = NULL;
	int c, home = -1, ret = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 's')
			slug = optarg;
		else if (c == 'S')
			set = optarg;
		else {
			fputs(wardctl_mail_usage, stderr);
			return 2;
		}
	}
	if (slug == NULL || optind < argc || strlen(slug) > 40 ||
	    strspn(slug, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(slug)) {
		wardctl_error("mail addresses needs --slug S ([a-z0-9-]{3,40})");
		return 2;
	}
	if (set != NULL) {
		size_t n = 0, o_len = 1;
		char *tok, *save = NULL;

		if ((copy = strdup(set)) == NULL)
			return 1;
		lit[0] = '{';
		for (tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
			if (!wardctl_mail_local_ok(tok) || ++n > WARDCTL_MAIL_MAX_LOCALS) {
				wardctl_error("--set: '%s' is not a local part (or more than %d)", tok,
					      WARDCTL_MAIL_MAX_LOCALS);
				free(copy);
				return 2;
			}
			o_len += (size_t)snprintf(lit + o_len, sizeof lit - o_len, "%s%s",
						  n > 1 ? "," : "", tok);
		}
		free(copy);
		if (n == 0) {
			wardctl_error("--set: at least one local part");
			return 2;
		}
		snprintf(lit + o_len, sizeof lit - o_len, "}");
	}
	/* the home cell, from any reachable cell's directory */
	for (int i = 0; i < WARDCTL_REGIONS && home < 0; i++) {
		if ((db = wardctl_db(conf, i)) == NULL)
			continue;
		res = db_exec(db, "SELECT region FROM directory.tenants WHERE slug = $1", 1,
			      (const char *const[]){slug}, &err);
		if (res != NULL && PQntuples(res) == 1)
			home = wardctl_region_index(PQgetvalue(res, 0, 0));
		else if (res != NULL) {
			PQclear(res);
			db_free(db);
			wardctl_error("no tenant '%s'", slug);
			return 1;
		}
		PQclear(res);
		res = NULL;
		db_free(db);
		db = NULL;
	}
	if (home < 0) {
		wardctl_error("tenant '%s': no cell could be asked", slug);
		return 1;
	}
	snprintf(region, sizeof region, "%s", wardctl_regions[home]);
	if ((db = wardctl_db(conf, home)) == NULL)
		return 1;
	res = db_exec(db, "SELECT id FROM tenant.tenants WHERE slug = $1 AND status = 'active'", 1,
		      (const char *const[]){slug}, &err);
	if (res == NULL || PQntuples(res) != 1) {
		wardctl_error("tenant '%s' is not active in %s%s%s", slug, region, err ? ": " : "",
			      err ? err : "");
		goto out;
	}
	snprintf(tid, sizeof tid, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	res = NULL;
	if (db_begin(db, tid, &err) < 0)
		goto fail;
	if (set != NULL) {
		res = db_exec(db, "UPDATE tenant.tenants SET mail_local_parts = $2::text[] WHERE id = $1",
			      2, (const char *const[]){tid, lit}, &err);
		if (res == NULL)
			goto fail_tx;
		PQclear(res);
	}
	res = db_exec(db, "SELECT array_to_json(mail_local_parts)::text FROM tenant.tenants "
			  "WHERE id = $1",
		      1, (const char *const[]){tid}, &err);
	if (res == NULL || PQntuples(res) != 1)
		goto fail_tx;
	arr = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	if (db_commit(db, &err) < 0)
		goto fail;
	if (set != NULL) {
		char *detail = json_dumps(arr, JSON_COMPACT);
		char d2[2048], target[64];

		snprintf(d2, sizeof d2, "{\"addresses\":%s}", detail != NULL ? detail : "[]");
		free(detail);
		snprintf(target, sizeof target, "tenant:%s", tid);
		if (wardctl_audit_record(conf, home, tid, "tenant", "mail_addresses", target, d2,
					 &err) < 0)
			wardctl_error("changed, but the audit record failed: %s", err);
	}
	o = json_pack("{s:s, s:s, s:O}", "slug", slug, "region", region, "addresses",
		      arr != NULL ? arr : json_null());
	ret = o != NULL && wardctl_print(o) == 0 ? 0 : 1;
	goto out;
fail_tx:
	db_rollback(db);
fail:
	wardctl_error("region %s: %s", region, err != NULL ? err : "failed");
out:
	PQclear(res);
	json_decref(o);
	json_decref(arr);
	db_free(db);
	return ret;
}

/* An id as the spool names files: hex digits and '-'. */
static int wardctl_mail_id_ok(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n >= 64)
		return 0;
	return strspn(id, "0123456789abcdef-") == n;
}

/* Print one dead letter. */
static int wardctl_mail_show(const char *dir, const char *id)
{
	char path[4096], tenant[37] = "", head[128];
	json_t *o, *err = NULL;
	struct stat st;
	FILE *f;
	size_t n = 0;
	int rc;

	snprintf(path, sizeof path, "%s/dead/%s", dir, id);
	if (stat(path, &st) < 0)
		return -1;
	if ((f = fopen(path, "rb")) != NULL) {
		n = fread(head, 1, sizeof head, f);
		fclose(f);
	}
	/* the spool header (mail_spool.c): "WARDSPOOL1\n<tenant id>\n" */
	if (n >= 48 && memcmp(head, "WARDSPOOL1\n", 11) == 0 && head[47] == '\n') {
		memcpy(tenant, head + 11, 36);
		tenant[36] = '\0';
		if (strspn(tenant, "0123456789abcdef-") != 36)
			tenant[0] = '\0';
	}
	snprintf(path, sizeof path, "%s/dead/%s.err", dir, id);
	err = json_load_file(path, 0, NULL);
	o = json_pack("{s:s, s:s, s:I}", "id", id, "tenant", tenant, "size", (json_int_t)st.st_size);
	if (o == NULL)
		return -1;
	if (json_is_object(err))
		json_object_update(o, err);
	rc = wardctl_print(o);
	json_decref(o);
	json_decref(err);
	return rc;
}

int wardctl_mail(const struct wardctl_conf *conf, int argc, char **argv)
{
	static const struct option opts[] = {{"region", required_argument, NULL, 'r'},
					     {"replay", required_argument, NULL, 'p'},
					     {"spool", required_argument, NULL, 's'},
					     {NULL, 0, NULL, 0}};
	const char *region = NULL, *replay = NULL, *spool = NULL, *var = getenv("WARD_VAR");
	char dir[2048], src[4096], dst[4096];
	DIR *d;
	struct dirent *de;
	int c, rc = 0;

	if (argc >= 2 && strcmp(argv[1], "addresses") == 0)
		return wardctl_mail_addresses(conf, argc - 1, argv + 1);
	if (argc < 2 || strcmp(argv[1], "dead-letters") != 0) {
		fputs(wardctl_mail_usage, stderr);
		return 2;
	}
	argc--;
	argv++;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			region = optarg;
			break;
		case 'p':
			replay = optarg;
			break;
		case 's':
			spool = optarg;
			break;
		default:
			fputs(wardctl_mail_usage, stderr);
			return 2;
		}
	}
	if (region == NULL || wardctl_region_index(region) < 0) {
		wardctl_error("--region us|eu|uk is required");
		return 2;
	}
	if (spool != NULL)
		snprintf(dir, sizeof dir, "%s", spool);
	else
		snprintf(dir, sizeof dir, "%s/%s/spool/mail-ingest",
			 var != NULL && var[0] != '\0' ? var : "var", region);
	if (replay != NULL) {
		if (!wardctl_mail_id_ok(replay)) {
			wardctl_error("--replay: not a dead letter id");
			return 2;
		}
		snprintf(src, sizeof src, "%s/dead/%s", dir, replay);
		snprintf(dst, sizeof dst, "%s/queue/%s", dir, replay);
		if (rename(src, dst) < 0) {
			wardctl_error("replay %s: %s", replay, strerror(errno));
			return 1;
		}
		snprintf(src, sizeof src, "%s/dead/%s.err", dir, replay);
		unlink(src);
		snprintf(src, sizeof src, "%s/state/%s", dir, replay); /* fresh counters */
		unlink(src);
		{
			json_t *o = json_pack("{s:s, s:s}", "id", replay, "replayed", "queued");

			rc = o != NULL ? wardctl_print(o) : -1;
			json_decref(o);
		}
		return rc < 0 ? 1 : 0;
	}
	snprintf(src, sizeof src, "%s/dead", dir);
	if ((d = opendir(src)) == NULL) {
		wardctl_error("cannot read %s: %s", src, strerror(errno));
		return 1;
	}
	while ((de = readdir(d)) != NULL)
		if (wardctl_mail_id_ok(de->d_name) && wardctl_mail_show(dir, de->d_name) < 0)
			rc = 1;
	closedir(d);
	return rc;
}
