/*
 * crypto/noise.h - the Noise Protocol Framework (revision 34), 25519_ChaChaPoly_BLAKE2b only.
 *
 * The three objects of the specification, §5:
 *   struct noise_cipher      CipherState: k, n; ENCRYPT/DECRYPT with associated data, REKEY
 *   struct noise_symmetric   SymmetricState: ck, h and a CipherState; MixKey, MixHash, Split
 *   struct noise_handshake   HandshakeState: the keys and a handshake pattern, interpreted token by
 *                            token (e, s, ee, es, se, ss, psk) with pre-messages and a prologue
 * and the primitives of §4, on libsodium (LINK.md's table):
 *   DH       X25519, crypto_scalarmult; a low-order public key or an all-zero result is an error
 *   CIPHER   ChaCha20-Poly1305 IETF; nonce = 4 zero bytes || n as 8 bytes little-endian
 *   HASH     BLAKE2b with a 64-byte output (HASHLEN 64, BLOCKLEN 128)
 *   HMAC     RFC 2104 over unkeyed BLAKE2b (not BLAKE2b's keyed mode, which is another MAC)
 *   HKDF     §4.3, on that HMAC
 *
 * Patterns come from the protocol name ("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b"): every one-way,
 * fundamental and deferred pattern of §7 is built in, and any number of pskN modifiers (§9) applies
 * to it; the fallback modifier is not supported.
 *
 * Pure: no I/O, no clock, no logging, never allocates. Randomness only for an ephemeral key that
 * was not given. pwhash_init (sodium_init) must have run. The structs are plain values the caller
 * embeds wherever it likes; they hold secrets, so whoever owns one wipes it (noise_*_wipe) when
 * done with it, on every path. A failed call leaves every struct it was given exactly as it was,
 * and writes no output.
 */
#ifndef SHROUD_CRYPTO_NOISE_H
#define SHROUD_CRYPTO_NOISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/compiler.h"

#define NOISE_DH_LEN 32	  /* DHLEN: X25519 keys and shared secrets */
#define NOISE_KEY_LEN 32  /* cipher keys */
#define NOISE_HASH_LEN 64 /* HASHLEN: h, ck and the handshake hash */
#define NOISE_BLOCK_LEN 128 /* BLOCKLEN of BLAKE2b, the HMAC block */
#define NOISE_TAG_LEN 16  /* Poly1305 tag */
#define NOISE_PSK_LEN 32
#define NOISE_MSG_MAX 65535 /* §3: no Noise message is longer */
#define NOISE_NONCE_MAX UINT64_MAX /* §5.1: reserved for REKEY, never used to encrypt a message */

#define NOISE_MESSAGES_MAX 4 /* handshake messages in the longest pattern (X1X1 & co) */
#define NOISE_TOKENS_MAX 8   /* tokens in one message, psk tokens included */
#define NOISE_PSKS_MAX 4     /* psk tokens in one pattern (XXpsk0+psk1+psk2+psk3) */
#define NOISE_PROTOCOL_MAX 255 /* longest protocol name accepted */

/* ---- CipherState (§5.1) --------------------------------------------------------------------- */

struct noise_cipher {
	uint8_t k[NOISE_KEY_LEN];
	uint64_t n;
	bool has_key; /* false: "empty", ENCRYPT and DECRYPT pass bytes through */
};

/* InitializeKey(k): set k, n = 0. */
void noise_cipher_init(struct noise_cipher *c, const uint8_t k[static NOISE_KEY_LEN]);

/* InitializeKey(empty), wiping the old key. Also the way to wipe a CipherState when done. */
void noise_cipher_wipe(struct noise_cipher *c);

/* SetNonce(n). Only tests need it (to reach the nonce limit without 2^64 calls). */
void noise_cipher_set_nonce(struct noise_cipher *c, uint64_t n);

/*
 * EncryptWithAd(ad, plaintext): writes len + NOISE_TAG_LEN bytes (len bytes when the state has no
 * key) to out and advances n. out may be exactly in (in place); no other overlap. ad may be NULL
 * when adlen is 0. Returns ST_OK, or ST_ECRYPTO when n has reached NOISE_NONCE_MAX (the nonce space
 * is exhausted: nothing is written and the state can never encrypt again without a new key).
 */
