/*
 * mailout — ward-mail-out's modules: the daemon and its one method, mail.send
 * (mailout_main.c), the message it writes (mailout_msg.c: RFC 5322 headers,
 * RFC 2047 subject, base64 body; no header can be injected), the SMTP client
 * (mailout_smtp.c: bounded, blocking, per-command timeouts, STARTTLS with the
 * relay's certificate verified) and its blocking Redis side (mailout_redis.c:
 * the Message-IDs already sent, the requester's address from ward-auth).
 */
#ifndef WARD_MAILOUT_H
#define WARD_MAILOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "daemon.h"
#include "envelope.h"

/* Lines of the message we write are at most 78 bytes (RFC 5322 §2.1.1 "should");
 * what we read from the relay is bounded too. */
#define MAILOUT_LINE_MAX 998
#define MAILOUT_REPLY_MAX 4096 /* one SMTP reply, all its lines */
#define MAILOUT_ADDR_MAX 254
#define MAILOUT_SUBJECT_MAX 1000 /* bytes of UTF-8 before encoding */
#define MAILOUT_MSGID_MAX 250
#define MAILOUT_BODY_MAX (512 * 1024)

struct mailout_config {
	char *relay;		 /* relay: host:port */
	char *starttls;		 /* required (default) | none */
	char *ca_file;		 /* tls.ca_file: to verify the relay's certificate */
	char *tls_name;		 /* tls.name: the name the certificate must carry (default: host) */
	char *helo;		 /* helo: our name in EHLO */
	int connect_timeout_s;	 /* timeouts.connect_s */
	int command_timeout_s;	 /* timeouts.command_s: each command's reply */
	int data_timeout_s;	 /* timeouts.data_s: the reply to the final "." */
	int sent_ttl_s;		 /* memo.sent_ttl_s: how long a sent Message-ID is remembered */
	int auth_timeout_ms;	 /* queue.auth_timeout_ms: auth.mail_address */
};
extern struct mailout_config mailout_cfg;

/* ============================ mailout_msg ================================ */

/* What one mail says (all UTF-8, checked by mailout_msg_build). */
struct mailout_mail {
	const char *message_id; /* "<...@...>" */
	const char *from_email;
	const char *from_name; /* may be "" */
	const char *to_email;
	const char *subject;
	const char *body;
	const char *in_reply_to; /* may be "" */
	int64_t date_ms;	 /* Date: header */
};

/* 1 if s is an address we write in a header and an SMTP command: local@domain,
 * printable ASCII without space, <, >, (, ), comma, semicolon, quote or backslash,
 * at most MAILOUT_ADDR_MAX bytes, exactly one @, a dotted domain. */
int mailout_addr_ok(const char *s);
/* 1 if s is a Message-ID we write: "<" id-left "@" id-right ">" of printable
 * ASCII without space, at most MAILOUT_MSGID_MAX bytes. */
int mailout_msgid_ok(const char *s);
/* The whole message (headers, blank line, body), lines ended by CRLF, not yet
 * dot-stuffed. A header value with CR, LF or another control character, an
 * address or Message-ID that is not plain, text that is not UTF-8: -1 and
 * *error_r, nothing built. *out_r is malloc'd (NUL-terminated). */
int mailout_msg_build(const struct mailout_mail *m, char **out_r, size_t *len_r,
		      const char **error_r);
/* Dot-stuff a CRLF message for DATA and end it with CRLF.CRLF; refuses a line
 * longer than MAILOUT_LINE_MAX or a bare CR or LF. *out_r malloc'd. */
int mailout_msg_dotstuff(const char *msg, size_t len, char **out_r, size_t *len_r,
			 const char **error_r);

/* ============================ mailout_smtp =============================== */

/* How a delivery ended: the queue's verdict follows from it. */
enum mailout_result {
	MAILOUT_SENT = 0,   /* 2xx to the final dot: ack */
	MAILOUT_TEMPFAIL,   /* 4xx, connection refused/lost, timeout, TLS missing: retry */
	MAILOUT_PERMFAIL,   /* 5xx: dead letter, audit event */
};

struct mailout_smtp_job {
	const char *from; /* envelope sender (MAIL FROM) */
	const char *to;	  /* one recipient */
	const char *data; /* dot-stuffed, ends with CRLF.CRLF */
	size_t data_len;
};

/* A client TLS context: TLS 1.2+, the relay's certificate verified against
 * ca_file (or the system's store when NULL). */
SSL_CTX *mailout_smtp_tls_new(const char *ca_file, const char **error_r);
/* Deliver one mail to the relay (host:port), blocking, each step under its
 * timeout. why (bytes) says what failed: the relay's reply, or our reason. */
enum mailout_result mailout_smtp_send(const struct mailout_config *cfg, SSL_CTX *tls,
				      const struct mailout_smtp_job *job, char *why,
				      size_t why_len);
/* Parse one SMTP reply (all its lines, CRLF each) strictly: 3 digits, "-" on
 * every line but the last, the same code on each. Returns the code (200..599),
 * or -1 if malformed. */
int mailout_smtp_reply_parse(const char *buf, size_t len);

/* ============================ mailout_redis ============================== */

/* Open / close the daemon's blocking Redis connection (its own, besides the
 * queue's): sent Message-IDs and the auth request. */
int mailout_redis_open(struct daemon *d, const char **error_r);
void mailout_redis_close(void);
/* 1 if the Message-ID was sent already (remembered), 0 if not, -1 if unknown. */
int mailout_redis_sent(const char *message_id);
/* Remember a sent Message-ID for memo.sent_ttl_s. 0 or -1. */
int mailout_redis_mark_sent(const char *message_id);
/* Ask ward-auth (auth.mail_address) for the address of an account of tenant:
 * 1 with out filled, 0 when the account is unknown or disabled, -1 on a transport
 * failure (retry later). */
int mailout_redis_address(struct daemon *d, const char *tenant, const char *user_id,
			  char out[MAILOUT_ADDR_MAX + 1], const char **error_r);

#endif
