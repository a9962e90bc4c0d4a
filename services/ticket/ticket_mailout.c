/*
 * ticket_mailout — an agent's public reply, mailed to the ticket's requester.
 *
 * ticket_mailout_reply runs inside message.create's transaction when an agent,
 * admin or API credential posts a public reply (never an internal note, never a
 * customer's message) on a ticket that has a requester. In that transaction it
 *   1. takes a Message-ID "<40 hex random>@<slug>.<region>.<domain>" (160 bits:
 *      unguessable, so a mail answering it threads back unconditionally, see
 *      ticket_mail.c) and records it in ticket.mail_ids, kind 'out', as the blind
 *      index the inbound side looks up;
 *   2. writes the whole mail.send request (proto/mail.proto) to
 *      ticket.mail_outbox, sealed under the tenant's DEK (deploy/sql/096).
 * Both commit with the reply or not at all. The daemon's outbox relay
 * (common/auditlog.c) then opens the row (ticket_mailout_payload), sends it to
 * q:mail-out (ward-mail-out) and deletes it.
 *
 * To: the requester's address when the ticket came by mail or names one
 * (requester_email_enc), else the requester's account (requester_id), whose
 * address ward-mail-out asks of ward-auth (ward-ticket never reads addresses of
 * accounts). From: the tenant's first configured local part at its mail domain,
 * the tenant's name as display name. Subject: "Re: [#REF] <subject>". Nothing of
 * it is logged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "auditlog.h"
#include "log.h"
#include "mail.pb-c.h"
#include "ticket.h"

#define MAILOUT_ID_BYTES 20

/* The mail of a public reply (see the file's comment). 0 (queued, or nothing to
 * mail), -1 with *error_r (the caller rolls back). */
