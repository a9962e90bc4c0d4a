/*
 * gateway_healthz — GET /healthz: is the cell able to serve?
 *
 * Pings auth and ticket through their queues (method "ping", a Ward__PingRequest)
 * in parallel and answers once both have replied, failed or timed out
 * (healthz.timeout_ms):
 *   200 {"status":"ok","region":"eu","services":{"auth":{"ok":true,
 *        "instance":"auth-1","rtt_ms":1.2},"ticket":{…}}}
 *   503 the same with "status":"degraded" and, per failing service, "error".
 *
 * Lifetime: one struct healthz per request, freed exactly once, by whichever
 * event completes it last (the queue calls each reply callback exactly once).
 * The evhttp request is answered from the last callback. If its connection is
 * freed first (client gone, or the server freed at shutdown: the connection's
 * close callback or gateway_healthz_orphan_all), req is cleared and the state
 * only waits for its callbacks to free it.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "daemon.h"
#include "gateway.h"
#include "log.h"
#include "queue.h"

#define HEALTHZ_N 2
#define HEALTHZ_MAX_REPLY 4096
#define HEALTHZ_ERROR_MAX 128
#define HEALTHZ_INSTANCE_MAX 128

struct healthz_probe {
	struct healthz *hz;
	const char *service; /* "auth" */
	const char *dest;    /* "q:auth" */
	bool ok;
	double rtt_ms;
	char instance[HEALTHZ_INSTANCE_MAX];
	char error[HEALTHZ_ERROR_MAX];
};

struct healthz {
	struct healthz *next, **prevp; /* in gw->pending; prevp NULL once orphaned */
	struct gateway *gw;	       /* NULL once orphaned */
	struct evhttp_request *req;    /* NULL once the connection is gone */
	struct evhttp_connection *evcon;
	struct gateway_reqinfo info;
	int pending; /* callbacks still owed, plus one while starting */
	struct healthz_probe probes[HEALTHZ_N];
};

/* Unlink hz from the gateway's in-flight list (if still in it). */
static void healthz_unlink(struct healthz *hz)
{
	if (hz->prevp == NULL)
		return;
	*hz->prevp = hz->next;
	if (hz->next != NULL)
		hz->next->prevp = hz->prevp;
	hz->next = NULL;
	hz->prevp = NULL;
}

/* The connection of hz->req is being freed. If evhttp detached the request first
 * (the client went away: its connection pointer is NULL) it waits for our reply,
 * which frees it; otherwise (the server is being freed) it goes with the connection. */
static void healthz_conn_closed(struct evhttp_connection *evcon, void *arg)
{
	struct healthz *hz = arg;

	if (hz->req != NULL && evhttp_request_get_connection(hz->req) != NULL)
		hz->req = NULL;
	hz->evcon = NULL;
}

/* Stop listening for hz's connection closing (before answering or freeing hz). */
static void healthz_detach(struct healthz *hz)
{
	if (hz->evcon != NULL)
		evhttp_connection_set_closecb(hz->evcon, NULL, NULL);
	hz->evcon = NULL;
}

/* Render the answer: *status_r is 200 if every probe succeeded, else 503. Caller frees. */
static char *healthz_render(const struct healthz *hz, const char *region, int *status_r)
{
	json_t *root = NULL, *services;
	bool all_ok = true;
	char *body = NULL;
	size_t i;

	for (i = 0; i < HEALTHZ_N; i++)
		all_ok = all_ok && hz->probes[i].ok;
	if ((root = json_object()) == NULL ||
	    json_object_set_new(root, "status", json_string(all_ok ? "ok" : "degraded")) != 0 ||
	    json_object_set_new(root, "region", json_string(region != NULL ? region : "")) != 0 ||
	    (services = json_object()) == NULL ||
	    json_object_set_new(root, "services", services) != 0)
		goto out;
	for (i = 0; i < HEALTHZ_N; i++) {
		const struct healthz_probe *p = &hz->probes[i];
		json_t *s = json_object();
		int ok = s != NULL;

		ok = ok && json_object_set_new(s, "ok", json_boolean(p->ok)) == 0;
		if (p->ok)
			ok =
			    ok && json_object_set_new(s, "instance", json_string(p->instance)) == 0;
		else
			ok = ok && json_object_set_new(s, "error", json_string(p->error)) == 0;
		ok = ok && json_object_set_new(s, "rtt_ms",
					       json_real(round(p->rtt_ms * 100.0) / 100.0)) == 0;
		if (json_object_set_new(services, p->service, s) != 0 || !ok)
			goto out;
	}
	body = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
	*status_r = all_ok ? 200 : 503;
out:
	json_decref(root);
	return body;
}

/* Answer the request (if it is still there) and free hz. */
static void healthz_finish(struct healthz *hz)
{
	char *body;
	int status = 503;

	healthz_unlink(hz);
	healthz_detach(hz);
	if (hz->req != NULL && hz->gw != NULL) {
		body = healthz_render(hz, daemon_config(hz->gw->d)->region, &status);
		if (body != NULL)
			gateway_http_reply(hz->req, &hz->info, status, "application/json", body,
					   strlen(body));
		else
			gateway_http_problem(hz->req, &hz->info, 503, "Service Unavailable",
					     "Cannot render the health report.");
		free(body);
	}
	free(hz);
}

/* One callback (or failed send) fewer owed; the last one finishes. */
static void healthz_release(struct healthz *hz)
{
	if (--hz->pending == 0)
		healthz_finish(hz);
}

