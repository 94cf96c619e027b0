/* socks/quota.c - counts per key with a cap, under one mutex. */
#include "socks/quota.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"

#define QUOTA_BUCKETS 256 /* chains stay short: keys are the users with an association open */

struct quota_entry {
	struct quota_entry *next;
	unsigned count; /* > 0: an entry whose count reaches 0 is freed */
	char key[QUOTA_KEY_MAX + 1];
};

struct quota {
	pthread_mutex_t lock;
	struct quota_entry *buckets[QUOTA_BUCKETS];
};

int quota_new(struct quota **out)
{
	struct quota *q = calloc(1, sizeof(*q));

	if (q == NULL)
		return ST_ENOMEM;
	pthread_mutex_init(&q->lock, NULL);
	*out = q;
	return ST_OK;
}

void quota_free(struct quota *q)
{
	if (q == NULL)
		return;
	for (size_t i = 0; i < QUOTA_BUCKETS; i++) {
		struct quota_entry *e = q->buckets[i];

		while (e != NULL) {
			struct quota_entry *next = e->next;

			free(e);
			e = next;
		}
	}
	pthread_mutex_destroy(&q->lock);
	free(q);
}

/* The stored form of a key (cut to QUOTA_KEY_MAX) and its bucket. */
static size_t quota_norm(const char *key, char out[static QUOTA_KEY_MAX + 1])
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a: keys are user names and addresses */
	size_t i;

	for (i = 0; i < QUOTA_KEY_MAX && key[i] != '\0'; i++) {
		out[i] = key[i];
		h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
	}
	out[i] = '\0';
	return (size_t)(h % QUOTA_BUCKETS);
}

/* The entry of a normalized key in bucket b, and the link that points at it. Lock held. */
static struct quota_entry **quota_find(struct quota *q, size_t b, const char *key)
{
	struct quota_entry **link = &q->buckets[b];

	while (*link != NULL && strcmp((*link)->key, key) != 0)
		link = &(*link)->next;
	return link;
}

int quota_take(struct quota *q, const char *key, unsigned max)
{
	char k[QUOTA_KEY_MAX + 1];
	size_t b = quota_norm(key, k);
	struct quota_entry **link, *e;
	int rc = ST_OK;

	pthread_mutex_lock(&q->lock);
	link = quota_find(q, b, k);
	e = *link;
	if (e == NULL) {
		if (max == 0) {
			rc = ST_EFULL;
			goto out;
		}
		e = calloc(1, sizeof(*e));
		if (e == NULL) {
			rc = ST_ENOMEM;
			goto out;
		}
		memcpy(e->key, k, sizeof(e->key));
		e->count = 1;
		e->next = q->buckets[b];
		q->buckets[b] = e;
	} else if (e->count >= max) {
		rc = ST_EFULL;
	} else {
		e->count++;
	}
out:
	pthread_mutex_unlock(&q->lock);
	return rc;
}

void quota_release(struct quota *q, const char *key)
{
	char k[QUOTA_KEY_MAX + 1];
	size_t b = quota_norm(key, k);
	struct quota_entry **link, *e;

	pthread_mutex_lock(&q->lock);
	link = quota_find(q, b, k);
	e = *link;
	if (e != NULL && --e->count == 0) {
		*link = e->next;
		free(e);
	}
	pthread_mutex_unlock(&q->lock);
}

unsigned quota_count(struct quota *q, const char *key)
{
	char k[QUOTA_KEY_MAX + 1];
	size_t b = quota_norm(key, k);
	struct quota_entry *e;
	unsigned n;

	pthread_mutex_lock(&q->lock);
	e = *quota_find(q, b, k);
	n = e != NULL ? e->count : 0;
	pthread_mutex_unlock(&q->lock);
	return n;
}
