/* tests/unit/test_egress_site.c - the site of a destination (libpsl registrable domains). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "base/status.h"
#include "egress/site.h"

static void expect_site(const char *name, const char *site)
{
	char out[EGRESS_SITE_MAX];

	assert_int_equal(egress_site_of_name(name, out), ST_OK);
	assert_string_equal(out, site);
}

static int setup(void **state)
{
	(void)state;
	return egress_site_init() == ST_OK ? 0 : -1;
}

static void test_registrable_domain(void **state)
{
	(void)state;
	/* One site per registrable domain, whatever the subdomain. */
	expect_site("a.example.co.uk", "example.co.uk");
	expect_site("b.example.co.uk", "example.co.uk");
	expect_site("example.co.uk", "example.co.uk");
	expect_site("www.example.com", "example.com");
	expect_site("deep.sub.example.com", "example.com");
	expect_site("x.y.github.io", "y.github.io"); /* a private suffix: each user page is a site */
}

static void test_case_and_trailing_dot(void **state)
{
	(void)state;
	expect_site("WWW.Example.COM", "example.com");
	expect_site("www.example.com.", "example.com");
}

static void test_names_without_registrable_domain(void **state)
{
	(void)state;
	expect_site("localhost", "localhost");
	expect_site("co.uk", "co.uk");
	expect_site("com", "com");
}

static void test_bad_names(void **state)
{
	char out[EGRESS_SITE_MAX], longname[300];

	(void)state;
	assert_int_equal(egress_site_of_name("", out), ST_EINVAL);
	assert_int_equal(egress_site_of_name(".", out), ST_EINVAL);
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(egress_site_of_name(longname, out), ST_EINVAL);
}

static void test_literal_addresses(void **state)
{
	char out[EGRESS_SITE_MAX];
	struct addr a;

	(void)state;
	assert_int_equal(addr_parse_ip("192.0.2.1", 443, &a), ST_OK);
	egress_site_of_addr(&a, out);
	assert_string_equal(out, "192.0.2.1");
	assert_int_equal(addr_parse_ip("2001:db8::1", 443, &a), ST_OK);
	egress_site_of_addr(&a, out);
	assert_string_equal(out, "2001:db8::1");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_registrable_domain),
		cmocka_unit_test(test_case_and_trailing_dot),
		cmocka_unit_test(test_names_without_registrable_domain),
		cmocka_unit_test(test_bad_names),
		cmocka_unit_test(test_literal_addresses),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
