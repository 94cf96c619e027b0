/*
 * store/store.c - the SQLite database: open, schema and migrations, users, settings, the egress
 * pool, health and usage, the link clients and the server's link key, snapshots.
 */
#include "store/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/status.h"
#include "store/schema.h"

#define STORE_ERR_MAX 256

/* How long a connection waits for another one's write lock before giving up (ms). */
#define STORE_BUSY_TIMEOUT_MS 5000
/* Pause between attempts to switch a new file to WAL mode while another process does (ms). */
#define STORE_WAL_RETRY_MS 10

/* The prefix every crypto_pwhash_str hash we accept starts with (crypto/pwhash.h). */
#define HASH_PREFIX "$argon2id$"

struct store {
	sqlite3 *db;
	char err[STORE_ERR_MAX]; /* the last failure on this store, for store_errmsg */
};

/*
 * Migrations: step {from, sql} turns a file at schema `from` into schema `from + 1`; the
 * mechanism then sets user_version. pool.db.sql stays the whole current schema, so a new file
 * never runs these. Each step is frozen once released: pool.db.sql moves on, a step never does,
 * and a migrated file must end up exactly like a new one (test_store_pool.c compares
 * sqlite_schema, comments inside the statements included, so they are copied too).
 */
struct migration {
	int from;
	const char *sql;
};

/* 1 -> 2: the egress pool, its tags and health, the usage counters (pool.db.sql of version 2;
 * the comments there say what each column means). */
static const char migrate_1_2[] =
	"CREATE TABLE pool (\n"
	"    id       INTEGER PRIMARY KEY,\n"
	"    address  TEXT    NOT NULL UNIQUE,\n"
	"    family   INTEGER NOT NULL CHECK (family IN (4, 6)),\n"
	"    prefix   INTEGER NOT NULL CHECK ((family = 4 AND prefix = 32)\n"
	"                                     OR (family = 6 AND prefix BETWEEN 32 AND 128)),\n"
	"    weight   INTEGER NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 1000000),\n"
	"    enabled  INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),\n"
	"    note     TEXT    NOT NULL DEFAULT '',\n"
	"    added    INTEGER NOT NULL                                    -- Unix seconds\n"
	") STRICT;\n"
	"CREATE TABLE pool_tags (\n"
	"    pool_id  INTEGER NOT NULL REFERENCES pool (id) ON DELETE CASCADE,\n"
	"    key      TEXT    NOT NULL CHECK (length(key) BETWEEN 1 AND 32"
	" AND key NOT GLOB '*[^a-z0-9_.]*'),\n"
	"    value    TEXT    NOT NULL CHECK (length(value) BETWEEN 1 AND 32\n"
	"                                     AND value NOT GLOB '*[^A-Za-z0-9_.]*'),\n"
	"    PRIMARY KEY (pool_id, key)\n"
	") STRICT;\n"
	"CREATE TABLE pool_health (\n"
	"    pool_id         INTEGER NOT NULL PRIMARY KEY REFERENCES pool (id) ON DELETE CASCADE,\n"
	"    cooldown_until  INTEGER NOT NULL,      -- Unix seconds; in the past = healthy\n"
	"    failures        INTEGER NOT NULL      "
	" -- consecutive failures: the back-off exponent\n"
	") STRICT;\n"
	"CREATE TABLE usage_egress (\n"
	"    day          TEXT    NOT NULL,         -- 'YYYY-MM-DD', UTC\n"
	"    address      TEXT    NOT NULL,        "
	" -- pool.address at the time ('' = system default address)\n"
	"    connections  INTEGER NOT NULL DEFAULT 0,\n"
	"    bytes_up     INTEGER NOT NULL DEFAULT 0,   -- client -> target\n"
	"    bytes_down   INTEGER NOT NULL DEFAULT 0,   -- target -> client\n"
	"    failures     INTEGER NOT NULL DEFAULT 0,\n"
	"    PRIMARY KEY (day, address)\n"
	") STRICT;\n"
	"CREATE TABLE usage_user (\n"
	"    day          TEXT    NOT NULL,\n"
	"    user         TEXT    NOT NULL,         -- users.name ('' = no authentication)\n"
	"    connections  INTEGER NOT NULL DEFAULT 0,\n"
	"    bytes_up     INTEGER NOT NULL DEFAULT 0,\n"
	"    bytes_down   INTEGER NOT NULL DEFAULT 0,\n"
	"    failures     INTEGER NOT NULL DEFAULT 0,\n"
	"    PRIMARY KEY (day, user)\n"
	") STRICT;\n";

/* 2 -> 3: UDP datagram counters, the encrypted link's clients. ADD COLUMN inserts its text after
 * the last column, which is where pool.db.sql has it, so the two files read the same. */
static const char migrate_2_3[] =
	"ALTER TABLE usage_egress ADD COLUMN datagrams    INTEGER NOT NULL DEFAULT 0;\n"
	"ALTER TABLE usage_user ADD COLUMN datagrams    INTEGER NOT NULL DEFAULT 0;\n"
	"CREATE TABLE links (\n"
	"    name        TEXT    NOT NULL PRIMARY KEY\n"
	"                        CHECK (length(name) BETWEEN 1 AND 64\n"
	"                               AND name NOT GLOB '*[^A-Za-z0-9_.]*'\n"
	"                               AND substr(name, 1, 1) GLOB '[A-Za-z0-9]'),\n"
	"    user        TEXT    NOT NULL REFERENCES users (name) ON DELETE CASCADE,\n"
	"    public_key  BLOB    NOT NULL UNIQUE CHECK (length(public_key) = 32),\n"
	"    psk         BLOB    NOT NULL CHECK (length(psk) = 32),\n"
	"    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),\n"
	"    created     INTEGER NOT NULL                                 -- Unix seconds\n"
	") STRICT;\n";

static const struct migration migrations[] = {
	{ 1, migrate_1_2 },
	{ 2, migrate_2_3 },
	{ 0, NULL }, /* end */
};

/* store_open's description of its last failure, per thread (store.h: valid until the next call). */
static _Thread_local char open_err[STORE_ERR_MAX];

/* Every snapshot built by this process gets the next number, whichever store built it. */
static atomic_uint_fast64_t snapshot_generation;

/* ---- errors ---------------------------------------------------------------------------------- */

/* Record SQLite's message for the failed call on s; map the code to a status. */
static int db_fail(struct store *s, int rc, const char *what)
{
	if ((rc & 0xff) == SQLITE_NOTADB) {
		snprintf(s->err, sizeof(s->err), "not a shroud database (not an SQLite file)");
		return ST_EDB;
	}
	snprintf(s->err, sizeof(s->err), "%s: %s", what, sqlite3_errmsg(s->db));
	return (rc & 0xff) == SQLITE_NOMEM ? ST_ENOMEM : ST_EDB;
}

/* Record a failure of our own making (not SQLite's) on s. */
static int store_fail(struct store *s, int st, const char *fmt, ...) PRINTF_LIKE(3, 4);
static int store_fail(struct store *s, int st, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
	return st;
}

/* Fill store_open's thread-local message; keeps errno for ST_ESYS. */
static int open_fail(const char **errmsg, int st, const char *fmt, ...) PRINTF_LIKE(3, 4);
static int open_fail(const char **errmsg, int st, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(open_err, sizeof(open_err), fmt, ap);
	va_end(ap);
	if (errmsg != NULL)
		*errmsg = open_err;
	errno = saved;
	return st;
}

/* A failed system call in store_open: "<what>: <strerror>", errno kept for ST_ESYS. */
static int sys_fail(const char **errmsg, const char *what)
{
	int saved = errno;
	char ebuf[128];
	const char *text = strerror_r(saved, ebuf, sizeof(ebuf)); /* GNU: returns the text */

	errno = saved;
	return open_fail(errmsg, ST_ESYS, "%s: %s", what, text);
}

/* ---- small SQLite helpers ------------------------------------------------------------------ */

static int exec(struct store *s, const char *sql)
{
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

	if (rc != SQLITE_OK)
		return db_fail(s, rc, "SQLite");
	return ST_OK;
}

/* Undo an open transaction, if any: SQLite may already have rolled back after some errors. */
static void tx_rollback(struct store *s)
{
	if (!sqlite3_get_autocommit(s->db))
		(void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static int prepare(struct store *s, const char *sql, sqlite3_stmt **stmt)
{
	int rc = sqlite3_prepare_v2(s->db, sql, -1, stmt, NULL);

	if (rc != SQLITE_OK) {
		*stmt = NULL;
		return db_fail(s, rc, "SQLite");
	}
	return ST_OK;
}

/* Run a statement that returns one integer row (count(*), PRAGMA user_version, ...). */
static int query_int64(struct store *s, const char *sql, int64_t *out)
{
	sqlite3_stmt *stmt;
	int rc, st;

	st = prepare(s, sql, &stmt);
	if (st != ST_OK)
		return st;
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(stmt, 0);
		st = ST_OK;
	} else if (rc == SQLITE_DONE) {
		st = store_fail(s, ST_EDB, "SQLite: \"%s\" returned no row", sql);
	} else {
		st = db_fail(s, rc, "SQLite");
	}
	sqlite3_finalize(stmt);
	return st;
}

/*
 * Step a mutation to completion and report how many rows it changed. A single statement in
 * autocommit mode is its own transaction: on failure SQLite undid all of it.
 */
static int step_change(struct store *s, sqlite3_stmt *stmt, int *changes)
{
	int rc = sqlite3_step(stmt);

	if (rc == SQLITE_DONE) {
		*changes = sqlite3_changes(s->db);
		return ST_OK;
	}
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
		store_fail(s, ST_EEXIST, "already exists");
		return ST_EEXIST;
	}
	if ((rc & 0xff) == SQLITE_CONSTRAINT) {
		/* A CHECK in pool.db.sql refused a value our own validation let through. */
		db_fail(s, rc, "SQLite");
		return ST_EINVAL;
	}
	return db_fail(s, rc, "SQLite");
}

/* ---- schema ---------------------------------------------------------------------------------- */

/*
 * The file's schema version and whether it has any table at all, read by one statement: both come
 * from the same version of the file, though another process may commit between two statements.
 */
