/* tests/unit/test_access.c - crypto/access: the access key of the encrypted link. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/status.h"
#include "crypto/access.h"
#include "crypto/keys.h"
#include "crypto/pwhash.h"

/* Fixed inputs: the server key is RFC 7748's Alice, the PSK 01..20, the client key 40..5f. The
 * golden lines were computed independently (Python: hashlib.blake2b(digest_size=32), base64). */
#define SERVER_PUB_HEX "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
#define GOLDEN_FULL                                                                              \
	"shroud-link1:vpn.example.com:8443/hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo."             \
	"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA.QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8." \
	"BQUh8CGF"
#define GOLDEN_ALLOW                                                                             \
	"shroud-link1:[2001:db8::1]:443/hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo."                \
	"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA.kJUf4YML"

struct keys {
	uint8_t server[32], psk[32], client[32];
};

static void keys_fixed(struct keys *k)
{
	static const char hex[] = SERVER_PUB_HEX;

	for (size_t i = 0; i < 32; i++) {
		unsigned v;

		assert_int_equal(sscanf(&hex[2 * i], "%2x", &v), 1);
		k->server[i] = (uint8_t)v;
		k->psk[i] = (uint8_t)(i + 1);
		k->client[i] = (uint8_t)(0x40 + i);
	}
}

static int group_setup(void **state)
{
	(void)state;
	return pwhash_init() == ST_OK ? 0 : -1;
}

/* Parse must fail with ST_EINVAL and a reason, leaving out as it was. Returns the reason. */
static const char *parse_fails(const char *text, size_t len)
{
	struct link_access out, before;
	const char *why = NULL;
	int st;

	memset(&out, 0xa5, sizeof(out));
	before = out;
	st = link_access_parse(text, len, &out, &why);
	if (st != ST_EINVAL)
		fail_msg("parse of '%.*s' (%zu bytes) gave %s, want a refusal", (int)len,
			 text != NULL ? text : "", len, status_str(st));
	assert_non_null(why);
	assert_true(strlen(why) > 10);
	assert_memory_equal(&out, &before, sizeof(out));
	return why;
}

static void assert_why(const char *text, const char *want)
{
	const char *why = parse_fails(text, strlen(text));

	if (strstr(why, want) == NULL)
		fail_msg("'%s': reason '%s' does not mention '%s'", text, why, want);
}

/* ---- format and parse ------------------------------------------------------------------------ */

static void test_golden_lines(void **state)
{
	char line[LINK_ACCESS_MAX];
	struct link_access a;
	struct keys k;
	const char *why = NULL;

	(void)state;
	keys_fixed(&k);
	assert_int_equal(link_access_format(line, sizeof(line), "vpn.example.com", 8443, k.server,
					    k.psk, k.client),
			 ST_OK);
	assert_string_equal(line, GOLDEN_FULL);
	/* An IPv6 address in any case comes out canonical and in brackets. */
	assert_int_equal(link_access_format(line, sizeof(line), "2001:DB8:0::1", 443, k.server, k.psk,
					    NULL),
			 ST_OK);
	assert_string_equal(line, GOLDEN_ALLOW);

	memset(&a, 0, sizeof(a));
	assert_int_equal(link_access_parse(GOLDEN_FULL, strlen(GOLDEN_FULL), &a, &why), ST_OK);
	assert_string_equal(a.host, "vpn.example.com");
	assert_int_equal(a.port, 8443);
	assert_memory_equal(a.server_public, k.server, 32);
	assert_non_null(a.psk);
	assert_int_equal(keys_secret_len(a.psk), 32);
	assert_memory_equal(keys_secret_bytes(a.psk), k.psk, 32);
	assert_non_null(a.client_private);
	assert_memory_equal(keys_secret_bytes(a.client_private), k.client, 32);
	/* The secrets come back locked. */
	assert_null(keys_secret_data(a.psk));
	assert_null(keys_secret_data(a.client_private));
	link_access_clear(&a);
	assert_null(a.psk);
	assert_null(a.client_private);
	link_access_clear(&a);

	assert_int_equal(link_access_parse(GOLDEN_ALLOW, strlen(GOLDEN_ALLOW), &a, &why), ST_OK);
	assert_string_equal(a.host, "2001:db8::1");
	assert_int_equal(a.port, 443);
	assert_memory_equal(keys_secret_bytes(a.psk), k.psk, 32);
	assert_null(a.client_private);
	link_access_clear(&a);
}

