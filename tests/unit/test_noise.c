/*
 * tests/unit/test_noise.c - crypto/noise: the Noise Protocol Framework against published vectors.
 *
 * The vectors are tests/vectors/noise-cacophony.json and noise-snow.json (provenance in SOURCE.txt),
 * compiled into a table by tests/vectors/noise_vectors.py at build time. Each vector is played by
 * both parties at once: every handshake message is written by one side and compared byte for byte,
 * then read by the other and its payload compared; then the same for every transport message in
 * both directions, and the handshake hash where the vector has one.
 *
 * The link uses IKpsk2, so the IK/XK family (13 entries, LINK.md) is the required set and is counted
 * by name; every other entry runs too, since the pattern interpreter is general.
 * A forged message (any one bit flipped) must fail and leave the state byte-identical.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/compiler.h"
#include "base/status.h"
#include "crypto/noise.h"
#include "crypto/pwhash.h"

#include "noise_vectors.h"

#define SUFFIX "_25519_ChaChaPoly_BLAKE2b"
#define BUF_MAX (NOISE_MSG_MAX + 1)

static uint8_t msgbuf[BUF_MAX];
static uint8_t plbuf[BUF_MAX];

static int group_setup(void **state)
{
	(void)state;
	return pwhash_init() == ST_OK ? 0 : -1;
}

static const uint8_t *opt(const struct nv_bytes *b)
{
	return b->len > 0 ? b->p : NULL;
}

/* s_pub: NULL for a config that leaves the static public key to be derived, or room for it, in
 * which case it is computed here and given (as the link gives the key it loaded). */
static void config_for(const struct nv_vector *v, bool initiator, struct noise_config *cfg,
		       uint8_t *s_pub)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->protocol = v->protocol;
	cfg->initiator = initiator;
	if (initiator) {
		cfg->prologue = opt(&v->init_prologue);
		cfg->prologue_len = v->init_prologue.len;
		cfg->s = opt(&v->init_static);
		cfg->e = opt(&v->init_ephemeral);
		cfg->rs = opt(&v->init_remote_static);
		cfg->psks = opt(&v->init_psks);
		cfg->npsks = v->init_npsks;
	} else {
		cfg->prologue = opt(&v->resp_prologue);
		cfg->prologue_len = v->resp_prologue.len;
		cfg->s = opt(&v->resp_static);
		cfg->e = opt(&v->resp_ephemeral);
		cfg->rs = opt(&v->resp_remote_static);
		cfg->psks = opt(&v->resp_psks);
		cfg->npsks = v->resp_npsks;
	}
	if (s_pub != NULL && cfg->s != NULL) {
		assert_int_equal(noise_public_key(s_pub, cfg->s), ST_OK);
		cfg->s_pub = s_pub;
	}
}

static int bytes_equal(const uint8_t *a, size_t alen, const struct nv_bytes *b)
{
	return alen == b->len && (alen == 0 || memcmp(a, b->p, alen) == 0);
}

/*
 * Play one vector. Returns 0 when every byte matched, else prints what differed and returns -1
 * (the caller counts, so one run reports every failing vector, not just the first).
 */
