/* tests/unit/test_keys.c - crypto/keys: secrets in guarded memory, X25519 keys, their text forms. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/status.h"
#include "crypto/keys.h"
#include "crypto/pwhash.h"

static int group_setup(void **state)
{
	(void)state;
	return pwhash_init() == ST_OK ? 0 : -1;
}

static void hex_to(uint8_t *out, const char *hex, size_t n)
{
	assert_int_equal(strlen(hex), 2 * n);
	for (size_t i = 0; i < n; i++) {
		unsigned v;

		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
}

/* ---- secrets --------------------------------------------------------------------------------- */

static void test_secret_lifecycle(void **state)
{
	struct keys_secret *s = NULL, *sentinel = (struct keys_secret *)(uintptr_t)0x1234, *t;
	uint8_t zero[64] = { 0 };
	uint8_t *p;

	(void)state;
	t = sentinel;
	assert_int_equal(keys_secret_new(0, &t), ST_EINVAL);
	assert_int_equal(keys_secret_new(4097, &t), ST_EINVAL);
	assert_ptr_equal(t, sentinel);

	assert_int_equal(keys_secret_new(64, &s), ST_OK);
	assert_int_equal(keys_secret_len(s), 64);
	/* Zero-filled, not libsodium's 0xdb fill. */
	assert_memory_equal(keys_secret_bytes(s), zero, sizeof(zero));
	p = keys_secret_data(s);
	assert_non_null(p);
	assert_ptr_equal(p, keys_secret_bytes(s));
	for (size_t i = 0; i < 64; i++)
		p[i] = (uint8_t)i;
	assert_int_equal(keys_secret_lock(s), ST_OK);
	/* Locked: no writable pointer any more, the bytes still readable. */
	assert_null(keys_secret_data(s));
	for (size_t i = 0; i < 64; i++)
		assert_int_equal(keys_secret_bytes(s)[i], i);
	assert_int_equal(keys_secret_lock(s), ST_OK);
	keys_secret_free(s);
	keys_secret_free(NULL);

	/* The largest allowed, freed while writable. */
	assert_int_equal(keys_secret_new(4096, &s), ST_OK);
	memset(keys_secret_data(s), 0xa5, 4096);
	keys_secret_free(s);
}

static void segv_exit(int sig)
{
	(void)sig;
	_exit(77);
}

/* A write to a locked secret faults: the child dies in its handler, not at the end. */
static void test_secret_locked_write_faults(void **state)
{
	struct keys_secret *s = NULL;
	int status = 0;
	pid_t pid;

	(void)state;
	assert_int_equal(keys_secret_new(32, &s), ST_OK);
	keys_secret_data(s)[0] = 1;
	assert_int_equal(keys_secret_lock(s), ST_OK);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = segv_exit;
		sigaction(SIGSEGV, &sa, NULL);
		sigaction(SIGBUS, &sa, NULL);
		((volatile uint8_t *)(uintptr_t)keys_secret_bytes(s))[0] = 2;
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 77);
	/* Still the old value here, and freeing a locked secret works. */
	assert_int_equal(keys_secret_bytes(s)[0], 1);
	keys_secret_free(s);
}

/* ---- X25519 ---------------------------------------------------------------------------------- */

/* RFC 7748 §6.1: Alice's and Bob's key pairs. */
#define ALICE_PRIV "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
#define ALICE_PUB "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
#define BOB_PRIV "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
#define BOB_PUB "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"

static void test_x25519_rfc7748(void **state)
{
	uint8_t priv[32], pub[32], want[32];

	(void)state;
	hex_to(priv, ALICE_PRIV, 32);
	hex_to(want, ALICE_PUB, 32);
	assert_int_equal(keys_x25519_public(pub, priv), ST_OK);
	assert_memory_equal(pub, want, 32);
	hex_to(priv, BOB_PRIV, 32);
	hex_to(want, BOB_PUB, 32);
	assert_int_equal(keys_x25519_public(pub, priv), ST_OK);
	assert_memory_equal(pub, want, 32);
	assert_true(keys_x25519_public_usable(want));
}