static int read_state(struct store *s, int *version, bool *empty)
{
	sqlite3_stmt *stmt;
	int rc, st;

	st = prepare(s,
		     "SELECT (SELECT user_version FROM pragma_user_version),"
		     " NOT EXISTS (SELECT 1 FROM sqlite_master)",
		     &stmt);
	if (st != ST_OK)
		return st;
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		/* user_version is a signed 32-bit field of the file header. */
		*version = sqlite3_column_int(stmt, 0);
		*empty = sqlite3_column_int(stmt, 1) != 0;
	} else {
		st = db_fail(s, rc, "SQLite");
	}
	sqlite3_finalize(stmt);
	return st;
}

/* Refuse what this build cannot use; *done when the file is already current. */
static int state_check(struct store *s, int version, bool empty, bool *done)
{
	*done = false;
	if (version > STORE_SCHEMA_VERSION)
		return store_fail(s, ST_EVERSION,
				  "database was written by a newer shroud (schema %d, this build knows %d)",
				  version, STORE_SCHEMA_VERSION);
	if (version < 0)
		return store_fail(s, ST_EDB, "not a shroud database (schema version %d)", version);
	if (version == 0 && !empty)
		return store_fail(s, ST_EDB,
				  "not a shroud database (it has tables but no shroud schema version)");
	*done = version == STORE_SCHEMA_VERSION;
	return ST_OK;
}

static const struct migration *migration_find(int from)
{
	for (size_t i = 0; migrations[i].sql != NULL; i++) {
		if (migrations[i].from == from)
			return &migrations[i];
	}
	return NULL;
}

/*
 * One step towards STORE_SCHEMA_VERSION, inside the caller's BEGIN IMMEDIATE: apply the whole
 * schema to an empty file, or one migration to an older one. The state is read again here,
 * under the write lock, so of two processes opening the same new file only the first applies the
 * schema; the second finds it done. *done is set when the file needs nothing more.
 */
static int schema_step(struct store *s, bool *done)
{
	const struct migration *m;
	int version, st;
	bool empty;
	char sql[64];

	st = read_state(s, &version, &empty);
	if (st == ST_OK)
		st = state_check(s, version, empty, done);
	if (st != ST_OK || *done)
		return st;

	if (version == 0) {
		st = exec(s, store_schema_sql);
		if (st == ST_OK)
			st = read_state(s, &version, &empty);
		if (st != ST_OK)
			return st;
		/* pool.db.sql and STORE_SCHEMA_VERSION are edited together: catch the day they
		 * are not. */
		if (version != STORE_SCHEMA_VERSION)
			return store_fail(s, ST_EDB,
					  "built-in schema sets version %d, this build expects %d", version,
					  STORE_SCHEMA_VERSION);
		*done = true;
		return ST_OK;
	}

	m = migration_find(version);
	if (m == NULL)
		return store_fail(s, ST_EDB, "no migration from schema %d to %d", version, version + 1);
	st = exec(s, m->sql);
	if (st != ST_OK)
		return st;
	/* PRAGMA takes no bound parameters; the number is ours. */
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version + 1);
	return exec(s, sql);
}

/* Bring the file to STORE_SCHEMA_VERSION, one transaction per step. */
static int schema_upgrade(struct store *s)
{
	int version, st;
	bool empty, done;

	/* Look first without the write lock: a current file, a newer one or a stranger needs no
	 * writing. */
	st = read_state(s, &version, &empty);
	if (st == ST_OK)
		st = state_check(s, version, empty, &done);
	if (st != ST_OK || done)
		return st;

	while (!done) {
		st = exec(s, "BEGIN IMMEDIATE");
		if (st != ST_OK)
			return st;
		st = schema_step(s, &done);
		if (st == ST_OK)
			st = exec(s, "COMMIT");
		if (st != ST_OK) {
			tx_rollback(s);
			return st;
		}
	}
	return ST_OK;
}

/* ---- open / close ---------------------------------------------------------------------------- */

/*
 * Check (and with STORE_CREATE, create) the database file before SQLite opens it.
 *
 * The file is created with open(2) and closed at once, then examined with lstat(2) by path, rather
 * than kept open: closing any descriptor of a file drops every POSIX lock this process holds on it,
 * including those of another SQLite connection to the same file in this process (SQLite's
 * "How To Corrupt", §2.2). A file we have just created with O_EXCL is open nowhere else.
 */
static int file_prepare(const char *path, unsigned flags, const char **errmsg)
{
	struct stat st;
	int fd;

	for (int tries = 0;; tries++) {
		if (lstat(path, &st) == 0)
			break;
		if (errno != ENOENT)
			return sys_fail(errmsg, "cannot examine the database file");
		if (!(flags & STORE_CREATE))
			return open_fail(errmsg, ST_ENOTFOUND, "database file does not exist");
		/* O_EXCL: never adopt a file someone slipped in (nor follow a dangling symlink). */
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0) {
			/* 0600 whatever the umask took away. */
			int rc = fchmod(fd, 0600);
			int saved = errno;

			close(fd);
			if (rc != 0) {
				errno = saved;
				return sys_fail(errmsg, "cannot set the database file's mode");
			}
			continue;
		}
		/* EEXIST: another process created it between lstat and open; examine theirs. */
		if (errno != EEXIST || tries >= 3)
			return sys_fail(errmsg, "cannot create the database file");
	}

	if (S_ISLNK(st.st_mode))
		return open_fail(errmsg, ST_EPERM,
				 "database path is a symbolic link: give the path of the file itself");
	if (!S_ISREG(st.st_mode))
		return open_fail(errmsg, ST_EPERM, "database path is not a regular file");
	if ((flags & STORE_REQUIRE_PRIVATE) && (st.st_mode & 077) != 0)
		return open_fail(errmsg, ST_EPERM,
				 "database file is %s by group or others (mode %04o): chmod 600 it",
				 (st.st_mode & 044) ? "readable" : "accessible",
				 (unsigned)(st.st_mode & 07777));
	return ST_OK;
}

/* The connection settings every store uses; then the schema. */
static int store_setup(struct store *s, bool memory)
{
	sqlite3_stmt *stmt;
	const unsigned char *mode;
	int rc, st;

	sqlite3_extended_result_codes(s->db, 1);
	/* Before the first statement: switching to WAL and BEGIN IMMEDIATE both may wait for
	 * another process. */
	sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
	/* Hardening: no writable_schema tricks, no SQL functions with side effects run from a
	 * schema a hostile file might carry. */
	sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
	sqlite3_db_config(s->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);

	if (!memory) {
		/* WAL lets the CLI write while the daemon reads (DESIGN.md, "Data"). */
		st = prepare(s, "PRAGMA journal_mode=WAL", &stmt);
		if (st != ST_OK)
			return st;
		/* The switch upgrades a read lock to a write lock, and SQLite does not call the busy
		 * handler for an upgrade (two upgraders would deadlock): a process opening the same new
		 * file at the same moment gets SQLITE_BUSY at once. Wait for it here instead, within
		 * the same budget. Once the file is in WAL mode the pragma takes no write lock. */
		for (int waited = 0;; waited += STORE_WAL_RETRY_MS) {
			rc = sqlite3_step(stmt);
			if ((rc & 0xff) != SQLITE_BUSY || waited >= STORE_BUSY_TIMEOUT_MS)
				break;
			sqlite3_reset(stmt);
			sqlite3_sleep(STORE_WAL_RETRY_MS);
		}
		if (rc != SQLITE_ROW) {
			st = db_fail(s, rc, "SQLite");
			sqlite3_finalize(stmt);
			return st;
		}
		mode = sqlite3_column_text(stmt, 0);
		if (mode == NULL || strcmp((const char *)mode, "wal") != 0)
			st = store_fail(s, ST_EDB, "cannot switch the database to WAL mode (it stays in %s)",
					mode != NULL ? (const char *)mode : "an unknown mode");
		sqlite3_finalize(stmt);
		if (st != ST_OK)
			return st;
	}
	/* NORMAL is durable enough in WAL mode (a power cut may lose the last commit, never
	 * corrupt). secure_delete: removed hashes and secrets are overwritten, not left in free
	 * pages. */
	st = exec(s, "PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL; PRAGMA secure_delete=ON");
	if (st != ST_OK)
		return st;
	return schema_upgrade(s);
}

int store_open(const char *path, unsigned flags, struct store **out, const char **errmsg)
{
	struct store *s = NULL;
	char *dbpath = NULL;
	bool memory;
	int rc, st;

	if (path == NULL || *path == '\0')
		return open_fail(errmsg, ST_EINVAL, "no database path given");
	memory = strcmp(path, ":memory:") == 0;
	if (!memory) {
		st = file_prepare(path, flags, errmsg);
		if (st != ST_OK)
			return st;
	}

	s = calloc(1, sizeof(*s));
	/* We never ask for URIs (no SQLITE_OPEN_URI), but an SQLite built with SQLITE_USE_URI=1
	 * (Debian's is) reads "file:..." as one, query parameters and all. A path is a path: a
	 * relative one that starts with "file:" gets "./" in front. */
	if (!memory && strncmp(path, "file:", 5) == 0) {
		size_t len = strlen(path);

		dbpath = malloc(len + 3);
		if (dbpath != NULL) {
			memcpy(dbpath, "./", 2);
			memcpy(dbpath + 2, path, len + 1);
		}
	} else {
		dbpath = strdup(path);
	}
	if (s == NULL || dbpath == NULL) {
		st = open_fail(errmsg, ST_ENOMEM, "out of memory opening the database");
		goto out;
	}

	/* No SQLITE_OPEN_CREATE: a file is created by file_prepare (mode 0600) or not at all.
	 * NOMUTEX: a store is used by one thread at a time (store.h). */
	rc = sqlite3_open_v2(dbpath, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		if (s->db == NULL) {
			st = open_fail(errmsg, ST_ENOMEM, "out of memory opening the database");
		} else {
			st = open_fail(errmsg, (rc & 0xff) == SQLITE_NOMEM ? ST_ENOMEM : ST_EDB,
				       "cannot open the database: %s", sqlite3_errmsg(s->db));
		}
		goto out;
	}

	st = store_setup(s, memory);
	if (st != ST_OK) {
		open_fail(errmsg, st, "%s", s->err);
		goto out;
	}

	s->err[0] = '\0';
	*out = s;
	s = NULL; /* transferred */
out:
	store_close(s);
	free(dbpath);
	return st;
}

