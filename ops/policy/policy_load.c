/*
 * policy_load — parse and validate deploy/policy.yaml with libyaml's document API.
 *
 * Every error names the file, the line and the dotted key ("services.auth.redis.send")
 * and stops the load: unknown keys, duplicate keys or list items, names that do not
 * match their pattern, unknown rights, streams nobody consumes, a stream consumed
 * twice. What survives is safe to print into ACL files and SQL without quoting
 * tricks: every name matched a strict pattern here.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "policy.h"

#define POLICY_FILE_MAX (1024 * 1024)

struct load_ctx {
	const char *name;
	yaml_document_t doc;
	char *error;
};

/* calloc or exit: the tool cannot do anything useful without memory. */
void *policy_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL) {
		fputs("ward-policy: out of memory\n", stderr);
		exit(1);
	}
	return p;
}

/* strdup or exit. */
char *policy_xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL) {
		fputs("ward-policy: out of memory\n", stderr);
		exit(1);
	}
	return p;
}

/* Record the first error as "file:line: key: reason" (line of node, 1-based). */
static int load_fail(struct load_ctx *ctx, const yaml_node_t *node, const char *key,
		     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int load_fail(struct load_ctx *ctx, const yaml_node_t *node, const char *key,
		     const char *fmt, ...)
{
	char reason[256];
	va_list ap;
	unsigned long line = node != NULL ? (unsigned long)node->start_mark.line + 1 : 0;

	if (ctx->error != NULL)
		return -1;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof reason, fmt, ap);
	va_end(ap);
	if (asprintf(&ctx->error, "%s:%lu: %s: %s", ctx->name, line, key, reason) < 0)
		ctx->error = NULL;
	return -1;
}

/* 1 if s is [a-z][a-z0-9-]* of at most POLICY_NAME_MAX characters. */
static int name_valid(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > POLICY_NAME_MAX || !(s[0] >= 'a' && s[0] <= 'z') || s[len - 1] == '-')
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return 0;
	return 1;
}

/* 1 if s matches ^[qr]:[a-z-]+$ (bounded). */
static int stream_valid(const char *s)
{
	size_t len = strlen(s);

	if (len < 3 || len > 2 + POLICY_NAME_MAX || (s[0] != 'q' && s[0] != 'r') || s[1] != ':')
		return 0;
	for (size_t i = 2; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '-'))
			return 0;
	return 1;
}

/* 1 if s is a plain lower-case SQL identifier [a-z_][a-z0-9_]*, at most 63 bytes. */
static int ident_valid(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > 63 || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return 0;
	return 1;
}

/* The scalar text of node, or NULL (with an error) if it is not a scalar. */
static const char *scalar(struct load_ctx *ctx, yaml_node_t *node, const char *key)
{
	if (node == NULL || node->type != YAML_SCALAR_NODE) {
		load_fail(ctx, node, key, "expected a scalar");
		return NULL;
	}
	return (const char *)node->data.scalar.value;
}

/* Check node is a mapping whose keys are scalars, unique, and among allowed
 * (NULL: any key). */
static int mapping_check(struct load_ctx *ctx, yaml_node_t *node, const char *key,
			 const char *const *allowed)
{
	yaml_node_pair_t *a, *b;

	if (node == NULL || node->type != YAML_MAPPING_NODE)
		return load_fail(ctx, node, key, "expected a mapping");
	for (a = node->data.mapping.pairs.start; a < node->data.mapping.pairs.top; a++) {
		yaml_node_t *k = yaml_document_get_node(&ctx->doc, a->key);
		const char *ks = scalar(ctx, k, key);
		int known = allowed == NULL;

		if (ks == NULL)
			return -1;
		for (size_t i = 0; allowed != NULL && allowed[i] != NULL; i++)
			if (strcmp(ks, allowed[i]) == 0)
				known = 1;
		if (!known)
			return load_fail(ctx, k, key, "unknown key '%s'", ks);
		for (b = node->data.mapping.pairs.start; b < a; b++) {
			yaml_node_t *k2 = yaml_document_get_node(&ctx->doc, b->key);

			if (strcmp((const char *)k2->data.scalar.value, ks) == 0)
				return load_fail(ctx, k, key, "duplicate key '%s'", ks);
		}
	}
	return 0;
}

