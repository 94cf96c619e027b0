/*
 * socks/usage.h - connection and byte counters per egress address and per user, summed in memory
 * per worker and handed to the control thread, which writes them in one transaction every few
 * seconds (DESIGN.md: never a database write per connection).
 *
 * A worker adds one row update per finished connection under its own mutex (uncontended but for
 * the control thread's swap every few seconds). Keys are copied; nothing names a destination.
 */
#ifndef SHROUD_SOCKS_USAGE_H
#define SHROUD_SOCKS_USAGE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/compiler.h"

#define USAGE_KEY_MAX 64

struct usage_row {
	char key[USAGE_KEY_MAX + 1]; /* "" is a valid key: no user / system default address */
	bool used;
	uint64_t connections, bytes_up, bytes_down, failures, datagrams;
};

/* An open-addressing table that grows by doubling; owned by whoever holds it. */
struct usage_map {
	size_t n, cap;
	struct usage_row *rows;
};

struct usage {
	pthread_mutex_t lock;
	struct usage_map egress, users;
};

void usage_init(struct usage *u);
void usage_destroy(struct usage *u);

/* Count one connection (failed: it never reached the relay). Drops the update when out of memory. */
void usage_add(struct usage *u, const char *user, const char *egress, uint64_t up, uint64_t down,
	       bool failed);

/* Count UDP traffic: `associations` new associations (or new sockets of one) on this egress, the
 * payload bytes both ways and the datagrams relayed. Drops the update when out of memory. */
void usage_add_datagrams(struct usage *u, const char *user, const char *egress,
			 uint64_t associations, uint64_t up, uint64_t down, uint64_t datagrams);

/* Move everything counted so far into the caller's maps (empty on entry), leaving u empty. */
void usage_take(struct usage *u, struct usage_map *egress, struct usage_map *users);

/* Add every row of src into dst (the control thread merges workers). ST_OK or ST_ENOMEM. */
NODISCARD int usage_map_merge(struct usage_map *dst, const struct usage_map *src);

void usage_map_free(struct usage_map *m);

#endif