void store_close(struct store *s)
{
	if (s == NULL)
		return;
	/* Every statement is finalized by the call that prepared it, so the connection closes now. */
	sqlite3_close_v2(s->db);
	free(s);
}

const char *store_errmsg(struct store *s)
{
	return s->err[0] != '\0' ? s->err : "no error";
}

int store_schema_version(struct store *s, int *version)
{
	bool empty;

	return read_state(s, version, &empty);
}

int store_data_version(struct store *s, int64_t *version)
{
	return query_int64(s, "PRAGMA data_version", version);
}

/* ---- users ----------------------------------------------------------------------------------- */

static bool name_char(char c, bool first)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return !first && (c == '_' || c == '.');
}

bool store_user_name_valid(const char *name)
{
	size_t i;

	if (name == NULL)
		return false;
	/* The same rule as the CHECK on users.name in pool.db.sql; ASCII only, no locale. */
	for (i = 0; name[i] != '\0'; i++) {
		if (i == STORE_USER_NAME_MAX || !name_char(name[i], i == 0))
			return false;
	}
	return i > 0;
}

/* A hash we can store: crypto_pwhash_str's format, short enough for a snapshot. */
static bool hash_valid(const char *hash)
{
	return hash != NULL && strncmp(hash, HASH_PREFIX, strlen(HASH_PREFIX)) == 0 &&
	       strnlen(hash, SNAPSHOT_HASH_MAX) < SNAPSHOT_HASH_MAX;
}

int store_user_add(struct store *s, const char *name, const char *hash)
{
	sqlite3_stmt *stmt;
	int changes, st;

	if (!store_user_name_valid(name))
		return store_fail(s, ST_EINVAL, "invalid user name");
	if (!hash_valid(hash))
		return store_fail(s, ST_EINVAL, "invalid password hash");
	st = prepare(s, "INSERT INTO users (name, hash, enabled, created) VALUES (?1, ?2, 1, ?3)",
		     &stmt);
	if (st != ST_OK)
		return st;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, hash, -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 3, (sqlite3_int64)time(NULL));
	st = step_change(s, stmt, &changes);
	sqlite3_finalize(stmt);
	if (st == ST_EEXIST)
		store_fail(s, ST_EEXIST, "user already exists");
	return st;
}

/* Run a one-row mutation keyed by user name; ST_ENOTFOUND when it matched no row. */
static int user_change(struct store *s, sqlite3_stmt *stmt)
{
	int changes, st;

	st = step_change(s, stmt, &changes);
	sqlite3_finalize(stmt);
	if (st != ST_OK)
		return st;
	if (changes == 0)
		return store_fail(s, ST_ENOTFOUND, "no such user");
	return ST_OK;
}

int store_user_remove(struct store *s, const char *name)
{
	sqlite3_stmt *stmt;
	int st;

	/* An invalid name cannot be in the table: the same answer as for any absent user. */
	if (!store_user_name_valid(name))
		return store_fail(s, ST_ENOTFOUND, "no such user");
	st = prepare(s, "DELETE FROM users WHERE name = ?1", &stmt);
	if (st != ST_OK)
		return st;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	return user_change(s, stmt);
}

int store_user_set_hash(struct store *s, const char *name, const char *hash)
{
	sqlite3_stmt *stmt;
	int st;

	if (!hash_valid(hash))
		return store_fail(s, ST_EINVAL, "invalid password hash");
	if (!store_user_name_valid(name))
		return store_fail(s, ST_ENOTFOUND, "no such user");
	st = prepare(s, "UPDATE users SET hash = ?2 WHERE name = ?1", &stmt);
	if (st != ST_OK)
		return st;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, hash, -1, SQLITE_STATIC);
	return user_change(s, stmt);
}

int store_user_set_enabled(struct store *s, const char *name, bool enabled)
{
	sqlite3_stmt *stmt;
	int st;

	if (!store_user_name_valid(name))
		return store_fail(s, ST_ENOTFOUND, "no such user");
	st = prepare(s, "UPDATE users SET enabled = ?2 WHERE name = ?1", &stmt);
	if (st != ST_OK)
		return st;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int(stmt, 2, enabled ? 1 : 0);
	return user_change(s, stmt);
}

int store_user_list(struct store *s, store_user_fn *fn, void *ctx)
{
	struct store_user_info info;
	sqlite3_stmt *stmt;
	const unsigned char *name;
	int rc, st;

	/* BINARY collation: byte order, the same as strcmp. */
	st = prepare(s, "SELECT name, enabled, created FROM users ORDER BY name COLLATE BINARY",
		     &stmt);
	if (st != ST_OK)
		return st;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		name = sqlite3_column_text(stmt, 0);
		if (name == NULL) {
			st = store_fail(s, ST_EDB, "user with no name in the database");
			goto out;
		}
		info.name = (const char *)name;
		info.enabled = sqlite3_column_int(stmt, 1) != 0;
		info.created = sqlite3_column_int64(stmt, 2);
		fn(&info, ctx);
	}
	if (rc != SQLITE_DONE)
		st = db_fail(s, rc, "SQLite");
out:
	sqlite3_finalize(stmt);
	return st;
}

/* ---- settings -------------------------------------------------------------------------------- */

int store_setting_get(struct store *s, const char *key, char *buf, size_t size)
{
	sqlite3_stmt *stmt;
	const unsigned char *value;
	size_t len;
	int rc, st;

	if (key == NULL || buf == NULL)
		return store_fail(s, ST_EINVAL, "no setting key or buffer");
	st = prepare(s, "SELECT value FROM settings WHERE key = ?1", &stmt);
	if (st != ST_OK)
		return st;
	sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_DONE) {
		st = store_fail(s, ST_ENOTFOUND, "setting not set");
		goto out;
	}
	if (rc != SQLITE_ROW) {
		st = db_fail(s, rc, "SQLite");
		goto out;
	}
	value = sqlite3_column_text(stmt, 0);
	if (value == NULL) {
		st = (sqlite3_errcode(s->db) & 0xff) == SQLITE_NOMEM ? ST_ENOMEM : ST_EDB;
		store_fail(s, st, "cannot read setting value");
		goto out;
	}
	len = (size_t)sqlite3_column_bytes(stmt, 0);
	if (len >= size) {
		st = store_fail(s, ST_ETOOBIG, "setting value too long for the buffer");
		goto out;
	}
	memcpy(buf, value, len);
	buf[len] = '\0';
out:
	sqlite3_finalize(stmt);
	return st;
}

int store_setting_set(struct store *s, const char *key, const char *value)
{
	sqlite3_stmt *stmt;
	int changes, st;

	if (key == NULL || value == NULL)
		return store_fail(s, ST_EINVAL, "no setting key or value");
	st = prepare(s,
		     "INSERT INTO settings (key, value) VALUES (?1, ?2)"
		     " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
		     &stmt);
	if (st != ST_OK)
		return st;
	sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, value, -1, SQLITE_STATIC);
	st = step_change(s, stmt, &changes);
	sqlite3_finalize(stmt);
	return st;
}

/* ---- the egress pool ------------------------------------------------------------------------- */

/* The bounds the CHECKs on pool in pool.db.sql hold. */
#define POOL_WEIGHT_MAX 1000000
#define POOL_V6_PREFIX_MIN 32

/* Tag keys are 1..STORE_TAG_MAX of [a-z0-9_.], values of [A-Za-z0-9_.] (CHECKs on pool_tags):
 * nothing that needs quoting in a SOCKS username parameter or a listing. ASCII only, no locale. */
bool store_pool_tag_valid(const char *text, bool key)
{
	size_t i;

	if (text == NULL)
		return false;
	for (i = 0; text[i] != '\0'; i++) {
		char c = text[i];

		if (i == STORE_TAG_MAX)
			return false;
		if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.')
			continue;
		if (!key && c >= 'A' && c <= 'Z')
			continue;
		return false;
	}
	return i > 0;
}

/* True when every bit of addr after the first prefix_len is zero. */
static bool host_bits_zero(const uint8_t addr[static 16], unsigned prefix_len)
{
	for (unsigned bit = prefix_len; bit < 128; bit++) {
		if (addr[bit / 8] & (0x80u >> (bit % 8)))
			return false;
	}
	return true;
}

void store_pool_address_text(int family, const uint8_t addr[static 16], uint8_t prefix_len,
			     char out[static STORE_ADDRESS_MAX])
{
	char ip[INET6_ADDRSTRLEN];

	out[0] = '\0';
	/* inet_ntop fails only for another family or a short buffer. */
	if ((family != AF_INET && family != AF_INET6) || inet_ntop(family, addr, ip, sizeof(ip)) == NULL)
		return;
	if (family == AF_INET6 && prefix_len < 128)
		snprintf(out, STORE_ADDRESS_MAX, "%s/%u", ip, (unsigned)prefix_len);
	else
		snprintf(out, STORE_ADDRESS_MAX, "%s", ip);
}

/*
 * Parse an address column back: "A.B.C.D", "V6" or "V6/LEN". True only when the text is exactly
 * what store_pool_address_text makes of the result (canonical; no "/128", no leading zeros), so
 * the row's text and its parsed address cannot disagree.
 */
