/*
 * crypto/pwhash.h - password hashing (Argon2id) and the verified-credential cache.
 *
 * pwhash_hash and pwhash_verify cost tens of milliseconds and tens of MiB by design: they block,
 * and the daemon calls them only from its verifier threads, never from an event loop.
 *
 * The cache remembers successful (user, password, stored hash) triples under a keyed BLAKE2b
 * digest (the key is random per process and lives in sodium_malloc'd memory), so a client with
 * the right password is not charged a hash per connection and the cache never holds a password.
 * Including the stored hash in the digest makes a password change invalidate old entries.
 * A cache is not thread-safe: the daemon keeps one per worker.
 */
#ifndef SHROUD_CRYPTO_PWHASH_H
#define SHROUD_CRYPTO_PWHASH_H

#include <stdbool.h>
#include <stddef.h>

#include "base/compiler.h"

/* Size of a hash string, NUL included (crypto_pwhash_STRBYTES). */
#define PWHASH_STR_MAX 128

/* Initialise libsodium. Call once before anything else in crypto/. ST_OK or ST_ECRYPTO. */
NODISCARD int pwhash_init(void);

/* Hash a password (Argon2id, libsodium's interactive limits) into out. ST_OK, ST_ENOMEM. */
NODISCARD int pwhash_hash(const char *pass, size_t len, char out[static PWHASH_STR_MAX]);

/* ST_OK when pass matches hash, ST_EAUTH when not (or when hash is malformed). Blocks. */
NODISCARD int pwhash_verify(const char *hash, const char *pass, size_t len);

/* True when the len bytes at a and b are equal, in time that depends on len only. */
bool pwhash_password_equal(const char *a, const char *b, size_t len);

/* True when s looks like a hash string pwhash_verify accepts ("$argon2id$..."). */
bool pwhash_str_valid(const char *s);

struct pwhash_cache;

/*
 * A cache with room for `slots` entries (at least 4, rounded up to a power of two), each valid for
 * ttl seconds. ST_OK, ST_ENOMEM, ST_ECRYPTO (libsodium could not initialise).
 */
NODISCARD int pwhash_cache_new(size_t slots, double ttl, struct pwhash_cache **out);
void pwhash_cache_free(struct pwhash_cache *c);

/* True when (user, pass, hash) was put less than ttl seconds before `now` (monotonic seconds). */
bool pwhash_cache_check(struct pwhash_cache *c, const char *user, const char *pass, size_t plen,
			const char *hash, double now);

/* Remember a verified triple; evicts the oldest entry of its set when full. */
void pwhash_cache_put(struct pwhash_cache *c, const char *user, const char *pass, size_t plen,
		      const char *hash, double now);

#endif
