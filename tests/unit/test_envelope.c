/*
 * test_envelope — route keys, seal/open binding of every header field, and
 * refusal of bad bytes by envelope_unpack.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto.h"
#include "envelope.h"

#define K1 "1111111111111111111111111111111111111111111111111111111111111111"
#define K2 "2222222222222222222222222222222222222222222222222222222222222222"
#define K3 "3333333333333333333333333333333333333333333333333333333333333333"
#define K4 "4444444444444444444444444444444444444444444444444444444444444444"

/* The ticket service's key file: it hears gateway and mail-ingest on q:ticket. */
static const char TICKET_KEYS[] = "# routes of ticket\n"
				  "\n"
				  "gateway q:ticket 1 " K1 "\n"
				  "  mail-ingest\tq:ticket 1 " K2 "\r\n"
				  "ticket r:gateway 1 " K3 "\n";
/* The mail-ingest service: only its own route to q:ticket. */
static const char MAIL_KEYS[] = "mail-ingest q:ticket 1 " K2 "\n";
/* The gateway: its route to q:ticket, and the reply route. */
static const char GW_KEYS[] = "gateway q:ticket 1 " K1 "\nticket r:gateway 1 " K3 "\n";

#define MARKER "PLAINTEXT-MARKER-7f3a"

static envelope_keys_t *keys_of(const char *text)
{
	const char *error = NULL;
	envelope_keys_t *k = envelope_keys_parse((const unsigned char *)text, strlen(text), &error);

	if (k == NULL)
		fail_msg("parse: %s", error);
	return k;
}

/* A request header with every field set. */
static void env_fill(Ward__Envelope *env, Ward__Principal *p, const char *sender,
		     const char *stream)
{
	static char id[33];

	*env = (Ward__Envelope)WARD__ENVELOPE__INIT;
	*p = (Ward__Principal)WARD__PRINCIPAL__INIT;
	assert_int_equal(crypto_random_id(id), 0);
	p->kind = "user";
	p->id = "u-1";
	p->role = "agent";
	p->tenant = "acme";
	p->session = "s-1";
	env->version = ENVELOPE_VERSION;
	env->id = id;
	env->tenant = "acme";
	env->region = "eu";
	env->sender = (char *)sender;
	env->method = "ticket.create";
	env->principal = p;
	env->deadline_ms = envelope_now_ms() + 5000;
	env->reply_to = "r:gateway:gw-1";
	env->idempotency_key = "idem-1";
	env->correlation_id = "";
	env->status = 0;
	env->error = "";
	env->stream = (char *)stream;
	env->request_id = "req-1";
}

/* Seal, pack and unpack: what a consumer would hold. */
static Ward__Envelope *sealed_copy(const char *keytext, const char *sender, const char *stream,
				   const char *pt)
{
	envelope_keys_t *keys = keys_of(keytext);
	Ward__Envelope env;
	Ward__Principal p;
	const char *error = NULL;
	uint8_t *buf;
	size_t len = 0;
	Ward__Envelope *out;

	env_fill(&env, &p, sender, stream);
	if (envelope_seal(&env, keys, (const uint8_t *)pt, strlen(pt), &error) != 0)
		fail_msg("seal: %s", error);
	buf = envelope_pack(&env, &len);
	assert_non_null(buf);
	out = envelope_unpack(buf, len, &error);
	if (out == NULL)
		fail_msg("unpack: %s", error);
	free(buf);
	envelope_clear_payload(&env);
	envelope_keys_free(keys);
	return out;
}

/* 0 if env opens with keys (and frees the plaintext), -1 if not. */
static int try_open(const Ward__Envelope *env, const envelope_keys_t *keys)
{
	uint8_t *pt = NULL;
	size_t len = 0;
	const char *error = NULL;
	int r = envelope_open(env, keys, &pt, &len, &error);

	if (r == 0) {
		assert_non_null(pt);
		free(pt);
	} else {
		assert_null(pt);
		assert_non_null(error);
	}
	return r;
}