NODISCARD int noise_cipher_encrypt(struct noise_cipher *c, const uint8_t *ad, size_t adlen,
				   const uint8_t *in, size_t len, uint8_t *out);

/*
 * DecryptWithAd(ad, ciphertext): writes len - NOISE_TAG_LEN bytes (len without a key) to out and
 * advances n. out may be exactly in. Returns ST_OK, or ST_ECRYPTO when the tag does not verify, len
 * is shorter than a tag, or n has reached NOISE_NONCE_MAX; then out is untouched (the tag is checked
 * before a byte is decrypted) and n has not moved.
 */
NODISCARD int noise_cipher_decrypt(struct noise_cipher *c, const uint8_t *ad, size_t adlen,
				   const uint8_t *in, size_t len, uint8_t *out);

/* Rekey() (§4.2, §11.3): k = the first 32 bytes of ENCRYPT(k, 2^64-1, "", 32 zero bytes); n is
 * kept. No effect on a state without a key. */
void noise_cipher_rekey(struct noise_cipher *c);

/* ---- SymmetricState (§5.2) ------------------------------------------------------------------ */

struct noise_symmetric {
	struct noise_cipher cs;
	uint8_t ck[NOISE_HASH_LEN]; /* chaining key */
	uint8_t h[NOISE_HASH_LEN];  /* handshake hash */
};

/* InitializeSymmetric(protocol_name): h = the name zero-padded to HASHLEN, or HASH(name) when
 * longer; ck = h; no cipher key. */
void noise_symmetric_init(struct noise_symmetric *ss, const char *protocol_name);

/* MixKey(ikm): ck, temp_k = HKDF(ck, ikm, 2); InitializeKey(temp_k[0..32)). */
void noise_symmetric_mix_key(struct noise_symmetric *ss, const uint8_t *ikm, size_t len);

/* MixHash(data): h = HASH(h || data). */
void noise_symmetric_mix_hash(struct noise_symmetric *ss, const uint8_t *data, size_t len);

/* MixKeyAndHash(ikm): ck, temp_h, temp_k = HKDF(ck, ikm, 3); MixHash(temp_h);
 * InitializeKey(temp_k[0..32)). */
void noise_symmetric_mix_key_and_hash(struct noise_symmetric *ss, const uint8_t *ikm, size_t len);

/* EncryptAndHash(plaintext): out = EncryptWithAd(h, plaintext); MixHash(out). Sizes and errors as
 * noise_cipher_encrypt; a failure leaves ss unchanged. */
NODISCARD int noise_symmetric_encrypt_and_hash(struct noise_symmetric *ss, const uint8_t *in,
					       size_t len, uint8_t *out);

/* DecryptAndHash(ciphertext): out = DecryptWithAd(h, ciphertext); MixHash(ciphertext). Sizes and
 * errors as noise_cipher_decrypt; a failure leaves ss and out unchanged. out may be exactly in. */
NODISCARD int noise_symmetric_decrypt_and_hash(struct noise_symmetric *ss, const uint8_t *in,
					       size_t len, uint8_t *out);

/* Split(): temp_k1, temp_k2 = HKDF(ck, "", 2); c1 and c2 keyed with their first 32 bytes. */
void noise_symmetric_split(const struct noise_symmetric *ss, struct noise_cipher *c1,
			   struct noise_cipher *c2);

/* Wipe every byte of ss. */
void noise_symmetric_wipe(struct noise_symmetric *ss);

/* ---- handshake patterns (§7, §9) ------------------------------------------------------------ */

enum noise_token {
	NOISE_TOKEN_E = 1,
	NOISE_TOKEN_S,
	NOISE_TOKEN_EE,
	NOISE_TOKEN_ES,
	NOISE_TOKEN_SE,
	NOISE_TOKEN_SS,
	NOISE_TOKEN_PSK,
};

/*
 * A handshake pattern: the pre-messages and the messages as token lists. Message i is written by
 * the initiator when i is even, by the responder when it is odd (§7.1: the arrows alternate, the
 * first is "->"). A pattern of one message is one-way (§7.4): after it, only the initiator sends.
 */