/* Build "prefix.suffix" into buf. */
static const char *subkey(char *buf, size_t size, const char *prefix, const char *suffix)
{
	int r = snprintf(buf, size, "%s.%s", prefix, suffix);

	if (r < 0 || (size_t)r >= size)
		buf[size - 1] = '\0'; /* names are bounded; a cut key only shortens a message */
	return buf;
}

/* Read a sequence of unique scalars, each checked by valid (what: for messages). */
static int string_list(struct load_ctx *ctx, yaml_node_t *node, const char *key,
		       int (*valid)(const char *), const char *what, const char *form,
		       char ***items_r, size_t *n_r)
{
	size_t n, i = 0;
	char **items;

	if (node == NULL || node->type != YAML_SEQUENCE_NODE)
		return load_fail(ctx, node, key, "expected a list");
	n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
	items = policy_xcalloc(n, sizeof *items);
	*items_r = items;
	for (yaml_node_item_t *it = node->data.sequence.items.start;
	     it < node->data.sequence.items.top; it++) {
		yaml_node_t *item = yaml_document_get_node(&ctx->doc, *it);
		const char *s = scalar(ctx, item, key);

		if (s == NULL)
			return -1;
		if (!valid(s))
			return load_fail(ctx, item, key, "invalid %s '%s' (expected %s)", what, s,
					 form);
		for (size_t j = 0; j < i; j++)
			if (strcmp(items[j], s) == 0)
				return load_fail(ctx, item, key, "'%s' listed twice", s);
		items[i++] = policy_xstrdup(s);
		*n_r = i;
	}
	return 0;
}

/* Read a list of rights (SELECT, INSERT, UPDATE, DELETE) into a bit set. */
static int rights_list(struct load_ctx *ctx, yaml_node_t *node, const char *key, unsigned *rights_r)
{
	static const struct {
		const char *name;
		unsigned bit;
	} names[] = { { "SELECT", POLICY_SELECT },
		      { "INSERT", POLICY_INSERT },
		      { "UPDATE", POLICY_UPDATE },
		      { "DELETE", POLICY_DELETE } };

	*rights_r = 0;
	if (node == NULL || node->type != YAML_SEQUENCE_NODE)
		return load_fail(ctx, node, key, "expected a list of rights");
	if (node->data.sequence.items.top == node->data.sequence.items.start)
		return load_fail(ctx, node, key, "empty list of rights");
	for (yaml_node_item_t *it = node->data.sequence.items.start;
	     it < node->data.sequence.items.top; it++) {
		yaml_node_t *item = yaml_document_get_node(&ctx->doc, *it);
		const char *s = scalar(ctx, item, key);
		unsigned bit = 0;

		if (s == NULL)
			return -1;
		for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
			if (strcmp(s, names[i].name) == 0)
				bit = names[i].bit;
		if (bit == 0)
			return load_fail(ctx, item, key,
					 "unknown right '%s' (SELECT, INSERT, UPDATE, DELETE)", s);
		if (*rights_r & bit)
			return load_fail(ctx, item, key, "'%s' listed twice", s);
		*rights_r |= bit;
	}
	return 0;
}

/* Read a mapping identifier → rights list. */
static int grant_map(struct load_ctx *ctx, yaml_node_t *node, const char *key,
		     struct policy_grant **grants_r, size_t *n_r)
{
	struct policy_grant *g;
	size_t n, i = 0;
	char k2[256];

	if (mapping_check(ctx, node, key, NULL) < 0)
		return -1;
	n = (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
	g = policy_xcalloc(n, sizeof *g);
	*grants_r = g;
	for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(&ctx->doc, p->key);
		const char *name = (const char *)k->data.scalar.value;

		if (!ident_valid(name))
			return load_fail(ctx, k, key, "invalid name '%s' (expected [a-z_][a-z0-9_]*)",
					 name);
		g[i].name = policy_xstrdup(name);
		*n_r = ++i;
		if (rights_list(ctx, yaml_document_get_node(&ctx->doc, p->value),
				subkey(k2, sizeof k2, key, name), &g[i - 1].rights) < 0)
			return -1;
	}
	return 0;
}

/* 1 if s is "schema.table" of two identifiers. */
static int qualified_valid(const char *s)
{
	char buf[130];
	char *dot;

	if (strlen(s) >= sizeof buf)
		return 0;
	memcpy(buf, s, strlen(s) + 1);
	dot = strchr(buf, '.');
	if (dot == NULL)
		return 0;
	*dot = '\0';
	return ident_valid(buf) && ident_valid(dot + 1);
}

