/*
 * mail_mime — one received message into a MailIngestRequest, with GMime.
 *
 * Pure: no daemon, no I/O, no logging of content; the unit tests and the fuzz
 * target call it directly. What it does, in order:
 *
 *   1. Limits on the raw bytes: top-level header fields and header block size,
 *      and a cap on MIME nesting markers (GMime's parser recurses: a message of
 *      thousands of nested multiparts must not reach it).
 *   2. Loop and noise rules (mail_loop_reason): null or MAILER-DAEMON senders,
 *      Auto-Submitted other than "no", Precedence bulk/junk/list, X-Autoreply,
 *      delivery reports (multipart/report, message/delivery-status): MAIL_IGNORE.
 *   3. The text: multipart/alternative prefers text/plain, else HTML turned into
 *      plain text; other multiparts contribute every inline text part; nested
 *      message/rfc822 parts are inlined under a marker with their From/Subject.
 *      Transfer encodings (base64, quoted-printable) are decoded by GMime, the
 *      charset converted to UTF-8 (GMime/iconv: ISO-8859-*, Windows-125x,
 *      Shift_JIS, GB2312, …; undeclared 8-bit text is read as Windows-1252), and
 *      anything still invalid is replaced, control characters dropped.
 *      Quoted history below "On … wrote:" is kept below a marker line.
 *   4. Attachments: every non-text or attachment-disposition part, decoded, with
 *      its RFC 2231/2047 file name; count and size limits refuse the message
 *      (552 5.3.4) rather than dropping anything silently.
 *   5. Message-ID (or a synthesised one from the message's SHA-256, so an exact
 *      re-send is still a duplicate), In-Reply-To/References, Cc, the subject
 *      (one line, at most 255 characters) and its "[#REF]".
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gmime/gmime.h>
#include <openssl/evp.h>

#include "mail.h"

#define MAIL_MAX_REFS 20
#define MAIL_MAX_CC 20
#define MAIL_MAX_DEPTH 24
#define MAIL_SUBJECT_CHARS 255
#define MAIL_NAME_CHARS 200
#define MAIL_EMAIL_MAX 254

void mail_limits_default(struct mail_limits *lim)
{
	lim->max_headers = 200;
	lim->max_header_bytes = 64 * 1024;
	lim->max_attachments = 10;
	lim->max_attachment_bytes = 512 * 1024;
	lim->max_body_bytes = 256 * 1024;
	lim->max_total_bytes = 960 * 1024;
	lim->max_parts = 100;
}

void mail_mime_init(void)
{
	static int done;

	if (!done) {
		g_mime_init();
		done = 1;
	}
}

/* ============================== text helpers ============================ */

/* Append the UTF-8 encoding of code point cp (invalid → U+FFFD). */
static void mail_put_utf8(GString *s, gunichar cp)
{
	if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		cp = 0xFFFD;
	g_string_append_unichar(s, cp);
}

/*
 * Valid UTF-8 text without control characters from len bytes in charset
 * (NULL: UTF-8 if valid, else Windows-1252). CRLF and CR become LF; with
 * single_line every line break and tab is a space. Returns a malloc'd string.
 */
static char *mail_text_clean(const char *in, size_t len, bool single_line)
{
	char *conv = NULL, *valid, *out, *o;
	const char *p;

	if (!g_utf8_validate(in, (gssize)len, NULL)) {
		conv = g_convert(in, (gssize)len, "UTF-8", "WINDOWS-1252", NULL, NULL, NULL);
		if (conv == NULL || !g_utf8_validate(conv, -1, NULL)) {
			g_free(conv);
			conv = g_utf8_make_valid(in, (gssize)len);
		}
		in = conv;
		len = strlen(conv);
	}
	valid = g_strndup(in, len); /* stops at an embedded NUL: the rest is dropped */
	/* every character is kept as it is, replaced by one byte or dropped: the
	 * text never grows */
	out = malloc(strlen(valid) + 1);
	if (out == NULL)
		goto out;
	for (p = valid, o = out; *p != '\0';) {
		unsigned char b = (unsigned char)*p;
		const char *next;

		if (b < 0x80) { /* ASCII, most of the text: no decoding */
			if (b == '\r') {
				if (p[1] != '\n')
					*o++ = single_line ? ' ' : '\n';
			} else if (b == '\n' || b == '\t') {
				*o++ = single_line ? ' ' : (char)b;
			} else if (b >= 0x20 && b != 0x7f) {
				*o++ = (char)b;
			}
			p++;
			continue;
		}
		/* valid UTF-8 (checked above): its bytes as they are, but C1 controls */
		next = g_utf8_next_char(p);
		if (g_utf8_get_char(p) > 0x9f) {
			memcpy(o, p, (size_t)(next - p));
			o += next - p;
		}
		p = next;
	}
	*o = '\0';
out:
	g_free(valid);
	g_free(conv);
	return out;
}