struct noise_pattern {
	uint8_t pre[2][2]; /* pre-message tokens (E, S) of the initiator [0] and the responder [1] */
	uint8_t npre[2];
	uint8_t nmsg;
	uint8_t ntok[NOISE_MESSAGES_MAX];
	uint8_t tok[NOISE_MESSAGES_MAX][NOISE_TOKENS_MAX];
	uint8_t npsk; /* psk tokens; nonzero makes this a psk handshake (§9.2) */
};

/*
 * Parse a pattern written in the specification's notation, one line per message, pre-messages
 * first and ended by a "..." line when there are any:
 *     "<- s\n...\n-> e, es, s, ss\n<- e, ee, se"
 * Pre-messages hold only e and s, the initiator's line first; message lines alternate from "->".
 * ST_OK, or ST_EINVAL (out unchanged) for anything else or anything larger than the *_MAX above.
 */
NODISCARD int noise_pattern_parse(const char *notation, struct noise_pattern *out);

/* Apply the modifier pskN (§9.1): psk0 puts a psk token first in message 0, pskN (N >= 1) last in
 * message N-1. ST_OK, or ST_EINVAL (p unchanged) when there is no such message or no room. */
NODISCARD int noise_pattern_add_psk(struct noise_pattern *p, unsigned n);

/*
 * Pattern of a full protocol name, "Noise_" PATTERN MODIFIERS "_25519_ChaChaPoly_BLAKE2b", where
 * PATTERN is one of §7's (N K X NN NK NX XN XK XX KN KK KX IN IK IX and the deferred NK1 ... I1X1)
 * and MODIFIERS is empty or pskN modifiers joined by '+' ("psk0+psk2"). ST_OK, or ST_EINVAL (out
 * unchanged) for another pattern, modifier or set of functions.
 */
NODISCARD int noise_protocol_parse(const char *protocol_name, struct noise_pattern *out);

/* ---- HandshakeState (§5.3) ------------------------------------------------------------------ */

/* Everything Initialize() takes (§5.3). Keys are copied; the caller keeps ownership of its own. */
struct noise_config {
	const char *protocol; /* full protocol name, see noise_protocol_parse */
	bool initiator;
	const uint8_t *prologue; /* may be NULL when prologue_len is 0 */
	size_t prologue_len;
	const uint8_t *s;  /* local static private key (NOISE_DH_LEN), or NULL */
	const uint8_t *s_pub; /* its public key when the caller keeps it, or NULL to derive it
				 from s (one X25519); it must be s's, or no peer will agree */
	const uint8_t *e;  /* local ephemeral private key, or NULL for a fresh random one when the
			      pattern needs it. Fixed ephemerals are for test vectors only. */
	const uint8_t *rs; /* remote static public key known in advance, or NULL */
	const uint8_t *re; /* remote ephemeral public key known in advance, or NULL */
	const uint8_t *psks; /* npsks * NOISE_PSK_LEN bytes for the psk tokens in order, or NULL */
	size_t npsks;	     /* may be fewer than the pattern needs (noise_handshake_add_psk) */
};

struct noise_handshake {
	struct noise_symmetric sym;
	struct noise_pattern pat;
	uint8_t s[NOISE_DH_LEN], s_pub[NOISE_DH_LEN];
	uint8_t e[NOISE_DH_LEN], e_pub[NOISE_DH_LEN];
	uint8_t rs[NOISE_DH_LEN], re[NOISE_DH_LEN];
	uint8_t psk[NOISE_PSKS_MAX][NOISE_PSK_LEN];
	uint8_t npsk_set;  /* psks given so far */
	uint8_t npsk_used; /* psk tokens processed so far */
	uint8_t msg;	   /* index of the next handshake message */
	bool initiator, has_s, has_e, has_rs, has_re;
	uint8_t phase; /* internal: initialised, finished, split */
};

/* What the handshake expects next. */
enum noise_action {
	NOISE_ACTION_NONE = 0, /* not initialised, or already split */
	NOISE_ACTION_WRITE,    /* call noise_handshake_write */
	NOISE_ACTION_READ,     /* call noise_handshake_read */
	NOISE_ACTION_SPLIT,    /* every message is done: call noise_handshake_split */
};

