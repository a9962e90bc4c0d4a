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
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backup.pb-c.h"
#include "wardctl.h"

#define PITR_TIMEOUT_MS 900000

/* The commands above (their help is in wardctl_backup_usage); *handled = 0 leaves
 * the command to wardctl_backup.c. Returns the exit status. */
int wardctl_pitr(const struct wardctl_conf *conf, int argc, char **argv, int *handled);
int wardctl_pitr(const struct wardctl_conf *conf, int argc, char **argv, int *handled)
{
	Ward__BackupRequest req = WARD__BACKUP_REQUEST__INIT;
	struct wardctl_backup_args a;
	const char *method;
	char tenant_id[40] = "", status[16] = "", scratch[33] = "";
	int r;
	const char *cmd = argc >= 2 ? argv[1] : "";

	*handled = 0;
	if (strcmp(cmd, "base") != 0 && strcmp(cmd, "restore") != 0 &&
	    strcmp(cmd, "scratch-drop") != 0 && strcmp(cmd, "pitr-expire") != 0)
		return 0;
	argc--;
	argv++;
	/* Quietly: an option that is not ours is for wardctl_backup.c's parser to refuse. */
	(void)wardctl_backup_args(argc, argv, false, &a);
	/* A restore without --to, or of a named logical backup, is not point in time. */
	if (strcmp(cmd, "restore") == 0 && (a.to == NULL || a.backup != NULL || a.unknown))
		return 0;
	*handled = 1;
	if (optind < argc || a.region == NULL || (r = wardctl_region_index(a.region)) < 0) {
		wardctl_error("backup %s needs --region us|eu|uk", cmd);
		return 2;
	}
	if ((a.to != NULL && wardctl_parse_time(a.to, &req.to_ms) < 0) ||
	    (a.now != NULL && wardctl_parse_time(a.now, &req.now_ms) < 0)) {
		wardctl_error("--%s: expected RFC 3339 UTC time or unix ms", a.to ? "to" : "now");
		return 2;
	}
	if (strcmp(cmd, "base") == 0) {
		method = "backup.base";
	} else if (strcmp(cmd, "pitr-expire") == 0) {
		method = "backup.pitr_expire";
	} else if (strcmp(cmd, "scratch-drop") == 0) {
		if (a.id == NULL || strlen(a.id) != 32 || strspn(a.id, "0123456789abcdef") != 32) {
			wardctl_error("scratch-drop needs --id (32 hex digits)");
			return 2;
		}
		snprintf(scratch, sizeof scratch, "%s", a.id);
		method = "backup.scratch_drop";
	} else {
		method = "backup.pitr";
		if (a.tenant != NULL) {
			if (wardctl_tenant_find(conf, r, a.tenant, tenant_id, status) < 0)
				return 1;
			if (strcmp(status, "active") != 0) {
				*handled = 0; /* a closed tenant: from its logical backups */
				return 0;
			}
		}
	}
	req.tenant_id = tenant_id;
	req.backup_id = scratch;
	return wardctl_backup_call(conf, r, method, &req, PITR_TIMEOUT_MS);
}
