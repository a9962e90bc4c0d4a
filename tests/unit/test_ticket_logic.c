/*
 * test_ticket_logic — ward-ticket's pure rules against good and hostile input:
 * UTF-8 and text checks, the status workflow, priorities, ids, emails, times,
 * human refs, list cursors (round trip, tampering, another list's cursor),
 * attachment sniffing (never a type a browser runs) and file names.
 *
 * services/ticket/ is not in libward.a, so the module is compiled in here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../services/ticket/ticket_logic.c"

static int utf8(const char *s)
{
	return ticket_utf8_valid(s, strlen(s), NULL);
}

static void test_utf8(void **state)
{
	size_t chars = 0;

	assert_true(utf8("plain ascii"));
	assert_true(ticket_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15, &chars));
	assert_int_equal(chars, 9);
	assert_true(utf8(""));
	assert_false(utf8("\xc0\xaf"));		/* overlong '/' */
	assert_false(utf8("\xe0\x80\xaf"));	/* overlong, 3 bytes */
	assert_false(utf8("\xf0\x80\x80\xaf")); /* overlong, 4 bytes */
	assert_false(utf8("\xed\xa0\x80"));	/* surrogate U+D800 */
	assert_false(utf8("\xf4\x90\x80\x80")); /* U+110000 */
	assert_false(utf8("\xf5\x80\x80\x80"));
	assert_false(utf8("\x80"));    /* lone continuation */
	assert_false(utf8("abc\xc3")); /* truncated at the end */
	assert_false(utf8("\xe2\x82"));
	assert_false(utf8("\xc3\x28")); /* bad continuation */
	assert_false(utf8("\xff"));
}

static void test_text(void **state)
{
	size_t chars;

	assert_true(ticket_text_ok("line 1\r\nline 2\tx", 16, false, &chars));
	assert_false(ticket_text_ok("line 1\nline 2", 13, true, &chars));
	assert_false(ticket_text_ok("nul\0inside", 10, false, &chars));
	assert_false(ticket_text_ok("bell\a", 5, false, &chars));
	assert_false(ticket_text_ok("del\x7f", 4, false, &chars));
	assert_false(ticket_text_ok("esc\x1b[31m", 8, true, &chars));
	/* HTML is text: stored as is, escaped by whoever renders it. */
	assert_true(ticket_text_ok("<script>alert(1)</script>", 25, true, &chars));
	assert_int_equal(chars, 25);
}

static void test_status_workflow(void **state)
{
	enum ticket_status to;

	assert_int_equal(ticket_status_parse("open"), TS_OPEN);
	assert_int_equal(ticket_status_parse("pending"), TS_PENDING);
	assert_int_equal(ticket_status_parse("resolved"), TS_RESOLVED);
	assert_int_equal(ticket_status_parse("closed"), TS_CLOSED);
	assert_int_equal(ticket_status_parse("Open"), TS_INVALID);
	assert_int_equal(ticket_status_parse(""), TS_INVALID);
	assert_int_equal(ticket_status_parse(NULL), TS_INVALID);
	assert_string_equal(ticket_status_name(TS_RESOLVED), "resolved");
	assert_string_equal(ticket_status_name(TS_INVALID), "invalid");

	/* Forward along the workflow. */
	assert_true(ticket_status_transition_ok(TS_OPEN, TS_PENDING));
	assert_true(ticket_status_transition_ok(TS_PENDING, TS_RESOLVED));
	assert_true(ticket_status_transition_ok(TS_OPEN, TS_RESOLVED));
	assert_true(ticket_status_transition_ok(TS_RESOLVED, TS_CLOSED));
	/* Back: reopen. */
	assert_true(ticket_status_transition_ok(TS_PENDING, TS_OPEN));
	assert_true(ticket_status_transition_ok(TS_RESOLVED, TS_OPEN));
	/* No shortcut to closed, nothing out of closed. */
	assert_false(ticket_status_transition_ok(TS_OPEN, TS_CLOSED));
	assert_false(ticket_status_transition_ok(TS_PENDING, TS_CLOSED));
	assert_false(ticket_status_transition_ok(TS_CLOSED, TS_OPEN));
	assert_false(ticket_status_transition_ok(TS_CLOSED, TS_RESOLVED));
	assert_false(ticket_status_transition_ok(TS_RESOLVED, TS_PENDING));
	assert_true(ticket_status_transition_ok(TS_CLOSED, TS_CLOSED));
	assert_false(ticket_status_transition_ok(TS_INVALID, TS_OPEN));
	assert_false(ticket_status_transition_ok(TS_OPEN, (enum ticket_status)7));

	/* A customer's reply reopens; an agent's leaves the status alone. */
	assert_int_equal(ticket_status_after_reply(TS_PENDING, true, &to), 0);
	assert_int_equal(to, TS_OPEN);
	assert_int_equal(ticket_status_after_reply(TS_RESOLVED, true, &to), 0);
	assert_int_equal(to, TS_OPEN);
	assert_int_equal(ticket_status_after_reply(TS_OPEN, true, &to), 0);
	assert_int_equal(to, TS_OPEN);
	assert_int_equal(ticket_status_after_reply(TS_PENDING, false, &to), 0);
	assert_int_equal(to, TS_PENDING);
	assert_int_equal(ticket_status_after_reply(TS_CLOSED, true, &to), -1);
	assert_int_equal(ticket_status_after_reply(TS_CLOSED, false, &to), -1);
}