static int run_vector(const struct nv_vector *v, bool given_pub)
{
	uint8_t s_pub[NOISE_DH_LEN];
	struct noise_handshake hs[2]; /* [0] initiator, [1] responder */
	struct noise_cipher send[2], recv[2];
	struct noise_config cfg;
	struct noise_pattern pat;
	uint8_t h0[NOISE_HASH_LEN], h1[NOISE_HASH_LEN];
	size_t len, plen, i;
	int rc = -1;

#define CHECK(cond, ...)                                                              \
	do {                                                                          \
		if (!(cond)) {                                                        \
			print_error("%s %s: ", v->source, v->protocol);               \
			print_error(__VA_ARGS__);                                     \
			print_error("\n");                                            \
			goto out;                                                     \
		}                                                                     \
	} while (0)

	memset(hs, 0, sizeof(hs));
	memset(send, 0, sizeof(send));
	memset(recv, 0, sizeof(recv));
	CHECK(noise_protocol_parse(v->protocol, &pat) == ST_OK, "unknown protocol");
	CHECK(v->nmessages >= pat.nmsg, "fewer messages than the pattern");
	config_for(v, true, &cfg, given_pub ? s_pub : NULL);
	CHECK(noise_handshake_init(&hs[0], &cfg) == ST_OK, "initiator init");
	config_for(v, false, &cfg, given_pub ? s_pub : NULL);
	CHECK(noise_handshake_init(&hs[1], &cfg) == ST_OK, "responder init");

	/* Handshake: message i is written by the initiator when i is even. */
	for (i = 0; i < pat.nmsg; i++) {
		const struct nv_message *m = &v->messages[i];
		int w = (int)(i & 1), r = !w;

		CHECK(noise_handshake_action(&hs[w]) == NOISE_ACTION_WRITE, "message %zu: not writer", i);
		CHECK(noise_handshake_action(&hs[r]) == NOISE_ACTION_READ, "message %zu: not reader", i);
		CHECK(noise_handshake_write(&hs[w], m->payload.p, m->payload.len, msgbuf, BUF_MAX,
					    &len) == ST_OK,
		      "message %zu: write", i);
		CHECK(bytes_equal(msgbuf, len, &m->ciphertext), "message %zu: ciphertext differs", i);
		CHECK(noise_handshake_read(&hs[r], m->ciphertext.p, m->ciphertext.len, plbuf, BUF_MAX,
					   &plen) == ST_OK,
		      "message %zu: read", i);
		CHECK(bytes_equal(plbuf, plen, &m->payload), "message %zu: payload differs", i);
	}
	CHECK(noise_handshake_action(&hs[0]) == NOISE_ACTION_SPLIT, "initiator not finished");
	CHECK(noise_handshake_action(&hs[1]) == NOISE_ACTION_SPLIT, "responder not finished");
	CHECK(noise_handshake_hash(&hs[0], h0) == ST_OK && noise_handshake_hash(&hs[1], h1) == ST_OK,
	      "handshake hash");
	CHECK(memcmp(h0, h1, sizeof(h0)) == 0, "the two sides' handshake hashes differ");
	if (v->handshake_hash.len > 0)
		CHECK(bytes_equal(h0, sizeof(h0), &v->handshake_hash), "handshake_hash differs");
	CHECK(noise_handshake_split(&hs[0], &send[0], &recv[0]) == ST_OK, "initiator split");
	CHECK(noise_handshake_split(&hs[1], &send[1], &recv[1]) == ST_OK, "responder split");
	CHECK(noise_handshake_hash(&hs[0], h1) == ST_OK && memcmp(h0, h1, sizeof(h0)) == 0,
	      "hash lost by split");

	/* Transport: alternating by index, or all from the initiator after a one-way pattern. */
	for (; i < v->nmessages; i++) {
		const struct nv_message *m = &v->messages[i];
		int w = pat.nmsg == 1 ? 0 : (int)(i & 1), r = !w;

		CHECK(noise_cipher_encrypt(&send[w], NULL, 0, m->payload.p, m->payload.len, msgbuf) ==
			      ST_OK,
		      "transport %zu: encrypt", i);
		CHECK(bytes_equal(msgbuf, m->payload.len + NOISE_TAG_LEN, &m->ciphertext),
		      "transport %zu: ciphertext differs", i);
		CHECK(noise_cipher_decrypt(&recv[r], NULL, 0, m->ciphertext.p, m->ciphertext.len,
					   plbuf) == ST_OK,
		      "transport %zu: decrypt", i);
		CHECK(bytes_equal(plbuf, m->ciphertext.len - NOISE_TAG_LEN, &m->payload),
		      "transport %zu: payload differs", i);
	}
	rc = 0;
out:
	noise_handshake_wipe(&hs[0]);
	noise_handshake_wipe(&hs[1]);
	for (i = 0; i < 2; i++) {
		noise_cipher_wipe(&send[i]);
		noise_cipher_wipe(&recv[i]);
	}
	return rc;
#undef CHECK
}

static int starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* The entries LINK.md requires: Noise_IK* and Noise_XK* with our functions. */
static int selected(const struct nv_vector *v)
{
	return (starts_with(v->protocol, "Noise_IK") || starts_with(v->protocol, "Noise_XK")) &&
	       ends_with(v->protocol, SUFFIX);
}

/* ---- the vectors ---------------------------------------------------------------------------- */

static void test_vectors_ik_xk(void **state)
{
	/* Every selected entry, by file and name: one missing from the files fails here. */
	static const struct {
		const char *source, *pattern;
	} expected[] = {
		{ "noise-cacophony.json", "XK" },	  { "noise-cacophony.json", "IK" },
		{ "noise-cacophony.json", "XKpsk3" },	  { "noise-cacophony.json", "IKpsk1" },
		{ "noise-cacophony.json", "IKpsk2" },	  { "noise-cacophony.json", "XK1" },
		{ "noise-cacophony.json", "IK1" },	  { "noise-snow.json", "XK" },
		{ "noise-snow.json", "IK" },		  { "noise-snow.json", "XK1" },
		{ "noise-snow.json", "IK1" },		  { "noise-snow.json", "XKpsk0+psk3" },
		{ "noise-snow.json", "IKpsk0+psk2" },
	};
	size_t found[ARRAY_SIZE(expected)];
	size_t i, j, run = 0, failed = 0;

	(void)state;
	memset(found, 0, sizeof(found));
	for (i = 0; i < ARRAY_SIZE(nv_vectors); i++) {
		const struct nv_vector *v = &nv_vectors[i];

		if (!selected(v))
			continue;
		for (j = 0; j < ARRAY_SIZE(expected); j++) {
			char name[128];

			snprintf(name, sizeof(name), "Noise_%s%s", expected[j].pattern, SUFFIX);
			if (strcmp(v->source, expected[j].source) == 0 && strcmp(v->protocol, name) == 0)
				found[j]++;
		}
		run++;
		/* Once deriving the static public keys, once given them: the same bytes. */
		if (run_vector(v, false) != 0 || run_vector(v, true) != 0)
			failed++;
	}
	for (j = 0; j < ARRAY_SIZE(expected); j++)
		if (found[j] != 1)
			fail_msg("%s: Noise_%s found %zu times, expected once", expected[j].source,
				 expected[j].pattern, found[j]);
	print_message("IK/XK vectors: %zu run, %zu failed\n", run, failed);
	assert_int_equal(run, 13);
	assert_int_equal(failed, 0);
}

