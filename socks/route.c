/* socks/route.c - keys, ranking and health of egress entries. */
#include "socks/route.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "crypto/keys.h"

struct route_health {
	atomic_llong cooldown_until; /* Unix seconds */
	atomic_uint failures;
	atomic_bool dirty;	     /* changed since the last route_health_changed */
};

struct route_state {
	struct egress_index *ix;
	size_t n;
	uint32_t *ids;		     /* ids of the index's entries, ascending */
	const char **addresses;	     /* parallel to ids: canonical text, in the snapshot */
	struct route_health *health; /* parallel to ids */
};

static void route_state_free(void *p)
{
	struct route_state *st = p;

	if (st == NULL)
		return;
	egress_index_free(st->ix);
	free(st->ids);
	free(st->addresses);
	free(st->health);
	free(st);
}

/* Position of id in st->ids, or -1. */
static ptrdiff_t route_find(const struct route_state *st, uint32_t id)
{
	size_t lo = 0, hi = st->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (st->ids[mid] == id)
			return (ptrdiff_t)mid;
		if (st->ids[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

int route_attach(struct snapshot *snap, const struct snapshot *prev)
{
	const struct route_state *old = prev != NULL ? prev->attachment : NULL;
	struct egress_entry *entries = NULL;
	struct egress_tag *tags = NULL;
	struct route_state *st;
	size_t ntags = 0, n = 0, t = 0;
	int rc = ST_ENOMEM;

	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return ST_ENOMEM;
	for (size_t i = 0; i < snap->npool; i++) {
		if (snap->pool[i].enabled) {
			n++;
			ntags += snap->pool[i].ntags;
		}
	}
	entries = calloc(n > 0 ? n : 1, sizeof(*entries));
	tags = calloc(ntags > 0 ? ntags : 1, sizeof(*tags));
	st->ids = calloc(n > 0 ? n : 1, sizeof(*st->ids));
	st->addresses = calloc(n > 0 ? n : 1, sizeof(*st->addresses));
	st->health = calloc(n > 0 ? n : 1, sizeof(*st->health));
	if (entries == NULL || tags == NULL || st->ids == NULL || st->addresses == NULL ||
	    st->health == NULL)
		goto out;
	/* The snapshot's pool is ordered by id, so ids[] comes out sorted. */
	for (size_t i = 0; i < snap->npool; i++) {
		const struct snapshot_pool_entry *pe = &snap->pool[i];
		struct egress_entry *e;
		size_t k = st->n;
		ptrdiff_t was;

		if (!pe->enabled)
			continue;
		e = &entries[k];
		e->id = pe->id;
		e->family = pe->family;
		memcpy(e->addr, pe->addr, sizeof(e->addr));
		e->prefix_len = pe->prefix_len;
		e->weight = pe->weight;
		e->tags = &tags[t];
		e->ntags = pe->ntags;
		for (size_t j = 0; j < pe->ntags; j++, t++) {
			tags[t].key = pe->tags[j].key;
			tags[t].value = pe->tags[j].value;
		}
		st->ids[k] = pe->id;
		st->addresses[k] = pe->address;
		/* Live health from the previous snapshot is fresher than the database's copy. */
		was = old != NULL ? route_find(old, pe->id) : -1;
		if (was >= 0) {
			atomic_init(&st->health[k].cooldown_until,
				    atomic_load(&old->health[was].cooldown_until));
			atomic_init(&st->health[k].failures, atomic_load(&old->health[was].failures));
			atomic_init(&st->health[k].dirty, atomic_load(&old->health[was].dirty));
		} else {
			atomic_init(&st->health[k].cooldown_until, pe->cooldown_until);
			atomic_init(&st->health[k].failures, pe->failures);
			atomic_init(&st->health[k].dirty, false);
		}
		st->n++;
	}
	rc = egress_index_build(entries, st->n, &st->ix);
	if (rc != ST_OK)
		goto out;
	snap->attachment = st;
	snap->attachment_free = route_state_free;
	st = NULL; /* transferred */
out:
	free(entries); /* the index copied what it needs */
	free(tags);
	route_state_free(st);
	return rc;
}

bool route_pool_empty(const struct snapshot *snap)
{
	const struct route_state *st = snap->attachment;

	return st == NULL || st->n == 0;
}

void route_key(const struct snapshot *snap, const char *user, const struct egress_params *p,
	       const char *site, int64_t now, uint8_t key[static EGRESS_KEY_BYTES],
	       uint32_t *ttl_out)
{
	uint8_t base[EGRESS_KEY_BYTES];
	uint32_t ttl = p != NULL && p->has_ttl ? p->ttl : snap->sticky_ttl;
	const char *session = p != NULL ? p->session : "";
	struct keys_part parts[] = {
		{ user, strlen(user) },
		{ session, strlen(session) },
		{ site, strlen(site) },
	};

	*ttl_out = ttl;
	if (ttl == 0) {
		/* Rotation per connection: nothing to remember, nothing derivable. */
		keys_random(key, EGRESS_KEY_BYTES);
		return;
	}
	/* DESIGN.md step 6: key = keyed-hash(user, session, site); the salt never leaves memory. */
	keys_hash(base, snap->salt, parts, ARRAY_SIZE(parts));
	egress_sticky_key(key, base, ttl, now);
	explicit_bzero(base, sizeof(base));
}

int route_rank(const struct snapshot *snap, const uint8_t key[static EGRESS_KEY_BYTES],
	       unsigned families, const struct egress_params *p, int64_t now,
	       struct route_candidate *out, size_t max)
{
	const struct route_state *st = snap->attachment;
	/* Room for every cooling entry of the fast places plus max healthy ones after them. */
	const struct egress_entry *ranked[EGRESS_PICK_FAST + ROUTE_CANDIDATES];
	struct egress_request req = {
		.key = key,
		.families = families,
		.nfilters = p != NULL ? p->nfilters : 0,
		.filters = p != NULL ? p->filters : NULL,
	};
	size_t count = 0, healthy = 0;
	bool cooling[ARRAY_SIZE(ranked)];
	int n;

	if (st == NULL)
		return ST_ENOTFOUND;
	max = MIN(max, (size_t)ROUTE_CANDIDATES);
	/* The first EGRESS_PICK_FAST places come from one table row; a longer ranking scans the
	 * pool, so it is asked for only when some of those places are cooling down. */
	n = egress_pick(st->ix, &req, ranked, EGRESS_PICK_FAST);
	if (n <= 0)
		return n;
	for (int i = 0; i < n; i++) {
		ptrdiff_t k = route_find(st, ranked[i]->id);

		cooling[i] = k >= 0 && atomic_load(&st->health[k].cooldown_until) > now;
		healthy += !cooling[i];
	}
	if (healthy < max && n == EGRESS_PICK_FAST) {
		int more = egress_pick(st->ix, &req, ranked, (size_t)n - healthy + max);

		for (int i = n; i < more; i++) {
			ptrdiff_t k = route_find(st, ranked[i]->id);

			cooling[i] = k >= 0 && atomic_load(&st->health[k].cooldown_until) > now;
		}
		n = more > n ? more : n;
	}
	/* Healthy entries first, cooling ones last, each in the selector's order. */
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < n && count < max; i++) {
			if (cooling[i] != (pass == 1))
				continue;
			out[count].entry = ranked[i];
			out[count].cooling = cooling[i];
			egress_source(ranked[i], key, &out[count].src);
			count++;
		}
	}
	return (int)count;
}

int64_t route_entry_failed(const struct snapshot *snap, const struct egress_entry *e, int64_t now)
{
	const struct route_state *st = snap->attachment;
	ptrdiff_t k = st != NULL ? route_find(st, e->id) : -1;
	unsigned failures;
	int64_t wait;

	if (k < 0)
		return 0;
	failures = atomic_fetch_add(&st->health[k].failures, 1) + 1;
	wait = ROUTE_COOLDOWN_BASE;
	for (unsigned i = 1; i < failures && wait < ROUTE_COOLDOWN_MAX; i++)
		wait *= 2;
	wait = MIN(wait, (int64_t)ROUTE_COOLDOWN_MAX);
	atomic_store(&st->health[k].cooldown_until, now + wait);
	atomic_store(&st->health[k].dirty, true);
	return wait;
}

void route_entry_ok(const struct snapshot *snap, const struct egress_entry *e)
{
	const struct route_state *st = snap->attachment;
	ptrdiff_t k = st != NULL ? route_find(st, e->id) : -1;

	/* Read first: a healthy entry (the common case) costs no shared write. */
	if (k < 0 || atomic_load_explicit(&st->health[k].failures, memory_order_relaxed) == 0)
		return;
	atomic_store(&st->health[k].failures, 0);
	atomic_store(&st->health[k].cooldown_until, 0);
	atomic_store(&st->health[k].dirty, true);
}

const char *route_entry_address(const struct snapshot *snap, const struct egress_entry *e)
{
	const struct route_state *st = snap->attachment;
	ptrdiff_t k = st != NULL ? route_find(st, e->id) : -1;

	return k >= 0 ? st->addresses[k] : "";
}

size_t route_health_changed(const struct snapshot *snap, struct store_health *rows, size_t max)
{
	const struct route_state *st = snap->attachment;
	size_t n = 0;

	for (size_t k = 0; st != NULL && k < st->n && n < max; k++) {
		if (!atomic_exchange(&st->health[k].dirty, false))
			continue;
		rows[n].pool_id = st->ids[k];
		rows[n].cooldown_until = atomic_load(&st->health[k].cooldown_until);
		rows[n].failures = atomic_load(&st->health[k].failures);
		n++;
	}
	return n;
}
