/*
 * mailout_msg — the mail ward-mail-out writes: RFC 5322 headers (Date, From,
 * To, Subject, Message-ID, In-Reply-To/References, MIME-Version, Content-Type
 * text/plain; charset=utf-8, Content-Transfer-Encoding base64), then the body.
 *
 * Header injection is impossible by construction, not by escaping: a subject
 * or display name carrying CR, LF or any other control character is refused
 * (the whole mail, with an error), addresses and Message-IDs must be plain
 * ASCII tokens, and any non-ASCII text is written as RFC 2047 encoded words
 * (base64, split on character boundaries, folded with CRLF SP), so what we
 * write can never start a new header line. The body is base64 of its canonical
 * form (CRLF line ends): any content, any line length, and no line of the
 * message starts with "." or exceeds 78 bytes. DATA's dot-stuffing is done
 * anyway (mailout_msg_dotstuff), for whatever a header line might hold.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "mailout.h"

/* A growing output buffer; a failed append marks it failed. */
struct mo_buf {
	char *p;
	size_t len, cap;
	int failed;
};

static void mo_put(struct mo_buf *b, const char *s, size_t n)
{
	if (b->failed)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (p == NULL) {
			b->failed = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void mo_puts(struct mo_buf *b, const char *s)
{
	mo_put(b, s, strlen(s));
}

/* Free a buffer, wiping it (it held a body). */
static void mo_free(struct mo_buf *b)
{
	if (b->p != NULL) {
		OPENSSL_cleanse(b->p, b->cap);
		free(b->p);
	}
	b->p = NULL;
	b->len = b->cap = 0;
}

/* Length of the UTF-8 sequence starting at s (at most n bytes), 0 if invalid. */
static size_t mo_utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0], cp;
	size_t k;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		k = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		k = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		k = 4, cp = c & 0x07;
	else
		return 0;
	if (k > n)
		return 0;
	for (size_t i = 1; i < k; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return k;
}

/* 1 if s is valid UTF-8; with one_line, no control character at all (C0, DEL,
 * C1 U+0080..U+009F, U+2028/2029), else tab, CR and LF allowed in text. */
static int mo_text_ok(const char *s, int one_line)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);

	while (n > 0) {
		size_t k = mo_utf8_len(p, n);

		if (k == 0)
			return 0;
		if (k == 1 && (p[0] < 0x20 || p[0] == 0x7f) &&
		    (one_line || (p[0] != '\t' && p[0] != '\r' && p[0] != '\n')))
			return 0;
		if (k == 2 && p[0] == 0xc2 && p[1] < 0xa0)
			return 0;
		if (k == 3 && p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9))
			return 0;
		p += k;
		n -= k;
	}
	return 1;
}

int mailout_addr_ok(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	const char *at;

	if (n < 3 || n > MAILOUT_ADDR_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c <= 0x20 || c >= 0x7f || strchr("<>()[],;:\"\\", c) != NULL)
			return 0;
	}
	at = strchr(s, '@');
	if (at == NULL || at == s || strchr(at + 1, '@') != NULL || at[1] == '\0' ||
	    at[1] == '.' || s[n - 1] == '.' || strchr(at + 1, '.') == NULL ||
	    strstr(at, "..") != NULL)
		return 0;
	return 1;
}

int mailout_msgid_ok(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	const char *at;

	if (n < 5 || n > MAILOUT_MSGID_MAX || s[0] != '<' || s[n - 1] != '>')
		return 0;
	for (size_t i = 1; i + 1 < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c <= 0x20 || c >= 0x7f || strchr("<>()[],;:\"\\", c) != NULL)
			return 0;
	}
	at = strchr(s, '@');
	return at != NULL && at > s + 1 && at[1] != '>' && strchr(at + 1, '@') == NULL;
}

/* 1 if s is printable ASCII only (a header value that needs no encoding). */
static int mo_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			return 0;
	return 1;
}

