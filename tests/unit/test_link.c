/*
 * tests/unit/test_link.c - crypto/link: the link's handshake, replay cache, frames and records.
 *
 * A client and a server run against each other in memory. The first flight is also built by hand
 * with crypto/noise.h (LINK.md's layout, field by field) so that the wire format is checked against
 * the document and not only against link.c itself. Hostile input: random first flights of every
 * interesting length, every bit flipped, a wrong PSK or server key; records cut at every length,
 * tampered at every bit, reordered, replayed, with lengths out of range, breaking every frame rule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "base/compiler.h"
#include "base/status.h"
#include "crypto/link.h"
#include "crypto/noise.h"
#include "crypto/pwhash.h"

#define NOW 1700000000 /* Unix seconds of the tests' clock */
#define MONO 5000.0    /* monotonic seconds of the tests' clock */

/* One server and one client key set, made in group_setup. */
static uint8_t srv_priv[32], srv_pub[32], cli_priv[32], cli_pub[32], psk[32];
static struct link_server_key *srv_key;
static struct link_client_key *cli_key;

/* Targets as socks_write_target encodes them (ATYP ADDR PORT), and username parameters. */
static const uint8_t target_v4[] = { 0x01, 203, 0, 113, 7, 0x01, 0xbb };
static const uint8_t target_name[] = { 0x03, 11, 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c', 'o', 'm',
				       0x00, 0x50 };
static const uint8_t params[] = "session-s1-ttl-0";

/* xorshift64*: a fixed seed makes every run the same run. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

static void rng_fill(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)rng_next();
}

static int group_setup(void **state)
{
	uint8_t scratch[32];

	(void)state;
	if (pwhash_init() != ST_OK)
		return -1;
	noise_keypair_generate(srv_priv, srv_pub);
	noise_keypair_generate(cli_priv, cli_pub);
	noise_keypair_generate(psk, scratch); /* 32 random bytes */
	if (link_server_key_new(srv_priv, &srv_key) != ST_OK)
		return -1;
	if (link_client_key_new(cli_priv, srv_pub, psk, &cli_key) != ST_OK)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	link_server_key_free(srv_key);
	link_client_key_free(cli_key);
	return 0;
}

/* ---- handshake helpers ----------------------------------------------------------------------- */

/* A complete handshake; the two sessions are ready for records. */
static void handshake(struct link_session *cs, struct link_session *ss)
{
	struct link_client_hs chs;
	struct link_server_hs shs;
	struct link_first f;
	uint8_t first[LINK_FIRST_MAX], reply[LINK_REPLY_MAX];
	size_t first_len, reply_len;

	assert_int_equal(link_client_first(&chs, cli_key, NOW, first, &first_len), ST_OK);
	assert_int_equal(link_server_read_first(&shs, srv_key, first, first_len, &f), LINK_FIRST_FIXED);
	assert_int_equal(link_server_reply(&shs, psk, MONO, reply, &reply_len, ss), ST_OK);
	assert_int_equal(link_client_read_reply(&chs, reply, reply_len, MONO, cs), (int)reply_len);
}

/*
 * Message 1 built by hand from LINK.md with the Noise API, P1 given raw, and mac1 appended:
 * 128 bytes into out. A first flight link.c did not write, to check the server against the text.
 */
static void manual_first(uint8_t out[LINK_FIRST_FIXED], const uint8_t p1[LINK_P1_LEN],
			 const uint8_t *e_priv)
{
	struct noise_handshake hs;
	struct noise_config cfg;
	uint8_t mac1_key[32];
	size_t len;

	memset(&cfg, 0, sizeof(cfg));
	cfg.protocol = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b";
	cfg.initiator = true;
	cfg.prologue = (const uint8_t *)"shroud-link/1";
	cfg.prologue_len = 13;
	cfg.s = cli_priv;
	cfg.e = e_priv;
	cfg.rs = srv_pub;
	cfg.psks = psk;
	cfg.npsks = 1;
	assert_int_equal(noise_handshake_init(&hs, &cfg), ST_OK);
	assert_int_equal(noise_handshake_write(&hs, p1, LINK_P1_LEN, out, LINK_MSG1_LEN, &len), ST_OK);
	assert_int_equal(len, 112);
	link_mac1_key(mac1_key, srv_pub);
	link_mac1(out + 112, mac1_key, out);
	noise_handshake_wipe(&hs);
}

static void p1_encode(uint8_t p1[LINK_P1_LEN], uint64_t ts, uint16_t pad_len)
{
	memset(p1, 0, LINK_P1_LEN);
	for (int i = 0; i < 8; i++)
		p1[i] = (uint8_t)(ts >> (56 - 8 * i));
	p1[8] = (uint8_t)(pad_len >> 8);
	p1[9] = (uint8_t)pad_len;
}

/* ---- handshake ------------------------------------------------------------------------------- */

static void test_handshake(void **state)
{
	struct link_client_hs chs;
	struct link_server_hs shs;
	struct link_session cs, ss;
	struct link_first f;
	uint8_t first[LINK_FIRST_MAX], reply[LINK_REPLY_MAX], pub[32];
	size_t first_len, reply_len;

	(void)state;
	link_server_key_public(srv_key, pub);
	assert_memory_equal(pub, srv_pub, 32);
	link_client_key_public(cli_key, pub);
	assert_memory_equal(pub, cli_pub, 32);

	assert_int_equal(link_client_first(&chs, cli_key, NOW, first, &first_len), ST_OK);
	assert_true(first_len >= LINK_FIRST_FIXED && first_len <= LINK_FIRST_MAX);
	assert_int_equal(link_server_check_mac1(srv_key, first, first_len), ST_OK);

	memset(&f, 0xEE, sizeof(f));
	assert_int_equal(link_server_read_first(&shs, srv_key, first, first_len, &f), LINK_FIRST_FIXED);
	assert_memory_equal(f.client_pub, cli_pub, 32);
	assert_memory_equal(f.e_pub, first, 32); /* e.pub travels in clear at [0, 32) */
	assert_true(f.timestamp == NOW);
	assert_int_equal(f.pad_len, first_len - LINK_FIRST_FIXED);
	assert_true(link_clock_ok(f.timestamp, NOW + 3));

	memset(&ss, 0x33, sizeof(ss));
	assert_int_equal(link_server_reply(&shs, psk, MONO, reply, &reply_len, &ss), ST_OK);
	assert_true(reply_len >= LINK_REPLY_FIXED && reply_len <= LINK_REPLY_MAX);
	assert_true(ss.server);
	assert_true(ss.send_epoch_start == MONO);
	/* The server's handshake state is gone: it cannot reply twice. */
	assert_int_equal(link_server_reply(&shs, psk, MONO, reply, &reply_len, &ss), ST_EINVAL);

	assert_int_equal(link_client_read_reply(&chs, reply, reply_len, MONO, &cs), (int)reply_len);
	assert_false(cs.server);
	/* Split's keys pair up: each side's send key is the other's receive key. */
	assert_memory_equal(cs.send.k, ss.recv.k, 32);
	assert_memory_equal(cs.recv.k, ss.send.k, 32);
	assert_memory_not_equal(cs.send.k, cs.recv.k, 32);
	link_session_wipe(&cs);
	link_session_wipe(&ss);
}

/* The wire layout of LINK.md, built by hand, is what the server accepts. */
static void test_handshake_manual_layout(void **state)
{
	struct link_server_hs shs;
	struct link_first f;
	uint8_t first[LINK_FIRST_FIXED], p1[LINK_P1_LEN], e[32];

	(void)state;
	rng_fill(e, sizeof(e));
	p1_encode(p1, NOW - 42, 900);
	manual_first(first, p1, e);
	assert_int_equal(link_server_read_first(&shs, srv_key, first, sizeof(first), &f),
			 LINK_FIRST_FIXED);
	assert_true(f.timestamp == NOW - 42);
	assert_int_equal(f.pad_len, 900);
	link_server_hs_wipe(&shs);
}

