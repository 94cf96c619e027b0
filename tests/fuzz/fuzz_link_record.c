/*
 * tests/fuzz/fuzz_link_record.c - libFuzzer target for the record opener and the frame decoder
 * (crypto/link.h: link_record_open, link_frame_decode, and link_record_seal as their mirror).
 *
 * Fixed transport keys, one session per side. The first byte picks the direction (client to server
 * or back) and one of three uses of the rest:
 *   0  bytes as received from the network, opened record after record in fuzzer-chosen pieces
 *   1  a sequence of frames, each [cut u8][len u16 BE][len bytes]: sealed by the sending session
 *      when its checks allow, else encrypted raw as a broken peer would; then opened
 *   2  [L u16 BE][frame]: a record whose authentic header claims any length L
 * Checked: statuses are those the header allows; NEED_MORE for every piece short of a record;
 * the opener accepts a well-encrypted frame exactly when the sealer would have sealed it (the rules
 * agree on both sides), and then returns the very bytes sealed; after an error the session is dead.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "crypto/link.h"
#include "crypto/noise.h"
#include "crypto/pwhash.h"

#define MONO 1000.0

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct link_session base[2]; /* [0] the client's, [1] the server's */
static uint8_t rec[LINK_RECORD_MAX + 64];
static uint8_t plain[LINK_FRAME_MAX];
static uint8_t frame[LINK_FRAME_MAX + 1];

static void check(int ok)
{
	if (!ok)
		abort();
}

static void init(void)
{
	static int done;
	uint8_t k1[32], k2[32];

	if (done)
		return;
	done = 1;
	check(pwhash_init() == ST_OK);
	for (int i = 0; i < 32; i++) {
		k1[i] = (uint8_t)(0x10 + i);
		k2[i] = (uint8_t)(0xd0 - i);
	}
	/* As Split leaves them: c1 (k1) carries client -> server, c2 (k2) server -> client. */
	memset(base, 0, sizeof(base));
	noise_cipher_init(&base[0].send, k1);
	noise_cipher_init(&base[0].recv, k2);
	noise_cipher_init(&base[1].send, k2);
	noise_cipher_init(&base[1].recv, k1);
	base[1].server = true;
	base[0].send_epoch_start = base[1].send_epoch_start = MONO;
}

/* Encrypt a record around every check: header L, then the frame, on cipher c. */
static size_t raw_record(struct noise_cipher *c, uint16_t l, const uint8_t *fr, size_t len)
{
	uint8_t hdr[2] = { (uint8_t)(l >> 8), (uint8_t)l };

	check(noise_cipher_encrypt(c, NULL, 0, hdr, 2, rec) == ST_OK);
	check(noise_cipher_encrypt(c, NULL, 0, fr, len, rec + LINK_RECORD_HDR) == ST_OK);
	return LINK_RECORD_HDR + len + NOISE_TAG_LEN;
}

/* Open rec[0, total) delivering `cut` bytes first; returns the final status. */
static int open_in_two(struct link_session *rx, size_t total, size_t cut, struct link_frame *f)
{
	int st;

	if (cut < total) {
		st = link_record_open(rx, rec, cut, plain, f);
		/* A valid header is never refused; short of it, or of the body, we wait. */
		if (st != ST_NEED_MORE) {
			check(cut >= LINK_RECORD_HDR && (st == ST_EPROTO || st == ST_ECRYPTO));
			return st;
		}
	}
	st = link_record_open(rx, rec, total, plain, f);
	check(st == (int)total || st == ST_NEED_MORE || st == ST_EPROTO || st == ST_ECRYPTO);
	return st;
}

static void dead_stays_dead(struct link_session *rx)
{
	struct link_frame f;

	check(rx->dead);
	check(link_record_open(rx, rec, sizeof(rec), plain, &f) == ST_ECRYPTO);
}

static void raw_stream(struct link_session *rx, const uint8_t *data, size_t size)
{
	struct link_frame f;
	size_t pos = 0;

	while (pos < size) {
		int st = link_record_open(rx, data + pos, size - pos, plain, &f);

		if (st > 0) {
			check((size_t)st <= size - pos);
			pos += (size_t)st;
			continue;
		}
		check(st == ST_NEED_MORE || st == ST_EPROTO || st == ST_ECRYPTO);
		if (st != ST_NEED_MORE)
			dead_stays_dead(rx);
		break;
	}
}