/* Read the redis: section of a principal. */
static int principal_redis(struct load_ctx *ctx, struct policy_principal *pr, yaml_node_t *node,
			   const char *key)
{
	static const char *const keys[] = { "consume", "send", "ratelimit", "health_only",
					    "dead_letters", "memo", NULL };
	char k2[256];

	if (mapping_check(ctx, node, key, keys) < 0)
		return -1;
	for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
	     p++) {
		const char *k = (const char *)yaml_document_get_node(&ctx->doc, p->key)
					->data.scalar.value;
		yaml_node_t *v = yaml_document_get_node(&ctx->doc, p->value);
		int is_send = strcmp(k, "send") == 0;
		char ***items = is_send ? &pr->send : &pr->consume;
		size_t *n = is_send ? &pr->n_send : &pr->n_consume;

		subkey(k2, sizeof k2, key, k);
		if (strcmp(k, "ratelimit") == 0 || strcmp(k, "health_only") == 0 ||
		    strcmp(k, "dead_letters") == 0 || strcmp(k, "memo") == 0) {
			const char *b = scalar(ctx, v, k2);
			bool *flag = strcmp(k, "ratelimit") == 0     ? &pr->ratelimit
				     : strcmp(k, "dead_letters") == 0 ? &pr->dead_letters
				     : strcmp(k, "memo") == 0	      ? &pr->memo
								      : &pr->health_only;

			if (b == NULL)
				return -1;
			if (strcmp(b, "true") == 0 || strcmp(b, "false") == 0)
				*flag = strcmp(b, "true") == 0;
			else {
				return load_fail(ctx, v, k2, "expected true or false");
			}
			continue;
		}
		if (string_list(ctx, v, k2, stream_valid, "stream name", "^[qr]:[a-z-]+$", items,
				n) < 0)
			return -1;
		/* Reply streams are implied by the queues; listing one is a mistake. */
		for (size_t i = 0; i < *n; i++)
			if ((*items)[i][0] == 'r')
				return load_fail(ctx, v, k2,
						 "'%s': reply streams are implied, list q: streams",
						 (*items)[i]);
	}
	return 0;
}

/* Read a mapping "schema.table" → list of column names (SELECT on those columns). */
static int columns_map(struct load_ctx *ctx, yaml_node_t *node, const char *key,
		       struct policy_columns **cols_r, size_t *n_r)
{
	struct policy_columns *c;
	size_t n, i = 0;
	char k2[256];

	if (mapping_check(ctx, node, key, NULL) < 0)
		return -1;
	n = (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
	c = policy_xcalloc(n, sizeof *c);
	*cols_r = c;
	for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(&ctx->doc, p->key);
		const char *name = (const char *)k->data.scalar.value;

		if (!qualified_valid(name))
			return load_fail(ctx, k, key, "invalid table '%s' (expected schema.table)",
					 name);
		c[i].table = policy_xstrdup(name);
		*n_r = ++i;
		if (string_list(ctx, yaml_document_get_node(&ctx->doc, p->value),
				subkey(k2, sizeof k2, key, name), ident_valid, "column",
				"[a-z_][a-z0-9_]*", &c[i - 1].cols, &c[i - 1].n_cols) < 0)
			return -1;
		if (c[i - 1].n_cols == 0)
			return load_fail(ctx, k, k2, "empty list of columns");
	}
	return 0;
}

