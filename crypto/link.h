/*
 * crypto/link.h - the wire layer of shroud's encrypted client link, version 1 (LINK.md).
 *
 * Pure: no sockets, no event loop, no clock reads (time is a parameter: `unix_now` is Unix seconds,
 * for the handshake timestamp; `mono_now` is monotonic seconds, for rekeying and the replay cache),
 * no logging. Randomness (ephemeral keys, padding lengths and bytes) comes from libsodium.
 * pwhash_init (sodium_init) must have run. Only link_*_key_new and link_replay_new allocate.
 *
 * Handshake: Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b (crypto/noise.h), prologue "shroud-link/1".
 * The client knows the server's static key; the server learns the client's from message 1 and
 * looks up its PSK, which is mixed in at the end of message 2.
 *
 * First flight, client -> server, one write (LINK_FIRST_FIXED + pad bytes):
 *   0    32  e.pub                         the client's ephemeral key, in clear
 *   32   48  enc(S_cli.pub)                the client's static key (32) + tag (16)
 *   80   32  enc(P1)                       P1 (16) + tag (16); Noise message 1 ends at 112
 *   112  16  mac1                          BLAKE2b-128 keyed with BLAKE2b-256("mac1----" || S_srv.pub)
 *                                          over bytes [0, 112): random probes fail here, before DH
 *   128  pad random bytes                  pad = P1.pad_len, uniform in 0..LINK_PAD_MAX
 * P1 (16 bytes):
 *   0  8  timestamp  u64 BE, the client's Unix seconds
 *   8  2  pad_len    u16 BE, 0..900: the padding that follows byte 128
 *   10 1  flags      0
 *   11 5  reserved   zero
 *
 * Server reply, server -> client, one write (LINK_REPLY_FIXED + pad bytes):
 *   0    32  e.pub                         the server's ephemeral key
 *   32   20  enc(P2)                       P2 (4) + tag (16); Noise message 2, after ee, se, psk
 *   52   pad random bytes                  pad = P2.pad_len, uniform in 0..LINK_PAD_MAX
 * P2 (4 bytes):
 *   0  2  pad_len    u16 BE, 0..900
 *   2  2  reserved   zero
 *
 * Records after Split, both ways, each direction with its own CipherState:
 *   0   18  enc(L)                         L as u16 BE (2) + tag (16), nonce n
 *   18  L   enc(frame)                     the frame (L - 16 bytes) + tag (16), nonce n + 1
 *   LINK_RECORD_LEN_MIN (19) <= L <= LINK_RECORD_LEN_MAX (16400); empty associated data.
 * Frame (3..LINK_FRAME_MAX bytes, the plaintext of a record):
 *   0  1         type       LINK_FRAME_*
 *   1  2         data_len   u16 BE, at most the frame's length - 3
 *   3  data_len  data       per type, below
 *   .. rest      padding    zero bytes
 * Data per type (direction; c = client, s = server):
 *   CONNECT        c->s  ATYP ADDR PORT (SOCKS5, RFC 1928 §5) | params_len u8 | params; the frame is
 *                        always LINK_CONNECT_FRAME_LEN bytes; the first record, exactly once
 *   CONNECT_REPLY  s->c  REP u8 (SOCKS5 codes) | BND ATYP ADDR PORT; at most once, before any DATA
 *                        or EOF from the server
 *   DATA           both  1..LINK_DATA_MAX bytes
 *   EOF            both  none: half-close (shutdown(SHUT_WR) on the far side); no DATA after it
 *   RESET          both  reason u8: abort both ways; nothing may follow it
 *   PADDING        both  anything, ignored (cover traffic, keepalive)
 *   REKEY          both  none: the sender rekeys its send state after this record, the receiver its
 *                        receive state after reading it
 * Every check above is enforced both when opening (a peer that breaks one is cut off) and when
 * sealing (a caller that breaks one gets ST_EINVAL and nothing is sent).
 */
