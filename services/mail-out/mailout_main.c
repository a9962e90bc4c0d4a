/*
 * ward-mail-out — the outbound mailer: mails an agent's public reply to the
 * ticket's requester through the cell's SMTP relay.
 *
 * Runs under the common skeleton (common/daemon.c). It consumes q:mail-out,
 * where only ward-ticket sends (its mail outbox, after the reply committed:
 * method mail.send, principal service "ticket"); it holds no database
 * credential and no region key (the skeleton refuses both), only its Redis user
 * (deploy/policy.yaml: consume q:mail-out, send q:audit and q:auth, its memo
 * keys). A requester known by account only is resolved by ward-auth
 * (auth.mail_address, which refuses disabled accounts).
 *
 * mail.send, one mail at a time (a bounded blocking SMTP client, see
 * mailout_smtp.c; the handler's verdict is the queue's):
 *   - a Message-ID already sent (memo key, mailout_redis.c): ack, nothing sent;
 *   - a malformed request (bad address, CR/LF in a header field): dead letter
 *     at once, with an audit event; nothing is sent;
 *   - relay 2xx: remember the Message-ID, ack;
 *   - 4xx, connection refused or lost, timeout, no STARTTLS while required, a
 *     certificate that does not verify: retry (left pending, reclaimed after
 *     queue.claim_idle_ms, up to queue.max_deliveries times, then dead letter);
 *   - 5xx to MAIL/RCPT/DATA: dead letter with the relay's answer, and an audit
 *     event (type mail, action send.failed).
 * Every sent mail is an audit event too (send, the ticket ref and Message-ID;
 * never the body or the address). No body, subject or address in any log.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auditlog.h"
#include "crypto.h"
#include "log.h"
#include "mail.pb-c.h"
#include "mailout.h"

struct mailout_config mailout_cfg;
static SSL_CTX *mailout_tls;

#define MO(field) offsetof(struct mailout_config, field)
static const struct conf_entry mailout_conf_entries[] = {
    {"relay", CONF_STR, MO(relay), true, NULL, 0, 0, NULL},
    {"starttls", CONF_STR, MO(starttls), false, "required", 0, 0, NULL},
    {"tls.ca_file", CONF_STR, MO(ca_file), false, NULL, 0, 0, NULL},
    {"tls.name", CONF_STR, MO(tls_name), false, NULL, 0, 0, NULL},
    {"helo", CONF_STR, MO(helo), false, "localhost", 0, 0, NULL},
    {"timeouts.connect_s", CONF_INT, MO(connect_timeout_s), false, "10", 1, 300, NULL},
    {"timeouts.command_s", CONF_INT, MO(command_timeout_s), false, "60", 1, 600, NULL},
    {"timeouts.data_s", CONF_INT, MO(data_timeout_s), false, "120", 1, 900, NULL},
    {"memo.sent_ttl_s", CONF_INT, MO(sent_ttl_s), false, "604800", 60, 31 * 86400, NULL},
    {"queue.auth_timeout_ms", CONF_INT, MO(auth_timeout_ms), false, "5000", 100, 60000, NULL},
};

/* An audit event of this service (sent at once: it has no outbox). */
static void mailout_audit(struct daemon *d, const char *tenant, const char *action,
			  const Ward__MailSendRequest *req, const char *why)
{
	Ward__AuditEvent ev = WARD__AUDIT_EVENT__INIT;
	char detail[600], ref[64], target[96], err[300];
	const char *e = NULL;
	size_t o = 0;

	(void)d;
	/* the ref and the reason are ours or the relay's: keep printable ASCII only */
	snprintf(ref, sizeof ref, "%s", req->ticket_ref);
	for (char *p = ref; *p != '\0'; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= '0' && *p <= '9') || *p == '-'))
			*p = '_';
	for (const char *p = why != NULL ? why : ""; *p != '\0' && o + 1 < sizeof err; p++)
		err[o++] = (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\') ? *p : '_';
	err[o] = '\0';
	snprintf(target, sizeof target, "ticket-ref:%s", ref);
	snprintf(detail, sizeof detail, "{\"ref\":\"%s\",\"reason\":\"%s\"}", ref, err);
	ev.tenant_id = (char *)tenant;
	ev.type = "mail";
	ev.action = (char *)action;
	ev.actor = "service:mail-out";
	ev.target = target;
	ev.detail_json = detail;
	if (auditlog_send(daemon_queue(d), &ev, &e) < 0)
		log_event(LOG_WARN, "cannot send an audit event", LF_STR("error", e));
}

