/*
 * test_ticket_queue — a test driver for ward-ticket's methods through q:ticket,
 * used by tests/e2e/test_ticket.sh until the gateway routes them over HTTPS; and,
 * run without arguments (as tests/run unit does), unit tests of its method table.
 *
 *   test_ticket_queue call [--region R] --tenant UUID [--kind K] [--id ID]
 *       [--role ROLE] [--idem KEY] [--timeout MS] [--content-file F] [--scope S]
 *       [--principal-tenant UUID]
 *       METHOD JSON|@FILE
 *
 * Sends METHOD with JSON (read into the method's request message by pbjson, as the
 * gateway does; --content-file fills the bytes field "content", which pbjson does
 * not read) as the operator's Redis user ("ops", the cell's routes-ops keys under
 * $WARD_VAR/<region>/secrets, Redis at $WARD_<R>_REDIS) with the given principal,
 * and prints one JSON line: {"status": 0, "reply": {...}} or {"status": 404,
 * "problem": {...}}. Exit 0 on status 0, 1 on an error status, 3 on a transport
 * error, 2 on bad usage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <getopt.h>
#include <jansson.h>
#include <unistd.h>

#include "auth.pb-c.h"
#include "envelope.h"
#include "pbjson.h"
#include "queue.h"
#include "ticket.pb-c.h"

static const struct {
	const char *method;
	const ProtobufCMessageDescriptor *request, *reply;
} driver_methods[] = {
    {"ticket.create", &ward__ticket_create_request__descriptor, &ward__ticket__descriptor},
    {"ticket.list", &ward__ticket_list_request__descriptor, &ward__ticket_list_reply__descriptor},
    {"ticket.get", &ward__ticket_get_request__descriptor, &ward__ticket__descriptor},
    {"ticket.update", &ward__ticket_update_request__descriptor, &ward__ticket__descriptor},
    {"message.create", &ward__message_create_request__descriptor, &ward__message__descriptor},
    {"message.list", &ward__message_list_request__descriptor,
     &ward__message_list_reply__descriptor},
    {"attachment.create", &ward__attachment_create_request__descriptor,
     &ward__attachment__descriptor},
    {"attachment.list", &ward__attachment_list_request__descriptor,
     &ward__attachment_list_reply__descriptor},
    {"attachment.get", &ward__attachment_get_request__descriptor,
     &ward__attachment_download__descriptor},
    {"department.create", &ward__department_create_request__descriptor,
     &ward__department__descriptor},
    {"department.list", &ward__department_list_request__descriptor,
     &ward__department_list_reply__descriptor},
    {"ping", &ward__ping_request__descriptor, &ward__ping_reply__descriptor},
};
#define DRIVER_N (sizeof driver_methods / sizeof driver_methods[0])

struct driver_run {
	struct event_base *base;
	const ProtobufCMessageDescriptor *reply_desc;
	int exit_code;
};

/* Read a whole file (at most max bytes) into a malloc'd NUL-terminated buffer. */
static unsigned char *driver_read(const char *path, size_t max, size_t *len_r)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf;
	size_t n;

	if (f == NULL)
		return NULL;
	buf = malloc(max + 1);
	if (buf == NULL) {
		fclose(f);
		return NULL;
	}
	n = fread(buf, 1, max + 1, f);
	fclose(f);
	if (n > max) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	*len_r = n;
	return buf;
}

/* Print the reply (or problem) as one JSON line and stop the loop. */
static void driver_reply(void *arg, int status, const Ward__Envelope *env, const uint8_t *payload,
			 size_t len)
{
	struct driver_run *run = arg;
	const ProtobufCMessageDescriptor *desc;
	ProtobufCMessage *msg = NULL;
	json_t *out, *body;
	char *text;

	event_base_loopbreak(run->base);
	if (status < 0 || env == NULL) {
		printf("{\"status\": %d, \"transport_error\": true}\n", status);
		run->exit_code = 3;
		return;
	}
	desc = env->status == 0 ? run->reply_desc : &ward__problem__descriptor;
	/* An empty payload is a valid message with every field at its default. */
	msg = protobuf_c_message_unpack(desc, NULL, len, len > 0 ? payload : (const uint8_t *)"");
	out = json_object();
	json_object_set_new(out, "status", json_integer(env->status));
	if (env->status != 0)
		json_object_set_new(out, "error", json_string(env->error ? env->error : ""));
	if (msg != NULL) {
		body = pbjson_render(msg);
		json_object_set_new(out, env->status == 0 ? "reply" : "problem",
				    body != NULL ? body : json_null());
	} else {
		json_object_set_new(out, "malformed_reply", json_true());
	}
	text = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
	if (text != NULL)
		printf("%s\n", text);
	free(text);
	json_decref(out);
	if (msg != NULL)
		protobuf_c_message_free_unpacked(msg, NULL);
	run->exit_code = env->status == 0 ? 0 : 1;
}

