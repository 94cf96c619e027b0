/* base/addr.c - socket address parsing and formatting. */
#include "base/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

void addr_from_ipv4(struct addr *out, const uint8_t ip[static 4], uint16_t port)
{
	memset(out, 0, sizeof(*out));
	out->u.sin.sin_family = AF_INET;
	memcpy(&out->u.sin.sin_addr, ip, 4);
	out->u.sin.sin_port = htons(port);
	out->len = sizeof(struct sockaddr_in);
}

void addr_from_ipv6(struct addr *out, const uint8_t ip[static 16], uint16_t port)
{
	memset(out, 0, sizeof(*out));
	out->u.sin6.sin6_family = AF_INET6;
	memcpy(&out->u.sin6.sin6_addr, ip, 16);
	out->u.sin6.sin6_port = htons(port);
	out->len = sizeof(struct sockaddr_in6);
}

int addr_from_sockaddr(struct addr *out, const struct sockaddr *sa, socklen_t len)
{
	if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
		memset(out, 0, sizeof(*out));
		memcpy(&out->u.sin, sa, sizeof(struct sockaddr_in));
		out->len = sizeof(struct sockaddr_in);
		return ST_OK;
	}
	if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
		memset(out, 0, sizeof(*out));
		memcpy(&out->u.sin6, sa, sizeof(struct sockaddr_in6));
		out->len = sizeof(struct sockaddr_in6);
		return ST_OK;
	}
	return ST_EINVAL;
}

int addr_parse_ip(const char *text, uint16_t port, struct addr *out)
{
	uint8_t ip[16];

	if (inet_pton(AF_INET, text, ip) == 1) {
		addr_from_ipv4(out, ip, port);
		return ST_OK;
	}
	if (inet_pton(AF_INET6, text, ip) == 1) {
		addr_from_ipv6(out, ip, port);
		return ST_OK;
	}
	return ST_EINVAL;
}

static int parse_port(const char *p, uint16_t *port)
{
	char *end;
	unsigned long v;

	if (*p < '0' || *p > '9')
		return ST_EINVAL;
	errno = 0;
	v = strtoul(p, &end, 10);
	if (errno != 0 || *end != '\0' || v > 65535)
		return ST_EINVAL;
	*port = (uint16_t)v;
	return ST_OK;
}

int addr_parse_hostport(const char *text, struct addr *out)
{
	char host[INET6_ADDRSTRLEN];
	const char *colon;
	size_t hostlen;
	uint16_t port;

	if (text[0] == '[') {
		const char *close = strchr(text, ']');

		if (close == NULL || close[1] != ':')
			return ST_EINVAL;
		hostlen = (size_t)(close - text - 1);
		if (hostlen == 0 || hostlen >= sizeof(host))
			return ST_EINVAL;
		memcpy(host, text + 1, hostlen);
		host[hostlen] = '\0';
		if (parse_port(close + 2, &port) != ST_OK)
			return ST_EINVAL;
		/* Brackets are for IPv6 only. */
		if (strchr(host, ':') == NULL)
			return ST_EINVAL;
		return addr_parse_ip(host, port, out);
	}
	colon = strrchr(text, ':');
	if (colon == NULL)
		return ST_EINVAL;
	hostlen = (size_t)(colon - text);
	if (hostlen == 0 || hostlen >= sizeof(host))
		return ST_EINVAL;
	memcpy(host, text, hostlen);
	host[hostlen] = '\0';
	/* An unbracketed IPv6 address with a port is ambiguous: refuse it. */
	if (strchr(host, ':') != NULL)
		return ST_EINVAL;
	if (parse_port(colon + 1, &port) != ST_OK)
		return ST_EINVAL;
	return addr_parse_ip(host, port, out);
}

char *addr_format_ip(const struct addr *a, char *buf, size_t size)
{
	const void *src = addr_family(a) == AF_INET6 ? (const void *)&a->u.sin6.sin6_addr
						     : (const void *)&a->u.sin.sin_addr;

	if (size == 0)
		return buf;
	if (inet_ntop(addr_family(a), src, buf, (socklen_t)size) == NULL)
		snprintf(buf, size, "?");
	return buf;
}

char *addr_format(const struct addr *a, char *buf, size_t size)
{
	char ip[INET6_ADDRSTRLEN];

	addr_format_ip(a, ip, sizeof(ip));
	if (addr_family(a) == AF_INET6)
		snprintf(buf, size, "[%s]:%u", ip, addr_port(a));
	else
		snprintf(buf, size, "%s:%u", ip, addr_port(a));
	return buf;
}

uint16_t addr_port(const struct addr *a)
{
	return ntohs(addr_family(a) == AF_INET6 ? a->u.sin6.sin6_port : a->u.sin.sin_port);
}

void addr_set_port(struct addr *a, uint16_t port)
{
	if (addr_family(a) == AF_INET6)
		a->u.sin6.sin6_port = htons(port);
	else
		a->u.sin.sin_port = htons(port);
}

