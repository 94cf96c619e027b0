/*
 * socks/proto.h - the SOCKS5 codec (RFC 1928, RFC 1929): bytes to structs, structs to bytes.
 *
 * Pure: no I/O, no allocation, no logging, no clock. Every parser has the same contract
 * (picohttpparser's):
 *   > 0              the message is complete; that many bytes of the input were consumed
 *   ST_NEED_MORE     the input is a valid prefix of a message: call again with more bytes
 *   other ST_E*      the input can never become a valid message
 * On anything but success the output struct is left exactly as it was.
 * Parsers never read past len and never trust a length byte beyond what is present.
 * The one exception to "need more" is socks_parse_udp_header: a UDP datagram arrives whole, so a
 * short one is malformed (ST_EPROTO), never a prefix.
 */
#ifndef SHROUD_SOCKS_PROTO_H
#define SHROUD_SOCKS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "base/addr.h"
#include "base/compiler.h"

#define SOCKS_VERSION 0x05
#define SOCKS_AUTH_VERSION 0x01 /* RFC 1929 sub-negotiation version */

/* RFC 1928 §3: METHOD values. */
#define SOCKS_METHOD_NONE 0x00
#define SOCKS_METHOD_GSSAPI 0x01
#define SOCKS_METHOD_USERPASS 0x02
#define SOCKS_METHOD_UNACCEPTABLE 0xFF

/* RFC 1928 §4: CMD values. */
#define SOCKS_CMD_CONNECT 0x01
#define SOCKS_CMD_BIND 0x02
#define SOCKS_CMD_UDP_ASSOCIATE 0x03

/* RFC 1928 §4: ATYP values. */
#define SOCKS_ATYP_IPV4 0x01
#define SOCKS_ATYP_DOMAIN 0x03
#define SOCKS_ATYP_IPV6 0x04

/* RFC 1928 §6: REP values. */
#define SOCKS_REP_SUCCEEDED 0x00
#define SOCKS_REP_GENERAL_FAILURE 0x01
#define SOCKS_REP_NOT_ALLOWED 0x02
#define SOCKS_REP_NET_UNREACHABLE 0x03
#define SOCKS_REP_HOST_UNREACHABLE 0x04
#define SOCKS_REP_REFUSED 0x05
#define SOCKS_REP_TTL_EXPIRED 0x06
#define SOCKS_REP_CMD_UNSUPPORTED 0x07
#define SOCKS_REP_ATYP_UNSUPPORTED 0x08

/* RFC 1929 §2: STATUS values. */
#define SOCKS_AUTH_SUCCESS 0x00
#define SOCKS_AUTH_FAILURE 0x01

#define SOCKS_DOMAIN_MAX 255
#define SOCKS_USER_MAX 255
#define SOCKS_PASS_MAX 255

/* Longest encodings, for sizing buffers. */
#define SOCKS_GREETING_MAX (2 + 255)
#define SOCKS_AUTH_MAX (3 + SOCKS_USER_MAX + SOCKS_PASS_MAX)
#define SOCKS_REQUEST_MAX (4 + 1 + SOCKS_DOMAIN_MAX + 2)
#define SOCKS_REPLY_MAX (4 + 16 + 2)
#define SOCKS_UDP_HEADER_MAX (3 + 1 + 1 + SOCKS_DOMAIN_MAX + 2)

/* RFC 1928 §3: VER NMETHODS METHODS. Only the methods this server knows are kept, as flags. */
struct socks_greeting {
	uint8_t nmethods;
	unsigned offers_none : 1;     /* X'00' was offered */
	unsigned offers_userpass : 1; /* X'02' was offered */
};

/* RFC 1929 §2: VER ULEN UNAME PLEN PASSWD. Both strings NUL-terminated; may contain NUL bytes
 * inside (the lengths are authoritative), which callers must treat as a failed login. */
struct socks_auth {
	uint8_t ulen;
	uint8_t plen;
	char user[SOCKS_USER_MAX + 1];
	char pass[SOCKS_PASS_MAX + 1];
};

/* RFC 1928 §4/§5: a destination as it was sent. */
struct socks_target {
	uint8_t atyp; /* SOCKS_ATYP_* */
	union {
		uint8_t ipv4[4];
		uint8_t ipv6[16];
		struct {
			uint8_t len; /* 1..255 */
			char name[SOCKS_DOMAIN_MAX + 1]; /* NUL-terminated */
		} domain;
	} u;
	uint16_t port; /* host order */
};

/* RFC 1928 §4: VER CMD RSV ATYP DST.ADDR DST.PORT. */
struct socks_request {
	uint8_t cmd; /* SOCKS_CMD_* */
	struct socks_target dst;
};