static void test_keys_parse(void **state)
{
	envelope_keys_t *keys = keys_of(TICKET_KEYS);
	uint32_t v = 0;
	const uint8_t *k;
	uint8_t want[32];

	k = envelope_keys_sealing(keys, "mail-ingest", "q:ticket", &v);
	assert_non_null(k);
	assert_int_equal(v, 1);
	assert_int_equal(crypto_unhex(K2, want, sizeof want), 0);
	assert_memory_equal(k, want, 32);
	/* Reply streams share their route's key. */
	assert_non_null(envelope_keys_sealing(keys, "ticket", "r:gateway:gw-7", &v));
	assert_null(envelope_keys_sealing(keys, "ticket", "r:gatewayx:gw-7", &v));
	assert_null(envelope_keys_sealing(keys, "auth", "q:ticket", &v));
	assert_null(envelope_keys_lookup(keys, "gateway", "q:ticket", 2));
	assert_null(envelope_keys_lookup(keys, "gateway", "q:ticket", 0));
	assert_non_null(envelope_keys_lookup(keys, "gateway", "q:ticket", 1));
	envelope_keys_free(keys);
	envelope_keys_free(NULL);
}

static void test_keys_parse_bad(void **state)
{
	static const char *bad[] = {
		"",
		"# only a comment\n\n",
		"gateway q:ticket 1\n",
		"gateway q:ticket 1 " K1 " extra\n",
		"gateway q:ticket 0 " K1 "\n",
		"gateway q:ticket -1 " K1 "\n",
		"gateway q:ticket 4294967296 " K1 "\n",
		"gateway q:ticket 1x " K1 "\n",
		"gateway q:ticket 1 " K1 "00\n",
		"gateway q:ticket 1 zz11111111111111111111111111111111111111111111111111111111111111\n",
		"Gateway q:ticket 1 " K1 "\n",
		"gate/way q:ticket 1 " K1 "\n",
		"gateway q:ticket 1 " K1 "\ngateway q:ticket 1 " K2 "\n",
		"gateway q:ticket 1 " K1 "\x01\n",
		"gateway q:t\xc3\xa9 1 " K1 "\n",
	};
	char longline[700];
	const char *error;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		error = NULL;
		assert_null(envelope_keys_parse((const unsigned char *)bad[i], strlen(bad[i]),
						&error));
		assert_non_null(error);
	}
	memset(longline, 'a', sizeof longline);
	error = NULL;
	assert_null(envelope_keys_parse((const unsigned char *)longline, sizeof longline, &error));
	assert_non_null(error);
	/* A NUL byte inside the data is refused, not treated as the end. */
	error = NULL;
	assert_null(envelope_keys_parse((const unsigned char *)"gateway\0 q:t 1 " K1, 80, &error));
	assert_non_null(error);
}

static void test_route_of(void **state)
{
	char out[32];

	envelope_route_of("q:auth", out, sizeof out);
	assert_string_equal(out, "q:auth");
	envelope_route_of("r:gateway:gw-1", out, sizeof out);
	assert_string_equal(out, "r:gateway");
	envelope_route_of("r:gateway", out, sizeof out);
	assert_string_equal(out, "r:gateway");
	envelope_route_of("dl:auth", out, sizeof out);
	assert_string_equal(out, "dl:auth");
	/* Too long: empty, so no key can match. */
	envelope_route_of("q:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", out, sizeof out);
	assert_string_equal(out, "");
}

static void test_seal_open_round_trip(void **state)
{
	envelope_keys_t *gw = keys_of(GW_KEYS), *ticket = keys_of(TICKET_KEYS);
	Ward__Envelope env, *got;
	Ward__Principal p;
	const char *error = NULL;
	uint8_t *buf, *pt = NULL;
	size_t len = 0, pt_len = 0;

	env_fill(&env, &p, "gateway", "q:ticket");
	assert_int_equal(envelope_seal(&env, gw, (const uint8_t *)MARKER, strlen(MARKER), &error), 0);
	assert_int_equal(env.payload.len, strlen(MARKER) + CRYPTO_SEAL_OVERHEAD);
	buf = envelope_pack(&env, &len);
	assert_non_null(buf);
	/* Redis never sees the plaintext. */
	assert_null(memmem(buf, len, MARKER, strlen(MARKER)));
	got = envelope_unpack(buf, len, &error);
	assert_non_null(got);
	assert_string_equal(got->id, env.id);
	assert_string_equal(got->principal->role, "agent");
	assert_int_equal(envelope_open(got, ticket, &pt, &pt_len, &error), 0);
	assert_int_equal(pt_len, strlen(MARKER));
	assert_memory_equal(pt, MARKER, pt_len);
	assert_int_equal(pt[pt_len], '\0');
	free(pt);
	/* The sender's own set opens it too (same route key). */
	assert_int_equal(try_open(got, gw), 0);
	ward__envelope__free_unpacked(got, NULL);
	free(buf);

	/* An empty plaintext seals and opens. */
	assert_int_equal(envelope_seal(&env, gw, NULL, 0, &error), 0);
	assert_int_equal(envelope_open(&env, ticket, &pt, &pt_len, &error), 0);
	assert_int_equal(pt_len, 0);
	free(pt);
	envelope_clear_payload(&env);
	envelope_clear_payload(&env);
	envelope_keys_free(gw);
	envelope_keys_free(ticket);
}