static void test_vectors_all(void **state)
{
	size_t i, run[2] = { 0, 0 }, failed = 0;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(nv_vectors); i++) {
		const struct nv_vector *v = &nv_vectors[i];

		run[strcmp(v->source, "noise-snow.json") == 0]++;
		if (run_vector(v, false) != 0)
			failed++;
	}
	print_message("all vectors: %zu + %zu run, %zu failed\n", run[0], run[1], failed);
	/* SOURCE.txt: 59 entries in cacophony, 51 in snow; every one of our functions. */
	assert_int_equal(run[0], 59);
	assert_int_equal(run[1], 51);
	assert_int_equal(failed, 0);
}

/* ---- forgeries ------------------------------------------------------------------------------ */

static const struct nv_vector *find_vector(const char *source, const char *protocol)
{
	for (size_t i = 0; i < ARRAY_SIZE(nv_vectors); i++)
		if (strcmp(nv_vectors[i].source, source) == 0 &&
		    strcmp(nv_vectors[i].protocol, protocol) == 0)
			return &nv_vectors[i];
	fail_msg("vector %s %s missing", source, protocol);
	abort(); /* not reached: fail_msg does not return */
}

/*
 * Every 1-bit flip of every handshake message of v: the reader refuses it, and its state, payload
 * buffer and length are byte-identical afterwards; the genuine message is then still accepted.
 */