static void test_x25519_generate(void **state)
{
	struct keys_secret *a = NULL, *b = NULL, *wrong = NULL;
	uint8_t pa[32], pb[32], again[32], keep[32];

	(void)state;
	assert_int_equal(keys_secret_new(32, &a), ST_OK);
	assert_int_equal(keys_secret_new(32, &b), ST_OK);
	assert_int_equal(keys_x25519_generate(a, pa), ST_OK);
	assert_int_equal(keys_x25519_generate(b, pb), ST_OK);
	assert_memory_not_equal(keys_secret_bytes(a), keys_secret_bytes(b), 32);
	assert_memory_not_equal(pa, pb, 32);
	/* The public key is the private key's. */
	assert_int_equal(keys_x25519_public(again, keys_secret_bytes(a)), ST_OK);
	assert_memory_equal(again, pa, 32);
	assert_true(keys_x25519_public_usable(pa));

	/* A locked secret or one of another length is refused, pub untouched. */
	memcpy(keep, pa, 32);
	assert_int_equal(keys_secret_lock(a), ST_OK);
	assert_int_equal(keys_x25519_generate(a, pa), ST_EINVAL);
	assert_memory_equal(pa, keep, 32);
	assert_int_equal(keys_secret_new(31, &wrong), ST_OK);
	assert_int_equal(keys_x25519_generate(wrong, pa), ST_EINVAL);
	assert_memory_equal(pa, keep, 32);
	keys_secret_free(a);
	keys_secret_free(b);
	keys_secret_free(wrong);
}

/* The points of small order on Curve25519 and its twist, as 32-byte u-coordinates (and the
 * non-canonical encodings p, p + 1 of 0 and 1): no DH with them can succeed. */
static const char *const low_order[] = {
	"0000000000000000000000000000000000000000000000000000000000000000",
	"0100000000000000000000000000000000000000000000000000000000000000",
	"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
	"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
};

static void test_x25519_low_order_refused(void **state)
{
	uint8_t pub[32];

	(void)state;
	for (size_t i = 0; i < sizeof(low_order) / sizeof(low_order[0]); i++) {
		hex_to(pub, low_order[i], 32);
		if (keys_x25519_public_usable(pub))
			fail_msg("low-order point %s accepted", low_order[i]);
	}
	hex_to(pub, ALICE_PUB, 32);
	assert_true(keys_x25519_public_usable(pub));
}

/* ---- text forms ------------------------------------------------------------------------------ */

static void test_base64_known_and_round_trip(void **state)
{
	char text[KEYS_BASE64_SIZE];
	uint8_t key[32], back[32];

	(void)state;
	memset(key, 0, sizeof(key));
	keys_base64_encode(text, key);
	assert_string_equal(text, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
	hex_to(key, ALICE_PUB, 32);
	keys_base64_encode(text, key);
	assert_string_equal(text, "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=");
	assert_int_equal(keys_base64_decode(back, text, strlen(text)), ST_OK);
	assert_memory_equal(back, key, 32);

	for (int round = 0; round < 200; round++) {
		keys_random(key, sizeof(key));
		keys_base64_encode(text, key);
		assert_int_equal(strlen(text), KEYS_BASE64_LEN);
		assert_int_equal(text[KEYS_BASE64_LEN - 1], '=');
		memset(back, 0, sizeof(back));
		assert_int_equal(keys_base64_decode(back, text, KEYS_BASE64_LEN), ST_OK);
		assert_memory_equal(back, key, 32);
	}
}

static void test_base64_rejects(void **state)
{
	static const char good[] = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
	const char *bad[] = {
		"",
		"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo",	    /* no padding */
		"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo==",    /* too much padding */
		"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmoA",	    /* 33 bytes */
		"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmp=",	    /* unused bits set */
		"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo=",	    /* base64url's '_' */
		"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066Spjqq Tmo=",	    /* a space */
		"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n",   /* a line end */
		" hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=",    /* leading space */
		"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066Spjqq=Tmo=",	    /* '=' inside */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",	    /* 31 bytes */
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", /* 35 bytes */
	};
	uint8_t out[32], sentinel[32];

	(void)state;
	memset(sentinel, 0x5a, sizeof(sentinel));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(out, sentinel, sizeof(out));
		if (keys_base64_decode(out, bad[i], strlen(bad[i])) != ST_EINVAL)
			fail_msg("accepted '%s'", bad[i]);
		assert_memory_equal(out, sentinel, sizeof(out));
	}
	/* Every truncation of a good key. */
	for (size_t len = 0; len < KEYS_BASE64_LEN; len++)
		assert_int_equal(keys_base64_decode(out, good, len), ST_EINVAL);
	/* A NUL inside the counted length. */
	{
		char nul[KEYS_BASE64_SIZE];

		memcpy(nul, good, sizeof(nul));
		nul[10] = '\0';
		assert_int_equal(keys_base64_decode(out, nul, KEYS_BASE64_LEN), ST_EINVAL);
	}
	assert_int_equal(keys_base64_decode(out, NULL, 0), ST_EINVAL);
	assert_memory_equal(out, sentinel, sizeof(out));
	assert_int_equal(keys_base64_decode(out, good, KEYS_BASE64_LEN), ST_OK);
}

