/*
 * socks/proto.c - the SOCKS5 codec (RFC 1928, RFC 1929).
 *
 * Every parser decodes field by field, in wire order, and checks each length before it reads the
 * bytes it covers: an error is reported as soon as the byte that causes it is present, and
 * ST_NEED_MORE means exactly "every byte so far is a valid prefix". Results are built in locals and
 * copied to the caller only on success.
 */
#include "socks/proto.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "base/status.h"

/* Ports travel in network order (RFC 1928 §4, §6); decoded by hand, no alignment assumed. */
static uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)(v & 0xff);
}

static int cmd_known(uint8_t cmd)
{
	return cmd == SOCKS_CMD_CONNECT || cmd == SOCKS_CMD_BIND || cmd == SOCKS_CMD_UDP_ASSOCIATE;
}

int socks_parse_greeting(const uint8_t *p, size_t len, struct socks_greeting *out)
{
	struct socks_greeting g;
	size_t nmethods;
	size_t i;

	memset(&g, 0, sizeof(g));

	/* RFC 1928 §3: VER */
	if (len < 1)
		return ST_NEED_MORE;
	if (p[0] != SOCKS_VERSION)
		return ST_EVERSION;

	/* RFC 1928 §3: NMETHODS. A client that offers nothing cannot be answered with a method. */
	if (len < 2)
		return ST_NEED_MORE;
	nmethods = p[1];
	if (nmethods == 0)
		return ST_EPROTO;

	/* RFC 1928 §3: METHODS, NMETHODS octets; only the ones we implement are remembered. */
	if (len < 2 + nmethods)
		return ST_NEED_MORE;
	g.nmethods = (uint8_t)nmethods;
	for (i = 0; i < nmethods; i++) {
		if (p[2 + i] == SOCKS_METHOD_NONE)
			g.offers_none = 1;
		else if (p[2 + i] == SOCKS_METHOD_USERPASS)
			g.offers_userpass = 1;
	}

	memcpy(out, &g, sizeof(*out));
	return (int)(2 + nmethods);
}

int socks_parse_auth(const uint8_t *p, size_t len, struct socks_auth *out)
{
	size_t ulen;
	size_t plen;

	/* RFC 1929 §2: VER, the sub-negotiation version */
	if (len < 1)
		return ST_NEED_MORE;
	if (p[0] != SOCKS_AUTH_VERSION)
		return ST_EVERSION;

	/* RFC 1929 §2: ULEN; an empty user name cannot name an account. */
	if (len < 2)
		return ST_NEED_MORE;
	ulen = p[1];
	if (ulen == 0)
		return ST_EPROTO;

	/* RFC 1929 §2: UNAME (ULEN octets), then PLEN; an empty password is never a valid login. */
	if (len < 2 + ulen + 1)
		return ST_NEED_MORE;
	plen = p[2 + ulen];
	if (plen == 0)
		return ST_EPROTO;

	/* RFC 1929 §2: PASSWD (PLEN octets) */
	if (len < 3 + ulen + plen)
		return ST_NEED_MORE;

	/*
	 * Commit. Unlike the other parsers this one keeps only lengths in locals and copies the strings
	 * straight from the input: a local struct would leave a second copy of the password on the stack.
	 * The whole output is cleared first so no byte of an earlier password survives past the new NUL.
	 */
	memset(out, 0, sizeof(*out));
	out->ulen = (uint8_t)ulen;
	memcpy(out->user, p + 2, ulen);
	out->plen = (uint8_t)plen;
	memcpy(out->pass, p + 3 + ulen, plen);
	return (int)(3 + ulen + plen);
}

/*
 * Decode ATYP DST.ADDR DST.PORT into *t, which is the caller's scratch: it is meaningful only when
 * the return value is > 0 (bytes consumed). Shared by the request and the bare-target parsers.
 */
