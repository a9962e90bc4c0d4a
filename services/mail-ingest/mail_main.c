/*
 * ward-mail-ingest — the SMTP door that turns mail into tickets.
 *
 * Runs under the common skeleton (common/daemon.c): config, log, refusal of root,
 * its own Redis credentials, heartbeat, clean SIGTERM. Like the gateway it faces
 * the internet, so it holds no database credential and no region key: the
 * skeleton refuses to start if its config names either. It reads no queue; it
 * sends to q:ticket (ticket.ingest_mail), q:auth (tenant.resolve) and reads only
 * its own reply stream. The SMTP side is mail_smtp.c, MIME mail_mime.c, the
 * durable spool and its delivery mail_spool.c.
 *
 * Lifecycle: init opens the spool (resuming what a previous run left), then
 * listens; stop (SIGTERM) closes the listener and tells every session 421 (one
 * waiting for its spool fsyncs first gets its answer); deinit frees the sessions,
 * lets the spool's writer threads finish what they were given, and closes the
 * spool (files not yet delivered stay for the next start).
 */
#include <stddef.h>
#include <stdlib.h>

#include "daemon.h"
#include "log.h"
#include "mail.h"

static struct mail_config mail_cfg;
static struct mail_ingest mail_state = {.spool_dirfd = -1};

#define MC(field) offsetof(struct mail_config, field)
static const struct conf_entry mail_conf_entries[] = {
    {"smtp.listen", CONF_STR, MC(listen), true, NULL, 0, 0, NULL},
    {"smtp.hostname", CONF_STR, MC(hostname), false, "localhost", 0, 0, NULL},
    {"domain", CONF_STR, MC(domain), false, "localhost", 0, 0, NULL},
    {"tls.cert_file", CONF_STR, MC(tls_cert_file), false, NULL, 0, 0, NULL},
    {"tls.key_file", CONF_SECRET_FILE, MC(tls_key), false, NULL, 0, 0, NULL},
    {"spool.dir", CONF_STR, MC(spool_dir), true, NULL, 0, 0, NULL},
    {"spool.max_attempts", CONF_INT, MC(max_attempts), false, "5", 1, 100, NULL},
    {"spool.max_transport_failures", CONF_INT, MC(max_transport_failures), false, "50", 1,
     10000, NULL},
    {"spool.max_inflight", CONF_INT, MC(max_inflight), false, "32", 1, 1024, NULL},
    {"spool.sync_threads", CONF_INT, MC(sync_threads), false, "4", 1, 64, NULL},
    /* text + attachments travel in one envelope (1 MiB): the size limit stays below */
    {"limits.message_bytes", CONF_INT, MC(max_message_bytes), false, "1000000", 1024, 1000000,
     NULL},
    {"limits.recipients", CONF_INT, MC(max_recipients), false, "20", 1, 100, NULL},
    {"limits.connections", CONF_INT, MC(max_connections), false, "200", 1, 10000, NULL},
    {"limits.connections_per_source", CONF_INT, MC(max_per_source), false, "20", 1, 10000,
     NULL},
    {"limits.command_timeout_s", CONF_INT, MC(command_timeout_s), false, "300", 1, 3600, NULL},
    {"limits.data_timeout_s", CONF_INT, MC(data_timeout_s), false, "600", 1, 3600, NULL},
    {"limits.headers", CONF_INT, MC(max_headers), false, "200", 10, 10000, NULL},
    {"limits.header_bytes", CONF_INT, MC(max_header_bytes), false, "65536", 1024, 1000000, NULL},
    {"limits.attachments", CONF_INT, MC(max_attachments), false, "10", 0, 100, NULL},
    {"limits.attachment_bytes", CONF_INT, MC(max_attachment_bytes), false, "524288", 1024,
     900000, NULL},
    {"limits.body_bytes", CONF_INT, MC(max_body_bytes), false, "262144", 1024, 900000, NULL},
    {"queue.resolve_timeout_ms", CONF_INT, MC(resolve_timeout_ms), false, "5000", 100, 60000,
     NULL},
    /* a found recipient is not asked again for this long (0: every RCPT asks);
     * refusals are never kept, so a new address works at once */
    {"smtp.recipient_cache_ms", CONF_INT, MC(recipient_cache_ms), false, "1000", 0, 60000,
     NULL},
    {"queue.deliver_timeout_ms", CONF_INT, MC(deliver_timeout_ms), false, "15000", 100, 300000,
     NULL},
};

/* Open the spool, then listen. */
static int mail_init(struct daemon *d, const char **error_r)
{
	struct mail_ingest *mi = &mail_state;

	mi->d = d;
	mi->cfg = &mail_cfg;
	mail_limits_default(&mi->lim);
	mi->lim.max_headers = (size_t)mail_cfg.max_headers;
	mi->lim.max_header_bytes = (size_t)mail_cfg.max_header_bytes;
	mi->lim.max_attachments = (size_t)mail_cfg.max_attachments;
	mi->lim.max_attachment_bytes = (size_t)mail_cfg.max_attachment_bytes;
	mi->lim.max_body_bytes = (size_t)mail_cfg.max_body_bytes;
	mail_mime_init();
	if (mail_spool_open(mi, error_r) < 0 || mail_smtp_start(mi, error_r) < 0)
		return -1;
	log_event(LOG_INFO, "listening for SMTP", LF_STR("listen", mail_cfg.listen),
		  LF_INT("starttls", mi->tls != NULL));
	return 0;
}

/* SIGTERM: no new sessions; pending spool writes finish and are answered, every
 * session gets 421; deliveries in flight finish while the queue drains. */
static void mail_stop(struct daemon *d)
{
	(void)d;
	mail_state.stopping = true;
	/* messages being fsynced get their answer (then 421), the others 421 */
	mail_spool_settle(&mail_state);
	mail_smtp_stop(&mail_state);
}

static void mail_deinit(struct daemon *d)
{
	struct mail_stats *s = &mail_state.stats;

	(void)d;
	/* sessions first (one waiting for its fsyncs is only marked), then the
	 * writers: what they were given is written, and those sessions freed */
	mail_smtp_close(&mail_state);
	mail_spool_close(&mail_state);
	log_event(LOG_INFO, "mail-ingest stopped", LF_INT("accepted", s->accepted),
		  LF_INT("ignored", s->ignored), LF_INT("refused", s->refused),
		  LF_INT("delivered", s->delivered), LF_INT("duplicates", s->duplicates),
		  LF_INT("dead_letters", s->dead_letters));
}

static const struct daemon_service mail_service = {
	.name = "mail-ingest",
	.conf = mail_conf_entries,
	.n_conf = sizeof mail_conf_entries / sizeof mail_conf_entries[0],
	.conf_target = &mail_cfg,
	.consumes = false,
	.forbid_db = true,
	.needs_kek = false,
	.init = mail_init,
	.deinit = mail_deinit,
	.stop = mail_stop,
};

int main(int argc, char **argv)
{
	return daemon_main(argc, argv, &mail_service);
}
