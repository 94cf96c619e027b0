/*
 * crypto/noise.c - the Noise Protocol Framework, 25519_ChaChaPoly_BLAKE2b, on libsodium.
 *
 * Section numbers are those of the Noise specification, revision 34. The handshake works on a copy
 * of the HandshakeState and commits it only when the whole message succeeded (WireGuard's habit):
 * a forged or truncated message leaves the caller's state as it was. Every temporary that held a
 * key, a shared secret or a chaining key is wiped before return.
 */
#include "crypto/noise.h"

#include <sodium.h>
#include <string.h>

#include "base/status.h"

_Static_assert(NOISE_DH_LEN == crypto_scalarmult_BYTES, "X25519 sizes");
_Static_assert(NOISE_DH_LEN == crypto_scalarmult_SCALARBYTES, "X25519 sizes");
_Static_assert(NOISE_KEY_LEN == crypto_aead_chacha20poly1305_ietf_KEYBYTES, "key size");
_Static_assert(NOISE_TAG_LEN == crypto_aead_chacha20poly1305_ietf_ABYTES, "tag size");
_Static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12, "IETF nonce is 96 bits");
_Static_assert(NOISE_HASH_LEN <= crypto_generichash_blake2b_BYTES_MAX, "BLAKE2b-512");

/* Phases of a HandshakeState. Zero is "never initialised" (a wiped struct). */
enum { PHASE_NONE = 0, PHASE_ACTIVE, PHASE_FINISHED, PHASE_SPLIT };

/* ---- primitives (§4) ------------------------------------------------------------------------ */

/* DH(key_pair, public_key). libsodium refuses low-order points (-1); an all-zero result is checked
 * as well, so no version of the library can hand back a secret an attacker chose. */
static int dh(uint8_t out[static NOISE_DH_LEN], const uint8_t priv[static NOISE_DH_LEN],
	      const uint8_t pub[static NOISE_DH_LEN])
{
	uint8_t tmp[NOISE_DH_LEN];

	if (crypto_scalarmult(tmp, priv, pub) != 0 || sodium_is_zero(tmp, sizeof(tmp))) {
		sodium_memzero(tmp, sizeof(tmp));
		return ST_ECRYPTO;
	}
	memcpy(out, tmp, sizeof(tmp));
	sodium_memzero(tmp, sizeof(tmp));
	return ST_OK;
}

/* The 96-bit IETF nonce: 32 bits of zeros, then n little-endian (§12.3, ChaChaPoly). */
static void nonce_encode(uint8_t out[static 12], uint64_t n)
{
	memset(out, 0, 4);
	for (size_t i = 0; i < 8; i++)
		out[4 + i] = (uint8_t)(n >> (8 * i));
}

/* HASH(a || b) with BLAKE2b-512; either part may be empty. */
static void hash2(uint8_t out[static NOISE_HASH_LEN], const uint8_t *a, size_t alen,
		  const uint8_t *b, size_t blen)
{
	crypto_generichash_blake2b_state st;

	crypto_generichash_blake2b_init(&st, NULL, 0, NOISE_HASH_LEN);
	if (alen > 0)
		crypto_generichash_blake2b_update(&st, a, alen);
	if (blen > 0)
		crypto_generichash_blake2b_update(&st, b, blen);
	crypto_generichash_blake2b_final(&st, out, NOISE_HASH_LEN);
	sodium_memzero(&st, sizeof(st));
}

/*
 * HMAC-HASH(key, data) per RFC 2104 with the unkeyed hash and B = BLOCKLEN = 128:
 *   H((K ^ opad) || H((K ^ ipad) || data)), K zero-padded to B (hashed first if longer).
 * The data is given in two parts (HKDF feeds "previous output || counter byte").
 */
static void hmac(uint8_t out[static NOISE_HASH_LEN], const uint8_t *key, size_t keylen,
		 const uint8_t *d1, size_t l1, const uint8_t *d2, size_t l2)
{
	crypto_generichash_blake2b_state st;
	uint8_t k[NOISE_BLOCK_LEN];
	uint8_t pad[NOISE_BLOCK_LEN];
	uint8_t inner[NOISE_HASH_LEN];

	memset(k, 0, sizeof(k));
	if (keylen > NOISE_BLOCK_LEN)
		hash2(k, key, keylen, NULL, 0);
	else if (keylen > 0)
		memcpy(k, key, keylen);

	for (size_t i = 0; i < NOISE_BLOCK_LEN; i++)
		pad[i] = k[i] ^ 0x36;
	crypto_generichash_blake2b_init(&st, NULL, 0, NOISE_HASH_LEN);
	crypto_generichash_blake2b_update(&st, pad, sizeof(pad));
	if (l1 > 0)
		crypto_generichash_blake2b_update(&st, d1, l1);
	if (l2 > 0)
		crypto_generichash_blake2b_update(&st, d2, l2);
	crypto_generichash_blake2b_final(&st, inner, sizeof(inner));

	for (size_t i = 0; i < NOISE_BLOCK_LEN; i++)
		pad[i] = k[i] ^ 0x5c;
	crypto_generichash_blake2b_init(&st, NULL, 0, NOISE_HASH_LEN);
	crypto_generichash_blake2b_update(&st, pad, sizeof(pad));
	crypto_generichash_blake2b_update(&st, inner, sizeof(inner));
	crypto_generichash_blake2b_final(&st, out, NOISE_HASH_LEN);

	sodium_memzero(&st, sizeof(st));
	sodium_memzero(k, sizeof(k));
	sodium_memzero(pad, sizeof(pad));
	sodium_memzero(inner, sizeof(inner));
}