/* P1's checked fields: pad_len beyond 900, flags or any reserved byte not zero. */
static void test_handshake_p1_fields(void **state)
{
	struct link_server_hs shs;
	struct link_first f, before;
	uint8_t first[LINK_FIRST_FIXED], p1[LINK_P1_LEN], e[32];

	(void)state;
	rng_fill(e, sizeof(e));
	memset(&f, 0x5C, sizeof(f));
	memcpy(&before, &f, sizeof(f));

	p1_encode(p1, NOW, 901);
	manual_first(first, p1, e);
	assert_int_equal(link_server_read_first(&shs, srv_key, first, sizeof(first), &f), ST_ECRYPTO);
	assert_memory_equal(&f, &before, sizeof(f));
	for (size_t i = 10; i < LINK_P1_LEN; i++) {
		p1_encode(p1, NOW, 7);
		p1[i] = 0x01;
		manual_first(first, p1, e);
		assert_int_equal(link_server_read_first(&shs, srv_key, first, sizeof(first), &f),
				 ST_ECRYPTO);
		assert_memory_equal(&f, &before, sizeof(f));
	}
	/* The same with every field right is accepted (the failures above were the fields). */
	p1_encode(p1, UINT64_MAX, 0);
	manual_first(first, p1, e);
	assert_int_equal(link_server_read_first(&shs, srv_key, first, sizeof(first), &f),
			 LINK_FIRST_FIXED);
	assert_true(f.timestamp == UINT64_MAX);
	assert_false(link_clock_ok(f.timestamp, NOW));
	link_server_hs_wipe(&shs);
}

/* Random first flights: never accepted, refused at mac1 (or, with a forged mac1, at Noise). */
static void test_handshake_random_first(void **state)
{
	static const size_t lens[] = { 0, 1, 16, 111, 112, 113, 127, 128, 500, 5000 };
	static uint8_t buf[5000];
	struct link_server_hs shs;
	struct link_first f, before;
	uint8_t mac1_key[32];

	(void)state;
	link_mac1_key(mac1_key, srv_pub);
	memset(&f, 0x5C, sizeof(f));
	memcpy(&before, &f, sizeof(f));
	for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
		for (int round = 0; round < 50; round++) {
			int want = lens[i] < LINK_FIRST_FIXED ? ST_NEED_MORE : ST_ECRYPTO;

			rng_fill(buf, lens[i]);
			assert_int_equal(link_server_check_mac1(srv_key, buf, lens[i]), want);
			assert_int_equal(link_server_read_first(&shs, srv_key, buf, lens[i], &f), want);
			assert_memory_equal(&f, &before, sizeof(f));
			assert_int_equal(noise_handshake_action(&shs.noise), NOISE_ACTION_NONE);
			if (lens[i] < LINK_FIRST_FIXED)
				continue;
			/* mac1 is public knowledge (S_srv.pub): a forged one only reaches Noise. */
			link_mac1(buf + LINK_MSG1_LEN, mac1_key, buf);
			assert_int_equal(link_server_check_mac1(srv_key, buf, lens[i]), ST_OK);
			assert_int_equal(link_server_read_first(&shs, srv_key, buf, lens[i], &f),
					 ST_ECRYPTO);
			assert_memory_equal(&f, &before, sizeof(f));
		}
	}
}

