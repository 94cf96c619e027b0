/*
 * tests/fuzz/fuzz_proto.c - libFuzzer target for the SOCKS5 codec (socks/proto.h).
 *
 * Each input goes through every parser. For each one the contract is checked: the status is one the
 * header allows, a failure left the output byte-identical, a success consumed no more than was given,
 * is stable when cut to exactly its length, and was ST_NEED_MORE one byte earlier. Whatever has an
 * encoder is re-encoded and must give back the input bytes; anything else aborts.
 * The UDP header parser is the exception to "need more": a datagram is whole, so a success must have
 * been ST_EPROTO one byte earlier, and ST_NEED_MORE is never allowed.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/addr.h"
#include "base/status.h"
#include "socks/proto.h"

#define SENTINEL 0xA5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

/* A status is either bytes consumed (at most size) or one of the listed errors. */
static void check_status(int st, size_t size, int e1, int e2, int e3, int e4)
{
	if (st > 0) {
		check((size_t)st <= size);
		return;
	}
	check(st == ST_NEED_MORE || st == e1 || st == e2 || st == e3 || st == e4);
}

static void check_greeting(const uint8_t *data, size_t size)
{
	struct socks_greeting g, before, again;
	size_t n, i;
	unsigned none = 0, userpass = 0;
	int st;

	memset(&g, SENTINEL, sizeof(g));
	memcpy(&before, &g, sizeof(g));
	st = socks_parse_greeting(data, size, &g);
	check_status(st, size, ST_EVERSION, ST_EPROTO, ST_EPROTO, ST_EPROTO);
	if (st <= 0) {
		check(memcmp(&g, &before, sizeof(g)) == 0);
		return;
	}
	n = (size_t)st;
	check(socks_parse_greeting(data, n - 1, &again) == ST_NEED_MORE);
	check(socks_parse_greeting(data, n, &again) == st);
	check(memcmp(&again, &g, sizeof(g)) == 0);

	/* Nothing to re-encode (only flags are kept): check them against the bytes. */
	check(data[0] == SOCKS_VERSION && data[1] == g.nmethods && n == 2 + (size_t)g.nmethods);
	for (i = 0; i < g.nmethods; i++) {
		none |= data[2 + i] == SOCKS_METHOD_NONE;
		userpass |= data[2 + i] == SOCKS_METHOD_USERPASS;
	}
	check(g.offers_none == none && g.offers_userpass == userpass);
}

static void check_auth(const uint8_t *data, size_t size)
{
	struct socks_auth a, before, again;
	uint8_t enc[SOCKS_AUTH_MAX];
	size_t n, len;
	int st;

	memset(&a, SENTINEL, sizeof(a));
	memcpy(&before, &a, sizeof(a));
	st = socks_parse_auth(data, size, &a);
	check_status(st, size, ST_EVERSION, ST_EPROTO, ST_EPROTO, ST_EPROTO);
	if (st <= 0) {
		check(memcmp(&a, &before, sizeof(a)) == 0);
		return;
	}
	n = (size_t)st;
	check(socks_parse_auth(data, n - 1, &again) == ST_NEED_MORE);
	check(socks_parse_auth(data, n, &again) == st);
	check(memcmp(&again, &a, sizeof(a)) == 0);
	check(a.ulen > 0 && a.plen > 0 && a.user[a.ulen] == '\0' && a.pass[a.plen] == '\0');

	/* There is no client-side encoder: rebuild RFC 1929 §2 VER ULEN UNAME PLEN PASSWD by hand. */
	len = 0;
	enc[len++] = SOCKS_AUTH_VERSION;
	enc[len++] = a.ulen;
	memcpy(enc + len, a.user, a.ulen);
	len += a.ulen;
	enc[len++] = a.plen;
	memcpy(enc + len, a.pass, a.plen);
	len += a.plen;
	check(len == n && memcmp(enc, data, n) == 0);
}