static bool pool_text_parse(const char *text, int *family, uint8_t addr[static 16],
			    uint8_t *prefix_len)
{
	char head[INET6_ADDRSTRLEN], again[STORE_ADDRESS_MAX];
	const char *slash = strchr(text, '/');
	size_t len = slash != NULL ? (size_t)(slash - text) : strlen(text);
	unsigned plen = 128;

	memset(addr, 0, 16);
	if (len >= sizeof(head))
		return false;
	memcpy(head, text, len);
	head[len] = '\0';
	if (slash == NULL && inet_pton(AF_INET, head, addr) == 1) {
		*family = AF_INET;
		*prefix_len = 32;
	} else if (inet_pton(AF_INET6, head, addr) == 1) {
		if (slash != NULL) {
			const char *p = slash + 1;

			/* At most three digits; the round trip below refuses leading zeros. */
			plen = 0;
			for (size_t i = 0; i < 3 && *p >= '0' && *p <= '9'; i++, p++)
				plen = plen * 10 + (unsigned)(*p - '0');
			if (p == slash + 1 || *p != '\0' || plen > 128)
				return false;
		}
		*family = AF_INET6;
		*prefix_len = (uint8_t)plen;
	} else {
		return false;
	}
	store_pool_address_text(*family, addr, *prefix_len, again);
	return strcmp(again, text) == 0;
}

/* What is wrong with an entry to add, or NULL. The same rules as the CHECKs in pool.db.sql, plus
 * what SQL does not see: the host bits of a prefix, tag keys given twice. */
static const char *pool_new_problem(const struct store_pool_new *e)
{
	if (e->family == AF_INET) {
		/* Only addr[0..3] is read for IPv4 (store.h). */
		if (e->prefix_len != 32)
			return "an IPv4 entry is one address (prefix length 32)";
	} else if (e->family == AF_INET6) {
		if (e->prefix_len < POOL_V6_PREFIX_MIN || e->prefix_len > 128)
			return "an IPv6 prefix length is 32 to 128";
		if (!host_bits_zero(e->addr, e->prefix_len))
			return "the prefix has host bits set";
	} else {
		return "not an IPv4 or IPv6 entry";
	}
	if (e->weight < 1 || e->weight > POOL_WEIGHT_MAX)
		return "the weight is not 1 to 1000000";
	if (e->ntags > STORE_POOL_TAGS_MAX)
		return "more than 16 tags";
	for (size_t i = 0; i < e->ntags; i++) {
		if (!store_pool_tag_valid(e->tag_keys[i], true))
			return "a tag key is not 1 to 32 of a-z 0-9 _ .";
		if (!store_pool_tag_valid(e->tag_values[i], false))
			return "a tag value is not 1 to 32 of A-Z a-z 0-9 _ .";
		for (size_t j = 0; j < i; j++) {
			if (strcmp(e->tag_keys[i], e->tag_keys[j]) == 0)
				return "a tag key is given twice";
		}
	}
	return NULL;
}

/* After ST_EEXIST on entry i: twice in the list, or already in the table? For the message. */
static bool pool_listed_before(const struct store_pool_new *entries, size_t i)
{
	char a[STORE_ADDRESS_MAX], b[STORE_ADDRESS_MAX];

	store_pool_address_text(entries[i].family, entries[i].addr, entries[i].prefix_len, a);
	for (size_t j = 0; j < i; j++) {
		store_pool_address_text(entries[j].family, entries[j].addr, entries[j].prefix_len, b);
		if (strcmp(a, b) == 0)
			return true;
	}
	return false;
}