/* Trim s in place and cut it to max_chars code points. */
static void mail_trim_chars(char *s, size_t max_chars)
{
	char *start = s, *p;
	size_t n = 0, len;

	while (*start == ' ')
		start++;
	memmove(s, start, strlen(start) + 1);
	for (p = s; *p != '\0'; p = g_utf8_next_char(p))
		if (++n > max_chars) {
			*p = '\0';
			break;
		}
	len = strlen(s);
	while (len > 0 && s[len - 1] == ' ')
		s[--len] = '\0';
}

/* Does s (of n bytes) start with the ASCII word w, case-insensitively? */
static bool mail_starts(const char *s, size_t n, const char *w)
{
	size_t wl = strlen(w);

	return n >= wl && strncasecmp(s, w, wl) == 0;
}

/* ============================== HTML → text ============================= */

/* Decode the entity at s (after '&'); append it and return the bytes used, or 0. */
static size_t mail_entity(const char *s, const char *end, GString *out)
{
	static const struct {
		const char *name;
		gunichar cp;
	} names[] = {{"amp;", '&'},    {"lt;", '<'},	 {"gt;", '>'},	    {"quot;", '"'},
		     {"apos;", '\''},  {"nbsp;", ' '},	 {"copy;", 0xA9},   {"reg;", 0xAE},
		     {"hellip;", 0x2026}, {"mdash;", 0x2014}, {"ndash;", 0x2013}, {"euro;", 0x20AC},
		     {"rsquo;", 0x2019}, {"lsquo;", 0x2018}, {"rdquo;", 0x201D}, {"ldquo;", 0x201C}};
	size_t i;

	if (s < end && *s == '#') {
		const char *p = s + 1;
		int base = 10;
		gunichar cp = 0;
		int digits = 0;

		if (p < end && (*p == 'x' || *p == 'X')) {
			base = 16;
			p++;
		}
		for (; p < end && digits < 8 && g_ascii_isxdigit(*p); p++, digits++) {
			if (base == 10 && !g_ascii_isdigit(*p))
				break;
			cp = cp * (gunichar)base + (gunichar)g_ascii_xdigit_value(*p);
		}
		if (digits == 0 || p >= end || *p != ';')
			return 0;
		mail_put_utf8(out, cp);
		return (size_t)(p + 1 - s);
	}
	for (i = 0; i < sizeof names / sizeof names[0]; i++) {
		size_t n = strlen(names[i].name);

		if ((size_t)(end - s) >= n && strncasecmp(s, names[i].name, n) == 0) {
			mail_put_utf8(out, names[i].cp);
			return n;
		}
	}
	return 0;
}

char *mail_html_to_text(const char *html, size_t len)
{
	static const char *const blocks[] = {"br",	   "p",	 "div", "li", "tr", "h1", "h2",
					     "h3",	   "h4", "h5",	"h6", "hr", "table",
					     "blockquote", "ul", "ol",	"pre"};
	const char *p = html, *end = html + len;
	GString *out = g_string_sized_new(len / 2 + 1);
	bool space = false;
	char *ret;

	while (p < end) {
		if (*p == '<') {
			const char *q = p + 1, *name;
			size_t nlen;

			if (end - p >= 4 && strncmp(p, "<!--", 4) == 0) {
				const char *c = g_strstr_len(p + 4, end - p - 4, "-->");

				p = c != NULL ? c + 3 : end;
				continue;
			}
			if (q < end && *q == '/')
				q++;
			name = q;
			while (q < end && (g_ascii_isalnum(*q)))
				q++;
			nlen = (size_t)(q - name);
			while (q < end && *q != '>')
				q++;
			p = q < end ? q + 1 : end;
			if (name[-1] != '/' && ((nlen == 6 && strncasecmp(name, "script", 6) == 0) ||
						(nlen == 5 && strncasecmp(name, "style", 5) == 0) ||
						(nlen == 4 && strncasecmp(name, "head", 4) == 0))) {
				/* skip to the closing tag of the same name */
				char close[10];
				const char *c;

				snprintf(close, sizeof close, "</%.*s", (int)nlen, name);
				c = p;
				while (c < end && !((size_t)(end - c) >= nlen + 2 &&
						    strncasecmp(c, close, nlen + 2) == 0))
					c++;
				p = c;
				continue;
			}
			for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
				if (strlen(blocks[i]) == nlen && strncasecmp(name, blocks[i], nlen) == 0) {
					g_string_append_c(out, '\n');
					space = false;
					break;
				}
			continue;
		}
		if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
			space = true;
			p++;
			continue;
		}
		if (space && out->len > 0 && out->str[out->len - 1] != '\n')
			g_string_append_c(out, ' ');
		space = false;
		if (*p == '&') {
			size_t n = mail_entity(p + 1, end, out);

			if (n > 0) {
				p += n + 1;
				continue;
			}
		}
		g_string_append_c(out, *p++);
	}
	/* at most one empty line in a row */
	{
		GString *t = g_string_sized_new(out->len + 1);
		int nl = 0;

		for (size_t i = 0; i < out->len; i++) {
			if (out->str[i] == '\n') {
				if (++nl > 2 || t->len == 0)
					continue;
			} else {
				nl = 0;
			}
			g_string_append_c(t, out->str[i]);
		}
		ret = strdup(t->str);
		g_string_free(t, TRUE);
	}
	g_string_free(out, TRUE);
	return ret;
}

