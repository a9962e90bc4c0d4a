/*
 * config — YAML files (libyaml) into typed structs, from one table per module.
 *
 * A file is first scanned as an event stream to refuse what the loader would accept
 * but Ward does not want: aliases (billion laughs), several documents, deep nesting.
 * It is then loaded as a node graph and walked from the root mapping; nested mappings
 * build dotted keys that are looked up in the sections' tables. Every stored value is
 * owned by the target struct until conf_free; on any error everything stored so far is
 * freed and the fields are left zeroed, and the caller gets one "file:line: key: reason"
 * message (key "-" when the problem is not about a key). Values are never echoed in
 * messages, so a secret pasted in the wrong place does not end up in a log.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <yaml.h>

#define CONF_FILE_MAX (1024 * 1024)
#define CONF_SECRET_MAX (64 * 1024)
#define CONF_DEPTH_MAX 16
/* Keys and paths quoted in messages are cut to this many bytes. */
#define CONF_QUOTE_MAX 200

/* A mapping already entered: its dotted prefix and the line of the key that opened it. */
struct conf_seen_map {
	char *prefix;
	int line;
};

struct conf_ctx {
	const char *name;
	const struct conf_section *sections;
	size_t n_sections;
	yaml_document_t *doc;
	int *seen_line;	   /* per entry (flattened): line where it was set, 0 if not */
	size_t n_entries;
	struct conf_seen_map *maps;
	size_t n_maps;
	char *error;
};

/* ------------------------------------------------------------------------- */
/* Messages                                                                  */
/* ------------------------------------------------------------------------- */

/* Copy s (len bytes) into out for a message: printable ASCII only, at most CONF_QUOTE_MAX. */
static void conf_quote(char out[CONF_QUOTE_MAX + 4], const char *s, size_t len)
{
	size_t i, n = len > CONF_QUOTE_MAX ? CONF_QUOTE_MAX : len;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	if (len > n) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
}

/* Record the first error as "name:line: key: reason" (later ones are ignored). */
static void __attribute__((format(printf, 4, 5)))
conf_error(struct conf_ctx *ctx, int line, const char *key, const char *fmt, ...)
{
	char reason[512], qname[CONF_QUOTE_MAX + 4], qkey[CONF_QUOTE_MAX + 4];
	va_list ap;
	int n;

	if (ctx->error != NULL)
		return;
	va_start(ap, fmt);
	n = vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (n < 0)
		snprintf(reason, sizeof(reason), "error");
	conf_quote(qname, ctx->name, strlen(ctx->name));
	conf_quote(qkey, key != NULL ? key : "-", key != NULL ? strlen(key) : 1);
	if (asprintf(&ctx->error, "%s:%d: %s: %s", qname, line, qkey, reason) < 0)
		ctx->error = NULL;
	/* Out of memory while reporting: still fail, with a static-sized fallback. */
	if (ctx->error == NULL)
		ctx->error = strdup("config: out of memory");
	if (ctx->error == NULL)
		abort();
}

/* ------------------------------------------------------------------------- */
/* Tables and targets                                                        */
/* ------------------------------------------------------------------------- */

/* Abort on a table that cannot be right: these are programming errors, not input. */
static void conf_check_tables(const struct conf_section *sections, size_t n_sections)
{
	size_t s, i, len;

	if (n_sections > 0 && sections == NULL)
		abort();
	for (s = 0; s < n_sections; s++) {
		if (sections[s].n > 0 &&
		    (sections[s].entries == NULL || sections[s].target == NULL))
			abort();
		for (i = 0; i < sections[s].n; i++) {
			const struct conf_entry *e = &sections[s].entries[i];

			if (e->key == NULL || e->key[0] == '\0' || e->type > CONF_STR_LIST ||
			    e->min > e->max)
				abort();
			len = strlen(e->key);
			if (e->type == CONF_SECRET_FILE &&
			    (len < 5 || strcmp(e->key + len - 5, "_file") != 0))
				abort();
		}
	}
}

/* Where entry e's value lives in its section's target. */
static void *conf_field(const struct conf_section *sec, const struct conf_entry *e)
{
	return (char *)sec->target + e->offset;
}

