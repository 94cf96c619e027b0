/*
 * store/store.h - the only door to SQLite.
 *
 * A struct store owns one SQLite connection to a shroud database. The schema is pool.db.sql,
 * compiled into the binary; PRAGMA user_version numbers it and store_open migrates older files
 * forward (and refuses newer ones). Every store uses WAL mode and a busy timeout, so the CLI can
 * write while the daemon reads.
 *
 * Threading: a struct store is used by one thread at a time. The daemon keeps one, on its control
 * thread; workers never touch SQLite, they read immutable snapshots (store/snapshot.h).
 *
 * Errors: every function returns ST_OK or a negative status; on failure nothing was written
 * (each mutation is one transaction). store_errmsg() gives SQLite's last message for logs.
 */
#ifndef SHROUD_STORE_STORE_H
#define SHROUD_STORE_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/compiler.h"
#include "store/snapshot.h"

struct store;

/* store_open flags */
#define STORE_CREATE 0x1	 /* create the file (mode 0600) if it does not exist */
#define STORE_REQUIRE_PRIVATE 0x2 /* refuse (ST_EPERM) a file that group or others may access */

/* The schema version pool.db.sql creates. */
#define STORE_SCHEMA_VERSION 3

/*
 * Open (and, with STORE_CREATE, create) the database at path; ":memory:" opens a private
 * in-memory database. Applies the schema to an empty database, migrates an older one.
 * Errors: ST_ENOTFOUND (no file and no STORE_CREATE), ST_EPERM (mode too open with
 * STORE_REQUIRE_PRIVATE, or not a regular file), ST_EVERSION (written by a newer shroud),
 * ST_EDB (SQLite failed, see *errmsg), ST_ESYS (errno), ST_ENOMEM.
 * On failure *out is untouched and, when errmsg is not NULL, *errmsg points to a static or
 * thread-local description valid until the next call.
 */
NODISCARD int store_open(const char *path, unsigned flags, struct store **out, const char **errmsg);

void store_close(struct store *s);

/* SQLite's message for the last failed call on s. */
const char *store_errmsg(struct store *s);

/* The schema version of the open file (after migration, STORE_SCHEMA_VERSION). */
NODISCARD int store_schema_version(struct store *s, int *version);

/*
 * PRAGMA data_version: changes whenever another connection commits to the file.
 * Cheap (no disk read): the daemon polls it once a second to notice CLI changes.
 */
NODISCARD int store_data_version(struct store *s, int64_t *version);

/* ---- users ---- */

/* Longest user name. Names are 1..STORE_USER_NAME_MAX of [A-Za-z0-9_.], starting with a letter
 * or digit: no '-', which separates the name from its parameters in a SOCKS username. */
#define STORE_USER_NAME_MAX 64

/* True when name follows the rule above. */
bool store_user_name_valid(const char *name);

/* Add a user with a password hash string (crypto/pwhash.h). ST_EINVAL bad name or hash,
 * ST_EEXIST taken. */
NODISCARD int store_user_add(struct store *s, const char *name, const char *hash);

/* Remove. ST_ENOTFOUND when there is no such user. */
NODISCARD int store_user_remove(struct store *s, const char *name);

/* Replace the hash. ST_ENOTFOUND when there is no such user, ST_EINVAL for a bad hash. */
NODISCARD int store_user_set_hash(struct store *s, const char *name, const char *hash);

/* Enable or disable. ST_ENOTFOUND when there is no such user. */
NODISCARD int store_user_set_enabled(struct store *s, const char *name, bool enabled);

struct store_user_info {
	const char *name;
	bool enabled;
	int64_t created; /* Unix seconds */
};

typedef void store_user_fn(const struct store_user_info *info, void *ctx);

/* Call fn for every user, ordered by name. The info is valid during the call only. */
NODISCARD int store_user_list(struct store *s, store_user_fn *fn, void *ctx);

/* ---- settings (key/value) ---- */

/* Read a setting into buf (NUL-terminated). ST_ENOTFOUND when unset, ST_ETOOBIG when it does
 * not fit. */