/* Copy s into a fixed buffer as printable ASCII ('?' for anything else). */
static void healthz_copy(char *dst, size_t size, const char *s)
{
	size_t i;

	for (i = 0; s != NULL && s[i] != '\0' && i + 1 < size; i++)
		dst[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	dst[i] = '\0';
}

/* Queue reply callback for one probe: record success or the reason for failure. */
static void healthz_reply(void *arg, int status, const Ward__Envelope *env, const uint8_t *payload,
			  size_t len)
{
	struct healthz_probe *p = arg;
	struct healthz *hz = p->hz;
	Ward__PingReply *pr = NULL;

	p->rtt_ms = gateway_elapsed_ms(&hz->info.start);
	if (status == QUEUE_ETIMEDOUT) {
		healthz_copy(p->error, sizeof p->error, "timeout");
	} else if (status == QUEUE_EDOWN) {
		healthz_copy(p->error, sizeof p->error, "queue unavailable");
	} else if (status == QUEUE_ESHUTDOWN) {
		healthz_copy(p->error, sizeof p->error, "shutting down");
	} else if (status < 0 || env == NULL) {
		healthz_copy(p->error, sizeof p->error, "transport error");
	} else if (env->status != 0) {
		snprintf(p->error, sizeof p->error, "status %d", (int)env->status);
		if (env->error != NULL && env->error[0] != '\0') {
			size_t n = strlen(p->error);

			snprintf(p->error + n, sizeof p->error - n, ": ");
			n = strlen(p->error);
			healthz_copy(p->error + n, sizeof p->error - n, env->error);
		}
	} else if (payload == NULL || len > HEALTHZ_MAX_REPLY ||
		   (pr = ward__ping_reply__unpack(NULL, len, payload)) == NULL) {
		healthz_copy(p->error, sizeof p->error, "malformed reply");
	} else if (pr->service == NULL || strcmp(pr->service, p->service) != 0) {
		healthz_copy(p->error, sizeof p->error, "reply from another service");
	} else {
		healthz_copy(p->instance, sizeof p->instance, pr->instance);
		p->ok = true;
	}
	if (!p->ok && hz->gw != NULL) {
		log_set_request_id(hz->info.id);
		log_event(LOG_WARN, "healthz probe failed", LF_STR("probe", p->service),
			  LF_STR("error", p->error));
		log_set_request_id(NULL);
	}
	if (pr != NULL)
		ward__ping_reply__free_unpacked(pr, NULL);
	healthz_release(hz);
}

/*
 * Route handler for GET/HEAD /healthz: send both pings and return; the answer is
 * sent by the last reply callback. Takes nothing over from the caller.
 */
void gateway_healthz_start(struct gateway *gw, struct evhttp_request *req,
			   const struct gateway_reqinfo *info)
{
	static const char *const services[HEALTHZ_N][2] = {{"auth", "q:auth"},
							   {"ticket", "q:ticket"}};
	Ward__PingRequest ping = WARD__PING_REQUEST__INIT;
	uint8_t payload[256];
	struct healthz *hz;
	size_t i, len;

	if ((hz = calloc(1, sizeof *hz)) == NULL) {
		gateway_http_problem(req, info, 503, "Service Unavailable", "Out of memory.");
		return;
	}
	hz->gw = gw;
	hz->req = req;
	hz->info = *info;
	hz->evcon = evhttp_request_get_connection(req);
	if (hz->evcon != NULL)
		evhttp_connection_set_closecb(hz->evcon, healthz_conn_closed, hz);
	hz->next = gw->pending;
	if (hz->next != NULL)
		hz->next->prevp = &hz->next;
	hz->prevp = &gw->pending;
	gw->pending = hz;

	ping.text = hz->info.id;
	len = ward__ping_request__get_packed_size(&ping);
	if (len > sizeof payload) /* cannot happen: the id is at most 64 bytes */
		len = 0;
	else
		(void)ward__ping_request__pack(&ping, payload);

	/* Held by one extra count while sending, in case a callback runs synchronously. */
	hz->pending = HEALTHZ_N + 1;
	for (i = 0; i < HEALTHZ_N; i++) {
		struct healthz_probe *p = &hz->probes[i];
		struct queue_msg msg = {0};
		const char *err = "cannot send";

		p->hz = hz;
		p->service = services[i][0];
		p->dest = services[i][1];
		msg.dest = p->dest;
		msg.method = "ping";
		msg.request_id = hz->info.id;
		msg.timeout_ms = gw->cfg->healthz_timeout_ms;
		msg.payload = payload;
		msg.len = len;
		if (len == 0 ||
		    queue_request(daemon_queue(gw->d), &msg, healthz_reply, p, &err) < 0) {
			/* The queue calls the callback only for a request it accepted. */
			p->rtt_ms = gateway_elapsed_ms(&hz->info.start);
			healthz_copy(p->error, sizeof p->error, err != NULL ? err : "cannot send");
			log_set_request_id(hz->info.id);
			log_event(LOG_WARN, "healthz probe not sent", LF_STR("probe", p->service),
				  LF_STR("error", p->error));
			log_set_request_id(NULL);
			healthz_release(hz);
		}
	}
	healthz_release(hz);
}

/*
 * Shutdown: forget every in-flight request; each state is then freed by its last
 * queue callback (the queue is freed after the gateway, failing what is left with
 * QUEUE_ESHUTDOWN). With answer, each client first gets a 503 (the stop hook: the
 * loop still runs while the queue drains, so the answer goes out); without, the
 * requests are left to go down with their connections (deinit, servers freed next).
 */
void gateway_healthz_orphan_all(struct gateway *gw, bool answer)
{
	while (gw->pending != NULL) {
		struct healthz *hz = gw->pending;

		healthz_unlink(hz);
		healthz_detach(hz);
		if (answer && hz->req != NULL)
			gateway_http_problem(hz->req, &hz->info, 503, "Service Unavailable",
					     "The gateway is shutting down.");
		hz->req = NULL;
		hz->gw = NULL;
	}
}