/* Insert entry e (and its tags) inside the caller's transaction. */
static int pool_insert(struct store *s, sqlite3_stmt *ins, sqlite3_stmt *tag,
		       const struct store_pool_new *e, sqlite3_int64 now)
{
	char text[STORE_ADDRESS_MAX];
	sqlite3_int64 id;
	int changes, st;

	store_pool_address_text(e->family, e->addr, e->prefix_len, text);
	(void)sqlite3_reset(ins);
	sqlite3_bind_text(ins, 1, text, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(ins, 2, e->family == AF_INET ? 4 : 6);
	sqlite3_bind_int(ins, 3, e->prefix_len);
	sqlite3_bind_int64(ins, 4, e->weight);
	sqlite3_bind_text(ins, 5, e->note != NULL ? e->note : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(ins, 6, now);
	st = step_change(s, ins, &changes);
	if (st != ST_OK)
		return st;
	id = sqlite3_last_insert_rowid(s->db);
	/* Snapshots carry ids as uint32 (and refuse a file with larger ones): only a hand-edited
	 * file gets near this, as new ids are the largest plus one. */
	if (id < 0 || id > (sqlite3_int64)UINT32_MAX)
		return store_fail(s, ST_EFULL, "pool ids are exhausted (id %lld)", (long long)id);
	for (size_t t = 0; t < e->ntags; t++) {
		(void)sqlite3_reset(tag);
		sqlite3_bind_int64(tag, 1, id);
		sqlite3_bind_text(tag, 2, e->tag_keys[t], -1, SQLITE_STATIC);
		sqlite3_bind_text(tag, 3, e->tag_values[t], -1, SQLITE_STATIC);
		st = step_change(s, tag, &changes);
		if (st != ST_OK)
			return st;
	}
	return ST_OK;
}

int store_pool_add(struct store *s, const struct store_pool_new *entries, size_t n, size_t *bad)
{
	char text[STORE_ADDRESS_MAX];
	sqlite3_stmt *ins = NULL, *tag = NULL;
	sqlite3_int64 now = (sqlite3_int64)time(NULL);
	const char *problem;
	size_t i = 0;
	int st;

	if (n > 0 && entries == NULL)
		return store_fail(s, ST_EINVAL, "no pool entries given");
	/* Every field first: a caller's mistake is refused before the write lock is taken. */
	for (i = 0; i < n; i++) {
		problem = pool_new_problem(&entries[i]);
		if (problem != NULL) {
			store_pool_address_text(entries[i].family, entries[i].addr,
						entries[i].prefix_len, text);
			if (bad != NULL)
				*bad = i;
			return store_fail(s, ST_EINVAL, "pool entry %zu (%s): %s", i,
					  text[0] != '\0' ? text : "?", problem);
		}
	}
	if (n == 0)
		return ST_OK;

	/* IMMEDIATE: take the write lock now (waiting within the busy timeout), not half way. */
	st = exec(s, "BEGIN IMMEDIATE");
	if (st != ST_OK)
		return st;
	st = prepare(s,
		     "INSERT INTO pool (address, family, prefix, weight, enabled, note, added)"
		     " VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6)",
		     &ins);
	if (st == ST_OK)
		st = prepare(s, "INSERT INTO pool_tags (pool_id, key, value) VALUES (?1, ?2, ?3)", &tag);
	/* The UNIQUE address catches a duplicate of the table and of an earlier entry alike. */
	for (i = 0; st == ST_OK && i < n; i++) {
		st = pool_insert(s, ins, tag, &entries[i], now);
		if (st == ST_OK)
			continue;
		store_pool_address_text(entries[i].family, entries[i].addr, entries[i].prefix_len,
					text);
		if (st == ST_EEXIST)
			store_fail(s, st, "%s %s", text,
				   pool_listed_before(entries, i) ? "is twice in the list"
								  : "is already in the pool");
		if ((st == ST_EEXIST || st == ST_EINVAL) && bad != NULL)
			*bad = i;
		goto out;
	}
	if (st == ST_OK)
		st = exec(s, "COMMIT");
out:
	sqlite3_finalize(ins);
	sqlite3_finalize(tag);
	if (st != ST_OK)
		tx_rollback(s);
	return st;
}

/* Was addresses[i] already given earlier in the list? */
static bool address_listed_before(const char *const *addresses, size_t i)
{
	for (size_t j = 0; j < i; j++) {
		if (strcmp(addresses[j], addresses[i]) == 0)
			return true;
	}
	return false;
}

/*
 * Run stmt (?1 the address text, ?2 `enabled` when it is 0 or 1) once per address, in one
 * transaction; ST_ENOTFOUND (with *bad) for an address that matches no row. An address given
 * twice is not "not found" the second time, when its row is gone because of the first.
 */
static int pool_change(struct store *s, const char *sql, int enabled, const char *const *addresses,
		       size_t n, size_t *bad)
{
	sqlite3_stmt *stmt = NULL;
	int changes, st;

	if (n > 0 && addresses == NULL)
		return store_fail(s, ST_EINVAL, "no addresses given");
	for (size_t i = 0; i < n; i++) {
		if (addresses[i] == NULL) {
			if (bad != NULL)
				*bad = i;
			return store_fail(s, ST_EINVAL, "address %zu is missing", i);
		}
	}
	if (n == 0)
		return ST_OK;

	st = exec(s, "BEGIN IMMEDIATE");
	if (st != ST_OK)
		return st;
	st = prepare(s, sql, &stmt);
	if (st != ST_OK)
		goto out;
	for (size_t i = 0; i < n; i++) {
		(void)sqlite3_reset(stmt);
		sqlite3_bind_text(stmt, 1, addresses[i], -1, SQLITE_STATIC);
		if (enabled >= 0)
			sqlite3_bind_int(stmt, 2, enabled);
		st = step_change(s, stmt, &changes);
		if (st != ST_OK)
			goto out;
		if (changes == 0 && !address_listed_before(addresses, i)) {
			if (bad != NULL)
				*bad = i;
			st = store_fail(s, ST_ENOTFOUND, "%s is not in the pool", addresses[i]);
			goto out;
		}
	}
	st = exec(s, "COMMIT");
out:
	sqlite3_finalize(stmt);
	if (st != ST_OK)
		tx_rollback(s);
	return st;
}

int store_pool_remove(struct store *s, const char *const *addresses, size_t n, size_t *bad)
{
	/* Tags and health go with the entry (ON DELETE CASCADE; foreign_keys is on). */
	return pool_change(s, "DELETE FROM pool WHERE address = ?1", -1, addresses, n, bad);
}

int store_pool_set_enabled(struct store *s, const char *const *addresses, size_t n, bool enabled,
			   size_t *bad)
{
	/* SQLite counts a matched row as changed even when the value stays: enabling an enabled
	 * entry is found, not "not in the pool". */
	return pool_change(s, "UPDATE pool SET enabled = ?2 WHERE address = ?1", enabled ? 1 : 0,
			   addresses, n, bad);
}

/* ---- health and usage ------------------------------------------------------------------------ */

int store_health_write(struct store *s, const struct store_health *rows, size_t n)
{
	sqlite3_stmt *stmt = NULL;
	int changes, st;

	if (n > 0 && rows == NULL)
		return store_fail(s, ST_EINVAL, "no health rows given");
	if (n == 0)
		return ST_OK;
	st = exec(s, "BEGIN IMMEDIATE");
	if (st != ST_OK)
		return st;
	/* The entry may have been removed by the CLI since the daemon's snapshot: the WHERE skips
	 * it rather than failing the whole batch on the foreign key. (The WHERE also settles the
	 * parser's INSERT ... SELECT ... ON CONFLICT ambiguity, see SQLite's "upsert" page.) */
	st = prepare(s,
		     "INSERT INTO pool_health (pool_id, cooldown_until, failures)"
		     " SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM pool WHERE id = ?1)"
		     " ON CONFLICT (pool_id) DO UPDATE SET cooldown_until = excluded.cooldown_until,"
		     " failures = excluded.failures",
		     &stmt);
	for (size_t i = 0; st == ST_OK && i < n; i++) {
		(void)sqlite3_reset(stmt);
		sqlite3_bind_int64(stmt, 1, rows[i].pool_id);
		sqlite3_bind_int64(stmt, 2, rows[i].cooldown_until);
		sqlite3_bind_int64(stmt, 3, rows[i].failures);
		st = step_change(s, stmt, &changes);
	}
	if (st == ST_OK)
		st = exec(s, "COMMIT");
	sqlite3_finalize(stmt);
	if (st != ST_OK)
		tx_rollback(s);
	return st;
}

/* "YYYY-MM-DD" with a month 01..12 and a day 01..31. */
static bool day_valid(const char *day)
{
	int month, mday;

	if (day == NULL || strlen(day) != 10 || day[4] != '-' || day[7] != '-')
		return false;
	for (size_t i = 0; i < 10; i++) {
		if (i != 4 && i != 7 && (day[i] < '0' || day[i] > '9'))
			return false;
	}
	month = (day[5] - '0') * 10 + (day[6] - '0');
	mday = (day[8] - '0') * 10 + (day[9] - '0');
	return month >= 1 && month <= 12 && mday >= 1 && mday <= 31;
}

/* Keys present and counters that fit SQLite's signed 64-bit integers. */
static int usage_check(struct store *s, const struct store_usage *rows, size_t n, const char *what)
{
	if (n > 0 && rows == NULL)
		return store_fail(s, ST_EINVAL, "no %s usage rows given", what);
	for (size_t i = 0; i < n; i++) {
		if (rows[i].key == NULL)
			return store_fail(s, ST_EINVAL, "%s usage row %zu has no key", what, i);
		if (rows[i].connections > INT64_MAX || rows[i].bytes_up > INT64_MAX ||
		    rows[i].bytes_down > INT64_MAX || rows[i].failures > INT64_MAX ||
		    rows[i].datagrams > INT64_MAX)
			return store_fail(s, ST_EINVAL, "%s usage row %zu: counter too large", what,
					  i);
	}
	return ST_OK;
}

/* Add rows to one usage table inside the caller's transaction. */
static int usage_upsert(struct store *s, const char *sql, const char *day,
			const struct store_usage *rows, size_t n)
{
	sqlite3_stmt *stmt;
	int changes, st;

	if (n == 0)
		return ST_OK;
	st = prepare(s, sql, &stmt);
	for (size_t i = 0; st == ST_OK && i < n; i++) {
		(void)sqlite3_reset(stmt);
		sqlite3_bind_text(stmt, 1, day, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 2, rows[i].key, -1, SQLITE_STATIC);
		sqlite3_bind_int64(stmt, 3, (sqlite3_int64)rows[i].connections);
		sqlite3_bind_int64(stmt, 4, (sqlite3_int64)rows[i].bytes_up);
		sqlite3_bind_int64(stmt, 5, (sqlite3_int64)rows[i].bytes_down);
		sqlite3_bind_int64(stmt, 6, (sqlite3_int64)rows[i].failures);
		sqlite3_bind_int64(stmt, 7, (sqlite3_int64)rows[i].datagrams);
		st = step_change(s, stmt, &changes);
	}
	sqlite3_finalize(stmt);
	return st;
}

int store_usage_add(struct store *s, const char *day, const struct store_usage *egress,
		    size_t negress, const struct store_usage *users, size_t nusers)
{
	int st;

	if (!day_valid(day))
		return store_fail(s, ST_EINVAL, "usage day is not YYYY-MM-DD");
	st = usage_check(s, egress, negress, "egress");
	if (st == ST_OK)
		st = usage_check(s, users, nusers, "user");
	if (st != ST_OK || negress + nusers == 0)
		return st;

	st = exec(s, "BEGIN IMMEDIATE");
	if (st != ST_OK)
		return st;
	st = usage_upsert(s,
			  "INSERT INTO usage_egress (day, address, connections, bytes_up, bytes_down,"
			  " failures, datagrams) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
			  " ON CONFLICT (day, address) DO UPDATE SET"
			  " connections = connections + excluded.connections,"
			  " bytes_up = bytes_up + excluded.bytes_up,"
			  " bytes_down = bytes_down + excluded.bytes_down,"
			  " failures = failures + excluded.failures,"
			  " datagrams = datagrams + excluded.datagrams",
			  day, egress, negress);
	if (st == ST_OK)
		st = usage_upsert(s,
				  "INSERT INTO usage_user (day, user, connections, bytes_up, bytes_down,"
				  " failures, datagrams) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
				  " ON CONFLICT (day, user) DO UPDATE SET"
				  " connections = connections + excluded.connections,"
				  " bytes_up = bytes_up + excluded.bytes_up,"
				  " bytes_down = bytes_down + excluded.bytes_down,"
				  " failures = failures + excluded.failures,"
				  " datagrams = datagrams + excluded.datagrams",
				  day, users, nusers);
	if (st == ST_OK)
		st = exec(s, "COMMIT");
	if (st != ST_OK)
		tx_rollback(s);
	return st;
}

/* ---- encrypted-link clients and the server's link key -------------------------------------- */

#define LINK_SERVER_KEY_SETTING "link_server_key"

static int hex_digit(char c);

bool store_link_name_valid(const char *name)
{
	/* The same rule as users.name: the CHECK on links.name in pool.db.sql is a copy of it. */
	return store_user_name_valid(name);
}

/* Exactly STORE_LINK_SERVER_KEY_HEX hex digits. */
static bool server_key_hex_valid(const char *hex)
{
	size_t i;

	if (hex == NULL)
		return false;
	for (i = 0; hex[i] != '\0'; i++) {
		if (i == STORE_LINK_SERVER_KEY_HEX || hex_digit(hex[i]) < 0)
			return false;
	}
	return i == STORE_LINK_SERVER_KEY_HEX;
}

/* settings.link_server_key into hex, checked. ST_OK, ST_ENOTFOUND, ST_EDB (malformed). */
static int server_key_read(struct store *s, char hex[static STORE_LINK_SERVER_KEY_HEX + 1])
{
	/* One character more than a good key: a longer one shows up as ETOOBIG or in the length. */
	char buf[STORE_LINK_SERVER_KEY_HEX + 2];
	int st = store_setting_get(s, LINK_SERVER_KEY_SETTING, buf, sizeof(buf));

	if (st == ST_ENOTFOUND)
		st = store_fail(s, ST_ENOTFOUND, "the link server key is not made yet");
	else if (st == ST_ETOOBIG || (st == ST_OK && !server_key_hex_valid(buf)))
		st = store_fail(s, ST_EDB,
				"settings.link_server_key is malformed (not %d hex digits); it is never "
				"replaced, since every client pins its public key",
				STORE_LINK_SERVER_KEY_HEX);
	if (st == ST_OK)
		memcpy(hex, buf, STORE_LINK_SERVER_KEY_HEX + 1);
	explicit_bzero(buf, sizeof(buf));
	return st;
}

/* INSERT OR IGNORE the candidate, then read the key in effect; inside the caller's transaction
 * or as two statements (both orders of two processes end with the first key written). */
static int server_key_ensure(struct store *s, const char *candidate,
			     char hex[static STORE_LINK_SERVER_KEY_HEX + 1])
{
	sqlite3_stmt *stmt;
	int changes, st;

	st = prepare(s, "INSERT OR IGNORE INTO settings (key, value) VALUES ('" LINK_SERVER_KEY_SETTING
			"', ?1)",
		     &stmt);
	if (st != ST_OK)
		return st;
	sqlite3_bind_text(stmt, 1, candidate, -1, SQLITE_STATIC);
	st = step_change(s, stmt, &changes);
	sqlite3_finalize(stmt);
	if (st != ST_OK)
		return st;
	return server_key_read(s, hex);
}

int store_link_server_key_get(struct store *s, char hex[static STORE_LINK_SERVER_KEY_HEX + 1])
{
	return server_key_read(s, hex);
}

int store_link_server_key_init_if_absent(struct store *s, const char *candidate_hex,
					 char hex[static STORE_LINK_SERVER_KEY_HEX + 1])
{
	char got[STORE_LINK_SERVER_KEY_HEX + 1];
	int st;

	if (!server_key_hex_valid(candidate_hex))
		return store_fail(s, ST_EINVAL, "the candidate server key is not %d hex digits",
				  STORE_LINK_SERVER_KEY_HEX);
	st = exec(s, "BEGIN IMMEDIATE");
	if (st != ST_OK)
		return st;
	st = server_key_ensure(s, candidate_hex, got);
	if (st == ST_OK)
		st = exec(s, "COMMIT");
	if (st == ST_OK)
		memcpy(hex, got, sizeof(got));
	else
		tx_rollback(s);
	explicit_bzero(got, sizeof(got));
	return st;
}

/*
 * Run a one-row lookup with one parameter (text when len < 0, else a blob of len bytes). ST_OK
 * when a row came back (its first column, text, copied to name when name is not NULL),
 * ST_ENOTFOUND when none did. name, when given, has room for STORE_LINK_NAME_MAX + 1 bytes.
 */
static int link_lookup(struct store *s, const char *sql, const void *param, int len, char *name)
{
	sqlite3_stmt *stmt;
	const unsigned char *text;
	int rc, st;

	st = prepare(s, sql, &stmt);
	if (st != ST_OK)
		return st;
	if (len < 0)
		sqlite3_bind_text(stmt, 1, param, -1, SQLITE_STATIC);
	else
		sqlite3_bind_blob(stmt, 1, param, len, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_DONE) {
		st = ST_ENOTFOUND;
	} else if (rc != SQLITE_ROW) {
		st = db_fail(s, rc, "SQLite");
	} else if (name != NULL) {
		text = sqlite3_column_text(stmt, 0);
		snprintf(name, STORE_LINK_NAME_MAX + 1, "%s", text != NULL ? (const char *)text : "?");
	}
	sqlite3_finalize(stmt);
	return st;
}

/* The checks and the insert of store_link_add, inside its transaction. */
static int link_insert(struct store *s, const struct store_link_new *l, const char *server_key_hex,
		       char server_key[static STORE_LINK_SERVER_KEY_HEX + 1],
		       enum store_link_field *field)
{
	char other[STORE_LINK_NAME_MAX + 1];
	sqlite3_stmt *stmt;
	int changes, st;

	/* Each conflict is looked for by name, under the write lock, so the answer says which
	 * argument was wrong and cannot change before the insert. */
	*field = STORE_LINK_FIELD_USER;
	st = link_lookup(s, "SELECT name FROM users WHERE name = ?1", l->user, -1, NULL);
	if (st == ST_ENOTFOUND)
		return store_fail(s, ST_ENOTFOUND, "no such user");
	if (st != ST_OK)
		return st;
	*field = STORE_LINK_FIELD_NAME;
	st = link_lookup(s, "SELECT name FROM links WHERE name = ?1", l->name, -1, NULL);
	if (st == ST_OK)
		return store_fail(s, ST_EEXIST, "a link with this name already exists");
	if (st != ST_ENOTFOUND)
		return st;
	*field = STORE_LINK_FIELD_PUBLIC_KEY;
	st = link_lookup(s, "SELECT name FROM links WHERE public_key = ?1", l->public_key,
			 STORE_LINK_KEY_BYTES, other);
	if (st == ST_OK)
		return store_fail(s, ST_EEXIST, "the public key is already link '%s'", other);
	if (st != ST_ENOTFOUND)
		return st;
	if (server_key_hex != NULL) {
		*field = STORE_LINK_FIELD_SERVER_KEY;
		st = server_key_ensure(s, server_key_hex, server_key);
		if (st != ST_OK)
			return st;
	}

	*field = STORE_LINK_FIELD_NONE;
	st = prepare(s,
		     "INSERT INTO links (name, user, public_key, psk, enabled, created)"
		     " VALUES (?1, ?2, ?3, ?4, 1, ?5)",
		     &stmt);
	if (st != ST_OK)
		return st;
	sqlite3_bind_text(stmt, 1, l->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, l->user, -1, SQLITE_STATIC);
	sqlite3_bind_blob(stmt, 3, l->public_key, STORE_LINK_KEY_BYTES, SQLITE_STATIC);
	sqlite3_bind_blob(stmt, 4, l->psk, STORE_LINK_KEY_BYTES, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 5, (sqlite3_int64)time(NULL));
	st = step_change(s, stmt, &changes);
	sqlite3_finalize(stmt);
	return st;
}

int store_link_add(struct store *s, const struct store_link_new *link, const char *server_key_hex,
		   char *server_key_out, enum store_link_field *bad)
{
	char key[STORE_LINK_SERVER_KEY_HEX + 1];
	enum store_link_field field = STORE_LINK_FIELD_NONE;
	int st;

	if (bad != NULL)
		*bad = STORE_LINK_FIELD_NONE;
	/* Every argument first: a caller's mistake is refused before the write lock is taken. */
	if (link == NULL || link->public_key == NULL || link->psk == NULL) {
		st = store_fail(s, ST_EINVAL, "no link, public key or PSK given");
	} else if (!store_link_name_valid(link->name)) {
		field = STORE_LINK_FIELD_NAME;
		st = store_fail(s, ST_EINVAL, "invalid link name");
	} else if (!store_user_name_valid(link->user)) {
		field = STORE_LINK_FIELD_USER;
		st = store_fail(s, ST_EINVAL, "invalid user name");
	} else if ((server_key_hex == NULL) != (server_key_out == NULL) ||
		   (server_key_hex != NULL && !server_key_hex_valid(server_key_hex))) {
		field = STORE_LINK_FIELD_SERVER_KEY;
		st = store_fail(s, ST_EINVAL, "the candidate server key is not %d hex digits",
				STORE_LINK_SERVER_KEY_HEX);
	} else {
		/* IMMEDIATE: take the write lock now (waiting within the busy timeout), not half
		 * way. */
		st = exec(s, "BEGIN IMMEDIATE");
		if (st == ST_OK)
			st = link_insert(s, link, server_key_hex, key, &field);
		if (st == ST_OK)
			st = exec(s, "COMMIT");
		if (st != ST_OK)
			tx_rollback(s);
	}
	if (st == ST_OK && server_key_out != NULL)
		memcpy(server_key_out, key, sizeof(key));
	if (st != ST_OK && bad != NULL)
		*bad = field;
	explicit_bzero(key, sizeof(key));
	return st;
}

/* One row of (name, user, public_key, enabled, created) into info. A hand-edited file may break
 * what the CHECKs promise: refuse the row rather than print something else. */
static int link_info_fill(struct store *s, sqlite3_stmt *stmt, struct store_link_info *info)
{
	const unsigned char *name = sqlite3_column_text(stmt, 0);
	const unsigned char *user = sqlite3_column_text(stmt, 1);
	const void *key = sqlite3_column_blob(stmt, 2);

	if (name == NULL || !store_link_name_valid((const char *)name) ||
	    strlen((const char *)name) != (size_t)sqlite3_column_bytes(stmt, 0))
		return store_fail(s, ST_EDB, "invalid link name in the database");
	if (user == NULL || !store_user_name_valid((const char *)user) ||
	    strlen((const char *)user) != (size_t)sqlite3_column_bytes(stmt, 1))
		return store_fail(s, ST_EDB, "link %s has an invalid user name in the database", name);
	if (key == NULL || sqlite3_column_bytes(stmt, 2) != STORE_LINK_KEY_BYTES)
		return store_fail(s, ST_EDB, "link %s has a malformed public key in the database",
				  name);
	memset(info, 0, sizeof(*info));
	memcpy(info->name, name, strlen((const char *)name) + 1);
	memcpy(info->user, user, strlen((const char *)user) + 1);
	memcpy(info->public_key, key, STORE_LINK_KEY_BYTES);
	info->enabled = sqlite3_column_int(stmt, 3) != 0;
	info->created = sqlite3_column_int64(stmt, 4);
	return ST_OK;
}

int store_link_list(struct store *s, store_link_fn *fn, void *ctx)
{
	struct store_link_info info;
	sqlite3_stmt *stmt;
	int rc, st;

	st = prepare(s,
		     "SELECT name, user, public_key, enabled, created FROM links"
		     " ORDER BY name COLLATE BINARY",
		     &stmt);
	if (st != ST_OK)
		return st;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		st = link_info_fill(s, stmt, &info);
		if (st != ST_OK)
			goto out;
		fn(&info, ctx);
	}
	if (rc != SQLITE_DONE)
		st = db_fail(s, rc, "SQLite");
out:
	sqlite3_finalize(stmt);
	return st;
}

int store_link_find(struct store *s, const char *name, struct store_link_info *out)
{
	struct store_link_info info;
	sqlite3_stmt *stmt;
	int rc, st;

	/* An invalid name cannot be in the table: the same answer as for any absent link. */
	if (!store_link_name_valid(name))
		return store_fail(s, ST_ENOTFOUND, "no such link");
	st = prepare(s,
		     "SELECT name, user, public_key, enabled, created FROM links WHERE name = ?1",
		     &stmt);
	if (st != ST_OK)
		return st;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		st = link_info_fill(s, stmt, &info);
		if (st == ST_OK)
			*out = info;
	} else if (rc == SQLITE_DONE) {
		st = store_fail(s, ST_ENOTFOUND, "no such link");
	} else {
		st = db_fail(s, rc, "SQLite");
	}
	sqlite3_finalize(stmt);
	return st;
}

