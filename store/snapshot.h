/*
 * store/snapshot.h - an immutable, reference-counted picture of the database for the workers.
 *
 * Built by store_snapshot_build() off the workers' loops; published to each worker, which keeps
 * one reference to its current snapshot and swaps it on its own loop. A session that needs the
 * snapshot across an asynchronous step (password verification) takes its own reference.
 * Reading a snapshot never locks, allocates or touches SQLite. Reference counting is atomic, so
 * the last owner on any thread frees it.
 */
#ifndef SHROUD_STORE_SNAPSHOT_H
#define SHROUD_STORE_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A password hash string (crypto_pwhash_str format) fits in this, NUL included. */
#define SNAPSHOT_HASH_MAX 128

struct snapshot_user {
	char name[64 + 1];
	char hash[SNAPSHOT_HASH_MAX];
	bool enabled;
};

struct snapshot {
	atomic_uint refs;
	uint64_t generation;	      /* increases with every snapshot built by one process */
	size_t nusers;
	struct snapshot_user *users; /* sorted by name (strcmp) */
};

/* Take another reference; returns s. */
struct snapshot *snapshot_ref(struct snapshot *s);

/* Drop a reference; frees the snapshot with the last one. NULL is a no-op. */
void snapshot_unref(struct snapshot *s);

/* The user with this exact name, or NULL. O(log n). Disabled users are returned too. */
const struct snapshot_user *snapshot_user_find(const struct snapshot *s, const char *name);

#endif
