/* crypto/keys.c - keyed BLAKE2b, randomness, secrets in guarded memory, X25519 keys and their text
 * forms. */
#include "crypto/keys.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "crypto/noise.h"

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

/* ---- secrets in guarded memory --------------------------------------------------------------- */

/* The largest secret: far above any key, small enough that a wrong length is caught. */
#define SECRET_MAX 4096

/* The header is ordinary memory: a pointer and a length are not secret. */
struct keys_secret {
	uint8_t *data; /* sodium_malloc'd: guard pages around, canary before */
	size_t len;
	bool locked;
};

int keys_secret_new(size_t len, struct keys_secret **out)
{
	struct keys_secret *s;

	if (len == 0 || len > SECRET_MAX)
		return ST_EINVAL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return ST_ENOMEM;
	/* sodium_malloc needs the page size that sodium_init records; cheap when already done. */
	if (sodium_init() < 0) {
		free(s);
		return ST_ENOMEM;
	}
	s->data = sodium_malloc(len);
	if (s->data == NULL) {
		free(s);
		return ST_ENOMEM;
	}
	/* sodium_malloc fills with 0xdb: start from zero, so a short fill is not mistaken for
	 * key material. */
	sodium_memzero(s->data, len);
	s->len = len;
	*out = s;
	return ST_OK;
}

uint8_t *keys_secret_data(struct keys_secret *s)
{
	return s->locked ? NULL : s->data;
}

const uint8_t *keys_secret_bytes(const struct keys_secret *s)
{
	return s->data;
}

size_t keys_secret_len(const struct keys_secret *s)
{
	return s->len;
}

int keys_secret_lock(struct keys_secret *s)
{
	if (s->locked)
		return ST_OK;
	if (sodium_mprotect_readonly(s->data) != 0)
		return ST_ESYS;
	s->locked = true;
	return ST_OK;
}

void keys_secret_free(struct keys_secret *s)
{
	if (s == NULL)
		return;
	/* sodium_free makes the pages writable again, checks the canary, wipes and unmaps. */
	sodium_free(s->data);
	free(s);
}

/* ---- X25519 ---------------------------------------------------------------------------------- */

_Static_assert(KEYS_X25519_BYTES == crypto_scalarmult_BYTES, "X25519 public key size");
_Static_assert(KEYS_X25519_BYTES == crypto_scalarmult_SCALARBYTES, "X25519 private key size");

int keys_x25519_public(uint8_t pub[static KEYS_X25519_BYTES],
		       const uint8_t priv[static KEYS_X25519_BYTES])
{
	return noise_public_key(pub, priv);
}

int keys_x25519_generate(struct keys_secret *priv, uint8_t pub[static KEYS_X25519_BYTES])
{
	uint8_t *p = keys_secret_data(priv);

	if (p == NULL || priv->len != KEYS_X25519_BYTES)
		return ST_EINVAL;
	/* RFC 7748 §5: any 32 random bytes are a private key; X25519 clamps them when used. */
	randombytes_buf(p, KEYS_X25519_BYTES);
	return keys_x25519_public(pub, p);
}

bool keys_x25519_public_usable(const uint8_t pub[static KEYS_X25519_BYTES])
{
	/* Any scalar will do: X25519 clamps it to a multiple of the cofactor 8, so the product
	 * with a point of order 1, 2, 4 or 8 (on the curve or its twist) is the neutral element,
	 * which crypto_scalarmult reports as -1. The scalar is not secret: only pub is examined. */
	static const uint8_t scalar[KEYS_X25519_BYTES] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	uint8_t shared[KEYS_X25519_BYTES];
	int rc = crypto_scalarmult(shared, scalar, pub);

	sodium_memzero(shared, sizeof(shared));
	return rc == 0;
}

/* ---- text forms ------------------------------------------------------------------------------ */

_Static_assert(KEYS_BASE64_SIZE == sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL),
	       "44 characters and a NUL");

void keys_base64_encode(char out[static KEYS_BASE64_SIZE], const uint8_t key[static 32])
{
	sodium_bin2base64(out, KEYS_BASE64_SIZE, key, 32, sodium_base64_VARIANT_ORIGINAL);
}

/* Decode into a scratch buffer and copy only on success: libsodium may have written part of the
 * output before it finds the text bad. */
int keys_base64_decode(uint8_t out[static 32], const char *text, size_t len)
{
	uint8_t tmp[32];
	size_t n = 0;
	int st = ST_EINVAL;

	/* The exact length first: libsodium accepts a shorter text that decodes to fewer bytes. */
	if (text != NULL && len == KEYS_BASE64_LEN &&
	    sodium_base642bin(tmp, sizeof(tmp), text, len, NULL, &n, NULL,
			      sodium_base64_VARIANT_ORIGINAL) == 0 &&
	    n == sizeof(tmp)) {
		memcpy(out, tmp, sizeof(tmp));
		st = ST_OK;
	}
	sodium_memzero(tmp, sizeof(tmp));
	return st;
}

void keys_hex_encode(char *out, const uint8_t *bin, size_t len)
{
	sodium_bin2hex(out, 2 * len + 1, bin, len);
}

int keys_secret_from_hex(const char *hex, size_t len, struct keys_secret **out)
{
	struct keys_secret *s = NULL;
	size_t n = 0;
	int st;

	if (hex == NULL || len == 0 || len > SECRET_MAX || strlen(hex) != 2 * len)
		return ST_EINVAL;
	st = keys_secret_new(len, &s);
	if (st != ST_OK)
		return st;
	/* No ignore set and no end pointer: every character must be a hex digit. */
	if (sodium_hex2bin(keys_secret_data(s), len, hex, 2 * len, NULL, &n, NULL) != 0 || n != len) {
		st = ST_EINVAL;
		goto out;
	}
	st = keys_secret_lock(s);
	if (st != ST_OK)
		goto out;
	*out = s;
	s = NULL; /* transferred */
out:
	keys_secret_free(s);
	return st;
}

int keys_private_parse(const char *text, size_t len, struct keys_secret **out)
{
	struct keys_secret *s = NULL;
	size_t n = 0;
	int st;

	if (text == NULL)
		return ST_EINVAL;
	if (len == KEYS_BASE64_LEN + 1 && text[KEYS_BASE64_LEN] == '\n')
		len = KEYS_BASE64_LEN;
	if (len != KEYS_BASE64_LEN)
		return ST_EINVAL;
	st = keys_secret_new(KEYS_X25519_BYTES, &s);
	if (st != ST_OK)
		return st;
	/* Straight into guarded memory: no copy of the key on the stack. */
	if (sodium_base642bin(keys_secret_data(s), KEYS_X25519_BYTES, text, len, NULL, &n, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    n != KEYS_X25519_BYTES) {
		st = ST_EINVAL;
		goto out;
	}
	st = keys_secret_lock(s);
	if (st != ST_OK)
		goto out;
	*out = s;
	s = NULL; /* transferred */
out:
	keys_secret_free(s);
	return st;
}