/* ============================== quoted history ========================== */

/* Is the line [s, e) the start of quoted history? (the next line for wraps) */
static bool mail_quote_line(const char *s, const char *e, const char *next_e)
{
	size_t n = (size_t)(e - s);

	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	if (mail_starts(s, n, "-----Original Message-----"))
		return true;
	if (!mail_starts(s, n, "On "))
		return false;
	if (n >= 6 && strncmp(s + n - 6, "wrote:", 6) == 0)
		return true;
	/* "On Mon, 1 Jan 2024, Someone <x@y>\nwrote:" (wrapped by the client) */
	if (next_e != NULL) {
		const char *t = e + 1;
		size_t m = (size_t)(next_e - t);

		while (m > 0 && (t[m - 1] == ' ' || t[m - 1] == '\t'))
			m--;
		return m >= 6 && strncmp(t + m - 6, "wrote:", 6) == 0 && m < 80;
	}
	return false;
}

char *mail_mark_quoted(const char *text)
{
	const char *p = text, *cut = NULL, *quote_run = NULL;
	size_t len = strlen(text);
	char *out;

	while (*p != '\0') {
		const char *e = strchr(p, '\n'), *ne = NULL;

		if (e == NULL)
			e = p + strlen(p);
		if (*e == '\n') {
			ne = strchr(e + 1, '\n');
			if (ne == NULL && e[1] != '\0')
				ne = e + 1 + strlen(e + 1);
		}
		if (cut == NULL && mail_quote_line(p, e, ne)) {
			cut = p;
			break;
		}
		/* a trailing run of "> " lines (no attribution line above it) */
		if (*p == '>') {
			if (quote_run == NULL)
				quote_run = p;
		} else if (e > p) {
			quote_run = NULL;
		}
		p = *e == '\n' ? e + 1 : e;
	}
	if (cut == NULL)
		cut = quote_run;
	if (cut == NULL)
		return strdup(text);
	{
		size_t head = (size_t)(cut - text), n = len + sizeof MAIL_QUOTE_MARKER + 4;

		out = malloc(n);
		if (out == NULL)
			return NULL;
		snprintf(out, n, "%.*s%s" MAIL_QUOTE_MARKER "\n%s", (int)head, text,
			 head > 0 && text[head - 1] != '\n' ? "\n" : "", cut);
	}
	return out;
}

/* ============================== subject, loops ========================== */

int mail_subject_ref(const char *subject, char *out, size_t out_len)
{
	const char *p = subject;

	while ((p = strstr(p, "[#")) != NULL) {
		const char *s = p + 2, *q = s;
		size_t n;

		while (*q != '\0' && (g_ascii_isalnum(*q) || *q == '-'))
			q++;
		n = (size_t)(q - s);
		if (*q == ']' && n >= 5 && n < out_len && n < 64 && g_ascii_isdigit(q[-1])) {
			memcpy(out, s, n);
			out[n] = '\0';
			return 1;
		}
		p += 2;
	}
	return 0;
}

/* The first token of a header value, trimmed, into out. */
static void mail_token(const char *v, char *out, size_t out_len)
{
	size_t n = 0;

	while (*v == ' ' || *v == '\t')
		v++;
	while (*v != '\0' && *v != ';' && *v != ' ' && *v != '\t' && *v != '\r' && *v != '\n' &&
	       n + 1 < out_len)
		out[n++] = *v++;
	out[n] = '\0';
}

