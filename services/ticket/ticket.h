/*
 * ticket — ward-ticket's modules: the shared request context and helpers
 * (ticket_main.c), the pure rules (ticket_logic.c: input checks, status
 * workflow, refs, cursors, content sniffing), the tenant keys (ticket_keys.c)
 * and the methods (ticket_tickets.c, ticket_messages.c).
 */
#ifndef WARD_TICKET_H
#define WARD_TICKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.pb-c.h"
#include "crypto.h"
#include "daemon.h"
#include "ticket.pb-c.h"

/* ============================== limits ================================== */

#define TICKET_SUBJECT_MAX_CHARS 255
#define TICKET_NAME_MAX_CHARS 200
#define TICKET_EMAIL_MAX 254
#define TICKET_FILENAME_MAX 255 /* bytes */
#define TICKET_DEPARTMENT_MAX_CHARS 100
#define TICKET_LIST_DEFAULT 25
#define TICKET_LIST_MAX 100
#define TICKET_UUID_LEN 36
#define TICKET_CURSOR_LEN 12 /* base64url of 9 bytes */
#define TICKET_IDEM_KEY_MAX 255

/* ward-ticket's own configuration keys (besides the common ones). */
struct ticket_config {
	int body_max_bytes;	   /* limits.body_max_bytes, default 256 KiB */
	int attachment_max_bytes;  /* limits.attachment_max_bytes, default 512 KiB */
	int key_cache_seconds;	   /* keys.cache_seconds: unwrapped DEKs are kept this long */
	int sleep_after_commit_ms; /* testing.sleep_after_commit_ms: tests only, see main */
	char *domain;		   /* domain: tenants' mail is <local>@<slug>.<region>.<domain> */
};
extern struct ticket_config ticket_cfg;

/* ============================ ticket_logic ============================== */

enum ticket_status { TS_OPEN, TS_PENDING, TS_RESOLVED, TS_CLOSED, TS_INVALID = -1 };

/* Strict UTF-8 (no overlong forms, surrogates or code points above U+10FFFF).
 * *chars_r (may be NULL) receives the number of code points. 1 if valid. */
int ticket_utf8_valid(const char *s, size_t len, size_t *chars_r);
/* Text a person wrote: valid UTF-8, no NUL and no control character but tab, CR,
 * LF (and none at all if single_line). 1 if acceptable. */
int ticket_text_ok(const char *s, size_t len, bool single_line, size_t *chars_r);

enum ticket_status ticket_status_parse(const char *s);
const char *ticket_status_name(enum ticket_status st);
/* May an agent move a ticket from one status to another? Same status: yes. */
bool ticket_status_transition_ok(enum ticket_status from, enum ticket_status to);
/* The status after a public reply: a customer's reply reopens pending and resolved
 * tickets; anything else leaves it. A closed ticket takes no reply (-1). */
int ticket_status_after_reply(enum ticket_status from, bool by_customer, enum ticket_status *to_r);

bool ticket_priority_valid(const char *s);
/* Canonical lower-case UUID? (8-4-4-4-12 hex) */
bool ticket_uuid_valid(const char *s);
/* Lower-case a plausible email address into out (TICKET_EMAIL_MAX + 1). 1 if ok. */
int ticket_email_normalize(const char *in, char *out, size_t out_len);
/* RFC 3339 date-time ("2024-05-01T12:00:00Z", optional fraction, Z or ±hh:mm). */
bool ticket_time_valid(const char *s);

/* "<SLUG>-<number>": the slug upper-cased. 0, or -1 if it does not fit. */
int ticket_ref_format(const char *slug, long long number, char *out, size_t out_len);
/* Split a ref back (for mail subjects "[#ACME-1042]"): slug lower-cased. 0 or -1. */
int ticket_ref_parse(const char *ref, char *slug, size_t slug_len, long long *number_r);

/* Opaque list cursors: a kind byte ('t' tickets, 'm' messages) and a position,
 * base64url. Decoding checks the kind: a cursor of another list is refused. */
int ticket_cursor_encode(char kind, long long position, char out[TICKET_CURSOR_LEN + 1]);
int ticket_cursor_decode(const char *cursor, char kind, long long *position_r);

/* The content type of an attachment, from its bytes only (never the client's
 * claim). Never a type a browser would run (no HTML, SVG, XML, JavaScript):
 * such text is text/plain. */
