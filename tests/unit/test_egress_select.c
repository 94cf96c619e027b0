/*
 * tests/unit/test_egress_select.c - the egress index and pick (egress/select.h): weighted shares,
 * stability when the pool changes, sticky windows, filters and their statuses, fallback order,
 * prefix addresses, build errors. The measurements are printed and asserted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/addr.h"
#include "base/status.h"
#include "crypto/pwhash.h"
#include "egress/select.h"

#define KEYS 100000
#define ALL_FAMILIES (EGRESS_FAMILY_V4 | EGRESS_FAMILY_V6)
#define RANK_MAX 64

/* ---- helpers ----------------------------------------------------------------------------- */

/* Deterministic pseudo-random keys (splitmix64), so a failure reproduces. */
static uint64_t splitmix(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void key_of(uint64_t i, uint8_t key[EGRESS_KEY_BYTES])
{
	uint64_t st = i * 0x2545f4914f6cdd1dULL + 12345;

	for (int w = 0; w < EGRESS_KEY_BYTES / 8; w++) {
		uint64_t v = splitmix(&st);

		memcpy(key + 8 * w, &v, 8);
	}
}

/* A pool under construction: entries and the tags they point to. */
struct pool {
	size_t n;
	struct egress_entry e[1200];
	struct egress_tag tags[1200][2];
};

/* Entry i gets id `id`, family and weight; IPv4 10.x.y.z or IPv6 2001:db8:x::/64. */
static void pool_add(struct pool *p, uint32_t id, int family, uint32_t weight)
{
	struct egress_entry *e = &p->e[p->n];

	assert_true(p->n < sizeof(p->e) / sizeof(p->e[0]));
	memset(e, 0, sizeof(*e));
	e->id = id;
	e->family = family;
	e->weight = weight;
	if (family == AF_INET) {
		e->prefix_len = 32;
		e->addr[0] = 10;
		e->addr[1] = (uint8_t)(id >> 16);
		e->addr[2] = (uint8_t)(id >> 8);
		e->addr[3] = (uint8_t)id;
	} else {
		e->prefix_len = 128;
		e->addr[0] = 0x20;
		e->addr[1] = 0x01;
		e->addr[2] = 0x0d;
		e->addr[3] = 0xb8;
		e->addr[4] = (uint8_t)(id >> 8);
		e->addr[5] = (uint8_t)id;
		e->addr[15] = 1;
	}
	p->n++;
}

static void pool_tag(struct pool *p, size_t i, size_t t, const char *key, const char *value)
{
	p->tags[i][t] = (struct egress_tag){ key, value };
	p->e[i].tags = p->tags[i];
	p->e[i].ntags = t + 1;
}

/* The pool without entry `skip` (an index), tags kept. */
static void pool_without(const struct pool *src, size_t skip, struct pool *dst)
{
	dst->n = 0;
	for (size_t i = 0; i < src->n; i++) {
		if (i == skip)
			continue;
		dst->e[dst->n] = src->e[i];
		memcpy(dst->tags[dst->n], src->tags[i], sizeof(src->tags[i]));
		if (src->e[i].ntags > 0)
			dst->e[dst->n].tags = dst->tags[dst->n];
		dst->n++;
	}
}

static struct egress_index *build(const struct pool *p)
{
	struct egress_index *ix = NULL;

	assert_int_equal(egress_index_build(p->e, p->n, &ix), ST_OK);
	assert_non_null(ix);
	assert_int_equal(egress_index_count(ix), p->n);
	return ix;
}

/* The ranking of key i as ids; returns the count (or the error status). */
static int rank_ids(const struct egress_index *ix, uint64_t i, unsigned families,
		    const struct egress_tag_filter *filters, size_t nfilters, uint32_t *ids,
		    size_t max)
{
	const struct egress_entry *out[RANK_MAX];
	uint8_t key[EGRESS_KEY_BYTES];
	struct egress_request req = { key, families, nfilters, filters };
	int n;

	assert_true(max <= RANK_MAX);
	key_of(i, key);
	n = egress_pick(ix, &req, out, max);
	for (int j = 0; j < n; j++)
		ids[j] = out[j]->id;
	return n;
}

static uint32_t pick_id(const struct egress_index *ix, uint64_t i)
{
	uint32_t id;

	assert_int_equal(rank_ids(ix, i, ALL_FAMILIES, NULL, 0, &id, 1), 1);
	return id;
}

static const struct egress_entry *entry_by_id(const struct egress_index *ix, uint32_t id)
{
	for (size_t i = 0; i < egress_index_count(ix); i++) {
		if (egress_index_entry(ix, i)->id == id)
			return egress_index_entry(ix, i);
	}
	fail_msg("no pool entry with id %u", id);
	abort(); /* not reached: fail_msg ends the test (and tells gcc there is no NULL to deref) */
}

static bool entry_has_tag(const struct egress_entry *e, const char *key, const char *value)
{
	for (size_t t = 0; t < e->ntags; t++) {
		if ((key[0] == '\0' || strcasecmp(e->tags[t].key, key) == 0) &&
		    strcasecmp(e->tags[t].value, value) == 0)
			return true;
	}
	return false;
}

/* Every place distinct and eligible. */
static void assert_ranking_valid(const struct egress_index *ix, const uint32_t *ids, int n,
				 unsigned families, const struct egress_tag_filter *filters,
				 size_t nfilters)
{
	assert_true(n > 0);
	for (int j = 0; j < n; j++) {
		const struct egress_entry *e = entry_by_id(ix, ids[j]);

		assert_non_null(e);
		assert_true(families & (e->family == AF_INET ? EGRESS_FAMILY_V4 : EGRESS_FAMILY_V6));
		for (size_t f = 0; f < nfilters; f++)
			assert_true(entry_has_tag(e, filters[f].key, filters[f].value));
		for (int k = 0; k < j; k++)
			assert_int_not_equal(ids[k], ids[j]);
	}
}

/* ---- spread ----------------------------------------------------------------------------- */

static void check_spread(const uint32_t *weights, size_t n, const char *what)
{
	struct pool *p = calloc(1, sizeof(*p));
	struct egress_index *ix;
	uint64_t total = 0;
	size_t counts[16] = { 0 };

	assert_non_null(p);
	for (size_t i = 0; i < n; i++) {
		pool_add(p, (uint32_t)(i + 1), AF_INET, weights[i]);
		total += weights[i];
	}
	ix = build(p);
	for (uint64_t k = 0; k < KEYS; k++)
		counts[pick_id(ix, k) - 1]++;
	printf("  spread, %s:", what);
	for (size_t i = 0; i < n; i++) {
		double expected = (double)KEYS * weights[i] / (double)total;
		double rel = (double)counts[i] / expected - 1.0;

		printf(" w%u %.2f%%", weights[i], rel * 100.0);
		if (rel > 0.05 || rel < -0.05)
			fail_msg("entry %zu (weight %u): %zu keys, expected %.0f +- 5%%", i, weights[i],
				 counts[i], expected);
	}
	printf(" (share off its weight's, relative)\n");
	egress_index_free(ix);
	free(p);
}

static void test_spread_weighted(void **state)
{
	static const uint32_t w[] = { 1, 2, 3, 4, 10 };

	(void)state;
	check_spread(w, 5, "weights 1,2,3,4,10");
}

static void test_spread_equal(void **state)
{
	static const uint32_t w[] = { 1, 1, 1, 1, 1, 1, 1 };

	(void)state;
	check_spread(w, 7, "7 equal");
}

/* The same through the tables (more than 128 entries per family): per weight class. */
static void test_spread_with_tables(void **state)
{
	struct pool *p = calloc(1, sizeof(*p));
	struct egress_index *ix;
	size_t heavy = 0;

	(void)state;
	assert_non_null(p);
	for (uint32_t i = 0; i < 400; i++)
		pool_add(p, i + 1, AF_INET, i % 4 == 0 ? 5 : 1); /* 100 x 5, 300 x 1: half each */
	ix = build(p);
	for (uint64_t k = 0; k < KEYS; k++) {
		if (pick_id(ix, k) % 4 == 1)
			heavy++;
	}
	printf("  spread, 400 entries in tables: weight-5 class %.2f%% of keys (expected 62.50%%)\n",
	       100.0 * (double)heavy / KEYS);
	assert_true(heavy > 0.625 * KEYS * 0.97 && heavy < 0.625 * KEYS * 1.03);
	egress_index_free(ix);
	free(p);
}

/* ---- stability -------------------------------------------------------------------------- */

static void check_remove_add(size_t n, uint64_t nkeys)
{
	struct pool *p = calloc(1, sizeof(*p)), *q = calloc(1, sizeof(*q));
	uint32_t *before = calloc(nkeys, sizeof(*before));
	struct egress_index *ix, *ix2;
	size_t removed = n / 3, on_removed = 0, moved = 0, moved_elsewhere = 0;
	uint32_t removed_id, added_id = 100000;

	assert_non_null(p);
	assert_non_null(q);
	assert_non_null(before);
	for (size_t i = 0; i < n; i++)
		pool_add(p, (uint32_t)(i * 7 + 3), i % 5 == 0 ? AF_INET6 : AF_INET, 1);
	removed_id = p->e[removed].id;
	ix = build(p);
	for (uint64_t k = 0; k < nkeys; k++) {
		before[k] = pick_id(ix, k);
		on_removed += before[k] == removed_id;
	}

	/* Remove one: exactly the keys that were on it move. */
	pool_without(p, removed, q);
	ix2 = build(q);
	for (uint64_t k = 0; k < nkeys; k++) {
		uint32_t now = pick_id(ix2, k);

		if (now != before[k]) {
			moved++;
			if (before[k] != removed_id)
				moved_elsewhere++;
		}
	}
	printf("  stability, n=%zu: remove one: %.3f%% of keys moved, %.3f%% were on it, %zu others\n",
	       n, 100.0 * (double)moved / (double)nkeys, 100.0 * (double)on_removed / (double)nkeys,
	       moved_elsewhere);
	assert_int_equal(moved_elsewhere, 0);
	assert_int_equal(moved, on_removed);
	egress_index_free(ix2);

	/* Add one: the keys that move all move onto it, about 1/(n+1) of them. */
	pool_add(p, added_id, AF_INET, 1);
	ix2 = build(p);
	moved = moved_elsewhere = 0;
	for (uint64_t k = 0; k < nkeys; k++) {
		uint32_t now = pick_id(ix2, k);

		if (now != before[k]) {
			moved++;
			if (now != added_id)
				moved_elsewhere++;
		}
	}
	printf("  stability, n=%zu: add one: %.3f%% of keys moved (1/(n+1) = %.3f%%), %zu elsewhere\n",
	       n, 100.0 * (double)moved / (double)nkeys, 100.0 / (double)(n + 1), moved_elsewhere);
	assert_int_equal(moved_elsewhere, 0);
	assert_true(moved > 0);
	assert_true((double)moved <= 1.25 * (double)nkeys / (double)(n + 1));

	egress_index_free(ix2);
	egress_index_free(ix);
	free(before);
	free(q);
	free(p);
}

static void test_stability(void **state)
{
	(void)state;
	check_remove_add(50, KEYS);
}

/* The same where the family tables answer (400 entries, 320 of them IPv4). */
static void test_stability_with_tables(void **state)
{
	(void)state;
	check_remove_add(400, KEYS);
}

/* ---- sticky keys ------------------------------------------------------------------------ */

static void sticky(uint64_t i, uint32_t ttl, int64_t now, uint8_t out[EGRESS_KEY_BYTES])
{
	uint8_t base[EGRESS_KEY_BYTES];

	key_of(i, base);
	egress_sticky_key(out, base, ttl, now);
}

static void test_sticky_window_changes_once_per_ttl(void **state)
{
	static const uint32_t ttls[] = { 1, 7, 600 };

	(void)state;
	for (size_t x = 0; x < sizeof(ttls) / sizeof(ttls[0]); x++) {
		uint32_t ttl = ttls[x];
		int64_t start = 1700000000, last_change = -1;
		uint8_t prev[EGRESS_KEY_BYTES], cur[EGRESS_KEY_BYTES];
		int changes = 0;

		sticky(42, ttl, start, prev);
		for (int64_t t = start + 1; t <= start + 3 * (int64_t)ttl; t++) {
			sticky(42, ttl, t, cur);
			if (memcmp(cur, prev, sizeof(cur)) != 0) {
				if (last_change >= 0)
					assert_int_equal(t - last_change, ttl);
				last_change = t;
				changes++;
			}
			memcpy(prev, cur, sizeof(cur));
		}
		assert_int_equal(changes, 3);
	}
}

/* The first moment in (0, ttl] where key i's window differs from the one at t0 (monotone). */
static int64_t first_change(uint64_t i, uint32_t ttl, int64_t t0)
{
	uint8_t at0[EGRESS_KEY_BYTES], cur[EGRESS_KEY_BYTES];
	int64_t lo = 0, hi = ttl; /* same at lo; differs at hi (the window has moved by then) */

	sticky(i, ttl, t0, at0);
	sticky(i, ttl, t0 + hi, cur);
	assert_memory_not_equal(at0, cur, sizeof(cur));
	while (hi - lo > 1) {
		int64_t mid = (lo + hi) / 2;

		sticky(i, ttl, t0 + mid, cur);
		if (memcmp(at0, cur, sizeof(cur)) == 0)
			lo = mid;
		else
			hi = mid;
	}
	return hi;
}

static void test_sticky_phases_spread(void **state)
{
	const uint32_t ttl = 600;
	const int nkeys = 10000;
	int buckets[10] = { 0 }, worst = 0;

	(void)state;
	for (int i = 0; i < nkeys; i++) {
		/* The moment of change in [0, 600): a change at 600 is one at 0 of the next. */
		int64_t t = first_change((uint64_t)i, ttl, 1700000000) % ttl;

		buckets[t / 60]++;
	}
	printf("  ttl 600, 10000 keys, changes per 60 s bucket:");
	for (int b = 0; b < 10; b++) {
		printf(" %d", buckets[b]);
		worst = buckets[b] > worst ? buckets[b] : worst;
	}
	printf(" (largest %.1f%%)\n", 100.0 * worst / nkeys);
	assert_true(worst <= nkeys * 15 / 100);
}

static void test_sticky_ttl0_and_keys(void **state)
{
	uint8_t base[EGRESS_KEY_BYTES], out[EGRESS_KEY_BYTES], other[EGRESS_KEY_BYTES];

	(void)state;
	key_of(7, base);
	/* ttl 0: the caller's fresh random bytes are the key, whatever the time. */
	egress_sticky_key(out, base, 0, 1700000000);
	assert_memory_equal(out, base, sizeof(out));
	egress_sticky_key(out, base, 0, -5);
	assert_memory_equal(out, base, sizeof(out));
	/* ttl > 0: never the base itself, different bases differ, the same window is the same. */
	egress_sticky_key(out, base, 600, 1700000000);
	assert_memory_not_equal(out, base, sizeof(out));
	sticky(8, 600, 1700000000, other);
	assert_memory_not_equal(out, other, sizeof(out));
	/* Negative times and the extremes of int64 do not overflow: windows still last ttl. */
	egress_sticky_key(out, base, 10, -1);
	egress_sticky_key(other, base, 10, -11);
	assert_memory_not_equal(out, other, sizeof(out));
	egress_sticky_key(out, base, EGRESS_TTL_MAX, INT64_MAX);
	egress_sticky_key(out, base, EGRESS_TTL_MAX, INT64_MIN);
	/* With ttl 0 and a fresh key per connection, consecutive picks spread over the pool. */
	{
		struct pool *p = calloc(1, sizeof(*p));
		struct egress_index *ix;
		bool seen[4] = { false };

		assert_non_null(p);
		for (uint32_t i = 1; i <= 4; i++)
			pool_add(p, i, AF_INET, 1);
		ix = build(p);
		for (uint64_t k = 0; k < 64; k++) {
			uint8_t key[EGRESS_KEY_BYTES];
			const struct egress_entry *e;
			struct egress_request req = { key, ALL_FAMILIES, 0, NULL };

			key_of(1000 + k, base);
			egress_sticky_key(key, base, 0, 1700000000);
			assert_int_equal(egress_pick(ix, &req, &e, 1), 1);
			seen[e->id - 1] = true;
		}
		for (int i = 0; i < 4; i++)
			assert_true(seen[i]);
		egress_index_free(ix);
		free(p);
	}
}

/* ---- filters and statuses --------------------------------------------------------------- */

/* n entries: every third IPv6 (i % 3 == 2), weights 1..3; country=de on even i, fr on odd;
 * kind=residential on every fifth (written "Residential" on some: values match
 * case-insensitively). For n = 60: 40 IPv4, 20 IPv6, 30 de, 12 residential, 6 both (2 IPv6). */
static void tagged_pool(struct pool *p, size_t n)
{
	p->n = 0;
	for (size_t i = 0; i < n; i++) {
		pool_add(p, (uint32_t)(1000 + i), i % 3 == 2 ? AF_INET6 : AF_INET, 1 + (uint32_t)(i % 3));
		pool_tag(p, i, 0, "country", i % 2 ? "fr" : "de");
		if (i % 5 == 0)
			pool_tag(p, i, 1, "kind", i % 10 == 0 ? "Residential" : "residential");
	}
}

static void test_filters(void **state)
{
	struct pool *p = calloc(1, sizeof(*p));
	struct egress_index *ix;
	const struct egress_tag_filter de = { "country", "de" }, res = { "", "residential" };
	const struct egress_tag_filter de_res[2] = { { "country", "de" }, { "", "RESIDENTIAL" } };
	uint32_t ids[RANK_MAX];

	(void)state;
	assert_non_null(p);
	tagged_pool(p, 60);
	ix = build(p);
	for (uint64_t k = 0; k < 300; k++) {
		size_t maxes[] = { 1, EGRESS_PICK_FAST, RANK_MAX };

		for (size_t m = 0; m < 3; m++) {
			int n;

			n = rank_ids(ix, k, EGRESS_FAMILY_V6, NULL, 0, ids, maxes[m]);
			assert_ranking_valid(ix, ids, n, EGRESS_FAMILY_V6, NULL, 0);
			assert_int_equal(n, MIN(maxes[m], 20));
			n = rank_ids(ix, k, EGRESS_FAMILY_V4, NULL, 0, ids, maxes[m]);
			assert_ranking_valid(ix, ids, n, EGRESS_FAMILY_V4, NULL, 0);
			assert_int_equal(n, MIN(maxes[m], 40));
			n = rank_ids(ix, k, ALL_FAMILIES, &de, 1, ids, maxes[m]);
			assert_ranking_valid(ix, ids, n, ALL_FAMILIES, &de, 1);
			assert_int_equal(n, MIN(maxes[m], 30));
			n = rank_ids(ix, k, EGRESS_FAMILY_V4, &res, 1, ids, maxes[m]);
			assert_ranking_valid(ix, ids, n, EGRESS_FAMILY_V4, &res, 1);
			assert_int_equal(n, MIN(maxes[m], 8));
			n = rank_ids(ix, k, ALL_FAMILIES, &res, 1, ids, maxes[m]);
			assert_int_equal(n, MIN(maxes[m], 12));
			n = rank_ids(ix, k, ALL_FAMILIES, de_res, 2, ids, maxes[m]);
			assert_ranking_valid(ix, ids, n, ALL_FAMILIES, de_res, 2);
			assert_int_equal(n, MIN(maxes[m], 6));
			n = rank_ids(ix, k, EGRESS_FAMILY_V6, de_res, 2, ids, maxes[m]);
			assert_ranking_valid(ix, ids, n, EGRESS_FAMILY_V6, de_res, 2);
			assert_int_equal(n, MIN(maxes[m], 2));
		}
	}
	egress_index_free(ix);
	free(p);
}

/* Within a kind of request, a filter only removes entries from the ranking. */
static void test_filters_restrict_one_ranking(void **state)
{
	struct pool *p = calloc(1, sizeof(*p));
	struct egress_index *ix;
	const struct egress_tag_filter de = { "country", "de" }, res = { "", "residential" };
	const struct egress_tag_filter de_res[2] = { { "country", "de" }, { "", "residential" } };
	uint32_t all[RANK_MAX], sub[RANK_MAX];

	(void)state;
	assert_non_null(p);
	tagged_pool(p, 60);
	ix = build(p);
	for (uint64_t k = 0; k < 500; k++) {
		int na, ns, j = 0;

		/* Unfiltered, restricted to IPv6, is the IPv6 ranking. */
		na = rank_ids(ix, k, ALL_FAMILIES, NULL, 0, all, RANK_MAX);
		assert_int_equal(na, 60);
		ns = rank_ids(ix, k, EGRESS_FAMILY_V6, NULL, 0, sub, RANK_MAX);
		assert_int_equal(ns, 20);
		for (int i = 0; i < na; i++) {
			if (entry_by_id(ix, all[i])->family == AF_INET6)
				assert_int_equal(all[i], sub[j++]);
		}
		assert_int_equal(j, ns);

		/* country-de, restricted to kind residential, is country-de-tag-residential; and
		 * tag-residential restricted to country de is the same ranking. */
		na = rank_ids(ix, k, ALL_FAMILIES, &de, 1, all, RANK_MAX);
		assert_int_equal(na, 30);
		ns = rank_ids(ix, k, ALL_FAMILIES, de_res, 2, sub, RANK_MAX);
		assert_int_equal(ns, 6);
		j = 0;
		for (int i = 0; i < na; i++) {
			if (entry_has_tag(entry_by_id(ix, all[i]), "", "residential"))
				assert_int_equal(all[i], sub[j++]);
		}
		assert_int_equal(j, ns);
		na = rank_ids(ix, k, ALL_FAMILIES, &res, 1, all, RANK_MAX);
		assert_int_equal(na, 12);
		j = 0;
		for (int i = 0; i < na; i++) {
			if (entry_has_tag(entry_by_id(ix, all[i]), "country", "de"))
				assert_int_equal(all[i], sub[j++]);
		}
		assert_int_equal(j, ns);
	}
	egress_index_free(ix);
	free(p);
}

static void test_statuses(void **state)
{
	struct pool *p = calloc(1, sizeof(*p));
	struct egress_index *ix, *empty;
	const struct egress_tag_filter nobody = { "", "mobile" }, de = { "country", "de" };
	const struct egress_tag_filter other_key = { "kind", "de" };
	const struct egress_tag_filter de_fr[2] = { { "country", "de" }, { "country", "fr" } };
	const struct egress_tag_filter v6only = { "", "six" };
	struct egress_tag_filter too_long = { "", "" };
	struct egress_tag_filter many[EGRESS_TAGS_MAX + 2];
	const struct egress_entry *out[4];
	uint8_t key[EGRESS_KEY_BYTES];
	struct egress_request req = { key, ALL_FAMILIES, 0, NULL };
	uint32_t ids[RANK_MAX];

	(void)state;
	assert_non_null(p);
	key_of(1, key);
	/* An empty index. */
	assert_int_equal(egress_index_build(NULL, 0, &empty), ST_OK);
	assert_int_equal(egress_index_count(empty), 0);
	assert_null(egress_index_entry(empty, 0));
	assert_int_equal(egress_pick(empty, &req, out, 4), ST_ENOTFOUND);
	assert_int_equal(egress_pick(NULL, &req, out, 4), ST_ENOTFOUND);
	egress_index_free(empty);

	/* IPv4 only, tagged country=de; one IPv6 entry tagged six. */
	for (uint32_t i = 0; i < 10; i++) {
		pool_add(p, i + 1, AF_INET, 1);
		pool_tag(p, i, 0, "country", "de");
	}
	pool_add(p, 11, AF_INET6, 1);
	pool_tag(p, 10, 0, "net", "six");
	ix = build(p);
	assert_int_equal(rank_ids(ix, 1, ALL_FAMILIES, &nobody, 1, ids, 4), ST_EPERM);
	assert_int_equal(rank_ids(ix, 1, EGRESS_FAMILY_V4, &nobody, 1, ids, 4), ST_EPERM);
	/* "de" is a value, but not of the key "kind". */
	assert_int_equal(rank_ids(ix, 1, ALL_FAMILIES, &other_key, 1, ids, 4), ST_EPERM);
	/* Each tag exists, no entry carries both. */
	assert_int_equal(rank_ids(ix, 1, ALL_FAMILIES, de_fr, 2, ids, 4), ST_EPERM);
	/* The tags match, but not on the target's family. */
	assert_int_equal(rank_ids(ix, 1, EGRESS_FAMILY_V6, &de, 1, ids, 4), ST_EADDRTYPE);
	assert_int_equal(rank_ids(ix, 1, EGRESS_FAMILY_V4, &v6only, 1, ids, 4), ST_EADDRTYPE);
	assert_int_equal(rank_ids(ix, 1, 0, &de, 1, ids, 4), ST_EADDRTYPE);
	assert_int_equal(rank_ids(ix, 1, EGRESS_FAMILY_V6, &v6only, 1, ids, 4), 1);
	assert_int_equal(ids[0], 11);
	assert_int_equal(rank_ids(ix, 1, EGRESS_FAMILY_V4, &de, 1, ids, 64), 10);
	/* A value longer than any tag can be matches nothing. */
	memset(too_long.value, 'x', EGRESS_TAG_MAX);
	assert_int_equal(rank_ids(ix, 1, ALL_FAMILIES, &too_long, 1, ids, 4), ST_EPERM);
	/* Bad arguments. */
	assert_int_equal(egress_pick(ix, &req, out, 0), ST_EINVAL);
	for (size_t i = 0; i < sizeof(many) / sizeof(many[0]); i++)
		many[i] = de;
	assert_int_equal(rank_ids(ix, 1, ALL_FAMILIES, many, EGRESS_TAGS_MAX + 1, ids, 4), 4);
	assert_int_equal(rank_ids(ix, 1, ALL_FAMILIES, many, EGRESS_TAGS_MAX + 2, ids, 4), ST_EINVAL);
	egress_index_free(ix);

	/* No filter, a family the pool lacks. */
	p->n = 3;
	p->e[0].ntags = p->e[1].ntags = p->e[2].ntags = 0;
	ix = build(p);
	assert_int_equal(rank_ids(ix, 1, EGRESS_FAMILY_V6, NULL, 0, ids, 4), ST_EADDRTYPE);
	assert_int_equal(rank_ids(ix, 1, EGRESS_FAMILY_V4, NULL, 0, ids, 4), 3);
	egress_index_free(ix);
	free(p);
}

/* ---- fallback order --------------------------------------------------------------------- */

/* A kind of request: families and filters. */
struct kind {
	unsigned families;
	const struct egress_tag_filter *filters;
	size_t nfilters;
};

/* For entries A that keys pick (for each kind, the picks of keys 0, 1, ... until `victims`
 * distinct ones are found): remove A and rebuild; each key whose ranking (of any kind) started
 * with A now ranks the rest in the same order. Checks `depth` places; returns how many
 * rankings were checked. */
static size_t check_fallback(const struct pool *p, const struct kind *kinds, size_t nkinds,
			     size_t victims, uint64_t nkeys, size_t depth)
{
	struct pool *q = calloc(1, sizeof(*q));
	struct egress_index *ix = build(p), *ix2;
	uint32_t (*before)[16] = calloc(nkeys * nkinds, sizeof(*before));
	int *counts = calloc(nkeys * nkinds, sizeof(*counts));
	uint32_t chosen[64];
	size_t nchosen = 0, checked = 0;

	assert_non_null(q);
	assert_non_null(before);
	assert_non_null(counts);
	assert_true(depth <= 16 && nkinds * victims <= 64);
	for (size_t x = 0; x < nkinds; x++) {
		size_t found = 0;

		for (uint64_t k = 0; k < nkeys; k++) {
			size_t r = x * nkeys + k;
			bool fresh = true;

			counts[r] = rank_ids(ix, k, kinds[x].families, kinds[x].filters,
					     kinds[x].nfilters, before[r], depth);
			if (counts[r] <= 0 || found == victims)
				continue;
			for (size_t c = 0; c < nchosen; c++)
				fresh = fresh && chosen[c] != before[r][0];
			if (fresh) {
				chosen[nchosen++] = before[r][0];
				found++;
			}
		}
	}
	for (size_t c = 0; c < nchosen; c++) {
		size_t victim = p->n;

		for (size_t i = 0; i < p->n; i++) {
			if (p->e[i].id == chosen[c])
				victim = i;
		}
		assert_true(victim < p->n);
		pool_without(p, victim, q);
		ix2 = build(q);
		for (size_t r = 0; r < nkeys * nkinds; r++) {
			const struct kind *kd = &kinds[r / nkeys];
			uint32_t now[16];
			int n;

			if (counts[r] <= 0 || before[r][0] != chosen[c])
				continue;
			n = rank_ids(ix2, r % nkeys, kd->families, kd->filters, kd->nfilters, now,
				     depth);
			if (counts[r] == 1) {
				assert_true(n < 0);
				continue;
			}
			assert_true(n >= counts[r] - 1);
			for (int j = 0; j + 1 < counts[r]; j++)
				assert_int_equal(now[j], before[r][j + 1]);
			checked++;
		}
		egress_index_free(ix2);
	}
	egress_index_free(ix);
	free(counts);
	free(before);
	free(q);
	return checked;
}

static void test_fallback_unfiltered(void **state)
{
	struct pool *p = calloc(1, sizeof(*p));
	const struct kind all = { ALL_FAMILIES, NULL, 0 };
	size_t checked;

	(void)state;
	assert_non_null(p);
	tagged_pool(p, 50);
	checked = check_fallback(p, &all, 1, 50, 5000, 8);
	printf("  fallback, unfiltered: %zu keys, new ranking = old minus its first\n", checked);
	assert_int_equal(checked, 5000); /* every key's pick was removed once */
	free(p);
}

static void test_fallback_filtered(void **state)
{
	struct pool *p = calloc(1, sizeof(*p));
	const struct egress_tag_filter de = { "country", "de" };
	const struct kind de_v4 = { EGRESS_FAMILY_V4, &de, 1 };
	size_t checked;

	(void)state;
	assert_non_null(p);
	tagged_pool(p, 50);
	checked = check_fallback(p, &de_v4, 1, 50, 5000, 8);
	printf("  fallback, country-de on IPv4: %zu keys, new ranking = old minus its first\n",
	       checked);
	assert_int_equal(checked, 5000);
	free(p);
}

/* Where tables answer (900 entries: 600 IPv4, 300 IPv6, 450 de): one pick per kind removed. */
static void test_fallback_with_tables(void **state)
{
	struct pool *p = calloc(1, sizeof(*p));
	const struct egress_tag_filter de = { "country", "de" };
	const struct kind kinds[] = {
		{ ALL_FAMILIES, NULL, 0 },
		{ EGRESS_FAMILY_V6, NULL, 0 },
		{ ALL_FAMILIES, &de, 1 },
	};
	size_t checked;

	(void)state;
	assert_non_null(p);
	tagged_pool(p, 900);
	checked = check_fallback(p, kinds, 3, 1, 20000, EGRESS_PICK_FAST);
	printf("  fallback with tables: %zu rankings, new ranking = old minus its first\n", checked);
	assert_true(checked >= 3 * 20000 / 900);
	free(p);
}

/* The tables answer exactly what a scan answers: the first EGRESS_PICK_FAST places (tables)
 * are the first places of a longer ranking (a scan). */
static void test_tables_agree_with_scans(void **state)
{
	struct pool *p = calloc(1, sizeof(*p));
	struct egress_index *ix;
	const struct egress_tag_filter de = { "country", "de" }, res = { "", "residential" };
	const struct { unsigned fam; const struct egress_tag_filter *f; size_t nf; } kinds[] = {
		{ ALL_FAMILIES, NULL, 0 },    { EGRESS_FAMILY_V4, NULL, 0 },
		{ EGRESS_FAMILY_V6, NULL, 0 }, { ALL_FAMILIES, &de, 1 },
		{ EGRESS_FAMILY_V6, &de, 1 },  { EGRESS_FAMILY_V4, &res, 1 },
	};

	(void)state;
	assert_non_null(p);
	tagged_pool(p, 1200);
	ix = build(p);
	for (size_t x = 0; x < sizeof(kinds) / sizeof(kinds[0]); x++) {
		for (uint64_t k = 0; k < 3000; k++) {
			uint32_t fast[RANK_MAX], slow[RANK_MAX];
			int nf = rank_ids(ix, k, kinds[x].fam, kinds[x].f, kinds[x].nf, fast,
					  EGRESS_PICK_FAST);
			int ns = rank_ids(ix, k, kinds[x].fam, kinds[x].f, kinds[x].nf, slow, 20);

			assert_int_equal(nf, EGRESS_PICK_FAST);
			assert_int_equal(ns, 20);
			assert_memory_equal(fast, slow, sizeof(fast[0]) * EGRESS_PICK_FAST);
			assert_ranking_valid(ix, slow, ns, kinds[x].fam, kinds[x].f, kinds[x].nf);
		}
	}
	egress_index_free(ix);
	free(p);
}

/* ---- addresses -------------------------------------------------------------------------- */

static void test_prefix_source(void **state)
{
	struct egress_entry e = { 0 };
	struct addr a, b;
	uint8_t key[EGRESS_KEY_BYTES], seen[200][16];
	static const uint8_t prefix[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2 };
	const uint8_t *ip;

	(void)state;
	e.id = 9;
	e.family = AF_INET6;
	e.weight = 1;
	memcpy(e.addr, prefix, 16);
	e.addr[15] = 0x77; /* host bits in the entry are not kept */
	e.prefix_len = 64;
	for (int i = 0; i < 200; i++) {
		key_of((uint64_t)i, key);
		egress_source(&e, key, &a);
		assert_int_equal(addr_family(&a), AF_INET6);
		assert_int_equal(addr_port(&a), 0);
		ip = a.u.sin6.sin6_addr.s6_addr;
		assert_memory_equal(ip, prefix, 8);
		assert_false(memcmp(ip + 8, "\0\0\0\0\0\0\0\0", 8) == 0);
		for (int j = 0; j < i; j++)
			assert_memory_not_equal(seen[j], ip, 16);
		memcpy(seen[i], ip, 16);
		/* The same key, the same address. */
		egress_source(&e, key, &b);
		assert_true(addr_equal(&a, &b));
	}
	/* Another prefix entry with the same key: an unrelated host part. */
	key_of(0, key);
	egress_source(&e, key, &a);
	e.id = 10;
	egress_source(&e, key, &b);
	assert_memory_not_equal(a.u.sin6.sin6_addr.s6_addr + 8, b.u.sin6.sin6_addr.s6_addr + 8, 8);

	/* Odd prefix lengths keep exactly the prefix bits; /127 has one host bit, never 0. */
	for (int len = 33; len <= 127; len += 47) {
		e.prefix_len = (uint8_t)len;
		memset(e.addr, 0xff, 16);
		for (int i = 0; i < 50; i++) {
			bool zero = true;

			key_of((uint64_t)i, key);
			egress_source(&e, key, &a);
			ip = a.u.sin6.sin6_addr.s6_addr;
			for (int bit = 0; bit < 128; bit++) {
				int v = (ip[bit / 8] >> (7 - bit % 8)) & 1;

				if (bit < len)
					assert_int_equal(v, 1);
				else if (v)
					zero = false;
			}
			assert_false(zero);
		}
	}
	e.prefix_len = 127;
	memset(e.addr, 0, 16);
	e.addr[0] = 0x20;
	key_of(3, key);
	egress_source(&e, key, &a);
	assert_int_equal(a.u.sin6.sin6_addr.s6_addr[15], 1);

	/* A single address: itself, whatever the key. */
	e.prefix_len = 128;
	e.addr[15] = 0x42;
	egress_source(&e, key, &a);
	assert_memory_equal(a.u.sin6.sin6_addr.s6_addr, e.addr, 16);
	e.family = AF_INET;
	e.prefix_len = 32;
	memcpy(e.addr, "\xc0\x00\x02\x07", 4);
	egress_source(&e, key, &a);
	assert_int_equal(addr_family(&a), AF_INET);
	assert_memory_equal(&a.u.sin.sin_addr, "\xc0\x00\x02\x07", 4);
	assert_int_equal(addr_port(&a), 0);
}

/* ---- building --------------------------------------------------------------------------- */

static void assert_build_fails(const struct egress_entry *e, size_t n, int expected)
{
	struct egress_index *ix = (struct egress_index *)(uintptr_t)0x1;

	assert_int_equal(egress_index_build(e, n, &ix), expected);
	assert_ptr_equal(ix, (struct egress_index *)(uintptr_t)0x1); /* untouched */
}

static void test_build_errors(void **state)
{
	struct pool *p = calloc(1, sizeof(*p));
	struct egress_tag bad_tags[][1] = {
		{ { "kind", "" } },	       { { "", "x" } },
		{ { "kind", "a-b" } },	       { { "kind", "a b" } },
		{ { "ki=nd", "x" } },	       { { NULL, "x" } },
		{ { "kind", NULL } },
		{ { "kind", "123456789012345678901234567890123" } }, /* 33 */
	};
	struct egress_index *ix;

	(void)state;
	assert_non_null(p);
	for (uint32_t i = 0; i < 5; i++)
		pool_add(p, i + 1, i % 2 ? AF_INET6 : AF_INET, 1);
	ix = build(p);
	egress_index_free(ix);

	p->e[2].weight = 0;
	assert_build_fails(p->e, p->n, ST_EINVAL);
	p->e[2].weight = 1;
	p->e[3].id = p->e[1].id; /* duplicate id */
	assert_build_fails(p->e, p->n, ST_EINVAL);
	p->e[3].id = 4;
	p->e[0].prefix_len = 24; /* IPv4 entries are single addresses */
	assert_build_fails(p->e, p->n, ST_EINVAL);
	p->e[0].prefix_len = 32;
	p->e[1].prefix_len = 31; /* IPv6 prefixes: 32..128 */
	assert_build_fails(p->e, p->n, ST_EINVAL);
	p->e[1].prefix_len = 129;
	assert_build_fails(p->e, p->n, ST_EINVAL);
	p->e[1].prefix_len = 32;
	p->e[4].family = AF_UNIX;
	assert_build_fails(p->e, p->n, ST_EINVAL);
	p->e[4].family = AF_INET;
	for (size_t t = 0; t < sizeof(bad_tags) / sizeof(bad_tags[0]); t++) {
		p->e[2].tags = bad_tags[t];
		p->e[2].ntags = 1;
		assert_build_fails(p->e, p->n, ST_EINVAL);
	}
	p->e[2].tags = NULL; /* tags announced, none given */
	assert_build_fails(p->e, p->n, ST_EINVAL);
	p->e[2].ntags = 0;
	assert_build_fails(p->e, EGRESS_INDEX_MAX + 1, ST_EINVAL);
	assert_build_fails(NULL, 1, ST_EINVAL);
	ix = build(p); /* whole again */
	egress_index_free(ix);
	free(p);
}

/* The index keeps its own copies: the caller's entries and strings can go. */
static void test_index_copies(void **state)
{
	struct egress_entry *e = calloc(2, sizeof(*e));
	struct egress_tag *tags = calloc(2, sizeof(*tags));
	char *k = strdup("country"), *v = strdup("Se"), *v2 = strdup("dc");
	struct egress_index *ix;
	const struct egress_entry *c;
	const struct egress_tag_filter se = { "country", "se" }, dc = { "", "dc" };
	uint32_t ids[4];

	(void)state;
	assert_non_null(e);
	assert_non_null(tags);
	e[0] = (struct egress_entry){ 5, AF_INET, { 10, 0, 0, 5 }, 32, 1, 2, tags };
	e[1] = (struct egress_entry){ 6, AF_INET, { 10, 0, 0, 6 }, 32, 3, 0, NULL };
	tags[0] = (struct egress_tag){ k, v };
	tags[1] = (struct egress_tag){ "kind", v2 };
	assert_int_equal(egress_index_build(e, 2, &ix), ST_OK);
	memset(k, 'z', strlen(k));
	memset(v, 'z', strlen(v));
	memset(v2, 'z', strlen(v2));
	memset(tags, 0, 2 * sizeof(*tags));
	memset(e, 0, 2 * sizeof(*e));
	free(k);
	free(v);
	free(v2);
	free(tags);
	free(e);

	c = egress_index_entry(ix, 0);
	assert_int_equal(c->id, 5);
	assert_int_equal(c->weight, 1);
	assert_int_equal(c->ntags, 2);
	assert_string_equal(c->tags[0].key, "country");
	assert_string_equal(c->tags[0].value, "Se"); /* as given */
	assert_string_equal(c->tags[1].value, "dc");
	assert_int_equal(egress_index_entry(ix, 1)->id, 6);
	assert_int_equal(egress_index_entry(ix, 1)->ntags, 0);
	assert_null(egress_index_entry(ix, 2));
	assert_int_equal(rank_ids(ix, 1, ALL_FAMILIES, &se, 1, ids, 4), 1);
	assert_int_equal(ids[0], 5);
	assert_int_equal(rank_ids(ix, 1, ALL_FAMILIES, &dc, 1, ids, 4), 1);
	assert_int_equal(rank_ids(ix, 1, ALL_FAMILIES, NULL, 0, ids, 4), 2);
	egress_index_free(ix);
	egress_index_free(NULL);
}

static int group_setup(void **state)
{
	(void)state;
	setvbuf(stdout, NULL, _IONBF, 0);
	return pwhash_init() == ST_OK ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spread_weighted),
		cmocka_unit_test(test_spread_equal),
		cmocka_unit_test(test_spread_with_tables),
		cmocka_unit_test(test_stability),
		cmocka_unit_test(test_stability_with_tables),
		cmocka_unit_test(test_sticky_window_changes_once_per_ttl),
		cmocka_unit_test(test_sticky_phases_spread),
		cmocka_unit_test(test_sticky_ttl0_and_keys),
		cmocka_unit_test(test_filters),
		cmocka_unit_test(test_filters_restrict_one_ranking),
		cmocka_unit_test(test_statuses),
		cmocka_unit_test(test_fallback_unfiltered),
		cmocka_unit_test(test_fallback_filtered),
		cmocka_unit_test(test_fallback_with_tables),
		cmocka_unit_test(test_tables_agree_with_scans),
		cmocka_unit_test(test_prefix_source),
		cmocka_unit_test(test_build_errors),
		cmocka_unit_test(test_index_copies),
	};

	return cmocka_run_group_tests(tests, group_setup, NULL);
}
