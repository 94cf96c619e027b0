/* tests/unit/test_udp_table.c - the permitted peers and the datagram rate of a UDP association. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "base/addr.h"
#include "base/status.h"
#include "socks/udp_table.h"

static struct addr ip(const char *text, uint16_t port)
{
	struct addr a;

	assert_int_equal(addr_parse_ip(text, port, &a), ST_OK);
	return a;
}

static bool has(const struct udp_peers *t, const char *text, uint16_t port)
{
	struct addr a = ip(text, port);

	return udp_peers_has(t, &a);
}

static void add(struct udp_peers *t, const char *text, uint16_t port)
{
	struct addr a = ip(text, port);

	udp_peers_add(t, &a);
}

static void test_peers_address_and_port(void **state)
{
	static struct udp_peers t;
	struct addr a = ip("192.0.2.1", 53), b = ip("2001:db8::1", 53);

	(void)state;
	udp_peers_init(&t);
	assert_false(udp_peers_has(&t, &a));
	udp_peers_add(&t, &a);
	udp_peers_add(&t, &b);
	assert_true(udp_peers_has(&t, &a));
	assert_true(udp_peers_has(&t, &b));
	/* Another port, or another address, of a permitted peer is a stranger. */
	assert_false(has(&t, "192.0.2.1", 54));
	assert_false(has(&t, "192.0.2.2", 53));
	assert_false(has(&t, "2001:db8::2", 53));
	/* The same bytes in another family are another peer... */
	assert_false(has(&t, "c000:201::", 53));
	/* ...but a mapped IPv4 address is the IPv4 host it names. */
	assert_true(has(&t, "::ffff:192.0.2.1", 53));
	/* Adding again does not take a second place. */
	udp_peers_add(&t, &a);
	assert_int_equal(t.n, 2);
}

static void test_peers_forget_the_least_recently_used(void **state)
{
	static struct udp_peers t;
	char text[32];

	(void)state;
	udp_peers_init(&t);
	for (unsigned i = 0; i < UDP_PEERS_MAX; i++) {
		snprintf(text, sizeof(text), "10.0.%u.%u", i / 256, i % 256);
		add(&t, text, 1000);
	}
	assert_int_equal(t.n, UDP_PEERS_MAX);
	/* The first peer is used again: the second is now the least recently used. */
	add(&t, "10.0.0.0", 1000);
	add(&t, "10.9.9.9", 1000);
	assert_int_equal(t.n, UDP_PEERS_MAX);
	assert_true(has(&t, "10.9.9.9", 1000));
	assert_true(has(&t, "10.0.0.0", 1000));
	assert_false(has(&t, "10.0.0.1", 1000));
	assert_true(has(&t, "10.0.0.2", 1000));
}

static void test_peers_clock_wraps(void **state)
{
	static struct udp_peers t;
	char text[32];

	(void)state;
	udp_peers_init(&t);
	t.clock = UINT32_MAX - 3; /* the clock wraps within the next few additions */
	for (unsigned i = 0; i < UDP_PEERS_MAX + 1; i++) {
		snprintf(text, sizeof(text), "10.1.%u.%u", i / 256, i % 256);
		add(&t, text, 7);
	}
	/* The oldest (added before the wrap) went first, the newest stayed. */
	assert_false(has(&t, "10.1.0.0", 7));
	assert_true(has(&t, "10.1.0.1", 7));
	snprintf(text, sizeof(text), "10.1.%u.%u", UDP_PEERS_MAX / 256, UDP_PEERS_MAX % 256);
	assert_true(has(&t, text, 7));
}

static void test_bucket_burst_and_refill(void **state)
{
	struct udp_bucket b;
	int n = 0;

	(void)state;
	udp_bucket_init(&b, 100, 1000.0);
	while (udp_bucket_take(&b, 1000.0))
		n++;
	assert_int_equal(n, 100); /* a burst of one second's worth */
	assert_false(udp_bucket_take(&b, 1000.005));
	assert_true(udp_bucket_take(&b, 1000.011)); /* 1.1 tokens after 11 ms */
	assert_false(udp_bucket_take(&b, 1000.011));
	/* A long pause refills no more than the burst. */
	n = 0;
	while (udp_bucket_take(&b, 2000.0))
		n++;
	assert_int_equal(n, 100);
	/* A clock going backwards adds nothing. */
	assert_false(udp_bucket_take(&b, 1500.0));
}

static void test_bucket_small_rate_and_no_limit(void **state)
{
	struct udp_bucket b;

	(void)state;
	udp_bucket_init(&b, 1, 0.0);
	assert_true(udp_bucket_take(&b, 0.0));
	assert_false(udp_bucket_take(&b, 0.5));
	assert_true(udp_bucket_take(&b, 1.0));
	udp_bucket_init(&b, 0, 0.0);
	for (int i = 0; i < 100000; i++)
		assert_true(udp_bucket_take(&b, 0.0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_peers_address_and_port),
		cmocka_unit_test(test_peers_forget_the_least_recently_used),
		cmocka_unit_test(test_peers_clock_wraps),
		cmocka_unit_test(test_bucket_burst_and_refill),
		cmocka_unit_test(test_bucket_small_rate_and_no_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
