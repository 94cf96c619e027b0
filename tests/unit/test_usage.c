/* tests/unit/test_usage.c - in-memory usage counters: adding, taking, merging. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "socks/usage.h"

static const struct usage_row *find(const struct usage_map *m, const char *key)
{
	for (size_t i = 0; i < m->cap; i++)
		if (m->rows[i].used && strcmp(m->rows[i].key, key) == 0)
			return &m->rows[i];
	fail_msg("no usage row for '%s'", key);
	abort(); /* not reached: fail_msg ends the test (and tells gcc there is no NULL to deref) */
}

static void test_add_and_take(void **state)
{
	struct usage u;
	struct usage_map e, us;
	const struct usage_row *r;

	(void)state;
	usage_init(&u);
	usage_add(&u, "alice", "127.0.0.2", 100, 1000, false);
	usage_add(&u, "alice", "127.0.0.3", 5, 7, false);
	usage_add(&u, "bob", "127.0.0.2", 0, 0, true);
	usage_add_datagrams(&u, "alice", "127.0.0.3", 1, 30, 60, 4);
	usage_take(&u, &e, &us);
	assert_int_equal(e.n, 2);
	assert_int_equal(us.n, 2);
	r = find(&e, "127.0.0.2");
	assert_non_null(r);
	assert_int_equal(r->connections, 2);
	assert_int_equal(r->bytes_up, 100);
	assert_int_equal(r->bytes_down, 1000);
	assert_int_equal(r->failures, 1);
	r = find(&us, "alice");
	assert_non_null(r);
	assert_int_equal(r->connections, 3);
	assert_int_equal(r->bytes_up, 135);
	assert_int_equal(r->failures, 0);
	assert_int_equal(r->datagrams, 4);
	r = find(&e, "127.0.0.3");
	assert_non_null(r);
	assert_int_equal(r->bytes_down, 67);
	assert_int_equal(r->datagrams, 4);
	/* Taking empties the worker's side. */
	usage_map_free(&e);
	usage_map_free(&us);
	usage_take(&u, &e, &us);
	assert_int_equal(e.n, 0);
	assert_int_equal(us.n, 0);
	usage_destroy(&u);
}

static void test_growth_and_merge(void **state)
{
	struct usage a, b;
	struct usage_map ea, ua, eb, ub, total = { 0 };
	char key[32];

	(void)state;
	usage_init(&a);
	usage_init(&b);
	for (int i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "10.0.%d.%d", i / 256, i % 256);
		usage_add(&a, "", key, 1, 2, false);
		usage_add(&b, "", key, 10, 20, i % 2);
	}
	usage_take(&a, &ea, &ua);
	usage_take(&b, &eb, &ub);
	assert_int_equal(ea.n, 1000);
	assert_int_equal(usage_map_merge(&total, &ea), ST_OK);
	assert_int_equal(usage_map_merge(&total, &eb), ST_OK);
	assert_int_equal(total.n, 1000);
	for (int i = 0; i < 1000; i++) {
		const struct usage_row *r;

		snprintf(key, sizeof(key), "10.0.%d.%d", i / 256, i % 256);
		r = find(&total, key);
		assert_non_null(r);
		assert_int_equal(r->connections, 2);
		assert_int_equal(r->bytes_up, 11);
		assert_int_equal(r->bytes_down, 22);
		assert_int_equal(r->failures, (uint64_t)(i % 2));
	}
	assert_int_equal(find(&ua, "")->connections, 1000);
	usage_map_free(&ea);
	usage_map_free(&ua);
	usage_map_free(&eb);
	usage_map_free(&ub);
	usage_map_free(&total);
	usage_destroy(&a);
	usage_destroy(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_add_and_take),
		cmocka_unit_test(test_growth_and_merge),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
