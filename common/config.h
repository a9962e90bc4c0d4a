/*
 * config — YAML files (libyaml) into typed structs, from one table per module.
 *
 * A table names each key by its dotted path ("redis.port" is `redis: {port: …}`),
 * its type, where it lands in the target struct, whether it is required, its
 * bounds and an optional validator. Unknown keys, duplicate keys, missing required
 * keys, wrong types and bad values all fail with "file:line: key: reason".
 * Secrets are only ever referenced by path: a key of type CONF_SECRET_FILE must end
 * in "_file"; the file is read and its bytes kept in memory, wiped on conf_free.
 *
 * Messages: "file:line: key: reason"; key is the dotted key, or "-" when the problem is
 * not about one key (syntax, empty file, top level not a mapping); line is 0 when the
 * file could not be read at all. A missing required key is reported on the line of the
 * key opening its enclosing mapping, or line 1 at the top level. Values are never quoted.
 * Refused: YAML aliases (no billion laughs), several documents, nesting deeper than 16,
 * files over 1 MiB, secret files over 64 KiB, empty or not regular. A table bug (NULL
 * key, CONF_SECRET_FILE key not ending in "_file", min > max) aborts.
 */
#ifndef WARD_CONFIG_H
#define WARD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
	CONF_STR,	  /* char *, malloc'd */
	CONF_INT,	  /* int, within [min, max] */
	CONF_BOOL,	  /* bool: true/false/yes/no/on/off */
	CONF_SECRET_FILE, /* struct conf_secret: the file's content */
	CONF_STR_LIST,	  /* struct conf_list: a YAML sequence of scalars */
} conf_type_t;

struct conf_secret {
	char *path;	    /* as written in the config */
	unsigned char *data; /* file bytes, NUL-terminated, trailing newline stripped */
	size_t len;
};

struct conf_list {
	char **items;
	size_t n;
};

struct conf_entry {
	const char *key;   /* dotted path */
	conf_type_t type;
	size_t offset;	   /* offsetof(target struct, field) */
	bool required;
	const char *def;   /* default for an absent key, as the scalar text ("6379", "yes",
			    * "localhost"); for a list a YAML flow sequence ("[a, b]").
			    * NULL: none (the field stays zeroed). Validated like a value. */
	long long min, max; /* CONF_INT bounds (both 0: any int) */
	/* Optional: 0 if ok, else -1 and *reason_r. value points at the stored field. */
	int (*validate)(const void *value, const char **reason_r);
};

/* A table and the struct it fills; a file may be read against several at once. */
struct conf_section {
	const struct conf_entry *entries;
	size_t n;
	void *target;
};

/* Parse path into the sections. Every field the tables name is zeroed first (so
 * conf_free a previous load before reusing a target). On error returns -1 and *error_r
 * is a malloc'd "file:line: key: reason" (free it); targets are then already freed and
 * zeroed. */
int conf_load(const char *path, const struct conf_section *sections, size_t n_sections,
	      char **error_r);
/* The same from a buffer (name is used in messages); for tests and fuzzing. */
int conf_load_buffer(const char *name, const char *buf, size_t len,
		     const struct conf_section *sections, size_t n_sections, char **error_r);
/* Free what conf_load stored in the sections' targets (NULL-safe fields). */
void conf_free(const struct conf_section *sections, size_t n_sections);

#endif
