/*
 * egress/bind.h - the outgoing socket: created, bound to a source address, connected.
 *
 * The daemon fails closed: when a source address is given and binding to it fails, the call fails;
 * it never falls back to the system's default address (redis' anet.c does; we do not).
 */
#ifndef SHROUD_EGRESS_BIND_H
#define SHROUD_EGRESS_BIND_H

#include "base/addr.h"
#include "base/compiler.h"

/*
 * Create a non-blocking, close-on-exec TCP socket of dst's family with TCP_NODELAY, bind it to
 * src when src is not NULL (port 0, with IP_BIND_ADDRESS_NO_PORT so the kernel picks the port at
 * connect time and thousands of connections per source do not exhaust ephemeral ports; with
 * EGRESS_FREEBIND also IPV6_FREEBIND/IP_FREEBIND), and start
 * connecting to dst.
 *
 * ST_OK with *fd set: the connect completed or is in progress (wait for writability, then read
 * SO_ERROR). ST_ESYS with errno set and no descriptor left open: socket, bind or connect failed at
 * once (EADDRNOTAVAIL from bind means src is not on this host; ENETUNREACH from connect, ...).
 * *bind_failed tells which, so callers can blame the source address rather than the target.
 * Never blocks, never logs.
 */
NODISCARD int egress_connect(const struct addr *src, const struct addr *dst, unsigned flags,
			     int *fd, int *bind_failed);

/* egress_connect flags */
#define EGRESS_FREEBIND 0x1 /* src is drawn from a prefix routed to this host (`ip route add local
			     * PREFIX dev lo`): bind it even though no interface carries it. Never
			     * for single addresses: binding one that is not on the host must fail. */

/*
 * BIND (RFC 1928 §4): a non-blocking, close-on-exec TCP socket bound to src (its port 0: the kernel
 * picks one; EGRESS_FREEBIND as for egress_connect) and listening with a small backlog, for the one
 * connection a BIND waits for. ST_OK with *fd set, or ST_ESYS (errno set, nothing left open);
 * *bind_failed tells that the bind itself failed (src is at fault). Never blocks, never logs.
 */
NODISCARD int egress_listen(const struct addr *src, unsigned flags, int *fd, int *bind_failed);

/*
 * UDP ASSOCIATE (RFC 1928 §7): a non-blocking, close-on-exec UDP socket of `family` bound to src
 * (port 0; EGRESS_FREEBIND as above), or to the family's wildcard address when src is NULL (the
 * system's default source). An IPv6 socket is IPv6-only: IPv4 traffic never reaches it mapped.
 * ST_OK with *fd set, or ST_ESYS (errno set, nothing left open); *bind_failed as above.
 */
NODISCARD int egress_udp(int family, const struct addr *src, unsigned flags, int *fd,
			 int *bind_failed);

/* The pending error of a connecting socket (SO_ERROR): 0 when connected, else an errno value. */
int egress_connect_result(int fd);

#endif
