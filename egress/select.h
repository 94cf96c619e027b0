/*
 * egress/select.h - choosing the source address: a pure function of (pool, key, now).
 *
 * The pool is compiled into an index (egress_index_build, slow, off the workers' loops) and then
 * only read (egress_pick, about a microsecond or less for the first EGRESS_PICK_FAST places,
 * whatever the pool size). No SQLite, no sockets, no clock reads here: `now` and the key come
 * from the caller. The index is immutable: any number of threads may pick from it at once.
 *
 * How a pick works (the contract the tests hold it to):
 * - The key is 32 secret-keyed bytes per (user, session, site), from the caller (crypto's
 *   keys_hash with the server's salt). egress_sticky_key mixes in the time window: the same key
 *   gives the same window for `ttl` seconds, and each key's windows start at its own phase, so
 *   keys do not all move at one shared instant.
 * - A ranking is weighted rendezvous hashing over a fixed slot space: the key falls on one slot;
 *   every entry has a score for that slot, -ln(1 - u)/weight, where u comes from the entry's own
 *   pseudo-random permutation of the slots (the slot's rank in it). The ranking is the entries
 *   in increasing score order. An entry's score never depends on the other entries, so:
 * - Weighted and stable: each entry gets its weight's share of keys; removing an entry moves only
 *   the keys that were on it; adding one moves about weight/total of the keys, all onto it. And
 *   removing the pick makes the second-ranked entry the pick, the third the second, and so on.
 * - Filters: only entries of an allowed family and carrying every required tag are eligible.
 *   The ranking of a request is a ranking restricted to its eligible entries, so a failed pick
 *   can fall back to the next-ranked entries (health: the caller skips entries cooling down).
 *   Requests without tag filters are ranked in one space (about 2^20 slots), requests with tag
 *   filters in another (about 2^16): the same key may pick a different entry with a tag filter
 *   than without, but within either kind a filter only removes entries from the ranking. Tag
 *   values match ASCII case-insensitively.
 */
#ifndef SHROUD_EGRESS_SELECT_H
#define SHROUD_EGRESS_SELECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/addr.h"
#include "base/compiler.h"
#include "egress/params.h"

#define EGRESS_KEY_BYTES 32

/* egress_pick answers this many places of a ranking from the index's tables (a row read and a
 * few scores); a longer ranking costs a scan (see egress_pick). */
#define EGRESS_PICK_FAST 4

#define EGRESS_FAMILY_V4 0x1
#define EGRESS_FAMILY_V6 0x2

struct egress_tag {
	const char *key;
	const char *value;
};

/* One pool entry as the index takes it; strings and arrays are copied by egress_index_build. */
struct egress_entry {
	uint32_t id;	    /* the pool row id: stable identity, hashed to place the entry */
	int family;	    /* AF_INET or AF_INET6 */
	uint8_t addr[16];   /* network order; IPv4 in the first 4 bytes */
	uint8_t prefix_len; /* 32 (IPv4) or 128 (IPv6) for one address; 32..127 for an IPv6 prefix */
	uint32_t weight;    /* >= 1 */
	size_t ntags;
	const struct egress_tag *tags; /* key and value: 1..EGRESS_TAG_MAX of [A-Za-z0-9_.] */
};

struct egress_index;

/*
 * Compile entries (only the active ones: the caller filters disabled entries out) into an index.
 * Allocates about 200 bytes per entry, plus a table of 16 MiB per family with more than 128
 * entries and one of 1 MiB per tag value and family with more than 128 entries (at most 32 of
 * those, the largest first); 100,000 entries in two families with 10 tag values take ~70 MiB.
 * Takes about 0.1 s per family table and 7 ms per tag table, whatever the pool size (~0.45 s
 * for that pool; nothing for a pool of at most 128 entries per family): call it off the workers'
 * loops.
 * ST_OK, ST_ENOMEM, ST_EINVAL (weight 0, bad family or prefix, a tag key or value empty, too long
 * or outside [A-Za-z0-9_.], duplicate id, more than EGRESS_INDEX_MAX entries); *out is set only on
 * success.
 */
#define EGRESS_INDEX_MAX 1000000
NODISCARD int egress_index_build(const struct egress_entry *entries, size_t n,
				 struct egress_index **out);
void egress_index_free(struct egress_index *ix);

/* The number of entries in the index, and entry i (0 <= i < count; NULL otherwise), in the
 * caller's order. The entry and its tags live as long as the index. */
size_t egress_index_count(const struct egress_index *ix);
const struct egress_entry *egress_index_entry(const struct egress_index *ix, size_t i);

/*
 * The key for this window: `base` is keys_hash(salt, user | session | site). With ttl 0 the
 * caller passes fresh random bytes as base instead (a new address per connection), and out is
 * base. Otherwise phase = (first 8 bytes of base, little-endian) mod ttl, window =
 * floor((now + phase) / ttl), out = keys_hash(base, "window" | window as 8 bytes little-endian).
 */
void egress_sticky_key(uint8_t out[static EGRESS_KEY_BYTES],
		       const uint8_t base[static EGRESS_KEY_BYTES], uint32_t ttl, int64_t now);

struct egress_request {
	const uint8_t *key;    /* EGRESS_KEY_BYTES */
	unsigned families;     /* EGRESS_FAMILY_* the target has */
	size_t nfilters;       /* every filter must match a tag of the entry; at most
				* EGRESS_TAGS_MAX + 1 (what egress_params gives) */
	const struct egress_tag_filter *filters;
};

/*
 * Rank the eligible entries for req: out[0] is the pick, out[1..] the fallbacks in order, all
 * distinct; at most max (>= 1). Returns the count (> 0), or:
 *   ST_EPERM       no entry of any family carries the required tags    (SOCKS REP 0x02)
 *   ST_EADDRTYPE   entries carry the tags, but none of the families    (SOCKS REP 0x04)
 *   ST_ENOTFOUND   the index is empty
 *   ST_EINVAL      max 0, no key, or more filters than EGRESS_TAGS_MAX + 1
 * Never allocates, blocks or logs. Cost: with max <= EGRESS_PICK_FAST, a few hundred
 * nanoseconds whatever the pool size when a table answers: no filter, a family filter, or one
 * tag filter, on a family (or tag value) with more than 128 entries. Otherwise the candidates
 * are scanned, 5 to 10 ns per entry of the allowed families (no tag filter) or of the smallest
 * required tag: a microsecond or two for a small set, but up to half a millisecond at 100,000
 * entries for max > EGRESS_PICK_FAST, or for filters the table rows rarely satisfy (two tags
 * of which the rarer still has thousands of entries). Ask for EGRESS_PICK_FAST places, and for
 * more only when those are all unusable.
 */
NODISCARD int egress_pick(const struct egress_index *ix, const struct egress_request *req,
			  const struct egress_entry **out, size_t max);

/* The address to bind for entry e and key: the entry's address, or for a prefix the prefix with
 * host bits from keys_hash(key, "prefix host" | id) (never all-zero: then the last bit is set),
 * so it is stable for the key's window and differs between prefixes. Port 0. */
void egress_source(const struct egress_entry *e, const uint8_t key[static EGRESS_KEY_BYTES],
		   struct addr *out);

#endif
