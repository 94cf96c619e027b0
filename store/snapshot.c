/* store/snapshot.c - reference counting and lookup on immutable snapshots. No SQLite here. */
#include "store/snapshot.h"

#include <stdlib.h>
#include <string.h>

struct snapshot *snapshot_ref(struct snapshot *s)
{
	/* Relaxed is enough to take a reference: the caller already holds one, so the snapshot
	 * cannot be freed under us, and taking a reference publishes nothing. */
	atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	return s;
}

void snapshot_unref(struct snapshot *s)
{
	if (s == NULL)
		return;
	/* acq_rel: the release orders this thread's reads of the snapshot before the decrement,
	 * the acquire makes every other owner's reads happen before the free below. */
	if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
		return;
	/* The consumer's attachment first: it may point into the pool. */
	if (s->attachment != NULL && s->attachment_free != NULL)
		s->attachment_free(s->attachment);
	/* Every allocation is malloc'd (store_snapshot_build). The users hold password hashes:
	 * not secrets in themselves, but nothing gained by leaving them in freed memory. */
	if (s->users != NULL) {
		explicit_bzero(s->users, s->nusers * sizeof(*s->users));
		free(s->users);
	}
	/* The links hold PSKs: secrets. */
	if (s->links != NULL) {
		explicit_bzero(s->links, s->nlinks * sizeof(*s->links));
		free(s->links);
	}
	/* One block: the entries, their tags and every string they point to. */
	free(s->pool);
	/* The salt is the key of sticky hashing: a secret. */
	explicit_bzero(s->salt, sizeof(s->salt));
	free(s);
}

static int user_cmp(const void *key, const void *elem)
{
	const struct snapshot_user *u = elem;

	return strcmp(key, u->name);
}

const struct snapshot_user *snapshot_user_find(const struct snapshot *s, const char *name)
{
	/* bsearch's base is declared nonnull: an empty snapshot has users == NULL. */
	if (s == NULL || name == NULL || s->nusers == 0)
		return NULL;
	return bsearch(name, s->users, s->nusers, sizeof(*s->users), user_cmp);
}

static int link_cmp(const void *key, const void *elem)
{
	const struct snapshot_link *l = elem;

	return memcmp(key, l->public_key, SNAPSHOT_LINK_KEY_BYTES);
}

const struct snapshot_link *snapshot_link_find(const struct snapshot *s,
					       const uint8_t public_key[static SNAPSHOT_LINK_KEY_BYTES])
{
	if (s == NULL || s->nlinks == 0)
		return NULL;
	return bsearch(public_key, s->links, s->nlinks, sizeof(*s->links), link_cmp);
}
