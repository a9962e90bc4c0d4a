/*
 * auditlog — how a service records an audit event so that it is never lost once
 * the action it records has committed.
 *
 * Services with a database write the event into their own outbox table in the
 * same transaction as the action (auditlog_record); the daemon's relay then
 * sends outbox rows to q:audit and deletes them once Redis has accepted them
 * (auditlog_relay_*). ward-audit stores each event id once, so a row sent twice
 * (crash between send and delete) is harmless. Services without a database (the
 * gateway, mail-ingest) send directly (auditlog_send).
 */
#ifndef WARD_AUDITLOG_H
#define WARD_AUDITLOG_H

#include "audit.pb-c.h"
#include "db.h"
#include "queue.h"

struct daemon;

/* Inside the caller's open transaction: append ev to <schema>.outbox. A missing
 * ev->id or at_ms is filled in. schema is a constant ("auth", "ticket", ...). */
int auditlog_record(db_t *db, const char *schema, Ward__AuditEvent *ev, const char **error_r);
/* Send ev to q:audit now (services without a database). */
int auditlog_send(queue_t *q, Ward__AuditEvent *ev, const char **error_r);
/* Start the outbox relay of a daemon with a database (called by daemon.c):
 * flushes <schema>.outbox at start-up and every second, and after
 * auditlog_kick. */
int auditlog_relay_start(struct daemon *d, const char *schema, const char **error_r);
void auditlog_relay_kick(struct daemon *d);
void auditlog_relay_stop(struct daemon *d);

/* Another outbox of the same service, relayed by the same relay after the audit
 * one (e.g. ward-ticket's mail outbox → q:mail-out): each row of <schema>.<table>
 * becomes one envelope (method, the row's tenant, principal service <service>)
 * XADDed to stream, and the row is deleted once Redis has it. A crash between
 * the two sends the row again: the consumer must be idempotent. The table has
 * columns seq (identity) and tenant (uuid), then the service's own. */
struct auditlog_outbox {
	const char *table;   /* "mail_outbox" (in the relay's schema) */
	const char *columns; /* selected after seq, tenant: "id, payload_enc" */
	const char *stream;  /* "q:mail-out" */
	const char *method;  /* "mail.send" */
	/* The plaintext payload of row (result columns: seq, tenant, then columns),
	 * malloc'd into *pt_r; called inside a transaction of the row's tenant (rolled
	 * back after). 0 send it, 1 drop the row (it can never be sent: its tenant or
	 * key is gone), -1 keep it for the next tick. */
	int (*payload)(struct daemon *d, const PGresult *res, int row, uint8_t **pt_r,
		       size_t *len_r, const char **error_r);
};
/* Register ob before the relay starts (from the service's init); at most 4. */
int auditlog_outbox_add(const struct auditlog_outbox *ob, const char **error_r);

/* ---- Added by the audit service: confirmed sends, limits, validation. ---- */

/* Largest detail_json accepted (bytes) and events per audit.record_batch. */
#define AUDITLOG_DETAIL_MAX (64 * 1024)
#define AUDITLOG_BATCH_MAX 256
/* Outbox rows past this: the relay's key hb:<service>:audit-outbox says degraded. */
#define AUDITLOG_OUTBOX_HIGH_WATER 10000

struct redisContext;

/* 0 if ev is well formed (id 32 lower-case hex or empty, strings bounded, detail
 * valid UTF-8 of at most AUDITLOG_DETAIL_MAX); fills a missing id and at_ms. */
int auditlog_prepare(Ward__AuditEvent *ev, const char **error_r);
/* A blocking Redis connection (timeout_ms for connect and every command),
 * authenticated as user when password is not NULL. Free with redisFree. */
struct redisContext *auditlog_redis_open(const char *host, int port, const char *user,
					 const char *password, int timeout_ms,
					 const char **error_r);
/* Seal payload for sender -> q:audit as method and XADD it (no trimming: audit
 * entries must never be trimmed unread). Returns 0 only once Redis answered with
 * an entry id (with appendfsync always: on disk). On -1 the connection may be
 * broken: redisFree it. */
int auditlog_xadd(struct redisContext *rc, const envelope_keys_t *keys, const char *sender,
		  const char *region, const char *method, const char *tenant,
		  const Ward__Principal *principal, const uint8_t *payload, size_t len,
		  const char **error_r);
/* The same to another stream (an outbox of auditlog_outbox_add). */
int auditlog_xadd_to(struct redisContext *rc, const envelope_keys_t *keys, const char *stream,
		     const char *sender, const char *region, const char *method,
		     const char *tenant, const Ward__Principal *principal, const uint8_t *payload,
		     size_t len, const char **error_r);
/* Seal payload into env (its id, stream and the rest filled by the caller), pack it
 * and XADD it to env->stream over rc; env's payload is cleared again. 0 once Redis
 * answered with an entry id, or -1 and *error_r (rc may be broken: redisFree it). */
int auditlog_xadd_envelope(struct redisContext *rc, const envelope_keys_t *keys,
			   Ward__Envelope *env, const uint8_t *payload, size_t len,
			   const char **error_r);

#endif
