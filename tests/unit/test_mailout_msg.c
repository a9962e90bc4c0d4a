/*
 * test_mailout_msg — the mail ward-mail-out writes, and the relay replies it
 * reads, against good and hostile input: headers (RFC 5322), the subject in
 * RFC 2047 words read back by another MIME library (GMime), header injection
 * through CR/LF in the subject, display name, addresses or Message-IDs (refused,
 * nothing built), the body's base64 round trip, line lengths, dot-stuffing, and
 * the strict SMTP reply parser (multi-line, mixed codes, bare LF, overlong).
 *
 * services/mail-out/ is not in libward.a, so its modules are compiled in here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <gmime/gmime.h>

#include "../../services/mail-out/mailout_msg.c"
#include "../../services/mail-out/mailout_smtp.c"

static struct mailout_mail good(void)
{
	struct mailout_mail m = {
	    .message_id = "<0123456789abcdef0123456789abcdef01234567@acme.eu.localhost>",
	    .from_email = "support@acme.eu.localhost",
	    .from_name = "Acme Support",
	    .to_email = "alice@example.com",
	    .subject = "Re: [#ACME-1001] Printer on fire",
	    .body = "Hello,\n.dot at the start\nbye\n",
	    .in_reply_to = "",
	    .date_ms = 1700000000000LL,
	};
	return m;
}

/* Parse msg with GMime (another implementation): the message, or NULL. */
static GMimeMessage *parse(const char *msg, size_t len)
{
	GMimeStream *s = g_mime_stream_mem_new_with_buffer(msg, len);
	GMimeParser *p = g_mime_parser_new_with_stream(s);
	GMimeMessage *m = g_mime_parser_construct_message(p, NULL);

	g_object_unref(p);
	g_object_unref(s);
	return m;
}

/* Every line of out ends CRLF and is at most 78 bytes. */
static void lines_ok(const char *out)
{
	for (const char *p = out, *e; *p != '\0'; p = e + 2) {
		e = strstr(p, "\r\n");
		assert_non_null(e);
		assert_true(e - p <= 78);
		assert_null(memchr(p, '\n', (size_t)(e - p)));
	}
}

static void test_headers(void **state)
{
	struct mailout_mail m = good();
	const char *err = NULL;
	char *out = NULL;
	size_t len = 0;

	assert_int_equal(mailout_msg_build(&m, &out, &len, &err), 0);
	assert_non_null(strstr(out, "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
	assert_non_null(strstr(out, "\r\nFrom: Acme Support <support@acme.eu.localhost>\r\n"));
	assert_non_null(strstr(out, "\r\nTo: alice@example.com\r\n"));
	assert_non_null(strstr(out, "\r\nSubject: Re: [#ACME-1001] Printer on fire\r\n"));
	assert_non_null(strstr(out, "\r\nMessage-ID: <0123456789abcdef"));
	assert_non_null(strstr(out, "\r\nMIME-Version: 1.0\r\n"));
	assert_non_null(strstr(out, "\r\nContent-Type: text/plain; charset=utf-8\r\n"));
	assert_non_null(strstr(out, "\r\nContent-Transfer-Encoding: base64\r\n\r\n"));
	assert_null(strstr(out, "In-Reply-To"));
	lines_ok(out);
	free(out);
}

static void test_gmime_roundtrip(void **state)
{
	struct mailout_mail m = good();
	const char *err = NULL;
	char *out = NULL, *subj;
	size_t len = 0;
	GMimeMessage *g;
	GMimeObject *part;
	GMimeDataWrapper *w;
	GMimeStream *mem;
	GByteArray *arr;
	char long_subject[400];

	/* long, non-ASCII: several encoded words, folded, read back whole */
	snprintf(long_subject, sizeof long_subject,
		 "Re: [#ACME-1001] Imprimante en feu \xc3\xa9\xc3\xa9\xc3\xa9 \xe2\x82\xac "
		 "\xf0\x9f\x94\xa5 %s",
		 "encore et encore et encore et encore et encore et encore et encore la m\xc3\xaame");
	m.subject = long_subject;
	m.from_name = "Acme \xc3\x89quipe \"support\" <x@y>";
	m.in_reply_to = "<abc@example.com>";
	m.body = "Bonjour \xc3\xa9\n\n.\n..\nfin";
	assert_int_equal(mailout_msg_build(&m, &out, &len, &err), 0);
	lines_ok(out); /* encoded words folded, the address folded after a long name */
	g = parse(out, len);
	assert_non_null(g);
	subj = (char *)g_mime_message_get_subject(g);
	assert_string_equal(subj, long_subject);
	assert_string_equal(g_mime_message_get_message_id(g),
			    "0123456789abcdef0123456789abcdef01234567@acme.eu.localhost");
	{
		InternetAddressList *from = g_mime_message_get_from(g);
		InternetAddress *a = internet_address_list_get_address(from, 0);

		assert_int_equal(internet_address_list_length(from), 1);
		assert_string_equal(internet_address_get_name(a), "Acme \xc3\x89quipe \"support\" <x@y>");
		assert_string_equal(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a)),
				    "support@acme.eu.localhost");
	}
	assert_string_equal(g_mime_object_get_header(GMIME_OBJECT(g), "In-Reply-To"),
			    "<abc@example.com>");
	part = g_mime_message_get_mime_part(g);
	assert_true(GMIME_IS_PART(part));
	w = g_mime_part_get_content(GMIME_PART(part));
	mem = g_mime_stream_mem_new();
	g_mime_data_wrapper_write_to_stream(w, mem);
	arr = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
	assert_int_equal(arr->len, strlen("Bonjour \xc3\xa9\r\n\r\n.\r\n..\r\nfin"));
	assert_memory_equal(arr->data, "Bonjour \xc3\xa9\r\n\r\n.\r\n..\r\nfin", arr->len);
	g_object_unref(mem);
	g_object_unref(g);
	free(out);
}