NODISCARD int store_setting_get(struct store *s, const char *key, char *buf, size_t size);

/* Insert or replace a setting. */
NODISCARD int store_setting_set(struct store *s, const char *key, const char *value);

/* ---- the egress pool ---- */

#define STORE_POOL_TAGS_MAX 16
#define STORE_TAG_MAX 32

/* An entry to add. Tag keys: 1..32 of [a-z0-9_.]; values: 1..32 of [A-Za-z0-9_.]; one per key. */
struct store_pool_new {
	int family;	    /* AF_INET or AF_INET6 */
	uint8_t addr[16];   /* network order; host bits of a prefix must be zero */
	uint8_t prefix_len; /* 32 for IPv4; 32..128 for IPv6 (128 = one address) */
	uint32_t weight;    /* 1..1000000 */
	const char *note;   /* may be NULL */
	size_t ntags;
	const char *tag_keys[STORE_POOL_TAGS_MAX];
	const char *tag_values[STORE_POOL_TAGS_MAX];
};

/* True when text is a valid tag key (key = true) or value, by the rule above. */
bool store_pool_tag_valid(const char *text, bool key);

/*
 * Add entries, all or nothing (one transaction). ST_EEXIST when one is already in the pool (or
 * twice in the list), ST_EINVAL for a bad field; in both cases *bad (when not NULL) is the index
 * of the offending entry and nothing was written.
 */
NODISCARD int store_pool_add(struct store *s, const struct store_pool_new *entries, size_t n,
			     size_t *bad);

/*
 * Select entries by their canonical address text (e.g. "192.0.2.7", "2001:db8::/64") and remove
 * them / set enabled, all or nothing. ST_ENOTFOUND (with *bad) when one of them is not in the pool.
 */
NODISCARD int store_pool_remove(struct store *s, const char *const *addresses, size_t n,
				size_t *bad);
NODISCARD int store_pool_set_enabled(struct store *s, const char *const *addresses, size_t n,
				     bool enabled, size_t *bad);

/* Canonical text of an entry: inet_ntop, plus "/len" for an IPv6 prefix shorter than 128. */
#define STORE_ADDRESS_MAX (46 + 4)
void store_pool_address_text(int family, const uint8_t addr[static 16], uint8_t prefix_len,
			     char out[static STORE_ADDRESS_MAX]);

/* ---- health and usage, written by the daemon ---- */

struct store_health {
	uint32_t pool_id;
	int64_t cooldown_until; /* Unix seconds */
	uint32_t failures;
};

/* Upsert health rows of existing entries in one transaction (rows of removed entries are skipped). */
NODISCARD int store_health_write(struct store *s, const struct store_health *rows, size_t n);

struct store_usage {
	const char *key; /* the egress address text, or the user name */
	uint64_t connections, bytes_up, bytes_down, failures, datagrams;
};

/* Add to the day's counters ("YYYY-MM-DD" UTC) in one transaction. */
NODISCARD int store_usage_add(struct store *s, const char *day, const struct store_usage *egress,
			      size_t negress, const struct store_usage *users, size_t nusers);

/* ---- encrypted-link clients and the server's link key (LINK.md, "Keys") ---- */

/* Link names follow the user name rule (STORE_USER_NAME_MAX, store_user_name_valid). */
#define STORE_LINK_NAME_MAX STORE_USER_NAME_MAX
#define STORE_LINK_KEY_BYTES 32
/* settings.link_server_key: the server's static X25519 private key in hex. */
#define STORE_LINK_SERVER_KEY_HEX 64

bool store_link_name_valid(const char *name);

/* A link to add: a client's static public key and its PSK, acting as user. The keys are
 * pointers, so the PSK stays where the caller keeps it (guarded memory) instead of being copied
 * into this struct. */
struct store_link_new {
	const char *name;
	const char *user;
	const uint8_t *public_key; /* STORE_LINK_KEY_BYTES */
	const uint8_t *psk;	   /* STORE_LINK_KEY_BYTES */
};

