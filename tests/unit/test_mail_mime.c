/*
 * test_mail_mime — ward-mail-ingest's MIME extraction (mail_mime.c): text
 * selection, charsets, encoded words, attachments and their limits, nested
 * messages, threading headers, quoted history, loop rules, and every message of
 * the shared real-world corpus (../shared/corpora/mail) parsed or refused cleanly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <unistd.h>

#include "../../services/mail-ingest/mail_mime.c"

static struct mail_limits lim;

/* Parse a message given as a C string (LF line ends, as clients often send). */
static enum mail_verdict parse(const char *m, const char *env_from, Ward__MailIngestRequest **req,
			       const char **reason, const char **code)
{
	return mail_parse(m, strlen(m), env_from, &lim, req, reason, code);
}

static void test_plain(void **state)
{
	Ward__MailIngestRequest *req;
	const char *reason, *code;

	(void)state;
	assert_int_equal(parse("From: Alice <Alice@Example.COM>\r\nTo: support@acme.eu.localhost\r\n"
			       "Subject: Printer broken\r\nMessage-ID: <abc@example.com>\r\n"
			       "Cc: bob@example.com, Carol <carol@example.org>\r\n\r\n"
			       "It does not print.\r\n",
			       "alice@example.com", &req, &reason, &code),
			 MAIL_ACCEPT);
	assert_string_equal(req->from_email, "alice@example.com");
	assert_string_equal(req->from_name, "Alice");
	assert_string_equal(req->subject, "Printer broken");
	assert_string_equal(req->message_id, "<abc@example.com>");
	assert_string_equal(req->body, "It does not print.");
	assert_int_equal(req->n_cc, 2);
	assert_string_equal(req->cc[1], "carol@example.org");
	assert_int_equal(req->n_attachments, 0);
	mail_request_free(req);
}

static void test_alternative_prefers_plain(void **state)
{
	Ward__MailIngestRequest *req;
	const char *reason, *code;
	const char *m = "From: a@example.com\nSubject: alt\nMIME-Version: 1.0\n"
			"Content-Type: multipart/alternative; boundary=XX\n\n"
			"--XX\nContent-Type: text/html; charset=utf-8\n\n<p>HTML <b>version</b></p>\n"
			"--XX\nContent-Type: text/plain; charset=utf-8\n\nplain version\n--XX--\n";

	(void)state;
	assert_int_equal(parse(m, "a@example.com", &req, &reason, &code), MAIL_ACCEPT);
	assert_non_null(strstr(req->body, "plain version"));
	assert_null(strstr(req->body, "HTML"));
	mail_request_free(req);
}

static void test_html_only_is_safe_text(void **state)
{
	Ward__MailIngestRequest *req;
	const char *reason, *code;
	const char *m = "From: a@example.com\nSubject: html\nContent-Type: text/html\n\n"
			"<html><head><style>p{color:red}</style></head><body>"
			"<script>alert(1)</script><p>Hello &amp; welcome&#33;</p>"
			"<img src=x onerror=alert(2)>Bye &lt;3</body></html>\n";

	(void)state;
	assert_int_equal(parse(m, "a@example.com", &req, &reason, &code), MAIL_ACCEPT);
	assert_null(strstr(req->body, "<p"));
	assert_null(strstr(req->body, "<img"));
	assert_null(strstr(req->body, "alert"));
	assert_null(strstr(req->body, "color"));
	assert_non_null(strstr(req->body, "Hello & welcome!"));
	assert_non_null(strstr(req->body, "Bye <3"));
	mail_request_free(req);
}