/* Every header field edited after sealing makes the payload fail to open. */
static void test_tamper_each_field(void **state)
{
	envelope_keys_t *ticket = keys_of(TICKET_KEYS);
	int n;

	for (n = 0;; n++) {
		Ward__Envelope *env = sealed_copy(GW_KEYS, "gateway", "q:ticket", MARKER);
		Ward__Principal *p = env->principal;
		char *saved_str = NULL, **field = NULL;
		int done = 0;

		assert_int_equal(try_open(env, ticket), 0);
		switch (n) {
		case 0: env->version = 2; break;
		case 1: field = &env->id; break;
		case 2: field = &env->tenant; break;
		case 3: field = &env->region; break;
		case 4: field = &env->method; break;
		case 5: env->deadline_ms += 1; break;
		case 6: field = &env->reply_to; break;
		case 7: field = &env->idempotency_key; break;
		case 8: field = &env->correlation_id; break;
		case 9: env->status = 500; break;
		case 10: field = &env->error; break;
		case 11: field = &env->request_id; break;
		case 12: field = &p->kind; break;
		case 13: field = &p->id; break;
		case 14: field = &p->role; break;
		case 15: field = &p->tenant; break;
		case 16: field = &p->session; break;
		case 17: env->principal = NULL; break;
		case 18: env->payload.data[env->payload.len - 1] ^= 1; break;
		case 19: env->payload.data[CRYPTO_SEAL_HEADER] ^= 0x80; break;
		case 20: env->payload.data[6] ^= 1; break; /* nonce */
		case 21: env->payload.len -= 1; break;
		default: done = 1; break;
		}
		if (done) {
			ward__envelope__free_unpacked(env, NULL);
			break;
		}
		if (field != NULL) {
			saved_str = *field;
			*field = "tampered";
		}
		if (try_open(env, ticket) == 0)
			fail_msg("tampering case %d still opens", n);
		if (field != NULL)
			*field = saved_str;
		if (n == 17)
			env->principal = p;
		ward__envelope__free_unpacked(env, NULL);
	}
	assert_int_equal(n, 22);
	envelope_keys_free(ticket);
}

/* The same key on two routes still cannot move an entry between streams. */
static void test_moved_stream(void **state)
{
	static const char both[] = "gateway q:ticket 1 " K1 "\ngateway q:auth 1 " K1 "\n";
	envelope_keys_t *keys = keys_of(both);
	Ward__Envelope *env = sealed_copy(both, "gateway", "q:ticket", MARKER);
	char *saved = env->stream;

	assert_int_equal(try_open(env, keys), 0);
	env->stream = "q:auth";
	assert_int_equal(try_open(env, keys), -1);
	env->stream = saved;
	ward__envelope__free_unpacked(env, NULL);
	envelope_keys_free(keys);
}