/* The reply's BND.ADDR BND.PORT, parsed back as a target, must name the address it was given. */
static void check_reply_of(const struct socks_target *t)
{
	uint8_t out[SOCKS_REPLY_MAX];
	struct socks_target back;
	struct addr a;
	size_t n;
	int mapped = 0;

	if (t->atyp == SOCKS_ATYP_IPV4) {
		addr_from_ipv4(&a, t->u.ipv4, t->port);
	} else if (t->atyp == SOCKS_ATYP_IPV6) {
		static const uint8_t prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

		addr_from_ipv6(&a, t->u.ipv6, t->port);
		mapped = memcmp(t->u.ipv6, prefix, sizeof(prefix)) == 0;
	} else {
		return;
	}
	n = socks_write_reply(out, SOCKS_REP_SUCCEEDED, &a);
	check(n == (t->atyp == SOCKS_ATYP_IPV6 && !mapped ? 22u : 10u));
	check(out[0] == SOCKS_VERSION && out[1] == SOCKS_REP_SUCCEEDED && out[2] == 0);
	check(socks_parse_target(out + 3, n - 3, &back) == (int)(n - 3));
	check(back.port == t->port);
	if (t->atyp == SOCKS_ATYP_IPV4)
		check(back.atyp == SOCKS_ATYP_IPV4 && memcmp(back.u.ipv4, t->u.ipv4, 4) == 0);
	else if (mapped)
		check(back.atyp == SOCKS_ATYP_IPV4 && memcmp(back.u.ipv4, t->u.ipv6 + 12, 4) == 0);
	else
		check(back.atyp == SOCKS_ATYP_IPV6 && memcmp(back.u.ipv6, t->u.ipv6, 16) == 0);
}

/* Re-encode a parsed target; the bytes must be the n input bytes it came from. */
static void check_target_encodes_to(const struct socks_target *t, const uint8_t *data, size_t n)
{
	uint8_t enc[SOCKS_REQUEST_MAX];

	check(socks_write_target(enc, n - 1, t) == 0);
	check(socks_write_target(enc, sizeof(enc), t) == n);
	check(memcmp(enc, data, n) == 0);
	if (t->atyp == SOCKS_ATYP_DOMAIN)
		check(t->u.domain.len > 0 && t->u.domain.name[t->u.domain.len] == '\0' &&
		      strlen(t->u.domain.name) == t->u.domain.len);
	check_reply_of(t);
}

static void check_target(const uint8_t *data, size_t size)
{
	struct socks_target t, before, again;
	size_t n;
	int st;

	memset(&t, SENTINEL, sizeof(t));
	memcpy(&before, &t, sizeof(t));
	st = socks_parse_target(data, size, &t);
	check_status(st, size, ST_EADDRTYPE, ST_EPROTO, ST_EPROTO, ST_EPROTO);
	if (st <= 0) {
		check(memcmp(&t, &before, sizeof(t)) == 0);
		return;
	}
	n = (size_t)st;
	check(socks_parse_target(data, n - 1, &again) == ST_NEED_MORE);
	check(socks_parse_target(data, n, &again) == st);
	check(memcmp(&again, &t, sizeof(t)) == 0);
	check_target_encodes_to(&t, data, n);
}

static void check_request(const uint8_t *data, size_t size)
{
	struct socks_request r, before, again;
	size_t n;
	int st;

	memset(&r, SENTINEL, sizeof(r));
	memcpy(&before, &r, sizeof(r));
	st = socks_parse_request(data, size, &r);
	check_status(st, size, ST_EVERSION, ST_ECOMMAND, ST_EADDRTYPE, ST_EPROTO);
	if (st <= 0) {
		check(memcmp(&r, &before, sizeof(r)) == 0);
		check(socks_request_error_rep(st) != SOCKS_REP_SUCCEEDED);
		return;
	}
	n = (size_t)st;
	check(n > 3);
	check(socks_parse_request(data, n - 1, &again) == ST_NEED_MORE);
	check(socks_parse_request(data, n, &again) == st);
	check(memcmp(&again, &r, sizeof(r)) == 0);

	/* RFC 1928 §4: VER CMD RSV, then a target; RSV is not kept, so it is not compared. */
	check(data[0] == SOCKS_VERSION && data[1] == r.cmd);
	check(r.cmd == SOCKS_CMD_CONNECT || r.cmd == SOCKS_CMD_BIND || r.cmd == SOCKS_CMD_UDP_ASSOCIATE);
	check_target_encodes_to(&r.dst, data + 3, n - 3);
}