static int target_decode(const uint8_t *p, size_t len, struct socks_target *t)
{
	size_t off = 0;
	size_t dlen;

	memset(t, 0, sizeof(*t));

	/* RFC 1928 §4/§5: ATYP */
	if (len < 1)
		return ST_NEED_MORE;
	t->atyp = p[off++];

	/* RFC 1928 §5: DST.ADDR, whose shape ATYP decides */
	switch (t->atyp) {
	case SOCKS_ATYP_IPV4:
		/* X'01': a version-4 address, 4 octets */
		if (len < off + 4)
			return ST_NEED_MORE;
		memcpy(t->u.ipv4, p + off, 4);
		off += 4;
		break;
	case SOCKS_ATYP_IPV6:
		/* X'04': a version-6 address, 16 octets */
		if (len < off + 16)
			return ST_NEED_MORE;
		memcpy(t->u.ipv6, p + off, 16);
		off += 16;
		break;
	case SOCKS_ATYP_DOMAIN:
		/* X'03': one octet of length, then the name, no terminating NUL */
		if (len < off + 1)
			return ST_NEED_MORE;
		dlen = p[off++];
		if (dlen == 0)
			return ST_EPROTO;
		/*
		 * A NUL would cut the name short for every C API downstream (a smuggling hazard), so it is
		 * refused; and refused as soon as it is present, since the input can no longer become valid.
		 */
		if (memchr(p + off, 0, MIN(len - off, dlen)) != NULL)
			return ST_EPROTO;
		if (len < off + dlen)
			return ST_NEED_MORE;
		t->u.domain.len = (uint8_t)dlen;
		memcpy(t->u.domain.name, p + off, dlen);
		t->u.domain.name[dlen] = '\0';
		off += dlen;
		break;
	default:
		return ST_EADDRTYPE;
	}

	/* RFC 1928 §4: DST.PORT, network octet order */
	if (len < off + 2)
		return ST_NEED_MORE;
	t->port = get_be16(p + off);
	off += 2;
	return (int)off;
}

int socks_parse_target(const uint8_t *p, size_t len, struct socks_target *out)
{
	struct socks_target t;
	int n;

	n = target_decode(p, len, &t);
	if (n < 0)
		return n;
	memcpy(out, &t, sizeof(*out));
	return n;
}

int socks_parse_request(const uint8_t *p, size_t len, struct socks_request *out)
{
	struct socks_request r;
	int n;

	memset(&r, 0, sizeof(r));

	/* RFC 1928 §4: VER */
	if (len < 1)
		return ST_NEED_MORE;
	if (p[0] != SOCKS_VERSION)
		return ST_EVERSION;

	/* RFC 1928 §4: CMD */
	if (len < 2)
		return ST_NEED_MORE;
	r.cmd = p[1];
	if (!cmd_known(r.cmd))
		return ST_ECOMMAND;

	/* RFC 1928 §4: RSV. The RFC says X'00'; some clients send junk, and nothing depends on it. */
	if (len < 3)
		return ST_NEED_MORE;

	/* RFC 1928 §4: ATYP DST.ADDR DST.PORT */
	n = target_decode(p + 3, len - 3, &r.dst);
	if (n < 0)
		return n;

	memcpy(out, &r, sizeof(*out));
	return 3 + n;
}

uint8_t socks_request_error_rep(int status)
{
	switch (status) {
	case ST_ECOMMAND:
		return SOCKS_REP_CMD_UNSUPPORTED;
	case ST_EADDRTYPE:
		return SOCKS_REP_ATYP_UNSUPPORTED;
	default:
		return SOCKS_REP_GENERAL_FAILURE;
	}
}

void socks_write_method(uint8_t out[static 2], uint8_t method)
{
	/* RFC 1928 §3: VER METHOD */
	out[0] = SOCKS_VERSION;
	out[1] = method;
}

void socks_write_auth_status(uint8_t out[static 2], uint8_t status)
{
	/* RFC 1929 §2: VER STATUS */
	out[0] = SOCKS_AUTH_VERSION;
	out[1] = status;
}

/*
 * Name an IPv4 or IPv6 socket address as a target, for the encoders. A dual-stack socket names IPv4
 * peers ::ffff:a.b.c.d; clients expect the IPv4 form, so a mapped address becomes ATYP X'01'.
 * ST_OK, or ST_EINVAL for any other family. Only the fields socks_write_target reads are set.
 */
static int target_from_addr(const struct addr *a, struct socks_target *t)
{
	if (addr_family(a) == AF_INET) {
		t->atyp = SOCKS_ATYP_IPV4;
		memcpy(t->u.ipv4, &a->u.sin.sin_addr, 4);
	} else if (addr_family(a) == AF_INET6) {
		const struct in6_addr *a6 = &a->u.sin6.sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			t->atyp = SOCKS_ATYP_IPV4;
			memcpy(t->u.ipv4, a6->s6_addr + 12, 4);
		} else {
			t->atyp = SOCKS_ATYP_IPV6;
			memcpy(t->u.ipv6, a6->s6_addr, 16);
		}
	} else {
		return ST_EINVAL;
	}
	t->port = addr_port(a);
	return ST_OK;
}