/* Append s (valid one-line UTF-8) as RFC 2047 "B" encoded words of at most 75
 * bytes each, whole characters per word, folded with CRLF SP between words. */
static void mo_put_encoded(struct mo_buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	int first = 1;

	while (n > 0) {
		unsigned char enc[64];
		size_t take = 0;
		int elen;

		/* 39 input bytes → 52 base64 characters: "=?UTF-8?B?" + 52 + "?=" = 64,
		 * so "Subject: " or "From: " and one word stay within 78 */
		while (take < n) {
			size_t k = mo_utf8_len(p + take, n - take);

			if (k == 0 || take + k > 39)
				break;
			take += k;
		}
		if (take == 0) { /* cannot happen for valid UTF-8 */
			b->failed = 1;
			return;
		}
		elen = EVP_EncodeBlock(enc, p, (int)take);
		if (!first)
			mo_puts(b, "\r\n ");
		mo_puts(b, "=?UTF-8?B?");
		mo_put(b, (const char *)enc, (size_t)elen);
		mo_puts(b, "?=");
		first = 0;
		p += take;
		n -= take;
	}
}

/* A header of unstructured text (Subject): plain when ASCII, else encoded. */
static void mo_header_text(struct mo_buf *b, const char *name, const char *value)
{
	mo_puts(b, name);
	mo_puts(b, ": ");
	if (mo_ascii(value) && strlen(value) + strlen(name) + 2 <= 78)
		mo_puts(b, value);
	else
		mo_put_encoded(b, value);
	mo_puts(b, "\r\n");
}

/* The length of the line being written. */
static size_t mo_column(const struct mo_buf *b)
{
	size_t i = b->len;

	while (i > 0 && b->p[i - 1] != '\n')
		i--;
	return b->len - i;
}

/* An address header: "Name <addr>" (the name an encoded word unless it is
 * letters, digits and spaces only; folded before "<" past 78 bytes) or the
 * bare address. */
static void mo_header_addr(struct mo_buf *b, const char *name, const char *display,
			   const char *addr)
{
	mo_puts(b, name);
	mo_puts(b, ": ");
	if (display != NULL && display[0] != '\0') {
		size_t n = strlen(display);

		if (strspn(display, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				    "0123456789 ") == n && n <= 60)
			mo_puts(b, display);
		else
			mo_put_encoded(b, display);
		mo_puts(b, !b->failed && mo_column(b) + strlen(addr) + 3 > 78 ? "\r\n <" : " <");
		mo_puts(b, addr);
		mo_puts(b, ">\r\n");
	} else {
		mo_puts(b, addr);
		mo_puts(b, "\r\n");
	}
}

/* RFC 5322 date-time in UTC, whatever the locale. */
static void mo_date(int64_t ms, char out[40])
{
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL)
		memset(&tm, 0, sizeof tm);
	snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7],
		 tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		 tm.tm_sec);
}

/* The body: its canonical form (every line end CRLF) in base64, 76 a line. */
static void mo_body(struct mo_buf *b, const char *body)
{
	struct mo_buf canon = { 0 };
	unsigned char line[80];

	for (const char *p = body; *p != '\0'; p++) {
		if (*p == '\r') {
			mo_put(&canon, "\r\n", 2);
			if (p[1] == '\n')
				p++;
		} else if (*p == '\n') {
			mo_put(&canon, "\r\n", 2);
		} else {
			mo_put(&canon, p, 1);
		}
	}
	if (canon.failed) {
		b->failed = 1;
		mo_free(&canon);
		return;
	}
	for (size_t off = 0; off < canon.len; off += 57) {
		size_t n = canon.len - off < 57 ? canon.len - off : 57;
		int elen = EVP_EncodeBlock(line, (const unsigned char *)canon.p + off, (int)n);

		mo_put(b, (const char *)line, (size_t)elen);
		mo_puts(b, "\r\n");
	}
	OPENSSL_cleanse(line, sizeof line);
	mo_free(&canon);
}

