/*
 * wardctl_backup — `wardctl backup run|list|verify|restore|prune`: requests to ward-backup
 * on q:backup of one cell as the operator, printing its JSON answer.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup.pb-c.h"
#include "wardctl.h"

#define BACKUP_REPLY_MAX (4 * 1024 * 1024)
#define BACKUP_TIMEOUT_MS 600000

const char wardctl_backup_usage[] =
	"usage: wardctl backup run --region R [--tenant SLUG]\n"
	"       wardctl backup list --region R [--tenant SLUG]\n"
	"       wardctl backup verify --region R --tenant SLUG [--backup ID] [--to TIME]\n"
	"       wardctl backup restore --region R --tenant SLUG [--backup ID] [--to TIME]\n"
	"       wardctl backup prune --region R [--now TIME]\n"
	"\n"
	"run: back up every active tenant of the cell (or one) now, encrypted under keys\n"
	"derived from each tenant's DEK. list: the backups, newest first. verify: restore\n"
	"the latest backup (or ID, or the latest taken at or before TIME) into scratch\n"
	"tables and compare row counts and checksums with its manifest; exit 1 if they\n"
	"differ. restore: bring a closed tenant (wardctl tenant delete) back whole from\n"
	"that backup. prune: apply retention now (daily copies past backup.retention_days,\n"
	"keeping each tenant's newest; every backup of a tenant closed for\n"
	"backup.closed_days, and its kept keys), or as of --now TIME (operators, tests);\n"
	"each purge is an audit event. TIME: RFC 3339 UTC (2024-05-01T12:00:00Z) or unix milliseconds.\n"
	"\n"
	"Point-in-time recovery of a cell (WAL archive + daily base backups, 35 days):\n"
	"       wardctl backup base --region R\n"
	"       wardctl backup restore --region R --to TIME\n"
	"       wardctl backup restore --region R --tenant SLUG --to TIME\n"
	"       wardctl backup scratch-drop --region R --id SCRATCH_ID\n"
	"       wardctl backup pitr-expire --region R [--now TIME]\n"
	"base: a physical base backup of the cell now, encrypted (also taken daily).\n"
	"restore --to without --tenant: rebuild the cell as it was at TIME in a scratch\n"
	"cluster on a free loopback port and print where it runs (the live cell is not\n"
	"touched); remove it with scratch-drop. restore --tenant S --to TIME with S\n"
	"active: replace S's data in the live cell by its data at TIME, other tenants\n"
	"untouched (a closed S is restored from its logical backups as above).\n"
	"pitr-expire: drop base backups and WAL no longer needed for any time in the\n"
	"retention window before TIME (default now); each purge is an audit event.\n";

/* Send method with req to q:backup of region, wait at most timeout_ms; print the JSON
 * answer. Exit status. (Also wardctl_pitr.c's.) */
int wardctl_backup_call(const struct wardctl_conf *conf, int region, const char *method,
			const Ward__BackupRequest *req, int timeout_ms)
{
	const struct wardctl_call call = { .dest = "q:backup",
					   .method = method,
					   .tenant = req->tenant_id,
					   .request = &req->base,
					   .reply = &ward__backup_reply__descriptor,
					   .reply_max = BACKUP_REPLY_MAX,
					   .timeout_ms = timeout_ms,
					   .service = "ward-backup" };
	ProtobufCMessage *m;
	Ward__BackupReply *r;
	int ret = 1;

	if (wardctl_request(conf, region, &call, &m) < 0)
		return 1;
	r = (Ward__BackupReply *)m;
	if (puts(r->json) != EOF && fflush(stdout) == 0)
		ret = 0;
	ward__backup_reply__free_unpacked(r, NULL);
	return ret;
}

/* After a restore: the other cells' directories know the slug again (the home
 * cell's is restored with the tenant). Failures are reported, not fatal. */
static void backup_directory_readd(const struct wardctl_conf *conf, int home, const char *slug)
{
	const char *params[2] = { slug, wardctl_regions[home] }, *err = NULL;

	for (int i = 0; i < WARDCTL_REGIONS; i++) {
		db_t *db;
		PGresult *res;

		if (i == home || (db = wardctl_db(conf, i)) == NULL)
			continue;
		res = db_exec(db, "INSERT INTO directory.tenants (slug, region) VALUES ($1, $2) "
				  "ON CONFLICT (slug) DO NOTHING",
			      2, params, &err);
		if (res == NULL)
			wardctl_error("region %s: directory: %s", wardctl_regions[i], err);
		PQclear(res);
		db_free(db);
	}
}

/* TIME as RFC 3339 UTC ("…Z", fractions kept to the millisecond) or unix
 * milliseconds; -1 if neither. (Also wardctl_pitr.c's.) */
