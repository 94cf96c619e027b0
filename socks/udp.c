/*
 * socks/udp.c - the UDP relay of one association (RFC 1928 §7).
 *
 * Client -> target: a datagram on the relay socket from the client's address is parsed (RSV FRAG
 * ATYP DST.ADDR DST.PORT DATA, socks/proto), its target resolved if it is a name, an egress chosen
 * for (user, session, site) as socks/session does for CONNECT, and DATA sent from the outgoing
 * socket bound to that egress. The target becomes a permitted peer.
 * Target -> client: a datagram on an outgoing socket from a permitted peer gets a header naming the
 * peer (RFC 1928 §7: the reply carries the source) and goes to the client.
 *
 * No send queue anywhere: UDP may drop, and a datagram the kernel will not take now (EAGAIN,
 * ENOBUFS) is dropped, like one the network lost. The only datagrams kept are the few waiting for a
 * name (bounded).
 */
#include "socks/udp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "base/status.h"
#include "egress/bind.h"
#include "egress/site.h"
#include "socks/quota.h"
#include "socks/resolve.h"
#include "socks/route.h"
#include "socks/udp_table.h"
#include "socks/usage.h"
#include "socks/worker.h"
#include "store/snapshot.h"
#include "store/store.h"

/* One datagram (at most 65535 bytes of UDP payload) behind room for the largest header. */
#define UDP_PAYLOAD_MAX 65535
#define UDP_BUF_SIZE (SOCKS_UDP_HEADER_MAX + UDP_PAYLOAD_MAX + 1)

/* An outgoing socket: one per (family, egress address). */
struct udp_sock {
	struct udp_assoc *a;
	ev_io io;
	int fd;
	int family;
	bool pooled;			/* bound to a pool entry's address, else the wildcard */
	struct addr src;		/* the bound address (port 0 as asked) */
	char egress[STORE_ADDRESS_MAX]; /* the pool entry, for usage; "" = system default */
	bool counted;			/* counted as one association on its egress already */
	uint64_t up, down, datagrams;	/* payload bytes and datagrams since the last flush */
	double last_used;
};

enum udp_name_state { NAME_PENDING, NAME_OK, NAME_FAILED };

/* A domain target and its answer, kept for the association's life. */
struct udp_name {
	struct udp_assoc *a;
	struct resolve_query *query; /* while PENDING and not answered at once */
	enum udp_name_state state;
	double failed_at;
	double last_used;
	size_t naddrs;
	struct addr addrs[RESOLVE_MAX_ADDRS];
	char site[EGRESS_SITE_MAX]; /* "" when the name has none (as for CONNECT) */
	char name[SOCKS_DOMAIN_MAX + 1];
};

/* A datagram waiting for its name. */
struct udp_held {
	struct udp_held *next;
	struct udp_name *name;
	uint16_t port;
	size_t len;
	uint8_t data[];
};

/* TTL 0: the key drawn for a site, kept for the association's life. */
struct udp_rotation {
	char site[EGRESS_SITE_MAX];
	uint8_t key[EGRESS_KEY_BYTES];
};

struct udp_assoc {
	struct worker *w;
	int cfd; /* the relay socket, facing the client */
	ev_io cio;
	struct addr client; /* the client's address; its port once known */
	bool client_port_known;
	double last_active;
	struct udp_bucket bucket;
	struct udp_peers peers;
	struct udp_sock *socks[UDP_SOCKS_MAX];
	size_t nsocks;
	struct udp_name *names[UDP_NAMES_MAX];
	size_t nnames;
	struct udp_held *held;
	size_t nheld, held_bytes;
	struct udp_rotation *rot;
	size_t nrot, rot_next;
	char quota_key[QUOTA_KEY_MAX + 1];
	struct egress_params params;
};

static double udp_now(const struct udp_assoc *a)
{
	return ev_now(a->w->loop);
}

/* ---- outgoing sockets ----------------------------------------------------------------------- */

