/* socks/throttle.c - failure counting per client address. */
#include "socks/throttle.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

struct throttle_entry {
	uint8_t key[ADDR_CLIENT_KEY_LEN]; /* addr_client_key; all zero = free */
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

/* The live entry for key, or NULL. Caller holds the lock. */
static struct throttle_entry *throttle_find(struct throttle *t, const uint8_t key[static ADDR_CLIENT_KEY_LEN],
					    double now)
{
	size_t i = addr_client_slot(key, t->nslots);

	/* Linear probing over a few slots only: the table is a bounded cache, not a map. */
	for (size_t k = 0; k < MIN(t->nslots, (size_t)8); k++) {
		struct throttle_entry *e = &t->slots[(i + k) % t->nslots];

		if (memcmp(e->key, key, ADDR_CLIENT_KEY_LEN) == 0) {
			if (now - e->last > THROTTLE_WINDOW)
				return NULL;
			return e;
		}
	}
	return NULL;
}

double throttle_fail(struct throttle *t, const struct addr *client, double now)
{
	uint8_t key[ADDR_CLIENT_KEY_LEN];
	struct throttle_entry *e, *victim = NULL;
	size_t i;
	double delay = 0;

	addr_client_key(client, key);
	pthread_mutex_lock(&t->lock);
	i = addr_client_slot(key, t->nslots);
	for (size_t k = 0; k < MIN(t->nslots, (size_t)8); k++) {
		e = &t->slots[(i + k) % t->nslots];
		if (memcmp(e->key, key, ADDR_CLIENT_KEY_LEN) == 0) {
			victim = e;
			break;
		}
		/* Otherwise reuse the stalest slot of the probe run. */
		if (victim == NULL || e->last < victim->last)
			victim = e;
	}
	e = victim;
	if (memcmp(e->key, key, ADDR_CLIENT_KEY_LEN) != 0 || now - e->last > THROTTLE_WINDOW) {
		memcpy(e->key, key, ADDR_CLIENT_KEY_LEN);
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
	uint8_t key[ADDR_CLIENT_KEY_LEN];
	struct throttle_entry *e;
	bool blocked;

	addr_client_key(client, key);
	pthread_mutex_lock(&t->lock);
	e = throttle_find(t, key, now);
	blocked = e != NULL && e->failures >= THROTTLE_BLOCK;
	pthread_mutex_unlock(&t->lock);
	return blocked;
}
