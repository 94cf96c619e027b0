/* crypto/pwhash.c - Argon2id password hashes and the verified-credential cache. */
#include "crypto/pwhash.h"

#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

_Static_assert(PWHASH_STR_MAX == crypto_pwhash_argon2id_STRBYTES,
	       "PWHASH_STR_MAX must be libsodium's hash string size");

/* "$argon2id$": the one algorithm we write, so the one we accept. */
#define HASH_PREFIX crypto_pwhash_argon2id_STRPREFIX

/* ---- hashing --------------------------------------------------------------------------------- */

int pwhash_init(void)
{
	/* 0 first time, 1 already done, -1 failure. */
	return sodium_init() < 0 ? ST_ECRYPTO : ST_OK;
}

bool pwhash_password_equal(const char *a, const char *b, size_t len)
{
	return sodium_memcmp(a, b, len) == 0;
}

bool pwhash_str_valid(const char *s)
{
	return s != NULL && strnlen(s, PWHASH_STR_MAX) < PWHASH_STR_MAX &&
	       strncmp(s, HASH_PREFIX, strlen(HASH_PREFIX)) == 0;
}

int pwhash_hash(const char *pass, size_t len, char out[static PWHASH_STR_MAX])
{
	char tmp[PWHASH_STR_MAX];

	/* libsodium declares the password nonnull, even when empty. */
	if (pass == NULL) {
		if (len != 0)
			return ST_EINVAL;
		pass = "";
	}
	/* The argon2id variant explicitly (crypto_pwhash_str's default today): the prefix is part of
	 * what pwhash_str_valid and the database accept. libsodium clears its output first on
	 * failure, so hash into a local: a failed call leaves out as it was. */
	if (crypto_pwhash_argon2id_str(tmp, pass, len, crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE,
				       crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE) != 0)
		return ST_ENOMEM;
	memcpy(out, tmp, sizeof(tmp));
	return ST_OK;
}

int pwhash_verify(const char *hash, const char *pass, size_t len)
{
	if (!pwhash_str_valid(hash))
		return ST_EAUTH;
	if (pass == NULL) {
		if (len != 0)
			return ST_EAUTH;
		pass = "";
	}
	/* -1 for a mismatch, a malformed string and a failed allocation alike: all refuse. */
	if (crypto_pwhash_str_verify(hash, pass, len) != 0)
		return ST_EAUTH;
	return ST_OK;
}

/* ---- cache ----------------------------------------------------------------------------------- */

#define CACHE_WAYS 4
#define DIGEST_BYTES crypto_generichash_BYTES /* 32: BLAKE2b-256 */
#define KEY_BYTES crypto_generichash_KEYBYTES

struct cache_entry {
	unsigned char digest[DIGEST_BYTES];
	double expiry; /* monotonic seconds; valid while now < expiry */
	bool used;
};

struct pwhash_cache {
	unsigned char *key;	    /* KEY_BYTES, sodium_malloc'd, read-only after filling */
	struct cache_entry *entries; /* nsets * CACHE_WAYS */
	size_t nsets;		    /* a power of two */
	double ttl;
};

int pwhash_cache_new(size_t slots, double ttl, struct pwhash_cache **out)
{
	struct pwhash_cache *c = NULL;
	size_t n = CACHE_WAYS;
	int st = ST_ENOMEM;

	/* sodium_malloc needs the page size that sodium_init records; cheap when already done. */
	if (sodium_init() < 0)
		return ST_ECRYPTO;
	/* Round up to a power of two, at least one full set. */
	while (n < slots) {
		if (n > SIZE_MAX / 2 / sizeof(struct cache_entry))
			return ST_ENOMEM;
		n <<= 1;
	}

	c = calloc(1, sizeof(*c));
	if (c == NULL)
		goto fail;
	c->entries = calloc(n, sizeof(*c->entries));
	c->key = sodium_malloc(KEY_BYTES);
	if (c->entries == NULL || c->key == NULL)
		goto fail;
	randombytes_buf(c->key, KEY_BYTES);
	if (sodium_mprotect_readonly(c->key) != 0)
		goto fail;
	c->nsets = n / CACHE_WAYS;
	c->ttl = ttl;
	*out = c;
	return ST_OK;
fail:
	pwhash_cache_free(c);
	return st;
}