int ticket_mailout_reply(struct daemon *d, const Ward__Envelope *env, const char *ticket_id,
			 const char *message_id, const char *body, const char **error_r)
{
	Ward__MailSendRequest req = WARD__MAIL_SEND_REQUEST__INIT;
	uint8_t dek[CRYPTO_KEY_LEN], rnd[MAILOUT_ID_BYTES], *subject = NULL, *email = NULL;
	uint8_t *pt = NULL, *sealed = NULL;
	size_t subject_len = 0, email_len = 0, pt_len, sealed_len = 0;
	char slug[48], ref[64], hex[2 * MAILOUT_ID_BYTES + 1], domain[160], bidx[65];
	char msgid[256], from[256], outbox_id[TICKET_UUID_LEN + 1];
	char *subj_line = NULL;
	const char *region = daemon_config(d)->region;
	PGresult *res = NULL;
	uint32_t version;
	int ret = -1;

	if (ticket_keys_current(d, env->tenant, dek, &version, slug, error_r) < 0)
		return -1;
	crypto_wipe(dek, sizeof dek);
	res = db_exec(daemon_db(d),
		      "SELECT t.number, t.subject_enc, coalesce(t.requester_id::text, ''), "
		      "t.requester_email_enc, n.name, n.mail_local_parts[1] "
		      "FROM ticket.tickets t JOIN tenant.tenants n ON n.id = t.tenant_id "
		      "WHERE t.id = $1",
		      1, (const char *const[]){ticket_id}, error_r);
	if (res == NULL)
		return -1;
	if (PQntuples(res) != 1) {
		*error_r = "the ticket vanished";
		goto out;
	}
	if (PQgetvalue(res, 0, 2)[0] == '\0' && PQgetisnull(res, 0, 3)) {
		ret = 0; /* no requester: nobody to mail */
		goto out;
	}
	if (ticket_ref_format(slug, atoll(PQgetvalue(res, 0, 0)), ref, sizeof ref) < 0 ||
	    snprintf(domain, sizeof domain, "%s.%s.%s", slug, region, ticket_cfg.domain) >=
		(int)sizeof domain) {
		*error_r = "ref or mail domain too long";
		goto out;
	}
	if (ticket_open(d, env->tenant, "ticket.tickets", "subject_enc", ticket_id,
			PQgetvalue(res, 0, 1), &subject, &subject_len, error_r) < 0)
		goto out;
	if (!PQgetisnull(res, 0, 3) &&
	    ticket_open(d, env->tenant, "ticket.tickets", "requester_email_enc", ticket_id,
			PQgetvalue(res, 0, 3), &email, &email_len, error_r) < 0)
		goto out;
	if (crypto_random(rnd, sizeof rnd) < 0 || ticket_uuid_random(outbox_id) < 0) {
		*error_r = "no random bytes";
		goto out;
	}
	crypto_hex(rnd, sizeof rnd, hex);
	snprintf(msgid, sizeof msgid, "<%s@%s>", hex, domain);
	snprintf(from, sizeof from, "%s@%s", PQgetvalue(res, 0, 5), domain);
	subj_line = malloc(subject_len + strlen(ref) + 16);
	if (subj_line == NULL) {
		*error_r = "out of memory";
		goto out;
	}
	sprintf(subj_line, "Re: [#%s] %s", ref, (const char *)subject);
	/* 1. the Message-ID, so that an answer to it threads back here */
	if (ticket_blind(d, env->tenant, "ticket.mail_id", msgid, strlen(msgid), bidx, error_r) <
		0 ||
	    db_defer(daemon_db(d),
		     "INSERT INTO ticket.mail_ids (tenant_id, message_id_bidx, kind, ticket_id, "
		     "message_id) VALUES ($1, $2, 'out', $3, $4)",
		     4, (const char *const[]){env->tenant, bidx, ticket_id, message_id}, NULL, NULL,
		     error_r) < 0)
		goto out;
	/* 2. the mail itself, sealed, for the relay */
	req.message_id = msgid;
	req.to_email = email != NULL ? (char *)email : (char *)"";
	req.to_user_id = email != NULL ? (char *)"" : PQgetvalue(res, 0, 2);
	req.from_email = from;
	req.from_name = PQgetvalue(res, 0, 4);
	req.subject = subj_line;
	req.body = (char *)body;
	req.ticket_ref = ref;
	pt_len = ward__mail_send_request__get_packed_size(&req);
	pt = malloc(pt_len ? pt_len : 1);
	if (pt == NULL) {
		*error_r = "out of memory";
		goto out;
	}
	ward__mail_send_request__pack(&req, pt);
	if (ticket_seal(d, env->tenant, "ticket.mail_outbox", "payload_enc", outbox_id, pt, pt_len,
			&sealed, &sealed_len, error_r) < 0)
		goto out;
	{
		const char *p[3] = {outbox_id, env->tenant, (const char *)sealed};
		int lens[3] = {0, 0, (int)sealed_len};
		int fmts[3] = {0, 0, 1};

		if (db_defer(daemon_db(d),
			     "INSERT INTO ticket.mail_outbox (id, tenant, payload_enc) "
			     "VALUES ($1, $2, $3)",
			     3, p, lens, fmts, error_r) < 0)
			goto out;
	}
	ret = 0;
out:
	if (subject != NULL) {
		crypto_wipe(subject, subject_len);
		free(subject);
	}
	if (email != NULL) {
		crypto_wipe(email, email_len);
		free(email);
	}
	if (subj_line != NULL) {
		crypto_wipe(subj_line, strlen(subj_line));
		free(subj_line);
	}
	if (pt != NULL) {
		crypto_wipe(pt, pt_len);
		free(pt);
	}
	free(sealed);
	crypto_wipe(rnd, sizeof rnd);
	crypto_wipe(msgid, sizeof msgid);
	PQclear(res);
	return ret;
}

/* The relay's callback: open one outbox row (columns seq, tenant, id,
 * payload_enc, older than a day) inside a transaction of its tenant. A row that
 * does not authenticate can never be sent: dropped (1); one that cannot be
 * opened for another reason (its tenant's key unreadable now) is kept (-1) and
 * tried again each tick, and dropped once a day old (its tenant closed and its
 * keys destroyed: crypto-shredded, nothing to mail). */
static int ticket_mailout_payload(struct daemon *d, const PGresult *res, int row, uint8_t **pt_r,
				  size_t *len_r, const char **error_r)
{
	const char *tenant = PQgetvalue(res, row, 1), *id = PQgetvalue(res, row, 2);
	const char *err = NULL;

	if (ticket_open(d, tenant, "ticket.mail_outbox", "payload_enc", id,
			PQgetvalue(res, row, 3), pt_r, len_r, &err) == 0)
		return 0;
	*error_r = err;
	return err == ticket_err_integrity || PQgetvalue(res, row, 4)[0] == 't' ? 1 : -1;
}

static const struct auditlog_outbox ticket_mailout_outbox = {
    .table = "mail_outbox",
    .columns = "id, payload_enc, created_at < now() - interval '1 day'",
    .stream = "q:mail-out",
    .method = "mail.send",
    .payload = ticket_mailout_payload,
};

int ticket_mailout_init(const char **error_r)
{
	return auditlog_outbox_add(&ticket_mailout_outbox, error_r);
}