#ifndef SHROUD_CRYPTO_LINK_H
#define SHROUD_CRYPTO_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/compiler.h"
#include "crypto/noise.h"

#define LINK_PROTOCOL "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b"
#define LINK_PROLOGUE "shroud-link/1" /* 13 bytes, no NUL */

#define LINK_KEY_LEN 32 /* X25519 private and public keys */
#define LINK_PSK_LEN 32

/* ---- handshake sizes and limits -------------------------------------------------------------- */
#define LINK_MSG1_LEN 112	/* Noise message 1: e.pub, enc(S_cli.pub), enc(P1) */
#define LINK_MAC1_LEN 16
#define LINK_FIRST_FIXED 128 /* message 1 and mac1: what the server reads before any decision */
#define LINK_PAD_MAX 900     /* padding after either handshake message, 0..900 bytes */
#define LINK_FIRST_MAX (LINK_FIRST_FIXED + LINK_PAD_MAX)
#define LINK_P1_LEN 16
#define LINK_P2_LEN 4
#define LINK_REPLY_FIXED 52 /* Noise message 2: e.pub, enc(P2) */
#define LINK_REPLY_MAX (LINK_REPLY_FIXED + LINK_PAD_MAX)

#define LINK_CLOCK_SKEW 60	     /* seconds |timestamp - now| may be, server side */
#define LINK_REPLAY_WINDOW 180.0     /* seconds an e.pub is remembered */
#define LINK_HANDSHAKE_TIMEOUT 30.0 /* absolute, after accept, for the first flight */
#define LINK_HANDSHAKE_JITTER 3.0   /* plus up to this much, random per connection */
#define LINK_REPLY_TIMEOUT 10.0     /* the client waits this long for the server's reply */
#define LINK_CONNECT_TIMEOUT 10.0   /* CONNECT must arrive this long after the reply is sent */
#define LINK_TARGET_TIMEOUT 10.0    /* the server's connect to the target */
#define LINK_IDLE_TIMEOUT 300.0
#define LINK_SESSION_MAX 86400.0    /* a session lives at most 24 h */
#define LINK_HOLD_MAX 65536	     /* DATA the server holds before the target connect succeeds */

/* ---- records and frames ---------------------------------------------------------------------- */
#define LINK_RECORD_HDR 18	      /* enc(u16 BE L) */
#define LINK_RECORD_LEN_MIN 19	      /* L: an empty frame header and a tag */
#define LINK_RECORD_LEN_MAX 16400
#define LINK_RECORD_MAX (LINK_RECORD_HDR + LINK_RECORD_LEN_MAX) /* a whole record, 16418 */
#define LINK_RECORD_OVERHEAD (LINK_RECORD_HDR + NOISE_TAG_LEN) /* record length - frame length */
#define LINK_FRAME_HDR 3	      /* type u8 | data_len u16 BE */
#define LINK_FRAME_MAX (LINK_RECORD_LEN_MAX - NOISE_TAG_LEN)   /* 16384 */
#define LINK_DATA_MAX (LINK_FRAME_MAX - LINK_FRAME_HDR)	       /* 16381 */
#define LINK_CONNECT_FRAME_LEN 544
#define LINK_TARGET_MAX (1 + 1 + 255 + 2) /* ATYP, a domain's length byte and name, PORT */
#define LINK_PARAMS_MAX 255
#define LINK_REKEY_RECORDS (UINT64_C(1) << 20) /* rekey after this many records sent ... */
#define LINK_REKEY_SECONDS 120.0		  /* ... or this long after the last rekey */

#define LINK_FRAME_CONNECT 0x01
#define LINK_FRAME_CONNECT_REPLY 0x02
#define LINK_FRAME_DATA 0x03
#define LINK_FRAME_EOF 0x04
#define LINK_FRAME_RESET 0x05
#define LINK_FRAME_PADDING 0x06
#define LINK_FRAME_REKEY 0x07

