/*
 * tests/fuzz/fuzz_link_first.c - libFuzzer target for the server's first-flight processing
 * (crypto/link.h: link_server_check_mac1, link_server_read_first, then replay cache and reply).
 *
 * Fixed keys and a fixed clock. The first input byte picks how the rest is used:
 *   0  the rest is a first flight as received, whatever it is
 *   1  the same with a valid mac1 written over bytes [112, 128), so it reaches Noise (mac1 is
 *      computable by anyone who knows S_srv.pub)
 *   2  the next 16 bytes are P1's plaintext and the rest is padding: message 1 is encrypted for
 *      real (fixed client keys and ephemeral), so P1's checks and the success path are reached;
 *      on success the server's reply is read back by the client side and the keys compared
 * Checked: the status is one the header allows and agrees with the length and with the mac1 check,
 * a failure leaves the output untouched and the handshake state wiped, a success reports exactly
 * the keys and P1 fields that were sent, and both ends derive the same transport keys.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "crypto/link.h"
#include "crypto/noise.h"
#include "crypto/pwhash.h"

#define NOW 1700000000
#define MONO 1000.0
#define SENTINEL 0xA5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct link_server_key *srv_key;
static uint8_t srv_pub[32], cli_pub[32], mac1_key[32];
static const uint8_t srv_priv[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
				      17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };
static const uint8_t cli_priv[32] = { 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
				      0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e, 0x4f,
				      0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57,
				      0x58, 0x59, 0x5a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f };
static const uint8_t cli_e[32] = { 0x77, 0x01, 0x77, 0x02, 0x77, 0x03, 0x77, 0x04,
				   0x77, 0x05, 0x77, 0x06, 0x77, 0x07, 0x77, 0x08,
				   0x77, 0x09, 0x77, 0x0a, 0x77, 0x0b, 0x77, 0x0c,
				   0x77, 0x0d, 0x77, 0x0e, 0x77, 0x0f, 0x77, 0x10 };
static const uint8_t psk[32] = { 0x99, 0x98, 0x97, 0x96, 0x95, 0x94, 0x93, 0x92,
				 0x91, 0x90, 0x8f, 0x8e, 0x8d, 0x8c, 0x8b, 0x8a,
				 0x89, 0x88, 0x87, 0x86, 0x85, 0x84, 0x83, 0x82,
				 0x81, 0x80, 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x7a };

static void check(int ok)
{
	if (!ok)
		abort();
}

static void init(void)
{
	if (srv_key != NULL)
		return;
	check(pwhash_init() == ST_OK);
	check(link_server_key_new(srv_priv, &srv_key) == ST_OK);
	link_server_key_public(srv_key, srv_pub);
	check(noise_public_key(cli_pub, cli_priv) == ST_OK);
	link_mac1_key(mac1_key, srv_pub);
}

/* The client side of message 1, with fixed keys: LINK.md's layout, built with the Noise API. */
static void client_message1(struct noise_handshake *hs, const uint8_t p1[LINK_P1_LEN],
			    uint8_t out[LINK_FIRST_FIXED])
{
	struct noise_config cfg;
	size_t len = 0;

	memset(&cfg, 0, sizeof(cfg));
	cfg.protocol = LINK_PROTOCOL;
	cfg.initiator = true;
	cfg.prologue = (const uint8_t *)LINK_PROLOGUE;
	cfg.prologue_len = strlen(LINK_PROLOGUE);
	cfg.s = cli_priv;
	cfg.e = cli_e;
	cfg.rs = srv_pub;
	cfg.psks = psk;
	cfg.npsks = 1;
	check(noise_handshake_init(hs, &cfg) == ST_OK);
	check(noise_handshake_write(hs, p1, LINK_P1_LEN, out, LINK_MSG1_LEN, &len) == ST_OK);
	check(len == LINK_MSG1_LEN);
	link_mac1(out + LINK_MSG1_LEN, mac1_key, out);
}

