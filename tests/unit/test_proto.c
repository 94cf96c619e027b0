/*
 * tests/unit/test_proto.c - the SOCKS5 codec (socks/proto.h).
 *
 * Every valid message is parsed whole, at every truncation, with trailing bytes, with every single
 * bit flipped and at the very end of a page followed by an unreadable one (picohttpparser's test.c
 * habit: an over-read faults even where AddressSanitizer does not see, e.g. in mmap'd memory).
 * Every non-success call is checked to leave its output byte-identical to a sentinel fill.
 * UDP datagram headers (RFC 1928 §7) get the same treatment, with one difference: a datagram is whole,
 * so a header cut short is ST_EPROTO where a stream message would be ST_NEED_MORE.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/addr.h"
#include "base/compiler.h"
#include "base/status.h"
#include "socks/proto.h"

#define SENTINEL 0xA5
#define MSG_CAP (SOCKS_AUTH_MAX + 8)
#define GARBAGE_ROUNDS 200000

enum kind { KIND_GREETING, KIND_AUTH, KIND_REQUEST, KIND_TARGET, KIND_UDP, KIND_COUNT };

union parse_out {
	struct socks_greeting g;
	struct socks_auth a;
	struct socks_request r;
	struct socks_target t;
	struct socks_udp_header u;
};

struct msg {
	enum kind kind;
	size_t len;
	uint8_t b[MSG_CAP];
};

/* Every valid message the tests know, built once in group_setup. */
static struct msg corpus[320];
static size_t corpus_n;

/* A valid UDP datagram: the header, then DATA. */
struct udp_msg {
	struct msg m; /* kind KIND_UDP, len covering header and data */
	unsigned fixture; /* target_fixture() index */
	size_t hdr_len;
	size_t data_len;
	uint8_t frag;
	struct socks_target t;
};

/* Every valid datagram the tests know: each target fixture, FRAG value and data length below. */
static const uint8_t udp_frags[] = { 0x00, 0x01, 0x80, 0xff };
static const size_t udp_data_lens[] = { 0, 1, 64 };
static struct udp_msg udp_corpus[4 * ARRAY_SIZE(udp_frags) * ARRAY_SIZE(udp_data_lens)];
static size_t udp_corpus_n;

/* One readable page followed by a PROT_NONE page. */
static uint8_t *guard_map;
static size_t page_size;

/* ---- helpers ------------------------------------------------------------------------------ */

/* xorshift64*: a fixed seed makes every run the same run. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

static size_t rng_below(size_t n)
{
	return (size_t)(rng_next() % n);
}

static int parse_kind(enum kind k, const uint8_t *p, size_t len, union parse_out *o)
{
	switch (k) {
	case KIND_GREETING:
		return socks_parse_greeting(p, len, &o->g);
	case KIND_AUTH:
		return socks_parse_auth(p, len, &o->a);
	case KIND_REQUEST:
		return socks_parse_request(p, len, &o->r);
	case KIND_TARGET:
		return socks_parse_target(p, len, &o->t);
	case KIND_UDP:
		return socks_parse_udp_header(p, len, &o->u);
	case KIND_COUNT:
		break;
	}
	fail_msg("bad kind %d", (int)k);
	return ST_EINVAL;
}

/* The statuses each parser's contract allows, besides a byte count. */
static int status_allowed(enum kind k, int st)
{
	if (st > 0)
		return 1;
	/* A datagram is whole: the UDP parser never asks for more. */
	if (st == ST_NEED_MORE)
		return k != KIND_UDP;
	switch (k) {
	case KIND_GREETING:
	case KIND_AUTH:
		return st == ST_EVERSION || st == ST_EPROTO;
	case KIND_REQUEST:
		return st == ST_EVERSION || st == ST_ECOMMAND || st == ST_EADDRTYPE || st == ST_EPROTO;
	case KIND_TARGET:
	case KIND_UDP:
		return st == ST_EADDRTYPE || st == ST_EPROTO;
	case KIND_COUNT:
		break;
	}
	return 0;
}

/* The status of a valid message cut short: a stream waits for more, a datagram is malformed. */
static int cut_status(enum kind k)
{
	return k == KIND_UDP ? ST_EPROTO : ST_NEED_MORE;
}

/*
 * Parse with the output pre-filled with a sentinel. The status must be allowed, a byte count must not
 * exceed len, and on anything but success the output must be byte-identical to the sentinel fill.
 */
static int parse_checked(enum kind k, const uint8_t *p, size_t len, union parse_out *o)
{
	union parse_out before;
	int st;

	memset(o, SENTINEL, sizeof(*o));
	memcpy(&before, o, sizeof(before));
	st = parse_kind(k, p, len, o);
	if (!status_allowed(k, st))
		fail_msg("kind %d len %zu: status %d (%s) not allowed", (int)k, len, st, status_str(st));
	if (st > 0)
		assert_in_range((size_t)st, 1, len);
	else if (memcmp(o, &before, sizeof(before)) != 0)
		assert_memory_equal(o, &before, sizeof(before)); /* fails, showing the difference */
	return st;
}

/* Copy p to the last len bytes of the readable page: one byte more and the parser faults. */
static const uint8_t *at_page_end(const uint8_t *p, size_t len)
{
	uint8_t *dst = guard_map + page_size - len;

	if (len > 0)
		memcpy(dst, p, len);
	return dst;
}

/* ---- builders: hand-encoded wire bytes, independent of the code under test ---------------- */

/* A varied but deterministic method list: which of X'00'/X'02' appear depends on n. */
static uint8_t greeting_method(unsigned n, unsigned i)
{
	return (uint8_t)(n * 7 + i * 13);
}

static size_t build_greeting(uint8_t *b, unsigned n)
{
	unsigned i;

	b[0] = SOCKS_VERSION;
	b[1] = (uint8_t)n;
	for (i = 0; i < n; i++)
		b[2 + i] = greeting_method(n, i);
	return 2 + n;
}

/* Names use every byte value but NUL, so the parser is shown not to interpret them. */
static uint8_t name_byte(size_t i, unsigned salt)
{
	return (uint8_t)((i * 31 + salt) % 255 + 1);
}

static size_t build_auth(uint8_t *b, size_t ulen, size_t plen)
{
	size_t i;

	b[0] = SOCKS_AUTH_VERSION;
	b[1] = (uint8_t)ulen;
	for (i = 0; i < ulen; i++)
		b[2 + i] = name_byte(i, 3);
	b[2 + ulen] = (uint8_t)plen;
	for (i = 0; i < plen; i++)
		b[3 + ulen + i] = name_byte(i, 101);
	return 3 + ulen + plen;
}

static void target_ipv4(struct socks_target *t)
{
	const uint8_t ip[4] = { 192, 0, 2, 10 };

	memset(t, 0, sizeof(*t));
	t->atyp = SOCKS_ATYP_IPV4;
	memcpy(t->u.ipv4, ip, 4);
	t->port = 80;
}

static void target_ipv6(struct socks_target *t)
{
	const uint8_t ip[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34 };

	memset(t, 0, sizeof(*t));
	t->atyp = SOCKS_ATYP_IPV6;
	memcpy(t->u.ipv6, ip, 16);
	t->port = 8443;
}

static void target_domain(struct socks_target *t, size_t len)
{
	size_t i;

	memset(t, 0, sizeof(*t));
	t->atyp = SOCKS_ATYP_DOMAIN;
	t->u.domain.len = (uint8_t)len;
	for (i = 0; i < len; i++)
		t->u.domain.name[i] = (char)name_byte(i, 7);
	t->port = 65535;
}

/* The four targets every target/request test runs over: IPv4, IPv6, 1-byte and 255-byte domain. */
static void target_fixture(unsigned which, struct socks_target *t)
{
	switch (which) {
	case 0:
		target_ipv4(t);
		break;
	case 1:
		target_ipv6(t);
		break;
	case 2:
		target_domain(t, 1);
		break;
	default:
		target_domain(t, SOCKS_DOMAIN_MAX);
		break;
	}
}
#define TARGET_FIXTURES 4

