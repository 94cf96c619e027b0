/* tests/unit/test_base.c - buffers, addresses and the status table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "base/addr.h"
#include "base/buf.h"
#include "base/status.h"

static void test_buf_fill_drain_reset(void **state)
{
	struct buf b;
	uint8_t chunk[300];

	(void)state;
	memset(chunk, 0xab, sizeof(chunk));
	assert_int_equal(buf_alloc(&b, 1000), ST_OK);
	assert_int_equal(buf_room(&b), 1000);
	assert_int_equal(buf_append(&b, chunk, 300), ST_OK);
	assert_int_equal(buf_append(&b, chunk, 300), ST_OK);
	assert_int_equal(buf_append(&b, chunk, 300), ST_OK);
	/* 900 used: 300 more do not fit, and nothing is written. */
	assert_int_equal(buf_append(&b, chunk, 300), ST_EFULL);
	assert_int_equal(buf_len(&b), 900);
	buf_consume(&b, 500);
	assert_int_equal(buf_len(&b), 400);
	/* Room at the end is 100; compaction at the end reclaims the consumed front. */
	assert_int_equal(buf_append(&b, chunk, 300), ST_OK);
	assert_int_equal(buf_len(&b), 700);
	buf_consume(&b, 700);
	assert_true(buf_empty(&b));
	assert_int_equal(b.head, 0);
	assert_int_equal(b.tail, 0);
	buf_free(&b);
	assert_null(b.base);
}

static void test_buf_keeps_order_across_compaction(void **state)
{
	struct buf b;
	uint8_t out[64];

	(void)state;
	assert_int_equal(buf_alloc(&b, 8), ST_OK);
	assert_int_equal(buf_append(&b, "abcdefgh", 8), ST_OK);
	buf_consume(&b, 5);
	assert_int_equal(buf_room(&b), 5);
	assert_int_equal(buf_append(&b, "ijklm", 5), ST_OK);
	memcpy(out, buf_data(&b), buf_len(&b));
	assert_memory_equal(out, "fghijklm", 8);
	buf_free(&b);
}

static void test_addr_parse_hostport(void **state)
{
	struct addr a;
	char text[ADDR_STRLEN];

	(void)state;
	assert_int_equal(addr_parse_hostport("127.0.0.1:1080", &a), ST_OK);
	assert_string_equal(addr_format(&a, text, sizeof(text)), "127.0.0.1:1080");
	assert_true(addr_is_loopback(&a));
	assert_int_equal(addr_parse_hostport("[::1]:0", &a), ST_OK);
	assert_string_equal(addr_format(&a, text, sizeof(text)), "[::1]:0");
	assert_true(addr_is_loopback(&a));
	assert_int_equal(addr_parse_hostport("[2001:db8::1]:65535", &a), ST_OK);
	assert_false(addr_is_loopback(&a));
	assert_int_equal(addr_parse_hostport("0.0.0.0:1", &a), ST_OK);
	assert_false(addr_is_loopback(&a));

	static const char *const bad[] = {
		"", "127.0.0.1", "127.0.0.1:", ":80", "127.0.0.1:65536", "127.0.0.1:-1",
		"127.0.0.1:80x", "::1:80", "[::1]", "[::1]80", "[127.0.0.1]:80", "localhost:80",
		"[]:80", "1.2.3:80", "[::1]:+80", "127.0.0.1: 80",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct addr before;

		memset(&a, 0x5a, sizeof(a));
		before = a;
		assert_int_equal(addr_parse_hostport(bad[i], &a), ST_EINVAL);
		assert_memory_equal(&a, &before, sizeof(a)); /* unchanged on failure */
	}
}

static void test_addr_equal_and_mapped_loopback(void **state)
{
	struct addr a, b;

	(void)state;
	assert_int_equal(addr_parse_ip("::ffff:127.0.0.5", 1, &a), ST_OK);
	assert_true(addr_is_loopback(&a));
	assert_int_equal(addr_parse_ip("127.0.0.1", 1, &a), ST_OK);
	assert_int_equal(addr_parse_ip("127.0.0.1", 2, &b), ST_OK);
	assert_true(addr_equal_ip(&a, &b));
	assert_false(addr_equal(&a, &b));
	addr_set_port(&b, 1);
	assert_true(addr_equal(&a, &b));
}