/* Free one stored field (NULL-safe) and zero it; secrets are cleansed first. */
static void conf_free_field(const struct conf_entry *e, void *field)
{
	size_t i;

	switch (e->type) {
	case CONF_STR: {
		char **p = field;

		free(*p);
		*p = NULL;
		break;
	}
	case CONF_INT:
		*(int *)field = 0;
		break;
	case CONF_BOOL:
		*(bool *)field = false;
		break;
	case CONF_SECRET_FILE: {
		struct conf_secret *sec = field;

		if (sec->data != NULL)
			OPENSSL_cleanse(sec->data, sec->len + 1);
		free(sec->data);
		free(sec->path);
		memset(sec, 0, sizeof(*sec));
		break;
	}
	case CONF_STR_LIST: {
		struct conf_list *l = field;

		for (i = 0; i < l->n && l->items != NULL; i++)
			free(l->items[i]);
		free(l->items);
		memset(l, 0, sizeof(*l));
		break;
	}
	}
}

/* Zero every field the tables name (without freeing: they may hold garbage). */
static void conf_zero_targets(const struct conf_section *sections, size_t n_sections)
{
	size_t s, i;

	for (s = 0; s < n_sections; s++) {
		for (i = 0; i < sections[s].n; i++) {
			const struct conf_entry *e = &sections[s].entries[i];
			void *f = conf_field(&sections[s], e);

			switch (e->type) {
			case CONF_STR:
				*(char **)f = NULL;
				break;
			case CONF_INT:
				*(int *)f = 0;
				break;
			case CONF_BOOL:
				*(bool *)f = false;
				break;
			case CONF_SECRET_FILE:
				memset(f, 0, sizeof(struct conf_secret));
				break;
			case CONF_STR_LIST:
				memset(f, 0, sizeof(struct conf_list));
				break;
			}
		}
	}
}

/* Free what conf_load stored in the sections' targets and zero the fields. */
void conf_free(const struct conf_section *sections, size_t n_sections)
{
	size_t s, i;

	if (sections == NULL)
		return;
	for (s = 0; s < n_sections; s++) {
		if (sections[s].entries == NULL || sections[s].target == NULL)
			continue;
		for (i = 0; i < sections[s].n; i++)
			conf_free_field(&sections[s].entries[i],
					conf_field(&sections[s], &sections[s].entries[i]));
	}
}

/* Find the entry for a dotted key: its section and flattened index. NULL if none. */
static const struct conf_entry *conf_find(const struct conf_ctx *ctx, const char *key,
					  const struct conf_section **sec_r, size_t *index_r)
{
	size_t s, i, idx = 0;

	for (s = 0; s < ctx->n_sections; s++) {
		for (i = 0; i < ctx->sections[s].n; i++, idx++) {
			if (strcmp(ctx->sections[s].entries[i].key, key) == 0) {
				*sec_r = &ctx->sections[s];
				*index_r = idx;
				return &ctx->sections[s].entries[i];
			}
		}
	}
	return NULL;
}

/* True if some entry lives under prefix (i.e. its key starts with prefix + "."). */
static bool conf_is_prefix(const struct conf_ctx *ctx, const char *prefix)
{
	size_t s, i, len = strlen(prefix);

	for (s = 0; s < ctx->n_sections; s++) {
		for (i = 0; i < ctx->sections[s].n; i++) {
			const char *k = ctx->sections[s].entries[i].key;

			if (strncmp(k, prefix, len) == 0 && k[len] == '.')
				return true;
		}
	}
	return false;
}

/* ------------------------------------------------------------------------- */
/* Values                                                                    */
/* ------------------------------------------------------------------------- */