/* Is the local part of addr "mailer-daemon"? */
static bool mail_is_daemon(const char *addr)
{
	return addr != NULL && strncasecmp(addr, "mailer-daemon", 13) == 0 &&
	       (addr[13] == '@' || addr[13] == '\0');
}

const char *mail_loop_reason(const char *envelope_from, const char *from_addr,
			     const char *auto_submitted, const char *precedence,
			     const char *x_autoreply, const char *content_type)
{
	char tok[64];

	if (envelope_from != NULL && envelope_from[0] == '\0')
		return "bounce: null sender";
	if (mail_is_daemon(envelope_from) || mail_is_daemon(from_addr))
		return "bounce: MAILER-DAEMON";
	if (auto_submitted != NULL) {
		mail_token(auto_submitted, tok, sizeof tok);
		if (strcasecmp(tok, "no") != 0)
			return "Auto-Submitted";
	}
	if (precedence != NULL) {
		mail_token(precedence, tok, sizeof tok);
		if (strcasecmp(tok, "bulk") == 0 || strcasecmp(tok, "junk") == 0 ||
		    strcasecmp(tok, "list") == 0)
			return "Precedence";
	}
	if (x_autoreply != NULL) {
		mail_token(x_autoreply, tok, sizeof tok);
		if (strcasecmp(tok, "no") != 0)
			return "X-Autoreply";
	}
	if (content_type != NULL) {
		mail_token(content_type, tok, sizeof tok);
		if (strcasecmp(tok, "multipart/report") == 0 ||
		    strcasecmp(tok, "message/delivery-status") == 0)
			return "delivery report";
	}
	return NULL;
}

/* A plausible address (the rule ward-ticket applies), lower-cased into out. */
static bool mail_addr_ok(const char *in, char *out, size_t out_len)
{
	size_t len = in != NULL ? strlen(in) : 0, at = 0, ats = 0;

	if (len < 3 || len > MAIL_EMAIL_MAX || len + 1 > out_len)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c <= ' ' || c >= 0x7f || strchr("\"\\<>,;()[]:", c) != NULL)
			return false;
		if (c == '@') {
			at = i;
			ats++;
		}
		out[i] = (char)tolower(c);
	}
	out[len] = '\0';
	return ats == 1 && at > 0 && at < len - 1 && strchr(out + at + 1, '.') != NULL &&
	       out[len - 1] != '.' && out[at + 1] != '.';
}

/* ============================== raw checks ============================== */

/* Header fields and header bytes of the top-level block; a leading mbox "From "
 * line is not a field. Returns a refusal or NULL. */
static const char *mail_check_raw(const char *data, size_t len, const struct mail_limits *lim)
{
	const char *p = data, *end = data + len;
	size_t fields = 0, markers = 0;

	if (len >= 5 && strncmp(data, "From ", 5) == 0) {
		const char *e = memchr(p, '\n', len);

		p = e != NULL ? e + 1 : end;
	}
	while (p < end) {
		const char *e = memchr(p, '\n', (size_t)(end - p));
		size_t n = (e != NULL ? e : end) - p;

		if (n == 0 || (n == 1 && *p == '\r'))
			break;
		if (*p != ' ' && *p != '\t')
			fields++;
		if (fields > lim->max_headers)
			return "552 5.3.4 Too many header fields";
		p = e != NULL ? e + 1 : end;
		if ((size_t)(p - data) > lim->max_header_bytes)
			return "552 5.3.4 Header section too large";
	}
	/* GMime's parser recurses on nesting: bound it before parsing. */
	for (p = data; p + 10 <= end; p++) {
		if ((*p == 'm' || *p == 'M') && (strncasecmp(p, "multipart/", 10) == 0 ||
						 strncasecmp(p, "message/", 8) == 0)) {
			if (++markers > 2 * lim->max_parts)
				return "554 5.6.0 Too many MIME parts";
		}
	}
	return NULL;
}

/* ============================== the walk ================================ */

struct mail_walk {
	const struct mail_limits *lim;
	GString *text;
	GPtrArray *atts; /* Ward__MailAttachment * */
	size_t att_bytes;
	size_t parts;
	const char *refuse;
};

/* Decoded content of part into a GByteArray (caller frees). */
static GByteArray *mail_part_bytes(GMimePart *part)
{
	GMimeDataWrapper *dw = g_mime_part_get_content(part);
	GMimeStream *mem;
	GByteArray *ba;

	if (dw == NULL)
		return g_byte_array_new();
	mem = g_mime_stream_mem_new();
	g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(mem), FALSE);
	if (g_mime_data_wrapper_write_to_stream(dw, mem) < 0) {
		g_object_unref(mem);
		return NULL;
	}
	ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
	g_object_unref(mem);
	return ba;
}

