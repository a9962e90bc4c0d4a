/*
 * wardctl_ping — a request/reply "ping" through a service's queue.
 *
 * Sends Ward__PingRequest{text} to q:<service> of one cell as the operator ("ops"
 * Redis user, its own route keys), waits for the Ward__PingReply on its reply
 * stream, and prints one JSON line per reply with the round-trip time. Any
 * timeout, transport error or error status ends the run with exit status 1.
 */
#include <event2/event.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto.h"
#include "queue.h"
#include "wardctl.h"

#define PING_TEXT_MAX 256
#define PING_COUNT_MAX 100000
#define PING_REPLY_MAX 4096

const char wardctl_ping_usage[] =
	"usage: wardctl ping --region R --service S [--count N] [--concurrency C] [--text T]\n"
	"                    [--timeout MS]\n"
	"\n"
	"Send a ping request through q:S of region R and print the reply:\n"
	"{\"service\", \"instance\", \"region\", \"text\", \"rtt_ms\"}. With --count N > 1, send\n"
	"N requests keeping C (default 1) in flight and print one summary: {\"count\", \"ok\",\n"
	"\"failed\", \"concurrency\", \"seconds\", \"rps\", \"p50_ms\", \"p99_ms\", \"max_ms\"}.\n"
	"Exits 1 on a timeout (default 5000 ms, --timeout-ms is a synonym) or any error.\n";

struct ping_run {
	struct wardctl_queue wq;
	const char *service;
	const char *region;
	char stream[48];
	const char *text;
	Ward__Principal principal;
	int timeout_ms;
	int count;     /* requests to send in all */
	int sent;      /* sent so far */
	int done;      /* answered (or failed) so far */
	int failed;
	double *rtt;   /* round-trip times of successful replies, ms */
	int n_rtt;
	struct timespec start;
};

/* One request in flight: its start time, for the round-trip time. */
struct ping_req {
	struct ping_run *run;
	struct timespec t0;
};