int mailout_msg_build(const struct mailout_mail *m, char **out_r, size_t *len_r,
		      const char **error_r)
{
	struct mo_buf b = { 0 };
	char date[40];

	*out_r = NULL;
	if (!mailout_msgid_ok(m->message_id)) {
		*error_r = "message_id: not a plain <id@domain>";
		return -1;
	}
	if (!mailout_addr_ok(m->from_email) || !mailout_addr_ok(m->to_email)) {
		*error_r = "from/to: not a plain address (or a header injection attempt)";
		return -1;
	}
	if (m->in_reply_to != NULL && m->in_reply_to[0] != '\0' &&
	    !mailout_msgid_ok(m->in_reply_to)) {
		*error_r = "in_reply_to: not a plain <id@domain>";
		return -1;
	}
	if (strlen(m->subject) > MAILOUT_SUBJECT_MAX || !mo_text_ok(m->subject, 1)) {
		*error_r = "subject: control characters (CR/LF) or not UTF-8";
		return -1;
	}
	if (m->from_name != NULL && (strlen(m->from_name) > 200 || !mo_text_ok(m->from_name, 1))) {
		*error_r = "from_name: control characters (CR/LF) or not UTF-8";
		return -1;
	}
	if (strlen(m->body) > MAILOUT_BODY_MAX || !mo_text_ok(m->body, 0)) {
		*error_r = "body: too long or not UTF-8 text";
		return -1;
	}
	mo_date(m->date_ms, date);
	mo_puts(&b, "Date: ");
	mo_puts(&b, date);
	mo_puts(&b, "\r\n");
	mo_header_addr(&b, "From", m->from_name, m->from_email);
	mo_header_addr(&b, "To", NULL, m->to_email);
	mo_header_text(&b, "Subject", m->subject);
	mo_puts(&b, "Message-ID: ");
	mo_puts(&b, m->message_id);
	mo_puts(&b, "\r\n");
	if (m->in_reply_to != NULL && m->in_reply_to[0] != '\0') {
		mo_puts(&b, "In-Reply-To: ");
		mo_puts(&b, m->in_reply_to);
		mo_puts(&b, "\r\nReferences: ");
		mo_puts(&b, m->in_reply_to);
		mo_puts(&b, "\r\n");
	}
	mo_puts(&b, "MIME-Version: 1.0\r\n"
		    "Content-Type: text/plain; charset=utf-8\r\n"
		    "Content-Transfer-Encoding: base64\r\n"
		    "\r\n");
	mo_body(&b, m->body);
	if (b.failed) {
		mo_free(&b);
		*error_r = "out of memory";
		return -1;
	}
	*out_r = b.p;
	*len_r = b.len;
	return 0;
}

int mailout_msg_dotstuff(const char *msg, size_t len, char **out_r, size_t *len_r,
			 const char **error_r)
{
	struct mo_buf b = { 0 };
	size_t i = 0;

	*out_r = NULL;
	while (i < len) {
		size_t start = i, n;

		while (i < len && msg[i] != '\r' && msg[i] != '\n')
			i++;
		n = i - start;
		if (i < len && !(msg[i] == '\r' && i + 1 < len && msg[i + 1] == '\n')) {
			mo_free(&b);
			*error_r = "a bare CR or LF in the message";
			return -1;
		}
		if (n > MAILOUT_LINE_MAX) {
			mo_free(&b);
			*error_r = "a line longer than 998 bytes";
			return -1;
		}
		if (n > 0 && msg[start] == '.')
			mo_put(&b, ".", 1);
		mo_put(&b, msg + start, n);
		mo_put(&b, "\r\n", 2);
		if (i < len)
			i += 2;
	}
	mo_put(&b, ".\r\n", 3);
	if (b.failed) {
		mo_free(&b);
		*error_r = "out of memory";
		return -1;
	}
	*out_r = b.p;
	*len_r = b.len;
	return 0;
}
