/* tests/unit/test_pwhash.c - crypto/pwhash: Argon2id hashing and the verified-credential cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/status.h"
#include "crypto/pwhash.h"

#define PASS "correct horse battery staple"

static int group_setup(void **state)
{
	(void)state;
	return pwhash_init() == ST_OK ? 0 : -1;
}

/* ---- hashing --------------------------------------------------------------------------------- */

static void test_hash_verify(void **state)
{
	char hash[PWHASH_STR_MAX];

	(void)state;
	assert_int_equal(pwhash_hash(PASS, strlen(PASS), hash), ST_OK);
	assert_true(pwhash_str_valid(hash));
	assert_int_equal(strncmp(hash, "$argon2id$", 10), 0);
	assert_int_equal(pwhash_verify(hash, PASS, strlen(PASS)), ST_OK);

	assert_int_equal(pwhash_verify(hash, "correct horse battery stapler", strlen(PASS) + 1),
			 ST_EAUTH);
	assert_int_equal(pwhash_verify(hash, "Correct horse battery staple", strlen(PASS)), ST_EAUTH);
	/* The length is the password's: a prefix is another password. */
	assert_int_equal(pwhash_verify(hash, PASS, strlen(PASS) - 1), ST_EAUTH);
	assert_int_equal(pwhash_verify(hash, "", 0), ST_EAUTH);
}

static void test_hash_binary_and_empty(void **state)
{
	char hash[PWHASH_STR_MAX];

	(void)state;
	/* RFC 1929 passwords are bytes: a NUL inside is part of the password. */
	assert_int_equal(pwhash_hash("a\0b", 3, hash), ST_OK);
	assert_int_equal(pwhash_verify(hash, "a\0b", 3), ST_OK);
	assert_int_equal(pwhash_verify(hash, "a\0c", 3), ST_EAUTH);
	assert_int_equal(pwhash_verify(hash, "a", 1), ST_EAUTH);

	assert_int_equal(pwhash_hash("", 0, hash), ST_OK);
	assert_int_equal(pwhash_verify(hash, "", 0), ST_OK);
	assert_int_equal(pwhash_verify(hash, NULL, 0), ST_OK);
	assert_int_equal(pwhash_verify(hash, "x", 1), ST_EAUTH);
}

static void test_hash_salted(void **state)
{
	char h1[PWHASH_STR_MAX], h2[PWHASH_STR_MAX];

	(void)state;
	assert_int_equal(pwhash_hash(PASS, strlen(PASS), h1), ST_OK);
	assert_int_equal(pwhash_hash(PASS, strlen(PASS), h2), ST_OK);
	assert_string_not_equal(h1, h2);
	assert_int_equal(pwhash_verify(h1, PASS, strlen(PASS)), ST_OK);
	assert_int_equal(pwhash_verify(h2, PASS, strlen(PASS)), ST_OK);
}

static void test_hash_failure_leaves_output(void **state)
{
	char hash[PWHASH_STR_MAX];

	(void)state;
	memset(hash, 'z', sizeof(hash));
	hash[sizeof(hash) - 1] = '\0';
	assert_int_equal(pwhash_hash(NULL, 5, hash), ST_EINVAL);
	for (size_t i = 0; i < sizeof(hash) - 1; i++)
		assert_int_equal(hash[i], 'z');
}

static void test_verify_malformed(void **state)
{
	char hash[PWHASH_STR_MAX], bad[PWHASH_STR_MAX];
	char *unterminated;
	size_t len;

	(void)state;
	assert_int_equal(pwhash_hash(PASS, strlen(PASS), hash), ST_OK);
	len = strlen(hash);

	assert_int_equal(pwhash_verify(NULL, PASS, strlen(PASS)), ST_EAUTH);
	assert_int_equal(pwhash_verify("", PASS, strlen(PASS)), ST_EAUTH);
	assert_int_equal(pwhash_verify("$argon2id$", PASS, strlen(PASS)), ST_EAUTH);
	assert_int_equal(pwhash_verify(PASS, PASS, strlen(PASS)), ST_EAUTH);

	/* Another algorithm's prefix, with the rest intact. */
	snprintf(bad, sizeof(bad), "$argon2i$%s", hash + strlen("$argon2id$"));
	assert_int_equal(pwhash_verify(bad, PASS, strlen(PASS)), ST_EAUTH);
	/* Every truncation is refused. */
	for (size_t cut = 0; cut < len; cut++) {
		memcpy(bad, hash, cut);
		bad[cut] = '\0';
		assert_int_equal(pwhash_verify(bad, PASS, strlen(PASS)), ST_EAUTH);
	}
	/* A changed character of the tag is refused. */
	memcpy(bad, hash, len + 1);
	bad[len - 2] = bad[len - 2] == 'A' ? 'B' : 'A';
	assert_int_equal(pwhash_verify(bad, PASS, strlen(PASS)), ST_EAUTH);

	/* PWHASH_STR_MAX bytes and no NUL: refused without reading past them (ASan watches the
	 * heap block's end). */
	unterminated = malloc(PWHASH_STR_MAX);
	assert_non_null(unterminated);
	memset(unterminated, 'a', PWHASH_STR_MAX);
	memcpy(unterminated, hash, len);
	assert_false(pwhash_str_valid(unterminated));
	assert_int_equal(pwhash_verify(unterminated, PASS, strlen(PASS)), ST_EAUTH);
	free(unterminated);
}

