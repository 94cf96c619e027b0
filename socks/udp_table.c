/* socks/udp_table.c - permitted peers and the datagram rate of one UDP association. */
#include "socks/udp_table.h"

#include <string.h>

/* The compact form of an address; false for a family that is neither IPv4 nor IPv6. */
static bool udp_peer_of(const struct addr *a, struct udp_peer *out)
{
	memset(out, 0, sizeof(*out));
	if (addr_family(a) == AF_INET) {
		memcpy(out->ip, &a->u.sin.sin_addr, 4);
		out->family = 4;
	} else if (addr_family(a) == AF_INET6) {
		const uint8_t *ip = a->u.sin6.sin6_addr.s6_addr;

		/* A mapped address is the IPv4 host it names (a dual-stack socket reports one so). */
		if (IN6_IS_ADDR_V4MAPPED(&a->u.sin6.sin6_addr)) {
			memcpy(out->ip, ip + 12, 4);
			out->family = 4;
		} else {
			memcpy(out->ip, ip, 16);
			out->family = 6;
		}
	} else {
		return false;
	}
	out->port = addr_port(a);
	return true;
}

static bool udp_peer_same(const struct udp_peer *x, const struct udp_peer *y)
{
	return x->family == y->family && x->port == y->port && memcmp(x->ip, y->ip, 16) == 0;
}

void udp_peers_init(struct udp_peers *t)
{
	memset(t, 0, sizeof(*t));
}

void udp_peers_add(struct udp_peers *t, const struct addr *a)
{
	struct udp_peer p;
	size_t victim = 0;

	if (!udp_peer_of(a, &p))
		return;
	p.stamp = ++t->clock;
	for (size_t i = 0; i < t->n; i++) {
		if (udp_peer_same(&t->slot[i], &p)) {
			t->slot[i].stamp = p.stamp;
			return;
		}
		/* Unsigned distance from now: right across a wrap of the clock too. */
		if (p.stamp - t->slot[i].stamp > p.stamp - t->slot[victim].stamp)
			victim = i;
	}
	if (t->n < UDP_PEERS_MAX)
		victim = t->n++;
	t->slot[victim] = p;
}

bool udp_peers_has(const struct udp_peers *t, const struct addr *a)
{
	struct udp_peer p;

	if (!udp_peer_of(a, &p))
		return false;
	for (size_t i = 0; i < t->n; i++)
		if (udp_peer_same(&t->slot[i], &p))
			return true;
	return false;
}

void udp_bucket_init(struct udp_bucket *b, double rate, double now)
{
	b->rate = rate > 0 ? rate : 0;
	b->tokens = b->rate > 1.0 ? b->rate : 1.0;
	b->last = now;
}

bool udp_bucket_take(struct udp_bucket *b, double now)
{
	if (b->rate <= 0)
		return true;
	if (now > b->last) {
		b->tokens += (now - b->last) * b->rate;
		/* A burst is at most one second's worth (and at least one datagram). */
		if (b->tokens > (b->rate > 1.0 ? b->rate : 1.0))
			b->tokens = b->rate > 1.0 ? b->rate : 1.0;
		b->last = now;
	}
	if (b->tokens < 1.0)
		return false;
	b->tokens -= 1.0;
	return true;
}