static void test_charsets_and_encodings(void **state)
{
	Ward__MailIngestRequest *req;
	const char *reason, *code;
	/* RFC 2047 subject in ISO-8859-1 (Q) and a QP body in Windows-1252. */
	const char *m1 = "From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.com>\n"
			 "Subject: =?ISO-8859-1?Q?Caf=E9_cr=E8me?=\n"
			 "Content-Type: text/plain; charset=windows-1252\n"
			 "Content-Transfer-Encoding: quoted-printable\n\n"
			 "Prix: 5=80 =E0 payer=\n ensemble\n";
	/* Shift_JIS body in base64: "日本語" */
	const char *m2 = "From: jp@example.jp\nSubject: =?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=\n"
			 "Content-Type: text/plain; charset=Shift_JIS\n"
			 "Content-Transfer-Encoding: base64\n\n k/qWe4zq\n";
	/* GB2312 body: "中文" */
	const char *m3 = "From: cn@example.cn\nSubject: gb\n"
			 "Content-Type: text/plain; charset=GB2312\n"
			 "Content-Transfer-Encoding: base64\n\n1tDOxA==\n";

	(void)state;
	assert_int_equal(parse(m1, "andre@example.com", &req, &reason, &code), MAIL_ACCEPT);
	assert_string_equal(req->subject, "Café crème");
	assert_string_equal(req->from_name, "André");
	assert_non_null(strstr(req->body, "5€ à payer ensemble"));
	mail_request_free(req);
	assert_int_equal(parse(m2, "jp@example.jp", &req, &reason, &code), MAIL_ACCEPT);
	assert_string_equal(req->subject, "日本語");
	assert_non_null(strstr(req->body, "日本語"));
	mail_request_free(req);
	assert_int_equal(parse(m3, "cn@example.cn", &req, &reason, &code), MAIL_ACCEPT);
	assert_non_null(strstr(req->body, "中文"));
	mail_request_free(req);
}

/* Single-byte charsets beyond Latin-1: ISO-8859-2 (Polish), ISO-8859-15 (€ and œ
 * where ISO-8859-1 has ¤ and ½), Windows-1251 (Cyrillic); an RFC 2047 subject in
 * Windows-1251 too. */
static void test_more_charsets(void **state)
{
	Ward__MailIngestRequest *req;
	const char *reason, *code;
	const char *m1 = "From: pl@example.pl\nSubject: pl\n"
			 "Content-Type: text/plain; charset=ISO-8859-2\n"
			 "Content-Transfer-Encoding: quoted-printable\n\n"
			 "Za=BF=F3=B3=E6 g=EA=B6l=B1 ja=BC=F1\n";
	const char *m2 = "From: fr@example.fr\nSubject: fr\n"
			 "Content-Type: text/plain; charset=\"iso-8859-15\"\n"
			 "Content-Transfer-Encoding: quoted-printable\n\n"
			 "Prix 5=A4 =BDuvre\n";
	const char *m3 = "From: ru@example.ru\nSubject: =?windows-1251?B?z/Do4uXy?=\n"
			 "Content-Type: text/plain; charset=windows-1251\n"
			 "Content-Transfer-Encoding: base64\n\nz/Do4uXy\n";

	(void)state;
	assert_int_equal(parse(m1, "pl@example.pl", &req, &reason, &code), MAIL_ACCEPT);
	assert_string_equal(req->body, "Zażółć gęślą jaźń");
	mail_request_free(req);
	assert_int_equal(parse(m2, "fr@example.fr", &req, &reason, &code), MAIL_ACCEPT);
	assert_string_equal(req->body, "Prix 5€ œuvre");
	mail_request_free(req);
	assert_int_equal(parse(m3, "ru@example.ru", &req, &reason, &code), MAIL_ACCEPT);
	assert_string_equal(req->subject, "Привет");
	assert_string_equal(req->body, "Привет");
	mail_request_free(req);
}

/* RFC 2231 parameter continuations: a file name split in sections (filename*0*,
 * filename*1*, filename*2), percent-encoded UTF-8 with a charset on the first. */
static void test_rfc2231_continuation(void **state)
{
	Ward__MailIngestRequest *req;
	const char *reason, *code;
	const char *m = "From: a@example.com\nSubject: split name\n"
			"Content-Type: multipart/mixed; boundary=B\n\n"
			"--B\nContent-Type: text/plain\n\nsee attached\n"
			"--B\nContent-Type: application/pdf;\n"
			" name*0*=UTF-8''r%C3%A9sum;\n name*1*=%C3%A9%20long;\n name*2=\".pdf\"\n"
			"Content-Disposition: attachment;\n"
			" filename*0*=UTF-8''r%C3%A9sum;\n filename*1*=%C3%A9%20long;\n"
			" filename*2=\".pdf\"\n"
			"Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--B--\n";

	(void)state;
	assert_int_equal(parse(m, "a@example.com", &req, &reason, &code), MAIL_ACCEPT);
	assert_int_equal(req->n_attachments, 1);
	assert_string_equal(req->attachments[0]->filename, "résumé long.pdf");
	assert_int_equal(req->attachments[0]->content.len, 9);
	assert_memory_equal(req->attachments[0]->content.data, "%PDF-1.4\n", 9);
	assert_string_equal(req->body, "see attached");
	mail_request_free(req);
}