static size_t encode_target_by_hand(uint8_t *b, const struct socks_target *t)
{
	size_t off = 0;

	b[off++] = t->atyp;
	if (t->atyp == SOCKS_ATYP_IPV4) {
		memcpy(b + off, t->u.ipv4, 4);
		off += 4;
	} else if (t->atyp == SOCKS_ATYP_IPV6) {
		memcpy(b + off, t->u.ipv6, 16);
		off += 16;
	} else {
		b[off++] = t->u.domain.len;
		memcpy(b + off, t->u.domain.name, t->u.domain.len);
		off += t->u.domain.len;
	}
	b[off++] = (uint8_t)(t->port >> 8);
	b[off++] = (uint8_t)(t->port & 0xff);
	return off;
}

static size_t build_request(uint8_t *b, uint8_t cmd, uint8_t rsv, const struct socks_target *t)
{
	b[0] = SOCKS_VERSION;
	b[1] = cmd;
	b[2] = rsv;
	return 3 + encode_target_by_hand(b + 3, t);
}

/* DATA bytes: every value, NUL and ones that look like a header included. */
static uint8_t udp_data_byte(size_t i)
{
	return (uint8_t)(i * 37 + 250);
}

/* RFC 1928 §7: RSV(2) FRAG(1) ATYP DST.ADDR DST.PORT, then data_len bytes of DATA. */
static size_t build_udp(uint8_t *b, uint16_t rsv, uint8_t frag, const struct socks_target *t, size_t data_len)
{
	size_t off, i;

	b[0] = (uint8_t)(rsv >> 8);
	b[1] = (uint8_t)(rsv & 0xff);
	b[2] = frag;
	off = 3 + encode_target_by_hand(b + 3, t);
	for (i = 0; i < data_len; i++)
		b[off + i] = udp_data_byte(i);
	return off + data_len;
}

static void assert_target_equal(const struct socks_target *got, const struct socks_target *want)
{
	assert_int_equal(got->atyp, want->atyp);
	assert_int_equal(got->port, want->port);
	switch (want->atyp) {
	case SOCKS_ATYP_IPV4:
		assert_memory_equal(got->u.ipv4, want->u.ipv4, 4);
		break;
	case SOCKS_ATYP_IPV6:
		assert_memory_equal(got->u.ipv6, want->u.ipv6, 16);
		break;
	default:
		assert_int_equal(got->u.domain.len, want->u.domain.len);
		assert_memory_equal(got->u.domain.name, want->u.domain.name, want->u.domain.len);
		assert_int_equal(got->u.domain.name[want->u.domain.len], '\0');
		break;
	}
}

static struct msg *corpus_add(enum kind k)
{
	struct msg *m;

	if (corpus_n >= ARRAY_SIZE(corpus))
		return NULL;
	m = &corpus[corpus_n++];
	memset(m, 0, sizeof(*m));
	m->kind = k;
	return m;
}

static int corpus_build(void)
{
	static const size_t lens[2] = { 1, 255 };
	static const uint8_t cmds[3] = { SOCKS_CMD_CONNECT, SOCKS_CMD_BIND, SOCKS_CMD_UDP_ASSOCIATE };
	struct socks_target t;
	struct msg *m;
	unsigned n, i, j;

	corpus_n = 0;
	for (n = 1; n <= 255; n++) {
		if ((m = corpus_add(KIND_GREETING)) == NULL)
			return -1;
		m->len = build_greeting(m->b, n);
	}
	for (i = 0; i < 2; i++) {
		for (j = 0; j < 2; j++) {
			if ((m = corpus_add(KIND_AUTH)) == NULL)
				return -1;
			m->len = build_auth(m->b, lens[i], lens[j]);
		}
	}
	for (i = 0; i < TARGET_FIXTURES; i++) {
		target_fixture(i, &t);
		for (j = 0; j < 3; j++) {
			if ((m = corpus_add(KIND_REQUEST)) == NULL)
				return -1;
			m->len = build_request(m->b, cmds[j], 0, &t);
		}
		if ((m = corpus_add(KIND_TARGET)) == NULL)
			return -1;
		m->len = encode_target_by_hand(m->b, &t);
	}
	return 0;
}

static int udp_corpus_build(void)
{
	struct udp_msg *u;
	unsigned i, f, d;

	udp_corpus_n = 0;
	for (i = 0; i < TARGET_FIXTURES; i++) {
		for (f = 0; f < ARRAY_SIZE(udp_frags); f++) {
			for (d = 0; d < ARRAY_SIZE(udp_data_lens); d++) {
				if (udp_corpus_n >= ARRAY_SIZE(udp_corpus))
					return -1;
				u = &udp_corpus[udp_corpus_n++];
				memset(u, 0, sizeof(*u));
				u->fixture = i;
				target_fixture(i, &u->t);
				u->frag = udp_frags[f];
				u->data_len = udp_data_lens[d];
				u->m.kind = KIND_UDP;
				u->m.len = build_udp(u->m.b, 0, u->frag, &u->t, u->data_len);
				u->hdr_len = u->m.len - u->data_len;
			}
		}
	}
	return 0;
}

static int group_setup(void **state)
{
	long ps = sysconf(_SC_PAGESIZE);
	void *map;

	UNUSED(state);
	if (ps <= 0 || (size_t)ps < MSG_CAP)
		return -1;
	page_size = (size_t)ps;
	map = mmap(NULL, 2 * page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		return -1;
	if (mprotect((uint8_t *)map + page_size, page_size, PROT_NONE) != 0) {
		munmap(map, 2 * page_size);
		return -1;
	}
	guard_map = map;
	if (udp_corpus_build() != 0)
		return -1;
	return corpus_build();
}

static int group_teardown(void **state)
{
	UNUSED(state);
	if (guard_map != NULL)
		munmap(guard_map, 2 * page_size);
	guard_map = NULL;
	return 0;
}

/* ---- valid messages ----------------------------------------------------------------------- */

static void test_greeting_every_method_count(void **state)
{
	/* Not SOCKS_GREETING_MAX: gcc 12 at -O3 misjudges the vectorised fill (-Wstringop-overflow). */
	uint8_t b[MSG_CAP];
	union parse_out o;
	unsigned n, i;

	UNUSED(state);
	for (n = 1; n <= 255; n++) {
		size_t len = build_greeting(b, n);
		unsigned want_none = 0, want_userpass = 0;

		for (i = 0; i < n; i++) {
			want_none |= greeting_method(n, i) == SOCKS_METHOD_NONE;
			want_userpass |= greeting_method(n, i) == SOCKS_METHOD_USERPASS;
		}
		assert_int_equal(parse_checked(KIND_GREETING, b, len, &o), (int)(2 + n));
		assert_int_equal(o.g.nmethods, n);
		assert_int_equal(o.g.offers_none, want_none);
		assert_int_equal(o.g.offers_userpass, want_userpass);
	}
}

static void test_greeting_method_flags(void **state)
{
	static const struct {
		uint8_t bytes[6];
		size_t len;
		unsigned none, userpass;
	} cases[] = {
		{ { 0x05, 0x01, 0x00 }, 3, 1, 0 },
		{ { 0x05, 0x01, 0x02 }, 3, 0, 1 },
		{ { 0x05, 0x02, 0x00, 0x02 }, 4, 1, 1 },
		{ { 0x05, 0x02, 0x02, 0x00 }, 4, 1, 1 },
		{ { 0x05, 0x01, 0x01 }, 3, 0, 0 },      /* GSSAPI only: not implemented */
		{ { 0x05, 0x03, 0x80, 0xfe, 0xff }, 5, 0, 0 }, /* private and reserved values */
		{ { 0x05, 0x04, 0x00, 0x00, 0x02, 0x02 }, 6, 1, 1 }, /* duplicates are harmless */
	};
	union parse_out o;
	size_t i;

	UNUSED(state);
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		assert_int_equal(parse_checked(KIND_GREETING, cases[i].bytes, cases[i].len, &o),
				 (int)cases[i].len);
		assert_int_equal(o.g.nmethods, cases[i].bytes[1]);
		assert_int_equal(o.g.offers_none, cases[i].none);
		assert_int_equal(o.g.offers_userpass, cases[i].userpass);
	}
}

