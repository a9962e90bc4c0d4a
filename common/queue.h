/*
 * queue — Redis Streams transport on hiredis + libevent.
 *
 * One stream per destination (q:<service>), one consumer group per service,
 * named after it and created at bootstrap (services may not XGROUP CREATE).
 * A consumer reads with XREADGROUP (COUNT, BLOCK) on a connection of its own,
 * runs the handler, and XACKs only when the handler says the effect is durable.
 * Messages left pending by a dead consumer are reclaimed with XAUTOCLAIM after
 * claim_idle_ms; a message delivered max_deliveries times without success goes
 * to the dead-letter stream dl:<service> with its error, then is acked.
 * An acked entry is deleted from the stream (XACK and XDEL pipelined, only after
 * the effect), so XLEN q:<service> counts the entries not handled yet: the queue's
 * depth. A dead-lettered entry is acked and deleted once dl:<service> holds it.
 *
 * Request/reply: queue_request sends to q:<dest> with reply_to = this instance's
 * reply stream r:<service>:<instance>, read with XREAD on its own connection;
 * replies are matched by correlation id; at the deadline the callback gets
 * QUEUE_ETIMEDOUT and a late reply is dropped.
 *
 * When Redis goes away every connection is re-established with exponential
 * backoff (100 ms doubling to 5 s); requests in flight fail with QUEUE_EDOWN.
 *
 * Every entry is one field "e" holding a packed, sealed Envelope (envelope.h).
 */
#ifndef WARD_QUEUE_H
#define WARD_QUEUE_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"

typedef struct queue queue_t;

struct queue_opts {
	const char *host;
	int port;
	const char *user;     /* Redis ACL user = service name */
	const char *password; /* may be NULL for tests without ACLs */
	const char *service;  /* sender name and consumer group */
	const char *instance; /* consumer name, unique per process */
	const char *region;
	int max_deliveries;   /* dead-letter after this many (default 5) */
	int claim_idle_ms;    /* reclaim pending older than this (default 30000) */
	long maxlen;	      /* approximate MAXLEN on XADD (default 100000) */
	int read_count;	      /* XREADGROUP COUNT (default 64) */
	int block_ms;	      /* XREADGROUP BLOCK (default 2000) */
};

/* Transport errors given to reply callbacks (status < 0). */
#define QUEUE_ETIMEDOUT (-110)
#define QUEUE_EDOWN (-107)
#define QUEUE_ESHUTDOWN (-108)
#define QUEUE_EREFUSED (-111) /* Redis refused the request's XADD (ACL, OOM...) */

typedef enum {
	QUEUE_DONE = 0,	  /* effect durable (or none): ack */
	QUEUE_RETRY = 1,  /* transient failure: leave pending, redelivered later */
	QUEUE_REJECT = 2, /* permanent failure: dead-letter now with the error */
} queue_result_t;

/* What a handler answers. data is malloc'd by the handler (packed reply message) and
 * freed by the queue. status 0 = ok, else an HTTP-like code with error text. */
struct queue_reply {
	int status;
	const char *error;
	uint8_t *data;
	size_t len;
	/* Set by a handler returning QUEUE_DONE that answers later, from the event
	 * loop, with queue_reply_later (long jobs off the loop, e.g. ward-backup). */
	int deferred;
};

/* A consumer handler. env has been unpacked, checked (stream, deadline) and opened:
 * payload/len is the plaintext. A reply is sent if env->reply_to is set and the
 * result is QUEUE_DONE or QUEUE_REJECT. error_r: reason for RETRY/REJECT. */
typedef queue_result_t (*queue_handler_fn)(void *ctx, const Ward__Envelope *env,
					   const uint8_t *payload, size_t len,
					   struct queue_reply *reply, const char **error_r);

/* A reply callback: status < 0 is a transport error (no env); else the reply
 * envelope and its opened payload. Called exactly once per request. */
typedef void (*queue_reply_fn)(void *arg, int status, const Ward__Envelope *reply,
			       const uint8_t *payload, size_t len);

struct queue_msg {
	const char *dest;	     /* stream, e.g. "q:auth" */
	const char *method;
	const char *tenant;	     /* may be NULL */
	const Ward__Principal *principal; /* may be NULL */
	const char *idempotency_key; /* may be NULL */
	const char *request_id;	     /* may be NULL */
	int timeout_ms;		     /* deadline = now + timeout; requests default to 5000,
				      * one-way sends to no deadline (0: never dropped) */
	const uint8_t *payload;	     /* plaintext method message */
	size_t len;
};

/* Create a transport on base; keys are taken over (freed by queue_free, or here if
 * queue_new fails). Connects asynchronously; sends made before the connection is up
 * are queued by hiredis. opts->user defaults to the service name; without a
 * password no AUTH is sent (tests against a server without ACLs). */
queue_t *queue_new(struct event_base *base, const struct queue_opts *opts, envelope_keys_t *keys,
		   const char **error_r);
/* Close connections, fail outstanding requests with QUEUE_ESHUTDOWN, DEL this
 * instance's reply stream (best effort), free. NULL-safe. Call it from outside any
 * queue callback (handler, reply or drain callback), before event_base_free. */
void queue_free(queue_t *q);

/* Start consuming stream with handler (once per queue_t). */
int queue_consume(queue_t *q, const char *stream, queue_handler_fn handler, void *ctx,
		  const char **error_r);
/* One-way send (no reply). 0 when handed to Redis's connection, -1 if it cannot be.
 * A refusal by Redis afterwards is logged only. */
int queue_send(queue_t *q, const struct queue_msg *msg, const char **error_r);
/* Request/reply: cb is called exactly once (reply, timeout or transport error), never
 * from inside queue_request. A reply is accepted only from the service named by
 * msg->dest ("q:auth" → sender "auth") and only if it opens with that route's key;
 * status is then the reply's (0 or an HTTP-like code, never negative). */
int queue_request(queue_t *q, const struct queue_msg *msg, queue_reply_fn cb, void *arg,
		  const char **error_r);

/* The late answer to req (a copy of the envelope a handler got and deferred):
 * sealed to its sender's reply stream as a handler's reply would be. */
void queue_reply_later(queue_t *q, const Ward__Envelope *req, int status, const char *error,
		       const uint8_t *data, size_t len);

/* Run a raw command (argv form) on the command connection, reply ignored. For
 * heartbeats and other fire-and-forget writes. */
int queue_command(queue_t *q, int argc, const char **argv, const size_t *argvlen);

/* Stop reading new messages; done(arg) runs (from the event loop) once the message
 * being handled is acked, every write has been answered by Redis and no request
 * waits for its reply (or the command connection is gone). A consumer's blocking
 * XREADGROUP in flight is waited for (at most block_ms) and its entries handled. */
void queue_drain(queue_t *q, void (*done)(void *arg), void *arg);

/* 1 while the command connection is up and authenticated. */
int queue_connected(const queue_t *q);
/* Counters for tests and heartbeats. */
struct queue_stats {
	unsigned long handled, acked, retried, dead_lettered, reclaimed, rejected_open;
	unsigned long deleted;	       /* acked entries XDEL removed from the stream */
	unsigned long sent, replies, timeouts;
	unsigned long reconnects;      /* connections (cmd, consume, reply) restored after a loss */
	unsigned long replies_dropped; /* late, unknown, misaddressed or refused replies */
};
void queue_get_stats(const queue_t *q, struct queue_stats *out);

#endif