/* The text of a text part as clean UTF-8 (HTML converted). malloc'd or NULL. */
static char *mail_part_text(GMimePart *part, bool html)
{
	GMimeObject *obj = GMIME_OBJECT(part);
	const char *charset = g_mime_object_get_content_type_parameter(obj, "charset");
	GByteArray *ba = mail_part_bytes(part);
	char *utf8 = NULL, *clean, *ret;

	if (ba == NULL)
		return NULL;
	if (ba->len == 0) {
		g_byte_array_free(ba, TRUE);
		return strdup("");
	}
	if (charset != NULL && g_ascii_strcasecmp(charset, "utf-8") != 0 &&
	    g_ascii_strcasecmp(charset, "us-ascii") != 0) {
		const char *iconv_name = g_mime_charset_iconv_name(charset);

		if (iconv_name != NULL)
			utf8 = g_convert_with_fallback((const char *)ba->data, (gssize)ba->len, "UTF-8",
					       iconv_name, "\xef\xbf\xbd", NULL, NULL, NULL);
	}
	clean = utf8 != NULL ? mail_text_clean(utf8, strlen(utf8), false)
			     : mail_text_clean((const char *)ba->data, ba->len, false);
	g_free(utf8);
	g_byte_array_free(ba, TRUE);
	if (clean == NULL || !html)
		return clean;
	ret = mail_html_to_text(clean, strlen(clean));
	free(clean);
	return ret;
}

/* Append text as a new paragraph. */
static void mail_add_text(struct mail_walk *w, const char *t)
{
	size_t n;

	if (t == NULL)
		return;
	n = strlen(t);
	while (n > 0 && (t[n - 1] == '\n' || t[n - 1] == ' ' || t[n - 1] == '\t'))
		n--;
	if (n == 0)
		return;
	if (w->text->len > 0)
		g_string_append(w->text, "\n\n");
	g_string_append_len(w->text, t, (gssize)n);
}

static void mail_walk(struct mail_walk *w, GMimeObject *obj, int depth);

/* A leaf part: text for the body, or an attachment. */
static void mail_walk_part(struct mail_walk *w, GMimePart *part)
{
	GMimeContentType *ct = g_mime_object_get_content_type(GMIME_OBJECT(part));
	const char *filename = g_mime_part_get_filename(part);
	bool plain = ct != NULL && g_mime_content_type_is_type(ct, "text", "plain");
	bool html = ct != NULL && g_mime_content_type_is_type(ct, "text", "html");
	Ward__MailAttachment *a;
	GByteArray *ba;

	if ((plain || html) && !g_mime_part_is_attachment(part)) {
		char *t = mail_part_text(part, html);

		mail_add_text(w, t);
		free(t);
		return;
	}
	ba = mail_part_bytes(part);
	if (ba == NULL || ba->len == 0) {
		if (ba != NULL)
			g_byte_array_free(ba, TRUE);
		return; /* nothing to keep */
	}
	if (w->atts->len >= w->lim->max_attachments) {
		w->refuse = "552 5.3.4 Too many attachments";
	} else if (ba->len > w->lim->max_attachment_bytes) {
		w->refuse = "552 5.3.4 Attachment too large";
	} else if ((a = calloc(1, sizeof *a)) == NULL) {
		w->refuse = "452 4.3.1 Out of memory";
	} else {
		char *name = mail_text_clean(filename != NULL ? filename : "attachment",
					     strlen(filename != NULL ? filename : "attachment"),
					     true);

		ward__mail_attachment__init(a);
		a->filename = name != NULL ? name : strdup("attachment");
		a->content.len = ba->len;
		a->content.data = malloc(ba->len);
		if (a->filename == NULL || a->content.data == NULL) {
			free(a->filename);
			free(a->content.data);
			free(a);
			w->refuse = "452 4.3.1 Out of memory";
		} else {
			memcpy(a->content.data, ba->data, ba->len);
			g_ptr_array_add(w->atts, a);
			w->att_bytes += ba->len;
		}
	}
	g_byte_array_free(ba, TRUE);
}