/*
 * HKDF(chaining_key, input_key_material, num_outputs) (§4.3):
 *   temp_key = HMAC-HASH(chaining_key, input_key_material)
 *   output1 = HMAC-HASH(temp_key, byte(0x01))
 *   output2 = HMAC-HASH(temp_key, output1 || byte(0x02))
 *   output3 = HMAC-HASH(temp_key, output2 || byte(0x03))      (only when out3 is not NULL)
 * The outputs may alias ck (MixKey writes the new chaining key over the old one).
 */
static void hkdf(const uint8_t ck[static NOISE_HASH_LEN], const uint8_t *ikm, size_t ikm_len,
		 uint8_t out1[static NOISE_HASH_LEN], uint8_t out2[static NOISE_HASH_LEN],
		 uint8_t *out3)
{
	static const uint8_t one = 0x01, two = 0x02, three = 0x03;
	uint8_t temp_key[NOISE_HASH_LEN];
	uint8_t o1[NOISE_HASH_LEN], o2[NOISE_HASH_LEN];

	hmac(temp_key, ck, NOISE_HASH_LEN, ikm, ikm_len, NULL, 0);
	hmac(o1, temp_key, sizeof(temp_key), &one, 1, NULL, 0);
	hmac(o2, temp_key, sizeof(temp_key), o1, sizeof(o1), &two, 1);
	if (out3 != NULL)
		hmac(out3, temp_key, sizeof(temp_key), o2, sizeof(o2), &three, 1);
	memcpy(out1, o1, sizeof(o1));
	memcpy(out2, o2, sizeof(o2));
	sodium_memzero(temp_key, sizeof(temp_key));
	sodium_memzero(o1, sizeof(o1));
	sodium_memzero(o2, sizeof(o2));
}

/* ---- CipherState (§5.1) --------------------------------------------------------------------- */

void noise_cipher_init(struct noise_cipher *c, const uint8_t k[static NOISE_KEY_LEN])
{
	memmove(c->k, k, NOISE_KEY_LEN);
	c->n = 0;
	c->has_key = true;
}

void noise_cipher_wipe(struct noise_cipher *c)
{
	sodium_memzero(c, sizeof(*c));
}

void noise_cipher_set_nonce(struct noise_cipher *c, uint64_t n)
{
	c->n = n;
}

/* ENCRYPT(k, n, ad, plaintext) at an explicit nonce: ciphertext || tag into out. */
static void aead_encrypt(const uint8_t k[static NOISE_KEY_LEN], uint64_t n, const uint8_t *ad,
			 size_t adlen, const uint8_t *in, size_t len, uint8_t *out)
{
	uint8_t nonce[12];

	nonce_encode(nonce, n);
	crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, in, len, ad, adlen, NULL, nonce, k);
}

int noise_cipher_encrypt(struct noise_cipher *c, const uint8_t *ad, size_t adlen,
			 const uint8_t *in, size_t len, uint8_t *out)
{
	if (!c->has_key) {
		if (len > 0)
			memmove(out, in, len);
		return ST_OK;
	}
	/* §5.1: 2^64-1 is reserved; reaching it means the nonce space is spent. */
	if (c->n == NOISE_NONCE_MAX)
		return ST_ECRYPTO;
	aead_encrypt(c->k, c->n, ad, adlen, in, len, out);
	c->n++;
	return ST_OK;
}

int noise_cipher_decrypt(struct noise_cipher *c, const uint8_t *ad, size_t adlen,
			 const uint8_t *in, size_t len, uint8_t *out)
{
	uint8_t nonce[12];
	size_t mlen;

	if (!c->has_key) {
		if (len > 0)
			memmove(out, in, len);
		return ST_OK;
	}
	if (len < NOISE_TAG_LEN || c->n == NOISE_NONCE_MAX)
		return ST_ECRYPTO;
	mlen = len - NOISE_TAG_LEN;
	nonce_encode(nonce, c->n);
	/*
	 * Verify first, then decrypt with the stream from block 1: the two steps of
	 * crypto_aead_chacha20poly1305_ietf_decrypt_detached, which returns after the tag check when
	 * m is NULL (libsodium 1.0.18 and later), except that a forgery leaves out untouched instead
	 * of zeroed. test_noise's forgery tests fail if a libsodium ever behaves otherwise.
	 */
	if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(NULL, NULL, in, mlen, in + mlen, ad,
							       adlen, nonce, c->k) != 0)
		return ST_ECRYPTO;
	crypto_stream_chacha20_ietf_xor_ic(out, in, mlen, nonce, 1U, c->k);
	c->n++;
	return ST_OK;
}

void noise_cipher_rekey(struct noise_cipher *c)
{
	uint8_t zeros[NOISE_KEY_LEN];
	uint8_t out[NOISE_KEY_LEN + NOISE_TAG_LEN];

	if (!c->has_key)
		return;
	/* §4.2: REKEY(k) = ENCRYPT(k, maxnonce, zerolen, zeros)[0..32); n unchanged (§5.1). */
	memset(zeros, 0, sizeof(zeros));
	aead_encrypt(c->k, NOISE_NONCE_MAX, NULL, 0, zeros, sizeof(zeros), out);
	memcpy(c->k, out, NOISE_KEY_LEN);
	sodium_memzero(out, sizeof(out));
}

