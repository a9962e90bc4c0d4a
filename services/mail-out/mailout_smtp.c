/*
 * mailout_smtp — a bounded, blocking SMTP client: one mail, one relay, one
 * recipient per session (RFC 5321), run by ward-mail-out's handler.
 *
 * Blocking is the skeleton's natural shape here: a queue handler answers done,
 * retry or reject when it returns, and ward-mail-out has nothing else to do
 * meanwhile. Every step is bounded: the connect (timeouts.connect_s), each reply
 * (timeouts.command_s; the reply to the final dot timeouts.data_s), each write;
 * a reply is at most MAILOUT_REPLY_MAX bytes in lines of at most 512, and is
 * parsed strictly (three digits, the same on every line, "-" on all but the last).
 *
 * The relay is semi-trusted: its answers decide the verdict only.
 *   2xx to the final dot                          MAILOUT_SENT (ack)
 *   4xx anywhere, refused/lost connection,
 *   a timeout, a malformed reply, a relay
 *   without STARTTLS while it is required,
 *   a certificate that does not verify            MAILOUT_TEMPFAIL (retried)
 *   5xx to MAIL, RCPT or DATA (about this mail)   MAILOUT_PERMFAIL (dead letter)
 * A 5xx greeting, EHLO or STARTTLS is about the relay, not the mail: retried.
 * With starttls: required, nothing but EHLO and STARTTLS is said in clear; text
 * the relay sent ahead of its TLS handshake (plaintext injection) fails the
 * session. TLS 1.2 or 1.3, the certificate verified against tls.ca_file and the
 * relay's name (tls.name, default the host of relay:).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "mailout.h"

#define SMTP_LINE_MAX 512 /* RFC 5321 §4.5.3.1.5: a reply line */
#define SMTP_QUIT_TIMEOUT_MS 2000

struct smtp_io {
	int fd;
	SSL *ssl;
	char buf[MAILOUT_REPLY_MAX + SMTP_LINE_MAX]; /* bytes read, not yet consumed */
	size_t have;
	char reply[MAILOUT_REPLY_MAX + 1]; /* the last reply, all lines */
	size_t reply_len;
};

/* Monotonic milliseconds. */
static long long smtp_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for fd to be readable (want_write 0) or writable before deadline:
 * 0 ready, -1 timeout or error. */
static int smtp_wait(int fd, int want_write, long long deadline)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = want_write ? POLLOUT : POLLIN };
		long long left = deadline - smtp_now_ms();
		int r;

		if (left <= 0)
			return -1;
		r = poll(&p, 1, (int)(left > 60000 ? 60000 : left));
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

/* After a TLS call on io returned r (not 1): wait for what it wants before deadline.
 * 0 ready to call again, -1 timeout or poll error, -2 a TLS failure, 1 the peer
 * closed TLS cleanly. */
static int smtp_tls_wait(struct smtp_io *io, int r, long long deadline)
{
	switch (SSL_get_error(io->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return smtp_wait(io->fd, 0, deadline);
	case SSL_ERROR_WANT_WRITE:
		return smtp_wait(io->fd, 1, deadline);
	case SSL_ERROR_ZERO_RETURN:
		return 1;
	default:
		return -2;
	}
}

/* Write all of buf before deadline (through TLS once it is on). 0 or -1. */
static int smtp_write(struct smtp_io *io, const char *buf, size_t len, long long deadline)
{
	size_t off = 0;

	while (off < len) {
		if (io->ssl != NULL) {
			size_t n = 0;
			int r = SSL_write_ex(io->ssl, buf + off, len - off, &n);

			if (r == 1) {
				off += n;
				continue;
			}
			if (smtp_tls_wait(io, r, deadline) != 0)
				return -1;
		} else {
			ssize_t n = send(io->fd, buf + off, len - off, MSG_NOSIGNAL);

			if (n > 0) {
				off += (size_t)n;
				continue;
			}
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
				if (smtp_wait(io->fd, 1, deadline) < 0)
					return -1;
				continue;
			}
			return -1;
		}
	}
	return 0;
}