static void test_str_valid(void **state)
{
	char hash[PWHASH_STR_MAX];

	(void)state;
	assert_int_equal(pwhash_hash(PASS, strlen(PASS), hash), ST_OK);
	assert_true(pwhash_str_valid(hash));
	assert_false(pwhash_str_valid(NULL));
	assert_false(pwhash_str_valid(""));
	assert_false(pwhash_str_valid("$argon2i$v=19$m=4096,t=3,p=1$c2FsdA$aGFzaA"));
	assert_false(pwhash_str_valid("$2b$12$abcdefghijklmnopqrstuv"));
	assert_false(pwhash_str_valid("argon2id$v=19"));
}

/* ---- cache ----------------------------------------------------------------------------------- */

#define HASH1 "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHQ$aGFzaDE"
#define HASH2 "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHQ$aGFzaDI"

static bool check(struct pwhash_cache *c, const char *user, const char *pass, double now)
{
	return pwhash_cache_check(c, user, pass, strlen(pass), HASH1, now);
}

static void put(struct pwhash_cache *c, const char *user, const char *pass, double now)
{
	pwhash_cache_put(c, user, pass, strlen(pass), HASH1, now);
}

static void test_cache_hit_miss(void **state)
{
	struct pwhash_cache *c;

	(void)state;
	assert_int_equal(pwhash_cache_new(64, 60.0, &c), ST_OK);
	assert_false(check(c, "alice", "secret", 100.0));
	put(c, "alice", "secret", 100.0);
	assert_true(check(c, "alice", "secret", 100.0));
	assert_true(check(c, "alice", "secret", 159.9));

	assert_false(check(c, "alice", "secreT", 101.0));
	assert_false(check(c, "alice", "secret ", 101.0));
	assert_false(check(c, "alice", "", 101.0));
	assert_false(check(c, "Alice", "secret", 101.0));
	assert_false(check(c, "bob", "secret", 101.0));
	/* The stored hash is part of the key: a password change invalidates the entry. */
	assert_false(pwhash_cache_check(c, "alice", "secret", 6, HASH2, 101.0));
	assert_true(pwhash_cache_check(c, "alice", "secret", 6, HASH1, 101.0));
	/* The password is plen bytes, not up to a NUL. */
	assert_true(pwhash_cache_check(c, "alice", "secretXYZ", 6, HASH1, 101.0));
	assert_false(pwhash_cache_check(c, "alice", "secret", 5, HASH1, 101.0));

	/* Valid for less than ttl seconds after the put. */
	assert_false(check(c, "alice", "secret", 160.0));
	assert_false(check(c, "alice", "secret", 1000.0));
	/* A put refreshes. */
	put(c, "alice", "secret", 1000.0);
	assert_true(check(c, "alice", "secret", 1059.0));
	pwhash_cache_free(c);
	pwhash_cache_free(NULL);
}

static void test_cache_unambiguous(void **state)
{
	struct pwhash_cache *c;

	(void)state;
	assert_int_equal(pwhash_cache_new(64, 60.0, &c), ST_OK);
	/* The same bytes cut at another place are another triple. */
	put(c, "ab", "c", 1.0);
	assert_true(check(c, "ab", "c", 2.0));
	assert_false(check(c, "a", "bc", 2.0));
	assert_false(check(c, "abc", "", 2.0));
	assert_false(pwhash_cache_check(c, "ab", "", 0, "c" HASH1, 2.0));
	pwhash_cache_put(c, "u", "p$", 2, "x", 1.0);
	assert_true(pwhash_cache_check(c, "u", "p$", 2, "x", 2.0));
	assert_false(pwhash_cache_check(c, "u", "p", 1, "$x", 2.0));
	pwhash_cache_free(c);
}