void pwhash_cache_free(struct pwhash_cache *c)
{
	if (c == NULL)
		return;
	/* sodium_free makes the key writable again, wipes and unmaps it. */
	if (c->key != NULL)
		sodium_free(c->key);
	if (c->entries != NULL) {
		sodium_memzero(c->entries, c->nsets * CACHE_WAYS * sizeof(*c->entries));
		free(c->entries);
	}
	free(c);
}

/* One field of the digest input: its length as 8 bytes little-endian, then its bytes. With every
 * length written, ("ab", "c") and ("a", "bc") are different inputs. */
static void digest_field(crypto_generichash_state *state, const void *p, size_t len)
{
	unsigned char prefix[8];
	uint64_t v = (uint64_t)len;

	for (size_t i = 0; i < sizeof(prefix); i++)
		prefix[i] = (unsigned char)(v >> (8 * i));
	crypto_generichash_update(state, prefix, sizeof(prefix));
	crypto_generichash_update(state, p, len);
}

/* BLAKE2b-256 keyed with the cache's key over (user, pass, hash). */
static void cache_digest(const struct pwhash_cache *c, const char *user, const char *pass,
			 size_t plen, const char *hash, unsigned char out[static DIGEST_BYTES])
{
	crypto_generichash_state state;

	crypto_generichash_init(&state, c->key, KEY_BYTES, DIGEST_BYTES);
	digest_field(&state, user, strlen(user));
	digest_field(&state, pass != NULL ? pass : "", pass != NULL ? plen : 0);
	digest_field(&state, hash, strlen(hash));
	crypto_generichash_final(&state, out, DIGEST_BYTES);
	/* The state holds the password's absorbed block and the key. */
	sodium_memzero(&state, sizeof(state));
}

/* The set a digest maps to: its first 8 bytes, little-endian, modulo the number of sets. */
static struct cache_entry *cache_set(const struct pwhash_cache *c,
				     const unsigned char digest[static DIGEST_BYTES])
{
	uint64_t v = 0;

	for (size_t i = 0; i < 8; i++)
		v |= (uint64_t)digest[i] << (8 * i);
	return &c->entries[(size_t)(v & (uint64_t)(c->nsets - 1)) * CACHE_WAYS];
}

bool pwhash_cache_check(struct pwhash_cache *c, const char *user, const char *pass, size_t plen,
			const char *hash, double now)
{
	unsigned char digest[DIGEST_BYTES];
	struct cache_entry *set;
	bool hit = false;

	cache_digest(c, user, pass, plen, hash, digest);
	set = cache_set(c, digest);
	/* Every way is compared, in constant time: how long a check takes tells nothing. */
	for (size_t i = 0; i < CACHE_WAYS; i++) {
		bool live = set[i].used && now < set[i].expiry;

		if (sodium_memcmp(set[i].digest, digest, DIGEST_BYTES) == 0 && live)
			hit = true;
	}
	sodium_memzero(digest, sizeof(digest));
	return hit;
}

void pwhash_cache_put(struct pwhash_cache *c, const char *user, const char *pass, size_t plen,
		      const char *hash, double now)
{
	unsigned char digest[DIGEST_BYTES];
	struct cache_entry *set, *victim = NULL;
	size_t i;

	cache_digest(c, user, pass, plen, hash, digest);
	set = cache_set(c, digest);
	/* The same triple again: refresh its entry rather than hold it twice. */
	for (i = 0; i < CACHE_WAYS && victim == NULL; i++) {
		if (set[i].used && sodium_memcmp(set[i].digest, digest, DIGEST_BYTES) == 0)
			victim = &set[i];
	}
	/* Else a free or expired way. */
	for (i = 0; i < CACHE_WAYS && victim == NULL; i++) {
		if (!set[i].used || !(now < set[i].expiry))
			victim = &set[i];
	}
	/* Else the way that would expire soonest: with one ttl for all, the oldest put. */
	if (victim == NULL) {
		victim = &set[0];
		for (i = 1; i < CACHE_WAYS; i++) {
			if (set[i].expiry < victim->expiry)
				victim = &set[i];
		}
	}
	memcpy(victim->digest, digest, DIGEST_BYTES);
	victim->expiry = now + c->ttl;
	victim->used = true;
	sodium_memzero(digest, sizeof(digest));
}
