/*
 * crypto/link.c - shroud's encrypted client link, version 1 (LINK.md), on crypto/noise.c.
 *
 * Every wire field is decoded by hand, in wire order, with its LINK.md layout as a comment.
 * Handshake failures carry no detail (ST_ECRYPTO) so that nothing a caller logs or does can tell a
 * random probe from a revoked key. Records authenticate their header on its own, so a forged length
 * is refused after 18 bytes, before the receiver waits for (or buffers) a body.
 */
#include "crypto/link.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

_Static_assert(LINK_KEY_LEN == NOISE_DH_LEN, "link keys are X25519 keys");
_Static_assert(LINK_PSK_LEN == NOISE_PSK_LEN, "one PSK size");
_Static_assert(LINK_MSG1_LEN == 32 + (32 + 16) + (LINK_P1_LEN + 16), "message 1 layout");
_Static_assert(LINK_FIRST_FIXED == LINK_MSG1_LEN + LINK_MAC1_LEN, "first flight layout");
_Static_assert(LINK_REPLY_FIXED == 32 + LINK_P2_LEN + 16, "message 2 layout");
_Static_assert(LINK_RECORD_HDR == 2 + NOISE_TAG_LEN, "record header layout");
_Static_assert(LINK_RECORD_LEN_MIN == LINK_FRAME_HDR + NOISE_TAG_LEN, "smallest record");
_Static_assert(LINK_DATA_MAX == 16381, "LINK.md: DATA is 1..16381 bytes");
_Static_assert(LINK_CONNECT_FRAME_LEN >= LINK_FRAME_HDR + LINK_TARGET_MAX + 1 + LINK_PARAMS_MAX,
	       "the largest CONNECT fits its fixed size");
_Static_assert(LINK_PAD_MAX < 65536, "pad_len is a u16");

#define MAC1_KEY_LEN 32
#define MAC1_LABEL "mac1----"

/* SOCKS5 address types (RFC 1928 §5), as CONNECT carries them; crypto/ may not use socks/. */
#define ATYP_IPV4 0x01
#define ATYP_DOMAIN 0x03
#define ATYP_IPV6 0x04

static uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)(v & 0xff);
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (size_t i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (size_t i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

/* ---- long-term keys -------------------------------------------------------------------------- */

struct link_server_key {
	uint8_t priv[LINK_KEY_LEN];
	uint8_t pub[LINK_KEY_LEN];
	uint8_t mac1_key[MAC1_KEY_LEN];
};

struct link_client_key {
	uint8_t priv[LINK_KEY_LEN];
	uint8_t pub[LINK_KEY_LEN];
	uint8_t server_pub[LINK_KEY_LEN];
	uint8_t psk[LINK_PSK_LEN];
	uint8_t mac1_key[MAC1_KEY_LEN];
};

void link_mac1_key(uint8_t key[static 32], const uint8_t server_pub[static LINK_KEY_LEN])
{
	crypto_generichash_blake2b_state st;

	/* BLAKE2b-256("mac1----" || S_srv.pub), unkeyed */
	crypto_generichash_blake2b_init(&st, NULL, 0, MAC1_KEY_LEN);
	crypto_generichash_blake2b_update(&st, (const uint8_t *)MAC1_LABEL, strlen(MAC1_LABEL));
	crypto_generichash_blake2b_update(&st, server_pub, LINK_KEY_LEN);
	crypto_generichash_blake2b_final(&st, key, MAC1_KEY_LEN);
	sodium_memzero(&st, sizeof(st));
}

void link_mac1(uint8_t mac[static LINK_MAC1_LEN], const uint8_t key[static 32],
	       const uint8_t msg1[static LINK_MSG1_LEN])
{
	/* BLAKE2b-128 keyed with the mac1 key, over bytes [0, 112) */
	crypto_generichash_blake2b(mac, LINK_MAC1_LEN, msg1, LINK_MSG1_LEN, key, MAC1_KEY_LEN);
}

/* sodium_malloc'd storage for a key struct, read-only once filled. */
static void *key_alloc(size_t size)
{
	return sodium_malloc(size);
}

static void key_seal(void *k)
{
	sodium_mprotect_readonly(k);
}

static void key_free(void *k)
{
	/* sodium_free wipes; it needs the pages writable again first. */
	if (k == NULL)
		return;
	sodium_mprotect_readwrite(k);
	sodium_free(k);
}

int link_server_key_new(const uint8_t priv[static LINK_KEY_LEN], struct link_server_key **out)
{
	struct link_server_key *k;

	k = key_alloc(sizeof(*k));
	if (k == NULL)
		return ST_ENOMEM;
	memcpy(k->priv, priv, LINK_KEY_LEN);
	if (noise_public_key(k->pub, k->priv) != ST_OK) {
		key_free(k);
		return ST_ECRYPTO;
	}
	link_mac1_key(k->mac1_key, k->pub);
	key_seal(k);
	*out = k;
	return ST_OK;
}

void link_server_key_free(struct link_server_key *k)
{
	key_free(k);
}

void link_server_key_public(const struct link_server_key *k, uint8_t pub[static LINK_KEY_LEN])
{
	memcpy(pub, k->pub, LINK_KEY_LEN);
}

int link_client_key_new(const uint8_t priv[static LINK_KEY_LEN],
			const uint8_t server_pub[static LINK_KEY_LEN],
			const uint8_t psk[static LINK_PSK_LEN], struct link_client_key **out)
{
	struct link_client_key *k;

	k = key_alloc(sizeof(*k));
	if (k == NULL)
		return ST_ENOMEM;
	memcpy(k->priv, priv, LINK_KEY_LEN);
	if (noise_public_key(k->pub, k->priv) != ST_OK) {
		key_free(k);
		return ST_ECRYPTO;
	}
	memcpy(k->server_pub, server_pub, LINK_KEY_LEN);
	memcpy(k->psk, psk, LINK_PSK_LEN);
	link_mac1_key(k->mac1_key, server_pub);
	key_seal(k);
	*out = k;
	return ST_OK;
}

void link_client_key_free(struct link_client_key *k)
{
	key_free(k);
}

void link_client_key_public(const struct link_client_key *k, uint8_t pub[static LINK_KEY_LEN])
{
	memcpy(pub, k->pub, LINK_KEY_LEN);
}

/* ---- handshake ------------------------------------------------------------------------------- */

enum { HS_NONE = 0, HS_SENT, HS_READ };

/* A Noise HandshakeState for the link, either side. s_pub is the key's public half, derived once
 * when the key was loaded: deriving it again would be one more X25519 per handshake, in 12. */
static int link_noise_init(struct noise_handshake *hs, bool initiator, const uint8_t *s,
			   const uint8_t *s_pub, const uint8_t *rs, const uint8_t *psk)
{
	struct noise_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.protocol = LINK_PROTOCOL;
	cfg.initiator = initiator;
	cfg.prologue = (const uint8_t *)LINK_PROLOGUE;
	cfg.prologue_len = strlen(LINK_PROLOGUE);
	cfg.s = s;
	cfg.s_pub = s_pub;
	cfg.rs = rs;
	cfg.psks = psk;
	cfg.npsks = psk != NULL ? 1 : 0;
	return noise_handshake_init(hs, &cfg);
}

/* pad_len for either handshake message: uniform in 0..LINK_PAD_MAX, no modulo bias. */
static uint16_t pad_len_random(void)
{
	return (uint16_t)randombytes_uniform(LINK_PAD_MAX + 1);
}

static void session_init(struct link_session *ls, bool server, const struct noise_cipher *send,
			 const struct noise_cipher *recv, double mono_now)
{
	memset(ls, 0, sizeof(*ls));
	memcpy(&ls->send, send, sizeof(*send));
	memcpy(&ls->recv, recv, sizeof(*recv));
	ls->server = server;
	ls->send_epoch_start = mono_now;
}

int link_client_first(struct link_client_hs *hs, const struct link_client_key *k, int64_t unix_now,
		      uint8_t out[static LINK_FIRST_MAX], size_t *out_len)
{
	uint8_t p1[LINK_P1_LEN];
	uint8_t msg[LINK_FIRST_FIXED];
	uint16_t pad_len;
	size_t len = 0;
	int st;

	link_client_hs_wipe(hs);
	if (unix_now < 0)
		return ST_EINVAL;
	st = link_noise_init(&hs->noise, true, k->priv, k->pub, k->server_pub, k->psk);
	if (st != ST_OK)
		goto fail;

	/* P1: timestamp u64 BE | pad_len u16 BE | flags u8 (0) | 5 reserved zero bytes */
	pad_len = pad_len_random();
	memset(p1, 0, sizeof(p1));
	put_be64(p1, (uint64_t)unix_now);
	put_be16(p1 + 8, pad_len);

	/* Noise message 1: e, es, s, ss, then enc(P1); 112 bytes at [0, 112) */
	st = noise_handshake_write(&hs->noise, p1, sizeof(p1), msg, LINK_MSG1_LEN, &len);
	if (st != ST_OK || len != LINK_MSG1_LEN) {
		st = ST_ECRYPTO;
		goto fail;
	}
	/* mac1 at [112, 128), then pad_len random bytes */
	link_mac1(msg + LINK_MSG1_LEN, k->mac1_key, msg);
	memcpy(out, msg, LINK_FIRST_FIXED);
	randombytes_buf(out + LINK_FIRST_FIXED, pad_len);
	*out_len = LINK_FIRST_FIXED + (size_t)pad_len;
	hs->phase = HS_SENT;
	sodium_memzero(p1, sizeof(p1));
	return ST_OK;
fail:
	link_client_hs_wipe(hs);
	sodium_memzero(p1, sizeof(p1));
	return st;
}

int link_client_read_reply(struct link_client_hs *hs, const uint8_t *p, size_t len,
			   double mono_now, struct link_session *ls)
{
	uint8_t p2[LINK_P2_LEN];
	size_t plen = 0, total;

	if (hs->phase == HS_SENT) {
		if (len < LINK_REPLY_FIXED)
			return ST_NEED_MORE;
		/* Noise message 2: e, ee, se, psk, then enc(P2); 52 bytes at [0, 52) */
		if (noise_handshake_read(&hs->noise, p, LINK_REPLY_FIXED, p2, sizeof(p2), &plen) !=
			    ST_OK ||
		    plen != LINK_P2_LEN)
			goto fail;
		/* P2: pad_len u16 BE | reserved u16 (zero) */
		hs->reply_pad = get_be16(p2);
		if (hs->reply_pad > LINK_PAD_MAX || get_be16(p2 + 2) != 0)
			goto fail;
		if (noise_handshake_split(&hs->noise, &hs->send, &hs->recv) != ST_OK)
			goto fail;
		noise_handshake_wipe(&hs->noise);
		hs->phase = HS_READ;
	}
	if (hs->phase != HS_READ)
		goto fail;
	/* The padding follows message 2 in the same write; it carries nothing. */
	total = LINK_REPLY_FIXED + (size_t)hs->reply_pad;
	if (len < total)
		return ST_NEED_MORE;
	session_init(ls, false, &hs->send, &hs->recv, mono_now);
	link_client_hs_wipe(hs);
	return (int)total;
fail:
	link_client_hs_wipe(hs);
	sodium_memzero(p2, sizeof(p2));
	return ST_ECRYPTO;
}

void link_client_hs_wipe(struct link_client_hs *hs)
{
	sodium_memzero(hs, sizeof(*hs));
}

int link_server_check_mac1(const struct link_server_key *k, const uint8_t *p, size_t len)
{
	uint8_t mac[LINK_MAC1_LEN];
	int ok;

	if (len < LINK_FIRST_FIXED)
		return ST_NEED_MORE;
	link_mac1(mac, k->mac1_key, p);
	ok = crypto_verify_16(mac, p + LINK_MSG1_LEN) == 0;
	return ok ? ST_OK : ST_ECRYPTO;
}

int link_server_read_first(struct link_server_hs *hs, const struct link_server_key *k,
			   const uint8_t *p, size_t len, struct link_first *out)
{
	struct link_first f;
	uint8_t p1[LINK_P1_LEN];
	size_t plen = 0;
	int st;

	link_server_hs_wipe(hs);
	/* Step 3: mac1, one keyed hash and no DH. */
	st = link_server_check_mac1(k, p, len);
	if (st != ST_OK)
		return st;

	/* Step 4: Noise ReadMessage of [0, 112): e, es, s, ss, then P1. */
	memset(&f, 0, sizeof(f));
	if (link_noise_init(&hs->noise, false, k->priv, k->pub, NULL, NULL) != ST_OK)
		goto fail;
	if (noise_handshake_read(&hs->noise, p, LINK_MSG1_LEN, p1, sizeof(p1), &plen) != ST_OK ||
	    plen != LINK_P1_LEN)
		goto fail;

	/* P1: timestamp u64 BE | pad_len u16 BE | flags u8 (0) | 5 reserved zero bytes */
	f.timestamp = get_be64(p1);
	f.pad_len = get_be16(p1 + 8);
	if (f.pad_len > LINK_PAD_MAX || !sodium_is_zero(p1 + 10, 6))
		goto fail;
	if (noise_handshake_remote_static(&hs->noise, f.client_pub) != ST_OK ||
	    noise_handshake_remote_ephemeral(&hs->noise, f.e_pub) != ST_OK)
		goto fail;
	hs->phase = HS_READ;
	memcpy(out, &f, sizeof(*out));
	sodium_memzero(p1, sizeof(p1));
	return LINK_FIRST_FIXED;
fail:
	link_server_hs_wipe(hs);
	sodium_memzero(p1, sizeof(p1));
	return ST_ECRYPTO;
}

bool link_clock_ok(uint64_t timestamp, int64_t unix_now)
{
	uint64_t now;

	if (unix_now < 0)
		return false;
	now = (uint64_t)unix_now;
	/* |timestamp - now| <= LINK_CLOCK_SKEW, without wrapping either way. */
	return timestamp >= now ? timestamp - now <= LINK_CLOCK_SKEW
				: now - timestamp <= LINK_CLOCK_SKEW;
}

int link_server_reply(struct link_server_hs *hs, const uint8_t psk[static LINK_PSK_LEN],
		      double mono_now, uint8_t out[static LINK_REPLY_MAX], size_t *out_len,
		      struct link_session *ls)
{
	struct noise_cipher send, recv;
	uint8_t p2[LINK_P2_LEN];
	uint8_t msg[LINK_REPLY_FIXED];
	uint16_t pad_len;
	size_t len = 0;
	int st = ST_EINVAL;

	memset(&send, 0, sizeof(send));
	memset(&recv, 0, sizeof(recv));
	if (hs->phase != HS_READ || noise_handshake_action(&hs->noise) != NOISE_ACTION_WRITE)
		goto out;
	if (noise_handshake_add_psk(&hs->noise, psk) != ST_OK)
		goto out;

	/* P2: pad_len u16 BE | reserved u16 (zero) */
	pad_len = pad_len_random();
	put_be16(p2, pad_len);
	put_be16(p2 + 2, 0);

	/* Noise message 2: e, ee, se, psk, then enc(P2); 52 bytes, then pad_len random bytes */
	st = ST_ECRYPTO;
	if (noise_handshake_write(&hs->noise, p2, sizeof(p2), msg, sizeof(msg), &len) != ST_OK ||
	    len != LINK_REPLY_FIXED)
		goto out;
	if (noise_handshake_split(&hs->noise, &send, &recv) != ST_OK)
		goto out;
	memcpy(out, msg, LINK_REPLY_FIXED);
	randombytes_buf(out + LINK_REPLY_FIXED, pad_len);
	*out_len = LINK_REPLY_FIXED + (size_t)pad_len;
	session_init(ls, true, &send, &recv, mono_now);
	st = ST_OK;
out:
	link_server_hs_wipe(hs);
	noise_cipher_wipe(&send);
	noise_cipher_wipe(&recv);
	return st;
}

void link_server_hs_wipe(struct link_server_hs *hs)
{
	sodium_memzero(hs, sizeof(*hs));
}

/* ---- replay cache ---------------------------------------------------------------------------- */

#define REPLAY_CAP_MAX (1u << 24)
#define REPLAY_NIL UINT32_MAX

struct replay_entry {
	uint8_t key[LINK_KEY_LEN];
	double t;      /* mono_now when added */
	uint32_t next; /* next entry of the same bucket, REPLAY_NIL at the end */
};

/*
 * Entries live in a ring in the order they were added, so the oldest is always at head and expiry
 * is a walk from there; each is also on the chain of its bucket, newest first.
 */
struct link_replay {
	struct replay_entry *ring;
	uint32_t *buckets;
	size_t cap, head, count;
	size_t nbuckets; /* a power of two, at least 2 * cap */
	uint8_t hash_key[crypto_shorthash_KEYBYTES];
};

int link_replay_new(size_t capacity, struct link_replay **out)
{
	struct link_replay *r;

	if (capacity == 0 || capacity > REPLAY_CAP_MAX)
		return ST_EINVAL;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return ST_ENOMEM;
	r->cap = capacity;
	r->nbuckets = 1;
	while (r->nbuckets < 2 * capacity)
		r->nbuckets <<= 1;
	r->ring = calloc(capacity, sizeof(*r->ring));
	r->buckets = malloc(r->nbuckets * sizeof(*r->buckets));
	if (r->ring == NULL || r->buckets == NULL) {
		link_replay_free(r);
		return ST_ENOMEM;
	}
	for (size_t i = 0; i < r->nbuckets; i++)
		r->buckets[i] = REPLAY_NIL;
	randombytes_buf(r->hash_key, sizeof(r->hash_key));
	*out = r;
	return ST_OK;
}

void link_replay_free(struct link_replay *r)
{
	if (r == NULL)
		return;
	free(r->ring);
	free(r->buckets);
	free(r);
}

static size_t replay_bucket(const struct link_replay *r, const uint8_t key[static LINK_KEY_LEN])
{
	uint8_t h[crypto_shorthash_BYTES];
	uint64_t v = 0;

	crypto_shorthash(h, key, LINK_KEY_LEN, r->hash_key);
	for (size_t i = 0; i < sizeof(h); i++)
		v = (v << 8) | h[i];
	return (size_t)(v & (r->nbuckets - 1));
}

/* Drop the oldest entry: it is the last of its bucket's chain (chains are newest first). */
static void replay_drop_oldest(struct link_replay *r)
{
	uint32_t idx = (uint32_t)r->head;
	uint32_t *link = &r->buckets[replay_bucket(r, r->ring[idx].key)];

	while (*link != REPLAY_NIL && *link != idx)
		link = &r->ring[*link].next;
	if (*link == idx)
		*link = r->ring[idx].next;
	r->head = (r->head + 1) % r->cap;
	r->count--;
}

int link_replay_add(struct link_replay *r, const uint8_t e_pub[static LINK_KEY_LEN],
		    double mono_now)
{
	size_t b, slot;

	/* Forget what is older than the window; a clock that went back expires nothing. */
	while (r->count > 0 && mono_now - r->ring[r->head].t >= LINK_REPLAY_WINDOW)
		replay_drop_oldest(r);

	b = replay_bucket(r, e_pub);
	for (uint32_t i = r->buckets[b]; i != REPLAY_NIL; i = r->ring[i].next)
		if (memcmp(r->ring[i].key, e_pub, LINK_KEY_LEN) == 0)
			return ST_EEXIST;
	/* Full of live entries: refusing is safe, forgetting one early would open a replay window. */
	if (r->count == r->cap)
		return ST_EFULL;

	slot = (r->head + r->count) % r->cap;
	memcpy(r->ring[slot].key, e_pub, LINK_KEY_LEN);
	r->ring[slot].t = mono_now;
	r->ring[slot].next = r->buckets[b];
	r->buckets[b] = (uint32_t)slot;
	r->count++;
	return ST_OK;
}

size_t link_replay_count(const struct link_replay *r)
{
	return r->count;
}

/* ---- frames ---------------------------------------------------------------------------------- */

/*
 * The length of ATYP ADDR PORT (RFC 1928 §5) at the start of p, or 0 when it is malformed or does
 * not fit in len: ATYP 1 (4 bytes), 4 (16 bytes) or 3 (a length byte, 1..255, then a name without
 * NUL), then a 2-byte port. Only the shape; the caller's socks_parse_target reads the values.
 */
static size_t target_size(const uint8_t *p, size_t len)
{
	size_t alen;

	if (len < 1)
		return 0;
	switch (p[0]) {
	case ATYP_IPV4:
		alen = 4;
		break;
	case ATYP_IPV6:
		alen = 16;
		break;
	case ATYP_DOMAIN:
		if (len < 2 || p[1] == 0)
			return 0;
		alen = 1 + (size_t)p[1];
		if (len < 1 + alen || memchr(p + 2, 0, p[1]) != NULL)
			return 0;
		break;
	default:
		return 0;
	}
	if (len < 1 + alen + 2)
		return 0;
	return 1 + alen + 2;
}

int link_frame_decode(const uint8_t *frame, size_t len, struct link_frame *out)
{
	struct link_frame f;
	size_t t;

	memset(&f, 0, sizeof(f));
	/* type u8 | data_len u16 BE | data | zero padding */
	if (len < LINK_FRAME_HDR || len > LINK_FRAME_MAX)
		return ST_EPROTO;
	f.type = frame[0];
	f.len = len;
	f.data_len = get_be16(frame + 1);
	if (f.data_len > len - LINK_FRAME_HDR)
		return ST_EPROTO;
	f.data = frame + LINK_FRAME_HDR;
	if (!sodium_is_zero(f.data + f.data_len, len - LINK_FRAME_HDR - f.data_len))
		return ST_EPROTO;

	switch (f.type) {
	case LINK_FRAME_CONNECT:
		/* ATYP ADDR PORT | params_len u8 | params, in a frame of exactly 544 bytes */
		if (len != LINK_CONNECT_FRAME_LEN)
			return ST_EPROTO;
		t = target_size(f.data, f.data_len);
		if (t == 0 || f.data_len < t + 1 || f.data_len != t + 1 + (size_t)f.data[t])
			return ST_EPROTO;
		f.target = f.data;
		f.target_len = t;
		f.params = f.data + t + 1;
		f.params_len = f.data[t];
		break;
	case LINK_FRAME_CONNECT_REPLY:
		/* REP u8 | BND ATYP ADDR PORT */
		if (f.data_len < 1)
			return ST_EPROTO;
		t = target_size(f.data + 1, f.data_len - 1);
		if (t == 0 || f.data_len != 1 + t)
			return ST_EPROTO;
		f.rep = f.data[0];
		f.target = f.data + 1;
		f.target_len = t;
		f.params = f.data + f.data_len;
		break;
	case LINK_FRAME_DATA:
		/* 1..16381 bytes; the upper bound is the frame's */
		if (f.data_len == 0)
			return ST_EPROTO;
		break;
	case LINK_FRAME_EOF:
	case LINK_FRAME_REKEY:
		/* no data */
		if (f.data_len != 0)
			return ST_EPROTO;
		break;
	case LINK_FRAME_RESET:
		/* reason u8 */
		if (f.data_len != 1)
			return ST_EPROTO;
		f.reason = f.data[0];
		break;
	case LINK_FRAME_PADDING:
		/* anything, ignored */
		break;
	default:
		return ST_EPROTO;
	}
	memcpy(out, &f, sizeof(*out));
	return ST_OK;
}

size_t link_frame_write(uint8_t *out, size_t cap, uint8_t type, const uint8_t *data,
			size_t data_len, size_t frame_len)
{
	if (frame_len == 0)
		frame_len = LINK_FRAME_HDR + data_len;
	if (data_len > LINK_DATA_MAX || frame_len < LINK_FRAME_HDR + data_len ||
	    frame_len > LINK_FRAME_MAX || frame_len > cap)
		return 0;
	/* data first: it may already sit at out + 3 (a read() straight into place). */
	if (data_len > 0)
		memmove(out + LINK_FRAME_HDR, data, data_len);
	out[0] = type;
	put_be16(out + 1, (uint16_t)data_len);
	memset(out + LINK_FRAME_HDR + data_len, 0, frame_len - LINK_FRAME_HDR - data_len);
	return frame_len;
}

size_t link_frame_connect(uint8_t out[static LINK_CONNECT_FRAME_LEN], const uint8_t *target,
			  size_t target_len, const uint8_t *params, size_t params_len)
{
	size_t data_len = target_len + 1 + params_len;

	if (target == NULL || target_size(target, target_len) != target_len ||
	    params_len > LINK_PARAMS_MAX || (params_len > 0 && params == NULL))
		return 0;
	/* type | data_len | ATYP ADDR PORT | params_len | params | zeros up to 544 */
	memset(out, 0, LINK_CONNECT_FRAME_LEN);
	out[0] = LINK_FRAME_CONNECT;
	put_be16(out + 1, (uint16_t)data_len);
	memcpy(out + LINK_FRAME_HDR, target, target_len);
	out[LINK_FRAME_HDR + target_len] = (uint8_t)params_len;
	if (params_len > 0)
		memcpy(out + LINK_FRAME_HDR + target_len + 1, params, params_len);
	return LINK_CONNECT_FRAME_LEN;
}

size_t link_frame_connect_reply(uint8_t *out, size_t cap, uint8_t rep, const uint8_t *bnd,
				size_t bnd_len)
{
	size_t frame_len = LINK_FRAME_HDR + 1 + bnd_len;

	if (bnd == NULL || target_size(bnd, bnd_len) != bnd_len || frame_len > cap)
		return 0;
	/* type | data_len | REP | BND ATYP ADDR PORT */
	out[0] = LINK_FRAME_CONNECT_REPLY;
	put_be16(out + 1, (uint16_t)(1 + bnd_len));
	out[LINK_FRAME_HDR] = rep;
	memcpy(out + LINK_FRAME_HDR + 1, bnd, bnd_len);
	return frame_len;
}

size_t link_frame_data(uint8_t *out, size_t cap, const uint8_t *data, size_t len)
{
	if (len == 0 || data == NULL)
		return 0;
	return link_frame_write(out, cap, LINK_FRAME_DATA, data, len, 0);
}

size_t link_frame_eof(uint8_t *out, size_t cap)
{
	return link_frame_write(out, cap, LINK_FRAME_EOF, NULL, 0, 0);
}

size_t link_frame_reset(uint8_t *out, size_t cap, uint8_t reason)
{
	return link_frame_write(out, cap, LINK_FRAME_RESET, &reason, 1, 0);
}

size_t link_frame_padding(uint8_t *out, size_t cap, size_t frame_len)
{
	if (frame_len < LINK_FRAME_HDR)
		return 0;
	return link_frame_write(out, cap, LINK_FRAME_PADDING, NULL, 0, frame_len);
}

size_t link_frame_rekey(uint8_t *out, size_t cap)
{
	return link_frame_write(out, cap, LINK_FRAME_REKEY, NULL, 0, 0);
}

/* ---- records --------------------------------------------------------------------------------- */

/* Sequence state of one direction (struct link_session's send_seq and recv_seq). */
#define SEQ_CONNECT 0x01 /* client stream: CONNECT went first */
#define SEQ_REPLY 0x02	 /* server stream: CONNECT_REPLY went */
#define SEQ_EOF 0x04	 /* EOF went: no DATA or EOF after it */
#define SEQ_RESET 0x08	 /* RESET went: nothing after it */

/*
 * LINK.md's order rules for a stream of frames sent by the client (from_client) or the server:
 * may a frame of `type` come next? ST_OK with the new state in *next, or ST_EPROTO.
 */
static int seq_next(uint8_t seq, bool from_client, uint8_t type, uint8_t *next)
{
	uint8_t n = seq;

	if (seq & SEQ_RESET)
		return ST_EPROTO;
	if (from_client) {
		/* CONNECT: the first record, exactly once; CONNECT_REPLY is the server's. */
		if (!(seq & SEQ_CONNECT)) {
			if (type != LINK_FRAME_CONNECT)
				return ST_EPROTO;
			*next = seq | SEQ_CONNECT;
			return ST_OK;
		}
		if (type == LINK_FRAME_CONNECT || type == LINK_FRAME_CONNECT_REPLY)
			return ST_EPROTO;
	} else {
		/* CONNECT is the client's; CONNECT_REPLY at most once, and before DATA or EOF
		 * (the client cannot hand data to its application before the SOCKS reply). */
		if (type == LINK_FRAME_CONNECT)
			return ST_EPROTO;
		if (type == LINK_FRAME_CONNECT_REPLY) {
			if (seq & SEQ_REPLY)
				return ST_EPROTO;
			*next = seq | SEQ_REPLY;
			return ST_OK;
		}
		if ((type == LINK_FRAME_DATA || type == LINK_FRAME_EOF) && !(seq & SEQ_REPLY))
			return ST_EPROTO;
	}
	/* EOF half-closes: no more DATA, no second EOF. */
	if ((type == LINK_FRAME_DATA || type == LINK_FRAME_EOF) && (seq & SEQ_EOF))
		return ST_EPROTO;
	if (type == LINK_FRAME_EOF)
		n |= SEQ_EOF;
	else if (type == LINK_FRAME_RESET)
		n |= SEQ_RESET;
	*next = n;
	return ST_OK;
}

void link_session_wipe(struct link_session *ls)
{
	sodium_memzero(ls, sizeof(*ls));
}

bool link_rekey_due(const struct link_session *ls, double mono_now)
{
	if (ls->send_epoch_records >= LINK_REKEY_RECORDS)
		return true;
	return ls->send_epoch_records > 0 && mono_now - ls->send_epoch_start >= LINK_REKEY_SECONDS;
}

/* Seal a frame that passed the checks: header (nonce n), then body (nonce n + 1). */
static int seal(struct link_session *ls, const uint8_t *frame, size_t frame_len, uint8_t *out,
		size_t cap, uint8_t seq)
{
	size_t l = frame_len + NOISE_TAG_LEN;
	uint8_t hdr[2];

	if (cap < LINK_RECORD_HDR + l)
		return ST_ETOOBIG;
	/* Two nonces per record, both below the reserved 2^64-1. */
	if (ls->send.n >= NOISE_NONCE_MAX - 1)
		return ST_ECRYPTO;
	/* enc(u16 BE L) at [0, 18); the frame may sit at out + 18, which this does not touch. */
	put_be16(hdr, (uint16_t)l);
	if (noise_cipher_encrypt(&ls->send, NULL, 0, hdr, sizeof(hdr), out) != ST_OK)
		return ST_ECRYPTO; /* not reached: the nonces were checked */
	/* enc(frame) at [18, 18 + L), in place when the frame is already there. */
	if (noise_cipher_encrypt(&ls->send, NULL, 0, frame, frame_len, out + LINK_RECORD_HDR) != ST_OK)
		return ST_ECRYPTO;
	ls->send_seq = seq;
	ls->send_records++;
	return (int)(LINK_RECORD_HDR + l);
}

/* The checks common to both sealing calls: a frame that decodes and may come next from us. */
static int seal_check(const struct link_session *ls, const uint8_t *frame, size_t frame_len,
		      uint8_t *seq)
{
	struct link_frame f;

	if (ls->dead)
		return ST_ECRYPTO;
	if (link_frame_decode(frame, frame_len, &f) != ST_OK)
		return ST_EINVAL;
	if (seq_next(ls->send_seq, !ls->server, f.type, seq) != ST_OK)
		return ST_EINVAL;
	return ST_OK;
}

int link_record_seal(struct link_session *ls, const uint8_t *frame, size_t frame_len, uint8_t *out,
		     size_t cap)
{
	uint8_t seq;
	int st;

	st = seal_check(ls, frame, frame_len, &seq);
	if (st != ST_OK)
		return st;
	/* A REKEY must change the key and start an epoch: link_record_seal_rekey. */
	if (frame[0] == LINK_FRAME_REKEY)
		return ST_EINVAL;
	st = seal(ls, frame, frame_len, out, cap, seq);
	if (st > 0)
		ls->send_epoch_records++;
	return st;
}

int link_record_seal_rekey(struct link_session *ls, double mono_now, uint8_t *out, size_t cap)
{
	uint8_t frame[LINK_FRAME_HDR];
	uint8_t seq;
	int st;

	if (link_frame_rekey(frame, sizeof(frame)) != sizeof(frame))
		return ST_EINVAL;
	st = seal_check(ls, frame, sizeof(frame), &seq);
	if (st != ST_OK)
		return st;
	st = seal(ls, frame, sizeof(frame), out, cap, seq);
	if (st > 0) {
		/* The sender rekeys its send state after this record (REKEY does not reset n). */
		noise_cipher_rekey(&ls->send);
		ls->send_epoch_records = 0;
		ls->send_epoch_start = mono_now;
	}
	return st;
}

int link_record_open(struct link_session *ls, const uint8_t *p, size_t len,
		     uint8_t frame_buf[static LINK_FRAME_MAX], struct link_frame *out)
{
	struct link_frame f;
	uint8_t hdr[2];
	uint8_t seq;
	size_t l, total;
	int st;

	if (ls->dead)
		return ST_ECRYPTO;
	if (ls->recv_len == 0) {
		if (len < LINK_RECORD_HDR)
			return ST_NEED_MORE;
		/* Two nonces per record, both below the reserved 2^64-1. */
		st = ST_ECRYPTO;
		if (ls->recv.n >= NOISE_NONCE_MAX - 1)
			goto dead;
		/* enc(u16 BE L), nonce n: authenticated alone, so a bad length fails right here. */
		if (noise_cipher_decrypt(&ls->recv, NULL, 0, p, LINK_RECORD_HDR, hdr) != ST_OK)
			goto dead;
		l = get_be16(hdr);
		st = ST_EPROTO;
		if (l < LINK_RECORD_LEN_MIN || l > LINK_RECORD_LEN_MAX)
			goto dead;
		ls->recv_len = (uint16_t)l;
	}
	l = ls->recv_len;
	total = LINK_RECORD_HDR + l;
	if (len < total)
		return ST_NEED_MORE;

	/* enc(frame), nonce n + 1 */
	st = ST_ECRYPTO;
	if (noise_cipher_decrypt(&ls->recv, NULL, 0, p + LINK_RECORD_HDR, l, frame_buf) != ST_OK)
		goto dead;
	st = ST_EPROTO;
	if (link_frame_decode(frame_buf, l - NOISE_TAG_LEN, &f) != ST_OK)
		goto dead;
	/* The peer is the client when we are the server. */
	if (seq_next(ls->recv_seq, ls->server, f.type, &seq) != ST_OK)
		goto dead;
	ls->recv_seq = seq;
	ls->recv_len = 0;
	ls->recv_records++;
	/* The receiver rekeys its receive state after reading a REKEY. */
	if (f.type == LINK_FRAME_REKEY)
		noise_cipher_rekey(&ls->recv);
	memcpy(out, &f, sizeof(*out));
	return (int)total;
dead:
	/* No way back after a failure (LINK.md: close at once): forget the receive key. */
	ls->dead = true;
	ls->recv_len = 0;
	noise_cipher_wipe(&ls->recv);
	return st;
}