static void udp_sock_flush(struct udp_assoc *a, struct udp_sock *k)
{
	if (k->counted && k->up == 0 && k->down == 0 && k->datagrams == 0)
		return;
	usage_add_datagrams(&a->w->usage, a->params.name, k->egress, k->counted ? 0 : 1, k->up,
			    k->down, k->datagrams);
	k->counted = true;
	k->up = k->down = k->datagrams = 0;
}

static void udp_sock_close(struct udp_assoc *a, size_t i)
{
	struct udp_sock *k = a->socks[i];

	udp_sock_flush(a, k);
	ev_io_stop(a->w->loop, &k->io);
	close(k->fd);
	free(k);
	a->socks[i] = a->socks[--a->nsocks];
	a->socks[a->nsocks] = NULL;
}

static void udp_egress_cb(struct ev_loop *loop, ev_io *io, int revents);

/* The socket bound to src (a pool entry's address), or to the family's wildcard when src is NULL. */
static struct udp_sock *udp_sock_find(struct udp_assoc *a, int family, const struct addr *src)
{
	for (size_t i = 0; i < a->nsocks; i++) {
		struct udp_sock *k = a->socks[i];

		if (k->family != family || k->pooled != (src != NULL))
			continue;
		if (src == NULL || addr_equal_ip(&k->src, src))
			return k;
	}
	return NULL;
}

/*
 * Open a socket bound to src (NULL: the wildcard), making room by closing the least recently used
 * one when the association has UDP_SOCKS_MAX. NULL on failure with errno set; *bind_failed tells
 * that src could not be bound (the entry's fault).
 */
static struct udp_sock *udp_sock_open(struct udp_assoc *a, int family, const struct addr *src,
				      unsigned flags, const char *egress, int *bind_failed)
{
	struct udp_sock *k;
	int fd;

	*bind_failed = 0;
	k = calloc(1, sizeof(*k));
	if (k == NULL)
		return NULL;
	if (egress_udp(family, src, flags, &fd, bind_failed) != ST_OK) {
		int saved = errno;

		free(k);
		errno = saved;
		return NULL;
	}
	if (a->nsocks == UDP_SOCKS_MAX) {
		size_t lru = 0;

		for (size_t i = 1; i < a->nsocks; i++)
			if (a->socks[i]->last_used < a->socks[lru]->last_used)
				lru = i;
		udp_sock_close(a, lru);
	}
	k->a = a;
	k->fd = fd;
	k->family = family;
	k->pooled = src != NULL;
	if (src != NULL)
		k->src = *src;
	snprintf(k->egress, sizeof(k->egress), "%s", egress);
	k->last_used = udp_now(a);
	ev_io_init(&k->io, udp_egress_cb, fd, EV_READ);
	ev_io_start(a->w->loop, &k->io);
	a->socks[a->nsocks++] = k;
	return k;
}

/* ---- client -> target ------------------------------------------------------------------------ */

/* The selection key of site, as route_key gives it to CONNECT; TTL 0 keeps one drawn key per site
 * for the association (see udp.h). */
static void udp_key(struct udp_assoc *a, const char *site, uint8_t key[static EGRESS_KEY_BYTES])
{
	const struct snapshot *snap = a->w->snap;
	struct udp_rotation *r;
	uint32_t ttl;

	route_key(snap, a->params.name, &a->params, site, (int64_t)udp_now(a), key, &ttl);
	if (ttl != 0)
		return;
	for (size_t i = 0; i < a->nrot; i++) {
		if (strcmp(a->rot[i].site, site) == 0) {
			memcpy(key, a->rot[i].key, EGRESS_KEY_BYTES);
			return;
		}
	}
	if (a->rot == NULL) {
		a->rot = calloc(UDP_ROTATIONS_MAX, sizeof(*a->rot));
		if (a->rot == NULL)
			return; /* the fresh key route_key drew: this datagram only */
	}
	/* Full: the oldest site draws again when it comes back. */
	if (a->nrot < UDP_ROTATIONS_MAX)
		r = &a->rot[a->nrot++];
	else
		r = &a->rot[a->rot_next++ % UDP_ROTATIONS_MAX];
	snprintf(r->site, sizeof(r->site), "%s", site);
	memcpy(r->key, key, EGRESS_KEY_BYTES);
}

