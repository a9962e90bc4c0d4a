/*
 * wardctl_request — requests to a cell's services over their queues, as the operator.
 *
 * wardctl reaches a daemon the way the gateway does: a sealed Envelope on the
 * daemon's stream (q:audit, q:backup, ...) as the "ops" Redis user with its own
 * route keys, a reply on wardctl's reply stream. The principal is the operator,
 * named after $USER (wardctl_operator). wardctl_queue_open/_close hold one
 * connection for several requests (key rotation, ping); wardctl_request is one
 * request on a connection of its own. Requests and replies are protobuf messages
 * named by the caller; transport and service errors, and malformed replies, are
 * printed here.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto.h"
#include "envelope.h"
#include "queue.h"
#include "wardctl.h"

/* What the reply callback hands back to the waiting request. */
struct wardctl_reply {
	struct event_base *base;
	const struct wardctl_call *call;
	int status;
	char error[512];
	ProtobufCMessage *msg;
};

const char *wardctl_operator(void)
{
	const char *user = getenv("USER");

	if (user == NULL || user[0] == '\0' || strlen(user) > 64 ||
	    strspn(user, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
		    strlen(user))
		return "ops";
	return user;
}

int wardctl_queue_open(const struct wardctl_conf *conf, int region, const char *dest,
		       struct wardctl_queue *wq)
{
	const struct wardctl_cell *cell = &conf->cell[region];
	struct queue_opts qo = { 0 };
	envelope_keys_t *keys;
	char instance[48];
	const char *err = NULL;

	memset(wq, 0, sizeof *wq);
	keys = envelope_keys_parse(cell->route_keys.data, cell->route_keys.len, &err);
	if (keys == NULL) {
		wardctl_error("%s: %s", cell->route_keys.path, err);
		return -1;
	}
	if (dest != NULL && envelope_keys_sealing(keys, cell->redis_user, dest, NULL) == NULL) {
		wardctl_error("no route key for %s -> %s in %s (not allowed by the policy)",
			      cell->redis_user, dest, cell->route_keys.path);
		envelope_keys_free(keys);
		return -1;
	}
	wq->base = event_base_new();
	if (wq->base == NULL) {
		wardctl_error("cannot create an event base");
		envelope_keys_free(keys);
		return -1;
	}
	snprintf(instance, sizeof instance, "wardctl-%ld", (long)getpid());
	qo.host = cell->redis_host;
	qo.port = cell->redis_port;
	qo.user = cell->redis_user;
	qo.password = (const char *)cell->redis_password.data;
	qo.service = cell->redis_user;
	qo.instance = instance;
	qo.region = wardctl_regions[region];
	wq->q = queue_new(wq->base, &qo, keys, &err); /* takes keys over, even on failure */
	if (wq->q == NULL) {
		wardctl_error("region %s: %s", wardctl_regions[region], err ? err : "no Redis");
		wardctl_queue_close(wq);
		return -1;
	}
	return 0;
}

void wardctl_queue_close(struct wardctl_queue *wq)
{
	queue_free(wq->q);
	if (wq->base != NULL)
		event_base_free(wq->base);
	memset(wq, 0, sizeof *wq);
}

/* The reply, a timeout or a transport error: unpack the reply, or keep why it failed. */
static void wardctl_call_done(void *arg, int status, const Ward__Envelope *env,
			      const uint8_t *payload, size_t len)
{
	struct wardctl_reply *r = arg;
	const struct wardctl_call *call = r->call;

	r->status = status;
	if (status < 0) {
		if (status == QUEUE_ETIMEDOUT)
			snprintf(r->error, sizeof r->error, "timed out (is %s running?)",
				 call->service);
		else
			snprintf(r->error, sizeof r->error, "Redis connection down");
	} else if (env->status != 0) {
		if (call->error_status)
			snprintf(r->error, sizeof r->error, "error %d: %s", env->status,
				 env->error != NULL ? env->error : "");
		else
			snprintf(r->error, sizeof r->error, "%s",
				 env->error != NULL ? env->error : "failed");
		r->status = env->status;
	} else if (len > call->reply_max ||
		   (r->msg = protobuf_c_message_unpack(call->reply, NULL, len, payload)) == NULL) {
		snprintf(r->error, sizeof r->error, "malformed reply");
		r->status = -1;
	}
	event_base_loopbreak(r->base);
}

int wardctl_queue_call(struct wardctl_queue *wq, const struct wardctl_call *call,
		       ProtobufCMessage **reply_r)
{
	Ward__Principal principal = WARD__PRINCIPAL__INIT;
	struct queue_msg msg = { 0 };
	struct wardctl_reply r = { 0 };
	size_t len = protobuf_c_message_get_packed_size(call->request);
	uint8_t *payload;
	char request_id[33];
	const char *err = NULL;

	if (crypto_random_id(request_id) < 0) {
		wardctl_error("%s: no random bytes", call->method);
		return -1;
	}
	if ((payload = malloc(len ? len : 1)) == NULL) {
		wardctl_error("%s: out of memory", call->method);
		return -1;
	}
	principal.kind = "operator";
	principal.id = (char *)wardctl_operator();
	msg.dest = call->dest;
	msg.method = call->method;
	msg.tenant = call->tenant;
	msg.principal = &principal;
	msg.request_id = request_id;
	msg.timeout_ms = call->timeout_ms;
	msg.payload = payload;
	msg.len = protobuf_c_message_pack(call->request, payload);
	r.base = wq->base;
	r.call = call;
	r.status = -1;
	if (queue_request(wq->q, &msg, wardctl_call_done, &r, &err) < 0) {
		wardctl_error("%s: %s", call->method, err ? err : "cannot send");
		free(payload);
		return -1;
	}
	event_base_dispatch(wq->base);
	free(payload);
	if (r.status != 0) {
		wardctl_error("%s: %s", call->method, r.error);
		if (r.msg != NULL)
			protobuf_c_message_free_unpacked(r.msg, NULL);
		return -1;
	}
	*reply_r = r.msg;
	return 0;
}

int wardctl_request(const struct wardctl_conf *conf, int region, const struct wardctl_call *call,
		    ProtobufCMessage **reply_r)
{
	struct wardctl_queue wq;
	int ret;

	if (wardctl_queue_open(conf, region, NULL, &wq) < 0)
		return -1;
	ret = wardctl_queue_call(&wq, call, reply_r);
	wardctl_queue_close(&wq);
	return ret;
}
