/* tests/unit/test_quota.c - counts per key with a cap, shared by threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "socks/quota.h"

static void test_cap_per_key(void **state)
{
	struct quota *q;

	(void)state;
	assert_int_equal(quota_new(&q), ST_OK);
	assert_int_equal(quota_take(q, "alice", 2), ST_OK);
	assert_int_equal(quota_take(q, "alice", 2), ST_OK);
	assert_int_equal(quota_take(q, "alice", 2), ST_EFULL);
	assert_int_equal(quota_count(q, "alice"), 2);
	/* Another key has its own count; the cap is the caller's at each call. */
	assert_int_equal(quota_take(q, "bob", 2), ST_OK);
	assert_int_equal(quota_take(q, "alice", 3), ST_OK);
	assert_int_equal(quota_count(q, "alice"), 3);
	quota_release(q, "alice");
	quota_release(q, "alice");
	assert_int_equal(quota_take(q, "alice", 2), ST_OK);
	assert_int_equal(quota_take(q, "alice", 2), ST_EFULL);
	/* Released to zero: forgotten; releasing more changes nothing. */
	quota_release(q, "bob");
	quota_release(q, "bob");
	assert_int_equal(quota_count(q, "bob"), 0);
	assert_int_equal(quota_take(q, "bob", 1), ST_OK);
	/* A cap of 0 refuses every take. */
	assert_int_equal(quota_take(q, "carol", 0), ST_EFULL);
	assert_int_equal(quota_count(q, "carol"), 0);
	quota_free(q);
}

static void test_long_keys_are_cut(void **state)
{
	struct quota *q;
	char a[200], b[200];

	(void)state;
	memset(a, 'x', sizeof(a) - 1);
	a[sizeof(a) - 1] = '\0';
	memcpy(b, a, sizeof(b));
	b[150] = 'y'; /* differs only after QUOTA_KEY_MAX bytes */
	assert_int_equal(quota_new(&q), ST_OK);
	assert_int_equal(quota_take(q, a, 1), ST_OK);
	assert_int_equal(quota_take(q, b, 1), ST_EFULL);
	quota_release(q, b);
	assert_int_equal(quota_count(q, a), 0);
	quota_free(q);
}

#define THREADS 4
#define ROUNDS 20000
#define CAP 3

struct worker_arg {
	struct quota *q;
	atomic_int *holding; /* per key: what the threads hold now, must never pass CAP */
	atomic_bool *over;
	unsigned seed;
};

static void *hammer(void *p)
{
	struct worker_arg *w = p;
	char key[16];

	for (int i = 0; i < ROUNDS; i++) {
		unsigned k;

		w->seed = w->seed * 1103515245u + 12345u;
		k = (w->seed >> 16) % 5;
		snprintf(key, sizeof(key), "user%u", k);
		if (quota_take(w->q, key, CAP) == ST_OK) {
			if (atomic_fetch_add(&w->holding[k], 1) + 1 > CAP)
				atomic_store(w->over, true);
			atomic_fetch_sub(&w->holding[k], 1);
			quota_release(w->q, key);
		}
	}
	return NULL;
}

static void test_threads_never_pass_the_cap(void **state)
{
	struct quota *q;
	atomic_int holding[5];
	atomic_bool over;
	pthread_t t[THREADS];
	struct worker_arg args[THREADS];

	(void)state;
	assert_int_equal(quota_new(&q), ST_OK);
	for (int i = 0; i < 5; i++)
		atomic_init(&holding[i], 0);
	atomic_init(&over, false);
	for (int i = 0; i < THREADS; i++) {
		args[i] = (struct worker_arg){ q, holding, &over, (unsigned)i * 7919u + 1 };
		assert_int_equal(pthread_create(&t[i], NULL, hammer, &args[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	assert_false(atomic_load(&over));
	for (int i = 0; i < 5; i++) {
		char key[16];

		snprintf(key, sizeof(key), "user%d", i);
		assert_int_equal(quota_count(q, key), 0); /* every take was given back */
	}
	quota_free(q);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cap_per_key),
		cmocka_unit_test(test_long_keys_are_cut),
		cmocka_unit_test(test_threads_never_pass_the_cap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