/* mail-ingest claiming to be gateway fails: it holds no gateway key. */
static void test_sender_forged(void **state)
{
	envelope_keys_t *mail = keys_of(MAIL_KEYS), *ticket = keys_of(TICKET_KEYS);
	Ward__Envelope env, *got;
	Ward__Principal p;
	const char *error = NULL;
	uint8_t *buf;
	size_t len = 0;

	/* It cannot seal as gateway... */
	env_fill(&env, &p, "gateway", "q:ticket");
	assert_int_equal(envelope_seal(&env, mail, (const uint8_t *)"x", 1, &error), -1);
	/* ...and sealing with its own key then relabelling fails to open. */
	env.sender = "mail-ingest";
	assert_int_equal(envelope_seal(&env, mail, (const uint8_t *)"x", 1, &error), 0);
	env.sender = "gateway";
	buf = envelope_pack(&env, &len);
	assert_non_null(buf);
	got = envelope_unpack(buf, len, &error);
	assert_non_null(got);
	assert_int_equal(try_open(got, ticket), -1);
	ward__envelope__free_unpacked(got, NULL);
	free(buf);
	envelope_clear_payload(&env);
	envelope_keys_free(mail);
	envelope_keys_free(ticket);
}

static void test_unknown_route(void **state)
{
	envelope_keys_t *gw = keys_of(GW_KEYS), *mail = keys_of(MAIL_KEYS);
	Ward__Envelope env, *got;
	Ward__Principal p;
	const char *error = NULL;
	char *saved;

	env_fill(&env, &p, "gateway", "q:audit");
	assert_int_equal(envelope_seal(&env, gw, (const uint8_t *)"x", 1, &error), -1);
	assert_non_null(error);
	assert_null(env.payload.data);
	/* Sealed on a known route, opened by a set that lacks it. */
	got = sealed_copy(GW_KEYS, "ticket", "r:gateway:gw-1", MARKER);
	assert_int_equal(try_open(got, gw), 0);
	assert_int_equal(try_open(got, mail), -1);
	/* The reply route of another service is another route. */
	saved = got->stream;
	got->stream = "r:auth:gw-1";
	assert_int_equal(try_open(got, gw), -1);
	got->stream = saved;
	ward__envelope__free_unpacked(got, NULL);
	envelope_keys_free(gw);
	envelope_keys_free(mail);
}

/* The highest version seals; older listed versions still open. */
static void test_key_versions(void **state)
{
	static const char v1[] = "gateway q:ticket 1 " K1 "\n";
	static const char v12[] = "gateway q:ticket 2 " K4 "\ngateway q:ticket 1 " K1 "\n";
	static const char v2[] = "gateway q:ticket 2 " K4 "\n";
	envelope_keys_t *k1 = keys_of(v1), *k12 = keys_of(v12), *k2 = keys_of(v2);
	Ward__Envelope *old, *cur;
	uint32_t version = 0;

	assert_non_null(envelope_keys_sealing(k12, "gateway", "q:ticket", &version));
	assert_int_equal(version, 2);
	old = sealed_copy(v1, "gateway", "q:ticket", MARKER);
	cur = sealed_copy(v12, "gateway", "q:ticket", MARKER);
	assert_int_equal(crypto_sealed_key_version(old->payload.data, old->payload.len, &version),
			 0);
	assert_int_equal(version, 1);
	assert_int_equal(crypto_sealed_key_version(cur->payload.data, cur->payload.len, &version),
			 0);
	assert_int_equal(version, 2);
	assert_int_equal(try_open(old, k12), 0);
	assert_int_equal(try_open(cur, k12), 0);
	assert_int_equal(try_open(cur, k2), 0);
	assert_int_equal(try_open(old, k2), -1);	/* v1 retired */
	assert_int_equal(try_open(cur, k1), -1);	/* v2 unknown to old holders */
	/* Relabelling the key version in the payload does not help. */
	cur->payload.data[4] = 1;
	assert_int_equal(try_open(cur, k12), -1);
	ward__envelope__free_unpacked(old, NULL);
	ward__envelope__free_unpacked(cur, NULL);
	envelope_keys_free(k1);
	envelope_keys_free(k12);
	envelope_keys_free(k2);
}

