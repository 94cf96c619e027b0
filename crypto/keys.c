/* crypto/keys.c - keyed BLAKE2b and randomness. */
#include "crypto/keys.h"

#include <sodium.h>

void keys_hash(uint8_t out[static KEYS_HASH_BYTES], const uint8_t key[static KEYS_KEY_BYTES],
	       const struct keys_part *parts, size_t n)
{
	crypto_generichash_state state;

	crypto_generichash_init(&state, key, KEYS_KEY_BYTES, KEYS_HASH_BYTES);
	for (size_t i = 0; i < n; i++) {
		uint8_t prefix[8];
		uint64_t len = parts[i].len;

		for (size_t b = 0; b < sizeof(prefix); b++)
			prefix[b] = (uint8_t)(len >> (8 * b));
		crypto_generichash_update(&state, prefix, sizeof(prefix));
		crypto_generichash_update(&state, parts[i].p, parts[i].len);
	}
	crypto_generichash_final(&state, out, KEYS_HASH_BYTES);
	sodium_memzero(&state, sizeof(state));
}

void keys_random(void *buf, size_t len)
{
	randombytes_buf(buf, len);
}