static void test_cache_eviction(void **state)
{
	static const char *const users[] = { "a", "b", "c", "d", "e", "f", "g" };
	struct pwhash_cache *c;

	(void)state;
	/* Four slots: one set of four ways, so every entry competes for it. */
	assert_int_equal(pwhash_cache_new(4, 100.0, &c), ST_OK);
	for (size_t i = 0; i < 4; i++)
		put(c, users[i], "pw", 1.0 + (double)i); /* a..d expire at 101..104 */
	for (size_t i = 0; i < 4; i++)
		assert_true(check(c, users[i], "pw", 5.0));

	/* A fifth entry evicts the one expiring soonest: a. */
	put(c, "e", "pw", 5.0);
	assert_false(check(c, "a", "pw", 6.0));
	for (size_t i = 1; i < 5; i++)
		assert_true(check(c, users[i], "pw", 6.0));

	/* Putting b again refreshes its own way (no duplicate), so the next one evicts c. */
	put(c, "b", "pw", 6.0);
	put(c, "f", "pw", 7.0);
	assert_false(check(c, "c", "pw", 8.0));
	assert_true(check(c, "b", "pw", 8.0));
	assert_true(check(c, "d", "pw", 8.0));
	assert_true(check(c, "e", "pw", 8.0));
	assert_true(check(c, "f", "pw", 8.0));

	/* d has expired by 104.5: its way is taken before any live one. */
	put(c, "g", "pw", 104.5);
	assert_false(check(c, "d", "pw", 104.6));
	assert_true(check(c, "e", "pw", 104.6));
	assert_true(check(c, "b", "pw", 104.6));
	assert_true(check(c, "f", "pw", 104.6));
	assert_true(check(c, "g", "pw", 104.6));
	pwhash_cache_free(c);
}

static void test_cache_sizes(void **state)
{
	char user[16];
	struct pwhash_cache *c;

	(void)state;
	/* Zero slots still makes one set. */
	assert_int_equal(pwhash_cache_new(0, 10.0, &c), ST_OK);
	put(c, "alice", "pw", 0.0);
	assert_true(check(c, "alice", "pw", 1.0));
	pwhash_cache_free(c);

	/* A roomy cache keeps a few entries: 20 in 256 sets crowd no set past its four ways
	 * (odds of failure about 4e-6). */
	assert_int_equal(pwhash_cache_new(1000, 10.0, &c), ST_OK);
	for (int i = 0; i < 20; i++) {
		snprintf(user, sizeof(user), "user%d", i);
		put(c, user, "pw", 0.0);
	}
	for (int i = 0; i < 20; i++) {
		snprintf(user, sizeof(user), "user%d", i);
		assert_true(check(c, user, "pw", 1.0));
	}
	pwhash_cache_free(c);

	/* An impossible size is refused, not wrapped. */
	assert_int_equal(pwhash_cache_new(SIZE_MAX, 10.0, &c), ST_ENOMEM);
}

static void test_cache_keys_differ(void **state)
{
	struct pwhash_cache *c1, *c2;

	(void)state;
	/* Each cache has its own random key: an entry means nothing to another cache. */
	assert_int_equal(pwhash_cache_new(4, 60.0, &c1), ST_OK);
	assert_int_equal(pwhash_cache_new(4, 60.0, &c2), ST_OK);
	put(c1, "alice", "pw", 0.0);
	assert_true(check(c1, "alice", "pw", 1.0));
	assert_false(check(c2, "alice", "pw", 1.0));
	pwhash_cache_free(c1);
	pwhash_cache_free(c2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hash_verify),
		cmocka_unit_test(test_hash_binary_and_empty),
		cmocka_unit_test(test_hash_salted),
		cmocka_unit_test(test_hash_failure_leaves_output),
		cmocka_unit_test(test_verify_malformed),
		cmocka_unit_test(test_str_valid),
		cmocka_unit_test(test_cache_hit_miss),
		cmocka_unit_test(test_cache_unambiguous),
		cmocka_unit_test(test_cache_eviction),
		cmocka_unit_test(test_cache_sizes),
		cmocka_unit_test(test_cache_keys_differ),
	};

	return cmocka_run_group_tests(tests, group_setup, NULL);
}