static void flip_every_handshake_bit(const struct nv_vector *v)
{
	struct noise_handshake hs[2], before;
	struct noise_config cfg;
	struct noise_pattern pat;
	uint8_t forged[256];
	uint8_t pl_before[256];
	size_t len, plen, plen_before;

	assert_int_equal(noise_protocol_parse(v->protocol, &pat), ST_OK);
	config_for(v, true, &cfg, NULL);
	assert_int_equal(noise_handshake_init(&hs[0], &cfg), ST_OK);
	config_for(v, false, &cfg, NULL);
	assert_int_equal(noise_handshake_init(&hs[1], &cfg), ST_OK);
	for (size_t i = 0; i < pat.nmsg; i++) {
		const struct nv_message *m = &v->messages[i];
		int w = (int)(i & 1), r = !w;

		assert_true(m->ciphertext.len <= sizeof(forged));
		assert_int_equal(noise_handshake_write(&hs[w], m->payload.p, m->payload.len, msgbuf,
						       BUF_MAX, &len),
				 ST_OK);
		for (size_t bit = 0; bit < m->ciphertext.len * 8; bit++) {
			int st;

			memcpy(forged, m->ciphertext.p, m->ciphertext.len);
			forged[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			memcpy(&before, &hs[r], sizeof(before));
			memset(plbuf, 0x5A, sizeof(pl_before));
			memcpy(pl_before, plbuf, sizeof(pl_before));
			plen = plen_before = 0xabcdef;
			st = noise_handshake_read(&hs[r], forged, m->ciphertext.len, plbuf, BUF_MAX,
						  &plen);
			if (st != ST_ECRYPTO)
				fail_msg("%s message %zu bit %zu: status %d", v->protocol, i, bit, st);
			assert_memory_equal(&before, &hs[r], sizeof(before));
			assert_memory_equal(pl_before, plbuf, sizeof(pl_before));
			assert_int_equal(plen, plen_before);
		}
		assert_int_equal(noise_handshake_read(&hs[r], m->ciphertext.p, m->ciphertext.len, plbuf,
						      BUF_MAX, &plen),
				 ST_OK);
		assert_true(bytes_equal(plbuf, plen, &m->payload));
	}
	noise_handshake_wipe(&hs[0]);
	noise_handshake_wipe(&hs[1]);
}

static void test_forged_handshake(void **state)
{
	(void)state;
	flip_every_handshake_bit(find_vector("noise-cacophony.json", "Noise_IK" SUFFIX));
	flip_every_handshake_bit(find_vector("noise-cacophony.json", "Noise_IKpsk2" SUFFIX));
	flip_every_handshake_bit(find_vector("noise-cacophony.json", "Noise_XK" SUFFIX));
	flip_every_handshake_bit(find_vector("noise-snow.json", "Noise_IKpsk0+psk2" SUFFIX));
}

/* A message cut short or one byte too long fails without a trace as well. */
static void test_wrong_length_handshake(void **state)
{
	const struct nv_vector *v = find_vector("noise-cacophony.json", "Noise_IKpsk2" SUFFIX);
	const struct nv_message *m = &v->messages[0];
	struct noise_handshake hs, before;
	struct noise_config cfg;
	uint8_t longer[256];
	size_t plen = 7;

	(void)state;
	config_for(v, false, &cfg, NULL);
	assert_int_equal(noise_handshake_init(&hs, &cfg), ST_OK);
	memcpy(&before, &hs, sizeof(before));
	for (size_t n = 0; n < m->ciphertext.len; n++) {
		int st = noise_handshake_read(&hs, m->ciphertext.p, n, plbuf, BUF_MAX, &plen);

		/* Short of the fixed part: malformed; inside the payload: the tag no longer checks. */
		assert_true(st == ST_EPROTO || st == ST_ECRYPTO);
		assert_memory_equal(&before, &hs, sizeof(before));
	}
	memcpy(longer, m->ciphertext.p, m->ciphertext.len);
	longer[m->ciphertext.len] = 0;
	assert_int_equal(noise_handshake_read(&hs, longer, m->ciphertext.len + 1, plbuf, BUF_MAX, &plen),
			 ST_ECRYPTO);
	assert_memory_equal(&before, &hs, sizeof(before));
	assert_int_equal(plen, 7);
	/* A payload buffer one byte short: refused before anything is decrypted. */
	assert_int_equal(noise_handshake_read(&hs, m->ciphertext.p, m->ciphertext.len, plbuf,
					      m->payload.len - 1, &plen),
			 ST_ETOOBIG);
	assert_memory_equal(&before, &hs, sizeof(before));
	assert_int_equal(noise_handshake_read(&hs, m->ciphertext.p, m->ciphertext.len, plbuf,
					      m->payload.len, &plen),
			 ST_OK);
	assert_true(bytes_equal(plbuf, plen, &m->payload));
	noise_handshake_wipe(&hs);
}

/* A transport message with one bit flipped: refused, n unchanged, output untouched. */
static void test_forged_transport(void **state)
{
	const struct nv_vector *v = find_vector("noise-cacophony.json", "Noise_IK" SUFFIX);
	struct noise_handshake hs[2];
	struct noise_cipher send[2], recv[2], before;
	struct noise_config cfg;
	uint8_t forged[64], out[64], out_before[64];
	size_t len, plen;

	(void)state;
	config_for(v, true, &cfg, NULL);
	assert_int_equal(noise_handshake_init(&hs[0], &cfg), ST_OK);
	config_for(v, false, &cfg, NULL);
	assert_int_equal(noise_handshake_init(&hs[1], &cfg), ST_OK);
	for (size_t i = 0; i < 2; i++) {
		const struct nv_message *m = &v->messages[i];

		assert_int_equal(noise_handshake_write(&hs[i], m->payload.p, m->payload.len, msgbuf,
						       BUF_MAX, &len),
				 ST_OK);
		assert_int_equal(noise_handshake_read(&hs[!i], msgbuf, len, plbuf, BUF_MAX, &plen),
				 ST_OK);
	}
	assert_int_equal(noise_handshake_split(&hs[0], &send[0], &recv[0]), ST_OK);
	assert_int_equal(noise_handshake_split(&hs[1], &send[1], &recv[1]), ST_OK);

	const struct nv_message *m = &v->messages[2];
	assert_true(m->ciphertext.len <= sizeof(forged));
	for (size_t bit = 0; bit < m->ciphertext.len * 8; bit++) {
		memcpy(forged, m->ciphertext.p, m->ciphertext.len);
		forged[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		memcpy(&before, &recv[1], sizeof(before));
		memset(out, 0x77, sizeof(out));
		memcpy(out_before, out, sizeof(out));
		assert_int_equal(noise_cipher_decrypt(&recv[1], NULL, 0, forged, m->ciphertext.len, out),
				 ST_ECRYPTO);
		assert_memory_equal(&before, &recv[1], sizeof(before));
		assert_memory_equal(out, out_before, sizeof(out));
	}
	/* Associated data is authenticated too. */
	assert_int_equal(noise_cipher_decrypt(&recv[1], (const uint8_t *)"x", 1, m->ciphertext.p,
					      m->ciphertext.len, out),
			 ST_ECRYPTO);
	/* Shorter than a tag. */
	assert_int_equal(noise_cipher_decrypt(&recv[1], NULL, 0, m->ciphertext.p, NOISE_TAG_LEN - 1,
					      out),
			 ST_ECRYPTO);
	assert_memory_equal(&before, &recv[1], sizeof(before));
	/* The genuine message still opens, in place. */
	memcpy(forged, m->ciphertext.p, m->ciphertext.len);
	assert_int_equal(noise_cipher_decrypt(&recv[1], NULL, 0, forged, m->ciphertext.len, forged),
			 ST_OK);
	assert_memory_equal(forged, m->payload.p, m->payload.len);
	assert_int_equal(recv[1].n, before.n + 1);
	/* A replay of the same message now fails: the nonce moved on. */
	assert_int_equal(noise_cipher_decrypt(&recv[1], NULL, 0, m->ciphertext.p, m->ciphertext.len,
					      out),
			 ST_ECRYPTO);
	for (size_t i = 0; i < 2; i++) {
		noise_handshake_wipe(&hs[i]);
		noise_cipher_wipe(&send[i]);
		noise_cipher_wipe(&recv[i]);
	}
}

/* ---- CipherState ---------------------------------------------------------------------------- */

static void keyed_pair(struct noise_cipher *a, struct noise_cipher *b)
{
	uint8_t k[NOISE_KEY_LEN];

	for (size_t i = 0; i < sizeof(k); i++)
		k[i] = (uint8_t)i;
	noise_cipher_init(a, k);
	noise_cipher_init(b, k);
}

static void test_cipher_nonce_limit(void **state)
{
	struct noise_cipher a, b, before;
	uint8_t pt[5] = { 1, 2, 3, 4, 5 }, ct[5 + NOISE_TAG_LEN], out[5];

	(void)state;
	keyed_pair(&a, &b);
	/* 2^64-2 is the last nonce a message may use; 2^64-1 is REKEY's alone (§5.1). */
	noise_cipher_set_nonce(&a, UINT64_MAX - 1);
	noise_cipher_set_nonce(&b, UINT64_MAX - 1);
	assert_int_equal(noise_cipher_encrypt(&a, NULL, 0, pt, sizeof(pt), ct), ST_OK);
	assert_int_equal(a.n, UINT64_MAX);
	assert_int_equal(noise_cipher_decrypt(&b, NULL, 0, ct, sizeof(ct), out), ST_OK);
	assert_memory_equal(out, pt, sizeof(pt));

	memcpy(&before, &a, sizeof(before));
	memset(ct, 0xEE, sizeof(ct));
	assert_int_equal(noise_cipher_encrypt(&a, NULL, 0, pt, sizeof(pt), ct), ST_ECRYPTO);
	assert_memory_equal(&before, &a, sizeof(a));
	for (size_t i = 0; i < sizeof(ct); i++)
		assert_int_equal(ct[i], 0xEE);
	memcpy(&before, &b, sizeof(before));
	assert_int_equal(noise_cipher_decrypt(&b, NULL, 0, ct, sizeof(ct), out), ST_ECRYPTO);
	assert_memory_equal(&before, &b, sizeof(b));
	/* Rekeying does not give the nonces back. */
	noise_cipher_rekey(&a);
	assert_int_equal(noise_cipher_encrypt(&a, NULL, 0, pt, sizeof(pt), ct), ST_ECRYPTO);
	noise_cipher_wipe(&a);
	noise_cipher_wipe(&b);
}

static void test_cipher_rekey(void **state)
{
	/*
	 * Known answers, computed independently (a Python ChaCha20 block function checked against
	 * RFC 8439 §2.3.2): with k = 00 01 .. 1f, REKEY(k) = the first 32 bytes of the keystream at
	 * block counter 1 (the AEAD's first encryption block) and nonce 00000000 ffffffffffffffff.
	 */
	static const uint8_t once[32] = {
		0x50, 0x83, 0x55, 0x43, 0xa2, 0x05, 0xb2, 0x2c, 0x93, 0x23, 0xf2, 0x02, 0x2b, 0xc4, 0xf6, 0x7d,
		0x83, 0x8f, 0x90, 0xe6, 0x1d, 0x5c, 0xcf, 0x33, 0xc4, 0x51, 0x3e, 0x01, 0xf8, 0x5b, 0x50, 0x42,
	};
	static const uint8_t twice[32] = {
		0x30, 0xfe, 0x37, 0x26, 0xfa, 0x0f, 0x86, 0x4a, 0xf0, 0x1d, 0x15, 0x66, 0x3c, 0x77, 0xf9, 0x5e,
		0x49, 0x0e, 0x30, 0x14, 0x37, 0x88, 0xaf, 0x57, 0xe9, 0x0d, 0x56, 0xfb, 0x9a, 0xa7, 0x16, 0x09,
	};
	struct noise_cipher a, b, empty;
	uint8_t pt[3] = { 9, 8, 7 }, ct[3 + NOISE_TAG_LEN], out[3];

	(void)state;
	keyed_pair(&a, &b);
	assert_int_equal(noise_cipher_encrypt(&a, NULL, 0, pt, sizeof(pt), ct), ST_OK);
	assert_int_equal(noise_cipher_decrypt(&b, NULL, 0, ct, sizeof(ct), out), ST_OK);
	noise_cipher_rekey(&a);
	assert_memory_equal(a.k, once, sizeof(once));
	assert_int_equal(a.n, 1); /* REKEY keeps n */

	/* Only one side rekeyed: nothing opens. */
	assert_int_equal(noise_cipher_encrypt(&a, NULL, 0, pt, sizeof(pt), ct), ST_OK);
	assert_int_equal(noise_cipher_decrypt(&b, NULL, 0, ct, sizeof(ct), out), ST_ECRYPTO);
	noise_cipher_rekey(&b);
	assert_int_equal(noise_cipher_decrypt(&b, NULL, 0, ct, sizeof(ct), out), ST_OK);
	assert_memory_equal(out, pt, sizeof(pt));

	noise_cipher_rekey(&a);
	assert_memory_equal(a.k, twice, sizeof(twice));

	/* An empty CipherState passes bytes through and ignores REKEY (§5.1). */
	memset(&empty, 0, sizeof(empty));
	noise_cipher_rekey(&empty);
	assert_false(empty.has_key);
	assert_int_equal(noise_cipher_encrypt(&empty, NULL, 0, pt, sizeof(pt), out), ST_OK);
	assert_memory_equal(out, pt, sizeof(pt));
	noise_cipher_wipe(&a);
	noise_cipher_wipe(&b);
}

/* ---- patterns and names --------------------------------------------------------------------- */

static void test_protocol_names(void **state)
{
	static const char *const good[] = {
		"N", "K", "X", "NN", "NK", "NX", "XN", "XK", "XX", "KN", "KK", "KX", "IN", "IK", "IX",
		"NK1", "NX1", "X1N", "X1K", "XK1", "X1K1", "X1X", "XX1", "X1X1", "K1N", "K1K", "KK1",
		"K1K1", "K1X", "KX1", "K1X1", "I1N", "I1K", "IK1", "I1K1", "I1X", "IX1", "I1X1",
		"IKpsk2", "IKpsk0+psk2", "XXpsk0+psk1+psk2+psk3", "Npsk0", "Xpsk1",
	};
	static const char *const bad[] = {
		"Noise_IK_25519_ChaChaPoly_SHA256",
		"Noise_IK_448_ChaChaPoly_BLAKE2b",
		"Noise_IK_25519_AESGCM_BLAKE2b",
		"Noise_IKfallback_25519_ChaChaPoly_BLAKE2b",
		"Noise_IKpsk_25519_ChaChaPoly_BLAKE2b",
		"Noise_IKpsk3_25519_ChaChaPoly_BLAKE2b", /* IK has two messages */
		"Noise_IKpsk2+_25519_ChaChaPoly_BLAKE2b",
		"Noise_IKpsk02_25519_ChaChaPoly_BLAKE2b",
		"Noise_IKpsk2psk0_25519_ChaChaPoly_BLAKE2b",
		"Noise_IKpsk0+psk0+psk0+psk0+psk0_25519_ChaChaPoly_BLAKE2b",
		"Noise_ZZ_25519_ChaChaPoly_BLAKE2b",
		"Noise_ik_25519_ChaChaPoly_BLAKE2b",
		"Noise__25519_ChaChaPoly_BLAKE2b",
		"NoisePSK_IK_25519_ChaChaPoly_BLAKE2b",
		"Noise_IK_25519_ChaChaPoly_BLAKE2bX",
		"",
	};
	struct noise_pattern p, before;
	char name[128];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		snprintf(name, sizeof(name), "Noise_%s%s", good[i], SUFFIX);
		if (noise_protocol_parse(name, &p) != ST_OK)
			fail_msg("%s refused", name);
	}
	memset(&p, 0x3C, sizeof(p));
	memcpy(&before, &p, sizeof(p));
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		if (noise_protocol_parse(bad[i], &p) != ST_EINVAL)
			fail_msg("%s accepted", bad[i]);
		assert_memory_equal(&p, &before, sizeof(p));
	}

	/* IKpsk2, the link's pattern, token by token. */
	assert_int_equal(noise_protocol_parse("Noise_IKpsk2" SUFFIX, &p), ST_OK);
	assert_int_equal(p.npre[0], 0);
	assert_int_equal(p.npre[1], 1);
	assert_int_equal(p.pre[1][0], NOISE_TOKEN_S);
	assert_int_equal(p.nmsg, 2);
	assert_int_equal(p.npsk, 1);
	assert_int_equal(p.ntok[0], 4);
	assert_int_equal(p.tok[0][0], NOISE_TOKEN_E);
	assert_int_equal(p.tok[0][1], NOISE_TOKEN_ES);
	assert_int_equal(p.tok[0][2], NOISE_TOKEN_S);
	assert_int_equal(p.tok[0][3], NOISE_TOKEN_SS);
	assert_int_equal(p.ntok[1], 4);
	assert_int_equal(p.tok[1][0], NOISE_TOKEN_E);
	assert_int_equal(p.tok[1][1], NOISE_TOKEN_EE);
	assert_int_equal(p.tok[1][2], NOISE_TOKEN_SE);
	assert_int_equal(p.tok[1][3], NOISE_TOKEN_PSK);

	/* psk0 goes first. */
	assert_int_equal(noise_protocol_parse("Noise_XKpsk0+psk3" SUFFIX, &p), ST_OK);
	assert_int_equal(p.tok[0][0], NOISE_TOKEN_PSK);
	assert_int_equal(p.tok[2][p.ntok[2] - 1], NOISE_TOKEN_PSK);
	assert_int_equal(p.npsk, 2);
}

