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

struct snapshot_tag {
	const char *key;
	const char *value;
};

/* One pool entry (enabled or not). Strings point into the snapshot's own memory. */
struct snapshot_pool_entry {
	uint32_t id;
	int family;	    /* AF_INET or AF_INET6 */
	uint8_t addr[16];   /* network order; IPv4 in the first 4 bytes */
	uint8_t prefix_len; /* 32/128 for one address, 32..127 for an IPv6 prefix */
	uint32_t weight;
	bool enabled;
	const char *address; /* the canonical text, as in the table */
	const char *note;
	int64_t added; /* Unix seconds */
	size_t ntags;
	const struct snapshot_tag *tags;
	int64_t cooldown_until; /* pool_health at build time (Unix seconds; 0 = none) */
	uint32_t failures;
};

#define SNAPSHOT_SALT_BYTES 32
#define SNAPSHOT_STICKY_TTL_DEFAULT 600

/*
 * A client of the encrypted link that may connect: the link and its user are both enabled (a
 * disabled or removed one is simply absent). The PSK is a secret: snapshot_unref wipes it.
 */
#define SNAPSHOT_LINK_KEY_BYTES 32
struct snapshot_link {
	uint8_t public_key[SNAPSHOT_LINK_KEY_BYTES]; /* the client's static X25519 key */
	uint8_t psk[SNAPSHOT_LINK_KEY_BYTES];
	char name[64 + 1]; /* the link's name, for logs */
	char user[64 + 1]; /* the user it acts as (snapshot_user_find) */
};

/* Something a consumer builds from the snapshot and hangs on it (the egress index), freed with
 * the snapshot's last reference. */
typedef void snapshot_attachment_free_fn(void *attachment);

struct snapshot {
	atomic_uint refs;
	uint64_t generation;	      /* increases with every snapshot built by one process */
	size_t nusers;
	struct snapshot_user *users; /* sorted by name (strcmp) */
	size_t npool;
	struct snapshot_pool_entry *pool; /* ordered by id; one allocation with the tags and strings */
	size_t nlinks;
	struct snapshot_link *links; /* sorted by public_key (memcmp), no two equal */
	bool has_salt;
	uint8_t salt[SNAPSHOT_SALT_BYTES]; /* settings.sticky_salt */
	uint32_t sticky_ttl;		   /* settings.sticky_ttl, or the default */
	void *attachment;
	snapshot_attachment_free_fn *attachment_free;
};

/* Take another reference; returns s. */
struct snapshot *snapshot_ref(struct snapshot *s);

/* Drop a reference; frees the snapshot (and its attachment) with the last one. NULL is a no-op. */
void snapshot_unref(struct snapshot *s);

/* The user with this exact name, or NULL. O(log n). Disabled users are returned too. */
const struct snapshot_user *snapshot_user_find(const struct snapshot *s, const char *name);

/* The link whose client key is public_key, or NULL. O(log n). */
const struct snapshot_link *snapshot_link_find(const struct snapshot *s,
					       const uint8_t public_key[static SNAPSHOT_LINK_KEY_BYTES]);

#endif