static void test_auth_lengths(void **state)
{
	static const size_t lens[2] = { 1, 255 };
	uint8_t b[SOCKS_AUTH_MAX];
	union parse_out o;
	size_t i, j;

	UNUSED(state);
	for (i = 0; i < 2; i++) {
		for (j = 0; j < 2; j++) {
			size_t ulen = lens[i], plen = lens[j];
			size_t len = build_auth(b, ulen, plen);

			assert_int_equal(len, 3 + ulen + plen);
			assert_int_equal(parse_checked(KIND_AUTH, b, len, &o), (int)len);
			assert_int_equal(o.a.ulen, ulen);
			assert_int_equal(o.a.plen, plen);
			assert_memory_equal(o.a.user, b + 2, ulen);
			assert_int_equal(o.a.user[ulen], '\0');
			assert_memory_equal(o.a.pass, b + 3 + ulen, plen);
			assert_int_equal(o.a.pass[plen], '\0');
		}
	}
}

static void test_auth_exact_bytes_and_inner_nul(void **state)
{
	/* "alice" / "s3cret" */
	static const uint8_t simple[] = { 0x01, 0x05, 'a', 'l', 'i', 'c', 'e', 0x06, 's', '3', 'c', 'r', 'e', 't' };
	/* The lengths are authoritative: a NUL inside is kept for the caller to refuse. */
	static const uint8_t inner_nul[] = { 0x01, 0x03, 'a', 0x00, 'b', 0x02, 0x00, 'x' };
	union parse_out o;

	UNUSED(state);
	assert_int_equal(parse_checked(KIND_AUTH, simple, sizeof(simple), &o), (int)sizeof(simple));
	assert_string_equal(o.a.user, "alice");
	assert_string_equal(o.a.pass, "s3cret");

	assert_int_equal(parse_checked(KIND_AUTH, inner_nul, sizeof(inner_nul), &o), (int)sizeof(inner_nul));
	assert_int_equal(o.a.ulen, 3);
	assert_memory_equal(o.a.user, "a\0b", 4);
	assert_int_equal(o.a.plen, 2);
	assert_memory_equal(o.a.pass, "\0x", 3);
}

static void test_auth_clears_previous_secret(void **state)
{
	uint8_t long_msg[SOCKS_AUTH_MAX];
	static const uint8_t short_msg[] = { 0x01, 0x01, 'u', 0x01, 'p' };
	struct socks_auth a;
	size_t len = build_auth(long_msg, 255, 255);
	size_t i;

	UNUSED(state);
	assert_int_equal(socks_parse_auth(long_msg, len, &a), (int)len);
	assert_int_equal(socks_parse_auth(short_msg, sizeof(short_msg), &a), (int)sizeof(short_msg));
	/* No byte of the earlier, longer password is left past the new terminator. */
	for (i = 1; i < sizeof(a.pass); i++)
		assert_int_equal(a.pass[i], '\0');
	for (i = 1; i < sizeof(a.user); i++)
		assert_int_equal(a.user[i], '\0');
}

static void test_request_every_atyp_and_cmd(void **state)
{
	static const uint8_t cmds[3] = { SOCKS_CMD_CONNECT, SOCKS_CMD_BIND, SOCKS_CMD_UDP_ASSOCIATE };
	static const size_t want_len[TARGET_FIXTURES] = { 10, 22, 4 + 1 + 1 + 2, 4 + 1 + 255 + 2 };
	uint8_t b[SOCKS_REQUEST_MAX];
	struct socks_target t;
	union parse_out o;
	unsigned i, j;

	UNUSED(state);
	for (i = 0; i < TARGET_FIXTURES; i++) {
		target_fixture(i, &t);
		for (j = 0; j < 3; j++) {
			size_t len = build_request(b, cmds[j], 0, &t);

			assert_int_equal(len, want_len[i]);
			assert_int_equal(parse_checked(KIND_REQUEST, b, len, &o), (int)len);
			assert_int_equal(o.r.cmd, cmds[j]);
			assert_target_equal(&o.r.dst, &t);
		}
	}
}

static void test_request_exact_bytes(void **state)
{
	/* CONNECT 93.184.216.34:443 */
	static const uint8_t v4[] = { 0x05, 0x01, 0x00, 0x01, 93, 184, 216, 34, 0x01, 0xbb };
	/* CONNECT example.com:80 */
	static const uint8_t dom[] = { 0x05, 0x01, 0x00, 0x03, 0x0b, 'e', 'x', 'a', 'm', 'p', 'l', 'e',
				       '.', 'c', 'o', 'm', 0x00, 0x50 };
	static const uint8_t v4_ip[4] = { 93, 184, 216, 34 };
	union parse_out o;

	UNUSED(state);
	assert_int_equal(parse_checked(KIND_REQUEST, v4, sizeof(v4), &o), 10);
	assert_int_equal(o.r.cmd, SOCKS_CMD_CONNECT);
	assert_int_equal(o.r.dst.atyp, SOCKS_ATYP_IPV4);
	assert_memory_equal(o.r.dst.u.ipv4, v4_ip, 4);
	assert_int_equal(o.r.dst.port, 443);

	assert_int_equal(parse_checked(KIND_REQUEST, dom, sizeof(dom), &o), (int)sizeof(dom));
	assert_int_equal(o.r.dst.atyp, SOCKS_ATYP_DOMAIN);
	assert_int_equal(o.r.dst.u.domain.len, 11);
	assert_string_equal(o.r.dst.u.domain.name, "example.com");
	assert_int_equal(o.r.dst.port, 80);
}

static void test_request_rsv_ignored(void **state)
{
	uint8_t b[SOCKS_REQUEST_MAX];
	struct socks_target t;
	union parse_out o;
	unsigned rsv;

	UNUSED(state);
	target_ipv4(&t);
	for (rsv = 0; rsv <= 255; rsv++) {
		size_t len = build_request(b, SOCKS_CMD_CONNECT, (uint8_t)rsv, &t);

		assert_int_equal(parse_checked(KIND_REQUEST, b, len, &o), (int)len);
		assert_target_equal(&o.r.dst, &t);
	}
}

static void test_target_every_atyp(void **state)
{
	uint8_t b[SOCKS_REQUEST_MAX];
	struct socks_target t;
	union parse_out o;
	unsigned i;

	UNUSED(state);
	for (i = 0; i < TARGET_FIXTURES; i++) {
		size_t len;

		target_fixture(i, &t);
		len = encode_target_by_hand(b, &t);
		assert_int_equal(parse_checked(KIND_TARGET, b, len, &o), (int)len);
		assert_target_equal(&o.t, &t);
	}
}

/* ---- truncation, pipelining, guard page --------------------------------------------------- */

static void test_every_truncation_needs_more(void **state)
{
	union parse_out o;
	size_t i, k;

	UNUSED(state);
	for (i = 0; i < corpus_n; i++) {
		const struct msg *m = &corpus[i];

		for (k = 0; k < m->len; k++)
			assert_int_equal(parse_checked(m->kind, m->b, k, &o), ST_NEED_MORE);
		assert_int_equal(parse_checked(m->kind, m->b, m->len, &o), (int)m->len);
	}
}

static void test_trailing_bytes_not_consumed(void **state)
{
	static const uint8_t tails[][3] = { { 0x05, 0x01, 0x00 }, { 0x00, 0x00, 0x00 }, { 0xff, 0xff, 0xff } };
	uint8_t b[2 * MSG_CAP];
	union parse_out o;
	size_t i, j, k;

	UNUSED(state);
	for (i = 0; i < corpus_n; i++) {
		const struct msg *m = &corpus[i];

		/* A few stray bytes after the message, one to three of them. */
		for (j = 0; j < ARRAY_SIZE(tails); j++) {
			for (k = 1; k <= 3; k++) {
				memcpy(b, m->b, m->len);
				memcpy(b + m->len, tails[j], k);
				assert_int_equal(parse_checked(m->kind, b, m->len + k, &o), (int)m->len);
			}
		}
		/* Two messages back to back (a pipelining client): each is consumed on its own. */
		memcpy(b, m->b, m->len);
		memcpy(b + m->len, m->b, m->len);
		assert_int_equal(parse_checked(m->kind, b, 2 * m->len, &o), (int)m->len);
		assert_int_equal(parse_checked(m->kind, b + m->len, m->len, &o), (int)m->len);
	}
}