static void test_pattern_notation(void **state)
{
	static const char *const bad[] = {
		"",
		"-> e\n-> e",		  /* the arrows must alternate */
		"<- e",			  /* and start from the initiator */
		"-> e, xx",		  /* unknown token */
		"-> e,",		  /* empty token */
		"-> e\n...",		  /* "..." after the messages */
		"<- s\n...",		  /* pre-messages and no message */
		"-> ee\n...\n-> e",	  /* a DH in a pre-message */
		"<- s\n-> s\n...\n-> e", /* the responder's pre-message first */
		"-> e e",
		"=> e",
		"-> e, e, e, e, e, e, e, e, e", /* more than NOISE_TOKENS_MAX */
		"-> e\n<- e\n-> e\n<- e\n-> e", /* more than NOISE_MESSAGES_MAX */
	};
	struct noise_pattern p, q;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		memset(&p, 0x3C, sizeof(p));
		memcpy(&q, &p, sizeof(p));
		if (noise_pattern_parse(bad[i], &p) != ST_EINVAL)
			fail_msg("pattern %zu accepted", i);
		assert_memory_equal(&p, &q, sizeof(p));
	}
	assert_int_equal(noise_pattern_parse("-> s\n<- s\n...\n-> e,es ,ss\n<-  e, ee, se", &p), ST_OK);
	assert_int_equal(noise_protocol_parse("Noise_KK" SUFFIX, &q), ST_OK);
	assert_memory_equal(&p, &q, sizeof(p));

	/* Modifiers past the last message or past NOISE_PSKS_MAX are refused. */
	assert_int_equal(noise_pattern_add_psk(&p, 3), ST_EINVAL);
	assert_int_equal(noise_pattern_add_psk(&p, 2), ST_OK);
	assert_int_equal(noise_pattern_add_psk(&p, 0), ST_OK);
	assert_int_equal(p.tok[0][0], NOISE_TOKEN_PSK);
	assert_int_equal(p.tok[1][p.ntok[1] - 1], NOISE_TOKEN_PSK);
}