static void test_hex(void **state)
{
	static const uint8_t bin[4] = { 0x00, 0x7f, 0xa5, 0xff };
	char text[9];
	struct keys_secret *s = NULL, *sentinel = (struct keys_secret *)(uintptr_t)0x1234;
	uint8_t want[32];
	const char *bad[] = {
		"",
		ALICE_PRIV "0",		    /* 65 digits */
		ALICE_PRIV "00",	    /* 33 bytes */
		"77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2",  /* 63 */
		"g7076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", /* not hex */
		"77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2 ", /* a space */
		"77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c:a",
	};

	(void)state;
	keys_hex_encode(text, bin, sizeof(bin));
	assert_string_equal(text, "007fa5ff");

	hex_to(want, ALICE_PRIV, 32);
	assert_int_equal(keys_secret_from_hex(ALICE_PRIV, 32, &s), ST_OK);
	assert_int_equal(keys_secret_len(s), 32);
	assert_memory_equal(keys_secret_bytes(s), want, 32);
	assert_null(keys_secret_data(s)); /* locked */
	keys_secret_free(s);
	s = NULL;
	/* Upper case too. */
	assert_int_equal(
		keys_secret_from_hex("77076D0A7318A57D3C16C17251B26645DF4C2F87EBC0992AB177FBA51DB92C2A",
				     32, &s),
		ST_OK);
	assert_memory_equal(keys_secret_bytes(s), want, 32);
	keys_secret_free(s);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		s = sentinel;
		if (keys_secret_from_hex(bad[i], 32, &s) != ST_EINVAL)
			fail_msg("accepted hex '%s'", bad[i]);
		assert_ptr_equal(s, sentinel);
	}
	s = sentinel;
	assert_int_equal(keys_secret_from_hex(NULL, 32, &s), ST_EINVAL);
	assert_int_equal(keys_secret_from_hex(ALICE_PRIV, 0, &s), ST_EINVAL);
	assert_ptr_equal(s, sentinel);
}

static void test_private_parse(void **state)
{
	static const char b64[] = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
	struct keys_secret *s = NULL, *sentinel = (struct keys_secret *)(uintptr_t)0x1234;
	uint8_t want[32];
	char line[64];
	const char *bad[] = {
		"dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\r\n",
		"dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n\n",
		"dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo= ",
		" dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=",
		"dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo\n",
		"dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo",
		"dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCp=\n",
		"",
		"\n",
	};

	(void)state;
	hex_to(want, ALICE_PRIV, 32);
	assert_int_equal(keys_private_parse(b64, strlen(b64), &s), ST_OK);
	assert_memory_equal(keys_secret_bytes(s), want, 32);
	assert_null(keys_secret_data(s));
	keys_secret_free(s);
	s = NULL;
	snprintf(line, sizeof(line), "%s\n", b64);
	assert_int_equal(keys_private_parse(line, strlen(line), &s), ST_OK);
	assert_memory_equal(keys_secret_bytes(s), want, 32);
	keys_secret_free(s);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		s = sentinel;
		if (keys_private_parse(bad[i], strlen(bad[i]), &s) != ST_EINVAL)
			fail_msg("accepted key file '%s'", bad[i]);
		assert_ptr_equal(s, sentinel);
	}
	for (size_t len = 0; len < strlen(line) - 1; len++) {
		s = sentinel;
		assert_int_equal(keys_private_parse(line, len, &s), ST_EINVAL);
		assert_ptr_equal(s, sentinel);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_secret_lifecycle),
		cmocka_unit_test(test_secret_locked_write_faults),
		cmocka_unit_test(test_x25519_rfc7748),
		cmocka_unit_test(test_x25519_generate),
		cmocka_unit_test(test_x25519_low_order_refused),
		cmocka_unit_test(test_base64_known_and_round_trip),
		cmocka_unit_test(test_base64_rejects),
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_private_parse),
	};

	return cmocka_run_group_tests(tests, group_setup, NULL);
}