/* Send DATA to dst from k; the target becomes a permitted peer. */
static void udp_send(struct udp_assoc *a, struct udp_sock *k, const struct addr *dst,
		     const uint8_t *data, size_t len)
{
	k->last_used = udp_now(a);
	if (sendto(k->fd, data, len, 0, &dst->u.sa, dst->len) < 0) {
		/* EAGAIN/ENOBUFS: the kernel is full, the datagram is lost as on the wire. */
		log_debug("datagram not sent: %s", strerror(errno));
		return;
	}
	udp_peers_add(&a->peers, dst);
	k->up += len;
	k->datagrams++;
	a->last_active = udp_now(a);
}

/* The first target address of family that the server allows, or NULL. */
static const struct addr *udp_target_of(struct udp_assoc *a, const struct addr *targets, size_t n,
					int family)
{
	for (size_t i = 0; i < n; i++) {
		if (addr_family(&targets[i]) != family)
			continue;
		if (server_target_denied(a->w->srv, &targets[i])) {
			log_debug("datagram dropped: destination refused (internal or our own)");
			continue;
		}
		return &targets[i];
	}
	return NULL;
}

/*
 * Relay DATA to the first usable of targets (a literal, or a name's addresses with the port set),
 * from the egress the key of (user, session, site) ranks first, as CONNECT would: candidates in
 * rank order, a source that cannot be bound cooled down and the next one tried.
 */
static void udp_relay_out(struct udp_assoc *a, const struct addr *targets, size_t n,
			  const char *site, const uint8_t *data, size_t len)
{
	const struct snapshot *snap = a->w->snap;
	struct route_candidate cands[ROUTE_CANDIDATES];
	uint8_t key[EGRESS_KEY_BYTES];
	unsigned families = 0;
	int bind_failed, nc;

	if (route_pool_empty(snap)) {
		for (size_t i = 0; i < n; i++) {
			const struct addr *dst = udp_target_of(a, &targets[i], 1, addr_family(&targets[i]));
			struct udp_sock *k;

			if (dst == NULL)
				continue;
			k = udp_sock_find(a, addr_family(dst), NULL);
			if (k == NULL)
				k = udp_sock_open(a, addr_family(dst), NULL, 0, "", &bind_failed);
			if (k == NULL) {
				log_debug("no UDP socket: %s", strerror(errno));
				return;
			}
			udp_send(a, k, dst, data, len);
			return;
		}
		return;
	}
	for (size_t i = 0; i < n; i++)
		families |= addr_family(&targets[i]) == AF_INET6 ? EGRESS_FAMILY_V6 : EGRESS_FAMILY_V4;
	udp_key(a, site, key);
	nc = route_rank(snap, key, families, &a->params, (int64_t)udp_now(a), cands,
			ARRAY_SIZE(cands));
	explicit_bzero(key, sizeof(key));
	if (nc <= 0) {
		log_debug("datagram dropped: no egress address (%s)", status_str(nc));
		return;
	}
	for (int c = 0; c < nc; c++) {
		const struct route_candidate *cand = &cands[c];
		int family = cand->entry->family;
		const struct addr *dst = udp_target_of(a, targets, n, family);
		struct udp_sock *k;

		if (dst == NULL)
			continue;
		k = udp_sock_find(a, family, &cand->src);
		if (k == NULL) {
			k = udp_sock_open(a, family, &cand->src, route_candidate_flags(cand),
					  route_entry_address(snap, cand->entry), &bind_failed);
			if (k == NULL && (bind_failed || errno == EADDRNOTAVAIL)) {
				/* Not on this host: the entry's fault, as for CONNECT. */
				int err = errno;
				int64_t wait = route_entry_failed(snap, cand->entry,
								  (int64_t)udp_now(a));

				log_debug("egress %s failed (%s): cooling down %lld s",
					  route_entry_address(snap, cand->entry), strerror(err),
					  (long long)wait);
				continue;
			}
			if (k == NULL) {
				log_debug("no UDP socket: %s", strerror(errno));
				return;
			}
			route_entry_ok(snap, cand->entry);
		}
		udp_send(a, k, dst, data, len);
		return;
	}
	log_debug("datagram dropped: no usable egress address");
}

