/* tests/unit/test_throttle.c - failed-login throttling per client address. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "base/addr.h"
#include "base/status.h"
#include "socks/throttle.h"

static struct addr ip(const char *text)
{
	struct addr a;

	assert_int_equal(addr_parse_ip(text, 1234, &a), ST_OK);
	return a;
}

static void test_free_failures_then_doubling_delay(void **state)
{
	struct throttle *t;
	struct addr a = ip("192.0.2.1");
	double now = 1000;

	(void)state;
	assert_int_equal(throttle_new(64, &t), ST_OK);
	for (int i = 0; i < THROTTLE_FREE; i++)
		assert_true(throttle_fail(t, &a, now) == 0.0);
	assert_true(throttle_fail(t, &a, now) == 1.0);
	assert_true(throttle_fail(t, &a, now) == 2.0);
	assert_true(throttle_fail(t, &a, now) == 4.0);
	assert_true(throttle_fail(t, &a, now) == 8.0);
	assert_true(throttle_fail(t, &a, now) == THROTTLE_DELAY_MAX);
	assert_true(throttle_fail(t, &a, now) == THROTTLE_DELAY_MAX);
	throttle_free(t);
}

static void test_block_threshold_and_expiry(void **state)
{
	struct throttle *t;
	struct addr a = ip("192.0.2.1"), b = ip("192.0.2.2");
	double now = 50;

	(void)state;
	assert_int_equal(throttle_new(64, &t), ST_OK);
	for (int i = 0; i < THROTTLE_BLOCK - 1; i++)
		(void)throttle_fail(t, &a, now);
	assert_false(throttle_blocked(t, &a, now));
	(void)throttle_fail(t, &a, now);
	assert_true(throttle_blocked(t, &a, now));
	/* Another address is not affected. */
	assert_false(throttle_blocked(t, &b, now));
	/* The count lapses a window after the last failure. */
	assert_true(throttle_blocked(t, &a, now + THROTTLE_WINDOW - 1));
	assert_false(throttle_blocked(t, &a, now + THROTTLE_WINDOW + 1));
	assert_true(throttle_fail(t, &a, now + THROTTLE_WINDOW + 1) == 0.0);
	throttle_free(t);
}

static void test_ipv6_counts_per_64(void **state)
{
	struct throttle *t;
	struct addr a = ip("2001:db8:1:2::1"), b = ip("2001:db8:1:2::ffff"), c = ip("2001:db8:1:3::1");

	(void)state;
	assert_int_equal(throttle_new(64, &t), ST_OK);
	for (int i = 0; i < THROTTLE_BLOCK; i++)
		(void)throttle_fail(t, i % 2 ? &a : &b, 0);
	assert_true(throttle_blocked(t, &a, 0));
	assert_true(throttle_blocked(t, &b, 0));
	assert_false(throttle_blocked(t, &c, 0));
	throttle_free(t);
}

static void test_full_table_reuses_stalest(void **state)
{
	struct throttle *t;
	char text[32];
	struct addr first = ip("10.0.0.0");

	(void)state;
	/* A one-slot table: every new address takes the slot over. */
	assert_int_equal(throttle_new(1, &t), ST_OK);
	for (int i = 0; i < THROTTLE_BLOCK; i++)
		(void)throttle_fail(t, &first, 0);
	assert_true(throttle_blocked(t, &first, 0));
	for (int i = 1; i < 100; i++) {
		struct addr a;

		snprintf(text, sizeof(text), "10.0.%d.%d", i / 256, i % 256);
		a = ip(text);
		(void)throttle_fail(t, &a, (double)i);
	}
	assert_false(throttle_blocked(t, &first, 100));
	throttle_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_free_failures_then_doubling_delay),
		cmocka_unit_test(test_block_threshold_and_expiry),
		cmocka_unit_test(test_ipv6_counts_per_64),
		cmocka_unit_test(test_full_table_reuses_stalest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