/* ---- HandshakeState misuse and hostile keys ------------------------------------------------- */

static void ik_configs(struct noise_config *i, struct noise_config *r, const uint8_t *is,
		       const uint8_t *rs_priv, const uint8_t *rs_pub)
{
	memset(i, 0, sizeof(*i));
	memset(r, 0, sizeof(*r));
	i->protocol = r->protocol = "Noise_IKpsk2" SUFFIX;
	i->initiator = true;
	i->s = is;
	i->rs = rs_pub;
	r->s = rs_priv;
}

static void test_handshake_misuse(void **state)
{
	uint8_t is[32], is_pub[32], rsk[32], rs_pub[32], psk[32], out[256], pl[64];
	struct noise_handshake hi, hr, before;
	struct noise_config ci, cr;
	struct noise_cipher s1, r1;
	size_t len = 99, plen = 99;

	(void)state;
	noise_keypair_generate(is, is_pub);
	noise_keypair_generate(rsk, rs_pub);
	memset(psk, 0x42, sizeof(psk));
	ik_configs(&ci, &cr, is, rsk, rs_pub);

	/* The responder's static key is a pre-message: IK without it cannot start. */
	ci.rs = NULL;
	memset(&hi, 0x11, sizeof(hi));
	assert_int_equal(noise_handshake_init(&hi, &ci), ST_EINVAL);
	assert_int_equal(noise_handshake_action(&hi), NOISE_ACTION_NONE);
	ci.rs = rs_pub;
	cr.protocol = "Noise_IKpsk2_25519_ChaChaPoly_SHA512";
	assert_int_equal(noise_handshake_init(&hr, &cr), ST_EINVAL);
	cr.protocol = "Noise_IKpsk2" SUFFIX;

	assert_int_equal(noise_handshake_init(&hi, &ci), ST_OK);
	assert_int_equal(noise_handshake_init(&hr, &cr), ST_OK);
	assert_int_equal(noise_handshake_action(&hi), NOISE_ACTION_WRITE);
	assert_int_equal(noise_handshake_action(&hr), NOISE_ACTION_READ);

	/* Out of turn, and no split before the end. */
	memcpy(&before, &hr, sizeof(before));
	assert_int_equal(noise_handshake_write(&hr, NULL, 0, out, sizeof(out), &len), ST_EINVAL);
	assert_int_equal(noise_handshake_read(&hi, out, 112, pl, sizeof(pl), &plen), ST_EINVAL);
	assert_int_equal(noise_handshake_split(&hr, &s1, &r1), ST_EINVAL);
	assert_int_equal(noise_handshake_hash(&hr, pl), ST_EINVAL);
	assert_memory_equal(&before, &hr, sizeof(before));

	/* Message 1 does not fit: refused whole, nothing written, nothing moved. */
	memcpy(&before, &hi, sizeof(before));
	memset(out, 0xCD, sizeof(out));
	assert_int_equal(noise_handshake_write(&hi, (const uint8_t *)"hi", 2, out, 32 + 48 + 2 + 15,
					       &len),
			 ST_ETOOBIG);
	assert_memory_equal(&before, &hi, sizeof(before));
	for (size_t i = 0; i < sizeof(out); i++)
		assert_int_equal(out[i], 0xCD);
	assert_int_equal(len, 99);

	assert_int_equal(noise_handshake_write(&hi, (const uint8_t *)"hi", 2, out, sizeof(out), &len),
			 ST_OK);
	assert_int_equal(len, 32 + 48 + 2 + 16);
	assert_int_equal(noise_handshake_read(&hr, out, len, pl, sizeof(pl), &plen), ST_OK);
	assert_int_equal(plen, 2);
	assert_memory_equal(pl, "hi", 2);
	assert_int_equal(noise_handshake_remote_static(&hr, pl), ST_OK);
	assert_memory_equal(pl, is_pub, 32);

	/* The psk token needs a psk: without one the responder cannot write, and stays as it was. */
	memcpy(&before, &hr, sizeof(before));
	assert_int_equal(noise_handshake_write(&hr, NULL, 0, out, sizeof(out), &len), ST_EINVAL);
	assert_memory_equal(&before, &hr, sizeof(before));
	assert_int_equal(noise_handshake_add_psk(&hr, psk), ST_OK);
	assert_int_equal(noise_handshake_write(&hr, NULL, 0, out, sizeof(out), &len), ST_OK);
	assert_int_equal(len, 48);
	/* The initiator has no psk either: it cannot read. */
	memcpy(&before, &hi, sizeof(before));
	assert_int_equal(noise_handshake_read(&hi, out, len, pl, sizeof(pl), &plen), ST_EINVAL);
	assert_memory_equal(&before, &hi, sizeof(before));
	assert_int_equal(noise_handshake_add_psk(&hi, psk), ST_OK);
	assert_int_equal(noise_handshake_read(&hi, out, len, pl, sizeof(pl), &plen), ST_OK);
	assert_int_equal(plen, 0);
	assert_int_equal(noise_handshake_action(&hi), NOISE_ACTION_SPLIT);
	assert_int_equal(noise_handshake_write(&hi, NULL, 0, out, sizeof(out), &len), ST_EINVAL);

	/* Split wipes the secrets and keeps the hash and the peer's key. */
	assert_int_equal(noise_handshake_split(&hr, &s1, &r1), ST_OK);
	assert_int_equal(noise_handshake_action(&hr), NOISE_ACTION_NONE);
	assert_int_equal(noise_handshake_split(&hr, &s1, &r1), ST_EINVAL);
	assert_int_equal(noise_handshake_hash(&hr, pl), ST_OK);
	assert_int_equal(noise_handshake_remote_static(&hr, out), ST_OK);
	assert_memory_equal(out, is_pub, 32);
	for (size_t i = 0; i < sizeof(hr.s); i++)
		assert_int_equal(hr.s[i] | hr.e[i] | hr.psk[0][i] | hr.sym.cs.k[i], 0);
	for (size_t i = 0; i < sizeof(hr.sym.ck); i++)
		assert_int_equal(hr.sym.ck[i], 0);

	noise_handshake_wipe(&hi);
	noise_handshake_wipe(&hr);
	noise_cipher_wipe(&s1);
	noise_cipher_wipe(&r1);
}