int store_link_revoke(struct store *s, const char *name)
{
	sqlite3_stmt *stmt;
	int changes, st;

	if (!store_link_name_valid(name))
		return store_fail(s, ST_ENOTFOUND, "no such link");
	st = prepare(s, "DELETE FROM links WHERE name = ?1", &stmt);
	if (st != ST_OK)
		return st;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	st = step_change(s, stmt, &changes);
	sqlite3_finalize(stmt);
	if (st != ST_OK)
		return st;
	if (changes == 0)
		return store_fail(s, ST_ENOTFOUND, "no such link");
	/* The row is gone and secure_delete zeroed its bytes in the page, but WAL mode wrote that
	 * page (PSK included) to the -wal file when the link was added, and the copy stays there
	 * until a checkpoint and a reset overwrite it. Checkpoint now and truncate the file. A
	 * reader can keep it from completing: then a later checkpoint does it. The deletion itself
	 * is committed either way, so the result is not the caller's concern. */
	(void)sqlite3_exec(s->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
	return ST_OK;
}

/* ---- snapshots ------------------------------------------------------------------------------- */

/* The longest sticky TTL a setting may give (egress/params.h: EGRESS_TTL_MAX, a week). */
#define STICKY_TTL_MAX 604800

/* Two integers from a one-row statement (a count and a byte total). */
static int query_int64_pair(struct store *s, const char *sql, int64_t *a, int64_t *b)
{
	sqlite3_stmt *stmt;
	int rc, st;

	st = prepare(s, sql, &stmt);
	if (st != ST_OK)
		return st;
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		*a = sqlite3_column_int64(stmt, 0);
		*b = sqlite3_column_int64(stmt, 1);
	} else if (rc == SQLITE_DONE) {
		st = store_fail(s, ST_EDB, "SQLite: \"%s\" returned no row", sql);
	} else {
		st = db_fail(s, rc, "SQLite");
	}
	sqlite3_finalize(stmt);
	return st;
}

