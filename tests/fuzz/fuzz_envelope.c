/*
 * fuzz_envelope — libFuzzer target for envelope_unpack and envelope_open.
 *
 * Untrusted stream bytes go through envelope_unpack; whatever it accepts is
 * opened with a fixed route key set, as a consumer would. Nothing may crash,
 * leak or read out of bounds, and a forged payload must never open.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "envelope.h"

static const char fuzz_keys[] =
	"gateway q:ticket 1 1111111111111111111111111111111111111111111111111111111111111111\n"
	"gateway q:ticket 2 2222222222222222222222222222222222222222222222222222222222222222\n"
	"ticket r:gateway 1 3333333333333333333333333333333333333333333333333333333333333333\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static envelope_keys_t *keys;
	const char *error = NULL;
	Ward__Envelope *env;
	uint8_t *pt = NULL;
	size_t pt_len = 0;

	if (keys == NULL) {
		keys = envelope_keys_parse((const unsigned char *)fuzz_keys, sizeof fuzz_keys - 1,
					   &error);
		if (keys == NULL)
			abort();
	}
	env = envelope_unpack(data, size, &error);
	if (env == NULL) {
		if (error == NULL)
			abort(); /* a refusal always says why */
		return 0;
	}
	if (envelope_open(env, keys, &pt, &pt_len, &error) == 0) {
		/* Only our own seeds can open; check the plaintext is terminated. */
		if (pt == NULL || pt[pt_len] != '\0')
			abort();
		crypto_wipe(pt, pt_len);
		free(pt);
	} else if (pt != NULL) {
		abort();
	}
	ward__envelope__free_unpacked(env, NULL);
	return 0;
}