/* A client is its IPv4 address or its IPv6 /64, whatever the port; the two families never meet. */
static void test_addr_client_key(void **state)
{
	uint8_t k[4][ADDR_CLIENT_KEY_LEN], zero[ADDR_CLIENT_KEY_LEN] = { 0 };
	struct addr a;

	(void)state;
	assert_int_equal(addr_parse_ip("2001:db8:1:2::a", 1, &a), ST_OK);
	addr_client_key(&a, k[0]);
	assert_int_equal(addr_parse_ip("2001:db8:1:2:ffff::b", 2, &a), ST_OK);
	addr_client_key(&a, k[1]);
	assert_memory_equal(k[0], k[1], ADDR_CLIENT_KEY_LEN); /* the same /64 */
	assert_int_equal(addr_parse_ip("2001:db8:1:3::a", 1, &a), ST_OK);
	addr_client_key(&a, k[2]);
	assert_memory_not_equal(k[0], k[2], ADDR_CLIENT_KEY_LEN); /* the next /64 */
	/* 32.1.13.184 is 2001:0db8 read as IPv4: still another client. */
	assert_int_equal(addr_parse_ip("32.1.13.184", 1, &a), ST_OK);
	addr_client_key(&a, k[3]);
	assert_memory_not_equal(k[0], k[3], ADDR_CLIENT_KEY_LEN);
	assert_int_equal(addr_parse_ip("32.1.13.185", 1, &a), ST_OK);
	addr_client_key(&a, k[2]);
	assert_memory_not_equal(k[2], k[3], ADDR_CLIENT_KEY_LEN); /* IPv4: the whole address */
	for (int i = 0; i < 4; i++) {
		assert_memory_not_equal(k[i], zero, ADDR_CLIENT_KEY_LEN); /* zero marks a free slot */
		assert_true(addr_client_slot(k[i], 7) < 7);
	}
}

static void test_addr_is_internal(void **state)
{
	static const char *const internal[] = {
		"0.0.0.0", "0.1.2.3", "10.1.2.3", "100.64.0.1", "100.127.255.254", "127.0.0.1",
		"127.255.0.9", "169.254.1.1", "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.0.2.77",
		"192.168.1.1", "198.18.0.1", "198.19.255.255", "198.51.100.7", "203.0.113.9", "224.0.0.1",
		"239.255.255.250", "240.0.0.1", "255.255.255.255", "::", "::1", "::ffff:127.0.0.1",
		"::ffff:10.0.0.1", "::127.0.0.1", "64:ff9b::10.0.0.1", "64:ff9b::192.168.0.1", "fe80::1",
		"febf::1", "fec0::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1", "100::1",
	};
	static const char *const external[] = {
		"1.1.1.1", "8.8.8.8", "11.0.0.1", "100.63.255.255", "100.128.0.0", "126.255.255.255",
		"128.0.0.1", "169.253.255.255", "172.15.255.255", "172.32.0.0", "192.0.1.255", "192.0.3.0",
		"192.167.255.255", "192.169.0.0", "198.17.255.255", "198.20.0.0", "223.255.255.255",
		"2606:4700::1111", "2a00:1450::1", "::ffff:1.1.1.1", "64:ff9b::8.8.8.8", "2001:db9::1",
		"100:0:0:1::1",
	};
	struct addr a;

	(void)state;
	for (size_t i = 0; i < sizeof(internal) / sizeof(internal[0]); i++) {
		assert_int_equal(addr_parse_ip(internal[i], 80, &a), ST_OK);
		if (!addr_is_internal(&a))
			fail_msg("%s should be internal", internal[i]);
	}
	for (size_t i = 0; i < sizeof(external) / sizeof(external[0]); i++) {
		assert_int_equal(addr_parse_ip(external[i], 80, &a), ST_OK);
		if (addr_is_internal(&a))
			fail_msg("%s should be external", external[i]);
	}
}

static void test_status_strings(void **state)
{
	(void)state;
	assert_string_equal(status_str(ST_OK), "success");
	assert_string_equal(status_str(ST_NEED_MORE), "need more bytes");
	assert_string_equal(status_str(12345), "unknown status");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buf_fill_drain_reset),
		cmocka_unit_test(test_buf_keeps_order_across_compaction),
		cmocka_unit_test(test_addr_parse_hostport),
		cmocka_unit_test(test_addr_equal_and_mapped_loopback),
		cmocka_unit_test(test_addr_client_key),
		cmocka_unit_test(test_addr_is_internal),
		cmocka_unit_test(test_status_strings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