/* Read more bytes into io->buf before deadline: >0 bytes, 0 closed, -1 error. */
static int smtp_fill(struct smtp_io *io, long long deadline)
{
	size_t room = sizeof io->buf - io->have;

	if (room == 0)
		return -1;
	for (;;) {
		if (io->ssl != NULL) {
			size_t n = 0;
			int r = SSL_read_ex(io->ssl, io->buf + io->have, room, &n);

			if (r == 1) {
				io->have += n;
				return (int)n;
			}
			r = smtp_tls_wait(io, r, deadline);
			if (r != 0)
				return r == 1 ? 0 : -1;
		} else {
			ssize_t n = recv(io->fd, io->buf + io->have, room, 0);

			if (n > 0) {
				io->have += (size_t)n;
				return (int)n;
			}
			if (n == 0)
				return 0;
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
				if (smtp_wait(io->fd, 0, deadline) < 0)
					return -1;
				continue;
			}
			return -1;
		}
	}
}

int mailout_smtp_reply_parse(const char *buf, size_t len)
{
	size_t off = 0;
	int code = -1;

	if (len == 0 || len > MAILOUT_REPLY_MAX)
		return -1;
	while (off < len) {
		const char *line = buf + off, *eol = memchr(line, '\n', len - off);
		size_t n;
		int c;

		if (eol == NULL || eol == line || eol[-1] != '\r')
			return -1;
		n = (size_t)(eol - line) - 1; /* without CRLF */
		if (n < 3 || n > SMTP_LINE_MAX || line[0] < '2' || line[0] > '5' ||
		    line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9')
			return -1;
		for (size_t i = 3; i < n; i++)
			if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
				return -1;
		c = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		if (code != -1 && c != code)
			return -1;
		code = c;
		off = (size_t)(eol - buf) + 1;
		if (n == 3 || line[3] == ' ')
			return off == len ? code : -1; /* the last line ends the reply */
		if (line[3] != '-')
			return -1;
	}
	return -1; /* no last line */
}

/* Read one whole reply (every line up to the one without "-") before deadline.
 * Returns its code, or -1 (timeout, closed, too long, malformed). */
static int smtp_reply(struct smtp_io *io, long long deadline)
{
	for (;;) {
		size_t start = 0;

		/* the reply ends with its first line "ddd " or "ddd" (no "-") */
		for (size_t i = 0; i < io->have; i++) {
			if (io->buf[i] != '\n')
				continue;
			if (i - start > SMTP_LINE_MAX + 2)
				return -1;
			if (i - start >= 4 &&
			    (io->buf[start + 3] == ' ' || (i - start == 4 && io->buf[start + 3] == '\r'))) {
				size_t len = i + 1;
				int code;

				if (len > MAILOUT_REPLY_MAX)
					return -1;
				code = mailout_smtp_reply_parse(io->buf, len);
				memcpy(io->reply, io->buf, len);
				io->reply[len] = '\0';
				io->reply_len = len;
				memmove(io->buf, io->buf + len, io->have - len);
				io->have -= len;
				return code;
			}
			start = i + 1;
		}
		if (io->have >= MAILOUT_REPLY_MAX || io->have - start > SMTP_LINE_MAX + 2)
			return -1;
		if (smtp_fill(io, deadline) <= 0)
			return -1;
	}
}

/* The relay's last reply as one printable line, for logs and dead letters. */
static void smtp_why(const struct smtp_io *io, const char *what, char *why, size_t why_len)
{
	char text[200];
	size_t o = 0;
	const char *last = io->reply;

	/* the last line says the most */
	for (size_t i = 0; i + 1 < io->reply_len; i++)
		if (io->reply[i] == '\n')
			last = io->reply + i + 1;
	for (const char *p = last; *p != '\0' && *p != '\r' && o + 1 < sizeof text; p++)
		text[o++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
	text[o] = '\0';
	snprintf(why, why_len, "%s: %s", what, o > 0 ? text : "no valid reply");
}

/* Send one command line (CRLF added) and read its reply: the code or -1. */
static int smtp_cmd(struct smtp_io *io, const char *line, int timeout_s)
{
	char buf[SMTP_LINE_MAX + 3];
	long long deadline = smtp_now_ms() + (long long)timeout_s * 1000;
	int n = snprintf(buf, sizeof buf, "%s\r\n", line);

	if (n < 0 || (size_t)n >= sizeof buf)
		return -1;
	io->reply_len = 0;
	io->reply[0] = '\0';
	if (smtp_write(io, buf, (size_t)n, deadline) < 0)
		return -1;
	return smtp_reply(io, deadline);
}

/* Connect to host:port before the connect timeout: the socket (non-blocking)
 * or -1 with why. */
static int smtp_connect(const char *relay, int timeout_s, char host[256], char *why,
			size_t why_len)
{
	char port[8];
	const char *colon = strrchr(relay, ':');
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	long long deadline = smtp_now_ms() + (long long)timeout_s * 1000;
	int fd = -1;

	if (colon == NULL || colon == relay || (size_t)(colon - relay) >= 256 ||
	    strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof port) {
		snprintf(why, why_len, "relay: expected host:port");
		return -1;
	}
	memcpy(host, relay, (size_t)(colon - relay));
	host[colon - relay] = '\0';
	snprintf(port, sizeof port, "%s", colon + 1);
	if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL) {
		snprintf(why, why_len, "relay %s: cannot resolve", relay);
		return -1;
	}
	for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
		int err = 0;
		socklen_t elen = sizeof err;

		fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    a->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS && smtp_wait(fd, 1, deadline) == 0 &&
		    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		snprintf(why, why_len, "relay %s: cannot connect", relay);
	return fd;
}

SSL_CTX *mailout_smtp_tls_new(const char *ca_file, const char **error_r)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL) {
		*error_r = "cannot create a TLS context";
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		*error_r = "cannot require TLS 1.2";
		goto fail;
	}
	if (ca_file != NULL && ca_file[0] != '\0') {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			*error_r = "tls.ca_file: cannot load the CA certificates";
			goto fail;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		*error_r = "cannot load the system's CA certificates";
		goto fail;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* The TLS handshake over the session's socket, the relay's name verified. */
static int smtp_starttls(struct smtp_io *io, SSL_CTX *tls, const char *name, long long deadline,
			 char *why, size_t why_len)
{
	unsigned char ip[16];
	int is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;

	io->ssl = SSL_new(tls);
	/* a name: SNI and a DNS name check; an address: its IP SAN checked */
	if (io->ssl == NULL || SSL_set_fd(io->ssl, io->fd) != 1 ||
	    (!is_ip && (SSL_set_tlsext_host_name(io->ssl, name) != 1 ||
			SSL_set1_host(io->ssl, name) != 1)) ||
	    (is_ip && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(io->ssl), name) != 1)) {
		snprintf(why, why_len, "STARTTLS: cannot set up TLS");
		return -1;
	}
	for (;;) {
		int r = SSL_connect(io->ssl);

		if (r == 1)
			return 0;
		switch (smtp_tls_wait(io, r, deadline)) {
		case 0:
			continue;
		case -1:
			snprintf(why, why_len, "STARTTLS: handshake timed out");
			return -1;
		default: {
			long v = SSL_get_verify_result(io->ssl);

			snprintf(why, why_len, "STARTTLS: handshake failed (%s)",
				 v != X509_V_OK ? X509_verify_cert_error_string(v)
						: "protocol error");
			ERR_clear_error();
			return -1;
		}
		}
	}
}