/* ---- long-term keys -------------------------------------------------------------------------- */

/*
 * The server's static key pair and its mac1 key, in sodium_malloc'd memory that is read-only after
 * loading (guard pages, mlock'd where the system allows, wiped by free). Shared read-only by every
 * worker. ST_OK, ST_ENOMEM, or ST_ECRYPTO when priv gives no public key. The caller wipes priv.
 */
struct link_server_key;
NODISCARD int link_server_key_new(const uint8_t priv[static LINK_KEY_LEN],
				  struct link_server_key **out);
void link_server_key_free(struct link_server_key *k);
void link_server_key_public(const struct link_server_key *k, uint8_t pub[static LINK_KEY_LEN]);

/*
 * A client's key material: its static key pair, the pinned server public key, its PSK and the
 * server's mac1 key; stored as the server key is. ST_OK, ST_ENOMEM, ST_ECRYPTO.
 */
struct link_client_key;
NODISCARD int link_client_key_new(const uint8_t priv[static LINK_KEY_LEN],
				  const uint8_t server_pub[static LINK_KEY_LEN],
				  const uint8_t psk[static LINK_PSK_LEN],
				  struct link_client_key **out);
void link_client_key_free(struct link_client_key *k);
void link_client_key_public(const struct link_client_key *k, uint8_t pub[static LINK_KEY_LEN]);

/* mac1's key, BLAKE2b-256("mac1----" || server_pub), and mac1 itself: BLAKE2b-128 keyed with it
 * over the 112 bytes of message 1. */
void link_mac1_key(uint8_t key[static 32], const uint8_t server_pub[static LINK_KEY_LEN]);
void link_mac1(uint8_t mac[static LINK_MAC1_LEN], const uint8_t key[static 32],
	       const uint8_t msg1[static LINK_MSG1_LEN]);

/* ---- sessions: the transport after Split ----------------------------------------------------- */

/*
 * One side of an established link: the two CipherStates, the rekey bookkeeping and the state of
 * the record opener and of the frame sequence rules. A plain value (the caller embeds it); it holds
 * keys, so link_session_wipe it when the connection ends. Not thread-safe.
 */
struct link_session {
	struct noise_cipher send, recv;
	bool server;		     /* our role: decides which frames each direction may carry */
	uint64_t send_records;	     /* records sealed in all */
	uint64_t send_epoch_records; /* records sealed since the last REKEY sent (or Split) */
	double send_epoch_start;     /* mono_now of the last REKEY sent (or Split) */
	uint64_t recv_records;	     /* records opened in all */
	uint16_t recv_len;	     /* L of a record whose header is open and body awaited; 0: none */
	uint8_t send_seq, recv_seq;  /* internal: frame sequence state per direction */
	bool dead;		     /* a record failed to open: every later call fails */
};

/* Wipe every byte of ls. */
void link_session_wipe(struct link_session *ls);

/*
 * True when the caller should send a REKEY record now (link_record_seal_rekey): LINK_REKEY_RECORDS
 * records went out since the last one, or LINK_REKEY_SECONDS passed since it and a record went out
 * in between (an idle link has nothing to protect with a new key).
 */
bool link_rekey_due(const struct link_session *ls, double mono_now);

/* ---- client handshake ------------------------------------------------------------------------ */

/* A client's handshake in progress: holds ephemeral secrets until it ends. Embed it; wipe it with
 * link_client_hs_wipe if it is abandoned (it wipes itself when it ends, either way). */
struct link_client_hs {
	struct noise_handshake noise;
	struct noise_cipher send, recv; /* Split's output, held until the reply's padding is read */
	uint16_t reply_pad;
	uint8_t phase;
};

/*
 * Build the first flight into out: message 1 with P1 (timestamp unix_now, random pad_len), mac1 and
 * pad_len random bytes; *out_len = LINK_FIRST_FIXED + pad_len. Write it in one write.
 * ST_OK; ST_EINVAL for a negative unix_now; ST_ECRYPTO when the pinned server key is unusable
 * (a low-order point). On failure hs is wiped and out is untouched.
 */