/* RFC 1928 §7: RSV FRAG ATYP DST.ADDR DST.PORT, the header of one UDP datagram (DATA follows). */
struct socks_udp_header {
	uint8_t frag; /* 0 = a whole datagram; fragments are not supported (callers drop them) */
	struct socks_target dst;
};

/*
 * Parse a greeting. ST_EVERSION when VER is not 5; ST_EPROTO when NMETHODS is 0.
 */
NODISCARD int socks_parse_greeting(const uint8_t *p, size_t len, struct socks_greeting *out);

/*
 * Parse RFC 1929 credentials. ST_EVERSION when VER is not 1; ST_EPROTO when ULEN or PLEN is 0.
 * The output holds the password: callers wipe it when done.
 */
NODISCARD int socks_parse_auth(const uint8_t *p, size_t len, struct socks_auth *out);

/*
 * Parse a request. Errors, checked in wire order:
 *   ST_EVERSION    VER is not 5                          (reply REP 0x01)
 *   ST_ECOMMAND    CMD is not 1, 2 or 3                  (reply REP 0x07)
 *   ST_EADDRTYPE   ATYP is not 1, 3 or 4                 (reply REP 0x08)
 *   ST_EPROTO      a domain of length 0                  (reply REP 0x01)
 * RSV is ignored (be liberal in what you accept). A domain may contain any bytes except that
 * a NUL inside it is reported as ST_EPROTO.
 */
NODISCARD int socks_parse_request(const uint8_t *p, size_t len, struct socks_request *out);

/* The REP code for a socks_parse_request error (0x01 for anything not listed above). */
uint8_t socks_request_error_rep(int status);

/* Method choice, RFC 1928 §3: writes 2 bytes. */
void socks_write_method(uint8_t out[static 2], uint8_t method);

/* RFC 1929 status reply: writes 2 bytes. */
void socks_write_auth_status(uint8_t out[static 2], uint8_t status);

/*
 * Reply, RFC 1928 §6, with BND.ADDR/BND.PORT from bnd (IPv4 or IPv6); bnd NULL writes 0.0.0.0:0.
 * An IPv4-mapped IPv6 address is written as IPv4. Returns the number of bytes written (10 or 22);
 * out must hold SOCKS_REPLY_MAX bytes.
 */
size_t socks_write_reply(uint8_t out[static SOCKS_REPLY_MAX], uint8_t rep, const struct addr *bnd);

/*
 * Encode a target as ATYP DST.ADDR DST.PORT (used by clients and the link's CONNECT record).
 * Returns bytes written, or 0 (nothing written) if cap is too small or t is not a target the
 * parser would accept (unknown ATYP, empty domain, NUL inside the domain).
 */
size_t socks_write_target(uint8_t *out, size_t cap, const struct socks_target *t);

/* Parse ATYP DST.ADDR DST.PORT alone (same contract and errors as the tail of a request). */
NODISCARD int socks_parse_target(const uint8_t *p, size_t len, struct socks_target *out);

/*
 * Parse the header at the start of one UDP datagram of len bytes (RFC 1928 §7). The whole datagram
 * is present (UDP has no "need more"), so this never returns ST_NEED_MORE. Returns the header length
 * n, 8..SOCKS_UDP_HEADER_MAX (DATA is the len - n bytes at p + n, possibly none), or, in wire order:
 *   ST_EPROTO      RSV is not X'0000', or the datagram ends inside the header
 *   ST_EADDRTYPE   ATYP is not 1, 3 or 4
 *   ST_EPROTO      a domain of length 0, or a NUL inside the domain
 * RSV is checked strictly, unlike a request's: a malformed datagram is only dropped (no session is
 * closed over it), and stray non-SOCKS traffic at the relay port is refused at the first bytes.
 * FRAG is passed through as sent; this codec does not reassemble, callers drop anything but 0.
 */
NODISCARD int socks_parse_udp_header(const uint8_t *p, size_t len, struct socks_udp_header *out);

/*
 * Write a UDP header, RSV X'0000' FRAG X'00' ATYP DST.ADDR DST.PORT, naming src (the relay's side:
 * the target address a datagram came from; IPv4 or IPv6, not NULL). An IPv4-mapped IPv6 address is
 * written as IPv4, as in socks_write_reply. Returns bytes written (10 or 22), or 0 (nothing written)
 * when cap is too small or src is of another family. SOCKS_UDP_HEADER_MAX bytes always suffice.
 */
size_t socks_write_udp_header(uint8_t *out, size_t cap, const struct addr *src);

/*
 * The same for a target as a client sends it (the client's side, domains included: tests, the load
 * generator). Returns bytes written (10, 22, or 7 + the domain's length), or 0 (nothing written) when
 * cap is too small or t is not a target the parser would accept (as socks_write_target).
 */
size_t socks_write_udp_header_target(uint8_t *out, size_t cap, const struct socks_target *t);

#endif
