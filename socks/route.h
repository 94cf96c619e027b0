/*
 * socks/route.h - from a request to ranked source addresses: the glue between the snapshot, the
 * pure selector (egress/select.h) and the health of pool entries.
 *
 * A route_state is built by the control thread for each new snapshot (the egress index, which
 * takes a while for big pools, plus one health record per entry) and hangs on the snapshot as its
 * attachment, so workers use it through the snapshot they already hold and it is freed with it.
 *
 * Health is the only mutable part: an entry whose bind failed, or whose route was unreachable,
 * cools down (5 s, doubling per consecutive failure, at most 10 min) and comes back by itself when
 * its time ends; a success resets it. Workers update it with atomics; the control thread carries it
 * over to the next snapshot and writes what changed to the database (pool_health) every few seconds,
 * so `shroud pool list` shows it and a restart keeps it. An update racing with a snapshot switch
 * may be lost; the next failure records it again.
 */
#ifndef SHROUD_SOCKS_ROUTE_H
#define SHROUD_SOCKS_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/addr.h"
#include "base/compiler.h"
#include "egress/bind.h"
#include "egress/params.h"
#include "egress/select.h"
#include "store/snapshot.h"
#include "store/store.h"

#define ROUTE_COOLDOWN_BASE 5	/* seconds, first cool-down */
#define ROUTE_COOLDOWN_MAX 600	/* seconds */
#define ROUTE_CANDIDATES EGRESS_PICK_FAST /* source addresses tried per connection, at most */

/*
 * Build the route state of snap (the egress index over its enabled pool entries, and health from
 * prev's live records where the entry was already there, else from the database) and attach it.
 * Slow for big pools: control thread only. ST_OK, ST_ENOMEM, ST_EINVAL (bad pool row).
 */
NODISCARD int route_attach(struct snapshot *snap, const struct snapshot *prev);

/* True when the pool has no enabled entry: connections leave from the system's default address. */
bool route_pool_empty(const struct snapshot *snap);

/*
 * The selection key of a request: keyed hash (salt) of (user, session, site), in its TTL window.
 * ttl 0 makes a fresh random key (a new address per connection). *ttl_out gets the TTL used
 * (the request's, else the snapshot's sticky_ttl).
 */
void route_key(const struct snapshot *snap, const char *user, const struct egress_params *p,
	       const char *site, int64_t now, uint8_t key[static EGRESS_KEY_BYTES],
	       uint32_t *ttl_out);

struct route_candidate {
	const struct egress_entry *entry;
	struct addr src; /* the address to bind, port 0 */
	bool cooling;	 /* tried only when no healthy one is left */
};

/* How to bind a candidate's source: a prefix entry's address is one of many routed to this host,
 * on no interface, so it needs EGRESS_FREEBIND; a single address does not. */
static inline unsigned route_candidate_flags(const struct route_candidate *c)
{
	return c->entry->prefix_len < (c->entry->family == AF_INET6 ? 128 : 32) ? EGRESS_FREEBIND : 0;
}

/*
 * Rank up to max (<= ROUTE_CANDIDATES) candidates for key among entries of `families`
 * (EGRESS_FAMILY_*) that match the filters: healthy ones first in selector order, then cooling
 * ones. The selector's fast places are usually enough; when some of them are cooling, a longer
 * ranking is asked for (a scan of the pool: only while addresses are failing). Returns the count
 * (> 0) or egress_pick's error (ST_EPERM: tags match nothing, ST_EADDRTYPE: no such family).
 */
NODISCARD int route_rank(const struct snapshot *snap, const uint8_t key[static EGRESS_KEY_BYTES],
			 unsigned families, const struct egress_params *p, int64_t now,
			 struct route_candidate *out, size_t max);

/* The entry failed in a way that is its own fault (EADDRNOTAVAIL at bind, unreachable route):
 * cool it down. Returns the cool-down in seconds. */
int64_t route_entry_failed(const struct snapshot *snap, const struct egress_entry *e, int64_t now);

/* The entry just connected: clear its failures. */
void route_entry_ok(const struct snapshot *snap, const struct egress_entry *e);

/* The canonical address text of an entry (for usage counters), valid as long as snap. */
const char *route_entry_address(const struct snapshot *snap, const struct egress_entry *e);

/* Collect up to max health records changed since the last call (control thread). */
size_t route_health_changed(const struct snapshot *snap, struct store_health *rows, size_t max);

#endif