/* Walk obj: multiparts (alternative: the best one), messages, leaves. */
static void mail_walk(struct mail_walk *w, GMimeObject *obj, int depth)
{
	if (obj == NULL || w->refuse != NULL)
		return;
	if (++w->parts > w->lim->max_parts || depth > MAIL_MAX_DEPTH) {
		w->refuse = "554 5.6.0 Too many or too deeply nested MIME parts";
		return;
	}
	if (GMIME_IS_MESSAGE_PART(obj)) {
		GMimeMessage *m = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));

		if (m != NULL) {
			const char *subj = g_mime_message_get_subject(m);
			char *s = mail_text_clean(subj != NULL ? subj : "", subj ? strlen(subj) : 0,
						  true);
			char *from = internet_address_list_to_string(g_mime_message_get_from(m),
								     NULL, FALSE);
			char *f = mail_text_clean(from != NULL ? from : "",
						  from != NULL ? strlen(from) : 0, true);

			if (w->text->len > 0)
				g_string_append(w->text, "\n\n");
			g_string_append_printf(w->text,
					       "----- attached message -----\nFrom: %s\nSubject: %s",
					       f != NULL ? f : "", s != NULL ? s : "");
			free(s);
			free(f);
			g_free(from);
			mail_walk(w, g_mime_message_get_mime_part(m), depth + 1);
		}
		return;
	}
	if (GMIME_IS_MULTIPART(obj)) {
		GMimeMultipart *mp = GMIME_MULTIPART(obj);
		GMimeContentType *ct = g_mime_object_get_content_type(obj);
		int n = g_mime_multipart_get_count(mp);

		if (ct != NULL && g_mime_content_type_is_type(ct, "multipart", "alternative")) {
			GMimeObject *best = NULL, *html = NULL;

			for (int i = 0; i < n; i++) {
				GMimeObject *c = g_mime_multipart_get_part(mp, i);
				GMimeContentType *cct = g_mime_object_get_content_type(c);

				if (cct == NULL)
					continue;
				if (best == NULL && g_mime_content_type_is_type(cct, "text", "plain"))
					best = c;
				else if (html == NULL &&
					 g_mime_content_type_is_type(cct, "text", "html"))
					html = c;
			}
			if (best == NULL)
				best = html;
			if (best == NULL && n > 0)
				best = g_mime_multipart_get_part(mp, n - 1);
			mail_walk(w, best, depth + 1);
			return;
		}
		for (int i = 0; i < n && w->refuse == NULL; i++)
			mail_walk(w, g_mime_multipart_get_part(mp, i), depth + 1);
		return;
	}
	if (GMIME_IS_PART(obj))
		mail_walk_part(w, GMIME_PART(obj));
}

/* ============================== the request ============================= */

void mail_request_free(Ward__MailIngestRequest *req)
{
	if (req == NULL)
		return;
	free(req->message_id);
	free(req->from_email);
	free(req->from_name);
	free(req->subject);
	if (req->body != NULL) {
		explicit_bzero(req->body, strlen(req->body));
		free(req->body);
	}
	for (size_t i = 0; i < req->n_references; i++)
		free(req->references[i]);
	free(req->references);
	free(req->subject_ref);
	for (size_t i = 0; i < req->n_cc; i++)
		free(req->cc[i]);
	free(req->cc);
	for (size_t i = 0; i < req->n_attachments; i++) {
		free(req->attachments[i]->filename);
		if (req->attachments[i]->content.data != NULL)
			explicit_bzero(req->attachments[i]->content.data,
				       req->attachments[i]->content.len);
		free(req->attachments[i]->content.data);
		free(req->attachments[i]);
	}
	free(req->attachments);
	free(req->recipient);
	free(req);
}

/* The first mailbox of list: address (lower-cased, checked) and display name. */
static void mail_first_mailbox(InternetAddressList *list, char *addr, size_t addr_len,
			       char **name_r)
{
	addr[0] = '\0';
	for (int i = 0; list != NULL && i < internet_address_list_length(list); i++) {
		InternetAddress *ia = internet_address_list_get_address(list, i);

		if (INTERNET_ADDRESS_IS_MAILBOX(ia)) {
			const char *a = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia));
			const char *n = internet_address_get_name(ia);

			if (!mail_addr_ok(a, addr, addr_len)) {
				addr[0] = '\0';
				continue;
			}
			if (n != NULL && name_r != NULL)
				*name_r = mail_text_clean(n, strlen(n), true);
			return;
		}
	}
}

/* Append "<id>" of every Message-ID in header value v to refs (bounded). */
static void mail_add_refs(GPtrArray *refs, const char *v, bool newest_first)
{
	GMimeReferences *r;
	int n;

	if (v == NULL)
		return;
	r = g_mime_references_parse(NULL, v);
	if (r == NULL)
		return;
	n = g_mime_references_length(r);
	for (int k = 0; k < n && refs->len < MAIL_MAX_REFS; k++) {
		const char *id = g_mime_references_get_message_id(r, newest_first ? n - 1 - k : k);

		if (id != NULL && id[0] != '\0' && strlen(id) < 990)
			g_ptr_array_add(refs, g_strdup_printf("<%s>", id));
	}
	g_mime_references_free(r);
}