/* Any 1-bit change of the 128 authenticated bytes is refused, with or without a fixed-up mac1. */
static void test_handshake_first_bitflip(void **state)
{
	struct link_client_hs chs;
	struct link_server_hs shs;
	struct link_first f;
	uint8_t first[LINK_FIRST_MAX], forged[LINK_FIRST_MAX], mac1_key[32];
	size_t first_len;

	(void)state;
	link_mac1_key(mac1_key, srv_pub);
	assert_int_equal(link_client_first(&chs, cli_key, NOW, first, &first_len), ST_OK);
	for (size_t bit = 0; bit < LINK_FIRST_FIXED * 8; bit++) {
		memcpy(forged, first, first_len);
		forged[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		assert_int_equal(link_server_check_mac1(srv_key, forged, first_len), ST_ECRYPTO);
		assert_int_equal(link_server_read_first(&shs, srv_key, forged, first_len, &f), ST_ECRYPTO);
		if (bit < LINK_MSG1_LEN * 8) {
			link_mac1(forged + LINK_MSG1_LEN, mac1_key, forged);
			assert_int_equal(link_server_read_first(&shs, srv_key, forged, first_len, &f),
					 ST_ECRYPTO);
		}
	}
	/* The genuine flight is still good: the failures were the flips. */
	assert_int_equal(link_server_read_first(&shs, srv_key, first, first_len, &f), LINK_FIRST_FIXED);
	link_server_hs_wipe(&shs);
	link_client_hs_wipe(&chs);
}

static void test_handshake_wrong_psk(void **state)
{
	struct link_client_hs chs;
	struct link_server_hs shs, shs2;
	struct link_session cs, ss, ss2, before;
	struct link_first f;
	uint8_t first[LINK_FIRST_MAX], reply[LINK_REPLY_MAX], good[LINK_REPLY_MAX], other[32];
	size_t first_len, reply_len, good_len;

	(void)state;
	memcpy(other, psk, sizeof(other));
	other[31] ^= 0x80;
	assert_int_equal(link_client_first(&chs, cli_key, NOW, first, &first_len), ST_OK);
	assert_int_equal(link_server_read_first(&shs, srv_key, first, first_len, &f), LINK_FIRST_FIXED);
	assert_int_equal(link_server_reply(&shs, other, MONO, reply, &reply_len, &ss), ST_OK);
	/* A second server answers the same first flight with the right PSK: a reply chs can read. */
	assert_int_equal(link_server_read_first(&shs2, srv_key, first, first_len, &f),
			 LINK_FIRST_FIXED);
	assert_int_equal(link_server_reply(&shs2, psk, MONO, good, &good_len, &ss2), ST_OK);
	memset(&cs, 0x44, sizeof(cs));
	memcpy(&before, &cs, sizeof(cs));
	assert_int_equal(link_client_read_reply(&chs, reply, reply_len, MONO, &cs), ST_ECRYPTO);
	assert_memory_equal(&cs, &before, sizeof(cs));
	/* The failure wiped chs: even the right reply cannot be read now, and cs stays untouched. */
	assert_int_equal(link_client_read_reply(&chs, good, good_len, MONO, &cs), ST_ECRYPTO);
	assert_memory_equal(&cs, &before, sizeof(cs));
	link_session_wipe(&ss);
	link_session_wipe(&ss2);
}

/* A client that pinned another server key fails at the server's first, cheapest check. */
static void test_handshake_wrong_server_key(void **state)
{
	struct link_client_key *k;
	struct link_client_hs chs;
	struct link_server_hs shs;
	struct link_first f;
	uint8_t first[LINK_FIRST_MAX], other_priv[32], other_pub[32];
	size_t first_len;

	(void)state;
	noise_keypair_generate(other_priv, other_pub);
	assert_int_equal(link_client_key_new(cli_priv, other_pub, psk, &k), ST_OK);
	assert_int_equal(link_client_first(&chs, k, NOW, first, &first_len), ST_OK);
	assert_int_equal(link_server_check_mac1(srv_key, first, first_len), ST_ECRYPTO);
	assert_int_equal(link_server_read_first(&shs, srv_key, first, first_len, &f), ST_ECRYPTO);
	link_client_key_free(k);
	link_client_hs_wipe(&chs);

	/* A pinned key of low order cannot even start. */
	memset(other_pub, 0, sizeof(other_pub));
	assert_int_equal(link_client_key_new(cli_priv, other_pub, psk, &k), ST_OK);
	assert_int_equal(link_client_first(&chs, k, NOW, first, &first_len), ST_ECRYPTO);
	link_client_key_free(k);
	/* Nor can a clock before 1970. */
	assert_int_equal(link_client_first(&chs, cli_key, -1, first, &first_len), ST_EINVAL);
}

/* The reply arrives a byte at a time, and records may follow it in the same buffer. */
static void test_handshake_reply_incremental(void **state)
{
	struct link_client_hs chs;
	struct link_server_hs shs;
	struct link_session cs, ss, before;
	struct link_first f;
	struct link_frame fr;
	uint8_t first[LINK_FIRST_MAX], buf[LINK_REPLY_MAX + 600], frame[LINK_CONNECT_FRAME_LEN];
	uint8_t plain[LINK_FRAME_MAX];
	size_t first_len, reply_len, n;
	int rec;

	(void)state;
	assert_int_equal(link_client_first(&chs, cli_key, NOW, first, &first_len), ST_OK);
	/* The server too gets its first flight in pieces: nothing until 128 bytes. */
	for (n = 0; n < LINK_FIRST_FIXED; n++)
		assert_int_equal(link_server_read_first(&shs, srv_key, first, n, &f), ST_NEED_MORE);
	assert_int_equal(link_server_read_first(&shs, srv_key, first, LINK_FIRST_FIXED, &f),
			 LINK_FIRST_FIXED);
	assert_int_equal(link_server_reply(&shs, psk, MONO, buf, &reply_len, &ss), ST_OK);

	/* A record right behind the reply, in the same buffer. */
	n = link_frame_connect_reply(frame, sizeof(frame), 0x00, target_v4, sizeof(target_v4));
	rec = link_record_seal(&ss, frame, n, buf + reply_len, sizeof(buf) - reply_len);
	assert_true(rec > 0);

	memset(&cs, 0x44, sizeof(cs));
	memcpy(&before, &cs, sizeof(cs));
	for (n = 0; n < reply_len; n++) {
		assert_int_equal(link_client_read_reply(&chs, buf, n, MONO, &cs), ST_NEED_MORE);
		assert_memory_equal(&cs, &before, sizeof(cs));
	}
	assert_int_equal(link_client_read_reply(&chs, buf, reply_len + (size_t)rec, MONO, &cs),
			 (int)reply_len);
	assert_int_equal(link_record_open(&cs, buf + reply_len, (size_t)rec, plain, &fr), rec);
	assert_int_equal(fr.type, LINK_FRAME_CONNECT_REPLY);
	assert_memory_equal(fr.target, target_v4, sizeof(target_v4));
	link_session_wipe(&cs);
	link_session_wipe(&ss);
}

static void test_clock_window(void **state)
{
	(void)state;
	assert_true(link_clock_ok(NOW, NOW));
	assert_true(link_clock_ok(NOW + 60, NOW));
	assert_true(link_clock_ok(NOW - 60, NOW));
	assert_false(link_clock_ok(NOW + 61, NOW));
	assert_false(link_clock_ok(NOW - 61, NOW));
	assert_false(link_clock_ok(0, NOW));
	assert_false(link_clock_ok(UINT64_MAX, NOW));
	assert_true(link_clock_ok(0, 60));
	assert_false(link_clock_ok(0, -1));
	assert_true(link_clock_ok((uint64_t)INT64_MAX, INT64_MAX));
	assert_false(link_clock_ok(UINT64_MAX, INT64_MAX));
}

/* Padding lengths are random per flight: sizes vary, both ends of 0..900 are reachable. */
static void test_first_flight_sizes_vary(void **state)
{
	static bool seen[LINK_PAD_MAX + 1];
	struct link_client_hs chs;
	uint8_t first[LINK_FIRST_MAX], prev_e[32];
	size_t len, distinct = 0, minlen = SIZE_MAX, maxlen = 0;

	(void)state;
	memset(seen, 0, sizeof(seen));
	memset(prev_e, 0, sizeof(prev_e));
	for (int i = 0; i < 400; i++) {
		assert_int_equal(link_client_first(&chs, cli_key, NOW, first, &len), ST_OK);
		assert_true(len >= LINK_FIRST_FIXED && len <= LINK_FIRST_MAX);
		assert_memory_not_equal(first, prev_e, 32); /* a fresh ephemeral every time */
		memcpy(prev_e, first, 32);
		if (!seen[len - LINK_FIRST_FIXED])
			distinct++;
		seen[len - LINK_FIRST_FIXED] = true;
		minlen = MIN(minlen, len);
		maxlen = MAX(maxlen, len);
		link_client_hs_wipe(&chs);
	}
	/* 400 draws from 901 values: ~320 distinct expected; 200 is far below any real run. */
	assert_true(distinct >= 200);
	assert_true(minlen < LINK_FIRST_FIXED + 150 && maxlen > LINK_FIRST_FIXED + 750);
}

/* ---- replay cache ---------------------------------------------------------------------------- */

static void test_replay(void **state)
{
	struct link_replay *r;
	uint8_t a[32], b[32], keys[8][32];

	(void)state;
	assert_int_equal(link_replay_new(0, &r), ST_EINVAL);
	assert_int_equal(link_replay_new((size_t)1 << 25, &r), ST_EINVAL);
	assert_int_equal(link_replay_new(4, &r), ST_OK);
	rng_fill(a, sizeof(a));
	memcpy(b, a, sizeof(b));
	b[31] ^= 1;

	assert_int_equal(link_replay_add(r, a, 100.0), ST_OK);
	assert_int_equal(link_replay_add(r, a, 100.0), ST_EEXIST);
	assert_int_equal(link_replay_add(r, a, 100.0 + LINK_REPLAY_WINDOW - 0.001), ST_EEXIST);
	assert_int_equal(link_replay_add(r, b, 150.0), ST_OK); /* one bit apart: another key */
	assert_int_equal(link_replay_count(r), 2);
	/* 180 s later a's entry is gone and the key is new again; b's stays until its own time. */
	assert_int_equal(link_replay_add(r, a, 100.0 + LINK_REPLAY_WINDOW), ST_OK);
	assert_int_equal(link_replay_add(r, b, 100.0 + LINK_REPLAY_WINDOW), ST_EEXIST);
	assert_int_equal(link_replay_count(r), 2);
	link_replay_free(r);

	/* Full of live entries: fail closed, record nothing; room comes back as entries expire. */
	assert_int_equal(link_replay_new(3, &r), ST_OK);
	for (int i = 0; i < 8; i++)
		rng_fill(keys[i], 32);
	assert_int_equal(link_replay_add(r, keys[0], 0.0), ST_OK);
	assert_int_equal(link_replay_add(r, keys[1], 10.0), ST_OK);
	assert_int_equal(link_replay_add(r, keys[2], 20.0), ST_OK);
	assert_int_equal(link_replay_add(r, keys[3], 30.0), ST_EFULL);
	assert_int_equal(link_replay_count(r), 3);
	/* A replay is still a replay when full. */
	assert_int_equal(link_replay_add(r, keys[1], 30.0), ST_EEXIST);
	assert_int_equal(link_replay_add(r, keys[3], 179.9), ST_EFULL);
	assert_int_equal(link_replay_add(r, keys[3], 180.0), ST_OK); /* keys[0] expired */
	assert_int_equal(link_replay_add(r, keys[4], 185.0), ST_EFULL);
	assert_int_equal(link_replay_add(r, keys[0], 190.0), ST_OK); /* keys[1] expired at 190 */
	assert_int_equal(link_replay_add(r, keys[0], 191.0), ST_EEXIST);
	/* A clock that steps back expires nothing. */
	assert_int_equal(link_replay_add(r, keys[5], 1.0), ST_EFULL);
	/* Much later, everything is gone. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(link_replay_add(r, keys[i], 1000.0), ST_OK);
	assert_int_equal(link_replay_count(r), 3);
	link_replay_free(r);
}

/* Many keys through a small table: chains, ring wrap-around and expiry stay consistent. */
static void test_replay_churn(void **state)
{
	enum { CAP = 64, KEYS = 4096 };
	static uint8_t keys[KEYS][32];
	struct link_replay *r;

	(void)state;
	assert_int_equal(link_replay_new(CAP, &r), ST_OK);
	for (int i = 0; i < KEYS; i++)
		rng_fill(keys[i], 32);
	/* A key every 4 s: 45 live at once (180 / 4), under CAP, while the ring wraps 64 times. */
	for (int i = 0; i < KEYS; i++) {
		double now = (double)i * 4.0;
		int older = i - 44, gone = i - 45;

		assert_int_equal(link_replay_add(r, keys[i], now), ST_OK);
		assert_int_equal(link_replay_add(r, keys[i], now + 1.0), ST_EEXIST);
		if (older >= 0)
			assert_int_equal(link_replay_add(r, keys[older], now + 1.0), ST_EEXIST);
		/* 45 by the clock, plus the few re-added below that are still live. */
		assert_true(link_replay_count(r) <= 45 + 3);
		/* Expired 180 s after it was added: new again (and remembered anew). */
		if (gone >= 0 && i % 16 == 0) {
			assert_int_equal(link_replay_add(r, keys[gone], now + 1.0), ST_OK);
			assert_int_equal(link_replay_add(r, keys[gone], now + 2.0), ST_EEXIST);
		}
	}
	/* Now fill it: the 65th live key is refused. */
	for (int i = 0; i < CAP; i++)
		rng_fill(keys[i], 32);
	for (int i = 0; link_replay_count(r) < CAP; i++)
		assert_int_equal(link_replay_add(r, keys[i], KEYS * 4.0 + 10.0), ST_OK);
	rng_fill(keys[0], 32);
	assert_int_equal(link_replay_add(r, keys[0], KEYS * 4.0 + 10.0), ST_EFULL);
	link_replay_free(r);
}

/* ---- frames ---------------------------------------------------------------------------------- */


static int decode(const uint8_t *p, size_t len, struct link_frame *f)
{
	struct link_frame before;
	int st;

	memset(f, 0x6B, sizeof(*f));
	memcpy(&before, f, sizeof(before));
	st = link_frame_decode(p, len, f);
	if (st != ST_OK)
		assert_memory_equal(f, &before, sizeof(before));
	return st;
}

static void test_frame_builders(void **state)
{
	uint8_t fr[LINK_FRAME_MAX + 8], data[LINK_DATA_MAX + 1];
	uint8_t long_params[LINK_PARAMS_MAX + 1], domain[1 + 1 + 255 + 2];
	struct link_frame f;
	size_t n;

	(void)state;
	/* CONNECT: 544 bytes, whatever the target. */
	n = link_frame_connect(fr, target_name, sizeof(target_name), params, sizeof(params) - 1);
	assert_int_equal(n, LINK_CONNECT_FRAME_LEN);
	assert_int_equal(fr[0], 0x01);
	assert_int_equal((fr[1] << 8) | fr[2], sizeof(target_name) + 1 + sizeof(params) - 1);
	assert_int_equal(decode(fr, n, &f), ST_OK);
	assert_int_equal(f.type, LINK_FRAME_CONNECT);
	assert_int_equal(f.target_len, sizeof(target_name));
	assert_memory_equal(f.target, target_name, sizeof(target_name));
	assert_int_equal(f.params_len, sizeof(params) - 1);
	assert_memory_equal(f.params, params, sizeof(params) - 1);
	assert_int_equal(link_frame_connect(fr, target_v4, sizeof(target_v4), NULL, 0), 544);
	assert_int_equal(decode(fr, 544, &f), ST_OK);
	assert_int_equal(f.params_len, 0);
	/* The largest CONNECT: a 255-byte name and 255 bytes of params. */
	domain[0] = 0x03;
	domain[1] = 255;
	memset(domain + 2, 'a', 255);
	domain[257] = 0x01;
	domain[258] = 0xbb;
	memset(long_params, 'p', sizeof(long_params));
	assert_int_equal(link_frame_connect(fr, domain, sizeof(domain), long_params, 255), 544);
	assert_int_equal(decode(fr, 544, &f), ST_OK);
	assert_int_equal(f.params_len, 255);
	memset(fr, 0xAB, sizeof(fr));
	assert_int_equal(link_frame_connect(fr, domain, sizeof(domain), long_params, 256), 0);
	assert_int_equal(link_frame_connect(fr, target_v4, sizeof(target_v4) - 1, NULL, 0), 0);
	assert_int_equal(link_frame_connect(fr, target_v4, sizeof(target_v4) + 1, NULL, 0), 0);
	assert_int_equal(fr[0], 0xAB); /* nothing written */

	/* CONNECT_REPLY */
	n = link_frame_connect_reply(fr, sizeof(fr), 0x05, target_v4, sizeof(target_v4));
	assert_int_equal(n, 3 + 1 + sizeof(target_v4));
	assert_int_equal(decode(fr, n, &f), ST_OK);
	assert_int_equal(f.type, LINK_FRAME_CONNECT_REPLY);
	assert_int_equal(f.rep, 0x05);
	assert_memory_equal(f.target, target_v4, sizeof(target_v4));
	assert_int_equal(link_frame_connect_reply(fr, n - 1, 0, target_v4, sizeof(target_v4)), 0);

	/* DATA: 1..16381 bytes, in place too. */
	rng_fill(data, sizeof(data));
	assert_int_equal(link_frame_data(fr, sizeof(fr), data, 0), 0);
	assert_int_equal(link_frame_data(fr, sizeof(fr), data, LINK_DATA_MAX + 1), 0);
	assert_int_equal(link_frame_data(fr, LINK_FRAME_MAX - 1, data, LINK_DATA_MAX), 0);
	n = link_frame_data(fr, sizeof(fr), data, LINK_DATA_MAX);
	assert_int_equal(n, LINK_FRAME_MAX);
	assert_int_equal(decode(fr, n, &f), ST_OK);
	assert_int_equal(f.data_len, LINK_DATA_MAX);
	assert_memory_equal(f.data, data, LINK_DATA_MAX);
	memcpy(fr + 3, "in place", 8);
	assert_int_equal(link_frame_data(fr, sizeof(fr), fr + 3, 8), 11);
	assert_int_equal(decode(fr, 11, &f), ST_OK);
	assert_memory_equal(f.data, "in place", 8);

	/* EOF, RESET, PADDING, REKEY */
	assert_int_equal(link_frame_eof(fr, sizeof(fr)), 3);
	assert_int_equal(decode(fr, 3, &f), ST_OK);
	assert_int_equal(f.type, LINK_FRAME_EOF);
	assert_int_equal(link_frame_reset(fr, sizeof(fr), 0x42), 4);
	assert_int_equal(decode(fr, 4, &f), ST_OK);
	assert_int_equal(f.reason, 0x42);
	assert_int_equal(link_frame_padding(fr, sizeof(fr), 2), 0);
	assert_int_equal(link_frame_padding(fr, sizeof(fr), LINK_FRAME_MAX + 1), 0);
	assert_int_equal(link_frame_padding(fr, sizeof(fr), 1000), 1000);
	assert_int_equal(decode(fr, 1000, &f), ST_OK);
	assert_int_equal(f.type, LINK_FRAME_PADDING);
	assert_int_equal(link_frame_rekey(fr, 2), 0);
	assert_int_equal(link_frame_rekey(fr, sizeof(fr)), 3);
	assert_int_equal(decode(fr, 3, &f), ST_OK);
	assert_int_equal(f.type, LINK_FRAME_REKEY);
	/* Any frame may carry padding. */
	assert_int_equal(link_frame_write(fr, sizeof(fr), LINK_FRAME_DATA, data, 10, 100), 100);
	assert_int_equal(decode(fr, 100, &f), ST_OK);
	assert_int_equal(f.data_len, 10);
	assert_int_equal(link_frame_write(fr, sizeof(fr), LINK_FRAME_DATA, data, 10, 12), 0);
}

static void test_frame_decode_rules(void **state)
{
	uint8_t fr[LINK_FRAME_MAX + 1];
	struct link_frame f;
	size_t n;

	(void)state;
	/* Lengths out of 3..16384. */
	memset(fr, 0, sizeof(fr));
	fr[0] = LINK_FRAME_PADDING;
	assert_int_equal(decode(fr, 2, &f), ST_EPROTO);
	assert_int_equal(decode(fr, LINK_FRAME_MAX + 1, &f), ST_EPROTO);
	assert_int_equal(decode(fr, LINK_FRAME_MAX, &f), ST_OK);

	/* Unknown types. */
	for (unsigned t = 0; t < 256; t++) {
		memset(fr, 0, 16);
		fr[0] = (uint8_t)t;
		fr[2] = 1;
		fr[3] = 1;
		/* One byte of data: right for DATA, RESET and PADDING only. */
		assert_int_equal(decode(fr, 4, &f),
				 t == LINK_FRAME_DATA || t == LINK_FRAME_RESET || t == LINK_FRAME_PADDING
					 ? ST_OK
					 : ST_EPROTO);
	}

	/* data_len past the frame; non-zero padding. */
	n = link_frame_write(fr, sizeof(fr), LINK_FRAME_DATA, (const uint8_t *)"abc", 3, 10);
	assert_int_equal(decode(fr, n, &f), ST_OK);
	fr[2] = 8;
	assert_int_equal(decode(fr, n, &f), ST_EPROTO);
	fr[2] = 3;
	fr[9] = 1;
	assert_int_equal(decode(fr, n, &f), ST_EPROTO);
	fr[9] = 0;
	assert_int_equal(decode(fr, 6, &f), ST_OK);     /* data_len 3 in a 6-byte frame: no padding */
	assert_int_equal(decode(fr, 5, &f), ST_EPROTO); /* data_len 3 in a 5-byte frame */

	/* Data sizes: DATA not empty; EOF and REKEY empty; RESET exactly one byte. */
	assert_int_equal(decode((const uint8_t *)"\x03\x00\x00", 3, &f), ST_EPROTO);
	assert_int_equal(decode((const uint8_t *)"\x04\x00\x01\x00", 4, &f), ST_EPROTO);
	assert_int_equal(decode((const uint8_t *)"\x04\x00\x00\x00", 4, &f), ST_OK);
	assert_int_equal(decode((const uint8_t *)"\x07\x00\x01\x00", 4, &f), ST_EPROTO);
	assert_int_equal(decode((const uint8_t *)"\x05\x00\x00", 3, &f), ST_EPROTO);
	assert_int_equal(decode((const uint8_t *)"\x05\x00\x02\x01\x02", 5, &f), ST_EPROTO);
	assert_int_equal(decode((const uint8_t *)"\x06\x00\x02\x01\x02", 5, &f), ST_OK);

	/* CONNECT: exactly 544 bytes ... */
	n = link_frame_connect(fr, target_v4, sizeof(target_v4), params, 4);
	assert_int_equal(decode(fr, n, &f), ST_OK);
	assert_int_equal(decode(fr, n - 1, &f), ST_EPROTO);
	assert_int_equal(decode(fr, n + 1, &f), ST_EPROTO);
	/* ... an ATYP of 1, 3 or 4 ... */
	for (unsigned a = 0; a < 256; a++) {
		n = link_frame_connect(fr, target_v4, sizeof(target_v4), NULL, 0);
		fr[3] = (uint8_t)a;
		if (a != 0x01)
			assert_int_equal(decode(fr, n, &f), ST_EPROTO);
	}
	/* ... a data_len that is exactly the target, params_len and params ... */
	n = link_frame_connect(fr, target_v4, sizeof(target_v4), params, 4);
	fr[2]++;
	assert_int_equal(decode(fr, n, &f), ST_EPROTO); /* a (zero) byte after the params */
	fr[2]--;
	fr[3 + sizeof(target_v4)] = 5;
	assert_int_equal(decode(fr, n, &f), ST_EPROTO); /* params_len beyond data_len */
	n = link_frame_connect(fr, target_v4, sizeof(target_v4), NULL, 0);
	fr[2] = sizeof(target_v4);
	assert_int_equal(decode(fr, n, &f), ST_EPROTO); /* no params_len byte */
	/* ... and a domain of 1..255 bytes with no NUL. */
	n = link_frame_connect(fr, target_name, sizeof(target_name), NULL, 0);
	fr[3 + 2 + 3] = 0;
	assert_int_equal(decode(fr, n, &f), ST_EPROTO);
	n = link_frame_connect(fr, target_name, sizeof(target_name), NULL, 0);
	fr[4] = 0;
	assert_int_equal(decode(fr, n, &f), ST_EPROTO);

	/* CONNECT_REPLY: REP and a target, nothing else. */
	n = link_frame_connect_reply(fr, sizeof(fr), 0, target_v4, sizeof(target_v4));
	assert_int_equal(decode(fr, n, &f), ST_OK);
	fr[n] = 0;
	assert_int_equal(decode(fr, n + 1, &f), ST_OK); /* padding is fine */
	fr[2]++;
	assert_int_equal(decode(fr, n + 1, &f), ST_EPROTO); /* a byte after BND.PORT is not */
	assert_int_equal(decode((const uint8_t *)"\x02\x00\x00", 3, &f), ST_EPROTO);
	assert_int_equal(decode((const uint8_t *)"\x02\x00\x01\x00", 4, &f), ST_EPROTO);
}

/* ---- records --------------------------------------------------------------------------------- */

static uint8_t rec[LINK_RECORD_MAX * 4];
static uint8_t plain[LINK_FRAME_MAX];

/* Seal and open one frame from a to b; returns the decoded frame. */
static void pass(struct link_session *a, struct link_session *b, const uint8_t *frame, size_t len,
		 struct link_frame *f)
{
	int n = link_record_seal(a, frame, len, rec, sizeof(rec));

	assert_int_equal(n, (int)(len + LINK_RECORD_OVERHEAD));
	assert_int_equal(link_record_open(b, rec, (size_t)n, plain, f), n);
	assert_int_equal(f->len, len);
}

/* A record built around the checks, straight on the send cipher: what a broken peer could send. */
static size_t raw_record(struct noise_cipher *c, uint16_t l, const uint8_t *frame, size_t len,
			 uint8_t *out)
{
	uint8_t hdr[2] = { (uint8_t)(l >> 8), (uint8_t)l };

	assert_int_equal(noise_cipher_encrypt(c, NULL, 0, hdr, 2, out), ST_OK);
	assert_int_equal(noise_cipher_encrypt(c, NULL, 0, frame, len, out + LINK_RECORD_HDR), ST_OK);
	return LINK_RECORD_HDR + len + NOISE_TAG_LEN;
}

static void test_record_every_type(void **state)
{
	struct link_session cs, ss;
	struct link_frame f;
	uint8_t fr[LINK_FRAME_MAX], data[LINK_DATA_MAX];
	size_t n;
	int r;

	(void)state;
	handshake(&cs, &ss);
	rng_fill(data, sizeof(data));

	/* client -> server: CONNECT, DATA of every size class, PADDING, REKEY, EOF, RESET */
	n = link_frame_connect(fr, target_name, sizeof(target_name), params, sizeof(params) - 1);
	pass(&cs, &ss, fr, n, &f);
	assert_int_equal(f.type, LINK_FRAME_CONNECT);
	assert_memory_equal(f.target, target_name, sizeof(target_name));
	assert_memory_equal(f.params, params, sizeof(params) - 1);
	for (size_t len = 1; len <= LINK_DATA_MAX; len = len * 3 + 1) {
		n = link_frame_data(fr, sizeof(fr), data, len);
		pass(&cs, &ss, fr, n, &f);
		assert_int_equal(f.type, LINK_FRAME_DATA);
		assert_int_equal(f.data_len, len);
		assert_memory_equal(f.data, data, len);
	}
	n = link_frame_data(fr, sizeof(fr), data, LINK_DATA_MAX);
	pass(&cs, &ss, fr, n, &f);
	assert_int_equal(f.data_len, LINK_DATA_MAX);
	n = link_frame_padding(fr, sizeof(fr), 700);
	pass(&cs, &ss, fr, n, &f);
	assert_int_equal(f.type, LINK_FRAME_PADDING);

	r = link_record_seal_rekey(&cs, MONO + 1, rec, sizeof(rec));
	assert_int_equal(r, 3 + LINK_RECORD_OVERHEAD);
	assert_int_equal(link_record_open(&ss, rec, (size_t)r, plain, &f), r);
	assert_int_equal(f.type, LINK_FRAME_REKEY);
	n = link_frame_data(fr, sizeof(fr), data, 100);
	pass(&cs, &ss, fr, n, &f); /* both sides moved to the new key */
	assert_memory_equal(f.data, data, 100);

	/* server -> client: CONNECT_REPLY, DATA, PADDING, REKEY, EOF */
	n = link_frame_connect_reply(fr, sizeof(fr), 0x00, target_v4, sizeof(target_v4));
	pass(&ss, &cs, fr, n, &f);
	assert_int_equal(f.type, LINK_FRAME_CONNECT_REPLY);
	assert_int_equal(f.rep, 0);
	assert_memory_equal(f.target, target_v4, sizeof(target_v4));
	n = link_frame_data(fr, sizeof(fr), data, 5000);
	pass(&ss, &cs, fr, n, &f);
	assert_memory_equal(f.data, data, 5000);
	n = link_frame_padding(fr, sizeof(fr), 3);
	pass(&ss, &cs, fr, n, &f);
	r = link_record_seal_rekey(&ss, MONO + 2, rec, sizeof(rec));
	assert_int_equal(link_record_open(&cs, rec, (size_t)r, plain, &f), r);
	n = link_frame_eof(fr, sizeof(fr));
	pass(&ss, &cs, fr, n, &f);
	assert_int_equal(f.type, LINK_FRAME_EOF);
	/* After its EOF the server may still pad and rekey, and the client still send DATA. */
	n = link_frame_padding(fr, sizeof(fr), 50);
	pass(&ss, &cs, fr, n, &f);
	n = link_frame_data(fr, sizeof(fr), data, 10);
	pass(&cs, &ss, fr, n, &f);

	n = link_frame_eof(fr, sizeof(fr));
	pass(&cs, &ss, fr, n, &f);
	assert_int_equal(f.type, LINK_FRAME_EOF);
	n = link_frame_reset(fr, sizeof(fr), 7);
	pass(&cs, &ss, fr, n, &f);
	assert_int_equal(f.type, LINK_FRAME_RESET);
	assert_int_equal(f.reason, 7);
	n = link_frame_reset(fr, sizeof(fr), 9);
	pass(&ss, &cs, fr, n, &f);
	assert_int_equal(f.reason, 9);
	assert_true(cs.send_records == ss.recv_records && ss.send_records == cs.recv_records);
	link_session_wipe(&cs);
	link_session_wipe(&ss);
}

/* Records sealed and opened in place: the relay's zero-copy path. */
static void test_record_in_place(void **state)
{
	struct link_session cs, ss;
	struct link_frame f;
	size_t n;
	int r;

	(void)state;
	handshake(&cs, &ss);
	n = link_frame_connect(rec + LINK_RECORD_HDR, target_v4, sizeof(target_v4), NULL, 0);
	r = link_record_seal(&cs, rec + LINK_RECORD_HDR, n, rec, sizeof(rec));
	assert_int_equal(link_record_open(&ss, rec, (size_t)r, rec + LINK_RECORD_HDR, &f), r);
	assert_int_equal(f.type, LINK_FRAME_CONNECT);

	/* As a relay reads: straight into the data's place, then frame, seal, send. */
	memcpy(rec + LINK_RECORD_HDR + LINK_FRAME_HDR, "payload bytes", 13);
	n = link_frame_data(rec + LINK_RECORD_HDR, LINK_FRAME_MAX, rec + LINK_RECORD_HDR + 3, 13);
	assert_int_equal(n, 16);
	r = link_record_seal(&cs, rec + LINK_RECORD_HDR, n, rec, sizeof(rec));
	assert_int_equal(r, 16 + LINK_RECORD_OVERHEAD);
	assert_memory_not_equal(rec + LINK_RECORD_HDR + 3, "payload bytes", 13); /* encrypted */
	assert_int_equal(link_record_open(&ss, rec, (size_t)r, rec + LINK_RECORD_HDR, &f), r);
	assert_int_equal(f.data_len, 13);
	assert_memory_equal(f.data, "payload bytes", 13);
	assert_ptr_equal(f.data, rec + LINK_RECORD_HDR + 3);
	link_session_wipe(&cs);
	link_session_wipe(&ss);
}

/* Every truncation of a record is "need more", from a fresh state or after a partial read. */
static void test_record_truncations(void **state)
{
	struct link_session cs, ss, copy, before;
	struct link_frame f;
	uint8_t fr[LINK_FRAME_MAX];
	size_t n, total;
	int r;

	(void)state;
	handshake(&cs, &ss);
	n = link_frame_connect(fr, target_name, sizeof(target_name), params, 3);
	r = link_record_seal(&cs, fr, n, rec, sizeof(rec));
	total = (size_t)r;
	for (size_t cut = 0; cut < total; cut++) {
		memcpy(&copy, &ss, sizeof(copy));
		memset(&f, 0x19, sizeof(f));
		assert_int_equal(link_record_open(&copy, rec, cut, plain, &f), ST_NEED_MORE);
		/* Before the header is whole nothing moves; after it, only the remembered length. */
		if (cut < LINK_RECORD_HDR) {
			assert_memory_equal(&copy, &ss, sizeof(copy));
		} else {
			assert_int_equal(copy.recv_len, n + NOISE_TAG_LEN);
			assert_int_equal(copy.recv.n, ss.recv.n + 1);
		}
		assert_int_equal(link_record_open(&copy, rec, total, plain, &f), r);
		assert_int_equal(f.type, LINK_FRAME_CONNECT);
	}
	/* A byte at a time on one session. */
	memcpy(&before, &ss, sizeof(before));
	for (size_t cut = 0; cut < total; cut++)
		assert_int_equal(link_record_open(&ss, rec, cut, plain, &f), ST_NEED_MORE);
	assert_int_equal(link_record_open(&ss, rec, total + 5, plain, &f), r); /* extra bytes stay */
	assert_int_equal(ss.recv.n, before.recv.n + 2);
	link_session_wipe(&cs);
	link_session_wipe(&ss);
}

/* Any bit flipped anywhere fails: in the header at once (18 bytes suffice), in the body after it. */
static void test_record_tampered(void **state)
{
	struct link_session cs, ss, copy;
	struct link_frame f;
	uint8_t fr[LINK_FRAME_MAX], forged[600];
	size_t n, total;
	int r, st;

	(void)state;
	handshake(&cs, &ss);
	n = link_frame_connect(fr, target_v4, sizeof(target_v4), params, 5);
	r = link_record_seal(&cs, fr, n, rec, sizeof(rec));
	total = (size_t)r;
	assert_true(total <= sizeof(forged));
	for (size_t bit = 0; bit < total * 8; bit++) {
		memcpy(forged, rec, total);
		forged[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		memcpy(&copy, &ss, sizeof(copy));
		if (bit < LINK_RECORD_HDR * 8) {
			st = link_record_open(&copy, forged, LINK_RECORD_HDR, plain, &f);
		} else {
			st = link_record_open(&copy, forged, total, plain, &f);
		}
		assert_int_equal(st, ST_ECRYPTO);
		assert_true(copy.dead);
		/* Dead is dead: the genuine record, or sending, fail too. */
		assert_int_equal(link_record_open(&copy, rec, total, plain, &f), ST_ECRYPTO);
		assert_int_equal(link_record_seal(&copy, fr, n, forged, sizeof(forged)), ST_ECRYPTO);
	}
	assert_int_equal(link_record_open(&ss, rec, total, plain, &f), r);
	link_session_wipe(&cs);
	link_session_wipe(&ss);
}

/* Records out of order, replayed, dropped, or spliced fail: the nonces are implicit. */
static void test_record_reordered(void **state)
{
	struct link_session cs, ss, copy;
	struct link_frame f;
	uint8_t fr[LINK_FRAME_MAX], *r2, *r3, *mix;
	size_t n, len1, len;
	int r;

	(void)state;
	handshake(&cs, &ss);
	n = link_frame_connect(fr, target_v4, sizeof(target_v4), NULL, 0);
	r = link_record_seal(&cs, fr, n, rec, sizeof(rec));
	len1 = (size_t)r;
	/* Two records of the same length after it. */
	r2 = rec + LINK_RECORD_MAX;
	r3 = rec + 2 * LINK_RECORD_MAX;
	mix = rec + 3 * LINK_RECORD_MAX;
	n = link_frame_data(fr, sizeof(fr), (const uint8_t *)"two", 3);
	len = (size_t)link_record_seal(&cs, fr, n, r2, LINK_RECORD_MAX);
	n = link_frame_data(fr, sizeof(fr), (const uint8_t *)"six", 3);
	assert_int_equal(link_record_seal(&cs, fr, n, r3, LINK_RECORD_MAX), (int)len);

	/* The second before the first. */
	memcpy(&copy, &ss, sizeof(copy));
	assert_int_equal(link_record_open(&copy, r2, len, plain, &f), ST_ECRYPTO);
	assert_int_equal(link_record_open(&ss, rec, len1, plain, &f), (int)len1);
	/* The first again (a replay). */
	memcpy(&copy, &ss, sizeof(copy));
	assert_int_equal(link_record_open(&copy, rec, len1, plain, &f), ST_ECRYPTO);
	/* The third before the second (one dropped). */
	memcpy(&copy, &ss, sizeof(copy));
	assert_int_equal(link_record_open(&copy, r3, len, plain, &f), ST_ECRYPTO);
	/* The second's header on the third's body: the header opens, the body does not. */
	memcpy(mix, r2, LINK_RECORD_HDR);
	memcpy(mix + LINK_RECORD_HDR, r3 + LINK_RECORD_HDR, len - LINK_RECORD_HDR);
	memcpy(&copy, &ss, sizeof(copy));
	assert_int_equal(link_record_open(&copy, mix, LINK_RECORD_HDR, plain, &f), ST_NEED_MORE);
	assert_int_equal(link_record_open(&copy, mix, len, plain, &f), ST_ECRYPTO);
	/* In order, all open. */
	assert_int_equal(link_record_open(&ss, r2, len, plain, &f), (int)len);
	assert_memory_equal(f.data, "two", 3);
	assert_int_equal(link_record_open(&ss, r3, len, plain, &f), (int)len);
	assert_memory_equal(f.data, "six", 3);
	link_session_wipe(&cs);
	link_session_wipe(&ss);
}

/* An authentic header with L out of 19..16400 fails as soon as the header is in. */
static void test_record_length_range(void **state)
{
	static const uint16_t bad[] = { 0, 1, 16, 18, LINK_RECORD_LEN_MAX + 1, 0xffff };
	struct link_session cs, ss, copy;
	struct link_frame f;
	uint8_t fr[4] = { LINK_FRAME_CONNECT, 0, 0, 0 };

	(void)state;
	handshake(&cs, &ss);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct noise_cipher c;

		memcpy(&c, &cs.send, sizeof(c));
		memcpy(&copy, &ss, sizeof(copy));
		raw_record(&c, bad[i], fr, 3, rec);
		assert_int_equal(link_record_open(&copy, rec, LINK_RECORD_HDR, plain, &f), ST_EPROTO);
		assert_true(copy.dead);
	}
	/* A header that does not match its body's real length fails at the body. */
	{
		struct noise_cipher c;
		size_t len;

		memcpy(&c, &cs.send, sizeof(c));
		memcpy(&copy, &ss, sizeof(copy));
		len = raw_record(&c, 3 + 16 + 1, fr, 3, rec);
		rec[len] = 0;
		assert_int_equal(link_record_open(&copy, rec, len, plain, &f), ST_NEED_MORE);
		assert_int_equal(link_record_open(&copy, rec, len + 1, plain, &f), ST_ECRYPTO);
	}
	/* The bounds themselves are fine: a smallest record (a bare frame header). */
	{
		struct noise_cipher c;
		uint8_t pad[LINK_FRAME_MAX];
		size_t len;

		memset(pad, 0, sizeof(pad));
		pad[0] = LINK_FRAME_CONNECT;
		memcpy(&c, &cs.send, sizeof(c));
		memcpy(&copy, &ss, sizeof(copy));
		len = raw_record(&c, LINK_RECORD_LEN_MIN, pad, 3, rec);
		/* 19 is in range; this CONNECT is then refused for its size, not its length. */
		assert_int_equal(link_record_open(&copy, rec, LINK_RECORD_HDR, plain, &f), ST_NEED_MORE);
		assert_int_equal(link_record_open(&copy, rec, len, plain, &f), ST_EPROTO);
	}
	link_session_wipe(&cs);
	link_session_wipe(&ss);
}

/* The order rules, both when a peer breaks them (open) and when our caller tries to (seal). */
static void test_record_sequence(void **state)
{
	struct link_session cs, ss, copy, before;
	struct link_frame f;
	uint8_t connect[LINK_CONNECT_FRAME_LEN], reply[32], data[8], eof[3], pad[3], rst[4];
	size_t nc, nr, nd;
	struct noise_cipher c;
	size_t len;

	(void)state;
	nc = link_frame_connect(connect, target_v4, sizeof(target_v4), NULL, 0);
	nr = link_frame_connect_reply(reply, sizeof(reply), 0, target_v4, sizeof(target_v4));
	nd = link_frame_data(data, sizeof(data), (const uint8_t *)"d", 1);
	assert_int_equal(link_frame_eof(eof, sizeof(eof)), 3);
	assert_int_equal(link_frame_padding(pad, sizeof(pad), 3), 3);
	assert_int_equal(link_frame_reset(rst, sizeof(rst), 1), 4);
	handshake(&cs, &ss);

#define REFUSED_SEAL(s, fr, n)                                                               \
	do {                                                                                 \
		memcpy(&before, (s), sizeof(before));                                        \
		assert_int_equal(link_record_seal((s), (fr), (n), rec, sizeof(rec)), ST_EINVAL); \
		assert_memory_equal(&before, (s), sizeof(before));                           \
	} while (0)
#define REFUSED_OPEN(from, to, fr, n)                                                        \
	do {                                                                                 \
		memcpy(&c, &(from)->send, sizeof(c));                                        \
		memcpy(&copy, (to), sizeof(copy));                                           \
		len = raw_record(&c, (uint16_t)((n) + NOISE_TAG_LEN), (fr), (n), rec);       \
		assert_int_equal(link_record_open(&copy, rec, len, plain, &f), ST_EPROTO);   \
	} while (0)

	/* The client's first record is CONNECT: nothing else before it, not even PADDING. */
	REFUSED_SEAL(&cs, data, nd);
	REFUSED_SEAL(&cs, pad, 3);
	REFUSED_SEAL(&cs, rst, 4);
	REFUSED_OPEN(&cs, &ss, data, nd);
	REFUSED_OPEN(&cs, &ss, pad, 3);
	/* CONNECT_REPLY is not the client's; CONNECT is not the server's. */
	REFUSED_SEAL(&cs, reply, nr);
	REFUSED_OPEN(&cs, &ss, reply, nr);
	REFUSED_SEAL(&ss, connect, nc);
	REFUSED_OPEN(&ss, &cs, connect, nc);
	/* The server sends no DATA or EOF before CONNECT_REPLY (but may pad). */
	REFUSED_SEAL(&ss, data, nd);
	REFUSED_SEAL(&ss, eof, 3);
	REFUSED_OPEN(&ss, &cs, data, nd);
	REFUSED_OPEN(&ss, &cs, eof, 3);
	pass(&ss, &cs, pad, 3, &f);

	pass(&cs, &ss, connect, nc, &f);
	/* CONNECT exactly once. */
	REFUSED_SEAL(&cs, connect, nc);
	REFUSED_OPEN(&cs, &ss, connect, nc);
	pass(&ss, &cs, reply, nr, &f);
	/* CONNECT_REPLY at most once. */
	REFUSED_SEAL(&ss, reply, nr);
	REFUSED_OPEN(&ss, &cs, reply, nr);
	/* REKEY only through link_record_seal_rekey (it must change the key). */
	{
		uint8_t rk[3];

		assert_int_equal(link_frame_rekey(rk, sizeof(rk)), 3);
		REFUSED_SEAL(&cs, rk, 3);
	}
	/* Half-close: after EOF no DATA and no second EOF, either way. */
	pass(&cs, &ss, data, nd, &f);
	pass(&cs, &ss, eof, 3, &f);
	REFUSED_SEAL(&cs, data, nd);
	REFUSED_SEAL(&cs, eof, 3);
	REFUSED_OPEN(&cs, &ss, data, nd);
	REFUSED_OPEN(&cs, &ss, eof, 3);
	pass(&cs, &ss, pad, 3, &f);
	/* Nothing after RESET. */
	pass(&ss, &cs, rst, 4, &f);
	REFUSED_SEAL(&ss, pad, 3);
	REFUSED_SEAL(&ss, rst, 4);
	REFUSED_OPEN(&ss, &cs, pad, 3);
	REFUSED_OPEN(&ss, &cs, rst, 4);
	/* A frame that does not decode is not sealed. */
	REFUSED_SEAL(&cs, (const uint8_t *)"\x08\x00\x00", 3);
	REFUSED_SEAL(&cs, data, 2);
#undef REFUSED_SEAL
#undef REFUSED_OPEN
	link_session_wipe(&cs);
	link_session_wipe(&ss);
}

/* REKEY: after 2^20 records or 120 s of traffic; the key changes, n does not, both sides follow. */
static void test_record_rekey(void **state)
{
	struct link_session cs, ss;
	struct link_frame f;
	uint8_t fr[LINK_CONNECT_FRAME_LEN], old[32];
	size_t n;
	uint64_t nonce;
	int r;

	(void)state;
	handshake(&cs, &ss);
	assert_false(link_rekey_due(&cs, MONO + 1000)); /* idle: nothing to protect */
	n = link_frame_connect(fr, target_v4, sizeof(target_v4), NULL, 0);
	pass(&cs, &ss, fr, n, &f);
	assert_int_equal(cs.send_epoch_records, 1);
	assert_false(link_rekey_due(&cs, MONO + LINK_REKEY_SECONDS - 0.5));
	assert_true(link_rekey_due(&cs, MONO + LINK_REKEY_SECONDS));

	memcpy(old, cs.send.k, 32);
	nonce = cs.send.n;
	r = link_record_seal_rekey(&cs, MONO + 130, rec, sizeof(rec));
	assert_true(r > 0);
	assert_memory_not_equal(old, cs.send.k, 32);
	assert_int_equal(cs.send.n, nonce + 2);
	assert_int_equal(cs.send_epoch_records, 0);
	assert_false(link_rekey_due(&cs, MONO + 200));
	/* Before the receiver reads the REKEY it still has the old key; after, the new one. */
	assert_memory_equal(ss.recv.k, old, 32);
	assert_int_equal(link_record_open(&ss, rec, (size_t)r, plain, &f), r);
	assert_int_equal(f.type, LINK_FRAME_REKEY);
	assert_memory_equal(ss.recv.k, cs.send.k, 32);

	/* The record count. */
	cs.send_epoch_records = LINK_REKEY_RECORDS - 1;
	assert_false(link_rekey_due(&cs, MONO + 131));
	n = link_frame_padding(fr, sizeof(fr), 3);
	pass(&cs, &ss, fr, n, &f);
	assert_true(link_rekey_due(&cs, MONO + 131));

	/* Many rekeys in a row, both directions, records still flowing. */
	n = link_frame_connect_reply(fr, sizeof(fr), 0, target_v4, sizeof(target_v4));
	pass(&ss, &cs, fr, n, &f);
	for (int i = 0; i < 20; i++) {
		struct link_session *a = i & 1 ? &ss : &cs, *b = i & 1 ? &cs : &ss;

		r = link_record_seal_rekey(a, MONO + 140 + i, rec, sizeof(rec));
		assert_int_equal(link_record_open(b, rec, (size_t)r, plain, &f), r);
		n = link_frame_data(fr, sizeof(fr), (const uint8_t *)"x", 1);
		pass(a, b, fr, n, &f);
	}
	/* A receiver that missed a REKEY cannot read what follows it. */
	r = link_record_seal_rekey(&cs, MONO + 170, rec, sizeof(rec));
	n = link_frame_data(fr, sizeof(fr), (const uint8_t *)"y", 1);
	r = link_record_seal(&cs, fr, n, rec, sizeof(rec));
	ss.recv.n += 2; /* skip the REKEY record as if it had been read without rekeying */
	assert_int_equal(link_record_open(&ss, rec, (size_t)r, plain, &f), ST_ECRYPTO);
	link_session_wipe(&cs);
	link_session_wipe(&ss);
}

/* Two nonces a record: the last record uses 2^64-3 and 2^64-2; then sealing and opening stop. */
static void test_record_nonce_limit(void **state)
{
	struct link_session cs, ss;
	struct link_frame f;
	uint8_t fr[LINK_CONNECT_FRAME_LEN];
	size_t n;

	(void)state;
	handshake(&cs, &ss);
	n = link_frame_connect(fr, target_v4, sizeof(target_v4), NULL, 0);
	noise_cipher_set_nonce(&cs.send, UINT64_MAX - 2);
	noise_cipher_set_nonce(&ss.recv, UINT64_MAX - 2);
	pass(&cs, &ss, fr, n, &f);
	assert_true(cs.send.n == UINT64_MAX);
	n = link_frame_padding(fr, sizeof(fr), 3);
	assert_int_equal(link_record_seal(&cs, fr, n, rec, sizeof(rec)), ST_ECRYPTO);
	assert_int_equal(link_record_seal_rekey(&cs, MONO, rec, sizeof(rec)), ST_ECRYPTO);
	noise_cipher_set_nonce(&ss.recv, UINT64_MAX - 1);
	memset(rec, 0, LINK_RECORD_HDR);
	assert_int_equal(link_record_open(&ss, rec, LINK_RECORD_HDR, plain, &f), ST_ECRYPTO);
	link_session_wipe(&cs);
	link_session_wipe(&ss);
}

static void test_record_seal_sizes(void **state)
{
	struct link_session cs, ss, before;
	uint8_t fr[LINK_CONNECT_FRAME_LEN];
	size_t n;

	(void)state;
	handshake(&cs, &ss);
	n = link_frame_connect(fr, target_v4, sizeof(target_v4), NULL, 0);
	memcpy(&before, &cs, sizeof(before));
	assert_int_equal(link_record_seal(&cs, fr, n, rec, n + LINK_RECORD_OVERHEAD - 1), ST_ETOOBIG);
	assert_memory_equal(&before, &cs, sizeof(before));
	assert_int_equal(link_record_seal(&cs, fr, n, rec, n + LINK_RECORD_OVERHEAD),
			 (int)(n + LINK_RECORD_OVERHEAD));
	link_session_wipe(&cs);
	link_session_wipe(&ss);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake),
		cmocka_unit_test(test_handshake_manual_layout),
		cmocka_unit_test(test_handshake_p1_fields),
		cmocka_unit_test(test_handshake_random_first),
		cmocka_unit_test(test_handshake_first_bitflip),
		cmocka_unit_test(test_handshake_wrong_psk),
		cmocka_unit_test(test_handshake_wrong_server_key),
		cmocka_unit_test(test_handshake_reply_incremental),
		cmocka_unit_test(test_clock_window),
		cmocka_unit_test(test_first_flight_sizes_vary),
		cmocka_unit_test(test_replay),
		cmocka_unit_test(test_replay_churn),
		cmocka_unit_test(test_frame_builders),
		cmocka_unit_test(test_frame_decode_rules),
		cmocka_unit_test(test_record_every_type),
		cmocka_unit_test(test_record_in_place),
		cmocka_unit_test(test_record_truncations),
		cmocka_unit_test(test_record_tampered),
		cmocka_unit_test(test_record_reordered),
		cmocka_unit_test(test_record_length_range),
		cmocka_unit_test(test_record_sequence),
		cmocka_unit_test(test_record_rekey),
		cmocka_unit_test(test_record_nonce_limit),
		cmocka_unit_test(test_record_seal_sizes),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
