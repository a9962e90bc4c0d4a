/*
 * ticket_logic — ward-ticket's pure rules, with no I/O: input checks (UTF-8,
 * control characters, UUIDs, emails, times), the status workflow, human refs,
 * opaque list cursors, attachment content sniffing and file names.
 * Unit-tested by tests/unit/test_ticket_logic.c.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "ticket.h"

/* ================================ text ================================== */

int ticket_utf8_valid(const char *str, size_t len, size_t *chars_r)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0, chars = 0;

	while (i < len) {
		unsigned char c = s[i];
		uint32_t cp;
		size_t n, k;

		if (c < 0x80) {
			i++;
			chars++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			n = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 3, cp = c & 0x07;
		else
			return 0; /* continuation byte, overlong lead (c0, c1) or > f4 */
		if (len - i <= n)
			return 0;
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n + 1;
		chars++;
	}
	if (chars_r != NULL)
		*chars_r = chars;
	return 1;
}

int ticket_text_ok(const char *s, size_t len, bool single_line, size_t *chars_r)
{
	size_t i;

	if (!ticket_utf8_valid(s, len, chars_r))
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == 0x7f ||
		    (c < 0x20 && (single_line || (c != '\t' && c != '\n' && c != '\r'))))
			return 0;
	}
	return 1;
}

/* ============================ status workflow =========================== */

static const char *const ticket_status_names[] = {"open", "pending", "resolved", "closed"};

enum ticket_status ticket_status_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (s != NULL && strcmp(s, ticket_status_names[i]) == 0)
			return (enum ticket_status)i;
	return TS_INVALID;
}

const char *ticket_status_name(enum ticket_status st)
{
	return st >= TS_OPEN && st <= TS_CLOSED ? ticket_status_names[st] : "invalid";
}

/* open → pending → resolved → closed, with the steps back an agent needs:
 * pending → open, resolved → open (reopen). Closed is final: a new request
 * after that is a new ticket. */
bool ticket_status_transition_ok(enum ticket_status from, enum ticket_status to)
{
	static const bool allowed[4][4] = {
	    /* to:        open   pending resolved closed */
	    [TS_OPEN] = {true, true, true, false},
	    [TS_PENDING] = {true, true, true, false},
	    [TS_RESOLVED] = {true, false, true, true},
	    [TS_CLOSED] = {false, false, false, true},
	};

	if (from < TS_OPEN || from > TS_CLOSED || to < TS_OPEN || to > TS_CLOSED)
		return false;
	return allowed[from][to];
}

int ticket_status_after_reply(enum ticket_status from, bool by_customer, enum ticket_status *to_r)
{
	if (from < TS_OPEN || from >= TS_CLOSED)
		return -1;
	*to_r = by_customer && (from == TS_PENDING || from == TS_RESOLVED) ? TS_OPEN : from;
	return 0;
}

bool ticket_priority_valid(const char *s)
{
	return s != NULL && (strcmp(s, "low") == 0 || strcmp(s, "normal") == 0 ||
			     strcmp(s, "high") == 0 || strcmp(s, "urgent") == 0);
}

/* ================================ values ================================ */

bool ticket_uuid_valid(const char *s)
{
	size_t i;

	if (s == NULL || strlen(s) != TICKET_UUID_LEN)
		return false;
	for (i = 0; i < TICKET_UUID_LEN; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
			return false;
		}
	}
	return true;
}

int ticket_email_normalize(const char *in, char *out, size_t out_len)
{
	size_t len = strlen(in), i, at = 0, ats = 0;

	if (len < 3 || len > TICKET_EMAIL_MAX || len + 1 > out_len)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' ||
		    c == ',' || c == ';' || c == '(' || c == ')' || c == '[' || c == ']' ||
		    c == ':')
			return 0;
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

/* n decimal digits at s into *v. */
static bool ticket_digits(const char *s, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		*v = *v * 10 + (s[i] - '0');
	}
	return true;
}

bool ticket_time_valid(const char *s)
{
	int y, mo, d, h, mi, sec, oh, om;
	size_t i = 19, len;

	if (s == NULL || (len = strlen(s)) < 20 || len > 40)
		return false;
	if (!ticket_digits(s, 4, &y) || s[4] != '-' || !ticket_digits(s + 5, 2, &mo) ||
	    s[7] != '-' || !ticket_digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
	    !ticket_digits(s + 11, 2, &h) || s[13] != ':' || !ticket_digits(s + 14, 2, &mi) ||
	    s[16] != ':' || !ticket_digits(s + 17, 2, &sec))
		return false;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return false;
	if (s[i] == '.') {
		size_t f = ++i;

		while (s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == f || i - f > 9)
			return false;
	}
	if ((s[i] == 'Z' || s[i] == 'z') && s[i + 1] == '\0')
		return true;
	if ((s[i] == '+' || s[i] == '-') && strlen(s + i) == 6 &&
	    ticket_digits(s + i + 1, 2, &oh) && s[i + 3] == ':' && ticket_digits(s + i + 4, 2, &om))
		return oh <= 23 && om <= 59;
	return false;
}

/* ================================ refs ================================== */

int ticket_ref_format(const char *slug, long long number, char *out, size_t out_len)
{
	size_t i, n = strlen(slug);
	int w;

	if (n == 0 || number <= 0 || n + 2 > out_len)
		return -1;
	for (i = 0; i < n; i++)
		out[i] = (char)toupper((unsigned char)slug[i]);
	w = snprintf(out + n, out_len - n, "-%lld", number);
	if (w < 0 || (size_t)w >= out_len - n)
		return -1;
	return 0;
}