size_t socks_write_reply(uint8_t out[static SOCKS_REPLY_MAX], uint8_t rep, const struct addr *bnd)
{
	struct socks_target t;

	/* Anything that is not IPv4 or IPv6 (NULL included) is reported as 0.0.0.0:0. */
	if (bnd == NULL || target_from_addr(bnd, &t) != ST_OK) {
		t.atyp = SOCKS_ATYP_IPV4;
		memset(t.u.ipv4, 0, 4);
		t.port = 0;
	}

	/* RFC 1928 §6: VER REP RSV, then BND.ADDR BND.PORT, shaped as ATYP DST.ADDR DST.PORT (§4/§5) */
	out[0] = SOCKS_VERSION;
	out[1] = rep;
	out[2] = 0x00;
	/* An IP target needs at most 1 + 16 + 2 bytes: SOCKS_REPLY_MAX - 3 always holds it. */
	return 3 + socks_write_target(out + 3, SOCKS_REPLY_MAX - 3, &t);
}

size_t socks_write_target(uint8_t *out, size_t cap, const struct socks_target *t)
{
	size_t alen;
	size_t need;

	/* Only what socks_parse_target would accept is written: the peer parses it with the same rules. */
	switch (t->atyp) {
	case SOCKS_ATYP_IPV4:
		alen = 4;
		break;
	case SOCKS_ATYP_IPV6:
		alen = 16;
		break;
	case SOCKS_ATYP_DOMAIN:
		if (t->u.domain.len == 0 || memchr(t->u.domain.name, 0, t->u.domain.len) != NULL)
			return 0;
		alen = 1 + (size_t)t->u.domain.len;
		break;
	default:
		return 0;
	}
	need = 1 + alen + 2;
	if (cap < need)
		return 0;

	/* RFC 1928 §4/§5: ATYP DST.ADDR DST.PORT */
	out[0] = t->atyp;
	if (t->atyp == SOCKS_ATYP_IPV4) {
		memcpy(out + 1, t->u.ipv4, 4);
	} else if (t->atyp == SOCKS_ATYP_IPV6) {
		memcpy(out + 1, t->u.ipv6, 16);
	} else {
		out[1] = t->u.domain.len;
		memcpy(out + 2, t->u.domain.name, t->u.domain.len);
	}
	put_be16(out + 1 + alen, t->port);
	return need;
}

int socks_parse_udp_header(const uint8_t *p, size_t len, struct socks_udp_header *out)
{
	struct socks_udp_header h;
	int n;

	/* Zeroed so the padding copied out below is deterministic too. */
	memset(&h, 0, sizeof(h));

	/*
	 * RFC 1928 §7: RSV, X'0000'. Strict, unlike a request's RSV: dropping a datagram costs the client
	 * one datagram, not its session, and anything else at the relay port is not SOCKS traffic.
	 */
	if (len < 2 || p[0] != 0x00 || p[1] != 0x00)
		return ST_EPROTO;

	/* RFC 1928 §7: FRAG, the fragment number; passed through, the caller drops anything but X'00'. */
	if (len < 3)
		return ST_EPROTO;
	h.frag = p[2];

	/*
	 * RFC 1928 §7: ATYP DST.ADDR DST.PORT, as in a request. The datagram is all there will ever be,
	 * so a header cut short is malformed rather than a prefix.
	 */
	n = target_decode(p + 3, len - 3, &h.dst);
	if (n == ST_NEED_MORE)
		return ST_EPROTO;
	if (n < 0)
		return n;

	memcpy(out, &h, sizeof(*out));
	return 3 + n;
}

size_t socks_write_udp_header_target(uint8_t *out, size_t cap, const struct socks_target *t)
{
	size_t n;

	if (cap < 3)
		return 0;
	/* RFC 1928 §7: ATYP DST.ADDR DST.PORT; first, so that a refused target leaves out untouched. */
	n = socks_write_target(out + 3, cap - 3, t);
	if (n == 0)
		return 0;
	/* RFC 1928 §7: RSV X'0000', FRAG X'00' (a whole datagram: this codec never fragments) */
	out[0] = 0x00;
	out[1] = 0x00;
	out[2] = 0x00;
	return 3 + n;
}

size_t socks_write_udp_header(uint8_t *out, size_t cap, const struct addr *src)
{
	struct socks_target t;

	if (target_from_addr(src, &t) != ST_OK)
		return 0;
	return socks_write_udp_header_target(out, cap, &t);
}