static void test_attachments_and_limits(void **state)
{
	Ward__MailIngestRequest *req;
	const char *reason, *code;
	const char *m = "From: a@example.com\nSubject: files\n"
			"Content-Type: multipart/mixed; boundary=B\n\n"
			"--B\nContent-Type: text/plain\n\nsee attached\n"
			"--B\nContent-Type: application/octet-stream\n"
			"Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.bin\n"
			"Content-Transfer-Encoding: base64\n\nAAECAwQF\n"
			"--B\nContent-Type: text/plain; name=\"=?UTF-8?B?bm90ZXMudHh0?=\"\n"
			"Content-Disposition: attachment\n\nnote text\n--B--\n";
	struct mail_limits small = lim;

	(void)state;
	assert_int_equal(parse(m, "a@example.com", &req, &reason, &code), MAIL_ACCEPT);
	assert_int_equal(req->n_attachments, 2);
	assert_string_equal(req->attachments[0]->filename, "résumé.bin");
	assert_int_equal(req->attachments[0]->content.len, 6);
	assert_int_equal(req->attachments[0]->content.data[5], 5);
	assert_string_equal(req->attachments[1]->filename, "notes.txt");
	assert_string_equal(req->body, "see attached");
	mail_request_free(req);
	small.max_attachments = 1;
	assert_int_equal(mail_parse(m, strlen(m), "a@example.com", &small, &req, &reason, &code),
			 MAIL_REFUSE);
	assert_null(req);
	assert_string_equal(code, "552 5.3.4 Too many attachments");
	small = lim;
	small.max_attachment_bytes = 5;
	assert_int_equal(mail_parse(m, strlen(m), "a@example.com", &small, &req, &reason, &code),
			 MAIL_REFUSE);
	assert_string_equal(code, "552 5.3.4 Attachment too large");
	small = lim;
	small.max_headers = 1;
	assert_int_equal(mail_parse(m, strlen(m), "a@example.com", &small, &req, &reason, &code),
			 MAIL_REFUSE);
	assert_string_equal(code, "552 5.3.4 Too many header fields");
}

static void test_nested_message(void **state)
{
	Ward__MailIngestRequest *req;
	const char *reason, *code;
	const char *m = "From: a@example.com\nSubject: fwd\n"
			"Content-Type: multipart/mixed; boundary=O\n\n"
			"--O\nContent-Type: text/plain\n\nforwarding this\n"
			"--O\nContent-Type: message/rfc822\n\n"
			"From: inner@example.net\nSubject: inner subject\n\ninner body\n--O--\n";

	(void)state;
	assert_int_equal(parse(m, "a@example.com", &req, &reason, &code), MAIL_ACCEPT);
	assert_non_null(strstr(req->body, "forwarding this"));
	assert_non_null(strstr(req->body, "----- attached message -----"));
	assert_non_null(strstr(req->body, "inner subject"));
	assert_non_null(strstr(req->body, "inner body"));
	mail_request_free(req);
}

static void test_threading_headers(void **state)
{
	Ward__MailIngestRequest *req;
	const char *reason, *code;
	char ref[64];

	(void)state;
	assert_int_equal(parse("From: a@example.com\nSubject: Re: [#ACME-1042] printer\n"
			       "In-Reply-To: <m2@ward>\nReferences: <m0@x> <m1@y> <m2@ward>\n\n"
			       "thanks\n\nOn Mon, 1 Jan 2024, Support <support@acme> wrote:\n"
			       "> old text\n",
			       "a@example.com", &req, &reason, &code),
			 MAIL_ACCEPT);
	assert_string_equal(req->subject_ref, "ACME-1042");
	assert_int_equal(req->n_references, 4);
	assert_string_equal(req->references[0], "<m2@ward>");
	assert_string_equal(req->references[2], "<m1@y>");
	assert_non_null(strstr(req->body, "thanks\n\n" MAIL_QUOTE_MARKER "\nOn Mon"));
	assert_non_null(strstr(req->body, "> old text"));
	/* no Message-ID: a stable synthesised one */
	assert_string_not_equal(req->message_id, "");
	assert_non_null(strstr(req->message_id, "@ward.invalid>"));
	mail_request_free(req);
	assert_int_equal(mail_subject_ref("no ref [#AB] [#-1] here", ref, sizeof ref), 0);
	assert_int_equal(mail_subject_ref("x [#demo-7] y", ref, sizeof ref), 1);
	assert_string_equal(ref, "demo-7");
}

