/* socks/usage.c - in-memory usage counters. */
#include "socks/usage.h"

#include <stdlib.h>
#include <string.h>

#include "base/status.h"

static size_t usage_hash(const char *key)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a: keys are ours (addresses, user names) */

	for (const char *p = key; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	return (size_t)h;
}

static int usage_map_grow(struct usage_map *m)
{
	size_t cap = m->cap ? m->cap * 2 : 16;
	struct usage_row *rows = calloc(cap, sizeof(*rows));

	if (rows == NULL)
		return ST_ENOMEM;
	for (size_t i = 0; i < m->cap; i++) {
		size_t j;

		if (!m->rows[i].used)
			continue;
		for (j = usage_hash(m->rows[i].key) & (cap - 1); rows[j].used; j = (j + 1) & (cap - 1))
			;
		rows[j] = m->rows[i];
	}
	free(m->rows);
	m->rows = rows;
	m->cap = cap;
	return ST_OK;
}

/* The row for key, created empty if absent; NULL when out of memory. */
static struct usage_row *usage_map_row(struct usage_map *m, const char *key)
{
	size_t j;

	if ((m->n + 1) * 4 > m->cap * 3 && usage_map_grow(m) != ST_OK)
		return NULL;
	for (j = usage_hash(key) & (m->cap - 1); m->rows[j].used; j = (j + 1) & (m->cap - 1))
		if (strncmp(m->rows[j].key, key, USAGE_KEY_MAX) == 0)
			return &m->rows[j];
	m->rows[j].used = true;
	strncpy(m->rows[j].key, key, USAGE_KEY_MAX);
	m->rows[j].key[USAGE_KEY_MAX] = '\0';
	m->n++;
	return &m->rows[j];
}

static void usage_row_add(struct usage_row *r, uint64_t conns, uint64_t up, uint64_t down,
			  uint64_t failures, uint64_t datagrams)
{
	r->connections += conns;
	r->bytes_up += up;
	r->bytes_down += down;
	r->failures += failures;
	r->datagrams += datagrams;
}

void usage_init(struct usage *u)
{
	memset(u, 0, sizeof(*u));
	pthread_mutex_init(&u->lock, NULL);
}

void usage_destroy(struct usage *u)
{
	usage_map_free(&u->egress);
	usage_map_free(&u->users);
	pthread_mutex_destroy(&u->lock);
}

void usage_add(struct usage *u, const char *user, const char *egress, uint64_t up, uint64_t down,
	       bool failed)
{
	struct usage_row *r;

	pthread_mutex_lock(&u->lock);
	r = usage_map_row(&u->egress, egress);
	if (r != NULL)
		usage_row_add(r, 1, up, down, failed, 0);
	r = usage_map_row(&u->users, user);
	if (r != NULL)
		usage_row_add(r, 1, up, down, failed, 0);
	pthread_mutex_unlock(&u->lock);
}

void usage_add_datagrams(struct usage *u, const char *user, const char *egress,
			 uint64_t associations, uint64_t up, uint64_t down, uint64_t datagrams)
{
	struct usage_row *r;

	pthread_mutex_lock(&u->lock);
	r = usage_map_row(&u->egress, egress);
	if (r != NULL)
		usage_row_add(r, associations, up, down, 0, datagrams);
	r = usage_map_row(&u->users, user);
	if (r != NULL)
		usage_row_add(r, associations, up, down, 0, datagrams);
	pthread_mutex_unlock(&u->lock);
}

void usage_take(struct usage *u, struct usage_map *egress, struct usage_map *users)
{
	pthread_mutex_lock(&u->lock);
	*egress = u->egress;
	*users = u->users;
	memset(&u->egress, 0, sizeof(u->egress));
	memset(&u->users, 0, sizeof(u->users));
	pthread_mutex_unlock(&u->lock);
}

int usage_map_merge(struct usage_map *dst, const struct usage_map *src)
{
	for (size_t i = 0; i < src->cap; i++) {
		const struct usage_row *s = &src->rows[i];
		struct usage_row *d;

		if (!s->used)
			continue;
		d = usage_map_row(dst, s->key);
		if (d == NULL)
			return ST_ENOMEM;
		usage_row_add(d, s->connections, s->bytes_up, s->bytes_down, s->failures, s->datagrams);
	}
	return ST_OK;
}

void usage_map_free(struct usage_map *m)
{
	free(m->rows);
	memset(m, 0, sizeof(*m));
}