static int changed_fail(struct store *s, const char *table)
{
	return store_fail(s, ST_EDB, "%s table changed inside a read transaction", table);
}

/* Copy one users row into u. The file may have been edited by hand: check what the schema's
 * CHECKs promise, since workers bsearch the result with strcmp. */
static int snapshot_user_fill(struct store *s, sqlite3_stmt *stmt, struct snapshot_user *u)
{
	const unsigned char *name = sqlite3_column_text(stmt, 0);
	const unsigned char *hash;
	size_t len;

	/* The length check catches a NUL inside the text, which would hide the rest from the
	 * name rule. */
	if (name == NULL || !store_user_name_valid((const char *)name) ||
	    strlen((const char *)name) != (size_t)sqlite3_column_bytes(stmt, 0))
		return store_fail(s, ST_EDB, "invalid user name in the database");
	memcpy(u->name, name, strlen((const char *)name) + 1);

	hash = sqlite3_column_text(stmt, 1);
	if (hash == NULL)
		return store_fail(s, ST_EDB, "user %s has no password hash", u->name);
	len = (size_t)sqlite3_column_bytes(stmt, 1);
	if (len > SNAPSHOT_HASH_MAX - 1 || memchr(hash, '\0', len) != NULL)
		return store_fail(s, ST_EDB, "user %s has a malformed password hash", u->name);
	memcpy(u->hash, hash, len);
	u->hash[len] = '\0';
	u->enabled = sqlite3_column_int(stmt, 2) != 0;
	return ST_OK;
}

/*
 * Fill each row of one table into a new array of `size`-byte elements. The rows are counted
 * first (count_sql), the array allocated, then fill(s, stmt, rows, i) copies row i of select_sql
 * and checks it (against row i - 1 too, where order matters). Count and rows are read in the
 * caller's transaction, so a mismatch means the table changed under it. *rows and *n are set
 * even on failure: *n counts the filled elements, which is what the snapshot's free wipes.
 */
typedef int snapshot_fill_fn(struct store *s, sqlite3_stmt *stmt, void *rows, size_t i);

static int snapshot_rows_load(struct store *s, const char *table, const char *count_sql,
			      const char *select_sql, size_t size, snapshot_fill_fn *fill,
			      void **rows, size_t *n)
{
	sqlite3_stmt *stmt = NULL;
	int64_t count = 0;
	int rc, st;

	*rows = NULL;
	*n = 0;
	st = query_int64(s, count_sql, &count);
	if (st != ST_OK)
		return st;
	if (count < 0 || (uint64_t)count > SIZE_MAX / size)
		return store_fail(s, ST_ENOMEM, "too many %s rows for memory", table);
	if (count == 0)
		return ST_OK;
	*rows = calloc((size_t)count, size);
	if (*rows == NULL)
		return store_fail(s, ST_ENOMEM, "out of memory building a snapshot");
	st = prepare(s, select_sql, &stmt);
	if (st != ST_OK)
		return st;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (*n == (size_t)count) {
			st = changed_fail(s, table);
			goto out;
		}
		st = fill(s, stmt, *rows, *n);
		if (st != ST_OK)
			goto out;
		(*n)++;
	}
	if (rc != SQLITE_DONE)
		st = db_fail(s, rc, "SQLite");
	else if (*n != (size_t)count)
		st = changed_fail(s, table);
out:
	sqlite3_finalize(stmt);
	return st;
}

static int snapshot_user_row(struct store *s, sqlite3_stmt *stmt, void *rows, size_t i)
{
	return snapshot_user_fill(s, stmt, (struct snapshot_user *)rows + i);
}

static int snapshot_users_load(struct store *s, struct snapshot *snap)
{
	void *rows;
	int st = snapshot_rows_load(s, "users", "SELECT count(*) FROM users",
				    "SELECT name, hash, enabled FROM users ORDER BY name COLLATE BINARY",
				    sizeof(*snap->users), snapshot_user_row, &rows, &snap->nusers);

	snap->users = rows;
	return st;
}

/* The links that may connect: enabled, with an enabled user. The JOIN also leaves out a link
 * whose user is gone (possible only with foreign keys off). */
#define SNAPSHOT_LINKS_WHERE                                                                 \
	" FROM links l JOIN users u ON u.name = l.user WHERE l.enabled = 1 AND u.enabled = 1"

/* Copy one row of (public_key, psk, name, user) into l. A hand-edited file may break what the
 * CHECKs promise: the workers bsearch by key and log the names. */
static int snapshot_link_fill(struct store *s, sqlite3_stmt *stmt, struct snapshot_link *l)
{
	const void *key = sqlite3_column_blob(stmt, 0);
	const void *psk = sqlite3_column_blob(stmt, 1);
	const unsigned char *name = sqlite3_column_text(stmt, 2);
	const unsigned char *user = sqlite3_column_text(stmt, 3);

	if (name == NULL || !store_link_name_valid((const char *)name) ||
	    strlen((const char *)name) != (size_t)sqlite3_column_bytes(stmt, 2))
		return store_fail(s, ST_EDB, "invalid link name in the database");
	if (user == NULL || !store_user_name_valid((const char *)user) ||
	    strlen((const char *)user) != (size_t)sqlite3_column_bytes(stmt, 3))
		return store_fail(s, ST_EDB, "link %s has an invalid user name in the database", name);
	if (key == NULL || sqlite3_column_bytes(stmt, 0) != SNAPSHOT_LINK_KEY_BYTES || psk == NULL ||
	    sqlite3_column_bytes(stmt, 1) != SNAPSHOT_LINK_KEY_BYTES)
		return store_fail(s, ST_EDB, "link %s has a malformed key or PSK in the database", name);
	memcpy(l->public_key, key, SNAPSHOT_LINK_KEY_BYTES);
	memcpy(l->psk, psk, SNAPSHOT_LINK_KEY_BYTES);
	memcpy(l->name, name, strlen((const char *)name) + 1);
	memcpy(l->user, user, strlen((const char *)user) + 1);
	return ST_OK;
}

static int snapshot_link_row(struct store *s, sqlite3_stmt *stmt, void *rows, size_t i)
{
	struct snapshot_link *l = rows;
	int st = snapshot_link_fill(s, stmt, &l[i]);

	/* UNIQUE (public_key) and the ORDER BY make the keys strictly increasing; bsearch depends
	 * on it, so it is checked rather than assumed. */
	if (st == ST_OK && i > 0 &&
	    memcmp(l[i - 1].public_key, l[i].public_key, SNAPSHOT_LINK_KEY_BYTES) >= 0)
		st = store_fail(s, ST_EDB, "links are not ordered by public key");
	return st;
}

static int snapshot_links_load(struct store *s, struct snapshot *snap)
{
	void *rows;
	/* BLOBs compare with memcmp in SQLite, the order snapshot_link_find searches in. */
	int st = snapshot_rows_load(s, "links", "SELECT count(*)" SNAPSHOT_LINKS_WHERE,
				    "SELECT l.public_key, l.psk, l.name, l.user" SNAPSHOT_LINKS_WHERE
				    " ORDER BY l.public_key",
				    sizeof(*snap->links), snapshot_link_row, &rows, &snap->nlinks);

	snap->links = rows;
	return st;
}

/* The string part of the pool's block, filled front to back. */
struct arena {
	char *next;
	size_t left;
};

/*
 * Copy text column col into the arena, NUL-terminated, and point *out at it. The arena was sized
 * from byte totals read in the same transaction, so running out means the rows changed.
 */
static int arena_text(struct store *s, struct arena *a, sqlite3_stmt *stmt, int col,
		      const char **out)
{
	const unsigned char *text = sqlite3_column_text(stmt, col);
	size_t len = (size_t)sqlite3_column_bytes(stmt, col);

	if (text == NULL) {
		/* Every column read here is NOT NULL: only a failed conversion gives NULL. */
		int st = (sqlite3_errcode(s->db) & 0xff) == SQLITE_NOMEM ? ST_ENOMEM : ST_EDB;

		return store_fail(s, st, "cannot read a pool text column");
	}
	if (len >= a->left)
		return changed_fail(s, "pool");
	/* A NUL inside the text would make the C string say less than the row. */
	if (memchr(text, '\0', len) != NULL)
		return store_fail(s, ST_EDB, "a pool text in the database contains a NUL byte");
	memcpy(a->next, text, len);
	a->next[len] = '\0';
	*out = a->next;
	a->next += len + 1;
	a->left -= len + 1;
	return ST_OK;
}

/*
 * Copy one row of the pool query into e. The file may have been edited by hand: the address text
 * must be canonical and agree with the family and prefix columns (the daemon binds what the
 * parsed address says, `pool list` shows the text), the weight within its bounds.
 */
static int snapshot_pool_fill(struct store *s, sqlite3_stmt *stmt, struct arena *a,
			      struct snapshot_pool_entry *e)
{
	/* p.id, p.address, p.family, p.prefix, p.weight, p.enabled, p.note, p.added,
	 * h.cooldown_until, h.failures */
	int64_t id = sqlite3_column_int64(stmt, 0);
	int64_t family = sqlite3_column_int64(stmt, 2);
	int64_t prefix = sqlite3_column_int64(stmt, 3);
	int64_t weight = sqlite3_column_int64(stmt, 4);
	int64_t failures = sqlite3_column_int64(stmt, 9);
	int parsed_family;
	uint8_t parsed_prefix;
	int st;