static void test_values(void **state)
{
	char e[TICKET_EMAIL_MAX + 1];

	assert_true(ticket_priority_valid("low"));
	assert_true(ticket_priority_valid("urgent"));
	assert_false(ticket_priority_valid("URGENT"));
	assert_false(ticket_priority_valid(""));
	assert_false(ticket_priority_valid(NULL));

	assert_true(ticket_uuid_valid("0b7c7d1e-3f2a-4b5c-8d9e-0123456789ab"));
	assert_false(ticket_uuid_valid("0B7C7D1E-3F2A-4B5C-8D9E-0123456789AB"));
	assert_false(ticket_uuid_valid("0b7c7d1e3f2a4b5c8d9e0123456789ab"));
	assert_false(ticket_uuid_valid("0b7c7d1e-3f2a-4b5c-8d9e-0123456789a"));
	assert_false(ticket_uuid_valid("0b7c7d1e-3f2a-4b5c-8d9e-0123456789abc"));
	assert_false(ticket_uuid_valid("' OR 1=1 --"));
	assert_false(ticket_uuid_valid(""));
	assert_false(ticket_uuid_valid(NULL));

	assert_true(ticket_email_normalize("Jane.Doe@Example.COM", e, sizeof e));
	assert_string_equal(e, "jane.doe@example.com");
	assert_false(ticket_email_normalize("no-at-sign", e, sizeof e));
	assert_false(ticket_email_normalize("a@b@c.com", e, sizeof e));
	assert_false(ticket_email_normalize("@example.com", e, sizeof e));
	assert_false(ticket_email_normalize("a@example", e, sizeof e));
	assert_false(ticket_email_normalize("a@.example.com", e, sizeof e));
	assert_false(ticket_email_normalize("a b@example.com", e, sizeof e));
	assert_false(ticket_email_normalize("a@example.com\r\nBcc: x@y.z", e, sizeof e));
	assert_false(ticket_email_normalize("<a@example.com>", e, sizeof e));

	assert_true(ticket_time_valid("2024-05-01T12:00:00Z"));
	assert_true(ticket_time_valid("2024-05-01T12:00:00.123456Z"));
	assert_true(ticket_time_valid("2024-05-01T12:00:00+02:00"));
	assert_false(ticket_time_valid("2024-05-01"));
	assert_false(ticket_time_valid("2024-05-01 12:00:00Z"));
	assert_false(ticket_time_valid("2024-13-01T12:00:00Z"));
	assert_false(ticket_time_valid("2024-05-01T25:00:00Z"));
	assert_false(ticket_time_valid("2024-05-01T12:00:00"));
	assert_false(ticket_time_valid("2024-05-01T12:00:00.Z"));
	assert_false(ticket_time_valid("2024-05-01T12:00:00Z'; DROP TABLE x"));
	assert_false(ticket_time_valid("now"));
	assert_false(ticket_time_valid(NULL));
}