/* mail.send: deliver one mail (see the file's comment for the verdicts). */
static queue_result_t mailout_send(struct daemon *d, const Ward__Envelope *env,
				   const uint8_t *payload, size_t len, struct queue_reply *reply,
				   const char **error_r)
{
	static char why[512];
	Ward__MailSendRequest *req;
	struct mailout_mail m = {0};
	struct mailout_smtp_job job = {0};
	char to[MAILOUT_ADDR_MAX + 1] = "";
	char *msg = NULL, *data = NULL;
	size_t msg_len = 0, data_len = 0;
	const char *err = NULL;
	queue_result_t qr = QUEUE_RETRY;
	enum mailout_result res;
	int r;

	(void)reply;
	if (strcmp(env->sender, "ticket") != 0) {
		*error_r = "mail.send is for ward-ticket";
		return QUEUE_REJECT;
	}
	req = ward__mail_send_request__unpack(NULL, len, payload);
	if (req == NULL) {
		*error_r = "malformed mail.send";
		return QUEUE_REJECT;
	}
	if (!mailout_msgid_ok(req->message_id)) {
		*error_r = "mail.send: bad message_id";
		qr = QUEUE_REJECT;
		goto out;
	}
	r = mailout_redis_sent(req->message_id);
	if (r < 0) {
		*error_r = "cannot tell whether it was sent (redis): retried";
		goto out;
	}
	if (r == 1) {
		log_event(LOG_INFO, "mail already sent, not again", LF_STR("ref", req->ticket_ref));
		qr = QUEUE_DONE;
		goto out;
	}
	if (req->to_email[0] != '\0') {
		snprintf(to, sizeof to, "%s", req->to_email);
	} else if (req->to_user_id[0] != '\0') {
		r = mailout_redis_address(d, env->tenant, req->to_user_id, to, &err);
		if (r < 0) {
			snprintf(why, sizeof why, "requester's address: %s", err);
			*error_r = why;
			goto out;
		}
		if (r == 0) {
			/* unknown or disabled account: nobody to mail, nothing to retry */
			log_event(LOG_INFO, "requester has no enabled account: not mailed",
				  LF_STR("ref", req->ticket_ref));
			mailout_audit(d, env->tenant, "send.skipped", req, "no enabled account");
			qr = QUEUE_DONE;
			goto out;
		}
	}
	m.message_id = req->message_id;
	m.from_email = req->from_email;
	m.from_name = req->from_name;
	m.to_email = to;
	m.subject = req->subject;
	m.body = req->body;
	m.in_reply_to = req->in_reply_to;
	m.date_ms = envelope_now_ms();
	if (mailout_msg_build(&m, &msg, &msg_len, &err) < 0 ||
	    mailout_msg_dotstuff(msg, msg_len, &data, &data_len, &err) < 0) {
		snprintf(why, sizeof why, "refused, nothing sent: %s", err);
		log_event(LOG_WARN, "mail refused", LF_STR("ref", req->ticket_ref),
			  LF_STR("error", err));
		mailout_audit(d, env->tenant, "send.refused", req, why);
		*error_r = why;
		qr = QUEUE_REJECT;
		goto out;
	}
	job.from = req->from_email;
	job.to = to;
	job.data = data;
	job.data_len = data_len;
	res = mailout_smtp_send(&mailout_cfg, mailout_tls, &job, why, sizeof why);
	switch (res) {
	case MAILOUT_SENT:
		if (mailout_redis_mark_sent(req->message_id) < 0)
			log_event(LOG_WARN, "sent, but cannot remember the Message-ID",
				  LF_STR("ref", req->ticket_ref));
		log_event(LOG_INFO, "mail sent", LF_STR("ref", req->ticket_ref),
			  LF_STR("relay", why));
		mailout_audit(d, env->tenant, "send", req, NULL);
		qr = QUEUE_DONE;
		break;
	case MAILOUT_PERMFAIL:
		log_event(LOG_WARN, "relay refused the mail for good", LF_STR("ref", req->ticket_ref),
			  LF_STR("error", why));
		mailout_audit(d, env->tenant, "send.failed", req, why);
		*error_r = why;
		qr = QUEUE_REJECT;
		break;
	case MAILOUT_TEMPFAIL:
	default:
		log_event(LOG_WARN, "mail not sent, retried later", LF_STR("ref", req->ticket_ref),
			  LF_STR("error", why));
		*error_r = why;
		qr = QUEUE_RETRY;
		break;
	}
out:
	if (msg != NULL) {
		crypto_wipe(msg, msg_len);
		free(msg);
	}
	if (data != NULL) {
		crypto_wipe(data, data_len);
		free(data);
	}
	crypto_wipe(to, sizeof to);
	ward__mail_send_request__free_unpacked(req, NULL);
	return qr;
}

static const struct daemon_method mailout_methods[] = {
    /* ward-ticket's mail outbox only (sender checked in the handler too) */
    {"mail.send", mailout_send, "service", 900 * 1024, NULL},
};

/* Check the config, build the TLS context, open the blocking Redis side. */
static int mailout_init(struct daemon *d, const char **error_r)
{
	if (strcmp(mailout_cfg.starttls, "required") != 0 &&
	    strcmp(mailout_cfg.starttls, "none") != 0) {
		*error_r = "starttls: expected required or none";
		return -1;
	}
	if (strchr(mailout_cfg.relay, ':') == NULL) {
		*error_r = "relay: expected host:port";
		return -1;
	}
	if (strlen(mailout_cfg.helo) > 253 ||
	    strspn(mailout_cfg.helo, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") !=
		strlen(mailout_cfg.helo)) {
		*error_r = "helo: expected a host name";
		return -1;
	}
	mailout_tls = mailout_smtp_tls_new(mailout_cfg.ca_file, error_r);
	if (mailout_tls == NULL)
		return -1;
	if (mailout_redis_open(d, error_r) < 0)
		return -1;
	log_event(LOG_INFO, "relaying mail", LF_STR("relay", mailout_cfg.relay),
		  LF_STR("starttls", mailout_cfg.starttls));
	return 0;
}

static void mailout_deinit(struct daemon *d)
{
	(void)d;
	mailout_redis_close();
	SSL_CTX_free(mailout_tls);
	mailout_tls = NULL;
}

static const struct daemon_service mailout_service = {
    .name = "mail-out",
    .conf = mailout_conf_entries,
    .n_conf = sizeof mailout_conf_entries / sizeof mailout_conf_entries[0],
    .conf_target = &mailout_cfg,
    .methods = mailout_methods,
    .n_methods = sizeof mailout_methods / sizeof mailout_methods[0],
    .consumes = true,
    .forbid_db = true,
    .needs_kek = false,
    .init = mailout_init,
    .deinit = mailout_deinit,
};

int main(int argc, char **argv)
{
	return daemon_main(argc, argv, &mailout_service);
}