static void test_guard_page_every_prefix(void **state)
{
	union parse_out o;
	size_t i, k;

	UNUSED(state);
	for (i = 0; i < corpus_n; i++) {
		const struct msg *m = &corpus[i];

		for (k = 0; k <= m->len; k++) {
			const uint8_t *p = at_page_end(m->b, k);
			int want = k == m->len ? (int)m->len : ST_NEED_MORE;

			assert_int_equal(parse_checked(m->kind, p, k, &o), want);
		}
	}
}

/* ---- errors ------------------------------------------------------------------------------- */

/* The status for p[0..len) must be `want` for every len from `from` to `to`. */
static void expect_from(enum kind k, const uint8_t *p, size_t from, size_t to, int want)
{
	union parse_out o;
	size_t len;

	for (len = from; len <= to; len++)
		assert_int_equal(parse_checked(k, at_page_end(p, len), len, &o), want);
}

static void test_greeting_errors(void **state)
{
	static const uint8_t nmethods0[] = { 0x05, 0x00, 0x00, 0x02 };
	uint8_t b[4] = { 0, 0x01, 0x00, 0x00 };
	unsigned v;

	UNUSED(state);
	for (v = 0; v <= 255; v++) {
		if (v == SOCKS_VERSION)
			continue;
		b[0] = (uint8_t)v;
		expect_from(KIND_GREETING, b, 1, sizeof(b), ST_EVERSION);
	}
	/* NMETHODS 0 is an error as soon as it is read, whatever follows. */
	expect_from(KIND_GREETING, nmethods0, 2, sizeof(nmethods0), ST_EPROTO);
}

static void test_auth_errors(void **state)
{
	static const uint8_t ulen0[] = { 0x01, 0x00, 0x01, 'p' };
	static const uint8_t plen0[] = { 0x01, 0x01, 'u', 0x00, 'p' };
	uint8_t b[5] = { 0, 0x01, 'u', 0x01, 'p' };
	unsigned v;

	UNUSED(state);
	for (v = 0; v <= 255; v++) {
		if (v == SOCKS_AUTH_VERSION)
			continue;
		b[0] = (uint8_t)v;
		expect_from(KIND_AUTH, b, 1, sizeof(b), ST_EVERSION);
	}
	expect_from(KIND_AUTH, ulen0, 2, sizeof(ulen0), ST_EPROTO);
	expect_from(KIND_AUTH, plen0, 1, 3, ST_NEED_MORE);
	expect_from(KIND_AUTH, plen0, 4, sizeof(plen0), ST_EPROTO);
}

static void test_request_errors_in_wire_order(void **state)
{
	static const uint8_t cmd9[] = { 0x05, 0x09, 0x00, 0x01, 1, 2, 3, 4, 0, 80 };
	static const uint8_t atyp7[] = { 0x05, 0x01, 0x00, 0x07, 1, 2, 3, 4, 0, 80 };
	static const uint8_t all_bad[] = { 0x04, 0x09, 0x00, 0x07 };
	static const uint8_t cmd_and_atyp_bad[] = { 0x05, 0x09, 0x00, 0x07 };
	uint8_t b[10] = { 0x05, 0x01, 0x00, 0x01, 1, 2, 3, 4, 0, 80 };
	unsigned v;

	UNUSED(state);
	expect_from(KIND_REQUEST, cmd9, 0, 1, ST_NEED_MORE);
	expect_from(KIND_REQUEST, cmd9, 2, sizeof(cmd9), ST_ECOMMAND);
	expect_from(KIND_REQUEST, atyp7, 0, 3, ST_NEED_MORE);
	expect_from(KIND_REQUEST, atyp7, 4, sizeof(atyp7), ST_EADDRTYPE);
	/* The first bad field in wire order wins. */
	expect_from(KIND_REQUEST, all_bad, 1, sizeof(all_bad), ST_EVERSION);
	expect_from(KIND_REQUEST, cmd_and_atyp_bad, 2, sizeof(cmd_and_atyp_bad), ST_ECOMMAND);

	for (v = 0; v <= 255; v++) {
		memcpy(b, (const uint8_t[4]){ (uint8_t)v, 0x01, 0x00, 0x01 }, 4);
		if (v != SOCKS_VERSION)
			expect_from(KIND_REQUEST, b, 1, sizeof(b), ST_EVERSION);

		memcpy(b, (const uint8_t[4]){ 0x05, (uint8_t)v, 0x00, 0x01 }, 4);
		if (v < SOCKS_CMD_CONNECT || v > SOCKS_CMD_UDP_ASSOCIATE)
			expect_from(KIND_REQUEST, b, 2, sizeof(b), ST_ECOMMAND);

		memcpy(b, (const uint8_t[4]){ 0x05, 0x01, 0x00, (uint8_t)v }, 4);
		if (v != SOCKS_ATYP_IPV4 && v != SOCKS_ATYP_DOMAIN && v != SOCKS_ATYP_IPV6)
			expect_from(KIND_REQUEST, b, 4, sizeof(b), ST_EADDRTYPE);
	}
}

static void test_domain_errors(void **state)
{
	static const uint8_t empty_req[] = { 0x05, 0x01, 0x00, 0x03, 0x00, 0x00, 0x50 };
	static const uint8_t empty_tgt[] = { 0x03, 0x00, 0x00, 0x50 };
	uint8_t req[SOCKS_REQUEST_MAX];
	uint8_t tgt[SOCKS_REQUEST_MAX];
	struct socks_target t;
	size_t req_len, tgt_len, pos;
	unsigned v;

	UNUSED(state);
	expect_from(KIND_REQUEST, empty_req, 0, 4, ST_NEED_MORE);
	expect_from(KIND_REQUEST, empty_req, 5, sizeof(empty_req), ST_EPROTO);
	expect_from(KIND_TARGET, empty_tgt, 0, 1, ST_NEED_MORE);
	expect_from(KIND_TARGET, empty_tgt, 2, sizeof(empty_tgt), ST_EPROTO);

	/* A NUL anywhere in a domain: refused as soon as the NUL byte is present. */
	target_domain(&t, 10);
	for (pos = 0; pos < 10; pos++) {
		req_len = build_request(req, SOCKS_CMD_CONNECT, 0, &t);
		tgt_len = encode_target_by_hand(tgt, &t);
		req[5 + pos] = 0x00;
		tgt[2 + pos] = 0x00;
		expect_from(KIND_REQUEST, req, 0, 5 + pos, ST_NEED_MORE);
		expect_from(KIND_REQUEST, req, 5 + pos + 1, req_len, ST_EPROTO);
		expect_from(KIND_TARGET, tgt, 0, 2 + pos, ST_NEED_MORE);
		expect_from(KIND_TARGET, tgt, 2 + pos + 1, tgt_len, ST_EPROTO);
	}
	/* Same for a 255-byte name with the NUL in its last byte. */
	target_domain(&t, 255);
	tgt_len = encode_target_by_hand(tgt, &t);
	tgt[2 + 254] = 0x00;
	expect_from(KIND_TARGET, tgt, 2 + 254, 2 + 254, ST_NEED_MORE);
	expect_from(KIND_TARGET, tgt, 2 + 255, tgt_len, ST_EPROTO);

	/* Bare target: every unknown ATYP is refused at the first byte. */
	for (v = 0; v <= 255; v++) {
		uint8_t b[7] = { (uint8_t)v, 1, 2, 3, 4, 0, 80 };

		if (v != SOCKS_ATYP_IPV4 && v != SOCKS_ATYP_DOMAIN && v != SOCKS_ATYP_IPV6)
			expect_from(KIND_TARGET, b, 1, sizeof(b), ST_EADDRTYPE);
	}
}