/* ---- names ------------------------------------------------------------------------------------ */

static void udp_held_drop_all(struct udp_assoc *a, const struct udp_name *only)
{
	struct udp_held **link = &a->held;

	while (*link != NULL) {
		struct udp_held *h = *link;

		if (only != NULL && h->name != only) {
			link = &h->next;
			continue;
		}
		*link = h->next;
		a->nheld--;
		a->held_bytes -= h->len;
		free(h);
	}
}

static void udp_resolved(void *arg, int status, const struct addr *addrs, size_t n)
{
	struct udp_name *nm = arg;
	struct udp_assoc *a = nm->a;
	struct udp_held **link = &a->held;

	nm->query = NULL;
	if (status == ST_OK && n > 0) {
		nm->naddrs = MIN(n, (size_t)RESOLVE_MAX_ADDRS);
		memcpy(nm->addrs, addrs, nm->naddrs * sizeof(*addrs));
		nm->state = NAME_OK;
	} else {
		log_debug("resolution failed: %s", status_str(status));
		nm->state = NAME_FAILED;
		nm->failed_at = udp_now(a);
		udp_held_drop_all(a, nm);
		return;
	}
	/* What waited for this name leaves now, in the order it came. */
	while (*link != NULL) {
		struct udp_held *h = *link;
		struct addr targets[RESOLVE_MAX_ADDRS];

		if (h->name != nm) {
			link = &h->next;
			continue;
		}
		*link = h->next;
		a->nheld--;
		a->held_bytes -= h->len;
		for (size_t i = 0; i < nm->naddrs; i++) {
			targets[i] = nm->addrs[i];
			addr_set_port(&targets[i], h->port);
		}
		udp_relay_out(a, targets, nm->naddrs, nm->site, h->data, h->len);
		free(h);
	}
}

static struct udp_name *udp_name_find(struct udp_assoc *a, const char *name)
{
	for (size_t i = 0; i < a->nnames; i++)
		if (strcasecmp(a->names[i]->name, name) == 0)
			return a->names[i];
	return NULL;
}

/* A new entry for name, in place of the least recently used answered one when full (a pending
 * one is never dropped: its query is in flight). NULL when there is no room. */
static struct udp_name *udp_name_new(struct udp_assoc *a, const char *name)
{
	struct udp_name *nm = NULL;

	if (a->nnames == UDP_NAMES_MAX) {
		size_t victim = UDP_NAMES_MAX;

		for (size_t i = 0; i < a->nnames; i++)
			if (a->names[i]->state != NAME_PENDING &&
			    (victim == UDP_NAMES_MAX ||
			     a->names[i]->last_used < a->names[victim]->last_used))
				victim = i;
		if (victim == UDP_NAMES_MAX)
			return NULL;
		nm = a->names[victim];
		memset(nm, 0, sizeof(*nm));
	} else {
		nm = calloc(1, sizeof(*nm));
		if (nm == NULL)
			return NULL;
		a->names[a->nnames++] = nm;
	}
	nm->a = a;
	nm->state = NAME_PENDING;
	snprintf(nm->name, sizeof(nm->name), "%s", name);
	/* The site as CONNECT computes it: the registrable domain of the name as sent. */
	if (egress_site_of_name(name, nm->site) != ST_OK)
		nm->site[0] = '\0';
	return nm;
}

