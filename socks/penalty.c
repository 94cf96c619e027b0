/* socks/penalty.c - the link's penalty box; see penalty.h. */
#include "socks/penalty.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

struct penalty_entry {
	uint8_t key[ADDR_CLIENT_KEY_LEN]; /* addr_client_key; all zero = free */
	unsigned failures; /* in the current window */
	double window;	  /* when the current window of failures started */
	double box_until; /* boxed until then */
	double box_next;  /* the next box's length */
	double last;	  /* last touched, for reuse of the stalest slot */
	unsigned unauth;  /* open unauthenticated connections */
};

struct penalty {
	pthread_mutex_t lock;
	size_t nslots;
	unsigned unauth_total;
	struct penalty_entry *slots;
};

int penalty_new(size_t slots, struct penalty **out)
{
	struct penalty *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return ST_ENOMEM;
	p->nslots = slots > 0 ? slots : 1;
	p->slots = calloc(p->nslots, sizeof(*p->slots));
	if (p->slots == NULL) {
		free(p);
		return ST_ENOMEM;
	}
	pthread_mutex_init(&p->lock, NULL);
	*out = p;
	return ST_OK;
}

void penalty_free(struct penalty *p)
{
	if (p == NULL)
		return;
	pthread_mutex_destroy(&p->lock);
	free(p->slots);
	free(p);
}


/*
 * The entry of key, created (in the stalest slot of its probe run) when create is set, else NULL
 * when absent. A slot holding open unauthenticated connections is not reused: their counts must
 * come back to the right source. Caller holds the lock.
 */
static struct penalty_entry *penalty_entry(struct penalty *p, const uint8_t key[static ADDR_CLIENT_KEY_LEN],
					   double now, bool create)
{
	size_t i = addr_client_slot(key, p->nslots);
	struct penalty_entry *victim = NULL;

	for (size_t k = 0; k < MIN(p->nslots, (size_t)8); k++) {
		struct penalty_entry *e = &p->slots[(i + k) % p->nslots];

		if (memcmp(e->key, key, ADDR_CLIENT_KEY_LEN) == 0)
			return e;
		if (e->unauth == 0 && (victim == NULL || e->last < victim->last))
			victim = e;
	}
	if (!create || victim == NULL)
		return NULL;
	memset(victim, 0, sizeof(*victim));
	memcpy(victim->key, key, ADDR_CLIENT_KEY_LEN);
	victim->window = now;
	victim->box_next = PENALTY_BOX_MIN;
	return victim;
}

enum penalty_verdict penalty_admit(struct penalty *p, const struct addr *source, double now)
{
	uint8_t key[ADDR_CLIENT_KEY_LEN];
	struct penalty_entry *e;
	enum penalty_verdict v = PENALTY_SERVE;

	addr_client_key(source, key);
	pthread_mutex_lock(&p->lock);
	if (p->unauth_total >= PENALTY_UNAUTH_TOTAL) {
		pthread_mutex_unlock(&p->lock);
		return PENALTY_CLOSE;
	}
	p->unauth_total++;
	e = penalty_entry(p, key, now, true);
	if (e == NULL) {
		/* Eight busy slots in a row: a flood from many sources. No crypto for it. */
		v = PENALTY_SILENT;
	} else {
		e->unauth++;
		e->last = now;
		if (now < e->box_until || e->unauth > PENALTY_UNAUTH_PER_SOURCE)
			v = PENALTY_SILENT;
	}
	pthread_mutex_unlock(&p->lock);
	return v;
}

void penalty_unauth_done(struct penalty *p, const struct addr *source)
{
	uint8_t key[ADDR_CLIENT_KEY_LEN];
	struct penalty_entry *e;

	addr_client_key(source, key);
	pthread_mutex_lock(&p->lock);
	if (p->unauth_total > 0)
		p->unauth_total--;
	e = penalty_entry(p, key, 0, false);
	if (e != NULL && e->unauth > 0)
		e->unauth--;
	pthread_mutex_unlock(&p->lock);
}

void penalty_fail(struct penalty *p, const struct addr *source, double now)
{
	uint8_t key[ADDR_CLIENT_KEY_LEN];
	struct penalty_entry *e;

	addr_client_key(source, key);
	pthread_mutex_lock(&p->lock);
	e = penalty_entry(p, key, now, true);
	if (e != NULL) {
		if (now - e->window > PENALTY_WINDOW) {
			e->window = now;
			e->failures = 0;
		}
		e->last = now;
		if (++e->failures >= PENALTY_FAILURES && now >= e->box_until) {
			e->box_until = now + e->box_next;
			e->box_next = MIN(e->box_next * 2, PENALTY_BOX_MAX);
			e->failures = 0;
			e->window = now;
		}
	}
	pthread_mutex_unlock(&p->lock);
}

bool penalty_boxed(struct penalty *p, const struct addr *source, double now)
{
	uint8_t key[ADDR_CLIENT_KEY_LEN];
	struct penalty_entry *e;
	bool boxed;

	addr_client_key(source, key);
	pthread_mutex_lock(&p->lock);
	e = penalty_entry(p, key, now, false);
	boxed = e != NULL && now < e->box_until;
	pthread_mutex_unlock(&p->lock);
	return boxed;
}