static void round_trip(const char *host, uint16_t port, const char *want_host, bool with_client)
{
	char line[LINK_ACCESS_MAX];
	struct link_access a;
	struct keys k;
	const char *why = NULL;

	keys_random(k.psk, 32);
	keys_random(k.client, 32);
	{
		struct keys_secret *priv = NULL;

		assert_int_equal(keys_secret_new(32, &priv), ST_OK);
		assert_int_equal(keys_x25519_generate(priv, k.server), ST_OK);
		keys_secret_free(priv);
	}
	assert_int_equal(link_access_format(line, sizeof(line), host, port, k.server, k.psk,
					    with_client ? k.client : NULL),
			 ST_OK);
	assert_int_equal(strncmp(line, LINK_ACCESS_TAG, strlen(LINK_ACCESS_TAG)), 0);
	/* Only characters that survive copy and paste. */
	for (const char *p = line; *p != '\0'; p++) {
		if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:/[]", *p) ==
		    NULL)
			fail_msg("'%c' in %s", *p, line);
	}
	if (link_access_parse(line, strlen(line), &a, &why) != ST_OK)
		fail_msg("%s: %s", line, why);
	assert_string_equal(a.host, want_host);
	assert_int_equal(a.port, port);
	assert_memory_equal(a.server_public, k.server, 32);
	assert_memory_equal(keys_secret_bytes(a.psk), k.psk, 32);
	if (with_client)
		assert_memory_equal(keys_secret_bytes(a.client_private), k.client, 32);
	else
		assert_null(a.client_private);
	link_access_clear(&a);
}

static void test_round_trips(void **state)
{
	char longest[LINK_ACCESS_HOST_MAX + 1];

	(void)state;
	for (int with = 0; with < 2; with++) {
		round_trip("vpn.example.com", 8443, "vpn.example.com", with);
		round_trip("Host-1.Example.ORG", 1, "Host-1.Example.ORG", with);
		round_trip("localhost", 65535, "localhost", with);
		round_trip("192.0.2.1", 443, "192.0.2.1", with);
		round_trip("2001:db8::1", 443, "2001:db8::1", with);
		round_trip("2001:DB8:0:0:0:0:0:7", 50000, "2001:db8::7", with);
		round_trip("::ffff:192.0.2.1", 443, "::ffff:192.0.2.1", with);
		round_trip("::1", 1, "::1", with);
	}
	/* The longest name: 253 characters in labels of 63. */
	memset(longest, 'a', LINK_ACCESS_HOST_MAX);
	longest[63] = longest[127] = longest[191] = '.';
	longest[LINK_ACCESS_HOST_MAX] = '\0';
	round_trip(longest, 65535, longest, true);
}

/* Every proper prefix of a valid key is refused, and so is any character added. */
static void test_every_truncation_fails(void **state)
{
	static const char *const lines[] = { GOLDEN_FULL, GOLDEN_ALLOW };
	char longer[LINK_ACCESS_MAX + 2];

	(void)state;
	for (size_t k = 0; k < 2; k++) {
		size_t len = strlen(lines[k]);

		for (size_t n = 0; n < len; n++)
			parse_fails(lines[k], n);
		for (const char *c = "A.-_:/]0"; *c != '\0'; c++) {
			snprintf(longer, sizeof(longer), "%s%c", lines[k], *c);
			parse_fails(longer, strlen(longer));
		}
		/* ... and with a line end: the caller strips it. */
		snprintf(longer, sizeof(longer), "%s\n", lines[k]);
		assert_non_null(strstr(parse_fails(longer, strlen(longer)), "line break"));
	}
}