/*
 * Initialize(): InitializeSymmetric(protocol), MixHash(prologue), then MixHash of each pre-message
 * public key (§5.3; in a psk handshake a pre-message e is also MixKey'ed, §9.2).
 * ST_OK; ST_EINVAL (hs wiped) for an unknown protocol, a pre-message key that was not given, or
 * more psks than NOISE_PSKS_MAX; ST_ECRYPTO (hs wiped) when a private key gives no public key.
 */
NODISCARD int noise_handshake_init(struct noise_handshake *hs, const struct noise_config *cfg);

/*
 * Give the next psk, for a party that learns it during the handshake (a responder that looks the
 * initiator's psk up by its static key). ST_OK, or ST_EFULL when NOISE_PSKS_MAX are already set.
 */
NODISCARD int noise_handshake_add_psk(struct noise_handshake *hs,
				      const uint8_t psk[static NOISE_PSK_LEN]);

enum noise_action noise_handshake_action(const struct noise_handshake *hs);

/*
 * WriteMessage(payload, message_buffer): process the next message's tokens and encrypt the
 * payload into out (cap bytes), *out_len set to the message length. Returns ST_OK;
 * ST_EINVAL when it is not our turn to write or a key the tokens need is missing; ST_ETOOBIG when
 * the message would exceed cap or NOISE_MSG_MAX; ST_ECRYPTO when a DH fails (the remote key is of
 * low order). On failure hs, out and *out_len are unchanged. payload may not overlap out.
 */
NODISCARD int noise_handshake_write(struct noise_handshake *hs, const uint8_t *payload, size_t plen,
				    uint8_t *out, size_t cap, size_t *out_len);

/*
 * ReadMessage(message, payload_buffer): process the next message's tokens from msg (len bytes,
 * exactly one message) and decrypt its payload into payload (cap bytes), *payload_len set.
 * Returns ST_OK; ST_EINVAL when it is not our turn to read or a key is missing; ST_EPROTO when
 * len is too short for the tokens or longer than NOISE_MSG_MAX; ST_ETOOBIG when the payload does
 * not fit in cap; ST_ECRYPTO when a DH or a decryption fails. On failure hs, payload and
 * *payload_len are unchanged, so a forged message costs the handshake nothing.
 */
NODISCARD int noise_handshake_read(struct noise_handshake *hs, const uint8_t *msg, size_t len,
				   uint8_t *payload, size_t cap, size_t *payload_len);

/*
 * Split() after the last message: the transport CipherStates from our side (the initiator sends
 * with the first, §5.2; in a one-way pattern the responder only receives). Then every secret of
 * hs is wiped; the handshake hash and the remote static key stay readable. ST_OK, or ST_EINVAL
 * (nothing written) before the last message.
 */
NODISCARD int noise_handshake_split(struct noise_handshake *hs, struct noise_cipher *send,
				    struct noise_cipher *recv);

/* The handshake hash h (§11.2; after the last message it names the session). ST_OK, or ST_EINVAL
 * before the handshake is finished. */
NODISCARD int noise_handshake_hash(const struct noise_handshake *hs,
				   uint8_t out[static NOISE_HASH_LEN]);

/* The remote static public key, once known (given, or read from an s token). ST_OK or
 * ST_ENOTFOUND. */
NODISCARD int noise_handshake_remote_static(const struct noise_handshake *hs,
					    uint8_t out[static NOISE_DH_LEN]);

/* The remote ephemeral public key, once read. ST_OK or ST_ENOTFOUND. */
NODISCARD int noise_handshake_remote_ephemeral(const struct noise_handshake *hs,
					       uint8_t out[static NOISE_DH_LEN]);

/* Wipe every byte of hs (abandoning a handshake, or after split). */
void noise_handshake_wipe(struct noise_handshake *hs);

/* ---- key pairs ------------------------------------------------------------------------------ */

/* GENERATE_KEYPAIR(): a fresh random X25519 key pair. */
void noise_keypair_generate(uint8_t priv[static NOISE_DH_LEN], uint8_t pub[static NOISE_DH_LEN]);

/* The public key of a private key. ST_OK, or ST_ECRYPTO (pub untouched) if there is none. */
NODISCARD int noise_public_key(uint8_t pub[static NOISE_DH_LEN],
			       const uint8_t priv[static NOISE_DH_LEN]);

#endif