static void test_quoted_variants(void **state)
{
	char *s;

	(void)state;
	s = mail_mark_quoted("new\n\nOn Tue, 2 Jan 2024 at 10:00, Bob <b@example.com>\nwrote:\n> a\n");
	assert_non_null(strstr(s, "new\n\n" MAIL_QUOTE_MARKER "\nOn Tue"));
	free(s);
	s = mail_mark_quoted("reply\n-----Original Message-----\nFrom: x\n");
	assert_non_null(strstr(s, "reply\n" MAIL_QUOTE_MARKER "\n-----Original"));
	free(s);
	s = mail_mark_quoted("top\n> quoted\n> more\n");
	assert_string_equal(s, "top\n" MAIL_QUOTE_MARKER "\n> quoted\n> more\n");
	free(s);
	s = mail_mark_quoted("nothing quoted\n");
	assert_string_equal(s, "nothing quoted\n");
	free(s);
}

static void test_loops(void **state)
{
	Ward__MailIngestRequest *req;
	const char *reason, *code;

	(void)state;
	assert_null(mail_loop_reason("a@example.com", "a@example.com", "no", NULL, NULL,
				     "text/plain"));
	assert_string_equal(mail_loop_reason("", "a@example.com", NULL, NULL, NULL, NULL),
			    "bounce: null sender");
	assert_string_equal(mail_loop_reason("MAILER-DAEMON@mx.example", NULL, NULL, NULL, NULL,
					     NULL),
			    "bounce: MAILER-DAEMON");
	assert_string_equal(mail_loop_reason("a@x.y", NULL, " auto-replied; x", NULL, NULL, NULL),
			    "Auto-Submitted");
	assert_string_equal(mail_loop_reason("a@x.y", NULL, NULL, "Bulk", NULL, NULL),
			    "Precedence");
	assert_null(mail_loop_reason("a@x.y", NULL, NULL, "first-class", NULL, NULL));
	assert_string_equal(mail_loop_reason("a@x.y", NULL, NULL, NULL, "yes", NULL),
			    "X-Autoreply");
	assert_string_equal(mail_loop_reason("a@x.y", NULL, NULL, NULL, NULL,
					     "multipart/report; report-type=delivery-status"),
			    "delivery report");
	assert_int_equal(parse("From: a@example.com\nSubject: Out of office\n"
			       "Auto-Submitted: auto-replied\n\naway\n",
			       "a@example.com", &req, &reason, &code),
			 MAIL_IGNORE);
	assert_null(req);
	assert_string_equal(reason, "Auto-Submitted");
	assert_int_equal(parse("From: a@example.com\nSubject: x\n\nbody\n", "", &req, &reason,
			       &code),
			 MAIL_IGNORE);
	/* no sender anywhere: refused, not a ticket for nobody */
	assert_int_equal(parse("Subject: x\n\nbody\n", "not-an-address", &req, &reason, &code),
			 MAIL_REFUSE);
	assert_string_equal(code, "554 5.1.7 No usable sender address");
}

static void test_malformed(void **state)
{
	Ward__MailIngestRequest *req = NULL;
	const char *reason, *code;
	GString *deep = g_string_new("From: a@example.com\nSubject: deep\n");
	enum mail_verdict v;
	static const char bin[] = "From: a@example.com\nSubject: \x01\xff\xfe bad\x7f\n\n"
				  "body with NUL\0after";

	(void)state;
	/* thousands of nested multiparts: refused before GMime recurses */
	for (int i = 0; i < 5000; i++)
		g_string_append_printf(deep, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n",
				       i, i);
	v = mail_parse(deep->str, deep->len, "a@example.com", &lim, &req, &reason, &code);
	assert_int_equal(v, MAIL_REFUSE);
	assert_string_equal(code, "554 5.6.0 Too many MIME parts");
	g_string_free(deep, TRUE);
	v = mail_parse(bin, sizeof bin - 1, "a@example.com", &lim, &req, &reason, &code);
	assert_int_equal(v, MAIL_ACCEPT);
	assert_true(g_utf8_validate(req->subject, -1, NULL));
	assert_null(strchr(req->subject, 0x01));
	assert_null(strchr(req->subject, 0x7f));
	mail_request_free(req);
	v = mail_parse("", 0, "a@example.com", &lim, &req, &reason, &code);
	assert_true(v == MAIL_ACCEPT || v == MAIL_REFUSE);
	mail_request_free(req);
}

