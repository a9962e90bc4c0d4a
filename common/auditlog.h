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

#endif