	if (id < 0 || id > (int64_t)UINT32_MAX)
		return store_fail(s, ST_EDB, "pool entry id %lld is out of range", (long long)id);
	e->id = (uint32_t)id;
	st = arena_text(s, a, stmt, 1, &e->address);
	if (st != ST_OK)
		return st;
	if (!pool_text_parse(e->address, &parsed_family, e->addr, &parsed_prefix) ||
	    family != (parsed_family == AF_INET ? 4 : 6) || prefix != parsed_prefix ||
	    (parsed_family == AF_INET6 && parsed_prefix < POOL_V6_PREFIX_MIN) ||
	    !host_bits_zero(e->addr, parsed_prefix))
		return store_fail(s, ST_EDB, "pool entry %lld (%s) is malformed in the database",
				  (long long)id, e->address);
	if (weight < 1 || weight > POOL_WEIGHT_MAX)
		return store_fail(s, ST_EDB, "pool entry %s has a weight out of range", e->address);
	e->family = parsed_family;
	e->prefix_len = parsed_prefix;
	e->weight = (uint32_t)weight;
	e->enabled = sqlite3_column_int(stmt, 5) != 0;
	st = arena_text(s, a, stmt, 6, &e->note);
	if (st != ST_OK)
		return st;
	e->added = sqlite3_column_int64(stmt, 7);
	/* No health row reads as NULL: coalesced to 0, "never failed". */
	e->cooldown_until = sqlite3_column_int64(stmt, 8);
	e->failures = failures < 0 ? 0 : failures > UINT32_MAX ? UINT32_MAX : (uint32_t)failures;
	return ST_OK;
}

/* Read the tags into tags[0..ntags), ordered by entry then key; each entry's run becomes its
 * tags. The pool is ordered by id, so one forward walk matches them up. */
static int snapshot_tags_load(struct store *s, struct snapshot *snap, struct snapshot_tag *tags,
			      size_t ntags, struct arena *a)
{
	sqlite3_stmt *stmt = NULL;
	size_t k = 0, j = 0;
	int rc, st;

	/* The JOIN leaves out tags of missing entries (possible only with foreign keys off), as
	 * the count did. */
	st = prepare(s,
		     "SELECT t.pool_id, t.key, t.value FROM pool_tags t JOIN pool p ON p.id = t.pool_id"
		     " ORDER BY t.pool_id, t.key COLLATE BINARY",
		     &stmt);
	if (st != ST_OK)
		return st;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(stmt, 0);
		struct snapshot_pool_entry *e;

		while (j < snap->npool && (int64_t)snap->pool[j].id < id)
			j++;
		if (k == ntags || j == snap->npool || (int64_t)snap->pool[j].id != id) {
			st = changed_fail(s, "pool_tags");
			goto out;
		}
		e = &snap->pool[j];
		st = arena_text(s, a, stmt, 1, &tags[k].key);
		if (st == ST_OK)
			st = arena_text(s, a, stmt, 2, &tags[k].value);
		if (st != ST_OK)
			goto out;
		if (!store_pool_tag_valid(tags[k].key, true) ||
		    !store_pool_tag_valid(tags[k].value, false)) {
			st = store_fail(s, ST_EDB, "pool entry %s has a malformed tag in the database",
					e->address);
			goto out;
		}
		if (e->ntags == 0)
			e->tags = &tags[k];
		e->ntags++;
		k++;
	}
	if (rc != SQLITE_DONE)
		st = db_fail(s, rc, "SQLite");
	else if (k != ntags)
		st = changed_fail(s, "pool_tags");
out:
	sqlite3_finalize(stmt);
	return st;
}

/*
 * The pool with its tags and health. One allocation holds the entries, then the tags, then every
 * string they point to; snapshot_unref frees it as snap->pool (snapshot.h has no other field to
 * own them by). Its size comes from counts and byte totals read in the same transaction as the
 * rows, so the rows fit it exactly.
 */
static int snapshot_pool_load(struct store *s, struct snapshot *snap)
{
	struct snapshot_tag *tags;
	sqlite3_stmt *stmt = NULL;
	struct arena a;
	int64_t npool, pool_bytes, ntags, tag_bytes;
	size_t entries_size, tags_size, strings_size, total, n = 0;
	char *block;
	int rc, st;

	st = query_int64_pair(s,
			      "SELECT count(*), coalesce(sum(length(CAST(address AS BLOB))"
			      " + length(CAST(note AS BLOB))), 0) FROM pool",
			      &npool, &pool_bytes);
	if (st == ST_OK)
		st = query_int64_pair(s,
				      "SELECT count(*), coalesce(sum(length(CAST(t.key AS BLOB))"
				      " + length(CAST(t.value AS BLOB))), 0)"
				      " FROM pool_tags t JOIN pool p ON p.id = t.pool_id",
				      &ntags, &tag_bytes);
	if (st != ST_OK)
		return st;
	if (npool < 0 || pool_bytes < 0 || ntags < 0 || tag_bytes < 0)
		return store_fail(s, ST_EDB, "negative pool sizes from SQLite");
	/* Entries, then tags (both multiples of 8 bytes in size, so the tags stay aligned), then the
	 * strings with one NUL each: address and note per entry, key and value per tag. */
	if (__builtin_mul_overflow((uint64_t)npool, sizeof(struct snapshot_pool_entry),
				   &entries_size) ||
	    __builtin_mul_overflow((uint64_t)ntags, sizeof(struct snapshot_tag), &tags_size) ||
	    __builtin_add_overflow((uint64_t)pool_bytes, (uint64_t)tag_bytes, &strings_size) ||
	    __builtin_add_overflow(strings_size, 2 * (uint64_t)npool, &strings_size) ||
	    __builtin_add_overflow(strings_size, 2 * (uint64_t)ntags, &strings_size) ||
	    __builtin_add_overflow(entries_size, tags_size, &total) ||
	    __builtin_add_overflow(total, strings_size, &total))
		return store_fail(s, ST_ENOMEM, "pool too large for memory");
	if (npool == 0)
		return ST_OK;

	block = calloc(1, total);
	if (block == NULL)
		return store_fail(s, ST_ENOMEM, "out of memory building a snapshot");
	/* Owned by snap from here: a failure below is freed by the caller's snapshot_unref. */
	snap->pool = (struct snapshot_pool_entry *)(void *)block;
	tags = (struct snapshot_tag *)(void *)(block + entries_size);
	a.next = block + entries_size + tags_size;
	a.left = strings_size;

	st = prepare(s,
		     "SELECT p.id, p.address, p.family, p.prefix, p.weight, p.enabled, p.note,"
		     " p.added, coalesce(h.cooldown_until, 0), coalesce(h.failures, 0)"
		     " FROM pool p LEFT JOIN pool_health h ON h.pool_id = p.id ORDER BY p.id",
		     &stmt);
	if (st != ST_OK)
		return st;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (n == (size_t)npool) {
			st = changed_fail(s, "pool");
			goto out;
		}
		st = snapshot_pool_fill(s, stmt, &a, &snap->pool[n]);
		if (st != ST_OK)
			goto out;
		n++;
		snap->npool = n;
	}
	if (rc != SQLITE_DONE) {
		st = db_fail(s, rc, "SQLite");
		goto out;
	}
	if (n != (size_t)npool) {
		st = changed_fail(s, "pool");
		goto out;
	}
	st = snapshot_tags_load(s, snap, tags, (size_t)ntags, &a);
out:
	sqlite3_finalize(stmt);
	return st;
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * settings.sticky_salt (64 hex digits: the key of sticky hashing) and sticky_ttl (decimal
 * seconds 0..604800, no sign or leading zeros, as egress/params.h takes a ttl). An absent or
 * malformed salt leaves has_salt false, for the daemon to refuse; an absent or malformed TTL
 * gives the default.
 */
static int snapshot_settings_load(struct store *s, struct snapshot *snap)
{
	char hex[2 * SNAPSHOT_SALT_BYTES + 2], ttl[16];
	uint8_t salt[SNAPSHOT_SALT_BYTES];
	bool ok = true;
	uint32_t value = 0;
	size_t len;
	int st;

	/* The buffer holds one character more than a good salt: a longer one is ETOOBIG or
	 * shows up in the length. */
	st = store_setting_get(s, "sticky_salt", hex, sizeof(hex));
	if (st == ST_OK) {
		ok = strlen(hex) == 2 * SNAPSHOT_SALT_BYTES;
		for (size_t i = 0; ok && i < SNAPSHOT_SALT_BYTES; i++) {
			int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);

			ok = hi >= 0 && lo >= 0;
			salt[i] = (uint8_t)(ok ? (hi << 4) | lo : 0);
		}
		if (ok) {
			memcpy(snap->salt, salt, sizeof(salt));
			snap->has_salt = true;
		}
		explicit_bzero(salt, sizeof(salt));
	}
	explicit_bzero(hex, sizeof(hex));
	if (st != ST_OK && st != ST_ENOTFOUND && st != ST_ETOOBIG)
		return st;

	snap->sticky_ttl = SNAPSHOT_STICKY_TTL_DEFAULT;
	st = store_setting_get(s, "sticky_ttl", ttl, sizeof(ttl));
	if (st == ST_ENOTFOUND || st == ST_ETOOBIG)
		return ST_OK;
	if (st != ST_OK)
		return st;
	len = strlen(ttl);
	ok = len > 0 && len <= 6 && (ttl[0] != '0' || len == 1);
	for (size_t i = 0; ok && i < len; i++) {
		if (ttl[i] < '0' || ttl[i] > '9')
			ok = false;
		else
			value = value * 10 + (uint32_t)(ttl[i] - '0');
	}
	if (ok && value <= STICKY_TTL_MAX)
		snap->sticky_ttl = value;
	return ST_OK;
}

int store_snapshot_build(struct store *s, struct snapshot **out)
{
	struct snapshot *snap = NULL;
	int st;

	snap = calloc(1, sizeof(*snap));
	if (snap == NULL)
		return store_fail(s, ST_ENOMEM, "out of memory building a snapshot");
	atomic_init(&snap->refs, 1);

	/* One read transaction: every count and every row come from the same version of the
	 * file, whatever the CLI commits meanwhile. */
	st = exec(s, "BEGIN");
	if (st != ST_OK)
		goto out;
	st = snapshot_users_load(s, snap);
	if (st == ST_OK)
		st = snapshot_pool_load(s, snap);
	if (st == ST_OK)
		st = snapshot_links_load(s, snap);
	if (st == ST_OK)
		st = snapshot_settings_load(s, snap);
	if (st == ST_OK)
		st = exec(s, "COMMIT");
	if (st != ST_OK)
		goto out;

	snap->generation = atomic_fetch_add_explicit(&snapshot_generation, 1, memory_order_relaxed) + 1;
	*out = snap;
	snap = NULL; /* transferred */
out:
	tx_rollback(s);
	snapshot_unref(snap);
	return st;
}