/* Milliseconds since t0 on the monotonic clock. */
static double ping_elapsed_ms(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

static int ping_send(struct ping_run *run);

/* A request is finished: send the next one, or stop when all are answered. */
static void ping_next(struct ping_run *run)
{
	run->done++;
	/* A single ping stops at its first failure; a benchmark run counts failures. */
	if (run->count == 1 && run->failed) {
		event_base_loopbreak(run->wq.base);
		return;
	}
	if (run->sent < run->count && ping_send(run) < 0) {
		run->failed += run->count - run->sent; /* this one and the rest: never sent */
		run->done += run->count - run->sent;
		run->sent = run->count;
	}
	if (run->done >= run->count)
		event_base_loopbreak(run->wq.base);
}

/* A reply (or a transport error): check it, print it for a single ping. */
static void ping_reply(void *arg, int status, const Ward__Envelope *env, const uint8_t *payload,
		       size_t len)
{
	struct ping_req *req = arg;
	struct ping_run *run = req->run;
	double rtt = ping_elapsed_ms(&req->t0);
	Ward__PingReply *reply = NULL;
	json_t *o = NULL;

	free(req);
	if (status < 0) {
		wardctl_error("ping %s in region %s: %s", run->stream, run->region,
			      status == QUEUE_ETIMEDOUT ? "timed out"
			      : status == QUEUE_EDOWN	? "Redis connection down"
							: "transport shut down");
		goto fail;
	}
	if (env == NULL || env->status != 0) {
		wardctl_error("ping %s in region %s: error %d: %s", run->stream, run->region,
			      env != NULL ? env->status : -1,
			      env != NULL && env->error != NULL ? env->error : "no reply");
		goto fail;
	}
	if (len > PING_REPLY_MAX ||
	    (reply = ward__ping_reply__unpack(NULL, len, payload)) == NULL) {
		wardctl_error("ping %s: malformed reply", run->stream);
		goto fail;
	}
	run->rtt[run->n_rtt++] = rtt;
	if (run->count == 1) {
		o = json_pack("{s:s, s:s, s:s, s:s, s:f}", "service",
			      reply->service ? reply->service : "", "instance",
			      reply->instance ? reply->instance : "", "region",
			      reply->region ? reply->region : "", "text",
			      reply->text ? reply->text : "", "rtt_ms", rtt);
		if (o == NULL || wardctl_print(o) < 0) {
			wardctl_error("cannot write the result");
			goto fail;
		}
		json_decref(o);
	}
	ward__ping_reply__free_unpacked(reply, NULL);
	ping_next(run);
	return;
fail:
	json_decref(o);
	if (reply != NULL)
		ward__ping_reply__free_unpacked(reply, NULL);
	run->failed++;
	ping_next(run);
}

/* Send one ping request. */
static int ping_send(struct ping_run *run)
{
	Ward__PingRequest preq = WARD__PING_REQUEST__INIT;
	struct queue_msg msg = { 0 };
	struct ping_req *req;
	uint8_t buf[PING_TEXT_MAX + 16];
	char request_id[33];
	const char *err = NULL;
	size_t len;

	preq.text = (char *)run->text;
	len = ward__ping_request__get_packed_size(&preq);
	if (len > sizeof buf || crypto_random_id(request_id) < 0)
		return -1;
	req = calloc(1, sizeof *req);
	if (req == NULL)
		return -1;
	req->run = run;
	ward__ping_request__pack(&preq, buf);
	msg.dest = run->stream;
	msg.method = "ping";
	msg.principal = &run->principal;
	msg.request_id = request_id;
	msg.timeout_ms = run->timeout_ms;
	msg.payload = buf;
	msg.len = len;
	run->sent++;
	clock_gettime(CLOCK_MONOTONIC, &req->t0);
	if (queue_request(run->wq.q, &msg, ping_reply, req, &err) < 0) {
		wardctl_error("ping %s: %s", run->stream, err != NULL ? err : "cannot send");
		free(req);
		run->sent--; /* not sent: no reply will finish it */
		return -1;
	}
	return 0;
}

static int ping_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The p-th percentile (0..100) of the sorted round-trip times. */
static double ping_percentile(const struct ping_run *run, double p)
{
	int i;

	if (run->n_rtt == 0)
		return 0;
	i = (int)(p / 100.0 * run->n_rtt + 0.5) - 1;
	if (i < 0)
		i = 0;
	if (i >= run->n_rtt)
		i = run->n_rtt - 1;
	return run->rtt[i];
}

/* Print the benchmark summary of a --count run. */
static int ping_summary(struct ping_run *run, int concurrency)
{
	double secs = ping_elapsed_ms(&run->start) / 1e3;
	json_t *o;
	int r;

	qsort(run->rtt, (size_t)run->n_rtt, sizeof run->rtt[0], ping_cmp);
	o = json_pack("{s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f}", "count", run->count, "ok",
		      run->n_rtt, "failed", run->failed, "concurrency", concurrency, "seconds",
		      secs, "rps", secs > 0 ? run->n_rtt / secs : 0.0, "p50_ms",
		      ping_percentile(run, 50), "p99_ms", ping_percentile(run, 99), "max_ms",
		      ping_percentile(run, 100));
	r = o != NULL ? wardctl_print(o) : -1;
	json_decref(o);
	return r;
}

int wardctl_ping(const struct wardctl_conf *conf, int argc, char **argv)
{
	static const struct option opts[] = { { "region", required_argument, NULL, 'r' },
					      { "service", required_argument, NULL, 's' },
					      { "count", required_argument, NULL, 'c' },
					      { "text", required_argument, NULL, 't' },
					      { "timeout", required_argument, NULL, 'T' },
					      { "timeout-ms", required_argument, NULL, 'T' },
					      { "concurrency", required_argument, NULL, 'C' },
					      { NULL, 0, NULL, 0 } };
	const char *region = NULL, *service = NULL, *text = "ping";
	struct ping_run run;
	long count = 1, timeout = 5000, concurrency = 1;
	int c, ri;

	memset(&run, 0, sizeof run);
	optind = 0;
	while ((c = getopt_long(argc, argv, "r:s:c:t:T:C:", opts, NULL)) != -1) {
		switch (c) {
		case 'r': region = optarg; break;
		case 's': service = optarg; break;
		case 't': text = optarg; break;
		case 'c':
			if (wardctl_number(optarg, 1, PING_COUNT_MAX, &count) < 0) {
				wardctl_error("--count: 1 to %d", PING_COUNT_MAX);
				return 2;
			}
			break;
		case 'C':
			if (wardctl_number(optarg, 1, 1000, &concurrency) < 0) {
				wardctl_error("--concurrency: 1 to 1000");
				return 2;
			}
			break;
		case 'T':
			if (wardctl_number(optarg, 1, 600000, &timeout) < 0) {
				wardctl_error("--timeout: 1 to 600000 ms");
				return 2;
			}
			break;
		default: fputs(wardctl_ping_usage, stderr); return 2;
		}
	}
	if (optind < argc || region == NULL || service == NULL) {
		wardctl_error("ping needs --region and --service");
		return 2;
	}
	if ((ri = wardctl_region_index(region)) < 0) {
		wardctl_error("invalid region '%s': expected us, eu or uk", region);
		return 1;
	}
	if (strlen(service) == 0 || strlen(service) > 32 ||
	    strspn(service, "abcdefghijklmnopqrstuvwxyz-") != strlen(service)) {
		wardctl_error("invalid service name '%s'", service);
		return 1;
	}
	if (strlen(text) > PING_TEXT_MAX) {
		wardctl_error("--text: at most %d bytes", PING_TEXT_MAX);
		return 1;
	}
	snprintf(run.stream, sizeof run.stream, "q:%s", service);
	if (wardctl_queue_open(conf, ri, run.stream, &run.wq) < 0)
		return 1;
	ward__principal__init(&run.principal);
	run.principal.kind = "operator";
	run.principal.id = (char *)wardctl_operator();
	run.service = service;
	run.region = region;
	run.text = text;
	run.timeout_ms = (int)timeout;
	run.count = (int)count;
	run.rtt = calloc((size_t)count, sizeof run.rtt[0]);
	if (run.rtt == NULL) {
		wardctl_error("out of memory");
		wardctl_queue_close(&run.wq);
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &run.start);
	for (long i = 0; i < concurrency && i < count; i++)
		if (ping_send(&run) < 0) {
			run.failed++;
			break;
		}
	/* A reply can come (a refusal, Redis down) before the loop runs: a loopbreak then
	 * is lost (libevent clears it when a loop starts), so dispatch only for what is
	 * still awaited. */
	if (run.sent > 0 && run.done < run.count)
		event_base_dispatch(run.wq.base);
	wardctl_queue_close(&run.wq);
	if (count > 1 && ping_summary(&run, (int)concurrency) < 0)
		run.failed++;
	free(run.rtt);
	return run.failed ? 1 : 0;
}