static void test_ref(void **state)
{
	char ref[64], slug[48];
	long long n = 0;

	assert_int_equal(ticket_ref_format("acme", 1042, ref, sizeof ref), 0);
	assert_string_equal(ref, "ACME-1042");
	assert_int_equal(ticket_ref_format("acme-eu-2", 1001, ref, sizeof ref), 0);
	assert_string_equal(ref, "ACME-EU-2-1001");
	assert_int_equal(ticket_ref_format("acme", 0, ref, sizeof ref), -1);
	assert_int_equal(ticket_ref_format("acme", 1042, ref, 8), -1); /* does not fit */
	assert_int_equal(ticket_ref_format("acme", 1042, ref, 10), 0);

	assert_int_equal(ticket_ref_parse("ACME-1042", slug, sizeof slug, &n), 0);
	assert_string_equal(slug, "acme");
	assert_int_equal(n, 1042);
	assert_int_equal(ticket_ref_parse("ACME-EU-2-1001", slug, sizeof slug, &n), 0);
	assert_string_equal(slug, "acme-eu-2");
	assert_int_equal(n, 1001);
	assert_int_equal(ticket_ref_parse("ACME", slug, sizeof slug, &n), -1);
	assert_int_equal(ticket_ref_parse("ACME-", slug, sizeof slug, &n), -1);
	assert_int_equal(ticket_ref_parse("-1042", slug, sizeof slug, &n), -1);
	assert_int_equal(ticket_ref_parse("AB-1042", slug, sizeof slug, &n), -1); /* slug < 3 */
	assert_int_equal(ticket_ref_parse("ACME-10x2", slug, sizeof slug, &n), -1);
	assert_int_equal(ticket_ref_parse("AC ME-1042", slug, sizeof slug, &n), -1);
	assert_int_equal(ticket_ref_parse("ACME-0", slug, sizeof slug, &n), -1);
	assert_int_equal(ticket_ref_parse("ACME-99999999999999999999", slug, sizeof slug, &n), -1);
}

static void test_cursor(void **state)
{
	char c[TICKET_CURSOR_LEN + 1], bad[TICKET_CURSOR_LEN + 1];
	long long pos = 0;
	const long long samples[] = {1, 1001, 65535, 1LL << 40, INT64_MAX};

	for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
		assert_int_equal(ticket_cursor_encode('t', samples[i], c), 0);
		assert_int_equal(strlen(c), TICKET_CURSOR_LEN);
		assert_int_equal(strspn(c, ticket_b64url), TICKET_CURSOR_LEN); /* URL-safe */
		assert_int_equal(ticket_cursor_decode(c, 't', &pos), 0);
		assert_int_equal(pos, samples[i]);
		/* A message cursor is no ticket cursor. */
		assert_int_equal(ticket_cursor_decode(c, 'm', &pos), -1);
	}
	assert_int_equal(ticket_cursor_encode('t', 0, c), -1);
	assert_int_equal(ticket_cursor_encode('t', -5, c), -1);
	assert_int_equal(ticket_cursor_encode('t', 1042, c), 0);
	/* Tampering: another alphabet, truncation, extension, padding. */
	memcpy(bad, c, sizeof bad);
	bad[3] = '+';
	assert_int_equal(ticket_cursor_decode(bad, 't', &pos), -1);
	bad[3] = '=';
	assert_int_equal(ticket_cursor_decode(bad, 't', &pos), -1);
	assert_int_equal(ticket_cursor_decode("dAAAAAAAAAQS", 'm', &pos), -1);
	assert_int_equal(ticket_cursor_decode("dAAAAAAAAAAA", 't', &pos), -1); /* position 0 */
	assert_int_equal(ticket_cursor_decode("dAAAAAAAAAQ", 't', &pos), -1);
	assert_int_equal(ticket_cursor_decode("dAAAAAAAAAQSA", 't', &pos), -1);
	assert_int_equal(ticket_cursor_decode("", 't', &pos), -1);
	assert_int_equal(ticket_cursor_decode(NULL, 't', &pos), -1);
	/* Negative positions (high bit set) are refused. */
	assert_int_equal(ticket_cursor_decode("dP__________", 't', &pos), -1);
}