const char *ticket_sniff(const uint8_t *data, size_t len);
/* A safe display name: the last path component, no control characters, valid
 * UTF-8, at most TICKET_FILENAME_MAX bytes; "attachment" if nothing remains.
 * out: TICKET_FILENAME_MAX + 1 bytes. */
void ticket_filename_clean(const char *in, char *out);

/* ============================ ticket_keys =============================== */

/* The tenant's current DEK (for sealing), its version and slug. Reads tenant.keys
 * inside the caller's tenant transaction on a cache miss; cached for
 * keys.cache_seconds, then wiped. 0 or -1. */
int ticket_keys_current(struct daemon *d, const char *tenant, uint8_t dek[CRYPTO_KEY_LEN],
			uint32_t *version_r, char slug[48], const char **error_r);
/* The DEK of a given version (for opening). */
int ticket_keys_version(struct daemon *d, const char *tenant, uint32_t version,
			uint8_t dek[CRYPTO_KEY_LEN], const char **error_r);
/* Wipe the cache (deinit, and tests). */
void ticket_keys_flush(void);
/* ticket.rekey (wardctl key rotate-dek, operator): re-seal a batch of the tenant's
 * ticket data under its newest DEK; replies ward.RekeyReply. */
queue_result_t ticket_rekey(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			    size_t len, struct queue_reply *reply, const char **error_r);

/* Seal value under the tenant's current DEK with aad "<tenant>|<table>|<column>|<row>". */
int ticket_seal(struct daemon *d, const char *tenant, const char *table, const char *column,
		const char *row, const void *pt, size_t pt_len, uint8_t **out_r, size_t *out_len_r,
		const char **error_r);
/* Open a sealed column value (as PostgreSQL returned it in text form, "\x..."). *out_r
 * malloc'd and NUL-terminated; the caller wipes and frees it. */
int ticket_open(struct daemon *d, const char *tenant, const char *table, const char *column,
		const char *row, const char *pg_bytea, uint8_t **out_r, size_t *out_len_r,
		const char **error_r);
/* The blind index of a value (same purposes as ward-auth: "auth.users.email"). */
int ticket_blind(struct daemon *d, const char *tenant, const char *purpose, const void *value,
		 size_t len, char out_hex[65], const char **error_r);

/* ============================ ticket_main =============================== */

/* Who is asking, as far as ticket rules go. */
struct ticket_who {
	const char *id;	  /* principal id */
	const char *role; /* admin, agent, customer, api, service */
	bool customer;	  /* sees only own tickets, never internal notes */
	char actor[128];  /* "user:<id>" etc. for created_by and audit */
};
void ticket_who_of(const Ward__Envelope *env, struct ticket_who *who);

/* Per-field errors of a 422 answer. */
#define TICKET_MAX_FIELD_ERRORS 8
struct ticket_errors {
	Ward__FieldError items[TICKET_MAX_FIELD_ERRORS];
	Ward__FieldError *ptrs[TICKET_MAX_FIELD_ERRORS];
	size_t n;
};
void ticket_errors_add(struct ticket_errors *e, const char *field, const char *message);

/* Answer with a ward.Problem (status: 400, 404, 409, 422…). Always QUEUE_DONE. */
queue_result_t ticket_problem(struct queue_reply *reply, int status, const char *title,
			      const char *detail, const struct ticket_errors *e);
/* Answer with a packed message. QUEUE_DONE, or QUEUE_RETRY if out of memory. */
queue_result_t ticket_reply(struct queue_reply *reply, const ProtobufCMessage *msg,
			    const char **error_r);
/* A database or key failure inside a transaction: roll back, retry later. */
queue_result_t ticket_retry(struct daemon *d, const char *what, const char *error,
			    const char **error_r);
/* The error of ticket_open for a sealed value that does not authenticate (tampered
 * with, or moved to another row or column): compared by address. */
extern const char ticket_err_integrity[];
/* ticket_retry, except for ticket_err_integrity, which no retry can cure: roll back,
 * log it as an error and answer 500 at once (QUEUE_DONE). */
queue_result_t ticket_fail(struct daemon *d, struct queue_reply *reply, const char *what,
			   const char *error, const char **error_r);
/* After a commit: the test-only pause (testing.sleep_after_commit_ms). */
void ticket_after_commit(void);
/* Record an audit event in the open transaction (ticket.outbox). */
int ticket_audit(struct daemon *d, const Ward__Envelope *env, const struct ticket_who *who,
		 const char *action, const char *target, const char *detail_json,
		 const char **error_r);