/* The relay's writer, for the address a parsed IP target names: parsed back, it names it again. */
static void check_udp_header_of(const struct socks_target *t)
{
	static const uint8_t prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	uint8_t out[SOCKS_UDP_HEADER_MAX];
	struct socks_udp_header back;
	struct addr a;
	size_t n;
	int mapped = 0;

	if (t->atyp == SOCKS_ATYP_IPV4) {
		addr_from_ipv4(&a, t->u.ipv4, t->port);
	} else if (t->atyp == SOCKS_ATYP_IPV6) {
		addr_from_ipv6(&a, t->u.ipv6, t->port);
		mapped = memcmp(t->u.ipv6, prefix, sizeof(prefix)) == 0;
	} else {
		return;
	}
	n = socks_write_udp_header(out, sizeof(out), &a);
	check(n == (t->atyp == SOCKS_ATYP_IPV6 && !mapped ? 22u : 10u));
	check(socks_write_udp_header(out, n - 1, &a) == 0);
	check(socks_parse_udp_header(out, n, &back) == (int)n);
	check(back.frag == 0 && back.dst.port == t->port);
	if (t->atyp == SOCKS_ATYP_IPV4)
		check(back.dst.atyp == SOCKS_ATYP_IPV4 && memcmp(back.dst.u.ipv4, t->u.ipv4, 4) == 0);
	else if (mapped)
		check(back.dst.atyp == SOCKS_ATYP_IPV4 && memcmp(back.dst.u.ipv4, t->u.ipv6 + 12, 4) == 0);
	else
		check(back.dst.atyp == SOCKS_ATYP_IPV6 && memcmp(back.dst.u.ipv6, t->u.ipv6, 16) == 0);
}

static void check_udp(const uint8_t *data, size_t size)
{
	struct socks_udp_header h, before, again;
	uint8_t enc[SOCKS_UDP_HEADER_MAX];
	size_t n;
	int st;

	memset(&h, SENTINEL, sizeof(h));
	memcpy(&before, &h, sizeof(h));
	st = socks_parse_udp_header(data, size, &h);
	if (st <= 0) {
		check(st == ST_EPROTO || st == ST_EADDRTYPE);
		check(memcmp(&h, &before, sizeof(h)) == 0);
		return;
	}
	n = (size_t)st;
	check(n >= 8 && n <= size && n <= SOCKS_UDP_HEADER_MAX);
	/* DATA is not looked at: the header alone parses the same, and one byte less is malformed. */
	check(socks_parse_udp_header(data, n - 1, &again) == ST_EPROTO);
	check(socks_parse_udp_header(data, n, &again) == st);
	check(memcmp(&again, &h, sizeof(h)) == 0);

	/* RFC 1928 §7: RSV X'0000' FRAG, then a target that re-encodes to its own bytes. */
	check(data[0] == 0 && data[1] == 0 && data[2] == h.frag);
	check_target_encodes_to(&h.dst, data + 3, n - 3);

	/* The client's writer gives back the header, with FRAG X'00' (it never fragments). */
	check(socks_write_udp_header_target(enc, n - 1, &h.dst) == 0);
	check(socks_write_udp_header_target(enc, sizeof(enc), &h.dst) == n);
	check(enc[0] == 0 && enc[1] == 0 && enc[2] == 0 && memcmp(enc + 3, data + 3, n - 3) == 0);
	check_udp_header_of(&h.dst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_greeting(data, size);
	check_auth(data, size);
	check_request(data, size);
	check_target(data, size);
	check_udp(data, size);
	return 0;
}
