/*
 * crypto/keys.h - keyed hashing, randomness and key material for the other modules (libsodium
 * underneath).
 *
 * keys_hash is BLAKE2b-256 keyed with a 32-byte secret: the sticky-selection key
 * (DESIGN.md, "One connection", step 6) is keys_hash(salt, user | session | site), so an
 * observer of source addresses learns nothing that links users, sessions or sites.
 *
 * The encrypted link (LINK.md, "Keys") adds X25519 key pairs, their text form and a container for
 * long-term secrets (the server's and a client's static private key, a PSK): memory from
 * sodium_malloc (guard pages, mlock'd where the system allows), read-only once filled, wiped when
 * freed. Nothing here blocks, logs or touches a file; only the functions that make a new secret
 * allocate.
 * pwhash_init (or sodium_init) must have run.
 */
#ifndef SHROUD_CRYPTO_KEYS_H
#define SHROUD_CRYPTO_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/compiler.h"

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

/* ---- secrets in guarded memory ---- */

/*
 * A secret of fixed length in its own sodium_malloc'd pages. Filled through keys_secret_data()
 * while writable, then made read-only with keys_secret_lock(): a stray write afterwards faults
 * instead of corrupting a key. keys_secret_free wipes and unmaps it, locked or not.
 */
struct keys_secret;

/* A new zero-filled, writable secret of len bytes (1..4096). ST_OK, ST_EINVAL (len),
 * ST_ENOMEM. */
NODISCARD int keys_secret_new(size_t len, struct keys_secret **out);

/* The bytes, for filling; NULL once the secret is locked (writing would fault). */
uint8_t *keys_secret_data(struct keys_secret *s);

/* The bytes, for reading (locked or not); valid until keys_secret_free. */
const uint8_t *keys_secret_bytes(const struct keys_secret *s);

size_t keys_secret_len(const struct keys_secret *s);

/* Make the secret read-only (sodium_mprotect_readonly). ST_OK, or ST_ESYS with errno. Locking a
 * locked secret is ST_OK. */
NODISCARD int keys_secret_lock(struct keys_secret *s);

/* Wipe and release. NULL is a no-op. */
void keys_secret_free(struct keys_secret *s);

/* ---- X25519 keys (LINK.md: S_srv, S_cli) ---- */

#define KEYS_X25519_BYTES 32 /* a public or a private key */
#define KEYS_PSK_BYTES 32

/*
 * A fresh key pair: the private key into priv (a writable secret of KEYS_X25519_BYTES; left
 * writable), its public key into pub. ST_OK, ST_EINVAL (priv locked or of another length),
 * ST_ECRYPTO.
 */
NODISCARD int keys_x25519_generate(struct keys_secret *priv, uint8_t pub[static KEYS_X25519_BYTES]);

/* pub = X25519(priv, 9) (crypto_scalarmult_base). ST_OK, or ST_ECRYPTO (an all-zero result). */
NODISCARD int keys_x25519_public(uint8_t pub[static KEYS_X25519_BYTES],
				 const uint8_t priv[static KEYS_X25519_BYTES]);

/*
 * True when pub can be a peer's static key: not one of the low-order points, with which every
 * Diffie-Hellman result is all-zero (and the handshake could not succeed, LINK.md: "returns -1 for
 * low-order points"). Refusing them when a key is registered turns a silent failure later into a
 * clear error now.
 */
bool keys_x25519_public_usable(const uint8_t pub[static KEYS_X25519_BYTES]);

/* ---- text forms ---- */

/* A 32-byte key in standard base64 with padding (RFC 4648 §4), WireGuard's form: 44 characters. */
#define KEYS_BASE64_LEN 44
#define KEYS_BASE64_SIZE (KEYS_BASE64_LEN + 1) /* with the NUL */

/* out = base64 of the 32 bytes of key, NUL-terminated. */
void keys_base64_encode(char out[static KEYS_BASE64_SIZE], const uint8_t key[static 32]);

/*
 * Decode exactly KEYS_BASE64_LEN characters of text (len is its length) into 32 bytes: no
 * whitespace, padding required, unused bits zero (so the encoding is unique). ST_OK, or ST_EINVAL
 * with out unchanged.
 */
NODISCARD int keys_base64_decode(uint8_t out[static 32], const char *text, size_t len);

/* Lower-case hex of len bytes into out (2 * len + 1 bytes, NUL included). */
void keys_hex_encode(char *out, const uint8_t *bin, size_t len);

/*
 * A new locked secret holding the len bytes that exactly 2 * len hex digits in hex stand for
 * (either case, nothing else). ST_OK, ST_EINVAL (not that), ST_ENOMEM, ST_ESYS; nothing is left
 * behind on failure.
 */
NODISCARD int keys_secret_from_hex(const char *hex, size_t len, struct keys_secret **out);

/*
 * A key file's contents (the private key `shroud keygen` writes): the base64 key and one "\n", or
 * the base64 key alone. Decoded straight into a new locked secret of KEYS_X25519_BYTES.
 * ST_OK, ST_EINVAL (anything else), ST_ENOMEM, ST_ESYS.
 */
NODISCARD int keys_private_parse(const char *text, size_t len, struct keys_secret **out);

#endif
