/*
 * socks/udp_table.h - the bookkeeping of one UDP association that needs no socket: which peers may
 * answer the client, and how many datagrams per second it may relay.
 *
 * Pure: no I/O, no allocation, no clock (the caller passes `now`), no logging.
 *
 * Permitted peers. A datagram from the outside is relayed to the client only when its source
 * (address and port) is a target the client sent to: the relay is no open reflector. The table has
 * UDP_PEERS_MAX places; when full, the peer the client sent to least recently gives its place up.
 *
 * Rate. A token bucket: `rate` datagrams per second on average, bursts of up to one second's worth;
 * rate 0 is no limit.
 */
#ifndef SHROUD_SOCKS_UDP_TABLE_H
#define SHROUD_SOCKS_UDP_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/addr.h"
#include "base/compiler.h"

#define UDP_PEERS_MAX 128

struct udp_peer {
	uint8_t ip[16];	 /* network order; IPv4 in the first 4 bytes */
	uint16_t port;	 /* host order */
	uint8_t family;	 /* 4 or 6 */
	uint32_t stamp;	 /* the table's clock when the client last sent to it */
};

struct udp_peers {
	size_t n;
	uint32_t clock; /* counts additions: orders the peers by their last use */
	struct udp_peer slot[UDP_PEERS_MAX];
};

/* An empty table. */
void udp_peers_init(struct udp_peers *t);

/* The client sent to a (IPv4 or IPv6; an IPv4-mapped address counts as the IPv4 one): permit it,
 * or refresh it. Other families are ignored. */
void udp_peers_add(struct udp_peers *t, const struct addr *a);

/* True when a (address and port) is permitted. */
bool udp_peers_has(const struct udp_peers *t, const struct addr *a);

struct udp_bucket {
	double rate;   /* datagrams per second; 0 = no limit */
	double tokens; /* at most rate */
	double last;   /* when tokens were last topped up */
};

/* A full bucket at now. */
void udp_bucket_init(struct udp_bucket *b, double rate, double now);

/* Take one datagram's token at now: true, or false (drop it) when the bucket is empty. A clock that
 * goes backwards adds nothing. */
NODISCARD bool udp_bucket_take(struct udp_bucket *b, double now);

#endif