/* A plain scalar that YAML reads as null: the key has no value. */
static bool conf_is_null(const yaml_node_t *node)
{
	const char *v = (const char *)node->data.scalar.value;

	if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
	       strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* Name of a node kind for messages. */
static const char *conf_node_kind(const yaml_node_t *node)
{
	switch (node->type) {
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_SEQUENCE_NODE:
		return "a list";
	default:
		return "a scalar";
	}
}

/* Name of what a type expects, for messages. */
static const char *conf_type_name(conf_type_t type)
{
	switch (type) {
	case CONF_STR:
		return "a string";
	case CONF_INT:
		return "an integer";
	case CONF_BOOL:
		return "a boolean";
	case CONF_SECRET_FILE:
		return "a file path";
	case CONF_STR_LIST:
		return "a list";
	}
	return "a value";
}

/* Parse a decimal int within the entry's bounds (both 0: any int). */
static int conf_parse_int(const struct conf_entry *e, const char *text, int *out,
			  char reason[128])
{
	long long v, lo = INT_MIN, hi = INT_MAX;
	char *end;
	const char *p = text;

	if (*p == '+' || *p == '-')
		p++;
	if (*p < '0' || *p > '9') {
		snprintf(reason, 128, "not an integer");
		return -1;
	}
	errno = 0;
	v = strtoll(text, &end, 10);
	if (*end != '\0') {
		snprintf(reason, 128, "not an integer");
		return -1;
	}
	if (e->min != 0 || e->max != 0) {
		lo = e->min > lo ? e->min : lo;
		hi = e->max < hi ? e->max : hi;
	}
	if (errno == ERANGE || v < lo || v > hi) {
		snprintf(reason, 128, "out of range [%lld, %lld]", lo, hi);
		return -1;
	}
	*out = (int)v;
	return 0;
}

/* Parse true/false/yes/no/on/off. */
static int conf_parse_bool(const char *text, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on" };
	static const char *const no[] = { "false", "no", "off" };
	size_t i;

	for (i = 0; i < 3; i++) {
		if (strcmp(text, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcmp(text, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

/* Read a secret file (regular, 1..CONF_SECRET_MAX bytes), strip one trailing newline.
 * *data_r malloc'd and NUL-terminated. */
static int conf_read_secret(const char *path, unsigned char **data_r, size_t *len_r,
			    char reason[128])
{
	unsigned char *buf = NULL;
	size_t len = 0;
	struct stat st;
	ssize_t r;
	int fd, ret = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		snprintf(reason, 128, "cannot open secret file: %s", strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(reason, 128, "secret file is not a regular file");
		goto out;
	}
	if (st.st_size > CONF_SECRET_MAX) {
		snprintf(reason, 128, "secret file too big (max %d bytes)", CONF_SECRET_MAX);
		goto out;
	}
	/* The size may change under us: read at most one byte more than the cap. */
	if ((buf = malloc(CONF_SECRET_MAX + 2)) == NULL) {
		snprintf(reason, 128, "out of memory");
		goto out;
	}
	while (len < CONF_SECRET_MAX + 1) {
		r = read(fd, buf + len, CONF_SECRET_MAX + 1 - len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			snprintf(reason, 128, "cannot read secret file: %s", strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	if (len > CONF_SECRET_MAX) {
		snprintf(reason, 128, "secret file too big (max %d bytes)", CONF_SECRET_MAX);
		goto out;
	}
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len == 0) {
		snprintf(reason, 128, "secret file is empty");
		goto out;
	}
	buf[len] = '\0';
	*data_r = buf;
	*len_r = len;
	buf = NULL;
	ret = 0;
out:
	if (buf != NULL) {
		OPENSSL_cleanse(buf, CONF_SECRET_MAX + 2);
		free(buf);
	}
	(void)close(fd);
	return ret;
}

/* Store a scalar's text (len bytes, NUL-terminated) into the field of entry e. */
static int conf_store_text(struct conf_ctx *ctx, const struct conf_entry *e, void *field,
			   const char *text, size_t len, int line)
{
	char reason[128];

	if (memchr(text, '\0', len) != NULL) {
		conf_error(ctx, line, e->key, "value contains a NUL byte");
		return -1;
	}
	switch (e->type) {
	case CONF_STR:
		if ((*(char **)field = strdup(text)) == NULL) {
			conf_error(ctx, line, e->key, "out of memory");
			return -1;
		}
		return 0;
	case CONF_INT:
		if (conf_parse_int(e, text, field, reason) != 0) {
			conf_error(ctx, line, e->key, "%s", reason);
			return -1;
		}
		return 0;
	case CONF_BOOL:
		if (conf_parse_bool(text, field) != 0) {
			conf_error(ctx, line, e->key,
				   "not a boolean (true/false/yes/no/on/off)");
			return -1;
		}
		return 0;
	case CONF_SECRET_FILE: {
		struct conf_secret *sec = field;

		if (len == 0) {
			conf_error(ctx, line, e->key, "empty file path");
			return -1;
		}
		if ((sec->path = strdup(text)) == NULL) {
			conf_error(ctx, line, e->key, "out of memory");
			return -1;
		}
		if (conf_read_secret(text, &sec->data, &sec->len, reason) != 0) {
			conf_error(ctx, line, e->key, "%s", reason);
			return -1;
		}
		return 0;
	}
	case CONF_STR_LIST:
		break;
	}
	conf_error(ctx, line, e->key, "expected a list, got a scalar");
	return -1;
}

/* Store a YAML sequence of scalars as a conf_list. */
static int conf_store_list(struct conf_ctx *ctx, yaml_document_t *doc, const struct conf_entry *e,
			   struct conf_list *list, yaml_node_t *node)
{
	yaml_node_item_t *it;
	size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);

	if (n == 0)
		return 0;
	if ((list->items = calloc(n, sizeof(*list->items))) == NULL) {
		conf_error(ctx, (int)node->start_mark.line + 1, e->key, "out of memory");
		return -1;
	}
	for (it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++) {
		yaml_node_t *item = yaml_document_get_node(doc, *it);
		int line;

		if (item == NULL)
			abort();
		line = (int)item->start_mark.line + 1;
		if (item->type != YAML_SCALAR_NODE || conf_is_null(item)) {
			conf_error(ctx, line, e->key, "list items must be strings");
			return -1;
		}
		if (memchr(item->data.scalar.value, '\0', item->data.scalar.length) != NULL) {
			conf_error(ctx, line, e->key, "value contains a NUL byte");
			return -1;
		}
		if ((list->items[list->n] = strdup((char *)item->data.scalar.value)) == NULL) {
			conf_error(ctx, line, e->key, "out of memory");
			return -1;
		}
		list->n++;
	}
	return 0;
}

/* Store node as entry e's value (type-checked), then run the validator. */
static int conf_store(struct conf_ctx *ctx, yaml_document_t *doc, const struct conf_section *sec,
		      const struct conf_entry *e, yaml_node_t *node)
{
	void *field = conf_field(sec, e);
	int line = (int)node->start_mark.line + 1;
	const char *reason = NULL;

	if (conf_is_null(node)) {
		conf_error(ctx, line, e->key, "missing value");
		return -1;
	}
	if (e->type == CONF_STR_LIST) {
		if (node->type != YAML_SEQUENCE_NODE) {
			conf_error(ctx, line, e->key, "expected a list, got %s",
				   conf_node_kind(node));
			return -1;
		}
		if (conf_store_list(ctx, doc, e, field, node) != 0)
			return -1;
	} else {
		if (node->type != YAML_SCALAR_NODE) {
			conf_error(ctx, line, e->key, "expected %s, got %s",
				   conf_type_name(e->type), conf_node_kind(node));
			return -1;
		}
		if (conf_store_text(ctx, e, field, (const char *)node->data.scalar.value,
				    node->data.scalar.length, line) != 0)
			return -1;
	}
	if (e->validate != NULL && e->validate(field, &reason) != 0) {
		conf_error(ctx, line, e->key, "%s", reason != NULL ? reason : "invalid value");
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Walking the document                                                      */
/* ------------------------------------------------------------------------- */

/* Remember that the mapping at prefix was opened by a key on line. */
static int conf_note_map(struct conf_ctx *ctx, const char *prefix, int line)
{
	struct conf_seen_map *m;

	m = realloc(ctx->maps, (ctx->n_maps + 1) * sizeof(*ctx->maps));
	if (m == NULL)
		return -1;
	ctx->maps = m;
	if ((m[ctx->n_maps].prefix = strdup(prefix)) == NULL)
		return -1;
	m[ctx->n_maps].line = line;
	ctx->n_maps++;
	return 0;
}

/* Walk a mapping whose keys live under prefix ("" at the top). */
static int conf_walk(struct conf_ctx *ctx, yaml_document_t *doc, yaml_node_t *map,
		     const char *prefix, int depth)
{
	yaml_node_pair_t *pair, *prev;
	char *full = NULL;
	int ret = -1;

	if (depth > CONF_DEPTH_MAX) {
		conf_error(ctx, (int)map->start_mark.line + 1, prefix, "nesting too deep");
		return -1;
	}
	for (pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
		yaml_node_t *k = yaml_document_get_node(doc, pair->key);
		yaml_node_t *v = yaml_document_get_node(doc, pair->value);
		const struct conf_section *sec;
		const struct conf_entry *e;
		const char *key;
		size_t idx, klen;
		int line;

		if (k == NULL || v == NULL)
			abort();
		line = (int)k->start_mark.line + 1;
		if (k->type != YAML_SCALAR_NODE) {
			conf_error(ctx, line, prefix[0] != '\0' ? prefix : NULL,
				   "key is not a string");
			goto out;
		}
		key = (const char *)k->data.scalar.value;
		klen = k->data.scalar.length;
		free(full);
		full = NULL;
		if (asprintf(&full, "%s%s%s", prefix, prefix[0] != '\0' ? "." : "", key) < 0) {
			full = NULL;
			conf_error(ctx, line, NULL, "out of memory");
			goto out;
		}
		if (klen == 0 || memchr(key, '\0', klen) != NULL || strchr(key, '.') != NULL) {
			conf_error(ctx, line, full, "unknown key");
			goto out;
		}
		/* Every earlier key here was valid and distinct, so this loop is bounded by the
		 * table size, not by the input. */
		for (prev = map->data.mapping.pairs.start; prev < pair; prev++) {
			yaml_node_t *pk = yaml_document_get_node(doc, prev->key);

			if (pk != NULL && pk->type == YAML_SCALAR_NODE &&
			    pk->data.scalar.length == klen &&
			    memcmp(pk->data.scalar.value, key, klen) == 0) {
				conf_error(ctx, line, full, "duplicate key (first on line %d)",
					   (int)pk->start_mark.line + 1);
				goto out;
			}
		}
		if ((e = conf_find(ctx, full, &sec, &idx)) != NULL) {
			if (conf_store(ctx, doc, sec, e, v) != 0)
				goto out;
			ctx->seen_line[idx] = line;
		} else if (conf_is_prefix(ctx, full)) {
			if (v->type != YAML_MAPPING_NODE) {
				conf_error(ctx, (int)v->start_mark.line + 1, full,
					   "expected a mapping, got %s",
					   conf_is_null(v) ? "nothing" : conf_node_kind(v));
				goto out;
			}
			if (conf_note_map(ctx, full, line) != 0) {
				conf_error(ctx, line, full, "out of memory");
				goto out;
			}
			if (conf_walk(ctx, doc, v, full, depth + 1) != 0)
				goto out;
		} else {
			conf_error(ctx, line, full, "unknown key");
			goto out;
		}
	}
	ret = 0;
out:
	free(full);
	return ret;
}

/* Line of the key opening the deepest mapping that encloses key, or 1 at the top. */
static int conf_enclosing_line(const struct conf_ctx *ctx, const char *key)
{
	size_t i, best_len = 0, plen;
	int line = 1;

	for (i = 0; i < ctx->n_maps; i++) {
		plen = strlen(ctx->maps[i].prefix);
		if (plen > best_len && strncmp(key, ctx->maps[i].prefix, plen) == 0 &&
		    key[plen] == '.') {
			best_len = plen;
			line = ctx->maps[i].line;
		}
	}
	return line;
}

/* Store a default given as text: the scalar itself, or a YAML flow sequence for a list. */
static int conf_store_default(struct conf_ctx *ctx, const struct conf_section *sec,
			      const struct conf_entry *e, int line)
{
	void *field = conf_field(sec, e);
	const char *reason = NULL;
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root;
	int ret = -1;

	if (e->type != CONF_STR_LIST) {
		if (conf_store_text(ctx, e, field, e->def, strlen(e->def), line) != 0)
			return -1;
	} else {
		if (!yaml_parser_initialize(&parser)) {
			conf_error(ctx, line, e->key, "out of memory");
			return -1;
		}
		yaml_parser_set_input_string(&parser, (const unsigned char *)e->def,
					     strlen(e->def));
		if (!yaml_parser_load(&parser, &doc)) {
			yaml_parser_delete(&parser);
			conf_error(ctx, line, e->key, "bad default in table");
			return -1;
		}
		root = yaml_document_get_root_node(&doc);
		if (root == NULL || root->type != YAML_SEQUENCE_NODE)
			conf_error(ctx, line, e->key, "bad default in table");
		else if (conf_store_list(ctx, &doc, e, field, root) == 0)
			ret = 0;
		yaml_document_delete(&doc);
		yaml_parser_delete(&parser);
		if (ret != 0)
			return -1;
	}
	if (e->validate != NULL && e->validate(field, &reason) != 0) {
		conf_error(ctx, line, e->key, "default: %s", reason != NULL ? reason : "invalid");
		return -1;
	}
	return 0;
}

/* Apply defaults for absent keys and fail on the first absent required one. */
static int conf_finish(struct conf_ctx *ctx)
{
	size_t s, i, idx = 0;

	for (s = 0; s < ctx->n_sections; s++) {
		for (i = 0; i < ctx->sections[s].n; i++, idx++) {
			const struct conf_entry *e = &ctx->sections[s].entries[i];
			int line;

			if (ctx->seen_line[idx] != 0)
				continue;
			line = conf_enclosing_line(ctx, e->key);
			if (e->required) {
				conf_error(ctx, line, e->key, "missing required key");
				return -1;
			}
			if (e->def != NULL &&
			    conf_store_default(ctx, &ctx->sections[s], e, line) != 0)
				return -1;
		}
	}
	return 0;
}

/* Scan the event stream: refuse aliases, several documents and deep nesting, and
 * report syntax errors with the parser's line. */
static int conf_prescan(struct conf_ctx *ctx, const char *buf, size_t len)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	int depth = 0, docs = 0, ret = -1;
	bool done = false;

	if (!yaml_parser_initialize(&parser)) {
		conf_error(ctx, 0, NULL, "out of memory");
		return -1;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	while (!done) {
		if (!yaml_parser_parse(&parser, &ev)) {
			conf_error(ctx, (int)parser.problem_mark.line + 1, NULL,
				   "YAML syntax error: %s%s%s%s",
				   parser.problem != NULL ? parser.problem : "unknown",
				   parser.context != NULL ? " (" : "",
				   parser.context != NULL ? parser.context : "",
				   parser.context != NULL ? ")" : "");
			goto out;
		}
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (++docs > 1)
				conf_error(ctx, (int)ev.start_mark.line + 1, NULL,
					   "only one YAML document allowed");
			break;
		case YAML_ALIAS_EVENT:
			conf_error(ctx, (int)ev.start_mark.line + 1, NULL, "aliases not allowed");
			break;
		case YAML_MAPPING_START_EVENT:
		case YAML_SEQUENCE_START_EVENT:
			if (++depth > CONF_DEPTH_MAX + 1)
				conf_error(ctx, (int)ev.start_mark.line + 1, NULL,
					   "nesting too deep");
			break;
		case YAML_MAPPING_END_EVENT:
		case YAML_SEQUENCE_END_EVENT:
			depth--;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
		if (ctx->error != NULL)
			goto out;
	}
	ret = 0;
out:
	yaml_parser_delete(&parser);
	return ret;
}

/* Parse buf (named name in messages) into the sections; see config.h. */
int conf_load_buffer(const char *name, const char *buf, size_t len,
		     const struct conf_section *sections, size_t n_sections, char **error_r)
{
	struct conf_ctx ctx = { .name = name != NULL ? name : "(config)",
				.sections = sections,
				.n_sections = n_sections };
	yaml_parser_t parser;
	yaml_document_t doc;
	yaml_node_t *root;
	bool parser_ok = false, doc_ok = false;
	size_t s, i;
	int ret = -1;

	if (error_r != NULL)
		*error_r = NULL;
	conf_check_tables(sections, n_sections);
	conf_zero_targets(sections, n_sections);
	for (s = 0; s < n_sections; s++)
		ctx.n_entries += sections[s].n;
	if ((ctx.seen_line = calloc(ctx.n_entries + 1, sizeof(int))) == NULL) {
		conf_error(&ctx, 0, NULL, "out of memory");
		goto out;
	}
	if (buf == NULL && len > 0) {
		conf_error(&ctx, 0, NULL, "no input");
		goto out;
	}
	if (len > CONF_FILE_MAX) {
		conf_error(&ctx, 0, NULL, "file too big (max %d bytes)", CONF_FILE_MAX);
		goto out;
	}
	if (conf_prescan(&ctx, buf != NULL ? buf : "", len) != 0)
		goto out;
	if (!yaml_parser_initialize(&parser)) {
		conf_error(&ctx, 0, NULL, "out of memory");
		goto out;
	}
	parser_ok = true;
	yaml_parser_set_input_string(&parser, (const unsigned char *)(buf != NULL ? buf : ""),
				     len);
	if (!yaml_parser_load(&parser, &doc)) {
		conf_error(&ctx, (int)parser.problem_mark.line + 1, NULL, "YAML syntax error: %s",
			   parser.problem != NULL ? parser.problem : "unknown");
		goto out;
	}
	doc_ok = true;
	ctx.doc = &doc;
	if ((root = yaml_document_get_root_node(&doc)) == NULL ||
	    (root->type == YAML_SCALAR_NODE && conf_is_null(root))) {
		conf_error(&ctx, 1, NULL, "empty file");
		goto out;
	}
	if (root->type != YAML_MAPPING_NODE) {
		conf_error(&ctx, (int)root->start_mark.line + 1, NULL,
			   "top level is not a mapping");
		goto out;
	}
	if (conf_walk(&ctx, &doc, root, "", 1) != 0 || conf_finish(&ctx) != 0)
		goto out;
	ret = 0;
out:
	if (doc_ok)
		yaml_document_delete(&doc);
	if (parser_ok)
		yaml_parser_delete(&parser);
	for (i = 0; i < ctx.n_maps; i++)
		free(ctx.maps[i].prefix);
	free(ctx.maps);
	free(ctx.seen_line);
	if (ret != 0) {
		conf_free(sections, n_sections);
		if (ctx.error == NULL)
			conf_error(&ctx, 0, NULL, "invalid configuration");
		if (error_r != NULL)
			*error_r = ctx.error;
		else
			free(ctx.error);
	}
	return ret;
}

/* Read path (a regular file of at most 1 MiB) and parse it into the sections. */
int conf_load(const char *path, const struct conf_section *sections, size_t n_sections,
	      char **error_r)
{
	struct conf_ctx ctx = { .name = path != NULL ? path : "(config)" };
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	ssize_t r;
	int fd = -1, ret = -1;

	if (error_r != NULL)
		*error_r = NULL;
	conf_check_tables(sections, n_sections);
	conf_zero_targets(sections, n_sections);
	if (path == NULL) {
		conf_error(&ctx, 0, NULL, "no configuration file given");
		goto out;
	}
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0) {
		conf_error(&ctx, 0, NULL, "cannot open: %s", strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		conf_error(&ctx, 0, NULL, "not a regular file");
		goto out;
	}
	if (st.st_size > CONF_FILE_MAX) {
		conf_error(&ctx, 0, NULL, "file too big (max %d bytes)", CONF_FILE_MAX);
		goto out;
	}
	if ((buf = malloc(CONF_FILE_MAX + 1)) == NULL) {
		conf_error(&ctx, 0, NULL, "out of memory");
		goto out;
	}
	while (len < CONF_FILE_MAX + 1) {
		r = read(fd, buf + len, CONF_FILE_MAX + 1 - len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			conf_error(&ctx, 0, NULL, "cannot read: %s", strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	if (len > CONF_FILE_MAX) {
		conf_error(&ctx, 0, NULL, "file too big (max %d bytes)", CONF_FILE_MAX);
		goto out;
	}
	(void)close(fd);
	ret = conf_load_buffer(path, buf, len, sections, n_sections, error_r);
	free(buf);
	return ret;
out:
	if (fd >= 0)
		(void)close(fd);
	free(buf);
	if (error_r != NULL)
		*error_r = ctx.error;
	else
		free(ctx.error);
	return ret;
}