/* Keep a datagram until its name is answered. false (dropped) when the bounds are reached. */
static bool udp_hold(struct udp_assoc *a, struct udp_name *nm, uint16_t port, const uint8_t *data,
		     size_t len)
{
	struct udp_held *h, **tail;

	if (a->nheld >= UDP_HELD_MAX || len > UDP_HELD_BYTES - a->held_bytes)
		return false;
	h = malloc(sizeof(*h) + len);
	if (h == NULL)
		return false;
	h->next = NULL;
	h->name = nm;
	h->port = port;
	h->len = len;
	memcpy(h->data, data, len);
	for (tail = &a->held; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = h;
	a->nheld++;
	a->held_bytes += len;
	return true;
}

static void udp_relay_to_name(struct udp_assoc *a, const char *name, uint16_t port,
			      const uint8_t *data, size_t len)
{
	struct udp_name *nm = udp_name_find(a, name);
	struct resolve_query *q;
	int rc;

	if (nm != NULL) {
		nm->last_used = udp_now(a);
		if (nm->state == NAME_OK) {
			struct addr targets[RESOLVE_MAX_ADDRS];

			for (size_t i = 0; i < nm->naddrs; i++) {
				targets[i] = nm->addrs[i];
				addr_set_port(&targets[i], port);
			}
			udp_relay_out(a, targets, nm->naddrs, nm->site, data, len);
			return;
		}
		if (nm->state == NAME_PENDING) {
			if (!udp_hold(a, nm, port, data, len))
				log_debug("datagram dropped: too many waiting for names");
			return;
		}
		if (udp_now(a) - nm->failed_at < UDP_NAME_RETRY)
			return; /* failed a moment ago: dropped */
		nm->state = NAME_PENDING; /* ask again */
	} else {
		nm = udp_name_new(a, name);
		if (nm == NULL) {
			log_debug("datagram dropped: every name slot is waiting for an answer");
			return;
		}
		nm->last_used = udp_now(a);
	}
	if (!udp_hold(a, nm, port, data, len)) {
		log_debug("datagram dropped: too many waiting for names");
		/* The name is still worth asking for: the next datagram finds it answered. */
	}
	log_debug("resolving %s", name);
	/* The answer may come at once (/etc/hosts, a numeric name): udp_resolved then runs inside. */
	rc = resolver_query(a->w->resolver, name, 0, udp_resolved, nm, &q);
	if (rc != ST_OK) {
		log_debug("resolution not started: %s", status_str(rc));
		nm->state = NAME_FAILED;
		nm->failed_at = udp_now(a);
		udp_held_drop_all(a, nm);
	} else if (q != NULL) {
		nm->query = q;
	}
}

/* ---- the relay socket ------------------------------------------------------------------------ */

/* One datagram from the relay socket: RFC 1928 §7, checked and relayed or dropped. */
static void udp_from_client(struct udp_assoc *a, const struct addr *from, const uint8_t *p,
			    size_t len)
{
	struct socks_udp_header h;
	char site[EGRESS_SITE_MAX];
	struct addr dst;
	int n;

	/* Only the client may use its relay: its address, and its port once known. */
	if (!addr_equal_ip(from, &a->client) ||
	    (a->client_port_known && addr_port(from) != addr_port(&a->client))) {
		log_debug("datagram from another address than the client's dropped");
		return;
	}
	if (!a->client_port_known) {
		addr_set_port(&a->client, addr_port(from));
		a->client_port_known = true;
	}
	n = socks_parse_udp_header(p, len, &h);
	if (n < 0) {
		log_debug("malformed datagram header dropped: %s", status_str(n));
		return;
	}
	/* RFC 1928 §7: an implementation that does not support fragmentation MUST drop any
	 * datagram whose FRAG field is other than X'00'. */
	if (h.frag != 0) {
		log_debug("fragment dropped (FRAG %u)", (unsigned)h.frag);
		return;
	}
	if (!udp_bucket_take(&a->bucket, udp_now(a))) {
		log_debug("datagram over the rate dropped");
		return;
	}
	p += n;
	len -= (size_t)n;
	switch (h.dst.atyp) {
	case SOCKS_ATYP_IPV4:
		addr_from_ipv4(&dst, h.dst.u.ipv4, h.dst.port);
		break;
	case SOCKS_ATYP_IPV6:
		addr_from_ipv6(&dst, h.dst.u.ipv6, h.dst.port);
		break;
	default:
		udp_relay_to_name(a, h.dst.u.domain.name, h.dst.port, p, len);
		return;
	}
	egress_site_of_addr(&dst, site);
	udp_relay_out(a, &dst, 1, site, p, len);
}

static void udp_client_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct udp_assoc *a = container_of(io, struct udp_assoc, cio);
	uint8_t *buf = a->w->udp_buf;

	UNUSED(loop);
	UNUSED(revents);
	for (int i = 0; i < UDP_BATCH; i++) {
		struct addr from;
		ssize_t n;

		from.len = sizeof(from.u);
		n = recvfrom(a->cfd, buf, UDP_BUF_SIZE, 0, &from.u.sa, &from.len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break; /* EAGAIN: drained. Anything else concerns one datagram. */
		}
		udp_from_client(a, &from, buf, (size_t)n);
	}
}