static void test_injection_refused(void **state)
{
	static const char *const subjects[] = {
	    "Hello\r\nBcc: victim@example.com", "Hello\nBcc: victim@example.com",
	    "Hello\rBcc: x@y.z",		 "tab\tis a control too",
	    "nul-free but \x7f",		 "C1 \xc2\x85 next line",
	    "line sep \xe2\x80\xa8",		 "bad utf-8 \xc3\x28",
	};
	static const char *const addrs[] = {
	    "alice@example.com\r\nBcc: x@y.z", "alice@example.com>", "<alice@example.com",
	    "alice@example.com, bob@example.com", "alice example.com", "alice@@example.com",
	    "@example.com", "alice@", "alice@example", "al\"ice@example.com", "",
	};
	static const char *const ids[] = {
	    "<x@y>\r\nBcc: x@y.z", "x@y", "<x y@z>", "<@y>", "<x@>", "<x@y@z>", "<>",
	};
	const char *err;
	char *out;
	size_t len;

	for (size_t i = 0; i < sizeof subjects / sizeof subjects[0]; i++) {
		struct mailout_mail m = good();

		m.subject = subjects[i];
		out = (char *)1;
		err = NULL;
		assert_int_equal(mailout_msg_build(&m, &out, &len, &err), -1);
		assert_null(out);
		assert_non_null(err);
		m = good();
		m.from_name = subjects[i];
		assert_int_equal(mailout_msg_build(&m, &out, &len, &err), -1);
	}
	for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
		struct mailout_mail m = good();

		m.to_email = addrs[i];
		assert_int_equal(mailout_msg_build(&m, &out, &len, &err), -1);
		m = good();
		m.from_email = addrs[i];
		assert_int_equal(mailout_msg_build(&m, &out, &len, &err), -1);
		assert_false(mailout_addr_ok(addrs[i]));
	}
	for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
		struct mailout_mail m = good();

		m.message_id = ids[i];
		assert_int_equal(mailout_msg_build(&m, &out, &len, &err), -1);
		m = good();
		m.in_reply_to = ids[i];
		assert_int_equal(mailout_msg_build(&m, &out, &len, &err), -1);
	}
	/* the body is free text (CR/LF fine), but must be UTF-8 */
	{
		struct mailout_mail m = good();

		m.body = "ok\r\nBcc: not a header, inside base64\r\n";
		assert_int_equal(mailout_msg_build(&m, &out, &len, &err), 0);
		assert_null(strstr(out, "Bcc"));
		free(out);
		m.body = "\xff\xfe";
		assert_int_equal(mailout_msg_build(&m, &out, &len, &err), -1);
	}
}

static void test_dotstuff(void **state)
{
	const char *err = NULL;
	char *out = NULL;
	size_t len = 0;
	char *big;

	assert_int_equal(mailout_msg_dotstuff("a\r\n.b\r\n..\r\n.\r\nc", 15, &out, &len, &err), 0);
	assert_string_equal(out, "a\r\n..b\r\n...\r\n..\r\nc\r\n.\r\n");
	free(out);
	assert_int_equal(mailout_msg_dotstuff("", 0, &out, &len, &err), 0);
	assert_string_equal(out, ".\r\n");
	free(out);
	assert_int_equal(mailout_msg_dotstuff("a\nb", 3, &out, &len, &err), -1);
	assert_int_equal(mailout_msg_dotstuff("a\rb", 3, &out, &len, &err), -1);
	big = malloc(1001);
	memset(big, 'x', 999);
	big[999] = '\0';
	assert_int_equal(mailout_msg_dotstuff(big, 999, &out, &len, &err), -1);
	assert_int_equal(mailout_msg_dotstuff(big, 998, &out, &len, &err), 0);
	free(out);
	free(big);
}

static void test_reply_parse(void **state)
{
#define P(s) mailout_smtp_reply_parse(s, strlen(s))
	assert_int_equal(P("220 relay ESMTP\r\n"), 220);
	assert_int_equal(P("250\r\n"), 250);
	assert_int_equal(P("250-relay\r\n250-STARTTLS\r\n250 8BITMIME\r\n"), 250);
	assert_int_equal(P("451 4.3.0 try later\r\n"), 451);
	assert_int_equal(P("554 5.7.1 no\r\n"), 554);
	assert_int_equal(P("250-a\r\n251 b\r\n"), -1);	   /* mixed codes */
	assert_int_equal(P("250 ok\n"), -1);		   /* bare LF */
	assert_int_equal(P("250 ok"), -1);		   /* unterminated */
	assert_int_equal(P("250-ok\r\n"), -1);		   /* no last line */
	assert_int_equal(P("25 ok\r\n"), -1);		   /* two digits */
	assert_int_equal(P("650 ok\r\n"), -1);		   /* no such class */
	assert_int_equal(P("2x0 ok\r\n"), -1);
	assert_int_equal(P("250Xok\r\n"), -1);
	assert_int_equal(P("250 ok\r\n250 again\r\n"), -1); /* two replies */
	assert_int_equal(P("250 a\x01 b\r\n"), -1);	   /* control character */
	{
		char line[600];

		memset(line, 'a', sizeof line);
		memcpy(line, "250 ", 4);
		memcpy(line + 590, "\r\n", 3);
		assert_int_equal(mailout_smtp_reply_parse(line, 592), -1); /* > 512 */
	}
#undef P
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_headers),	      cmocka_unit_test(test_gmime_roundtrip),
	    cmocka_unit_test(test_injection_refused), cmocka_unit_test(test_dotstuff),
	    cmocka_unit_test(test_reply_parse),
	};

	g_mime_init();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