/* Server steps 4-6 after a successful read, and the client's view of the reply. */
static void finish(struct link_server_hs *shs, struct noise_handshake *chs, const struct link_first *f)
{
	struct link_session ss;
	struct link_replay *r;
	struct noise_cipher send, recv;
	uint8_t reply[LINK_REPLY_MAX], p2[LINK_P2_LEN];
	size_t reply_len = 0, plen = 0;

	check(link_replay_new(2, &r) == ST_OK);
	check(link_replay_add(r, f->e_pub, MONO) == ST_OK);
	check(link_replay_add(r, f->e_pub, MONO + 1) == ST_EEXIST);
	link_replay_free(r);

	check(link_server_reply(shs, psk, MONO, reply, &reply_len, &ss) == ST_OK);
	check(reply_len >= LINK_REPLY_FIXED && reply_len <= LINK_REPLY_MAX);
	check(ss.server && ss.send_epoch_start == MONO);
	if (chs == NULL) {
		link_session_wipe(&ss);
		return;
	}
	/* The reply decrypts for the client that sent message 1, and the keys pair up. */
	check(noise_handshake_read(chs, reply, LINK_REPLY_FIXED, p2, sizeof(p2), &plen) == ST_OK);
	check(plen == LINK_P2_LEN);
	check(((size_t)p2[0] << 8 | p2[1]) == reply_len - LINK_REPLY_FIXED && p2[2] == 0 && p2[3] == 0);
	check(noise_handshake_split(chs, &send, &recv) == ST_OK);
	check(memcmp(send.k, ss.recv.k, 32) == 0 && memcmp(recv.k, ss.send.k, 32) == 0);
	noise_cipher_wipe(&send);
	noise_cipher_wipe(&recv);
	link_session_wipe(&ss);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[LINK_FIRST_MAX + 4096];
	struct link_server_hs shs;
	struct noise_handshake chs;
	struct link_first f, before;
	const uint8_t *p1 = NULL;
	size_t len;
	int mode, mac_st, st;

	init();
	if (size < 1)
		return 0;
	mode = data[0] % 3;
	data++;
	size--;

	if (mode == 2) {
		/* P1 as given, encrypted for real; the rest is the padding. */
		if (size < LINK_P1_LEN)
			return 0;
		p1 = data;
		client_message1(&chs, p1, buf);
		len = MIN(size - LINK_P1_LEN, sizeof(buf) - LINK_FIRST_FIXED);
		memcpy(buf + LINK_FIRST_FIXED, data + LINK_P1_LEN, len);
		len += LINK_FIRST_FIXED;
	} else {
		len = MIN(size, sizeof(buf));
		memcpy(buf, data, len);
		if (mode == 1 && len >= LINK_FIRST_FIXED)
			link_mac1(buf + LINK_MSG1_LEN, mac1_key, buf);
	}

	mac_st = link_server_check_mac1(srv_key, buf, len);
	check((len < LINK_FIRST_FIXED) == (mac_st == ST_NEED_MORE));
	check(mac_st == ST_OK || mac_st == ST_NEED_MORE || mac_st == ST_ECRYPTO);

	memset(&shs, SENTINEL, sizeof(shs));
	memset(&f, SENTINEL, sizeof(f));
	memcpy(&before, &f, sizeof(f));
	st = link_server_read_first(&shs, srv_key, buf, len, &f);
	if (st != LINK_FIRST_FIXED) {
		check(st == ST_NEED_MORE || st == ST_ECRYPTO);
		check(st == ST_NEED_MORE ? len < LINK_FIRST_FIXED : len >= LINK_FIRST_FIXED);
		check(memcmp(&f, &before, sizeof(f)) == 0);
		check(noise_handshake_action(&shs.noise) == NOISE_ACTION_NONE);
		/* Only P1's own checks may refuse a genuine message 1. */
		if (mode == 2)
			check(((size_t)p1[8] << 8 | p1[9]) > LINK_PAD_MAX || p1[10] || p1[11] ||
			      p1[12] || p1[13] || p1[14] || p1[15]);
		/* A server reply out of a failed read is refused. */
		{
			struct link_session ss;
			uint8_t reply[LINK_REPLY_MAX];
			size_t reply_len = 0;

			check(link_server_reply(&shs, psk, MONO, reply, &reply_len, &ss) == ST_EINVAL);
		}
		if (mode == 2)
			noise_handshake_wipe(&chs);
		return 0;
	}

	/* Accepted: only a valid mac1 and the one client key this server can decrypt to. */
	check(mac_st == ST_OK);
	check(memcmp(f.client_pub, cli_pub, 32) == 0);
	check(memcmp(f.e_pub, buf, 32) == 0);
	check(f.pad_len <= LINK_PAD_MAX);
	check(noise_handshake_action(&shs.noise) == NOISE_ACTION_WRITE);
	if (mode == 2) {
		uint64_t ts = 0;

		for (int i = 0; i < 8; i++)
			ts = ts << 8 | p1[i];
		check(f.timestamp == ts && f.pad_len == ((size_t)p1[8] << 8 | p1[9]));
		check(link_clock_ok(f.timestamp, NOW) == (ts >= NOW - 60 && ts <= NOW + 60));
	}
	finish(&shs, mode == 2 ? &chs : NULL, &f);
	if (mode == 2)
		noise_handshake_wipe(&chs);
	return 0;
}
