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

#include <yaml.h>

#include "log.h"
#include "wardctl.h"

const char *wardctl_regions[WARDCTL_REGIONS_MAX];
int wardctl_nregions;

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

int wardctl_number(const char *s, long min, long max, long *v_r)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0' || v < min || v > max)
		return -1;
	*v_r = v;
	return 0;
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

/* The per-cell keys; "<region>." is prefixed at load time. */
#define CELL_KEYS 10
static const struct conf_entry cell_entries[CELL_KEYS] = {
	{ "pg_conninfo", CONF_STR, offsetof(struct wardctl_cell, pg_conninfo), true, NULL, 0, 0,
	  NULL },
	{ "pg_password_file", CONF_SECRET_FILE, offsetof(struct wardctl_cell, pg_password), true,
	  NULL, 0, 0, NULL },
	{ "redis_host", CONF_STR, offsetof(struct wardctl_cell, redis_host), true, NULL, 0, 0,
	  NULL },
	{ "redis_port", CONF_INT, offsetof(struct wardctl_cell, redis_port), true, NULL, 1, 65535,
	  NULL },
	{ "redis_user", CONF_STR, offsetof(struct wardctl_cell, redis_user), false, "ops", 0, 0,
	  NULL },
	{ "redis_password_file", CONF_SECRET_FILE, offsetof(struct wardctl_cell, redis_password),
	  true, NULL, 0, 0, NULL },
	{ "route_keys_file", CONF_SECRET_FILE, offsetof(struct wardctl_cell, route_keys), true,
	  NULL, 0, 0, NULL },
	{ "kek_file", CONF_STR, offsetof(struct wardctl_cell, kek_file), true, NULL, 0, 0, NULL },
	{ "https_port", CONF_INT, offsetof(struct wardctl_cell, https_port), true, NULL, 1, 65535,
	  NULL },
	{ "smtp_port", CONF_INT, offsetof(struct wardctl_cell, smtp_port), false, "25", 1, 65535,
	  NULL },
};

static struct conf_entry conf_table[1 + WARDCTL_REGIONS_MAX * CELL_KEYS];
static char region_names[WARDCTL_REGIONS_MAX][9];
static char cell_keys[WARDCTL_REGIONS_MAX * CELL_KEYS][40];
static size_t conf_table_n;

/*
 * The region names of a configuration: its top-level mapping keys other than
 * "domain", in file order, each [a-z]{2,8}. 0, or -1 after printing an error.
 * conf_load then reads the file strictly against the table built from them.
 */
static int wardctl_conf_regions(const char *path)
{
	FILE *f = fopen(path, "rb");
	yaml_parser_t parser;
	yaml_event_t ev;
	int depth = 0, want_key = 0, ret = -1, done = 0;

	wardctl_nregions = 0;
	if (f == NULL) {
		wardctl_error("%s: cannot open the configuration", path);
		return -1;
	}
	if (!yaml_parser_initialize(&parser)) {
		fclose(f);
		wardctl_error("out of memory");
		return -1;
	}
	yaml_parser_set_input_file(&parser, f);
	while (!done) {
		if (!yaml_parser_parse(&parser, &ev)) {
			wardctl_error("%s:%zu: not YAML", path, parser.problem_mark.line + 1);
			goto out;
		}
		switch (ev.type) {
		case YAML_MAPPING_START_EVENT:
		case YAML_SEQUENCE_START_EVENT:
			depth++;
			want_key = depth == 1 && ev.type == YAML_MAPPING_START_EVENT;
			break;
		case YAML_MAPPING_END_EVENT:
		case YAML_SEQUENCE_END_EVENT:
			depth--;
			want_key = depth == 1;
			break;
		case YAML_SCALAR_EVENT:
			if (depth == 1 && want_key) {
				const char *k = (const char *)ev.data.scalar.value;
				size_t n = ev.data.scalar.length;

				if (strcmp(k, "domain") != 0) {
					if (n < 2 || n > 8 || strspn(k, "abcdefghijklmnopqrstuvwxyz") != n ||
					    wardctl_nregions >= WARDCTL_REGIONS_MAX) {
						wardctl_error("%s:%zu: '%s' is not a region name ([a-z]{2,8}, at most %d)",
							      path, ev.start_mark.line + 1, k, WARDCTL_REGIONS_MAX);
						yaml_event_delete(&ev);
						goto out;
					}
					memcpy(region_names[wardctl_nregions], k, n + 1);
					wardctl_regions[wardctl_nregions] = region_names[wardctl_nregions];
					wardctl_nregions++;
				}
				want_key = 0;
			} else if (depth == 1) {
				want_key = 1;
			}
			break;
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		default:
			break;
		}
		if (ev.type == YAML_MAPPING_END_EVENT || ev.type == YAML_SEQUENCE_END_EVENT)
			want_key = depth == 1;
		yaml_event_delete(&ev);
	}
	ret = 0;
out:
	yaml_parser_delete(&parser);
	fclose(f);
	return ret;
}

int wardctl_conf_load(const char *path, struct wardctl_conf *conf)
{
	struct conf_section sec;
	char *err = NULL;
	size_t n = 0;

	memset(conf, 0, sizeof *conf);
	if (wardctl_conf_regions(path) < 0)
		return -1;
	conf_table[n++] = (struct conf_entry){ "domain", CONF_STR,
					       offsetof(struct wardctl_conf, domain), true, NULL,
					       0, 0, NULL };
	for (int r = 0; r < wardctl_nregions; r++)
		for (int k = 0; k < CELL_KEYS; k++) {
			char *key = cell_keys[r * CELL_KEYS + k];

			snprintf(key, sizeof cell_keys[0], "%s.%s", wardctl_regions[r],
				 cell_entries[k].key);
			conf_table[n] = cell_entries[k];
			conf_table[n].key = key;
			conf_table[n].offset += offsetof(struct wardctl_conf, cell) +
						(size_t)r * sizeof(struct wardctl_cell);
			n++;
		}
	conf_table_n = n;
	sec = (struct conf_section){ conf_table, conf_table_n, conf };
	if (conf_load(path, &sec, 1, &err) < 0) {
		wardctl_error("%s", err != NULL ? err : "cannot load the configuration");
		free(err);
		return -1;
	}
	if (wardctl_nregions == 0) {
		wardctl_error("%s: no region cell configured", path);
		conf_free(&sec, 1);
		return -1;
	}
	return 0;
}

void wardctl_conf_free(struct wardctl_conf *conf)
{
	struct conf_section sec = { conf_table, conf_table_n, conf };

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