NODISCARD int link_client_first(struct link_client_hs *hs, const struct link_client_key *k,
				int64_t unix_now, uint8_t out[static LINK_FIRST_MAX],
				size_t *out_len);

/*
 * Read the server's reply from p (len bytes: everything received since the first flight, from its
 * first byte; call again with more as it arrives). Returns the bytes the reply took (message 2 and
 * its padding, LINK_REPLY_FIXED..LINK_REPLY_MAX) with ls set up for records, which may follow in
 * the same buffer; ST_NEED_MORE when more is needed (message 2 is decrypted once, as soon as its 52
 * bytes are there; the padding is then only waited for); ST_ECRYPTO when message 2 does not decrypt
 * (the wrong server key, the wrong PSK, an unknown or revoked client key, a forgery) or P2 is
 * malformed. ls is written only on success. On ST_ECRYPTO hs is wiped: the connection is over.
 */
NODISCARD int link_client_read_reply(struct link_client_hs *hs, const uint8_t *p, size_t len,
				     double mono_now, struct link_session *ls);

void link_client_hs_wipe(struct link_client_hs *hs);

/* ---- server handshake ------------------------------------------------------------------------ */

/* The server's handshake between reading message 1 and replying. Embed it; wipe it with
 * link_server_hs_wipe if the connection is dropped in between. */
struct link_server_hs {
	struct noise_handshake noise;
	uint8_t phase;
};

/* What message 1 told the server, for the checks that are the caller's (LINK.md, server step 4-5). */
struct link_first {
	uint8_t client_pub[LINK_KEY_LEN]; /* S_cli.pub: must be on the allowlist and enabled */
	uint8_t e_pub[LINK_KEY_LEN];	  /* the client's ephemeral: link_replay_add's key */
	uint64_t timestamp;		  /* P1's, as sent: check it with link_clock_ok */
	uint16_t pad_len;		  /* 0..LINK_PAD_MAX bytes follow the 128: read and drop them */
};

/*
 * Server step 3 alone, the cheapest check (one keyed hash, no DH): ST_OK when the first
 * LINK_FIRST_FIXED bytes of p carry a valid mac1, ST_NEED_MORE when len is shorter, ST_ECRYPTO
 * otherwise. Constant time in the mac.
 */
NODISCARD int link_server_check_mac1(const struct link_server_key *k, const uint8_t *p, size_t len);

/*
 * Server steps 3-4: mac1 (checked again here, so skipping link_server_check_mac1 skips nothing),
 * then Noise ReadMessage of message 1 and P1's fields (pad_len <= LINK_PAD_MAX, flags and reserved
 * bytes zero). Returns LINK_FIRST_FIXED (the bytes consumed) with *out filled and hs holding the
 * handshake for link_server_reply; ST_NEED_MORE when len < LINK_FIRST_FIXED; ST_ECRYPTO, with no
 * detail, for every failure (hs wiped, *out untouched).
 * The caller then: looks client_pub up (enabled, its PSK), checks link_clock_ok(timestamp), then
 * link_replay_add(e_pub), and drops pad_len bytes; any failure there is silent too (LINK.md).
 */
NODISCARD int link_server_read_first(struct link_server_hs *hs, const struct link_server_key *k,
				     const uint8_t *p, size_t len, struct link_first *out);

/* True when a P1 timestamp is within LINK_CLOCK_SKEW seconds of unix_now, either way. */
bool link_clock_ok(uint64_t timestamp, int64_t unix_now);

/*
 * Server step 6: with the client's PSK, WriteMessage(message 2) with P2 (random pad_len), the
 * padding, and Split. Writes the reply to out (*out_len = LINK_REPLY_FIXED + pad_len: send it in
 * one write) and sets ls up for records. ST_OK; ST_EINVAL when hs did not come from a successful
 * link_server_read_first; ST_ECRYPTO when a DH fails. hs is wiped either way; on failure out and
 * ls are untouched.
 */