/* ---- robustness: bit flips and garbage ---------------------------------------------------- */

static void test_every_bit_flip(void **state)
{
	uint8_t b[MSG_CAP];
	union parse_out o;
	size_t i, byte;
	unsigned bit, k;

	UNUSED(state);
	for (i = 0; i < corpus_n; i++) {
		const struct msg *m = &corpus[i];

		for (byte = 0; byte < m->len; byte++) {
			for (bit = 0; bit < 8; bit++) {
				memcpy(b, m->b, m->len);
				b[byte] ^= (uint8_t)(1u << bit);
				/* Through every parser, not only its own: all must stay within contract. */
				for (k = 0; k < KIND_COUNT; k++)
					(void)parse_checked((enum kind)k, at_page_end(b, m->len), m->len, &o);
			}
		}
	}
}

/*
 * A success must be stable when cut to exactly its length and must have been "cut short" one byte
 * earlier (NEED_MORE for a stream message, EPROTO for a datagram header).
 */
static void check_success_boundary(enum kind k, const uint8_t *p, int n)
{
	union parse_out o;

	assert_int_equal(parse_checked(k, at_page_end(p, (size_t)n), (size_t)n, &o), n);
	assert_int_equal(parse_checked(k, at_page_end(p, (size_t)n - 1), (size_t)n - 1, &o), cut_status(k));
}

static void test_random_garbage(void **state)
{
	static const uint8_t versions[] = { SOCKS_VERSION, SOCKS_AUTH_VERSION };
	uint8_t b[MSG_CAP];
	union parse_out o;
	size_t round, len, i, edits;
	unsigned k;
	unsigned successes = 0, udp_successes = 0;

	UNUSED(state);
	rng_state = 0x9E3779B97F4A7C15ULL;
	for (round = 0; round < GARBAGE_ROUNDS; round++) {
		if (round % 4 == 0) {
			/* Pure noise, often led by a valid version byte so parsing gets past it. */
			len = rng_below(MSG_CAP + 1);
			for (i = 0; i < len; i++)
				b[i] = (uint8_t)rng_next();
			if (len > 0 && (rng_next() & 1))
				b[0] = versions[rng_below(ARRAY_SIZE(versions))];
			else if (len >= 3 && (rng_next() & 1))
				memset(b, 0, 3); /* RSV FRAG of a datagram */
		} else {
			/* A valid message or datagram, a few random bytes replaced, then cut or extended. */
			const struct msg *m = rng_below(4) == 0 ? &udp_corpus[rng_below(udp_corpus_n)].m
							       : &corpus[rng_below(corpus_n)];

			memcpy(b, m->b, m->len);
			len = m->len;
			for (edits = 1 + rng_below(4); edits > 0; edits--)
				b[rng_below(len)] = (uint8_t)rng_next();
			if (rng_next() & 1) {
				len = rng_below(len + 1);
			} else {
				size_t extra = rng_below(MSG_CAP - len + 1);

				for (i = 0; i < extra; i++)
					b[len + i] = (uint8_t)rng_next();
				len += extra;
			}
		}
		for (k = 0; k < KIND_COUNT; k++) {
			int st = parse_checked((enum kind)k, at_page_end(b, len), len, &o);

			if (st > 0) {
				successes++;
				udp_successes += k == KIND_UDP;
				check_success_boundary((enum kind)k, b, st);
			}
		}
	}
	/* The generator must actually reach the success paths, or the loop proves little. */
	assert_true(successes > GARBAGE_ROUNDS / 10);
	assert_true(udp_successes > GARBAGE_ROUNDS / 100);
}

/* ---- encoders ----------------------------------------------------------------------------- */

static void test_write_method_and_auth_status(void **state)
{
	uint8_t out[2];

	UNUSED(state);
	socks_write_method(out, SOCKS_METHOD_USERPASS);
	assert_memory_equal(out, ((const uint8_t[]){ 0x05, 0x02 }), 2);
	socks_write_method(out, SOCKS_METHOD_UNACCEPTABLE);
	assert_memory_equal(out, ((const uint8_t[]){ 0x05, 0xff }), 2);
	socks_write_auth_status(out, SOCKS_AUTH_SUCCESS);
	assert_memory_equal(out, ((const uint8_t[]){ 0x01, 0x00 }), 2);
	socks_write_auth_status(out, SOCKS_AUTH_FAILURE);
	assert_memory_equal(out, ((const uint8_t[]){ 0x01, 0x01 }), 2);
}

/* Encode a reply over a sentinel-filled buffer and check its bytes and that nothing else was written. */
static void expect_reply(uint8_t rep, const struct addr *bnd, const uint8_t *want, size_t want_len)
{
	uint8_t out[SOCKS_REPLY_MAX + 8];
	size_t i, n;

	memset(out, SENTINEL, sizeof(out));
	n = socks_write_reply(out, rep, bnd);
	assert_int_equal(n, want_len);
	assert_memory_equal(out, want, want_len);
	for (i = n; i < sizeof(out); i++)
		assert_int_equal(out[i], SENTINEL);
}

static void test_write_reply(void **state)
{
	static const uint8_t want_v4[] = { 0x05, 0x00, 0x00, 0x01, 192, 0, 2, 1, 0x04, 0x38 };
	static const uint8_t want_v6[] = { 0x05, 0x05, 0x00, 0x04, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
					   0, 0, 0, 0, 0, 0, 0, 0x01, 0x01, 0xbb };
	static const uint8_t want_mapped[] = { 0x05, 0x00, 0x00, 0x01, 198, 51, 100, 7, 0xff, 0xff };
	static const uint8_t want_null[] = { 0x05, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0, 0 };
	/* ::ffff:0:0/96 is the mapped prefix; ::198.51.100.7 (deprecated "compatible") is not mapped. */
	static const uint8_t want_compat[] = { 0x05, 0x00, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0,
					       0, 0, 0, 0, 198, 51, 100, 7, 0x00, 0x35 };
	struct addr a;

	UNUSED(state);
	assert_int_equal(addr_parse_ip("192.0.2.1", 1080, &a), ST_OK);
	expect_reply(SOCKS_REP_SUCCEEDED, &a, want_v4, sizeof(want_v4));
	assert_int_equal(addr_parse_ip("2001:db8::1", 443, &a), ST_OK);
	expect_reply(SOCKS_REP_REFUSED, &a, want_v6, sizeof(want_v6));
	assert_int_equal(addr_parse_ip("::ffff:198.51.100.7", 65535, &a), ST_OK);
	assert_int_equal(addr_family(&a), AF_INET6);
	expect_reply(SOCKS_REP_SUCCEEDED, &a, want_mapped, sizeof(want_mapped));
	expect_reply(SOCKS_REP_GENERAL_FAILURE, NULL, want_null, sizeof(want_null));
	assert_int_equal(addr_parse_ip("::198.51.100.7", 53, &a), ST_OK);
	expect_reply(SOCKS_REP_SUCCEEDED, &a, want_compat, sizeof(want_compat));
}

static void test_write_reply_parses_as_target(void **state)
{
	static const char *const ips[] = { "0.0.0.0", "255.255.255.255", "::", "fe80::1", "::ffff:127.0.0.1" };
	uint8_t out[SOCKS_REPLY_MAX];
	struct socks_target t;
	struct addr a, back;
	size_t i, n;

	UNUSED(state);
	for (i = 0; i < ARRAY_SIZE(ips); i++) {
		assert_int_equal(addr_parse_ip(ips[i], (uint16_t)(1000 + i), &a), ST_OK);
		n = socks_write_reply(out, SOCKS_REP_SUCCEEDED, &a);
		/* BND.ADDR BND.PORT has the DST.ADDR DST.PORT shape (RFC 1928 §6). */
		assert_int_equal(socks_parse_target(out + 3, n - 3, &t), (int)(n - 3));
		assert_int_equal(t.port, 1000 + i);
		if (t.atyp == SOCKS_ATYP_IPV4) {
			addr_from_ipv4(&back, t.u.ipv4, t.port);
			if (addr_family(&a) == AF_INET6)
				assert_memory_equal(t.u.ipv4, a.u.sin6.sin6_addr.s6_addr + 12, 4);
			else
				assert_true(addr_equal(&a, &back));
		} else {
			assert_int_equal(t.atyp, SOCKS_ATYP_IPV6);
			addr_from_ipv6(&back, t.u.ipv6, t.port);
			assert_true(addr_equal(&a, &back));
		}
	}
}