/* Every change of one bit of one character is refused (the check catches what still parses). */
static void test_every_bit_flip_fails(void **state)
{
	static const char *const lines[] = { GOLDEN_FULL, GOLDEN_ALLOW };
	char copy[LINK_ACCESS_MAX];

	(void)state;
	for (size_t k = 0; k < 2; k++) {
		size_t len = strlen(lines[k]);

		for (size_t i = 0; i < len; i++) {
			for (int bit = 0; bit < 8; bit++) {
				memcpy(copy, lines[k], len + 1);
				copy[i] = (char)(copy[i] ^ (1 << bit));
				parse_fails(copy, len);
			}
		}
	}
}

static void test_damaged_key_says_so(void **state)
{
	char copy[] = GOLDEN_FULL;

	(void)state;
	/* A valid character in the PSK for another: everything parses but the check. */
	copy[strlen(LINK_ACCESS_TAG) + strlen("vpn.example.com:8443/") + 44 + 5] ^= 2;
	assert_non_null(strstr(parse_fails(copy, strlen(copy)), "damaged"));
	/* A port digit. */
	memcpy(copy, GOLDEN_FULL, sizeof(copy));
	copy[strlen(LINK_ACCESS_TAG) + strlen("vpn.example.com:844")] = '5';
	assert_non_null(strstr(parse_fails(copy, strlen(copy)), "damaged"));
	/* Upper case in the host is the same host to DNS, not to the check. */
	memcpy(copy, GOLDEN_FULL, sizeof(copy));
	copy[strlen(LINK_ACCESS_TAG)] = 'V';
	assert_non_null(strstr(parse_fails(copy, strlen(copy)), "damaged"));
}

#define KEY43 "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"
#define PSK43 "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA"
#define CLI43 "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8"
#define PRE "shroud-link1:vpn.example.com:8443/"

static void test_structure_errors(void **state)
{
	(void)state;
	assert_why("", "does not start with shroud-link1:");
	assert_why("hello", "does not start with shroud-link1:");
	assert_why("SHROUD-LINK1:" "vpn.example.com:8443/" KEY43 "." PSK43 ".BQUh8CGF",
		   "does not start");
	assert_why("shroud-link2:vpn.example.com:8443/" KEY43 "." PSK43 ".BQUh8CGF",
		   "another version");
	assert_why("shroud-link1:vpn.example.com:8443", "no '/'");
	assert_why(PRE, "missing");
	assert_why(PRE KEY43, "missing");
	assert_why(PRE KEY43 "." PSK43, "missing");
	assert_why(PRE KEY43 "." PSK43 "." CLI43 "." CLI43 ".BQUh8CGF", "too many");
	assert_why(PRE KEY43 "." PSK43 "." CLI43 "." CLI43 "." CLI43 ".BQUh8CGF", "too many");
	/* Wrong lengths, field by field. */
	assert_why(PRE "hSDw." PSK43 ".BQUh8CGF", "server key is not 43");
	assert_why(PRE KEY43 "A." PSK43 ".BQUh8CGF", "server key is not 43");
	assert_why(PRE KEY43 "." PSK43 "A.BQUh8CGF", "PSK is not 43");
	assert_why(PRE KEY43 "." PSK43 ".BQUh8CG", "check is not 8");
	assert_why(PRE KEY43 "." PSK43 "." CLI43 "A.BQUh8CGF", "private key is not 43");
	assert_why(PRE KEY43 "." PSK43 "." CLI43 ".BQUh8CGFA", "check is not 8");
	assert_why(PRE KEY43 "." PSK43 "..BQUh8CGF", "private key is not 43");
	/* Bad base64url, field by field: '+' and '/' are standard base64, '=' padding. */
	assert_why(PRE "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo." PSK43 ".BQUh8CGF",
		   "server key is not valid base64url");
	assert_why(PRE KEY43 ".AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eH+A.BQUh8CGF",
		   "PSK is not valid base64url");
	assert_why(PRE KEY43 "." PSK43 ".QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdX=8.BQUh8CGF",
		   "private key is not valid base64url");
	assert_why(PRE KEY43 "." PSK43 "." CLI43 ".BQUh8CG+", "check is not valid base64url");
	/* Unused bits set in the last character (not the unique encoding). */
	assert_why(PRE "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmp." PSK43 ".BQUh8CGF",
		   "server key is not valid base64url");
	/* Spaces, line breaks and other bytes. */
	assert_why("shroud-link1:vpn.example.com:8443/ " KEY43 "." PSK43 ".BQUh8CGF", "line break");
	assert_why("shroud-link1:vpn.example.com:8443/\t" KEY43, "line break");
	assert_why("shroud-link1:vpn.example.com:8443/\xc3\xa9" KEY43, "character");
	assert_why("shroud-link1:vpn.example.com:8443/\x7f" KEY43, "character");
	{
		char nul[] = GOLDEN_FULL;

		nul[40] = '\0';
		assert_non_null(strstr(parse_fails(nul, sizeof(nul) - 1), "character"));
	}
	{
		char huge[LINK_ACCESS_MAX + 10];

		memset(huge, 'a', sizeof(huge));
		memcpy(huge, LINK_ACCESS_TAG, strlen(LINK_ACCESS_TAG));
		assert_non_null(strstr(parse_fails(huge, sizeof(huge)), "too long"));
	}
	parse_fails(NULL, 0);
}

