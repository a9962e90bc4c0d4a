/*
 * fuzz_config — libFuzzer target for the YAML config loader.
 *
 * Feeds arbitrary bytes to conf_load_buffer against two small sections covering every
 * entry type (nested keys, bounds, a validator, defaults, a secret file, a list). A
 * successful load is freed with conf_free; either way ASan/LSan must see no error or
 * leak, and a failed load must leave the targets zeroed.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

struct fuzz_cfg {
	char *name;
	int port;
	bool tls;
	struct conf_secret key;
	struct conf_list hosts;
	char *db_host;
	int db_pool;
};

struct fuzz_other {
	bool enabled;
	struct conf_list tags;
};

/* Validator: refuse names starting with '-'. */
static int fuzz_name_ok(const void *value, const char **reason_r)
{
	const char *s = *(char *const *)value;

	if (s[0] == '-') {
		*reason_r = "must not start with '-'";
		return -1;
	}
	return 0;
}

static const struct conf_entry fuzz_table[] = {
	{ "name", CONF_STR, offsetof(struct fuzz_cfg, name), true, NULL, 0, 0, fuzz_name_ok },
	{ "port", CONF_INT, offsetof(struct fuzz_cfg, port), false, "8080", 1, 65535, NULL },
	{ "tls", CONF_BOOL, offsetof(struct fuzz_cfg, tls), false, "on", 0, 0, NULL },
	{ "key_file", CONF_SECRET_FILE, offsetof(struct fuzz_cfg, key), false, NULL, 0, 0, NULL },
	{ "hosts", CONF_STR_LIST, offsetof(struct fuzz_cfg, hosts), false, "[a, 'b c']", 0, 0,
	  NULL },
	{ "db.host", CONF_STR, offsetof(struct fuzz_cfg, db_host), false, "localhost", 0, 0, NULL },
	{ "db.pool.size", CONF_INT, offsetof(struct fuzz_cfg, db_pool), false, NULL, 0, 0, NULL },
};

static const struct conf_entry fuzz_other_table[] = {
	{ "audit.enabled", CONF_BOOL, offsetof(struct fuzz_other, enabled), false, NULL, 0, 0,
	  NULL },
	{ "audit.tags", CONF_STR_LIST, offsetof(struct fuzz_other, tags), false, NULL, 0, 0, NULL },
};

/* True if every byte of p is zero. */
static bool fuzz_all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	size_t i;

	for (i = 0; i < n; i++)
		if (b[i] != 0)
			return false;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_cfg cfg;
	struct fuzz_other other;
	struct conf_section secs[2] = {
		{ fuzz_table, sizeof(fuzz_table) / sizeof(fuzz_table[0]), &cfg },
		{ fuzz_other_table, sizeof(fuzz_other_table) / sizeof(fuzz_other_table[0]),
		  &other },
	};
	char *error = NULL;

	/* Zeroed (padding included) so a failed load can be checked byte for byte. */
	memset(&cfg, 0, sizeof(cfg));
	memset(&other, 0, sizeof(other));
	if (conf_load_buffer("fuzz.yaml", (const char *)data, size, secs, 2, &error) == 0) {
		if (error != NULL || cfg.name == NULL)
			abort();
		conf_free(secs, 2);
	} else {
		if (error == NULL)
			abort();
		free(error);
	}
	if (!fuzz_all_zero(&cfg, sizeof(cfg)) || !fuzz_all_zero(&other, sizeof(other)))
		abort();
	return 0;
}
