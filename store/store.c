/* store/store.c - the SQLite database: open, schema and migrations, users, settings, snapshots. */
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
 * never runs these. Schema 1 is the first: no steps yet, only the terminating entry.
 */
struct migration {
	int from;
	const char *sql;
};

static const struct migration migrations[] = {
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

/* ---- snapshots ------------------------------------------------------------------------------- */

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

int store_snapshot_build(struct store *s, struct snapshot **out)
{
	struct snapshot *snap = NULL;
	sqlite3_stmt *stmt = NULL;
	int64_t count = 0;
	size_t n = 0;
	int rc, st;

	/* One read transaction: the count and the rows come from the same version of the file. */
	st = exec(s, "BEGIN");
	if (st != ST_OK)
		return st;
	st = query_int64(s, "SELECT count(*) FROM users", &count);
	if (st != ST_OK)
		goto out;
	if (count < 0 || (uint64_t)count > SIZE_MAX / sizeof(struct snapshot_user)) {
		st = store_fail(s, ST_ENOMEM, "too many users for memory");
		goto out;
	}

	snap = calloc(1, sizeof(*snap));
	if (snap == NULL) {
		st = store_fail(s, ST_ENOMEM, "out of memory building a snapshot");
		goto out;
	}
	atomic_init(&snap->refs, 1);
	if (count > 0) {
		snap->users = calloc((size_t)count, sizeof(*snap->users));
		if (snap->users == NULL) {
			st = store_fail(s, ST_ENOMEM, "out of memory building a snapshot");
			goto out;
		}
	}

	st = prepare(s, "SELECT name, hash, enabled FROM users ORDER BY name COLLATE BINARY", &stmt);
	if (st != ST_OK)
		goto out;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (n == (size_t)count) {
			st = store_fail(s, ST_EDB, "users table changed inside a read transaction");
			goto out;
		}
		st = snapshot_user_fill(s, stmt, &snap->users[n]);
		if (st != ST_OK)
			goto out;
		n++;
		/* nusers counts filled entries, so a failed build frees (and wipes) what it copied. */
		snap->nusers = n;
	}
	if (rc != SQLITE_DONE) {
		st = db_fail(s, rc, "SQLite");
		goto out;
	}
	if (n != (size_t)count) {
		st = store_fail(s, ST_EDB, "users table changed inside a read transaction");
		goto out;
	}
	sqlite3_finalize(stmt);
	stmt = NULL;
	st = exec(s, "COMMIT");
	if (st != ST_OK)
		goto out;

	snap->generation = atomic_fetch_add_explicit(&snapshot_generation, 1, memory_order_relaxed) + 1;
	*out = snap;
	snap = NULL; /* transferred */
out:
	sqlite3_finalize(stmt);
	tx_rollback(s);
	snapshot_unref(snap);
	return st;
}
