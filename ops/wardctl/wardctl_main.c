/*
 * wardctl — operator tool for the Ward cells (SPEC §3).
 *
 *   wardctl [--config FILE] tenant create|list|show ...
 *   wardctl [--config FILE] ping --region R --service S [--count N] [--text T]
 *
 * The configuration (--config, else $WARD_CONFIG, else var/wardctl.yaml) names,
 * per region, the operator's PostgreSQL and Redis credentials (by file path), its
 * route keys and the region KEK. wardctl holds no privilege of its own: it acts as
 * the ward_ops role and the "ops" Redis user the policy defines.
 */
#include <getopt.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "wardctl.h"

const char *const wardctl_regions[WARDCTL_REGIONS] = { "us", "eu", "uk" };

static const char usage[] =
	"usage: wardctl [--config FILE] COMMAND [ARGS]\n"
	"\n"
	"Operate the Ward region cells. Prints JSON on stdout; errors go to stderr\n"
	"with a non-zero exit status.\n"
	"\n"
	"  --config FILE   configuration (default $WARD_CONFIG, else var/wardctl.yaml)\n"
	"  --help          this help; COMMAND --help for a command's\n"
	"\n"
	"commands:\n"
	"  tenant create|list|show   provision and inspect tenants\n"
	"  ping                      request/reply ping through a service's queue\n"
	"  audit verify|list         verify a tenant's audit hash chain, list its events\n"
	"  backup run|list|verify|restore   encrypted per-tenant backups\n"
	"  status components|incident       the status page's components and incidents\n"
	"  mail dead-letters         list or replay mails ward-ticket could not take\n";

/* wardctl_status.c (declared here: wardctl.h belongs to the wardctl owner). */
int wardctl_status(const struct wardctl_conf *conf, int argc, char **argv);
extern const char wardctl_status_usage[];

int wardctl_region_index(const char *name)
{
	for (int i = 0; i < WARDCTL_REGIONS; i++)
		if (name != NULL && strcmp(name, wardctl_regions[i]) == 0)
			return i;
	return -1;
}