static void test_low_order_keys(void **state)
{
	/* Points of small order on Curve25519 (and their non-canonical twins): DH with any of them
	 * must fail, since the "shared secret" would be known to everyone. */
	static const uint8_t low[][32] = {
		{ 0 },
		{ 1 },
		{ 0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
		  0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00 },
		{ 0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b,
		  0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57 },
		{ 0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f },
	};
	uint8_t is[32], is_pub[32], rsk[32], rs_pub[32], out[256], pl[64];
	struct noise_handshake hi, hr, before;
	struct noise_config ci, cr;
	size_t len, plen;

	(void)state;
	noise_keypair_generate(is, is_pub);
	noise_keypair_generate(rsk, rs_pub);
	for (size_t k = 0; k < ARRAY_SIZE(low); k++) {
		/* As the responder's pinned key: the initiator's es fails, nothing is written. */
		ik_configs(&ci, &cr, is, rsk, low[k]);
		assert_int_equal(noise_handshake_init(&hi, &ci), ST_OK);
		memcpy(&before, &hi, sizeof(before));
		assert_int_equal(noise_handshake_write(&hi, NULL, 0, out, sizeof(out), &len), ST_ECRYPTO);
		assert_memory_equal(&before, &hi, sizeof(before));

		/* As an initiator's ephemeral on the wire: the responder's es fails. */
		ik_configs(&ci, &cr, is, rsk, rs_pub);
		assert_int_equal(noise_handshake_init(&hi, &ci), ST_OK);
		assert_int_equal(noise_handshake_init(&hr, &cr), ST_OK);
		assert_int_equal(noise_handshake_write(&hi, NULL, 0, out, sizeof(out), &len), ST_OK);
		memcpy(out, low[k], 32);
		memcpy(&before, &hr, sizeof(before));
		assert_int_equal(noise_handshake_read(&hr, out, len, pl, sizeof(pl), &plen), ST_ECRYPTO);
		assert_memory_equal(&before, &hr, sizeof(before));
		noise_handshake_wipe(&hi);
		noise_handshake_wipe(&hr);
	}
}

static void test_keypairs(void **state)
{
	uint8_t a[32], a_pub[32], b[32], b_pub[32], pub[32];

	(void)state;
	noise_keypair_generate(a, a_pub);
	noise_keypair_generate(b, b_pub);
	assert_memory_not_equal(a, b, 32);
	assert_memory_not_equal(a_pub, b_pub, 32);
	assert_int_equal(noise_public_key(pub, a), ST_OK);
	assert_memory_equal(pub, a_pub, 32);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors_ik_xk),
		cmocka_unit_test(test_vectors_all),
		cmocka_unit_test(test_forged_handshake),
		cmocka_unit_test(test_wrong_length_handshake),
		cmocka_unit_test(test_forged_transport),
		cmocka_unit_test(test_cipher_nonce_limit),
		cmocka_unit_test(test_cipher_rekey),
		cmocka_unit_test(test_protocol_names),
		cmocka_unit_test(test_pattern_notation),
		cmocka_unit_test(test_handshake_misuse),
		cmocka_unit_test(test_low_order_keys),
		cmocka_unit_test(test_keypairs),
	};

	return cmocka_run_group_tests(tests, group_setup, NULL);
}
