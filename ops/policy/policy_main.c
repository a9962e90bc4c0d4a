/*
 * ward-policy — least privilege for one cell, generated from deploy/policy.yaml.
 *
 *   ward-policy [--policy FILE] check
 *   ward-policy [--policy FILE] secrets   --dir DIR   create missing secrets and route keys
 *   ward-policy [--policy FILE] redis-acl --dir DIR   print the Redis ACL file
 *   ward-policy [--policy FILE] streams               print "stream group" to create
 *   ward-policy [--policy FILE] sql       --dir DIR   print the psql roles/grants script
 *
 * Exit 0 on success, 1 on any error (message on stderr, "file:line: key: reason"
 * for policy errors), 2 on bad usage.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

static const char usage[] =
	"usage: ward-policy [--policy FILE] COMMAND [--dir DIR]\n"
	"\n"
	"Generate the least-privilege configuration of one region cell.\n"
	"\n"
	"  --policy FILE   the policy (default deploy/policy.yaml)\n"
	"  --dir DIR       the cell's secrets directory (var/<region>/secrets)\n"
	"\n"
	"commands:\n"
	"  check       validate the policy and exit\n"
	"  secrets     create every missing secret (mode 0600) and route key file\n"
	"  redis-acl   print the Redis ACL file (users.acl) on stdout\n"
	"  streams     print one \"<stream> <consumer group>\" line per consumed stream\n"
	"  sql         print the psql script for roles, grants and RLS policies\n";

/* Parse options from optind on, up to the first non-option: -1 to go on, else the
 * exit status (0 after --help, 2 on bad usage). */
static int policy_options(int argc, char **argv, const char **path, const char **dir)
{
	static const struct option opts[] = { { "policy", required_argument, NULL, 'p' },
					      { "dir", required_argument, NULL, 'd' },
					      { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	int c;

	while ((c = getopt_long(argc, argv, "+p:d:h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			*path = optarg;
			break;
		case 'd':
			*dir = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	return -1;
}

int main(int argc, char **argv)
{
	const char *path = "deploy/policy.yaml", *dir = NULL, *cmd, *err = NULL;
	struct policy *pol = NULL;
	char *perr = NULL;
	int c, ret = 1;

	if ((c = policy_options(argc, argv, &path, &dir)) >= 0)
		return c;
	if (optind >= argc) {
		fputs(usage, stderr);
		return 2;
	}
	cmd = argv[optind];
	/* Options may also follow the command ("secrets --dir DIR"). */
	optind++;
	if ((c = policy_options(argc, argv, &path, &dir)) >= 0)
		return c;
	if (optind < argc) {
		fprintf(stderr, "ward-policy: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (strcmp(cmd, "check") != 0 && strcmp(cmd, "secrets") != 0 &&
	    strcmp(cmd, "redis-acl") != 0 && strcmp(cmd, "streams") != 0 &&
	    strcmp(cmd, "sql") != 0) {
		fprintf(stderr, "ward-policy: unknown command '%s'\n%s", cmd, usage);
		return 2;
	}
	if (dir == NULL && strcmp(cmd, "check") != 0 && strcmp(cmd, "streams") != 0) {
		fprintf(stderr, "ward-policy: %s needs --dir DIR\n", cmd);
		return 2;
	}
	pol = policy_load(path, &perr);
	if (pol == NULL) {
		fprintf(stderr, "%s\n", perr);
		free(perr);
		return 1;
	}
	if (strcmp(cmd, "check") == 0)
		ret = 0;
	else if (strcmp(cmd, "secrets") == 0)
		ret = policy_secrets(pol, dir, &err) < 0 ? 1 : 0;
	else if (strcmp(cmd, "redis-acl") == 0)
		ret = policy_redis_acl(pol, dir, stdout, &err) < 0 ? 1 : 0;
	else if (strcmp(cmd, "streams") == 0) {
		policy_streams(pol, stdout);
		ret = 0;
	} else
		ret = policy_sql(pol, dir, stdout, &err) < 0 ? 1 : 0;
	if (ret != 0)
		fprintf(stderr, "ward-policy: %s: %s: %s\n", cmd, dir != NULL ? dir : "",
			err != NULL ? err : "failed");
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "ward-policy: write error on stdout\n");
		ret = 1;
	}
	policy_free(pol);
	return ret;
}