/* "<sha256 of the raw message>@ward.invalid" for mail without a Message-ID. */
static char *mail_synth_id(const char *data, size_t len)
{
	unsigned char md[32];
	char hex[65], *out;

	if (EVP_Digest(data, len, md, NULL, EVP_sha256(), NULL) != 1)
		return NULL;
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	out = malloc(90);
	if (out != NULL)
		snprintf(out, 90, "<%s@ward.invalid>", hex);
	return out;
}

/* Fill req from msg and the walk; NULL or a refusal. */
static const char *mail_fill(Ward__MailIngestRequest *req, GMimeMessage *msg, const char *data,
			     size_t len, const char *envelope_from, struct mail_walk *w)
{
	char addr[MAIL_EMAIL_MAX + 1], ref[64];
	const char *mid = g_mime_message_get_message_id(msg);
	const char *subj = g_mime_message_get_subject(msg);
	GPtrArray *refs = g_ptr_array_new_with_free_func(g_free);
	InternetAddressList *cc = g_mime_message_get_cc(msg);
	char *body;

	/* Sender: the From header, else the envelope's. */
	mail_first_mailbox(g_mime_message_get_from(msg), addr, sizeof addr, &req->from_name);
	if (addr[0] == '\0' && !mail_addr_ok(envelope_from, addr, sizeof addr)) {
		g_ptr_array_free(refs, TRUE);
		return "554 5.1.7 No usable sender address";
	}
	req->from_email = strdup(addr);
	if (mid != NULL && mid[0] != '\0' && strlen(mid) < 990) {
		char *clean = mail_text_clean(mid, strlen(mid), true);

		req->message_id = malloc(strlen(clean) + 3);
		if (req->message_id != NULL)
			sprintf(req->message_id, "<%s>", clean);
		free(clean);
	} else {
		req->message_id = mail_synth_id(data, len);
	}
	req->subject = mail_text_clean(subj != NULL ? subj : "", subj != NULL ? strlen(subj) : 0,
				       true);
	if (req->subject != NULL)
		mail_trim_chars(req->subject, MAIL_SUBJECT_CHARS);
	if (req->subject != NULL && req->subject[0] == '\0') {
		free(req->subject);
		req->subject = strdup("(no subject)");
	}
	if (req->from_name != NULL)
		mail_trim_chars(req->from_name, MAIL_NAME_CHARS);
	req->subject_ref = strdup(req->subject != NULL && mail_subject_ref(req->subject, ref,
									    sizeof ref)
				      ? ref
				      : "");
	mail_add_refs(refs, g_mime_object_get_header(GMIME_OBJECT(msg), "In-Reply-To"), false);
	mail_add_refs(refs, g_mime_object_get_header(GMIME_OBJECT(msg), "References"), true);
	req->n_references = refs->len;
	req->references = calloc(refs->len + 1, sizeof(char *));
	for (guint i = 0; req->references != NULL && i < refs->len; i++)
		req->references[i] = strdup(refs->pdata[i]);
	g_ptr_array_free(refs, TRUE); /* frees the g_strdup'd ids */
	req->cc = calloc(MAIL_MAX_CC + 1, sizeof(char *));
	for (int i = 0; cc != NULL && req->cc != NULL && i < internet_address_list_length(cc) &&
			req->n_cc < MAIL_MAX_CC;
	     i++) {
		InternetAddress *ia = internet_address_list_get_address(cc, i);

		if (INTERNET_ADDRESS_IS_MAILBOX(ia) &&
		    mail_addr_ok(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia)),
				 addr, sizeof addr))
			req->cc[req->n_cc++] = strdup(addr);
	}
	body = mail_mark_quoted(w->text->len > 0 ? w->text->str : "(no text)");
	req->body = body;
	req->recipient = strdup("");
	req->n_attachments = w->atts->len;
	req->attachments = calloc(w->atts->len + 1, sizeof(Ward__MailAttachment *));
	if (req->attachments != NULL)
		for (guint i = 0; i < w->atts->len; i++)
			req->attachments[i] = w->atts->pdata[i];
	else
		req->n_attachments = 0;
	g_ptr_array_set_size(w->atts, 0);
	if (req->from_email == NULL || req->message_id == NULL || req->subject == NULL ||
	    req->subject_ref == NULL || req->references == NULL || req->cc == NULL ||
	    req->body == NULL || req->recipient == NULL || req->attachments == NULL)
		return "452 4.3.1 Out of memory";
	for (size_t i = 0; i < req->n_references; i++)
		if (req->references[i] == NULL)
			return "452 4.3.1 Out of memory";
	for (size_t i = 0; i < req->n_cc; i++)
		if (req->cc[i] == NULL)
			return "452 4.3.1 Out of memory";
	if (strlen(req->body) > w->lim->max_body_bytes)
		return "552 5.3.4 Message text too long";
	if (strlen(req->body) + w->att_bytes > w->lim->max_total_bytes)
		return "552 5.3.4 Message too big for the helpdesk";
	return NULL;
}

