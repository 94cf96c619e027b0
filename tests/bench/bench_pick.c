/*
 * tests/bench/bench_pick.c - how fast the egress index builds and picks (egress/select.h).
 *
 * Builds an index of N entries (default 100,000: a mix of IPv4 addresses and IPv6 prefixes,
 * weights 1..4, tags country=xx and kind=yy), prints the build time and the memory it took, then
 * times PICKS calls (default 1,000,000) of egress_pick per request kind, asking for MAX places
 * (default EGRESS_PICK_FAST), and prints ns per pick. Numbers on a shared machine are for
 * reading, not asserting: not a ctest.
 *
 *   bench_pick [entries [picks [max]]]
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/status.h"
#include "egress/select.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Resident memory in MiB (/proc/self/statm), to see what an index costs. */
static double rss_mib(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, resident = 0;

	if (f == NULL)
		return 0.0;
	if (fscanf(f, "%lu %lu", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return (double)resident * 4096.0 / (1024.0 * 1024.0);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static const char *const countries[] = { "de", "us", "fr", "nl", "jp", "br", "gb", "se" };
static const char *const kinds[] = { "residential", "datacenter" };

/* Time `picks` calls for one request kind; keys are fresh pseudo-random bytes each call. */
static void bench(const char *what, const struct egress_index *ix, unsigned families,
		  const struct egress_tag_filter *filters, size_t nfilters, long picks, size_t max)
{
	const struct egress_entry *out[64];
	uint8_t key[EGRESS_KEY_BYTES];
	struct egress_request req = { key, families, nfilters, filters };
	uint64_t sink = 0;
	long failed = 0;
	double t0, t1, keys_cost;

	/* The cost of making keys alone, subtracted below. */
	t0 = now_s();
	for (long i = 0; i < picks; i++) {
		uint64_t a = rng(), b = rng();

		memcpy(key, &a, 8);
		memcpy(key + 8, &b, 8);
		sink += key[3];
	}
	keys_cost = now_s() - t0;

	memset(key, 0, sizeof(key));
	t0 = now_s();
	for (long i = 0; i < picks; i++) {
		uint64_t a = rng(), b = rng();
		int n;

		memcpy(key, &a, 8);
		memcpy(key + 8, &b, 8);
		n = egress_pick(ix, &req, out, max);
		if (n > 0)
			sink += out[0]->id;
		else
			failed++;
	}
	t1 = now_s();
	printf("%-38s %9.1f ns/pick  (max %zu, %ld picks%s)\n", what,
	       ((t1 - t0) - keys_cost) * 1e9 / (double)picks, max, picks,
	       failed ? ", SOME FAILED" : "");
	if (sink == 42)
		printf("\n");
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
	long picks = argc > 2 ? strtol(argv[2], NULL, 10) : 1000000;
	size_t max = argc > 3 ? strtoul(argv[3], NULL, 10) : EGRESS_PICK_FAST;
	struct egress_entry *entries = calloc(n ? n : 1, sizeof(*entries));
	struct egress_tag *tags = calloc(2 * (n ? n : 1), sizeof(*tags));
	struct egress_index *ix = NULL;
	struct egress_tag_filter de = { "country", "de" }, res = { "", "residential" };
	struct egress_tag_filter both[2] = { { "country", "de" }, { "", "residential" } };
	size_t nv4 = 0;
	double t0, t1, rss0;
	int st;

	if (entries == NULL || tags == NULL || max == 0 || max > 64) {
		fprintf(stderr, "usage: bench_pick [entries [picks [max<=64]]]\n");
		return 2;
	}
	for (size_t i = 0; i < n; i++) {
		struct egress_entry *e = &entries[i];
		uint64_t r = rng();

		e->id = (uint32_t)(i + 1);
		e->weight = 1 + (uint32_t)(r % 4);
		/* Two thirds IPv4 addresses, one third IPv6 /64 prefixes. */
		if (r % 3 != 0) {
			e->family = AF_INET;
			e->prefix_len = 32;
			e->addr[0] = 10;
			e->addr[1] = (uint8_t)(i >> 16);
			e->addr[2] = (uint8_t)(i >> 8);
			e->addr[3] = (uint8_t)i;
			nv4++;
		} else {
			e->family = AF_INET6;
			e->prefix_len = 64;
			e->addr[0] = 0x20;
			e->addr[1] = 0x01;
			e->addr[2] = 0x0d;
			e->addr[3] = 0xb8;
			e->addr[4] = (uint8_t)(i >> 24);
			e->addr[5] = (uint8_t)(i >> 16);
			e->addr[6] = (uint8_t)(i >> 8);
			e->addr[7] = (uint8_t)i;
		}
		tags[2 * i] = (struct egress_tag){ "country", countries[(r >> 8) % 8] };
		tags[2 * i + 1] = (struct egress_tag){ "kind", kinds[(r >> 16) % 2] };
		e->ntags = 2;
		e->tags = &tags[2 * i];
	}

	rss0 = rss_mib();
	t0 = now_s();
	st = egress_index_build(entries, n, &ix);
	t1 = now_s();
	if (st != ST_OK) {
		fprintf(stderr, "egress_index_build: %s\n", status_str(st));
		return 1;
	}
	printf("build: %zu entries (%zu IPv4, %zu IPv6 /64; 8 countries, 2 kinds): %.1f ms, "
	       "index %.1f MiB resident\n",
	       n, nv4, n - nv4, (t1 - t0) * 1e3, rss_mib() - rss0);

	bench("unfiltered (v4+v6)", ix, EGRESS_FAMILY_V4 | EGRESS_FAMILY_V6, NULL, 0, picks, max);
	bench("family-filtered (v4 only)", ix, EGRESS_FAMILY_V4, NULL, 0, picks, max);
	bench("family-filtered (v6 only)", ix, EGRESS_FAMILY_V6, NULL, 0, picks, max);
	bench("tag-filtered (country-de)", ix, EGRESS_FAMILY_V4 | EGRESS_FAMILY_V6, &de, 1, picks,
	      max);
	bench("tag-filtered (tag-residential, v4)", ix, EGRESS_FAMILY_V4, &res, 1, picks, max);
	/* Two tags: answered by a scan of the rarer tag's entries (see egress_pick), so fewer. */
	bench("two tags (country-de-tag-residential)", ix, EGRESS_FAMILY_V4 | EGRESS_FAMILY_V6,
	      both, 2, picks / 100 > 0 ? picks / 100 : 1, max);

	egress_index_free(ix);
	free(tags);
	free(entries);
	return 0;
}
