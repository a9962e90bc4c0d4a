/*
 * mailout_redis — ward-mail-out's blocking Redis connection (its own, beside
 * the queue's asynchronous ones), used from inside the mail.send handler:
 *
 *   - the Message-IDs it sent: "memo:mail-out:sent:<SHA-256 of the id>", set
 *     with a TTL (memo.sent_ttl_s, default 7 days) once the relay said 2xx, and
 *     read before each delivery. A redelivered entry (a crash after the relay's
 *     250 and before the XACK; ward-ticket's outbox relay sending a row twice)
 *     is then acked without a second mail. What stays possible: a crash between
 *     the relay's 250 and this SET (one duplicate, never a loss). Only the hash
 *     is kept: the key names no ticket and carries no thread capability.
 *   - auth.mail_address: the address of a requester known by account only,
 *     asked of ward-auth as a sealed request (route mail-out → q:auth) whose
 *     reply comes on r:mail-out:<instance>:s (route r:mail-out, auth's key),
 *     read with a bounded XREAD BLOCK, matched by correlation id, then deleted.
 *
 * Redis down: the calls fail and the handler retries later (nothing is sent
 * while it cannot tell whether the mail went out already).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "auditlog.h"
#include "crypto.h"
#include "log.h"
#include "mail.pb-c.h"
#include "mailout.h"

#define MO_REDIS_TIMEOUT_MS 2000

static redisContext *mo_rc;
static envelope_keys_t *mo_keys;
static char mo_reply_stream[160];

/* (Re)connect the blocking connection. 0 or -1. */
static int mo_connect(struct daemon *d, const char **error_r)
{
	const struct daemon_config *c = daemon_config(d);

	if (mo_rc != NULL)
		return 0;
	mo_rc = auditlog_redis_open(c->redis_host, c->redis_port, c->redis_user,
				    (const char *)c->redis_password.data,
				    mailout_cfg.auth_timeout_ms + MO_REDIS_TIMEOUT_MS, error_r);
	return mo_rc != NULL ? 0 : -1;
}

/* A reply that failed at the transport: drop the connection (reopened later). */
static void mo_drop(void)
{
	redisFree(mo_rc);
	mo_rc = NULL;
}

static struct daemon *mo_daemon;

int mailout_redis_open(struct daemon *d, const char **error_r)
{
	const struct daemon_config *c = daemon_config(d);

	mo_daemon = d;
	mo_keys = envelope_keys_parse(c->route_keys.data, c->route_keys.len, error_r);
	if (mo_keys == NULL)
		return -1;
	if (envelope_keys_sealing(mo_keys, c->service, "q:auth", NULL) == NULL) {
		*error_r = "no route key to q:auth (see deploy/policy.yaml)";
		return -1;
	}
	snprintf(mo_reply_stream, sizeof mo_reply_stream, "r:%s:%s:s", c->service, c->instance);
	if (mo_connect(d, error_r) < 0)
		log_event(LOG_WARN, "redis not reachable yet (retried per mail)",
			  LF_STR("error", *error_r));
	return 0;
}

void mailout_redis_close(void)
{
	if (mo_rc != NULL) {
		redisReply *r = redisCommand(mo_rc, "DEL %s", mo_reply_stream);

		freeReplyObject(r);
	}
	mo_drop();
	envelope_keys_free(mo_keys);
	mo_keys = NULL;
}

/* "memo:mail-out:sent:<sha256 hex>" of a Message-ID. */
static int mo_sent_key(const char *message_id, char out[96])
{
	uint8_t digest[32];
	char hex[65];

	if (crypto_sha256(message_id, strlen(message_id), digest) < 0)
		return -1;
	crypto_hex(digest, sizeof digest, hex);
	snprintf(out, 96, "memo:mail-out:sent:%s", hex);
	return 0;
}

int mailout_redis_sent(const char *message_id)
{
	const char *err = NULL;
	char key[96];
	redisReply *r;
	int ret;

	if (mo_sent_key(message_id, key) < 0 || mo_connect(mo_daemon, &err) < 0)
		return -1;
	r = redisCommand(mo_rc, "EXISTS %s", key);
	if (r == NULL) {
		mo_drop();
		return -1;
	}
	ret = r->type == REDIS_REPLY_INTEGER ? (r->integer > 0) : -1;
	if (r->type == REDIS_REPLY_ERROR)
		log_event(LOG_WARN, "redis refused EXISTS on the sent Message-IDs",
			  LF_STR("error", r->str));
	freeReplyObject(r);
	return ret;
}

int mailout_redis_mark_sent(const char *message_id)
{
	const char *err = NULL;
	char key[96], ttl[16];
	redisReply *r;
	int ret;

	if (mo_sent_key(message_id, key) < 0 || mo_connect(mo_daemon, &err) < 0)
		return -1;
	snprintf(ttl, sizeof ttl, "%d", mailout_cfg.sent_ttl_s);
	r = redisCommand(mo_rc, "SET %s 1 EX %s", key, ttl);
	if (r == NULL) {
		mo_drop();
		return -1;
	}
	ret = r->type == REDIS_REPLY_STATUS ? 0 : -1;
	freeReplyObject(r);
	return ret;
}