/* ---- SymmetricState (§5.2) ------------------------------------------------------------------ */

void noise_symmetric_init(struct noise_symmetric *ss, const char *protocol_name)
{
	size_t len = strlen(protocol_name);

	noise_symmetric_wipe(ss);
	/* §5.2 InitializeSymmetric: the name itself when it fits in HASHLEN, else its hash. */
	if (len <= NOISE_HASH_LEN)
		memcpy(ss->h, protocol_name, len);
	else
		hash2(ss->h, (const uint8_t *)protocol_name, len, NULL, 0);
	memcpy(ss->ck, ss->h, NOISE_HASH_LEN);
}

void noise_symmetric_mix_key(struct noise_symmetric *ss, const uint8_t *ikm, size_t len)
{
	uint8_t temp_k[NOISE_HASH_LEN];

	hkdf(ss->ck, ikm, len, ss->ck, temp_k, NULL);
	/* HASHLEN 64: temp_k is truncated to the 32 bytes of a cipher key. */
	noise_cipher_init(&ss->cs, temp_k);
	sodium_memzero(temp_k, sizeof(temp_k));
}

void noise_symmetric_mix_hash(struct noise_symmetric *ss, const uint8_t *data, size_t len)
{
	hash2(ss->h, ss->h, NOISE_HASH_LEN, data, len);
}

void noise_symmetric_mix_key_and_hash(struct noise_symmetric *ss, const uint8_t *ikm, size_t len)
{
	uint8_t temp_h[NOISE_HASH_LEN], temp_k[NOISE_HASH_LEN];

	hkdf(ss->ck, ikm, len, ss->ck, temp_h, temp_k);
	noise_symmetric_mix_hash(ss, temp_h, sizeof(temp_h));
	noise_cipher_init(&ss->cs, temp_k);
	sodium_memzero(temp_h, sizeof(temp_h));
	sodium_memzero(temp_k, sizeof(temp_k));
}

int noise_symmetric_encrypt_and_hash(struct noise_symmetric *ss, const uint8_t *in, size_t len,
				     uint8_t *out)
{
	size_t clen = len + (ss->cs.has_key ? NOISE_TAG_LEN : 0);
	int st;

	st = noise_cipher_encrypt(&ss->cs, ss->h, NOISE_HASH_LEN, in, len, out);
	if (st != ST_OK)
		return st;
	noise_symmetric_mix_hash(ss, out, clen);
	return ST_OK;
}

int noise_symmetric_decrypt_and_hash(struct noise_symmetric *ss, const uint8_t *in, size_t len,
				     uint8_t *out)
{
	uint8_t h_next[NOISE_HASH_LEN];
	int st;

	/* The next h covers the ciphertext: hash it before an in-place decryption overwrites it. */
	hash2(h_next, ss->h, NOISE_HASH_LEN, in, len);
	st = noise_cipher_decrypt(&ss->cs, ss->h, NOISE_HASH_LEN, in, len, out);
	if (st == ST_OK)
		memcpy(ss->h, h_next, NOISE_HASH_LEN);
	sodium_memzero(h_next, sizeof(h_next));
	return st;
}

void noise_symmetric_split(const struct noise_symmetric *ss, struct noise_cipher *c1,
			   struct noise_cipher *c2)
{
	uint8_t k1[NOISE_HASH_LEN], k2[NOISE_HASH_LEN];

	hkdf(ss->ck, NULL, 0, k1, k2, NULL);
	noise_cipher_init(c1, k1);
	noise_cipher_init(c2, k2);
	sodium_memzero(k1, sizeof(k1));
	sodium_memzero(k2, sizeof(k2));
}

void noise_symmetric_wipe(struct noise_symmetric *ss)
{
	sodium_memzero(ss, sizeof(*ss));
}

/* ---- handshake patterns (§7, §9) ------------------------------------------------------------ */