/* One frame: sealed for real when allowed, else raw; the opener must agree with the sealer. */
static int one_frame(struct link_session *tx, struct link_session *rx, const uint8_t *fr,
		     size_t len, size_t cut)
{
	struct link_frame f, g;
	struct noise_cipher c;
	size_t total;
	int sealed, st;
	bool rekey;

	/* A REKEY is sealed only by link_record_seal_rekey, in its 3-byte form (a padded one is
	 * still a valid frame to receive, but nothing of ours sends it). */
	rekey = len >= LINK_FRAME_HDR && fr[0] == LINK_FRAME_REKEY &&
		link_frame_decode(fr, len, &g) == ST_OK;
	if (rekey) {
		fr = (const uint8_t *)"\x07\x00\x00";
		len = LINK_FRAME_HDR;
	}
	memcpy(&c, &tx->send, sizeof(c));
	if (rekey)
		sealed = link_record_seal_rekey(tx, MONO + 1, rec, sizeof(rec));
	else
		sealed = link_record_seal(tx, fr, len, rec, sizeof(rec));
	if (sealed > 0) {
		total = (size_t)sealed;
		check(total == len + LINK_RECORD_OVERHEAD);
	} else {
		check(sealed == ST_EINVAL);
		check(memcmp(&c, &tx->send, sizeof(c)) == 0); /* a refusal moved nothing */
		if (len > LINK_FRAME_MAX || len < 3)
			return -1; /* no such record can exist */
		total = raw_record(&c, (uint16_t)(len + NOISE_TAG_LEN), fr, len);
	}
	st = open_in_two(rx, total, cut % (total + 1), &f);
	if (sealed > 0) {
		/* Sealed means accepted, with the same bytes. */
		check(st == sealed);
		check(f.len == len && memcmp(plain, fr, len) == 0);
		check(link_frame_decode(fr, len, &g) == ST_OK && g.type == f.type &&
		      g.data_len == f.data_len);
		check(f.data == plain + LINK_FRAME_HDR);
		if (f.type == LINK_FRAME_REKEY)
			check(memcmp(rx->recv.k, tx->send.k, 32) == 0);
		return 0;
	}
	/* Refused by the sealer: refused by the opener, as a protocol error, and dead after. */
	check(st == ST_EPROTO);
	dead_stays_dead(rx);
	return -1;
}

static void frames(struct link_session *tx, struct link_session *rx, const uint8_t *data,
		   size_t size)
{
	size_t pos = 0;

	while (size - pos >= 3) {
		size_t cut = data[pos];
		size_t len = ((size_t)data[pos + 1] << 8 | data[pos + 2]) & 0x7fff;

		pos += 3;
		len = MIN(len, size - pos);
		len = MIN(len, sizeof(frame));
		memcpy(frame, data + pos, len);
		pos += len;
		if (one_frame(tx, rx, frame, len, cut) != 0)
			break;
	}
}

static void header_length(struct link_session *tx, struct link_session *rx, const uint8_t *data,
			  size_t size)
{
	struct link_frame f;
	size_t len, total;
	uint16_t l;
	int st;

	if (size < 2)
		return;
	l = (uint16_t)(data[0] << 8 | data[1]);
	len = MIN(size - 2, (size_t)LINK_FRAME_MAX);
	memcpy(frame, data + 2, len);
	total = raw_record(&tx->send, l, frame, len);

	st = link_record_open(rx, rec, LINK_RECORD_HDR, plain, &f);
	if (l < LINK_RECORD_LEN_MIN || l > LINK_RECORD_LEN_MAX) {
		/* Out of range: refused on the header alone. */
		check(st == ST_EPROTO);
		dead_stays_dead(rx);
		return;
	}
	check(st == ST_NEED_MORE && rx->recv_len == l);
	st = link_record_open(rx, rec, total, plain, &f);
	if ((size_t)l > len + NOISE_TAG_LEN) {
		check(st == ST_NEED_MORE); /* the header promised more than is there */
	} else if ((size_t)l < len + NOISE_TAG_LEN) {
		check(st == ST_ECRYPTO); /* a body cut where the header says: its tag fails */
		dead_stays_dead(rx);
	} else {
		check(st == (int)total || st == ST_EPROTO);
		if (st == ST_EPROTO)
			dead_stays_dead(rx);
		else
			check(link_frame_decode(frame, len, &f) == ST_OK);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct link_session s[2];
	int dir, mode;

	init();
	if (size < 1)
		return 0;
	dir = data[0] & 1;
	mode = (data[0] >> 1) % 3;
	memcpy(s, base, sizeof(s));
	switch (mode) {
	case 0:
		raw_stream(&s[!dir], data + 1, size - 1);
		break;
	case 1:
		frames(&s[dir], &s[!dir], data + 1, size - 1);
		break;
	default:
		header_length(&s[dir], &s[!dir], data + 1, size - 1);
		break;
	}
	link_session_wipe(&s[0]);
	link_session_wipe(&s[1]);
	return 0;
}