/* 1 if an EHLO reply lists the extension kw (case-insensitive). */
static int smtp_has_ext(const struct smtp_io *io, const char *kw)
{
	size_t kl = strlen(kw);
	const char *p = io->reply;

	while ((p = strchr(p, '\n')) != NULL) {
		p++;
		if (strlen(p) >= 4 + kl && strncasecmp(p + 4, kw, kl) == 0 &&
		    (p[4 + kl] == '\r' || p[4 + kl] == ' '))
			return 1;
	}
	return 0;
}

/* The verdict of a reply to a command about this mail: 5xx permanent, anything
 * else unexpected temporary. */
static enum mailout_result smtp_fail(const struct smtp_io *io, int code, const char *what,
				     char *why, size_t why_len)
{
	smtp_why(io, what, why, why_len);
	return code >= 500 && code <= 599 ? MAILOUT_PERMFAIL : MAILOUT_TEMPFAIL;
}

enum mailout_result mailout_smtp_send(const struct mailout_config *cfg, SSL_CTX *tls,
				      const struct mailout_smtp_job *job, char *why,
				      size_t why_len)
{
	struct smtp_io *io = calloc(1, sizeof *io);
	char host[256], line[SMTP_LINE_MAX];
	enum mailout_result res = MAILOUT_TEMPFAIL;
	bool tls_required = strcmp(cfg->starttls, "required") == 0;
	long long deadline;
	int code;

	snprintf(why, why_len, "unknown failure");
	if (io == NULL) {
		snprintf(why, why_len, "out of memory");
		return MAILOUT_TEMPFAIL;
	}
	io->fd = smtp_connect(cfg->relay, cfg->connect_timeout_s, host, why, why_len);
	if (io->fd < 0)
		goto out;
	deadline = smtp_now_ms() + (long long)cfg->command_timeout_s * 1000;
	code = smtp_reply(io, deadline);
	if (code != 220) {
		smtp_why(io, "greeting", why, why_len);
		goto quit;
	}
	snprintf(line, sizeof line, "EHLO %s", cfg->helo);
	if ((code = smtp_cmd(io, line, cfg->command_timeout_s)) != 250) {
		smtp_why(io, "EHLO", why, why_len);
		goto quit;
	}
	if (tls_required) {
		if (!smtp_has_ext(io, "STARTTLS")) {
			snprintf(why, why_len,
				 "the relay offers no STARTTLS and starttls is required: not sent");
			goto quit;
		}
		if ((code = smtp_cmd(io, "STARTTLS", cfg->command_timeout_s)) != 220) {
			smtp_why(io, "STARTTLS", why, why_len);
			goto quit;
		}
		if (io->have != 0) {
			snprintf(why, why_len, "STARTTLS: the relay sent text ahead of TLS");
			goto out;
		}
		deadline = smtp_now_ms() + (long long)cfg->command_timeout_s * 1000;
		if (smtp_starttls(io, tls, cfg->tls_name != NULL && cfg->tls_name[0] != '\0'
						   ? cfg->tls_name
						   : host,
				  deadline, why, why_len) < 0)
			goto out;
		snprintf(line, sizeof line, "EHLO %s", cfg->helo);
		if ((code = smtp_cmd(io, line, cfg->command_timeout_s)) != 250) {
			smtp_why(io, "EHLO after STARTTLS", why, why_len);
			goto quit;
		}
	}
	snprintf(line, sizeof line, "MAIL FROM:<%s>", job->from);
	if ((code = smtp_cmd(io, line, cfg->command_timeout_s)) != 250) {
		res = smtp_fail(io, code, "MAIL FROM", why, why_len);
		goto quit;
	}
	snprintf(line, sizeof line, "RCPT TO:<%s>", job->to);
	if ((code = smtp_cmd(io, line, cfg->command_timeout_s)) != 250 && code != 251) {
		res = smtp_fail(io, code, "RCPT TO", why, why_len);
		goto quit;
	}
	if ((code = smtp_cmd(io, "DATA", cfg->command_timeout_s)) != 354) {
		res = smtp_fail(io, code, "DATA", why, why_len);
		goto quit;
	}
	deadline = smtp_now_ms() + (long long)cfg->data_timeout_s * 1000;
	io->reply_len = 0;
	io->reply[0] = '\0';
	if (smtp_write(io, job->data, job->data_len, deadline) < 0) {
		snprintf(why, why_len, "DATA: connection lost while sending");
		goto out;
	}
	code = smtp_reply(io, deadline);
	if (code < 200 || code > 299) {
		res = smtp_fail(io, code, "end of DATA", why, why_len);
		goto quit;
	}
	smtp_why(io, "sent", why, why_len);
	res = MAILOUT_SENT;
quit:
	/* best effort: the verdict is already known */
	(void)smtp_cmd(io, "QUIT", SMTP_QUIT_TIMEOUT_MS / 1000);
out:
	if (io->ssl != NULL) {
		(void)SSL_shutdown(io->ssl);
		SSL_free(io->ssl);
	}
	if (io->fd >= 0)
		close(io->fd);
	OPENSSL_cleanse(io, sizeof *io);
	free(io);
	ERR_clear_error();
	return res;
}