/* Truncations never yield an envelope that opens; garbage is refused. */
static void test_unpack_truncated_garbage(void **state)
{
	envelope_keys_t *gw = keys_of(GW_KEYS), *ticket = keys_of(TICKET_KEYS);
	Ward__Envelope env, *got;
	Ward__Principal p;
	const char *error = NULL;
	uint8_t *buf, junk[256];
	size_t len = 0;
	static const uint8_t garbage[][8] = {
		{ 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff },
		{ 0x08, 0x01, 0x12, 0x7f, 0x41, 0x41, 0x41, 0x41 }, /* string runs past end */
		{ 0x08, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 }, /* field number 0 */
		{ 0x08, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 },
	};

	env_fill(&env, &p, "gateway", "q:ticket");
	assert_int_equal(envelope_seal(&env, gw, (const uint8_t *)MARKER, strlen(MARKER), &error), 0);
	buf = envelope_pack(&env, &len);
	assert_non_null(buf);
	for (size_t cut = 0; cut < len; cut++) {
		error = NULL;
		got = envelope_unpack(buf, cut, &error);
		if (got == NULL) {
			assert_non_null(error);
			continue;
		}
		/* A prefix ending on a field boundary may parse; it must not open. */
		assert_int_equal(try_open(got, ticket), -1);
		ward__envelope__free_unpacked(got, NULL);
	}
	assert_null(envelope_unpack(NULL, 0, &error));
	assert_null(envelope_unpack(buf, 0, &error));
	for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
		error = NULL;
		assert_null(envelope_unpack(garbage[i], sizeof garbage[i], &error));
		assert_non_null(error);
	}
	for (unsigned seed = 1; seed < 200; seed++) {
		srand(seed);
		for (size_t i = 0; i < sizeof junk; i++)
			junk[i] = (uint8_t)rand();
		got = envelope_unpack(junk, (size_t)(seed % sizeof junk) + 1, &error);
		if (got != NULL) {
			assert_int_equal(try_open(got, ticket), -1);
			ward__envelope__free_unpacked(got, NULL);
		}
	}
	free(buf);
	envelope_clear_payload(&env);
	envelope_keys_free(gw);
	envelope_keys_free(ticket);
}

/* Pack env with one change, unpack, expect refusal (want_ok = 0) or success. */
static void expect_unpack(const Ward__Envelope *env, int want_ok, const char *what)
{
	const char *error = NULL;
	size_t len = 0;
	uint8_t *buf = envelope_pack(env, &len);
	Ward__Envelope *got;

	assert_non_null(buf);
	got = envelope_unpack(buf, len, &error);
	if (want_ok && got == NULL)
		fail_msg("%s: refused: %s", what, error);
	if (!want_ok && got != NULL)
		fail_msg("%s: accepted", what);
	if (!want_ok)
		assert_non_null(error);
	ward__envelope__free_unpacked(got, NULL);
	free(buf);
}