/* Read the postgres: section of a principal ("none" or a mapping). */
static int principal_pg(struct load_ctx *ctx, struct policy_principal *pr, yaml_node_t *node,
			const char *key)
{
	static const char *const keys[] = { "schema", "tables", "on", "all_tenants", "columns",
					    NULL };
	char k2[256];

	if (node != NULL && node->type == YAML_SCALAR_NODE) {
		if (strcmp((const char *)node->data.scalar.value, "none") != 0)
			return load_fail(ctx, node, key, "expected 'none' or a mapping");
		pr->has_pg = false;
		return 0;
	}
	if (mapping_check(ctx, node, key, keys) < 0)
		return -1;
	pr->has_pg = true;
	for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
	     p++) {
		const char *k = (const char *)yaml_document_get_node(&ctx->doc, p->key)
					->data.scalar.value;
		yaml_node_t *v = yaml_document_get_node(&ctx->doc, p->value);

		subkey(k2, sizeof k2, key, k);
		if (strcmp(k, "schema") == 0) {
			const char *s = scalar(ctx, v, k2);

			if (s == NULL)
				return -1;
			if (!ident_valid(s))
				return load_fail(ctx, v, k2, "invalid schema name '%s'", s);
			pr->schema = policy_xstrdup(s);
		} else if (strcmp(k, "tables") == 0) {
			if (grant_map(ctx, v, k2, &pr->tables, &pr->n_tables) < 0)
				return -1;
		} else if (strcmp(k, "on") == 0) {
			if (grant_map(ctx, v, k2, &pr->on, &pr->n_on) < 0)
				return -1;
		} else if (strcmp(k, "columns") == 0) {
			if (columns_map(ctx, v, k2, &pr->columns, &pr->n_columns) < 0)
				return -1;
		} else {
			if (string_list(ctx, v, k2, qualified_valid, "table", "schema.table",
					&pr->all_tenants, &pr->n_all_tenants) < 0)
				return -1;
		}
	}
	if (pr->n_tables > 0 && pr->schema == NULL)
		return load_fail(ctx, node, key, "'tables' needs 'schema'");
	for (size_t i = 0; i < pr->n_on; i++)
		if (pr->schema != NULL && strcmp(pr->on[i].name, pr->schema) == 0)
			return load_fail(ctx, node, key, "'on' names its own schema '%s'",
					 pr->schema);
	for (size_t i = 0; i < pr->n_columns; i++) {
		size_t sl = strcspn(pr->columns[i].table, ".");

		/* Columns narrow nothing where the role already has the schema's tables. */
		if (pr->schema != NULL && strlen(pr->schema) == sl &&
		    strncmp(pr->columns[i].table, pr->schema, sl) == 0)
			return load_fail(ctx, node, key, "'columns' names its own schema '%s'",
					 pr->schema);
		for (size_t j = 0; j < pr->n_on; j++)
			if (strlen(pr->on[j].name) == sl &&
			    strncmp(pr->columns[i].table, pr->on[j].name, sl) == 0)
				return load_fail(ctx, node, key,
						 "'columns' of '%s': 'on' already grants its schema",
						 pr->columns[i].table);
	}
	return 0;
}

/* Read one principal (name: {redis: …, postgres: …}). */
static int principal_read(struct load_ctx *ctx, struct policy_principal *pr, yaml_node_t *kn,
			  yaml_node_t *node, const char *section)
{
	static const char *const keys[] = { "redis", "postgres", NULL };
	const char *name = (const char *)kn->data.scalar.value;
	char key[128], k2[256];
	int seen_pg = 0;

	subkey(key, sizeof key, section, name);
	if (!name_valid(name))
		return load_fail(ctx, kn, key, "invalid name (expected [a-z][a-z0-9-]*, at most %d)",
				 POLICY_NAME_MAX);
	pr->name = policy_xstrdup(name);
	pr->line = (int)kn->start_mark.line + 1;
	if (mapping_check(ctx, node, key, keys) < 0)
		return -1;
	for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
	     p++) {
		const char *k = (const char *)yaml_document_get_node(&ctx->doc, p->key)
					->data.scalar.value;
		yaml_node_t *v = yaml_document_get_node(&ctx->doc, p->value);

		subkey(k2, sizeof k2, key, k);
		if (strcmp(k, "redis") == 0) {
			if (principal_redis(ctx, pr, v, k2) < 0)
				return -1;
		} else {
			seen_pg = 1;
			if (principal_pg(ctx, pr, v, k2) < 0)
				return -1;
		}
	}
	if (!seen_pg)
		return load_fail(ctx, node, key, "missing 'postgres' (write 'postgres: none')");
	return 0;
}

/* 1 if s is among the n strings of v. */
static int list_has(char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0)
			return 1;
	return 0;
}

const struct policy_principal *policy_find(const struct policy *pol, const char *name)
{
	for (size_t i = 0; i < pol->n; i++)
		if (strcmp(pol->p[i].name, name) == 0)
			return &pol->p[i];
	return NULL;
}

const struct policy_principal *policy_consumer(const struct policy *pol, const char *stream)
{
	for (size_t i = 0; i < pol->n; i++)
		if (list_has(pol->p[i].consume, pol->p[i].n_consume, stream))
			return &pol->p[i];
	return NULL;
}

int policy_sends_to(const struct policy_principal *p, const char *stream)
{
	return list_has(p->send, p->n_send, stream);
}