/* Every pattern of §7.4 (one-way), §7.5 (fundamental) and §7.6 (deferred), in §7's notation. */
static const struct {
	const char *name;
	const char *notation;
} patterns[] = {
	{ "N", "<- s\n...\n-> e, es" },
	{ "K", "-> s\n<- s\n...\n-> e, es, ss" },
	{ "X", "<- s\n...\n-> e, es, s, ss" },
	{ "NN", "-> e\n<- e, ee" },
	{ "NK", "<- s\n...\n-> e, es\n<- e, ee" },
	{ "NX", "-> e\n<- e, ee, s, es" },
	{ "XN", "-> e\n<- e, ee\n-> s, se" },
	{ "XK", "<- s\n...\n-> e, es\n<- e, ee\n-> s, se" },
	{ "XX", "-> e\n<- e, ee, s, es\n-> s, se" },
	{ "KN", "-> s\n...\n-> e\n<- e, ee, se" },
	{ "KK", "-> s\n<- s\n...\n-> e, es, ss\n<- e, ee, se" },
	{ "KX", "-> s\n...\n-> e\n<- e, ee, se, s, es" },
	{ "IN", "-> e, s\n<- e, ee, se" },
	{ "IK", "<- s\n...\n-> e, es, s, ss\n<- e, ee, se" },
	{ "IX", "-> e, s\n<- e, ee, se, s, es" },
	{ "NK1", "<- s\n...\n-> e\n<- e, ee, es" },
	{ "NX1", "-> e\n<- e, ee, s\n-> es" },
	{ "X1N", "-> e\n<- e, ee\n-> s\n<- se" },
	{ "X1K", "<- s\n...\n-> e, es\n<- e, ee\n-> s\n<- se" },
	{ "XK1", "<- s\n...\n-> e\n<- e, ee, es\n-> s, se" },
	{ "X1K1", "<- s\n...\n-> e\n<- e, ee, es\n-> s\n<- se" },
	{ "X1X", "-> e\n<- e, ee, s, es\n-> s\n<- se" },
	{ "XX1", "-> e\n<- e, ee, s\n-> es, s, se" },
	{ "X1X1", "-> e\n<- e, ee, s\n-> es, s\n<- se" },
	{ "K1N", "-> s\n...\n-> e\n<- e, ee\n-> se" },
	{ "K1K", "-> s\n<- s\n...\n-> e, es\n<- e, ee\n-> se" },
	{ "KK1", "-> s\n<- s\n...\n-> e\n<- e, ee, se, es" },
	{ "K1K1", "-> s\n<- s\n...\n-> e\n<- e, ee, es\n-> se" },
	{ "K1X", "-> s\n...\n-> e\n<- e, ee, s, es\n-> se" },
	{ "KX1", "-> s\n...\n-> e\n<- e, ee, se, s\n-> es" },
	{ "K1X1", "-> s\n...\n-> e\n<- e, ee, s\n-> se, es" },
	{ "I1N", "-> e, s\n<- e, ee\n-> se" },
	{ "I1K", "<- s\n...\n-> e, es, s\n<- e, ee\n-> se" },
	{ "IK1", "<- s\n...\n-> e, s\n<- e, ee, se, es" },
	{ "I1K1", "<- s\n...\n-> e, s\n<- e, ee, es\n-> se" },
	{ "I1X", "-> e, s\n<- e, ee, s, es\n-> se" },
	{ "IX1", "-> e, s\n<- e, ee, se, s\n-> es" },
	{ "I1X1", "-> e, s\n<- e, ee, s\n-> se, es" },
};

static const struct {
	const char *word;
	enum noise_token token;
} token_words[] = {
	{ "e", NOISE_TOKEN_E },	  { "s", NOISE_TOKEN_S },   { "ee", NOISE_TOKEN_EE },
	{ "es", NOISE_TOKEN_ES }, { "se", NOISE_TOKEN_SE }, { "ss", NOISE_TOKEN_SS },
	{ "psk", NOISE_TOKEN_PSK },
};

/* One line of the notation: the arrow ("->" 0, "<-" 1) and its tokens. ST_OK or ST_EINVAL. */
static int parse_line(const char *p, size_t len, int *dir, uint8_t *tok, uint8_t *ntok)
{
	size_t i = 0;

	*ntok = 0;
	if (len < 2)
		return ST_EINVAL;
	if (p[0] == '-' && p[1] == '>')
		*dir = 0;
	else if (p[0] == '<' && p[1] == '-')
		*dir = 1;
	else
		return ST_EINVAL;
	i = 2;
	for (;;) {
		size_t start, wlen, w;

		while (i < len && p[i] == ' ')
			i++;
		start = i;
		while (i < len && p[i] >= 'a' && p[i] <= 'z')
			i++;
		wlen = i - start;
		for (w = 0; w < ARRAY_SIZE(token_words); w++)
			if (strlen(token_words[w].word) == wlen &&
			    memcmp(token_words[w].word, p + start, wlen) == 0)
				break;
		if (w == ARRAY_SIZE(token_words) || *ntok == NOISE_TOKENS_MAX)
			return ST_EINVAL;
		tok[(*ntok)++] = (uint8_t)token_words[w].token;
		while (i < len && p[i] == ' ')
			i++;
		if (i == len)
			return ST_OK;
		if (p[i] != ',')
			return ST_EINVAL;
		i++;
	}
}