/* Seal and XADD the request to q:auth. 0 or -1. */
static int mo_auth_send(const char *tenant, const char *id, const uint8_t *pt, size_t pt_len,
			const char **error_r)
{
	const struct daemon_config *c = daemon_config(mo_daemon);
	Ward__Envelope env = WARD__ENVELOPE__INIT;
	Ward__Principal principal = WARD__PRINCIPAL__INIT;

	principal.kind = "service";
	principal.id = c->service;
	env.version = ENVELOPE_VERSION;
	env.id = (char *)id;
	env.tenant = (char *)tenant;
	env.region = c->region;
	env.sender = c->service;
	env.method = "auth.mail_address";
	env.principal = &principal;
	env.deadline_ms = envelope_now_ms() + mailout_cfg.auth_timeout_ms;
	env.reply_to = mo_reply_stream;
	env.stream = "q:auth";
	if (auditlog_xadd_envelope(mo_rc, mo_keys, &env, pt, pt_len, error_r) < 0) {
		mo_drop();
		return -1;
	}
	return 0;
}

/* One entry of the reply stream: 1 and out filled if it is our answer, 0 if not
 * (a late answer to an earlier request), -1 if ours says an error. */
static int mo_auth_entry(const redisReply *fields, const char *id, char *out,
			 const char **error_r)
{
	Ward__Envelope *env = NULL;
	Ward__MailAddressReply *rep = NULL;
	uint8_t *pt = NULL;
	size_t pt_len = 0;
	const char *err = NULL;
	int ret = 0;

	if (fields->type != REDIS_REPLY_ARRAY || fields->elements != 2 ||
	    fields->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(fields->element[0]->str, "e") != 0 ||
	    fields->element[1]->type != REDIS_REPLY_STRING)
		return 0;
	env = envelope_unpack((const uint8_t *)fields->element[1]->str, fields->element[1]->len,
			      &err);
	if (env == NULL || strcmp(env->correlation_id, id) != 0 || strcmp(env->sender, "auth") != 0 ||
	    strcmp(env->stream, mo_reply_stream) != 0)
		goto out;
	if (envelope_open(env, mo_keys, &pt, &pt_len, &err) < 0) {
		*error_r = "the reply of ward-auth does not open";
		ret = -1;
		goto out;
	}
	if (env->status != 0) {
		*error_r = "ward-auth refused auth.mail_address";
		ret = -1;
		goto out;
	}
	rep = ward__mail_address_reply__unpack(NULL, pt_len, pt);
	if (rep == NULL || (rep->email[0] != '\0' && !mailout_addr_ok(rep->email))) {
		*error_r = "ward-auth answered an unusable address";
		ret = -1;
		goto out;
	}
	snprintf(out, MAILOUT_ADDR_MAX + 1, "%s", rep->email);
	ret = 1;
out:
	if (rep != NULL)
		ward__mail_address_reply__free_unpacked(rep, NULL);
	if (pt != NULL) {
		crypto_wipe(pt, pt_len);
		free(pt);
	}
	if (env != NULL)
		ward__envelope__free_unpacked(env, NULL);
	return ret;
}

int mailout_redis_address(struct daemon *d, const char *tenant, const char *user_id,
			  char out[MAILOUT_ADDR_MAX + 1], const char **error_r)
{
	Ward__MailAddressRequest req = WARD__MAIL_ADDRESS_REQUEST__INIT;
	uint8_t pt[128];
	size_t pt_len;
	char id[33], last[64] = "0-0";
	int64_t deadline;
	int ret = -1;

	out[0] = '\0';
	mo_daemon = d;
	if (mo_connect(d, error_r) < 0)
		return -1;
	req.user_id = (char *)user_id;
	pt_len = ward__mail_address_request__get_packed_size(&req);
	if (pt_len > sizeof pt || crypto_random_id(id) < 0) {
		*error_r = "bad user id or no random bytes";
		return -1;
	}
	ward__mail_address_request__pack(&req, pt);
	if (mo_auth_send(tenant, id, pt, pt_len, error_r) < 0)
		return -1;
	deadline = envelope_now_ms() + mailout_cfg.auth_timeout_ms;
	while (ret < 0 && mo_rc != NULL) {
		int64_t left = deadline - envelope_now_ms();
		char block[24];
		redisReply *r;
		const redisReply *entries;

		if (left <= 0) {
			*error_r = "ward-auth did not answer auth.mail_address in time";
			break;
		}
		snprintf(block, sizeof block, "%lld", (long long)left);
		r = redisCommand(mo_rc, "XREAD COUNT 16 BLOCK %s STREAMS %s %s", block,
				 mo_reply_stream, last);
		if (r == NULL) {
			mo_drop();
			*error_r = "Redis connection lost";
			break;
		}
		if (r->type == REDIS_REPLY_ERROR) {
			*error_r = "Redis refused the XREAD of the reply stream";
			freeReplyObject(r);
			break;
		}
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
		    r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2 &&
		    (entries = r->element[0]->element[1])->type == REDIS_REPLY_ARRAY) {
			for (size_t i = 0; i < entries->elements && ret < 0; i++) {
				const redisReply *ent = entries->element[i];
				int k;

				if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2 ||
				    ent->element[0]->type != REDIS_REPLY_STRING ||
				    ent->element[0]->len >= sizeof last)
					continue;
				snprintf(last, sizeof last, "%s", ent->element[0]->str);
				k = mo_auth_entry(ent->element[1], id, out, error_r);
				if (k == 1)
					ret = out[0] != '\0' ? 1 : 0;
				else if (k < 0) {
					freeReplyObject(r);
					goto done;
				}
			}
		}
		freeReplyObject(r);
	}
done:
	/* the stream holds only this request's answers (and late ones): gone */
	if (mo_rc != NULL) {
		redisReply *r = redisCommand(mo_rc, "DEL %s", mo_reply_stream);

		if (r == NULL)
			mo_drop();
		freeReplyObject(r);
	}
	return ret;
}