void policy_role_name(const char *name, char *out, size_t out_len)
{
	if (out_len == 0)
		return;
	snprintf(out, out_len, "ward_%s", name);
	for (size_t i = 5; i < out_len && out[i] != '\0'; i++)
		if (out[i] == '-')
			out[i] = '_';
}

void policy_rights_print(FILE *f, unsigned rights)
{
	static const char *const names[] = { "SELECT", "INSERT", "UPDATE", "DELETE" };
	const char *sep = "";

	for (size_t i = 0; i < 4; i++)
		if (rights & (1u << i)) {
			fprintf(f, "%s%s", sep, names[i]);
			sep = ", ";
		}
}

/* Cross-checks: one consumer per stream, every send target consumed, unique names. */
static int load_check(struct load_ctx *ctx, struct policy *pol, yaml_node_t *root)
{
	char key[128];

	for (size_t i = 0; i < pol->n; i++) {
		struct policy_principal *a = &pol->p[i];

		subkey(key, sizeof key, a->operator ? "operators" : "services", a->name);
		for (size_t j = 0; j < i; j++)
			if (strcmp(pol->p[j].name, a->name) == 0)
				return load_fail(ctx, root, key, "line %d: name already used",
						 a->line);
		for (size_t c = 0; c < a->n_consume; c++)
			for (size_t j = 0; j < i; j++)
				if (list_has(pol->p[j].consume, pol->p[j].n_consume,
					     a->consume[c]))
					return load_fail(ctx, root, key,
							 "line %d: %s is already consumed by %s",
							 a->line, a->consume[c], pol->p[j].name);
	}
	for (size_t i = 0; i < pol->n; i++) {
		struct policy_principal *a = &pol->p[i];

		subkey(key, sizeof key, a->operator ? "operators" : "services", a->name);
		strncat(key, ".redis.send", sizeof key - strlen(key) - 1);
		for (size_t s = 0; s < a->n_send; s++) {
			const struct policy_principal *c = policy_consumer(pol, a->send[s]);

			if (c == NULL)
				return load_fail(ctx, root, key,
						 "line %d: unknown stream %s (no service consumes it)",
						 a->line, a->send[s]);
			if (c == a)
				return load_fail(ctx, root, key, "line %d: sends to its own queue %s",
						 a->line, a->send[s]);
		}
	}
	return 0;
}

/* Add route (sender, route) unless present. */
static void route_add(struct policy *pol, const char *sender, const char *route, const char *reader)
{
	for (size_t i = 0; i < pol->n_routes; i++)
		if (strcmp(pol->routes[i].sender, sender) == 0 &&
		    strcmp(pol->routes[i].route, route) == 0)
			return;
	pol->routes[pol->n_routes].sender = sender;
	pol->routes[pol->n_routes].route = policy_xstrdup(route);
	pol->routes[pol->n_routes].reader = reader;
	pol->n_routes++;
}

/* Derive the routes: (S, T) for each send, (X, r:S) for each sender S of X's queues. */
static void load_routes(struct policy *pol)
{
	size_t max = 0;

	for (size_t i = 0; i < pol->n; i++)
		max += pol->p[i].n_send * 2;
	pol->routes = policy_xcalloc(max, sizeof *pol->routes);
	for (size_t i = 0; i < pol->n; i++) {
		const struct policy_principal *s = &pol->p[i];

		for (size_t t = 0; t < s->n_send; t++)
			route_add(pol, s->name, s->send[t], policy_consumer(pol, s->send[t])->name);
	}
	for (size_t i = 0; i < pol->n; i++) {
		const struct policy_principal *x = &pol->p[i];

		for (size_t q = 0; q < x->n_consume; q++)
			for (size_t j = 0; j < pol->n; j++) {
				char r[POLICY_NAME_MAX + 3];

				if (!policy_sends_to(&pol->p[j], x->consume[q]))
					continue;
				snprintf(r, sizeof r, "r:%s", pol->p[j].name);
				route_add(pol, x->name, r, pol->p[j].name);
			}
	}
}

struct policy *policy_load_buffer(const char *name, const char *buf, size_t len, char **error_r)
{
	static const char *const top_keys[] = { "services", "operators", NULL };
	struct load_ctx ctx = { .name = name };
	yaml_parser_t parser;
	struct policy *pol = policy_xcalloc(1, sizeof *pol);
	yaml_node_t *root;
	size_t total = 0, k = 0;
	int have_doc = 0, ok = 0;

