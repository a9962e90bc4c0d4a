/*
 * mail — ward-mail-ingest's modules: MIME extraction (mail_mime.c, pure: no
 * daemon, used by the unit tests and the fuzz target), the durable spool and its
 * delivery to ward-ticket (mail_spool.c), the SMTP listener (mail_smtp.c), and
 * the config and lifecycle (mail_main.c).
 */
#ifndef WARD_MAIL_H
#define WARD_MAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "mail.pb-c.h"

/* ============================== mail_mime =============================== */

struct mail_limits {
	size_t max_headers;	     /* header fields at the top level */
	size_t max_header_bytes;     /* the top-level header block */
	size_t max_attachments;
	size_t max_attachment_bytes; /* each, decoded */
	size_t max_body_bytes;	     /* the extracted text, UTF-8 */
	size_t max_total_bytes;	     /* text + attachments: must fit one envelope */
	size_t max_parts;	     /* MIME parts (multipart/message nesting included) */
};

/* The default limits (what the config defaults to). */
void mail_limits_default(struct mail_limits *lim);

enum mail_verdict {
	MAIL_ACCEPT = 0, /* req filled: spool it */
	MAIL_IGNORE = 1, /* accepted but never a ticket: auto-reply, bounce, report */
	MAIL_REFUSE = 2, /* over a limit: answer *code_r / *text_r, keep nothing */
};

/* Process-wide GMime initialisation (idempotent). */
void mail_mime_init(void);

/*
 * Parse one raw RFC 5322 message (as received after DATA, dot-unstuffed) into a
 * MailIngestRequest. envelope_from is the MAIL FROM path without brackets ("" for
 * the null sender). On MAIL_ACCEPT *req_r is malloc'd (free with
 * mail_request_free). On MAIL_IGNORE *reason_r names why (static string). On
 * MAIL_REFUSE *code_r is the SMTP reply ("552 5.3.4 ...", static). Never logs the
 * body. Returns the verdict.
 */
enum mail_verdict mail_parse(const char *data, size_t len, const char *envelope_from,
			     const struct mail_limits *lim, Ward__MailIngestRequest **req_r,
			     const char **reason_r, const char **code_r);
void mail_request_free(Ward__MailIngestRequest *req);

/* Helpers exposed for tests. */
/* HTML → plain text (tags dropped, script/style skipped, entities decoded, block
 * elements as line breaks). Returns a malloc'd NUL-terminated string. */
char *mail_html_to_text(const char *html, size_t len);
/* Mark quoted history: the text below a line "On … wrote:" (or "-----Original
 * Message-----", or a run of "> " lines at the end) is kept after a marker line.
 * Returns a malloc'd string. */
char *mail_mark_quoted(const char *text);
/* The ref of "[#ACME-1042]" in a subject into out (≥ 64 bytes); 1 found, 0 not. */
int mail_subject_ref(const char *subject, char *out, size_t out_len);
/* Is this a mail that must never create a ticket? NULL or the reason. Inputs are
 * header values (NULL when absent). */
const char *mail_loop_reason(const char *envelope_from, const char *from_addr,
			     const char *auto_submitted, const char *precedence,
			     const char *x_autoreply, const char *content_type);

#define MAIL_QUOTE_MARKER "----- quoted history -----"

#endif

/* ============================== the daemon ============================== */

#include <openssl/ssl.h>

struct daemon;
struct smtp_conn;
struct mail_job;
struct mail_syncer;
struct mail_seg;

/* ward-mail-ingest's own configuration keys. */
struct mail_config {
	char *listen;	 /* smtp.listen "host:port" */
	char *hostname;	 /* smtp.hostname, in the greeting and EHLO */
	char *domain;	 /* domain: recipients are <local>@<slug>.<region>.<domain> */
	char *tls_cert_file;	      /* tls.cert_file (PEM chain); none: no STARTTLS */
	struct conf_secret tls_key;   /* tls.key_file */
	char *spool_dir;	      /* spool.dir */
	int max_message_bytes;	      /* limits.message_bytes (SIZE) */
	int max_recipients;	      /* limits.recipients */
	int max_connections;	      /* limits.connections */
	int max_per_source;	      /* limits.connections_per_source */
	int command_timeout_s;	      /* limits.command_timeout_s */
	int data_timeout_s;	      /* limits.data_timeout_s */
	int max_headers, max_header_bytes, max_attachments, max_attachment_bytes, max_body_bytes;
	int max_attempts;	/* spool.max_attempts: refusals by ward-ticket before dead letter */
	int max_transport_failures; /* spool.max_transport_failures: timeouts before dead letter */
	int max_inflight;	    /* spool.max_inflight: deliveries at once */
	int sync_threads;	    /* spool.sync_threads: threads writing + fsyncing the spool */
	int resolve_timeout_ms;	    /* queue.resolve_timeout_ms */
	int recipient_cache_ms;	    /* smtp.recipient_cache_ms: how long a found address is kept */
	int deliver_timeout_ms;	    /* queue.deliver_timeout_ms */
};