int noise_pattern_parse(const char *notation, struct noise_pattern *out)
{
	struct noise_pattern pat;
	const char *p = notation;
	bool pre_phase;
	int st;

	memset(&pat, 0, sizeof(pat));
	/* Pre-messages exist exactly when a "..." line does. */
	pre_phase = strstr(notation, "\n...") != NULL || strncmp(notation, "...", 3) == 0;
	for (;;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		uint8_t tok[NOISE_TOKENS_MAX];
		uint8_t ntok;
		int dir;

		if (len == 3 && memcmp(p, "...", 3) == 0) {
			if (!pre_phase)
				return ST_EINVAL;
			pre_phase = false;
		} else {
			st = parse_line(p, len, &dir, tok, &ntok);
			if (st != ST_OK)
				return st;
			if (pre_phase) {
				/* §7.1: a pre-message is e, s or "e, s", the initiator's first. */
				if (pat.npre[dir] != 0 || (dir == 0 && pat.npre[1] != 0) ||
				    ntok > 2)
					return ST_EINVAL;
				for (uint8_t i = 0; i < ntok; i++) {
					if (tok[i] != NOISE_TOKEN_E && tok[i] != NOISE_TOKEN_S)
						return ST_EINVAL;
					if (i > 0 && tok[i] == tok[0])
						return ST_EINVAL;
					pat.pre[dir][i] = tok[i];
				}
				pat.npre[dir] = ntok;
			} else {
				/* §7.1: the messages alternate, starting from the initiator. */
				if (pat.nmsg == NOISE_MESSAGES_MAX || dir != (pat.nmsg & 1))
					return ST_EINVAL;
				memcpy(pat.tok[pat.nmsg], tok, ntok);
				pat.ntok[pat.nmsg] = ntok;
				for (uint8_t i = 0; i < ntok; i++)
					pat.npsk += tok[i] == NOISE_TOKEN_PSK;
				pat.nmsg++;
			}
		}
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	if (pre_phase || pat.nmsg == 0 || pat.npsk > NOISE_PSKS_MAX)
		return ST_EINVAL;
	memcpy(out, &pat, sizeof(*out));
	return ST_OK;
}

int noise_pattern_add_psk(struct noise_pattern *p, unsigned n)
{
	unsigned m = n == 0 ? 0 : n - 1;

	if (m >= p->nmsg || p->ntok[m] == NOISE_TOKENS_MAX || p->npsk == NOISE_PSKS_MAX)
		return ST_EINVAL;
	if (n == 0) {
		/* §9.1: psk0 is the first token of the first message. */
		memmove(p->tok[0] + 1, p->tok[0], p->ntok[0]);
		p->tok[0][0] = NOISE_TOKEN_PSK;
	} else {
		/* §9.1: pskN is the last token of the Nth message. */
		p->tok[m][p->ntok[m]] = NOISE_TOKEN_PSK;
	}
	p->ntok[m]++;
	p->npsk++;
	return ST_OK;
}

int noise_protocol_parse(const char *protocol_name, struct noise_pattern *out)
{
	static const char prefix[] = "Noise_";
	static const char suffix[] = "_25519_ChaChaPoly_BLAKE2b";
	struct noise_pattern pat;
	const char *name, *mods, *end;
	size_t len, name_len, i;

	len = strnlen(protocol_name, NOISE_PROTOCOL_MAX + 1);
	if (len > NOISE_PROTOCOL_MAX || len < sizeof(prefix) - 1 + sizeof(suffix) - 1 + 1)
		return ST_EINVAL;
	if (memcmp(protocol_name, prefix, sizeof(prefix) - 1) != 0 ||
	    memcmp(protocol_name + len - (sizeof(suffix) - 1), suffix, sizeof(suffix) - 1) != 0)
		return ST_EINVAL;
	name = protocol_name + sizeof(prefix) - 1;
	end = protocol_name + len - (sizeof(suffix) - 1);

	/* §8: the pattern's name is upper-case letters and digits; modifiers start lower-case. */
	for (mods = name; mods < end; mods++)
		if (!((*mods >= 'A' && *mods <= 'Z') || (*mods >= '0' && *mods <= '9')))
			break;
	name_len = (size_t)(mods - name);
	for (i = 0; i < ARRAY_SIZE(patterns); i++)
		if (strlen(patterns[i].name) == name_len &&
		    memcmp(patterns[i].name, name, name_len) == 0)
			break;
	if (i == ARRAY_SIZE(patterns) || noise_pattern_parse(patterns[i].notation, &pat) != ST_OK)
		return ST_EINVAL;

	/* §8: modifiers joined by '+'; only pskN (N a small decimal) is known. */
	while (mods < end) {
		const char *num;
		unsigned n = 0;

		if (end - mods < 4 || memcmp(mods, "psk", 3) != 0)
			return ST_EINVAL;
		num = mods += 3;
		while (mods < end && *mods >= '0' && *mods <= '9' && mods - num < 2) {
			n = n * 10 + (unsigned)(*mods - '0');
			mods++;
		}
		/* One or two digits, no leading zero ("psk02" is not a name). */
		if (mods == num || (mods - num > 1 && *num == '0'))
			return ST_EINVAL;
		if (noise_pattern_add_psk(&pat, n) != ST_OK)
			return ST_EINVAL;
		if (mods < end) {
			if (*mods != '+' || mods + 1 == end)
				return ST_EINVAL;
			mods++;
		}
	}
	memcpy(out, &pat, sizeof(*out));
	return ST_OK;
}

/* ---- HandshakeState (§5.3) ------------------------------------------------------------------ */

/* §5.3 Initialize: MixHash of one pre-message key; in a psk handshake an e also MixKey's (§9.2). */
static void mix_pre(struct noise_handshake *hs, uint8_t token, const uint8_t *pub)
{
	noise_symmetric_mix_hash(&hs->sym, pub, NOISE_DH_LEN);
	if (token == NOISE_TOKEN_E && hs->pat.npsk > 0)
		noise_symmetric_mix_key(&hs->sym, pub, NOISE_DH_LEN);
}

int noise_handshake_init(struct noise_handshake *hs, const struct noise_config *cfg)
{
	struct noise_handshake t;
	int st = ST_EINVAL;

	memset(&t, 0, sizeof(t));
	if (cfg->protocol == NULL || noise_protocol_parse(cfg->protocol, &t.pat) != ST_OK)
		goto out;
	if (cfg->npsks > NOISE_PSKS_MAX || (cfg->npsks > 0 && cfg->psks == NULL) ||
	    (cfg->prologue_len > 0 && cfg->prologue == NULL))
		goto out;
	t.initiator = cfg->initiator;

	st = ST_ECRYPTO;
	if (cfg->s != NULL) {
		memcpy(t.s, cfg->s, NOISE_DH_LEN);
		if (cfg->s_pub != NULL)
			memcpy(t.s_pub, cfg->s_pub, NOISE_DH_LEN);
		else if (noise_public_key(t.s_pub, t.s) != ST_OK)
			goto out;
		t.has_s = true;
	}
	if (cfg->e != NULL) {
		memcpy(t.e, cfg->e, NOISE_DH_LEN);
		if (noise_public_key(t.e_pub, t.e) != ST_OK)
			goto out;
		t.has_e = true;
	}
	if (cfg->rs != NULL) {
		memcpy(t.rs, cfg->rs, NOISE_DH_LEN);
		t.has_rs = true;
	}
	if (cfg->re != NULL) {
		memcpy(t.re, cfg->re, NOISE_DH_LEN);
		t.has_re = true;
	}
	if (cfg->npsks > 0)
		memcpy(t.psk, cfg->psks, cfg->npsks * NOISE_PSK_LEN);
	t.npsk_set = (uint8_t)cfg->npsks;

	noise_symmetric_init(&t.sym, cfg->protocol);
	noise_symmetric_mix_hash(&t.sym, cfg->prologue, cfg->prologue_len);

	/* The pre-messages: the initiator's keys first, then the responder's. */
	st = ST_EINVAL;
	for (int side = 0; side < 2; side++) {
		bool mine = (side == 0) == t.initiator;

		for (uint8_t i = 0; i < t.pat.npre[side]; i++) {
			uint8_t token = t.pat.pre[side][i];
			const uint8_t *pub;

			if (token == NOISE_TOKEN_E) {
				if (mine ? !t.has_e : !t.has_re)
					goto out;
				pub = mine ? t.e_pub : t.re;
			} else {
				if (mine ? !t.has_s : !t.has_rs)
					goto out;
				pub = mine ? t.s_pub : t.rs;
			}
			mix_pre(&t, token, pub);
		}
	}
	t.phase = PHASE_ACTIVE;
	memcpy(hs, &t, sizeof(*hs));
	st = ST_OK;
out:
	if (st != ST_OK)
		noise_handshake_wipe(hs);
	sodium_memzero(&t, sizeof(t));
	return st;
}

int noise_handshake_add_psk(struct noise_handshake *hs, const uint8_t psk[static NOISE_PSK_LEN])
{
	if (hs->npsk_set == NOISE_PSKS_MAX)
		return ST_EFULL;
	memcpy(hs->psk[hs->npsk_set++], psk, NOISE_PSK_LEN);
	return ST_OK;
}

enum noise_action noise_handshake_action(const struct noise_handshake *hs)
{
	switch (hs->phase) {
	case PHASE_ACTIVE:
		/* Even messages are the initiator's. */
		if (((hs->msg & 1) == 0) == hs->initiator)
			return NOISE_ACTION_WRITE;
		return NOISE_ACTION_READ;
	case PHASE_FINISHED:
		return NOISE_ACTION_SPLIT;
	default:
		return NOISE_ACTION_NONE;
	}
}

/*
 * The DH tokens (§5.3): ee, es, se, ss name (initiator key, responder key); each side uses its own
 * private key and the other side's public key. MixKey(DH(...)).
 */
static int token_dh(struct noise_handshake *hs, uint8_t token)
{
	uint8_t shared[NOISE_DH_LEN];
	const uint8_t *priv, *pub;
	bool local_e, remote_e;
	int st;

	/* Which key of ours and which of theirs: the initiator's letter comes first. */
	switch (token) {
	case NOISE_TOKEN_EE:
		local_e = remote_e = true;
		break;
	case NOISE_TOKEN_SS:
		local_e = remote_e = false;
		break;
	case NOISE_TOKEN_ES:
		local_e = hs->initiator;
		remote_e = !hs->initiator;
		break;
	default: /* NOISE_TOKEN_SE */
		local_e = !hs->initiator;
		remote_e = hs->initiator;
		break;
	}
	if (local_e ? !hs->has_e : !hs->has_s)
		return ST_EINVAL;
	if (remote_e ? !hs->has_re : !hs->has_rs)
		return ST_EINVAL;
	priv = local_e ? hs->e : hs->s;
	pub = remote_e ? hs->re : hs->rs;
	st = dh(shared, priv, pub);
	if (st == ST_OK)
		noise_symmetric_mix_key(&hs->sym, shared, sizeof(shared));
	sodium_memzero(shared, sizeof(shared));
	return st;
}

/* psk (§9.2): MixKeyAndHash(psk), with the psks used in the order they were given. */
static int token_psk(struct noise_handshake *hs)
{
	if (hs->npsk_used >= hs->npsk_set)
		return ST_EINVAL;
	noise_symmetric_mix_key_and_hash(&hs->sym, hs->psk[hs->npsk_used], NOISE_PSK_LEN);
	hs->npsk_used++;
	return ST_OK;
}

/* After the last message the handshake is finished; otherwise the turn passes. */
static void message_done(struct noise_handshake *hs)
{
	hs->msg++;
	if (hs->msg == hs->pat.nmsg)
		hs->phase = PHASE_FINISHED;
}

/* The most a message's tokens write: one e (a key) and one s (a key and a tag). */
#define TOKENS_OUT_MAX (NOISE_DH_LEN + NOISE_DH_LEN + NOISE_TAG_LEN)

/*
 * WriteMessage on t, a scratch copy of the state. The tokens' bytes go to a local buffer and reach
 * out only after every token succeeded and the payload is encrypted, so a failure writes nothing.
 */
static int write_tokens(struct noise_handshake *t, const uint8_t *payload, size_t plen,
			uint8_t *out, size_t cap, size_t *out_len)
{
	uint8_t head[TOKENS_OUT_MAX];
	size_t off = 0, clen;
	bool has_e = false, has_s = false;
	int st;

	for (uint8_t i = 0; i < t->pat.ntok[t->msg]; i++) {
		uint8_t token = t->pat.tok[t->msg][i];

		switch (token) {
		case NOISE_TOKEN_E:
			/* e: GENERATE_KEYPAIR (unless fixed), write e.pub, MixHash(e.pub);
			 * in a psk handshake MixKey(e.pub) too (§9.2). */
			if (has_e)
				return ST_EINVAL;
			has_e = true;
			if (!t->has_e) {
				noise_keypair_generate(t->e, t->e_pub);
				t->has_e = true;
			}
			memcpy(head + off, t->e_pub, NOISE_DH_LEN);
			off += NOISE_DH_LEN;
			noise_symmetric_mix_hash(&t->sym, t->e_pub, NOISE_DH_LEN);
			if (t->pat.npsk > 0)
				noise_symmetric_mix_key(&t->sym, t->e_pub, NOISE_DH_LEN);
			break;
		case NOISE_TOKEN_S:
			/* s: EncryptAndHash(s.pub). */
			if (has_s || !t->has_s)
				return ST_EINVAL;
			has_s = true;
			clen = NOISE_DH_LEN + (t->sym.cs.has_key ? NOISE_TAG_LEN : 0);
			st = noise_symmetric_encrypt_and_hash(&t->sym, t->s_pub, NOISE_DH_LEN,
							      head + off);
			if (st != ST_OK)
				goto out;
			off += clen;
			break;
		case NOISE_TOKEN_PSK:
			st = token_psk(t);
			if (st != ST_OK)
				goto out;
			break;
		default:
			st = token_dh(t, token);
			if (st != ST_OK)
				goto out;
			break;
		}
	}

	/* The payload: EncryptAndHash(payload), after the tokens. */
	clen = plen + (t->sym.cs.has_key ? NOISE_TAG_LEN : 0);
	st = ST_ETOOBIG;
	if (plen > NOISE_MSG_MAX || off + clen > NOISE_MSG_MAX || off + clen > cap)
		goto out;
	st = noise_symmetric_encrypt_and_hash(&t->sym, payload, plen, out + off);
	if (st != ST_OK)
		goto out;
	memcpy(out, head, off);
	message_done(t);
	*out_len = off + clen;
out:
	sodium_memzero(head, sizeof(head));
	return st;
}

int noise_handshake_write(struct noise_handshake *hs, const uint8_t *payload, size_t plen,
			  uint8_t *out, size_t cap, size_t *out_len)
{
	struct noise_handshake t;
	int st;

	if (noise_handshake_action(hs) != NOISE_ACTION_WRITE)
		return ST_EINVAL;
	if (plen > 0 && payload == NULL)
		return ST_EINVAL;
	memcpy(&t, hs, sizeof(t));
	st = write_tokens(&t, payload, plen, out, cap, out_len);
	if (st == ST_OK)
		memcpy(hs, &t, sizeof(*hs));
	sodium_memzero(&t, sizeof(t));
	return st;
}

/* ReadMessage on t, a scratch copy of the state. The payload reaches out only once its tag
 * verified, which is the last step that can fail. */
static int read_tokens(struct noise_handshake *t, const uint8_t *msg, size_t len, uint8_t *payload,
		       size_t cap, size_t *payload_len)
{
	uint8_t rs[NOISE_DH_LEN];
	size_t off = 0, clen;
	bool has_e = false, has_s = false;
	int st;

	for (uint8_t i = 0; i < t->pat.ntok[t->msg]; i++) {
		uint8_t token = t->pat.tok[t->msg][i];

		switch (token) {
		case NOISE_TOKEN_E:
			/* e: re = the next DHLEN bytes, MixHash(re); in a psk handshake MixKey(re). */
			if (has_e)
				return ST_EINVAL;
			has_e = true;
			if (len - off < NOISE_DH_LEN)
				return ST_EPROTO;
			memcpy(t->re, msg + off, NOISE_DH_LEN);
			t->has_re = true;
			off += NOISE_DH_LEN;
			noise_symmetric_mix_hash(&t->sym, t->re, NOISE_DH_LEN);
			if (t->pat.npsk > 0)
				noise_symmetric_mix_key(&t->sym, t->re, NOISE_DH_LEN);
			break;
		case NOISE_TOKEN_S:
			/* s: rs = DecryptAndHash(the next DHLEN + 16 bytes, or DHLEN without a key). */
			if (has_s)
				return ST_EINVAL;
			has_s = true;
			clen = NOISE_DH_LEN + (t->sym.cs.has_key ? NOISE_TAG_LEN : 0);
			if (len - off < clen)
				return ST_EPROTO;
			st = noise_symmetric_decrypt_and_hash(&t->sym, msg + off, clen, rs);
			if (st != ST_OK)
				return st;
			memcpy(t->rs, rs, NOISE_DH_LEN);
			t->has_rs = true;
			off += clen;
			break;
		case NOISE_TOKEN_PSK:
			st = token_psk(t);
			if (st != ST_OK)
				return st;
			break;
		default:
			st = token_dh(t, token);
			if (st != ST_OK)
				return st;
			break;
		}
	}

	/* The payload: DecryptAndHash(the rest of the message). */
	clen = len - off;
	if (t->sym.cs.has_key && clen < NOISE_TAG_LEN)
		return ST_EPROTO;
	if (clen - (t->sym.cs.has_key ? NOISE_TAG_LEN : 0) > cap)
		return ST_ETOOBIG;
	st = noise_symmetric_decrypt_and_hash(&t->sym, msg + off, clen, payload);
	if (st != ST_OK)
		return st;
	message_done(t);
	*payload_len = clen - (t->sym.cs.has_key ? NOISE_TAG_LEN : 0);
	return ST_OK;
}

int noise_handshake_read(struct noise_handshake *hs, const uint8_t *msg, size_t len,
			 uint8_t *payload, size_t cap, size_t *payload_len)
{
	struct noise_handshake t;
	int st;

	if (noise_handshake_action(hs) != NOISE_ACTION_READ)
		return ST_EINVAL;
	if (len > NOISE_MSG_MAX)
		return ST_EPROTO;
	memcpy(&t, hs, sizeof(t));
	st = read_tokens(&t, msg, len, payload, cap, payload_len);
	if (st == ST_OK)
		memcpy(hs, &t, sizeof(*hs));
	sodium_memzero(&t, sizeof(t));
	return st;
}

int noise_handshake_split(struct noise_handshake *hs, struct noise_cipher *send,
			  struct noise_cipher *recv)
{
	struct noise_cipher c1, c2;
	uint8_t h[NOISE_HASH_LEN], rs[NOISE_DH_LEN];
	bool has_rs = hs->has_rs;

	if (hs->phase != PHASE_FINISHED)
		return ST_EINVAL;
	noise_symmetric_split(&hs->sym, &c1, &c2);
	/* §5.2: the initiator sends with c1, the responder with c2. */
	memcpy(hs->initiator ? send : recv, &c1, sizeof(c1));
	memcpy(hs->initiator ? recv : send, &c2, sizeof(c2));
	sodium_memzero(&c1, sizeof(c1));
	sodium_memzero(&c2, sizeof(c2));

	/* Keep what names the session and the peer; wipe the rest. */
	memcpy(h, hs->sym.h, sizeof(h));
	memcpy(rs, hs->rs, sizeof(rs));
	noise_handshake_wipe(hs);
	memcpy(hs->sym.h, h, sizeof(h));
	memcpy(hs->rs, rs, sizeof(rs));
	hs->has_rs = has_rs;
	hs->phase = PHASE_SPLIT;
	return ST_OK;
}

int noise_handshake_hash(const struct noise_handshake *hs, uint8_t out[static NOISE_HASH_LEN])
{
	if (hs->phase != PHASE_FINISHED && hs->phase != PHASE_SPLIT)
		return ST_EINVAL;
	memcpy(out, hs->sym.h, NOISE_HASH_LEN);
	return ST_OK;
}

int noise_handshake_remote_static(const struct noise_handshake *hs,
				  uint8_t out[static NOISE_DH_LEN])
{
	if (!hs->has_rs)
		return ST_ENOTFOUND;
	memcpy(out, hs->rs, NOISE_DH_LEN);
	return ST_OK;
}

int noise_handshake_remote_ephemeral(const struct noise_handshake *hs,
				     uint8_t out[static NOISE_DH_LEN])
{
	if (!hs->has_re)
		return ST_ENOTFOUND;
	memcpy(out, hs->re, NOISE_DH_LEN);
	return ST_OK;
}

void noise_handshake_wipe(struct noise_handshake *hs)
{
	sodium_memzero(hs, sizeof(*hs));
}

/* ---- key pairs ------------------------------------------------------------------------------ */

void noise_keypair_generate(uint8_t priv[static NOISE_DH_LEN], uint8_t pub[static NOISE_DH_LEN])
{
	/* X25519 clamps the scalar itself; any 32 random bytes are a private key, and the base point
	 * never yields the all-zero public key crypto_scalarmult_base refuses. */
	do
		randombytes_buf(priv, NOISE_DH_LEN);
	while (crypto_scalarmult_base(pub, priv) != 0);
}

int noise_public_key(uint8_t pub[static NOISE_DH_LEN], const uint8_t priv[static NOISE_DH_LEN])
{
	uint8_t tmp[NOISE_DH_LEN];

	if (crypto_scalarmult_base(tmp, priv) != 0)
		return ST_ECRYPTO;
	memcpy(pub, tmp, sizeof(tmp));
	return ST_OK;
}
