/*
 * fuzz_mailout — libFuzzer target for what ward-mail-out reads and writes:
 * the relay's SMTP replies (semi-trusted, mailout_smtp_reply_parse: bounded,
 * strict) and the mail built from a request's fields (mailout_msg_build, then
 * mailout_msg_dotstuff). The input is split at its first two NULs into a reply,
 * a subject and a body. Checks: the parser answers -1 or a code 200..599; a mail
 * that builds never carries a line over 998 bytes, a bare CR or LF, or a header
 * line the fields could have injected (every header is one of ours or a fold).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/mail-out/mailout_msg.c"
#include "../../services/mail-out/mailout_smtp.c"

/* 1 if a header line of msg (up to the blank line) is one we write or a fold. */
static int fuzz_headers_ours(const char *msg)
{
	static const char *const ours[] = {"Date: ", "From: ", "To: ", "Subject: ", "Message-ID: ",
					   "In-Reply-To: ", "References: ", "MIME-Version: ",
					   "Content-Type: ", "Content-Transfer-Encoding: ", NULL};

	for (const char *p = msg; *p != '\0';) {
		const char *e = strstr(p, "\r\n");
		int ok = 0;

		if (e == NULL)
			return 0;
		if (e == p)
			return 1; /* the blank line: the body follows */
		if (*p == ' ')
			ok = 1;
		for (int i = 0; !ok && ours[i] != NULL; i++)
			ok = strncmp(p, ours[i], strlen(ours[i])) == 0;
		if (!ok)
			return 0;
		p = e + 2;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 3), *subject, *body, *msg = NULL, *out = NULL;
	const char *err = NULL;
	size_t len = 0, olen = 0, n;
	int code;

	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	buf[size] = buf[size + 1] = buf[size + 2] = '\0';
	n = strlen(buf);
	code = mailout_smtp_reply_parse(buf, n);
	if (code != -1 && (code < 200 || code > 599))
		abort();
	subject = buf + n + 1;
	body = subject + strlen(subject) + 1;
	if (body > buf + size + 2)
		body = buf + size + 2;
	{
		struct mailout_mail m = {
		    .message_id = "<0123456789abcdef0123456789abcdef01234567@acme.eu.localhost>",
		    .from_email = "support@acme.eu.localhost",
		    .from_name = subject,
		    .to_email = "alice@example.com",
		    .subject = subject,
		    .body = body,
		    .in_reply_to = "",
		    .date_ms = 0,
		};

		if (mailout_msg_build(&m, &msg, &len, &err) == 0) {
			if (!fuzz_headers_ours(msg) || strlen(msg) != len)
				abort();
			if (mailout_msg_dotstuff(msg, len, &out, &olen, &err) != 0)
				abort(); /* what we build always goes through DATA */
			free(out);
			free(msg);
		}
	}
	free(buf);
	return 0;
}