/* An access key has one spelling: an address literal must be canonical even when the check
 * matches (this line's check is right; computed in Python). */
static void test_non_canonical_address_refused(void **state)
{
	(void)state;
	assert_why("shroud-link1:[2001:DB8::1]:443/" KEY43 "." PSK43 ".1uRUZK3l", "canonical");
}

static void test_low_order_server_key_refused(void **state)
{
	char line[LINK_ACCESS_MAX];
	struct keys k;

	(void)state;
	keys_fixed(&k);
	memset(k.server, 0, sizeof(k.server));
	assert_int_equal(link_access_format(line, sizeof(line), "vpn.example.com", 8443, k.server,
					    k.psk, k.client),
			 ST_OK);
	assert_why(line, "not a usable X25519 public key");
}

/* ---- HOST:PORT ------------------------------------------------------------------------------- */

static void server_ok(const char *text, const char *want_host, uint16_t want_port)
{
	char host[LINK_ACCESS_HOST_MAX + 1];
	uint16_t port = 0;
	const char *why = NULL;

	if (link_access_server_parse(text, host, &port, &why) != ST_OK)
		fail_msg("'%s' refused: %s", text, why);
	assert_string_equal(host, want_host);
	assert_int_equal(port, want_port);
}

static void server_bad(const char *text, const char *want)
{
	char host[LINK_ACCESS_HOST_MAX + 1] = "untouched";
	uint16_t port = 7;
	const char *why = NULL;

	if (link_access_server_parse(text, host, &port, &why) != ST_EINVAL)
		fail_msg("'%s' accepted as %s port %u", text, host, port);
	assert_non_null(why);
	if (strstr(why, want) == NULL)
		fail_msg("'%s': reason '%s' does not mention '%s'", text, why, want);
	assert_string_equal(host, "untouched");
	assert_int_equal(port, 7);
}