	*error_r = NULL;
	pol->path = policy_xstrdup(name);
	if (!yaml_parser_initialize(&parser)) {
		load_fail(&ctx, NULL, "(file)", "cannot initialise the YAML parser");
		goto out;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	if (!yaml_parser_load(&parser, &ctx.doc)) {
		if (asprintf(&ctx.error, "%s:%lu: (yaml): %s", name,
			     (unsigned long)parser.problem_mark.line + 1,
			     parser.problem != NULL ? parser.problem : "parse error") < 0)
			ctx.error = NULL;
		yaml_parser_delete(&parser);
		goto out;
	}
	have_doc = 1;
	yaml_parser_delete(&parser);
	root = yaml_document_get_root_node(&ctx.doc);
	if (root == NULL) {
		load_fail(&ctx, NULL, "(file)", "empty document");
		goto out;
	}
	if (mapping_check(&ctx, root, "(top)", top_keys) < 0)
		goto out;
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *v = yaml_document_get_node(&ctx.doc, p->value);
		const char *sec = (const char *)yaml_document_get_node(&ctx.doc, p->key)
					  ->data.scalar.value;

		if (mapping_check(&ctx, v, sec, NULL) < 0)
			goto out;
		total += (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
	}
	pol->p = policy_xcalloc(total, sizeof *pol->p);
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *v = yaml_document_get_node(&ctx.doc, p->value);
		const char *sec = (const char *)yaml_document_get_node(&ctx.doc, p->key)
					  ->data.scalar.value;

		for (yaml_node_pair_t *q = v->data.mapping.pairs.start;
		     q < v->data.mapping.pairs.top; q++) {
			struct policy_principal *pr = &pol->p[k++];

			pol->n = k;
			pr->operator = strcmp(sec, "operators") == 0;
			if (principal_read(&ctx, pr, yaml_document_get_node(&ctx.doc, q->key),
					   yaml_document_get_node(&ctx.doc, q->value), sec) < 0)
				goto out;
		}
	}
	if (pol->n == 0) {
		load_fail(&ctx, root, "services", "no services");
		goto out;
	}
	if (load_check(&ctx, pol, root) < 0)
		goto out;
	load_routes(pol);
	ok = 1;
out:
	if (have_doc)
		yaml_document_delete(&ctx.doc);
	if (!ok) {
		*error_r = ctx.error != NULL ? ctx.error : policy_xstrdup("policy: out of memory");
		policy_free(pol);
		return NULL;
	}
	return pol;
}

struct policy *policy_load(const char *path, char **error_r)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t len;
	struct policy *pol = NULL;

	*error_r = NULL;
	if (f == NULL) {
		if (asprintf(error_r, "%s:0: (file): %s", path, strerror(errno)) < 0)
			*error_r = NULL;
		return NULL;
	}
	buf = policy_xcalloc(POLICY_FILE_MAX + 1, 1);
	len = fread(buf, 1, POLICY_FILE_MAX + 1, f);
	if (ferror(f) || len > POLICY_FILE_MAX) {
		if (asprintf(error_r, "%s:0: (file): %s", path,
			     ferror(f) ? "read error" : "larger than 1 MiB") < 0)
			*error_r = NULL;
		goto out;
	}
	pol = policy_load_buffer(path, buf, len, error_r);
out:
	fclose(f);
	free(buf);
	return pol;
}

/* Free a string array of n items. */
static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; v != NULL && i < n; i++)
		free(v[i]);
	free(v);
}

void policy_free(struct policy *pol)
{
	if (pol == NULL)
		return;
	for (size_t i = 0; i < pol->n; i++) {
		struct policy_principal *p = &pol->p[i];
		free(p->name);
		strv_free(p->consume, p->n_consume);
		strv_free(p->send, p->n_send);
		free(p->schema);
		for (size_t j = 0; j < p->n_tables; j++)
			free(p->tables[j].name);
		free(p->tables);
		for (size_t j = 0; j < p->n_on; j++)
			free(p->on[j].name);
		free(p->on);
		strv_free(p->all_tenants, p->n_all_tenants);
		for (size_t j = 0; j < p->n_columns; j++) {
			free(p->columns[j].table);
			strv_free(p->columns[j].cols, p->columns[j].n_cols);
		}
		free(p->columns);
	}
	for (size_t i = 0; i < pol->n_routes; i++)
		free(pol->routes[i].route);
	free(pol->routes);
	free(pol->p);
	free(pol->path);
	free(pol);
}