static void test_target_round_trip(void **state)
{
	uint8_t out[SOCKS_REQUEST_MAX + 4];
	uint8_t hand[SOCKS_REQUEST_MAX];
	struct socks_target t;
	union parse_out o;
	unsigned i;

	UNUSED(state);
	for (i = 0; i < TARGET_FIXTURES; i++) {
		size_t n, want, j;

		target_fixture(i, &t);
		want = encode_target_by_hand(hand, &t);

		/* One byte short: nothing is written. */
		memset(out, SENTINEL, sizeof(out));
		assert_int_equal(socks_write_target(out, want - 1, &t), 0);
		for (j = 0; j < sizeof(out); j++)
			assert_int_equal(out[j], SENTINEL);
		assert_int_equal(socks_write_target(out, 0, &t), 0);

		/* Exactly enough, and more than enough: the same bytes. */
		n = socks_write_target(out, want, &t);
		assert_int_equal(n, want);
		assert_memory_equal(out, hand, want);
		memset(out, SENTINEL, sizeof(out));
		n = socks_write_target(out, sizeof(out), &t);
		assert_int_equal(n, want);
		assert_memory_equal(out, hand, want);
		assert_int_equal(out[n], SENTINEL);

		assert_int_equal(parse_checked(KIND_TARGET, out, n, &o), (int)n);
		assert_target_equal(&o.t, &t);
	}
}

static void test_write_target_refuses_invalid(void **state)
{
	uint8_t out[SOCKS_REQUEST_MAX];
	struct socks_target t;

	UNUSED(state);
	target_ipv4(&t);
	t.atyp = 0x02;
	assert_int_equal(socks_write_target(out, sizeof(out), &t), 0);
	target_domain(&t, 0);
	assert_int_equal(socks_write_target(out, sizeof(out), &t), 0);
	target_domain(&t, 5);
	t.u.domain.name[2] = '\0';
	assert_int_equal(socks_write_target(out, sizeof(out), &t), 0);
}

static void test_request_error_rep(void **state)
{
	static const uint8_t cmd9[] = { 0x05, 0x09 };
	static const uint8_t atyp7[] = { 0x05, 0x01, 0x00, 0x07 };
	struct socks_request r;

	UNUSED(state);
	assert_int_equal(socks_request_error_rep(ST_EVERSION), SOCKS_REP_GENERAL_FAILURE);
	assert_int_equal(socks_request_error_rep(ST_ECOMMAND), SOCKS_REP_CMD_UNSUPPORTED);
	assert_int_equal(socks_request_error_rep(ST_EADDRTYPE), SOCKS_REP_ATYP_UNSUPPORTED);
	assert_int_equal(socks_request_error_rep(ST_EPROTO), SOCKS_REP_GENERAL_FAILURE);
	assert_int_equal(socks_request_error_rep(ST_ESYS), SOCKS_REP_GENERAL_FAILURE);
	assert_int_equal(socks_request_error_rep(ST_NEED_MORE), SOCKS_REP_GENERAL_FAILURE);
	assert_int_equal(socks_request_error_rep(ST_OK), SOCKS_REP_GENERAL_FAILURE);
	assert_int_equal(socks_request_error_rep(-1000), SOCKS_REP_GENERAL_FAILURE);
	/* And as a session would use it, straight from the parser. */
	assert_int_equal(socks_request_error_rep(socks_parse_request(cmd9, sizeof(cmd9), &r)),
			 SOCKS_REP_CMD_UNSUPPORTED);
	assert_int_equal(socks_request_error_rep(socks_parse_request(atyp7, sizeof(atyp7), &r)),
			 SOCKS_REP_ATYP_UNSUPPORTED);
}

/* ---- UDP ASSOCIATE datagrams, RFC 1928 §7 ------------------------------------------------- */

static void test_udp_every_atyp_frag_and_data(void **state)
{
	/* IPv4, IPv6, 1-byte and 255-byte domain: 3 + ATYP + address + port. */
	static const size_t want_hdr[TARGET_FIXTURES] = { 10, 22, 3 + 1 + 1 + 1 + 2, SOCKS_UDP_HEADER_MAX };
	union parse_out o;
	size_t i, j;

	UNUSED(state);
	for (i = 0; i < udp_corpus_n; i++) {
		const struct udp_msg *u = &udp_corpus[i];
		int n;

		assert_int_equal(u->hdr_len, want_hdr[u->fixture]);
		n = parse_checked(KIND_UDP, u->m.b, u->m.len, &o);
		/* The header length, not the datagram's: DATA follows, untouched and possibly empty. */
		assert_int_equal(n, (int)u->hdr_len);
		assert_int_equal(u->m.len - (size_t)n, u->data_len);
		for (j = 0; j < u->data_len; j++)
			assert_int_equal(u->m.b[(size_t)n + j], udp_data_byte(j));
		assert_int_equal(o.u.frag, u->frag);
		assert_target_equal(&o.u.dst, &u->t);
	}
}

static void test_udp_exact_bytes(void **state)
{
	/* A DNS query's first bytes to 192.0.2.53:53 */
	static const uint8_t v4[] = { 0x00, 0x00, 0x00, 0x01, 192, 0, 2, 53, 0x00, 0x35, 0xab, 0xcd, 0x01 };
	/* example.com:443, FRAG 0x81 (the last fragment, number 1), no data */
	static const uint8_t dom[] = { 0x00, 0x00, 0x81, 0x03, 0x0b, 'e', 'x', 'a', 'm', 'p', 'l', 'e',
				       '.', 'c', 'o', 'm', 0x01, 0xbb };
	/* [2001:db8::1]:8080, one byte of data */
	static const uint8_t v6[] = { 0x00, 0x00, 0x00, 0x04, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
				      0, 0, 0, 0, 0, 0, 0, 0x01, 0x1f, 0x90, 0x42 };
	static const uint8_t v4_ip[4] = { 192, 0, 2, 53 };
	union parse_out o;

	UNUSED(state);
	assert_int_equal(parse_checked(KIND_UDP, v4, sizeof(v4), &o), 10);
	assert_int_equal(o.u.frag, 0);
	assert_int_equal(o.u.dst.atyp, SOCKS_ATYP_IPV4);
	assert_memory_equal(o.u.dst.u.ipv4, v4_ip, 4);
	assert_int_equal(o.u.dst.port, 53);

	assert_int_equal(parse_checked(KIND_UDP, dom, sizeof(dom), &o), (int)sizeof(dom));
	assert_int_equal(o.u.frag, 0x81);
	assert_int_equal(o.u.dst.atyp, SOCKS_ATYP_DOMAIN);
	assert_string_equal(o.u.dst.u.domain.name, "example.com");
	assert_int_equal(o.u.dst.port, 443);

	assert_int_equal(parse_checked(KIND_UDP, v6, sizeof(v6), &o), 22);
	assert_int_equal(o.u.dst.atyp, SOCKS_ATYP_IPV6);
	assert_memory_equal(o.u.dst.u.ipv6, v6 + 4, 16);
	assert_int_equal(o.u.dst.port, 8080);
}