/* Free what a walk still holds. */
static void mail_walk_free(struct mail_walk *w)
{
	for (guint i = 0; w->atts != NULL && i < w->atts->len; i++) {
		Ward__MailAttachment *a = w->atts->pdata[i];

		free(a->filename);
		free(a->content.data);
		free(a);
	}
	if (w->atts != NULL)
		g_ptr_array_free(w->atts, TRUE);
	if (w->text != NULL)
		g_string_free(w->text, TRUE);
}

enum mail_verdict mail_parse(const char *data, size_t len, const char *envelope_from,
			     const struct mail_limits *lim, Ward__MailIngestRequest **req_r,
			     const char **reason_r, const char **code_r)
{
	struct mail_walk w = {.lim = lim};
	Ward__MailIngestRequest *req = NULL;
	GMimeStream *stream = NULL;
	GMimeParser *parser = NULL;
	GMimeMessage *msg = NULL;
	GMimeObject *top;
	const char *why, *refuse;
	char from_addr[MAIL_EMAIL_MAX + 1];
	enum mail_verdict v = MAIL_REFUSE;

	*req_r = NULL;
	*reason_r = NULL;
	*code_r = NULL;
	mail_mime_init();
	if ((refuse = mail_check_raw(data, len, lim)) != NULL) {
		*code_r = refuse;
		return MAIL_REFUSE;
	}
	stream = g_mime_stream_mem_new_with_buffer(data, len);
	parser = g_mime_parser_new_with_stream(stream);
	g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
	msg = g_mime_parser_construct_message(parser, NULL);
	if (msg == NULL) {
		*code_r = "554 5.6.0 Malformed message";
		goto out;
	}
	top = g_mime_message_get_mime_part(msg);
	mail_first_mailbox(g_mime_message_get_from(msg), from_addr, sizeof from_addr, NULL);
	why = mail_loop_reason(envelope_from, from_addr,
			       g_mime_object_get_header(GMIME_OBJECT(msg), "Auto-Submitted"),
			       g_mime_object_get_header(GMIME_OBJECT(msg), "Precedence"),
			       g_mime_object_get_header(GMIME_OBJECT(msg), "X-Autoreply"),
			       top != NULL ? g_mime_object_get_header(top, "Content-Type") : NULL);
	if (why == NULL && top != NULL) {
		GMimeContentType *ct = g_mime_object_get_content_type(top);

		if (ct != NULL && (g_mime_content_type_is_type(ct, "multipart", "report") ||
				   g_mime_content_type_is_type(ct, "message", "delivery-status")))
			why = "delivery report";
	}
	if (why != NULL) {
		*reason_r = why;
		v = MAIL_IGNORE;
		goto out;
	}
	w.text = g_string_new(NULL);
	w.atts = g_ptr_array_new();
	mail_walk(&w, top, 0);
	if (w.refuse != NULL) {
		*code_r = w.refuse;
		goto out;
	}
	if ((req = malloc(sizeof *req)) == NULL) {
		*code_r = "452 4.3.1 Out of memory";
		goto out;
	}
	ward__mail_ingest_request__init(req);
	/* init points strings at the shared empty string: own them all */
	req->message_id = req->from_email = req->from_name = req->subject = NULL;
	req->body = req->subject_ref = req->recipient = NULL;
	if ((refuse = mail_fill(req, msg, data, len, envelope_from, &w)) != NULL) {
		*code_r = refuse;
		goto out;
	}
	if (req->from_name == NULL && (req->from_name = strdup("")) == NULL) {
		*code_r = "452 4.3.1 Out of memory";
		goto out;
	}
	*req_r = req;
	req = NULL;
	v = MAIL_ACCEPT;
out:
	mail_request_free(req);
	mail_walk_free(&w);
	if (msg != NULL)
		g_object_unref(msg);
	if (parser != NULL)
		g_object_unref(parser);
	if (stream != NULL)
		g_object_unref(stream);
	return v;
}