static void test_sniff(void **state)
{
	static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0};
	static const uint8_t jpeg[] = {0xff, 0xd8, 0xff, 0xe0, 0};
	static const uint8_t zip[] = {'P', 'K', 3, 4, 0};
	static const uint8_t gz[] = {0x1f, 0x8b, 8, 0};
	static const uint8_t bin[] = {0, 1, 2, 3, 0xfe, 0xff};
	const char *html = "<!DOCTYPE html><html><script>alert(1)</script></html>";
	const char *svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"alert(1)\"/>";

	assert_string_equal(ticket_sniff(png, sizeof png), "image/png");
	assert_string_equal(ticket_sniff(jpeg, sizeof jpeg), "image/jpeg");
	assert_string_equal(ticket_sniff((const uint8_t *)"GIF89a....", 10), "image/gif");
	assert_string_equal(ticket_sniff((const uint8_t *)"RIFF\0\0\0\0WEBPVP8 ", 16),
			    "image/webp");
	assert_string_equal(ticket_sniff((const uint8_t *)"%PDF-1.7\n", 9), "application/pdf");
	assert_string_equal(ticket_sniff(zip, sizeof zip), "application/zip");
	assert_string_equal(ticket_sniff(gz, sizeof gz), "application/gzip");
	assert_string_equal(ticket_sniff(bin, sizeof bin), "application/octet-stream");
	/* What a browser would run is plain text, whatever the client says. */
	assert_string_equal(ticket_sniff((const uint8_t *)html, strlen(html)), "text/plain");
	assert_string_equal(ticket_sniff((const uint8_t *)svg, strlen(svg)), "text/plain");
	assert_string_equal(ticket_sniff((const uint8_t *)"hello\nworld\n", 12), "text/plain");
	/* Invalid UTF-8 or control bytes: not text. */
	assert_string_equal(ticket_sniff((const uint8_t *)"caf\xe9", 4),
			    "application/octet-stream");
	assert_string_equal(ticket_sniff((const uint8_t *)"a\x01z", 3), "application/octet-stream");
	assert_string_equal(ticket_sniff((const uint8_t *)"", 0), "application/octet-stream");
	/* A truncated magic is not that type. */
	assert_string_equal(ticket_sniff(png, 4), "application/octet-stream");
}

static void test_filename(void **state)
{
	char out[TICKET_FILENAME_MAX + 1], big[600];

	ticket_filename_clean("report.pdf", out);
	assert_string_equal(out, "report.pdf");
	ticket_filename_clean("../../etc/passwd", out);
	assert_string_equal(out, "passwd");
	ticket_filename_clean("C:\\Users\\x\\secret.docx", out);
	assert_string_equal(out, "secret.docx");
	ticket_filename_clean("a\r\nX-Evil: 1\".txt", out); /* no header injection */
	assert_string_equal(out, "aX-Evil: 1.txt");
	ticket_filename_clean("x/text/html", out);
	assert_string_equal(out, "html");
	ticket_filename_clean("..", out);
	assert_string_equal(out, "attachment");
	ticket_filename_clean(".hidden", out);
	assert_string_equal(out, "hidden");
	ticket_filename_clean("", out);
	assert_string_equal(out, "attachment");
	ticket_filename_clean("dir/", out);
	assert_string_equal(out, "attachment");
	ticket_filename_clean("r\xc3\xa9sum\xc3\xa9.pdf", out);
	assert_string_equal(out, "r\xc3\xa9sum\xc3\xa9.pdf");
	ticket_filename_clean("bad\xc3(utf8\xff.txt", out);
	assert_true(ticket_utf8_valid(out, strlen(out), NULL));
	assert_string_equal(out, "bad(utf8.txt");
	/* Long names are cut at a character boundary within the limit. */
	memset(big, 0, sizeof big);
	for (size_t i = 0; i + 2 < 599; i += 2)
		memcpy(big + i, "\xc3\xa9", 2);
	big[0] = 'x'; /* odd offset: the cut must not split a character */
	big[1] = 'y';
	ticket_filename_clean(big, out);
	assert_true(strlen(out) <= TICKET_FILENAME_MAX);
	assert_true(ticket_utf8_valid(out, strlen(out), NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_utf8),
	    cmocka_unit_test(test_text),
	    cmocka_unit_test(test_status_workflow),
	    cmocka_unit_test(test_values),
	    cmocka_unit_test(test_ref),
	    cmocka_unit_test(test_cursor),
	    cmocka_unit_test(test_sniff),
	    cmocka_unit_test(test_filename),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