int ticket_ref_parse(const char *ref, char *slug, size_t slug_len, long long *number_r)
{
	const char *dash = strrchr(ref, '-');
	long long number = 0;
	size_t n, i;

	if (dash == NULL || dash == ref || dash[1] == '\0' || strlen(dash + 1) > 15)
		return -1;
	for (i = 1; dash[i] != '\0'; i++) {
		if (dash[i] < '0' || dash[i] > '9')
			return -1;
		number = number * 10 + (dash[i] - '0');
	}
	n = (size_t)(dash - ref);
	if (number <= 0 || n < 3 || n > 40 || n + 1 > slug_len)
		return -1;
	for (i = 0; i < n; i++) {
		char c = (char)tolower((unsigned char)ref[i]);

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return -1;
		slug[i] = c;
	}
	slug[n] = '\0';
	*number_r = number;
	return 0;
}

/* ============================== cursors ================================= */

static const char ticket_b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int ticket_cursor_encode(char kind, long long position, char out[TICKET_CURSOR_LEN + 1])
{
	uint8_t b[9];
	size_t i, o = 0;

	if (position <= 0)
		return -1;
	b[0] = (uint8_t)kind;
	for (i = 0; i < 8; i++)
		b[1 + i] = (uint8_t)((unsigned long long)position >> (56 - 8 * i));
	for (i = 0; i < 9; i += 3) {
		uint32_t v = (uint32_t)b[i] << 16 | (uint32_t)b[i + 1] << 8 | b[i + 2];

		out[o++] = ticket_b64url[v >> 18 & 63];
		out[o++] = ticket_b64url[v >> 12 & 63];
		out[o++] = ticket_b64url[v >> 6 & 63];
		out[o++] = ticket_b64url[v & 63];
	}
	out[o] = '\0';
	return 0;
}

int ticket_cursor_decode(const char *cursor, char kind, long long *position_r)
{
	uint8_t b[9];
	unsigned long long pos = 0;
	size_t i;

	if (cursor == NULL || strlen(cursor) != TICKET_CURSOR_LEN)
		return -1;
	for (i = 0; i < TICKET_CURSOR_LEN; i += 4) {
		uint32_t v = 0;

		for (size_t k = 0; k < 4; k++) {
			const char *p =
			    cursor[i + k] != '\0' ? strchr(ticket_b64url, cursor[i + k]) : NULL;
			if (p == NULL)
				return -1;
			v = v << 6 | (uint32_t)(p - ticket_b64url);
		}
		b[i / 4 * 3] = (uint8_t)(v >> 16);
		b[i / 4 * 3 + 1] = (uint8_t)(v >> 8);
		b[i / 4 * 3 + 2] = (uint8_t)v;
	}
	if (b[0] != (uint8_t)kind)
		return -1;
	for (i = 0; i < 8; i++)
		pos = pos << 8 | b[1 + i];
	if (pos == 0 || pos > (unsigned long long)INT64_MAX)
		return -1;
	*position_r = (long long)pos;
	return 0;
}

/* ============================ attachments =============================== */

/* Does data start with magic? */
static bool ticket_magic(const uint8_t *data, size_t len, const void *magic, size_t n)
{
	return len >= n && memcmp(data, magic, n) == 0;
}

const char *ticket_sniff(const uint8_t *data, size_t len)
{
	size_t i;

	if (ticket_magic(data, len, "\x89PNG\r\n\x1a\n", 8))
		return "image/png";
	if (ticket_magic(data, len, "\xff\xd8\xff", 3))
		return "image/jpeg";
	if (ticket_magic(data, len, "GIF87a", 6) || ticket_magic(data, len, "GIF89a", 6))
		return "image/gif";
	if (len >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0)
		return "image/webp";
	if (ticket_magic(data, len, "%PDF-", 5))
		return "application/pdf";
	if (ticket_magic(data, len, "PK\x03\x04", 4) || ticket_magic(data, len, "PK\x05\x06", 4))
		return "application/zip";
	if (ticket_magic(data, len, "\x1f\x8b", 2))
		return "application/gzip";
	/* Text: valid UTF-8 without NUL or control characters other than whitespace.
	 * HTML, SVG and scripts are text too and get text/plain: served as an
	 * attachment with nosniff, they can never run in a Ward origin. */
	if (len > 0 && ticket_utf8_valid((const char *)data, len, NULL)) {
		for (i = 0; i < len; i++) {
			uint8_t c = data[i];

			if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f') ||
			    c == 0x7f)
				break;
		}
		if (i == len)
			return "text/plain";
	}
	return "application/octet-stream";
}

void ticket_filename_clean(const char *in, char *out)
{
	const char *base = in, *p;
	size_t o = 0, i, n, chars;

	for (p = in; *p != '\0'; p++)
		if (*p == '/' || *p == '\\')
			base = p + 1;
	n = strlen(base);
	for (i = 0; i < n && o < TICKET_FILENAME_MAX;) {
		unsigned char c = (unsigned char)base[i];
		size_t cl = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;

		if (c < 0x20 || c == 0x7f || c == '"') {
			i++;
			continue; /* dropped: control characters and quotes */
		}
		if (o + cl > TICKET_FILENAME_MAX)
			break;
		if (i + cl > n || !ticket_utf8_valid(base + i, cl, &chars)) {
			i++; /* a broken sequence: skip its byte */
			continue;
		}
		memcpy(out + o, base + i, cl);
		o += cl;
		i += cl;
	}
	out[o] = '\0';
	/* Leading dots would make a hidden or relative name. */
	for (i = 0; out[i] == '.' || out[i] == ' '; i++)
		;
	if (i > 0)
		memmove(out, out + i, o - i + 1);
	if (out[0] == '\0')
		snprintf(out, TICKET_FILENAME_MAX + 1, "attachment");
}