NODISCARD int link_server_reply(struct link_server_hs *hs, const uint8_t psk[static LINK_PSK_LEN],
				double mono_now, uint8_t out[static LINK_REPLY_MAX],
				size_t *out_len, struct link_session *ls);

void link_server_hs_wipe(struct link_server_hs *hs);

/* ---- replay cache ---------------------------------------------------------------------------- */

/*
 * The e.pub values of accepted first flights, each remembered for LINK_REPLAY_WINDOW seconds,
 * at most `capacity` at once. Keyed lookups (SipHash with a random key per cache), so a client
 * cannot aim its keys at one chain. Not thread-safe: a replay may arrive at any worker, so a daemon
 * shares one cache behind a lock. Only link_replay_new allocates.
 */
struct link_replay;

/* ST_OK, ST_ENOMEM, or ST_EINVAL for a capacity of 0 or above 2^24. */
NODISCARD int link_replay_new(size_t capacity, struct link_replay **out);
void link_replay_free(struct link_replay *r);

/*
 * Remember e_pub at mono_now, after every other check passed (LINK.md step 5). ST_OK when it was
 * new; ST_EEXIST when it was seen less than LINK_REPLAY_WINDOW seconds ago (a replay); ST_EFULL
 * when the cache holds `capacity` unexpired entries (fail closed: refuse the handshake). Nothing is
 * recorded unless ST_OK.
 */
NODISCARD int link_replay_add(struct link_replay *r, const uint8_t e_pub[static LINK_KEY_LEN],
			      double mono_now);

/* Entries held (expired ones included until the next link_replay_add drops them). */
size_t link_replay_count(const struct link_replay *r);

/* ---- frames ---------------------------------------------------------------------------------- */

/* A decoded frame. Pointers point into the buffer that was decoded. */
struct link_frame {
	uint8_t type;	     /* LINK_FRAME_* */
	size_t len;	     /* the whole frame, padding included */
	const uint8_t *data; /* data_len bytes */
	size_t data_len;
	/* CONNECT: the target (ATYP ADDR PORT, for socks_parse_target) and params (not terminated);
	 * CONNECT_REPLY: target is BND ATYP ADDR PORT, params empty. NULL/0 for other types. */
	const uint8_t *target;
	size_t target_len;
	const uint8_t *params;
	size_t params_len;
	uint8_t rep;	/* CONNECT_REPLY's REP */
	uint8_t reason; /* RESET's reason */
};

/*
 * Decode one frame of exactly len bytes (a record's plaintext), checking every rule of the table
 * above that a frame alone can break: known type, data_len within the frame, zero padding, the
 * layout of each type's data (a target's ATYP is 1, 3 or 4, a domain is 1..255 bytes without NUL,
 * nothing after the data), CONNECT's fixed size. ST_OK, or ST_EPROTO with *out untouched.
 * The address itself is not judged (port 0, internal ranges): that is the caller's policy.
 */
NODISCARD int link_frame_decode(const uint8_t *frame, size_t len, struct link_frame *out);

/*
 * Write a frame: type, data_len, data (data_len bytes; may be exactly out + LINK_FRAME_HDR, so
 * a caller can read() straight into place), zero padding up to frame_len (0: no padding).
 * Returns the frame's length, or 0 (nothing written) when it would not fit in cap or
 * LINK_FRAME_MAX, or data_len exceeds frame_len - 3. The type is not checked here (sealing is).
 */
size_t link_frame_write(uint8_t *out, size_t cap, uint8_t type, const uint8_t *data,
			size_t data_len, size_t frame_len);

/*
 * CONNECT: target (ATYP ADDR PORT as socks_write_target encodes it) and params (the SOCKS
 * username's parameter part, 0..LINK_PARAMS_MAX bytes), padded to LINK_CONNECT_FRAME_LEN.
 * Returns LINK_CONNECT_FRAME_LEN, or 0 (nothing written) for a malformed target or long params.
 */