static void test_udp_frag_passed_through(void **state)
{
	uint8_t b[MSG_CAP];
	struct socks_target t;
	union parse_out o;
	unsigned frag;

	UNUSED(state);
	target_ipv4(&t);
	for (frag = 0; frag <= 255; frag++) {
		size_t len = build_udp(b, 0, (uint8_t)frag, &t, 3);

		assert_int_equal(parse_checked(KIND_UDP, b, len, &o), (int)(len - 3));
		assert_int_equal(o.u.frag, frag);
		assert_target_equal(&o.u.dst, &t);
	}
}

/* Cut inside the header: EPROTO, output untouched (parse_checked). Cut inside DATA: still the header. */
static void expect_udp_prefixes(const struct udp_msg *u, int at_guard)
{
	union parse_out o;
	size_t k;

	for (k = 0; k <= u->m.len; k++) {
		const uint8_t *p = at_guard ? at_page_end(u->m.b, k) : u->m.b;
		int want = k < u->hdr_len ? ST_EPROTO : (int)u->hdr_len;

		assert_int_equal(parse_checked(KIND_UDP, p, k, &o), want);
	}
}

static void test_udp_every_truncation_is_eproto(void **state)
{
	size_t i;

	UNUSED(state);
	for (i = 0; i < udp_corpus_n; i++)
		expect_udp_prefixes(&udp_corpus[i], 0);
}

static void test_udp_guard_page_every_prefix(void **state)
{
	size_t i;

	UNUSED(state);
	for (i = 0; i < udp_corpus_n; i++)
		expect_udp_prefixes(&udp_corpus[i], 1);
}

static void test_udp_rsv_nonzero(void **state)
{
	static const uint16_t some[] = { 0x0001, 0x0100, 0x0500, 0x8000, 0xffff };
	uint8_t b[MSG_CAP];
	struct socks_target t;
	size_t len, i;
	unsigned rsv;

	UNUSED(state);
	target_ipv4(&t);
	/* Strict (see proto.h): any RSV but X'0000' is malformed, whatever follows. */
	for (rsv = 1; rsv <= 0xffff; rsv++) {
		len = build_udp(b, (uint16_t)rsv, 0, &t, 2);
		expect_from(KIND_UDP, b, len, len, ST_EPROTO);
	}
	/* And at every length, across every target shape. */
	for (i = 0; i < ARRAY_SIZE(some); i++) {
		unsigned f;

		for (f = 0; f < TARGET_FIXTURES; f++) {
			target_fixture(f, &t);
			len = build_udp(b, some[i], 0, &t, 2);
			expect_from(KIND_UDP, b, 0, len, ST_EPROTO);
		}
	}
}

static void test_udp_unknown_atyp(void **state)
{
	/* RSV wrong as well: the first bad field in wire order wins. */
	static const uint8_t rsv_and_atyp_bad[] = { 0x00, 0x01, 0x00, 0x07, 1, 2, 3, 4, 0, 80 };
	uint8_t b[10] = { 0x00, 0x00, 0x00, 0x00, 1, 2, 3, 4, 0, 80 };
	unsigned v;

	UNUSED(state);
	for (v = 0; v <= 255; v++) {
		if (v == SOCKS_ATYP_IPV4 || v == SOCKS_ATYP_DOMAIN || v == SOCKS_ATYP_IPV6)
			continue;
		b[3] = (uint8_t)v;
		/* Before ATYP the datagram is merely too short; from ATYP on the type is unknown. */
		expect_from(KIND_UDP, b, 0, 3, ST_EPROTO);
		expect_from(KIND_UDP, b, 4, sizeof(b), ST_EADDRTYPE);
	}
	expect_from(KIND_UDP, rsv_and_atyp_bad, 0, sizeof(rsv_and_atyp_bad), ST_EPROTO);
}

static void test_udp_domain_errors(void **state)
{
	/* A domain of length 0, with and without data after the port */
	static const uint8_t empty[] = { 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x35, 'x', 'y' };
	/* A length byte that runs past the end of the datagram */
	static const uint8_t overlong[] = { 0x00, 0x00, 0x00, 0x03, 0xc8, 'a', 'b', 'c', 0x00, 0x35 };
	uint8_t b[MSG_CAP];
	struct socks_target t;
	size_t len, pos;

	UNUSED(state);
	expect_from(KIND_UDP, empty, 0, sizeof(empty), ST_EPROTO);
	expect_from(KIND_UDP, overlong, 0, sizeof(overlong), ST_EPROTO);

	/* A NUL anywhere in the name, including the last byte of a 255-byte one */
	target_domain(&t, 10);
	for (pos = 0; pos < 10; pos++) {
		len = build_udp(b, 0, 0, &t, 4);
		b[5 + pos] = 0x00;
		expect_from(KIND_UDP, b, 0, len, ST_EPROTO);
	}
	target_domain(&t, SOCKS_DOMAIN_MAX);
	len = build_udp(b, 0, 0, &t, 4);
	b[5 + SOCKS_DOMAIN_MAX - 1] = 0x00;
	expect_from(KIND_UDP, b, 0, len, ST_EPROTO);
}

static void test_udp_every_bit_flip(void **state)
{
	uint8_t b[MSG_CAP];
	union parse_out o;
	size_t i, byte;
	unsigned bit, k;

	UNUSED(state);
	for (i = 0; i < udp_corpus_n; i++) {
		const struct udp_msg *u = &udp_corpus[i];

		for (byte = 0; byte < u->m.len; byte++) {
			for (bit = 0; bit < 8; bit++) {
				const uint8_t *p;
				int st;

				memcpy(b, u->m.b, u->m.len);
				b[byte] ^= (uint8_t)(1u << bit);
				p = at_page_end(b, u->m.len);
				/* Through every other parser too: all must stay within contract. */
				for (k = 0; k < KIND_COUNT; k++) {
					if (k != KIND_UDP)
						(void)parse_checked((enum kind)k, p, u->m.len, &o);
				}

				st = parse_checked(KIND_UDP, p, u->m.len, &o);
				if (byte < 2) {
					/* RSV */
					assert_int_equal(st, ST_EPROTO);
				} else if (byte == 2 || byte >= u->hdr_len) {
					/* FRAG is passed through; DATA is not looked at. */
					assert_int_equal(st, (int)u->hdr_len);
					assert_int_equal(o.u.frag, byte == 2 ? b[2] : u->frag);
					assert_target_equal(&o.u.dst, &u->t);
				} else if (st > 0) {
					/* A flipped target that still parses: an exact header. */
					check_success_boundary(KIND_UDP, b, st);
				}
			}
		}
	}
}

/* Encode a UDP header for src over a sentinel-filled buffer; check its bytes and nothing else written. */
static void expect_udp_header(const struct addr *src, const uint8_t *want, size_t want_len)
{
	uint8_t out[SOCKS_UDP_HEADER_MAX + 8];
	size_t i, n;

	/* Too small, by one byte or entirely: nothing written. */
	memset(out, SENTINEL, sizeof(out));
	assert_int_equal(socks_write_udp_header(out, want_len - 1, src), 0);
	assert_int_equal(socks_write_udp_header(out, 2, src), 0);
	assert_int_equal(socks_write_udp_header(out, 0, src), 0);
	for (i = 0; i < sizeof(out); i++)
		assert_int_equal(out[i], SENTINEL);

	n = socks_write_udp_header(out, want_len, src);
	assert_int_equal(n, want_len);
	assert_memory_equal(out, want, want_len);
	memset(out, SENTINEL, sizeof(out));
	n = socks_write_udp_header(out, sizeof(out), src);
	assert_int_equal(n, want_len);
	assert_memory_equal(out, want, want_len);
	for (i = n; i < sizeof(out); i++)
		assert_int_equal(out[i], SENTINEL);
}

