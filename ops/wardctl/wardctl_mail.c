/*
 * wardctl_mail — `wardctl mail dead-letters --region R [--replay ID] [--spool DIR]`.
 *
 * Dead letters are the mails ward-mail-ingest accepted (250) but ward-ticket
 * refused spool.max_attempts times (or never answered): they stay in the cell's
 * spool, dead/<id> with dead/<id>.err, never lost. Listing prints one JSON object
 * per line {id, tenant, size, error, refusals, timeouts, at}; never the content.
 * --replay ID moves it back to queue/, which ward-mail-ingest rescans every few
 * seconds; ward-ticket's Message-ID idempotency makes a replay of an already
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
    "List the mails ward-mail-ingest could not deliver to ward-ticket (one JSON object\n"
    "a line: id, tenant, size, error, refusals, timeouts, at), or put one back in the\n"
    "delivery queue with --replay ID.\n";

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

	(void)conf;
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