/* The "call" command (see the file header). */
static int driver_call(int argc, char **argv)
{
	static const struct option opts[] = {{"region", required_argument, NULL, 'r'},
					     {"tenant", required_argument, NULL, 't'},
					     {"kind", required_argument, NULL, 'k'},
					     {"id", required_argument, NULL, 'i'},
					     {"role", required_argument, NULL, 'R'},
					     {"idem", required_argument, NULL, 'I'},
					     {"timeout", required_argument, NULL, 'T'},
					     {"content-file", required_argument, NULL, 'c'},
					     {"scope", required_argument, NULL, 's'},
					     {"principal-tenant", required_argument, NULL, 'P'},
					     {NULL, 0, NULL, 0}};
	const char *region = "eu", *tenant = NULL, *kind = "user", *id = "", *role = "agent";
	const char *ptenant = NULL, *idem = NULL, *content_file = NULL, *err = NULL,
		   *var = getenv("WARD_VAR");
	char path[512], envname[32], instance[48], *redis, *colon, *scopes[1];
	unsigned char *password = NULL, *routes = NULL;
	size_t plen = 0, rlen = 0, n_scopes = 0;
	int timeout = 10000, c, i, rc = 2;
	const ProtobufCMessageDescriptor *req_desc = NULL;
	ProtobufCMessage *req = NULL;
	json_t *json = NULL, *errors = NULL;
	/* As the gateway should for these routes: bodies up to the service's limits. */
	const struct pbjson_limits limits = {.max_string = 1024 * 1024};
	json_error_t jerr;
	envelope_keys_t *keys;
	struct queue_opts qo = {0};
	struct queue_msg msg = {0};
	struct driver_run run = {0};
	Ward__Principal principal = WARD__PRINCIPAL__INIT;
	queue_t *q = NULL;
	uint8_t *packed = NULL;
	size_t packed_len;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			region = optarg;
			break;
		case 't':
			tenant = optarg;
			break;
		case 'k':
			kind = optarg;
			break;
		case 'i':
			id = optarg;
			break;
		case 'R':
			role = optarg;
			break;
		case 'I':
			idem = optarg;
			break;
		case 'T':
			timeout = atoi(optarg);
			break;
		case 'c':
			content_file = optarg;
			break;
		case 's':
			scopes[0] = optarg, n_scopes = 1;
			break;
		case 'P':
			ptenant = optarg;
			break;
		default:
			return 2;
		}
	}
	if (optind + 2 != argc || tenant == NULL || var == NULL || strlen(region) != 2) {
		fprintf(stderr, "usage: test_ticket_queue call --tenant UUID ... METHOD JSON "
				"(with WARD_VAR set)\n");
		return 2;
	}
	for (i = 0; i < (int)DRIVER_N; i++)
		if (strcmp(driver_methods[i].method, argv[optind]) == 0)
			break;
	if (i == (int)DRIVER_N) {
		fprintf(stderr, "unknown method %s\n", argv[optind]);
		return 2;
	}
	req_desc = driver_methods[i].request;
	run.reply_desc = driver_methods[i].reply;
	/* "@path": the JSON is in a file (an argument is limited to 128 KiB). */
	json = argv[optind + 1][0] == '@' ? json_load_file(argv[optind + 1] + 1, 0, &jerr)
					  : json_loads(argv[optind + 1], 0, &jerr);
	if (json == NULL || pbjson_parse(req_desc, json, &limits, &req, &errors) < 0) {
		char *e = errors != NULL ? json_dumps(errors, JSON_COMPACT) : NULL;

		fprintf(stderr, "bad request JSON: %s\n", e != NULL ? e : jerr.text);
		free(e);
		json_decref(errors);
		goto out;
	}
	if (content_file != NULL) {
		const ProtobufCFieldDescriptor *f = pbjson_field(req_desc, "content");
		ProtobufCBinaryData *bd;
		size_t clen = 0;
		unsigned char *data = driver_read(content_file, 8 * 1024 * 1024, &clen);

		if (f == NULL || f->type != PROTOBUF_C_TYPE_BYTES || data == NULL) {
			fprintf(stderr, "--content-file: unreadable, or no bytes field content\n");
			free(data);
			goto out;
		}
		bd = (ProtobufCBinaryData *)((char *)req + f->offset);
		free(bd->data);
		bd->data = data;
		bd->len = clen;
	}
	snprintf(path, sizeof path, "%s/%s/secrets/redis-ops", var, region);
	password = driver_read(path, 4096, &plen);
	snprintf(path, sizeof path, "%s/%s/secrets/routes-ops", var, region);
	routes = driver_read(path, 65536, &rlen);
	snprintf(envname, sizeof envname, "WARD_%c%c_REDIS", region[0] - 32, region[1] - 32);
	redis = getenv(envname);
	if (password == NULL || routes == NULL || redis == NULL ||
	    (colon = strrchr(redis, ':')) == NULL) {
		fprintf(stderr, "cannot read the operator's credentials under %s or %s\n", var,
			envname);
		goto out;
	}
	while (plen > 0 && (password[plen - 1] == '\n' || password[plen - 1] == '\r'))
		password[--plen] = '\0';
	keys = envelope_keys_parse(routes, rlen, &err);
	if (keys == NULL) {
		fprintf(stderr, "routes-ops: %s\n", err);
		goto out;
	}
	run.base = event_base_new();
	snprintf(instance, sizeof instance, "ticket-driver-%ld", (long)getpid());
	qo.host = "127.0.0.1";
	qo.port = atoi(colon + 1);
	qo.user = "ops";
	qo.password = (const char *)password;
	qo.service = "ops";
	qo.instance = instance;
	qo.region = region;
	q = queue_new(run.base, &qo, keys, &err);
	if (q == NULL) {
		fprintf(stderr, "queue: %s\n", err);
		goto out;
	}
	principal.kind = (char *)kind;
	principal.id = (char *)id;
	principal.role = (char *)role;
	principal.tenant = (char *)(ptenant != NULL ? ptenant : tenant);
	principal.ip = "192.0.2.10";
	principal.n_scopes = n_scopes;
	principal.scopes = n_scopes ? scopes : NULL;
	packed_len = protobuf_c_message_get_packed_size(req);
	packed = malloc(packed_len ? packed_len : 1);
	if (packed == NULL)
		goto out;
	protobuf_c_message_pack(req, packed);
	msg.dest = "q:ticket";
	msg.method = argv[optind];
	msg.tenant = tenant;
	msg.principal = &principal;
	msg.idempotency_key = idem;
	msg.timeout_ms = timeout;
	msg.payload = packed;
	msg.len = packed_len;
	run.exit_code = 3;
	if (queue_request(q, &msg, driver_reply, &run, &err) < 0) {
		fprintf(stderr, "send: %s\n", err);
		goto out;
	}
	event_base_dispatch(run.base);
	rc = run.exit_code;