/* Every corpus message: parsed into valid UTF-8 text, ignored, or refused with a
 * well-formed SMTP reply; never a crash. */
static void test_corpus(void **state)
{
	char dir[2048], exe[1024];
	ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
	DIR *d;
	struct dirent *de;
	int n = 0, accepted = 0, ignored = 0, refused = 0, ignored_auto = 0, auto_total = 0;

	(void)state;
	/* ../shared/corpora/mail from the repository top (<top>/bin/tests/test_mail_mime);
	 * the runner starts unit tests from another directory. */
	if (getenv("WARD_MAIL_CORPUS") != NULL) {
		snprintf(dir, sizeof dir, "%s", getenv("WARD_MAIL_CORPUS"));
	} else {
		assert_true(el > 0);
		exe[el] = '\0';
		for (int up = 0; up < 3; up++)
			*strrchr(exe, '/') = '\0';
		snprintf(dir, sizeof dir, "%s/../shared/corpora/mail", exe);
	}
	d = opendir(dir);
	if (d == NULL) {
		print_message("corpus %s not found\n", dir);
		fail();
	}
	while ((de = readdir(d)) != NULL) {
		char path[4096];
		FILE *f;
		char *buf;
		size_t len;
		long sz;
		Ward__MailIngestRequest *req = NULL;
		const char *reason, *code;
		enum mail_verdict v;
		bool autoish;

		if (strstr(de->d_name, ".eml") == NULL)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		f = fopen(path, "rb");
		assert_non_null(f);
		assert_int_equal(fseek(f, 0, SEEK_END), 0);
		sz = ftell(f);
		rewind(f);
		buf = malloc((size_t)sz + 1);
		assert_non_null(buf);
		len = fread(buf, 1, (size_t)sz, f);
		fclose(f);
		assert_int_equal(len, (size_t)sz);
		v = mail_parse(buf, len, "sender@example.com", &lim, &req, &reason, &code);
		autoish = strncmp(de->d_name, "sisimai-", 8) == 0 ||
			  strstr(de->d_name, "bounce") != NULL;
		n++;
		switch (v) {
		case MAIL_ACCEPT:
			accepted++;
			assert_non_null(req);
			assert_true(g_utf8_validate(req->body, -1, NULL));
			assert_true(g_utf8_validate(req->subject, -1, NULL));
			assert_true(g_utf8_validate(req->from_name, -1, NULL));
			assert_null(strchr(req->subject, '\n'));
			assert_true(req->message_id[0] == '<');
			for (size_t i = 0; i < req->n_attachments; i++) {
				assert_true(req->attachments[i]->content.len > 0);
				assert_true(g_utf8_validate(req->attachments[i]->filename, -1, NULL));
			}
			for (const char *p = req->body; *p; p++)
				assert_true((unsigned char)*p >= 0x20 || *p == '\n' || *p == '\t');
			break;
		case MAIL_IGNORE:
			ignored++;
			assert_null(req);
			assert_non_null(reason);
			if (autoish)
				ignored_auto++;
			break;
		case MAIL_REFUSE:
			refused++;
			assert_null(req);
			assert_non_null(code);
			assert_true(code[0] == '4' || code[0] == '5');
			assert_true(strlen(code) > 10 && code[3] == ' ' && code[5] == '.');
			break;
		}
		if (autoish)
			auto_total++;
		mail_request_free(req);
		free(buf);
	}
	closedir(d);
	print_message("corpus: %d messages: %d accepted, %d ignored (loops), %d refused\n", n,
		      accepted, ignored, refused);
	assert_true(n >= 150);
	assert_true(accepted > n / 2);
	assert_true(ignored >= 10); /* bounces and auto-replies are in the corpus */
	(void)ignored_auto;
	(void)auto_total;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain),
	    cmocka_unit_test(test_alternative_prefers_plain),
	    cmocka_unit_test(test_html_only_is_safe_text),
	    cmocka_unit_test(test_charsets_and_encodings),
	    cmocka_unit_test(test_more_charsets),
	    cmocka_unit_test(test_rfc2231_continuation),
	    cmocka_unit_test(test_attachments_and_limits),
	    cmocka_unit_test(test_nested_message),
	    cmocka_unit_test(test_threading_headers),
	    cmocka_unit_test(test_quoted_variants),
	    cmocka_unit_test(test_loops),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_corpus),
	};

	mail_limits_default(&lim);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