int wardctl_parse_time(const char *s, int64_t *ms_r)
{
	struct tm tm = { 0 };
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

int wardctl_pitr(const struct wardctl_conf *conf, int argc, char **argv, int *handled);

int wardctl_backup_args(int argc, char **argv, bool strict, struct wardctl_backup_args *a)
{
	/* Without its first entry (--id) for the strict parse. */
	static const struct option opts[] = { { "id", required_argument, NULL, 'i' },
					      { "region", required_argument, NULL, 'r' },
					      { "tenant", required_argument, NULL, 't' },
					      { "backup", required_argument, NULL, 'b' },
					      { "to", required_argument, NULL, 'T' },
					      { "now", required_argument, NULL, 'N' },
					      { NULL, 0, NULL, 0 } };
	int c, ret = 0;

	memset(a, 0, sizeof *a);
	optind = 0;
	opterr = strict;
	while (ret == 0 && (c = getopt_long(argc, argv, strict ? "r:t:b:T:N:" : "r:t:b:T:N:i:",
					    strict ? opts + 1 : opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			a->region = optarg;
			break;
		case 't':
			a->tenant = optarg;
			break;
		case 'b':
			a->backup = optarg;
			break;
		case 'T':
			a->to = optarg;
			break;
		case 'N':
			a->now = optarg;
			break;
		case 'i':
			a->id = optarg;
			break;
		default:
			a->unknown = true;
			if (strict)
				ret = -1;
			break;
		}
	}
	opterr = 1;
	return ret;
}

int wardctl_backup(const struct wardctl_conf *conf, int argc, char **argv)
{
	Ward__BackupRequest req = WARD__BACKUP_REQUEST__INIT;
	struct wardctl_backup_args a;
	const char *region, *slug, *cmd, *method;
	char tenant_id[40] = "", backup_id[33] = "";
	int c, r;

	if (argc < 2) {
		fputs(wardctl_backup_usage, stderr);
		return 2;
	}
	/* Point-in-time recovery of the cell: wardctl_pitr.c. */
	c = wardctl_pitr(conf, argc, argv, &r);
	if (r)
		return c;
	cmd = argv[1];
	argc--;
	argv++;
	if (wardctl_backup_args(argc, argv, true, &a) < 0) {
		fputs(wardctl_backup_usage, stderr);
		return 2;
	}
	region = a.region;
	slug = a.tenant;
	if (a.backup != NULL) {
		if (strlen(a.backup) != 32 || strspn(a.backup, "0123456789abcdef") != 32) {
			wardctl_error("--backup: expected 32 hex digits");
			return 2;
		}
		snprintf(backup_id, sizeof backup_id, "%s", a.backup);
	}
	if (a.to != NULL && wardctl_parse_time(a.to, &req.to_ms) < 0) {
		wardctl_error("--to: expected RFC 3339 UTC time or unix ms");
		return 2;
	}
	if (a.now != NULL && (wardctl_parse_time(a.now, &req.now_ms) < 0 || req.now_ms <= 0)) {
		wardctl_error("--now: expected RFC 3339 UTC time or unix ms");
		return 2;
	}
	if (optind < argc || region == NULL || (r = wardctl_region_index(region)) < 0) {
		wardctl_error("backup %s needs --region us|eu|uk", cmd);
		return 2;
	}
	if (strcmp(cmd, "run") == 0)
		method = "backup.run";
	else if (strcmp(cmd, "list") == 0)
		method = "backup.list";
	else if (strcmp(cmd, "verify") == 0)
		method = "backup.verify";
	else if (strcmp(cmd, "restore") == 0)
		method = "backup.restore";
	else if (strcmp(cmd, "prune") == 0)
		method = "backup.prune";
	else {
		wardctl_error("unknown backup command '%s'", cmd);
		fputs(wardctl_backup_usage, stderr);
		return 2;
	}
	if (slug == NULL && (strcmp(cmd, "verify") == 0 || strcmp(cmd, "restore") == 0)) {
		/* (restore --to without --tenant, the cell's, went to wardctl_pitr.c) */
		wardctl_error("backup %s: needs --tenant", cmd);
		return 2;
	}
	if (req.now_ms != 0 && strcmp(cmd, "prune") != 0) {
		wardctl_error("--now is for backup prune");
		return 2;
	}
	if (slug != NULL && strcmp(cmd, "prune") == 0) {
		wardctl_error("backup prune applies to the whole cell (no --tenant)");
		return 2;
	}
	if (slug != NULL && wardctl_tenant_find(conf, r, slug, tenant_id, NULL) < 0)
		return 1;
	req.tenant_id = tenant_id;
	req.backup_id = backup_id;
	c = wardctl_backup_call(conf, r, method, &req, BACKUP_TIMEOUT_MS);
	if (c == 0 && strcmp(cmd, "restore") == 0)
		backup_directory_readd(conf, r, slug);
	return c;
}