out:
	queue_free(q);
	if (run.base != NULL)
		event_base_free(run.base);
	free(packed);
	free(password);
	free(routes);
	json_decref(json);
	pbjson_free(req);
	return rc;
}

/* ============================ unit tests ================================ */

/* Every method's request and reply is a ward message; method names are unique. */
static void test_method_table(void **state)
{
	for (size_t i = 0; i < DRIVER_N; i++) {
		assert_non_null(driver_methods[i].request);
		assert_non_null(driver_methods[i].reply);
		assert_int_equal(strncmp(driver_methods[i].request->name, "ward.", 5) == 0 ||
				     strncmp(driver_methods[i].request->package_name, "ward", 4) ==
					 0,
				 1);
		for (size_t k = i + 1; k < DRIVER_N; k++)
			assert_string_not_equal(driver_methods[i].method, driver_methods[k].method);
	}
}

/* Requests carry their ids in the fields the gateway fills from the path. */
static void test_path_fields(void **state)
{
	assert_non_null(pbjson_field(&ward__ticket_get_request__descriptor, "id"));
	assert_non_null(pbjson_field(&ward__ticket_update_request__descriptor, "id"));
	assert_non_null(pbjson_field(&ward__message_create_request__descriptor, "id"));
	assert_non_null(pbjson_field(&ward__message_list_request__descriptor, "id"));
	assert_non_null(pbjson_field(&ward__attachment_get_request__descriptor, "id"));
	assert_non_null(pbjson_field(&ward__attachment_get_request__descriptor, "aid"));
	assert_null(pbjson_field(&ward__ticket_create_request__descriptor, "id"));
}

/* A JSON create request reads into the message; unknown members are refused. */
static void test_json_request(void **state)
{
	ProtobufCMessage *m = NULL;
	json_t *errors = NULL, *j;
	Ward__TicketCreateRequest *r;

	j = json_pack("{s:s, s:s, s:s}", "subject", "Printer on fire", "body", "<b>help</b>",
		      "priority", "high");
	assert_int_equal(
	    pbjson_parse(&ward__ticket_create_request__descriptor, j, NULL, &m, &errors), 0);
	r = (Ward__TicketCreateRequest *)m;
	assert_string_equal(r->subject, "Printer on fire");
	assert_string_equal(r->body, "<b>help</b>");
	pbjson_free(m);
	json_decref(j);
	m = NULL;
	j = json_pack("{s:s, s:s}", "subject", "x", "requester_id", "someone");
	assert_int_equal(
	    pbjson_parse(&ward__ticket_create_request__descriptor, j, NULL, &m, &errors), -1);
	assert_null(m);
	json_decref(errors);
	json_decref(j);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_method_table),
	    cmocka_unit_test(test_path_fields),
	    cmocka_unit_test(test_json_request),
	};

	if (argc > 1 && strcmp(argv[1], "call") == 0)
		return driver_call(argc - 1, argv + 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