bool addr_is_loopback(const struct addr *a)
{
	if (addr_family(a) == AF_INET)
		return (ntohl(a->u.sin.sin_addr.s_addr) >> 24) == 127;
	if (addr_family(a) == AF_INET6) {
		const struct in6_addr *in6 = &a->u.sin6.sin6_addr;

		if (IN6_IS_ADDR_LOOPBACK(in6))
			return true;
		if (IN6_IS_ADDR_V4MAPPED(in6))
			return in6->s6_addr[12] == 127;
	}
	return false;
}

bool addr_equal_ip(const struct addr *a, const struct addr *b)
{
	if (addr_family(a) != addr_family(b))
		return false;
	if (addr_family(a) == AF_INET)
		return a->u.sin.sin_addr.s_addr == b->u.sin.sin_addr.s_addr;
	if (addr_family(a) == AF_INET6)
		return memcmp(&a->u.sin6.sin6_addr, &b->u.sin6.sin6_addr, 16) == 0;
	return false;
}

bool addr_equal(const struct addr *a, const struct addr *b)
{
	return addr_equal_ip(a, b) && addr_port(a) == addr_port(b);
}

static bool ipv4_is_internal(uint32_t ip)
{
	static const struct {
		uint32_t net;
		unsigned bits;
	} ranges[] = {
		{ 0x00000000, 8 },  /* 0.0.0.0/8 "this network" */
		{ 0x0a000000, 8 },  /* 10.0.0.0/8 */
		{ 0x64400000, 10 }, /* 100.64.0.0/10 CGNAT */
		{ 0x7f000000, 8 },  /* 127.0.0.0/8 */
		{ 0xa9fe0000, 16 }, /* 169.254.0.0/16 link-local */
		{ 0xac100000, 12 }, /* 172.16.0.0/12 */
		{ 0xc0000000, 24 }, /* 192.0.0.0/24 IETF protocol assignments */
		{ 0xc0000200, 24 }, /* 192.0.2.0/24 TEST-NET-1 */
		{ 0xc0a80000, 16 }, /* 192.168.0.0/16 */
		{ 0xc6120000, 15 }, /* 198.18.0.0/15 benchmarking */
		{ 0xc6336400, 24 }, /* 198.51.100.0/24 TEST-NET-2 */
		{ 0xcb007100, 24 }, /* 203.0.113.0/24 TEST-NET-3 */
		{ 0xe0000000, 4 },  /* 224.0.0.0/4 multicast */
		{ 0xf0000000, 4 },  /* 240.0.0.0/4 reserved, broadcast included */
	};

	for (size_t i = 0; i < ARRAY_SIZE(ranges); i++) {
		uint32_t mask = ~(uint32_t)0 << (32 - ranges[i].bits);

		if ((ip & mask) == ranges[i].net)
			return true;
	}
	return false;
}

bool addr_is_internal(const struct addr *a)
{
	static const uint8_t nat64[12] = { 0x00, 0x64, 0xff, 0x9b };
	static const uint8_t zero12[12] = { 0 };
	const uint8_t *b;

	if (addr_family(a) == AF_INET)
		return ipv4_is_internal(ntohl(a->u.sin.sin_addr.s_addr));
	if (addr_family(a) != AF_INET6)
		return true; /* nothing else is ever connected to */
	b = a->u.sin6.sin6_addr.s6_addr;
	if (IN6_IS_ADDR_V4MAPPED(&a->u.sin6.sin6_addr) || memcmp(b, nat64, 12) == 0 ||
	    memcmp(b, zero12, 12) == 0) {
		/* ::a.b.c.d (and :: and ::1), ::ffff:a.b.c.d, 64:ff9b::a.b.c.d: the IPv4 inside. */
		uint32_t v4 = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];

		if (memcmp(b, zero12, 12) == 0 && v4 <= 1)
			return true; /* :: and ::1 */
		return ipv4_is_internal(v4);
	}
	if ((b[0] & 0xfe) == 0xfc)				/* fc00::/7 ULA */
		return true;
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)		/* fe80::/10 link-local */
		return true;
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)		/* fec0::/10 site-local (deprecated) */
		return true;
	if (b[0] == 0xff)					/* ff00::/8 multicast */
		return true;
	if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) /* 2001:db8::/32 */
		return true;
	if (b[0] == 0x01 && b[1] == 0x00 && memcmp(b + 2, zero12, 6) == 0) /* 100::/64 discard */
		return true;
	return false;
}

void addr_client_key(const struct addr *a, uint8_t key[static ADDR_CLIENT_KEY_LEN])
{
	memset(key, 0, ADDR_CLIENT_KEY_LEN);
	if (addr_family(a) == AF_INET6) {
		memcpy(key, &a->u.sin6.sin6_addr, 8);
		key[15] = 6;
	} else {
		memcpy(key, &a->u.sin.sin_addr, 4);
		key[15] = 4;
	}
}

size_t addr_client_slot(const uint8_t key[static ADDR_CLIENT_KEY_LEN], size_t n)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < ADDR_CLIENT_KEY_LEN; i++)
		h = (h ^ key[i]) * 1099511628211ull;
	return (size_t)(h % n);
}