static void test_server_forms(void **state)
{
	char name[300];

	(void)state;
	server_ok("vpn.example.com:443", "vpn.example.com", 443);
	server_ok("a:1", "a", 1);
	server_ok("xn--bcher-kva.example:65535", "xn--bcher-kva.example", 65535);
	server_ok("192.0.2.1:8443", "192.0.2.1", 8443);
	server_ok("[2001:DB8::0:1]:443", "2001:db8::1", 443);
	server_ok("[::1]:1", "::1", 1);
	server_ok("[::ffff:192.0.2.1]:80", "::ffff:192.0.2.1", 80);
	server_ok("9lives.example:80", "9lives.example", 80);

	server_bad("", "port is missing");
	server_bad("vpn.example.com", "port is missing");
	server_bad("vpn.example.com:", "port is missing");
	server_bad(":443", "host is missing");
	server_bad("vpn.example.com:0", "1 to 65535");
	server_bad("vpn.example.com:65536", "1 to 65535");
	server_bad("vpn.example.com:0443", "1 to 65535");
	server_bad("vpn.example.com:44a", "1 to 65535");
	server_bad("vpn.example.com:+443", "1 to 65535");
	server_bad("vpn.example.com:443 ", "1 to 65535");
	server_bad("vpn.example.com:999999", "1 to 65535");
	server_bad("2001:db8::1:443", "brackets");
	server_bad("[2001:db8::1]", "port is missing");
	server_bad("[2001:db8::1]443", "port is missing");
	server_bad("[2001:db8::1:443", "closing");
	server_bad("[fe80::1%eth0]:443", "not an IPv6 address");
	server_bad("[192.0.2.1]:443", "not an IPv6 address");
	server_bad("[]:443", "host is missing");
	server_bad("[vpn.example.com]:443", "not an IPv6 address");
	server_bad("192.0.2:443", "not a valid IPv4 address");
	server_bad("192.0.2.256:443", "not a valid IPv4 address");
	server_bad("192.0.2.01:443", "not a valid IPv4 address");
	server_bad("1.2.3.4.5:443", "not a valid IPv4 address");
	server_bad("-vpn.example.com:443", "not a valid name");
	server_bad("vpn-.example.com:443", "not a valid name");
	server_bad("vpn..example.com:443", "not a valid name");
	server_bad(".example.com:443", "not a valid name");
	server_bad("example.com.:443", "not a valid name");
	server_bad("vpn_1.example.com:443", "not a valid name");
	server_bad("vpn example.com:443", "not a valid name");
	server_bad("vpn/example.com:443", "not a valid name");
	server_bad("v\xc3\xa9.example:443", "not a valid name");
	/* A 64-character label; a 254-character name. */
	memset(name, 'a', 64);
	snprintf(name + 64, sizeof(name) - 64, ".example:443");
	server_bad(name, "not a valid name");
	memset(name, 'a', 254);
	for (size_t i = 50; i < 254; i += 50)
		name[i] = '.';
	snprintf(name + 254, sizeof(name) - 254, ":443");
	server_bad(name, "not a valid name");
	server_bad(NULL, "missing");
}

static void test_format_refusals(void **state)
{
	char line[LINK_ACCESS_MAX];
	struct keys k;
	size_t need;

	(void)state;
	keys_fixed(&k);
	assert_int_equal(link_access_format(line, sizeof(line), "vpn..example.com", 443, k.server,
					    k.psk, NULL),
			 ST_EINVAL);
	assert_int_equal(line[0], '\0');
	assert_int_equal(link_access_format(line, sizeof(line), "[::1]", 443, k.server, k.psk, NULL),
			 ST_EINVAL);
	assert_int_equal(link_access_format(line, sizeof(line), "vpn.example.com", 0, k.server,
					    k.psk, NULL),
			 ST_EINVAL);
	assert_int_equal(link_access_format(line, sizeof(line), NULL, 443, k.server, k.psk, NULL),
			 ST_EINVAL);
	/* Exactly enough room, and one byte less: nothing of the key left in the buffer. */
	need = strlen(GOLDEN_FULL) + 1;
	assert_int_equal(link_access_format(line, need, "vpn.example.com", 8443, k.server, k.psk,
					    k.client),
			 ST_OK);
	assert_string_equal(line, GOLDEN_FULL);
	memset(line, 'x', sizeof(line));
	assert_int_equal(link_access_format(line, need - 1, "vpn.example.com", 8443, k.server, k.psk,
					    k.client),
			 ST_ETOOBIG);
	for (size_t i = 0; i < need - 1; i++)
		assert_int_equal(line[i], '\0');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_lines),
		cmocka_unit_test(test_round_trips),
		cmocka_unit_test(test_every_truncation_fails),
		cmocka_unit_test(test_every_bit_flip_fails),
		cmocka_unit_test(test_damaged_key_says_so),
		cmocka_unit_test(test_structure_errors),
		cmocka_unit_test(test_non_canonical_address_refused),
		cmocka_unit_test(test_low_order_server_key_refused),
		cmocka_unit_test(test_server_forms),
		cmocka_unit_test(test_format_refusals),
	};

	return cmocka_run_group_tests(tests, group_setup, NULL);
}