static void test_unpack_validation(void **state)
{
	Ward__Envelope env;
	Ward__Principal p;
	char long_s[ENVELOPE_MAX_STRING + 2], max_s[ENVELOPE_MAX_STRING + 1];
	uint8_t *big;
	size_t len = 0;
	const char *error = NULL;

	env_fill(&env, &p, "gateway", "q:ticket");
	env.payload.data = (uint8_t *)"0123456789012345678901234567890123456789";
	env.payload.len = 40;
	expect_unpack(&env, 1, "baseline");

	env.version = 0;
	expect_unpack(&env, 0, "version 0");
	env.version = 2;
	expect_unpack(&env, 0, "version 2");
	env.version = 1;

	char *id = env.id;
	env.id = "0123456789abcdef0123456789abcde";
	expect_unpack(&env, 0, "short id");
	env.id = "0123456789abcdef0123456789abcdef0";
	expect_unpack(&env, 0, "long id");
	env.id = "0123456789abcdef0123456789abcdeg";
	expect_unpack(&env, 0, "non-hex id");
	env.id = "";
	expect_unpack(&env, 0, "no id");
	env.id = id;

	env.sender = "";
	expect_unpack(&env, 0, "no sender");
	env.sender = "gateway";
	env.method = "";
	expect_unpack(&env, 0, "no method");
	env.method = "ticket.create";
	env.stream = "";
	expect_unpack(&env, 0, "no stream");
	env.stream = "q:ticket";
	env.reply_to = "q:ticket";
	expect_unpack(&env, 0, "reply_to not a reply stream");
	env.reply_to = "r:gateway:gw-1";
	env.correlation_id = "nothex";
	expect_unpack(&env, 0, "bad correlation id");
	env.correlation_id = "";
	env.deadline_ms = -1;
	expect_unpack(&env, 0, "negative deadline");
	env.deadline_ms = 0;

	memset(max_s, 'a', sizeof max_s - 1);
	max_s[sizeof max_s - 1] = '\0';
	memset(long_s, 'a', sizeof long_s - 1);
	long_s[sizeof long_s - 1] = '\0';
	env.tenant = max_s;
	expect_unpack(&env, 1, "string at the limit");
	env.tenant = long_s;
	expect_unpack(&env, 0, "string over the limit");
	env.tenant = "acme";
	p.session = long_s;
	expect_unpack(&env, 0, "principal string over the limit");
	p.session = "s-1";

	static const char *bad_strings[] = {
		"line\nbreak", "tab\there", "esc\x1b[31m", "del\x7f", "c1\xc2\x85", "bad\xff",
		"overlong\xc0\xaf", "overlong3\xe0\x80\xaf", "surrogate\xed\xa0\x80",
		"truncated\xe6\x97", "too-big\xf4\x90\x80\x80", "lone\x80",
	};
	for (size_t i = 0; i < sizeof bad_strings / sizeof bad_strings[0]; i++) {
		env.error = (char *)bad_strings[i];
		expect_unpack(&env, 0, bad_strings[i]);
		env.error = "";
		p.id = (char *)bad_strings[i];
		expect_unpack(&env, 0, bad_strings[i]);
		p.id = "u-1";
	}
	env.error = "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x8e\xab \xc2\xa0";
	expect_unpack(&env, 1, "valid UTF-8");
	env.error = "";

	/* A payload over the cap is refused even when the whole fits ENVELOPE_MAX_PACKED. */
	big = calloc(1, ENVELOPE_MAX_PAYLOAD + CRYPTO_SEAL_OVERHEAD + 1);
	assert_non_null(big);
	env.payload.data = big;
	env.payload.len = ENVELOPE_MAX_PAYLOAD + CRYPTO_SEAL_OVERHEAD + 1;
	expect_unpack(&env, 0, "payload over the cap");
	env.payload.len = ENVELOPE_MAX_PAYLOAD + CRYPTO_SEAL_OVERHEAD;
	expect_unpack(&env, 1, "payload at the cap");
	free(big);

	/* Oversized input is refused before protobuf-c looks at it. */
	big = calloc(1, ENVELOPE_MAX_PACKED + 1);
	assert_non_null(big);
	error = NULL;
	assert_null(envelope_unpack(big, ENVELOPE_MAX_PACKED + 1, &error));
	assert_string_equal(error, "envelope too large");
	free(big);
	(void)len;
}

static void test_seal_limits(void **state)
{
	envelope_keys_t *gw = keys_of(GW_KEYS);
	Ward__Envelope env;
	Ward__Principal p;
	const char *error = NULL;
	uint8_t *big = calloc(1, ENVELOPE_MAX_PAYLOAD + 1);

	assert_non_null(big);
	env_fill(&env, &p, "gateway", "q:ticket");
	assert_int_equal(envelope_seal(&env, gw, big, ENVELOPE_MAX_PAYLOAD + 1, &error), -1);
	assert_int_equal(envelope_seal(&env, gw, big, ENVELOPE_MAX_PAYLOAD, &error), 0);
	/* Sealing again replaces the payload (no leak, header unchanged). */
	assert_int_equal(envelope_seal(&env, gw, big, 10, &error), 0);
	assert_int_equal(env.payload.len, 10 + CRYPTO_SEAL_OVERHEAD);
	envelope_clear_payload(&env);
	env.stream = "";
	assert_int_equal(envelope_seal(&env, gw, big, 10, &error), -1);
	free(big);
	envelope_keys_free(gw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keys_parse),
		cmocka_unit_test(test_keys_parse_bad),
		cmocka_unit_test(test_route_of),
		cmocka_unit_test(test_seal_open_round_trip),
		cmocka_unit_test(test_tamper_each_field),
		cmocka_unit_test(test_moved_stream),
		cmocka_unit_test(test_sender_forged),
		cmocka_unit_test(test_unknown_route),
		cmocka_unit_test(test_key_versions),
		cmocka_unit_test(test_unpack_truncated_garbage),
		cmocka_unit_test(test_unpack_validation),
		cmocka_unit_test(test_seal_limits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
