/*
 * fuzz_mime — libFuzzer target for ward-mail-ingest's MIME extraction
 * (mail_parse in services/mail-ingest/mail_mime.c, GMime underneath).
 *
 *   make fuzz && bin/fuzz/fuzz_mime tests/fuzz/corpus/mime ../shared/corpora/mail
 *
 * Whatever the bytes: no crash, no leak, and an accepted mail is valid UTF-8
 * text without control characters, within the limits.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/mail-ingest/mail_mime.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mail_limits lim;
	Ward__MailIngestRequest *req = NULL;
	const char *reason, *code;
	enum mail_verdict v;

	if (size > 2 * 1024 * 1024)
		return 0;
	mail_limits_default(&lim);
	v = mail_parse((const char *)data, size, "fuzz@example.com", &lim, &req, &reason, &code);
	if (v == MAIL_ACCEPT) {
		if (req == NULL || !g_utf8_validate(req->body, -1, NULL) ||
		    !g_utf8_validate(req->subject, -1, NULL) || strchr(req->subject, '\n') != NULL ||
		    strlen(req->body) > lim.max_body_bytes || req->n_attachments > lim.max_attachments)
			abort();
		for (const char *p = req->body; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 && *p != '\n' && *p != '\t')
				abort();
	} else if (v == MAIL_REFUSE) {
		if (req != NULL || code == NULL || (code[0] != '4' && code[0] != '5'))
			abort();
	} else if (req != NULL || reason == NULL) {
		abort();
	}
	mail_request_free(req);
	return 0;
}