static void test_udp_write_header(void **state)
{
	static const uint8_t want_v4[] = { 0x00, 0x00, 0x00, 0x01, 192, 0, 2, 1, 0x04, 0x38 };
	static const uint8_t want_v6[] = { 0x00, 0x00, 0x00, 0x04, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0,
					   0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0x35 };
	static const uint8_t want_mapped[] = { 0x00, 0x00, 0x00, 0x01, 198, 51, 100, 7, 0xff, 0xff };
	/* ::198.51.100.7 (deprecated "compatible") is not mapped: it stays IPv6. */
	static const uint8_t want_compat[] = { 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0,
					       0, 0, 0, 0, 198, 51, 100, 7, 0x00, 0x00 };
	uint8_t out[SOCKS_UDP_HEADER_MAX];
	struct addr a;
	size_t i;

	UNUSED(state);
	assert_int_equal(addr_parse_ip("192.0.2.1", 1080, &a), ST_OK);
	expect_udp_header(&a, want_v4, sizeof(want_v4));
	assert_int_equal(addr_parse_ip("2001:db8::1", 53, &a), ST_OK);
	expect_udp_header(&a, want_v6, sizeof(want_v6));
	assert_int_equal(addr_parse_ip("::ffff:198.51.100.7", 65535, &a), ST_OK);
	assert_int_equal(addr_family(&a), AF_INET6);
	expect_udp_header(&a, want_mapped, sizeof(want_mapped));
	assert_int_equal(addr_parse_ip("::198.51.100.7", 0, &a), ST_OK);
	expect_udp_header(&a, want_compat, sizeof(want_compat));

	/* Another family: nothing written. */
	memset(&a, 0, sizeof(a));
	a.u.sa.sa_family = AF_UNIX;
	memset(out, SENTINEL, sizeof(out));
	assert_int_equal(socks_write_udp_header(out, sizeof(out), &a), 0);
	for (i = 0; i < sizeof(out); i++)
		assert_int_equal(out[i], SENTINEL);
}

static void test_udp_write_parse_round_trip(void **state)
{
	static const char *const ips[] = { "0.0.0.0", "192.0.2.1", "255.255.255.255", "::", "::1",
					   "2001:db8::1", "fe80::1", "::ffff:127.0.0.1",
					   "::ffff:198.51.100.7" };
	uint8_t out[SOCKS_UDP_HEADER_MAX + 16];
	struct addr a, back;
	union parse_out o;
	size_t i, n;

	UNUSED(state);
	for (i = 0; i < ARRAY_SIZE(ips); i++) {
		assert_int_equal(addr_parse_ip(ips[i], (uint16_t)(65535 - 1000 * i), &a), ST_OK);
		n = socks_write_udp_header(out, sizeof(out), &a);
		assert_true(n == 10 || n == 22);
		/* A reply as the relay sends it: the header, then the target's data. */
		memcpy(out + n, "payload", 7);
		assert_int_equal(parse_checked(KIND_UDP, out, n + 7, &o), (int)n);
		assert_int_equal(o.u.frag, 0);
		if (o.u.dst.atyp == SOCKS_ATYP_IPV4) {
			addr_from_ipv4(&back, o.u.dst.u.ipv4, o.u.dst.port);
			if (addr_family(&a) == AF_INET6) {
				/* IPv4-mapped: written as the IPv4 address inside it. */
				assert_true(IN6_IS_ADDR_V4MAPPED(&a.u.sin6.sin6_addr));
				assert_memory_equal(o.u.dst.u.ipv4, a.u.sin6.sin6_addr.s6_addr + 12, 4);
				assert_int_equal(o.u.dst.port, addr_port(&a));
			} else {
				assert_true(addr_equal(&a, &back));
			}
		} else {
			assert_int_equal(o.u.dst.atyp, SOCKS_ATYP_IPV6);
			addr_from_ipv6(&back, o.u.dst.u.ipv6, o.u.dst.port);
			assert_true(addr_equal(&a, &back));
		}
	}
}

static void test_udp_write_header_target(void **state)
{
	uint8_t out[SOCKS_UDP_HEADER_MAX + 4];
	uint8_t hand[SOCKS_UDP_HEADER_MAX];
	struct socks_target t;
	union parse_out o;
	unsigned i;
	size_t j;

	UNUSED(state);
	for (i = 0; i < TARGET_FIXTURES; i++) {
		size_t n, want;

		target_fixture(i, &t);
		want = build_udp(hand, 0, 0, &t, 0);

		memset(out, SENTINEL, sizeof(out));
		assert_int_equal(socks_write_udp_header_target(out, want - 1, &t), 0);
		assert_int_equal(socks_write_udp_header_target(out, 3, &t), 0);
		assert_int_equal(socks_write_udp_header_target(out, 0, &t), 0);
		for (j = 0; j < sizeof(out); j++)
			assert_int_equal(out[j], SENTINEL);

		n = socks_write_udp_header_target(out, sizeof(out), &t);
		assert_int_equal(n, want);
		assert_memory_equal(out, hand, want);
		assert_int_equal(out[n], SENTINEL);
		assert_int_equal(socks_write_udp_header_target(out, want, &t), want);

		assert_int_equal(parse_checked(KIND_UDP, out, n, &o), (int)n);
		assert_int_equal(o.u.frag, 0);
		assert_target_equal(&o.u.dst, &t);
	}
	/* 7 + n for a domain: the longest is the buffer-sizing constant. */
	target_domain(&t, SOCKS_DOMAIN_MAX);
	assert_int_equal(socks_write_udp_header_target(out, sizeof(out), &t), SOCKS_UDP_HEADER_MAX);
	target_domain(&t, 11);
	assert_int_equal(socks_write_udp_header_target(out, sizeof(out), &t), 7 + 11);

	/* What the parser would refuse is never written. */
	memset(out, SENTINEL, sizeof(out));
	target_ipv4(&t);
	t.atyp = 0x02;
	assert_int_equal(socks_write_udp_header_target(out, sizeof(out), &t), 0);
	target_domain(&t, 0);
	assert_int_equal(socks_write_udp_header_target(out, sizeof(out), &t), 0);
	target_domain(&t, 5);
	t.u.domain.name[2] = '\0';
	assert_int_equal(socks_write_udp_header_target(out, sizeof(out), &t), 0);
	for (j = 0; j < sizeof(out); j++)
		assert_int_equal(out[j], SENTINEL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting_every_method_count),
		cmocka_unit_test(test_greeting_method_flags),
		cmocka_unit_test(test_auth_lengths),
		cmocka_unit_test(test_auth_exact_bytes_and_inner_nul),
		cmocka_unit_test(test_auth_clears_previous_secret),
		cmocka_unit_test(test_request_every_atyp_and_cmd),
		cmocka_unit_test(test_request_exact_bytes),
		cmocka_unit_test(test_request_rsv_ignored),
		cmocka_unit_test(test_target_every_atyp),
		cmocka_unit_test(test_every_truncation_needs_more),
		cmocka_unit_test(test_trailing_bytes_not_consumed),
		cmocka_unit_test(test_guard_page_every_prefix),
		cmocka_unit_test(test_greeting_errors),
		cmocka_unit_test(test_auth_errors),
		cmocka_unit_test(test_request_errors_in_wire_order),
		cmocka_unit_test(test_domain_errors),
		cmocka_unit_test(test_every_bit_flip),
		cmocka_unit_test(test_random_garbage),
		cmocka_unit_test(test_write_method_and_auth_status),
		cmocka_unit_test(test_write_reply),
		cmocka_unit_test(test_write_reply_parses_as_target),
		cmocka_unit_test(test_target_round_trip),
		cmocka_unit_test(test_write_target_refuses_invalid),
		cmocka_unit_test(test_request_error_rep),
		cmocka_unit_test(test_udp_every_atyp_frag_and_data),
		cmocka_unit_test(test_udp_exact_bytes),
		cmocka_unit_test(test_udp_frag_passed_through),
		cmocka_unit_test(test_udp_every_truncation_is_eproto),
		cmocka_unit_test(test_udp_guard_page_every_prefix),
		cmocka_unit_test(test_udp_rsv_nonzero),
		cmocka_unit_test(test_udp_unknown_atyp),
		cmocka_unit_test(test_udp_domain_errors),
		cmocka_unit_test(test_udp_every_bit_flip),
		cmocka_unit_test(test_udp_write_header),
		cmocka_unit_test(test_udp_write_parse_round_trip),
		cmocka_unit_test(test_udp_write_header_target),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
