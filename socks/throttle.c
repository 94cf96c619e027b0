/* socks/throttle.c - failure counting per client address. */
#include "socks/throttle.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

struct throttle_entry {
	uint8_t key[16]; /* IPv4 address, or the /64 of an IPv6 address; all zero = free */
	unsigned failures;
	double last; /* time of the latest failure: the count lapses THROTTLE_WINDOW after it */
};

struct throttle {
	pthread_mutex_t lock;
	size_t nslots;
	struct throttle_entry *slots;
};

int throttle_new(size_t slots, struct throttle **out)
{
	struct throttle *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return ST_ENOMEM;
	t->nslots = slots > 0 ? slots : 1;
	t->slots = calloc(t->nslots, sizeof(*t->slots));
	if (t->slots == NULL) {
		free(t);
		return ST_ENOMEM;
	}
	pthread_mutex_init(&t->lock, NULL);
	*out = t;
	return ST_OK;
}

void throttle_free(struct throttle *t)
{
	if (t == NULL)
		return;
	pthread_mutex_destroy(&t->lock);
	free(t->slots);
	free(t);
}

/* A client is its IPv4 address, or its IPv6 /64: one host usually owns a whole /64. */
static void throttle_key(const struct addr *a, uint8_t key[static 16])
{
	memset(key, 0, 16);
	if (addr_family(a) == AF_INET6) {
		memcpy(key, &a->u.sin6.sin6_addr, 8);
		key[15] = 6; /* never all-zero, distinct from IPv4 keys */
	} else {
		memcpy(key, &a->u.sin.sin_addr, 4);
		key[15] = 4;
	}
}

static size_t throttle_hash(const uint8_t key[static 16], size_t n)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a: the table is bounded, not adversarial-proof */

	for (size_t i = 0; i < 16; i++)
		h = (h ^ key[i]) * 1099511628211ull;
	return (size_t)(h % n);
}

/* The live entry for key, or NULL. Caller holds the lock. */
static struct throttle_entry *throttle_find(struct throttle *t, const uint8_t key[static 16],
					    double now)
{
	size_t i = throttle_hash(key, t->nslots);

	/* Linear probing over a few slots only: the table is a bounded cache, not a map. */
	for (size_t k = 0; k < MIN(t->nslots, (size_t)8); k++) {
		struct throttle_entry *e = &t->slots[(i + k) % t->nslots];

		if (memcmp(e->key, key, 16) == 0) {
			if (now - e->last > THROTTLE_WINDOW)
				return NULL;
			return e;
		}
	}
	return NULL;
}

double throttle_fail(struct throttle *t, const struct addr *client, double now)
{
	uint8_t key[16];
	struct throttle_entry *e, *victim = NULL;
	size_t i;
	double delay = 0;

	throttle_key(client, key);
	pthread_mutex_lock(&t->lock);
	i = throttle_hash(key, t->nslots);
	for (size_t k = 0; k < MIN(t->nslots, (size_t)8); k++) {
		e = &t->slots[(i + k) % t->nslots];
		if (memcmp(e->key, key, 16) == 0) {
			victim = e;
			break;
		}
		/* Otherwise reuse the stalest slot of the probe run. */
		if (victim == NULL || e->last < victim->last)
			victim = e;
	}
	e = victim;
	if (memcmp(e->key, key, 16) != 0 || now - e->last > THROTTLE_WINDOW) {
		memcpy(e->key, key, 16);
		e->failures = 0;
	}
	e->failures++;
	e->last = now;
	if (e->failures > THROTTLE_FREE) {
		unsigned shift = e->failures - THROTTLE_FREE - 1;

		delay = shift >= 4 ? THROTTLE_DELAY_MAX : MIN((double)(1u << shift), THROTTLE_DELAY_MAX);
	}
	pthread_mutex_unlock(&t->lock);
	return delay;
}

bool throttle_blocked(struct throttle *t, const struct addr *client, double now)
{
	uint8_t key[16];
	struct throttle_entry *e;
	bool blocked;

	throttle_key(client, key);
	pthread_mutex_lock(&t->lock);
	e = throttle_find(t, key, now);
	blocked = e != NULL && e->failures >= THROTTLE_BLOCK;
	pthread_mutex_unlock(&t->lock);
	return blocked;
}