/* Which part of a refused store_link_add was at fault. */
enum store_link_field {
	STORE_LINK_FIELD_NONE = 0,
	STORE_LINK_FIELD_NAME,	     /* invalid, or taken by another link */
	STORE_LINK_FIELD_USER,	     /* invalid, or no such user */
	STORE_LINK_FIELD_PUBLIC_KEY, /* already another link's */
	STORE_LINK_FIELD_SERVER_KEY, /* the candidate is not hex, or the stored one is malformed */
};

/*
 * Add a link, in one transaction with the server key it will be used with: when server_key_hex is
 * not NULL (STORE_LINK_SERVER_KEY_HEX hex digits the caller generated), it is stored as
 * settings.link_server_key unless a key is already there, and the key in effect is copied to
 * server_key_out (NUL-terminated); both NULL leave the server key alone. All or nothing: on
 * failure nothing was written, and *bad (when not NULL) names the field: ST_EINVAL (a bad name,
 * user name or candidate; ST_EDB for a malformed stored server key), ST_ENOTFOUND (no such user),
 * ST_EEXIST (the name, or the public key, is another link's: store_errmsg says which link).
 */
NODISCARD int store_link_add(struct store *s, const struct store_link_new *link,
			     const char *server_key_hex, char *server_key_out,
			     enum store_link_field *bad);

/* A link as stored, without its PSK. */
struct store_link_info {
	char name[STORE_LINK_NAME_MAX + 1];
	char user[STORE_USER_NAME_MAX + 1];
	uint8_t public_key[STORE_LINK_KEY_BYTES];
	bool enabled;
	int64_t created; /* Unix seconds */
};

typedef void store_link_fn(const struct store_link_info *info, void *ctx);

/* Call fn for every link, ordered by name. ST_EDB for a malformed row. */
NODISCARD int store_link_list(struct store *s, store_link_fn *fn, void *ctx);

/* The link called name into *out. ST_ENOTFOUND when there is none (*out unchanged). */
NODISCARD int store_link_find(struct store *s, const char *name, struct store_link_info *out);

/*
 * Revoke a link: its row is deleted, public key and PSK with it (secure_delete overwrites the
 * freed space in the database file). The old page images that WAL mode keeps in the -wal file
 * are then checkpointed and the file truncated (PRAGMA wal_checkpoint(TRUNCATE)); when another
 * connection is reading at that moment the truncation is left to a later checkpoint, which the
 * return value does not report. ST_ENOTFOUND when there is no such link.
 */
NODISCARD int store_link_revoke(struct store *s, const char *name);

/*
 * The server's static link key, settings.link_server_key, into hex (NUL-terminated): ST_OK,
 * ST_ENOTFOUND (not made yet), ST_EDB (not STORE_LINK_SERVER_KEY_HEX hex digits: never replaced,
 * since every client pins its public half).
 */
NODISCARD int store_link_server_key_get(struct store *s, char hex[static STORE_LINK_SERVER_KEY_HEX + 1]);

/*
 * Store candidate_hex (STORE_LINK_SERVER_KEY_HEX hex digits the caller generated; crypto/ makes
 * keys, store/ does not) as the server key unless one exists (INSERT OR IGNORE), then read the
 * key in effect into hex: of two processes doing this at once, both end up with the same key.
 * ST_OK, ST_EINVAL (candidate not hex of that length), ST_EDB (the stored key is malformed).
 */
NODISCARD int store_link_server_key_init_if_absent(struct store *s, const char *candidate_hex,
						   char hex[static STORE_LINK_SERVER_KEY_HEX + 1]);

/* ---- snapshots ---- */

/*
 * Build a new immutable snapshot of everything the daemon's workers need: users, the pool with
 * tags and health, the sticky salt and TTL settings, the link clients that may connect. Reads in one transaction; allocates; returns
 * it with one reference held by the caller.
 */
NODISCARD int store_snapshot_build(struct store *s, struct snapshot **out);

#endif
