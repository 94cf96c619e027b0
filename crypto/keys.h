/*
 * crypto/keys.h - keyed hashing and randomness for the other modules (libsodium underneath).
 *
 * keys_hash is BLAKE2b-256 keyed with a 32-byte secret: the sticky-selection key
 * (DESIGN.md, "One connection", step 6) is keys_hash(salt, user | session | site), so an
 * observer of source addresses learns nothing that links users, sessions or sites.
 * Pure apart from keys_random; never allocates, blocks or logs. pwhash_init (or sodium_init)
 * must have run.
 */
#ifndef SHROUD_CRYPTO_KEYS_H
#define SHROUD_CRYPTO_KEYS_H

#include <stddef.h>
#include <stdint.h>

#define KEYS_HASH_BYTES 32
#define KEYS_KEY_BYTES 32

/* out = BLAKE2b-256 keyed with key over the concatenation of the n parts, each prefixed with
 * its length (8 bytes little-endian), so part boundaries are unambiguous. */
struct keys_part {
	const void *p;
	size_t len;
};
void keys_hash(uint8_t out[static KEYS_HASH_BYTES], const uint8_t key[static KEYS_KEY_BYTES],
	       const struct keys_part *parts, size_t n);

/* Fill buf with len unpredictable bytes (randombytes_buf). */
void keys_random(void *buf, size_t len);

#endif