/* ---- target -> client ------------------------------------------------------------------------- */

static void udp_egress_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct udp_sock *k = container_of(io, struct udp_sock, io);
	struct udp_assoc *a = k->a;
	uint8_t *payload = a->w->udp_buf + SOCKS_UDP_HEADER_MAX;

	UNUSED(loop);
	UNUSED(revents);
	for (int i = 0; i < UDP_BATCH; i++) {
		uint8_t hdr[SOCKS_UDP_HEADER_MAX];
		struct addr from;
		size_t hlen;
		ssize_t n;

		from.len = sizeof(from.u);
		n = recvfrom(k->fd, payload, UDP_PAYLOAD_MAX, 0, &from.u.sa, &from.len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		/* No open reflector: only targets the client sent to may answer it. */
		if (!a->client_port_known || !udp_peers_has(&a->peers, &from)) {
			log_debug("datagram from a peer the client never sent to dropped");
			continue;
		}
		if (!udp_bucket_take(&a->bucket, udp_now(a))) {
			log_debug("datagram over the rate dropped");
			continue;
		}
		/* RFC 1928 §7: the header names where the datagram came from. */
		hlen = socks_write_udp_header(hdr, sizeof(hdr), &from);
		if (hlen == 0)
			continue;
		memcpy(payload - hlen, hdr, hlen);
		if (sendto(a->cfd, payload - hlen, hlen + (size_t)n, 0, &a->client.u.sa,
			   a->client.len) < 0) {
			log_debug("datagram for the client not sent: %s", strerror(errno));
			continue;
		}
		k->down += (uint64_t)n;
		k->datagrams++;
		k->last_used = a->last_active = udp_now(a);
	}
}

/* ---- life cycle -------------------------------------------------------------------------------- */