size_t link_frame_connect(uint8_t out[static LINK_CONNECT_FRAME_LEN], const uint8_t *target,
			  size_t target_len, const uint8_t *params, size_t params_len);

/* CONNECT_REPLY: rep and bnd (BND ATYP ADDR PORT; e.g. socks_write_reply's output from byte 3).
 * Returns the frame's length, or 0 for a malformed bnd or a small cap. */
size_t link_frame_connect_reply(uint8_t *out, size_t cap, uint8_t rep, const uint8_t *bnd,
				size_t bnd_len);

/* DATA (1..LINK_DATA_MAX bytes; data may be exactly out + LINK_FRAME_HDR), EOF, RESET, PADDING
 * (frame_len 3..LINK_FRAME_MAX zero bytes after the header) and REKEY. Each returns the frame's
 * length, or 0 (nothing written) when the arguments are out of range or cap is too small. */
size_t link_frame_data(uint8_t *out, size_t cap, const uint8_t *data, size_t len);
size_t link_frame_eof(uint8_t *out, size_t cap);
size_t link_frame_reset(uint8_t *out, size_t cap, uint8_t reason);
size_t link_frame_padding(uint8_t *out, size_t cap, size_t frame_len);
size_t link_frame_rekey(uint8_t *out, size_t cap);

/* ---- records --------------------------------------------------------------------------------- */

/*
 * Seal one frame into a record at out: enc(L) with nonce n, enc(frame) with nonce n + 1. The frame
 * may sit exactly at out + LINK_RECORD_HDR (built in place); no other overlap. Returns the record's
 * length, frame_len + LINK_RECORD_OVERHEAD; ST_ETOOBIG when cap is smaller; ST_EINVAL (nothing
 * written, nothing moved) when the frame does not decode, may not be sent in our role or at this
 * point of the sequence (e.g. DATA after our EOF), or is a REKEY (use link_record_seal_rekey);
 * ST_ECRYPTO when the nonces are exhausted or the session is dead (it must end).
 */
NODISCARD int link_record_seal(struct link_session *ls, const uint8_t *frame, size_t frame_len,
			       uint8_t *out, size_t cap);

/*
 * Seal a REKEY record (LINK_RECORD_OVERHEAD + 3 bytes) into out, then rekey the send state and
 * start a new rekey epoch at mono_now. Returns the record's length, or as link_record_seal.
 */
NODISCARD int link_record_seal_rekey(struct link_session *ls, double mono_now, uint8_t *out,
				     size_t cap);

/*
 * Open the record at the start of p (len bytes received and not yet consumed), picohttpparser's
 * contract: returns the bytes the record took (LINK_RECORD_HDR + L) with the frame decrypted into
 * frame_buf and decoded into *out (its pointers point into frame_buf); ST_NEED_MORE when the record
 * is not all there yet (call again with the same bytes and more). The header is decrypted as soon
 * as its 18 bytes are there, and a bad one (forged, L out of range) fails at once, without waiting
 * for a body; the session remembers L, and the later call skips the header.
 * frame_buf may be exactly p + LINK_RECORD_HDR (decrypted in place, once the record is complete).
 * Errors: ST_ECRYPTO (a record that does not authenticate: forged, reordered, replayed; or the
 * nonces are exhausted) or ST_EPROTO (L out of range, a frame that breaks a rule of the table
 * above). After any error the session is dead: the receive key is wiped, frame_buf holds nothing
 * meaningful, and every later call (sealing included) fails with ST_ECRYPTO.
 * A REKEY record is returned like any other, after the receive state was rekeyed.
 */
NODISCARD int link_record_open(struct link_session *ls, const uint8_t *p, size_t len,
			       uint8_t frame_buf[static LINK_FRAME_MAX], struct link_frame *out);

#endif
