/*
 * base/addr.h - socket addresses: one storage type, parsing and formatting.
 *
 * Pure functions over caller-provided memory: no allocation, no logging, no DNS.
 */
#ifndef SHROUD_BASE_ADDR_H
#define SHROUD_BASE_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/compiler.h"

/*
 * An IPv4 or IPv6 socket address with its length: 32 bytes, not sockaddr_storage's 132, since
 * sessions and pools hold many. accept/getsockname into it pass len = sizeof(u); the kernel
 * truncates and reports a longer address family, which the callers then reject by family.
 */
struct addr {
	union {
		struct sockaddr sa;
		struct sockaddr_in sin;
		struct sockaddr_in6 sin6;
	} u;
	socklen_t len;
};

/* Longest output of addr_format, NUL included: "[" v6 "%" scope "]:" port. */
#define ADDR_STRLEN (INET6_ADDRSTRLEN + 16)

/*
 * Parse "A.B.C.D:PORT" or "[V6]:PORT" (port 0..65535, required) into *out.
 * ST_OK, or ST_EINVAL with *out unchanged.
 */
NODISCARD int addr_parse_hostport(const char *text, struct addr *out);

/* Parse a bare IPv4 or IPv6 address (no port, no brackets); port set to `port`. ST_OK or ST_EINVAL. */
NODISCARD int addr_parse_ip(const char *text, uint16_t port, struct addr *out);

/* Build from raw network-order bytes: 4 for AF_INET, 16 for AF_INET6; port in host order. */
void addr_from_ipv4(struct addr *out, const uint8_t ip[static 4], uint16_t port);
void addr_from_ipv6(struct addr *out, const uint8_t ip[static 16], uint16_t port);

/* Copy a sockaddr of family AF_INET/AF_INET6. ST_OK or ST_EINVAL (other family or short length). */
NODISCARD int addr_from_sockaddr(struct addr *out, const struct sockaddr *sa, socklen_t len);

/* "1.2.3.4:80" or "[::1]:80" into buf (ADDR_STRLEN bytes suffice). Returns buf. */
char *addr_format(const struct addr *a, char *buf, size_t size);

/* Address only, no port and no brackets. Returns buf. */
char *addr_format_ip(const struct addr *a, char *buf, size_t size);

static inline int addr_family(const struct addr *a) { return a->u.sa.sa_family; }
uint16_t addr_port(const struct addr *a);
void addr_set_port(struct addr *a, uint16_t port);

/* True for 127.0.0.0/8, ::1 and IPv4-mapped loopback. */
bool addr_is_loopback(const struct addr *a);

/*
 * True for addresses an exposed proxy must not connect to on a client's behalf (DESIGN.md,
 * "Privacy rules"): IPv4 "this network" 0/8, loopback 127/8, private 10/8 172.16/12 192.168/16,
 * CGNAT 100.64/10, link-local 169.254/16, IETF 192.0.0/24, documentation 192.0.2/24 198.51.100/24
 * 203.0.113/24, benchmarking 198.18/15, multicast 224/4, reserved 240/4 (broadcast included);
 * IPv6 unspecified, loopback, link-local fe80::/10, ULA fc00::/7, multicast ff00::/8,
 * documentation 2001:db8::/32, discard 100::/64; IPv4-mapped, IPv4-compatible and NAT64
 * (64:ff9b::/96) addresses are judged by the IPv4 address inside them.
 */
bool addr_is_internal(const struct addr *a);

/*
 * Who a client is, for per-client limits (failed logins, the link's penalty box): its IPv4
 * address, or its IPv6 /64, since one host usually owns a whole /64. 16 bytes, never all zero,
 * IPv4 and IPv6 keys distinct.
 */
#define ADDR_CLIENT_KEY_LEN 16
void addr_client_key(const struct addr *a, uint8_t key[static ADDR_CLIENT_KEY_LEN]);

/* A slot in 0..n-1 for a client key (FNV-1a: for bounded tables, not adversary-proof). */
size_t addr_client_slot(const uint8_t key[static ADDR_CLIENT_KEY_LEN], size_t n);

/* True when both hold the same family, address and port. */
bool addr_equal(const struct addr *a, const struct addr *b);

/* True when both hold the same family and address (ports ignored). */
bool addr_equal_ip(const struct addr *a, const struct addr *b);

#endif