struct mail_stats {
	unsigned long connections, refused_connections, accepted, ignored, refused, delivered,
	    duplicates, dead_letters, retries;
};

/* An address ward-auth found (mail_smtp.c): "<slug>|<local>" → tenant, until
 * until_ms (monotonic). Only found addresses are kept, never refusals. */
#define MAIL_RCPT_CACHE 64
struct mail_rcpt_cached {
	char key[64 + 1 + 65];
	char tenant[37];
	int64_t until_ms;
};

struct mail_ingest {
	struct daemon *d;
	const struct mail_config *cfg;
	struct mail_limits lim;
	SSL_CTX *tls;
	struct evconnlistener *listener;
	struct smtp_conn *conns; /* list of open connections */
	int n_conns;
	struct mail_job *jobs; /* spool entries waiting or in flight */
	int inflight;
	struct event *spool_timer;
	int spool_dirfd;
	struct mail_syncer *syncer; /* the spool's writer threads (mail_spool.c) */
	struct mail_seg *segs;	    /* the spool log's segments with records (loop side) */
	uint64_t log_newest;	    /* the newest segment a finished put was written to */
	struct mail_stats stats;
	struct mail_rcpt_cached rcpt_cache[MAIL_RCPT_CACHE];
	bool stopping;
};

/* mail_spool.c: durable spool; put = records appended to the spool log and one
 * fdatasync for every put written meanwhile (group commit), done off the event
 * loop by spool.sync_threads writer threads. */
struct mail_put;
#define MAIL_PUT_MAX_FILES 8
/* Called on the event loop once every file of the put is durable (rc 0; id is
 * the last spool id) or failed (rc -1, error; files already committed stay and
 * are delivered: ticket takes a Message-ID once per tenant). rc -2: the daemon is
 * closing and the outcome is unknown to the caller (the files that made it are
 * in queue/ for the next start). */
typedef void mail_put_cb(void *arg, int rc, const char *id, const char *error);
int mail_spool_open(struct mail_ingest *mi, const char **error_r);
/* A new put (several files, one per recipient tenant); NULL when out of memory. */
struct mail_put *mail_put_new(void);
/* Add the spool file of req for tenant to the put; 0 or -1 (*error_r). */
int mail_put_add(struct mail_ingest *mi, struct mail_put *put, const char *tenant,
		 const Ward__MailIngestRequest *req, const char **error_r);
/* Hand the put to the writer threads: cb(arg, ...) runs later on the event loop,
 * never from inside this call. Takes the put in every case; 0, or -1 when it
 * could not be queued (cb not called; nothing was written). */
int mail_put_submit(struct mail_ingest *mi, struct mail_put *put, mail_put_cb *cb, void *arg);
void mail_put_free(struct mail_put *put);
/* Wait (blocking the loop: SIGTERM only) until the writers wrote everything they
 * were given, and run those puts' callbacks now. */
void mail_spool_settle(struct mail_ingest *mi);
/* Stop the writer threads once what is queued is written, then close the spool. */
void mail_spool_close(struct mail_ingest *mi);
/* The spool file format, shared with wardctl: "WARDSPOOL1\n<tenant id>\n" + packed
 * MailIngestRequest. Parses a file's bytes; 0 or -1. */
int mail_spool_parse(const uint8_t *data, size_t len, char tenant[37], const uint8_t **payload_r,
		     size_t *payload_len_r);
#define MAIL_SPOOL_MAGIC "WARDSPOOL1\n"

/* mail_smtp.c: the listener. */
int mail_smtp_start(struct mail_ingest *mi, const char **error_r);
/* SIGTERM: stop listening; idle sessions get 421; a session waiting for its spool
 * fsyncs gets its answer, then 421. */
void mail_smtp_stop(struct mail_ingest *mi);
/* Free every session (deinit, after the spool's writers were stopped). */
void mail_smtp_close(struct mail_ingest *mi);