int udp_assoc_new(struct worker *w, int ctl_fd, const struct addr *client,
		  const struct socks_target *expect, const struct egress_params *params,
		  struct udp_assoc **out, struct addr *relay)
{
	struct server *srv = w->srv;
	struct udp_assoc *a;
	struct addr local, expected;
	int bind_failed, fd, rc;

	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return ST_ENOMEM;
	a->w = w;
	a->cfd = -1;
	a->params = *params;
	a->client = *client;
	/* The user's places; a client without a login is counted by its address, an IPv6 one by
	 * its /64, as addr_client_key counts clients (here as text, the quota table's key). */
	if (params->name[0] != '\0') {
		snprintf(a->quota_key, sizeof(a->quota_key), "%s", params->name);
	} else {
		struct addr net = *client;
		char ip[ADDR_STRLEN];

		if (addr_family(&net) == AF_INET6)
			memset(net.u.sin6.sin6_addr.s6_addr + 8, 0, 8);
		snprintf(a->quota_key, sizeof(a->quota_key), "@%s%s",
			 addr_format_ip(&net, ip, sizeof(ip)),
			 addr_family(&net) == AF_INET6 ? "/64" : "");
	}
	rc = quota_take(srv->udp_quota, a->quota_key, srv->cfg.udp_per_user);
	if (rc != ST_OK) {
		free(a);
		return rc;
	}
	if (w->udp_buf == NULL) {
		w->udp_buf = malloc(UDP_BUF_SIZE);
		if (w->udp_buf == NULL) {
			rc = ST_ENOMEM;
			goto fail;
		}
	}
	/* The relay listens where the client reached us: an address it can send to. */
	local.len = sizeof(local.u);
	if (getsockname(ctl_fd, &local.u.sa, &local.len) < 0) {
		rc = ST_ESYS;
		goto fail;
	}
	addr_set_port(&local, 0);
	rc = egress_udp(addr_family(&local), &local, 0, &fd, &bind_failed);
	if (rc != ST_OK)
		goto fail;
	a->cfd = fd;
	relay->len = sizeof(relay->u);
	if (getsockname(fd, &relay->u.sa, &relay->len) < 0) {
		rc = ST_ESYS;
		goto fail;
	}
	/*
	 * RFC 1928 §4: DST.ADDR/DST.PORT name where the client will send from. The port is taken when
	 * the address is zero or the client's own; another address means a translation between us
	 * (a client behind NAT naming its private address), which moves ports too: the first
	 * datagram fixes the port then. The address is always the control connection's peer.
	 */
	if (expect->atyp != SOCKS_ATYP_DOMAIN && expect->port != 0) {
		static const uint8_t zero[16];
		bool is_zero;

		if (expect->atyp == SOCKS_ATYP_IPV4) {
			addr_from_ipv4(&expected, expect->u.ipv4, expect->port);
			is_zero = memcmp(expect->u.ipv4, zero, 4) == 0;
		} else {
			addr_from_ipv6(&expected, expect->u.ipv6, expect->port);
			is_zero = memcmp(expect->u.ipv6, zero, 16) == 0;
		}
		if (is_zero || addr_equal_ip(&expected, client)) {
			addr_set_port(&a->client, expect->port);
			a->client_port_known = true;
		}
	}
	a->last_active = ev_now(w->loop);
	udp_bucket_init(&a->bucket, srv->cfg.udp_rate, a->last_active);
	udp_peers_init(&a->peers);
	ev_io_init(&a->cio, udp_client_cb, fd, EV_READ);
	ev_io_start(w->loop, &a->cio);
	*out = a;
	return ST_OK;
fail:
	udp_assoc_free(a);
	return rc;
}

double udp_assoc_last_active(const struct udp_assoc *a)
{
	return a->last_active;
}

void udp_assoc_flush(struct udp_assoc *a)
{
	for (size_t i = 0; i < a->nsocks; i++)
		udp_sock_flush(a, a->socks[i]);
}

void udp_assoc_free(struct udp_assoc *a)
{
	int saved = errno;

	if (a == NULL)
		return;
	while (a->nsocks > 0)
		udp_sock_close(a, a->nsocks - 1);
	for (size_t i = 0; i < a->nnames; i++) {
		if (a->names[i]->query != NULL)
			resolve_cancel(a->names[i]->query);
		free(a->names[i]);
	}
	udp_held_drop_all(a, NULL);
	if (a->cfd >= 0) {
		ev_io_stop(a->w->loop, &a->cio);
		close(a->cfd);
	}
	if (a->rot != NULL)
		explicit_bzero(a->rot, UDP_ROTATIONS_MAX * sizeof(*a->rot));
	free(a->rot);
	quota_release(a->w->srv->udp_quota, a->quota_key);
	free(a);
	errno = saved; /* udp_assoc_new's failure path keeps the errno it reports */
}
