/*
 * audit — ward-audit's internal interfaces: the hash chain's canonical encoding
 * and checkpoint signatures (audit_chain.c), storing events (audit_store.c) and
 * reading them back (audit_query.c).
 */
#ifndef WARD_AUDIT_H
#define WARD_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "audit.pb-c.h"
#include "crypto.h"
#include "daemon.h"

#define AUDIT_HASH_LEN 32
#define AUDIT_TENANT_MAX 36 /* a uuid in text form; "" = the cell's own chain */

/* One stored event as the hash covers it. Strings are never NULL ("" instead);
 * detail is the sealed detail (NULL, 0 when none); prev NULL for seq 1.
 * version 2 (060_gdpr.sql) hashes digest (SHA-256 of the sealed detail, NULL when
 * none) instead of detail; 0 or 1 = the original encoding. */
struct audit_row {
	int version;
	const uint8_t *digest;
	const char *tenant;
	int64_t seq;
	const char *id; /* 32 lower-case hex */
	int64_t at_ms;
	const char *type, *action, *actor, *target, *ip, *request_id;
	const uint8_t *detail;
	size_t detail_len;
	const uint8_t *prev;
};

/* The canonical encoding of row: "ward-audit-event/1", then every field as a
 * 4-byte big-endian length and its bytes, integers as 8 bytes big endian, in a
 * fixed order. *out_r malloc'd, owned by the caller. 0 or -1. */
int audit_chain_encode(const struct audit_row *row, uint8_t **out_r, size_t *len_r);
/* The digest a version 2 event stores and hashes: SHA-256 of the sealed detail. */
int audit_chain_detail_digest(const uint8_t *detail, size_t len, uint8_t out[AUDIT_HASH_LEN]);
/* SHA-256 of the canonical encoding. */
int audit_chain_hash(const struct audit_row *row, uint8_t out[AUDIT_HASH_LEN]);
/* The checkpoint signature: HMAC-SHA256(key, "ward-audit-checkpoint/1" | tenant |
 * seq | hash | at_ms), same length-prefixed framing. */
int audit_chain_sign(const uint8_t key[CRYPTO_KEY_LEN], const char *tenant, int64_t seq,
		     const uint8_t hash[AUDIT_HASH_LEN], int64_t at_ms, uint8_t sig[32]);
/* 1 if sig is the signature of that checkpoint under key (constant time), else 0. */
int audit_chain_check(const uint8_t key[CRYPTO_KEY_LEN], const char *tenant, int64_t seq,
		      const uint8_t hash[AUDIT_HASH_LEN], int64_t at_ms, const uint8_t sig[32]);
/* The public id of a key: hex of the first 8 bytes of SHA-256("ward audit key" | key). */
void audit_chain_key_id(const uint8_t key[CRYPTO_KEY_LEN], char out[17]);
/* 1 if s is "" or a canonical lower-case uuid. */
int audit_tenant_ok(const char *s);
/* "0123...ef" (32 hex) → "01234567-89ab-cdef-..." (37 bytes). */
void audit_id_to_uuid(const char *hex, char out[37]);

/* ward-audit's settings and state (audit_main.c). */
struct audit_conf {
	char *signing_key_file;
	int checkpoint_every;
	int checkpoint_minutes;
	int lag_high_water_ms;
};
extern struct audit_conf audit_conf;

int audit_store_init(struct daemon *d, const char **error_r);
void audit_store_deinit(void);
/* Seal and open details with the tenant's DEK (cell chain: a key derived from the KEK). */
int audit_detail_seal(struct daemon *d, const char *tenant, const char *event_uuid,
		      const char *json, uint8_t **out_r, size_t *len_r, const char **error_r);
int audit_detail_open(struct daemon *d, const char *tenant, const char *event_uuid,
		      const uint8_t *in, size_t len, char **json_r, const char **error_r);
/* The checkpoint key (loaded at start) and its id. */
const uint8_t *audit_signing_key(void);
const char *audit_signing_key_id(void);

queue_result_t audit_record(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			    size_t len, struct queue_reply *reply, const char **error_r);
queue_result_t audit_record_batch(struct daemon *d, const Ward__Envelope *env,
				  const uint8_t *payload, size_t len, struct queue_reply *reply,
				  const char **error_r);
/* Timer work: checkpoints due by time, the backlog status key. */
void audit_store_tick(struct daemon *d);

queue_result_t audit_list(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			  size_t len, struct queue_reply *reply, const char **error_r);
queue_result_t audit_export(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			    size_t len, struct queue_reply *reply, const char **error_r);
queue_result_t audit_verify(struct daemon *d, const Ward__Envelope *env, const uint8_t *payload,
			    size_t len, struct queue_reply *reply, const char **error_r);
/* GDPR (audit_gdpr.c), for ward-auth only: a person's events, erasing their details. */
queue_result_t audit_gdpr_export(struct daemon *d, const Ward__Envelope *env,
				 const uint8_t *payload, size_t len, struct queue_reply *reply,
				 const char **error_r);
queue_result_t audit_gdpr_erase(struct daemon *d, const Ward__Envelope *env,
				const uint8_t *payload, size_t len, struct queue_reply *reply,
				const char **error_r);

queue_result_t audit_activity(struct daemon *d, const Ward__Envelope *env,
			      const uint8_t *payload, size_t len, struct queue_reply *reply,
			      const char **error_r);

/* A Problem reply (status + packed ward.Problem) for the gateway. */
queue_result_t audit_problem(struct queue_reply *reply, int status, const char *title,
			     const char *detail);

#endif