/* Idempotency and redelivery (ticket.requests): inside the open transaction.
 * Returns 1 and fills result_id when this envelope or (principal, method, key)
 * was answered before (409 via *conflict_r if the key came with another body),
 * 0 when the request is new, -1 on error. */
int ticket_request_seen(struct daemon *d, const Ward__Envelope *env, const struct ticket_who *who,
			const uint8_t *payload, size_t len, char result_id[TICKET_UUID_LEN + 1],
			bool *conflict_r, char request_hash[65], const char **error_r);
/* Record the result of a new request (after ticket_request_seen returned 0). */
int ticket_request_record(struct daemon *d, const Ward__Envelope *env, const struct ticket_who *who,
			  const char *request_hash, const char *result_id, const char **error_r);

/* A random version 4 UUID. */
int ticket_uuid_random(char out[TICKET_UUID_LEN + 1]);

/* ========================== the methods ================================= */

queue_result_t ticket_create(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			     size_t len, struct queue_reply *reply, const char **error_r);
queue_result_t ticket_list(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			   size_t len, struct queue_reply *reply, const char **error_r);
queue_result_t ticket_get(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			  size_t len, struct queue_reply *reply, const char **error_r);
queue_result_t ticket_update(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			     size_t len, struct queue_reply *reply, const char **error_r);
queue_result_t ticket_message_create(struct daemon *d, const Ward__Envelope *env,
				     const uint8_t *payload, size_t len, struct queue_reply *reply,
				     const char **error_r);
queue_result_t ticket_message_list(struct daemon *d, const Ward__Envelope *env,
				   const uint8_t *payload, size_t len, struct queue_reply *reply,
				   const char **error_r);
queue_result_t ticket_attachment_create(struct daemon *d, const Ward__Envelope *env,
					const uint8_t *payload, size_t len,
					struct queue_reply *reply, const char **error_r);
queue_result_t ticket_attachment_list(struct daemon *d, const Ward__Envelope *env,
				      const uint8_t *payload, size_t len, struct queue_reply *reply,
				      const char **error_r);
queue_result_t ticket_attachment_get(struct daemon *d, const Ward__Envelope *env,
				     const uint8_t *payload, size_t len, struct queue_reply *reply,
				     const char **error_r);
queue_result_t ticket_department_create(struct daemon *d, const Ward__Envelope *env,
					const uint8_t *payload, size_t len,
					struct queue_reply *reply, const char **error_r);
queue_result_t ticket_department_list(struct daemon *d, const Ward__Envelope *env,
				      const uint8_t *payload, size_t len, struct queue_reply *reply,
				      const char **error_r);

/* ticket_mail.c: an inbound mail from ward-mail-ingest (proto/mail.proto). */
queue_result_t ticket_ingest_mail(struct daemon *d, const Ward__Envelope *env,
				  const uint8_t *payload, size_t len, struct queue_reply *reply,
				  const char **error_r);

/* ticket_mailout.c: inside message.create's transaction, the mail of a public reply
 * by staff to the ticket's requester (Message-ID kind 'out' + sealed outbox row);
 * 0 also when there is nobody to mail. ticket_mailout_init registers the outbox
 * with the relay (common/auditlog.h). */
int ticket_mailout_reply(struct daemon *d, const Ward__Envelope *env, const char *ticket_id,
			 const char *message_id, const char *body, const char **error_r);
int ticket_mailout_init(const char **error_r);

/* ticket_gdpr.c: a person's part of a GDPR export or erase, for ward-auth. */
queue_result_t ticket_gdpr_export(struct daemon *d, const Ward__Envelope *env,
				  const uint8_t *payload, size_t len, struct queue_reply *reply,
				  const char **error_r);
queue_result_t ticket_gdpr_erase(struct daemon *d, const Ward__Envelope *env,
				 const uint8_t *payload, size_t len, struct queue_reply *reply,
				 const char **error_r);

/* Shared by the ticket and message modules: is the ticket visible to who (inside
 * the open transaction)? Fills its status; FOR UPDATE locks it. 1 visible, 0 not
 * (answer 404), -1 error. */
int ticket_visible(struct daemon *d, const char *tenant, const struct ticket_who *who,
		   const char *ticket_id, bool for_update, enum ticket_status *status_r,
		   const char **error_r);

#endif