void wardctl_error(const char *fmt, ...)
{
	va_list ap;

	fputs("wardctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int wardctl_print(const json_t *value)
{
	char *s = json_dumps(value, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER |
				   JSON_REAL_PRECISION(6));
	int ret = 0;

	if (s == NULL)
		return -1;
	if (puts(s) == EOF || fflush(stdout) != 0)
		ret = -1;
	free(s);
	return ret;
}

/* Configuration table entries of one region; offsets into struct wardctl_conf. */
#define CELL_ENTRIES(r, i)                                                                   \
	{ r ".pg_conninfo", CONF_STR, offsetof(struct wardctl_conf, cell[i].pg_conninfo), true, \
	  NULL, 0, 0, NULL },                                                                  \
	{ r ".pg_password_file", CONF_SECRET_FILE,                                             \
	  offsetof(struct wardctl_conf, cell[i].pg_password), true, NULL, 0, 0, NULL },        \
	{ r ".redis_host", CONF_STR, offsetof(struct wardctl_conf, cell[i].redis_host), true,   \
	  NULL, 0, 0, NULL },                                                                  \
	{ r ".redis_port", CONF_INT, offsetof(struct wardctl_conf, cell[i].redis_port), true,   \
	  NULL, 1, 65535, NULL },                                                              \
	{ r ".redis_user", CONF_STR, offsetof(struct wardctl_conf, cell[i].redis_user), false,  \
	  "ops", 0, 0, NULL },                                                                 \
	{ r ".redis_password_file", CONF_SECRET_FILE,                                          \
	  offsetof(struct wardctl_conf, cell[i].redis_password), true, NULL, 0, 0, NULL },     \
	{ r ".route_keys_file", CONF_SECRET_FILE,                                              \
	  offsetof(struct wardctl_conf, cell[i].route_keys), true, NULL, 0, 0, NULL },         \
	{ r ".kek_file", CONF_STR, offsetof(struct wardctl_conf, cell[i].kek_file), true, NULL, \
	  0, 0, NULL },                                                                        \
	{ r ".https_port", CONF_INT, offsetof(struct wardctl_conf, cell[i].https_port), true,   \
	  NULL, 1, 65535, NULL },                                                              \
	{ r ".smtp_port", CONF_INT, offsetof(struct wardctl_conf, cell[i].smtp_port), false,    \
	  "25", 1, 65535, NULL }

static const struct conf_entry conf_table[] = {
	{ "domain", CONF_STR, offsetof(struct wardctl_conf, domain), true, NULL, 0, 0, NULL },
	CELL_ENTRIES("us", 0),
	CELL_ENTRIES("eu", 1),
	CELL_ENTRIES("uk", 2),
};

int wardctl_conf_load(const char *path, struct wardctl_conf *conf)
{
	struct conf_section sec = { conf_table, sizeof conf_table / sizeof conf_table[0], conf };
	char *err = NULL;

	memset(conf, 0, sizeof *conf);
	if (conf_load(path, &sec, 1, &err) < 0) {
		wardctl_error("%s", err != NULL ? err : "cannot load the configuration");
		free(err);
		return -1;
	}
	return 0;
}

void wardctl_conf_free(struct wardctl_conf *conf)
{
	struct conf_section sec = { conf_table, sizeof conf_table / sizeof conf_table[0], conf };

	conf_free(&sec, 1);
}

db_t *wardctl_db(const struct wardctl_conf *conf, int region)
{
	const struct wardctl_cell *cell = &conf->cell[region];
	const char *err = NULL;
	db_t *db = db_connect(cell->pg_conninfo, (const char *)cell->pg_password.data, &err);

	if (db == NULL)
		wardctl_error("region %s: %s", wardctl_regions[region], err);
	return db;
}

/* 1 if any argument asks for help. */
static int wants_help(int argc, char **argv)
{
	for (int i = 0; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return 1;
	return 0;
}

/* wardctl_key.c (declared here, as wardctl_mail.c: keeps wardctl.h untouched) */
int wardctl_key(const struct wardctl_conf *conf, int argc, char **argv);
extern const char wardctl_key_usage[];

/* wardctl_mail.c (declared here: wardctl.h is not this command's owner's file) */
int wardctl_mail(const struct wardctl_conf *conf, int argc, char **argv);
extern const char wardctl_mail_usage[];

int main(int argc, char **argv)
{
	static const struct option opts[] = { { "config", required_argument, NULL, 'c' },
					      { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	const char *path = getenv("WARD_CONFIG");
	struct wardctl_conf conf;
	const char *lerr = NULL;
	int c, ret;

	if (path == NULL || path[0] == '\0')
		path = "var/wardctl.yaml";
	while ((c = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1) {
		fputs(usage, stderr);
		return 2;
	}
	if (strcmp(argv[0], "tenant") != 0 && strcmp(argv[0], "ping") != 0 &&
	    strcmp(argv[0], "audit") != 0 && strcmp(argv[0], "backup") != 0 &&
	    strcmp(argv[0], "status") != 0 && strcmp(argv[0], "mail") != 0 &&
	    strcmp(argv[0], "key") != 0) {
		wardctl_error("unknown command '%s'", argv[0]);
		fputs(usage, stderr);
		return 2;
	}
	if (wants_help(argc, argv)) {
		fputs(strcmp(argv[0], "tenant") == 0  ? wardctl_tenant_usage
		      : strcmp(argv[0], "audit") == 0 ? wardctl_audit_usage
		      : strcmp(argv[0], "backup") == 0 ? wardctl_backup_usage
		      : strcmp(argv[0], "status") == 0 ? wardctl_status_usage
		      : strcmp(argv[0], "mail") == 0 ? wardctl_mail_usage
		      : strcmp(argv[0], "key") == 0 ? wardctl_key_usage
						      : wardctl_ping_usage,
		      stdout);
		return 0;
	}
	/* libpq notices and library warnings go to stderr through the log module. */
	if (log_open("wardctl", "wardctl", NULL, LOG_WARN, &lerr) < 0) {
		wardctl_error("%s", lerr != NULL ? lerr : "cannot open the log");
		return 1;
	}
	if (wardctl_conf_load(path, &conf) < 0)
		return 1;
	if (strcmp(argv[0], "tenant") == 0)
		ret = wardctl_tenant(&conf, argc, argv);
	else if (strcmp(argv[0], "audit") == 0)
		ret = wardctl_audit(&conf, argc, argv);
	else if (strcmp(argv[0], "backup") == 0)
		ret = wardctl_backup(&conf, argc, argv);
	else if (strcmp(argv[0], "status") == 0)
		ret = wardctl_status(&conf, argc, argv);
	else if (strcmp(argv[0], "mail") == 0)
		ret = wardctl_mail(&conf, argc, argv);
	else if (strcmp(argv[0], "key") == 0)
		ret = wardctl_key(&conf, argc, argv);
	else
		ret = wardctl_ping(&conf, argc, argv);
	wardctl_conf_free(&conf);
	log_close();
	return ret;
}
