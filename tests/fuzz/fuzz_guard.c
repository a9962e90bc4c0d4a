/*
 * fuzz_guard — libFuzzer target for the gateway's request guard (gateway_http.c:
 * the evbuffer callback on each TLS connection's input that passes evhttp only
 * complete, checked request heads and their bodies).
 *
 * The input is the bytes a client sends, cut into arrivals: each arrival is one
 * length byte (1..64, 0 = the rest) then that many bytes, added to the input as the
 * TLS layer would; after each arrival, "evhttp" reads a few of the passed bytes.
 * Nothing may crash, leak or read out of bounds, the guard's count of passed bytes
 * must match the input, what it holds stays bounded by the head limit, and once it
 * refuses, the input ends with its stand-in request and nothing else ever passes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/gateway/gateway_http.c"
#include "../../services/gateway/gateway_accesslog.c"
#include "../../services/gateway/gateway_util.c"

/* What gateway_http.c calls elsewhere: never reached from the guard. */
struct bufferevent *gateway_tls_bevcb(struct event_base *base, void *arg)
{
	(void)base, (void)arg;
	abort();
}
void gateway_api_start(struct gateway *gw, struct evhttp_request *req,
		       const struct gateway_reqinfo *info)
{
	(void)gw, (void)req, (void)info;
	abort();
}
void gateway_healthz_start(struct gateway *gw, struct evhttp_request *req,
			   const struct gateway_reqinfo *info)
{
	(void)gw, (void)req, (void)info;
	abort();
}
bool gateway_routes_table(size_t i, const struct gateway_route **rows_r, size_t *n_r)
{
	(void)i, (void)rows_r, (void)n_r;
	return false;
}

#define FUZZ_MAX_HEAD 512
#define FUZZ_MAX_BODY 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gateway_guard g = { 0 };
	size_t off = 0, refused_len = 0;
	bool was_refused = false;

	static struct event_base *base;

	/* The head deadline's timer: armed and cleared as on a connection, never run
	 * (the loop is not run). */
	if (base == NULL && (base = event_base_new()) == NULL)
		abort();
	if ((g.input = evbuffer_new()) == NULL || (g.hold = evbuffer_new()) == NULL ||
	    (g.tmp = evbuffer_new()) == NULL ||
	    (g.deadline = evtimer_new(base, gw_guard_deadline, &g)) == NULL)
		abort();
	gw_guard_arm(&g, false);
	g.max_head = FUZZ_MAX_HEAD;
	g.max_body = FUZZ_MAX_BODY;
	if ((g.ent = evbuffer_add_cb(g.input, gateway_http_guard_cb, &g)) == NULL)
		abort();
	while (off < size) {
		size_t n = data[off] % 65, len;

		off++;
		if (n == 0 || n > size - off)
			n = size - off;
		evbuffer_add(g.input, data + off, n);
		off += n;
		len = evbuffer_get_length(g.input);
		if (g.passed != len)
			abort(); /* all of the input is passed bytes; the rest is held */
		if (evbuffer_get_length(g.hold) > FUZZ_MAX_HEAD + 64 + FUZZ_MAX_BODY)
			abort();
		if (g.refused) {
			if (!was_refused) {
				const char *p = (const char *)evbuffer_pullup(g.input, -1);
				static const char tail[] = "Connection: close\r\n\r\n";

				if (len < sizeof tail - 1 ||
				    memcmp(p + len - (sizeof tail - 1), tail, sizeof tail - 1) != 0 ||
				    memmem(p, len, GATEWAY_REFUSED_PREFIX,
					   strlen(GATEWAY_REFUSED_PREFIX)) == NULL)
					abort();
				was_refused = true;
				refused_len = len;
			} else if (len > refused_len) {
				abort(); /* nothing passes after a refusal */
			}
			if (evbuffer_get_length(g.hold) != 0)
				abort();
		}
		/* evhttp reads a little of what was passed (not after a refusal: the
		 * stand-in must stay whole for the check above). */
		if (!g.refused && len > 0)
			evbuffer_drain(g.input, len / 2);
	}
	evbuffer_remove_cb_entry(g.input, g.ent);
	event_free(g.deadline);
	evbuffer_free(g.input);
	evbuffer_free(g.hold);
	evbuffer_free(g.tmp);
	return 0;
}
